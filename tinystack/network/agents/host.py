"""The network node's hands on the machine: every privileged command and netlink call.

One small function per operation, argv lists (never a shell), a timeout on
each. Links, addresses, routes and FDB entries go through pyroute2's netlink
client (``netlink(netns)`` opens one connection, in the host or in a named
namespace); namespaces through ``ip netns``; packet filtering through
``nft -f -`` (one atomic transaction per call); processes (dnsmasq) are
started as children of the agent and their liveness read from the state
field of ``/proc/PID/stat`` (PID 1 reaps orphans late here, and ``kill -0``
succeeds on a zombie). A failure raises ``HostError`` with the command's own
words.

Nothing here knows about networks or ports; ``drivers/`` decide what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import logging
import os
import signal
import socket
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from tinystack.common.process import pid_alive, process_cmdline, run_command, start_child

__all__ = [
    "HostError",
    "Link",
    "Netlink",
    "NETNS_DIR",
    "ROUTE_PROTO",
    "find_processes",
    "forget_connections",
    "kill",
    "listen_in_netns",
    "netlink",
    "netns_add",
    "netns_delete",
    "netns_exists",
    "netns_inode",
    "netns_list",
    "nft_apply",
    "nft_delete_table",
    "nft_tables",
    "pid_alive",
    "process_cmdline",
    "run",
    "set_bridge_netfilter",
    "start_process",
    "sysctl_set",
    "watch_links",
]

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 10.0
NETLINK_TIMEOUT = 10.0
NETNS_DIR = Path("/run/netns")
"""Where ``ip netns`` keeps the named namespaces."""
ROUTE_PROTO = 84
"""Routing protocol number on every route we add, so we find (and remove) only ours."""
_CLONE_NEWNET = 0x40000000
_NETLINK_ROUTE = 0
_NETLINK_NETFILTER = 12


class HostError(Exception):
    """A command or netlink call failed; the message has its own words."""


# -- commands ------------------------------------------------------------------------------

async def run(argv: list[str], *, timeout: float = COMMAND_TIMEOUT, stdin: bytes | None = None,
              netns: str | None = None) -> str:
    """Run ``argv`` (inside namespace ``netns`` if given); its stdout.

    HostError (with stderr) on failure or timeout.
    """
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    return await run_command(argv, timeout=timeout, stdin=stdin, error=HostError)


# -- namespaces ----------------------------------------------------------------------------

async def netns_add(name: str) -> None:
    """Create namespace ``name``; no error if it exists."""
    if netns_exists(name):
        return
    try:
        await run(["ip", "netns", "add", name])
    except HostError:
        if not netns_exists(name):
            raise


async def netns_delete(name: str) -> None:
    """Delete namespace ``name`` (its devices go with it); no error if it is gone."""
    if not netns_exists(name):
        return
    try:
        await run(["ip", "netns", "delete", name])
    except HostError:
        if netns_exists(name):
            raise


def netns_list() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def netns_inode(name: str) -> int | None:
    """The namespace's inode: it changes when a namespace of that name is made anew."""
    try:
        return os.stat(NETNS_DIR / name).st_ino
    except OSError:
        return None


async def sysctl_set(key: str, value: str, *, netns: str | None = None) -> None:
    """Set ``key`` (``net.ipv4.ip_forward``) in the host or in namespace ``netns``."""
    await run(["sysctl", "-q", "-w", f"{key}={value}"], netns=netns)


def set_bridge_netfilter() -> list[str]:
    """Make bridged IPv4/IPv6 traffic pass the inet hooks (needed for stateful rules).

    Returns the keys it had to switch on (usually none: the kernel default is on).
    """
    changed = []
    for family in ("iptables", "ip6tables"):
        path = Path(f"/proc/sys/net/bridge/bridge-nf-call-{family}")
        try:
            if path.read_text().strip() != "1":
                path.write_text("1\n")
                changed.append(path.name)
        except OSError as exc:
            raise HostError(f"cannot enable {path.name}: {exc.strerror}") from None
    return changed


def _in_netns(netns: str, make: Callable[[], socket.socket]) -> socket.socket:
    """``make()`` run by a short-lived thread that first enters namespace ``netns``.

    ``setns`` applies to the calling thread only, and a socket stays in the
    namespace it was made in whoever uses it, so the agent serves it from the
    host. No process is forked: a forked copy of this process would share its
    event loop's signal wakeup descriptor, and a signal sent to that copy
    would reach the loop as if sent to the agent (pyroute2's own way to open a
    socket in a namespace forks).
    """
    result: dict = {}

    def run_in_thread() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(NETNS_DIR / netns, "rb") as ns:
                if libc.setns(ns.fileno(), _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            result["sock"] = make()
        except OSError as exc:
            result["error"] = exc

    thread = threading.Thread(target=run_in_thread, name=f"in-{netns}", daemon=True)
    thread.start()
    thread.join(COMMAND_TIMEOUT)
    if "sock" in result:
        return result["sock"]
    exc = result.get("error")
    raise HostError(f"in namespace {netns}: {exc.strerror if exc else 'timed out'}")


def listen_in_netns(netns: str, address: str, port: int, *, backlog: int = 128) -> socket.socket:
    """A listening TCP socket on ``address:port`` inside namespace ``netns``."""
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock
    try:
        return _in_netns(netns, make)
    except HostError as exc:
        raise HostError(f"cannot listen on {address}:{port}: {exc}") from None


def _netlink_fd(netns: str | None, protocol: int) -> dict:
    """Keyword arguments giving a pyroute2 socket its netlink socket in ``netns``."""
    if netns is None:
        return {}
    sock = _in_netns(netns, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM,
                                                  protocol))
    return {"fileno": sock.detach()}


# -- nftables ------------------------------------------------------------------------------

async def nft_apply(ruleset: str, *, netns: str | None = None) -> None:
    """Load ``ruleset`` (nft syntax) as one atomic transaction."""
    await run(["nft", "-f", "-"], stdin=ruleset.encode(), netns=netns)


async def nft_tables(*, netns: str | None = None) -> list[dict]:
    """``[{"family", "name", "comment"}]`` of every table."""
    out = await run(["nft", "-j", "list", "tables"], netns=netns)
    tables = []
    for item in orjson.loads(out or b'{"nftables": []}').get("nftables", []):
        table = item.get("table")
        if table:
            tables.append({"family": table["family"], "name": table["name"],
                           "comment": table.get("comment", "")})
    return tables


async def nft_delete_table(family: str, name: str, *, netns: str | None = None) -> None:
    """Delete a table; no error if it is gone."""
    await nft_apply(f"table {family} {name} {{}}\ndelete table {family} {name}\n", netns=netns)


# -- processes -----------------------------------------------------------------------------

async def start_process(argv: list[str], *, log_path: Path,
                        netns: str | None = None) -> asyncio.subprocess.Process:
    """Start ``argv`` (inside ``netns``) as our child in its own session; output to ``log_path``.

    ``ip netns exec`` execs the command, so the child's pid is the command's.
    """
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    return await start_child(argv, log_path=log_path, error=HostError)


def find_processes(match: Callable[[list[str]], bool]) -> dict[int, list[str]]:
    """Live processes (not us) whose command line ``match`` accepts: pid -> argv."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        argv = process_cmdline(int(entry.name))
        if argv and match(argv) and pid_alive(int(entry.name)):
            found[int(entry.name)] = argv
    return found


def kill(pid: int, sig: int = signal.SIGTERM) -> None:
    """Send ``sig``; no error if the process is already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


# -- netlink -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Link:
    """One network device as netlink shows it."""

    name: str
    index: int
    kind: str
    """"bridge", "vxlan", "veth", "tun" (taps), ... or "" for plain devices."""
    alias: str
    master: int | None
    up: bool
    mtu: int
    mac: str
    vni: int | None = None
    vxlan_local: str | None = None


def _link(msg) -> Link:
    kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""
    vni = local = None
    if kind == "vxlan":
        vni = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_VXLAN_ID")
        local = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_VXLAN_LOCAL")
    return Link(name=msg.get("ifname"), index=msg["index"], kind=kind,
                alias=msg.get("ifalias") or "", master=msg.get("master") or None,
                up=bool(msg["flags"] & 1), mtu=msg.get("mtu") or 0,
                mac=(msg.get("address") or "").lower(), vni=vni, vxlan_local=local)


class Netlink:
    """One netlink connection (host or namespace); each method is one operation.

    Get one with ``async with netlink(netns) as nl``. Names are device names in
    that namespace. Removals are quiet when the thing is already gone.
    """

    def __init__(self, ipr, netns: str | None):
        self._ipr = ipr
        self.netns = netns

    async def _call(self, what: str, coro):
        try:
            async with asyncio.timeout(NETLINK_TIMEOUT):
                return await coro
        except TimeoutError:
            raise HostError(f"netlink: {what} did not answer within {NETLINK_TIMEOUT:g} s") from None
        except OSError as exc:
            where = f" in {self.netns}" if self.netns else ""
            raise HostError(f"netlink: {what}{where}: {exc}") from None

    async def _index(self, name: str) -> int | None:
        found = await self._call(f"lookup {name}", self._ipr.link_lookup(ifname=name))
        return found[0] if found else None

    async def _need(self, name: str) -> int:
        index = await self._index(name)
        if index is None:
            where = f" in {self.netns}" if self.netns else ""
            raise HostError(f"no network device {name!r}{where}")
        return index

    # links

    async def links(self) -> list[Link]:
        async def dump():
            return [_link(m) async for m in await self._ipr.get_links()]
        return await self._call("dump links", dump())

    async def link(self, name: str) -> Link | None:
        index = await self._index(name)
        return None if index is None else await self.link_by_index(index)

    async def link_by_index(self, index: int) -> Link | None:
        async def get():
            try:
                return [_link(m) async for m in await self._ipr.get_links(index)]
            except OSError as exc:
                if getattr(exc, "code", None) == 19:  # ENODEV: gone meanwhile
                    return []
                raise
        found = await self._call(f"get link {index}", get())
        return found[0] if found else None

    async def add_bridge(self, name: str, *, alias: str, mtu: int) -> None:
        await self._call(f"add bridge {name}", self._ipr.link(
            "add", ifname=name, kind="bridge", br_stp_state=0, br_forward_delay=0))
        await self.set_link(name, up=True, mtu=mtu, alias=alias)

    async def add_vxlan(self, name: str, *, vni: int, local: str | None, port: int, alias: str,
                        mtu: int) -> None:
        fields = {"vxlan_id": vni, "vxlan_port": port, "vxlan_learning": 0}
        if local:
            fields["vxlan_local"] = local
        await self._call(f"add vxlan {name}", self._ipr.link(
            "add", ifname=name, kind="vxlan", **fields))
        await self.set_link(name, up=True, mtu=mtu, alias=alias)

    async def add_veth(self, name: str, peer: str, *, peer_netns: str, alias: str) -> None:
        """A veth pair: ``name`` here, ``peer`` inside namespace ``peer_netns``."""
        await self._call(f"add veth {name}", self._ipr.link(
            "add", ifname=name, kind="veth", peer={"ifname": peer, "net_ns_fd": peer_netns}))
        await self.set_link(name, alias=alias)  # the kernel ignores an alias given at creation

    async def set_link(self, name: str, *, up: bool | None = None, mtu: int | None = None,
                       alias: str | None = None, master: str | None = None,
                       nomaster: bool = False, mac: str | None = None) -> None:
        index = await self._need(name)
        fields: dict = {}
        if mac is not None:
            fields["address"] = mac
        if mtu:
            fields["mtu"] = mtu
        if alias is not None:
            fields["ifalias"] = alias
        if master is not None:
            fields["master"] = await self._need(master)
        elif nomaster:
            fields["master"] = 0
        if fields:
            await self._call(f"set {name}", self._ipr.link("set", index=index, **fields))
        if up is not None:
            await self._call(f"set {name} {'up' if up else 'down'}", self._ipr.link(
                "set", index=index, state="up" if up else "down"))

    async def delete_link(self, name: str) -> None:
        index = await self._index(name)
        if index is not None:
            try:
                await self._call(f"delete {name}", self._ipr.link("del", index=index))
            except HostError:
                if await self._index(name) is not None:
                    raise

    # bridge forwarding database (VXLAN flood entries)

    async def flood_entries(self, name: str) -> set[str]:
        """Remote addresses of the all-zero (flood) FDB entries of VXLAN device ``name``."""
        index = await self._need(name)

        async def dump():
            return {m.get("NDA_DST") async for m in await self._ipr.fdb("dump", ifindex=index)
                    if m.get("NDA_LLADDR") == "00:00:00:00:00:00" and m.get("NDA_DST")
                    and m["ifindex"] == index}
        return await self._call(f"fdb dump {name}", dump())

    async def add_flood_entry(self, name: str, remote: str) -> None:
        index = await self._need(name)
        await self._call(f"fdb append {name} {remote}", self._ipr.fdb(
            "append", ifindex=index, lladdr="00:00:00:00:00:00", dst=remote))

    async def delete_flood_entry(self, name: str, remote: str) -> None:
        index = await self._need(name)
        await self._call(f"fdb del {name} {remote}", self._ipr.fdb(
            "del", ifindex=index, lladdr="00:00:00:00:00:00", dst=remote))

    # addresses

    async def addresses(self, name: str) -> set[str]:
        """IPv4/IPv6 addresses of device ``name`` as ``address/prefixlen`` (link-local left out)."""
        index = await self._need(name)

        async def dump():
            found = set()
            async for msg in await self._ipr.addr("dump", index=index):
                address = msg.get("IFA_ADDRESS")
                if address and not address.startswith("fe80:"):
                    found.add(f"{address}/{msg['prefixlen']}")
            return found
        return await self._call(f"addresses of {name}", dump())

    async def add_address(self, name: str, cidr: str) -> None:
        index = await self._need(name)
        iface = ipaddress.ip_interface(cidr)
        fields = {}
        if iface.version == 4:
            fields["broadcast"] = str(iface.network.broadcast_address)
        await self._call(f"add address {cidr} to {name}", self._ipr.addr(
            "add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen, **fields))

    async def delete_address(self, name: str, cidr: str) -> None:
        index = await self._need(name)
        iface = ipaddress.ip_interface(cidr)
        await self._call(f"delete address {cidr} from {name}", self._ipr.addr(
            "del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen))

    # routes (only ours: protocol ROUTE_PROTO)

    async def routes(self) -> dict[str, str]:
        """Our routes in the main table: ``destination/len`` -> next hop."""
        async def dump():
            found = {}
            async for msg in await self._ipr.route("dump", table=254):
                if msg["proto"] != ROUTE_PROTO:
                    continue
                dst = msg.get("RTA_DST") or ("0.0.0.0" if msg["family"] == socket.AF_INET else "::")
                found[f"{dst}/{msg['dst_len']}"] = msg.get("RTA_GATEWAY") or ""
            return found
        return await self._call("dump routes", dump())

    async def replace_route(self, destination: str, nexthop: str) -> None:
        net = ipaddress.ip_network(destination, strict=False)
        await self._call(f"route {destination} via {nexthop}", self._ipr.route(
            "replace", dst=str(net.network_address), dst_len=net.prefixlen, gateway=nexthop,
            proto=ROUTE_PROTO))

    async def delete_route(self, destination: str) -> None:
        net = ipaddress.ip_network(destination, strict=False)
        with contextlib.suppress(HostError):
            await self._call(f"delete route {destination}", self._ipr.route(
                "del", dst=str(net.network_address), dst_len=net.prefixlen, proto=ROUTE_PROTO))


async def forget_connections(*, netns: str | None = None, zone: int | None = None,
                             orig_sources: set[str] = frozenset(),
                             orig_destinations: set[str] = frozenset(),
                             reply_destinations: set[str] = frozenset()) -> int:
    """Delete conntrack entries (of ``zone``, in ``netns``) whose original source or
    destination, or reply destination, is one of the given addresses; how many.

    A connection allowed by a rule that is gone would otherwise live on as
    ``established``; NAT of a floating IP that is gone likewise.

    Runs in a thread with an event loop of its own: pyroute2 sends each request
    with a blocking ``send``, in which the kernel walks the whole conntrack table,
    and the agents' loop must not wait for that.
    """
    return await asyncio.to_thread(asyncio.run, _forget_connections(
        netns=netns, zone=zone, orig_sources=orig_sources,
        orig_destinations=orig_destinations, reply_destinations=reply_destinations))


async def _forget_connections(*, netns: str | None, zone: int | None, orig_sources: set[str],
                              orig_destinations: set[str],
                              reply_destinations: set[str]) -> int:
    from pyroute2.conntrack import AsyncConntrack  # noqa: PLC0415

    deleted = 0
    try:
        async with asyncio.timeout(NETLINK_TIMEOUT):
            fd = await asyncio.to_thread(_netlink_fd, netns, _NETLINK_NETFILTER)
            async with AsyncConntrack(**fd) as ct:
                doomed = []
                async for entry in await ct.dump_entries(zone=zone):
                    if zone is not None and (entry.zone or 0) != zone:
                        continue
                    if (entry.tuple_orig.saddr in orig_sources
                            or entry.tuple_orig.daddr in orig_destinations
                            or entry.tuple_reply.daddr in reply_destinations):
                        doomed.append(entry)
                for entry in doomed:
                    try:
                        await ct.entry("del", tuple_orig=entry.tuple_orig, zone=zone or None)
                        deleted += 1
                    except OSError:
                        pass  # it ended meanwhile
    except TimeoutError:
        raise HostError(f"conntrack did not answer within {NETLINK_TIMEOUT:g} s") from None
    except OSError as exc:
        raise HostError(f"conntrack: {exc}") from None
    return deleted


@contextlib.asynccontextmanager
async def netlink(netns: str | None = None) -> AsyncIterator[Netlink]:
    """A netlink connection in the host (``None``) or in namespace ``netns``."""
    from pyroute2 import AsyncIPRoute  # noqa: PLC0415 - only network nodes need it

    if netns is not None and not netns_exists(netns):
        raise HostError(f"no network namespace {netns!r}")
    try:
        async with asyncio.timeout(NETLINK_TIMEOUT):
            ipr = AsyncIPRoute(**await asyncio.to_thread(_netlink_fd, netns, _NETLINK_ROUTE))
            await ipr.__aenter__()
    except TimeoutError:
        raise HostError(f"netlink did not open within {NETLINK_TIMEOUT:g} s") from None
    except OSError as exc:
        raise HostError(f"netlink: {exc}") from None
    try:
        yield Netlink(ipr, netns)
    finally:
        with contextlib.suppress(Exception):
            await ipr.__aexit__(None, None, None)


async def watch_links(on_link: Callable[[str], None], *, netns: str | None = None,
                      ready: asyncio.Event | None = None) -> None:
    """Call ``on_link(name)`` when a device appears or its bridge (master) changes, until
    cancelled; other changes (up, MTU, counters) of a known device are not told."""
    from pyroute2 import AsyncIPRoute  # noqa: PLC0415
    from pyroute2.netlink.rtnl import RTMGRP_LINK  # noqa: PLC0415

    masters: dict[int, int | None] = {}
    async with AsyncIPRoute(**await asyncio.to_thread(_netlink_fd, netns, _NETLINK_ROUTE)) as ipr:
        await ipr.bind(groups=RTMGRP_LINK)
        if ready is not None:
            ready.set()
        while True:  # each get() yields one batch of messages
            async for msg in ipr.get():
                event, index = msg.get("event"), msg.get("index")
                if event == "RTM_DELLINK":
                    masters.pop(index, None)
                    continue
                if event != "RTM_NEWLINK" or not msg.get("ifname"):
                    continue
                master = msg.get("master") or None
                if index in masters and masters[index] == master:
                    continue  # a change of a device we already told about, still plugged
                masters[index] = master
                try:
                    on_link(msg.get("ifname"))
                except Exception:
                    log.exception("network: link watcher callback failed")
