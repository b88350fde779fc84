"""Password hashing and Keystone's security-compliance rules.

Hashes are bcrypt at the configured cost (Keystone's default, 12, is the
floor). bcrypt releases the GIL, so callers run ``hash_password`` and
``check_password`` in worker threads and other requests go on meanwhile.
The rules (lockout, history, expiry, minimum age) are pure functions over
timestamps so ``service.py`` can apply them and tests can drive them with a
fixed clock.
"""

from __future__ import annotations

import datetime as dt

import bcrypt

from tinystack.common.errors import BadRequest
from tinystack.config import IdentitySettings

__all__ = [
    "MIN_ROUNDS",
    "hash_password",
    "check_password",
    "is_locked",
    "check_history",
    "check_minimum_age",
    "expiry_for_new_password",
]

MIN_ROUNDS = 12
_MAX_BYTES = 72  # bcrypt reads no further; longer inputs are cut as Keystone cuts them


def _encode(password: str) -> bytes:
    return password.encode("utf-8")[:_MAX_BYTES]


def hash_password(password: str, rounds: int) -> str:
    return bcrypt.hashpw(_encode(password), bcrypt.gensalt(max(rounds, MIN_ROUNDS))).decode()


def check_password(password: str, hashed: str | None) -> bool:
    if not hashed or password is None:
        return False
    try:
        return bcrypt.checkpw(_encode(password), hashed.encode())
    except ValueError:
        return False


def is_locked(conf: IdentitySettings, failures: int, last_failure: dt.datetime | None,
              now: dt.datetime) -> bool:
    """Whether a user with this many recent failures is locked out now."""
    if conf.lockout_failure_attempts <= 0 or failures < conf.lockout_failure_attempts:
        return False
    if last_failure is None:
        return False
    return now < last_failure + dt.timedelta(seconds=conf.lockout_duration)


def check_history(conf: IdentitySettings, new_password: str, recent_hashes: list[str]) -> None:
    """Refuse a password among the last ``unique_last_password_count`` ones.

    ``recent_hashes`` is newest first.
    """
    count = conf.unique_last_password_count
    if count <= 1:
        return
    for old in recent_hashes[: count - 1]:
        if check_password(new_password, old):
            raise BadRequest(
                "The new password cannot be identical to a previous password. The total "
                f"number which includes the new password must be unique is {count}."
            )


def check_minimum_age(conf: IdentitySettings, set_at: dt.datetime | None,
                      now: dt.datetime) -> None:
    """Refuse a self-service change before the current password is old enough."""
    days = conf.minimum_password_age
    if days <= 0 or set_at is None:
        return
    ready = set_at + dt.timedelta(days=days)
    if now < ready:
        left = max(1, (ready - now).days + (1 if (ready - now).seconds else 0))
        raise BadRequest(
            "You cannot change your password at this time due to the minimum password "
            f"age. Once you change your password, it must be used for {days} day(s) before "
            f"it can be changed. Please try again in {left} day(s) or contact your "
            "administrator to reset your password."
        )


def expiry_for_new_password(conf: IdentitySettings, now: dt.datetime,
                            ignore_expiry: bool) -> dt.datetime | None:
    if conf.password_expires_days <= 0 or ignore_expiry:
        return None
    return now + dt.timedelta(days=conf.password_expires_days)
