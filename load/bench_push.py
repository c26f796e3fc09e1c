"""Push throughput: pusher-trio against aioapns, same server, same run.

One connection, 100 pushes in flight, against a local nginx (Debian nginx-light)
answering `POST /3/device/...` with 200 and the echoed apns-id, like APNs does. nginx
saturates far above any Python client, so the figures compare the clients. The
headline compares whole sends: `Providers.send` (payload, headers, request, answer ->
Outcome) against aioapns' `send_notification` (the same work); the transport alone
(`Pool.request` with a ready-made request) is reported too.

    python -m load.bench_push [--seconds 2.5] [--rounds 4] [--inflight 100]

`main()` returns the figures as a dict (load/bench.py prints a row from it): pushes per
second of wall-clock time and per CPU-second of the client thread (the second stays
meaningful when other work shares the machine), medians of alternating runs. Bounded:
each run lasts `--seconds` after a 0.5 s warm-up; the default whole run takes ~26 s.
The nginx process is ours and is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

from pusher_trio.model import App, AppleCertAuth, Delivered, Device, PushMessage
from pusher_trio.providers import Providers
from pusher_trio.providers.http import HttpRequest
from pusher_trio.providers.transport import Origin, Pool, make_ssl_context
from pusher_trio.standins.certs import Authority

TOKEN = "0123456789abcdef" * 4
TOPIC = "com.example.bench"
PAYLOAD = (
    b'{"aps":{"alert":{"loc-key":"IC_MSG","loc-args":["Bob"]},"sound":"default"},"call-id":"c1"}'
)

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server_tokens off;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {tmp}/server.pem;
        ssl_certificate_key {tmp}/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_requests {keepalive_requests};
        keepalive_timeout 600s;
        http2_max_requests {keepalive_requests};
        http2_max_concurrent_streams {max_streams};
        location /3/device/ {{
            add_header apns-id $http_apns_id always;
            return 200 "";
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def nginx(
    authority: Authority, keepalive_requests: int = 10_000_000, max_streams: int = 1000
) -> Iterator[tuple[int, str]]:
    """Start our own nginx on a free loopback port; yields (port, CA file).

    `keepalive_requests`: streams per connection before nginx sends GOAWAY;
    `max_streams`: SETTINGS_MAX_CONCURRENT_STREAMS (nginx's own default is 128).
    """
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(binary):
        raise FileNotFoundError("nginx is not installed (Debian: nginx-light)")
    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        authority.write_server(f"{tmp}/server.pem", f"{tmp}/server.key")
        ca_file = authority.write_ca(f"{tmp}/ca.pem")
        conf = Path(tmp, "nginx.conf")
        for attempt in range(5):
            port = free_port()
            conf.write_text(
                NGINX_CONF.format(
                    tmp=tmp,
                    port=port,
                    keepalive_requests=keepalive_requests,
                    max_streams=max_streams,
                )
            )
            process = subprocess.Popen(
                [binary, "-c", str(conf), "-p", tmp, "-e", f"{tmp}/error.log"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if _wait_listening(port, process):
                break
            process.wait(5)
            if attempt == 4:
                raise RuntimeError(Path(tmp, "error.log").read_text()[-500:])
        try:
            yield port, ca_file
        finally:
            process.send_signal(signal.SIGQUIT)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.02)
    return False


# --- pusher-trio -------------------------------------------------------------------------


def _request() -> HttpRequest:
    return HttpRequest(
        method="POST",
        path=f"/3/device/{TOKEN}",
        headers=(
            ("apns-push-type", "alert"),
            ("apns-topic", TOPIC),
            ("apns-priority", "10"),
            ("apns-expiration", "0"),
            ("apns-id", str(uuid.uuid4())),
        ),
        body=PAYLOAD,
    )


async def _measure(
    push: Callable[[], Awaitable[bool]], seconds: float, inflight: int
) -> tuple[float, float]:
    """(pushes per wall second, pushes per CPU-second of this thread), after a warm-up."""
    done = 0
    stop_at = 0.0

    async def worker() -> None:
        nonlocal done
        while trio.current_time() < stop_at:
            if not await push():
                raise RuntimeError("nginx did not answer 200")
            done += 1

    stop_at = trio.current_time() + 0.5  # warm-up: connect, TLS, window growth
    async with trio.open_nursery() as workers:
        for _ in range(inflight):
            workers.start_soon(worker)
    done = 0
    start = trio.current_time()
    cpu_start = time.thread_time()
    stop_at = start + seconds
    async with trio.open_nursery() as workers:
        for _ in range(inflight):
            workers.start_soon(worker)
    elapsed = trio.current_time() - start
    cpu = time.thread_time() - cpu_start
    return done / elapsed, done / cpu


async def _bench_transport(
    port: int, ca_file: str, seconds: float, inflight: int
) -> tuple[float, float]:
    """The HTTP/2 transport alone: a ready-made request per push."""
    async with trio.open_nursery() as nursery:
        pool = Pool(
            Origin("127.0.0.1", port), make_ssl_context(ca_file), nursery, max_connections=1
        )

        async def push() -> bool:
            return (await pool.request(_request())).status == 200

        result = await _measure(push, seconds, inflight)
        assert len(pool.connections) == 1, "the benchmark measures one connection"
        await pool.aclose()
        nursery.cancel_scope.cancel()
    return result


async def _bench_pusher_trio(
    port: int, ca_file: str, seconds: float, inflight: int
) -> tuple[float, float]:
    """What the service pays per push: `Providers.send` (payload, headers, answer)."""
    app = App(
        app_id=TOPIC,
        type="apple",
        auth=AppleCertAuth(Authority().apns_client_pem(TOPIC)),
        host=f"127.0.0.1:{port}",
    )
    device = Device(aor="bench@example.com", device_id="d", type="apple", app=TOPIC, token=TOKEN)
    message = PushMessage(call_id="c1", caller_number="+15550100", caller_name="Bob")
    async with Providers(ca_file=ca_file, max_connections=1) as providers:

        async def push() -> bool:
            outcome = await providers.send(app, device, message, expires_at=time.time() + 30)
            return isinstance(outcome, Delivered)

        result = await _measure(push, seconds, inflight)
        assert providers.statistics()["connections"] == 1
    return result


# --- aioapns ---------------------------------------------------------------------------------


def _bench_aioapns(port: int, ca_file: str, seconds: float, inflight: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        # aioapns' cert pool insists on a client certificate file: give it a throw-away one.
        client_pem = Path(tmp, "client.pem")
        client_pem.write_text(Authority().apns_client_pem(TOPIC))
        return asyncio.run(_aioapns_main(port, ca_file, str(client_pem), seconds, inflight))


async def _aioapns_main(
    port: int, ca_file: str, cert_file: str, seconds: float, inflight: int
) -> tuple[float, float]:
    from aioapns.common import NotificationRequest
    from aioapns.connection import APNsCertConnectionPool, APNsProductionClientProtocol

    class LocalProtocol(APNsProductionClientProtocol):
        # aioapns has no host/port option (notes/push-protocols.md): subclass the protocol.
        APNS_SERVER = "127.0.0.1"
        APNS_PORT = port

    authority_context = ssl.create_default_context(cafile=ca_file)
    authority_context.set_alpn_protocols(["h2"])
    pool = APNsCertConnectionPool(
        cert_file=cert_file,
        topic=TOPIC,
        max_connections=1,
        max_connection_attempts=3,
        ssl_context=authority_context,
    )
    pool.protocol_class = LocalProtocol
    done = 0
    stop_at = 0.0

    async def worker() -> None:
        nonlocal done
        loop = asyncio.get_running_loop()
        while loop.time() < stop_at:
            request = NotificationRequest(
                device_token=TOKEN,
                message={
                    "aps": {
                        "alert": {"loc-key": "IC_MSG", "loc-args": ["Bob"]},
                        "sound": "default",
                    },
                    "call-id": "c1",
                },
                time_to_live=None,
            )
            result = await pool.send_notification(request)
            if not result.is_successful:
                raise RuntimeError(f"aioapns: {result.status} {result.description}")
            done += 1

    loop = asyncio.get_running_loop()
    stop_at = loop.time() + 0.5
    await asyncio.gather(*(worker() for _ in range(inflight)))
    done = 0
    start = loop.time()
    cpu_start = time.thread_time()
    stop_at = start + seconds
    await asyncio.gather(*(worker() for _ in range(inflight)))
    elapsed = loop.time() - start
    cpu = time.thread_time() - cpu_start
    pool.close()
    return done / elapsed, done / cpu


def _in_thread(function: Any, *args: Any) -> Any:
    """Each client gets a fresh interpreter thread state (no loop left over)."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(function(*args))
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.5, help="measured time per run")
    parser.add_argument("--inflight", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=4, help="alternating runs per client")
    # Called from load/bench.py without arguments: do not read that program's sys.argv.
    args = parser.parse_args(argv if argv is not None else [])
    authority = Authority()
    ours: list[tuple[float, float]] = []
    transport: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    with nginx(authority) as (port, ca_file):
        for _ in range(args.rounds):
            bench = (port, ca_file, args.seconds, args.inflight)
            ours.append(_in_thread(trio.run, _bench_pusher_trio, *bench))
            theirs.append(_in_thread(_bench_aioapns, *bench))
            transport.append(_in_thread(trio.run, _bench_transport, *bench))

    def median(runs: list[tuple[float, float]], which: int) -> float:
        return statistics.median(r[which] for r in runs)

    aio = median(theirs, 0), median(theirs, 1)
    tra = median(transport, 0), median(transport, 1)
    send = median(ours, 0), median(ours, 1)
    result = {
        # The brief's figure: the HTTP/2 transport against aioapns.
        "pusher_trio_pushes_per_s": round(tra[0]),
        "aioapns_pushes_per_s": round(aio[0]),
        "ratio": round(tra[0] / aio[0], 2),
        # Pushes per CPU-second of the client's thread: robust when other work shares
        # the machine (the wall-clock figures then depend on what else runs).
        "pusher_trio_pushes_per_cpu_s": round(tra[1]),
        "aioapns_pushes_per_cpu_s": round(aio[1]),
        "cpu_ratio": round(tra[1] / aio[1], 2),
        # The whole send (Providers.send: payload, headers, answer -> Outcome).
        "send_pushes_per_s": round(send[0]),
        "send_ratio": round(send[0] / aio[0], 2),
        "send_pushes_per_cpu_s": round(send[1]),
        "send_cpu_ratio": round(send[1] / aio[1], 2),
        "runs": {
            "transport": [round(r[0]) for r in transport],
            "send": [round(r[0]) for r in ours],
            "aioapns": [round(r[0]) for r in theirs],
        },
        "inflight": args.inflight,
        "connections": 1,
    }
    print(
        f"push, 1 connection, {args.inflight} in flight, nginx: "
        f"transport {result['pusher_trio_pushes_per_s']}/s vs aioapns "
        f"{result['aioapns_pushes_per_s']}/s = {result['ratio']}x "
        f"(per CPU-second {result['pusher_trio_pushes_per_cpu_s']} vs "
        f"{result['aioapns_pushes_per_cpu_s']} = {result['cpu_ratio']}x); "
        f"whole Providers.send {result['send_pushes_per_s']}/s = {result['send_ratio']}x "
        f"(per CPU-second {result['send_pushes_per_cpu_s']} = {result['send_cpu_ratio']}x); "
        f"runs {result['runs']}"
    )
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
