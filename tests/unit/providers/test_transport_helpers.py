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


def test_answer_fields_become_text_and_only_short_ones_are_kept() -> None:
    import ssl

    from pusher_trio.providers import h2wire
    from pusher_trio.providers.transport import Connection, Origin, _Stream

    connection = Connection(Origin("127.0.0.1", 443), ssl.create_default_context())
    stream = connection._streams[1] = _Stream(0.0)
    long_value = b"v" * 300
    headers = [(b":status", b"410"), (b"apns-id", b"a-b"), (b"x-long", long_value)]
    connection._handle([h2wire.ResponseReceived(1, headers), h2wire.StreamEnded(1)])
    assert stream.finished and stream.status == 410
    assert stream.headers == (("apns-id", "a-b"), ("x-long", "v" * 300))
    assert (b"apns-id", b"a-b") in Connection._texts
    assert (b"x-long", long_value) not in Connection._texts
