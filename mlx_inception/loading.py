"""One way in: ``load(source)`` gives a ready Inception-v3 from any kind of weights."""

from __future__ import annotations

import os
from pathlib import Path

import mlx.core as mx

from . import kernels
from .checkpoints import convert, store
from .errors import CheckpointError
from .fast import fold_batchnorm
from .model import InceptionV3, InceptionV3Config

# The checkpoints a training run marks (mlx_inception.training.checkpoint), in the order
# ``load(RUN_DIR)`` prefers them: ``best`` exists only when the run has a validation set.
RUN_LINKS = ("best", "last")
# A pointer file holds one relative path; anything larger is not one.
_POINTER_MAX_BYTES = 4096


def resolve(source: str | os.PathLike, **hub_options) -> Path:
    """Return the local path (weights directory or checkpoint file) that ``source`` names.

    ``source`` is a weights directory, a ``.pth``/``.pt``/``.bin``/``.safetensors`` file, a
    training run's ``RUN_DIR/best`` or ``RUN_DIR/last`` (a symbolic link or, where the file
    system has none, a one-line pointer file), a run directory itself (its ``best``, else its
    ``last``), a registry name or a Hugging Face Hub repo id (downloaded and converted once,
    then cached).
    """
    local = resolve_local(source)
    if local is not None:
        return local
    from .checkpoints import hub  # imports huggingface_hub: only when it is needed

    cached = _refuse_missing_local_path(source, hub_options)
    if cached is not None:
        return cached
    return hub.resolve(str(source), **hub_options)


def _refuse_missing_local_path(source: str | os.PathLike, hub_options: dict) -> Path | None:
    """Raise CheckpointError when ``source`` names a missing path inside an existing folder.

    ``runs/pets`` or ``RUN_DIR/best`` has the shape of a Hub repo id (owner/name), but when
    ``runs`` or ``RUN_DIR`` is a folder here, a typo or a checkpoint not written yet is far
    likelier than a repo whose owner happens to be named like a local folder: asking the Hub
    would answer with a network error or "no such repo" instead. Such a repo is still used
    when it is already in the Hub cache (``mlx-inception download`` puts it there); its
    directory is returned then. Returns None for anything else (registry names, repo ids
    whose owner is not a folder here), which goes to the Hub.
    """
    from .checkpoints import hub

    path = Path(os.path.expanduser(str(source)))
    parent = path.parent
    if str(parent) in ("", ".") or not parent.is_dir():
        return None
    if path.name == "best":
        last = parent / "last"
        advice = (f"use {last}" if last.exists() or last.is_symlink()
                  else "no checkpoint has been saved yet")
        raise CheckpointError(
            f"{path} does not exist: the run {parent} has no best checkpoint yet (best is "
            f"marked when the run evaluates a validation set); {advice}"
        )
    if path.name == "last":
        raise CheckpointError(
            f"{path} does not exist: the run {parent} has saved no checkpoint yet"
        )
    if hub.is_repo_id(str(source)):
        options = {k: hub_options[k] for k in ("revision", "cache_dir") if k in hub_options}
        cached = hub.cached_path(str(source), **options)
        if cached is not None:
            return cached
        hint = f", or run `mlx-inception download {source}` first to use the Hub repo of that name"
    else:
        hint = ""
    raise CheckpointError(
        f"{path} does not exist (and {parent} is a local folder, so it was not looked up on "
        f"the Hub): check the path{hint}"
    )


def resolve_local(source: str | os.PathLike) -> Path | None:
    """Return what ``source`` names on this machine (a run's ``best``/``last`` and a run
    directory followed as ``resolve`` does, a weights directory's own ``model.safetensors``
    as that directory), or None when no file or folder is there."""
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
    return _follow_pointer(path) or path


def _follow_pointer(path: Path) -> Path | None:
    """Return the folder a pointer file names, or None when ``path`` is not a pointer file.

    A pointer file is what the trainer writes for ``last``/``best`` without symbolic links: a
    small text file with no suffix (checkpoint files have one), holding one path relative to
    its own folder.
    """
    if not path.is_file() or path.suffix:
        return None
    try:
        if path.stat().st_size >= _POINTER_MAX_BYTES:
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


def build(
    weights: dict[str, mx.array], config: InceptionV3Config, dtype: str | mx.Dtype | None = None
) -> InceptionV3:
    """Return an eval-mode model holding ``weights`` (checked strictly), in ``dtype``.

    Half precision folds every BatchNorm into the layer before it first (the convolutions; the
    BN-auxiliary head's fc), in float32, so no BatchNorm statistic is ever rounded to 16 bits.
    """
    convert.check_weights(weights, config)
    target = store.parse_dtype(dtype) or mx.float32
    model = kernels.install(InceptionV3(config, init_weights=False))
    model.load_weights([(k, v.astype(mx.float32)) for k, v in weights.items()], strict=True)
    model.eval()
    if target != mx.float32:
        fold_batchnorm(model)
        model.set_dtype(target)
    mx.eval(model.parameters())
    return model


def load(
    source: str | os.PathLike,
    dtype: str | mx.Dtype | None = None,
    config: InceptionV3Config | None = None,
    **hub_options,
) -> InceptionV3:
    """Return a ready Inception-v3 in eval mode, its config at ``model.config``.

    ``source``: a converted weights directory, a PyTorch checkpoint (``.pth``/``.pt``/``.bin``
    or ``.safetensors``, torchvision or timm; converted in memory), a training run's
    ``RUN_DIR/best`` or ``RUN_DIR/last`` (link or pointer file), a run directory (its ``best``
    checkpoint, the highest validation top-1, or its ``last`` when the run has no validation
    set; either holds the evaluated weights: the moving average when it was on), a registry
    name such as ``inception_v3.tv_in1k`` or a Hub repo id. ``dtype``: "float32" (default),
    "float16" or "bfloat16". ``config`` overrides the config guessed for a raw checkpoint.
    """
    path = resolve(source, **hub_options)
    if path.is_dir():
        if not store.is_weights_dir(path):
            raise CheckpointError(
                f"{path} is not a weights directory (needs {store.CONFIG_FILE} and "
                f"{store.WEIGHTS_FILE}); convert a checkpoint with `mlx-inception convert`"
            )
        weights, saved = store.load_weights(path)
        return build(weights, config or saved, dtype)
    conversion = convert.convert_file(path, config)
    return build(conversion.weights, conversion.config, dtype)
