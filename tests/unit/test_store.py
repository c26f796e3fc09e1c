"""MemoryStore and SqliteStore: persistence, file modes, batching, refresh, config keys."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from pusher_trio.model import App, AppleCertAuth, AppleTokenAuth, Device, FirebaseAuth
from pusher_trio.store import MemoryStore, SqliteStore, Store, structure_app, unstructure_app

TOKEN = "a1b2c3" + "0" * 54 + "dead"


def device(aor: str = "alice@example.com", device_id: str = "urn:uuid:1", **kw: object) -> Device:
    fields: dict[str, object] = {
        "type": "apple",
        "app": "com.example.app",
        "token": TOKEN,
        "last_registered": 1000.0,
    }
    fields.update(kw)
    return Device(aor=aor, device_id=device_id, **fields)  # type: ignore[arg-type]


APPS = [
    App("com.example.cert", "apple", AppleCertAuth("-----BEGIN CERTIFICATE-----\nsecret")),
    App(
        "com.example.token",
        "apple",
        AppleTokenAuth("-----BEGIN PRIVATE KEY-----\nk", "KEYID12345", "TEAM123456"),
        host="api.sandbox.push.apple.com:2197",
        push_type="voip",
        payload_template='{"x": 1}',
    ),
    App(
        "my-project",
        "firebase",
        FirebaseAuth(
            {"project_id": "my-project", "private_key": "k", "client_email": "a@b"},
            project_number="1234",
            base_url="https://127.0.0.1:1",
        ),
    ),
]


@pytest.fixture(scope="module")
def redis_for_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.redis_harness import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryStore]:
    """ "redis": writes on one node, reads by another from Redis (tests/redis_harness.py)."""
    s: Any
    if request.param == "memory":
        s = MemoryStore()
    elif request.param == "sqlite":
        s = SqliteStore(tmp_path / "s.db")
    else:
        from cryptography.fernet import Fernet

        from tests.redis_harness import TwoNodes

        server = request.getfixturevalue("redis_for_store")
        prefix = f"t{request.node.name}:"  # one server for the module, a key space per test
        s = TwoNodes(server.url, prefix, secret_key=Fernet.generate_key().decode())
    yield s
    s.close()


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


# --- behaviour shared by both ----------------------------------------------------------


def test_both_implement_the_protocol(store: MemoryStore) -> None:
    s: Store = store
    assert s.device_count() == 0


def test_put_devices_returns_only_changed_records(store: MemoryStore) -> None:
    d = device()
    assert store.put_devices([d]) == [d]
    refreshed = attrs.evolve(d, last_registered=2000.0)
    assert store.put_devices([refreshed]) == []
    assert store.devices("alice@example.com") == [refreshed]  # memory has the new time
    moved = attrs.evolve(d, contact="sip:alice@10.0.0.2", last_registered=2001.0)
    assert store.put_devices([moved]) == [moved]
    assert store.device_count() == 1


def test_devices_lists_by_aor_and_all(store: MemoryStore) -> None:
    store.put_devices([device(), device(device_id="b"), device(aor="bob@example.com")])
    assert {d.device_id for d in store.devices("alice@example.com")} == {"urn:uuid:1", "b"}
    assert len(store.devices()) == 3
    assert store.devices("nobody@example.com") == []
    assert store.device("bob@example.com", "urn:uuid:1") is not None


def test_unbind_keeps_the_record(store: MemoryStore) -> None:
    store.put_devices([device(), device(device_id="b")])
    assert store.unbind("alice@example.com", ["urn:uuid:1"]) == 1
    assert store.unbind("alice@example.com", ["urn:uuid:1"]) == 0  # already unbound
    assert store.unbind("alice@example.com", None) == 1  # Contact: * unbinds the rest
    assert [d.bound for d in store.devices("alice@example.com")] == [False, False]
    # a new registration binds it again (and is a change worth writing)
    assert store.put_devices([device(last_registered=1001.0)]) != []
    assert store.device("alice@example.com", "urn:uuid:1").bound  # type: ignore[union-attr]


def test_invalidate_then_register_revives(store: MemoryStore) -> None:
    store.put_devices([device()])
    assert store.invalidate("alice@example.com", "urn:uuid:1", "Unregistered", 1500.0)
    assert not store.invalidate("alice@example.com", "nope", "Unregistered", 1500.0)
    (d,) = store.devices("alice@example.com")
    assert (d.state, d.reason, d.invalidated_at) == ("invalid", "Unregistered", 1500.0)
    revived = store.put_devices([device(last_registered=1600.0)])
    assert len(revived) == 1
    (d,) = store.devices("alice@example.com")
    assert (d.state, d.reason, d.invalidated_at) == ("valid", None, None)


def test_remove_devices_by_aor_and_token(store: MemoryStore) -> None:
    store.put_devices([device(), device(device_id="b", token="other" * 5)])
    assert store.remove_devices("alice@example.com", "other" * 5) == 1
    assert [d.device_id for d in store.devices("alice@example.com")] == ["urn:uuid:1"]
    assert store.remove_devices("alice@example.com") == 1
    assert store.remove_devices("alice@example.com") == 0
    assert store.device_count() == 0


def test_apps_round_trip(store: MemoryStore) -> None:
    for app in APPS:
        store.put_app(app)
    assert dict(store.apps()) == {a.app_id: a for a in APPS}
    assert store.remove_app("my-project")
    assert not store.remove_app("my-project")
    assert set(store.apps()) == {"com.example.cert", "com.example.token"}


@pytest.mark.parametrize("app", APPS, ids=lambda a: a.app_id)
def test_app_json_keeps_secrets_and_kind(app: App) -> None:
    data = unstructure_app(app)
    assert structure_app(data) == app
    assert type(structure_app(data).auth) is type(app.auth)


def test_config_dotted_keys(store: MemoryStore) -> None:
    store.set_config("User-Agents.MyApp.regex", "^MyApp")
    store.set_config("User-Agents.MyApp.properties.Token-App", "app-id")
    store.set_config("User-Agents.MyApp.properties.Token-Type", "pn-type")
    store.set_config("User-Agents.MyApp.properties.Token-ID", "pn-tok")
    assert store.get_config("User-Agents") == {
        "MyApp": {
            "regex": "^MyApp",
            "properties": {"Token-App": "app-id", "Token-Type": "pn-type", "Token-ID": "pn-tok"},
        }
    }
    assert store.get_config("User-Agents.MyApp.properties.Token-ID") == "pn-tok"
    with pytest.raises(KeyError):
        store.get_config("User-Agents.Other")
    with pytest.raises(KeyError):
        store.get_config("User-Agents.MyApp.regex.deeper")


def test_config_set_json_replaces_a_subtree(store: MemoryStore) -> None:
    store.set_config("User-Agents.MyApp.regex", "^Old")
    kazoo = {
        "regex": "^MyApp",
        "properties": {"Token-App": "app-id", "Token-Type": "pn-type", "Token-ID": "pn-tok"},
    }
    store.set_config("User-Agents.MyApp", kazoo)
    assert store.get_config("User-Agents.MyApp") == kazoo
    assert store.get_config() == {"User-Agents": {"MyApp": kazoo}}


def test_config_value_returned_does_not_change_later(store: MemoryStore) -> None:
    store.set_config("User-Agents.A.regex", "^A")
    before = store.get_config("User-Agents")
    store.set_config("User-Agents.B.regex", "^B")
    assert before == {"A": {"regex": "^A"}}


def test_config_delete(store: MemoryStore) -> None:
    store.set_config("User-Agents.A.regex", "^A")
    store.set_config("User-Agents.B.regex", "^B")
    assert store.delete_config("User-Agents.A")
    assert not store.delete_config("User-Agents.A")
    assert not store.delete_config("User-Agents.B.regex.x")
    assert store.get_config() == {"User-Agents": {"B": {"regex": "^B"}}}
    assert store.delete_config("User-Agents")
    assert store.get_config() == {}


def test_config_errors(store: MemoryStore) -> None:
    store.set_config("a.b", "text")
    with pytest.raises(TypeError):
        store.set_config("a.b.c", 1)  # "a.b" is a string, not an object
    with pytest.raises(ValueError):
        store.set_config("a..b", 1)
    with pytest.raises(ValueError):
        store.set_config("x", {1, 2})  # not JSON
    assert store.get_config() == {"a": {"b": "text"}}


# --- SQLite specifics ------------------------------------------------------------------


def test_sqlite_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / "deep" / "pusher.db"  # parents are created
    with SqliteStore(path) as s:
        s.put_devices([device(), device(aor="bob@example.com", sandbox=True, push_type="voip",
                                        extra={"team_id": "T"})])  # fmt: skip
        s.invalidate("alice@example.com", "urn:uuid:1", "BadDeviceToken", 1200.0)
        s.unbind("bob@example.com")
        for app in APPS:
            s.put_app(app)
        s.set_config("User-Agents.MyApp.regex", "^MyApp")
        expected_devices = sorted(s.devices(), key=lambda d: d.aor)
    with SqliteStore(path) as s:
        assert sorted(s.devices(), key=lambda d: d.aor) == expected_devices
        assert dict(s.apps()) == {a.app_id: a for a in APPS}
        assert s.get_config("User-Agents.MyApp.regex") == "^MyApp"
        assert s.device_count() == 2


def test_sqlite_removals_persist(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with SqliteStore(path) as s:
        s.put_devices([device(), device(aor="bob@example.com")])
        s.put_app(APPS[0])
        s.set_config("User-Agents.A.regex", "^A")
        s.set_config("Other", 1)
    with SqliteStore(path) as s:
        s.remove_devices("bob@example.com")
        s.remove_app(APPS[0].app_id)
        s.delete_config("Other")
    with SqliteStore(path) as s:
        assert [d.aor for d in s.devices()] == ["alice@example.com"]
        assert dict(s.apps()) == {}
        assert s.get_config() == {"User-Agents": {"A": {"regex": "^A"}}}


def test_sqlite_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "pusher.db"
    with SqliteStore(path) as s:
        s.put_devices([device()])
        s.flush()
        for name in ("pusher.db", "pusher.db-wal", "pusher.db-shm"):
            mode = stat.S_IMODE(os.stat(path.parent / name).st_mode)
            assert mode == 0o600, (name, oct(mode))
        assert rows(path, "PRAGMA journal_mode") == [("wal",)]


def test_sqlite_existing_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    SqliteStore(path).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_sqlite_batches_many_changes_into_one_commit(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "p.db", batch_delay=5.0) as s:  # flush() ends the wait
        s.put_devices([device(aor=f"u{i}@example.com") for i in range(500)])
        for i in range(500):  # the same key changed again before the commit: one row
            s.invalidate(f"u{i}@example.com", "urn:uuid:1", "x", 1.0)
        s.flush()
        stats = s.statistics()
        assert stats["batches"] == 1
        assert stats["rows_written"] == 500
    assert rows(tmp_path / "p.db", "SELECT count(*), min(state) FROM devices") == [(500, "invalid")]


def test_sqlite_commits_without_flush_within_the_batch_delay(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with SqliteStore(path, batch_delay=0.05) as s:
        s.put_devices([device()])
        deadline = time.monotonic() + 2.0
        while s.statistics()["batches"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rows(path, "SELECT aor FROM devices") == [("alice@example.com",)]


def test_sqlite_writes_a_backlog_in_bounded_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pusher_trio.store

    monkeypatch.setattr(pusher_trio.store, "MAX_BATCH_ROWS", 3)
    path = tmp_path / "p.db"
    with SqliteStore(path, batch_delay=5.0) as s:  # flush() ends the first wait only
        s.put_devices([device(aor=f"u{i}@example.com") for i in range(10)])
        s.set_config("a", 1)
        s.flush()  # returns once every slice is committed
        stats = s.statistics()
        assert (stats["batches"], stats["rows_written"], stats["pending_writes"]) == (4, 11, 0)
        assert rows(path, "SELECT count(*) FROM devices") == [(10,)]
        s.put_devices([device(aor=f"v{i}@example.com") for i in range(7)])
    assert rows(path, "SELECT count(*) FROM devices") == [(17,)]  # close() writes them all


def test_sqlite_flush_returns_while_changes_keep_coming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a backlog is written in slices; flush() waits for what was changed before it,
    # not for the writer to catch up with a sniffer that never pauses
    import threading

    import pusher_trio.store

    monkeypatch.setattr(pusher_trio.store, "MAX_BATCH_ROWS", 2)
    # The producer outpaces the writer (2 rows a transaction) but gives up the GIL after
    # every 20 puts, so a correct flush() ends after one round whatever the machine's load;
    # one that waits for the writer to catch up waits until the producer stops here.
    limit = 1_000_000
    path = tmp_path / "p.db"
    with SqliteStore(path, batch_delay=0.001) as s:
        s.put_devices([device(aor=f"before{i}@example.com") for i in range(50)])
        done = threading.Event()
        produced = 0

        def producer() -> None:
            nonlocal produced
            while not done.is_set() and produced < limit:
                s.put_devices([device(aor=f"u{produced + i}@example.com") for i in range(20)])
                produced += 20
                time.sleep(0)

        thread = threading.Thread(target=producer)
        thread.start()
        try:
            s.flush()
        finally:
            done.set()
            thread.join()
        assert produced < limit  # flush() returned while the producer was still going
        assert rows(path, "SELECT count(*) FROM devices WHERE aor LIKE 'before%'") == [(50,)]


def test_sqlite_refresh_costs_no_write_until_close(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    s = SqliteStore(path, refresh_interval=300.0)
    s.put_devices([device(last_registered=1000.0)])
    s.flush()
    written = s.statistics()["rows_written"]
    for t in range(1001, 1100):  # 99 refreshes within the interval
        s.put_devices([device(last_registered=float(t))])
    s.flush()
    assert s.statistics()["rows_written"] == written
    assert s.statistics()["device_writes_skipped"] == 99
    assert rows(path, "SELECT last_registered FROM devices") == [(1000.0,)]
    s.put_devices([device(last_registered=1400.0)])  # past the interval: written
    s.flush()
    assert rows(path, "SELECT last_registered FROM devices") == [(1400.0,)]
    s.put_devices([device(last_registered=1401.0)])
    s.close()  # the newest time is written on shutdown
    assert rows(path, "SELECT last_registered FROM devices") == [(1401.0,)]


def test_sqlite_refresh_time_follows_the_record_when_its_aor_gains_and_loses_a_device(
    tmp_path: Path,
) -> None:
    # the written time is kept under the AOR while it has one record, under (aor, id)
    # while it has two: it must move with each change, or a refresh would be measured
    # from the newest in-memory time and never reach the disk
    path = tmp_path / "p.db"
    s = SqliteStore(path, refresh_interval=300.0)
    other = device(device_id="urn:uuid:2", token="b" * 64, last_registered=1150.0)
    alice = "SELECT device_id, last_registered FROM devices ORDER BY device_id"
    s.put_devices([device(last_registered=1000.0)])
    s.flush()
    s.put_devices([device(last_registered=1100.0)])  # kept in memory
    s.put_devices([other])  # the AOR has two records now
    s.put_devices([device(last_registered=1299.0)])
    s.flush()
    assert rows(path, alice) == [("urn:uuid:1", 1000.0), ("urn:uuid:2", 1150.0)]
    s.put_devices([device(last_registered=1301.0)])  # 301 s after the written time
    s.flush()
    assert rows(path, alice) == [("urn:uuid:1", 1301.0), ("urn:uuid:2", 1150.0)]
    s.put_devices([device(last_registered=1400.0)])  # kept in memory
    assert s.remove_devices("alice@example.com", "b" * 64) == 1  # one record again
    s.put_devices([device(last_registered=1600.0)])
    s.flush()
    assert rows(path, alice) == [("urn:uuid:1", 1301.0)]
    s.put_devices([device(last_registered=1602.0)])  # 301 s after the written time
    s.flush()
    assert rows(path, alice) == [("urn:uuid:1", 1602.0)]
    s.put_devices([device(last_registered=1603.0)])
    s.close()  # the newest time is written on shutdown
    assert rows(path, alice) == [("urn:uuid:1", 1603.0)]
    assert s.statistics()["device_writes_skipped"] == 5


def test_a_refreshed_record_shares_the_strings_the_store_holds_as_keys() -> None:
    # a refresh parsed anew brings equal but distinct strings; the store keeps one copy
    store = MemoryStore()
    text = lambda s: "".join(list(s))  # noqa: E731  (an equal, distinct str object)
    store.put_devices([device(aor=text("alice@example.com"))])
    key = next(iter(store._devices))
    refreshed = device(aor=text("alice@example.com"), last_registered=1001.0)
    assert refreshed.aor is not key
    store.put_devices([refreshed])
    (stored,) = store.devices("alice@example.com")
    assert stored == device(last_registered=1001.0)
    assert stored.aor is key
    # in an AOR of several records, the device id (and a token equal to it) too
    store.put_devices([device(device_id=text(TOKEN), token=TOKEN)])
    inner = store._devices["alice@example.com"]
    assert isinstance(inner, dict)
    id_key = next(k for k in inner if k == TOKEN)
    again = text(TOKEN)
    store.put_devices([device(device_id=again, token=again, last_registered=1002.0)])
    stored = store.device("alice@example.com", TOKEN)  # type: ignore[assignment]
    assert stored is not None and stored.last_registered == 1002.0
    assert stored.aor is key and stored.device_id is id_key and stored.token is id_key
    # RedisStore keeps an AOR known to have no records as an empty dict
    store._devices["bob@example.com"] = {}
    assert store.put_devices([device("bob@example.com")]) == [device("bob@example.com")]
    assert store.devices("bob@example.com") == [device("bob@example.com")]


def test_sqlite_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    script = textwrap.dedent(
        f"""
        import os, signal
        from pusher_trio.model import Device
        from pusher_trio.store import SqliteStore
        s = SqliteStore({str(path)!r})
        s.put_devices([Device(aor="a@b", device_id="d", type="apple", app="x", token="t")])
        s.set_config("User-Agents.A.regex", "^A")
        s.flush()
        s.put_devices([Device(aor="c@d", device_id="d", type="apple", app="x", token="t")])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path.cwd(), timeout=30)
    assert proc.returncode == -9
    with SqliteStore(path) as s:
        assert "a@b" in {d.aor for d in s.devices()}  # committed before the kill
        assert s.get_config("User-Agents.A.regex") == "^A"


def test_sqlite_cli_style_short_process(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    s = SqliteStore(path)
    s.put_app(APPS[1])
    s.close()
    s.close()  # idempotent
    with SqliteStore(path) as s2:
        assert s2.apps()["com.example.token"] == APPS[1]


def test_sqlite_failed_commit_keeps_the_data_and_retries(tmp_path: Path) -> None:
    from pusher_trio.store import StoreError

    path = tmp_path / "p.db"
    s = SqliteStore(path, batch_delay=0.01)
    real = s._commit
    calls: list[int] = []

    def failing_once(*batch: Any) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        return real(*batch)

    s._commit = failing_once  # type: ignore[method-assign]
    s.put_devices([device()])
    with pytest.raises(StoreError):
        s.flush()
    s.flush()  # the writer retried the same changes
    assert s.statistics()["write_errors"] == 1
    assert rows(path, "SELECT aor FROM devices") == [("alice@example.com",)]
    s.close()


def test_an_aor_goes_from_one_record_to_several_and_back(store: MemoryStore) -> None:
    one, two, three = (device(device_id=f"urn:uuid:{i}", token=f"t{i}") for i in (1, 2, 3))
    store.put_devices([one])
    assert store.devices("alice@example.com") == [one]
    assert store.device("alice@example.com", "urn:uuid:2") is None
    store.put_devices([two, three])
    assert sorted(d.device_id for d in store.devices("alice@example.com")) == [
        "urn:uuid:1", "urn:uuid:2", "urn:uuid:3"]  # fmt: skip
    assert store.remove_devices("alice@example.com", token="t2") == 1
    assert store.remove_devices("alice@example.com", token="t9") == 0
    assert store.remove_devices("alice@example.com", token="t1") == 1
    assert store.devices("alice@example.com") == [three] and store.device_count() == 1
    assert store.unbind("alice@example.com") == 1
    assert store.devices("alice@example.com")[0].bound is False
    assert store.invalidate("alice@example.com", "urn:uuid:3", "gone", 5.0)
    assert not store.invalidate("alice@example.com", "urn:uuid:1", "gone", 5.0)
    assert store.devices() == store.devices("alice@example.com")
    assert store.remove_devices("alice@example.com") == 1
    assert store.devices() == [] and store.device_count() == 0


def test_sqlite_refresh_after_reopen_is_measured_from_the_written_time(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with SqliteStore(path) as s:
        s.put_devices([device(last_registered=1000.0), device("bob@example.com")])
    s = SqliteStore(path, refresh_interval=300.0)
    assert sorted(d.aor for d in s.devices()) == ["alice@example.com", "bob@example.com"]
    s.put_devices([device(last_registered=1200.0)])  # within the interval of the loaded time
    s.put_devices([device(last_registered=1250.0)])
    s.flush()
    assert s.statistics()["device_writes_skipped"] == 2
    assert rows(path, "SELECT last_registered FROM devices WHERE aor LIKE 'alice%'") == [(1000.0,)]
    s.put_devices([device(last_registered=1301.0)])  # 301 s after the written time
    s.flush()
    assert rows(path, "SELECT last_registered FROM devices WHERE aor LIKE 'alice%'") == [(1301.0,)]
    s.put_devices([device(last_registered=1302.0)])
    s.close()
    assert rows(path, "SELECT last_registered FROM devices WHERE aor LIKE 'alice%'") == [(1302.0,)]
    assert rows(path, "SELECT last_registered FROM devices WHERE aor LIKE 'bob%'") == [(1000.0,)]


@pytest.mark.parametrize("count", [1, 63, 64, 130])
def test_sqlite_writes_every_row_of_a_batch_in_many_row_statements(
    tmp_path: Path, count: int
) -> None:
    # 64 rows to an INSERT statement, the rest one by one; extras of equal content
    # share one JSON text, and an odd (unhashable) value is still written
    path = tmp_path / "p.db"
    written = [
        device(
            f"u{i:03d}@example.com",
            token=f"tok{i}",
            extra={"source": "rfc8599", "team_id": f"T{i % 3}"},
            last_registered=float(i),
        )
        for i in range(count)
    ]
    odd = device("odd@example.com", extra={"source": ["not", "text"]})  # type: ignore[dict-item]
    with SqliteStore(path, batch_delay=5.0) as s:
        s.put_devices([*written, odd])
        s.flush()
        assert s.statistics()["batches"] == 1
    with SqliteStore(path) as s:
        assert sorted(s.devices(), key=lambda d: d.aor) == sorted(
            [*written, odd], key=lambda d: d.aor
        )
    assert rows(path, "SELECT extra FROM devices WHERE aor = 'u000@example.com'") == [
        ('{"source":"rfc8599","team_id":"T0"}',)
    ]


def test_sqlite_loaded_records_equal_the_written_ones(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    written = [
        device(device_id=TOKEN, user_agent="UA/1", push_type="voip", extra={"source": "legacy"}),
        device(
            device_id="urn:uuid:2",
            token="other",
            state="invalid",
            reason="gone",
            invalidated_at=3.0,
            bound=False,
            sandbox=True,
        ),
        device("bob@example.com", user_agent="UA/1", type="firebase", app="proj"),
    ]
    with SqliteStore(path) as s:
        s.put_devices(written)
    with SqliteStore(path) as s:
        loaded = s.devices()
        assert sorted(loaded, key=attrs.astuple) == sorted(written, key=attrs.astuple)
        mine = {d.device_id: d for d in s.devices("alice@example.com")}
        assert mine[TOKEN].device_id is mine[TOKEN].token  # one string, not two
