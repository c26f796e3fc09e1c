"""The shipped Kamailio config against a stub sidecar (tests/e2e/stub_sidecar.py).

These prove the Kamailio half of the push role (HEP mirroring, suspension and
resumption through janssonrpcc, replies per error, CANCEL, the no-answer timer)
independently of pusher_trio. test_push_flow.py runs the same calls against the real
sidecar.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.e2e.harness import (
    KAMAILIO_CFG,
    Kamailio,
    SippProcess,
    free_port,
    quoted,
    run_sipp,
    subscriber_db,
)
from tests.e2e.stub_sidecar import StubSidecar

pytestmark = pytest.mark.e2e

PUSH_TIMEOUT = 3  # seconds the (stub) sidecar waits for the phone


class Rig:
    def __init__(self, tmp: Path, stub: StubSidecar, kam: Kamailio) -> None:
        self.tmp = tmp
        self.stub = stub
        self.kam = kam
        self.phones: list[SippProcess] = []
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    async def register(
        self, user: str, cport: int, *, expires: int = 600, cparams: str = "", ua: str = "e2e"
    ) -> Any:
        return await run_sipp(
            "register.xml",
            remote=self.kam.sip_port,
            workdir=self.tmp,
            name=self.name("reg"),
            keys={
                "user": user,
                "cport": str(cport),
                "cparams": cparams,
                "ua": ua,
                "expires": str(expires),
            },
            timeout_s=10,
        )

    def start_phone(self, user: str, *, calls: int = 1) -> None:
        """The woken phone: a UAS on a fresh port, then a REGISTER naming that port."""
        uas_port = free_port()
        self.phones.append(
            SippProcess(
                "uas_phone.xml", remote=self.kam.sip_port, workdir=self.tmp, name=self.name("uas"),
                local_port=uas_port, calls=calls, timeout_s=30,
            )
        )  # fmt: skip
        self.phones.append(
            SippProcess(
                "register.xml", remote=self.kam.sip_port, workdir=self.tmp, name=self.name("wreg"),
                keys={"user": user, "cport": str(uas_port), "cparams": "", "ua": "e2e", "expires": "600"},
                timeout_s=10,
            )
        )  # fmt: skip

    async def call(self, scenario: str, user: str, **kw: Any) -> Any:
        return await run_sipp(
            scenario, remote=self.kam.sip_port, workdir=self.tmp, name=self.name("call"), service=user,
            timeout_s=kw.pop("timeout_s", 20), **kw,
        )  # fmt: skip


@contextlib.asynccontextmanager
async def open_rig(tmp_path: Path, **defines: str | int | None) -> AsyncIterator[Rig]:
    holder: dict[str, Rig] = {}

    def on_push(params: dict[str, Any]) -> None:
        hook: Callable[[dict[str, Any]], None] | None = getattr(holder["rig"], "push_hook", None)
        if hook is not None:
            hook(params)

    stub = StubSidecar(on_push=on_push)
    async with trio.open_nursery() as nursery:
        rpc_port = await nursery.start(stub.serve_rpc)
        hep_port = await nursery.start(stub.serve_hep)
        kam = Kamailio(
            rundir=tmp_path / "kam",
            sip_port=free_port(),
            defines={
                "PUSHER_RPC_SERVER": quoted(f"conn=pusher;addr=127.0.0.1;port={rpc_port}"),
                "PUSHER_HEP_URI": quoted(f"sip:127.0.0.1:{hep_port}"),
                "PUSHER_PUSH_TIMEOUT": PUSH_TIMEOUT,
                "PUSHER_NO_ANSWER_MS": 1000,
                "KAM_CHILDREN": 2,
                **defines,
            },
        )
        await trio.to_thread.run_sync(kam.start)
        r = Rig(tmp_path, stub, kam)
        holder["rig"] = r
        # janssonrpcc connects on its own schedule: wait until it has
        with trio.fail_after(5):
            await stub.connected.wait()
        try:
            yield r
        finally:
            for p in r.phones:
                p.stop()
            await trio.to_thread.run_sync(kam.stop)
            nursery.cancel_scope.cancel()


async def notified(rig: Rig, count: int) -> None:
    """Until the stub has received `count` notifications (callers bound it with fail_after)."""
    while True:
        if len(rig.stub.notifications) >= count:
            return
        await trio.sleep(0.02)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with open_rig(tmp_path) as r:
        yield r


@pytest.mark.parametrize(
    "flags",
    [
        (),
        ("WITH_AUTH",),
        ("WITH_AUTH", "WITH_MIRROR_BEFORE_AUTH"),
        ("WITH_DEBUG",),
        ("WITH_DMQ", "WITH_AUTH"),
    ],
    ids=lambda f: "+".join(f) or "default",
)
def test_shipped_config_parses(tmp_path: Path, flags: tuple[str, ...]) -> None:
    kam = Kamailio(rundir=tmp_path, sip_port=free_port(), defines=dict.fromkeys(flags))
    kam.check()
    assert KAMAILIO_CFG.exists()


OPERATOR_CFG = """#!KAMAILIO
listen=udp:127.0.0.1:{port}
children=1
disable_tcp=yes
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
include_file "{role}"
request_route {{
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{ route(PUSHER_CANCEL); t_relay(); }}
        exit;
    }}
    if (is_method("REGISTER")) {{
        route(PUSHER_MIRROR_REGISTER);
        save("location");
        exit;
    }}
    route(PUSHER_LOCATION);
}}
"""


def test_role_drops_into_another_config(tmp_path: Path) -> None:
    cfg = tmp_path / "operator.cfg"
    cfg.write_text(
        OPERATOR_CFG.format(port=free_port(), role=KAMAILIO_CFG.parent / "pusher-role.cfg")
    )
    kam = Kamailio(rundir=tmp_path, sip_port=free_port(), cfg=cfg)
    kam.check()


async def test_register_is_mirrored_as_hep(rig: Rig) -> None:
    with trio.fail_after(20):
        res = await rig.register("alice", free_port(), cparams=";pn-provider=apns;pn-prid=abc")
        assert res.returncode == 0, res.stdout
        await trio.sleep(0.3)
    assert all(d.startswith(b"HEP3") for d in rig.stub.hep)
    assert any(b"REGISTER sip:" in d and b"pn-prid=abc" in d for d in rig.stub.hep)
    assert rig.stub.registered_users() == ["alice"]


async def test_unregistered_callee_is_woken_and_answers(rig: Rig) -> None:
    rig.push_hook = lambda params: rig.start_phone("bob")  # type: ignore[attr-defined]
    with trio.fail_after(30):
        res = await rig.call("call_answered.xml", "bob")
    assert res.returncode == 0, res.stdout + rig.kam.log()[-3000:]
    (push,) = [r for r in rig.stub.requests if r["method"] == "push"]
    assert push["params"]["aor"] == "bob@127.0.0.1"
    assert push["params"]["timeout"] == PUSH_TIMEOUT
    assert push["params"]["call_id"]
    assert (180, "Ringing") in res.statuses()


@pytest.mark.parametrize(
    ("code", "status", "reason"),
    [
        (-32001, 404, "Not Found (no push target)"),
        (-32002, 480, "Temporarily Unavailable (push timeout)"),
        (-32003, 480, "Temporarily Unavailable (push rejected)"),
        (-32004, 480, "Temporarily Unavailable (push overloaded)"),
        (-32005, 480, "Temporarily Unavailable (push shutting down)"),
    ],
)
async def test_push_error_becomes_final_reply(
    rig: Rig, code: int, status: int, reason: str
) -> None:
    rig.stub.script["carol@127.0.0.1"] = code
    with trio.fail_after(20):
        res = await rig.call("call_failed.xml", "carol")
    assert res.returncode == 0, res.stdout
    assert res.statuses()[-1] == (status, reason)


async def test_sidecar_silent_gives_480_after_rpc_timeout(rig: Rig) -> None:
    rig.stub.script["dave@127.0.0.1"] = "hang"
    start = trio.current_time()
    with trio.fail_after(20):
        res = await rig.call("call_failed.xml", "dave")
    elapsed = trio.current_time() - start
    assert res.returncode == 0, res.stdout
    assert res.statuses()[-1] == (480, "Temporarily Unavailable (push sidecar timeout)")
    # PUSHER_PUSH_TIMEOUT plus the RPC margin (2 s), not Kamailio's INVITE timers
    assert PUSH_TIMEOUT + 1.5 < elapsed < PUSH_TIMEOUT + 6


async def test_caller_cancel_while_waiting(rig: Rig) -> None:
    with trio.fail_after(20):
        res = await rig.call("call_cancel.xml", "erin")
        # the stub's wait ends Cancelled once the notification arrives
        await rig.stub.answered.wait()
        # cancel (ends the wait), then call_ended (the call pushed: a missed-call alert)
        await notified(rig, 2)
    assert res.returncode == 0, res.stdout + rig.kam.log()[-3000:]
    assert 487 in [code for code, _ in res.statuses()]
    note, ended = rig.stub.notifications
    (push,) = rig.stub.requests
    assert note["method"] == "cancel"
    assert note["params"] == {"call_id": push["params"]["call_id"]}
    assert ended["method"] == "call_ended"
    assert ended["params"] == {"call_id": push["params"]["call_id"], "reason": "cancel"}
    assert rig.stub.answers[0]["error"]["code"] == -32006


async def test_registered_but_asleep_is_pushed_then_relayed(rig: Rig) -> None:
    with trio.fail_after(30):
        # a binding whose contact port has nobody listening: the app sleeps
        res = await rig.register("frank", free_port())
        assert res.returncode == 0, res.stdout
        rig.push_hook = lambda params: rig.start_phone("frank")  # type: ignore[attr-defined]
        start = trio.current_time()
        res = await rig.call("call_answered.xml", "frank")
    assert res.returncode == 0, res.stdout + rig.kam.log()[-3000:]
    (push,) = rig.stub.requests
    assert push["params"]["aor"] == "frank@127.0.0.1"
    # the push came only after the no-answer timer (1 s here)
    assert trio.current_time() - start > 1.0


async def test_two_calls_to_one_sleeping_user_both_connect(rig: Rig) -> None:
    pushes: list[dict[str, Any]] = []

    def hook(params: dict[str, Any]) -> None:
        pushes.append(params)
        if len(pushes) == 2:  # wake the phone once both calls wait
            rig.start_phone("gina", calls=2)

    rig.push_hook = hook  # type: ignore[attr-defined]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            results: list[Any] = []

            async def one() -> None:
                results.append(await rig.call("call_answered.xml", "gina"))

            nursery.start_soon(one)
            await trio.sleep(0.3)
            nursery.start_soon(one)
    assert [r.returncode for r in results] == [0, 0], [r.stdout for r in results]
    assert len({p["call_id"] for p in pushes}) == 2
    uas = await rig.phones[0].wait()
    assert uas.returncode == 0


@pytest.mark.parametrize("before_auth", [False, True])
async def test_failed_authentication_never_reaches_the_sniffer_as_success(
    tmp_path: Path, before_auth: bool
) -> None:
    dburl = subscriber_db(tmp_path / "kamailio.sqlite", {"hank": "right"})
    defines: dict[str, str | int | None] = {"WITH_AUTH": None, "DBURL": dburl}
    if before_auth:
        defines["WITH_MIRROR_BEFORE_AUTH"] = None
    async with open_rig(tmp_path, **defines) as r:
        keys = {"user": "hank", "cport": str(free_port()), "ua": "e2e", "expires": "600"}
        with trio.fail_after(30):
            ok = await run_sipp(
                "register_auth.xml", remote=r.kam.sip_port, workdir=tmp_path, name="ok",
                keys={**keys, "cparams": ";pn-provider=apns;pn-prid=goodtoken"}, extra=["-au", "hank", "-ap", "right"],
            )  # fmt: skip
            bad = await run_sipp(
                "register_auth_fail.xml", remote=r.kam.sip_port, workdir=tmp_path, name="bad",
                keys={**keys, "cparams": ";pn-provider=apns;pn-prid=eviltoken"}, extra=["-au", "hank", "-ap", "wrong"],
            )  # fmt: skip
            await trio.sleep(0.3)
    assert ok.returncode == 0, ok.stdout
    assert bad.returncode == 0, bad.stdout
    assert r.stub.registered_users() == ["hank"]
    evil = [d for d in r.stub.hep if b"eviltoken" in d]
    if before_auth:
        # mirrored, with its 401s, for the sidecar to ignore
        assert evil
        assert any(b"SIP/2.0 401" in d for d in r.stub.hep)
    else:
        assert evil == []


async def test_caller_cancel_while_waiting_for_an_asleep_registered_phone(rig: Rig) -> None:
    with trio.fail_after(20):
        res = await rig.register("olga", free_port())
        assert res.returncode == 0, res.stdout
        # the 180 comes from the push role once the no-answer timer fired; CANCEL 1 s later
        res = await rig.call("call_cancel.xml", "olga")
        await rig.stub.answered.wait()
        await notified(rig, 2)
    assert res.returncode == 0, res.stdout + rig.kam.log()[-3000:]
    assert 487 in [code for code, _ in res.statuses()]
    (push,) = rig.stub.requests
    call_id = push["params"]["call_id"]
    assert rig.stub.notifications == [
        {"jsonrpc": "2.0", "method": "cancel", "params": {"call_id": call_id}},
        {
            "jsonrpc": "2.0",
            "method": "call_ended",
            "params": {"call_id": call_id, "reason": "cancel"},
        },
    ]
    assert rig.stub.answers[0]["error"]["code"] == -32006
