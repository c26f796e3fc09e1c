"""Binding-refresh pushes (RFC 8599 sip.pnsreg): the schedule, and the service sending them."""

from __future__ import annotations

import attrs
import trio
import trio.testing

from pusher_trio.model import Device
from pusher_trio.refresh import RefreshSchedule, due_at, refresh_target
from pusher_trio.service import Service
from pusher_trio.store import MemoryStore
from tests.unit.control.fakes import (
    FakePusher,
    apple_app,
    apple_device,
    fcm_device,
    firebase_app,
    registered,
)

KEY = ("alice@example.com", "dev-1")


def test_due_before_expiry_or_at_half_life() -> None:
    assert due_at(1000, 600, 120) == 1480
    assert due_at(1000, 100, 120) == 1050  # shorter than the lead: half its life


def test_one_push_per_register_answered_or_not_never_a_loop() -> None:
    s = RefreshSchedule(lead=10)
    s.registered(KEY, at=0, expires=30)
    assert list(s.due(19)) == []
    assert list(s.due(20)) == [KEY]
    assert list(s.due(25)) == []  # pushed once: nothing more until a REGISTER
    s.registered(KEY, at=26, expires=30)  # the phone refreshed: answered, re-armed
    assert s.statistics()["answered"] == 1
    assert list(s.due(46)) == [KEY]
    # no REGISTER this time: unanswered at the binding's expiry, and silence after it
    assert list(s.due(56)) == []
    assert list(s.due(10_000)) == []
    assert s.statistics() == {
        "armed": 2,
        "answered": 1,
        "unanswered": 1,
        "dropped_full": 0,
        "scheduled": 0,
        "awaiting": 0,
    }


def test_a_later_register_supersedes_and_forget_cancels() -> None:
    s = RefreshSchedule(lead=10)
    s.registered(KEY, at=0, expires=30)
    s.registered(KEY, at=5, expires=60)
    assert list(s.due(21)) == []
    assert s.next_due == 55
    s.forget(KEY)
    assert s.next_due is None
    assert list(s.due(100)) == []


def test_bounded() -> None:
    s = RefreshSchedule(lead=10, max_devices=1)
    s.registered(("a", "1"), 0, 30)
    s.registered(("a", "2"), 0, 30)
    assert s.statistics()["dropped_full"] == 1
    assert len(s) == 1


def test_targets_never_a_pushkit_token() -> None:
    voip = attrs.evolve(apple_device(), push_type="voip")
    assert refresh_target(apple_app(), voip) == "no_background_token"
    with_remote = attrs.evolve(voip, extra={"alert_token": "cd" * 32})
    _app, device = refresh_target(apple_app(), with_remote)  # type: ignore[misc]
    assert (device.token, device.push_type) == ("cd" * 32, "alert")
    assert refresh_target(None, fcm_device()) == "no_app"
    assert refresh_target(firebase_app(), fcm_device())[1] == fcm_device()  # type: ignore[index]


async def test_service_pushes_once_before_expiry(autojump_clock: trio.testing.MockClock) -> None:
    device: Device = fcm_device()
    store = MemoryStore()
    store.put_devices([device])
    store.put_app(firebase_app())
    pusher = FakePusher()
    service = Service(
        store, pusher, config_push={"binding_refresh_lead": 10}, clock=trio.current_time
    )
    assert service.pnsreg == 10
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        event = attrs.evolve(
            registered(device.aor, [device], at=trio.current_time()), expires=30, pnsreg=True
        )
        service.on_registered(event)
        await trio.sleep(19)
        assert pusher.sent == []
        await trio.sleep(2)
        assert [s.message.kind for s in pusher.sent] == ["refresh"]
        await trio.sleep(100)  # never answered: no second push
        assert len(pusher.sent) == 1
        stats = service.statistics()["binding_refresh"]
        nursery.cancel_scope.cancel()
    assert stats["unanswered"] == 1
    assert stats["sent_delivered"] == 1


def test_off_with_lead_zero() -> None:
    service = Service(MemoryStore(), FakePusher(), config_push={"binding_refresh_lead": 0})
    assert service.pnsreg is None


def test_a_register_without_pnsreg_answers_but_does_not_rearm() -> None:
    s = RefreshSchedule(lead=10)
    s.registered(KEY, at=0, expires=30)
    assert list(s.due(20)) == [KEY]
    s.registered(KEY, at=21, expires=600, asked=False)
    assert s.statistics()["answered"] == 1
    assert list(s.due(10_000)) == []
