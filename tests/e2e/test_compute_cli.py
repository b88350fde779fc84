"""Servers through the real ``openstack`` CLI, on real QEMU guests, through a running tinystack.

Every action is the command a person types; what it changed is read back the
way a person would (``server show``, ``console log show``) and, underneath,
from the guest itself: its ready line and kernel messages on the serial
console (``tinystack/image/guest/init.sh`` prints ``tinystack-guest ready:
hostname=NAME ...`` once booted), and QEMU's own answer over the instance's
QMP socket. Waiting (for a status, for a console line) polls with
openstacksdk in this process, which is cheaper than a CLI call per poll.

Guests are few and small: one server (m1.nano) is reused through the power
actions, the snapshot and the resize, in that order. These run on the
``local`` backend; the first RabbitMQ backend boots and deletes one server.
The two-node test starts its own controller and a second compute-only node
on a RabbitMQ vhost of their own (it is skipped without RabbitMQ). Every
server made here is deleted at the end of its test, pass or fail; the
launcher checks that no qemu outlives its tinystack. Networking is left out
(``--nic none``): the guests get their name and key from a config drive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import time
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import openstack
import pytest
from openstack.connection import Connection

from tinystack.compute.host import find_processes, unix_socket_path
from tinystack.image.guest import READY_RE

pytestmark = pytest.mark.backends(brokers=1)

IMAGE_TIMEOUT = 900.0
"""Seconds for ``tiny`` to become active: its first start may build the guest image."""
BOOT_TIMEOUT = 180.0
"""Seconds for a server to become ACTIVE and print its ready line (about 4 on a quiet
machine; CI shares two vCPUs with everything else)."""
ACTION_TIMEOUT = 120.0
POLL = 0.5
RUNNING, PAUSED, SHUTDOWN, SUSPENDED = 1, 3, 4, 7
"""Nova's power states, as ``OS-EXT-STS:power_state`` shows them."""
MEMORY_RE = re.compile(r"\] Memory: \d+K/(?P<total>\d+)K available")
"""The guest kernel's boot line saying how much RAM it found."""
ROOT_DISK_RE = re.compile(r"\[vda\] (\d+) 512-byte logical blocks")
"""The guest kernel's line about its root disk (virtio_blk)."""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def wait_for(check: Callable[[], object], timeout: float, what: str):
    """Poll ``check`` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL)


def connect(ts, cloud: str) -> Connection:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OS_CLIENT_CONFIG_FILE", str(ts.clouds_yaml))
        return openstack.connect(cloud=cloud)


class Cloud:
    """One running tinystack as the CLI (and, for waiting, the SDK) sees it."""

    def __init__(self, ts):
        """``ts``: a ``Tinystack`` from ``tests/e2e/conftest.py``."""
        self.ts = ts
        self._connections: dict[str, Connection] = {}

    def sdk(self, cloud: str = "tinystack") -> Connection:
        if cloud not in self._connections:
            self._connections[cloud] = connect(self.ts, cloud)
        return self._connections[cloud]

    def cli(self, *args: str, cloud: str = "tinystack", check: bool = True):
        return self.ts.openstack(*args, cloud=cloud, check=check)

    def json(self, *args: str, cloud: str = "tinystack"):
        return json.loads(self.cli(*args, "-f", "json", cloud=cloud).stdout)

    def show(self, server: str, cloud: str = "tinystack") -> dict:
        return self.json("server", "show", server, cloud=cloud)

    def console(self, server: str, cloud: str = "tinystack") -> str:
        return self.cli("console", "log", "show", server, cloud=cloud).stdout

    # -- waiting --------------------------------------------------------------------------

    def wait_for_image(self, name: str = "tiny") -> None:
        def active():
            image = self.sdk().image.find_image(name)
            return image is not None and image.status == "active"
        wait_for(active, IMAGE_TIMEOUT, f"image {name} to become active")

    def wait_for_status(self, server_id: str, status: str, cloud: str = "tinystack",
                        timeout: float = ACTION_TIMEOUT):
        """Wait until the server has ``status`` and no task; fails early on ERROR."""
        compute = self.sdk(cloud).compute

        def settled():
            server = compute.get_server(server_id)
            if server.status == "ERROR" and status != "ERROR":
                raise AssertionError(f"server {server_id} went to ERROR: {server.fault}")
            return server.status == status and server.task_state is None and server
        return wait_for(settled, timeout, f"server {server_id} to be {status}")

    def ready_lines(self, server_id: str, cloud: str = "tinystack") -> list[re.Match]:
        try:
            text = self.sdk(cloud).compute.get_server_console_output(server_id)["output"]
        except openstack.exceptions.SDKException:
            return []    # the node may not have the console yet
        return [m for line in text.splitlines() if (m := READY_RE.search(line))]

    def wait_for_ready(self, server_id: str, count: int = 1, cloud: str = "tinystack",
                       timeout: float = BOOT_TIMEOUT) -> list[re.Match]:
        """Wait for the guest's ``count``-th ready line; all of them."""
        return wait_for(lambda: (found := self.ready_lines(server_id, cloud)) and
                        len(found) >= count and found, timeout,
                        f"ready line #{count} of server {server_id}")

    # -- cleanup --------------------------------------------------------------------------

    @contextlib.contextmanager
    def deleting(self, cloud: str = "tinystack") -> Iterator[list[str]]:
        """Yields a list to put server ids in; they are all deleted (and waited for) after."""
        made: list[str] = []
        try:
            yield made
        finally:
            if made:
                self.cli("server", "delete", "--wait", *made, cloud=cloud)


def create_server(cloud: Cloud, name: str, *args: str, flavor: str = "m1.nano",
                  image: str = "tiny", user: str = "tinystack", made: list[str]) -> dict:
    """``openstack server create ... --nic none --wait``; the server as it printed it."""
    result = cloud.cli("server", "create", "--image", image, "--flavor", flavor, "--nic", "none",
                       "--wait", *args, name, "-f", "json", cloud=user, check=False)
    server = None
    with contextlib.suppress(ValueError):
        server = json.loads(result.stdout)
        made.append(server["id"])
    if server is None:   # --wait saw ERROR (or create failed): still clean up what exists
        found = cloud.sdk(user).compute.find_server(name)
        if found is not None:
            made.append(found.id)
    assert result.returncode == 0, f"server create {name}: {result.stdout}\n{result.stderr}"
    return server


# -- what the node's QEMU says --------------------------------------------------------------


def instance_dir(ts, server_id: str) -> Path:
    return ts.data_dir / "compute" / "instances" / server_id


def qmp(ts, server_id: str, command: str) -> dict:
    """One QMP command on the server's qemu, over the socket the agent uses."""
    from qemu.qmp import QMPClient

    async def ask():
        client = QMPClient("e2e-cli")
        with unix_socket_path(instance_dir(ts, server_id) / "qmp.sock") as address:
            await asyncio.wait_for(client.connect(address), 30)
        try:
            return await asyncio.wait_for(client.execute(command), 30)
        finally:
            await client.disconnect()
    return asyncio.run(ask())


def qemu_runs(ts, server_id: str) -> bool:
    """Is there a live qemu for the server (one naming its pid file)?"""
    return bool(find_processes(str(instance_dir(ts, server_id) / "qemu.pid")))


def qemu_argv(ts, server_id: str) -> list[str]:
    """The command line of the server's qemu."""
    pid = (instance_dir(ts, server_id) / "qemu.pid").read_text().split()[0]
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def memory_totals_kib(console: str) -> list[int]:
    """What the guest kernel found at each boot, in KiB."""
    return [int(m["total"]) for m in MEMORY_RE.finditer(console)]


def root_disk_sizes(console: str) -> list[int]:
    """The size of the root disk (vda) the guest kernel found at each boot, in bytes."""
    return [int(m[1]) * 512 for m in ROOT_DISK_RE.finditer(console)]


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cloud(tinystack_up) -> Cloud:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 is missing: ./install.sh installs it", pytrace=False)
    c = Cloud(tinystack_up)
    c.wait_for_image()
    return c


LOCAL_ONLY = pytest.mark.backends(brokers=0)
"""Real-guest actions run on the ``local`` backend only: real guests cost time, and the
RabbitMQ backends add nothing to what a guest does once the bus has carried one build
(the first test boots one there)."""


@pytest.fixture
def local_cloud(cloud: Cloud) -> Cloud:
    """The cloud of a ``LOCAL_ONLY`` test."""
    assert cloud.ts.backend.name == "local", "mark the test LOCAL_ONLY"
    return cloud


@pytest.fixture(scope="module")
def nano(request, tinystack_up) -> Iterator[dict]:
    """One m1.nano server (config drive, no network) the local tests share, in order:
    power actions, snapshot, resize. Each leaves it ACTIVE. Deleted after the module."""
    c = request.getfixturevalue("cloud")
    with c.deleting() as made:
        server = create_server(c, unique("nano"), "--config-drive", "true", made=made)
        c.wait_for_ready(server["id"])
        yield server


# -- tests ----------------------------------------------------------------------------------


def test_keypair_then_boot_prints_the_ready_line_with_the_hostname(cloud, tmp_path):
    """On every backend: the build crosses the bus, the guest boots and is deleted."""
    key_name = unique("key")
    flavor = "m1.tiny" if cloud.ts.backend.name == "local" else "m1.nano"
    name = unique("vm")
    try:
        # From 2.92 the API only imports keys: the CLI makes the pair and keeps the private half.
        key = cloud.json("keypair", "create", "--private-key", str(tmp_path / "id"), key_name)
        assert key["name"] == key_name and key["fingerprint"]
        assert "PRIVATE KEY" in (tmp_path / "id").read_text()
        public = cloud.cli("keypair", "show", "--public-key", key_name).stdout
        assert public.startswith("ssh-")
        with cloud.deleting() as made:
            created = create_server(cloud, name, "--key-name", key_name, "--config-drive",
                                    "true", flavor=flavor, made=made)
            assert created["status"] == "ACTIVE"
            assert created["OS-EXT-STS:power_state"] == RUNNING
            assert created["key_name"] == key_name and created["flavor"]["name"] == flavor

            (ready,) = cloud.wait_for_ready(created["id"])
            console = cloud.console(name)
            assert ready[0] in console
            assert ready["hostname"] == name and ready["addresses"] == "none"
            assert "tinystack-guest: instance data from config drive" in console
            assert "tinystack-guest: 1 SSH key(s) for root" in console
            argv = qemu_argv(cloud.ts, created["id"])
            assert argv[argv.index("-m") + 1] == f"{created['flavor']['ram']}M"
        assert cloud.sdk().compute.find_server(name) is None
        assert not instance_dir(cloud.ts, created["id"]).exists()
        assert not qemu_runs(cloud.ts, created["id"])
    finally:
        cloud.cli("keypair", "delete", key_name, check=False)


@LOCAL_ONLY
def test_power_actions_change_what_the_guest_does(local_cloud, nano):
    c, server_id = local_cloud, nano["id"]

    def act(*action: str, status: str, power: int) -> dict:
        c.cli("server", *action, server_id)
        c.wait_for_status(server_id, status)
        shown = c.show(server_id)
        assert (shown["status"], shown["OS-EXT-STS:power_state"]) == (status, power), action
        return shown

    def clean_shutdowns() -> int:   # the guest's init says so when the power button works
        return c.console(server_id).count("tinystack-guest: shutting down")

    boots, shutdowns = len(c.ready_lines(server_id)), clean_shutdowns()
    act("stop", status="SHUTOFF", power=SHUTDOWN)
    assert not qemu_runs(c.ts, server_id)
    assert clean_shutdowns() == shutdowns + 1
    act("start", status="ACTIVE", power=RUNNING)
    boots += 1
    c.wait_for_ready(server_id, boots)
    assert qmp(c.ts, server_id, "query-status")["status"] == "running"

    act("pause", status="PAUSED", power=PAUSED)
    assert qmp(c.ts, server_id, "query-status")["status"] == "paused"
    act("unpause", status="ACTIVE", power=RUNNING)
    assert qmp(c.ts, server_id, "query-status")["status"] == "running"

    act("suspend", status="SUSPENDED", power=SUSPENDED)
    assert not qemu_runs(c.ts, server_id)
    assert (instance_dir(c.ts, server_id) / "memory.state").exists()
    act("resume", status="ACTIVE", power=RUNNING)
    assert qmp(c.ts, server_id, "query-status")["status"] == "running"
    assert len(c.ready_lines(server_id)) == boots, "resume continues the guest, not a boot"

    c.cli("server", "reboot", "--soft", "--wait", server_id)
    boots += 1
    c.wait_for_ready(server_id, boots)
    assert clean_shutdowns() == shutdowns + 2
    c.cli("server", "reboot", "--hard", "--wait", server_id)
    boots += 1
    c.wait_for_ready(server_id, boots)
    shown = c.show(server_id)
    assert (shown["status"], shown["OS-EXT-STS:power_state"]) == ("ACTIVE", RUNNING)
    assert len(READY_RE.findall(c.console(server_id))) == boots

    actions = [a["Action"] for a in c.json("server", "event", "list", server_id)]
    for name in ("stop", "start", "pause", "unpause", "suspend", "resume", "reboot"):
        assert name in actions, actions


@LOCAL_ONLY
def test_server_image_create_makes_an_image_that_boots(local_cloud, nano):
    c = local_cloud
    snapshot = unique("snap")
    image = c.json("server", "image", "create", "--name", snapshot, "--wait", nano["id"])
    try:
        image = c.json("image", "show", image["id"])
        assert image["status"] == "active" and image["disk_format"] == "qcow2"
        assert image["properties"]["image_type"] == "snapshot"
        assert image["properties"]["instance_uuid"] == nano["id"]
        assert c.show(nano["id"])["status"] == "ACTIVE"

        with c.deleting() as made:
            clone = create_server(c, unique("clone"), "--config-drive", "true",
                                  image=snapshot, made=made)
            assert clone["status"] == "ACTIVE"
            (ready,) = c.wait_for_ready(clone["id"])
            assert ready["hostname"] == clone["name"]
            # The root disk came along: dropbear's host key, made on the first boot of the
            # source and kept on its disk, is the clone's too.
            keys = [re.findall(r"ssh-host-key: (.*)", c.console(s)) for s in
                    (nano["id"], clone["id"])]
            assert keys[1] and keys[1][-1] == keys[0][-1]
    finally:
        c.cli("image", "delete", snapshot, check=False)


@LOCAL_ONLY
def test_resize_to_more_memory_and_disk_then_confirm_and_revert(local_cloud, nano):
    c, server_id = local_cloud, nano["id"]
    bigger, biggest = unique("e2e.resize"), unique("e2e.resize")
    c.cli("flavor", "create", "--ram", "256", "--disk", "2", "--vcpus", "1", bigger,
          cloud="tinystack-admin")
    c.cli("flavor", "create", "--ram", "384", "--disk", "2", "--vcpus", "1", biggest,
          cloud="tinystack-admin")
    try:
        console = c.console(server_id)
        before, disks = memory_totals_kib(console), root_disk_sizes(console)
        boots = len(c.ready_lines(server_id))
        assert before and before[-1] <= 192 * 1024
        assert disks and disks[-1] == 2**30

        c.cli("server", "resize", "--flavor", bigger, "--wait", server_id)
        shown = c.show(server_id)
        assert shown["status"] == "VERIFY_RESIZE"
        assert (shown["flavor"]["name"], shown["flavor"]["ram"], shown["flavor"]["disk"]) == \
            (bigger, 256, 2)
        # The guest restarted with the flavor's memory and disk, as its kernel tells.
        c.wait_for_ready(server_id, boots + 1)
        console = c.console(server_id)
        after, disks = memory_totals_kib(console), root_disk_sizes(console)
        assert len(after) == len(before) + 1
        assert 240 * 1024 < after[-1] <= 256 * 1024, after
        assert disks[-1] == 2 * 2**30
        summary = qmp(c.ts, server_id, "query-memory-size-summary")
        assert summary["base-memory"] == 256 * 2**20

        c.cli("server", "resize", "confirm", server_id)
        c.wait_for_status(server_id, "ACTIVE")
        shown = c.show(server_id)
        assert (shown["status"], shown["OS-EXT-STS:power_state"]) == ("ACTIVE", RUNNING)
        assert shown["flavor"]["name"] == bigger
        assert qmp(c.ts, server_id, "query-status")["status"] == "running"

        # A revert gives the guest its old memory back.
        boots = len(c.ready_lines(server_id))
        c.cli("server", "resize", "--flavor", biggest, "--wait", server_id)
        c.wait_for_ready(server_id, boots + 1)
        assert qmp(c.ts, server_id, "query-memory-size-summary")["base-memory"] == 384 * 2**20
        c.cli("server", "resize", "revert", server_id)
        c.wait_for_status(server_id, "ACTIVE")
        c.wait_for_ready(server_id, boots + 2)
        shown = c.show(server_id)
        assert (shown["flavor"]["name"], shown["flavor"]["ram"]) == (bigger, 256)
        assert qmp(c.ts, server_id, "query-memory-size-summary")["base-memory"] == 256 * 2**20
    finally:
        for flavor in (bigger, biggest):
            c.cli("flavor", "delete", flavor, cloud="tinystack-admin", check=False)


@LOCAL_ONLY
def test_quota_exceeded_is_403_with_novas_message(local_cloud):
    c = local_cloud
    admin = c.sdk("tinystack-admin")
    project = admin.identity.find_project("alt_demo", ignore_missing=False).id
    instances = admin.compute.get_quota_set(project).instances
    c.cli("quota", "set", "--instances", "1", project, cloud="tinystack-admin")
    try:
        with c.deleting("tinystack-alt") as made:
            first = c.json("server", "create", "--image", "tiny", "--flavor", "m1.nano",
                           "--nic", "none", unique("q1"), cloud="tinystack-alt")
            made.append(first["id"])
            second = c.cli("server", "create", "--image", "tiny", "--flavor", "m1.nano",
                           "--nic", "none", unique("q2"), cloud="tinystack-alt", check=False)
            assert second.returncode == 1
            assert "403" in second.stderr
            assert ("Quota exceeded for instances: Requested 1, but already used 1 of 1 "
                    "instances") in second.stderr
    finally:
        c.cli("quota", "set", "--instances", str(instances), project, cloud="tinystack-admin")


@LOCAL_ONLY
def test_flavor_too_small_for_the_image_is_400_with_novas_message(local_cloud):
    c = local_cloud
    images = c.sdk().image
    made = [images.create_image(name=unique(name), data=b"\0" * 65536, disk_format="raw",
                                container_format="bare", **minimum)
            for name, minimum in (("needs-ram", {"min_ram": 512}), ("needs-disk", {"min_disk": 5}))]
    try:
        for image, message in (
            (made[0], "Flavor's memory is too small for requested image."),
            (made[1], "Flavor's disk is smaller than the minimum size specified in image "
                      "metadata. Flavor disk is 1073741824 bytes, minimum size is "
                      "5368709120 bytes."),
        ):
            name = unique("small")
            result = c.cli("server", "create", "--image", image.name, "--flavor", "m1.nano",
                           "--nic", "none", name, check=False)
            assert result.returncode == 1
            assert "400" in result.stderr and message in result.stderr, result.stderr
            assert c.sdk().compute.find_server(name) is None
    finally:
        for image in made:
            images.delete_image(image, ignore_missing=True)


# -- two compute nodes ----------------------------------------------------------------------


@pytest.fixture
def amqp_for_nodes(request) -> str:
    if not request.config.getoption("amqp_url"):
        pytest.skip("a second compute node needs RabbitMQ (TINYSTACK_TEST_AMQP_URL): it hears "
                    "the controller only over a bus both processes share")
    # A vhost of its own: this module's tinystack_up on RabbitMQ still runs on the
    # session's, and its conductor would take half of these nodes' reports.
    return request.getfixturevalue("own_amqp_url")


def test_anti_affinity_puts_servers_on_different_nodes(amqp_for_nodes, launch_tinystack):
    """A controller (with its own compute) and a compute-only node on one RabbitMQ bus."""
    suffix = uuid.uuid4().hex[:6]
    first, second = f"e2e-a-{suffix}", f"e2e-b-{suffix}"
    backend = types.SimpleNamespace(name="rabbitmq", db=None, bus=amqp_for_nodes)
    controller = launch_tinystack.start(backend=backend, name="controller",
                                        extra=("--node-name", first))
    launch_tinystack.start(backend=backend, name="compute", roles=("compute",),
                           extra=("--node-name", second))
    c = Cloud(controller)
    c.wait_for_image()

    def both_up():
        hosts = {h["Hypervisor Hostname"]: h["State"]
                 for h in c.json("hypervisor", "list", cloud="tinystack-admin")}
        return hosts.get(first) == "up" and hosts.get(second) == "up"
    wait_for(both_up, 60, f"hypervisors {first} and {second} to be up")

    group = c.json("server", "group", "create", "--policy", "anti-affinity", unique("spread"))
    assert group["policy"] == "anti-affinity"
    with c.deleting() as made:
        name = unique("apart")
        c.cli("server", "create", "--image", "tiny", "--flavor", "m1.nano", "--nic", "none",
              "--config-drive", "true", "--hint", f"group={group['id']}", "--min", "2",
              "--max", "2", "--wait", name)
        ids = [s["ID"] for s in c.json("server", "list", "--name", name)]
        made.extend(ids)
        assert len(ids) == 2
        shown = [c.show(i, cloud="tinystack-admin") for i in ids]
        hosts = {s["OS-EXT-SRV-ATTR:host"] for s in shown}
        assert hosts == {first, second}
        assert all(s["status"] == "ACTIVE" for s in shown)
        assert sorted(c.json("server", "group", "show", group["id"])["members"]) == sorted(ids)
        for server in shown:   # each guest really boots, wherever it runs
            (ready,) = c.wait_for_ready(server["id"])
            assert ready["hostname"] == server["OS-EXT-SRV-ATTR:hostname"]

        third = unique("third")
        result = c.cli("server", "create", "--image", "tiny", "--flavor", "m1.nano", "--nic",
                       "none", "--hint", f"group={group['id']}", "--wait", third, check=False)
        found = c.sdk().compute.find_server(third)
        if found is not None:
            made.append(found.id)
        assert result.returncode == 1
        fault = c.show(third)["fault"]
        assert fault["message"] == ("No valid host was found. There are not enough hosts "
                                    "available.")
    c.cli("server", "group", "delete", group["id"])
