"""``mlx-inception push DIR REPO_ID``: upload a weights directory with a generated model card."""

from __future__ import annotations

import argparse
import json

from . import HelpFormatter, hub_messages_on_stderr


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "push",
        help="upload a converted or fine-tuned weights directory to the Hugging Face Hub",
        description=(
            "Upload DIR (config.json + model.safetensors, as written by `convert` or training) "
            "to the Hub model repo REPO_ID through huggingface_hub's HfApi, creating the repo "
            "(and the branch) if needed. Only model.safetensors, config.json and a README.md "
            "model card go up, never other files in DIR nor a symbolic link out of it; the list "
            "is printed before the upload. The card (architecture, source weights, "
            "preprocessing, labels, accuracy, licence, how to load) is generated unless DIR has "
            "one. Needs a token with write access: `hf auth login` or HF_TOKEN."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "directory",
        help="weights directory to upload, or a training run: RUN_DIR (its best, else its "
        "last), RUN_DIR/best or RUN_DIR/last (the optimizer state is not uploaded)",
    )
    parser.add_argument("repo_id", help="Hub repo id, owner/name")
    parser.add_argument(
        "--private", action="store_true", help="create the repo private (if it does not exist)"
    )
    parser.add_argument(
        "--revision", default=None,
        help="branch to commit to, created if missing; if not given: main",
    )
    parser.add_argument("--message", default=None, help="commit message; if not given: generated")
    parser.add_argument(
        "--license", default=None,
        help="licence id for the model card; if not given: the source weights' licence, "
        "else 'other'",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import hub

    # hub.push lists what it uploads once DIR and REPO_ID have been checked, so that a bad
    # argument is one line of error, not a promise followed by one.
    with hub_messages_on_stderr():
        result = hub.push(
            args.directory,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.message,
            license=args.license,
        )
    if args.json:
        print(json.dumps(result.__dict__))
    else:
        print(f"pushed to {result.repo_url} ({result.revision}, commit {result.commit[:8]})")
        print(result.commit_url)
    return 0
