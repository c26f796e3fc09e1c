"""The real service (app.run) on temporary sockets: sniffer copies in, JSON-RPC push out.

A scripted in-process pusher stands for the provider pools here (it answers like
APNs would and "wakes" the phone on delivery); tests/integration/test_app_standins.py
runs the same flow through the real providers and the HTTP/2 stand-ins.
"""

from __future__ import annotations

import json
import secrets
import socket
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import sip
from pusher_trio.app import Running, run
from pusher_trio.control import jsonrpc
from pusher_trio.control.client import ControlClient, control_client, open_control
from pusher_trio.demo import Mirror, Phone, local_config
from pusher_trio.model import (
    App,
    AppleCertAuth,
    Delivered,
    Device,
    Outcome,
    PushMessage,
    TokenInvalid,
)
from pusher_trio.store import unstructure_app

BUNDLE = "org.example.phone"
TEAM = "TEAM123456"


@attrs.define
class ScriptedPusher:
    """A `model.Pusher`: records each push, answers `outcome`, calls `on_push` (a phone waking)."""

    outcome: Outcome = attrs.field(factory=Delivered)
    on_push: Callable[[Device], None] | None = None
    delay: float = 0.0
    sent: list[tuple[str, str, PushMessage]] = attrs.field(factory=list)

    async def send(
        self, app: App, device: Device, message: PushMessage, *, expires_at: float
    ) -> Outcome:
        if self.delay:
            await trio.sleep(self.delay)
        self.sent.append((app.app_id, device.token, message))
        if self.on_push is not None:
            self.on_push(device)
        return self.outcome

    async def aclose(self) -> None:
        return None


@attrs.define
class Sidecar:
    running: Running
    pusher: ScriptedPusher
    admin: ControlClient
    mirror: Mirror
    nursery: trio.Nursery

    async def rpc(self, method: str, params: dict[str, Any]) -> Any:
        return await self.admin.call(method, params)

    def kamailio(self) -> AbstractAsyncContextManager[ControlClient]:
        """A connection as Kamailio's janssonrpcc makes it (TCP)."""
        assert self.running.control_tcp is not None
        return open_control("{}:{}".format(*self.running.control_tcp))

    async def devices(self, aor: str) -> list[dict[str, Any]]:
        result = await self.rpc("devices.list", {"aor": aor})
        return list(result["devices"])

    async def wait_device(self, aor: str, **want: Any) -> dict[str, Any]:
        with trio.fail_after(3):
            while True:
                for device in await self.devices(aor):
                    if all(device.get(k) == v for k, v in want.items()):
                        return device
                await trio.sleep(0.005)


def ios_phone(user: str = "alice", token: str | None = None) -> Phone:
    token = token or secrets.token_hex(32)
    return Phone(
        "iOS",
        user,
        "198.51.100.7",
        50600 + secrets.randbelow(1000),
        f"pn-provider=apns;pn-prid={token};pn-param={TEAM}.{BUNDLE}.voip",
        "TestPhone/1.0",
    )


def token_of(phone: Phone) -> str:
    return phone.contact_params.split("pn-prid=")[1].split(";")[0]


@pytest.fixture
async def sidecar(tmp_path: Path) -> AsyncIterator[Sidecar]:
    pusher = ScriptedPusher()
    async with trio.open_nursery() as nursery:
        running: Running = await nursery.start(
            lambda task_status: run(
                local_config(tmp_path, wait_timeout=5),
                task_status=task_status,
                handle_signals=False,
                pusher=pusher,
            )
        )
        assert running.control_socket is not None
        async with open_control(running.control_socket) as admin:
            app = App(BUNDLE, "apple", AppleCertAuth(pem="not used by the scripted pusher"))
            await admin.call("apps.add", {"app": unstructure_app(app)})
            mirror = Mirror(running.sniffer[0])
            try:
                yield Sidecar(running, pusher, admin, mirror, nursery)
            finally:
                mirror.close()
        running.shutdown()


async def until(predicate: Callable[[], object]) -> None:
    """Poll a condition of the running service (there is no event to wait on from outside)."""
    with trio.fail_after(2):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.005)


def send_raw(sidecar: Sidecar, *datagrams: bytes) -> None:
    send_raw_to(sidecar.running.sniffer[0], *datagrams)


def send_raw_to(address: tuple[str, int], *datagrams: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for data in datagrams:
            sock.sendto(data, address)


async def test_started_reports_bound_addresses(sidecar: Sidecar, tmp_path: Path) -> None:
    running = sidecar.running
    assert running.sniffer_port > 0
    assert running.control_port is not None and running.control_port > 0
    assert running.control_socket == str(tmp_path / "run" / "control.sock")
    assert (tmp_path / "state" / "pusher.db").exists()  # parent folders created
    assert oct((tmp_path / "run" / "control.sock").stat().st_mode & 0o777) == oct(0o660)


async def test_learns_token_from_hep_copies(sidecar: Sidecar) -> None:
    with trio.fail_after(5):
        phone = ios_phone()
        sidecar.mirror.send(phone, phone.register(600))
        device = await sidecar.wait_device(phone.aor)
        token = token_of(phone)
        assert device["type"] == "apple"
        assert device["app"] == BUNDLE
        assert device["push_type"] == "voip"
        assert device["state"] == "valid"
        assert device["token"] == f"{token[:6]}…{token[-4:]}"
        assert token not in json.dumps(device, ensure_ascii=False)


async def test_learns_token_from_raw_sip_copies(sidecar: Sidecar) -> None:
    with trio.fail_after(5):
        phone = ios_phone("carol")
        send_raw(sidecar, *phone.register(600))
        device = await sidecar.wait_device(phone.aor)
        assert device["app"] == BUNDLE


async def test_push_and_wake(sidecar: Sidecar) -> None:
    with trio.fail_after(5):
        phone = ios_phone()
        sidecar.mirror.send(phone, phone.register(600))
        await sidecar.wait_device(phone.aor)
        sidecar.mirror.send(phone, phone.register(0))  # asleep
        sidecar.pusher.on_push = lambda device: sidecar.mirror.send(phone, phone.register(600))
        async with sidecar.kamailio() as kamailio:
            result = await kamailio.call(
                "push", {"aor": phone.aor, "call_id": "call-1", "caller_number": "100"}
            )
        assert result["status"] == "registered"
        assert result["aor"] == phone.aor
        assert isinstance(result["waited_ms"], int)
        assert "sip:alice@198.51.100.7" in result["contact"]
        assert token_of(phone) not in json.dumps(result, ensure_ascii=False)
        assert [s[1] for s in sidecar.pusher.sent] == [token_of(phone)]
        assert sidecar.pusher.sent[0][2].call_id == "call-1"
        status = await sidecar.rpc("status", {})
        assert status["pushes"]["delivered"] == 1
        assert status["devices"] == 1


async def test_push_timeout(sidecar: Sidecar) -> None:
    with trio.fail_after(5):
        phone = ios_phone()
        sidecar.mirror.send(phone, phone.register(600))
        await sidecar.wait_device(phone.aor)
        with pytest.raises(jsonrpc.Timeout) as info:
            await sidecar.rpc("push", {"aor": phone.aor, "call_id": "c-t", "timeout": 0.2})
        assert info.value.code == -32002


async def test_no_push_target(sidecar: Sidecar) -> None:
    with trio.fail_after(5), pytest.raises(jsonrpc.NoPushTarget):
        await sidecar.rpc("push", {"aor": "nobody@example.com"})


async def test_cancel_ends_only_that_call(sidecar: Sidecar) -> None:
    with trio.fail_after(5):
        phone = ios_phone()
        sidecar.mirror.send(phone, phone.register(600))
        await sidecar.wait_device(phone.aor)
        outcomes: dict[str, Any] = {}

        async def call(client: ControlClient, call_id: str) -> None:
            try:
                outcomes[call_id] = await client.call(
                    "push", {"aor": phone.aor, "call_id": call_id, "timeout": 3}
                )
            except jsonrpc.ControlError as exc:
                outcomes[call_id] = exc

        async with (
            sidecar.kamailio() as first,
            sidecar.kamailio() as second,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(call, first, "call-a")
            nursery.start_soon(call, second, "call-b")
            await until(lambda: sidecar.running.waiters.waiting >= 2)
            assert await sidecar.rpc("cancel", {"call_id": "call-a"}) == {"cancelled": 1}
            assert await sidecar.rpc("cancel", {"call_id": "unknown"}) == {"cancelled": 0}
            await trio.sleep(0.05)
            assert "call-b" not in outcomes  # still waiting
            sidecar.mirror.send(phone, phone.register(600))
        assert isinstance(outcomes["call-a"], jsonrpc.Cancelled)
        assert outcomes["call-a"].code == -32006
        assert outcomes["call-b"]["status"] == "registered"


async def test_two_calls_one_aor_share_one_push(sidecar: Sidecar) -> None:
    with trio.fail_after(5):
        phone = ios_phone()
        sidecar.mirror.send(phone, phone.register(600))
        await sidecar.wait_device(phone.aor)
        sidecar.pusher.delay = 0.05
        results: list[Any] = []

        async def call(client: ControlClient, call_id: str) -> None:
            results.append(await client.call("push", {"aor": phone.aor, "call_id": call_id}))

        async with (
            sidecar.kamailio() as one,
            sidecar.kamailio() as two,
            trio.open_nursery() as nursery,
        ):
            for i, client in enumerate((one, two)):
                nursery.start_soon(call, client, f"call-{i}")
            await until(lambda: sidecar.running.waiters.waiting >= 2)
            await until(lambda: sidecar.pusher.sent)
            sidecar.mirror.send(phone, phone.register(600))
        assert [r["status"] for r in results] == ["registered", "registered"]
        assert len(sidecar.pusher.sent) == 1


async def test_token_invalid_marks_the_device_and_register_revives_it(sidecar: Sidecar) -> None:
    with trio.fail_after(5):
        phone = ios_phone()
        sidecar.mirror.send(phone, phone.register(600))
        await sidecar.wait_device(phone.aor)
        sidecar.pusher.outcome = TokenInvalid("Unregistered")
        with pytest.raises(jsonrpc.PushRejected) as info:
            await sidecar.rpc("push", {"aor": phone.aor, "call_id": "c-410"})
        assert token_of(phone) not in json.dumps(info.value.data, ensure_ascii=False)
        device = await sidecar.wait_device(phone.aor, state="invalid")
        assert device["reason"] == "Unregistered"
        with pytest.raises(jsonrpc.NoPushTarget):
            await sidecar.rpc("push", {"aor": phone.aor, "call_id": "c-again"})
        sidecar.mirror.send(phone, phone.register(600))
        await sidecar.wait_device(phone.aor, state="valid")


async def test_unauthenticated_register_changes_nothing(sidecar: Sidecar) -> None:
    with trio.fail_after(5):
        phone = ios_phone("dave")
        register, _ok = phone.register(600)
        challenge = (
            b"SIP/2.0 401 Unauthorized\r\n"
            + b"".join(
                line + b"\r\n"
                for line in register.split(b"\r\n")
                if line.split(b":")[0] in (b"Via", b"From", b"To", b"Call-ID", b"CSeq")
            )
            + b'WWW-Authenticate: Digest realm="example.com", nonce="abc"\r\n'
            + b"Content-Length: 0\r\n\r\n"
        )
        send_raw(sidecar, register, challenge)
        lone = ios_phone("erin")
        send_raw(sidecar, lone.register(600)[0])  # a REGISTER never answered
        await trio.sleep(0.2)
        assert await sidecar.devices(phone.aor) == []
        assert await sidecar.devices(lone.aor) == []
        # A known device is not overwritten by a challenged REGISTER with another token.
        sidecar.mirror.send(phone, phone.register(600))
        before = await sidecar.wait_device(phone.aor)
        spoof = attrs.evolve(phone, contact_params=ios_phone(token="ab" * 32).contact_params)
        spoofed_register, _ = spoof.register(600)
        send_raw(sidecar, spoofed_register)
        await trio.sleep(0.2)
        assert await sidecar.devices(phone.aor) == [before]


async def test_bad_datagrams_and_control_messages_leave_it_serving(sidecar: Sidecar) -> None:
    with trio.fail_after(5):
        send_raw(
            sidecar,
            b"",
            b"\x00\xff" * 100,
            b"HEP3\x00\x10garbage-garbage",
            b"REGISTER sip:x SIP/2.0\r\nCSeq: banana\r\n\r\n",
            b"OPTIONS sip:x SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n",
            sip.encode_hep(b"not sip at all", src=("127.0.0.1", 1), dst=("127.0.0.1", 2)),
        )
        assert sidecar.running.control_tcp is not None
        # broken framing: one error reply with id null, then that connection closes
        broken = await trio.open_tcp_stream(*sidecar.running.control_tcp)
        await broken.send_all(b"xyz:{},")
        reply = await broken.receive_some(4096)
        assert b'"id":null' in reply and b"-32700" in reply
        # bad JSON inside a good frame: -32700, and the connection stays
        raw = await trio.open_tcp_stream(*sidecar.running.control_tcp)
        await raw.send_all(jsonrpc.encode_netstring(b"{not json"))
        response = await raw_reply(raw)
        assert response.error is not None and response.error.code == -32700
        async with control_client(raw) as client:
            assert "uptime_s" in await client.call("status", {})
            with pytest.raises(jsonrpc.MethodNotFound):
                await client.call("no.such.method", {})
            with pytest.raises(jsonrpc.InvalidParams):
                await client.call("push", {"aor": "a@b", "timeout": -1})
            await broken.aclose()
            # a message announced over 64 KiB: -32600 with id null, that connection closes
            big = await trio.open_tcp_stream(*sidecar.running.control_tcp)
            await big.send_all(b"70000:")
            data = b""
            while chunk := await big.receive_some(4096):
                data += chunk
            assert b'"id":null' in data and b"-32600" in data
            await big.aclose()
            # a batch gets -32600; the connection stays
            stream = await trio.open_tcp_stream(*sidecar.running.control_tcp)
            await stream.send_all(jsonrpc.encode_netstring(b"[]"))
            error = (await raw_reply(stream)).error
            assert error is not None and error.code == -32600
            async with control_client(stream) as batch:
                assert "uptime_s" in await batch.call("status", {})
            # still learning registrations
            phone = ios_phone("frank")
            sidecar.mirror.send(phone, phone.register(600))
            await sidecar.wait_device(phone.aor)
            status = await client.call("status", {})
            assert status["datagrams"]["dropped_malformed"] >= 2


async def raw_reply(stream: trio.abc.Stream) -> jsonrpc.Response:
    """Read one reply frame byte by byte (nothing of a later frame is consumed)."""
    decoder = jsonrpc.NetstringDecoder()
    while (frame := decoder.next_frame()) is None:
        decoder.feed(await stream.receive_some(1))
    return jsonrpc.parse_response(frame)


async def test_shutdown_answers_waiting_pushes(tmp_path: Path) -> None:
    pusher = ScriptedPusher()
    with trio.fail_after(8):
        async with trio.open_nursery() as nursery:
            running: Running = await nursery.start(
                lambda task_status: run(
                    local_config(tmp_path), task_status=task_status, handle_signals=False,
                    pusher=pusher,
                )
            )  # fmt: skip
            assert running.control_socket is not None
            async with open_control(running.control_socket) as admin:
                app = App(BUNDLE, "apple", AppleCertAuth(pem="x"))
                await admin.call("apps.add", {"app": unstructure_app(app)})
                mirror = Mirror(running.sniffer[0])
                phone = ios_phone()
                mirror.send(phone, phone.register(600))
                mirror.close()
                await until(lambda: running.store.devices(phone.aor))
                errors: list[Exception] = []

                async def wait_push() -> None:
                    try:
                        await admin.call("push", {"aor": phone.aor, "call_id": "c-down"})
                    except jsonrpc.ControlError as exc:
                        errors.append(exc)

                async with trio.open_nursery() as waiting:
                    waiting.start_soon(wait_push)
                    await until(lambda: running.waiters.waiting >= 1)
                    started = trio.current_time()
                    running.shutdown()
        assert trio.current_time() - started < 5
        assert len(errors) == 1 and isinstance(errors[0], jsonrpc.ShuttingDown)
        assert errors[0].code == -32005


async def test_reload_applies_push_limits_and_sniffer_rules(sidecar: Sidecar) -> None:
    with trio.fail_after(5):
        running = sidecar.running
        new = attrs.evolve(
            running.config,
            push=attrs.evolve(running.config.push, wait_timeout=3.0, max_waiting=7),
            sniffer=attrs.evolve(running.config.sniffer, allow_from=["10.0.0.0/8"]),
        )
        assert await running.reload(new) is True
        assert running.service.wait_timeout == 3.0
        assert running.waiters.max_waiting == 7
        # the sniffer was restarted with the new rule: loopback copies are now refused
        mirror = Mirror(running.sniffer[0])
        phone = ios_phone("gina")
        mirror.send(phone, phone.register(600))
        mirror.close()
        await trio.sleep(0.2)
        assert await sidecar.devices(phone.aor) == []
        status = await sidecar.rpc("status", {})
        assert status["datagrams"]["dropped_not_allowed"] >= 2


async def test_metrics_endpoint_exports_the_status_counters(tmp_path: Path) -> None:
    from pusher_trio.config import MetricsConfig

    config = attrs.evolve(local_config(tmp_path), metrics=MetricsConfig(listen="127.0.0.1:0"))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            running: Running = await nursery.start(
                lambda task_status: run(
                    config, task_status=task_status, handle_signals=False,
                    pusher=ScriptedPusher(),
                )
            )  # fmt: skip
            assert running.metrics_port is not None and running.metrics_port > 0
            send_raw_to(running.sniffer[0], b"garbage")
            await until(lambda: running.service.status()["datagrams"].get("received"))
            url = f"http://127.0.0.1:{running.metrics_port}/metrics"

            def get() -> str:
                with urllib.request.urlopen(url, timeout=5) as response:
                    return str(response.read().decode())

            lines = (await trio.to_thread.run_sync(get)).splitlines()
            assert "pusher_devices 0.0" in lines
            assert "pusher_datagrams_received_total 1.0" in lines
            assert 'pusher_datagrams_total{outcome="dropped_malformed"} 1.0' in lines
            assert 'pusher_pushes_total{outcome="delivered",provider="apple"} 0.0' in lines
            running.shutdown()


async def test_reload_starts_and_stops_the_metrics_endpoint(sidecar: Sidecar) -> None:
    from pusher_trio.config import MetricsConfig

    with trio.fail_after(5):
        running = sidecar.running
        assert running.metrics is None
        on = attrs.evolve(running.config, metrics=MetricsConfig(listen="127.0.0.1:0"))
        assert await running.reload(on) is True
        assert running.metrics_port is not None
        stream = await trio.open_tcp_stream("127.0.0.1", running.metrics_port)
        await stream.send_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        assert (await stream.receive_some(100)).startswith(b"HTTP/1.0 200")
        await stream.aclose()
        off = attrs.evolve(running.config, metrics=MetricsConfig(listen=""))
        assert await running.reload(off) is True
        assert running.metrics is None


async def test_reload_of_require_2xx_needs_no_rebind(sidecar: Sidecar) -> None:
    with trio.fail_after(5):
        running = sidecar.running
        before = list(running.sniffer)
        new = attrs.evolve(
            running.config, sniffer=attrs.evolve(running.config.sniffer, require_2xx=False)
        )
        assert await running.reload(new) is True
        assert running.sniffer == before  # same socket, same port
        phone = ios_phone("hank")
        send_raw(sidecar, phone.register(600)[0])  # the REGISTER alone now counts
        await sidecar.wait_device(phone.aor)
