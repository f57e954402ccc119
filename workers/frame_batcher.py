"""Frame jobs of every session, run in batches on a few threads.

The CLIP image encoder costs far less per image in a batch than one image at a time (on a 2-core
CPU, ViT-B-32 at batch 4 takes ~0.7x the time per image of batch 1: `python
benchmarks/extract_stages.py --frame-batches`). Sessions sample frames independently, so under load
several frames wait at once; a thread that becomes free takes ALL waiting frames (up to
`max_batch`) and encodes them in one pass. When the threads keep up, every batch holds one frame
and nothing waits for a batch to fill: batching costs no latency, it only appears under load.

Jobs are `concurrent.futures.Future`s, so a job still waiting can be cancelled (ingest sheds frames
its window no longer waits for) and a running one cannot.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

import numpy as np

__all__ = ["FrameBatcher"]

log = logging.getLogger(__name__)

R = TypeVar("R")


class FrameBatcher(Generic[R]):
    """`submit(rgb)` → Future of `run_batch([rgb, ...])[i]`, with batches formed from whatever is
    waiting when a thread is free. `run_batch` must return one result per frame, in order."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[np.ndarray]], Sequence[R]],
        threads: int,
        max_batch: int = 8,
        name: str = "frames",
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """`on_batch(size)` is called after each batch that ran, one call at a time."""
        if threads < 1 or max_batch < 1:
            raise ValueError("threads and max_batch must be >= 1")
        self._run_batch = run_batch
        self._on_batch = on_batch
        self.max_batch = max_batch
        self._waiting: deque[tuple[Future[R], np.ndarray]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
            for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    def submit(self, rgb: np.ndarray) -> Future[R]:
        fut: Future[R] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("frame batcher is shut down")
            self._waiting.append((fut, rgb))
            self._cond.notify()
        return fut

    def _take(self) -> list[tuple[Future[R], np.ndarray]] | None:
        """The next batch (jobs cancelled while waiting are skipped); None when shut down."""
        with self._cond:
            while True:
                batch: list[tuple[Future[R], np.ndarray]] = []
                while self._waiting and len(batch) < self.max_batch:
                    fut, rgb = self._waiting.popleft()
                    if fut.set_running_or_notify_cancel():
                        batch.append((fut, rgb))
                if batch:
                    return batch
                if self._closed:
                    return None
                self._cond.wait()

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            try:
                results = self._run_batch([rgb for _, rgb in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(results)} results for {len(batch)} frames")
            except BaseException as exc:  # noqa: BLE001 - every waiter learns of the failure
                for fut, _ in batch:
                    fut.set_exception(exc)
                continue
            if self._on_batch is not None:
                with self._cond:
                    self._on_batch(len(batch))
            for (fut, _), result in zip(batch, results, strict=True):
                fut.set_result(result)

    def shutdown(self, cancel_waiting: bool = True, timeout: float | None = None) -> None:
        """Stop taking jobs (cancelling those still waiting), let running batches finish, and
        join the threads (blocking: call it off the event loop)."""
        with self._cond:
            self._closed = True
            if cancel_waiting:
                while self._waiting:
                    self._waiting.popleft()[0].cancel()
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)
