"""An in-memory ComputeDriver with knobs, for the agent's tests (and later the compute API's).

    driver = FakeComputeDriver(fail_on={"power_on"}, fail_kind="permanent")
    driver = FakeComputeDriver(fail_on={"ensure_server"}, fail_times=2)   # then it works
    driver = FakeComputeDriver(block_on={"ensure_server"})  # waits for driver.release()

``calls`` records every mutating operation as ``(name, server_id)``,
``inspections`` every ``inspect_server``;
``guests`` is what "exists on the machine". ``power_off_by_guest`` and
``crash`` change a guest behind the agent's back, as a real guest would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from tinystack.compute.drivers.base import (
    CAPABILITIES,
    NodeResources,
    PermanentFailure,
    ServerGone,
    ServerStatus,
    TemporaryFailure,
)
from tinystack.compute.messages import ServerSpec

__all__ = ["FakeComputeDriver", "FakeGuest"]

_FAILURES = {"temporary": TemporaryFailure, "permanent": PermanentFailure, "gone": ServerGone}


def _hardware(spec: ServerSpec) -> tuple[int, int, int, int]:
    return spec.vcpus, spec.memory_mb, spec.root_gb, spec.ephemeral_gb


@dataclass
class FakeGuest:
    spec: ServerSpec
    power_state: str = "shutdown"
    launched_at: str | None = None
    boots: int = 0
    rebuilds: int = 0
    console: list[str] = field(default_factory=list)


class FakeComputeDriver:
    def __init__(self, *, fail_on: set[str] = frozenset(), fail_kind: str = "temporary",
                 fail_times: int | None = None, block_on: set[str] = frozenset(),
                 capabilities: frozenset[str] = CAPABILITIES, accelerator: str = "tcg",
                 tell_power_on: bool = True):
        self.capabilities = frozenset(capabilities)
        self.fail_on = set(fail_on)
        self.fail_kind = fail_kind
        self.fail_times = fail_times
        """Fail this many times, then work; None fails forever."""
        self.block_on = set(block_on)
        self.accelerator = accelerator
        self.guests: dict[str, FakeGuest] = {}
        self.calls: list[tuple[str, str]] = []
        self.inspections: list[str] = []
        """Server ids ``inspect_server`` was asked about, in order (a QMP round trip each on
        a real driver)."""
        self.tell_power_on = tell_power_on
        """``power_on`` returns the guest's status (as the QEMU driver does); False: None."""
        self.failures = 0
        self.uploads: list[tuple[str, str, str, str]] = []
        """(server_id, upload_url, token, disk_format) of each snapshot."""
        self.started = False
        self._released = asyncio.Event()
        self.blocked = asyncio.Event()
        """Set when an operation in ``block_on`` is waiting."""
        self._listener: Callable[[str], None] | None = None

    # -- knobs ------------------------------------------------------------------------------

    def release(self) -> None:
        """Let blocked operations go on."""
        self._released.set()

    def power_off_by_guest(self, server_id: str) -> None:
        """The guest shuts itself down (``poweroff`` inside it)."""
        self.guests[server_id].power_state = "shutdown"
        self.guests[server_id].launched_at = None
        if self._listener:
            self._listener(server_id)

    def mutations(self, server_id: str | None = None) -> list[str]:
        return [name for name, sid in self.calls if server_id in (None, sid)]

    async def _op(self, name: str, server_id: str) -> None:
        self.calls.append((name, server_id))
        if name in self.block_on:
            self.blocked.set()
            await self._released.wait()
        if name in self.fail_on and (self.fail_times is None or self.failures < self.fail_times):
            self.failures += 1
            raise _FAILURES[self.fail_kind](f"fake {name} failed for {server_id}")

    def _guest(self, server_id: str) -> FakeGuest:
        guest = self.guests.get(server_id)
        if guest is None:
            raise ServerGone(f"no server {server_id}")
        return guest

    # -- the interface ----------------------------------------------------------------------

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.started = False

    def watch(self, callback: Callable[[str], None]) -> None:
        self._listener = callback

    async def list_servers(self) -> list[str]:
        return list(self.guests)

    async def inspect_server(self, server_id: str) -> ServerStatus | None:
        self.inspections.append(server_id)
        guest = self.guests.get(server_id)
        if guest is None:
            return None
        return ServerStatus(server_id, guest.power_state, launched_at=guest.launched_at,
                            console_log=f"/fake/{server_id}/console.log")

    async def ensure_server(self, spec: ServerSpec) -> None:
        await self._op("ensure_server", spec.id)
        self.guests.setdefault(spec.id, FakeGuest(spec=spec)).spec = spec

    async def power_on(self, spec: ServerSpec) -> ServerStatus | None:
        await self._op("power_on", spec.id)
        guest = self._guest(spec.id)
        if guest.power_state not in ("running", "paused"):
            guest.power_state = "running"
            guest.boots += 1
            guest.launched_at = dt.datetime.now(dt.UTC).isoformat()
            guest.console.append(f"tinystack guest {spec.name} ready")
        if not self.tell_power_on:
            return None
        return ServerStatus(spec.id, guest.power_state, launched_at=guest.launched_at,
                            console_log=f"/fake/{spec.id}/console.log")

    async def power_off(self, server_id: str, *, timeout: float) -> None:
        await self._op("power_off", server_id)
        guest = self._guest(server_id)
        guest.power_state, guest.launched_at = "shutdown", None

    async def reboot(self, server_id: str, *, hard: bool, timeout: float) -> None:
        await self._op("reboot_hard" if hard else "reboot_soft", server_id)
        guest = self._guest(server_id)
        guest.power_state = "running"
        guest.boots += 1

    async def pause(self, server_id: str) -> None:
        await self._op("pause", server_id)
        self._guest(server_id).power_state = "paused"

    async def unpause(self, server_id: str) -> None:
        await self._op("unpause", server_id)
        self._guest(server_id).power_state = "running"

    async def suspend(self, server_id: str) -> None:
        await self._op("suspend", server_id)
        guest = self._guest(server_id)
        guest.power_state, guest.launched_at = "suspended", None

    async def rebuild_server(self, spec: ServerSpec) -> None:
        await self._op("rebuild_server", spec.id)
        guest = self._guest(spec.id)
        guest.spec, guest.power_state, guest.launched_at = spec, "shutdown", None
        guest.rebuilds += 1

    async def resize_server(self, spec: ServerSpec, *, timeout: float) -> None:
        guest = self.guests.get(spec.id)
        if guest is None or _hardware(guest.spec) == _hardware(spec):
            return
        await self._op("resize_server", spec.id)
        guest.spec = spec
        if guest.power_state in ("running", "paused"):
            guest.power_state = "running"
            guest.boots += 1
            guest.launched_at = dt.datetime.now(dt.UTC).isoformat()
            guest.console.append(f"tinystack guest {spec.name} ready")

    async def snapshot_server(self, server_id: str, *, upload_url: str, token: str,
                              disk_format: str = "qcow2") -> tuple[int, str]:
        await self._op("snapshot_server", server_id)
        self._guest(server_id)
        self.uploads.append((server_id, upload_url, token, disk_format))
        return 1024, "0" * 32

    async def serial_console(self, server_id: str) -> tuple[str, int]:
        if self._guest(server_id).power_state not in ("running", "paused"):
            raise PermanentFailure(f"server {server_id} is not running")
        return "127.0.0.1", 10000

    async def remove_server(self, server_id: str) -> None:
        await self._op("remove_server", server_id)
        self.guests.pop(server_id, None)

    async def console_output(self, server_id: str, length: int | None = None) -> str:
        lines = self._guest(server_id).console
        return "\n".join(lines[-length:] if length else lines)

    async def statistics(self, server_id: str) -> dict:
        guest = self._guest(server_id)
        return {"memory_mb": guest.spec.memory_mb} if guest.power_state == "running" else {}

    async def node_resources(self) -> NodeResources:
        return NodeResources(vcpus=4, memory_mb=8192, local_gb=100, accelerator=self.accelerator,
                             hypervisor_version=7002000, uptime="up 1 day")
