"""Daemons an agent keeps as its own children, one per key: the DHCP agent's dnsmasq per
network, the L3 agent's router-advertisement dnsmasq per router.

They run with ``--keep-in-foreground`` under ``host.start_process`` (inside a
namespace), so the agent waits on them and no zombie outlives it (PID 1 here
reaps late). A child that dies calls ``on_exit(key)`` so the agent syncs that
key again at once; ``stop_strays`` ends copies a killed agent left behind.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from tinystack.network.agents import host
from tinystack.network.agents.drivers.base import TemporaryFailure

__all__ = ["Children", "STOP_TIMEOUT"]

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0
"""Seconds a child gets to end after SIGTERM before SIGKILL."""


class Children:
    """The children of one kind; ``describe(key)`` names one in logs and errors."""

    def __init__(self, describe: Callable[[str], str]):
        self.describe = describe
        self.on_exit: Callable[[str], None] | None = None
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._waiters: dict[str, asyncio.Task] = {}

    def keys(self) -> list[str]:
        return list(self._procs)

    def pid(self, key: str) -> int | None:
        """The pid of the child for ``key`` while it runs, else None."""
        proc = self._procs.get(key)
        if proc is None or proc.returncode is not None or not host.pid_alive(proc.pid):
            return None
        return proc.pid

    def runs(self, key: str, argv: list[str]) -> bool:
        """Does the child for ``key`` run with exactly this command line?"""
        pid = self.pid(key)
        return pid is not None and host.process_cmdline(pid)[-len(argv):] == argv

    async def start(self, key: str, argv: list[str], *, netns: str, log_path: Path) -> int:
        """Start the child for ``key`` (none may run); its pid. TemporaryFailure if it
        cannot start or exits at once (with the end of its log)."""
        try:
            proc = await host.start_process(argv, log_path=log_path, netns=netns)
        except host.HostError as exc:
            raise TemporaryFailure(str(exc)) from None
        self._procs[key] = proc
        self._waiters[key] = asyncio.get_running_loop().create_task(self._wait(key, proc))
        await asyncio.sleep(0.02)
        if proc.returncode is not None:
            tail = log_path.read_text(errors="replace")[-400:] if log_path.exists() else ""
            raise TemporaryFailure(f"{self.describe(key)} exited {proc.returncode}: "
                                   f"{tail.strip()}")
        return proc.pid

    async def _wait(self, key: str, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if self._procs.get(key) is proc:
            log.warning("%s exited %s", self.describe(key), code)
            self._procs.pop(key, None)
            if self.on_exit is not None:
                self.on_exit(key)

    async def stop(self, key: str) -> None:
        """End the child for ``key``, if any: SIGTERM, then SIGKILL after STOP_TIMEOUT."""
        proc = self._procs.pop(key, None)
        waiter = self._waiters.pop(key, None)
        if waiter is not None:
            waiter.cancel()
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def stop_all(self) -> None:
        for key in self.keys():
            await self.stop(key)

    async def stop_strays(self, is_ours: Callable[[list[str]], bool], what: str) -> None:
        """End processes ``is_ours`` recognises that are not our children (an earlier,
        killed agent's); they are started again as children when their key syncs."""
        strays = await asyncio.to_thread(host.find_processes, is_ours)
        for pid in strays:
            log.info("stopping %s %d left by an earlier agent; it restarts as a child",
                     what, pid)
            host.kill(pid, signal.SIGTERM)
            for _ in range(int(STOP_TIMEOUT / 0.05)):
                if not host.pid_alive(pid):
                    break
                await asyncio.sleep(0.05)
            else:
                host.kill(pid, signal.SIGKILL)
