"""The zero copy send extension, served by uvicorn with tinystack's protocol over real sockets."""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import socket
import threading
from pathlib import Path

import pytest
import uvicorn

from tinystack.common.sendfile import EXTENSION, FileResponse, HttpProtocol, offers_zero_copy

DATA = os.urandom(3 * 1024 * 1024 + 17)
BIG = 256 * 1024 * 1024


class App:
    """Answers by path: the whole file, a range of it, chunked pieces, or what it saw."""

    def __init__(self, path: Path):
        self.path = path
        self.scopes: list[dict] = []
        self.opened: list = []
        self.finished = threading.Event()

    async def __call__(self, scope, receive, send):
        self.scopes.append(scope)
        file = open(self.path, "rb")
        self.opened.append(file)
        try:
            if scope["path"] == "/whole":
                await FileResponse(file, 0, len(DATA))(scope, receive, send)
            elif scope["path"] == "/big":
                big = open(self.path.with_name("big"), "rb")
                self.opened.append(big)
                await FileResponse(big, 0, BIG)(scope, receive, send)
            elif scope["path"] == "/range":
                await FileResponse(file, 1000, 5000, 206)(scope, receive, send)
            elif scope["path"] == "/chunked":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"head:", "more_body": True})
                await send({"type": EXTENSION, "file": file, "offset": 10, "count": 20,
                            "more_body": True})
                file.seek(len(DATA) - 7)
                await send({"type": EXTENSION, "file": file, "more_body": True})
                await send({"type": "http.response.body", "body": b":tail"})
        finally:
            file.close()
            self.finished.set()


@pytest.fixture
def served(tmp_path):
    path = tmp_path / "data"
    path.write_bytes(DATA)
    with open(path.with_name("big"), "wb") as big:
        big.truncate(BIG)  # sparse: more than any socket buffer holds
    app = App(path)
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(app, http=HttpProtocol, lifespan="off", log_config=None,
                            access_log=False)
    server = uvicorn.Server(config)
    server.capture_signals = lambda: __import__("contextlib").nullcontext()
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    try:
        while not server.started:
            threading.Event().wait(0.01)
        yield app, sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def get(port: int, path: str, method: str = "GET", conn=None):
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path)
    response = conn.getresponse()
    return conn, response, response.read()


def test_every_request_is_offered_the_extension(served):
    app, port = served
    get(port, "/whole")
    assert offers_zero_copy(app.scopes[0])
    assert not offers_zero_copy({"type": "http"})


def test_whole_file_and_a_range_arrive_intact_with_their_lengths(served):
    app, port = served
    conn, response, body = get(port, "/whole")
    assert response.status == 200
    assert response.headers["content-length"] == str(len(DATA))
    assert response.headers["content-type"] == "application/octet-stream"
    assert body == DATA
    # the same connection serves the next request: the response was completed
    _, response, body = get(port, "/range", conn=conn)
    assert response.status == 206 and body == DATA[1000:6000]
    assert all(file.closed for file in app.opened)


def test_head_sends_the_headers_only(served):
    _, port = served
    conn, response, body = get(port, "/whole", "HEAD")
    assert response.status == 200 and body == b""
    assert response.headers["content-length"] == str(len(DATA))
    _, response, body = get(port, "/range", conn=conn)  # nothing stray on the connection
    assert body == DATA[1000:6000]


def test_pieces_of_a_chunked_body_keep_their_order(served):
    _, port = served
    _, response, body = get(port, "/chunked")
    assert response.headers["transfer-encoding"] == "chunked"
    assert body == b"head:" + DATA[10:30] + DATA[-7:] + b":tail"


def test_a_client_leaving_mid_send_ends_the_response_quietly(served, caplog):
    app, port = served
    caplog.set_level(logging.INFO, "tinystack.common.sendfile")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    assert app.finished.wait(10)
    assert all(file.closed for file in app.opened)
    assert "the client went away" in caplog.text
    assert "Exception in ASGI application" not in caplog.text
    _, response, body = get(port, "/range")  # and the server goes on
    assert body == DATA[1000:6000]
