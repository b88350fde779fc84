"""The message bus: request/response, fire-and-forget and notifications between services.

    bus = connect("memory://")            # all-in-one: in-process
    bus = connect("amqp://guest:guest@controller:5672/")   # several nodes: RabbitMQ
    async with bus:
        await bus.serve("compute.host1", ComputeEndpoint())
        await bus.call("compute.host1", "spawn_server", server_id=..., timeout=60)
        await bus.cast("compute", "refresh", server_id=...)
        await bus.publish("compute.instance.create.end", {"server_id": ...}, publisher="compute")
        await bus.subscribe("compute.instance.*", on_event, group="telemetry")

What each verb means, and the errors, are in interface.py (read next); the wire format is in
messages.py; the transports are inproc.py and amqp.py. This package knows nothing about the
services that use it: a message is a method name and JSON keyword arguments.
"""

from __future__ import annotations

import urllib.parse

from .errors import BusError, BusTimeout, RemoteError
from .interface import DEFAULT_EXCHANGE_PREFIX, Bus
from .messages import Event

__all__ = ["Bus", "BusError", "BusTimeout", "Event", "RemoteError", "connect"]


def connect(
    url: str, *, exchange_prefix: str = DEFAULT_EXCHANGE_PREFIX, timeout: float = 10.0
) -> Bus:
    """A Bus for `url`, not yet started (`await bus.start()` or `async with bus`).

    "memory://" or "memory://NAME": the in-process transport; buses of one process with the
    same NAME and prefix reach each other. "amqp://user:password@host:port/vhost" (or
    "amqps://"): RabbitMQ. exchange_prefix names the broker objects so deployments and tests
    sharing a broker stay apart; timeout bounds connecting and each broker operation (AMQP).
    """
    parts = urllib.parse.urlsplit(url)
    # Imported here so that all-in-one never loads aio-pika.
    if parts.scheme == "memory":
        from .inproc import InProcBus

        name = (parts.netloc + parts.path).strip("/")
        return InProcBus(name, exchange_prefix=exchange_prefix)
    if parts.scheme in ("amqp", "amqps"):
        from .amqp import AmqpBus

        return AmqpBus(url, exchange_prefix=exchange_prefix, timeout=timeout)
    raise ValueError(f"unknown bus URL scheme {parts.scheme!r}: use memory:// or amqp://")
