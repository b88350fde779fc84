"""A network data-plane lab on real Linux: the agents without the API, guests as namespaces.

``Lab`` runs the L2, DHCP and L3 agents and the metadata proxy of one node in
this process on the in-process bus, with ``FakeNetworkServer`` (``tests/fakes``) answering for
``network-server`` (``agent_state`` from specs the test sets, reports kept).
Specs are built by hand (``Lab.network``, ``Lab.port``, ``Lab.dhcp``,
``Lab.router``) and cast to the agents as the network service would.
``Guest`` is a network namespace playing a guest: a veth pair whose host end
is the port's tap name (as compute makes a tap) and whose other end is the
guest's ``eth0``; it takes its address with busybox ``udhcpc`` and pings.

Only private test subnets (10.231.0.0/16) inside namespaces and bridges the
lab makes are used; nothing is sent anywhere else. Everything carries the
lab's owner tag or a ``tsg``/``tsn`` prefix with the lab's id, and
``Lab.sweep()`` removes all of it, pass or fail; ``leftovers()`` lists what a
test left on the machine. Shared by ``test_network_dataplane.py`` and
``bench/network``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from fakes.network_server import FakeNetworkServer

from tinystack.common.bus import connect
from tinystack.network.agents import host
from tinystack.network.agents.dhcp import DhcpAgent
from tinystack.network.agents.drivers.dnsmasq import DnsmasqDriver
from tinystack.network.agents.drivers.linux_bridge import LinuxBridgeDriver, vxlan_name
from tinystack.network.agents.drivers.router_ns import RouterNamespaceDriver
from tinystack.network.agents.l2 import L2Agent
from tinystack.network.agents.l3 import L3Agent
from tinystack.network.agents.metadata import MetadataProxy
from tinystack.network.agents.reconcile import AgentOptions
from tinystack.network.agents.security_groups import table_name
from tinystack.network.messages import (
    SERVER_TARGET,
    DhcpHost,
    DhcpSpec,
    DhcpSubnet,
    FloatingIpSpec,
    NetworkSpec,
    PortSpec,
    RouterInterface,
    RouterSpec,
    SecurityRule,
    Segment,
    bridge_name,
    dhcp_target,
    l2_target,
    l3_target,
    tap_name,
)

__all__ = ["DEFAULT_RULES", "Guest", "Lab", "UDHCPC_SCRIPT", "leftovers",
           "require_root"]

HOST = "lab-node"
DEADLINE = 20.0

DEFAULT_RULES = [
    SecurityRule(direction="egress", ethertype="IPv4"),
    SecurityRule(direction="egress", ethertype="IPv6"),
    SecurityRule(direction="ingress", protocol="icmp"),
    SecurityRule(direction="ingress", protocol="tcp", port_range_min=22, port_range_max=22),
]
"""Egress anywhere, ICMP and SSH in: what bootstrap gives demo's default group."""

UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc calls this with $1 = deconfig | bound | renew | leasefail | nak
case "$1" in
  deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    if [ -n "$staticroutes" ]; then
      set -- $staticroutes
      while [ $# -ge 2 ]; do
        ip route replace "$1" via "$2" dev "$interface"
        shift 2
      done
    elif [ -n "$router" ]; then
      for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    fi
    ;;
esac
exit 0
"""


def require_root() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (namespaces, bridges, nftables)"
    for tool in ("ip", "nft", "dnsmasq", "busybox", "sysctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


async def sh(*argv: str, timeout: float = 20.0, check: bool = True) -> tuple[int, str]:
    """Run a command; (exit code, output)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{' '.join(argv)} took longer than {timeout} s") from None
    text = out.decode(errors="replace")
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}: {text}")
    return proc.returncode, text


class Guest:
    """A namespace playing a guest on a port: ``eth0`` with the port's MAC."""

    def __init__(self, lab: Lab, name: str, port: PortSpec):
        self.lab = lab
        self.ns = f"tsg{lab.id}{name}"
        self.port = port
        self.address: str | None = None

    async def create(self, *, plug: bool = False, node: str | None = None) -> Guest:
        """Make the namespace and the veth (``plug``: also put it on the bridge, as
        compute does when the bridge exists; ``node``: the tap lives in that node's
        namespace, see ``Lab.add_node``)."""
        tap = self.port.device or tap_name(self.port.id)
        await sh("ip", "netns", "add", self.ns)
        self.lab.namespaces.append(self.ns)
        await sh("ip", "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns",
                 self.ns)
        where: list[str] = []
        if node is not None:
            node_ns = self.lab.nodes[node].namespace
            await sh("ip", "link", "set", tap, "netns", node_ns)
            where = ["-n", node_ns]
        await sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        await sh("ip", "-n", self.ns, "link", "set", "eth0", "address", self.port.mac, "up")
        if plug:
            await sh("ip", *where, "link", "set", tap, "master", bridge_name(self.port.network.id))
        await sh("ip", *where, "link", "set", tap, "up")
        return self

    async def run(self, *argv: str, timeout: float = 20.0, check: bool = True) -> tuple[int, str]:
        return await sh("ip", "netns", "exec", self.ns, *argv, timeout=timeout, check=check)

    async def dhcp(self, tries: int = 5) -> str:
        """Take an address with udhcpc (MTU and classless routes asked for); the address."""
        code, out = await self.run(
            "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", str(tries), "-T", "1",
            "-O", "staticroutes", "-O", "mtu", "-s", str(self.lab.udhcpc_script), check=False,
            timeout=tries * 4 + 5)
        if code != 0:
            raise AssertionError(f"udhcpc in {self.ns} got no lease: {out}")
        _, addr = await self.run("ip", "-4", "-o", "addr", "show", "dev", "eth0")
        self.address = addr.split()[3].split("/")[0]
        return self.address

    async def set_address(self, cidr: str, gateway: str | None = None) -> None:
        await self.run("ip", "addr", "add", cidr, "dev", "eth0")
        if gateway:
            await self.run("ip", "route", "replace", "default", "via", gateway)
        self.address = cidr.split("/")[0]

    async def ping(self, address: str, *, count: int = 1, wait: float = 1.0,
                   source: str | None = None) -> bool:
        argv = ["busybox", "ping", "-c", str(count), "-W", f"{max(1, int(wait))}"]
        if source:
            argv += ["-I", source]
        code, _ = await self.run(*argv, address, check=False, timeout=wait * count + 10)
        return code == 0

    async def ping_until(self, address: str, want: bool = True, deadline: float = 10.0,
                         **kwargs) -> bool:
        """Ping once a second until the answer is ``want`` or the deadline passes."""
        end = time.monotonic() + deadline
        while True:
            got = await self.ping(address, **kwargs)
            if got == want or time.monotonic() > end:
                return got
            await asyncio.sleep(0.2)

    async def delete(self) -> None:
        await sh("ip", "netns", "delete", self.ns, check=False)
        if self.ns in self.lab.namespaces:
            self.lab.namespaces.remove(self.ns)


async def host_ping(address: str, *, wait: float = 1.0) -> bool:
    code, _ = await sh("busybox", "ping", "-c", "1", "-W", f"{max(1, int(wait))}", address,
                       check=False, timeout=wait + 10)
    return code == 0


class Lab:
    """One node's network agents in this process, with guests and hand-made specs."""

    def __init__(self, tmp_path: Path, *, metadata_transport=None,
                 options: AgentOptions | None = None, data_ip: str | None = None):
        self.id = uuid.uuid4().hex[:4]
        self.data_ip = data_ip
        """This node's VXLAN address (on the lab's data bridge, made by ``add_node``)."""
        self.nodes: dict[str, L2Agent] = {}
        self.owner = f"lab{self.id}"
        self.tmp = tmp_path
        self.server = FakeNetworkServer()
        self.bus = connect(f"memory://netlab-{self.id}")
        self.options = options or AgentOptions(audit_interval=3600, retry_initial=0.2,
                                               retry_max=2.0)
        self.metadata_transport = metadata_transport
        self.namespaces: list[str] = []
        self.revision = 0
        self.udhcpc_script = tmp_path / "udhcpc.sh"
        self._vni = 20000 + int(self.id, 16) % 20000
        self._tasks: list[asyncio.Task] = []
        self.l2: L2Agent | None = None
        self.dhcp_agent: DhcpAgent | None = None
        self.l3: L3Agent | None = None
        self.metadata: MetadataProxy | None = None

    # -- agents ------------------------------------------------------------------------------

    async def start(self) -> Lab:
        self.udhcpc_script.write_text(UDHCPC_SCRIPT)
        self.udhcpc_script.chmod(0o755)
        await self.bus.start()
        await self.bus.serve(SERVER_TARGET, self.server)
        await self.start_agents()
        return self

    async def start_agents(self, *, run_forever: bool = True) -> None:
        state = self.tmp / "state"
        self.l2 = L2Agent(host=HOST, bus=self.bus, options=self.options,
                          driver=LinuxBridgeDriver(owner=self.owner, local_ip=self.data_ip),
                          data_ip=self.data_ip or "127.0.0.1")
        self.dhcp_agent = DhcpAgent(host=HOST, bus=self.bus, options=self.options, l2=self.l2,
                                    driver=DnsmasqDriver(state_dir=state / "dhcp",
                                                         owner=self.owner))
        self.metadata = MetadataProxy(metadata_url="http://metadata.invalid/metadata",
                                      secret=lambda: "lab-secret", lookup=self.dhcp_agent.lookup,
                                      bus=self.bus, transport=self.metadata_transport)
        self.dhcp_agent.metadata = self.metadata
        self.l3 = L3Agent(host=HOST, bus=self.bus, options=self.options, l2=self.l2,
                          driver=RouterNamespaceDriver(state_dir=state / "l3", owner=self.owner))
        for agent in (self.l2, self.dhcp_agent, self.l3):
            await agent.start()
            await agent.run_once()
            if run_forever:
                self._tasks.append(asyncio.get_running_loop().create_task(agent.run_forever()))

    async def add_node(self, name: str, data_ip: str) -> L2Agent:
        """A second "compute node": a namespace on the lab's data bridge (which carries
        ``self.data_ip``), running its own L2 agent (host ``name``)."""
        data_bridge, node_ns = f"tsd{self.id}", f"tsn{self.id}{name}"
        if not any(n == data_bridge for n, _ in _links()):
            await sh("ip", "link", "add", data_bridge, "type", "bridge")
            await sh("ip", "link", "set", data_bridge, "alias", f"tinystack:{self.owner} data")
            await sh("ip", "addr", "add", f"{self.data_ip}/24", "dev", data_bridge)
            await sh("ip", "link", "set", data_bridge, "up")
        await sh("ip", "netns", "add", node_ns)
        self.namespaces.append(node_ns)
        uplink = f"tsu{self.id}{name}"[:15]
        await sh("ip", "link", "add", uplink, "type", "veth", "peer", "name", "data0",
                 "netns", node_ns)
        await sh("ip", "link", "set", uplink, "alias", f"tinystack:{self.owner} data")
        await sh("ip", "link", "set", uplink, "master", data_bridge, "up")
        await sh("ip", "-n", node_ns, "link", "set", "lo", "up")
        await sh("ip", "-n", node_ns, "addr", "add", f"{data_ip}/24", "dev", "data0")
        await sh("ip", "-n", node_ns, "link", "set", "data0", "up")
        agent = L2Agent(host=name, bus=self.bus, options=self.options, data_ip=data_ip,
                        driver=LinuxBridgeDriver(owner=self.owner, local_ip=data_ip,
                                                 netns=node_ns))
        await agent.start()
        await agent.run_once()
        self._tasks.append(asyncio.get_running_loop().create_task(agent.run_forever()))
        self.nodes[name] = agent
        agent.namespace = node_ns
        return agent

    async def stop_agents(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for agent in (self.l3, self.dhcp_agent, self.l2, *self.nodes.values()):
            if agent is not None:
                with contextlib.suppress(Exception):
                    await agent.stop()

    async def close(self) -> None:
        await self.stop_agents()
        await self.bus.close()
        await self.sweep()

    # -- specs -------------------------------------------------------------------------------

    def next_revision(self) -> int:
        self.revision += 1
        return self.revision

    def network(self, *, flat: bool = False, peers: list[str] | None = None) -> NetworkSpec:
        if flat:
            segment = Segment(network_type="flat", physical_network="public", mtu=1500)
        else:
            self._vni += 1
            segment = Segment(network_type="vxlan", segmentation_id=self._vni, mtu=1450)
        return NetworkSpec(id=str(uuid.uuid4()), revision=self.next_revision(), segment=segment,
                           vxlan_peers=peers or [])

    def port(self, network: NetworkSpec, ip: str, cidr: str, *, rules=None, owner="compute:nova",
             device_id: str | None = None, **fields) -> PortSpec:
        port_id = str(uuid.uuid4())
        net = ipaddress.ip_network(cidr)
        mac = "fa:16:3e:" + ":".join(f"{b:02x}" for b in uuid.uuid4().bytes[:3])
        return PortSpec(id=port_id, revision=self.next_revision(), network=network, mac=mac,
                        fixed_ips=[{"subnet_id": f"subnet-{net}", "ip_address": ip,
                                    "cidr": str(net), "gateway_ip": str(net.network_address + 1)}],
                        device_owner=owner, host=HOST, device_id=device_id or str(uuid.uuid4()),
                        security_rules=list(DEFAULT_RULES if rules is None else rules), **fields)

    def dhcp(self, network: NetworkSpec, cidr: str, dhcp_port: PortSpec, ports: list[PortSpec],
             *, metadata: bool = True, gateway: bool = True, project_id: str = "proj-lab",
             **fields) -> DhcpSpec:
        net = ipaddress.ip_network(cidr)
        subnet = DhcpSubnet(id=f"subnet-{net}", cidr=str(net),
                            gateway_ip=str(net.network_address + 1) if gateway else None)
        hosts = [DhcpHost(port_id=p.id, mac=p.mac, ip_address=p.fixed_ips[0]["ip_address"],
                          hostname=f"host-{p.fixed_ips[0]['ip_address'].replace('.', '-')}",
                          subnet_id=subnet.id, device_id=p.device_id,
                          device_owner=p.device_owner, project_id=project_id)
                 for p in [dhcp_port, *ports]]
        return DhcpSpec(network_id=network.id, revision=self.next_revision(),
                        segment=network.segment, dhcp_port=dhcp_port, subnets=[subnet],
                        hosts=hosts, metadata=metadata, **fields)

    def router(self, router_id: str, interfaces: list[tuple[NetworkSpec, str, str]],
               gateway: tuple[NetworkSpec, str, str] | None, *, fips=(), routes=(),
               external_gateway_ip: str | None = None) -> RouterSpec:
        def iface(network: NetworkSpec, ip: str, cidr: str) -> RouterInterface:
            return RouterInterface(
                port_id=str(uuid.uuid5(uuid.NAMESPACE_OID, f"{router_id}-{network.id}-{ip}")),
                subnet_id=f"subnet-{cidr}", network_id=network.id, segment=network.segment,
                mac="fa:16:3e:" + ":".join(f"{b:02x}" for b in uuid.uuid4().bytes[:3]),
                ip_address=ip, cidr=cidr)
        return RouterSpec(
            id=router_id, revision=self.next_revision(),
            interfaces=[iface(*i) for i in interfaces],
            gateway=iface(*gateway) if gateway else None, external_gateway_ip=external_gateway_ip,
            floating_ips=[FloatingIpSpec(id=f"fip-{f}", floating_ip_address=f,
                                         fixed_ip_address=x) for f, x in fips],
            routes=[{"destination": d, "nexthop": n} for d, n in routes])

    @staticmethod
    def revise(spec, revision: int, **changes):
        return spec.model_copy(update={"revision": revision, **changes})

    # -- the bus, as the network service would use it ----------------------------------------

    async def send_port(self, spec: PortSpec, host: str = HOST) -> None:
        await self.bus.cast(l2_target(host), "sync_port", spec=spec)

    async def send_network(self, spec: NetworkSpec, host: str = HOST) -> None:
        await self.bus.cast(l2_target(host), "sync_network", spec=spec)

    async def send_dhcp(self, spec: DhcpSpec) -> None:
        await self.bus.cast(dhcp_target(HOST), "sync_dhcp", spec=spec)

    async def send_router(self, spec: RouterSpec) -> None:
        await self.bus.cast(l3_target(HOST), "sync_router", spec=spec)

    async def wait_port(self, port_id: str, status: str = "ACTIVE", revision: int | None = None,
                        timeout: float = DEADLINE) -> None:
        def done() -> bool:
            report = self.server.port_status(port_id)
            return (report is not None and report.status == status
                    and (revision is None or report.revision >= revision))
        try:
            await self.server.wait_for(done, timeout)
        except TimeoutError:
            raise AssertionError(f"port {port_id} not {status}: {self.server.port_status(port_id)}") \
                from None

    async def wait_dhcp(self, network_id: str, revision: int, timeout: float = DEADLINE) -> None:
        await self.server.wait_for(lambda: any(
            r.network_id == network_id and r.revision >= revision for r in self.server.dhcp),
            timeout)

    async def wait_router(self, router_id: str, revision: int, timeout: float = DEADLINE) -> None:
        await self.server.wait_for(lambda: any(
            r.router_id == router_id and r.revision >= revision for r in self.server.routers),
            timeout)

    # -- cleaning up -------------------------------------------------------------------------

    async def sweep(self) -> None:
        """Remove everything this lab (or its agents) may have left, whatever happened."""
        for pid in host.find_processes(lambda argv: any(str(self.tmp) in a for a in argv)):
            host.kill(pid, 9)
        for ns in list(self.namespaces):
            await sh("ip", "netns", "delete", ns, check=False)
        self.namespaces.clear()
        for path in (self.tmp / "state" / "dhcp", self.tmp / "state" / "l3"):
            if path.exists():
                for entry in path.iterdir():
                    prefix = "qdhcp-" if path.name == "dhcp" else "qrouter-"
                    await sh("ip", "netns", "delete", prefix + entry.name, check=False)
        for name, alias in _links():
            if alias.startswith(f"tinystack:{self.owner} "):
                await sh("ip", "link", "delete", name, check=False)
        for family in ("bridge", "inet"):
            await sh("nft", "delete", "table", family, table_name(self.owner), check=False)


def _links() -> list[tuple[str, str]]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                         timeout=10).stdout
    found = []
    for line in out.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        alias = line.split(" alias ", 1)[1].strip() if " alias " in line else ""
        found.append((name, alias))
    return found


def leftovers(lab: Lab, network_ids: list[str] = (), router_ids: list[str] = (), *,
              everything: bool = True) -> list[str]:
    """What is still on the machine: of the given networks and routers (their namespaces,
    devices, dnsmasq) and, with ``everything``, anything else of the lab (guests, devices
    with its owner tag, its nft tables, any dnsmasq under its directory)."""
    ids = [*network_ids, *router_ids]
    found = []
    namespaces = set(host.netns_list())
    found += [f"namespace qdhcp-{n}" for n in network_ids if f"qdhcp-{n}" in namespaces]
    found += [f"namespace qrouter-{r}" for r in router_ids if f"qrouter-{r}" in namespaces]
    if everything:
        found += [f"namespace {ns}" for ns in namespaces if ns.startswith(f"tsg{lab.id}")]
    named = {bridge_name(n) for n in network_ids} | {vxlan_name(n) for n in network_ids}
    for name, alias in _links():
        ours = alias.startswith(f"tinystack:{lab.owner} ")
        if name in named or (ours and (everything or any(i in alias for i in ids))):
            found.append(f"device {name} ({alias})")
    if everything:
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                                timeout=10).stdout
        found += [f"nft {line.strip()}" for line in tables.splitlines()
                  if line.strip().endswith(table_name(lab.owner))]
    for pid, argv in host.find_processes(lambda argv: argv[:1] == ["dnsmasq"]).items():
        text = " ".join(argv)
        if str(lab.tmp) in text and (everything or any(n in text for n in network_ids)):
            found.append(f"dnsmasq {pid}")
    return found
