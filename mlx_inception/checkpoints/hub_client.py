"""How this package talks to the Hub: settings read at call time, repo ids, one-line errors.

Shared by downloads (``hub``) and uploads (``push``). Messages for the user (progress, warnings)
go to one logger, ``mlx_inception.checkpoints.hub``, which the CLI shows on stderr.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..errors import HubError

logger = logging.getLogger("mlx_inception.checkpoints.hub")

REPO_ID_PATTERN = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}")
TRUE_VALUES = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class HubSettings:
    """Where the Hub is, where its files are cached and how long a request may wait."""

    endpoint: str
    cache_dir: Path
    offline: bool
    token: str | bool | None
    timeout: float = constants.DEFAULT_ETAG_TIMEOUT


def hub_settings(
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    offline: bool | None = None,
    endpoint: str | None = None,
) -> HubSettings:
    """Return the Hub settings: explicit arguments first, then HF_* variables, then defaults.

    huggingface_hub reads its environment variables once, when it is imported; reading them
    again here lets a program (or a test) set ``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_OFFLINE``
    or ``HF_HUB_ETAG_TIMEOUT`` after that import.
    """
    if endpoint is None:
        endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    if cache_dir is None:
        if os.environ.get("HF_HUB_CACHE"):
            cache_dir = os.environ["HF_HUB_CACHE"]
        elif os.environ.get("HF_HOME"):
            cache_dir = os.path.join(os.environ["HF_HOME"], "hub")
        else:
            cache_dir = constants.HF_HUB_CACHE
    if offline is None:
        offline = (os.environ.get("HF_HUB_OFFLINE", "").upper() in TRUE_VALUES) or bool(
            constants.HF_HUB_OFFLINE
        )
    try:
        timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or constants.HF_HUB_ETAG_TIMEOUT)
    except ValueError:
        timeout = constants.DEFAULT_ETAG_TIMEOUT
    cache = Path(os.path.expandvars(os.path.expanduser(str(cache_dir))))
    return HubSettings(endpoint.rstrip("/"), cache, bool(offline), token, timeout)


def is_repo_id(source: str) -> bool:
    """Return True if ``source`` has the form of a Hub repo id, ``owner/name``."""
    return bool(REPO_ID_PATTERN.fullmatch(source)) and ".." not in source and "--" not in source


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Return the exception types that mean "could not talk to the server" (timeouts too)."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    # huggingface_hub 2.x uses httpx2, 1.x httpx, 0.x requests; only the loaded one matters.
    for module_name, names in (
        ("httpx2", ("TransportError",)),
        ("httpx", ("TransportError",)),
        ("requests", ("ConnectionError", "Timeout")),
    ):
        module = sys.modules.get(module_name)
        errors.extend(getattr(module, name) for name in names if hasattr(module, name))
    return tuple(errors)


def one_line(text: object, limit: int = 160) -> str:
    """Return ``text`` on one line, cut to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _status(error: HfHubHTTPError) -> int | None:
    return getattr(getattr(error, "response", None), "status_code", None)


def is_server_failure(error: BaseException) -> bool:
    """Return True for errors that say nothing about the repo: no connection, Hub down."""
    if isinstance(error, LocalEntryNotFoundError) and error.__cause__ is not None:
        error = error.__cause__  # how hf_hub_download reports "no connection"
    if isinstance(error, HfHubHTTPError) and not isinstance(
        error, (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError)
    ):
        status = _status(error)
        return status is not None and status >= 500
    return isinstance(error, _transport_errors())


class Unreachable(HubError):
    """A download failed because the Hub could not be reached or failed (not the repo's fault)."""

    def __init__(self, message: str, cause: BaseException):
        super().__init__(message)
        self.cause = cause


# What works with no network and nothing cached (said wherever the Hub cannot help).
_OFFLINE_ALTERNATIVES = (
    "pass a local checkpoint file (.pth, .safetensors) or a weights folder that "
    "`mlx-inception convert` made"
)


def hub_error(
    error: BaseException,
    *,
    repo_id: str,
    endpoint: str,
    revision: str | None = None,
    filename: str | None = None,
    writing: bool = False,
) -> HubError:
    """Return a one-line HubError that says what went wrong with the Hub and what to do."""
    where = f"{repo_id}@{revision}" if revision else repo_id
    if isinstance(error, LocalEntryNotFoundError) and error.__cause__ is not None:
        # hf_hub_download reports "no connection" and "Hub down" as a missing local file.
        error = error.__cause__
    if isinstance(error, GatedRepoError):
        return HubError(
            f"{repo_id} is gated: accept its conditions at {endpoint}/{repo_id}, then log in "
            "with `hf auth login` or set HF_TOKEN"
        )
    if isinstance(error, RepositoryNotFoundError):
        return HubError(
            f"no repo {repo_id} on {endpoint}, or it is private and no valid token was sent: "
            "check the name, or log in with `hf auth login` / set HF_TOKEN"
        )
    if isinstance(error, RevisionNotFoundError):
        return HubError(
            f"{repo_id} has no revision {revision!r}: pass a branch, tag or commit that exists"
        )
    if writing and isinstance(error, OfflineModeIsEnabled):
        return HubError(
            f"cannot upload to {where}: the Hub is offline (HF_HUB_OFFLINE=1); unset "
            "HF_HUB_OFFLINE to push"
        )
    if isinstance(error, (OfflineModeIsEnabled, LocalEntryNotFoundError)):
        return HubError(
            f"{where} is not in the local cache and the Hub is offline (HF_HUB_OFFLINE=1): "
            f"{_OFFLINE_ALTERNATIVES}; or, with the network, unset HF_HUB_OFFLINE and run "
            f"`mlx-inception download {repo_id}` once"
        )
    if isinstance(error, EntryNotFoundError):
        return HubError(f"{where} has no file {filename}: check the repo's files on the Hub")
    if isinstance(error, HfHubHTTPError):
        status = _status(error)
        if status == 401:
            return HubError(
                f"the Hub rejected the token (401 Unauthorized) for {repo_id}: set a valid "
                "HF_TOKEN or run `hf auth login`"
            )
        if status == 403:
            access = "write" if writing else "read"
            return HubError(
                f"permission denied (403) for {repo_id}: use a token with {access} access to it"
            )
        if status == 429:
            return HubError(f"the Hub rate-limited this client (429) for {repo_id}: retry later")
        if status is not None and status >= 500:
            return HubError(f"the Hub at {endpoint} failed (HTTP {status}): try again later")
        detail = getattr(error, "server_message", None) or str(error)
        return HubError(f"the Hub answered HTTP {status} for {where}: {one_line(detail)}")
    if isinstance(error, _transport_errors()):
        # The cache was tried before this error is raised for a download: what works without
        # the network is a local file, never HF_HUB_OFFLINE (which leads back to the cache).
        fallback = "" if writing else f"; without it, {_OFFLINE_ALTERNATIVES}"
        return HubError(
            f"cannot reach {endpoint} ({type(error).__name__}: {one_line(error, 80)}): check the "
            f"network or HF_ENDPOINT{fallback}"
        )
    if isinstance(error, OSError) and "Consistency check failed" in str(error):
        return HubError(
            f"the download of {repo_id}/{filename} was cut short ({one_line(error, 100)}); "
            "nothing was cached: run the command again"
        )
    action = "upload to" if writing else "download from"
    return HubError(f"{action} {where} failed: {type(error).__name__}: {one_line(error)}")


__all__ = [
    "HubSettings",
    "Unreachable",
    "hub_error",
    "hub_settings",
    "is_repo_id",
    "is_server_failure",
    "logger",
    "one_line",
]
