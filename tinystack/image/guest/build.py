"""Builds the default guest image once per set of inputs, and finds it afterwards.

``build_guest_image(cache_dir)`` returns a ``GuestImage``: a kernel, an
initramfs and a qcow2 root disk, with the Glance formats and properties to
upload them under (CirrOS UEC style: ``tiny-kernel`` as ``aki``,
``tiny-ramdisk`` as ``ari``, and ``tiny`` as qcow2 naming both by
``kernel_id``/``ramdisk_id``). The image service calls it on first ``up``;
``tinystack image build`` calls it from the command line.

Why three files and not one bootable disk: the kernel boots straight from
QEMU's ``-kernel``/``-initrd`` (no bootloader, no BIOS disk reads, which are
slow under TCG), the initramfs alone is a complete guest that runs from RAM,
and the 8 MB qcow2 adds a persistent root (``root=/dev/vda``) that snapshots
and qcow2 overlays work on like any cloud image.

The cache dir holds::

    CACHE/lock                    held while building (one builder at a time)
    CACHE/resolved.json           package versions, reused until apt's lists change
    CACHE/debs/, CACHE/pkgs/      downloaded and unpacked packages (packages.py)
    CACHE/builds/KEY/             vmlinuz, initrd.img, disk.qcow2, manifest.json

KEY (``cache_key``) hashes the package versions, init.sh and the builder's own
code, so a new kernel, a changed init or a changed builder gives a new build;
the three newest builds are kept, and the packages only the current one uses.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from tinystack.image.guest import elf, initramfs, modules, packages, rootdisk

__all__ = [
    "BUILD_FORMAT", "DEFAULT_CMDLINE", "GuestBuildError", "GuestImage",
    "apt_lists_fingerprint", "build_guest_image", "builder_digest", "cache_key", "init_script",
]

log = logging.getLogger(__name__)

BUILD_FORMAT = 1
"""Bump when the layout of a build dir changes in a way the code digest would not show."""
DEFAULT_CMDLINE = "root=/dev/vda console=ttyS0"
MIN_RAM_MB = 96
APT_LISTS = Path("/var/lib/apt/lists")
LOCK_TIMEOUT = 1800
KEEP_BUILDS = 3
MANIFEST = "manifest.json"
FILES = {"kernel": "vmlinuz", "ramdisk": "initrd.img", "disk": "disk.qcow2"}
BUILDER_MODULES = ("build.py", "initramfs.py", "modules.py", "packages.py", "rootdisk.py", "elf.py")


class GuestBuildError(RuntimeError):
    """The guest image could not be built; the message says which step and why."""


@dataclass(frozen=True)
class GuestImage:
    """A built guest image: the files and how to register them with the image service."""

    kernel: Path
    """bzImage of the Debian cloud kernel (upload as ``aki``)."""
    ramdisk: Path
    """initramfs, gzipped newc cpio (upload as ``ari``); a full guest on its own."""
    disk: Path
    """qcow2 root disk: ext4 over the whole disk, no partition table, no bootloader."""
    cache_key: str
    kernel_version: str
    packages: dict[str, str] = field(default_factory=dict)
    """Debian package name -> version the image is made of."""
    name: str = "tiny"
    kernel_name: str = "tiny-kernel"
    ramdisk_name: str = "tiny-ramdisk"
    disk_format: str = "qcow2"
    container_format: str = "bare"
    kernel_disk_format: str = "aki"
    kernel_container_format: str = "aki"
    ramdisk_disk_format: str = "ari"
    ramdisk_container_format: str = "ari"
    kernel_cmdline: str = DEFAULT_CMDLINE
    min_ram_mb: int = MIN_RAM_MB
    """Glance ``min_ram``: the kernel and initramfs do not unpack in 64 MB."""
    properties: dict[str, str] = field(default_factory=dict)
    """Image properties for ``tiny`` besides ``kernel_id``/``ramdisk_id``."""

    def image_properties(self, kernel_id: str, ramdisk_id: str) -> dict[str, str]:
        """The properties of ``tiny`` once its kernel and ramdisk images exist."""
        return {**self.properties, "kernel_id": kernel_id, "ramdisk_id": ramdisk_id}


def init_script() -> bytes:
    """The guest's init (package data ``init.sh``)."""
    return resources.files(__package__).joinpath("init.sh").read_bytes()


def builder_digest() -> str:
    """sha256 over the builder's own modules: a changed builder makes a new build."""
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for name in BUILDER_MODULES:
        digest.update(name.encode() + b"\0" + (here / name).read_bytes() + b"\0")
    return digest.hexdigest()


def cache_key(versions: Iterable[packages.Package], init: bytes, builder: str) -> str:
    """The build's name: 16 hex digits over the package versions, init.sh and the builder."""
    document = {
        "format": BUILD_FORMAT,
        "packages": sorted([p.name, p.version] for p in versions),
        "init": hashlib.sha256(init).hexdigest(),
        "builder": builder,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


def apt_lists_fingerprint(lists_dir: Path = APT_LISTS) -> str:
    """Changes whenever ``apt-get update`` changes what apt-cache would answer."""
    digest = hashlib.sha256()
    try:
        entries = sorted(p for p in lists_dir.iterdir() if p.is_file())
    except OSError:
        return "none"
    for path in entries:
        info = path.stat()
        digest.update(f"{path.name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


# -- progress -----------------------------------------------------------------------


class _Steps:
    """A rich progress display of build steps, or log lines when ``enabled`` is False."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.progress = None
        if enabled:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.progress = Progress(SpinnerColumn(finished_text="[green]done"),
                                     TextColumn("{task.description}"), TimeElapsedColumn())

    def __enter__(self) -> _Steps:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    @contextlib.contextmanager
    def step(self, description: str, total: int = 1) -> Iterator[Callable[[str | None], None]]:
        """Show ``description`` while the block runs; yields ``advance(text=None)``."""
        started = time.monotonic()
        task = self.progress.add_task(description, total=total) if self.progress else None

        def advance(text: str | None = None) -> None:
            if self.progress is not None:
                self.progress.update(task, advance=1, **({"description": text} if text else {}))

        try:
            yield advance
        except BaseException:
            if self.progress is not None:
                self.progress.update(task, description=f"[red]{description}: failed")
                self.progress.stop_task(task)
            raise
        if self.progress is not None:
            self.progress.update(task, completed=total, description=description)
        log.info("guest image: %s (%.1f s)", description, time.monotonic() - started)


@contextlib.contextmanager
def _locked(path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an exclusive lock on ``path``; wait up to ``timeout`` for another builder."""
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise GuestBuildError(f"another build held {path} for {timeout:.0f} s") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- building ---------------------------------------------------------------------------


def _resolve(cache_dir: Path) -> list[packages.Package]:
    """Package versions: from apt-cache, or remembered while apt's lists are unchanged."""
    saved = cache_dir / "resolved.json"
    fingerprint = apt_lists_fingerprint()
    remembered = None
    try:
        remembered = json.loads(saved.read_text())
    except (OSError, ValueError):
        pass
    if remembered and remembered.get("apt_lists") == fingerprint:
        return [packages.Package(n, v) for n, v in remembered["packages"]]
    try:
        found = packages.resolve_packages()
    except packages.PackageError as exc:
        if not remembered:
            raise
        log.warning("guest image: %s; using the package versions resolved before", exc)
        return [packages.Package(n, v) for n, v in remembered["packages"]]
    saved.write_text(json.dumps({"apt_lists": fingerprint,
                                 "packages": [[p.name, p.version] for p in found]}, indent=1))
    return found


def _load(build_dir: Path) -> GuestImage:
    manifest = json.loads((build_dir / MANIFEST).read_text())
    return GuestImage(
        kernel=build_dir / FILES["kernel"], ramdisk=build_dir / FILES["ramdisk"],
        disk=build_dir / FILES["disk"], cache_key=manifest["cache_key"],
        kernel_version=manifest["kernel_version"], packages=manifest["packages"],
        kernel_cmdline=manifest["kernel_cmdline"], properties=manifest["properties"],
    )


def _is_complete(build_dir: Path) -> bool:
    return (build_dir / MANIFEST).is_file() and all((build_dir / f).is_file() for f in FILES.values())


def build_guest_image(cache_dir: Path, *, progress: bool = True) -> GuestImage:
    """The guest image for the current Debian packages and init.sh, built if not cached.

    Safe to call from several processes: one builds while the others wait for
    it and then find the build. Raises ``GuestBuildError`` when a step fails.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        with _Steps(progress) as steps, _locked(cache_dir / "lock"):
            return _build(cache_dir, steps)
    except (packages.PackageError, modules.ModuleError, initramfs.TreeError, rootdisk.DiskError,
            elf.ElfError, subprocess.SubprocessError, OSError) as exc:
        raise GuestBuildError(f"guest image build failed: {exc}") from exc


def _build(cache_dir: Path, steps: _Steps) -> GuestImage:
    with steps.step("resolve Debian package versions"):
        wanted = _resolve(cache_dir)
    init = init_script()
    key = cache_key(wanted, init, builder_digest())
    build_dir = cache_dir / "builds" / key
    if _is_complete(build_dir):
        return _load(build_dir)

    with steps.step(f"download and unpack {len(wanted)} Debian packages"):
        trees = packages.fetch_packages(wanted, cache_dir)
    kernel_name = next(name for name in trees if name.startswith("linux-image-"))
    kernel_tree = trees[kernel_name]
    with steps.step("pick kernel modules"):
        plan = modules.plan_modules(kernel_tree)

    (cache_dir / "builds").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=cache_dir / "builds", prefix=f".{key}."))
    try:
        work.chmod(0o755)
        versions = {p.name: p.version for p in wanted}
        release = "".join(f"{k}={v}\n" for k, v in {
            "BUILD": key, "KERNEL": plan.kernel_version,
            **{f"PACKAGE_{n}": v for n, v in versions.items()},
        }.items())
        tree = work / "tree"
        tree.mkdir()
        with steps.step("assemble the guest tree"):
            initramfs.assemble_tree(
                tree, init_script=init, busybox_tree=trees[packages.BUSYBOX],
                ssh_trees=[t for n, t in trees.items() if n not in (kernel_name, packages.BUSYBOX)],
                release=release,
            )
        count = sum(len(files) for files in plan.groups.values())
        with steps.step(f"write the initramfs ({count} kernel modules)"):
            initramfs.write_initramfs(tree, work / FILES["ramdisk"],
                                      kernel_version=plan.kernel_version, modules=plan.groups)
        shutil.copyfile(kernel_tree / "boot" / f"vmlinuz-{plan.kernel_version}", work / FILES["kernel"])
        with steps.step("make the root disk"):
            rootdisk.make_root_disk(tree, work / FILES["disk"])
        shutil.rmtree(tree)
        properties = {
            "os_command_line": DEFAULT_CMDLINE,
            "hw_disk_bus": "virtio",
            "hw_vif_model": "virtio",
            "hw_rng_model": "virtio",
            "os_type": "linux",
            "architecture": "x86_64",
            "tinystack_guest_build": key,
        }
        manifest = {
            "cache_key": key, "kernel_version": plan.kernel_version, "packages": versions,
            "modules": {g: [f.name for f in files] for g, files in plan.groups.items()},
            "kernel_cmdline": DEFAULT_CMDLINE,
            "properties": properties, "files": FILES,
            "sizes": {name: (work / f).stat().st_size for name, f in FILES.items()},
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        if build_dir.exists():  # an incomplete leftover
            shutil.rmtree(build_dir)
        work.rename(build_dir)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    _prune(cache_dir, keep=key, wanted=wanted)
    return _load(build_dir)


def _prune(cache_dir: Path, *, keep: str, wanted: list[packages.Package]) -> None:
    """Remove all but the newest ``KEEP_BUILDS`` builds, and packages no build of now needs.

    Keeping a few lets two checkouts with different builders share one cache
    without rebuilding at every switch.
    """
    builds = sorted((p for p in (cache_dir / "builds").iterdir() if not p.name.startswith(".")),
                    key=lambda p: (p.name == keep, p.stat().st_mtime), reverse=True)
    for path in builds[KEEP_BUILDS:]:
        shutil.rmtree(path, ignore_errors=True)
    packages.prune_cache(cache_dir, wanted)
