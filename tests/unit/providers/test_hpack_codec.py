"""Our HPACK encoder/decoder against hpack's reference implementation (RFC 7541)."""

from __future__ import annotations

from typing import Any

import hpack
from hypothesis import given, settings
from hypothesis import strategies as st

from pusher_trio.providers._hpack import CachingDecoder, StatelessEncoder, encode_integer

names = st.sampled_from(
    [
        b":method",
        b":path",
        b":authority",
        b"apns-id",
        b"apns-topic",
        b"content-length",
        b"x-custom",
        b"date",
    ]
)
values = st.binary(min_size=0, max_size=80).map(lambda b: bytes(c % 94 + 33 for c in b))
header_lists = st.lists(st.tuples(names, values), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(header_lists, min_size=1, max_size=8))
def test_stateless_encoder_decodes_with_reference_decoder(
    blocks: list[list[tuple[bytes, bytes]]],
) -> None:
    encoder = StatelessEncoder()
    decoder = hpack.Decoder()
    for headers in blocks:
        assert decoder.decode(encoder.encode(headers), raw=True) == headers


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(header_lists, st.booleans(), st.sampled_from([None, 0, 256, 4096])),
        min_size=1,
        max_size=8,
    )
)
def test_caching_decoder_matches_reference(
    blocks: list[tuple[list[tuple[bytes, bytes]], bool, int | None]],
) -> None:
    encoder = hpack.Encoder()
    reference = hpack.Decoder()
    ours = CachingDecoder()
    for headers, huffman, table_size in blocks:
        if table_size is not None:
            encoder.header_table_size = table_size
        data = encoder.encode(headers, huffman=huffman)
        assert ours.decode(data, raw=True) == reference.decode(data, raw=True) == headers


def test_table_size_reduction_is_signalled() -> None:
    encoder = StatelessEncoder()
    encoder.header_table_size = 0
    block = encoder.encode([(b":method", b"POST")])
    assert block[0] == 0x20  # §6.3 size update to 0, then the field
    assert hpack.Decoder().decode(block, raw=True) == [(b":method", b"POST")]


def test_integer_encoding_rfc_examples() -> None:
    # RFC 7541 C.1.1-C.1.3
    assert encode_integer(10, 5) == bytes([0b01010])
    assert encode_integer(1337, 5) == bytes([0b11111, 0b10011010, 0b00001010])
    assert encode_integer(42, 8) == bytes([42])


def test_truncated_block_is_a_decoding_error() -> None:
    import pytest
    from hpack.exceptions import HPACKDecodingError

    block = hpack.Encoder().encode([(b"x-custom", b"value")])
    with pytest.raises(HPACKDecodingError):
        CachingDecoder().decode(block[:-2], raw=True)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_caching_decoder_garbage_raises_only_hpack_errors(data: bytes) -> None:
    from hpack.exceptions import HPACKError

    try:
        headers = CachingDecoder().decode(data, raw=True)
    except HPACKError:
        return
    assert all(isinstance(n, bytes) and isinstance(v, bytes) for n, v in headers)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60), st.binary(max_size=12))
def test_huffman_decoder_matches_hpack(raw: bytes, garbage: bytes) -> None:
    from hpack.exceptions import HPACKDecodingError
    from hpack.huffman import HuffmanEncoder
    from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
    from hpack.huffman_table import decode_huffman as reference

    from pusher_trio.providers._hpack import decode_huffman

    coded = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(raw)
    assert decode_huffman(coded) == reference(coded) == raw
    try:
        expected: bytes | None = reference(garbage)
    except HPACKDecodingError:
        expected = None
    try:
        ours: bytes | None = decode_huffman(garbage)
    except HPACKDecodingError:
        ours = None
    assert ours == expected


# --- the decoder against blocks shaped like nginx's and Apple's answers -----------------
# hpack's Encoder refers to its dynamic table as soon as it can, so the blocks above rarely
# repeat their leading bytes. Servers such as nginx send the same fields again and again
# as literals with incremental indexing (then a per-response id without indexing): the
# path where `CachingDecoder` replays remembered fields and table insertions.
def _literal_field(name: bytes, value: bytes, mode: int, huffman: bool) -> bytes:
    """One §6.2 field: mode 0x40 (incremental indexing), 0x00 (without), 0x10 (never)."""
    from pusher_trio.providers._hpack import _STATIC_NAME, encode_string

    bits = 6 if mode == 0x40 else 4
    index = _STATIC_NAME.get(name)
    if index is not None and huffman:  # name from the static table
        return encode_integer(index, bits, mode) + encode_string(value, huffman)
    return bytes((mode,)) + encode_string(name, huffman) + encode_string(value, huffman)


fields_st = st.tuples(
    st.sampled_from([b"server", b"date", b"content-type", b"content-length", b"apns-id", b"x-a"]),
    st.sampled_from([b"nginx", b"0", b"text/plain", b"Sun, 06 Dec 2026 23:51:14 GMT", b"v" * 40]),
    st.sampled_from([0x40, 0x00, 0x10]),
    st.booleans(),
)
block_st = st.tuples(
    st.lists(fields_st, min_size=0, max_size=6),
    st.booleans(),  # a per-response id at the end (never repeats)
    st.sampled_from([None, None, None, 0, 100, 300, 4096]),  # a table size update first
    st.sampled_from([b"\x88", b"\x8d", b""]),  # :status 200 / 404 (static, indexed) or none
    st.integers(min_value=0, max_value=3),  # refer to this dynamic entry (62 + n) at the end
    st.integers(min_value=1, max_value=40),  # sent this many times in a row
)


@settings(max_examples=300, deadline=None)
@given(st.lists(block_st, min_size=1, max_size=12))
def test_decoder_keeps_the_table_in_step_with_repeated_blocks(
    blocks: list[tuple[list[tuple[bytes, bytes, int, bool]], bool, int | None, bytes, int, int]],
) -> None:
    import uuid

    from hpack.exceptions import HPACKDecodingError

    reference = hpack.Decoder()
    ours = CachingDecoder()
    for fields, with_id, table_size, status, dynamic, times in blocks:
        head = b""
        if table_size is not None:
            head += encode_integer(table_size, 5, 0x20)
        head += status
        for name, value, mode, huffman in fields:
            head += _literal_field(name, value, mode, huffman)
        # The same leading fields `times` in a row (replayed from the second one on; the
        # table reaches its steady state when they add enough), each with a new id, then
        # once with a reference to the dynamic table.
        sent = []
        for _ in range(times):
            block = head
            if with_id:
                block += _literal_field(b"apns-id", str(uuid.uuid4()).encode(), 0x00, True)
            sent.append(block)
        sent.append(head + encode_integer(62 + dynamic, 7, 0x80))
        for block in sent:
            try:
                expected = reference.decode(block, raw=True)
            except HPACKDecodingError:
                expected = None
            try:
                got = ours.decode(block, raw=True)
            except HPACKDecodingError:
                got = None
            assert got == expected
            assert ours.table == list(reference.header_table.dynamic_entries)
            assert ours.header_table_size == reference.header_table_size


def test_oversized_entry_empties_the_table_on_replay_too() -> None:
    # RFC 7541 §4.4: an entry larger than the table empties it and is not added.
    big = _literal_field(b"x-a", b"v" * 200, 0x40, False)
    small = _literal_field(b"server", b"nginx", 0x40, True)
    ours = CachingDecoder()
    reference = hpack.Decoder()
    for block in (encode_integer(150, 5, 0x20) + small, small + big, small + big):
        assert ours.decode(block, raw=True) == reference.decode(block, raw=True)
        assert ours.table == list(reference.header_table.dynamic_entries)
    assert ours.table == []


def test_header_list_limit_holds_for_a_replayed_run() -> None:
    import pytest
    from hpack.exceptions import OversizedHeaderListError

    block = _literal_field(b"server", b"nginx", 0x40, True) * 3
    ours = CachingDecoder()
    assert len(ours.decode(block, raw=True)) == 3
    ours.max_header_list_size = 100  # three fields of 6 + 5 + 32 bytes: 129
    with pytest.raises(OversizedHeaderListError):
        ours.decode(block, raw=True)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=255), max_size=40))
def test_huffman_decoder_matches_hpack_on_every_symbol(symbols: list[int]) -> None:
    from hpack.huffman_table import decode_huffman as reference

    from pusher_trio.providers._hpack import _HUFFMAN, decode_huffman

    raw = bytes(symbols)
    coded = _HUFFMAN.encode(raw)
    assert decode_huffman(coded) == reference(coded) == raw


def test_huffman_decoder_rejects_what_hpack_rejects() -> None:
    from hpack.exceptions import HPACKDecodingError
    from hpack.huffman_table import decode_huffman as reference

    from pusher_trio.providers._hpack import decode_huffman

    # every one- and two-byte string: padding longer than 7 bits, EOS, incomplete codes
    for first in range(256):
        for data in [bytes((first,))] + [bytes((first, second)) for second in range(0, 256, 7)]:
            try:
                expected: bytes | None = reference(data)
            except HPACKDecodingError:
                expected = None
            try:
                got: bytes | None = decode_huffman(data)
            except HPACKDecodingError:
                got = None
            assert got == expected, data


@settings(max_examples=300, deadline=None)
@given(
    st.binary(min_size=0, max_size=30),
    st.lists(st.binary(max_size=30), min_size=1, max_size=6),
    st.lists(st.binary(max_size=20), max_size=3),
)
def test_huffman_with_shared_heads_matches_hpack(
    start: bytes, ends: list[bytes], garbage: list[bytes]
) -> None:
    """Values with a common start (our apns-ids) and coded garbage after a cached head."""
    from hpack.exceptions import HPACKDecodingError
    from hpack.huffman_table import decode_huffman as reference

    from pusher_trio.providers._hpack import _HUFFMAN, decode_huffman_shared_head

    heads: dict[bytes, tuple[list[Any], bytes]] = {}
    coded = [_HUFFMAN.encode(start + end) for end in ends]
    for value, end in zip(coded, ends, strict=True):
        assert decode_huffman_shared_head(value, heads) == start + end
    for extra in garbage:  # the head of a known value, then anything
        data = coded[0][:16] + extra
        try:
            expected: bytes | None = reference(data)
        except HPACKDecodingError:
            expected = None
        try:
            got: bytes | None = decode_huffman_shared_head(data, heads)
        except HPACKDecodingError:
            got = None
        assert got == expected


def test_answers_echoing_our_apns_ids_decode_through_a_cached_head() -> None:
    from pusher_trio.providers.apns import new_apns_id

    ours = CachingDecoder()
    ids = [new_apns_id().encode() for _ in range(5)]
    for apns_id in ids:
        block = b"\x88" + _literal_field(b"apns-id", apns_id, 0x00, True)
        assert ours.decode(block, raw=True) == [(b":status", b"200"), (b"apns-id", apns_id)]
    assert len(ours._heads) == 1  # the ids' common start, decoded once


def test_huffman_rows_computed_by_racing_threads_decode_right() -> None:
    """trio runs in several threads (the benchmarks) decode with the same module tables:
    states computed concurrently must still give hpack's answers."""
    import importlib
    import random
    import sys
    import threading

    from hpack.huffman_table import decode_huffman as reference

    from pusher_trio.providers import _hpack

    fresh = importlib.util.module_from_spec(importlib.util.find_spec(_hpack.__name__))  # type: ignore[arg-type]
    fresh.__spec__.loader.exec_module(fresh)  # type: ignore[union-attr]
    generator = random.Random(7)
    values = [bytes(generator.randrange(256) for _ in range(30)) for _ in range(40)]
    coded = [_hpack._HUFFMAN.encode(value) for value in values]
    failures: list[BaseException] = []

    def decode() -> None:
        try:
            for data, value in zip(coded, values, strict=True):
                assert fresh.decode_huffman(data) == reference(data) == value
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=decode) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []


def test_long_strings_are_decoded_but_never_cached() -> None:
    """The caches are bounded in entries; long strings stay out, so also in bytes."""
    ours, reference = CachingDecoder(), hpack.Decoder()
    long_value = b"x" * 400
    block = _literal_field(b"x-a", long_value, 0x40, True) + _literal_field(
        b"x-" + b"n" * 400, b"v", 0x00, True
    )
    for _ in range(3):
        assert ours.decode(block, raw=True) == reference.decode(block, raw=True)
        assert ours.table == list(reference.header_table.dynamic_entries)
    assert all(len(decoded) < 300 for decoded in ours._strings.values())
    assert not ours._fields
