"""One way in: ``load(source)`` gives a ready Inception-v3 from any kind of weights."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import mlx.core as mx

from . import kernels
from .checkpoints import convert, store
from .checkpoints.local import hub_file_config, resolve_local
from .errors import CheckpointError
from .fast import fold_batchnorm
from .model import InceptionV3, InceptionV3Config


def resolve(source: str | os.PathLike, **hub_options) -> Path:
    """Return the local path (weights directory or checkpoint file) that ``source`` names.

    ``source`` is a weights directory, a ``.pth``/``.pt``/``.bin``/``.safetensors`` file, a
    training run's ``RUN_DIR/best`` or ``RUN_DIR/last`` (a symbolic link or, where the file
    system has none, a one-line pointer file), a run directory itself (its ``best``, else its
    ``last``), a registry name or a Hugging Face Hub repo id (downloaded into huggingface_hub's
    cache: its snapshot folder for a repo in this project's format, else its weight file).
    """
    _refuse_impossible_name(source)
    local = resolve_local(source)
    if local is not None:
        return local
    from .checkpoints import hub  # imports huggingface_hub: only when it is needed

    cached = _refuse_missing_local_path(source, hub_options)
    if cached is not None:
        return cached
    return hub.resolve(str(source), **hub_options)


def _refuse_impossible_name(source: str | os.PathLike) -> None:
    """Raise CheckpointError when ``source`` can name no file, weights name or repo id."""
    shown = repr(str(source)[:80]) + ("..." if len(str(source)) > 80 else "")
    try:
        os.lstat(os.path.expanduser(str(source)))
    except ValueError:
        raise CheckpointError(f"{shown} holds a NUL byte: not a file, weights name or Hub "
                              "repo id") from None
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            raise CheckpointError(
                f"{shown} ({len(str(source)):,} characters) is too long for a file name, and "
                "no weights name or Hub repo id is that long"
            ) from None


def _refuse_missing_local_path(source: str | os.PathLike, hub_options: dict) -> Path | None:
    """Raise CheckpointError when ``source`` names a missing path inside an existing folder.

    ``runs/pets`` or ``RUN_DIR/best`` has the shape of a Hub repo id (owner/name), but when
    ``runs`` or ``RUN_DIR`` is a folder here, a typo or a checkpoint not written yet is far
    likelier than a repo whose owner happens to be named like a local folder: asking the Hub
    would answer with a network error or "no such repo" instead. Such a repo is still used
    when it is already in the Hub cache (``mlx-inception download`` puts it there); its
    local path is returned then. Returns None for anything else (registry names, repo ids
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
    name such as ``inception_v3.tv_in1k`` or a Hub repo id (a timm/torchvision repo's file is
    converted in memory at each load, with the registry's or timm's preprocessing).
    ``dtype``: "float32" (default), "float16" or "bfloat16". ``config`` overrides the config
    guessed for a raw checkpoint.
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
    # A timm/torchvision file from the Hub converts in memory, with its repo's config.
    conversion = convert.convert_file(path, config or hub_file_config(path))
    return build(conversion.weights, conversion.config, dtype)
