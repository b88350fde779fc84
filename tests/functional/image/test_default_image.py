"""The default guest image: tiny, tiny-kernel and tiny-ramdisk uploaded once, owned by admin.

The guest builder is replaced by one that returns small files at once (the
real build is the guest builder's own tests' business); the admin login goes
through the cloud's identity API in-process.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import httpx
import pytest

from tinystack.image.default_image import GUEST_MARK, ensure_default_image
from tinystack.image.guest import GuestImage


@pytest.fixture
def guest(tmp_path: Path) -> GuestImage:
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(disk), "8M"], check=True,
                   capture_output=True, timeout=30)
    kernel, ramdisk = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    kernel.write_bytes(b"MZ kernel" * 1000)
    ramdisk.write_bytes(b"\x1f\x8b ramdisk" * 1000)
    return GuestImage(kernel=kernel, ramdisk=ramdisk, disk=disk, cache_key="cafe0123",
                      kernel_version="6.1.0-test", properties={"os_type": "linux",
                                                               "hw_disk_bus": "virtio"})


async def test_uploads_tiny_with_its_kernel_and_ramdisk(glance, guest):
    builds = []

    def build(cache_dir: Path) -> GuestImage:
        builds.append(cache_dir)
        return guest

    transport = httpx.ASGITransport(app=glance.cloud.asgi)
    component = glance.component

    tiny_id = await ensure_default_image(component, transport=transport, build=build)

    assert builds == [Path(glance.cloud.settings.image.guest_cache_dir)]
    admin = await glance.project("admin")
    images = {i["name"]: i for i in (await glance.get("/v2/images", "alt_demo")).json()["images"]}
    assert set(images) == {"tiny", "tiny-kernel", "tiny-ramdisk"}
    tiny = images["tiny"]
    assert tiny["id"] == tiny_id
    assert all(i["visibility"] == "public" and i["owner"] == admin and i["status"] == "active"
               for i in images.values())
    assert (tiny["disk_format"], tiny["container_format"]) == ("qcow2", "bare")
    assert tiny["min_ram"] == guest.min_ram_mb > 64  # the kernel and initramfs need it
    assert tiny["virtual_size"] == 8 * 1024 * 1024
    assert tiny["kernel_id"] == images["tiny-kernel"]["id"]
    assert tiny["ramdisk_id"] == images["tiny-ramdisk"]["id"]
    assert tiny["os_type"] == "linux" and tiny[GUEST_MARK] == "cafe0123"
    assert images["tiny-kernel"]["disk_format"] == "aki"
    assert images["tiny-ramdisk"]["container_format"] == "ari"
    r = await glance.get(f"/v2/images/{tiny_id}/file", "alt_demo")
    assert hashlib.sha512(r.content).hexdigest() == hashlib.sha512(
        guest.disk.read_bytes()).hexdigest()

    # a second start finds it and neither builds nor uploads again
    assert await ensure_default_image(component, transport=transport, build=build) == tiny_id
    assert len(builds) == 1
    assert len((await glance.get("/v2/images", "admin")).json()["images"]) == 3


async def test_an_interrupted_first_run_is_finished_without_duplicates(glance, guest):
    transport = httpx.ASGITransport(app=glance.cloud.asgi)
    component = glance.component
    await ensure_default_image(component, transport=transport, build=lambda _: guest)
    admin_token = (await glance.login("admin"))[0]
    tiny = [i for i in (await glance.get("/v2/images", "admin")).json()["images"]
            if i["name"] == "tiny"][0]
    # as if the process died while uploading tiny: the kernel and ramdisk are there,
    # tiny itself is queued
    assert (await glance.http.delete(f"/v2/images/{tiny['id']}",
                                     headers={"X-Auth-Token": admin_token})).status_code == 204
    leftover = await glance.create("admin", name="tiny", disk_format="qcow2",
                                   visibility="public", **{GUEST_MARK: "cafe0123"})

    tiny_id = await ensure_default_image(component, transport=transport, build=lambda _: guest)

    names = sorted(i["name"] for i in (await glance.get("/v2/images", "admin")).json()["images"])
    assert names == ["tiny", "tiny-kernel", "tiny-ramdisk"]
    assert tiny_id != leftover["id"]
    assert (await glance.get(f"/v2/images/{leftover['id']}", "admin")).status_code == 404


async def test_one_disk_guest(glance, guest):
    from dataclasses import replace

    single = replace(guest, kernel=None, ramdisk=None)
    transport = httpx.ASGITransport(app=glance.cloud.asgi)

    await ensure_default_image(glance.component, transport=transport, build=lambda _: single)

    images = (await glance.get("/v2/images")).json()["images"]
    assert [i["name"] for i in images] == ["tiny"]
    assert "kernel_id" not in images[0]


async def test_start_does_not_wait_for_the_build(make_cloud, monkeypatch):
    """With default_image on, start returns while the build is still running."""
    import asyncio
    import threading

    from tinystack.image import default_image

    release = threading.Event()

    def slow_build(cache_dir):
        release.wait(30)
        raise RuntimeError("no guest today")

    monkeypatch.setattr(default_image, "_build_guest", slow_build)
    cloud = await make_cloud(default_image=True)
    try:
        tasks = [t for t in cloud.services["image"].data._tasks
                 if t.get_name() == "default guest image"]
        assert len(tasks) == 1 and not tasks[0].done()
    finally:
        release.set()
        await asyncio.gather(*tasks, return_exceptions=True)
