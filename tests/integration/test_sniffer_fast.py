"""The sniffer's fast paths (one-match HEP read, batched drain) behave as the slow ones."""

from __future__ import annotations

import socket
import struct

import pytest
import trio

import sip
from pusher_trio.registrations import RegistrationTable
from pusher_trio.sniffer import COALESCE_MIN, Sniffer
from pusher_trio.store import MemoryStore
from tests.integration.test_sniffer import direct, hep
from tests.unit.test_registrations import RFC8599_APNS, TOKEN, register, response


def reordered(data: bytes) -> bytes:
    """The same HEP packet with its payload chunk first: legal, but not the usual shape."""
    chunks = []
    pos, total = 6, struct.unpack_from("!H", data, 4)[0]
    while pos < total:
        clen = struct.unpack_from("!H", data, pos + 4)[0]
        chunks.append(data[pos : pos + clen])
        pos += clen
    payload = [c for c in chunks if c[2:4] == b"\x00\x0f"]
    body = b"".join(payload + [c for c in chunks if c[2:4] != b"\x00\x0f"])
    return b"HEP3" + struct.pack("!H", 6 + len(body)) + body


def outcome(sniffer: Sniffer, store: MemoryStore) -> tuple[list[str], dict[str, int]]:
    stats = sniffer.statistics()
    keep = ("registrations", "dropped_auth", "dropped_malformed", "ignored_not_sip", "registers")
    return [d.token for d in store.devices()], {k: stats[k] for k in keep}


@pytest.mark.parametrize(
    ("sent_key", "configured"),
    [(None, ""), ("k3y", "k3y"), ("k3y\x00", "k3y"), ("bad", "k3y"), (None, "k3y"), ("k3y", "")],
)
def test_usual_and_reordered_hep_give_the_same_outcome(
    sent_key: str | None, configured: str
) -> None:
    results = []
    for shape in (lambda d: d, reordered):
        sniffer, store = direct(hep_auth_key=configured)
        reg, ok = (
            hep(register(RFC8599_APNS), auth_key=sent_key),
            hep(response(200), auth_key=sent_key),
        )
        assert (sip.hep_sip_fields(shape(reg)) is None) == (shape is reordered)
        sniffer.handle_datagram(shape(reg), "127.0.0.1", 1.0)
        sniffer.handle_datagram(shape(ok), "127.0.0.1", 2.0)
        results.append(outcome(sniffer, store))
    assert results[0] == results[1]
    learned = configured == "" or (sent_key or "").rstrip("\x00") == configured
    assert results[0][0] == ([TOKEN] if learned else [])


def test_non_sip_and_malformed_hep_counted_on_both_paths() -> None:
    sniffer, _ = direct()
    for data in (
        hep(b"RTCP", payload_type=5),
        reordered(hep(b"RTCP", payload_type=5)),
        hep(b"x")[:-3] + b"\x00\x00\x00\x10\x00\x06",  # compressed: decode_hep refuses it
        b"HEP3\x00\x08\x00\x00",
    ):
        sniffer.handle_datagram(data, "127.0.0.1", 1.0)
    stats = sniffer.statistics()
    assert (stats["ignored_not_sip"], stats["dropped_malformed"]) == (2, 2)


async def test_a_trickle_under_load_is_handled_in_batches() -> None:
    """Datagrams arriving one by one keep being read while the reader coalesces."""
    store = MemoryStore()
    sniffer = Sniffer(["udp:127.0.0.1:0"], ["127.0.0.0/8"], "", RegistrationTable(), store,
                      on_registered=lambda e: None)  # fmt: skip
    n = 40
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            (address,) = await nursery.start(sniffer.serve)
            with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for i in range(n):
                    token = f"{i:064x}"
                    await sock.sendto(hep(register(RFC8599_APNS.replace(TOKEN, token), cseq=i + 1,
                                                   call_id=f"c{i}")), address)  # fmt: skip
                    await sock.sendto(hep(response(200, cseq=i + 1, call_id=f"c{i}")), address)
                    if i % COALESCE_MIN == 0:
                        await trio.sleep(0.001)
                while sniffer.statistics()["received"] < 2 * n:  # noqa: ASYNC110
                    await trio.sleep(0.005)
            nursery.cancel_scope.cancel()
    assert sniffer.statistics()["registrations"] == n
    # one phone (one +sip.instance) whose token changed 40 times: the newest one is kept
    assert [d.token for d in store.devices()] == [f"{n - 1:064x}"]


def test_handle_datagram_takes_the_arrival_time_from_its_caller() -> None:
    # handle_datagram keeps taking `now` from its caller (tests and the reader)
    sniffer, store = direct()
    sniffer.handle_datagram(hep(register(RFC8599_APNS)), "127.0.0.1", 5.0)
    sniffer.handle_datagram(hep(response(200)), "127.0.0.1", 5.0)
    assert [d.last_registered for d in store.devices()] == [5.0]
