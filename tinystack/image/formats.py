"""Disk and container formats: Glance's lists, content inspection, virtual size.

``Inspector`` watches the first bytes of an upload go by (it keeps at most
``HEAD_BYTES``) and names the format they are in: qcow2, vmdk, vhd, vhdx,
vdi, iso or, when nothing matches, raw. Like Glance's format inspector it
refuses data whose content is not the declared ``disk_format`` (a qcow2 file
declared raw, or a raw one declared qcow2) and qcow2/vmdk files that would
make a hypervisor open other files (a qcow2 backing file or external data
file, a vmdk that is not a single sparse extent). Formats Glance does not
inspect (ami, ari, aki, ploop) and data in a container other than ``bare``
pass unchecked.

``virtual_size`` asks ``qemu-img info`` once the data is stored, with the
format named (never probed) and a timeout.

Nothing here knows about HTTP or the database; ``transfer.py`` feeds the
inspector and ``service.py`` stores what it found.
"""

from __future__ import annotations

import json
import logging
import re
import struct
import subprocess
from pathlib import Path

from tinystack.common.errors import BadRequest

__all__ = [
    "DISK_FORMATS",
    "CONTAINER_FORMATS",
    "HEAD_BYTES",
    "Inspector",
    "detect",
    "unsafe_reason",
    "virtual_size",
]

log = logging.getLogger(__name__)

DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso",
                "ploop")
"""Glance's ``[image_format] disk_formats`` default, in its order."""
CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")
"""Glance's ``[image_format] container_formats`` default, in its order."""

INSPECTED = frozenset({"raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "iso"})
HEAD_BYTES = 64 * 1024
"""Enough for every signature: the ISO 9660 volume descriptor is at 32 KiB."""

QEMU_IMG_TIMEOUT = 30.0
_QEMU_DRIVERS = {"vhd": "vpc"}

_QCOW2_DATA_FILE = 1 << 2
_QCOW2_KNOWN_INCOMPATIBLE = 0b11111  # dirty, corrupt, data file, compression type, extended L2
_VMDK_SAFE_TYPES = ("monolithicSparse", "streamOptimized")


def detect(head: bytes) -> str:
    """The format the first bytes of an image are in; "raw" when none matches."""
    if head[:4] == b"QFI\xfb":
        return "qcow2"
    if head[:4] == b"KDMV" or head.startswith(b"# Disk DescriptorFile"):
        return "vmdk"
    if head[:8] == b"vhdxfile":
        return "vhdx"
    if head[:8] == b"conectix":
        return "vhd"
    if head[0x40:0x44] == b"\x7f\x10\xda\xbe":
        return "vdi"
    if head[0x8001:0x8006] == b"CD001":
        return "iso"
    return "raw"


def unsafe_reason(fmt: str, head: bytes) -> str | None:
    """Why an image of format ``fmt`` starting with ``head`` must not be stored, or None."""
    if fmt == "qcow2" and len(head) >= 32:
        version, backing_offset = struct.unpack(">IQ", head[4:16])
        if version not in (2, 3):
            return f"qcow2 version {version} is not supported"
        if backing_offset:
            return "qcow2 images with a backing file are not allowed"
        if version == 3 and len(head) >= 80:
            (incompatible,) = struct.unpack(">Q", head[72:80])
            if incompatible & _QCOW2_DATA_FILE:
                return "qcow2 images with an external data file are not allowed"
            if incompatible & ~_QCOW2_KNOWN_INCOMPATIBLE:
                return "qcow2 image has unknown incompatible features"
    if fmt == "vmdk":
        if head.startswith(b"# Disk DescriptorFile"):
            return "vmdk descriptor files that reference other files are not allowed"
        found = re.search(rb'createType\s*=\s*"([^"]*)"', head)
        if found and found.group(1).decode(errors="replace") not in _VMDK_SAFE_TYPES:
            return f"vmdk createType {found.group(1).decode(errors='replace')} is not allowed"
    return None


class Inspector:
    """Decides an upload's format from its first ``HEAD_BYTES`` and checks it.

    ``feed`` every chunk in order and ``finish`` at the end; either raises
    ``BadRequest`` as soon as the content is known to be wrong. ``detected``
    is the format found (None until decided, and when not inspected).
    """

    def __init__(self, disk_format: str | None, container_format: str | None,
                 enforce: bool = True):
        self.disk_format = disk_format
        self.active = enforce and disk_format in INSPECTED and container_format == "bare"
        self.detected: str | None = None
        self._head = bytearray()

    def feed(self, chunk: bytes | memoryview) -> None:
        if not self.active or self.detected is not None:
            return
        self._head += chunk[: HEAD_BYTES - len(self._head)]
        if len(self._head) >= HEAD_BYTES:
            self._decide()

    def finish(self) -> None:
        if self.active and self.detected is None:
            self._decide()

    def _decide(self) -> None:
        head = bytes(self._head)
        self._head = bytearray()
        self.detected = detect(head)
        if self.detected != self.disk_format:
            raise BadRequest(
                f"Image content does not match its disk_format: it was declared "
                f"{self.disk_format} but the data is {self.detected}.")
        reason = unsafe_reason(self.detected, head)
        if reason:
            raise BadRequest(f"Image is not safe to store: {reason}.")


def virtual_size(path: Path, disk_format: str, size: int,
                 timeout: float = QEMU_IMG_TIMEOUT) -> int | None:
    """The disk size a guest sees: ``size`` for raw and iso, else what qemu-img reads."""
    if disk_format in ("raw", "iso"):
        return size
    if disk_format not in INSPECTED:
        return None
    driver = _QEMU_DRIVERS.get(disk_format, disk_format)
    argv = ["qemu-img", "info", "--output=json", "-f", driver, str(path)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("qemu-img info on %s failed: %s", path, exc)
        return None
    if done.returncode != 0:
        log.warning("qemu-img info on %s exited %s: %s", path, done.returncode,
                    done.stderr.strip()[:500])
        return None
    try:
        return int(json.loads(done.stdout)["virtual-size"])
    except (ValueError, KeyError, TypeError):
        log.warning("qemu-img info on %s gave no virtual-size", path)
        return None
