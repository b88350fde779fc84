"""Fixtures for the image API tests: a started ``Cloud`` and a client that speaks Glance.

- ``image_db``: a database URL, once per configured database (ids sqlite,
  mysql, postgresql); the schema stays between tests, the rows are emptied
  before each one.
- ``make_cloud(**image)``: starts a controller-only ``Cloud`` on it (no
  compute or network agents) with a per-test data dir (bcrypt cost 4, no
  default guest image); keyword arguments are image settings
  (``user_storage_quota=...``).
- ``cloud`` and ``glance``: one started with the defaults, and a
  ``GlanceClient`` on it with tokens for ``demo``, ``alt_demo`` and ``admin``.

Paths given to the client are relative to the image prefix: ``/v2/images``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tinystack.cloud import Cloud

from ..conftest import CloudSettings, StartCloud
from .client import GlanceClient, client_for

MakeCloud = Callable[..., Awaitable[Cloud]]


@pytest.fixture
def image_db(empty_db: str) -> str:
    """A database with no rows in it, once per configured database."""
    return empty_db


@pytest.fixture
def make_cloud(image_db: str, tmp_path: Path, cloud_settings: CloudSettings,
               start_cloud: StartCloud) -> MakeCloud:
    """``await make_cloud(image_size_cap=100)``: a started Cloud, stopped after the test."""

    async def make(**image: Any) -> Cloud:
        return await start_cloud(cloud_settings(image_db, image={
            "default_image": False, "guest_cache_dir": str(tmp_path / "guest"), **image}))

    return make


@pytest.fixture
async def cloud(make_cloud: MakeCloud) -> Cloud:
    return await make_cloud()


@pytest.fixture
async def glance(cloud: Cloud) -> AsyncIterator[GlanceClient]:
    async with client_for(cloud) as client:
        yield client
