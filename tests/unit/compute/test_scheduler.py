"""Every scheduler filter and the weigher, on hand-made host states."""

from __future__ import annotations

import pytest

from tinystack.compute import scheduler as sched
from tinystack.compute.scheduler import GroupInfo, HostState, RequestSpec


def host(name: str = "h1", **kw) -> HostState:
    base = dict(vcpus=2, memory_mb=1024, local_gb=10, cpu_ratio=1.0, ram_ratio=1.0,
                disk_ratio=1.0)
    base.update(kw)
    return HostState(host=name, **base)


def spec(**kw) -> RequestSpec:
    base = dict(server_id="s1", vcpus=1, memory_mb=512, disk_gb=1)
    base.update(kw)
    return RequestSpec(**base)


def test_ram_filter_counts_claims_and_the_ratio():
    assert sched.ram_filter(host(claimed_memory_mb=512), spec(memory_mb=512))
    assert not sched.ram_filter(host(claimed_memory_mb=513), spec(memory_mb=512))
    assert sched.ram_filter(host(claimed_memory_mb=1024, ram_ratio=1.5), spec(memory_mb=512))


def test_core_filter():
    assert sched.core_filter(host(claimed_vcpus=1), spec(vcpus=1))
    assert not sched.core_filter(host(claimed_vcpus=2), spec(vcpus=1))
    assert sched.core_filter(host(claimed_vcpus=2, cpu_ratio=16.0), spec(vcpus=4))


def test_disk_filter():
    assert sched.disk_filter(host(claimed_disk_gb=9), spec(disk_gb=1))
    assert not sched.disk_filter(host(claimed_disk_gb=10), spec(disk_gb=1))


def test_availability_zone_filter():
    assert sched.availability_zone_filter(host(availability_zone="az1"), spec())
    assert sched.availability_zone_filter(host(availability_zone="az1"),
                                          spec(availability_zone="az1"))
    assert not sched.availability_zone_filter(host(availability_zone="nova"),
                                              spec(availability_zone="az1"))


@pytest.mark.parametrize("enabled, up, passes", [(True, True, True), (False, True, False),
                                                 (True, False, False)])
def test_compute_filter_wants_an_enabled_service_that_is_up(enabled, up, passes):
    assert sched.compute_filter(host(enabled=enabled, up=up), spec()) is passes


def test_affinity_filter():
    group = GroupInfo("g", "affinity", ["h1"])
    assert sched.affinity_filter(host("h1"), spec(group=group))
    assert not sched.affinity_filter(host("h2"), spec(group=group))
    first = GroupInfo("g", "affinity", [])
    assert sched.affinity_filter(host("h2"), spec(group=first))


def test_anti_affinity_filter_and_max_server_per_host():
    group = GroupInfo("g", "anti-affinity", ["h1"])
    assert not sched.anti_affinity_filter(host("h1"), spec(group=group))
    assert sched.anti_affinity_filter(host("h2"), spec(group=group))
    two = GroupInfo("g", "anti-affinity", ["h1"], max_server_per_host=2)
    assert sched.anti_affinity_filter(host("h1"), spec(group=two))
    full = GroupInfo("g", "anti-affinity", ["h1", "h1"], max_server_per_host=2)
    assert not sched.anti_affinity_filter(host("h1"), spec(group=full))


def test_soft_policies_never_filter():
    for policy in ("soft-affinity", "soft-anti-affinity"):
        group = GroupInfo("g", policy, ["h1"])
        assert sched.affinity_filter(host("h2"), spec(group=group))
        assert sched.anti_affinity_filter(host("h1"), spec(group=group))


@pytest.mark.parametrize("props, passes", [
    ({}, True),
    ({"hw_architecture": "x86_64"}, True),
    ({"architecture": "amd64"}, True),
    ({"hw_architecture": "aarch64"}, False),
    ({"img_hv_type": "qemu"}, True),
    ({"hypervisor_type": "kvm"}, False),
    ({"hw_vm_mode": "hvm"}, True),
    ({"vm_mode": "xen"}, False),
    ({"img_hv_requested_version": ">=7.0"}, True),
    ({"img_hv_requested_version": ">=8.0"}, False),
])
def test_image_properties_filter(props, passes):
    node = host(hypervisor_version=7002000, accelerator="tcg")
    assert sched.image_properties_filter(node, spec(image_properties=props)) is passes


def test_image_properties_filter_kvm_host_runs_kvm_images():
    node = host(accelerator="kvm")
    assert sched.image_properties_filter(node, spec(image_properties={"img_hv_type": "kvm"}))


def test_requested_destination_filter():
    assert sched.requested_destination_filter(host("h1"), spec(requested_host="h1"))
    assert not sched.requested_destination_filter(host("h2"), spec(requested_host="h1"))
    assert not sched.requested_destination_filter(host("h2"), spec(requested_node="h1"))
    assert not sched.requested_destination_filter(host("h2"), spec(only_hosts={"h1"}))


def test_same_and_different_host_filters():
    assert sched.same_host_filter(host("h1"), spec(same_host={"h1"}))
    assert not sched.same_host_filter(host("h2"), spec(same_host={"h1"}))
    assert sched.same_host_filter(host("h2"), spec())
    assert not sched.different_host_filter(host("h1"), spec(different_host={"h1"}))
    assert sched.different_host_filter(host("h2"), spec(different_host={"h1"}))


def test_weigher_spreads_over_the_most_free_ram():
    hosts = [host("a", claimed_memory_mb=512), host("b"), host("c", claimed_memory_mb=256)]
    assert [h.host for h in sched.weigh(hosts, spec())] == ["b", "c", "a"]


def test_weigher_breaks_ties_by_name():
    assert [h.host for h in sched.weigh([host("b"), host("a")], spec())] == ["a", "b"]


def test_soft_anti_affinity_weighs_against_hosts_with_members():
    group = GroupInfo("g", "soft-anti-affinity", ["a"])
    ranked = sched.weigh([host("a"), host("b", claimed_memory_mb=100)], spec(group=group))
    assert [h.host for h in ranked] == ["b", "a"]


def test_soft_affinity_weighs_for_hosts_with_members():
    group = GroupInfo("g", "soft-affinity", ["b"])
    ranked = sched.weigh([host("a"), host("b", claimed_memory_mb=100)], spec(group=group))
    assert [h.host for h in ranked] == ["b", "a"]


def test_select_hosts_applies_every_filter():
    hosts = [host("full", claimed_memory_mb=1024), host("off", enabled=False),
             host("other-zone", availability_zone="az9"), host("ok")]
    assert [h.host for h in sched.select_hosts(hosts, spec(availability_zone="nova"))] == ["ok"]
    assert [h.host for h in sched.select_hosts(hosts, spec())] == ["ok", "other-zone"]
    assert sched.select_hosts(hosts, spec(memory_mb=4096)) == []


def test_canonical_arch():
    assert sched.canonical_arch("AMD64") == "x86_64"
    assert sched.canonical_arch("i386") == "i686"
