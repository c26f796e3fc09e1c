"""Two Kamailio nodes (DMQ on loopback, ports of their own), a sidecar each, one Redis
(DESIGN §10), the APNs stand-in, sipp phones and callers.

Kamailio A and B share their location table with dmq_usrloc (`WITH_DMQ` in the
shipped kamailio.cfg); the sidecars share device records, apps and registration
events through a real redis-server.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from pusher_trio.control.client import open_control
from pusher_trio.standins.certs import Authority
from pusher_trio.standins.fake_apns import FakeApns
from tests.e2e.harness import Kamailio, Sidecar, SippProcess, free_port, quoted, run_sipp
from tests.e2e.test_push_flow import IOS_BUNDLE, PUSH_TIMEOUT, Phone, eventually, ios_phone, mask
from tests.redis_harness import RedisServer

pytestmark = pytest.mark.e2e


class Node:
    def __init__(self, name: str, sidecar: Sidecar, kam: Kamailio) -> None:
        self.name = name
        self.sidecar = sidecar
        self.kam = kam

    async def control(self, method: str, params: Any = None) -> Any:
        async with open_control(self.sidecar.control) as c:
            return await c.call(method, params or {})


class Cluster:
    def __init__(self, tmp: Path, a: Node, b: Node, apns: FakeApns) -> None:
        self.tmp = tmp
        self.a, self.b = a, b
        self.apns = apns
        self.phones: dict[str, tuple[Phone, Node]] = {}  # token -> (phone, node it wakes on)
        self.procs: list[SippProcess] = []
        self.uas: dict[str, SippProcess] = {}
        self.calls_per_wake = 1
        self.wake_delay = 0.0  # s between the push and the phone's REGISTER
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    async def register(self, phone: Phone, node: Node, expires: int, cport: int = 0) -> None:
        keys = {
            "user": phone.user,
            "cport": str(cport or free_port()),
            "cparams": phone.cparams,
            "ua": phone.ua,
            "expires": str(expires),
        }
        res = await run_sipp(
            "register.xml", remote=node.kam.sip_port, workdir=self.tmp, name=self.name("reg"),
            keys=keys, timeout_s=10,
        )  # fmt: skip
        assert res.returncode == 0, res.stdout

    async def asleep(self, phone: Phone, node: Node) -> None:
        """Registered once on `node` (its sidecar learns the token), then unregistered;
        a push wakes it there again."""
        self.phones[phone.token] = (phone, node)
        cport = free_port()  # the same contact: expires=0 removes the binding (on every node)
        await self.register(phone, node, 600, cport)
        await self.register(phone, node, 0, cport)
        aor = f"{phone.user}@127.0.0.1"
        for n in (self.a, self.b):  # learned anywhere, found anywhere
            await eventually(
                lambda n=n: n.control("devices.list", {"aor": aor}),
                lambda r: any(d["token"] == mask(phone.token) for d in r["devices"]),
            )

    def on_delivered(self, token: str, headers: Any, payload: Any) -> None:
        found = self.phones.get(token)
        if found is None or found[0].user in self.uas:
            return
        self.uas[found[0].user] = None  # type: ignore[assignment]  # waking
        if self.wake_delay:
            threading.Timer(self.wake_delay, self.wake, found).start()
        else:
            self.wake(*found)

    def wake(self, phone: Phone, node: Node) -> None:
        """The woken phone: a UAS on a fresh port, then a REGISTER naming that port."""
        uas_port = free_port()
        uas = SippProcess(
            "uas_phone.xml", remote=node.kam.sip_port, workdir=self.tmp, name=self.name("uas"),
            local_port=uas_port, calls=self.calls_per_wake, timeout_s=30,
        )  # fmt: skip
        self.uas[phone.user] = uas
        self.procs.append(uas)
        keys = {
            "user": phone.user,
            "cport": str(uas_port),
            "cparams": phone.cparams,
            "ua": phone.ua,
            "expires": "600",
        }
        self.procs.append(
            SippProcess(
                "register.xml", remote=node.kam.sip_port, workdir=self.tmp, name=self.name("wreg"),
                keys=keys, timeout_s=10,
            )
        )  # fmt: skip

    def call(self, node: Node, user: str) -> SippProcess:
        proc = SippProcess(
            "call_answered.xml", remote=node.kam.sip_port, workdir=self.tmp,
            name=self.name(f"call{node.name}"), service=user, timeout_s=20,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def pushes_to(self, phone: Phone) -> int:
        return sum(1 for r in self.apns.received if r.token == phone.token)

    def debug(self) -> str:
        return "".join(
            f"\n--- kamailio {n.name} ---\n{n.kam.log()[-2500:]}"
            f"\n--- sidecar {n.name} ---\n{n.sidecar.log()[-2500:]}"
            for n in (self.a, self.b)
        )


@contextlib.asynccontextmanager
async def open_cluster(tmp: Path) -> AsyncIterator[Cluster]:
    redis = RedisServer(tmp / "redis")
    (tmp / "redis").mkdir()
    await trio.to_thread.run_sync(redis.start)
    holder: list[Cluster] = []

    def delivered(token: str, headers: Any, payload: Any) -> None:
        if holder:
            holder[0].on_delivered(token, headers, payload)

    apns = FakeApns(authority=Authority(), topics={IOS_BUNDLE}, on_delivered=delivered)
    nodes: list[Node] = []
    try:
        async with trio.open_nursery() as nursery:
            apns_port = await nursery.start(apns.serve)
            dmq_ports = [free_port(), free_port()]
            for i, name in enumerate("ab"):
                sidecar = Sidecar(
                    tmp / f"sidecar-{name}", ca_file=apns.ca_file, wait_timeout=PUSH_TIMEOUT,
                    store_backend="redis", redis_url=redis.url,
                )  # fmt: skip
                await trio.to_thread.run_sync(sidecar.start)
                kam = Kamailio(
                    rundir=tmp / f"kam-{name}",
                    sip_port=free_port(),
                    defines={
                        "PUSHER_RPC_SERVER": quoted(
                            f"conn=pusher;addr=127.0.0.1;port={sidecar.control_port}"
                        ),
                        "PUSHER_HEP_URI": quoted(f"sip:127.0.0.1:{sidecar.sniffer_port}"),
                        "PUSHER_PUSH_TIMEOUT": PUSH_TIMEOUT,
                        "KAM_CHILDREN": 2,
                        "WITH_DMQ": None,
                        "DMQ_PORT": dmq_ports[i],
                        "DMQ_SERVER_ADDRESS": quoted(f"sip:127.0.0.1:{dmq_ports[i]}"),
                        "DMQ_NOTIFICATION_ADDRESS": quoted(f"sip:127.0.0.1:{dmq_ports[1 - i]}"),
                    },
                )
                nodes.append(Node(name.upper(), sidecar, kam))
            # the app is added once, on A, with the CLI: B serves pushes with it
            cert = tmp / "app.pem"
            cert.write_text(apns.client_pem(IOS_BUNDLE))
            await trio.to_thread.run_sync(
                functools.partial(
                    nodes[0].sidecar.cli, "add-apple-app", IOS_BUNDLE, str(cert),
                    f"127.0.0.1:{apns_port}", "--push-type", "voip",
                )
            )  # fmt: skip
            for node in nodes:
                await trio.to_thread.run_sync(node.kam.start)
            cluster = Cluster(tmp, nodes[0], nodes[1], apns)
            holder.append(cluster)
            with trio.fail_after(10):
                for node in nodes:
                    await eventually(
                        lambda n=node: n.control("status"),
                        lambda s: (
                            s.get("control", {}).get("connections", 2) >= 2
                            and s["redis"]["up"] == 1
                        ),
                    )
                    await eventually(
                        lambda n=node: n.control("apps.list"),
                        lambda r: [a["app_id"] for a in r["apps"]] == [IOS_BUNDLE],
                    )
            yield cluster
            nursery.cancel_scope.cancel()
    finally:
        for cluster in holder:
            for proc in cluster.procs:
                proc.stop()
        for node in nodes:
            await trio.to_thread.run_sync(node.kam.stop)
            await trio.to_thread.run_sync(node.sidecar.stop)
        await trio.to_thread.run_sync(redis.stop)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with open_cluster(tmp_path) as c:
        yield c


async def test_registered_on_a_called_on_b_pushed_from_b_completes(cluster: Cluster) -> None:
    phone = ios_phone("alice")
    with trio.fail_after(60):
        await cluster.asleep(phone, cluster.a)
        res = await cluster.call(cluster.b, phone.user).wait()
        assert res.returncode == 0, res.stdout + cluster.debug()
        uas = await cluster.uas[phone.user].wait()
        assert uas.returncode == 0, uas.stdout + cluster.debug()
    assert cluster.pushes_to(phone) == 1
    status_b = await cluster.b.control("status")
    assert status_b["pushes"]["delivered"] == 1  # B pushed
    status_a = await cluster.a.control("status")
    assert status_a["pushes"]["delivered"] == 0


async def test_two_calls_on_a_and_b_one_push_both_complete(cluster: Cluster) -> None:
    phone = ios_phone("bob")
    cluster.calls_per_wake = 2
    cluster.wake_delay = 1.0  # the call on B arrives while the phone is still waking
    with trio.fail_after(60):
        await cluster.asleep(phone, cluster.a)
        call_a = cluster.call(cluster.a, phone.user)
        await eventually(trio.lowlevel.checkpoint, lambda _: cluster.pushes_to(phone) == 1)
        call_b = cluster.call(cluster.b, phone.user)
        res_a, res_b = await call_a.wait(), await call_b.wait()
        assert res_a.returncode == 0, res_a.stdout + cluster.debug()
        assert res_b.returncode == 0, res_b.stdout + cluster.debug()
        uas = await cluster.uas[phone.user].wait()
        assert uas.returncode == 0, uas.stdout + cluster.debug()
    assert cluster.pushes_to(phone) == 1
