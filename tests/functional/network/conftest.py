"""Fixtures for the network API tests: a controller with identity and network, and listeners.

- ``network_db``: a database URL with no rows, once per configured database
  (ids sqlite, mysql, postgresql); the schema stays between tests, as in the
  identity tests, since migrating afresh costs seconds per test.
- ``make_cloud(**network_settings)``: a started ``Cloud`` with the controller
  role serving identity and network only (bcrypt cost 4, no bootstrap
  networks unless asked for), its network node named ``NODE``.
- ``cloud``; ``neutron`` (a ``NeutronClient``); ``agents`` (an
  ``AgentRecorder`` listening as ``HOST`` and ``NODE``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tinystack import cloud as cloud_module
from tinystack.cloud import Cloud

from ..conftest import CloudSettings, StartCloud
from .support import HOST, NODE, AgentRecorder, NeutronClient, client_for, load_passwords

MakeCloud = Callable[..., Awaitable[Cloud]]


@pytest.fixture
def network_db(empty_db: str) -> str:
    return empty_db


@pytest.fixture
def make_cloud(network_db: str, cloud_settings: CloudSettings, start_cloud: StartCloud,
               monkeypatch: pytest.MonkeyPatch) -> MakeCloud:
    """``await make_cloud(bootstrap=True)``: a started Cloud, stopped after the test."""
    monkeypatch.setattr(cloud_module, "CONTROLLER_SERVICES",
                        [("network", "tinystack.network:NetworkComponent")])

    async def make(**network: Any) -> Cloud:
        return await start_cloud(cloud_settings(
            network_db, network={"bootstrap": False, "network_node": NODE, **network}))

    return make


@pytest.fixture
async def cloud(make_cloud: MakeCloud) -> Cloud:
    return await make_cloud()


@pytest.fixture
async def neutron(cloud: Cloud) -> AsyncIterator[NeutronClient]:
    async with client_for(cloud) as http:
        yield NeutronClient(http=http, cloud=cloud, passwords=load_passwords(cloud))


@pytest.fixture
async def agents(cloud: Cloud) -> AgentRecorder:
    return await AgentRecorder(cloud).listen(HOST, NODE)
