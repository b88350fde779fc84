"""Ports: addresses, MAC, binding, security groups, address pairs; the DHCP port.

``make`` is the one way a port comes to be, for the API (with its policy
checks) and for the service itself (DHCP, router and floating IP ports,
``internal=True``). A port gets a ``fa:16:3e`` MAC unique on its network
(a collision is retried), its fixed IPs from ``allocation.py``, the
project's default security group unless it asks otherwise or belongs to the
network itself (``network:*`` owners get none), and its binding: a port with
``binding:host_id`` is bound (``binding:vif_type`` "tap") and its spec goes
to that host's L2 agent; its status is DOWN until the agent reports it
ACTIVE (``report``) and, on a network with DHCP, the DHCP agent serves its
address (``activate``; the provisioning blocks are in ``agent_server.py``).

``sync_dhcp_port`` keeps a network's DHCP port in step with its subnets: an
address on every DHCP-enabled subnet, bound to the network node, gone when
no subnet wants DHCP.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tinystack.network import allocation, ipam
from tinystack.network.errors import (
    AddressPairAndPortSecurityRequired,
    AddressPairMatchesPortFixedIPAndMac,
    AllowedAddressPairExhausted,
    DuplicateAddressPairInRequest,
    InvalidInput,
    L3PortInUse,
    MacAddressInUse,
    PolicyNotAuthorized,
    PortSecurityAndIPRequiredForSecurityGroups,
    PortSecurityPortHasSecurityGroup,
    SecurityGroupNotFound,
)
from tinystack.network.models import (
    AllowedAddressPair,
    FloatingIp,
    Network,
    Port,
    PortSecurityGroup,
    RouterPort,
    SecurityGroup,
)
from tinystack.network.policy import NETWORK_DEVICE_PREFIX
from tinystack.network.security_groups import ensure_default
from tinystack.network.service import (
    DHCP_OWNER,
    FLOATINGIP_OWNER,
    ROUTER_GATEWAY_OWNER,
    ROUTER_INTERFACE_OWNER,
    Changes,
    Context,
    NetworkCore,
    Retry,
    new_uuid,
    replace,
)
from tinystack.network.views import port_view

__all__ = ["Ports", "MAX_ADDRESS_PAIRS", "L3_OWNERS"]

MAX_ADDRESS_PAIRS = 10
L3_OWNERS = (ROUTER_INTERFACE_OWNER, ROUTER_GATEWAY_OWNER, FLOATINGIP_OWNER)
_rng = random.SystemRandom()


def _pair_address(text: str) -> str:
    try:
        if "/" in text:
            return str(ipaddress.ip_network(text, strict=False))
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise InvalidInput(error_message=f"'{text}' is not a valid IP address") from None


class Ports:
    def __init__(self, core: NetworkCore):
        self.core = core

    # -- reading -------------------------------------------------------------------------

    def render(self, s: Session, ctx: Context, ports: list[Port]) -> list[dict]:
        tags = self.core.tags_of(s, "ports", [p.id for p in ports])
        ids = sorted({p.network_id for p in ports})
        networks = {n.id: n for n in s.scalars(sa.select(Network).where(Network.id.in_(ids)))}
        return [port_view(ctx, p, tags[p.id],
                          self.core.port_target(s, ctx, p, networks[p.network_id]))
                for p in ports]

    def list(self, ctx: Context, hints: dict[str, list[str]]) -> list[dict]:
        def read(s: Session) -> list[dict]:
            query = sa.select(Port).order_by(Port.created_at, Port.id)
            if not (ctx.admin or ctx.service):
                owned = sa.select(Network.id).where(Network.project_id == ctx.project_id)
                query = query.where(sa.or_(Port.project_id == ctx.project_id,
                                           Port.network_id.in_(owned)))
            for name, column in (("id", Port.id), ("network_id", Port.network_id),
                                 ("device_id", Port.device_id),
                                 ("device_owner", Port.device_owner),
                                 ("project_id", Port.project_id)):
                if hints.get(name):
                    query = query.where(column.in_(hints[name]))
            return self.render(s, ctx, list(s.scalars(query)))
        return self.core.transaction(read)

    def show(self, ctx: Context, port_id: str) -> dict:
        def read(s: Session) -> dict:
            return self.render(s, ctx, [self.core.get_port(s, ctx, port_id)])[0]
        return self.core.transaction(read)

    # -- creating ------------------------------------------------------------------------

    def create(self, ctx: Context, values: dict) -> tuple[dict, Changes]:
        views, changes = self.create_bulk(ctx, [values])
        return views[0], changes

    def create_bulk(self, ctx: Context, items: list[dict]) -> tuple[list[dict], Changes]:
        """Every port of a bulk request in one transaction: all are made, or none."""
        def write(s: Session) -> list[dict]:
            changes = Changes()
            ports = []
            for values in items:
                network = self.core.get_network(s, ctx, values["network_id"])
                ports.append(self.make(s, ctx, network, values, changes))
            holder.append(changes)
            return self.render(s, ctx, ports)
        holder: list[Changes] = []
        views = self.core.transaction(write)
        return views, holder[-1]

    def _check_create(self, s: Session, ctx: Context, network: Network, values: dict,
                      owner: str) -> None:
        target = self.core.network_target(ctx, network)
        target.update(project_id=owner, device_owner=values.get("device_owner", ""))
        ctx.enforce("create_port", target)
        if not ctx.allowed("create_port:network", target):
            raise PolicyNotAuthorized("create_port")
        if values.get("device_owner"):
            ctx.enforce("create_port:device_owner", target)
        if values.get("mac_address"):
            ctx.enforce("create_port:mac_address", target)
        for request in values.get("fixed_ips") or []:
            if request.get("ip_address"):
                ctx.enforce("create_port:fixed_ips:ip_address", target)
            elif request.get("subnet_id"):
                ctx.enforce("create_port:fixed_ips:subnet_id", target)
        if "port_security_enabled" in values:
            ctx.enforce("create_port:port_security_enabled", target)
        if values.get("binding:host_id") or values.get("binding:profile"):
            ctx.enforce("create_port:binding", target)
        if values.get("allowed_address_pairs"):
            ctx.enforce("create_port:allowed_address_pairs", target)
        self.core.check_quota(s, owner, "port")

    def make(self, s: Session, ctx: Context, network: Network, values: dict,
             changes: Changes, *, internal: bool = False) -> Port:
        """A new port on ``network`` from API ``values`` (checked unless ``internal``)."""
        owner = values["project_id"] if "project_id" in values and internal \
            else ctx.owner_for(values)
        if not internal:
            self._check_create(s, ctx, network, values, owner)
        now = self.core.clock()
        device_owner = values.get("device_owner", "")
        port = Port(
            id=new_uuid(), project_id=owner, network_id=network.id,
            name=values.get("name", ""), description=values.get("description", ""),
            admin_state_up=values.get("admin_state_up", True), status="DOWN",
            device_id=values.get("device_id", ""), device_owner=device_owner,
            port_security_enabled=values.get("port_security_enabled",
                                             network.port_security_enabled),
            binding_host_id=values.get("binding:host_id", ""),
            binding_profile=values.get("binding:profile", {}),
            binding_vnic_type=values.get("binding:vnic_type", "normal"),
            created_at=now, updated_at=now, revision_number=1)
        port.mac_address = self._mac(s, network, values.get("mac_address"))
        s.add(port)
        self._set_groups(s, ctx, port, values.get("security_groups"), creating=True)
        self._set_pairs(s, port, values.get("allowed_address_pairs") or [], creating=True)
        try:
            s.flush()
        except IntegrityError:
            raise Retry() from None
        allocation.allocate(s, network, port, values.get("fixed_ips"))
        changes.port(port)
        return port

    def _mac(self, s: Session, network: Network, requested: str | None) -> str:
        if requested:
            mac = ipam.normalize_mac(requested)
            if s.scalar(sa.select(Port.id).where(Port.network_id == network.id,
                                                 Port.mac_address == mac)):
                raise MacAddressInUse(net_id=network.id, mac=mac)
            return mac
        return ipam.random_mac(_rng)

    def _set_groups(self, s: Session, ctx: Context, port: Port, requested: list[str] | None,
                    *, creating: bool) -> None:
        if requested is None:
            if not creating:
                return
            if not port.port_security_enabled or port.device_owner.startswith(
                    NETWORK_DEVICE_PREFIX):
                requested = []
            else:
                requested = [ensure_default(s, port.project_id).id]
        requested = list(dict.fromkeys(requested))
        if requested and not port.port_security_enabled:
            raise PortSecurityAndIPRequiredForSecurityGroups()
        for group_id in requested:
            group = s.get(SecurityGroup, group_id)
            if group is None or not (ctx.admin or group.project_id == port.project_id):
                raise SecurityGroupNotFound(id=group_id)
        rows = [PortSecurityGroup(port_id=port.id, security_group_id=g) for g in requested]
        if creating:
            port.groups = rows
        else:
            replace(s, port.groups, rows)

    def _set_pairs(self, s: Session, port: Port, pairs: list[dict], *,
                   creating: bool = False) -> None:
        if pairs and not port.port_security_enabled:
            raise AddressPairAndPortSecurityRequired()
        if len(pairs) > MAX_ADDRESS_PAIRS:
            raise AllowedAddressPairExhausted(quota=MAX_ADDRESS_PAIRS)
        seen = set()
        rows = []
        for position, pair in enumerate(pairs):
            ip = _pair_address(pair["ip_address"])
            mac = ipam.normalize_mac(pair["mac_address"]) if pair.get("mac_address") \
                else port.mac_address
            if (mac, ip) in seen:
                raise DuplicateAddressPairInRequest(mac_address=mac, ip_address=ip)
            seen.add((mac, ip))
            rows.append(AllowedAddressPair(port_id=port.id, mac_address=mac, ip_address=ip,
                                           position=position))
        own = {(port.mac_address, a.ip_address) for a in port.fixed_ips}
        if seen & own:
            raise AddressPairMatchesPortFixedIPAndMac()
        if creating:
            port.address_pairs = rows
        else:
            replace(s, port.address_pairs, rows)

    # -- updating ------------------------------------------------------------------------

    def update(self, ctx: Context, port_id: str, values: dict) -> tuple[dict, Changes]:
        changes = Changes()

        def write(s: Session) -> dict:
            port = self.core.get_port(s, ctx, port_id)
            self.change(s, ctx, port, values, changes)
            return self.render(s, ctx, [port])[0]
        return self.core.transaction(write), changes

    def _check_update(self, ctx: Context, target: dict, values: dict) -> None:
        ctx.enforce("update_port", target)
        if "device_owner" in values:
            ctx.enforce("update_port:device_owner",
                        {**target, "device_owner": values["device_owner"]})
        if "mac_address" in values:
            ctx.enforce("update_port:mac_address", target)
        for request in values.get("fixed_ips") or []:
            if request.get("ip_address"):
                ctx.enforce("update_port:fixed_ips:ip_address", target)
            elif request.get("subnet_id"):
                ctx.enforce("update_port:fixed_ips:subnet_id", target)
        if "port_security_enabled" in values:
            ctx.enforce("update_port:port_security_enabled", target)
        if "binding:host_id" in values or "binding:profile" in values:
            ctx.enforce("update_port:binding", target)
        if "allowed_address_pairs" in values:
            ctx.enforce("update_port:allowed_address_pairs", target)

    def change(self, s: Session, ctx: Context, port: Port, values: dict,
               changes: Changes) -> None:
        """Apply an API update to ``port`` (policy checked here)."""
        self._check_update(ctx, self.core.port_target(s, ctx, port), values)
        readdressed = bool({"fixed_ips", "allowed_address_pairs", "security_groups",
                            "port_security_enabled"} & set(values))
        if readdressed:
            changes.members.update(port.security_group_ids)
        old_host = port.binding_host_id
        for name in ("name", "description", "admin_state_up", "device_id", "device_owner"):
            if name in values:
                setattr(port, name, values[name])
        if "mac_address" in values:
            mac = ipam.normalize_mac(values["mac_address"])
            if mac != port.mac_address:
                if port.binding_host_id:
                    raise InvalidInput(error_message="Cannot change the MAC address of a "
                                                     "bound port")
                port.mac_address = self._mac(s, s.get(Network, port.network_id), mac)
        if "port_security_enabled" in values:
            enabled = values["port_security_enabled"]
            groups = values.get("security_groups", port.security_group_ids)
            pairs = values.get("allowed_address_pairs", port.address_pairs)
            if not enabled and groups:
                raise PortSecurityPortHasSecurityGroup()
            if not enabled and pairs:
                raise AddressPairAndPortSecurityRequired()
            port.port_security_enabled = enabled
        if "security_groups" in values:
            self._set_groups(s, ctx, port, values["security_groups"], creating=False)
        if "fixed_ips" in values:
            self._readdress(s, port, values["fixed_ips"], changes)
        if "allowed_address_pairs" in values:
            self._set_pairs(s, port, values["allowed_address_pairs"])
        if "binding:profile" in values:
            port.binding_profile = values["binding:profile"]
        if "binding:host_id" in values and values["binding:host_id"] != old_host:
            if old_host:
                changes.gone_ports[port.id] = (old_host, port.network_id)
            port.binding_host_id = values["binding:host_id"]
            port.status = "DOWN"
        port.touch()
        try:
            s.flush()
        except IntegrityError:
            raise Retry() from None
        changes.port(port, addresses=readdressed)
        self._note_routers(s, port, changes)

    def _readdress(self, s: Session, port: Port, requests: list[dict],
                   changes: Changes) -> None:
        current = {(a.subnet_id, a.ip_address): a for a in port.fixed_ips}
        by_ip = {a.ip_address: a for a in port.fixed_ips}
        keep, new = [], []
        for request in requests:
            ip, subnet_id = request.get("ip_address"), request.get("subnet_id")
            found = current.get((subnet_id, ip)) if subnet_id else by_ip.get(ip or "")
            if ip and found is not None:
                keep.append(found)
            else:
                new.append(request)
        for allocation_row in [a for a in port.fixed_ips if a not in keep]:
            self._unfloat(s, port, allocation_row.ip_address, changes)
            port.fixed_ips.remove(allocation_row)
        s.flush()
        allocation.allocate(s, s.get(Network, port.network_id), port, new)
        for position, row in enumerate(port.fixed_ips):
            row.position = position

    def _unfloat(self, s: Session, port: Port, address: str | None, changes: Changes) -> None:
        """Disassociate the floating IPs on ``port`` (on one of its addresses, if given)."""
        query = sa.select(FloatingIp).where(FloatingIp.fixed_port_id == port.id)
        if address is not None:
            query = query.where(FloatingIp.fixed_ip_address == address)
        for fip in s.scalars(query):
            changes.device(port)
            if fip.router_id:
                changes.routers.add(fip.router_id)
            fip.fixed_port_id = fip.fixed_ip_address = fip.router_id = None
            fip.status = "DOWN"
            fip.touch()

    @staticmethod
    def _note_routers(s: Session, port: Port, changes: Changes) -> None:
        changes.routers.update(s.scalars(sa.select(RouterPort.router_id).where(
            RouterPort.port_id == port.id)))
        changes.routers.update(r for r in s.scalars(sa.select(FloatingIp.router_id).where(
            FloatingIp.fixed_port_id == port.id)) if r)

    # -- deleting ------------------------------------------------------------------------

    def delete(self, ctx: Context, port_id: str) -> Changes:
        changes = Changes()

        def write(s: Session) -> None:
            port = self.core.get_port(s, ctx, port_id)
            ctx.enforce("delete_port", self.core.port_target(s, ctx, port))
            if port.device_owner in L3_OWNERS:
                raise L3PortInUse(port_id=port.id, device_owner=port.device_owner)
            network = s.get(Network, port.network_id)
            dhcp = port.device_owner == DHCP_OWNER
            self.remove(s, port, changes)
            if dhcp:
                s.flush()
                self.sync_dhcp_port(s, network, changes)
        self.core.transaction(write)
        return changes

    def remove(self, s: Session, port: Port, changes: Changes) -> None:
        """Delete ``port`` for good (no checks): its floating IPs let go, a tombstone noted."""
        self._unfloat(s, port, None, changes)
        self._note_routers(s, port, changes)
        changes.gone(port)
        changes.ports.discard(port.id)
        self.core.drop_tags(s, "ports", port.id)
        s.delete(port)

    # -- the DHCP port ------------------------------------------------------------------

    def sync_dhcp_port(self, s: Session, network: Network, changes: Changes) -> None:
        """Give ``network`` a DHCP port with an address on every DHCP-enabled subnet."""
        wanted = [x for x in allocation.subnets_of(s, network.id) if x.enable_dhcp]
        port = s.scalar(sa.select(Port).where(Port.network_id == network.id,
                                              Port.device_owner == DHCP_OWNER).limit(1))
        if not wanted:
            if port is not None:
                self.remove(s, port, changes)
            return
        if port is None:
            values = {"project_id": network.project_id, "device_owner": DHCP_OWNER,
                      "device_id": f"dhcp-{network.id}", "port_security_enabled": False,
                      "binding:host_id": self.core.network_node(s),
                      "fixed_ips": [{"subnet_id": x.id} for x in wanted]}
            self.make(s, Context.system(), network, values, changes, internal=True)
            return
        have = {a.subnet_id for a in port.fixed_ips}
        wanted_ids = {x.id for x in wanted}
        stale = [a for a in port.fixed_ips if a.subnet_id not in wanted_ids]
        missing = [{"subnet_id": x.id} for x in wanted if x.id not in have]
        if not stale and not missing:
            return
        for row in stale:
            port.fixed_ips.remove(row)
        s.flush()
        if missing:
            allocation.allocate(s, network, port, missing)
        port.touch()
        changes.port(port)

    # -- agents' reports ------------------------------------------------------------------

    def report(self, port_id: str, host: str, status: str,
               hold: Callable[[Session, Port], bool] | None = None) -> str | None:
        """An L2 agent wired (or lost) a port on ``host``: record its status. ``hold(s,
        port)`` true keeps an ``ACTIVE`` from being recorded (another provisioning block,
        DHCP, is still open; ``agent_server.py``). The status recorded, or None."""
        def write(s: Session) -> str | None:
            # Every member of a group reports each revision it is recast with (a member
            # joined): a report that changes nothing costs one narrow query, not a port.
            seen = s.execute(sa.select(Port.status, Port.binding_host_id).where(
                Port.id == port_id)).first()
            if seen is None or seen.binding_host_id != host:
                return None
            if seen.status == status:
                return status
            port = s.get(Port, port_id)
            if port is None or port.binding_host_id != host:
                return None
            if status == "ACTIVE" and hold is not None and hold(s, port):
                return None
            if port.status != status:
                port.status = status
                port.touch()
            return status
        return self.core.transaction(write)

    def activate(self, wired: dict[str, str]) -> list[str]:
        """Ports (id -> the host whose L2 agent wired them) whose last provisioning block
        closed: ACTIVE, if still bound there. The ids made ACTIVE."""
        def write(s: Session) -> list[str]:
            done = []
            for port_id, host in sorted(wired.items()):
                port = s.get(Port, port_id)
                if port is None or port.binding_host_id != host:
                    continue
                if port.status != "ACTIVE":
                    port.status = "ACTIVE"
                    port.touch()
                done.append(port_id)
            return done
        return self.core.transaction(write)
