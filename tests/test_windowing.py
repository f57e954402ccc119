"""Rolling windows: boundaries, audio alignment, latest-frame sampling, flush, bounded memory."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from workers.windowing import SessionWindower

pytestmark = pytest.mark.unit

SR = 16000


def _ramp(n: int, start: int = 0) -> np.ndarray:
    """Samples whose value encodes their index, so alignment errors show up exactly."""
    return (np.arange(start, start + n) % 100000).astype(np.float32) / 100000


def _push_seconds(w: SessionWindower, seconds: float, chunk: int = 320, t0: float = 0.0) -> int:
    n_total = int(round(seconds * SR))
    for i in range(0, n_total, chunk):
        n = min(chunk, n_total - i)
        w.push_audio(_ramp(n, i), t0 + (i + n) / SR)
    return n_total


def test_window_boundaries_follow_length_and_hop() -> None:
    w = SessionWindower(4.0, 2.0, video_fps=2.0)
    windows = []
    n_total = int(11 * SR)
    for i in range(0, n_total, 320):  # 20 ms chunks, popping as a live session would
        w.push_audio(_ramp(320, i), (i + 320) / SR)
        windows += w.pop_ready(wall_clock_of_media_zero=1000.0)
    assert [(x.seq, x.media_start, x.media_end) for x in windows] == [
        (0, 0.0, 4.0),
        (1, 2.0, 6.0),
        (2, 4.0, 8.0),
        (3, 6.0, 10.0),
    ]
    for x in windows:
        assert (x.wall_start, x.wall_end) == (1000.0 + x.media_start, 1000.0 + x.media_end)
        assert x.audio is not None and x.audio.dtype == np.float32
        np.testing.assert_array_equal(x.audio, _ramp(4 * SR, int(x.media_start * SR)))
        assert not x.partial
    # Session end: the 1 s after 10.0 that no window covered comes out as a partial window.
    (tail,) = w.flush(1000.0)
    assert (tail.seq, tail.media_start, tail.media_end, tail.partial) == (4, 8.0, 11.0, True)
    np.testing.assert_array_equal(tail.audio, _ramp(3 * SR, 8 * SR))
    assert w.flush(1000.0) == [] and w.pop_ready(1000.0) == []


@pytest.mark.parametrize(
    ("window", "hop", "seconds", "expected_starts"),
    [(3.0, 3.0, 9.5, [0.0, 3.0, 6.0]), (2.5, 0.5, 4.0, [0.0, 0.5, 1.0, 1.5])],
)
def test_other_lengths_and_hops(
    window: float, hop: float, seconds: float, expected_starts: list[float]
) -> None:
    w = SessionWindower(window, hop, video_fps=1.0)
    _push_seconds(w, seconds)
    got = w.pop_ready(0.0)
    assert [x.media_start for x in got] == pytest.approx(expected_starts)
    assert all(x.media_end - x.media_start == pytest.approx(window) for x in got)
    assert all(len(x.audio) == int(window * SR) for x in got)


def test_flush_skips_tiny_tails_and_keeps_short_sessions() -> None:
    w = SessionWindower(4.0, 2.0, 2.0)
    _push_seconds(w, 10.2)
    assert len(w.pop_ready(0.0)) == 4
    assert w.flush(0.0) == []  # only 0.2 s beyond the last window: not worth a window
    short = SessionWindower(4.0, 2.0, 2.0)
    _push_seconds(short, 1.5)
    assert short.pop_ready(0.0) == []
    (only,) = short.flush(0.0)
    assert (only.seq, only.media_start, only.media_end) == (0, 0.0, 1.5)
    assert len(only.audio) == int(1.5 * SR)


def test_latest_frame_sampling_rate_and_window_frames() -> None:
    w = SessionWindower(4.0, 2.0, video_fps=2.0)
    rng = np.random.default_rng(0)
    sampled = []
    t = 0.0
    while t < 10.0:  # a 15 fps camera with arrival jitter
        if w.offer_frame(t):
            w.push_frame(np.full((2, 2, 3), len(sampled), np.uint8), t)
            sampled.append(t)
        t += 1 / 15 + rng.uniform(-0.01, 0.01)
    assert len(sampled) == 20  # one per 0.5 s slot
    assert all(b - a > 0.5 - 1 / 15 - 0.02 for a, b in itertools.pairwise(sampled))
    assert w.frames_offered > 140 and w.frames_sampled == 20
    windows = w.pop_ready(0.0, media_now=10.0)
    assert [x.seq for x in windows] == [0, 1, 2, 3]
    for x in windows:
        times = [ft for ft, _ in x.frames]
        assert len(times) == 8 and all(x.media_start <= ft < x.media_end for ft in times)
    assert windows[0].audio is None  # no audio track at all


def test_a_stalled_camera_does_not_burst_when_it_resumes() -> None:
    w = SessionWindower(4.0, 2.0, video_fps=2.0)
    assert w.offer_frame(0.0)
    assert not w.offer_frame(0.2)
    assert w.offer_frame(5.3)  # after a 5 s stall: one frame, not the 10 missed slots
    assert not w.offer_frame(5.4)
    assert w.offer_frame(5.5)


def test_audio_gap_is_filled_and_stamp_jitter_is_ignored() -> None:
    w = SessionWindower(4.0, 2.0, 2.0)
    rng = np.random.default_rng(0)
    w.push_audio(np.ones(320, np.float32), 0.02)  # anchors the track at media time 0
    for i in range(320, SR, 320):  # the rest of 1 s, stamps jittering by up to 50 ms
        w.push_audio(np.ones(320, np.float32), (i + 320) / SR + rng.uniform(0, 0.05))
    assert w.audio_end == pytest.approx(1.0)  # the sample clock, not the stamps
    # The track pauses for 1.5 s, then resumes: the gap becomes zeros, later audio stays aligned.
    w.push_audio(np.full(SR, 2.0, np.float32), 3.5)
    w.push_audio(np.full(SR, 3.0, np.float32), 4.5 + 0.03)  # small jitter: appended back to back
    assert w.audio_end == pytest.approx(4.5)
    (first,) = w.pop_ready(0.0)
    a = first.audio
    assert a is not None and len(a) == 4 * SR
    assert (a[:SR] == 1.0).all()
    assert (a[SR : int(2.5 * SR)] == 0.0).all()
    assert (a[int(2.5 * SR) : int(3.5 * SR)] == 2.0).all()
    assert (a[int(3.5 * SR) :] == 3.0).all()


@pytest.mark.parametrize("popped_during_the_pause", [True, False])
def test_an_hour_long_audio_pause_is_zero_filled_in_bounded_memory(
    popped_during_the_pause: bool,
) -> None:
    """Security review L9: a pause was zero-filled in one np.zeros of pause x 64 KB (1 h: 230
    MB, held until the next window). Now only what windows still to come can read is filled,
    and the audio after the pause stays aligned to its media time."""
    import tracemalloc

    w = SessionWindower(4.0, 2.0, 1.0)
    w.push_audio(np.ones(SR, np.float32), 1.0)
    if popped_during_the_pause:  # the live path: the session clock cuts windows meanwhile
        for t in range(2, 3600):
            w.pop_ready(0.0, media_now=float(t))
    tracemalloc.start()
    try:
        w.push_audio(np.full(320, 2.0, np.float32), 3600.02)  # the next packet, an hour on
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, peak  # ~770 KB of zeros at most (was 230 MB)
    assert w.audio_end == pytest.approx(3600.02)
    assert w.buffered_samples <= (4.0 + 4 * 2.0) * SR + 320
    w.push_audio(np.full(4 * SR, 3.0, np.float32), 3604.02)
    windows = w.pop_ready(0.0)
    assert windows and all(x.audio is not None for x in windows)
    assert windows[-1].media_end == pytest.approx(3604.0)
    (across,) = [x for x in windows if x.media_start == pytest.approx(3598.0)]
    a = across.audio
    assert a is not None and len(a) == 4 * SR  # the whole window, the pause part as zeros
    assert (a[: 2 * SR] == 0.0).all() and (a[2 * SR : 2 * SR + 320] == 2.0).all()
    assert (a[2 * SR + 320 :] == 3.0).all()


def test_audio_track_that_starts_late_gives_a_short_first_window() -> None:
    w = SessionWindower(4.0, 2.0, 2.0)
    w.push_audio(np.ones(SR * 4, np.float32), 5.0)  # covers media 1.0 .. 5.0
    w.offer_frame(5.0)
    (first,) = w.pop_ready(0.0)
    assert first.media_start == 0.0 and len(first.audio) == 3 * SR


def test_each_window_says_when_its_audio_starts() -> None:
    """Word times are the ASR's seconds into the window's audio plus audio_start: a track that
    starts inside the window must not shift every word of it by the silence before it."""
    w = SessionWindower(4.0, 2.0, 2.0)
    w.push_audio(np.ones(int(SR * 5.5), np.float32), 7.0)  # covers media 1.5 .. 7.0
    first, second = w.pop_ready(0.0)
    assert first.audio_start == pytest.approx(1.5) and len(first.audio) == int(2.5 * SR)
    assert second.audio_start == pytest.approx(2.0) == second.media_start
    assert w.flush(0.0)[-1].audio_start == pytest.approx(4.0)


def test_only_the_last_window_of_a_session_is_marked_last() -> None:
    """The session's last window owns the words up to its very end (workers/transcript.py)."""
    w = SessionWindower(4.0, 2.0, 2.0)
    _push_seconds(w, 9.0)
    popped = w.pop_ready(0.0)
    flushed = w.flush(0.0)
    assert [x.last for x in popped + flushed] == [False] * len(popped) + [True]
    assert flushed[-1].partial and flushed[-1].media_start == 6.0  # [6, 9): 1 s not yet covered


def test_memory_stays_bounded_over_a_long_session() -> None:
    w = SessionWindower(4.0, 2.0, video_fps=2.0)
    frame = np.zeros((48, 64, 3), np.uint8)
    peak_samples = peak_frames = emitted = 0
    chunk = 320
    for i in range(0, 600 * SR, chunk):  # 10 minutes
        t = (i + chunk) / SR
        w.push_audio(np.zeros(chunk, np.float32), t)
        if i % (SR // 15) < chunk and w.offer_frame(t):  # ~15 fps camera
            w.push_frame(frame, t)
        emitted += len(w.pop_ready(0.0))
        peak_samples = max(peak_samples, w.buffered_samples)
        peak_frames = max(peak_frames, w.buffered_frames)
    assert emitted == 299  # windows ending at 4, 6, ..., 600 s
    assert peak_samples <= (4.0 + 2.0) * SR + chunk  # window + hop of audio at most
    assert peak_frames <= (4.0 + 2.0) * 2 + 1
    assert w.windows_dropped == 0


def test_memory_stays_bounded_when_nobody_pops() -> None:
    w = SessionWindower(4.0, 2.0, video_fps=2.0, max_backlog_windows=3)
    _push_seconds(w, 120.0, chunk=1600)
    assert w.windows_dropped > 40
    assert w.buffered_samples <= (4.0 + 3 * 2.0 + 2.0) * SR + 1600
    ready = w.pop_ready(0.0)
    assert 1 <= len(ready) <= 4  # only the recent backlog is still there
    assert ready[-1].media_end == pytest.approx(120.0)


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(ValueError):
        SessionWindower(4.0, 5.0, 2.0)
    with pytest.raises(ValueError):
        SessionWindower(4.0, 2.0, 0.0)


def test_video_ahead_of_audio_does_not_cut_a_window_short() -> None:
    """Video often arrives a few hundred ms before audio: the window waits for its audio."""
    w = SessionWindower(4.0, 2.0, 2.0)
    w.push_audio(np.zeros(int(3.8 * 16000), np.float32), 3.8)
    for t in (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.3):
        if w.offer_frame(t):
            w.push_frame(np.zeros((4, 4, 3), np.uint8), t)
    assert w.pop_ready(0.0) == []
    w.push_audio(np.zeros(int(0.2 * 16000), np.float32), 4.0)
    (window,) = w.pop_ready(0.0)
    assert window.audio is not None and window.audio.size == 4 * 16000


def test_video_only_sessions_are_cut_on_video_time() -> None:
    w = SessionWindower(2.0, 1.0, 2.0)
    for i in range(9):
        if w.offer_frame(0.25 * i):
            w.push_frame(np.zeros((4, 4, 3), np.uint8), 0.25 * i)
    assert [x.seq for x in w.pop_ready(0.0)] == [0]


def test_a_late_first_burst_re_anchors_the_audio_clock() -> None:
    """Capture starts at t=0 but the first second of packets is held up and arrives in a burst
    at t=1.0; afterwards 20 ms chunks arrive in real time. Media time must follow arrival, not
    run a second ahead of it (windows would end "in the future")."""
    w = SessionWindower(2.0, 1.0, 2.0)
    chunk = np.zeros(320, np.float32)  # 20 ms
    for _ in range(50):
        w.push_audio(chunk, 1.0)  # the held-up second, all stamped on arrival
    for k in range(1, 100):
        w.push_audio(chunk, 1.0 + 0.02 * k)
    assert abs(w.audio_end - (1.0 + 0.02 * 99)) <= 0.25


def test_audio_faster_than_real_time_is_dropped_and_counted() -> None:
    """Review M9: a peer sending 20x real time got 20x the windows (199 events in 20 s), and
    its ASR and inference load crowded out the other sessions. Audio may run at most
    MAX_AHEAD_SECONDS ahead of its arrival; the rest is dropped and counted."""
    from workers.windowing import MAX_AHEAD_SECONDS

    w = SessionWindower(4.0, 2.0, 1.0)
    chunk = np.zeros(320, np.float32)  # 20 ms of audio ...
    windows = []
    for k in range(1, 1001):  # ... arriving every 1 ms: 20 s of audio in 1 s
        w.push_audio(chunk, 0.001 * k)
        windows += w.pop_ready(0.0)
    assert w.audio_end <= 1.0 + MAX_AHEAD_SECONDS + 0.02
    assert w.audio_dropped_ahead >= 18 * SR
    assert len(windows) == 0  # no 4 s window can end by t = 1.5 s
    # A real-time sender loses nothing.
    rt = SessionWindower(4.0, 2.0, 1.0)
    _push_seconds(rt, 10.0)
    assert rt.audio_dropped_ahead == 0 and rt.audio_end == pytest.approx(10.0)
