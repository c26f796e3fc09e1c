"""The /metrics endpoint and the log formats (parts of the service's observability)."""

from __future__ import annotations

import io
import json
import logging

import pytest
import trio

from pusher_trio import logs, metrics


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    yield None
    logs.reset_logging()


STATS = {
    "uptime_s": 12.5,
    "devices": 3,
    "waiting": 1,
    "datagrams": {"received": 10, "dropped_malformed": 2},
    "pushes": {"delivered": 4, "token-invalid": 1},
    "providers": {"pools": {"api.push.apple.com": 1}},
    "note": "not a number",
    "ok": True,
}


def test_render_flattens_numeric_leaves() -> None:
    text = metrics.render(STATS)
    lines = text.splitlines()
    assert "pusher_trio_uptime_s 12.5" in lines
    assert "pusher_trio_devices 3" in lines
    assert "pusher_trio_datagrams_received 10" in lines
    assert "pusher_trio_pushes_token_invalid 1" in lines
    assert "pusher_trio_providers_pools_api_push_apple_com 1" in lines
    assert "pusher_trio_ok 1" in lines
    assert not any("note" in line for line in lines)
    assert "# TYPE pusher_trio_devices gauge" in lines
    assert text.endswith("\n")


def test_answer_routes() -> None:
    ok = metrics.answer(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", lambda: STATS)
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"text/plain; version=0.0.4" in ok
    assert b"pusher_trio_devices 3" in ok
    head = metrics.answer(b"HEAD /metrics HTTP/1.1\r\n\r\n", lambda: STATS)
    assert head.endswith(b"\r\n\r\n")
    assert metrics.answer(b"GET / HTTP/1.1\r\n\r\n", dict).startswith(b"HTTP/1.1 404")
    assert metrics.answer(b"POST /metrics HTTP/1.1\r\n\r\n", dict).startswith(b"HTTP/1.1 405")
    assert metrics.answer(b"garbage\r\n\r\n", dict).startswith(b"HTTP/1.1 400")


async def test_metrics_server_answers_scrapes_and_survives_garbage() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            server = metrics.MetricsServer("127.0.0.1", 0, lambda: STATS)
            host, port = await nursery.start(server.serve)
            assert port > 0
            bad = await trio.open_tcp_stream(host, port)
            await bad.send_all(b"\x00" * 9000)  # no end of head, over the limit
            await bad.aclose()
            for _ in range(2):
                stream = await trio.open_tcp_stream(host, port)
                await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
                data = b""
                while chunk := await stream.receive_some(65536):
                    data += chunk
                await stream.aclose()
                assert data.startswith(b"HTTP/1.1 200 OK")
                assert b"pusher_trio_waiting 1" in data
            assert server.requests == 2
            nursery.cancel_scope.cancel()


def test_json_log_lines_mask_secret_fields() -> None:
    stream = io.StringIO()
    logs.setup_logging("debug", "json", stream)
    token = "abcdef0123456789abcdef0123456789"
    logs.log_event(
        logs.get_logger("test"), logging.INFO, "push", call_id="c1", token=token, outcome="ok"
    )
    line = json.loads(stream.getvalue().strip())
    assert line["msg"] == "push"
    assert line["level"] == "info"
    assert line["logger"] == "pusher_trio.test"
    assert line["call_id"] == "c1"
    assert line["token"] == "abcdef…6789"


def test_text_log_lines_and_reconfigure() -> None:
    stream = io.StringIO()
    logs.setup_logging("info", "text", stream)
    logs.setup_logging("info", "text", stream)  # SIGHUP: replaced, not doubled
    logger = logs.get_logger("test")
    logs.log_event(logger, logging.DEBUG, "hidden")
    logs.log_event(logger, logging.WARNING, "shown", hep_auth_key="s3cretkey-s3cretkey", aor="a b")
    text = stream.getvalue()
    assert text.count("\n") == 1
    assert " warning pusher_trio.test shown " in text
    assert "s3cretkey-s3cretkey" not in text
    assert 'aor="a b"' in text


def test_text_lines_do_not_repeat_fields_the_message_holds() -> None:
    stream = io.StringIO()
    logs.setup_logging("info", "text", stream)
    logger = logs.get_logger("service")
    logger.info("push call_id=%s outcome=%s", "c1", "delivered",
                extra={"fields": {"call_id": "c1", "outcome": "delivered", "latency_ms": 3.5}})  # fmt: skip
    line = stream.getvalue()
    assert line.count("call_id=") == 1
    assert line.count("outcome=") == 1
    assert line.rstrip().endswith("latency_ms=3.5")
