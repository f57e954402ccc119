"""The inference worker on a real Redis with the real test-size predictor (merclip-tiny-live)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from bus_helpers import make_window, prefix_on, tiny_worker_env

from merclip.errors import SchemaError
from merclip.predictor import Predictor
from workers.app.settings import Settings
from workers.bus import Bus
from workers.inference import InferenceWorker
from workers.schemas import MAX_WINDOW_BYTES, FeatureWindow, encode, event_id_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[1]


def tiny_settings(prefix: str = "merclip", **inference: object) -> Settings:
    s = Settings().replace("model", name="merclip-tiny-live")
    s = s.replace("clip", model="merclip-tiny-clip")
    s = s.replace("features", space="live").replace("model", checkpoint="")
    s = s.replace("redis", prefix=prefix)
    values = {"batch_size": 8, "block_ms": 50, "claim_idle_ms": 300, **inference}
    return s.replace("inference", **values)


@contextlib.asynccontextmanager
async def _worker_on_bus(
    redis_url: str, settings: Settings, predictor: Predictor
) -> AsyncIterator[tuple[Bus, InferenceWorker]]:
    """A worker "w" (not started) whose group exists, on its own Bus."""
    async with Bus.connect(redis_url, settings.redis) as bus:
        worker = InferenceWorker(settings, bus, predictor, consumer="w")
        await bus.ensure_group(worker.group)
        yield bus, worker


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_settings(tiny_settings())


@pytest.fixture
async def prefix(redis_url: str):
    async with prefix_on(redis_url) as p:
        yield p


async def until(cond, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_one_batch_one_event_per_window(redis_url: str, prefix: str, predictor) -> None:
    settings = tiny_settings(prefix, smoothing_alpha=0.25)
    windows = [make_window("a", i) for i in range(3)]
    windows += [make_window("b", i, visual=(i != 1)) for i in range(3)]
    async with Bus.connect(redis_url, settings.redis) as bus:
        worker = InferenceWorker(settings, bus, predictor, consumer="w1")
        await bus.ensure_group(worker.group)
        for fw in windows:
            await bus.add_window(fw)
        assert await worker.step() == 6
        assert (
            worker.counters.batches == 1
            and worker.counters.last_batch_size == 6
            and worker.counters.processed == 6
        )
        assert await bus.pending_count(worker.group) == 0
        events = {s: await bus.events(s, 10) for s in ("a", "b")}
    expected = predictor.predict([fw.to_sample() for fw in windows])
    for fw, pred in zip(windows, expected, strict=True):
        ev = events[fw.session_id][fw.seq]
        assert ev.seq == fw.seq and ev.transcript == fw.transcript
        assert ev.event_id == event_id_for(
            fw.session_id, fw.seq, predictor.model_name, predictor.model_version
        )
        np.testing.assert_allclose(ev.emotion_probs, pred.emotion_probs, atol=1e-5)
        np.testing.assert_allclose(ev.sentiment_probs, pred.sentiment_probs, atol=1e-5)
        assert ev.emotions_predicted == pred.emotions and ev.sentiment == pred.sentiment
        assert ev.emotion_labels == predictor.emotion_labels
        assert ev.face_present == (fw.visual is not None)
        assert ev.zero_shot is True and ev.pretrained is False
        assert ev.model_name == "merclip-tiny-live"
        lat = ev.latency
        assert 0 < lat.features_ready_ms <= lat.inference_done_ms <= lat.published_ms < 10_000
        assert ev.stage_ms["asr"] == 120.0 and ev.stage_ms["inference"] > 0
    # Smoothed = EMA over the session's windows in order (alpha 0.25 on the new one).
    a = events["a"]
    ema = np.asarray(a[0].emotion_probs)
    for ev in a[1:]:
        ema = 0.25 * np.asarray(ev.emotion_probs) + 0.75 * ema
        np.testing.assert_allclose(ev.emotion_smoothed, ema, atol=1e-5)
    np.testing.assert_allclose(a[0].emotion_smoothed, a[0].emotion_probs, atol=1e-6)


class _DiesBeforeAck(Bus):
    """A worker's bus that never gets to XACK: the process "dies" after writing its events."""

    async def ack(self, group: str, ids: Sequence[str], partition: int = 0) -> int:
        await asyncio.Event().wait()
        return 0


async def test_crash_between_write_and_ack_gives_no_second_event(
    redis_url: str, prefix: str, predictor
) -> None:
    settings = tiny_settings(prefix)
    async with _DiesBeforeAck.connect(redis_url, settings.redis) as doomed_bus:
        doomed = InferenceWorker(settings, doomed_bus, predictor, consumer="doomed")
        await doomed_bus.ensure_group(doomed.group)
        await doomed_bus.add_window(make_window("s", 5))
        step = asyncio.create_task(doomed.step())
        await until(lambda: doomed.counters.processed == 1)
        step.cancel()  # killed between write and ack
        with pytest.raises(asyncio.CancelledError):
            await step
        assert await doomed_bus.pending_count(doomed.group) == 1
        [first] = await doomed_bus.events("s", 10)
    async with Bus.connect(redis_url, settings.redis) as bus:
        async with InferenceWorker(settings, bus, predictor, consumer="heir") as heir:
            await until(lambda: heir.counters.processed == 1)
        assert heir.counters.claimed == 1 and heir.counters.duplicates == 1
        assert await bus.pending_count(heir.group) == 0
        stored = await bus.events("s", 10)
    assert [e.event_id for e in stored] == [first.event_id]


async def test_bad_windows_are_dead_lettered_and_the_rest_go_on(
    redis_url: str, prefix: str, predictor
) -> None:
    settings = tiny_settings(prefix)
    async with _worker_on_bus(redis_url, settings, predictor) as (bus, worker):
        await bus.add_raw_window({"m": b"\x93garbage"})
        await bus.add_window(make_window("s", 0))
        await bus.add_window(make_window("s", 1, dim=32))  # features of another CLIP width
        await bus.add_window(make_window("s", 2, clip_model="ViT-B-32"))
        await bus.add_window(make_window("s", 3))
        async with worker:
            await until(lambda: worker.counters.processed + worker.counters.dead_lettered == 5)
        assert worker.counters.processed == 2 and worker.counters.dead_lettered == 3
        assert [e.seq for e in await bus.events("s", 10)] == [0, 3]
        reasons = [str(d["reason"]) for d in await bus.dead_letters()]
        assert "undecodable" in reasons[0]
        assert "(T, 64)" in reasons[1]
        assert "ViT-B-32" in reasons[2]
        assert await bus.pending_count(worker.group) == 0


async def test_a_window_that_keeps_killing_workers_is_dead_lettered(
    redis_url: str, prefix: str, predictor
) -> None:
    settings = tiny_settings(prefix, max_deliveries=3, claim_idle_ms=50)
    async with Bus.connect(redis_url, settings.redis) as bus:
        worker = InferenceWorker(settings, bus, predictor, consumer="survivor")
        await bus.ensure_group(worker.group)
        await bus.add_window(make_window("s", 0))
        # Three consumers take it and die without acking (deliveries 1, 2, 3).
        assert len(await bus.read_windows(worker.group, "dead-1", 1, 100)) == 1
        for name in ("dead-2", "dead-3"):
            await asyncio.sleep(0.08)
            [d] = await bus.claim_stale(worker.group, name, 50, 1)
        assert d.deliveries == 3
        await asyncio.sleep(0.08)
        await worker.step()
        assert worker.counters.dead_lettered == 1 and worker.counters.processed == 0
        [dead] = await bus.dead_letters()
        assert dead["deliveries"] == "4" and "max_deliveries 3" in str(dead["reason"])
        assert await bus.pending_count(worker.group) == 0
        assert await bus.events("s", 10) == []


async def test_windows_left_by_a_dead_consumer_are_claimed(
    redis_url: str, prefix: str, predictor
) -> None:
    settings = tiny_settings(prefix, claim_idle_ms=200)
    async with Bus.connect(redis_url, settings.redis) as bus:
        await bus.ensure_group(settings.inference.consumer_group)
        for i in range(3):
            await bus.add_window(make_window("s", i))
        taken = await bus.read_windows(settings.inference.consumer_group, "crashed", 10, 100)
        assert len(taken) == 3
        async with InferenceWorker(settings, bus, predictor, consumer="live") as worker:
            await until(lambda: worker.counters.processed == 3)
        assert worker.counters.claimed == 3
        assert [e.seq for e in await bus.events("s", 10)] == [0, 1, 2]
        assert await bus.pending_count(settings.inference.consumer_group) == 0


async def test_windows_past_the_deadline_are_skipped_and_counted(
    redis_url: str, prefix: str, predictor
) -> None:
    settings = tiny_settings(prefix, deadline_seconds=10.0)
    async with _worker_on_bus(redis_url, settings, predictor) as (bus, worker):
        await bus.add_window(make_window("s", 0, age_s=30.0))
        await bus.add_window(make_window("s", 1, age_s=0.5))
        await worker.step()
        assert worker.counters.skipped == 1 and worker.counters.processed == 1
        assert [e.seq for e in await bus.events("s", 10)] == [1]
        assert await bus.pending_count(worker.group) == 0


async def test_two_workers_share_the_stream(redis_url: str, prefix: str, predictor) -> None:
    settings = tiny_settings(prefix, batch_size=2)
    async with Bus.connect(redis_url, settings.redis) as bus:
        await bus.ensure_group(settings.inference.consumer_group)
        for i in range(12):
            await bus.add_window(make_window(f"s{i % 3}", i // 3))
        async with (
            InferenceWorker(settings, bus, predictor, consumer="w1") as w1,
            InferenceWorker(settings, bus, predictor, consumer="w2") as w2,
        ):
            await until(lambda: w1.counters.processed + w2.counters.processed == 12)
        assert w1.counters.processed > 0 and w2.counters.processed > 0
        assert w1.counters.duplicates == w2.counters.duplicates == 0
        for s in ("s0", "s1", "s2"):
            assert sorted(e.seq for e in await bus.events(s, 10)) == [0, 1, 2, 3]


def test_infer_command_without_redis_url_says_what_to_do(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "workers.app", "--config", str(ROOT / "config.toml"), "infer"]
    proc = subprocess.run(
        cmd, env=tiny_worker_env("x"), capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 2 and "--redis-url" in proc.stderr


@pytest.mark.slow
async def test_infer_command_serves_windows_and_stops_on_sigterm(
    redis_url: str, prefix: str
) -> None:
    settings = tiny_settings(prefix)
    cmd = [sys.executable, "-m", "workers.app", "--config", str(ROOT / "config.toml"), "infer"]
    cmd += ["--redis-url", redis_url, "--consumer", "cli-worker"]
    proc = await asyncio.create_subprocess_exec(
        *cmd, env=tiny_worker_env(prefix), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        async with Bus.connect(redis_url, settings.redis) as bus:
            # Importing torch and loading the model can take a while on 2 busy cores; windows
            # that wait longer than the deadline are skipped, so keep offering fresh ones.
            for seq in range(150):
                await bus.add_window(make_window("cli", seq, age_s=0.1))
                await asyncio.sleep(0.5)
                if await bus.events("cli", 1) or proc.returncode is not None:
                    break
            [ev] = await bus.events("cli", 1)
            assert ev.model_name == "merclip-tiny-live"
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert b"inference worker cli-worker stopped" in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _encoded_with(fw, **fields: object) -> bytes:  # type: ignore[no-untyped-def]
    """`fw` encoded with fields set to values its schema forbids (a foreign producer's)."""
    import msgpack

    body = msgpack.unpackb(encode(fw), raw=False)
    body.update(fields)
    return msgpack.packb(body, use_bin_type=True)


async def _run_until_done(worker: InferenceWorker, n: int) -> None:
    async with worker:
        await until(
            lambda: (
                worker.counters.processed + worker.counters.dead_lettered + worker.counters.skipped
                >= n
            )
        )


async def test_a_window_with_a_wrong_typed_field_is_dead_lettered_alone(
    redis_url: str, prefix: str, predictor
) -> None:
    # Review M5(a): one `wall_end="soon"` among good windows raised out of the batch, nothing
    # was acked, and the good windows were redelivered until dead-lettered with it.
    settings = tiny_settings(prefix)
    async with _worker_on_bus(redis_url, settings, predictor) as (bus, worker):
        poison = _encoded_with(make_window("p", 99), wall_end="soon")
        for i in range(6):
            if i == 3:
                await bus.add_raw_window({"m": poison})
            await bus.add_window(make_window("p", i))
        await _run_until_done(worker, 7)
        assert sorted(e.seq for e in await bus.events("p", 10)) == list(range(6))
        [dead] = await bus.dead_letters()
        assert "wall_end" in str(dead["reason"]) and dead["deliveries"] == "1"
        assert (
            worker.counters.processed == 6
            and worker.counters.dead_lettered == 1
            and worker.counters.skipped == 0
        )
        assert await bus.pending_count(worker.group) == 0


async def test_a_window_of_nothing_but_wrong_types_is_dead_lettered_at_delivery(
    redis_url: str, prefix: str, predictor
) -> None:
    # Structure review 2.4: a foreign FeatureWindow whose every field is the string "oops" must
    # fail decoding when it is delivered (SchemaError, then a dead letter on its first delivery),
    # not raise inside the batch it was read with and take its batch-mates down with it.
    settings = tiny_settings(prefix)
    oops = {f.name: "oops" for f in dataclasses.fields(FeatureWindow)}
    async with _worker_on_bus(redis_url, settings, predictor) as (bus, worker):
        await bus.add_window(make_window("oops-mates", 0))
        await bus.add_raw_window({"m": _encoded_with(make_window("x", 0), **oops)})
        await bus.add_window(make_window("oops-mates", 1))
        await bus.add_window(make_window("oops-mates", 2))
        assert await worker.step() == 4  # one batch, read and handled together
        assert [e.seq for e in await bus.events("oops-mates", 10)] == [0, 1, 2]
        [dead] = await bus.dead_letters()
        assert str(dead["reason"]).startswith("undecodable: ") and "must be" in str(dead["reason"])
        assert dead["deliveries"] == "1"
        assert worker.counters.processed == 3 and worker.counters.dead_lettered == 1
        assert await bus.pending_count(worker.group) == 0


async def test_a_session_id_with_braces_is_dead_lettered_not_retried(
    redis_url: str, prefix: str, predictor
) -> None:
    # Review M5(b): the window of `a{b}c` made the event write raise a BusError, taken for an
    # outage: its whole batch was retried until the deadline, then skipped, with nothing logged.
    settings = tiny_settings(prefix)
    async with _worker_on_bus(redis_url, settings, predictor) as (bus, worker):
        for i in range(4):
            await bus.add_window(make_window("goodC", i))
        await bus.add_raw_window({"m": _encoded_with(make_window("x", 0), session_id="a{b}c")})
        await _run_until_done(worker, 5)
        assert [e.seq for e in await bus.events("goodC", 10)] == [0, 1, 2, 3]
        [dead] = await bus.dead_letters()
        assert "session id" in str(dead["reason"])
        assert worker.counters.redis_errors == 0 and worker.counters.skipped == 0


async def test_nan_features_are_dead_lettered_and_never_blank_the_session(
    redis_url: str, prefix: str, predictor
) -> None:
    # Review M5(c): NaN features gave NaN probabilities (not JSON), and the NaN stayed in the
    # session's moving average, so every later event of the session was NaN too.
    settings = tiny_settings(prefix)
    nan_language = make_window("n", 1)
    nan_language = dataclasses.replace(
        nan_language, language=np.full_like(nan_language.language, np.nan)
    )
    inf_visual = make_window("n", 2)
    inf_visual = dataclasses.replace(inf_visual, visual=np.full_like(inf_visual.visual, np.inf))
    async with _worker_on_bus(redis_url, settings, predictor) as (bus, worker):
        for fw in (make_window("n", 0), nan_language, inf_visual, make_window("n", 3)):
            await bus.add_window(fw)
        await _run_until_done(worker, 4)
        events = await bus.events("n", 10)
        assert [e.seq for e in events] == [0, 3]
        for ev in events:
            values = ev.emotion_probs + ev.emotion_smoothed + ev.sentiment_smoothed
            assert np.isfinite(values).all()
        reasons = [str(d["reason"]) for d in await bus.dead_letters()]
        assert ["language" in reasons[0], "visual" in reasons[1]] == [True, True]
        assert all("NaN or infinite" in r for r in reasons)


async def test_oversized_windows_are_dead_lettered_unread(
    redis_url: str, prefix: str, predictor
) -> None:
    # Review M5(d): a (100000, 512) float16 language window (102 MB) was accepted and inferred.
    settings = tiny_settings(prefix)
    huge = make_window("big", 0)
    huge = dataclasses.replace(huge, language=np.zeros((20_000, 64), np.float16))  # 2.5 MB
    long = dataclasses.replace(make_window("big", 1), language=np.zeros((600, 64), np.float16))
    async with _worker_on_bus(redis_url, settings, predictor) as (bus, worker):
        with pytest.raises(SchemaError, match="byte limit"):
            await bus.add_window(huge)  # our own producer refuses it
        await bus.add_raw_window({"m": encode(huge)})  # a foreign one may not
        await bus.add_window(long)
        await bus.add_window(make_window("big", 2))
        await _run_until_done(worker, 3)
        assert [e.seq for e in await bus.events("big", 10)] == [2]
        big, rows = await bus.dead_letters()
        assert f"{MAX_WINDOW_BYTES}-byte window limit" in str(big["reason"])
        assert big["m"] == b""  # not copied into the dead-letter stream
        assert "language has 600 rows" in str(rows["reason"])
