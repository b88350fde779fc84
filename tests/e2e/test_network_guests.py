"""Real guests on real networks, driven by the real ``openstack`` CLI through ``tinystack up``.

Servers boot the ``tiny`` image on demo's bootstrap network ``private`` (``networks:
auto``, as the CLI asks when no ``--nic`` is given), take their addresses by DHCP,
read hostname and SSH key from the metadata service, reach each other and, through
``router1``, a server on a second network; the host reaches them by floating IP, as
the security group and the association allow. Commands inside a guest run over SSH
(dropbear in the guest, the key from metadata) through its floating IP.

One set of guests serves the whole module (booting is the slow part); the tests run
in order and each leaves the cloud as it found it.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from guests import ssh
from netlab import require_root

pytestmark = [pytest.mark.skipif(require_root() is not None, reason=require_root() or ""),
              pytest.mark.backends(brokers=1)]

READY = re.compile(r"tinystack-guest ready: hostname=(\S+) addresses=(\S+)")
BOOT_DEADLINE = 180.0


def cli_json(ts, *args: str, cloud: str = "tinystack"):
    out = ts.openstack(*args, "-f", "json", cloud=cloud).stdout
    return json.loads(out) if out.strip() else None


def wait_for_ready(ts, server: str) -> tuple[str, str]:
    """The (hostname, addresses) of the guest's ready line on its console."""
    deadline = time.monotonic() + BOOT_DEADLINE
    while True:
        log = ts.openstack("console", "log", "show", server, cloud="tinystack").stdout
        found = READY.search(log)
        if found:
            return found.group(1), found.group(2)
        if time.monotonic() > deadline:
            raise AssertionError(f"{server} printed no ready line:\n{log[-3000:]}")
        time.sleep(1)


def host_ping(address: str) -> bool:
    return subprocess.run(["busybox", "ping", "-c", "1", "-W", "1", address],
                          capture_output=True, timeout=15).returncode == 0


def ping_until(address: str, want: bool, deadline: float = 30.0) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if host_ping(address) == want:
            return True
        time.sleep(0.3)
    return False


class Guests:
    """The module's servers: name -> fixed address, and how to run a command in one."""

    def __init__(self, ts, key: Path):
        self.ts, self.key = ts, key
        self.fixed: dict[str, str] = {}

    def boot(self, name: str, *nic: str) -> None:
        cli_json(self.ts, "server", "create", "--image", "tiny", "--flavor", "m1.nano",
                 "--key-name", "e2e", *nic, name)

    def ssh(self, address: str, command: str, *, check: bool = True,
            timeout: float = 30) -> subprocess.CompletedProcess:
        result = ssh(self.key, address, command, timeout)
        if check:
            assert result.returncode == 0, (command, result.returncode, result.stderr)
        return result


@pytest.fixture(scope="module")
def guests(tinystack_up, tmp_path_factory) -> Guests:
    ts = tinystack_up
    key = tmp_path_factory.mktemp("keys") / "e2e.pem"
    key.write_text(ts.openstack("keypair", "create", "e2e", cloud="tinystack").stdout)
    key.chmod(0o600)
    found = Guests(ts, key)
    for name in ("vm-a", "vm-b"):
        found.boot(name)  # no --nic: the CLI asks for "auto", demo's private network
    for name in ("vm-a", "vm-b"):
        hostname, addresses = wait_for_ready(ts, name)
        assert hostname == name
        found.fixed[name] = addresses.split("/")[0]
    return found


@pytest.fixture
def floating(guests: Guests):
    """A floating IP on vm-a for the test, released after it."""
    ts = guests.ts
    fip = cli_json(ts, "floating", "ip", "create", "public")["floating_ip_address"]
    ts.openstack("server", "add", "floating", "ip", "vm-a", fip, cloud="tinystack")
    yield fip
    ts.openstack("floating", "ip", "delete", fip, cloud="tinystack")


def test_guests_take_the_addresses_their_ports_hold(guests: Guests):
    for name, address in guests.fixed.items():
        server = cli_json(guests.ts, "server", "show", name)
        assert server["status"] == "ACTIVE"
        assert server["addresses"] == {"private": [address]}
        ports = cli_json(guests.ts, "port", "list", "--server", name)
        assert [p["Fixed IP Addresses"][0]["ip_address"] for p in ports] == [address]


def test_floating_ip_reaches_the_guest_with_its_metadata_key_and_goes_away(
        guests: Guests, floating: str):
    assert ping_until(floating, True), f"no reply from {floating}"
    assert cli_json(guests.ts, "server", "show", "vm-a")["addresses"] == {
        "private": [guests.fixed["vm-a"], floating]}
    # the SSH key and the hostname came from the metadata service
    assert guests.ssh(floating, "hostname").stdout.strip() == "vm-a"
    guests.ts.openstack("server", "remove", "floating", "ip", "vm-a", floating,
                        cloud="tinystack")
    assert ping_until(floating, False), f"{floating} still answers once disassociated"


def test_guests_ping_each_other_and_the_icmp_rule_decides_the_hosts_ping(
        guests: Guests, floating: str):
    ts = guests.ts
    assert ping_until(floating, True)
    other = guests.fixed["vm-b"]
    assert guests.ssh(floating, f"ping -c 1 -W 2 {other}").returncode == 0
    rules = cli_json(ts, "security", "group", "rule", "list", "default", "--ingress",
                     "--protocol", "icmp")
    [icmp] = [r for r in rules if r["IP Range"] == "0.0.0.0/0"]
    ts.openstack("security", "group", "rule", "delete", icmp["ID"], cloud="tinystack")
    try:
        assert ping_until(floating, False), "the host's ping goes on without the ICMP rule"
    finally:
        ts.openstack("security", "group", "rule", "create", "default", "--ingress",
                     "--protocol", "icmp", "--remote-ip", "0.0.0.0/0", cloud="tinystack")
    assert ping_until(floating, True), "the host's ping did not come back with the rule"


def test_a_server_on_a_second_network_reaches_them_through_the_router(
        guests: Guests, floating: str):
    ts = guests.ts
    net = cli_json(ts, "network", "create", "second")
    subnet = cli_json(ts, "subnet", "create", "second-subnet", "--network", "second",
                      "--subnet-range", "10.0.1.0/26")
    v6 = cli_json(ts, "subnet", "create", "second-v6", "--network", "second",
                  "--ip-version", "6", "--ipv6-ra-mode", "slaac", "--ipv6-address-mode",
                  "slaac", "--subnet-range", "fd00:c1::/64")
    ts.openstack("router", "add", "subnet", "router1", "second-subnet", cloud="tinystack")
    ts.openstack("router", "add", "subnet", "router1", "second-v6", cloud="tinystack")
    guests.boot("vm-c", "--nic", f"net-id={net['id']}")
    hostname, addresses = wait_for_ready(ts, "vm-c")
    address = addresses.split("/")[0]
    assert hostname == "vm-c" and address.startswith("10.0.1.")
    assert ping_until(floating, True)
    assert guests.ssh(floating, f"ping -c 1 -W 2 {address}").returncode == 0

    # IPv6: the guest's kernel takes its port's EUI-64 address from the router's
    # advertisements, and reaches the router's gateway address with it.
    [port] = cli_json(ts, "port", "list", "--server", "vm-c")
    [address6] = [ip["ip_address"] for ip in port["Fixed IP Addresses"]
                  if ip["subnet_id"] == v6["id"]]
    ts.openstack("server", "remove", "floating", "ip", "vm-a", floating, cloud="tinystack")
    ts.openstack("server", "add", "floating", "ip", "vm-c", floating, cloud="tinystack")
    try:
        assert ping_until(floating, True)
        found = guests.ssh(floating, "for i in 1 2 3 4 5 6 7 8 9 10; do "
                           "ip -6 addr show scope global | grep -q inet6 && break; sleep 1; done;"
                           " ip -6 addr show scope global").stdout
        assert f"inet6 {address6}/64" in found, found
        assert guests.ssh(floating, f"ping -6 -c 1 -W 2 {v6['gateway_ip']}").returncode == 0
    finally:
        ts.openstack("server", "remove", "floating", "ip", "vm-c", floating, cloud="tinystack")
        ts.openstack("server", "add", "floating", "ip", "vm-a", floating, cloud="tinystack")

    details = cli_json(ts, "port", "show", port["ID"], cloud="tinystack-admin")
    bridge = details["binding_vif_details"]["bridge_name"]
    tap = details["binding_vif_details"]["tap_name"]
    ts.openstack("server", "delete", "--wait", "vm-c", cloud="tinystack")
    for name in ("second-subnet", "second-v6"):
        ts.openstack("router", "remove", "subnet", "router1", name, cloud="tinystack")
    ts.openstack("network", "delete", "second", cloud="tinystack")
    deadline = time.monotonic() + 30
    while True:
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True,
                               text=True).stdout
        namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True,
                                    text=True).stdout
        dnsmasq = subprocess.run(["pgrep", "-af", f"dnsmasq.*{net['id']}"],
                                 capture_output=True, text=True).stdout
        rules = subprocess.run(["nft", "list", "ruleset"], capture_output=True,
                               text=True).stdout
        left = [what for what, there in (
            (f"bridge {bridge}", f" {bridge}:" in links or f" {bridge}@" in links),
            (f"tap {tap}", f" {tap}:" in links or f" {tap}@" in links),
            (f"namespace qdhcp-{net['id']}", f"qdhcp-{net['id']}" in namespaces),
            ("dnsmasq", bool(dnsmasq.strip())), (f"nft rules for {tap}", tap in rules))
            if there]
        if not left:
            break
        assert time.monotonic() < deadline, f"left behind: {left}"
        time.sleep(0.5)
    assert subnet["cidr"] == "10.0.1.0/26"
