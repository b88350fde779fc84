"""The bus contract, run against both transports: in-process and RabbitMQ.

RabbitMQ is taken from TINYSTACK_TEST_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/).
The AMQP cases are never skipped: if the broker is down they fail, loudly. Each test gets its
own exchange prefix, and deletes its exchanges afterwards, so parallel runs do not meet.
Waits are events with a deadline, never sleeps.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import pydantic
import pytest

import tinystack.common.bus as bus_pkg
from tinystack.common.bus import Bus, BusError, BusTimeout, Event, RemoteError, connect
from tinystack.common.bus import amqp, errors, inproc, interface, messages
from tinystack.common.bus.messages import topic_matches

AMQP_URL = os.environ.get("TINYSTACK_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
DEADLINE = 5.0  # seconds any expected delivery may take before the test fails

MakeBus = Callable[[], Awaitable[Bus]]


async def _delete_exchanges(prefix: str) -> None:
    connection = await aio_pika.connect(AMQP_URL, timeout=DEADLINE)
    async with connection:
        channel = await connection.channel()
        for name in (f"{prefix}.rpc", f"{prefix}.notifications"):
            await channel.exchange_delete(name, timeout=DEADLINE)


@pytest.fixture(params=["memory", "amqp"])
async def make_bus(request: pytest.FixtureRequest) -> AsyncIterator[MakeBus]:
    """A factory of started buses that reach each other (same broker, same prefix)."""
    prefix = f"tinystack-test-{uuid.uuid4().hex[:12]}"
    url = f"memory://{prefix}" if request.param == "memory" else AMQP_URL
    buses: list[Bus] = []

    async def make() -> Bus:
        bus = connect(url, exchange_prefix=prefix, timeout=DEADLINE)
        await bus.start()
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        await bus.close()
    if request.param == "amqp" and buses:
        await _delete_exchanges(prefix)


async def within_deadline(awaitable: Awaitable[object]) -> None:
    await asyncio.wait_for(awaitable, DEADLINE)


class Flavor(pydantic.BaseModel):
    name: str
    ram_mb: int
    created_at: dt.datetime


class Endpoint:
    """A served endpoint with knobs; answers `whoami` with its name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.remembered: list[object] = []
        self.remembered_changed = asyncio.Event()
        self.blocked = asyncio.Event()
        self.failed = asyncio.Event()

    async def whoami(self, **_: object) -> str:
        return self.name

    async def echo(self, **kwargs: object) -> dict[str, object]:
        return kwargs

    async def remember(self, value: object, **_: object) -> None:
        self.remembered.append(value)
        self.remembered_changed.set()

    async def fail(self, **_: object) -> None:
        self.failed.set()
        raise ValueError("flavor m1.huge is too big")

    async def block(self, **_: object) -> None:
        self.blocked.set()
        await asyncio.Event().wait()

    def not_async(self) -> str:
        return "sync methods are not served"

    async def _private(self) -> str:
        return "private methods are not served"


class Inbox:
    """An event handler that keeps what it got and wakes waiters on each event."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Condition()

    async def __call__(self, event: Event) -> None:
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    @property
    def types(self) -> list[str]:
        return [event.event_type for event in self.events]

    async def wait_for(self, predicate: Callable[[Inbox], bool]) -> None:
        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self))

        await within_deadline(wait())


# -- requests ---------------------------------------------------------------------------


async def test_call_returns_the_value(make_bus: MakeBus) -> None:
    server, client = await make_bus(), await make_bus()
    await server.serve("compute.host1", Endpoint("host1"))

    assert await client.call("compute.host1", "whoami", timeout=DEADLINE) == "host1"
    assert await server.call("compute.host1", "whoami", timeout=DEADLINE) == "host1"


async def test_kwargs_round_trip_as_json(make_bus: MakeBus) -> None:
    server, client = await make_bus(), await make_bus()
    await server.serve("compute", Endpoint("host1"))
    created = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    args = {
        "server_id": str(uuid.uuid4()),
        "nested": {"ports": [{"mac": "fa:16:3e:00:00:01", "fixed_ips": ["10.0.0.5"]}]},
        "count": 3,
        "ratio": 1.5,
        "enabled": True,
        "note": None,
        "name": "ünïcode ✓",
        "flavor": Flavor(name="m1.tiny", ram_mb=512, created_at=created),
    }

    result = await client.call("compute", "echo", timeout=DEADLINE, **args)

    assert result == {
        **args,
        "flavor": {"name": "m1.tiny", "ram_mb": 512, "created_at": "2024-05-01T12:00:00Z"},
    }


async def test_non_json_argument_fails_at_the_caller(make_bus: MakeBus) -> None:
    client = await make_bus()
    with pytest.raises(TypeError):
        await client.call("compute", "echo", timeout=DEADLINE, blob=object())


async def test_host_target_reaches_that_host_and_service_target_round_robins(
    make_bus: MakeBus,
) -> None:
    host1, host2, client = await make_bus(), await make_bus(), await make_bus()
    for bus, name in ((host1, "host1"), (host2, "host2")):
        endpoint = Endpoint(name)
        await bus.serve("compute", endpoint)
        await bus.serve(f"compute.{name}", endpoint)

    for _ in range(3):
        assert await client.call("compute.host1", "whoami", timeout=DEADLINE) == "host1"
        assert await client.call("compute.host2", "whoami", timeout=DEADLINE) == "host2"
    answers = [await client.call("compute", "whoami", timeout=DEADLINE) for _ in range(6)]
    assert sorted(answers) == ["host1"] * 3 + ["host2"] * 3


async def test_cast_is_delivered(make_bus: MakeBus) -> None:
    server, client = await make_bus(), await make_bus()
    endpoint = Endpoint("host1")
    await server.serve("compute.host1", endpoint)

    assert await client.cast("compute.host1", "remember", value={"server_id": "s1"}) is None

    await within_deadline(endpoint.remembered_changed.wait())
    assert endpoint.remembered == [{"server_id": "s1"}]


async def test_failing_cast_is_logged_and_server_keeps_serving(
    make_bus: MakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    server, client = await make_bus(), await make_bus()
    endpoint = Endpoint("host1")
    await server.serve("compute.host1", endpoint)

    with caplog.at_level(logging.ERROR, logger=interface.__name__):
        await client.cast("compute.host1", "fail")
        await within_deadline(endpoint.failed.wait())
        assert await client.call("compute.host1", "whoami", timeout=DEADLINE) == "host1"

    [record] = [r for r in caplog.records if r.name == interface.__name__]
    assert record.getMessage() == "cast fail to compute.host1 failed"
    assert "flavor m1.huge is too big" in caplog.text
    assert server.statistics()["handler_errors"] == 1


async def test_remote_exception_becomes_remote_error(make_bus: MakeBus) -> None:
    server, client = await make_bus(), await make_bus()
    await server.serve("compute.host1", Endpoint("host1"))

    with pytest.raises(RemoteError) as caught:
        await client.call("compute.host1", "fail", timeout=DEADLINE)

    error = caught.value
    assert (error.exc_type, error.message) == ("ValueError", "flavor m1.huge is too big")
    assert (error.target, error.method) == ("compute.host1", "fail")
    assert str(error) == "ValueError: flavor m1.huge is too big (raised by fail on compute.host1)"
    assert "Traceback" in error.remote_traceback
    assert await client.call("compute.host1", "whoami", timeout=DEADLINE) == "host1"


@pytest.mark.parametrize("method", ["no_such_method", "_private", "not_async", "__init__"])
async def test_only_public_async_methods_are_served(make_bus: MakeBus, method: str) -> None:
    server, client = await make_bus(), await make_bus()
    await server.serve("compute.host1", Endpoint("host1"))

    with pytest.raises(RemoteError) as caught:
        await client.call("compute.host1", method, timeout=DEADLINE)

    assert caught.value.exc_type == "NoSuchMethod"
    assert repr(method) in caught.value.message


@pytest.mark.slow
async def test_call_to_nobody_times_out_with_a_clear_message(make_bus: MakeBus) -> None:
    client = await make_bus()
    loop = asyncio.get_running_loop()
    began = loop.time()

    with pytest.raises(BusTimeout) as caught:
        await client.call("compute.host9", "spawn_server", timeout=0.5, server_id="s1")

    assert str(caught.value) == "no reply from compute.host9 to spawn_server within 0.5 s"
    assert isinstance(caught.value, TimeoutError)
    assert 0.5 <= loop.time() - began < 1.5
    assert client.statistics()["calls_timed_out"] == 1


@pytest.mark.slow
async def test_server_stopped_mid_call_leaves_the_caller_timing_out(make_bus: MakeBus) -> None:
    server, client = await make_bus(), await make_bus()
    endpoint = Endpoint("host1")
    await server.serve("compute.host1", endpoint)
    call = asyncio.create_task(client.call("compute.host1", "block", timeout=0.5))
    await within_deadline(endpoint.blocked.wait())

    await server.close()

    with pytest.raises(BusTimeout, match="no reply from compute.host1 to block within 0.5 s"):
        await call
    with pytest.raises(BusTimeout):
        await client.call("compute.host1", "whoami", timeout=0.2)


async def test_close_fails_pending_calls(make_bus: MakeBus) -> None:
    server, client = await make_bus(), await make_bus()
    endpoint = Endpoint("host1")
    await server.serve("compute.host1", endpoint)
    call = asyncio.create_task(client.call("compute.host1", "block", timeout=DEADLINE))
    await within_deadline(endpoint.blocked.wait())

    await client.close()

    with pytest.raises(BusError, match="closed while waiting for compute.host1") as caught:
        await within_deadline(call)
    assert not isinstance(caught.value, BusTimeout)
    await client.close()  # idempotent
    with pytest.raises(BusError, match="closed"):
        await client.call("compute.host1", "whoami")


# -- notifications ----------------------------------------------------------------------


async def test_publish_reaches_every_fanout_subscriber_and_one_group_member(
    make_bus: MakeBus,
) -> None:
    publisher, a, b = await make_bus(), await make_bus(), await make_bus()
    fanout_a, fanout_b, member_a, member_b = Inbox(), Inbox(), Inbox(), Inbox()
    await a.subscribe("compute.instance.create.end", fanout_a)
    await b.subscribe("compute.instance.create.end", fanout_b)
    await a.subscribe("compute.instance.create.end", member_a, group="telemetry")
    await b.subscribe("compute.instance.create.end", member_b, group="telemetry")

    for n in range(4):
        await publisher.publish("compute.instance.create.end", {"n": n}, publisher="compute.host1")

    await fanout_a.wait_for(lambda inbox: len(inbox.events) == 4)
    await fanout_b.wait_for(lambda inbox: len(inbox.events) == 4)
    await member_a.wait_for(lambda inbox: len(inbox.events) + len(member_b.events) >= 4)
    assert sorted(e.payload["n"] for e in fanout_a.events) == [0, 1, 2, 3]
    assert sorted(e.payload["n"] for e in fanout_b.events) == [0, 1, 2, 3]
    assert sorted(e.payload["n"] for e in member_a.events + member_b.events) == [0, 1, 2, 3]
    assert member_a.events and member_b.events  # the group shares the work

    event = fanout_a.events[0]
    assert event.publisher == "compute.host1"
    assert dt.datetime.fromisoformat(event.timestamp).utcoffset() == dt.timedelta(0)
    assert len({e.message_id for e in fanout_a.events}) == 4


async def test_wildcard_patterns_match_as_amqp_topics(make_bus: MakeBus) -> None:
    publisher, subscriber = await make_bus(), await make_bus()
    one_word, any_words, everything = Inbox(), Inbox(), Inbox()
    await subscriber.subscribe("compute.instance.*.end", one_word)
    await subscriber.subscribe("compute.#", any_words)
    await subscriber.subscribe("#", everything)
    sent = ["compute.instance.create.start", "volume.attach", "compute", "compute.instance.end"]
    last = "compute.instance.delete.end"  # matches all three, and arrives after the rest

    for event_type in [*sent, last]:
        await publisher.publish(event_type, {})

    for inbox in (one_word, any_words, everything):
        await inbox.wait_for(lambda inbox: last in inbox.types)
    assert one_word.types == [last]
    assert any_words.types == [
        "compute.instance.create.start", "compute", "compute.instance.end", last
    ]
    assert everything.types == [*sent, last]


async def test_failing_event_handler_is_logged_and_keeps_subscribed(
    make_bus: MakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    bus = await make_bus()
    inbox = Inbox()

    async def explode(event: Event) -> None:
        await inbox(event)
        if event.payload.get("explode"):
            raise RuntimeError("handler bug")

    await bus.subscribe("volume.*", explode)
    with caplog.at_level(logging.ERROR, logger=interface.__name__):
        await bus.publish("volume.attach", {"explode": True})
        await bus.publish("volume.detach", {})
        await inbox.wait_for(lambda inbox: "volume.detach" in inbox.types)

    assert "handler bug" in caplog.text
    assert bus.statistics()["handler_errors"] == 1


# -- lifecycle, statistics, names -------------------------------------------------------


async def test_statistics_count_what_was_sent_and_handled(make_bus: MakeBus) -> None:
    server, client = await make_bus(), await make_bus()
    endpoint, inbox = Endpoint("host1"), Inbox()
    await server.serve("compute.host1", endpoint)
    await server.subscribe("compute.#", inbox)

    await client.call("compute.host1", "whoami", timeout=DEADLINE)
    await client.cast("compute.host1", "remember", value=1)
    await client.publish("compute.instance.create.end", {})
    await within_deadline(endpoint.remembered_changed.wait())
    await inbox.wait_for(lambda inbox: len(inbox.events) == 1)
    await client.call("compute.host1", "whoami", timeout=DEADLINE)  # the cast is finished

    sent, handled = client.statistics(), server.statistics()
    assert (sent["calls_sent"], sent["casts_sent"], sent["events_sent"]) == (2, 1, 1)
    assert (handled["calls_handled"], handled["casts_handled"]) == (2, 1)
    assert handled["events_handled"] == 1
    assert sent["calls_pending"] == 0


async def test_a_bus_must_be_started_and_cannot_restart(make_bus: MakeBus) -> None:
    bus = connect("memory://unstarted")
    with pytest.raises(BusError, match="start"):
        await bus.call("compute", "whoami")
    started = await make_bus()
    await started.close()
    with pytest.raises(BusError, match="closed"):
        await started.start()


@pytest.mark.parametrize(
    "name", ["", "compute.*", "compute.#", "compute host", ".compute", "compute..host"]
)
async def test_bad_targets_are_refused(make_bus: MakeBus, name: str) -> None:
    bus = await make_bus()
    with pytest.raises(ValueError):
        await bus.cast(name, "whoami")
    with pytest.raises(ValueError):
        await bus.publish(name, {})


def test_connect_picks_the_transport_by_scheme() -> None:
    assert isinstance(connect("memory://"), inproc.InProcBus)
    assert connect("memory://cell1").name == "cell1"  # type: ignore[attr-defined]
    assert isinstance(connect("amqp://guest:guest@localhost:5672/"), amqp.AmqpBus)
    with pytest.raises(ValueError, match="scheme"):
        connect("kafka://localhost")


def test_amqp_urls_are_redacted_in_messages() -> None:
    bus = connect("amqp://nova:s3cret@rabbit:5672/cloud")
    assert "s3cret" not in repr(bus)
    assert amqp.redact_url("amqp://nova:s3cret@rabbit/") == "amqp://nova:***@rabbit/"


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("compute.instance.create.end", "compute.instance.create.end", True),
        ("compute.*", "compute.instance", True),
        ("compute.*", "compute", False),
        ("compute.*", "compute.instance.create", False),
        ("compute.#", "compute", True),
        ("compute.#", "compute.instance.create.end", True),
        ("#.end", "compute.instance.create.end", True),
        ("#.end", "end", True),
        ("*.instance.#", "compute.instance", True),
        ("*.instance.#", "instance", False),
        ("#", "anything.at.all", True),
        ("a.#.b.#.c", "a.x.b.c", True),
        ("a.#.b.#.c", "a.c", False),
    ],
)
def test_topic_matches(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


@pytest.mark.parametrize("module", [bus_pkg, amqp, errors, inproc, interface, messages])
def test_modules_declare_all_that_exists(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert names and all(hasattr(module, name) for name in names)
    assert module.__doc__


def test_package_exports_the_contract() -> None:
    assert set(bus_pkg.__all__) == {
        "Bus", "BusError", "BusTimeout", "Event", "RemoteError", "connect"
    }
