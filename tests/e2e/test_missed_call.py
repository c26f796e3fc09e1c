"""Missed-call alert pushes with real Kamailio and sipp (DESIGN §12).

A call that pushed and ends unanswered (CANCEL while waiting, CANCEL after the woken phone
rang, the ringing timer, the push wait's timeout) makes Kamailio send `call_ended`; the
sidecar sends the device a visible alert push, collapse id = Call-ID. A CANCEL with
`Reason: SIP;cause=200` (answered elsewhere) and an answered call send none. The stand-ins
tell an alert from a wake-up by its kind (APNs apns-push-type; FCM a notification).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from pusher_trio.standins.common import Received
from tests.e2e.harness import SippResult
from tests.e2e.test_push_flow import (
    FCM_PROJECT,
    IOS_BUNDLE,
    TEAM,
    Flow,
    Phone,
    eventually,
    open_flow,
)

pytestmark = pytest.mark.e2e

RING_MS = 2000  # how long the woken phone rings before tm gives up (PUSHER_RING_MS)


@pytest.fixture
async def flow(tmp_path: Path) -> AsyncIterator[Flow]:
    async with open_flow(tmp_path, defines={"PUSHER_RING_MS": RING_MS}) as f:
        yield f


def linphone_phone(user: str) -> tuple[Phone, str]:
    """An iOS Linphone: a PushKit token for calls and a remote (alert) token; returns both."""
    voip, remote = secrets.token_hex(32), secrets.token_hex(32)
    cparams = (
        f";pn-provider=apns;pn-prid={voip}:voip&{remote}:remote"
        f";pn-param={TEAM}.{IOS_BUNDLE}.voip&remote"
    )
    return Phone(user, voip, cparams), remote


def call_id_of(res: SippResult) -> str:
    m = re.search(r"^Call-ID:\s*(\S+)", res.messages, re.M | re.I)
    assert m, res.messages[-2000:]
    return m.group(1)


def alerts(flow: Flow, token: str) -> list[Received]:
    return [
        r
        for r in flow.apns.delivered_of_kind("alert") + flow.fcm.delivered_of_kind("alert")
        if r.token == token
    ]


async def one_alert(flow: Flow, token: str) -> Received:
    await eventually(lambda: flow.control("status"), lambda s: sum(s["missed_calls"].values()) >= 1)
    await eventually(_const(None), lambda _: len(alerts(flow, token)) >= 1)
    (alert,) = alerts(flow, token)
    return alert


def _const(value: Any) -> Any:
    async def probe() -> Any:
        return value

    return probe


def check_apns_alert(alert: Received, call_id: str) -> None:
    assert alert.headers["apns-push-type"] == "alert"
    assert alert.headers["apns-topic"] == IOS_BUNDLE  # not .voip: a visible alert
    assert alert.headers["apns-collapse-id"] == call_id
    payload = alert.payload()
    assert payload["aps"]["alert"]["loc-key"] == "MC_MSG"
    assert payload["aps"]["alert"]["loc-args"] == ["Caller 1"]
    assert payload["call-id"] == call_id
    assert payload["caller-id-name"] == "Caller 1"
    assert payload["caller-id-number"] == "caller1"


async def test_cancel_while_waiting_sends_a_missed_call_alert(flow: Flow) -> None:
    phone, remote = linphone_phone("mc1")
    phone.wakes = False
    with trio.fail_after(30):
        await flow.asleep(phone)
        res = await flow.call("call_cancel.xml", phone.user)
        assert res.returncode == 0, res.stdout + flow.debug()
        alert = await one_alert(flow, remote)
    check_apns_alert(alert, call_id_of(res))
    # the wake-up went to the PushKit token, the alert to the remote token
    assert [r.kind for r in flow.apns.delivered if r.token == phone.token] == ["voip"]
    assert (await flow.control("status"))["missed_calls"] == {"alert_delivered": 1}


async def test_cancel_after_the_woken_phone_rang_sends_a_missed_call_alert(flow: Flow) -> None:
    phone, remote = linphone_phone("mc2")
    flow.uas_scenario = "uas_ring_only.xml"
    with trio.fail_after(30):
        await flow.asleep(phone)
        res = await flow.call("call_cancel_ringing.xml", phone.user)
        assert res.returncode == 0, res.stdout + flow.debug()
        alert = await one_alert(flow, remote)
        uas = await flow.uas[phone.user].wait()
    assert uas.returncode == 0, uas.stdout
    check_apns_alert(alert, call_id_of(res))


async def test_ringing_timeout_after_wake_up_sends_a_missed_call_alert(flow: Flow) -> None:
    phone, remote = linphone_phone("mc3")
    flow.uas_scenario = "uas_ring_only.xml"
    with trio.fail_after(30):
        await flow.asleep(phone)
        res = await flow.call("call_failed.xml", phone.user)
        assert res.returncode == 0, res.stdout + flow.debug()
        assert res.statuses()[-1][0] == 408, res.statuses()
        alert = await one_alert(flow, remote)
        uas = await flow.uas[phone.user].wait()
    assert uas.returncode == 0, uas.stdout
    check_apns_alert(alert, call_id_of(res))


async def test_push_wait_timeout_sends_a_missed_call_alert(flow: Flow) -> None:
    phone, remote = linphone_phone("mc4")
    phone.wakes = False
    with trio.fail_after(30):
        await flow.asleep(phone)
        res = await flow.call("call_failed.xml", phone.user)
        assert res.returncode == 0, res.stdout + flow.debug()
        assert res.statuses()[-1] == (480, "Temporarily Unavailable (push timeout)")
        alert = await one_alert(flow, remote)
    check_apns_alert(alert, call_id_of(res))


async def test_fcm_missed_call_is_a_notification_collapsed_by_call_id(flow: Flow) -> None:
    token = secrets.token_urlsafe(100)
    phone = Phone("mc5", token, f";pn-provider=fcm;pn-prid={token};pn-param={FCM_PROJECT}")
    phone.wakes = False
    with trio.fail_after(30):
        await flow.asleep(phone)
        res = await flow.call("call_cancel.xml", phone.user)
        assert res.returncode == 0, res.stdout + flow.debug()
        alert = await one_alert(flow, token)
    call_id = call_id_of(res)
    assert [r.kind for r in flow.fcm.delivered if r.token == token] == ["data", "alert"]
    android = alert.payload()["message"]["android"]
    assert android["collapse_key"] == call_id
    assert android["notification"] == {
        "tag": call_id,
        "body_loc_key": "MC_MSG",
        "body_loc_args": ["Caller 1"],
    }


async def test_cancel_answered_elsewhere_sends_no_alert(flow: Flow) -> None:
    phone, remote = linphone_phone("mc6")
    phone.wakes = False
    with trio.fail_after(30):
        await flow.asleep(phone)
        res = await flow.call("call_cancel_elsewhere.xml", phone.user)
        assert res.returncode == 0, res.stdout + flow.debug()
        status = await eventually(
            lambda: flow.control("status"), lambda s: sum(s["missed_calls"].values()) >= 1
        )
    assert status["missed_calls"] == {"answered_elsewhere": 1}
    assert status["waiters"]["cancelled"] == 1
    assert alerts(flow, remote) == []
    assert len(flow.apns.delivered) == 1


async def test_answered_call_sends_no_alert(flow: Flow) -> None:
    phone, remote = linphone_phone("mc7")
    with trio.fail_after(30):
        await flow.asleep(phone)
        res = await flow.call("call_answered.xml", phone.user)
        assert res.returncode == 0, res.stdout + flow.debug()
        uas = await flow.uas[phone.user].wait()
    assert uas.returncode == 0, uas.stdout
    # the caller has hung up (BYE answered): Kamailio has nothing more to say about the call
    assert "call ended" not in flow.kam.log()
    assert (await flow.control("status"))["missed_calls"] == {}
    assert alerts(flow, remote) == []


async def test_app_with_missed_calls_off_sends_none(flow: Flow) -> None:
    # the same app again, with --no-missed-call: what the operator sets per app
    cert = flow.tmp / "app.pem"
    port = flow.apns.port
    await trio.to_thread.run_sync(
        lambda: flow.sidecar.cli(
            "add-apple-app",
            IOS_BUNDLE,
            str(cert),
            f"127.0.0.1:{port}",
            "--push-type",
            "voip",
            "--no-missed-call",
        )
    )
    phone, remote = linphone_phone("mc8")
    phone.wakes = False
    with trio.fail_after(30):
        await flow.asleep(phone)
        res = await flow.call("call_cancel.xml", phone.user)
        assert res.returncode == 0, res.stdout + flow.debug()
        status = await eventually(
            lambda: flow.control("status"), lambda s: sum(s["missed_calls"].values()) >= 1
        )
    assert status["missed_calls"] == {"skipped_off": 1}
    assert alerts(flow, remote) == []
