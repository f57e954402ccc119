"""Batcher: frames waiting from every session run in one batch when a thread is free; results
go back to each frame's own future; waiting jobs can be shed; failures reach every waiter.
The last test runs the real extractor (faces + test-size CLIP) batched and one by one."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import CancelledError, wait

import numpy as np
import pytest
from media import face_frame

from merclip.clip_backbone import ClipBackbone
from workers.app.settings import Settings
from workers.batcher import Batcher
from workers.features.extractor import WindowExtractor

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


class Recorder:
    """A run_batch that sums each frame, records batch sizes, and can be held at a gate."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, frames: Sequence[np.ndarray]) -> list[int]:
        self.entered.set()
        self.gate.wait(10)
        self.sizes.append(len(frames))
        return [int(f.sum()) for f in frames]


def _frame(value: int) -> np.ndarray:
    return np.full((2, 2), value, np.int64)


def test_each_future_gets_its_own_frames_result() -> None:
    run = Recorder()
    batcher = Batcher(run, threads=2)
    try:
        futures = [batcher.submit(_frame(v)) for v in range(20)]
        assert [f.result(5) for f in futures] == [4 * v for v in range(20)]
    finally:
        batcher.shutdown()
    assert sum(run.sizes) == 20


def test_frames_that_wait_while_the_thread_is_busy_run_as_one_batch() -> None:
    run = Recorder()
    sizes: list[int] = []
    batcher = Batcher(run, threads=1, max_batch=8, on_batch=sizes.append)
    try:
        run.gate.clear()
        first = batcher.submit(_frame(1))
        assert run.entered.wait(5)  # the only thread is busy with the first frame
        waiting = [batcher.submit(_frame(v)) for v in range(2, 7)]
        run.gate.set()
        assert [f.result(5) for f in [first, *waiting]] == [4 * v for v in range(1, 7)]
    finally:
        batcher.shutdown()
    assert run.sizes == [1, 5] and sizes == [1, 5]


def test_batches_are_capped_at_max_batch() -> None:
    run = Recorder()
    batcher = Batcher(run, threads=1, max_batch=3)
    try:
        run.gate.clear()
        first = batcher.submit(_frame(0))
        assert run.entered.wait(5)
        rest = [batcher.submit(_frame(v)) for v in range(7)]
        run.gate.set()
        wait([first, *rest], timeout=5)
    finally:
        batcher.shutdown()
    assert run.sizes == [1, 3, 3, 1]


def test_a_waiting_job_can_be_shed_and_never_runs() -> None:
    run = Recorder()
    batcher = Batcher(run, threads=1)
    try:
        run.gate.clear()
        busy = batcher.submit(_frame(1))
        assert run.entered.wait(5)
        assert busy.cancel() is False  # running: too late to shed
        shed, kept = batcher.submit(_frame(2)), batcher.submit(_frame(3))
        assert shed.cancel() is True
        run.gate.set()
        assert kept.result(5) == 12 and busy.result(5) == 4
    finally:
        batcher.shutdown()
    assert run.sizes == [1, 1]  # the shed frame was never part of a batch


def test_a_failing_batch_fails_each_of_its_jobs_and_the_threads_go_on() -> None:
    def run(frames: Sequence[np.ndarray]) -> list[int]:
        if any(f[0, 0] < 0 for f in frames):
            raise ValueError("bad frame")
        return [1 for _ in frames]

    batcher = Batcher(run, threads=1)
    try:
        bad = batcher.submit(_frame(-1))
        with pytest.raises(ValueError, match="bad frame"):
            bad.result(5)
        assert batcher.submit(_frame(1)).result(5) == 1
    finally:
        batcher.shutdown()


def test_shutdown_cancels_what_waits_and_joins_its_threads() -> None:
    run = Recorder()
    batcher = Batcher(run, threads=2, name="shutdown-test")
    run.gate.clear()
    busy = [batcher.submit(_frame(1))]
    assert run.entered.wait(5)
    busy.append(batcher.submit(_frame(1)))
    deadline = time.monotonic() + 5
    while not busy[1].running() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert busy[1].running()  # both threads hold a frame
    waiting = batcher.submit(_frame(2))
    threading.Timer(0.2, run.gate.set).start()
    batcher.shutdown()
    assert all(f.result(0) == 4 for f in busy)  # running batches finished
    with pytest.raises(CancelledError):
        waiting.result(0)
    assert not [t for t in threading.enumerate() if t.name.startswith("shutdown-test")]
    with pytest.raises(RuntimeError, match="shut down"):
        batcher.submit(_frame(1))


@pytest.mark.slow
def test_real_frames_batched_equal_one_by_one(tiny_clip: ClipBackbone) -> None:
    extractor = WindowExtractor(Settings(), tiny_clip, None)
    frames = [face_frame(i, 15, (320, 240), face=i != 2) for i in range(4)]
    one_by_one = [extractor.frame_feature(f) for f in frames]
    batched = extractor.frame_features(frames)
    assert [f.embedding is None for f in batched] == [False, False, True, False]
    for a, b in zip(one_by_one, batched, strict=True):
        if a.embedding is None:
            assert b.embedding is None and b.encoder_ms == 0.0
        else:
            assert b.embedding is not None
            np.testing.assert_allclose(a.embedding, b.embedding, rtol=1e-3, atol=1e-4)
