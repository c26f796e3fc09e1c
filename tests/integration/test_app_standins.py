"""The real service with the real provider pools against the packaged HTTP/2 + TLS stand-ins."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from pusher_trio.control import jsonrpc
from pusher_trio.control.client import open_control
from pusher_trio.standins.common import Answer, Stall

from .observability import BUNDLE, World, android, ios, observed_sidecar


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with observed_sidecar(tmp_path, wait_timeout=3) as world:
        yield world


@pytest.mark.parametrize("make", [ios, android], ids=["apns", "fcm"])
async def test_push_and_wake_through_the_stand_in(world: World, make: Any) -> None:
    with trio.fail_after(10):
        phone, token = make("alice")
        world.mirror.send(phone, phone.register(600))
        await world.device(phone.aor)
        world.mirror.send(phone, phone.register(0))
        world.wake[token] = phone
        result = await world.admin.call("push", {"aor": phone.aor, "call_id": "c1"})
        assert result["status"] == "registered"
        assert result["pushes"][0]["outcome"] == "delivered"
        assert token not in json.dumps(result, ensure_ascii=False)
        server = world.apns if phone.label == "iOS" else world.fcm
        assert [r.delivered for r in server.received if r.token == token] == [True]


async def test_apns_410_invalidates_the_device(world: World) -> None:
    with trio.fail_after(10):
        phone, token = ios("bob")
        world.mirror.send(phone, phone.register(600))
        await world.device(phone.aor)
        world.apns.unregister(token)
        with pytest.raises(jsonrpc.PushRejected) as info:
            await world.admin.call("push", {"aor": phone.aor, "call_id": "c410"})
        assert info.value.code == -32003
        device = await world.device(phone.aor, state="invalid")
        assert device["reason"].startswith("Unregistered")
        status = await world.admin.call("status", {})
        assert status["pushes"]["token_invalid"] == 1


async def test_fcm_unregistered_invalidates_the_device(world: World) -> None:
    with trio.fail_after(10):
        phone, token = android("carol")
        world.mirror.send(phone, phone.register(600))
        await world.device(phone.aor)
        world.fcm.script(Answer(404, "UNREGISTERED"), token=token)
        with pytest.raises(jsonrpc.PushRejected):
            await world.admin.call("push", {"aor": phone.aor, "call_id": "c404"})
        await world.device(phone.aor, state="invalid")


async def test_a_stalled_provider_ends_as_timeout_saying_the_push_did_not_complete(
    world: World,
) -> None:
    with trio.fail_after(10):
        phone, token = ios("dave")
        world.mirror.send(phone, phone.register(600))
        await world.device(phone.aor)
        world.apns.script(Stall(), token=token)
        with pytest.raises(jsonrpc.Timeout) as info:
            await world.admin.call("push", {"aor": phone.aor, "call_id": "cs", "timeout": 0.5})
        assert "did not complete" in json.dumps(info.value.data)


async def test_shutdown_with_a_stalled_push_answers_shutting_down_within_5_s(
    world: World,
) -> None:
    with trio.fail_after(10):
        phone, token = ios("erin")
        world.mirror.send(phone, phone.register(600))
        await world.device(phone.aor)
        world.apns.script(Stall(), token=token)
        errors: list[jsonrpc.ControlError] = []

        async def call() -> None:
            assert world.running.control_socket is not None
            try:
                async with open_control(world.running.control_socket) as client:
                    await client.call("push", {"aor": phone.aor, "call_id": "cd"})
            except jsonrpc.ControlError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            with trio.fail_after(3):
                while world.running.waiters.waiting < 1:  # noqa: ASYNC110
                    await trio.sleep(0.005)
            started = trio.current_time()
            world.running.shutdown()
        assert trio.current_time() - started < 5
        assert [e.code for e in errors] == [-32005]


async def test_removing_an_app_closes_its_connection(world: World) -> None:
    with trio.fail_after(10):
        phone, _token = ios("fred")
        world.mirror.send(phone, phone.register(600))
        await world.device(phone.aor)
        result = await world.admin.call("push", {"aor": phone.aor, "wait": False})
        assert result["pushes"][0]["outcome"] == "delivered"
        await world.apns.wait_open_connections(1)
        assert await world.admin.call("apps.remove", {"app_id": BUNDLE}) == {"removed": True}
        await world.apns.wait_open_connections(0)  # the pool said GOAWAY and closed
        status = await world.admin.call("status", {})
        assert status["providers"]["pools"] == 0
