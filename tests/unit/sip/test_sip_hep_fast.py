"""sip.hep_sip_fields: the sniffer's one-match HEP path agrees with decode_hep or says None."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import sip
from sip import hep

DATA = Path(__file__).resolve().parents[2] / "data" / "sip"
V4 = {"src": ("10.0.0.1", 5060), "dst": ("10.0.0.2", 5060)}
V6 = {"src": ("2001:db8::1", 5060), "dst": ("2001:db8::2", 5060)}


def chunk(ctype: int, value: bytes, vendor: int = 0) -> bytes:
    return struct.pack("!HHH", vendor, ctype, 6 + len(value)) + value


def packet(*chunks: bytes, total: int | None = None, tail: bytes = b"") -> bytes:
    body = b"".join(chunks)
    size = 6 + len(body) if total is None else total
    return b"HEP3" + struct.pack("!H", size) + body + tail


def agrees(data: bytes) -> tuple[int, str | None, bytes]:
    fields = sip.hep_sip_fields(data)
    assert fields is not None
    p = sip.decode_hep(data)
    assert fields == (p.payload_type, p.auth_key, p.payload)
    return fields


FIXED = [
    chunk(hep.IP_FAMILY, b"\x02"),
    chunk(hep.IP_PROTOCOL, b"\x11"),
    chunk(hep.IPV4_SRC, bytes(4)),
    chunk(hep.IPV4_DST, bytes(4)),
    chunk(hep.SRC_PORT, b"\x13\xc4"),
    chunk(hep.DST_PORT, b"\x13\xc4"),
    chunk(hep.TIMESTAMP_SEC, bytes(4)),
    chunk(hep.TIMESTAMP_USEC, b"\x00\x0f\x42\x3f"),  # 999999, the largest allowed
    chunk(hep.PAYLOAD_TYPE, b"\x01"),
    chunk(hep.CAPTURE_ID, bytes(4)),
]


def test_kamailio_siptrace_captures_take_the_fast_path() -> None:
    for name in ("kamailio_siptrace_register.hep", "kamailio_siptrace_200ok.hep"):
        ptype, key, payload = agrees((DATA / name).read_bytes())
        assert ptype == 1 and key is None and payload.startswith((b"REGISTER", b"SIP/2.0"))


@pytest.mark.parametrize("addrs", [V4, V6])
def test_encoded_packets_with_every_optional_chunk(addrs: dict[str, tuple[str, int]]) -> None:
    data = sip.encode_hep(
        b"REGISTER sip:a SIP/2.0\r\n\r\n", timestamp=1.5, capture_id=7, auth_key="s3cret",
        correlation_id=b"corr", payload_type=1, **addrs,
    )  # fmt: skip
    assert agrees(data) == (1, "s3cret", b"REGISTER sip:a SIP/2.0\r\n\r\n")


def test_auth_key_with_nul_and_bad_utf8_reads_as_decode_hep_reads_it() -> None:
    assert (
        agrees(packet(*FIXED, chunk(hep.AUTH_KEY, b"k\xff\x00\x00"), chunk(hep.PAYLOAD, b"x")))[1]
        == "k\ufffd"
    )


def test_vendor_unknown_and_repeated_chunks() -> None:
    data = packet(
        *FIXED,
        chunk(hep.PAYLOAD_TYPE, b"\x05"),  # repeated in the run: the last wins
        chunk(99, b"vendor stuff", vendor=0x0020),
        chunk(200, b"unknown generic"),
        chunk(hep.PAYLOAD, b"first"),
        chunk(hep.AUTH_KEY, b"a"),
        chunk(hep.AUTH_KEY, b"b"),
        chunk(hep.PAYLOAD, b"second"),
    )
    assert agrees(data) == (5, "b", b"second")


def test_no_fixed_chunks_and_bytes_after_the_total() -> None:
    assert agrees(packet(chunk(hep.PAYLOAD, b"p"), tail=b"garbage")) == (0, None, b"p")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"HEP2\x00\x06", id="not-hep3"),
        pytest.param(b"HEP3\x00", id="no-total"),
        pytest.param(packet(*FIXED, chunk(hep.PAYLOAD, b"x"), total=999), id="total-past-end"),
        pytest.param(packet(*FIXED, chunk(hep.PAYLOAD, b"x"), total=20), id="total-inside-run"),
        pytest.param(packet(*FIXED, b"\x00\x00\x00"), id="truncated-chunk-header"),
        pytest.param(packet(*FIXED, struct.pack("!HHH", 0, 15, 3)), id="chunk-length-under-6"),
        pytest.param(packet(*FIXED, struct.pack("!HHH", 0, 15, 60) + b"x"), id="chunk-past-total"),
        pytest.param(packet(*FIXED), id="no-payload"),
        pytest.param(packet(*FIXED, chunk(hep.COMPRESSED_PAYLOAD, b"z")), id="compressed"),
        pytest.param(
            packet(chunk(hep.PAYLOAD, b"x"), chunk(hep.IP_FAMILY, b"\x02")),
            id="fixed-after-payload",
        ),
        pytest.param(
            packet(chunk(hep.IP_FAMILY, b"\x02\x00"), chunk(hep.PAYLOAD, b"x")),
            id="wrong-fixed-size",
        ),
        pytest.param(
            packet(chunk(hep.TIMESTAMP_USEC, b"\x00\x0f\x42\x40"), chunk(hep.PAYLOAD, b"x")),
            id="usec-1000000",
        ),
    ],
)
def test_unusual_or_malformed_packets_are_left_to_decode_hep(data: bytes) -> None:
    assert sip.hep_sip_fields(data) is None


def test_what_it_leaves_to_decode_hep_may_still_be_valid() -> None:
    # a fixed chunk after the payload is legal HEP: decode_hep reads it
    data = packet(chunk(hep.PAYLOAD, b"x"), chunk(hep.PAYLOAD_TYPE, b"\x01"))
    assert sip.hep_sip_fields(data) is None
    assert sip.decode_hep(data).payload_type == 1
