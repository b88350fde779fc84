"""The serial console proxy: a websocket at ``/compute/console/serial?token=...``.

This is what nova-serialproxy does. The URL comes from ``remote-consoles``
(``api_actions.py``) with a one-time-issued token that stays valid for
``console_token_ttl`` seconds. On connect the token is checked, the
server's node is asked where the guest's serial port listens
(``serial_console`` on the bus, answered with a ``SerialConsole``), and
bytes are copied both ways until either side closes. Clients that offer the
``binary`` subprotocol (websockify, noVNC's serial client) get it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tinystack.common.bus import BusError

__all__ = ["ConsoleProxy", "routes"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0


class ConsoleProxy:
    def __init__(self, component):
        self.c = component

    async def serial(self, websocket: WebSocket) -> None:
        token = websocket.query_params.get("token")
        target = await self.c.core.run(self.c.actions.console_server, token) if token else None
        if target is None:
            await websocket.close(code=1008, reason="Invalid or expired console token")
            return
        server_id, host = target
        try:
            endpoint = await self.c.actions.serial_endpoint(server_id, host)
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(endpoint.host, endpoint.port), CONNECT_TIMEOUT)
        except (BusError, OSError, TimeoutError, ValueError) as exc:
            log.warning("serial console of %s on %s: %s", server_id, host, exc)
            await websocket.close(code=1011, reason="The console is not available")
            return
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol="binary" if "binary" in offered else None)
        try:
            await self._pump(websocket, reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    @staticmethod
    async def _pump(websocket: WebSocket, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        async def to_guest() -> None:
            with contextlib.suppress(WebSocketDisconnect):
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        return
                    data = message.get("bytes") or (message.get("text") or "").encode()
                    writer.write(data)
                    await writer.drain()

        async def to_client() -> None:
            while data := await reader.read(4096):
                await websocket.send_bytes(data)
            with contextlib.suppress(RuntimeError):
                await websocket.close()

        tasks = [asyncio.create_task(to_guest()), asyncio.create_task(to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def routes(component) -> list[WebSocketRoute]:
    proxy = ConsoleProxy(component)
    return [WebSocketRoute("/console/serial", proxy.serial)]
