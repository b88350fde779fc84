"""Where a server runs: filters, a spread weigher, and claims no race can overcommit.

``select_hosts`` is pure: it takes ``HostState`` (what a node has, what is
promised on it, where it is, whether its service is up and enabled) and a
``RequestSpec`` (what the server needs and what the user asked of its
placement) and returns the hosts that pass every filter, best first. The
filters are Nova's: RAM, vCPUs, disk (with the allocation ratios), the
availability zone, the enabled-and-up compute service, server-group
affinity and anti-affinity (with ``max_server_per_host``), image properties
(architecture, hypervisor type and version, VM mode), a requested
destination (``zone:host``, 2.74's ``host``) and the ``same_host`` /
``different_host`` hints. The weigher spreads servers over the node with
the most free RAM; the soft group policies weigh (as Nova's soft weighers
do) instead of filtering.

``Scheduler.claim`` then takes the resources in the database with one
conditional UPDATE per node (``claimed + wanted <= total * ratio``), so two
requests racing for the last room on a node cannot both win, and re-checks
a hard group policy inside the same transaction after the group row is
locked (before the node row, so locks are always taken server -> group ->
node, and again after it, since SQLite locks nothing before its first
write). A host that loses the race is skipped for the next one.
``release`` gives the resources back, once (the ``Allocation`` row is the
proof of the claim).
"""

from __future__ import annotations

import datetime as dt
import logging
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tinystack.compute.models import (
    Allocation,
    ComputeNode,
    Server,
    ServerGroup,
    ServerGroupMember,
    Service,
)
from tinystack.config import ComputeSettings

__all__ = [
    "HostState", "GroupInfo", "RequestSpec", "FILTERS", "select_hosts", "weigh",
    "Scheduler", "NO_VALID_HOST", "canonical_arch",
]

log = logging.getLogger(__name__)

NO_VALID_HOST = "No valid host was found. There are not enough hosts available."
GROUP_WEIGHT = 2.0
"""How much a soft group policy outweighs the spread by free RAM (both normalized)."""

_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "x86_64": "x86_64", "i386": "i686",
                 "i486": "i686", "i586": "i686", "i686": "i686", "x86": "i686",
                 "arm64": "aarch64", "aarch64": "aarch64"}


def canonical_arch(name: str) -> str:
    return _ARCH_ALIASES.get(name.lower(), name.lower())


@dataclass
class HostState:
    """One compute node as the scheduler sees it."""

    host: str
    node_id: int = 0
    availability_zone: str = "nova"
    vcpus: int = 0
    memory_mb: int = 0
    local_gb: int = 0
    claimed_vcpus: int = 0
    claimed_memory_mb: int = 0
    claimed_disk_gb: int = 0
    cpu_ratio: float = 16.0
    ram_ratio: float = 1.5
    disk_ratio: float = 1.0
    enabled: bool = True
    up: bool = True
    hypervisor_type: str = "QEMU"
    hypervisor_version: int = 0
    accelerator: str = "tcg"
    arch: str = "x86_64"
    servers: set[str] = field(default_factory=set)
    """Ids of the live servers placed on this host."""

    @property
    def free_vcpus(self) -> float:
        return self.vcpus * self.cpu_ratio - self.claimed_vcpus

    @property
    def free_ram_mb(self) -> float:
        return self.memory_mb * self.ram_ratio - self.claimed_memory_mb

    @property
    def free_disk_gb(self) -> float:
        return self.local_gb * self.disk_ratio - self.claimed_disk_gb

    def supported(self) -> set[tuple[str, str, str]]:
        """(arch, hypervisor type, vm mode) triples a guest may ask for here."""
        types = {"qemu"} | ({"kvm"} if self.accelerator == "kvm" else set())
        return {(self.arch, hv, "hvm") for hv in types}


@dataclass
class GroupInfo:
    """The server group a request belongs to, with the hosts of its other members."""

    id: str
    policy: str
    member_hosts: list[str] = field(default_factory=list)
    max_server_per_host: int = 1


@dataclass
class RequestSpec:
    server_id: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    availability_zone: str | None = None
    requested_host: str | None = None
    requested_node: str | None = None
    image_properties: dict = field(default_factory=dict)
    group: GroupInfo | None = None
    same_host: set[str] = field(default_factory=set)
    """Hosts of the servers named in the ``same_host`` hint."""
    different_host: set[str] = field(default_factory=set)
    only_hosts: set[str] | None = None
    """When set, the only hosts that may be chosen (a resize stays on its node)."""


# -- filters --------------------------------------------------------------------------


def ram_filter(host: HostState, spec: RequestSpec) -> bool:
    return host.free_ram_mb >= spec.memory_mb


def core_filter(host: HostState, spec: RequestSpec) -> bool:
    return host.free_vcpus >= spec.vcpus


def disk_filter(host: HostState, spec: RequestSpec) -> bool:
    return host.free_disk_gb >= spec.disk_gb


def availability_zone_filter(host: HostState, spec: RequestSpec) -> bool:
    return spec.availability_zone is None or host.availability_zone == spec.availability_zone


def compute_filter(host: HostState, spec: RequestSpec) -> bool:
    """The node's nova-compute service is enabled and has reported lately."""
    return host.enabled and host.up


def affinity_filter(host: HostState, spec: RequestSpec) -> bool:
    group = spec.group
    if group is None or group.policy != "affinity" or not group.member_hosts:
        return True
    return host.host in group.member_hosts


def anti_affinity_filter(host: HostState, spec: RequestSpec) -> bool:
    group = spec.group
    if group is None or group.policy != "anti-affinity":
        return True
    return group.member_hosts.count(host.host) < max(group.max_server_per_host, 1)


_VERSION_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
                "==": operator.eq, "=": operator.eq}


def _version_number(text: str) -> int:
    parts = [int(p) for p in re.findall(r"\d+", text)[:3]] + [0, 0, 0]
    return parts[0] * 1_000_000 + parts[1] * 1_000 + parts[2]


def _version_ok(requirement: str, have: int) -> bool:
    match = re.match(r"\s*(>=|<=|==|=|>|<)?\s*([\d.]+)\s*$", requirement)
    if match is None:
        return False
    op = _VERSION_OPS[match.group(1) or ">="]
    return op(have, _version_number(match.group(2)))


def image_properties_filter(host: HostState, spec: RequestSpec) -> bool:
    """The image's architecture, hypervisor type and VM mode are ones this node runs."""
    props = spec.image_properties
    arch = props.get("hw_architecture") or props.get("architecture")
    hv_type = props.get("img_hv_type") or props.get("hypervisor_type")
    vm_mode = props.get("hw_vm_mode") or props.get("vm_mode")
    wanted_version = props.get("img_hv_requested_version")
    if wanted_version and not _version_ok(str(wanted_version), host.hypervisor_version):
        return False
    if not (arch or hv_type or vm_mode):
        return True
    arch = canonical_arch(arch) if arch else None
    hv_type = hv_type.lower() if hv_type else None
    vm_mode = {"hvm": "hvm", "xen": "xen", "uml": "uml", "exe": "exe"}.get(
        (vm_mode or "").lower(), (vm_mode or "").lower()) or None
    return any((arch is None or arch == a) and (hv_type is None or hv_type == h)
               and (vm_mode is None or vm_mode == m) for a, h, m in host.supported())


def requested_destination_filter(host: HostState, spec: RequestSpec) -> bool:
    if spec.only_hosts is not None and host.host not in spec.only_hosts:
        return False
    if spec.requested_host and host.host != spec.requested_host:
        return False
    return not spec.requested_node or host.host == spec.requested_node


def same_host_filter(host: HostState, spec: RequestSpec) -> bool:
    return not spec.same_host or host.host in spec.same_host


def different_host_filter(host: HostState, spec: RequestSpec) -> bool:
    return host.host not in spec.different_host


FILTERS: list[tuple[str, Callable[[HostState, RequestSpec], bool]]] = [
    ("ComputeFilter", compute_filter),
    ("RequestedDestinationFilter", requested_destination_filter),
    ("AvailabilityZoneFilter", availability_zone_filter),
    ("RamFilter", ram_filter),
    ("CoreFilter", core_filter),
    ("DiskFilter", disk_filter),
    ("ImagePropertiesFilter", image_properties_filter),
    ("ServerGroupAffinityFilter", affinity_filter),
    ("ServerGroupAntiAffinityFilter", anti_affinity_filter),
    ("SameHostFilter", same_host_filter),
    ("DifferentHostFilter", different_host_filter),
]


def _normalize(values: list[float]) -> list[float]:
    low, high = min(values), max(values)
    if high == low:
        return [0.0 for _ in values]
    return [(v - low) / (high - low) for v in values]


def weigh(hosts: list[HostState], spec: RequestSpec) -> list[HostState]:
    """Best first: most free RAM (spread), outweighed by a soft group policy; name breaks
    ties."""
    if not hosts:
        return []
    scores = _normalize([h.free_ram_mb for h in hosts])
    group = spec.group
    if group is not None and group.policy in ("soft-affinity", "soft-anti-affinity"):
        counts = [float(group.member_hosts.count(h.host)) for h in hosts]
        if group.policy == "soft-anti-affinity":
            counts = [-c for c in counts]
        scores = [a + GROUP_WEIGHT * b
                  for a, b in zip(scores, _normalize(counts), strict=True)]
    ranked = sorted(zip(scores, hosts, strict=True), key=lambda pair: (-pair[0], pair[1].host))
    return [host for _, host in ranked]


def select_hosts(hosts: Iterable[HostState], spec: RequestSpec) -> list[HostState]:
    """Hosts passing every filter, best first (empty: no valid host)."""
    candidates = list(hosts)
    for name, check in FILTERS:
        candidates = [h for h in candidates if check(h, spec)]
        if not candidates:
            log.info("scheduler: filter %s left no host for server %s", name, spec.server_id)
            return []
    return weigh(candidates, spec)


# -- the database side ------------------------------------------------------------------


class Scheduler:
    """Reads host states from the database and makes claims in it."""

    def __init__(self, settings: ComputeSettings, clock: Callable[[], dt.datetime]):
        self.settings = settings
        self.clock = clock

    def host_states(self, s: Session) -> list[HostState]:
        services = {svc.host: svc for svc in s.scalars(
            sa.select(Service).where(Service.binary == "nova-compute"))}
        placed: dict[str, set[str]] = {}
        for server_id, host in s.execute(sa.select(Server.id, Server.host).where(
                Server.deleted_at.is_(None), Server.host.is_not(None))):
            placed.setdefault(host, set()).add(server_id)
        down_after = dt.timedelta(seconds=self.settings.service_down_time)
        now = self.clock()
        states = []
        for node in s.scalars(sa.select(ComputeNode).order_by(ComputeNode.host)):
            service = services.get(node.host)
            up = (service is not None and not service.forced_down
                  and service.last_seen_up is not None
                  and now - service.last_seen_up <= down_after)
            states.append(HostState(
                host=node.host, node_id=node.id, availability_zone=node.availability_zone,
                vcpus=node.vcpus, memory_mb=node.memory_mb, local_gb=node.local_gb,
                claimed_vcpus=node.claimed_vcpus, claimed_memory_mb=node.claimed_memory_mb,
                claimed_disk_gb=node.claimed_disk_gb, cpu_ratio=self.settings.cpu_allocation_ratio,
                ram_ratio=self.settings.ram_allocation_ratio,
                disk_ratio=self.settings.disk_allocation_ratio,
                enabled=service is not None and not service.disabled, up=up,
                hypervisor_type=node.hypervisor_type,
                hypervisor_version=node.hypervisor_version, accelerator=node.accelerator,
                arch=canonical_arch((node.cpu_info or {}).get("arch") or "x86_64"),
                servers=placed.get(node.host, set())))
        return states

    def group_info(self, s: Session, server_id: str) -> GroupInfo | None:
        group = s.scalar(sa.select(ServerGroup).join(
            ServerGroupMember, ServerGroupMember.group_id == ServerGroup.id).where(
            ServerGroupMember.server_id == server_id))
        if group is None:
            return None
        return GroupInfo(id=group.id, policy=group.policy,
                         member_hosts=self._member_hosts(s, group.id, server_id),
                         max_server_per_host=int((group.rules or {}).get(
                             "max_server_per_host", 1)))

    @staticmethod
    def _member_hosts(s: Session, group_id: str, server_id: str, *,
                      lock: bool = False) -> list[str]:
        query = (sa.select(Server.host).join(ServerGroupMember,
                                              ServerGroupMember.server_id == Server.id)
                 .where(ServerGroupMember.group_id == group_id, Server.id != server_id,
                        Server.deleted_at.is_(None), Server.host.is_not(None)))
        if lock:
            query = query.with_for_update()
        return list(s.scalars(query))

    def claim(self, s: Session, host: HostState, spec: RequestSpec, *,
              kind: str = "server") -> bool:
        """Take ``spec``'s resources on ``host`` if they still fit; False if they do not.

        Runs in the caller's transaction: on True the node's counters and the
        ``Allocation`` row are written there, on False nothing is.
        """
        hard = spec.group is not None and spec.group.policy in ("affinity", "anti-affinity")
        if hard:
            s.execute(sa.select(ServerGroup.id).where(ServerGroup.id == spec.group.id)
                      .with_for_update())
            if not self._group_still_fits(s, host, spec):
                return False
        node = ComputeNode.__table__.c
        taken = s.execute(
            sa.update(ComputeNode.__table__)
            .where(node.id == host.node_id,
                   node.claimed_vcpus + spec.vcpus <= node.vcpus * host.cpu_ratio,
                   node.claimed_memory_mb + spec.memory_mb <= node.memory_mb * host.ram_ratio,
                   node.claimed_disk_gb + spec.disk_gb <= node.local_gb * host.disk_ratio)
            .values(claimed_vcpus=node.claimed_vcpus + spec.vcpus,
                    claimed_memory_mb=node.claimed_memory_mb + spec.memory_mb,
                    claimed_disk_gb=node.claimed_disk_gb + spec.disk_gb))
        if taken.rowcount != 1:
            return False
        if hard and not self._group_still_fits(s, host, spec):  # SQLite locks only now
            s.execute(
                sa.update(ComputeNode.__table__).where(node.id == host.node_id)
                .values(claimed_vcpus=node.claimed_vcpus - spec.vcpus,
                        claimed_memory_mb=node.claimed_memory_mb - spec.memory_mb,
                        claimed_disk_gb=node.claimed_disk_gb - spec.disk_gb))
            return False
        s.add(Allocation(server_id=spec.server_id, kind=kind, node_id=host.node_id,
                         vcpus=spec.vcpus, memory_mb=spec.memory_mb, disk_gb=spec.disk_gb))
        s.flush()
        return True

    def _group_still_fits(self, s: Session, host: HostState, spec: RequestSpec) -> bool:
        """The hard group policy, re-read under the group lock (the late check)."""
        group = spec.group
        assert group is not None
        if group.policy not in ("affinity", "anti-affinity"):
            return True
        hosts = self._member_hosts(s, group.id, spec.server_id, lock=True)
        fresh = GroupInfo(group.id, group.policy, hosts, group.max_server_per_host)
        probe = RequestSpec(spec.server_id, 0, 0, 0, group=fresh)
        return affinity_filter(host, probe) and anti_affinity_filter(host, probe)

    @staticmethod
    def release(s: Session, server_id: str, kind: str | None = None) -> None:
        """Give back what ``server_id`` holds (one ``kind``, or all); a second call is a no-op."""
        query = sa.select(Allocation).where(Allocation.server_id == server_id)
        if kind is not None:
            query = query.where(Allocation.kind == kind)
        node = ComputeNode.__table__.c
        for allocation in s.scalars(query.with_for_update()).all():
            gone = s.execute(sa.delete(Allocation).where(
                Allocation.server_id == allocation.server_id,
                Allocation.kind == allocation.kind))
            if gone.rowcount != 1:
                continue
            s.execute(sa.update(ComputeNode.__table__).where(node.id == allocation.node_id)
                      .values(claimed_vcpus=node.claimed_vcpus - allocation.vcpus,
                              claimed_memory_mb=node.claimed_memory_mb - allocation.memory_mb,
                              claimed_disk_gb=node.claimed_disk_gb - allocation.disk_gb))

    @staticmethod
    def rename(s: Session, server_id: str, old_kind: str, new_kind: str) -> None:
        s.execute(sa.update(Allocation).where(Allocation.server_id == server_id,
                                              Allocation.kind == old_kind)
                  .values(kind=new_kind))
