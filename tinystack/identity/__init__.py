"""The identity service (Keystone v3): users, projects, roles, tokens, catalog.

``IdentityComponent`` wires it for ``cloud.py``: key repositories, the
services (``service.py``, ``catalog.py``, ``credentials.py``), the
authenticator (``auth.py``), the HTTP app (``api.py``) and first-start
``bootstrap.py``. Other services in the controller check tokens through
``IdentityComponent.credentials_for`` (the in-process client).
"""

from __future__ import annotations

import asyncio

from tinystack.common.component import CatalogEntry
from tinystack.common.db import Database
from tinystack.common.errors import NotFound, Unauthorized
from tinystack.common.policy import Credentials
from tinystack.config import Settings
from tinystack.identity.auth import UNAUTHORIZED, Authenticator
from tinystack.identity.bootstrap import bootstrap, write_client_files
from tinystack.identity.catalog import CatalogService
from tinystack.identity.credentials import CredentialService
from tinystack.identity.service import IdentityService
from tinystack.identity.tokens import KeyRepository

__all__ = ["IdentityComponent"]


class IdentityComponent:
    catalog_entry = CatalogEntry("identity", "keystone", "/identity", "Identity Service")

    def __init__(self, settings: Settings, db: Database, bus=None):
        from tinystack.identity.api import build_app
        from tinystack.identity.views import Views

        self.settings = settings
        conf = settings.identity
        key_dir = settings.data_dir / "identity"
        self.token_keys = KeyRepository(key_dir / "token-keys", conf.max_active_keys)
        self.credential_keys = KeyRepository(key_dir / "credential-keys", conf.max_active_keys)
        self.identity = IdentityService(db, conf)
        self.catalog = CatalogService(self.identity)
        self.credentials = CredentialService(self.identity, self.credential_keys)
        self.auth = Authenticator(self.identity, self.catalog, self.token_keys, conf)
        self.asgi = build_app(self)
        self.views = Views(self.asgi.base)
        self.passwords: dict[str, str] = {}

    def setup_sync(self, catalog: list[CatalogEntry]) -> None:
        self.token_keys.setup()
        self.credential_keys.setup()
        s = self.settings
        entries = [(e.type, e.name, e.description, f"{s.base_url}{e.path}{e.url_suffix}")
                   for e in catalog]
        self.passwords = bootstrap(self.identity, self.catalog, s.data_dir, s.region, entries)
        write_client_files(self.passwords, f"{s.base_url}/identity", s.region, s.data_dir,
                           s.clouds_yaml)

    async def start(self, catalog: list[CatalogEntry]) -> None:
        await asyncio.to_thread(self.setup_sync, catalog)

    async def stop(self) -> None:
        return None

    async def credentials_for(self, token: str) -> Credentials:
        """The caller behind a token, for the other services' APIs; 401 if invalid."""
        valid = self.auth.cached(token)
        if valid is None:
            try:
                valid = await asyncio.to_thread(self.auth.validate, token)
            except NotFound:
                raise Unauthorized(UNAUTHORIZED) from None
        return valid.credentials
