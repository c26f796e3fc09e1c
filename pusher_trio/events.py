"""What the push service tells its observers (metrics, Homer) as a push request runs.

The service calls these synchronously on the push path, so an observer must not
block or await: it updates a counter, observes a histogram or hands a datagram to
a non-blocking socket. An observer that raises is logged and skipped; it never
fails the push (`notify`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from .model import Device

log = logging.getLogger("pusher_trio.events")


class PushObserver(Protocol):
    """The moments of one push request (DESIGN §13: push sent / REGISTER seen / relayed)."""

    def push_started(self, call_id: str, aor: str, devices: Sequence[Device]) -> None:
        """A push to `devices` goes out for `aor` (once per shared push, not per caller)."""

    def push_answered(
        self, call_id: str, device: Device, outcome: str, reason: str | None, seconds: float
    ) -> None:
        """The provider answered for `device`; `seconds` since the request that pushed came in."""

    def registered(self, call_id: str, aor: str, contact: str, wake_seconds: float | None) -> None:
        """A fresh registration ended this call's wait; `wake_seconds` since the push went out."""

    def request_ended(self, call_id: str, aor: str, result: str, seconds: float) -> None:
        """The `push` request was answered: `result` is its status or its error's name."""


def notify(observers: Sequence[PushObserver], method: str, *args: object) -> None:
    """Call `method` on each observer; an observer's bug is logged, the push goes on."""
    for observer in observers:
        try:
            getattr(observer, method)(*args)
        except Exception:
            log.exception("push observer %s.%s failed", type(observer).__name__, method)


__all__ = ["PushObserver", "notify"]
