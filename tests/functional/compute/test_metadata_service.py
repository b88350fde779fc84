"""The metadata service at /metadata: signed proxy headers, the OpenStack and EC2 trees."""

from __future__ import annotations

import base64
import json

import pytest

from tinystack.compute.metadata import sign

KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMcpGnXMXL8Y6G2kJeZ9pZd2xTnn1tj1FWYGuR41Y0Jb"
       " test@example")


@pytest.fixture
async def booted(nova, agent, image_id):
    await nova.ok("POST", "/os-keypairs", mv="2.100", expect=201,
                  json={"keypair": {"name": "k1", "public_key": KEY}})
    created = await nova.create_server(
        image_id, name="meta-vm", key_name="k1", metadata={"role": "db"},
        user_data=base64.b64encode(b"#cloud-config\n").decode())
    return created["server"]["id"], await nova.project_id()


def _headers(cloud, server_id: str, project_id: str, signature: str | None = None) -> dict:
    secret = cloud.services["compute"].metadata_secret
    return {"X-Instance-ID": server_id, "X-Tenant-ID": project_id,
            "X-Instance-ID-Signature": signature or sign(secret, server_id),
            "X-Forwarded-For": "10.0.0.5"}


async def test_openstack_tree(nova, cloud, booted):
    server_id, project_id = booted
    headers = _headers(cloud, server_id, project_id)
    r = await nova.http.get("/metadata/openstack", headers=headers)
    assert r.text.splitlines()[-1] == "latest"
    r = await nova.http.get("/metadata/openstack/latest/", headers=headers)
    assert "meta_data.json" in r.text.splitlines() and "user_data" in r.text.splitlines()
    meta = (await nova.http.get("/metadata/openstack/latest/meta_data.json",
                                headers=headers)).json()
    assert meta["uuid"] == server_id and meta["name"] == "meta-vm"
    assert meta["hostname"] == "meta-vm" and meta["meta"] == {"role": "db"}
    assert meta["public_keys"] == {"k1": KEY}
    assert meta["project_id"] == project_id and meta["availability_zone"] == "nova"
    r = await nova.http.get("/metadata/openstack/latest/user_data", headers=headers)
    assert r.content == b"#cloud-config\n"
    network = (await nova.http.get("/metadata/openstack/latest/network_data.json",
                                   headers=headers)).json()
    assert network == {"links": [], "networks": [], "services": []}
    vendor = await nova.http.get("/metadata/openstack/latest/vendor_data2.json",
                                 headers=headers)
    assert vendor.json() == {}
    r = await nova.http.get("/metadata/openstack/2012-08-10/meta_data.json", headers=headers)
    assert r.status_code == 200


async def test_ec2_tree(nova, cloud, booted):
    server_id, project_id = booted
    headers = _headers(cloud, server_id, project_id)
    root = await nova.http.get("/metadata/latest/meta-data/", headers=headers)
    names = root.text.splitlines()
    assert {"instance-id", "hostname", "public-keys/", "placement/"} <= set(names)
    assert (await nova.http.get("/metadata/latest/meta-data/instance-id",
                                headers=headers)).text == server_id
    assert (await nova.http.get("/metadata/latest/meta-data/placement/availability-zone",
                                headers=headers)).text == "nova"
    assert (await nova.http.get("/metadata/latest/meta-data/public-keys/",
                                headers=headers)).text == "0=k1"
    assert (await nova.http.get("/metadata/latest/meta-data/public-keys/0/openssh-key",
                                headers=headers)).text == KEY
    assert (await nova.http.get("/metadata/latest/user-data", headers=headers)).content == \
        b"#cloud-config\n"
    assert (await nova.http.get("/metadata/2009-04-04/meta-data/instance-type",
                                headers=headers)).text == "m1.nano"
    versions = await nova.http.get("/metadata/", headers=headers)
    assert "latest" in versions.text.splitlines()
    r = await nova.http.get("/metadata/latest/meta-data/nothing", headers=headers)
    assert r.status_code == 404


async def test_forged_headers_are_refused(nova, cloud, booted, agent, image_id):
    server_id, project_id = booted
    other = (await nova.create_server(image_id, name="other", user="alt_demo"))["server"]["id"]
    forged = _headers(cloud, other, project_id, signature=sign("guess", other))
    r = await nova.http.get("/metadata/openstack/latest/meta_data.json", headers=forged)
    assert r.status_code == 403 and r.text == "Invalid proxy request signature."
    wrong_tenant = _headers(cloud, other, project_id)
    r = await nova.http.get("/metadata/openstack/latest/meta_data.json", headers=wrong_tenant)
    assert r.status_code == 403
    missing = _headers(cloud, server_id, project_id)
    del missing["X-Instance-ID-Signature"]
    r = await nova.http.get("/metadata/openstack/latest/meta_data.json", headers=missing)
    assert r.status_code == 400
    r = await nova.http.get("/metadata/openstack/latest/meta_data.json")
    assert r.status_code == 400


async def test_the_secret_is_kept_in_the_data_dir(cloud):
    secret = cloud.services["compute"].metadata_secret
    path = cloud.settings.data_dir / "compute" / "metadata-secret"
    assert path.read_text().strip() == secret and len(secret) == 64
    assert path.stat().st_mode & 0o777 == 0o600


async def test_a_configured_secret_wins(make_compute_cloud):
    cloud = await make_compute_cloud(metadata_proxy_shared_secret="s3cret")
    assert cloud.services["compute"].metadata_secret == "s3cret"


async def test_deleted_servers_have_no_metadata(nova, cloud, booted):
    server_id, project_id = booted
    await nova.compute("DELETE", f"/servers/{server_id}", mv="2.100")
    from .support import settle

    await settle(cloud)
    r = await nova.http.get("/metadata/openstack/latest/meta_data.json",
                            headers=_headers(cloud, server_id, project_id))
    assert r.status_code == 404


async def test_config_drive_files_match_the_service(nova, cloud, agent, booted, image_id):
    created = await nova.create_server(image_id, name="cd", config_drive=True)
    server_id = created["server"]["id"]
    spec = agent.for_server(server_id)[0]
    served = await nova.http.get("/metadata/openstack/latest/meta_data.json",
                                 headers=_headers(cloud, server_id, await nova.project_id()))
    on_drive = json.loads(spec.metadata_files["openstack/latest/meta_data.json"])
    assert on_drive == served.json()
    assert "ec2/latest/meta-data.json" in spec.metadata_files
