"""Remote consoles: the URL the API gives, and the websocket proxy behind it."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

MV = "2.100"


async def _server(nova, image_id) -> str:
    return (await nova.create_server(image_id))["server"]["id"]


async def test_remote_console_url(nova, agent, image_id):
    server_id = await _server(nova, image_id)
    r = await nova.compute("POST", f"/servers/{server_id}/remote-consoles", mv=MV, json={
        "remote_console": {"protocol": "serial", "type": "serial"}})
    assert r.status_code == 200
    body = r.json()["remote_console"]
    assert (body["protocol"], body["type"]) == ("serial", "serial")
    assert body["url"].startswith("ws://testserver/compute/console/serial?token=")
    r = await nova.compute("POST", f"/servers/{server_id}/remote-consoles", mv=MV, json={
        "remote_console": {"protocol": "vnc", "type": "novnc"}})
    assert r.status_code == 400
    assert r.json()["badRequest"]["message"] == "Unavailable console type novnc."
    r = await nova.compute("POST", f"/servers/{server_id}/remote-consoles", mv=MV, json={
        "remote_console": {"protocol": "serial", "type": "novnc"}})
    assert r.status_code == 400
    legacy = await nova.action(server_id, {"os-getSerialConsole": {"type": "serial"}},
                               mv="2.5", expect=200)
    assert legacy["console"]["type"] == "serial"
    assert legacy["console"]["url"].startswith("ws://")


async def _websocket(cloud, url: str, sends: list[bytes]) -> list[dict]:
    """Drive the ASGI websocket protocol by hand; returns what the app sent."""
    parts = urlsplit(url)
    incoming: asyncio.Queue = asyncio.Queue()
    sent: list[dict] = []
    await incoming.put({"type": "websocket.connect"})
    scope = {"type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws",
             "path": parts.path, "raw_path": parts.path.encode(), "root_path": "",
             "query_string": parts.query.encode(), "headers": [(b"host", b"testserver")],
             "subprotocols": ["binary"], "server": ("testserver", 80),
             "client": ("127.0.0.1", 5000)}
    done = asyncio.Event()

    async def receive():
        return await incoming.get()

    async def send(message):
        sent.append(message)
        if message["type"] == "websocket.accept":
            for data in sends:
                await incoming.put({"type": "websocket.receive", "bytes": data})
        if message["type"] == "websocket.send" and b"HELLO" in message.get("bytes", b""):
            await incoming.put({"type": "websocket.disconnect", "code": 1000})
        if message["type"] == "websocket.close":
            done.set()

    await asyncio.wait_for(cloud.asgi(scope, receive, send), 5)
    return sent


async def test_serial_console_websocket_reaches_the_guest(nova, cloud, agent, image_id):
    server_id = await _server(nova, image_id)
    r = await nova.compute("POST", f"/servers/{server_id}/remote-consoles", mv=MV, json={
        "remote_console": {"protocol": "serial", "type": "serial"}})
    url = r.json()["remote_console"]["url"]
    sent = await _websocket(cloud, url, [b"hello"])
    assert sent[0] == {"type": "websocket.accept", "subprotocol": "binary", "headers": []}
    received = b"".join(m.get("bytes") or b"" for m in sent if m["type"] == "websocket.send")
    assert received.startswith(b"login: ") and b"HELLO" in received


async def test_a_bad_token_is_refused(nova, cloud, agent, image_id):
    sent = await _websocket(cloud, "ws://testserver/compute/console/serial?token=nope", [])
    assert sent[0]["type"] == "websocket.close" and sent[0]["code"] == 1008


async def test_an_expired_token_is_refused(nova, cloud, agent, image_id, clock):
    server_id = await _server(nova, image_id)
    r = await nova.compute("POST", f"/servers/{server_id}/remote-consoles", mv=MV, json={
        "remote_console": {"protocol": "serial", "type": "serial"}})
    token = parse_qs(urlsplit(r.json()["remote_console"]["url"]).query)["token"][0]
    clock.advance(seconds=601)
    sent = await _websocket(cloud, f"ws://testserver/compute/console/serial?token={token}", [])
    assert sent[0]["type"] == "websocket.close"
