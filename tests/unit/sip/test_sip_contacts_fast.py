"""The str/findall fast path of Contact headers (sip.headers._contacts_split).

It either returns what the general parser returns or None ("not the usual shape,
ask the general parser"); it never raises. The property tests in
tests/property/test_sip_contacts_fast.py generate values; these pin the shapes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import sip
from sip.headers import _contacts_split, _parse_contacts

CORPUS = sorted((Path(__file__).resolve().parents[2] / "data" / "sip").glob("*.sip"))


def general(value: str) -> list[sip.Contact] | str:
    try:
        return _parse_contacts(value, False)
    except sip.SipParseError:
        return "SipParseError"


# Values the fast path takes: it must give exactly what the general parser gives.
TAKEN = [
    "<sip:a@h>",
    "<sips:a@h:5061>",
    "<sip:h>",
    "<sip:h:5060;transport=tcp>",
    "<sip:a@[2001:db8::1]:5061;transport=tls>;expires=60",
    "<sip:a@[2001:db8::1]>",
    "<sip:%2B1555@h;user=phone>",
    "<sip:a;b@h>",
    "<sip:h;x=a@b>",
    "<sip:a@h;ob;lr>;flag;q=0.5",
    "<sip:a@h>;expires=99999999999",
    "<sip:a@h>;EXPIRES=7;Reg-Id=1",
    '<sip:a@h>;expires="30"',
    '<sip:a@h>;+sip.instance="<urn:uuid:1-2>";reg-id=1',
    '<sip:a@h>;+org.linphone.specs="a,b;c";x=1, <sip:b@h>',
    '<sip:a@h>;p="";q',
    '"Mr. Watson" <sip:w@h>;q=0.7',
    '"a, b; <c>" <sip:a@h>, "d" <sip:d@h>',
    '""<sip:a@h>',
    "  <sip:a@h>,   <sip:b@h>",
    "<sip:a@h>,<sip:b@h>",
    "<sip:a@h;x=1,2>",
    "<sip:a,b@h>",
    "<sip:a@h>;received=[2001:db8::1]:5060;tok=abc==;x=a=b",
    "<sip:a@h>;x=<y>",
    "<sip:J%C3%B6rg@h>;name=J\u00f6rg",
]


@pytest.mark.parametrize("value", TAKEN)
def test_fast_path_takes_the_usual_shapes_and_agrees(value: str) -> None:
    fast = _contacts_split(value)
    assert fast is not None
    assert fast == general(value)
    assert sip.parse_contacts(value) == fast


# Values the fast path leaves to the general parser (which may accept or reject).
LEFT = [
    "",
    "   ",
    ",",
    "<sip:a@h>,",
    "<sip:a@h>, ",
    ",<sip:a@h>",
    "<sip:a@h>,,<sip:b@h>",
    "<sip:a@h",
    "<sip:a@h>>",
    "<sip:<a@h>",
    "<sip:a@h> x",
    "<sip:a@h> <sip:b@h>",
    "<sip:a@h>;",
    "<sip:a@h>;;x",
    "<sip:a@h>;=1",
    "<sip:a@h> ;x=1",
    "<sip:a@h>;x =1",
    "<sip:a@h>,\t<sip:b@h>",
    "<sip:a@h>;x=1 ,<sip:b@h>",
    "<sip:a@h>  ",
    "<sip:a@h> ;x",
    "<sip:a@h;x=a b>",
    "<sip:a@h;x=<b>",
    "<sip:a@h>;x=?",
    "<sip:a@h>;expires=soon",
    "<sip:a@h>;expires=-1",
    "<sip:a@h>;expires=\u0663",
    "<sip:a@h:99999>",
    "<sip:a@h:65536>;x=1",
    "<sip:a@h;;x;>;y",
    "<sip:a@h;=x>",
    "<sip:h:5060;x=a@b>",
    "<sip:a:pw@h>",
    "<sip:a@h?subject=x>",
    "<sip:a@h;x?y>",
    "<SIP:a@h>",
    "<tel:+123>;expires=5",
    "<sip:@h>",
    "<sip:a@h_ bad>",
    "<sip:a@[2001:db8::1]x>",
    "<>",
    "sip:a@h;expires=30",
    "Mr Watson <sip:w@h>",
    "* <sip:a@h>",
    '"unclosed <sip:a@h>',
    '<sip:a@h>;p="unclosed',
    '<sip:a@h>;"x"',
    '<sip:a@h>;p"x"',
    '<sip:a@h>;p=x"y"',
    '<sip:a@h>;p="x"y',
    '<sip:a@h>;p="x""y"',
    '<sip:a@h>;p="v" ;q',
    '<sip:a"b"@h>',
    '<sip:a@h;p="x">',
    '"x" sip:a@h',
    '"x";p=1',
    '"x"  junk <sip:a@h>',
    r'"say \"hi\"" <sip:a@h>',
    '<sip:a@h>;p="a\rb"',
    '<sip:a@h>;p="a\nb"',
]


@pytest.mark.parametrize("value", LEFT)
def test_fast_path_leaves_other_shapes_to_the_general_parser(value: str) -> None:
    assert _contacts_split(value) is None
    try:
        expected: list[sip.Contact] | str = sip.parse_contacts(value)
    except sip.SipParseError:
        expected = "SipParseError"
    assert expected == general(value)


# Corpus files whose every Contact header has the usual shape (the others have an
# addr-spec without <>, a blank before ";", a tel: URI, an escaped quote or "*").
USUAL = {
    "bria_register.sip",
    "kamailio_200ok_3contacts.sip",
    "linphone_legacy_register.sip",
    "linphone_rfc8599_200ok.sip",
    "linphone_rfc8599_register.sip",
    "seed_myapp_register.sip",
    "zoiper_register.sip",
}


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_corpus_contacts_agree_and_the_usual_ones_take_the_fast_path(path: Path) -> None:
    msg = sip.parse_message(path.read_bytes())
    for value in msg.headers.get_all("Contact"):
        fast = _contacts_split(value)
        if path.name in USUAL:
            assert fast is not None, value
        if fast is not None:
            assert fast == general(value)
