"""Set up MLX's Linux CPU backend: a fast BLAS (before ``mlx.core`` is imported), and malloc.

MLX's Linux CPU wheel calls a bundled reference BLAS, far slower than an optimised one
(docs/performance.md). Loading Intel MKL's ``libmkl_rt`` into the global symbol scope first makes
MLX resolve its BLAS calls there. The ``mkl`` wheel is a dependency on x86_64 Linux; macOS
uses Accelerate and nothing here runs.

``MLX_INCEPTION_FAST_BLAS`` chooses: unset or ``1`` finds MKL in this Python's environment;
``0`` (or ``false``, ``no``, ``off``) keeps MLX's own BLAS; a path loads that library instead
(any BLAS exporting the standard ``cblas_*`` symbols, e.g. OpenBLAS's
``libopenblas.so.0``). :data:`status` says what happened, in one line.

MLX's CPU allocator hands every buffer its 32 MB cache cannot hold back to malloc, and glibc's
malloc returns large blocks to the kernel at once (``mmap`` above 128 KB, heap trimming), so
the next pass gets them back as fresh pages, faulted in and zeroed one by one (a visible share
of an inference pass: docs/performance.md). On glibc,
:func:`tune_malloc` keeps blocks up to 32 MB on the heap and trims it only beyond 1 GiB; the
memory is then reused across sizes, which MLX's own cache (exact sizes only) cannot do, so
peak memory does not grow. ``MLX_INCEPTION_TUNE_MALLOC=0`` leaves malloc alone.
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
import site
import sys
import warnings

ENVIRONMENT_VARIABLE = "MLX_INCEPTION_FAST_BLAS"
MALLOC_VARIABLE = "MLX_INCEPTION_TUNE_MALLOC"
#: glibc's mallopt parameters and the values :func:`tune_malloc` sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 1 << 30
_OFF = ("0", "false", "no", "off")

#: What :func:`preload` did: "mkl 2026.2.0, 2 threads: /path/libmkl_rt.so.3", or why it did
#: nothing ("MLX's bundled BLAS (...)", "platform BLAS (...)").
status = "not attempted"
#: The library loaded, or None.
library: str | None = None
#: Whether :func:`tune_malloc` changed glibc's malloc settings.
malloc_tuned = False


def _library_directories() -> list[str]:
    prefixes = [sys.prefix, getattr(sys, "base_prefix", sys.prefix), os.environ.get("CONDA_PREFIX")]
    try:
        prefixes.append(site.getuserbase())  # `pip install --user` puts the wheel's libs here
    except AttributeError:  # pragma: no cover - some embedded interpreters lack site.getuserbase
        pass
    return [os.path.join(p, "lib") for p in dict.fromkeys(p for p in prefixes if p)]


def mkl_candidates() -> list[str]:
    """Return the ``libmkl_rt`` files this interpreter's environments hold, newest first."""
    found: list[str] = []
    for directory in _library_directories():
        found += sorted(glob.glob(os.path.join(directory, "libmkl_rt.so*")), reverse=True)
    return found


def _describe(handle: ctypes.CDLL, path: str) -> str:
    """Return "mkl <version>, <n> threads: <path>" for MKL, else "blas: <path>"."""
    try:
        buffer = ctypes.create_string_buffer(256)
        handle.MKL_Get_Version_String(buffer, len(buffer))
        words = buffer.value.decode(errors="replace").split()
        version = words[words.index("Version") + 1].split("-")[0] if "Version" in words else "?"
        threads = int(handle.MKL_Get_Max_Threads())
        return f"mkl {version}, {threads} thread{'' if threads == 1 else 's'}: {path}"
    except (AttributeError, ValueError, OSError):
        return f"blas: {path}"


def _not_found() -> str:
    if platform.machine().lower() in ("x86_64", "amd64"):
        return "MLX's bundled BLAS (MKL not found: pip install mkl)"
    return (f"MLX's bundled BLAS (no MKL for {platform.machine()}: set {ENVIRONMENT_VARIABLE} "
            "to a BLAS library such as libopenblas.so.0)")


def preload() -> str:
    """Load a fast BLAS globally when it helps and is available, tune malloc; return
    :data:`status`.

    Must run before ``mlx.core`` is first imported: MLX binds its BLAS symbols when it loads.
    """
    _load_blas()
    if sys.platform.startswith("linux"):
        tune_malloc()
    return status


def tune_malloc() -> bool:
    """Keep freed blocks up to 32 MB on glibc's heap and trim it only beyond 1 GiB; return
    whether malloc was tuned (not on other C libraries, nor with MLX_INCEPTION_TUNE_MALLOC=0)."""
    global malloc_tuned
    if os.environ.get(MALLOC_VARIABLE, "1").strip().lower() in _OFF:
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # An explicit threshold also stops glibc from adjusting them itself.
    malloc_tuned = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return malloc_tuned


def _load_blas() -> str:
    global status, library
    setting = os.environ.get(ENVIRONMENT_VARIABLE, "1").strip()
    if not sys.platform.startswith("linux"):
        status = "platform BLAS (not Linux: MLX uses Accelerate on macOS)"
        return status
    if setting.lower() in _OFF:
        status = f"MLX's bundled BLAS ({ENVIRONMENT_VARIABLE}={setting})"
        return status
    if "mlx.core" in sys.modules:
        status = "MLX's bundled BLAS (mlx.core was imported before mlx_inception)"
        warnings.warn(
            "mlx.core was imported before mlx_inception, so MLX keeps its slow reference BLAS: "
            "import mlx_inception first", RuntimeWarning, stacklevel=4,
        )
        return status
    explicit = setting.lower() not in ("1", "true", "yes", "on", "")
    candidates = [setting] if explicit else mkl_candidates()
    errors = []
    for path in candidates:
        try:
            handle = ctypes.CDLL(path, mode=os.RTLD_GLOBAL)
        except OSError as error:
            errors.append(str(error))
            continue
        library = path
        status = _describe(handle, path)
        return status
    if explicit:
        status = f"MLX's bundled BLAS (could not load {setting}: {errors[0] if errors else '?'})"
        warnings.warn(status, RuntimeWarning, stacklevel=4)
    else:
        status = _not_found()
    return status
