"""The image service through the real ``openstack`` CLI and openstacksdk, as a person uses it.

Clouds: ``tinystack`` is demo (member of project demo), ``tinystack-alt`` is
alt_demo, ``tinystack-admin`` the admin. Images made here have names unique
to the test; the default guest image (``tiny``) may appear at any moment in
the background and is left alone, except by the last test, which checks it
on an instance of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import openstack
import pytest

from tinystack.runner import read_pid

REPO = Path(__file__).resolve().parents[2]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def sha512(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def as_json(result) -> dict | list:
    return json.loads(result.stdout)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="module")
def qcow2(tmp_path_factory) -> Path:
    """A qcow2 holding 8 MiB of random data (so every byte of it matters)."""
    base = tmp_path_factory.mktemp("qcow2")
    raw = base / "random.raw"
    raw.write_bytes(os.urandom(8 * 1024 * 1024))
    disk = base / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(disk)],
                   check=True, capture_output=True, timeout=60)
    return disk


def create(ts, name: str, path: Path | None = None, cloud: str = "tinystack",
           *extra: str) -> dict:
    """``image create``; without ``path`` the CLI uploads its (empty) stdin as a raw image."""
    argv = ["image", "create", "--container-format", "bare"]
    if path is not None:
        argv += ["--file", str(path), "--disk-format", "qcow2"]
    else:
        argv += ["--disk-format", "raw"]
    return as_json(ts.openstack(*argv, *extra, name, "-f", "json", cloud=cloud))


def connect(ts, cloud: str = "tinystack") -> openstack.connection.Connection:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OS_CLIENT_CONFIG_FILE", str(ts.clouds_yaml))
        return openstack.connect(cloud=cloud)


def show(ts, name_or_id: str, cloud: str = "tinystack", check: bool = True):
    result = ts.openstack("image", "show", name_or_id, "-f", "json", cloud=cloud, check=check)
    return as_json(result) if result.returncode == 0 else None


def listed(ts, cloud: str = "tinystack", *extra: str) -> dict[str, dict]:
    return {i["Name"]: i for i in as_json(ts.openstack("image", "list", *extra, "-f", "json",
                                                        cloud=cloud))}


def project_id(ts, cloud: str) -> str:
    return as_json(ts.openstack("token", "issue", "-f", "json", cloud=cloud))["project_id"]


def test_create_list_show_and_save_identical_bytes(tinystack_up, qcow2, tmp_path):
    ts = tinystack_up
    name = unique("cirros")

    image = create(ts, name, qcow2)

    assert image["status"] == "active"
    assert image["disk_format"] == "qcow2"
    assert image["size"] == qcow2.stat().st_size
    assert image["checksum"] == hashlib.md5(qcow2.read_bytes()).hexdigest()
    assert listed(ts)[name]["Status"] == "active"
    shown = show(ts, name)
    assert shown["id"] == image["id"]
    assert shown["virtual_size"] == 8 * 1024 * 1024
    assert shown["properties"]["os_hash_algo"] == "sha512"
    assert shown["properties"]["os_hash_value"] == sha512(qcow2)
    assert shown["owner"] == project_id(ts, "tinystack")

    saved = tmp_path / "saved.qcow2"
    ts.openstack("image", "save", "--file", str(saved), name, cloud="tinystack")
    assert sha512(saved) == sha512(qcow2)


def test_set_property_and_tags(tinystack_up):
    ts = tinystack_up
    name = unique("props")
    create(ts, name)

    ts.openstack("image", "set", "--property", "os_distro=debian", "--property",
                 "hw_disk_bus=virtio", "--tag", "e2e", "--min-ram", "64", name,
                 cloud="tinystack")

    shown = show(ts, name)
    assert shown["properties"]["os_distro"] == "debian"
    assert shown["properties"]["hw_disk_bus"] == "virtio"
    assert shown["tags"] == ["e2e"]
    assert shown["min_ram"] == 64
    ts.openstack("image", "unset", "--property", "os_distro", name, cloud="tinystack")
    assert "os_distro" not in show(ts, name)["properties"]
    assert name in listed(ts, "tinystack", "--property", "hw_disk_bus=virtio")


def test_share_with_another_project(tinystack_up, qcow2, tmp_path):
    ts = tinystack_up
    name = unique("shared")
    image = create(ts, name, qcow2, "tinystack", "--shared")
    alt = project_id(ts, "tinystack-alt")

    ts.openstack("image", "add", "project", image["id"], alt, cloud="tinystack")

    members = as_json(ts.openstack("image", "member", "list", image["id"], "-f", "json",
                                   cloud="tinystack"))
    assert [(m["Member ID"], m["Status"]) for m in members] == [(alt, "pending")]
    assert name not in listed(ts, "tinystack-alt")
    assert show(ts, image["id"], "tinystack-alt")["name"] == name

    ts.openstack("image", "set", "--accept", image["id"], cloud="tinystack-alt")

    assert listed(ts, "tinystack-alt")[name]["Status"] == "active"
    member = as_json(ts.openstack("image", "member", "get", image["id"], alt, "-f", "json",
                                  cloud="tinystack-alt"))
    assert member["status"] == "accepted"
    saved = tmp_path / "alt.qcow2"
    ts.openstack("image", "save", "--file", str(saved), image["id"], cloud="tinystack-alt")
    assert sha512(saved) == sha512(qcow2)

    ts.openstack("image", "remove", "project", image["id"], alt, cloud="tinystack")
    assert show(ts, image["id"], "tinystack-alt", check=False) is None


def test_private_image_is_invisible_to_another_project(tinystack_up):
    ts = tinystack_up
    name = unique("private")
    image = create(ts, name, None, "tinystack", "--private")

    assert name not in listed(ts, "tinystack-alt")
    assert show(ts, image["id"], "tinystack-alt", check=False) is None
    result = ts.openstack("image", "delete", image["id"], cloud="tinystack-alt", check=False)
    assert result.returncode != 0
    assert show(ts, image["id"])["visibility"] == "private"
    assert name in listed(ts, "tinystack-admin")


def test_delete(tinystack_up, qcow2):
    ts = tinystack_up
    name = unique("doomed")
    image = create(ts, name, qcow2)
    data_file = ts.data_dir / "images" / image["id"]
    assert data_file.is_file()

    ts.openstack("image", "delete", name, cloud="tinystack")

    assert show(ts, image["id"], check=False) is None
    assert name not in listed(ts)
    assert not data_file.exists()


def test_protected_and_deactivated(tinystack_up, qcow2, tmp_path):
    ts = tinystack_up
    name = unique("guarded")
    create(ts, name, qcow2, "tinystack", "--protected")

    result = ts.openstack("image", "delete", name, cloud="tinystack", check=False)
    assert result.returncode != 0
    ts.openstack("image", "set", "--deactivate", name, cloud="tinystack")
    assert show(ts, name)["status"] == "deactivated"
    result = ts.openstack("image", "save", "--file", str(tmp_path / "x"), name,
                          cloud="tinystack", check=False)
    assert result.returncode != 0
    ts.openstack("image", "set", "--activate", "--unprotected", name, cloud="tinystack")
    ts.openstack("image", "delete", name, cloud="tinystack")


HALF_UPLOAD = """
import socket, sys, time
host, port, path, token, total = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
conn = socket.create_connection((host, port))
conn.sendall((f"PUT {path} HTTP/1.1\\r\\nHost: {host}:{port}\\r\\nX-Auth-Token: {token}\\r\\n"
              f"Content-Type: application/octet-stream\\r\\nContent-Length: {total}\\r\\n\\r\\n").encode())
conn.sendall(b"\\0" * (total // 2))
print("half sent", flush=True)
time.sleep(600)
"""


def test_upload_killed_halfway_leaves_no_active_image_and_no_file(tinystack_up):
    ts = tinystack_up
    name = unique("halfway")
    image = connect(ts).image.create_image(name, disk_format="raw", container_format="bare",
                                           allow_duplicates=True)
    assert image.status == "queued"
    token = ts.openstack("token", "issue", "-f", "value", "-c", "id",
                         cloud="tinystack").stdout.strip()
    uploader = subprocess.Popen(
        [sys.executable, "-c", HALF_UPLOAD, "127.0.0.1", str(ts.port),
         f"/image/v2/images/{image.id}/file", token, str(64 * 1024 * 1024)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert uploader.stdout.readline().strip() == "half sent"
        wait_for(lambda: show(ts, image.id)["status"] == "saving", 30, "the upload to start")
    finally:
        uploader.send_signal(signal.SIGKILL)
        uploader.wait(timeout=30)

    shown = wait_for(lambda: (s := show(ts, image.id))["status"] != "saving" and s, 30,
                     "the server to notice the upload died")
    assert shown["status"] == "queued"
    assert shown.get("size") is None
    images = ts.data_dir / "images"
    assert not (images / image.id).exists()
    assert [p.name for p in (images / ".partial").iterdir()] == []
    assert name not in {n for n, i in listed(ts).items() if i["Status"] == "active"}


def test_sdk_import_and_download(tinystack_up, qcow2, tmp_path):
    """openstacksdk: stage + glance-direct import, then a streamed, verified download."""
    ts = tinystack_up
    conn = connect(ts)
    name = unique("sdk")

    methods = conn.image.get_import_info().import_methods["value"]
    assert methods == ["glance-direct", "web-download"]
    assert [s.id for s in conn.image.stores()] == ["file"]
    image = conn.image.create_image(name, filename=str(qcow2), disk_format="qcow2",
                                    container_format="bare", use_import=True,
                                    allow_duplicates=True)
    image = conn.image.wait_for_status(image, "active", failures=["queued"], wait=120)

    saved = tmp_path / "sdk.qcow2"
    conn.image.download_image(image, output=str(saved))
    assert sha512(saved) == sha512(qcow2)
    assert image.hash_algo == "sha512" and image.hash_value == sha512(qcow2)
    found = list(conn.image.images(name=name))
    assert [i.id for i in found] == [image.id]
    conn.image.delete_image(image)
    assert conn.image.find_image(name) is None


def start(ts) -> None:
    """``tinystack up -d`` an instance made by ``Launcher.prepare``."""
    up = subprocess.run(ts.up_argv(), env=ts.env, capture_output=True, text=True, timeout=120,
                        stdin=subprocess.DEVNULL)
    assert up.returncode == 0, up.stdout + up.stderr + ts.log_tail()
    ts.pid = read_pid(ts.pid_file)


def test_default_guest_image_is_uploaded_once(launch_tinystack):
    """``tiny`` appears after up (built in the background if needed) and only once."""
    ts = launch_tinystack.prepare("tiny")
    ts.data_dir.mkdir(parents=True)
    cache = os.environ.get("TINYSTACK_TEST_GUEST_CACHE") or str(REPO / ".cache" / "guest")
    (ts.data_dir / "tinystack.toml").write_text(f'[image]\nguest_cache_dir = "{cache}"\n')
    start(ts)

    tiny = wait_for(lambda: (s := show(ts, "tiny", "tinystack-alt", check=False))
                    and s["status"] == "active" and s, 900, "the default image tiny")

    admin_project = project_id(ts, "tinystack-admin")
    assert tiny["visibility"] == "public"
    assert tiny["owner"] == admin_project
    assert tiny["disk_format"] == "qcow2"
    kernel = show(ts, tiny["properties"]["kernel_id"], "tinystack-alt")
    ramdisk = show(ts, tiny["properties"]["ramdisk_id"], "tinystack-alt")
    assert (kernel["name"], kernel["disk_format"]) == ("tiny-kernel", "aki")
    assert (ramdisk["name"], ramdisk["disk_format"]) == ("tiny-ramdisk", "ari")

    assert ts.cli("down").returncode == 0
    start(ts)
    wait_for(lambda: "default image: tiny is already there" in ts.log_file.read_text(), 120,
             "the restarted instance to check for tiny")
    names = sorted(n for n in listed(ts, "tinystack-admin") if n.startswith("tiny"))
    assert names == ["tiny", "tiny-kernel", "tiny-ramdisk"]
