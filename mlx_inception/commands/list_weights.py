"""``mlx-inception list``: the known pretrained weights, marking those already cached."""

from __future__ import annotations

import argparse
import json

from . import HelpFormatter


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "list",
        help="list the known pretrained weights and which are cached",
        description=(
            "List the registry of known pretrained Inception-v3 weights: name, Hub repo, the "
            "top-1/top-5 their authors report, licence, and whether the weights are already in "
            "the Hugging Face cache (HF_HOME / HF_HUB_CACHE). Never touches the network."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import hub, registry

    table = registry.load_registry()
    rows = []
    for name in table.names():
        entry = table.entries[name]
        cached = hub.cached_path(name)
        rows.append(
            {
                **entry.to_dict(),
                "default": name == table.default,
                "cached": cached is not None,
                "path": str(cached) if cached else None,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    headers = ("", "name", "repo", "top-1", "top-5", "licence", "cached")
    lines = []
    for row in rows:
        accuracy = row["accuracy"] or {}
        lines.append(
            (
                "*" if row["default"] else "",
                row["name"],
                row["repo_id"],
                f"{accuracy['top1']:.3f}" if "top1" in accuracy else "-",
                f"{accuracy['top5']:.3f}" if "top5" in accuracy else "-",
                row["license"] or "-",
                "yes" if row["cached"] else "no",
            )
        )
    columns = zip(headers, *lines, strict=True)
    widths = [max(len(str(cell)) for cell in column) for column in columns]
    for line in (headers, *lines):
        cells = zip(line, widths, strict=True)
        print("  ".join(str(cell).ljust(width) for cell, width in cells).rstrip())
    print(
        "\n* default. Accuracy: ImageNet-1k validation as reported by the weights' authors/porters "
        "(see `--json`). `mlx-inception download NAME` fetches one."
    )
    return 0
