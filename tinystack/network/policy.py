"""Who may do what in the network API: Neutron's default (secure RBAC) rules in one table.

Roles imply each other (admin -> member -> reader), so ``project_reader``
admits the project's members and admins too; ``admin`` on any project is the
cloud administrator. A rule's target is the resource as stored:
``project_id`` its owner, ``network_project_id`` the owner of the network a
subnet or port is on, and ``device_owner`` for ports.

Attribute rules (``create_network:shared``, ``get_port:binding``...) guard
single attributes: the services check them for each attribute a request
sets, and the views drop attributes a caller may not read. ``role:service``
stands for the compute service creating and binding ports for its servers,
as Nova does with its service user; it sees every network and port.

Who may *see* a resource (its owner, a shared or external network, a port
on one's network) is decided by the service while it reads: a hidden
resource is a 404, never a 403. ``enforce`` raises ``PolicyNotAuthorized``
with Neutron's wording.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tinystack.common.policy import Credentials, Policy
from tinystack.network.errors import PolicyNotAuthorized

__all__ = ["POLICY", "policy", "enforce", "allowed", "is_admin", "NETWORK_DEVICE_PREFIX"]

NETWORK_DEVICE_PREFIX = "network:"

ADMIN = "admin"
MEMBER = "admin or project_member"
READER = "admin or project_reader"
NET_OWNER = "admin or net_owner_member"
SERVICE = "admin or role:service"

POLICY = {
    "create_network": MEMBER,
    "create_network:shared": ADMIN,
    "create_network:router:external": ADMIN,
    "create_network:provider": ADMIN,
    "get_network": f"{READER} or shared_or_external",
    "get_network:provider": ADMIN,
    "update_network": MEMBER,
    "update_network:shared": ADMIN,
    "update_network:router:external": ADMIN,
    "update_network:provider": ADMIN,
    "delete_network": MEMBER,

    "create_subnet": NET_OWNER,
    "get_subnet": f"{READER} or shared_or_external",
    "update_subnet": NET_OWNER,
    "delete_subnet": NET_OWNER,

    "create_port": f"{MEMBER} or role:service",
    "create_port:device_owner": "admin or net_owner_member or ordinary_device_owner",
    "create_port:network": f"{NET_OWNER} or shared or role:service",
    "create_port:mac_address": NET_OWNER,
    "create_port:fixed_ips:ip_address": f"{NET_OWNER} or role:service",
    "create_port:fixed_ips:subnet_id": f"{NET_OWNER} or shared or role:service",
    "create_port:port_security_enabled": NET_OWNER,
    "create_port:binding": SERVICE,
    "create_port:allowed_address_pairs": NET_OWNER,
    "get_port": f"{READER} or net_owner_reader or role:service",
    "get_port:binding": SERVICE,
    "update_port": f"{MEMBER} or net_owner_member or role:service",
    "update_port:device_owner": "admin or net_owner_member or ordinary_device_owner",
    "update_port:mac_address": ADMIN,
    "update_port:fixed_ips:ip_address": NET_OWNER,
    "update_port:fixed_ips:subnet_id": f"{NET_OWNER} or shared",
    "update_port:port_security_enabled": NET_OWNER,
    "update_port:binding": SERVICE,
    "update_port:allowed_address_pairs": NET_OWNER,
    "delete_port": f"{MEMBER} or net_owner_member or role:service",

    "create_router": MEMBER,
    "create_router:external_gateway_info:enable_snat": ADMIN,
    "create_router:external_gateway_info:external_fixed_ips": ADMIN,
    "get_router": READER,
    "update_router": MEMBER,
    "update_router:external_gateway_info:enable_snat": ADMIN,
    "update_router:external_gateway_info:external_fixed_ips": ADMIN,
    "delete_router": MEMBER,
    "add_router_interface": MEMBER,
    "remove_router_interface": MEMBER,
    "add_extraroutes": MEMBER,
    "remove_extraroutes": MEMBER,

    "create_floatingip": MEMBER,
    "create_floatingip:floating_ip_address": ADMIN,
    "get_floatingip": f"{READER} or role:service",
    "update_floatingip": MEMBER,
    "delete_floatingip": MEMBER,

    "create_security_group": MEMBER,
    "get_security_group": READER,
    "update_security_group": MEMBER,
    "delete_security_group": MEMBER,
    "create_security_group_rule": MEMBER,
    "get_security_group_rule": f"{READER} or sg_owner_reader",
    "delete_security_group_rule": MEMBER,

    "get_quota": READER,
    "update_quota": ADMIN,
    "delete_quota": ADMIN,

    "get_agent": ADMIN,
    "update_agent": ADMIN,
    "delete_agent": ADMIN,
    "get_availability_zone": "any",

    "create_rbac_policy": MEMBER,
    "create_rbac_policy:target_tenant": "admin or not_wildcard",
    "get_rbac_policy": READER,
    "update_rbac_policy": MEMBER,
    "update_rbac_policy:target_tenant": "admin or not_wildcard",
    "delete_rbac_policy": MEMBER,

    "get_tags": f"{READER} or shared_or_external",
    "update_tags": MEMBER,
}


def _net_owner(role: str):
    def check(c: Credentials, t: Mapping[str, Any]) -> bool:
        return (c.project_id is not None and role in c.roles
                and t.get("network_project_id") == c.project_id)
    return check


policy = Policy(POLICY, extra_checks={
    "net_owner_member": _net_owner("member"),
    "net_owner_reader": _net_owner("reader"),
    "sg_owner_reader": lambda c, t: (
        c.project_id is not None and "reader" in c.roles
        and t.get("security_group_project_id") == c.project_id),
    "shared_or_external": lambda c, t: bool(t.get("shared") or t.get("external")),
    "shared": lambda c, t: bool(t.get("shared")),
    "ordinary_device_owner": lambda c, t: not str(t.get("device_owner") or "").startswith(
        NETWORK_DEVICE_PREFIX),
    "not_wildcard": lambda c, t: t.get("target_tenant") != "*",
})


def is_admin(creds: Credentials) -> bool:
    return "admin" in creds.roles


def allowed(action: str, creds: Credentials, target: Mapping | None = None) -> bool:
    return policy.allowed(action, creds, target)


def enforce(action: str, creds: Credentials, target: Mapping | None = None) -> None:
    if not policy.allowed(action, creds, target):
        raise PolicyNotAuthorized(action)
