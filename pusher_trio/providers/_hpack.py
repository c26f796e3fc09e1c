"""HPACK for our HTTP/2 client (RFC 7541): a stateless encoder and a caching decoder.

hpack's `Encoder` searches and updates the dynamic table and Huffman-codes every
field of every request: ~90 µs per APNs request, the largest single cost of the send
path. Our requests repeat the same fields (method, scheme, authority, topic, push
type, priority, bearer) with a few that change every time (path, apns-id, expiration).
This encoder never inserts into the dynamic table, so the encoding of a field does not
depend on the connection's history and can be cached: repeated fields are one dict
lookup, changing ones a literal without indexing (RFC 7541 §6.2.2) with a raw string.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hpack import Decoder
from hpack.exceptions import HPACKDecodingError, InvalidTableSizeError, OversizedHeaderListError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import (
    HUFFMAN_COMPLETE,
    HUFFMAN_EMIT_SYMBOL,
    HUFFMAN_FAIL,
    HUFFMAN_TABLE,
)
from hpack.table import HeaderTable

# Fields that change with every request (the token in the path, the ids): encoded each
# time as raw strings, never cached. Everything else repeats (apns-expiration within a
# second, content-length among a few sizes, the bearer for 40 minutes) and is cached.
VOLATILE = frozenset({b":path", b"apns-id", b"apns-collapse-id"})
CACHE_LIMIT = 1024

_HUFFMAN = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
_STATIC: tuple[tuple[bytes, bytes], ...] = ((b"", b""), *HeaderTable.STATIC_TABLE)  # 1-based
_STATIC_LEN = len(HeaderTable.STATIC_TABLE)
_STATIC_FULL: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAME: dict[bytes, int] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _STATIC_FULL.setdefault((_name, _value), _index)
    _STATIC_NAME.setdefault(_name, _index)


def encode_integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """RFC 7541 §5.1; `first` carries the pattern bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_string(data: bytes, huffman: bool) -> bytes:
    """RFC 7541 §5.2: Huffman only when it is shorter."""
    if huffman:
        coded = _HUFFMAN.encode(data)
        if len(coded) < len(data):
            return encode_integer(len(coded), 7, 0x80) + coded
    return encode_integer(len(data), 7) + data


def encode_field(name: bytes, value: bytes, huffman: bool = True) -> bytes:
    """Indexed when the static table has the field, else a literal without indexing."""
    index = _STATIC_FULL.get((name, value))
    if index is not None:
        return encode_integer(index, 7, 0x80)  # §6.1 indexed header field
    name_index = _STATIC_NAME.get(name)
    if name_index is not None:
        return encode_integer(name_index, 4) + encode_string(value, huffman)  # §6.2.2
    return b"\x00" + encode_string(name, huffman) + encode_string(value, huffman)


class StatelessEncoder:
    """The encoder of `h2wire.ClientConnection` (client side; hpack.Encoder's interface)."""

    def __init__(self) -> None:
        self._table_size = 4096
        self._pending_update: int | None = None
        self._cache: dict[tuple[bytes, bytes], bytes] = {}

    @property
    def header_table_size(self) -> int:
        return self._table_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        # RFC 7541 §4.2: a smaller maximum is acknowledged with a size update; our table
        # is always empty, so the update only reports the new maximum.
        if value < self._table_size:
            self._pending_update = value
        self._table_size = value

    def encode(self, headers: Iterable[tuple[bytes, bytes]], huffman: bool = True) -> bytes:
        out = bytearray()
        if self._pending_update is not None:
            out += encode_integer(self._pending_update, 5, 0x20)  # §6.3
            self._pending_update = None
        cache = self._cache
        for name, value in headers:
            block = cache.get((name, value))
            if block is None:
                if name in VOLATILE:
                    block = encode_field(name, value, huffman=False)
                else:
                    block = encode_field(name, value, huffman)
                    if len(cache) >= CACHE_LIMIT:
                        cache.clear()
                    cache[(name, value)] = block
            out += block
        return bytes(out)


# Huffman decoding a byte at a time (RFC 7541 §5.2, Appendix B). hpack's table steps
# through 4-bit nibbles; rows of 256 byte transitions are built from it, per state, the
# first time a state is met (a few dozen states cover real traffic), which halves the
# Python loop iterations and removes the flag tests from the common path.
_HuffmanRow = list[tuple[int, bytes, bool] | None]
_HUFFMAN_ROWS: list[_HuffmanRow | None] = [None] * 256


def _huffman_row(state: int) -> _HuffmanRow:
    row: _HuffmanRow = []
    for byte in range(256):
        out = bytearray()
        current = state
        complete = False
        failed = False
        for nibble in (byte >> 4, byte & 0x0F):
            current, flags, symbol = HUFFMAN_TABLE[current * 16 + nibble]
            if flags & HUFFMAN_FAIL:
                failed = True
                break
            if flags & HUFFMAN_EMIT_SYMBOL:
                out.append(symbol)
            complete = bool(flags & HUFFMAN_COMPLETE)
        row.append(None if failed else (current, bytes(out), complete))
    _HUFFMAN_ROWS[state] = row
    return row


def decode_huffman(data: bytes) -> bytes:
    """Same result and errors as `hpack.huffman_table.decode_huffman`, faster."""
    if not data:
        return b""
    rows = _HUFFMAN_ROWS
    row = rows[0] or _huffman_row(0)
    out = bytearray()
    complete = False
    for byte in data:
        entry = row[byte]
        if entry is None:
            raise HPACKDecodingError("Invalid Huffman string")
        state, symbols, complete = entry
        if symbols:
            out += symbols
        row = rows[state] or _huffman_row(state)
    if not complete:
        raise HPACKDecodingError("Incomplete Huffman string")
    return bytes(out)


def _integer(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """RFC 7541 §5.1 from data[pos]; returns (value, next position)."""
    limit = (1 << prefix_bits) - 1
    value = data[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        if pos >= len(data):
            raise HPACKDecodingError("truncated integer")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise HPACKDecodingError("integer too large")


class CachingDecoder(Decoder):
    """`hpack.Decoder` (same dynamic table, same limits) that caches Huffman strings.

    Responses repeat most header strings (`server`, `date`, `content-type`...), and
    Huffman decoding in pure Python is the most expensive part of reading a response.
    """

    def __init__(self) -> None:
        super().__init__()
        self._strings: dict[bytes, bytes] = {}

    def _string(self, data: bytes, pos: int) -> tuple[bytes, int]:
        huffman = data[pos] & 0x80
        length, pos = _integer(data, pos, 7)
        end = pos + length
        if end > len(data):
            raise HPACKDecodingError("truncated string")
        raw = data[pos:end]
        if not huffman:
            return raw, end
        decoded = self._strings.get(raw)
        if decoded is None:
            decoded = decode_huffman(raw)
            if len(self._strings) >= CACHE_LIMIT:
                self._strings.clear()
            self._strings[raw] = decoded
        return decoded, end

    def decode(self, data: bytes, raw: bool = False) -> list[Any]:
        # One loop with the common cases inline (one-byte integers, static-table names,
        # cached Huffman strings): function calls are most of the cost in Python.
        table = self.header_table
        strings = self._strings
        headers: list[tuple[bytes, bytes]] = []
        size = 0
        pos = 0
        end = len(data)
        seen_field = False
        try:
            while pos < end:
                first = data[pos]
                if first & 0x80:  # §6.1 indexed
                    index = first & 0x7F
                    if index == 0x7F:
                        index, pos = _integer(data, pos, 7)
                    else:
                        pos += 1
                    if index == 0:
                        raise HPACKDecodingError("index 0")
                    name, value = (
                        _STATIC[index] if index <= _STATIC_LEN else table.get_by_index(index)
                    )
                else:
                    if first & 0x40:  # §6.2.1 literal with incremental indexing
                        prefix = 0x3F
                    elif first & 0x20:  # §6.3 dynamic table size update
                        if seen_field:
                            raise HPACKDecodingError("table size update after a header field")
                        new_size, pos = _integer(data, pos, 5)
                        if new_size > self.max_allowed_table_size:
                            raise InvalidTableSizeError(f"table size {new_size} over the limit")
                        self.header_table_size = new_size
                        continue
                    else:  # §6.2.2 / §6.2.3 literal without indexing / never indexed
                        prefix = 0x0F
                    index = first & prefix
                    if index == prefix:
                        index, pos = _integer(data, pos, prefix.bit_length())
                    else:
                        pos += 1
                    if index:
                        name = (
                            _STATIC[index][0]
                            if index <= _STATIC_LEN
                            else table.get_by_index(index)[0]
                        )
                    else:
                        name, pos = self._string(data, pos)
                    # the value (§5.2), inline
                    byte = data[pos]
                    length = byte & 0x7F
                    if length == 0x7F:
                        length, pos = _integer(data, pos, 7)
                    else:
                        pos += 1
                    stop = pos + length
                    if stop > end:
                        raise HPACKDecodingError("truncated string")
                    value = data[pos:stop]
                    pos = stop
                    if byte & 0x80:
                        coded = value
                        cached = strings.get(coded)
                        if cached is None:
                            cached = decode_huffman(coded)
                            if len(strings) >= CACHE_LIMIT:
                                strings.clear()
                            strings[coded] = cached
                        value = cached
                    if prefix == 0x3F:
                        table.add(name, value)
                seen_field = True
                size += len(name) + len(value) + 32
                if size > self.max_header_list_size:
                    raise OversizedHeaderListError(f"header list over {self.max_header_list_size}")
                headers.append((name, value))
        except IndexError as error:
            raise HPACKDecodingError(f"truncated header block: {error}") from error
        if raw:
            return headers
        return [(name.decode(), value.decode()) for name, value in headers]
