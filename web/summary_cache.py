"""Recent answers kept per key and refreshed in the background (stale-while-revalidate).

A board row polls its order every second. Asking Temporal inside each request ties the row's
answer time to how busy the workers are: a status query waits behind the workflow tasks of
every order in flight. Serving the last answer and refreshing it behind the request keeps a row
quick under load; `max_age` bounds how old a shown answer may be, beyond which a request waits
for a fresh one instead. A caller with something else to show (a row has the database's record)
may wait only briefly for a first answer, and learns of a failed load on its next call.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Awaitable, Callable, Generic, Hashable, Optional, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class NotLoadedYet(Exception):
    """No answer is kept for the key and its load did not finish within the caller's wait."""


class RefreshingCache(Generic[K, V]):
    def __init__(
        self,
        load: Callable[[K], Awaitable[V]],
        *,
        refresh_after: float,
        max_age: float,
        max_entries: int,
        max_concurrent_refreshes: int,
    ) -> None:
        self._load = load
        self._refresh_after = refresh_after
        self._max_age = max_age
        self._max_entries = max_entries
        self._refresh_slots = asyncio.Semaphore(max_concurrent_refreshes)
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._loading: dict[K, asyncio.Task[V]] = {}
        self._failed: dict[K, BaseException] = {}
        """The error of each key's last load, while it has no newer answer."""

    async def get(self, key: K, *, fresh: bool = False, wait: Optional[float] = None) -> V:
        """The kept answer while it is younger than max_age (refreshed in the background once
        older than refresh_after); otherwise, or when `fresh`, a new answer, shared with any
        load of the same key already under way unless `fresh` (which must see every change made
        before the call). With `wait`, a new answer is waited for that long at most: then the
        error of the key's previous load is raised if it failed, else NotLoadedYet, and the load
        goes on for the next call."""
        entry = self._entries.get(key)
        if entry is not None and not fresh:
            age = time.monotonic() - entry[0]
            if age < self._max_age:
                if age >= self._refresh_after and key not in self._loading:
                    self._start_load(key, self._refresh_in_slot(key))
                return entry[1]
        previous_failure = self._failed.get(key)
        task = None if fresh else self._loading.get(key)
        task = task or self._start_load(key, self._load(key))
        # Shielded: a request that gives up must not cancel a load other requests share.
        if wait is None:
            return await asyncio.shield(task)
        try:
            return await asyncio.wait_for(asyncio.shield(task), wait)
        except asyncio.TimeoutError:
            if previous_failure is not None:
                raise previous_failure from None
            raise NotLoadedYet(key) from None

    def age(self, key: K) -> Optional[float]:
        """Seconds since the kept answer for `key` was loaded; None if none is kept."""
        entry = self._entries.get(key)
        return None if entry is None else time.monotonic() - entry[0]

    async def _refresh_in_slot(self, key: K) -> V:
        async with self._refresh_slots:
            return await self._load(key)

    def _start_load(self, key: K, load: Awaitable[V]) -> asyncio.Task[V]:
        task = asyncio.ensure_future(load)
        self._loading[key] = task
        task.add_done_callback(lambda done: self._loaded(key, done))
        return task

    def _loaded(self, key: K, task: asyncio.Task[V]) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]
        if task.cancelled():
            return
        if (error := task.exception()) is not None:
            # A failed background refresh leaves the kept answer until it is too old; the next
            # request then loads itself and reports the failure.
            self._failed[key] = error
            if len(self._failed) > self._max_entries:
                self._failed.pop(next(iter(self._failed)))
            return
        self._failed.pop(key, None)
        self._entries[key] = (time.monotonic(), task.result())
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
