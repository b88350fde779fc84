"""IPAM's pure logic: default pools, pool checks, picking addresses, MACs, VNIs.

Examples pin Neutron's behaviour; hypothesis properties check that whatever
the subnet, pools and taken addresses, ``pick`` only hands out free
addresses inside the pools and runs dry exactly when they are full.
"""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinystack.common.errors import BadRequest
from tinystack.network import ipam
from tinystack.network.errors import (
    GatewayConflictWithAllocationPools,
    InvalidAllocationPool,
    InvalidIpForSubnet,
    OutOfBoundsAllocationPool,
    OverlappingAllocationPools,
)


def _text(network, pools):
    return [(ipam.to_text(network.version, a), ipam.to_text(network.version, b))
            for a, b in pools]


# -- examples ---------------------------------------------------------------------------


def test_default_pools_leave_out_network_broadcast_and_gateway():
    network = ipam.parse_cidr("10.0.0.0/26")
    assert ipam.default_gateway(network) == "10.0.0.1"
    assert _text(network, ipam.default_pools(network, "10.0.0.1")) == [
        ("10.0.0.2", "10.0.0.62")]


def test_a_gateway_inside_the_range_splits_the_default_pool():
    network = ipam.parse_cidr("172.24.4.0/24")
    assert _text(network, ipam.default_pools(network, "172.24.4.100")) == [
        ("172.24.4.1", "172.24.4.99"), ("172.24.4.101", "172.24.4.254")]


def test_no_gateway_leaves_every_host_address():
    network = ipam.parse_cidr("192.168.0.0/30")
    assert _text(network, ipam.default_pools(network, None)) == [
        ("192.168.0.1", "192.168.0.2")]


def test_ipv6_pools_run_to_the_last_address():
    network = ipam.parse_cidr("fd00::/120")
    assert _text(network, ipam.default_pools(network, "fd00::1")) == [("fd00::2", "fd00::ff")]


@pytest.mark.parametrize("text, message", [
    ("10.0.0.1/24", "'10.0.0.1/24' isn't a recognized IP subnet cidr, '10.0.0.0/24' is "
                    "recommended"),
    ("10.0.0.0", "isn't a recognized IP subnet cidr"),
    ("banana", "'banana' is not a valid IP subnet"),
])
def test_a_malformed_cidr_is_refused_as_neutron_words_it(text, message):
    with pytest.raises(BadRequest) as caught:
        ipam.parse_cidr(text)
    assert message in caught.value.message
    assert caught.value.message.startswith("Invalid input for cidr. Reason: ")


def test_pool_checks_name_neutrons_errors():
    network = ipam.parse_cidr("10.0.0.0/24")
    with pytest.raises(OutOfBoundsAllocationPool):
        ipam.check_pools(network, [("10.0.0.2", "10.0.1.5")], "10.0.0.1")
    with pytest.raises(OutOfBoundsAllocationPool):
        ipam.check_pools(network, [("10.0.0.0", "10.0.0.5")], None)
    with pytest.raises(InvalidAllocationPool):
        ipam.check_pools(network, [("10.0.0.9", "10.0.0.5")], None)
    with pytest.raises(InvalidAllocationPool):
        ipam.check_pools(network, [("10.0.0.x", "10.0.0.5")], None)
    with pytest.raises(OverlappingAllocationPools):
        ipam.check_pools(network, [("10.0.0.2", "10.0.0.9"), ("10.0.0.9", "10.0.0.20")], None)
    with pytest.raises(GatewayConflictWithAllocationPools):
        ipam.check_pools(network, [("10.0.0.1", "10.0.0.9")], "10.0.0.1")
    assert ipam.check_pools(network, [("10.0.0.50", "10.0.0.60"), ("10.0.0.2", "10.0.0.9")],
                            "10.0.0.1")[0] == (int(ipaddress.ip_address("10.0.0.2")),
                                               int(ipaddress.ip_address("10.0.0.9")))


def test_a_requested_address_must_be_a_host_of_the_subnet():
    network = ipam.parse_cidr("10.0.0.0/24")
    assert ipam.check_address(network, "10.0.0.7") == "10.0.0.7"
    for bad in ("10.0.0.0", "10.0.0.255", "10.0.1.7", "fd00::7"):
        with pytest.raises(InvalidIpForSubnet):
            ipam.check_address(network, bad)


def test_pick_takes_the_lowest_free_address_first():
    pools = [(10, 12), (20, 21)]
    assert ipam.pick(pools, set()) == 10
    assert ipam.pick(pools, {10, 11, 12}) == 20
    assert ipam.pick(pools, {10, 11, 12, 20, 21}) is None


def test_macs_carry_neutrons_prefix_and_are_unicast():
    mac = ipam.random_mac(random.Random(1))
    assert mac.startswith("fa:16:3e:") and len(mac) == 17
    assert ipam.normalize_mac("FA-16-3E-00-11-22") == "fa:16:3e:00:11:22"
    for bad in ("01:00:5e:00:00:01", "00:00:00:00:00:00", "fa:16:3e:00:11", "zz:16:3e:00:11:22"):
        with pytest.raises(BadRequest):
            ipam.normalize_mac(bad)


def test_slaac_addresses_follow_eui64():
    network = ipam.parse_cidr("2001:db8::/64")
    assert ipam.eui64_address(network, "fa:16:3e:12:34:56") == "2001:db8::f816:3eff:fe12:3456"


def test_the_lowest_free_vni():
    assert ipam.lowest_free(1, 5, [1, 2, 4]) == 3
    assert ipam.lowest_free(1, 3, [1, 2, 3]) is None


# -- properties ---------------------------------------------------------------------------

SHARED_MACHINE = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""Timing-based checks fail on a busy machine; these properties are about results."""


@st.composite
def subnets(draw):
    """An IPv4 or IPv6 subnet small enough to fill, and a gateway (or none)."""
    if draw(st.booleans()):
        prefix = draw(st.integers(min_value=24, max_value=30))
        base = draw(st.integers(min_value=0, max_value=2 ** 32 - 1))
        network = ipaddress.ip_network((base >> (32 - prefix) << (32 - prefix), prefix))
    else:
        prefix = draw(st.integers(min_value=120, max_value=126))
        base = draw(st.integers(min_value=0, max_value=2 ** 128 - 1))
        network = ipaddress.ip_network((base >> (128 - prefix) << (128 - prefix), prefix))
    low, high = ipam.host_range(network)
    gateway = draw(st.none() | st.integers(low, high))
    return network, (None if gateway is None else ipam.to_text(network.version, gateway))


@SHARED_MACHINE
@given(subnets())
def test_default_pools_cover_every_host_but_the_gateway(case):
    network, gateway = case
    pools = ipam.default_pools(network, gateway)
    low, high = ipam.host_range(network)
    covered = {v for first, last in pools for v in range(first, last + 1)}
    expected = set(range(low, high + 1)) - (
        {int(ipaddress.ip_address(gateway))} if gateway else set())
    assert covered == expected
    assert pools == sorted(pools) and all(a <= b for a, b in pools)
    if pools:
        assert ipam.check_pools(network, _text(network, pools), gateway) == pools


@SHARED_MACHINE
@given(subnets(), st.data())
def test_pick_hands_out_each_free_address_once_then_stops(case, data):
    network, gateway = case
    pools = ipam.default_pools(network, gateway)
    in_pools = [v for first, last in pools for v in range(first, last + 1)]
    taken = set(data.draw(st.lists(st.sampled_from(in_pools) if in_pools else st.nothing(),
                                   unique=True)))
    rng = random.Random(data.draw(st.integers()))
    handed = []
    for attempt in range(len(in_pools) + 2):
        value = ipam.pick(pools, taken, attempt % 3, rng)
        if value is None:
            break
        assert value not in taken
        assert ipam.in_pools(pools, value)
        taken.add(value)
        handed.append(value)
    assert ipam.pick(pools, taken, 0, rng) is None
    assert set(in_pools) == taken
    assert len(handed) == len(set(handed))


@given(subnets(), st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), max_size=4))
@settings(SHARED_MACHINE, max_examples=200)
def test_accepted_pools_lie_inside_the_subnet_and_never_overlap(case, offsets):
    network, gateway = case
    low, high = ipam.host_range(network)
    last = network.num_addresses - 1
    ranges = [(ipam.to_text(network.version, int(network.network_address) + min(a, last)),
               ipam.to_text(network.version, int(network.network_address) + min(b, last)))
              for a, b in offsets]
    try:
        pools = ipam.check_pools(network, ranges, gateway)
    except (InvalidAllocationPool, OutOfBoundsAllocationPool, OverlappingAllocationPools,
            GatewayConflictWithAllocationPools):
        return
    for (first, last), (next_first, _) in zip(pools, pools[1:]):
        assert last < next_first
    for first, last in pools:
        assert low <= first <= last <= high
        if gateway:
            assert not first <= int(ipaddress.ip_address(gateway)) <= last


@SHARED_MACHINE
@given(st.lists(st.integers(1, 50), unique=True), st.integers(1, 40), st.integers(0, 40))
def test_lowest_free_is_the_smallest_unused_in_range(used, low, span):
    high = low + span
    found = ipam.lowest_free(low, high, used)
    free = [v for v in range(low, high + 1) if v not in used]
    assert found == (free[0] if free else None)


@SHARED_MACHINE
@given(st.binary(min_size=3, max_size=3))
def test_macs_round_trip(suffix):
    mac = ipam.MAC_PREFIX + "".join(f":{b:02x}" for b in suffix)
    assert ipam.normalize_mac(mac.upper()) == mac
