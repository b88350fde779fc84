"""The image service (Glance v2): image records, their data, sharing and import.

``ImageComponent`` wires it for ``cloud.py``: the file store in
``DATA_DIR/images`` (and its staging area for glance-direct), the record
services (``service.py``, ``sharing.py``), the data plane (``data.py``), the
HTTP app (``api.py``) mounted at ``/image``, and on start the clean-up after
an interrupted run and the default guest image (``default_image.py``).
``tinystack.image.guest`` builds that guest; it is a separate piece with its
own entry point. Read ``api.py`` next, or ``data.py`` for how bytes move.
"""

from __future__ import annotations

import asyncio
import logging

from tinystack.common.component import CatalogEntry
from tinystack.common.context import TokenCheck
from tinystack.common.db import Database
from tinystack.config import Settings

__all__ = ["ImageComponent"]

log = logging.getLogger(__name__)


class ImageComponent:
    catalog_entry = CatalogEntry("image", "glance", "/image", "Image Service")

    def __init__(self, settings: Settings, db: Database, bus, token_check: TokenCheck):
        from tinystack.image.api import build_app
        from tinystack.image.data import ImageData
        from tinystack.image.service import ImageService
        from tinystack.image.sharing import MemberService
        from tinystack.image.stores import FileStore

        self.settings = settings
        self.token_check = token_check
        conf = settings.image
        root = settings.data_dir / "images"
        self.store = FileStore(root)
        self.staging = FileStore(root / "staging", store_id="os_glance_staging_store",
                                 description="Staged image data waiting for glance-direct")
        self.store_ids = {f"{root.as_uri()}/": self.store.store_id}
        self.images = ImageService(db, conf)
        self.members = MemberService(self.images)
        self.data = ImageData(self.images, self.store, self.staging, conf)
        self.asgi = build_app(self)

    def setup_sync(self) -> None:
        self.store.setup()
        self.staging.setup()
        self.data.recover()

    async def start(self) -> None:
        from tinystack.image.default_image import ensure_default_image

        await asyncio.to_thread(self.setup_sync)
        if self.settings.image.default_image:
            self.data.spawn("default guest image", ensure_default_image(self))

    async def stop(self) -> None:
        await self.data.stop()

    def statistics(self) -> dict:
        return {"store": self.store.statistics()}
