"""The compute node's hands on the machine: every command and netlink call the driver makes.

One small function per operation, argv lists (never a shell), a timeout on
each. Links (tap devices, bridges) go through pyroute2's netlink client;
disk images through ``qemu-img``; ISO images through ``genisoimage`` (or
``xorriso``); processes through ``/proc``. A failure raises ``HostError``
with the command's own words. The driver above (``drivers/qemu.py``) decides
what to do; nothing here knows about servers.

Process liveness is read from the state field of ``/proc/PID/stat``: PID 1
reaps orphans late on the machines we run on, and ``kill -0`` succeeds on a
zombie.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import orjson

from tinystack.common.process import pid_alive, process_cmdline, run_command, start_child

__all__ = [
    "HostError",
    "add_link_to_bridge",
    "boot_id",
    "cpu_info",
    "delete_link",
    "disk_total_gb",
    "find_processes",
    "kill",
    "kvm_available",
    "link_info",
    "links_with_alias",
    "make_iso",
    "memory_total_mb",
    "pid_alive",
    "process_cmdline",
    "process_rss_kib",
    "qemu_img_convert",
    "qemu_img_create",
    "qemu_img_info",
    "qemu_img_resize",
    "qemu_version",
    "run",
    "set_link",
    "start_process",
    "unix_socket_path",
    "uptime_line",
]

log = logging.getLogger(__name__)

QEMU_IMG_TIMEOUT = 120.0
ISO_TIMEOUT = 30.0
NETLINK_TIMEOUT = 10.0


class HostError(Exception):
    """A command or netlink call failed; the message has its own words."""


# -- commands ------------------------------------------------------------------------------

async def run(argv: list[str], *, timeout: float, cwd: Path | None = None) -> str:
    """Run ``argv``; its stdout. HostError (with stderr) on failure or timeout."""
    return await run_command(argv, timeout=timeout, cwd=cwd, error=HostError)


async def qemu_img_info(path: Path) -> dict:
    """``qemu-img info`` of ``path`` with the format probed, as JSON (works while in use)."""
    out = await run(["qemu-img", "info", "-U", "--output=json", str(path)], timeout=QEMU_IMG_TIMEOUT)
    return orjson.loads(out)


async def qemu_img_create(path: Path, *, size: int | None = None, backing: Path | None = None,
                          backing_format: str = "qcow2") -> None:
    """A new qcow2 at ``path``: blank of ``size`` bytes, or an overlay on ``backing``."""
    argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing is not None:
        argv += ["-b", str(backing), "-F", backing_format]
    argv.append(str(path))
    if size is not None:
        argv.append(str(size))
    await run(argv, timeout=QEMU_IMG_TIMEOUT)


async def qemu_img_resize(path: Path, size: int) -> None:
    """Grow the qcow2 at ``path`` (not in use) to ``size`` bytes."""
    await run(["qemu-img", "resize", "-q", "-f", "qcow2", str(path), str(size)],
              timeout=QEMU_IMG_TIMEOUT)


async def qemu_img_convert(source: Path, source_format: str, target: Path,
                           target_format: str = "qcow2") -> None:
    await run(["qemu-img", "convert", "-q", "-f", source_format, "-O", target_format,
               str(source), str(target)], timeout=QEMU_IMG_TIMEOUT * 5)


async def qemu_version(binary: str) -> str:
    out = await run([binary, "--version"], timeout=10)
    return out.splitlines()[0] if out else ""


async def make_iso(output: Path, source: Path, *, label: str) -> None:
    """An ISO 9660 image (Rock Ridge and Joliet names) of directory ``source``."""
    tool = shutil.which("genisoimage") or shutil.which("mkisofs")
    if tool:
        argv = [tool]
    elif shutil.which("xorriso"):
        argv = ["xorriso", "-as", "mkisofs"]
    else:
        raise HostError("neither genisoimage nor xorriso is installed")
    argv += ["-o", str(output), "-ldots", "-allow-lowercase", "-allow-multidot", "-l",
             "-publisher", "tinystack", "-quiet", "-J", "-r", "-V", label, str(source)]
    await run(argv, timeout=ISO_TIMEOUT)


# -- processes -----------------------------------------------------------------------------

async def start_process(argv: list[str], *, cwd: Path, log_path: Path) -> asyncio.subprocess.Process:
    """Start ``argv`` as our child in its own session, stdout and stderr to ``log_path``:
    guests outlive an agent restart and are adopted by the next one."""
    return await start_child(argv, cwd=cwd, log_path=log_path, error=HostError)


def process_rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def find_processes(marker: str) -> list[int]:
    """Live processes with ``marker`` as one whole word of their command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid != os.getpid() and marker in process_cmdline(pid) and pid_alive(pid):
            found.append(pid)
    return found


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    """Send ``sig``; no error if the process is already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


@contextlib.contextmanager
def unix_socket_path(path: Path) -> Iterator[str]:
    """A path to connect to the unix socket ``path`` by, short enough for ``sun_path``.

    Long paths go through ``/proc/self/fd/N/`` of the socket's directory.
    """
    if len(os.fsencode(str(path))) < 100:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


# -- facts ---------------------------------------------------------------------------------

def kvm_available() -> bool:
    """/dev/kvm exists and we may open it (whether guests really boot is another question)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def memory_total_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def disk_total_gb(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_blocks * stat.f_frsize // 2**30


def cpu_info() -> dict:
    """The host CPU as os-hypervisors shows it: arch, model, vendor, topology, features."""
    info: dict = {"arch": os.uname().machine, "model": "", "vendor": "", "features": []}
    sockets, cores, siblings = set(), 1, 1
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name" and not info["model"]:
            info["model"] = value
        elif key == "vendor_id" and not info["vendor"]:
            info["vendor"] = value
        elif key == "physical id":
            sockets.add(value)
        elif key == "cpu cores" and value.isdigit():
            cores = int(value)
        elif key == "siblings" and value.isdigit():
            siblings = int(value)
        elif key == "flags" and not info["features"]:
            info["features"] = sorted(value.split())
    info["topology"] = {"sockets": max(1, len(sockets)), "cores": cores,
                        "threads": max(1, siblings // max(1, cores))}
    return info


async def uptime_line() -> str:
    """What ``uptime`` prints (os-hypervisors' uptime)."""
    try:
        return (await run(["uptime"], timeout=5)).strip()
    except HostError:
        return ""


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


# -- links (netlink) -----------------------------------------------------------------------

async def _netlink(operation):
    from pyroute2 import AsyncIPRoute  # noqa: PLC0415 - only compute nodes need it

    try:
        async with asyncio.timeout(NETLINK_TIMEOUT):
            async with AsyncIPRoute() as ipr:
                return await operation(ipr)
    except TimeoutError:
        raise HostError(f"netlink did not answer within {NETLINK_TIMEOUT:g} s") from None
    except OSError as exc:
        raise HostError(f"netlink: {exc}") from None


async def link_info(name: str) -> dict | None:
    """``{"index", "alias", "master", "up", "mtu"}`` of link ``name``; None if there is none."""
    async def get(ipr):
        found = await ipr.link_lookup(ifname=name)
        if not found:
            return None
        msg = [m async for m in await ipr.get_links(found[0])][0]
        return {"index": found[0], "alias": msg.get("ifalias") or "", "master": msg.get("master"),
                "up": bool(msg["flags"] & 1), "mtu": msg.get("mtu")}
    return await _netlink(get)


async def set_link(name: str, *, up: bool = True, mtu: int | None = None, alias: str | None = None) -> None:
    """Bring link ``name`` up (or down), set its MTU and its alias (our ownership tag)."""
    async def change(ipr):
        index = await _index(ipr, name)
        fields = {"state": "up" if up else "down"}
        if mtu:
            fields["mtu"] = mtu
        if alias is not None:
            fields["ifalias"] = alias
        await ipr.link("set", index=index, **fields)
    await _netlink(change)


async def add_link_to_bridge(name: str, bridge: str) -> None:
    """Plug link ``name`` into bridge ``bridge`` (both must exist)."""
    async def plug(ipr):
        index, master = await _index(ipr, name), await _index(ipr, bridge)
        await ipr.link("set", index=index, master=master)
    await _netlink(plug)


async def delete_link(name: str) -> None:
    """Delete link ``name``; no error if it is already gone."""
    async def delete(ipr):
        found = await ipr.link_lookup(ifname=name)
        if found:
            await ipr.link("del", index=found[0])
    await _netlink(delete)


async def links_with_alias(alias: str) -> list[str]:
    """Names of the links whose alias is exactly ``alias``."""
    async def scan(ipr):
        names = []
        async for msg in await ipr.get_links():
            if msg.get("ifalias") == alias:
                names.append(msg.get("ifname"))
        return names
    return await _netlink(scan)


async def _index(ipr, name: str) -> int:
    found = await ipr.link_lookup(ifname=name)
    if not found:
        raise HostError(f"no network device {name!r}")
    return found[0]
