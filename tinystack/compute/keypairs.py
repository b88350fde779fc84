"""Key pairs: import a public key, or have one generated (before 2.92), per user.

A key pair belongs to a user (not a project), as in Nova; admins may act on
another user's with ``user_id`` (2.10). ``ssh`` keys are checked by parsing
them and fingerprinted as Nova does (MD5 of the key blob, colon-separated);
``x509`` keys are PEM certificates fingerprinted with SHA-1 of their DER
form. Generation makes a 2048-bit RSA key (or a self-signed certificate for
``x509``) with the ``cryptography`` package and returns the private half
once; it is never stored. ``cryptography``'s X.509 and RSA modules are
imported on first use: two megabytes a process that never sees a key pair
need not hold.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from tinystack.common.db import Database, utcnow
from tinystack.common.errors import BadRequest, Conflict, NotFound
from tinystack.compute.models import KeyPair
from tinystack.compute.quotas import Quotas

__all__ = ["KeyPairs", "NewKeyPair", "fingerprint", "check_name"]

_NAME = re.compile(r"^[a-zA-Z0-9 _-]+$")
_NAME_292 = re.compile(r"^[a-zA-Z0-9 _.@-]+$")


@dataclass
class NewKeyPair:
    keypair: KeyPair
    private_key: str | None = None


def check_name(name: str, *, allow_at_and_dot: bool) -> None:
    pattern = _NAME_292 if allow_at_and_dot else _NAME
    if not 1 <= len(name) <= 255 or not pattern.match(name) or name.strip() != name:
        raise BadRequest("Keypair data is invalid: Keypair name contains unsafe characters")


def _colon(digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in digest)


def fingerprint(public_key: str, key_type: str = "ssh") -> str:
    """Nova's fingerprint of a public key; BadRequest when the key does not parse."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        if key_type == "x509":
            cert = x509.load_pem_x509_certificate(public_key.encode())
            return _colon(hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).digest())
        serialization.load_ssh_public_key(public_key.strip().encode())
        blob = base64.b64decode(public_key.split()[1])
        return _colon(hashlib.md5(blob).digest())
    except (ValueError, IndexError, TypeError, base64.binascii.Error):
        raise BadRequest("Keypair data is invalid: failed to generate fingerprint") from None


def _generate(key_type: str, name: str) -> tuple[str, str]:
    """(public key, private key PEM) of a new key pair."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    if key_type == "x509":
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
                .sign(key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM).decode(), private
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return f"{public} Generated-by-Nova", private


class KeyPairs:
    def __init__(self, db: Database, quotas: Quotas):
        self.db = db
        self.quotas = quotas

    def create(self, user_id: str, project_id: str, name: str, *, public_key: str | None,
               key_type: str = "ssh", allow_at_and_dot: bool = False) -> NewKeyPair:
        check_name(name, allow_at_and_dot=allow_at_and_dot)
        private = None
        if public_key is None:
            public_key, private = _generate(key_type, name)
        print_ = fingerprint(public_key, key_type)
        with self.db.session() as s:
            self.quotas.check_key_pairs(s, user_id, project_id)
            if s.scalar(sa.select(KeyPair.id).where(KeyPair.user_id == user_id,
                                                    KeyPair.name == name)) is not None:
                raise Conflict(f"Key pair '{name}' already exists.")
            keypair = KeyPair(user_id=user_id, name=name, type=key_type, fingerprint=print_,
                              public_key=public_key.strip() if key_type == "ssh"
                              else public_key, created_at=utcnow())
            s.add(keypair)
            try:
                s.flush()
            except IntegrityError:
                raise Conflict(f"Key pair '{name}' already exists.") from None
        return NewKeyPair(keypair, private)

    def list(self, user_id: str, *, limit: int | None = None,
             marker: str | None = None) -> list[KeyPair]:
        with self.db.session() as s:
            keypairs = list(s.scalars(sa.select(KeyPair).where(KeyPair.user_id == user_id)
                                      .order_by(KeyPair.name)))
        if marker is not None:
            names = [k.name for k in keypairs]
            if marker not in names:
                raise BadRequest(f"marker [{marker}] not found")
            keypairs = keypairs[names.index(marker) + 1:]
        return keypairs[:limit] if limit is not None else keypairs

    def get(self, user_id: str, name: str) -> KeyPair:
        with self.db.session() as s:
            keypair = s.scalar(sa.select(KeyPair).where(KeyPair.user_id == user_id,
                                                        KeyPair.name == name))
        if keypair is None:
            raise NotFound(f"Keypair {name} not found for user {user_id}")
        return keypair

    def delete(self, user_id: str, name: str) -> None:
        with self.db.session() as s:
            gone = s.execute(sa.delete(KeyPair).where(KeyPair.user_id == user_id,
                                                      KeyPair.name == name))
        if gone.rowcount != 1:
            raise NotFound(f"Keypair {name} not found for user {user_id}")
