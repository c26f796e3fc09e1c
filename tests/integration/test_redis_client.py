"""The trio Redis client against a real redis-server (tests/redis_harness.py)."""

from __future__ import annotations

import pytest
import trio

from pusher_trio.redis import (
    RedisClient,
    RedisReplyError,
    RedisUnavailable,
    parse_redis_url,
)
from tests.redis_harness import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.usefixtures("redis_server")


async def test_commands_and_pipelining(redis_server: RedisServer) -> None:  # noqa: F811
    client = RedisClient(parse_redis_url(redis_server.url))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            assert client.state == "up"
            assert await client.execute("SET", "k", "v") == b"OK"
            assert await client.execute("GET", "k") == b"v"
            replies = await client.pipeline([("INCR", "n"), ("LPUSH", "k", "x"), ("INCR", "n")])
            assert replies[0] == 1 and replies[2] == 2
            assert isinstance(replies[1], RedisReplyError)
            assert "WRONGTYPE" in str(replies[1])
            with pytest.raises(RedisReplyError):
                await client.execute("LPUSH", "k", "x")

            # many callers at once share the one connection; each gets its own reply
            results: dict[int, bytes] = {}

            async def one(i: int) -> None:
                await client.execute("SET", f"key{i}", str(i))
                results[i] = await client.execute("GET", f"key{i}")

            async with trio.open_nursery() as inner:
                for i in range(200):
                    inner.start_soon(one, i)
            assert results == {i: str(i).encode() for i in range(200)}
            assert client.statistics()["connects"] == 1
            nursery.cancel_scope.cancel()
    assert client.state == "closed"


async def test_unix_socket_and_db(redis_server: RedisServer) -> None:  # noqa: F811
    client = RedisClient(parse_redis_url(f"unix://{redis_server.unix_socket}?db=3"))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            await client.execute("SET", "in3", "yes")
            nursery.cancel_scope.cancel()
    assert redis_server.command("SELECT", "3") == b"OK"
    assert redis_server.command("EXISTS", "in3") == 0  # a new connection is on db 0
    client0 = RedisClient(parse_redis_url(redis_server.url))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(client0.run)
            assert await client0.execute("EXISTS", "in3") == 0
            nursery.cancel_scope.cancel()


async def test_acl_password_from_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "redis"
    folder.mkdir()
    acl = folder / "users.acl"
    acl.write_text("user pusher on >pw-ok ~* &* +@all\nuser default off\n")
    server = RedisServer(folder, extra=["--aclfile", str(acl)]).start()
    try:
        address = parse_redis_url(f"redis://pusher@127.0.0.1:{server.port}/0")
        good = RedisClient(address, "pw-ok")
        bad = RedisClient(address, "pw-wrong")
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(good.run)
                await nursery.start(bad.run)
                assert good.state == "up"
                assert await good.execute("PING") == b"PONG"
                assert bad.state == "down"
                assert "login refused" in (bad.last_error or "")
                assert "pw-wrong" not in (bad.last_error or "")
                with pytest.raises(RedisUnavailable):
                    await bad.execute("PING")
                nursery.cancel_scope.cancel()
    finally:
        server.stop()


async def test_down_at_start_then_up_then_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder)
    from tests.redis_harness import free_port

    server.port = free_port()
    client = RedisClient(parse_redis_url(f"redis://127.0.0.1:{server.port}/0"))
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(client.run)  # returns although nothing listens
                assert client.state == "down"
                with pytest.raises(RedisUnavailable):
                    await client.execute("PING")  # at once, no wait for a connection
                await trio.to_thread.run_sync(server.start)
                await client.wait_connected()
                assert await client.execute("PING") == b"PONG"
                generation = client.generation
                await trio.to_thread.run_sync(server.kill)
                with pytest.raises(RedisUnavailable):
                    # the dead connection is noticed by the read or by this command
                    for _ in range(100):
                        await client.execute("PING")
                        await trio.sleep(0.01)
                await trio.to_thread.run_sync(server.start)
                await client.wait_connected()
                assert client.generation == generation + 1
                assert await client.execute("PING") == b"PONG"
                nursery.cancel_scope.cancel()
    finally:
        server.stop()


async def test_paused_redis_fails_commands_within_the_timeout(redis_server: RedisServer) -> None:  # noqa: F811
    client = RedisClient(
        parse_redis_url(redis_server.url), command_timeout=0.5, connect_timeout=0.5
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            redis_server.pause()
            try:
                started = trio.current_time()
                with pytest.raises(RedisUnavailable, match="no reply"):
                    await client.execute("PING")
                assert trio.current_time() - started < 5
                # while paused, reconnects fail (the login gets no answer) without hanging
                with pytest.raises(RedisUnavailable):
                    await client.execute("PING")
            finally:
                redis_server.resume()
            await client.wait_connected()
            assert await client.execute("PING") == b"PONG"
            nursery.cancel_scope.cancel()


async def test_caller_cancelled_mid_command_leaves_the_connection_in_step(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    client = RedisClient(parse_redis_url(redis_server.url))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            for i in range(50):
                with trio.move_on_after(0):
                    await client.execute("SET", f"c{i}", "x" * 10000)
            assert await client.execute("ECHO", "after") == b"after"
            assert client.statistics()["connects"] == 1
            nursery.cancel_scope.cancel()


async def test_subscriber_gets_messages_and_resubscribes(redis_server: RedisServer) -> None:  # noqa: F811
    got: list[tuple[bytes, bytes]] = []
    arrived = trio.Event()

    def on_message(channel: bytes, data: bytes) -> None:
        got.append((channel, data))
        arrived.set()

    address = parse_redis_url(redis_server.url)
    sub = RedisClient(address, subscribe=["ev"], on_message=on_message, health_interval=0.2)
    pub = RedisClient(address)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(sub.run)
            await nursery.start(pub.run)
            assert await pub.execute("PUBLISH", "ev", "one") == 1
            await arrived.wait()
            assert got == [(b"ev", b"one")]
            await trio.sleep(0.5)  # a few health PINGs in subscribe mode
            assert sub.state == "up"
            await trio.to_thread.run_sync(redis_server.restart)
            while sub.generation < 2 or pub.generation < 2:  # noqa: ASYNC110 (no event for it)
                await trio.sleep(0.02)
            arrived = trio.Event()
            assert await pub.execute("PUBLISH", "ev", "two") == 1
            await arrived.wait()
            assert got[-1] == (b"ev", b"two")
            nursery.cancel_scope.cancel()


async def test_statistics_shape(redis_server: RedisServer) -> None:  # noqa: F811
    client = RedisClient(parse_redis_url(redis_server.url))
    stats = client.statistics()
    assert stats["state"] == "connecting"
    assert stats["address"] == f"redis://127.0.0.1:{redis_server.port}/0"
