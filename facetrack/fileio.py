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
import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + os.replace)."""
    path = Path(path)
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


def write_disposable(path: Path, data: bytes) -> None:
    """Write a generated, re-creatable file directly: no temporary file, no fsync.

    For the many augmented copies, where the atomic write's file creation and
    fsync cost more than making the image. Safe only when a file written
    atomically afterwards (a marker listing each file's size) vouches for it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    """Read a UTF-8 JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block.

    Works across processes (``fcntl.flock``) and across threads of one process
    (a per-path ``threading.Lock``, because flock locks belong to the open file
    description and two threads opening the file separately would still
    exclude each other, but we keep the thread lock to be explicit and cheap).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    with _thread_locks_guard:
        tlock = _thread_locks.setdefault(key, threading.Lock())
    with tlock, open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
