"""Guests' serial ports offered over TCP, for the controller's console proxy.

``SerialPorts(address).open(server_id, socket_path)`` listens on a free TCP
port of ``address`` (the node's ``my_ip``) and returns it; each client that
connects is joined to the guest's console unix socket (QEMU's ``console.sock``)
until either side closes. One client at a time per server: a second is
refused. The guest side is always read, so a slow client never stalls the
guest (what the client cannot take, past 1 MiB waiting, is dropped; the
console log QEMU writes keeps everything). ``close(server_id)`` stops the
listener when the guest stops. Used by ``drivers/qemu.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from tinystack.compute import host

__all__ = ["SerialPorts"]

_CLIENT_BUFFER = 1 << 20


class SerialPorts:
    def __init__(self, address: str):
        self.address = address
        self._servers: dict[str, asyncio.Server] = {}
        self._busy: set[str] = set()

    async def open(self, server_id: str, socket_path: Path) -> int:
        """The TCP port of the server's serial console, listening from now on."""
        server = self._servers.get(server_id)
        if server is None or not server.is_serving():
            server = await asyncio.start_server(
                lambda r, w: self._client(server_id, socket_path, r, w),
                host=self.address, port=0)
            self._servers[server_id] = server
        return server.sockets[0].getsockname()[1]

    def close(self, server_id: str) -> None:
        server = self._servers.pop(server_id, None)
        if server is not None:
            server.close()

    def close_all(self) -> None:
        for server_id in list(self._servers):
            self.close(server_id)

    async def _client(self, server_id: str, socket_path: Path, reader, writer) -> None:
        if server_id in self._busy:
            writer.close()
            return
        self._busy.add(server_id)
        try:
            try:
                with host.unix_socket_path(socket_path) as address:
                    guest_reader, guest_writer = await asyncio.open_unix_connection(address)
            except OSError:
                writer.close()
                return
            await self._join(reader, writer, guest_reader, guest_writer)
        finally:
            self._busy.discard(server_id)

    @staticmethod
    async def _join(reader, writer, guest_reader, guest_writer) -> None:
        async def to_guest() -> None:
            while data := await reader.read(4096):
                guest_writer.write(data)
                await guest_writer.drain()

        async def from_guest() -> None:
            while data := await guest_reader.read(65536):
                if writer.transport.get_write_buffer_size() < _CLIENT_BUFFER:
                    writer.write(data)

        tasks = [asyncio.ensure_future(to_guest()), asyncio.ensure_future(from_guest())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for side in (writer, guest_writer):
                with contextlib.suppress(Exception):
                    side.close()
