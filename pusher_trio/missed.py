"""Missed-call alert pushes (DESIGN §12), the pure part.

A call that pushed (a VoIP wake-up, or a data message on Android) and then ends
unanswered leaves nothing on the phone: PushKit's call UI is gone with the call, and
Apple forbids a VoIP push to say "cancelled". So the device gets a visible alert push,
collapse id = Call-ID, with the caller's number and name.

Kamailio says when such a call ends (`call_ended {call_id, reason}`). `MissedCalls`
remembers, per Call-ID, who was pushed for it and for whom (bounded in count and age),
and `alert_for` decides what one alert push is: the app's missed-call template (or the
Kazoo-style default with loc-key `MC_MSG`), push type alert, and for an APNs device
registered with a PushKit token its alert token (Linphone's `pn-prid=...:voip&...:remote`),
or nothing at all: an alert to a VoIP token is refused by Apple (DeviceTokenNotForTopic),
and that answer would mark the token dead.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import attrs

from .model import App, Device, PushMessage

# `reason`s that mean the call was answered (Reason: SIP;cause=200 on the CANCEL, RFC 3326):
# no missed call.
ANSWERED_REASONS = frozenset({"answered", "answered_elsewhere"})
# `reason`s Kamailio sends for a call that ended unanswered
UNANSWERED_REASONS = frozenset({"cancel", "timeout", "no_answer", "caller_gone"})
DEFAULT_MAX_CALLS = 10_000
DEFAULT_MAX_AGE = 600.0  # seconds: tm's fr_inv_timer (120 s) plus the push wait, with room
ALERT_LIFETIME = 86_400.0  # an undelivered missed-call alert is worth a day, not a wake-up's 20 s


@attrs.frozen
class PushedCall:
    aor: str
    message: PushMessage
    devices: tuple[Device, ...]
    at: float


class MissedCalls:
    """Calls that pushed, by Call-ID: the oldest go first beyond `max_calls` or `max_age`."""

    def __init__(self, max_calls: int = DEFAULT_MAX_CALLS, max_age: float = DEFAULT_MAX_AGE):
        self.max_calls = max_calls
        self.max_age = max_age
        self._calls: OrderedDict[str, PushedCall] = OrderedDict()

    def __len__(self) -> int:
        return len(self._calls)

    def remember(
        self, call_id: str, aor: str, message: PushMessage, devices: Sequence[Device], now: float
    ) -> None:
        if not call_id:
            return
        self.expire(now)
        self._calls.pop(call_id, None)
        self._calls[call_id] = PushedCall(aor, message, tuple(devices), now)
        while len(self._calls) > self.max_calls:
            self._calls.popitem(last=False)

    def pop(self, call_id: str, now: float) -> PushedCall | None:
        self.expire(now)
        return self._calls.pop(call_id, None)

    def expire(self, now: float) -> None:
        while self._calls:
            call_id, call = next(iter(self._calls.items()))
            if now - call.at <= self.max_age:
                break
            del self._calls[call_id]


@attrs.frozen
class Alert:
    app: App
    device: Device
    message: PushMessage


def alert_for(app: App | None, device: Device, call: PushedCall) -> Alert | str:
    """The missed-call alert for one pushed device, or why none is sent."""
    if app is None or app.type != device.type:
        return "no_app"
    if not app.missed_call:
        return "off"
    token = device.token
    if device.type == "apple" and (device.push_type or app.push_type) == "voip":
        token = device.extra.get("alert_token", "")
        if not token:
            return "no_alert_token"
    message = PushMessage(
        call_id=call.message.call_id,
        caller_number=call.message.caller_number,
        caller_name=call.message.caller_name,
        kind="missed_call",
    )
    return Alert(
        app=attrs.evolve(app, push_type="alert", payload_template=app.missed_call_template),
        device=attrs.evolve(device, token=token, push_type="alert"),
        message=message,
    )


__all__ = [
    "ALERT_LIFETIME",
    "ANSWERED_REASONS",
    "UNANSWERED_REASONS",
    "Alert",
    "MissedCalls",
    "PushedCall",
    "alert_for",
]
