"""RefreshingCache, the board rows' stale-while-revalidate cache, with a counting loader.

The loader stands for the Temporal describe + query; what is tested is when the cache asks it
and what a caller gets meanwhile. The board tests cover the rows against the real server."""

from __future__ import annotations

import asyncio

import pytest

from web.summary_cache import NotLoadedYet, RefreshingCache

REFRESH_AFTER = 0.1
MAX_AGE = 0.4


class Loader:
    """Answers `key:n` for the n-th load of a key, after `delay` seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.loads: list[str] = []
        self.fail = False

    async def __call__(self, key: str) -> str:
        self.loads.append(key)
        answer = f"{key}:{len(self.loads)}"
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("temporal did not answer")
        return answer


def cache_of(loader: Loader) -> RefreshingCache[str, str]:
    return RefreshingCache(
        loader,
        refresh_after=REFRESH_AFTER,
        max_age=MAX_AGE,
        max_entries=2,
        max_concurrent_refreshes=4,
    )


async def test_a_young_answer_is_served_without_asking_again() -> None:
    loader = Loader()
    cache = cache_of(loader)
    assert await cache.get("a") == "a:1"
    assert await cache.get("a") == "a:1"
    assert loader.loads == ["a"]
    assert cache.age("a") < REFRESH_AFTER


async def test_an_older_answer_is_served_at_once_and_refreshed_behind_it() -> None:
    loader = Loader(delay=0.05)
    cache = cache_of(loader)
    assert await cache.get("a") == "a:1"
    await asyncio.sleep(REFRESH_AFTER)
    # The kept answer comes back without waiting for the refresh it starts.
    assert await asyncio.wait_for(cache.get("a"), 0.01) == "a:1"
    assert await cache.get("a") == "a:1", "one refresh at a time"
    await asyncio.sleep(0.1)
    assert await cache.get("a") == "a:2"
    assert loader.loads == ["a", "a"]


async def test_an_answer_past_max_age_is_not_served() -> None:
    loader = Loader()
    cache = cache_of(loader)
    await cache.get("a")
    await asyncio.sleep(MAX_AGE)
    assert await cache.get("a") == "a:2"


async def test_fresh_always_asks() -> None:
    loader = Loader()
    cache = cache_of(loader)
    await cache.get("a")
    assert await cache.get("a", fresh=True) == "a:2"


async def test_callers_share_one_load() -> None:
    loader = Loader(delay=0.05)
    cache = cache_of(loader)
    answers = await asyncio.gather(*(cache.get("a") for _ in range(5)))
    assert answers == ["a:1"] * 5
    assert loader.loads == ["a"]


async def test_a_failed_refresh_keeps_the_answer_until_it_is_too_old() -> None:
    loader = Loader()
    cache = cache_of(loader)
    await cache.get("a")
    loader.fail = True
    await asyncio.sleep(REFRESH_AFTER)
    assert await cache.get("a") == "a:1"
    await asyncio.sleep(MAX_AGE)
    with pytest.raises(RuntimeError, match="did not answer"):
        await cache.get("a")


async def test_the_oldest_entries_go_beyond_max_entries() -> None:
    loader = Loader()
    cache = cache_of(loader)
    for key in ("a", "b", "c"):
        await cache.get(key)
    assert cache.age("a") is None
    assert cache.age("b") is not None and cache.age("c") is not None


async def test_a_caller_that_waits_briefly_learns_the_answer_is_not_loaded_yet_and_gets_it_next() -> None:
    loader = Loader(delay=0.2)
    cache = cache_of(loader)
    with pytest.raises(NotLoadedYet):
        await cache.get("a", wait=0.01)
    # The load went on behind the caller, and the next one shares it rather than start another.
    assert await cache.get("a", wait=1) == "a:1"
    assert loader.loads == ["a"]


async def test_a_caller_that_waits_briefly_learns_the_previous_load_failed() -> None:
    loader = Loader(delay=0.05)
    loader.fail = True
    cache = cache_of(loader)
    with pytest.raises(NotLoadedYet):
        await cache.get("a", wait=0.01)
    await asyncio.sleep(0.1)
    with pytest.raises(RuntimeError, match="temporal did not answer"):
        await cache.get("a", wait=0.01)
    loader.fail = False
    await asyncio.sleep(0.1)
    # The failure is forgotten once a load succeeds.
    assert await cache.get("a", wait=0.01) == "a:2"
