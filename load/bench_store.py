"""Memory and start-up with many device records in the SQLite store (a benchmark: prints,
asserts nothing).

It writes a store file with N RFC 8599 devices (one per AOR, a 64-hex APNs token, an
instance id and a Contact carrying the push params, as a Linphone phone registers)
straight into the store's schema, then measures:

* in a fresh interpreter, `SqliteStore(path)`: open time, RSS growth per record, and
  the CPU time of `store.devices(aor)` (the push path's lookup) for random AORs;
* `pusher-trio serve` on that store: time from exec to its "pusher-trio running" log
  line, its RSS then, the same for an empty store (the per-record figure is the
  difference), and the round trip of `devices.list {aor}` over the control socket.

    python -m load.bench_store [--records 1000000] [--lookups 2000] [--refresh 200000]
                               [--rounds 2] [--skip-serve]

With --refresh N, N of the loaded devices then register again through a
RegistrationTable (the sniffer's path), --rounds times 60 s apart: the first round
writes the records older than the refresh interval, the next ones are refreshes kept
in memory only, as with phones refreshing every minute. The RSS per record is
printed after each round (the steady state), and the lookup again after the last.

Figures depend on the machine and its load (other processes slow a start-up); RSS is
from /proc/PID/status (VmRSS), after the start-up's gc.collect().
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TEAM = "ABCDE12345"
BUNDLE = "com.example.phone"
USER_AGENT = "LinphoneiOS/5.2.0 (iPhone) LinphoneSDK/5.2.0"
MAX_RECORDS = 5_000_000  # every run is bounded
STARTUP_TIMEOUT = 300.0


def aor(n: int) -> str:
    return f"user{n:07d}@example.com"


def identities(records: int) -> Any:
    """(n, token, instance id, contact, age) of each device, the same in every call."""
    rng = random.Random(11)
    for n in range(records):
        token = rng.randbytes(32).hex()
        instance = f"urn:uuid:{rng.randbytes(16).hex()}"
        contact = (
            f"sip:user{n:07d}@10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}:5060;"
            f"transport=udp;pn-provider=apns;pn-prid={token};pn-param={TEAM}.{BUNDLE}.voip"
        )
        yield n, token, instance, contact, rng.random() * 3600


def register(n: int, instance: str, contact: str) -> bytes:
    """The REGISTER that device n refreshes with (its 2xx makes the same record)."""
    return (
        f"REGISTER sip:example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.1.2.3:5060;branch=z9hG4bK{n}\r\n"
        f"From: <sip:user{n:07d}@example.com>;tag={n}\r\n"
        f"To: <sip:user{n:07d}@example.com>\r\n"
        f"Call-ID: refresh-{n}\r\nCSeq: 2 REGISTER\r\n"
        f"User-Agent: {USER_AGENT}\r\n"
        f'Contact: <{contact}>;+sip.instance="<{instance}>";expires=600\r\n'
        "Content-Length: 0\r\n\r\n"
    ).encode()


def build(path: str, records: int) -> float:
    """Write `records` devices in the store's schema; returns the seconds it took."""
    from pusher_trio.model import Device
    from pusher_trio.store import _DEVICE_COLUMNS, _SCHEMA, _device_row  # the real schema

    start = time.perf_counter()
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(_SCHEMA)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = OFF")
    now = time.time()
    extra = {"source": "rfc8599", "team_id": TEAM}

    def rows() -> Any:
        for n, token, instance, contact, age in identities(records):
            yield _device_row(
                Device(
                    aor=aor(n),
                    device_id=instance,
                    type="apple",
                    app=BUNDLE,
                    token=token,
                    push_type="voip",
                    extra=extra,
                    user_agent=USER_AGENT,
                    contact=contact,
                    last_registered=now - age,
                )
            )

    db.execute("BEGIN")
    db.executemany(
        f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows()
    )
    db.execute("COMMIT")
    db.close()
    return time.perf_counter() - start


def rss_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_in_process(
    path: str, records: int, lookups: int, refresh: int, rounds: int = 1
) -> dict[str, Any]:
    """Run in a fresh interpreter (--open): open the store, measure, print JSON.

    Then `refresh` devices register again through a RegistrationTable (REGISTER +
    200, the same Contact: the sniffer's path), `rounds` times 60 s apart, and the RSS
    growth is measured after each round: a refreshed record is a new Device from the
    parser, and a refresh within the write interval is remembered in memory only.
    """
    import gc

    from pusher_trio.store import SqliteStore

    gc.collect()
    before = rss_kib()
    start = time.perf_counter()
    store = SqliteStore(path)
    opened = time.perf_counter() - start
    gc.collect()
    after = rss_kib()
    rng = random.Random(5)
    aors = [aor(rng.randrange(records)) for _ in range(lookups)] if records else []

    def lookup() -> float:
        nonlocal found
        t0 = time.process_time()
        for a in aors:
            found += len(store.devices(a))
        return time.process_time() - t0

    found = 0
    lookup_cpu = lookup()
    count = store.device_count()
    refreshed = refresh_growth = 0.0
    growth: list[float] = []
    lookup_after = 0.0
    if refresh:
        from pusher_trio.registrations import Registered, RegistrationTable

        table = RegistrationTable()
        now = time.time()
        base = after
        for _ in range(rounds):
            refreshed = 0
            for n, _token, instance, contact, _age in identities(min(refresh, records)):
                table.apply_register(register(n, instance, contact), "r", n, now, {})
                for event in table.apply_response("r", n, 200, now, {}):
                    if isinstance(event, Registered) and store.put_devices(event.devices):
                        raise RuntimeError(f"device {n}: the refresh changed the record")
                refreshed += 1
            store.flush()
            gc.collect()
            growth.append((rss_kib() - base) * 1024)
            now += 60.0
        refresh_growth = growth[-1]
        lookup_after = lookup()
    store.close()
    return {
        "growth_per_round": [g / refreshed for g in growth],
        "lookup_after_us": lookup_after / len(aors) * 1e6 if aors else 0.0,
        "records": count,
        "open_seconds": opened,
        "rss_growth_kib": after - before,
        "bytes_per_record": (after - before) * 1024 / count if count else 0.0,
        "lookup_us": lookup_cpu / len(aors) * 1e6 if aors else 0.0,
        "found": found,
        "refreshed": refreshed,
        "bytes_per_refresh": refresh_growth / refreshed if refreshed else 0.0,
    }


CONFIG = """[control]
unix_socket = "{folder}/control.sock"
tcp = ""
[sniffer]
listen = ["udp:127.0.0.1:0"]
[store]
path = "{db}"
[log]
level = "info"
format = "json"
"""


def serve_once(db: str, records: int, lookups: int) -> dict[str, Any]:
    """Start `pusher-trio serve` on `db`; start-up time, RSS, devices.list round trip."""
    import trio

    from load.serve import ServeProcess
    from pusher_trio.control.client import open_control

    folder = Path(tempfile.mkdtemp(prefix="bench-store-serve-"))
    config = folder / "pusher.toml"
    config.write_text(CONFIG.format(folder=folder, db=db))
    serve = ServeProcess(config, timeout=STARTUP_TIMEOUT)
    try:
        rss = rss_kib(serve.proc.pid)
        rng = random.Random(7)
        aors = [aor(rng.randrange(records)) for _ in range(lookups)] if records else []

        async def round_trips() -> list[float]:
            times = []
            async with open_control(serve.socket) as control:
                for a in aors:
                    t0 = time.perf_counter()
                    result = await control.call("devices.list", {"aor": a})
                    times.append(time.perf_counter() - t0)
                    if len(result["devices"]) != 1:
                        raise RuntimeError(f"devices.list {a}: {result}")
            return times

        times = trio.run(round_trips)
    finally:
        serve.terminate()
    return {
        "startup_seconds": serve.startup,
        "rss_kib": rss,
        "devices_list_ms_median": statistics.median(times) * 1e3 if times else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load.bench_store")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument(
        "--refresh", type=int, default=200_000, help="devices refreshed after the open"
    )
    parser.add_argument("--rounds", type=int, default=2, help="refresh rounds, 60 s apart")
    parser.add_argument("--open", nargs=2, metavar=("PATH", "RECORDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.open:
        print(json.dumps(open_in_process(args.open[0], int(args.open[1]), args.lookups,
                                         args.refresh, max(1, min(args.rounds, 10)))))  # fmt: skip
        return 0
    records = min(args.records, MAX_RECORDS)
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        db = f"{tmp}/pusher.db"
        seconds = build(db, records)
        size = os.path.getsize(db)
        print(f"store file: {records:,} devices written in {seconds:.1f} s, "
              f"{size / 2**20:,.0f} MiB ({size / max(records, 1):,.0f} bytes per record)",
              flush=True)  # fmt: skip
        cmd = [sys.executable, "-m", "load.bench_store", "--lookups", str(args.lookups),
               "--refresh", str(args.refresh), "--rounds", str(args.rounds)]  # fmt: skip
        proc = subprocess.run([*cmd, "--open", db, str(records)], check=True,
                              capture_output=True, text=True, timeout=STARTUP_TIMEOUT)  # fmt: skip
        r = json.loads(proc.stdout)
        print(f"SqliteStore in a fresh interpreter: {r['records']:,} records opened in "
              f"{r['open_seconds']:.2f} s; RSS +{r['rss_growth_kib'] / 1024:,.0f} MiB = "
              f"{r['bytes_per_record']:,.0f} bytes per record; store.devices(aor) "
              f"{r['lookup_us']:.2f} us CPU", flush=True)  # fmt: skip
        if r["refreshed"]:
            print(f"then {r['refreshed']:,.0f} of them refreshed through a RegistrationTable "
                  f"(same Contact; on disk when older than the refresh interval), "
                  f"{len(r['growth_per_round'])} round(s) 60 s apart:", flush=True)  # fmt: skip
            for i, g in enumerate(r["growth_per_round"], 1):
                total = r["bytes_per_record"] + g * r["refreshed"] / max(r["records"], 1)
                print(f"  after round {i}: RSS +{g:,.0f} bytes per refreshed record, "
                      f"{total:,.0f} bytes per record in all", flush=True)  # fmt: skip
            print(f"  store.devices(aor) then {r['lookup_after_us']:.2f} us CPU", flush=True)
        if args.skip_serve:
            return 0
        empty = f"{tmp}/empty.db"
        build(empty, 0)
        base = serve_once(empty, 0, 0)
        full = serve_once(db, records, args.lookups)
        per_record = (full["rss_kib"] - base["rss_kib"]) * 1024 / max(records, 1)
        print(f"pusher-trio serve, empty store: start-up {base['startup_seconds']:.2f} s, "
              f"RSS {base['rss_kib'] / 1024:,.0f} MiB", flush=True)  # fmt: skip
        print(f"pusher-trio serve, {records:,} records: start-up "
              f"{full['startup_seconds']:.2f} s, RSS {full['rss_kib'] / 1024:,.0f} MiB "
              f"(+{per_record:,.0f} bytes per record over the empty store); devices.list "
              f"round trip median {full['devices_list_ms_median']:.2f} ms", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
