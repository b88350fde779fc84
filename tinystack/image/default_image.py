"""The default guest image: ``tiny`` uploaded as a public image on first start.

``ensure_default_image`` runs as a background task from
``ImageComponent.start`` (start-up never waits for it): it asks the guest
builder (``tinystack.image.guest``) for the image, which returns at once
when its cache (``guest_cache_dir``: the setting, else the user's cache dir,
so every data dir shares one build) holds a build and builds it (in a worker
thread, logged) otherwise; then it uploads the files owned by the admin
project: ``tiny-kernel`` (aki) and ``tiny-ramdisk`` (ari) first when the
build is split, then ``tiny`` naming them by ``kernel_id``/``ramdisk_id``.

Every uploaded image carries ``tinystack_guest_build`` = the build's cache
key, which makes the task idempotent across restarts: an active ``tiny`` with
a mark means there is nothing to do, an active kernel or ramdisk of the same
build is reused, and a marked image an interrupted run left unfinished is
deleted before uploading again. The admin project's id comes from the
identity API (a password login with the bootstrap credentials), as any
client's would; a deleted ``tiny`` comes back on the next start.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from tinystack.common.client import bootstrap_project_id
from tinystack.common.policy import Credentials
from tinystack.config import Settings
from tinystack.image.models import Image

__all__ = ["ensure_default_image", "guest_cache_dir", "GUEST_MARK"]

log = logging.getLogger(__name__)

GUEST_MARK = "tinystack_guest_build"
READ_BLOCK = 1024 * 1024


def guest_cache_dir(settings: Settings) -> Path:
    """The guest builder's cache: the setting, else the user's cache dir (shared by data dirs)."""
    configured = settings.image.guest_cache_dir
    if configured:
        return Path(configured).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "tinystack" / "guest"


def _build_guest(cache_dir: Path) -> Any:
    from tinystack.image.guest import build_guest_image

    return build_guest_image(cache_dir, progress=False)


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb", buffering=0) as handle:
        while block := await asyncio.to_thread(handle.read, READ_BLOCK):
            yield block


def _admin(project_id: str) -> Credentials:
    return Credentials(user_id="tinystack", user_domain_id="default",
                       roles=frozenset({"admin", "member", "reader"}), project_id=project_id)


async def _upload(component, creds: Credentials, name: str, path: Path, disk_format: str,
                  container_format: str, properties: dict[str, str], *,
                  min_ram: int = 0) -> str:
    images = component.images
    base = {"name": name, "disk_format": disk_format, "container_format": container_format,
            "visibility": "public", "min_ram": min_ram}
    image = await asyncio.to_thread(images.create, creds, base, dict(properties), [])
    await component.data.upload(creds, image.id, _chunks(path), lambda _: None,
                                path.stat().st_size)
    log.info("default image: uploaded %s (%s, %d bytes) as %s", name, disk_format,
             path.stat().st_size, image.id)
    return image.id


def _marked(component) -> list[Image]:
    return component.images.with_property(GUEST_MARK)


async def ensure_default_image(component, *, transport: httpx.AsyncBaseTransport | None = None,
                               build: Callable[[Path], Any] | None = None) -> str | None:
    """Make sure ``tiny`` exists; its id (None when the guest builder is not installed)."""
    marked = await asyncio.to_thread(_marked, component)
    done = [i for i in marked if i.name == "tiny" and i.status == "active"]
    if done:
        log.info("default image: tiny is already there (%s)", done[0].id)
        return done[0].id
    if build is None:
        try:
            import tinystack.image.guest  # noqa: F401
        except ImportError:
            log.info("default image: no guest builder installed; not uploading tiny")
            return None
        build = _build_guest
    cache_dir = guest_cache_dir(component.settings)
    log.info("default image: getting the guest image from %s (built there if needed)",
             cache_dir)
    guest = await asyncio.to_thread(build, cache_dir)
    owner = await bootstrap_project_id(component.settings, "admin", transport)
    creds = _admin(owner)
    mark = {GUEST_MARK: guest.cache_key}
    reusable = {i.name: i.id for i in marked if i.status == "active"
                and i.extra.get(GUEST_MARK) == guest.cache_key}
    for stale in marked:
        if stale.id not in reusable.values():
            log.info("default image: removing %s (%s) left by an earlier attempt",
                     stale.name, stale.id)
            deleted = await asyncio.to_thread(component.images.delete, creds, stale.id)
            await asyncio.to_thread(component.data.delete_data, deleted)
    properties = dict(guest.properties)
    if getattr(guest, "kernel", None) and getattr(guest, "ramdisk", None):
        kernel_id = reusable.get(guest.kernel_name) or await _upload(
            component, creds, guest.kernel_name, guest.kernel, guest.kernel_disk_format,
            guest.kernel_container_format, mark)
        ramdisk_id = reusable.get(guest.ramdisk_name) or await _upload(
            component, creds, guest.ramdisk_name, guest.ramdisk, guest.ramdisk_disk_format,
            guest.ramdisk_container_format, mark)
        properties = guest.image_properties(kernel_id, ramdisk_id)
    properties.update(mark)
    return await _upload(component, creds, guest.name, guest.disk, guest.disk_format,
                         guest.container_format, properties, min_ram=guest.min_ram_mb)
