"""Binding-refresh pushes (RFC 8599 `sip.pnsreg`, DESIGN §12), the pure schedule.

A UA that puts `+sip.pnsreg` in its REGISTER's Contact asks the proxy to push it shortly
before its binding expires, so that it can sleep instead of waking on a timer. Every
successful REGISTER of such a device (re)arms one refresh, due `lead` seconds before the
binding expires (at half its lifetime when that is shorter). When one is due the service
pushes once and then waits for the binding's expiry: a REGISTER of that device before
then counts as answered and arms the next refresh; none counts as unanswered and nothing
more is sent (never a loop: the next push needs the phone's next REGISTER).

The schedule is a heap with lazy deletion (a newer REGISTER supersedes the entry of the
same device by generation); times are the caller's clock (UNIX seconds).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

import attrs

from .model import App, Device

DEFAULT_LEAD = 120.0
DEFAULT_MAX_DEVICES = 1_000_000

Key = tuple[str, str]  # (aor, device_id)


def due_at(registered_at: float, expires: float, lead: float) -> float:
    """When the refresh push for a binding of `expires` seconds is due."""
    return registered_at + max(expires - lead, expires / 2)


class RefreshSchedule:
    """Which device is due a refresh push when, and which pushed ones await a REGISTER."""

    def __init__(self, lead: float = DEFAULT_LEAD, max_devices: int = DEFAULT_MAX_DEVICES):
        self.lead = lead
        self.max_devices = max_devices
        self._heap: list[tuple[float, int, Key]] = []
        self._armed: dict[Key, tuple[int, float]] = {}  # key -> (generation, binding expiry)
        self._awaiting: dict[Key, float] = {}  # pushed, until this binding expiry
        self._generation = 0
        self.counters = {"armed": 0, "answered": 0, "unanswered": 0, "dropped_full": 0}

    def __len__(self) -> int:
        return len(self._armed)

    @property
    def next_due(self) -> float | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def registered(self, key: Key, at: float, expires: float, asked: bool = True) -> None:
        """A successful REGISTER of a device (`asked`: with sip.pnsreg and expires > 0).

        It answers a refresh push sent to that device, asked or not; only an asking one
        is armed again."""
        if key in self._awaiting:
            del self._awaiting[key]
            self.counters["answered"] += 1
        if not asked:
            self._armed.pop(key, None)
            return
        if key not in self._armed and len(self._armed) >= self.max_devices:
            self.counters["dropped_full"] += 1
            return
        self._generation += 1
        self._armed[key] = (self._generation, at + expires)
        heapq.heappush(self._heap, (due_at(at, expires, self.lead), self._generation, key))
        self.counters["armed"] += 1

    def forget(self, key: Key) -> None:
        """The binding is gone (unregistered, or no longer asks): no refresh."""
        self._armed.pop(key, None)
        self._awaiting.pop(key, None)

    def due(self, now: float) -> Iterator[Key]:
        """The devices whose refresh push is due now; each is then awaited until its expiry."""
        self.expire_awaiting(now)
        while self._heap and self._heap[0][0] <= now:
            _, generation, key = heapq.heappop(self._heap)
            armed = self._armed.get(key)
            if armed is None or armed[0] != generation:
                continue  # superseded by a later REGISTER, or forgotten
            del self._armed[key]
            self._awaiting[key] = armed[1]
            yield key

    def expire_awaiting(self, now: float) -> None:
        for key, expiry in list(self._awaiting.items()):
            if expiry <= now:
                del self._awaiting[key]
                self.counters["unanswered"] += 1

    def statistics(self) -> dict[str, int]:
        return {**self.counters, "scheduled": len(self._armed), "awaiting": len(self._awaiting)}

    def _drop_stale(self) -> None:
        while self._heap:
            _, generation, key = self._heap[0]
            armed = self._armed.get(key)
            if armed is not None and armed[0] == generation:
                return
            heapq.heappop(self._heap)


def refresh_target(app: App | None, device: Device) -> tuple[App, Device] | str:
    """Where one refresh push goes, or why none does.

    APNs: a background push (see providers.apns) to the bundle id, so never to a PushKit
    token: a device registered with one needs its alert token (Linphone's `&remote`).
    """
    if app is None or app.type != device.type:
        return "no_app"
    if device.type == "apple" and (device.push_type or app.push_type) == "voip":
        token = device.extra.get("alert_token", "")
        if not token:
            return "no_background_token"
        device = attrs.evolve(device, token=token, push_type="alert")
    return app, device


__all__ = ["DEFAULT_LEAD", "RefreshSchedule", "due_at", "refresh_target"]
