"""Token ids: short, round-tripping every scope, and refusing what these keys did not make."""

from __future__ import annotations

import datetime as dt
import uuid

import orjson
import pytest

from tinystack.identity import tokens
from tinystack.identity.tokens import InvalidToken, KeyRepository, TokenPayload, new_audit_id

NOW = dt.datetime(2026, 11, 26, 12, 0, 0, 123456)


@pytest.fixture
def keys(tmp_path) -> KeyRepository:
    repository = KeyRepository(tmp_path / "keys")
    repository.setup()
    return repository


def payload(**fields) -> TokenPayload:
    base = dict(user_id=uuid.uuid4().hex, methods=("password",),
                expires_at=NOW.replace(microsecond=0) + dt.timedelta(hours=1), issued_at=NOW,
                audit_ids=(new_audit_id(),))
    return TokenPayload(**{**base, **fields})


@pytest.mark.parametrize("fields", [
    {"project_id": uuid.uuid4().hex},
    {"domain_id": "default"},
    {"system": True},
    {},
    {"project_id": uuid.uuid4().hex, "methods": ("token", "application_credential"),
     "audit_ids": (new_audit_id(), new_audit_id()),
     "application_credential_id": uuid.uuid4().hex},
    {"user_id": "a user id of another backend", "domain_id": "Some-Domain"},
])
def test_every_kind_of_token_round_trips_and_stays_under_255_characters(keys, fields):
    original = payload(**fields)
    token = keys.encode(original)
    assert len(token) < 255
    decoded = keys.decode(token)
    assert decoded == original


def test_a_token_of_the_first_json_format_is_still_read(keys):
    user, project, audit = uuid.uuid4().hex, uuid.uuid4().hex, new_audit_id()
    expires = int((NOW + dt.timedelta(hours=1)).replace(tzinfo=dt.timezone.utc).timestamp())
    issued = NOW.replace(tzinfo=dt.timezone.utc).timestamp()
    raw = orjson.dumps([1, user, 1, ["p", project], expires, issued, [audit], None])
    token = keys.fernet.encrypt(raw).rstrip(b"=").decode()
    decoded = keys.decode(token)
    assert (decoded.user_id, decoded.project_id, decoded.audit_ids, decoded.methods) == (
        user, project, (audit,), ("password",))


def test_tokens_of_other_keys_or_tampered_ones_are_refused(keys, tmp_path):
    token = keys.encode(payload(project_id=uuid.uuid4().hex))
    other = KeyRepository(tmp_path / "other")
    other.setup()
    for bad in (other.encode(payload()), token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1],
                "", "not a token", "é" * 10, "A" * 2000):
        with pytest.raises(InvalidToken):
            keys.decode(bad)
    truncated = keys.fernet.encrypt(keys.fernet.decrypt(
        token.encode() + b"=" * (-len(token) % 4))[:-5]).rstrip(b"=").decode()
    with pytest.raises(InvalidToken):
        keys.decode(truncated)


def test_keys_another_process_rotates_are_read_within_the_recheck_interval(tmp_path,
                                                                          monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(tokens.time, "monotonic", lambda: clock[0])
    server = KeyRepository(tmp_path / "keys", max_active_keys=2)
    server.setup()
    old_token = server.encode(payload())
    version = server.version

    other = KeyRepository(tmp_path / "keys", max_active_keys=2)  # another process
    other.rotate()
    other.rotate()  # the key old_token was made with is gone now
    new_token = other.encode(payload())

    # Within the interval the server still uses the keys it loaded...
    clock[0] += tokens.RECHECK_SECONDS / 2
    assert server.decode(old_token).user_id
    assert server.version == version
    with pytest.raises(InvalidToken):
        server.decode(new_token)
    # ... and after it, the directory's.
    clock[0] += tokens.RECHECK_SECONDS
    assert server.version != version
    assert server.decode(new_token).user_id
    with pytest.raises(InvalidToken):
        server.decode(old_token)


def test_an_unchanged_directory_keeps_the_loaded_keys(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(tokens.time, "monotonic", lambda: clock[0])
    server = KeyRepository(tmp_path / "keys")
    server.setup()
    fernet, version = server.fernet, server.version
    clock[0] += 10 * tokens.RECHECK_SECONDS
    assert server.fernet is fernet and server.version == version
