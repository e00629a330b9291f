"""The fast BLAS on Linux: chosen automatically, switched off by MLX_INCEPTION_FAST_BLAS=0.

The choice is made once, when the package is first imported, so each setting is tried in a
fresh interpreter (the slow tier); the quick tier checks the choice this process made.
``MKL_VERBOSE=1`` makes MKL print a line for every call it serves, which shows whether MLX's
matmul really went through it (no timing is asserted).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
from conftest import CPU_ONLY, runs_on_gpu

from mlx_inception import _blas

pytestmark = pytest.mark.skipif(runs_on_gpu(), reason=CPU_ONLY)

linux_x86_64 = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")),
    reason="MKL is the fast BLAS on x86_64 Linux only",
)
needs_mkl = pytest.mark.skipif(not _blas.mkl_candidates(), reason="the mkl wheel is not installed")

MATMUL = "import mlx.core as mx; mx.eval(mx.ones((64, 64)) @ mx.ones((64, 64)))"
REPORT = "import mlx_inception; print('STATUS', mlx_inception._blas.status)"


def run_python(code: str, **environment: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLX_INCEPTION_FAST_BLAS", "MLX_INCEPTION_TUNE_MALLOC", "MKL_VERBOSE")}
    env.update(environment)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120, check=True)


def status_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("STATUS ")).removeprefix(
        "STATUS ")


def mkl_calls(output: str) -> list[str]:
    return [line for line in output.splitlines() if "SGEMM(" in line]


@linux_x86_64
@needs_mkl
@pytest.mark.skipif("MLX_INCEPTION_FAST_BLAS" in os.environ, reason="the default is overridden")
def test_this_process_loaded_mkl_before_mlx():
    # conftest imports mlx_inception before anything imports mlx.core, as a script should.
    assert _blas.status.startswith("mkl ") and _blas.library in _blas.status
    with open("/proc/self/maps") as maps:
        assert os.path.realpath(_blas.library) in maps.read()


@pytest.mark.slow
@linux_x86_64
@needs_mkl
def test_mkl_is_loaded_by_default_and_serves_mlx_matmul():
    done = run_python(f"{REPORT}; {MATMUL}", MKL_VERBOSE="1")
    assert status_line(done.stdout).startswith("mkl ")
    assert "libmkl_rt.so" in status_line(done.stdout)
    assert len(mkl_calls(done.stdout)) == 1


@pytest.mark.slow
@linux_x86_64
@needs_mkl
def test_status_names_the_mkl_version_and_its_thread_count():
    done = run_python(REPORT, MKL_NUM_THREADS="1")
    assert status_line(done.stdout).startswith("mkl 20")
    assert ", 1 thread: " in status_line(done.stdout)


@pytest.mark.slow
@linux_x86_64
@needs_mkl
@pytest.mark.parametrize("setting", ["0", "off", "False"])
def test_setting_the_switch_to_off_keeps_mlx_own_blas(setting):
    done = run_python(
        f"{REPORT}; {MATMUL}; print('MAPPED', 'libmkl_rt' in open('/proc/self/maps').read())",
        MLX_INCEPTION_FAST_BLAS=setting, MKL_VERBOSE="1",
    )
    assert status_line(done.stdout) == f"MLX's bundled BLAS (MLX_INCEPTION_FAST_BLAS={setting})"
    assert "MAPPED False" in done.stdout
    assert mkl_calls(done.stdout) == []


@pytest.mark.slow
@linux_x86_64
@needs_mkl
def test_importing_mlx_core_first_is_detected_and_warned_about():
    done = run_python(f"import mlx.core; {REPORT}; {MATMUL}", MKL_VERBOSE="1")
    assert status_line(done.stdout) == (
        "MLX's bundled BLAS (mlx.core was imported before mlx_inception)"
    )
    assert "import mlx_inception first" in done.stderr
    assert mkl_calls(done.stdout) == []


@pytest.mark.slow
@linux_x86_64
@needs_mkl
def test_a_library_path_in_the_switch_loads_that_library():
    path = _blas.mkl_candidates()[0]
    done = run_python(f"{REPORT}; {MATMUL}", MLX_INCEPTION_FAST_BLAS=path, MKL_VERBOSE="1")
    assert status_line(done.stdout).endswith(f": {path}")
    assert len(mkl_calls(done.stdout)) == 1


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the preload is Linux-only")
def test_an_unloadable_library_path_warns_and_mlx_still_computes():
    product = "(mx.ones((8, 8)) @ mx.ones((8, 8))).sum().item()"
    code = f"{REPORT}; import mlx.core as mx; print('SUM', {product})"
    done = run_python(code, MLX_INCEPTION_FAST_BLAS="/nonexistent/libblas.so")
    assert status_line(done.stdout).startswith(
        "MLX's bundled BLAS (could not load /nonexistent/libblas.so:"
    )
    assert "RuntimeWarning" in done.stderr
    assert "SUM 512.0" in done.stdout


def test_nothing_is_loaded_outside_linux(monkeypatch):
    monkeypatch.setattr(_blas, "status", _blas.status)
    monkeypatch.setattr(_blas, "library", _blas.library)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert _blas.preload() == "platform BLAS (not Linux: MLX uses Accelerate on macOS)"


REUSE = """
import resource, mlx_inception, mlx.core as mx
from mlx_inception.model import InceptionV3, InceptionV3Config
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
model = InceptionV3(InceptionV3Config(aux_logits=False), init_weights=False).eval()
images = mx.zeros((1, 299, 299, 3))
for _ in range(3):  # the first pass grows the heap; count the last one's page faults
    before = faults()
    mx.eval(model(images))
print("TUNED", mlx_inception._blas.malloc_tuned, "FAULTS", faults() - before)
"""


def faults_line(output: str) -> tuple[str, int]:
    words = next(line for line in output.splitlines() if line.startswith("TUNED")).split()
    return words[1], int(words[3])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc is tuned on Linux")
def test_tuned_malloc_serves_a_repeated_forward_pass_without_page_faults():
    tuned, faults = faults_line(run_python(REUSE).stdout)
    if tuned != "True":
        pytest.skip("not glibc: no mallopt")
    assert faults < 1000  # measured: 0


PROBE = """
import ctypes, mlx_inception
libc = ctypes.CDLL(None)
class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
before = libc.mallinfo2().hblks
block = libc.malloc(24 << 20)
print("TUNED", mlx_inception._blas.malloc_tuned, "MMAPPED", libc.mallinfo2().hblks - before)
libc.free(block)
"""


def mmapped_line(output: str) -> tuple[str, int]:
    words = next(line for line in output.splitlines() if line.startswith("TUNED")).split()
    return words[1], int(words[3])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc is tuned on Linux")
@pytest.mark.parametrize(("setting", "tuned", "mmapped"), [("1", "True", 0), ("0", "False", 1)])
def test_the_malloc_switch_decides_where_a_24_mb_block_comes_from(setting, tuned, mmapped):
    """glibc serves a fresh 24 MB malloc with its own mmap (threshold 128 KB) unless tuned,
    which raises the threshold to 32 MB; mallinfo2's count of mmapped blocks shows which.
    (Page faults of a forward pass are no test of the untuned case: glibc's threshold adapts
    to the frees it sees, so that count varied from 3,000 to 11,000 between machines.)"""
    done = run_python(PROBE, MLX_INCEPTION_TUNE_MALLOC=setting)
    assert mmapped_line(done.stdout) == (tuned, mmapped)
