"""A state-machine model of RegistrationTable: bounded memory, only answered REGISTERs count."""

from __future__ import annotations

from collections import OrderedDict

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import sip
from pusher_trio.registrations import Registered, RegistrationTable

MAX_ENTRIES = 5
MAX_BYTES = 12_000
TTL = 32.0
CALL_IDS = st.sampled_from([f"c{i}" for i in range(8)])
CSEQS = st.integers(1, 3)


def register(call_id: str, cseq: int, pad: int) -> bytes:
    return (
        "REGISTER sip:example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
        "To: <sip:alice@example.com>\r\nFrom: <sip:alice@example.com>;tag=1\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:alice@10.0.0.1;pn-type=apple;pn-tok=tok{call_id}x{cseq}0123456789;"
        f"app-id=com.x;pad={'p' * pad}>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def response(call_id: str, cseq: int, status: int) -> bytes:
    return (
        f"SIP/2.0 {status} X\r\n"
        "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
        "To: <sip:alice@example.com>;tag=2\r\nFrom: <sip:alice@example.com>;tag=1\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContent-Length: 0\r\n\r\n"
    ).encode()


class TableModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.table = RegistrationTable(max_entries=MAX_ENTRIES, max_bytes=MAX_BYTES, ttl=TTL)
        self.now = 1000.0
        # What the table may still hold: key -> (time seen, content). The table may have
        # evicted more than this (byte cap), never less; a 2xx counts only if the key is
        # here with a content. Content None: two different REGISTERs came with that key
        # (no retransmission: a forged one), and neither may be completed.
        self.pending: OrderedDict[tuple[str, int], tuple[float, tuple[int, bool] | None]] = (
            OrderedDict()
        )
        self.registrations = 0

    @property
    def answerable(self) -> list[tuple[str, int]]:
        return [key for key, (_, content) in self.pending.items() if content is not None]

    def _expire(self) -> None:
        for key, (at, _) in list(self.pending.items()):
            if at <= self.now - TTL:
                del self.pending[key]

    @rule(call_id=CALL_IDS, cseq=CSEQS, pad=st.integers(0, 3000), lazy=st.booleans())
    def send_register(self, call_id: str, cseq: int, pad: int, lazy: bool) -> None:
        data = register(call_id, cseq, pad)
        if lazy:  # the sniffer's path: bytes kept, parsed on the 2xx
            events = self.table.apply_register(data, call_id, cseq, self.now, {})
        else:
            events = self.table.apply(sip.parse_message(data), self.now, {})
        assert events == []
        self._expire()
        content: tuple[int, bool] | None = (pad, lazy)
        old = self.pending.pop((call_id, cseq), None)
        if old is not None and old[1] != content:
            content = None  # the same key with other content: not a retransmission
        self.pending[(call_id, cseq)] = (self.now, content)
        while len(self.pending) > MAX_ENTRIES:
            self.pending.popitem(last=False)

    @rule(call_id=CALL_IDS, cseq=CSEQS, status=st.sampled_from([100, 200, 202, 401, 403, 500]))
    def send_response(self, call_id: str, cseq: int, status: int) -> None:
        self._expire()
        key = (call_id, cseq)
        events = self.table.apply(sip.parse_message(response(call_id, cseq, status)), self.now, {})
        if status < 200:
            assert events == []
            return
        entry = self.pending.pop(key, None)
        was_answerable = entry is not None and entry[1] is not None
        if events:
            # only a 2xx to a REGISTER that is still answerable registers (or one the
            # table saw alone because the byte cap had evicted its first copy)
            assert 200 <= status < 300
            assert was_answerable or self.table.statistics()["evicted"] > 0
            (event,) = events
            assert isinstance(event, Registered)
            assert event.devices[0].token == f"tok{call_id}x{cseq}0123456789"
            self.registrations += 1
        elif 200 <= status < 300 and was_answerable:
            # not registered although answerable: only allowed if the byte cap evicted it
            assert self.table.statistics()["evicted"] > 0

    @rule(seconds=st.floats(0.0, 40.0))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: self.answerable)
    @rule()
    def answer_oldest_with_200(self) -> None:
        key = self.answerable[0]
        self.send_response(key[0], key[1], 200)

    @invariant()
    def memory_is_bounded(self) -> None:
        assert len(self.table) <= MAX_ENTRIES
        assert self.table.pending_bytes <= MAX_BYTES
        assert self.table.pending_bytes >= 0


TableModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_registration_table_model = TableModel.TestCase


def test_same_key_other_content_completes_neither() -> None:
    """A forged REGISTER reusing a pending one's Call-ID and CSeq: the 2xx completes neither."""
    table = RegistrationTable()
    first, forged = register("k", 1, 0), register("k", 1, 5)
    table.apply_register(first, "k", 1, 1.0, {})
    table.apply_register(forged, "k", 1, 1.0, {})
    table.apply_register(forged, "k", 1, 1.0, {})  # a copy of it does not win it back
    assert table.apply(sip.parse_message(response("k", 1, 200)), 2.0, {}) == []
    assert table.statistics()["conflicts"] == 1
    # a retransmission (same bytes) is still one REGISTER
    again = register("k", 2, 0)
    table.apply_register(again, "k", 2, 3.0, {})
    table.apply_register(again, "k", 2, 3.0, {})
    assert len(table.apply(sip.parse_message(response("k", 2, 200)), 4.0, {})) == 1


def test_pending_bytes_return_to_zero_when_everything_is_answered() -> None:
    table = RegistrationTable()
    for i in range(50):
        table.apply(sip.parse_message(register(f"x{i}", 1, 100)), 1.0, {})
    assert table.pending_bytes > 0
    for i in range(50):
        table.apply(sip.parse_message(response(f"x{i}", 1, 200 if i % 2 else 401)), 2.0, {})
    assert (len(table), table.pending_bytes) == (0, 0)
