"""The network agents on real Linux, without the API: bridges, DHCP, routers, NAT, filtering.

Each test builds specs by hand and casts them to the L2, DHCP and L3 agents
running in this process on the in-process bus, with a stub network server
(``netlab.py``). Guests are network namespaces on veths named like taps;
they take their addresses from dnsmasq with busybox ``udhcpc`` and ping.
Only private 10.231.0.0/16 subnets inside the lab's own namespaces and
bridges are used, and everything is swept away at the end, pass or fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import time
import uuid

import httpx
import pytest
from icmp import EchoSocket
from netlab import DEFAULT_RULES, Guest, Lab, host_ping, leftovers, require_root, sh

from starlette.applications import Starlette
from starlette.routing import Mount

from tinystack.compute.metadata import MetadataApp, ServerFacts
from tinystack.network.agents import host
from tinystack.network.messages import SecurityRule

pytestmark = pytest.mark.skipif(require_root() is not None, reason=require_root() or "")

NET_A, NET_B, EXT = "10.231.1.0/24", "10.231.2.0/24", "10.231.254.0/24"


@pytest.fixture
async def lab(tmp_path):
    facts: dict[str, ServerFacts] = {}

    async def lookup(instance_id: str) -> ServerFacts | None:
        return facts.get(instance_id)

    app = Starlette(routes=[Mount("/metadata", app=MetadataApp(lookup, lambda: "lab-secret"))])
    lab = Lab(tmp_path, metadata_transport=httpx.ASGITransport(app=app))
    lab.facts = facts
    try:
        await lab.start()
        yield lab
    finally:
        await lab.close()


@pytest.fixture
async def two_node_lab(tmp_path):
    """A lab whose node (DHCP, L3, L2) has 10.231.250.1 on a data bridge; add_node adds
    compute nodes in namespaces on that bridge."""
    lab = Lab(tmp_path, data_ip="10.231.250.1")
    try:
        await lab.start()
        yield lab
    finally:
        await lab.close()


async def guest_on(lab: Lab, name: str, port, node: str | None = None) -> Guest:
    guest = Guest(lab, name, port)
    return await guest.create(node=node)


async def one_network(lab: Lab, cidr: str, guests: int, *, metadata: bool = True):
    """A VXLAN network with DHCP and ``guests`` ports; (network, dhcp spec, ports)."""
    network = lab.network()
    base = cidr.rsplit(".", 1)[0]
    dhcp_port = lab.port(network, f"{base}.2", cidr, owner="network:dhcp", rules=[])
    ports = [lab.port(network, f"{base}.{11 + i}", cidr) for i in range(guests)]
    spec = lab.dhcp(network, cidr, dhcp_port, ports, metadata=metadata)
    for port in ports:
        await lab.send_port(port)
    await lab.send_dhcp(spec)
    await lab.wait_dhcp(network.id, spec.revision)
    return network, spec, ports


async def test_two_guests_on_one_network_get_addresses_and_ping(lab):
    network, spec, ports = await one_network(lab, NET_A, 2)
    g1 = await guest_on(lab, "a", ports[0])
    g2 = await guest_on(lab, "b", ports[1])
    await lab.wait_port(ports[0].id)
    await lab.wait_port(ports[1].id)

    assert await g1.dhcp() == "10.231.1.11"
    assert await g2.dhcp() == "10.231.1.12"
    _, mtu = await g1.run("cat", "/sys/class/net/eth0/mtu")
    _, routes = await g1.run("ip", "route")

    assert mtu.strip() == "1450"
    assert "169.254.169.254 via 10.231.1.2" in routes
    assert "default via 10.231.1.1" in routes
    assert await g1.ping_until(g2.address)
    assert await g2.ping_until(g1.address)
    _, answer = await g1.run("busybox", "nslookup", "host-10-231-1-12", "10.231.1.2",
                             check=False)
    assert "10.231.1.12" in answer


async def test_router_floating_ip_security_groups_metadata_and_clean_delete(lab):
    # Two tenant networks with DHCP, a router between them and to an external network.
    net_a, dhcp_a, (port1, port2) = await one_network(lab, NET_A, 2)
    net_b, dhcp_b, (port3,) = await one_network(lab, NET_B, 1)
    ext = lab.network(flat=True)
    router_id = str(uuid.uuid4())
    router = lab.router(router_id, [(net_a, "10.231.1.1", NET_A), (net_b, "10.231.2.1", NET_B)],
                        (ext, "10.231.254.10", EXT), external_gateway_ip="10.231.254.1",
                        fips=[("10.231.254.20", "10.231.1.11")])
    await lab.send_router(router)
    await lab.wait_router(router_id, router.revision)
    g1, g2, g3 = [await guest_on(lab, n, p) for n, p in (("a", port1), ("b", port2),
                                                          ("c", port3))]
    for port in (port1, port2, port3):
        await lab.wait_port(port.id)
    for guest in (g1, g2, g3):
        await guest.dhcp()

    # Same network, across the router, and the host to the floating IP (ICMP and TCP).
    assert await g1.ping_until(g2.address)
    assert await g1.ping_until(g3.address)
    assert await g3.ping_until(g1.address)
    assert await g1.ping_until("10.231.254.1"), "SNAT to the host's external address"
    assert await _host_ping_until("10.231.254.20")
    listener = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", g1.ns, "busybox", "nc", "-l", "-p", "22", "-e", "echo", "hello",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert await _tcp_hello("10.231.254.20", 22) == b"hello\n"
    finally:
        if listener.returncode is None:  # nc ends by itself once it has answered
            with contextlib.suppress(ProcessLookupError):
                listener.kill()
        await listener.wait()

    # Metadata: the proxy in the DHCP namespace names g1 by its address.
    lab.facts[port1.device_id] = _facts(port1.device_id, "proj-lab", "guest-one")
    _, body = await g1.run("timeout", "10", "busybox", "wget", "-q", "-O", "-",
                           "http://169.254.169.254/openstack/latest/meta_data.json")
    assert json.loads(body)["uuid"] == port1.device_id
    assert json.loads(body)["hostname"] == "guest-one"

    # Removing the ICMP rule of port2 stops pings to it, even a ping already running (its
    # tracked connection is forgotten); restoring the rule restores them.
    echo = EchoSocket(g1.ns)
    try:
        assert await echo.until_reply(g2.address) is not None
        no_icmp = [r for r in port2.security_rules if r.protocol != "icmp"]
        revised = lab.revise(port2, lab.next_revision(), security_rules=no_icmp)
        await lab.send_port(revised)
        await lab.wait_port(port2.id, revision=revised.revision)
        assert await echo.rtt(g2.address, timeout=1.0) is None
    finally:
        echo.close()
    assert not await g1.ping(g2.address)
    restored = lab.revise(port2, lab.next_revision())
    await lab.send_port(restored)
    await lab.wait_port(port2.id, revision=restored.revision)
    assert await g1.ping_until(g2.address)

    # Anti-spoofing: a forged source address from g1 is dropped, the real one passes.
    await g1.run("ip", "addr", "add", "10.231.1.99/24", "dev", "eth0")
    assert not await g1.ping(g2.address, source="10.231.1.99")
    assert await g1.ping(g2.address, source=g1.address)

    # Disassociating the floating IP makes it unreachable from the host, a ping already
    # running included.
    echo = EchoSocket(None)
    try:
        assert await echo.until_reply("10.231.254.20") is not None
        without_fip = lab.revise(router, lab.next_revision(), floating_ips=[])
        await lab.send_router(without_fip)
        await lab.wait_router(router_id, without_fip.revision)
        assert await echo.rtt("10.231.254.20", timeout=1.0) is None
    finally:
        echo.close()
    assert not await host_ping("10.231.254.20")

    # Deleting everything leaves nothing behind (the guests' taps go with their namespaces,
    # as compute deletes its taps).
    for guest in (g1, g2, g3):
        await guest.delete()
    await lab.send_router(lab.revise(router, lab.next_revision(), deleted=True))
    for spec in (dhcp_a, dhcp_b):
        await lab.send_dhcp(lab.revise(spec, lab.next_revision(), deleted=True))
    for port in (port1, port2, port3):
        await lab.send_port(lab.revise(port, lab.next_revision(), deleted=True))
    await _until_clean(lab, [net_a.id, net_b.id, ext.id], [router_id])


async def test_a_restarted_node_keeps_what_is_wanted_and_removes_strays(lab):
    net_a, dhcp_a, (port1,) = await one_network(lab, NET_A, 1)
    net_b, dhcp_b, (port2,) = await one_network(lab, NET_B, 1)
    g1 = await guest_on(lab, "a", port1)
    await lab.wait_port(port1.id)
    await g1.dhcp()
    await lab.stop_agents()

    # The server now only knows network A; B was deleted while the agents were down.
    from tinystack.network.messages import AgentState
    lab.server.states = {
        "Linux bridge agent": AgentState(ports=[port1], networks=[net_a]),
        "DHCP agent": AgentState(dhcp=[dhcp_a]),
        "L3 agent": AgentState(),
    }
    await lab.start_agents()
    await _until_clean(lab, [net_b.id], [], everything=False)
    assert await g1.ping_until("10.231.1.2"), "network A still works (DHCP port answers)"
    assert host.netns_exists(f"qdhcp-{net_a.id}")
    await lab.wait_port(port1.id)

    # Converged: another audit changes nothing.
    rewrites = lab.l2.filter_rewrites
    await lab.l2.run_once()
    await lab.dhcp_agent.run_once()
    assert lab.l2.filter_rewrites == rewrites


async def _until_clean(lab: Lab, network_ids: list[str], router_ids: list[str],
                       deadline: float = 15.0, everything: bool = True) -> None:
    end = time.monotonic() + deadline
    while True:
        left = leftovers(lab, network_ids, router_ids, everything=everything)
        if not left:
            return
        if time.monotonic() > end:
            raise AssertionError(f"left behind: {left}")
        await asyncio.sleep(0.2)


async def _host_ping_until(address: str, deadline: float = 10.0) -> bool:
    end = time.monotonic() + deadline
    while not await host_ping(address):
        if time.monotonic() > end:
            return False
    return True


async def _tcp_hello(address: str, port: int) -> bytes:
    end = time.monotonic() + 10
    while True:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), 2)
            data = await asyncio.wait_for(reader.read(100), 5)
            writer.close()
            if data:
                return data
        except (OSError, TimeoutError):
            pass
        if time.monotonic() > end:
            return b""
        await asyncio.sleep(0.2)


def _facts(instance_id: str, project_id: str, hostname: str) -> ServerFacts:
    return ServerFacts(id=instance_id, name=hostname, hostname=hostname, project_id=project_id,
                       availability_zone="nova")


async def test_a_guest_on_a_second_node_joins_by_vxlan(two_node_lab):
    lab = two_node_lab
    await lab.add_node("node2", "10.231.250.2")
    network = lab.network(peers=["10.231.250.2"])
    on_node2 = lab.revise(network, lab.next_revision(), vxlan_peers=["10.231.250.1"])
    dhcp_port = lab.port(network, "10.231.1.2", NET_A, owner="network:dhcp", rules=[])
    local = lab.port(network, "10.231.1.11", NET_A)
    remote = lab.port(on_node2, "10.231.1.12", NET_A)
    remote = lab.revise(remote, remote.revision, host="node2")
    spec = lab.dhcp(network, NET_A, dhcp_port, [local, remote])
    await lab.send_port(local)
    await lab.send_port(remote, host="node2")
    await lab.send_dhcp(spec)
    g1 = await guest_on(lab, "a", local)
    g2 = await guest_on(lab, "b", remote, node="node2")
    await lab.wait_port(local.id)
    await lab.wait_port(remote.id)

    assert await g2.dhcp() == "10.231.1.12", "DHCP from the network node crosses VXLAN"
    await g1.dhcp()
    assert await g1.ping_until(g2.address)
    assert await g2.ping_until(g1.address)
    _, mtu = await g2.run("cat", "/sys/class/net/eth0/mtu")
    assert mtu.strip() == "1450"
    _, big = await g2.run("busybox", "ping", "-c", "1", "-W", "2", "-s", "1422", g1.address,
                          check=False)
    assert "1 packets received" in big, "a full 1450-byte packet fits the tunnel"

    # The second node loses its peer: the flood entry goes, the guests no longer meet.
    await lab.send_network(lab.revise(on_node2, lab.next_revision(), vxlan_peers=[]),
                           host="node2")
    assert not await g2.ping_until(g1.address, want=False)


async def test_agents_that_clean_on_exit_leave_nothing_when_stopped(tmp_path):
    from tinystack.network.agents.reconcile import AgentOptions

    lab = Lab(tmp_path, options=AgentOptions(audit_interval=3600, retry_initial=0.2,
                                             retry_max=2.0, clean_on_exit=True))
    try:
        await lab.start()
        network, _, (port,) = await one_network(lab, NET_A, 1)
        ext = lab.network(flat=True)
        router_id = str(uuid.uuid4())
        router = lab.router(router_id, [(network, "10.231.1.1", NET_A)],
                            (ext, "10.231.254.10", EXT), external_gateway_ip="10.231.254.1")
        await lab.send_router(router)
        await lab.wait_router(router_id, router.revision)
        guest = await guest_on(lab, "a", port)
        await lab.wait_port(port.id)
        assert await guest.dhcp() == "10.231.1.11"
        await guest.delete()

        await lab.stop_agents()

        assert leftovers(lab, [network.id, ext.id], [router_id]) == []
    finally:
        await lab.close()


V6_A, V6_B = "fd00:231:1::/64", "fd00:231:2::/64"


def _slaac_port(lab: Lab, network, cidr: str):
    """A guest port whose only address is the EUI-64 one IPAM gives on a slaac subnet."""
    rules = [*DEFAULT_RULES, SecurityRule(direction="ingress", ethertype="IPv6",
                                          protocol="icmp")]
    port = lab.port(network, "10.231.9.9", "10.231.9.0/24", rules=rules)
    address = _eui64(ipaddress.ip_network(cidr), port.mac)
    gateway = str(ipaddress.ip_network(cidr).network_address + 1)
    return lab.revise(port, port.revision, fixed_ips=[
        {"subnet_id": f"subnet-{cidr}", "ip_address": address, "cidr": cidr,
         "gateway_ip": gateway}])


def _eui64(network, mac: str) -> str:
    octets = [int(p, 16) for p in mac.split(":")]
    octets[0] ^= 0x02
    suffix = int.from_bytes(bytes(octets[:3] + [0xFF, 0xFE] + octets[3:]), "big")
    return str(ipaddress.IPv6Address(int(network.network_address) | suffix))


async def _slaac_address(guest: Guest, deadline: float = 20.0) -> list[str]:
    """The guest's global IPv6 addresses once SLAAC gave it one (DAD done)."""
    end = time.monotonic() + deadline
    while True:
        _, out = await guest.run("ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope",
                                 "global")
        found = [line.split()[3] for line in out.splitlines() if "tentative" not in line]
        if found or time.monotonic() > end:
            return found
        await asyncio.sleep(0.2)


async def test_ipv6_slaac_guests_take_their_eui64_address_from_router_advertisements(lab):
    net_a, net_b = lab.network(), lab.network()
    router_id = str(uuid.uuid4())
    router = lab.router(router_id, [(net_a, "fd00:231:1::1", V6_A),
                                    (net_b, "fd00:231:2::1", V6_B)], None)
    router = lab.revise(router, router.revision, interfaces=[
        i.model_copy(update={"ip_version": 6, "ipv6_ra_mode": "slaac",
                             "ipv6_address_mode": "slaac", "gateway_ip": i.ip_address})
        for i in router.interfaces])
    await lab.send_router(router)
    await lab.wait_router(router_id, router.revision)
    ports = [_slaac_port(lab, net_a, V6_A), _slaac_port(lab, net_a, V6_A),
             _slaac_port(lab, net_b, V6_B)]
    for port in ports:
        await lab.send_port(port)
    guests = [await guest_on(lab, n, p) for n, p in zip("abc", ports, strict=True)]
    for port in ports:
        await lab.wait_port(port.id)
    for guest in guests:  # the taps are on their bridges now: solicit an advertisement
        await guest.run("sysctl", "-q", "-w", "net.ipv6.conf.eth0.accept_ra=1")
        await guest.run("ip", "link", "set", "eth0", "down")
        await guest.run("ip", "link", "set", "eth0", "up")

    for guest, port in zip(guests, ports, strict=True):
        assert await _slaac_address(guest) == [f"{port.fixed_ips[0]['ip_address']}/64"]
        guest.address = port.fixed_ips[0]["ip_address"]
    _, routes = await guests[0].run("ip", "-6", "route")
    assert "default via fe80::" in routes
    _, mtu = await guests[0].run("cat", "/proc/sys/net/ipv6/conf/eth0/mtu")
    assert mtu.strip() == "1450", "the advertisement carries the VXLAN MTU"
    g1, g2, g3 = guests
    assert await g1.ping_until("fd00:231:1::1"), "the router's gateway address"
    assert await g1.ping_until(g2.address), "another guest on the network"
    assert await g1.ping_until(g3.address), "a guest on the other network, routed"
    assert await g3.ping_until(g1.address)

    # Anti-spoofing: a made-up IPv6 source is dropped, the SLAAC one passes.
    await g1.run("ip", "-6", "addr", "add", "fd00:231:1::99/64", "dev", "eth0", "nodad")
    assert not await g1.ping(g2.address, source="fd00:231:1::99")
    assert await g1.ping(g2.address, source=g1.address)

    # The RA process follows the interfaces: restarted for one, gone with none.
    ns = f"qrouter-{router_id}"
    _, pids = await sh("ip", "netns", "pids", ns)
    assert len(pids.split()) == 1
    one = lab.revise(router, lab.next_revision(), interfaces=router.interfaces[:1])
    await lab.send_router(one)
    await lab.wait_router(router_id, one.revision)
    _, after = await sh("ip", "netns", "pids", ns)
    assert len(after.split()) == 1 and after.split() != pids.split()
    none = lab.revise(router, lab.next_revision(), interfaces=[])
    await lab.send_router(none)
    await lab.wait_router(router_id, none.revision)
    _, left = await sh("ip", "netns", "pids", ns)
    assert left.split() == []

    for guest in guests:
        await guest.delete()
    await lab.send_router(lab.revise(router, lab.next_revision(), deleted=True))
    for port in ports:
        await lab.send_port(lab.revise(port, lab.next_revision(), deleted=True))
    await _until_clean(lab, [net_a.id, net_b.id], [router_id])
