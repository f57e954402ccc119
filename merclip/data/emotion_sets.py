"""Raw readers for three public, human-labelled emotion datasets, in the layouts users download.

Name a set as `KIND:DIR` (`parse_data_spec`), then `load_split(kind, root, split)`:

- `fer2013:DIR` — FER2013 (Goodfellow et al. 2013), the Kaggle "msambare" layout:
  `DIR/{train,val,test}/<class>/*.jpg`, 48×48 grayscale faces; classes angry, disgust, fear,
  happy, neutral, sad, surprise. Licence: research use; web-search images, no explicit licence.
- `meld:DIR` — MELD (Poria et al. 2019), the official files `train_sent_emo.csv`,
  `dev_sent_emo.csv` (the split called "val" here) and `test_sent_emo.csv`, with the columns
  Sr No., Utterance, Speaker, Emotion, Sentiment, Dialogue_ID, Utterance_ID, Season, Episode,
  StartTime, EndTime; emotions anger, disgust, fear, joy, neutral, sadness, surprise; sentiment
  negative, neutral, positive. Licence: GPL-3.0 (declare-lab/MELD).
- `ravdess:DIR` — RAVDESS speech (Livingstone & Russo 2018): `DIR/{train,val,test}/Actor_XX/`
  with files named by the official code `MM-VV-EE-II-SS-RR-AA.{wav,flac}` (modality 03 =
  audio-only, vocal channel 01 = speech; EE 01 neutral, 02 calm, 03 happy, 04 sad, 05 angry,
  06 fearful, 07 disgust, 08 surprised; AA = the actor). Licence: CC BY-NC-SA 4.0.

Any split may be missing (`available_splits` says which are there). Items come in a fixed order:
sorted paths for FER2013 and RAVDESS, CSV row order for MELD.

Mapping to the six CMU-MOSEI emotions, in `EMOTIONS` order (happy, sad, anger, surprise, disgust,
fear): joy/happy → happy, sadness/sad → sad, anger/angry → anger, surprise/surprised → surprise,
disgust → disgust, fear/fearful → fear; neutral and calm → the empty set (all zeros). Sentiment
exists only in MELD: negative → 0, positive → 1, neutral → None.

MELD text. The official CSVs are UTF-8 but carry Windows-1252 artefacts from their making: C1
control characters (U+0092 where "’" was meant), mojibake ("â€™" = the UTF-8 bytes of "’" read as
cp1252) and, in some copies, raw cp1252 bytes that are not UTF-8 at all. `clean_text` repairs all
three, then writes apostrophes and quotes as ASCII and collapses whitespace. (The copy in
shared/data is valid UTF-8 with none of the three; its train utterances hold 3,642 typographic
apostrophes/quotes, and 637 of them have doubled spaces.)

RAVDESS audio is decoded with PyAV to 16 kHz mono float32 in [-1, 1]. The resampler keeps the
channels and we average them ourselves: libswresample's stereo→mono matrix adds both channels at
0.707 each, so a full-scale L = R recording would come out at ±1.41 (as in stream/audio.py).
Files whose name is not a valid code (or whose actor is not the folder's), or whose vocal channel
is song (02), are skipped and counted in one warning.

Everything is read eagerly and nothing is cached: full loads of the copies in shared/data take
2.4 s for FER2013 train (28,709 images), 0.2 s for MELD train (9,989 rows) and 3.6 s for RAVDESS
train (960 clips) on two shared CPU cores. Nothing is filtered either: FER2013 train holds 11
blank (constant) images, and 279 of its 3,589 val images are pixel-identical to train images.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import av
import cv2
import numpy as np

from merclip.data.mosei_labels import EMOTION_LABELS
from merclip.errors import DatasetError

__all__ = [
    "EMOTIONS",
    "KINDS",
    "SPLITS",
    "RawItem",
    "available_splits",
    "clean_text",
    "load_split",
    "map_emotion",
    "map_sentiment",
    "parse_data_spec",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

KINDS: tuple[str, ...] = ("fer2013", "meld", "ravdess")
SPLITS: tuple[str, ...] = ("train", "val", "test")
EMOTIONS: tuple[str, ...] = EMOTION_LABELS
SAMPLE_RATE = 16000

FER_CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
FER_SUFFIXES = (".jpg", ".jpeg", ".png")
MELD_FILES = {"train": "train_sent_emo.csv", "val": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
MELD_COLUMNS = ("Utterance", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")
RAVDESS_EMOTIONS = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
    "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised",
}  # fmt: skip
RAVDESS_SUFFIXES = (".wav", ".flac")

_EMOTION_OF: dict[str, str | None] = {
    "happy": "happy", "joy": "happy",
    "sad": "sad", "sadness": "sad",
    "anger": "anger", "angry": "anger",
    "surprise": "surprise", "surprised": "surprise",
    "disgust": "disgust",
    "fear": "fear", "fearful": "fear",
    "neutral": None, "calm": None,
}  # fmt: skip
_SENTIMENT_OF: dict[str, int | None] = {"negative": 0, "positive": 1, "neutral": None}
_RAVDESS_CODE = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(0[12])-(0[12])-(0[12])-(\d\d)$")


@dataclass(frozen=True, eq=False)  # eq=False: ndarray fields make field-wise == ambiguous
class RawItem:
    """One labelled example as the dataset ships it (one modality filled in)."""

    id: str
    """Stable and unique within the dataset, e.g. "meld/train/dia0_utt0"."""
    kind: str
    """One of KINDS."""
    source_label: str
    """The dataset's own class name ("joy", "calm", ...)."""
    emotion: np.ndarray
    """(6,) float32 multi-hot in EMOTIONS order; all zeros for neutral / calm."""
    sentiment: int | None
    """MELD only: 0 negative, 1 positive, None for neutral (and for the other sets)."""
    image: np.ndarray | None = None
    """FER2013: (H, W) uint8 grayscale."""
    text: str | None = None
    """MELD: the utterance, cleaned by `clean_text`."""
    audio: np.ndarray | None = None
    """RAVDESS: (N,) float32 in [-1, 1], 16 kHz mono."""


def map_emotion(label: str) -> np.ndarray:
    """Any of the three datasets' class names → (6,) float32 multi-hot in EMOTIONS order."""
    key = label.strip().lower()
    if key not in _EMOTION_OF:
        raise DatasetError(f"unknown emotion class {label!r}; known: {', '.join(_EMOTION_OF)}")
    multi_hot = np.zeros(len(EMOTIONS), np.float32)
    if (emotion := _EMOTION_OF[key]) is not None:
        multi_hot[EMOTIONS.index(emotion)] = 1.0
    return multi_hot


def map_sentiment(label: str) -> int | None:
    """MELD's sentiment → 0 (negative), 1 (positive) or None (neutral)."""
    key = label.strip().lower()
    if key not in _SENTIMENT_OF:
        raise DatasetError(f"unknown sentiment {label!r}; known: negative, neutral, positive")
    return _SENTIMENT_OF[key]


def parse_data_spec(spec: str) -> tuple[str, Path]:
    """`"meld:/x"` → ("meld", Path("/x")); DatasetError if the kind is unknown or DIR missing."""
    kind, sep, arg = spec.partition(":")
    if not sep or not arg:
        raise DatasetError(f"data spec {spec!r}: expected KIND:DIR with KIND one of {KINDS}")
    if kind not in KINDS:
        raise DatasetError(f"data spec {spec!r}: unknown kind {kind!r}; known: {', '.join(KINDS)}")
    root = Path(arg).expanduser()
    if not root.is_dir():
        raise DatasetError(f"data spec {spec!r}: {root} is not a directory")
    return kind, root


def available_splits(kind: str, root: Path) -> list[str]:
    """Which of SPLITS are present under root (a split folder, or MELD's CSV file)."""
    _check_kind(kind)
    root = Path(root)
    if kind == "meld":
        return [s for s in SPLITS if (root / MELD_FILES[s]).is_file()]
    return [s for s in SPLITS if (root / s).is_dir()]


def load_split(
    kind: str, root: Path, split: str, limit_per_class: int | None = None
) -> list[RawItem]:
    """Every item of one split, in a fixed order; `limit_per_class` keeps the first N of each
    source class (in that order) and reads nothing else."""
    _check_kind(kind)
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    if limit_per_class is not None and limit_per_class < 1:
        raise ValueError(f"limit_per_class must be >= 1 or None, got {limit_per_class}")
    root = Path(root)
    if split not in available_splits(kind, root):
        where = root / MELD_FILES[split] if kind == "meld" else root / split
        have = ", ".join(available_splits(kind, root)) or "none"
        hint = _flat_ravdess_hint(root) if kind == "ravdess" else ""
        raise DatasetError(
            f"{kind}: no {split} split in {root} (expected {where}; splits found: {have}){hint}"
        )
    reader = {"fer2013": _load_fer2013, "meld": _load_meld, "ravdess": _load_ravdess}[kind]
    items = reader(root, split, limit_per_class)
    if not items:
        raise DatasetError(f"{kind}: the {split} split in {root} is empty (no usable items)")
    return items


def _load_fer2013(root: Path, split: str, limit: int | None) -> list[RawItem]:
    split_dir = root / split
    paths: list[tuple[str, Path]] = []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if class_dir.name.startswith("."):
            continue
        if class_dir.name not in FER_CLASSES:
            raise DatasetError(
                f"{class_dir}: unknown FER2013 class folder {class_dir.name!r}; the known ones are"
                f" {', '.join(FER_CLASSES)} (rename or remove it)"
            )
        images = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in FER_SUFFIXES)
        paths += [(class_dir.name, p) for p in images[:limit]]
    items: list[RawItem] = []
    for label, path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise DatasetError(f"{path}: not a readable image; delete it or replace it")
        item_id = f"fer2013/{split}/{label}/{path.name}"
        items.append(RawItem(item_id, "fer2013", label, map_emotion(label), None, image=image))
    return items


def _load_meld(root: Path, split: str, limit: int | None) -> list[RawItem]:
    path = root / MELD_FILES[split]
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        content = raw.decode("latin-1")  # raw cp1252 bytes: clean_text maps the C1 range they give
    rows = csv.DictReader(io.StringIO(content, newline=""))
    missing = [c for c in MELD_COLUMNS if c not in (rows.fieldnames or [])]
    if missing:
        raise DatasetError(
            f"{path}: missing column(s) {', '.join(missing)}; the official MELD header is"
            " Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,"
            "StartTime,EndTime"
        )
    items: list[RawItem] = []
    taken: Counter[str] = Counter()
    seen: set[str] = set()
    for row in rows:
        where = f"{path}, line {rows.line_num}"
        try:
            label = row["Emotion"].strip().lower()
            emotion, sentiment = map_emotion(label), map_sentiment(row["Sentiment"])
            item_id = f"meld/{split}/dia{int(row['Dialogue_ID'])}_utt{int(row['Utterance_ID'])}"
        except (DatasetError, ValueError, TypeError, AttributeError) as err:
            raise DatasetError(f"{where}: {err}") from err
        if item_id in seen:
            raise DatasetError(f"{where}: a second row for {item_id}; ids must be unique")
        seen.add(item_id)
        if limit is not None and taken[label] >= limit:
            continue
        taken[label] += 1
        text = clean_text(row["Utterance"])
        items.append(RawItem(item_id, "meld", label, emotion, sentiment, text=text))
    return items


def _load_ravdess(root: Path, split: str, limit: int | None) -> list[RawItem]:
    paths: list[tuple[str, Path]] = []
    skipped: dict[str, list[str]] = defaultdict(list)
    for actor_dir in sorted(p for p in (root / split).iterdir() if p.name.startswith("Actor_")):
        for path in sorted(actor_dir.iterdir()):
            if path.suffix.lower() not in RAVDESS_SUFFIXES:
                continue
            code = _RAVDESS_CODE.match(path.stem)
            if code is None or code[3] not in RAVDESS_EMOTIONS or actor_dir.name[6:] != code[7]:
                skipped["malformed name"].append(path.name)
            elif code[1] != "03" or code[2] != "01":
                skipped["not audio-only speech"].append(path.name)
            else:
                paths.append((RAVDESS_EMOTIONS[code[3]], path))
    if skipped:
        log.warning(
            "ravdess %s: skipped %d file(s): %s",
            split,
            sum(map(len, skipped.values())),
            "; ".join(f"{len(v)} {why} (e.g. {v[0]})" for why, v in skipped.items()),
        )
    items: list[RawItem] = []
    seen: set[str] = set()
    for label, path in _first_per_class(paths, limit):
        item_id = f"ravdess/{path.parent.name}/{path.stem}"
        if item_id in seen:
            raise DatasetError(f"{path}: {item_id} exists twice (.wav and .flac?); keep one")
        seen.add(item_id)
        audio = _decode_audio(path)
        items.append(RawItem(item_id, "ravdess", label, map_emotion(label), None, audio=audio))
    return items


def _decode_audio(path: Path) -> np.ndarray:
    """(N,) float32 in [-1, 1], 16 kHz mono: resampled per channel, then channels averaged."""
    resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)  # planar: (channels, n)
    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise DatasetError(f"{path}: no audio stream; re-download the file")
            for frame in container.decode(audio=0):
                chunks += [f.to_ndarray() for f in resampler.resample(frame)]
            chunks += [f.to_ndarray() for f in resampler.resample(None)]  # the filter's tail
    except av.FFmpegError as err:
        raise DatasetError(f"{path}: cannot decode audio ({err}); re-download the file") from err
    if not chunks:
        raise DatasetError(f"{path}: the audio stream holds no samples; re-download the file")
    mono = np.concatenate(chunks, axis=1).mean(axis=0)
    # Resampling can ring a hair past full scale on clipped recordings.
    audio: np.ndarray = np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)
    return audio


def _first_per_class(pairs: Iterable[tuple[str, T]], limit: int | None) -> list[tuple[str, T]]:
    taken: Counter[str] = Counter()
    kept: list[tuple[str, T]] = []
    for label, value in pairs:
        if limit is None or taken[label] < limit:
            taken[label] += 1
            kept.append((label, value))
    return kept


def _flat_ravdess_hint(root: Path) -> str:
    if any(p.name.startswith("Actor_") for p in root.iterdir()):
        return (
            "; the Actor_XX folders sit directly in it: move them into train/, val/ and test/"
            " with no actor in two splits (e.g. actors 1-16, 17-20, 21-24)"
        )
    return ""


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r}; known: {', '.join(KINDS)}")


# --- MELD text repair -------------------------------------------------------------------------

# The characters a cp1252 (or latin-1) decoder makes of the bytes 0x80..0xBF, i.e. of UTF-8
# continuation bytes; mapped back to those bytes to undo mojibake.
_CP1252_UNDEFINED = (0x81, 0x8D, 0x8F, 0x90, 0x9D)
_BYTE_OF: dict[str, int] = {chr(b): b for b in range(0x80, 0xC0)}
_BYTE_OF |= {
    bytes([b]).decode("cp1252"): b for b in range(0x80, 0xC0) if b not in _CP1252_UNDEFINED
}
_CONT = "[" + "".join(map(re.escape, _BYTE_OF)) + "]"
# A UTF-8 lead byte (as latin-1 text) followed by exactly as many continuation bytes as it needs.
_MOJIBAKE = re.compile(f"[\xc2-\xdf]{_CONT}|[\xe0-\xef]{_CONT}{{2}}|[\xf0-\xf4]{_CONT}{{3}}")
_C1 = re.compile("[\x80-\x9f]")
_TO_ASCII = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
})  # fmt: skip


def _unmojibake(match: re.Match[str]) -> str:
    text = match.group()
    try:
        return bytes(_BYTE_OF.get(ch, ord(ch)) for ch in text).decode("utf-8")
    except UnicodeDecodeError:  # not the bytes of one UTF-8 character: genuine text, keep it
        return text


def _c1_to_cp1252(match: re.Match[str]) -> str:
    return bytes([ord(match.group())]).decode("cp1252", errors="ignore")  # 5 undefined: dropped


def clean_text(text: str) -> str:
    """MELD's text as clean UTF-8: mojibake and C1 controls repaired, quotes and apostrophes as
    ASCII, whitespace collapsed to single spaces."""
    text = _MOJIBAKE.sub(_unmojibake, text)
    text = _C1.sub(_c1_to_cp1252, text)
    text = unicodedata.normalize("NFC", text).translate(_TO_ASCII)
    return " ".join(text.split())
