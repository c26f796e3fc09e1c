"""Load runs against a real Kamailio, real sipp and the real sidecar (`nox -s load`).

    python -m load.storm [--only register|wake|parked] [--max-rate 14000] [--step-seconds 3]
                         [--cycle-users N]
                         [--wake-phones 1000] [--wake-rate 100] [--parked 10000]

Three parts, each bounded in count and time, loopback only, printing a table and
asserting nothing about speed:

* REGISTER storm: sipp REGISTERs through Kamailio (the shipped config), mirrored as
  HEPv3 to the sidecar's sniffer, the rate stepped up to `--max-rate` (two sipp
  processes above 5,000/s: one sipp tops out near 10k/s), each step `--step-seconds`
  at a fixed rate. Per step, from Kamailio's own statistics (kamcmd over the ctl
  socket): the REGISTER rate it *reached* and the HEP copies it mirrored (each
  REGISTER it received and each reply it sent: 2 per REGISTER); from the sidecar:
  the datagrams it counted; loss = mirrored - counted, cross-checked with the
  kernel's drop counter of the sniffer's socket (/proc/net/udp); sipp's
  retransmissions; the sidecar's and Kamailio's CPU. A step is *clean* when sipp
  retransmitted < 0.1 % and Kamailio reached >= 95 % of the target; the figure to
  quote is the highest clean step with no loss. By default every REGISTER is a new
  user and token (a new device record each); `--cycle-users N` has the sipp
  processes cycle through the same N users and tokens in every step instead, as
  phones refreshing their registrations do (new Call-ID, From tag and branch each
  time, same Contact).
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
import collections
import contextlib
import csv
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
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

# Niceness of the sipp load generators: 0. Niced by 10, sipp could not read its replies in time
# and its retransmissions snowballed (measured: reached rate fell from 9.5k/s to <1k/s).
SIPP_NICE = 0
TOKEN_BYTES = 32  # APNs device tokens are 32 bytes, 64 hex digits
BUNDLE = "com.example.storm"
KAMCMD = shutil.which("kamcmd") or "/usr/sbin/kamcmd"


# ---------------------------------------------------------------- kernel counters


def udp_snmp() -> dict[str, int]:
    """The `Udp:` counters of /proc/net/snmp (system-wide)."""
    lines = [
        line.split()
        for line in Path("/proc/net/snmp").read_text().splitlines()
        if line.startswith("Udp:")
    ]
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


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (their own, not their children's)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / tick


def group_pids(pgid: int) -> list[int]:
    """Processes of one process group (Kamailio runs in its own session)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    pids.append(int(entry.name))
    return pids


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

    async def until(self, ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Poll the sidecar's `status` until `ok` (the caller bounds it in time)."""
        while True:
            status = await self.status()
            if ok(status):
                return status
            await trio.sleep(0.1)


def waiting_at_least(n: int) -> Callable[[dict[str, Any]], bool]:
    return lambda status: int(status.get("waiting", 0)) >= n


async def until(ok: Callable[[], bool]) -> None:
    """Poll a condition another task changes (the caller bounds it in time)."""
    while True:
        if ok():
            return
        await trio.sleep(0.05)


def kamailio_stats(rig: Rig) -> dict[str, int]:
    """Kamailio's own counters (`kamcmd stats.get_statistics all`) as {"group:name": value}."""
    assert rig.kamailio.ctl_socket
    out = subprocess.run(
        [KAMCMD, "-s", rig.kamailio.ctl_socket, "stats.get_statistics", "all"],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout  # fmt: skip
    stats = {}
    for line in out.splitlines():
        name, sep, value = line.partition(" = ")
        if sep and value.strip().lstrip("-").isdigit():
            stats[name.strip()] = int(value)
    return stats


@contextlib.contextmanager
def open_rig(
    workdir: Path,
    *,
    children: int,
    push_timeout: int = 20,
    ca_file: str = "",
    max_waiting: int = 20000,
    hep_port: int | None = None,
    check: bool = True,
) -> Iterator[Rig]:
    """The sidecar, and Kamailio pointed at it (HEP to `hep_port` instead when given)."""
    workdir.mkdir(parents=True, exist_ok=True)
    sidecar = Sidecar(
        workdir / "sidecar",
        log_level="warning",
        ca_file=ca_file,
        max_waiting=max_waiting,
        max_wait=120,
    )
    sidecar.start()
    try:
        ctl = f"unix:{workdir / 'kam' / 'ctl.sock'}"
        kam = Kamailio(
            rundir=workdir / "kam",
            sip_port=free_port(),
            defines={
                "KAM_CTL_SOCKET": quoted(ctl),
                "PUSHER_RPC_SERVER": quoted(
                    f"conn=pusher;addr=127.0.0.1;port={sidecar.control_port}"
                ),
                "PUSHER_HEP_URI": quoted(f"sip:127.0.0.1:{hep_port or sidecar.sniffer_port}"),
                "PUSHER_PUSH_TIMEOUT": push_timeout,
                "KAM_CHILDREN": children,
                "PUSHER_CHECK": int(check),
            },
        )
        kam.shm_mb = 512  # room for 10k suspended transactions and the storm's bindings
        kam.ctl_socket = ctl
        kam.start()
        try:
            yield Rig(workdir, sidecar, kam)
        finally:
            kam.stop()
    finally:
        sidecar.stop()


def call_setup_ms(folder: Path) -> list[str]:
    """p50 and p99 of the callers' INVITE -> 200 times (sipp -trace_rtt files)."""
    times = []
    for path in folder.glob("storm_call_*_rtt.csv"):
        for row in csv.DictReader(path.open(), delimiter=";"):
            with contextlib.suppress(KeyError, ValueError):
                times.append(float(row["response_time_ms"]))
    if not times:
        return ["-", "-"]
    times.sort()
    return [
        f"{times[len(times) // 2]:.1f}",
        f"{times[min(len(times) - 1, int(len(times) * 0.99))]:.1f}",
    ]


def write_users(path: Path, users: list[tuple[str, str]], expires: int) -> Path:
    with path.open("w", newline="") as f:
        f.write("SEQUENTIAL\n")
        w = csv.writer(f, delimiter=";", lineterminator="\n")
        for user, token in users:
            w.writerow([user, token, expires])
    return path


def sipp_stats(proc: SippProcess) -> tuple[int, int, float, int]:
    """(successful, failed, elapsed seconds, retransmissions) from sipp's -trace_stat file."""
    path = proc.workdir / f"{proc.name}.stat.csv"
    rows = list(csv.DictReader(path.open(), delimiter=";"))
    last = rows[-1]
    # "date<TAB>time<TAB>unix.seconds": the unix field has microseconds
    elapsed = float(last["CurrentTime"].split()[-1]) - float(last["StartTime"].split()[-1])
    retrans = int(last.get("Retransmissions(C)") or 0)
    return int(last["SuccessfulCall(C)"]), int(last["FailedCall(C)"]), elapsed, retrans


def start_sipp(
    rig: Rig,
    scenario: str,
    name: str,
    *,
    inf: Path,
    calls: int,
    rate: float,
    extra: Sequence[str] = (),
    keys: dict[str, str] | None = None,
    timeout_s: float = 120,
) -> SippProcess:
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
        nice=SIPP_NICE,
    )  # fmt: skip


# ---------------------------------------------------------------- REGISTER storm


async def register_storm(
    workdir: Path,
    rates: list[int],
    step_seconds: float,
    baseline: bool = False,
    check: bool = True,
    cycle_users: int = 0,
) -> None:
    """Step the REGISTER rate up; `baseline`: HEP copies go to a socket nobody reads
    (Kamailio's and sipp's own ceiling on this machine, without the sidecar's CPU).
    `check`: each REGISTER is checked with the sidecar before save() (DESIGN §12, the
    default); off: PUSHER_CHECK=0, saved statelessly at once. `cycle_users`: the same N
    users in every step (refreshes), else new ones."""
    from pusher_trio.standins.certs import Authority
    from pusher_trio.standins.fake_apns import FakeApns

    pool = [(f"c{i}", secrets.token_hex(TOKEN_BYTES)) for i in range(cycle_users)]
    rows = []
    best = 0
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with (
        sink,
        open_rig(
            workdir,
            children=8,
            hep_port=sink.getsockname()[1] if baseline else None,
            check=check,
        ) as rig,
    ):
        # the storm's app, so that `check` says ok (no APNs behind it: nothing is pushed)
        _add_app(rig, FakeApns(authority=Authority(), topics={BUNDLE}), 9)
        for step, rate in enumerate(rates):
            n_proc = 2 if rate > 5000 else 1
            per = rate / n_proc
            count = int(per * step_seconds)
            procs = []
            before = await rig.status()
            kam_before = kamailio_stats(rig)
            sniff0 = socket_drops(rig.sidecar.sniffer_port)
            kam0 = socket_drops(rig.kamailio.sip_port)
            assert rig.sidecar.proc is not None and rig.kamailio.proc is not None
            kam_pids = group_pids(rig.kamailio.proc.pid)
            cpu0 = (cpu_seconds([rig.sidecar.proc.pid]), cpu_seconds(kam_pids), time.monotonic())
            for p in range(n_proc):
                if pool:  # sipp reads a SEQUENTIAL file round and round
                    users = pool[p::n_proc]
                else:
                    users = [
                        (f"s{step}p{p}u{i}", secrets.token_hex(TOKEN_BYTES)) for i in range(count)
                    ]
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
            cpu1 = (cpu_seconds([rig.sidecar.proc.pid]), cpu_seconds(kam_pids), time.monotonic())
            wall = cpu1[2] - cpu0[2]
            # let the sniffer drain and the store catch up; Kamailio's counters are read after
            # the same pause, so a copy mirrored late (a retransmission's) is on both sides
            await trio.sleep(1.0)
            kam_after = kamailio_stats(rig)
            after = await rig.status()
            ok = sum(r[0] for r in results)
            failed = sum(r[1] for r in results)
            elapsed = max(r[2] for r in results)
            retrans = sum(r[3] for r in results)

            def kam(key: str, a: dict[str, int] = kam_after, b: dict[str, int] = kam_before) -> int:
                return a.get(key, 0) - b.get(key, 0)

            registers = kam("core:rcv_requests_register")
            # siptrace mirrors each REGISTER received and each reply sent to one: by sl, or by
            # tm (counted by tmx) when the REGISTER waited for the sidecar's `check` (the async
            # jsonrpc call suspends its transaction; after t_continue, save() replies with tm).
            mirrored = registers + kam("sl:sent_replies") + kam("tmx:rpl_sent")
            d0, d1 = before.get("datagrams", {}), after.get("datagrams", {})
            counted = int(d1.get("received", 0)) - int(d0.get("received", 0))
            sniff_drops = socket_drops(rig.sidecar.sniffer_port) - sniff0
            reached = registers / elapsed if elapsed else 0.0
            clean_step = retrans < 0.001 * max(ok + failed, 1) and reached >= 0.95 * rate
            lossless = mirrored - counted == 0 and sniff_drops == 0 and failed == 0
            rows.append([
                rate, round(reached), f"{100 * retrans / max(ok + failed, 1):.2f}", failed,
                mirrored, counted, mirrored - counted, sniff_drops,
                socket_drops(rig.kamailio.sip_port) - kam0,
                f"{100 * (cpu1[0] - cpu0[0]) / wall:.0f}",
                f"{(cpu1[0] - cpu0[0]) / max(counted, 1) * 1e6:.1f}",
                f"{100 * (cpu1[1] - cpu0[1]) / wall:.0f}",
                "yes" if clean_step else "no", "yes" if lossless else "no",
            ])  # fmt: skip
            if clean_step and (lossless or baseline):
                best = max(best, round(reached))
            print(f"  step {rate}/s done: {rows[-1]}", flush=True)
    table(
        ("REGISTER storm, BASELINE: HEP copies to a socket nobody reads (no sidecar work)"
         if baseline
         else "REGISTER storm (Kamailio -> HEPv3 -> sniffer); rates and copies from Kamailio's statistics")
        + (", check before save()" if check else ", PUSHER_CHECK=0 (no check)")
        + (f"; {cycle_users:,} users cycling (refreshes)" if cycle_users else "; a new user per REGISTER"),
        ["target/s", "reached/s", "sipp retrans %", "sipp failed", "mirrored (kamailio)",
         "counted (sidecar)", "loss", "sniffer kernel drops", "kamailio kernel drops",
         "sidecar CPU %", "sidecar CPU us/datagram", "kamailio CPU %", "clean step",
         "lossless"],
        rows,
    )  # fmt: skip
    print(
        "reached/s: REGISTERs Kamailio received per second of the step (core:rcv_requests_register);"
        " mirrored: REGISTERs received + replies sent by sl and tm (siptrace copies both); loss = mirrored -"
        " counted. A clean step has < 0.1 % sipp retransmissions and >= 95 % of its target reached."
        " sidecar CPU us/datagram: the sidecar's CPU time in the step / datagrams it counted."
    )
    if baseline:
        print(f"Kamailio's clean ceiling without the sidecar: {best or 'none'} REGISTER/s reached")
    else:
        print(f"Highest clean step without loss: {best or 'none'} REGISTER/s reached")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m load.storm", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--only", choices=["register", "wake", "parked"], action="append")
    parser.add_argument("--max-rate", type=int, default=14000)
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also run the REGISTER storm with HEP to a discard socket",
    )
    parser.add_argument(
        "--compare-check",
        action="store_true",
        help="also run the REGISTER storm with PUSHER_CHECK=0 (no check before save())",
    )
    parser.add_argument("--step-seconds", type=float, default=3.0)
    parser.add_argument(
        "--cycle-users", type=int, default=0, help="REGISTER storm: refresh N users, not new ones"
    )
    parser.add_argument("--wake-phones", type=int, default=1000)
    parser.add_argument("--wake-rate", type=float, default=100.0)
    parser.add_argument(
        "--wake-background", type=int, default=1000, help="waits parked during the second run"
    )
    parser.add_argument("--parked", type=int, default=10000)
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (logs, sipp traces)"
    )
    args = parser.parse_args(argv)
    if KAMAILIO is None or SIPP is None:
        print(
            "load.storm needs kamailio and sipp (apt-get install kamailio kamailio-extra-modules sip-tester)"
        )
        return 2 if os.environ.get("CI") == "true" else 0
    parts = args.only or ["register", "wake", "parked"]
    workdir = Path(tempfile.mkdtemp(prefix="pusher-storm-"))
    print(f"work folder: {workdir}")
    rates = [
        r for r in (1000, 2000, 4000, 7000, 10000, 12000, 14000, 16000, 20000) if r <= args.max_rate
    ]
    try:
        if "register" in parts:
            trio.run(
                register_storm,
                workdir / "register",
                rates,
                args.step_seconds,
                False,
                True,
                args.cycle_users,
            )
            if args.compare_check:
                trio.run(
                    register_storm,
                    workdir / "nocheck",
                    rates,
                    args.step_seconds,
                    False,
                    False,
                    args.cycle_users,
                )
            if args.baseline:
                trio.run(
                    register_storm,
                    workdir / "baseline",
                    rates,
                    args.step_seconds,
                    True,
                    True,
                    args.cycle_users,
                )
        if "wake" in parts:
            trio.run(
                wake_storm, workdir / "wake", args.wake_phones, args.wake_rate, args.wake_background
            )
        if "parked" in parts:
            trio.run(parked_calls, workdir / "parked", args.parked)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


# ---------------------------------------------------------------- the phone farm


class PhoneFarm:
    """Many sleeping phones in one socket: a push delivered to a token makes its phone
    REGISTER again (Contact on the shared UAS port, same push params); the 200s are
    counted. The INVITEs go to one sipp UAS listening on that port."""

    def __init__(self, kam_port: int, uas_port: int) -> None:
        self.kam_port = kam_port
        self.uas_port = uas_port
        self.users: dict[str, str] = {}  # token -> user
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.sent = 0
        self.ok = 0
        self.unknown = 0

    def register(self, token: str, expires: int = 600) -> None:
        user = self.users.get(token)
        if user is None:
            self.unknown += 1
            return
        tag = secrets.token_hex(6)
        msg = (
            f"REGISTER sip:127.0.0.1:{self.kam_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{tag};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@127.0.0.1>;tag={tag}\r\n"
            f"To: <sip:{user}@127.0.0.1>\r\n"
            f"Call-ID: wake-{tag}\r\n"
            "CSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{user}@127.0.0.1:{self.uas_port};pn-provider=apns;pn-prid={token};"
            f"pn-param=ABCDE12345.{BUNDLE}.voip>;expires={expires}\r\n"
            "User-Agent: pusher-trio storm\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        try:
            self.sock.sendto(msg.encode(), ("127.0.0.1", self.kam_port))
            self.sent += 1
        except BlockingIOError:
            pass

    def on_delivered(self, token: str, headers: Any = None, payload: Any = None) -> None:
        self.register(token)

    async def serve(self) -> None:
        tsock = trio.socket.from_stdlib_socket(self.sock)
        while True:
            data = await tsock.recv(65535)
            if data.startswith(b"SIP/2.0 200"):
                self.ok += 1


async def _learn_devices(
    rig: Rig, users: list[tuple[str, str]], cport: int, name: str, *, unregister: bool
) -> None:
    """REGISTER `users` through Kamailio (push params in the Contact), optionally unregister."""
    for expires in (600, 0) if unregister else (600,):
        inf = write_users(rig.workdir / f"{name}{expires}.csv", users, expires)
        proc = start_sipp(rig, "register_storm.xml", f"{name}{expires}", inf=inf, calls=len(users), rate=2000,
                          keys={"cport": str(cport)}, timeout_s=len(users) / 500 + 30)  # fmt: skip
        await proc.wait()
        _, failed, _, _ = sipp_stats(proc)
        proc.stop()
        if failed:
            print(
                f"  warning: {failed} of {len(users)} REGISTERs failed ({name}, expires={expires})"
            )
    with trio.fail_after(30):
        await rig.until(lambda st: st.get("devices", 0) >= len(users))


def _add_app(rig: Rig, apns: Any, apns_port: int) -> None:
    cert = rig.workdir / "app.pem"
    cert.write_text(apns.client_pem(BUNDLE))
    rig.sidecar.cli(
        "add-apple-app", BUNDLE, str(cert), f"127.0.0.1:{apns_port}", "--push-type", "voip"
    )


async def _park(
    control_target: str, aors: list[str], wait_s: float, connections: int, sink: list[str]
) -> None:
    """One `push` per AOR, spread over `connections` connections; outcomes into `sink`."""
    from pusher_trio.control.client import open_control

    async def one_connection(chunk: list[str]) -> None:
        async with open_control(control_target) as control, trio.open_nursery() as nursery:

            async def one(aor: str) -> None:
                try:
                    await control.call(
                        "push", {"aor": aor, "timeout": wait_s, "call_id": f"park-{aor}"}
                    )
                    sink.append("registered")
                except Exception as exc:
                    sink.append(type(exc).__name__)

            for aor in chunk:
                nursery.start_soon(one, aor)

    async with trio.open_nursery() as nursery:
        for i in range(connections):
            nursery.start_soon(one_connection, aors[i::connections])


async def wake_storm(workdir: Path, phones: int, rate: float, background: int) -> None:
    from pusher_trio.standins.certs import Authority
    from pusher_trio.standins.fake_apns import FakeApns

    rows = []
    farm: PhoneFarm | None = None

    def delivered(token: str, headers: Any, payload: Any) -> None:
        if farm is not None:
            farm.on_delivered(token)

    for bg in sorted({0, background}):
        sub = workdir / f"bg{bg}"
        apns = FakeApns(authority=Authority(), topics={BUNDLE}, on_delivered=delivered)
        async with trio.open_nursery() as nursery:
            apns_port = await nursery.start(apns.serve)
            with open_rig(sub, children=8, push_timeout=20, ca_file=apns.ca_file) as rig:
                _add_app(rig, apns, apns_port)
                uas_port = free_port()
                farm = PhoneFarm(rig.kamailio.sip_port, uas_port)
                nursery.start_soon(farm.serve)
                users = [(f"w{i}", secrets.token_hex(TOKEN_BYTES)) for i in range(phones)]
                farm.users = {token: user for user, token in users}
                # background waits: `bg` requests parked on 4 AORs (4 pushes, `bg` waits)
                bg_users = (
                    [(f"bg{i}", secrets.token_hex(TOKEN_BYTES)) for i in range(4)] if bg else []
                )
                await _learn_devices(rig, users + bg_users, uas_port, "learn", unregister=True)
                outcomes: list[str] = []
                if bg:
                    aors = [f"{bg_users[i % 4][0]}@127.0.0.1" for i in range(bg)]
                    nursery.start_soon(_park, rig.sidecar.control, aors, 110, 4, outcomes)
                    with trio.fail_after(30):
                        await rig.until(waiting_at_least(bg))
                uas = SippProcess(
                    "uas_phone.xml", remote=rig.kamailio.sip_port, workdir=sub, name="uas", local_port=uas_port,
                    calls=phones, timeout_s=phones / rate + 60,
                    extra=["-max_socket", "5000", "-trace_stat", "-stf", str(sub / "uas.stat.csv"), "-fd", "1"],
                )  # fmt: skip
                inf = write_users(sub / "callees.csv", users, 0)
                start = time.monotonic()
                caller = start_sipp(rig, "storm_call.xml", "caller", inf=inf, calls=phones, rate=rate,
                                    timeout_s=phones / rate + 60, extra=["-trace_rtt", "-rtt_freq", "1"])  # fmt: skip
                await caller.wait()
                took = time.monotonic() - start
                ok, failed, _, _ = sipp_stats(caller)
                caller.stop()
                uas.stop()
                setup = call_setup_ms(sub)
                status = await rig.status()
                lat = status.get("latency_ms", {})
                push_out, wake = lat.get("push_out", {}), lat.get("wake", {})
                peak = status.get("waiters", {}).get("peak", "?")
                rows.append([
                    phones, rate, bg, ok, failed, f"{100 * ok / phones:.1f}", f"{took:.1f}", peak,
                    farm.sent, farm.ok, push_out.get("p50", "-"), push_out.get("p99", "-"), push_out.get("max", "-"),
                    wake.get("p50", "-"), wake.get("p99", "-"), wake.get("max", "-"), *setup,
                ])  # fmt: skip
                print(f"  wake storm (background {bg}) done: {rows[-1]}", flush=True)
            nursery.cancel_scope.cancel()
        farm = None
    table(
        "Wake-up storm (INVITE -> push -> REGISTER -> INVITE relayed -> 200), sidecar-added latency in ms",
        ["calls", "rate/s", "background waits", "answered", "failed", "success %", "took s", "waiting peak",
         "wake REGISTERs", "their 200s", "push_out p50", "p99", "max", "wake p50", "p99", "max",
         "call setup p50", "p99"],
        rows,
    )  # fmt: skip
    print(
        "push_out: control request decoded -> APNs request handed to the pool; wake: REGISTER copy "
        "handed over -> `push` result returned (the sidecar's own timestamps, `status.latency_ms`). "
        "With background waits, 4 of the push_out samples are the background pushes. Call setup: "
        "INVITE sent -> 200 received at the caller (sipp), the whole loop through Kamailio, the "
        "APNs stand-in and the phone farm."
    )


async def parked_calls(workdir: Path, count: int) -> None:
    from pusher_trio.standins.certs import Authority
    from pusher_trio.standins.fake_apns import FakeApns

    apns = FakeApns(authority=Authority(), topics={BUNDLE})
    async with trio.open_nursery() as nursery:
        apns_port = await nursery.start(apns.serve)
        with open_rig(
            workdir, children=4, push_timeout=20, ca_file=apns.ca_file, max_waiting=count * 2
        ) as rig:
            _add_app(rig, apns, apns_port)
            users = [(f"p{i}", secrets.token_hex(TOKEN_BYTES)) for i in range(count)]
            await _learn_devices(rig, users, free_port(), "learn", unregister=True)
            assert rig.sidecar.proc is not None
            pid = rig.sidecar.proc.pid
            await trio.sleep(1.0)
            rss0 = rss_kib(pid)
            outcomes: list[str] = []
            start = time.monotonic()
            aors = [f"{user}@127.0.0.1" for user, _ in users]
            nursery.start_soon(_park, rig.sidecar.control, aors, 110, 10, outcomes)
            with trio.fail_after(120):
                status = await rig.until(waiting_at_least(count))
            parked_s = time.monotonic() - start
            await trio.sleep(1.0)
            rss1 = rss_kib(pid)
            delivered = len(apns.delivered)
            # SIGTERM: every parked request must be answered ShuttingDown
            stop_start = time.monotonic()
            rc = await trio.to_thread.run_sync(rig.sidecar.stop)
            with trio.move_on_after(10):
                await until(lambda: len(outcomes) >= count)
            stop_s = time.monotonic() - stop_start
        nursery.cancel_scope.cancel()
    per = (rss1 - rss0) * 1024 / count
    answers = ", ".join(f"{name} {n}" for name, n in collections.Counter(outcomes).most_common())
    table(
        "Parked calls (push requests waiting at once on the control socket)",
        ["waiting", "parked in s", "pushes delivered", "RSS before KiB", "RSS after KiB", "per waiting request",
         "answers after SIGTERM", "stop took s", "exit code"],
        [[status.get("waiting"), f"{parked_s:.1f}", delivered, rss0, rss1, f"{per / 1024:.2f} KiB", answers,
          f"{stop_s:.1f}", rc]],
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
