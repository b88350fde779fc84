"""Uploads through the image API whose pipeline fails inside the server.

A hashing thread or the store's background flush failing mid-upload must
answer an error and leave the image ``queued``, with no file in the store
(neither committed nor partial), ready for another try.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from tinystack.image import stores, transfer

from .test_data import raw_put, stored

BLOCKS = 6


def body() -> bytes:
    return os.urandom(BLOCKS * transfer.BLOCK)


def pieces(data: bytes, size: int = 256 * 1024) -> list[bytes]:
    """The body as uvicorn hands it over: one piece per socket read."""
    return [data[i:i + size] for i in range(0, len(data), size)]


async def put_failing(glance, image_id: str, error: type, match: str) -> list[dict]:
    """PUT a body that fails inside the server; what the server sent. Starlette sends the
    500 and then re-raises the error for the server's log: it is expected here."""
    token = (await glance.login("demo"))[0]
    messages = [{"type": "http.request", "body": piece, "more_body": True}
                for piece in pieces(body())]
    messages[-1]["more_body"] = False
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    path = f"/image/v2/images/{image_id}/file"
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "PUT",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "server": ("testserver", 80), "client": ("127.0.0.1", 40000),
             "headers": [(b"host", b"testserver"), (b"x-auth-token", token.encode()),
                         (b"content-type", b"application/octet-stream")]}
    with pytest.raises(error, match=match):
        await glance.cloud.asgi(scope, receive, send)
    return sent


async def test_a_hashing_thread_that_raises_leaves_the_image_queued(glance, monkeypatch):
    image = await glance.create()
    calls = []
    real = transfer._hash_all

    def failing(hasher, chunks):
        calls.append(hasher.name)
        if len(calls) == 4:
            raise RuntimeError("the hasher broke")
        real(hasher, chunks)

    monkeypatch.setattr(transfer, "_hash_all", failing)

    sent = await put_failing(glance, image["id"], RuntimeError, "the hasher broke")

    assert sent[0]["status"] == 500
    assert len(calls) < 2 * BLOCKS, "the upload stopped at the failure"
    shown = await glance.image(image["id"])
    assert shown["status"] == "queued" and shown["size"] is None
    assert shown["checksum"] is None and shown["os_hash_value"] is None
    assert stored(glance) == set()
    monkeypatch.setattr(transfer, "_hash_all", real)
    await glance.upload(image["id"], b"second try")
    assert (await glance.image(image["id"]))["status"] == "active"


async def test_a_failed_flush_leaves_the_image_queued(glance, monkeypatch):
    image = await glance.create()
    monkeypatch.setattr(stores, "SYNC_EVERY", transfer.BLOCK)

    def fdatasync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(stores.os, "fdatasync", fdatasync)

    sent = await put_failing(glance, image["id"], OSError, "Input/output error")

    assert sent[0]["status"] == 500
    assert (await glance.image(image["id"]))["status"] == "queued"
    assert stored(glance) == set()


async def test_a_client_gone_with_blocks_in_flight_leaves_the_image_queued(glance):
    image = await glance.create()
    sent = await raw_put(glance, f"/v2/images/{image['id']}/file", pieces(body()),
                         disconnect=True)

    assert sent[0]["status"] == 400
    shown = await glance.image(image["id"])
    assert shown["status"] == "queued" and shown["size"] is None
    assert stored(glance) == set()


@pytest.mark.parametrize("chunk", [1000, 256 * 1024])
async def test_the_stored_bytes_are_the_hashed_ones(glance, chunk):
    image = await glance.create()
    data = body() + b"tail"

    sent = await raw_put(glance, f"/v2/images/{image['id']}/file", pieces(data, chunk))

    assert sent[0]["status"] == 204
    shown = await glance.image(image["id"])
    assert shown["checksum"] == hashlib.md5(data).hexdigest()
    assert shown["os_hash_value"] == hashlib.sha512(data).hexdigest()
    r = await glance.get(f"/v2/images/{image['id']}/file")
    assert r.content == data
