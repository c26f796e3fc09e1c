"""The summary cache of RegistrationTable: a refresh answered from the cache gives the
events the full parse gives, and the cache stays within its bounds."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sip
from pusher_trio import registrations
from pusher_trio.registrations import Registered, RegistrationTable, summary_key

TOKEN = "740f4707bebcf74f9b7c25d48e3358945f6aa01da5ddb387462c7eaf61bb78ad"


def register(
    *,
    user: str = "alice",
    contact_params: str = f"pn-provider=apns;pn-prid={TOKEN};pn-param=TEAM1.com.example.app.voip",
    via: str = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1",
    tag: str = "f1",
    call_id: str = "reg-1@10.0.0.1",
    cseq: str = "1 REGISTER",
    auth: str | None = None,
    expires: str = "600",
    user_agent: str = "Linphone/5.2",
) -> bytes:
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        f"Via: {via}",
        f"From: <sip:{user}@example.com>;tag={tag}",
        f"To: <sip:{user}@example.com>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq}",
        f"User-Agent: {user_agent}",
    ]
    if auth is not None:
        lines.append(f"Authorization: {auth}")
    lines += [
        f"Contact: <sip:{user}@10.0.0.1:5060;{contact_params}>",
        f"Expires: {expires}",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer(table: RegistrationTable, payload: bytes, number: int, now: float) -> list[object]:
    table.apply_register(payload, "k", number, now, {})
    return list(table.apply_response("k", number, 200, now, {}))


def test_a_refresh_with_the_same_contact_is_answered_from_the_cache() -> None:
    table = RegistrationTable()
    first = answer(table, register(), 1, 100.0)
    refresh = register(via="SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-2", cseq="2 REGISTER",
                       auth='Digest username="alice", response="0123"')  # fmt: skip
    second = answer(table, refresh, 2, 160.0)
    assert table.statistics()["summary_hits"] == 1
    assert isinstance(first[0], Registered) and isinstance(second[0], Registered)
    assert second[0].devices[0].token == TOKEN
    assert second[0].at == 160.0 and second[0].devices[0].last_registered == 160.0
    # a changed Contact is parsed again
    moved = register(contact_params=f"pn-provider=apns;pn-prid={'ab' * 32};pn-param=T.b.voip")
    third = answer(table, moved, 3, 170.0)
    assert table.statistics()["summary_hits"] == 1
    assert isinstance(third[0], Registered) and third[0].devices[0].token == "ab" * 32


def test_key_leaves_out_only_the_volatile_lines() -> None:
    a = register()
    same = register(via="x", call_id="other", cseq="7 REGISTER", tag="new", auth="Digest x")
    assert summary_key(a) == summary_key(same)
    for changed in (register(user="bob"), register(expires="0"), register(user_agent="Other")):
        assert summary_key(changed) != summary_key(a)
    # the parser would refuse these: no key, so no answer from the cache
    assert summary_key(register(cseq="1 INVITE")) is None
    assert summary_key(register(cseq="99999999999 REGISTER")) is None
    assert summary_key(register(call_id=" ")) is None
    assert summary_key(register(via="a\r\n folded")) is None
    assert summary_key(a.replace(b"\r\nCSeq", b"\nCSeq")) is not None  # LF line end, as parser
    assert summary_key(a.replace(b"\r\n\r\n", b"\n\r\n\r\n")) is None  # LF-only empty line


def test_cache_is_bounded_by_count_and_bytes() -> None:
    table = RegistrationTable(summary_cache=3)
    for i in range(10):
        answer(table, register(user=f"u{i}"), i + 1, 100.0)
    assert table.statistics()["summaries"] == 3
    # one RFC 8599 Contact: a compact entry (the device, ~250 bytes)
    table = RegistrationTable(summary_cache_bytes=600)
    for i in range(10):
        answer(table, register(user=f"u{i}"), i + 1, 100.0)
    stats = table.statistics()
    assert stats["summaries"] == 2 and stats["summaries_bytes"] == 500
    # no push target: the whole summary (~2 KB) is kept
    table = RegistrationTable(summary_cache_bytes=3000)
    for i in range(10):
        answer(table, register(user=f"u{i}", contact_params="transport=udp"), i + 1, 100.0)
    stats = table.statistics()
    assert 1 <= stats["summaries"] < 3 and 0 < stats["summaries_bytes"] <= 3000
    off = RegistrationTable(summary_cache=0)
    for i in range(3):
        answer(off, register(), i + 1, 100.0)
    assert off.statistics()["summaries"] == 0 and off.statistics()["summary_hits"] == 0
    with pytest.raises(ValueError):
        RegistrationTable(summary_cache=-1)


# Values for the volatile lines, good and bad: the parser's verdict on them must not be
# hidden by the cache. Contact/To/Expires/User-Agent vary too, so keys differ sometimes.
_text = st.text(alphabet=st.sampled_from(list('ab1 \t;=:<>"@.\r-%Z9,')), max_size=12)
_cseq = st.one_of(
    st.integers(0, 2**31 + 5).map(lambda n: f"{n} REGISTER"),
    st.sampled_from(["1 INVITE", "", "x REGISTER", "1  REGISTER", "1\tREGISTER", " 3 REGISTER "]),
    _text,
)
_variant = st.fixed_dictionaries(
    {
        "via": _text,
        "tag": _text,
        "call_id": st.one_of(st.sampled_from(["c1@h", "c2@h"]), _text),
        "cseq": _cseq,
        "auth": st.one_of(st.none(), _text),
        "user": st.sampled_from(["alice", "bob"]),
        "contact_params": st.sampled_from(
            [
                f"pn-provider=apns;pn-prid={TOKEN};pn-param=T.b.voip",
                "pn-provider=fcm;pn-prid=tok;pn-param=proj",
                "transport=udp",
            ]
        ),
        "expires": st.sampled_from(["600", "0", "x"]),
        "user_agent": st.sampled_from(["Linphone/5.2", "MyApp"]),
    }
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(variants=st.lists(_variant, min_size=2, max_size=6))
def test_cached_and_parsed_summaries_give_the_same_events(variants: list[dict[str, str]]) -> None:
    cached = RegistrationTable()
    parsed = RegistrationTable(summary_cache=0)
    for number, kwargs in enumerate(variants, start=1):
        payload = register(**kwargs)  # type: ignore[arg-type]
        got = answer(cached, payload, number, 100.0 + number)
        want = answer(parsed, payload, number, 100.0 + number)
        assert got == want
        assert (
            cached.statistics()["malformed_registers"] == parsed.statistics()["malformed_registers"]
        )


def test_cached_answers_match_a_fresh_parse_for_every_refresh() -> None:
    """Deterministic companion of the property test: many refreshes, many hits."""
    cached, parsed = RegistrationTable(), RegistrationTable(summary_cache=0)
    for number in range(1, 50):
        payload = register(user=f"u{number % 5}", cseq=f"{number} REGISTER",
                           via=f"SIP/2.0/UDP h;branch=z9hG4bK{number}")  # fmt: skip
        assert answer(cached, payload, number, float(number)) == answer(
            parsed, payload, number, float(number)
        )
    assert cached.statistics()["summary_hits"] == 44
    assert sip.parse_message(register()).method == "REGISTER"


def test_a_storm_of_new_phones_samples_the_cache_until_refreshes_hit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registrations, "SUMMARY_PROBE", 10)
    cached, parsed = RegistrationTable(), RegistrationTable(summary_cache=0)
    cached._random = random.Random(7).random  # a fixed sample: the counts below are exact
    number = 0

    def both(payload: bytes) -> None:
        nonlocal number
        number += 1
        assert answer(cached, payload, number, 1.0) == answer(parsed, payload, number, 1.0)

    for i in range(10):  # ten new phones: no refresh among them
        both(register(user=f"new{i}"))
    taken = 0
    while cached.statistics()["summary_hits"] < 10 and taken < 1000:
        both(register(user="new9"))  # sampling: about 1 in 4 looked up
        taken += 1
    assert taken > 20
    for _ in range(10):  # the sample hit: every refresh is looked up again
        both(register(user="new9"))
    assert cached.statistics()["summary_hits"] == 20


def test_phones_seen_for_the_first_time_are_cached_within_a_few_refreshes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first round looks like a storm of new phones; their refreshes still hit."""
    monkeypatch.setattr(registrations, "SUMMARY_PROBE", 100)
    table = RegistrationTable()
    table._random = random.Random(3).random
    phones, number, hits = 2_000, 0, []
    for _ in range(4):
        before = table.statistics()["summary_hits"]
        for i in range(phones):
            number += 1
            answer(table, register(user=f"u{i}"), number, 1.0)
        hits.append(table.statistics()["summary_hits"] - before)
    assert hits[0] < phones // 2 and hits[-1] == phones, hits


def test_devices_with_equal_extras_share_one_mapping() -> None:
    table = RegistrationTable()
    (a,) = answer(table, register(user="a"), 1, 1.0)
    other = f"pn-provider=apns;pn-prid={'cd' * 32};pn-param=TEAM1.com.example.app.voip"
    (b,) = answer(table, register(user="b", contact_params=other), 2, 1.0)
    assert isinstance(a, Registered) and isinstance(b, Registered)
    assert a.devices[0].extra == {"source": "rfc8599", "team_id": "TEAM1"}
    assert a.devices[0].extra is b.devices[0].extra
    assert a.devices[0].user_agent is b.devices[0].user_agent


def test_a_population_larger_than_the_old_cache_is_answered_from_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """20,000 phones refreshing (more than the 16,384 full summaries the cache once held)."""
    monkeypatch.setattr(registrations, "SUMMARY_PROBE", 10**9)  # sampling is tested above
    cached, parsed = RegistrationTable(), RegistrationTable(summary_cache=0)
    phones = 20_000
    number = 0
    for rnd in range(2):
        for i in range(phones):
            number += 1
            payload = register(user=f"u{i}", call_id=f"c{i}", cseq=f"{rnd + 1} REGISTER",
                               contact_params=f"pn-provider=apns;pn-prid={i:064x};pn-param=T.b.voip")  # fmt: skip
            got = answer(cached, payload, number, float(rnd))
            if i % 97 == 0:  # a sample against a fresh parse (the property test checks all)
                assert got == answer(parsed, payload, number, float(rnd))
    stats = cached.statistics()
    assert stats["summary_hits"] == phones and stats["summaries"] == phones
    assert stats["summaries_bytes"] <= registrations.DEFAULT_SUMMARY_CACHE_BYTES


def test_a_device_from_the_user_agents_mapping_follows_the_mapping() -> None:
    """Such a target depends on the mapping, not only on the REGISTER: never compacted."""
    rule = {"regex": "^MyApp", "properties": {"Token-App": "x-app", "Token-Type": "x-type",
                                              "Token-ID": "x-tok"}}  # fmt: skip
    payload = register(user_agent="MyApp", contact_params="x-app=com.a;x-type=fcm;x-tok=t1")
    legacy = register(user_agent="MyApp", contact_params="app-id=com.a;pn-type=apple;pn-tok=t2")
    table = RegistrationTable()
    for number, mapping in enumerate([{"m": rule}, {"m": rule}, {}, {"m": rule}], start=1):
        table.apply_register(payload, "k", number, 1.0, {})
        (event,) = table.apply_response("k", number, 200, 1.0, mapping)
        assert isinstance(event, Registered)
        assert [d.token for d in event.devices] == (["t1"] if mapping else [])
    assert table.statistics()["summary_hits"] == 3
    # a legacy pn-type/pn-tok target does not depend on the mapping: compact, same events
    cached, parsed = RegistrationTable(), RegistrationTable(summary_cache=0)
    for number in range(5, 9):
        assert answer(cached, legacy, number, float(number)) == answer(
            parsed, legacy, number, float(number)
        )
    assert cached.statistics()["summaries_bytes"] == registrations._SINGLE_OVERHEAD


def test_the_user_agents_getter_is_called_only_when_the_extraction_needs_it() -> None:
    calls: list[int] = []

    def user_agents() -> dict[str, object]:
        calls.append(1)
        return {}

    table = RegistrationTable()
    table.apply_register(register(), "k", 1, 100.0, {})
    (event,) = table.apply_response("k", 1, 200, 100.0, user_agents)  # parsed: asked once
    assert isinstance(event, Registered) and len(calls) == 1
    table.apply_register(register(cseq="2 REGISTER"), "k", 2, 160.0, {})
    (event,) = table.apply_response("k", 2, 200, 160.0, user_agents)  # from the cache
    assert isinstance(event, Registered) and len(calls) == 1
    table.apply_register(register(cseq="3 REGISTER"), "k", 3, 170.0, {})
    assert table.apply_response("k", 3, 403, 170.0, user_agents) == []
    assert table.apply_response("nobody", 9, 200, 170.0, user_agents) == []
    assert len(calls) == 1


def _key_by_search(payload: bytes) -> bytes | None:
    """summary_key without its shortcut for bodyless payloads (the general way)."""
    if len(payload) > sip.MAX_DATAGRAM:
        return None
    end = payload.find(b"\r\n\r\n")
    if end < 0 or end > sip.MAX_HEADER_SIZE or registrations._UNUSUAL.search(payload, 0, end + 1):
        return None
    if payload.count(b"\n", 0, end) > sip.MAX_HEADERS:
        return None
    head = payload[:end]
    for name, value in registrations._CHECKED.findall(head):
        if name == b"CSeq":
            m = registrations._CSEQ_VALUE.fullmatch(value)
            if m is None or int(m.group(1)) > registrations._MAX_CSEQ:
                return None
        elif not value.strip(b" \t\r"):
            return None
    return registrations._VOLATILE.sub(b"", head) + payload[end:]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(variant=_variant, data=st.data())
def test_the_bodyless_shortcut_gives_the_general_key(
    variant: dict[str, str], data: st.DataObject
) -> None:
    payload = register(**variant)  # type: ignore[arg-type]
    at = data.draw(st.integers(0, len(payload)))
    if data.draw(st.booleans()):  # the shortcut's edge is the end: mutate there often
        at = max(0, len(payload) - data.draw(st.integers(0, 8)))
    insert = data.draw(st.sampled_from([b"", b"\n", b"\r\n", b"\r\n\r\n", b"\n\r\n", b" ", b"b"]))
    payload = payload[:at] + insert + payload[at:]
    assert summary_key(payload) == _key_by_search(payload)
