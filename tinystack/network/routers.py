"""Routers: an external gateway (with SNAT), interfaces on subnets, static routes.

A router's ports are ordinary ports the service makes itself: its gateway
port on the external network (no project, as in Neutron) and an interface
port per subnet holding that subnet's gateway address (or a port the user
made and hands over). All of them are bound to the network node, whose L3
agent gets a ``RouterSpec`` after every change (``Changes.routers``).
Removing an interface that a floating IP or a static route still needs is a
409, as deleting a router that still has interfaces is.
"""

from __future__ import annotations

import ipaddress

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tinystack.network.errors import (
    BadResourceRequest,
    InvalidRoutes,
    PortInUse,
    RouterExternalGatewayInUseByFloatingIp,
    RouterInterfaceInUseByFloatingIP,
    RouterInterfaceInUseByRoute,
    RouterInterfaceNotFound,
    RouterInterfaceNotFoundForSubnet,
    RouterInUse,
    RoutesExhausted,
)
from tinystack.network.models import (
    FloatingIp,
    IpAllocation,
    Network,
    Port,
    Router,
    RouterPort,
    RouterRoute,
    Subnet,
)
from tinystack.network.ports import Ports
from tinystack.network.service import (
    ROUTER_GATEWAY_OWNER,
    ROUTER_INTERFACE_OWNER,
    Changes,
    Context,
    NetworkCore,
    new_uuid,
    replace,
)
from tinystack.network.views import router_view

__all__ = ["Routers", "MAX_ROUTES", "router_subnets"]

MAX_ROUTES = 30


def router_subnets(s: Session, router: Router) -> list[tuple[Port, IpAllocation, Subnet]]:
    """Every (port, address, subnet) the router sits on, gateway first."""
    found = []
    for row in sorted(router.ports, key=lambda r: r.port_type != ROUTER_GATEWAY_OWNER):
        port = s.get(Port, row.port_id)
        if port is None:
            continue
        for address in port.fixed_ips:
            found.append((port, address, s.get(Subnet, address.subnet_id)))
    return found


class Routers:
    def __init__(self, core: NetworkCore, ports: Ports):
        self.core = core
        self.ports = ports

    def render(self, s: Session, routers: list[Router]) -> list[dict]:
        tags = self.core.tags_of(s, "routers", [r.id for r in routers])
        zones = self.core.zones(s, "L3 agent")
        return [router_view(s, r, tags[r.id], zones) for r in routers]

    def list(self, ctx: Context, hints: dict[str, list[str]]) -> list[dict]:
        def read(s: Session) -> list[dict]:
            query = sa.select(Router).order_by(Router.created_at, Router.id)
            if not ctx.admin:
                query = query.where(Router.project_id == ctx.project_id)
            for name, column in (("id", Router.id), ("project_id", Router.project_id)):
                if hints.get(name):
                    query = query.where(column.in_(hints[name]))
            return self.render(s, list(s.scalars(query)))
        return self.core.transaction(read)

    def show(self, ctx: Context, router_id: str) -> dict:
        return self.core.transaction(
            lambda s: self.render(s, [self.core.get_router(s, ctx, router_id)])[0])

    # -- create, update, delete ---------------------------------------------------------

    def create(self, ctx: Context, values: dict) -> tuple[dict, Changes]:
        changes = Changes()

        def write(s: Session) -> dict:
            owner = ctx.owner_for(values)
            ctx.enforce("create_router", {"project_id": owner})
            self.core.check_quota(s, owner, "router")
            now = self.core.clock()
            router = Router(id=new_uuid(), project_id=owner, name=values.get("name", ""),
                            description=values.get("description", ""),
                            admin_state_up=values.get("admin_state_up", True),
                            availability_zone_hints=values.get("availability_zone_hints", []),
                            created_at=now, updated_at=now, revision_number=1)
            s.add(router)
            s.flush()
            if values.get("external_gateway_info"):
                self._set_gateway(s, ctx, router, values["external_gateway_info"], changes,
                                  "create_router")
            changes.routers.add(router.id)
            return self.render(s, [router])[0]
        return self.core.transaction(write), changes

    def update(self, ctx: Context, router_id: str, values: dict) -> tuple[dict, Changes]:
        changes = Changes()

        def write(s: Session) -> dict:
            router = self.core.get_router(s, ctx, router_id)
            ctx.enforce("update_router", {"project_id": router.project_id})
            for name in ("name", "description", "admin_state_up"):
                if name in values:
                    setattr(router, name, values[name])
            if "external_gateway_info" in values:
                self._set_gateway(s, ctx, router, values["external_gateway_info"] or {},
                                  changes, "update_router")
            if "routes" in values:
                self._set_routes(s, router, values["routes"])
            router.touch()
            s.flush()
            changes.routers.add(router.id)
            return self.render(s, [router])[0]
        return self.core.transaction(write), changes

    def delete(self, ctx: Context, router_id: str) -> Changes:
        changes = Changes()

        def write(s: Session) -> None:
            router = self.core.get_router(s, ctx, router_id)
            ctx.enforce("delete_router", {"project_id": router.project_id})
            if any(r.port_type == ROUTER_INTERFACE_OWNER for r in router.ports):
                raise RouterInUse(router_id=router.id, reason="still has ports")
            self._drop_gateway(s, router, changes)
            self.core.drop_tags(s, "routers", router.id)
            s.delete(router)
            changes.gone_routers.add(router.id)
        self.core.transaction(write)
        return changes

    # -- gateway -------------------------------------------------------------------------

    def _set_gateway(self, s: Session, ctx: Context, router: Router, info: dict,
                     changes: Changes, action: str) -> None:
        target = {"project_id": router.project_id}
        if "enable_snat" in info:
            ctx.enforce(f"{action}:external_gateway_info:enable_snat", target)
        if info.get("external_fixed_ips"):
            ctx.enforce(f"{action}:external_gateway_info:external_fixed_ips", target)
        current = s.get(Port, router.gw_port_id) if router.gw_port_id else None
        network_id = info.get("network_id")
        if not info or network_id is None:
            if info and network_id is None:
                raise BadResourceRequest("router", "network_id is required in "
                                                   "external_gateway_info")
            self._drop_gateway(s, router, changes)
            return
        if current is not None and current.network_id == network_id \
                and not info.get("external_fixed_ips"):
            router.enable_snat = info.get("enable_snat", router.enable_snat)
            return
        network = self.core.get_network(s, ctx, network_id)
        if not network.external:
            raise BadResourceRequest("router", f"Network {network_id} is not an external "
                                               "network")
        self._drop_gateway(s, router, changes)
        port = self.ports.make(s, Context.system(), network, {
            "project_id": "", "device_owner": ROUTER_GATEWAY_OWNER, "device_id": router.id,
            "port_security_enabled": False, "binding:host_id": self.core.network_node(s),
            "fixed_ips": info.get("external_fixed_ips") or None}, changes, internal=True)
        router.gw_port_id = port.id
        router.enable_snat = info.get("enable_snat", True)
        router.ports.append(RouterPort(router_id=router.id, port_id=port.id,
                                       port_type=ROUTER_GATEWAY_OWNER))
        s.flush()

    def _drop_gateway(self, s: Session, router: Router, changes: Changes) -> None:
        if not router.gw_port_id:
            return
        port = s.get(Port, router.gw_port_id)
        if s.scalar(sa.select(FloatingIp.id).where(FloatingIp.router_id == router.id).limit(1)):
            raise RouterExternalGatewayInUseByFloatingIp(router_id=router.id,
                                                         net_id=port.network_id)
        router.gw_port_id = None
        s.flush()
        if port is not None:
            self.ports.remove(s, port, changes)
        s.flush()
        s.expire(router, ["ports"])

    # -- routes --------------------------------------------------------------------------

    def _set_routes(self, s: Session, router: Router, routes: list[dict]) -> None:
        if len(routes) > MAX_ROUTES:
            raise RoutesExhausted(router_id=router.id, quota=MAX_ROUTES)
        attached = router_subnets(s, router)
        own = {a.ip_address for _, a, _ in attached}
        rows, seen = [], set()
        for route in routes:
            try:
                destination = ipaddress.ip_network(route["destination"], strict=False)
                nexthop = ipaddress.ip_address(route["nexthop"])
            except ValueError:
                raise InvalidRoutes(routes=routes, reason="the route is not valid") from None
            if str(nexthop) in own:
                raise InvalidRoutes(routes=routes, reason="the nexthop is used by router")
            if not any(nexthop in ipaddress.ip_network(x.cidr) for _, _, x in attached):
                raise InvalidRoutes(routes=routes,
                                    reason="the nexthop is not connected with router")
            key = (str(destination), str(nexthop))
            if key not in seen:
                seen.add(key)
                rows.append(RouterRoute(router_id=router.id, destination=key[0],
                                        nexthop=key[1], position=len(rows)))
        replace(s, router.routes, rows)

    def change_routes(self, ctx: Context, router_id: str, routes: list[dict],
                      add: bool) -> tuple[dict, Changes]:
        """``add_extraroutes`` / ``remove_extraroutes``: routes merged in or taken out."""
        changes = Changes()

        def write(s: Session) -> dict:
            router = self.core.get_router(s, ctx, router_id)
            ctx.enforce("add_extraroutes" if add else "remove_extraroutes",
                        {"project_id": router.project_id})
            current = [{"destination": r.destination, "nexthop": r.nexthop}
                       for r in router.routes]
            given = [{"destination": str(ipaddress.ip_network(r["destination"], strict=False)),
                      "nexthop": str(ipaddress.ip_address(r["nexthop"]))} for r in routes]
            wanted = current + [r for r in given if r not in current] if add else [
                r for r in current if r not in given]
            self._set_routes(s, router, wanted)
            router.touch()
            s.flush()
            changes.routers.add(router.id)
            return self.render(s, [router])[0]
        return self.core.transaction(write), changes

    # -- interfaces ----------------------------------------------------------------------

    def add_interface(self, ctx: Context, router_id: str, body: dict) -> tuple[dict, Changes]:
        changes = Changes()

        def write(s: Session) -> dict:
            router = self.core.get_router(s, ctx, router_id)
            ctx.enforce("add_router_interface", {"project_id": router.project_id})
            subnet_id, port_id = body.get("subnet_id"), body.get("port_id")
            if subnet_id and port_id:
                raise BadResourceRequest("router", "Cannot specify both subnet-id and port-id")
            if not subnet_id and not port_id:
                raise BadResourceRequest("router", "Either subnet_id or port_id must be "
                                                   "specified")
            if port_id:
                port = self._adopt(s, ctx, router, port_id, changes)
            else:
                port = self._interface_on(s, ctx, router, subnet_id, changes)
            router.ports.append(RouterPort(router_id=router.id, port_id=port.id,
                                           port_type=ROUTER_INTERFACE_OWNER))
            router.touch()
            s.flush()
            changes.routers.add(router.id)
            return self._info(router, port)
        return self.core.transaction(write), changes

    @staticmethod
    def _info(router: Router, port: Port) -> dict:
        subnet_ids = [a.subnet_id for a in port.fixed_ips]
        return {"id": router.id, "tenant_id": router.project_id,
                "project_id": router.project_id, "port_id": port.id,
                "subnet_id": subnet_ids[0] if subnet_ids else None, "subnet_ids": subnet_ids,
                "network_id": port.network_id}

    def _check_new_subnet(self, s: Session, router: Router, subnet: Subnet) -> None:
        cidr = ipaddress.ip_network(subnet.cidr)
        for port, _, other in router_subnets(s, router):
            if port.device_owner != ROUTER_INTERFACE_OWNER:
                continue
            if other.id == subnet.id:
                raise BadResourceRequest("router", f"Router already has a port on subnet "
                                                   f"{subnet.id}")
            if cidr.overlaps(ipaddress.ip_network(other.cidr)):
                raise BadResourceRequest("router", (
                    f"Cidr {subnet.cidr} of subnet {subnet.id} overlaps with cidr "
                    f"{other.cidr} of subnet {other.id}"))

    def _interface_on(self, s: Session, ctx: Context, router: Router, subnet_id: str,
                      changes: Changes) -> Port:
        subnet = self.core.get_subnet(s, ctx, subnet_id)
        if not subnet.gateway_ip:
            raise BadResourceRequest("router", "Subnet for router interface must have a "
                                               "gateway IP")
        self._check_new_subnet(s, router, subnet)
        network = s.get(Network, subnet.network_id)
        return self.ports.make(s, Context.system(), network, {
            "project_id": router.project_id, "device_owner": ROUTER_INTERFACE_OWNER,
            "device_id": router.id, "port_security_enabled": False,
            "binding:host_id": self.core.network_node(s),
            "fixed_ips": [{"subnet_id": subnet.id, "ip_address": subnet.gateway_ip}]},
            changes, internal=True)

    def _adopt(self, s: Session, ctx: Context, router: Router, port_id: str,
               changes: Changes) -> Port:
        port = self.core.get_port(s, ctx, port_id)
        if port.device_id or port.device_owner:
            raise PortInUse(port_id=port.id, net_id=port.network_id, device_id=port.device_id)
        if not port.fixed_ips:
            raise BadResourceRequest("router", "Router port must have at least one fixed IP")
        for address in port.fixed_ips:
            self._check_new_subnet(s, router, s.get(Subnet, address.subnet_id))
        if port.binding_host_id:
            changes.gone_ports[port.id] = (port.binding_host_id, port.network_id)
        port.device_owner, port.device_id = ROUTER_INTERFACE_OWNER, router.id
        port.binding_host_id = self.core.network_node(s)
        port.status = "DOWN"
        port.touch()
        changes.port(port)
        return port

    def remove_interface(self, ctx: Context, router_id: str,
                         body: dict) -> tuple[dict, Changes]:
        changes = Changes()

        def write(s: Session) -> dict:
            router = self.core.get_router(s, ctx, router_id)
            ctx.enforce("remove_router_interface", {"project_id": router.project_id})
            subnet_id, port_id = body.get("subnet_id"), body.get("port_id")
            if not subnet_id and not port_id:
                raise BadResourceRequest("router", "Either subnet_id or port_id must be "
                                                   "specified")
            port = self._find_interface(s, router, subnet_id, port_id)
            for address in port.fixed_ips:
                self._check_unused(s, router, s.get(Subnet, address.subnet_id))
            info = self._info(router, port)
            self.ports.remove(s, port, changes)
            s.flush()
            s.expire(router, ["ports"])
            router.touch()
            changes.routers.add(router.id)
            return info
        return self.core.transaction(write), changes

    def _find_interface(self, s: Session, router: Router, subnet_id: str | None,
                        port_id: str | None) -> Port:
        interfaces = [s.get(Port, r.port_id) for r in router.ports
                      if r.port_type == ROUTER_INTERFACE_OWNER]
        if port_id:
            found = next((p for p in interfaces if p.id == port_id), None)
            if found is None:
                raise RouterInterfaceNotFound(router_id=router.id, port_id=port_id)
            if subnet_id and subnet_id not in {a.subnet_id for a in found.fixed_ips}:
                raise RouterInterfaceNotFoundForSubnet(router_id=router.id, subnet_id=subnet_id)
            return found
        for port in interfaces:
            if subnet_id in {a.subnet_id for a in port.fixed_ips}:
                return port
        raise RouterInterfaceNotFoundForSubnet(router_id=router.id, subnet_id=subnet_id)

    @staticmethod
    def _check_unused(s: Session, router: Router, subnet: Subnet) -> None:
        cidr = ipaddress.ip_network(subnet.cidr)
        fixed = s.scalars(sa.select(FloatingIp.fixed_ip_address).where(
            FloatingIp.router_id == router.id))
        if any(address and ipaddress.ip_address(address) in cidr for address in fixed):
            raise RouterInterfaceInUseByFloatingIP(router_id=router.id, subnet_id=subnet.id)
        if any(ipaddress.ip_address(r.nexthop) in cidr for r in router.routes):
            raise RouterInterfaceInUseByRoute(router_id=router.id, subnet_id=subnet.id)
