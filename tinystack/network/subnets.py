"""Subnets: CIDR, gateway, allocation pools, DNS servers, host routes, DHCP.

Creating a subnet checks it as Neutron does (a CIDR without host bits, not
overlapping another subnet of the network, pools inside the CIDR and clear
of the gateway, at most 5 DNS servers and 20 host routes) with the network's
row locked, so two subnets racing onto one network are checked one after the
other. The network's DHCP port follows its DHCP-enabled subnets
(``Ports.sync_dhcp_port``). A subnet with addresses in use by any port but
the DHCP port cannot be deleted (``SubnetInUse``).
"""

from __future__ import annotations

import ipaddress

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tinystack.network import ipam
from tinystack.network.errors import (
    DNSNameServersExhausted,
    HostRoutesExhausted,
    InvalidInput,
    SubnetInUse,
    SubnetPoolNotFound,
)
from tinystack.network.models import (
    AllocationPool,
    DnsNameserver,
    HostRoute,
    IpAllocation,
    Network,
    Port,
    RouterPort,
    Subnet,
)
from tinystack.network.networks import visible_networks
from tinystack.network.ports import Ports
from tinystack.network.service import (
    DHCP_OWNER,
    Changes,
    Context,
    NetworkCore,
    new_uuid,
    replace,
)
from tinystack.network.views import subnet_view

__all__ = ["Subnets", "MAX_DNS_NAMESERVERS", "MAX_HOST_ROUTES"]

MAX_DNS_NAMESERVERS = 5
MAX_HOST_ROUTES = 20


class Subnets:
    def __init__(self, core: NetworkCore, ports: Ports):
        self.core = core
        self.ports = ports

    def render(self, s: Session, subnets: list[Subnet]) -> list[dict]:
        tags = self.core.tags_of(s, "subnets", [x.id for x in subnets])
        return [subnet_view(x, tags[x.id]) for x in subnets]

    def list(self, ctx: Context, hints: dict[str, list[str]]) -> list[dict]:
        def read(s: Session) -> list[dict]:
            query = sa.select(Subnet).join(Network, Network.id == Subnet.network_id).order_by(
                Subnet.created_at, Subnet.id)
            shown = visible_networks(ctx)
            if shown is not None:
                query = query.where(shown)
            for name, column in (("id", Subnet.id), ("network_id", Subnet.network_id),
                                 ("project_id", Subnet.project_id)):
                if hints.get(name):
                    query = query.where(column.in_(hints[name]))
            return self.render(s, list(s.scalars(query)))
        return self.core.transaction(read)

    def show(self, ctx: Context, subnet_id: str) -> dict:
        def read(s: Session) -> dict:
            return self.render(s, [self.core.get_subnet(s, ctx, subnet_id)])[0]
        return self.core.transaction(read)

    # -- checks ---------------------------------------------------------------------------

    @staticmethod
    def _dns(subnet_id: str, servers: list[str]) -> list[DnsNameserver]:
        if len(servers) > MAX_DNS_NAMESERVERS:
            raise DNSNameServersExhausted(subnet_id=subnet_id, quota=MAX_DNS_NAMESERVERS)
        seen = []
        for server in servers:
            address = str(ipam.parse_address(server))
            if address in seen:
                raise InvalidInput(error_message=f"Duplicate nameserver '{server}'")
            seen.append(address)
        return [DnsNameserver(subnet_id=subnet_id, position=i, address=a)
                for i, a in enumerate(seen)]

    @staticmethod
    def _routes(subnet_id: str, version: int, routes: list[dict]) -> list[HostRoute]:
        if len(routes) > MAX_HOST_ROUTES:
            raise HostRoutesExhausted(subnet_id=subnet_id, quota=MAX_HOST_ROUTES)
        rows, seen = [], set()
        for route in routes:
            try:
                destination = ipaddress.ip_network(route["destination"], strict=False)
                nexthop = ipaddress.ip_address(route["nexthop"])
            except ValueError:
                raise InvalidInput(error_message=f"Invalid host route {route}") from None
            if destination.version != version or nexthop.version != version:
                raise InvalidInput(error_message=f"Host route {route} does not match the "
                                                 f"IP version {version} of the subnet")
            key = (str(destination), str(nexthop))
            if key in seen:
                raise InvalidInput(error_message=f"Duplicate hostroute '{route}'")
            seen.add(key)
            rows.append(HostRoute(subnet_id=subnet_id, position=len(rows),
                                  destination=key[0], nexthop=key[1]))
        return rows

    @staticmethod
    def _pools(subnet_id: str, network: ipam.IPNetwork, given: list[dict] | None,
               gateway: str | None) -> list[AllocationPool]:
        if given is None:
            pools = ipam.default_pools(network, gateway)
        else:
            pools = ipam.check_pools(network, [(p["start"], p["end"]) for p in given],
                                     gateway)
        return [AllocationPool(subnet_id=subnet_id, position=i,
                               first_ip=ipam.to_text(network.version, first),
                               last_ip=ipam.to_text(network.version, last))
                for i, (first, last) in enumerate(pools)]

    @staticmethod
    def _ipv6_modes(values: dict, version: int) -> tuple[str | None, str | None]:
        ra, address = values.get("ipv6_ra_mode"), values.get("ipv6_address_mode")
        if version == 4 and (ra or address):
            raise InvalidInput(error_message="ipv6_ra_mode or ipv6_address_mode cannot be "
                                             "set when ip_version is 4")
        if ra and address and ra != address:
            raise InvalidInput(error_message=(
                f"ipv6_ra_mode set to '{ra}' with ipv6_address_mode set to '{address}' is "
                "not valid. If both attributes are set, they must be the same value"))
        return ra, address

    # -- create, update, delete ---------------------------------------------------------

    def create(self, ctx: Context, values: dict) -> tuple[dict, Changes]:
        changes = Changes()

        def write(s: Session) -> dict:
            return self.render(s, [self.make(s, ctx, values, changes)])[0]
        return self.core.transaction(write), changes

    def make(self, s: Session, ctx: Context, values: dict, changes: Changes) -> Subnet:
        network = self.core.get_network(s, ctx, values["network_id"], for_update=True)
        owner = ctx.owner_for(values)
        target = self.core.network_target(ctx, network)
        target["project_id"] = owner
        ctx.enforce("create_subnet", target)
        if values.get("subnetpool_id"):
            raise SubnetPoolNotFound(subnetpool_id=values["subnetpool_id"])
        version = values["ip_version"]
        cidr = ipam.parse_cidr(values["cidr"], version)
        for other in network.subnets:
            if ipam.overlaps(cidr, ipaddress.ip_network(other.cidr)):
                raise InvalidInput(error_message=(
                    f"Requested subnet with cidr: {cidr} for network: {network.id} overlaps "
                    "with another subnet"))
        gateway = values.get("gateway_ip", "auto")
        gateway = ipam.default_gateway(cidr) if gateway == "auto" else (
            None if gateway is None else ipam.check_gateway(cidr, gateway))
        ra, address_mode = self._ipv6_modes(values, version)
        self.core.check_quota(s, owner, "subnet")
        now = self.core.clock()
        subnet = Subnet(id=new_uuid(), project_id=owner, network_id=network.id,
                        name=values.get("name", ""), description=values.get("description", ""),
                        ip_version=version, cidr=str(cidr), gateway_ip=gateway,
                        enable_dhcp=values.get("enable_dhcp", True), ipv6_ra_mode=ra,
                        ipv6_address_mode=address_mode, created_at=now, updated_at=now,
                        revision_number=1)
        subnet.pools = self._pools(subnet.id, cidr, values.get("allocation_pools"), gateway)
        subnet.dns = self._dns(subnet.id, values.get("dns_nameservers", []))
        subnet.routes = self._routes(subnet.id, version, values.get("host_routes", []))
        s.add(subnet)
        network.touch()
        s.flush()
        self.ports.sync_dhcp_port(s, network, changes)
        changes.networks.add(network.id)
        return subnet

    def update(self, ctx: Context, subnet_id: str, values: dict) -> tuple[dict, Changes]:
        changes = Changes()

        def write(s: Session) -> dict:
            subnet = self.core.get_subnet(s, ctx, subnet_id)
            network = self.core.get_network(s, ctx, subnet.network_id, for_update=True)
            ctx.enforce("update_subnet", {**self.core.network_target(ctx, network),
                                          "project_id": subnet.project_id})
            cidr = ipaddress.ip_network(subnet.cidr)
            for name in ("name", "description"):
                if name in values:
                    setattr(subnet, name, values[name])
            if "gateway_ip" in values:
                gateway = values["gateway_ip"]
                subnet.gateway_ip = None if gateway is None else ipam.check_gateway(
                    cidr, ipam.default_gateway(cidr) if gateway == "auto" else gateway)
            if "allocation_pools" in values or "gateway_ip" in values:
                given = values.get("allocation_pools")
                if given is None:
                    given = [{"start": p.first_ip, "end": p.last_ip} for p in subnet.pools]
                replace(s, subnet.pools, self._pools(subnet.id, cidr, given,
                                                     subnet.gateway_ip))
            if "dns_nameservers" in values:
                replace(s, subnet.dns, self._dns(subnet.id, values["dns_nameservers"]))
            if "host_routes" in values:
                replace(s, subnet.routes, self._routes(subnet.id, subnet.ip_version,
                                                       values["host_routes"]))
            if "enable_dhcp" in values:
                subnet.enable_dhcp = values["enable_dhcp"]
            subnet.touch()
            s.flush()
            self.ports.sync_dhcp_port(s, network, changes)
            changes.networks.add(network.id)
            changes.ports.update(s.scalars(sa.select(IpAllocation.port_id).where(
                IpAllocation.subnet_id == subnet.id)))
            changes.routers.update(s.scalars(sa.select(RouterPort.router_id).join(
                IpAllocation, IpAllocation.port_id == RouterPort.port_id).where(
                IpAllocation.subnet_id == subnet.id)))
            return self.render(s, [subnet])[0]
        return self.core.transaction(write), changes

    def delete(self, ctx: Context, subnet_id: str) -> Changes:
        changes = Changes()

        def write(s: Session) -> None:
            subnet = self.core.get_subnet(s, ctx, subnet_id)
            network = self.core.get_network(s, ctx, subnet.network_id, for_update=True)
            ctx.enforce("delete_subnet", {**self.core.network_target(ctx, network),
                                          "project_id": subnet.project_id})
            users = s.scalars(sa.select(Port.device_owner).join(
                IpAllocation, IpAllocation.port_id == Port.id).where(
                IpAllocation.subnet_id == subnet.id))
            if any(owner != DHCP_OWNER for owner in users):
                raise SubnetInUse(subnet_id=subnet.id)
            subnet.enable_dhcp = False
            s.flush()
            self.ports.sync_dhcp_port(s, network, changes)
            s.flush()
            s.execute(sa.delete(IpAllocation).where(IpAllocation.subnet_id == subnet.id))
            self.core.drop_tags(s, "subnets", subnet.id)
            s.delete(subnet)
            network.touch()
            changes.networks.add(network.id)
        self.core.transaction(write)
        return changes
