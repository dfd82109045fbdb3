"""Fan-out of the storage change feed to in-process subscribers (Watch streams, command waiters,
edge sync sessions).

One task per replica tails ``storage.changes_after`` whenever the engine signals a commit
(``add_change_listener``, called from any thread, here or, with PostgreSQL, on another replica)
and at least every ``poll_interval_s`` as a fallback. Each subscriber gets the changes after its
own starting point in commit order, through a bounded queue: a subscriber that falls too far
behind is closed with :class:`SubscriberOverflow` (the Watch service turns that into a resumable
error; the client resumes from its last token and misses nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from cloud_registry.storage.base import ChangeEntry, Storage

__all__ = ["ChangeHub", "SubscriberOverflow", "Subscription"]

log = logging.getLogger(__name__)


class SubscriberOverflow(Exception):
    """The subscriber did not keep up; it must resubscribe from its last seen seq."""


@dataclass(eq=False)
class Subscription:
    """Changes for one subscriber; iterate with ``async for``. ``matches`` filters in the hub."""

    hub: ChangeHub
    last_seq: int
    matches: Callable[[ChangeEntry], bool]
    max_queue: int
    queue: asyncio.Queue[ChangeEntry | None] = field(default_factory=asyncio.Queue)
    overflowed: bool = False

    def __aiter__(self) -> AsyncIterator[ChangeEntry]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ChangeEntry]:
        while True:
            item = await self.queue.get()
            if item is None:
                if self.overflowed:
                    raise SubscriberOverflow(f"subscriber fell behind after seq {self.last_seq}")
                return
            yield item

    def close(self) -> None:
        self.hub._remove(self)
        self.queue.put_nowait(None)


class ChangeHub:
    """Tails the change feed of ``storage`` and delivers it to subscribers."""

    def __init__(
        self,
        storage: Storage,
        *,
        poll_interval_s: float = 1.0,
        batch_limit: int = 1000,
    ) -> None:
        self._storage = storage
        self._poll_interval_s = poll_interval_s
        self._batch_limit = batch_limit
        self._subscribers: set[Subscription] = set()
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_seq = 0

    @property
    def last_seq(self) -> int:
        """The newest seq the hub has delivered."""
        return self._last_seq

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._last_seq = await asyncio.to_thread(self._storage.latest_change_seq)
        self._storage.add_change_listener(self.notify)
        self._task = asyncio.create_task(self._run(), name="change-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for sub in list(self._subscribers):
            sub.close()

    def notify(self) -> None:
        """Signal that changes were committed (safe to call from any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wakeup.set)

    async def subscribe(
        self,
        *,
        after_seq: int | None = None,
        matches: Callable[[ChangeEntry], bool] = lambda _change: True,
        max_queue: int = 10_000,
    ) -> Subscription:
        """A subscription to changes after ``after_seq`` (None: from now), filtered by
        ``matches``. Changes older than the hub's position are read from storage first."""
        start = self._last_seq if after_seq is None else after_seq
        sub = Subscription(self, start, matches, max_queue)
        backlog_from = start
        while backlog_from < self._last_seq:
            changes = await asyncio.to_thread(
                self._storage.changes_after, backlog_from, self._batch_limit
            )
            changes = [c for c in changes if c.seq <= self._last_seq]
            if not changes:
                break
            for change in changes:
                self._offer(sub, change)
            backlog_from = changes[-1].seq
        self._subscribers.add(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def _offer(self, sub: Subscription, change: ChangeEntry) -> None:
        if change.seq <= sub.last_seq or sub.overflowed:
            return
        sub.last_seq = change.seq
        if not sub.matches(change):
            return
        if sub.queue.qsize() >= sub.max_queue:
            sub.overflowed = True
            self._subscribers.discard(sub)
            sub.queue.put_nowait(None)
            return
        sub.queue.put_nowait(change)

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
            # that arrives as its inner wait completes (CPython gh-86296), and stop() would hang.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval_s):
                    await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self._drain()
            except Exception:  # the hub must survive a database hiccup
                log.exception("change hub: reading the change feed failed; retrying")

    async def _drain(self) -> None:
        while True:
            changes = await asyncio.to_thread(
                self._storage.changes_after, self._last_seq, self._batch_limit
            )
            if not changes:
                return
            for change in changes:
                for sub in list(self._subscribers):
                    self._offer(sub, change)
                self._last_seq = change.seq
            if len(changes) < self._batch_limit:
                return
