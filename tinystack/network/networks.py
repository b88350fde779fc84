"""Networks: create with a segment, share, make external, update, delete.

A tenant network gets a VXLAN segment with the lowest free VNI of the
configured range (MTU 50 below the physical network's); an admin may ask for
a ``flat`` network on a configured physical network (full MTU), or a given
VNI. ``segment_key`` makes a taken VNI or physical network a database
conflict, retried (automatic VNI) or reported (``TunnelIdInUse``,
``FlatNetworkInUse``). ``shared`` and ``router:external`` are RBAC entries
for ``*``, as in Neutron. Deleting a network takes its subnets and DHCP port
with it and refuses while other ports remain (``NetworkInUse``).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tinystack.network import ipam
from tinystack.network.errors import (
    ExternalNetworkInUse,
    FlatNetworkInUse,
    InvalidInput,
    InvalidSharedSetting,
    NetworkInUse,
    NoNetworkAvailable,
    TunnelIdInUse,
)
from tinystack.network.models import Network, NetworkRbac, Port, Subnet
from tinystack.network.service import (
    DHCP_OWNER,
    ROUTER_GATEWAY_OWNER,
    FLOATINGIP_OWNER,
    Changes,
    Context,
    NetworkCore,
    Retry,
    new_uuid,
)
from tinystack.network.views import network_view

__all__ = ["Networks", "visible_networks", "VXLAN_OVERHEAD", "NETWORK_TYPES"]

VXLAN_OVERHEAD = 50
NETWORK_TYPES = ("vxlan", "flat", "local")
PROVIDER = ("provider:network_type", "provider:physical_network", "provider:segmentation_id")


def visible_networks(ctx: Context):
    """The SQL condition for networks ``ctx`` may see (None: all of them)."""
    if ctx.admin or ctx.service:
        return None
    granted = sa.select(NetworkRbac.object_id).where(
        NetworkRbac.object_id == Network.id,
        NetworkRbac.target_project.in_(["*", ctx.project_id or "*"])).exists()
    return sa.or_(Network.project_id == (ctx.project_id or ""), granted)


class Networks:
    def __init__(self, core: NetworkCore):
        self.core = core

    # -- reading -------------------------------------------------------------------------

    def render(self, s: Session, ctx: Context, networks: list[Network]) -> list[dict]:
        tags = self.core.tags_of(s, "networks", [n.id for n in networks])
        zones = self.core.zones(s, "DHCP agent")
        return [network_view(self.core, ctx, n, tags[n.id], zones) for n in networks]

    def list(self, ctx: Context, hints: dict[str, list[str]]) -> list[dict]:
        def read(s: Session) -> list[dict]:
            query = sa.select(Network).order_by(Network.created_at, Network.id)
            shown = visible_networks(ctx)
            if shown is not None:
                query = query.where(shown)
            if hints.get("id"):
                query = query.where(Network.id.in_(hints["id"]))
            if hints.get("project_id"):
                query = query.where(Network.project_id.in_(hints["project_id"]))
            return self.render(s, ctx, list(s.scalars(query)))
        return self.core.transaction(read)

    def show(self, ctx: Context, network_id: str) -> dict:
        def read(s: Session) -> dict:
            return self.render(s, ctx, [self.core.get_network(s, ctx, network_id)])[0]
        return self.core.transaction(read)

    # -- creating ------------------------------------------------------------------------

    def create(self, ctx: Context, values: dict) -> tuple[dict, Changes]:
        return self.core.transaction(self._create, ctx, values), Changes()

    def _create(self, s: Session, ctx: Context, values: dict) -> dict:
        owner = ctx.owner_for(values)
        target = {"project_id": owner, "network_project_id": owner}
        ctx.enforce("create_network", target)
        if values.get("shared"):
            ctx.enforce("create_network:shared", target)
        if values.get("router:external"):
            ctx.enforce("create_network:router:external", target)
        if any(name in values for name in PROVIDER):
            ctx.enforce("create_network:provider", target)
        self.core.check_quota(s, owner, "network")
        network = Network(
            id=new_uuid(), project_id=owner, name=values.get("name", ""),
            description=values.get("description", ""),
            admin_state_up=values.get("admin_state_up", True),
            port_security_enabled=values.get("port_security_enabled", True),
            external=bool(values.get("router:external")),
            availability_zone_hints=values.get("availability_zone_hints", []),
            created_at=self.core.clock(), updated_at=self.core.clock(), revision_number=1,
            **self._segment(s, values))
        network.mtu = self._mtu(network, values.get("mtu"))
        if values.get("shared"):
            network.rbac.append(self._entry(network, owner, "access_as_shared"))
        if network.external:
            network.rbac.append(self._entry(network, owner, "access_as_external"))
        s.add(network)
        try:
            s.flush()
        except IntegrityError:
            raise Retry() from None
        return self.render(s, ctx, [network])[0]

    @staticmethod
    def _entry(network: Network, owner: str, action: str) -> NetworkRbac:
        return NetworkRbac(id=new_uuid(), project_id=owner, object_type="network",
                           object_id=network.id, action=action, target_project="*")

    def _segment(self, s: Session, values: dict) -> dict:
        """The segment columns of a new network, a free VNI chosen when none was asked for."""
        kind = values.get("provider:network_type")
        physnet = values.get("provider:physical_network")
        seg_id = values.get("provider:segmentation_id")
        if kind is None:
            if physnet is not None or seg_id is not None:
                raise InvalidInput(error_message="provider:network_type required")
            kind = "vxlan"
        if kind not in NETWORK_TYPES:
            raise InvalidInput(error_message=f"network_type value '{kind}' not supported")
        if kind == "flat":
            if seg_id is not None:
                raise InvalidInput(error_message="segmentation_id specified for flat provider "
                                                 "network")
            if not physnet:
                raise InvalidInput(error_message="physical_network required for flat provider "
                                                 "network")
            if physnet not in self.core.conf.physical_networks:
                raise InvalidInput(error_message=f"physical_network '{physnet}' unknown for "
                                                 "flat provider network")
            key = f"flat:{physnet}"
            if s.scalar(sa.select(Network.id).where(Network.segment_key == key)):
                raise FlatNetworkInUse(physical_network=physnet)
            return {"network_type": "flat", "physical_network": physnet,
                    "segmentation_id": None, "segment_key": key}
        if physnet is not None:
            raise InvalidInput(error_message=f"provider:physical_network specified for {kind} "
                                             "network")
        if kind == "local":
            if seg_id is not None:
                raise InvalidInput(error_message="segmentation_id specified for local network")
            return {"network_type": "local", "physical_network": None, "segmentation_id": None,
                    "segment_key": None}
        return {"network_type": "vxlan", "physical_network": None,
                **self._vni(s, seg_id)}

    def _vni(self, s: Session, requested: int | None) -> dict:
        used = set(s.scalars(sa.select(Network.segmentation_id).where(
            Network.network_type == "vxlan")))
        if requested is not None:
            if not 1 <= requested <= 2 ** 24 - 1:
                raise InvalidInput(error_message=f"{requested} is not a valid VXLAN VNI, "
                                                 "valid VNIs are 1 to 16777215")
            if requested in used:
                raise TunnelIdInUse(tunnel_id=requested)
            vni = requested
        else:
            low, high = self.core.conf.vni_range
            vni = ipam.lowest_free(low, high, used)
            if vni is None:
                raise NoNetworkAvailable()
        return {"segmentation_id": vni, "segment_key": f"vxlan:{vni}"}

    def _mtu(self, network: Network, requested: int | None) -> int:
        largest = self.core.conf.global_physnet_mtu
        if network.network_type == "vxlan":
            largest -= VXLAN_OVERHEAD
        if requested is None:
            return largest
        if requested > largest:
            raise InvalidInput(error_message=f"Requested MTU is too big, maximum is {largest}")
        return requested

    # -- updating ------------------------------------------------------------------------

    def update(self, ctx: Context, network_id: str, values: dict) -> tuple[dict, Changes]:
        changes = Changes()
        view = self.core.transaction(self._update, ctx, network_id, values, changes)
        return view, changes

    def _update(self, s: Session, ctx: Context, network_id: str, values: dict,
                changes: Changes) -> dict:
        network = self.core.get_network(s, ctx, network_id, for_update=True)
        target = self.core.network_target(ctx, network)
        ctx.enforce("update_network", target)
        for name in ("shared", "router:external"):
            if name in values:
                ctx.enforce(f"update_network:{name}", target)
        if "shared" in values:
            self._set_shared(s, network, values["shared"])
        if "router:external" in values and values["router:external"] != network.external:
            self._set_external(s, network, values["router:external"])
        for name in ("name", "description", "admin_state_up", "port_security_enabled"):
            if name in values:
                setattr(network, name, values[name])
        if "mtu" in values:
            network.mtu = self._mtu(network, values["mtu"])
        if {"admin_state_up", "mtu"} & set(values):
            changes.networks.add(network.id)
            changes.ports.update(s.scalars(sa.select(Port.id).where(
                Port.network_id == network.id)))
        network.touch()
        s.flush()
        return self.render(s, ctx, [network])[0]

    def _set_shared(self, s: Session, network: Network, shared: bool) -> None:
        wildcard = [e for e in network.rbac if e.action == "access_as_shared"
                    and e.target_project == "*"]
        if shared and not wildcard:
            network.rbac.append(self._entry(network, network.project_id, "access_as_shared"))
        elif not shared and wildcard:
            others = set(s.scalars(sa.select(Port.project_id).where(
                Port.network_id == network.id, Port.project_id != network.project_id,
                Port.project_id != "")))
            still = {e.target_project for e in network.rbac
                     if e.action == "access_as_shared" and e.target_project != "*"}
            if others - still:
                raise InvalidSharedSetting(network=network.name or network.id)
            for entry in wildcard:
                network.rbac.remove(entry)

    def _set_external(self, s: Session, network: Network, external: bool) -> None:
        if not external:
            in_use = s.scalar(sa.select(Port.id).where(
                Port.network_id == network.id,
                Port.device_owner.in_([ROUTER_GATEWAY_OWNER, FLOATINGIP_OWNER])).limit(1))
            if in_use:
                raise ExternalNetworkInUse(net_id=network.id)
            for entry in [e for e in network.rbac if e.action == "access_as_external"]:
                network.rbac.remove(entry)
        else:
            network.rbac.append(self._entry(network, network.project_id, "access_as_external"))
        network.external = external

    # -- deleting ------------------------------------------------------------------------

    def delete(self, ctx: Context, network_id: str) -> Changes:
        changes = Changes()
        self.core.transaction(self._delete, ctx, network_id, changes)
        return changes

    def _delete(self, s: Session, ctx: Context, network_id: str, changes: Changes) -> None:
        network = self.core.get_network(s, ctx, network_id, for_update=True)
        ctx.enforce("delete_network", self.core.network_target(ctx, network))
        ports = list(s.scalars(sa.select(Port).where(Port.network_id == network.id)))
        if any(p.device_owner != DHCP_OWNER for p in ports):
            raise NetworkInUse(net_id=network.id)
        for port in ports:
            changes.gone(port)
            self.core.drop_tags(s, "ports", port.id)
            s.delete(port)
        s.flush()
        for subnet in s.scalars(sa.select(Subnet).where(Subnet.network_id == network.id)):
            self.core.drop_tags(s, "subnets", subnet.id)
            s.delete(subnet)
        s.flush()
        self.core.drop_tags(s, "networks", network.id)
        s.delete(network)
        changes.networks.discard(network.id)
        changes.gone_networks.add(network.id)
