"""Push requests parked until their AOR registers (DESIGN §7, §11). A small trio shell.

A `Wait` is entered synchronously (`enter`), so the moment the push request
was accepted is known before anything is sent: DESIGN §11 counts a
registration whose copy arrives after that moment, not only after the
provider answered. The caller then parks in `wait()` under its own deadline
(`move_on_at` at the call site) and always `leave()`s (`park()` does both).

Waits of one AOR form a `WaitGroup`. The push service keeps the push it
shares between them in `group.shared` and binds its task to `group.scope`:
when the last wait of the group ends, the scope is cancelled, and the next
push request for that AOR starts a new group (and pushes again).

Ending a wait wakes its task directly (`trio.lowlevel.reschedule`) instead of
giving each one a `trio.Event`: memory per waiting request is what limits
`max_waiting`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import attrs
import outcome
import trio

from .control.jsonrpc import Cancelled, ControlError, Overloaded, ShuttingDown, Timeout


@attrs.frozen
class Registration:
    """What ends a wait successfully: the AOR registered again."""

    aor: str
    contact: str  # already masked by whoever notifies (DESIGN §11)
    at: float  # UNIX time the copy was seen
    seen: float = 0.0  # time.perf_counter() when notify_registered ran (latency figures)
    binding: Mapping[str, Any] | None = None  # what picks the fresh binding (DESIGN §12)


class WaitGroup:
    """The waits of one AOR, and the push they share."""

    __slots__ = ("aor", "scope", "shared", "waits")

    def __init__(self, aor: str) -> None:
        self.aor = aor
        self.waits: set[Wait] = set()
        self.shared: Any = None  # the push service's shared push, if one was started
        self.scope: trio.CancelScope | None = None  # cancelled when the group empties


class Wait:
    """One parked push request."""

    __slots__ = ("accepted_at", "aor", "call_id", "group", "result", "task")

    def __init__(self, aor: str, call_id: str, accepted_at: float, group: WaitGroup) -> None:
        self.aor = aor
        self.call_id = call_id
        self.accepted_at = accepted_at
        self.group = group
        self.result: Registration | ControlError | None = None
        self.task: trio.lowlevel.Task | None = None

    @property
    def ended(self) -> bool:
        return self.result is not None


class Waiters:
    """Parked waits per AOR, a cap on how many, and the three ways to end them early."""

    def __init__(
        self, max_waiting: int = 10_000, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_waiting = max_waiting
        self._clock = clock
        self._groups: dict[str, WaitGroup] = {}
        self._by_call: dict[str, list[Wait]] = {}
        self._waiting = 0
        self._closed = False
        self._counters = {
            "entered": 0,
            "registered": 0,
            "cancelled": 0,
            "shutting_down": 0,
            "failed": 0,
            "left_waiting": 0,  # left without being ended: deadline passed, caller went away
            "overloaded": 0,
        }
        self._peak = 0

    # --- state ---------------------------------------------------------------------
    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def closed(self) -> bool:
        return self._closed

    def group(self, aor: str) -> WaitGroup | None:
        return self._groups.get(aor)

    def aors(self) -> list[str]:
        """The AORs some call waits for now."""
        return list(self._groups)

    def statistics(self) -> dict[str, int]:
        return {
            "waiting": self._waiting,
            "aors": len(self._groups),
            "peak": self._peak,
            "max_waiting": self.max_waiting,
            **self._counters,
        }

    # --- parking -------------------------------------------------------------------
    def enter(self, aor: str, call_id: str = "") -> Wait:
        """Reserve a slot now; raises ShuttingDown or Overloaded (nothing may be sent then)."""
        if self._closed:
            raise ShuttingDown("the sidecar is stopping")
        if self._waiting >= self.max_waiting:
            self._counters["overloaded"] += 1
            raise Overloaded(
                f"{self._waiting} push requests are waiting (max_waiting {self.max_waiting})"
            )
        group = self._groups.get(aor)
        if group is None:
            group = self._groups[aor] = WaitGroup(aor)
        w = Wait(aor, call_id, self._clock(), group)
        group.waits.add(w)
        if call_id:
            self._by_call.setdefault(call_id, []).append(w)
        self._waiting += 1
        self._counters["entered"] += 1
        if self._waiting > self._peak:
            self._peak = self._waiting
        return w

    async def wait(self, w: Wait) -> Registration:
        """Park until `w` is ended; return the registration or raise what ended it.

        The deadline is the caller's cancel scope; a cancelled wait stays entered
        (call `leave`).
        """
        if w.result is None:
            w.task = trio.lowlevel.current_task()

            def abort(_: Any) -> trio.lowlevel.Abort:
                w.task = None
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        else:
            await trio.lowlevel.checkpoint()
        result = w.result
        assert result is not None
        if isinstance(result, ControlError):
            raise result
        return result

    def leave(self, w: Wait) -> None:
        """Give the slot back (idempotent); a wait that was not ended counts as timed out."""
        if w.result is None:
            self._counters["left_waiting"] += 1
            self._detach(w)
            w.result = Timeout("left without a registration")

    @contextmanager
    def park(self, aor: str, call_id: str = "") -> Iterator[Wait]:
        w = self.enter(aor, call_id)
        try:
            yield w
        finally:
            self.leave(w)

    async def wait_for_registration(
        self, aor: str, call_id: str = "", *, deadline: float = float("inf")
    ) -> Registration:
        """enter + wait + leave; Timeout (-32002) when trio's clock passes `deadline`."""
        with self.park(aor, call_id) as w:
            with trio.move_on_at(deadline):
                return await self.wait(w)
            raise Timeout("no registration before the deadline")

    # --- ending waits ------------------------------------------------------------------
    def _detach(self, w: Wait) -> None:
        self._waiting -= 1
        group = w.group
        group.waits.discard(w)
        if not group.waits:
            if self._groups.get(group.aor) is group:
                del self._groups[group.aor]
            if group.scope is not None:
                group.scope.cancel()  # nobody left to share the push with
        if w.call_id:
            same_call = self._by_call.get(w.call_id)
            if same_call is not None:
                same_call.remove(w)
                if not same_call:
                    del self._by_call[w.call_id]

    def _end(self, w: Wait, result: Registration | ControlError) -> None:
        if w.result is not None:
            return
        w.result = result
        self._detach(w)
        if w.task is not None:
            trio.lowlevel.reschedule(w.task, outcome.Value(None))
            w.task = None

    def notify_registered(
        self, aor: str, contact: str, at: float, binding: Mapping[str, Any] | None = None
    ) -> int:
        """A successful registration of `aor` seen at `at`: wake the waits accepted before it."""
        group = self._groups.get(aor)
        if group is None:
            return 0
        registration = Registration(aor, contact, at, time.perf_counter(), binding)
        woken = [w for w in group.waits if w.accepted_at <= at]
        for w in woken:
            self._end(w, registration)
        self._counters["registered"] += len(woken)
        return len(woken)

    def fail(self, aor: str, error: ControlError) -> int:
        """End every wait of `aor` with `error` (the push they shared was refused)."""
        group = self._groups.get(aor)
        if group is None:
            return 0
        ended = list(group.waits)
        for w in ended:
            self._end(w, error)
        self._counters["failed"] += len(ended)
        return len(ended)

    def cancel(self, call_id: str) -> int:
        """End the waits of that call with Cancelled; other calls to the same AOR keep waiting."""
        ended = list(self._by_call.get(call_id, ()))
        for w in ended:
            self._end(w, Cancelled(f"call {call_id} was cancelled"))
        self._counters["cancelled"] += len(ended)
        return len(ended)

    def shutdown(self) -> int:
        """End every wait with ShuttingDown and refuse new ones."""
        self._closed = True
        ended = [w for group in list(self._groups.values()) for w in list(group.waits)]
        for w in ended:
            self._end(w, ShuttingDown("the sidecar is stopping"))
        self._counters["shutting_down"] += len(ended)
        return len(ended)
