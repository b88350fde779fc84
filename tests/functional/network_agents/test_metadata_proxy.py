"""The metadata proxy over real TCP on loopback, forwarding to a stand-in metadata service.

The proxy's listener is made on 127.0.0.1 (an ephemeral port) instead of
169.254.169.254:80 in a namespace; the compute metadata service is an
``httpx.MockTransport`` that keeps each request it gets.
"""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from tinystack.compute.metadata import sign as compute_sign
from tinystack.network.agents.metadata import MetadataProxy, sign


def loopback_listener(namespace: str, address: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    return sock


class Service:
    """The metadata service: answers 200 with the path, keeps the requests."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, json={"path": request.url.path},
                              headers={"content-type": "application/json"})


@pytest.fixture
async def proxy():
    service = Service()
    owners = {("net-1", "127.0.0.1"): {"device_id": "server-1", "project_id": "proj-1"}}
    proxy = MetadataProxy(metadata_url="http://controller:8080/metadata",
                          secret=lambda: "s3cret", lookup=lambda n, ip: owners.get((n, ip)),
                          transport=httpx.MockTransport(service), listen=loopback_listener)
    proxy.service = service
    proxy.owners = owners
    await proxy.ensure("net-1", "qdhcp-net-1")
    yield proxy
    await proxy.close()


async def get(proxy: MetadataProxy, path: str, extra: str = "") -> tuple[int, bytes]:
    port = proxy.sockets("net-1")[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n{extra}\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_a_guest_request_is_forwarded_signed_as_its_instance(proxy):
    status, body = await get(proxy, "/openstack/latest/meta_data.json")

    assert status == 200
    assert body == b'{"path":"/metadata/openstack/latest/meta_data.json"}'
    sent = proxy.service.requests[0]
    assert sent.headers["x-instance-id"] == "server-1"
    assert sent.headers["x-tenant-id"] == "proj-1"
    assert sent.headers["x-forwarded-for"] == "127.0.0.1"
    assert sent.headers["x-instance-id-signature"] == compute_sign("s3cret", "server-1")
    assert sign("s3cret", "server-1") == compute_sign("s3cret", "server-1")


async def test_identity_headers_a_guest_sends_are_replaced(proxy):
    forged = "X-Instance-ID: server-2\r\nX-Tenant-ID: proj-2\r\nX-Instance-ID-Signature: x\r\n"

    status, _ = await get(proxy, "/latest/meta-data/", forged)

    sent = proxy.service.requests[0]
    assert status == 200
    assert sent.headers.get_list("x-instance-id") == ["server-1"]
    assert sent.headers["x-tenant-id"] == "proj-1"


async def test_an_address_nobody_owns_gets_404_and_nothing_is_forwarded(proxy):
    proxy.owners.clear()

    status, _ = await get(proxy, "/openstack")

    assert status == 404
    assert proxy.service.requests == []
    assert proxy.statistics()["refused"] == 1


async def test_the_server_names_guests_the_local_specs_cannot(bus, server):
    server.owners[("net-1", "127.0.0.1")] = {"device_id": "server-9", "project_id": "proj-9"}
    service = Service()
    proxy = MetadataProxy(metadata_url="http://controller/metadata", secret=lambda: "k",
                          lookup=lambda n, ip: None, bus=bus,
                          transport=httpx.MockTransport(service), listen=loopback_listener)
    try:
        await proxy.ensure("net-1", "qdhcp-net-1")
        status, _ = await get(proxy, "/openstack")
    finally:
        await proxy.close()

    assert status == 200
    assert service.requests[0].headers["x-instance-id"] == "server-9"


async def test_ensure_twice_keeps_one_listener_and_remove_closes_it(proxy):
    first = proxy.sockets("net-1")[0].getsockname()

    await proxy.ensure("net-1", "qdhcp-net-1")
    assert proxy.sockets("net-1")[0].getsockname() == first

    await proxy.remove("net-1")
    assert proxy.networks() == []
    with pytest.raises(OSError):
        await asyncio.open_connection(*first)
