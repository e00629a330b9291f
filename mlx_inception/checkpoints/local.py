"""What a path on this machine names: a weights directory, a checkpoint file, a training run.

A training run marks its checkpoints with ``RUN_DIR/best`` and ``RUN_DIR/last``: a relative
symbolic link or, where the file system has none, a pointer file holding that relative path.
That is the whole interface between a run's folder and the code that loads or pushes it.
A weight file inside huggingface_hub's cache (``models--{owner}--{name}/snapshots/{commit}/``)
knows its repo, so it converts with the same config as the registry name or repo id would.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import CheckpointError
from ..model import InceptionV3Config
from . import convert, registry, store

# The checkpoints a training run marks, in the order ``load(RUN_DIR)`` prefers them: ``best``
# exists only when the run has a validation set.
RUN_LINKS = ("best", "last")
# A pointer file holds one relative path; anything larger is not one.
POINTER_MAX_BYTES = 4096


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
    try:
        timm_config = json.loads((snapshot / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        timm_config = None
    config = registry.base_config(entry, timm_config)
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
    "follow_pointer",
    "hub_file_config",
    "resolve_local",
    "weights_config",
]
