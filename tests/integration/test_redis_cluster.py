"""Several nodes on one real redis-server (DESIGN §10): shared records, events, the push lock,
Redis down / restarted / emptied, the bounded cache, secrets at rest."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from cryptography.fernet import Fernet

from pusher_trio.config import StoreConfig
from pusher_trio.control.jsonrpc import NoPushTarget
from pusher_trio.model import App, AppleCertAuth, Device
from pusher_trio.redis.cluster import Cluster
from pusher_trio.service import Service
from pusher_trio.waiters import Waiters
from tests.redis_harness import RedisServer, redis_server  # noqa: F401
from tests.unit.control.fakes import FakePusher, apple_app, apple_device, registered

TOKEN = "a1b2c3" + "0" * 54 + "dead"
SECRET_PEM = "-----BEGIN PRIVATE KEY-----\nTOPSECRETKEYMATERIAL\n-----END PRIVATE KEY-----"


def device(aor: str = "alice@example.com", device_id: str = "urn:uuid:1", **kw: Any) -> Device:
    fields: dict[str, Any] = {"type": "apple", "app": "com.example.app", "token": TOKEN}
    fields.update(kw)
    return Device(aor=aor, device_id=device_id, **fields)


def key_file(folder: Path, key: bytes) -> str:
    path = folder / f"key-{key[:6].decode()}"
    path.write_bytes(key + b"\n")
    os.chmod(path, 0o600)
    return str(path)


@asynccontextmanager
async def nodes(
    url: str, count: int = 2, *, secret_key_file: str = "", **options: Any
) -> AsyncIterator[list[Cluster]]:
    config = StoreConfig(
        backend="redis", redis_url=url, key_prefix="p:", secret_key_file=secret_key_file
    )
    clusters = [Cluster.from_config(config, **options) for _ in range(count)]
    async with trio.open_nursery() as nursery:
        for cluster in clusters:
            await nursery.start(cluster.run)
        yield clusters
        nursery.cancel_scope.cancel()


async def eventually(check: Any, what: str, limit: float = 5.0) -> float:
    """Wait until check() is true; the seconds it took (a hang guard, not a timing test)."""
    started = time.monotonic()
    with trio.move_on_after(limit):
        while not check():  # noqa: ASYNC110
            await trio.sleep(0.002)
        return time.monotonic() - started
    raise AssertionError(f"not within {limit} s: {what}")


async def test_learned_on_a_found_on_b(redis_server: RedisServer) -> None:  # noqa: F811
    async with nodes(redis_server.url) as (a, b):
        assert await b.store.fetch_devices("alice@example.com") == []
        a.store.put_devices([device()])
        assert await a.store.aflush()
        # b cached "no devices" for alice; a's write event drops that
        await eventually(lambda: "alice@example.com" not in b.store._complete, "b forgets")
        assert await b.store.fetch_devices("alice@example.com") == [device()]
        assert b.store.statistics()["cache_misses"] == 2


async def test_app_secrets_are_encrypted_at_rest(redis_server: RedisServer, tmp_path: Path) -> None:  # noqa: F811
    key = Fernet.generate_key()
    app = App("com.example.app", "apple", AppleCertAuth(SECRET_PEM))
    async with nodes(redis_server.url, secret_key_file=key_file(tmp_path, key)) as (a, b):
        a.store.put_app(app)
        assert await a.store.aflush()
        took = await eventually(lambda: "com.example.app" in b.store.apps(), "b has the app")
        logging.getLogger(__name__).info("app change reached node b in %.1f ms", took * 1000)
        assert b.store.apps()["com.example.app"] == app
    raw = redis_server.command("HGET", "p:apps", "com.example.app")
    assert raw.startswith(b"f1:")
    assert b"TOPSECRET" not in raw and b"PRIVATE KEY" not in raw
    assert Fernet(key).decrypt(raw[3:]).find(b"TOPSECRET") > 0


async def test_encrypted_app_without_the_key_is_ignored_and_said(
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = Fernet.generate_key()
    async with nodes(redis_server.url, 1, secret_key_file=key_file(tmp_path, key)) as (a,):
        a.store.put_app(App("com.example.app", "apple", AppleCertAuth(SECRET_PEM)))
        assert await a.store.aflush()
    other = key_file(tmp_path, Fernet.generate_key())
    for secret_key_file in ("", other):
        caplog.clear()
        async with nodes(redis_server.url, 1, secret_key_file=secret_key_file) as (c,):
            assert c.store.apps() == {}
        assert "com.example.app" in caplog.text
        assert "TOPSECRET" not in caplog.text


async def test_config_and_app_changes_reach_every_node(redis_server: RedisServer) -> None:  # noqa: F811
    async with nodes(redis_server.url, 3) as (a, b, c):
        a.store.set_config("User-Agents.MyApp.regex", "^MyApp")
        a.store.put_app(apple_app())
        for node in (b, c):
            await eventually(
                lambda n=node: (
                    n.store.get_config() == {"User-Agents": {"MyApp": {"regex": "^MyApp"}}}
                    and "com.example.phone" in n.store.apps()
                ),
                "config and app on every node",
            )
        b.store.delete_config("User-Agents")
        b.store.remove_app("com.example.phone")
        await eventually(lambda: a.store.get_config() == {} and c.store.apps() == {}, "removals")


async def test_invalidation_on_b_is_seen_on_a(redis_server: RedisServer) -> None:  # noqa: F811
    async with nodes(redis_server.url) as (a, b):
        a.store.put_devices([device()])
        assert await a.store.aflush()
        assert (await a.store.fetch_devices("alice@example.com"))[0].state == "valid"
        await b.store.fetch_devices("alice@example.com")
        assert b.store.invalidate("alice@example.com", "urn:uuid:1", "Unregistered", 5.0)
        assert await b.store.aflush()

        async def state_on_a() -> str:
            return (await a.store.fetch_devices("alice@example.com"))[0].state

        with trio.fail_after(5):
            while await state_on_a() != "invalid":  # noqa: ASYNC110 (a read each time)
                await trio.sleep(0.005)


async def test_cache_is_bounded_and_reads_through(redis_server: RedisServer) -> None:  # noqa: F811
    async with nodes(redis_server.url, cache_aors=20) as (a, b):
        a.store.put_devices([device(f"u{i}@example.com", token=f"{TOKEN}{i}") for i in range(300)])
        assert a.store.statistics()["cached_aors"] <= 20
        assert await a.store.aflush()
        for i in range(300):
            (found,) = await b.store.fetch_devices(f"u{i}@example.com")
            assert found.token == f"{TOKEN}{i}"
        stats = b.store.statistics()
        assert stats["cached_aors"] <= 20
        assert stats["cache_evictions"] >= 280
        await b.store._refresh_count()
        assert b.store.device_count() == 300
        listed = await b.store.fetch_devices(None)
        assert len(listed) == 300


async def test_redis_down_writes_are_queued_counted_and_replayed(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    try:
        async with nodes(server.url) as (a, b):
            a.store.put_devices([device("before@example.com")])
            assert await a.store.aflush()
            server.kill()
            await eventually(lambda: a.client.state == "down", "a sees Redis down")
            a.store.put_devices([device(f"down{i}@example.com") for i in range(50)])
            await trio.sleep(0.1)
            assert a.store.statistics()["pending_writes"] == 50
            assert a.statistics()["state"] == "down"
            # pushes for records in memory still go out: the read falls back to memory
            assert await a.store.fetch_devices("down7@example.com") == [device("down7@example.com")]
            await trio.to_thread.run_sync(server.start)  # an empty Redis (no persistence)
            await eventually(lambda: a.store.queued_writes == 0 and a.store.synced, "replayed")
            await eventually(lambda: a.client.generation == b.client.generation == 2, "b too")
            assert len(await b.store.fetch_devices("down3@example.com")) == 1
            # the emptied Redis got back what a held in memory, not only the queue
            assert len(await b.store.fetch_devices("before@example.com")) == 1
    finally:
        server.stop()


async def test_emptied_redis_gets_back_what_the_nodes_hold(redis_server: RedisServer) -> None:  # noqa: F811
    async with nodes(redis_server.url) as (a, _b):
        a.store.put_devices([device()])
        a.store.put_app(apple_app())
        assert await a.store.aflush()
        assert redis_server.command("FLUSHALL") == b"OK"
        await eventually(
            lambda: (
                redis_server.command("HLEN", "p:d:alice@example.com") == 1
                and redis_server.command("HLEN", "p:apps") == 1
            ),
            "written back",
        )


async def test_paused_redis_does_not_hang_reads_or_writes(redis_server: RedisServer) -> None:  # noqa: F811
    async with nodes(redis_server.url) as (a, _b):
        a.store.put_devices([device()])
        assert await a.store.aflush()
        a.client.command_timeout = 0.3
        redis_server.pause()
        try:
            with trio.fail_after(5):
                # a cold read waits at most the command timeout, then answers from memory
                a.store.forget("nobody@example.com")
                assert await a.store.fetch_devices("nobody@example.com") == []
                assert await a.store.fetch_devices("alice@example.com") == [device()]
                a.store.put_devices([device("paused@example.com")])
                assert a.store.queued_writes >= 0  # queued, not blocking
        finally:
            redis_server.resume()
        await eventually(lambda: a.store.queued_writes == 0 and a.client.connected, "replayed")
        assert redis_server.command("HLEN", "p:d:paused@example.com") == 1


async def test_push_lock_one_node_pushes(redis_server: RedisServer) -> None:  # noqa: F811
    async with nodes(redis_server.url) as (a, b):
        assert await a.store.claim_push("alice@example.com", 10.0)
        assert not await b.store.claim_push("alice@example.com", 10.0)
        assert await b.store.claim_push("bob@example.com", 10.0)  # per AOR
        # a registration seen anywhere ends the waits: the holder drops the lock
        b.store.publish_registered("alice@example.com", "sip:alice@10.0.0.1", 1.0)
        await eventually(
            lambda: redis_server.command("EXISTS", "p:push:alice@example.com") == 0, "unlocked"
        )
        assert await b.store.claim_push("alice@example.com", 0.2)
        await trio.sleep(0.3)  # the lock expires with the wait it was taken for
        assert await a.store.claim_push("alice@example.com", 10.0)


async def test_two_calls_on_two_nodes_share_one_push(redis_server: RedisServer) -> None:  # noqa: F811
    """DESIGN §10: a call on A and a call on B for one sleeping AOR: one push, two answers;
    the phone registers on A, and B's call hears of it."""
    aor = "alice@example.com"
    async with nodes(redis_server.url) as (a, b):
        a.store.put_app(apple_app())
        a.store.put_devices([apple_device(aor)])
        assert await a.store.aflush()
        await eventually(lambda: "com.example.phone" in b.store.apps(), "app on b")
        pushers = [FakePusher(), FakePusher()]
        services = []
        async with trio.open_nursery() as nursery:
            for cluster, pusher in zip((a, b), pushers, strict=True):
                service = Service(cluster.store, pusher, Waiters(), {})
                cluster.attach(service)
                await nursery.start(service.run)
                services.append(service)
            results: dict[str, Any] = {}

            async def call(name: str, service: Service) -> None:
                results[name] = await service.call(
                    "push", {"aor": aor, "call_id": f"call-{name}", "timeout": 10}
                )

            nursery.start_soon(call, "a", services[0])
            await eventually(lambda: len(pushers[0].sent) == 1, "a pushed")
            nursery.start_soon(call, "b", services[1])
            await eventually(lambda: services[1].waiters.waiting == 1, "b waits")
            await trio.sleep(0.05)
            # the phone wakes and registers on A: A's sniffer hook wakes A and tells B
            on_registered = a.wrap_registered(services[0].on_registered)
            on_registered(registered(aor, [apple_device(aor)], at=time.time()))
            with trio.fail_after(5):
                while len(results) < 2:  # noqa: ASYNC110
                    await trio.sleep(0.005)
            nursery.cancel_scope.cancel()
        assert [len(p.sent) for p in pushers] == [1, 0]
        assert results["a"]["status"] == results["b"]["status"] == "registered"
        assert results["b"]["pushes"][0]["outcome"] == "pushed_by_peer"
        assert TOKEN not in str(results)


async def test_push_on_b_for_a_device_learned_on_a(redis_server: RedisServer) -> None:  # noqa: F811
    aor = "bob@example.com"
    async with nodes(redis_server.url) as (a, b):
        service_b = Service(b.store, FakePusher(), Waiters(), {})
        with pytest.raises(NoPushTarget):
            await service_b.call("push", {"aor": aor, "wait": False})
        a.store.put_app(apple_app())
        a.store.put_devices([attrs.evolve(apple_device(aor))])
        assert await a.store.aflush()
        await eventually(lambda: aor not in b.store._complete, "b forgets bob")
        await eventually(lambda: "com.example.phone" in b.store.apps(), "app on b")
        result = await service_b.call("push", {"aor": aor, "wait": False})
        assert result["status"] == "pushed"
        listed = await service_b.call("devices.list", {})
        assert [d["aor"] for d in listed["devices"]] == [aor]
