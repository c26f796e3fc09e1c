"""Web Push and proxy figures: what encryption and the proxy cost per push.

Three measurements, each bounded in count and time:

1. `encryption`: CPU per request built, pure code only: `apns.build_request` (cert
   auth, no JWT) against `webpush.build_request` (a new P-256 ephemeral key, ECDH,
   HKDF, AES-128-GCM per RFC 8291, the VAPID header from its cache).
2. `service`: pushes per second through a running `pusher-trio serve` (a subprocess):
   control socket (`push {aor, wait: false}`, `--inflight` at once, one AOR each) ->
   providers -> HTTP/2 + TLS -> the stand-ins (FakeApns, and FakeWebPush which also
   decrypts every push, in this driver process). CPU per push is the service process's
   own (utime + stime from /proc), so the stand-ins' work is not counted.
3. `proxy`: `Providers.send` to a local nginx (the bench_push setup) directly and
   through Debian's tinyproxy, pushes per second and the client's CPU per push, plus
   tinyproxy's own CPU per push.

    python -m load.bench_webpush [--pushes 1500] [--inflight 50] [--rounds 3]

The machine is shared: quote the ratios measured in the same run, not the absolutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric import ec

from load.bench_push import TOPIC, nginx
from load.serve import ServeProcess
from pusher_trio.control.client import open_control
from pusher_trio.demo import Mirror, Phone
from pusher_trio.model import App, AppleCertAuth, Delivered, Device, PushMessage, WebPushAuth
from pusher_trio.providers import Providers, apns, load_apple_cert, webpush
from pusher_trio.providers.proxy import parse_proxy_url
from pusher_trio.standins.certs import Authority
from pusher_trio.standins.fake_apns import FakeApns
from pusher_trio.standins.fake_webpush import FakeWebPush
from pusher_trio.store import unstructure_app

MESSAGE = PushMessage(call_id="c-bench", caller_number="+15550100", caller_name="Bob")
BUNDLE = "org.example.bench"
TEAM = "TEAM123456"
TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


# --- 1. encryption ---------------------------------------------------------------------------


def bench_encryption(count: int) -> dict[str, float]:
    now = time.time()
    apple = App(BUNDLE, "apple", AppleCertAuth(Authority().apns_client_pem(BUNDLE)))
    apple_device = Device("a@x", "d", "apple", BUNDLE, "0123456789abcdef" * 4)
    server = FakeWebPush(port=443)
    browser = server.subscribe()
    web = App("org.example.web", "webpush", WebPushAuth(webpush.generate_vapid_key(), "mailto:a@b"))
    web_device = Device(
        "w@x", "d", "webpush", web.app_id, browser.endpoint,
        extra={"p256dh": browser.p256dh, "auth": browser.auth},
    )  # fmt: skip
    cache = webpush.VapidTokenCache()
    assert isinstance(web.auth, WebPushAuth)

    def apns_once() -> None:
        apns.build_request(apple, apple_device, MESSAGE, None, now, now + 20)

    def webpush_once() -> None:
        header = cache.header(web.auth, server.origin, now)  # type: ignore[arg-type]
        ephemeral = ec.generate_private_key(ec.SECP256R1())
        webpush.build_request(
            web, web_device, MESSAGE, header, now, now + 20, ephemeral, os.urandom(16)
        )

    result = {}
    for name, once in (("apns", apns_once), ("webpush", webpush_once)):
        once()
        start = time.process_time()
        for _ in range(count):
            once()
        result[f"{name}_us_per_request"] = (time.process_time() - start) / count * 1e6
    return result


# --- 2. the whole service ------------------------------------------------------------------------

CONFIG = """
[control]
unix_socket = "run/control.sock"
tcp = ""
[sniffer]
listen = ["udp:127.0.0.1:0"]
[store]
path = "state/pusher.db"
[push]
ca_file = "{ca_file}"
max_waiting = 100000
[log]
level = "info"
format = "json"
"""


async def _service_run(
    folder: Path, pushes: int, inflight: int, rounds: int
) -> dict[str, list[tuple[float, float]]]:
    authority = Authority()
    ca_file = authority.write_ca(folder / "ca.pem")
    config = folder / "pusher.toml"
    config.write_text(CONFIG.format(ca_file=ca_file))
    apns_server = FakeApns(authority=authority, topics={BUNDLE})
    web_server = FakeWebPush(authority=authority)
    runs: dict[str, list[tuple[float, float]]] = {"apns": [], "webpush": []}
    async with trio.open_nursery() as nursery:
        apns_port = await nursery.start(apns_server.serve)
        await nursery.start(web_server.serve)
        serve = await trio.to_thread.run_sync(ServeProcess, config)
        try:
            mirror = Mirror(serve.sniffer)
            vapid = webpush.generate_vapid_key()
            auth, _ = load_apple_cert(apns_server.client_pem(BUNDLE), time.time())
            apps = [
                App(BUNDLE, "apple", auth, host=f"127.0.0.1:{apns_port}", push_type="voip"),
                App("org.example.web", "webpush", WebPushAuth(vapid, "mailto:ops@example.com")),
            ]
            aors: dict[str, list[str]] = {"apns": [], "webpush": []}
            async with open_control(serve.socket) as admin:
                for app in apps:
                    await admin.call("apps.add", {"app": unstructure_app(app)})
                for i in range(inflight):
                    token = os.urandom(32).hex()
                    params = f"pn-provider=apns;pn-prid={token};pn-param={TEAM}.{BUNDLE}.voip"
                    phone = Phone("iOS", f"ios{i}", "198.51.100.7", 50600, params, "Bench/1")
                    mirror.send(phone, phone.register(600))
                    aors["apns"].append(phone.aor)
                    browser = web_server.subscribe(webpush.vapid_public_key(vapid))
                    endpoint = urllib.parse.quote(browser.endpoint, safe="")
                    params = (
                        f"pn-provider=webpush;pn-prid={endpoint};"
                        f"pn-param={browser.p256dh}.{browser.auth}"
                    )
                    phone = Phone("Web", f"web{i}", "198.51.100.8", 50601, params, "JsSIP 3.10")
                    mirror.send(phone, phone.register(600))
                    aors["webpush"].append(phone.aor)
                with trio.fail_after(10):
                    while True:
                        listed = (await admin.call("devices.list", {}))["devices"]
                        if len(listed) >= 2 * inflight:
                            break
                        await trio.sleep(0.05)

                async def burst(kind: str, count: int) -> tuple[float, float]:
                    left = count

                    async def worker(aor: str) -> None:
                        nonlocal left
                        while left > 0:
                            left -= 1
                            result = await admin.call("push", {"aor": aor, "wait": False})
                            outcome = result["pushes"][0]["outcome"]
                            if outcome != "delivered":
                                raise RuntimeError(f"{kind} push: {outcome} {result}")

                    cpu = process_cpu(serve.proc.pid)
                    start = time.perf_counter()
                    async with trio.open_nursery() as workers:
                        for aor in aors[kind]:
                            workers.start_soon(worker, aor)
                    wall = time.perf_counter() - start
                    used = process_cpu(serve.proc.pid) - cpu
                    return count / wall, used / count * 1e6

                for kind in runs:  # warm-up: connections, JIT-free caches, VAPID token
                    await burst(kind, inflight * 2)
                for _ in range(rounds):
                    for kind in runs:
                        runs[kind].append(await burst(kind, pushes))
            mirror.close()
        finally:
            await trio.to_thread.run_sync(serve.terminate)
        nursery.cancel_scope.cancel()
    return runs


# --- 3. the proxy ------------------------------------------------------------------------------


async def _proxy_run(
    port: int, ca_file: str, proxy_url: str | None, pushes: int, inflight: int
) -> tuple[float, float]:
    app = App(
        TOPIC,
        "apple",
        AppleCertAuth(Authority().apns_client_pem(TOPIC)),
        host=f"127.0.0.1:{port}",
    )
    device = Device("bench@example.com", "d", "apple", TOPIC, "0123456789abcdef" * 4)
    proxy = parse_proxy_url(proxy_url) if proxy_url else None
    async with Providers(ca_file=ca_file, max_connections=1, proxy=proxy) as providers:
        # warm-up: the connection (and the tunnel) is opened before the clock starts
        await providers.send(app, device, MESSAGE, expires_at=time.time() + 30)
        left = pushes

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                outcome = await providers.send(app, device, MESSAGE, expires_at=time.time() + 30)
                if not isinstance(outcome, Delivered):
                    raise RuntimeError(f"proxy bench: {outcome}")

        cpu = time.thread_time()
        start = time.perf_counter()
        async with trio.open_nursery() as workers:
            for _ in range(inflight):
                workers.start_soon(worker)
        wall = time.perf_counter() - start
        used = time.thread_time() - cpu
    return pushes / wall, used / pushes * 1e6


def bench_proxy(pushes: int, inflight: int, rounds: int) -> dict[str, Any]:
    from tests.integration.tinyproxy import tinyproxy

    direct: list[tuple[float, float]] = []
    proxied: list[tuple[float, float]] = []
    proxy_cpu: list[float] = []
    authority = Authority()
    with nginx(authority) as (port, ca_file), tempfile.TemporaryDirectory() as tmp:
        with tinyproxy(Path(tmp)) as proxy:
            for _ in range(rounds):
                direct.append(trio.run(_proxy_run, port, ca_file, None, pushes, inflight))
                before = process_cpu(proxy.process.pid)
                proxied.append(trio.run(_proxy_run, port, ca_file, proxy.url, pushes, inflight))
                proxy_cpu.append((process_cpu(proxy.process.pid) - before) / pushes * 1e6)
    return {"direct": direct, "proxied": proxied, "tinyproxy_us_per_push": proxy_cpu}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pushes", type=int, default=1500, help="pushes per measured run")
    parser.add_argument("--inflight", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--encryptions", type=int, default=1000)
    args = parser.parse_args(argv if argv is not None else [])
    med = statistics.median

    enc = bench_encryption(args.encryptions)
    print(
        f"request building, CPU per request: apns {enc['apns_us_per_request']:.0f} us, "
        f"webpush (RFC 8291 encryption + VAPID) {enc['webpush_us_per_request']:.0f} us "
        f"= {enc['webpush_us_per_request'] / enc['apns_us_per_request']:.1f}x"
    )
    with tempfile.TemporaryDirectory(prefix="bench-webpush-") as tmp:
        runs = trio.run(_service_run, Path(tmp), args.pushes, args.inflight, args.rounds)
    service = {
        kind: {
            "pushes_per_s": round(med(r[0] for r in kind_runs)),
            "service_cpu_us_per_push": round(med(r[1] for r in kind_runs)),
            "runs": [round(r[0]) for r in kind_runs],
        }
        for kind, kind_runs in runs.items()
    }
    print(
        f"whole service (control socket -> HTTP/2 -> stand-in), {args.inflight} in flight: "
        f"apns {service['apns']['pushes_per_s']}/s ({service['apns']['service_cpu_us_per_push']}"
        f" us service CPU/push), webpush {service['webpush']['pushes_per_s']}/s "
        f"({service['webpush']['service_cpu_us_per_push']} us/push); runs "
        f"apns {service['apns']['runs']} webpush {service['webpush']['runs']}"
    )
    proxy = bench_proxy(args.pushes, args.inflight, args.rounds)
    direct_rate, proxied_rate = (
        med(r[0] for r in proxy["direct"]),
        med(r[0] for r in proxy["proxied"]),
    )
    direct_cpu, proxied_cpu = (
        med(r[1] for r in proxy["direct"]),
        med(r[1] for r in proxy["proxied"]),
    )
    print(
        f"proxy (Providers.send -> nginx, 1 connection, {args.inflight} in flight): direct "
        f"{direct_rate:.0f}/s ({direct_cpu:.0f} us client CPU/push), through tinyproxy "
        f"{proxied_rate:.0f}/s ({proxied_cpu:.0f} us/push) = {proxied_rate / direct_rate:.2f}x; "
        f"tinyproxy itself {med(proxy['tinyproxy_us_per_push']):.0f} us CPU/push; runs direct "
        f"{[round(r[0]) for r in proxy['direct']]} proxied {[round(r[0]) for r in proxy['proxied']]}"
    )
    return {"encryption": enc, "service": service, "proxy": proxy}


if __name__ == "__main__":
    main(sys.argv[1:])
