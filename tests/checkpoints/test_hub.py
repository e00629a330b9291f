"""Weights from the Hub, end to end against a local Hub-compatible server (tests/hub_server.py).

The real huggingface_hub client talks HTTP to 127.0.0.1: nothing here reaches the internet.
huggingface_hub's cache is the only cache: ``resolve`` gives a timm repo's weight file (converted
in memory by ``load``) or a repo's snapshot folder when it is already in this project's format.
The upstream weights are torchvision's Inception-v3 with BatchNorm statistics measured on real
photos (conftest's calibrated model), stored as timm stores them on the Hub: ``model.safetensors``
without the AuxLogits head, a ``pytorch_model.bin`` beside it, and timm's ``config.json``.

Tolerance for logits: converted weights run by MLX vs torchvision in float32, relative error
``max|diff| <= 1e-4 * max|torchvision|`` (the parity tests measure about 1e-6).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import real_photos
from hub_server import HubServer, free_port, silent_endpoint
from huggingface_hub import constants, hf_hub_download, scan_cache_dir

import mlx_inception
from mlx_inception import cli
from mlx_inception.checkpoints import convert, hub, local, registry, store
from mlx_inception.errors import CheckpointError, HubError

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

TV_NAME = "inception_v3.tv_in1k"
TV_REPO = "timm/inception_v3.tv_in1k"
WRITE_TOKEN = "hf_test_write_token"
RELATIVE_TOLERANCE = 1e-4

TIMM_TV_CONFIG = {
    "architecture": "inception_v3",
    "num_classes": 1000,
    "num_features": 2048,
    "pretrained_cfg": {
        "tag": "tv_in1k",
        "input_size": [3, 299, 299],
        "interpolation": "bicubic",
        "crop_pct": 0.875,
        "crop_mode": "center",
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "num_classes": 1000,
        "first_conv": "Conv2d_1a_3x3.conv",
        "classifier": "fc",
    },
}
# An unregistered repo: its preprocessing must come from timm's config.json.
TIMM_CUSTOM_CONFIG = {
    "architecture": "inception_v3",
    "num_classes": 1000,
    "pretrained_cfg": {
        "input_size": [3, 299, 299],
        "interpolation": "bilinear",
        "crop_pct": 0.9,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    },
}


# ----------------------------------------------------------------------------------------------
# Fixtures: the upstream files, the server, an isolated Hugging Face home per test


def timm_state(model) -> dict:
    """The state_dict as timm publishes Inception-v3 on the Hub: no AuxLogits head."""
    return {
        key: value.detach().contiguous()
        for key, value in model.state_dict().items()
        if not key.startswith("AuxLogits.")
    }


def pickle_bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def upstream(calibrated_model):
    """The bytes of the upstream files, and the torchvision model they came from."""
    state = timm_state(calibrated_model)
    shifted = dict(state, **{"fc.bias": state["fc.bias"] + 1.0})
    return {
        "model": calibrated_model,
        "safetensors": safetensors_torch.save(state),
        "pickle": pickle_bytes(state),
        "shifted_safetensors": safetensors_torch.save(shifted),
        "fc_bias": state["fc.bias"].numpy(),
    }


@pytest.fixture(scope="module")
def server(upstream):
    """The local Hub, with timm's tv_in1k repo and a few others."""
    hub_server = HubServer(tokens={WRITE_TOKEN: "tester"}).start()
    timm_config = json.dumps(TIMM_TV_CONFIG).encode()
    hub_server.add_repo(
        TV_REPO,
        {
            "README.md": b"---\nlicense: apache-2.0\n---\n# inception_v3.tv_in1k\n",
            "config.json": timm_config,
            "model.safetensors": upstream["safetensors"],
            "pytorch_model.bin": upstream["pickle"],
        },
    )
    custom_config = json.dumps(TIMM_CUSTOM_CONFIG).encode()
    first = hub_server.add_repo(
        "tester/pinned",
        {"config.json": custom_config, "model.safetensors": upstream["safetensors"]},
    )
    hub_server.tag("tester/pinned", "v1", first)
    hub_server.commit(
        "tester/pinned", {"model.safetensors": upstream["shifted_safetensors"]}, message="shift"
    )
    hub_server.add_repo(
        "tester/pickle-only", {"config.json": timm_config, "pytorch_model.bin": upstream["pickle"]}
    )
    hub_server.add_repo("tester/no-weights", {"README.md": b"# nothing here\n"})
    hub_server.add_repo("tester/private", {"README.md": b"# private\n"}, private=True)
    hub_server.add_repo(
        "tester/gated",
        {"config.json": timm_config, "model.safetensors": upstream["safetensors"]},
        gated=True,
    )
    yield hub_server
    hub_server.stop()


def isolate_hf(monkeypatch, home: Path, endpoint: str) -> Path:
    """Point every HF_* setting at ``home`` and ``endpoint``; return the hub cache dir."""
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HOME", str(home))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                 "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    # huggingface_hub read these when it was imported: keep a developer's token and offline
    # setting out of the tests.
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return home / "hub"


@pytest.fixture
def hf_cache(server, tmp_path, monkeypatch) -> Path:
    """A fresh Hugging Face home pointed at the local Hub; the hub cache dir."""
    return isolate_hf(monkeypatch, tmp_path / "hf", server.endpoint)


@pytest.fixture(scope="module")
def downloaded(server, module_tmp):
    """One completed download of inception_v3.tv_in1k: (HF home, its weight file)."""
    home = module_tmp("hf-downloaded")
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate_hf(monkeypatch, home, server.endpoint)
        path = hub.resolve(TV_NAME)
    return home, path


@pytest.fixture
def downloaded_env(downloaded, server, monkeypatch):
    """The environment of ``downloaded`` (same HF home); returns its weight file."""
    home, path = downloaded
    isolate_hf(monkeypatch, home, server.endpoint)
    return path


def torchvision_logits(model, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()


def relative_error(actual, expected) -> float:
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def converted(path: Path) -> tuple[dict, object]:
    """The weights and config ``mlx_inception.load(path)`` builds from what ``resolve`` gave."""
    if path.is_dir():
        return store.load_weights(path)
    conversion = convert.convert_file(path, local.hub_file_config(path))
    return conversion.weights, conversion.config


def config_of(path: Path):
    return local.weights_config(path)


def add_timm_repo(server: HubServer, upstream: dict, name: str) -> str:
    """A timm-style repo of its own for a test that pushes commits to it; its repo id."""
    repo_id = f"tester/{name}"
    server.add_repo(
        repo_id,
        {
            "README.md": b"# first\n",
            "config.json": json.dumps(TIMM_CUSTOM_CONFIG).encode(),
            "model.safetensors": upstream["safetensors"],
        },
    )
    return repo_id


def fc_bias(path: Path) -> np.ndarray:
    return np.array(converted(path)[0]["fc.bias"])


def blob_files(cache: Path) -> list[Path]:
    return [path for path in cache.glob("models--*/blobs/*") if path.is_file()]


def single_line_hub_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------------------------
# Download and conversion


def test_registry_name_downloads_a_file_that_loads_as_a_model_matching_torchvision(
    server, upstream, hf_cache
):
    path = hub.resolve(TV_NAME)
    commit = server.repos[TV_REPO].refs["main"]
    snapshot = hf_cache / "models--timm--inception_v3.tv_in1k" / "snapshots" / commit
    assert path == snapshot / "model.safetensors"
    model = mlx_inception.load(path)
    images = real_photos(107, 2)
    error = relative_error(model(mx.array(images)), torchvision_logits(upstream["model"], images))
    assert error <= RELATIVE_TOLERANCE


def test_the_downloaded_file_loads_with_the_registry_preprocessing_and_the_source(
    server, upstream, hf_cache
):
    config = mlx_inception.load(hub.resolve(TV_NAME)).config  # the path alone says it all
    assert config.preprocessing.mean == (0.5, 0.5, 0.5)
    assert config.preprocessing.std == (0.5, 0.5, 0.5)
    assert (config.preprocessing.resize_size, config.preprocessing.interpolation) == (
        341, "bicubic"
    )
    assert config.transform_input is False
    assert config.aux_logits is False  # timm's file has no AuxLogits head
    assert config.source["registry_name"] == TV_NAME
    assert config.source["commit"] == server.repos[TV_REPO].refs["main"]
    assert config.source["sha256"] == hashlib.sha256(upstream["safetensors"]).hexdigest()
    assert config.source["license"] == "apache-2.0"


def test_safetensors_is_preferred_and_the_pickle_never_downloaded(server, hf_cache):
    before = server.count(contains="pytorch_model.bin")
    hub.resolve(TV_REPO)
    assert server.count(contains="pytorch_model.bin") == before


def test_repo_id_of_a_registered_entry_gets_the_registry_config(server, hf_cache):
    config = config_of(hub.resolve(TV_REPO))
    assert config.source["registry_name"] == TV_NAME
    assert config.preprocessing.mean == (0.5, 0.5, 0.5)


def test_unregistered_repo_takes_its_preprocessing_from_timms_config(server, hf_cache):
    path = hub.resolve("tester/pinned", revision="v1")
    assert (path.parent / "config.json").is_file()  # timm's, downloaded beside the weights
    config = config_of(path)
    assert config.preprocessing.interpolation == "bilinear"
    assert config.preprocessing.resize_size == 332  # floor(299 / 0.9), timm's eval resize
    assert config.preprocessing.mean == (0.485, 0.456, 0.406)
    assert "registry_name" not in config.source


def test_load_accepts_a_registry_name(server, upstream, hf_cache):
    model = mlx_inception.load(TV_NAME)
    images = real_photos(75, 1)
    error = relative_error(model(mx.array(images)), torchvision_logits(upstream["model"], images))
    assert error <= RELATIVE_TOLERANCE


def test_settings_follow_the_hf_variables_when_resolve_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2.5")
    settings = hub.hub_settings()
    assert settings.cache_dir == tmp_path / "home" / "hub"
    assert settings.endpoint == "http://127.0.0.1:9"
    assert settings.offline is True
    assert settings.timeout == 2.5
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    settings = hub.hub_settings()
    assert settings.cache_dir == tmp_path / "cache"  # HF_HUB_CACHE wins over HF_HOME
    assert settings.offline is False
    assert hub.hub_settings(cache_dir=tmp_path / "x", offline=True).cache_dir == tmp_path / "x"


# ----------------------------------------------------------------------------------------------
# Cache


def test_second_resolve_is_one_listing_request_and_no_download(server, downloaded_env):
    before = len(server.requests)
    assert hub.resolve(TV_NAME) == downloaded_env
    new = server.requests[before:]
    assert [(request.method, request.path) for request in new] == [
        ("GET", f"/api/models/{TV_REPO}/revision/main")
    ]


def test_offline_resolve_uses_the_cache_without_any_request(server, downloaded_env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(server.requests)
    assert hub.resolve(TV_NAME) == downloaded_env
    assert mlx_inception.load(TV_NAME).config.source["registry_name"] == TV_NAME
    assert len(server.requests) == before


def test_offline_without_cache_says_how_to_download(server, hf_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(server.requests)
    with pytest.raises(HubError) as excinfo:
        hub.resolve(TV_NAME)
    message = single_line_hub_error(excinfo)
    assert "HF_HUB_OFFLINE" in message and "mlx-inception download" in message
    assert len(server.requests) == before


def test_unreachable_hub_falls_back_to_the_cache_with_a_warning(
    downloaded_env, monkeypatch, caplog
):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    with caplog.at_level(logging.WARNING, logger="mlx_inception.checkpoints.hub"):
        assert hub.resolve(TV_NAME) == downloaded_env
    assert "cannot reach" in caplog.text


def test_cached_path_sees_the_download_without_network(server, downloaded_env):
    before = len(server.requests)
    assert hub.cached_path(TV_NAME) == downloaded_env
    assert hub.cached_path("inception_v3.gluon_in1k") is None
    assert len(server.requests) == before


def test_list_marks_cached_weights(downloaded_env, capsys):
    assert cli.main(["list", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows[TV_NAME]["cached"] is True and rows[TV_NAME]["path"] == str(downloaded_env)
    assert rows[TV_NAME]["default"] is True
    assert rows["inception_v3.tf_in1k"]["cached"] is False


def test_after_a_download_the_cache_holds_only_huggingface_hubs_own_folders(server, hf_cache):
    hub.resolve(TV_NAME)
    hub.resolve("tester/pinned", revision="v1")
    repos = {"models--timm--inception_v3.tv_in1k", "models--tester--pinned"}
    # CACHEDIR.TAG: huggingface_hub's mark that tells backup tools to skip the cache.
    assert {entry.name for entry in hf_cache.iterdir()} == repos | {".locks", "CACHEDIR.TAG"}
    for repo in repos:
        assert {entry.name for entry in (hf_cache / repo).iterdir()} == {
            "blobs", "snapshots", "refs"}
    scan = scan_cache_dir(hf_cache)
    assert scan.warnings == []
    # `hf cache ls` counts every byte there is: the two weight files and timm's config.json.
    on_disk = sum(path.stat().st_size for path in hf_cache.glob("models--*/blobs/*"))
    assert scan.size_on_disk == on_disk


# ----------------------------------------------------------------------------------------------
# Upstream commits: refs move only when a resolve worked


def test_a_new_commit_with_the_same_weight_file_downloads_nothing(
    server, upstream, hf_cache, monkeypatch
):
    repo_id = add_timm_repo(server, upstream, "docs-update")
    first = hub.resolve(repo_id)
    latest = server.commit(repo_id, {"README.md": b"# docs only\n"})
    downloads = server.count("GET", port="cdn")
    path = hub.resolve(repo_id)
    assert path == first.parent.parent / latest / "model.safetensors"
    assert server.count("GET", port="cdn") == downloads
    assert len(list(hf_cache.glob("models--*/blobs/*"))) == 2  # one weight file, one config
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.resolve(repo_id) == path  # the new commit is where main leads offline too


def test_a_failed_update_leaves_the_last_download_in_use_until_one_succeeds(
    server, upstream, hf_cache, monkeypatch
):
    repo_id = add_timm_repo(server, upstream, "failed-update")
    first = hub.resolve(repo_id)
    server.commit(repo_id, {"model.safetensors": upstream["shifted_safetensors"]})
    monkeypatch.setitem(server.faults, (repo_id, "model.safetensors"), "corrupt")
    with pytest.raises(HubError, match="does not match"):
        hub.resolve(repo_id)
    assert hub.resolve(repo_id, offline=True) == first
    assert hub.cached_path(repo_id) == first  # what the desktop app looks up at start

    monkeypatch.delitem(server.faults, (repo_id, "model.safetensors"))
    updated = hub.resolve(repo_id)
    np.testing.assert_array_equal(fc_bias(updated), upstream["fc_bias"] + 1.0)
    assert hub.resolve(repo_id, offline=True) == updated


def test_an_update_that_cannot_reach_the_hub_uses_the_last_download_with_a_warning(
    server, upstream, hf_cache, monkeypatch, caplog
):
    repo_id = add_timm_repo(server, upstream, "network-drop")
    first = hub.resolve(repo_id)
    server.commit(repo_id, {"model.safetensors": upstream["shifted_safetensors"]})
    # The listing answers, then the connection drops when the new file is asked for.
    monkeypatch.setitem(server.faults, (repo_id, "model.safetensors"), "drop")
    with caplog.at_level(logging.WARNING, logger="mlx_inception.checkpoints.hub"):
        assert hub.resolve(repo_id) == first
    assert f"cannot reach {server.endpoint}" in caplog.text


@pytest.mark.parametrize("with_config", [True, False], ids=["timm-config", "weights-only"])
def test_what_resolve_downloads_huggingface_hub_finds_offline_too(
    server, upstream, hf_cache, monkeypatch, with_config
):
    repo_id = f"tester/docs-commit-{with_config}".lower()
    files = {"model.safetensors": upstream["safetensors"]}
    if with_config:
        files["config.json"] = json.dumps(TIMM_CUSTOM_CONFIG).encode()
    server.add_repo(repo_id, files)
    path = hub.resolve(repo_id)
    assert [cached.repo_id for cached in scan_cache_dir(hf_cache).repos] == [repo_id]
    weights = hf_hub_download(repo_id, "model.safetensors", cache_dir=hf_cache,
                              local_files_only=True)  # what timm does offline
    assert Path(weights) == path
    assert path.read_bytes() == upstream["safetensors"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.resolve(repo_id) == path


# ----------------------------------------------------------------------------------------------
# Revisions


def test_revision_pins_a_tag_branch_or_commit(server, upstream, hf_cache):
    repo = server.repos["tester/pinned"]
    tagged = hub.resolve("tester/pinned", revision="v1")
    latest = hub.resolve("tester/pinned")
    by_commit = hub.resolve("tester/pinned", revision=repo.refs["v1"])
    assert tagged == by_commit != latest
    tagged_weights, tagged_config = converted(tagged)
    latest_weights, latest_config = converted(latest)
    assert tagged_config.source["commit"] == repo.refs["v1"]
    assert latest_config.source["commit"] == repo.refs["main"]
    np.testing.assert_array_equal(np.array(tagged_weights["fc.bias"]), upstream["fc_bias"])
    np.testing.assert_array_equal(np.array(latest_weights["fc.bias"]), upstream["fc_bias"] + 1.0)


def test_offline_resolves_a_pinned_tag_from_the_cache(server, hf_cache, monkeypatch):
    tagged = hub.resolve("tester/pinned", revision="v1")
    hub.resolve("tester/pinned")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.resolve("tester/pinned", revision="v1") == tagged


def test_unknown_revision_is_a_one_line_error(server, hf_cache):
    with pytest.raises(HubError) as excinfo:
        hub.resolve("tester/pinned", revision="v9")
    assert "has no revision 'v9'" in single_line_hub_error(excinfo)


# ----------------------------------------------------------------------------------------------
# Verification: a corrupt or truncated download is never used and never cached


def test_corrupted_file_of_the_right_size_is_rejected_and_deleted(
    server, upstream, hf_cache, monkeypatch
):
    monkeypatch.setitem(server.faults, (TV_REPO, "model.safetensors"), "corrupt")
    with pytest.raises(HubError) as excinfo:
        hub.resolve(TV_NAME)
    message = single_line_hub_error(excinfo)
    assert "does not match the LFS SHA-256 the Hub announces" in message
    assert blob_files(hf_cache) == []
    assert not list(hf_cache.glob("models--*/snapshots/*/model.safetensors"))
    assert hub.cached_path(TV_NAME) is None

    monkeypatch.delitem(server.faults, (TV_REPO, "model.safetensors"))
    downloads = server.count("GET", port="cdn")
    assert hub.resolve(TV_NAME).read_bytes() == upstream["safetensors"]
    assert server.count("GET", port="cdn") == downloads + 1  # downloaded again, not reused


@pytest.mark.slow
def test_without_hashes_in_the_listing_the_x_linked_etag_is_checked(
    server, hf_cache, monkeypatch
):
    monkeypatch.setattr(server, "listing_hashes", False)
    monkeypatch.setitem(server.faults, (TV_REPO, "model.safetensors"), "corrupt")
    with pytest.raises(HubError) as excinfo:
        hub.resolve(TV_NAME)
    assert "does not match the X-Linked-Etag the Hub announced" in single_line_hub_error(excinfo)
    assert blob_files(hf_cache) == []

    monkeypatch.delitem(server.faults, (TV_REPO, "model.safetensors"))
    assert hub.resolve(TV_NAME).is_file()


def test_truncated_download_is_rejected_and_nothing_cached(server, hf_cache, monkeypatch):
    monkeypatch.setitem(server.faults, (TV_REPO, "model.safetensors"), "truncate")
    with pytest.raises(HubError) as excinfo:
        hub.resolve(TV_NAME)
    assert "cut short" in single_line_hub_error(excinfo)
    assert blob_files(hf_cache) == []
    assert hub.cached_path(TV_NAME) is None


def test_registry_hash_is_checked_when_pinned(server, upstream, hf_cache, monkeypatch, tmp_path):
    def use_registry(sha256: str) -> None:
        data = json.loads(registry.REGISTRY_FILE.read_text())
        data["weights"][TV_NAME]["sha256"] = sha256
        path = tmp_path / f"registry-{sha256[:8]}.json"
        path.write_text(json.dumps(data))
        monkeypatch.setattr(registry, "REGISTRY_FILE", path)

    use_registry("0" * 64)
    with pytest.raises(HubError) as excinfo:
        hub.resolve(TV_NAME)
    assert "is not the registered file" in single_line_hub_error(excinfo)
    assert blob_files(hf_cache) == []

    use_registry(hashlib.sha256(upstream["safetensors"]).hexdigest())
    assert hub.resolve(TV_NAME).read_bytes() == upstream["safetensors"]


# ----------------------------------------------------------------------------------------------
# Errors


def test_missing_repo_is_a_one_line_error_with_a_hint(server, hf_cache):
    with pytest.raises(HubError) as excinfo:
        hub.resolve("nobody/nothing")
    message = single_line_hub_error(excinfo)
    assert "no repo nobody/nothing" in message and "HF_TOKEN" in message


def test_registered_file_missing_from_the_repo_is_a_one_line_error(
    server, hf_cache, monkeypatch, tmp_path
):
    data = json.loads(registry.REGISTRY_FILE.read_text())
    data["weights"][TV_NAME]["filename"] = "missing.safetensors"
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(data))
    monkeypatch.setattr(registry, "REGISTRY_FILE", path)
    with pytest.raises(HubError) as excinfo:
        hub.resolve(TV_NAME)
    assert "has no file missing.safetensors" in single_line_hub_error(excinfo)


def test_repo_without_weights_is_a_one_line_error(server, hf_cache):
    with pytest.raises(HubError) as excinfo:
        hub.resolve("tester/no-weights")
    assert "no single weight file" in single_line_hub_error(excinfo)


def test_pickle_only_repo_needs_allow_pickle(server, hf_cache):
    before = server.count(contains="pytorch_model.bin")
    with pytest.raises(HubError) as excinfo:
        hub.resolve("tester/pickle-only")
    assert "--allow-pickle" in single_line_hub_error(excinfo)
    assert server.count(contains="pytorch_model.bin") == before  # refused before downloading


@pytest.mark.slow
def test_pickle_repo_converts_with_allow_pickle(server, upstream, hf_cache):
    path = hub.resolve("tester/pickle-only", allow_pickle=True)
    assert path.name == "pytorch_model.bin"
    images = real_photos(75, 1)
    logits = mlx_inception.load(path)(mx.array(images))
    assert relative_error(logits, torchvision_logits(upstream["model"], images)) <= 1e-4


def test_unreachable_hub_without_cache_is_a_one_line_error(hf_cache, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(HubError) as excinfo:
        hub.resolve(TV_NAME)
    message = single_line_hub_error(excinfo)
    assert message.startswith("cannot reach http://127.0.0.1:")
    # Nothing is cached, so HF_HUB_OFFLINE would lead back here: say what works offline.
    assert "local checkpoint file" in message and "HF_HUB_OFFLINE" not in message


def test_a_hub_that_never_answers_is_a_one_line_error_once_its_deadline_passes(
    hf_cache, monkeypatch
):
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    with silent_endpoint() as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        started = time.monotonic()
        with pytest.raises(HubError) as excinfo:
            hub.resolve(TV_NAME)
        waited = time.monotonic() - started
    message = single_line_hub_error(excinfo)
    assert message.startswith(f"cannot reach {endpoint} (ReadTimeout")
    assert waited < 10  # a 1 s deadline; without one the request would wait for ever


def test_a_hub_that_never_answers_gives_way_to_the_cache(downloaded_env, monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    with silent_endpoint() as endpoint, caplog.at_level(logging.WARNING,
                                                        logger="mlx_inception.checkpoints.hub"):
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        assert hub.resolve(TV_NAME) == downloaded_env
    assert f"cannot reach {endpoint}" in caplog.text


def test_invalid_token_is_an_authentication_error(server, hf_cache, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_valid_token")
    with pytest.raises(HubError) as excinfo:
        hub.resolve(TV_NAME)
    message = single_line_hub_error(excinfo)
    assert "401" in message and "HF_TOKEN" in message


def test_private_repo_without_token_says_to_log_in(server, hf_cache):
    with pytest.raises(HubError) as excinfo:
        hub.resolve("tester/private")
    assert "hf auth login" in single_line_hub_error(excinfo)


def test_gated_repo_says_to_accept_its_conditions(server, hf_cache):
    with pytest.raises(HubError) as excinfo:
        hub.resolve("tester/gated")
    assert "is gated" in single_line_hub_error(excinfo)


def test_unknown_name_lists_the_known_ones(hf_cache):
    with pytest.raises(CheckpointError) as excinfo:
        mlx_inception.load("inception_v3.nonexistent")
    assert TV_NAME in str(excinfo.value) and "owner/name" in str(excinfo.value)


def test_missing_checkpoint_path_is_not_sent_to_the_hub(server, hf_cache):
    before = len(server.requests)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        mlx_inception.load("missing/inception.pth")
    assert len(server.requests) == before


# ----------------------------------------------------------------------------------------------
# Push


@pytest.fixture
def push_env(server, hf_cache, monkeypatch):
    """Write access, and uploads over the LFS protocol the local Hub speaks (not Xet)."""
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    return hf_cache


def test_push_then_download_round_trips_the_weights(server, push_env, calibrated_weights_dir):
    result = hub.push(calibrated_weights_dir, "tester/round-trip", private=True)
    assert result.commit == server.repos["tester/round-trip"].refs["main"]
    path = hub.resolve("tester/round-trip")
    assert path.parent.name == "snapshots"  # already in this format: used as is
    pushed, pushed_config = store.load_weights(calibrated_weights_dir)
    fetched, fetched_config = store.load_weights(path)
    assert fetched_config == pushed_config
    assert sorted(fetched) == sorted(pushed)
    for key in pushed:
        np.testing.assert_array_equal(np.array(fetched[key]), np.array(pushed[key]))


def test_push_writes_a_model_card(server, push_env, calibrated_weights_dir):
    hub.push(calibrated_weights_dir, "tester/card", license="bsd-3-clause")
    files = server.repos["tester/card"].resolve("main").files
    assert {"README.md", "config.json", "model.safetensors"} <= set(files)
    card = files["README.md"].decode()
    assert card.startswith("---\nlibrary_name: mlx\n")
    assert "license: bsd-3-clause" in card
    for heading in ("## Architecture", "## Source weights", "## Preprocessing", "## Labels",
                    "## Accuracy", "## Licence", "## How to use"):
        assert heading in card
    assert "27,161,264 parameters" in card  # torchvision's count with the aux head
    assert 'mlx_inception.load("tester/card")' in card


def test_model_card_without_a_known_source_says_what_is_missing():
    from mlx_inception.checkpoints.model_card import render_model_card
    from mlx_inception.model import InceptionV3Config

    config = InceptionV3Config(num_classes=3, aux_logits=False, labels=["cat", "dog", "fox"])
    weights = {"fc.weight": mx.zeros((3, 2048)), "fc.bias": mx.zeros((3,)),
               "Conv2d_1a_3x3.bn.running_mean": mx.zeros((32,))}
    card = render_model_card(config, weights, "me/pets")
    assert "license: other" in card and "- Not stated by the uploader." in card
    assert "- Not measured." in card
    assert "3 classes stored in config.json: cat, dog, fox" in card
    assert "6,147 parameters" in card  # BatchNorm running statistics are not parameters
    assert "datasets:" not in card and "base_model" not in card


def test_push_to_a_new_branch_leaves_main_alone(server, push_env, calibrated_weights_dir):
    hub.push(calibrated_weights_dir, "tester/branches")
    main = server.repos["tester/branches"].refs["main"]
    result = hub.push(calibrated_weights_dir, "tester/branches", revision="experiment")
    assert server.repos["tester/branches"].refs["main"] == main
    assert server.repos["tester/branches"].refs["experiment"] == result.commit


def test_push_without_write_token_is_an_authentication_error(
    server, hf_cache, calibrated_weights_dir, monkeypatch
):
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    with pytest.raises(HubError) as excinfo:
        hub.push(calibrated_weights_dir, "tester/no-token")
    assert "401" in single_line_hub_error(excinfo)
    assert "tester/no-token" not in server.repos


def test_push_refuses_an_incomplete_directory_before_any_request(server, push_env, tmp_path):
    (tmp_path / "incomplete").mkdir()
    (tmp_path / "incomplete" / "config.json").write_text("{}")
    before = len(server.requests)
    with pytest.raises(CheckpointError):
        hub.push(tmp_path / "incomplete", "tester/incomplete")
    assert len(server.requests) == before


@pytest.mark.slow
def test_push_takes_a_training_run_and_leaves_its_optimizer_state_here(
    server, push_env, calibrated_weights_dir, tmp_path, monkeypatch
):
    from mlx_inception.training import checkpoint as checkpoints

    weights, config = store.load_weights(calibrated_weights_dir)
    run = tmp_path / "run"
    optimizer = {"optimizer/fc.weight": mx.zeros((4, 4))}
    checkpoints.save_checkpoint(run, "step-00000010", weights, config, optimizer,
                                {"step": 10}, links=("last", "best"))
    result = hub.push(run, "tester/from-a-run")  # the run directory: its best
    commit = server.repos["tester/from-a-run"].resolve(result.commit)
    assert set(commit.files) - {".gitattributes"} == {"README.md", "config.json",
                                                      "model.safetensors"}
    assert "step-00000010" in commit.message
    fetched, _ = store.load_weights(hub.resolve("tester/from-a-run"))
    np.testing.assert_array_equal(np.array(fetched["fc.weight"]), np.array(weights["fc.weight"]))

    # Where the file system has no symbolic links, last is a pointer file: followed too.
    monkeypatch.setattr(checkpoints.os, "symlink", _no_symlinks)
    later = {**weights, "fc.bias": weights["fc.bias"] + 1}
    checkpoints.save_checkpoint(run, "step-00000020", later, config, optimizer, {"step": 20})
    assert (run / "last").is_file() and not (run / "last").is_symlink()
    hub.push(run / "last", "tester/from-a-run", revision="last")
    commit = server.repos["tester/from-a-run"].resolve("last")
    assert set(commit.files) - {".gitattributes"} == {"README.md", "config.json",
                                                      "model.safetensors"}
    assert "step-00000020" in commit.message
    fetched, _ = store.load_weights(hub.resolve("tester/from-a-run", revision="last"))
    np.testing.assert_array_equal(np.array(fetched["fc.bias"]), np.array(later["fc.bias"]))


def _no_symlinks(*args, **kwargs):
    raise OSError(1, "Operation not permitted")


def test_push_refuses_a_checkpoint_file_and_a_missing_path_before_any_request(
    server, push_env, reference_checkpoints, tmp_path
):
    before = len(server.requests)
    with pytest.raises(CheckpointError, match=r"checkpoint file, not a weights directory: "
                                              r"`mlx-inception convert` it first"):
        hub.push(reference_checkpoints["pth"], "tester/pickle")
    with pytest.raises(CheckpointError, match=r"missing does not exist"):
        hub.push(tmp_path / "missing", "tester/missing")
    assert len(server.requests) == before


def test_push_with_the_hub_unreachable_does_not_suggest_offline_mode(
    push_env, calibrated_weights_dir, monkeypatch
):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(HubError) as excinfo:
        hub.push(calibrated_weights_dir, "tester/unreachable")
    message = single_line_hub_error(excinfo)
    # Cached weights stand in for a download, never for an upload.
    assert message.startswith("cannot reach http://127.0.0.1:") and "HF_HUB_OFFLINE" not in message
    assert message.endswith("check the network or HF_ENDPOINT")


def test_push_to_a_hub_that_never_answers_stops_at_its_deadline_in_one_line(
    push_env, calibrated_weights_dir, monkeypatch, capsys
):
    monkeypatch.setenv("MLX_INCEPTION_PUSH_TIMEOUT", "1")
    with silent_endpoint() as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        started = time.monotonic()
        status = cli.main(["push", str(calibrated_weights_dir), "tester/silent"])
        waited = time.monotonic() - started
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and err[-1].startswith(f"error: cannot reach {endpoint}"), err
    assert waited < 15  # a 1 s deadline per request; without one push would wait for ever


def test_a_push_timeout_that_is_not_a_number_is_one_line(
    push_env, calibrated_weights_dir, monkeypatch, capsys
):
    monkeypatch.setenv("MLX_INCEPTION_PUSH_TIMEOUT", "soon")
    assert cli.main(["push", str(calibrated_weights_dir), "tester/x"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: MLX_INCEPTION_PUSH_TIMEOUT must be a positive number of seconds, not 'soon'")


def test_push_while_offline_says_to_unset_offline_mode_before_any_request(
    server, push_env, calibrated_weights_dir, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(server.requests)
    with pytest.raises(HubError) as excinfo:
        hub.push(calibrated_weights_dir, "tester/offline")
    assert single_line_hub_error(excinfo) == (
        "cannot upload to tester/offline@main: the Hub is offline (HF_HUB_OFFLINE=1); unset "
        "HF_HUB_OFFLINE to push")
    assert len(server.requests) == before


def test_push_uploads_only_the_weights_config_and_card_and_follows_no_link_out(
    server, push_env, calibrated_weights_dir, tmp_path, caplog
):
    folder = tmp_path / "weights"
    folder.mkdir()
    for name in (store.CONFIG_FILE, store.WEIGHTS_FILE):
        os.link(calibrated_weights_dir / name, folder / name)
    (folder / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (folder / "secrets.txt").write_text("hf_secret_token\n")
    outside = tmp_path / "private.md"
    outside.write_text("not for the Hub\n")
    (folder / "notes.txt").symlink_to("/etc/shadow")
    (folder / "README.md").symlink_to(outside)  # a card that links out: never uploaded
    with caplog.at_level(logging.INFO, logger="mlx_inception.checkpoints.hub"):
        result = hub.push(folder, "tester/hostile")
    files = server.repos["tester/hostile"].resolve(result.commit).files
    assert set(files) == {".gitattributes", "README.md", "config.json", "model.safetensors"}
    assert files["README.md"].decode().startswith("---\nlibrary_name: mlx\n")  # generated
    assert files["config.json"] == (calibrated_weights_dir / "config.json").read_bytes()
    assert (f"uploading {folder} to tester/hostile: config.json, model.safetensors, README.md "
            "(generated model card) ...") in caplog.messages


def test_push_refuses_weights_that_link_out_of_the_folder_before_any_request(
    server, push_env, calibrated_weights_dir, tmp_path
):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / store.CONFIG_FILE).write_bytes((calibrated_weights_dir / "config.json").read_bytes())
    (folder / store.WEIGHTS_FILE).symlink_to(calibrated_weights_dir / store.WEIGHTS_FILE)
    before = len(server.requests)
    with pytest.raises(CheckpointError, match="model.safetensors links out of"):
        hub.push(folder, "tester/linked")
    assert len(server.requests) == before


def test_push_calls_a_file_that_is_not_a_checkpoint_a_file(server, push_env, tmp_path):
    photo = tmp_path / "cat.jpg"
    photo.write_bytes(b"\xff\xd8\xff")
    with pytest.raises(CheckpointError) as excinfo:
        hub.push(photo, "tester/photo")
    assert str(excinfo.value) == (f"{photo} is a file, not a weights directory (config.json + "
                                  "model.safetensors): pass the folder to upload")


# ----------------------------------------------------------------------------------------------
# The command line


def run_cli(arguments: list[str], env: dict) -> subprocess.CompletedProcess:
    """Run ``mlx-inception`` in a fresh process, so huggingface_hub reads HF_* at import."""
    command = [sys.executable, "-m", "mlx_inception", *arguments]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_download_then_predict_works_and_works_again_offline(server, tmp_path):
    from PIL import Image
    from skimage import data

    photo = tmp_path / "chelsea.jpg"
    Image.fromarray(data.chelsea()).save(photo)
    env = {
        **os.environ,
        "HF_ENDPOINT": server.endpoint,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE"):
        env.pop(name, None)
    offline_env = {**env, "HF_HUB_OFFLINE": "1"}

    download = run_cli(["download", TV_NAME], env)
    assert download.returncode == 0, download.stderr
    path = Path(download.stdout.strip().splitlines()[-1])  # the weight file is the last line
    assert path.is_file() and path.is_relative_to(tmp_path / "hf" / "hub")
    assert "verified (the LFS SHA-256 the Hub announces" in download.stderr

    online = run_cli(["predict", str(photo), "--json", "--quiet"], env)  # default weights
    assert online.returncode == 0, online.stderr
    by_path = run_cli(["predict", str(photo), "--json", "--quiet", "--weights", str(path)], env)
    assert by_path.returncode == 0, by_path.stderr
    assert json.loads(by_path.stdout)["top_k"] == json.loads(online.stdout)["top_k"]
    before = len(server.requests)
    offline = run_cli(["predict", str(photo), "--json", "--quiet"], offline_env)
    assert offline.returncode == 0, offline.stderr
    assert len(server.requests) == before
    assert json.loads(offline.stdout)["top_k"] == json.loads(online.stdout)["top_k"]

    again = run_cli(["download", TV_NAME], offline_env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == str(path)


def test_cli_download_json_names_the_path(downloaded_env, capsys):
    assert cli.main(["download", TV_NAME, "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["path"] == str(downloaded_env)
    assert summary["origin"]["registry_name"] == TV_NAME


def test_cli_download_error_exits_1_with_one_line(server, hf_cache, capsys):
    assert cli.main(["download", "nobody/nothing"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: no repo nobody/nothing")


def test_cli_push_prints_the_commit_url(server, push_env, calibrated_weights_dir, capsys):
    assert cli.main(["push", str(calibrated_weights_dir), "tester/cli-push", "--json"]) == 0
    captured = capsys.readouterr()
    first, *rest = captured.err.splitlines()
    assert first == (f"uploading {calibrated_weights_dir} to tester/cli-push: config.json, "
                     "model.safetensors, README.md (generated model card) ...")
    # Then at most huggingface_hub's own progress bars (enabled or not in this process).
    assert not any(line.startswith(("uploading", "error")) for line in rest), rest
    summary = json.loads(captured.out)
    assert summary["commit"] == server.repos["tester/cli-push"].refs["main"]
    assert summary["commit_url"].startswith(server.endpoint)


def test_cli_push_of_a_bad_directory_is_one_line_with_no_upload_announced(
    server, push_env, tmp_path, capsys
):
    before = len(server.requests)
    assert cli.main(["push", str(tmp_path / "missing"), "tester/missing"]) == 1
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'missing'} does not exist: pass a weights directory\n")
    assert len(server.requests) == before


def test_cli_download_of_a_local_path_says_download_takes_a_name(
    server, hf_cache, reference_checkpoints, tmp_path, capsys
):
    before = len(server.requests)
    checkpoint = reference_checkpoints["safetensors"]
    expected = {
        tmp_path: f"error: {tmp_path} is a local folder; download takes a registry name (see "
                  "`mlx-inception list`) or a Hub repo id (owner/name): pass it to --weights as "
                  "it is\n",
        checkpoint: f"error: {checkpoint} is a local checkpoint file; download takes a registry "
                    "name (see `mlx-inception list`) or a Hub repo id (owner/name): pass it to "
                    f"--weights, or `mlx-inception convert {checkpoint} OUT_DIR` it once\n",
    }
    for source, message in expected.items():
        assert cli.main(["download", str(source), "--quiet"]) == 1
        assert capsys.readouterr().err == message
    assert len(server.requests) == before


def test_a_repo_in_this_format_with_a_damaged_config_is_refused_before_its_weights_download(
    server, upstream, hf_cache
):
    from mlx_inception.model import InceptionV3Config

    config = InceptionV3Config().to_dict()
    config["num_classes"] = -3
    server.add_repo("tester/damaged-config", {"config.json": json.dumps(config).encode(),
                                              "model.safetensors": upstream["safetensors"]})
    with pytest.raises(HubError) as excinfo:
        hub.resolve("tester/damaged-config")
    message = single_line_hub_error(excinfo)
    assert "damaged mlx-inception config.json" in message and "num_classes" in message
    assert not [path for path in blob_files(hf_cache) if path.stat().st_size > 10_000]
