"""HPACK for our HTTP/2 client (RFC 7541): a stateless encoder and a caching decoder.

hpack's `Encoder` searches and updates the dynamic table and Huffman-codes every
field of every request: ~90 µs per APNs request, the largest single cost of the send
path. Our requests repeat the same fields (method, scheme, authority, topic, push
type, priority, bearer) with a few that change every time (path, apns-id, expiration).
This encoder never inserts into the dynamic table, so the encoding of a field does not
depend on the connection's history and can be cached: repeated fields are one dict
lookup, changing ones a literal without indexing (RFC 7541 §6.2.2) with a raw string.

The decoder reads every answer, so its cost is per push too: its own dynamic table
(inline insertion, no call per entry), Huffman strings and whole fields cached when
they do not depend on the table, and the leading run of such fields of the last block
remembered, so that nginx's `:status`, `server`, `date`, `content-type`,
`content-length` cost one comparison and the table insertions they imply. Only a
volatile field (the `apns-id` of each answer) is decoded in full, Huffman included.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from hpack.exceptions import (
    HPACKDecodingError,
    InvalidTableIndex,
    InvalidTableSizeError,
    OversizedHeaderListError,
)
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
# A received value longer than this (encoded) in a field the server did not index is
# taken as volatile (an apns-id): not cached.
VOLATILE_LENGTH = 16
# Received strings longer than this (encoded) are never cached: the caches are bounded
# in entries, and this bounds them in bytes whatever a server sends.
CACHED_LENGTH = 256

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
# through 4-bit nibbles; ours has a row per decoder state with an entry per byte: (the
# row of the next state, the symbols that byte completes), and at index 256 whether a
# string may end in that state (the state alone decides: only padding of 1 bits, fewer
# than 8, is pending). The loop is one index, one unpack and one append per byte. A
# row's entries are computed from hpack's table the first time the state is met (a few
# dozen states cover real traffic); an entry that is still None is either not computed
# yet or a decoding error, which the careful path below tells apart (the state number
# is at index 257).
_HuffmanRow = list[Any]  # 256 entries (row, symbols) or None, accepting flag, state
_HUFFMAN_ROWS: dict[int, _HuffmanRow] = {}  # by state, created when first referred to
_HUFFMAN_BUILT: set[int] = set()  # states whose entries are computed


def _huffman_row(state: int) -> _HuffmanRow:
    row = _HUFFMAN_ROWS.get(state)
    if row is None:
        # setdefault: one row per state even when threads (one trio run each) race here
        row = _HUFFMAN_ROWS.setdefault(state, [None] * 256 + [state == 0, state])
    return row


def _huffman_state(state: int) -> None:
    row = _huffman_row(state)
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
        if not failed:
            target = _huffman_row(current)
            target[256] = complete  # the same for every transition into that state
            row[byte] = (target, bytes(out))
    _HUFFMAN_BUILT.add(state)


_HUFFMAN_ROOT = _huffman_row(0)


def decode_huffman(data: bytes) -> bytes:
    """Same result and errors as `hpack.huffman_table.decode_huffman`, faster."""
    row = _HUFFMAN_ROOT
    parts: list[bytes] = []
    append = parts.append
    try:
        for byte in data:
            row, symbols = row[byte]
            append(symbols)
    except TypeError:  # None: a state not computed yet, or an invalid string
        return _decode_huffman_carefully(data)
    if not row[256]:
        raise HPACKDecodingError("Incomplete Huffman string")
    return b"".join(parts)


# The decoder state after the first HEAD bytes of a Huffman string, cached by those
# bytes, for the values that are decoded every time but share a fixed start: the
# apns-id of an answer echoes ours, whose first 24 characters are the same for the
# life of the process (`apns.new_apns_id`), so its first 16 coded bytes are too.
HUFFMAN_HEAD = 16
HEAD_LIMIT = 64


def decode_huffman_shared_head(data: bytes, heads: dict[bytes, tuple[_HuffmanRow, bytes]]) -> bytes:
    """`decode_huffman`, with the state after the first HUFFMAN_HEAD bytes from `heads`."""
    if len(data) <= HUFFMAN_HEAD:
        return decode_huffman(data)
    head = data[:HUFFMAN_HEAD]
    known = heads.get(head)
    try:
        if known is None:
            row = _HUFFMAN_ROOT
            parts: list[bytes] = []
            for byte in head:
                row, symbols = row[byte]
                parts.append(symbols)
            known = (row, b"".join(parts))
            if len(heads) >= HEAD_LIMIT:
                heads.clear()
            heads[head] = known
        row, decoded = known
        parts = [decoded]
        append = parts.append
        for byte in data[HUFFMAN_HEAD:]:
            row, symbols = row[byte]
            append(symbols)
    except TypeError:  # None: a state not computed yet, or an invalid string
        return _decode_huffman_carefully(data)
    if not row[256]:
        raise HPACKDecodingError("Incomplete Huffman string")
    return b"".join(parts)


def _decode_huffman_carefully(data: bytes) -> bytes:
    """`decode_huffman`, computing the states it meets first."""
    row = _HUFFMAN_ROOT
    out = bytearray()
    for byte in data:
        entry = row[byte]
        if entry is None:
            state = row[257]
            if state not in _HUFFMAN_BUILT:
                _huffman_state(state)
            entry = row[byte]  # again: another thread may have just computed the state
            if entry is None:
                raise HPACKDecodingError("Invalid Huffman string")
        row, symbols = entry
        out += symbols
    if not row[256]:
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


class _Run:
    """The leading run of stable fields of a block (see `CachingDecoder.decode`)."""

    __slots__ = ("adds", "adds_size", "data", "largest", "pairs", "size")

    def __init__(
        self,
        data: bytes,
        pairs: tuple[tuple[bytes, bytes], ...],
        adds: tuple[tuple[tuple[bytes, bytes], int], ...],
        size: int,
    ) -> None:
        self.data = data  # its bytes
        self.pairs = pairs  # its fields
        self.adds = adds  # its table insertions: (field, entry size)
        self.size = size  # its header list size (§4.1)
        self.adds_size = sum(added for _, added in adds)
        self.largest = max((added for _, added in adds), default=0)


class CachingDecoder:
    """The HPACK decoder of `h2wire.ClientConnection` (hpack.Decoder's interface).

    Its own dynamic table (RFC 7541 §2.3.2, §4): a deque of (name, value), newest
    first, and its size. Servers such as nginx add `server`, `date`, `content-type` and
    `content-length` to the table with every response, so adding and evicting is on the
    path of every answer; hpack's `HeaderTable.add` costs a call, a size function and a
    debug log per entry there, this is inline. Huffman strings are cached: responses
    repeat most of them. Limits as hpack's: `max_header_list_size` (RFC 7541 §4.1
    sizes), table size updates up to `max_allowed_table_size`, only at a block's start.
    """

    def __init__(self, max_header_list_size: int = 65536) -> None:
        self.max_header_list_size = max_header_list_size
        self.max_allowed_table_size = 4096  # our SETTINGS_HEADER_TABLE_SIZE (the default)
        self._max_size = 4096
        self._size = 0
        self._entries: deque[tuple[bytes, bytes]] = deque()
        self._strings: dict[bytes, bytes] = {}
        # encoded fields that do not depend on the table -> ((name, value), entry size)
        self._fields: dict[bytes, tuple[tuple[bytes, bytes], int]] = {}
        # Huffman decoder states after the first bytes of volatile values (ids)
        self._heads: dict[bytes, tuple[_HuffmanRow, bytes]] = {}
        # the last block's leading run of stable fields
        self._run: _Run | None = None
        # The run replayed since the table last changed otherwise, and how many bytes of
        # entries its replays added; once that exceeds the table size, the table holds
        # only its entries, and replaying it again leaves the table as it is: `_steady`.
        self._replaying: _Run | None = None
        self._replayed = 0
        self._steady: _Run | None = None

    @property
    def header_table_size(self) -> int:
        return self._max_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self._max_size = value
        self._replaying = self._steady = None
        self._evict()

    @property
    def table(self) -> list[tuple[bytes, bytes]]:
        """The dynamic table, newest entry first (index 62 first)."""
        return list(self._entries)

    def _evict(self) -> None:
        entries = self._entries
        size = self._size
        while size > self._max_size:
            name, value = entries.pop()
            size -= len(name) + len(value) + 32
        self._size = size

    def _string(self, data: bytes, pos: int) -> tuple[bytes, int]:
        """A string literal (§5.2) at data[pos]: (its bytes, the next position)."""
        huffman = data[pos] & 0x80
        length, pos = _integer(data, pos, 7)
        end = pos + length
        if end > len(data):
            raise HPACKDecodingError("truncated string")
        raw = data[pos:end]
        if not huffman:
            return raw, end
        if length > CACHED_LENGTH:
            return decode_huffman(raw), end
        return self._strings.get(raw) or self._huffman(raw), end

    def _huffman(self, coded: bytes) -> bytes:
        """A Huffman string, decoded and cached."""
        decoded = decode_huffman(coded)
        if len(self._strings) >= CACHE_LIMIT:
            self._strings.clear()
        self._strings[coded] = decoded
        return decoded

    def _indexed(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= _STATIC_LEN:
            return _STATIC[index]
        dynamic = index - _STATIC_LEN - 1
        if index <= 0 or dynamic >= len(self._entries):
            raise InvalidTableIndex(f"Invalid table index {index}")
        return self._entries[dynamic]

    def _replay(self, run: _Run) -> None:
        """The table insertions of a remembered run of fields (§4.4).

        Replayed again and again with nothing else in between, a run's insertions end
        up filling the table with copies of its entries: newest first, the table is
        the longest prefix of run, run, run... that fits. One more replay then leaves
        it as it is (what it adds, the same entries in the same order, is evicted at
        the other end), so it is skipped. Eviction after the run's insertions rather
        than after each one ends the same: the newest entries that fit stay (an entry
        larger than the table empties it either way; runs with one are never skipped).
        """
        if run is self._steady:
            return
        entries = self._entries
        for pair, added in run.adds:
            if added > self._max_size:
                entries.clear()
                self._size = 0
            else:
                entries.appendleft(pair)
                self._size += added
        if self._size > self._max_size:
            self._evict()
        if run is not self._replaying:
            self._replaying = run
            self._replayed = 0
        self._replayed += run.adds_size
        if self._replayed > self._max_size and run.largest <= self._max_size:
            self._steady = run

    def decode(self, data: bytes, raw: bool = False) -> list[Any]:
        # One loop with the common cases inline (one-byte integers, static-table names,
        # cached strings and fields, table insertion): calls are most of the cost here.
        entries = self._entries
        strings = self._strings
        fields = self._fields
        limit = self.max_header_list_size
        end = len(data)
        # The block's leading run of fields that decode the same whatever the table
        # holds is remembered; a block that starts with the same bytes starts with the
        # same fields (servers repeat `:status`, `server`, `date`... in the same order).
        known_run = self._run
        if known_run is not None and data.startswith(known_run.data):
            size = known_run.size
            if size > limit:
                raise OversizedHeaderListError(f"header list over {limit}")
            headers = list(known_run.pairs)
            if known_run.adds:
                self._replay(known_run)
            pos = len(known_run.data)
            seen_field = True
            run_adds: list[tuple[tuple[bytes, bytes], int]] | None = None  # not recording
        else:
            headers = []
            size = 0
            pos = 0
            seen_field = False
            run_adds = []
        try:
            while pos < end:
                first = data[pos]
                added = 0  # the size of the table entry this field adds (§4.1), if any
                stable = False  # decodes the same whatever the table holds, and repeats
                if first & 0x80:  # §6.1 indexed
                    index = first & 0x7F
                    if index == 0x7F:
                        index, next_pos = _integer(data, pos, 7)
                    else:
                        next_pos = pos + 1
                    if 0 < index <= _STATIC_LEN:
                        pair = _STATIC[index]
                        stable = True
                    else:
                        pair = self._indexed(index)
                elif first & 0x20 and not first & 0x40:  # §6.3 dynamic table size update
                    if seen_field:
                        raise HPACKDecodingError("table size update after a header field")
                    new_size, next_pos = _integer(data, pos, 5)
                    if new_size > self.max_allowed_table_size:
                        raise InvalidTableSizeError(f"table size {new_size} over the limit")
                    self.header_table_size = new_size
                    if run_adds is not None:
                        self._remember(data, pos, headers, run_adds, size)
                        run_adds = None
                    pos = next_pos
                    continue
                else:
                    # §6.2.1 with incremental indexing, §6.2.2 / §6.2.3 without / never
                    prefix = 0x3F if first & 0x40 else 0x0F
                    index = first & prefix
                    # A field whose name is static or literal decodes the same whatever the
                    # table holds: when its lengths fit one byte, its bytes are looked up.
                    stop = 0
                    if not index:
                        value_at = pos + 2 + (data[pos + 1] & 0x7F)
                        if data[pos + 1] & 0x7F != 0x7F and value_at < end:
                            length = data[value_at] & 0x7F
                            if length != 0x7F:
                                stop = value_at + 1 + length
                    elif index < prefix and index <= _STATIC_LEN:
                        length = data[pos + 1] & 0x7F
                        if length != 0x7F:
                            stop = pos + 2 + length
                    known = None
                    volatile = False
                    if 0 < stop <= end:
                        if prefix == 0x3F or length <= VOLATILE_LENGTH:
                            field = data[pos:stop]
                            known = fields.get(field)
                        else:
                            volatile = True  # never cached (see `_literal`)
                    if known is not None:
                        pair, added = known
                        next_pos = stop
                        stable = True
                    elif volatile:  # an id: its shape is known, decoded here
                        if index:
                            name = _STATIC[index][0]
                        else:
                            name = data[pos + 2 : value_at]
                            if data[pos + 1] & 0x80:
                                name = strings.get(name) or self._huffman(name)
                        value = data[stop - length : stop]
                        if data[stop - length - 1] & 0x80:
                            value = decode_huffman_shared_head(value, self._heads)
                        pair = (name, value)
                        next_pos = stop
                    else:
                        pair, added, next_pos, stable = self._literal(data, pos, prefix, index)
                        if stable and 0 < stop <= end:
                            if len(fields) >= CACHE_LIMIT:
                                fields.clear()
                            fields[field] = (pair, added)
                    if added:  # §4.4: add, evicting the oldest entries
                        self._replaying = self._steady = None
                        if added > self._max_size:
                            entries.clear()
                            self._size = 0
                        else:
                            entries.appendleft(pair)
                            self._size += added
                            if self._size > self._max_size:
                                self._evict()
                if run_adds is not None:
                    if not stable:
                        self._remember(data, pos, headers, run_adds, size)
                        run_adds = None
                    elif added:
                        run_adds.append((pair, added))
                pos = next_pos
                seen_field = True
                size += len(pair[0]) + len(pair[1]) + 32
                if size > limit:
                    raise OversizedHeaderListError(f"header list over {limit}")
                headers.append(pair)
        except IndexError as error:
            raise HPACKDecodingError(f"truncated header block: {error}") from error
        if run_adds is not None:
            self._remember(data, end, headers, run_adds, size)
        if raw:
            return headers
        try:
            return [(name.decode(), value.decode()) for name, value in headers]
        except UnicodeDecodeError as error:
            raise HPACKDecodingError("header not UTF-8") from error

    def _remember(
        self,
        data: bytes,
        end: int,
        headers: list[tuple[bytes, bytes]],
        adds: list[tuple[tuple[bytes, bytes], int]],
        size: int,
    ) -> None:
        """The block's leading run of stable fields: data[:end] (see `decode`)."""
        self._run = _Run(data[:end], tuple(headers), tuple(adds), size) if end else None

    def _literal(
        self, data: bytes, pos: int, prefix: int, index: int
    ) -> tuple[tuple[bytes, bytes], int, int, bool]:
        """§6.2 at data[pos]: ((name, value), table entry size or 0, next position, stable)."""
        strings = self._strings
        if index == prefix:
            index, pos = _integer(data, pos, prefix.bit_length())
        else:
            pos += 1
        if not index:
            name, pos = self._string(data, pos)
        elif index <= _STATIC_LEN:
            name = _STATIC[index][0]
        else:
            name = self._indexed(index)[0]
        # the value (§5.2)
        byte = data[pos]
        length, pos = _integer(data, pos, 7)
        value_end = pos + length
        if value_end > len(data):
            raise HPACKDecodingError("truncated string")
        value = data[pos:value_end]
        # What a server indexes, or short, repeats; a long value it does not index (an
        # id) is decoded, not cached: it would only push the cached strings out.
        repeats = (prefix == 0x3F or length <= VOLATILE_LENGTH) and length <= CACHED_LENGTH
        if byte & 0x80:
            if repeats:
                cached = strings.get(value)
                if cached is None:
                    # an id the server indexes anyway (hpack's encoder does) starts here
                    cached = decode_huffman_shared_head(value, self._heads)
                    if len(strings) >= CACHE_LIMIT:
                        strings.clear()
                    strings[value] = cached
                value = cached
            else:
                value = decode_huffman_shared_head(value, self._heads)
        added = len(name) + len(value) + 32 if prefix == 0x3F else 0
        return (name, value), added, value_end, repeats and index <= _STATIC_LEN
