"""Neutron's error kinds and its error body.

Each class here is a ``DomainError`` whose name is the ``type`` Neutron puts
in ``{"NeutronError": {"type", "message", "detail"}}`` and whose template is
Neutron's message, so ``raise NetworkInUse(net_id=...)`` reads like the
neutron-lib exception it stands for. ``neutron_error`` renders every error
the network API raises: these by their own name, the shared ones of
``common/errors.py`` by the webob name Neutron shows for them
(``HTTPBadRequest``...), and a 401 the way keystonemiddleware answers in
front of Neutron.
"""

from __future__ import annotations

from typing import Any

from tinystack.common.errors import (
    BadRequest,
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    Unavailable,
)

__all__ = [
    "NeutronError", "neutron_error", "invalid_attribute", "InvalidInput", "BadResourceRequest", "PolicyNotAuthorized",
    "NetworkNotFound", "SubnetNotFound", "PortNotFound", "RouterNotFound", "FloatingIPNotFound",
    "SecurityGroupNotFound", "SecurityGroupRuleNotFound", "AgentNotFound", "RbacPolicyNotFound",
    "ExtensionNotFound", "TagNotFound", "NetworkInUse", "SubnetInUse", "PortInUse",
    "IpAddressAlreadyAllocated", "IpAddressGenerationFailure", "InvalidIpForSubnet",
    "InvalidIpForNetwork", "MacAddressInUse", "FlatNetworkInUse", "TunnelIdInUse", "NoNetworkAvailable",
    "AddressPairAndPortSecurityRequired", "AllowedAddressPairExhausted", "SubnetPoolNotFound",
   
    "InvalidAllocationPool", "OverlappingAllocationPools", "OutOfBoundsAllocationPool",
    "GatewayConflictWithAllocationPools", "DNSNameServersExhausted", "HostRoutesExhausted",
    "RouterInUse", "RouterInterfaceNotFound", "RouterInterfaceNotFoundForSubnet",
    "RouterInterfaceInUseByFloatingIP", "RouterInterfaceInUseByRoute",
    "RouterExternalGatewayInUseByFloatingIp", "InvalidRoutes", "RoutesExhausted",
    "L3PortInUse", "ExternalGatewayForFloatingIPNotFound", "FloatingIPPortAlreadyAssociated",
    "SecurityGroupInUse", "SecurityGroupCannotRemoveDefault",
    "SecurityGroupCannotUpdateDefault", "SecurityGroupRuleExists",
    "SecurityGroupRuleInvalidProtocol", "SecurityGroupInvalidPortRange",
    "SecurityGroupInvalidPortValue", "SecurityGroupInvalidIcmpValue",
    "SecurityGroupMissingIcmpType", "SecurityGroupRemoteGroupAndRemoteIpPrefix",
    "SecurityGroupRuleParameterConflict", "SecurityGroupConflict",
    "SecurityGroupDefaultAlreadyExists",
    "PortSecurityAndIPRequiredForSecurityGroups", "PortSecurityPortHasSecurityGroup",
    "AddressPairMatchesPortFixedIPAndMac", "DuplicateAddressPairInRequest",
    "OverQuota", "DuplicateRbacPolicy", "RbacPolicyInUse", "InvalidSharedSetting",
    "ExternalNetworkInUse",
]

_WEBOB = {400: "HTTPBadRequest", 403: "HTTPForbidden", 404: "HTTPNotFound",
          405: "HTTPMethodNotAllowed", 409: "HTTPConflict", 413: "HTTPRequestEntityTooLarge",
          500: "HTTPInternalServerError", 503: "HTTPServiceUnavailable"}
_OURS: set[str] = set()


class NeutronError(DomainError):
    """An error named as Neutron names it; the message comes from ``template``."""

    template = "An unknown exception occurred."

    def __init__(self, message: str | None = None, **fields: Any):
        super().__init__(message if message is not None else self.template.format(**fields),
                         title=type(self).__name__)
        self.fields = fields

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _OURS.add(cls.__name__)


def neutron_error(code: int, title: str, message: str) -> dict:
    """The body of an error response, as Neutron (behind keystonemiddleware) writes it."""
    if code == 401:
        return {"error": {"code": 401, "title": "Unauthorized", "message": message}}
    kind = title if title in _OURS else _WEBOB.get(code, "HTTPError")
    return {"NeutronError": {"type": kind, "message": message, "detail": ""}}


# -- generic ------------------------------------------------------------------------


def invalid_attribute(name: str, reason: str) -> BadRequest:
    """What Neutron's attribute validation answers (an ``HTTPBadRequest``)."""
    return BadRequest(f"Invalid input for {name}. Reason: {reason}.")


class InvalidInput(NeutronError, BadRequest):
    template = "Invalid input for operation: {error_message}."


class BadResourceRequest(NeutronError, BadRequest):
    """Neutron's ``BadRequest(resource=..., msg=...)``."""

    template = "Bad {resource} request: {msg}."

    def __init__(self, resource: str, msg: str):
        super().__init__(resource=resource, msg=msg)
        self.title = "BadRequest"


_OURS.add("BadRequest")


class PolicyNotAuthorized(NeutronError, Forbidden):
    template = "({action}) is disallowed by policy"

    def __init__(self, action: str):
        super().__init__(action=f"rule:{action}")


class OverQuota(NeutronError, Conflict):
    template = "Quota exceeded for resources: {overs}."


# -- not found ----------------------------------------------------------------------


class NetworkNotFound(NeutronError, NotFound):
    template = "Network {net_id} could not be found."


class SubnetNotFound(NeutronError, NotFound):
    template = "Subnet {subnet_id} could not be found."


class PortNotFound(NeutronError, NotFound):
    template = "Port {port_id} could not be found."


class RouterNotFound(NeutronError, NotFound):
    template = "Router {router_id} could not be found"


class FloatingIPNotFound(NeutronError, NotFound):
    template = "Floating IP {floatingip_id} could not be found"


class SecurityGroupNotFound(NeutronError, NotFound):
    template = "Security group {id} does not exist"


class SecurityGroupRuleNotFound(NeutronError, NotFound):
    template = "Security group rule {id} does not exist"


class AgentNotFound(NeutronError, NotFound):
    template = "Agent {id} could not be found."


class RbacPolicyNotFound(NeutronError, NotFound):
    template = "RBAC policy of type {object_type} with ID {id} not found"


class ExtensionNotFound(NeutronError, NotFound):
    template = "Extension with alias {alias} does not exist"


class TagNotFound(NeutronError, NotFound):
    template = "Tag {tag} could not be found for {resource} {resource_id}."


class RouterInterfaceNotFound(NeutronError, NotFound):
    template = "Router {router_id} does not have an interface with id {port_id}"


class RouterInterfaceNotFoundForSubnet(NeutronError, NotFound):
    template = "Router {router_id} has no interface on subnet {subnet_id}"


class ExternalGatewayForFloatingIPNotFound(NeutronError, NotFound):
    template = ("External network {external_network_id} is not reachable from subnet "
                "{subnet_id}.  Therefore, cannot associate Port {port_id} with a Floating IP.")


# -- in use, conflicts ----------------------------------------------------------------


class NetworkInUse(NeutronError, Conflict):
    template = ("Unable to complete operation on network {net_id}. There are one or more "
                "ports still in use on the network.")


class ExternalNetworkInUse(NeutronError, Conflict):
    template = ("External network {net_id} cannot be updated to be made non-external, since "
                "it has existing gateway ports.")


class SubnetInUse(NeutronError, Conflict):
    template = ("Unable to complete operation on subnet {subnet_id}: One or more ports have "
                "an IP allocation from this subnet.")


class PortInUse(NeutronError, Conflict):
    template = ("Unable to complete operation on port {port_id} for network {net_id}. Port "
                "already has an attached device {device_id}.")


class L3PortInUse(NeutronError, Conflict):
    template = ("Port {port_id} has owner {device_owner} and therefore cannot be deleted "
                "directly via the port API.")


class IpAddressAlreadyAllocated(NeutronError, Conflict):
    template = "IP address {ip} already allocated in subnet {subnet_id}"


class IpAddressGenerationFailure(NeutronError, Conflict):
    template = "No more IP addresses available on network {net_id}."


class MacAddressInUse(NeutronError, Conflict):
    template = ("Unable to complete operation for network {net_id}. The mac address {mac} "
                "is in use.")


class FlatNetworkInUse(NeutronError, Conflict):
    template = ("Unable to create the flat network. Physical network {physical_network} is "
                "in use.")


class TunnelIdInUse(NeutronError, Conflict):
    template = "Unable to create the network. The tunnel ID {tunnel_id} is in use."


class AddressPairAndPortSecurityRequired(NeutronError, Conflict):
    template = "Port Security must be enabled in order to have allowed address pairs on a port."


class AllowedAddressPairExhausted(NeutronError, BadRequest):
    template = "The number of allowed address pair exceeds the maximum {quota}."


class SubnetPoolNotFound(NeutronError, NotFound):
    template = "Subnet pool {subnetpool_id} could not be found."


class NoNetworkAvailable(NeutronError, Unavailable):
    template = "Unable to create the network. No tenant network is available for allocation."


class RouterInUse(NeutronError, Conflict):
    template = "Router {router_id} {reason}"


class RouterInterfaceInUseByFloatingIP(NeutronError, Conflict):
    template = ("Router interface for subnet {subnet_id} on router {router_id} cannot be "
                "deleted, as it is required by one or more floating IPs.")


class RouterInterfaceInUseByRoute(NeutronError, Conflict):
    template = ("Router interface for subnet {subnet_id} on router {router_id} cannot be "
                "deleted, as it is required by one or more routes.")


class RouterExternalGatewayInUseByFloatingIp(NeutronError, Conflict):
    template = ("Gateway cannot be updated for router {router_id}, since a gateway to "
                "external network {net_id} is required by one or more floating IPs.")


class FloatingIPPortAlreadyAssociated(NeutronError, Conflict):
    template = ("Cannot associate floating IP {floating_ip_address} ({fip_id}) with port "
                "{port_id} using fixed IP {fixed_ip}, as that fixed IP already has a floating "
                "IP on external network {net_id}.")


class SecurityGroupInUse(NeutronError, Conflict):
    template = "Security Group {id} in use."


class SecurityGroupCannotRemoveDefault(NeutronError, Conflict):
    template = "Insufficient rights for removing default security group."


class SecurityGroupCannotUpdateDefault(NeutronError, Conflict):
    template = "Updating default security group not allowed."


class SecurityGroupDefaultAlreadyExists(NeutronError, Conflict):
    template = "Default security group already exists."


class SecurityGroupRuleExists(NeutronError, Conflict):
    template = "Security group rule already exists. Rule id is {rule_id}."


class SecurityGroupConflict(NeutronError, Conflict):
    template = "Error {reason} while attempting the operation."


class PortSecurityPortHasSecurityGroup(NeutronError, Conflict):
    template = ("Port has security group associated. Cannot disable port security or IP "
                "address until security group is removed.")


class DuplicateRbacPolicy(NeutronError, Conflict):
    template = "An RBAC policy already exists with those values."


class RbacPolicyInUse(NeutronError, Conflict):
    template = ("RBAC policy on object {object_id} cannot be removed because other objects "
                "depend on it.\nDetails: {details}")


class InvalidSharedSetting(NeutronError, Conflict):
    template = "Unable to reconfigure sharing settings for network {network}. Multiple " \
               "tenants are using it."


# -- bad requests -----------------------------------------------------------------------


class InvalidIpForSubnet(NeutronError, BadRequest):
    template = "IP address {ip_address} is not a valid IP for the specified subnet."


class InvalidIpForNetwork(NeutronError, BadRequest):
    template = "IP address {ip_address} is not a valid IP for any of the subnets on the " \
               "specified network."


class InvalidAllocationPool(NeutronError, BadRequest):
    template = "The allocation pool {pool} is not valid."


class OverlappingAllocationPools(NeutronError, Conflict):
    template = "Found overlapping allocation pools: {pool_1} {pool_2} for subnet {subnet_cidr}."


class OutOfBoundsAllocationPool(NeutronError, BadRequest):
    template = "The allocation pool {pool} spans beyond the subnet cidr {subnet_cidr}."


class GatewayConflictWithAllocationPools(NeutronError, Conflict):
    template = "Gateway ip {ip_address} conflicts with allocation pool {pool}."


class DNSNameServersExhausted(NeutronError, BadRequest):
    template = ("Unable to complete operation for {subnet_id}. The number of DNS "
                "nameservers exceeds the limit {quota}.")


class HostRoutesExhausted(NeutronError, BadRequest):
    template = ("Unable to complete operation for {subnet_id}. The number of host routes "
                "exceeds the limit {quota}.")


class InvalidRoutes(NeutronError, BadRequest):
    template = "Invalid format for routes: {routes}, {reason}"


class RoutesExhausted(NeutronError, BadRequest):
    template = ("Unable to complete operation for {router_id}. The number of routes exceeds "
                "the maximum {quota}.")


class SecurityGroupRuleInvalidProtocol(NeutronError, BadRequest):
    template = ("Security group rule protocol {protocol} not supported. Only protocol values "
                "{values} and integer representations [0 to 255] are supported.")


class SecurityGroupInvalidPortRange(NeutronError, BadRequest):
    template = "For TCP/UDP protocols, port_range_min must be <= port_range_max"


class SecurityGroupInvalidPortValue(NeutronError, BadRequest):
    template = "Invalid value for port {port}"


class SecurityGroupInvalidIcmpValue(NeutronError, BadRequest):
    template = ("Invalid value for ICMP {field} ({attr}) {value}. It must be 0 to 255.")


class SecurityGroupMissingIcmpType(NeutronError, BadRequest):
    template = ("ICMP code (port-range-max) {value} is provided but ICMP type "
                "(port-range-min) is missing.")


class SecurityGroupRemoteGroupAndRemoteIpPrefix(NeutronError, BadRequest):
    template = "Only remote_ip_prefix or remote_group_id may be provided."


class SecurityGroupRuleParameterConflict(NeutronError, BadRequest):
    template = "Conflicting value ethertype {ethertype} for CIDR {cidr}"


class PortSecurityAndIPRequiredForSecurityGroups(NeutronError, BadRequest):
    template = "Port security must be enabled and port must have an IP address in order " \
               "to use security groups."


class AddressPairMatchesPortFixedIPAndMac(NeutronError, BadRequest):
    template = "Port's Fixed IP and Mac Address match an address pair entry."


class DuplicateAddressPairInRequest(NeutronError, BadRequest):
    template = ("Request contains duplicate address pair: mac_address {mac_address} "
                "ip_address {ip_address}.")
