"""DESIGN §9: idle provider connections close with GOAWAY and reopen on the next push."""

from __future__ import annotations

import trio

from pusher_trio.model import Delivered, PushMessage
from pusher_trio.providers import Providers
from pusher_trio.standins.fake_apns import FakeApns
from tests.integration.conftest_providers import apple_device, cert_app, expires

MESSAGE = PushMessage(call_id="c-idle", caller_number="200")


async def test_idle_connection_closes_with_goaway_and_reopens(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(15):
        await nursery.start(server.serve)
        async with Providers(ca_file=server.ca_file, idle_timeout=0.3) as providers:
            app = cert_app(server)
            first = await providers.send(app, apple_device(), MESSAGE, expires_at=expires())
            assert providers.statistics()["connections"] == 1
            await server.wait_open_connections(0)  # closed by us, not by the stand-in
            assert server.client_goaways == 1
            stats = providers.statistics()
            assert stats["connections"] == 0
            assert list(stats["connections_per_pool"].values()) == [0]
            assert stats["pool_details"][0]["idle_closes"] == 1
            second = await providers.send(app, apple_device(), MESSAGE, expires_at=expires())
            assert providers.statistics()["connections"] == 1
    assert isinstance(first, Delivered) and isinstance(second, Delivered)
    assert server.connections == 2
    assert [r.connection for r in server.delivered] == [1, 2]


async def test_connection_with_an_open_stream_is_not_idle(nursery: trio.Nursery) -> None:
    # The answer takes longer than idle_timeout: the connection is busy, not idle.
    server = FakeApns(latency=1.0)
    with trio.fail_after(15):
        await nursery.start(server.serve)
        async with Providers(ca_file=server.ca_file, idle_timeout=0.2) as providers:
            outcome = await providers.send(
                cert_app(server), apple_device(), MESSAGE, expires_at=expires()
            )
            goaways_when_answered = server.client_goaways
            await server.wait_open_connections(0)
    assert isinstance(outcome, Delivered)
    assert goaways_when_answered == 0
    assert server.client_goaways == 1
    assert server.connections == 1


async def test_pushes_closer_than_idle_timeout_share_one_connection(
    nursery: trio.Nursery,
) -> None:
    server = FakeApns()
    with trio.fail_after(15):
        await nursery.start(server.serve)
        async with Providers(ca_file=server.ca_file, idle_timeout=3.0) as providers:
            app = cert_app(server)
            outcomes = []
            for _ in range(4):
                outcomes.append(
                    await providers.send(app, apple_device(), MESSAGE, expires_at=expires())
                )
                await trio.sleep(0.2)
            idle_closes = providers.statistics()["pool_details"][0]["idle_closes"]
    assert all(isinstance(o, Delivered) for o in outcomes)
    assert server.connections == 1
    assert idle_closes == 0
