"""The compute agent: keeps this node's servers as the controller says they should be.

It serves ``compute.<host>`` on the bus (``messages.py`` is the contract),
records each ``ServerSpec`` it is sent (``desired.py``: newest revision wins, a
delete is a tombstone), and reconciles one server at a time with
``sync(server_id)``: on every message, on start, and on a periodic audit
(``run_once()``; ``run_forever()`` repeats it). A sync reads the desired state
and the machine fresh, changes only the difference through the driver
(``drivers/base.py``), and reports last, by casting ``report_server`` to the
conductor. Each audit also casts ``report_node``, the node's heartbeat.

Calls answered on the bus besides ``sync_server``: ``console_output``,
``server_statistics``, ``snapshot_server`` (under the server's sync lock) and
``serial_console``.

Boot, reboot and rebuild are edges, not levels: they happen once per revision. So a
guest that powers itself off stays off (reported ``stopped``/``shutdown``,
Nova's SHUTOFF) until a newer revision asks for it to run. Each new revision
also gives the guest the spec's vCPUs, memory and disk sizes (a resize or its
revert): the driver restarts a running guest only when they changed.

Failures, as the driver sorts them: temporary ones are retried with
exponential backoff, and become permanent after ``give_up_after`` tries;
permanent ones put the server in ``error`` with the driver's message as the
fault, untouched until a newer revision; ``ServerGone`` ends the sync quietly.
Anything else is a bug: logged with its traceback and retried like a
temporary failure.

A delete cancels whatever sync is in flight for that server (a build stuck in
an image download, say) and removes everything; the driver finds what to
remove on the machine, so a cancelled or killed build leaves nothing behind.

This agent never opens the database and imports no models; the QEMU work is
in ``drivers/qemu.py``, the wiring into a process in ``node.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from tinystack.common.bus import Bus
from tinystack.compute.desired import DesiredStore, Record, valid_server_id
from tinystack.compute.drivers.base import (
    ComputeDriver,
    PermanentFailure,
    ServerGone,
    ServerStatus,
    TemporaryFailure,
)
from tinystack.compute.messages import (
    AGENT_TARGET,
    CONDUCTOR_TARGET,
    NodeReport,
    SerialConsole,
    ServerReport,
    ServerSpec,
    SnapshotResult,
)

__all__ = ["AgentOptions", "ComputeAgent"]

log = logging.getLogger(__name__)

_STATE_OF_POWER = {
    "running": "active",
    "paused": "paused",
    "suspended": "suspended",
    "shutdown": "stopped",
    "crashed": "error",
    "nostate": "building",
}


@dataclass(frozen=True)
class AgentOptions:
    """The agent's knobs; ``node.py`` fills them from ``ComputeSettings``."""

    audit_interval: float = 10.0
    """Seconds between audits (and node heartbeats)."""
    shutdown_timeout: float = 20.0
    """Seconds a guest gets to shut down cleanly before it is stopped hard."""
    retry_initial: float = 1.0
    """First backoff after a temporary failure, doubled each time."""
    retry_max: float = 300.0
    give_up_after: int = 8
    """Temporary failures in a row after which a server goes to error."""
    report_every: float = 60.0
    """Seconds after which an unchanged server report is sent again (casts can be lost)."""
    stop_guests_on_exit: bool = True
    """Stop guests when the agent stops (and start them when it starts again)."""
    concurrency: int = 4
    """Servers an audit syncs at once."""


@dataclass
class _Backoff:
    attempts: int = 0
    next_at: float = 0.0
    last_error: str = ""


class _Endpoint:
    """What the bus may call on ``compute.<host>``; nothing else of the agent is exposed."""

    def __init__(self, agent: ComputeAgent):
        self._agent = agent

    async def sync_server(self, spec: dict, **_) -> None:
        await self._agent.receive(ServerSpec.model_validate(spec))

    async def console_output(self, server_id: str, length: int | None = None, **_) -> str:
        return await self._agent.console_output(server_id, length)

    async def server_statistics(self, server_id: str, **_) -> dict:
        return await self._agent.statistics(server_id)

    async def snapshot_server(self, server_id: str, image_id: str, upload_url: str,
                              token: str = "", disk_format: str = "qcow2", **_) -> dict:
        result = await self._agent.snapshot(server_id, image_id=image_id, upload_url=upload_url,
                                            token=token, disk_format=disk_format)
        return result.model_dump()

    async def serial_console(self, server_id: str, **_) -> dict:
        return (await self._agent.serial_console(server_id)).model_dump()


class ComputeAgent:
    """One node's agent. ``start()``, then ``run_forever()`` in a task; ``stop()`` at the end."""

    def __init__(self, *, host: str, bus: Bus, driver: ComputeDriver, store: DesiredStore,
                 options: AgentOptions | None = None,
                 clock: Callable[[], float] = time.monotonic, host_ip: str = "127.0.0.1"):
        self.host = host
        self.host_ip = host_ip
        self.bus = bus
        self.driver = driver
        self.store = store
        self.options = options or AgentOptions()
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._in_flight: dict[str, asyncio.Task] = {}
        self._backoff: dict[str, _Backoff] = {}
        self._last_report: dict[str, tuple[ServerReport, float]] = {}
        self._wake = asyncio.Event()
        self._changed: set[str] = set()
        self._stopping = False
        self._audits = 0
        self.last_error: str | None = None
        """What made the last audit fail (None when it worked)."""

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the desired state, get the driver ready and start serving the bus."""
        self.store.load()
        await self.driver.start()
        self.driver.watch(self._on_driver_change)
        await self.bus.serve(AGENT_TARGET(self.host), _Endpoint(self))

    async def run_forever(self) -> None:
        """Audit now, then every ``audit_interval`` seconds (sooner for due retries and for
        guests the driver saw change)."""
        while not self._stopping:
            try:
                await self.run_once()
                self.last_error = None
            except Exception as exc:
                log.exception("compute: audit failed; trying again at the next one")
                self.last_error = f"{type(exc).__name__}: {exc}"
            await self._sleep_until_due()

    async def run_once(self) -> None:
        """One audit: sync every server this node has or should have, then send a heartbeat."""
        self._audits += 1
        self._changed.clear()
        ids = set(self.store.ids()) | set(await self.driver.list_servers())
        due = [sid for sid in sorted(ids) if self._due(sid)]
        gate = asyncio.Semaphore(self.options.concurrency)

        async def one(server_id: str) -> None:
            async with gate:
                await self.sync(server_id)

        await asyncio.gather(*(one(sid) for sid in due))
        for server_id in self.store.prune():
            self._forget(server_id)
        await self.report_node()

    async def stop(self) -> None:
        """Cancel syncs in flight; stop the guests if the options say so; close the driver."""
        self._stopping = True
        self._wake.set()
        for task in list(self._in_flight.values()):
            task.cancel()
        await asyncio.gather(*self._in_flight.values(), return_exceptions=True)
        if self.options.stop_guests_on_exit:
            await asyncio.gather(*(self._stop_on_exit(sid) for sid in self.store.ids()))
        await self.driver.close()

    async def _stop_on_exit(self, server_id: str) -> None:
        record = self.store.get(server_id)
        if record is None or record.deleted:
            return
        try:
            status = await self.driver.inspect_server(server_id)
            if status is not None and status.running:
                self.store.update(server_id, resume=True)
                await self.driver.power_off(server_id, timeout=self.options.shutdown_timeout)
        except Exception:
            log.exception("compute: could not stop server %s on exit", server_id)

    # -- messages ---------------------------------------------------------------------------

    async def receive(self, spec: ServerSpec) -> None:
        """A spec from the controller: keep it if newest, then sync that server."""
        if self._stopping:
            return
        if not valid_server_id(spec.id):
            log.error("compute: refusing a spec with server id %r", spec.id)
            return
        if not self.store.offer(spec):
            log.debug("compute: spec %s revision %s is not newer; ignored", spec.id, spec.revision)
            return
        self._backoff.pop(spec.id, None)
        if spec.want == "deleted":
            in_flight = self._in_flight.get(spec.id)
            if in_flight is not None:
                log.info("compute: server %s deleted; cancelling its sync in flight", spec.id)
                in_flight.cancel()
        await self.sync(spec.id)

    async def console_output(self, server_id: str, length: int | None = None) -> str:
        """What the guest printed (the last ``length`` lines); ServerGone if it is not here."""
        self._check_id(server_id)
        return await self.driver.console_output(server_id, length)

    async def statistics(self, server_id: str) -> dict:
        """Disk and memory figures of a running guest; {} when it does not run."""
        self._check_id(server_id)
        return await self.driver.statistics(server_id)

    async def snapshot(self, server_id: str, *, image_id: str, upload_url: str, token: str,
                       disk_format: str) -> SnapshotResult:
        """Upload the server's root disk as image ``image_id`` (the guest keeps running).

        Holds the server's sync lock, so no power action or delete runs meanwhile.
        """
        self._check_id(server_id)
        async with self._locks.setdefault(server_id, asyncio.Lock()):
            size, checksum = await self.driver.snapshot_server(
                server_id, upload_url=upload_url, token=token, disk_format=disk_format)
        log.info("compute: uploaded a snapshot of server %s as image %s (%d bytes)",
                 server_id, image_id, size)
        return SnapshotResult(size=size, checksum=checksum)

    async def serial_console(self, server_id: str) -> SerialConsole:
        """Where the controller's console proxy reaches the guest's serial port."""
        self._check_id(server_id)
        address, port = await self.driver.serial_console(server_id)
        return SerialConsole(host=address, port=port)

    @staticmethod
    def _check_id(server_id: str) -> None:
        if not valid_server_id(server_id):
            raise ServerGone(f"no server {server_id!r} on this node")

    # -- reconciling one server -------------------------------------------------------------

    async def sync(self, server_id: str) -> str:
        """Make the machine match the desired state of ``server_id``, then report.

        Returns what happened: ``ok``, ``retry`` (temporary failure, backing off),
        ``error`` (permanent failure reported), ``gone`` or ``cancelled`` (a newer
        spec took over).
        """
        lock = self._locks.setdefault(server_id, asyncio.Lock())
        async with lock:
            task = asyncio.get_running_loop().create_task(self._sync(server_id))
            self._in_flight[server_id] = task
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                task.cancel()
                await asyncio.wait({task})
                raise
            finally:
                self._in_flight.pop(server_id, None)
            if task.cancelled():
                return "cancelled"
            return await self._settle(server_id, task.exception())

    async def _settle(self, server_id: str, exc: BaseException | None) -> str:
        """Sort the outcome of a sync into ok / retry / error / gone."""
        if exc is None:
            self._backoff.pop(server_id, None)
            return "ok"
        if isinstance(exc, ServerGone):
            self._backoff.pop(server_id, None)
            log.info("compute: server %s went away during sync: %s", server_id, exc)
            return "gone"
        if isinstance(exc, PermanentFailure):
            await self._fail(server_id, str(exc))
            return "error"
        if isinstance(exc, TemporaryFailure):
            log.warning("compute: server %s: %s (will retry)", server_id, exc)
        else:
            log.error("compute: bug while syncing server %s", server_id, exc_info=exc)
        backoff = self._backoff.setdefault(server_id, _Backoff())
        backoff.attempts += 1
        backoff.last_error = str(exc) or type(exc).__name__
        if backoff.attempts >= self.options.give_up_after:
            await self._fail(server_id, f"{backoff.last_error} (gave up after "
                                        f"{backoff.attempts} tries)")
            return "error"
        delay = min(self.options.retry_max,
                    self.options.retry_initial * 2 ** (backoff.attempts - 1))
        backoff.next_at = self._clock() + delay
        self._wake.set()
        return "retry"

    async def _fail(self, server_id: str, fault: str) -> None:
        self._backoff.pop(server_id, None)
        record = self.store.get(server_id)
        if record is None or record.deleted:
            return
        log.warning("compute: server %s failed: %s", server_id, fault)
        self.store.update(server_id, failed=record.spec.revision, fault=fault)
        status = await self._inspect_quietly(server_id)
        await self._report(self._server_report(record.spec, status, fault=fault))

    async def _sync(self, server_id: str) -> None:
        record = self.store.get(server_id)
        have = await self.driver.inspect_server(server_id)
        if record is None:
            if have is not None:
                log.warning("compute: removing server %s, which nothing asks for", server_id)
                await self.driver.remove_server(server_id)
            return
        spec = record.spec
        if record.deleted:
            await self._sync_deleted(record, have)
            return
        if record.failed == spec.revision:
            await self._report(self._server_report(spec, have, fault=record.fault))
            return
        fresh = record.applied < spec.revision
        rebooted, now = await self._converge(record, have, fresh)
        if fresh or record.resume or record.fault:
            record = self.store.update(server_id, applied=spec.revision, resume=False, fault=None)
        if now is None:
            now = await self.driver.inspect_server(server_id)
        await self._report(self._server_report(spec, now, reboot_done=rebooted))

    async def _sync_deleted(self, record: Record, have: ServerStatus | None) -> None:
        spec = record.spec
        if have is not None:
            await self.driver.remove_server(spec.id)
        if record.applied != spec.revision:
            self.store.update(spec.id, applied=spec.revision)
            await self._report(self._server_report(spec, None))

    async def _converge(self, record: Record, have: ServerStatus | None,
                        fresh: bool) -> tuple[bool, ServerStatus | None]:
        """Change the machine toward ``record.spec``. Returns whether this revision's reboot
        is done, and the server's status when the last step told it (a guest just powered
        on), so the report needs no further inspection; None when it must inspect."""
        spec, want = record.spec, record.spec.want
        timeout = self.options.shutdown_timeout
        if fresh and spec.rebuild and have is not None:
            await self.driver.rebuild_server(spec)
            have = await self.driver.inspect_server(spec.id)
        elif fresh and have is not None and have.power_state != "nostate":
            await self.driver.resize_server(spec, timeout=timeout)   # a new flavor, or none
            have = await self.driver.inspect_server(spec.id)
        if have is None or fresh or have.power_state == "nostate":
            await self.driver.ensure_server(spec)
            have = await self.driver.inspect_server(spec.id)
        power = have.power_state if have is not None else "nostate"
        if want in ("active", "paused"):
            if power in ("running", "paused", "crashed"):
                if fresh and (spec.reboot or power == "crashed"):
                    await self.driver.reboot(spec.id, hard=spec.reboot != "soft", timeout=timeout)
            elif power == "suspended":
                if fresh:
                    await self.driver.power_on(spec)
            elif fresh or record.resume or power == "nostate":
                # "shutdown" and not fresh: the guest powered itself off; it stays off.
                # A driver that knows the state it left the guest in says so: no round trip.
                started = await self.driver.power_on(spec)
                if started is not None and started.power_state == ("running" if want == "active"
                                                                   else "paused"):
                    return fresh and bool(spec.reboot), started
            power = await self._power_of(spec.id)
            if want == "active" and power == "paused":
                await self.driver.unpause(spec.id)
            elif want == "paused" and power == "running":
                await self.driver.pause(spec.id)
            return fresh and bool(spec.reboot), None
        if want == "stopped" and power != "shutdown" and have is not None:
            await self.driver.power_off(spec.id, timeout=timeout)
        elif want == "suspended" and power in ("running", "paused"):
            await self.driver.suspend(spec.id)
        return False, None

    async def _power_of(self, server_id: str) -> str:
        status = await self.driver.inspect_server(server_id)
        return status.power_state if status is not None else "nostate"

    # -- reports ----------------------------------------------------------------------------

    def _server_report(self, spec: ServerSpec, status: ServerStatus | None, *,
                       fault: str | None = None, reboot_done: bool = False) -> ServerReport:
        if spec.want == "deleted":
            return ServerReport(server_id=spec.id, host=self.host, revision=spec.revision,
                                state="deleted", power_state="nostate")
        power = status.power_state if status is not None else "nostate"
        state = "error" if fault else _STATE_OF_POWER[power]
        return ServerReport(
            server_id=spec.id, host=self.host, revision=spec.revision, power_state=power,
            state=state, fault=fault, reboot_done=reboot_done,
            launched_at=status.launched_at if status is not None else None,
            console_log=status.console_log if status is not None else "",
        )

    async def _report(self, report: ServerReport) -> None:
        """Cast the report unless the conductor already has it (and it is not stale)."""
        now = self._clock()
        last = self._last_report.get(report.server_id)
        if (last is not None and last[0] == report and not report.reboot_done
                and now - last[1] < self.options.report_every):
            return
        self._last_report[report.server_id] = (report, now)
        await self.bus.cast(CONDUCTOR_TARGET, "report_server", report=report)

    async def report_node(self) -> None:
        """Cast the node's heartbeat: its resources, what its servers use, which it has."""
        resources = await self.driver.node_resources()
        used = [r.spec for sid in self.store.ids()
                if (r := self.store.get(sid)) is not None and not r.deleted]
        running = 0
        for spec in used:
            status = self._last_report.get(spec.id)
            if status is not None and status[0].power_state in ("running", "paused"):
                running += 1
        report = NodeReport(
            host=self.host, hypervisor_type=resources.hypervisor_type,
            accelerator=resources.accelerator, vcpus=resources.vcpus,
            memory_mb=resources.memory_mb, local_gb=resources.local_gb,
            vcpus_used=sum(s.vcpus for s in used),
            memory_mb_used=sum(s.memory_mb for s in used),
            local_gb_used=sum(s.root_gb + s.ephemeral_gb for s in used),
            running_vms=running, servers=sorted(s.id for s in used),
            hypervisor_version=resources.hypervisor_version, cpu_info=resources.cpu_info,
            uptime=resources.uptime, host_ip=self.host_ip,
        )
        await self.bus.cast(CONDUCTOR_TARGET, "report_node", report=report)

    # -- scheduling -------------------------------------------------------------------------

    def _due(self, server_id: str) -> bool:
        backoff = self._backoff.get(server_id)
        return backoff is None or backoff.next_at <= self._clock()

    def _on_driver_change(self, server_id: str) -> None:
        self._changed.add(server_id)
        self._wake.set()

    async def _sleep_until_due(self) -> None:
        """Wait for the next audit, a retry that falls due, or a change the driver saw."""
        deadline = self._clock() + self.options.audit_interval
        while not self._stopping:
            self._wake.clear()
            changed, self._changed = self._changed, set()
            for server_id in sorted(changed):
                await self.sync(server_id)
            wake_at = min([deadline, *(b.next_at for b in self._backoff.values())])
            if self._clock() >= wake_at:
                return
            if self._changed:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), wake_at - self._clock())
            except TimeoutError:
                return

    def _forget(self, server_id: str) -> None:
        self._locks.pop(server_id, None)
        self._backoff.pop(server_id, None)
        self._last_report.pop(server_id, None)

    async def _inspect_quietly(self, server_id: str) -> ServerStatus | None:
        try:
            return await self.driver.inspect_server(server_id)
        except Exception:
            log.debug("compute: inspect of %s failed", server_id, exc_info=True)
            return None

    def health(self) -> dict:
        """What ``tinystack status`` shows of this agent."""
        return {"name": "compute-agent", "kind": "agent", "node": self.host,
                "healthy": not self._stopping and self.last_error is None,
                "error": self.last_error, "servers": len(self.store.ids()),
                "audits": self._audits, "retrying": len(self._backoff),
                "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
