"""What the Prometheus metrics cost a push: the hooks alone, and pushes through the control socket.

    python -m load.bench_metrics [--calls 200000] [--seconds 2] [--rounds 4] [--inflight 50]

1. `hooks`: the four PushMetrics calls one push request makes (push_started,
   push_answered, registered, request_ended), timed in a loop: µs per push.
2. `service`: the running sidecar (app.run, real provider pools, the APNs stand-in
   over HTTP/2 + TLS, all in this process) answering Kazoo-style `push` requests
   (Token-ID, no wait) on its control socket, `--inflight` at once; rounds alternate
   metrics on and off (the service's observers list emptied), medians compared in the
   same run, as pushes per second and as CPU µs per push. The stand-in shares the
   process, so both are of the whole local path.

Figures only; nothing is asserted. Bounded: `--rounds` x `--seconds` plus start-up.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import trio
from prometheus_client import CollectorRegistry

from pusher_trio.app import Running, run
from pusher_trio.config import MetricsConfig
from pusher_trio.control.client import open_control
from pusher_trio.demo import local_config
from pusher_trio.metrics import PushMetrics
from pusher_trio.model import App, Device
from pusher_trio.providers import load_apple_cert
from pusher_trio.standins.certs import Authority
from pusher_trio.standins.fake_apns import FakeApns
from pusher_trio.store import unstructure_app

BUNDLE = "org.example.bench"
TOKEN = "0123456789abcdef" * 4


def hooks(calls: int) -> float:
    """µs per push for the metrics hooks one push request runs."""
    metrics = PushMetrics(CollectorRegistry())
    device = Device(aor="a@b", device_id="d", type="apple", app=BUNDLE, token=TOKEN)
    devices = [device]
    started = time.perf_counter()
    for _ in range(calls):
        metrics.push_started("c", "a@b", devices)
        metrics.push_answered("c", device, "delivered", None, 0.0042)
        metrics.registered("c", "a@b", "sip:a@b", 1.5)
        metrics.request_ended("c", "a@b", "registered", 1.6)
    return (time.perf_counter() - started) / calls * 1e6


async def service(seconds: float, rounds: int, inflight: int) -> dict[str, list[float]]:
    """Pushes per second through the control socket, metrics on and off, alternating."""
    figures: dict[str, list[float]] = {"on": [], "off": [], "cpu_on": [], "cpu_off": []}
    with tempfile.TemporaryDirectory() as folder:
        authority = Authority()
        ca_file = authority.write_ca(Path(folder) / "ca.pem")
        apns = FakeApns(authority=authority, topics={BUNDLE})
        config = local_config(Path(folder), tcp="", wait_timeout=5, ca_file=ca_file)
        config = attrs.evolve(config, metrics=MetricsConfig("127.0.0.1:0"))
        async with trio.open_nursery() as nursery:
            port = await nursery.start(apns.serve)
            running: Running = await nursery.start(
                lambda task_status: run(config, task_status=task_status, handle_signals=False)
            )
            assert running.control_socket is not None
            auth, _ = load_apple_cert(apns.client_pem(BUNDLE), time.time())
            app = App(BUNDLE, "apple", auth, host=f"127.0.0.1:{port}", push_type="voip")
            observers = list(running.service.observers)
            async with open_control(running.control_socket) as client:
                await client.call("apps.add", {"app": unstructure_app(app)})
                params: dict[str, Any] = {
                    "Token-ID": TOKEN,
                    "Token-Type": "apple",
                    "Token-App": BUNDLE,
                    "Call-ID": "bench",
                }
                await client.call("push", params)  # connect before timing
                for index in range(rounds * 2):
                    on = index % 2 == 0
                    running.service.observers[:] = observers if on else []
                    done = 0

                    async def worker(deadline: float) -> None:
                        nonlocal done
                        while trio.current_time() < deadline:
                            await client.call("push", params)
                            done += 1

                    started = trio.current_time()
                    cpu = time.process_time()
                    async with trio.open_nursery() as workers:
                        for _ in range(inflight):
                            workers.start_soon(worker, started + seconds)
                    rate = done / (trio.current_time() - started)
                    cpu_us = (time.process_time() - cpu) / done * 1e6
                    figures["on" if on else "off"].append(round(rate))
                    figures["cpu_on" if on else "cpu_off"].append(round(cpu_us, 1))
            running.shutdown()
            with trio.move_on_after(5):
                while running.service.running:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--inflight", type=int, default=50)
    args = parser.parse_args(argv)
    per_push = hooks(args.calls)
    runs = trio.run(service, args.seconds, args.rounds, args.inflight)
    on, off = statistics.median(runs["on"]), statistics.median(runs["off"])
    cpu_on = round(statistics.median(runs["cpu_on"]), 1)
    cpu_off = round(statistics.median(runs["cpu_off"]), 1)
    result = {
        "hooks_us_per_push": round(per_push, 2),
        "pushes_per_s_metrics_on": round(on),
        "pushes_per_s_metrics_off": round(off),
        "on_over_off": round(on / off, 3),
        "cpu_us_per_push_on": cpu_on,
        "cpu_us_per_push_off": cpu_off,
        "runs": runs,
    }
    print(
        f"metrics: hooks {result['hooks_us_per_push']} µs per push; through the control socket "
        f"{result['pushes_per_s_metrics_on']}/s with metrics vs "
        f"{result['pushes_per_s_metrics_off']}/s without = {result['on_over_off']}x; CPU per "
        f"push (whole process, stand-in included) {cpu_on} µs vs {cpu_off} µs; runs {runs}"
    )
    return result


if __name__ == "__main__":
    main()
