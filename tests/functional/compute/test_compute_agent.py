"""The compute agent's reconciliation, over the in-process bus, with the fake driver.

A test plays the controller: it casts ``sync_server`` to ``compute.<host>``
(or hands the spec to ``agent.receive``) and reads what the agent casts to
the conductor. Time is a fake clock the test moves; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from fakes.compute_driver import FakeComputeDriver

from tinystack.common.bus import connect
from tinystack.compute.agent import AgentOptions, ComputeAgent
from tinystack.compute.desired import DesiredStore
from tinystack.compute.drivers.base import TemporaryFailure
from tinystack.compute.messages import (
    AGENT_TARGET,
    CONDUCTOR_TARGET,
    ImageRef,
    NodeReport,
    ServerReport,
    ServerSpec,
)

HOST = "node1"
DEADLINE = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Conductor:
    """Stands in for the controller's conductor: keeps every report it is sent."""

    def __init__(self) -> None:
        self.servers: list[ServerReport] = []
        self.nodes: list[NodeReport] = []
        self._changed = asyncio.Condition()

    async def report_server(self, report: dict, **_) -> None:
        async with self._changed:
            self.servers.append(ServerReport.model_validate(report))
            self._changed.notify_all()

    async def report_node(self, report: dict, **_) -> None:
        async with self._changed:
            self.nodes.append(NodeReport.model_validate(report))
            self._changed.notify_all()

    def of(self, server_id: str) -> list[ServerReport]:
        return [r for r in self.servers if r.server_id == server_id]

    async def wait_for(self, predicate: Callable[[], object]) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), DEADLINE)

    async def last(self, server_id: str, **expected) -> ServerReport:
        """Wait until the newest report of ``server_id`` has ``expected`` fields."""
        def matches() -> bool:
            reports = self.of(server_id)
            return bool(reports) and all(getattr(reports[-1], k) == v for k, v in expected.items())
        try:
            await self.wait_for(matches)
        except TimeoutError:
            raise AssertionError(f"no report {expected}; got {self.of(server_id)}") from None
        return self.of(server_id)[-1]


def spec(server_id: str = "srv-1", revision: int = 1, **fields) -> ServerSpec:
    image = ImageRef(id="img-1", download_url="http://127.0.0.1:1/images/img-1/file")
    return ServerSpec(id=server_id, name=f"name-{server_id}", revision=revision, image=image,
                      **fields)


class Harness:
    def __init__(self, tmp_path, bus, conductor, clock):
        self.tmp_path, self.bus, self.conductor, self.clock = tmp_path, bus, conductor, clock
        self.agents: list[ComputeAgent] = []

    async def agent(self, driver: FakeComputeDriver | None = None, **options) -> ComputeAgent:
        options.setdefault("give_up_after", 4)
        store = DesiredStore(self.tmp_path / "desired", wall=lambda: self.clock.now,
                             tombstone_ttl=100)
        agent = ComputeAgent(host=HOST, bus=self.bus, driver=driver or FakeComputeDriver(),
                             store=store, options=AgentOptions(**options), clock=self.clock)
        await agent.start()
        self.agents.append(agent)
        return agent


@pytest.fixture
async def harness(tmp_path) -> AsyncIterator[Harness]:
    bus = connect(f"memory://agent-{uuid.uuid4().hex[:8]}")
    await bus.start()
    conductor = Conductor()
    await bus.serve(CONDUCTOR_TARGET, conductor)
    h = Harness(tmp_path, bus, conductor, Clock())
    yield h
    for agent in h.agents:
        await agent.stop()
    await bus.close()


async def test_boot_over_the_bus_reports_active(harness):
    driver = FakeComputeDriver()
    await harness.agent(driver)

    await harness.bus.cast(AGENT_TARGET(HOST), "sync_server", spec=spec())

    report = await harness.conductor.last("srv-1", state="active")
    assert report.power_state == "running" and report.host == HOST and report.revision == 1
    assert report.launched_at and report.console_log
    assert driver.mutations("srv-1") == ["ensure_server", "power_on"]


async def test_boot_reports_what_power_on_said_without_inspecting_again(harness):
    driver = FakeComputeDriver()
    agent = await harness.agent(driver)

    await agent.receive(spec())

    report = await harness.conductor.last("srv-1", state="active")
    assert report.power_state == "running" and report.launched_at
    # One look before the build and one after ensure_server; none once the guest runs.
    assert driver.inspections == ["srv-1", "srv-1"]


@pytest.mark.parametrize("want, state, power", [("active", "active", "running"),
                                                ("paused", "paused", "paused")])
async def test_boot_inspects_when_power_on_does_not_say(harness, want, state, power):
    driver = FakeComputeDriver(tell_power_on=False)
    agent = await harness.agent(driver)

    await agent.receive(spec(want=want))

    report = await harness.conductor.last("srv-1", state=state)
    assert report.power_state == power and report.launched_at
    assert len(driver.inspections) > 2


async def test_boot_paused_pauses_the_guest_power_on_left_running(harness):
    driver = FakeComputeDriver()
    agent = await harness.agent(driver)

    await agent.receive(spec(want="paused"))

    report = await harness.conductor.last("srv-1", state="paused")
    assert report.power_state == "paused"
    assert driver.mutations("srv-1") == ["ensure_server", "power_on", "pause"]


async def test_converged_server_costs_nothing(harness):
    driver = FakeComputeDriver()
    agent = await harness.agent(driver)
    await agent.receive(spec())
    await harness.conductor.last("srv-1", state="active")
    calls, reports = list(driver.calls), list(harness.conductor.servers)

    assert await agent.sync("srv-1") == "ok"
    await agent.run_once()
    await agent.run_once()

    assert driver.calls == calls
    assert harness.conductor.servers == reports


async def test_unchanged_report_is_sent_again_after_report_every(harness):
    agent = await harness.agent(report_every=60)
    await agent.receive(spec())
    await harness.conductor.last("srv-1", state="active")
    harness.clock.advance(61)

    await agent.run_once()

    await harness.conductor.wait_for(lambda: len(harness.conductor.of("srv-1")) == 2)


async def test_newer_revision_wins_and_older_is_ignored(harness):
    driver = FakeComputeDriver()
    agent = await harness.agent(driver)
    await agent.receive(spec(revision=1))
    await agent.receive(spec(revision=3, want="stopped"))
    await harness.conductor.last("srv-1", state="stopped", revision=3)

    await agent.receive(spec(revision=2, want="active"))
    await agent.run_once()

    assert driver.guests["srv-1"].power_state == "shutdown"
    assert driver.mutations("srv-1") == ["ensure_server", "power_on", "ensure_server", "power_off"]
    assert harness.conductor.of("srv-1")[-1].revision == 3


async def test_delete_is_a_tombstone_that_outlives_older_specs(harness):
    driver = FakeComputeDriver()
    agent = await harness.agent(driver)
    await agent.receive(spec(revision=1))
    await agent.receive(spec(revision=2, want="deleted"))

    report = await harness.conductor.last("srv-1", state="deleted", revision=2)
    assert report.power_state == "nostate"
    assert "srv-1" not in driver.guests

    await agent.receive(spec(revision=1))  # a late, older create
    await agent.run_once()
    assert "srv-1" not in driver.guests
    await harness.conductor.wait_for(lambda: harness.conductor.nodes)
    assert harness.conductor.nodes[-1].servers == []

    harness.clock.advance(101)
    await agent.run_once()
    assert agent.store.get("srv-1") is None


async def test_delete_cancels_a_build_in_flight(harness):
    driver = FakeComputeDriver(block_on={"ensure_server"})
    agent = await harness.agent(driver)
    build = asyncio.create_task(agent.receive(spec(revision=1)))
    await asyncio.wait_for(driver.blocked.wait(), DEADLINE)

    await agent.receive(spec(revision=2, want="deleted"))
    await build

    await harness.conductor.last("srv-1", state="deleted")
    assert "power_on" not in driver.mutations("srv-1")
    assert "srv-1" not in driver.guests


async def test_temporary_failure_is_retried_with_backoff(harness):
    driver = FakeComputeDriver(fail_on={"ensure_server"}, fail_times=2)
    agent = await harness.agent(driver, retry_initial=1.0)

    await agent.receive(spec())
    assert harness.conductor.of("srv-1") == []

    await agent.run_once()  # not due yet: backing off 1 s
    assert driver.mutations("srv-1") == ["ensure_server"]

    harness.clock.advance(1.0)
    await agent.run_once()  # fails again, now backing off 2 s
    harness.clock.advance(1.0)
    await agent.run_once()
    assert driver.mutations("srv-1") == ["ensure_server", "ensure_server"]

    harness.clock.advance(1.0)
    await agent.run_once()
    await harness.conductor.last("srv-1", state="active")


class NeedsAToken(FakeComputeDriver):
    """Cannot read the image without a token, as the image service refuses then."""

    async def ensure_server(self, spec: ServerSpec) -> None:
        if not spec.token:
            raise TemporaryFailure("no token yet to read image img-1 with")
        await super().ensure_server(spec)


async def test_the_builds_own_spec_brings_the_token_an_audit_resend_lacked(harness):
    agent = await harness.agent(NeedsAToken(), retry_initial=60.0)

    await agent.receive(spec(revision=2))  # the conductor's audit: no token
    assert harness.conductor.of("srv-1") == []
    await agent.receive(spec(revision=2, token="tok"))  # the build's cast, just after

    report = await harness.conductor.last("srv-1", state="active")
    assert report.revision == 2


async def test_temporary_failure_becomes_error_after_the_last_try(harness):
    driver = FakeComputeDriver(fail_on={"power_on"})
    agent = await harness.agent(driver, give_up_after=3, retry_initial=1.0)

    await agent.receive(spec())
    for _ in range(3):
        harness.clock.advance(10)
        await agent.run_once()

    report = await harness.conductor.last("srv-1", state="error")
    assert report.fault == "fake power_on failed for srv-1 (gave up after 3 tries)"


async def test_permanent_failure_reports_error_and_waits_for_a_newer_revision(harness):
    driver = FakeComputeDriver(fail_on={"power_on"}, fail_kind="permanent")
    agent = await harness.agent(driver)

    await agent.receive(spec())
    report = await harness.conductor.last("srv-1", state="error")
    assert report.fault == "fake power_on failed for srv-1"
    assert report.power_state == "shutdown"

    harness.clock.advance(1000)
    await agent.run_once()
    assert driver.mutations("srv-1").count("power_on") == 1

    driver.fail_on.clear()
    await agent.receive(spec(revision=2))
    report = await harness.conductor.last("srv-1", state="active", revision=2)
    assert report.fault is None


async def test_gone_stops_quietly(harness):
    driver = FakeComputeDriver(fail_on={"ensure_server"}, fail_kind="gone")
    agent = await harness.agent(driver)

    assert await agent.sync("srv-1") == "ok"  # nothing asked, nothing there
    await agent.receive(spec())
    assert harness.conductor.of("srv-1") == []
    assert agent.health()["retrying"] == 0


async def test_guest_that_powers_itself_off_becomes_shutoff_and_stays_off(harness):
    driver = FakeComputeDriver()
    agent = await harness.agent(driver)
    await agent.receive(spec())
    await harness.conductor.last("srv-1", state="active")

    driver.power_off_by_guest("srv-1")
    await agent.run_once()

    report = await harness.conductor.last("srv-1", state="stopped")
    assert report.power_state == "shutdown"
    assert driver.guests["srv-1"].boots == 1

    await agent.receive(spec(revision=2, want="active"))  # "server start"
    await harness.conductor.last("srv-1", state="active", revision=2)
    assert driver.guests["srv-1"].boots == 2


async def test_driver_change_wakes_the_agent_without_an_audit(harness):
    driver = FakeComputeDriver()
    agent = await harness.agent(driver, audit_interval=3600)
    runner = asyncio.create_task(agent.run_forever())
    try:
        await agent.receive(spec())
        await harness.conductor.last("srv-1", state="active")
        driver.power_off_by_guest("srv-1")
        await harness.conductor.last("srv-1", state="stopped")
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_reboot_happens_once_per_revision(harness):
    driver = FakeComputeDriver()
    agent = await harness.agent(driver)
    await agent.receive(spec())
    await agent.receive(spec(revision=2, reboot="soft"))

    report = await harness.conductor.last("srv-1", revision=2, reboot_done=True)
    assert report.state == "active"
    await agent.run_once()
    await agent.run_once()
    assert driver.mutations("srv-1").count("reboot_soft") == 1

    await agent.receive(spec(revision=3, reboot="hard"))
    await harness.conductor.last("srv-1", revision=3, reboot_done=True)
    assert driver.mutations("srv-1")[-1] == "reboot_hard"


@pytest.mark.parametrize(("want", "power", "state", "action"), [
    ("paused", "paused", "paused", "pause"),
    ("stopped", "shutdown", "stopped", "power_off"),
    ("suspended", "suspended", "suspended", "suspend"),
])
async def test_power_actions_and_back(harness, want, power, state, action):
    driver = FakeComputeDriver()
    agent = await harness.agent(driver)
    await agent.receive(spec())

    await agent.receive(spec(revision=2, want=want))
    report = await harness.conductor.last("srv-1", revision=2)
    assert (report.state, report.power_state) == (state, power)
    assert driver.mutations("srv-1")[-1] == action

    await agent.receive(spec(revision=3, want="active"))
    report = await harness.conductor.last("srv-1", revision=3)
    assert (report.state, report.power_state) == ("active", "running")


async def test_restarted_agent_adopts_running_guest(harness):
    driver = FakeComputeDriver()
    first = await harness.agent(driver, stop_guests_on_exit=False)
    await first.receive(spec())
    await harness.conductor.last("srv-1", state="active")
    await first.stop()
    harness.agents.remove(first)
    before = list(driver.calls)

    second = await harness.agent(driver)
    await second.run_once()

    assert driver.calls == before
    assert driver.guests["srv-1"].power_state == "running"
    await harness.conductor.wait_for(lambda: harness.conductor.nodes)
    assert harness.conductor.nodes[-1].servers == ["srv-1"]


async def test_restarted_agent_finishes_a_build_it_was_killed_in(harness):
    """The spec is on disk before anything happens; nothing was applied yet."""
    store = DesiredStore(harness.tmp_path / "desired")
    store.load()
    store.offer(spec())  # what a killed agent left behind
    driver = FakeComputeDriver()

    agent = await harness.agent(driver)
    await agent.run_once()

    await harness.conductor.last("srv-1", state="active")


async def test_stop_on_exit_and_start_again(harness):
    driver = FakeComputeDriver()
    first = await harness.agent(driver, stop_guests_on_exit=True)
    await first.receive(spec())
    await first.stop()
    harness.agents.remove(first)
    assert driver.guests["srv-1"].power_state == "shutdown"

    second = await harness.agent(driver)
    await second.run_once()

    assert driver.guests["srv-1"].power_state == "running"
    assert second.store.get("srv-1").resume is False


async def test_leftover_nothing_asks_for_is_removed(harness):
    driver = FakeComputeDriver()
    await driver.ensure_server(spec("stray"))
    agent = await harness.agent(driver)

    await agent.run_once()

    assert "stray" not in driver.guests
    assert harness.conductor.of("stray") == []


async def test_node_report_counts_what_servers_use(harness):
    agent = await harness.agent(FakeComputeDriver(accelerator="tcg"))
    await agent.receive(spec("a", vcpus=2, memory_mb=256, root_gb=2, ephemeral_gb=1))
    await agent.receive(spec("b"))
    await agent.receive(spec("b", revision=2, want="deleted"))

    await agent.run_once()

    await harness.conductor.wait_for(lambda: harness.conductor.nodes)
    node = harness.conductor.nodes[-1]
    assert (node.host, node.accelerator, node.vcpus, node.memory_mb) == (HOST, "tcg", 4, 8192)
    assert (node.vcpus_used, node.memory_mb_used, node.local_gb_used) == (2, 256, 3)
    assert (node.running_vms, node.servers) == (1, ["a"])
    assert (node.hypervisor_version, node.uptime, node.host_ip) == (7002000, "up 1 day", "127.0.0.1")


async def test_console_output_over_the_bus(harness):
    await harness.agent()
    await harness.bus.cast(AGENT_TARGET(HOST), "sync_server", spec=spec())
    await harness.conductor.last("srv-1", state="active")

    text = await harness.bus.call(AGENT_TARGET(HOST), "console_output", server_id="srv-1",
                                  length=10, timeout=DEADLINE)

    assert text == "tinystack guest name-srv-1 ready"


async def test_spec_with_an_unsafe_id_is_refused(harness):
    driver = FakeComputeDriver()
    agent = await harness.agent(driver)
    await agent.receive(spec("../../etc"))
    assert driver.calls == [] and agent.store.ids() == []


async def test_rebuild_makes_a_new_disk_once_and_boots_it(harness):
    driver = FakeComputeDriver()
    agent = await harness.agent(driver)
    await agent.receive(spec())

    await agent.receive(spec(revision=2, rebuild=True))
    report = await harness.conductor.last("srv-1", revision=2, state="active")
    await agent.run_once()

    assert driver.guests["srv-1"].rebuilds == 1 and driver.guests["srv-1"].boots == 2
    assert report.power_state == "running"


async def test_resize_restarts_a_running_guest_once_and_a_stopped_one_not(harness):
    driver = FakeComputeDriver()
    agent = await harness.agent(driver)
    await agent.receive(spec(memory_mb=192))
    await harness.conductor.last("srv-1", state="active")

    await agent.receive(spec(revision=2, memory_mb=256, root_gb=2))
    report = await harness.conductor.last("srv-1", revision=2)
    await agent.run_once()
    await agent.receive(spec(revision=3, memory_mb=256, root_gb=2, want="paused"))
    await harness.conductor.last("srv-1", revision=3, state="paused")

    guest = driver.guests["srv-1"]
    assert (report.state, report.power_state) == ("active", "running")
    assert guest.boots == 2 and (guest.spec.memory_mb, guest.spec.root_gb) == (256, 2)
    assert driver.mutations("srv-1").count("resize_server") == 1

    await agent.receive(spec(revision=4, memory_mb=256, root_gb=2, want="stopped"))
    await agent.receive(spec(revision=5, memory_mb=512, root_gb=2, want="stopped"))
    report = await harness.conductor.last("srv-1", revision=5)
    assert (report.state, guest.boots, guest.spec.memory_mb) == ("stopped", 2, 512)


async def test_snapshot_and_serial_console_over_the_bus(harness):
    driver = FakeComputeDriver()
    await harness.agent(driver)
    await harness.bus.cast(AGENT_TARGET(HOST), "sync_server", spec=spec())
    await harness.conductor.last("srv-1", state="active")

    result = await harness.bus.call(
        AGENT_TARGET(HOST), "snapshot_server", server_id="srv-1", image_id="img-2",
        upload_url="http://127.0.0.1:1/v2/images/img-2/file", token="tok", disk_format="qcow2",
        timeout=DEADLINE)
    console = await harness.bus.call(AGENT_TARGET(HOST), "serial_console", server_id="srv-1",
                                     timeout=DEADLINE)

    assert result == {"size": 1024, "checksum": "0" * 32}
    assert driver.uploads == [("srv-1", "http://127.0.0.1:1/v2/images/img-2/file", "tok", "qcow2")]
    assert console == {"host": "127.0.0.1", "port": 10000}
