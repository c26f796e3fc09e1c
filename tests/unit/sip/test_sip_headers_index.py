"""The header index keeps one value per key and a list only for repeated keys."""

from __future__ import annotations

import pytest

import sip

REPEATED = (
    b"REGISTER sip:h SIP/2.0\r\n"
    b"Via: v1\r\nAccept: a\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nv: v2\r\n"
    b"Accept: a\r\nVIA: v3\r\nm: <sip:x@h>\r\nContact: <sip:y@h>\r\nContent-Length: 0\r\n\r\n"
)


def test_repeated_headers_of_a_parsed_message_keep_every_value_in_order() -> None:
    msg = sip.parse_message(REPEATED)
    assert msg.headers.get_all("via") == ["v1", "v2", "v3"]
    assert msg.headers.get("Via") == "v1"
    assert msg.headers.get_all("accept") == ["a", "a"]  # equal values are kept apart
    assert msg.headers.get_all("call-id") == ["c"]
    assert msg.headers.get_all("x-absent") == []
    assert [c.uri.user for c in msg.contacts()] == ["x", "y"]


def test_repeated_headers_built_by_hand_keep_every_value_in_order() -> None:
    headers = sip.Headers(
        [("Via", "1"), ("Call-ID", "c"), ("v", "2"), ("VIA", "3"), ("CSeq", "1 X")]
    )
    assert headers.get_all("Via") == ["1", "2", "3"]
    returned = headers.get_all("via")
    returned.append("mutated")
    assert headers.get_all("via") == ["1", "2", "3"]
    assert sip.Request("X", "sip:h", headers).call_id == "c"


def test_messages_built_by_hand_need_a_call_id_and_a_cseq() -> None:
    with pytest.raises(sip.SipParseError):
        sip.Request("X", "sip:h", sip.Headers([("CSeq", "1 X")]))
    with pytest.raises(sip.SipParseError):
        sip.Response(200, "OK", sip.Headers([("Call-ID", ""), ("CSeq", "1 X")]))
