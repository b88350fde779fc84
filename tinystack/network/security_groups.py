"""Security groups and their rules, and every project's ``default`` group.

A project's default group is made on first use (listing groups, creating a
port or a group) with Neutron's default rules: egress to anywhere for IPv4
and IPv6, ingress from members of the same group. ``DefaultSecurityGroup``'s
primary key keeps it to one even when two first requests race (the loser
retries and finds it). Rules are checked as Neutron checks them (protocol
names and numbers, port ranges for TCP/UDP-like protocols, ICMP type and
code, CIDR against ethertype) and a rule equal to an existing one is a 409.

A change to a group's rules reaches the agents of its member ports
(``Changes.groups``); rules naming a remote group are expanded to addresses
in ``specs.py``.
"""

from __future__ import annotations

import ipaddress

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tinystack.network.errors import (
    InvalidInput,
    SecurityGroupCannotRemoveDefault,
    SecurityGroupCannotUpdateDefault,
    SecurityGroupDefaultAlreadyExists,
    SecurityGroupInUse,
    SecurityGroupInvalidIcmpValue,
    SecurityGroupInvalidPortRange,
    SecurityGroupInvalidPortValue,
    SecurityGroupMissingIcmpType,
    SecurityGroupNotFound,
    SecurityGroupRemoteGroupAndRemoteIpPrefix,
    SecurityGroupRuleExists,
    SecurityGroupRuleInvalidProtocol,
    SecurityGroupRuleNotFound,
    SecurityGroupRuleParameterConflict,
)
from tinystack.network.models import (
    DefaultSecurityGroup,
    PortSecurityGroup,
    SecurityGroup,
    SecurityGroupRule,
)
from tinystack.network.service import Changes, Context, NetworkCore, Retry, new_uuid
from tinystack.network.views import rule_view, security_group_view

__all__ = ["SecurityGroups", "ensure_default", "PROTOCOLS", "add_rule"]

PROTOCOLS = {
    "ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "icmp": 1, "icmpv6": 58,
    "igmp": 2, "ipip": 4, "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58,
    "ipv6-nonxt": 59, "ipv6-opts": 60, "ipv6-route": 43, "ospf": 89, "pgm": 113,
    "rsvp": 46, "sctp": 132, "tcp": 6, "udp": 17, "udplite": 136, "vrrp": 112,
}
PORT_PROTOCOLS = ("tcp", "udp", "sctp", "dccp", "udplite", "6", "17", "132", "33", "136")
ICMP_PROTOCOLS = ("icmp", "icmpv6", "ipv6-icmp", "1", "58")


def add_rule(s: Session, group: SecurityGroup, project_id: str, direction: str,
             ethertype: str, **fields) -> SecurityGroupRule:
    rule = SecurityGroupRule(id=new_uuid(), project_id=project_id,
                             security_group_id=group.id, direction=direction,
                             ethertype=ethertype, revision_number=0, **fields)
    group.rules.append(rule)
    return rule


def _egress_defaults(s: Session, group: SecurityGroup) -> None:
    for ethertype in ("IPv4", "IPv6"):
        add_rule(s, group, group.project_id, "egress", ethertype)


def ensure_default(s: Session, project_id: str) -> SecurityGroup:
    """The project's ``default`` group, made (with Neutron's default rules) if missing."""
    found = s.get(DefaultSecurityGroup, project_id)
    if found is not None:
        group = s.get(SecurityGroup, found.security_group_id)
        if group is not None:
            return group
    group = SecurityGroup(id=new_uuid(), project_id=project_id, name="default",
                          description="Default security group", revision_number=0)
    s.add(group)
    _egress_defaults(s, group)
    for ethertype in ("IPv4", "IPv6"):
        add_rule(s, group, project_id, "ingress", ethertype, remote_group_id=group.id)
    try:
        s.flush()
        s.add(DefaultSecurityGroup(project_id=project_id, security_group_id=group.id))
        s.flush()
    except IntegrityError:
        raise Retry() from None
    return group


def _is_default(s: Session, group: SecurityGroup) -> bool:
    found = s.get(DefaultSecurityGroup, group.project_id)
    return found is not None and found.security_group_id == group.id


def _protocol(value: str | None, ethertype: str) -> str | None:
    if value in (None, "", "any"):
        return None
    if value.isdigit():
        if not 0 <= int(value) <= 255:
            raise SecurityGroupRuleInvalidProtocol(protocol=value, values=sorted(PROTOCOLS))
        return value
    if value not in PROTOCOLS:
        raise SecurityGroupRuleInvalidProtocol(protocol=value, values=sorted(PROTOCOLS))
    if value == "icmp" and ethertype == "IPv6":
        return "ipv6-icmp"
    return value


def _check_ports(protocol: str | None, low: int | None, high: int | None) -> None:
    if protocol in PORT_PROTOCOLS:
        for value in (low, high):
            if value is not None and not 0 <= value <= 65535:
                raise SecurityGroupInvalidPortValue(port=value)
        if low is not None and high is not None and low > high:
            raise SecurityGroupInvalidPortRange()
        if low is None and high is not None:
            raise SecurityGroupInvalidPortRange()
        if 0 in (low, high):
            raise SecurityGroupInvalidPortValue(port=0)
    elif protocol in ICMP_PROTOCOLS:
        for field, attr, value in (("type", "port_range_min", low),
                                   ("code", "port_range_max", high)):
            if value is not None and not 0 <= value <= 255:
                raise SecurityGroupInvalidIcmpValue(field=field, attr=attr, value=value)
        if low is None and high is not None:
            raise SecurityGroupMissingIcmpType(value=high)
    elif low is not None or high is not None:
        raise InvalidInput(error_message=(
            f"Invalid protocol {protocol} for port range, only supported for TCP, UDP, "
            "UDPLITE, SCTP and DCCP"))


def _prefix(value: str | None, ethertype: str) -> str | None:
    if value is None:
        return None
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise InvalidInput(error_message=f"'{value}' is not a valid IP prefix") from None
    if f"IPv{network.version}" != ethertype:
        raise SecurityGroupRuleParameterConflict(ethertype=ethertype, cidr=value)
    return str(network)


def _any_prefix(value: str | None) -> str | None:
    return None if value in ("0.0.0.0/0", "::/0") else value


class SecurityGroups:
    def __init__(self, core: NetworkCore):
        self.core = core

    def render(self, s: Session, groups: list[SecurityGroup]) -> list[dict]:
        tags = self.core.tags_of(s, "security-groups", [g.id for g in groups])
        return [security_group_view(g, tags[g.id]) for g in groups]

    # -- groups --------------------------------------------------------------------------

    def list(self, ctx: Context, hints: dict[str, list[str]]) -> list[dict]:
        def read(s: Session) -> list[dict]:
            if ctx.project_id:
                ensure_default(s, ctx.project_id)
            query = sa.select(SecurityGroup).order_by(SecurityGroup.created_at,
                                                      SecurityGroup.id)
            if not ctx.admin:
                query = query.where(SecurityGroup.project_id == ctx.project_id)
            if hints.get("id"):
                query = query.where(SecurityGroup.id.in_(hints["id"]))
            if hints.get("project_id"):
                query = query.where(SecurityGroup.project_id.in_(hints["project_id"]))
            return self.render(s, list(s.scalars(query)))
        return self.core.transaction(read)

    def show(self, ctx: Context, group_id: str) -> dict:
        def read(s: Session) -> dict:
            return self.render(s, [self.core.get_security_group(s, ctx, group_id)])[0]
        return self.core.transaction(read)

    def create(self, ctx: Context, values: dict) -> tuple[dict, Changes]:
        def write(s: Session) -> dict:
            owner = ctx.owner_for(values)
            ctx.enforce("create_security_group", {"project_id": owner})
            ensure_default(s, owner)
            if values.get("name") == "default":
                raise SecurityGroupDefaultAlreadyExists()
            self.core.check_quota(s, owner, "security_group")
            self.core.check_quota(s, owner, "security_group_rule", 2)
            group = SecurityGroup(id=new_uuid(), project_id=owner,
                                  name=values.get("name", ""),
                                  description=values.get("description", ""),
                                  revision_number=1)
            s.add(group)
            _egress_defaults(s, group)
            s.flush()
            return self.render(s, [group])[0]
        return self.core.transaction(write), Changes()

    def update(self, ctx: Context, group_id: str, values: dict) -> tuple[dict, Changes]:
        def write(s: Session) -> dict:
            group = self.core.get_security_group(s, ctx, group_id)
            ctx.enforce("update_security_group", {"project_id": group.project_id})
            if "name" in values and values["name"] != group.name and _is_default(s, group):
                raise SecurityGroupCannotUpdateDefault()
            if values.get("name") == "default" and not _is_default(s, group):
                raise SecurityGroupDefaultAlreadyExists()
            for name in ("name", "description"):
                if name in values:
                    setattr(group, name, values[name])
            group.touch()
            s.flush()
            return self.render(s, [group])[0]
        return self.core.transaction(write), Changes()

    def delete(self, ctx: Context, group_id: str) -> Changes:
        def write(s: Session) -> None:
            group = self.core.get_security_group(s, ctx, group_id)
            ctx.enforce("delete_security_group", {"project_id": group.project_id})
            if _is_default(s, group) and not ctx.admin:
                raise SecurityGroupCannotRemoveDefault()
            if s.scalar(sa.select(PortSecurityGroup.port_id).where(
                    PortSecurityGroup.security_group_id == group.id).limit(1)):
                raise SecurityGroupInUse(id=group.id)
            referring = set(s.scalars(sa.select(SecurityGroupRule.security_group_id).where(
                SecurityGroupRule.remote_group_id == group.id,
                SecurityGroupRule.security_group_id != group.id)))
            s.execute(sa.delete(DefaultSecurityGroup).where(
                DefaultSecurityGroup.security_group_id == group.id))
            self.core.drop_tags(s, "security-groups", group.id)
            s.delete(group)
            changes.groups.update(referring)
        changes = Changes()
        self.core.transaction(write)
        return changes

    # -- rules ---------------------------------------------------------------------------

    def list_rules(self, ctx: Context, hints: dict[str, list[str]]) -> list[dict]:
        def read(s: Session) -> list[dict]:
            query = sa.select(SecurityGroupRule).order_by(SecurityGroupRule.created_at,
                                                          SecurityGroupRule.id)
            if not ctx.admin:
                owned = sa.select(SecurityGroup.id).where(
                    SecurityGroup.project_id == ctx.project_id)
                query = query.where(sa.or_(SecurityGroupRule.project_id == ctx.project_id,
                                           SecurityGroupRule.security_group_id.in_(owned)))
            if hints.get("id"):
                query = query.where(SecurityGroupRule.id.in_(hints["id"]))
            if hints.get("security_group_id"):
                query = query.where(SecurityGroupRule.security_group_id.in_(
                    hints["security_group_id"]))
            return [rule_view(r) for r in s.scalars(query)]
        return self.core.transaction(read)

    def _get_rule(self, s: Session, ctx: Context, rule_id: str) -> SecurityGroupRule:
        rule = s.get(SecurityGroupRule, rule_id)
        if rule is None:
            raise SecurityGroupRuleNotFound(id=rule_id)
        group = s.get(SecurityGroup, rule.security_group_id)
        if not (ctx.admin or ctx.owns(rule.project_id) or ctx.owns(group.project_id)):
            raise SecurityGroupRuleNotFound(id=rule_id)
        return rule

    def show_rule(self, ctx: Context, rule_id: str) -> dict:
        return self.core.transaction(lambda s: rule_view(self._get_rule(s, ctx, rule_id)))

    def create_rule(self, ctx: Context, values: dict) -> tuple[dict, Changes]:
        changes = Changes()

        def write(s: Session) -> dict:
            view = rule_view(self.add(s, ctx, values))
            changes.groups.add(values["security_group_id"])
            return view
        return self.core.transaction(write), changes

    def add(self, s: Session, ctx: Context, values: dict) -> SecurityGroupRule:
        """Check and store one rule (the API's and bootstrap's way in)."""
        try:
            group = self.core.get_security_group(s, ctx, values["security_group_id"])
        except SecurityGroupNotFound:
            raise SecurityGroupNotFound(id=values["security_group_id"]) from None
        owner = ctx.owner_for(values) if ctx.admin else group.project_id
        ctx.enforce("create_security_group_rule", {"project_id": group.project_id})
        ethertype = values.get("ethertype") or "IPv4"
        protocol = _protocol(values.get("protocol"), ethertype)
        low, high = values.get("port_range_min"), values.get("port_range_max")
        _check_ports(protocol, low, high)
        if protocol in PORT_PROTOCOLS and low is not None and high is None:
            high = low
        remote_ip = _prefix(values.get("remote_ip_prefix"), ethertype)
        remote_group = values.get("remote_group_id")
        if remote_ip is not None and remote_group is not None:
            raise SecurityGroupRemoteGroupAndRemoteIpPrefix()
        if remote_group is not None and s.get(SecurityGroup, remote_group) is None:
            raise SecurityGroupNotFound(id=remote_group)
        fields = {"protocol": protocol, "port_range_min": low, "port_range_max": high,
                  "remote_ip_prefix": remote_ip, "remote_group_id": remote_group,
                  "description": values.get("description", "")}
        for rule in group.rules:
            if (rule.direction, rule.ethertype, rule.protocol, rule.port_range_min,
                    rule.port_range_max, _any_prefix(rule.remote_ip_prefix),
                    rule.remote_group_id) == (values["direction"], ethertype, protocol, low,
                                              high, _any_prefix(remote_ip), remote_group):
                raise SecurityGroupRuleExists(rule_id=rule.id)
        self.core.check_quota(s, owner, "security_group_rule")
        rule = add_rule(s, group, owner, values["direction"], ethertype, **fields)
        rule.revision_number = 1
        group.touch()
        s.flush()
        return rule

    def delete_rule(self, ctx: Context, rule_id: str) -> Changes:
        changes = Changes()

        def write(s: Session) -> None:
            rule = self._get_rule(s, ctx, rule_id)
            group = s.get(SecurityGroup, rule.security_group_id)
            ctx.enforce("delete_security_group_rule", {"project_id": group.project_id})
            group.rules.remove(rule)
            s.delete(rule)
            group.touch()
            changes.groups.add(group.id)
        self.core.transaction(write)
        return changes
