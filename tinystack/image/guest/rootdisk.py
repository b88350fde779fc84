"""The guest's root disk: an ext4 filesystem made from the tree, as qcow2.

``mkfs.ext4 -d TREE`` fills the filesystem from a directory without mounting
anything, and ``qemu-img convert`` turns the sparse raw file into a qcow2 of a
few MB (only the blocks in use are stored). The filesystem covers the whole
disk (no partition table, no bootloader): the kernel and initramfs come from
the image's ``kernel_id``/``ramdisk_id``, and init.sh mounts ``root=/dev/vda``
and switch_roots into it. The filesystem does not grow with a bigger flavor
disk; ``DISK_SIZE_MIB`` is the room a guest has for its files.

Ownership inside the filesystem is copied from the tree, so build as root (as
tinystack runs) to get root-owned files. ``build.py`` calls ``make_root_disk``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["DISK_SIZE_MIB", "ROOT_LABEL", "DiskError", "make_root_disk"]

DISK_SIZE_MIB = 64
ROOT_LABEL = "tinystack-root"
MKFS_TIMEOUT = 120
CONVERT_TIMEOUT = 120


class DiskError(RuntimeError):
    """mkfs.ext4 or qemu-img failed or is missing."""


def _run(argv: list[str], timeout: float) -> None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        package = "e2fsprogs" if argv[0].startswith("mkfs") else "qemu-utils"
        raise DiskError(f"{argv[0]} not found: install {package}") from None
    except subprocess.TimeoutExpired:
        raise DiskError(f"{argv[0]} took longer than {timeout:.0f} s") from None
    if result.returncode != 0:
        raise DiskError(f"{' '.join(argv)} exited {result.returncode}: "
                        f"{(result.stderr or result.stdout).strip()[-2000:]}")


def make_root_disk(tree: Path, out: Path, *, size_mib: int = DISK_SIZE_MIB,
                   label: str = ROOT_LABEL) -> None:
    """Write ``out`` (qcow2): an ext4 filesystem labelled ``label`` holding ``tree``."""
    raw = out.with_name(out.name + ".raw")
    try:
        with open(raw, "wb") as f:
            f.truncate(size_mib * 1024 * 1024)
        _run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-L", label, "-E", "root_owner=0:0",
              "-d", str(tree), str(raw)], MKFS_TIMEOUT)
        tmp = out.with_name(out.name + ".tmp")
        _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(tmp)], CONVERT_TIMEOUT)
        tmp.rename(out)
    finally:
        raw.unlink(missing_ok=True)
