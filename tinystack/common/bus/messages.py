"""What travels on the bus, as bytes, and the names that address it.

Every body is JSON (orjson). Pydantic models anywhere in arguments, results or payloads are
dumped with `model_dump(mode="json")`; orjson handles datetimes, UUIDs, enums and dataclasses
itself; anything else fails at the sender with TypeError. Receivers get plain JSON values
(dicts, lists, str, numbers) and parse them into their own models.

Shapes (both transports carry exactly these bodies):

- request: ``{"method": "spawn_server", "args": {"server_id": "..."}}``; whether a reply is
  wanted, and where it goes, travels beside the body (AMQP reply_to / correlation_id).
- reply: ``{"result": <json>}`` or
  ``{"error": {"type": "ValueError", "message": "...", "traceback": "..."}}``.
- event: the fields of `Event`.

Names: a target ("compute", "compute.host1") and an event type
("compute.instance.create.end") are dot-separated words without "*", "#" or spaces; a
subscription pattern may use "*" (one word) and "#" (zero or more words) as an AMQP topic
binding does. `topic_matches` implements that rule for the in-process transport.

This module does no I/O; interface.py uses it.
"""

from __future__ import annotations

import datetime as dt
import functools
import traceback
import uuid
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from .errors import RemoteError

__all__ = [
    "Event",
    "check_name",
    "check_pattern",
    "decode_reply",
    "decode_request",
    "encode",
    "encode_error",
    "encode_event",
    "encode_request",
    "encode_result",
    "topic_matches",
]

_MAX_TRACEBACK_CHARS = 8000


class Event(BaseModel):
    """One notification, as a subscriber's handler receives it.

    timestamp is ISO 8601 in UTC ("2024-05-01T12:00:00.123456+00:00"); message_id is a
    random hex string unique per publish. Unknown fields from newer publishers are ignored.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_type: str
    payload: dict[str, Any]
    publisher: str = ""
    timestamp: str
    message_id: str


def _to_json(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset)):
        raise TypeError("sets are not JSON; send a sorted list")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode(value: Any) -> bytes:
    """JSON bytes for `value`; pydantic models are dumped in JSON mode."""
    return orjson.dumps(value, default=_to_json)


def encode_request(method: str, args: dict[str, Any]) -> bytes:
    if not method:
        raise ValueError("a method name is required")
    return encode({"method": method, "args": args})


def decode_request(body: bytes) -> tuple[str, dict[str, Any]]:
    """Return (method, kwargs); raises ValueError on a malformed body."""
    request = orjson.loads(body)
    if not isinstance(request, dict):
        raise ValueError("a request must be a JSON object")
    method, args = request.get("method"), request.get("args", {})
    if not isinstance(method, str) or not isinstance(args, dict):
        raise ValueError("a request needs a string 'method' and an object 'args'")
    return method, args


def encode_result(result: Any) -> bytes:
    return encode({"result": result})


def encode_error(exc: BaseException) -> bytes:
    text = "".join(traceback.format_exception(exc))[-_MAX_TRACEBACK_CHARS:]
    error = {"type": type(exc).__name__, "message": str(exc), "traceback": text}
    return orjson.dumps({"error": error})


def decode_reply(body: bytes, *, target: str, method: str) -> Any:
    """Return the result of a reply, or raise the RemoteError it carries."""
    reply = orjson.loads(body)
    if "error" in reply:
        error = reply["error"]
        raise RemoteError(
            str(error.get("type", "Exception")),
            str(error.get("message", "")),
            target=target,
            method=method,
            remote_traceback=str(error.get("traceback", "")),
        )
    return reply.get("result")


def encode_event(event_type: str, payload: dict[str, Any] | BaseModel, publisher: str) -> bytes:
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    return encode(
        {
            "event_type": event_type,
            "payload": payload,
            "publisher": publisher,
            "timestamp": now,
            "message_id": uuid.uuid4().hex,
        }
    )


def check_name(kind: str, name: str) -> None:
    """Raise ValueError unless `name` is dot-separated words without wildcards or spaces."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} must be a non-empty string, not {name!r}")
    if any(c in name for c in "*# \t\r\n") or "" in name.split("."):
        raise ValueError(f"invalid {kind} {name!r}: dot-separated words, no '*', '#' or spaces")


def check_pattern(pattern: str) -> None:
    """Raise ValueError unless `pattern` is a valid topic binding ("compute.*.end", "#")."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"pattern must be a non-empty string, not {pattern!r}")
    for word in pattern.split("."):
        if not word or (word not in ("*", "#") and any(c in word for c in "*# \t\r\n")):
            raise ValueError(f"invalid pattern {pattern!r}: '*' and '#' must be whole words")


@functools.lru_cache(maxsize=4096)
def topic_matches(pattern: str, routing_key: str) -> bool:
    """True if an AMQP topic binding `pattern` matches `routing_key`.

    "*" matches exactly one word and "#" zero or more, so "compute.#" matches "compute" and
    "compute.instance.create.end", and "*.instance.*" matches "compute.instance.delete".
    """
    words, keys = pattern.split("."), routing_key.split(".")
    # reachable[j]: the pattern words seen so far can match keys[:j].
    reachable = [True] + [False] * len(keys)
    for word in words:
        if word == "#":
            for j in range(1, len(keys) + 1):
                reachable[j] = reachable[j] or reachable[j - 1]
        else:
            for j in range(len(keys), 0, -1):
                reachable[j] = reachable[j - 1] and (word == "*" or word == keys[j - 1])
            reachable[0] = False
    return reachable[-1]
