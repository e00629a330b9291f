"""Atomic file writes: a file is either its old self or completely new, never half-written.

Also the checks that go with them: whether a destination can be written at all (asked before
expensive work, so a bad path fails at once and names the user's path, not a temporary one),
and staging folders that get the usual permissions once renamed into place.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .errors import InceptionError

# mkstemp/mkdtemp create files and folders for their owner only; what is renamed into place gets
# the usual permissions (0o666 / 0o777 less the umask). The umask is read once, here: reading it
# means setting it, which would race with other threads creating files.
_UMASK = os.umask(0)
os.umask(_UMASK)


def _nearest_existing(path: Path) -> Path:
    """Return ``path`` or the closest folder above it that exists (or is a link)."""
    while not (path.exists() or path.is_symlink()) and path != path.parent:
        path = path.parent
    return path


def _probe(folder: Path) -> None:
    """Create and delete a hidden file in ``folder``; raise OSError when that is impossible."""
    handle, name = tempfile.mkstemp(prefix=".write-test-", dir=folder)
    os.close(handle)
    os.unlink(name)


def check_destination(
    path: str | os.PathLike, error_type: type[InceptionError] = InceptionError
) -> Path:
    """Return ``path`` when a file or folder can be written there; else raise one line why not.

    Run before expensive work. The folder ``path`` goes in (or the closest existing folder
    above it, as missing folders are created) must be a folder where files can be created: a
    hidden file is created there and deleted at once. An existing folder at ``path`` itself is
    checked the same way, since its files get replaced. Nothing else is created.
    """
    path = Path(os.path.expanduser(os.fspath(path)))
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        raise error_type(f"cannot write {path}: {parent} is a file, not a folder")
    for folder in (parent, path) if path.is_dir() else (parent,):
        try:
            _probe(folder)
        except OSError as error:
            raise error_type(
                f"cannot write {path}: cannot create files in {folder} "
                f"({error.strerror or error})"
            ) from None
    return path


def explain_write_error(
    path: str | os.PathLike,
    error: OSError,
    error_type: type[InceptionError] = InceptionError,
) -> BaseException:
    """Return the error to raise when setting up a write to ``path`` failed with ``error``.

    The raw error names a temporary file, or says "File exists" about a file in the way; the
    one returned names ``path`` and the real reason (``check_destination``'s message), or is
    ``error`` again with ``path`` as its file name.
    """
    try:
        check_destination(path, error_type)
    except InceptionError as explained:
        return explained
    return type(error)(error.errno, error.strerror, os.fspath(path))


def make_staging_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """Return a new empty folder in ``parent`` (created if needed), to be renamed into place.

    Unlike ``tempfile.mkdtemp``'s owner-only folder, it has the usual permissions
    (0o777 less the umask), so the folder it becomes is readable by whoever may read its
    neighbours (a shared weights folder or Hugging Face cache). Raises OSError naming ``parent``
    (never the temporary name); ``explain_write_error`` turns it into the reason.
    """
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        # The process id in the name tells remove_stale_staging whose folder it is.
        folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
    except OSError as error:
        raise type(error)(error.errno, error.strerror, str(parent)) from None
    try:
        os.chmod(folder, 0o777 & ~_UMASK)
    except BaseException:
        folder.rmdir()
        raise
    return folder


# When this process started, near enough: staging folders last changed before it are not its own.
_PROCESS_START = time.time()


def remove_stale_staging(
    parent: str | os.PathLike, prefix: str, marker: str | None = None
) -> list[Path]:
    """Delete the staging folders a killed writer left in ``parent``; return them.

    Only folders named as ``make_staging_dir(parent, prefix)`` names them (``prefix``, an
    optional process id, then mkdtemp's 8 characters) count, and only those last changed before
    this process started whose process (when named) is no longer running on this machine: a
    writer still at work keeps its folder. A name without a process id (from versions before
    ids were added) counts only when the folder is empty or holds ``marker``. Links and other
    names are never touched.
    """
    pattern = re.compile(re.escape(prefix) + r"(?:(\d+)-)?[a-z0-9_]{8}")
    removed = []
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            if entry.stat().st_mtime >= _PROCESS_START:
                continue
        except OSError:
            continue
        if match.group(1) is not None and _process_is_running(int(match.group(1))):
            continue
        if match.group(1) is None and marker is not None and not (
            (entry / marker).exists() or not any(entry.iterdir())
        ):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _process_is_running(pid: int) -> bool:
    if pid == os.getpid():  # an earlier process that had this id: ours are never this old
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # another user's live process (or an absurd number: not running)
    return True


def exchange_paths(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    """Swap two existing paths in one atomic step; return False where that is unsupported.

    ``renameat2(RENAME_EXCHANGE)`` on Linux, ``renamex_np(RENAME_SWAP)`` on macOS. False (nothing
    changed) on other systems and file systems without it; the caller falls back then.
    """
    libc = _libc()
    if libc is None:
        return False
    first, second = os.fsencode(first), os.fsencode(second)
    if sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        result = libc.renamex_np(first, second, ctypes.c_uint(0x2))  # RENAME_SWAP
    elif sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        at_cwd = -100
        result = libc.renameat2(at_cwd, first, at_cwd, second, ctypes.c_uint(2))  # EXCHANGE
    else:
        return False
    return result == 0


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary_path)``, fsync the result, rename it to ``path``; return ``path``.

    The temporary file sits beside ``path`` (same file system, so the rename is atomic) and keeps
    its suffix, for writers that choose a format by it. On any failure it is removed and the old
    file, if any, is left as it was. When the file cannot be created at all, the error names
    ``path`` and why (a file where a folder should be, a folder without write permission).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix,
                                             dir=path.parent)
    except OSError as error:
        raise explain_write_error(path, error) from None
    os.close(handle)
    try:
        write(Path(temporary))
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.chmod(temporary, 0o666 & ~_UMASK)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return ``path``."""
    return write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


