"""Provider faults and crash/restart, through the whole service (the hardening battery).

`python -m load.faults providers [--quick]` runs it; tests/hardening/ run single faults.

Provider faults: the real service (`pusher_trio.app.run`, real provider pools) talks to
the APNs and FCM stand-ins of load/, which are scripted to misbehave. Pushes go in
through the control protocol over TCP, as Kamailio's janssonrpcc sends them (Kazoo
push_req with Token-ID: push to that token, answer `pushed` or an error). For every
fault the check is the contract of DESIGN §7/§9/§11: each push ends delivered, or
failed with a reason (PushRejected with the provider's outcome, or Timeout saying the
push did not complete), no later than its deadline (+ SLACK), never hangs; and once the
fault is over, a normal push is delivered again without a restart (the time that
takes, from the moment the fault ended, is the recovery time).

Faults (`FAULTS`; `--only=a,b` picks some): GOAWAY mid-burst, TCP reset with streams in
flight, flapping (every connection closed or GOAWAYed at once), RST_STREAM, stalled
streams, a frozen connection (dead peer), 503 storms, 429 with retry-after (within and
beyond the deadline), a TLS handshake that never completes, expired certificates (APNs
server, our APNs client certificate, FCM/OAuth server), an OAuth token_uri that never
answers, and Kamailio's waiting `push {aor}` under 503s, a stall and a GOAWAY + wake-up.

Crash/restart: `pusher-trio serve` as a subprocess, a REGISTER storm of HEPv3 copies
over UDP from this process, a `push` held open on a TCP control connection, then
SIGKILL. Checks: every device whose 2xx copy was sent more than 1 s before the kill is
in the store file, the file passes `PRAGMA integrity_check` and opens (timed), the held
`push` sees its connection close, and the daemon starts again on the same store.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import attrs
import trio

from load.serve import ServeProcess
from pusher_trio.app import Running, run
from pusher_trio.config import (
    Config,
    ControlConfig,
    LogConfig,
    PushConfig,
    SnifferConfig,
    StoreConfig,
)
from pusher_trio.control import jsonrpc
from pusher_trio.control.client import ControlClient, ControlConnectionLost, open_control
from pusher_trio.model import App, AppleCertAuth
from pusher_trio.providers import load_service_account
from pusher_trio.standins.certs import LOCAL_NAMES, Authority
from pusher_trio.standins.common import Answer, Drop, Freeze, GoAway, Reset, Stall
from pusher_trio.standins.fake_apns import FakeApns
from pusher_trio.standins.fake_fcm import FakeFcm
from pusher_trio.store import unstructure_app

PushType = Literal["alert", "voip"]
BUNDLE = "org.example.faults"
PROJECT = "faults-project"
FCM_APP = "org.example.faults.android"
SLACK = 0.5  # an answer may come this long after the push's deadline (scheduling, I/O)
HANG = 5.0  # no answer this long after the deadline: the push hangs (a failed check)
PROBE_TIMEOUT = 2.0  # deadline of each recovery probe
RECOVERY_LIMIT = 20.0  # recovery probes stop after this long (a failed check)


# --- records ---------------------------------------------------------------------------------


@attrs.define
class PushResult:
    label: str
    outcome: str  # delivered | retry_later | rejected | auth_failed | token_invalid | timeout | hang | error
    reason: str | None
    took: float
    deadline: float  # the push's timeout in seconds

    @property
    def in_time(self) -> bool:
        return self.outcome != "hang" and self.took <= self.deadline + SLACK


@attrs.define
class FaultReport:
    name: str
    what: str
    pushes: list[PushResult] = attrs.field(factory=list)
    checks: list[tuple[str, bool]] = attrs.field(factory=list)
    recovery: float | None = None  # seconds from fault over to a delivered push
    notes: list[str] = attrs.field(factory=list)

    def check(self, description: str, ok: bool) -> bool:
        self.checks.append((description, bool(ok)))
        return ok

    @property
    def ok(self) -> bool:
        return all(ok for _, ok in self.checks)

    def outcomes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.pushes:
            counts[p.outcome] = counts.get(p.outcome, 0) + 1
        return counts

    def lines(self) -> list[str]:
        out = [f"[{'ok' if self.ok else 'FAILED'}] {self.name}: {self.what}"]
        if self.pushes:
            worst = max(self.pushes, key=lambda p: p.took - p.deadline)
            reasons = sorted({f"{p.outcome}: {p.reason}" for p in self.pushes if p.reason})
            out.append(
                f"    pushes {len(self.pushes)}  outcomes {self.outcomes()}  "
                f"max time to outcome {max(p.took for p in self.pushes):.2f}s "
                f"(worst vs deadline: {worst.took:.2f}s of {worst.deadline:.1f}s)"
            )
            for reason in reasons[:4]:
                out.append(f"    reason  {reason[:150]}")
        if self.recovery is not None:
            out.append(f"    recovery {self.recovery:.2f}s (fault over -> next push delivered)")
        out.extend(f"    note    {n}" for n in self.notes)
        out.extend(f"    check   {'ok  ' if ok else 'FAIL'} {d}" for d, ok in self.checks)
        return out


def classify(error: jsonrpc.ControlError) -> tuple[str, str | None]:
    data = error.data if isinstance(error.data, dict) else {}
    pushes = data.get("pushes") or []
    if isinstance(error, jsonrpc.Timeout):
        return "timeout", str(data.get("reason") or error.message)
    if isinstance(error, jsonrpc.PushRejected) and pushes:
        first = pushes[0]
        return str(first.get("outcome")), str(first.get("reason"))
    return f"error {type(error).__name__}", error.message


# --- the service with its stand-ins ------------------------------------------------------------


def expired_context(authority: Authority) -> Any:
    """A server TLS context whose certificate (issued by the trusted CA) expired yesterday."""
    import ssl

    now = datetime.datetime.now(datetime.UTC)
    cert, key = authority.issue(
        *LOCAL_NAMES,
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory(prefix="faults-certs-") as tmp:
        Path(tmp, "c.pem").write_text(cert)
        Path(tmp, "k.pem").write_text(key)
        context.load_cert_chain(str(Path(tmp, "c.pem")), str(Path(tmp, "k.pem")))
    context.set_alpn_protocols(["h2"])
    context.load_verify_locations(cadata=authority.ca_pem.decode())
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def blackhole() -> socket.socket:
    """A TCP listener that accepts (the kernel completes the handshake) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


@attrs.define
class Bench:
    """The running service, its stand-ins and one TCP control connection (janssonrpcc's)."""

    folder: Path
    nursery: trio.Nursery
    authority: Authority
    running: Running
    apns: FakeApns
    fcm: FakeFcm
    control: ControlClient
    serial: int = 0

    async def add_apple_app(
        self, app_id: str, port: int, pem: str | None = None, push_type: PushType = "voip"
    ) -> None:
        auth = AppleCertAuth(pem or self.authority.apns_client_pem(app_id))
        app = App(app_id, "apple", auth, host=f"127.0.0.1:{port}", push_type=push_type)
        await self.control.call("apps.add", {"app": unstructure_app(app)})

    async def push(
        self, kind: str = "apple", deadline: float = 3.0, app_id: str | None = None
    ) -> PushResult:
        self.serial += 1
        if kind == "apple":
            token = os.urandom(32).hex()
            app = app_id or BUNDLE
        else:
            token = f"fcm-{self.serial}-" + os.urandom(40).hex()
            app = app_id or FCM_APP
        params = {
            "Token-ID": token,
            "Token-Type": kind,
            "Token-App": app,
            "Call-ID": f"fault-{self.serial}",
            "timeout": deadline,
        }
        started = trio.current_time()
        outcome, reason = "hang", None
        with trio.move_on_after(deadline + HANG):
            try:
                await self.control.call("push", params)
                outcome = "delivered"
            except jsonrpc.ControlError as error:
                outcome, reason = classify(error)
            except ControlConnectionLost as error:
                outcome, reason = "error connection lost", str(error)
        return PushResult(
            f"{kind}-{self.serial}", outcome, reason, trio.current_time() - started, deadline
        )

    async def burst(
        self, count: int, kind: str = "apple", deadline: float = 3.0, app_id: str | None = None
    ) -> list[PushResult]:
        results: list[PushResult] = []

        async def one() -> None:
            results.append(await self.push(kind, deadline, app_id))

        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
        return results

    async def recover(
        self, report: FaultReport, kind: str = "apple", app_id: str | None = None
    ) -> None:
        """Probe until a push is delivered; the time since the fault ended is the recovery."""
        started = trio.current_time()
        probes = 0
        while trio.current_time() - started < RECOVERY_LIMIT:
            probes += 1
            result = await self.push(kind, PROBE_TIMEOUT, app_id)
            if result.outcome == "delivered":
                report.recovery = trio.current_time() - started
                if probes > 1:
                    report.notes.append(f"{probes} probes until delivered")
                break
            await trio.sleep(0.1)
        report.check(
            f"a normal push is delivered within {RECOVERY_LIMIT:.0f}s after the fault",
            report.recovery is not None,
        )

    def pool_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.running.providers.statistics()
        return stats


def config_for(folder: Path, ca_file: str) -> Config:
    return Config(
        control=ControlConfig(unix_socket=str(folder / "run" / "control.sock"), tcp="127.0.0.1:0"),
        sniffer=SnifferConfig(listen=["udp:127.0.0.1:0"]),
        store=StoreConfig(path=str(folder / "state" / "pusher.db")),
        push=PushConfig(wait_timeout=3.0, max_wait=30.0, ca_file=ca_file),
        log=LogConfig(level="error"),
    )


async def with_bench(folder: Path, body: Callable[[Bench], Awaitable[None]]) -> None:
    """Start stand-ins and the service, run `body`, stop everything."""
    authority = Authority()
    ca_file = authority.write_ca(folder / "ca.pem")
    apns = FakeApns(authority=authority, topics=None)
    fcm = FakeFcm(authority=authority)
    async with trio.open_nursery() as nursery:
        apns_port = await nursery.start(apns.serve)
        await nursery.start(fcm.serve)
        stopped = trio.Event()

        async def sidecar(*, task_status: trio.TaskStatus[Running]) -> None:
            try:
                await run(
                    config_for(folder, ca_file), task_status=task_status, handle_signals=False
                )
            finally:
                stopped.set()

        running: Running = await nursery.start(sidecar)
        assert running.control_tcp is not None
        host, port = running.control_tcp
        async with open_control(f"{host}:{port}") as control:
            bench = Bench(folder, nursery, authority, running, apns, fcm, control)
            await bench.add_apple_app(BUNDLE, apns_port)
            account = fcm.new_service_account(PROJECT)
            firebase = App(
                FCM_APP,
                "firebase",
                load_service_account(
                    json.dumps(fcm.service_account(account)), base_url=fcm.base_url
                ),
            )
            await control.call("apps.add", {"app": unstructure_app(firebase)})
            await body(bench)
        running.shutdown()
        with trio.move_on_after(6):
            await stopped.wait()
        nursery.cancel_scope.cancel()


# --- the faults ----------------------------------------------------------------------------------


def _all_in_time(report: FaultReport, results: list[PushResult]) -> None:
    report.pushes.extend(results)
    late = [p for p in results if not p.in_time]
    report.check(
        f"every push answered by its deadline (+{SLACK}s), none hangs"
        + (f" [late: {[(p.outcome, round(p.took, 2)) for p in late[:3]]}]" if late else ""),
        not late,
    )
    unexplained = [
        p for p in results if p.outcome not in ("delivered", "registered") and not p.reason
    ]
    report.check("every push not delivered carries a reason", not unexplained)


async def fault_goaway(bench: Bench, quick: bool, kind: str = "apple") -> FaultReport:
    burst = 40 if quick else 400
    server = bench.apns if kind == "apple" else bench.fcm
    report = FaultReport(f"goaway-{kind}", f"GOAWAY at stream {burst // 2} of a {burst}-push burst")
    before = bench.pool_stats()
    server.latency = 0.05  # keep streams in flight across the GOAWAY
    server.goaway_after(burst // 2, reason="Shutdown")
    results = await bench.burst(burst, kind)
    server.latency = 0.0
    server.clear_script()
    _all_in_time(report, results)
    report.check(
        "all delivered (unprocessed streams replayed)", report.outcomes() == {"delivered": burst}
    )
    after = bench.pool_stats()
    replays = sum(p["replays"] for p in after["pool_details"]) - sum(
        p["replays"] for p in before["pool_details"]
    )
    report.notes.append(f"stand-in goaways {server.goaways}, client replays {replays}")
    await bench.recover(report, kind)
    return report


async def fault_drop(bench: Bench, quick: bool, kind: str = "apple") -> FaultReport:
    half = 20 if quick else 200
    server = bench.apns if kind == "apple" else bench.fcm
    report = FaultReport(
        f"reset-{kind}", f"TCP connection closed (no GOAWAY) with {half} streams in flight"
    )
    server.latency = 0.3
    results: list[PushResult] = []
    async with trio.open_nursery() as nursery:

        async def first_half() -> None:
            results.extend(await bench.burst(half, kind))

        nursery.start_soon(first_half)
        await trio.sleep(0.1)  # the first half is on the wire, held by the latency
        server.latency = 0.0
        server.script(Drop())
        results.extend(await bench.burst(half, kind))
    server.clear_script()
    _all_in_time(report, results)
    report.check(
        "every push delivered (lost streams retried on a new connection)",
        report.outcomes() == {"delivered": 2 * half},
    )
    await bench.recover(report, kind)
    return report


def _failed_in_flapping(result: PushResult) -> bool:
    """RetryLater, or a last attempt the deadline cut short (DESIGN §11: Timeout, "the push
    did not complete"): both end the push in time with a reason."""
    return result.outcome == "retry_later" or (
        result.outcome == "timeout" and result.reason == "the push did not complete"
    )


async def fault_flapping(bench: Bench, quick: bool, kind: str = "apple") -> FaultReport:
    count = 10 if quick else 50
    server = bench.apns if kind == "apple" else bench.fcm
    report = FaultReport(
        f"flapping-{kind}",
        f"every connection closed at its first request, then GOAWAY before every stream; "
        f"{count} pushes each (deadline 2s)",
    )
    server.script(Drop(), times=None)
    dropped = await bench.burst(count, kind, deadline=2.0)
    server.clear_script()
    _all_in_time(report, dropped)
    report.check(
        "TCP closes: every push fails (retry_later, or cut by its deadline) with a reason",
        all(_failed_in_flapping(p) for p in dropped),
    )
    server.script(GoAway("Shutdown"), times=None)
    refused = await bench.burst(count, kind, deadline=2.0)
    server.clear_script()
    _all_in_time(report, refused)
    report.check(
        "GOAWAYs: every push fails (retry_later, or cut by its deadline) with a reason",
        all(_failed_in_flapping(p) for p in refused),
    )
    report.notes.append(f"connections opened by the stand-in: {server.connections}")
    report.check(
        "reconnects backed off: at most 12 connections in ~4 s of flapping (was 135)",
        server.connections <= 12,
    )
    await bench.recover(report, kind)
    return report


async def fault_rst_stream(bench: Bench, quick: bool, kind: str = "apple") -> FaultReport:
    count, resets = (20, 5) if quick else (200, 50)
    server = bench.apns if kind == "apple" else bench.fcm
    report = FaultReport(f"rst-stream-{kind}", f"RST_STREAM on {resets} of {count} pushes")
    server.script(Reset(), times=resets)
    results = await bench.burst(count, kind)
    server.clear_script()
    _all_in_time(report, results)
    outcomes = report.outcomes()
    report.check(
        f"{resets} rejected with the reset as reason, the rest delivered",
        outcomes.get("rejected") == resets and outcomes.get("delivered") == count - resets,
    )
    await bench.recover(report, kind)
    return report


async def fault_stall(bench: Bench, quick: bool, kind: str = "apple") -> FaultReport:
    count, stalls, deadline = (20, 5, 1.5) if quick else (200, 50, 3.0)
    server = bench.apns if kind == "apple" else bench.fcm
    report = FaultReport(
        f"stall-{kind}", f"{stalls} of {count} streams never answered (deadline {deadline}s)"
    )
    server.script(Stall(), times=stalls)
    results = await bench.burst(count, kind, deadline=deadline)
    server.clear_script()
    _all_in_time(report, results)
    outcomes = report.outcomes()
    report.check(
        f"{stalls} end as Timeout 'did not complete', the rest delivered",
        outcomes.get("timeout") == stalls and outcomes.get("delivered") == count - stalls,
    )
    slow = [p for p in results if p.outcome == "delivered" and p.took > 1.0]
    report.check("the stalled streams do not hold up the others (<1s)", not slow)
    await bench.recover(report, kind)
    return report


async def fault_freeze(bench: Bench, quick: bool, kind: str = "apple") -> FaultReport:
    count, deadline = (10, 1.5) if quick else (50, 3.0)
    server = bench.apns if kind == "apple" else bench.fcm
    report = FaultReport(
        f"freeze-{kind}",
        f"the connection goes silent (dead peer, PINGs unanswered), {count} pushes",
    )
    server.script(Freeze())
    results = await bench.burst(count, kind, deadline=deadline)
    _all_in_time(report, results)
    report.check("every push ends (Timeout) by its deadline", all(p.in_time for p in results))
    await bench.recover(report, kind)
    return report


async def fault_503(bench: Bench, quick: bool, kind: str = "apple") -> FaultReport:
    count = 20 if quick else 200
    server = bench.apns if kind == "apple" else bench.fcm
    status_reason = "ServiceUnavailable" if kind == "apple" else "UNAVAILABLE"
    report = FaultReport(
        f"503-storm-{kind}",
        f"503 to the next {2 * count} requests ({count} pushes, deadline 3s), then 503 to all for 2s",
    )
    server.script(Answer(503, status_reason), times=2 * count)
    results = await bench.burst(count, kind, deadline=3.0)
    _all_in_time(report, results)
    delivered = report.outcomes().get("delivered", 0)
    report.check("short storm: retried with backoff, most delivered", delivered >= count * 0.8)
    server.script(Answer(503, status_reason), times=None)
    endless = await bench.burst(count // 2, kind, deadline=2.0)
    server.clear_script()
    _all_in_time(report, endless)
    report.check(
        "endless storm: every push fails as retry_later before its deadline",
        all(p.outcome == "retry_later" for p in endless),
    )
    await bench.recover(report, kind)
    return report


async def fault_429(bench: Bench, quick: bool, kind: str = "apple") -> FaultReport:
    count = 10 if quick else 100
    server = bench.apns if kind == "apple" else bench.fcm
    reason = "TooManyRequests" if kind == "apple" else "QUOTA_EXCEEDED"
    report = FaultReport(
        f"429-{kind}", f"429 retry-after: 1 to {count} pushes, then retry-after: 60 (> deadline)"
    )
    server.script(Answer(429, reason, retry_after=1), times=count)
    results = await bench.burst(count, kind, deadline=3.0)
    _all_in_time(report, results)
    waited = [p.took for p in results if p.outcome == "delivered"]
    report.check(
        "retry-after 1 honoured: all delivered after >= 1s",
        len(waited) == count and min(waited) >= 1.0,
    )
    server.script(Answer(429, reason, retry_after=60), times=count)
    hopeless = await bench.burst(count, kind, deadline=3.0)
    server.clear_script()
    _all_in_time(report, hopeless)
    report.check(
        "retry-after beyond the deadline: retry_later at once (<1s)",
        all(p.outcome == "retry_later" and p.took < 1.0 for p in hopeless),
    )
    await bench.recover(report, kind)
    return report


async def fault_tls_blackhole(bench: Bench, quick: bool) -> FaultReport:
    count, deadline = (5, 1.5) if quick else (20, 3.0)
    app_id = BUNDLE + ".blackhole"
    report = FaultReport(
        "tls-never-completes",
        f"APNs host accepts TCP and never answers the TLS handshake; {count} pushes, deadline {deadline}s",
    )
    hole = blackhole()
    port = hole.getsockname()[1]
    try:
        await bench.add_apple_app(app_id, port)
        results = await bench.burst(count, "apple", deadline=deadline, app_id=app_id)
        _all_in_time(report, results)
        report.check("every push ends as Timeout", all(p.outcome == "timeout" for p in results))
    finally:
        hole.close()
    # The host comes back: a real (stand-in) APNs on the same port.
    revived = FakeApns(authority=bench.authority, topics=None, port=port)
    await bench.nursery.start(revived.serve)
    await bench.recover(report, "apple", app_id)
    return report


async def fault_outage(bench: Bench, quick: bool) -> FaultReport:
    count, down = (10, 2.0) if quick else (50, 5.0)
    app_id = BUNDLE + ".outage"
    report = FaultReport(
        "outage-apple",
        f"APNs goes away for {down:.0f}s (connections closed, port refused), then comes back "
        f"on the same port; {count} pushes meanwhile (deadline 1.5s)",
    )

    first = FakeApns(authority=bench.authority, topics=None)
    scope: trio.CancelScope = await bench.nursery.start(_scoped, first)
    await bench.add_apple_app(app_id, first.port)
    warm = await bench.push("apple", 2.0, app_id)
    report.check("delivered before the outage", warm.outcome == "delivered")
    scope.cancel()
    with trio.move_on_after(1):
        await first.wait_open_connections(0)
    started = trio.current_time()
    results: list[PushResult] = []
    while trio.current_time() - started < down:
        results.extend(await bench.burst(max(1, count // 5), "apple", 1.5, app_id))
        await trio.sleep(down / 10)
    _all_in_time(report, results)
    report.check(
        "every push during the outage fails retry_later with a reason",
        all(p.outcome == "retry_later" for p in results),
    )
    second = FakeApns(authority=bench.authority, topics=None, port=first.port)
    await bench.nursery.start(_scoped, second)
    await bench.recover(report, "apple", app_id)
    report.check(
        "back within the connect backoff cap (5 s) + one probe",
        report.recovery is not None and report.recovery < 5.0 + PROBE_TIMEOUT + 0.5,
    )
    return report


async def _scoped(server: FakeApns, *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
    """Serve in a scope the caller can cancel (the stand-in goes away)."""
    with trio.CancelScope() as scope:

        async def serve(*, task_status: trio.TaskStatus[int]) -> None:
            await server.serve(task_status=task_status)

        async with trio.open_nursery() as nursery:
            await nursery.start(serve)
            task_status.started(scope)


async def fault_expired_server_cert(bench: Bench, quick: bool) -> FaultReport:
    count = 5 if quick else 20
    app_id = BUNDLE + ".expiredserver"
    report = FaultReport(
        "expired-server-cert", f"APNs presents a certificate that expired yesterday; {count} pushes"
    )
    server = FakeApns(authority=bench.authority, topics=None)
    good_context = server._context
    server._context = expired_context(bench.authority)
    port = await bench.nursery.start(server.serve)
    await bench.add_apple_app(app_id, port)
    results = await bench.burst(count, "apple", deadline=3.0, app_id=app_id)
    _all_in_time(report, results)
    report.check(
        "every push fails auth_failed/retry_later with a reason, quickly (<1s)",
        all(p.outcome in ("auth_failed", "retry_later") and p.took < 1.0 for p in results),
    )
    server._context = good_context  # the provider renewed its certificate
    await bench.recover(report, "apple", app_id)
    return report


async def fault_expired_fcm_cert(bench: Bench, quick: bool) -> FaultReport:
    count = 5 if quick else 20
    app_id = FCM_APP + ".expired"
    report = FaultReport(
        "expired-server-cert-firebase",
        f"FCM (and its OAuth endpoint) presents a certificate that expired; {count} pushes",
    )
    server = FakeFcm(authority=bench.authority)
    good_context = server._context
    server._context = expired_context(bench.authority)
    await bench.nursery.start(server.serve)
    account = server.service_account(server.new_service_account(PROJECT + "-expired"))
    auth = load_service_account(json.dumps(account), base_url=server.base_url)
    await bench.control.call("apps.add", {"app": unstructure_app(App(app_id, "firebase", auth))})
    results = await bench.burst(count, "firebase", deadline=3.0, app_id=app_id)
    _all_in_time(report, results)
    report.check(
        "every push fails auth_failed naming the certificate, quickly (<1s)",
        all(
            p.outcome == "auth_failed" and "expired" in str(p.reason) and p.took < 1.0
            for p in results
        ),
    )
    server._context = good_context
    await bench.recover(report, "firebase", app_id)
    return report


async def fault_oauth_blackhole(bench: Bench, quick: bool) -> FaultReport:
    count, deadline = (5, 1.5) if quick else (20, 3.0)
    app_id = FCM_APP + ".oauthhole"
    report = FaultReport(
        "oauth-never-answers",
        f"the service account's token_uri accepts TCP and never answers; {count} pushes, "
        f"deadline {deadline}s",
    )
    hole = blackhole()
    account = bench.fcm.service_account(bench.fcm.new_service_account(PROJECT + "-hole"))
    fixed = dict(account)
    account["token_uri"] = f"https://127.0.0.1:{hole.getsockname()[1]}/token"
    try:
        auth = load_service_account(json.dumps(account), base_url=bench.fcm.base_url)
        app = App(app_id, "firebase", auth)
        await bench.control.call("apps.add", {"app": unstructure_app(app)})
        results = await bench.burst(count, "firebase", deadline=deadline, app_id=app_id)
        _all_in_time(report, results)
        exchanges = bench.pool_stats()["oauth_exchanges"]
        report.notes.append(f"OAuth exchanges tried: {exchanges}")
        report.check(
            "every push fails retry_later by its deadline, the failed exchange shared "
            "(at most one exchange a second)",
            all(p.outcome == "retry_later" for p in results) and exchanges <= 1 + deadline,
        )
    finally:
        hole.close()
    # The operator fixes the service account (token_uri).
    auth = load_service_account(json.dumps(fixed), base_url=bench.fcm.base_url)
    await bench.control.call("apps.add", {"app": unstructure_app(App(app_id, "firebase", auth))})
    await bench.recover(report, "firebase", app_id)
    return report


async def fault_expired_client_cert(bench: Bench, quick: bool) -> FaultReport:
    count = 5 if quick else 20
    app_id = BUNDLE + ".expiredclient"
    report = FaultReport(
        "expired-client-cert", f"our APNs certificate expired yesterday; {count} pushes"
    )
    now = datetime.datetime.now(datetime.UTC)
    pem = bench.authority.apns_client_pem(
        app_id,
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )
    port = bench.apns.port
    await bench.add_apple_app(app_id, port, pem=pem)
    results = await bench.burst(count, "apple", deadline=3.0, app_id=app_id)
    _all_in_time(report, results)
    report.check(
        "every push fails auth_failed with a reason, quickly (<1s)",
        all(p.outcome == "auth_failed" and p.took < 1.0 for p in results),
    )
    await bench.add_apple_app(app_id, port)  # the operator adds the renewed certificate
    await bench.recover(report, "apple", app_id)
    return report


async def fault_waiting_push(bench: Bench, quick: bool) -> FaultReport:
    """Kamailio's path: `push {aor}` waits for the REGISTER; the AOR has an iPhone and an
    Android phone (learned from HEP copies), and the providers misbehave."""
    report = FaultReport(
        "waiting-push",
        "push {aor, wait} to an AOR with an APNs and an FCM device: both 503 for ever; APNs "
        "stalls and FCM 503s; GOAWAY then delivered and the phone registers",
    )
    run_id = os.urandom(3).hex()
    apple_token, android_token = os.urandom(32).hex(), "fcm-" + os.urandom(40).hex()
    user = f"kam{run_id}"
    phones = {
        "apns": {"token": apple_token, "instance": f"{run_id}-ios"},
        "fcm": {"token": android_token, "instance": f"{run_id}-android"},
    }
    sniffer = bench.running.sniffer[0]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    serial = [0]

    def register(provider: str) -> str:
        serial[0] += 1
        aor, reg, ok = register_pair(
            serial[0], run_id, user=user, provider=provider, **phones[provider]
        )
        sender.sendto(reg, sniffer)
        sender.sendto(ok, sniffer)
        return aor

    try:
        aor = register("apns")
        register("fcm")
        with trio.fail_after(5):
            while len((await bench.control.call("devices.list", {"aor": aor}))["devices"]) < 2:  # noqa: ASYNC110
                await trio.sleep(0.01)

        async def waiting(deadline: float) -> PushResult:
            bench.serial += 1
            started = trio.current_time()
            outcome, reason = "hang", None
            with trio.move_on_after(deadline + HANG):
                try:
                    result = await bench.control.call(
                        "push", {"aor": aor, "call_id": f"w{bench.serial}", "timeout": deadline}
                    )
                    outcome = str(result["status"])
                except jsonrpc.ControlError as error:
                    outcome, reason = classify(error)
                    if isinstance(error, jsonrpc.PushRejected):
                        outcome = "rejected " + outcome
            took = trio.current_time() - started
            return PushResult(f"aor-{bench.serial}", outcome, reason, took, deadline)

        bench.apns.script(Answer(503, "ServiceUnavailable"), times=None)
        bench.fcm.script(Answer(503, "UNAVAILABLE"), times=None)
        storm = await waiting(2.0)
        bench.apns.clear_script()
        bench.fcm.clear_script()
        report.check(
            "both 503 for ever: PushRejected (retry_later) before the deadline",
            storm.outcome == "rejected retry_later" and storm.took < storm.deadline,
        )
        bench.apns.script(Stall(), token=apple_token)
        bench.fcm.script(Answer(503, "UNAVAILABLE"), times=None)
        stalled = await waiting(1.5)
        bench.apns.clear_script()
        bench.fcm.clear_script()
        report.check(
            "APNs stalls, FCM 503s: Timeout 'the push did not complete' at the deadline",
            stalled.outcome == "timeout" and stalled.reason == "the push did not complete",
        )

        def wake(token: str, headers: dict[str, str], payload: Any) -> None:
            if token == apple_token:
                register("apns")

        bench.apns.on_delivered = wake
        bench.apns.script(GoAway("Shutdown"))
        woken = await waiting(3.0)
        bench.apns.on_delivered = None
        report.check(
            "GOAWAY, replayed, delivered, the phone registers: 'registered' well before the "
            "deadline",
            woken.outcome == "registered" and woken.took < 1.0,
        )
        _all_in_time(report, [storm, stalled, woken])
    finally:
        sender.close()
    await bench.recover(report)
    return report


FaultFn = Callable[[Bench, bool], Awaitable[FaultReport]]


def _kind(fn: Callable[..., Awaitable[FaultReport]], kind: str) -> FaultFn:
    async def bound(bench: Bench, quick: bool) -> FaultReport:
        return await fn(bench, quick, kind)

    return bound


FAULTS: dict[str, FaultFn] = {
    "goaway-apple": _kind(fault_goaway, "apple"),
    "goaway-firebase": _kind(fault_goaway, "firebase"),
    "reset-apple": _kind(fault_drop, "apple"),
    "reset-firebase": _kind(fault_drop, "firebase"),
    "flapping-apple": _kind(fault_flapping, "apple"),
    "flapping-firebase": _kind(fault_flapping, "firebase"),
    "rst-stream-apple": _kind(fault_rst_stream, "apple"),
    "stall-apple": _kind(fault_stall, "apple"),
    "freeze-apple": _kind(fault_freeze, "apple"),
    "503-storm-apple": _kind(fault_503, "apple"),
    "503-storm-firebase": _kind(fault_503, "firebase"),
    "429-apple": _kind(fault_429, "apple"),
    "429-firebase": _kind(fault_429, "firebase"),
    "tls-never-completes": fault_tls_blackhole,
    "outage-apple": fault_outage,
    "expired-server-cert": fault_expired_server_cert,
    "expired-client-cert": fault_expired_client_cert,
    "expired-server-cert-firebase": fault_expired_fcm_cert,
    "oauth-never-answers": fault_oauth_blackhole,
    "waiting-push": fault_waiting_push,
}


async def run_faults(names: list[str], quick: bool, folder: Path) -> list[FaultReport]:
    """Each fault on a fresh service (so one fault's pool state cannot hide another's)."""
    reports: list[FaultReport] = []
    for name in names:
        sub = folder / name
        sub.mkdir(parents=True, exist_ok=True)

        async def body(bench: Bench, name: str = name) -> None:
            with trio.fail_after(120):
                reports.append(await FAULTS[name](bench, quick))

        await with_bench(sub, body)
        for line in reports[-1].lines():
            print(line, flush=True)
    return reports


# --- crash and restart -------------------------------------------------------------------------

SERVE_CONFIG = """
[control]
unix_socket = "run/control.sock"
tcp = "127.0.0.1:0"
[sniffer]
listen = ["udp:127.0.0.1:0"]
[store]
path = "state/pusher.db"
[push]
wait_timeout = 30
max_wait = 60
[log]
level = "info"
format = "json"
"""


class Daemon(ServeProcess):
    """`pusher-trio serve` in a subprocess on `folder`, with the battery's configuration."""

    def __init__(self, folder: Path) -> None:
        config = folder / "pusher.toml"
        if not config.exists():
            config.write_text(SERVE_CONFIG)
        super().__init__(config)


def register_pair(
    index: int,
    run_id: str,
    *,
    user: str | None = None,
    token: str | None = None,
    provider: str = "apns",
    instance: str | None = None,
) -> tuple[str, bytes, bytes]:
    """(AOR, HEP REGISTER, HEP 200 OK) of one phone with an RFC 8599 contact (apns or fcm).

    Each call is a new REGISTER transaction (its own Call-ID); `instance` keeps the
    device identity across calls."""
    import sip

    user = user or f"c{run_id}-{index}"
    token = token or f"{index:08x}{run_id}".ljust(64, "0")[:64]
    param = f"ABCDE12345.{BUNDLE}.voip" if provider == "apns" else PROJECT
    call_id = f"{run_id}-{index}@10.9.8.7"
    via = f"Via: SIP/2.0/UDP 10.9.8.7:5060;branch=z9hG4bK{run_id}{index}\r\n"
    contact = (
        f"<sip:{user}@10.9.8.7:5060;pn-provider={provider};pn-prid={token};pn-param={param}>"
        f';+sip.instance="<urn:uuid:{instance or f"{run_id}-{index}"}>";expires=3600'
    )
    register = (
        f"REGISTER sip:example.com SIP/2.0\r\n{via}Max-Forwards: 70\r\n"
        f"From: <sip:{user}@example.com>;tag=f{index}\r\nTo: <sip:{user}@example.com>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 REGISTER\r\nContact: {contact}\r\n"
        "User-Agent: FaultPhone/1.0\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    ok = (
        f"SIP/2.0 200 OK\r\n{via}From: <sip:{user}@example.com>;tag=f{index}\r\n"
        f"To: <sip:{user}@example.com>;tag=t{index}\r\nCall-ID: {call_id}\r\n"
        f"CSeq: 1 REGISTER\r\nContact: {contact}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    phone, kamailio = ("10.9.8.7", 5060), ("10.0.0.1", 5060)
    now = time.time()
    return (
        f"{user}@example.com",
        sip.encode_hep(register, src=phone, dst=kamailio, timestamp=now),
        sip.encode_hep(ok, src=kamailio, dst=phone, timestamp=now),
    )


@attrs.define
class CrashReport:
    sent: int = 0  # registrations whose 2xx copy went out before the kill
    sent_early: int = 0  # of which more than 1 s before the kill
    found_early: int = 0
    found_total: int = 0
    missing: list[str] = attrs.field(factory=list)
    rate: float = 0.0
    durable_lag: float = 0.0  # every registration sent earlier than this before the kill: stored
    held_push: str = ""
    held_push_after: float = 0.0
    integrity: str = ""
    store_open: float = 0.0  # SqliteStore(path) on the killed file
    restart: float = 0.0  # serve until "running" on the same store
    restart_devices: int = 0
    after_restart: str = ""
    checks: list[tuple[str, bool]] = attrs.field(factory=list)

    def check(self, description: str, ok: bool) -> bool:
        self.checks.append((description, bool(ok)))
        return ok

    @property
    def ok(self) -> bool:
        return all(ok for _, ok in self.checks)

    def lines(self) -> list[str]:
        return [
            f"[{'ok' if self.ok else 'FAILED'}] crash-restart: kill -9 during a REGISTER storm",
            f"    registrations sent {self.sent} at ~{self.rate:.0f}/s; sent >1s before the kill "
            f"{self.sent_early}, found {self.found_early}; in the store in all {self.found_total}; "
            f"everything sent more than {self.durable_lag * 1000:.0f} ms before the kill was stored",
            f"    held push on TCP: {self.held_push} {self.held_push_after * 1000:.0f} ms after the kill",
            f"    store after the kill: integrity_check {self.integrity!r}, opens in "
            f"{self.store_open * 1000:.0f} ms; serve restarted in {self.restart:.2f}s "
            f"with {self.restart_devices} devices; {self.after_restart}",
            *(f"    missing {m}" for m in self.missing[:5]),
            *(f"    check   {'ok  ' if ok else 'FAIL'} {d}" for d, ok in self.checks),
        ]


async def crash_restart(folder: Path, quick: bool, rate: float | None = None) -> CrashReport:
    """SIGKILL `serve` mid-storm; check the store and the held push; start it again.

    `rate`: REGISTER + 200 pairs per second (default 1000 quick, 3000 full)."""
    report = CrashReport()
    rate = rate or (1000.0 if quick else 3000.0)
    storm_seconds = 2.5 if quick else 5.0
    kill_at = storm_seconds * 0.7
    run_id = os.urandom(4).hex()
    total = int(rate * storm_seconds)
    pairs = [register_pair(i, run_id) for i in range(total)]
    await trio.Path(folder).mkdir(parents=True, exist_ok=True)
    hole = blackhole()  # the app's APNs: the held push stays in flight
    daemon = await trio.to_thread.run_sync(Daemon, folder)
    try:
        udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await udp.bind(("127.0.0.1", 0))
        target = daemon.sniffer
        sent_at: list[tuple[str, float]] = []
        held: dict[str, Any] = {}
        async with open_control(daemon.tcp) as admin:
            pem = Authority().apns_client_pem(BUNDLE)
            app = App(
                BUNDLE, "apple", AppleCertAuth(pem), host=f"127.0.0.1:{hole.getsockname()[1]}"
            )
            await admin.call("apps.add", {"app": unstructure_app(app)})
            # The device of the held push registers first.
            await udp.sendto(pairs[0][1], target)
            await udp.sendto(pairs[0][2], target)
            sent_at.append((pairs[0][0], time.monotonic()))
            with trio.fail_after(5):
                while not (await admin.call("devices.list", {"aor": pairs[0][0]}))["devices"]:  # noqa: ASYNC110
                    await trio.sleep(0.01)

        async def hold_push(*, task_status: trio.TaskStatus[None]) -> None:
            """Kamailio's janssonrpcc: a push parked on a TCP connection."""
            async with open_control(daemon.tcp) as client:
                task_status.started()
                try:
                    await client.call(
                        "push", {"aor": pairs[0][0], "call_id": "held", "timeout": 60}
                    )
                    held["result"] = "answered"
                except ControlConnectionLost:
                    held["result"] = "connection closed"
                except jsonrpc.ControlError as error:
                    held["result"] = f"error {type(error).__name__}"
                held["at"] = time.monotonic()

        async with trio.open_nursery() as nursery, open_control(daemon.tcp) as admin:
            await nursery.start(hold_push)
            with trio.fail_after(5):
                while (await admin.call("status", {}))["waiting"] < 1:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            started = time.monotonic()
            killed_at = 0.0
            index = 1
            while index < total:
                now = time.monotonic()
                due = min(total, int((now - started) * rate) + 1)
                while index < due:
                    aor, register, ok = pairs[index]
                    await udp.sendto(register, target)
                    await udp.sendto(ok, target)
                    sent_at.append((aor, time.monotonic()))
                    index += 1
                if now - started >= kill_at:
                    daemon.proc.kill()
                    killed_at = time.monotonic()
                    break
                await trio.sleep(0.002)
            with trio.move_on_after(5):
                while "at" not in held:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        udp.close()
        await trio.to_thread.run_sync(daemon.kill)
        report.rate = len(sent_at) / max(killed_at - started, 1e-6)
        report.sent = len(sent_at)
        early = [aor for aor, at in sent_at if at < killed_at - 1.0]
        report.sent_early = len(early)
        report.held_push = str(held.get("result", "no answer within 5 s (hangs)"))
        report.held_push_after = float(held.get("at", killed_at + 5)) - killed_at

        path = folder / "state" / "pusher.db"

        def inspect() -> tuple[str, set[str]]:
            db = sqlite3.connect(str(path))
            try:
                integrity = str(db.execute("PRAGMA integrity_check").fetchone()[0])
                aors = {row[0] for row in db.execute("SELECT aor FROM devices")}
            finally:
                db.close()
            return integrity, aors

        report.integrity, aors = await trio.to_thread.run_sync(inspect)
        report.found_total = len(aors)
        found = [aor for aor in early if aor in aors]
        report.found_early = len(found)
        report.missing = [aor for aor in early if aor not in aors]
        first_missing = next((at for aor, at in sent_at if aor not in aors), killed_at)
        report.durable_lag = killed_at - first_missing

        def open_store() -> float:
            from pusher_trio.store import SqliteStore

            began = time.perf_counter()
            store = SqliteStore(path)
            took = time.perf_counter() - began
            store.close()
            return took

        report.store_open = await trio.to_thread.run_sync(open_store)
        daemon = await trio.to_thread.run_sync(Daemon, folder)
        report.restart = daemon.startup
        async with open_control(daemon.tcp) as admin:
            status = await admin.call("status", {})
            report.restart_devices = int(status.get("devices", 0))
            apps = [a["app_id"] for a in (await admin.call("apps.list", {}))["apps"]]
            # A registration after the restart is learned.
            aor, register, ok = register_pair(total + 1, run_id)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                sender.sendto(register, daemon.sniffer)
                sender.sendto(ok, daemon.sniffer)
            learned = False
            with trio.move_on_after(3):
                while not learned:
                    learned = bool((await admin.call("devices.list", {"aor": aor}))["devices"])
                    await trio.sleep(0.02)
            report.after_restart = (
                f"a REGISTER after the restart {'is' if learned else 'is NOT'} learned"
            )
        code = await trio.to_thread.run_sync(daemon.terminate)
        report.check(
            f"every device sent >1s before the kill is in the store ({report.found_early}/{report.sent_early})",
            report.sent_early > 0 and not report.missing,
        )
        report.check("the store passes integrity_check", report.integrity == "ok")
        report.check(
            "the held push gets a closed connection or an error within 1s of the kill",
            report.held_push != "answered"
            and "hangs" not in report.held_push
            and 0 <= report.held_push_after < 1.0,
        )
        report.check("serve restarts on the same store", report.restart > 0)
        report.check(
            "the restarted daemon knows the devices", report.restart_devices >= report.found_total
        )
        report.check("a REGISTER after the restart is learned", learned)
        report.check("the app added before the storm is still there", BUNDLE in apps)
        report.check("the restarted daemon exits 0 on SIGTERM", code == 0)
    finally:
        hole.close()
        if daemon.proc.poll() is None:
            daemon.kill()
    return report


# --- entry point -----------------------------------------------------------------------------


async def _main(quick: bool, names: list[str], crash: bool, rate: float | None) -> int:
    with tempfile.TemporaryDirectory(prefix="pusher-faults-") as tmp:
        folder = Path(tmp)
        print(
            f"provider faults ({'quick' if quick else 'full'}): {len(names)} faults, each on a "
            f"fresh service; deadline slack {SLACK}s",
            flush=True,
        )
        reports = await run_faults(names, quick, folder)
        failed = [r.name for r in reports if not r.ok]
        if crash:
            # Full: three kill/restart rounds on the same store (each kills a daemon that
            # opened the store the previous round's kill left behind).
            for round_ in range(1 if quick else 3):
                report = await crash_restart(folder / "crash", quick, rate)
                print(f"round {round_ + 1}:", flush=True)
                for line in report.lines():
                    print(line, flush=True)
                if not report.ok:
                    failed.append(f"crash-restart round {round_ + 1}")
    if failed:
        print(f"failed: {', '.join(failed)}", flush=True)
        return 1
    print("all provider-fault and crash checks passed", flush=True)
    return 0


def main(flags: list[str]) -> int:
    """`--quick`: small bursts and short deadlines; `--only=a,b`: those faults;
    `--no-crash` / `--crash-only`; `--crash-rate=N`: REGISTERs/s of the storm."""
    quick = "--quick" in flags
    names = list(FAULTS)
    crash = "--no-crash" not in flags
    for flag in flags:
        if flag.startswith("--only="):
            names = [n for n in flag.split("=", 1)[1].split(",") if n]
            unknown = [n for n in names if n not in FAULTS]
            if unknown:
                print(f"unknown faults {unknown}; known: {', '.join(FAULTS)}", file=sys.stderr)
                return 2
    if "--crash-only" in flags:
        names = []
        crash = True
    rate = None
    for flag in flags:
        if flag.startswith("--crash-rate="):
            rate = float(flag.split("=", 1)[1])
    return trio.run(_main, quick, names, crash, rate)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
