"""Fuzzing the Hub: a server that fails at random (seeded), and downloads killed at random moments.

Every case of ``test_a_misbehaving_hub_gives_the_file_or_one_line`` is made by a generator seeded
with its number (tests/hub_server.py's ``Chaos``): errors 429/500/502/503, a redirect loop, a
wrong ETag, hash or size, a body that stalls or is cut short, once, a few times or always, with
resumes honoured or sent whole again. Each must end with the right file (its SHA-256 checked) or
one line of HubError, within its deadline (HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT are set
to one second here), with no ``.incomplete`` file and no blob that is not a true file of the repo
left in the cache. The fast tier runs every tenth case (``SAMPLE``); ``-m slow`` the rest.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hub_server import Chaos, HubServer
from huggingface_hub import constants

from mlx_inception.checkpoints import hub
from mlx_inception.errors import HubError

SAMPLE = 10  # the fast tier runs case 0, 10, 20, ...
REPO = "tester/fuzzed"
DEADLINE = 1  # seconds, each wait of a request (HF_HUB_ETAG_TIMEOUT, HF_HUB_DOWNLOAD_TIMEOUT)
CASE_SECONDS = 25.0  # the slowest honest case: huggingface_hub's five backed-off retries
TIMM_CONFIG = {"architecture": "inception_v3", "num_classes": 1000,
               "pretrained_cfg": {"input_size": [3, 299, 299], "crop_pct": 0.875}}


@functools.cache
def repo_files() -> dict[str, bytes]:
    """A timm-style repo: its config and a 12 MB weight file (resolve checks hashes, not
    tensors). Over 10 MB, huggingface_hub's piece size, so a cut body can still give pieces."""
    weights = random.Random(0).randbytes(12 * 2**20)
    return {"config.json": json.dumps(TIMM_CONFIG).encode(), "model.safetensors": weights}


@pytest.fixture(scope="module")
def server():
    hub_server = HubServer().start()
    hub_server.add_repo(REPO, repo_files())
    yield hub_server
    hub_server.stop()


@pytest.fixture
def hf_env(server, tmp_path, monkeypatch) -> Path:
    """A fresh HF home on the local Hub with one-second deadlines; the hub cache dir."""
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", str(DEADLINE))
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", str(DEADLINE))
    for name in ("HF_HUB_CACHE", "HF_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    # huggingface_hub read these when it was imported.
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", DEADLINE)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return tmp_path / "hf" / "hub"


def cases(count: int) -> list:
    """Return ``range(count)`` as pytest params: every SAMPLE-th fast, the others slow."""
    return [pytest.param(i, marks=() if i % SAMPLE == 0 else pytest.mark.slow)
            for i in range(count)]


MODES = ["status", "redirect", "etag", "hash", "size", "stall", "cut"]


def chaos(number: int) -> Chaos:
    """Return misbehaviour ``number``: a mode, how often, how many times, resumes or not."""
    rng = random.Random(number)
    mode = MODES[number % len(MODES)]
    return Chaos(
        seed=number,
        mode=mode,
        rate=rng.choice([0.3, 0.6, 1.0]),
        times=rng.choice([1, 2, None]),
        ranges=rng.random() < 0.5,
        statuses=tuple(rng.sample([429, 500, 502, 503], rng.randint(1, 4))),
        retry_after=rng.choice([None, None, 0, 1]),
        part=rng.choice([0.01, 0.3, 0.9]),
    )


def assert_cache_is_clean(cache: Path) -> None:
    """No partial file, and every blob is one of the repo's true files (by its SHA-256)."""
    true_hashes = {hashlib.sha256(content).hexdigest() for content in repo_files().values()}
    leftovers = [str(p.relative_to(cache)) for p in cache.rglob("*.incomplete")]
    assert not leftovers, f"partial downloads left: {leftovers}"
    for blob in cache.glob("models--*/blobs/*"):
        digest = hashlib.sha256(blob.read_bytes()).hexdigest()
        assert digest in true_hashes, f"a blob that is no file of the repo: {blob.name}"
    for link in cache.glob("models--*/snapshots/*/*"):
        assert link.exists(), f"a snapshot entry leading nowhere: {link}"


@pytest.mark.parametrize("number", cases(50))
def test_a_misbehaving_hub_gives_the_file_or_one_line(number, server, hf_env):
    server.chaos = chaos(number)
    start = time.monotonic()
    try:
        kind, value = "ok", hub.resolve(REPO)
    except HubError as error:
        kind, value = "error", str(error)
    finally:
        server.chaos = None
    elapsed = time.monotonic() - start
    assert elapsed < CASE_SECONDS, f"case {number} took {elapsed:.1f} s"
    if kind == "ok":
        expected = repo_files()["model.safetensors"]
        assert hashlib.sha256(Path(value).read_bytes()).digest() == hashlib.sha256(
            expected).digest()
    else:
        assert value and "\n" not in value and len(value) < 500, repr(value)
    assert_cache_is_clean(hf_env)
    # Once the server behaves, the same cache gives the file.
    path = hub.resolve(REPO)
    assert path.read_bytes() == repo_files()["model.safetensors"]
    assert_cache_is_clean(hf_env)


def test_a_server_that_cuts_every_answer_and_ignores_resumes_is_stopped(server, hf_env):
    """huggingface_hub alone loops for ever here (each piece gives its retries back)."""
    server.chaos = Chaos(seed=0, mode="cut", ranges=False, part=0.9)
    start = time.monotonic()
    try:
        with pytest.raises(HubError, match="no new byte past .* in 3 s") as excinfo:
            hub.resolve(REPO)
    finally:
        server.chaos = None
    assert time.monotonic() - start < 4 * hub.download_window()
    assert "\n" not in str(excinfo.value)
    assert_cache_is_clean(hf_env)


# --------------------------------------------------------------------------------------------
# Downloads killed at random moments


@pytest.mark.slow
@pytest.mark.parametrize("number", range(4))
def test_a_download_killed_at_any_moment_leaves_no_debris_once_run_again(
    number, server, hf_env, tmp_path
):
    rng = random.Random(number)
    # The body stalls once for a second (HF_HUB_DOWNLOAD_TIMEOUT) halfway: kills land in it too.
    server.chaos = Chaos(seed=number, mode="stall", times=1, part=rng.choice([0.3, 0.9]))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    # resolve is what `download` runs before it reads the weights (random bytes here).
    command = [sys.executable, "-c", f"from mlx_inception.checkpoints import hub; "
               f"print(hub.resolve({REPO!r}))"]
    try:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 4.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        server.chaos = None
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert_cache_is_clean(hf_env)
    assert list(hf_env.rglob("model.safetensors"))[0].read_bytes() == repo_files()[
        "model.safetensors"]
