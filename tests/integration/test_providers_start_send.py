"""`Providers.start_send`: a push without a task, against the strict stand-ins.

Each test warms the pool with `send` (a cold pool is `send`'s: it connects), then
starts pushes whose answer arrives through the callback, from the connection's
reader task. What the callback is given decides who finishes the push: a final
Outcome, or None / RetryLater for `send(..., first=...)`.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from pusher_trio.model import (
    App,
    AuthFailed,
    Delivered,
    Device,
    Outcome,
    PushMessage,
    Rejected,
    RetryLater,
    TokenInvalid,
)
from pusher_trio.providers import Providers
from pusher_trio.standins.common import Answer, Drop, GoAway, Reset, Stall
from pusher_trio.standins.fake_apns import FakeApns
from pusher_trio.standins.fake_fcm import FakeFcm
from tests.integration.conftest_providers import (
    Clock,
    apple_device,
    apple_token,
    cert_app,
    expires,
    fcm_app,
    fcm_device,
    token_app,
)

MESSAGE = PushMessage(call_id="call-1@pbx", caller_number="+15550100", caller_name="Bob")
NOT_STARTED = object()


class Answered:
    """The callback: records what it was given, once."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome | None] = []
        self.event = trio.Event()

    def __call__(self, outcome: Outcome | None) -> None:
        self.outcomes.append(outcome)
        self.event.set()

    async def one(self) -> Outcome | None:
        await self.event.wait()
        assert len(self.outcomes) == 1
        return self.outcomes[0]


def start(
    providers: Providers, app: App, device: Device, answered: Answered
) -> Callable[[], None] | None:
    return providers.start_send(app, device, MESSAGE, expires_at=expires(), answered=answered)


async def warm(providers: Providers, app: App, device: Device | None = None) -> None:
    outcome = await providers.send(app, device or apple_device(), MESSAGE, expires_at=expires())
    assert isinstance(outcome, Delivered)


async def test_a_cold_pool_is_left_to_send(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        async with Providers(ca_file=server.ca_file) as providers:
            assert start(providers, cert_app(server), apple_device(), Answered()) is None
            assert server.received == [] and server.connections == 0


async def test_a_push_is_delivered_through_the_callback(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = cert_app(server)
        async with Providers(ca_file=server.ca_file) as providers:
            await warm(providers, app)
            device, answered = apple_device(), Answered()
            assert start(providers, app, device, answered) is not None
            assert answered.outcomes == []  # only the reader task answers it
            outcome = await answered.one()
            stats = providers.statistics()
    assert isinstance(outcome, Delivered) and outcome.id
    assert [r.token for r in server.delivered] == [server.delivered[0].token, device.token]
    assert stats["pushes"]["delivered"] == 2
    assert stats["pool_details"][0]["open_streams"] == 0


async def test_refusals_are_final_outcomes(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = cert_app(server)
        gone, reset = apple_token(), apple_token()
        server.unregister(gone)
        server.script(Reset(), token=reset)
        async with Providers(ca_file=server.ca_file) as providers:
            await warm(providers, app)
            got = []
            for token in (gone, reset):
                answered = Answered()
                assert start(providers, app, apple_device(token), answered) is not None
                got.append(await answered.one())
            stats = providers.statistics()
    assert isinstance(got[0], TokenInvalid) and "Unregistered" in got[0].reason
    assert isinstance(got[1], Rejected) and "INTERNAL_ERROR" in got[1].reason
    assert stats["pushes"]["token_invalid"] == 1 and stats["pushes"]["rejected"] == 1


async def test_retry_later_goes_on_in_send_after_its_backoff(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = cert_app(server)
        async with Providers(ca_file=server.ca_file, retry_base=0.05) as providers:
            await warm(providers, app)
            server.script(Answer(503, "ServiceUnavailable"), times=1)
            answered = Answered()
            device = apple_device()
            assert start(providers, app, device, answered) is not None
            first = await answered.one()
            assert first == RetryLater("503 ServiceUnavailable")
            assert providers.statistics()["pushes"]["retry_later"] == 0  # not an end yet
            with trio.move_on_after(5):
                outcome = await providers.send(
                    app, device, MESSAGE, expires_at=expires(), first=first
                )
            stats = providers.statistics()
    assert isinstance(outcome, Delivered)
    assert [r.outcome for r in server.received][1:] == ["503 ServiceUnavailable", "200"]
    assert stats["retries"] == 1 and stats["pushes"]["delivered"] == 2


async def test_an_unprocessed_stream_is_left_to_send(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = cert_app(server)
        async with Providers(ca_file=server.ca_file) as providers:
            await warm(providers, app)
            server.script(GoAway(), times=1)
            answered = Answered()
            device = apple_device()
            assert start(providers, app, device, answered) is not None
            assert await answered.one() is None
            outcome = await providers.send(app, device, MESSAGE, expires_at=expires())
            stats = providers.statistics()
    assert isinstance(outcome, Delivered)
    assert [r.token for r in server.delivered].count(device.token) == 1
    assert server.connections == 2 and stats["pool_details"][0]["replays"] == 1


async def test_a_lost_connection_is_retry_later(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = cert_app(server)
        async with Providers(ca_file=server.ca_file) as providers:
            await warm(providers, app)
            server.script(Drop(), times=1)
            answered = Answered()
            assert start(providers, app, apple_device(), answered) is not None
            outcome = await answered.one()
    assert isinstance(outcome, RetryLater) and "lost" in outcome.reason


async def test_an_expired_provider_token_is_renewed_for_send(nursery: trio.Nursery) -> None:
    server_clock, client_clock = Clock(), Clock()
    server = FakeApns(clock=server_clock)
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = token_app(server)
        async with Providers(ca_file=server.ca_file, clock=client_clock) as providers:
            await warm(providers, app)
            client_clock.offset = 30 * 60  # we still reuse the token; Apple finds it too old
            server_clock.offset = 61 * 60
            answered = Answered()
            device = apple_device()
            assert start(providers, app, device, answered) is not None
            assert await answered.one() is None
            assert providers.statistics()["provider_tokens_generated"] == 2
            outcome = await providers.send(app, device, MESSAGE, expires_at=expires(40 * 60))
            # refused again at once: the renewal is not repeated, the push fails
            server_clock.offset = 3 * 3600
            again = Answered()
            assert start(providers, app, apple_device(), again) is not None
            refused = await again.one()
    assert isinstance(outcome, Delivered)
    assert [r.outcome for r in server.received] == [
        "200",
        "403 ExpiredProviderToken",
        "200",
        "403 ExpiredProviderToken",
    ]
    assert refused == AuthFailed("403 ExpiredProviderToken")


async def test_a_cancelled_push_resets_only_its_stream(nursery: trio.Nursery) -> None:
    server = FakeApns()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = cert_app(server)
        stalled = apple_token()
        server.script(Stall(), token=stalled)
        async with Providers(ca_file=server.ca_file) as providers:
            await warm(providers, app)
            answered = Answered()
            cancel = start(providers, app, apple_device(stalled), answered)
            assert cancel is not None
            while not any(r.token == stalled for r in server.received):  # noqa: ASYNC110
                await trio.sleep(0.01)
            cancel()
            cancel()  # twice is once
            while server.client_resets < 1:  # noqa: ASYNC110
                await trio.sleep(0.01)
            pool = providers.statistics()["pool_details"][0]
            (connection,) = next(iter(providers._pools.values())).connections
            assert connection.active == 0  # its slot given back once
            after = Answered()
            assert start(providers, app, apple_device(), after) is not None
            outcome = await after.one()
    assert answered.outcomes == []
    assert pool["open_streams"] == 0 and pool["connections"] == 1
    assert isinstance(outcome, Delivered) and server.connections == 1


async def test_fcm_needs_a_cached_access_token(nursery: trio.Nursery) -> None:
    server = FakeFcm()
    with trio.fail_after(10):
        await nursery.start(server.serve)
        app = fcm_app(server)
        async with Providers(ca_file=server.ca_file) as providers:
            assert start(providers, app, fcm_device(), Answered()) is None  # no token yet
            await warm(providers, app, fcm_device())
            delivered, gone, refused = Answered(), Answered(), Answered()
            gone_token = "fcm-gone-" + "x" * 40
            server.script(Answer(404, "UNREGISTERED"), token=gone_token)
            assert start(providers, app, fcm_device(), delivered) is not None
            assert start(providers, app, fcm_device(gone_token), gone) is not None
            results = [await delivered.one(), await gone.one()]
            server.script(Answer(401, "UNAUTHENTICATED"), times=1)
            assert start(providers, app, fcm_device(), refused) is not None
            assert await refused.one() is None  # the token is dropped: send fetches one
            assert start(providers, app, fcm_device(), Answered()) is None
    assert isinstance(results[0], Delivered)
    assert isinstance(results[1], TokenInvalid)
