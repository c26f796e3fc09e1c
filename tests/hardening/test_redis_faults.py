"""Redis faults under a running sidecar (DESIGN §10): killed during a REGISTER storm and
restarted with and without its data, paused (SIGSTOP) while calls wait.

The phones are `demo.Phone`s whose REGISTER + 200 copies reach the sniffer at a
bounded rate; the checks read redis-server directly (the harness's own socket).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
import trio

from pusher_trio.app import Running
from pusher_trio.control.jsonrpc import Timeout
from pusher_trio.demo import Mirror, Phone
from tests.integration.test_redis_app import (
    BUNDLE,
    TEAM,
    sidecars,
    until,
    write_config,
)
from tests.redis_harness import RedisServer

PHONES = 1500  # bounded storm: ~1 s of copies at the pace below
PER_TICK = 60  # REGISTER + 200 pairs per 40 ms tick


def phones(n: int, prefix: str = "storm") -> list[Phone]:
    return [
        Phone(
            "iOS",
            f"{prefix}{i}",
            "198.51.100.7",
            50600,
            f"pn-provider=apns;pn-prid={secrets.token_hex(32)};pn-param={TEAM}.{BUNDLE}.voip",
            "Storm/1.0",
        )
        for i in range(n)
    ]


def stored_aors(server: RedisServer) -> set[str]:
    """Every AOR with a device record in Redis (SCAN with the harness's own socket)."""
    found: set[str] = set()
    cursor = b"0"
    while True:
        cursor, keys = server.command("SCAN", cursor.decode(), "MATCH", "it:d:*", "COUNT", "1000")  # type: ignore[misc]
        found.update(k.decode()[len("it:d:") :] for k in keys)
        if cursor == b"0":
            return found


async def storm(running: Running, group: list[Phone], sent_at: dict[str, float]) -> None:
    mirror = Mirror(running.sniffer[0])
    try:
        for start in range(0, len(group), PER_TICK):
            for p in group[start : start + PER_TICK]:
                mirror.send(p, p.register(600))
                sent_at[p.aor] = trio.current_time()
            await trio.sleep(0.04)
    finally:
        mirror.close()


@pytest.mark.parametrize("keeps_data", [False, True], ids=["emptied", "aof"])
async def test_redis_killed_during_a_register_storm(tmp_path: Path, keeps_data: bool) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=keeps_data)
    (tmp_path / "redis").mkdir()
    if keeps_data:
        server.extra = ["--appendfsync", "everysec"]
    server.start()
    everyone = phones(PHONES)
    sent_at: dict[str, float] = {}
    try:
        with trio.fail_after(90):
            async with sidecars([write_config(tmp_path / "a", server.url)]) as [(a, _)]:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(storm, a, everyone, sent_at)
                    await until(lambda: len(sent_at) >= PHONES // 3, "a third sent", 30)
                    killed_at = trio.current_time()
                    await trio.to_thread.run_sync(server.kill)
                    await until(lambda: a.service.status()["redis"]["up"] == 0, "down seen")
                    await trio.sleep(0.3)
                    await trio.to_thread.run_sync(server.start)
                learned = {p.aor for p in everyone}
                await until(
                    lambda: sum(bool(a.store.devices(aor)) for aor in learned) == PHONES,
                    "every phone learned in memory",
                    30,
                )
                await until(lambda: a.store.queued_writes == 0 and a.store.synced, "replayed", 30)
                await trio.sleep(1.5)  # one marker check: an emptied Redis gets the rest back
                await until(lambda: a.store.queued_writes == 0, "written back", 30)
                in_redis = stored_aors(server)
                older = {aor for aor, at in sent_at.items() if at < killed_at - 1.0}
                lost_older = older - in_redis
                assert not lost_older, f"{len(lost_older)} records older than 1 s were lost"
                after = {aor for aor, at in sent_at.items() if at > killed_at}
                assert after <= in_redis, f"{len(after - in_redis)} learned after the kill lost"
                status = a.service.status()["redis"]
                assert status["up"] == 1
                assert status["connection"]["connects"] == 2
    finally:
        server.stop()


async def test_redis_paused_while_calls_wait(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    server.start()
    p = phones(1)[0]
    try:
        with trio.fail_after(60):
            async with sidecars([write_config(tmp_path / "a", server.url)]) as [(a, pusher)]:
                from pusher_trio.model import App, AppleCertAuth
                from pusher_trio.standins.certs import Authority
                from pusher_trio.store import unstructure_app

                app = App(BUNDLE, "apple", AppleCertAuth(Authority().apns_client_pem(BUNDLE)))
                await a.service.call("apps.add", {"app": unstructure_app(app)})
                mirror = Mirror(a.sniffer[0])
                mirror.send(p, p.register(600))
                await until(lambda: a.store.devices(p.aor), "learned")
                await until(lambda: a.store.queued_writes == 0, "written")
                a.store.client.command_timeout = 0.5
                results: dict[str, Any] = {}

                async def call(name: str, wait_s: float) -> None:
                    started = trio.current_time()
                    try:
                        results[name] = await a.service.call(
                            "push", {"aor": p.aor, "call_id": name, "timeout": wait_s}
                        )
                    except Timeout as exc:
                        results[name] = exc
                    results[name + "_s"] = trio.current_time() - started

                server.pause()
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(call, "woken", 5.0)
                        await until(lambda: len(pusher.sent) == 1, "pushed while paused")
                        mirror.send(p, p.register(600))  # the phone wakes on this node
                    assert results["woken"]["status"] == "registered"
                    # no registration: Timeout at its deadline, not later
                    await call("asleep", 1.0)
                    assert isinstance(results["asleep"], Timeout)
                    assert results["asleep_s"] < 1.0 + 1.0
                    # a new phone learned while paused: queued, counted, in memory
                    q = phones(1, "paused")[0]
                    mirror.send(q, q.register(600))
                    await until(lambda: a.store.devices(q.aor), "learned while paused")
                    status = a.service.status()
                    assert status["store"]["pending_writes"] >= 1, (
                        status["store"],
                        status["redis"],
                    )
                finally:
                    server.resume()
                await until(lambda: a.store.queued_writes == 0, "replayed after the pause", 20)
                assert q.aor in stored_aors(server)
                mirror.close()
    finally:
        server.stop()
