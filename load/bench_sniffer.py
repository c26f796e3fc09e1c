"""How many datagrams/s the sniffer keeps up with (a benchmark: prints, asserts nothing).

Another process blasts HEPv3 copies of REGISTER + 200 OK pairs (a ~0.8 KB REGISTER
with digest Authorization and an RFC 8599 Contact, as Kamailio's siptrace sends
them) at a sniffer on 127.0.0.1, first paced at the rate Kamailio mirrors at its
ceiling on this kind of machine (27.7k datagrams/s), then as fast as it can. For
each run it prints the datagrams received / parsed / dropped, the registrations
learned, the sniffer's CPU time, and the kernel's UDP RcvbufErrors (datagrams the
kernel dropped because the socket buffer was full; system-wide counter).

    python -m load.bench_sniffer [--rate 27700] [--seconds 5] [--store sqlite|memory]
                                 [--unique]

`--unique` gives every pair its own AOR and token, as the load storm's sipp does
(every 2xx a new device record written); by default 20,000 AORs repeat, so later
rounds are refreshes that cost no store write, answered from the table's summary cache
(a compact entry per phone since it holds the device, not the whole summary: 20,000
fit); the "handler alone" line cycles 5,000 and shows both cases. The CPU is split between the reader
(the trio thread) and the rest of the process (the store's writer thread).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import sys
import tempfile
import time
from typing import Any

KAMAILIO_RATE = 27_700  # datagrams/s: Kamailio 5.6 + siptrace HEPv3 at ~13.8k REGISTER/s
USERS = 20_000  # distinct AORs; later rounds are refreshes (no store write)
MAX_SECONDS = 30.0  # every run is bounded in time
STEPS = (32_000, 36_000, 40_000, 45_000, 50_000)  # datagrams/s tried after the target


def build_datagrams(users: int, rounds: int = 1) -> list[bytes]:
    """HEP REGISTER + 200 pairs; Call-ID/CSeq unique per pair across rounds."""
    import sip

    out = []
    for r in range(rounds):
        for u in range(users):
            call_id = f"bench-{u}-{os.getpid()}@10.1.2.3"
            token = f"{u:08x}" * 8
            register = (
                "REGISTER sip:example.com SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 10.1.2.3:5060;rport;branch=z9hG4bK.{u}r{r}\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:user{u}@example.com>;tag=f{u}\r\n"
                f"To: <sip:user{u}@example.com>\r\n"
                f"Call-ID: {call_id}\r\n"
                f"CSeq: {r + 2} REGISTER\r\n"
                "User-Agent: LinphoneiOS/5.2.0 (iPhone) LinphoneSDK/5.2.0\r\n"
                "Supported: replaces, outbound, gruu, path\r\n"
                f'Authorization: Digest realm="example.com", nonce="ZmE2NzQ{u:06d}xYz", '
                'algorithm=MD5, opaque="1234abcd", username="user", uri="sip:example.com", '
                'response="0123456789abcdef0123456789abcdef", cnonce="abcdef", nc=00000001, qop=auth\r\n'
                f"Contact: <sip:user{u}@10.1.2.3:5060;transport=udp;pn-provider=apns;"
                f"pn-prid={token};pn-param=ABCDE12345.com.example.phone.voip>;"
                f'+sip.instance="<urn:uuid:00000000-0000-0000-0000-{u:012d}>";expires=3600\r\n'
                "Expires: 3600\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            ok = (
                "SIP/2.0 200 OK\r\n"
                f"Via: SIP/2.0/UDP 10.1.2.3:5060;rport=5060;branch=z9hG4bK.{u}r{r}\r\n"
                f"From: <sip:user{u}@example.com>;tag=f{u}\r\n"
                f"To: <sip:user{u}@example.com>;tag=t{u}\r\n"
                f"Call-ID: {call_id}\r\n"
                f"CSeq: {r + 2} REGISTER\r\n"
                f"Contact: <sip:user{u}@10.1.2.3:5060;transport=udp>;expires=3600\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
            kw: dict[str, Any] = {"src": ("10.1.2.3", 5060), "dst": ("10.0.0.1", 5060)}
            out.append(sip.encode_hep(register, **kw))
            out.append(sip.encode_hep(ok, src=kw["dst"], dst=kw["src"]))
    return out


def blast(host: str, port: int, count: int, rate: float, users: int) -> dict[str, float]:
    """Send `count` datagrams (cycling through the pairs) at `rate`/s (0: flat out)."""
    datagrams = build_datagrams(users)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    target = (host, port)
    send = sock.sendto
    n = len(datagrams)
    sent = 0
    errors = 0
    start = time.perf_counter()
    deadline = start + MAX_SECONDS
    chunk = int(os.environ.get("BENCH_SNIFFER_CHUNK", "64"))  # datagrams sent back to back
    while sent < count:
        if rate:
            due = start + sent / rate
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now) if due - now > 0.001 else None
                continue
        for i in range(sent, min(sent + chunk, count)):
            try:
                send(datagrams[i % n], target)
            except OSError:  # ENOBUFS: the sender outran the kernel
                errors += 1
        sent = min(sent + chunk, count)
        if time.perf_counter() > deadline:
            break
    seconds = time.perf_counter() - start
    return {"sent": sent, "seconds": seconds, "send_errors": errors}


def thread_cpu() -> tuple[float, float]:
    """(main thread, other threads) CPU seconds of this process, from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    main = other = 0.0
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return time.process_time(), 0.0
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:  # the thread ended
            continue
        cpu = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        if int(tid) == os.getpid():
            main += cpu
        else:
            other += cpu
    return main, other


def udp_counters() -> dict[str, int]:
    try:
        with open("/proc/net/snmp") as f:
            lines = [line.split() for line in f if line.startswith("Udp:")]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:], strict=False)}


async def run_once(
    rate: float, seconds: float, store_kind: str, freeze: bool = True, unique: bool = False
) -> dict[str, Any]:
    import trio

    from pusher_trio.registrations import RegistrationTable
    from pusher_trio.sniffer import Sniffer
    from pusher_trio.store import MemoryStore, SqliteStore

    count = int(rate * seconds) if rate else int(KAMAILIO_RATE * seconds)
    count -= count % 2
    with tempfile.TemporaryDirectory(prefix="bench-sniffer-") as tmp:
        store = MemoryStore() if store_kind == "memory" else SqliteStore(f"{tmp}/pusher.db")
        if freeze:
            # What the service should do once started (imports done, store loaded): move
            # the long-lived objects out of the collector's way. Worth ~20 % here.
            gc.freeze()
        sniffer = Sniffer(
            ["udp:127.0.0.1:0"],
            ["127.0.0.0/8"],
            "",
            RegistrationTable(),
            store,
            on_registered=lambda event: None,
        )
        async with trio.open_nursery() as nursery:
            ((host, port),) = await nursery.start(sniffer.serve)
            snmp0 = udp_counters()
            cmd = [sys.executable, "-m", "load.bench_sniffer", "--blast",
                   f"{host}:{port}", str(count), str(rate),
                   str(count // 2 if unique else USERS)]  # fmt: skip
            result: dict[str, Any] = {}

            async def blaster() -> None:
                proc = await trio.run_process(cmd, capture_stdout=True, cwd=os.getcwd())
                result.update(json.loads(proc.stdout))

            cpu0 = 0.0
            t_first = t_last = 0.0
            last = 0
            with trio.fail_after(MAX_SECONDS + 30):
                async with trio.open_nursery() as inner:
                    inner.start_soon(blaster)
                    # the clock starts with the first datagram (the blaster builds its
                    # datagrams first) and stops with the last one handled
                    while not result or time.perf_counter() - t_last < 0.3:
                        received = sniffer.statistics()["received"]
                        if received and not t_first:
                            t_first, cpu0 = time.perf_counter(), time.process_time()
                            threads0 = thread_cpu()
                        if received != last:
                            last, t_last = received, time.perf_counter()
                            cpu1 = time.process_time()
                            threads1 = thread_cpu()
                        if result and received >= result["sent"]:
                            break
                        await trio.sleep(0.01)
            elapsed = max(t_last - t_first, 1e-9)
            cpu = cpu1 - cpu0 if t_first else 0.0
            # the writer commits the last batch after the last datagram: count it too
            await trio.to_thread.run_sync(store.flush)
            threads2 = thread_cpu()
            if t_first:
                cpu = time.process_time() - cpu0
            reader_cpu = threads1[0] - threads0[0] if t_first else 0.0
            writer_cpu = threads2[1] - threads0[1] if t_first else 0.0
            blasted = result
            snmp1 = udp_counters()
            stats = sniffer.statistics()
            nursery.cancel_scope.cancel()
        store.close()
    dropped = {k: v for k, v in stats.items() if k.startswith("dropped_") and v}
    return {
        "offered_rate": blasted["sent"] / blasted["seconds"],
        "sent": blasted["sent"],
        "received": stats["received"],
        "parsed": stats["parsed"],
        "lazy_registers": stats["registers_lazy"],
        "fast_responses": stats["responses_fast"],
        "registrations": stats["registrations"],
        "dropped": dropped,
        "errors": stats["errors"],
        "received_rate": stats["received"] / elapsed,
        "per_cpu_second": stats["received"] / cpu if cpu else 0.0,
        "reader_cpu": reader_cpu,
        "writer_cpu": writer_cpu,
        "devices_changed": stats["devices_changed"],
        "rcvbuf_errors": snmp1.get("RcvbufErrors", 0) - snmp0.get("RcvbufErrors", 0),
        "rcvbuf_bytes": stats["rcvbuf_bytes"],
        "lost": blasted["sent"] - stats["received"],
    }


def handler_capacity(pairs: int = 5_000, rounds: int = 5, summary_cache: bool = True) -> float:
    """Datagrams per CPU-second of Sniffer.handle_datagram alone (no sockets, no loop).

    CPU time, best of `rounds`: the figure other processes on the box disturb least.
    The rounds repeat the same pairs, so with `summary_cache` they are refreshes
    answered from the table's cache; without it every REGISTER is parsed (a new
    phone, or a changed Contact).
    """
    from pusher_trio.registrations import RegistrationTable
    from pusher_trio.sniffer import Sniffer
    from pusher_trio.store import MemoryStore

    datagrams = build_datagrams(pairs)
    gc.freeze()
    table = RegistrationTable(summary_cache=pairs if summary_cache else 0)
    sniffer = Sniffer(["udp:127.0.0.1:0"], ["127.0.0.0/8"], "", table,
                      MemoryStore(), on_registered=lambda event: None)  # fmt: skip
    handle = sniffer.handle_datagram
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for d in datagrams:
            handle(d, "127.0.0.1", 1000.0)
        best = min(best, time.process_time() - t0)
    return len(datagrams) / best if best > 0 else 0.0


def refresh_rounds(pairs: int = USERS, rounds: int = 5) -> list[tuple[float, float]]:
    """CPU µs per datagram and share of summary-cache hits, per round of `pairs` phones.

    Sniffer.handle_datagram alone with the table's defaults (in-process, no sockets):
    the first round registers new phones, the later ones are their refreshes.
    """
    from pusher_trio.registrations import RegistrationTable
    from pusher_trio.sniffer import Sniffer
    from pusher_trio.store import MemoryStore

    datagrams = build_datagrams(pairs)
    gc.freeze()
    table = RegistrationTable()
    sniffer = Sniffer(["udp:127.0.0.1:0"], ["127.0.0.0/8"], "", table,
                      MemoryStore(), on_registered=lambda event: None)  # fmt: skip
    handle = sniffer.handle_datagram
    out = []
    for r in range(rounds):
        hits = table.statistics()["summary_hits"]
        t0 = time.process_time()
        for d in datagrams:
            handle(d, "127.0.0.1", 1000.0 + r)
        cpu = time.process_time() - t0
        out.append(
            (cpu / len(datagrams) * 1e6, (table.statistics()["summary_hits"] - hits) / pairs)
        )
    return out


def report(title: str, r: dict[str, Any]) -> None:
    print(
        f"{title}: offered {r['offered_rate']:,.0f}/s ({r['sent']:,} datagrams); "
        f"received {r['received']:,} = {r['received_rate']:,.0f}/s "
        f"({r['per_cpu_second']:,.0f} per sniffer CPU-second: reader thread "
        f"{r['reader_cpu']:.2f} s, other threads {r['writer_cpu']:.2f} s, "
        f"{r['devices_changed']:,} device records written); "
        f"{r['lazy_registers']:,} REGISTERs kept as bytes until their 2xx, "
        f"{r['fast_responses']:,} responses classified without the parser, "
        f"{r['parsed']:,} parsed in the sniffer; "
        f"registrations {r['registrations']:,}; dropped {r['dropped'] or 0}; "
        f"errors {r['errors']}; lost {r['lost']:,}; kernel UDP RcvbufErrors "
        f"+{r['rcvbuf_errors']:,}; SO_RCVBUF {r['rcvbuf_bytes']:,} bytes",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load.bench_sniffer")
    parser.add_argument("--rate", type=float, default=KAMAILIO_RATE)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
    parser.add_argument("--no-gc-freeze", action="store_true")
    parser.add_argument("--unique", action="store_true", help="a new AOR per pair (storm-like)")
    parser.add_argument("--blast", nargs=4, metavar=("HOST:PORT", "COUNT", "RATE", "USERS"))
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.blast:
        host, _, port = args.blast[0].rpartition(":")
        result = blast(host, int(port), int(args.blast[1]), float(args.blast[2]),
                       int(args.blast[3]))  # fmt: skip
        print(json.dumps(result))
        return 0

    import trio

    seconds = min(args.seconds, MAX_SECONDS)
    users = "a new AOR per pair" if args.unique else f"{USERS:,} AORs"
    print(f"sniffer benchmark: HEP REGISTER + 200 OK pairs, {users}, "
          f"store={args.store}, gc.freeze() after start-up: {not args.no_gc_freeze}")  # fmt: skip
    freeze = not args.no_gc_freeze
    print(f"handler alone (no sockets, in-process): {handler_capacity(summary_cache=False):,.0f} "
          "datagrams per CPU-second with every REGISTER parsed; "
          f"{handler_capacity():,.0f} for refreshes answered from the summary cache "
          "(HEP decode, lazy REGISTER, 200 classified, table, store)", flush=True)  # fmt: skip
    rounds = ", ".join(f"{us:.1f} µs ({hit:.0%} hits)" for us, hit in refresh_rounds())
    print(f"handler alone (in-process), {USERS:,} phones then their refreshes, CPU per "
          f"datagram by round: {rounds}", flush=True)  # fmt: skip
    paced = trio.run(run_once, args.rate, seconds, args.store, freeze, args.unique)
    report(f"paced at {args.rate:,.0f}/s", paced)
    # The highest paced rate handled without loss, in steps (each run bounded).
    best = args.rate if paced["lost"] == 0 else 0.0
    for rate in STEPS:
        if rate <= args.rate or paced["lost"]:
            continue
        r = trio.run(run_once, rate, min(seconds, 3.0), args.store, freeze, args.unique)
        report(f"paced at {rate:,.0f}/s", r)
        if r["lost"]:
            break
        best = rate
    print(f"sniffer: highest paced rate without loss: {best:,.0f} datagrams/s "
          f"(target {KAMAILIO_RATE:,}/s)", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
