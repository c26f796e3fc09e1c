"""logs.BatchingHandler: `serve` writes its log lines in batches, never losing or reordering one."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from pusher_trio import logs


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def stream() -> Iterator[CountingStream]:
    out = CountingStream()
    logs.setup_logging("info", "text", out, batched=True)
    try:
        yield out
    finally:
        logs.reset_logging()


def test_info_lines_wait_for_their_batch_and_keep_their_order(stream: CountingStream) -> None:
    log = logs.get_logger("test")
    for n in range(10):
        log.info("line %d", n)
    assert stream.getvalue() == ""  # nothing written yet: the batch is open
    logs.flush_logs()
    lines = stream.getvalue().splitlines()
    assert [line.split()[-1] for line in lines] == [str(n) for n in range(10)]
    assert stream.writes == 1


def test_a_warning_writes_the_batch_at_once(stream: CountingStream) -> None:
    log = logs.get_logger("test")
    log.info("first")
    log.warning("trouble")
    text = stream.getvalue()
    assert text.index("first") < text.index("trouble")
    assert text.endswith("trouble\n")


def test_a_full_batch_is_written_without_a_flush(stream: CountingStream) -> None:
    log = logs.get_logger("test")
    for n in range(logs.MAX_BATCH + 3):
        log.info("n=%d", n)
    assert len(stream.getvalue().splitlines()) == logs.MAX_BATCH
    logs.flush_logs()
    assert len(stream.getvalue().splitlines()) == logs.MAX_BATCH + 3


def test_an_old_batch_is_written_by_the_next_line(
    stream: CountingStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: clock[0])
    log = logs.get_logger("test")
    log.info("old")
    clock[0] += 2 * logs.FLUSH_INTERVAL
    log.info("new")
    assert stream.getvalue().splitlines()[-1].endswith("new")


def test_replacing_the_handler_writes_what_it_held(stream: CountingStream) -> None:
    logs.get_logger("test").info("held")
    logs.setup_logging("info", "text", stream, batched=True)  # SIGHUP
    assert "held" in stream.getvalue()
    ours = [
        h
        for h in logging.getLogger(logs.LOGGER_NAME).handlers
        if isinstance(h, logs.BatchingHandler)
    ]
    assert len(ours) == 1  # replaced, not doubled


FIELDS = {"call_id": "c-1", "token": "abcdef0123456789abcdef", "latency_ms": 3.1, "reason": None}


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_info_line_writes_what_logger_info_writes(fmt: str) -> None:
    """The hot path's line is the ordinary line, masking included (timestamps aside)."""
    out = io.StringIO()
    logs.setup_logging("info", fmt, out, batched=True)
    try:
        log = logs.get_logger("service")
        args = ("c-1", 3.14159)
        logs.info_line(log, "push call_id=%s latency_ms=%.1f", args, FIELDS)
        log.info("push call_id=%s latency_ms=%.1f", *args, extra={"fields": FIELDS})
        logs.flush_logs()
    finally:
        logs.reset_logging()
    fast, ordinary = out.getvalue().splitlines()
    if fmt == "json":
        fast_obj, ordinary_obj = json.loads(fast), json.loads(ordinary)
        assert fast_obj.pop("ts") == pytest.approx(ordinary_obj.pop("ts"), abs=1.0)
        assert fast_obj == ordinary_obj
        assert "0123456789" not in fast  # the token is masked on this path too
    else:
        assert fast.split(" ", 1)[1] == ordinary.split(" ", 1)[1]
        assert "token=" in fast and "0123456789" not in fast


def test_info_line_is_an_ordinary_record_elsewhere(caplog: pytest.LogCaptureFixture) -> None:
    """Without serve's handler (tests, another setup) the line is a LogRecord as before."""
    log = logs.get_logger("service")
    with caplog.at_level(logging.INFO, logger="pusher_trio"):
        logs.info_line(log, "push call_id=%s", ("c-2",), {"call_id": "c-2"})
    (record,) = [r for r in caplog.records if r.name == log.name]
    assert record.getMessage() == "push call_id=c-2"
    assert record.fields == {"call_id": "c-2"}  # type: ignore[attr-defined]


def test_info_line_respects_the_level() -> None:
    out = io.StringIO()
    logs.setup_logging("warning", "text", out, batched=True)
    try:
        logs.info_line(logs.get_logger("service"), "push %s", ("x",), {})
        logs.flush_logs()
    finally:
        logs.reset_logging()
    assert out.getvalue() == ""
