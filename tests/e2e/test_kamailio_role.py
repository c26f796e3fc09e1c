"""The shipped Kamailio config against a stub sidecar (tests/e2e/stub_sidecar.py).

These prove the Kamailio half of the push role (HEP mirroring, suspension and
resumption through janssonrpcc, replies per error, CANCEL, the no-answer timer)
independently of pusher_trio. test_push_flow.py runs the same calls against the real
sidecar.
"""

from __future__ import annotations

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
)
from tests.e2e.stub_sidecar import StubSidecar

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

    async def register(self, user: str, cport: int, *, expires: int = 600, cparams: str = "", ua: str = "e2e") -> Any:
        return await run_sipp(
            "register.xml",
            remote=self.kam.sip_port,
            workdir=self.tmp,
            name=self.name("reg"),
            keys={"user": user, "cport": str(cport), "cparams": cparams, "ua": ua, "expires": str(expires)},
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


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
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
            },
        )
        await trio.to_thread.run_sync(kam.start)
        r = Rig(tmp_path, stub, kam)
        holder["rig"] = r
        # janssonrpcc connects on its own schedule: wait until it has
        with trio.fail_after(5):
            while not stub.connected:
                await trio.sleep(0.05)
        try:
            yield r
        finally:
            for p in r.phones:
                p.stop()
            await trio.to_thread.run_sync(kam.stop)
            nursery.cancel_scope.cancel()


def test_config_parses() -> None:
    kam = Kamailio(rundir=Path("/tmp"), sip_port=free_port(), defines={"WITH_AUTH": None})
    kam.check()
    assert KAMAILIO_CFG.exists()


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
