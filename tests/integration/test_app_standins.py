"""The real service with the real provider pools against the HTTP/2 + TLS stand-ins of load/."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from pusher_trio.app import Running, run
from pusher_trio.control import jsonrpc
from pusher_trio.control.client import ControlClient, open_control
from pusher_trio.demo import Mirror, Phone, local_config
from pusher_trio.model import App
from pusher_trio.providers import load_apple_cert, load_service_account
from pusher_trio.standins.certs import Authority
from pusher_trio.standins.common import Answer, Stall
from pusher_trio.standins.fake_apns import FakeApns
from pusher_trio.standins.fake_fcm import FakeFcm
from pusher_trio.store import unstructure_app

BUNDLE = "org.example.phone"
TEAM = "TEAM123456"
PROJECT = "phone-project"


@attrs.define
class World:
    running: Running
    apns: FakeApns
    fcm: FakeFcm
    admin: ControlClient
    mirror: Mirror
    wake: dict[str, Phone] = attrs.field(factory=dict)  # token -> phone that registers on push

    async def device(self, aor: str, **want: Any) -> dict[str, Any]:
        with trio.fail_after(3):
            while True:
                for d in (await self.admin.call("devices.list", {"aor": aor}))["devices"]:
                    if all(d.get(k) == v for k, v in want.items()):
                        return dict(d)
                await trio.sleep(0.005)


def ios(user: str) -> tuple[Phone, str]:
    token = secrets.token_hex(32)
    params = f"pn-provider=apns;pn-prid={token};pn-param={TEAM}.{BUNDLE}.voip"
    return Phone("iOS", user, "198.51.100.7", 50600, params, "TestPhone/1.0"), token


def android(user: str) -> tuple[Phone, str]:
    token = "fcm:" + secrets.token_urlsafe(100)
    params = f"pn-provider=fcm;pn-prid={token};pn-param={PROJECT}"
    return Phone("Android", user, "198.51.100.8", 50601, params, "TestPhone/1.0"), token


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    authority = Authority()
    ca_file = authority.write_ca(tmp_path / "ca.pem")
    wake: dict[str, Phone] = {}
    holder: dict[str, Mirror] = {}

    def delivered(token: str, headers: Any, payload: Any) -> None:
        phone = wake.get(token)
        if phone is not None:
            holder["mirror"].send(phone, phone.register(600))

    apns = FakeApns(authority=authority, topics={BUNDLE}, on_delivered=delivered)
    fcm = FakeFcm(authority=authority, on_delivered=delivered)
    config = local_config(tmp_path, tcp="", wait_timeout=3, ca_file=ca_file)
    async with trio.open_nursery() as nursery:
        apns_port = await nursery.start(apns.serve)
        await nursery.start(fcm.serve)
        stopped = trio.Event()

        async def sidecar(*, task_status: trio.TaskStatus[Running]) -> None:
            try:
                await run(config, task_status=task_status, handle_signals=False)
            finally:
                stopped.set()

        running: Running = await nursery.start(sidecar)
        assert running.control_socket is not None
        auth, _ = load_apple_cert(apns.client_pem(BUNDLE), time.time())
        apple = App(BUNDLE, "apple", auth, host=f"127.0.0.1:{apns_port}", push_type="voip")
        account = fcm.new_service_account(PROJECT)
        firebase = App(
            "org.example.android",
            "firebase",
            load_service_account(json.dumps(account), base_url=fcm.base_url),
        )
        async with open_control(running.control_socket) as admin:
            for app in (apple, firebase):
                await admin.call("apps.add", {"app": unstructure_app(app)})
            mirror = holder["mirror"] = Mirror(running.sniffer[0])
            try:
                yield World(running, apns, fcm, admin, mirror, wake)
            finally:
                mirror.close()
            running.shutdown()
            with trio.move_on_after(5):
                await stopped.wait()
            nursery.cancel_scope.cancel()


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
