"""Authentication and tokens: who you are, what scope you get, how long for.

``Authenticator.authenticate`` takes the ``auth`` object of ``POST
/v3/auth/tokens`` (password, token or application-credential methods, any
scope) and issues a token. ``validate`` turns a token id back into a
``ValidToken``: payload decrypted, expiry and revocation checked, user,
scope and roles looked up now. Valid answers are cached per token until the
identity data changes (``IdentityService.generation``), the token expires or
``identity.cache_ttl`` seconds pass, which is what makes validation cheap;
``cached`` is the lock-free fast path an async handler may call on the event
loop. The cache keeps at most ``identity.cache_size`` tokens, the least
recently used dropped first, so a stream of new tokens cannot grow memory.

Every failure to authenticate is the same 401, whatever was wrong, so a
caller learns nothing about which users exist.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from tinystack.common.cache import BoundedCache
from tinystack.common.errors import BadRequest, NotFound, Unauthorized
from tinystack.common.policy import Credentials
from tinystack.config import IdentitySettings
from tinystack.common.db import utcnow
from tinystack.identity import passwords
from tinystack.identity.catalog import CatalogService
from tinystack.identity.models import (
    ApplicationCredential,
    Domain,
    Password,
    Project,
    RevocationEvent,
    User,
)
from tinystack.identity.service import IdentityService
from tinystack.identity.tokens import InvalidToken, KeyRepository, TokenPayload, new_audit_id

__all__ = ["Authenticator", "ValidToken", "UNAUTHORIZED", "check_auth_shape"]

UNAUTHORIZED = "The request you have made requires authentication."


def _fail() -> Unauthorized:
    return Unauthorized(UNAUTHORIZED)


def _ref(obj: Any) -> dict:
    return {"id": obj.id, "name": obj.name}


def _time(value: dt.datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise BadRequest(f"Invalid input for field '{where}': it must be an object.")
    return value


def _strings(ref: dict, where: str, *keys: str) -> None:
    for key in keys:
        if ref.get(key) is not None and not isinstance(ref[key], str):
            raise BadRequest(f"Invalid input for field '{where}.{key}': it must be a string.")


def _check_ref(ref: Any, where: str, *keys: str) -> None:
    """A user, project or domain reference: ids and names are strings."""
    _strings(_object(ref, where), where, "id", "name", *keys)
    if ref.get("domain") is not None:
        _strings(_object(ref["domain"], f"{where}.domain"), f"{where}.domain", "id", "name")


def check_auth_shape(auth: dict) -> None:
    """The ``auth`` object's shape and types, checked before any credential is.

    A malformed request is a 400 whatever its credentials, as Keystone's
    schema makes it; the checks that need the database stay in
    ``Authenticator``.
    """
    identity = auth.get("identity")
    methods = identity.get("methods") if isinstance(identity, dict) else None
    if not isinstance(methods, list) or not methods \
            or not all(isinstance(m, str) for m in methods):
        raise BadRequest("Invalid input for field 'identity': 'methods' is a required "
                         "property")
    if identity.get("password") is not None:
        block = _object(identity["password"], "identity.password")
        if block.get("user") is not None:
            _check_ref(block["user"], "password.user", "password")
    if identity.get("token") is not None:
        _strings(_object(identity["token"], "identity.token"), "token", "id")
    if identity.get("application_credential") is not None:
        block = _object(identity["application_credential"], "identity.application_credential")
        _strings(block, "application_credential", "id", "name", "secret")
        if block.get("user") is not None:
            _check_ref(block["user"], "application_credential.user")
    scope = auth.get("scope")
    if scope in (None, "unscoped") or scope == {}:
        return
    if not isinstance(scope, dict) or len(scope) != 1:
        raise BadRequest("Invalid input for field 'scope': exactly one of project, domain "
                         "or system is expected.")
    kind, ref = next(iter(scope.items()))
    if kind == "system":
        if _object(ref, "scope.system").get("all") is not True:
            raise BadRequest("Invalid input for field 'scope.system': only "
                             "{\"all\": true} is supported.")
    elif kind in ("project", "domain"):
        _check_ref(ref, f"scope.{kind}")
        domain = ref.get("domain") or {}
        if kind == "project" and not ref.get("id") and not (
                ref.get("name") and (domain.get("id") or domain.get("name"))):
            raise BadRequest("Expecting to find domain in project. The server could not "
                             "comply with the request since it is either malformed or "
                             "otherwise incorrect. The client is assumed to be in error.")
    else:
        raise BadRequest(f"Invalid input for field 'scope': unknown scope '{kind}'.")


@dataclass
class ValidToken:
    """A token that passed every check, with everything its body shows."""

    token_id: str
    payload: TokenPayload
    user: dict
    roles: list[dict]
    project: dict | None = None
    domain: dict | None = None
    application_credential: dict | None = None
    password_expires_at: dt.datetime | None = None
    generation: int = -1
    key_version: int = -1
    rendered: dict = field(default_factory=dict)

    @property
    def credentials(self) -> Credentials:
        p = self.payload
        return Credentials(
            user_id=p.user_id, user_domain_id=self.user["domain"]["id"],
            roles=frozenset(r["name"] for r in self.roles),
            project_id=p.project_id,
            project_domain_id=self.project["domain"]["id"] if self.project else None,
            domain_id=p.domain_id, system=p.system, token=self.token_id,
            audit_id=p.audit_ids[0], application_credential_id=p.application_credential_id)

    @property
    def role_ids(self) -> set[str]:
        return {r["id"] for r in self.roles}


class _Revocations:
    """Revocation events, mirrored from the database and matched in memory."""

    def __init__(self) -> None:
        self.by_audit: dict[str, dt.datetime] = {}
        self.other: list[RevocationEvent] = []
        self.last_id = 0

    def add(self, event: RevocationEvent) -> None:
        self.last_id = max(self.last_id, event.id or 0)
        if event.audit_id:
            self.by_audit[event.audit_id] = event.issued_before
        else:
            self.other.append(event)

    def revoked(self, p: TokenPayload) -> bool:
        for audit_id in p.audit_ids:
            if audit_id in self.by_audit:
                return True
        for e in self.other:
            if p.issued_at > e.issued_before:
                continue
            if e.user_id and e.user_id != p.user_id:
                continue
            if e.project_id and e.project_id != p.project_id:
                continue
            if e.domain_id and e.domain_id != p.domain_id:
                continue
            if e.application_credential_id and \
                    e.application_credential_id != p.application_credential_id:
                continue
            return True
        return False


class Authenticator:
    def __init__(self, identity: IdentityService, catalog: CatalogService, keys: KeyRepository,
                 conf: IdentitySettings):
        self.identity = identity
        self.catalog = catalog
        self.keys = keys
        self.conf = conf
        self.db = identity.db
        self._cache: BoundedCache[ValidToken] = BoundedCache(conf.cache_size, conf.cache_ttl)
        self._revocations = _Revocations()
        self._synced_generation = -1
        self._lock = threading.Lock()

    # -- issuing -----------------------------------------------------------------

    def authenticate(self, auth: dict) -> tuple[str, ValidToken]:
        """Check the ``auth`` object of POST /v3/auth/tokens and issue a token."""
        check_auth_shape(auth)
        identity = auth["identity"]
        methods = identity["methods"]
        scope = auth.get("scope")
        now = utcnow()
        if "application_credential" in methods:
            user, app_cred = self._by_application_credential(identity, now)
            if scope and scope != "unscoped":
                raise _fail()
            payload = TokenPayload(
                user_id=user.id, methods=("application_credential",),
                expires_at=self._expiry(now, app_cred.expires_at), issued_at=now,
                audit_ids=(new_audit_id(),), project_id=app_cred.project_id,
                system=app_cred.system == "all", application_credential_id=app_cred.id)
        elif "token" in methods:
            original = self._by_token(identity)
            op = original.payload
            if op.application_credential_id:
                raise _fail()
            user = self._user(op.user_id)
            project_id, domain_id, system = self._scope(user, scope, now)
            payload = TokenPayload(
                user_id=user.id, methods=tuple(dict.fromkeys(("token", *op.methods))),
                expires_at=op.expires_at, issued_at=now,
                audit_ids=(new_audit_id(), op.audit_ids[-1]), project_id=project_id,
                domain_id=domain_id, system=system)
        elif "password" in methods:
            user = self._by_password(identity, now)
            project_id, domain_id, system = self._scope(user, scope, now)
            payload = TokenPayload(
                user_id=user.id, methods=("password",), expires_at=self._expiry(now, None),
                issued_at=now, audit_ids=(new_audit_id(),), project_id=project_id,
                domain_id=domain_id, system=system)
        else:
            raise _fail()
        token_id = self.keys.encode(payload)
        try:
            return token_id, self.validate(token_id)
        except NotFound:  # e.g. an application credential's user lost every role it has
            raise _fail() from None

    def _expiry(self, now: dt.datetime, limit: dt.datetime | None) -> dt.datetime:
        expires = now + dt.timedelta(seconds=self.conf.token_expiration)
        return min(expires, limit) if limit else expires

    def _user(self, user_id: str) -> User:
        user = self.identity.user_snapshot(user_id)
        if user is None:
            raise _fail()
        return user

    def _find_user(self, s, ref: dict) -> User | None:
        if not isinstance(ref, dict):
            raise BadRequest("Invalid input for field 'user': it must be an object.")
        if ref.get("id"):
            return s.get(User, ref["id"])
        domain = ref.get("domain") or {}
        if not ref.get("name") or not isinstance(domain, dict) or not (
                domain.get("id") or domain.get("name")):
            raise BadRequest("Expecting to find domain in user. The server could not comply "
                             "with the request since it is either malformed or otherwise "
                             "incorrect. The client is assumed to be in error.")
        domain_id = domain.get("id") or s.scalar(
            sa.select(Domain.id).where(Domain.name == domain.get("name")))
        return s.scalar(sa.select(User).where(User.name == ref["name"],
                                              User.domain_id == domain_id))

    def _usable(self, s, user: User | None) -> User:
        if user is None or not user.enabled:
            raise _fail()
        domain = s.get(Domain, user.domain_id)
        if domain is None or not domain.enabled:
            raise _fail()
        return user

    def _by_password(self, identity: dict, now: dt.datetime) -> User:
        block = identity.get("password")
        if not isinstance(block, dict) or "user" not in block:
            raise BadRequest("Invalid input for field 'password': 'user' is a required "
                             "property")
        ref = block["user"]
        with self.db.session() as s:
            user = self._find_user(s, ref)
            if user is None:
                raise _fail()
            current = s.scalar(sa.select(Password).where(Password.user_id == user.id)
                               .order_by(Password.id.desc()).limit(1))
        options = user.options or {}
        if not options.get("ignore_lockout_failure_attempts") and passwords.is_locked(
                self.conf, user.failed_auth_count or 0, user.failed_auth_at, now):
            raise _fail()
        if not passwords.check_password(ref.get("password"), current.hash if current else None):
            if self.conf.lockout_failure_attempts > 0:
                self.identity.record_login(user.id, success=False)
            raise _fail()
        if user.failed_auth_count:
            self.identity.record_login(user.id, success=True)
        if current.expires_at is not None and current.expires_at <= now \
                and not options.get("ignore_password_expiry"):
            raise _fail()
        with self.db.session() as s:
            return self._usable(s, s.get(User, user.id))

    def _by_token(self, identity: dict) -> ValidToken:
        block = identity.get("token")
        if not isinstance(block, dict) or not block.get("id"):
            raise BadRequest("Invalid input for field 'token': 'id' is a required property")
        try:
            return self.validate(block["id"])
        except NotFound:
            raise _fail() from None

    def _by_application_credential(self, identity: dict, now: dt.datetime
                                   ) -> tuple[User, ApplicationCredential]:
        block = identity.get("application_credential")
        if not isinstance(block, dict) or not block.get("secret"):
            raise BadRequest("Invalid input for field 'application_credential': 'secret' is "
                             "a required property")
        with self.db.session() as s:
            if block.get("id"):
                cred = s.get(ApplicationCredential, block["id"])
            else:
                user = self._find_user(s, block.get("user") or {})
                cred = user and s.scalar(sa.select(ApplicationCredential).where(
                    ApplicationCredential.user_id == user.id,
                    ApplicationCredential.name == block.get("name")))
            if cred is None or (cred.expires_at is not None and cred.expires_at <= now):
                raise _fail()
            user = self._usable(s, s.get(User, cred.user_id))
        if not passwords.check_password(block["secret"], cred.secret_hash):
            raise _fail()
        return user, cred

    def _scope(self, user: User, scope: Any, now: dt.datetime
               ) -> tuple[str | None, str | None, bool]:
        """(project_id, domain_id, system) the request asks for and may have."""
        if scope in (None, "unscoped") or scope == {}:
            if scope is None and user.default_project_id:
                with self.db.session() as s:
                    project = s.get(Project, user.default_project_id)
                    usable = project is not None and project.enabled
                if usable and self.identity.effective_role_ids(
                        user.id, project_id=user.default_project_id):
                    return user.default_project_id, None, False
            return None, None, False
        if not isinstance(scope, dict) or len(scope) != 1:
            raise BadRequest("Invalid input for field 'scope': exactly one of project, domain "
                             "or system is expected.")
        kind, ref = next(iter(scope.items()))
        if not isinstance(ref, dict):
            raise BadRequest(f"Invalid input for field 'scope.{kind}': it must be an object.")
        with self.db.session() as s:
            if kind == "system":
                if ref.get("all") is not True:
                    raise BadRequest("Invalid input for field 'scope.system': only "
                                     "{\"all\": true} is supported.")
                project_id, domain_id, system = None, None, True
            elif kind == "domain":
                domain = s.get(Domain, ref["id"]) if ref.get("id") else s.scalar(
                    sa.select(Domain).where(Domain.name == ref.get("name")))
                if domain is None or not domain.enabled:
                    raise _fail()
                project_id, domain_id, system = None, domain.id, False
            elif kind == "project":
                project = self.identity.project_snapshot(ref["id"]) if ref.get("id") \
                    else self._find_project(s, ref)
                if project is None or not project.enabled:
                    raise _fail()
                domain = self.identity.domain_snapshot(project.domain_id)
                if domain is None or not domain.enabled:
                    raise _fail()
                project_id, domain_id, system = project.id, None, False
            else:
                raise BadRequest(f"Invalid input for field 'scope': unknown scope '{kind}'.")
        if not self.identity.effective_role_ids(user.id, project_id=project_id,
                                                domain_id=domain_id, system=system):
            raise _fail()
        return project_id, domain_id, system

    @staticmethod
    def _find_project(s, ref: dict) -> Project | None:
        if ref.get("id"):
            return s.get(Project, ref["id"])
        domain = ref.get("domain") or {}
        if not ref.get("name") or not isinstance(domain, dict) or not (
                domain.get("id") or domain.get("name")):
            raise BadRequest("Expecting to find domain in project. The server could not comply "
                             "with the request since it is either malformed or otherwise "
                             "incorrect. The client is assumed to be in error.")
        domain_id = domain.get("id") or s.scalar(
            sa.select(Domain.id).where(Domain.name == domain.get("name")))
        return s.scalar(sa.select(Project).where(Project.name == ref["name"],
                                                 Project.domain_id == domain_id))

    # -- validating --------------------------------------------------------------

    def cached(self, token_id: str, allow_expired: bool = False) -> ValidToken | None:
        """The cached answer for a token still valid now, or None: no I/O, no locks."""
        hit = self._cache.get(token_id)
        if hit is None or hit.generation != self.identity.generation \
                or hit.key_version != self.keys.version:
            return None
        if not self._in_time(hit.payload, utcnow(), allow_expired):
            return None
        return hit

    def _in_time(self, payload: TokenPayload, now: dt.datetime, allow_expired: bool) -> bool:
        """Not expired, or expired within the window ``allow_expired`` opens."""
        if payload.expires_at > now:
            return True
        window = dt.timedelta(seconds=self.conf.allow_expired_window)
        return allow_expired and payload.expires_at + window > now

    def _sync_revocations(self) -> None:
        generation = self.identity.generation
        if generation == self._synced_generation:
            return
        with self.db.session() as s:
            events = list(s.scalars(sa.select(RevocationEvent).where(
                RevocationEvent.id > self._revocations.last_id).order_by(RevocationEvent.id)))
        with self._lock:
            for event in events:
                self._revocations.add(event)
            self._synced_generation = generation

    def validate(self, token_id: str, allow_expired: bool = False) -> ValidToken:
        """Every check a token must pass; NotFound (Keystone's answer) when it fails."""
        hit = self.cached(token_id, allow_expired)
        if hit is not None:
            return hit
        generation, key_version = self.identity.generation, self.keys.version
        not_found = NotFound(f"Could not find token: {token_id[:32]}.")
        try:
            payload = self.keys.decode(token_id)
        except InvalidToken:
            raise not_found from None
        now = utcnow()
        if not self._in_time(payload, now, allow_expired):
            raise not_found
        self._sync_revocations()
        if self._revocations.revoked(payload):
            raise not_found
        valid = self._resolve(token_id, payload, now)
        if valid is None:
            raise not_found
        valid.generation, valid.key_version = generation, key_version
        self._cache.put(token_id, valid)
        return valid

    def _resolve(self, token_id: str, p: TokenPayload, now: dt.datetime) -> ValidToken | None:
        ident = self.identity
        user = ident.user_snapshot(p.user_id)
        if user is None or not user.enabled:
            return None
        user_domain = ident.domain_snapshot(user.domain_id)
        if user_domain is None or not user_domain.enabled:
            return None
        expires = ident.password_expires_at(user.id)
        project = domain = app_cred = None
        if p.project_id:
            project_row = ident.project_snapshot(p.project_id)
            if project_row is None or not project_row.enabled:
                return None
            project_domain = ident.domain_snapshot(project_row.domain_id)
            if project_domain is None or not project_domain.enabled:
                return None
            project = {**_ref(project_row), "domain": _ref(project_domain)}
        if p.domain_id:
            domain_row = ident.domain_snapshot(p.domain_id)
            if domain_row is None or not domain_row.enabled:
                return None
            domain = _ref(domain_row)
        if p.application_credential_id:
            with self.db.session() as s:
                cred = s.get(ApplicationCredential, p.application_credential_id)
            if cred is None or (cred.expires_at is not None and cred.expires_at <= now):
                return None
            app_cred = {"id": cred.id, "name": cred.name, "restricted": not cred.unrestricted}
            allowed = set(cred.role_ids)
        role_ids = self.identity.effective_role_ids(
            p.user_id, project_id=p.project_id, domain_id=p.domain_id, system=p.system)
        if p.application_credential_id:
            role_ids &= self._with_implied(allowed)
        scoped = p.project_id or p.domain_id or p.system
        if scoped and not role_ids:
            return None
        roles = self.identity.names("role", role_ids)
        return ValidToken(
            token_id=token_id, payload=p,
            user={**_ref(user), "domain": _ref(user_domain)},
            roles=sorted(({"id": r.id, "name": r.name} for r in roles.values()),
                         key=lambda r: r["name"]),
            project=project, domain=domain, application_credential=app_cred,
            password_expires_at=expires)

    def _with_implied(self, role_ids: set[str]) -> set[str]:
        with self.db.session() as s:
            return set(self.identity._implied_closure(s, role_ids))

    # -- revoking and rendering ------------------------------------------------------

    def revoke(self, valid: ValidToken) -> None:
        self.identity.add_revocation(audit_id=valid.payload.audit_ids[0],
                                     issued_before=utcnow())
        self._cache.pop(valid.token_id)

    def render(self, valid: ValidToken, with_catalog: bool = True) -> dict:
        """The ``token`` object of Keystone's token responses."""
        key = "catalog" if with_catalog else "plain"
        body = valid.rendered.get(key)
        if body is not None:
            return body
        p = valid.payload
        body = {
            "methods": list(p.methods),
            "user": {**valid.user, "password_expires_at": _time(valid.password_expires_at)},
            "audit_ids": list(p.audit_ids),
            "expires_at": _time(p.expires_at),
            "issued_at": _time(p.issued_at),
        }
        if p.project_id:
            body["project"] = valid.project
            body["is_domain"] = False
        elif p.domain_id:
            body["domain"] = valid.domain
        elif p.system:
            body["system"] = {"all": True}
        if p.project_id or p.domain_id or p.system:
            body["roles"] = valid.roles
            if with_catalog:
                body["catalog"] = self.catalog.catalog()
        if valid.application_credential:
            body["application_credential"] = valid.application_credential
        body = {"token": body}
        valid.rendered[key] = body
        return body
