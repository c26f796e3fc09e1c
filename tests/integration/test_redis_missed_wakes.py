"""A registration published while a node's events connection is down still wakes that
node's calls once it is back (DESIGN §10), against a real redis-server."""

from __future__ import annotations

import time
from typing import Any

import attrs
import trio

from pusher_trio.service import Service
from pusher_trio.waiters import Waiters
from tests.integration.test_redis_cluster import eventually, nodes
from tests.redis_harness import RedisServer, redis_server  # noqa: F401
from tests.unit.control.fakes import FakePusher, apple_app, apple_device

AOR = "alice@example.com"


async def test_a_wake_missed_while_unsubscribed_is_replayed(redis_server: RedisServer) -> None:  # noqa: F811
    async with nodes(redis_server.url, refresh_interval=0.0) as (a, b):
        a.store.put_app(apple_app())
        asleep = attrs.evolve(apple_device(AOR), last_registered=time.time() - 600)
        a.store.put_devices([asleep])
        assert await a.store.aflush()
        await eventually(lambda: "com.example.phone" in b.store.apps(), "app on b")
        result: dict[str, Any] = {}
        async with trio.open_nursery() as nursery:
            service = Service(b.store, FakePusher(), Waiters(), {})
            b.attach(service)
            await nursery.start(service.run)

            async def call() -> None:
                result.update(
                    await service.call("push", {"aor": AOR, "call_id": "c-1", "timeout": 60})
                )

            nursery.start_soon(call)
            await eventually(lambda: service.waiters.waiting == 1, "b waits")
            # the phone registers on A while B is not subscribed: A's record says so, the
            # event is lost (A writes the record and publishes nothing here)
            a.store.put_devices([attrs.evolve(asleep, last_registered=time.time())])
            assert await a.store.aflush()
            generation = b.subscriber.generation
            assert redis_server.command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
            await eventually(lambda: b.subscriber.generation > generation, "b resubscribed")
            await eventually(lambda: bool(result), "the call on b woken", limit=10)
            nursery.cancel_scope.cancel()
        assert result["status"] == "registered"
        assert b.statistics()["wakes_replayed"] == 1


async def test_an_older_registration_wakes_nobody(redis_server: RedisServer) -> None:  # noqa: F811
    async with nodes(redis_server.url) as (a, b):
        a.store.put_app(apple_app())
        asleep = attrs.evolve(apple_device(AOR), last_registered=time.time() - 600)
        a.store.put_devices([asleep])
        assert await a.store.aflush()
        await eventually(lambda: "com.example.phone" in b.store.apps(), "app on b")
        async with trio.open_nursery() as nursery:
            service = Service(b.store, FakePusher(), Waiters(), {})
            b.attach(service)
            await nursery.start(service.run)
            nursery.start_soon(service.call, "push", {"aor": AOR, "call_id": "c-1", "timeout": 60})
            await eventually(lambda: service.waiters.waiting == 1, "b waits")
            generation = b.subscriber.generation
            redis_server.command("CLIENT", "KILL", "TYPE", "pubsub")
            await eventually(lambda: b.subscriber.generation > generation, "b resubscribed")
            await eventually(lambda: b.statistics()["wake_replays"] == 1, "b re-read")
            assert service.waiters.waiting == 1  # still asleep: the call keeps waiting
            assert b.statistics()["wakes_replayed"] == 0
            nursery.cancel_scope.cancel()
