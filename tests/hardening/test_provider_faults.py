"""Provider faults through the whole service (short version of `python -m load.faults providers`).

Each fault runs on a fresh service with the real provider pools against the scripted
stand-ins: every push ends delivered or failed with a reason by its deadline, and a
normal push is delivered afterwards without a restart.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from load import faults_providers
from pusher_trio.model import App, AppleCertAuth, Delivered, Device, PushMessage
from pusher_trio.providers import Providers
from pusher_trio.providers.transport import SILENCE_PROBE
from pusher_trio.standins.certs import Authority
from pusher_trio.standins.common import Freeze
from pusher_trio.standins.fake_apns import FakeApns


@pytest.mark.parametrize("name", list(faults_providers.FAULTS))
async def test_provider_fault_ends_every_push_in_time_and_the_pool_recovers(
    tmp_path: Path, name: str
) -> None:
    reports: list[faults_providers.FaultReport] = []

    async def body(bench: faults_providers.Bench) -> None:
        reports.append(await faults_providers.FAULTS[name](bench, True))

    with trio.fail_after(25):
        await faults_providers.with_bench(tmp_path, body)
    (report,) = reports
    assert report.ok, "\n".join(report.lines())
    assert report.pushes and report.recovery is not None


def _app(server: FakeApns, bundle: str = "org.example.frozen") -> App:
    return App(
        bundle,
        "apple",
        AppleCertAuth(server.client_pem(bundle)),
        host=f"127.0.0.1:{server.port}",
        push_type="voip",
    )


def _device(index: int) -> Device:
    token = f"{index:02x}" * 32
    return Device(aor="a@example.com", device_id=token, type="apple", app="x", token=token)


async def test_frozen_connection_is_probed_and_new_pushes_use_another(
    nursery: trio.Nursery,
) -> None:
    """A peer that goes silent with streams open is PINGed after SILENCE_PROBE and gets no
    new streams meanwhile (before: every push went to it until the idle PING, 60 s)."""
    server = FakeApns(authority=Authority(), topics=None)
    await nursery.start(server.serve)
    app = _app(server)
    with trio.fail_after(15):
        async with Providers(ca_file=server.ca_file) as providers:
            first = await providers.send(app, _device(1), PushMessage("c1"), expires_at=2e9)
            assert isinstance(first, Delivered)
            server.script(Freeze())
            with trio.move_on_after(0.5):
                await providers.send(app, _device(2), PushMessage("c2"), expires_at=2e9)
            started = trio.current_time()
            outcome = await providers.send(app, _device(3), PushMessage("c3"), expires_at=2e9)
            took = trio.current_time() - started
            stats = providers.statistics()
    assert isinstance(outcome, Delivered)
    # At once (the abandoned stream got nothing back) or after SILENCE_PROBE at the latest.
    assert took < SILENCE_PROBE + 1.0
    assert stats["pool_details"][0]["connects"] == 2


async def test_a_burst_behind_a_refused_certificate_fails_at_once(nursery: trio.Nursery) -> None:
    """Requests that waited for a connect that failed on a certificate fail with it at once
    (before: each tried again in turn after the backoff and ended 'backing off')."""
    import datetime

    authority = Authority()
    server = FakeApns(authority=authority, topics=None)
    await nursery.start(server.serve)
    now = datetime.datetime.now(datetime.UTC)
    bundle = "org.example.expired"
    pem = authority.apns_client_pem(
        bundle,
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )
    app = App(bundle, "apple", AppleCertAuth(pem), host=f"127.0.0.1:{server.port}")
    outcomes = []
    with trio.fail_after(10):
        async with Providers(ca_file=server.ca_file) as providers:
            started = trio.current_time()

            async def one(index: int) -> None:
                with trio.fail_after(3):
                    outcomes.append(
                        await providers.send(app, _device(index), PushMessage("c"), expires_at=2e9)
                    )

            async with trio.open_nursery() as burst:
                for index in range(8):
                    burst.start_soon(one, index)
            took = trio.current_time() - started
    assert len(outcomes) == 8
    assert {type(o).__name__ for o in outcomes} == {"AuthFailed"}
    assert all("certificate expired" in o.reason for o in outcomes), outcomes
    assert took < 1.0


@pytest.mark.parametrize(
    ("call_id", "sent"),
    [
        ("call-1@host", True),
        ("caf\u00e9 a\tb", True),
        ("a\r\nx-injected: 1", False),
        ("nul\x00byte", False),
        (" leading-space", False),
        ("trailing-space ", False),
        ("bell\x07", False),
    ],
)
def test_a_call_id_that_is_no_field_value_is_not_sent_as_collapse_id(
    call_id: str, sent: bool
) -> None:
    """RFC 9113 §8.2.1: APNs ends the whole connection over such a header."""
    from pusher_trio.providers import apns
    from pusher_trio.providers.http import HttpRequest

    app = App("org.example.app", "apple", AppleCertAuth("pem"), push_type="alert")
    request = apns.build_request(app, _device(1), PushMessage(call_id), None, 1e9, 1e9 + 20)
    assert isinstance(request, HttpRequest)
    assert (request.header("apns-collapse-id") == call_id) is sent
    assert all("\r" not in v and "\n" not in v and "\0" not in v for _, v in request.headers)


async def test_shutdown_answers_no_wait_pushes_stuck_at_the_provider_shutting_down(
    tmp_path: Path,
) -> None:
    results: list[faults_providers.PushResult] = []
    took: list[float] = []

    async def body(bench: faults_providers.Bench) -> None:
        bench.apns.script(Freeze(), times=None)
        async with trio.open_nursery() as pushes:

            async def one() -> None:
                results.append(await bench.push("apple", 20.0))

            for _ in range(3):
                pushes.start_soon(one)
            await trio.sleep(0.3)
            started = trio.current_time()
            bench.running.shutdown()
        took.append(trio.current_time() - started)

    with trio.fail_after(15):
        await faults_providers.with_bench(tmp_path, body)
    assert took[0] < 5
    assert [r.outcome for r in results] == ["error ShuttingDown"] * 3
