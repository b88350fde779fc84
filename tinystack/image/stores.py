"""Where image data lives: the ``Store`` interface and the file store behind it.

A store keeps one blob per image and knows it only by the *location* it
returned when the blob was committed (``file:///...`` for ``FileStore``).
Writing goes through a ``StoreWriter``: ``write`` blocks in order, then
``commit`` (durable, returns the location) or ``abort`` (nothing is left
behind). Reading is ``read_blocks`` over a byte range. Every method blocks:
callers run them in worker threads (``transfer.py``, ``api_data.py``).

``FileStore`` writes ``<root>/.partial/<image_id>.<random>`` and renames it to
``<root>/<image_id>`` after an fsync, so a crash mid-upload leaves only a
partial file, which ``remove_partials`` clears on the next start. The object
storage service will plug in as a second implementation of ``Store``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

__all__ = ["Store", "StoreWriter", "FileStore", "StoreError"]

log = logging.getLogger(__name__)

READ_BLOCK = 1024 * 1024
SYNC_EVERY = 64 * 1024 * 1024


class StoreError(Exception):
    """A location this store cannot read (not its own, or its data is gone)."""


class StoreWriter(Protocol):
    def write(self, blocks: Iterable[bytes]) -> None:
        """Append ``blocks`` in order."""

    def commit(self) -> str:
        """Make the data durable and visible; its location."""

    def abort(self) -> None:
        """Forget everything written; safe to call more than once."""


class Store(Protocol):
    store_id: str
    description: str
    kind: str

    def open_writer(self, image_id: str) -> StoreWriter: ...

    def read_blocks(self, location: str, offset: int = 0, length: int | None = None,
                    block_size: int = READ_BLOCK) -> Iterator[bytes]:
        """The bytes ``[offset, offset+length)`` in blocks; ``StoreError`` if gone."""

    def delete(self, location: str) -> None:
        """Remove the blob; no error if it is already gone."""

    def local_path(self, location: str) -> Path | None:
        """A path on this machine holding the data, for qemu-img; None if there is none."""


class _FileWriter:
    """Writes one partial file and flushes it to disk every ``SYNC_EVERY`` bytes as it goes,
    as Swift's object server does (``bytes_per_sync``), so the final fsync is short.

    The flush runs in a thread of its own (one at a time): ``write`` only starts it, so the
    writes go on while the disk takes the previous 64 MiB, instead of stalling the upload
    for a few tens of milliseconds every 64 MiB. ``commit`` and ``abort`` wait for it.
    """

    def __init__(self, final: Path, partial: Path):
        self.final, self.partial = final, partial
        self._fd: int | None = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        self._unsynced = 0
        self._flusher: ThreadPoolExecutor | None = None
        self._flushing: Future | None = None

    def write(self, blocks: Iterable[bytes]) -> None:
        assert self._fd is not None, "write after commit or abort"
        pending = [memoryview(b) for b in blocks if b]
        while pending:
            written = os.writev(self._fd, pending[:1024])
            self._unsynced += written
            while written and pending:
                if written >= len(pending[0]):
                    written -= len(pending.pop(0))
                else:
                    pending[0] = pending[0][written:]
                    written = 0
        if self._unsynced >= SYNC_EVERY and (self._flushing is None or self._flushing.done()):
            if self._flushing is not None:
                self._flushing.result()  # a failed flush fails the upload
            if self._flusher is None:
                self._flusher = ThreadPoolExecutor(1, thread_name_prefix="image-flush")
            self._flushing = self._flusher.submit(os.fdatasync, self._fd)
            self._unsynced = 0

    def _stop_flushing(self) -> None:
        """Wait for the flush in progress (its error, if any, is raised) and end the thread."""
        flushing, self._flushing = self._flushing, None
        try:
            if flushing is not None:
                flushing.result()
        finally:
            if self._flusher is not None:
                self._flusher.shutdown(wait=True)
                self._flusher = None

    def commit(self) -> str:
        assert self._fd is not None, "commit after commit or abort"
        self._stop_flushing()
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.partial, self.final)
        _fsync_dir(self.final.parent)
        return self.final.as_uri()

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._stop_flushing()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        self.partial.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore:
    """Image data as files in one directory, named by image id."""

    kind = "file"

    def __init__(self, root: Path, store_id: str = "file",
                 description: str = "Image data on the controller's local disk"):
        self.root = root
        self.store_id = store_id
        self.description = description
        self.partial_dir = root / ".partial"

    def setup(self) -> None:
        self.partial_dir.mkdir(parents=True, exist_ok=True)

    def open_writer(self, image_id: str) -> _FileWriter:
        _check_id(image_id)
        self.setup()
        partial = self.partial_dir / f"{image_id}.{secrets.token_hex(4)}"
        return _FileWriter(self.root / image_id, partial)

    def path_of(self, location: str) -> Path:
        parts = urlsplit(location)
        path = Path(unquote(parts.path))
        if parts.scheme != "file" or path.parent != self.root:
            raise StoreError(f"{location} is not a location of store {self.store_id}")
        return path

    def read_blocks(self, location: str, offset: int = 0, length: int | None = None,
                    block_size: int = READ_BLOCK) -> Iterator[bytes]:
        try:
            handle = open(self.path_of(location), "rb", buffering=0)
        except FileNotFoundError:
            raise StoreError(f"the data at {location} is gone") from None
        with handle:
            handle.seek(offset)
            left = length
            while left is None or left > 0:
                block = handle.read(block_size if left is None else min(block_size, left))
                if not block:
                    return
                if left is not None:
                    left -= len(block)
                yield block

    def delete(self, location: str) -> None:
        self.path_of(location).unlink(missing_ok=True)

    def local_path(self, location: str) -> Path | None:
        return self.path_of(location)

    def remove_partials(self) -> int:
        """Delete what interrupted writes left behind; how many files."""
        removed = 0
        if self.partial_dir.is_dir():
            for path in self.partial_dir.iterdir():
                if _is_id(path.name.split(".", 1)[0]):
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    def stored_ids(self) -> set[str]:
        """Image ids that have a committed file here."""
        if not self.root.is_dir():
            return set()
        return {p.name for p in self.root.iterdir() if p.is_file() and _is_id(p.name)}

    def statistics(self) -> dict:
        ids = self.stored_ids()
        return {"images": len(ids),
                "bytes": sum((self.root / i).stat().st_size for i in ids)}


_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _is_id(name: str) -> bool:
    return _ID.match(name) is not None


def _check_id(image_id: str) -> None:
    if not _is_id(image_id):
        raise ValueError(f"{image_id!r} is not an image id")
