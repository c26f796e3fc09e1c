"""The trio control client against the real server, and the server's per-connection limits."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from pusher_trio.control import jsonrpc
from pusher_trio.control.client import (
    ControlConnectionLost,
    DaemonUnavailable,
    open_control,
    parse_target,
)
from pusher_trio.control.jsonrpc import Cancelled, MethodNotFound
from pusher_trio.control.server import ControlServer, parse_tcp
from pusher_trio.service import Service
from pusher_trio.store import MemoryStore
from pusher_trio.waiters import Waiters
from tests.integration.test_control_server import control_server, raw, until
from tests.unit.control.fakes import FakePusher, apple_app, apple_device, registered

ALICE = "alice@example.com"
BOB = "bob@example.com"


def test_parse_target() -> None:
    assert parse_target("127.0.0.1:5290") == ("127.0.0.1", 5290)
    assert parse_target("[::1]:5290") == ("::1", 5290)
    assert parse_target("localhost:0") == ("localhost", 0)
    assert parse_target("/run/pusher-trio/control.sock") == "/run/pusher-trio/control.sock"
    assert parse_target("control.sock") == "control.sock"
    assert parse_target("./a:1") == "./a:1"
    assert parse_target("tcp:127.0.0.1:5290") == ("127.0.0.1", 5290)


def test_parse_tcp() -> None:
    assert parse_tcp("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_tcp("[::1]:5290") == ("::1", 5290)
    assert parse_tcp(("127.0.0.1", 7)) == ("127.0.0.1", 7)
    with pytest.raises(ValueError):
        parse_tcp("localhost")


def test_server_needs_an_endpoint() -> None:
    with pytest.raises(ValueError):
        ControlServer(Service(MemoryStore(), FakePusher()))


async def test_concurrent_calls_on_one_client_are_matched_by_id(tmp_path: Path) -> None:
    results: dict[str, Any] = {}
    with trio.fail_after(10):
        async with control_server(tmp_path) as (_, service, unix, _):
            async with open_control(unix) as control:

                async def call(name: str, method: str, params: dict[str, Any]) -> None:
                    try:
                        results[name] = await control.call(method, params)
                    except jsonrpc.ControlError as exc:
                        results[name] = exc

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(call, "alice", "push", {"aor": ALICE, "call_id": "a"})
                    nursery.start_soon(call, "bob", "push", {"aor": BOB, "call_id": "b"})
                    await until(lambda: service.waiters.waiting == 2)
                    nursery.start_soon(call, "status", "status", {})
                    nursery.start_soon(call, "bad", "nope", {})
                    await until(lambda: "status" in results and "bad" in results)
                    await control.notify("cancel", {"call_id": "b"})
                    await until(lambda: "bob" in results)
                    service.on_registered(registered(ALICE, [apple_device(ALICE)]))
    assert results["alice"]["status"] == "registered"
    assert isinstance(results["bob"], Cancelled)
    assert results["status"]["waiting"] == 2
    assert isinstance(results["bad"], MethodNotFound)


async def test_lost_connection_fails_pending_calls(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with control_server(tmp_path) as (server, service, unix, _):
            async with open_control(unix) as control:
                async with trio.open_nursery() as nursery:
                    errors: list[BaseException] = []

                    async def call() -> None:
                        try:
                            await control.call("push", {"aor": ALICE})
                        except (ControlConnectionLost, jsonrpc.ShuttingDown) as exc:
                            errors.append(exc)

                    nursery.start_soon(call)
                    await until(lambda: service.waiters.waiting == 1)
                    server.shutdown()
                with pytest.raises(ControlConnectionLost):
                    await control.call("status")
    assert len(errors) == 1


async def test_framing_error_reply_fails_the_client_calls(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with control_server(tmp_path) as (_, _, unix, _):
            async with open_control(unix) as control:
                await control.send_raw(b"junk")
                with pytest.raises((jsonrpc.ParseError, ControlConnectionLost)):
                    await control.call("status")


async def test_connect_to_missing_socket_fails(tmp_path: Path) -> None:
    with trio.fail_after(10), pytest.raises(DaemonUnavailable) as info:
        async with open_control(str(tmp_path / "none.sock")):
            pass  # pragma: no cover
    assert isinstance(info.value.__cause__, FileNotFoundError)
    assert "none.sock" in str(info.value)


async def test_connect_to_a_stale_socket_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(str(path))
    listener.close()  # the file stays, nobody listens: what a crashed daemon leaves
    with trio.fail_after(10), pytest.raises(DaemonUnavailable) as info:
        async with open_control(str(path)):
            pass  # pragma: no cover
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


async def test_a_connection_stops_being_read_at_max_in_flight(tmp_path: Path) -> None:
    store = MemoryStore()
    store.put_devices([apple_device(f"u{i}@example.com") for i in range(3)])
    store.put_app(apple_app())
    service = Service(store, FakePusher(), Waiters(100), {})
    server = ControlServer(service, unix_socket=str(tmp_path / "c.sock"), max_in_flight=2)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            (path,) = await nursery.start(server.serve)
            async with raw(path) as conn:
                for i in range(3):
                    await conn.request("push", {"aor": f"u{i}@example.com"}, id=i)
                await until(lambda: service.waiters.waiting == 2)
                await trio.sleep(0.2)
                assert service.waiters.waiting == 2  # the third is not read yet
                service.on_registered(registered("u0@example.com", []))
                assert (await conn.reply())["id"] == 0
                await until(lambda: service.waiters.waiting == 2)
                assert service.waiters.group("u2@example.com") is not None
            nursery.cancel_scope.cancel()


async def test_status_reports_control_statistics_and_latency(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with control_server(tmp_path) as (_, _, unix, _):
            async with open_control(unix) as control:
                await control.call("push", {"aor": ALICE, "wait": False})
                status = await control.call("status")
    assert status["control"]["connections"] == 1
    assert status["control"]["requests"] == 2
    assert status["latency_ms"]["push_out"]["count"] == 1
    assert json.dumps(status)  # JSON all the way down


async def test_an_error_of_the_callers_block_comes_out_unwrapped(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with control_server(tmp_path) as (_, _, unix, _):
            with pytest.raises(MethodNotFound):
                async with open_control(unix) as control:
                    await control.call("nope", {})
            with pytest.raises(KeyError):
                async with open_control(unix):
                    raise KeyError("mine")
