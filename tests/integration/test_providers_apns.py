"""APNs over real HTTP/2 + TLS against the strict stand-in, one scripted fault per test."""

from __future__ import annotations

import json

import trio
import trio.lowlevel

from pusher_trio.model import AuthFailed, Delivered, PushMessage, Rejected, RetryLater, TokenInvalid
from pusher_trio.providers import Providers
from pusher_trio.standins.fake_apns import Answer, Drop, FakeApns, Reset, Stall
from tests.integration.conftest_providers import (
    BUNDLE,
    Clock,
    apple_device,
    apple_token,
    cert_app,
    expires,
    token_app,
)

MESSAGE = PushMessage(call_id="call-1@pbx", caller_number="+15550100", caller_name="Bob")


async def test_cert_auth_push_is_delivered_with_kazoo_payload(nursery: trio.Nursery) -> None:
    seen: list[tuple[str, dict[str, str], object]] = []
    hooked = trio.Event()

    def hook(token: str, headers: dict[str, str], payload: object) -> None:
        seen.append((token, headers, payload))
        hooked.set()

    server = FakeApns(topics={BUNDLE}, on_delivered=hook)
    with trio.fail_after(10):
        await nursery.start(server.serve)
        device = apple_device()
        async with Providers(ca_file=server.ca_file) as providers:
            outcome = await providers.send(cert_app(server), device, MESSAGE, expires_at=expires())
            await hooked.wait()
        assert isinstance(outcome, Delivered) and outcome.id
        token, headers, payload = seen[0]
        assert token == device.token
        assert headers["apns-topic"] == BUNDLE and headers["apns-push-type"] == "alert"
        assert headers["apns-collapse-id"] == "call-1@pbx"
        assert payload["aps"]["alert"] == {"loc-key": "IC_MSG", "loc-args": ["Bob"]}  # type: ignore[index]
        assert server.delivered[0].headers["apns-id"] == outcome.id


async def test_async_on_delivered_hook_runs(nursery: trio.Nursery) -> None:
    done = trio.Event()

    async def hook(token: str, headers: dict[str, str], payload: object) -> None:
        await trio.lowlevel.checkpoint()
        done.set()

    server = FakeApns(on_delivered=hook)
    with trio.fail_after(10):
        await nursery.start(server.serve)
        async with Providers(ca_file=server.ca_file) as providers:
            outcome = await providers.send(
                cert_app(server), apple_device(), MESSAGE, expires_at=expires()
            )
            await done.wait()
    assert isinstance(outcome, Delivered)


async def test_voip_push_uses_voip_topic(nursery: trio.Nursery) -> None:
    server = FakeApns(topics={BUNDLE})
    with trio.fail_after(10):
        await nursery.start(server.serve)
        async with Providers(ca_file=server.ca_file) as providers:
            outcome = await providers.send(
                cert_app(server), apple_device(push_type="voip"), MESSAGE, expires_at=expires()
            )
    assert isinstance(outcome, Delivered)
    assert server.delivered[0].headers["apns-topic"] == BUNDLE + ".voip"
    assert server.delivered[0].headers["apns-push-type"] == "voip"


async def test_cert_for_another_bundle_is_refused(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = cert_app(server)
        wrong = cert_app(server, bundle="com.other.app")
        async with Providers(ca_file=server.ca_file) as providers:
            import attrs

            outcome = await providers.send(
                attrs.evolve(app, auth=wrong.auth), apple_device(), MESSAGE, expires_at=expires()
            )
    assert outcome == Rejected("400 TopicDisallowed")


async def test_token_auth_reuses_one_jwt(nursery: trio.Nursery) -> None:
    server = FakeApns(topics={BUNDLE})
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = token_app(server)
        async with Providers(ca_file=server.ca_file) as providers:
            outcomes = [
                await providers.send(app, apple_device(), MESSAGE, expires_at=expires())
                for _ in range(5)
            ]
            stats = providers.statistics()
    assert all(isinstance(o, Delivered) for o in outcomes)
    assert stats["provider_tokens_generated"] == 1
    assert len({r.headers["authorization"] for r in server.received}) == 1


async def test_expired_provider_token_is_refreshed_once(nursery: trio.Nursery) -> None:
    server_clock, client_clock = Clock(), Clock()
    server = FakeApns(clock=server_clock)
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = token_app(server)
        async with Providers(ca_file=server.ca_file, clock=client_clock) as providers:
            assert isinstance(
                await providers.send(app, apple_device(), MESSAGE, expires_at=expires()), Delivered
            )
            # 30 minutes later for us (token still reused), 61 for Apple: too old.
            client_clock.offset = 30 * 60
            server_clock.offset = 61 * 60
            outcome = await providers.send(
                app, apple_device(), MESSAGE, expires_at=expires(40 * 60)
            )
            stats = providers.statistics()
    assert isinstance(outcome, Delivered)
    assert [r.outcome for r in server.received] == ["200", "403 ExpiredProviderToken", "200"]
    assert stats["provider_tokens_generated"] == 2


async def test_provider_token_refused_twice_is_auth_failure(nursery: trio.Nursery) -> None:
    server_clock = Clock()
    server = FakeApns(clock=server_clock)
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = token_app(server)
        server_clock.offset = 2 * 3600  # Apple's clock is far ahead: every token looks old
        async with Providers(ca_file=server.ca_file) as providers:
            outcome = await providers.send(app, apple_device(), MESSAGE, expires_at=expires())
    assert outcome == AuthFailed("403 ExpiredProviderToken")
    assert len(server.received) == 2


async def test_410_invalidates_the_token(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        gone, scripted = apple_token(), apple_token()
        server.unregister(gone, timestamp_ms=1_700_000_000_000)
        server.script(Answer(410, "ExpiredToken"), token=scripted)
        async with Providers(ca_file=server.ca_file) as providers:
            first = await providers.send(
                cert_app(server), apple_device(gone), MESSAGE, expires_at=expires()
            )
            second = await providers.send(
                cert_app(server), apple_device(scripted), MESSAGE, expires_at=expires()
            )
            stats = providers.statistics()
    assert (
        isinstance(first, TokenInvalid)
        and "Unregistered" in first.reason
        and "1700000000000" in first.reason
    )
    assert isinstance(second, TokenInvalid) and "ExpiredToken" in second.reason
    assert stats["pushes"]["token_invalid"] == 2


async def test_bad_device_token_invalidates(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        async with Providers(ca_file=server.ca_file) as providers:
            outcome = await providers.send(
                cert_app(server), apple_device("not-hex-at-all"), MESSAGE, expires_at=expires()
            )
    assert outcome == TokenInvalid("BadDeviceToken")


async def test_retry_later_is_retried_inside_the_deadline(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        server.script(Answer(503, "ServiceUnavailable"), times=1)
        server.script(Answer(429, "TooManyRequests"), times=1)
        async with Providers(ca_file=server.ca_file, retry_base=0.05) as providers:
            with trio.move_on_after(5):
                outcome = await providers.send(
                    cert_app(server), apple_device(), MESSAGE, expires_at=expires()
                )
            stats = providers.statistics()
    assert isinstance(outcome, Delivered)
    assert [r.outcome for r in server.received] == [
        "503 ServiceUnavailable",
        "429 TooManyRequests",
        "200",
    ]
    assert stats["retries"] == 2


async def test_retry_after_beyond_the_deadline_returns_retry_later_at_once(
    nursery: trio.Nursery,
) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        server.script(Answer(429, "TooManyRequests", retry_after=30), times=None)
        async with Providers(ca_file=server.ca_file) as providers:
            start = trio.current_time()
            with trio.move_on_after(2):
                outcome = await providers.send(
                    cert_app(server), apple_device(), MESSAGE, expires_at=expires()
                )
            elapsed = trio.current_time() - start
    assert outcome == RetryLater("429 TooManyRequests", 30.0)
    assert elapsed < 1.0
    assert len(server.received) == 1


async def test_goaway_mid_burst_loses_nothing(nursery: trio.Nursery) -> None:
    server = FakeApns(latency=0.05)
    with trio.fail_after(20):
        await nursery.start(server.serve)
        server.goaway_after(20, reason="Shutdown")
        devices = [apple_device() for _ in range(60)]
        outcomes: list[object] = []
        async with Providers(ca_file=server.ca_file) as providers:
            app = cert_app(server)

            async def one(device: object) -> None:
                outcomes.append(await providers.send(app, device, MESSAGE, expires_at=expires()))  # type: ignore[arg-type]

            async with trio.open_nursery() as burst:
                for device in devices:
                    burst.start_soon(one, device)
            stats = providers.statistics()
    assert len(outcomes) == 60 and all(isinstance(o, Delivered) for o in outcomes)
    delivered = [r.token for r in server.delivered]
    assert sorted(delivered) == sorted(d.token for d in devices)  # each exactly once
    assert server.goaways == 1 and server.connections == 2
    assert stats["pool_details"][0]["replays"] >= 1


async def test_stalled_stream_does_not_block_the_others(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        stalled = apple_token()
        server.script(Stall(), token=stalled)
        async with Providers(ca_file=server.ca_file) as providers:
            app = cert_app(server)
            results: dict[str, object] = {}

            async def stalled_push() -> None:
                with trio.move_on_after(1.0):
                    results["stalled"] = await providers.send(
                        app, apple_device(stalled), MESSAGE, expires_at=expires()
                    )

            async def normal_pushes() -> None:
                await trio.sleep(0.1)
                start = trio.current_time()
                for _ in range(10):
                    assert isinstance(
                        await providers.send(app, apple_device(), MESSAGE, expires_at=expires()),
                        Delivered,
                    )
                results["normal_time"] = trio.current_time() - start

            async with trio.open_nursery() as both:
                both.start_soon(stalled_push)
                both.start_soon(normal_pushes)
            # The timed-out stream was reset; the same connection keeps working.
            after = await providers.send(app, apple_device(), MESSAGE, expires_at=expires())
            stats = providers.statistics()
    assert "stalled" not in results
    assert float(results["normal_time"]) < 0.9  # type: ignore[arg-type]
    assert isinstance(after, Delivered)
    assert server.connections == 1 and stats["connections"] == 1


async def test_rst_stream_fails_one_push_only(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        reset = apple_token()
        server.script(Reset(), token=reset)
        async with Providers(ca_file=server.ca_file) as providers:
            app = cert_app(server)
            bad = await providers.send(app, apple_device(reset), MESSAGE, expires_at=expires())
            good = await providers.send(app, apple_device(), MESSAGE, expires_at=expires())
    assert isinstance(bad, Rejected) and "INTERNAL_ERROR" in bad.reason
    assert isinstance(good, Delivered)
    assert server.connections == 1


async def test_reconnect_after_a_dropped_connection(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        async with Providers(ca_file=server.ca_file, retry_base=0.05) as providers:
            app = cert_app(server)
            assert isinstance(
                await providers.send(app, apple_device(), MESSAGE, expires_at=expires()), Delivered
            )
            server.script(Drop())
            outcome = await providers.send(app, apple_device(), MESSAGE, expires_at=expires())
    assert isinstance(outcome, Delivered)
    assert server.connections == 2
    assert [r.outcome for r in server.received] == ["200", "drop", "200"]


async def test_unreachable_host_is_retry_later_by_the_deadline() -> None:
    with trio.fail_after(10):
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        listener.close()  # nothing listens there
        server = FakeApns()
        import attrs

        app = attrs.evolve(cert_app(server), host=f"127.0.0.1:{port}")
        async with Providers(ca_file=server.ca_file, retry_base=0.05) as providers:
            start = trio.current_time()
            with trio.move_on_after(1.5) as scope:
                outcome = await providers.send(app, apple_device(), MESSAGE, expires_at=expires())
            stats = providers.statistics()
    assert not scope.cancelled_caught
    assert isinstance(outcome, RetryLater)
    assert trio.current_time() - start < 1.5
    assert stats["pool_details"][0]["connect_failures"] >= 2


async def test_new_credentials_get_a_new_pool(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        first, second = cert_app(server), cert_app(server)
        async with Providers(ca_file=server.ca_file) as providers:
            assert isinstance(
                await providers.send(first, apple_device(), MESSAGE, expires_at=expires()),
                Delivered,
            )
            assert isinstance(
                await providers.send(second, apple_device(), MESSAGE, expires_at=expires()),
                Delivered,
            )
            stats = providers.statistics()
    assert stats["pools"] == 1  # the old pool was retired
    assert server.connections == 2


async def test_close_sends_goaway_and_ends_connections(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        async with Providers(ca_file=server.ca_file) as providers:
            await providers.send(cert_app(server), apple_device(), MESSAGE, expires_at=expires())
            assert server.open_connections == 1
        await server.wait_open_connections(0)
    assert server.connections == 1


async def test_payload_too_large_is_refused_before_sending(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        big = PushMessage(call_id="c", payload={"pad": "x" * 5000})
        async with Providers(ca_file=server.ca_file) as providers:
            outcome = await providers.send(
                cert_app(server), apple_device(), big, expires_at=expires()
            )
    assert isinstance(outcome, Rejected) and "PayloadTooLarge" in outcome.reason
    assert server.received == []


def test_payload_json_is_recorded() -> None:
    from pusher_trio.standins.common import Received

    record = Received("t", "/3/device/t", {}, json.dumps({"a": 1}).encode(), "200", 1, 1, 0.0, True)
    assert record.payload() == {"a": 1} and record.delivered


async def test_forget_app_closes_its_pool(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = cert_app(server)
        async with Providers(ca_file=server.ca_file) as providers:
            assert isinstance(
                await providers.send(app, apple_device(), MESSAGE, expires_at=expires()), Delivered
            )
            providers.forget_app(app.app_id)
            await server.wait_open_connections(0)
            stats = providers.statistics()
    assert stats["pools"] == 0


async def test_unusable_signing_key_is_auth_failure(nursery: trio.Nursery) -> None:
    import attrs

    from pusher_trio.model import AppleTokenAuth

    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = attrs.evolve(
            token_app(server), auth=AppleTokenAuth("junk", "ABCDEFGHIJ", "TEAM123456")
        )
        async with Providers(ca_file=server.ca_file) as providers:
            outcome = await providers.send(app, apple_device(), MESSAGE, expires_at=expires())
    assert isinstance(outcome, AuthFailed) and "signing key" in outcome.reason
    assert server.received == []
