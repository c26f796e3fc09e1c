"""`push` with `wait: false` through the control socket, answered without a task of its own.

The real sidecar, its provider pools and the stand-ins. The first push of a test opens
the provider connection (that one runs in a task); the pushes after it go out from the
control connection's reader and are answered from the provider connection's reader.
Each answer must be what the same request gets the usual way.
"""

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

from .observability import World, android, ios, observed_sidecar


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with observed_sidecar(tmp_path, wait_timeout=3) as world:
        yield world


async def registered(world: World, make: Any, user: str) -> tuple[str, str]:
    phone, token = make(user)
    world.mirror.send(phone, phone.register(600))
    await world.device(phone.aor)
    return phone.aor, token


async def warm(world: World, make: Any = ios) -> None:
    """One push the usual way: it opens the provider connection."""
    aor, _ = await registered(world, make, f"warm-{make.__name__}")
    result = await world.admin.call("push", {"aor": aor, "wait": False})
    assert result["status"] == "pushed"


async def without_task(world: World) -> int:
    return int((await world.admin.call("status", {}))["pushed_without_task"])


@pytest.mark.parametrize("make", [ios, android], ids=["apns", "fcm"])
async def test_pushes_to_a_warm_pool_are_answered_without_a_task(world: World, make: Any) -> None:
    with trio.fail_after(10):
        await warm(world, make)
        aor, token = await registered(world, make, "alice")
        result = await world.admin.call("push", {"aor": aor, "call_id": "c1", "wait": False})
        status = await world.admin.call("status", {})
    assert status["pushed_without_task"] == 1
    assert result["status"] == "pushed"
    (push,) = result["pushes"]
    assert push["outcome"] == "delivered" and push["reason"] is None
    assert token not in json.dumps(result)
    server = world.apns if make is ios else world.fcm
    assert [r.token for r in server.delivered][-1] == token
    assert status["requests"]["pushed"] == 2
    assert status["pushes"]["delivered"] == 2
    assert status["pushing_without_wait"] == 0
    assert status["control"]["in_flight"] <= 1  # the status call itself


async def test_a_refused_token_is_push_rejected_and_invalidates_the_record(world: World) -> None:
    with trio.fail_after(10):
        await warm(world)
        aor, token = await registered(world, ios, "bob")
        world.apns.unregister(token)
        with pytest.raises(jsonrpc.PushRejected) as info:
            await world.admin.call("push", {"aor": aor, "wait": False})
        device = await world.device(aor, state="invalid")
        status = await world.admin.call("status", {})
    assert status["pushed_without_task"] == 1
    assert info.value.data["pushes"][0]["outcome"] == "token_invalid"
    assert device["reason"].startswith("Unregistered")
    assert status["requests"]["PushRejected"] == 1


async def test_a_stalled_provider_is_timeout_and_the_connection_serves_on(world: World) -> None:
    with trio.fail_after(10):
        await warm(world)
        aor, token = await registered(world, ios, "carol")
        world.apns.script(Stall(), token=token)
        started = trio.current_time()
        with pytest.raises(jsonrpc.Timeout) as info:
            await world.admin.call("push", {"aor": aor, "wait": False, "timeout": 0.3})
        waited = trio.current_time() - started
        while world.apns.client_resets < 1:  # noqa: ASYNC110 - its stream, not the connection
            await trio.sleep(0.01)
        after, _ = await registered(world, ios, "carol2")
        result = await world.admin.call("push", {"aor": after, "wait": False})
        status = await world.admin.call("status", {})
    assert 0.3 <= waited < 2.5
    assert info.value.data == {
        "reason": "the push did not complete",
        "pushes": [
            {
                "device_id": info.value.data["pushes"][0]["device_id"],
                "type": "apple",
                "app": "org.example.phone",
                "token": info.value.data["pushes"][0]["token"],
                "outcome": "pending",
                "reason": None,
            }
        ],
    }
    assert result["status"] == "pushed" and world.apns.connections == 1
    assert status["pushed_without_task"] == 2 and status["requests"]["Timeout"] == 1
    assert status["pushing_without_wait"] == 0


async def test_a_retry_goes_on_in_a_task_and_is_answered_once(world: World) -> None:
    with trio.fail_after(10):
        await warm(world)
        aor, token = await registered(world, ios, "dave")
        world.apns.script(Answer(503, "ServiceUnavailable"), token=token, times=1)
        result = await world.admin.call("push", {"aor": aor, "wait": False})
        status = await world.admin.call("status", {})
    assert result["status"] == "pushed"
    assert [r.outcome for r in world.apns.received if r.token == token] == [
        "503 ServiceUnavailable",
        "200",
    ]
    assert status["providers"]["retries"] == 1
    assert status["pushes"]["delivered"] == 2 and status["pushes"]["retry_later"] == 0
    assert status["requests"] == {"pushed": 2}


async def test_shutdown_answers_a_stalled_push_shutting_down(world: World) -> None:
    with trio.fail_after(10):
        await warm(world)
        aor, token = await registered(world, ios, "erin")
        world.apns.script(Stall(), token=token)
        errors: list[jsonrpc.ControlError] = []

        async def call() -> None:
            assert world.running.control_socket is not None
            try:
                async with open_control(world.running.control_socket) as client:
                    await client.call("push", {"aor": aor, "wait": False})
            except jsonrpc.ControlError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            while not any(r.token == token for r in world.apns.received):  # noqa: ASYNC110
                await trio.sleep(0.005)
            world.running.shutdown()
    assert [e.code for e in errors] == [jsonrpc.ShuttingDown.code]


async def test_a_client_that_leaves_costs_nothing_but_its_answer(world: World) -> None:
    with trio.fail_after(10):
        await warm(world)
        aor, token = await registered(world, ios, "fred")
        world.apns.script(Stall(), token=token)
        assert world.running.control_socket is not None
        async with open_control(world.running.control_socket) as client:
            with trio.move_on_after(0.2):
                await client.call("push", {"aor": aor, "wait": False, "timeout": 0.5})
        while (await world.admin.call("status", {}))["control"]["in_flight"] > 1:  # noqa: ASYNC110
            await trio.sleep(0.05)  # the push ends at its deadline; nobody to tell
        other, _ = await registered(world, ios, "fred2")
        result = await world.admin.call("push", {"aor": other, "wait": False})
        status = await world.admin.call("status", {})
    assert result["status"] == "pushed"
    assert status["requests"]["Timeout"] == 1 and status["pushing_without_wait"] == 0


async def test_many_pushes_on_one_connection_get_their_own_answers(world: World) -> None:
    with trio.fail_after(20):
        await warm(world)
        phones = [await registered(world, ios, f"user{i}") for i in range(40)]
        for _aor, token in phones[::4]:
            world.apns.unregister(token)
        answers: dict[str, str] = {}

        async def one(aor: str) -> None:
            try:
                result = await world.admin.call("push", {"aor": aor, "wait": False})
                answers[aor] = result["pushes"][0]["outcome"]
            except jsonrpc.PushRejected as exc:
                answers[aor] = exc.data["pushes"][0]["outcome"]

        async with trio.open_nursery() as nursery:
            for aor, _ in phones:
                nursery.start_soon(one, aor)
        status = await world.admin.call("status", {})
    refused = {aor for aor, _ in phones[::4]}
    assert answers == {aor: "token_invalid" if aor in refused else "delivered" for aor, _ in phones}
    assert status["pushed_without_task"] == 40
