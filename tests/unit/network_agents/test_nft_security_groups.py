"""What security groups become in nftables: per-port chains, marks, anti-spoofing, zones."""

from __future__ import annotations

import re

from tinystack.network.agents.security_groups import filtered, render, table_name
from tinystack.network.messages import NetworkSpec, PortSpec, SecurityRule, Segment, tap_name

NETWORK = NetworkSpec(id="net-1", revision=1,
                      segment=Segment(network_type="vxlan", segmentation_id=77))


def port(port_id: str = "11111111-aaaa", *rules: SecurityRule, **fields) -> PortSpec:
    fields.setdefault("fixed_ips", [{"ip_address": "10.0.0.5", "cidr": "10.0.0.0/24"}])
    fields.setdefault("device_owner", "compute:nova")
    return PortSpec(id=port_id, revision=1, network=NETWORK, mac="fa:16:3e:aa:bb:cc",
                    security_rules=list(rules), **fields)


def chain(text: str, family: str, name: str) -> list[str]:
    table = text.split(f"table {family} tinystack_t {{\n", 1)[1]
    body = table.split(f"  chain {name} {{\n", 1)[1].split("\n  }", 1)[0]
    return [line.strip() for line in body.splitlines()]


def test_no_filtered_port_means_no_tables():
    assert render([], table="tinystack_t") == ""
    assert render([port(port_security_enabled=False)], table="tinystack_t") == ""
    assert render([port(device_owner="network:dhcp")], table="tinystack_t") == ""


def test_tables_are_replaced_atomically_and_carry_a_fingerprint():
    text = render([port()], table=table_name("t"))

    assert text.startswith("table bridge tinystack_t {}\ndelete table bridge tinystack_t\n")
    assert "table inet tinystack_t {}\ndelete table inet tinystack_t\n" in text
    fingerprints = re.findall(r'comment "([0-9a-f]+)"', text)
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]
    assert render([port()], table="tinystack_t") == text, "deterministic"


def test_anti_spoofing_pins_mac_ip_and_arp_and_lets_dhcp_discover_through():
    spoof = chain(render([port()], table="tinystack_t"), "bridge", "spoof_1")

    assert "ether saddr != { fa:16:3e:aa:bb:cc } drop" in spoof
    assert "ether type arp arp saddr ip != { 0.0.0.0, 10.0.0.5 } drop" in spoof
    assert "ether type ip ip saddr 0.0.0.0 udp sport 68 udp dport 67 return" in spoof
    assert "ether type ip udp sport 67 udp dport 68 drop" in spoof
    assert "ether type ip ip saddr != { 10.0.0.5 } drop" in spoof
    assert spoof[-1] == "ether type != { ip, arp, ip6 } drop"


def test_allowed_address_pairs_widen_the_sources():
    pairs = [{"ip_address": "10.0.0.100"}, {"ip_address": "192.168.0.0/24",
                                            "mac_address": "fa:16:3e:00:00:99"}]
    spoof = chain(render([port(allowed_address_pairs=pairs)], table="tinystack_t"),
                  "bridge", "spoof_1")

    assert "ether saddr != { fa:16:3e:aa:bb:cc, fa:16:3e:00:00:99 } drop" in spoof
    assert "ether type ip ip saddr != { 10.0.0.5, 10.0.0.100, 192.168.0.0/24 } drop" in spoof


def test_rules_are_stateful_and_default_deny_inbound():
    rules = [SecurityRule(direction="ingress", protocol="tcp", port_range_min=22,
                          port_range_max=22, remote_ip_prefixes=["10.0.0.0/24"]),
             SecurityRule(direction="ingress", protocol="icmp", port_range_min=8),
             SecurityRule(direction="egress", protocol="udp", port_range_min=53,
                          port_range_max=54)]
    text = render([port("p1", *rules)], table="tinystack_t")
    ingress = chain(text, "inet", "ingress_1")
    egress = chain(text, "inet", "egress_1")

    assert ingress[:3] == ["ct state established,related accept", "ct state invalid drop",
                           "udp sport 67 udp dport 68 accept"]
    assert ("meta nfproto ipv4 meta l4proto 6 tcp dport 22 ip saddr { 10.0.0.0/24 } accept"
            in ingress)
    assert "meta nfproto ipv4 meta l4proto 1 icmp type 8 accept" in ingress
    assert ingress[-1] == "drop"
    assert "meta nfproto ipv4 meta l4proto 17 udp dport 53-54 return" in egress
    assert egress[-1] == "drop"


def test_ports_are_marked_on_the_bridge_and_matched_in_inet():
    a, b = port("aaaaaaaa-1"), port("bbbbbbbb-2")
    text = render([b, a], table="tinystack_t")

    assert f'"{tap_name(a.id)}" : jump from_1' in text
    assert f'"{tap_name(b.id)}" : jump to_2' in text
    assert "meta mark set meta mark & 0x0000ffff | 0x00020000" in chain(text, "bridge", "from_2")
    forward = chain(text, "inet", "forward")
    assert forward[1].startswith('iifname != { "tsbrnet1" } return')
    assert "0x00010000 : jump egress_1" in forward[2]
    assert "0x00000002 : jump ingress_2" in forward[3]


def test_vxlan_networks_get_their_own_conntrack_zone():
    text = render([port()], table="tinystack_t")

    assert 'ct zone set iifname map { "tsbrnet1" : 77 }' in text


def test_any_prefix_and_other_family_prefixes():
    any_rule = SecurityRule(direction="ingress", protocol="icmp", remote_ip_prefixes=["0.0.0.0/0"])
    v6_only = SecurityRule(direction="ingress", protocol="tcp", remote_ip_prefixes=["2001:db8::/64"])
    ingress = chain(render([port("p", any_rule, v6_only)], table="tinystack_t"),
                    "inet", "ingress_1")

    assert "meta nfproto ipv4 meta l4proto 1 accept" in ingress
    assert not any("2001:db8" in line or "l4proto 6" in line for line in ingress)


def test_unknown_protocols_are_left_out_and_names_become_numbers():
    rules = [SecurityRule(direction="ingress", protocol="bogus"),
             SecurityRule(direction="ingress", protocol="gre"),
             SecurityRule(direction="ingress", protocol="132"),
             SecurityRule(direction="ingress", ethertype="IPv6", protocol="icmp")]
    ingress = chain(render([port("p", *rules)], table="tinystack_t"), "inet", "ingress_1")

    assert "meta nfproto ipv4 meta l4proto 47 accept" in ingress
    assert "meta nfproto ipv4 meta l4proto 132 accept" in ingress
    assert "meta nfproto ipv6 meta l4proto 58 accept" in ingress
    assert not any("bogus" in line for line in ingress)


def test_which_ports_are_filtered():
    assert filtered(port())
    assert not filtered(port(port_security_enabled=False))
    assert not filtered(port(device_owner="network:router_interface"))
    assert not filtered(port(deleted=True))
