"""Unbinds, invalidations and removals made on a node that has not cached the AOR reach
Redis all the same (DESIGN §10), against a real redis-server."""

from __future__ import annotations

from pathlib import Path

import trio

from pusher_trio.model import Device
from pusher_trio.redis.store import _decode_device
from pusher_trio.service import Service
from pusher_trio.waiters import Waiters
from tests.integration.test_redis_cluster import TOKEN, device, eventually, nodes
from tests.redis_harness import RedisServer, redis_server  # noqa: F401
from tests.unit.control.fakes import FakePusher

AOR = "alice@example.com"


def stored(server: RedisServer, aor: str = AOR) -> dict[str, Device]:
    """The records of `aor` as Redis holds them (read with redis-cli, not through a node)."""
    reply = server.command("HGETALL", f"p:d:{aor}")
    return {
        reply[i].decode(): _decode_device(aor, reply[i].decode(), reply[i + 1])
        for i in range(0, len(reply), 2)
    }


async def test_unbind_on_a_node_without_the_aor_reaches_redis(redis_server: RedisServer) -> None:  # noqa: F811
    async with nodes(redis_server.url) as (a, b):
        a.store.put_devices([device(), device(device_id="urn:uuid:2", token=TOKEN + "2")])
        assert await a.store.aflush()
        assert b.store.unbind(AOR, ["urn:uuid:1"]) == 0  # nothing of alice's is on b
        assert b.store.queued_writes >= 1
        assert await b.store.aflush()
        records = stored(redis_server)
        assert not records["urn:uuid:1"].bound
        assert records["urn:uuid:2"].bound  # only the device that unregistered
        # and a, told by b's event, reads the change
        await eventually(lambda: AOR not in a.store._complete, "a forgets alice")
        by_id = {d.device_id: d for d in await a.store.fetch_devices(AOR)}
        assert not by_id["urn:uuid:1"].bound and by_id["urn:uuid:2"].bound
        b.store.unbind(AOR)  # every device (expires=0 with Contact: *)
        assert await b.store.aflush()
        assert not any(d.bound for d in stored(redis_server).values())


async def test_register_right_after_an_unbind_stays_bound(redis_server: RedisServer) -> None:  # noqa: F811
    async with nodes(redis_server.url) as (a, b):
        a.store.put_devices([device(last_registered=1.0)])
        assert await a.store.aflush()
        b.store.unbind(AOR)
        b.store.put_devices([device(last_registered=2.0)])  # before b's writer ran
        assert await b.store.aflush()
        (record,) = stored(redis_server).values()
        assert record.bound and record.last_registered == 2.0


async def test_invalidation_on_a_node_without_the_aor_reaches_redis(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    async with nodes(redis_server.url) as (a, b):
        a.store.put_devices([device()])
        assert await a.store.aflush()
        assert not b.store.invalidate(AOR, "urn:uuid:1", "Unregistered", 5.0)
        assert not b.store.invalidate(AOR, "urn:uuid:9", "Unregistered", 5.0)  # no such one
        assert await b.store.aflush()
        (record,) = stored(redis_server).values()
        assert (record.state, record.reason, record.invalidated_at) == (
            "invalid",
            "Unregistered",
            5.0,
        )
        await b.store._refresh_count()
        assert b.store.device_count() == 1  # changed, not created


async def test_removal_on_a_node_without_the_aor_reaches_redis(redis_server: RedisServer) -> None:  # noqa: F811
    async with nodes(redis_server.url) as (a, b):
        a.store.put_devices([device(), device(device_id="urn:uuid:2", token=TOKEN + "2")])
        a.store.put_devices([device("bob@example.com")])
        assert await a.store.aflush()
        b.store.remove_devices(AOR, TOKEN + "2")
        assert await b.store.aflush()
        assert list(stored(redis_server)) == ["urn:uuid:1"]
        # the control socket's devices.remove counts the cluster's records
        service = Service(b.store, FakePusher(), Waiters(), {})
        b.store.forget("bob@example.com")
        assert await service.call("devices.remove", {"aor": "bob@example.com"}) == {"removed": 1}
        assert await b.store.aflush()
        assert stored(redis_server, "bob@example.com") == {}
        await b.store._refresh_count()
        assert b.store.device_count() == 1


async def test_unbind_while_redis_is_down_is_applied_on_reconnect(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, appendonly=True).start()  # keeps its data over the restart
    try:
        async with nodes(server.url) as (a, b):
            a.store.put_devices([device()])
            assert await a.store.aflush()
            server.stop()
            await eventually(lambda: b.client.state == "down", "b sees Redis down")
            assert b.store.unbind(AOR) == 0
            assert b.store.statistics()["pending_writes"] == 1  # counted in status
            await trio.to_thread.run_sync(server.start)
            await eventually(lambda: b.store.queued_writes == 0 and b.store.synced, "applied")
            assert await b.store.aflush()
            (record,) = stored(server).values()
            assert not record.bound
    finally:
        server.stop()
