"""Two nodes through the product: a second compute node in its own network namespace.

The controller is a whole ``tinystack up -d`` (controller, compute and network
roles) with the bus on RabbitMQ. ``node2`` is ``tinystack up -d --role compute``
run inside a network namespace joined to the host by a veth on a data bridge,
as a second machine would be: its L2 agent and its guests live in that
namespace, it reaches the API and the broker only over the data network, and
it downloads the ``tiny`` image through the image API. Demo's ``private``
network (VXLAN) spans both nodes: the guest on node2 takes its address from
the controller's dnsmasq across VXLAN, reads its metadata there, and pings the
guest on the controller, into which the test logs in by SSH through a
floating IP. Deleting both guests leaves nothing of them in node2's namespace.

Addresses: the data network is 10.231.249.0/24 (the controller 10.231.249.1 on
a bridge the test makes, node2 10.231.249.2), the floating range 10.231.248.0/24
and demo's subnet 10.231.247.0/26; nothing else is used, and the bridge, the
veth and the namespace go away at the end, pass or fail. RabbitMQ listens on
loopback only, so the test relays 10.231.249.1:PORT to it (``tcpforward.py``).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import uuid
from types import SimpleNamespace
from urllib.parse import urlsplit, urlunsplit

import pytest
from guests import ssh
from netlab import require_root
from tcpforward import TcpForwarder

from tinystack.network.agents.drivers.linux_bridge import vxlan_name
from tinystack.runner import read_pid

pytestmark = pytest.mark.skipif(require_root() is not None, reason=require_root() or "")

DATA_PREFIX = "10.231.249"
CONTROLLER_IP, NODE2_IP = f"{DATA_PREFIX}.1", f"{DATA_PREFIX}.2"
FLOATING_RANGE = "10.231.248.0/24"
FIXED_RANGE = "10.231.247.0/26"
CONTROLLER, NODE2 = "controller", "node2"
"""Node names (``--node-name``): the hosts of os-services, hypervisors and agents."""

READY = re.compile(r"tinystack-guest ready: hostname=(\S+) addresses=(\S+)")
BOOT_DEADLINE = 150.0
REGISTER_DEADLINE = 60.0


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr}")
    return result


def link_names(netns: str | None = None) -> list[str]:
    where = ["-n", netns] if netns else []
    out = sh("ip", *where, "-o", "link", "show", check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


class DataNetwork:
    """The data bridge on the host (the controller's data address) and node2's namespace."""

    def __init__(self):
        tag = uuid.uuid4().hex[:4]
        self.bridge = f"tsmn{tag}"
        self.uplink = f"tsmn{tag}n2"
        self.netns = f"tsmn{tag}{NODE2}"

    def create(self) -> DataNetwork:
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{CONTROLLER_IP}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        sh("ip", "netns", "add", self.netns)
        sh("ip", "link", "add", self.uplink, "type", "veth", "peer", "name", "data0",
           "netns", self.netns)
        sh("ip", "link", "set", self.uplink, "master", self.bridge, "up")
        sh("ip", "-n", self.netns, "link", "set", "lo", "up")
        sh("ip", "-n", self.netns, "addr", "add", f"{NODE2_IP}/24", "dev", "data0")
        sh("ip", "-n", self.netns, "link", "set", "data0", "up")
        return self

    def processes(self) -> list[int]:
        out = sh("ip", "netns", "pids", self.netns, check=False).stdout
        return [int(p) for p in out.split()]

    def remove(self) -> list[str]:
        """Remove it all; what could not be removed."""
        for pid in self.processes():  # only what the test started in the namespace
            sh("kill", "-9", str(pid), check=False)
        sh("ip", "netns", "delete", self.netns, check=False)
        sh("ip", "link", "delete", self.uplink, check=False)
        sh("ip", "link", "delete", self.bridge, check=False)
        left = [f"device {d}" for d in (self.uplink, self.bridge) if d in link_names()]
        if self.netns in sh("ip", "netns", "list", check=False).stdout:
            left.append(f"namespace {self.netns}")
        return left


@pytest.fixture
def data_network() -> DataNetwork:
    network = DataNetwork()
    try:
        yield network.create()
    finally:
        left = network.remove()
        assert not left, f"left behind: {left}"


@pytest.fixture
def broker_relay(own_amqp_url: str, data_network: DataNetwork):
    """(the controller's bus URL, node2's bus URL): one vhost, node2's through a relay on
    the data network to the broker that listens on loopback."""
    parts = urlsplit(own_amqp_url)
    with TcpForwarder(CONTROLLER_IP, (parts.hostname or "127.0.0.1", parts.port or 5672)) as relay:
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@{CONTROLLER_IP}:{relay.port}" if auth else f"{CONTROLLER_IP}:{relay.port}"
        yield own_amqp_url, urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def two_nodes(broker_relay, data_network, launch_tinystack):
    """(controller, node2), both running; stopped by ``launch_tinystack`` (node2 first)
    before the relay and the data network go."""
    controller_bus, node2_bus = broker_relay
    launcher = launch_tinystack

    controller = launcher.prepare(CONTROLLER, SimpleNamespace(name="rabbitmq", db=None,
                                                               bus=controller_bus))
    controller.url = f"http://{CONTROLLER_IP}:{controller.port}"
    controller.env.update(TINYSTACK_COMPUTE_NODE__MY_IP=CONTROLLER_IP,
                          TINYSTACK_NETWORK__FLOATING_RANGE=FLOATING_RANGE,
                          TINYSTACK_NETWORK__FIXED_RANGE=FIXED_RANGE)
    start(controller, [*controller.up_argv(), "--host", CONTROLLER_IP,
                       "--node-name", CONTROLLER, "--timeout", "150"])

    node2 = launcher.prepare(NODE2, SimpleNamespace(name="rabbitmq", db=None, bus=node2_bus))
    node2.env.update(TINYSTACK_COMPUTE_NODE__MY_IP=NODE2_IP,
                     TINYSTACK_PUBLIC_URL=controller.url)
    start(node2, ["ip", "netns", "exec", data_network.netns,
                  *node2.up_argv(roles=("compute",)), "--node-name", NODE2, "--timeout", "90"])
    return controller, node2


def start(ts, argv: list[str]) -> None:
    result = subprocess.run(argv, env=ts.env, capture_output=True, text=True, timeout=200,
                            stdin=subprocess.DEVNULL)
    ts.output = result.stdout
    ts.pid = read_pid(ts.pid_file)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}\n--- stdout ---\n"
                             f"{result.stdout}\n--- stderr ---\n{result.stderr}\n--- log ---\n"
                             f"{ts.log_tail()}")


def cli_json(ts, *args: str, cloud: str = "tinystack"):
    out = ts.openstack(*args, "-f", "json", cloud=cloud).stdout
    return json.loads(out) if out.strip() else None


def as_admin_in_demo(ts, *args: str):
    """``openstack`` as admin, scoped to project demo (admin has the admin role there)."""
    return cli_json(ts, "--os-project-name", "demo", *args, cloud="tinystack-admin")


def wait_until(what: str, check, deadline: float):
    end = time.monotonic() + deadline
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline:.0f} s: {what}")
        time.sleep(1)


def wait_for_ready(ts, server: str) -> tuple[str, str]:
    """The (hostname, addresses) of the guest's ready line on its console."""
    last = {"log": ""}

    def ready():
        last["log"] = ts.openstack("console", "log", "show", server, cloud="tinystack").stdout
        found = READY.search(last["log"])
        return (found.group(1), found.group(2)) if found else None
    try:
        return wait_until(f"{server} prints its ready line", ready, BOOT_DEADLINE)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{last['log'][-3000:]}") from None


def node2_leftovers(data_network: DataNetwork, node2) -> list[str]:
    """Bridges, VXLAN devices, taps in node2's namespace, and its qemu processes."""
    left = [f"device {name}" for name in link_names(data_network.netns)
            if name not in ("lo", "data0")]
    left += [f"process {pid}: {cmd[:120]}" for pid, cmd in node2.leftovers()
             if "qemu" in cmd]
    return left


def test_a_guest_on_a_second_node_gets_dhcp_over_vxlan_and_pings_the_controllers(
        two_nodes, data_network, launch_tinystack, tmp_path):
    controller, node2 = two_nodes

    # -- node2 registered: its nova-compute, its hypervisor, its L2 agent ----------------
    def node2_up():
        services = cli_json(controller, "compute", "service", "list", "--service",
                            "nova-compute", cloud="tinystack-admin")
        states = {s["Host"]: s["State"] for s in services}
        return states if states.get(NODE2) == "up" and states.get(CONTROLLER) == "up" else None
    wait_until("nova-compute on node2 and the controller is up", node2_up, REGISTER_DEADLINE)
    hypervisors = cli_json(controller, "hypervisor", "list", cloud="tinystack-admin")
    assert {h["Hypervisor Hostname"] for h in hypervisors} >= {NODE2, CONTROLLER}, hypervisors

    def l2_alive():
        agents = cli_json(controller, "network", "agent", "list", "--host", NODE2,
                          cloud="tinystack-admin")
        return [a for a in agents if a["Alive"] in (True, ":-)")] or None
    [agent] = wait_until("node2's L2 agent reports alive", l2_alive, REGISTER_DEADLINE)
    assert agent["Host"] == NODE2

    # -- one guest per node on demo's private network -------------------------------------
    controller.openstack("role", "add", "--user", "admin", "--project", "demo", "admin")
    key = tmp_path / "e2e.pem"
    key.write_text(controller.openstack("keypair", "create", "e2e").stdout)  # admin's key
    key.chmod(0o600)
    private = cli_json(controller, "network", "show", "private")
    placement = {"vm-ctl": CONTROLLER, "vm-node2": NODE2}
    for name, node in placement.items():
        as_admin_in_demo(controller, "server", "create", "--image", "tiny", "--flavor",
                         "m1.nano", "--key-name", "e2e", "--nic", f"net-id={private['id']}",
                         "--availability-zone", f"nova:{node}", name)
    fixed = {}
    for name, node in placement.items():
        hostname, addresses = wait_for_ready(controller, name)
        assert hostname == name  # from the metadata service, across VXLAN for node2
        fixed[name] = addresses.split("/")[0]
        server = as_admin_in_demo(controller, "server", "show", name)
        assert server["OS-EXT-SRV-ATTR:host"] == node, server
        assert server["status"] == "ACTIVE"
        assert server["addresses"] == {"private": [fixed[name]]}, server
    # node2's guest runs in node2's namespace, on a bridge there with a VXLAN to the controller
    assert [pid for pid, cmd in node2.leftovers() if "qemu" in cmd], "no qemu of node2"
    # each node's end of the private network's VXLAN floods to the other's data address
    for where, local, peer in (([], CONTROLLER_IP, NODE2_IP),
                               (["-n", data_network.netns], NODE2_IP, CONTROLLER_IP)):
        device = vxlan_name(private["id"])
        shown = sh("ip", *where, "-d", "-o", "link", "show", device).stdout
        assert f"local {local}" in shown, shown
        flood = sh("bridge", *where, "fdb", "show", "dev", device).stdout
        assert f"00:00:00:00:00:00 dst {peer}" in flood, flood

    # -- they reach each other: SSH into the controller's guest, ping node2's ------------
    fip = cli_json(controller, "floating", "ip", "create", "public")["floating_ip_address"]
    controller.openstack("server", "add", "floating", "ip", "vm-ctl", fip, cloud="tinystack")
    assert ssh(key, fip, "hostname").stdout.strip() == "vm-ctl"
    pinged = ssh(key, fip, f"ping -c 1 -W 2 {fixed['vm-node2']}")
    assert pinged.returncode == 0, (pinged.stdout, pinged.stderr)
    # and the other way: node2's guest by its own floating IP (the controller's router
    # reaches it across VXLAN; its SSH key came from the metadata service the same way)
    controller.openstack("server", "remove", "floating", "ip", "vm-ctl", fip, cloud="tinystack")
    controller.openstack("server", "add", "floating", "ip", "vm-node2", fip, cloud="tinystack")
    assert ssh(key, fip, "hostname").stdout.strip() == "vm-node2"
    pinged = ssh(key, fip, f"ping -c 1 -W 2 {fixed['vm-ctl']}")
    assert pinged.returncode == 0, (pinged.stdout, pinged.stderr)

    # -- deleted, they leave nothing in node2's namespace ---------------------------------
    controller.openstack("floating", "ip", "delete", fip, cloud="tinystack")
    controller.openstack("server", "delete", "--wait", *placement, cloud="tinystack",
                         timeout=180)
    end = time.monotonic() + 30
    while left := node2_leftovers(data_network, node2):
        assert time.monotonic() < end, f"left in node2's namespace: {left}"
        time.sleep(0.5)
    # with no port on node2 the controller has no peer left on private: no VXLAN either
    wait_until("the controller's VXLAN device of private goes",
               lambda: vxlan_name(private["id"]) not in link_names(), 30)

    # -- stopped, node2 leaves no nft table or device, and nothing runs in its namespace --
    launch_tinystack.stop(node2)
    tables = sh("ip", "netns", "exec", data_network.netns, "nft", "list", "tables").stdout
    assert "tinystack" not in tables, tables
    assert sorted(link_names(data_network.netns)) == ["data0", "lo"]
    assert not data_network.processes(), data_network.processes()
    launch_tinystack.stop(controller)
    assert not port_answers(CONTROLLER_IP, controller.port), "the controller's API still answers"


def port_answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True
