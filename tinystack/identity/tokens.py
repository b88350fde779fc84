"""Token ids: Fernet-encrypted, authenticated payloads under rotating keys.

A token carries only who, what scope, how it was obtained and when it ends,
packed in binary (ids as 16 bytes) so a token id stays under 255 characters
as Keystone's do; tokens of the first, JSON, format are still read;
everything else (names, roles, catalog) is looked up when it is validated, so
a disabled user or a removed role takes effect at once. Keys live in
``<data_dir>/identity/token-keys`` as Keystone's fernet repository does: file
``0`` is the staged key, the highest number the primary that signs new
tokens, the others still accepted. ``rotate`` promotes the staged key and
drops the oldest beyond ``max_active_keys``. Keys another process puts in
the repository (a rotation there, or a repository copied over from another
controller, as Keystone's operators sync theirs) are read within
``RECHECK_SECONDS``: the directory is looked at no more often than that.

Revocation is not here: ``service.py`` checks revocation events after
``decode`` succeeds.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import secrets
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

__all__ = ["TokenPayload", "KeyRepository", "InvalidToken", "RECHECK_SECONDS", "new_audit_id"]

RECHECK_SECONDS = 1.0
"""How often, at most, the key directory is looked at for another process's changes."""

_VERSION = 2
_METHODS = ("password", "token", "application_credential", "totp", "oauth1", "mapped")


def new_audit_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()


@dataclass(frozen=True)
class TokenPayload:
    user_id: str
    methods: tuple[str, ...]
    expires_at: dt.datetime
    issued_at: dt.datetime
    audit_ids: tuple[str, ...]
    project_id: str | None = None
    domain_id: str | None = None
    system: bool = False
    application_credential_id: str | None = None
    extra: dict = field(default_factory=dict)

    def pack(self) -> bytes:
        """The binary form: a header, two times, then the ids (see ``_Ids``)."""
        mask = sum(1 << _METHODS.index(m) for m in self.methods)
        kind = 3 if self.system else 1 if self.project_id else 2 if self.domain_id else 0
        app_cred = self.application_credential_id is not None
        ids = _Ids()
        ids.add(self.user_id)
        if kind in (1, 2):
            ids.add(self.project_id if kind == 1 else self.domain_id)
        for audit_id in self.audit_ids:
            ids.add(audit_id)
        if app_cred:
            ids.add(self.application_credential_id)
        header = _HEADER.pack(
            _VERSION, mask, kind, len(self.audit_ids), int(app_cred),
            int(self.expires_at.replace(tzinfo=dt.timezone.utc).timestamp()),
            self.issued_at.replace(tzinfo=dt.timezone.utc).timestamp())
        return header + ids.data

    @classmethod
    def unpack(cls, raw: bytes) -> "TokenPayload":
        if raw[:1] == b"[":
            return cls._unpack_json(raw)
        try:
            version, mask, kind, audits, app_cred, expires, issued = \
                _HEADER.unpack_from(raw)
        except struct.error:
            raise InvalidToken() from None
        if version != _VERSION:
            raise InvalidToken()
        ids = _Ids(raw, _HEADER.size)
        user_id = ids.next()
        scope_id = ids.next() if kind in (1, 2) else None
        audit_ids = tuple(ids.next() for _ in range(audits))
        app_cred_id = ids.next() if app_cred else None
        return cls._make(user_id, mask, kind, scope_id, expires, issued, audit_ids,
                         app_cred_id)

    @classmethod
    def _make(cls, user_id: str, mask: int, kind: int, scope_id: str | None, expires: float,
              issued: float, audit_ids, app_cred_id: str | None) -> "TokenPayload":
        utc = dt.timezone.utc
        return cls(
            user_id=user_id,
            methods=tuple(m for i, m in enumerate(_METHODS) if mask & (1 << i)),
            expires_at=dt.datetime.fromtimestamp(expires, utc).replace(tzinfo=None),
            issued_at=dt.datetime.fromtimestamp(issued, utc).replace(tzinfo=None),
            audit_ids=tuple(audit_ids),
            project_id=scope_id if kind == 1 else None,
            domain_id=scope_id if kind == 2 else None,
            system=kind == 3,
            application_credential_id=app_cred_id,
        )

    @classmethod
    def _unpack_json(cls, raw: bytes) -> "TokenPayload":
        """Tokens of the first format (a JSON list), issued before an upgrade."""
        version, user_id, mask, scope, expires, issued, audit_ids, app_cred = orjson.loads(raw)
        if version != 1:
            raise InvalidToken()
        kind = {"p": 1, "d": 2, "s": 3}.get(scope[0] if scope else "", 0)
        return cls._make(user_id, mask, kind, scope[1] if kind in (1, 2) else None, expires,
                         issued, audit_ids, app_cred)


_HEADER = struct.Struct("!BBBBBId")
"""version, methods bit mask, scope kind (0 none, 1 project, 2 domain, 3 system),
number of audit ids, has an application credential, expires (s), issued (s)."""
_HEX_ID = re.compile(r"[0-9a-f]{32}")


class _Ids:
    """Strings packed short: a 32-hex id as 16 bytes, an audit id (22 url-safe base64
    characters) as 16 bytes, anything else as its UTF-8 with a length byte."""

    def __init__(self, data: bytes = b"", offset: int = 0):
        self.data, self.offset = data, offset

    def add(self, text: str) -> None:
        if _HEX_ID.fullmatch(text):
            self.data += b"\x00" + bytes.fromhex(text)
            return
        if len(text) == 22:
            try:
                raw = base64.urlsafe_b64decode(text + "==")
            except ValueError:
                raw = b""
            if len(raw) == 16 and base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == text:
                self.data += b"\x01" + raw
                return
        encoded = text.encode()
        if len(encoded) > 255:
            raise ValueError("an id in a token is at most 255 bytes")
        self.data += b"\x02" + bytes([len(encoded)]) + encoded

    def next(self) -> str:
        data, at = self.data, self.offset
        if at >= len(data):
            raise InvalidToken()
        tag = data[at]
        if tag in (0, 1):
            raw = data[at + 1:at + 17]
            if len(raw) != 16:
                raise InvalidToken()
            self.offset = at + 17
            return raw.hex() if tag == 0 else base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        if tag == 2 and at + 1 < len(data):
            size = data[at + 1]
            raw = data[at + 2:at + 2 + size]
            if len(raw) != size:
                raise InvalidToken()
            self.offset = at + 2 + size
            return raw.decode()
        raise InvalidToken()


class KeyRepository:
    """The token keys on disk, loaded once and reloaded when the directory changes."""

    def __init__(self, directory: Path, max_active_keys: int = 3):
        self.directory = directory
        self.max_active_keys = max(2, max_active_keys)
        self._fernet: MultiFernet | None = None
        self._version = 0
        self._stamp: tuple | None = None
        self._checked = -RECHECK_SECONDS

    @property
    def version(self) -> int:
        """Bumped whenever the key set changes, so cached validations can be dropped."""
        self._notice_changes()
        return self._version

    def _directory_stamp(self) -> tuple | None:
        """What changes when keys are added, renamed or removed: the directory's inode,
        modification time and names (a coarse clock may give two changes one time)."""
        try:
            stat = self.directory.stat()
            names = tuple(sorted(os.listdir(self.directory)))
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns, names

    def _notice_changes(self) -> None:
        """Forget the loaded keys if the directory changed since it was last looked at (a
        key added, renamed or removed), looking at most once every ``RECHECK_SECONDS``."""
        now = time.monotonic()
        if now - self._checked < RECHECK_SECONDS:
            return
        self._checked = now
        stamp = self._directory_stamp()
        if stamp != self._stamp:
            self._changed(stamp)

    def _changed(self, stamp: tuple | None) -> None:
        self._stamp = stamp
        self._fernet = None
        self._version += 1

    def _keys(self) -> dict[int, bytes]:
        keys = {}
        for path in self.directory.iterdir():
            if path.name.isdigit():
                try:
                    keys[int(path.name)] = path.read_bytes().strip()
                except FileNotFoundError:  # another process's rotation dropped it just now
                    continue
        return keys

    def _write(self, index: int, key: bytes) -> None:
        tmp = self.directory / f".{index}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
        tmp.rename(self.directory / str(index))

    def setup(self) -> None:
        """Create the repository with a staged and a primary key, if it is empty."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self._keys():
            self._write(0, Fernet.generate_key())
            self._write(1, Fernet.generate_key())
        self._changed(self._directory_stamp())

    def rotate(self) -> int:
        """Promote the staged key to primary, stage a new one, drop the oldest.

        Returns the new primary key's number.
        """
        keys = self._keys()
        primary = max(keys) + 1
        os.rename(self.directory / "0", self.directory / str(primary))
        self._write(0, Fernet.generate_key())
        keep = sorted(k for k in keys if k != 0) + [primary]
        for old in keep[: max(0, len(keep) - (self.max_active_keys - 1))]:
            (self.directory / str(old)).unlink()
        self._changed(self._directory_stamp())
        return primary

    @property
    def fernet(self) -> MultiFernet:
        self._notice_changes()
        if self._fernet is None:
            keys = self._keys()
            order = sorted(keys, reverse=True)  # primary first, staged (0) last
            self._fernet = MultiFernet([Fernet(keys[k]) for k in order])
        return self._fernet

    def encode(self, payload: TokenPayload) -> str:
        token = self.fernet.encrypt(payload.pack())
        return token.rstrip(b"=").decode()

    def decode(self, token: str) -> TokenPayload:
        """The payload of a token these keys made; ``InvalidToken`` otherwise."""
        if not token or len(token) > 1024:
            raise InvalidToken()
        try:
            raw = token.encode("ascii")
        except UnicodeEncodeError:
            raise InvalidToken() from None
        raw += b"=" * (-len(raw) % 4)
        try:
            return TokenPayload.unpack(self.fernet.decrypt(raw))
        except (ValueError, TypeError, IndexError, UnicodeDecodeError):
            raise InvalidToken() from None
