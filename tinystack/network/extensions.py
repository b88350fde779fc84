"""The API extensions this network service implements, as ``/v2.0/extensions`` lists them.

Only what works is listed: clients (openstacksdk's ``find_extension``, the
``openstack`` CLI's availability zone and router commands) decide what to
send from this list, so an extension named here must behave as Neutron's.
Names, aliases and descriptions are Neutron's.
"""

from __future__ import annotations

__all__ = ["EXTENSIONS", "extension_view"]

_UPDATED = "2017-01-01T10:00:00-00:00"

EXTENSIONS: tuple[tuple[str, str, str], ...] = (
    ("agent", "agent", "The agent management extension."),
    ("allowed-address-pairs", "Allowed Address Pairs", "Provides allowed address pairs"),
    ("availability_zone", "Availability Zone", "The availability zone extension."),
    ("binding", "Port Binding",
     "Expose port bindings of a virtual port to external application"),
    ("external-net", "Neutron external network",
     "Adds external network attribute to network resource."),
    ("ext-gw-mode", "Neutron L3 Configurable external gateway mode",
     "Extension of the router abstraction for specifying whether SNAT should occur on the "
     "external gateway"),
    ("extraroute", "Neutron Extra Route", "Extra routes configuration for L3 router"),
    ("extraroute-atomic", "Atomically add/remove extra routes",
     "Edit extra routes of a router on server side by atomically adding/removing extra "
     "routes"),
    ("fip-port-details", "Floating IP Port Details Extension",
     "Add port_details attribute to Floating IP resource"),
    ("ip-substring-filtering", "IP address substring filtering",
     "Provides IP address substring filtering when listing ports"),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource."),
    ("net-mtu-writable", "Network MTU (writable)",
     "Provides a writable MTU attribute for a network resource."),
    ("network_availability_zone", "Network Availability Zone",
     "Availability zone support for network."),
    ("pagination", "Pagination support",
     "Extension that indicates that pagination is enabled."),
    ("port-security", "Port Security", "Provides port security"),
    ("project-id", "project_id field enabled",
     "Extension that indicates that project_id field is enabled."),
    ("provider", "Provider Network",
     "Expose mapping of virtual networks to physical networks"),
    ("quota_details", "Quota details management support",
     "Expose functions for quotas usage statistics per project"),
    ("quotas", "Quota management support",
     "Expose functions for quotas management per tenant"),
    ("rbac-policies", "RBAC Policies",
     "Allows creation and modification of policies that control tenant access to "
     "resources."),
    ("router", "Neutron L3 Router",
     "Router abstraction for basic L3 forwarding between L2 Neutron networks and access to "
     "external networks via a NAT gateway."),
    ("router_availability_zone", "Router Availability Zone",
     "Availability zone support for router."),
    ("security-group", "security-group", "The security groups extension."),
    ("sorting", "Sorting support", "Extension that indicates that sorting is enabled."),
    ("standard-attr-description", "standard-attr-description",
     "Extension to add descriptions to standard attributes"),
    ("standard-attr-revisions", "Resource revision numbers",
     "This extension will display the revision number of neutron resources."),
    ("standard-attr-tag", "Tag support for resources with standard attribute: subnet, "
     "router, network, port, security_group, floatingip",
     "Enables to set tag on resources with standard attribute."),
    ("standard-attr-timestamp", "Resource timestamps",
     "Adds created_at and updated_at fields to all Neutron resources that have Neutron "
     "standard attributes."),
)


def extension_view(alias: str, name: str, description: str) -> dict:
    return {"alias": alias, "name": name, "description": description, "updated": _UPDATED,
            "links": []}
