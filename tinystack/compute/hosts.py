"""Compute nodes and services: heartbeats in, os-services, os-hypervisors and zones out.

A node's agent sends a ``NodeReport`` every few seconds; ``apply_node_report``
upserts its ``ComputeNode`` (totals and the hypervisor's own usage figures)
and its ``nova-compute`` service row, whose ``last_seen_up`` makes it up or
down in os-services (down after ``service_down_time``). The controller keeps
its own ``nova-scheduler`` and ``nova-conductor`` rows alive the same way
(``touch_controller``). Admins enable, disable and force down services; a
disabled or down node gets no new servers (``scheduler.py``).

Availability zones are the zones compute nodes report; controller services
live in the ``internal`` zone, as Nova shows them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tinystack.common.db import Database
from tinystack.common.errors import BadRequest, Conflict, NotFound
from tinystack.compute.messages import NodeReport
from tinystack.compute.models import Allocation, ComputeNode, Server, Service
from tinystack.config import ComputeSettings

__all__ = ["Hosts", "ServiceView", "HypervisorView", "CONTROLLER_BINARIES"]

CONTROLLER_BINARIES = ("nova-scheduler", "nova-conductor")


@dataclass
class ServiceView:
    service: Service
    up: bool
    zone: str


@dataclass
class HypervisorView:
    node: ComputeNode
    service: Service | None
    up: bool
    servers: list[tuple[str, str]]
    """(server id, instance name) of the live servers on the node."""


class Hosts:
    def __init__(self, db: Database, settings: ComputeSettings,
                 clock: Callable[[], dt.datetime]):
        self.db = db
        self.settings = settings
        self.clock = clock

    def _up(self, service: Service | None) -> bool:
        if service is None or service.forced_down or service.last_seen_up is None:
            return False
        age = (self.clock() - service.last_seen_up).total_seconds()
        return age <= self.settings.service_down_time

    # -- heartbeats ---------------------------------------------------------------------

    def _service(self, s: Session, host: str, binary: str) -> Service:
        service = s.scalar(sa.select(Service).where(Service.host == host,
                                                    Service.binary == binary))
        if service is None:
            service = Service(uuid=str(uuid.uuid4()), host=host, binary=binary,
                              topic=binary.removeprefix("nova-"), created_at=self.clock())
            s.add(service)
            s.flush()
        return service

    def _beat(self, service: Service) -> None:
        now = self.clock()
        service.last_seen_up = now
        service.updated_at = now
        service.report_count += 1

    def touch_controller(self, host: str) -> None:
        with self.db.session() as s:
            for binary in CONTROLLER_BINARIES:
                self._beat(self._service(s, host, binary))

    def apply_node_report(self, report: NodeReport) -> list[str]:
        """Record a heartbeat; returns the ids of servers the node should have."""
        now = self.clock()
        with self.db.session() as s:
            node = s.scalar(sa.select(ComputeNode).where(ComputeNode.host == report.host))
            if node is None:
                node = ComputeNode(uuid=str(uuid.uuid4()), host=report.host, created_at=now,
                                   started_at=now)
                s.add(node)
            node.hypervisor_hostname = report.host
            node.hypervisor_type = report.hypervisor_type
            node.hypervisor_version = report.hypervisor_version
            node.accelerator = report.accelerator
            node.host_ip = report.host_ip
            node.availability_zone = report.availability_zone or "nova"
            node.cpu_info = {"arch": "x86_64", **report.cpu_info,
                             "accelerator": report.accelerator}
            node.uptime = report.uptime
            node.vcpus, node.memory_mb, node.local_gb = (report.vcpus, report.memory_mb,
                                                         report.local_gb)
            node.vcpus_used = report.vcpus_used
            node.memory_mb_used = report.memory_mb_used
            node.local_gb_used = report.local_gb_used
            node.running_vms = report.running_vms
            node.updated_at = now
            self._beat(self._service(s, report.host, "nova-compute"))
            return list(s.scalars(sa.select(Server.id).where(
                Server.host == report.host, Server.deleted_at.is_(None))))

    # -- os-services --------------------------------------------------------------------

    def _zone_of(self, s: Session, service: Service) -> str:
        if service.binary != "nova-compute":
            return "internal"
        zone = s.scalar(sa.select(ComputeNode.availability_zone)
                        .where(ComputeNode.host == service.host))
        return zone or "nova"

    def services(self, host: str | None = None, binary: str | None = None) -> list[ServiceView]:
        with self.db.session() as s:
            query = sa.select(Service).order_by(Service.id)
            if host:
                query = query.where(Service.host == host)
            if binary:
                query = query.where(Service.binary == binary)
            return [ServiceView(svc, self._up(svc), self._zone_of(s, svc))
                    for svc in s.scalars(query)]

    def _find_service(self, s: Session, service_id: str) -> Service:
        query = sa.select(Service)
        if service_id.isdigit():
            query = query.where(Service.id == int(service_id))
        else:
            query = query.where(Service.uuid == service_id)
        service = s.scalar(query)
        if service is None:
            raise NotFound(f"Service {service_id} could not be found.")
        return service

    def _by_host_binary(self, s: Session, host: str, binary: str) -> Service:
        service = s.scalar(sa.select(Service).where(Service.host == host,
                                                    Service.binary == binary))
        if service is None:
            raise NotFound(f"Service {binary} on host {host} could not be found.")
        return service

    def update_service(self, service_id: str | None = None, *, host: str | None = None,
                       binary: str | None = None, disabled: bool | None = None,
                       disabled_reason: str | None = None,
                       forced_down: bool | None = None) -> ServiceView:
        with self.db.session() as s:
            if service_id is not None:
                service = self._find_service(s, service_id)
            else:
                service = self._by_host_binary(s, host or "", binary or "")
            if (disabled is not None or forced_down is not None) and \
                    service.binary != "nova-compute":
                raise BadRequest(f"Updating a {service.binary} service is not supported. "
                                 "Only nova-compute services can be updated.")
            if disabled is not None:
                service.disabled = disabled
                service.disabled_reason = disabled_reason if disabled else None
            if forced_down is not None:
                service.forced_down = forced_down
            service.updated_at = self.clock()
            return ServiceView(service, self._up(service), self._zone_of(s, service))

    def delete_service(self, service_id: str) -> None:
        with self.db.session() as s:
            service = self._find_service(s, service_id)
            if service.binary == "nova-compute":
                busy = s.scalar(sa.select(sa.func.count()).select_from(Server).where(
                    Server.host == service.host, Server.deleted_at.is_(None)))
                if busy:
                    raise Conflict("Unable to delete compute service that is hosting "
                                   "instances. Migrate or delete the instances first.")
                node = s.scalar(sa.select(ComputeNode).where(ComputeNode.host == service.host))
                if node is not None:
                    s.execute(sa.delete(Allocation).where(Allocation.node_id == node.id))
                    s.delete(node)
            s.delete(service)

    # -- os-hypervisors -----------------------------------------------------------------

    def hypervisors(self, *, pattern: str | None = None, node_id: str | None = None
                    ) -> list[HypervisorView]:
        with self.db.session() as s:
            query = sa.select(ComputeNode).order_by(ComputeNode.id)
            if node_id is not None:
                if node_id.isdigit():
                    query = query.where(ComputeNode.id == int(node_id))
                else:
                    query = query.where(ComputeNode.uuid == node_id)
            if pattern:
                query = query.where(ComputeNode.hypervisor_hostname.contains(pattern))
            nodes = list(s.scalars(query))
            services = {svc.host: svc for svc in s.scalars(
                sa.select(Service).where(Service.binary == "nova-compute"))}
            placed: dict[str, list[tuple[str, str]]] = {}
            for server_id, host in s.execute(
                    sa.select(Server.id, Server.host)
                    .where(Server.deleted_at.is_(None), Server.host.is_not(None))
                    .order_by(Server.created_at)):
                placed.setdefault(host, []).append((server_id, f"instance-{server_id[:8]}"))
            return [HypervisorView(n, services.get(n.host), self._up(services.get(n.host)),
                                   placed.get(n.host, [])) for n in nodes]

    def hypervisor(self, node_id: str) -> HypervisorView:
        found = self.hypervisors(node_id=node_id)
        if not found:
            raise NotFound(f"Hypervisor with ID {node_id} could not be found.")
        return found[0]

    # -- availability zones -------------------------------------------------------------

    def zones(self) -> dict[str, list[ServiceView]]:
        """zone -> its services (the ``internal`` zone holds the controller's)."""
        zones: dict[str, list[ServiceView]] = {}
        for view in self.services():
            zones.setdefault(view.zone, []).append(view)
        return zones
