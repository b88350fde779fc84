"""IPAM against the database: give a port its fixed IPs, never one address twice.

``ipam.py`` chooses; this module makes the choice safe under concurrency:

1. the subnet's row is locked by bumping ``ipam_generation`` (a row lock on
   MariaDB and PostgreSQL, the write lock on SQLite), so allocations on one
   subnet take turns;
2. the taken addresses are read with a locking read, which sees the latest
   committed rows even inside a MariaDB repeatable-read snapshot;
3. the new ``IpAllocation`` is flushed under its primary key (subnet,
   address): should two requests still meet, the loser's transaction is
   retried (``Retry``) and chooses again from the addresses now taken.

Automatic allocation takes one IPv4 address from the first IPv4 subnet with
room, one from the first stateful IPv6 subnet with room, and the SLAAC
address of every SLAAC subnet, as Neutron does. Requested addresses must be
inside a subnet of the port's network and free; the gateway address may be
asked for (a port made to become a router interface), as in Neutron.
"""

from __future__ import annotations

import ipaddress
import random

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tinystack.network import ipam
from tinystack.network.errors import (
    InvalidInput,
    InvalidIpForNetwork,
    IpAddressAlreadyAllocated,
    IpAddressGenerationFailure,
)
from tinystack.network.models import IpAllocation, Network, Port, Subnet
from tinystack.network.service import Retry

__all__ = ["allocate", "subnets_of", "taken", "allocated", "MAX_FIXED_IPS", "SLAAC_MODES"]

MAX_FIXED_IPS = 5
SLAAC_MODES = ("slaac", "dhcpv6-stateless")
_rng = random.SystemRandom()


def subnets_of(s: Session, network_id: str) -> list[Subnet]:
    return list(s.scalars(sa.select(Subnet).where(Subnet.network_id == network_id).order_by(
        Subnet.created_at, Subnet.id)))


def _lock(s: Session, subnet: Subnet, locked: set[str]) -> None:
    if subnet.id not in locked:
        s.execute(sa.update(Subnet).where(Subnet.id == subnet.id).values(
            ipam_generation=Subnet.ipam_generation + 1).execution_options(
            synchronize_session=False))
        locked.add(subnet.id)


def allocated(s: Session, subnet: Subnet) -> set[int]:
    """Addresses allocated on ``subnet`` now (a locking read), as integers."""
    rows = s.scalars(sa.select(IpAllocation.ip_address).where(
        IpAllocation.subnet_id == subnet.id).with_for_update())
    return {int(ipaddress.ip_address(r)) for r in rows}


def taken(s: Session, subnet: Subnet) -> set[int]:
    """Addresses automatic allocation must not hand out: allocated ones and the gateway."""
    return allocated(s, subnet) | _gateway(subnet)


def _gateway(subnet: Subnet) -> set[int]:
    return {int(ipaddress.ip_address(subnet.gateway_ip))} if subnet.gateway_ip else set()


def _pools(subnet: Subnet) -> list[ipam.Pool]:
    return [(int(ipaddress.ip_address(p.first_ip)), int(ipaddress.ip_address(p.last_ip)))
            for p in subnet.pools]


def _slaac(subnet: Subnet) -> bool:
    return subnet.ip_version == 6 and subnet.ipv6_address_mode in SLAAC_MODES


class _Allocation:
    """The allocations of one port in one transaction."""

    def __init__(self, s: Session, network: Network, port: Port):
        self.s, self.network, self.port = s, network, port
        self.locked: set[str] = set()
        self.attempt = int(s.info.get("attempt", 0))
        self.added: list[tuple[str, str]] = []

    def add(self, subnet: Subnet, address: str) -> None:
        self.added.append((subnet.id, address))
        self.port.fixed_ips.append(IpAllocation(
            subnet_id=subnet.id, ip_address=address, port_id=self.port.id,
            network_id=self.network.id, position=len(self.port.fixed_ips)))

    def specific(self, subnet: Subnet, requested: str) -> None:
        address = ipam.check_address(ipam.parse_cidr(subnet.cidr), requested)
        _lock(self.s, subnet, self.locked)
        value = int(ipaddress.ip_address(address))
        if value in allocated(self.s, subnet) or (subnet.id, address) in self.added:
            raise IpAddressAlreadyAllocated(ip=address, subnet_id=subnet.id)
        self.add(subnet, address)

    def any_from(self, subnet: Subnet) -> bool:
        """One free address of ``subnet`` (its SLAAC address there); False when full."""
        if _slaac(subnet):
            self.add(subnet, ipam.eui64_address(ipam.parse_cidr(subnet.cidr),
                                                self.port.mac_address))
            return True
        _lock(self.s, subnet, self.locked)
        used = taken(self.s, subnet) | {int(ipaddress.ip_address(a)) for sid, a in self.added
                                        if sid == subnet.id}
        value = ipam.pick(_pools(subnet), used, self.attempt, _rng)
        if value is None:
            return False
        self.add(subnet, ipam.to_text(subnet.ip_version, value))
        return True


def allocate(s: Session, network: Network, port: Port, requests: list[dict] | None) -> None:
    """Give ``port`` its fixed IPs: ``requests`` as the API's ``fixed_ips``, None for automatic.

    Raises Neutron's errors for a bad or taken request and ``Retry`` when an
    insert lost a race.
    """
    job = _Allocation(s, network, port)
    subnets = subnets_of(s, network.id)
    by_id = {subnet.id: subnet for subnet in subnets}
    if requests is None:
        _automatic(job, network, subnets)
    else:
        if len(requests) > MAX_FIXED_IPS:
            raise InvalidInput(error_message="Exceeded maximum amount of fixed ips per port.")
        for request in requests:
            subnet = _subnet_for(request, network, subnets, by_id)
            if request.get("ip_address"):
                job.specific(subnet, request["ip_address"])
            elif not job.any_from(subnet):
                raise IpAddressGenerationFailure(net_id=network.id)
    try:
        s.flush()
    except IntegrityError:
        raise Retry() from None


def _automatic(job: _Allocation, network: Network, subnets: list[Subnet]) -> None:
    for version in (4, 6):
        stateful = [x for x in subnets if x.ip_version == version and not _slaac(x)]
        if stateful and not any(job.any_from(x) for x in stateful):
            raise IpAddressGenerationFailure(net_id=network.id)
    for subnet in subnets:
        if _slaac(subnet):
            job.any_from(subnet)


def _subnet_for(request: dict, network: Network, subnets: list[Subnet],
                by_id: dict[str, Subnet]) -> Subnet:
    subnet_id = request.get("subnet_id")
    if subnet_id:
        if subnet_id not in by_id:
            raise InvalidInput(error_message=(
                f"Failed to create port on network {network.id}, because fixed_ips included "
                f"invalid subnet {subnet_id}"))
        return by_id[subnet_id]
    address = request.get("ip_address")
    if not address:
        raise InvalidInput(error_message="IP allocation requires subnet_id or ip_address")
    value = ipam.parse_address(address)
    for subnet in subnets:
        if value in ipam.parse_cidr(subnet.cidr):
            return subnet
    raise InvalidIpForNetwork(ip_address=address)
