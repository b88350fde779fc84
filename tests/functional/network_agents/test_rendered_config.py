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
