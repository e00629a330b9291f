"""Pretrained weights from the Hugging Face Hub: download and verify once (``push`` uploads).

huggingface_hub's cache is the only cache, and nothing but huggingface_hub's own files is
written there, so ``hf cache ls``/``rm``/``prune`` see everything. ``resolve(source)`` turns a
registry name (``inception_v3.tv_in1k``) or a Hub repo id (``owner/name``) into a path there:

- a repo in this project's format (``config.json`` + ``model.safetensors``): its snapshot folder;
- a timm/torchvision repo: its weight file in the snapshot (``model.safetensors``, or
  ``pytorch_model.bin`` when pickles are allowed), with timm's ``config.json`` beside it for an
  unregistered repo. ``mlx_inception.load`` converts it in memory, with the registry's config
  (else timm's), as ``checkpoints.local.hub_file_config`` reads it from the path.

Online, one request lists the repo at the revision (its commit and each file's hash); files
are fetched with ``hf_hub_download`` at that commit (no request when the snapshot has them), and
``refs/{revision}`` is written once they are verified. Offline, or with the Hub unreachable,
``refs/{revision}`` and ``snapshots/{commit}`` alone answer (``local.cached_in_hub``).
``HF_HOME``/``HF_HUB_CACHE``, ``HF_TOKEN``, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT`` and
``HF_HUB_ETAG_TIMEOUT`` are read when a function here is called.

huggingface_hub checks a downloaded file's size, not its content: each file it downloads is
hashed once, right after, against the hash the Hub announces (the LFS SHA-256, or the git blob
id of a small file) and the registry's pin; a mismatch deletes the file and raises HubError.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, OfflineModeIsEnabled
from huggingface_hub.utils import tqdm as hf_tqdm

from ..atomic import write_text_atomically
from ..errors import CheckpointError, HubError
from ..model import InceptionV3Config
from . import convert, registry, store
from .hub_client import (
    HubSettings,
    Unreachable,
    hub_error,
    hub_settings,
    is_repo_id,
    is_server_failure,
    logger,
    one_line,
)
from .local import (
    COMMIT_PATTERN,
    blob_of,
    cached_in_hub,
    choose_weights_file,
    claims_project_format,
    read_json,
    read_ref,
    ref_path,
    repo_folder,
)
from .push import PushResult, push
from .registry import WeightsEntry

SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


# --------------------------------------------------------------------------------------------
# What a source names


@dataclass(frozen=True)
class Target:
    """What a source string names: a Hub repo at a revision, maybe a registry entry."""

    source: str
    repo_id: str
    revision: str
    entry: WeightsEntry | None = None

    @property
    def filename(self) -> str | None:
        """The weight file the registry names, if any."""
        return self.entry.filename if self.entry else None

    @property
    def pinned_sha256(self) -> str | None:
        """The registry's SHA-256 for that file, valid only at the registry's revision."""
        if self.entry and self.entry.sha256 and self.revision == self.entry.revision:
            return self.entry.sha256
        return None


def parse_source(source: str, revision: str | None = None) -> Target:
    """Return the Hub target that a registry name or repo id names; raise if it names neither."""
    entry = registry.find(source)
    if entry is not None:
        return Target(source, entry.repo_id, revision or entry.revision, entry)
    if Path(source).suffix.lower() in convert.PICKLE_SUFFIXES + convert.SAFETENSORS_SUFFIXES:
        # A checkpoint file name, even one shaped like owner/name: never a Hub lookup.
        raise CheckpointError(f"{source}: no such checkpoint file")
    if is_repo_id(source):
        # The repo of a registered entry gets that entry's config (preprocessing, labels).
        return Target(source, source, revision or "main", registry.for_repo(source))
    raise CheckpointError(
        f"{source!r} is not a file or directory, a known weights name "
        f"({', '.join(registry.names())}; see `mlx-inception list`) or a Hub repo id (owner/name)"
    )


def _cached(target: Target, settings: HubSettings, allow_pickle: bool = False) -> Path | None:
    """Return what ``resolve`` gives for ``target`` from the cache alone, or None."""
    return cached_in_hub(settings.cache_dir, target.repo_id, target.revision, target.filename,
                         target.pinned_sha256, allow_pickle)


def cached_path(source: str, revision: str | None = None, **settings_options: Any) -> Path | None:
    """Return the cached path for a registry name or repo id, or None; no network."""
    return _cached(parse_source(source, revision), hub_settings(**settings_options))


# --------------------------------------------------------------------------------------------
# Download and verify


def file_digests(path: str | os.PathLike, chunk_size: int = 1 << 20) -> tuple[str, str]:
    """Return a file's SHA-256 and its git blob id (SHA-1 of ``blob <size>\\0`` + content)."""
    path = Path(path)
    sha256 = hashlib.sha256()
    git_sha1 = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            sha256.update(chunk)
            git_sha1.update(chunk)
    return sha256.hexdigest(), git_sha1.hexdigest()


class _NoProgress(Exception):
    """Raised from a download's progress bar when no new byte came within the window."""


def download_window() -> float:
    """Return how long a download may go without a byte past its furthest point: 3 x
    HF_HUB_DOWNLOAD_TIMEOUT (read now; huggingface_hub read it once, at import)."""
    try:
        timeout = float(os.environ.get("HF_HUB_DOWNLOAD_TIMEOUT") or "nan")
    except ValueError:
        timeout = float("nan")
    if not timeout > 0:
        timeout = float(constants.HF_HUB_DOWNLOAD_TIMEOUT)
    return 3 * timeout


def _watched(bar_class: type | None, window: float) -> type:
    """Return a progress-bar class that stops a download making no progress for ``window`` s.

    huggingface_hub resumes a download cut short, and gives its retries back whenever a piece
    arrives: a server that cuts every answer, and sends the file again from its start when
    asked to resume, keeps it looping for ever. Its bar sees every piece (and a step back on
    each restart from zero), so the furthest byte reached is watched here.
    """

    class Watched(bar_class or hf_tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._reached = self._furthest = kwargs.get("initial") or 0
            self._since = time.monotonic()

        def update(self, n=1):
            self._reached += n or 0
            now = time.monotonic()
            if self._reached > self._furthest:
                self._furthest, self._since = self._reached, now
            elif now - self._since > window:
                raise _NoProgress(f"no new byte past {self._furthest} in {window:g} s")
            return super().update(n)

    return Watched


class _Download:
    """Fetches files of one repo at one commit; verifies each one huggingface_hub downloads."""

    def __init__(self, target: Target, settings: HubSettings, commit: str,
                 files: dict[str, Any], tqdm_class: type | None):
        self.target, self.settings, self.commit = target, settings, commit
        self.files = files
        self.tqdm_class = tqdm_class  # the progress bar hf_hub_download shows (a GUI's own)

    def error(self, error: BaseException, filename: str | None = None) -> HubError:
        return hub_error(error, repo_id=self.target.repo_id, endpoint=self.settings.endpoint,
                         revision=self.target.revision, filename=filename)

    def fetch(self, filename: str) -> Path:
        """Return the file's path in the snapshot, downloaded and verified if it was not there."""
        storage = repo_folder(self.settings.cache_dir, self.target.repo_id)
        _remove_abandoned_partials(storage, self.settings.cache_dir)
        fresh = not (storage / "snapshots" / self.commit / filename).is_file()
        try:
            path = Path(hf_hub_download(
                self.target.repo_id, filename, revision=self.commit,
                cache_dir=self.settings.cache_dir, token=self.settings.token,
                endpoint=self.settings.endpoint,
                tqdm_class=_watched(self.tqdm_class, download_window()),
                etag_timeout=self.settings.timeout,
            ))
        except _NoProgress as error:
            message = (
                f"the download of {self.target.repo_id}/{filename} stopped: {error} (the server "
                "keeps breaking off and sending the file again); nothing was cached: try again "
                "later (the window is 3 x HF_HUB_DOWNLOAD_TIMEOUT)"
            )
            raise Unreachable(message, error) from None
        except Exception as error:  # huggingface_hub raises many types; all become one line
            failure = self.error(error, filename)
            if is_server_failure(error):
                raise Unreachable(str(failure), error) from None
            raise failure from None
        if fresh:
            self._verify(path, filename)
        return path

    def _expected(self, filename: str, path: Path) -> list[tuple[str, str, str]]:
        """Return (algorithm, hex digest, who announced it) for every hash to check."""
        checks = []
        sibling = self.files.get(filename)
        lfs = getattr(sibling, "lfs", None)
        if lfs is not None and getattr(lfs, "sha256", None):
            checks.append(("sha256", lfs.sha256.lower(), "the LFS SHA-256 the Hub announces"))
        elif getattr(sibling, "blob_id", None):
            announced = "the git blob id the Hub announces"
            checks.append(("git-sha1", sibling.blob_id.lower(), announced))
        if filename == self.target.filename and self.target.pinned_sha256:
            checks.append(("sha256", self.target.pinned_sha256, "the registry's SHA-256"))
        # huggingface_hub names the blob after the ETag the download answered with
        # (X-Linked-Etag for LFS files): the SHA-256 for LFS files, the git blob id otherwise.
        blob = blob_of(path)
        etag = blob.name.lower() if blob is not None else ""
        if SHA256_PATTERN.fullmatch(etag):
            checks.append(("sha256", etag, "the X-Linked-Etag the Hub announced"))
        elif COMMIT_PATTERN.fullmatch(etag):
            checks.append(("git-sha1", etag, "the ETag the Hub announced"))
        return checks

    def _verify(self, path: Path, filename: str) -> None:
        checks = self._expected(filename, path)
        where = f"{self.target.repo_id}/{filename}@{self.commit[:8]}"
        if not checks:
            _discard(path)
            raise HubError(f"{where}: the Hub announced no hash to check the file against; "
                           "it was deleted")
        actual = dict(zip(("sha256", "git-sha1"), file_digests(path), strict=True))
        for algorithm, expected, announced_by in checks:
            if actual[algorithm] != expected:
                _discard(path)
                raise HubError(
                    f"{where}: the downloaded file's {algorithm} {actual[algorithm][:16]}... "
                    f"does not match {announced_by} ({expected[:16]}...); the corrupt copy was "
                    "deleted: run the command again"
                )
        logger.info("%s: verified (%s)", where, ", ".join(check[2] for check in checks))


def _remove_abandoned_partials(storage: Path, cache_dir: Path) -> None:
    """Delete the ``.incomplete`` blobs of killed downloads of one repo.

    huggingface_hub downloads into ``blobs/<etag>.<random>.incomplete`` while holding
    ``.locks/<repo folder>/<etag>.lock`` and deletes the file on any error, but a killed process
    leaves it for ever (its name is never reused). A partial whose lock is free is nobody's.
    """
    for partial in sorted((storage / "blobs").glob("*.incomplete")):
        lock = cache_dir / ".locks" / storage.name / f"{partial.name.split('.')[0]}.lock"
        if not lock.is_file():
            continue  # not huggingface_hub's layout: leave it alone
        try:
            with FileLock(str(lock), timeout=0):
                partial.unlink(missing_ok=True)
        except (Timeout, OSError):
            continue  # a download in progress, or a cache this user cannot write


def _discard(pointer: Path) -> None:
    """Delete a downloaded file from the cache: the snapshot link and the blob it points to."""
    blob = blob_of(pointer)
    pointer.unlink(missing_ok=True)
    if blob is not None and blob.parent.name == "blobs":
        blob.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Resolve


def resolve(
    source: str,
    *,
    revision: str | None = None,
    allow_pickle: bool = False,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
    endpoint: str | None = None,
    tqdm_class: type | None = None,
) -> Path:
    """Return the local path of a registry name or Hub repo id in huggingface_hub's cache.

    That is the snapshot folder of a repo in this project's format, else the repo's weight
    file (``mlx_inception.load`` converts it). ``revision``: a branch, tag or commit (default:
    the registry's, else ``main``). ``allow_pickle``: accept a repo whose only weights are a
    pickle (``pytorch_model.bin``). ``token``, ``cache_dir``, ``offline`` and ``endpoint``
    override ``HF_TOKEN``, ``HF_HUB_CACHE``/``HF_HOME``, ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT``.
    ``tqdm_class``: the progress bar of each download (huggingface_hub's own argument; a GUI
    passes its own). Offline (or with the Hub unreachable, with a warning) only the cache is used.
    """
    target = parse_source(source, revision)
    settings = hub_settings(cache_dir, token, offline, endpoint)
    if settings.offline:
        return _from_cache(target, settings, allow_pickle, OfflineModeIsEnabled())
    try:
        info = HfApi(endpoint=settings.endpoint).model_info(
            target.repo_id, revision=target.revision, files_metadata=True, token=settings.token,
            timeout=settings.timeout,
        )
    except Exception as error:
        if isinstance(error, OfflineModeIsEnabled) or is_server_failure(error):
            return _from_cache(target, settings, allow_pickle, error)
        raise hub_error(
            error, repo_id=target.repo_id, endpoint=settings.endpoint, revision=target.revision
        ) from None
    commit = info.sha
    if not commit or not COMMIT_PATTERN.fullmatch(commit):
        raise HubError(f"{settings.endpoint} gave no commit for {target.repo_id}: not a Hub API?")
    if info.siblings is None:
        raise HubError(f"{settings.endpoint} did not list the files of {target.repo_id}")
    download = _Download(target, settings, commit,
                         {sibling.rfilename: sibling for sibling in info.siblings}, tqdm_class)
    try:
        path = _fetch(target, download, allow_pickle)
    except Unreachable as error:
        # The listing worked, a download did not: what the cache holds still serves.
        return _from_cache(target, settings, allow_pickle, error)
    # Only now, as hf_hub_download would: the revision leads to a snapshot with its files.
    ref = ref_path(repo_folder(settings.cache_dir, target.repo_id), target.revision)
    if ref is not None and target.revision != commit and read_ref(ref) != commit:
        write_text_atomically(ref, commit)
    return path


def _from_cache(
    target: Target, settings: HubSettings, allow_pickle: bool, why: BaseException
) -> Path:
    """Return the cached path for ``target`` when the Hub is offline or unreachable."""
    found = _cached(target, settings, allow_pickle)
    if found is not None:
        if not isinstance(why, OfflineModeIsEnabled):
            cause = why.cause if isinstance(why, Unreachable) else why
            logger.warning("cannot reach %s (%s); using the cached %s",
                           settings.endpoint, one_line(cause, 80), found)
        return found
    if isinstance(why, HubError):
        raise why
    raise hub_error(
        why, repo_id=target.repo_id, endpoint=settings.endpoint, revision=target.revision
    ) from None


def _fetch(target: Target, download: _Download, allow_pickle: bool) -> Path:
    """Return the snapshot folder or weight file ``target`` gives at the listed commit."""
    files = download.files
    if target.filename is None and "config.json" in files:
        # Kept beside the weights: an unregistered timm repo's preprocessing comes from it.
        data = read_json(download.fetch("config.json"))
        if claims_project_format(data):
            # Checked before the weights are downloaded: a repo whose config is damaged
            # (num_classes -3, a string for a number) is refused, not cached and reported.
            try:
                InceptionV3Config.from_dict(data)
            except (ValueError, TypeError) as error:
                raise HubError(
                    f"{target.repo_id} has a damaged mlx-inception config.json ({error}); "
                    "nothing else was downloaded"
                ) from None
            if store.WEIGHTS_FILE not in files:
                raise HubError(
                    f"{target.repo_id} has an mlx-inception config.json but no "
                    f"{store.WEIGHTS_FILE}: push the whole weights directory"
                )
            return download.fetch(store.WEIGHTS_FILE).parent
    filename = target.filename or choose_weights_file(files, allow_pickle, target.repo_id)
    if filename not in files:
        raise download.error(EntryNotFoundError(filename), filename)
    if filename.endswith(convert.PICKLE_SUFFIXES) and not allow_pickle:
        raise HubError(
            f"{target.repo_id}/{filename} is a pickle, which can run code when loaded: pass "
            "--allow-pickle (allow_pickle=True) if you trust it"
        )
    announced = getattr(getattr(files[filename], "lfs", None), "sha256", None)
    if announced and target.pinned_sha256 and announced.lower() != target.pinned_sha256:
        raise HubError(
            f"{target.repo_id}/{filename} at {target.revision} is not the registered file "
            f"(Hub SHA-256 {announced[:16]}..., registry {target.pinned_sha256[:16]}...): "
            "the repo changed; load it by repo id to accept the new file"
        )
    return download.fetch(filename)


__all__ = [
    "HubSettings",
    "PushResult",
    "Target",
    "cached_path",
    "choose_weights_file",
    "file_digests",
    "hub_error",
    "hub_settings",
    "is_repo_id",
    "parse_source",
    "push",
    "resolve",
]
