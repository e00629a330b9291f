"""What is on this machine: weights directories, checkpoint files, runs, huggingface_hub's cache.

A training run marks its checkpoints with ``RUN_DIR/best`` and ``RUN_DIR/last``: a relative
symbolic link or, where the file system has none, a pointer file holding that relative path.
That is the whole interface between a run's folder and the code that loads or pushes it.

huggingface_hub's cache keeps a repo in ``models--{owner}--{name}/``: ``blobs/`` (the files,
named by their ETag), ``snapshots/{commit}/`` (links to them) and ``refs/{revision}`` (the
commit a branch or tag was last seen at). Read here without the network: what a revision gives
offline, and which repo and commit a weight file there comes from, so that it converts with
the same config as the registry name or repo id would.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, HubError
from ..jsonfile import read_json as read_json_file
from ..model import InceptionV3Config
from . import convert, registry, store

# The checkpoints a training run marks, in the order ``load(RUN_DIR)`` prefers them: ``best``
# exists only when the run has a validation set.
RUN_LINKS = ("best", "last")
# A pointer file holds one relative path; anything larger is not one.
POINTER_MAX_BYTES = 4096
SAFETENSORS_FILE = "model.safetensors"
PICKLE_FILE = "pytorch_model.bin"
COMMIT_PATTERN = re.compile(r"[0-9a-f]{40}")


def resolve_local(source: str | os.PathLike) -> Path | None:
    """Return what ``source`` names on this machine, or None when no file or folder is there.

    A run's ``best``/``last`` (link or pointer file) is followed, a run directory gives its
    ``best``, else its ``last``, and a weights directory's own ``model.safetensors`` gives
    that directory.
    """
    path = Path(os.path.expanduser(str(source)))
    if path.is_symlink() and not path.exists():
        target = path.parent / os.readlink(path)
        raise CheckpointError(
            f"{path} links to {target}, which does not exist (deleted or moved): "
            "pass another checkpoint"
        )
    if not path.exists():
        return None
    if path.is_dir() and not store.is_weights_dir(path):
        link = next((path / name for name in RUN_LINKS
                     if (path / name).exists() or (path / name).is_symlink()), None)
        return path if link is None else resolve_local(link)
    if store.is_weights_file(path):
        # This project's own model.safetensors: its config.json is beside it, and its
        # weights are already in MLX's layout (converting them again would mis-shape them).
        if path.name == store.WEIGHTS_FILE and (path.parent / store.CONFIG_FILE).is_file():
            return path.parent
        raise CheckpointError(
            f"{path} holds weights in mlx-inception's format, which load from their folder: "
            f"keep it as {store.WEIGHTS_FILE} beside its {store.CONFIG_FILE} and pass the folder"
        )
    return follow_pointer(path) or path


def follow_pointer(path: Path) -> Path | None:
    """Return the folder a pointer file names, or None when ``path`` is not a pointer file.

    A pointer file is what the trainer writes for ``last``/``best`` without symbolic links: a
    small text file with no suffix (checkpoint files have one), holding one path relative to
    its own folder.
    """
    if not path.is_file() or path.suffix:
        return None
    try:
        if path.stat().st_size >= POINTER_MAX_BYTES:
            return None
        target = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not target or "\n" in target:
        return None
    folder = path.parent / target
    if not folder.is_dir():
        raise CheckpointError(
            f"{path} points to {folder}, which does not exist (deleted or moved): "
            "pass another checkpoint"
        )
    return folder


# --------------------------------------------------------------------------------------------
# A Hub repo's files


def read_json(path: Path) -> Any:
    """Return the parsed JSON file at ``path``, or None when it cannot be read or parsed."""
    try:
        return read_json_file(path, CheckpointError)
    except (OSError, CheckpointError):
        return None


def claims_project_format(data: Any) -> bool:
    """Return True if ``data`` (a parsed config.json) has this project's fields, valid or not."""
    # store.save_weights writes every field; timm's config has neither of these two.
    return isinstance(data, dict) and {"aux_logits", "preprocessing"} <= set(data)


def is_project_config(data: Any) -> bool:
    """Return True if ``data`` (a parsed config.json) is a valid config of this project's."""
    if not claims_project_format(data):
        return False
    try:
        InceptionV3Config.from_dict(data)
    except (ValueError, TypeError):  # any malformed field (a number for a dict, ...)
        return False
    return True


def choose_weights_file(files: dict[str, Any], allow_pickle: bool, repo_id: str) -> str:
    """Return the repo's weight file: model.safetensors first; a pickle only if allowed."""
    top_level = [name for name in files if "/" not in name]
    safetensors = [name for name in top_level if name.endswith(".safetensors")]
    if SAFETENSORS_FILE in files:
        return SAFETENSORS_FILE
    if len(safetensors) == 1:
        return safetensors[0]
    pickles = [name for name in top_level if name.endswith(convert.PICKLE_SUFFIXES)]
    if PICKLE_FILE in pickles:
        pickles = [PICKLE_FILE]
    if len(pickles) == 1:
        if not allow_pickle:
            raise HubError(
                f"{repo_id} has only a pickle ({pickles[0]}), which can run code when loaded: "
                "pass --allow-pickle (allow_pickle=True) if you trust it (read with "
                "torch.load(weights_only=True))"
            )
        return pickles[0]
    raise HubError(
        f"{repo_id} has no single weight file (found {', '.join(sorted(top_level)) or 'none'}): "
        f"expected {SAFETENSORS_FILE} or {PICKLE_FILE}"
    )


# --------------------------------------------------------------------------------------------
# huggingface_hub's cache, read without the network


def repo_folder(cache_dir: Path, repo_id: str) -> Path:
    """Return the folder huggingface_hub keeps a model repo in."""
    return cache_dir / ("models--" + repo_id.replace("/", "--"))


def ref_path(storage: Path, revision: str) -> Path | None:
    """Return where huggingface_hub keeps the ref of ``revision``; None for a bad name."""
    parts = revision.split("/")
    if not revision or "\\" in revision or not revision.isprintable() or any(
        part in ("", ".", "..") for part in parts
    ):
        return None
    return storage.joinpath("refs", *parts)


def read_ref(ref: Path | None) -> str:
    """Return the commit a ref file holds, or "" when there is none."""
    try:
        return ref.read_text(encoding="utf-8").strip() if ref is not None else ""
    except OSError:
        return ""


def blob_of(pointer: Path) -> Path | None:
    """Return the blobs/ file a snapshot link points to (one level), or None."""
    if not pointer.is_symlink():
        return None  # no symlinks on this system: huggingface_hub copied the file
    return Path(os.path.normpath(pointer.parent / os.readlink(pointer)))


def cached_in_hub(
    cache_dir: Path,
    repo_id: str,
    revision: str,
    filename: str | None = None,
    pinned_sha256: str | None = None,
    allow_pickle: bool = False,
) -> Path | None:
    """Return what the Hub cache holds for a repo at a revision, or None: the snapshot folder
    of a repo in this project's format, else ``filename`` (or the weight file chosen as online).

    A file whose blob is not named ``pinned_sha256`` (when given) is not the one wanted.
    """
    storage = repo_folder(cache_dir, repo_id)
    commit = revision
    if not COMMIT_PATTERN.fullmatch(commit):
        commit = read_ref(ref_path(storage, revision))
    snapshot = storage / "snapshots" / commit
    if not COMMIT_PATTERN.fullmatch(commit) or not snapshot.is_dir():
        return None
    if filename is None and is_project_config(read_json(snapshot / store.CONFIG_FILE)):
        return snapshot if (snapshot / store.WEIGHTS_FILE).is_file() else None
    try:
        present = {path.name: None for path in snapshot.iterdir() if path.is_file()}
        path = snapshot / (filename or choose_weights_file(present, allow_pickle, repo_id))
    except (OSError, HubError):
        return None
    blob = blob_of(path)
    if not path.is_file() or (pinned_sha256 and blob is not None and blob.name != pinned_sha256):
        return None
    return path


def hub_file_config(path: str | os.PathLike) -> InceptionV3Config | None:
    """Return the config a weight file in huggingface_hub's cache converts with, or None
    for a file elsewhere: its repo's registry entry, else the timm ``config.json`` beside it.

    ``config.source`` names the repo and commit (and the registry entry, licence and reported
    accuracy when the repo is registered).
    """
    path = Path(os.path.expanduser(str(path))).absolute()  # not resolve(): keep the link
    snapshot = path.parent
    storage = snapshot.parent.parent
    if snapshot.parent.name != "snapshots" or not storage.name.startswith("models--"):
        return None
    repo_id = storage.name.removeprefix("models--").replace("--", "/", 1)
    entry = registry.for_repo(repo_id)
    config = registry.base_config(entry, read_json(snapshot / "config.json"))
    config.source = {
        **(entry.source_info() if entry else {"repo_id": repo_id}),
        "commit": snapshot.name,
        "file": path.name,
    }
    return config


def weights_config(path: str | os.PathLike) -> InceptionV3Config:
    """Return the config ``mlx_inception.load`` builds a local directory or file with.

    A checkpoint file is read and converted (every tensor checked), so a file that would not
    load is reported here.
    """
    path = Path(path)
    if path.is_dir():
        return store.read_config(path)
    return convert.convert_file(path, hub_file_config(path)).config


__all__ = [
    "POINTER_MAX_BYTES",
    "RUN_LINKS",
    "blob_of",
    "cached_in_hub",
    "choose_weights_file",
    "follow_pointer",
    "hub_file_config",
    "claims_project_format",
    "is_project_config",
    "read_json",
    "read_ref",
    "ref_path",
    "repo_folder",
    "resolve_local",
    "weights_config",
]
