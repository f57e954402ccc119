"""Limits and credentials through the real service: overload answers 503 + Retry-After, and the
bus works with a Redis ACL user (redis://user:pass@host) and never logs the password.

Deadline skipping when inference falls behind is tested in test_inference.py
(test_windows_past_the_deadline_are_skipped_and_counted); poison messages going to the
dead-letter stream in test_inference.py (test_bad_windows_are_dead_lettered_and_the_rest_go_on,
test_a_window_that_keeps_killing_workers_is_dead_lettered).
"""

from __future__ import annotations

import pytest
from bus_helpers import make_window
from stream_support import SineTrack, wait_for

from merclip.settings import RedisSettings, Settings
from stream.file_client import OfferRejectedError, connect_peer
from stream.server import REGISTRY
from workers.bus import Bus, BusError
from workers.redis_server import EmbeddedRedis
from workers.service import LiveService

pytestmark = pytest.mark.timeout(120)


async def test_acl_user_url_works_and_wrong_password_is_refused() -> None:
    acl = (
        "--user",
        "default",
        "off",
        "--user",
        "merclip",
        "on",
        ">s3cret-pass",
        "~*",
        "&*",
        "+@all",
    )
    async with EmbeddedRedis(extra_args=acl) as url:
        authed = url.replace("redis://", "redis://merclip:s3cret-pass@")
        settings = RedisSettings(prefix="acl")
        async with Bus.connect(authed, settings) as bus:
            await bus.add_window(make_window("s", 0))
            assert await bus.windows_length() == 1
        with pytest.raises(BusError) as anonymous:
            async with Bus.connect(url, settings):
                pass
        wrong = url.replace("redis://", "redis://merclip:wrong-pass@")
        with pytest.raises(BusError) as refused:
            async with Bus.connect(wrong, settings):
                pass
        assert "wrong-pass" not in str(refused.value) and "merclip:***@" in str(refused.value)
        assert "s3cret" not in str(anonymous.value)


@pytest.mark.slow
async def test_beyond_max_sessions_the_service_answers_503_with_retry_after() -> None:
    s = Settings().replace("server", host="127.0.0.1", port=0, max_sessions=1)
    s = s.replace("model", name="merclip-tiny-live").replace("clip", model="merclip-tiny-clip")
    s = s.replace("features", space="live").replace("model", checkpoint="")
    async with LiveService(s) as svc:
        assert svc.app is not None
        first, _ = await connect_peer(svc.url, [SineTrack(seconds=10)], session_id="one")
        with pytest.raises(OfferRejectedError) as info:
            await connect_peer(svc.url, [SineTrack(seconds=1)], session_id="two")
        assert info.value.status == 503 and info.value.body["error"] == "server_full"
        assert info.value.retry_after is not None and info.value.retry_after > 0
        assert [p.session_id for p in svc.app[REGISTRY].sessions()] == ["one"]
        assert await wait_for(lambda: first.connectionState == "connected", 10)
        await first.close()
        assert await wait_for(lambda: svc.app[REGISTRY].count == 0, 10)
        again, sid = await connect_peer(svc.url, [SineTrack(seconds=1)], session_id="two")
        assert sid == "two"
        await again.close()
