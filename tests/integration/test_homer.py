"""Push events to Homer: a UDP collector receives the sidecar's HEPv3 log packets during a
push storm through the real provider pools, and each call's events tell its story."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import sip
from pusher_trio.config import HepConfig
from pusher_trio.control import jsonrpc

from .observability import observed_sidecar, push_storm


async def collect(sock: trio.socket.SocketType, into: list[sip.HepPacket]) -> None:
    while True:
        data = await sock.recv(65535)
        into.append(sip.decode_hep(data))


async def test_every_push_request_tells_its_story_to_homer(tmp_path: Path) -> None:
    collector = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    await collector.bind(("127.0.0.1", 0))
    port = collector.getsockname()[1]
    packets: list[sip.HepPacket] = []
    hep = HepConfig(capture=f"udp:127.0.0.1:{port}", capture_id=4242)
    with trio.fail_after(40), collector:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, collector, packets)
            async with observed_sidecar(tmp_path, hep=hep) as world:
                storm = await push_storm(world, waking=5, sleeping=2, dead=1)
                status = await world.admin.call("status", {})
                with trio.fail_after(5):
                    while len(packets) < status["hep"]["sent"]:  # noqa: ASYNC110
                        await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    assert status["hep"]["dropped"] == 0 and status["hep"]["errors"] == 0
    assert {p.payload_type for p in packets} == {100}
    assert {p.capture_id for p in packets} == {4242}
    events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for packet in sorted(packets, key=lambda p: p.timestamp):
        body = json.loads(packet.payload)
        assert packet.correlation_id == body["call_id"].encode()
        events[body["call_id"]].append(body)
    assert set(events) == set(storm.call_ids)

    for call_id, result in storm.call_ids.items():
        story = [e["event"] for e in events[call_id]]
        assert story[-1] == "result" and events[call_id][-1]["result"] == result, story
        if result == "NoPushTarget":
            assert story == ["result"]
            continue
        assert story[0] == "push", story
        answer = next(e for e in events[call_id] if e["event"] == "provider_answer")
        assert answer["latency_ms"] > 0
        if result == "registered":
            assert story == ["push", "provider_answer", "registered", "result"]
            assert answer["outcome"] == "delivered"
            registered = events[call_id][2]
            assert registered["wake_ms"] >= 0 and "pn-prid=" in registered["contact"]
        elif result == "PushRejected":
            assert answer["outcome"] == "token_invalid" and answer["reason"]
        else:
            assert result == "Timeout" and answer["outcome"] == "delivered"
    everything = b"".join(p.payload for p in packets)
    for token in world.tokens:
        assert token.encode() not in everything
        assert f"{token[:6]}…{token[-4:]}".encode() in everything  # masked, as DESIGN §11


async def test_reload_starts_and_stops_the_hep_capture(tmp_path: Path) -> None:
    collector = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    await collector.bind(("127.0.0.1", 0))
    port = collector.getsockname()[1]
    with trio.fail_after(20), collector:
        async with observed_sidecar(tmp_path) as world:
            running = world.running
            assert running.hep is None
            on = attrs.evolve(running.config, hep=HepConfig(capture=f"udp:localhost:{port}"))
            assert await running.reload(on) is True
            assert running.hep is not None and running.hep in running.service.observers
            with pytest.raises(jsonrpc.NoPushTarget):
                await world.admin.call("push", {"aor": "x@example.com", "call_id": "r1"})
            packet = sip.decode_hep(await collector.recv(65535))
            assert packet.correlation_id == b"r1"
            assert json.loads(packet.payload)["result"] == "NoPushTarget"
            capture = running.hep
            off = attrs.evolve(running.config, hep=HepConfig())
            assert await running.reload(off) is True
            assert running.hep is None and capture not in running.service.observers
            assert (await world.admin.call("status", {}))["hep"] == {"capture": "-"}
