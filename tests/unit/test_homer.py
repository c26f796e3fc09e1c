"""HEP log packets for Homer (DESIGN §13): pure encoding, read back with sip.decode_hep."""

from __future__ import annotations

import json

import pytest

import sip
from pusher_trio.config import ConfigError, parse_config
from pusher_trio.homer import PAYLOAD_LOG, event_body, log_packet

TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"


def test_log_packet_carries_the_call_id_as_correlation_id_and_a_json_body() -> None:
    body = event_body("result", "abc@host", {"aor": "alice@example.com", "result": "Timeout"})
    packet = log_packet(
        body, call_id="abc@host", src=("127.0.0.1", 40000), dst=("10.0.0.9", 9060),
        timestamp=1_700_000_000.25, capture_id=2002,
    )  # fmt: skip
    hep = sip.decode_hep(packet)
    assert hep.payload_type == PAYLOAD_LOG == 100
    assert hep.correlation_id == b"abc@host"
    assert hep.capture_id == 2002
    assert hep.src == ("127.0.0.1", 40000) and hep.dst == ("10.0.0.9", 9060)
    assert hep.timestamp == pytest.approx(1_700_000_000.25)
    assert hep.protocol == 17
    assert json.loads(hep.payload) == {
        "event": "result", "call_id": "abc@host", "aor": "alice@example.com", "result": "Timeout",
    }  # fmt: skip


def test_a_push_without_call_id_has_no_correlation_id() -> None:
    packet = log_packet(
        event_body("push", "", {}), call_id="", src=("::1", 1), dst=("::1", 2),
        timestamp=0.0, capture_id=0,
    )  # fmt: skip
    assert sip.decode_hep(packet).correlation_id is None


def test_event_body_keeps_unicode_and_is_compact() -> None:
    body = event_body("registered", "c1", {"contact": "sip:zoë@example.com"})
    assert body == '{"event":"registered","call_id":"c1","contact":"sip:zoë@example.com"}'.encode()


def test_hep_section_of_the_configuration() -> None:
    config = parse_config('[hep]\ncapture = "udp:homer.example.net:9060"\n', "f.toml")
    assert config.hep.address == ("homer.example.net", 9060)
    assert config.hep.capture_id == 2002
    assert parse_config('[hep]\ncapture = "udp:[::1]:9060"\n', "f.toml").hep.address == (
        "::1",
        9060,
    )
    assert parse_config("", "f.toml").hep.address is None
    for text, message in (
        ('[hep]\ncapture = "tcp:homer:9060"\n', "udp:host:port"),
        ('[hep]\ncapture = "homer:9060"\n', "udp:host:port"),
        ('[hep]\ncapture = "udp:homer:0"\n', "port"),
        ("[hep]\ncapture_id = -1\n", "32-bit"),
        ("[hep]\nauth = 1\n", "unknown key"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config(text, "f.toml")
        assert message in str(info.value)
        assert "hep." in str(info.value)
