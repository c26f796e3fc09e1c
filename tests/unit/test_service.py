"""The push service's JSON-RPC methods over a MemoryStore and a scripted Pusher."""

from __future__ import annotations

import json
import logging
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from pusher_trio.control.jsonrpc import (
    Cancelled,
    ControlError,
    InvalidParams,
    MethodNotFound,
    NoPushTarget,
    Overloaded,
    PushRejected,
    ShuttingDown,
    Timeout,
)
from pusher_trio.model import (
    AuthFailed,
    Rejected,
    RetryLater,
    TokenInvalid,
    mask_token,
)
from pusher_trio.service import Service, mask_contact, normalize_aor
from pusher_trio.store import MemoryStore, unstructure_app
from pusher_trio.waiters import Waiters
from tests.unit.control.fakes import (
    APPLE_TOKEN,
    APPLE_TOKEN_2,
    FCM_TOKEN,
    PEM_SECRET,
    FakePusher,
    apple_app,
    apple_device,
    fcm_device,
    firebase_app,
    registered,
    running_service,
)

ALICE = "alice@example.com"


def store_with(*devices: Any, apps: Any = None) -> MemoryStore:
    store = MemoryStore()
    store.put_devices(devices)
    for app in apps if apps is not None else [apple_app()]:
        store.put_app(app)
    return store


async def register_after(service: Service, delay: float, aor: str = ALICE) -> None:
    await trio.sleep(delay)
    service.on_registered(registered(aor, [apple_device(aor)]))


# --- push and wait -----------------------------------------------------------------------


async def test_push_wakes_and_answers_registered(autojump_clock: trio.testing.MockClock) -> None:
    pusher = FakePusher()
    async with running_service(store_with(apple_device()), pusher) as service:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(register_after, service, 3.0)
            result = await service.call(
                "push", {"aor": ALICE, "call_id": "call-1", "caller_number": "100"}
            )
    assert result["status"] == "registered"
    assert result["aor"] == ALICE
    assert result["waited_ms"] == pytest.approx(3000, abs=50)
    assert APPLE_TOKEN not in result["contact"]
    assert mask_token(APPLE_TOKEN) in result["contact"]
    assert result["pushes"] == [
        {
            "device_id": mask_token(APPLE_TOKEN),
            "type": "apple",
            "app": "com.example.phone",
            "token": mask_token(APPLE_TOKEN),
            "outcome": "delivered",
            "reason": None,
            "latency_ms": result["pushes"][0]["latency_ms"],
        }
    ]
    (sent,) = pusher.sent
    assert sent.message.call_id == "call-1"
    assert sent.message.caller_number == "100"
    assert service.statistics()["pushes"]["delivered"] == 1
    assert service.statistics()["pushes_by_provider"] == {"apple": {"delivered": 1}}


async def test_push_without_devices_is_no_push_target() -> None:
    async with running_service(store_with()) as service:
        with pytest.raises(NoPushTarget) as info:
            await service.call("push", {"aor": ALICE})
    assert info.value.code == -32001
    assert service.waiters.waiting == 0


async def test_invalid_devices_are_not_push_targets() -> None:
    store = store_with(apple_device())
    store.invalidate(ALICE, APPLE_TOKEN, "Unregistered", 1.0)
    async with running_service(store) as service:
        with pytest.raises(NoPushTarget) as info:
            await service.call("push", {"aor": ALICE})
    assert info.value.data == {"aor": ALICE, "devices": 1, "invalid": 1}


async def test_sip_uri_aor_is_accepted() -> None:
    async with running_service(store_with()) as service:
        with pytest.raises(NoPushTarget) as info:
            await service.call("push", {"aor": "sip:" + ALICE})
    assert info.value.data["aor"] == ALICE


async def test_no_registration_before_deadline_is_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_service(store_with(apple_device()), wait_timeout=20) as service:
        start = trio.current_time()
        with pytest.raises(Timeout) as info:
            await service.call("push", {"aor": ALICE})
    assert trio.current_time() - start == pytest.approx(20)
    assert info.value.code == -32002
    assert info.value.data["reason"] == "no registration before the deadline"
    assert info.value.data["pushes"][0]["outcome"] == "delivered"


async def test_stalled_push_ends_as_timeout_saying_it_did_not_complete(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pusher = FakePusher(stall=frozenset({APPLE_TOKEN}))
    async with running_service(store_with(apple_device()), pusher) as service:
        with pytest.raises(Timeout) as info:
            await service.call("push", {"aor": ALICE, "timeout": 5})
    assert info.value.data["reason"] == "the push did not complete"
    assert info.value.data["pushes"][0]["outcome"] == "pending"


async def test_timeout_is_clamped_to_max_wait(autojump_clock: trio.testing.MockClock) -> None:
    async with running_service(store_with(apple_device()), max_wait=30) as service:
        start = trio.current_time()
        with pytest.raises(Timeout):
            await service.call("push", {"aor": ALICE, "timeout": 600})
    assert trio.current_time() - start == pytest.approx(30)


@pytest.mark.parametrize("bad", [0, -1, "5", True])
async def test_bad_timeout_is_invalid_params(bad: object) -> None:
    async with running_service(store_with(apple_device())) as service:
        with pytest.raises(InvalidParams) as info:
            await service.call("push", {"aor": ALICE, "timeout": bad})
    assert info.value.code == -32602


async def test_registration_before_the_request_does_not_end_the_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_service(store_with(apple_device())) as service:

        async def stale_then_fresh() -> None:
            await trio.testing.wait_all_tasks_blocked()
            service.on_registered(registered(ALICE, [apple_device()], at=1.0))  # long ago
            await trio.sleep(1)
            assert service.waiters.waiting == 1
            service.on_registered(registered(ALICE, [apple_device()], at=4e9))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stale_then_fresh)
            result = await service.call("push", {"aor": ALICE})
    assert result["waited_ms"] == pytest.approx(1000, abs=50)


# --- rejections ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "name"),
    [
        (TokenInvalid("Unregistered"), "token_invalid"),
        (Rejected("PayloadTooLarge"), "rejected"),
        (AuthFailed("InvalidProviderToken"), "auth_failed"),
        (RetryLater("TooManyRequests", after=30), "retry_later"),
    ],
)
async def test_every_provider_refusing_is_push_rejected(outcome: Any, name: str) -> None:
    store = store_with(apple_device())
    pusher = FakePusher({APPLE_TOKEN: outcome})
    async with running_service(store, pusher) as service:
        with pytest.raises(PushRejected) as info:
            await service.call("push", {"aor": ALICE})
    assert info.value.code == -32003
    assert info.value.data["reasons"] == [outcome.reason]
    assert info.value.data["pushes"][0]["outcome"] == name
    assert service.waiters.waiting == 0
    (device,) = store.devices(ALICE)
    assert device.state == ("invalid" if name == "token_invalid" else "valid")
    if name == "token_invalid":
        assert device.reason == "Unregistered"


async def test_one_dead_token_of_two_invalidates_it_and_keeps_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = store_with(
        apple_device(instance="<urn:uuid:1>"),
        apple_device(token=APPLE_TOKEN_2, instance="<urn:uuid:2>"),
    )
    pusher = FakePusher({APPLE_TOKEN: TokenInvalid("BadDeviceToken")})
    async with running_service(store, pusher) as service:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(register_after, service, 1.0)
            result = await service.call("push", {"aor": ALICE})
    assert result["status"] == "registered"
    assert sorted(p["outcome"] for p in result["pushes"]) == ["delivered", "token_invalid"]
    assert len(pusher.sent) == 2
    states = {d.device_id: d.state for d in store.devices(ALICE)}
    assert states == {"<urn:uuid:1>": "invalid", "<urn:uuid:2>": "valid"}


async def test_device_without_app_is_rejected_with_reason() -> None:
    store = store_with(apple_device(app="com.unknown.app"))
    pusher = FakePusher()
    async with running_service(store, pusher) as service:
        with pytest.raises(PushRejected) as info:
            await service.call("push", {"aor": ALICE})
    assert info.value.data["reasons"] == ["no app configured for com.unknown.app"]
    assert pusher.sent == []


async def test_pusher_exception_is_a_rejection_not_a_crash() -> None:
    pusher = FakePusher({APPLE_TOKEN: RuntimeError(f"boom {APPLE_TOKEN}")})
    async with running_service(store_with(apple_device()), pusher) as service:
        with pytest.raises(PushRejected) as info:
            await service.call("push", {"aor": ALICE})
    assert info.value.data["reasons"] == ["internal error: RuntimeError"]
    assert APPLE_TOKEN not in json.dumps(info.value.data)


@pytest.mark.parametrize("pn_param", ["phone-fcm", "phone-project", "4242"])
async def test_fcm_device_finds_app_by_id_project_id_or_number(
    pn_param: str, autojump_clock: trio.testing.MockClock
) -> None:
    store = store_with(fcm_device(app=pn_param), apps=[firebase_app()])
    pusher = FakePusher()
    async with running_service(store, pusher) as service:
        result = await service.call("push", {"aor": "bob@example.com", "wait": False})
    assert result["status"] == "pushed"
    assert pusher.sent[0].app.app_id == "phone-fcm"


# --- sharing, cancel, overload, shutdown ---------------------------------------------------------


async def test_two_calls_for_one_aor_share_one_push(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pusher = FakePusher(delay=0.5)
    results: dict[str, Any] = {}
    async with running_service(store_with(apple_device()), pusher) as service:

        async def call(call_id: str) -> None:
            results[call_id] = await service.call("push", {"aor": ALICE, "call_id": call_id})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "c1")
            await trio.sleep(0.1)
            nursery.start_soon(call, "c2")
            await trio.sleep(2)
            nursery.start_soon(call, "c3")  # the push completed, the wait goes on: still shared
            await trio.sleep(1)
            assert service.waiters.waiting == 3
            service.on_registered(registered(ALICE, [apple_device()]))
        assert len(pusher.sent) == 1
        assert {r["status"] for r in results.values()} == {"registered"}
        assert all(r["pushes"][0]["outcome"] == "delivered" for r in results.values())

        # A new push after the wait ended pushes again.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(register_after, service, 1.0)
            await service.call("push", {"aor": ALICE, "call_id": "c4"})
        assert len(pusher.sent) == 2


async def test_shared_push_rejected_fails_every_sharer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pusher = FakePusher({APPLE_TOKEN: TokenInvalid("Unregistered")}, delay=1.0)
    errors: list[ControlError] = []
    async with running_service(store_with(apple_device()), pusher) as service:

        async def call(call_id: str) -> None:
            try:
                await service.call("push", {"aor": ALICE, "call_id": call_id})
            except PushRejected as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "c1")
            nursery.start_soon(call, "c2")
    assert len(errors) == 2
    assert len(pusher.sent) == 1


async def test_cancel_ends_one_call_and_the_other_still_gets_the_registration(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pusher = FakePusher()
    outcomes: dict[str, Any] = {}
    async with running_service(store_with(apple_device()), pusher) as service:

        async def call(call_id: str) -> None:
            try:
                outcomes[call_id] = await service.call("push", {"aor": ALICE, "call_id": call_id})
            except Cancelled as exc:
                outcomes[call_id] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "c1")
            nursery.start_soon(call, "c2")
            await trio.sleep(1)
            assert await service.call("cancel", {"call_id": "c1"}) == {"cancelled": 1}
            assert await service.call("cancel", {"call_id": "nope"}) == {"cancelled": 0}
            await trio.sleep(1)
            assert isinstance(outcomes["c1"], Cancelled)
            assert outcomes["c1"].code == -32006
            assert "c2" not in outcomes
            service.on_registered(registered(ALICE, [apple_device()]))
    assert outcomes["c2"]["status"] == "registered"
    assert len(pusher.sent) == 1


async def test_cancel_of_the_caller_that_pushed_keeps_the_push_for_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pusher = FakePusher(delay=2.0)
    outcomes: dict[str, Any] = {}
    async with running_service(store_with(apple_device()), pusher) as service:

        async def call(call_id: str) -> None:
            try:
                outcomes[call_id] = await service.call("push", {"aor": ALICE, "call_id": call_id})
            except ControlError as exc:
                outcomes[call_id] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "first")
            await trio.sleep(0.1)
            nursery.start_soon(call, "second")
            await trio.sleep(0.1)
            await service.call("cancel", {"call_id": "first"})
            await trio.sleep(5)  # the push completes although its caller hung up
            service.on_registered(registered(ALICE, [apple_device()]))
    assert isinstance(outcomes["first"], Cancelled)
    assert outcomes["second"]["pushes"][0]["outcome"] == "delivered"


async def test_overloaded_answers_at_once_and_sends_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pusher = FakePusher()
    store = store_with(apple_device(), apple_device("carol@example.com"))
    async with running_service(store, pusher, max_waiting=1) as service:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(service.call, "push", {"aor": ALICE})
            await trio.sleep(1)
            with pytest.raises(Overloaded) as info:
                await service.call("push", {"aor": "carol@example.com"})
            assert info.value.code == -32004
            assert len(pusher.sent) == 1
            service.on_registered(registered(ALICE, [apple_device()]))


async def test_shutdown_answers_waiting_pushes(autojump_clock: trio.testing.MockClock) -> None:
    errors: list[ControlError] = []
    async with running_service(store_with(apple_device())) as service:

        async def call() -> None:
            try:
                await service.call("push", {"aor": ALICE})
            except ShuttingDown as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            nursery.start_soon(call)
            await trio.sleep(1)
            assert service.shutdown() == 2
        with pytest.raises(ShuttingDown):
            await service.call("push", {"aor": ALICE})
    assert [e.code for e in errors] == [-32005, -32005]


async def test_service_not_running_refuses_waiting_pushes() -> None:
    service = Service(store_with(apple_device()), FakePusher(), Waiters(), {})
    with pytest.raises(ShuttingDown):
        await service.call("push", {"aor": ALICE})


# --- wait=false and Kazoo push_req --------------------------------------------------------------


async def test_push_without_wait_answers_pushed() -> None:
    pusher = FakePusher()
    async with running_service(store_with(apple_device()), pusher) as service:
        result = await service.call("push", {"aor": ALICE, "wait": False})
    assert result["status"] == "pushed"
    assert result["pushes"][0]["outcome"] == "delivered"
    assert service.waiters.waiting == 0


async def test_kazoo_push_req_without_aor_pushes_the_token() -> None:
    pusher = FakePusher()
    params = {
        "Token-ID": APPLE_TOKEN_2,
        "Token-Type": "apple",
        "Token-App": "com.example.phone.dev",
        "Call-ID": "kz-1",
        "Alert-Key": "IC_SIL",
        "Alert-Params": ["Bob"],
        "Sound": "ring.caf",
        "Payload": {"extra": 1},
    }
    async with running_service(store_with(), pusher) as service:
        result = await service.call("push", params)
    assert result["status"] == "pushed"
    (sent,) = pusher.sent
    assert sent.device.token == APPLE_TOKEN_2
    assert sent.device.sandbox is True
    assert sent.device.app == "com.example.phone"
    assert sent.message.call_id == "kz-1"
    assert sent.message.alert_key == "IC_SIL"
    assert sent.message.alert_params == ("Bob",)
    assert sent.message.sound == "ring.caf"
    assert sent.message.payload == {"extra": 1}


async def test_kazoo_push_req_with_aor_waits(autojump_clock: trio.testing.MockClock) -> None:
    pusher = FakePusher()
    params = {
        "aor": ALICE,
        "Token-ID": APPLE_TOKEN_2,
        "Token-Type": "ios",
        "Token-App": "com.example.phone",
    }
    async with running_service(store_with(apple_device()), pusher) as service:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(register_after, service, 2.0)
            result = await service.call("push", params)
    assert result["status"] == "registered"
    assert [s.device.token for s in pusher.sent] == [APPLE_TOKEN_2]


@pytest.mark.parametrize(
    "params",
    [
        {"Token-ID": APPLE_TOKEN, "Token-Type": "pager", "Token-App": "x"},
        {"Token-ID": APPLE_TOKEN, "Token-Type": "apple"},
        {"Token-ID": "", "Token-Type": "apple", "Token-App": "x"},
        {"Token-ID": APPLE_TOKEN, "Token-Type": "apple", "Token-App": "x", "Payload": [1]},
        {"aor": ALICE, "wait": "yes"},
        {"aor": ["x"]},
        {},
    ],
)
async def test_bad_push_params(params: dict[str, Any]) -> None:
    async with running_service(store_with(apple_device())) as service:
        with pytest.raises(InvalidParams):
            await service.call("push", params)


# --- the admin methods ----------------------------------------------------------------------------


async def test_unknown_method_and_non_object_params() -> None:
    async with running_service() as service:
        with pytest.raises(MethodNotFound) as info:
            await service.call("reboot", {})
        assert info.value.code == -32601
        with pytest.raises(InvalidParams):
            await service.call("status", [1, 2])


async def test_devices_list_masks_tokens_and_contacts() -> None:
    fcm = fcm_device()
    store = store_with(apple_device(), fcm)
    async with running_service(store) as service:
        result = await service.call("devices.list", {})
        only = await service.call("devices.list", {"aor": "bob@example.com"})
    text = json.dumps(result)
    assert APPLE_TOKEN not in text
    assert FCM_TOKEN not in text
    assert [d["aor"] for d in result["devices"]] == [ALICE, "bob@example.com"]
    alice = result["devices"][0]
    assert set(alice) == {
        "aor",
        "device_id",
        "type",
        "app",
        "token",
        "sandbox",
        "push_type",
        "state",
        "reason",
        "user_agent",
        "contact",
        "last_registered",
    }
    assert alice["token"] == mask_token(APPLE_TOKEN)
    assert alice["state"] == "valid"
    assert alice["reason"] is None
    assert alice["last_registered"] == 1_700_000_000.0
    assert f"pn-prid={mask_token(APPLE_TOKEN)}" in alice["contact"]
    assert [d["device_id"] for d in only["devices"]] == [fcm.device_id]


async def test_devices_remove() -> None:
    store = store_with(apple_device(instance="<urn:1>"), apple_device(token=APPLE_TOKEN_2))
    async with running_service(store) as service:
        assert await service.call("devices.remove", {"aor": ALICE, "token": APPLE_TOKEN_2}) == {
            "removed": 1
        }
        assert await service.call("devices.remove", {"aor": ALICE}) == {"removed": 1}
        with pytest.raises(InvalidParams):
            await service.call("devices.remove", {})
    assert store.devices(ALICE) == []


async def test_apps_add_list_remove_never_return_secrets() -> None:
    store = MemoryStore()
    async with running_service(store) as service:
        added = await service.call("apps.add", {"app": unstructure_app(apple_app())})
        await service.call("apps.add", {"app": unstructure_app(firebase_app())})
        listed = await service.call("apps.list", {})
        with pytest.raises(InvalidParams):
            await service.call("apps.add", {"app": {"app_id": "x", "type": "apple"}})
        assert await service.call("apps.remove", {"app_id": "phone-fcm"}) == {"removed": True}
        assert await service.call("apps.remove", {"app_id": "phone-fcm"}) == {"removed": False}
    assert added["app_id"] == "com.example.phone"
    assert "SECRET" not in json.dumps(added) + json.dumps(listed)
    assert [a["auth"] for a in listed["apps"]] == ["certificate", "service-account"]
    assert listed["apps"][1]["project_id"] == "phone-project"
    assert store.apps()["com.example.phone"].auth.pem == PEM_SECRET  # type: ignore[union-attr]


async def test_config_get_set_set_json_delete() -> None:
    store = MemoryStore()
    async with running_service(store) as service:
        mapping = {"regex": "^MyApp", "properties": {"Token-ID": "pn-tok"}}
        await service.call("config.set_json", {"key": "User-Agents.MyApp", "value": mapping})
        await service.call("config.set", {"key": "User-Agents.MyApp.regex", "value": "^Other"})
        got = await service.call("config.get", {"key": "User-Agents.MyApp"})
        everything = await service.call("config.get", {})
        with pytest.raises(InvalidParams):
            await service.call("config.set", {"key": "x", "value": {"not": "a string"}})
        with pytest.raises(InvalidParams) as info:
            await service.call("config.get", {"key": "Missing"})
        assert "no config key Missing" in info.value.message
        assert await service.call("config.delete", {"key": "User-Agents.MyApp"}) == {
            "deleted": True
        }
    assert got["value"] == {"regex": "^Other", "properties": {"Token-ID": "pn-tok"}}
    assert everything["value"]["User-Agents"]["MyApp"]["regex"] == "^Other"


async def test_mapped_token_param_is_masked_in_registered_contact(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = store_with(apple_device())
    store.set_config(
        "User-Agents", {"MyApp": {"regex": "^MyApp", "properties": {"Token-ID": "x-tok"}}}
    )
    async with running_service(store) as service:

        async def register() -> None:
            await trio.sleep(1)
            contact = "sip:alice@10.0.0.1;x-tok=SECRETTOKENVALUE12345;app-id=com.example.phone"
            service.on_registered(registered(ALICE, [], contact=contact))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(register)
            result = await service.call("push", {"aor": ALICE})
    assert "SECRETTOKENVALUE12345" not in result["contact"]
    assert "app-id=com.example.phone" in result["contact"]


async def test_status_has_the_counters_and_extra_sources() -> None:
    def extra() -> dict[str, Any]:
        return {"datagrams": {"received": 5}, "providers": {"pools": 1}}

    async with running_service(store_with(apple_device()), stats=extra) as service:
        service.on_registered(registered("nobody@example.com", []))
        await service.call("push", {"aor": ALICE, "wait": False})
        service.add_stats_source("control", lambda: {"connections": 2})
        status = await service.call("status", {})
    assert status["devices"] == 1
    assert status["waiting"] == 0
    assert status["uptime_s"] >= 0
    assert status["datagrams"] == {"received": 5}
    assert status["registrations"] == 1
    assert status["pushes"]["delivered"] == 1
    assert status["providers"] == {"pools": 1}
    assert status["control"] == {"connections": 2}
    assert status["latency_ms"]["push_out"]["count"] == 1


async def test_named_stats_sources_and_sniffer_datagrams() -> None:
    store = store_with()
    service = Service(store, FakePusher(), None, None, {"sniffer": lambda: {"received": 3}})
    status = await service.call("status")
    assert status["sniffer"] == {"received": 3}
    assert status["datagrams"] == {"received": 3}


async def test_one_log_line_per_push_with_masked_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pusher_trio.service")
    async with running_service(store_with(apple_device())) as service:
        await service.call("push", {"aor": ALICE, "call_id": "log-1", "wait": False})
    lines = [r for r in caplog.records if r.getMessage().startswith("push ")]
    assert len(lines) == 1
    message = lines[0].getMessage()
    assert "call_id=log-1" in message
    assert f"aor={ALICE}" in message
    assert "outcome=delivered" in message
    assert APPLE_TOKEN not in message
    assert mask_token(APPLE_TOKEN) in message


def test_mask_contact_masks_token_params_and_encoded_tokens() -> None:
    contact = "<sip:a@h;pn-prid=0123456789abcdef0123;PN-TOK=zzzzzzzzzzzzzzzzzzzz;x=1>"
    masked = mask_contact(contact)
    assert "0123456789abcdef0123" not in masked
    assert "zzzzzzzzzzzzzzzzzzzz" not in masked
    assert ";x=1" in masked
    encoded = mask_contact(
        "sip:a@h;tok=abc%3Adefghijklmnopqrstu", tokens=["abc:defghijklmnopqrstu"]
    )
    assert "defghijklmnopqrstu" not in encoded


async def test_a_later_request_keeps_the_shared_push_going_past_the_first_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pusher = FakePusher(delay=8.0)
    outcomes: dict[str, Any] = {}
    async with running_service(store_with(apple_device()), pusher) as service:

        async def call(call_id: str, seconds: float) -> None:
            try:
                outcomes[call_id] = await service.call(
                    "push", {"aor": ALICE, "call_id": call_id, "timeout": seconds}
                )
            except Timeout as exc:
                outcomes[call_id] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "short", 5)
            await trio.sleep(1)
            nursery.start_soon(call, "long", 20)
            await trio.sleep(9)  # t=10: the push finished at t=8
            assert isinstance(outcomes["short"], Timeout)
            assert outcomes["short"].data["reason"] == "the push did not complete"
            service.on_registered(registered(ALICE, [apple_device()]))
    assert outcomes["long"]["pushes"][0]["outcome"] == "delivered"
    assert len(pusher.sent) == 1


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("alice@example.com", "alice@example.com"),
        ("sip:alice@Example.COM", "alice@example.com"),
        ("<sips:alice@example.com:5061;transport=tls>", "alice@example.com"),
        ("sip:al%69ce@example.com?x=y", "alice@example.com"),
        ("sip:alice@[2001:db8::1]", "alice@[2001:db8::1]"),
        ("  alice@example.com  ", "alice@example.com"),
    ],
)
def test_normalize_aor(given: str, expected: str) -> None:
    assert normalize_aor(given) == expected


async def test_registered_result_names_the_fresh_binding(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Kamailio relays to this binding only (DESIGN §12): Call-ID + CSeq, instance, address."""
    device = apple_device()
    event = attrs.evolve(
        registered(ALICE, [device], contact=f"sip:alice@192.0.2.7:5071;pn-prid={APPLE_TOKEN}"),
        call_id="reg-9",
        cseq=12,
        instance="urn:uuid:1",
    )
    bare = registered(ALICE, [device], contact="sip:alice@192.0.2.8")
    results = []
    async with running_service(store_with(device), FakePusher()) as service:
        for ev in (event, bare):

            async def wake(ev: Any = ev) -> None:
                await trio.sleep(1)
                service.on_registered(ev)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wake)
                results.append(await service.call("push", {"aor": ALICE}))
    assert results[0]["binding"] == {
        "call_id": "reg-9",
        "cseq": 12,
        "instance": "urn:uuid:1",
        "address": "192.0.2.7:5071",
    }
    assert results[1]["binding"] == {
        "call_id": "",
        "cseq": 0,
        "instance": "",
        "address": "192.0.2.8:5060",
    }
