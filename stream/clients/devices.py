"""The local devices behind the capture tracks: an OpenCV camera, a sounddevice microphone, and
probing what there is (`merclip capture --list-devices`).

- `OpenCVCamera` is a FrameSource: a grabber thread keeps only the newest frame (a webcam runs at
  its own rate; queued frames would only add latency).
- `SoundDeviceMic` is a QueuedAudioSource fed from sounddevice's InputStream callback.

cv2 and sounddevice are imported when a device is opened or probed, not with this module.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import numpy as np

from stream.clients.tracks import AUDIO_RATE, FrameSource, QueuedAudioSource
from stream.errors import NoDeviceError

__all__ = [
    "CAMERA_PROBE_INDICES",
    "OpenCVCamera",
    "SoundDeviceMic",
    "list_devices",
    "microphones",
    "probe_cameras",
]

log = logging.getLogger(__name__)

CAMERA_PROBE_INDICES = 10
CAMERA_STALL_SECONDS = 5.0
"""A camera that delivers no frame for this long is treated as gone."""


class OpenCVCamera(FrameSource):
    """A webcam through cv2.VideoCapture, resized to `size` (width, height) when it differs.

    `device` is an OpenCV camera index, or anything else cv2.VideoCapture opens: a device path
    (/dev/video2), a stream URL (rtsp://...), a video file.

    A grabber thread reads at the camera's own rate and keeps the newest frame only; `read`
    returns a frame newer than the previous one (waiting for it), so a 30 fps camera read at
    15 fps sends fresh pictures, never a backlog.
    """

    def __init__(
        self, device: int | str, size: tuple[int, int] = (640, 480), fps: float = 15
    ) -> None:
        import cv2

        _quiet_opencv()
        self.device = device
        self.size = size
        self._cv2 = cv2
        self._cap = cv2.VideoCapture(device)
        ok = self._cap.isOpened()
        frame = self._cap.read()[1] if ok else None
        if frame is None:
            self._cap.release()
            what = f"index {device}" if isinstance(device, int) else repr(device)
            raise NoDeviceError(f"no camera at {what}")
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
        self._cap.set(cv2.CAP_PROP_FPS, fps)
        self._cond = threading.Condition()
        self._latest: np.ndarray | None = frame
        self._serial = 1
        self._returned = 0
        self._ended = False
        self._thread = threading.Thread(target=self._grab, name=f"camera-{device}", daemon=True)
        self._thread.start()

    def _grab(self) -> None:
        while True:
            ok, bgr = self._cap.read()
            with self._cond:
                if self._ended:
                    return
                if not ok or bgr is None:
                    log.info("camera %s: no more frames (ended or gone)", self.device)
                    self._ended = True
                    self._cond.notify_all()
                    return
                self._latest = bgr
                self._serial += 1
                self._cond.notify_all()

    def read(self) -> np.ndarray | None:
        with self._cond:
            fresh = self._cond.wait_for(
                lambda: self._ended or self._serial > self._returned, CAMERA_STALL_SECONDS
            )
            if self._ended or not fresh or self._latest is None:
                if not fresh:
                    log.warning("camera %s: no frame for %.0f s", self.device, CAMERA_STALL_SECONDS)
                return None
            bgr, self._returned = self._latest, self._serial
        if (bgr.shape[1], bgr.shape[0]) != self.size:
            bgr = self._cv2.resize(bgr, self.size, interpolation=self._cv2.INTER_AREA)
        return np.ascontiguousarray(bgr[:, :, ::-1])

    def close(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()
        self._thread.join(timeout=2.0)
        self._cap.release()


class SoundDeviceMic(QueuedAudioSource):
    """A microphone through sounddevice.InputStream: 48 kHz when the device takes it, else its
    default rate; mono (the model hears one channel). The callback only copies into the queue."""

    def __init__(self, device: int | str | None = None, max_blocks: int = 50) -> None:
        sd = _import_sounddevice()
        try:
            info = sd.query_devices(device, "input")
        except (ValueError, sd.PortAudioError) as exc:
            what = "no default microphone" if device is None else f"no microphone {device!r}"
            raise NoDeviceError(f"{what} ({exc})") from exc
        self.name = str(info["name"])
        rate = AUDIO_RATE
        try:
            sd.check_input_settings(device=device, channels=1, samplerate=rate, dtype="float32")
        except (ValueError, sd.PortAudioError):
            rate = int(info["default_samplerate"])
        super().__init__(rate, channels=1, max_blocks=max_blocks)
        self._stream = sd.InputStream(
            device=device,
            channels=1,
            samplerate=rate,
            dtype="float32",
            blocksize=rate // 100,  # 10 ms
            callback=self._callback,
            finished_callback=self.end,
        )
        self._stream.start()
        log.info("microphone %r at %d Hz", self.name, rate)

    def _callback(self, indata: np.ndarray, frames: int, when: Any, status: Any) -> None:
        if status:
            log.debug("microphone status: %s", status)
        self.push(indata)

    def close(self) -> None:
        super().close()
        with contextlib.suppress(Exception):
            self._stream.stop()
            self._stream.close()


def _quiet_opencv() -> None:
    """OpenCV logs a warning per index it cannot open; probing is expected to miss."""
    import cv2

    with contextlib.suppress(Exception):
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def _import_sounddevice() -> Any:
    try:
        import sounddevice
    except OSError as exc:  # the PortAudio library is missing
        raise NoDeviceError(
            f"sounddevice cannot load PortAudio ({exc}); install it (Debian: libportaudio2)"
        ) from exc
    return sounddevice


def probe_cameras(count: int = CAMERA_PROBE_INDICES) -> list[tuple[int, int, int]]:
    """(index, width, height) of each OpenCV camera index in 0..count-1 that gives a frame."""
    import cv2

    _quiet_opencv()
    found = []
    for index in range(count):
        cap = cv2.VideoCapture(index)
        try:
            if cap.isOpened():
                ok, frame = cap.read()
                if ok and frame is not None:
                    found.append((index, frame.shape[1], frame.shape[0]))
        finally:
            cap.release()
    return found


def microphones() -> tuple[list[tuple[int, str, int, bool]], str | None]:
    """((index, name, default rate, is default), ...) of input devices, and why there are none
    when sounddevice itself cannot run."""
    try:
        sd = _import_sounddevice()
    except NoDeviceError as exc:
        return [], str(exc)
    try:
        devices = sd.query_devices()
        default_in = sd.default.device[0]
    except sd.PortAudioError as exc:
        return [], f"PortAudio: {exc}"
    return [
        (i, str(d["name"]), int(d["default_samplerate"]), i == default_in)
        for i, d in enumerate(devices)
        if d["max_input_channels"] > 0
    ], None


def list_devices() -> str:
    """What `--list-devices` prints."""
    lines = [f"Cameras (OpenCV indices 0-{CAMERA_PROBE_INDICES - 1}, pick with --camera INDEX):"]
    cams = probe_cameras()
    lines += [f"  {i}: {w}x{h}" for i, w, h in cams] or ["  none found"]
    lines.append("Microphones (sounddevice, pick with --mic INDEX or a part of the name):")
    mics, why = microphones()
    lines += [
        f"  {i}: {name} ({rate} Hz){' [default]' if default else ''}"
        for i, name, rate, default in mics
    ] or [f"  none found{f' ({why})' if why else ''}"]
    return "\n".join(lines)
