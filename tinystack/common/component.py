"""What ``cloud.py`` expects of each service it runs in a controller.

A component is built with ``(settings, db, bus, token_check)`` and offers
``catalog_entry`` (how the catalog names it and where it is mounted), ``asgi``
(its HTTP app), ``start()`` and ``stop()``. Identity is built first and gives
the others their ``token_check``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["CatalogEntry", "Component"]


@dataclass(frozen=True)
class CatalogEntry:
    """What the service catalog says about one API this process serves."""

    type: str
    name: str
    path: str
    """Mount point under the shared port, e.g. ``/image``."""
    description: str = ""
    url_suffix: str = ""
    """Appended to ``base_url + path`` in the catalog, e.g. ``/v2.1`` for compute."""


class Component(Protocol):
    catalog_entry: CatalogEntry
    asgi: Any

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
