"""PUT and GET /v2/images/{id}/file: streaming, hashes, formats, ranges, limits, broken uploads."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from pathlib import Path

import pytest

from .test_images import error

OCTETS = {"Content-Type": "application/octet-stream"}


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def qcow2(tmp_path: Path) -> bytes:
    path = tmp_path / "disk.qcow2"
    qemu_img("create", "-f", "qcow2", str(path), "10M")
    return path.read_bytes()


def stored(glance) -> set[str]:
    """Image ids with a committed file, and whether any partial file is left."""
    store = glance.component.store
    partials = list(store.partial_dir.iterdir()) if store.partial_dir.exists() else []
    assert partials == [], partials
    return store.stored_ids()


async def raw_put(glance, path: str, chunks: list[bytes], *, disconnect: bool = False,
                  between=None, as_: str = "demo") -> list[dict]:
    """PUT through the ASGI app chunk by chunk; ``disconnect`` drops the client at the end."""
    token = (await glance.login(as_))[0]
    messages = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    if disconnect:
        messages.append({"type": "http.disconnect"})
    else:
        messages[-1]["more_body"] = False
    sent: list[dict] = []

    async def receive():
        if between is not None and len(messages) == len(chunks) - 1:
            await between()
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "PUT",
             "scheme": "http", "path": f"/image{path}", "raw_path": f"/image{path}".encode(),
             "query_string": b"", "root_path": "", "server": ("testserver", 80),
             "client": ("127.0.0.1", 40000),
             "headers": [(b"host", b"testserver"), (b"x-auth-token", token.encode()),
                         (b"content-type", b"application/octet-stream")]}
    await glance.cloud.asgi(scope, receive, send)
    return sent


# -- round trip -------------------------------------------------------------------------


async def test_upload_then_download_gives_the_same_bytes(glance):
    data = bytes(range(256)) * 40000  # ~10 MiB, several blocks
    image = await glance.create(name="bytes")

    await glance.upload(image["id"], data)

    shown = await glance.image(image["id"])
    assert shown["status"] == "active"
    assert shown["size"] == shown["virtual_size"] == len(data)
    assert shown["checksum"] == hashlib.md5(data).hexdigest()
    assert shown["os_hash_algo"] == "sha512"
    assert shown["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert shown["stores"] == "file"
    r = await glance.get(f"/v2/images/{image['id']}/file")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-md5"] == shown["checksum"]
    assert r.headers["content-length"] == str(len(data))
    assert r.content == data
    assert stored(glance) == {image["id"]}


async def test_chunked_upload_without_length(glance):
    image = await glance.create()

    async def body():
        for i in range(5):
            yield bytes([i]) * 100_000

    r = await glance.put(f"/v2/images/{image['id']}/file", content=body(), headers=OCTETS)

    assert r.status_code == 204
    assert (await glance.image(image["id"]))["size"] == 500_000


async def test_qcow2_gets_its_virtual_size(glance, qcow2):
    image = await glance.create(disk_format="qcow2")

    await glance.upload(image["id"], qcow2)

    shown = await glance.image(image["id"])
    assert shown["size"] == len(qcow2)
    assert shown["virtual_size"] == 10 * 1024 * 1024


async def test_download_without_data_is_204(glance):
    image = await glance.create()

    r = await glance.get(f"/v2/images/{image['id']}/file")

    assert r.status_code == 204
    assert r.content == b""


async def test_download_needs_to_see_the_image(glance):
    image = await glance.active(visibility="private")

    assert (await glance.get(f"/v2/images/{image['id']}/file", "alt_demo")).status_code == 404
    assert (await glance.get(f"/v2/images/{image['id']}/file", "admin")).status_code == 200


# -- ranges -------------------------------------------------------------------------------


@pytest.mark.parametrize(("headers", "content", "content_range"), [
    ({"Range": "bytes=0-3"}, b"0123", "bytes 0-3/10"),
    ({"Range": "bytes=6-"}, b"6789", "bytes 6-9/10"),
    ({"Range": "bytes=-3"}, b"789", "bytes 7-9/10"),
    ({"Range": "bytes=8-100"}, b"89", "bytes 8-9/10"),
    ({"Range": "bytes=-100"}, b"0123456789", "bytes 0-9/10"),
    ({"Content-Range": "bytes 2-4/*"}, b"234", "bytes 2-4/10"),
])
async def test_range_download(glance, headers, content, content_range):
    image = await glance.active(data=b"0123456789")

    r = await glance.get(f"/v2/images/{image['id']}/file", headers=headers)

    assert r.status_code == 206
    assert r.content == content
    assert r.headers["content-range"] == content_range
    assert r.headers["content-length"] == str(len(content))


@pytest.mark.parametrize(("headers", "code"), [
    ({"Range": "bytes=10-"}, 416),
    ({"Range": "bytes=5-2"}, 416),
    ({"Range": "items=0-1"}, 416),
    ({"Range": "bytes=0-1,4-5"}, 400),
    ({"Content-Range": "bytes 5-20/*"}, 416),
])
async def test_bad_ranges(glance, headers, code):
    image = await glance.active(data=b"0123456789")

    r = await glance.get(f"/v2/images/{image['id']}/file", headers=headers)

    assert r.status_code == code
    assert error(r)


# -- upload refusals -----------------------------------------------------------------------


async def test_upload_needs_octet_stream(glance):
    image = await glance.create()

    r = await glance.put(f"/v2/images/{image['id']}/file", content=b"x",
                         headers={"Content-Type": "text/plain"})

    assert r.status_code == 415
    assert error(r) == "Invalid content type text/plain"


async def test_upload_needs_formats(glance):
    r = await glance.post("/v2/images", json={"name": "bare"})
    image = r.json()

    r = await glance.put(f"/v2/images/{image['id']}/file", content=b"x", headers=OCTETS)

    assert r.status_code == 400
    assert error(r) == ("Properties disk_format, container_format must be set prior to saving "
                        "data.")
    assert (await glance.image(image["id"]))["status"] == "queued"


async def test_upload_twice_is_409(glance):
    image = await glance.active()

    r = await glance.put(f"/v2/images/{image['id']}/file", content=b"again", headers=OCTETS)

    assert r.status_code == 409
    assert error(r) == "Image status transition from active to saving is not allowed"


async def test_upload_to_someone_elses_image(glance):
    private = await glance.create(visibility="private")
    public = await glance.create("admin", visibility="public")

    r = await glance.put(f"/v2/images/{private['id']}/file", "alt_demo", content=b"x",
                         headers=OCTETS)
    assert r.status_code == 404
    r = await glance.put(f"/v2/images/{public['id']}/file", "alt_demo", content=b"x",
                         headers=OCTETS)
    assert r.status_code == 403


async def test_qcow2_declared_raw_is_refused(glance, qcow2):
    image = await glance.create(disk_format="raw")

    r = await glance.put(f"/v2/images/{image['id']}/file", content=qcow2, headers=OCTETS)

    assert r.status_code == 400
    assert error(r) == ("Image content does not match its disk_format: it was declared raw but "
                        "the data is qcow2.")
    assert (await glance.image(image["id"]))["status"] == "queued"
    assert stored(glance) == set()


async def test_raw_declared_qcow2_is_refused(glance):
    image = await glance.create(disk_format="qcow2")

    r = await glance.put(f"/v2/images/{image['id']}/file", content=b"\0" * 100_000,
                         headers=OCTETS)

    assert r.status_code == 400
    assert "declared qcow2 but the data is raw" in error(r)


@pytest.mark.parametrize(("qemu_format", "disk_format"), [
    ("vmdk", "vmdk"), ("vdi", "vdi"), ("vpc", "vhd"), ("vhdx", "vhdx")])
async def test_other_formats_are_recognised(glance, tmp_path, qemu_format, disk_format):
    path = tmp_path / f"disk.{disk_format}"
    qemu_img("create", "-f", qemu_format, str(path), "4M")
    image = await glance.create(disk_format=disk_format)

    await glance.upload(image["id"], path.read_bytes())

    shown = await glance.image(image["id"])
    assert shown["status"] == "active"
    assert shown["virtual_size"] >= 4 * 1024 * 1024
    wrong = await glance.create(disk_format="raw")
    r = await glance.put(f"/v2/images/{wrong['id']}/file", content=path.read_bytes(),
                         headers=OCTETS)
    assert r.status_code == 400


async def test_iso_is_recognised(glance):
    iso = bytearray(64 * 1024)
    iso[0x8001:0x8006] = b"CD001"
    image = await glance.create(disk_format="iso")

    await glance.upload(image["id"], bytes(iso))

    assert (await glance.image(image["id"]))["virtual_size"] == len(iso)
    raw = await glance.create(disk_format="raw")
    r = await glance.put(f"/v2/images/{raw['id']}/file", content=bytes(iso), headers=OCTETS)
    assert r.status_code == 400


async def test_qcow2_with_a_backing_file_is_refused(glance, tmp_path):
    base = tmp_path / "base.qcow2"
    top = tmp_path / "top.qcow2"
    qemu_img("create", "-f", "qcow2", str(base), "1M")
    qemu_img("create", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(top))
    image = await glance.create(disk_format="qcow2")

    r = await glance.put(f"/v2/images/{image['id']}/file", content=top.read_bytes(),
                         headers=OCTETS)

    assert r.status_code == 400
    assert error(r) == "Image is not safe to store: qcow2 images with a backing file are not " \
                       "allowed."


async def test_other_containers_and_kernels_are_not_inspected(glance, qcow2):
    ova = await glance.create(disk_format="vmdk", container_format="ova")
    await glance.upload(ova["id"], b"a tar archive, really")
    kernel = await glance.create(disk_format="aki", container_format="aki")
    await glance.upload(kernel["id"], qcow2)

    assert (await glance.image(ova["id"]))["status"] == "active"
    assert (await glance.image(kernel["id"]))["virtual_size"] is None


# -- size cap and quota -------------------------------------------------------------------------


async def test_size_cap_refuses_a_declared_length(make_cloud):
    from .client import client_for

    cloud = await make_cloud(image_size_cap=1000)
    async with client_for(cloud) as glance:
        image = await glance.create()
        r = await glance.put(f"/v2/images/{image['id']}/file", content=b"x" * 1001,
                             headers=OCTETS)

        assert r.status_code == 413
        assert error(r) == ("The incoming image is too large: it exceeds the image size cap of "
                            "1000 bytes.")
        assert (await glance.image(image["id"]))["status"] == "queued"
        await glance.upload(image["id"], b"x" * 1000)


async def test_size_cap_stops_a_chunked_upload_midway(make_cloud):
    from .client import client_for

    cloud = await make_cloud(image_size_cap=250_000)
    async with client_for(cloud) as glance:
        image = await glance.create()
        sent = []

        async def body():
            for i in range(10):
                sent.append(i)
                yield b"y" * 100_000

        r = await glance.put(f"/v2/images/{image['id']}/file", content=body(), headers=OCTETS)

        assert r.status_code == 413
        assert len(sent) < 10
        assert (await glance.image(image["id"]))["status"] == "queued"
        assert stored(glance) == set()


async def test_storage_quota(make_cloud):
    from .client import client_for

    cloud = await make_cloud(user_storage_quota=1500)
    async with client_for(cloud) as glance:
        first = await glance.active(data=b"a" * 1000)
        second = await glance.create()
        r = await glance.put(f"/v2/images/{second['id']}/file", content=b"b" * 1000,
                             headers=OCTETS)
        assert r.status_code == 413
        assert error(r).startswith("Denying attempt to upload image because it exceeds the "
                                   "quota: The size of the data 1000 will exceed the limit. "
                                   "500 bytes remaining.")
        assert (await glance.image(second["id"]))["status"] == "queued"
        await glance.upload(second["id"], b"b" * 500)

        third = await glance.create()
        r = await glance.put(f"/v2/images/{third['id']}/file", content=b"c", headers=OCTETS)
        assert r.status_code == 413
        assert "its quota is 1500 bytes" in error(r)

        # other projects have their own quota; deleting frees space
        await glance.active("alt_demo", data=b"d" * 1000)
        assert (await glance.delete(f"/v2/images/{first['id']}")).status_code == 204
        await glance.upload(third["id"], b"c" * 1000)


# -- broken uploads -------------------------------------------------------------------------------


async def test_upload_broken_midway_leaves_queued_and_no_file(glance):
    image = await glance.create()

    sent = await raw_put(glance, f"/v2/images/{image['id']}/file",
                         [b"z" * 3_000_000, b"z" * 3_000_000], disconnect=True)

    assert sent[0]["status"] == 400
    shown = await glance.image(image["id"])
    assert shown["status"] == "queued" and shown["size"] is None
    assert stored(glance) == set()
    await glance.upload(image["id"], b"second try")
    assert (await glance.image(image["id"]))["status"] == "active"


async def test_image_deleted_during_upload_is_410(glance):
    image = await glance.create()
    component = glance.component

    async def delete_it():
        from tinystack.common.policy import Credentials

        admin = Credentials(user_id="u", user_domain_id="default", roles=frozenset({"admin"}))
        await asyncio.to_thread(component.images.delete, admin, image["id"])

    sent = await raw_put(glance, f"/v2/images/{image['id']}/file",
                         [b"a" * 1000, b"b" * 1000, b"c" * 1000], between=delete_it)

    assert sent[0]["status"] == 410
    assert stored(glance) == set()


async def test_restart_recovers_an_interrupted_upload(make_cloud):
    """A process that died mid-upload left a saving image, a partial and an orphan file."""
    from .client import client_for

    cloud = await make_cloud()
    async with client_for(cloud) as glance:
        image = await glance.create()
        component = glance.component
        from tinystack.image.service import ImageService

        with component.images.db.session() as s:
            from tinystack.image.models import Image

            s.get(Image, image["id"]).status = "saving"
        writer = component.store.open_writer(image["id"])
        writer.write([b"half"])
        orphan = "11111111-2222-3333-4444-555555555555"
        (component.store.root / orphan).write_bytes(b"nobody's")
        assert isinstance(component.images, ImageService)
    await cloud.stop()

    cloud = await make_cloud()
    async with client_for(cloud) as glance:
        assert (await glance.image(image["id"]))["status"] == "queued"
        assert stored(glance) == set()
