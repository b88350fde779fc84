"""Keystone's security-compliance settings, each off by default, and the hash cost.

Lockout after N failures for a while, no reuse of the last N passwords, a
minimum age before a user changes their own password again, and password
expiry. Time is the frozen ``clock``; nothing sleeps.
"""

from __future__ import annotations

import datetime as dt

import bcrypt
import pytest

from tinystack.config import IdentitySettings
from tinystack.identity import passwords

from .client import PRODUCTION_MIN_ROUNDS, UNAUTHORIZED, Clock, KeystoneClient, client_for


@pytest.fixture
async def strict(make_cloud, clock: Clock):
    """A KeystoneClient on a cloud with every rule on, time frozen."""
    cloud = await make_cloud(lockout_failure_attempts=3, lockout_duration=600,
                             unique_last_password_count=3, minimum_password_age=1,
                             password_expires_days=90)
    async with client_for(cloud) as client:
        yield client


def test_every_rule_is_off_by_default():
    conf = IdentitySettings()
    assert conf.lockout_failure_attempts == 0
    assert conf.unique_last_password_count == 0
    assert conf.minimum_password_age == 0
    assert conf.password_expires_days == 0


def test_production_hash_cost_is_at_least_12(monkeypatch: pytest.MonkeyPatch):
    assert PRODUCTION_MIN_ROUNDS >= 12
    assert IdentitySettings().password_hash_rounds >= 12
    monkeypatch.setattr(passwords, "MIN_ROUNDS", PRODUCTION_MIN_ROUNDS)
    asked, real_gensalt = [], bcrypt.gensalt

    def gensalt(rounds: int = 12, prefix: bytes = b"2b") -> bytes:
        asked.append(rounds)
        return real_gensalt(4, prefix)  # record the cost, hash cheaply

    monkeypatch.setattr(passwords.bcrypt, "gensalt", gensalt)
    passwords.hash_password("pw", 4)
    passwords.hash_password("pw", IdentitySettings().password_hash_rounds)
    assert asked == [PRODUCTION_MIN_ROUNDS, IdentitySettings().password_hash_rounds]


async def test_defaults_lock_nobody_out_and_allow_reuse(api: KeystoneClient):
    user = await api.make_user("free", "pass-1", project="demo")
    for _ in range(10):
        assert (await api.login("free", "wrong")).status_code == 401
    assert (await api.login("free", "pass-1", project="demo")).status_code == 201
    path = f"/v3/users/{user['id']}/password"
    for old, new in (("pass-1", "pass-2"), ("pass-2", "pass-1"), ("pass-1", "pass-2")):
        r = await api.post(path, json={"user": {"original_password": old, "password": new}})
        assert r.status_code == 204, r.text
    r = await api.as_admin("GET", f"/v3/users/{user['id']}", expect=200)
    assert r.json()["user"]["password_expires_at"] is None


# -- lockout ---------------------------------------------------------------------------


async def test_lockout_after_failures_for_a_while(strict: KeystoneClient, clock: Clock):
    api = strict
    await api.make_user("target", "right", project="demo")
    for _ in range(3):
        r = await api.login("target", "wrong")
        assert r.status_code == 401
        assert r.json() == UNAUTHORIZED
    locked = await api.login("target", "right", project="demo")
    assert locked.status_code == 401
    assert locked.json() == UNAUTHORIZED  # a locked user learns nothing more
    clock.advance(seconds=599)
    assert (await api.login("target", "right", project="demo")).status_code == 401
    clock.advance(seconds=2)
    assert (await api.login("target", "right", project="demo")).status_code == 201


async def test_a_success_resets_the_failure_count(strict: KeystoneClient):
    api = strict
    await api.make_user("target", "right", project="demo")
    for _ in range(2):
        await api.login("target", "wrong")
    assert (await api.login("target", "right", project="demo")).status_code == 201
    for _ in range(2):
        await api.login("target", "wrong")
    assert (await api.login("target", "right", project="demo")).status_code == 201


async def test_an_admin_password_reset_unlocks(strict: KeystoneClient):
    api = strict
    user = await api.make_user("target", "right", project="demo")
    for _ in range(3):
        await api.login("target", "wrong")
    assert (await api.login("target", "right", project="demo")).status_code == 401
    await api.as_admin("PATCH", f"/v3/users/{user['id']}", json={"user": {
        "password": "reset"}}, expect=200)
    assert (await api.login("target", "reset", project="demo")).status_code == 201


async def test_ignore_lockout_option(strict: KeystoneClient):
    api = strict
    await api.make_user("service-bot", "right", project="demo",
                        options={"ignore_lockout_failure_attempts": True})
    for _ in range(5):
        await api.login("service-bot", "wrong")
    assert (await api.login("service-bot", "right", project="demo")).status_code == 201


# -- password history and minimum age --------------------------------------------------------


async def test_password_history(strict: KeystoneClient, clock: Clock):
    api = strict
    user = await api.make_user("hist", "pw-a", project="demo")
    path = f"/v3/users/{user['id']}/password"

    async def change(old: str, new: str) -> int:
        clock.advance(days=2)  # past the minimum age
        r = await api.post(path, json={"user": {"original_password": old, "password": new}})
        return r.status_code

    assert await change("pw-a", "pw-a") == 400
    assert await change("pw-a", "pw-b") == 204
    assert await change("pw-b", "pw-a") == 400
    r = await api.post(path, json={"user": {"original_password": "pw-b", "password": "pw-a"}})
    assert r.json()["error"]["message"].startswith(
        "The new password cannot be identical to a previous password.")
    assert await change("pw-b", "pw-c") == 204
    assert await change("pw-c", "pw-a") == 204  # pw-a is now three passwords back
    r = await api.as_admin("PATCH", f"/v3/users/{user['id']}", json={"user": {
        "password": "pw-c"}})
    assert r.status_code == 400  # an admin reset keeps to the history too


async def test_minimum_password_age(strict: KeystoneClient, clock: Clock):
    api = strict
    user = await api.make_user("young", "pw-1", project="demo")
    path = f"/v3/users/{user['id']}/password"
    # set by an admin: the user may change it at once
    r = await api.post(path, json={"user": {"original_password": "pw-1", "password": "pw-2"}})
    assert r.status_code == 204
    clock.advance(hours=23)
    r = await api.post(path, json={"user": {"original_password": "pw-2", "password": "pw-3"}})
    assert r.status_code == 400
    assert "minimum password age" in r.json()["error"]["message"]
    clock.advance(hours=1, seconds=1)
    r = await api.post(path, json={"user": {"original_password": "pw-2", "password": "pw-3"}})
    assert r.status_code == 204
    await api.as_admin("PATCH", f"/v3/users/{user['id']}", json={"user": {
        "password": "pw-4"}}, expect=200)  # an admin is never held back


# -- expiry ----------------------------------------------------------------------------------


async def test_password_expiry(strict: KeystoneClient, clock: Clock):
    api = strict
    user = await api.make_user("aging", "pw-1", project="demo")
    expires = clock.now + dt.timedelta(days=90)
    r = await api.as_admin("GET", f"/v3/users/{user['id']}", expect=200)
    shown = r.json()["user"]["password_expires_at"]
    assert shown[:19] == expires.strftime("%Y-%m-%dT%H:%M:%S")
    r = await api.login("aging", "pw-1", project="demo")
    assert r.status_code == 201
    assert r.json()["token"]["user"]["password_expires_at"] == shown + "Z"

    clock.advance(days=90, seconds=1)
    r = await api.login("aging", "pw-1", project="demo")
    assert r.status_code == 401
    assert r.json() == UNAUTHORIZED
    # an expired password may still be changed by its owner
    r = await api.post(f"/v3/users/{user['id']}/password", json={"user": {
        "original_password": "pw-1", "password": "pw-2"}})
    assert r.status_code == 204
    assert (await api.login("aging", "pw-2", project="demo")).status_code == 201


async def test_ignore_password_expiry_option(strict: KeystoneClient, clock: Clock):
    api = strict
    user = await api.make_user("forever", "pw-1", project="demo",
                               options={"ignore_password_expiry": True})
    r = await api.as_admin("GET", f"/v3/users/{user['id']}", expect=200)
    assert r.json()["user"]["password_expires_at"] is None
    assert r.json()["user"]["options"] == {"ignore_password_expiry": True}
    clock.advance(days=365)
    assert (await api.login("forever", "pw-1", project="demo")).status_code == 201
