"""GET /events/{session}: server-sent events from the events_factory, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from stream_helpers import make_settings, running_server, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(30)]


class Source:
    """events_factory that yields `count` events, then ends or waits forever (`live`)."""

    def __init__(self, count: int, live: bool = False) -> None:
        self.count = count
        self.live = live
        self.opened: list[str] = []
        self.closed: list[str] = []

    async def __call__(self, session_id: str) -> AsyncIterator[dict[str, Any]]:
        self.opened.append(session_id)
        try:
            for seq in range(self.count):
                yield {"event_id": f"{session_id}-{seq}", "session_id": session_id, "seq": seq}
            if self.live:
                await asyncio.Event().wait()
        finally:
            self.closed.append(session_id)


def _messages(raw: str) -> list[dict[str, str]]:
    out = []
    for block in raw.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if "data" in fields:
            out.append(fields)
    return out


async def test_events_arrive_as_sse_with_ids() -> None:
    source = Source(3)
    async with running_server(make_settings(), source) as (url, app, _):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/events/abc") as r:
                assert r.status == 200
                assert r.headers["Content-Type"].startswith("text/event-stream")
                raw = (await r.read()).decode()
    msgs = _messages(raw)
    assert [json.loads(m["data"])["seq"] for m in msgs] == [0, 1, 2]
    assert [m["id"] for m in msgs] == ["abc-0", "abc-1", "abc-2"]
    assert source.opened == ["abc"] and source.closed == ["abc"]


async def test_events_without_a_source_or_with_a_bad_id() -> None:
    async with running_server(make_settings()) as (url, app, _):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/events/abc") as r:
                assert r.status == 404 and (await r.json())["error"] == "no_events"
    async with running_server(make_settings(), Source(1)) as (url, app, _):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/events/a%20b") as r:
                assert r.status == 400 and (await r.json())["error"] == "bad_session_id"


async def test_a_page_that_goes_away_closes_its_source() -> None:
    source = Source(1, live=True)
    async with running_server(make_settings(), source) as (url, app, _):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/events/s1") as r:
                line = b""
                while b"data:" not in line:
                    line = await r.content.readline()
        # The server notices on its next write (keep-alive), or at once when the TCP reset
        # arrives; either way the source must be closed, not leaked.
        assert await wait_for(lambda: source.closed == ["s1"], 20)


async def test_shutdown_ends_open_event_streams() -> None:
    source = Source(1, live=True)
    async with aiohttp.ClientSession() as http:
        async with running_server(make_settings(), source) as (url, app, _):
            r = await http.get(f"{url}/events/s2")
            line = b""
            while b"data:" not in line:
                line = await r.content.readline()
        assert source.closed == ["s2"]
        r.close()


async def test_nan_is_sent_as_null_and_an_id_cannot_inject_sse_fields() -> None:
    # Review M5(c): NaN made the data line invalid JSON (the page dropped the event). Review M6:
    # an id with "\r" split the id line, so a parser read "event: hidden" as a field of its own.
    async def source(session_id: str) -> AsyncIterator[dict[str, Any]]:
        yield {"event_id": "x\revent: hidden", "seq": 0, "probs": [0.5, float("nan")]}
        yield {"event_id": "ok-1", "seq": 1, "probs": [float("inf"), 0.25]}

    async with running_server(make_settings(), source) as (url, app, _):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/events/abc") as r:
                raw = (await r.read()).decode()
    # Lines as an SSE parser splits them (CR, LF or CRLF end a line): no field but id and data.
    fields = {line.split(":", 1)[0] for line in re.split(r"\r\n|\r|\n", raw) if line}
    assert fields == {"retry", "id", "data"} and "NaN" not in raw and "Infinity" not in raw
    msgs = _messages(raw)
    assert [json.loads(m["data"]) for m in msgs] == [
        {"event_id": "x\revent: hidden", "seq": 0, "probs": [0.5, None]},
        {"event_id": "ok-1", "seq": 1, "probs": [None, 0.25]},
    ]
    assert [m.get("id") for m in msgs] == [None, "ok-1"]


async def test_event_streams_beyond_the_cap_get_503_with_retry_after() -> None:
    """Review M3: streams were not capped; each held Redis connections of its own until the
    server ran out of fds."""
    source = Source(1, live=True)
    async with running_server(make_settings(max_event_streams=2), source) as (url, app, _):
        async with aiohttp.ClientSession() as http:
            open_streams = []
            for sid in ("s1", "s2"):
                r = await http.get(f"{url}/events/{sid}")
                while b"data:" not in await r.content.readline():
                    pass
                open_streams.append(r)
            async with http.get(f"{url}/events/s3") as r:
                assert r.status == 503 and r.headers["Retry-After"] == "5"
                assert (await r.json())["error"] == "too_many_streams"
            assert source.opened == ["s1", "s2"]  # the refused one opened nothing
            open_streams.pop().close()
            assert await wait_for(lambda: source.closed == ["s2"], 20)
            async with http.get(f"{url}/events/s4") as r:
                assert r.status == 200
                while b"data:" not in await r.content.readline():
                    pass
            for r in open_streams:
                r.close()
