"""A call that shares a push sent by another node hears at once when every provider
refused it (DESIGN §10), against a real redis-server."""

from __future__ import annotations

import json
from typing import Any

import trio

from pusher_trio.control.jsonrpc import ControlError, PushRejected
from pusher_trio.model import TokenInvalid
from pusher_trio.service import Service
from pusher_trio.waiters import Waiters
from tests.integration.test_redis_cluster import eventually, nodes
from tests.redis_harness import RedisServer, redis_server  # noqa: F401
from tests.unit.control.fakes import APPLE_TOKEN, FakePusher, apple_app, apple_device

AOR = "alice@example.com"


async def test_a_call_sharing_a_refused_push_is_told_at_once(redis_server: RedisServer) -> None:  # noqa: F811
    async with nodes(redis_server.url) as (a, b):
        a.store.put_app(apple_app())
        a.store.put_devices([apple_device(AOR)])
        assert await a.store.aflush()
        await eventually(lambda: "com.example.phone" in b.store.apps(), "app on b")
        # A's provider refuses, after a while: B's call arrives while A's push is in flight
        refusing = FakePusher({APPLE_TOKEN: TokenInvalid("BadDeviceToken")}, delay=0.5)
        pushers = [refusing, FakePusher()]
        services = []
        errors: dict[str, ControlError] = {}
        async with trio.open_nursery() as nursery:
            for cluster, pusher in zip((a, b), pushers, strict=True):
                service = Service(cluster.store, pusher, Waiters(), {})
                cluster.attach(service)
                await nursery.start(service.run)
                services.append(service)

            async def call(name: str, service: Service) -> None:
                try:
                    await service.call("push", {"aor": AOR, "call_id": f"c-{name}", "timeout": 60})
                except ControlError as exc:
                    errors[name] = exc

            nursery.start_soon(call, "a", services[0])
            await eventually(lambda: len(refusing.sent) == 1, "a pushed")
            nursery.start_soon(call, "b", services[1])
            await eventually(lambda: services[1].waiters.waiting == 1, "b waits")
            # both calls end on the refusal, not at their 60 s deadline (a hang guard)
            await eventually(lambda: len(errors) == 2, "both answered", limit=10)
            nursery.cancel_scope.cancel()
        assert len(pushers[1].sent) == 0  # b shared a's push
        assert isinstance(errors["a"], PushRejected) and isinstance(errors["b"], PushRejected)
        data: Any = errors["b"].data
        assert data["pushed_by_peer"] is True
        assert data["reasons"] == ["BadDeviceToken"]
        assert [p["outcome"] for p in data["pushes"]] == ["token_invalid"]
        assert APPLE_TOKEN not in str(data)
        # the lock went with the refusal: the next call pushes again at once
        assert redis_server.command("EXISTS", f"p:push:{AOR}") == 0


async def test_a_refusal_that_overtakes_the_claims_reply_still_answers(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    """The refusal comes in on the events connection while the claim's reply is still on
    its way (here: Redis paused mid-claim): it is handed over once the claim is lost."""
    async with nodes(redis_server.url) as (a, b):
        seen: list[tuple[str, Any]] = []
        b.store.on_remote_rejected = lambda aor, report: seen.append((aor, report))
        assert await a.store.claim_push(AOR, 10.0)
        old = json.dumps({"n": a.store.node_id, "k": "rej", "a": AOR, "d": {"reasons": ["old"]}})
        b.store.on_message(b"p:events", old.encode())  # came before b asked: not an answer
        seen.clear()
        assert not await b.store.claim_push(AOR, 10.0)
        await trio.sleep(0.05)
        assert seen == []
        result: list[bool] = []

        async def claim() -> None:
            result.append(await b.store.claim_push(AOR, 10.0))

        redis_server.pause()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(claim)
                await trio.sleep(0.1)  # the SET is on its way
                new = old.replace("old", "BadDeviceToken")
                b.store.on_message(b"p:events", new.encode())  # as the subscriber delivers it
                seen.clear()  # the direct delivery (no shared push yet on b) is not the point
                redis_server.resume()
        finally:
            redis_server.resume()
        assert result == [False]
        await trio.lowlevel.checkpoint()  # the hand-over runs once the claim returned
        assert seen == [(AOR, {"reasons": ["BadDeviceToken"]})]
