"""The compute role of a tinystack process: the QEMU driver and the agent, wired together.

``cloud.py`` builds a ``ComputeNode(settings, bus)`` when the node's roles
include ``compute``, calls ``start()`` (the agent serves ``compute.<node>``
and audits in a background task) and ``stop()`` before it closes the bus.
Everything lives under ``<data_dir>/compute/``: ``desired/`` (the agent's
record of specs), ``instances/`` (one directory per server), ``images/``
(the base image cache). Read ``agent.py`` next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from tinystack.common.bus import Bus
from tinystack.compute.agent import AgentOptions, ComputeAgent
from tinystack.compute.desired import DesiredStore
from tinystack.compute.drivers.qemu import QemuDriver, QemuOptions
from tinystack.config import Settings

__all__ = ["ComputeNode"]

log = logging.getLogger(__name__)


class ComputeNode:
    def __init__(self, settings: Settings, bus: Bus):
        node = settings.compute_node
        root = settings.data_dir / "compute"
        self.driver = QemuDriver(QemuOptions(
            instances_dir=root / "instances", images_dir=root / "images", state_dir=root,
            accelerator=node.accelerator, my_ip=node.my_ip))
        self.agent = ComputeAgent(
            host=settings.node, bus=bus, driver=self.driver,
            store=DesiredStore(root / "desired"), host_ip=node.my_ip,
            options=AgentOptions(audit_interval=node.audit_interval,
                                 shutdown_timeout=node.shutdown_timeout,
                                 stop_guests_on_exit=node.stop_guests_on_exit))
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.agent.start()
        self._task = asyncio.get_running_loop().create_task(self.agent.run_forever())
        self._task.add_done_callback(self._ended)

    @staticmethod
    def _ended(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("compute: the agent stopped", exc_info=task.exception())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.agent.stop()

    def health(self) -> dict:
        body = self.agent.health()
        body["accelerator"] = self.driver.accelerator
        if self._task is None or self._task.done():
            body["healthy"] = False
        return body
