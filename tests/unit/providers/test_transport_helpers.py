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


def test_answers_after_goaway_in_the_same_read_are_accepted() -> None:
    """RFC 9113 §6.8; nginx sends GOAWAY and then the answers to the streams it kept."""
    import h2.config
    import h2.connection
    import h2.events

    from pusher_trio.providers.transport import _H2Client

    client = _H2Client({})
    server = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    request = [(":method", "POST"), (":scheme", "https"), (":authority", "x"), (":path", "/")]
    client.send_headers(1, request, end_stream=True)
    client.send_headers(3, request, end_stream=True)
    server.receive_data(client.data_to_send())
    server.close_connection(last_stream_id=1)
    server.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN
    server.send_headers(1, [(":status", "200")], end_stream=True)
    events = client.receive_data(server.data_to_send())
    kinds = [type(e) for e in events]
    assert h2.events.ConnectionTerminated in kinds
    ended = [e.stream_id for e in events if isinstance(e, h2.events.StreamEnded)]
    assert ended == [1]
