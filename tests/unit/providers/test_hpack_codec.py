"""Our HPACK encoder/decoder against hpack's reference implementation (RFC 7541)."""

from __future__ import annotations

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
