"""Two sidecars (`app.run`) on one real redis-server: the cluster as an operator runs it.

The phones are `demo.Phone`s whose REGISTER + 200 copies reach a sidecar's sniffer
(`demo.Mirror`), as Kamailio's siptrace would send them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.fernet import Fernet

from pusher_trio.app import Running, run
from pusher_trio.config import parse_config
from pusher_trio.demo import Mirror, Phone
from pusher_trio.standins.certs import Authority
from tests.integration.test_app import ScriptedPusher
from tests.redis_harness import RedisServer, free_port, redis_server  # noqa: F401

BUNDLE = "org.example.phone"
TEAM = "TEAM123456"
TOKEN = "0123456789abcdef" * 4


def write_config(folder: Path, url: str, *, key_file: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "pusher.toml"
    file.write_text(
        f"""
[control]
unix_socket = "run/control.sock"
tcp = ""
[sniffer]
listen = ["udp:127.0.0.1:0"]
[store]
backend = "redis"
redis_url = "{url}"
key_prefix = "it:"
secret_key_file = "{key_file}"
[log]
level = "warning"
"""
    )
    return file


def secret_key(folder: Path) -> str:
    path = folder / "secret.key"
    path.write_bytes(Fernet.generate_key() + b"\n")
    os.chmod(path, 0o600)
    return str(path)


def phone(token: str = TOKEN) -> Phone:
    return Phone(
        "iOS",
        "alice",
        "198.51.100.7",
        50600,
        f"pn-provider=apns;pn-prid={token};pn-param={TEAM}.{BUNDLE}.voip",
        "TestPhone/1.0",
    )


@asynccontextmanager
async def sidecars(configs: list[Path]) -> AsyncIterator[list[tuple[Running, ScriptedPusher]]]:
    out = []
    async with trio.open_nursery() as nursery:
        for file in configs:
            pusher = ScriptedPusher()
            config = parse_config(file.read_text(), str(file))
            running: Running = await nursery.start(
                lambda task_status, c=config, p=pusher: run(
                    c, task_status=task_status, handle_signals=False, pusher=p
                )
            )
            out.append((running, pusher))
        yield out
        for running, _ in out:
            running.shutdown()


async def until(check: Any, what: str, limit: float = 5.0) -> None:
    with trio.move_on_after(limit):
        while not check():  # noqa: ASYNC110
            await trio.sleep(0.005)
        return
    raise AssertionError(f"not within {limit} s: {what}")


async def test_registered_on_a_pushed_and_woken_from_b(
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Phone registers on A, call arrives on B → push from B; the phone re-registers on A
    and B's call completes. Then an app added on A serves pushes on B, and a token
    invalidated by B's push is invalid on A."""
    key = secret_key(tmp_path)
    files = [write_config(tmp_path / n, redis_server.url, key_file=key) for n in "ab"]
    with trio.fail_after(60):
        async with sidecars(files) as [(a, pusher_a), (b, pusher_b)]:
            pem = Authority().apns_client_pem(BUNDLE)
            from pusher_trio.model import App, AppleCertAuth
            from pusher_trio.store import unstructure_app

            app = App(BUNDLE, "apple", AppleCertAuth(pem), push_type="voip")
            await a.service.call("apps.add", {"app": unstructure_app(app)})
            p = phone()
            mirror_a = Mirror(a.sniffer[0])
            mirror_a.send(p, p.register(600))
            await until(lambda: a.store.devices(p.aor), "A learned the phone")
            await until(lambda: BUNDLE in b.store.apps(), "B has the app")
            await until(lambda: a.store.queued_writes == 0, "A wrote to Redis")

            # the phone wakes on B's push and registers on A
            pusher_b.on_push = lambda _device: mirror_a.send(p, p.register(600))
            result = await b.service.call("push", {"aor": p.aor, "call_id": "c1", "timeout": 5})
            assert result["status"] == "registered"
            assert [len(pusher_a.sent), len(pusher_b.sent)] == [0, 1]
            assert TOKEN not in json.dumps(result)

            status = b.service.status()
            assert status["redis"]["up"] == 1
            assert status["redis"]["state"] == "up"

            # B's provider says the token is dead: A stops pushing to it
            from pusher_trio.model import TokenInvalid

            pusher_b.on_push = None
            pusher_b.outcome = TokenInvalid("Unregistered")
            from pusher_trio.control.jsonrpc import NoPushTarget, PushRejected

            with pytest.raises(PushRejected):
                await b.service.call("push", {"aor": p.aor, "call_id": "c2", "timeout": 2})
            await until(lambda: b.store.queued_writes == 0, "B wrote the invalidation")
            await until(lambda: p.aor not in a.store._complete, "A heard of it")
            with pytest.raises(NoPushTarget):
                await a.service.call("push", {"aor": p.aor, "call_id": "c3", "wait": False})
            mirror_a.close()
    # secrets at rest: the app in Redis is encrypted
    raw = redis_server.command("HGET", "it:apps", BUNDLE)
    assert raw.startswith(b"f1:") and b"PRIVATE KEY" not in raw


async def test_two_calls_on_two_sidecars_one_push(
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    files = [write_config(tmp_path / n, redis_server.url) for n in "ab"]
    with trio.fail_after(60):
        async with sidecars(files) as [(a, pusher_a), (b, pusher_b)]:
            from pusher_trio.model import App, AppleCertAuth
            from pusher_trio.store import unstructure_app

            pem = Authority().apns_client_pem(BUNDLE)
            app = App(BUNDLE, "apple", AppleCertAuth(pem))
            await b.service.call("apps.add", {"app": unstructure_app(app)})
            p = phone()
            mirror_b = Mirror(b.sniffer[0])
            mirror_b.send(p, p.register(600))
            await until(lambda: b.store.queued_writes == 0 and b.store.devices(p.aor), "B wrote")
            await until(lambda: BUNDLE in a.store.apps(), "A has the app")
            results: dict[str, Any] = {}

            async def call(name: str, node: Running) -> None:
                results[name] = await node.service.call(
                    "push", {"aor": p.aor, "call_id": f"call-{name}", "timeout": 10}
                )

            async with trio.open_nursery() as calls:
                calls.start_soon(call, "a", a)
                await until(lambda: len(pusher_a.sent) == 1, "A pushed")
                calls.start_soon(call, "b", b)
                await until(lambda: b.service.waiters.waiting == 1, "B waits")
                await trio.sleep(0.05)
                mirror_b.send(p, p.register(600))  # the phone wakes, registers on B
            assert [len(pusher_a.sent), len(pusher_b.sent)] == [1, 0]
            assert results["a"]["status"] == results["b"]["status"] == "registered"
            assert results["b"]["pushes"][0]["outcome"] == "pushed_by_peer"
            mirror_b.close()


async def test_sidecar_starts_and_serves_with_redis_down(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with trio.fail_after(30):
        async with sidecars([write_config(tmp_path / "a", url)]) as [(a, _)]:
            status = a.service.status()
            assert status["redis"]["up"] == 0
            assert status["redis"]["state"] == "down"
            p = phone()
            mirror = Mirror(a.sniffer[0])
            mirror.send(p, p.register(600))
            await until(lambda: a.store.devices(p.aor), "learned while Redis is down")
            assert a.service.status()["store"]["pending_writes"] == 1
            mirror.close()


async def cli(config: Path, *args: str) -> tuple[int, str, str]:
    with trio.fail_after(30):
        done = await trio.run_process(
            [sys.executable, "-m", "pusher_trio", "--config", str(config), *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_cli_without_daemon_writes_apps_and_config_to_redis(
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    key = secret_key(tmp_path)
    config = write_config(tmp_path / "a", redis_server.url, key_file=key)
    cert = tmp_path / "app.pem"
    cert.write_text(Authority().apns_client_pem(BUNDLE))
    code, out, err = await cli(config, "add-apple-app", BUNDLE, str(cert))
    assert code == 0, err
    assert "daemon not running" in out
    raw = redis_server.command("HGET", "it:apps", BUNDLE)
    assert raw.startswith(b"f1:")
    code, out, err = await cli(config, "config", "set", "User-Agents.MyApp.regex", "^MyApp")
    assert code == 0, err
    assert json.loads(redis_server.command("HGET", "it:config", "User-Agents")) == {
        "MyApp": {"regex": "^MyApp"}
    }
    code, out, err = await cli(config, "apps", "list", "--json")
    assert code == 0 and json.loads(out)["apps"][0]["app_id"] == BUNDLE
    # Redis down: one line, exit 1, nothing half-done
    down = write_config(tmp_path / "b", f"redis://127.0.0.1:{free_port()}/0")
    code, out, err = await cli(down, "config", "set", "x", "y")
    assert code == 1
    assert err.count("\n") == 1 and "Redis" in err
