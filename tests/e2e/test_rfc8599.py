"""The proxy side of RFC 8599 in the shipped role (DESIGN §12), with real Kamailio and sipp:
`check` + 555 before save(), Feature-Caps in the 2xx.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from tests.e2e.harness import SippResult, run_sipp
from tests.e2e.test_push_flow import (
    FCM_PROJECT,
    TEAM,
    Flow,
    Phone,
    eventually,
    ios_phone,
    open_flow,
)

pytestmark = pytest.mark.e2e


class UdpTrap:
    """A loopback UDP port that answers nothing and records every SIP request it gets."""

    def __init__(self) -> None:
        self.port = 0
        self.received: list[bytes] = []

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            task_status.started(self.port)
            while True:
                data = await sock.recv(65535)
                self.received.append(data)

    def branches(self, method: str) -> set[str]:
        """The Via branches of the `method` requests received (retransmissions count once)."""
        found = set()
        for data in self.received:
            text = data.decode(errors="replace")
            if text.startswith(f"{method} "):
                m = re.search(r"^Via:[^\r\n]*;branch=([^;\s,]+)", text, re.M | re.I)
                if m:
                    found.add(m.group(1))
        return found


@pytest.fixture
async def flow(tmp_path: Path) -> AsyncIterator[Flow]:
    async with open_flow(tmp_path) as f:
        yield f


@pytest.fixture
async def trap() -> AsyncIterator[UdpTrap]:
    t = UdpTrap()
    async with trio.open_nursery() as nursery:
        await nursery.start(t.serve)
        yield t
        nursery.cancel_scope.cancel()


def replies(res: SippResult) -> list[str]:
    """The SIP responses sipp received, as text."""
    return [
        block
        for block in res.messages.split("----------------------------------------------- ")
        if "message received" in block and "SIP/2.0 " in block
    ]


def header(message: str, name: str) -> list[str]:
    return re.findall(rf"^{name}:\s*([^\r\n]*)", message, re.M | re.I)


async def register(flow: Flow, phone: Phone, scenario: str, cport: int) -> SippResult:
    flow.phones[phone.token] = phone
    keys = {"user": phone.user, "cport": str(cport), "cparams": phone.cparams, "ua": phone.ua}
    return await run_sipp(
        scenario, remote=flow.kam.sip_port, workdir=flow.tmp, name=flow.name("reg"),
        keys={**keys, "expires": "600"}, timeout_s=10,
    )  # fmt: skip


async def test_feature_caps_in_the_2xx_name_the_providers_served(flow: Flow, trap: UdpTrap) -> None:
    phone = ios_phone("fc1")
    with trio.fail_after(20):
        res = await register(flow, phone, "register.xml", trap.port)
    assert res.returncode == 0, res.stdout + flow.debug()
    (ok,) = [r for r in replies(res) if "SIP/2.0 200" in r]
    # the flow has an apple app and a firebase app; no binding refresh, no Web Push app
    assert header(ok, "Feature-Caps") == ['*;+sip.pns="apns,fcm"']
    assert (await flow.control("status"))["checks"] == {"ok": 1}


async def test_register_without_push_params_is_not_checked_and_gets_no_feature_caps(
    flow: Flow, trap: UdpTrap
) -> None:
    phone = Phone("plain", secrets.token_hex(8), "")
    with trio.fail_after(20):
        res = await register(flow, phone, "register.xml", trap.port)
    assert res.returncode == 0, res.stdout + flow.debug()
    (ok,) = [r for r in replies(res) if "SIP/2.0 200" in r]
    assert header(ok, "Feature-Caps") == []
    assert (await flow.control("status"))["checks"] == {}


@pytest.mark.parametrize(
    "cparams",
    [
        ";pn-provider=acme;pn-prid={token};pn-param=x",
        ";pn-provider=apns;pn-prid={token};pn-param=" + TEAM + ".com.unknown.app.voip",
        ";pn-provider=fcm;pn-prid={token};pn-param=not-" + FCM_PROJECT,
    ],
    ids=["unknown-provider", "no-apns-app", "no-fcm-app"],
)
async def test_unservable_push_params_get_555_nothing_saved_nothing_learned(
    flow: Flow, trap: UdpTrap, cparams: str
) -> None:
    token = secrets.token_hex(32)
    phone = Phone("refused", token, cparams.format(token=token))
    with trio.fail_after(30):
        res = await register(flow, phone, "register_555.xml", trap.port)
        assert res.returncode == 0, res.stdout + flow.debug()
        (refused,) = replies(res)
        assert refused.split("SIP/2.0 ", 1)[1].startswith(
            "555 Push Notification Service Not Supported"
        )
        assert header(refused, "Feature-Caps") == []
        assert (await flow.control("status"))["checks"] == {"unsupported": 1}
        # nothing learned by the sidecar ...
        listed = await flow.control("devices.list", {"aor": "refused@127.0.0.1"})
        assert listed["devices"] == []
        # ... and nothing saved by the registrar: a call finds no contact and no push target
        call = await flow.call("call_failed.xml", "refused")
    assert call.returncode == 0, call.stdout + flow.debug()
    assert call.statuses()[-1] == (404, "Not Found (no push target)")
    assert trap.received == []


async def test_a_contact_being_removed_is_never_refused(flow: Flow, trap: UdpTrap) -> None:
    token = secrets.token_hex(32)
    phone = Phone("leaving", token, f";pn-provider=acme;pn-prid={token};pn-param=x")
    with trio.fail_after(20):
        keys = {"user": phone.user, "cport": str(trap.port), "cparams": phone.cparams, "ua": "x"}
        res = await run_sipp(
            "register.xml", remote=flow.kam.sip_port, workdir=flow.tmp, name="leave",
            keys={**keys, "expires": "0"}, timeout_s=10,
        )  # fmt: skip
    assert res.returncode == 0, res.stdout + flow.debug()


async def test_sidecar_down_registers_anyway_without_feature_caps(
    flow: Flow, trap: UdpTrap
) -> None:
    phone = ios_phone("fc2")
    with trio.fail_after(30):
        await trio.to_thread.run_sync(flow.sidecar.stop)
        res = await register(flow, phone, "register.xml", trap.port)
        assert res.returncode == 0, res.stdout + flow.debug()
        (ok,) = [r for r in replies(res) if "SIP/2.0 200" in r]
        assert header(ok, "Feature-Caps") == []
        await trio.to_thread.run_sync(flow.sidecar.start)
        await eventually(
            lambda: flow.control("status"),
            lambda s: s.get("control", {}).get("connections", 2) >= 2,
        )
        # back up: the phone's next refresh is checked again and gets its Feature-Caps
        res = await register(flow, phone, "register.xml", trap.port)
    (ok,) = [r for r in replies(res) if "SIP/2.0 200" in r]
    assert header(ok, "Feature-Caps") == ['*;+sip.pns="apns,fcm"']


async def test_after_a_wake_up_only_the_fresh_binding_gets_the_invite(
    flow: Flow, trap: UdpTrap
) -> None:
    """A registered-but-asleep phone: its stale contact (the trap, silent) gets the first
    INVITE, the no-answer timer pushes, the phone registers from a new port; the call goes
    to that binding alone: the trap never sees a second INVITE branch."""
    phone = ios_phone("stale")
    with trio.fail_after(40):
        res = await register(flow, phone, "register.xml", trap.port)
        assert res.returncode == 0, res.stdout
        await flow.wait_device(phone, lambda d: d is not None)
        call = await flow.call("call_answered.xml", phone.user)
        assert call.returncode == 0, call.stdout + flow.debug()
        uas = await flow.uas[phone.user].wait()
    assert uas.returncode == 0, uas.stdout
    assert flow.pushes_to(phone) == 1
    assert len(trap.branches("INVITE")) == 1, trap.received
    assert "relaying to the fresh binding" in flow.kam.log()


async def test_check_answers_are_cached_per_provider_and_param(flow: Flow, trap: UdpTrap) -> None:
    """PUSHER_CHECK_CACHE_S: the second phone of the same app gets its Feature-Caps (and the
    second unservable one its 555) from Kamailio's htable, without asking the sidecar."""
    token = secrets.token_hex(32)
    refused = Phone("refused2", token, f";pn-provider=acme;pn-prid={token};pn-param=x")
    with trio.fail_after(30):
        for user in ("cache1", "cache2"):
            res = await register(flow, ios_phone(user), "register.xml", trap.port)
            assert res.returncode == 0, res.stdout + flow.debug()
            (ok,) = [r for r in replies(res) if "SIP/2.0 200" in r]
            assert header(ok, "Feature-Caps") == ['*;+sip.pns="apns,fcm"']
        # same app, but this UA asks for refresh pushes: its own cache entry and caps
        res = await register(flow, ios_phone("cache3"), "register_pnsreg.xml", trap.port)
        assert res.returncode == 0, res.stdout + flow.debug()
        (ok,) = [r for r in replies(res) if "SIP/2.0 200" in r]
        assert header(ok, "Feature-Caps") == ['*;+sip.pns="apns,fcm";+sip.pnsreg="120"']
        for _ in range(2):
            res = await register(flow, refused, "register_555.xml", trap.port)
            assert res.returncode == 0, res.stdout + flow.debug()
        assert (await flow.control("status"))["checks"] == {"ok": 2, "unsupported": 1}
        # a removal is never refused, whatever the cache holds for its provider
        keys = {"user": refused.user, "cport": str(trap.port), "cparams": refused.cparams}
        res = await run_sipp(
            "register.xml", remote=flow.kam.sip_port, workdir=flow.tmp, name="leave2",
            keys={**keys, "ua": "x", "expires": "0"}, timeout_s=10,
        )  # fmt: skip
    assert res.returncode == 0, res.stdout + flow.debug()
    assert (await flow.control("devices.list", {"aor": "refused2@127.0.0.1"}))["devices"] == []


async def test_binding_refresh_push_before_expiry_and_the_refresh_keeps_the_phone(
    tmp_path: Path, trap: UdpTrap
) -> None:
    """+sip.pnsreg: the 2xx says +sip.pnsreg="6"; 6 s before the 10 s binding expires the
    stand-in gets a silent refresh push, the phone REGISTERs again (from its woken port),
    and a call after the first binding has expired reaches it with no push at all."""
    async with open_flow(tmp_path, binding_refresh_lead=6) as flow:
        token = secrets.token_urlsafe(100)
        phone = Phone("refresh", token, f";pn-provider=fcm;pn-prid={token};pn-param={FCM_PROJECT}")
        with trio.fail_after(40):
            flow.phones[token] = phone
            keys = {"user": phone.user, "cport": str(trap.port), "cparams": phone.cparams}
            start = trio.current_time()
            res = await run_sipp(
                "register_pnsreg.xml", remote=flow.kam.sip_port, workdir=flow.tmp, name="pnsreg",
                keys={**keys, "ua": "x", "expires": "10"}, timeout_s=10,
            )  # fmt: skip
            assert res.returncode == 0, res.stdout + flow.debug()
            (ok,) = [r for r in replies(res) if "SIP/2.0 200" in r]
            assert header(ok, "Feature-Caps") == ['*;+sip.pns="apns,fcm";+sip.pnsreg="6"']
            status = await eventually(
                lambda: flow.control("status"),
                lambda s: s["binding_refresh"]["answered"] >= 1,
            )
            pushed_after = flow.fcm.delivered[0].at
            # past the first binding's expiry: only the refreshed one is left
            await trio.sleep_until(start + 11)
            call = await flow.call("call_answered.xml", phone.user)
            assert call.returncode == 0, call.stdout + flow.debug()
            uas = await flow.uas[phone.user].wait()
        assert uas.returncode == 0, uas.stdout
        (refresh,) = flow.fcm.delivered  # the refresh push, and no wake-up for the call
        message = refresh.payload()["message"]
        assert message["data"]["pn-refresh"] == "binding"
        assert message["android"]["priority"] == "NORMAL"
        assert refresh.kind == "data"
        assert trap.branches("INVITE") == set()
        assert status["binding_refresh"]["sent_delivered"] == 1
        assert status["binding_refresh"]["unanswered"] == 0
        assert pushed_after > 0
