# ruff: noqa: ASYNC110  (the driver polls the nodes' counters)
"""The Redis backend's figures (DESIGN §10; a benchmark: prints, asserts nothing).

    python -m load.bench_redis wake     [--calls 1000]
    python -m load.bench_redis learn    [--seconds 3] [--rates 4000,8000,...]
    python -m load.bench_redis records  [--records 1000000] [--lookups 2000]
                                        [--hash-max-listpack-value N]

`wake`: two sidecars (`app.run`, in this process, a pusher that answers Delivered at
once) on one redis-server; `--calls` phones learned, half their calls parked on
node A, half on node B, through each node's control socket (TCP). Then each phone's
REGISTER + 200 copy goes to node A's sniffer, one phone after the other (each wake
measured alone, while the others stay parked); the latency is the copy sent → that
call's `registered` reply read, for the calls parked on B (cross-node) and on A
(local), p50/p99 from one run. The driver and both nodes share this process's CPU.

`learn`: the sniffer fed distinct REGISTER + 200 pairs (a new AOR each, as a storm
of new phones) by another process at paced rates, once with the SQLite store and once
with the Redis store, in the same run; per rate: datagrams lost, and whether every
record reached its store.

`records`: `--records` device records written into Redis (pipelined), then Redis's
used_memory per record, a node's RSS after `--lookups` cold reads of random AORs
(the cache bound stays 20,000 AORs), and the cold read's p50/p99; then where one
AOR's bytes go (its key's encoding, MEMORY USAGE, and the lengths of key, field and
record): used_memory per record less MEMORY USAGE is the keyspace's own entry.
`--hash-max-listpack-value N` sets that Redis option first (CONFIG SET), as an
operator would in redis.conf (DESIGN §10: 256 keeps an AOR's hash a listpack).

Every figure depends on this machine's load at the time (other work shares the
CPUs): quote them with that caveat, and prefer the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

MAX_SECONDS = 120.0  # every part is bounded in time


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


def start_redis(folder: Path) -> Any:
    from tests.redis_harness import RedisServer

    return RedisServer(folder).start()


# --- wake: cross-node wake latency ---------------------------------------------------------


class NullPusher:
    async def send(self, app: Any, device: Any, message: Any, *, expires_at: float) -> Any:
        from pusher_trio.model import Delivered

        return Delivered("bench")

    async def aclose(self) -> None:
        return None


async def wake(calls: int) -> dict[str, Any]:
    from pusher_trio.app import run
    from pusher_trio.config import parse_config
    from pusher_trio.control.client import open_control
    from pusher_trio.demo import Mirror, Phone
    from pusher_trio.model import App, AppleCertAuth
    from pusher_trio.store import unstructure_app

    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        redis = start_redis(Path(tmp))
        try:
            nodes = []
            async with trio.open_nursery() as nursery:
                for name in "ab":
                    folder = Path(tmp) / name
                    folder.mkdir()
                    text = (
                        '[control]\nunix_socket = "-"\ntcp = "127.0.0.1:0"\n'
                        '[sniffer]\nlisten = ["udp:127.0.0.1:0"]\n'
                        f'[store]\nbackend = "redis"\nredis_url = "{redis.url}"\n'
                        f"[push]\nmax_waiting = {calls * 2}\nwait_timeout = 60\n"
                        '[log]\nlevel = "error"\n'
                    )
                    config = parse_config(text, str(folder / "pusher.toml"))
                    running = await nursery.start(
                        lambda task_status, c=config: run(
                            c, task_status=task_status, handle_signals=False, pusher=NullPusher()
                        )
                    )
                    nodes.append(running)
                a, b = nodes
                app = App("org.example.bench", "apple", AppleCertAuth("-"))
                await a.service.call("apps.add", {"app": unstructure_app(app)})
                phones = [
                    Phone("iOS", f"w{i}", "198.51.100.7", 50600,
                          f"pn-provider=apns;pn-prid={secrets.token_hex(32)};"
                          "pn-param=TEAM123456.org.example.bench.voip", "Bench/1.0")
                    for i in range(calls)
                ]  # fmt: skip
                mirror = Mirror(a.sniffer[0])
                for i, p in enumerate(phones):
                    mirror.send(p, p.register(600))
                    if i % 200 == 0:
                        await trio.sleep(0.01)
                with trio.fail_after(60):
                    while a.store.queued_writes or not all(a.store.devices(p.aor) for p in phones):
                        await trio.sleep(0.05)
                    while "org.example.bench" not in b.store.apps():
                        await trio.sleep(0.01)
                sent: dict[str, float] = {}
                latency: dict[str, list[float]] = {"cross": [], "local": []}
                failures: list[str] = []

                answered = {p.aor: trio.Event() for p in phones}

                async def park(node: Any, kind: str, p: Phone, client: Any) -> None:
                    try:
                        result = await client.call(
                            "push", {"aor": p.aor, "call_id": f"c-{p.user}", "timeout": 60}
                        )
                    except Exception as exc:
                        failures.append(f"{type(exc).__name__}: {exc}")
                        return
                    finally:
                        answered[p.aor].set()
                    if result.get("status") == "registered" and p.aor in sent:
                        latency[kind].append((time.perf_counter() - sent[p.aor]) * 1000)

                with trio.fail_after(MAX_SECONDS):
                    async with (
                        open_control(f"127.0.0.1:{a.control_port}") as ca,
                        open_control(f"127.0.0.1:{b.control_port}") as cb,
                        trio.open_nursery() as calls_nursery,
                    ):
                        for i, p in enumerate(phones):
                            node, kind, client = (b, "cross", cb) if i % 2 else (a, "local", ca)
                            calls_nursery.start_soon(park, node, kind, p, client)
                        while a.waiters.waiting + b.waiters.waiting < calls:
                            await trio.sleep(0.01)
                        await trio.sleep(0.5)  # every push sent and answered
                        for p in phones:
                            sent[p.aor] = time.perf_counter()
                            mirror.send(p, p.register(600))
                            await answered[p.aor].wait()
                mirror.close()
                result = {
                    "calls": calls,
                    "failures": len(failures),
                    "first_failure": failures[0] if failures else None,
                    "pushes_a": a.service.statistics()["pushes"]["delivered"],
                    "pushes_b": b.service.statistics()["pushes"]["delivered"],
                }
                for kind, values in latency.items():
                    result[kind] = {
                        "n": len(values),
                        "p50_ms": round(pct(values, 0.5), 3),
                        "p99_ms": round(pct(values, 0.99), 3),
                        "max_ms": round(max(values), 3) if values else None,
                    }
                for node in nodes:
                    node.shutdown()
            return result
        finally:
            redis.stop()


# --- learn: REGISTER learning rate, Redis vs SQLite ------------------------------------------


async def learn_once(rate: float, seconds: float, kind: str, redis_url: str) -> dict[str, Any]:
    from load.bench_sniffer import udp_counters
    from pusher_trio.registrations import RegistrationTable
    from pusher_trio.sniffer import Sniffer

    count = int(rate * seconds)
    count -= count % 2
    with tempfile.TemporaryDirectory(prefix="bench-learn-") as tmp:
        async with trio.open_nursery() as nursery:
            if kind == "redis":
                from pusher_trio.config import StoreConfig
                from pusher_trio.redis.cluster import Cluster

                prefix = f"learn{secrets.token_hex(3)}:"
                cluster = Cluster.from_config(
                    StoreConfig(backend="redis", redis_url=redis_url, key_prefix=prefix)
                )
                await nursery.start(cluster.run)
                store: Any = cluster.store
                on_registered = cluster.wrap_registered(lambda event: None)
            else:
                from pusher_trio.store import SqliteStore

                store = SqliteStore(f"{tmp}/pusher.db")
                on_registered = lambda event: None  # noqa: E731
            sniffer = Sniffer(
                ["udp:127.0.0.1:0"], ["127.0.0.0/8"], "", RegistrationTable(), store,
                on_registered=on_registered,
            )  # fmt: skip
            ((host, port),) = await nursery.start(sniffer.serve)
            snmp0 = udp_counters()
            cmd = [sys.executable, "-m", "load.bench_sniffer", "--blast", f"{host}:{port}",
                   str(count), str(rate), str(count // 2)]  # fmt: skip
            started = time.perf_counter()
            proc = await trio.run_process(cmd, capture_stdout=True, cwd=os.getcwd())
            blasted = json.loads(proc.stdout)
            with trio.move_on_after(30):
                while sniffer.statistics()["received"] < blasted["sent"]:
                    await trio.sleep(0.02)
                if kind == "redis":
                    while store.queued_writes:
                        await trio.sleep(0.02)
                else:
                    await trio.to_thread.run_sync(store.flush)
            drained = time.perf_counter() - started
            stats = sniffer.statistics()
            snmp1 = udp_counters()
            stored = store.device_count()
            redis_stats: dict[str, int] = {}
            if kind == "redis":
                await store._refresh_count()
                stored = store.device_count()
                redis_stats = store.statistics()
            nursery.cancel_scope.cancel()
        if kind != "redis":
            store.close()
    return {
        "store": kind,
        "rate": rate,
        "offered": round(blasted["sent"] / blasted["seconds"]),
        "lost": blasted["sent"] - stats["received"],
        "rcvbuf_errors": snmp1.get("RcvbufErrors", 0) - snmp0.get("RcvbufErrors", 0),
        "registrations": stats["registrations"],
        "stored": int(stored),
        "all_stored_after_s": round(drained, 2),
        **({"pipelines": redis_stats["pipelines"]} if kind == "redis" else {}),
    }


# --- records: memory per record, RSS, cold lookups -------------------------------------------


async def records(n: int, lookups: int, listpack_value: int | None = None) -> dict[str, Any]:
    from pusher_trio.config import StoreConfig
    from pusher_trio.model import Device
    from pusher_trio.redis.cluster import Cluster
    from pusher_trio.redis.store import _encode_device

    with tempfile.TemporaryDirectory(prefix="bench-records-") as tmp:
        redis = start_redis(Path(tmp))
        try:

            def used() -> int:
                info = redis.command("INFO", "memory").decode()
                return int(info.split("used_memory:", 1)[1].split("\r\n", 1)[0])

            if listpack_value is not None:
                redis.command("CONFIG", "SET", "hash-max-listpack-value", str(listpack_value))
            cluster = Cluster.from_config(StoreConfig(backend="redis", redis_url=redis.url))
            async with trio.open_nursery() as nursery:
                await nursery.start(cluster.run)
                client = cluster.client
                before = used()
                started = time.perf_counter()
                batch = []
                for i in range(n):
                    token = secrets.token_hex(32)  # APNs tokens are random: no easy compression
                    d = Device(
                        aor=f"user{i}@example.com", device_id=f"<urn:uuid:{i:08d}-0000-4000-8000-000000000000>",
                        type="apple", app="org.example.phone", token=token,
                        push_type="voip", extra={"source": "rfc8599", "team_id": "TEAM123456"},
                        user_agent="LinphoneiOS/5.2.0 (iPhone) LinphoneSDK/5.2.0",
                        contact=f"sip:user{i}@10.1.2.3:5060;transport=udp;pn-provider=apns;"
                        f"pn-prid={token};pn-param=TEAM123456.org.example.phone.voip",
                        last_registered=1.7e9 + i,
                    )  # fmt: skip
                    batch.append(("HSET", f"pusher:d:{d.aor}", d.device_id, _encode_device(d)))
                    if len(batch) == 2000:
                        await client.pipeline(batch)
                        batch = []
                if batch:
                    await client.pipeline(batch)
                await client.execute("INCRBY", "pusher:devices", n)
                load_s = time.perf_counter() - started
                after = used()
                breakdown = await _where_it_goes(client, f"pusher:d:user{n // 2}@example.com")
                rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                times = []
                for _ in range(lookups):
                    aor = f"user{random.randrange(n)}@example.com"
                    t0 = time.perf_counter()
                    found = await cluster.store.fetch_devices(aor)
                    times.append((time.perf_counter() - t0) * 1000)
                    assert found, aor
                rss = _rss_kib()
                stats = cluster.store.statistics()
                nursery.cancel_scope.cancel()
            return {
                "records": n,
                "write_s": round(load_s, 2),
                "writes_per_s": round(n / load_s),
                "redis_bytes_per_record": round((after - before) / n, 1),
                "node_rss_mib": round(rss / 1024, 1),
                "node_peak_rss_mib_before_lookups": round(rss0 / 1024, 1),
                "cached_aors": stats["cached_aors"],
                "cold_lookup_p50_ms": round(pct(times, 0.5), 3),
                "cold_lookup_p99_ms": round(pct(times, 0.99), 3),
                **breakdown,
            }
        finally:
            redis.stop()


async def _where_it_goes(client: Any, key: str) -> dict[str, Any]:
    """One AOR's key as Redis holds it: its encoding (a record longer than
    hash-max-listpack-value makes the hash a hashtable: a dict, its table and an entry
    per field, each a separate allocation), MEMORY USAGE (key, value object and
    allocations, allocator size classes included), and the lengths that fill them."""
    (field,) = await client.execute("HKEYS", key)
    encoding, usage, value_len, limit = await client.pipeline(
        [
            ("OBJECT", "ENCODING", key),
            ("MEMORY", "USAGE", key, "SAMPLES", "0"),
            ("HSTRLEN", key, field),
            ("CONFIG", "GET", "hash-max-listpack-value"),
        ]
    )
    return {
        "sample_key_encoding": encoding.decode(),
        "sample_key_memory_usage": usage,
        "sample_key_name_bytes": len(key.encode()),
        "sample_field_bytes": len(field),
        "sample_value_bytes": value_len,
        "hash_max_listpack_value": int(limit[1]) if isinstance(limit, list) else None,
    }


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load.bench_redis")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("wake")
    p.add_argument("--calls", type=int, default=1000)
    p = sub.add_parser("learn")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--rates", default="4000,8000,12000,16000,20000,24000")
    p = sub.add_parser("records")
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--lookups", type=int, default=2000)
    p.add_argument("--hash-max-listpack-value", type=int, default=None)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    print("(figures from a machine shared with other work: compare within one run)")
    if args.what == "wake":
        print(json.dumps(trio.run(wake, args.calls), indent=1))
    elif args.what == "records":
        print(
            json.dumps(
                trio.run(records, args.records, args.lookups, args.hash_max_listpack_value),
                indent=1,
            )
        )
    else:
        with tempfile.TemporaryDirectory(prefix="bench-learn-redis-") as tmp:
            redis = start_redis(Path(tmp))
            try:
                best = {"sqlite": 0.0, "redis": 0.0}
                for rate in (float(r) for r in args.rates.split(",")):
                    for kind in ("sqlite", "redis"):
                        r = trio.run(learn_once, rate, min(args.seconds, 10.0), kind, redis.url)
                        print(json.dumps(r), flush=True)
                        if r["lost"] == 0 and r["stored"] >= r["registrations"]:
                            best[kind] = max(best[kind], rate)
                print(
                    json.dumps(
                        {
                            "highest_paced_rate_without_loss_datagrams_per_s": best,
                            "pairs_per_s": {k: v / 2 for k, v in best.items()},
                        }
                    )
                )
            finally:
                redis.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
