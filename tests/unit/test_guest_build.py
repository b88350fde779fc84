"""The pure parts of the guest image builder: module order, ELF reading, cache key, cpio."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from tinystack.image.guest import build, elf, initramfs, modules, packages
from tinystack.image.guest.packages import Package

# -- module order -------------------------------------------------------------------

VIRTIO = {
    "virtio_ring": [], "virtio": [], "virtio_pci_modern_dev": [], "virtio_pci_legacy_dev": [],
    "virtio_pci": ["virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_ring", "virtio"],
    "failover": [], "net_failover": ["failover"],
    "virtio_net": ["virtio_ring", "virtio", "net_failover"],
    "virtio_blk": ["virtio_ring", "virtio"],
    "button": [], "evdev": [],
}


def test_load_order_puts_every_module_after_its_dependencies():
    order = modules.load_order(["virtio_pci", "virtio_net", "virtio_blk", "button", "evdev"], VIRTIO)
    assert sorted(order) == sorted(VIRTIO)  # each once, dependencies pulled in
    for name, deps in VIRTIO.items():
        assert all(order.index(dep) < order.index(name) for dep in deps), name


def test_load_order_keeps_the_wanted_order_where_dependencies_allow():
    assert modules.load_order(["evdev", "button"], VIRTIO) == ["evdev", "button"]
    assert modules.load_order(["net_failover", "failover"], VIRTIO) == ["failover", "net_failover"]


def test_load_order_leaves_out_builtin_modules():
    order = modules.load_order(["virtio_blk"], VIRTIO, builtin={"virtio", "virtio_ring"})
    assert order == ["virtio_blk"]


def test_load_order_names_a_missing_dependency_and_who_needs_it():
    with pytest.raises(modules.ModuleError, match="virtio_ring .needed by virtio_blk"):
        modules.load_order(["virtio_blk"], {"virtio_blk": ["virtio_ring"]})


def test_load_order_reports_a_cycle():
    with pytest.raises(modules.ModuleError, match="cycle: a -> b -> a"):
        modules.load_order(["a"], {"a": ["b"], "b": ["a"]})


def test_module_name_uses_the_kernels_spelling():
    assert modules.module_name("virtio-rng.ko") == "virtio_rng"
    assert modules.module_name("isofs.ko") == "isofs"


def _elf(sections: dict[str, bytes]) -> bytes:
    """A minimal ELF64 little-endian file holding ``sections`` (enough for elf.py)."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n in [*sections, ".shstrtab"])
    body = b"".join(sections.values()) + names
    header_size = 64
    shoff = header_size + len(body)
    count = len(sections) + 2  # null section, sections, .shstrtab
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header += struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, count, count - 1)
    table = bytes(64)
    offset, name_at = header_size, 1
    for name, data in [*sections.items(), (".shstrtab", names)]:
        table += struct.pack("<IIQQQQIIQQ", name_at, 1, 0, 0, offset, len(data), 0, 0, 1, 0)
        offset += len(data)
        name_at += len(name) + 1
    return header + body + table


def _ko(path: Path, depends: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    name = modules.module_name(path.name)
    info = f"license=GPL\0depends={depends}\0name={name}\0vermagic=6.1.0-test SMP\0".encode()
    path.write_bytes(_elf({".text": b"\x90" * 8, ".modinfo": info}))


def test_modinfo_reads_the_modinfo_section(tmp_path):
    _ko(tmp_path / "virtio_net.ko", "virtio_ring,virtio,net_failover")
    info = elf.modinfo(tmp_path / "virtio_net.ko")
    assert info["name"] == "virtio_net"
    assert info["depends"] == "virtio_ring,virtio,net_failover"


def test_modinfo_refuses_a_file_that_is_not_elf(tmp_path):
    (tmp_path / "x.ko").write_bytes(b"not an elf file at all" * 4)
    with pytest.raises(elf.ElfError):
        elf.modinfo(tmp_path / "x.ko")


def _kernel_tree(root: Path, config: str) -> Path:
    (root / "boot").mkdir(parents=True)
    (root / "boot" / "config-6.1.0-test").write_text(config)
    kernel = root / "lib" / "modules" / "6.1.0-test" / "kernel"
    _ko(kernel / "drivers/virtio/virtio.ko", "")
    _ko(kernel / "drivers/virtio/virtio_ring.ko", "")
    _ko(kernel / "drivers/block/virtio_blk.ko", "virtio_ring,virtio")
    _ko(kernel / "drivers/char/hw_random/virtio-rng.ko", "virtio_ring,virtio")
    _ko(kernel / "fs/isofs/isofs.ko", "")
    (root / "lib/modules/6.1.0-test/modules.builtin").write_text("kernel/fs/ext4/ext4.ko\n")
    return root


FEATURES = (
    modules.KernelFeature("CONFIG_EXT4_FS", "ext4"),
    modules.KernelFeature("CONFIG_VIRTIO_BLK", "virtio_blk"),
    modules.KernelFeature("CONFIG_HW_RANDOM_VIRTIO", "virtio_rng", required=False),
    modules.KernelFeature("CONFIG_ISO9660_FS", "isofs", group="late"),
    modules.KernelFeature("CONFIG_ATA_PIIX", "ata_piix", required=False, group="late"),
)


def test_plan_reads_the_kernel_config_for_builtin_module_and_missing(tmp_path):
    tree = _kernel_tree(tmp_path, "CONFIG_EXT4_FS=y\nCONFIG_VIRTIO_BLK=m\nCONFIG_HW_RANDOM_VIRTIO=m\n"
                                  "CONFIG_ISO9660_FS=m\n# CONFIG_ATA_PIIX is not set\n")
    plan = modules.plan_modules(tree, FEATURES)
    assert plan.kernel_version == "6.1.0-test"
    assert {g: [f.name for f in files] for g, files in plan.groups.items()} == {
        "boot": ["virtio_ring.ko", "virtio.ko", "virtio_blk.ko", "virtio-rng.ko"],
        "late": ["isofs.ko"],
    }
    assert plan.builtin == ["CONFIG_EXT4_FS"]
    assert plan.missing == ["CONFIG_ATA_PIIX"]


def test_plan_leaves_out_a_module_the_kernel_builds_in(tmp_path):
    tree = _kernel_tree(tmp_path, "CONFIG_EXT4_FS=y\nCONFIG_VIRTIO_BLK=m\nCONFIG_ISO9660_FS=y\n")
    plan = modules.plan_modules(tree, FEATURES)
    assert "late" not in plan.groups
    assert "CONFIG_ISO9660_FS" in plan.builtin


def test_plan_refuses_a_kernel_without_a_required_feature(tmp_path):
    tree = _kernel_tree(tmp_path, "CONFIG_EXT4_FS=y\n# CONFIG_VIRTIO_BLK is not set\n")
    with pytest.raises(modules.ModuleError, match="CONFIG_VIRTIO_BLK=unset"):
        modules.plan_modules(tree, FEATURES)


# -- packages and cache key ---------------------------------------------------------------


def test_parse_depends_drops_versions_and_keeps_alternatives():
    assert packages.parse_depends("libc6 (>= 2.34), libcrypt1 (>= 1:4.1.0), a | b:any, c [amd64]") == [
        ["libc6"], ["libcrypt1"], ["a", "b"], ["c"],
    ]


def test_parse_control_reads_the_first_stanza():
    text = "Package: x\nVersion: 1:2.0-1\nDescription: one\n two\n\nPackage: y\nVersion: 3\n"
    assert packages.parse_control(text) == {"Package": "x", "Version": "1:2.0-1",
                                            "Description": "one\ntwo"}


def test_package_key_is_file_name_safe():
    assert Package("busybox-static", "1:1.35.0-4").key == "busybox-static_1%3a1.35.0-4"


PACKAGES = [Package("linux-image-6.1.0-56-cloud-amd64", "6.1.192-2"),
            Package("busybox-static", "1:1.35.0-4")]


def test_cache_key_is_stable_and_ignores_package_order():
    one = build.cache_key(PACKAGES, b"#!/bin/sh\n", "builder")
    assert one == build.cache_key(list(reversed(PACKAGES)), b"#!/bin/sh\n", "builder")
    assert len(one) == 16 and int(one, 16) >= 0


@pytest.mark.parametrize("change", ["version", "init", "builder"])
def test_cache_key_changes_with_any_input(change):
    before = build.cache_key(PACKAGES, b"#!/bin/sh\n", "builder")
    versions = PACKAGES
    if change == "version":
        versions = [PACKAGES[0], Package("busybox-static", "1:1.35.0-5")]
    init = b"#!/bin/sh\necho changed\n" if change == "init" else b"#!/bin/sh\n"
    builder = "other" if change == "builder" else "builder"
    assert build.cache_key(versions, init, builder) != before


def test_the_real_init_script_and_builder_feed_the_key():
    assert build.init_script().startswith(b"#!/bin/sh\n")
    assert len(build.builder_digest()) == 64


def test_apt_lists_fingerprint_follows_the_lists(tmp_path):
    (tmp_path / "deb_Packages").write_text("a")
    before = build.apt_lists_fingerprint(tmp_path)
    assert build.apt_lists_fingerprint(tmp_path) == before
    (tmp_path / "deb_Packages").write_text("ab")
    assert build.apt_lists_fingerprint(tmp_path) != before
    assert build.apt_lists_fingerprint(tmp_path / "missing") == "none"


# -- tree and cpio --------------------------------------------------------------------------


def test_find_in_trees_follows_absolute_links_inside_the_tree(tmp_path):
    tree = tmp_path / "pkg"
    (tree / "lib/x86_64-linux-gnu").mkdir(parents=True)
    (tree / "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").write_text("loader")
    (tree / "lib64").mkdir()
    (tree / "lib64/ld-linux-x86-64.so.2").symlink_to("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    (tree / "lib/x86_64-linux-gnu/libz.so.1").symlink_to("libz.so.1.2.13")
    (tree / "lib/x86_64-linux-gnu/libz.so.1.2.13").write_text("zlib")
    found = initramfs.find_in_trees([tmp_path / "other", tree], "/lib64/ld-linux-x86-64.so.2")
    assert found == tree / "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    assert initramfs.find_in_trees([tree], "lib/x86_64-linux-gnu/libz.so.1").read_text() == "zlib"
    assert initramfs.find_in_trees([tree], "lib/missing.so") is None


def _read_cpio(data: bytes) -> list[tuple[str, int, bytes, int, int]]:
    """(name, mode, data, rdevmajor, rdevminor) of each newc entry, checking the padding."""
    entries, at = [], 0
    while True:
        assert data[at:at + 6] == b"070701" and at % 4 == 0
        fields = [int(data[at + 6 + 8 * i: at + 14 + 8 * i], 16) for i in range(13)]
        mode, uid, gid, size, rmaj, rmin, namesize = (fields[1], fields[2], fields[3], fields[6],
                                                      fields[9], fields[10], fields[11])
        assert (uid, gid) == (0, 0)
        name_at = at + 110
        name = data[name_at:name_at + namesize - 1].decode()
        body_at = name_at + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return entries
        entries.append((name, mode, data[body_at:body_at + size], rmaj, rmin))
        at = body_at + size + (-size % 4)


def test_cpio_writer_writes_newc_the_kernel_reads(tmp_path):
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "init").write_bytes(b"#!/bin/sh\n")
    (tree / "init").chmod(0o755)
    (tree / "bin/busybox").write_bytes(b"\x7fELF" + b"x" * 13)
    (tree / "bin/sh").symlink_to("/bin/busybox")
    (tree / "tmp").mkdir()
    (tree / "tmp").chmod(0o1777)
    buffer = io.BytesIO()
    cpio = initramfs.CpioWriter(buffer)
    cpio.add_tree(tree)
    cpio.add_char_device("dev/console", 5, 1)
    cpio.add_file("lib/modules/6.1/load-order", b"virtio.ko\n")
    cpio.close()
    entries = {name: (mode, data, rdev) for name, mode, data, *rdev in _read_cpio(buffer.getvalue())}
    assert entries["init"][0] == stat.S_IFREG | 0o755 and entries["init"][1] == b"#!/bin/sh\n"
    assert entries["bin/busybox"][1] == b"\x7fELF" + b"x" * 13
    assert entries["bin/sh"][0] == stat.S_IFLNK | 0o777 and entries["bin/sh"][1] == b"/bin/busybox"
    assert entries["tmp"][0] == stat.S_IFDIR | 0o1777
    assert entries["dev/console"][0] == stat.S_IFCHR | 0o600 and entries["dev/console"][2] == [5, 1]
    names = list(entries)
    for parent in ("dev", "lib", "lib/modules", "lib/modules/6.1"):  # parents before children
        assert names.index(parent) < names.index(next(n for n in names if n.startswith(parent + "/")))


def test_write_initramfs_lists_each_module_group(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "init").write_text("#!/bin/sh\n")
    ko = {name: tmp_path / name for name in ("virtio.ko", "virtio_blk.ko", "isofs.ko")}
    for path in ko.values():
        path.write_bytes(b"module")
    out = tmp_path / "initrd.img"
    initramfs.write_initramfs(tree, out, kernel_version="6.1", modules={
        "boot": [ko["virtio.ko"], ko["virtio_blk.ko"]], "cdrom": [ko["isofs.ko"]]})
    entries = {name: data for name, _, data, *_ in _read_cpio(gzip.decompress(out.read_bytes()))}
    assert entries["lib/modules/6.1/load-order"] == b"virtio.ko\nvirtio_blk.ko\n"
    assert entries["lib/modules/6.1/load-order.cdrom"] == b"isofs.ko\n"
    assert entries["lib/modules/6.1/isofs.ko"] == b"module"
    assert "dev/console" in entries
    before = out.read_bytes()
    initramfs.write_initramfs(tree, out, kernel_version="6.1", modules={
        "boot": [ko["virtio.ko"], ko["virtio_blk.ko"]], "cdrom": [ko["isofs.ko"]]})
    assert out.read_bytes() == before  # reproducible


# -- init.sh helpers, run by the host's busybox -----------------------------------------------


def _init_function(name: str) -> str:
    """The text of one shell function of init.sh (from ``name() {`` to the closing ``}``)."""
    text = build.init_script().decode()
    start = text.index(f"\n{name}() {{") + 1
    return text[start:text.index("\n}\n", start) + 3]


@pytest.fixture(scope="module")
def busybox_sh(tmp_path_factory):
    """``busybox_sh(script, stdin)``: run ``script`` by busybox sh with only busybox applets."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.fail("busybox is missing: ./install.sh installs busybox-static", pytrace=False)
    bin_dir = tmp_path_factory.mktemp("busybox-bin")
    for applet in ("sh", "awk", "sed", "grep", "cut", "tr"):
        (bin_dir / applet).symlink_to(busybox)

    def run(script: str, stdin: str = "") -> str:
        result = subprocess.run([str(bin_dir / "sh"), "-c", script], input=stdin, text=True,
                                capture_output=True, timeout=10, env={"PATH": str(bin_dir)})
        assert result.returncode == 0, result.stderr
        return result.stdout

    return run


def test_json_flatten_gives_paths_and_values(busybox_sh):
    document = {
        "uuid": "d8e0", "hostname": "vm.novalocal", "name": "vm one", "launch_index": 0,
        "public_keys": {"mykey": "ssh-ed25519 AAAA me@x\n"}, "meta": {"role": 'web"1', "e": {}},
        "keys": [{"name": "mykey", "data": "ssh-ed25519 AAAA me@x\n"}], "devices": [],
        "random_seed": "a\\/b\u00e9", "ok": True, "none": None,
    }
    script = _init_function("json_flatten") + "json_flatten"
    lines = dict(line.split("\t", 1) for line in busybox_sh(script, json.dumps(document)).splitlines())
    assert lines == {
        "uuid": "d8e0", "hostname": "vm.novalocal", "name": "vm one", "launch_index": "0",
        "public_keys.mykey": "ssh-ed25519 AAAA me@x ", "meta.role": 'web"1',
        "keys.0.name": "mykey", "keys.0.data": "ssh-ed25519 AAAA me@x ",
        "random_seed": "a\\/b?", "ok": "true", "none": "null",
    }


@pytest.mark.parametrize("netmask, prefix", [("255.255.255.0", "24"), ("255.255.0.0", "16"),
                                             ("255.255.255.240", "28"), ("0.0.0.0", "0")])
def test_prefix_of_turns_a_netmask_into_a_prefix_length(busybox_sh, netmask, prefix):
    assert busybox_sh(_init_function("prefix_of") + f"prefix_of {netmask}").strip() == prefix


# -- the command ------------------------------------------------------------------------------


def test_tinystack_image_build_builds_into_the_image_services_cache(tmp_path, monkeypatch, capsys):
    import tinystack.image.guest as guest
    from tinystack import cli

    calls = []
    files = {name: tmp_path / name for name in ("vmlinuz", "initrd.img", "disk.qcow2")}
    for path in files.values():
        path.write_bytes(b"x" * 1024)

    def fake_build(cache_dir, *, progress=True):
        calls.append((cache_dir, progress))
        return guest.GuestImage(kernel=files["vmlinuz"], ramdisk=files["initrd.img"],
                                disk=files["disk.qcow2"], cache_key="0123456789abcdef",
                                kernel_version="6.1.0-test")

    monkeypatch.setattr(guest, "build_guest_image", fake_build)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TINYSTACK_IMAGE__GUEST_CACHE_DIR", raising=False)
    assert cli.main(["image", "build", "--data-dir", str(tmp_path / "data"), "--quiet"]) == 0
    assert calls == [(tmp_path / "cache" / "tinystack" / "guest", False)]
    out = capsys.readouterr().out
    assert "guest image tiny (build 0123456789abcdef" in out
    assert f"{files['disk.qcow2']}  (qcow2" in out


def test_tinystack_image_build_reports_a_failed_build(tmp_path, monkeypatch, capsys):
    import tinystack.image.guest as guest
    from tinystack import cli

    def failing_build(cache_dir, *, progress=True):
        raise guest.GuestBuildError("guest image build failed: apt-cache knows no linux-image")

    monkeypatch.setattr(guest, "build_guest_image", failing_build)
    assert cli.main(["image", "build", "--cache-dir", str(tmp_path), "--quiet"]) == 1
    assert "apt-cache knows no linux-image" in capsys.readouterr().err
