"""``BoundedCache``: a size bound (least recently used out first) and an age limit."""

from __future__ import annotations

import threading

import pytest

from tinystack.common.cache import BoundedCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_never_holds_more_than_its_bound():
    cache: BoundedCache[int] = BoundedCache(3)
    for i in range(100):
        cache.put(f"k{i}", i)
        assert len(cache) <= 3
    assert [cache.get(f"k{i}") for i in (97, 98, 99)] == [97, 98, 99]
    assert cache.get("k0") is None


def test_the_least_recently_used_goes_first():
    cache: BoundedCache[str] = BoundedCache(2)
    cache.put("a", "A")
    cache.put("b", "B")
    assert cache.get("a") == "A"  # a is now more recent than b
    cache.put("c", "C")
    assert cache.get("b") is None
    assert cache.get("a") == "A"
    assert cache.get("c") == "C"


def test_putting_a_key_again_replaces_it_and_makes_it_recent():
    cache: BoundedCache[str] = BoundedCache(2)
    cache.put("a", "old")
    cache.put("b", "B")
    cache.put("a", "new")
    cache.put("c", "C")
    assert len(cache) == 2
    assert cache.get("a") == "new"
    assert cache.get("b") is None


def test_entries_expire_after_the_ttl():
    clock = FakeClock()
    cache: BoundedCache[str] = BoundedCache(10, ttl=5.0, clock=clock)
    cache.put("a", "A")
    clock.now += 5.0
    assert cache.get("a") == "A"
    clock.now += 0.1
    assert cache.get("a") is None
    assert len(cache) == 0  # an expired entry is dropped when found


@pytest.mark.parametrize("ttl", [None, 0])
def test_no_ttl_keeps_entries_until_evicted(ttl):
    clock = FakeClock()
    cache: BoundedCache[str] = BoundedCache(10, ttl=ttl, clock=clock)
    cache.put("a", "A")
    clock.now += 1e9
    assert cache.get("a") == "A"


def test_pop_and_clear():
    cache: BoundedCache[str] = BoundedCache(10)
    cache.put("a", "A")
    cache.put("b", "B")
    assert cache.pop("a") == "A"
    assert cache.pop("a") is None
    assert "a" not in cache and "b" in cache
    cache.clear()
    assert len(cache) == 0


def test_a_bound_below_one_is_refused():
    with pytest.raises(ValueError):
        BoundedCache(0)


def test_threads_writing_at_once_leave_it_within_its_bound():
    cache: BoundedCache[int] = BoundedCache(50)

    def writer(n: int) -> None:
        for i in range(2000):
            cache.put((n, i), i)
            cache.get((n, i - 1))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) <= 50
