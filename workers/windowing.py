"""Rolling windows over one session's audio and sampled video frames.

Time base: media time = seconds since the session started, on the session's monotonic arrival
clock (aiortc timestamps restart per track, so the streaming side stamps arrival; the offline
extractor uses the file's presentation times). Window k covers [k·hop, k·hop + window).

Audio: the sample count is the clock. The first chunk anchors the audio track at
`media_time_end - len/16000`; later chunks are appended back to back, because arrival stamps jitter
by tens of ms while the samples themselves are gap-free. Only when a stamp says the track is more
than GAP_SECONDS (0.2 s) ahead of the samples (the track paused, packets were lost) is the gap
filled with zeros, so later audio stays aligned with video; and when the samples run more than
GAP_SECONDS ahead of the stamps (the first packets arrived late, in a burst), the anchor moves
earlier, so that windows never end after the moment their audio actually arrived. Audio cannot
run ahead of its arrival for long, though: once the anchor is at 0, samples that would end more
than MAX_AHEAD_SECONDS (0.5 s) past their arrival stamp are dropped (counted in
`audio_dropped_ahead`), so a sender that sends faster than real time gets real-time windows, not
K times as many (review M9: a 20x peer yielded 199 events in 20 s and two 10x peers tripled a
normal session's latency).

Video: latest-frame sampling on a grid of 1/video_fps. `offer_frame(t)` answers True for the first
frame at or after each grid point (and claims that slot), so the caller decodes/converts only those
frames and simply drops the rest: at most video_fps frames per second whatever the camera sends.

Readiness: a window is emitted by `pop_ready` once its end has been reached by the audio track
when the session has one (ASR needs the whole window: video often arrives a few hundred ms ahead
of audio, and cutting on it would truncate the window's speech), or by the video track otherwise,
unless the caller passes `media_now` (the session clock), which lets windows complete when a
track stalls.

Memory: after each emit, audio and frames older than the next window's start are dropped, so a
session holds at most window + hop seconds of audio (~380 KB at 4 s / 2 s) and the frames in that
span. If the caller stops popping, windows that fall more than `max_backlog_windows` behind are
skipped and counted in `windows_dropped`, so memory stays bounded either way.

Session end: `flush()` emits the first not-yet-emitted window cut short at the media time reached,
provided it holds at least `min_tail_seconds` (0.5 s) of media no earlier window covered; a
session shorter than one window therefore still gives one (short) window.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["GAP_SECONDS", "MAX_AHEAD_SECONDS", "RawWindow", "SessionWindower"]

log = logging.getLogger(__name__)

GAP_SECONDS = 0.2
MAX_AHEAD_SECONDS = 0.5
_EPS = 1e-6


@dataclass
class RawWindow:
    """Raw media of one window, handed to the feature extractor (never to Redis)."""

    seq: int
    media_start: float
    media_end: float
    wall_start: float
    wall_end: float
    audio: np.ndarray | None
    """float32 mono 16 kHz covering the part of the window the audio track reached; None if no
    audio at all (no audio track, or it started after the window)."""
    frames: list[tuple[float, np.ndarray]] = field(default_factory=list)
    """Sampled frames (media_time, RGB uint8 (H, W, 3)) with media_start <= time < media_end."""
    partial: bool = False
    """True for the short last window emitted by flush()."""
    audio_start: float | None = None
    """Media time of audio[0]: later than media_start when the audio track began inside the
    window. None: media_start (windows built by hand)."""
    last: bool = False
    """No later window follows (the last window of a flush()): it owns the words up to its very
    end (workers/transcript.py)."""


class SessionWindower:
    """Cuts one session's audio and sampled frames into overlapping windows. Not thread-safe:
    one session, one owner (the session's asyncio task or the offline decoding loop)."""

    def __init__(
        self,
        window_seconds: float,
        hop_seconds: float,
        video_fps: float,
        sample_rate: int = 16000,
        *,
        max_backlog_windows: int = 4,
        min_tail_seconds: float = 0.5,
    ) -> None:
        if window_seconds <= 0 or not 0 < hop_seconds <= window_seconds:
            raise ValueError("need window_seconds > 0 and 0 < hop_seconds <= window_seconds")
        if video_fps <= 0 or sample_rate <= 0:
            raise ValueError("video_fps and sample_rate must be > 0")
        self.window = float(window_seconds)
        self.hop = float(hop_seconds)
        self.fps = float(video_fps)
        self.sr = int(sample_rate)
        self.max_backlog = max(1, int(max_backlog_windows))
        self.min_tail = float(min_tail_seconds)

        self._next_seq = 0
        self._emitted_end = 0.0  # media end of the last emitted window
        self._audio_origin: float | None = None  # media time of audio sample 0
        self._chunks: list[tuple[int, np.ndarray]] = []  # (first sample index, samples)
        self._n_samples = 0  # samples received (plus zero-filled gaps) since audio_origin
        self._base = 0  # index of the first sample still held
        self._frames: list[tuple[float, np.ndarray]] = []
        self._next_slot = 0  # grid index of the next frame to sample
        self._video_time = 0.0
        self.windows_dropped = 0
        self.audio_dropped_ahead = 0
        """Samples dropped because they ran more than MAX_AHEAD_SECONDS ahead of arrival."""
        self.frames_offered = 0
        self.frames_sampled = 0
        self.closed = False

    # ---- input ---------------------------------------------------------------------------

    @property
    def audio_end(self) -> float:
        """Media time up to which audio has been received."""
        if self._audio_origin is None:
            return 0.0
        return self._audio_origin + self._n_samples / self.sr

    @property
    def media_time(self) -> float:
        """Furthest media time any track has reached."""
        return max(self.audio_end, self._video_time)

    @property
    def ready_time(self) -> float:
        """How far windows may be cut: the audio's end if there is audio, else the video's."""
        return self.audio_end if self._audio_origin is not None else self._video_time

    def push_audio(self, samples: np.ndarray, media_time_end: float) -> None:
        """Append float32 mono samples at `sample_rate` that ended arriving at `media_time_end`."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if x.size == 0:
            return
        if self._audio_origin is None:
            self._audio_origin = max(0.0, media_time_end - x.size / self.sr)
        else:
            gap = (media_time_end - x.size / self.sr) - self.audio_end
            if gap > GAP_SECONDS:
                self._fill_gap(gap)
            elif gap < -GAP_SECONDS and self._audio_origin > 0.0:
                # Samples ahead of their arrival: the first packets came late, in a burst, so the
                # anchor was late. Re-anchor earlier, or every window would end "in the future".
                shift = min(-gap, self._audio_origin)
                self._audio_origin -= shift
                log.debug("audio re-anchored %.3f s earlier", shift)
            ahead = self.audio_end + x.size / self.sr - media_time_end
            if ahead > MAX_AHEAD_SECONDS:
                # Faster than real time (the anchor cannot move before 0): keep only what
                # brings the track up to its arrival stamp, the newest samples.
                drop = min(x.size, int(round(ahead * self.sr)))
                self.audio_dropped_ahead += drop
                x = x[drop:]
                if x.size == 0:
                    return
        self._append(x)
        self._skip_backlog()

    def _fill_gap(self, gap: float) -> None:
        """Zeros for a pause of `gap` seconds after audio_end, but only where a window still to
        be emitted can read them: from the next window's start, and no earlier than the backlog
        limit before the new audio. The samples before that are counted, never held. One
        np.zeros of the whole pause took 230 MB for an hour (review L9); this one is at most
        window + max_backlog * hop seconds (~770 KB at 4 s / 2 s)."""
        start = self.audio_end
        backlog_from = start + gap - self.window - self.max_backlog * self.hop
        needed_from = max(start, self._next_seq * self.hop, backlog_from)
        skip = int(round((needed_from - start) * self.sr))
        fill = int(round(gap * self.sr)) - skip
        if skip > 0:
            self._n_samples += skip
            self._base = max(self._base, self._n_samples)
        if fill > 0:
            self._append(np.zeros(fill, dtype=np.float32))
        log.debug("audio gap of %.3f s: %d samples zero-filled, %d skipped", gap, fill, skip)

    def _append(self, x: np.ndarray) -> None:
        self._chunks.append((self._n_samples, x))
        self._n_samples += x.size

    def offer_frame(self, media_time: float) -> bool:
        """True if the frame arriving at `media_time` should be sampled (then call push_frame)."""
        self.frames_offered += 1
        self._video_time = max(self._video_time, media_time)
        slot = media_time * self.fps
        if slot + _EPS < self._next_slot:
            return False
        self._next_slot = math.floor(slot + _EPS) + 1
        self.frames_sampled += 1
        return True

    def push_frame(self, rgb: np.ndarray, media_time: float) -> None:
        """Keep a sampled frame (RGB uint8) for the windows that contain `media_time`."""
        self._video_time = max(self._video_time, media_time)
        if media_time + _EPS < self._next_seq * self.hop:
            return  # belongs only to windows already emitted
        self._frames.append((media_time, rgb))
        self._skip_backlog()

    # ---- output --------------------------------------------------------------------------

    def pop_ready(
        self, wall_clock_of_media_zero: float, media_now: float | None = None
    ) -> list[RawWindow]:
        """All windows whose end media time has been reached, in order (each exactly once).

        `media_now` (the session clock, or the slowest track when decoding a file) overrides the
        default "furthest track" notion of now.
        """
        now = self.ready_time if media_now is None else media_now
        out: list[RawWindow] = []
        while not self.closed:
            start = self._next_seq * self.hop
            end = start + self.window
            if end > now + _EPS:
                break
            out.append(self._emit(start, end, wall_clock_of_media_zero))
        return out

    def flush(
        self, wall_clock_of_media_zero: float, media_now: float | None = None
    ) -> list[RawWindow]:
        """Session end: full windows still pending, then the last partial window (see module doc).

        The windower is closed afterwards: later pushes are ignored by pop_ready.
        """
        now = self.media_time if media_now is None else max(media_now, self.media_time)
        out = self.pop_ready(wall_clock_of_media_zero, now)
        if not self.closed:
            start = self._next_seq * self.hop
            new_from = max(start, self._emitted_end)
            if now - new_from >= self.min_tail - _EPS and now > start:
                out.append(self._emit(start, now, wall_clock_of_media_zero, partial=True))
        if out:
            out[-1].last = True
        self.closed = True
        self._chunks.clear()
        self._frames.clear()
        return out

    def _emit(self, start: float, end: float, wall0: float, partial: bool = False) -> RawWindow:
        audio, audio_start = self._audio_between(start, end)
        window = RawWindow(
            seq=self._next_seq,
            media_start=start,
            media_end=end,
            wall_start=wall0 + start,
            wall_end=wall0 + end,
            audio=audio,
            frames=[(t, f) for t, f in self._frames if start - _EPS <= t < end - _EPS],
            partial=partial,
            audio_start=audio_start,
        )
        self._next_seq += 1
        self._emitted_end = end
        self._trim()
        return window

    def recent_audio(self, start: float) -> tuple[np.ndarray | None, float | None]:
        """The audio held from media time `start` (or the oldest held, if later) to the end,
        and the media time of its first sample (partial transcripts: workers/partials.py)."""
        return self._audio_between(start, self.audio_end)

    # ---- memory --------------------------------------------------------------------------

    def _audio_between(self, start: float, end: float) -> tuple[np.ndarray | None, float | None]:
        """The samples held between two media times, and the media time of the first one."""
        if self._audio_origin is None:
            return None, None
        i0 = max(self._base, int(round((start - self._audio_origin) * self.sr)))
        i1 = min(self._n_samples, int(round((end - self._audio_origin) * self.sr)))
        if i1 <= i0:
            return None, None
        parts = []
        for first, x in self._chunks:
            lo, hi = max(i0, first), min(i1, first + x.size)
            if lo < hi:
                parts.append(x[lo - first : hi - first])
        if not parts:
            return None, None
        return np.concatenate(parts), self._audio_origin + i0 / self.sr

    def _trim(self) -> None:
        """Drop audio and frames that only already-emitted windows needed."""
        keep_from = self._next_seq * self.hop
        self._frames = [(t, f) for t, f in self._frames if t + _EPS >= keep_from]
        if self._audio_origin is None:
            return
        cut = int(round((keep_from - self._audio_origin) * self.sr))
        kept: list[tuple[int, np.ndarray]] = []
        for first, x in self._chunks:
            if first + x.size <= cut:
                continue
            if first < cut:
                x, first = x[cut - first :], cut
            kept.append((first, x))
        self._chunks = kept
        self._base = max(self._base, cut)

    def _skip_backlog(self) -> None:
        """If nobody pops, skip windows so that memory stays bounded (counted as dropped)."""
        now = self.media_time
        limit = self.window + self.max_backlog * self.hop
        skipped = 0
        while now - self._next_seq * self.hop > limit:
            self._next_seq += 1
            skipped += 1
        if skipped:
            self.windows_dropped += skipped
            log.warning("windowing backlog: skipped %d windows nobody popped", skipped)
            self._trim()

    @property
    def buffered_samples(self) -> int:
        """Audio samples currently held (for tests and metrics)."""
        return sum(x.size for _, x in self._chunks)

    @property
    def buffered_frames(self) -> int:
        return len(self._frames)
