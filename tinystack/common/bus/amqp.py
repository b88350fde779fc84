"""The AMQP 0-9-1 transport (RabbitMQ, via aio-pika), for deployments over several nodes.

Broker objects, all non-durable and named with the exchange prefix P (default "tinystack"):

- exchange "P.rpc" (topic): requests, routing key = target ("compute", "compute.host1").
  `serve(target)` consumes queue "P.rpc.<target>" bound with key <target>; servers of one
  target share that queue, so RabbitMQ hands requests round robin to them. The queue is
  auto-delete: when its last server goes, requests to the target are dropped and callers
  time out rather than wake a restarted server with stale work. A call's message expires
  after the call's timeout.
- exchange "P.notifications" (topic): events, routing key = event type. A fan-out
  subscription owns an exclusive queue "P.events.<random>"; a group shares the auto-delete
  queue "P.events.<group>:<pattern>".
- replies go through the default exchange to this bus's exclusive queue "P.reply.<random>",
  matched to the call by correlation id.

Messages are acked as soon as a handler task takes them (at most once, as oslo.messaging
does); a message arriving while the bus closes is rejected back to the queue for another
server. The connection is `connect_robust`, which redeclares all of the above after a
broker restart; calls in flight during an outage time out. Every broker operation is bounded
by `timeout` seconds. No publisher confirms.

The semantics shared with the in-process transport are in interface.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterator

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from .errors import BusError
from .interface import DEFAULT_EXCHANGE_PREFIX, Bus, EventHandler

__all__ = ["AmqpBus", "redact_url"]

log = logging.getLogger(__name__)

_Callback = Callable[[AbstractIncomingMessage], Awaitable[None]]


def redact_url(url: str) -> str:
    """`url` with its password replaced by "***", for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


@contextlib.contextmanager
def _broker_errors(what: str) -> Iterator[None]:
    """Turn aio-pika and socket errors into BusError; TimeoutError passes unchanged."""
    try:
        yield
    except TimeoutError:
        raise
    except CONNECTION_EXCEPTIONS as exc:
        raise BusError(f"{what}: {type(exc).__name__}: {exc}") from exc


class AmqpBus(Bus):
    """A Bus on a RabbitMQ broker at `url` ("amqp://user:password@host:5672/vhost").

    timeout: seconds allowed for connecting and for each broker operation.
    prefetch_count: deliveries RabbitMQ may push to this connection ahead of the acks.
    """

    def __init__(
        self,
        url: str,
        *,
        exchange_prefix: str = DEFAULT_EXCHANGE_PREFIX,
        timeout: float = 10.0,
        prefetch_count: int = 64,
    ) -> None:
        super().__init__(exchange_prefix=exchange_prefix)
        self.url = url
        self.timeout = timeout
        self.prefetch_count = prefetch_count
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._rpc_exchange: AbstractExchange | None = None
        self._event_exchange: AbstractExchange | None = None
        self._reply_queue: AbstractQueue | None = None
        self._consumers: list[tuple[AbstractQueue, str]] = []

    def __repr__(self) -> str:
        return f"<AmqpBus {redact_url(self.url)} prefix={self.exchange_prefix} {self._state}>"

    # -- connecting -----------------------------------------------------------------------

    async def _open(self) -> None:
        where = redact_url(self.url)
        try:
            with _broker_errors(f"cannot connect to {where}"):
                self._connection = await aio_pika.connect_robust(
                    self.url,
                    timeout=self.timeout,
                    client_properties={"connection_name": f"tinystack bus {self.exchange_prefix}"},
                )
                await self._declare()
        except TimeoutError:
            raise BusError(f"cannot connect to {where} within {self.timeout} s") from None

    async def _declare(self) -> None:
        assert self._connection is not None
        prefix, timeout = self.exchange_prefix, self.timeout
        channel = await self._connection.channel(publisher_confirms=False)
        self._channel = channel
        await channel.set_qos(prefetch_count=self.prefetch_count, timeout=timeout)
        self._rpc_exchange = await channel.declare_exchange(
            f"{prefix}.rpc", aio_pika.ExchangeType.TOPIC, durable=False, timeout=timeout
        )
        self._event_exchange = await channel.declare_exchange(
            f"{prefix}.notifications", aio_pika.ExchangeType.TOPIC, durable=False, timeout=timeout
        )
        self._reply_queue = await channel.declare_queue(
            f"{prefix}.reply.{uuid.uuid4().hex}", exclusive=True, auto_delete=True, timeout=timeout
        )
        await self._consume(self._reply_queue, self._on_reply, no_ack=True)

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        self._channel = self._rpc_exchange = self._event_exchange = self._reply_queue = None
        if connection is not None:
            with _broker_errors("cannot close the connection"):
                await asyncio.wait_for(connection.close(), self.timeout)

    # -- sending --------------------------------------------------------------------------

    async def _send_request(
        self, target: str, body: bytes, *, correlation_id: str | None, ttl: float | None
    ) -> None:
        assert self._rpc_exchange is not None and self._reply_queue is not None
        message = self._message(
            body,
            correlation_id=correlation_id,
            reply_to=self._reply_queue.name if correlation_id else None,
            expiration=ttl,
        )
        with _broker_errors(f"cannot send to {target}"):
            await self._rpc_exchange.publish(
                message, routing_key=target, mandatory=False, timeout=self.timeout
            )

    async def _send_reply(self, reply_to: str, correlation_id: str | None, body: bytes) -> None:
        assert self._channel is not None
        message = self._message(body, correlation_id=correlation_id)
        with _broker_errors(f"cannot reply to {reply_to}"):
            await self._channel.default_exchange.publish(
                message, routing_key=reply_to, mandatory=False, timeout=self.timeout
            )

    async def _send_event(self, event_type: str, body: bytes) -> None:
        assert self._event_exchange is not None
        with _broker_errors(f"cannot publish {event_type}"):
            await self._event_exchange.publish(
                self._message(body), routing_key=event_type, mandatory=False, timeout=self.timeout
            )

    @staticmethod
    def _message(body: bytes, **properties: object) -> aio_pika.Message:
        return aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            message_id=uuid.uuid4().hex,
            **properties,  # type: ignore[arg-type]
        )

    # -- receiving ------------------------------------------------------------------------

    async def _listen_requests(self, target: str, endpoint: object) -> None:
        async def on_request(message: AbstractIncomingMessage) -> None:
            taken = self._deliver_request(
                target,
                endpoint,
                message.body,
                reply_to=message.reply_to,
                correlation_id=message.correlation_id,
            )
            await self._settle(message, taken)

        queue = await self._bound_queue(
            self._rpc_exchange, f"{self.exchange_prefix}.rpc.{target}", target, exclusive=False
        )
        await self._consume(queue, on_request)

    async def _listen_events(self, pattern: str, handler: EventHandler, group: str | None) -> None:
        async def on_event(message: AbstractIncomingMessage) -> None:
            await self._settle(message, self._deliver_event(pattern, handler, message.body))

        if group is None:
            name, exclusive = f"{self.exchange_prefix}.events.{uuid.uuid4().hex}", True
        else:
            name, exclusive = f"{self.exchange_prefix}.events.{group}:{pattern}", False
        queue = await self._bound_queue(self._event_exchange, name, pattern, exclusive=exclusive)
        await self._consume(queue, on_event)

    async def _bound_queue(
        self, exchange: AbstractExchange | None, name: str, routing_key: str, *, exclusive: bool
    ) -> AbstractQueue:
        assert self._channel is not None and exchange is not None
        with _broker_errors(f"cannot declare queue {name}"):
            queue = await self._channel.declare_queue(
                name, durable=False, exclusive=exclusive, auto_delete=True, timeout=self.timeout
            )
            await queue.bind(exchange, routing_key=routing_key, timeout=self.timeout)
        return queue

    async def _consume(self, queue: AbstractQueue, callback: _Callback, *, no_ack: bool = False) -> None:
        with _broker_errors(f"cannot consume from {queue.name}"):
            tag = await queue.consume(callback, no_ack=no_ack, timeout=self.timeout)
        self._consumers.append((queue, tag))

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        self._deliver_reply(message.correlation_id, message.body)

    async def _settle(self, message: AbstractIncomingMessage, taken: bool) -> None:
        try:
            if taken:
                await message.ack()
            else:
                await message.reject(requeue=True)
        except Exception:
            log.warning("cannot settle message %s", message.message_id, exc_info=True)

    async def _stop_listening(self) -> None:
        consumers, self._consumers = self._consumers, []
        try:
            async with asyncio.timeout(self.timeout):
                for queue, tag in consumers:
                    try:
                        await queue.cancel(tag)
                    except CONNECTION_EXCEPTIONS:
                        log.warning("cannot cancel the consumer of %s", queue.name, exc_info=True)
        except TimeoutError:
            log.warning("consumers not cancelled within %s s; closing anyway", self.timeout)
