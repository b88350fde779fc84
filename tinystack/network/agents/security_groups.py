"""Security groups and anti-spoofing of a node's ports, as one nftables ruleset.

``render(ports, table=..., bridges=...)`` turns the ports bound to this node
into the text ``nft -f`` loads in one transaction. Two tables, both named
``table`` (the node's owner tag keeps two tinystack instances on one machine
apart):

- ``bridge <table>``: per-port anti-spoofing at prerouting (a frame from a
  port must carry its MAC, and its IPv4/IPv6 source and ARP sender must be
  one of its fixed IPs or allowed address pairs, or for IPv6 the
  link-local address (EUI-64) of one of its MACs; a guest may not answer
  as a DHCP server nor send router advertisements; only IPv4, ARP and IPv6
  pass), and a forward chain that
  marks each bridged packet with the index of the port it came from (upper
  16 bits) and the port it goes to (lower 16 bits).
- ``inet <table>``: the kernel has no conntrack in the bridge family, but
  bridged IP packets also pass the inet hooks (``bridge-nf-call-iptables``),
  where ``iifname`` is the bridge. There the forward chain sends a packet
  marked with a port's index through that port's egress chain (``return``
  when allowed) and its ingress chain (``accept``); both start with
  ``ct state established,related`` and end in ``drop``, so the rules are
  stateful and inbound is denied unless a rule allows it. IPv6 neighbour
  discovery always passes, as in Neutron: neighbour solicitations and
  advertisements both ways, router solicitations and multicast listener
  reports out, router advertisements and listener queries in (conntrack
  leaves these untracked). A raw prerouting
  chain puts each VXLAN network in its own conntrack zone (its VNI), so
  overlapping tenant addresses never share connection state.

Ports with ``port_security_enabled`` false, and the network's own ports
(``device_owner`` ``network:*``: router, DHCP), get no chains at all: no
filtering, as Neutron does. The whole text has a fingerprint (the table
comment), so a converged node rewrites nothing.

Read ``drivers/linux_bridge.py`` next: it loads this and inspects it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from collections.abc import Iterable

from tinystack.network.messages import PortSpec, SecurityRule, bridge_name, tap_name

__all__ = ["PROTOCOL_NUMBERS", "ZONE_LIMIT", "filtered", "fingerprint_of",
           "link_local_address", "render", "table_name"]

log = logging.getLogger(__name__)

PROTOCOL_NUMBERS = {
    "hopopt": 0, "icmp": 1, "igmp": 2, "ipip": 4, "tcp": 6, "egp": 8, "udp": 17, "dccp": 33,
    "ipv6-encap": 41, "ipv6-route": 43, "ipv6-frag": 44, "rsvp": 46, "gre": 47, "esp": 50,
    "ah": 51, "ipv6-icmp": 58, "icmpv6": 58, "ipv6-nonxt": 59, "ipv6-opts": 60, "ospf": 89,
    "pim": 103, "vrrp": 112, "pgm": 113, "sctp": 132, "udplite": 136,
}
"""Protocol names Neutron accepts in a rule, as IP protocol numbers."""

_PORT_PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp", 33: "dccp", 136: "udplite"}
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
ZONE_LIMIT = 65000
"""VXLAN networks with a VNI below this get it as their conntrack zone (zones are 16 bits)."""


def table_name(owner: str) -> str:
    """The name of both tables of the instance tagged ``owner``."""
    return f"tinystack_{owner}"


def filtered(port: PortSpec) -> bool:
    """True when the port gets anti-spoofing and security group chains."""
    return (port.port_security_enabled and not port.deleted
            and not port.device_owner.startswith("network:"))


def fingerprint_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _device(port: PortSpec) -> str:
    return port.device or tap_name(port.id)


def _quote(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", name):
        raise ValueError(f"unsafe device name {name!r}")
    return f'"{name}"'


def _macs(port: PortSpec) -> list[str]:
    macs = [port.mac.lower()] if port.mac else []
    for pair in port.allowed_address_pairs:
        mac = (pair.get("mac_address") or "").lower()
        if mac and mac not in macs:
            macs.append(mac)
    return [m for m in macs if _MAC_RE.match(m)]


def link_local_address(mac: str) -> str:
    """The fe80::/64 address a host with ``mac`` gives itself (modified EUI-64)."""
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    interface = bytes(octets[:3] + [0xFF, 0xFE] + octets[3:])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + interface))


def _sources(port: PortSpec) -> tuple[list[str], list[str]]:
    """The IPv4 and IPv6 sources (addresses or prefixes) the port may use."""
    v4: list[str] = []
    v6: list[str] = []
    candidates = [ip.get("ip_address", "") for ip in port.fixed_ips]
    candidates += [pair.get("ip_address", "") for pair in port.allowed_address_pairs]
    for candidate in candidates:
        try:
            net = ipaddress.ip_network(candidate, strict=False)
        except ValueError:
            continue
        text = str(net.network_address) if net.num_addresses == 1 else str(net)
        target = v4 if net.version == 4 else v6
        if text not in target:
            target.append(text)
    return v4, v6


def _set(items: Iterable[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _spoof_chain(port: PortSpec, chain: str) -> list[str]:
    macs = _macs(port)
    v4, v6 = _sources(port)
    lines = [f"  chain {chain} {{"]
    if macs:
        lines.append(f"    ether saddr != {_set(macs)} drop")
        lines.append(f"    ether type arp arp saddr ether != {_set(macs)} drop")
    else:
        lines.append("    drop")
    arp_ips = ["0.0.0.0", *v4]
    lines.append(f"    ether type arp arp saddr ip != {_set(arp_ips)} drop")
    lines.append("    ether type ip ip saddr 0.0.0.0 udp sport 68 udp dport 67 return")
    lines.append("    ether type ip udp sport 67 udp dport 68 drop")
    if v4:
        lines.append(f"    ether type ip ip saddr != {_set(v4)} drop")
    else:
        lines.append("    ether type ip drop")
    link_local = [link_local_address(mac) for mac in macs]
    lines.append(f"    ether type ip6 ip6 saddr != {_set(['::', *link_local, *v6])} drop")
    lines.append("    ether type ip6 udp sport 547 udp dport 546 drop")
    lines.append("    ether type ip6 icmpv6 type nd-router-advert drop")
    lines.append("    ether type != { ip, arp, ip6 } drop")
    lines.append("  }")
    return lines


def _rule_match(rule: SecurityRule) -> str | None:
    """The nft match of one rule (without verdict), or None when it can never match."""
    v6 = rule.ethertype == "IPv6"
    parts = ["meta nfproto ipv6" if v6 else "meta nfproto ipv4"]
    protocol = (rule.protocol or "").lower()
    number: int | None = None
    if protocol in ("", "any", "-1"):
        number = None
    elif protocol.isdigit():
        number = int(protocol)
    elif protocol in PROTOCOL_NUMBERS:
        number = PROTOCOL_NUMBERS[protocol]
    else:
        log.warning("security groups: unknown protocol %r; rule left out", rule.protocol)
        return None
    if number is not None and not 0 <= number <= 255:
        return None
    if number == 1 and v6:
        number = 58
    if number is not None:
        parts.append(f"meta l4proto {number}")
    low, high = rule.port_range_min, rule.port_range_max
    if number in _PORT_PROTOCOLS and low is not None:
        ports = str(low) if high is None or high == low else f"{low}-{high}"
        parts.append(f"{_PORT_PROTOCOLS[number]} dport {ports}")
    elif number in (1, 58) and low is not None:
        word = "icmpv6" if number == 58 else "icmp"
        parts.append(f"{word} type {low}")
        if high is not None:
            parts.append(f"{word} code {high}")
    prefixes = []
    for prefix in rule.remote_ip_prefixes:
        try:
            net = ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            continue
        if net.version != (6 if v6 else 4):
            continue
        if net.prefixlen == 0:
            prefixes = []
            break
        prefixes.append(str(net))
    else:
        if rule.remote_ip_prefixes and not prefixes:
            return None  # only prefixes of the other family: matches nothing
    if prefixes:
        field = ("saddr" if rule.direction == "ingress" else "daddr")
        parts.append(f"{'ip6' if v6 else 'ip'} {field} {_set(prefixes)}")
    return " ".join(parts)


_ND = "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert, mld-listener-query }"
_ND_OUT = ("icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, "
           "mld-listener-query, mld-listener-report, mld-listener-done, mld2-listener-report }")


def _filter_chains(port: PortSpec, egress: str, ingress: str) -> list[str]:
    lines = [f"  chain {egress} {{",
             "    ct state established,related return",
             "    ct state invalid drop",
             "    udp sport 68 udp dport 67 return",
             f"    {_ND_OUT} return"]
    ingress_lines = [f"  chain {ingress} {{",
                     "    ct state established,related accept",
                     "    ct state invalid drop",
                     "    udp sport 67 udp dport 68 accept",
                     f"    {_ND} accept"]
    for rule in port.security_rules:
        match = _rule_match(rule)
        if match is None:
            continue
        if rule.direction == "egress":
            lines.append(f"    {match} return")
        else:
            ingress_lines.append(f"    {match} accept")
    lines += ["    drop", "  }"]
    ingress_lines += ["    drop", "  }"]
    return lines + ingress_lines


def _zone(port: PortSpec) -> int | None:
    network = port.network
    if network is None or network.segment.network_type != "vxlan":
        return None
    vni = network.segment.segmentation_id or 0
    return vni if 0 < vni < ZONE_LIMIT else None


def render(ports: Iterable[PortSpec], *, table: str) -> str:
    """The nft text that replaces both tables with what ``ports`` need.

    ``ports`` are the live ports bound here (with their ``network``); the
    ones that are not ``filtered`` only decide conntrack zones. With no port
    to filter the answer is "": the tables should not exist at all.
    """
    ports = sorted((p for p in ports if not p.deleted), key=lambda p: p.id)
    chosen = [p for p in ports if filtered(p)][:65535]
    if not chosen:
        return ""
    bridges: dict[str, int | None] = {}
    for port in ports:
        if port.network is not None:
            bridges[bridge_name(port.network.id)] = _zone(port)

    bridge_lines = [f"table bridge {table} {{", '  comment "FINGERPRINT"']
    spoof_map, from_map, to_map = [], [], []
    inet_chains: list[str] = []
    egress_map, ingress_map = [], []
    for index, port in enumerate(chosen, start=1):
        device = _quote(_device(port))
        bridge_lines += _spoof_chain(port, f"spoof_{index}")
        bridge_lines += [f"  chain from_{index} {{",
                         f"    meta mark set meta mark & 0x0000ffff | 0x{index << 16:08x}", "  }",
                         f"  chain to_{index} {{",
                         f"    meta mark set meta mark & 0xffff0000 | 0x{index:08x}", "  }"]
        spoof_map.append(f"{device} : jump spoof_{index}")
        from_map.append(f"{device} : jump from_{index}")
        to_map.append(f"{device} : jump to_{index}")
        inet_chains += _filter_chains(port, f"egress_{index}", f"ingress_{index}")
        egress_map.append(f"0x{index << 16:08x} : jump egress_{index}")
        ingress_map.append(f"0x{index:08x} : jump ingress_{index}")
    bridge_lines += ["  chain prerouting {",
                     "    type filter hook prerouting priority -300; policy accept;"]
    if spoof_map:
        bridge_lines.append(f"    iifname vmap {_set(spoof_map)}")
    bridge_lines += ["  }", "  chain forward {",
                     "    type filter hook forward priority -300; policy accept;"]
    if from_map:
        bridge_lines.append(f"    iifname vmap {_set(from_map)}")
        bridge_lines.append(f"    oifname vmap {_set(to_map)}")
    bridge_lines += ["  }", "}"]

    inet_lines = [f"table inet {table} {{", '  comment "FINGERPRINT"', *inet_chains,
                  "  chain prerouting {",
                  "    type filter hook prerouting priority -300; policy accept;"]
    zones = [f"{_quote(name)} : {zone}" for name, zone in sorted(bridges.items()) if zone]
    if zones:
        inet_lines.append(f"    ct zone set iifname map {_set(zones)}")
    inet_lines += ["  }", "  chain forward {",
                   "    type filter hook forward priority 0; policy accept;"]
    if egress_map:
        inet_lines.append(f"    iifname != {_set(_quote(b) for b in sorted(bridges))} return")
        inet_lines.append(f"    meta mark & 0xffff0000 vmap {_set(egress_map)}")
        inet_lines.append(f"    meta mark & 0x0000ffff vmap {_set(ingress_map)}")
    inet_lines += ["  }", "}"]

    body = [f"table bridge {table} {{}}", f"delete table bridge {table}", *bridge_lines,
            f"table inet {table} {{}}", f"delete table inet {table}", *inet_lines]
    text = "\n".join(body) + "\n"
    return text.replace("FINGERPRINT", fingerprint_of(text))
