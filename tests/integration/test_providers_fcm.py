"""FCM HTTP v1 + OAuth against the strict stand-in."""

from __future__ import annotations

import json

import attrs
import trio

from pusher_trio.model import (
    AuthFailed,
    Delivered,
    FirebaseAuth,
    PushMessage,
    Rejected,
    RetryLater,
    TokenInvalid,
)
from pusher_trio.providers import Providers
from pusher_trio.standins.certs import make_service_account
from pusher_trio.standins.fake_fcm import Answer, FakeFcm
from tests.integration.conftest_providers import expires, fcm_app, fcm_device

MESSAGE = PushMessage(call_id="call-9", caller_number="100", caller_name="Alice")


async def test_push_is_delivered_with_one_oauth_exchange(nursery: trio.Nursery) -> None:
    delivered: list[tuple[str, object]] = []
    server = FakeFcm(
        on_delivered=lambda token, headers, payload: delivered.append((token, payload))
    )
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = fcm_app(server)
        device = fcm_device()
        async with Providers(ca_file=server.ca_file) as providers:
            outcomes = [
                await providers.send(app, device, MESSAGE, expires_at=expires(25)) for _ in range(3)
            ]
            stats = providers.statistics()
    assert all(
        isinstance(o, Delivered) and o.id.startswith("projects/demo-project/messages/")
        for o in outcomes
    )
    assert server.token_requests == 1 and stats["oauth_exchanges"] == 1
    body = json.loads(server.delivered[0].body)["message"]
    assert body["token"] == device.token
    assert body["android"]["priority"] == "HIGH"
    assert body["android"]["ttl"] in ("24s", "25s")
    assert body["data"]["call-id"] == "call-9" and body["data"]["caller-id-name"] == "Alice"


async def test_401_refreshes_the_access_token_once(nursery: trio.Nursery) -> None:
    server = FakeFcm()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = fcm_app(server)
        async with Providers(ca_file=server.ca_file) as providers:
            assert isinstance(
                await providers.send(app, fcm_device(), MESSAGE, expires_at=expires()), Delivered
            )
            server.revoke_access_tokens()
            outcome = await providers.send(app, fcm_device(), MESSAGE, expires_at=expires())
    assert isinstance(outcome, Delivered)
    assert server.tokens_issued == 2
    assert [r.outcome.split()[0] for r in server.received if r.path != "/token"] == [
        "200",
        "401",
        "200",
    ]


async def test_unregistered_invalidates_the_token(nursery: trio.Nursery) -> None:
    server = FakeFcm()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = fcm_app(server)
        gone = fcm_device()
        server.unregister(gone.token)
        async with Providers(ca_file=server.ca_file) as providers:
            outcome = await providers.send(app, gone, MESSAGE, expires_at=expires())
    assert isinstance(outcome, TokenInvalid) and "UNREGISTERED" in outcome.reason


async def test_quota_exceeded_is_retried_honouring_retry_after(nursery: trio.Nursery) -> None:
    server = FakeFcm()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = fcm_app(server)
        device = fcm_device()
        server.script(Answer(429, "QUOTA_EXCEEDED", retry_after=1), token=device.token)
        async with Providers(ca_file=server.ca_file) as providers:
            start = trio.current_time()
            outcome = await providers.send(app, device, MESSAGE, expires_at=expires())
            elapsed = trio.current_time() - start
    assert isinstance(outcome, Delivered)
    assert 1.0 <= elapsed < 3.0


async def test_unavailable_past_the_deadline_is_returned(nursery: trio.Nursery) -> None:
    server = FakeFcm()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = fcm_app(server)
        server.script(Answer(503, "UNAVAILABLE", retry_after=60), times=None)
        async with Providers(ca_file=server.ca_file) as providers, trio.open_nursery():
            with trio.move_on_after(2):
                outcome = await providers.send(app, fcm_device(), MESSAGE, expires_at=expires())
    assert isinstance(outcome, RetryLater) and outcome.after == 60.0


async def test_sender_id_mismatch_is_rejected(nursery: trio.Nursery) -> None:
    server = FakeFcm()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = fcm_app(server)
        device = fcm_device()
        server.script(Answer(403, "SENDER_ID_MISMATCH"), token=device.token)
        async with Providers(ca_file=server.ca_file) as providers:
            outcome = await providers.send(app, device, MESSAGE, expires_at=expires())
    assert isinstance(outcome, Rejected) and "SENDER_ID_MISMATCH" in outcome.reason


async def test_unknown_service_account_is_auth_failure(nursery: trio.Nursery) -> None:
    server = FakeFcm()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        stranger, _ = make_service_account("demo-project", server.token_uri)  # not registered
        app = attrs.evolve(fcm_app(server), auth=FirebaseAuth(stranger, base_url=server.base_url))
        async with Providers(ca_file=server.ca_file) as providers:
            outcome = await providers.send(app, fcm_device(), MESSAGE, expires_at=expires())
    assert isinstance(outcome, AuthFailed) and "Invalid JWT Signature" in outcome.reason


async def test_wrong_project_is_auth_failure(nursery: trio.Nursery) -> None:
    server = FakeFcm()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = fcm_app(server, project="real-project")
        account = dict(app.auth.service_account)  # type: ignore[union-attr]
        account["project_id"] = "someone-elses"
        app = attrs.evolve(app, auth=FirebaseAuth(account, base_url=server.base_url))
        async with Providers(ca_file=server.ca_file) as providers:
            outcome = await providers.send(app, fcm_device(), MESSAGE, expires_at=expires())
    assert isinstance(outcome, AuthFailed) and outcome.reason.startswith("403")


async def test_access_token_is_renewed_5_minutes_before_it_expires(nursery: trio.Nursery) -> None:
    from tests.integration.conftest_providers import Clock

    server_clock, client_clock = Clock(), Clock()
    server = FakeFcm(clock=server_clock)
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = fcm_app(server)
        async with Providers(ca_file=server.ca_file, clock=client_clock) as providers:
            assert isinstance(
                await providers.send(app, fcm_device(), MESSAGE, expires_at=expires()), Delivered
            )
            for clock in (server_clock, client_clock):
                clock.offset = 54 * 60  # 6 minutes left: still used
            assert isinstance(
                await providers.send(app, fcm_device(), MESSAGE, expires_at=client_clock() + 20),
                Delivered,
            )
            assert server.tokens_issued == 1
            for clock in (server_clock, client_clock):
                clock.offset = 55 * 60 + 1  # under 5 minutes left: renewed first
            assert isinstance(
                await providers.send(app, fcm_device(), MESSAGE, expires_at=client_clock() + 20),
                Delivered,
            )
    assert server.tokens_issued == 2
    assert [r.outcome for r in server.received if r.path != "/token"] == ["200", "200", "200"]


async def test_unusable_private_key_is_auth_failure(nursery: trio.Nursery) -> None:
    server = FakeFcm()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = fcm_app(server)
        broken = {**app.auth.service_account, "private_key": "not a key"}  # type: ignore[union-attr]
        app = attrs.evolve(app, auth=FirebaseAuth(broken, base_url=server.base_url))
        async with Providers(ca_file=server.ca_file) as providers:
            outcome = await providers.send(app, fcm_device(), MESSAGE, expires_at=expires())
    assert isinstance(outcome, AuthFailed) and "OAuth assertion" in outcome.reason
