"""Desired state by revision: newest wins, deletes are tombstones, a full state keeps late news."""

from __future__ import annotations

from tinystack.network.agents.reconcile import Desired
from tinystack.network.messages import PortSpec


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def spec(port_id: str, revision: int, **fields) -> PortSpec:
    return PortSpec(id=port_id, revision=revision, **fields)


def store(clock=None) -> Desired[PortSpec]:
    return Desired(lambda s: s.id, clock=clock or Clock(), tombstone_ttl=60)


def test_the_newest_revision_wins_and_an_equal_one_is_not_news():
    desired = store()

    assert desired.offer(spec("p", 2, mac="new"))
    assert not desired.offer(spec("p", 1, mac="old"))
    assert not desired.offer(spec("p", 2, mac="same revision"))
    assert desired.live("p").mac == "new"


def test_a_delete_is_a_tombstone_an_older_spec_cannot_undo():
    desired = store()
    desired.offer(spec("p", 1))

    assert desired.offer(spec("p", 2, deleted=True))
    assert not desired.offer(spec("p", 1))
    assert desired.live("p") is None
    assert desired.get("p").deleted
    assert desired.live_specs() == []


def test_a_full_state_deletes_what_it_lacks_but_keeps_what_came_after_asking():
    desired = store()
    desired.offer(spec("old", 1))
    since = desired.mark()
    desired.offer(spec("late", 5))  # arrived while agent_state was in flight

    changed = desired.replace([spec("kept", 3)], since=since)

    assert changed == {"old", "kept"}
    assert desired.live("old") is None
    assert desired.live("late") is not None
    assert desired.live("kept") is not None


def test_tombstones_are_forgotten_after_their_ttl():
    clock = Clock()
    desired = store(clock)
    desired.offer(spec("p", 1, deleted=True))
    desired.offer(spec("q", 1))

    clock.now = 61
    assert desired.prune() == ["p"]
    assert desired.keys() == ["q"]
