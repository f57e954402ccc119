"""stream/clients/ (tracks, devices, `merclip capture`): the capture tracks fed with arrays, the
CLI without devices.

No camera or microphone exists on these machines, so the sources here subclass the real device
interfaces (FrameSource, QueuedAudioSource) and feed frames and blocks through the same track
code the devices use; everything after the source is real.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError
from media import face_frame, face_video

from stream.clients.devices import OpenCVCamera
from stream.clients.tracks import (
    AUDIO_RATE,
    BlockQueue,
    CameraTrack,
    FrameSource,
    MicrophoneTrack,
    QueuedAudioSource,
)
from stream.errors import NoDeviceError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


class ArrayFrames(FrameSource):
    """`count` frames made by `make(i)`, then the end. Records reads and close."""

    def __init__(
        self, make: Callable[[int], np.ndarray], count: int, slow: dict[int, float] | None = None
    ) -> None:
        self.make = make
        self.count = count
        self.slow = slow or {}
        self.reads = 0
        self.closed = 0

    def read(self) -> np.ndarray | None:
        if self.reads >= self.count:
            return None
        time.sleep(self.slow.get(self.reads, 0.0))
        frame = self.make(self.reads)
        self.reads += 1
        return frame

    def close(self) -> None:
        self.closed += 1


class FedAudio(QueuedAudioSource):
    """A QueuedAudioSource pushed from a thread in blocks of `block` samples, like sounddevice's
    callback: in real time, or all at once (`realtime=False`)."""

    def feed(self, samples: np.ndarray, block: int, realtime: bool = True) -> threading.Thread:
        def run() -> None:
            start = time.monotonic()
            for i, at in enumerate(range(0, len(samples), block)):
                if realtime:
                    time.sleep(max(0.0, start + i * block / self.sample_rate - time.monotonic()))
                self.push(samples[at : at + block])
            self.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


def gradient(i: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    w, h = size
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (np.arange(w) * 4 + i) % 256
    img[..., 1] = (np.arange(h)[:, None] * 5) % 256
    img[..., 2] = i % 256
    return img


def sine(seconds: float, rate: int, amplitude: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


async def drain(track: CameraTrack | MicrophoneTrack, limit: int = 10_000) -> list[av.Frame]:
    frames = []
    with pytest.raises(MediaStreamError):
        for _ in range(limit):
            frames.append(await track.recv())
    return frames


# -- camera track ---------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [15.0, 7.0])
async def test_camera_track_pts_rise_at_the_declared_rate_in_real_time(fps: float) -> None:
    source = ArrayFrames(gradient, count=8)
    track = CameraTrack(source, fps=fps)
    started = time.monotonic()
    frames = await drain(track)
    elapsed = time.monotonic() - started

    assert len(frames) == 8 and track.frames_sent == 8
    pts = [f.pts for f in frames]
    assert pts == [round(n * 90000 / fps) for n in range(8)]
    assert all(f.time_base == Fraction(1, 90000) for f in frames)
    # Paced: 7 intervals of 1/fps, not a burst.
    assert 7 / fps * 0.9 <= elapsed <= 7 / fps + 0.5, elapsed
    # The pictures arrive unchanged.
    for n, frame in enumerate(frames):
        np.testing.assert_array_equal(frame.to_ndarray(format="rgb24"), gradient(n))
    assert track.readyState == "ended"
    await asyncio.sleep(0.05)
    assert source.closed == 1


async def test_camera_track_skips_ticks_after_a_slow_read_instead_of_drifting() -> None:
    fps = 20.0
    source = ArrayFrames(gradient, count=6, slow={2: 0.3})  # read 2 takes 6 frame intervals
    track = CameraTrack(source, fps=fps)
    first = time.monotonic()
    stamps: list[tuple[float, int]] = []
    with pytest.raises(MediaStreamError):
        while True:
            frame = await track.recv()
            stamps.append((time.monotonic() - first, frame.pts))
    pts = [p for _, p in stamps]
    assert all(b > a for a, b in zip(pts, pts[1:], strict=False)), pts
    assert all(p % 4500 == 0 for p in pts)  # on the 20 fps grid
    assert track.ticks_skipped >= 4
    # After the stall the pts follow the wall clock again (within two frame intervals).
    for when, p in stamps[3:]:
        assert abs(p / 90000 - when) <= 2 / fps, stamps


async def test_camera_track_stop_ends_recv_and_closes_the_source() -> None:
    source = ArrayFrames(gradient, count=1000)
    track = CameraTrack(source, fps=10)
    await track.recv()
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()
    await asyncio.sleep(0.05)
    assert source.closed == 1


async def test_opencv_camera_on_a_video_stream_gives_rgb_at_the_asked_size(
    media_dir: Path,
) -> None:
    # No webcam here, but cv2.VideoCapture opens a file through the same class and grabber
    # thread a webcam uses (and users may point --camera at a file or stream URL).
    video = face_video(media_dir, "", seconds=1.0, fps=15, size=(320, 240))
    camera = OpenCVCamera(str(video), size=(160, 120))
    track = CameraTrack(camera, fps=30)
    frames = await drain(track)
    assert 1 <= len(frames) <= 15
    rgb = frames[0].to_ndarray(format="rgb24")
    assert rgb.shape == (120, 160, 3)
    # Channel order is RGB (the photo is redder than it is blue; BGR would swap the means).
    expected = face_frame(0, 15, (160, 120)).reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(rgb.reshape(-1, 3).mean(axis=0), expected, atol=10)
    with pytest.raises(NoDeviceError, match="no camera at"):
        OpenCVCamera(str(media_dir / "missing.mp4"))


# -- microphone track -----------------------------------------------------------------------


def _pcm(frames: list[av.Frame]) -> np.ndarray:
    """(N, 2) int16 from s16 packed stereo frames."""
    return np.concatenate([f.to_ndarray().reshape(-1, 2) for f in frames])


async def test_microphone_track_at_48k_keeps_the_level_and_counts_pts_in_samples() -> None:
    sent = sine(1.0, AUDIO_RATE, amplitude=0.5)
    source = FedAudio(AUDIO_RATE, max_blocks=1000)
    source.feed(sent, block=480, realtime=False)
    track = MicrophoneTrack(source)
    frames = await drain(track)

    assert len(frames) == 50  # 1 s in 20 ms frames
    for n, frame in enumerate(frames):
        assert frame.format.name == "s16" and frame.layout.name == "stereo"
        assert frame.sample_rate == 48000 and frame.samples == 960
        assert frame.pts == n * 960 and frame.time_base == Fraction(1, 48000)
    pcm = _pcm(frames)
    np.testing.assert_array_equal(pcm[:, 0], pcm[:, 1])  # L = R, no 0.707 up-mix
    got = pcm[:, 0].astype(np.float32) / 32767
    np.testing.assert_allclose(got, sent, atol=1.5 / 32767)
    assert source.dropped_blocks == 0


async def test_microphone_track_resamples_44k1_stereo_at_the_same_level() -> None:
    rate = 44100
    mono = sine(1.0, rate, amplitude=0.3, freq=300.0)
    source = FedAudio(rate, channels=2, max_blocks=1000)
    source.feed(np.stack([mono, mono], axis=1), block=441, realtime=False)
    track = MicrophoneTrack(source)
    frames = await drain(track)

    got = _pcm(frames)[:, 0].astype(np.float32) / 32767
    # ~1 s at 48 kHz (the resampler holds back a few ms of its filter).
    assert 0.95 * AUDIO_RATE <= got.size <= AUDIO_RATE, got.size
    rms_sent = float(np.sqrt(np.mean(mono**2)))
    rms_got = float(np.sqrt(np.mean(got[2000:-2000] ** 2)))
    assert rms_got == pytest.approx(rms_sent, rel=0.02)
    # Still a 300 Hz tone: the resampler did not alias or change the pitch.
    spectrum = np.abs(np.fft.rfft(got[: AUDIO_RATE // 2 * 2]))
    peak_hz = np.argmax(spectrum) * AUDIO_RATE / (len(got[: AUDIO_RATE // 2 * 2]))
    assert abs(peak_hz - 300) < 5, peak_hz


async def test_microphone_track_follows_a_real_time_producer() -> None:
    sent = sine(0.6, 16000, amplitude=0.25)
    source = FedAudio(16000, max_blocks=50)
    source.feed(sent, block=160)  # 10 ms blocks every 10 ms
    track = MicrophoneTrack(source)
    started = time.monotonic()
    frames = await drain(track)
    assert time.monotonic() - started >= 0.5  # paced by the producer, not faster
    assert sum(f.samples for f in frames) == pytest.approx(0.6 * AUDIO_RATE, abs=960 * 2)
    assert source.dropped_blocks == 0


async def test_microphone_track_stop_ends_a_waiting_recv() -> None:
    source = QueuedAudioSource(48000)  # a microphone that never delivers
    track = MicrophoneTrack(source)
    pending = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.1)
    track.stop()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(pending, 2.0)


def test_block_queue_drops_the_oldest_and_counts() -> None:
    q = BlockQueue(maxlen=3)
    for i in range(5):
        q.put(np.full((100 + i, 1), i, np.float32))
    assert q.dropped_blocks == 2 and q.dropped_samples == 100 + 101
    assert len(q) == 3
    got = [q.get(0) for _ in range(3)]
    assert [int(b[0, 0]) for b in got if b is not None] == [2, 3, 4]
    assert q.get(0.01) is None and not q.closed
    q.close()
    q.put(np.zeros((1, 1), np.float32))  # after close: ignored
    assert q.get(None) is None and q.closed


async def test_a_slow_reader_loses_the_oldest_audio_not_the_newest() -> None:
    # A producer thread pushes 1 s into a queue of 10 blocks before anyone reads: the track
    # must start from the newest 100 ms and the drops must be counted.
    rate = 48000
    ramp = np.arange(rate, dtype=np.float32) / rate * 0.5  # value tells the position
    source = FedAudio(rate, max_blocks=10)
    source.feed(ramp, block=480, realtime=False).join()
    assert source.dropped_blocks == 90
    frames = await drain(MicrophoneTrack(source))
    got = _pcm(frames)[:, 0].astype(np.float32) / 32767
    assert got.size == 4800
    np.testing.assert_allclose(got, ramp[-4800:], atol=2 / 32767)


# -- the command without devices ------------------------------------------------------------


def _merclip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.app", "capture", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_capture_without_devices_fails_with_a_clear_message() -> None:
    proc = _merclip("--url", "http://127.0.0.1:9/")
    assert proc.returncode == 2, proc
    err = proc.stderr
    assert "Traceback" not in err
    assert "nothing to capture" in err
    assert "no camera at index 0" in err and "--camera INDEX" in err
    assert "no default microphone" in err and "--mic DEVICE" in err
    assert "--list-devices" in err
    assert proc.stdout == ""


def test_capture_named_devices_that_are_missing_are_named() -> None:
    proc = _merclip("--camera", "3", "--no-audio")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no camera at index 3" in proc.stderr
    proc = _merclip("--mic", "USB Headset", "--no-video")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no microphone 'USB Headset'" in proc.stderr
    proc = _merclip("--no-audio", "--no-video")
    assert proc.returncode == 2 and "nothing to send" in proc.stderr


def test_list_devices_says_none_are_found() -> None:
    proc = _merclip("--list-devices")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Cameras") and lines[1].strip() == "none found"
    assert lines[2].startswith("Microphones") and lines[3].strip().startswith("none found")
    assert "WARN" not in proc.stderr  # OpenCV's per-index warnings are silenced
