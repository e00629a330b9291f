"""Pretrained weights from the Hugging Face Hub: resolve, download, verify, convert once, push.

``resolve(source)`` turns a registry name (``inception_v3.tv_in1k``) or a Hub repo id
(``owner/name``) into a local weights directory (``config.json`` + ``model.safetensors``):

- a repo already in this project's format is downloaded and used as is;
- a timm/torchvision repo (``model.safetensors``, or ``pytorch_model.bin`` when pickles are
  allowed) is downloaded, its SHA-256 checked, converted once and the result cached.

Everything lives in huggingface_hub's cache, so ``HF_HOME``/``HF_HUB_CACHE``, ``HF_TOKEN``,
``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` apply (read when a function here is called)::

    {HF_HUB_CACHE}/models--{owner}--{name}/
        blobs/ refs/ snapshots/                   huggingface_hub's copy of the original files
        mlx-inception/conversions/{key}/          converted: config.json + model.safetensors
        mlx-inception/commits/{commit}/{key}.json which conversion that commit's file gives
        mlx-inception/refs/{revision}             the commit each revision last resolved to

``key`` is the first 16 hex digits of the source file's SHA-256 and a fingerprint of the config
applied to it, so a conversion, like a blob, is stored once however many commits carry the same
file; each commit that resolved to it gets a small record (the file's name and SHA-256, the
conversion format and the revisions that led there), as snapshots link to blobs. A conversion is
written under a temporary name and renamed into place, so an interrupted one never leaves an
entry that a later load would use; an entry damaged later (a file deleted or cut short, a config
that does not parse) is noticed when it is looked up, because it is read as ``load`` reads it,
and is converted again (offline: a one-line error). Each online resolve also sweeps what a
killed process left (set-aside and day-old partial conversions) and the per-commit folders of
the older layout (``mlx-inception/{commit}/{key}/``), which nothing reads any more.

A revision's refs are written only once it resolved, so an interrupted update leaves the last
good conversion in use. Offline, ``mlx-inception/refs/`` is read first (another tool moving
huggingface_hub's ``refs/`` does not change which conversion a revision gives); huggingface_hub's
``refs/{revision}`` moves only to a commit whose snapshot holds the weight file (a commit that
reuses a conversion gets the blob linked into its snapshot, as hf_hub_download would), so
``hf cache ls``/``scan_cache_dir`` keep listing the repo and ``local_files_only`` loads work.
``hf cache rm`` of the whole repo (or deleting its folder) removes the conversions with the
originals; removing one revision or ``hf cache prune`` leaves the conversions, and
``hf cache ls`` does not count their size.

huggingface_hub checks a downloaded file's size, not its content; here every weight file is
hashed and compared with the hash the Hub announces (the LFS SHA-256, or the git blob id of a
small file) and with the registry's pin, and a mismatch deletes the file and raises HubError.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..atomic import write_text_atomically
from ..errors import CheckpointError, HubError
from ..model import InceptionV3Config, Preprocessing
from . import convert, registry, store
from .registry import WeightsEntry

logger = logging.getLogger(__name__)

CONVERTED_FOLDER = "mlx-inception"
# Bump when the conversion's output changes, so older cached conversions are not reused.
CONVERSION_FORMAT = 1
SAFETENSORS_FILE = "model.safetensors"
PICKLE_FILE = "pytorch_model.bin"
REPO_ID_PATTERN = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}")
COMMIT_PATTERN = re.compile(r"[0-9a-f]{40}")
GIT_SHA1_PATTERN = re.compile(r"[0-9a-f]{40}")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
TRUE_VALUES = {"1", "ON", "YES", "TRUE"}
KEY_PATTERN = re.compile(r"[0-9a-f]{16}-[0-9a-f]{8}")
# Unused partial conversions (a killed process) older than this are removed.
STALE_PARTIAL_SECONDS = 24 * 3600


# --------------------------------------------------------------------------------------------
# Settings and what a source names


@dataclass(frozen=True)
class HubSettings:
    """Where the Hub is and where its files are cached, read from the environment at call time."""

    endpoint: str
    cache_dir: Path
    offline: bool
    token: str | bool | None


def hub_settings(
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    offline: bool | None = None,
    endpoint: str | None = None,
) -> HubSettings:
    """Return the Hub settings: explicit arguments first, then HF_* variables, then defaults.

    huggingface_hub reads its environment variables once, when it is imported; reading them
    again here lets a program (or a test) set ``HF_ENDPOINT``, ``HF_HOME`` or ``HF_HUB_OFFLINE``
    after that import.
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
    cache = Path(os.path.expandvars(os.path.expanduser(str(cache_dir))))
    return HubSettings(endpoint.rstrip("/"), cache, bool(offline), token)


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


def is_repo_id(source: str) -> bool:
    """Return True if ``source`` has the form of a Hub repo id, ``owner/name``."""
    return bool(REPO_ID_PATTERN.fullmatch(source)) and ".." not in source and "--" not in source


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


# --------------------------------------------------------------------------------------------
# Errors


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Return the exception types that mean "could not talk to the server"."""
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


def _one_line(text: object, limit: int = 160) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _status(error: HfHubHTTPError) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _is_server_failure(error: BaseException) -> bool:
    """Return True for errors that say nothing about the repo: no connection, Hub down."""
    if isinstance(error, HfHubHTTPError) and not isinstance(
        error, (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError)
    ):
        status = _status(error)
        return status is not None and status >= 500
    return isinstance(error, _transport_errors())


class _Unreachable(HubError):
    """A download failed because the Hub could not be reached or failed (not the repo's fault)."""

    def __init__(self, message: str, cause: BaseException):
        super().__init__(message)
        self.cause = cause


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
            f"unset HF_HUB_OFFLINE and run `mlx-inception download {repo_id}` once"
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
        return HubError(f"the Hub answered HTTP {status} for {where}: {_one_line(detail)}")
    if isinstance(error, _transport_errors()):
        # Cached weights can stand in for a download, never for an upload.
        fallback = "" if writing else ", or set HF_HUB_OFFLINE=1 to use cached weights"
        return HubError(
            f"cannot reach {endpoint} ({type(error).__name__}: {_one_line(error, 80)}): check the "
            f"network or HF_ENDPOINT{fallback}"
        )
    if isinstance(error, OSError) and "Consistency check failed" in str(error):
        return HubError(
            f"the download of {repo_id}/{filename} was cut short ({_one_line(error, 100)}); "
            "nothing was cached: run the command again"
        )
    action = "upload to" if writing else "download from"
    return HubError(f"{action} {where} failed: {type(error).__name__}: {_one_line(error)}")


# --------------------------------------------------------------------------------------------
# Hashes


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


def config_fingerprint(config: InceptionV3Config) -> str:
    """Return 8 hex digits identifying the config applied to a conversion (source excluded)."""
    data = {**config.to_dict(), "source": None, "conversion_format": CONVERSION_FORMAT}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]


# --------------------------------------------------------------------------------------------
# The cache of one repo


def _is_project_config(data: Any) -> bool:
    """Return True if ``data`` (a parsed config.json) is this project's config, not timm's."""
    # store.save_weights writes every field; timm's config has neither of these two.
    if not isinstance(data, dict) or not {"aux_logits", "preprocessing"} <= set(data):
        return False
    try:
        InceptionV3Config.from_dict(data)
    except Exception:  # any malformed field (a number for a dict, ...) means: not ours
        return False
    return True


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_complete(directory: Path) -> bool:
    return store.is_weights_dir(directory) and _is_project_config(
        _read_json(directory / store.CONFIG_FILE)
    )


def _damage(directory: Path) -> str | None:
    """Return why a cached weights directory cannot be loaded, or None when it can.

    It is read as ``mlx_inception.load`` reads it (config, safetensors header and offsets,
    every key and shape): about 20 ms for Inception-v3, as the tensors are not read.
    """
    try:
        weights, config = store.load_weights(directory)
        convert.check_weights(weights, config)
        if not _is_project_config(_read_json(directory / store.CONFIG_FILE)):
            return f"{store.CONFIG_FILE} is not a complete mlx-inception config"
    except Exception as error:  # whatever a damaged file makes the reader raise is damage
        return _one_line(str(error).replace(f"{directory}{os.sep}", ""), 120)
    return None


@dataclass(frozen=True)
class CacheLookup:
    """What the cache holds for a target: a usable directory, or the damaged one in the way."""

    path: Path | None = None
    commit: str | None = None  # the commit whose record led to ``path``
    fallback: bool = False  # the commit last resolved here had nothing usable left
    damaged: Path | None = None
    reason: str = ""


class RepoCache:
    """One Hub repo's folder in huggingface_hub's cache, with this project's conversions."""

    def __init__(self, cache_dir: Path, repo_id: str):
        self.repo_id = repo_id
        self.storage = cache_dir / ("models--" + repo_id.replace("/", "--"))
        self.converted = self.storage / CONVERTED_FOLDER
        self.conversions = self.converted / "conversions"
        self.commits = self.converted / "commits"

    @staticmethod
    def _ref_path(folder: Path, revision: str) -> Path | None:
        """Return where the ref of ``revision`` lives under ``folder``; None for a bad name."""
        parts = revision.split("/")
        if not revision or any(part in ("", ".", "..") for part in parts):
            return None
        return folder.joinpath(*parts)

    @staticmethod
    def _read_ref(path: Path | None) -> str | None:
        try:
            commit = path.read_text(encoding="utf-8").strip() if path is not None else ""
        except OSError:
            return None
        return commit if COMMIT_PATTERN.fullmatch(commit) else None

    def own_commit(self, revision: str) -> str | None:
        """Return the commit this project last resolved ``revision`` to, or None."""
        if COMMIT_PATTERN.fullmatch(revision):
            return revision
        return self._read_ref(self._ref_path(self.converted / "refs", revision))

    def hub_commit(self, revision: str) -> str | None:
        """Return the commit huggingface_hub's refs/ say ``revision`` was last seen at, or None."""
        if COMMIT_PATTERN.fullmatch(revision):
            return revision
        return self._read_ref(self._ref_path(self.storage / "refs", revision))

    def remember_ref(self, revision: str, commit: str, filename: str | None) -> None:
        """Record that ``revision`` resolved to ``commit``, for offline use.

        This project's own map (``mlx-inception/refs/``) always; huggingface_hub's ``refs/``
        only when ``snapshots/{commit}`` holds ``filename`` (the weight file), since a ref to a
        commit without it makes ``scan_cache_dir`` and ``hf cache`` drop the repo and
        ``hf_hub_download(local_files_only=True)`` fail for that revision.
        """
        if revision == commit:
            return
        own = self._ref_path(self.converted / "refs", revision)
        if own is None:
            return
        if self._read_ref(own) != commit:
            write_text_atomically(own, commit)
        snapshot = self.snapshot(commit)
        has_file = (snapshot / filename).is_file() if filename else snapshot.is_dir()
        ref = self._ref_path(self.storage / "refs", revision)
        if has_file and ref is not None and self._read_ref(ref) != commit:
            write_text_atomically(ref, commit)

    def link_snapshot(self, commit: str, filename: str, sha256: str) -> None:
        """Add ``filename`` to ``snapshots/{commit}`` from its blob, as hf_hub_download would.

        A commit that carries a file already in ``blobs/`` (named by its SHA-256, as LFS files
        are) gets a link to it and no download; without symlinks, nothing is done.
        """
        blob = self.storage / "blobs" / sha256
        pointer = self.snapshot(commit) / filename
        if not blob.is_file() or pointer.exists() or pointer.is_symlink():
            return
        try:
            pointer.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(blob, pointer.parent), pointer)
        except OSError:
            pass  # no symlinks here (some Windows setups): the ref then stays where it was

    def entry_dir(self, sha256: str, config: InceptionV3Config) -> Path:
        """Return where the conversion of a file (by hash) with ``config`` is cached."""
        return self.conversions / f"{sha256[:16]}-{config_fingerprint(config)}"

    def record(self, commit: str, entry: Path, filename: str, sha256: str, revision: str) -> None:
        """Record that ``filename`` at ``commit``, reached by ``revision``, gives ``entry``."""
        path = self.commits / commit / f"{entry.name}.json"
        data = _read_json(path)
        revisions = data.get("revisions", []) if isinstance(data, dict) else []
        # A copy: appending to the list read from ``data`` would make ``data == new``.
        revisions = list(revisions) if isinstance(revisions, list) else []
        if revision != commit and revision not in revisions:
            revisions.append(revision)
        new = {"file": filename, "sha256": sha256, "format": CONVERSION_FORMAT,
               "revisions": revisions}
        if data != new:
            write_text_atomically(path, json.dumps(new, indent=2) + "\n")

    def snapshot(self, commit: str) -> Path:
        return self.storage / "snapshots" / commit

    def find(self, target: Target) -> Path | None:
        """Return a usable cached weights directory for ``target`` without any network, or None."""
        return self.lookup(target).path

    def lookup(self, target: Target) -> CacheLookup:
        """Return what the cache holds for ``target``, without any network.

        The commit this project last resolved the revision to comes first (a commit hash names
        itself); only when that commit has no conversion left (or the revision was never
        resolved here) does the commit huggingface_hub's ``refs/`` name stand in, e.g. one
        another tool downloaded. A damaged conversion is reported, not skipped.
        """
        own = self.own_commit(target.revision)
        commits = [own] if own is not None else []
        seen = self.hub_commit(target.revision)
        if seen is not None and seen != own:
            commits.append(seen)
        for commit in commits:
            found = self._lookup_commit(target, commit)
            if found.path is not None or found.damaged is not None:
                # Another commit standing in for the one last resolved here: say so.
                return CacheLookup(found.path, commit, own is not None and commit != own,
                                   found.damaged, found.reason)
        return CacheLookup()

    def _lookup_commit(self, target: Target, commit: str) -> CacheLookup:
        """Return the usable (or damaged) conversion recorded for ``target`` at ``commit``."""
        preferred = self._expected_fingerprint(target, commit)

        def rank(item: tuple[Path, dict]) -> tuple[bool, bool]:
            entry, data = item
            return (
                not entry.name.endswith(f"-{preferred}"),
                not str(data.get("file", "")).endswith(".safetensors"),
            )

        damaged = None
        for entry, _ in sorted(self._records(target, commit), key=rank):
            if not entry.is_dir():
                continue  # the record of a conversion deleted by hand: nothing to use
            reason = _damage(entry)
            if reason is None:
                return CacheLookup(entry, commit)
            damaged = damaged or CacheLookup(damaged=entry, reason=reason, commit=commit)
        if damaged is not None:
            return damaged
        snapshot = self.snapshot(commit)
        if target.filename is None and _is_complete(snapshot):
            return CacheLookup(snapshot, commit)  # a repo in this project's format
        return CacheLookup()

    def _records(self, target: Target, commit: str) -> list[tuple[Path, dict]]:
        """Return (entry, record) for the conversions recorded at ``commit`` that fit ``target``."""
        records = []
        for path in sorted((self.commits / commit).glob("*.json")):
            data = _read_json(path)
            if not KEY_PATTERN.fullmatch(path.stem) or not isinstance(data, dict):
                continue
            if target.filename and data.get("file") != target.filename:
                continue
            # Records written before the field existed are all of format 1.
            if data.get("format", 1) != CONVERSION_FORMAT:
                continue  # made by another version of the conversion: never used
            if target.pinned_sha256 and data.get("sha256") != target.pinned_sha256:
                continue
            if target.entry is not None and not path.stem.endswith(
                f"-{config_fingerprint(target.entry.base_config())}"
            ):
                continue  # a registry name always converts with the registry's config
            records.append((self.conversions / path.stem, data))
        return records

    def _expected_fingerprint(self, target: Target, commit: str) -> str | None:
        foreign = _read_json(self.snapshot(commit) / "config.json")
        return config_fingerprint(base_config(target.entry, foreign))

    def clean_stale_partials(self) -> None:
        """Remove what a killed process left: set-aside conversions, day-old partial ones.

        A ``.partial-*`` folder younger than a day may be another process's conversion in
        progress, so it stays; a ``.damaged-*`` one is never read again.
        """
        try:
            leftovers = list(self.conversions.glob(".*-*"))
        except OSError:
            return
        for directory in leftovers:
            try:
                stale = directory.name.startswith(".damaged-") or (
                    time.time() - directory.stat().st_mtime > STALE_PARTIAL_SECONDS
                )
            except OSError:
                continue
            if stale:
                shutil.rmtree(directory, ignore_errors=True)

    def tidy(self) -> None:
        """Remove leftovers of crashes and the per-commit folders of the cache's older layout.

        Before conversions were shared, each lived in ``mlx-inception/<commit>/<key>/``; nothing
        reads those any more (about 95 MB each). Cheap: two directory listings.
        """
        self.clean_stale_partials()
        try:
            folders = list(self.converted.iterdir())
        except OSError:
            return
        for folder in folders:
            old = COMMIT_PATTERN.fullmatch(folder.name) and not folder.is_symlink()
            if old and folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Configs


def config_from_timm(data: Any) -> InceptionV3Config:
    """Return the config that timm's ``config.json`` (its ``pretrained_cfg``) describes."""
    config = InceptionV3Config()
    cfg = data.get("pretrained_cfg", {}) if isinstance(data, dict) else {}
    if not isinstance(cfg, dict):
        return config
    crop = config.preprocessing.crop_size
    input_size = cfg.get("input_size")
    if isinstance(input_size, list | tuple) and len(input_size) == 3:
        crop = int(input_size[-1])
    resize = config.preprocessing.resize_size
    crop_pct = cfg.get("crop_pct")
    if isinstance(crop_pct, int | float) and 0 < crop_pct <= 1:
        resize = int(crop / crop_pct)  # timm's eval transform: floor(size / crop_pct)
    config.preprocessing = Preprocessing(
        resize_size=resize,
        crop_size=crop,
        interpolation=str(cfg.get("interpolation", config.preprocessing.interpolation)),
        mean=tuple(cfg.get("mean", config.preprocessing.mean)),
        std=tuple(cfg.get("std", config.preprocessing.std)),
    )
    label_names = data.get("label_names")
    if isinstance(label_names, list) and all(isinstance(name, str) for name in label_names):
        config.labels = list(label_names)
    return config


def base_config(entry: WeightsEntry | None, foreign_config: Any = None) -> InceptionV3Config:
    """Return the config to convert with: the registry's, else timm's config.json, else defaults."""
    if entry is not None:
        return entry.base_config()
    if isinstance(foreign_config, dict) and "pretrained_cfg" in foreign_config:
        return config_from_timm(foreign_config)
    return InceptionV3Config()


def choose_weights_file(files: dict[str, Any], allow_pickle: bool, repo_id: str) -> str:
    """Return the repo's weight file: model.safetensors first; a pickle only if allowed."""
    top_level = [name for name in files if "/" not in name]
    safetensors = [name for name in top_level if name.endswith(".safetensors")]
    if SAFETENSORS_FILE in files:
        return SAFETENSORS_FILE
    if len(safetensors) == 1:
        return safetensors[0]
    pickles = [name for name in top_level if name.endswith(convert.PICKLE_SUFFIXES)]
    if PICKLE_FILE in pickles:
        pickles = [PICKLE_FILE]
    if len(pickles) == 1:
        if not allow_pickle:
            raise HubError(
                f"{repo_id} has only a pickle ({pickles[0]}), which can run code when loaded: "
                "pass --allow-pickle (allow_pickle=True) if you trust it (read with "
                "torch.load(weights_only=True))"
            )
        return pickles[0]
    raise HubError(
        f"{repo_id} has no single weight file (found {', '.join(sorted(top_level)) or 'none'}): "
        f"expected {SAFETENSORS_FILE} or {PICKLE_FILE}"
    )


# --------------------------------------------------------------------------------------------
# Download and verify


class _Fetcher:
    """Downloads files of one repo at one commit and verifies each against its announced hash."""

    def __init__(
        self,
        target: Target,
        settings: HubSettings,
        commit: str,
        files: dict[str, Any],
        tqdm_class: type | None = None,
    ):
        self.target = target
        self.settings = settings
        self.commit = commit
        self.files = files
        self.tqdm_class = tqdm_class  # the progress bar hf_hub_download shows (a GUI's own)

    def fetch(self, filename: str) -> Path:
        try:
            pointer = hf_hub_download(
                self.target.repo_id,
                filename,
                revision=self.commit,
                cache_dir=self.settings.cache_dir,
                token=self.settings.token,
                endpoint=self.settings.endpoint,
                tqdm_class=self.tqdm_class,
            )
        except Exception as error:  # huggingface_hub raises many types; all become one line
            hub_failure = self._error(error, filename)
            if isinstance(error, LocalEntryNotFoundError) and error.__cause__ is not None:
                error = error.__cause__  # how hf_hub_download reports "no connection"
            if _is_server_failure(error):
                raise _Unreachable(str(hub_failure), error) from None
            raise hub_failure from None
        path = Path(pointer)
        self._verify(path, filename)
        return path

    @staticmethod
    def _blob_of(pointer: Path) -> Path | None:
        """Return the blobs/ file a snapshot link points to (one level), or None."""
        if not pointer.is_symlink():
            return None  # no symlinks on this system: huggingface_hub copied the file
        return Path(os.path.normpath(pointer.parent / os.readlink(pointer)))

    def _error(self, error: BaseException, filename: str) -> HubError:
        return hub_error(
            error,
            repo_id=self.target.repo_id,
            endpoint=self.settings.endpoint,
            revision=self.target.revision,
            filename=filename,
        )

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
        blob = self._blob_of(path)
        etag = blob.name.lower() if blob is not None else ""
        if SHA256_PATTERN.fullmatch(etag):
            checks.append(("sha256", etag, "the X-Linked-Etag the Hub announced"))
        elif GIT_SHA1_PATTERN.fullmatch(etag):
            checks.append(("git-sha1", etag, "the ETag the Hub announced"))
        if not checks:
            checks.extend(self._etag_check(filename))
        return checks

    def _etag_check(self, filename: str) -> list[tuple[str, str, str]]:
        """Fall back on the file's ETag (a HEAD request) when the repo listing had no hash."""
        url = hf_hub_url(
            self.target.repo_id, filename, revision=self.commit, endpoint=self.settings.endpoint
        )
        try:
            etag = (get_hf_file_metadata(url, token=self.settings.token).etag or "").lower()
        except Exception as error:
            raise self._error(error, filename) from None
        if SHA256_PATTERN.fullmatch(etag):
            return [("sha256", etag, "the ETag the Hub announces")]
        if GIT_SHA1_PATTERN.fullmatch(etag):
            return [("git-sha1", etag, "the ETag the Hub announces")]
        return []

    def _verify(self, path: Path, filename: str) -> None:
        checks = self._expected(filename, path)
        where = f"{self.target.repo_id}/{filename}@{self.commit[:8]}"
        if not checks:
            self._discard(path)
            raise HubError(
                f"{where}: the Hub announced no hash to verify the file against; it was not used"
            )
        sha256, git_sha1 = file_digests(path)
        actual = {"sha256": sha256, "git-sha1": git_sha1}
        for algorithm, expected, announced_by in checks:
            if actual[algorithm] != expected:
                self._discard(path)
                raise HubError(
                    f"{where}: the downloaded file's {algorithm} {actual[algorithm][:16]}... "
                    f"does not match {announced_by} ({expected[:16]}...); the corrupt copy was "
                    "deleted: run the command again"
                )

    @classmethod
    def _discard(cls, pointer: Path) -> None:
        """Delete a downloaded file: the snapshot link and the blob it points to.

        Only the repo's own blobs/ entry goes: if that is itself a link into huggingface_hub's
        shared store, the link is removed, not what other repos may share.
        """
        blob = cls._blob_of(pointer)
        pointer.unlink(missing_ok=True)
        if blob is not None and blob.parent.name == "blobs":
            blob.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Resolve


def cached_path(source: str, revision: str | None = None, **settings_options) -> Path | None:
    """Return the cached weights directory for a registry name or repo id, or None (no network)."""
    target = parse_source(source, revision)
    settings = hub_settings(**settings_options)
    return RepoCache(settings.cache_dir, target.repo_id).find(target)


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
    """Return a local weights directory for a registry name or Hub repo id.

    ``revision``: a branch, tag or commit (default: the registry's, else ``main``).
    ``allow_pickle``: accept a repo whose only weights are a pickle (``pytorch_model.bin``).
    ``token``, ``cache_dir``, ``offline`` and ``endpoint`` override ``HF_TOKEN``,
    ``HF_HUB_CACHE``/``HF_HOME``, ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT``. ``tqdm_class``: the
    progress bar of each download (huggingface_hub's own argument; a GUI passes its own).
    Online, one request lists the repo; a cached conversion of the same file is returned
    without downloading, whichever commit it was made for; a damaged one is converted again.
    Offline (or with the Hub unreachable), only the cache is used.
    """
    target = parse_source(source, revision)
    settings = hub_settings(cache_dir, token, offline, endpoint)
    cache = RepoCache(settings.cache_dir, target.repo_id)
    if settings.offline:
        return _from_cache(target, cache, settings, OfflineModeIsEnabled())
    try:
        info = HfApi(endpoint=settings.endpoint).model_info(
            target.repo_id, revision=target.revision, files_metadata=True, token=settings.token
        )
    except Exception as error:
        if isinstance(error, OfflineModeIsEnabled) or _is_server_failure(error):
            return _from_cache(target, cache, settings, error)
        raise hub_error(
            error, repo_id=target.repo_id, endpoint=settings.endpoint, revision=target.revision
        ) from None
    commit = info.sha
    if not commit or not COMMIT_PATTERN.fullmatch(commit):
        raise HubError(f"{settings.endpoint} gave no commit for {target.repo_id}: not a Hub API?")
    if info.siblings is None:
        raise HubError(f"{settings.endpoint} did not list the files of {target.repo_id}")
    files = {sibling.rfilename: sibling for sibling in info.siblings}
    cache.tidy()
    try:
        path, weights_file = _resolve_listed(
            target, cache, commit, files, _Fetcher(target, settings, commit, files, tqdm_class),
            allow_pickle,
        )
    except _Unreachable as error:
        # The listing worked, a download did not: the last good conversion still serves.
        return _from_cache(target, cache, settings, error)
    # Only now: a ref moved before the download would hide the last good conversion offline.
    cache.remember_ref(target.revision, commit, weights_file)
    return path


def _from_cache(
    target: Target, cache: RepoCache, settings: HubSettings, why: BaseException
) -> Path:
    """Return the cached directory for ``target`` when the Hub is offline or unreachable."""
    found = cache.lookup(target)
    offline = isinstance(why, OfflineModeIsEnabled)
    where = f"{target.repo_id}@{target.revision}"
    if found.path is not None:
        if not offline:
            cause = why.cause if isinstance(why, _Unreachable) else why
            logger.warning(
                "cannot reach %s (%s); using the cached %s",
                settings.endpoint, _one_line(cause, 80), found.path,
            )
        if found.fallback:
            logger.warning(
                "%s was last resolved to a commit whose conversion is gone; using the one of "
                "commit %s, where huggingface_hub's refs point", where, (found.commit or "?")[:8],
            )
        return found.path
    if found.damaged is not None:
        state = "the Hub is offline (HF_HUB_OFFLINE=1)" if offline else "the Hub is unreachable"
        raise HubError(
            f"the cached conversion of {where} at {found.damaged} is damaged ({found.reason}) "
            f"and {state}: run `mlx-inception download {target.source}` with the network on "
            "to convert it again"
        )
    if isinstance(why, HubError):
        raise why
    raise hub_error(
        why, repo_id=target.repo_id, endpoint=settings.endpoint, revision=target.revision
    ) from None


def _resolve_listed(
    target: Target,
    cache: RepoCache,
    commit: str,
    files: dict[str, Any],
    fetcher: _Fetcher,
    allow_pickle: bool,
) -> tuple[Path, str]:
    """Return the weights directory for ``target`` at ``commit`` and the file it came from."""
    settings = fetcher.settings
    foreign_config = None
    if target.filename is None and "config.json" in files:
        config_path = fetcher.fetch("config.json")
        data = _read_json(config_path)
        if _is_project_config(data):
            if store.WEIGHTS_FILE not in files:
                raise HubError(
                    f"{target.repo_id} has an mlx-inception config.json but no "
                    f"{store.WEIGHTS_FILE}: push the whole weights directory"
                )
            weights_path = fetcher.fetch(store.WEIGHTS_FILE)
            logger.info("%s is in mlx-inception format: using it as is", target.repo_id)
            return weights_path.parent, store.WEIGHTS_FILE
        foreign_config = data

    filename = target.filename or choose_weights_file(files, allow_pickle, target.repo_id)
    if filename not in files:
        raise hub_error(
            EntryNotFoundError(filename),
            repo_id=target.repo_id,
            endpoint=settings.endpoint,
            revision=target.revision,
            filename=filename,
        )
    if filename.endswith(convert.PICKLE_SUFFIXES) and not allow_pickle:
        raise HubError(
            f"{target.repo_id}/{filename} is a pickle, which can run code when loaded: pass "
            "--allow-pickle (allow_pickle=True) if you trust it"
        )
    config = base_config(target.entry, foreign_config)
    lfs = getattr(files[filename], "lfs", None)
    announced = getattr(lfs, "sha256", None)
    if announced and target.pinned_sha256 and announced.lower() != target.pinned_sha256:
        raise HubError(
            f"{target.repo_id}/{filename} at {target.revision} is not the registered file "
            f"(Hub SHA-256 {announced[:16]}..., registry {target.pinned_sha256[:16]}...): "
            "the repo changed; load it by repo id to accept the new file"
        )
    sha256 = (announced or "").lower() or None
    source_path = None
    if sha256 is None:  # no hash in the listing: the file itself says which conversion it is
        source_path = fetcher.fetch(filename)
        sha256, _ = file_digests(source_path)
    entry = cache.entry_dir(sha256, config)
    present = entry.is_dir()
    reason = _damage(entry) if present else None
    if reason is not None:
        logger.warning("the cached conversion %s is damaged (%s); converting it again",
                       entry, reason)
    if not present or reason is not None:
        source_path = source_path or fetcher.fetch(filename)
        source_info = {
            **(target.entry.source_info() if target.entry else {"repo_id": target.repo_id}),
            "revision": target.revision,
            "commit": commit,
            "file": filename,
            "sha256": sha256,
        }
        _convert_into(cache, source_path, entry, config, source_info)
    cache.record(commit, entry, filename, sha256, target.revision)
    cache.link_snapshot(commit, filename, sha256)
    return entry, filename


def _convert_into(
    cache: RepoCache,
    source_path: Path,
    entry: Path,
    config: InceptionV3Config,
    source_info: dict[str, Any],
) -> Path:
    """Convert a downloaded checkpoint into ``entry``, atomically; return ``entry``."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    cache.clean_stale_partials()
    partial = entry.parent / f".partial-{entry.name}-{uuid.uuid4().hex[:8]}"
    logger.info("converting %s (%s) to MLX; cached at %s", source_info["repo_id"],
                source_info["file"], entry)
    try:
        try:
            state = convert.read_state_dict(source_path)
            conversion = convert.convert_state_dict(state, config)
        except CheckpointError as error:
            raise CheckpointError(
                f"{source_info['repo_id']}/{source_info['file']}: {error}"
            ) from None
        conversion.config.source = dict(source_info)
        store.save_weights(partial, conversion.weights, conversion.config)
        _install(partial, entry)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    for note in conversion.notes:
        logger.info("note: %s", note)
    return entry


def _install(partial: Path, entry: Path, attempts: int = 3) -> None:
    """Rename the finished conversion ``partial`` to ``entry``, setting a damaged one aside.

    ``os.replace`` never replaces a folder that has files in it (on Windows, any folder), so a
    damaged entry is first renamed aside under a hidden name, atomically, then deleted. A
    concurrent process doing the same can only make one rename fail; an intact entry found in
    the way is another process's finished copy of the same conversion, and is kept.
    """
    for _ in range(attempts):
        try:
            os.replace(partial, entry)
            return
        except OSError as error:
            failure = error
        if entry.is_dir() and _damage(entry) is None:
            shutil.rmtree(partial, ignore_errors=True)
            return
        aside = entry.parent / f".damaged-{entry.name}-{uuid.uuid4().hex[:8]}"
        try:
            os.replace(entry, aside)
        except FileNotFoundError:
            continue  # already set aside by another process
        except OSError:
            break  # e.g. a file in it is open elsewhere (Windows)
        shutil.rmtree(aside, ignore_errors=True)
    raise CheckpointError(
        f"cannot put the conversion in place at {entry} ({_one_line(failure, 100)}): delete "
        "that folder and try again"
    )


# --------------------------------------------------------------------------------------------
# Push


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
    """Upload a weights directory to a Hub model repo with a generated model card; return where.

    ``directory`` may also be a training run (``RUN_DIR``: its best, else its last) or its
    ``best``/``last``; a checkpoint's training state (raw weights, optimizer, moving average)
    stays here: only the evaluated weights, config.json and other files are uploaded. The repo
    is created if needed (``private`` applies only then) and so is the branch ``revision``.
    The card (README.md) describes the architecture, source weights, preprocessing, labels,
    accuracy and licence, unless the directory has its own README.md.
    """
    from ..loading import resolve_local
    from ..training.checkpoint import TRAINER_STATE, TRAINING_STATE
    from .model_card import render_model_card

    if not is_repo_id(repo_id):
        raise HubError(f"{repo_id!r} is not a Hub repo id: use owner/name")
    named = directory
    directory = resolve_local(directory)  # a run's best/last, or the run directory itself
    if directory is None:
        raise CheckpointError(f"{named} does not exist: pass a weights directory")
    if not directory.is_dir():
        if directory.suffix.lower() in convert.PICKLE_SUFFIXES + convert.SAFETENSORS_SUFFIXES:
            raise CheckpointError(
                f"{directory} is a checkpoint file, not a weights directory: "
                "`mlx-inception convert` it first"
            )
        raise CheckpointError(
            f"{directory} is a file, not a weights directory ({store.CONFIG_FILE} + "
            f"{store.WEIGHTS_FILE}): pass the folder to upload"
        )
    weights, config = store.load_weights(directory)  # raises CheckpointError if incomplete
    convert.check_weights(weights, config)
    settings = hub_settings(token=token, endpoint=endpoint)
    branch = revision or "main"
    if settings.offline:
        raise hub_error(OfflineModeIsEnabled(), repo_id=repo_id, endpoint=settings.endpoint,
                        revision=branch, writing=True)
    api = HfApi(endpoint=settings.endpoint, token=settings.token)

    def fail(error: BaseException) -> HubError:
        return hub_error(
            error, repo_id=repo_id, endpoint=settings.endpoint, revision=branch, writing=True
        )

    with tempfile.TemporaryDirectory(prefix="mlx-inception-push-") as staging_name:
        staging = Path(staging_name)
        for name in sorted(os.listdir(directory)):
            path = directory / name
            if name.startswith(".") or not path.is_file():
                continue  # partial files of an interrupted save, editor files
            if name in (TRAINING_STATE, TRAINER_STATE):
                continue  # a training checkpoint's optimizer state stays on this machine
            _link_or_copy(path, staging / name)
        if not (staging / "README.md").exists():
            card = render_model_card(config, weights, repo_id, license=license)
            (staging / "README.md").write_text(card, encoding="utf-8")
        logger.info("uploading %s to %s ...", directory, repo_id)
        try:
            repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
            if branch != "main":
                api.create_branch(repo_id, branch=branch, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=staging,
                revision=branch,
                commit_message=commit_message
                or f"Upload Inception-v3 weights from {directory.resolve().name}",
            )
        except Exception as error:
            raise fail(error) from None
    return PushResult(
        repo_id=repo_id,
        repo_url=str(repo_url),
        revision=branch,
        commit=str(info.oid),
        commit_url=str(info.commit_url),
    )


def _link_or_copy(source: Path, destination: Path) -> None:
    try:
        os.symlink(source.resolve(), destination)
    except OSError:  # no symlinks (some Windows setups)
        shutil.copyfile(source, destination)


__all__ = [
    "HubSettings",
    "PushResult",
    "RepoCache",
    "Target",
    "base_config",
    "cached_path",
    "choose_weights_file",
    "config_from_timm",
    "file_digests",
    "hub_error",
    "hub_settings",
    "is_repo_id",
    "parse_source",
    "push",
    "resolve",
]
