"""Web Push through the provider pools against the strict stand-in, which decrypts every
push with the subscriber's private key and verifies the VAPID signature."""

from __future__ import annotations

import time

import trio
import trio.testing

from pusher_trio.model import (
    App,
    AuthFailed,
    Delivered,
    Device,
    PushMessage,
    RetryLater,
    TokenInvalid,
    WebPushAuth,
)
from pusher_trio.providers import Providers
from pusher_trio.providers.webpush import generate_vapid_key, vapid_public_key
from pusher_trio.standins.common import Answer
from pusher_trio.standins.fake_webpush import BrowserSubscription, FakeWebPush
from tests.integration.conftest_providers import expires

MESSAGE = PushMessage(call_id="c-web", caller_number="200", caller_name="Alice")
SUBJECT = "mailto:ops@example.com"


def webpush_app(key: str | None = None, app_id: str = "org.example.webphone") -> App:
    return App(app_id, "webpush", WebPushAuth(key or generate_vapid_key(), SUBJECT))


def browser_device(browser: BrowserSubscription) -> Device:
    return Device(
        aor="carol@example.com",
        device_id="browser-1",
        type="webpush",
        app="org.example.webphone",
        token=browser.endpoint,
        extra={"p256dh": browser.p256dh, "auth": browser.auth},
    )


async def test_push_is_decrypted_by_the_subscriber_and_signed_for_the_origin(
    nursery: trio.Nursery,
) -> None:
    server = FakeWebPush()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = webpush_app()
        public = vapid_public_key(app.auth.vapid_key_pem)  # type: ignore[union-attr]
        browser = server.subscribe(public)
        async with Providers(ca_file=server.ca_file) as providers:
            deadline = time.time() + 25
            first = await providers.send(app, browser_device(browser), MESSAGE, expires_at=deadline)
            second = await providers.send(
                app, browser_device(browser), MESSAGE, expires_at=deadline
            )
            stats = providers.statistics()
    assert isinstance(first, Delivered) and first.id.startswith("/message/")
    assert isinstance(second, Delivered)
    payloads = server.payloads
    assert len(payloads) == 2
    assert [r.token for r in server.delivered] == [browser.endpoint] * 2
    assert all(r.outcome == "201" for r in server.delivered)
    # Both decrypted with the browser's private key (else they would not be delivered).
    assert all(p["call-id"] == "c-web" for p in payloads)
    claims = server.vapid_claims[0]
    assert claims["aud"] == server.origin and claims["sub"] == SUBJECT
    assert claims["exp"] <= time.time() + 24 * 3600
    assert server.urgencies == ["high", "high"]
    assert all(20 <= ttl <= 25 for ttl in server.ttls)
    # One VAPID JWT for both pushes to one origin (not one per request).
    assert stats["vapid_tokens_generated"] == 1
    assert server.connections == 1


async def test_payload_the_browser_reads_carries_the_call(nursery: trio.Nursery) -> None:
    seen: list[object] = []
    server = FakeWebPush(on_delivered=lambda token, headers, payload: seen.append(payload))
    with trio.fail_after(10):
        await nursery.start(server.serve)
        browser = server.subscribe()
        async with Providers(ca_file=server.ca_file) as providers:
            outcome = await providers.send(
                webpush_app(), browser_device(browser), MESSAGE, expires_at=expires()
            )
        await trio.testing.wait_all_tasks_blocked()
    assert isinstance(outcome, Delivered)
    assert len(seen) == 1
    payload = seen[0]
    assert isinstance(payload, dict)
    assert payload["call-id"] == "c-web"
    assert payload["caller-id-number"] == "200" and payload["caller-id-name"] == "Alice"


async def test_push_signed_by_another_key_than_the_subscriptions_is_auth_failure(
    nursery: trio.Nursery,
) -> None:
    server = FakeWebPush()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        browser = server.subscribe(vapid_public_key(generate_vapid_key()))
        async with Providers(ca_file=server.ca_file) as providers:
            outcome = await providers.send(
                webpush_app(), browser_device(browser), MESSAGE, expires_at=expires()
            )
    assert isinstance(outcome, AuthFailed) and "403" in outcome.reason
    assert server.delivered == []


async def test_gone_subscription_invalidates_the_device(nursery: trio.Nursery) -> None:
    server = FakeWebPush()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        browser = server.subscribe()
        server.unsubscribe(browser.endpoint)
        async with Providers(ca_file=server.ca_file) as providers:
            outcome = await providers.send(
                webpush_app(), browser_device(browser), MESSAGE, expires_at=expires()
            )
    assert isinstance(outcome, TokenInvalid) and "410" in outcome.reason


async def test_429_is_retried_honouring_retry_after(nursery: trio.Nursery) -> None:
    server = FakeWebPush()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        browser = server.subscribe()
        server.script(Answer(429, "slow down", retry_after=0))
        async with Providers(ca_file=server.ca_file, retry_base=0.05) as providers:
            outcome = await providers.send(
                webpush_app(), browser_device(browser), MESSAGE, expires_at=expires()
            )
            retries = providers.retries
    assert isinstance(outcome, Delivered)
    assert retries == 1
    assert [r.outcome for r in server.received] == ["429 slow down", "201"]


async def test_503_past_the_deadline_is_retry_later(nursery: trio.Nursery) -> None:
    server = FakeWebPush()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        browser = server.subscribe()
        server.script(Answer(503, "maintenance", retry_after=30), times=None)
        async with Providers(ca_file=server.ca_file) as providers:
            outcome = await providers.send(
                webpush_app(), browser_device(browser), MESSAGE, expires_at=expires(2)
            )
    assert isinstance(outcome, RetryLater) and "503" in outcome.reason


async def test_push_service_without_http2_is_reached_over_http1(nursery: trio.Nursery) -> None:
    server = FakeWebPush(http1=True)
    with trio.fail_after(10):
        await nursery.start(server.serve)
        browser = server.subscribe()
        async with Providers(ca_file=server.ca_file) as providers:
            outcomes = [
                await providers.send(
                    webpush_app(), browser_device(browser), MESSAGE, expires_at=expires()
                )
                for _ in range(3)
            ]
            stats = providers.statistics()
    assert all(isinstance(o, Delivered) for o in outcomes), outcomes
    assert [p["call-id"] for p in server.payloads] == ["c-web"] * 3
    assert server.http1_requests == 3
    # The first connect found no h2 in ALPN; then one kept-alive HTTP/1.1 connection.
    assert stats["http1_origins"] == [server.address]
    assert stats["http1_requests"] == 3
    assert server.connections == 2
    assert len({r.connection for r in server.received}) == 1


async def test_http1_push_service_answers_are_classified_too(nursery: trio.Nursery) -> None:
    server = FakeWebPush(http1=True)
    with trio.fail_after(10):
        await nursery.start(server.serve)
        browser = server.subscribe()
        server.unsubscribe(browser.endpoint)
        async with Providers(ca_file=server.ca_file) as providers:
            outcome = await providers.send(
                webpush_app(), browser_device(browser), MESSAGE, expires_at=expires()
            )
    assert isinstance(outcome, TokenInvalid) and "410" in outcome.reason
