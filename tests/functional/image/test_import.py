"""The interoperable import API: /v2/info/*, stage + glance-direct, web-download and its filters.

web-download fetches from a real HTTP server on 127.0.0.1 (a thread in the
test process): files by name, ``/redirect/NAME`` answering 302 to
``/NAME`` on another port, ``/missing`` a 404.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .client import client_for
from .test_data import OCTETS, qemu_img, stored
from .test_images import error


@dataclass
class WebServer:
    root: Path
    port: int
    redirect_to: int = 0

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


def _handler(server: WebServer):
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(server.root), **kwargs)

        def do_GET(self):
            if self.path.startswith("/redirect/"):
                self.send_response(302)
                target = self.path.removeprefix("/redirect/")
                self.send_header("Location",
                                 f"http://127.0.0.1:{server.redirect_to}/{target}")
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture
def web(tmp_path: Path) -> Iterator[WebServer]:
    root = tmp_path / "www"
    root.mkdir()
    server = WebServer(root=root, port=0)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
async def importer(make_cloud, web):
    """A cloud whose web-download filters allow the test web server's port."""
    cloud = await make_cloud(allowed_ports=[web.port])
    async with client_for(cloud) as glance:
        yield glance


async def run_import(glance, image_id: str, body: dict, as_: str = "demo") -> None:
    r = await glance.post(f"/v2/images/{image_id}/import", as_, json=body)
    assert r.status_code == 202, r.text
    assert r.content == b""
    await glance.component.data.wait_idle()


# -- discovery ----------------------------------------------------------------------------


async def test_import_info(glance):
    r = await glance.get("/v2/info/import")

    assert r.json() == {"import-methods": {"description": "Import methods available.",
                                           "type": "array",
                                           "value": ["glance-direct", "web-download"]}}


async def test_stores_info(glance):
    r = await glance.get("/v2/info/stores")

    assert r.json() == {"stores": [{"id": "file", "default": "true", "description":
                                    "Image data on the controller's local disk"}]}


async def test_stores_detail_is_for_admins(glance):
    assert (await glance.get("/v2/info/stores/detail")).status_code == 403

    r = await glance.get("/v2/info/stores/detail", "admin")

    store = r.json()["stores"][0]
    assert (store["id"], store["type"], store["weight"]) == ("file", "file", 0)
    assert store["properties"]["data_dir"].endswith("/images")


# -- glance-direct ------------------------------------------------------------------------


async def test_stage_then_glance_direct(glance):
    data = b"staged" * 10000
    image = await glance.create(name="staged")
    path = f"/v2/images/{image['id']}"

    r = await glance.put(f"{path}/stage", content=data, headers=OCTETS)
    assert r.status_code == 204
    shown = await glance.image(image["id"])
    assert (shown["status"], shown["size"]) == ("uploading", len(data))

    await run_import(glance, image["id"], {"method": {"name": "glance-direct"}})

    shown = await glance.image(image["id"])
    assert shown["status"] == "active"
    assert shown["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert "os_glance_importing_to_stores" not in shown
    assert (await glance.get(f"{path}/file")).content == data
    assert glance.component.staging.stored_ids() == set()
    assert stored(glance) == {image["id"]}


async def test_glance_direct_with_the_wrong_format_goes_back_to_queued(glance, tmp_path):
    disk = tmp_path / "disk.qcow2"
    qemu_img("create", "-f", "qcow2", str(disk), "1M")
    image = await glance.create(disk_format="raw")
    await glance.put(f"/v2/images/{image['id']}/stage", content=disk.read_bytes(),
                     headers=OCTETS)

    await run_import(glance, image["id"], {"method": {"name": "glance-direct"}})

    shown = await glance.image(image["id"])
    assert shown["status"] == "queued"
    assert shown["os_glance_failed_import"] == "file"
    assert stored(glance) == set()
    assert glance.component.staging.stored_ids() == set()


async def test_stage_errors(glance):
    active = await glance.active()
    r = await glance.put(f"/v2/images/{active['id']}/stage", content=b"x", headers=OCTETS)
    assert r.status_code == 409
    queued = await glance.create()
    r = await glance.put(f"/v2/images/{queued['id']}/stage", content=b"x",
                         headers={"Content-Type": "text/plain"})
    assert r.status_code == 415


@pytest.mark.parametrize(("body", "says"), [
    ({}, "Import request requires a 'method' field."),
    ({"method": {}}, "Import request requires a 'name' field."),
    ({"method": {"name": "copy-image"}}, "Unknown import method name 'copy-image'."),
    ({"method": {"name": "glance-direct"}, "all_stores": "yes"},
     "'all_stores' must be boolean value only"),
    ({"method": {"name": "glance-direct"}, "all_stores_must_succeed": 1},
     "'all_stores_must_succeed' must be boolean value only"),
])
async def test_import_body_errors(glance, body, says):
    image = await glance.create()

    r = await glance.post(f"/v2/images/{image['id']}/import", json=body)

    assert r.status_code == 400
    assert error(r) == says


async def test_import_state_errors(glance):
    active = await glance.active()
    queued = await glance.create()
    unformatted = (await glance.post("/v2/images", json={})).json()

    async def attempt(image, method, **extra):
        r = await glance.post(f"/v2/images/{image['id']}/import",
                              json={"method": {"name": method, **extra}})
        return r.status_code, error(r)

    assert await attempt(active, "glance-direct") == (
        409, "Image with status active cannot be target for import")
    assert await attempt(queued, "glance-direct") == (
        409, "Image needs to be staged before 'glance-direct' method can be used")
    assert await attempt(unformatted, "web-download", uri="http://example.com/x") == (
        409, "'container_format' needs to be set before import")
    r = await glance.post(f"/v2/images/{queued['id']}/import", json={
        "method": {"name": "glance-direct"}, "stores": ["elsewhere"]})
    assert r.status_code == 409


async def test_import_into_someone_elses_image(glance):
    image = await glance.create("admin", visibility="public")

    r = await glance.post(f"/v2/images/{image['id']}/import",
                          json={"method": {"name": "web-download", "uri": "http://x/y"}})

    assert r.status_code == 403


# -- web-download --------------------------------------------------------------------------


async def test_web_download(importer, web, tmp_path):
    disk = tmp_path / "disk.qcow2"
    qemu_img("create", "-f", "qcow2", str(disk), "2M")
    (web.root / "disk.qcow2").write_bytes(disk.read_bytes())
    image = await importer.create(name="from-web", disk_format="qcow2")

    await run_import(importer, image["id"], {
        "method": {"name": "web-download", "uri": web.url("disk.qcow2")},
        "all_stores_must_succeed": True, "stores": ["file"]})

    shown = await importer.image(image["id"])
    assert shown["status"] == "active"
    assert shown["checksum"] == hashlib.md5(disk.read_bytes()).hexdigest()
    assert shown["virtual_size"] == 2 * 1024 * 1024
    r = await importer.get(f"/v2/images/{image['id']}/file")
    assert r.content == disk.read_bytes()


async def test_web_download_of_a_missing_file_goes_back_to_queued(importer, web):
    image = await importer.create()

    await run_import(importer, image["id"], {
        "method": {"name": "web-download", "uri": web.url("missing")}})

    shown = await importer.image(image["id"])
    assert shown["status"] == "queued"
    assert shown["os_glance_failed_import"] == "file"
    assert stored(importer) == set()


async def test_web_download_respects_the_default_port_filter(glance, web):
    (web.root / "x").write_bytes(b"x")
    image = await glance.create()

    r = await glance.post(f"/v2/images/{image['id']}/import", json={
        "method": {"name": "web-download", "uri": web.url("x")}})

    assert r.status_code == 400
    assert error(r) == f"URI for web-download does not pass filtering: {web.url('x')}"
    assert (await glance.image(image["id"]))["status"] == "queued"


@pytest.mark.parametrize(("settings", "uri", "passes"), [
    ({}, "http://example.com/disk", True),
    ({}, "https://example.com:443/disk", True),
    ({}, "ftp://example.com/disk", False),
    ({}, "http://example.com:8080/disk", False),
    ({"allowed_ports": []}, "http://example.com:8080/disk", True),
    ({"allowed_ports": [], "disallowed_ports": [8080]}, "http://example.com:8080/d", False),
    ({"allowed_hosts": ["images.example.com"]}, "http://example.com/disk", False),
    ({"allowed_hosts": ["images.example.com"]}, "http://Images.Example.com/disk", True),
    ({"disallowed_hosts": ["127.0.0.1"]}, "http://127.0.0.1/disk", False),
    ({"allowed_hosts": ["a"], "disallowed_hosts": ["a"]}, "http://a/disk", True),
    ({"allowed_schemes": [], "disallowed_schemes": ["http"]}, "http://a/disk", False),
    ({"allowed_schemes": [], "disallowed_schemes": ["http"]}, "ftp://a/disk", True),
    ({}, "not a url", False),
    ({}, "http://host:notaport/disk", False),
])
def test_uri_filters(settings, uri, passes):
    from tinystack.config import ImageSettings
    from tinystack.image.data import uri_allowed

    assert uri_allowed(uri, ImageSettings(**settings)) is passes


async def test_web_download_redirect_must_pass_the_filters(make_cloud, web):
    (web.root / "disk").write_bytes(b"disk bytes")
    other = WebServer(root=web.root, port=0)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(other))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    web.redirect_to = httpd.server_address[1]
    try:
        cloud = await make_cloud(allowed_ports=[web.port])
        async with client_for(cloud) as glance:
            image = await glance.create()
            await run_import(glance, image["id"], {
                "method": {"name": "web-download", "uri": web.url("redirect/disk")}})
            assert (await glance.image(image["id"]))["status"] == "queued"
        await cloud.stop()

        cloud = await make_cloud(allowed_ports=[web.port, web.redirect_to])
        async with client_for(cloud) as glance:
            await run_import(glance, image["id"], {
                "method": {"name": "web-download", "uri": web.url("redirect/disk")}})
            assert (await glance.image(image["id"]))["status"] == "active"
            assert (await glance.get(f"/v2/images/{image['id']}/file")).content == b"disk bytes"
    finally:
        httpd.shutdown()
        httpd.server_close()


async def test_web_download_over_the_size_cap(make_cloud, web):
    (web.root / "big").write_bytes(b"b" * 5000)
    cloud = await make_cloud(allowed_ports=[web.port], image_size_cap=1000)
    async with client_for(cloud) as glance:
        image = await glance.create()

        await run_import(glance, image["id"], {
            "method": {"name": "web-download", "uri": web.url("big")}})

        assert (await glance.image(image["id"]))["status"] == "queued"
        assert stored(glance) == set()


async def test_stop_cancels_a_running_import(importer, web):
    """An import still running at stop is cancelled and leaves the image queued."""
    import asyncio

    image = await importer.create()
    data = importer.component.data
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow_fetch(image_row, uri):
        async def chunks():
            yield b"first"
            started.set()
            await release.wait()
            yield b"never"
        await data._import(image_row, chunks)

    data._web_download = slow_fetch
    r = await importer.post(f"/v2/images/{image['id']}/import", json={
        "method": {"name": "web-download", "uri": web.url("x")}})
    assert r.status_code == 202
    await started.wait()
    assert (await importer.image(image["id"]))["status"] == "importing"

    await data.stop()

    assert (await importer.image(image["id"]))["status"] == "queued"
    assert stored(importer) == set()
