"""Zero-copy file bodies: ASGI's *zero copy send* extension, offered and used.

A file body sent through ASGI's ``http.response.body`` passes through Python
twice (read into a buffer, then written into the socket's buffer whenever the
socket is full) and costs the event loop a turn per piece. ASGI's extension
``http.response.zerocopysend`` lets the application hand the server an open
file instead, and the server hand it to the kernel with ``sendfile(2)``:
the bytes go from the page cache to the socket without being copied by
Python at all.

uvicorn does not offer the extension, so ``HttpProtocol`` adds it to
uvicorn's httptools protocol: each request's scope lists it, and the
request's ``send`` takes the extension's message (``file``, ``offset``,
``count``, ``more_body``), waits for what is already queued on the
connection, and sends the range with ``loop.sendfile`` (which falls back to
reads and writes where ``sendfile`` cannot serve, as on a TLS connection).

``FileResponse`` is the application's side: a byte range of a file it has
opened, for servers that offer the extension (``offers_zero_copy``); for the
others (the test client, another server) stream the data the usual way.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, BinaryIO

from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

__all__ = ["EXTENSION", "FileResponse", "HttpProtocol", "offers_zero_copy"]

log = logging.getLogger(__name__)

EXTENSION = "http.response.zerocopysend"


def offers_zero_copy(scope: Scope) -> bool:
    """Does the server of this request take ``http.response.zerocopysend``?"""
    return EXTENSION in (scope.get("extensions") or {})


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the zero copy send extension in every request."""

    def on_headers_complete(self) -> None:
        scope = self.scope
        super().on_headers_complete()
        cycle = self.cycle
        # Only a request that got a cycle of its own (not an upgrade) is served here; the
        # cycle's task has not run yet, so what it will read is still ours to set.
        if cycle is not None and cycle.scope is scope and "send" not in vars(cycle):
            scope.setdefault("extensions", {})[EXTENSION] = {}
            cycle.send = functools.partial(_send, cycle, cycle.send)  # type: ignore[method-assign]


async def _send(cycle: RequestResponseCycle, send: Callable[[Any], Awaitable[None]],
                message: Mapping[str, Any]) -> None:
    if message["type"] != EXTENSION:
        await send(message)
        return
    if not cycle.response_started or cycle.response_complete:
        raise RuntimeError(f"Unexpected ASGI message '{EXTENSION}' outside a response body.")
    file: BinaryIO = message["file"]
    offset = message.get("offset")
    if offset is None:
        offset = file.tell()
    count = message.get("count")
    if count is None:
        count = max(os.fstat(file.fileno()).st_size - offset, 0)
    if count and cycle.scope["method"] != "HEAD":
        if not cycle.chunked_encoding and count > cycle.expected_content_length:
            raise RuntimeError("Response content longer than Content-Length")
        if cycle.flow.write_paused and not cycle.disconnected:
            await cycle.flow.drain()
        transport = cycle.transport
        if cycle.disconnected or transport.is_closing():
            return
        if cycle.chunked_encoding:
            transport.write(b"%x\r\n" % count)
        try:
            sent = await asyncio.get_running_loop().sendfile(transport, file, offset, count)
        except ConnectionError as exc:
            log.info("zero-copy send: the client went away (%s)", exc)
            transport.close()
            cycle.disconnected = True
            return
        if sent != count:
            transport.close()
            cycle.disconnected = True
            raise RuntimeError(f"the file ended {count - sent} bytes early")
        if cycle.chunked_encoding:
            transport.write(b"\r\n")
        else:
            cycle.expected_content_length -= sent
    await send({"type": "http.response.body", "body": b"",
                "more_body": message.get("more_body", False)})


class FileResponse(Response):
    """``length`` bytes of an open ``file`` from ``offset``, sent with the zero copy send
    extension (only for a server that offers it); the file is closed when it is over."""

    def __init__(self, file: BinaryIO, offset: int, length: int, status_code: int = 200,
                 headers: Mapping[str, str] | None = None,
                 media_type: str | None = "application/octet-stream"):
        self.file, self.offset, self.length = file, offset, length
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        given = {name.lower(): value for name, value in (headers or {}).items()}
        self.init_headers({**given, "content-length": str(length)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            await send({"type": EXTENSION, "file": self.file, "offset": self.offset,
                        "count": self.length, "more_body": False})
        finally:
            self.file.close()
