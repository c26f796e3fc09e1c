"""events.notify: an observer's bug is logged, the others still hear, the push goes on."""

from __future__ import annotations

import logging

import pytest

from pusher_trio.events import notify


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def request_ended(self, *args: object) -> None:
        self.calls.append(args)


class Broken:
    def request_ended(self, *args: object) -> None:
        raise RuntimeError("observer bug")


def test_a_failing_observer_is_logged_and_the_next_one_still_called(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    with caplog.at_level(logging.ERROR, logger="pusher_trio.events"):
        notify([Broken(), recorder], "request_ended", "c1", "a@b", "registered", 0.5)  # type: ignore[list-item]
    assert recorder.calls == [("c1", "a@b", "registered", 0.5)]
    assert "Broken.request_ended failed" in caplog.text
    assert "observer bug" in caplog.text  # the traceback, for whoever fixes it
