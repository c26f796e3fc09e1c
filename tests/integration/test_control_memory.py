"""Memory per waiting push request, measured through the real control server (target ≤ 10 KiB)."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest
import trio

from pusher_trio.control import jsonrpc
from pusher_trio.control.server import ControlServer
from pusher_trio.service import Service
from pusher_trio.store import MemoryStore
from pusher_trio.waiters import Waiters
from tests.unit.control.fakes import FakePusher, apple_app, apple_device

WAITING = 10_000
TARGET_BYTES = 10 * 1024


async def until(condition: object) -> None:
    assert callable(condition)
    while not condition():  # noqa: ASYNC110
        await trio.sleep(0.05)


@pytest.mark.slow
async def test_memory_per_waiting_push_over_one_connection(tmp_path: Path) -> None:
    """10,000 pushes waiting on one UNIX connection (as Kamailio's janssonrpcc holds them)."""
    store = MemoryStore()
    aors = [f"user{i}@example.com" for i in range(WAITING)]
    store.put_devices(apple_device(aor, token=f"{i:064x}") for i, aor in enumerate(aors))
    store.put_app(apple_app())
    service = Service(store, FakePusher(), Waiters(WAITING), {"wait_timeout": 60, "max_wait": 60})
    server = ControlServer(service, unix_socket=str(tmp_path / "c.sock"))
    frames = b"".join(
        jsonrpc.encode_request("push", {"aor": aor, "call_id": f"call-{i}"}, id=i)
        for i, aor in enumerate(aors)
    )
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            (path,) = await nursery.start(server.serve)
            stream = await trio.open_unix_socket(path)
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                await stream.send_all(frames)
                await until(lambda: service.waiters.waiting == WAITING)
                await until(lambda: service.statistics()["pushes"]["delivered"] == WAITING)
                gc.collect()
                used = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            per_request = used / WAITING
            print(f"\ncontrol+service+waiters: {per_request:.0f} bytes per waiting push")
            assert server.statistics()["in_flight"] == WAITING
            await stream.aclose()  # the peer goes away: its waits are cancelled
            await until(lambda: server.in_flight == 0)
            assert service.waiters.waiting == 0
            nursery.cancel_scope.cancel()
    assert per_request < TARGET_BYTES
