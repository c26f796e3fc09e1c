"""DESIGN §9 `[push] proxy`: every provider connection through a real forward proxy.

The proxy is Debian's tinyproxy (tests/integration/tinyproxy.py), never a hand-written
one; its log proves which CONNECTs went through it.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from pathlib import Path

import attrs
import pytest
import trio

from pusher_trio.app import Running, run
from pusher_trio.control.client import open_control
from pusher_trio.demo import local_config
from pusher_trio.model import App, AuthFailed, Delivered, Device, PushMessage, RetryLater
from pusher_trio.providers import Providers, load_apple_cert
from pusher_trio.providers.proxy import Proxy, parse_proxy_url
from pusher_trio.standins.certs import Authority
from pusher_trio.standins.fake_apns import FakeApns
from pusher_trio.standins.fake_fcm import FakeFcm
from pusher_trio.store import unstructure_app
from tests.integration.conftest_providers import (
    BUNDLE,
    apple_device,
    apple_token,
    cert_app,
    expires,
    fcm_app,
    fcm_device,
    token_app,
)
from tests.integration.tinyproxy import free_port, tinyproxy

MESSAGE = PushMessage(call_id="c-proxy", caller_number="200")
PASSWORD = "pr0xy-S3cret-never-logged"


async def test_apns_push_goes_through_the_proxy(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = FakeApns()
    with trio.fail_after(20):
        await nursery.start(server.serve)
        with tinyproxy(tmp_path, connect_ports=[server.port]) as proxy:
            async with Providers(
                ca_file=server.ca_file, proxy=parse_proxy_url(proxy.url)
            ) as providers:
                cert = await providers.send(
                    cert_app(server), apple_device(), MESSAGE, expires_at=expires()
                )
                token = await providers.send(
                    token_app(server, "com.example.other"),
                    apple_device(),
                    MESSAGE,
                    expires_at=expires(),
                )
            connects = proxy.connects()
    assert isinstance(cert, Delivered) and isinstance(token, Delivered)
    # One pool per credential, one tunnel each: both went through tinyproxy.
    assert connects == [f"CONNECT 127.0.0.1:{server.port} HTTP/1.1"] * 2
    assert server.connections == 2


async def test_fcm_push_and_oauth_exchange_go_through_the_proxy(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = FakeFcm()
    with trio.fail_after(20):
        await nursery.start(server.serve)
        with tinyproxy(
            tmp_path, connect_ports=[server.port], basic_auth=("pusher", PASSWORD)
        ) as proxy:
            async with Providers(
                ca_file=server.ca_file,
                proxy=parse_proxy_url(f"http://pusher@127.0.0.1:{proxy.port}", PASSWORD),
            ) as providers:
                outcome = await providers.send(
                    fcm_app(server), fcm_device(), MESSAGE, expires_at=expires()
                )
                exchanges = providers.statistics()["oauth_exchanges"]
            connects = proxy.connects()
    assert isinstance(outcome, Delivered), outcome
    assert exchanges == 1
    # The OAuth exchange (httpcore) and the HTTP/2 pool (transport.py): two tunnels.
    assert connects == [f"CONNECT 127.0.0.1:{server.port} HTTP/1.1"] * 2
    assert len(server.delivered) == 1


def _secret_forms() -> list[str]:
    return [PASSWORD, base64.b64encode(f"pusher:{PASSWORD}".encode()).decode()]


async def test_proxy_407_is_an_auth_failure_that_never_shows_the_password(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = FakeApns()
    with trio.fail_after(20):
        await nursery.start(server.serve)
        with tinyproxy(
            tmp_path, connect_ports=[server.port], basic_auth=("pusher", "other")
        ) as proxy:
            wrong = Proxy("127.0.0.1", proxy.port, "pusher", PASSWORD)
            app = cert_app(server)
            async with Providers(ca_file=server.ca_file, proxy=wrong) as providers:
                outcome = await providers.send(app, apple_device(), MESSAGE, expires_at=expires())
                again = await providers.send(app, apple_device(), MESSAGE, expires_at=expires())
    assert isinstance(outcome, AuthFailed), outcome
    assert f"proxy 127.0.0.1:{proxy.port}" in outcome.reason
    # RFC 9110 says 407; tinyproxy answers CONNECT with 401. Either is a refusal.
    assert re.search(r"with 40[17] ", outcome.reason)
    assert "push.proxy_password_file" in outcome.reason
    # The pool backs off after the refusal; the next push says why, still not retried.
    assert isinstance(again, AuthFailed) and re.search(r"with 40[17] ", again.reason), again
    assert server.connections == 0
    shown = caplog.text + outcome.reason + again.reason + repr(wrong)
    for secret in _secret_forms():
        assert secret not in shown


async def test_oauth_exchange_behind_a_refusing_proxy_is_an_auth_failure(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = FakeFcm()
    with trio.fail_after(20):
        await nursery.start(server.serve)
        with tinyproxy(
            tmp_path, connect_ports=[server.port], basic_auth=("pusher", "other")
        ) as proxy:
            wrong = Proxy("127.0.0.1", proxy.port, "pusher", PASSWORD)
            async with Providers(ca_file=server.ca_file, proxy=wrong) as providers:
                outcome = await providers.send(
                    fcm_app(server), fcm_device(), MESSAGE, expires_at=expires()
                )
    assert isinstance(outcome, AuthFailed), outcome
    assert "OAuth" in outcome.reason and re.search(r"with 40[17] ", outcome.reason)
    for secret in _secret_forms():
        assert secret not in caplog.text + outcome.reason


async def test_connect_to_a_port_the_proxy_forbids_is_an_auth_failure(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = FakeApns()
    with trio.fail_after(20):
        await nursery.start(server.serve)
        with tinyproxy(tmp_path, connect_ports=[443]) as proxy:
            async with Providers(
                ca_file=server.ca_file, proxy=parse_proxy_url(proxy.url)
            ) as providers:
                outcome = await providers.send(
                    cert_app(server), apple_device(), MESSAGE, expires_at=expires()
                )
    assert isinstance(outcome, AuthFailed), outcome
    assert f"CONNECT 127.0.0.1:{server.port}" in outcome.reason and "403" in outcome.reason
    assert server.connections == 0


async def test_provider_unreachable_through_the_proxy_is_retried_later(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = FakeApns()
    dead = free_port()  # nothing listens there: the proxy cannot connect
    with trio.fail_after(20):
        await nursery.start(server.serve)
        with tinyproxy(tmp_path) as proxy:
            app = attrs.evolve(cert_app(server), host=f"127.0.0.1:{dead}")
            async with Providers(
                ca_file=server.ca_file, proxy=parse_proxy_url(proxy.url)
            ) as providers:
                outcome = await providers.send(
                    app,
                    apple_device(),
                    MESSAGE,
                    expires_at=expires(1.0),
                )
    assert isinstance(outcome, RetryLater), outcome
    assert f"proxy 127.0.0.1:{proxy.port}" in outcome.reason
    assert f"CONNECT 127.0.0.1:{dead}" in outcome.reason


async def test_proxy_not_listening_is_retried_later_with_a_clear_reason(
    nursery: trio.Nursery,
) -> None:
    server = FakeApns()
    port = free_port()
    with trio.fail_after(20):
        await nursery.start(server.serve)
        async with Providers(
            ca_file=server.ca_file, proxy=parse_proxy_url(f"http://127.0.0.1:{port}")
        ) as providers:
            outcome = await providers.send(
                cert_app(server), apple_device(), MESSAGE, expires_at=expires(1.0)
            )
    assert isinstance(outcome, RetryLater), outcome
    assert f"proxy 127.0.0.1:{port}" in outcome.reason and "refused" in outcome.reason.lower()
    assert server.connections == 0


async def test_serve_with_push_proxy_in_the_config_pushes_through_it(tmp_path: Path) -> None:
    """The whole service: [push] proxy + proxy_password_file -> Providers -> tinyproxy."""
    authority = Authority()
    ca_file = authority.write_ca(tmp_path / "ca.pem")
    server = FakeApns(authority=authority, topics={BUNDLE})
    secret = tmp_path / "proxy.pw"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve)
            with tinyproxy(
                tmp_path / "proxy", connect_ports=[port], basic_auth=("pusher", PASSWORD)
            ) as proxy:
                config = local_config(
                    tmp_path,
                    tcp="",
                    ca_file=ca_file,
                    proxy=f"http://pusher@127.0.0.1:{proxy.port}",
                    proxy_password_file=str(secret),
                )
                stopped = trio.Event()

                async def sidecar(*, task_status: trio.TaskStatus[Running]) -> None:
                    try:
                        await run(config, task_status=task_status, handle_signals=False)
                    finally:
                        stopped.set()

                running: Running = await nursery.start(sidecar)
                assert running.control_socket is not None
                auth, _ = load_apple_cert(server.client_pem(BUNDLE), time.time())
                app = App(BUNDLE, "apple", auth, host=f"127.0.0.1:{port}")
                token = apple_token()
                async with open_control(running.control_socket) as admin:
                    await admin.call("apps.add", {"app": unstructure_app(app)})
                    result = await admin.call(
                        "push",
                        {"Token-ID": token, "Token-Type": "apple", "Token-App": BUNDLE},
                    )
                    status = await admin.call("status", {})
                running.shutdown()
                await stopped.wait()
                connects = proxy.connects()
            nursery.cancel_scope.cancel()
    assert result["status"] == "pushed"
    assert [p["outcome"] for p in result["pushes"]] == ["delivered"]
    assert [r.token for r in server.delivered] == [token]
    assert connects == [f"CONNECT 127.0.0.1:{port} HTTP/1.1"]
    assert status["providers"]["proxy"] == f"127.0.0.1:{proxy.port}"
    assert PASSWORD not in json.dumps(status)


@pytest.mark.parametrize("http1", [False, True], ids=["h2", "http1"])
async def test_web_push_goes_through_the_proxy(
    nursery: trio.Nursery, tmp_path: Path, http1: bool
) -> None:
    from pusher_trio.model import WebPushAuth
    from pusher_trio.providers.webpush import generate_vapid_key
    from pusher_trio.standins.fake_webpush import FakeWebPush

    server = FakeWebPush(http1=http1)
    with trio.fail_after(20):
        await nursery.start(server.serve)
        browser = server.subscribe()
        app = App("org.example.web", "webpush", WebPushAuth(generate_vapid_key(), "mailto:a@b.c"))
        device = Device(
            "carol@example.com",
            "b",
            "webpush",
            app.app_id,
            browser.endpoint,
            extra={"p256dh": browser.p256dh, "auth": browser.auth},
        )
        with tinyproxy(tmp_path, connect_ports=[server.port]) as proxy:
            async with Providers(
                ca_file=server.ca_file, proxy=parse_proxy_url(proxy.url)
            ) as providers:
                outcome = await providers.send(app, device, MESSAGE, expires_at=expires())
            connects = proxy.connects()
    assert isinstance(outcome, Delivered), outcome
    assert [p["call-id"] for p in server.payloads] == ["c-proxy"]
    # HTTP/1.1: the HTTP/2 attempt found no h2, then httpcore's tunnel: two CONNECTs.
    assert connects == [f"CONNECT 127.0.0.1:{server.port} HTTP/1.1"] * (2 if http1 else 1)
