"""Server actions: power, reboot, lock, rebuild, resize, snapshot, consoles, security groups.

Most actions are one transaction and one cast: check the server may do it
(Nova's allowed vm_states and ``task_state`` None, else a 409 naming the
blocking state; a locked server refuses non-admins), record the instance
action and its event, set the task state the API shows (``powering-off``,
``rebooting``...), raise the desired state's revision and send it to the
node. The conductor ends the task when the node reports that revision, or
the action timeout does (``conductor.py``).

Resize stays on the server's node (moving a disk between nodes needs
migration, which tinystack does not do): the new flavor is claimed there
while the old claim is kept as ``resize-source`` until confirm or revert.
``createImage`` registers the snapshot in the image service, answers at
once, and lets the node write and upload the disk in the background
(``snapshot_server`` on the bus). Consoles ask the node over the bus too;
the serial console's websocket proxy is ``api_console.py``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tinystack.common.bus import BusError, BusTimeout, RemoteError
from tinystack.common.errors import BadRequest, Conflict, Forbidden, NotFound, Unavailable
from tinystack.compute import states
from tinystack.compute.flavors import Flavors
from tinystack.compute.images import ImageNotFound, ImageServiceError
from tinystack.compute.messages import AGENT_TARGET, SerialConsole, ServerSpec
from tinystack.compute.models import ConsoleToken, Server
from tinystack.compute.quotas import Quotas
from tinystack.compute.scheduler import NO_VALID_HOST, Scheduler, select_hosts
from tinystack.compute.listing import replace_metadata
from tinystack.compute.servers import Servers, decode_user_data
from tinystack.compute.service import Caller, ComputeCore, invalid_state

__all__ = ["Actions", "PowerAction", "POWER_ACTIONS", "RebuildRequest", "SnapshotStarted"]

log = logging.getLogger(__name__)

SNAPSHOT_TIMEOUT = 900.0
"""Seconds a node may take to write and upload a snapshot."""
CONSOLE_TIMEOUT = 15.0


@dataclass(frozen=True)
class PowerAction:
    """An action that only changes what the node should do with the guest."""

    allowed: tuple[str, ...]
    task: str
    want: str
    event: str


POWER_ACTIONS = {
    "stop": PowerAction((states.ACTIVE, states.ERROR), "powering-off", "stopped",
                        "compute_stop_instance"),
    "start": PowerAction((states.STOPPED,), "powering-on", "active", "compute_start_instance"),
    "pause": PowerAction((states.ACTIVE,), "pausing", "paused", "compute_pause_instance"),
    "unpause": PowerAction((states.PAUSED,), "unpausing", "active",
                           "compute_unpause_instance"),
    "suspend": PowerAction((states.ACTIVE,), "suspending", "suspended",
                           "compute_suspend_instance"),
    "resume": PowerAction((states.SUSPENDED,), "resuming", "active",
                          "compute_resume_instance"),
}
_SOFT_REBOOT = (states.ACTIVE,)
_HARD_REBOOT = (states.ACTIVE, states.STOPPED, states.PAUSED, states.SUSPENDED, states.ERROR)
_REBOOT_TASKS = (None, "rebooting", "rebooting_hard")
_SNAPSHOT_STATES = (states.ACTIVE, states.STOPPED, states.PAUSED, states.SUSPENDED)
_PROPERTIES_NOT_INHERITED = frozenset({
    "image_type", "instance_uuid", "base_image_ref", "owner_id", "user_id",
    "image_location", "image_state", "img_signature", "img_signature_hash_method",
    "img_signature_key_type", "img_signature_certificate_uuid", "os_glance_importing_to_stores",
    "os_glance_failed_import", "os_glance_import_task", "stores", "os_hidden",
})


@dataclass
class RebuildRequest:
    image_ref: str
    name: str | None = None
    metadata: dict[str, str] | None = None
    admin_pass: str | None = None
    key_name: str | None = None
    change_key: bool = False
    """True when the body named ``key_name`` (2.54; null removes the key)."""
    user_data: str | None = None
    change_user_data: bool = False
    description: str | None = None
    change_description: bool = False
    hostname: str | None = None


@dataclass
class SnapshotStarted:
    image_id: str
    image_url: str


class Actions:
    def __init__(self, core: ComputeCore, servers: Servers, flavors: Flavors, quotas: Quotas,
                 scheduler: Scheduler):
        self.core = core
        self.servers = servers
        self.flavors = flavors
        self.quotas = quotas
        self.scheduler = scheduler

    # -- the common shape ---------------------------------------------------------------

    @staticmethod
    def check_lock(caller: Caller, server: Server) -> None:
        if server.locked and not caller.is_admin:
            raise Conflict(f"Instance {server.id} is locked")

    @staticmethod
    def check_state(server: Server, action: str, allowed: tuple[str, ...],
                    tasks: tuple[str | None, ...] = (None,)) -> None:
        if server.vm_state not in allowed or server.task_state not in tasks:
            raise invalid_state(action, server)

    def _change(self, caller: Caller, server_id: str,
                change: Callable[[Session, Server], None]) -> tuple[ServerSpec, str] | None:
        """Run ``change`` on the locked server; the spec to send, if its revision moved."""
        with self.core.db.session() as s:
            server = self.core.get_server(s, caller, server_id, lock=True)
            revision = server.revision
            change(s, server)
            if server.revision == revision:
                return None
            if not server.host:
                raise Conflict(f"Instance {server.id} is not ready")
            return self.core.spec_for(server, caller.token), server.host

    async def _apply(self, caller: Caller, server_id: str,
                     change: Callable[[Session, Server], None]) -> None:
        sent = await self.core.run(self._change, caller, server_id, change)
        if sent is not None:
            await self.core.send_spec(*sent)

    # -- power --------------------------------------------------------------------------

    async def power(self, caller: Caller, server_id: str, name: str) -> None:
        """stop, start, pause, unpause, suspend or resume."""
        action = POWER_ACTIONS[name]

        def change(s: Session, server: Server) -> None:
            self.check_lock(caller, server)
            self.check_state(server, name, action.allowed)
            self.core.start_action(s, server, caller, name, action.event, server.host)
            self.core.set_task(server, action.task)
            self.core.bump(server, want=action.want)

        await self._apply(caller, server_id, change)

    async def reboot(self, caller: Caller, server_id: str, hard: bool) -> None:
        def change(s: Session, server: Server) -> None:
            self.check_lock(caller, server)
            if hard:
                self.check_state(server, "reboot", _HARD_REBOOT, _REBOOT_TASKS)
            else:
                self.check_state(server, "reboot", _SOFT_REBOOT)
            self.core.start_action(s, server, caller, "reboot", "compute_reboot_instance",
                                   server.host)
            self.core.set_task(server, "rebooting_hard" if hard else "rebooting")
            self.core.bump(server, want="active", reboot="hard" if hard else "soft")

        await self._apply(caller, server_id, change)

    # -- lock ---------------------------------------------------------------------------

    def lock(self, caller: Caller, server_id: str, reason: str | None) -> None:
        with self.core.db.session() as s:
            server = self.core.get_server(s, caller, server_id, lock=True)
            self.core.start_action(s, server, caller, "lock")
            owner = server.project_id == caller.project_id
            server.locked = True
            server.locked_by = "owner" if owner else "admin"
            server.locked_reason = reason
            server.updated_at = self.core.clock()
            self.core.finish_events(s, server.id, ok=True)

    def unlock(self, caller: Caller, server_id: str) -> None:
        with self.core.db.session() as s:
            server = self.core.get_server(s, caller, server_id, lock=True)
            if server.locked_by == "admin" and not caller.is_admin:
                raise Forbidden("Policy doesn't allow os_compute_api:os-lock-server:unlock:"
                                "unlock_override to be performed.")
            self.core.start_action(s, server, caller, "unlock")
            server.locked, server.locked_by, server.locked_reason = False, None, None
            server.updated_at = self.core.clock()
            self.core.finish_events(s, server.id, ok=True)

    # -- rebuild ------------------------------------------------------------------------

    async def rebuild(self, caller: Caller, server_id: str, req: RebuildRequest) -> str:
        """Rebuild from ``req.image_ref``; returns the admin password."""
        with self.core.db.session() as s:
            flavor = self.core.get_server(s, caller, server_id).flavor
        try:
            image = await self.core.images.get(req.image_ref, caller.token)
        except ImageNotFound:
            raise BadRequest(f"Image {req.image_ref} could not be found.") from None
        self.servers.check_image(image, flavor)
        user_data = decode_user_data(req.user_data) if req.change_user_data else None

        def change(s: Session, server: Server) -> None:
            self.check_lock(caller, server)
            self.check_state(server, "rebuild", (states.ACTIVE, states.STOPPED, states.ERROR))
            if req.change_key:
                server.key_name = req.key_name
                server.key_data = self.servers._key(s, caller, req.key_name) \
                    if req.key_name else None
            if req.change_user_data:
                server.user_data = user_data
            if req.name is not None:
                server.name = req.name
            if req.change_description:
                server.description = req.description
            if req.hostname is not None:
                server.hostname = req.hostname
            if req.metadata is not None:
                self.quotas.check_metadata(s, server.project_id, len(req.metadata))
                replace_metadata(s, server.id, req.metadata)
            server.image_ref, server.image = image.id, image.as_record()
            server.fault = None
            self.core.start_action(s, server, caller, "rebuild", "compute_rebuild_instance",
                                   server.host)
            want = "stopped" if server.vm_state == states.STOPPED else "active"
            self.core.set_task(server, "rebuilding")
            self.core.bump(server, want=want, rebuild=True)

        await self._apply(caller, server_id, change)
        return req.admin_pass or secrets.token_urlsafe(9)

    # -- resize -------------------------------------------------------------------------

    def _resize(self, caller: Caller, server_id: str,
                flavor_ref: str) -> tuple[ServerSpec, str]:
        new = self.flavors.for_server(caller, flavor_ref)
        with self.core.db.session() as s:
            server = self.core.get_server(s, caller, server_id, lock=True)
            self.check_lock(caller, server)
            self.check_state(server, "resize", (states.ACTIVE, states.STOPPED))
            old = server.flavor
            if new["flavorid"] == old["flavorid"]:
                raise BadRequest("When resizing, instances must change flavor!")
            if new["root_gb"] < old["root_gb"] or new["ephemeral_gb"] < old["ephemeral_gb"]:
                raise BadRequest("Resize error: Unable to resize disk down.")
            if server.image and server.image.get("size") and new["root_gb"] and \
                    server.image["size"] > new["root_gb"] * 1024 ** 3:
                raise BadRequest("Flavor's disk is too small for requested image.")
            self.quotas.check_resize(s, server.project_id, old, new)
            self.scheduler.rename(s, server.id, "server", "resize-source")
            server.flavor = new
            spec = self.servers.request_spec(s, server)
            spec.only_hosts = {server.host} if server.host else set()
            spec.requested_host = spec.requested_node = None
            for host in select_hosts(self.scheduler.host_states(s), spec):
                if self.scheduler.claim(s, host, spec):
                    break
            else:
                raise BadRequest(NO_VALID_HOST)
            server.old_flavor = old
            self.core.start_action(s, server, caller, "resize", "compute_resize_instance",
                                   server.host)
            self.core.set_task(server, "resize_prep")
            self.core.bump(server, want=states.WANT_FOR[server.vm_state])
            return self.core.spec_for(server, caller.token), server.host

    async def resize(self, caller: Caller, server_id: str, flavor_ref: str) -> None:
        sent = await self.core.run(self._resize, caller, server_id, flavor_ref)
        await self.core.send_spec(*sent)

    def confirm_resize(self, caller: Caller, server_id: str) -> None:
        with self.core.db.session() as s:
            server = self.core.get_server(s, caller, server_id, lock=True)
            if server.vm_state != states.RESIZED or server.task_state is not None:
                raise invalid_state("confirmResize", server)
            self.core.start_action(s, server, caller, "confirmResize",
                                   "compute_confirm_resize", server.host)
            self.scheduler.release(s, server.id, "resize-source")
            server.old_flavor = None
            server.vm_state = states.STOPPED if server.power_state == 4 else states.ACTIVE
            server.updated_at = self.core.clock()
            self.core.finish_events(s, server.id, ok=True)

    async def revert_resize(self, caller: Caller, server_id: str) -> None:
        def change(s: Session, server: Server) -> None:
            if server.vm_state != states.RESIZED or server.task_state is not None:
                raise invalid_state("revertResize", server)
            self.core.start_action(s, server, caller, "revertResize",
                                   "compute_revert_resize", server.host)
            self.undo_resize(s, server)
            self.core.set_task(server, "resize_reverting")
            want = "stopped" if server.power_state == 4 else "active"
            self.core.bump(server, want=want)

        await self._apply(caller, server_id, change)

    def undo_resize(self, s: Session, server: Server) -> None:
        """Back to the old flavor and its claim (revert, or a resize the node never did)."""
        if server.old_flavor is None:
            return
        self.scheduler.release(s, server.id, "server")
        self.scheduler.rename(s, server.id, "resize-source", "server")
        server.flavor, server.old_flavor = server.old_flavor, None

    def reset_state(self, caller: Caller, server_id: str, vm_state: str) -> None:
        """Admin's os-resetState: force vm_state, drop the task (nothing is sent)."""
        with self.core.db.session() as s:
            server = self.core.get_server(s, caller, server_id, lock=True)
            server.vm_state = vm_state
            self.core.set_task(server, None)
            if vm_state == states.ACTIVE:
                server.fault = None

    # -- snapshot -----------------------------------------------------------------------

    def _begin_snapshot(self, caller: Caller, server_id: str) -> Server:
        with self.core.db.session() as s:
            server = self.core.get_server(s, caller, server_id, lock=True)
            self.check_state(server, "createImage", _SNAPSHOT_STATES)
            if not server.host:
                raise Conflict(f"Instance {server.id} is not ready")
            self.core.start_action(s, server, caller, "createImage",
                                   "compute_snapshot_instance", server.host)
            self.core.set_task(server, "image_snapshot")
            return server

    def _end_snapshot(self, server_id: str, ok: bool, details: str = "") -> None:
        with self.core.db.session() as s:
            server = s.get(Server, server_id, with_for_update=True)
            if server is None:
                return
            if server.task_state in ("image_snapshot", "image_pending_upload",
                                     "image_uploading"):
                self.core.set_task(server, None)
            self.core.finish_events(s, server_id, ok=ok, details=details)

    async def create_image(self, caller: Caller, server_id: str, name: str,
                           metadata: dict[str, str]) -> SnapshotStarted:
        server = await self.core.run(self._begin_snapshot, caller, server_id)
        base = server.image or {}
        properties = {k: v for k, v in (base.get("properties") or {}).items()
                      if k not in _PROPERTIES_NOT_INHERITED and isinstance(v, str)}
        properties.update({k: str(v) for k, v in metadata.items()})
        properties.update(image_type="snapshot", instance_uuid=server.id,
                          base_image_ref=server.image_ref or "", user_id=caller.user_id)
        try:
            image = await self.core.images.create(
                caller.token, name=name, disk_format="qcow2", container_format="bare",
                visibility="private", min_disk=server.flavor["root_gb"],
                min_ram=int(base.get("min_ram") or 0), **properties)
        except ImageServiceError:
            await self.core.run(self._end_snapshot, server.id, False,
                                "The image service refused the snapshot.")
            raise
        self.core.spawn(self._snapshot(server, image["id"], caller.token),
                        f"snapshot of {server.id}")
        return SnapshotStarted(image["id"], self.core.images.image_url(image["id"]))

    async def _snapshot(self, server: Server, image_id: str, token: str) -> None:
        await self.core.run(self._set_task_if, server.id, "image_snapshot", "image_uploading")
        try:
            await self.core.bus.call(
                AGENT_TARGET(server.host), "snapshot_server", timeout=SNAPSHOT_TIMEOUT,
                server_id=server.id, image_id=image_id,
                upload_url=self.core.images.file_url(image_id), token=token,
                disk_format="qcow2")
        except (BusError, ValueError) as exc:
            log.warning("snapshot of %s into image %s failed: %s", server.id, image_id, exc)
            await self.core.images.delete(image_id, token)
            await self.core.run(self._end_snapshot, server.id, False,
                                f"Snapshot failed: {_describe(exc)}")
            return
        await self.core.run(self._end_snapshot, server.id, True)

    def _set_task_if(self, server_id: str, current: str, new: str) -> None:
        with self.core.db.session() as s:
            server = s.get(Server, server_id, with_for_update=True)
            if server is not None and server.task_state == current:
                self.core.set_task(server, new)

    # -- consoles -----------------------------------------------------------------------

    def _host_of(self, caller: Caller, server_id: str, action: str) -> str:
        with self.core.db.session() as s:
            server = self.core.get_server(s, caller, server_id)
            if not server.host or server.vm_state == states.BUILDING:
                raise Conflict(f"Instance {server.id} is not ready")
            return server.host

    async def console_output(self, caller: Caller, server_id: str, length: int | None) -> str:
        host = await self.core.run(self._host_of, caller, server_id, "get_console_output")
        try:
            output = await self.core.bus.call(AGENT_TARGET(host), "console_output",
                                              timeout=CONSOLE_TIMEOUT, server_id=server_id,
                                              length=length)
        except RemoteError as exc:
            if exc.exc_type in ("ServerGone", "NotFound", "FileNotFoundError"):
                raise NotFound("Guest does not have a console available.") from None
            raise Unavailable(f"Compute host {host} could not read the console: "
                              f"{exc.message}") from None
        except (BusTimeout, BusError) as exc:
            raise Unavailable(f"Compute host {host} did not answer: {exc}") from None
        if isinstance(output, dict):
            output = output.get("output", "")
        return output or ""

    def new_console_token(self, caller: Caller, server_id: str) -> str:
        self._host_of(caller, server_id, "get_serial_console")
        token = secrets.token_urlsafe(24)
        now = self.core.clock()
        with self.core.db.session() as s:
            s.execute(sa.delete(ConsoleToken).where(ConsoleToken.expires_at < now))
            s.add(ConsoleToken(token_hash=hashlib.sha256(token.encode()).hexdigest(),
                               server_id=server_id, console_type="serial",
                               expires_at=now + dt.timedelta(
                                   seconds=self.core.settings.console_token_ttl)))
        return token

    def console_server(self, token: str) -> tuple[str, str] | None:
        """(server id, host) a valid console token opens, or None."""
        with self.core.db.session() as s:
            row = s.get(ConsoleToken, hashlib.sha256(token.encode()).hexdigest())
            if row is None or row.expires_at < self.core.clock():
                return None
            server = s.get(Server, row.server_id)
            if server is None or server.deleted_at is not None or not server.host:
                return None
            return server.id, server.host

    async def serial_endpoint(self, server_id: str, host: str) -> SerialConsole:
        reply = await self.core.bus.call(AGENT_TARGET(host), "serial_console",
                                         timeout=CONSOLE_TIMEOUT, server_id=server_id)
        return SerialConsole.model_validate(reply)

    # -- security groups ----------------------------------------------------------------

    async def change_security_group(self, caller: Caller, server_id: str, name: str,
                                    add: bool) -> None:
        """Nova's add/removeSecurityGroup: the server's list, and its ports' groups."""
        network = self.core.network
        if add:
            await network.group_ids(caller.token, caller.project_id, [name], missing=404)
        ports, names = await self.core.run(self.security_group, caller, server_id, name, add)
        if ports:
            ids = await network.group_ids(caller.token, caller.project_id, names)
            await network.set_groups(ports, ids)

    def security_group(self, caller: Caller, server_id: str, name: str,
                       add: bool) -> tuple[list[dict], list[str]]:
        """Edit the server's group names; its ports and the new names."""
        with self.core.db.session() as s:
            server = self.core.get_server(s, caller, server_id, lock=True)
            self.check_lock(caller, server)
            groups = list(server.security_groups or [])
            if add and name in groups:
                raise BadRequest(f"Security group {name} is already associated with the "
                                 f"instance {server.id}")
            if not add and name not in groups:
                raise BadRequest(f"Security group {name} not associated with the instance "
                                 f"{server.id}")
            server.security_groups = groups + [name] if add else \
                [g for g in groups if g != name]
            server.updated_at = self.core.clock()
            return list(server.ports or []), list(server.security_groups)


def _describe(exc: Exception) -> str:
    if isinstance(exc, RemoteError):
        return exc.message
    return str(exc)
