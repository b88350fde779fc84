"""Image bytes on their way into a store: hashed, inspected and size-checked as they pass.

``DataSink`` takes the chunks of one upload in order (an HTTP body, a staged
file, a web download) and never holds more than a few blocks: chunks gather
into blocks of about ``BLOCK`` bytes, and each block goes to three worker
threads at once, MD5, SHA-512 and the store's writer, so hashing and writing
overlap each other and the network (hashlib and file writes release the
GIL). A block is the list of the chunks as they came, not a joined copy:
the hashers feed them to hashlib one by one and the writer hands them to one
``writev``; only a block of many small chunks (more than ``MAX_PIECES``) is
joined first, so a worker never makes more than that many calls per block.
At most ``IN_FLIGHT`` blocks wait for the workers; past that the sink stops
taking chunks (back-pressure reaches the client through the socket).
``SizeLimit`` refuses the chunk that crosses the per-upload cap or the
project's quota, and ``formats.Inspector`` the first chunks if they are not
the declared format; both fail fast, mid-stream.

``consume`` returns a ``Received`` only after the store committed the data;
on any failure (a refused chunk, a broken connection, a cancelled task, a
worker that raised) the writer is aborted and nothing is left in the store.
Status changes are the caller's (``service.py``); this module knows nothing
about the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import deque
from collections.abc import AsyncIterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from tinystack.common.errors import TooLarge
from tinystack.image.formats import Inspector
from tinystack.image.stores import StoreWriter

__all__ = ["DataSink", "Received", "SizeLimit", "BLOCK", "IN_FLIGHT", "MAX_PIECES"]

BLOCK = 4 * 1024 * 1024
IN_FLIGHT = 3
MAX_PIECES = 64
"""Chunks per block above which they are joined: under 64 KiB each on average."""


@dataclass(frozen=True)
class Received:
    """What a finished upload stored: ``location`` in the store, size and hashes."""

    location: str
    size: int
    checksum: str
    os_hash_value: str
    detected_format: str | None


@dataclass(frozen=True)
class SizeLimit:
    """The per-upload cap, and the project's quota (0 = none) with what it already keeps."""

    cap: int
    quota: int = 0
    used: int = 0

    def check(self, size: int) -> None:
        if size > self.cap:
            raise TooLarge(f"The incoming image is too large: it exceeds the image size cap "
                           f"of {self.cap} bytes.")
        if self.quota and self.used + size > self.quota:
            raise TooLarge(
                "Denying attempt to upload image because it exceeds the quota: The size of "
                f"the data {size} will exceed the limit. {max(self.quota - self.used, 0)} "
                "bytes remaining.")


def _hash_all(hasher, chunks: list[bytes]) -> None:
    for chunk in chunks:
        hasher.update(chunk)


class DataSink:
    """One upload's way into a store writer. Use ``consume`` (or ``feed`` + ``close``)."""

    def __init__(self, writer: StoreWriter, inspector: Inspector, limit: SizeLimit):
        self.writer = writer
        self.inspector = inspector
        self.limit = limit
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha512 = hashlib.sha512()
        self._workers = [ThreadPoolExecutor(1, thread_name_prefix=f"image-{name}")
                         for name in ("md5", "sha512", "write")]
        self._gathered: list[bytes] = []
        self._gathered_size = 0
        self._in_flight: deque[list[Future]] = deque()
        self._closed = False

    async def consume(self, chunks: AsyncIterable[bytes]) -> Received:
        """Take every chunk, then commit; aborts the writer on any failure."""
        try:
            async for chunk in chunks:
                await self.feed(chunk)
            return await self.close()
        except BaseException:
            await self.abort()
            raise
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    async def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if type(chunk) is not bytes:
            chunk = bytes(chunk)  # kept until the workers are done: must not change meanwhile
        self.size += len(chunk)
        self.limit.check(self.size)
        self.inspector.feed(chunk)
        self._gathered.append(chunk)
        self._gathered_size += len(chunk)
        if self._gathered_size >= BLOCK:
            await self._dispatch()

    async def _dispatch(self) -> None:
        # Each worker gets one call per block (one thread hand-over), and works through the
        # chunks itself: no copy of the block, unless it is made of many small chunks.
        chunks = self._gathered
        if len(chunks) > MAX_PIECES:
            chunks = [b"".join(chunks)]
        self._gathered, self._gathered_size = [], 0
        md5, sha512, write = self._workers
        self._in_flight.append([md5.submit(_hash_all, self._md5, chunks),
                                sha512.submit(_hash_all, self._sha512, chunks),
                                write.submit(self.writer.write, chunks)])
        while len(self._in_flight) > IN_FLIGHT:
            await self._settle_oldest()

    async def _settle_oldest(self) -> None:
        futures = self._in_flight.popleft()
        results = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def close(self) -> Received:
        self.inspector.finish()
        if self._gathered:
            await self._dispatch()
        while self._in_flight:
            await self._settle_oldest()
        location = await asyncio.to_thread(self.writer.commit)
        self._shutdown()
        return Received(location=location, size=self.size, checksum=self._md5.hexdigest(),
                        os_hash_value=self._sha512.hexdigest(),
                        detected_format=self.inspector.detected)

    async def abort(self) -> None:
        """Wait for the workers to stop touching the writer, then abort it."""
        if self._closed:
            return
        pending = [f for futures in self._in_flight for f in futures]
        self._in_flight.clear()
        for future in pending:
            future.cancel()
        # Runs to the end in its thread even if this task is cancelled again.
        await asyncio.to_thread(self._finish_abort, pending)

    def _finish_abort(self, pending: list[Future]) -> None:
        for future in pending:
            if not future.cancelled():
                future.exception()  # waits for it; its failure, if any, was reported
        self.writer.abort()
        self._shutdown()

    def _shutdown(self) -> None:
        self._closed = True
        for worker in self._workers:
            worker.shutdown(wait=False)
