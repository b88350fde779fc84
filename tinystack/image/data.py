"""Image data in motion: upload, stage, import (glance-direct, web-download), download.

``ImageData`` drives one transfer at a time per image through its states:
it asks ``service.py`` to move the image (``queued`` -> ``saving``,
``uploading``, ``importing``), streams the bytes through a ``DataSink``
(``transfer.py``) into the store, reads the virtual size with qemu-img, and
asks ``service.py`` to record the result. Whatever fails on the way (a broken
connection, a refused format, a size over the cap, a cancelled task) aborts
the store write and puts the image back to ``queued``: never ``active`` with
a partial file, never an orphan file.

Imports run as background tasks owned here (``stop`` cancels them, which
takes the same failure path). ``recover`` runs at start and cleans up after
a process that died mid-transfer. ``web-download`` fetches only URLs that
Glance's import filters allow (``uri_allowed``), on every redirect too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

import httpx

from tinystack.common.errors import BadRequest, DomainError
from tinystack.common.policy import Credentials
from tinystack.config import ImageSettings
from tinystack.image import formats
from tinystack.image.errors import Gone
from tinystack.image.models import Image
from tinystack.image.service import Authorize, ImageService
from tinystack.image.stores import FileStore, Store
from tinystack.image.transfer import DataSink, Received, SizeLimit

__all__ = ["ImageData", "uri_allowed", "IMPORT_METHODS", "MAX_REDIRECTS"]

log = logging.getLogger(__name__)

IMPORT_METHODS = ("glance-direct", "web-download")
MAX_REDIRECTS = 5
READ_AHEAD = 4 * 1024 * 1024
SEND_PIECE = 1024 * 1024
WEB_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


def uri_allowed(uri: str, conf: ImageSettings) -> bool:
    """Does Glance's import filtering let web-download fetch ``uri``?

    An allowed list, when set, replaces its disallowed twin; a port is only
    checked when the URL names one.
    """
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return False
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()

    def passes(value, allowed, disallowed) -> bool:
        if allowed:
            return value in allowed
        return value not in disallowed

    if not scheme or not passes(scheme, conf.allowed_schemes, conf.disallowed_schemes):
        return False
    if not host or not passes(host, [h.lower() for h in conf.allowed_hosts],
                              [h.lower() for h in conf.disallowed_hosts]):
        return False
    return not port or passes(port, conf.allowed_ports, conf.disallowed_ports)


class ImageData:
    def __init__(self, images: ImageService, store: Store, staging: FileStore,
                 conf: ImageSettings):
        self.images = images
        self.store = store
        self.staging = staging
        self.conf = conf
        self._tasks: set[asyncio.Task] = set()

    # -- upload and stage -------------------------------------------------------

    async def upload(self, creds: Credentials, image_id: str, chunks: AsyncIterable[bytes],
                     authorize: Authorize, content_length: int | None = None) -> Image:
        """``PUT /file``: queued -> saving -> active, or back to queued on any failure."""
        await asyncio.to_thread(self.images.check_quota, creds.project_id)
        image = await asyncio.to_thread(self.images.begin, creds, image_id, "saving", authorize)
        try:
            limit = await asyncio.to_thread(self.images.limit_for, image.owner, image_id)
            if content_length is not None:
                limit.check(content_length)
            received = await self._receive(image, chunks, limit, self.store, inspect=True)
        except BaseException:
            await asyncio.to_thread(self.images.restore, image_id, ("saving",))
            raise
        return await self._finish(image, received, "saving")

    async def stage(self, creds: Credentials, image_id: str, chunks: AsyncIterable[bytes],
                    authorize: Authorize, content_length: int | None = None) -> None:
        """``PUT /stage``: queued -> uploading, the data kept aside for glance-direct."""
        image = await asyncio.to_thread(self.images.begin, creds, image_id, "uploading",
                                        authorize)
        try:
            limit = await asyncio.to_thread(self.images.limit_for, image.owner, image_id)
            if content_length is not None:
                limit.check(content_length)
            received = await self._receive(image, chunks, limit, self.staging, inspect=False)
        except BaseException:
            await asyncio.to_thread(self.images.restore, image_id, ("uploading",))
            raise
        try:
            await asyncio.to_thread(self.images.finish_stage, image_id, received.size)
        except BaseException:
            await asyncio.to_thread(self.staging.delete, received.location)
            raise

    async def _receive(self, image: Image, chunks: AsyncIterable[bytes], limit: SizeLimit,
                       store: Store, inspect: bool) -> Received:
        inspector = formats.Inspector(image.disk_format, image.container_format,
                                      enforce=inspect)
        writer = await asyncio.to_thread(store.open_writer, image.id)
        return await DataSink(writer, inspector, limit).consume(chunks)

    async def _finish(self, image: Image, received: Received, expect: str) -> Image:
        """Record stored data; remove it again if the image cannot take it."""
        try:
            size = await asyncio.to_thread(self._virtual_size, image, received)
            return await asyncio.to_thread(self.images.finish_upload, image.id, received, size,
                                           expect)
        except BaseException as exc:
            await asyncio.to_thread(self.store.delete, received.location)
            if not isinstance(exc, Gone):
                await asyncio.to_thread(self.images.restore, image.id, (expect,),
                                        expect == "importing")
            raise

    def _virtual_size(self, image: Image, received: Received) -> int | None:
        path = self.store.local_path(received.location)
        if path is None:
            return received.size if image.disk_format in ("raw", "iso") else None
        return formats.virtual_size(path, image.disk_format or "", received.size)

    # -- import -------------------------------------------------------------------

    async def start_import(self, creds: Credentials, image_id: str, method: str,
                           uri: str | None, authorize: Authorize) -> None:
        """``POST /import``: check, move to importing, and run the import in the background."""
        await asyncio.to_thread(self.images.check_quota, creds.project_id)

        def check_uri() -> None:
            if method == "web-download" and not (uri and uri_allowed(uri, self.conf)):
                raise BadRequest(f"URI for web-download does not pass filtering: {uri}")

        image = await asyncio.to_thread(self.images.begin_import, creds, image_id, method,
                                        authorize, check_uri)
        if method == "web-download":
            self.spawn(f"web-download of {image_id}", self._web_download(image, uri or ""))
        else:
            self.spawn(f"glance-direct import of {image_id}", self._glance_direct(image))

    async def _import(self, image: Image, fetch: Callable[[], AsyncIterator[bytes]]) -> None:
        try:
            limit = await asyncio.to_thread(self.images.limit_for, image.owner, image.id)
            received = await self._receive(image, fetch(), limit, self.store, inspect=True)
        except BaseException:
            await asyncio.to_thread(self.images.restore, image.id, ("importing",), True)
            raise
        await self._finish(image, received, "importing")

    async def _glance_direct(self, image: Image) -> None:
        staged = self.staging.root / image.id

        async def fetch() -> AsyncIterator[bytes]:
            blocks = self.staging.read_blocks(staged.as_uri())
            while (block := await asyncio.to_thread(next, blocks, None)) is not None:
                yield block

        try:
            await self._import(image, fetch)
        finally:
            await asyncio.to_thread(self.staging.delete, staged.as_uri())

    async def _web_download(self, image: Image, uri: str) -> None:
        async def fetch() -> AsyncIterator[bytes]:
            async with httpx.AsyncClient(timeout=WEB_TIMEOUT, follow_redirects=False) as client:
                response = await self._open_url(client, uri)
                try:
                    async for chunk in response.aiter_raw():
                        yield chunk
                finally:
                    await response.aclose()

        await self._import(image, fetch)

    async def _open_url(self, client: httpx.AsyncClient, uri: str) -> httpx.Response:
        """The streaming response for ``uri``, redirects followed within the filters."""
        for _ in range(MAX_REDIRECTS + 1):
            response = await client.send(client.build_request("GET", uri), stream=True)
            if not response.is_redirect:
                if response.status_code != 200:
                    await response.aclose()
                    raise BadRequest(f"web-download of {uri} failed: HTTP "
                                     f"{response.status_code}")
                return response
            await response.aclose()
            uri = urljoin(uri, response.headers.get("location", ""))
            if not uri_allowed(uri, self.conf):
                raise BadRequest(f"web-download was redirected to {uri}, which does not pass "
                                 "filtering")
        raise BadRequest(f"web-download of {uri}: too many redirects")

    # -- background tasks ------------------------------------------------------------

    def spawn(self, what: str, work) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(work, name=what)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(what, t))
        return task

    def _done(self, what: str, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            log.info("%s: cancelled", what)
        elif isinstance(task.exception(), DomainError):
            log.warning("%s failed: %s", what, task.exception())
        elif task.exception() is not None:
            log.error("%s failed", what, exc_info=task.exception())
        else:
            log.info("%s: done", what)

    async def wait_idle(self) -> None:
        """Wait for the running imports (tests and the default image use it)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- download and cleanup ------------------------------------------------------

    async def read(self, image: Image, offset: int, length: int | None,
                   ) -> AsyncIterator[memoryview]:
        """The image's bytes ``[offset, offset+length)``, the next block read ahead.

        Blocks of ``READ_AHEAD`` bytes are read in a worker thread and handed on in
        slices of ``SEND_PIECE`` (views, not copies): one thread hop per 4 MiB, and
        sends small enough for the socket to take whole.
        """
        blocks = self.store.read_blocks(image.location or "", offset, length, READ_AHEAD)
        upcoming = asyncio.ensure_future(asyncio.to_thread(next, blocks, None))
        try:
            while (block := await upcoming) is not None:
                upcoming = asyncio.ensure_future(asyncio.to_thread(next, blocks, None))
                view = memoryview(block)
                for start in range(0, len(view), SEND_PIECE):
                    yield view[start:start + SEND_PIECE]
        finally:
            # Close the file once no thread is reading it any more.
            upcoming.add_done_callback(lambda _: blocks.close())

    def open_local(self, image: Image) -> BinaryIO | None:
        """The image's data file, open for reading, when the store keeps one on this
        machine (for a zero-copy send); None when it does not, or the file is gone."""
        path = self.store.local_path(image.location) if image.location else None
        if path is None:
            return None
        try:
            return open(path, "rb")
        except FileNotFoundError:
            log.warning("image %s: its data file %s is gone", image.id, path)
            return None

    def delete_data(self, image: Image) -> None:
        if image.location:
            self.store.delete(image.location)
        self.staging.delete((self.staging.root / image.id).as_uri())

    def recover(self) -> None:
        """After a restart: nothing half-written, no image stuck mid-transfer, no orphans."""
        partials = self.staging.remove_partials()
        if isinstance(self.store, FileStore):
            partials += self.store.remove_partials()
        staged = self.staging.stored_ids()
        for image in self.images.interrupted():
            if image.status == "uploading" and image.id in staged:
                continue
            log.warning("image %s was %s when tinystack stopped; back to queued",
                        image.id, image.status)
            self.images.restore(image.id, (image.status,), image.status == "importing")
        still_staged = {i.id for i in self.images.interrupted() if i.status == "uploading"}
        for image_id in staged - still_staged:
            self.staging.delete((self.staging.root / image_id).as_uri())
        orphans = 0
        if isinstance(self.store, FileStore):
            known = self.images.locations()
            for image_id in self.store.stored_ids():
                location = (self.store.root / image_id).as_uri()
                if location not in known:
                    self.store.delete(location)
                    orphans += 1
        if partials or orphans:
            log.info("image store: removed %d partial and %d orphan files", partials, orphans)
