"""The `Bus` interface, and the half of it that does not depend on the transport.

Services code against `Bus`: `call`/`cast`/`serve` for requests to a target ("compute" reaches
one of its servers, round robin; "compute.host1" reaches that one), `publish`/`subscribe` for
notifications, `statistics()` for operators. This module does what both transports share:
encoding, matching replies to pending calls by correlation id, deadlines, running endpoint
methods and event handlers in tracked tasks, turning a remote exception into a reply, and
counting.

A transport only moves bytes. It implements the `_open`, `_send_request`, `_send_reply`,
`_send_event`, `_listen_requests`, `_listen_events`, `_stop_listening` and `_disconnect` hooks
and hands what arrives to `_deliver_request`, `_deliver_reply` and `_deliver_event`. Delivery
is at most once: a request whose server dies is lost and its caller times out.

Handlers get keyword arguments exactly as the caller sent them; to let callers add arguments
later without breaking old servers, a served method should accept `**_`.

Wire shapes are in messages.py; inproc.py is the simplest transport, amqp.py the real one.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from .errors import BusError, BusTimeout, NoSuchMethod
from .messages import (
    Event,
    check_name,
    check_pattern,
    decode_reply,
    decode_request,
    encode_error,
    encode_event,
    encode_request,
    encode_result,
)

__all__ = ["DEFAULT_EXCHANGE_PREFIX", "Bus", "EventHandler", "find_method"]

log = logging.getLogger(__name__)

DEFAULT_EXCHANGE_PREFIX = "tinystack"

EventHandler = Callable[[Event], Awaitable[None]]

_COUNTERS = (
    "calls_sent",  # call() invoked
    "calls_handled",  # requests wanting a reply that a served method finished (ok or raised)
    "calls_timed_out",  # call() gave up with BusTimeout
    "casts_sent",
    "casts_handled",
    "events_sent",
    "events_handled",  # handler invocations finished (ok or raised)
    "handler_errors",  # served methods and event handlers that raised
)


def find_method(endpoint: object, name: str) -> Callable[..., Awaitable[Any]]:
    """The public async method `name` of `endpoint`, or raise NoSuchMethod."""
    method = None if name.startswith("_") else getattr(endpoint, name, None)
    if method is None or not inspect.iscoroutinefunction(method):
        raise NoSuchMethod(f"{type(endpoint).__name__} has no public async method {name!r}")
    return method


@dataclass
class _PendingCall:
    target: str
    method: str
    future: asyncio.Future[bytes]


class Bus(abc.ABC):
    """A connection to the message bus; see the module docstring for the semantics.

    Use it as `async with connect(url) as bus:` or call `start()` and `close()` yourself.
    `exchange_prefix` names the broker objects (AMQP exchanges, in-process namespaces), so
    deployments and tests sharing one broker stay apart.
    """

    def __init__(self, *, exchange_prefix: str = DEFAULT_EXCHANGE_PREFIX) -> None:
        check_name("exchange prefix", exchange_prefix)
        self.exchange_prefix = exchange_prefix
        self._state = "new"  # new -> started -> closed
        self._pending: dict[str, _PendingCall] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._counts = dict.fromkeys(_COUNTERS, 0)

    async def __aenter__(self) -> Bus:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect; raises BusError if the broker cannot be reached."""
        if self._state != "new":
            raise BusError(f"cannot start a bus that is {self._state}")
        try:
            await self._open()
        except BaseException:
            await self._best_effort(self._disconnect(), "disconnect after a failed start")
            raise
        self._state = "started"

    async def close(self) -> None:
        """Stop consuming, fail pending calls with BusError, cancel running handlers.

        Idempotent. Servers and subscriptions of this bus are gone afterwards.
        """
        if self._state == "closed":
            return
        self._state = "closed"
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(
                    BusError(f"bus closed while waiting for {pending.target} to answer {pending.method}")
                )
        await self._best_effort(self._stop_listening(), "stop listening")
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._best_effort(self._disconnect(), "disconnect")

    # -- requests -------------------------------------------------------------------------

    async def call(self, target: str, method: str, *, timeout: float = 30.0, **kwargs: Any) -> Any:
        """Run `method(**kwargs)` on a server of `target` and return its JSON result.

        Raises BusTimeout when no reply comes within `timeout` seconds, RemoteError when the
        method raised, BusError when this bus closes meanwhile, TypeError when an argument is
        not JSON.
        """
        self._check_started()
        check_name("target", target)
        body = encode_request(method, kwargs)
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = _PendingCall(target, method, future)
        self._counts["calls_sent"] += 1
        sent = False
        try:
            async with asyncio.timeout(timeout):
                await self._send_request(target, body, correlation_id=correlation_id, ttl=timeout)
                sent = True
                reply = await future
        except TimeoutError:
            self._counts["calls_timed_out"] += 1
            what = "no reply from" if sent else "could not send to"
            raise BusTimeout(f"{what} {target} to {method} within {float(timeout)} s") from None
        finally:
            del self._pending[correlation_id]
            if future.done() and not future.cancelled():
                future.exception()  # mark retrieved: close() may fail it while we still send
        return decode_reply(reply, target=target, method=method)

    async def cast(self, target: str, method: str, **kwargs: Any) -> None:
        """Send `method(**kwargs)` to a server of `target`; no reply, no error back.

        A failure on the server is logged there. A cast to a target nobody serves is dropped.
        """
        self._check_started()
        check_name("target", target)
        body = encode_request(method, kwargs)
        self._counts["casts_sent"] += 1
        await self._send_request(target, body, correlation_id=None, ttl=None)

    async def serve(self, target: str, endpoint: object) -> None:
        """Answer requests for `target` with the public async methods of `endpoint`.

        Several servers of one target share its requests (competing consumers). Serving
        lasts until `close()`.
        """
        self._check_started()
        check_name("target", target)
        await self._listen_requests(target, endpoint)

    # -- notifications --------------------------------------------------------------------

    async def publish(
        self, event_type: str, payload: dict[str, Any] | BaseModel, *, publisher: str = ""
    ) -> None:
        """Send an event to every subscription whose pattern matches `event_type`."""
        self._check_started()
        check_name("event type", event_type)
        body = encode_event(event_type, payload, publisher)
        self._counts["events_sent"] += 1
        await self._send_event(event_type, body)

    async def subscribe(
        self, pattern: str, handler: EventHandler, *, group: str | None = None
    ) -> None:
        """Run `handler(event)` for events matching `pattern` ("compute.instance.*", "#").

        group=None: this subscription sees every matching event (fan-out). With a group, the
        subscriptions sharing (group, pattern) across all processes share the events: each
        goes to one of them. Events published while nobody subscribes are lost. A handler
        that raises is logged; the subscription keeps running.
        """
        self._check_started()
        check_pattern(pattern)
        if group is not None:
            check_name("group", group)
        await self._listen_events(pattern, handler, group)

    def statistics(self) -> dict[str, int]:
        """Counters since start, plus calls_pending and handlers_running right now."""
        return {
            **self._counts,
            "calls_pending": len(self._pending),
            "handlers_running": len(self._tasks),
        }

    # -- what transports hand in ----------------------------------------------------------

    def _deliver_request(
        self,
        target: str,
        endpoint: object,
        body: bytes,
        *,
        reply_to: str | None,
        correlation_id: str | None,
    ) -> bool:
        """Run a request in a task; False (caller may requeue it) if this bus is closing."""
        if self._state != "started":
            return False
        self._spawn(self._handle_request(target, endpoint, body, reply_to, correlation_id))
        return True

    def _deliver_reply(self, correlation_id: str | None, body: bytes) -> None:
        pending = self._pending.get(correlation_id or "")
        if pending is None or pending.future.done():
            log.debug("dropping a reply nobody waits for (correlation id %s)", correlation_id)
            return
        pending.future.set_result(body)

    def _deliver_event(self, pattern: str, handler: EventHandler, body: bytes) -> bool:
        if self._state != "started":
            return False
        self._spawn(self._handle_event(pattern, handler, body))
        return True

    # -- the transport's part -------------------------------------------------------------

    @abc.abstractmethod
    async def _open(self) -> None:
        """Connect and get ready to receive replies."""

    @abc.abstractmethod
    async def _send_request(
        self, target: str, body: bytes, *, correlation_id: str | None, ttl: float | None
    ) -> None:
        """Route a request to one server of `target`; a reply is wanted if correlation_id.

        ttl: seconds after which nobody should start on it any more (None: no limit).
        """

    @abc.abstractmethod
    async def _send_reply(self, reply_to: str, correlation_id: str | None, body: bytes) -> None:
        """Send a reply to the address a request carried."""

    @abc.abstractmethod
    async def _send_event(self, event_type: str, body: bytes) -> None:
        """Route an event to every matching subscription."""

    @abc.abstractmethod
    async def _listen_requests(self, target: str, endpoint: object) -> None:
        """Start handing requests for `target` to `_deliver_request`."""

    @abc.abstractmethod
    async def _listen_events(self, pattern: str, handler: EventHandler, group: str | None) -> None:
        """Start handing matching events to `_deliver_event`."""

    @abc.abstractmethod
    async def _stop_listening(self) -> None:
        """Stop every consumer of this bus; requests not yet taken go to other servers."""

    @abc.abstractmethod
    async def _disconnect(self) -> None:
        """Release the connection; must work after a failed or partial `_open`."""

    # -- internals ------------------------------------------------------------------------

    def _check_started(self) -> None:
        if self._state == "new":
            raise BusError("the bus is not started; call start() first")
        if self._state == "closed":
            raise BusError("the bus is closed")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle_request(
        self,
        target: str,
        endpoint: object,
        body: bytes,
        reply_to: str | None,
        correlation_id: str | None,
    ) -> None:
        kind = "call" if reply_to else "cast"
        method = "?"
        try:
            method, kwargs = decode_request(body)
            result = await find_method(endpoint, method)(**kwargs)
            reply = encode_result(result) if reply_to else b""
        except Exception as exc:
            self._counts["handler_errors"] += 1
            if reply_to:
                log.debug("call %s to %s raised", method, target, exc_info=True)
            else:
                log.exception("cast %s to %s failed", method, target)
            reply = encode_error(exc)
        self._counts[f"{kind}s_handled"] += 1
        if reply_to:
            await self._best_effort(
                self._send_reply(reply_to, correlation_id, reply), f"reply to {method} on {target}"
            )

    async def _handle_event(self, pattern: str, handler: EventHandler, body: bytes) -> None:
        event_type = "?"
        try:
            event = Event.model_validate_json(body)
            event_type = event.event_type
            await handler(event)
        except Exception:
            self._counts["handler_errors"] += 1
            log.exception("handler %r for %s failed on event %s", handler, pattern, event_type)
        self._counts["events_handled"] += 1

    async def _best_effort(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        try:
            await coro
        except Exception:
            log.warning("bus: could not %s", what, exc_info=True)
