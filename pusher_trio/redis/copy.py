"""`pusher-trio store copy --from A --to B` (DESIGN §10): everything from one backend to the other.

A and B are `sqlite:PATH` or a Redis URL (`redis://`, `rediss://`, `unix://`); the
Redis side takes `key_prefix`, `redis_password_file` and `secret_key_file` from the
`[store]` section. Device records, apps (re-encrypted for the target when a secret
key is set) and the dynamic configuration are copied; keys present in the target
and not in the source are left alone. Redis is written in pipelines of COPY_BATCH
commands, read with SCAN, so a million records never sit in one reply. Nodes that
run on the target Redis are told (pub/sub) to reload apps and config.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import attrs
import trio

from ..model import App, Device
from .client import RedisClient
from .protocol import Command, RedisReplyError, RedisUnavailable, parse_redis_url
from .protocol import read_password_file as _read_password
from .store import _decode_device, _encode_device, decode_app, encode_app, load_secret_key

COPY_BATCH = 1000


@attrs.define
class Counts:
    devices: int = 0
    apps: int = 0
    config_keys: int = 0
    skipped: list[str] = attrs.field(factory=list)  # what could not be read, and why


class CopyError(Exception):
    """A bad location or an unreachable backend: one line for the CLI."""


def parse_location(text: str) -> tuple[str, str]:
    """("sqlite", path) or ("redis", url); raises CopyError."""
    if text.startswith("sqlite:"):
        path = text[len("sqlite:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise CopyError("sqlite: needs a path (sqlite:/var/lib/pusher-trio/pusher.db)")
        return "sqlite", path
    if text.split(":", 1)[0] in ("redis", "rediss", "unix"):
        try:
            parse_redis_url(text)
        except ValueError as exc:
            raise CopyError(str(exc)) from None
        return "redis", text
    raise CopyError(f"unknown location {text!r}: use sqlite:PATH or redis://host:port/db")


# --- Redis side -----------------------------------------------------------------------------


class _Redis:
    def __init__(self, url: str, store_config: Any) -> None:
        self.address = parse_redis_url(url)
        password = (
            _read_password(store_config.redis_password_file)
            if store_config.redis_password_file
            else None
        )
        self.fernet = (
            load_secret_key(store_config.secret_key_file) if store_config.secret_key_file else None
        )
        self.prefix = store_config.key_prefix
        self.client = RedisClient(self.address, password, name="store-copy")

    async def devices(self, counts: Counts) -> AsyncIterator[list[Device]]:
        prefix = f"{self.prefix}d:"
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
        cursor: Any = b"0"
        while True:
            cursor, keys = await self.client.execute(
                "SCAN", cursor, "MATCH", pattern, "COUNT", COPY_BATCH
            )
            if keys:
                replies = await self.client.pipeline([("HGETALL", k) for k in keys])
                batch: list[Device] = []
                for key, reply in zip(keys, replies, strict=True):
                    if isinstance(reply, RedisReplyError):
                        counts.skipped.append(f"{key.decode()}: {reply}")
                        continue
                    aor = key.decode()[len(prefix) :]
                    for i in range(0, len(reply), 2):
                        device_id = reply[i].decode()
                        try:
                            batch.append(_decode_device(aor, device_id, reply[i + 1]))
                        except (ValueError, TypeError) as exc:
                            counts.skipped.append(f"device {device_id} of {aor}: {exc}")
                yield batch
            if cursor in (b"0", 0):
                return

    async def apps_and_config(self, counts: Counts) -> tuple[dict[str, App], dict[str, Any]]:
        raw_apps, raw_config = await self.client.pipeline(
            [("HGETALL", f"{self.prefix}apps"), ("HGETALL", f"{self.prefix}config")]
        )
        apps: dict[str, App] = {}
        for i in range(0, len(raw_apps), 2):
            app_id = raw_apps[i].decode()
            try:
                apps[app_id] = decode_app(raw_apps[i + 1], self.fernet)
            except ValueError as exc:
                counts.skipped.append(f"app {app_id}: {exc}")
        config = {
            raw_config[i].decode(): json.loads(raw_config[i + 1])
            for i in range(0, len(raw_config), 2)
        }
        return apps, config

    async def write_devices(self, devices: Iterable[Device]) -> int:
        commands: list[Command] = [
            ("HSET", f"{self.prefix}d:{d.aor}", d.device_id, _encode_device(d)) for d in devices
        ]
        if not commands:
            return 0
        replies = await self.client.pipeline(commands)
        created = sum(r for r in replies if isinstance(r, int))
        errors = [r for r in replies if isinstance(r, RedisReplyError)]
        if errors:
            raise CopyError(f"Redis refused a write: {errors[0]}")
        if created:
            await self.client.execute("INCRBY", f"{self.prefix}devices", created)
        return len(commands)

    async def write_small(self, apps: dict[str, App], config: dict[str, Any]) -> None:
        commands: list[Command] = [
            ("HSET", f"{self.prefix}apps", app_id, encode_app(app, self.fernet))
            for app_id, app in apps.items()
        ]
        commands += [
            ("HSET", f"{self.prefix}config", key, json.dumps(value))
            for key, value in config.items()
        ]
        channel = f"{self.prefix}events"
        for kind in ("apps", "config"):  # running nodes reload
            commands.append(("PUBLISH", channel, json.dumps({"n": "store-copy", "k": kind})))
        for reply in await self.client.pipeline(commands):
            if isinstance(reply, RedisReplyError):
                raise CopyError(f"Redis refused a write: {reply}")


# --- the copy ---------------------------------------------------------------------------------


async def copy_store(source: str, target: str, store_config: Any) -> Counts:
    """Copy everything from `source` to `target` (locations as `parse_location` reads them).

    Raises CopyError (one line, no secret) for anything the operator must fix."""
    try:
        return await _copy(source, target, store_config)
    except BaseExceptionGroup as group:  # the nursery wraps what its body raised
        for exc in _leaves(group):
            if isinstance(exc, CopyError | ValueError):
                raise CopyError(str(exc)) from None
        raise
    except ValueError as exc:  # a bad password or key file
        raise CopyError(str(exc)) from None


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


async def _copy(source: str, target: str, store_config: Any) -> Counts:
    src_kind, src = parse_location(source)
    dst_kind, dst = parse_location(target)
    if (src_kind, src) == (dst_kind, dst):
        raise CopyError("--from and --to are the same")
    counts = Counts()
    async with trio.open_nursery() as nursery:
        redis_src = _Redis(src, store_config) if src_kind == "redis" else None
        redis_dst = _Redis(dst, store_config) if dst_kind == "redis" else None
        for side in (redis_src, redis_dst):
            if side is not None:
                await nursery.start(side.client.run)
                with trio.move_on_after(5):
                    await side.client.wait_connected()
                if not side.client.connected:
                    raise CopyError(
                        f"cannot reach Redis at {side.address}: {side.client.last_error}"
                    )
        sqlite_dst = None
        if dst_kind == "sqlite":
            from ..store import SqliteStore

            sqlite_dst = await trio.to_thread.run_sync(SqliteStore, dst)
        try:
            # devices, batch by batch
            if redis_src is not None:
                async for batch in redis_src.devices(counts):
                    counts.devices += await _write_devices(batch, redis_dst, sqlite_dst)
                apps, config = await redis_src.apps_and_config(counts)
            else:
                from ..store import SqliteStore

                store = await trio.to_thread.run_sync(SqliteStore, src)
                try:
                    everything = store.devices()
                    for i in range(0, len(everything), COPY_BATCH):
                        batch = everything[i : i + COPY_BATCH]
                        counts.devices += await _write_devices(batch, redis_dst, sqlite_dst)
                    apps, config = dict(store.apps()), dict(store.get_config())
                finally:
                    store.close()
            if redis_dst is not None:
                await redis_dst.write_small(apps, config)
            else:
                assert sqlite_dst is not None
                for app in apps.values():
                    sqlite_dst.put_app(app)
                for key, value in config.items():
                    sqlite_dst.set_config(key, value)
            counts.apps, counts.config_keys = len(apps), len(config)
        except RedisUnavailable as exc:
            raise CopyError(f"Redis went away during the copy: {exc}") from None
        finally:
            if sqlite_dst is not None:
                await trio.to_thread.run_sync(sqlite_dst.close)
        nursery.cancel_scope.cancel()
    return counts


async def _write_devices(batch: list[Device], redis_dst: _Redis | None, sqlite_dst: Any) -> int:
    if redis_dst is not None:
        return await redis_dst.write_devices(batch)
    # every record as it is: put_devices' refresh rule must not skip any
    sqlite_dst.put_devices(batch)
    return len(batch)
