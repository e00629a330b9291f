"""Set up MLX's Linux CPU backend: a fast BLAS (before ``mlx.core`` is imported), a bigger cache.

MLX's Linux CPU wheel calls a bundled reference BLAS (about 2 GFLOP/s on sgemm). Loading Intel
MKL's ``libmkl_rt`` into the global symbol scope first makes MLX resolve its BLAS calls there
(about 140 GFLOP/s on the same sgemm on a 2-core x86_64, and the whole network about 40x
faster). The ``mkl`` wheel is a dependency on x86_64 Linux; macOS uses Accelerate and nothing
here runs.

``MLX_INCEPTION_FAST_BLAS`` chooses: unset or ``1`` finds MKL in this Python's environment;
``0`` (or ``false``, ``no``, ``off``) keeps MLX's own BLAS; a path loads that library instead
(any BLAS exporting the standard ``cblas_*`` symbols, e.g. OpenBLAS's
``libopenblas.so.0``). :data:`status` says what happened, in one line.

MLX's CPU allocator also keeps only 32 MB of freed buffers for reuse (its GPU allocators keep far
more); every larger activation then comes back from the kernel as fresh pages, faulted in and
zeroed one by one: about a tenth of an inference pass at 299 px, more in training. On the CPU
the cache limit is raised to :data:`CPU_CACHE_LIMIT` (never lowered; ``mx.set_cache_limit``
after import overrides it).
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
#: Bytes of freed buffers MLX's CPU allocator keeps for reuse after :func:`preload`: enough
#: for an inference pass's activations (about 200 MB at batch 8) and most of a training step's.
CPU_CACHE_LIMIT = 1 << 30
_OFF = ("0", "false", "no", "off")

#: What :func:`preload` did: "mkl 2026.2.0, 2 threads: /path/libmkl_rt.so.3", or why it did
#: nothing ("MLX's bundled BLAS (...)", "platform BLAS (...)").
status = "not attempted"
#: The library loaded, or None.
library: str | None = None


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
    """Load a fast BLAS globally when it helps and is available, raise the CPU buffer cache;
    return :data:`status`.

    Must run before ``mlx.core`` is first imported: MLX binds its BLAS symbols when it loads.
    """
    _load_blas()
    if sys.platform.startswith("linux"):
        raise_cpu_cache_limit()
    return status


def raise_cpu_cache_limit(limit: int = CPU_CACHE_LIMIT) -> int:
    """Raise MLX's buffer cache limit to ``limit`` bytes when the default device is the CPU;
    return the limit in force (a larger one, or a GPU's, is kept)."""
    import mlx.core as mx

    previous = mx.set_cache_limit(limit)
    if previous >= limit or mx.default_device().type != mx.DeviceType.cpu:
        mx.set_cache_limit(previous)
        return previous
    return limit


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
