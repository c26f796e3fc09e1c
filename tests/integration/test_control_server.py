"""The control server on real UNIX and TCP sockets (DESIGN §7, §11)."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from pusher_trio.control import jsonrpc
from pusher_trio.control.client import ControlConnectionLost, open_control, parse_target
from pusher_trio.control.jsonrpc import NetstringDecoder, NoPushTarget, PushRejected
from pusher_trio.control.server import ControlServer
from pusher_trio.model import TokenInvalid
from pusher_trio.service import Service
from pusher_trio.store import MemoryStore
from pusher_trio.waiters import Waiters
from tests.unit.control.fakes import (
    APPLE_TOKEN,
    FakePusher,
    apple_app,
    apple_device,
    registered,
)

ALICE = "alice@example.com"
BOB = "bob@example.com"


@asynccontextmanager
async def control_server(
    tmp_path: Path,
    *,
    pusher: FakePusher | None = None,
    tcp: bool = True,
    socket_path: Path | None = None,
    max_waiting: int = 1000,
) -> AsyncIterator[tuple[ControlServer, Service, str, str]]:
    store = MemoryStore()
    store.put_devices([apple_device(ALICE), apple_device(BOB)])
    store.put_app(apple_app())
    service = Service(store, pusher or FakePusher(), Waiters(max_waiting), {"wait_timeout": 20})
    path = socket_path or tmp_path / "run" / "control.sock"
    server = ControlServer(service, unix_socket=str(path), tcp="127.0.0.1:0" if tcp else None)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(server.serve)
        unix = bound[0]
        tcp_target = f"{bound[1][0]}:{bound[1][1]}" if tcp else ""
        yield server, service, unix, tcp_target
        nursery.cancel_scope.cancel()


class RawConnection:
    """Bytes in, frames out: for framing tests the client would refuse to produce."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.decoder = NetstringDecoder(10 * 1024 * 1024)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def request(self, method: str, params: Any = None, id: Any = None) -> None:
        await self.send(jsonrpc.encode_request(method, params, id=id))

    async def reply(self) -> dict[str, Any]:
        while True:
            frame = self.decoder.next_frame()
            if frame is not None:
                message: dict[str, Any] = json.loads(frame)
                return message
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("connection closed")
            self.decoder.feed(data)

    async def at_eof(self) -> bool:
        try:
            return await self.stream.receive_some(65536) == b""
        except trio.BrokenResourceError:
            return True


@asynccontextmanager
async def raw(target: str) -> AsyncIterator[RawConnection]:
    address = parse_target(target)
    if isinstance(address, tuple):
        stream = await trio.open_tcp_stream(*address)
    else:
        stream = await trio.open_unix_socket(address)
    async with stream:
        yield RawConnection(stream)


async def until(condition: Callable[[], bool]) -> None:
    """Poll a counter of the server under test (the caller's fail_after bounds it)."""
    while not condition():  # noqa: ASYNC110
        await trio.sleep(0.01)


def both(unix: str, tcp: str) -> list[str]:
    return [unix, tcp]


# --- basics ----------------------------------------------------------------------------------


async def test_status_over_unix_and_tcp(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with control_server(tmp_path) as (_, _, unix, tcp):
            for target in both(unix, tcp):
                async with open_control(target) as control:
                    status = await control.call("status", {})
                    assert status["devices"] == 2
                    assert status["waiting"] == 0
                    assert "control" in status


async def test_socket_created_with_parents_and_mode_and_removed_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "control.sock"
    with trio.fail_after(10):
        async with control_server(tmp_path, socket_path=path, tcp=False) as (server, _, unix, _):
            assert unix == str(path)
            mode = os.stat(path).st_mode
            assert stat.S_ISSOCK(mode)
            assert stat.S_IMODE(mode) == 0o660
            server.shutdown()
            await trio.testing.wait_all_tasks_blocked()
        assert not path.exists()


async def test_stale_socket_is_replaced_and_a_live_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # bound, never listening: what a killed process leaves
    stale.close()
    with trio.fail_after(10):
        async with control_server(tmp_path, socket_path=path, tcp=False) as (_, _, unix, _):
            async with open_control(unix) as control:
                assert (await control.call("status"))["devices"] == 2
            second = ControlServer(Service(MemoryStore(), FakePusher()), unix_socket=str(path))
            with pytest.raises(OSError) as info:
                await second.serve()
            assert info.value.errno == errno.EADDRINUSE
            assert path.exists()  # the live server's socket was left alone


async def test_error_reply_raises_control_error_with_data(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with control_server(tmp_path) as (_, _, unix, _):
            async with open_control(unix) as control:
                with pytest.raises(NoPushTarget) as info:
                    await control.call("push", {"aor": "nobody@example.com"})
    assert info.value.code == -32001
    assert info.value.data["aor"] == "nobody@example.com"


async def test_push_wakes_over_the_socket(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with control_server(tmp_path) as (_, service, _, tcp):
            async with open_control(tcp) as control, trio.open_nursery() as nursery:

                async def register() -> None:
                    await until(lambda: service.waiters.waiting >= 1)
                    service.on_registered(registered(ALICE, [apple_device(ALICE)]))

                nursery.start_soon(register)
                result = await control.call("push", {"aor": ALICE, "call_id": "c1"})
    assert result["status"] == "registered"
    assert APPLE_TOKEN not in json.dumps(result)


# --- many requests on one connection -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["unix", "tcp"])
async def test_concurrent_requests_on_one_connection_answered_out_of_order(
    tmp_path: Path, kind: str
) -> None:
    with trio.fail_after(10):
        async with control_server(tmp_path) as (_, service, unix, tcp):
            async with raw(unix if kind == "unix" else tcp) as conn:
                await conn.request("push", {"aor": ALICE, "call_id": "c1"}, id=1)
                await conn.request("push", {"aor": BOB, "call_id": "c2"}, id=2)
                await conn.request("status", {}, id=3)
                assert (await conn.reply())["id"] == 3
                await until(lambda: service.waiters.waiting >= 2)
                service.on_registered(registered(BOB, [apple_device(BOB)]))
                second = await conn.reply()
                assert second["id"] == 2
                assert second["result"]["status"] == "registered"
                await conn.request("cancel", {"call_id": "c1"}, id="x")
                replies = {(await conn.reply())["id"]: None for _ in range(2)}
                assert set(replies) == {1, "x"}


async def test_notification_gets_no_reply(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with control_server(tmp_path) as (_, service, unix, _):
            async with raw(unix) as conn:
                await conn.request("push", {"aor": ALICE, "call_id": "c1"}, id=1)
                await until(lambda: service.waiters.waiting >= 1)
                await conn.request("cancel", {"call_id": "c1"})  # notification
                await conn.request("reboot")  # unknown method as a notification: silent
                first = await conn.reply()
                assert first["id"] == 1
                assert first["error"]["code"] == -32006
                await conn.request("status", id=2)
                assert (await conn.reply())["id"] == 2


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "rid"),
    [
        (b"{bad}", -32700, None),
        (b"[]", -32600, None),
        (b'[{"jsonrpc":"2.0","id":1,"method":"status"}]', -32600, None),
        (b'{"jsonrpc":"2.0","id":7,"method":"x"}', -32601, 7),
        (b'{"jsonrpc":"2.0","id":8,"method":"status","params":1}', -32600, 8),
        (b'{"jsonrpc":"2.0","id":9,"method":"push","params":{"aor":1}}', -32602, 9),
        (
            b'{"jsonrpc":"2.0","id":10,"method":"push","params":{"aor":"a@b","timeout":0}}',
            -32602,
            10,
        ),
    ],
)
async def test_bad_requests_get_their_error_and_the_connection_stays(
    tmp_path: Path, body: bytes, code: int, rid: Any
) -> None:
    with trio.fail_after(10):
        async with control_server(tmp_path) as (_, _, unix, _), raw(unix) as conn:
            await conn.send(jsonrpc.encode_netstring(body))
            reply = await conn.reply()
            assert reply["error"]["code"] == code
            assert reply["id"] == rid
            await conn.request("status", id="after")
            assert (await conn.reply())["id"] == "after"


@pytest.mark.parametrize(
    ("junk", "code"),
    [
        (b"hello world\r\n", -32700),
        (b"3:abcd", -32700),
        (b"12345678901234", -32700),
        (b"70000:", -32600),
        (b"999999:" + b"x" * 1000, -32600),
    ],
)
async def test_broken_framing_closes_only_that_connection(
    tmp_path: Path, junk: bytes, code: int
) -> None:
    with trio.fail_after(10):
        async with control_server(tmp_path) as (_, service, unix, tcp):
            async with open_control(tcp) as good, trio.open_nursery() as nursery:
                result: dict[str, Any] = {}

                async def wait_push() -> None:
                    result.update(await good.call("push", {"aor": ALICE, "call_id": "good"}))

                nursery.start_soon(wait_push)
                await until(lambda: service.waiters.waiting >= 1)
                async with raw(unix) as bad:
                    await bad.send(junk)
                    reply = await bad.reply()
                    assert reply == {
                        "jsonrpc": "2.0",
                        "id": None,
                        "error": {"code": code, "message": reply["error"]["message"]},
                    }
                    assert await bad.at_eof()
                assert (await good.call("status"))["waiting"] == 1
                service.on_registered(registered(ALICE, [apple_device(ALICE)]))
            assert result["status"] == "registered"


async def test_thousands_of_connections_dropped_mid_message_do_not_disturb_others(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with control_server(tmp_path) as (server, service, unix, tcp):
            async with open_control(unix) as good:
                ok = 0

                async def drop(i: int) -> None:
                    async with raw(unix if i % 2 else tcp) as conn:
                        if i % 3 == 0:
                            await conn.request("push", {"aor": BOB, "call_id": f"d{i}"}, id=i)
                        frame = jsonrpc.encode_request("status", {}, id=i)
                        await conn.send(frame[: 1 + i % (len(frame) - 1)])

                for batch in range(10):
                    async with trio.open_nursery() as nursery:
                        for i in range(batch * 200, batch * 200 + 200):
                            nursery.start_soon(drop, i)
                    assert (await good.call("status"))["uptime_s"] >= 0
                    ok += 1
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(good.call, "push", {"aor": ALICE, "call_id": "still"})
                    await until(lambda: service.waiters.group(ALICE) is not None)
                    service.on_registered(registered(ALICE, [apple_device(ALICE)]))
                # The dropped ones are all gone.
                await until(lambda: server.statistics()["connections"] <= 1)
                stats = server.statistics()
    assert ok == 10
    assert stats["connections_accepted"] >= 2001
    assert stats["dropped_mid_message"] > 1000
    assert service.waiters.waiting == 0  # the dropped connections' pushes were cancelled


async def test_a_dropped_connection_cancels_its_waits(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with control_server(tmp_path) as (_, service, unix, _):
            async with raw(unix) as conn:
                await conn.request("push", {"aor": ALICE}, id=1)
                await until(lambda: service.waiters.waiting >= 1)
            await until(lambda: service.waiters.waiting == 0)
    assert service.waiters.statistics()["left_waiting"] == 1


async def test_rejected_push_over_the_socket(tmp_path: Path) -> None:
    pusher = FakePusher({APPLE_TOKEN: TokenInvalid("Unregistered")})
    with trio.fail_after(10):
        async with control_server(tmp_path, pusher=pusher) as (_, _, unix, _):
            async with open_control(unix) as control:
                with pytest.raises(PushRejected) as info:
                    await control.call("push", {"aor": ALICE})
    assert info.value.data["reasons"] == ["Unregistered"]


class BrokenStartPusher(FakePusher):
    """A pusher whose task-less start has a bug: it raises."""

    def __init__(self) -> None:
        super().__init__()
        self.starts = 0

    def start_send(self, *args: Any, **kwargs: Any) -> None:
        self.starts += 1
        raise RuntimeError("bug in start_send")


async def test_a_broken_taskless_start_falls_back_to_the_usual_path(tmp_path: Path) -> None:
    pusher = BrokenStartPusher()
    with trio.fail_after(10):
        async with control_server(tmp_path, pusher=pusher) as (_, _, unix, _):
            async with open_control(unix) as control:
                first = await control.call("push", {"aor": ALICE, "wait": False})
                second = await control.call("push", {"aor": BOB, "wait": False})
                status = await control.call("status", {})
    assert pusher.starts == 2 and [s.device.aor for s in pusher.sent] == [ALICE, BOB]
    assert first["status"] == second["status"] == "pushed"
    assert status["pushed_without_task"] == 0
    assert status["control"]["requests"] == 3 and status["control"]["errors"] == 0


# --- shutdown ------------------------------------------------------------------------------------


async def test_shutdown_answers_waiting_pushes_and_stops_accepting(tmp_path: Path) -> None:
    with trio.fail_after(10):
        store = MemoryStore()
        store.put_devices([apple_device(ALICE)])
        store.put_app(apple_app())
        service = Service(store, FakePusher(), Waiters(), {})
        path = tmp_path / "control.sock"
        server = ControlServer(service, unix_socket=str(path), tcp="127.0.0.1:0")
        errors: list[int] = []
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(server.serve)
            async with open_control(str(path)) as control:

                async def wait_push(call_id: str) -> None:
                    try:
                        await control.call("push", {"aor": ALICE, "call_id": call_id})
                    except jsonrpc.ShuttingDown as exc:
                        errors.append(exc.code)

                async with trio.open_nursery() as calls:
                    calls.start_soon(wait_push, "a")
                    calls.start_soon(wait_push, "b")
                    await until(lambda: service.waiters.waiting >= 2)
                    server.shutdown()
                with pytest.raises((ControlConnectionLost, jsonrpc.ShuttingDown)):
                    await control.call("status")
            with pytest.raises(OSError):
                await trio.open_tcp_stream(*bound[1])
        assert errors == [-32005, -32005]
        assert not path.exists()
