"""What the L2, DHCP and L3 agents share: desired state by revision, and the sync loop.

``Desired`` keeps the newest spec of each resource (a delete is a tombstone
for a while, so an older message arriving late never brings it back) and
takes the whole state at once from ``agent_state`` without forgetting specs
that arrived by message while that call was in flight.

``Agent`` is the loop each agent runs, as DESIGN.md's "Agents reconcile"
asks: on ``start`` it serves its bus target; ``run_once`` fetches the whole
desired state from the network server until it has it once, then syncs every
key it has or finds on the machine and sends a heartbeat; ``run_forever``
repeats that every ``audit_interval`` seconds, sooner for due retries and for
keys the driver saw change. ``sync(key)`` runs one key at a time and sorts
what goes wrong: ``TemporaryFailure`` (and bugs) back off exponentially,
``PermanentFailure`` is reported once per revision, ``Gone`` ends quietly.
Until the server has answered ``agent_state`` once, nothing found on the
machine is removed: only what the agent was told to keep is kept.

Read ``l2.py`` for an agent built on it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tinystack.common.bus import Bus
from tinystack.network.agents.drivers.base import Gone, PermanentFailure, TemporaryFailure
from tinystack.network.messages import SERVER_TARGET, AgentReport, AgentState

__all__ = ["Agent", "AgentOptions", "Desired", "Record"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_arrivals = itertools.count(1)
"""One arrival counter for every store of the process, so one mark covers them all."""


@dataclass(frozen=True)
class AgentOptions:
    """Knobs every network agent shares; ``node.py`` fills them from the settings."""

    audit_interval: float = 10.0
    """Seconds between audits (and heartbeats)."""
    retry_initial: float = 0.5
    """First backoff after a temporary failure, doubled each time."""
    retry_max: float = 60.0
    report_every: float = 60.0
    """Seconds after which an unchanged report is cast again (casts can be lost)."""
    state_timeout: float = 10.0
    """Seconds to wait for the server's answer to ``agent_state``."""
    tombstone_ttl: float = 3600.0
    """Seconds a delete is remembered."""
    concurrency: int = 8
    """Keys an audit syncs at once."""
    clean_on_exit: bool = False
    """Remove everything the agent made when it stops (the next start rebuilds it from the
    server's state); false leaves the data plane up, as Neutron's agents do."""


@dataclass
class Record(Generic[T]):
    spec: T
    revision: int
    deleted: bool
    seq: int
    """When it arrived, on the process-wide arrival counter (``Desired.mark``)."""
    at: float
    """Clock time it arrived (tombstones expire from it)."""


class Desired(Generic[T]):
    """Specs by key; the newest revision wins; deletes stay as tombstones for a while."""

    def __init__(self, key: Callable[[T], str], *, clock: Callable[[], float],
                 tombstone_ttl: float):
        self._key = key
        self._clock = clock
        self._ttl = tombstone_ttl
        self._records: dict[str, Record[T]] = {}

    def offer(self, spec: T) -> bool:
        """Keep ``spec`` if it is newer than what we have; True if it was."""
        key = self._key(spec)
        revision = spec.revision  # type: ignore[attr-defined]
        current = self._records.get(key)
        if current is not None and current.revision >= revision:
            return False
        self._records[key] = Record(spec, revision, bool(spec.deleted),  # type: ignore[attr-defined]
                                    next(_arrivals), self._clock())
        return True

    @staticmethod
    def mark() -> int:
        """A point in arrivals: ``replace(..., since=mark)`` keeps what came after it."""
        return next(_arrivals)

    def replace(self, specs: Iterable[T], *, since: int) -> set[str]:
        """Take the whole desired state; keys not in it become tombstones unless they
        arrived after ``since``. Returns the keys that changed."""
        changed = set()
        seen = set()
        for spec in specs:
            seen.add(self._key(spec))
            if self.offer(spec):
                changed.add(self._key(spec))
        for key, record in list(self._records.items()):
            if key not in seen and not record.deleted and record.seq <= since:
                self._records[key] = Record(record.spec, record.revision, True,
                                            next(_arrivals), self._clock())
                changed.add(key)
        return changed

    def get(self, key: str) -> Record[T] | None:
        return self._records.get(key)

    def live(self, key: str) -> T | None:
        record = self._records.get(key)
        return record.spec if record is not None and not record.deleted else None

    def keys(self) -> list[str]:
        return list(self._records)

    def live_specs(self) -> list[T]:
        return [r.spec for r in self._records.values() if not r.deleted]

    def prune(self) -> list[str]:
        """Forget tombstones older than the TTL; their keys."""
        now = self._clock()
        old = [k for k, r in self._records.items() if r.deleted and now - r.at > self._ttl]
        for key in old:
            del self._records[key]
        return old


@dataclass
class _Backoff:
    attempts: int = 0
    next_at: float = 0.0
    last_error: str = ""


class _Endpoint:
    """What the bus may call on an agent's target: the methods named in ``casts``."""

    def __init__(self, handlers: dict[str, Callable[..., Any]]):
        for name, handler in handlers.items():
            setattr(self, name, handler)


class Agent:
    """The reconcile loop of one network agent; subclasses say what a key means.

    A subclass sets ``agent_type``, ``binary`` and ``target``, offers the bus
    methods in ``handlers()``, loads ``AgentState`` in ``load``, lists what is
    on the machine in ``machine_keys`` and wanted in ``desired_keys``, and
    converges one key in ``sync_key``.
    """

    agent_type = ""
    binary = ""

    def __init__(self, *, host: str, bus: Bus, options: AgentOptions | None = None,
                 clock: Callable[[], float] = time.monotonic, data_ip: str = "127.0.0.1"):
        self.host = host
        self.bus = bus
        self.options = options or AgentOptions()
        self.data_ip = data_ip
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._backoff: dict[str, _Backoff] = {}
        self._failed: dict[str, tuple[int, str]] = {}
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self.synced = False
        """True once the server's whole desired state has been loaded."""
        self.audits = 0
        self.last_error: str | None = None

    # -- what subclasses provide -------------------------------------------------------------

    @property
    def target(self) -> str:
        raise NotImplementedError

    def handlers(self) -> dict[str, Callable[..., Any]]:
        raise NotImplementedError

    async def load(self, state: AgentState, since: int) -> set[str]:
        """Take the whole desired state (``Desired.replace(..., since=since)``); the keys
        that changed."""
        raise NotImplementedError

    async def machine_keys(self) -> set[str]:
        raise NotImplementedError

    def desired_keys(self) -> set[str]:
        raise NotImplementedError

    async def sync_key(self, key: str) -> None:
        raise NotImplementedError

    def revision_of(self, key: str) -> int:
        """The desired revision of ``key`` (a permanent failure holds until it changes)."""
        return 0

    async def report_failure(self, key: str, message: str) -> None:
        """Tell the server a key failed for good (a port in ERROR...)."""

    def configurations(self) -> dict:
        return {}

    async def start_driver(self) -> None:
        """Get the driver ready (before the bus target is served)."""

    async def close_driver(self) -> None:
        """Release the driver at stop."""

    def prune(self) -> None:
        """Forget old tombstones (and whatever the subclass keeps per key)."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.start_driver()
        await self.bus.serve(self.target, _Endpoint(self.handlers()))

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for lock in list(self._locks.values()):  # let syncs in flight finish first
            async with lock:
                pass
        if self.options.clean_on_exit:
            try:
                await self.teardown()
            except Exception:
                log.exception("%s: could not remove everything on exit", self.binary)
        await self.close_driver()

    async def teardown(self) -> None:
        """Remove everything this agent made on the machine (``clean_on_exit``)."""

    async def run_forever(self) -> None:
        while not self._stopping:
            try:
                await self.run_once()
                self.last_error = None
            except Exception as exc:
                log.exception("%s: audit failed; trying again at the next one", self.binary)
                self.last_error = f"{type(exc).__name__}: {exc}"
            await self._sleep_until_due()

    async def run_once(self) -> None:
        """One audit: load the state if never loaded, sync every key, send a heartbeat."""
        self.audits += 1
        if not self.synced:
            await self.heartbeat()  # the server learns this host (network node) first
            await self.resync()
        keys = self.desired_keys()
        if self.synced:
            keys |= await self.machine_keys()
        due = [key for key in sorted(keys) if self._due(key)]
        gate = asyncio.Semaphore(self.options.concurrency)

        async def one(key: str) -> None:
            async with gate:
                await self.sync(key)

        await asyncio.gather(*(one(key) for key in due))
        self.prune()
        await self.heartbeat()

    async def resync(self) -> bool:
        """Ask the server for everything this agent should have; True when it answered."""
        since = Desired.mark()
        try:
            raw = await self.bus.call(SERVER_TARGET, "agent_state", host=self.host,
                                      agent_type=self.agent_type,
                                      timeout=self.options.state_timeout)
        except Exception as exc:
            log.warning("%s: no desired state from %s yet (%s); keeping what is there",
                        self.binary, SERVER_TARGET, exc)
            return False
        state = AgentState.model_validate(raw or {})
        changed = await self.load(state, since)
        self.synced = True
        for key in changed:
            self._backoff.pop(key, None)
        return True

    # -- one key -----------------------------------------------------------------------------

    async def sync(self, key: str) -> str:
        """Converge ``key``; ``ok``, ``retry``, ``error`` or ``gone``."""
        if self._stopping:
            return "gone"
        failed = self._failed.get(key)
        if failed is not None and failed[0] == self.revision_of(key):
            return "error"
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            try:
                await self.sync_key(key)
            except Gone as exc:
                self._backoff.pop(key, None)
                log.info("%s: %s went away during sync: %s", self.binary, key, exc)
                return "gone"
            except PermanentFailure as exc:
                self._backoff.pop(key, None)
                self._failed[key] = (self.revision_of(key), str(exc))
                log.warning("%s: %s failed: %s", self.binary, key, exc)
                await self.report_failure(key, str(exc))
                return "error"
            except Exception as exc:
                if isinstance(exc, TemporaryFailure):
                    log.warning("%s: %s: %s (will retry)", self.binary, key, exc)
                else:
                    log.error("%s: bug while syncing %s", self.binary, key, exc_info=exc)
                backoff = self._backoff.setdefault(key, _Backoff())
                backoff.attempts += 1
                backoff.last_error = str(exc) or type(exc).__name__
                delay = min(self.options.retry_max,
                            self.options.retry_initial * 2 ** (backoff.attempts - 1))
                backoff.next_at = self._clock() + delay
                self._wake.set()
                return "retry"
            self._backoff.pop(key, None)
            self._failed.pop(key, None)
            return "ok"

    def sync_soon(self, key: str) -> None:
        """Sync ``key`` from the loop as soon as it wakes (driver callbacks use this)."""
        self._pending.add(key)
        self._wake.set()

    def forget(self, key: str) -> None:
        self._locks.pop(key, None)
        self._backoff.pop(key, None)
        self._failed.pop(key, None)

    # -- heartbeat ---------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        for report in self.agent_reports():
            try:
                await self.bus.cast(SERVER_TARGET, "report_agent", report=report)
            except Exception as exc:
                log.warning("%s: heartbeat not sent: %s", self.binary, exc)

    def agent_reports(self) -> list[AgentReport]:
        """The heartbeats this agent sends (one; the DHCP agent adds the metadata agent's)."""
        return [AgentReport(host=self.host, agent_type=self.agent_type, binary=self.binary,
                            data_ip=self.data_ip, configurations=self.configurations())]

    def health(self) -> dict:
        return {"name": self.binary, "kind": "agent", "node": self.host,
                "healthy": not self._stopping and self.last_error is None,
                "error": self.last_error, "synced": self.synced, "audits": self.audits,
                "retrying": len(self._backoff), "failed": len(self._failed),
                "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}

    # -- scheduling --------------------------------------------------------------------------

    def _due(self, key: str) -> bool:
        backoff = self._backoff.get(key)
        return backoff is None or backoff.next_at <= self._clock()

    async def _sleep_until_due(self) -> None:
        deadline = self._clock() + self.options.audit_interval
        while not self._stopping:
            self._wake.clear()
            pending, self._pending = self._pending, set()
            for key in sorted(pending):
                await self.sync(key)
            if not self.synced:
                deadline = min(deadline, self._clock() + 2.0)
            wake_at = min([deadline, *(b.next_at for b in self._backoff.values())])
            if self._clock() >= wake_at:
                return
            if self._pending:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, wake_at - self._clock()))
            except TimeoutError:
                return
