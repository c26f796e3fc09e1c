"""HEPv3 decode/encode: round trips, the chunks Kamailio sends, every bounds check."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import sip
from sip import hep

SIP_BYTES = b"REGISTER sip:example.com SIP/2.0\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\n\r\n"


def chunk(ctype: int, value: bytes, vendor: int = 0, length: int | None = None) -> bytes:
    return struct.pack("!HHH", vendor, ctype, 6 + len(value) if length is None else length) + value


def packet(*chunks: bytes, total: int | None = None) -> bytes:
    body = b"".join(chunks)
    return b"HEP3" + struct.pack("!H", 6 + len(body) if total is None else total) + body


def test_round_trip_ipv4_with_everything() -> None:
    data = sip.encode_hep(
        SIP_BYTES,
        src=("192.0.2.1", 5060),
        dst=("127.0.0.1", 9060),
        timestamp=1764147600.25,
        capture_id=2001,
        auth_key="s3cret",
        correlation_id=b"corr-1",
    )
    p = sip.decode_hep(data)
    assert p.payload == SIP_BYTES
    assert (p.payload_type, p.protocol, p.family) == (1, 17, hep.AF_INET)
    assert p.src == ("192.0.2.1", 5060) and p.dst == ("127.0.0.1", 9060)
    assert p.timestamp == pytest.approx(1764147600.25)
    assert (p.capture_id, p.auth_key, p.correlation_id) == (2001, "s3cret", b"corr-1")
    assert sip.parse_message(p.payload).call_id == "x"


def test_round_trip_ipv6_minimal() -> None:
    data = sip.encode_hep(SIP_BYTES, src=("2001:db8::1", 5061), dst=("::1", 9060), protocol=6)
    p = sip.decode_hep(data)
    assert p.src == ("2001:db8::1", 5061) and p.dst == ("::1", 9060)
    assert (p.family, p.protocol, p.timestamp) == (hep.AF_INET6, 6, 0.0)
    assert p.capture_id is None and p.auth_key is None and p.correlation_id is None


def test_trailing_bytes_after_total_length_are_ignored() -> None:
    data = sip.encode_hep(SIP_BYTES, src=("10.0.0.1", 1), dst=("10.0.0.2", 2))
    assert sip.decode_hep(data + b"junk").payload == SIP_BYTES


def test_vendor_and_unknown_chunks_are_skipped_and_defaults_apply() -> None:
    data = packet(
        chunk(99, b"\x01\x02", vendor=0x0022),
        chunk(hep.PAYLOAD, b"x", vendor=7),
        chunk(200, b"unknown generic"),
        chunk(hep.PAYLOAD, SIP_BYTES),
    )
    p = sip.decode_hep(data)
    assert p.payload == SIP_BYTES
    assert (p.src, p.dst, p.payload_type, p.protocol) == (("", 0), ("", 0), 0, 0)


def test_auth_key_with_a_trailing_nul() -> None:
    data = packet(chunk(hep.AUTH_KEY, b"key\x00"), chunk(hep.PAYLOAD, b"p"))
    assert sip.decode_hep(data).auth_key == "key"


def test_empty_payload_chunk_is_a_payload() -> None:
    assert sip.decode_hep(packet(chunk(hep.PAYLOAD, b""))).payload == b""


BAD = [
    pytest.param(b"", id="empty"),
    pytest.param(b"HEP3\x00", id="short-header"),
    pytest.param(b"HEP2\x00\x06", id="hepv2-magic"),
    pytest.param(b"EEP3" + b"\x00\x06", id="bad-magic"),
    pytest.param(packet(total=5), id="total-below-header"),
    pytest.param(packet(chunk(hep.PAYLOAD, b"x"), total=100), id="total-past-end"),
    pytest.param(packet(), id="no-chunks-no-payload"),
    pytest.param(packet(chunk(hep.PAYLOAD, b"x")) [:-1] + b"", id="cut-in-payload"),
    pytest.param(packet(b"\x00\x00\x00"), id="truncated-chunk-header"),
    pytest.param(packet(chunk(hep.PAYLOAD, b"x", length=5)), id="chunk-length-below-6"),
    pytest.param(packet(chunk(hep.PAYLOAD, b"x", length=60)), id="chunk-past-total"),
    pytest.param(packet(chunk(hep.IPV4_SRC, b"\x01\x02\x03"), chunk(hep.PAYLOAD, b"x")), id="ipv4-3-bytes"),
    pytest.param(packet(chunk(hep.IPV6_DST, b"\x00" * 4), chunk(hep.PAYLOAD, b"x")), id="ipv6-4-bytes"),
    pytest.param(packet(chunk(hep.SRC_PORT, b"\x01"), chunk(hep.PAYLOAD, b"x")), id="port-1-byte"),
    pytest.param(packet(chunk(hep.PAYLOAD_TYPE, b""), chunk(hep.PAYLOAD, b"x")), id="payload-type-empty"),
    pytest.param(packet(chunk(hep.CAPTURE_ID, b"\x00\x01"), chunk(hep.PAYLOAD, b"x")), id="capture-id-2-bytes"),
    pytest.param(packet(chunk(hep.COMPRESSED_PAYLOAD, b"x\x9c")), id="compressed"),
    pytest.param(packet(chunk(hep.TIMESTAMP_USEC, struct.pack("!I", 1_000_000)), chunk(hep.PAYLOAD, b"x")), id="usec-too-big"),
]  # fmt: skip


@pytest.mark.parametrize("data", BAD)
def test_malformed_hep_raises_hep_parse_error(data: bytes) -> None:
    with pytest.raises(sip.HepParseError):
        sip.decode_hep(data)


def test_hep_parse_error_is_a_sip_parse_error() -> None:
    assert issubclass(sip.HepParseError, sip.SipParseError)
    assert issubclass(sip.SipParseError, ValueError)


def test_every_fixed_chunk_is_decoded() -> None:
    data = packet(
        chunk(hep.IP_FAMILY, b"\x02"),
        chunk(hep.IP_PROTOCOL, b"\x11"),
        chunk(hep.IPV4_SRC, bytes([10, 1, 2, 3])),
        chunk(hep.IPV4_DST, bytes([10, 3, 2, 1])),
        chunk(hep.IPV6_SRC, b"\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x01"),
        chunk(hep.IPV6_DST, b"\x00" * 15 + b"\x01"),
        chunk(hep.SRC_PORT, struct.pack("!H", 5060)),
        chunk(hep.DST_PORT, struct.pack("!H", 9060)),
        chunk(hep.TIMESTAMP_SEC, struct.pack("!I", 100)),
        chunk(hep.TIMESTAMP_USEC, struct.pack("!I", 500_000)),
        chunk(hep.PAYLOAD_TYPE, b"\x01"),
        chunk(hep.CAPTURE_ID, struct.pack("!I", 7)),
        chunk(hep.PAYLOAD, b"p"),
    )
    p = sip.decode_hep(data)
    # the last address chunk of each side wins
    assert p.src == ("2001:db8::1", 5060) and p.dst == ("::1", 9060)
    assert (p.family, p.protocol, p.timestamp, p.payload_type, p.capture_id) == (2, 17, 100.5, 1, 7)


def test_encode_refuses_what_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="same IP version"):
        sip.encode_hep(b"x", src=("10.0.0.1", 1), dst=("::1", 2))
    with pytest.raises(ValueError, match="over 65535"):
        sip.encode_hep(b"x" * 65530, src=("10.0.0.1", 1), dst=("10.0.0.2", 2))
    with pytest.raises(ValueError, match="over 65535"):
        sip.encode_hep(b"x" * 65500, src=("10.0.0.1", 1), dst=("10.0.0.2", 2))
    with pytest.raises(ValueError):
        sip.encode_hep(b"x", src=("not an ip", 1), dst=("10.0.0.2", 2))


def test_encode_rounds_microseconds_below_a_second() -> None:
    p = sip.decode_hep(
        sip.encode_hep(b"x", src=("10.0.0.1", 1), dst=("10.0.0.2", 2), timestamp=5.9999999)
    )
    assert p.timestamp == pytest.approx(5.999999)


CORPUS = Path(__file__).resolve().parents[2] / "data" / "sip"


@pytest.mark.parametrize(
    ("name", "src_port", "kind"),
    [
        ("kamailio_siptrace_register.hep", 35383, sip.Request),
        ("kamailio_siptrace_200ok.hep", 51913, sip.Response),
    ],
)
def test_real_kamailio_siptrace_packets(name: str, src_port: int, kind: type) -> None:
    # Captured from Kamailio 5.6.3 siptrace (hep_mode_on, hep_version 3, hep_capture_id
    # 2001, no auth key) mirroring a sipp REGISTER and its 200 OK.
    p = sip.decode_hep((CORPUS / name).read_bytes())
    assert p.src == ("127.0.0.1", src_port)
    assert (p.payload_type, p.protocol, p.family, p.capture_id) == (1, 17, hep.AF_INET, 2001)
    assert p.auth_key is None and p.correlation_id is None
    assert p.timestamp > 1.7e9
    msg = sip.parse_message(p.payload)
    assert isinstance(msg, kind)
    assert msg.call_id == "1-332@127.0.0.1"
    assert msg.cseq == (1, "REGISTER")
    (contact,) = msg.contacts()
    assert contact.uri.params["pn-provider"] == "apns"
    assert contact.uri.params["pn-param"] == "ABCD123456.org.linphone.phone.voip"
