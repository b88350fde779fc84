"""Application credentials and stored credentials (EC2-style keys among them).

An application credential is a secret a user makes for a program: it
authenticates as that user, on one project, with at most the roles the user
had when making it (or fewer), and it dies with the user. The secret is
shown once and kept only as a bcrypt hash.

Stored credentials keep their ``blob`` encrypted at rest with a key of their
own (``<data_dir>/identity/credential-keys``). An ``ec2`` credential's id is
the SHA-256 of its access key, as Keystone makes it, so the object store's S3
API can find it by access key.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets

import orjson
import sqlalchemy as sa

from tinystack.common.db import new_id, utcnow
from tinystack.common.errors import BadRequest, Conflict, Forbidden, NotFound
from tinystack.identity import passwords
from tinystack.identity.models import ApplicationCredential, Credential, Role, User
from tinystack.identity.service import IdentityService
from tinystack.identity.tokens import KeyRepository

__all__ = ["CredentialService", "ec2_credential_id"]


def ec2_credential_id(access: str) -> str:
    return hashlib.sha256(access.encode()).hexdigest()


def _ec2_access(blob: str) -> str:
    """The access key of an ec2 credential's blob; 400 if the blob has none."""
    try:
        access = orjson.loads(blob)["access"]
        if not isinstance(access, str) or not access:
            raise TypeError(access)
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise BadRequest("Invalid blob in credential: an ec2 credential's blob is a "
                         "JSON object with 'access' and 'secret'.") from None
    return access


class CredentialService:
    def __init__(self, identity: IdentityService, keys: KeyRepository):
        self.identity = identity
        self.db = identity.db
        self.keys = keys

    # -- application credentials -------------------------------------------------

    def create_application_credential(
        self, *, user_id: str, project_id: str, name: str, token_role_ids: set[str],
        secret: str | None = None, description: str = "", expires_at: dt.datetime | None = None,
        roles: list[dict] | None = None, unrestricted: bool = False,
        access_rules: list | None = None,
    ) -> tuple[ApplicationCredential, str]:
        """Returns the credential and its secret (the only time it is seen)."""
        secret = secret or base64.urlsafe_b64encode(secrets.token_bytes(64)).rstrip(b"=").decode()
        if expires_at is not None and expires_at <= utcnow():
            raise BadRequest("The expiration time of an application credential must be in "
                             "the future.")
        with self.db.session() as s:
            role_ids = []
            for ref in roles or []:
                if ref.get("id"):
                    role = s.get(Role, ref["id"])
                else:
                    role = s.scalar(sa.select(Role).where(Role.name == ref.get("name"),
                                                          Role.domain_id.is_(None)))
                if role is None:
                    raise NotFound(f"Could not find role: {ref.get('id') or ref.get('name')}.")
                role_ids.append(role.id)
            if not roles:
                role_ids = sorted(token_role_ids)
            if not set(role_ids) <= token_role_ids:
                raise Forbidden("Cannot create an application credential with roles the user "
                                "does not hold on the project.")
            if s.scalar(sa.select(ApplicationCredential.id).where(
                    ApplicationCredential.user_id == user_id,
                    ApplicationCredential.name == name)):
                raise Conflict("Conflict occurred attempting to store application_credential "
                               f"- Duplicate entry found with name {name}.")
            cred = ApplicationCredential(
                name=name, user_id=user_id, project_id=project_id,
                secret_hash=passwords.hash_password(
                    secret, self.identity.conf.password_hash_rounds),
                description=description or "", expires_at=expires_at,
                unrestricted=unrestricted, role_ids=role_ids, access_rules=access_rules or [])
            s.add(cred)
        self.identity.changed()
        return cred, secret

    def get_application_credential(self, user_id: str | None, cred_id: str
                                   ) -> ApplicationCredential:
        with self.db.session() as s:
            cred = s.get(ApplicationCredential, cred_id)
            if cred is None or (user_id is not None and cred.user_id != user_id):
                raise NotFound(f"Could not find Application Credential: {cred_id}.")
            return cred

    def find_application_credential(self, user_id: str, name: str) -> ApplicationCredential:
        with self.db.session() as s:
            cred = s.scalar(sa.select(ApplicationCredential).where(
                ApplicationCredential.user_id == user_id, ApplicationCredential.name == name))
            if cred is None:
                raise NotFound(f"Could not find Application Credential: {name}.")
            return cred

    def list_application_credentials(self, user_id: str, name: str | None = None
                                     ) -> list[ApplicationCredential]:
        with self.db.session() as s:
            if s.get(User, user_id) is None:
                raise NotFound(f"Could not find user: {user_id}.")
            query = sa.select(ApplicationCredential).where(
                ApplicationCredential.user_id == user_id).order_by(ApplicationCredential.name)
            if name is not None:
                query = query.where(ApplicationCredential.name == name)
            return list(s.scalars(query))

    def delete_application_credential(self, user_id: str, cred_id: str) -> None:
        with self.db.session() as s:
            cred = s.get(ApplicationCredential, cred_id)
            if cred is None or cred.user_id != user_id:
                raise NotFound(f"Could not find Application Credential: {cred_id}.")
            s.delete(cred)
            self.identity._revoke(s, application_credential_id=cred_id)
        self.identity.changed()

    def role_names(self, role_ids: list[str]) -> list[dict]:
        roles = self.identity.names("role", role_ids)
        return [{"id": r.id, "name": r.name, "domain_id": r.domain_id}
                for rid in role_ids if (r := roles.get(rid))]

    # -- stored credentials -----------------------------------------------------

    def _seal(self, blob: str) -> str:
        return self.keys.fernet.encrypt(blob.encode()).decode()

    def _open(self, sealed: str) -> str:
        return self.keys.fernet.decrypt(sealed.encode()).decode()

    def view(self, cred: Credential) -> dict:
        return {"id": cred.id, "user_id": cred.user_id, "project_id": cred.project_id,
                "type": cred.type, "blob": self._open(cred.encrypted_blob), **(cred.extra or {})}

    def create_credential(self, *, user_id: str, type: str, blob: str,
                          project_id: str | None = None, extra: dict | None = None) -> dict:
        cred_id = new_id()
        if type == "ec2":
            access = _ec2_access(blob)
            if not project_id:
                raise BadRequest("Invalid input for field 'project_id': an ec2 credential "
                                 "needs a project.")
            cred_id = ec2_credential_id(access)
        with self.db.session() as s:
            if s.get(User, user_id) is None:
                raise NotFound(f"Could not find user: {user_id}.")
            if s.get(Credential, cred_id) is not None:
                raise Conflict("Conflict occurred attempting to store credential - Duplicate "
                               f"ID, {cred_id}.")
            cred = Credential(id=cred_id, user_id=user_id, project_id=project_id, type=type,
                              encrypted_blob=self._seal(blob), extra=extra or {})
            s.add(cred)
        return self.view(cred)

    def get_credential(self, cred_id: str) -> dict:
        with self.db.session() as s:
            cred = s.get(Credential, cred_id)
            if cred is None:
                raise NotFound(f"Could not find credential: {cred_id}.")
            return self.view(cred)

    def list_credentials(self, user_id: str | None = None, type: str | None = None) -> list[dict]:
        with self.db.session() as s:
            query = sa.select(Credential)
            if user_id is not None:
                query = query.where(Credential.user_id == user_id)
            if type is not None:
                query = query.where(Credential.type == type)
            return [self.view(c) for c in s.scalars(query)]

    def update_credential(self, cred_id: str, changes: dict) -> dict:
        with self.db.session() as s:
            cred = s.get(Credential, cred_id)
            if cred is None:
                raise NotFound(f"Could not find credential: {cred_id}.")
            if "user_id" in changes and s.get(User, changes["user_id"]) is None:
                raise NotFound(f"Could not find user: {changes['user_id']}.")
            if changes.get("type", cred.type) == "ec2" and ("blob" in changes
                                                            or "type" in changes):
                blob = changes.get("blob", self._open(cred.encrypted_blob))
                if ec2_credential_id(_ec2_access(blob)) != cred.id:
                    raise BadRequest("Invalid blob in credential: an ec2 credential's access "
                                     "key is its id and cannot change.")
            if "blob" in changes:
                cred.encrypted_blob = self._seal(changes["blob"])
            for key in ("type", "project_id", "user_id"):
                if key in changes:
                    setattr(cred, key, changes[key])
            return self.view(cred)

    def delete_credential(self, cred_id: str) -> None:
        with self.db.session() as s:
            cred = s.get(Credential, cred_id)
            if cred is None:
                raise NotFound(f"Could not find credential: {cred_id}.")
            s.delete(cred)

    def create_ec2(self, user_id: str, project_id: str) -> dict:
        access, secret = secrets.token_hex(16), secrets.token_hex(16)
        blob = orjson.dumps({"access": access, "secret": secret, "trust_id": None}).decode()
        return self.create_credential(user_id=user_id, type="ec2", blob=blob,
                                      project_id=project_id)
