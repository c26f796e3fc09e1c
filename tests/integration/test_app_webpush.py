"""Web Push through the whole service: a browser SIP client's REGISTER (RFC 8599
`pn-provider=webpush`) is learned, `push` encrypts and signs for it, the strict stand-in
decrypts it with the browser's key, and the browser's fresh REGISTER ends the wait."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import trio

from pusher_trio.app import Running, run
from pusher_trio.control import jsonrpc
from pusher_trio.control.client import ControlClient, open_control
from pusher_trio.demo import Mirror, Phone, local_config
from pusher_trio.model import App, WebPushAuth
from pusher_trio.providers.webpush import generate_vapid_key, vapid_public_key
from pusher_trio.standins.certs import Authority
from pusher_trio.standins.fake_webpush import BrowserSubscription, FakeWebPush
from pusher_trio.store import unstructure_app

SUBJECT = "mailto:ops@example.com"


def browser_phone(user: str, browser: BrowserSubscription, *, keys: bool = True) -> Phone:
    params = f"pn-provider=webpush;pn-prid={urllib.parse.quote(browser.endpoint, safe='')}"
    if keys:
        params += f";pn-param={browser.p256dh}.{browser.auth}"
    return Phone("Browser", user, "198.51.100.9", 50602, params, "JsSIP 3.10.1")


async def wait_device(admin: ControlClient, aor: str) -> None:
    """Until the sniffer has stored the device of `aor` (the test's fail_after bounds it)."""
    while True:
        if (await admin.call("devices.list", {"aor": aor}))["devices"]:
            return
        await trio.sleep(0.005)


@pytest.mark.parametrize("keys", [True, False], ids=["encrypted", "no-payload"])
async def test_browser_is_pushed_and_its_register_ends_the_wait(tmp_path: Path, keys: bool) -> None:
    authority = Authority()
    ca_file = authority.write_ca(tmp_path / "ca.pem")
    holder: dict[str, Any] = {}

    def delivered(token: str, headers: Any, payload: Any) -> None:
        phone = holder["phone"]
        holder["mirror"].send(phone, phone.register(600))

    server = FakeWebPush(authority=authority, on_delivered=delivered)
    pem = generate_vapid_key()
    config = local_config(tmp_path, tcp="", wait_timeout=5, ca_file=ca_file)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            stopped = trio.Event()

            async def sidecar(*, task_status: trio.TaskStatus[Running]) -> None:
                try:
                    await run(config, task_status=task_status, handle_signals=False)
                finally:
                    stopped.set()

            running: Running = await nursery.start(sidecar)
            assert running.control_socket is not None
            browser = server.subscribe(vapid_public_key(pem))
            phone = holder["phone"] = browser_phone("carol", browser, keys=keys)
            mirror = holder["mirror"] = Mirror(running.sniffer[0])
            app = App("org.example.webphone", "webpush", WebPushAuth(pem, SUBJECT))
            async with open_control(running.control_socket) as admin:
                await admin.call("apps.add", {"app": unstructure_app(app)})
                mirror.send(phone, phone.register(600))
                await wait_device(admin, phone.aor)
                mirror.send(phone, phone.register(0))
                result = await admin.call("push", {"aor": phone.aor, "call_id": "c-web"})
                devices = (await admin.call("devices.list", {"aor": phone.aor}))["devices"]
            mirror.close()
            running.shutdown()
            await stopped.wait()
            nursery.cancel_scope.cancel()
    assert result["status"] == "registered"
    assert result["pushes"][0]["outcome"] == "delivered"
    assert [r.token for r in server.delivered] == [browser.endpoint]
    assert server.urgencies == ["high"] and 0 < server.ttls[0] <= 5
    if keys:
        assert server.payloads[0]["call-id"] == "c-web"
    else:
        assert server.payloads == [None]
    (device,) = devices
    assert device["type"] == "webpush"
    shown = json.dumps([result, devices])
    # The endpoint is the token and the auth secret is a secret: neither is shown.
    assert browser.endpoint not in shown and browser.auth[:-4] not in shown
    assert urllib.parse.quote(browser.endpoint, safe="") not in shown


async def test_gone_browser_subscription_is_invalidated(tmp_path: Path) -> None:
    authority = Authority()
    ca_file = authority.write_ca(tmp_path / "ca.pem")
    server = FakeWebPush(authority=authority)
    pem = generate_vapid_key()
    config = local_config(tmp_path, tcp="", wait_timeout=3, ca_file=ca_file)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            running: Running = await nursery.start(
                lambda task_status: run(config, task_status=task_status, handle_signals=False)
            )
            assert running.control_socket is not None
            browser = server.subscribe()
            phone = browser_phone("dave", browser)
            mirror = Mirror(running.sniffer[0])
            app = App("org.example.webphone", "webpush", WebPushAuth(pem, SUBJECT))
            async with open_control(running.control_socket) as admin:
                await admin.call("apps.add", {"app": unstructure_app(app)})
                mirror.send(phone, phone.register(600))
                await wait_device(admin, phone.aor)
                server.unsubscribe(browser.endpoint)
                with pytest.raises(jsonrpc.PushRejected):
                    await admin.call("push", {"aor": phone.aor, "call_id": "c-410"})
                (device,) = (await admin.call("devices.list", {"aor": phone.aor}))["devices"]
            mirror.close()
            running.shutdown()
            nursery.cancel_scope.cancel()
    assert device["state"] == "invalid" and "410" in device["reason"]
