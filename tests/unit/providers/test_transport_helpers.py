"""Small pure parts of the transport and the Pusher conformance of Providers."""

from __future__ import annotations

import ssl

from pusher_trio.model import Delivered, Pusher, RetryLater
from pusher_trio.providers import Providers, outcome_name
from pusher_trio.providers.transport import ConnectError, Origin, goaway_reason, tls_refused


def test_providers_is_a_pusher() -> None:
    pusher: Pusher = Providers()
    assert callable(pusher.send)


def test_goaway_reason_reads_apples_json() -> None:
    assert goaway_reason(b'{"reason":"Shutdown"}') == "Shutdown"
    assert goaway_reason(b"session_timed_out") == "session_timed_out"
    assert goaway_reason(None) == ""


def test_origin_authority() -> None:
    assert Origin("api.push.apple.com", 443).authority == "api.push.apple.com"
    assert Origin("127.0.0.1", 8443).authority == "127.0.0.1:8443"
    assert Origin("::1", 9000).authority == "[::1]:9000"


def test_tls_refused_recognises_certificate_errors() -> None:
    verify = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
    )
    wrapped = ConnectError("x")
    wrapped.__cause__ = verify
    assert tls_refused(wrapped)
    alert = ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca")
    alert.reason = "TLSV1_ALERT_UNKNOWN_CA"
    assert tls_refused(alert)
    assert not tls_refused(ConnectionResetError(104, "reset"))


def test_outcome_names() -> None:
    assert outcome_name(Delivered()) == "delivered"
    assert outcome_name(RetryLater("x")) == "retry_later"
