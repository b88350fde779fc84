"""What the compute agent asks of a hypervisor driver, in the words of servers.

``ComputeDriver`` is the whole interface; ``qemu.py`` is the real one, and
``tests/fakes/compute_driver.py`` the in-memory twin that keeps it honest.
Backend identifiers (a qemu pid, a tap name, a QMP socket) never leave a
driver: the agent speaks of server ids and ``ServerStatus``.

Every operation is idempotent and safe to repeat after a crash at any point:
``ensure_server`` makes what is missing and keeps what exists (a root disk is
never made twice), ``remove_server`` removes whatever it finds and does not
mind finding nothing. An operation that fails cleans up what it half-made.

Failures come in three kinds, which the agent treats differently (STYLE.md,
"Agents sort failures"): ``TemporaryFailure`` (try again later: an image
service that did not answer), ``PermanentFailure`` (the request cannot work
as given; its message is the fault a user reads) and ``ServerGone`` (the
server vanished under us: stop quietly). Anything else is a bug.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from tinystack.compute.messages import PowerState, ServerSpec

__all__ = [
    "CAPABILITIES",
    "ComputeDriver",
    "DriverError",
    "NodeResources",
    "PermanentFailure",
    "ServerGone",
    "ServerStatus",
    "TemporaryFailure",
]

CAPABILITIES = frozenset({
    "config_drive",   # builds a config drive from ServerSpec.metadata_files
    "kernel_boot",    # boots images that carry kernel_id/ramdisk_id
    "pause",          # pause/unpause keep the guest in memory, stopped
    "suspend",        # suspend saves the guest's memory to disk and frees it
    "console_log",    # console_output returns what the guest printed
    "statistics",     # statistics() returns disk and memory figures
    "rebuild",        # rebuild_server() makes a fresh root disk from the image
    "snapshot",       # snapshot_server() uploads the root disk as an image
    "serial_console", # serial_console() offers the guest's serial port over TCP
})
"""Every capability a driver may claim; the API refuses an action early without it."""


class DriverError(Exception):
    """Base of the three expected failure kinds."""


class TemporaryFailure(DriverError):
    """Could not do it now; the same request may work later (the agent retries with backoff)."""


class PermanentFailure(DriverError):
    """The request cannot work as given. The message is the fault a user reads, so it says
    what to change ("image abc is 2.0 GiB, more than the flavor's 1 GiB root disk")."""


class ServerGone(DriverError):
    """The server vanished while the driver worked on it; nothing to report."""


@dataclass(frozen=True)
class ServerStatus:
    """What a driver sees of one server on this node.

    ``power_state`` is Nova's: ``running``, ``paused`` (in memory, stopped),
    ``suspended`` (memory saved to disk, no process), ``shutdown`` (disk only),
    ``crashed``; ``nostate`` while the guest is being set up.
    """

    server_id: str
    power_state: PowerState
    launched_at: str | None = None
    """ISO 8601 UTC time the running guest process started; None when none runs."""
    console_log: str = ""
    """Path of the console log on this node."""
    details: dict = field(default_factory=dict)
    """Backend figures for operators (pid, accelerator, ...); never parsed by the agent."""

    @property
    def running(self) -> bool:
        """A guest process exists (running or paused)."""
        return self.power_state in ("running", "paused", "crashed")


@dataclass(frozen=True)
class NodeResources:
    """What the node offers guests."""

    vcpus: int
    memory_mb: int
    local_gb: int
    accelerator: str = "tcg"
    hypervisor_type: str = "QEMU"
    hypervisor_version: int = 0
    """major * 1000000 + minor * 1000 + micro, as Nova encodes it."""
    cpu_info: dict = field(default_factory=dict)
    """``arch``, ``model``, ``vendor``, ``topology`` and ``features``, as os-hypervisors shows."""
    uptime: str = ""


class ComputeDriver(Protocol):
    """A hypervisor, as the compute agent uses it. See the module docstring for the rules."""

    capabilities: frozenset[str]
    """A subset of ``CAPABILITIES``."""

    async def start(self) -> None:
        """Get ready (find the accelerator, adopt guests that survived a restart)."""

    async def close(self) -> None:
        """Let go of connections and helpers; guests keep running."""

    def watch(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(server_id)`` when a guest changes by itself (it powered off, it
        reset, its process died), so the agent syncs it without waiting for the audit."""

    async def list_servers(self) -> list[str]:
        """Ids of every server this driver has anything of on the node (files, process)."""

    async def inspect_server(self, server_id: str) -> ServerStatus | None:
        """What exists of the server now; None when nothing does."""

    async def ensure_server(self, spec: ServerSpec) -> None:
        """Make the server's disks and files exist (downloading its image); starts nothing.

        Keeps what already exists: a root disk is made once and then belongs to the guest.
        """

    async def power_on(self, spec: ServerSpec) -> ServerStatus | None:
        """Run the guest as ``spec`` says (resuming it if suspended); nothing if it runs.

        Returns the guest's status afterwards when the driver knows it without asking the
        hypervisor again (the agent then reports it as is), else None (the agent inspects).
        """

    async def power_off(self, server_id: str, *, timeout: float) -> None:
        """Ask the guest to shut down; stop it hard after ``timeout`` seconds. Nothing if off."""

    async def reboot(self, server_id: str, *, hard: bool, timeout: float) -> None:
        """Soft: shut down cleanly (hard after ``timeout``) and start again. Hard: reset now."""

    async def pause(self, server_id: str) -> None:
        """Stop the guest's CPUs, keeping it in memory."""

    async def unpause(self, server_id: str) -> None:
        """Let a paused guest run again."""

    async def suspend(self, server_id: str) -> None:
        """Save the guest's memory to disk and end its process; ``power_on`` resumes it."""

    async def rebuild_server(self, spec: ServerSpec) -> None:
        """Stop the guest hard and make its root disk (and config drive) anew from ``spec``."""

    async def resize_server(self, spec: ServerSpec, *, timeout: float) -> None:
        """Give an existing server the vCPUs, memory and disk sizes of ``spec`` (a resize,
        or its revert): disks grow, never shrink; a guest that runs with other figures
        shuts down cleanly (hard after ``timeout`` seconds) and starts again with these.
        Nothing when it has them already, or when nothing of the server exists yet."""

    async def snapshot_server(self, server_id: str, *, upload_url: str, token: str,
                              disk_format: str = "qcow2") -> tuple[int, str]:
        """Write the root disk as one self-contained image and ``PUT`` it to ``upload_url``
        (a running guest keeps running); the uploaded (size, md5 checksum)."""

    async def serial_console(self, server_id: str) -> tuple[str, int]:
        """(host, port) of a TCP endpoint connected to the guest's serial port, one client
        at a time; it lasts while the guest runs."""

    async def remove_server(self, server_id: str) -> None:
        """Stop the guest hard and remove everything of it; no error if nothing is left."""

    async def console_output(self, server_id: str, length: int | None = None) -> str:
        """The last ``length`` lines the guest printed (all when None); ServerGone if none."""

    async def statistics(self, server_id: str) -> dict:
        """Disk and memory figures of a running guest ({} when it does not run)."""

    async def node_resources(self) -> NodeResources:
        """What the node offers."""
