"""The compute node's files: the base image cache, config drives, the desired-state record,
and the QEMU command line a spec turns into. Real ``qemu-img`` and ``genisoimage``; the
image service is an ``httpx.MockTransport``.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from pathlib import Path

import httpx
import pytest

from tinystack.compute import host
from tinystack.compute.config_drive import build_config_drive
from tinystack.compute.desired import DesiredStore
from tinystack.compute.drivers.base import PermanentFailure, TemporaryFailure
from tinystack.compute.drivers.qemu import QemuDriver, QemuOptions
from tinystack.compute.qemu_command import tap_name
from tinystack.compute.image_cache import ImageCache
from tinystack.compute.messages import ImageRef, PortBinding, ServerSpec

pytestmark = pytest.mark.slow


def qcow2(path: Path, *, backing: Path | None = None, size: str = "16M") -> bytes:
    argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing is not None:
        argv += ["-b", str(backing), "-F", "raw"]
    subprocess.run([*argv, str(path), size], check=True, timeout=30)
    return path.read_bytes()


def cache_serving(tmp_path: Path, body: bytes, status: int = 200) -> tuple[ImageCache, list]:
    requests = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(status, content=body)

    return ImageCache(tmp_path / "images", transport=httpx.MockTransport(handler)), requests


def ref(body: bytes, **fields) -> ImageRef:
    fields.setdefault("checksum", hashlib.md5(body).hexdigest())
    return ImageRef(id=fields.pop("id", "img"), download_url="http://images.invalid/img/file",
                    **fields)


async def test_image_is_fetched_once_checked_and_cached(tmp_path):
    body = qcow2(tmp_path / "src.qcow2")
    cache, requests = cache_serving(tmp_path, body)

    first, second = await asyncio.gather(cache.fetch(ref(body), "tok"), cache.fetch(ref(body), "tok"))
    again = await cache.fetch(ref(body), "tok")

    assert len(requests) == 1 and requests[0].headers["X-Auth-Token"] == "tok"
    assert first.path == second.path == again.path == tmp_path / "images" / "img"
    assert (first.format, first.virtual_size) == ("qcow2", 16 * 2**20)
    assert list((tmp_path / "images").glob(".*")) == []


@pytest.mark.parametrize(("status", "kind"), [(404, PermanentFailure), (403, PermanentFailure),
                                              (503, TemporaryFailure)])
async def test_image_service_errors_are_sorted(tmp_path, status, kind):
    cache, _ = cache_serving(tmp_path, b"nope", status=status)
    with pytest.raises(kind):
        await cache.fetch(ref(b"x"), "tok")
    assert list((tmp_path / "images").iterdir()) == []


async def test_a_refusal_without_a_token_is_temporary_and_with_one_permanent(tmp_path):
    cache, requests = cache_serving(tmp_path, b"nope", status=401)
    with pytest.raises(TemporaryFailure, match="no token yet"):
        await cache.fetch(ref(b"x"), "")
    assert "X-Auth-Token" not in requests[0].headers
    with pytest.raises(PermanentFailure, match="refused to hand out image img"):
        await cache.fetch(ref(b"x"), "tok")


async def test_corrupt_download_is_temporary_and_leaves_nothing(tmp_path):
    body = qcow2(tmp_path / "src.qcow2")
    cache, _ = cache_serving(tmp_path, body)
    with pytest.raises(TemporaryFailure, match="corrupted"):
        await cache.fetch(ref(body, checksum="0" * 64), "tok")
    assert list((tmp_path / "images").iterdir()) == []


async def test_image_whose_data_is_not_its_declared_format_is_refused(tmp_path):
    body = qcow2(tmp_path / "src.qcow2")
    cache, _ = cache_serving(tmp_path, body)
    with pytest.raises(PermanentFailure, match="says it is raw but its data is qcow2"):
        await cache.fetch(ref(body, disk_format="raw"), "tok")


async def test_image_with_a_backing_file_is_refused(tmp_path):
    (tmp_path / "secret").write_bytes(b"\0" * 2**20)
    body = qcow2(tmp_path / "evil.qcow2", backing=tmp_path / "secret")
    cache, _ = cache_serving(tmp_path, body)
    with pytest.raises(PermanentFailure, match="refers to other files"):
        await cache.fetch(ref(body), "tok")


async def test_config_drive_is_an_iso_labelled_config_2(tmp_path):
    output = tmp_path / "disk.config"
    await build_config_drive({"openstack/latest/meta_data.json": '{"hostname": "h"}',
                              "openstack/latest/user_data": "#!/bin/sh\n"}, output)
    info = await host.run(["isoinfo", "-d", "-i", str(output)], timeout=10)
    assert "Volume id: config-2" in info
    listing = await host.run(["isoinfo", "-R", "-f", "-i", str(output)], timeout=10)
    assert "/openstack/latest/meta_data.json" in listing.split()
    assert [p.name for p in tmp_path.iterdir()] == ["disk.config"]


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "openstack/../../x"])
async def test_config_drive_refuses_paths_that_leave_it(tmp_path, name):
    with pytest.raises(PermanentFailure):
        await build_config_drive({name: "x"}, tmp_path / "disk.config")
    assert list(tmp_path.iterdir()) == []


def test_desired_store_survives_a_restart_and_keeps_the_newest(tmp_path):
    store = DesiredStore(tmp_path)
    store.load()
    assert store.offer(ServerSpec(id="s1", name="a", revision=2, token="secret"))
    assert not store.offer(ServerSpec(id="s1", name="old", revision=1))
    store.update("s1", applied=2)

    again = DesiredStore(tmp_path)
    again.load()
    record = again.get("s1")
    assert (record.spec.name, record.applied) == ("a", 2)
    assert (tmp_path / "s1.json").stat().st_mode & 0o777 == 0o600


def test_desired_store_takes_the_same_revision_again_only_to_gain_a_token(tmp_path):
    store = DesiredStore(tmp_path)
    store.load()
    assert store.offer(ServerSpec(id="s1", name="a", revision=3))  # the audit's re-send
    assert store.offer(ServerSpec(id="s1", name="a", revision=3, token="secret"))
    assert not store.offer(ServerSpec(id="s1", name="a", revision=3, token="other"))
    assert not store.offer(ServerSpec(id="s1", name="a", revision=3))
    assert store.get("s1").spec.token == "secret"


def test_desired_store_refuses_ids_that_are_not_plain_names(tmp_path):
    with pytest.raises(ValueError):
        DesiredStore(tmp_path).offer(ServerSpec(id="a/b", name="x", revision=1))


async def test_qemu_command_line_for_a_spec(tmp_path):
    driver = QemuDriver(QemuOptions(instances_dir=tmp_path / "i", images_dir=tmp_path / "c",
                                    state_dir=tmp_path, accelerator="tcg"))
    for name in ("k", "r"):
        (tmp_path / "c").mkdir(exist_ok=True)
        (tmp_path / "c" / name).write_bytes(b"x")
        (tmp_path / "c" / f"{name}.json").write_text('{"kind": "kernel", "format": "raw", '
                                                     '"virtual_size": 1}')
    port = PortBinding(port_id="0123456789abcdef", mac="fa:16:3e:00:00:01", mtu=1450)
    spec = ServerSpec(id="s1", name="x", revision=1, vcpus=2, memory_mb=256, ports=[port],
                      image=ImageRef(id="img", kernel_id="k", ramdisk_id="r",
                                     kernel_cmdline="root=/dev/vda console=ttyS0 quiet"))

    argv = await driver._argv(spec, driver._paths("s1"))

    line = " ".join(argv)
    assert tap_name(port) == "tap0123456789a"
    assert "ifname=tap0123456789a,script=no,downscript=no" in line
    assert "mac=fa:16:3e:00:00:01,host_mtu=1450" in line
    assert "-accel tcg,tb-size=32" in line and "-smp 2 -m 256M" in line
    assert "virtio-balloon-pci,id=balloon0,free-page-reporting=on" in line
    assert argv[argv.index("-append") + 1] == "root=/dev/vda console=ttyS0 quiet"
    assert argv[argv.index("-pidfile") + 1] == str(tmp_path / "i" / "s1" / "qemu.pid")


FAKE_QEMU = """#!/bin/sh
# Finds "-serial file:PATH" and plays a kernel that {behaviour}.
while [ $# -gt 0 ]; do
    [ "$1" = "-serial" ] && console="${{2#file:}}"
    shift
done
{action}
"""


@pytest.mark.parametrize(("action", "boots"), [
    ('echo "Kernel panic - not syncing: VFS: Unable to mount root fs" > "$console"', True),
    ("exec sleep 30", False),
    ('echo "qemu: MSR 0x10a" >&2; exit 1', False),
])
async def test_kvm_probe_believes_only_a_kernel_that_got_far(tmp_path, action, boots):
    from tinystack.compute import accelerator

    fake = tmp_path / "fake-qemu"
    fake.write_text(FAKE_QEMU.format(behaviour="boots, hangs or is refused", action=action))
    fake.chmod(0o755)
    (tmp_path / "vmlinuz").write_bytes(b"")

    assert await accelerator.kvm_boots(str(fake), tmp_path / "vmlinuz", tmp_path / "probe",
                                       timeout=0.5) is boots

    accelerator.remember(tmp_path / "accel.json", "QEMU 7.2", "tcg")
    assert accelerator.remembered(tmp_path / "accel.json", "QEMU 7.2") == "tcg"
    assert accelerator.remembered(tmp_path / "accel.json", "QEMU 8.0") is None
