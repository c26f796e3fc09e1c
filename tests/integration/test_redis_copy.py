"""`pusher-trio store copy` between SQLite and a real redis-server, both ways."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import attrs
import trio
from cryptography.fernet import Fernet

from pusher_trio.model import App, AppleCertAuth, Device, FirebaseAuth
from pusher_trio.redis.store import _decode_device
from pusher_trio.store import SqliteStore
from tests.redis_harness import RedisServer, redis_server  # noqa: F401

PEM = "-----BEGIN PRIVATE KEY-----\nCOPYSECRET\n-----END PRIVATE KEY-----"
APPS = [
    App("org.example.phone", "apple", AppleCertAuth(PEM), push_type="voip"),
    App("fcm-app", "firebase", FirebaseAuth({"project_id": "p", "private_key": "COPYSECRET"})),
]


def devices(n: int) -> list[Device]:
    return [
        Device(
            aor=f"user{i % 700}@example.com",
            device_id=f"urn:uuid:{i}",
            type="apple" if i % 2 else "firebase",
            app="org.example.phone" if i % 2 else "fcm-app",
            token=f"{i:064x}",
            extra={"source": "rfc8599"},
            user_agent="Phone/1.0",
            contact=f"sip:u{i}@198.51.100.7:5060;pn-prid={i:064x}",
            bound=bool(i % 3),
            last_registered=1_700_000_000.0 + i,
            state="invalid" if i % 5 == 0 else "valid",
            reason="Unregistered" if i % 5 == 0 else None,
            invalidated_at=1_700_000_100.0 if i % 5 == 0 else None,
        )
        for i in range(n)
    ]


def config_file(folder: Path, key_file: str) -> Path:
    path = folder / "pusher.toml"
    path.write_text(
        f'[control]\nunix_socket = "run/c.sock"\ntcp = ""\n'
        f'[store]\nkey_prefix = "cp:"\nsecret_key_file = "{key_file}"\n'
    )
    return path


async def cli(config: Path, *args: str) -> tuple[int, str, str]:
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-m", "pusher_trio", "--config", str(config), *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def by_key(items: list[Device]) -> dict[tuple[str, str], Device]:
    return {(d.aor, d.device_id): d for d in items}


async def test_copy_sqlite_to_redis_and_back(redis_server: RedisServer, tmp_path: Path) -> None:  # noqa: F811
    key = tmp_path / "secret.key"
    key.write_bytes(Fernet.generate_key())
    os.chmod(key, 0o600)
    config = config_file(tmp_path, str(key))
    source = tmp_path / "source.db"
    expected = devices(2500)
    with SqliteStore(source) as store:
        store.put_devices(expected)
        for app in APPS:
            store.put_app(app)
        store.set_config("User-Agents.MyApp.regex", "^MyApp")

    code, out, err = await cli(
        config, "store", "copy", "--from", f"sqlite:{source}", "--to", redis_server.url
    )
    assert code == 0, err
    assert "copied 2500 device records, 2 apps, 1 config keys" in out
    assert int(redis_server.command("GET", "cp:devices")) == 2500
    raw_app = redis_server.command("HGET", "cp:apps", "org.example.phone")
    assert raw_app.startswith(b"f1:") and b"COPYSECRET" not in raw_app

    back = tmp_path / "back.db"
    code, out, err = await cli(
        config, "store", "copy", "--from", redis_server.url, "--to", f"sqlite:{back}"
    )
    assert code == 0, err
    with SqliteStore(back) as store:
        assert by_key(store.devices()) == by_key(expected)
        assert dict(store.apps()) == {a.app_id: a for a in APPS}
        assert store.get_config() == {"User-Agents": {"MyApp": {"regex": "^MyApp"}}}
    assert "COPYSECRET" not in out + err

    # copying again changes nothing and counts nothing new
    code, out, err = await cli(
        config, "store", "copy", "--from", f"sqlite:{source}", "--to", redis_server.url
    )
    assert code == 0, err
    assert int(redis_server.command("GET", "cp:devices")) == 2500
    changed = attrs.evolve(expected[0], token="f" * 64)
    with SqliteStore(source) as store:
        store.put_devices([changed])
    code, _, err = await cli(
        config, "store", "copy", "--from", f"sqlite:{source}", "--to", redis_server.url
    )
    assert code == 0, err
    raw = redis_server.command("HGET", f"cp:d:{changed.aor}", changed.device_id)
    assert _decode_device(changed.aor, changed.device_id, raw) == changed


async def test_copy_refuses_bad_locations_in_one_line(tmp_path: Path) -> None:
    config = config_file(tmp_path, "")
    for args, wanted in [
        (("--from", "mysql://x", "--to", "sqlite:/tmp/x.db"), "unknown location"),
        (("--from", "sqlite:", "--to", "redis://127.0.0.1:1/0"), "needs a path"),
        (("--from", "redis://u:pw@h/0", "--to", "sqlite:/tmp/x.db"), "no password in the URL"),
    ]:
        code, _, err = await cli(config, "store", "copy", *args)
        assert code == 1, (args, err)
        assert err.count("\n") == 1 and wanted in err, err
        assert "pw@" not in err
