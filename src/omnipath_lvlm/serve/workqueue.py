"""A bounded work queue in front of the (blocking, CPU-bound) engine.

At most ``max_concurrent`` engine calls run at once on worker threads and at
most ``max_queue`` more wait; a request arriving when both are full is refused
at once with 429 instead of piling up. A slot is held until the engine call
itself ends, so a client that disconnects early does not free capacity that is
still busy.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from omnipath_lvlm.serve.errors import ApiError

T = TypeVar("T")


class WorkQueue:
    def __init__(self, max_concurrent: int, max_queue: int) -> None:
        if max_concurrent < 1 or max_queue < 0:
            raise ValueError(f"WorkQueue needs max_concurrent >= 1 and max_queue >= 0, got {max_concurrent}, {max_queue}")
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self._executor = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="omnipath-engine")
        self._lock = threading.Lock()
        self._admitted = 0  # running + waiting
        self._running = 0

    def submit(self, job: Callable[[], T]) -> Future[T]:
        """Queue `job` on a worker thread, or raise 429 when running + waiting are at their limits."""
        with self._lock:
            if self._admitted >= self.max_concurrent + self.max_queue:
                raise ApiError(429, f"the server is busy: {self._running} requests running and "
                                    f"{self._admitted - self._running} waiting (limit {self.max_queue}); retry later",
                               code="queue_full", headers={"Retry-After": "1"})
            self._admitted += 1
        try:
            future = self._executor.submit(self._run, job)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(self._release)  # after the job ends, or when it is cancelled while waiting
        return future

    def _run(self, job: Callable[[], T]) -> T:
        with self._lock:
            self._running += 1
        try:
            return job()
        finally:
            with self._lock:
                self._running -= 1

    def _release(self, _future: object = None) -> None:
        with self._lock:
            self._admitted -= 1

    def stats(self) -> dict[str, int]:
        """Requests running and waiting right now, and the limits."""
        with self._lock:
            return {"running": self._running, "waiting": self._admitted - self._running,
                    "max_concurrent": self.max_concurrent, "max_queue": self.max_queue}

    def shutdown(self) -> None:
        """Drop waiting jobs; running engine calls finish on their threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)

