"""Tiny copies of the FER2013, MELD and RAVDESS layouts, written by tests (never the real data)."""

from __future__ import annotations

import wave
from pathlib import Path

import av
import cv2
import numpy as np

FER_CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
RAVDESS_CODES = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
    "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised",
}  # fmt: skip
MELD_HEADER = (
    "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,"
    "StartTime,EndTime"
)


def face_pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 48), dtype=np.uint8)


def write_fer(root: Path, per_class: dict[str, int]) -> None:
    for split, n in per_class.items():
        prefix = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}[split]
        for c, name in enumerate(FER_CLASSES):
            (root / split / name).mkdir(parents=True)
            for k in range(n):
                path = root / split / name / f"{prefix}_{9 - k}{c}.jpg"
                assert cv2.imwrite(str(path), face_pixels(100 * c + k))


def meld_row(sr: int, text: str, emotion: str, sentiment: str, dia: int, utt: int) -> str:
    quoted = '"' + text.replace('"', '""') + '"' if any(ch in text for ch in ',"\n') else text
    return f'{sr},{quoted},Ross,{emotion},{sentiment},{dia},{utt},1,2,"00:16:16,059","00:16:21,731"'


MELD_TRAIN = [  # (text as the file holds it, emotion, sentiment, the text the reader returns)
    ("Oh, my God, he\u0092s lost it.", "surprise", "negative", "Oh, my God, he's lost it."),
    ("You must\u00e2\u20ac\u2122ve had your hands full.", "neutral", "neutral",
     "You must've had your hands full."),
    ("\u201cAll right,\u201d  he said\u2026", "joy", "positive", '"All right," he said\u2026'),
    ("Nestl\u00e9 Toll House?", "anger", "negative", "Nestl\u00e9 Toll House?"),
    ("No!\nNo way.", "sadness", "negative", "No! No way."),
    ("Eww.", "disgust", "negative", "Eww."),
    ("What, what\u2019s that?", "fear", "negative", "What, what's that?"),
    ("Yeah.", "joy", "positive", "Yeah."),
]  # fmt: skip


def write_meld(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    lines = [MELD_HEADER] + [
        meld_row(i + 1, text, emo, sent, i // 4, i % 4)
        for i, (text, emo, sent, _) in enumerate(MELD_TRAIN)
    ]
    (root / "train_sent_emo.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    # dev as raw Windows-1252 bytes (not UTF-8 at all): 0x92 is its right single quote
    dev = [MELD_HEADER, meld_row(1, "I don\x92t know", "neutral", "neutral", 0, 0)]
    (root / "dev_sent_emo.csv").write_bytes("\r\n".join(dev).encode("latin-1"))


def write_flac(path: Path, seconds: float = 0.25, rate: int = 16000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.5 * np.sin(2 * np.pi * 300 * t) * 32767).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
    frame.sample_rate = rate
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("flac", rate=rate, layout="mono")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


def write_stereo_wav_48k(path: Path, hz: float, amplitude: float, seconds: float) -> None:
    """What RAVDESS users download is 48 kHz WAV; this one is stereo with L = R."""
    t = np.arange(int(seconds * 48000)) / 48000
    mono = (amplitude * np.sin(2 * np.pi * hz * t) * 32767).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(48000)
        out.writeframes(np.repeat(mono, 2).tobytes())  # interleaved L R L R


def write_ravdess(root: Path) -> None:
    for ee in RAVDESS_CODES:  # actor 1: one FLAC per emotion, two for happy
        write_flac(root / "train" / "Actor_01" / f"03-01-{ee}-01-01-01-01.flac")
    write_flac(root / "train" / "Actor_01" / "03-01-03-02-01-01-01.flac")
    write_stereo_wav_48k(root / "train" / "Actor_02" / "03-01-05-02-01-01-02.wav", 440, 0.9, 0.5)
    write_flac(root / "train" / "Actor_02" / "03-02-03-01-01-01-02.flac")  # song, not speech
    write_flac(root / "train" / "Actor_02" / "03-01-03-01-01-02.flac")  # six parts: malformed
    write_flac(root / "train" / "Actor_02" / "03-01-04-01-01-01-09.flac")  # actor 9 in Actor_02
    (root / "train" / "Actor_02" / "notes.txt").write_text("not audio")
    write_flac(root / "val" / "Actor_17" / "03-01-04-01-01-01-17.flac")


def shared_data(kind: str) -> Path:
    """The real `kind` dataset in ../shared/data (or $MERCLIP_DATA_DIR); skips when absent."""
    import os

    import pytest

    env = os.environ.get("MERCLIP_DATA_DIR")
    root = (Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data") / kind
    if not root.is_dir():
        pytest.skip(f"no {kind} data at {root} (set MERCLIP_DATA_DIR to the shared data folder)")
    return root
