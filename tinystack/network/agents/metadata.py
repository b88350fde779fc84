"""The metadata proxy: a guest's request to 169.254.169.254 reaches the compute metadata service.

For each network served from a DHCP namespace, the proxy listens on
169.254.169.254:80 *inside* that namespace (``host.listen_in_netns`` makes
the socket there; it stays there while this process, in the host, serves
it), so no proxy process runs per namespace and nothing crosses namespaces
but the accepted connection. For a request it names the guest by its source
address on that network: the DHCP spec's hosts first (``lookup``), else the
network server (``call("port_by_address", network_id, ip_address)``). It
then forwards the request to the metadata service (``/metadata`` of the
controller, mounted by the compute service) with ``X-Instance-ID`` (the
port's device), ``X-Tenant-ID`` (its project), ``X-Instance-ID-Signature``
(HMAC-SHA256 of the instance id under the shared secret, hex) and
``X-Forwarded-For``, as Neutron's metadata agent does; whatever identity
headers the guest sent are dropped. An address nobody owns gets 404.

HTTP here is the small part of HTTP/1.1 guests use: one request per
connection, ``Connection: close``. Read ``dhcp.py`` for who starts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from tinystack.common.bus import Bus
from tinystack.network.agents import host
from tinystack.network.agents.drivers.dnsmasq import METADATA_ADDRESS
from tinystack.network.messages import SERVER_TARGET

__all__ = ["MetadataProxy", "sign"]

log = logging.getLogger(__name__)

MAX_HEAD = 16384
MAX_BODY = 1 << 20
READ_TIMEOUT = 10.0
FORWARD_TIMEOUT = 10.0
_DROPPED = {"x-instance-id", "x-tenant-id", "x-instance-id-signature", "x-forwarded-for",
            "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
            "host", "content-length", "te", "trailer"}
_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 500: "Internal Server Error", 502: "Bad Gateway",
            504: "Gateway Timeout"}


def sign(secret: str, instance_id: str) -> str:
    """X-Instance-ID-Signature: HMAC-SHA256 of ``instance_id`` under ``secret``, hex."""
    return hmac.new(secret.encode(), instance_id.encode(), hashlib.sha256).hexdigest()


@dataclass
class _Listener:
    namespace: str
    inode: int | None
    server: asyncio.base_events.Server


class MetadataProxy:
    """Serves 169.254.169.254:80 in the namespaces it is asked to (``ensure``)."""

    def __init__(self, *, metadata_url: str, secret: Callable[[], str],
                 lookup: Callable[[str, str], dict | None] | None = None,
                 bus: Bus | None = None, port: int = 80, address: str = METADATA_ADDRESS,
                 transport: httpx.AsyncBaseTransport | None = None,
                 listen: Callable[[str, str, int], object] = host.listen_in_netns):
        self.metadata_url = metadata_url.rstrip("/")
        self.secret = secret
        self.lookup = lookup
        self.bus = bus
        self.port = port
        self.address = address
        self._listen = listen
        """(namespace, address, port) -> a listening socket there (tests listen elsewhere)."""
        self._listeners: dict[str, _Listener] = {}
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        """Made on the first request forwarded: each holds a TLS context of about a megabyte."""
        self.requests = 0
        self.refused = 0

    async def ensure(self, network_id: str, namespace: str) -> None:
        """Listen in ``namespace`` for guests of ``network_id`` (again if it was remade)."""
        inode = host.netns_inode(namespace)
        current = self._listeners.get(network_id)
        if (current is not None and current.namespace == namespace and current.inode == inode
                and current.server.is_serving()):
            return
        await self.remove(network_id)
        sock = await asyncio.to_thread(self._listen, namespace, self.address, self.port)
        server = await asyncio.start_server(
            lambda r, w: self._serve(network_id, r, w), sock=sock)
        self._listeners[network_id] = _Listener(namespace, inode, server)
        log.info("metadata: serving %s:%d in %s", self.address, self.port, namespace)

    async def remove(self, network_id: str) -> None:
        listener = self._listeners.pop(network_id, None)
        if listener is not None:
            listener.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.server.wait_closed(), 2.0)

    async def close(self) -> None:
        for network_id in list(self._listeners):
            await self.remove(network_id)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def networks(self) -> list[str]:
        return sorted(self._listeners)

    def sockets(self, network_id: str) -> list:
        """The listening sockets for ``network_id`` (tests read their port)."""
        listener = self._listeners.get(network_id)
        return list(listener.server.sockets) if listener is not None else []

    # -- one request -------------------------------------------------------------------------

    async def _serve(self, network_id: str, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        try:
            status, headers, body = await asyncio.wait_for(
                self._answer(network_id, reader, writer), READ_TIMEOUT + FORWARD_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            status, headers, body = 400, {}, b"Bad Request"
        except Exception:
            log.exception("metadata: request on network %s failed", network_id)
            status, headers, body = 500, {}, b"Internal Server Error"
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
                f"Content-Type: {headers.get('content-type', 'text/plain; charset=UTF-8')}",
                f"Content-Length: {len(body)}", "Connection: close", "", ""]
        with contextlib.suppress(ConnectionError):
            writer.write("\r\n".join(head).encode("latin-1") + body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    async def _answer(self, network_id: str, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> tuple[int, dict, bytes]:
        self.requests += 1
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        if len(head) > MAX_HEAD:
            return 400, {}, b"Bad Request"
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[1].startswith("/"):
            return 400, {}, b"Bad Request"
        method, path, _ = parts
        if method not in ("GET", "HEAD", "POST"):
            return 405, {}, b"Method Not Allowed"
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = b""
        length = int(headers.get("content-length", "0") or 0)
        if length > MAX_BODY:
            return 400, {}, b"Bad Request"
        if length:
            body = await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT)
        peer = writer.get_extra_info("peername")
        address = peer[0] if peer else ""
        owner = await self._owner(network_id, address)
        if owner is None or not owner.get("device_id"):
            self.refused += 1
            log.info("metadata: no instance behind %s on network %s", address, network_id)
            return 404, {}, b"Not Found"
        instance_id = owner["device_id"]
        forward = {k: v for k, v in headers.items() if k not in _DROPPED}
        forward.update({"X-Forwarded-For": address, "X-Instance-ID": instance_id,
                        "X-Tenant-ID": owner.get("project_id") or "",
                        "X-Instance-ID-Signature": sign(self.secret(), instance_id)})
        try:
            if self._client is None:
                self._client = httpx.AsyncClient(timeout=FORWARD_TIMEOUT,
                                                 transport=self._transport)
            response = await self._client.request(method, self.metadata_url + path,
                                                  headers=forward, content=body or None)
        except httpx.TimeoutException:
            return 504, {}, b"Gateway Timeout"
        except httpx.HTTPError as exc:
            log.warning("metadata: %s unreachable: %s", self.metadata_url, exc)
            return 502, {}, b"Bad Gateway"
        content = b"" if method == "HEAD" else response.content
        return response.status_code, {"content-type": response.headers.get(
            "content-type", "text/plain; charset=UTF-8")}, content

    async def _owner(self, network_id: str, address: str) -> dict | None:
        owner = self.lookup(network_id, address) if self.lookup is not None else None
        if (owner is None or not owner.get("project_id")) and self.bus is not None:
            try:
                answer = await self.bus.call(SERVER_TARGET, "port_by_address",
                                             network_id=network_id, ip_address=address,
                                             timeout=5.0)
            except Exception as exc:
                log.warning("metadata: %s could not name %s: %s", SERVER_TARGET, address, exc)
                answer = None
            owner = answer or owner
        return owner

    def statistics(self) -> dict:
        return {"listeners": len(self._listeners), "requests": self.requests,
                "refused": self.refused}
