"""Device records and dynamic configuration.

`Store` is the interface every caller uses; `SqliteStore` is the embedded
default. A Redis backend (DESIGN §10) implements the same interface.

Reads are synchronous and served from memory, so the push path and the
sniffer never wait for disk; writes are queued and committed in batches by a
writer thread, so they never block the event loop.
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import attrs
import cattrs

from .model import App, Device


class Store(Protocol):
    # --- devices ---------------------------------------------------------------
    def devices(self, aor: str | None = None) -> list[Device]:
        """All records of `aor` (every record when None), valid and invalid."""
        ...

    def device_count(self) -> int: ...

    def put_devices(self, devices: Iterable[Device]) -> list[Device]:
        """Create or update records (keyed by aor + device_id); return those that changed.

        A record that differs only in `last_registered` is updated in memory
        but costs no disk write within the refresh interval.
        """
        ...

    def unbind(self, aor: str, device_ids: Iterable[str] | None = None) -> int:
        """Mark records unbound (expires=0; None: all of the AOR, `Contact: *`). Keeps them."""
        ...

    def invalidate(self, aor: str, device_id: str, reason: str, now: float) -> bool:
        """A provider said the token is dead; the next REGISTER with a token revives it."""
        ...

    def remove_devices(self, aor: str, token: str | None = None) -> int: ...

    # --- dynamic configuration (DESIGN §5) -------------------------------------------
    def apps(self) -> Mapping[str, App]: ...

    def put_app(self, app: App) -> None: ...

    def remove_app(self, app_id: str) -> bool: ...

    def get_config(self, key: str | None = None) -> Any:
        """Value at a dotted key ("User-Agents.MyApp.regex"); the whole tree when None.

        Raises KeyError when the key is absent.
        """
        ...

    def set_config(self, key: str, value: Any) -> None:
        """Set a JSON value at a dotted key, creating intermediate objects."""
        ...

    def delete_config(self, key: str) -> bool: ...

    # --- lifecycle ------------------------------------------------------------------
    def flush(self) -> None:
        """Block until every queued write is committed (call from a thread in trio code)."""
        ...

    def close(self) -> None: ...

    def statistics(self) -> dict[str, int]: ...


# =====================================================================================
# Implementations. Everything below the Protocol may change; its signatures may not.
# =====================================================================================


log = logging.getLogger(__name__)

# A refresh (same device, only last_registered moved) is written at most this often;
# close() writes the newest times anyway. Phones refresh every few minutes: writing
# each one would be the store's whole load for no information.
REFRESH_WRITE_INTERVAL = 300.0
# The writer waits this long after the first queued change so one transaction carries
# many; kill -9 loses at most this window (the brief: commit at least every ~200 ms).
BATCH_DELAY = 0.05
# At most this many device rows per transaction: a backlog (a refresh round of a
# million phones outrunning the disk) is written in bounded slices, so the rows being
# built never hold more than a few MiB (their peak stays in the RSS as free heap).
MAX_BATCH_ROWS = 10_000
SCHEMA_VERSION = 1

_converter = cattrs.Converter()
# Device.same_registration without attrs.evolve: the refresh check runs per REGISTER.
_registration_fields = operator.attrgetter(
    *(f.name for f in attrs.fields(Device) if f.name != "last_registered")
)


def unstructure_app(app: App) -> dict[str, Any]:
    """JSON-ready dict of an App *with its secrets* (the store keeps them; never print it)."""
    data: dict[str, Any] = _converter.unstructure(app)
    return data


def structure_app(data: Mapping[str, Any]) -> App:
    """Inverse of unstructure_app; the auth kind is told apart by its unique fields."""
    return _converter.structure(dict(data), App)


class StoreError(Exception):
    """The store could not commit (disk full, file gone); raised by flush()."""


DeviceKey = tuple[str, str]  # (aor, device_id)
# An AOR's records: the Device itself while it has one (most AORs: one phone), a dict
# by device_id from the second on. A one-entry dict costs ~250 bytes per AOR.
_Records = Device | dict[str, Device]


# Swaps a field of a Device for an *equal* string object (see MemoryStore._set): no
# reader can tell, and the Device stays the one the caller (and the registrations'
# summary cache) holds, instead of a copy.
_adopt = object.__setattr__


def _records(value: _Records | None) -> dict[str, Device]:
    """The records of one AOR as a (possibly new, read-only) dict by device_id."""
    if value is None:
        return {}
    if type(value) is Device:
        return {value.device_id: value}
    return value  # type: ignore[return-value]


class MemoryStore:
    """The whole Store behaviour in memory: the reference for SqliteStore and for tests.

    Reads return the stored objects: Devices and Apps are frozen; the config tree is
    copied on write, so a value returned by get_config never changes under the caller
    (treat it as read-only all the same).
    """

    def __init__(self, *, refresh_interval: float = REFRESH_WRITE_INTERVAL) -> None:
        self._lock = threading.RLock()
        self._devices: dict[str, _Records] = {}
        self._count = 0
        self._apps: dict[str, App] = {}
        self._config: dict[str, Any] = {}
        self._refresh_interval = refresh_interval
        # last_registered as last written, where it differs from the record's own (a
        # refresh kept in memory only); absent: the record is as written. Phones that
        # refresh more often than the interval all have an entry, so it is keyed by the
        # AOR string the records already hold while the AOR has one record (~65 bytes an
        # entry), by (aor, device_id) while it has several: see _written_key.
        self._written_at: dict[str | DeviceKey, float] = {}
        self._stats = {"device_writes_skipped": 0}

    # --- persistence hooks (no-ops in memory) ---------------------------------------
    def _dirty_device(self, key: DeviceKey) -> None:
        pass

    def _dirty_app(self, app_id: str) -> None:
        pass

    def _dirty_config(self, top_key: str) -> None:
        pass

    # --- devices ----------------------------------------------------------------
    def devices(self, aor: str | None = None) -> list[Device]:
        with self._lock:
            if aor is not None:
                value = self._devices.get(aor)
                if value is None:
                    return []
                return [value] if type(value) is Device else list(_records(value).values())
            return [d for value in self._devices.values() for d in _records(value).values()]

    def device(self, aor: str, device_id: str) -> Device | None:
        """One record, or None (additive to the Protocol)."""
        value = self._devices.get(aor)
        if type(value) is Device:
            return value if value.device_id == device_id else None
        return _records(value).get(device_id)

    def _set(self, device: Device) -> None:
        """Create or replace one record (with the lock held).

        A dict keeps the key object it was first given: a replacing Device (a refresh,
        parsed anew) takes that AOR string (and, in a multi-device AOR, that device id)
        instead of keeping an equal copy alive next to it, ~75 bytes per refreshed record.
        """
        devices = self._devices
        value = devices.get(device.aor)
        if value is None:
            devices[device.aor] = device
        elif type(value) is Device:
            if value.aor is not device.aor:
                _adopt(device, "aor", value.aor)
            if value.device_id == device.device_id:
                devices[device.aor] = device
            else:
                devices[device.aor] = {value.device_id: value, device.device_id: device}
                self._rekey_written(value)
        else:
            by_id: dict[str, Device] = value  # type: ignore[assignment]
            for first in by_id.values():  # none: RedisStore caches "no records" as {}
                if first.aor is not device.aor:
                    _adopt(device, "aor", first.aor)
                break
            old = by_id.get(device.device_id)
            if old is not None and old.device_id is not device.device_id:
                if device.token is device.device_id:
                    _adopt(device, "token", old.device_id)
                _adopt(device, "device_id", old.device_id)
            by_id[device.device_id] = device

    def device_count(self) -> int:
        return self._count

    # --- refresh times kept in memory only (_written_at) -----------------------------
    def _written_key(self, aor: str, device_id: str) -> str | DeviceKey:
        """The key of a record's entry: the AOR alone while it holds one record."""
        return aor if type(self._devices.get(aor)) is Device else (aor, device_id)

    def _rekey_written(self, before: _Records) -> None:
        """The records of one AOR changed shape (one record <-> several): move its entry.

        `before` is the AOR's value before the change; call after it, lock held.
        """
        written = self._written_at
        if not written:
            return
        if type(before) is Device:
            aor = before.aor
            if type(self._devices.get(aor)) is not Device:
                at = written.pop(aor, None)
                if at is not None:
                    written[(aor, before.device_id)] = at
            return
        by_id: dict[str, Device] = before  # type: ignore[assignment]
        if not by_id:
            return
        aor = next(iter(by_id.values())).aor
        after = self._devices.get(aor)
        if type(after) is Device:
            at = written.pop((aor, after.device_id), None)
            if at is not None:
                written[after.aor] = at

    def _drop_written(self, aor: str, device_ids: Iterable[str]) -> None:
        """Forget the entries of records about to go (before `_devices` changes)."""
        written = self._written_at
        if written:
            for device_id in device_ids:
                written.pop(self._written_key(aor, device_id), None)

    def _unwritten(self) -> list[DeviceKey]:
        """The records with a refresh kept in memory only; their entries are dropped."""
        keys: list[DeviceKey] = []
        for key in list(self._written_at):
            del self._written_at[key]
            if type(key) is str:
                keys.extend((key, d) for d in _records(self._devices.get(key)))
            else:
                keys.append(key)  # type: ignore[arg-type]
        return keys

    def put_devices(self, devices: Iterable[Device]) -> list[Device]:
        changed: list[Device] = []
        with self._lock:
            for device in devices:
                aor = device.aor
                old = self._devices.get(aor)
                if (
                    type(old) is Device
                    and old.device_id == device.device_id
                    and _registration_fields(old) == _registration_fields(device)
                ):
                    # The usual refresh: the AOR's only record, registered again. What the
                    # general way below does for it, without its lookups: the entry of a
                    # one-record AOR is keyed by the AOR (see _written_key).
                    written = self._written_at.get(aor, old.last_registered)
                    if device.last_registered - written < self._refresh_interval:
                        if old.aor is not aor:
                            aor = old.aor  # keep one string per AOR (see _set)
                            _adopt(device, "aor", aor)
                        self._devices[aor] = device
                        self._stats["device_writes_skipped"] += 1
                        if written != device.last_registered:
                            self._written_at[aor] = written
                        continue
                old = self.device(aor, device.device_id)
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

    def _replace(self, old: Device, new: Device) -> None:
        self._set(new)
        self._drop_written(old.aor, (old.device_id,))
        self._dirty_device((old.aor, old.device_id))

    def unbind(self, aor: str, device_ids: Iterable[str] | None = None) -> int:
        n = 0
        with self._lock:
            by_id = _records(self._devices.get(aor))
            ids = list(by_id) if device_ids is None else list(device_ids)
            for device_id in ids:
                old = by_id.get(device_id)
                if old is not None and old.bound:
                    self._replace(old, attrs.evolve(old, bound=False))
                    n += 1
        return n

    def invalidate(self, aor: str, device_id: str, reason: str, now: float) -> bool:
        """Mark the record invalid; False when there is no such record.

        It stays invalid until a successful REGISTER puts a Device again (the
        sniffer's devices are valid, so put_devices revives it).
        """
        with self._lock:
            old = self.device(aor, device_id)
            if old is None:
                return False
            if old.state != "invalid" or old.reason != reason:
                self._replace(
                    old, attrs.evolve(old, state="invalid", reason=reason, invalidated_at=now)
                )
            return True

    def remove_devices(self, aor: str, token: str | None = None) -> int:
        with self._lock:
            before = self._devices.get(aor)
            by_id = _records(before)
            if not by_id:
                return 0
            gone = [i for i, d in by_id.items() if token is None or d.token == token]
            if not gone:
                return 0
            self._drop_written(aor, gone)
            kept = {i: d for i, d in by_id.items() if i not in gone}
            if not kept:
                del self._devices[aor]
            else:
                self._devices[aor] = next(iter(kept.values())) if len(kept) == 1 else kept
                self._rekey_written(before)  # type: ignore[arg-type]
            for device_id in gone:
                self._dirty_device((aor, device_id))
            self._count -= len(gone)
            return len(gone)

    # --- apps --------------------------------------------------------------------
    def apps(self) -> Mapping[str, App]:
        return dict(self._apps)

    def put_app(self, app: App) -> None:
        _check_text(app.app_id, "app id")
        with self._lock:
            self._apps[app.app_id] = app
            self._dirty_app(app.app_id)

    def remove_app(self, app_id: str) -> bool:
        with self._lock:
            if self._apps.pop(app_id, None) is None:
                return False
            self._dirty_app(app_id)
            return True

    # --- dynamic configuration -------------------------------------------------------
    def get_config(self, key: str | None = None) -> Any:
        node: Any = self._config
        if key is None:
            return node
        for part in _split_key(key):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(key)
            node = node[part]
        return node

    def set_config(self, key: str, value: Any) -> None:
        """Set a JSON value at a dotted key, creating intermediate objects.

        Raises TypeError when an intermediate value exists and is not an object,
        ValueError when the value is not JSON (or the key is empty).
        """
        parts = _split_key(key)
        try:
            value = json.loads(json.dumps(value))  # a private copy, and proof it is JSON
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config value for {key!r} is not JSON: {exc}") from None
        with self._lock:
            top = parts[0]
            if len(parts) == 1:
                new_top = value
            else:
                new_top = copy.deepcopy(self._config.get(top, {}))
                if not isinstance(new_top, dict):
                    raise TypeError(f"config key {top!r} holds a {type(new_top).__name__}")
                node = new_top
                for i, part in enumerate(parts[1:-1], start=1):
                    nxt = node.setdefault(part, {})
                    if not isinstance(nxt, dict):
                        raise TypeError(
                            f"config key {'.'.join(parts[: i + 1])!r} holds a {type(nxt).__name__}"
                        )
                    node = nxt
                node[parts[-1]] = value
            config = dict(self._config)
            config[top] = new_top
            self._config = config
            self._dirty_config(top)

    def delete_config(self, key: str) -> bool:
        parts = _split_key(key)
        with self._lock:
            top = parts[0]
            if top not in self._config:
                return False
            config = dict(self._config)
            if len(parts) == 1:
                del config[top]
            else:
                new_top = copy.deepcopy(config[top])
                node = new_top
                for part in parts[1:-1]:
                    if not isinstance(node, dict) or part not in node:
                        return False
                    node = node[part]
                if not isinstance(node, dict) or parts[-1] not in node:
                    return False
                del node[parts[-1]]
                config[top] = new_top
            self._config = config
            self._dirty_config(top)
            return True

    # --- lifecycle ----------------------------------------------------------------
    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def statistics(self) -> dict[str, int]:
        return {"devices": self._count, "apps": len(self._apps), **self._stats}


def _split_key(key: str) -> list[str]:
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ValueError(f"bad config key {key!r}")
    _check_text(key, "config key")
    return parts


def _check_text(text: str, what: str) -> None:
    """SQLite keys are UTF-8: a string it cannot take (a lone surrogate, from JSON's
    "\\ud800" or argv's surrogateescape) would fail every later commit of the writer,
    so it is refused here, where the caller can be told."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {text!r} is not valid Unicode text") from None


# --- SQLite -------------------------------------------------------------------------

_DEVICE_COLUMNS = (
    "aor, device_id, type, app, token, sandbox, push_type, extra, user_agent, contact,"
    " bound, last_registered, state, reason, invalidated_at"
)

# devices is a rowid table: its rows (~450 bytes) are too big for WITHOUT ROWID to pay,
# and inserts measured twice as fast (8.8 vs 17.4 us CPU per row).
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS devices (
    aor TEXT NOT NULL, device_id TEXT NOT NULL, type TEXT NOT NULL, app TEXT NOT NULL,
    token TEXT NOT NULL, sandbox INTEGER NOT NULL, push_type TEXT, extra TEXT NOT NULL,
    user_agent TEXT NOT NULL, contact TEXT NOT NULL, bound INTEGER NOT NULL,
    last_registered REAL NOT NULL, state TEXT NOT NULL, reason TEXT, invalidated_at REAL,
    PRIMARY KEY (aor, device_id)
);
CREATE TABLE IF NOT EXISTS apps (app_id TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS config (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
PRAGMA user_version = {SCHEMA_VERSION};
"""


# The JSON text of each distinct device extra (a few: source, team id, project), by
# content: json.dumps was most of the writer's time per row (2.4 of 3 us). Bounded;
# Web Push extras (per-browser keys) just come and go.
_EXTRA_JSON: dict[tuple[tuple[str, str], ...], str] = {}
_EXTRA_JSON_MAX = 10_000


def _extra_json(extra: Mapping[str, str]) -> str:
    key = tuple(extra.items())
    try:
        text = _EXTRA_JSON.get(key)
    except TypeError:  # a value that is not a string (and not hashable): not cached
        return json.dumps(dict(extra), separators=(",", ":"))
    if text is None:
        text = json.dumps(dict(key), separators=(",", ":"))
        if len(_EXTRA_JSON) >= _EXTRA_JSON_MAX:
            _EXTRA_JSON.clear()
        _EXTRA_JSON[key] = text
    return text


_ROW = "(" + ",".join("?" * len(_DEVICE_COLUMNS.split(","))) + ")"
_INSERT = f"INSERT OR REPLACE INTO devices ({_DEVICE_COLUMNS}) VALUES {_ROW}"
# Rows per INSERT statement: the sqlite3 module releases the GIL around each step and
# takes it back after, so executemany costs the sniffer's thread a GIL hand-off per
# row (measured: its CPU per datagram 33 -> 41 us with new phones being written).
# One statement of many rows hands it off once. 64 x 15 parameters stay under 999,
# the smallest SQLITE_MAX_VARIABLE_NUMBER a build may have.
_INSERT_ROWS = 64
_INSERT_MANY = f"INSERT OR REPLACE INTO devices ({_DEVICE_COLUMNS}) VALUES " + ",".join(
    [_ROW] * _INSERT_ROWS
)


def _insert_devices(db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """INSERT OR REPLACE `rows` (distinct keys), _INSERT_ROWS to a statement."""
    whole = len(rows) - len(rows) % _INSERT_ROWS
    for i in range(0, whole, _INSERT_ROWS):
        db.execute(_INSERT_MANY, [v for row in rows[i : i + _INSERT_ROWS] for v in row])
    if whole < len(rows):
        db.executemany(_INSERT, rows[whole:])


def _device_row(d: Device) -> tuple[Any, ...]:
    return (
        d.aor, d.device_id, d.type, d.app, d.token, int(d.sandbox), d.push_type,
        _extra_json(d.extra), d.user_agent, d.contact,
        int(d.bound), d.last_registered, d.state, d.reason, d.invalidated_at,
    )  # fmt: skip


def _device_from_row(
    row: tuple[Any, ...], extras: dict[str, Mapping[str, str]], shared: dict[str, str]
) -> Device:
    (aor, device_id, type_, app, token, sandbox, push_type, extra, user_agent, contact,
     bound, last_registered, state, reason, invalidated_at) = row  # fmt: skip
    # SQLite gives every row its own str objects; the few distinct types, apps, push
    # types, states and User-Agents are shared instead (~330 bytes per record at 1M).
    if len(shared) < 100_000:
        type_ = shared.setdefault(type_, type_)
        app = shared.setdefault(app, app)
        user_agent = shared.setdefault(user_agent, user_agent)
        state = shared.setdefault(state, state)
        if push_type is not None:
            push_type = shared.setdefault(push_type, push_type)
    if device_id == token:
        device_id = token
    # Few distinct extras exist (source, team id, project): decode each once and share
    # the (read-only) mapping; json.loads per row was most of the start-up time.
    parsed = extras.get(extra)
    if parsed is None:
        parsed = json.loads(extra)
        if len(extras) < 10_000:
            extras[extra] = parsed
    return Device(
        aor=aor, device_id=device_id, type=type_, app=app, token=token,
        sandbox=bool(sandbox), push_type=push_type, extra=parsed,
        user_agent=user_agent, contact=contact, bound=bool(bound),
        last_registered=last_registered, state=state, reason=reason,
        invalidated_at=invalidated_at,
    )  # fmt: skip


def _create_private(path: str) -> None:
    """Create `path` (and nothing else) with mode 0600 before SQLite opens it.

    SQLite gives the -wal and -shm files the main file's permissions.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class SqliteStore(MemoryStore):
    """The embedded store: everything in memory, changes committed by a writer thread.

    Opening loads every record (synchronously: fine for the daemon's start and for a
    short-lived CLI process). Each change marks a key dirty; the writer thread waits
    BATCH_DELAY after the first one, then writes the current value of every dirty key
    (or deletes it) in one transaction with executemany. A key changed 100 times in a
    batch is written once. WAL mode with synchronous=NORMAL: a committed batch survives
    kill -9 of the process.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        refresh_interval: float = REFRESH_WRITE_INTERVAL,
        batch_delay: float = BATCH_DELAY,
    ) -> None:
        super().__init__(refresh_interval=refresh_interval)
        self.path = os.fspath(path)
        self._batch_delay = batch_delay
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, mode=0o700, exist_ok=True)
        _create_private(self.path)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout = 5000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            # Inserts land all over the (aor, device_id) B-tree: keep its inner pages
            # cached (the 2 MB default is short of them at 100k+ devices). Leaf pages come
            # back from the OS page cache cheaply: at 1,000,000 devices a 64 MiB cache
            # wrote new rows no faster than 16 MiB (13.6 vs 12.3 us CPU a row) and
            # rewrote old ones ~9 % faster (44 vs 48 us), for 48 bytes more a record.
            db.execute("PRAGMA cache_size = -16384")
            db.executescript(_SCHEMA)
            self._load(db)
        except BaseException:
            db.close()
            raise
        self._db = db
        self._dirty_devices: set[DeviceKey] = set()
        self._dirty_apps: set[str] = set()
        self._dirty_configs: set[str] = set()
        # The device keys of the writer's current round not written yet (see _writer)
        self._backlog: list[DeviceKey] = []
        self._round_upto = 0
        self._wake = threading.Condition(self._lock)
        self._changes = 0  # bumped by every change
        self._committed = 0  # value of _changes covered by the last commit
        self._flush_now = False
        self._closing = False
        self._error: BaseException | None = None
        self._stats.update({"batches": 0, "rows_written": 0, "write_errors": 0})
        self._thread = threading.Thread(
            target=self._writer, name=f"store-writer:{os.path.basename(self.path)}", daemon=True
        )
        self._thread.start()

    def _load(self, db: sqlite3.Connection) -> None:
        extras: dict[str, Mapping[str, str]] = {}
        shared: dict[str, str] = {}
        devices = self._devices
        # Nothing loaded here is garbage: without the cyclic collector, whose passes over
        # a growing heap were a third of a million-record start-up.
        enabled = gc.isenabled()
        gc.disable()
        try:
            for row in db.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices"):
                d = _device_from_row(row, extras, shared)
                if d.aor in devices:
                    self._set(d)
                else:
                    devices[d.aor] = d
                self._count += 1
        finally:
            if enabled:
                gc.enable()
        db.execute("PRAGMA shrink_memory")  # the pages read while loading are not needed
        for app_id, data in db.execute("SELECT app_id, data FROM apps"):
            try:
                self._apps[app_id] = structure_app(json.loads(data))
            except (ValueError, cattrs.BaseValidationError) as exc:
                log.error("store: app %r is unreadable and ignored: %s", app_id, exc)
        for key, value in db.execute("SELECT key, value FROM config"):
            self._config[key] = json.loads(value)

    # --- dirty tracking (called with the lock held) ------------------------------------
    def _dirty_device(self, key: DeviceKey) -> None:
        self._dirty_devices.add(key)
        self._changed()

    def _dirty_app(self, app_id: str) -> None:
        self._dirty_apps.add(app_id)
        self._changed()

    def _dirty_config(self, top_key: str) -> None:
        self._dirty_configs.add(top_key)
        self._changed()

    def _changed(self) -> None:
        if self._closing and not self._thread.is_alive():
            raise StoreError("store is closed")
        self._changes += 1
        if self._changes == self._committed + 1:
            self._wake.notify_all()  # the first change of a batch starts the clock

    # --- the writer thread ----------------------------------------------------------
    def _writer(self) -> None:
        """Write rounds: a round is every change made before it starts, its device rows
        in slices of MAX_BATCH_ROWS, one transaction each (apps and config with the
        first). Changes made meanwhile wait for the next round, so flush() waits for
        two rounds at most however busy the sniffer is."""
        while True:
            with self._wake:
                first = not self._backlog
                if first:
                    while self._changes == self._committed and not self._closing:
                        self._wake.wait()
                    if self._changes == self._committed and self._closing:
                        return
                    deadline = time.monotonic() + self._batch_delay
                    while not (self._flush_now or self._closing):
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._wake.wait(left)
                    self._flush_now = False
                    self._round_upto = self._changes
                    self._backlog = list(self._dirty_devices)
                    self._dirty_devices = set()
                keys = self._backlog[-MAX_BATCH_ROWS:]
                del self._backlog[-MAX_BATCH_ROWS:]
                batch = self._take_batch(keys, first)
                upto = self._round_upto
                whole = not self._backlog
            try:
                rows = self._commit(*batch)
            except Exception as exc:  # disk full, file gone, a bug: keep the data, retry
                log.error("store: commit failed, will retry: %s", exc)
                with self._wake:
                    self._error = exc
                    self._stats["write_errors"] += 1
                    # the round starts again: what it has not written is dirty again
                    self._dirty_devices |= {k for k, _ in batch[0]} | set(batch[1])
                    self._dirty_devices.update(self._backlog)
                    self._backlog = []
                    self._dirty_apps |= {k for k, _ in batch[2]} | set(batch[3])
                    self._dirty_configs |= {k for k, _ in batch[4]} | set(batch[5])
                    self._wake.notify_all()
                    if self._closing:
                        return
                    self._wake.wait(1.0)
                continue
            with self._wake:
                if whole:
                    self._committed = upto
                self._error = None
                self._stats["batches"] += 1
                self._stats["rows_written"] += rows
                self._wake.notify_all()

    def _take_batch(self, keys: list[DeviceKey], apps_and_config: bool) -> tuple[
        list[tuple[DeviceKey, Device]], list[DeviceKey],
        list[tuple[str, App]], list[str],
        list[tuple[str, Any]], list[str],
    ]:  # fmt: skip
        put_d, del_d = [], []
        for key in keys:
            d = self.device(*key)
            if d is None:
                del_d.append(key)
            else:
                put_d.append((key, d))
        put_a: list[tuple[str, App]] = []
        del_a: list[str] = []
        put_c: list[tuple[str, Any]] = []
        del_c: list[str] = []
        if not apps_and_config:
            return put_d, del_d, put_a, del_a, put_c, del_c
        for app_id in self._dirty_apps:
            app = self._apps.get(app_id)
            if app is None:
                del_a.append(app_id)
            else:
                put_a.append((app_id, app))
        for top in self._dirty_configs:
            if top in self._config:
                put_c.append((top, self._config[top]))
            else:
                del_c.append(top)
        self._dirty_apps, self._dirty_configs = set(), set()
        return put_d, del_d, put_a, del_a, put_c, del_c

    def _commit(
        self,
        put_d: list[tuple[DeviceKey, Device]],
        del_d: list[DeviceKey],
        put_a: list[tuple[str, App]],
        del_a: list[str],
        put_c: list[tuple[str, Any]],
        del_c: list[str],
    ) -> int:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if put_d:
                _insert_devices(db, [_device_row(d) for _, d in put_d])
            if del_d:
                db.executemany("DELETE FROM devices WHERE aor = ? AND device_id = ?", del_d)
            if put_a:
                db.executemany(
                    "INSERT OR REPLACE INTO apps (app_id, data) VALUES (?, ?)",
                    [(i, json.dumps(unstructure_app(a))) for i, a in put_a],
                )
            if del_a:
                db.executemany("DELETE FROM apps WHERE app_id = ?", [(i,) for i in del_a])
            if put_c:
                db.executemany(
                    "INSERT OR REPLACE INTO config (key, value) VALUES (?, ?)",
                    [(k, json.dumps(v)) for k, v in put_c],
                )
            if del_c:
                db.executemany("DELETE FROM config WHERE key = ?", [(k,) for k in del_c])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return len(put_d) + len(del_d) + len(put_a) + len(del_a) + len(put_c) + len(del_c)

    # --- lifecycle ------------------------------------------------------------------
    def flush(self) -> None:
        """Block until every change made before the call is committed.

        Blocking: from trio code call it with `trio.to_thread.run_sync(store.flush)`.
        Raises StoreError when the writer cannot commit (it keeps retrying).
        """
        with self._wake:
            target = self._changes
            while self._committed < target:
                if not self._thread.is_alive():
                    raise StoreError("store writer is not running")
                self._flush_now = True
                self._wake.notify_all()
                self._wake.wait(0.5)
                if self._error is not None and self._committed < target:
                    raise StoreError(f"store commit failed: {self._error}") from self._error

    def close(self) -> None:
        """Write the newest refresh times, commit everything, stop the writer, close the file."""
        with self._wake:
            if self._closing:
                return
            for key in self._unwritten():  # refreshes kept in memory only
                self._dirty_device(key)
        try:
            self.flush()
        finally:
            with self._wake:
                self._closing = True
                self._wake.notify_all()
            self._thread.join(timeout=10.0)
            with self._wake:
                self._db.close()

    def __enter__(self) -> SqliteStore:
        return self

    def statistics(self) -> dict[str, int]:
        stats = super().statistics()
        stats["pending_writes"] = (
            len(self._dirty_devices) + len(self._backlog) + len(self._dirty_apps)
            + len(self._dirty_configs)
        )  # fmt: skip
        return stats


# keep the type checker honest: both implement the Protocol
_check_memory: Callable[[], Store] = MemoryStore
_check_sqlite: Callable[[str], Store] = SqliteStore
