"""Which accelerator guests get: KVM when it really boots a Linux kernel here, else TCG.

``/dev/kvm`` existing proves little: on nested hosts it opens fine and a guest
kernel then hangs after "Probing EDD" (HOST-FACTS.md). So ``kvm_boots`` runs a
tiny bounded probe: the given kernel, no root disk, ``panic=-1`` and
``-no-reboot``. A kernel that gets as far as failing to mount its root has
booted; one that hangs is killed after ``timeout`` seconds, and a CPU model
KVM refuses makes QEMU exit at once. The QEMU driver runs the probe in the
background and starts with TCG, so a bad KVM never delays a guest. The result
is remembered per boot of the host and QEMU version (``remembered`` /
``remember``), so it is paid for once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path

from tinystack.compute import host

__all__ = ["KVM_CPU", "kvm_boots", "remember", "remembered"]

log = logging.getLogger(__name__)

KVM_CPU = "host"
"""The CPU model KVM guests get (and the probe tries)."""

_BOOTED = ("Kernel panic", "VFS: Unable to mount root", "Run /init")


async def kvm_boots(binary: str, kernel: Path, workdir: Path, *, timeout: float = 10.0) -> bool:
    """Does ``kernel`` boot under KVM on this host within ``timeout`` seconds?"""
    workdir.mkdir(parents=True, exist_ok=True)
    console = workdir / "kvm-probe.console"
    console.unlink(missing_ok=True)
    (workdir / "kvm-probe.log").unlink(missing_ok=True)
    # coreutils' timeout kills the probe even if this agent dies meanwhile (kill -9).
    argv = ["timeout", "-s", "KILL", f"{timeout + 5:g}",
            binary, "-name", "guest=tinystack-kvm-probe,process=tinystack-probe",
            "-accel", "kvm", "-cpu", KVM_CPU, "-m", "128M", "-nodefaults", "-no-user-config",
            "-display", "none", "-no-reboot", "-serial", f"file:{console}",
            "-kernel", str(kernel.resolve()), "-append", "console=ttyS0 panic=-1"]
    proc = await host.start_process(argv, cwd=workdir, log_path=workdir / "kvm-probe.log")
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        log.info("compute: KVM probe did not boot within %g s; using TCG", timeout)
        return False
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()   # timeout passes SIGTERM on to qemu
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.shield(proc.wait())
    try:
        text = console.read_text(errors="replace")
    except OSError:
        text = ""
    return any(sign in text for sign in _BOOTED)


def _key(qemu_version: str) -> dict:
    return {"boot_id": host.boot_id(), "qemu": qemu_version}


def remembered(path: Path, qemu_version: str) -> str | None:
    """The accelerator found by a probe in this host boot with this QEMU, if any."""
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if body.get("key") != _key(qemu_version):
        return None
    return body.get("accelerator")


def remember(path: Path, qemu_version: str, accelerator: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": _key(qemu_version), "accelerator": accelerator}))
