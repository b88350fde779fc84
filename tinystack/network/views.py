"""Each resource as Neutron's JSON shows it, made from rows inside the transaction that read them.

A view is a plain dict with every attribute the caller may read: attributes
only admins (or the compute service) may read, such as ``provider:*`` and
``binding:*``, are left out for everyone else, as Neutron's attribute
policies do. Some attributes depend on the caller (``shared`` is true for a
project a network is shared with) or on other rows (a router's gateway
addresses, a floating IP's ``port_details``), which is why the services
render while their session is open. The API layer only picks ``fields`` and
filters; it never looks into rows.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from tinystack.network import messages
from tinystack.network.models import (
    Agent,
    FloatingIp,
    Network,
    NetworkRbac,
    Port,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
)
from tinystack.network.service import Context, NetworkCore

__all__ = ["iso", "standard", "network_view", "subnet_view", "port_view", "router_view",
           "floating_ip_view", "security_group_view", "rule_view", "rbac_view", "agent_view",
           "vif_details"]


def iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def standard(row, tags: list[str] | None = None) -> dict:
    return {"description": row.description, "created_at": iso(row.created_at),
            "updated_at": iso(row.updated_at), "revision_number": row.revision_number,
            "tags": list(tags or [])}


def _owner(project_id: str) -> dict:
    return {"project_id": project_id, "tenant_id": project_id}


def network_view(core: NetworkCore, ctx: Context, network: Network, tags: list[str],
                 zones: list[str]) -> dict:
    view = {
        "id": network.id, "name": network.name, **_owner(network.project_id),
        "status": network.status, "admin_state_up": network.admin_state_up,
        "shared": core.shared_for(ctx, network), "router:external": network.external,
        "mtu": network.mtu, "port_security_enabled": network.port_security_enabled,
        "subnets": [s.id for s in network.subnets],
        "availability_zone_hints": list(network.availability_zone_hints or []),
        "availability_zones": list(zones), **standard(network, tags),
    }
    if ctx.allowed("get_network:provider", core.network_target(ctx, network)):
        view.update({"provider:network_type": network.network_type,
                     "provider:physical_network": network.physical_network,
                     "provider:segmentation_id": network.segmentation_id})
    return view


def subnet_view(subnet: Subnet, tags: list[str]) -> dict:
    return {
        "id": subnet.id, "name": subnet.name, **_owner(subnet.project_id),
        "network_id": subnet.network_id, "ip_version": subnet.ip_version,
        "cidr": subnet.cidr, "gateway_ip": subnet.gateway_ip,
        "allocation_pools": [{"start": p.first_ip, "end": p.last_ip} for p in subnet.pools],
        "dns_nameservers": [d.address for d in subnet.dns],
        "host_routes": [{"destination": r.destination, "nexthop": r.nexthop}
                        for r in subnet.routes],
        "enable_dhcp": subnet.enable_dhcp, "ipv6_ra_mode": subnet.ipv6_ra_mode,
        "ipv6_address_mode": subnet.ipv6_address_mode, "subnetpool_id": None,
        "segment_id": None, **standard(subnet, tags),
    }


def vif_details(port: Port) -> dict:
    """What compute needs to plug a bound port: its bridge and tap names."""
    if not port.binding_host_id:
        return {}
    return {"bridge_name": messages.bridge_name(port.network_id),
            "tap_name": messages.tap_name(port.id)}


def port_view(ctx: Context, port: Port, tags: list[str], target: dict) -> dict:
    view = {
        "id": port.id, "name": port.name, **_owner(port.project_id),
        "network_id": port.network_id, "mac_address": port.mac_address,
        "admin_state_up": port.admin_state_up, "status": port.status,
        "device_id": port.device_id, "device_owner": port.device_owner,
        "fixed_ips": [{"subnet_id": a.subnet_id, "ip_address": a.ip_address}
                      for a in port.fixed_ips],
        "allowed_address_pairs": [{"ip_address": p.ip_address, "mac_address": p.mac_address}
                                  for p in port.address_pairs],
        "security_groups": port.security_group_ids,
        "port_security_enabled": port.port_security_enabled,
        "binding:vnic_type": port.binding_vnic_type, **standard(port, tags),
    }
    if ctx.allowed("get_port:binding", target):
        view.update({"binding:host_id": port.binding_host_id,
                     "binding:profile": dict(port.binding_profile or {}),
                     "binding:vif_type": "tap" if port.binding_host_id else "unbound",
                     "binding:vif_details": vif_details(port)})
    return view


def router_view(s: Session, router: Router, tags: list[str], zones: list[str]) -> dict:
    gateway = None
    if router.gw_port_id:
        port = s.get(Port, router.gw_port_id)
        if port is not None:
            gateway = {"network_id": port.network_id, "enable_snat": router.enable_snat,
                       "external_fixed_ips": [{"subnet_id": a.subnet_id,
                                               "ip_address": a.ip_address}
                                              for a in port.fixed_ips]}
    return {
        "id": router.id, "name": router.name, **_owner(router.project_id),
        "admin_state_up": router.admin_state_up, "status": router.status,
        "external_gateway_info": gateway,
        "routes": [{"destination": r.destination, "nexthop": r.nexthop} for r in router.routes],
        "availability_zone_hints": list(router.availability_zone_hints or []),
        "availability_zones": list(zones), **standard(router, tags),
    }


def floating_ip_view(s: Session, fip: FloatingIp, tags: list[str]) -> dict:
    details = None
    if fip.fixed_port_id:
        port = s.get(Port, fip.fixed_port_id)
        if port is not None:
            details = {"name": port.name, "network_id": port.network_id,
                       "mac_address": port.mac_address, "admin_state_up": port.admin_state_up,
                       "status": port.status, "device_id": port.device_id,
                       "device_owner": port.device_owner}
    return {
        "id": fip.id, "name": fip.floating_ip_address, **_owner(fip.project_id),
        "floating_ip_address": fip.floating_ip_address,
        "floating_network_id": fip.floating_network_id, "router_id": fip.router_id,
        "port_id": fip.fixed_port_id, "fixed_ip_address": fip.fixed_ip_address,
        "status": fip.status, "port_details": details, **standard(fip, tags),
    }


def rule_view(rule: SecurityGroupRule) -> dict:
    return {
        "id": rule.id, **_owner(rule.project_id), "security_group_id": rule.security_group_id,
        "direction": rule.direction, "ethertype": rule.ethertype, "protocol": rule.protocol,
        "port_range_min": rule.port_range_min, "port_range_max": rule.port_range_max,
        "remote_ip_prefix": rule.remote_ip_prefix, "remote_group_id": rule.remote_group_id,
        **standard(rule),
    }


def security_group_view(group: SecurityGroup, tags: list[str]) -> dict:
    return {
        "id": group.id, "name": group.name, **_owner(group.project_id),
        "stateful": group.stateful,
        "security_group_rules": [rule_view(r) for r in group.rules], **standard(group, tags),
    }


def rbac_view(entry: NetworkRbac) -> dict:
    return {"id": entry.id, **_owner(entry.project_id), "object_type": entry.object_type,
            "object_id": entry.object_id, "action": entry.action,
            "target_tenant": entry.target_project}


def _stamp(value: dt.datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def agent_view(core: NetworkCore, agent: Agent) -> dict:
    return {
        "id": agent.id, "agent_type": agent.agent_type, "binary": agent.binary,
        "topic": agent.topic, "host": agent.host, "admin_state_up": agent.admin_state_up,
        "description": agent.description, "availability_zone": agent.availability_zone,
        "alive": core.alive(agent), "configurations": dict(agent.configurations or {}),
        "created_at": _stamp(agent.created_at), "started_at": _stamp(agent.started_at),
        "heartbeat_timestamp": _stamp(agent.heartbeat_timestamp), "resources_synced": None,
    }
