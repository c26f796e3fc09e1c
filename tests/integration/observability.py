"""A sidecar with /metrics on, the real provider pools, the APNs/FCM stand-ins, and a push storm.

Shared by the metrics, Prometheus and Homer tests: `observed_sidecar(folder, **config)`
runs it; `push_storm(world, ...)` makes pushes of every kind at once and returns what
each request answered, so the tests can compare what the sidecar exported with it.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from pusher_trio.app import Running, run
from pusher_trio.config import MetricsConfig
from pusher_trio.control import jsonrpc
from pusher_trio.control.client import ControlClient, open_control
from pusher_trio.demo import Mirror, Phone, local_config
from pusher_trio.model import App
from pusher_trio.providers import load_apple_cert, load_service_account
from pusher_trio.standins.certs import Authority
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
    tokens: list[str] = attrs.field(factory=list)  # every token the phones used

    @property
    def metrics_url(self) -> str:
        assert self.running.metrics is not None
        return f"http://127.0.0.1:{self.running.metrics[1]}/metrics"

    async def scrape(self) -> str:
        """GET /metrics from a thread: the server asks the trio thread for its snapshot."""

        def get() -> str:
            with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
                assert response.status == 200
                return str(response.read().decode("utf-8"))

        return await trio.to_thread.run_sync(get)

    async def device(self, aor: str, **want: Any) -> dict[str, Any]:
        """The first record of `aor` whose fields equal `want`, once the sniffer stored it."""
        with trio.fail_after(5):
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


@asynccontextmanager
async def observed_sidecar(
    folder: Path, *, wait_timeout: float = 5, **config: Any
) -> AsyncIterator[World]:
    """The sidecar (app.run, real providers) with /metrics on 127.0.0.1, and both stand-ins."""
    authority = Authority()
    ca_file = authority.write_ca(folder / "ca.pem")
    wake: dict[str, Phone] = {}
    holder: dict[str, Mirror] = {}

    def delivered(token: str, headers: Any, payload: Any) -> None:
        phone = wake.get(token)
        if phone is not None:
            holder["mirror"].send(phone, phone.register(600))

    apns = FakeApns(authority=authority, topics={BUNDLE}, on_delivered=delivered)
    fcm = FakeFcm(authority=authority, on_delivered=delivered)
    cfg = attrs.evolve(
        local_config(folder, tcp="", wait_timeout=wait_timeout, ca_file=ca_file),
        metrics=MetricsConfig(listen="127.0.0.1:0"),
        **config,
    )
    async with trio.open_nursery() as nursery:
        apns_port = await nursery.start(apns.serve)
        await nursery.start(fcm.serve)
        stopped = trio.Event()

        async def sidecar(*, task_status: trio.TaskStatus[Running]) -> None:
            try:
                await run(cfg, task_status=task_status, handle_signals=False)
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


@attrs.define
class Storm:
    """What the storm's requests answered, by result name, and the pushes sent per provider."""

    results: Counter[str] = attrs.field(factory=Counter)
    pushed: Counter[tuple[str, str]] = attrs.field(factory=Counter)  # (provider, outcome)
    call_ids: dict[str, str] = attrs.field(factory=dict)  # call id -> result


async def push_storm(
    world: World, *, waking: int, sleeping: int, dead: int = 1, prefix: str = ""
) -> Storm:
    """Pushes at once: `waking` phones per provider that register on the push, `sleeping`
    iOS phones that never do (Timeout after 1 s), `dead` iOS tokens that answer 410, and
    one AOR nobody registered (NoPushTarget)."""
    storm = Storm()
    calls: list[tuple[str, str, float]] = []  # (aor, call id, timeout)
    for i in range(waking):
        for make, provider in ((ios, "apple"), (android, "firebase")):
            phone, token = make(f"{prefix}wake-{provider}-{i}")
            world.tokens.append(token)
            world.wake[token] = phone
            world.mirror.send(phone, phone.register(600))
            calls.append((phone.aor, f"{prefix}storm-{provider}-{i}@test", 5.0))
    for i in range(sleeping):
        phone, token = ios(f"{prefix}sleep-{i}")
        world.tokens.append(token)
        world.mirror.send(phone, phone.register(600))
        calls.append((phone.aor, f"{prefix}storm-sleep-{i}@test", 1.0))
    for i in range(dead):
        phone, token = ios(f"{prefix}dead-{i}")
        world.tokens.append(token)
        world.mirror.send(phone, phone.register(600))
        world.apns.unregister(token)
        calls.append((phone.aor, f"{prefix}storm-dead-{i}@test", 5.0))
    calls.append((f"{prefix}nobody@example.com", f"{prefix}storm-nobody@test", 1.0))
    for aor, _, _ in calls[:-1]:
        await world.device(aor)

    async def one(aor: str, call_id: str, seconds: float) -> None:
        assert world.running.control_socket is not None
        async with open_control(world.running.control_socket) as client:
            try:
                result = await client.call(
                    "push", {"aor": aor, "call_id": call_id, "timeout": seconds}
                )
                name = str(result["status"])
                pushes = result["pushes"]
            except jsonrpc.ControlError as exc:
                name = type(exc).__name__
                data = exc.data if isinstance(exc.data, dict) else {}
                pushes = data.get("pushes", [])
        storm.results[name] += 1
        storm.call_ids[call_id] = name
        for push in pushes:
            storm.pushed[push["type"], push["outcome"]] += 1

    async with trio.open_nursery() as nursery:
        for aor, call_id, timeout in calls:
            nursery.start_soon(one, aor, call_id, timeout)
    return storm
