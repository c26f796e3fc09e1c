"""Homer sees what the sidecar decided inside the call's SIP flow (DESIGN §13).

A UDP port stands for Homer: Kamailio (shipped role, PUSHER_HOMER_URI) sends it a
HEPv3 copy of each INVITE that wakes a phone, and `pusher-trio serve` ([hep] capture)
sends it the push events as HEPv3 log packets. The log packets must carry the Call-ID
of those SIP copies as correlation id and tell each call's story, tokens masked.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import trio

import sip
from tests.e2e.harness import free_port, quoted
from tests.e2e.test_push_flow import answered_after_wake, eventually, ios_phone, mask, open_flow

pytestmark = pytest.mark.e2e


async def test_push_events_reach_homer_correlated_with_the_calls_sip(tmp_path: Path) -> None:
    port = free_port()
    homer = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    await homer.bind(("127.0.0.1", port))
    packets: list[sip.HepPacket] = []

    async def receive() -> None:
        while True:
            packets.append(sip.decode_hep(await homer.recv(65535)))

    def logs() -> dict[str, list[dict[str, Any]]]:
        by_call: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for packet in sorted(packets, key=lambda p: p.timestamp):
            if packet.payload_type == 100:
                by_call[(packet.correlation_id or b"").decode()].append(json.loads(packet.payload))
        return by_call

    woken, cancelled = ios_phone("alice"), ios_phone("bob")
    cancelled.wakes = False
    with homer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            async with open_flow(
                tmp_path,
                hep_capture=f"udp:127.0.0.1:{port}",
                defines={"PUSHER_HOMER_URI": quoted(f"sip:127.0.0.1:{port}")},
            ) as flow:
                await answered_after_wake(flow, woken)
                with trio.fail_after(30):
                    await flow.asleep(cancelled)
                    res = await flow.call("call_cancel.xml", cancelled.user)
                    assert res.returncode == 0, res.stdout + flow.debug()

                    async def results() -> int:
                        return sum(e["event"] == "result" for es in logs().values() for e in es)

                    await eventually(results, lambda n: n >= 2)
            nursery.cancel_scope.cancel()

    invites = {}
    for packet in packets:
        if packet.payload_type == 1:
            peeked = sip.peek_request(packet.payload)
            assert peeked is not None and peeked[0] == "INVITE", packet.payload[:80]
            invites[peeked[1]] = packet
    stories = logs()
    assert set(stories) == set(invites), "every log packet joins a call's SIP copy by Call-ID"
    by_user = {
        events[0]["aor"].split("@")[0]: (call_id, events) for call_id, events in stories.items()
    }

    call_id, events = by_user["alice"]
    assert [e["event"] for e in events] == ["push", "provider_answer", "registered", "result"]
    assert events[0]["devices"] == [
        {"provider": "apple", "app": "com.example.app", "token": mask(woken.token)}
    ]
    assert events[1]["outcome"] == "delivered"
    assert events[3]["result"] == "registered"
    call_id, events = by_user["bob"]
    assert [e["event"] for e in events] == ["push", "provider_answer", "result"]
    assert events[-1]["result"] == "Cancelled"

    for call_id, (invite, first) in {c: (invites[c], stories[c][0]) for c in stories}.items():
        logged = [
            p for p in packets if p.payload_type == 100 and p.correlation_id == call_id.encode()
        ]
        assert invite.timestamp <= min(p.timestamp for p in logged), call_id  # SIP first, then push
        assert {p.capture_id for p in logged} == {2002} and invite.capture_id == 2001
        assert invite.correlation_id == call_id.encode()  # Kamailio's own copy says it too
        assert first["call_id"] == call_id
    everything = b"".join(p.payload for p in packets if p.payload_type == 100)
    for phone in (woken, cancelled):
        assert phone.token.encode() not in everything
