"""Missed-call alerts: who was pushed for a call, and what alert each device gets (DESIGN §12)."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from pusher_trio.control.jsonrpc import InvalidParams
from pusher_trio.missed import Alert, MissedCalls, PushedCall, alert_for
from pusher_trio.model import PushMessage
from pusher_trio.registrations import target_from_params
from pusher_trio.service import Service
from pusher_trio.store import MemoryStore
from tests.unit.control.fakes import (
    FakePusher,
    apple_app,
    apple_device,
    fcm_device,
    firebase_app,
    registered,
    running_service,
)

ALICE = "alice@example.com"
CALL = PushedCall(
    ALICE,
    PushMessage(call_id="c1", caller_number="100", caller_name="Bob", alert_key="IC_X"),
    (),
    0.0,
)


def test_remember_is_bounded_in_count_and_age() -> None:
    calls = MissedCalls(max_calls=2, max_age=10)
    for i in range(3):
        calls.remember(f"c{i}", ALICE, PushMessage(), [], now=float(i))
    assert len(calls) == 2
    assert calls.pop("c0", 3) is None
    assert calls.pop("c1", 11.5) is None  # older than max_age
    assert calls.pop("c2", 11.5) is not None
    assert calls.pop("c2", 11.5) is None  # once
    calls.remember("", ALICE, PushMessage(), [], now=0)
    assert len(calls) == 0


def test_alert_for_an_alert_app_uses_the_token_and_the_missed_call_template() -> None:
    app = attrs.evolve(apple_app(), missed_call_template='{"m": "{caller}"}')
    alert = alert_for(app, apple_device(), CALL)
    assert isinstance(alert, Alert)
    assert alert.device.token == apple_device().token
    assert alert.device.push_type == alert.app.push_type == "alert"
    assert alert.app.payload_template == '{"m": "{caller}"}'
    # the incoming-call alert key of the wake-up is not the missed call's
    assert alert.message == PushMessage(
        call_id="c1", caller_number="100", caller_name="Bob", kind="missed_call"
    )


def test_a_pushkit_token_takes_no_alert_but_linphones_remote_token_does() -> None:
    app = apple_app(push_type="voip")
    assert alert_for(app, apple_device(), CALL) == "no_alert_token"
    voip, remote = "ab" * 32, "cd" * 32
    params = {
        "pn-provider": "apns",
        "pn-prid": f"{voip}:voip&{remote}:remote",
        "pn-param": "TEAM1.com.example.phone.voip&remote",
    }
    device = target_from_params(
        params, None, aor=ALICE, contact="", user_agent="", user_agents={}, now=0
    )
    assert device is not None
    assert (device.token, device.extra["alert_token"]) == (voip, remote)
    alert = alert_for(app, device, CALL)
    assert isinstance(alert, Alert)
    assert alert.device.token == remote


def test_off_or_no_app() -> None:
    assert alert_for(attrs.evolve(apple_app(), missed_call=False), apple_device(), CALL) == "off"
    assert alert_for(None, apple_device(), CALL) == "no_app"
    assert alert_for(firebase_app(), apple_device(), CALL) == "no_app"
    assert isinstance(alert_for(firebase_app(), fcm_device(), CALL), Alert)


async def test_call_ended_sends_one_alert_per_pushed_device(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    store.put_devices([apple_device()])
    store.put_app(apple_app())
    pusher = FakePusher()
    async with running_service(store, pusher) as service:
        async with trio.open_nursery() as nursery:

            async def push() -> None:
                await service.call("push", {"aor": ALICE, "call_id": "c9", "caller_number": "7"})

            async def wake() -> None:
                await trio.sleep(1)
                service.on_registered(registered(ALICE, [apple_device()]))

            nursery.start_soon(push)
            nursery.start_soon(wake)
        # answered elsewhere: nothing; an unknown call: nothing
        assert await service.call("call_ended", {"call_id": "zz", "reason": "cancel"}) == {
            "cancelled": 0,
            "alerts": 0,
        }
        result = await service.call("call_ended", {"call_id": "c9", "reason": "cancel"})
        assert result == {"cancelled": 0, "alerts": 1}
        await trio.sleep(1)
        again = await service.call("call_ended", {"call_id": "c9", "reason": "cancel"})
        assert again["alerts"] == 0
        stats = service.statistics()["missed_calls"]
    kinds = [s.message.kind for s in pusher.sent]
    assert kinds == ["call", "missed_call"]
    assert pusher.sent[1].message.call_id == "c9"
    assert stats == {"unknown_call": 2, "alert_delivered": 1}


async def test_answered_elsewhere_sends_nothing(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    store.put_devices([apple_device()])
    store.put_app(apple_app())
    pusher = FakePusher()
    async with running_service(store, pusher) as service:
        async with trio.open_nursery() as nursery:

            async def push() -> None:
                with pytest.raises(Exception, match="call"):
                    await service.call("push", {"aor": ALICE, "call_id": "c8", "timeout": 5})

            nursery.start_soon(push)
            await trio.sleep(1)
            result = await service.call(
                "call_ended", {"call_id": "c8", "reason": "answered_elsewhere"}
            )
        assert result == {"cancelled": 1, "alerts": 0}
        assert service.statistics()["missed_calls"] == {"answered_elsewhere": 1}
    assert [s.message.kind for s in pusher.sent] == ["call"]


async def test_push_timeout_is_a_missed_call(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    store.put_devices([apple_device()])
    store.put_app(apple_app())
    pusher = FakePusher()
    async with running_service(store, pusher) as service:
        with pytest.raises(Exception, match="before the deadline"):
            await service.call("push", {"aor": ALICE, "call_id": "c7", "timeout": 5})
        await trio.sleep(1)
    assert [s.message.kind for s in pusher.sent] == ["call", "missed_call"]


@pytest.mark.parametrize(
    "params", [{}, {"call_id": ""}, {"call_id": "c"}, {"call_id": "c", "reason": "bye"}]
)
async def test_bad_params(params: dict[str, object]) -> None:
    service = Service(MemoryStore(), FakePusher())
    with pytest.raises(InvalidParams):
        await service.call("call_ended", params)
