"""The identity HTTP app: every ``/v3`` route and Keystone's error body.

Routes live in ``api_auth.py`` (tokens, versions), ``api_resources.py``
(domains, projects, users, groups, roles), ``api_grants.py`` (grants and
role assignments) and ``api_catalog.py`` (catalog and credentials).
"""

from __future__ import annotations

from tinystack.common.http import ServiceApp
from tinystack.identity import api_auth, api_catalog, api_resources
from tinystack.identity.web import Handlers

__all__ = ["build_app", "keystone_error"]


def keystone_error(code: int, title: str, message: str) -> dict:
    return {"error": {"code": code, "title": title, "message": message}}


class IdentityApp(ServiceApp):
    base = staticmethod(Handlers.base)


def build_app(component) -> IdentityApp:
    routes = [*api_auth.routes(component), *api_resources.routes(component),
              *api_catalog.routes(component)]
    return IdentityApp("identity", routes, keystone_error)
