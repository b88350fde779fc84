"""What every part of the compute service shares: the caller, the core, the Nova errors.

``Caller`` is who asks (made by the API from a validated token).
``ComputeCore`` holds the database, the bus, the image and network clients, the clock and
the settings, runs blocking SQL in worker threads, keeps the background
tasks (scheduling, snapshots) in one place so a test can wait for them
(``idle``), records instance actions and their events, and hands a server's
desired state to its node (``send_spec``).

The rules live beside it, one module per activity: ``servers.py`` (create,
list, update, delete, metadata, tags), ``actions.py`` (reboot, stop, resize,
snapshot, consoles...), ``flavors.py``, ``keypairs.py``, ``quotas.py``,
``groups.py`` (server groups), ``hosts.py`` (nodes, services, zones),
``scheduler.py`` and ``conductor.py`` (reports from the nodes).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tinystack.common.bus import Bus, BusError
from tinystack.common.db import Database, utcnow
from tinystack.common.errors import Conflict, NotFound
from tinystack.compute.images import ImageClient
from tinystack.compute.messages import AGENT_TARGET, ImageRef, PortBinding, ServerSpec
from tinystack.compute.models import InstanceAction, InstanceActionEvent, Server
from tinystack.compute.networking import Networking
from tinystack.config import ComputeSettings

__all__ = ["Caller", "ComputeCore", "server_not_found", "invalid_state", "SERVICE_CALLER"]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Caller:
    """Who is asking: what the token says, plus the request id for instance actions."""

    user_id: str
    project_id: str
    roles: frozenset[str] = frozenset()
    token: str = ""
    request_id: str = ""

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


SERVICE_CALLER = Caller(user_id="", project_id="", roles=frozenset({"admin"}))
"""The controller acting on its own (timeouts, reports): sees every project."""


def server_not_found(server_id: str) -> NotFound:
    return NotFound(f"Instance {server_id} could not be found.")


def invalid_state(action: str, server: Server) -> Conflict:
    """Nova's InstanceInvalidState, naming whichever state blocks ``action``."""
    if server.task_state is not None:
        attr, state = "task_state", server.task_state
    else:
        attr, state = "vm_state", server.vm_state
    return Conflict(f"Cannot '{action}' instance {server.id} while it is in {attr} {state}")


class ComputeCore:
    """Shared plumbing of the compute service; see the module docstring."""

    def __init__(self, db: Database, bus: Bus, images: ImageClient, settings: ComputeSettings,
                 *, base_url: str, node: str, network: Networking):
        self.db = db
        self.bus = bus
        self.images = images
        self.network = network
        """The network service's client: ports for the servers' NICs."""
        self.settings = settings
        self.base_url = base_url
        self.node = node
        self.clock: Callable[[], dt.datetime] = utcnow
        self._tasks: set[asyncio.Task] = set()

    # -- threads and background work -----------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a worker thread: every SQL call goes through here."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        """Run ``coro`` in the background; a failure is logged with ``what``, never lost."""
        task = asyncio.get_running_loop().create_task(coro, name=what)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("compute: %s failed", task.get_name(), exc_info=task.exception())

    async def idle(self) -> None:
        """Wait until no background task is left (tasks may start others)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._tasks.clear()

    # -- servers ------------------------------------------------------------------

    def get_server(self, s: Session, caller: Caller, server_id: str, *,
                   lock: bool = False) -> Server:
        """A live server the caller may see (admins see all projects); 404 otherwise."""
        query = sa.select(Server).where(Server.id == server_id, Server.deleted_at.is_(None))
        if lock:
            query = query.with_for_update()
        server = s.scalar(query)
        if server is None or not (caller.is_admin or server.project_id == caller.project_id):
            raise server_not_found(server_id)
        return server

    def set_task(self, server: Server, task_state: str | None) -> None:
        server.task_state = task_state
        server.task_started_at = self.clock() if task_state else None
        server.updated_at = self.clock()

    def set_fault(self, server: Server, message: str, *, code: int = 500,
                  details: str = "") -> None:
        server.fault = {"code": code, "message": message[:255], "details": details,
                        "created": self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")}

    def bump(self, server: Server, *, want: str | None = None, reboot: str = "",
             rebuild: bool = False) -> None:
        """A new desired state for the node: a higher revision it must answer."""
        if want is not None:
            server.want = want
        server.reboot = reboot
        server.rebuild = rebuild
        server.revision += 1

    # -- instance actions ---------------------------------------------------------

    def start_action(self, s: Session, server: Server, caller: Caller, action: str,
                     event: str | None = None, host: str | None = None) -> InstanceAction:
        """Record a user request on ``server`` (and its first event, if named)."""
        now = self.clock()
        record = InstanceAction(server_id=server.id, action=action,
                                request_id=caller.request_id or "req-internal",
                                user_id=caller.user_id or server.user_id,
                                project_id=caller.project_id or server.project_id,
                                start_time=now, updated_at=now)
        s.add(record)
        s.flush()
        if event:
            self.start_event(s, record, event, host)
        return record

    def start_event(self, s: Session, action: InstanceAction, event: str,
                    host: str | None = None) -> None:
        s.add(InstanceActionEvent(action_id=action.id, event=event, start_time=self.clock(),
                                  host=host))
        action.updated_at = self.clock()

    def latest_action(self, s: Session, server_id: str) -> InstanceAction | None:
        return s.scalar(sa.select(InstanceAction).where(InstanceAction.server_id == server_id)
                        .order_by(InstanceAction.id.desc()).limit(1))

    def finish_events(self, s: Session, server_id: str, *, ok: bool, details: str = "",
                      action_id: int | None = None) -> None:
        """End every running event of the server's latest (or given) action."""
        action = (s.get(InstanceAction, action_id) if action_id is not None
                  else self.latest_action(s, server_id))
        if action is None:
            return
        now = self.clock()
        running = s.scalars(sa.select(InstanceActionEvent).where(
            InstanceActionEvent.action_id == action.id, InstanceActionEvent.result.is_(None)))
        for event in running:
            event.finish_time = now
            event.result = "Success" if ok else "Error"
            if not ok:
                event.details = details[:255] or None
                event.traceback = details or None
        action.updated_at = now
        if not ok:
            action.message = "Error"
        if action.finish_time is None:
            action.finish_time = now

    # -- telling the node ---------------------------------------------------------

    def spec_for(self, server: Server, token: str = "",
                 metadata_files: dict[str, str] | None = None) -> ServerSpec:
        """The desired state of ``server`` as its node is told it (see messages.py)."""
        flavor = server.flavor
        image = None
        if server.image:
            props = server.image.get("properties") or {}
            image = ImageRef(
                id=server.image["id"], disk_format=server.image.get("disk_format") or "qcow2",
                container_format=server.image.get("container_format") or "bare",
                checksum=server.image.get("checksum"), size=server.image.get("size"),
                kernel_id=props.get("kernel_id"), ramdisk_id=props.get("ramdisk_id"),
                kernel_cmdline=props.get("os_command_line"),
                download_url=self.images.file_url(server.image["id"]), properties=props,
                kernel=self._part(props.get("kernel_id"), "aki"),
                ramdisk=self._part(props.get("ramdisk_id"), "ari"))
        want = "deleted" if server.want == "deleted" else server.want
        return ServerSpec(
            id=server.id, name=server.name, revision=server.revision, want=want,
            reboot=server.reboot or "", rebuild=bool(server.rebuild),
            vcpus=flavor["vcpus"], memory_mb=flavor["memory_mb"],
            root_gb=flavor["root_gb"], ephemeral_gb=flavor.get("ephemeral_gb", 0),
            image=image, ports=[PortBinding.model_validate(p) for p in server.ports or []],
            config_drive=server.config_drive, metadata_files=metadata_files or {},
            token=token)

    def _part(self, image_id: str | None, kind: str) -> ImageRef | None:
        """A kernel (aki) or ramdisk (ari) image the node fetches beside the disk image."""
        if not image_id:
            return None
        return ImageRef(id=image_id, disk_format=kind, container_format=kind,
                        download_url=self.images.file_url(image_id))

    async def send_spec(self, spec: ServerSpec, host: str) -> None:
        """Cast ``sync_server`` to the node; a bus failure is logged, the timeout catches it."""
        try:
            await self.bus.cast(AGENT_TARGET(host), "sync_server", spec=spec)
        except (BusError, ValueError) as exc:
            log.warning("could not send server %s to %s: %s", spec.id, host, exc)

