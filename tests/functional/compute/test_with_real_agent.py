"""The controller with the real compute agent (fake driver) on the same bus: the contract
of messages.py exercised by both halves."""

from __future__ import annotations

import asyncio

import pytest
from fakes.compute_driver import FakeComputeDriver

from tinystack.compute.agent import AgentOptions, ComputeAgent
from tinystack.compute.desired import DesiredStore

from .support import DEADLINE, settle

MV = "2.100"


@pytest.fixture
async def real_agent(cloud, clock, tmp_path):
    driver = FakeComputeDriver()
    agent = ComputeAgent(host="node1", bus=cloud.bus, driver=driver,
                         store=DesiredStore(tmp_path / "desired"),
                         options=AgentOptions(stop_guests_on_exit=False))
    await agent.start()
    await agent.report_node()
    await settle(cloud)
    yield agent, driver
    await agent.stop()


async def _wait(nova, server_id: str, status: str) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while True:
        await settle(nova.cloud)
        server = await nova.server(server_id)
        if server["status"] == status and server["OS-EXT-STS:task_state"] is None:
            return server
        if loop.time() > deadline:
            raise AssertionError(f"{server_id} is {server['status']}, not {status}")
        await asyncio.sleep(0.01)


async def test_lifecycle_through_the_real_agent(nova, real_agent, image_id):
    agent, driver = real_agent
    server_id = (await nova.create_server(image_id))["server"]["id"]
    server = await _wait(nova, server_id, "ACTIVE")
    assert server["OS-EXT-STS:power_state"] == 1
    assert driver.guests[server_id].power_state == "running"
    for action, status, power in (("os-stop", "SHUTOFF", "shutdown"),
                                  ("os-start", "ACTIVE", "running"),
                                  ("pause", "PAUSED", "paused"),
                                  ("unpause", "ACTIVE", "running")):
        await nova.action(server_id, {action: None})
        await _wait(nova, server_id, status)
        assert driver.guests[server_id].power_state == power
    boots = driver.guests[server_id].boots
    await nova.action(server_id, {"reboot": {"type": "HARD"}})
    await _wait(nova, server_id, "ACTIVE")
    assert driver.guests[server_id].boots > boots
    output = await nova.action(server_id, {"os-getConsoleOutput": {}}, expect=200)
    assert isinstance(output["output"], str)


async def test_a_guest_powering_off_is_seen(nova, real_agent, image_id):
    agent, driver = real_agent
    server_id = (await nova.create_server(image_id))["server"]["id"]
    await _wait(nova, server_id, "ACTIVE")
    driver.power_off_by_guest(server_id)
    await agent.sync(server_id)
    server = await _wait(nova, server_id, "SHUTOFF")
    assert server["OS-EXT-STS:power_state"] == 4


async def test_delete_leaves_nothing_on_the_node(nova, real_agent, image_id):
    agent, driver = real_agent
    server_id = (await nova.create_server(image_id))["server"]["id"]
    await _wait(nova, server_id, "ACTIVE")
    r = await nova.compute("DELETE", f"/servers/{server_id}", mv=MV)
    assert r.status_code == 204
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while (await nova.compute("GET", f"/servers/{server_id}", mv=MV)).status_code != 404:
        assert loop.time() < deadline, "the delete did not finish"
        await settle(nova.cloud)
        await asyncio.sleep(0.01)
    assert server_id not in driver.guests
