"""What the first ``tinystack up`` makes, and every later one checks.

The default domain; the roles ``admin`` -> ``member`` -> ``reader`` (each
implying the next) and ``service``; the ``admin`` user and project (admin on
the project and on the system); projects ``demo`` and ``alt_demo`` with
member users of the same names; the compute service's user ``nova`` with the
``service`` role on project ``service``; the catalog entries of the APIs this process
serves. Passwords are generated once, kept in ``<data_dir>/credentials.yaml``
(mode 0600), and never logged; the client files (``openrc`` in the data dir,
``tinystack*`` entries merged into clouds.yaml) are rewritten on every start
so they follow a changed port.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

import yaml

from tinystack.common.errors import Conflict, NotFound
from tinystack.identity.catalog import CatalogService
from tinystack.identity.service import IdentityService

__all__ = ["bootstrap", "write_client_files", "USERS"]

log = logging.getLogger(__name__)

# user -> (project, role); ``nova`` is the compute service's own user, which binds
# ports to hosts in the network service as Nova's service user does.
USERS = {"admin": ("admin", "admin"), "demo": ("demo", "member"),
         "alt_demo": ("alt_demo", "member"), "nova": ("service", "service")}
ROLE_CHAIN = ("admin", "member", "reader")


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)


def _ensure_role(identity: IdentityService, name: str) -> str:
    found = identity.list_roles(name=name)
    if found:
        return found[0].id
    return identity.create_role(name, options={"immutable": True}).id


def bootstrap(identity: IdentityService, catalog: CatalogService, data_dir: Path,
              region: str, entries: list[tuple[str, str, str, str]]) -> dict[str, str]:
    """Make sure the base identity data exists; returns user -> password."""
    try:
        identity.get_domain("default")
    except NotFound:
        identity.create_domain("Default", "The default domain", domain_id="default")
    role_ids = {name: _ensure_role(identity, name) for name in (*ROLE_CHAIN, "service")}
    for prior, implied in zip(ROLE_CHAIN, ROLE_CHAIN[1:]):
        identity.create_implied_role(role_ids[prior], role_ids[implied])

    secrets_file = data_dir / "credentials.yaml"
    known = yaml.safe_load(secrets_file.read_text()) if secrets_file.exists() else {}
    known = known or {}
    changed = False
    for user_name, (project_name, role) in USERS.items():
        try:
            project = identity.find_project(name=project_name, domain_id="default")
        except NotFound:
            project = identity.create_project(project_name, "default",
                                              description=f"Bootstrap project {project_name}")
        try:
            user = identity.find_user(name=user_name, domain_id="default")
            if user_name not in known:
                known[user_name] = secrets.token_urlsafe(18)
                identity.update_user(user.id, {"password": known[user_name]})
                changed = True
        except NotFound:
            known[user_name] = known.get(user_name) or secrets.token_urlsafe(18)
            try:
                user = identity.create_user(user_name, "default", known[user_name],
                                            default_project_id=project.id)
            except Conflict:  # a racing start made it first
                user = identity.find_user(name=user_name, domain_id="default")
            changed = True
        identity.grant(role_ids[role], "user", user.id, "project", project.id)
        if user_name == "admin":
            identity.grant(role_ids["admin"], "user", user.id, "system", "all")
    if changed or not secrets_file.exists():
        _write_private(secrets_file, yaml.safe_dump(known))
    catalog.ensure_entries(region, entries)
    return known


def write_client_files(passwords: dict[str, str], auth_url: str, region: str, data_dir: Path,
                       clouds_yaml: Path) -> None:
    """``openrc`` in the data dir and our entries merged into clouds.yaml."""
    _write_private(data_dir / "openrc", "".join(
        f"export {k}={v}\n" for k, v in {
            "OS_AUTH_URL": auth_url, "OS_USERNAME": "admin", "OS_PASSWORD": passwords["admin"],
            "OS_PROJECT_NAME": "admin", "OS_USER_DOMAIN_ID": "default",
            "OS_PROJECT_DOMAIN_ID": "default", "OS_REGION_NAME": region,
            "OS_IDENTITY_API_VERSION": "3", "OS_INTERFACE": "public"}.items()))

    def cloud(user: str, project: str | None, system: bool = False) -> dict:
        auth = {"auth_url": auth_url, "username": user, "password": passwords[user],
                "user_domain_id": "default"}
        if system:
            auth["system_scope"] = "all"
        else:
            auth.update(project_name=project, project_domain_id="default")
        return {"auth": auth, "region_name": region, "identity_api_version": 3,
                "interface": "public"}

    ours = {"tinystack": cloud("demo", "demo"), "tinystack-admin": cloud("admin", "admin"),
            "tinystack-alt": cloud("alt_demo", "alt_demo"),
            "tinystack-system-admin": cloud("admin", None, system=True)}
    try:
        existing = yaml.safe_load(clouds_yaml.read_text()) if clouds_yaml.exists() else None
    except yaml.YAMLError:
        log.warning("%s is not valid YAML; leaving it alone", clouds_yaml)
        return
    existing = existing if isinstance(existing, dict) else {}
    clouds = existing.get("clouds") if isinstance(existing.get("clouds"), dict) else {}
    clouds.update(ours)
    existing["clouds"] = clouds
    _write_private(clouds_yaml, yaml.safe_dump(existing, sort_keys=False))
