"""Transport behaviour: PING, dead peers, stream limits, flow control, lifecycle."""

from __future__ import annotations

import attrs
import trio

from pusher_trio.model import AuthFailed, Delivered, PushMessage
from pusher_trio.providers import Providers, h2wire
from pusher_trio.standins.fake_apns import FakeApns, Freeze, Garble
from tests.integration.conftest_providers import (
    apple_device,
    apple_token,
    cert_app,
    expires,
    token_app,
)

MESSAGE = PushMessage(call_id="c-1", caller_number="200")


async def test_idle_connection_is_pinged_and_kept(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        async with Providers(
            ca_file=server.ca_file, ping_interval=0.2, ping_timeout=0.5
        ) as providers:
            app = cert_app(server)
            assert isinstance(
                await providers.send(app, apple_device(), MESSAGE, expires_at=expires()), Delivered
            )
            await trio.sleep(1.0)
            assert isinstance(
                await providers.send(app, apple_device(), MESSAGE, expires_at=expires()), Delivered
            )
            pool = providers._pools[next(iter(providers._pools))]
            pings = pool.connections[0].pings
    assert pings >= 2
    assert server.connections == 1


async def test_silent_peer_is_detected_by_ping_and_the_push_retried(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        frozen = apple_token()
        server.script(Freeze(), token=frozen)
        async with Providers(
            ca_file=server.ca_file, ping_interval=0.2, ping_timeout=0.3, retry_base=0.05
        ) as providers:
            app = cert_app(server)
            outcome = await providers.send(app, apple_device(frozen), MESSAGE, expires_at=expires())
    assert isinstance(outcome, Delivered)
    assert [r.outcome for r in server.received] == ["freeze", "200"]
    assert server.connections == 2


async def test_a_server_breaking_http2_is_told_why_and_the_push_goes_on_anew(
    nursery: trio.Nursery,
) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        broken = apple_token()
        # A PUSH_PROMISE: our SETTINGS said no server push before anything else was sent.
        promise = h2wire.frame(h2wire.PUSH_PROMISE, h2wire.END_HEADERS, 1, b"\0\0\0\2\x88")
        server.script(Garble(promise), token=broken)
        async with Providers(ca_file=server.ca_file, retry_base=0.05) as providers:
            app = cert_app(server)
            outcome = await providers.send(app, apple_device(broken), MESSAGE, expires_at=expires())
            await server.wait_open_connections(1)
    assert isinstance(outcome, Delivered)
    assert [r.outcome for r in server.received] == ["garble", "200"]
    assert server.connections == 2
    assert server.client_goaway_codes[0] == h2wire.PROTOCOL_ERROR


async def test_more_connections_only_when_the_stream_limit_is_reached(
    nursery: trio.Nursery,
) -> None:
    # Answers take longer than a new connection's warm-up (transport.WARMUP): the pool
    # cannot wait for slots to free and opens connections as each one fills up.
    server = FakeApns(latency=1.5, max_concurrent_streams=5)
    with trio.fail_after(10):
        await nursery.start(server.serve)
        async with Providers(ca_file=server.ca_file) as providers:
            app = cert_app(server)
            assert isinstance(
                await providers.send(app, apple_device(), MESSAGE, expires_at=expires()), Delivered
            )
            assert server.connections == 1
            outcomes: list[object] = []

            async def one() -> None:
                outcomes.append(
                    await providers.send(app, apple_device(), MESSAGE, expires_at=expires())
                )

            async with trio.open_nursery() as burst:
                for _ in range(12):
                    burst.start_soon(one)
            stats = providers.statistics()
    assert len(outcomes) == 12 and all(isinstance(o, Delivered) for o in outcomes)
    assert server.connections == 3  # 12 streams / 5 per connection
    assert stats["connections"] == 3


async def test_large_voip_burst_respects_flow_control(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(20):
        await nursery.start(server.serve)
        big = PushMessage(call_id="c", payload={"pad": "x" * 4800})
        async with Providers(ca_file=server.ca_file) as providers:
            app = cert_app(server, push_type="voip")
            outcomes: list[object] = []

            async def one() -> None:
                outcomes.append(
                    await providers.send(app, apple_device(), big, expires_at=expires())
                )

            async with trio.open_nursery() as burst:
                for _ in range(40):  # 40 x ~4.9 kB > the 64 kB initial window
                    burst.start_soon(one)
    assert len(outcomes) == 40 and all(isinstance(o, Delivered) for o in outcomes)
    assert all(len(r.body) > 4800 for r in server.delivered)


async def test_run_lifecycle_closes_connections_on_cancel(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        async with trio.open_nursery() as inner:
            providers = await inner.start(Providers(ca_file=server.ca_file).run)
            outcome = await providers.send(
                cert_app(server), apple_device(), MESSAGE, expires_at=expires()
            )
            assert server.open_connections == 1
            inner.cancel_scope.cancel()
        await server.wait_open_connections(0)
    assert isinstance(outcome, Delivered)


async def test_send_before_start_is_an_error() -> None:
    import pytest

    server = FakeApns()
    with trio.fail_after(5), pytest.raises(RuntimeError, match="not running"):
        await Providers().send(cert_app(server), apple_device(), MESSAGE, expires_at=expires())


async def test_untrusted_server_certificate_is_auth_failure(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        async with Providers() as providers:  # our CA is not trusted
            outcome = await providers.send(
                cert_app(server), apple_device(), MESSAGE, expires_at=expires()
            )
    assert isinstance(outcome, AuthFailed) and "CERTIFICATE_VERIFY_FAILED" in outcome.reason


async def test_client_certificate_from_elsewhere_is_auth_failure(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        foreign = FakeApns()  # another CA issued this client certificate
        app = attrs.evolve(cert_app(server), auth=cert_app(foreign).auth)
        async with Providers(ca_file=server.ca_file) as providers:
            outcome = await providers.send(app, apple_device(), MESSAGE, expires_at=expires())
    assert isinstance(outcome, AuthFailed) and "TLS refused" in outcome.reason
    assert server.received == []


async def test_token_auth_burst_waits_for_apples_stream_limit_to_open(
    nursery: trio.Nursery,
) -> None:
    server = FakeApns()  # one stream per token connection until a valid token was seen
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = token_app(server)
        outcomes: list[object] = []
        async with Providers(ca_file=server.ca_file) as providers:

            async def one() -> None:
                outcomes.append(
                    await providers.send(app, apple_device(), MESSAGE, expires_at=expires())
                )

            async with trio.open_nursery() as burst:
                for _ in range(50):
                    burst.start_soon(one)
    assert len(outcomes) == 50 and all(isinstance(o, Delivered) for o in outcomes)
    assert server.connections == 1
