"""logs.BatchingHandler: `serve` writes its log lines in batches, never losing or reordering one."""

from __future__ import annotations

import io
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
