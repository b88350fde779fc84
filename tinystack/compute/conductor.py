"""The conductor: what the nodes report, written to the database; and what must not hang.

``ConductorEndpoint`` serves ``compute-conductor`` on the bus (the contract
is ``messages.py``):

- ``report_server(report)``: a report for an older revision than the
  server's is stale and ignored (the node has not seen the newest desired
  state yet). A report for the newest one ends the task in flight (BUILD
  becomes ACTIVE, ``powering-off`` becomes SHUTOFF, a resize becomes
  VERIFY_RESIZE...), finishes its instance action event, and records the
  power state; ``state="error"`` puts the server in ERROR with the node's
  fault; ``state="deleted"`` finishes a delete. Between tasks a report is
  Nova's power sync: a guest that powered itself off becomes SHUTOFF.
- ``report_node(report)``: the node's heartbeat and resources
  (``hosts.py``), then reconciliation: a server the database places there
  but the node lacks is sent again; one the node has but should not (deleted
  or unknown) gets a tombstone.

``Watchdog.run_once`` (every few seconds, ``run_forever``) keeps the
controller's own services alive in os-services and ends what waits too
long: a build with no report within ``build_timeout`` goes to ERROR with a
fault; any other task on a node past ``action_timeout`` is dropped, its
event marked Error (a delete finishes locally, a resize is undone).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import sqlalchemy as sa

from tinystack.compute import metadata as metadata_files
from tinystack.compute import states
from tinystack.compute.actions import SNAPSHOT_TIMEOUT, Actions
from tinystack.compute.hosts import Hosts
from tinystack.compute.messages import NodeReport, ServerReport, ServerSpec
from tinystack.compute.models import Server
from tinystack.compute.servers import Servers, facts_of
from tinystack.compute.service import ComputeCore

__all__ = ["ConductorEndpoint", "Watchdog", "BUILD_TIMED_OUT"]

log = logging.getLogger(__name__)

BUILD_TIMED_OUT = "Instance build timed out. Set to error state."
_UNKNOWN_REVISION = 2 ** 31 - 1
_RESIZE_TASKS = ("resize_prep", "resize_migrating", "resize_migrated", "resize_finish")


def _tombstone(server_id: str, revision: int) -> ServerSpec:
    return ServerSpec(id=server_id, name="", revision=revision, want="deleted")


class ConductorEndpoint:
    """Served on ``compute-conductor``; one instance per controller process."""

    def __init__(self, core: ComputeCore, servers: Servers, hosts: Hosts):
        self.core = core
        self.servers = servers
        self.hosts = hosts

    # -- server reports -----------------------------------------------------------------

    async def report_server(self, report: dict, **_) -> None:
        parsed = ServerReport.model_validate(report)
        stray = await self.core.run(self.apply_server_report, parsed)
        if stray is not None:
            await self.core.send_spec(stray, parsed.host)

    def apply_server_report(self, report: ServerReport) -> ServerSpec | None:
        """Write ``report``; returns a tombstone for the node when it holds a stray server."""
        with self.core.db.session() as s:
            server = s.get(Server, report.server_id, with_for_update=True)
            if server is None:
                return None if report.state == "deleted" else _tombstone(
                    report.server_id, _UNKNOWN_REVISION)
            if server.host != report.host or server.deleted_at is not None:
                if report.state == "deleted":
                    return None
                return _tombstone(server.id, max(server.revision, report.revision + 1))
            if report.revision < server.revision:
                return None
            before = (server.vm_state, server.task_state, server.power_state, server.fault)
            server.reported_revision = report.revision
            server.power_state = states.POWER_CODE.get(report.power_state, 0)
            if report.state == "deleted":
                if server.want == "deleted":
                    self.servers.finish_delete(s, server)
                return None
            if report.state == "error":
                self._error(s, server, report.fault or "The compute node failed the server.")
            else:
                self._settle(s, server, report)
            if (server.vm_state, server.task_state, server.power_state, server.fault) != before:
                server.updated_at = self.core.clock()
            return None

    def _error(self, s, server: Server, fault: str) -> None:
        server.vm_state = states.ERROR
        self.core.set_fault(server, fault)
        if server.task_state in states.AGENT_TASKS or server.task_state is None:
            self.core.set_task(server, None)
        self.core.finish_events(s, server.id, ok=False, details=fault)

    def _settle(self, s, server: Server, report: ServerReport) -> None:
        if report.state == "building":
            return
        observed = states.VM_STATE_FOR.get(report.state, states.ACTIVE)
        task = server.task_state
        if task in states.AGENT_TASKS or server.vm_state == states.BUILDING:
            if task in _RESIZE_TASKS:
                server.vm_state = states.RESIZED
            else:
                server.vm_state = observed
            self.core.set_task(server, None)
            server.reboot, server.rebuild = "", False
            server.fault = None
            if server.launched_at is None and observed != states.BUILDING:
                server.launched_at = self.core.clock()
            server.progress = 100 if server.vm_state == states.ACTIVE else server.progress
            self.core.finish_events(s, server.id, ok=True)
        elif server.vm_state not in (states.RESIZED, states.BUILDING):
            if server.vm_state != observed:
                log.info("server %s: node reports %s, was %s", server.id, observed,
                         server.vm_state)
            if server.vm_state == states.ERROR and observed != states.ERROR:
                server.fault = None
            server.vm_state = observed

    # -- node reports -------------------------------------------------------------------

    async def report_node(self, report: dict, **_) -> None:
        parsed = NodeReport.model_validate(report)
        expected = await self.core.run(self.hosts.apply_node_report, parsed)
        resend = await self.core.run(self._reconcile, parsed, expected)
        for spec in resend:
            await self.core.send_spec(spec, parsed.host)

    def _reconcile(self, report: NodeReport, expected: list[str]) -> list[ServerSpec]:
        """Specs the node should be sent again: missing servers, and tombstones for strays."""
        have, want = set(report.servers), set(expected)
        specs = []
        with self.core.db.session() as s:
            for server_id in sorted(want - have):
                server = s.get(Server, server_id)
                if server is None or server.want == "deleted":
                    continue
                files = (metadata_files.build_files(facts_of(s, server))
                         if server.config_drive else None)
                specs.append(self.core.spec_for(server, metadata_files=files))
            for server_id in sorted(have - want):
                server = s.get(Server, server_id)
                revision = _UNKNOWN_REVISION if server is None else server.revision
                specs.append(_tombstone(server_id, revision))
        return specs


class Watchdog:
    """Periodic duties: controller heartbeats and timeouts. ``run_once`` is one pass."""

    def __init__(self, core: ComputeCore, servers: Servers, actions: Actions, hosts: Hosts,
                 *, interval: float = 5.0):
        self.core = core
        self.servers = servers
        self.actions = actions
        self.hosts = hosts
        self.interval = interval

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("compute watchdog pass failed")
            await asyncio.sleep(self.interval)

    async def run_once(self) -> None:
        await self.core.run(self.hosts.touch_controller, self.core.node)
        resend = await self.core.run(self.expire)
        for spec, host in resend:
            await self.core.send_spec(spec, host)

    def expire(self) -> list[tuple[ServerSpec, str]]:
        """End builds and tasks that waited too long; returns specs to re-assert."""
        now = self.core.clock()
        build_deadline = now - dt.timedelta(seconds=self.core.settings.build_timeout)
        task_deadline = now - dt.timedelta(seconds=self.core.settings.action_timeout)
        snapshot_deadline = now - dt.timedelta(seconds=SNAPSHOT_TIMEOUT + 60)
        resend = []
        with self.core.db.session() as s:
            stuck = s.scalars(sa.select(Server).where(
                Server.deleted_at.is_(None), Server.task_state.is_not(None),
                Server.task_started_at.is_not(None)).with_for_update())
            for server in stuck:
                building = server.vm_state == states.BUILDING
                deadline = build_deadline if building else task_deadline
                if server.task_state.startswith("image_"):
                    deadline = snapshot_deadline
                if server.task_started_at > deadline:
                    continue
                sent = self._expire_one(s, server, building)
                if sent is not None:
                    resend.append(sent)
        return resend

    def _expire_one(self, s, server: Server, building: bool) -> tuple[ServerSpec, str] | None:
        host = server.host
        waited = f"no word from compute host {host or '(none)'}"
        log.warning("server %s: task %s timed out (%s)", server.id, server.task_state, waited)
        if server.task_state == "deleting":
            self.servers.finish_delete(s, server)
            return (self.core.spec_for(server), host) if host else None
        if building:
            server.vm_state = states.ERROR
            self.core.set_task(server, None)
            self.core.set_fault(server, BUILD_TIMED_OUT, details=waited)
            self.core.finish_events(s, server.id, ok=False, details=BUILD_TIMED_OUT)
            return None
        if server.task_state in _RESIZE_TASKS:
            self.actions.undo_resize(s, server)
        if server.task_state and server.task_state.startswith("image_"):
            self.core.set_task(server, None)
            self.core.finish_events(s, server.id, ok=False, details=f"Timed out: {waited}")
            return None
        self.core.set_task(server, None)
        self.core.finish_events(s, server.id, ok=False, details=f"Timed out: {waited}")
        server.want = states.WANT_FOR.get(server.vm_state, server.want)
        self.core.bump(server)
        return (self.core.spec_for(server), host) if host else None
