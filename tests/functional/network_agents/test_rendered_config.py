"""What the Linux drivers render is accepted by the real tools (checked, never loaded).

``nft -c`` parses and checks a ruleset against the kernel without loading it;
``dnsmasq --test`` checks a command line. Both need root and the tools.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tinystack.network.agents.drivers.dnsmasq import DnsmasqDriver
from tinystack.network.agents.drivers.router_ns import RouterNamespaceDriver
from tinystack.network.agents.security_groups import render
from tinystack.network.messages import SecurityRule

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft")
                                or not shutil.which("dnsmasq"),
                                reason="needs root, nft and dnsmasq")


def nft_check(text: str) -> None:
    result = subprocess.run(["nft", "-c", "-f", "-"], input=text, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr + "\n" + text


def test_nft_accepts_every_kind_of_rule_and_pair(specs):
    network = specs.network()
    rules = [SecurityRule(direction="ingress", protocol=p, port_range_min=lo, port_range_max=hi,
                          remote_ip_prefixes=prefixes, ethertype=eth)
             for p, lo, hi, prefixes, eth in [
                 ("tcp", 22, 22, [], "IPv4"), ("udp", 1000, 2000, ["10.0.0.0/8"], "IPv4"),
                 ("icmp", 8, 0, ["192.168.1.7/32"], "IPv4"), (None, None, None, [], "IPv4"),
                 ("gre", None, None, [], "IPv4"), ("tcp", 80, 80, ["2001:db8::/64"], "IPv6"),
                 ("icmp", None, None, [], "IPv6"), ("sctp", 5000, None, [], "IPv4")]]
    rules += [SecurityRule(direction="egress", ethertype="IPv6"),
              SecurityRule(direction="egress", protocol="tcp", port_range_min=443,
                           port_range_max=443, remote_ip_prefixes=["0.0.0.0/0"])]
    ports = [specs.port(network, ip=f"10.0.0.{i}", security_rules=rules,
                        allowed_address_pairs=[{"ip_address": "10.9.0.0/16",
                                                "mac_address": "fa:16:3e:12:34:56"}])
             for i in range(2, 12)]
    ports.append(specs.port(network, ip="10.0.0.50", security_rules=[],
                            fixed_ips=[{"ip_address": "2001:db8::5", "cidr": "2001:db8::/64"}]))

    nft_check(render(ports, table="tinystack_check"))


def test_dnsmasq_accepts_its_command_line(specs, tmp_path):
    network = specs.network()
    spec = specs.dhcp(network, [specs.port(network, ip="10.0.0.5")])
    spec.subnets[0].host_routes.append({"destination": "10.8.0.0/16", "nexthop": "10.0.0.254"})
    spec.subnets[0].dns_nameservers.extend(["10.0.0.53", "10.0.0.54"])
    argv = DnsmasqDriver(state_dir=tmp_path, owner="check")._plan(spec)["argv"]

    result = subprocess.run([*argv, "--test"], capture_output=True, text=True, timeout=30)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "--dhcp-option-force=tag:s0,option:classless-static-route,169.254.169.254/32," \
           "10.0.0.2,10.8.0.0/16,10.0.0.254,0.0.0.0/0,10.0.0.1" in argv


def test_nft_accepts_a_routers_nat(specs, tmp_path):
    router = specs.router(specs.network(), specs.network(flat=True),
                          fips=[("172.24.4.20", "10.0.0.5"), ("172.24.4.21", "10.0.0.6")])
    plan = RouterNamespaceDriver(state_dir=tmp_path, owner="check")._plan(router)

    nft_check(plan["nat"].replace("table ip tinystack_check {}\ndelete table ip tinystack_check\n",
                                  ""))
    assert "ip daddr 172.24.4.20 dnat to 10.0.0.5" in plan["nat"]
    assert "snat to 172.24.4.10" in plan["nat"]


def test_a_new_host_writes_one_file_each_and_reads_none(tmp_path, monkeypatch):
    """The DHCP spec lists every host of the network; adding one must not cost a read or
    a write per host already there (only the new host's files are written)."""
    from pathlib import Path

    from tinystack.network.agents.drivers.dnsmasq import DnsmasqDriver, _lease_max

    driver = DnsmasqDriver(state_dir=tmp_path, owner="test")
    hosts = tmp_path / "hosts"
    hosts.mkdir()
    (hosts / "stale").write_text("fa:16:3e:00:00:99,10.0.0.99,old\n")
    files = {f"p{n}": f"fa:16:3e:00:00:{n:02x},10.0.0.{n},host-{n}\n" for n in range(3, 40)}
    assert driver._write_files(hosts, files) is True, "the stale host was removed"
    assert sorted(p.name for p in hosts.iterdir()) == sorted(files)
    reads = []
    real_read = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: reads.append(self) or
                        real_read(self, *a, **k))
    written = driver.files_written

    files["p40"] = "fa:16:3e:00:00:28,10.0.0.40,host-40\n"
    assert driver._write_files(hosts, files) is False, "an addition needs no restart"
    assert driver.files_written == written + 1 and reads == []
    assert (hosts / "p40").read_text() == files["p40"]
    assert driver._write_files(hosts, files) is False and driver.files_written == written + 1

    assert _lease_max(1) == _lease_max(64) == 256, "dnsmasq's command line does not follow"
    assert _lease_max(65) == 512 and _lease_max(200) == 1024


def test_a_router_on_an_ipv6_slaac_subnet_advertises_it(specs, tmp_path):
    """A router interface on a slaac or dhcpv6-stateless subnet holds the gateway address
    and is advertised by an RA-only dnsmasq (no DNS); an IPv4-only router plans none."""
    from tinystack.network.messages import RouterInterface

    internal = specs.network()
    v4_only = specs.router(internal, specs.network(flat=True))
    driver = RouterNamespaceDriver(state_dir=tmp_path, owner="check")
    assert set(driver._plan(v4_only)) == {"namespace", "devices", "routes", "nat"}

    def v6(cidr: str, mode: str | None, port_id: str) -> RouterInterface:
        gateway = cidr.split("/")[0] + "1"
        return RouterInterface(port_id=port_id, subnet_id=f"s-{cidr}", network_id=internal.id,
                               segment=internal.segment, mac="fa:16:3e:00:00:07",
                               ip_address=gateway, cidr=cidr, ip_version=6,
                               gateway_ip=gateway, ipv6_ra_mode=mode, ipv6_address_mode=mode)
    router = specs.revise(v4_only, specs.revision(), interfaces=[
        *v4_only.interfaces, v6("2001:db8:1::/64", "slaac", "11111111-aaaa"),
        v6("2001:db8:2::/64", "dhcpv6-stateless", "22222222-bbbb"),
        v6("2001:db8:3::/64", "dhcpv6-stateful", "33333333-cccc")])
    plan = driver._plan(router)

    assert plan["devices"]["qr-11111111aaa"]["addresses"] == ["2001:db8:1::1/64"]
    assert plan["ipv6"] is True
    argv = plan["ra"]
    assert {"--enable-ra", "--port=0", "--keep-in-foreground", "--leasefile-ro"} <= set(argv)
    assert "--interface=qr-11111111aaa" in argv and "--interface=qr-22222222bbb" in argv
    assert "--dhcp-range=2001:db8:1::,ra-only,64" in argv
    assert "--dhcp-range=2001:db8:2::,ra-stateless,64" in argv
    assert "--ra-param=qr-11111111aaa,mtu:1450,30,1800" in argv
    assert not any("2001:db8:3::" in a or "qr-33333333ccc" in a for a in argv), \
        "stateful DHCPv6 is not advertised here"
    assert "2001:db8" not in plan["nat"], "IPv6 is routed, never NATed"
    assert driver._is_ours(argv) and not driver._is_ours(["dnsmasq", "--dhcp-leasefile=/x/l"])
    result = subprocess.run([*argv, "--test"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    nft_check(plan["nat"].replace("table ip tinystack_check {}\ndelete table ip tinystack_check\n",
                                  ""))


def test_nft_lets_ipv6_neighbour_discovery_through_and_pins_the_link_local(specs):
    from tinystack.network.agents.security_groups import link_local_address

    network = specs.network()
    port = specs.port(network, fixed_ips=[
        {"ip_address": "10.0.0.5", "cidr": "10.0.0.0/24"},
        {"ip_address": "2001:db8::f816:3eff:feaa:bbcc", "cidr": "2001:db8::/64"}]
    ).model_copy(update={"mac": "fa:16:3e:aa:bb:cc"})
    text = render([port], table="tinystack_check")

    assert link_local_address("fa:16:3e:aa:bb:cc") == "fe80::f816:3eff:feaa:bbcc"
    assert ("ether type ip6 ip6 saddr != { ::, fe80::f816:3eff:feaa:bbcc, "
            "2001:db8::f816:3eff:feaa:bbcc } drop") in text
    assert "fe80::/10" not in text, "only the port's own link-local address"
    assert "ether type ip6 icmpv6 type nd-router-advert drop" in text, "a guest is no router"
    assert ("icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, "
            "mld-listener-query, mld-listener-report, mld-listener-done, "
            "mld2-listener-report } return") in text
    assert ("icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert, "
            "mld-listener-query } accept") in text
    nft_check(text)
