"""Each resource's attributes: which a request may set, their types, defaults, filters.

This is the network API's edge, as Neutron's attribute maps are: ``parse_body``
turns a POST or PUT body into a dict of checked, converted values (unknown
attributes, read-only ones and malformed values are 400s with Neutron's
wording), filling defaults on POST; ``parse_filter`` turns a query-string
value into the attribute's type for list filters. Rules that need the
database (a subnet inside its network, an address free) are the services'.

``RESOURCES`` names every collection: singular and plural keys, URL segment,
attributes. Attribute names are the API's (``binding:host_id``,
``router:external``, ``provider:network_type``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tinystack.common.errors import BadRequest
from tinystack.network.errors import invalid_attribute

__all__ = ["Attr", "Resource", "RESOURCES", "parse_body", "parse_filter", "MISSING",
           "boolean", "UUID_RE"]

MISSING = object()
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                     r"[0-9a-fA-F]{12}$")
Convert = Callable[[str, Any], Any]


# -- converters: (attribute name, value) -> value, or raise a 400 -----------------------


def boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "1", "false", "0"):
        return value.lower() in ("true", "1")
    raise invalid_attribute(name, f"'{value}' cannot be converted to boolean")


def string(max_length: int = 255) -> Convert:
    def convert(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise invalid_attribute(name, f"'{value}' is not a valid string")
        if len(value) > max_length:
            raise invalid_attribute(name, f"'{value}' exceeds maximum length of {max_length}")
        return value
    return convert


def uuid(name: str, value: Any) -> str:
    if not isinstance(value, str) or not UUID_RE.match(value):
        raise invalid_attribute(name, f"'{value}' is not a valid UUID")
    return value


def integer(low: int | None = None, high: int | None = None) -> Convert:
    def convert(name: str, value: Any) -> int:
        if isinstance(value, bool):
            raise invalid_attribute(name, f"'{value}' is not an integer")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise invalid_attribute(name, f"'{value}' is not an integer") from None
        if isinstance(value, float) and number != value:
            raise invalid_attribute(name, f"'{value}' is not an integer")
        if low is not None and number < low:
            raise invalid_attribute(name, f"'{number}' is too small - must be at least '{low}'")
        if high is not None and number > high:
            raise invalid_attribute(name, f"'{number}' is too large - must be no larger than "
                                          f"'{high}'")
        return number
    return convert


def one_of(*values: Any) -> Convert:
    def convert(name: str, value: Any) -> Any:
        if value not in values:
            raise invalid_attribute(name, f"'{value}' is not in {list(values)}")
        return value
    return convert


def nullable(inner: Convert) -> Convert:
    def convert(name: str, value: Any) -> Any:
        return None if value is None else inner(name, value)
    return convert


def list_of(inner: Convert) -> Convert:
    def convert(name: str, value: Any) -> list:
        if not isinstance(value, list):
            raise invalid_attribute(name, f"'{value}' is not a list")
        return [inner(name, item) for item in value]
    return convert


def dict_with(keys: Mapping[str, Convert], required: tuple[str, ...] = (),
              what: str = "") -> Convert:
    """A dict whose keys are among ``keys``; ``what`` names it in messages."""
    def convert(name: str, value: Any) -> dict:
        if not isinstance(value, dict):
            raise invalid_attribute(name, f"Invalid data format for {what or name}: '{value}'")
        unknown = sorted(set(value) - set(keys))
        if unknown:
            raise invalid_attribute(name, f"Unrecognized attribute(s) '{', '.join(unknown)}'")
        for key in required:
            if key not in value:
                raise invalid_attribute(name, f"Missing {key} in {what or name}: '{value}'")
        return {k: keys[k](name, v) for k, v in value.items()}
    return convert


def any_dict(name: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise invalid_attribute(name, f"'{value}' is not a dictionary")
    return value


def text(name: str, value: Any) -> str:
    """An address or CIDR as a string; the service checks what it means."""
    if not isinstance(value, str):
        raise invalid_attribute(name, f"'{value}' is not a valid string")
    return value.strip()


# -- attributes -----------------------------------------------------------------------


@dataclass(frozen=True)
class Attr:
    post: bool = False
    put: bool = False
    required: bool = False
    default: Any = MISSING
    convert: Convert | None = None
    filter: Convert | None = None
    """How a query-string value of this attribute converts; None compares as text."""


@dataclass(frozen=True)
class Resource:
    singular: str
    plural: str
    path: str
    """URL segment under /v2.0 (``security-groups``)."""
    attrs: dict[str, Attr]
    tag_kind: str | None = None
    """The resource kind the tags API knows it as; None: not taggable."""
    extra_filters: tuple[str, ...] = field(default_factory=tuple)


NAME = Attr(post=True, put=True, default="", convert=string(255))
DESCRIPTION = Attr(post=True, put=True, default="", convert=string(255))
PROJECT = Attr(post=True, convert=string(255))
READ = Attr()
BOOL_READ = Attr(filter=boolean)
INT_READ = Attr(filter=integer())
STANDARD = {"id": READ, "name": NAME, "description": DESCRIPTION, "project_id": PROJECT,
            "tenant_id": PROJECT, "created_at": READ, "updated_at": READ,
            "revision_number": INT_READ, "tags": READ}

_pair = dict_with({"ip_address": text, "mac_address": text}, required=("ip_address",),
                  what="allowed address pair")
_fixed_ip = dict_with({"subnet_id": uuid, "ip_address": text}, what="fixed IP")
_route = dict_with({"destination": text, "nexthop": text}, required=("destination", "nexthop"),
                   what="route")
_pool = dict_with({"start": text, "end": text}, required=("start", "end"),
                  what="allocation pool")
_gateway = nullable(dict_with({"network_id": uuid, "enable_snat": boolean,
                               "external_fixed_ips": list_of(_fixed_ip)},
                              what="external gateway info"))

NETWORK = {
    **STANDARD,
    "admin_state_up": Attr(post=True, put=True, default=True, convert=boolean, filter=boolean),
    "status": READ,
    "subnets": READ,
    "shared": Attr(post=True, put=True, default=False, convert=boolean, filter=boolean),
    "mtu": Attr(post=True, put=True, convert=integer(68, 9000), filter=integer()),
    "port_security_enabled": Attr(post=True, put=True, default=True, convert=boolean,
                                  filter=boolean),
    "router:external": Attr(post=True, put=True, default=False, convert=boolean,
                            filter=boolean),
    "provider:network_type": Attr(post=True, convert=string(32)),
    "provider:physical_network": Attr(post=True, convert=nullable(string(64))),
    "provider:segmentation_id": Attr(post=True, convert=nullable(integer(0)),
                                     filter=integer()),
    "availability_zone_hints": Attr(post=True, default=[], convert=list_of(string(255))),
    "availability_zones": READ,
}

SUBNET = {
    **STANDARD,
    "network_id": Attr(post=True, required=True, convert=uuid),
    "ip_version": Attr(post=True, required=True, convert=one_of(4, 6), filter=integer()),
    "cidr": Attr(post=True, required=True, convert=text),
    "gateway_ip": Attr(post=True, put=True, default="auto", convert=nullable(text)),
    "allocation_pools": Attr(post=True, put=True, convert=list_of(_pool)),
    "dns_nameservers": Attr(post=True, put=True, default=[], convert=list_of(text)),
    "host_routes": Attr(post=True, put=True, default=[], convert=list_of(_route)),
    "enable_dhcp": Attr(post=True, put=True, default=True, convert=boolean, filter=boolean),
    "ipv6_ra_mode": Attr(post=True, convert=nullable(one_of(
        "slaac", "dhcpv6-stateful", "dhcpv6-stateless"))),
    "ipv6_address_mode": Attr(post=True, convert=nullable(one_of(
        "slaac", "dhcpv6-stateful", "dhcpv6-stateless"))),
    "subnetpool_id": Attr(post=True, convert=nullable(uuid)),
    "segment_id": READ,
}

PORT = {
    **STANDARD,
    "network_id": Attr(post=True, required=True, convert=uuid),
    "admin_state_up": Attr(post=True, put=True, default=True, convert=boolean, filter=boolean),
    "mac_address": Attr(post=True, put=True, convert=text),
    "fixed_ips": Attr(post=True, put=True, convert=list_of(_fixed_ip)),
    "device_id": Attr(post=True, put=True, default="", convert=string(255)),
    "device_owner": Attr(post=True, put=True, default="", convert=string(255)),
    "status": READ,
    "security_groups": Attr(post=True, put=True, convert=list_of(uuid)),
    "port_security_enabled": Attr(post=True, put=True, convert=boolean, filter=boolean),
    "allowed_address_pairs": Attr(post=True, put=True, default=[], convert=list_of(_pair)),
    "binding:host_id": Attr(post=True, put=True, default="", convert=string(255)),
    "binding:profile": Attr(post=True, put=True, default={}, convert=any_dict),
    "binding:vnic_type": Attr(post=True, put=True, default="normal", convert=one_of("normal")),
    "binding:vif_type": READ,
    "binding:vif_details": READ,
}

ROUTER = {
    **STANDARD,
    "admin_state_up": Attr(post=True, put=True, default=True, convert=boolean, filter=boolean),
    "status": READ,
    "external_gateway_info": Attr(post=True, put=True, convert=_gateway),
    "routes": Attr(put=True, convert=list_of(_route)),
    "availability_zone_hints": Attr(post=True, default=[], convert=list_of(string(255))),
    "availability_zones": READ,
}

FLOATINGIP = {
    **STANDARD,
    "name": READ,
    "floating_ip_address": Attr(post=True, convert=text),
    "floating_network_id": Attr(post=True, required=True, convert=uuid),
    "subnet_id": Attr(post=True, convert=nullable(uuid)),
    "port_id": Attr(post=True, put=True, default=None, convert=nullable(uuid)),
    "fixed_ip_address": Attr(post=True, put=True, default=None, convert=nullable(text)),
    "router_id": READ,
    "status": READ,
    "port_details": READ,
}

SECURITY_GROUP = {
    **STANDARD,
    "security_group_rules": READ,
    "stateful": BOOL_READ,
}

SECURITY_GROUP_RULE = {
    **STANDARD,
    "name": READ,
    "security_group_id": Attr(post=True, required=True, convert=uuid),
    "direction": Attr(post=True, required=True, convert=one_of("ingress", "egress")),
    "ethertype": Attr(post=True, default="IPv4", convert=one_of("IPv4", "IPv6")),
    "protocol": Attr(post=True, default=None, convert=nullable(
        lambda n, v: str(v).lower() if isinstance(v, (str, int)) and not isinstance(v, bool)
        else _bad(n, v))),
    "port_range_min": Attr(post=True, default=None, convert=nullable(integer()),
                           filter=integer()),
    "port_range_max": Attr(post=True, default=None, convert=nullable(integer()),
                           filter=integer()),
    "remote_ip_prefix": Attr(post=True, default=None, convert=nullable(text)),
    "remote_group_id": Attr(post=True, default=None, convert=nullable(uuid)),
}

RBAC_POLICY = {
    "id": READ, "project_id": PROJECT, "tenant_id": PROJECT,
    "object_type": Attr(post=True, required=True, convert=one_of("network")),
    "object_id": Attr(post=True, required=True, convert=uuid),
    "action": Attr(post=True, required=True, convert=one_of("access_as_shared",
                                                             "access_as_external")),
    "target_tenant": Attr(post=True, put=True, required=True, convert=string(255)),
}

AGENT = {
    "id": READ, "agent_type": READ, "binary": READ, "topic": READ, "host": READ,
    "admin_state_up": Attr(put=True, convert=boolean, filter=boolean),
    "description": Attr(put=True, convert=nullable(string(255))),
    "created_at": READ, "started_at": READ, "heartbeat_timestamp": READ,
    "alive": BOOL_READ, "configurations": READ, "availability_zone": READ,
    "resources_synced": READ,
}


def _bad(name: str, value: Any):
    raise invalid_attribute(name, f"'{value}' is not a valid string")


RESOURCES: dict[str, Resource] = {r.plural: r for r in (
    Resource("network", "networks", "networks", NETWORK, "networks"),
    Resource("subnet", "subnets", "subnets", SUBNET, "subnets"),
    Resource("port", "ports", "ports", PORT, "ports", ("fixed_ips",)),
    Resource("router", "routers", "routers", ROUTER, "routers"),
    Resource("floatingip", "floatingips", "floatingips", FLOATINGIP, "floatingips"),
    Resource("security_group", "security_groups", "security-groups", SECURITY_GROUP,
             "security-groups"),
    Resource("security_group_rule", "security_group_rules", "security-group-rules",
             SECURITY_GROUP_RULE),
    Resource("rbac_policy", "rbac_policies", "rbac-policies", RBAC_POLICY),
    Resource("agent", "agents", "agents", AGENT),
)}


def parse_body(resource: Resource, item: Any, *, create: bool) -> dict[str, Any]:
    """One resource's attributes from a request, checked; defaults filled in on create."""
    if not isinstance(item, dict):
        raise BadRequest(f"Invalid input for {resource.singular}. Reason: '{item}' is not a "
                         "dictionary.")
    unknown = sorted(k for k in item if k not in resource.attrs)
    if unknown:
        raise BadRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'")
    values: dict[str, Any] = {}
    for name, value in item.items():
        attr = resource.attrs[name]
        if create and not attr.post:
            raise BadRequest(f"Attribute '{name}' not allowed in POST")
        if not create and not attr.put:
            raise BadRequest(f"Cannot update read-only attribute {name}")
        values[name] = attr.convert(name, value) if attr.convert else value
    if "tenant_id" in values:
        tenant = values.pop("tenant_id")
        if values.setdefault("project_id", tenant) != tenant:
            raise BadRequest("'project_id' and 'tenant_id' do not match")
    if create:
        for name, attr in resource.attrs.items():
            if name in values or name == "tenant_id":
                continue
            if attr.required:
                raise BadRequest(f"Failed to parse request. Required attribute '{name}' not "
                                 "specified")
            if attr.default is not MISSING:
                default = attr.default
                values[name] = list(default) if isinstance(default, list) else (
                    dict(default) if isinstance(default, dict) else default)
    return values


def parse_filter(resource: Resource, name: str, value: str) -> Any:
    attr = resource.attrs.get(name)
    if attr is None or attr.filter is None:
        return value
    return attr.filter(name, value)
