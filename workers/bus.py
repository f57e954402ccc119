"""The Redis bus: the one module that talks to Redis. Stages see typed messages, never raw replies.

Keys and channels (`P` = settings.redis.prefix, `S` = a session id; docs/REDIS.md has the recipe
for consumers in other languages):

- `P:windows`           stream, work queue of FeatureWindows (ingest → inference), XADD MAXLEN ~
                        redis.windows_maxlen; read through a consumer group (`inference.
                        consumer_group`). Entry field `m` = schemas.encode(window).
                        With redis.partitions = N > 1: N streams `P:windows:{T}`, T = the
                        partition's hash tag (`Keys.windows_streams`); session S's windows all
                        go to partition crc32(S) % N, so they stay in order.
- `P:dead`              stream, dead letters: fields `m` (the raw entry bytes), `entry_id`,
                        `reason`, `deliveries`, `wall` (unix time). MAXLEN ~ windows_maxlen.
                        Per partition (`P:dead:{T}`) when N > 1.
- `P:{S}:events`        stream, capped per-session event history (MAXLEN ~ redis.events_maxlen),
                        expiring redis.events_ttl_s after the session's latest event;
                        fields `m` = schemas.encode(EmotionEvent), `id` = its event_id. `{S}` is a
                        Redis Cluster hash tag: all keys of one session live in one slot.
- `P:{S}:seen:<id>`     string with a TTL (dedup_ttl_s, default 1 h): marks an event id as
                        written, so a redelivered window never adds a second event.
- `P:sessions`          sorted set: session id → unix time of its latest event (the live list);
                        members older than redis.events_ttl_s are dropped on each write.
- `P:events`            pub/sub channel, every session's events (payload = the `m` bytes).
- `P:events:S`          pub/sub channel, one session's events.
- `P:partials`, `P:partials:S`  pub/sub channels, PartialTranscripts (all sessions, one session):
                        words heard between windows, published by ingest, never stored.

Idempotent event writes: one Lua script does SET NX on the `seen` key, and only when that
succeeds XADDs the event and PUBLISHes it on both channels. The script runs atomically, so a
worker that dies at any point either wrote (and published) the event or did not; a redelivery
then either finds the `seen` key (nothing written, `write_event` returns False) or writes it.
The `seen` key and the stream share the session's hash slot, so this also works on Cluster.

Redis Cluster (redis.cluster "auto": detected at connect by INFO cluster; "on" / "off" force
it) goes through redis-py's asyncio RedisCluster. Every multi-key call stays in one slot: the
event script (`{S}`), a partition's XACK+XDEL transaction, the `P:sessions` ZADD pipeline (one
key). The script's PUBLISH stays inside it: a channel is not a key, and classic PUBLISH on a
cluster is broadcast to every node (tests/test_redis_cluster.py receives it on another node),
so an event is still written and published in one atomic step. RedisCluster has no pub/sub, so
`event_feed` subscribes with a plain connection to one node (another one when that one fails).
A plain client that is answered MOVED/ASK (redis.cluster "off" on a cluster) raises
BusConfigError, which names the setting, instead of retrying a redirect forever.

Outages: every call fails fast (two quick client retries, under a second) with BusError instead
of hanging, and the callers retry with backoff (redis-py's `EqualJitterBackoff`, driven by their
count of failures in a row: ingest's outbox keeps a bounded buffer of unsent windows, the inference
worker waits and reads again). What is retried is written down once: an error whose `retryable`
is true (`BusError.retryable`, tested with `retryable(exc)`); anything else is bad input or a bug.
redis-py reconnects on the next call by itself. The bus logs ONE warning when Redis becomes
unreachable and one line when it answers again, however many calls fail in between
(`Bus.available`, `Bus.outages`). After a restart without persistence
the consumer group is gone: reading or claiming recreates it (from the start of the stream).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import heapq
import itertools
import logging
import math
import random
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import (
    AskError,
    ClusterError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

from merclip.errors import MerClipError, SchemaError
from workers.schemas import (
    MAX_WINDOW_BYTES,
    EmotionEvent,
    FeatureWindow,
    PartialTranscript,
    check_session_id,
    decode,
    encode,
)
from workers.settings import RedisSettings

__all__ = ["Bus", "BusConfigError", "BusError", "Delivery", "Keys", "retryable"]

log = logging.getLogger(__name__)

DEFAULT_DEDUP_TTL_S = 3600
"""Must outlast any redelivery of a window: claim_idle_ms x max_deliveries plus worker downtime.
Windows older than inference.deadline_seconds are skipped anyway, so one hour is ample."""

_WRITE_EVENT_LUA = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[4]) then
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'm', ARGV[1], 'id', ARGV[2])
  if tonumber(ARGV[7]) > 0 then
    redis.call('EXPIRE', KEYS[1], ARGV[7])
  end
  redis.call('PUBLISH', ARGV[5], ARGV[1])
  redis.call('PUBLISH', ARGV[6], ARGV[1])
  return id
end
return false
"""


class BusError(MerClipError):
    """Redis is unreachable or answered with an error; the message says which server."""

    retryable = True
    """Callers retry a BusError with backoff (an outage ends by itself); see `retryable`."""


class BusConfigError(BusError):
    """The server is not what the bus is configured for (a cluster answering MOVED to a
    single-server client): retrying cannot help, the configuration must change."""

    retryable = False


def retryable(exc: BaseException) -> bool:
    """Whether the failed call should be retried later: the error says so (`retryable`)."""
    return getattr(exc, "retryable", False) is True


@functools.lru_cache(maxsize=4096)
def partition_tag(index: int, partitions: int) -> str:
    """Hash tag of work-queue partition `index`: `p<index>`, or the first `p<index>.<k>`, whose
    slot lies in the middle half of the index-th of `partitions` equal slot ranges.

    `redis-cli --cluster create` gives M masters M equal, contiguous slot ranges, so with
    partitions = M (or a multiple) each master holds its share of the partitions; plain `p0`,
    `p1`, `p2` hash to slots 15882, 11819, 7752: two of three on one master. The middle half
    keeps clear of rounding at the range edges."""
    width = REDIS_CLUSTER_HASH_SLOTS / partitions
    lo, hi = (index + 0.25) * width, (index + 0.75) * width
    for k in itertools.count():
        tag = f"p{index}" if k == 0 else f"p{index}.{k}"
        if lo <= key_slot(tag.encode()) < hi:
            return tag
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Keys:
    """Key and channel names for one prefix (see the module docstring)."""

    prefix: str
    partitions: int = 1

    def _partitioned(self, name: str, index: int) -> str:
        if self.partitions == 1:
            return f"{self.prefix}:{name}"  # the single-stream names of before partitions
        return f"{self.prefix}:{name}:{{{partition_tag(index, self.partitions)}}}"

    @property
    def windows(self) -> str:
        """The work stream of partition 0 (the only one when partitions == 1)."""
        return self.windows_stream(0)

    def windows_stream(self, index: int) -> str:
        return self._partitioned("windows", index)

    @property
    def windows_streams(self) -> tuple[str, ...]:
        return tuple(self.windows_stream(i) for i in range(self.partitions))

    def partition_of(self, session_id: str) -> int:
        """The partition of every window of a session: stable across processes and restarts
        (crc32, not Python's salted hash)."""
        return zlib.crc32(session_id.encode()) % self.partitions

    @property
    def dead(self) -> str:
        """The dead-letter stream of partition 0 (the only one when partitions == 1)."""
        return self.dead_stream(0)

    def dead_stream(self, index: int) -> str:
        return self._partitioned("dead", index)

    @property
    def sessions(self) -> str:
        return f"{self.prefix}:sessions"

    @property
    def events_channel(self) -> str:
        return f"{self.prefix}:events"

    def session_events(self, session_id: str) -> str:
        return f"{self.prefix}:{{{_check_session(session_id)}}}:events"

    def seen(self, session_id: str, event_id: str) -> str:
        return f"{self.prefix}:{{{_check_session(session_id)}}}:seen:{event_id}"

    def session_channel(self, session_id: str) -> str:
        return f"{self.prefix}:events:{_check_session(session_id)}"

    @property
    def partials_channel(self) -> str:
        return f"{self.prefix}:partials"

    def session_partials_channel(self, session_id: str) -> str:
        return f"{self.prefix}:partials:{_check_session(session_id)}"


def _check_session(session_id: str) -> str:
    # SchemaError, not BusError: a bad id is bad input, and callers retry BusErrors as outages
    # (a window of session `a{b}` was retried until its deadline, taking its batch with it: M5).
    return check_session_id(session_id)


@dataclass(frozen=True)
class Delivery:
    """One entry read from the windows stream through the consumer group."""

    entry_id: str
    deliveries: int
    """How many times the group has delivered this entry (1 on the first read)."""
    raw: bytes
    """The entry's `m` field as stored (b'' when missing)."""
    message: FeatureWindow | None = None
    error: str | None = None
    """Why `raw` could not be decoded into a FeatureWindow (then `message` is None)."""
    partition: int = 0
    """The work-queue partition it was read from (acks and dead letters go back there)."""


_SECRET_QUERY_KEYS = {"password", "ssl_password"}


def _redact(url: str) -> str:
    """The URL without its passwords (URLs go into logs and error messages): the userinfo one
    and the `?password=` / `?ssl_password=` query forms that redis-py also accepts (review L3).
    Something that does not even split as a URL is not shown at all."""
    if not url:
        return "?"
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    if password is not None:
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = f"{parts.username}:***@" if parts.username else ":***@"
        parts = parts._replace(netloc=user + netloc)
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if any(k.lower() in _SECRET_QUERY_KEYS for k, _ in pairs):
            shown = [(k, "***" if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs]
            parts = parts._replace(query=urlencode(shown, safe="*/"))
    return urlunsplit(parts)


def _scrub(text: str, url: str) -> str:
    """`text` without any password that `url` holds (redis-py's messages may quote parts)."""
    secrets = []
    with contextlib.suppress(ValueError):
        parts = urlsplit(url)
        secrets = [parts.password or ""]
        secrets += [v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_QUERY_KEYS]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _entry_key(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id `ms-seq` as a sortable pair."""
    ms, _, seq = _s(entry_id).partition("-")
    return int(ms), int(seq or 0)


def _no_group(exc: ResponseError) -> bool:
    return "NOGROUP" in str(exc)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


SUBSCRIBE_CONFIRM_SECONDS = 5.0


async def _subscribe_confirmed(pubsub: Any, channels: list[str], timeout: float) -> None:
    """SUBSCRIBE, then wait for the server's confirmation of every channel.

    redis-py reads no reply to SUBSCRIBE, so on a pooled connection whose server has gone the
    write alone "succeeds" (seen in CI: a restart counted as two outages); only the
    confirmation proves the subscription is there.
    """
    await pubsub.subscribe(*channels)
    waiting = len(channels)
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        msg = await pubsub.get_message(timeout=left)
        if msg is not None and msg.get("type") == "subscribe":
            waiting -= 1
            if waiting == 0:
                return
    raise RedisTimeoutError(f"no confirmation of SUBSCRIBE {channels} within {timeout:.0f} s")


Client = aioredis.Redis | RedisCluster

_OUTAGE_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    # A cluster failing over: CLUSTERDOWN / MASTERDOWN / TRYAGAIN, or slots whose master is gone
    # and not yet replaced (RedisCluster's own retries gave up). They end by themselves.
    ClusterError,
    TryAgainError,
    SlotNotCoveredError,
)

_PARTITION_BLOCK_SLICE_MS = 50
"""With several partitions, a blocking read waits on all of them at once in slices this long: a
read returns as soon as any partition has windows, at most one slice after the first arrived
(redis-py cannot wait on streams of different slots in one XREADGROUP on a cluster)."""


class Bus:
    """Typed operations on the Redis bus. Create with `async with Bus.connect(url, settings):`."""

    def __init__(
        self,
        client: Client,
        settings: RedisSettings,
        url: str = "",
        dedup_ttl_s: int = DEFAULT_DEDUP_TTL_S,
        *,
        connect_timeout: float = 5.0,
    ) -> None:
        self._r = client
        self.cluster = isinstance(client, RedisCluster)
        """True when talking to a Redis Cluster (through redis-py's RedisCluster)."""
        self.settings = settings
        self.keys = Keys(settings.prefix, settings.partitions)
        self.url = url
        self.dedup_ttl_s = dedup_ttl_s
        self._connect_timeout = connect_timeout
        self._write_event = client.register_script(_WRITE_EVENT_LUA)
        self.available = True
        """False from the first failed call of an outage until a call succeeds again."""
        self.outages = 0
        self._down_since = 0.0
        self._turn = 0  # rotates which partition is read / claimed first

    @staticmethod
    def _client(url: str, connect_timeout: float, *, cluster: bool) -> Client:
        """A redis-py client for `url`; BusError for a URL redis-py rejects."""
        # Few, quick client retries: an outage surfaces as BusError within a second and
        # the caller's backoff paces reconnection (redis-py's default retries for ~10 s).
        retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.25), 2)
        try:
            if cluster:
                return RedisCluster.from_url(
                    url, decode_responses=False, socket_connect_timeout=connect_timeout, retry=retry
                )
            return aioredis.from_url(
                url, decode_responses=False, socket_connect_timeout=connect_timeout, retry=retry
            )
        except (ValueError, RedisError, RedisClusterException) as exc:  # ?ssl_cert_reqs=bogus
            # The URL is redacted and so is redis-py's message, which may quote it (L3).
            detail = str(exc).replace(url, _redact(url))
            raise BusError(f"bad Redis URL {_redact(url)!r}: {_scrub(detail, url)}") from exc

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        url: str,
        settings: RedisSettings | None = None,
        *,
        dedup_ttl_s: int = DEFAULT_DEDUP_TTL_S,
        connect_timeout: float = 5.0,
    ) -> AsyncIterator[Bus]:
        """Connect to `url` (redis://, rediss://, unix://) and check it answers; close on exit.

        A Redis Cluster (redis.cluster "on", or "auto" and the server says cluster_enabled:1)
        gets a RedisCluster client, which finds the other nodes from this one."""
        if not url:
            raise BusError("no Redis URL given: set redis.url, MERCLIP_REDIS_URL or --redis-url")
        settings = settings or RedisSettings()

        def make(cluster: bool) -> Bus:
            client = cls._client(url, connect_timeout, cluster=cluster)
            return cls(client, settings, url, dedup_ttl_s, connect_timeout=connect_timeout)

        bus = make(settings.cluster == "on")
        try:
            await bus._check_answers()
            if settings.cluster == "auto" and await bus._cluster_enabled():
                # A cluster node: start again with a cluster client (it reads the slot map).
                await bus._r.aclose()
                bus = make(True)
                await bus._check_answers()
            yield bus
        finally:
            await bus._r.aclose()

    async def _check_answers(self) -> None:
        try:
            if isinstance(self._r, RedisCluster):
                # Reads the slot map; refused by a server that is not a cluster node.
                await self._call("CLUSTER SLOTS", self._r.initialize())
            await self.ping()
        except BusError:
            raise
        except (RedisError, RedisClusterException) as exc:  # options checked only at connect
            detail = _scrub(str(exc), self.url)
            if self.cluster and "not enabled" in detail:
                raise BusConfigError(
                    f"Redis at {_redact(self.url)} is not a Redis Cluster node ({detail}), but "
                    'redis.cluster is "on": set it to "auto" or "off"'
                ) from exc
            raise BusError(f"bad Redis URL {_redact(self.url)!r} or server: {detail}") from exc

    async def _cluster_enabled(self) -> bool:
        """INFO cluster says cluster_enabled:1 (False where an ACL forbids INFO: a cluster then
        shows itself by its first MOVED, which raises BusConfigError)."""
        try:
            info = await self._call("INFO cluster", self._r.info("cluster"))
        except ResponseError:
            return False
        return str(info.get("cluster_enabled", "0")) == "1"

    async def _call(self, what: str, coro: Awaitable[Any], *, proves_up: bool = True) -> Any:
        """Await a Redis call; connection failures become BusError and mark an outage.
        `proves_up=False`: the call can return without reaching the server (a pub/sub poll
        on a lost connection), so its success does not end an outage."""
        try:
            result = await coro
        except AskError as exc:  # MovedError too
            if self.cluster:  # redirects RedisCluster could not settle: a failover under way
                raise self._outage(what, exc) from exc
            raise BusConfigError(
                f"Redis at {_redact(self.url)} answered {what} with a cluster redirect "
                f"({type(exc).__name__.removesuffix('Error').upper()} {exc}): it is a Redis "
                'Cluster node, and this client talks to one server (redis.cluster is "off", or '
                'INFO was not allowed): set redis.cluster = "auto" or "on" '
                "(MERCLIP_REDIS_CLUSTER)"
            ) from exc
        except _OUTAGE_ERRORS as exc:
            raise self._outage(what, exc) from exc
        except RedisClusterException as exc:
            # Not a RedisError: "Redis Cluster cannot be connected" when no node answers (the
            # whole cluster down) is an outage like any other; the rest (cross-slot) are bugs.
            if isinstance(exc.__cause__, _OUTAGE_ERRORS):
                raise self._outage(what, exc) from exc
            raise
        if proves_up:
            self._answered()
        return result

    def _outage(self, what: str, exc: BaseException) -> BusError:
        error = BusError(
            f"cannot reach Redis at {_redact(self.url)} ({what}): {exc}; is the server "
            "running? (start redis-server, or fix redis.url / --redis-url)"
        )
        if self.available:  # once per outage, not once per failed call
            self.available = False
            self.outages += 1
            self._down_since = time.monotonic()
            log.warning("%s; retrying with backoff", error)
        return error

    def _answered(self) -> None:
        """The server replied: an outage, if one was on, is over."""
        if not self.available:
            self.available = True
            log.warning(
                "Redis at %s answers again after %.1f s",
                _redact(self.url),
                time.monotonic() - self._down_since,
            )

    async def ping(self) -> float:
        """Round trip to the server in milliseconds; BusError when it does not answer."""
        t0 = time.perf_counter()
        if isinstance(self._r, RedisCluster):
            # The masters: a dead replica costs no slot. (redis-py's default, every node it
            # knows, is only the masters in 8.1 without read_from_replicas; said, not assumed.)
            await self._call("PING", self._r.ping(target_nodes=RedisCluster.PRIMARIES))
        else:
            await self._call("PING", self._r.ping())
        return (time.perf_counter() - t0) * 1000.0

    # -- work stream -------------------------------------------------------------------------

    async def add_window(self, fw: FeatureWindow) -> str:
        """Append a window to its session's partition of the work stream; returns its entry id.
        SchemaError for a window over MAX_WINDOW_BYTES (inference would dead-letter it unread)."""
        payload = encode(fw)
        if len(payload) > MAX_WINDOW_BYTES:
            raise SchemaError(
                f"window {fw.session_id}:{fw.seq} is {len(payload)} bytes encoded, over the "
                f"{MAX_WINDOW_BYTES}-byte limit"
            )
        stream = self.keys.windows_stream(self.keys.partition_of(_check_session(fw.session_id)))
        entry = await self._call(
            "XADD windows",
            self._r.xadd(
                stream, {"m": payload}, maxlen=self.settings.windows_maxlen, approximate=True
            ),
        )
        return _s(entry)

    async def add_raw_window(self, fields: dict[str, bytes], partition: int = 0) -> str:
        """Append arbitrary fields to a work stream (foreign producers; tests of bad input)."""
        entry = await self._call(
            "XADD windows",
            self._r.xadd(
                self.keys.windows_stream(partition),
                fields,  # type: ignore[arg-type]
                maxlen=self.settings.windows_maxlen,
            ),
        )
        return _s(entry)

    def _partitions(self) -> list[int]:
        """Every partition, starting from a different one on each call: with less room than
        partitions, none is always served last."""
        n = self.keys.partitions
        self._turn = (self._turn + 1) % n
        return [(self._turn + i) % n for i in range(n)]

    async def ensure_group(self, group: str, start_id: str = "0") -> bool:
        """Create the consumer group (and the stream) on every partition where it is missing;
        True when it was created on any.

        start_id "0": a new group also gets windows that were queued before any worker ran.
        """
        created = False
        for p in range(self.keys.partitions):
            created |= await self._ensure_group_on(p, group, start_id)
        return created

    async def _ensure_group_on(self, partition: int, group: str, start_id: str = "0") -> bool:
        stream = self.keys.windows_stream(partition)
        try:
            await self._call(
                "XGROUP CREATE", self._r.xgroup_create(stream, group, id=start_id, mkstream=True)
            )
            return True
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise BusError(f"XGROUP CREATE {stream} {group}: {exc}") from exc

    async def _recreate_group(self, partition: int, group: str) -> None:
        # Redis lost the group (restarted without persistence, or someone deleted the stream):
        # recreate it from the start so windows queued since the restart are still served.
        if await self._ensure_group_on(partition, group):
            stream = self.keys.windows_stream(partition)
            log.warning("consumer group %s on %s was missing: recreated", group, stream)

    def _delivery(
        self, entry_id: bytes | str, fields: dict | None, deliveries: int, partition: int
    ) -> Delivery:
        eid, p = _s(entry_id), partition
        if not fields:
            # The entry was trimmed by MAXLEN ~ while pending (Redis 6.2 reports it empty).
            return Delivery(eid, deliveries, b"", None, "entry was trimmed from the stream", p)
        raw = fields.get(b"m", b"")
        if not raw:
            return Delivery(eid, deliveries, b"", None, "entry has no 'm' field", p)
        if len(raw) > MAX_WINDOW_BYTES:
            # Not decoded, and not copied into the dead letter (raw = b''): its size is the fault.
            why = f"entry of {len(raw)} bytes is over the {MAX_WINDOW_BYTES}-byte window limit"
            return Delivery(eid, deliveries, b"", None, why, p)
        try:
            message = decode(raw)
        except SchemaError as exc:
            return Delivery(eid, deliveries, raw, None, str(exc), p)
        if not isinstance(message, FeatureWindow):
            return Delivery(eid, deliveries, raw, None, f"{type(message).__name__} on windows", p)
        return Delivery(eid, deliveries, raw, message, None, p)

    async def read_windows(
        self, group: str, consumer: str, count: int, block_ms: int = 0
    ) -> list[Delivery]:
        """New windows for `consumer` (XREADGROUP >) from every partition, at most `count`.

        block_ms > 0 waits up to that long for the first entry; 0 returns at once (unlike Redis,
        where BLOCK 0 waits forever: a worker must wake up to claim stale entries).
        """
        if self.keys.partitions == 1:
            return await self._read_partition(0, group, consumer, count, block_ms or None)
        # One round without blocking, then rounds that wait a slice on every partition at once.
        deadline = time.monotonic() + block_ms / 1000.0
        block: int | None = None
        while True:
            order = self._partitions()
            shares = [count // len(order) + (i < count % len(order)) for i in range(len(order))]
            replies = await asyncio.gather(
                *(
                    self._read_partition(p, group, consumer, share, block)
                    for p, share in zip(order, shares, strict=True)
                    if share > 0
                )
            )
            out = [d for reply in replies for d in reply]
            left_ms = int((deadline - time.monotonic()) * 1000)
            if out or left_ms <= 0:
                return out
            block = min(_PARTITION_BLOCK_SLICE_MS, left_ms)

    async def _read_partition(
        self, partition: int, group: str, consumer: str, count: int, block_ms: int | None
    ) -> list[Delivery]:
        stream = self.keys.windows_stream(partition)
        try:
            reply = await self._call(
                "XREADGROUP",
                self._r.xreadgroup(group, consumer, {stream: ">"}, count=count, block=block_ms),
            )
        except ResponseError as exc:
            if not _no_group(exc):
                raise BusError(f"XREADGROUP {stream} {group}: {exc}") from exc
            await self._recreate_group(partition, group)
            return []
        return [
            self._delivery(entry_id, fields, 1, partition)
            for _stream, entries in reply or []
            for entry_id, fields in entries
        ]

    async def claim_stale(
        self, group: str, consumer: str, min_idle_ms: int, count: int
    ) -> list[Delivery]:
        """Take over up to `count` windows pending longer than `min_idle_ms` (XAUTOCLAIM on
        every partition in turn).

        Their delivery counts (incremented by the claim) come from XPENDING.
        """
        out: list[Delivery] = []
        for p in self._partitions():
            if len(out) >= count:
                break
            out += await self._claim_partition(p, group, consumer, min_idle_ms, count - len(out))
        return out

    async def _claim_partition(
        self, partition: int, group: str, consumer: str, min_idle_ms: int, count: int
    ) -> list[Delivery]:
        stream = self.keys.windows_stream(partition)
        claimed: list[tuple[bytes, dict | None]] = []
        trimmed_unknown = False
        cursor: bytes | str = "0-0"
        while len(claimed) < count:
            try:
                reply = await self._call(
                    "XAUTOCLAIM",
                    self._r.xautoclaim(
                        stream,
                        group,
                        consumer,
                        min_idle_ms,
                        start_id=cursor,
                        count=count - len(claimed),
                    ),
                )
            except ResponseError as exc:
                if not _no_group(exc):
                    raise BusError(f"XAUTOCLAIM {stream} {group}: {exc}") from exc
                await self._recreate_group(partition, group)
                return []
            cursor, entries = reply[0], reply[1]
            for e in entries:
                if e is None or e[0] is None:
                    trimmed_unknown = True  # Redis 6.2: a deleted entry comes back as nil
                else:
                    claimed.append((e[0], e[1]))
            if len(reply) > 2 and reply[2]:
                # Redis 7 drops trimmed entries from the PEL itself and lists them here.
                log.warning("%d pending windows were trimmed before processing", len(reply[2]))
            if _s(cursor) == "0-0":
                break
        if trimmed_unknown:
            claimed.extend(await self._own_deleted_pending(stream, group, consumer, count, claimed))
        if not claimed:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for entry_id, _ in claimed:
                pipe.xpending_range(stream, group, entry_id, entry_id, 1)
            pending = await self._call("XPENDING", pipe.execute())
        out = []
        for (entry_id, fields), info in zip(claimed, pending, strict=True):
            n = int(info[0]["times_delivered"]) if info else 1
            out.append(self._delivery(entry_id, fields, n, partition))
        return out

    async def _own_deleted_pending(
        self,
        stream: str,
        group: str,
        consumer: str,
        count: int,
        known: list[tuple[bytes, dict | None]],
    ) -> list[tuple[bytes, dict | None]]:
        """Ids of entries pending at `consumer` whose stream entry no longer exists.

        Redis 6.2's XAUTOCLAIM hands such entries to the claimer but replies nil instead of
        their id; without this they would stay pending forever.
        """
        seen = {_s(k) for k, _ in known}
        pending = await self._call(
            "XPENDING", self._r.xpending_range(stream, group, "-", "+", count, consumer)
        )
        ids = [p["message_id"] for p in pending if _s(p["message_id"]) not in seen]
        if not ids:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xrange(stream, entry_id, entry_id, count=1)
            found = await self._call("XRANGE", pipe.execute())
        return [(entry_id, None) for entry_id, rows in zip(ids, found, strict=True) if not rows]

    async def ack(self, group: str, ids: Sequence[str], partition: int = 0) -> int:
        """Acknowledge windows (XACK) of one partition and delete them from its stream (XDEL).

        Deleting keeps the stream holding only unprocessed work, so MAXLEN ~ trims nothing a
        worker still needs while workers keep up (with several groups, drop the XDEL).
        """
        if not ids:
            return 0
        stream = self.keys.windows_stream(partition)
        async with self._r.pipeline(transaction=True) as pipe:  # one key: one slot on Cluster
            pipe.xack(stream, group, *ids)
            pipe.xdel(stream, *ids)
            try:
                acked, _ = await self._call("XACK", pipe.execute())
            except ResponseError as exc:
                if not _no_group(exc):
                    raise BusError(f"XACK {stream} {group}: {exc}") from exc
                return 0  # the group (and these windows) went with a Redis restart
        return int(acked)

    async def ack_deliveries(self, group: str, deliveries: Sequence[Delivery]) -> int:
        """`ack` each delivery in the partition it came from."""
        by_partition: dict[int, list[str]] = {}
        for d in deliveries:
            by_partition.setdefault(d.partition, []).append(d.entry_id)
        acked = 0
        for p, ids in by_partition.items():
            acked += await self.ack(group, ids, p)
        return acked

    async def dead_letter(self, entry: Delivery, reason: str) -> str:
        """Copy an entry to its partition's dead-letter stream with the reason (the caller then
        acks it)."""
        fields: dict[FieldT, EncodableT] = {
            "m": entry.raw,
            "entry_id": entry.entry_id,
            "reason": reason,
            "deliveries": str(entry.deliveries),
            "wall": f"{time.time():.3f}",
        }
        dead_id = await self._call(
            "XADD dead",
            self._r.xadd(
                self.keys.dead_stream(entry.partition),
                fields,
                maxlen=self.settings.windows_maxlen,
                approximate=True,
            ),
        )
        log.warning("window %s dead-lettered: %s", entry.entry_id, reason)
        return _s(dead_id)

    async def dead_letters(self, count: int = 100) -> list[dict[str, str | bytes]]:
        """The latest dead letters of all partitions, oldest first (fields decoded to str
        except `m`)."""
        rows: list[tuple[tuple[int, int], dict[str, str | bytes]]] = []
        for p in range(self.keys.partitions):
            stream = self.keys.dead_stream(p)
            reply = await self._call("XREVRANGE dead", self._r.xrevrange(stream, count=count))
            for entry_id, fields in reply:
                row = {_s(k): (v if k == b"m" else _s(v)) for k, v in fields.items()}
                rows.append((_entry_key(entry_id), row))
        rows.sort(key=lambda r: r[0])  # entry ids are server times (per master on Cluster)
        return [row for _, row in rows[-count:]]

    async def pending_count(self, group: str) -> int:
        """Windows delivered to the group and not yet acknowledged (all partitions)."""
        total = 0
        for stream in self.keys.windows_streams:
            try:
                info = await self._call("XPENDING", self._r.xpending(stream, group))
            except ResponseError as exc:
                if _no_group(exc):
                    continue
                raise BusError(f"XPENDING {stream} {group}: {exc}") from exc
            total += int(info["pending"])
        return total

    async def windows_length(self) -> int:
        """Entries in the work streams (unprocessed, or pending)."""
        total = 0
        for stream in self.keys.windows_streams:
            total += int(await self._call("XLEN", self._r.xlen(stream)))
        return total

    # -- events -----------------------------------------------------------------------------

    async def write_event(self, ev: EmotionEvent) -> bool:
        """Append the event to its session stream and publish it, once per event_id.

        Returns False (and writes nothing) when this event id was already written.
        """
        payload = encode(ev)
        written = await self._call(
            "write event",
            self._write_event(
                keys=[
                    self.keys.session_events(ev.session_id),
                    self.keys.seen(ev.session_id, ev.event_id),
                ],
                args=[
                    payload,
                    ev.event_id,
                    self.settings.events_maxlen,
                    self.dedup_ttl_s,
                    self.keys.events_channel,
                    self.keys.session_channel(ev.session_id),
                    self.settings.events_ttl_s,
                ],
            ),
        )
        if written is None:
            return False
        now = time.time()
        pipe = self._r.pipeline(transaction=False)
        pipe.zadd(self.keys.sessions, {ev.session_id: now})
        if self.settings.events_ttl_s > 0:  # the live list forgets what the history forgot
            pipe.zremrangebyscore(self.keys.sessions, "-inf", now - self.settings.events_ttl_s)
        await self._call("ZADD sessions", pipe.execute())
        return True

    async def publish_partial(self, partial: PartialTranscript) -> None:
        """PUBLISH a partial transcript on its session's and the all-sessions partials channel
        (nothing is stored: the next event's words replace it)."""
        payload = encode(partial)
        # Two PUBLISHes, not a pipeline: a channel is no key, so on a cluster a pipeline of them
        # has no slot to go to; a cluster broadcasts each to every node.
        for channel in (
            self.keys.session_partials_channel(partial.session_id),
            self.keys.partials_channel,
        ):
            await self._call("PUBLISH partial", self._r.publish(channel, payload))

    def _decode_events(self, entries: list) -> list[EmotionEvent]:
        out = []
        for entry_id, fields in entries:
            try:
                ev = decode(fields.get(b"m", b""))
            except SchemaError as exc:
                log.warning("skipping undecodable event entry %s: %s", _s(entry_id), exc)
                continue
            if isinstance(ev, EmotionEvent):
                out.append(ev)
        return out

    async def events(self, session_id: str, count: int = 100) -> list[EmotionEvent]:
        """The last `count` events of one session, oldest first (replay)."""
        if count <= 0:
            return []
        key = self.keys.session_events(session_id)
        reply = await self._call("XREVRANGE events", self._r.xrevrange(key, count=count))
        return self._decode_events(list(reversed(reply)))

    async def sessions(self, since_wall: float | None = None, limit: int = 1000) -> list[str]:
        """Sessions with an event since `since_wall` (unix time), most recent first."""
        reply = await self._call(
            "ZREVRANGEBYSCORE",
            self._r.zrevrangebyscore(
                self.keys.sessions,
                "+inf",
                "-inf" if since_wall is None else since_wall,
                start=0,
                num=limit,
            ),
        )
        return [_s(s) for s in reply]

    async def recent_events(self, count: int, sessions_limit: int = 100) -> list[EmotionEvent]:
        """The last `count` events written over the most recent sessions, oldest first (by
        wall_end).

        Cost: about `count` entries decoded, however many sessions there are (review M4: it read
        and decoded `count` per session, 30 000 events for a busy day's 100 sessions, on the
        event loop, per dashboard connect), read in two pipelined round trips (stream entry ids
        are the write times, on the Redis server's one clock):

        1. every session's newest `count / sessions` entries; the `count`-th newest of those
           is a floor: `count` events at least that new exist, so nothing older is needed;
        2. the sessions that may hold more above the floor, each capped at its remaining
           budget: `count` minus the entries already read that are newer than its oldest one.

        One round trip with every session's count fixed beforehand read 25 000 entries for 100
        live sessions: 0.6 s of reply parsing on the loop against 0.08 s for a round trip per
        session. These two read 300 entries (100 live sessions) to 1 750 (5 live among 95
        older), and take about as long as a trip per session on a local Redis, less where each
        trip crosses a network. The entries kept are decoded in a thread.
        """
        if count <= 0:
            return []
        sessions = await self.sessions(limit=sessions_limit)
        if not sessions:
            return []
        keys = [self.keys.session_events(s) for s in sessions]
        first = math.ceil(count / len(sessions))
        async with self._r.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.xrevrange(key, "+", "-", count=first)
            replies: list[list[Any]] = list(await self._call("XREVRANGE events", pipe.execute()))
        read = sorted(_entry_key(entry_id) for reply in replies for entry_id, _ in reply)
        floor = read[-count] if len(read) >= count else (0, 0)
        more: list[tuple[int, int]] = []  # (session index, budget) of the second trip
        for i, reply in enumerate(replies):
            if len(reply) < first or _entry_key(reply[-1][0]) <= floor:
                continue  # all of it read, or the rest is below the floor
            oldest = _entry_key(reply[-1][0])
            budget = count - (len(read) - bisect.bisect_right(read, oldest))
            if budget > 0:
                more.append((i, budget))
        if more:
            low = f"{floor[0]}-{floor[1]}"
            async with self._r.pipeline(transaction=False) as pipe:
                for i, budget in more:
                    pipe.xrevrange(keys[i], "(" + _s(replies[i][-1][0]), low, count=budget)
                extra = await self._call("XREVRANGE events", pipe.execute())
            for (i, _), reply in zip(more, extra, strict=True):
                replies[i] = list(replies[i]) + list(reply)
        top = heapq.nlargest(
            count,
            (
                (_entry_key(entry_id), i, entry_id, fields)
                for i, r in enumerate(replies)
                for entry_id, fields in r
            ),
            key=lambda item: item[:2],
        )
        entries = [(entry_id, fields) for _, _, entry_id, fields in reversed(top)]
        merged = await asyncio.to_thread(self._decode_events, entries)
        merged.sort(key=lambda e: (e.wall_end, e.session_id, e.seq))
        return merged

    @contextlib.asynccontextmanager
    async def event_feed(
        self, session_id: str | None = None, poll_s: float = 1.0, *, partials: bool = False
    ) -> AsyncIterator[AsyncIterator[EmotionEvent | PartialTranscript]]:
        """Subscribe to live events (one session, or all); subscribed on entry, so history read
        inside the block cannot miss an event published meanwhile (deduplicate by event_id).
        With `partials`, the session's PartialTranscripts come through it too."""
        if session_id is None:
            channels = [self.keys.events_channel]
            if partials:
                channels.append(self.keys.partials_channel)
        else:
            channels = [self.keys.session_channel(session_id)]
            if partials:
                channels.append(self.keys.session_partials_channel(session_id))
        channel = channels[0]
        node: aioredis.Redis | None = None  # on a cluster: the node subscribed to
        pubsub: Any = None
        try:
            if isinstance(self._r, RedisCluster):
                node, pubsub = await self._subscribe_on_a_node(self._r, channels)
            else:
                pubsub = self._r.pubsub()
                try:
                    await _subscribe_confirmed(pubsub, channels, SUBSCRIBE_CONFIRM_SECONDS)
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    # Likely a pooled connection left from before an outage: its error is not
                    # yet an outage. aclose() disconnects it, so the retry reconnects.
                    await pubsub.aclose()
                    pubsub = self._r.pubsub()
                    await self._call(
                        "SUBSCRIBE",
                        _subscribe_confirmed(pubsub, channels, SUBSCRIBE_CONFIRM_SECONDS),
                    )
            self._answered()

            async def feed() -> AsyncIterator[EmotionEvent | PartialTranscript]:
                while True:
                    msg = await self._call(
                        "pub/sub", pubsub.get_message(timeout=poll_s), proves_up=False
                    )
                    if msg is None or msg.get("type") != "message":
                        continue
                    try:
                        ev = decode(msg["data"])
                    except SchemaError as exc:
                        log.warning("skipping undecodable message on %s: %s", channel, exc)
                        continue
                    if isinstance(ev, EmotionEvent) or (
                        partials and isinstance(ev, PartialTranscript)
                    ):
                        yield ev

            yield feed()
        finally:
            with contextlib.suppress(RedisError, OSError, asyncio.CancelledError):
                if pubsub is not None:
                    await pubsub.aclose()
                if node is not None:
                    await node.aclose()

    async def _subscribe_on_a_node(
        self, cluster: RedisCluster, channels: list[str]
    ) -> tuple[aioredis.Redis, Any]:
        """RedisCluster has no pub/sub: subscribe on a plain connection to one node. Any node
        will do, since a cluster broadcasts classic PUBLISH to all of them; they are tried in
        random order (subscribers spread over the nodes) until one confirms. When that node
        dies the feed fails like a lost connection, and the next subscription picks a live one
        (RedisCluster's node list follows failovers as its commands meet them)."""
        nodes = list(cluster.get_nodes())
        random.shuffle(nodes)
        failure: BaseException = RedisConnectionError("no cluster node known")
        for node in nodes:
            client = self._client(
                self._node_url(node.host, node.port), self._connect_timeout, cluster=False
            )
            assert isinstance(client, aioredis.Redis)
            pubsub = client.pubsub()
            try:
                await _subscribe_confirmed(pubsub, channels, SUBSCRIBE_CONFIRM_SECONDS)
                return client, pubsub
            except _OUTAGE_ERRORS as exc:
                failure = exc
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
                    await client.aclose()
        raise self._outage("SUBSCRIBE", failure) from failure

    def _node_url(self, host: str, port: int | str) -> str:
        """redis.url with another node's address (same scheme, credentials and options)."""
        parts = urlsplit(self.url)
        userinfo = parts.netloc.rpartition("@")[0]
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return urlunsplit(parts._replace(netloc=f"{userinfo}@{address}" if userinfo else address))
