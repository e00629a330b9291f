"""``mlx-inception download NAME|REPO_ID``: fetch and verify weights, check they load; say where."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import HelpFormatter, hub_messages_on_stderr


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..checkpoints import registry

    parser = subparsers.add_parser(
        "download",
        help="download pretrained weights from the Hugging Face Hub into its cache",
        description=(
            "Download Inception-v3 weights from the Hugging Face Hub by registry name (see "
            "`mlx-inception list`) or repo id (owner/name) into the Hugging Face cache (the only "
            "cache: `hf cache ls` lists it), check each downloaded file's SHA-256 against the "
            "hash the Hub announces, and check that the weights convert. timm/torchvision "
            "weights are converted in memory at each load; a repo already in mlx-inception "
            "format is used as is. Progress goes to stderr; the last line printed is the local "
            "path to pass to --weights or mlx_inception.load. HF_HOME, HF_HUB_CACHE, HF_TOKEN, "
            "HF_HUB_OFFLINE, HF_ENDPOINT and HF_HUB_ETAG_TIMEOUT (seconds a request may wait "
            "for an answer) are honoured."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "source", nargs="?", default=registry.default_name(),
        help="registry name or Hub repo id (owner/name)",
    )
    parser.add_argument(
        "--revision", default=None,
        help="branch, tag or commit to download; if not given: the registry's, else main",
    )
    parser.add_argument(
        "--allow-pickle", action="store_true",
        help="accept a repo whose only weights are a pickle (pytorch_model.bin); it is read "
        "with torch.load(weights_only=True) and needs PyTorch",
    )
    parser.add_argument(
        "--cache-dir", default=None,
        help="cache directory; if not given: HF_HUB_CACHE, else HF_HOME/hub, "
        "else ~/.cache/huggingface/hub",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    parser.set_defaults(func=run)


def refuse_local_path(source: str) -> None:
    """Raise CheckpointError when ``source`` is a file or folder here, not a name to download."""
    from ..checkpoints import convert, registry
    from ..errors import CheckpointError

    path = os.path.expanduser(source)
    if registry.find(source) is not None or not (os.path.exists(path) or os.path.islink(path)):
        return
    if os.path.isdir(path):
        what, advice = "a local folder", "pass it to --weights as it is"
    elif path.lower().endswith(convert.PICKLE_SUFFIXES + convert.SAFETENSORS_SUFFIXES):
        what = "a local checkpoint file"
        advice = f"pass it to --weights, or `mlx-inception convert {source} OUT_DIR` it once"
    else:
        what, advice = "a local file", "pass a name from `mlx-inception list` instead"
    raise CheckpointError(
        f"{source} is {what}; download takes a registry name (see `mlx-inception list`) or a "
        f"Hub repo id (owner/name): {advice}"
    )


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import hub
    from ..checkpoints.local import weights_config

    refuse_local_path(args.source)

    if args.quiet:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    with hub_messages_on_stderr(enabled=not args.quiet):
        path = hub.resolve(
            args.source,
            revision=args.revision,
            allow_pickle=args.allow_pickle,
            cache_dir=args.cache_dir,
        )
        config = weights_config(path)  # what load(path) builds: a file that would not load fails
    if args.json:
        print(
            json.dumps(
                {
                    "source": args.source,
                    "path": str(path),
                    "num_classes": config.num_classes,
                    "aux_logits": config.aux_logits,
                    "origin": config.source,
                }
            )
        )
    else:
        origin = config.source or {}
        commit = str(origin.get("commit", ""))[:8]
        print(
            f"{args.source}: {config.num_classes} classes, aux_logits={config.aux_logits}"
            + (f", commit {commit}" if commit else ""),
            file=sys.stderr,
        )
        print(path)
    return 0
