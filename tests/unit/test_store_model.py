"""SqliteStore against MemoryStore: any sequence of changes reads back the same after reopen."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pusher_trio.model import App, AppleTokenAuth, Device
from pusher_trio.store import MemoryStore, SqliteStore

AORS = st.sampled_from(["a@x", "b@x", "c@y"])
IDS = st.sampled_from(["urn:uuid:1", "urn:uuid:2", "tok3"])
TOKENS = st.sampled_from(["t" * 20, "u" * 20, "v" * 32])


@st.composite
def devices(draw: st.DrawFn) -> Device:
    return Device(
        aor=draw(AORS),
        device_id=draw(IDS),
        type=draw(st.sampled_from(["apple", "firebase"])),
        app=draw(st.sampled_from(["com.a", "proj"])),
        token=draw(TOKENS),
        sandbox=draw(st.booleans()),
        push_type=draw(st.sampled_from([None, "voip", "alert"])),
        extra=draw(st.sampled_from([{}, {"source": "rfc8599", "team_id": "T"}])),
        contact=draw(st.sampled_from(["sip:a@1.2.3.4", "sip:a@5.6.7.8"])),
        last_registered=draw(st.floats(0, 1000, allow_nan=False)),
    )


OPS = st.one_of(
    st.tuples(st.just("put"), st.lists(devices(), max_size=3)),
    st.tuples(st.just("unbind"), AORS, st.one_of(st.none(), st.lists(IDS, max_size=2))),
    st.tuples(st.just("invalidate"), AORS, IDS, st.sampled_from(["Unregistered", "BadDeviceToken"])),
    st.tuples(st.just("remove"), AORS, st.one_of(st.none(), TOKENS)),
    st.tuples(st.just("put_app"), st.sampled_from(["com.a", "com.b"]), st.sampled_from(["k1", "k2"])),
    st.tuples(st.just("remove_app"), st.sampled_from(["com.a", "com.b"])),
    st.tuples(st.just("set"), st.sampled_from(["UA.A.regex", "UA.A", "UA.B.properties.Token-ID", "X"]),
              st.one_of(st.text(max_size=5), st.integers(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))),
    st.tuples(st.just("delete"), st.sampled_from(["UA.A.regex", "UA.A", "UA", "X"])),
    st.tuples(st.just("flush")),
)  # fmt: skip


def apply(store: MemoryStore, op: tuple[Any, ...]) -> Any:
    kind = op[0]
    try:
        if kind == "put":
            return store.put_devices(op[1])
        if kind == "unbind":
            return store.unbind(op[1], op[2])
        if kind == "invalidate":
            return store.invalidate(op[1], op[2], op[3], 5.0)
        if kind == "remove":
            return store.remove_devices(op[1], op[2])
        if kind == "put_app":
            return store.put_app(App(op[1], "apple", AppleTokenAuth(op[2], "KEY", "TEAM")))
        if kind == "remove_app":
            return store.remove_app(op[1])
        if kind == "set":
            return store.set_config(op[1], op[2])
        if kind == "delete":
            return store.delete_config(op[1])
        return store.flush()
    except TypeError as exc:  # e.g. setting under a key that holds a number
        return repr(exc)


@settings(max_examples=60, deadline=None)
@given(st.lists(OPS, max_size=25), st.floats(0, 500))
def test_sqlite_reads_back_what_memory_holds(ops: list[tuple[Any, ...]], interval: float) -> None:
    memory = MemoryStore(refresh_interval=interval)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.db"
        sqlite = SqliteStore(path, refresh_interval=interval, batch_delay=0.001)
        for op in ops:
            assert apply(memory, op) == apply(sqlite, op)
        sqlite.close()
        with SqliteStore(path) as reopened:
            key = lambda d: (d.aor, d.device_id)  # noqa: E731
            assert sorted(reopened.devices(), key=key) == sorted(memory.devices(), key=key)
            assert dict(reopened.apps()) == dict(memory.apps())
            assert reopened.get_config() == memory.get_config()
            assert reopened.device_count() == memory.device_count()


class _GeneralPut(MemoryStore):
    """MemoryStore.put_devices without its shortcut for refreshes (the general way)."""

    def put_devices(self, devices: Any) -> list[Device]:
        from pusher_trio.store import _registration_fields

        changed: list[Device] = []
        with self._lock:
            for device in devices:
                old = self.device(device.aor, device.device_id)
                if old is None:
                    self._count += 1
                self._set(device)
                aor, device_id = device.aor, device.device_id
                if old is not None and _registration_fields(old) == _registration_fields(device):
                    wkey = self._written_key(aor, device_id)
                    written = self._written_at.get(wkey, old.last_registered)
                    if device.last_registered - written < self._refresh_interval:
                        self._stats["device_writes_skipped"] += 1
                        if written != device.last_registered:
                            self._written_at[wkey] = written
                        continue
                else:
                    changed.append(device)
                self._drop_written(aor, (device_id,))
                self._dirty_device((aor, device_id))
        return changed


# refreshes: a few devices again and again, later each time (now and then unbound)
_POOL = st.lists(devices(), min_size=1, max_size=4)
_STEPS = st.lists(st.tuples(st.integers(0, 3), st.floats(0, 400), st.booleans()), max_size=30)


@settings(max_examples=300, deadline=None)
@given(_POOL, _STEPS, st.floats(1, 500))
def test_the_refresh_shortcut_leaves_the_store_as_the_general_way(
    pool: list[Device], steps: list[tuple[int, float, bool]], interval: float
) -> None:
    import attrs

    fast, general = MemoryStore(refresh_interval=interval), _GeneralPut(refresh_interval=interval)
    clock = 0.0
    for pick, later, unbind in steps:
        device = pool[pick % len(pool)]
        clock += later
        # a copy with equal but distinct strings, as a parse of the next REGISTER gives
        copy = attrs.evolve(device, aor="".join(device.aor), last_registered=clock)
        again = attrs.evolve(copy, aor=str(bytearray(device.aor.encode()), "ascii"))
        assert fast.put_devices([copy]) == general.put_devices([again])
        if unbind:
            assert fast.unbind(device.aor) == general.unbind(device.aor)
        assert fast.devices() == general.devices()
        assert fast._written_at == general._written_at
        assert fast.statistics() == general.statistics()
        assert fast.device_count() == general.device_count()
    for aor, value in fast._devices.items():  # one AOR string per AOR, as the general way
        records = [value] if isinstance(value, Device) else list(value.values())
        assert all(d.aor is aor for d in records)


def test_a_refresh_within_the_interval_takes_the_shortcut_and_keeps_the_new_record() -> None:
    import attrs

    store = MemoryStore(refresh_interval=300.0)
    first = Device(aor="a@x", device_id="urn:uuid:1", type="apple", app="com.a", token="t" * 20,
                   last_registered=10.0)  # fmt: skip
    assert store.put_devices([first]) == [first]
    again = attrs.evolve(first, aor="".join(["a@", "x"]), last_registered=70.0)
    assert store.put_devices([again]) == []  # nothing to write
    assert store.device("a@x", "urn:uuid:1") is again
    assert again.aor is first.aor  # the AOR string the store already held
    assert store.statistics()["device_writes_skipped"] == 1
    assert store._written_at == {first.aor: 10.0}  # written at 10, refreshed in memory
    late = attrs.evolve(first, last_registered=400.0)
    assert store.put_devices([late]) == []  # due for a write: the general way
    assert store._written_at == {}
