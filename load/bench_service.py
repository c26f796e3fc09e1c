"""Pushes through the running service, the way Kamailio drives it, next to aioapns.

What a deployment pays per push: `pusher-trio serve` runs as its own process; this
driver holds `--connections` control connections (TCP, as janssonrpcc) with at most
`--inflight` `push {aor, wait: false}` requests unanswered, each for one of
`--devices` distinct RFC 8599 devices that the sidecar learned from HEPv3 REGISTER +
200 copies at its sniffer. The apps use token auth (ES256 JWT); the provider is a local
nginx answering `POST /3/device/...` with 200 and nginx's default HTTP/2 stream limit
(128). In the same run, alternating order, aioapns sends the same kind of push
(token auth, one connection, the same number in flight) to the same nginx.

    python -m load.bench_service [--devices 4000] [--connections 4] [--inflight 500]
                                 [--seconds 5] [--reps 3] [--log-level info]

Figures (medians of the reps): pushes per wall second for both; the sidecar's CPU per
push (utime + stime of the serve process over the measured window, from /proc), and
the driver's own CPU per push, so a saturated driver is visible. Every push must be
answered `pushed` with a delivered report, or the run fails. Bounded: each rep lasts
`--seconds` after a warm-up; the serve process and nginx are ours and stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import secrets
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

import sip
from load.bench_push import _in_thread, nginx
from load.serve import ServeProcess
from pusher_trio.control.client import ControlClient, open_control
from pusher_trio.standins.certs import Authority, make_p8, random_id

DOMAIN = "bench.example.com"
BUNDLE = "com.example.benchservice"
TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def register_pair(user: str, token: str, team: str) -> tuple[bytes, bytes]:
    """A REGISTER with RFC 8599 APNs params and its 200, as Kamailio's siptrace copies them."""
    call_id = f"{secrets.token_hex(8)}@bench"
    contact = (
        f"<sip:{user}@198.51.100.7:50600;transport=tcp;pn-provider=apns;pn-prid={token};"
        f'pn-param={team}.{BUNDLE}.voip>;+sip.instance="<urn:uuid:{secrets.token_hex(16)}>"'
        ";expires=600"
    )
    common = (
        f"Via: SIP/2.0/TCP 198.51.100.7:50600;branch=z9hG4bK{secrets.token_hex(6)}\r\n"
        f"From: <sip:{user}@{DOMAIN}>;tag=f1\r\nTo: <sip:{user}@{DOMAIN}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 REGISTER\r\n"
    )
    request = (
        f"REGISTER sip:{DOMAIN} SIP/2.0\r\n{common}Max-Forwards: 70\r\nContact: {contact}\r\n"
        "User-Agent: BenchPhone/1.0\r\nContent-Length: 0\r\n\r\n"
    )
    answer = f"SIP/2.0 200 OK\r\n{common}Contact: {contact}\r\nContent-Length: 0\r\n\r\n"

    def hep(payload: str) -> bytes:
        return sip.encode_hep(
            payload.encode(),
            src=("127.0.0.1", 5060),
            dst=("127.0.0.1", 9060),
            timestamp=time.time(),
            capture_id=1,
        )

    return hep(request), hep(answer)


def write_config(folder: Path, ca_file: str, log_level: str) -> Path:
    config = folder / "pusher.toml"
    config.write_text(
        f'[control]\nunix_socket = "{folder}/control.sock"\ntcp = "127.0.0.1:0"\n'
        '[sniffer]\nlisten = ["udp:127.0.0.1:0"]\n'
        f'[store]\npath = "{folder}/pusher.db"\n'
        f'[push]\nca_file = "{ca_file}"\nmax_waiting = 10000\n'
        f'[log]\nlevel = "{log_level}"\nformat = "json"\n'
    )
    return config


def add_app(serve: ServeProcess, folder: Path, port: int, team: str) -> tuple[str, str]:
    """Token auth through the CLI, as an operator does; returns (key id, p8 PEM)."""
    p8, _public = make_p8()
    key_file = folder / "AuthKey.p8"
    key_file.write_text(p8)
    key_file.chmod(0o600)
    key_id = random_id()
    subprocess.run(
        [sys.executable, "-m", "pusher_trio", "add-apple-app", BUNDLE, "--socket", serve.socket,
         "--key-file", str(key_file), "--key-id", key_id, "--team-id", team,
         "--host", f"127.0.0.1:{port}", "--push-type", "voip"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return key_id, p8


async def learn(serve: ServeProcess, devices: int, team: str) -> list[str]:
    """Send every device's REGISTER + 200 to the sniffer, paced; wait until all are stored."""
    aors = []
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target = serve.sniffer
    for n in range(devices):
        user = f"b{n:06d}"
        aors.append(f"{user}@{DOMAIN}")
        for datagram in register_pair(user, secrets.token_hex(32), team):
            await sock.sendto(datagram, target)
        if n % 200 == 199:
            await trio.sleep(0.02)  # ~10k datagrams/s: well below the sniffer's ceiling
    sock.close()
    async with open_control(serve.tcp) as control:
        with trio.fail_after(30):
            while True:
                if (await control.call("status"))["devices"] >= devices:
                    break
                await trio.sleep(0.1)
    return aors


async def push_window(
    target: str, aors: list[str], connections: int, inflight: int, seconds: float, pid: int
) -> dict[str, float]:
    """One measured window: pushes/s, sidecar CPU µs per push, driver CPU µs per push."""
    next_aor = itertools.cycle(aors)
    counter = itertools.count()
    done = 0
    failures: list[str] = []
    stop_at = 0.0

    async def worker(control: ControlClient) -> None:
        nonlocal done
        while trio.current_time() < stop_at and not failures:
            params = {"aor": next(next_aor), "wait": False, "call_id": f"c{next(counter)}"}
            result = await control.call("push", params)
            if result.get("status") != "pushed" or not any(
                p.get("outcome") == "delivered" for p in result.get("pushes", [])
            ):
                failures.append(repr(result)[:300])
                return
            done += 1

    async def run(window: float) -> None:
        nonlocal stop_at
        stop_at = trio.current_time() + window
        async with trio.open_nursery() as nursery:
            for i, control in enumerate(clients):
                share = inflight // connections + (1 if i < inflight % connections else 0)
                for _ in range(share):
                    nursery.start_soon(worker, control)

    clients: list[ControlClient] = []
    async with trio.open_nursery() as holder:
        for _ in range(connections):
            clients.append(await holder.start(_hold_client, target))
        await run(0.5)  # warm-up: connection, JWT, stream window
        done = 0
        inline0 = (await clients[0].call("status", {}))["pushed_without_task"]
        cpu0, own0, start = process_cpu(pid), time.process_time(), trio.current_time()
        await run(seconds)
        elapsed = trio.current_time() - start
        cpu, own = process_cpu(pid) - cpu0, time.process_time() - own0
        inline = (await clients[0].call("status", {}))["pushed_without_task"] - inline0
        holder.cancel_scope.cancel()
    if failures:
        raise RuntimeError(f"a push was not delivered: {failures[0]}")
    return {
        "pushes_per_s": done / elapsed,
        "sidecar_us_per_push": cpu / done * 1e6,
        "sidecar_cpu_share": cpu / elapsed,
        "driver_us_per_push": own / done * 1e6,
        "without_task_share": inline / done,  # pushes answered without a task of their own
    }


async def _hold_client(target: str, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with open_control(target) as control:
        task_status.started(control)
        await trio.sleep_forever()


def aioapns_window(
    port: int, ca_file: str, key: str, key_id: str, team: str, inflight: int, seconds: float
) -> dict[str, float]:
    return asyncio.run(_aioapns(port, ca_file, key, key_id, team, inflight, seconds))


async def _aioapns(
    port: int, ca_file: str, key: str, key_id: str, team: str, inflight: int, seconds: float
) -> dict[str, float]:
    from aioapns.common import NotificationRequest, PushType
    from aioapns.connection import APNsKeyConnectionPool, APNsProductionClientProtocol

    class LocalProtocol(APNsProductionClientProtocol):
        # aioapns has no host/port option: subclass the protocol.
        APNS_SERVER = "127.0.0.1"
        APNS_PORT = port

    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["h2"])
    pool = APNsKeyConnectionPool(
        key=key, key_id=key_id, team_id=team, topic=f"{BUNDLE}.voip",
        max_connections=1, max_connection_attempts=3, ssl_context=context,
    )  # fmt: skip
    pool.protocol_class = LocalProtocol
    tokens = [secrets.token_hex(32) for _ in range(1000)]
    counter = itertools.count()
    done = 0
    stop_at = 0.0
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        nonlocal done
        while loop.time() < stop_at:
            n = next(counter)
            request = NotificationRequest(
                device_token=tokens[n % len(tokens)],
                message={"call-id": f"c{n}", "caller-id-number": "+15550100",
                         "caller-id-name": "Bob", "utc_unix_timestamp_ms": int(time.time() * 1000)},
                push_type=PushType.VOIP,
                time_to_live=30,
                priority=10,
            )  # fmt: skip
            result = await pool.send_notification(request)
            if not result.is_successful:
                raise RuntimeError(f"aioapns: {result.status} {result.description}")
            done += 1

    stop_at = loop.time() + 0.5
    await asyncio.gather(*(worker() for _ in range(inflight)))
    done = 0
    start, cpu0 = loop.time(), time.thread_time()
    stop_at = start + seconds
    await asyncio.gather(*(worker() for _ in range(inflight)))
    elapsed, cpu = loop.time() - start, time.thread_time() - cpu0
    pool.close()
    return {"pushes_per_s": done / elapsed, "us_per_push": cpu / done * 1e6}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=4000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--inflight", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    args = parser.parse_args(argv if argv is not None else [])
    logging.getLogger("aioapns").setLevel(logging.ERROR)  # "pool busy" lines at 500 in flight
    authority = Authority()
    team = random_id()
    ours: list[dict[str, float]] = []
    theirs: list[dict[str, float]] = []
    with (
        nginx(authority, max_streams=128) as (port, ca_file),
        tempfile.TemporaryDirectory(prefix="bench-service-") as tmp,
    ):
        folder = Path(tmp)
        serve = ServeProcess(write_config(folder, ca_file, args.log_level))
        try:
            key_id, key = add_app(serve, folder, port, team)
            aors = trio.run(learn, serve, args.devices, team)
            for rep in range(args.reps):
                window = (serve.tcp, aors, args.connections, args.inflight, args.seconds)
                aio = (port, ca_file, key, key_id, team, args.inflight, args.seconds)
                if rep % 2:
                    theirs.append(_in_thread(aioapns_window, *aio))
                    ours.append(trio.run(push_window, *window, serve.proc.pid))
                else:
                    ours.append(trio.run(push_window, *window, serve.proc.pid))
                    theirs.append(_in_thread(aioapns_window, *aio))
                print(
                    f"  rep {rep + 1}: service {ours[-1]['pushes_per_s']:.0f}/s "
                    f"({ours[-1]['sidecar_us_per_push']:.0f} µs sidecar CPU/push, "
                    f"{ours[-1]['sidecar_cpu_share']:.0%} of a core, "
                    f"{ours[-1]['without_task_share']:.0%} without a task), "
                    f"aioapns {theirs[-1]['pushes_per_s']:.0f}/s",
                    flush=True,
                )
        finally:
            code = serve.terminate()
            if code != 0:
                print(f"pusher-trio serve exited {code}", file=sys.stderr)

    def median(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    result = {
        "service_pushes_per_s": round(median(ours, "pushes_per_s")),
        "aioapns_pushes_per_s": round(median(theirs, "pushes_per_s")),
        "ratio": round(median(ours, "pushes_per_s") / median(theirs, "pushes_per_s"), 2),
        "sidecar_us_per_push": round(median(ours, "sidecar_us_per_push")),
        "sidecar_cpu_share": round(median(ours, "sidecar_cpu_share"), 2),
        "driver_us_per_push": round(median(ours, "driver_us_per_push")),
        "aioapns_us_per_push": round(median(theirs, "us_per_push")),
        "runs": {
            "service": [round(r["pushes_per_s"]) for r in ours],
            "aioapns": [round(r["pushes_per_s"]) for r in theirs],
        },
        "devices": args.devices,
        "connections": args.connections,
        "inflight": args.inflight,
        "log_level": args.log_level,
    }
    print(
        f"push through the service ({args.connections} control connections, {args.inflight} in"
        f" flight, {args.devices} devices, token auth, nginx 128 streams, log {args.log_level}):"
        f" {result['service_pushes_per_s']}/s vs aioapns {result['aioapns_pushes_per_s']}/s"
        f" = {result['ratio']}x; sidecar {result['sidecar_us_per_push']} µs CPU per push"
        f" ({result['sidecar_cpu_share']:.0%} of a core), driver {result['driver_us_per_push']}"
        f" µs, aioapns {result['aioapns_us_per_push']} µs; runs {result['runs']}"
    )
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
