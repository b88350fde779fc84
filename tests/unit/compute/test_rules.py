"""Pure pieces of the compute service: microversions, states, quota messages, metadata,
extra specs and key fingerprints."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from tinystack.common.errors import BadRequest
from tinystack.compute import extra_specs, keypairs, metadata, quotas, states
from tinystack.compute.microversions import MAX, Microversion, NotAcceptable, requested


@pytest.mark.parametrize("headers, version", [
    ({}, "2.1"),
    ({"openstack-api-version": "compute 2.47"}, "2.47"),
    ({"x-openstack-nova-api-version": "2.10"}, "2.10"),
    ({"openstack-api-version": "compute latest"}, str(MAX)),
    ({"openstack-api-version": "volume 3.1"}, "2.1"),
])
def test_requested_version(headers, version):
    assert requested(headers) == Microversion.parse(version)


def test_versions_compare_numerically():
    assert Microversion(2, 10) > "2.9"
    assert Microversion(2, 100) >= "2.99"
    assert Microversion.parse("2.5") == "2.5"
    assert str(Microversion(2, 47)) == "2.47"


@pytest.mark.parametrize("text", ["2", "2.x", "2.01a", "", "latest-ish"])
def test_malformed_versions_are_400(text):
    with pytest.raises(BadRequest):
        requested({"x-openstack-nova-api-version": text or "bad"})


def test_versions_out_of_range_are_406():
    with pytest.raises(NotAcceptable):
        requested({"x-openstack-nova-api-version": "2.0"})
    with pytest.raises(NotAcceptable):
        requested({"x-openstack-nova-api-version": f"2.{MAX.minor + 1}"})


@pytest.mark.parametrize("vm_state, task_state, status", [
    ("building", "scheduling", "BUILD"), ("active", None, "ACTIVE"),
    ("active", "rebooting", "REBOOT"), ("active", "rebooting_hard", "HARD_REBOOT"),
    ("active", "powering-off", "ACTIVE"), ("stopped", None, "SHUTOFF"),
    ("active", "resize_prep", "RESIZE"), ("resized", None, "VERIFY_RESIZE"),
    ("resized", "resize_reverting", "REVERT_RESIZE"), ("active", "rebuilding", "REBUILD"),
    ("paused", None, "PAUSED"), ("suspended", None, "SUSPENDED"), ("error", None, "ERROR"),
    ("deleted", None, "DELETED"), ("active", "image_snapshot", "ACTIVE"),
    ("nonsense", None, "UNKNOWN"),
])
def test_status_of(vm_state, task_state, status):
    assert states.status_of(vm_state, task_state) == status


def test_quota_message_is_novas():
    error = quotas.too_many_instances(
        ["cores", "ram"], {"cores": 2, "ram": 512}, {"cores": 19, "ram": 51000},
        {"cores": 20, "ram": 51200})
    assert error.code == 403
    assert error.message == ("Quota exceeded for cores, ram: Requested 2, 512, but already "
                             "used 19, 51000 of 20, 51200 cores, ram")


def test_visible_quota_keys_by_version():
    assert "floating_ips" in quotas.visible(Microversion(2, 35))
    assert "floating_ips" not in quotas.visible(Microversion(2, 36))
    assert "injected_files" in quotas.visible(Microversion(2, 56))
    assert "injected_files" not in quotas.visible(Microversion(2, 57))


FACTS = metadata.ServerFacts(
    id="7c9d3a80-0000-4000-8000-000000000001", name="web", hostname="web", project_id="p1",
    availability_zone="nova", flavor_name="m1.nano", image_id="img", key_name="k",
    key_data="ssh-ed25519 AAAA k", metadata={"a": "b"}, user_data=b"#!/bin/sh\n",
    security_groups=("default",))


def test_signature_is_hmac_sha256_of_the_instance_id():
    """What Neutron's metadata agent sends: hex HMAC-SHA256 of the id under the secret."""
    expected = hmac.new(b"secret", b"abc", hashlib.sha256).hexdigest()
    assert metadata.sign("secret", "abc") == expected
    assert metadata.sign("secret", "abc") != metadata.sign("other", "abc")


def test_meta_data_json():
    body = metadata.meta_data(FACTS)
    assert body["uuid"] == FACTS.id and body["meta"] == {"a": "b"}
    assert body["public_keys"] == {"k": "ssh-ed25519 AAAA k"}
    assert body["keys"] == [{"name": "k", "type": "ssh", "data": "ssh-ed25519 AAAA k"}]


def test_config_drive_files():
    files = metadata.build_files(FACTS)
    assert json.loads(files["openstack/latest/meta_data.json"])["name"] == "web"
    assert files["openstack/latest/user_data"] == "#!/bin/sh\n"
    assert json.loads(files["openstack/latest/network_data.json"])["links"] == []
    ec2 = json.loads(files["ec2/latest/meta-data.json"])
    assert ec2["instance-id"] == FACTS.id
    assert ec2["public-keys"]["0"]["openssh-key"] == "ssh-ed25519 AAAA k"


def test_network_data_from_port_bindings():
    ports = ({"port_id": "p-123456789012345", "mac": "fa:16:3e:00:00:01", "mtu": 1450,
              "fixed_ips": [{"ip_address": "10.0.0.5", "network_id": "n1"}]},)
    facts = metadata.ServerFacts(**{**FACTS.__dict__, "ports": ports})
    data = metadata.network_data(facts)
    assert data["links"][0]["ethernet_mac_address"] == "fa:16:3e:00:00:01"
    assert data["networks"][0]["type"] == "ipv4_dhcp"


@pytest.mark.parametrize("key, value, ok", [
    ("hw:cpu_policy", "dedicated", True), ("hw:cpu_policy", "bogus", False),
    ("hw:numa_nodes", "2", True), ("hw:numa_nodes", "two", False),
    ("hw:invented", "1", False), ("hw_rng:allowed", "True", True),
    ("trait:HW_CPU_X86_AVX2", "required", True), ("trait:HW_CPU_X86_AVX2", "maybe", False),
    ("resources:VCPU", "2", True), ("custom:anything", "x", True),
    ("aggregate_instance_extra_specs:ssd", "true", True), ("hw:numa_cpus.0", "0-1", True),
])
def test_extra_spec_validation(key, value, ok):
    if ok:
        extra_specs.validate(key, value)
    else:
        with pytest.raises(BadRequest):
            extra_specs.validate(key, value)


def test_fingerprint_of_an_ssh_key():
    key = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMcpGnXMXL8Y6G2kJeZ9pZd2xTnn1tj1FWYGuR41Y0Jb "
           "test")
    printed = keypairs.fingerprint(key)
    assert len(printed.split(":")) == 16
    with pytest.raises(BadRequest):
        keypairs.fingerprint("ssh-rsa bm90IGEga2V5")


@pytest.mark.parametrize("name, new, ok", [
    ("my key_1-2", False, True), ("a@b.c", False, False), ("a@b.c", True, True),
    (" lead", True, False), ("", True, False), ("x" * 256, True, False),
])
def test_keypair_names(name, new, ok):
    if ok:
        keypairs.check_name(name, allow_at_and_dot=new)
    else:
        with pytest.raises(BadRequest):
            keypairs.check_name(name, allow_at_and_dot=new)
