"""The Redis backend of the `Store` (DESIGN §10): one set of devices for a cluster.

What lives where (every key starts with `key_prefix`):

    d:<aor>    hash  device_id -> device record (deflated JSON array, see _encode_device)
    apps       hash  app_id -> app (JSON; "f1:" + Fernet token when secret_key_file is set)
    config     hash  top-level key -> JSON value
    devices    int   number of device records (kept from HSET/HDEL replies)
    node:<id>  str   one per node, refreshed each second; gone = Redis lost our writes
    push:<aor> str   the cluster's one-push-per-AOR lock (SET NX PX), see `claim_push`
    events     pub/sub channel: registrations, invalidations, app and config changes

Reads stay synchronous, as the `Store` interface has them: apps and config are
small and held whole; device records are a bounded read-through cache (LRU over
AORs) that `fetch_devices(aor)` fills before a push, so a node's memory does not
grow with the cluster's device count. Writes change the cache at once and are
queued (coalesced per key, bounded) for one writer task that sends them as one
pipeline and then publishes what changed; while Redis is down the queue holds
them and is replayed on reconnect.

Why pub/sub and not Streams for the events: a registration matters only to calls
waiting right now (≤ max_wait), so replaying old ones after a disconnect has no
use, while a Stream would cost memory and trimming in Redis and an XREAD round
trip per batch. What pub/sub loses while a node is cut off is covered otherwise:
on every reconnect the node drops its device cache and reloads apps and config.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import cattrs
import trio
from cryptography.fernet import Fernet, InvalidToken

from ..model import App, Device
from ..store import (
    REFRESH_WRITE_INTERVAL,
    MemoryStore,
    _records,
    structure_app,
    unstructure_app,
)
from .client import RedisClient
from .protocol import Command, RedisConfigError, RedisReplyError, RedisUnavailable

log = logging.getLogger("pusher_trio.redis.store")

CACHE_AORS = 20_000  # AORs whose records a node keeps; about 1 kB each
MAX_QUEUED_WRITES = 100_000  # distinct keys waiting for Redis; beyond it the oldest are dropped
MAX_QUEUED_EVENTS = 10_000
NODE_MARKER_TTL = 86_400  # s; refreshed every second while connected
EVENT_MAX_AGE = 5.0  # a registration older than this wakes nobody worth waking: not replayed
WRITE_BATCH = 2_000  # keys per pipeline: one reply buffer stays small
ENCRYPTED = "f1:"
DEVICE_FORMAT = 1
_MISSING = object()
# Redis keeps a hash as one compact listpack while every field and value is at most
# hash-max-listpack-value bytes (default 64), else as a hashtable: a dict, its table
# and an entry per field, each a separate allocation. A record is ~130-250 bytes, so
# at the default every AOR is a hashtable: ~477 bytes per record against ~327 at 256
# (1,000,000 records, load/bench_redis.py records). The node says so; the setting is
# the operator's (it applies to every hash in that Redis).
LISTPACK_VALUE_ADVISED = 256

RegisteredHook = Callable[[str, str, float], None]  # (aor, contact, at) seen by another node
RejectedHook = Callable[[str, Any], None]  # (aor, report) of a push another node had refused
PEER_REJECTION_WINDOW = 2.0  # s: a refusal this recent answers a claim that lost the race


# --- encoding ---------------------------------------------------------------------------


# A record is its positional JSON array (field names would be most of its bytes),
# deflated against a preset dictionary of what records repeat: field values, the SIP
# contact's push params, common User-Agents. Measured with 1,000,000 records
# (load/bench_redis.py records): 404 bytes of JSON become ~165, which is most of the
# difference between ~740 and ~430 bytes of Redis memory per record; the token, once
# in the record and once in the contact, is stored once (deflate finds the repeat).
# A 1 KiB window and memLevel 2 keep the compressor state small enough to copy per
# record (6 us against 12 us for a fresh compressobj with the dictionary).
# The dictionary is part of the format: changing it needs a new tag.
_ZTAG = b"z1"
_ZDICT = (
    b'{"source":"legacy","project":"mapping","source":"rfc8599","team_id":"'
    b"LinphoneAndroid/LinphoneSDK/ (Android) LinphoneiOS/ (iPhone) LinphoneSDK/"
    b";transport=tls;transport=tcp;ob;rinstance=;app-id=;pn-type=;pn-tok=;pn-provider=fcm"
    b";pn-param=;pn-provider=webpush;transport=udp;pn-provider=apns;pn-prid=;pn-param="
    b'"invalid","Unregistered",null,null]"firebase","alert",0,"voip",1,"valid",null,null]'
    b'[1,"apple","sip:'
)
_ZWBITS = -10  # raw deflate, 1 KiB window (the dictionary and a record fit in it)
_DEFLATE = zlib.compressobj(6, zlib.DEFLATED, _ZWBITS, 2, zlib.Z_DEFAULT_STRATEGY, _ZDICT)
_INFLATE = zlib.decompressobj(_ZWBITS, _ZDICT)  # copied per record: no dictionary set-up each
MAX_RECORD = 65536  # a record inflating beyond this is refused (no decompression bomb)


def _encode_device(d: Device) -> bytes:
    fields = [
        DEVICE_FORMAT, d.type, d.app, d.token, int(d.sandbox), d.push_type, dict(d.extra),
        d.user_agent, d.contact, int(d.bound), d.last_registered, d.state, d.reason,
        d.invalidated_at,
    ]  # fmt: skip
    deflate = _DEFLATE.copy()
    text = json.dumps(fields, separators=(",", ":")).encode()
    return _ZTAG + deflate.compress(text) + deflate.flush()


def _decode_device(aor: str, device_id: str, data: bytes | str) -> Device:
    """Raises ValueError when the record is not one (of either format) we wrote."""
    raw = data.encode() if isinstance(data, str) else data
    if raw[:2] == _ZTAG:
        inflate = _INFLATE.copy()
        try:
            raw = inflate.decompress(raw[2:], MAX_RECORD)
        except zlib.error as exc:
            raise ValueError(f"corrupt device record: {exc}") from None
        if inflate.unconsumed_tail or not inflate.eof:
            raise ValueError("corrupt or oversized device record")
    (version, type_, app, token, sandbox, push_type, extra, user_agent, contact, bound,
     last_registered, state, reason, invalidated_at) = json.loads(raw)  # fmt: skip
    if version != DEVICE_FORMAT:
        raise ValueError(f"unknown device record format {version!r}")
    return Device(
        aor=aor, device_id=device_id, type=type_, app=app, token=token, sandbox=bool(sandbox),
        push_type=push_type, extra=extra, user_agent=user_agent, contact=contact,
        bound=bool(bound), last_registered=last_registered, state=state, reason=reason,
        invalidated_at=invalidated_at,
    )  # fmt: skip


def load_secret_key(path: str) -> Fernet:
    """The Fernet key that encrypts app secrets at rest; the file must be private (0600)."""
    from .protocol import read_password_file

    try:
        key = read_password_file(path)
    except RedisConfigError as exc:
        raise RedisConfigError(str(exc).replace("redis_password_file", "secret_key_file")) from None
    try:
        return Fernet(key.encode())
    except ValueError:
        raise RedisConfigError(
            f"secret_key_file {path} holds no Fernet key (32 url-safe base64-encoded bytes;"
            " make one with: python3 -c 'from cryptography.fernet import Fernet;"
            " print(Fernet.generate_key().decode())')"
        ) from None


def encode_app(app: App, fernet: Fernet | None) -> str:
    text = json.dumps(unstructure_app(app), separators=(",", ":"))
    if fernet is None:
        return text
    return ENCRYPTED + fernet.encrypt(text.encode()).decode()


def decode_app(data: bytes | str, fernet: Fernet | None) -> App:
    """Raises ValueError (with no secret in it) when the app cannot be read."""
    text = data.decode() if isinstance(data, bytes) else data
    if text.startswith(ENCRYPTED):
        if fernet is None:
            raise ValueError("its secrets are encrypted and no secret_key_file is set")
        try:
            text = fernet.decrypt(text[len(ENCRYPTED) :].encode()).decode()
        except InvalidToken:
            raise ValueError("its secrets do not decrypt with secret_key_file") from None
    try:
        return structure_app(json.loads(text))
    except (ValueError, cattrs.BaseValidationError) as exc:
        raise ValueError(f"unreadable: {type(exc).__name__}") from None


@attrs.frozen
class _RemoteOp:
    """An unbind, invalidation or removal of an AOR this node has not (wholly) cached:
    the writer reads what Redis holds for it, then applies the change to that."""

    kind: str  # "unbind" | "invalidate" | "remove"
    aor: str
    device_ids: tuple[str, ...] | None = None  # unbind: None for all; invalidate: one
    reason: str = ""
    at: float = 0.0
    token: str | None = None  # remove: only the records with this token


@attrs.frozen
class _Event:
    kind: str  # "reg" | "dev" | "rej" | "apps" | "config"; "unlock" is not published
    aor: str = ""
    contact: str = ""
    at: float = 0.0
    data: Any = None  # "rej": the refused push's report (masked tokens, reasons)


# --- the store -----------------------------------------------------------------------------


class RedisStore(MemoryStore):
    """`Store` on Redis; `run()` (in a nursery) writes, reloads and serves the events.

    `client` sends commands; `subscriber` is a second client subscribed to the events
    channel whose `on_message` is this store's `on_message` (see `open_clients`).
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str = "pusher:",
        fernet: Fernet | None = None,
        cache_aors: int = CACHE_AORS,
        max_queued_writes: int = MAX_QUEUED_WRITES,
        node_id: str | None = None,
        refresh_interval: float = REFRESH_WRITE_INTERVAL,
    ) -> None:
        super().__init__(refresh_interval=refresh_interval)
        self.client = client
        self.prefix = prefix
        self.channel = f"{prefix}events"
        self._fernet = fernet
        self.cache_aors = cache_aors
        self.max_queued_writes = max_queued_writes
        self.node_id = node_id or secrets.token_hex(6)
        self.on_remote_registered: RegisteredHook | None = None
        self.on_remote_rejected: RejectedHook | None = None
        # AOR -> (monotonic arrival, report) of pushes other nodes had refused, recent only
        self._peer_rejections: dict[str, tuple[float, Any]] = {}
        # AORs whose records are all here (loaded from Redis, or written since); others
        # in self._devices are partial (learned here while Redis had more).
        self._complete: set[str] = set()
        self._pending_devices: OrderedDict[tuple[str, str], Device | None] = OrderedDict()
        self._pending_apps: dict[str, App | None] = {}
        self._pending_config: dict[str, Any] = {}
        self._remote_ops: deque[_RemoteOp] = deque()
        self._events: deque[tuple[float, _Event]] = deque(maxlen=MAX_QUEUED_EVENTS)
        # AORs whose push lock this node holds -> when the lock expires (monotonic)
        self._claimed: dict[str, float] = {}
        self._writeback: list[tuple[bool, Command]] = []  # (is a device, HSETNX)
        self._in_flight = 0  # writes sent, not yet answered
        self._work = trio.Event()
        self._loading = False  # applying what Redis holds: no dirty marks
        self._generation = 0  # client generation the caches were loaded for
        self._reload: set[str] = set()  # "apps", "config" asked by other nodes
        self._remote_count = 0
        self.listpack_value: int | None = None  # Redis's hash-max-listpack-value, if read
        self._count_delta = 0
        self._stats.update(
            {
                "queued_writes_dropped": 0,
                "events_dropped": 0,
                "writes": 0,
                "pipelines": 0,
                "write_failures": 0,
                "cache_evictions": 0,
                "cache_misses": 0,
                "cache_hits": 0,
                "written_back": 0,
                "events_received": 0,
                "push_claims_lost": 0,
            }
        )

    @property
    def synced(self) -> bool:
        """Apps and config have been read from Redis at least once."""
        return self._generation > 0

    # --- keys ------------------------------------------------------------------------
    def _dkey(self, aor: str) -> str:
        return f"{self.prefix}d:{aor}"

    # --- dirty tracking (MemoryStore hooks, lock held) -----------------------------------
    def _dirty_device(self, key: tuple[str, str]) -> None:
        if self._loading:
            return
        value = self.device(key[0], key[1])
        self._pending_devices.pop(key, None)
        self._pending_devices[key] = value
        if len(self._pending_devices) > self.max_queued_writes:
            self._pending_devices.popitem(last=False)
            self._stats["queued_writes_dropped"] += 1
        self._work.set()

    def _dirty_app(self, app_id: str) -> None:
        if not self._loading:
            self._pending_apps[app_id] = self._apps.get(app_id)
            self._work.set()

    def _dirty_config(self, top_key: str) -> None:
        if not self._loading:
            self._pending_config[top_key] = self._config.get(top_key, _MISSING)
            self._work.set()

    # --- reads -----------------------------------------------------------------------------
    def devices(self, aor: str | None = None) -> list[Device]:
        if aor is not None and aor in self._devices:
            self._devices[aor] = self._devices.pop(aor)  # most recently used
        return super().devices(aor)

    def device_count(self) -> int:
        return max(self._remote_count + self._count_delta, 0)

    async def fetch_devices(self, aor: str | None) -> list[Device]:
        """Read through: the records of `aor` from Redis unless all are here already.

        `None` lists the whole cluster's records (SCAN; not cached). While Redis is
        down: what this node holds (DESIGN §10: pushes for records in memory still go out).
        """
        if aor is None:
            return await self._fetch_all()
        if aor in self._complete:
            self._stats["cache_hits"] += 1
            return self.devices(aor)
        self._stats["cache_misses"] += 1
        if not self.client.connected:
            return self.devices(aor)
        try:
            reply = await self.client.execute("HGETALL", self._dkey(aor))
        except (RedisUnavailable, RedisReplyError) as exc:
            log.warning("redis: read of %s failed, using what is in memory: %s", aor, exc)
            return self.devices(aor)
        self._merge(aor, reply)
        return self.devices(aor)

    def _merge(self, aor: str, reply: list[bytes]) -> None:
        """Put what Redis holds for `aor` in the cache, under the writes still queued here."""
        with self._lock:
            self._loading = True
            try:
                by_id = _records(self._devices.get(aor))
                stored: dict[str, Device] = {}
                for i in range(0, len(reply), 2):
                    device_id = reply[i].decode()
                    try:
                        stored[device_id] = _decode_device(aor, device_id, reply[i + 1])
                    except (ValueError, TypeError) as exc:
                        log.error("redis: record %s of %s is unreadable: %s", device_id, aor, exc)
                merged = dict(stored)
                for device_id, device in by_id.items():
                    if (aor, device_id) in self._pending_devices:
                        merged[device_id] = device
                for key, value in self._pending_devices.items():
                    if key[0] == aor and value is None:
                        merged.pop(key[1], None)
                self._count += len(merged) - len(by_id)
                before = self._devices.pop(aor, None)
                # kept even when empty: "no records" is an answer worth caching, and the
                # LRU bound counts it
                self._devices[aor] = merged
                if before is not None:
                    self._rekey_written(before)
                for device_id, device in stored.items():
                    self._written_at[(aor, device_id)] = device.last_registered
                self._complete.add(aor)
            finally:
                self._loading = False
            self._evict()

    async def _fetch_all(self) -> list[Device]:
        if not self.client.connected:
            return self.devices(None)
        out: dict[tuple[str, str], Device] = {}
        cursor = b"0"
        prefix = self._dkey("")
        while True:
            cursor, keys = await self.client.execute(
                "SCAN", cursor, "MATCH", _glob_escape(prefix) + "*", "COUNT", 1000
            )
            if keys:
                replies = await self.client.pipeline([("HGETALL", k) for k in keys])
                for key, reply in zip(keys, replies, strict=True):
                    if isinstance(reply, RedisReplyError):
                        continue
                    aor = key.decode()[len(prefix) :]
                    for i in range(0, len(reply), 2):
                        device_id = reply[i].decode()
                        try:
                            out[(aor, device_id)] = _decode_device(aor, device_id, reply[i + 1])
                        except (ValueError, TypeError):
                            continue
            if cursor in (b"0", 0):
                break
        for key, value in list(self._pending_devices.items()):
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value
        return list(out.values())

    # --- writes (the MemoryStore ones, plus the cache bound) --------------------------------
    def put_devices(self, devices: Iterable[Device]) -> list[Device]:
        changed = super().put_devices(devices)
        self._evict()
        return changed

    def unbind(self, aor: str, device_ids: Iterable[str] | None = None) -> int:
        """Unbinds what is here at once; an AOR not wholly here is unbound in Redis too
        (the phone may have registered on another node, or been evicted from this cache)."""
        ids = None if device_ids is None else tuple(device_ids)
        with self._lock:
            n = super().unbind(aor, ids)
            if aor not in self._complete:
                self._queue_op(_RemoteOp("unbind", aor, ids))
        return n

    def invalidate(self, aor: str, device_id: str, reason: str, now: float) -> bool:
        """False when the record is not here; if the AOR is not wholly here, the record is
        invalidated in Redis all the same (the writer reads it first)."""
        with self._lock:
            found = super().invalidate(aor, device_id, reason, now)
            if not found and aor not in self._complete:
                self._queue_op(_RemoteOp("invalidate", aor, (device_id,), reason, now))
        return found

    def remove_devices(self, aor: str, token: str | None = None) -> int:
        """Counts what was here; an AOR not wholly here is removed from Redis too
        (call `fetch_devices(aor)` first for a count of the cluster's records)."""
        with self._lock:
            n = super().remove_devices(aor, token)
            if aor not in self._complete:
                self._queue_op(_RemoteOp("remove", aor, token=token))
        return n

    def _queue_op(self, op: _RemoteOp) -> None:
        if len(self._remote_ops) >= self.max_queued_writes:
            self._remote_ops.popleft()
            self._stats["queued_writes_dropped"] += 1
        self._remote_ops.append(op)
        self._work.set()

    async def _apply_remote_ops(self) -> None:
        """Read the AORs of queued unbinds/invalidations/removals from Redis, then apply
        each to the records Redis holds. Records with a write queued here are left alone:
        the change reached them when it was made, or they were written after it (a
        REGISTER right after an unbind must stay bound)."""
        ops = [self._remote_ops[i] for i in range(min(len(self._remote_ops), WRITE_BATCH))]
        aors = list(dict.fromkeys(op.aor for op in ops))
        replies = await self.client.pipeline([("HGETALL", self._dkey(aor)) for aor in aors])
        with self._lock:
            for _ in ops:
                self._remote_ops.popleft()
            for aor, reply in zip(aors, replies, strict=True):
                if isinstance(reply, RedisReplyError):
                    log.error("redis: cannot read %s to change it: %s", aor, reply)
                    continue
                self._merge(aor, reply)  # the AOR is now the most recent in the cache
                for op in ops:
                    if op.aor == aor:
                        self._apply_op(op)

    def _apply_op(self, op: _RemoteOp) -> None:
        aor = op.aor
        ids = [
            i
            for i in _records(self._devices.get(aor))
            if (aor, i) not in self._pending_devices
            and (op.device_ids is None or i in op.device_ids)
        ]
        if op.kind == "unbind":
            super().unbind(aor, ids)
        elif op.kind == "invalidate":
            for device_id in ids:
                super().invalidate(aor, device_id, op.reason, op.at)
        else:
            before = self._devices.get(aor)
            by_id = _records(before)
            gone = [i for i in ids if op.token is None or by_id[i].token == op.token]
            self._drop_written(aor, gone)
            kept = {i: d for i, d in by_id.items() if i not in gone}
            self._devices[aor] = next(iter(kept.values())) if len(kept) == 1 else kept
            if before is not None:
                self._rekey_written(before)
            for device_id in gone:
                self._dirty_device((aor, device_id))
            self._count -= len(gone)

    def _evict(self) -> None:
        """Keep at most cache_aors AORs: drop the least recently used (queued writes stay
        queued: they carry their own values)."""
        with self._lock:
            while len(self._devices) > self.cache_aors:
                aor, value = next(iter(self._devices.items()))
                by_id = _records(value)
                self._drop_written(aor, by_id)
                del self._devices[aor]
                self._complete.discard(aor)
                self._count -= len(by_id)
                self._stats["cache_evictions"] += 1

    def forget(self, aor: str) -> None:
        """Another node changed `aor`: the next read goes to Redis."""
        with self._lock:
            value = self._devices.get(aor)
            if value is None:
                self._complete.discard(aor)
                return
            by_id = _records(value)
            if any((aor, device_id) in self._pending_devices for device_id in by_id):
                self._complete.discard(aor)  # keep our queued values; re-read the rest
                return
            self._drop_written(aor, by_id)
            del self._devices[aor]
            self._complete.discard(aor)
            self._count -= len(by_id)

    # --- the cluster: events and the push lock ---------------------------------------------
    def publish_registered(self, aor: str, contact: str, at: float) -> None:
        """Tell every node that `aor` registered (queued behind this node's writes of it)."""
        self._queue_event(_Event("reg", aor, contact, at))

    def _queue_event(self, event: _Event) -> None:
        if len(self._events) == self._events.maxlen:
            self._stats["events_dropped"] += 1
        self._events.append((time.monotonic(), event))
        self._work.set()

    async def claim_push(self, aor: str, ttl: float) -> bool:
        """The cluster's one push per sleeping AOR: True when this node should push.

        `SET push:<aor> NX PX`: the first node to ask pushes; the lock expires with
        the wait, and the node holding it drops it when the AOR registers (a new call
        after the wake pushes again). Redis down: every node pushes for itself.
        """
        if not self.client.connected:
            return True
        asked = time.monotonic()
        try:
            reply = await self.client.execute(
                "SET", f"{self.prefix}push:{aor}", self.node_id, "NX", "PX", max(1, int(ttl * 1000))
            )
        except (RedisUnavailable, RedisReplyError):
            return True
        if reply is None:
            self._stats["push_claims_lost"] += 1
            refused = self._peer_rejections.get(aor)
            if refused is not None and refused[0] >= asked and self.on_remote_rejected is not None:
                # The holder's refusal came in on the events connection before this reply:
                # hand it over once the caller has marked its calls as sharing that push
                # (it does so before its next checkpoint).
                hook = self.on_remote_rejected
                trio.lowlevel.current_trio_token().run_sync_soon(hook, aor, refused[1])
            return False
        now = time.monotonic()
        if len(self._claimed) >= MAX_QUEUED_EVENTS:  # locks that expired unregistered
            self._claimed = {a: t for a, t in self._claimed.items() if t > now}
        self._claimed[aor] = now + ttl
        return True

    def push_rejected(self, aor: str, report: Any) -> None:
        """Every provider refused the push this node sent for `aor`: if this node holds the
        cluster's lock for it, drop the lock (the next call pushes again) and tell the
        nodes whose calls share the push, so they answer PushRejected now, not at their
        deadline."""
        if self._claimed.pop(aor, 0.0) <= time.monotonic():
            return  # not ours (Redis was down, or the lock expired): nobody shares it
        self._queue_lock_release(aor)
        self._queue_event(_Event("rej", aor, data=report))

    def on_message(self, channel: bytes, data: bytes) -> None:
        """The subscriber's handler: apply what another node did."""
        try:
            message = json.loads(data)
            node, kind = message["n"], message["k"]
        except (ValueError, KeyError, TypeError):
            log.warning("redis: unreadable event on %s ignored", channel.decode(errors="replace"))
            return
        self._stats["events_received"] += 1
        aor = message.get("a", "")
        if kind == "reg" and aor in self._claimed:
            if self._claimed.pop(aor) > time.monotonic():  # still ours: let the next call push
                self._queue_lock_release(aor)
        if node == self.node_id:
            return
        if kind in ("reg", "dev"):
            self.forget(aor)
            if kind == "reg" and self.on_remote_registered is not None:
                self.on_remote_registered(aor, message.get("c", ""), float(message.get("t", 0)))
        elif kind == "rej":
            now = time.monotonic()
            if len(self._peer_rejections) >= MAX_QUEUED_EVENTS:
                self._peer_rejections = {
                    a: r for a, r in self._peer_rejections.items()
                    if now - r[0] < PEER_REJECTION_WINDOW
                }  # fmt: skip
            report = message.get("d")
            self._peer_rejections[aor] = (now, report)
            if self.on_remote_rejected is not None:
                self.on_remote_rejected(aor, report)
        elif kind in ("apps", "config"):
            self._reload.add(kind)
            self._work.set()

    def _queue_lock_release(self, aor: str) -> None:
        self._queue_event(_Event("unlock", aor))

    # --- the writer task -------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sync with Redis on every (re)connect, then send queued writes and events."""
        task_status.started()
        while True:
            await self.client.wait_connected()
            try:
                if self.client.generation != self._generation:
                    await self._resync()
                elif self._reload:
                    await self._load_small(self._reload.copy())
                if self._remote_ops:
                    await self._apply_remote_ops()
                if self.queued_writes or self._events or self._count_delta:
                    await self._write_batch()
                    continue
            except RedisUnavailable:
                self._stats["write_failures"] += 1
                continue  # wait_connected() above waits for the next connection
            except RedisReplyError as exc:  # e.g. an ACL that forbids a command: say, retry
                self._stats["write_failures"] += 1
                log.error("redis: sync with Redis refused, retrying in 1 s: %s", exc)
                await trio.sleep(1.0)
                continue
            self._work = trio.Event()
            if self.queued_writes or self._events:
                continue
            if self.client.generation == self._generation and not self._reload:
                with trio.move_on_after(1.0):  # the remote count refreshes at least this often
                    await self._work.wait()
                if not self._work.is_set():
                    await self._refresh_count()

    async def _refresh_count(self) -> None:
        """The cluster's device count, and this node's check that Redis still holds what
        it wrote (FLUSHALL, a restart without persistence, a failover to an empty replica):
        else write back what it holds."""
        try:
            value, marker = await self.client.pipeline(
                [("GET", f"{self.prefix}devices"), self._marker_command()]
            )
        except RedisUnavailable:
            return
        if marker is None and self._generation:
            log.warning("redis: Redis was emptied; writing back what this node holds")
            self._write_back_all()
        if not isinstance(value, RedisReplyError):
            self._remote_count = int(value or 0)

    def _marker_command(self) -> Command:
        """Each node keeps its own marker key (a shared one would tell only the first node
        that looks); SET ... GET answers nil when it was gone."""
        return ("SET", f"{self.prefix}node:{self.node_id}", "1", "EX", NODE_MARKER_TTL, "GET")

    async def _resync(self) -> None:
        """A new connection: write back what this node holds if Redis lost it, then reload."""
        generation = self.client.generation
        marker = await self.client.execute(*self._marker_command())
        if marker is None and self._generation:
            log.warning("redis: Redis came back empty; writing back what this node holds")
            self._write_back_all()
        await self._load_small({"apps", "config"})
        with self._lock:
            for aor in list(self._complete):
                self.forget(aor)  # events may have been missed while disconnected
        await self._refresh_count()
        if not self._generation:
            await self._check_encoding()
        self._generation = generation

    async def _check_encoding(self) -> None:
        """Advise `hash-max-listpack-value` once (see LISTPACK_VALUE_ADVISED); CONFIG may
        be denied by an ACL or renamed: then say nothing."""
        try:
            reply = await self.client.execute("CONFIG", "GET", "hash-max-listpack-value")
            value = int(reply[1])
        except (RedisReplyError, IndexError, TypeError, ValueError):
            return
        self.listpack_value = value
        if value < LISTPACK_VALUE_ADVISED:
            log.warning(
                "redis: hash-max-listpack-value is %d: each device record costs Redis about"
                " 475 bytes; with %d (redis.conf or CONFIG SET) about 330",
                value,
                LISTPACK_VALUE_ADVISED,
            )

    def _write_back_all(self) -> None:
        """Queue HSETNX of every record, app and config key held here: it fills what is
        missing and never overwrites what another node wrote back first."""
        with self._lock:
            commands: list[tuple[bool, Command]] = []
            for aor, records in self._devices.items():
                for device_id, device in _records(records).items():
                    if (aor, device_id) not in self._pending_devices:
                        commands.append(
                            (True, ("HSETNX", self._dkey(aor), device_id, _encode_device(device)))
                        )
            for app_id, app in self._apps.items():
                if app_id not in self._pending_apps:
                    value = encode_app(app, self._fernet)
                    commands.append((False, ("HSETNX", f"{self.prefix}apps", app_id, value)))
            for top, tree in self._config.items():
                if top not in self._pending_config:
                    value = json.dumps(tree)
                    commands.append((False, ("HSETNX", f"{self.prefix}config", top, value)))
            self._writeback.extend(commands)
            self._stats["written_back"] += len(commands)
            self._work.set()

    async def _load_small(self, what: set[str]) -> None:
        """Apps and config from Redis, under what this node still has queued."""
        commands: list[Command] = [("HGETALL", f"{self.prefix}{name}") for name in sorted(what)]
        replies = await self.client.pipeline(commands)
        for name, reply in zip(sorted(what), replies, strict=True):
            self._reload.discard(name)
            if isinstance(reply, RedisReplyError):
                log.error("redis: cannot read %s%s: %s", self.prefix, name, reply)
                continue
            pairs = {reply[i].decode(): reply[i + 1] for i in range(0, len(reply), 2)}
            with self._lock:
                if name == "apps":
                    apps: dict[str, App] = {}
                    for app_id, data in pairs.items():
                        try:
                            apps[app_id] = decode_app(data, self._fernet)
                        except ValueError as exc:
                            log.error("redis: app %r is ignored: %s", app_id, exc)
                    for app_id, pending in self._pending_apps.items():
                        if pending is None:
                            apps.pop(app_id, None)
                        else:
                            apps[app_id] = pending
                    self._apps = apps
                else:
                    config: dict[str, Any] = {}
                    for key, data in pairs.items():
                        try:
                            config[key] = json.loads(data)
                        except ValueError:
                            log.error("redis: config key %r is unreadable and ignored", key)
                    for key, pending in self._pending_config.items():
                        if pending is _MISSING:
                            config.pop(key, None)
                        else:
                            config[key] = pending
                    self._config = config

    async def _write_batch(self) -> None:
        with self._lock:
            devices: list[tuple[tuple[str, str], Device | None]] = []
            while self._pending_devices and len(devices) < WRITE_BATCH:
                devices.append(self._pending_devices.popitem(last=False))
            apps, self._pending_apps = self._pending_apps, {}
            config, self._pending_config = self._pending_config, {}
            now = time.monotonic()
            timed = [(at, e) for at, e in self._events if now - at <= EVENT_MAX_AGE]
            events = [e for _, e in timed]
            self._events.clear()
            delta, self._count_delta = self._count_delta, 0
            writeback = self._writeback[:WRITE_BATCH]
            del self._writeback[:WRITE_BATCH]
        commands: list[Command] = []
        for (aor, device_id), device in devices:
            if device is None:
                commands.append(("HDEL", self._dkey(aor), device_id))
            else:
                commands.append(("HSET", self._dkey(aor), device_id, _encode_device(device)))
        for app_id, app in apps.items():
            if app is None:
                commands.append(("HDEL", f"{self.prefix}apps", app_id))
            else:
                commands.append(
                    ("HSET", f"{self.prefix}apps", app_id, encode_app(app, self._fernet))
                )
        for key, value in config.items():
            if value is _MISSING:
                commands.append(("HDEL", f"{self.prefix}config", key))
            else:
                commands.append(("HSET", f"{self.prefix}config", key, json.dumps(value)))
        commands.extend(command for _, command in writeback)
        n_writes = len(commands)
        if delta:
            commands.append(("INCRBY", f"{self.prefix}devices", delta))
        # published after the writes, in the same pipeline: a node that reads on the event
        # finds the new value
        registered = {e.aor for e in events if e.kind == "reg"}
        for event in events:
            if event.kind == "unlock":
                commands.append(("DEL", f"{self.prefix}push:{event.aor}"))
            else:
                commands.append(("PUBLISH", self.channel, self._message(event)))
        for aor in dict.fromkeys(a for (a, _), _ in devices):
            if aor not in registered:
                commands.append(("PUBLISH", self.channel, self._message(_Event("dev", aor))))
        if apps:
            commands.append(("PUBLISH", self.channel, self._message(_Event("apps"))))
        if config:
            commands.append(("PUBLISH", self.channel, self._message(_Event("config"))))
        self._in_flight = n_writes
        try:
            replies = await self.client.pipeline(commands)
        except RedisUnavailable:
            self._requeue(devices, apps, config, delta)
            self._writeback[:0] = writeback
            self._events.extendleft(reversed(timed))
            raise
        finally:
            self._in_flight = 0
        self._stats["pipelines"] += 1
        self._stats["writes"] += n_writes
        created = 0
        for ((_, _), device), reply in zip(devices, replies, strict=False):
            if isinstance(reply, int):
                created += reply if device is not None else -reply
            elif isinstance(reply, RedisReplyError):
                log.error("redis: write refused: %s", reply)
        first = len(devices) + len(apps) + len(config)
        for (is_device, _), reply in zip(writeback, replies[first:], strict=False):
            if is_device and reply == 1:
                created += 1
        if created:
            self._count_delta += created
        if delta:
            self._remote_count += delta

    def _requeue(
        self,
        devices: list[tuple[tuple[str, str], Device | None]],
        apps: dict[str, App | None],
        config: dict[str, Any],
        delta: int,
    ) -> None:
        """A pipeline that may not have reached Redis goes back in the queue, unless a
        newer value of the same key was queued meanwhile (every write is idempotent)."""
        with self._lock:
            older = OrderedDict(devices)
            for key, value in self._pending_devices.items():
                older.pop(key, None)
                older[key] = value
            self._pending_devices = older
            while len(self._pending_devices) > self.max_queued_writes:
                self._pending_devices.popitem(last=False)
                self._stats["queued_writes_dropped"] += 1
            self._pending_apps = {**apps, **self._pending_apps}
            self._pending_config = {**config, **self._pending_config}
            self._count_delta += delta

    def _message(self, event: _Event) -> str:
        body: dict[str, Any] = {"n": self.node_id, "k": event.kind}
        if event.aor:
            body["a"] = event.aor
        if event.kind == "reg":
            body["c"] = event.contact
            body["t"] = event.at
        elif event.kind == "rej":
            body["d"] = event.data
        return json.dumps(body, separators=(",", ":"))

    # --- lifecycle ----------------------------------------------------------------------------
    def flush(self) -> None:
        """Nothing to do from a thread: `aflush()` is the trio-side equivalent."""

    async def aflush(self) -> bool:
        """Wait until every queued write reached Redis (bound it with a cancel scope);
        False at once when Redis is down."""
        while self.queued_writes or self._count_delta:
            if not self.client.connected:
                return False
            self._work.set()
            await trio.sleep(0.005)
        return True

    def close(self) -> None:
        pass

    @property
    def queued_writes(self) -> int:
        """Writes not yet acknowledged by Redis (queued or in flight)."""
        return (
            len(self._pending_devices)
            + len(self._pending_apps)
            + len(self._pending_config)
            + len(self._writeback)
            + len(self._remote_ops)
            + self._in_flight
        )

    def statistics(self) -> dict[str, int]:
        stats = super().statistics()
        stats["devices"] = self.device_count()
        stats["cached_devices"] = self._count
        stats["cached_aors"] = len(self._devices)
        stats["pending_writes"] = self.queued_writes
        stats["queued_events"] = len(self._events)
        return stats


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
