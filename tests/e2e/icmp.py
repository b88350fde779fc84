"""ICMP echo from inside a network namespace, timed in the test's (or benchmark's) process.

``EchoSocket(ns)`` opens a raw ICMP socket in namespace ``ns`` (a thread
enters the namespace, makes the socket and ends; the socket stays there), or
in this process's namespace when ``ns`` is None. ``rtt`` sends one echo and
waits for its reply; ``until_reply`` sends one every few milliseconds until
one comes back, which is how "packets flow" is detected to the millisecond
(busybox ping sends one a second). All echoes of one socket share an ICMP id,
so to conntrack they are one connection, as a long-running ``ping`` is.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import struct
import threading
import time

from tinystack.network.agents.host import NETNS_DIR

__all__ = ["EchoSocket"]

_CLONE_NEWNET = 0x40000000


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _raw_socket(ns: str | None) -> socket.socket:
    made: dict = {}

    def make() -> None:
        try:
            if ns is not None:
                libc = ctypes.CDLL(None, use_errno=True)
                with open(NETNS_DIR / ns, "rb") as handle:
                    if libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns failed")
            made["sock"] = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        except OSError as exc:
            made["error"] = exc

    thread = threading.Thread(target=make)
    thread.start()
    thread.join(10)
    if "sock" not in made:
        raise made.get("error") or OSError("could not open an ICMP socket")
    sock = made["sock"]
    sock.setblocking(False)
    return sock


class EchoSocket:
    def __init__(self, ns: str | None = None):
        self.sock = _raw_socket(ns)
        self.ident = os.getpid() & 0xFFFF
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def _send(self, address: str) -> int:
        self.seq = (self.seq + 1) & 0xFFFF
        header = struct.pack("!BBHHH", 8, 0, 0, self.ident, self.seq)
        payload = struct.pack("!d", time.perf_counter()) + b"tinystack-bench"
        header = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), self.ident, self.seq)
        self.sock.sendto(header + payload, (address, 0))
        return self.seq

    def _replied(self, address: str, seqs: set[int]) -> bool:
        """Drain the socket; True if a reply from ``address`` to one of ``seqs`` came."""
        found = False
        while True:
            try:
                data, peer = self.sock.recvfrom(2048)
            except BlockingIOError:
                return found
            header_len = (data[0] & 0x0F) * 4
            kind, _, _, ident, seq = struct.unpack("!BBHHH", data[header_len:header_len + 8])
            if kind == 0 and ident == self.ident and seq in seqs and peer[0] == address:
                found = True

    async def rtt(self, address: str, timeout: float = 1.0) -> float | None:
        """Seconds for one echo to come back, or None."""
        start = time.perf_counter()
        seq = self._send(address)
        while time.perf_counter() - start < timeout:
            if self._replied(address, {seq}):
                return time.perf_counter() - start
            await asyncio.sleep(0.0002)
        return None

    async def until_reply(self, address: str, *, every: float = 0.005,
                          timeout: float = 10.0) -> float | None:
        """Echo every ``every`` seconds until a reply; seconds until it came, or None."""
        start = time.perf_counter()
        sent: set[int] = set()
        next_send = start
        while time.perf_counter() - start < timeout:
            now = time.perf_counter()
            if now >= next_send:
                try:
                    sent.add(self._send(address))
                except OSError:
                    pass  # no route yet
                next_send = now + every
            if self._replied(address, sent):
                return time.perf_counter() - start
            await asyncio.sleep(0.0005)
        return None
