"""Load runs against a real Kamailio, real sipp and the real sidecar (`nox -s load`).

    python -m load.storm [--only register|wake|parked] [--max-rate 14000] [--step-seconds 3]
                         [--wake-phones 1000] [--wake-rate 100] [--parked 10000]

Three parts, each bounded in count and time, loopback only, printing a table and
asserting nothing about speed:

* REGISTER storm: sipp REGISTERs through Kamailio (the shipped config), mirrored as
  HEPv3 to the sidecar's sniffer, the rate stepped up to `--max-rate` (two sipp
  processes above 5,000/s: one sipp tops out near 10k/s). Per step: REGISTERs
  answered, the rate reached, HEP datagrams the sidecar received and parsed, what it
  dropped (its counters), the kernel's drops on the sniffer's and Kamailio's sockets
  (/proc/net/udp) and UDP RcvbufErrors (/proc/net/snmp), device records.
* Wake-up storm: N phones registered with push params, then unregistered (asleep);
  N calls at rate R; each needs push -> (the APNs stand-in delivers) -> REGISTER ->
  INVITE relayed -> answered. Call success, and the sidecar-added latency p50/p99
  (control request in -> APNs request out; REGISTER copy in -> reply out) from its
  `status` (`latency_ms`).
* Parked calls: P `push` requests waiting at once on the control socket: the sidecar's
  RSS before and after, per waiting request.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from tests.e2e.harness import (
    KAMAILIO,
    SIPP,
    Kamailio,
    Sidecar,
    SippProcess,
    free_port,
    quoted,
)

TOKEN_BYTES = 32  # APNs device tokens are 32 bytes, 64 hex digits
BUNDLE = "com.example.storm"


# ---------------------------------------------------------------- kernel counters


def udp_snmp() -> dict[str, int]:
    """The `Udp:` counters of /proc/net/snmp (system-wide)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:], strict=True)}


def socket_drops(port: int) -> int:
    """Datagrams the kernel dropped on the UDP socket(s) bound to 127.0.0.1:`port`."""
    want = f"0100007F:{port:04X}"
    total = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want:
            total += int(fields[-1])
    return total


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
    sys.stdout.flush()


# ---------------------------------------------------------------- the rig


@dataclass
class Rig:
    workdir: Path
    sidecar: Sidecar
    kamailio: Kamailio

    async def status(self) -> dict[str, Any]:
        from pusher_trio.control.client import open_control

        async with open_control(self.sidecar.control) as control:
            result: dict[str, Any] = await control.call("status")
        return result


@contextlib.contextmanager
def open_rig(workdir: Path, *, children: int, push_timeout: int = 20, ca_file: str = "", max_waiting: int = 20000) -> Iterator[Rig]:
    workdir.mkdir(parents=True, exist_ok=True)
    sidecar = Sidecar(workdir / "sidecar", log_level="warning", ca_file=ca_file, max_waiting=max_waiting, max_wait=120)
    sidecar.start()
    try:
        kam = Kamailio(
            rundir=workdir / "kam",
            sip_port=free_port(),
            defines={
                "PUSHER_RPC_SERVER": quoted(f"conn=pusher;addr=127.0.0.1;port={sidecar.control_port}"),
                "PUSHER_HEP_URI": quoted(f"sip:127.0.0.1:{sidecar.sniffer_port}"),
                "PUSHER_PUSH_TIMEOUT": push_timeout,
                "KAM_CHILDREN": children,
            },
        )
        kam.shm_mb = 512  # room for 10k suspended transactions and the storm's bindings
        kam.start()
        try:
            yield Rig(workdir, sidecar, kam)
        finally:
            kam.stop()
    finally:
        sidecar.stop()


def write_users(path: Path, users: list[tuple[str, str]], expires: int) -> Path:
    with path.open("w", newline="") as f:
        f.write("SEQUENTIAL\n")
        w = csv.writer(f, delimiter=";", lineterminator="\n")
        for user, token in users:
            w.writerow([user, token, expires])
    return path


def sipp_stats(proc: SippProcess) -> tuple[int, int, float]:
    """(successful, failed, elapsed seconds) from sipp's -trace_stat file."""
    path = proc.workdir / f"{proc.name}.stat.csv"
    rows = list(csv.DictReader(path.open(), delimiter=";"))
    last = rows[-1]
    # "date<TAB>time<TAB>unix.seconds": the unix field has microseconds
    elapsed = float(last["CurrentTime"].split()[-1]) - float(last["StartTime"].split()[-1])
    return int(last["SuccessfulCall(C)"]), int(last["FailedCall(C)"]), elapsed


def start_sipp(rig: Rig, scenario: str, name: str, *, inf: Path, calls: int, rate: float, extra: list[str] = (), keys: dict[str, str] | None = None, timeout_s: float = 120) -> SippProcess:  # type: ignore[assignment]
    return SippProcess(
        scenario,
        remote=rig.kamailio.sip_port,
        workdir=rig.workdir,
        name=name,
        calls=calls,
        rate=rate,
        keys=keys or {},
        timeout_s=timeout_s,
        extra=[
            "-inf", str(inf),
            "-l", str(max(100, int(rate * 4))),
            "-trace_stat", "-stf", str(rig.workdir / f"{name}.stat.csv"), "-fd", "1",
            "-max_socket", "5000",
            "-nd",
            *extra,
        ],
    )  # fmt: skip


# ---------------------------------------------------------------- REGISTER storm


async def register_storm(workdir: Path, rates: list[int], step_seconds: float) -> None:
    rows = []
    with open_rig(workdir, children=8) as rig:
        for step, rate in enumerate(rates):
            n_proc = 2 if rate > 5000 else 1
            per = rate / n_proc
            count = int(per * step_seconds)
            procs = []
            before = await rig.status()
            snmp0 = udp_snmp()
            sniff0 = socket_drops(rig.sidecar.sniffer_port)
            kam0 = socket_drops(rig.kamailio.sip_port)
            for p in range(n_proc):
                users = [(f"s{step}p{p}u{i}", secrets.token_hex(TOKEN_BYTES)) for i in range(count)]
                inf = write_users(workdir / f"reg{step}_{p}.csv", users, 600)
                procs.append(
                    start_sipp(rig, "register_storm.xml", f"reg{step}_{p}", inf=inf, calls=count, rate=per,
                               keys={"cport": "9"}, timeout_s=step_seconds * 6 + 20)
                )  # fmt: skip
            results = []
            for proc in procs:
                await proc.wait()
                results.append(sipp_stats(proc))
                proc.stop()
            # let the sniffer drain and the store catch up
            await trio.sleep(1.0)
            after = await rig.status()
            snmp1 = udp_snmp()
            ok = sum(r[0] for r in results)
            failed = sum(r[1] for r in results)
            elapsed = max(r[2] for r in results)
            d0, d1 = before.get("datagrams", {}), after.get("datagrams", {})

            def delta(key: str, d0: dict[str, Any] = d0, d1: dict[str, Any] = d1) -> int:
                return int(d1.get(key, 0)) - int(d0.get(key, 0))

            dropped = sum(delta(k) for k in d1 if k.startswith("dropped_"))
            rows.append([
                rate, n_proc, ok + failed, ok, failed, round((ok + failed) / elapsed) if elapsed else "-",
                2 * ok, delta("received"), delta("registrations"), dropped,
                socket_drops(rig.sidecar.sniffer_port) - sniff0, socket_drops(rig.kamailio.sip_port) - kam0,
                snmp1["RcvbufErrors"] - snmp0["RcvbufErrors"], after.get("devices", "?"),
            ])  # fmt: skip
            print(f"  step {rate}/s done: {rows[-1]}", flush=True)
    table(
        "REGISTER storm (Kamailio -> HEPv3 -> sniffer)",
        ["target/s", "sipp", "REGISTERs", "200 OK", "failed", "reached/s", "HEP expected", "sniffer received",
         "registrations", "sidecar dropped", "sniffer sock drops", "kamailio sock drops", "kernel RcvbufErrors",
         "devices"],
        rows,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load.storm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["register", "wake", "parked"], action="append")
    parser.add_argument("--max-rate", type=int, default=14000)
    parser.add_argument("--step-seconds", type=float, default=3.0)
    parser.add_argument("--wake-phones", type=int, default=1000)
    parser.add_argument("--wake-rate", type=float, default=100.0)
    parser.add_argument("--parked", type=int, default=10000)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, sipp traces)")
    args = parser.parse_args(argv)
    if KAMAILIO is None or SIPP is None:
        print("load.storm needs kamailio and sipp (apt-get install kamailio kamailio-extra-modules sip-tester)")
        return 2 if os.environ.get("CI") == "true" else 0
    parts = args.only or ["register", "wake", "parked"]
    workdir = Path(tempfile.mkdtemp(prefix="pusher-storm-"))
    print(f"work folder: {workdir}")
    rates = [r for r in (1000, 2000, 4000, 7000, 10000, 12000, 14000, 16000, 20000) if r <= args.max_rate]
    try:
        if "register" in parts:
            trio.run(register_storm, workdir / "register", rates, args.step_seconds)
        if "wake" in parts:
            trio.run(wake_storm, workdir / "wake", args.wake_phones, args.wake_rate)
        if "parked" in parts:
            trio.run(parked_calls, workdir / "parked", args.parked)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


async def wake_storm(workdir: Path, phones: int, rate: float) -> None:
    raise NotImplementedError


async def parked_calls(workdir: Path, count: int) -> None:
    raise NotImplementedError


if __name__ == "__main__":
    raise SystemExit(main())
