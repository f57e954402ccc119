"""Jobs of every session, run in batches on a few threads: frames through the visual nets, window
audio through Whisper.

Both cost far less per item in a batch than one at a time (on a 2-core CPU, ViT-B-32 at batch 4
takes ~0.7x the time per image of batch 1: `python benchmarks/extract_stages.py --frame-batches`;
tiny.en on two 4 s windows at once ~0.55x the time per window of one:
`python benchmarks/asr_batching.py`). Sessions produce jobs independently, so under load several
wait at once; a thread that becomes free takes ALL waiting jobs (up to `max_batch`) and runs them
in one pass. When the threads keep up, every batch holds one job and nothing waits for a batch to
fill: batching costs no latency, it only appears under load.

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

__all__ = ["Batcher"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """`submit(item)` → Future of `run_batch([item, ...])[i]`, with batches formed from whatever
    is waiting when a thread is free. `run_batch` must return one result per item, in order."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[T]], Sequence[R]],
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
        self._waiting: deque[tuple[Future[R], T]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
            for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    def submit(self, item: T) -> Future[R]:
        fut: Future[R] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher is shut down")
            self._waiting.append((fut, item))
            self._cond.notify()
        return fut

    def _take(self) -> list[tuple[Future[R], T]] | None:
        """The next batch (jobs cancelled while waiting are skipped); None when shut down."""
        with self._cond:
            while True:
                batch: list[tuple[Future[R], T]] = []
                while self._waiting and len(batch) < self.max_batch:
                    fut, item = self._waiting.popleft()
                    if fut.set_running_or_notify_cancel():
                        batch.append((fut, item))
                if batch:
                    return batch
                if self._closed:
                    return None
                self._cond.wait()

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            try:
                results = self._run_batch([item for _, item in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(results)} results for {len(batch)} jobs")
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
