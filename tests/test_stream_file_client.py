"""stream_file / `merclip stream-file`: real files through real aiortc peers on loopback."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np
import pytest
from media import face_video, read_wav_16k
from stream_helpers import SineTrack, make_settings, running_server, wait_for

from stream.app import REGISTRY
from stream.clients.file import stream_file
from stream.clients.peer_client import connect_peer

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]


async def test_speech_wav_arrives_at_its_level_and_is_transcribable(
    speech_path: Path, bundled_whisper: object
) -> None:
    sent = read_wav_16k(speech_path)
    async with running_server(make_settings()) as (url, app, sinks):
        sid = await stream_file(url, speech_path, session_id="wav-1")
        assert sid == "wav-1"
        assert await wait_for(lambda: app[REGISTRY].count == 0, 5)
    (sink,) = sinks
    assert sink.closed == 1 and not sink.frames
    got = sink.samples
    assert got.size == pytest.approx(sent.size, rel=0.1)
    rms_sent = float(np.sqrt(np.mean(sent**2)))
    rms_got = float(np.sqrt(np.mean(got**2)))
    # Opus is lossy, but speech energy must arrive at the level it was sent (not 3 dB down).
    assert rms_got == pytest.approx(rms_sent, rel=0.15), (rms_got, rms_sent)
    text = bundled_whisper.transcribe(got).lower()  # type: ignore[attr-defined]
    assert "hello" in text and "world" in text, text


async def test_video_file_sends_audio_and_frames(media_dir: Path) -> None:
    video = face_video(media_dir, "hello", seconds=2.0, fps=15, size=(320, 240))
    async with running_server(make_settings()) as (url, app, sinks):
        await stream_file(url, video)
    (sink,) = sinks
    assert sink.samples.size == pytest.approx(2.0 * 16000, rel=0.15)
    assert 3 <= len(sink.frames) <= 5  # 2 s at the sink's 2 frames/s
    assert sink.frames[0][0].shape == (240, 320, 3)
    assert sink.frames_offered >= 25  # ~30 frames sent, each read and judged


async def test_stream_file_seconds_limit_stops_early(speech_path: Path) -> None:
    async with running_server(make_settings()) as (url, app, sinks):
        await stream_file(url, speech_path, seconds=1.0)
    (sink,) = sinks
    assert 0.5 * 16000 <= sink.samples.size <= 1.6 * 16000


async def _stream_file_cli(
    media: Path, *args: str
) -> tuple[asyncio.subprocess.Process, bytes, bytes]:
    """`merclip stream-file MEDIA ARGS...` run to its end: the process, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.app",
        "stream-file",
        str(media),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc, out, err


async def test_cli_stream_file_prints_the_session_id(speech_path: Path) -> None:
    async with running_server(make_settings()) as (url, app, sinks):
        proc, out, err = await _stream_file_cli(
            speech_path, "--url", url, "--session", "cli-1", "--seconds", "1"
        )
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == "cli-1"
        assert await wait_for(lambda: app[REGISTRY].count == 0, 5)
    (sink,) = sinks
    assert sink.info.session_id == "cli-1" and sink.samples.size > 8000


async def test_cli_reports_a_full_server(speech_path: Path) -> None:
    async with running_server(make_settings(max_sessions=1)) as (url, app, sinks):
        holder, _ = await connect_peer(url, [SineTrack(seconds=30)])
        assert app[REGISTRY].count == 1
        proc, _, err = await _stream_file_cli(speech_path, "--url", url)
        assert proc.returncode == 1  # a runtime failure (the server is full), not usage
        assert "503" in err.decode() and "retry" in err.decode().lower()
        await holder.close()
