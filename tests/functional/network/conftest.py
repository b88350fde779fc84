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
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tinystack import cloud as cloud_module
from tinystack import config
from tinystack.cloud import Cloud
from tinystack.common.db import Base, normalize_url
from tinystack.identity import passwords
from tinystack.models import import_all

from .support import HOST, NODE, AgentRecorder, NeutronClient, client_for, load_passwords

FAST_ROUNDS = 4


def empty_rows(engine: sa.Engine) -> None:
    """Delete every row of every tinystack table present, keeping the schema."""
    import_all()
    with engine.begin() as conn:
        present = set(sa.inspect(conn).get_table_names())
        for table in reversed(Base.metadata.sorted_tables):
            if table.name in present:
                conn.execute(table.delete())


@pytest.fixture(scope="session")
def _engines():
    engines: dict[str, sa.Engine] = {}
    yield engines
    for engine in engines.values():
        engine.dispose()


@pytest.fixture(scope="session")
def _network_sqlite(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('network-db') / 'tinystack.db'}"


@pytest.fixture
def network_db(db_server, request: pytest.FixtureRequest, _engines) -> str:
    url = request.getfixturevalue("_network_sqlite") if db_server is None else db_server.url
    if url not in _engines:
        _engines[url] = sa.create_engine(normalize_url(url), pool_size=1)
    empty_rows(_engines[url])
    return url


@pytest.fixture(autouse=True)
def fast_bcrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "MIN_ROUNDS", FAST_ROUNDS)


MakeCloud = Callable[..., Awaitable[Cloud]]


@pytest.fixture
async def make_cloud(network_db: str, tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MakeCloud]:
    """``await make_cloud(bootstrap=True)``: a started Cloud, stopped after the test."""
    started: list[Cloud] = []
    monkeypatch.setattr(cloud_module, "CONTROLLER_SERVICES",
                        [("network", "tinystack.network:NetworkComponent")])

    async def make(**network: Any) -> Cloud:
        settings = config.load(
            data_dir=tmp_path / "data", db=network_db, clouds_yaml=tmp_path / "clouds.yaml",
            roles=["controller"], identity={"password_hash_rounds": FAST_ROUNDS},
            network={"bootstrap": False, "network_node": NODE, **network})
        cloud = Cloud(settings)
        await cloud.start()
        started.append(cloud)
        return cloud

    yield make
    for cloud in reversed(started):
        if cloud.started:
            await cloud.stop()


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
