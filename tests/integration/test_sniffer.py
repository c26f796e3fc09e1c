"""The sniffer on real UDP sockets: HEP and raw SIP copies, drops by reason, allow_from, auth."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sip
from pusher_trio.registrations import Registered, RegistrationTable, Unregistered
from pusher_trio.sniffer import Sniffer, parse_listen
from pusher_trio.store import MemoryStore
from tests.unit.test_registrations import RFC8599_APNS, TOKEN, register, response

HEP_KW: dict[str, Any] = {"src": ("10.0.0.1", 5060), "dst": ("10.0.0.2", 5060)}


class Harness:
    def __init__(self, sniffer: Sniffer, address: tuple[str, int], store: MemoryStore) -> None:
        self.sniffer = sniffer
        self.address = address
        self.store = store
        self.registered: list[Registered] = []
        self.unregistered: list[Unregistered] = []
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.sock = trio.socket.socket(family, socket.SOCK_DGRAM)

    async def send(self, *datagrams: bytes) -> None:
        before = self.sniffer.statistics()["received"]
        for d in datagrams:
            await self.sock.sendto(d, self.address)
        await self.until(lambda s: s["received"] >= before + len(datagrams))

    async def until(self, done: Callable[[dict[str, int]], bool]) -> None:
        while not done(self.sniffer.statistics()):  # noqa: ASYNC110 (counters have no event)
            await trio.sleep(0.005)


def make(store: MemoryStore, harness_box: list[Harness], **kw: Any) -> Sniffer:
    def on_registered(e: Registered) -> None:
        harness_box[0].registered.append(e)

    def on_unregistered(e: Unregistered) -> None:
        harness_box[0].unregistered.append(e)

    args: dict[str, Any] = {
        "listen": ["udp:127.0.0.1:0"],
        "allow_from": ["127.0.0.0/8", "::1/128"],
        "hep_auth_key": "",
        "table": RegistrationTable(),
    }
    args.update(kw)
    return Sniffer(
        store=store, on_registered=on_registered, on_unregistered=on_unregistered, **args
    )


@pytest.fixture
async def running(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    kw = getattr(request, "param", {})
    store = MemoryStore()
    box: list[Harness] = []
    sniffer = make(store, box, **kw)
    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(sniffer.serve)
        box.append(Harness(sniffer, address, store))
        with box[0].sock:
            yield box[0]
        nursery.cancel_scope.cancel()


def hep(payload: bytes, **kw: Any) -> bytes:
    return sip.encode_hep(payload, **{**HEP_KW, **kw})


async def test_hep_copies_learn_a_token(running: Harness) -> None:
    with trio.fail_after(5):
        await running.send(hep(register(RFC8599_APNS)), hep(response(200)))
        (d,) = running.store.devices("alice@example.com")
        assert d.token == TOKEN
        assert d.app == "com.example.phone"
        (event,) = running.registered
        assert event.aor == "alice@example.com"
        stats = running.sniffer.statistics()
        assert stats["hep"] == 2
        assert stats["registrations"] == 1
        assert stats["devices_changed"] == 1
        assert stats["rcvbuf_bytes"] > 0


async def test_raw_sip_copies_learn_a_token(running: Harness) -> None:
    with trio.fail_after(5):
        await running.send(register(RFC8599_APNS), response(200))
        assert [d.token for d in running.store.devices("alice@example.com")] == [TOKEN]
        assert running.sniffer.statistics()["raw"] == 2


async def test_401_changes_nothing(running: Harness) -> None:
    with trio.fail_after(5):
        await running.send(hep(register(RFC8599_APNS)), hep(response(401)))
        assert running.store.devices() == []
        assert running.registered == []


async def test_unregister_unbinds_and_keeps_the_record(running: Harness) -> None:
    with trio.fail_after(5):
        await running.send(register(RFC8599_APNS), response(200))
        gone = RFC8599_APNS.replace("expires=600", "expires=0")
        await running.send(register(gone, cseq=2), response(200, cseq=2))
        (d,) = running.store.devices("alice@example.com")
        assert not d.bound
        assert len(running.unregistered) == 1


BAD = [
    b"",
    b"\r\n\r\n",  # keep-alive
    b"HEP3",  # truncated HEP
    b"HEP3\x00\xff" + b"\x00" * 10,  # length beyond the data
    b"REGISTER garbage\r\n\r\n",
    b"SIP/2.0 200 OK\r\nCSeq: 1 REGISTER\r\n\r\n",  # no Call-ID
    bytes(range(256)) * 4,
    b"INVITE sip:bob@example.com SIP/2.0\r\n\r\n",
    response(200, method="INVITE"),
]


async def test_bad_datagrams_are_counted_and_service_keeps_running(running: Harness) -> None:
    with trio.fail_after(5):
        await running.send(*BAD, hep(b"not sip", payload_type=5))
        stats = running.sniffer.statistics()
        assert stats["errors"] == 0
        assert stats["dropped_malformed"] >= 4
        assert stats["ignored_not_register"] >= 3
        assert stats["ignored_not_sip"] == 1
        total = sum(
            stats[k]
            for k in ("dropped_malformed", "ignored_not_register", "ignored_not_sip", "parsed")
        )
        assert total >= len(BAD) + 1 - 1  # the 200 without Call-ID is parsed or malformed
        # still serving
        await running.send(hep(register(RFC8599_APNS)), hep(response(200)))
        assert len(running.store.devices()) == 1


async def test_non_register_traffic_is_not_parsed(running: Harness) -> None:
    with trio.fail_after(5):
        invite = register(RFC8599_APNS).replace(b"REGISTER sip", b"INVITE sip", 1)
        options_ok = response(200, method="OPTIONS")
        await running.send(hep(invite), hep(options_ok), invite)
        stats = running.sniffer.statistics()
        assert stats["ignored_not_register"] == 3
        assert stats["parsed"] == 0


@pytest.mark.parametrize("running", [{"allow_from": ["10.0.0.0/8"]}], indirect=True)
async def test_allow_from_checks_the_udp_source(running: Harness) -> None:
    with trio.fail_after(5):
        # the HEP src inside says 10.0.0.1, but the datagram comes from 127.0.0.1
        await running.send(hep(register(RFC8599_APNS)), hep(response(200)))
        stats = running.sniffer.statistics()
        assert stats["dropped_not_allowed"] == 2
        assert running.store.devices() == []


@pytest.mark.parametrize("running", [{"hep_auth_key": "s3cret"}], indirect=True)
async def test_auth_key_required_when_configured(running: Harness) -> None:
    with trio.fail_after(5):
        await running.send(
            register(RFC8599_APNS),  # raw SIP: dropped
            hep(register(RFC8599_APNS)),  # no key
            hep(register(RFC8599_APNS), auth_key="wrong"),
        )
        assert running.sniffer.statistics()["dropped_auth"] == 3
        await running.send(
            hep(register(RFC8599_APNS), auth_key="s3cret"), hep(response(200), auth_key="s3cret")
        )
        assert [d.token for d in running.store.devices()] == [TOKEN]


@pytest.mark.parametrize(
    "running", [{"table": RegistrationTable(require_2xx=False)}], indirect=True
)
async def test_require_2xx_false(running: Harness) -> None:
    with trio.fail_after(5):
        await running.send(hep(register(RFC8599_APNS)))
        assert len(running.store.devices()) == 1


async def test_user_agents_mapping_from_the_store(running: Harness) -> None:
    with trio.fail_after(5):
        running.store.set_config(
            "User-Agents.MyApp",
            {
                "regex": "^MyApp",
                "properties": {"Token-App": "x-app", "Token-Type": "x-type", "Token-ID": "x-id"},
            },
        )
        contact = f"<sip:user@192.168.1.1>;x-app=org.myorg.myapp;x-id={TOKEN};x-type=apple"
        await running.send(register(contact, user_agent="MyApp iOS 1.0"), response(200))
        (d,) = running.store.devices()
        assert (d.app, d.token) == ("org.myorg.myapp", TOKEN)


async def test_a_burst_is_drained(running: Harness) -> None:
    with trio.fail_after(10):
        pairs = []
        for i in range(500):
            pairs += [hep(register(RFC8599_APNS, call_id=f"b{i}", to=f"<sip:u{i}@example.com>")),
                      hep(response(200, call_id=f"b{i}"))]  # fmt: skip
        await running.send(*pairs)
        await running.until(lambda s: s["registrations"] >= 500)
        assert running.store.device_count() == 500


async def test_ipv6_listener() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    with trio.fail_after(5):
        store = MemoryStore()
        box: list[Harness] = []
        sniffer = make(store, box, listen=["udp:[::1]:0"])
        async with trio.open_nursery() as nursery:
            try:
                (address,) = await nursery.start(sniffer.serve)
            except OSError as exc:
                pytest.skip(f"no IPv6 loopback: {exc}")
            box.append(Harness(sniffer, address, store))
            with box[0].sock:
                await box[0].send(hep(register(RFC8599_APNS)), hep(response(200)))
            assert len(store.devices()) == 1
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("udp:127.0.0.1:9060", ("127.0.0.1", 9060)),
        ("udp:[::1]:0", ("::1", 0)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
    ],
)
def test_parse_listen(spec: str, expected: tuple[str, int]) -> None:
    assert parse_listen(spec) == expected


@pytest.mark.parametrize("spec", ["tcp:127.0.0.1:1", "udp:localhost:1", "udp:1.2.3.4", "x"])
def test_parse_listen_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(spec)


# --- unusual layouts still register (agreement of sip.peek_*: tests/unit/sip/test_sip_peek.py)

FAST_CASES = [
    response(200),
    response(401, reason="Unauthorized"),
    response(200).replace(b"Call-ID:", b"i:"),
    response(200).replace(b"Call-ID: ", b"call-id:\t"),
    response(200).replace(b"CSeq: 1 REGISTER", b"CSEQ :  1   REGISTER  "),
    response(200).replace(b"\r\n", b"\n"),  # LF only: the parser decides
    response(200).replace(b"Call-ID: ", b"Call-ID:\r\n "),  # folded: the parser decides
    response(200).replace(b"Content-Length: 0", b"Content-Length: 22\r\nContent-Type: x")
    + b"\r\nCall-ID: in-the-body",
]


@pytest.mark.parametrize("payload", FAST_CASES[2:7])
def test_unusual_responses_still_register(payload: bytes) -> None:
    store = MemoryStore()
    sniffer = Sniffer(["udp:127.0.0.1:0"], ["127.0.0.1/32"], "", RegistrationTable(), store,
                      lambda e: None)  # fmt: skip
    sniffer.handle_datagram(register(RFC8599_APNS), "127.0.0.1", 1.0)
    sniffer.handle_datagram(payload, "127.0.0.1", 2.0)
    assert [d.token for d in store.devices()] == [TOKEN]


def direct(**kw: Any) -> tuple[Sniffer, MemoryStore]:
    store = MemoryStore()
    args: dict[str, Any] = {
        "listen": ["udp:127.0.0.1:0"],
        "allow_from": ["127.0.0.0/8"],
        "hep_auth_key": "",
        "table": RegistrationTable(),
        "store": store,
        "on_registered": lambda e: None,
    }
    args.update(kw)
    return Sniffer(**args), store


@pytest.mark.parametrize(
    ("source", "allowed"),
    [("127.0.0.1", True), ("::ffff:127.0.0.9", True), ("10.0.0.1", False), ("::1", False),
     ("fe80::1%eth0", False), ("not an address", False)],
)  # fmt: skip
def test_allow_from_rules(source: str, allowed: bool) -> None:
    sniffer, _ = direct()
    sniffer.handle_datagram(b"OPTIONS sip:x SIP/2.0\r\n\r\n", source, 1.0)
    assert sniffer.statistics()["dropped_not_allowed"] == (0 if allowed else 1)


def test_a_failing_callback_is_counted_and_the_next_datagram_is_served() -> None:
    calls: list[Registered] = []

    def on_registered(event: Registered) -> None:
        calls.append(event)
        if len(calls) == 1:
            raise RuntimeError("boom")

    sniffer, store = direct(on_registered=on_registered)
    for cseq in (1, 2):
        sniffer.handle_datagram(register(RFC8599_APNS, cseq=cseq), "127.0.0.1", 1.0)
        sniffer.handle_datagram(response(200, cseq=cseq), "127.0.0.1", 1.0)
    assert sniffer.statistics()["errors"] == 1
    assert len(calls) == 2
    assert store.device_count() == 1


def test_statistics_keys() -> None:
    sniffer, _ = direct()
    stats = sniffer.statistics()
    for key in ("received", "registrations", "dropped_not_allowed", "dropped_malformed",
                "dropped_auth", "ignored_not_register", "table_pending", "rcvbuf_bytes"):  # fmt: skip
        assert stats[key] == 0


# --- nothing a datagram contains is fatal ---------------------------------------------


SEEDS = [
    register(RFC8599_APNS),
    response(200),
    hep(register(RFC8599_APNS)),
    hep(response(200)),
    register(f"<sip:u@h>;pn-type=apple;pn-tok={TOKEN};app-id=a.dev", user_agent="MyApp"),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if op == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        else:
            del data[pos:]
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(mutated(), st.binary(max_size=200)), min_size=1, max_size=6))
def test_random_datagrams_are_never_fatal(datagrams: list[bytes]) -> None:
    table = RegistrationTable(max_entries=4)
    sniffer, _ = direct(table=table, user_agents=lambda: KAZOO_UA_MAP)
    for i, d in enumerate(datagrams):
        sniffer.handle_datagram(d, "127.0.0.1", 1000.0 + i)
    stats = sniffer.statistics()
    assert stats["errors"] == 0
    assert stats["received"] == len(datagrams)
    assert len(table) <= 4


KAZOO_UA_MAP = {
    "MyApp": {
        "regex": "^MyApp",
        "properties": {"Token-App": "app-id", "Token-Type": "pn-type", "Token-ID": "pn-tok"},
    }
}


@pytest.mark.parametrize(
    "variant",
    [
        register(RFC8599_APNS),
        register(RFC8599_APNS).replace(b"\r\n", b"\n"),  # LF only: parsed at once
        register(RFC8599_APNS).replace(b"Call-ID:", b"i:"),
        register(RFC8599_APNS).replace(b"Call-ID: ", b"Call-ID:\r\n\t"),  # folded
        register(RFC8599_APNS).replace(b"CSeq: 1 REGISTER", b"cseq:1 REGISTER"),
    ],
)
def test_register_layouts_all_register(variant: bytes) -> None:
    sniffer, store = direct()
    sniffer.handle_datagram(hep(variant), "127.0.0.1", 1.0)
    sniffer.handle_datagram(hep(response(200)), "127.0.0.1", 2.0)
    assert [d.token for d in store.devices()] == [TOKEN]
    stats = sniffer.statistics()
    assert stats["registers_lazy"] + stats["parsed"] == 1
