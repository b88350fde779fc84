"""Address arithmetic and allocation choices, with no database: pure functions.

A subnet is an ``ipaddress`` network; its allocation pools are inclusive
``(first, last)`` ranges of integers. This module says which pools a subnet
gets by default (every usable address but the gateway, as Neutron does),
checks pools given by a user (inside the subnet, not overlapping, not
covering the gateway), and picks an address to hand out:

- ``pick(pools, taken, attempt)``: the lowest free address on the first
  attempt, then a random one among the first few free ones, so retries after
  losing a race spread out instead of colliding again; None when the pools
  are exhausted;
- ``check_address``: whether a requested address may be asked for at all.

It also makes MAC addresses (Neutron's ``fa:16:3e`` prefix), SLAAC addresses
from a MAC (EUI-64) and picks a free VNI. The database is what really keeps
an address from being handed out twice: ``ports.py`` takes the choice made
here and inserts it under a primary key on (subnet, address).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Iterator, Sequence

from tinystack.network.errors import (
    GatewayConflictWithAllocationPools,
    invalid_attribute,
    InvalidAllocationPool,
    InvalidInput,
    InvalidIpForSubnet,
    OutOfBoundsAllocationPool,
    OverlappingAllocationPools,
)

__all__ = [
    "IPNetwork", "Pool", "parse_cidr", "parse_address", "default_gateway", "default_pools",
    "check_pools", "check_gateway", "check_address", "free_addresses", "pick", "pool_size",
    "in_pools", "random_mac", "normalize_mac", "eui64_address", "lowest_free", "overlaps",
    "to_text", "host_range", "MAC_PREFIX", "CANDIDATES",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Pool = tuple[int, int]
MAC_PREFIX = "fa:16:3e"
CANDIDATES = 16
"""How many of the lowest free addresses a retry chooses from."""


def parse_cidr(text: str, ip_version: int | None = None) -> IPNetwork:
    """A subnet CIDR; 400 if it is not one or has host bits set (Neutron's wording)."""
    text = str(text).strip()
    try:
        interface = ipaddress.ip_interface(text)
    except ValueError:
        raise invalid_attribute("cidr", f"'{text}' is not a valid IP subnet") from None
    network = interface.network
    if "/" not in text or interface.ip != network.network_address:
        raise invalid_attribute("cidr", f"'{text}' isn't a recognized IP subnet cidr, "
                                        f"'{network}' is recommended")
    if ip_version is not None and network.version != ip_version:
        raise InvalidInput(error_message=(
            f"Cidr {text} does not match the IP version {ip_version}"))
    return network


def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(str(text).strip())
    except ValueError:
        raise InvalidInput(error_message=f"'{text}' is not a valid IP address") from None


def to_text(version: int, value: int) -> str:
    return str(ipaddress.ip_address(value) if version == 4 else ipaddress.IPv6Address(value))


def host_range(network: IPNetwork) -> Pool:
    """The usable host range: IPv4 drops the network and broadcast addresses (below /31),
    IPv6 drops the subnet-router anycast address (the network address)."""
    first, last = int(network.network_address), int(network.broadcast_address)
    if network.version == 4:
        if network.prefixlen <= 30:
            return first + 1, last - 1
        return first, last
    if network.prefixlen <= 127:
        return first + 1, last
    return first, last


def default_gateway(network: IPNetwork) -> str:
    """The first usable address, as Neutron chooses when no gateway is given."""
    return to_text(network.version, host_range(network)[0])


def _without(pools: list[Pool], value: int) -> list[Pool]:
    out = []
    for first, last in pools:
        if first <= value <= last:
            if first < value:
                out.append((first, value - 1))
            if value < last:
                out.append((value + 1, last))
        else:
            out.append((first, last))
    return out


def default_pools(network: IPNetwork, gateway: str | None) -> list[Pool]:
    """Every usable address of the subnet except the gateway, as inclusive ranges."""
    pools = [host_range(network)]
    if gateway is not None:
        pools = _without(pools, int(ipaddress.ip_address(gateway)))
    return pools


def _pool_text(version: int, pool: Pool) -> str:
    return f"{to_text(version, pool[0])}-{to_text(version, pool[1])}"


def check_pools(network: IPNetwork, ranges: Sequence[tuple[str, str]],
                gateway: str | None) -> list[Pool]:
    """Pools given as (start, end) text, checked and sorted; raises Neutron's pool errors."""
    pools: list[Pool] = []
    low, high = host_range(network)
    for start_text, end_text in ranges:
        pool_text = f"{start_text}-{end_text}"
        try:
            start, end = ipaddress.ip_address(start_text), ipaddress.ip_address(end_text)
        except ValueError:
            raise InvalidAllocationPool(pool=pool_text) from None
        if start.version != network.version or end.version != network.version:
            raise InvalidAllocationPool(pool=pool_text)
        first, last = int(start), int(end)
        if first > last:
            raise InvalidAllocationPool(pool=pool_text)
        if first < low or last > high:
            raise OutOfBoundsAllocationPool(pool=pool_text, subnet_cidr=str(network))
        pools.append((first, last))
    pools.sort()
    for (a_first, a_last), (b_first, b_last) in zip(pools, pools[1:]):
        if b_first <= a_last:
            raise OverlappingAllocationPools(
                pool_1=_pool_text(network.version, (a_first, a_last)),
                pool_2=_pool_text(network.version, (b_first, b_last)),
                subnet_cidr=str(network))
    if gateway is not None:
        value = int(ipaddress.ip_address(gateway))
        for pool in pools:
            if pool[0] <= value <= pool[1]:
                raise GatewayConflictWithAllocationPools(
                    ip_address=gateway, pool=_pool_text(network.version, pool))
    return pools


def check_gateway(network: IPNetwork, gateway: str) -> str:
    """A gateway address in canonical text; 400 when it cannot be one on this subnet."""
    address = parse_address(gateway)
    if address.version != network.version:
        raise InvalidInput(error_message="Gateway IP version inconsistent with allocation "
                                         "pool version")
    if network.version == 4 and network.prefixlen <= 30 and address in network and (
            address in (network.network_address, network.broadcast_address)):
        raise InvalidInput(error_message="Gateway is not valid on subnet")
    return str(address)


def check_address(network: IPNetwork, address: str) -> str:
    """A requested fixed IP in canonical text; InvalidIpForSubnet unless it is usable here."""
    try:
        value = ipaddress.ip_address(str(address).strip())
    except ValueError:
        raise InvalidInput(error_message=f"'{address}' is not a valid IP address") from None
    low, high = host_range(network)
    if value.version != network.version or not low <= int(value) <= high:
        raise InvalidIpForSubnet(ip_address=address)
    return str(value)


def in_pools(pools: Iterable[Pool], value: int) -> bool:
    return any(first <= value <= last for first, last in pools)


def pool_size(pools: Iterable[Pool]) -> int:
    return sum(last - first + 1 for first, last in pools)


def free_addresses(pools: Sequence[Pool], taken: set[int]) -> Iterator[int]:
    """Free addresses in pool order; cheap even for huge IPv6 pools when few are taken."""
    for first, last in pools:
        value = first
        while value <= last:
            if value not in taken:
                yield value
            value += 1


def pick(pools: Sequence[Pool], taken: set[int], attempt: int = 0,
         rng: random.Random | None = None) -> int | None:
    """The address to try on ``attempt`` (0 first), or None when the pools are exhausted."""
    if attempt == 0:
        return next(free_addresses(pools, taken), None)
    candidates = []
    for value in free_addresses(pools, taken):
        candidates.append(value)
        if len(candidates) >= CANDIDATES:
            break
    if not candidates:
        return None
    return (rng or random).choice(candidates)


def random_mac(rng: random.Random | None = None, prefix: str = MAC_PREFIX) -> str:
    """A MAC address under Neutron's base_mac prefix."""
    rng = rng or random
    return prefix + "".join(f":{rng.randrange(256):02x}" for _ in range(3))


def normalize_mac(text: str) -> str:
    """A unicast MAC in lower-case colon form; 400 otherwise."""
    parts = str(text).strip().replace("-", ":").split(":")
    try:
        if len(parts) != 6 or any(len(p) != 2 for p in parts):
            raise ValueError
        octets = [int(p, 16) for p in parts]
    except ValueError:
        raise InvalidInput(error_message=f"'{text}' is not a valid MAC address") from None
    if octets[0] & 1 or octets == [0] * 6:
        raise InvalidInput(error_message=f"'{text}' is not a valid MAC address")
    return ":".join(f"{o:02x}" for o in octets)


def eui64_address(network: IPNetwork, mac: str) -> str:
    """The SLAAC address a host with ``mac`` takes on an IPv6 /64."""
    octets = [int(p, 16) for p in mac.split(":")]
    octets[0] ^= 0x02
    interface = octets[:3] + [0xFF, 0xFE] + octets[3:]
    value = int(network.network_address) | int.from_bytes(bytes(interface), "big")
    return str(ipaddress.IPv6Address(value))


def lowest_free(low: int, high: int, used: Iterable[int]) -> int | None:
    """The lowest integer of ``[low, high]`` not in ``used`` (a VNI), or None."""
    taken = set(used)
    for value in range(low, high + 1):
        if value not in taken:
            return value
    return None


def overlaps(a: IPNetwork, b: IPNetwork) -> bool:
    return a.version == b.version and a.overlaps(b)
