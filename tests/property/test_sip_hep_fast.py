"""Hypothesis: sip.hep_sip_fields never raises and, when it answers, agrees with decode_hep."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sip

SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=int(os.environ.get("SIP_HYPOTHESIS_EXAMPLES", "300")),
)


def check(data: bytes) -> bool:
    fields = sip.hep_sip_fields(data)
    if fields is None:
        return False
    packet = sip.decode_hep(data)  # must not raise when the fast path answered
    assert fields == (packet.payload_type, packet.auth_key, packet.payload)
    return True


@st.composite
def packets(draw: st.DrawFn) -> bytes:
    v6 = draw(st.booleans())
    addr = st.ip_addresses(v=6 if v6 else 4).map(str)
    return sip.encode_hep(
        draw(st.binary(max_size=600)),
        src=(draw(addr), draw(st.integers(0, 65535))),
        dst=(draw(addr), draw(st.integers(0, 65535))),
        timestamp=draw(st.integers(0, 2**32 - 1)) + draw(st.integers(0, 999_999)) / 1e6,
        capture_id=draw(st.one_of(st.none(), st.integers(0, 2**32 - 1))),
        auth_key=draw(
            st.one_of(st.none(), st.text(st.characters(blacklist_categories=["Cs"]), max_size=20))
        ),
        payload_type=draw(st.integers(0, 255)),
        protocol=draw(st.integers(0, 255)),
        correlation_id=draw(st.one_of(st.none(), st.binary(max_size=20))),
    )


@SETTINGS
@given(packets())
def test_every_encoded_packet_takes_the_fast_path(data: bytes) -> None:
    assert check(data)


@SETTINGS
@given(packets(), st.data())
def test_mutated_packets_agree_or_fall_back(data: bytes, draw: st.DataObject) -> None:
    buf = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 4))):
        op = draw.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = draw.draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[i] = draw.draw(st.integers(0, 255))
        elif op == "cut":
            del buf[i:]
        else:
            buf[i:i] = draw.draw(st.binary(min_size=1, max_size=12))
    check(bytes(buf))


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data: bytes) -> None:
    check(b"HEP3" + data)
