"""The in-process transport, for all-in-one: every Bus of one process connected to the same
"memory://NAME" (and exchange prefix) meets at one `_Broker` and talks through it.

The broker mimics what RabbitMQ does for amqp.py, so both transports behave alike: a target
served several times hands out requests round robin; a request or event that matches nobody
is dropped; fan-out subscriptions each get every matching event and a (group, pattern) hands
each event to one member in turn. Bodies are the same JSON bytes as on AMQP, so a handler
never shares a mutable object with its caller.

Delivery never runs a handler inline: the receiving bus runs it in a task (interface.py), so
a sender is never blocked by, or re-entered from, a handler. There is no queueing and no
flow control; a flood of casts becomes a flood of tasks.

Brokers are kept per name in a weak registry and bound to the event loop that created them;
a bus from a new loop (a new test) gets a fresh broker. Read amqp.py for the real broker.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

from .interface import DEFAULT_EXCHANGE_PREFIX, Bus, EventHandler
from .messages import topic_matches

__all__ = ["InProcBus"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Server:
    bus: InProcBus
    endpoint: object


@dataclass(eq=False)
class _Subscription:
    bus: InProcBus
    pattern: str
    handler: EventHandler


@dataclass(eq=False)
class _Broker:
    """Where the buses of one name meet. Plain lists: targets and subscriptions are few."""

    loop: asyncio.AbstractEventLoop
    buses: dict[str, InProcBus] = field(default_factory=dict)  # reply address -> bus
    servers: dict[str, list[_Server]] = field(default_factory=dict)  # target -> servers
    fanout: list[_Subscription] = field(default_factory=list)
    groups: dict[tuple[str, str], list[_Subscription]] = field(default_factory=dict)
    turns: dict[Any, int] = field(default_factory=dict)  # round-robin position per key

    def next_in_turn(self, key: Any, members: list[Any]) -> Any:
        position = self.turns.get(key, 0) % len(members)
        self.turns[key] = position + 1
        return members[position]

    def remove_bus(self, bus: InProcBus) -> None:
        self.buses.pop(bus.address, None)
        for target, servers in list(self.servers.items()):
            servers[:] = [s for s in servers if s.bus is not bus]
            if not servers:
                del self.servers[target]
        self.fanout[:] = [s for s in self.fanout if s.bus is not bus]
        for key, members in list(self.groups.items()):
            members[:] = [s for s in members if s.bus is not bus]
            if not members:
                del self.groups[key]


_brokers: weakref.WeakValueDictionary[tuple[str, str], _Broker] = weakref.WeakValueDictionary()


def _broker_for(name: str, exchange_prefix: str) -> _Broker:
    loop = asyncio.get_running_loop()
    broker = _brokers.get((name, exchange_prefix))
    if broker is None or broker.loop is not loop:
        broker = _Broker(loop)
        _brokers[(name, exchange_prefix)] = broker
    return broker


class InProcBus(Bus):
    """A Bus whose broker is an object in this process; `name` picks which one."""

    def __init__(self, name: str = "", *, exchange_prefix: str = DEFAULT_EXCHANGE_PREFIX) -> None:
        super().__init__(exchange_prefix=exchange_prefix)
        self.name = name
        self.address = uuid.uuid4().hex
        self._broker: _Broker | None = None

    def __repr__(self) -> str:
        return f"<InProcBus memory://{self.name} prefix={self.exchange_prefix} {self._state}>"

    def _require_broker(self) -> _Broker:
        if self._broker is None:
            raise RuntimeError("the in-process bus is not open")
        return self._broker

    async def _open(self) -> None:
        self._broker = _broker_for(self.name, self.exchange_prefix)
        self._broker.buses[self.address] = self

    async def _send_request(
        self, target: str, body: bytes, *, correlation_id: str | None, ttl: float | None
    ) -> None:
        broker = self._require_broker()
        servers = broker.servers.get(target)
        if not servers:
            log.debug("nobody serves %s; request dropped", target)
            return
        server: _Server = broker.next_in_turn(("rpc", target), servers)
        server.bus._deliver_request(
            target,
            server.endpoint,
            body,
            reply_to=self.address if correlation_id else None,
            correlation_id=correlation_id,
        )

    async def _send_reply(self, reply_to: str, correlation_id: str | None, body: bytes) -> None:
        caller = self._require_broker().buses.get(reply_to)
        if caller is None:
            log.debug("caller %s is gone; reply dropped", reply_to)
            return
        caller._deliver_reply(correlation_id, body)

    async def _send_event(self, event_type: str, body: bytes) -> None:
        broker = self._require_broker()
        chosen = [s for s in broker.fanout if topic_matches(s.pattern, event_type)]
        for (group, pattern), members in broker.groups.items():
            if topic_matches(pattern, event_type):
                chosen.append(broker.next_in_turn(("group", group, pattern), members))
        for subscription in chosen:
            subscription.bus._deliver_event(subscription.pattern, subscription.handler, body)

    async def _listen_requests(self, target: str, endpoint: object) -> None:
        broker = self._require_broker()
        broker.servers.setdefault(target, []).append(_Server(self, endpoint))

    async def _listen_events(self, pattern: str, handler: EventHandler, group: str | None) -> None:
        broker = self._require_broker()
        subscription = _Subscription(self, pattern, handler)
        if group is None:
            broker.fanout.append(subscription)
        else:
            broker.groups.setdefault((group, pattern), []).append(subscription)

    async def _stop_listening(self) -> None:
        if self._broker is not None:
            self._broker.remove_bus(self)

    async def _disconnect(self) -> None:
        if self._broker is not None:
            self._broker.remove_bus(self)
            self._broker = None
