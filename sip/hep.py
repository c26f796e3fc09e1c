"""HEPv3 (Homer Encapsulation Protocol), the framing Kamailio's siptrace uses.

A packet is ``"HEP3"``, a u16 total length (the 6-byte header included), then
chunks: vendor u16, type u16, length u16 (the 6-byte chunk header included),
value. All integers are big-endian. Every length is checked against the bytes
actually there before anything is read.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import struct
from dataclasses import dataclass

from .errors import HepParseError

__all__ = ["HEP_MAGIC", "HepPacket", "decode_hep", "encode_hep", "hep_sip_fields"]

HEP_MAGIC = b"HEP3"
MAX_HEP_PACKET = 65535  # 16-bit total length field
_HEADER = 6  # "HEP3" + u16 total length; also the size of a chunk header

# Generic chunk types (vendor 0), from the HEPv3 draft and Kamailio's sipcapture.
IP_FAMILY = 1
IP_PROTOCOL = 2
IPV4_SRC = 3
IPV4_DST = 4
IPV6_SRC = 5
IPV6_DST = 6
SRC_PORT = 7
DST_PORT = 8
TIMESTAMP_SEC = 9
TIMESTAMP_USEC = 10
PAYLOAD_TYPE = 11
CAPTURE_ID = 12
AUTH_KEY = 14
PAYLOAD = 15
COMPRESSED_PAYLOAD = 16
CORRELATION_ID = 17

AF_INET = 2
AF_INET6 = 10
PAYLOAD_SIP = 1

_U8 = struct.Struct("!B")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_CHUNK = struct.Struct("!HHH")
# value size of the fixed-size chunks
_FIXED = {
    IP_FAMILY: 1,
    IP_PROTOCOL: 1,
    IPV4_SRC: 4,
    IPV4_DST: 4,
    IPV6_SRC: 16,
    IPV6_DST: 16,
    SRC_PORT: 2,
    DST_PORT: 2,
    TIMESTAMP_SEC: 4,
    TIMESTAMP_USEC: 4,
    PAYLOAD_TYPE: 1,
    CAPTURE_ID: 4,
}


@dataclass(slots=True)
class HepPacket:
    """A decoded HEPv3 packet.

    ``src``/``dst`` are ``(ip, port)`` (``("", 0)`` when the sender left them out),
    ``timestamp`` is UNIX seconds with microseconds, ``payload_type`` 1 is SIP,
    ``protocol`` is the IP protocol number (17 UDP, 6 TCP), 0 when absent.
    """

    payload: bytes
    payload_type: int = 0
    src: tuple[str, int] = ("", 0)
    dst: tuple[str, int] = ("", 0)
    timestamp: float = 0.0
    capture_id: int | None = None
    auth_key: str | None = None
    protocol: int = 0
    family: int = 0
    correlation_id: bytes | None = None


def _ipv4(b: bytes) -> str:
    return f"{b[0]}.{b[1]}.{b[2]}.{b[3]}"


@functools.lru_cache(maxsize=4096)
def _ipv6(b: bytes) -> str:
    # ipaddress is slow (~5 µs); the few addresses a sniffer sees repeat endlessly.
    return str(ipaddress.IPv6Address(b))


def decode_hep(data: bytes) -> HepPacket:
    """Decode one HEPv3 packet; raise :class:`sip.HepParseError` if it is malformed.

    Bytes after the announced total length are ignored. Vendor-specific chunks
    (vendor id not 0) and unknown generic chunks are skipped; when a chunk type
    repeats, the last one wins.
    """
    size = len(data)
    if size < _HEADER or data[:4] != HEP_MAGIC:
        raise HepParseError("not a HEPv3 packet")
    total = (data[4] << 8) | data[5]
    if total < _HEADER or total > size:
        raise HepParseError(f"HEP total length {total} out of bounds (have {size} bytes)")
    # Integer chunks (types 1, 2, 7-12) land in ints[type]; -1 means absent.
    ints = [-1] * 13
    addrs: list[bytes | None] = [None] * 4  # types 3, 4, 5, 6
    payload: bytes | None = None
    auth_key: str | None = None
    correlation_id: bytes | None = None
    fixed_get = _FIXED.get
    unpack_chunk = _CHUNK.unpack_from
    pos = _HEADER
    while pos < total:
        if pos + _HEADER > total:
            raise HepParseError("truncated HEP chunk header")
        vendor, ctype, clen = unpack_chunk(data, pos)
        if clen < _HEADER or pos + clen > total:
            raise HepParseError(f"HEP chunk length {clen} out of bounds")
        start = pos + _HEADER
        pos += clen
        if vendor != 0:
            continue
        fixed = fixed_get(ctype)
        if fixed is not None:
            if clen - _HEADER != fixed:
                raise HepParseError(
                    f"HEP chunk type {ctype} has {clen - _HEADER} bytes, expected {fixed}"
                )
            if 3 <= ctype <= 6:
                addrs[ctype - 3] = data[start:pos]
            else:
                ints[ctype] = int.from_bytes(data[start:pos], "big")
        elif ctype == PAYLOAD:
            payload = data[start:pos]
        elif ctype == AUTH_KEY:
            # Kamailio sends the key without a terminating NUL; some agents add one.
            auth_key = data[start:pos].rstrip(b"\x00").decode("utf-8", "replace")
        elif ctype == CORRELATION_ID:
            correlation_id = data[start:pos]
        elif ctype == COMPRESSED_PAYLOAD:
            raise HepParseError("compressed HEP payloads are not supported")
    if payload is None:
        raise HepParseError("HEP packet without a payload chunk")
    useconds = ints[TIMESTAMP_USEC]
    if useconds > 999_999:
        raise HepParseError("HEP microseconds out of range")
    # an IPv6 chunk wins over an IPv4 one of the same side
    v4src, v4dst, v6src, v6dst = addrs
    src_ip = _ipv6(v6src) if v6src else _ipv4(v4src) if v4src else ""
    dst_ip = _ipv6(v6dst) if v6dst else _ipv4(v4dst) if v4dst else ""
    capture_id = ints[CAPTURE_ID]
    return HepPacket(
        payload,
        max(ints[PAYLOAD_TYPE], 0),
        (src_ip, max(ints[SRC_PORT], 0)),
        (dst_ip, max(ints[DST_PORT], 0)),
        max(ints[TIMESTAMP_SEC], 0) + max(useconds, 0) / 1e6,
        None if capture_id < 0 else capture_id,
        auth_key,
        max(ints[IP_PROTOCOL], 0),
        max(ints[IP_FAMILY], 0),
        correlation_id,
    )


# The run of fixed-size generic chunks every agent sends first (Kamailio: types 1-12 in
# order), matched in C: a chunk whose length is not its type's size ends the run. A
# repeated type keeps its last value, as in decode_hep. Groups: total length, usec,
# payload type.
_FIXED_RUN = re.compile(
    rb"HEP3(..)(?:\x00\x00(?:"
    rb"\x00[\x01\x02]\x00\x07.|\x00[\x03\x04\x09\x0c]\x00\x0a.{4}|\x00[\x05\x06]\x00\x16.{16}"
    rb"|\x00[\x07\x08]\x00\x08..|\x00\x0a\x00\x0a(.{4})|\x00\x0b\x00\x07(.)))*",
    re.DOTALL,
)
_MAX_USEC = (999_999).to_bytes(4, "big")  # big-endian bytes compare like the numbers


def hep_sip_fields(data: bytes) -> tuple[int, str | None, bytes] | None:
    """``(payload_type, auth_key, payload)`` of a HEPv3 packet, read the way
    :func:`decode_hep` reads them but without the addresses and times.

    None when the packet is not of the usual shape (fixed-size chunks, then the auth
    key, correlation id, vendor and unknown chunks, and the payload; anything else, and
    anything malformed): call :func:`decode_hep` for the answer or the error then.
    The sniffer's per-datagram path; never raises.
    """
    m = _FIXED_RUN.match(data)
    if m is None:
        return None
    total_bytes, usec, ptype = m.groups()
    total = (total_bytes[0] << 8) | total_bytes[1]
    pos = m.end()
    if total > len(data) or pos > total or (usec is not None and usec > _MAX_USEC):
        return None
    payload: bytes | None = None
    auth_key: str | None = None
    unpack_chunk = _CHUNK.unpack_from
    while pos < total:
        if pos + _HEADER > total:
            return None
        vendor, ctype, clen = unpack_chunk(data, pos)
        end = pos + clen
        if clen < _HEADER or end > total:
            return None
        if vendor == 0:
            if ctype == PAYLOAD:
                payload = data[pos + _HEADER : end]
            elif ctype == AUTH_KEY:
                auth_key = data[pos + _HEADER : end].rstrip(b"\x00").decode("utf-8", "replace")
            elif ctype in _FIXED or ctype == COMPRESSED_PAYLOAD:
                return None  # out of the usual order, or an error: decode_hep decides
        pos = end
    if payload is None:
        return None
    return (0 if ptype is None else ptype[0]), auth_key, payload


def _chunk(ctype: int, value: bytes) -> bytes:
    return _CHUNK.pack(0, ctype, _HEADER + len(value)) + value


def encode_hep(
    payload: bytes,
    *,
    src: tuple[str, int],
    dst: tuple[str, int],
    timestamp: float = 0.0,
    capture_id: int | None = None,
    auth_key: str | None = None,
    payload_type: int = PAYLOAD_SIP,
    protocol: int = 17,
    correlation_id: bytes | None = None,
) -> bytes:
    """Build a HEPv3 packet (for tests and load tools).

    ``src`` and ``dst`` must be both IPv4 or both IPv6. ``timestamp`` is UNIX
    seconds (the library has no clock: pass ``time.time()``). Raises ValueError
    for arguments that cannot be encoded.
    """
    if len(payload) + _HEADER > MAX_HEP_PACKET:
        raise ValueError(f"HEP payload of {len(payload)} bytes is over {MAX_HEP_PACKET}")
    src_addr = ipaddress.ip_address(src[0])
    dst_addr = ipaddress.ip_address(dst[0])
    if src_addr.version != dst_addr.version:
        raise ValueError("src and dst must be the same IP version")
    v4 = src_addr.version == 4
    seconds = int(timestamp)
    useconds = min(round((timestamp - seconds) * 1e6), 999_999)
    parts = [
        _chunk(IP_FAMILY, _U8.pack(AF_INET if v4 else AF_INET6)),
        _chunk(IP_PROTOCOL, _U8.pack(protocol)),
        _chunk(IPV4_SRC if v4 else IPV6_SRC, src_addr.packed),
        _chunk(IPV4_DST if v4 else IPV6_DST, dst_addr.packed),
        _chunk(SRC_PORT, _U16.pack(src[1])),
        _chunk(DST_PORT, _U16.pack(dst[1])),
        _chunk(TIMESTAMP_SEC, _U32.pack(seconds)),
        _chunk(TIMESTAMP_USEC, _U32.pack(useconds)),
        _chunk(PAYLOAD_TYPE, _U8.pack(payload_type)),
    ]
    if capture_id is not None:
        parts.append(_chunk(CAPTURE_ID, _U32.pack(capture_id)))
    if auth_key is not None:
        parts.append(_chunk(AUTH_KEY, auth_key.encode()))
    if correlation_id is not None:
        parts.append(_chunk(CORRELATION_ID, correlation_id))
    parts.append(_chunk(PAYLOAD, payload))
    body = b"".join(parts)
    total = _HEADER + len(body)
    if total > MAX_HEP_PACKET:
        raise ValueError(f"HEP packet of {total} bytes is over {MAX_HEP_PACKET}")
    return HEP_MAGIC + _U16.pack(total) + body
