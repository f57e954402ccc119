"""Test media made on the spot, with no network: speech, a face video, silent / no-face variants.

- speech: Debian `espeak-ng` → `sox` → 16 kHz mono 16-bit WAV (Chromium's fake microphone reads
  it too: --use-file-for-fake-audio-capture=FILE.wav).
- face: a 4:3 view of scikit-image's astronaut photo, panning a few pixels per frame so a video
  codec and the detector see motion, not a still.
- .y4m (YUV4MPEG2 text header + raw I420 frames) for Chromium's fake camera
  (--use-file-for-fake-video-capture=FILE.y4m); .mp4 (H.264 + AAC) or .webm (VP8 + Opus) written
  with PyAV, the speech muxed in.

Files are cached by their parameters inside the directory you pass: asking twice is free.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import wave
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import cv2
import numpy as np
from scipy.signal import resample_poly

__all__ = [
    "CONTINUOUS_SPEECH",
    "SPEECH_TEXT",
    "face_frame",
    "face_video",
    "face_y4m",
    "read_wav_16k",
    "speech_wav",
    "write_wav_16k",
]

SPEECH_RATE = 16000
SPEECH_TEXT = "Hello world, this is a test of the emotion recognition system."
"""A sentence tiny.en transcribes reliably from espeak-ng (asserted on: hello, world, test)."""
CONTINUOUS_SPEECH = (
    "I am very happy to see you again. It has been a long time since we last met, and I have "
    "so many things to tell you about my new job. Please open the window, it is very hot in "
    "here. I think we should turn on the air conditioning before the meeting starts this "
    "afternoon."
)
"""15 s of speech (eight service windows) that tiny.en transcribes word for word from espeak-ng
through 4 s windows at most lead-ins: for tests of the running transcript."""


def _key(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:12]


def speech_wav(tmpdir: str | Path, text: str) -> Path:
    """16 kHz mono 16-bit WAV of `text` spoken by espeak-ng."""
    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    out = tmpdir / f"speech-{_key(text)}.wav"
    if out.exists():
        return out
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (Debian packages espeak-ng, sox)")
    raw = tmpdir / f"speech-{_key(text)}.raw.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, capture_output=True)
    part = out.with_suffix(".part.wav")
    subprocess.run(
        ["sox", str(raw), "-r", str(SPEECH_RATE), "-c", "1", "-b", "16", str(part)],
        check=True,
        capture_output=True,
    )
    raw.unlink()
    part.rename(out)  # atomic: parallel tests never read a half-written file
    return out


def read_wav_16k(path: str | Path) -> np.ndarray:
    """A 16-bit PCM WAV as float32 mono at 16 kHz (channels averaged, resampled if needed)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        rate, channels = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    x = data.astype(np.float32).reshape(-1, channels).mean(axis=1) / 32768.0
    if rate != SPEECH_RATE:
        g = np.gcd(rate, SPEECH_RATE)
        x = resample_poly(x, SPEECH_RATE // g, rate // g).astype(np.float32)
    return x


def write_wav_16k(path: str | Path, audio: np.ndarray) -> Path:
    """Write float32 mono 16 kHz samples as a 16-bit PCM WAV."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SPEECH_RATE)
        w.writeframes(pcm.tobytes())
    return Path(path)


@lru_cache(maxsize=1)
def _astronaut() -> np.ndarray:
    from skimage import data

    img = data.astronaut()  # (512, 512, 3) uint8 RGB, one clear frontal face near (224, 113)
    img.flags.writeable = False
    return img


def face_frame(
    index: int, fps: float = 15, size: tuple[int, int] = (640, 480), face: bool = True
) -> np.ndarray:
    """(H, W, 3) uint8 RGB frame `index` of the test video.

    face=True: a 4:3 head-and-shoulders view cut from the astronaut photo, filling the frame like
    a webcam picture (no hard canvas edges, which Haar mistakes for faces), panning a few pixels.
    face=False: the same motion over smooth random texture (nothing for Haar to find).
    """
    w, h = size
    t = index / fps
    dx = int(round(8 * np.sin(2 * np.pi * 0.5 * t)))
    dy = int(round(5 * np.cos(2 * np.pi * 0.3 * t)))
    x0, y0 = 24 + dx, 6 + dy  # 400×300 view around the face, inside the 512×512 photo
    if face:
        src = np.asarray(_astronaut())
    else:
        noise = np.random.default_rng(1234).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        src = cv2.resize(noise, (512, 512), interpolation=cv2.INTER_LINEAR)
    view = src[y0 : y0 + 300, x0 : x0 + 400]
    return cv2.resize(view, (w, h), interpolation=cv2.INTER_AREA)


def face_y4m(
    tmpdir: str | Path,
    seconds: float,
    fps: int = 15,
    size: tuple[int, int] = (640, 480),
    *,
    face: bool = True,
) -> Path:
    """A YUV4MPEG2 (I420) video of the drifting face; what Chromium's fake camera plays."""
    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    w, h = size
    if w % 2 or h % 2:
        raise ValueError("y4m I420 needs an even width and height")
    out = tmpdir / f"face-{_key(seconds, fps, size, face)}.y4m"
    if out.exists():
        return out
    part = out.with_suffix(".part")
    with part.open("wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode("ascii"))
        for i in range(max(1, int(round(seconds * fps)))):
            yuv = cv2.cvtColor(face_frame(i, fps, size, face), cv2.COLOR_RGB2YUV_I420)
            f.write(b"FRAME\n")
            f.write(yuv.tobytes())
    part.rename(out)
    return out


def face_video(
    tmpdir: str | Path,
    text: str,
    seconds: float,
    *,
    face: bool = True,
    fmt: str = "mp4",
    fps: int = 15,
    size: tuple[int, int] = (320, 240),
    speech_offset: float = 0.3,
) -> Path:
    """A video file with the drifting face and `text` spoken from `speech_offset` seconds.

    fmt "mp4": H.264 + AAC 48 kHz; "webm": VP8 + Opus 48 kHz. text="" gives a silent audio track.
    The speech is cut at `seconds` if longer.
    """
    if fmt not in ("mp4", "webm"):
        raise ValueError("fmt must be 'mp4' or 'webm'")
    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    out = tmpdir / f"video-{_key(text, seconds, face, fps, size, speech_offset)}.{fmt}"
    if out.exists():
        return out
    rate = 48000
    n_audio = int(round(seconds * rate))
    audio = np.zeros(n_audio, dtype=np.float32)
    if text:
        speech = resample_poly(read_wav_16k(speech_wav(tmpdir, text)), 3, 1).astype(np.float32)
        start = int(speech_offset * rate)
        speech = speech[: max(0, n_audio - start)]
        audio[start : start + len(speech)] = speech

    part = out.with_name(out.stem + ".part." + fmt)
    vcodec, acodec = ("libx264", "aac") if fmt == "mp4" else ("libvpx", "libopus")
    with av.open(str(part), "w", format=fmt) as container:
        vs = container.add_stream(vcodec, rate=fps)
        vs.width, vs.height = size
        vs.pix_fmt = "yuv420p"
        if vcodec == "libx264":
            vs.options = {"preset": "ultrafast", "tune": "zerolatency"}
        as_ = container.add_stream(acodec, rate=rate)
        as_.layout = "mono"
        for i in range(max(1, int(round(seconds * fps)))):
            frame = av.VideoFrame.from_ndarray(face_frame(i, fps, size, face), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in vs.encode(frame):
                container.mux(packet)
        for packet in vs.encode():
            container.mux(packet)
        step = 960  # 20 ms; the encoder re-frames as it needs (AAC 1024, Opus 960)
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
        for start in range(0, n_audio, step):
            chunk = pcm[start : start + step]
            aframe = av.AudioFrame.from_ndarray(chunk[None, :], format="s16", layout="mono")
            aframe.sample_rate = rate
            aframe.pts = start
            aframe.time_base = Fraction(1, rate)
            for packet in as_.encode(aframe):
                container.mux(packet)
        for packet in as_.encode():
            container.mux(packet)
    part.rename(out)
    return out
