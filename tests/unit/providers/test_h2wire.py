"""h2wire against a strict peer: h2's own server-side state machine.

Every exchange goes through bytes: what our client writes, h2's server parses (and
would refuse if it broke RFC 9113), and what h2's server writes, our client parses.
"""

from __future__ import annotations

import struct

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pusher_trio.providers import h2wire
from pusher_trio.providers._hpack import CachingDecoder, StatelessEncoder
from pusher_trio.providers.h2wire import (
    ClientConnection,
    DataReceived,
    GoAway,
    PingAcknowledged,
    ProtocolError,
    ResponseReceived,
    SettingsChanged,
    StreamEnded,
    StreamReset,
    WindowUpdated,
    frame,
)

REQUEST = [
    (b":method", b"POST"),
    (b":scheme", b"https"),
    (b":authority", b"api.example.com"),
    (b":path", b"/3/device/abc"),
]


class Peer:
    """Our client and h2's server, connected back to back (after the handshake)."""

    def __init__(self, **server_settings: int) -> None:
        self.client = ClientConnection(StatelessEncoder(), CachingDecoder())
        self.server = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.server.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                getattr(h2.settings.SettingCodes, k): v for k, v in server_settings.items()
            },
        )
        self.client.initiate()
        self.server.initiate_connection()
        self.server_events = self.to_server()
        self.client_events = self.to_client()
        self.server_events += self.to_server()  # the client's SETTINGS ACK

    def to_server(self) -> list[h2.events.Event]:
        return list(self.server.receive_data(self.client.data_to_send()))

    def to_client(self) -> list[h2wire.Event]:
        return self.client.receive(self.server.data_to_send())


def test_handshake_exchanges_settings_both_ways() -> None:
    peer = Peer(MAX_CONCURRENT_STREAMS=7, INITIAL_WINDOW_SIZE=1000, MAX_FRAME_SIZE=20000)
    settings_events = [e for e in peer.client_events if isinstance(e, SettingsChanged)]
    assert len(settings_events) == 1
    assert peer.client.settings_received
    assert peer.client.max_concurrent_streams == 7
    assert peer.client.initial_window == 1000
    assert peer.client.max_frame_size == 20000
    # h2's server saw our settings (no push) and our ACK of its settings
    received = [e for e in peer.server_events if isinstance(e, h2.events.RemoteSettingsChanged)]
    assert (
        received
        and received[0].changed_settings[h2.settings.SettingCodes.ENABLE_PUSH].new_value == 0
    )
    assert any(isinstance(e, h2.events.SettingsAcknowledged) for e in peer.server_events)
    # and our connection window was raised beyond the default
    assert peer.server.outbound_flow_control_window == h2wire.CONNECTION_WINDOW


def test_a_request_and_its_answer() -> None:
    peer = Peer()
    stream_id = peer.client.send_headers(REQUEST, end_stream=False)
    body = b'{"aps":{}}'
    assert peer.client.window(stream_id) >= len(body)
    peer.client.send_data(stream_id, body, end_stream=True)
    events = peer.to_server()
    request = next(e for e in events if isinstance(e, h2.events.RequestReceived))
    assert list(request.headers) == REQUEST
    assert b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived)) == body
    assert any(isinstance(e, h2.events.StreamEnded) for e in events)

    peer.server.send_headers(stream_id, [(b":status", b"200"), (b"apns-id", b"x-1")])
    peer.server.send_data(stream_id, b"ok", end_stream=True)
    got = peer.to_client()
    assert [type(e) for e in got] == [ResponseReceived, DataReceived, StreamEnded]
    assert isinstance(got[0], ResponseReceived)
    assert got[0].headers == [(b":status", b"200"), (b"apns-id", b"x-1")]
    assert isinstance(got[1], DataReceived) and got[1].data == b"ok"
    assert peer.client.open_streams == 0
    assert stream_id == 1 and peer.client.send_headers(REQUEST, end_stream=True) == 3


def test_a_large_header_block_goes_out_with_continuation_frames() -> None:
    peer = Peer()
    headers = [*REQUEST, (b"x-big", b"v" * 40000)]
    peer.client.send_headers(headers, end_stream=True)
    events = peer.to_server()
    request = next(e for e in events if isinstance(e, h2.events.RequestReceived))
    assert list(request.headers) == headers


def test_informational_answers_are_skipped_and_trailers_end_the_stream() -> None:
    peer = Peer()
    stream_id = peer.client.send_headers(REQUEST, end_stream=True)
    peer.to_server()
    peer.server.send_headers(stream_id, [(b":status", b"100")])
    peer.server.send_headers(stream_id, [(b":status", b"200")])
    peer.server.send_headers(stream_id, [(b"x-trailer", b"1")], end_stream=True)
    got = peer.to_client()
    assert [type(e) for e in got] == [ResponseReceived, StreamEnded]


def test_flow_control_waits_for_the_servers_window() -> None:
    peer = Peer(INITIAL_WINDOW_SIZE=10)
    stream_id = peer.client.send_headers(REQUEST, end_stream=False)
    assert peer.client.window(stream_id) == 10
    peer.client.send_data(stream_id, b"0123456789", end_stream=False)
    assert peer.client.window(stream_id) == 0
    with pytest.raises(ValueError):
        peer.client.send_data(stream_id, b"x", end_stream=True)
    peer.to_server()
    peer.server.increment_flow_control_window(5, stream_id=stream_id)
    got = peer.to_client()
    assert any(isinstance(e, WindowUpdated) and e.stream_id == stream_id for e in got)
    assert peer.client.window(stream_id) == 5
    peer.client.send_data(stream_id, b"abcde", end_stream=True)
    events = peer.to_server()
    assert any(isinstance(e, h2.events.StreamEnded) for e in events)


def test_a_settings_change_moves_open_stream_windows() -> None:
    peer = Peer(INITIAL_WINDOW_SIZE=10)
    stream_id = peer.client.send_headers(REQUEST, end_stream=False)
    peer.server.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 30})
    peer.to_client()
    assert peer.client.window(stream_id) == 30


def test_answers_after_goaway_in_the_same_read_are_accepted() -> None:
    """RFC 9113 §6.8: nginx sends GOAWAY and then the answers to the streams it kept."""
    peer = Peer()
    first = peer.client.send_headers(REQUEST, end_stream=True)
    second = peer.client.send_headers(REQUEST, end_stream=True)
    peer.to_server()
    peer.server.close_connection(last_stream_id=first)
    peer.server.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN
    peer.server.send_headers(first, [(b":status", b"200")], end_stream=True)
    got = peer.to_client()
    goaway = next(e for e in got if isinstance(e, GoAway))
    assert goaway.last_stream_id == first and goaway.error_code == h2wire.NO_ERROR
    assert [e.stream_id for e in got if isinstance(e, StreamEnded)] == [first]
    assert peer.client.goaway_received == first
    assert second in peer.client.streams  # the caller replays it elsewhere


def test_goaway_debug_data_is_reported() -> None:
    peer = Peer()
    peer.server.close_connection(error_code=0, additional_data=b'{"reason":"Shutdown"}')
    got = peer.to_client()
    assert isinstance(got[0], GoAway) and got[0].debug_data == b'{"reason":"Shutdown"}'


def test_the_servers_stream_limit_is_kept() -> None:
    peer = Peer(MAX_CONCURRENT_STREAMS=2)
    peer.client.send_headers(REQUEST, end_stream=True)
    peer.client.send_headers(REQUEST, end_stream=True)
    with pytest.raises(h2wire.TooManyStreams):
        peer.client.send_headers(REQUEST, end_stream=True)
    events = peer.to_server()
    assert len([e for e in events if isinstance(e, h2.events.RequestReceived)]) == 2


def test_a_reset_from_the_server_ends_that_stream_only() -> None:
    peer = Peer()
    first = peer.client.send_headers(REQUEST, end_stream=True)
    second = peer.client.send_headers(REQUEST, end_stream=True)
    peer.to_server()
    peer.server.reset_stream(first, h2.errors.ErrorCodes.REFUSED_STREAM)
    got = peer.to_client()
    assert len(got) == 1 and isinstance(got[0], StreamReset)
    assert got[0].by_peer and got[0].error_code == h2wire.REFUSED_STREAM
    assert list(peer.client.streams) == [second]


def test_our_reset_and_what_still_comes_for_that_stream() -> None:
    """A stream we reset is forgotten, but its header block still feeds the HPACK table."""
    peer = Peer()
    gone = peer.client.send_headers(REQUEST, end_stream=True)
    kept = peer.client.send_headers(REQUEST, end_stream=True)
    peer.to_server()
    peer.client.reset_stream(gone, h2wire.CANCEL)
    assert peer.client.data_to_send() == frame(h2wire.RST_STREAM, 0, gone, b"\x00\x00\x00\x08")
    with pytest.raises(h2wire.StreamClosed):
        peer.client.reset_stream(gone)
    # The server answered before our RST_STREAM reached it. h2's encoder indexes this
    # field: the second answer refers to the table entry the first one added.
    answer = [(b":status", b"200"), (b"x-served-by", b"edge-17")]
    peer.server.send_headers(gone, answer)
    peer.server.send_data(gone, b"late", end_stream=True)
    peer.server.send_headers(kept, answer, end_stream=True)
    got = peer.to_client()
    assert [type(e) for e in got] == [ResponseReceived, StreamEnded]
    assert isinstance(got[0], ResponseReceived) and got[0].headers == answer
    assert isinstance(got[1], StreamEnded) and got[1].stream_id == kept


def test_an_answer_before_the_body_was_sent_stops_the_body() -> None:
    peer = Peer(INITIAL_WINDOW_SIZE=4)
    stream_id = peer.client.send_headers(REQUEST, end_stream=False)
    peer.client.send_data(stream_id, b"1234", end_stream=False)
    peer.to_server()
    peer.server.send_headers(stream_id, [(b":status", b"413")], end_stream=True)
    got = peer.to_client()
    assert [type(e) for e in got] == [ResponseReceived, StreamEnded]
    with pytest.raises(h2wire.StreamClosed):
        peer.client.window(stream_id)
    with pytest.raises(h2wire.StreamClosed):
        peer.client.send_data(stream_id, b"5", end_stream=True)
    events = peer.to_server()
    assert any(isinstance(e, h2.events.StreamReset) for e in events)


def test_pings_both_ways() -> None:
    peer = Peer()
    peer.server.ping(b"12345678")
    assert peer.to_client() == []
    events = peer.to_server()  # our automatic ACK
    assert any(
        isinstance(e, h2.events.PingAckReceived) and e.ping_data == b"12345678" for e in events
    )
    peer.client.ping(b"abcdefgh")
    peer.to_server()  # h2 acknowledges by itself
    got = peer.to_client()
    assert len(got) == 1 and isinstance(got[0], PingAcknowledged) and got[0].payload == b"abcdefgh"


def test_our_goaway_reaches_the_server() -> None:
    peer = Peer()
    peer.client.close()
    peer.client.close()  # once only
    events = peer.to_server()
    assert [type(e) for e in events] == [h2.events.ConnectionTerminated]


def test_big_answers_give_back_window_credit() -> None:
    peer = Peer()
    stream_id = peer.client.send_headers(REQUEST, end_stream=True)
    peer.to_server()
    peer.server.send_headers(stream_id, [(b":status", b"200")])
    before = peer.server.local_flow_control_window(stream_id)
    chunk = b"z" * 16384
    total = 0
    for _ in range(40):  # 640 KiB: past half of our stream window
        peer.server.send_data(stream_id, chunk)
        total += len(chunk)
        peer.to_client()
    assert before == h2wire.STREAM_WINDOW
    peer.to_server()  # our WINDOW_UPDATE
    assert peer.server.local_flow_control_window(stream_id) > before - total


def test_bytes_in_any_split_give_the_same_events() -> None:
    peer = Peer()
    first = peer.client.send_headers(REQUEST, end_stream=True)
    peer.to_server()
    peer.server.send_headers(first, [(b":status", b"410")])
    peer.server.send_data(first, b'{"reason":"Unregistered"}', end_stream=True)
    data = peer.server.data_to_send()
    got: list[h2wire.Event] = []
    for index in range(len(data)):
        got += peer.client.receive(data[index : index + 1])
    assert [type(e) for e in got] == [ResponseReceived, DataReceived, StreamEnded]


def raw_client() -> ClientConnection:
    client = ClientConnection(StatelessEncoder(), CachingDecoder())
    client.initiate()
    client.data_to_send()
    return client


def goaway_code(client: ClientConnection) -> int:
    out = client.data_to_send()
    assert out[3] == h2wire.GOAWAY
    return int(struct.unpack(">I", out[13:17])[0])


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(h2wire.PUSH_PROMISE, h2wire.END_HEADERS, 1, b"\x00\x00\x00\x02"), 0x1),
        (b"\x00\x40\x01" + bytes((0, 0)) + b"\x00\x00\x00\x01", 0x6),  # 16385 bytes
        (frame(h2wire.DATA, 0, 1, b"x"), 0x1),  # idle stream
        (frame(h2wire.DATA, 0, 0, b"x"), 0x1),
        (frame(h2wire.HEADERS, h2wire.END_HEADERS, 2, b"\x88"), 0x1),  # even stream
        (frame(h2wire.CONTINUATION, h2wire.END_HEADERS, 1, b"\x88"), 0x1),
        (frame(h2wire.SETTINGS, 0, 0, b"\x00\x02\x00\x00\x00\x02"), 0x1),
        (frame(h2wire.SETTINGS, 0, 0, b"\x00\x04\x80\x00\x00\x00"), 0x3),
        (frame(h2wire.SETTINGS, 0, 0, b"\x00\x05\x00\x00\x00\x01"), 0x1),
        (frame(h2wire.SETTINGS, 0, 0, b"\x00\x05"), 0x6),
        (frame(h2wire.SETTINGS, 0, 1, b""), 0x1),
        (frame(h2wire.SETTINGS, h2wire.ACK, 0, b"\x00\x00\x00\x00\x00\x00"), 0x6),
        (frame(h2wire.WINDOW_UPDATE, 0, 0, b"\x00\x00\x00\x00"), 0x1),
        (frame(h2wire.WINDOW_UPDATE, 0, 0, b"\x7f\xff\xff\xff"), 0x3),
        (frame(h2wire.WINDOW_UPDATE, 0, 0, b"\x00"), 0x6),
        (frame(h2wire.PING, 0, 0, b"short"), 0x6),
        (frame(h2wire.PING, 0, 1, b"12345678"), 0x1),
        (frame(h2wire.GOAWAY, 0, 0, b"\x00"), 0x6),
        (frame(h2wire.GOAWAY, 0, 1, b"\x00" * 8), 0x1),
        (frame(h2wire.RST_STREAM, 0, 0, b"\x00" * 4), 0x1),
        (frame(h2wire.PRIORITY, 0, 0, b"\x00" * 5), 0x1),
    ],
)
def test_connection_errors_queue_goaway_with_the_rfc_code(data: bytes, code: int) -> None:
    client = raw_client()
    with pytest.raises(ProtocolError) as caught:
        client.receive(data)
    assert caught.value.code == code
    assert goaway_code(client) == code


def test_a_broken_header_block_is_a_compression_error() -> None:
    client = raw_client()
    stream_id = client.send_headers(REQUEST, end_stream=True)
    client.data_to_send()
    with pytest.raises(ProtocolError) as caught:
        client.receive(frame(h2wire.HEADERS, h2wire.END_HEADERS, stream_id, b"\xff\xff\xff"))
    assert caught.value.code == h2wire.COMPRESSION_ERROR


def test_a_header_block_cut_by_another_frame_is_refused() -> None:
    client = raw_client()
    stream_id = client.send_headers(REQUEST, end_stream=True)
    with pytest.raises(ProtocolError):
        client.receive(
            frame(h2wire.HEADERS, 0, stream_id, b"\x88") + frame(h2wire.PING, 0, 0, b"8" * 8)
        )


def test_padding_priority_and_continuation_are_read() -> None:
    client = raw_client()
    stream_id = client.send_headers(REQUEST, end_stream=True)
    padded = bytes([2]) + b"\x00\x00\x00\x00\x10" + b"\x88" + b"\x00\x00"  # pad 2, priority
    data = frame(h2wire.HEADERS, h2wire.PADDED | h2wire.PRIORITY_FLAG, stream_id, padded) + frame(
        h2wire.CONTINUATION, h2wire.END_HEADERS, stream_id, b""
    )
    data += frame(h2wire.DATA, h2wire.PADDED | h2wire.END_STREAM, stream_id, b"\x03ok\x00\x00\x00")
    got = client.receive(data)
    assert [type(e) for e in got] == [ResponseReceived, DataReceived, StreamEnded]
    assert isinstance(got[0], ResponseReceived) and got[0].headers == [(b":status", b"200")]
    assert isinstance(got[1], DataReceived) and got[1].data == b"ok"


@pytest.mark.parametrize(
    "data",
    [
        frame(h2wire.DATA, 0, 1, b"early"),  # DATA before the answer's headers
        frame(h2wire.HEADERS, h2wire.END_HEADERS, 1, b"\x88")
        + frame(h2wire.HEADERS, h2wire.END_HEADERS, 1, b"\x88"),  # trailers without END_STREAM
        frame(h2wire.HEADERS, h2wire.END_HEADERS, 1, bytes([0x40, 1, ord("x"), 1, ord("y")])),
        frame(h2wire.HEADERS, h2wire.END_HEADERS | h2wire.END_STREAM, 1, b"\x48\x03100"),
        frame(h2wire.WINDOW_UPDATE, 0, 1, b"\x00\x00\x00\x00"),
        frame(h2wire.PRIORITY, 0, 1, b"\x00"),
    ],
)
def test_stream_errors_reset_only_that_stream(data: bytes) -> None:
    client = raw_client()
    stream_id = client.send_headers(REQUEST, end_stream=True)
    client.data_to_send()
    got = client.receive(data)
    resets = [e for e in got if isinstance(e, StreamReset)]
    assert len(resets) == 1 and not resets[0].by_peer and resets[0].stream_id == stream_id
    out = client.data_to_send()
    assert out[3] == h2wire.RST_STREAM
    assert stream_id not in client.streams
    # the connection goes on
    assert client.send_headers(REQUEST, end_stream=True) == stream_id + 2


def test_stream_ids_run_out() -> None:
    client = raw_client()
    client.next_stream_id = h2wire.MAX_STREAM_ID + 2
    with pytest.raises(h2wire.NoStreamIds):
        client.send_headers(REQUEST, end_stream=True)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 12), st.integers(0, 255), st.integers(0, 7), st.binary(max_size=40)
        ),
        max_size=8,
    )
)
def test_any_frames_end_in_events_or_a_protocol_error(
    frames: list[tuple[int, int, int, bytes]],
) -> None:
    client = raw_client()
    client.send_headers(REQUEST, end_stream=True)
    client.send_headers(REQUEST, end_stream=False)
    data = b"".join(
        frame(kind, flags, stream_id, payload) for kind, flags, stream_id, payload in frames
    )
    try:
        events = client.receive(data)
    except ProtocolError as error:
        assert error.code in h2wire.ERROR_NAMES
        return
    assert all(isinstance(e, h2wire.Event) for e in events)
