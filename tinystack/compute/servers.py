"""Servers are born and die here: create (checks, quota, rows), build (schedule, claim,
hand to the node) and delete.

``create`` checks everything that can be refused while the client waits
(flavor, image against the flavor, key pair, zone, group, networks, block
devices, quota) and answers 202 with the new rows in BUILD; ``build`` then
runs in the background, one server after the other so each sees the claims
of the ones before (anti-affinity needs that): the scheduler picks and
claims a node, the network service binds the server's ports to it
(``networking.py``), the server's desired state goes to ``compute.<host>``, and
the conductor moves it on when the node reports. ``No valid host`` ends the
server in ERROR with that fault; so does silence past ``build_timeout``
(``conductor.py``).

Reading servers (list, show, metadata, tags) is in ``listing.py``;
actions on a live server in ``actions.py``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import secrets
import uuid
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tinystack.common.errors import BadRequest, Conflict, Forbidden
from tinystack.compute import metadata as metadata_files
from tinystack.compute import states
from tinystack.compute.flavors import Flavors
from tinystack.compute.images import Image, ImageNotFound
from tinystack.compute.models import (
    ComputeNode,
    KeyPair,
    Server,
    ServerGroup,
    ServerGroupMember,
    ServerMetadata,
    ServerTag,
    Service,
)
from tinystack.compute.networking import Resolved, addresses_of
from tinystack.compute.quotas import Quotas
from tinystack.compute.scheduler import NO_VALID_HOST, RequestSpec, Scheduler, select_hosts
from tinystack.compute.service import Caller, ComputeCore
from tinystack.compute.messages import ServerSpec

__all__ = ["CreateRequest", "Created", "Servers", "facts_of", "decode_user_data",
           "VOLUME_UNAVAILABLE"]

log = logging.getLogger(__name__)

GiB = 1024 ** 3
VOLUME_UNAVAILABLE = (
    "Block storage is not available yet: block_device_mapping_v2 may only boot from an "
    "image to a local disk (source_type \"image\", destination_type \"local\").")


@dataclass
class CreateRequest:
    """A parsed ``POST /servers`` body, as the API hands it over."""

    name: str
    flavor_ref: str
    image_ref: str = ""
    networks: str | list | None = None
    key_name: str | None = None
    user_data: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    security_groups: list[str] = field(default_factory=list)
    availability_zone: str | None = None
    min_count: int = 1
    max_count: int = 1
    block_devices: list[dict] = field(default_factory=list)
    config_drive: bool = False
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    hostname: str | None = None
    host: str | None = None
    hypervisor_hostname: str | None = None
    scheduler_hints: dict = field(default_factory=dict)
    admin_pass: str | None = None
    access_ipv4: str | None = None
    access_ipv6: str | None = None
    disk_config: str = "MANUAL"


@dataclass
class Created:
    server_ids: list[str]
    reservation_id: str
    admin_pass: str
    security_groups: list[str]
    disk_config: str


def _sanitize_hostname(name: str) -> str:
    """Nova's hostname from a display name: lower case, [a-z0-9-], at most 63 characters."""
    host = re.sub(r"[ _]", "-", name.lower())
    host = re.sub(r"[^\w.-]+", "", host, flags=re.ASCII).replace("_", "")
    host = host.strip(".-")[:63].strip(".-")
    return host or "server"


def decode_user_data(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("User data needs to be valid base 64.") from None
    if len(text) > 65535:
        raise BadRequest("User data too large. User data must be no larger than 65535 "
                         "bytes once base64 encoded.")
    return text


def facts_of(s: Session, server: Server) -> metadata_files.ServerFacts:
    """What the metadata service and the config drive say about ``server``."""
    meta = dict(s.execute(sa.select(ServerMetadata.key, ServerMetadata.value)
                          .where(ServerMetadata.server_id == server.id)).all())
    user_data = base64.b64decode(server.user_data) if server.user_data else None
    key_type = "ssh"
    if server.key_name:
        found = s.scalar(sa.select(KeyPair.type).where(KeyPair.user_id == server.user_id,
                                                       KeyPair.name == server.key_name))
        key_type = found or "ssh"
    fixed = tuple(a["addr"] for addrs in (server.addresses or {}).values() for a in addrs
                  if a.get("OS-EXT-IPS:type", "fixed") == "fixed")
    floating = tuple(a["addr"] for addrs in (server.addresses or {}).values() for a in addrs
                     if a.get("OS-EXT-IPS:type") == "floating")
    return metadata_files.ServerFacts(
        id=server.id, name=server.name, hostname=server.hostname, project_id=server.project_id,
        availability_zone=server.availability_zone or "nova",
        launch_index=server.launch_index, reservation_id=server.reservation_id,
        flavor_name=server.flavor.get("name", ""), image_id=server.image_ref,
        key_name=server.key_name, key_data=server.key_data, key_type=key_type, metadata=meta,
        user_data=user_data, security_groups=tuple(server.security_groups or ()),
        fixed_ips=fixed, floating_ips=floating, ports=tuple(server.ports or ()))


class Servers:
    def __init__(self, core: ComputeCore, flavors: Flavors, quotas: Quotas,
                 scheduler: Scheduler):
        self.core = core
        self.flavors = flavors
        self.quotas = quotas
        self.scheduler = scheduler

    # -- create -----------------------------------------------------------------------

    @staticmethod
    def _boot_image(req: CreateRequest) -> str:
        """The image to boot from: imageRef, or an image->local block device at boot index 0."""
        for bdm in req.block_devices:
            source = bdm.get("source_type")
            destination = bdm.get("destination_type") or ("local" if source == "image"
                                                           else "volume")
            if destination != "local" or source not in ("image", "blank"):
                raise BadRequest(VOLUME_UNAVAILABLE)
        if req.image_ref:
            return req.image_ref.rstrip("/").rsplit("/", 1)[-1]
        for bdm in req.block_devices:
            if bdm.get("source_type") == "image" and str(bdm.get("boot_index")) == "0":
                if not bdm.get("uuid"):
                    raise BadRequest("Missing imageRef attribute")
                return bdm["uuid"]
        raise BadRequest("Missing imageRef attribute")

    async def _resolve_networks(self, caller: Caller, req: CreateRequest) -> Resolved:
        """The NICs the request asks for (400/409 for what Nova refuses at once)."""
        if req.networks in (None, "none", []):
            return Resolved()
        return await self.core.network.resolve(caller.token, caller.project_id, req.networks,
                                               req.security_groups, req.max_count)

    @staticmethod
    def check_image(image: Image, flavor: dict) -> None:
        """Nova's checks of an image against a flavor (400s with Nova's messages)."""
        if image.status != "active":
            raise BadRequest(f"Image {image.id} is not active.")
        if image.min_ram > flavor["memory_mb"]:
            raise BadRequest("Flavor's memory is too small for requested image.")
        root_bytes = flavor["root_gb"] * GiB
        if flavor["root_gb"] == 0:
            return
        if image.size and image.size > root_bytes:
            raise BadRequest(
                f"Flavor's disk is too small for requested image. Flavor disk is "
                f"{root_bytes} bytes, image is {image.size} bytes.")
        if image.min_disk > flavor["root_gb"]:
            raise BadRequest(
                f"Flavor's disk is smaller than the minimum size specified in image metadata. "
                f"Flavor disk is {root_bytes} bytes, minimum size is {image.min_disk * GiB} "
                f"bytes.")

    async def create(self, caller: Caller, req: CreateRequest) -> Created:
        image_id = self._boot_image(req)
        if req.min_count > req.max_count:
            raise BadRequest("min_count must be <= max_count")
        user_data = decode_user_data(req.user_data)
        flavor = await self.core.run(self.flavors.for_server, caller, req.flavor_ref)
        try:
            image = await self.core.images.get(image_id, caller.token)
        except ImageNotFound:
            raise BadRequest(f"Image {image_id} could not be found.") from None
        self.check_image(image, flavor)
        resolved = await self._resolve_networks(caller, req)
        created = await self.core.run(self._insert, caller, req, flavor, image, user_data)
        self.core.spawn(self.build(created.server_ids, caller.token, resolved),
                        f"build of {', '.join(created.server_ids)}")
        return created

    def _zone_and_host(self, s: Session, caller: Caller,
                       req: CreateRequest) -> tuple[str | None, str | None]:
        zone, host = req.availability_zone, req.host
        if zone and ":" in zone:
            zone, _, rest = zone.partition(":")
            forced = rest.split(":")[0] or None
            if forced:
                if not caller.is_admin:
                    raise Forbidden("Policy doesn't allow os_compute_api:servers:create:"
                                    "forced_host to be performed.")
                host = forced
            zone = zone or None
        if zone:
            zones = set(s.scalars(sa.select(ComputeNode.availability_zone))) | {"nova"}
            if zone not in zones:
                raise BadRequest("The requested availability zone is not available")
        if host is not None and s.scalar(sa.select(ComputeNode.id)
                                         .where(ComputeNode.host == host)) is None:
            raise BadRequest(f"Compute host {host} could not be found.")
        node = req.hypervisor_hostname
        if node is not None and s.scalar(sa.select(ComputeNode.id).where(
                ComputeNode.hypervisor_hostname == node)) is None:
            raise BadRequest(f"Compute host {node} could not be found.")
        return zone, host

    def _key(self, s: Session, caller: Caller, key_name: str | None) -> str | None:
        if key_name is None:
            return None
        key = s.scalar(sa.select(KeyPair).where(KeyPair.user_id == caller.user_id,
                                                KeyPair.name == key_name))
        if key is None:
            raise BadRequest("Invalid key_name provided.")
        return key.public_key

    def _group(self, s: Session, caller: Caller, hints: dict) -> ServerGroup | None:
        group_id = hints.get("group")
        if not group_id:
            return None
        group = s.get(ServerGroup, group_id)
        if group is None or not (caller.is_admin or group.project_id == caller.project_id):
            raise BadRequest(f"Instance group {group_id} could not be found.")
        return group

    def _insert(self, caller: Caller, req: CreateRequest, flavor: dict, image: Image,
                user_data: str | None) -> Created:
        with self.core.db.session() as s:
            zone, host = self._zone_and_host(s, caller, req)
            key_data = self._key(s, caller, req.key_name)
            group = self._group(s, caller, req.scheduler_hints)
            self.quotas.check_metadata(s, caller.project_id, len(req.metadata))
            count = self.quotas.instances_allowed(s, caller.project_id, flavor,
                                                  req.min_count, req.max_count)
            if group is not None:
                self.quotas.check_group_members(s, caller.project_id, group.id, count)
            reservation = f"r-{secrets.token_hex(4)}"
            admin_pass = req.admin_pass or secrets.token_urlsafe(9)
            ids = []
            for index in range(count):
                server = self._new_server(caller, req, flavor, image, index, count)
                server.reservation_id, server.key_data = reservation, key_data
                server.user_data = user_data
                server.requested_availability_zone = zone
                server.requested_host, server.requested_node = host, req.hypervisor_hostname
                server.availability_zone = zone or "nova"
                s.add(server)
                s.flush()
                for key, value in req.metadata.items():
                    s.add(ServerMetadata(server_id=server.id, key=key, value=value))
                for tag in dict.fromkeys(req.tags):
                    s.add(ServerTag(server_id=server.id, tag=tag))
                if group is not None:
                    s.add(ServerGroupMember(group_id=group.id, server_id=server.id))
                self.core.start_action(s, server, caller, "create",
                                       "conductor_schedule_and_build_instances")
                ids.append(server.id)
            s.flush()
            self.quotas.instances_allowed(s, caller.project_id, flavor, count, count,
                                          already_counted=count)
        return Created(ids, reservation, admin_pass, req.security_groups or ["default"],
                       req.disk_config)

    def _new_server(self, caller: Caller, req: CreateRequest, flavor: dict, image: Image,
                    index: int, count: int) -> Server:
        name = req.name if count == 1 else f"{req.name}-{index + 1}"
        hostname = req.hostname if req.hostname and count == 1 else _sanitize_hostname(name)
        now = self.core.clock()
        return Server(
            id=str(uuid.uuid4()), name=name, hostname=hostname, description=req.description,
            project_id=caller.project_id, user_id=caller.user_id, image_ref=image.id,
            image=image.as_record(),
            flavor=flavor, key_name=req.key_name,
            config_drive=req.config_drive or self.core.settings.force_config_drive,
            vm_state=states.BUILDING, task_state="scheduling", task_started_at=now,
            power_state=0, want="active", revision=1, launch_index=index,
            access_ipv4=req.access_ipv4, access_ipv6=req.access_ipv6,
            disk_config=req.disk_config, security_groups=req.security_groups or ["default"],
            scheduler_hints=req.scheduler_hints, block_devices=req.block_devices,
            requested_networks=req.networks if isinstance(req.networks, str) else
            ("list" if req.networks else "none"), created_at=now, updated_at=now)

    # -- build ------------------------------------------------------------------------

    async def build(self, server_ids: list[str], token: str,
                    resolved: Resolved | None = None) -> None:
        """Schedule each server in turn (each sees the claims of the ones before), then
        bind its ports there and hand it to its node, the servers side by side
        (background task)."""
        resolved = resolved or Resolved()
        launches = []
        for server_id in server_ids:
            placed = await self.core.run(self.schedule, server_id)
            if placed is not None:
                launches.append(asyncio.ensure_future(
                    self._launch(server_id, *placed, token, resolved)))
        await asyncio.gather(*launches)

    async def _launch(self, server_id: str, host: str, zone: str, project_id: str,
                      token: str, resolved: Resolved) -> None:
        ports: list[dict] = []
        if resolved.nics:
            try:
                ports = await self.core.network.allocate(server_id, project_id, zone, host,
                                                         resolved)
            except Exception as exc:  # noqa: BLE001 - any failure ends the build
                log.warning("server %s: could not allocate its network: %s", server_id, exc)
                await self.core.run(self.abort_build, server_id,
                                    f"Build of instance {server_id} aborted: {exc}")
                return
        spec = await self.core.run(self.launch, server_id, ports)
        if spec is None:
            if ports:
                await self.core.network.deallocate(ports)
            return
        spec.token = token
        await self.core.send_spec(spec, host)

    def abort_build(self, server_id: str, message: str) -> None:
        """The build cannot go on: ERROR with ``message``, the claim given back."""
        with self.core.db.session() as s:
            server = s.get(Server, server_id, with_for_update=True)
            if server is None or server.deleted_at is not None or server.want == "deleted":
                return
            self.scheduler.release(s, server.id)
            server.vm_state = states.ERROR
            self.core.set_task(server, None)
            self.core.set_fault(server, message)
            self.core.finish_events(s, server.id, ok=False, details=message)

    def launch(self, server_id: str, ports: list[dict]) -> ServerSpec | None:
        """Record the bound ports and make the spec for the node; None if the server went."""
        with self.core.db.session() as s:
            server = s.get(Server, server_id, with_for_update=True)
            if server is None or server.deleted_at is not None or server.want == "deleted":
                return None
            if ports:
                server.ports = ports
                server.addresses = addresses_of(ports)
                s.flush()
            files = (metadata_files.build_files(facts_of(s, server))
                     if server.config_drive else None)
            return self.core.spec_for(server, metadata_files=files)

    def request_spec(self, s: Session, server: Server) -> RequestSpec:
        flavor = server.flavor
        hints = server.scheduler_hints or {}

        def hosts_of(value) -> set[str]:
            ids = [value] if isinstance(value, str) else list(value or [])
            if not ids:
                return set()
            return set(s.scalars(sa.select(Server.host).where(
                Server.id.in_(ids), Server.host.is_not(None))))

        return RequestSpec(
            server_id=server.id, vcpus=flavor["vcpus"], memory_mb=flavor["memory_mb"],
            disk_gb=flavor["root_gb"] + flavor.get("ephemeral_gb", 0)
            + -(-flavor.get("swap", 0) // 1024),
            availability_zone=server.requested_availability_zone,
            requested_host=server.requested_host, requested_node=server.requested_node,
            image_properties=(server.image or {}).get("properties") or {},
            group=self.scheduler.group_info(s, server.id),
            same_host=hosts_of(hints.get("same_host")),
            different_host=hosts_of(hints.get("different_host")))

    def schedule(self, server_id: str) -> tuple[str, str, str] | None:
        """Pick and claim a node for a BUILD server; ERROR with NoValidHost if none fits.

        Returns the host, its zone and the server's project, or None (no host, or the
        server was deleted meanwhile).
        """
        with self.core.db.session() as s:
            server = s.get(Server, server_id, with_for_update=True)
            if server is None or server.deleted_at is not None or server.want == "deleted":
                return None
            spec = self.request_spec(s, server)
            for host in select_hosts(self.scheduler.host_states(s), spec):
                if self.scheduler.claim(s, host, spec):
                    # SQLite took its write lock only now: read the row again under it
                    s.refresh(server)
                    if server.deleted_at is not None or server.want == "deleted":
                        self.scheduler.release(s, server.id)
                        return None
                    server.host, server.node = host.host, host.host
                    server.availability_zone = host.availability_zone
                    self.core.set_task(server, "spawning")
                    self.core.finish_events(s, server.id, ok=True)
                    action = self.core.latest_action(s, server.id)
                    if action is not None:
                        self.core.start_event(s, action, "compute__do_build_and_run_instance",
                                              host.host)
                    return host.host, host.availability_zone or "nova", server.project_id
            server.vm_state = states.ERROR
            self.core.set_task(server, None)
            self.core.set_fault(server, NO_VALID_HOST,
                                details="No compute node passed the filters or had room.")
            self.core.finish_events(s, server.id, ok=False, details=NO_VALID_HOST)
            log.info("server %s: %s", server_id, NO_VALID_HOST)
            return None

    # -- delete -----------------------------------------------------------------------

    def node_is_up(self, s: Session, host: str) -> bool:
        service = s.scalar(sa.select(Service).where(Service.host == host,
                                                    Service.binary == "nova-compute"))
        if service is None or service.forced_down or service.last_seen_up is None:
            return False
        age = (self.core.clock() - service.last_seen_up).total_seconds()
        return age <= self.core.settings.service_down_time

    def finish_delete(self, s: Session, server: Server) -> None:
        """The server is gone: soft-delete its row and give back what it held."""
        now = self.core.clock()
        server.vm_state = states.DELETED
        server.task_state = None
        server.task_started_at = None
        server.power_state = 0
        server.deleted_at = server.terminated_at = server.updated_at = now
        self.scheduler.release(s, server.id)
        s.execute(sa.delete(ServerGroupMember).where(ServerGroupMember.server_id == server.id))
        self.core.finish_events(s, server.id, ok=True)

    def _delete(self, caller: Caller, server_id: str
                ) -> tuple[tuple[ServerSpec, str] | None, list[dict]]:
        with self.core.db.session() as s:
            server = self.core.get_server(s, caller, server_id, lock=True)
            if server.locked and not caller.is_admin:
                raise Conflict(f"Instance {server.id} is locked")
            self.core.start_action(s, server, caller, "delete", "compute_terminate_instance",
                                   server.host)
            host = server.host
            self.core.bump(server, want="deleted")
            self.core.set_task(server, "deleting")
            if host is None or not self.node_is_up(s, host):
                self.finish_delete(s, server)
            ports, server.ports = list(server.ports or []), []
            return ((self.core.spec_for(server), host) if host else None), ports

    async def delete(self, caller: Caller, server_id: str) -> None:
        tombstone, ports = await self.core.run(self._delete, caller, server_id)
        if tombstone is not None:
            await self.core.send_spec(*tombstone)
        if ports:
            await self.core.network.deallocate(ports)

    # -- what the network service says ------------------------------------------------

    async def refresh_ports(self, server_id: str) -> None:
        """Read the server's ports and floating IPs again (``network.port.changed``)."""
        known = await self.core.run(self._known_ports, server_id)
        if known is None:
            return
        try:
            ports = await self.core.network.describe(server_id, known)
        except Exception as exc:  # noqa: BLE001 - the next event or refresh catches up
            log.warning("server %s: could not refresh its ports: %s", server_id, exc)
            return
        await self.core.run(self._store_ports, server_id, ports)

    def _known_ports(self, server_id: str) -> list[dict] | None:
        with self.core.db.session() as s:
            server = s.get(Server, server_id)
            if server is None or server.deleted_at is not None or server.want == "deleted":
                return None
            return list(server.ports or []) or None  # none yet: the build records them

    def _store_ports(self, server_id: str, ports: list[dict]) -> None:
        with self.core.db.session() as s:
            server = s.get(Server, server_id, with_for_update=True)
            if server is None or server.deleted_at is not None or server.want == "deleted":
                return
            created = {p["port_id"]: p.get("created", True) for p in server.ports or []}
            kept = [{**{k: v for k, v in p.items() if k != "floating_ips"},
                     "created": created.get(p["port_id"], p.get("created", True))}
                    for p in ports]
            addresses = addresses_of(ports)
            if kept != (server.ports or []) or addresses != (server.addresses or {}):
                server.ports, server.addresses = kept, addresses
                server.updated_at = self.core.clock()
