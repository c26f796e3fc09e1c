"""What `check` costs (DESIGN §12): the sidecar's answer to Kamailio before each REGISTER
with push params is saved.

    python -m load.check_bench [--calls 20000] [--rounds 5]

In-process microbenchmark, labelled as such: `Service.call("check", ...)` on one trio
loop, no socket, with two apps configured; then the same through the control server's
TCP listener (netstrings, one connection, one request at a time, as janssonrpcc sends
them), so the framing and the loopback round trip are counted too. Prints the median of
`--rounds` rounds per case; asserts nothing. The REGISTER storm through Kamailio with and
without the check is `python -m load.storm --only register --compare-check`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Awaitable, Callable

import trio

from pusher_trio.control.client import open_control
from pusher_trio.control.server import ControlServer
from pusher_trio.model import App, AppleCertAuth, FirebaseAuth
from pusher_trio.service import Service
from pusher_trio.store import MemoryStore

TOKEN = "ab" * 32
CONTACTS = {
    "rfc8599-apns": (
        f"<sip:alice@192.0.2.1:5070;transport=udp;pn-provider=apns;pn-prid={TOKEN};"
        'pn-param=ABCDE12345.com.example.app.voip>;+sip.instance="<urn:uuid:1>";expires=600'
    ),
    "rfc8599-fcm-by-number": "<sip:bob@192.0.2.2:5070;pn-provider=fcm;pn-prid=tok;pn-param=4242>",
    "unsupported-555": "<sip:carol@192.0.2.3;pn-provider=acme;pn-prid=x;pn-param=y>",
}


def service() -> Service:
    store = MemoryStore()
    store.put_app(App("com.example.app", "apple", AppleCertAuth(pem="-"), push_type="voip"))
    account = {"project_id": "droid", "private_key": "-", "client_email": "x@y"}
    store.put_app(App("droid", "firebase", FirebaseAuth(account, project_number="4242")))
    return Service(store, pusher=None)  # type: ignore[arg-type]  # check never pushes


async def timed(calls: int, one: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await one()
    return (time.perf_counter() - start) / calls * 1e6


async def bench(calls: int, rounds: int) -> None:
    svc = service()
    print(f"check, {calls} calls per round, median of {rounds} rounds (busy shared machine)")
    print(f"{'case':28} {'in-process µs':>14} {'over TCP µs':>12} {'TCP/s':>8}")
    async with trio.open_nursery() as nursery:
        server = ControlServer(svc, tcp="127.0.0.1:0")
        bound = await nursery.start(server.serve)
        host, port = bound[0]
        async with open_control(f"{host}:{port}") as client:
            for name, contact in CONTACTS.items():
                params = {"contact": contact}

                async def local(params: dict[str, str] = params) -> object:
                    return await svc.call("check", params)

                async def remote(params: dict[str, str] = params) -> object:
                    return await client.call("check", params)

                here = statistics.median([await timed(calls, local) for _ in range(rounds)])
                far = statistics.median([await timed(calls // 4, remote) for _ in range(rounds)])
                print(f"{name:28} {here:14.1f} {far:12.1f} {1e6 / far:8.0f}")
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load.check_bench")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    trio.run(bench, args.calls, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
