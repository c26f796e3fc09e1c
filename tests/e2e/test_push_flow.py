"""The whole loop on this machine: Kamailio (shipped config) + `pusher-trio serve` + the
APNs/FCM stand-ins + sipp phones and callers.

A phone first REGISTERs with its push params (the sidecar learns the token from the
HEP copies), then unregisters (asleep). A caller's INVITE makes Kamailio ask the
sidecar to `push`; the stand-in's delivered hook wakes the phone: a sipp UAS on a new
port and a sipp REGISTER naming that port; the sidecar answers `registered` and
Kamailio relays the INVITE to the fresh contact. Cases 1-9 of issue 5.
"""

from __future__ import annotations

import contextlib
import functools
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from pusher_trio.control.client import open_control
from pusher_trio.standins.certs import Authority
from pusher_trio.standins.fake_apns import Answer, FakeApns
from pusher_trio.standins.fake_fcm import FakeFcm
from tests.e2e.harness import (
    Kamailio,
    Sidecar,
    SippProcess,
    SippResult,
    free_port,
    quoted,
    run_sipp,
    subscriber_db,
)

pytestmark = pytest.mark.e2e

T = TypeVar("T")

PUSH_TIMEOUT = 3  # seconds the sidecar waits for the woken phone (Kamailio's `timeout`)
NO_ANSWER_MS = 1000  # registered-but-asleep timer
TEAM = "ABCDE12345"
IOS_BUNDLE = "com.example.app"  # RFC 8599 devices, certificate auth
LEGACY_BUNDLE = "com.example.legacy"  # legacy pn-* and User-Agent-mapped devices, token auth
ANDROID_APP = "com.example.android"
FCM_PROJECT = "pusher-e2e"
SEED_MAPPING = {
    "regex": "^MyApp",
    "properties": {"Token-App": "app-id", "Token-Type": "pn-type", "Token-ID": "pn-tok"},
}
CUSTOM_MAPPING = {
    "regex": "^OtherApp",
    "properties": {"Token-App": "x-app", "Token-Type": "x-kind", "Token-ID": "x-tok"},
}


async def eventually(probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool]) -> T:
    """Poll another process's state until `ok` (callers bound it with fail_after)."""
    while True:
        value = await probe()
        if ok(value):
            return value
        await trio.sleep(0.05)


def mask(token: str) -> str:
    return f"{token[:6]}…{token[-4:]}"


@dataclass
class Phone:
    user: str
    token: str
    cparams: str
    ua: str = "pusher-trio e2e"
    wakes: bool = True  # registers when a push arrives


def ios_phone(user: str) -> Phone:
    token = secrets.token_hex(32)
    return Phone(
        user, token, f";pn-provider=apns;pn-prid={token};pn-param={TEAM}.{IOS_BUNDLE}.voip"
    )


class Flow:
    def __init__(
        self, tmp: Path, sidecar: Sidecar, kam: Kamailio, apns: FakeApns, fcm: FakeFcm
    ) -> None:
        self.tmp = tmp
        self.sidecar = sidecar
        self.kam = kam
        self.apns = apns
        self.fcm = fcm
        self.phones: dict[str, Phone] = {}  # token -> phone
        self.procs: list[SippProcess] = []
        self.uas: dict[str, SippProcess] = {}  # user -> the woken phone's UAS
        self.calls_per_wake = 1
        self.uas_scenario = "uas_phone.xml"  # what the woken phone does with the INVITE
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    async def register(
        self, phone: Phone, *, expires: int = 600, cport: int | None = None
    ) -> SippResult:
        self.phones[phone.token] = phone
        keys = {
            "user": phone.user,
            "cport": str(cport or free_port()),
            "cparams": phone.cparams,
            "ua": phone.ua,
        }
        return await run_sipp(
            "register.xml", remote=self.kam.sip_port, workdir=self.tmp, name=self.name("reg"),
            keys={**keys, "expires": str(expires)}, timeout_s=10,
        )  # fmt: skip

    async def asleep(self, phone: Phone) -> None:
        """Registered once (the sidecar knows the token), then unregistered."""
        for expires in (600, 0):
            res = await self.register(phone, expires=expires)
            assert res.returncode == 0, res.stdout
        await self.wait_device(phone, lambda d: d is not None)

    async def control(self, method: str, params: Any = None) -> Any:
        async with open_control(self.sidecar.control) as c:
            return await c.call(method, params or {})

    async def device(self, phone: Phone) -> dict[str, Any] | None:
        listed = await self.control("devices.list", {"aor": f"{phone.user}@127.0.0.1"})
        for d in listed["devices"]:
            if d["token"] == mask(phone.token):
                return dict(d)
        return None

    async def wait_device(self, phone: Phone, ok: Any) -> dict[str, Any] | None:
        return await eventually(lambda: self.device(phone), ok)

    def on_delivered(self, token: str, headers: Any, payload: Any) -> None:
        phone = self.phones.get(token)
        if phone is None or not phone.wakes or phone.user in self.uas:
            return
        self.wake(phone)

    def wake(self, phone: Phone) -> None:
        """The woken phone: a UAS on a fresh port, then a REGISTER naming that port."""
        uas_port = free_port()
        uas = SippProcess(
            self.uas_scenario, remote=self.kam.sip_port, workdir=self.tmp, name=self.name("uas"),
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
                "register.xml", remote=self.kam.sip_port, workdir=self.tmp, name=self.name("wreg"),
                keys=keys, timeout_s=10,
            )
        )  # fmt: skip

    async def call(self, scenario: str, user: str, **kw: Any) -> SippResult:
        return await run_sipp(
            scenario, remote=self.kam.sip_port, workdir=self.tmp, name=self.name("call"), service=user,
            timeout_s=kw.pop("timeout_s", 20), **kw,
        )  # fmt: skip

    def pushes_to(self, phone: Phone) -> int:
        return sum(1 for r in self.apns.received + self.fcm.received if r.token == phone.token)

    def debug(self) -> str:
        return f"\n--- kamailio ---\n{self.kam.log()[-3000:]}\n--- sidecar ---\n{self.sidecar.log()[-3000:]}"


@contextlib.asynccontextmanager
async def open_flow(
    tmp: Path,
    *,
    hep_auth_key: str = "",
    max_waiting: int = 10000,
    defines: Mapping[str, str | int | None] | None = None,
    hep_capture: str = "",
    binding_refresh_lead: float | None = None,
) -> AsyncIterator[Flow]:
    """Stand-ins, `pusher-trio serve` with apps and mappings, Kamailio (extra `defines`)."""
    authority = Authority()
    holder: list[Flow] = []

    def delivered(token: str, headers: Any, payload: Any) -> None:
        if holder:
            holder[0].on_delivered(token, headers, payload)

    apns = FakeApns(authority=authority, topics={IOS_BUNDLE, LEGACY_BUNDLE}, on_delivered=delivered)
    fcm = FakeFcm(authority=authority, on_delivered=delivered)
    async with trio.open_nursery() as nursery:
        apns_port = await nursery.start(apns.serve)
        await nursery.start(fcm.serve)
        sidecar = Sidecar(
            tmp / "sidecar",
            ca_file=apns.ca_file,
            wait_timeout=PUSH_TIMEOUT,
            hep_auth_key=hep_auth_key,
            max_waiting=max_waiting,
            hep_capture=hep_capture,
            binding_refresh_lead=binding_refresh_lead,
        )
        await trio.to_thread.run_sync(sidecar.start)
        kam = None
        try:
            # apps and the User-Agents mapping, the way an operator adds them
            cert = tmp / "app.pem"
            cert.write_text(apns.client_pem(IOS_BUNDLE))
            p8, key_id, team = apns.new_signing_key(TEAM)
            key = tmp / "legacy.p8"
            key.write_text(p8)
            account = tmp / "sa.json"
            account.write_text(json.dumps(fcm.new_service_account(FCM_PROJECT)))
            for args in (
                ("add-apple-app", IOS_BUNDLE, str(cert), f"127.0.0.1:{apns_port}", "--push-type", "voip"),
                ("add-apple-app", LEGACY_BUNDLE, "--key-file", str(key), "--key-id", key_id, "--team-id", team,
                 "--host", f"127.0.0.1:{apns_port}", "--push-type", "voip"),
                ("add-firebase-app", ANDROID_APP, str(account), "--base-url", fcm.base_url),
                ("config", "set-json", "User-Agents.MyApp", json.dumps(SEED_MAPPING)),
                ("config", "set-json", "User-Agents.OtherApp", json.dumps(CUSTOM_MAPPING)),
            ):  # fmt: skip
                await trio.to_thread.run_sync(functools.partial(sidecar.cli, *args))
            kam = Kamailio(
                rundir=tmp / "kam",
                sip_port=free_port(),
                defines={
                    "PUSHER_RPC_SERVER": quoted(
                        f"conn=pusher;addr=127.0.0.1;port={sidecar.control_port}"
                    ),
                    "PUSHER_HEP_URI": quoted(f"sip:127.0.0.1:{sidecar.sniffer_port}"),
                    "PUSHER_PUSH_TIMEOUT": PUSH_TIMEOUT,
                    "PUSHER_NO_ANSWER_MS": NO_ANSWER_MS,
                    "KAM_CHILDREN": 2,
                    **(defines or {}),
                },
            )
            await trio.to_thread.run_sync(kam.start)
            flow = Flow(tmp, sidecar, kam, apns, fcm)
            holder.append(flow)
            # janssonrpcc connects on its own: wait until the sidecar has a second client
            with trio.fail_after(5):
                await eventually(
                    lambda: flow.control("status"),
                    lambda s: s.get("control", {}).get("connections", 2) >= 2,
                )
            yield flow
        finally:
            for flow in holder:
                for proc in flow.procs:
                    proc.stop()
            if kam is not None:
                await trio.to_thread.run_sync(kam.stop)
            await trio.to_thread.run_sync(sidecar.stop)
            nursery.cancel_scope.cancel()


@pytest.fixture
async def flow(tmp_path: Path) -> AsyncIterator[Flow]:
    async with open_flow(tmp_path) as f:
        yield f


async def answered_after_wake(flow: Flow, phone: Phone) -> SippResult:
    with trio.fail_after(40):
        await flow.asleep(phone)
        res = await flow.call("call_answered.xml", phone.user)
        assert res.returncode == 0, res.stdout + flow.debug()
        uas = await flow.uas[phone.user].wait()
    assert uas.returncode == 0, uas.stdout
    assert flow.pushes_to(phone) == 1
    return res


# 1
async def test_unregistered_ios_phone_rfc8599_is_woken_and_answers(flow: Flow) -> None:
    phone = ios_phone("alice")
    res = await answered_after_wake(flow, phone)
    assert 180 in [code for code, _ in res.statuses()]
    (push,) = [r for r in flow.apns.received if r.token == phone.token]
    assert push.headers["apns-topic"] == f"{IOS_BUNDLE}.voip"
    assert push.headers["apns-push-type"] == "voip"


# 2
@pytest.mark.parametrize(
    ("ua", "template"),
    [
        ("pusher-trio e2e", ";pn-type=apple;pn-tok={token};app-id=" + LEGACY_BUNDLE),
        ("MyApp iOS 1.0", ";pn-type=apple;pn-tok={token};app-id=" + LEGACY_BUNDLE),
        ("OtherApp/2.1 (iPhone)", ";x-kind=apple;x-tok={token};x-app=" + LEGACY_BUNDLE),
    ],
    ids=["legacy-params", "kazoo-seed-mapping", "custom-mapping"],
)
async def test_legacy_and_user_agent_mapped_phones_are_woken(
    flow: Flow, ua: str, template: str
) -> None:
    token = secrets.token_hex(32)
    phone = Phone("bob", token, template.format(token=token), ua=ua)
    await answered_after_wake(flow, phone)
    device = await flow.device(phone)
    assert device is not None
    assert device["app"] == LEGACY_BUNDLE


# 3
async def test_android_phone_via_fcm(flow: Flow) -> None:
    token = secrets.token_urlsafe(100)
    phone = Phone("carol", token, f";pn-provider=fcm;pn-prid={token};pn-param={FCM_PROJECT}")
    await answered_after_wake(flow, phone)
    (push,) = [r for r in flow.fcm.received if r.token == token]
    assert push.delivered
    device = await flow.device(phone)
    assert device is not None
    assert device["type"] == "firebase"


# 4
async def test_registered_but_asleep_phone_is_pushed_after_no_answer_timer(flow: Flow) -> None:
    phone = ios_phone("dave")
    with trio.fail_after(40):
        # a live binding whose contact port nobody answers on: the app sleeps
        res = await flow.register(phone)
        assert res.returncode == 0, res.stdout
        with trio.fail_after(5):
            await flow.wait_device(phone, lambda d: d is not None)
        start = trio.current_time()
        res = await flow.call("call_answered.xml", phone.user)
        assert res.returncode == 0, res.stdout + flow.debug()
    (push,) = [r for r in flow.apns.received if r.token == phone.token]
    assert trio.current_time() - start > NO_ANSWER_MS / 1000
    assert push.delivered


# 5
async def test_caller_cancel_while_waiting_ends_the_wait_cancelled(flow: Flow) -> None:
    phone = ios_phone("erin")
    phone.wakes = False
    with trio.fail_after(30):
        await flow.asleep(phone)
        res = await flow.call("call_cancel.xml", phone.user)
        assert res.returncode == 0, res.stdout + flow.debug()
        await eventually(lambda: flow.control("status"), lambda s: s["waiters"]["cancelled"] >= 1)
    assert 487 in [code for code, _ in res.statuses()]
    status = await flow.control("status")
    assert status["waiters"]["cancelled"] == 1
    assert status["waiting"] == 0


# 6
async def test_phone_that_never_registers_gets_480_after_the_timeout(flow: Flow) -> None:
    phone = ios_phone("frank")
    phone.wakes = False
    with trio.fail_after(30):
        await flow.asleep(phone)
        start = trio.current_time()
        res = await flow.call("call_failed.xml", phone.user)
        elapsed = trio.current_time() - start
    assert res.returncode == 0, res.stdout + flow.debug()
    assert res.statuses()[-1] == (480, "Temporarily Unavailable (push timeout)")
    assert PUSH_TIMEOUT - 0.5 < elapsed < PUSH_TIMEOUT + 2
    assert flow.pushes_to(phone) == 1


# 7
async def test_dead_token_gives_480_at_once_and_invalidates_the_device(flow: Flow) -> None:
    phone = ios_phone("gina")
    with trio.fail_after(30):
        await flow.asleep(phone)
        flow.apns.script(Answer(410, "Unregistered"), token=phone.token)
        start = trio.current_time()
        res = await flow.call("call_failed.xml", phone.user)
        elapsed = trio.current_time() - start
    assert res.returncode == 0, res.stdout + flow.debug()
    assert res.statuses()[-1] == (480, "Temporarily Unavailable (push rejected)")
    assert elapsed < PUSH_TIMEOUT - 1
    device = await flow.device(phone)
    assert device is not None
    assert device["state"] == "invalid"


# 8
async def test_two_callers_to_one_sleeping_phone_one_push_both_connect(flow: Flow) -> None:
    phone = ios_phone("hank")
    flow.calls_per_wake = 2
    results: list[SippResult] = []
    with trio.fail_after(40):
        await flow.asleep(phone)
        # the stand-in delays its answer so that the second call joins the same wait
        async with trio.open_nursery() as nursery:

            async def one() -> None:
                results.append(await flow.call("call_answered.xml", phone.user))

            nursery.start_soon(one)
            await trio.sleep(0.05)
            nursery.start_soon(one)
        uas = await flow.uas[phone.user].wait()
    assert [r.returncode for r in results] == [0, 0], [r.stdout for r in results]
    assert uas.returncode == 0, uas.stdout
    assert flow.pushes_to(phone) == 1


# 9
async def test_register_failing_authentication_never_changes_the_token(tmp_path: Path) -> None:
    defines: dict[str, str | int | None] = {
        "WITH_AUTH": None,
        "DBURL": subscriber_db(tmp_path / "kamailio.sqlite", {"ivan": "right"}),
        # the sidecar sees the failed attempt and its 401s, and must ignore them
        "WITH_MIRROR_BEFORE_AUTH": None,
    }
    async with open_flow(tmp_path, defines=defines) as flow:
        good = ios_phone("ivan")
        evil = Phone("ivan", secrets.token_hex(32), "")
        evil.cparams = f";pn-provider=apns;pn-prid={evil.token};pn-param={TEAM}.{IOS_BUNDLE}.voip"
        with trio.fail_after(30):
            keys = {"user": "ivan", "cport": str(free_port()), "ua": "e2e", "expires": "600"}
            ok = await run_sipp(
                "register_auth.xml", remote=flow.kam.sip_port, workdir=tmp_path, name="ok",
                keys={**keys, "cparams": good.cparams}, extra=["-au", "ivan", "-ap", "right"],
            )  # fmt: skip
            assert ok.returncode == 0, ok.stdout
            await flow.wait_device(good, lambda d: d is not None)
            bad = await run_sipp(
                "register_auth_fail.xml", remote=flow.kam.sip_port, workdir=tmp_path, name="bad",
                keys={**keys, "cparams": evil.cparams}, extra=["-au", "ivan", "-ap", "wrong"],
            )  # fmt: skip
            assert bad.returncode == 0, bad.stdout
            # REGISTER + 200, then twice REGISTER + 401
            await eventually(
                lambda: flow.control("status"), lambda s: s["datagrams"]["received"] >= 6
            )
        listed = await flow.control("devices.list", {"aor": "ivan@127.0.0.1"})
    assert [d["token"] for d in listed["devices"]] == [mask(good.token)]
    assert listed["devices"][0]["state"] == "valid"


@pytest.mark.parametrize("kamailio_key", ["s3cret", "wrong"])
async def test_hep_auth_key_is_sent_by_kamailio_and_checked_by_the_sniffer(
    tmp_path: Path, kamailio_key: str
) -> None:
    defines = {"PUSHER_HEP_AUTH_KEY": quoted(kamailio_key)}
    async with open_flow(tmp_path, hep_auth_key="s3cret", defines=defines) as flow:
        phone = ios_phone("judy")
        with trio.fail_after(20):
            res = await flow.register(phone)
            assert res.returncode == 0, res.stdout
            status = await eventually(
                lambda: flow.control("status"), lambda s: s["datagrams"]["received"] >= 2
            )
        device = await flow.device(phone)
    if kamailio_key == "s3cret":
        assert device is not None
        assert status["datagrams"]["dropped_auth"] == 0
    else:
        assert device is None
        assert status["datagrams"]["dropped_auth"] == 2


async def test_sidecar_down_gives_480_at_once_and_kamailio_reconnects_after_restart(
    flow: Flow,
) -> None:
    phone = ios_phone("kate")
    with trio.fail_after(60):
        await flow.asleep(phone)
        await trio.to_thread.run_sync(flow.sidecar.stop)
        start = trio.current_time()
        res = await flow.call("call_failed.xml", phone.user)
        assert res.returncode == 0, res.stdout + flow.debug()
        assert res.statuses()[-1] == (480, "Temporarily Unavailable (push sidecar unreachable)")
        assert trio.current_time() - start < 2
        # same ports, same store: janssonrpcc reconnects on its own
        await trio.to_thread.run_sync(flow.sidecar.start)
        await eventually(
            lambda: flow.control("status"),
            lambda s: s.get("control", {}).get("connections", 2) >= 2,
        )
        res = await flow.call("call_answered.xml", phone.user)
    assert res.returncode == 0, res.stdout + flow.debug()
    assert flow.pushes_to(phone) == 1


async def test_sidecar_overloaded_gives_480_overloaded(tmp_path: Path) -> None:
    async with open_flow(tmp_path, max_waiting=1) as flow:
        first, second = ios_phone("leo"), ios_phone("mia")
        first.wakes = second.wakes = False
        results: dict[str, SippResult] = {}
        with trio.fail_after(30):
            await flow.asleep(first)
            await flow.asleep(second)
            async with trio.open_nursery() as nursery:

                async def call(phone: Phone) -> None:
                    results[phone.user] = await flow.call("call_failed.xml", phone.user)

                nursery.start_soon(call, first)
                await eventually(lambda: flow.control("status"), lambda s: s["waiting"] >= 1)
                nursery.start_soon(call, second)
    assert results["mia"].statuses()[-1] == (480, "Temporarily Unavailable (push overloaded)")
    assert results["leo"].statuses()[-1] == (480, "Temporarily Unavailable (push timeout)")


async def test_sidecar_stopping_answers_waiting_calls_480_shutting_down(flow: Flow) -> None:
    phone = ios_phone("noah")
    phone.wakes = False
    with trio.fail_after(30):
        await flow.asleep(phone)
        async with trio.open_nursery() as nursery:
            results: list[SippResult] = []

            async def call() -> None:
                results.append(await flow.call("call_failed.xml", phone.user))

            nursery.start_soon(call)
            await eventually(lambda: flow.control("status"), lambda s: s["waiting"] >= 1)
            rc = await trio.to_thread.run_sync(flow.sidecar.stop)
    assert rc == 0
    assert results[0].statuses()[-1] == (480, "Temporarily Unavailable (push shutting down)")
