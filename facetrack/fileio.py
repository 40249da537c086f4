"""Atomic file writes and cross-process locks.

Every file FaceTrack writes goes through :func:`atomic_write_bytes` (write a
temporary file in the same folder, flush it to disk, then ``os.replace``), so a
reader never sees a half-written file and a crash leaves either the old or the
new version. The exception is :func:`write_disposable`, for generated files
that an atomically written marker vouches for (augmented copies). :func:`file_lock` serialises read-modify-write cycles between
threads and processes (two browser tabs, the app and the command line).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import stat
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def atomic_write_bytes(path: Path, data: bytes, parents: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + os.replace).

    ``parents=False``: the folder must exist (``FileNotFoundError`` otherwise),
    so that a job never re-creates a folder that was deleted under it.
    """
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_status_json(path: Path, obj: Any) -> None:
    """Write a small status file atomically, or in place when the disk is full.

    A full disk refuses the temporary file of an atomic write; truncating and
    rewriting the existing file reuses its blocks, so a job can still say it
    failed (and why) instead of leaving a stale "running" behind.
    """
    data = (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    try:
        atomic_write_bytes(path, data, parents=False)  # a job's status: never re-create a deleted folder
    except OSError as exc:
        if not is_disk_full(exc) or not Path(path).is_file():
            raise
        with open(path, "r+b") as fh:
            fh.truncate(0)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def preallocate(fd: int, size: int, path: Path) -> None:
    """Reserve ``size`` bytes on disk for the open file ``fd`` (of ``path``).

    A memory-mapped file that the disk cannot back kills the process with
    SIGBUS on the first write to a page; reserving the blocks first turns a
    full disk into :class:`DiskFull` here instead.
    """
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(Path(path).parent, exc) from exc
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without fallocate: go on
            raise


def write_disposable(path: Path, data: bytes) -> None:
    """Write a generated, re-creatable file directly: no temporary file, no fsync.

    For the many augmented copies, where the atomic write's file creation and
    fsync cost more than making the image. Safe only when a file written
    atomically afterwards (a marker listing each file's size) vouches for it.
    """
    path = Path(path)
    path.parent.mkdir(exist_ok=True)  # one level: never re-creates a deleted project above it
    with open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str, parents: bool = True) -> None:
    """Write UTF-8 text atomically (``parents``: as :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"), parents)


def atomic_write_json(path: Path, obj: Any, parents: bool = True) -> None:
    """Write ``obj`` as indented UTF-8 JSON atomically (``parents``: as :func:`atomic_write_bytes`)."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n", parents)


def read_json(path: Path) -> Any:
    """Read a UTF-8 JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


class FileTooLarge(ValueError):
    """A file over the size FaceTrack reads, or not a regular file; the message says which."""


def read_capped(path: Path, max_bytes: int) -> bytes:
    """Read a regular file of at most ``max_bytes`` bytes.

    Refuses (:class:`FileTooLarge`) a device, a pipe or a folder (``/dev/zero``
    would otherwise be read until memory runs out) and a file over the cap,
    before reading it. At most ``max_bytes + 1`` bytes are ever read, so a
    file that grows while it is read is refused too. ``OSError`` (missing,
    unreadable) passes through.
    """
    path = Path(path)
    # O_NONBLOCK: opening a named pipe must not wait for a writer (regular files ignore it)
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise FileTooLarge(f"{path.name}: not a regular file")
        if info.st_size > max_bytes:
            raise FileTooLarge(f"{path.name}: {_mb(info.st_size)} is over the limit of {_mb(max_bytes)}")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileTooLarge(f"{path.name}: over the limit of {_mb(max_bytes)}")
    return data


def check_zip_sizes(path: Path, caps: dict[str, int], total: int) -> None:
    """Refuse a zip whose members would unpack beyond ``caps`` (by member name) or ``total`` bytes.

    Uses the sizes the zip declares; ``zipfile`` never reads a member past its
    declared size, so this bounds what a later reader of the zip unpacks.
    Raises :class:`FileTooLarge` (or ``zipfile.BadZipFile``).
    """
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    for info in infos:
        cap = caps.get(info.filename)
        if cap is not None and info.file_size > cap:
            raise FileTooLarge(
                f"its {info.filename} unpacks to {_mb(info.file_size)} (the limit is {_mb(cap)})"
            )
    size = sum(info.file_size for info in infos)
    if size > total:
        raise FileTooLarge(f"it unpacks to {_mb(size)} (the limit is {_mb(total)})")


def _mb(n: int) -> str:
    """A byte count in words: "3.2 GB", "12 MB", "40 KB", "7 bytes"."""
    if n >= 2**30:
        return f"{n / 2**30:.1f} GB"
    if n >= 2**20:
        return f"{n / 2**20:.0f} MB"
    return f"{n / 2**10:.0f} KB" if n >= 2**10 else f"{n} bytes"


# -- free space ---------------------------------------------------------------------

DISK_FULL_MESSAGE = "the disk is full"


class DiskFull(OSError):
    """Not enough free space for the work asked; ``str()`` starts with "the disk is full"."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


def is_disk_full(exc: BaseException) -> bool:
    """True for an ``OSError`` that says no space is left (ENOSPC, EDQUOT) or a :class:`DiskFull`."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(folder: Path, exc: BaseException | None = None) -> DiskFull:
    """The one-line :class:`DiskFull` for a write into ``folder`` that ran out of space."""
    where = Path(folder)
    detail = f" ({exc.strerror or exc})" if isinstance(exc, OSError) else ""
    return DiskFull(f"{DISK_FULL_MESSAGE}: no space left for {where}{detail}; free some space and try again")


def ensure_free_space(folder: Path, needed_bytes: int, what: str) -> None:
    """Raise :class:`DiskFull` when the file system of ``folder`` has less than ``needed_bytes`` free.

    ``folder`` may not exist yet (its nearest existing parent is checked).
    ``what`` names the work in the message ("augmentation", "training").
    """
    probe = Path(folder).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise DiskFull(
            f"{DISK_FULL_MESSAGE}: {what} needs about {_mb(needed_bytes)} in {probe} and only "
            f"{_mb(free)} is free; free some space and try again"
        )


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block.

    Works across processes (``fcntl.flock``) and across threads of one process
    (a per-path ``threading.Lock``, because flock locks belong to the open file
    description and two threads opening the file separately would still
    exclude each other, but we keep the thread lock to be explicit and cheap).
    """
    path = Path(path)  # its folder must exist: a lock never re-creates a deleted project
    key = str(path.resolve())
    with _thread_locks_guard:
        tlock = _thread_locks.setdefault(key, threading.Lock())
    with tlock, open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
