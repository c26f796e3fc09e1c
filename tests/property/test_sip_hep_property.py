"""Hypothesis: HEPv3 encode/decode round trip; hostile bytes only raise HepParseError."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sip

SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=int(os.environ.get("SIP_HYPOTHESIS_EXAMPLES", "200")),
)

ports = st.integers(0, 65535)
v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).map(str)
addresses = st.one_of(st.tuples(v4, v4), st.tuples(v6, v6))


@SETTINGS
@given(
    payload=st.binary(max_size=2000),
    addrs=addresses,
    sport=ports,
    dport=ports,
    seconds=st.integers(0, 2**32 - 1),
    usec=st.integers(0, 999_999),
    capture_id=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    auth_key=st.one_of(
        st.none(), st.text(st.characters(min_codepoint=1, blacklist_categories=["Cs"]), max_size=30)
    ),
    payload_type=st.integers(0, 255),
    protocol=st.integers(0, 255),
    correlation_id=st.one_of(st.none(), st.binary(max_size=40)),
)
def test_encode_then_decode_round_trips(
    payload: bytes,
    addrs: tuple[str, str],
    sport: int,
    dport: int,
    seconds: int,
    usec: int,
    capture_id: int | None,
    auth_key: str | None,
    payload_type: int,
    protocol: int,
    correlation_id: bytes | None,
) -> None:
    data = sip.encode_hep(
        payload,
        src=(addrs[0], sport),
        dst=(addrs[1], dport),
        timestamp=seconds + usec / 1e6,
        capture_id=capture_id,
        auth_key=auth_key,
        payload_type=payload_type,
        protocol=protocol,
        correlation_id=correlation_id,
    )
    p = sip.decode_hep(data)
    assert p.payload == payload
    assert p.src == (addrs[0], sport) and p.dst == (addrs[1], dport)
    assert abs(p.timestamp - (seconds + usec / 1e6)) < 2e-6
    assert (p.capture_id, p.auth_key, p.payload_type, p.protocol) == (
        capture_id,
        auth_key,
        payload_type,
        protocol,
    )
    assert p.correlation_id == correlation_id


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_hep_parse_error(data: bytes) -> None:
    for candidate in (data, b"HEP3" + data):
        try:
            sip.decode_hep(candidate)
        except sip.HepParseError:
            pass


@SETTINGS
@given(
    st.binary(max_size=100),
    st.lists(
        st.tuples(st.integers(0, 400), st.binary(min_size=1, max_size=3)), min_size=1, max_size=5
    ),
)
def test_mutated_packets_raise_only_hep_parse_error(
    payload: bytes, edits: list[tuple[int, bytes]]
) -> None:
    data = bytearray(
        sip.encode_hep(payload, src=("10.0.0.1", 5060), dst=("10.0.0.2", 9060), capture_id=1)
    )
    for pos, chunk in edits:
        pos %= len(data)
        data[pos : pos + len(chunk)] = chunk
    try:
        p = sip.decode_hep(bytes(data))
    except sip.HepParseError:
        return
    assert isinstance(p.payload, bytes)
