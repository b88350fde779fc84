"""The upload pipeline (``image/transfer.py``) and the file store's writer, without a cloud.

Every way an upload can end badly (a hashing thread that raises, a write or
a flush that fails, a client gone mid-stream, a cancelled task, a refused
size) must leave nothing in the store; a good one must store exactly the
bytes it hashed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import pytest

from tinystack.common.errors import TooLarge
from tinystack.image import stores, transfer
from tinystack.image.formats import Inspector
from tinystack.image.stores import FileStore
from tinystack.image.transfer import DataSink, SizeLimit

IMAGE_ID = "0b7f4c4e-2a35-4a43-9d57-2f6e1d6c0a11"


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    store = FileStore(tmp_path / "store")
    store.setup()
    return store


def leftovers(store: FileStore) -> list[str]:
    """Everything in the store: committed files and partial ones."""
    return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())


def sink(store: FileStore, cap: int = 1 << 40) -> DataSink:
    return DataSink(store.open_writer(IMAGE_ID), Inspector("raw", "bare"), SizeLimit(cap))


async def chunks_of(pieces, fail_after: int | None = None, error: BaseException | None = None):
    for number, piece in enumerate(pieces):
        if fail_after is not None and number == fail_after:
            raise error or ConnectionResetError("the client went away")
        yield piece
        await asyncio.sleep(0)


def pieces_for(size: int, chunk: int) -> list[bytes]:
    data = os.urandom(size)
    return [data[i:i + chunk] for i in range(0, size, chunk)]


@pytest.mark.parametrize("chunk", [1000, 64 * 1024, 256 * 1024, 3 * 1024 * 1024 + 7])
async def test_stores_and_hashes_exactly_the_bytes_given(store, chunk):
    pieces = pieces_for(3 * transfer.BLOCK + 12345, chunk)
    data = b"".join(pieces)

    received = await sink(store).consume(chunks_of(pieces))

    assert received.size == len(data)
    assert received.checksum == hashlib.md5(data).hexdigest()
    assert received.os_hash_value == hashlib.sha512(data).hexdigest()
    assert store.path_of(received.location).read_bytes() == data
    assert leftovers(store) == [IMAGE_ID]


async def test_chunks_that_are_not_bytes_are_copied_before_they_change(store):
    buffer = bytearray(1000)

    async def reused():
        for letter in b"abc":
            buffer[:] = bytes([letter]) * 1000
            yield memoryview(buffer)

    received = await sink(store).consume(reused())

    data = b"a" * 1000 + b"b" * 1000 + b"c" * 1000
    assert store.path_of(received.location).read_bytes() == data
    assert received.checksum == hashlib.md5(data).hexdigest()


async def test_a_hashing_thread_that_raises_leaves_nothing(store, monkeypatch):
    calls = []
    real = transfer._hash_all

    def failing(hasher, chunks):
        calls.append(hasher.name)
        if len(calls) == 3:
            raise MemoryError("no memory for the hasher")
        real(hasher, chunks)

    monkeypatch.setattr(transfer, "_hash_all", failing)

    with pytest.raises(MemoryError):
        await sink(store).consume(chunks_of(pieces_for(6 * transfer.BLOCK, 256 * 1024)))

    assert leftovers(store) == []


async def test_a_failing_write_leaves_nothing(store, monkeypatch):
    writes = []
    real = os.writev

    def writev(fd, buffers):
        writes.append(fd)
        if len(writes) == 2:
            raise OSError(28, "No space left on device")
        return real(fd, buffers)

    monkeypatch.setattr(stores.os, "writev", writev)

    with pytest.raises(OSError, match="No space"):
        await sink(store).consume(chunks_of(pieces_for(5 * transfer.BLOCK, 256 * 1024)))

    assert leftovers(store) == []


@pytest.mark.parametrize("fail_at", ["flush", "final fsync"])
async def test_a_failing_flush_leaves_nothing(store, monkeypatch, fail_at):
    monkeypatch.setattr(stores, "SYNC_EVERY", transfer.BLOCK)
    syncs = []

    def fdatasync(fd):
        syncs.append(fd)
        if fail_at == "flush" and len(syncs) == 2:
            raise OSError(5, "Input/output error")

    def fsync(fd):
        if fail_at == "final fsync":
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(stores.os, "fdatasync", fdatasync)
    monkeypatch.setattr(stores.os, "fsync", fsync)

    with pytest.raises(OSError, match="Input/output"):
        await sink(store).consume(chunks_of(pieces_for(8 * transfer.BLOCK, 256 * 1024)))

    assert leftovers(store) == []
    assert syncs, "the writer flushed as it went"


async def test_flushes_run_beside_the_writes_and_commit_waits_for_them(store, monkeypatch):
    monkeypatch.setattr(stores, "SYNC_EVERY", transfer.BLOCK)
    real = os.fdatasync
    active, done = [], []

    def slow_fdatasync(fd):
        active.append(fd)
        time.sleep(0.05)
        real(fd)
        done.append(fd)

    monkeypatch.setattr(stores.os, "fdatasync", slow_fdatasync)
    pieces = pieces_for(8 * transfer.BLOCK, 1024 * 1024)

    received = await sink(store).consume(chunks_of(pieces))

    assert len(done) == len(active) >= 1
    # one flush at a time: a write never waits for one, so some 64 MiB marks are skipped
    assert len(active) < 8
    assert store.path_of(received.location).read_bytes() == b"".join(pieces)


async def test_a_client_gone_mid_stream_leaves_nothing(store):
    with pytest.raises(ConnectionResetError):
        await sink(store).consume(chunks_of(pieces_for(5 * transfer.BLOCK, 256 * 1024),
                                            fail_after=50))

    assert leftovers(store) == []


async def test_a_cancelled_upload_leaves_nothing(store):
    started = asyncio.Event()

    async def endless():
        block = b"x" * 256 * 1024
        while True:
            started.set()
            yield block
            await asyncio.sleep(0)

    task = asyncio.ensure_future(sink(store).consume(endless()))
    await started.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert leftovers(store) == []


async def test_the_size_cap_stops_midway_and_leaves_nothing(store):
    with pytest.raises(TooLarge):
        await sink(store, cap=2 * transfer.BLOCK).consume(
            chunks_of(pieces_for(4 * transfer.BLOCK, 256 * 1024)))

    assert leftovers(store) == []


def test_writer_abort_after_a_flush_removes_the_partial(store, monkeypatch):
    monkeypatch.setattr(stores, "SYNC_EVERY", 10)
    writer = store.open_writer(IMAGE_ID)
    writer.write([b"0123456789", b"abc"])
    writer.write([b"more"])

    writer.abort()
    writer.abort()

    assert leftovers(store) == []
