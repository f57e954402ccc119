"""The capture client's WebRTC tracks, fed by small source interfaces so tests can use arrays.

The device is the only thing behind a small interface, so the track code a camera or microphone
uses is the code tests run with arrays (the devices themselves are in stream/clients/devices.py):

- `FrameSource.read() -> RGB ndarray | None` (None: the source ended). `CameraTrack(source, fps)`
  paces reads at `fps` with 90 kHz pts, the way aiortc's VideoStreamTrack does, and skips ticks
  instead of drifting when a read was slow.
- `AudioSource.read(timeout) -> (N, C) float32 block | None` at `sample_rate`.
  `QueuedAudioSource` is a source fed by another thread through a bounded `BlockQueue` (drop
  oldest, count drops). `MicrophoneTrack(source)` turns blocks into 20 ms 48 kHz s16 stereo
  frames (L = R at the source's level: letting libswresample up-mix would put 0.707 in each
  channel, and its down-mix of stereo sums channels, so channels are averaged and duplicated here
  in numpy). The device is the clock: the track sends a frame as soon as 960 samples are there.

Each track reads, resamples and converts in its own one-thread executor: the event loop carries
RTP for the whole connection and must not block on a device.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import fractions
import threading
import time
from abc import ABC, abstractmethod

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

__all__ = [
    "AUDIO_RATE",
    "VIDEO_CLOCK_RATE",
    "AudioSource",
    "BlockQueue",
    "CameraTrack",
    "FrameSource",
    "MicrophoneTrack",
    "QueuedAudioSource",
]

VIDEO_CLOCK_RATE = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_RATE = 48000
AUDIO_FRAME_SAMPLES = 960  # 20 ms, what Opus sends per packet
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
READ_TIMEOUT_SECONDS = 0.25
"""How long a track's read blocks before it checks whether it was stopped."""


# -- video ----------------------------------------------------------------------------------


class FrameSource(ABC):
    """Where a CameraTrack's pictures come from. Methods are called from a worker thread."""

    @abstractmethod
    def read(self) -> np.ndarray | None:
        """The next (H, W, 3) uint8 RGB frame, or None when the source has ended."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device. Called once when the track stops."""


class CameraTrack(MediaStreamTrack):
    """A video track reading `source` at `fps`: pts on the 90 kHz clock, paced in real time.

    Tick n is due at start + n / fps with pts round(n * 90000 / fps). When a read ran late by
    more than a frame, the track jumps to the current tick rather than sending a burst, so pts
    keeps following the wall clock and stays strictly increasing.
    """

    kind = "video"

    def __init__(self, source: FrameSource, fps: float = 15.0) -> None:
        super().__init__()
        if fps <= 0:
            raise ValueError("fps must be > 0")
        self.source = source
        self.fps = fps
        self.frames_sent = 0
        self.ticks_skipped = 0
        self._tick = -1
        self._start: float | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="camera")

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start, self._tick = now, 0
        else:
            self._tick += 1
            due = self._start + self._tick / self.fps
            if now > due + 1.0 / self.fps:  # late: resume on the current tick
                current = int((now - self._start) * self.fps)
                self.ticks_skipped += current - self._tick
                self._tick = current
            else:
                await asyncio.sleep(max(0.0, due - now))
        loop = asyncio.get_running_loop()
        try:
            frame = await loop.run_in_executor(self._executor, self._read_frame)
        except RuntimeError:  # executor shut down: the track was stopped meanwhile
            raise MediaStreamError from None
        if frame is None or self.readyState != "live":
            self.stop()
            raise MediaStreamError
        frame.pts = round(self._tick * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        self.frames_sent += 1
        return frame

    def _read_frame(self) -> av.VideoFrame | None:
        rgb = self.source.read()
        if rgb is None:
            return None
        return av.VideoFrame.from_ndarray(rgb, format="rgb24")

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            self._executor.submit(self.source.close)
            self._executor.shutdown(wait=False)


# -- audio ----------------------------------------------------------------------------------


class BlockQueue:
    """A thread-safe FIFO of audio blocks holding at most `maxlen`; when full, `put` drops the
    oldest block and counts it (a slow reader loses the past, never the present)."""

    def __init__(self, maxlen: int) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be >= 1")
        self.maxlen = maxlen
        self.dropped_blocks = 0
        self.dropped_samples = 0
        self._blocks: collections.deque[np.ndarray] = collections.deque()
        self._closed = False
        self._cond = threading.Condition()

    def put(self, block: np.ndarray) -> None:
        with self._cond:
            if self._closed:
                return
            if len(self._blocks) >= self.maxlen:
                old = self._blocks.popleft()
                self.dropped_blocks += 1
                self.dropped_samples += len(old)
            self._blocks.append(block)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> np.ndarray | None:
        """The oldest block; None when the queue was closed and is empty, or after `timeout`
        with nothing queued (check `closed` to tell the two apart)."""
        with self._cond:
            self._cond.wait_for(lambda: self._blocks or self._closed, timeout)
            return self._blocks.popleft() if self._blocks else None

    def close(self) -> None:
        """No more blocks will come; readers get the rest, then None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._blocks)


class AudioSource(ABC):
    """Where a MicrophoneTrack's sound comes from: float32 blocks at `sample_rate`."""

    sample_rate: int
    channels: int

    @abstractmethod
    def read(self, timeout: float) -> np.ndarray | None:
        """The next (N, channels) float32 block in [-1, 1]; an empty block when none came within
        `timeout`; None when the source has ended."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device. Called once when the track stops."""


class QueuedAudioSource(AudioSource):
    """An AudioSource fed by a producer thread (a device callback) through a BlockQueue."""

    def __init__(self, sample_rate: int, channels: int = 1, max_blocks: int = 50) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.queue = BlockQueue(max_blocks)

    def push(self, block: np.ndarray) -> None:
        """Called by the producer (possibly a real-time audio thread): copy and enqueue."""
        self.queue.put(np.array(block, dtype=np.float32, copy=True).reshape(-1, self.channels))

    def end(self) -> None:
        """The producer has no more audio."""
        self.queue.close()

    def read(self, timeout: float) -> np.ndarray | None:
        block = self.queue.get(timeout)
        if block is None:
            return None if self.queue.closed else np.zeros((0, self.channels), np.float32)
        return block

    @property
    def dropped_blocks(self) -> int:
        return self.queue.dropped_blocks

    def close(self) -> None:
        self.queue.close()


class MicrophoneTrack(MediaStreamTrack):
    """An audio track of 20 ms, 48 kHz, s16 stereo frames (L = R) made from `source` blocks.

    pts counts samples sent (time base 1/48000), so it rises by exactly 960 per frame. Blocks at
    another rate go through one stateful resampler (no clicks at block edges).
    """

    kind = "audio"

    def __init__(self, source: AudioSource) -> None:
        super().__init__()
        self.source = source
        self.samples_sent = 0
        self._pending = np.zeros(0, np.float32)  # 48 kHz mono not yet sent
        self._ended = False
        self._resampler = (
            None
            if source.sample_rate == AUDIO_RATE
            else av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        )
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="microphone")

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            try:
                frame = await loop.run_in_executor(self._executor, self._next_frame)
            except RuntimeError:  # executor shut down: stopped meanwhile
                raise MediaStreamError from None
            if frame is not None:
                return frame
            if self._ended:
                self.stop()
                raise MediaStreamError

    def _next_frame(self) -> av.AudioFrame | None:
        """A frame once 960 samples are there; None after READ_TIMEOUT_SECONDS without one (or
        at the end of the source, with `_ended` set) so recv can notice a stop."""
        deadline = time.monotonic() + READ_TIMEOUT_SECONDS
        while self._pending.size < AUDIO_FRAME_SAMPLES:
            if self._ended:
                return None
            block = self.source.read(max(0.0, deadline - time.monotonic()))
            if block is None:
                self._ended = True
                return None
            if block.size:
                self._pending = np.concatenate([self._pending, self._to_48k_mono(block)])
            elif time.monotonic() >= deadline:
                return None
        mono, self._pending = (
            self._pending[:AUDIO_FRAME_SAMPLES],
            self._pending[AUDIO_FRAME_SAMPLES:],
        )
        pcm = (np.clip(mono, -1.0, 1.0) * 32767.0).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(pcm, 2)[None, :], format="s16", layout="stereo"
        )
        frame.sample_rate = AUDIO_RATE
        frame.pts = self.samples_sent
        frame.time_base = AUDIO_TIME_BASE
        self.samples_sent += AUDIO_FRAME_SAMPLES
        return frame

    def _to_48k_mono(self, block: np.ndarray) -> np.ndarray:
        mono = np.asarray(block, np.float32)
        if mono.ndim == 2:
            mono = mono.mean(axis=1, dtype=np.float32)
        if self._resampler is None:
            return mono
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono)[None, :], "flt", "mono")
        frame.sample_rate = self.source.sample_rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            self._executor.submit(self.source.close)
            self._executor.shutdown(wait=False)
