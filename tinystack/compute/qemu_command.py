"""The QEMU command line of a server, and where its files live.

``qemu_argv(spec, paths, ...)`` is pure: a ``ServerSpec`` and the paths of
its instance directory in, an argv list out (``drivers/qemu.py`` runs it with
the instance directory as working directory, so the unix sockets can have
short relative names). ``InstancePaths`` names every file of one instance.
Paths inside QEMU's ``key=value,...`` options have their commas doubled.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from tinystack.compute import accelerator as accel
from tinystack.compute.drivers.base import PermanentFailure
from tinystack.compute.messages import PortBinding, ServerSpec

__all__ = ["GUEST_PREFIX", "InstancePaths", "qemu_argv", "tap_name"]

GUEST_PREFIX = "tinystack-"
"""Every guest is named ``tinystack-<server id>`` (``-name guest=...``)."""
_TAP_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
SMBIOS_MANUFACTURER = "tinystack"
"""The guest's SMBIOS system manufacturer. The product is Nova's ("OpenStack Nova", which
cloud-init looks for); the manufacturer also tells the default image's init that config
drives here are virtio disks, never IDE CD-ROMs, so it skips the IDE probe."""


def tap_name(port: PortBinding) -> str:
    """The tap device of a port: ``PortBinding.device``, else ``tap`` + 11 chars of its id."""
    return port.device or f"tap{port.port_id[:11]}"


def _opt(path: Path) -> str:
    """A path inside a QEMU ``key=value,...`` option (commas doubled)."""
    return str(path).replace(",", ",,")


class InstancePaths:
    """The files of one instance, all in its own directory."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.disk = directory / "disk"
        self.ephemeral = directory / "disk.eph0"
        self.config = directory / "disk.config"
        self.console_log = directory / "console.log"
        self.qemu_log = directory / "qemu.log"
        self.pidfile = directory / "qemu.pid"
        self.qmp = directory / "qmp.sock"
        self.console = directory / "console.sock"
        self.state = directory / "memory.state"
        self.guest = directory / "guest.json"


def _smbios_uuid(server_id: str) -> str:
    """``,uuid=ID`` when the server id is a UUID (as Nova gives the guest its instance id)."""
    try:
        return f",uuid={uuid.UUID(server_id)}"
    except ValueError:
        return ""


def qemu_argv(spec: ServerSpec, paths: InstancePaths, *, binary: str, machine: str,
              accelerator: str, tb_size_mb: int, kernel: Path | None,
              ramdisk: Path | None) -> list[str]:
    """The command line that runs ``spec``, paused (``-S``) until told to go.

    Disks, the config drive included, are virtio-blk only: the guest's SMBIOS says so
    (``SMBIOS_MANUFACTURER``).
    """
    kvm = accelerator == "kvm"
    argv = [
        binary,
        "-name", f"guest={GUEST_PREFIX}{spec.id},process=tinystack-vm,debug-threads=on",
        "-pidfile", str(paths.pidfile),
        "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-S",
        "-machine", machine,
        "-accel", "kvm" if kvm else f"tcg,tb-size={tb_size_mb}",
        *(["-cpu", accel.KVM_CPU] if kvm else []),
        "-smp", str(spec.vcpus), "-m", f"{spec.memory_mb}M",
        "-smbios", f"type=1,manufacturer={SMBIOS_MANUFACTURER},product=OpenStack Nova,"
                   f"family=Virtual Machine{_smbios_uuid(spec.id)}",
        "-chardev", "socket,id=qmp,path=qmp.sock,server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-chardev", f"socket,id=console,path=console.sock,server=on,wait=off,"
                    f"logfile={_opt(paths.console_log)},logappend=on",
        "-serial", "chardev:console",
        "-drive", f"file={_opt(paths.disk)},format=qcow2,if=none,id=root,discard=unmap",
        "-device", "virtio-blk-pci,drive=root,serial=root,bootindex=1",
    ]
    if paths.ephemeral.exists():
        argv += ["-drive", f"file={_opt(paths.ephemeral)},format=qcow2,if=none,id=eph0",
                 "-device", "virtio-blk-pci,drive=eph0,serial=ephemeral0"]
    if paths.config.exists():
        argv += ["-drive", f"file={_opt(paths.config)},format=raw,if=none,id=config,"
                           "readonly=on",
                 "-device", "virtio-blk-pci,drive=config,serial=config-2"]
    for index, port in enumerate(spec.ports):
        tap = tap_name(port)
        if not _TAP_NAME.match(tap):
            raise PermanentFailure(f"port {port.port_id} asks for device name {tap!r}")
        if not _MAC.match(port.mac):
            raise PermanentFailure(f"port {port.port_id} has MAC address {port.mac!r}")
        mtu = f",host_mtu={port.mtu}" if port.mtu and port.mtu != 1500 else ""
        argv += ["-netdev", f"tap,id=net{index},ifname={tap},script=no,downscript=no",
                 "-device", f"virtio-net-pci,netdev=net{index},mac={port.mac}{mtu}"]
    argv += ["-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on",
             "-device", "virtio-rng-pci"]
    if kernel is not None:
        cmdline = spec.image.kernel_cmdline or "root=/dev/vda console=ttyS0"
        argv += ["-kernel", str(kernel), "-append", cmdline]
        if ramdisk is not None:
            argv += ["-initrd", str(ramdisk)]
    return argv
