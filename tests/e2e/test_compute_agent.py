"""The compute agent on real QEMU: boots, power actions, adoption, and kill -9 mid-build.

The default guest image (``tinystack.image.guest``) is built once per session
into the cache the guest image tests share (``TINYSTACK_TEST_GUEST_CACHE``,
default ``.cache/guest`` in the checkout) and served by a tiny HTTP server on
127.0.0.1, standing in for the image service. Most tests run the agent in
this process over the in-process bus, with a stub conductor that keeps the
reports; the kill -9 test runs ``tinystack up --role compute`` on RabbitMQ so
there is a process to kill. Guests run under TCG. Every qemu started under a
test's directory is killed at its end, pass or fail; the only network devices
made are the tests' own taps and bridges.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import types
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from qemu.qmp import QMPClient

from tinystack.common.bus import connect
from tinystack.compute import host
from tinystack.compute.agent import AgentOptions, ComputeAgent
from tinystack.compute.desired import DesiredStore
from tinystack.compute.drivers.qemu import QemuDriver, QemuOptions
from tinystack.compute.messages import (
    AGENT_TARGET,
    CONDUCTOR_TARGET,
    ImageRef,
    NodeReport,
    PortBinding,
    ServerReport,
    ServerSpec,
)
from tinystack.image.guest import READY_RE, GuestImage, build_guest_image

from tinystack.runner import pid_alive, read_pid

REPO = Path(__file__).resolve().parents[2]
BOOT_TIMEOUT = 120.0
"""Seconds from the spec to the guest's ready line; a quiet machine needs about 4."""
REPORT_TIMEOUT = 60.0
HOST = "e2e-node"


# -- the image service stand-in --------------------------------------------------------------


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 is missing: ./install.sh installs it", pytrace=False)
    cache = Path(os.environ.get("TINYSTACK_TEST_GUEST_CACHE") or REPO / ".cache" / "guest")
    return build_guest_image(cache, progress=False)


class ImageServer:
    """Serves ``/images/<id>/file`` from a dict of files; ``hold`` stalls downloads."""

    def __init__(self, files: dict[str, Path], uploads: Path):
        self.files = files
        self.uploads = uploads
        self.hold = threading.Event()
        self.hold.set()
        self.started = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                match = re.fullmatch(r"/images/([^/]+)/file", self.path)
                if not match or match[1] not in server.files:
                    self.send_error(404)
                    return
                data = server.files[match[1]].read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data[:65536])
                    server.started.set()
                    server.hold.wait(60)
                    self.wfile.write(data[65536:])

            def do_PUT(self):  # noqa: N802 - the stdlib's name
                match = re.fullmatch(r"/images/([^/]+)/file", self.path)
                if not match:
                    self.send_error(404)
                    return
                target = server.uploads / match[1]
                with open(target, "wb") as out:
                    if self.headers.get("Transfer-Encoding") == "chunked":
                        while size := int(self.rfile.readline().split(b";")[0], 16):
                            out.write(self.rfile.read(size))
                            self.rfile.readline()
                        self.rfile.readline()
                    else:
                        out.write(self.rfile.read(int(self.headers["Content-Length"])))
                server.files[match[1]] = target
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, image_id: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/images/{image_id}/file"

    def ref(self, image: GuestImage) -> ImageRef:
        checksum = hashlib.md5(image.disk.read_bytes(), usedforsecurity=False).hexdigest()
        return ImageRef(id="tiny", disk_format="qcow2", checksum=checksum,
                        download_url=self.url("tiny"), kernel_id="tiny-kernel",
                        ramdisk_id="tiny-ramdisk", kernel_cmdline=image.kernel_cmdline)


@pytest.fixture(scope="session")
def image_server(guest_image: GuestImage, tmp_path_factory) -> Iterator[ImageServer]:
    server = ImageServer({"tiny": guest_image.disk, "tiny-kernel": guest_image.kernel,
                          "tiny-ramdisk": guest_image.ramdisk},
                         tmp_path_factory.mktemp("uploads"))
    yield server
    server.hold.set()
    server.httpd.shutdown()


def make_spec(image_server: ImageServer, guest_image: GuestImage, *, server_id: str | None = None,
              revision: int = 1, **fields) -> ServerSpec:
    server_id = server_id or f"e2e-{uuid.uuid4().hex[:12]}"
    fields.setdefault("image", image_server.ref(guest_image))
    return ServerSpec(id=server_id, name=f"vm-{server_id[-4:]}", revision=revision, **fields)


# -- the controller stand-in ------------------------------------------------------------------


class Conductor:
    def __init__(self) -> None:
        self.servers: list[ServerReport] = []
        self.nodes: list[NodeReport] = []
        self.changed = asyncio.Condition()

    async def report_server(self, report: dict, **_) -> None:
        async with self.changed:
            self.servers.append(ServerReport.model_validate(report))
            self.changed.notify_all()

    async def report_node(self, report: dict, **_) -> None:
        async with self.changed:
            self.nodes.append(NodeReport.model_validate(report))
            self.changed.notify_all()

    async def last(self, server_id: str, timeout: float = REPORT_TIMEOUT, **expected) -> ServerReport:
        def matches() -> bool:
            mine = [r for r in self.servers if r.server_id == server_id]
            return bool(mine) and all(getattr(mine[-1], k) == v for k, v in expected.items())
        try:
            async with self.changed:
                await asyncio.wait_for(self.changed.wait_for(matches), timeout)
        except TimeoutError:
            mine = [r for r in self.servers if r.server_id == server_id]
            raise AssertionError(f"no report with {expected} in {timeout} s: {mine[-3:]}") from None
        return [r for r in self.servers if r.server_id == server_id][-1]


# -- the node under test ----------------------------------------------------------------------


def processes_mentioning(path: Path) -> list[int]:
    """Live processes whose command line names ``path`` or a file under it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if (f"{path} " in f"{cmdline} " or f"{path}/" in cmdline) and pid_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def kill_everything_under(path: Path) -> None:
    """SIGKILL every live process whose command line names ``path``: no qemu outlives a test."""
    for pid in processes_mentioning(path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Node:
    """An agent with the QEMU driver on ``root``, restartable, and its bus and conductor."""

    def __init__(self, root: Path, bus, conductor: Conductor):
        self.root, self.bus, self.conductor = root, bus, conductor
        self.agent: ComputeAgent | None = None
        self.task: asyncio.Task | None = None

    def paths(self, server_id: str) -> Path:
        return self.root / "compute" / "instances" / server_id

    async def start(self) -> ComputeAgent:
        compute = self.root / "compute"
        driver = QemuDriver(QemuOptions(
            instances_dir=compute / "instances", images_dir=compute / "images",
            state_dir=compute, accelerator="tcg"))
        self.agent = ComputeAgent(
            host=HOST, bus=self.bus, driver=driver, store=DesiredStore(compute / "desired"),
            options=AgentOptions(audit_interval=1.0, shutdown_timeout=15.0,
                                 stop_guests_on_exit=False))
        await self.agent.start()
        self.task = asyncio.create_task(self.agent.run_forever())
        return self.agent

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.agent is not None:
            await self.agent.stop()
        self.agent = self.task = None

    async def send(self, spec: ServerSpec) -> None:
        await self.bus.cast(AGENT_TARGET(HOST), "sync_server", spec=spec)

    async def console(self, server_id: str) -> str:
        return await self.bus.call(AGENT_TARGET(HOST), "console_output", server_id=server_id,
                                   timeout=10)

    async def wait_ready(self, server_id: str, count: int = 1,
                         timeout: float = BOOT_TIMEOUT) -> list[re.Match]:
        """Wait for the guest's ``count``-th ready line on its console; all of them."""
        deadline = time.monotonic() + timeout
        while True:
            text = await self.console(server_id)
            found = [m for line in text.splitlines() if (m := READY_RE.search(line))]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no ready line #{count} in {timeout} s:\n{text[-3000:]}")
            await asyncio.sleep(0.1)

    async def qmp_status(self, server_id: str) -> str:
        client = QMPClient("e2e-test")
        await client.connect(str(self.paths(server_id) / "qmp.sock"))
        try:
            return (await client.execute("query-status"))["status"]
        finally:
            await client.disconnect()


@pytest.fixture
async def node(tmp_path_factory) -> AsyncIterator[Node]:
    # A short root: QEMU's unix sockets live in the instance directory.
    root = Path(tmp_path_factory.mktemp("cn"))
    bus = connect(f"memory://e2e-{uuid.uuid4().hex[:8]}")
    await bus.start()
    conductor = Conductor()
    await bus.serve(CONDUCTOR_TARGET, conductor)
    n = Node(root, bus, conductor)
    await n.start()
    try:
        yield n
    finally:
        try:
            await n.stop()
            await bus.close()
        finally:
            kill_everything_under(root)


def assert_nothing_left(root: Path, server_id: str, taps: list[str] = ()) -> None:
    instance = root / "compute" / "instances" / server_id
    assert not instance.exists(), sorted(p.name for p in instance.iterdir())
    assert processes_mentioning(instance) == []
    assert list((root / "compute" / "images").glob(".*.part")) == []
    for tap in taps:
        assert not Path(f"/sys/class/net/{tap}").exists(), f"tap {tap} is left"


# -- tests ------------------------------------------------------------------------------------


async def test_boot_reports_active_and_the_guest_gets_ready(node, image_server, guest_image):
    spec = make_spec(image_server, guest_image, config_drive=True, metadata_files={
        "openstack/latest/meta_data.json": json.dumps(
            {"uuid": "e2e", "name": "configured", "hostname": "configured-host"}),
    })
    started = time.monotonic()
    await node.send(spec)

    report = await node.conductor.last(spec.id, state="active")
    active_after = time.monotonic() - started
    assert report.power_state == "running" and report.launched_at and report.console_log
    ready = await node.wait_ready(spec.id)
    ready_after = time.monotonic() - started

    assert ready[0]["hostname"] == "configured-host"
    assert await node.qmp_status(spec.id) == "running"
    stats = await node.bus.call(AGENT_TARGET(HOST), "server_statistics", server_id=spec.id,
                                timeout=10)
    await asyncio.sleep(3)  # let free-page reporting hand back what the boot touched
    rss = host.process_rss_kib(stats["pid"]) / 1024
    print(f"\nboot: ACTIVE after {active_after:.1f} s, ready after {ready_after:.1f} s "
          f"(guest uptime {ready[0]['uptime']} s); qemu RSS {rss:.0f} MiB for a "
          f"{spec.memory_mb} MiB guest: {rss - spec.memory_mb:.0f} MiB beyond its RAM")
    assert stats["disks"]["root"]["rd_bytes"] > 0
    node_report = node.conductor.nodes[-1]
    assert node_report.accelerator == "tcg" and spec.id in node_report.servers

    await node.send(spec.model_copy(update={"revision": 2, "want": "deleted"}))
    await node.conductor.last(spec.id, state="deleted")
    assert_nothing_left(node.root, spec.id)


async def test_power_actions_change_what_the_guest_does(node, image_server, guest_image):
    spec = make_spec(image_server, guest_image)
    revision = 1

    async def want(**changes) -> ServerReport:
        nonlocal revision
        revision += 1
        await node.send(spec.model_copy(update={"revision": revision, **changes}))
        return await node.conductor.last(spec.id, revision=revision)

    await node.send(spec)
    await node.conductor.last(spec.id, state="active")
    await node.wait_ready(spec.id)

    assert (await want(want="paused")).power_state == "paused"
    assert await node.qmp_status(spec.id) == "paused"
    assert (await want(want="active")).power_state == "running"
    assert await node.qmp_status(spec.id) == "running"

    report = await want(reboot="soft")
    assert report.reboot_done and report.state == "active"
    await node.wait_ready(spec.id, count=2)
    report = await want(reboot="hard")
    assert report.reboot_done and await node.qmp_status(spec.id) == "running"
    await node.wait_ready(spec.id, count=3)

    report = await want(want="stopped")
    assert (report.state, report.power_state) == ("stopped", "shutdown")
    assert processes_mentioning(node.paths(spec.id)) == []
    report = await want(want="active")
    assert report.power_state == "running"
    await node.wait_ready(spec.id, count=4)

    report = await want(want="suspended")
    assert (report.state, report.power_state) == ("suspended", "suspended")
    assert (node.paths(spec.id) / "memory.state").exists()
    assert processes_mentioning(node.paths(spec.id)) == []
    report = await want(want="active")
    assert report.power_state == "running"
    assert await node.qmp_status(spec.id) == "running"
    assert not (node.paths(spec.id) / "memory.state").exists()

    await want(want="deleted")
    assert_nothing_left(node.root, spec.id)


async def test_guest_that_powers_itself_off_becomes_shutoff(node, image_server, guest_image):
    spec = make_spec(image_server, guest_image)
    await node.send(spec)
    await node.conductor.last(spec.id, state="active")
    await node.wait_ready(spec.id)

    # Type on the serial console (over TCP, as the console proxy does): wait for the
    # shell, then poweroff.
    console = await node.bus.call(AGENT_TARGET(HOST), "serial_console", server_id=spec.id,
                                  timeout=10)
    reader, writer = await asyncio.open_connection(console["host"], console["port"])
    try:
        seen = b""
        deadline = time.monotonic() + BOOT_TIMEOUT
        while b"# " not in (seen.splitlines() or [b""])[-1]:
            assert time.monotonic() < deadline, f"no shell prompt on the console: {seen[-500:]}"
            writer.write(b"\n")
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                seen += await asyncio.wait_for(reader.read(4096), 0.5)
        for char in b"poweroff\n":
            writer.write(bytes([char]))
            await writer.drain()
            await asyncio.sleep(0.02)
        report = await node.conductor.last(spec.id, state="stopped")
    finally:
        writer.close()
    assert report.power_state == "shutdown"
    await node.agent.run_once()   # the audit leaves it off: nobody asked for it to run
    assert processes_mentioning(node.paths(spec.id)) == []

    await node.send(spec.model_copy(update={"revision": 2}))  # "server start"
    await node.conductor.last(spec.id, state="active", revision=2)
    await node.wait_ready(spec.id, count=2)


async def test_restarted_agent_adopts_the_running_guest(node, image_server, guest_image):
    spec = make_spec(image_server, guest_image)
    await node.send(spec)
    await node.conductor.last(spec.id, state="active")
    pid = int((node.paths(spec.id) / "qemu.pid").read_text())

    await node.stop()
    assert host.pid_alive(pid)
    agent = await node.start()
    await agent.run_once()

    assert (await agent.driver.inspect_server(spec.id)).details["pid"] == pid
    await node.send(spec.model_copy(update={"revision": 2, "want": "paused"}))
    await node.conductor.last(spec.id, revision=2, state="paused")
    assert await node.qmp_status(spec.id) == "paused"
    assert int((node.paths(spec.id) / "qemu.pid").read_text()) == pid


async def test_delete_while_the_image_downloads_leaves_nothing(node, image_server, guest_image):
    spec = make_spec(image_server, guest_image,
                     image=image_server.ref(guest_image).model_copy(update={"id": "tiny-slow"}))
    image_server.files["tiny-slow"] = guest_image.disk
    image_server.started.clear()
    image_server.hold.clear()
    try:
        await node.send(spec.model_copy(update={"image": spec.image.model_copy(
            update={"download_url": image_server.url("tiny-slow")})}))
        assert await asyncio.to_thread(image_server.started.wait, 30)
        await node.send(spec.model_copy(update={"revision": 2, "want": "deleted"}))
        await node.conductor.last(spec.id, state="deleted")
    finally:
        image_server.hold.set()
    assert_nothing_left(node.root, spec.id)


@pytest.fixture
def bridge() -> Iterator[str]:
    """A bridge of this test's own, deleted afterwards."""
    name = f"tsbr{uuid.uuid4().hex[:8]}"
    asyncio.run(host.run(["ip", "link", "add", name, "type", "bridge"], timeout=10))
    try:
        yield name
    finally:
        asyncio.run(host.delete_link(name))


def start_compute_node(ts, node_name: str) -> None:
    """``tinystack up -d --role compute`` on ``ts``'s data dir (again, after a kill)."""
    ts.data_dir.mkdir(parents=True, exist_ok=True)
    (ts.data_dir / "tinystack.toml").write_text(
        "[compute_node]\naudit_interval = 1.0\nshutdown_timeout = 10.0\n")
    result = subprocess.run([*ts.up_argv(roles=("compute",)), "--node-name", node_name],
                            env=ts.env, capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{ts.log_tail()}"
    ts.pid = read_pid(ts.pid_file)
    ts.stopped = False


async def test_kill_9_mid_build_then_delete_leaves_nothing(
        e2e_amqp_url, launch_tinystack, image_server, guest_image, bridge):
    bus = connect(e2e_amqp_url)
    await bus.start()
    conductor = Conductor()
    await bus.serve(CONDUCTOR_TARGET, conductor)
    node_name = f"e2e-{uuid.uuid4().hex[:6]}"
    port_id = uuid.uuid4().hex
    tap = f"tap{port_id[:11]}"
    spec = make_spec(image_server, guest_image, ports=[
        PortBinding(port_id=port_id, mac="fa:16:3e:12:34:56", bridge=bridge, mtu=1450)])
    try:
        ts = launch_tinystack.prepare(
            "node", types.SimpleNamespace(name="rabbitmq", db=None, bus=e2e_amqp_url))
        start_compute_node(ts, node_name)
        instance = ts.data_dir / "compute" / "instances" / spec.id
        await bus.cast(AGENT_TARGET(node_name), "sync_server", spec=spec)
        deadline = time.monotonic() + BOOT_TIMEOUT
        qemu_of_server = instance / "qemu.pid"
        while not processes_mentioning(qemu_of_server):   # qemu runs; no report yet
            assert time.monotonic() < deadline, ts.log_tail()
            await asyncio.sleep(0.005)
        os.kill(ts.pid, signal.SIGKILL)
        while host.pid_alive(ts.pid):
            await asyncio.sleep(0.01)
        assert not [r for r in conductor.servers if r.server_id == spec.id]
        assert processes_mentioning(qemu_of_server), "the guest should outlive its agent"

        start_compute_node(ts, node_name)   # adopts the guest and finishes the build
        report = await conductor.last(spec.id, state="active")
        assert report.power_state == "running"
        master = Path(f"/sys/class/net/{tap}/master").resolve().name
        assert master == bridge
        assert Path(f"/sys/class/net/{tap}/mtu").read_text().strip() == "1450"
        nodes = [n for n in conductor.nodes if n.host == node_name]
        assert nodes and nodes[-1].accelerator == "tcg"

        await bus.cast(AGENT_TARGET(node_name), "sync_server",
                       spec=spec.model_copy(update={"revision": 2, "want": "deleted"}))
        await conductor.last(spec.id, state="deleted")
        assert_nothing_left(ts.data_dir, spec.id, [tap])
    finally:
        await bus.close()
        kill_everything_under(launch_tinystack.base / "node" / "compute")


async def test_snapshot_of_a_running_guest_boots_and_rebuild_starts_afresh(
        node, image_server, guest_image):
    spec = make_spec(image_server, guest_image)
    await node.send(spec)
    await node.conductor.last(spec.id, state="active")
    await node.wait_ready(spec.id)

    snapshot_id = f"snap-{spec.id[-6:]}"
    result = await node.bus.call(
        AGENT_TARGET(HOST), "snapshot_server", server_id=spec.id, image_id=snapshot_id,
        upload_url=image_server.url(snapshot_id), token="tok", disk_format="qcow2", timeout=120)
    uploaded = image_server.files[snapshot_id]
    assert result["size"] == uploaded.stat().st_size
    assert result["checksum"] == hashlib.md5(uploaded.read_bytes(), usedforsecurity=False).hexdigest()
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(uploaded)],
                                     capture_output=True, check=True, timeout=30).stdout)
    assert info["format"] == "qcow2" and "backing-filename" not in info
    assert await node.qmp_status(spec.id) == "running"

    image = image_server.ref(guest_image).model_copy(update={
        "id": snapshot_id, "download_url": image_server.url(snapshot_id),
        "checksum": result["checksum"]})
    clone = make_spec(image_server, guest_image, image=image)
    await node.send(clone)
    await node.conductor.last(clone.id, state="active")
    await node.wait_ready(clone.id)

    # A rebuilt guest has a fresh root disk: dropbear makes itself a new host key.
    await node.send(spec.model_copy(update={"revision": 2, "rebuild": True}))
    report = await node.conductor.last(spec.id, revision=2)
    assert report.state == "active"
    await node.wait_ready(spec.id, count=2)
    keys = [line for line in (await node.console(spec.id)).splitlines()
            if "ssh-host-key:" in line]
    assert len(keys) == 2 and keys[0] != keys[1]
