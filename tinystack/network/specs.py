"""The desired state each agent is told, built fresh from the database (``messages.py`` shapes).

- ``port_spec``: one port as its host's L2 agent wires it: MAC, addresses
  with their subnet's CIDR and gateway, the network's segment and VXLAN
  peers, anti-spoofing pairs, and its security groups' rules *resolved*: a
  rule naming a remote group becomes that group's members' addresses (a
  remote group with no members matches nothing, so such a rule is left
  out; an empty ``remote_ip_prefixes`` would mean "any"). Ports the network
  itself owns (DHCP, router) are not filtered.
- ``network_spec``: a network's segment as one host sees it, with the data
  addresses of the *other* hosts that have ports on it (static VXLAN flood
  entries, as l2population does).
- ``dhcp_spec``: a network's subnets and every address on them for the
  network node's DHCP agent; ``deleted`` when it needs no DHCP (any more).
- ``router_spec``: a router's gateway, interfaces, routes and floating IPs
  for the network node's L3 agent.

Every spec is stamped with ``NetworkCore.next_revision()`` *before* its rows
are read, so of two specs for one resource the later-stamped one never holds
older data. ``agent_state`` is everything one agent should have, for an agent
that (re)starts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tinystack.network import messages as m
from tinystack.network.models import (
    Agent,
    FloatingIp,
    Network,
    Port,
    PortSecurityGroup,
    Router,
    SecurityGroup,
    Subnet,
)
from tinystack.network.policy import NETWORK_DEVICE_PREFIX
from tinystack.network.routers import router_subnets
from tinystack.network.service import DHCP_OWNER, ROUTER_GATEWAY_OWNER, NetworkCore

__all__ = ["SpecBuilder", "L2_AGENT", "DHCP_AGENT", "L3_AGENT", "METADATA_AGENT"]

L2_AGENT = "Linux bridge agent"
DHCP_AGENT = "DHCP agent"
L3_AGENT = "L3 agent"
METADATA_AGENT = "Metadata agent"


def _hostname(address: str) -> str:
    return "host-" + address.replace(".", "-").replace(":", "-")


class SpecBuilder:
    """Builds specs inside one read transaction; caches what several specs share."""

    def __init__(self, core: NetworkCore, s: Session):
        self.core, self.s = core, s
        self._data_ips: dict[str, str] | None = None
        self._members: dict[str, dict[int, list[str]]] = {}
        self._networks: dict[tuple[str, str], m.NetworkSpec] = {}
        self._node: str | None = None
        self._rows: dict[tuple[type, str], object] = {}

    def row(self, model: type, row_id: str):
        """``session.get`` that keeps what it read (the identity map holds rows weakly)."""
        key = (model, row_id)
        if key not in self._rows:
            self._rows[key] = self.s.get(model, row_id)
        return self._rows[key]

    # -- shared facts ---------------------------------------------------------------------

    @property
    def network_node(self) -> str:
        if self._node is None:
            self._node = self.core.network_node(self.s)
        return self._node

    def data_ips(self) -> dict[str, str]:
        """Each host's data-network address, from its agents' reports (L2 agent first)."""
        if self._data_ips is None:
            found: dict[str, str] = {}
            for agent in self.s.scalars(sa.select(Agent).order_by(Agent.heartbeat_timestamp)):
                if agent.data_ip and (agent.agent_type == L2_AGENT or agent.host not in found):
                    found[agent.host] = agent.data_ip
            self._data_ips = found
        return self._data_ips

    def hosts_of(self, network_id: str) -> set[str]:
        return set(self.s.scalars(sa.select(Port.binding_host_id).where(
            Port.network_id == network_id, Port.binding_host_id != "").distinct()))

    @staticmethod
    def segment(network: Network) -> m.Segment:
        return m.Segment(network_type=network.network_type,
                         segmentation_id=network.segmentation_id,
                         physical_network=network.physical_network, mtu=network.mtu)

    # -- networks -------------------------------------------------------------------------

    def network_spec(self, network: Network, host: str) -> m.NetworkSpec:
        key = (network.id, host)
        if key not in self._networks:
            revision = self.core.next_revision()
            ips = self.data_ips()
            own = ips.get(host)
            peers = sorted({ips[h] for h in self.hosts_of(network.id)
                            if h != host and h in ips and ips[h] != own})
            self._networks[key] = m.NetworkSpec(id=network.id, revision=revision,
                                                segment=self.segment(network),
                                                vxlan_peers=peers)
        return self._networks[key]

    def network_tombstone(self, network_id: str) -> m.NetworkSpec:
        return m.NetworkSpec(id=network_id, revision=self.core.next_revision(),
                             segment=m.Segment(), deleted=True)

    # -- ports ----------------------------------------------------------------------------

    def port_spec(self, port: Port, revision: int | None = None) -> m.PortSpec:
        revision = revision or self.core.next_revision()
        network = self.row(Network, port.network_id)
        fixed_ips = []
        for address in port.fixed_ips:
            subnet = self.row(Subnet, address.subnet_id)
            fixed_ips.append({"subnet_id": subnet.id, "ip_address": address.ip_address,
                              "cidr": subnet.cidr, "gateway_ip": subnet.gateway_ip})
        trusted = port.device_owner.startswith(NETWORK_DEVICE_PREFIX)
        secured = port.port_security_enabled and not trusted
        return m.PortSpec(
            id=port.id, revision=revision, network=self.network_spec(network,
                                                                     port.binding_host_id),
            mac=port.mac_address, fixed_ips=fixed_ips, device=m.tap_name(port.id),
            device_owner=port.device_owner,
            admin_state_up=port.admin_state_up and network.admin_state_up,
            port_security_enabled=secured,
            allowed_address_pairs=[{"ip_address": p.ip_address, "mac_address": p.mac_address}
                                   for p in port.address_pairs] if secured else [],
            security_rules=self.security_rules(port) if secured else [],
            device_id=port.device_id, host=port.binding_host_id)

    def port_tombstone(self, port_id: str, host: str) -> m.PortSpec:
        return m.PortSpec(id=port_id, revision=self.core.next_revision(), deleted=True,
                          host=host, device=m.tap_name(port_id))

    def members(self, group_id: str, version: int) -> list[str]:
        """Every address (host prefix or pair CIDR) of one IP version of a group's ports."""
        if group_id not in self._members:
            found: dict[int, set[str]] = {4: set(), 6: set()}
            ports = self.s.scalars(sa.select(Port).join(
                PortSecurityGroup, PortSecurityGroup.port_id == Port.id).where(
                PortSecurityGroup.security_group_id == group_id))
            for port in ports:
                for text in [a.ip_address for a in port.fixed_ips] + [
                        p.ip_address for p in port.address_pairs]:
                    network = ipaddress.ip_network(text, strict=False)
                    found[network.version].add(str(network))
            self._members[group_id] = {v: sorted(found[v]) for v in found}
        return self._members[group_id][version]

    def security_rules(self, port: Port) -> list[m.SecurityRule]:
        rules: list[m.SecurityRule] = []
        for group_id in port.security_group_ids:
            group = self.row(SecurityGroup, group_id)
            for rule in group.rules if group is not None else []:
                if rule.remote_group_id:
                    version = 4 if rule.ethertype == "IPv4" else 6
                    prefixes = self.members(rule.remote_group_id, version)
                    if not prefixes:
                        continue
                elif rule.remote_ip_prefix and rule.remote_ip_prefix not in ("0.0.0.0/0",
                                                                             "::/0"):
                    prefixes = [rule.remote_ip_prefix]
                else:
                    prefixes = []
                resolved = m.SecurityRule(
                    direction=rule.direction, ethertype=rule.ethertype, protocol=rule.protocol,
                    port_range_min=rule.port_range_min, port_range_max=rule.port_range_max,
                    remote_ip_prefixes=prefixes)
                if resolved not in rules:
                    rules.append(resolved)
        return rules

    def ports_in_groups(self, group_ids: Iterable[str]) -> set[str]:
        group_ids = list(group_ids)
        if not group_ids:
            return set()
        return set(self.s.scalars(sa.select(PortSecurityGroup.port_id).where(
            PortSecurityGroup.security_group_id.in_(group_ids))))

    def groups_naming(self, group_ids: Iterable[str]) -> set[str]:
        """Groups with a rule whose remote group is one of ``group_ids``."""
        from tinystack.network.models import SecurityGroupRule

        group_ids = list(group_ids)
        if not group_ids:
            return set()
        return set(self.s.scalars(sa.select(SecurityGroupRule.security_group_id).where(
            SecurityGroupRule.remote_group_id.in_(group_ids))))

    # -- DHCP -----------------------------------------------------------------------------

    def dhcp_spec(self, network_id: str) -> m.DhcpSpec:
        revision = self.core.next_revision()
        network = self.row(Network, network_id)
        dhcp_port = None if network is None else self.s.scalar(sa.select(Port).where(
            Port.network_id == network_id, Port.device_owner == DHCP_OWNER).limit(1))
        if network is None or dhcp_port is None:
            return m.DhcpSpec(network_id=network_id, revision=revision, segment=m.Segment()
                              if network is None else self.segment(network), deleted=True)
        subnets = list(self.s.scalars(sa.select(Subnet).where(
            Subnet.network_id == network_id).order_by(Subnet.created_at, Subnet.id)))
        served = {x.id for x in subnets if x.enable_dhcp}
        hosts = []
        for port in self.s.scalars(sa.select(Port).where(Port.network_id == network_id).order_by(
                Port.created_at, Port.id)):
            if port.id == dhcp_port.id:
                continue
            for address in port.fixed_ips:
                if address.subnet_id in served:
                    hosts.append(m.DhcpHost(
                        port_id=port.id, mac=port.mac_address, ip_address=address.ip_address,
                        hostname=_hostname(address.ip_address), subnet_id=address.subnet_id,
                        device_id=port.device_id, device_owner=port.device_owner,
                        project_id=port.project_id))
        return m.DhcpSpec(
            network_id=network_id, revision=revision, segment=self.segment(network),
            dhcp_port=self.port_spec(dhcp_port, revision),
            subnets=[m.DhcpSubnet(
                id=x.id, cidr=x.cidr, ip_version=x.ip_version, gateway_ip=x.gateway_ip,
                enable_dhcp=x.enable_dhcp, dns_nameservers=[d.address for d in x.dns],
                host_routes=[{"destination": r.destination, "nexthop": r.nexthop}
                             for r in x.routes],
                allocation_pools=[{"start": p.first_ip, "end": p.last_ip} for p in x.pools])
                for x in subnets],
            hosts=hosts, dns_domain=self.core.conf.dns_domain, metadata=True)

    # -- routers --------------------------------------------------------------------------

    def router_spec(self, router_id: str) -> m.RouterSpec:
        revision = self.core.next_revision()
        router = self.s.get(Router, router_id)
        if router is None:
            return m.RouterSpec(id=router_id, revision=revision, deleted=True)
        gateway, gateway_ip, interfaces = None, None, []
        for port, address, subnet in router_subnets(self.s, router):
            network = self.row(Network, port.network_id)
            interface = m.RouterInterface(
                port_id=port.id, subnet_id=subnet.id, network_id=network.id,
                segment=self.segment(network), mac=port.mac_address,
                ip_address=address.ip_address, cidr=subnet.cidr,
                ip_version=subnet.ip_version, gateway_ip=subnet.gateway_ip,
                ipv6_ra_mode=subnet.ipv6_ra_mode, ipv6_address_mode=subnet.ipv6_address_mode)
            if port.device_owner == ROUTER_GATEWAY_OWNER:
                if gateway is None and subnet.ip_version == 4:
                    gateway, gateway_ip = interface, subnet.gateway_ip
            else:
                interfaces.append(interface)
        fips = self.s.scalars(sa.select(FloatingIp).where(
            FloatingIp.router_id == router.id, FloatingIp.fixed_ip_address.is_not(None)).order_by(
            FloatingIp.floating_ip_address))
        return m.RouterSpec(
            id=router.id, revision=revision, admin_state_up=router.admin_state_up,
            gateway=gateway, external_gateway_ip=gateway_ip, enable_snat=router.enable_snat,
            interfaces=interfaces,
            routes=[{"destination": r.destination, "nexthop": r.nexthop} for r in router.routes],
            floating_ips=[m.FloatingIpSpec(id=f.id, floating_ip_address=f.floating_ip_address,
                                           fixed_ip_address=f.fixed_ip_address) for f in fips])

    # -- a (re)starting agent -------------------------------------------------------------

    def agent_state(self, host: str, agent_type: str) -> m.AgentState:
        state = m.AgentState()
        if agent_type in (L2_AGENT, "") or agent_type not in (DHCP_AGENT, L3_AGENT,
                                                               METADATA_AGENT):
            ports = list(self.s.scalars(sa.select(Port).where(
                Port.binding_host_id == host).order_by(Port.created_at, Port.id)))
            state.ports = [self.port_spec(p) for p in ports]
            for network_id in sorted({p.network_id for p in ports}):
                state.networks.append(self.network_spec(self.row(Network, network_id), host))
        if host != self.network_node:
            return state
        if agent_type in (DHCP_AGENT, METADATA_AGENT):
            with_dhcp = self.s.scalars(sa.select(Port.network_id).where(
                Port.device_owner == DHCP_OWNER).distinct())
            state.dhcp = [self.dhcp_spec(n) for n in sorted(with_dhcp)]
        if agent_type in (L3_AGENT, METADATA_AGENT):
            state.routers = [self.router_spec(r) for r in sorted(self.s.scalars(
                sa.select(Router.id)))]
        return state
