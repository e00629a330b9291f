"""``mlx-inception push DIR REPO_ID``: upload a weights directory with a generated model card."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator

from ..errors import HubError
from . import HelpFormatter, hub_messages_on_stderr

TIMEOUT_VARIABLE = "MLX_INCEPTION_PUSH_TIMEOUT"
DEFAULT_TIMEOUT_S = 60.0


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
    with hub_messages_on_stderr(), network_deadline(push_timeout()):
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


def push_timeout() -> float:
    """Return the seconds any one network wait of ``push`` may take (MLX_INCEPTION_PUSH_TIMEOUT)."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise HubError(f"{TIMEOUT_VARIABLE} must be a positive number of seconds, not {text!r}")
    return seconds


@contextlib.contextmanager
def network_deadline(seconds: float) -> Iterator[None]:
    """Give every request huggingface_hub makes inside the block a deadline of ``seconds``
    (connecting, each read and each write), then put its usual client back.

    huggingface_hub's shared client waits for ever by default and its upload calls take no
    timeout; the one way to set one is its client factory, which is process-wide. The command
    line owns its process, so it sets one for the push alone; code calling ``hub.push`` from
    Python keeps whatever client it configured.
    """
    try:
        import httpx2
        from huggingface_hub import set_client_factory
        from huggingface_hub.utils import _http  # the factories in use are not exported

        previous = getattr(_http, "_GLOBAL_CLIENT_FACTORY", _http.default_client_factory)
    except (ImportError, AttributeError):  # a huggingface_hub without a client factory
        yield
        return

    def with_deadline() -> httpx2.Client:
        client = previous()
        client.timeout = httpx2.Timeout(seconds)
        return client

    set_client_factory(with_deadline)
    try:
        yield
    finally:
        set_client_factory(previous)
