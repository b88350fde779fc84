"""Compute with the real image service of the same cloud, over HTTP as in production."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest

from .support import settle

MV = "2.100"


@pytest.fixture
async def real_images(cloud):
    """Point compute's image client at the cloud's own /image (what base_url reaches)."""
    images = cloud.services["compute"].images
    await images.http.aclose()
    images.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=cloud.asgi))
    images.root = "http://testserver/image"
    return images


async def _upload(nova, data: bytes, user: str = "admin", **fields) -> str:
    headers = {"X-Auth-Token": await nova.token(user)}
    body = {"name": "tiny", "disk_format": "raw", "container_format": "bare",
            "visibility": "public", **fields}
    r = await nova.http.post("/image/v2/images", json=body, headers=headers)
    assert r.status_code == 201, r.text
    image_id = r.json()["id"]
    r = await nova.http.put(f"/image/v2/images/{image_id}/file", content=data,
                            headers={**headers, "Content-Type": "application/octet-stream"})
    assert r.status_code == 204, r.text
    return image_id


async def test_boot_from_an_uploaded_image(nova, agent, real_images):
    data = b"\x00" * (1024 * 1024)
    image_id = await _upload(nova, data)
    server_id = (await nova.create_server(image_id))["server"]["id"]
    assert (await nova.server(server_id))["status"] == "ACTIVE"
    spec = agent.for_server(server_id)[0]
    assert spec.image.size == len(data)
    r = await nova.http.get(spec.image.download_url.replace("http://testserver", ""),
                            headers={"X-Auth-Token": spec.token})
    assert r.status_code == 200 and r.content == data


async def test_min_disk_from_the_image_service(nova, agent, real_images):
    image_id = await _upload(nova, b"x" * 1024, min_disk=5)
    r = await nova.create_server(image_id, expect=400)
    assert r["badRequest"]["message"].startswith(
        "Flavor's disk is smaller than the minimum size specified in image metadata.")


async def test_a_private_image_of_another_project_is_not_found(nova, agent, real_images):
    image_id = await _upload(nova, b"x" * 1024, user="alt_demo", visibility="private")
    r = await nova.create_server(image_id, expect=400)
    assert r["badRequest"]["message"] == f"Image {image_id} could not be found."


def _qcow2(tmp_path) -> bytes:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed")
    path = tmp_path / "snap.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "1M"], check=True,
                   timeout=30)
    return path.read_bytes()


@pytest.mark.slow
async def test_snapshot_lands_in_the_image_service(nova, agent, real_images, tmp_path):
    image_id = await _upload(nova, b"x" * 4096, os_distro="debian")
    snapshot = _qcow2(tmp_path)

    async def upload(server_id, image_id, upload_url, token, **_):
        r = await nova.http.put(upload_url.replace("http://testserver", ""),
                                content=snapshot,
                                headers={"X-Auth-Token": token,
                                         "Content-Type": "application/octet-stream"})
        assert r.status_code == 204, r.text
        return {"size": len(snapshot)}

    agent.snapshot_server = upload
    server_id = (await nova.create_server(image_id))["server"]["id"]
    body = await nova.action(server_id, {"createImage": {"name": "snap"}})
    await settle(nova.cloud)
    r = await nova.http.get(f"/image/v2/images/{body['image_id']}",
                            headers={"X-Auth-Token": await nova.token("demo")})
    snap = r.json()
    assert (snap["status"], snap["name"], snap["image_type"]) == ("active", "snap", "snapshot")
    assert snap["instance_uuid"] == server_id and snap["os_distro"] == "debian"
    assert snap["visibility"] == "private" and snap["owner"] == await nova.project_id()
    assert (await nova.server(server_id))["OS-EXT-STS:task_state"] is None
