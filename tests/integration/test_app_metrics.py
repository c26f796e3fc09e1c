"""The /metrics server and the log formats (parts of the service's observability)."""

from __future__ import annotations

import io
import json
import logging
import socket
import urllib.request

import pytest
import trio
from prometheus_client import CollectorRegistry, Counter

from pusher_trio import logs, metrics


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    yield None
    logs.reset_logging()


async def test_metrics_server_serves_its_registry_and_frees_the_port_when_cancelled() -> None:
    registry = CollectorRegistry()
    Counter("pusher_example", "An example counter.", registry=registry).inc(3)

    def get(port: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            server = metrics.MetricsServer("127.0.0.1", 0, registry)
            host, port = await nursery.start(server.serve)
            assert host == "127.0.0.1" and port > 0
            text = await trio.to_thread.run_sync(get, port)
            assert "pusher_example_total 3.0" in text.splitlines()
            nursery.cancel_scope.cancel()
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))  # the listener is closed


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
