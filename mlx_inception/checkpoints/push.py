"""Upload a weights directory to a Hub model repo, with a model card; nothing else goes up."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import OfflineModeIsEnabled

from ..errors import CheckpointError, HubError
from . import convert, store
from .hub_client import hub_error, hub_settings, is_repo_id, logger
from .local import resolve_local
from .model_card import render_model_card

MODEL_CARD = "README.md"


@dataclass(frozen=True)
class PushResult:
    """Where pushed weights landed on the Hub."""

    repo_id: str
    repo_url: str
    revision: str
    commit: str
    commit_url: str


def push(
    directory: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    license: str | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
) -> PushResult:
    """Upload a weights directory to a Hub model repo with a model card; return where it went.

    Only ``model.safetensors``, ``config.json`` and a ``README.md`` model card go up (the
    directory's own card, else one generated from the config: architecture, source weights,
    preprocessing, labels, accuracy, licence); nothing else in the folder, and never a file
    reached by a symbolic link out of it. ``directory`` may be a training run (its best, else
    its last) or its ``best``/``last``. The repo is created if needed (``private`` applies only
    then) and so is the branch ``revision``. The files are listed (log) before the upload.
    """
    if not is_repo_id(repo_id):
        raise HubError(f"{repo_id!r} is not a Hub repo id: use owner/name")
    folder = _weights_folder(directory)
    uploads = _files_to_upload(folder)
    weights, config = store.load_weights(folder)  # raises CheckpointError if incomplete
    convert.check_weights(weights, config)
    settings = hub_settings(token=token, endpoint=endpoint)
    branch = revision or "main"
    if settings.offline:
        raise hub_error(OfflineModeIsEnabled(), repo_id=repo_id, endpoint=settings.endpoint,
                        revision=branch, writing=True)
    names = sorted(uploads)
    if MODEL_CARD not in uploads:
        uploads[MODEL_CARD] = render_model_card(config, weights, repo_id, license=license).encode()
        names.append(f"{MODEL_CARD} (generated model card)")
    logger.info("uploading %s to %s: %s ...", folder, repo_id, ", ".join(names))
    api = HfApi(endpoint=settings.endpoint, token=settings.token)
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
        if branch != "main":
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        info = api.create_commit(
            repo_id,
            [CommitOperationAdd(name, content) for name, content in sorted(uploads.items())],
            commit_message=commit_message
            or f"Upload Inception-v3 weights from {folder.resolve().name}",
            revision=branch,
        )
    except Exception as error:
        raise hub_error(error, repo_id=repo_id, endpoint=settings.endpoint, revision=branch,
                        writing=True) from None
    return PushResult(repo_id=repo_id, repo_url=str(repo_url), revision=branch,
                      commit=str(info.oid), commit_url=str(info.commit_url))


def _weights_folder(directory: str | os.PathLike) -> Path:
    """Return the weights directory ``directory`` names (a run gives its best, else last)."""
    folder = resolve_local(directory)
    if folder is None:
        raise CheckpointError(f"{directory} does not exist: pass a weights directory")
    if folder.is_dir():
        return folder
    if folder.suffix.lower() in convert.PICKLE_SUFFIXES + convert.SAFETENSORS_SUFFIXES:
        raise CheckpointError(
            f"{folder} is a checkpoint file, not a weights directory: "
            "`mlx-inception convert` it first"
        )
    raise CheckpointError(
        f"{folder} is a file, not a weights directory ({store.CONFIG_FILE} + "
        f"{store.WEIGHTS_FILE}): pass the folder to upload"
    )


def _files_to_upload(folder: Path) -> dict[str, Path | bytes]:
    """Return the files of ``folder`` that push uploads, by name.

    A symbolic link that leads out of the folder is never followed: for the model card a card
    is generated instead; for the weights or config the push stops.
    """
    inside = folder.resolve()
    files: dict[str, Path | bytes] = {}
    for name in (store.CONFIG_FILE, store.WEIGHTS_FILE, MODEL_CARD):
        path = folder / name
        if not (path.is_file() or path.is_symlink()):
            continue
        if path.resolve().is_relative_to(inside):
            files[name] = path
        elif name == MODEL_CARD:
            logger.warning("%s links out of %s: not uploaded; a model card is generated", path,
                           folder)
        else:
            raise CheckpointError(
                f"{path} links out of {folder} (to {path.resolve()}): push uploads only files "
                "inside the folder; put the file itself there"
            )
    return files


__all__ = ["MODEL_CARD", "PushResult", "push"]
