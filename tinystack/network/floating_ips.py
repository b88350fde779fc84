"""Floating IPs: an address on an external network, associated with a port's fixed IP.

A floating IP owns a port on its external network (``network:floatingip``,
no project), so its address comes from the same IPAM as every other and can
never be handed out twice. Associating it finds the router that joins the
port's subnet to that external network (``ExternalGatewayForFloatingIPNotFound``
when none does); that router's L3 agent gets the DNAT/SNAT pair in its next
``RouterSpec``. A fixed IP carries at most one floating IP per external
network (a unique key, and ``FloatingIPPortAlreadyAssociated``).
"""

from __future__ import annotations

import ipaddress

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tinystack.network.allocation import subnets_of
from tinystack.network.errors import (
    BadResourceRequest,
    ExternalGatewayForFloatingIPNotFound,
    FloatingIPPortAlreadyAssociated,
)
from tinystack.network.models import FloatingIp, IpAllocation, Port, Router, RouterPort
from tinystack.network.ports import Ports
from tinystack.network.service import (
    FLOATINGIP_OWNER,
    ROUTER_INTERFACE_OWNER,
    Changes,
    Context,
    NetworkCore,
    new_uuid,
)
from tinystack.network.views import floating_ip_view

__all__ = ["FloatingIps"]


class FloatingIps:
    def __init__(self, core: NetworkCore, ports: Ports):
        self.core = core
        self.ports = ports

    def render(self, s: Session, fips: list[FloatingIp]) -> list[dict]:
        tags = self.core.tags_of(s, "floatingips", [f.id for f in fips])
        return [floating_ip_view(s, f, tags[f.id]) for f in fips]

    def list(self, ctx: Context, hints: dict[str, list[str]]) -> list[dict]:
        def read(s: Session) -> list[dict]:
            query = sa.select(FloatingIp).order_by(FloatingIp.created_at, FloatingIp.id)
            if not (ctx.admin or ctx.service):  # compute reads its servers' floating IPs
                query = query.where(FloatingIp.project_id == ctx.project_id)
            for name, column in (("id", FloatingIp.id), ("project_id", FloatingIp.project_id),
                                 ("port_id", FloatingIp.fixed_port_id),
                                 ("router_id", FloatingIp.router_id)):
                if hints.get(name):
                    query = query.where(column.in_(hints[name]))
            return self.render(s, list(s.scalars(query)))
        return self.core.transaction(read)

    def show(self, ctx: Context, fip_id: str) -> dict:
        return self.core.transaction(
            lambda s: self.render(s, [self.core.get_floating_ip(s, ctx, fip_id)])[0])

    def create(self, ctx: Context, values: dict) -> tuple[dict, Changes]:
        changes = Changes()

        def write(s: Session) -> dict:
            owner = ctx.owner_for(values)
            ctx.enforce("create_floatingip", {"project_id": owner})
            if values.get("floating_ip_address"):
                ctx.enforce("create_floatingip:floating_ip_address", {"project_id": owner})
            network = self.core.get_network(s, ctx, values["floating_network_id"])
            if not network.external:
                raise BadResourceRequest("floatingip", f"Network {network.id} is not a valid "
                                                       "external network")
            self.core.check_quota(s, owner, "floatingip")
            fip = FloatingIp(id=new_uuid(), project_id=owner,
                             floating_network_id=network.id, status="DOWN",
                             description=values.get("description", ""), revision_number=1,
                             created_at=self.core.clock(), updated_at=self.core.clock())
            port = self.ports.make(s, Context.system(), network, {
                "project_id": "", "device_owner": FLOATINGIP_OWNER, "device_id": fip.id,
                "port_security_enabled": False,
                "fixed_ips": self._address_request(s, network.id, values)}, changes,
                internal=True)
            fip.floating_port_id = port.id
            fip.floating_ip_address = port.fixed_ips[0].ip_address
            s.add(fip)
            s.flush()
            if values.get("port_id"):
                self._associate(s, ctx, fip, values["port_id"], values.get("fixed_ip_address"),
                                changes)
            return self.render(s, [fip])[0]
        return self.core.transaction(write), changes

    @staticmethod
    def _address_request(s: Session, network_id: str, values: dict) -> list[dict]:
        request = {k: values[k] for k in ("subnet_id", "floating_ip_address") if values.get(k)}
        if "floating_ip_address" in request:
            request["ip_address"] = request.pop("floating_ip_address")
        if request:
            return [request]
        v4 = [x for x in subnets_of(s, network_id) if x.ip_version == 4]
        if not v4:
            raise BadResourceRequest("floatingip", f"Network {network_id} does not contain "
                                                   "any IPv4 subnet")
        return [{"subnet_id": v4[0].id}]

    def update(self, ctx: Context, fip_id: str, values: dict) -> tuple[dict, Changes]:
        changes = Changes()

        def write(s: Session) -> dict:
            fip = self.core.get_floating_ip(s, ctx, fip_id)
            ctx.enforce("update_floatingip", {"project_id": fip.project_id})
            if "description" in values:
                fip.description = values["description"]
            if "port_id" in values or "fixed_ip_address" in values:
                port_id = values.get("port_id", fip.fixed_port_id)
                if port_id:
                    self._associate(s, ctx, fip, port_id, values.get("fixed_ip_address"),
                                    changes)
                else:
                    self._disassociate(s, fip, changes)
            fip.touch()
            s.flush()
            return self.render(s, [fip])[0]
        return self.core.transaction(write), changes

    def delete(self, ctx: Context, fip_id: str) -> Changes:
        changes = Changes()

        def write(s: Session) -> None:
            fip = self.core.get_floating_ip(s, ctx, fip_id)
            ctx.enforce("delete_floatingip", {"project_id": fip.project_id})
            self._disassociate(s, fip, changes)
            port = s.get(Port, fip.floating_port_id)
            self.core.drop_tags(s, "floatingips", fip.id)
            s.delete(fip)
            s.flush()
            if port is not None:
                self.ports.remove(s, port, changes)
        self.core.transaction(write)
        return changes

    # -- association ---------------------------------------------------------------------

    @staticmethod
    def _disassociate(s: Session, fip: FloatingIp, changes: Changes) -> None:
        if fip.fixed_port_id:
            changes.device(s.get(Port, fip.fixed_port_id))
        if fip.router_id:
            changes.routers.add(fip.router_id)
        fip.fixed_port_id = fip.fixed_ip_address = fip.router_id = None
        fip.status = "DOWN"

    def _associate(self, s: Session, ctx: Context, fip: FloatingIp, port_id: str,
                   fixed_ip: str | None, changes: Changes) -> None:
        port = self.core.get_port(s, ctx, port_id)
        if not ctx.admin and port.project_id != fip.project_id:
            raise BadResourceRequest("floatingip", (
                f"Cannot create floating IP and bind it to Port {port_id}, since that port is "
                "owned by a different tenant"))
        address = self._fixed_address(port, fixed_ip)
        router_id = self._router_for(s, fip, port, address)
        clash = s.scalar(sa.select(FloatingIp).where(
            FloatingIp.floating_network_id == fip.floating_network_id,
            FloatingIp.fixed_port_id == port.id, FloatingIp.fixed_ip_address == address.ip_address,
            FloatingIp.id != fip.id))
        if clash is not None:
            raise FloatingIPPortAlreadyAssociated(
                floating_ip_address=fip.floating_ip_address, fip_id=fip.id, port_id=port.id,
                fixed_ip=address.ip_address, net_id=fip.floating_network_id)
        if fip.router_id and fip.router_id != router_id:
            changes.routers.add(fip.router_id)
        fip.fixed_port_id, fip.fixed_ip_address = port.id, address.ip_address
        fip.router_id, fip.status = router_id, "ACTIVE"
        changes.routers.add(router_id)
        changes.device(port)

    @staticmethod
    def _fixed_address(port: Port, fixed_ip: str | None) -> IpAllocation:
        v4 = [a for a in port.fixed_ips if ipaddress.ip_address(a.ip_address).version == 4]
        if fixed_ip:
            for address in v4:
                if address.ip_address == fixed_ip:
                    return address
            raise BadResourceRequest("floatingip", f"Port {port.id} does not have fixed ip "
                                                   f"{fixed_ip}")
        if not v4:
            raise BadResourceRequest("floatingip", f"Cannot add floating IP to port {port.id} "
                                                   "that has no fixed IPv4 addresses")
        if len(v4) > 1:
            raise BadResourceRequest("floatingip", (
                f"Port {port.id} has multiple fixed IPv4 addresses.  Must provide a specific "
                "IPv4 address when assigning a floating IP"))
        return v4[0]

    @staticmethod
    def _router_for(s: Session, fip: FloatingIp, port: Port, address: IpAllocation) -> str:
        """The router with a gateway on the floating network and an interface on the subnet."""
        interface = sa.select(RouterPort.router_id).join(
            IpAllocation, IpAllocation.port_id == RouterPort.port_id).where(
            RouterPort.port_type == ROUTER_INTERFACE_OWNER,
            IpAllocation.subnet_id == address.subnet_id)
        gateway = sa.select(Port.device_id).join(Router, Router.gw_port_id == Port.id).where(
            Port.network_id == fip.floating_network_id)
        router_id = s.scalar(sa.select(Router.id).where(
            Router.id.in_(interface), Router.id.in_(gateway)).order_by(Router.created_at))
        if router_id is None:
            raise ExternalGatewayForFloatingIPNotFound(
                external_network_id=fip.floating_network_id, subnet_id=address.subnet_id,
                port_id=port.id)
        return router_id
