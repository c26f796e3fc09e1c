"""Values shared by every layer of the service: devices, apps, push messages, outcomes.

Pure data (attrs, frozen). Nothing here does I/O or knows about trio.
The store persists `Device` and `App`; registrations produce `Device`s; the
providers turn an (`App`, `Device`, `PushMessage`) into an `Outcome`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol

import attrs

TokenType = Literal["apple", "firebase", "webpush"]
PushType = Literal["alert", "voip"]
DeviceState = Literal["valid", "invalid"]

DEFAULT_APNS_HOST = "api.push.apple.com"
DEFAULT_FCM_URL = "https://fcm.googleapis.com"


def mask_token(token: str) -> str:
    """DESIGN §11: first 6 and last 4 characters with an ellipsis between.

    Short values are masked whole: showing 10 of 12 characters would show the token.
    """
    if len(token) <= 16:
        return "…" if token else ""
    return f"{token[:6]}…{token[-4:]}"


# --- devices -----------------------------------------------------------------


@attrs.frozen
class Device:
    """One push target of one AOR, learned from a successful REGISTER."""

    aor: str  # "user@domain" from the To URI
    device_id: str  # +sip.instance, else the token (DESIGN §8)
    type: TokenType
    app: str  # the id of the App that serves it (bundle id, Token-App without .dev/.prod, pn-param)
    token: str
    sandbox: bool = False
    # Set by RFC 8599 pn-param's service suffix (".voip" -> "voip"); None: the app's push_type.
    push_type: PushType | None = None
    # Provider extras: {"team_id": ..., "project": ..., "source": "rfc8599"|"legacy"|"mapping"}.
    extra: Mapping[str, str] = attrs.field(factory=dict)
    user_agent: str = ""
    contact: str = ""  # the Contact URI as registered (contains the token: mask before showing)
    bound: bool = True  # False after expires=0 / Contact: * ; the record is kept
    last_registered: float = 0.0  # UNIX seconds
    state: DeviceState = "valid"
    reason: str | None = None  # why it was invalidated
    invalidated_at: float | None = None

    def refreshed(self, now: float) -> Device:
        """This device registered again at `now` (attrs.evolve without its introspection:
        the sniffer does this for every refresh)."""
        return Device(
            self.aor,
            self.device_id,
            self.type,
            self.app,
            self.token,
            self.sandbox,
            self.push_type,
            self.extra,
            self.user_agent,
            self.contact,
            self.bound,
            now,
            self.state,
            self.reason,
            self.invalidated_at,
        )

    def same_registration(self, other: Device) -> bool:
        """True when `other` differs only in last_registered (a refresh costs no write)."""
        return attrs.evolve(other, last_registered=self.last_registered) == self


# --- apps (dynamic configuration, DESIGN §5) -------------------------------------


@attrs.frozen
class AppleCertAuth:
    """PEM with the client certificate and its unencrypted private key."""

    pem: str = attrs.field(repr=False)


@attrs.frozen
class AppleTokenAuth:
    """A .p8 (PKCS#8 EC P-256) signing key for ES256 provider tokens."""

    key_pem: str = attrs.field(repr=False)
    key_id: str
    team_id: str


@attrs.frozen
class FirebaseAuth:
    """A Google service account (the JSON Firebase's console downloads)."""

    service_account: Mapping[str, str] = attrs.field(repr=False)
    project_number: str | None = None
    base_url: str = DEFAULT_FCM_URL  # tests and benchmarks point it at a stand-in

    @property
    def project_id(self) -> str:
        return self.service_account["project_id"]


@attrs.frozen
class WebPushAuth:
    """A VAPID key pair (RFC 8292): EC P-256 private key, PEM, and the contact URI
    (`sub`: mailto: or https:) that push services may use to reach the operator."""

    vapid_key_pem: str = attrs.field(repr=False)
    subject: str


Auth = AppleCertAuth | AppleTokenAuth | FirebaseAuth | WebPushAuth


@attrs.frozen
class App:
    app_id: str
    type: TokenType
    auth: Auth
    host: str = DEFAULT_APNS_HOST  # apple: "host[:port]"
    push_type: PushType = "alert"  # DESIGN §11: Kazoo sent alert pushes
    payload_template: str | None = None  # JSON text, see pusher_trio.providers.payload
    # DESIGN §12: a call that pushed and ended unanswered sends a visible alert push
    missed_call: bool = True
    missed_call_template: str | None = None  # JSON text; None: the default alert payload


# --- pushing ---------------------------------------------------------------------


@attrs.frozen
class PushMessage:
    """What the call asks to be shown; Kazoo's push_req fields override the defaults."""

    call_id: str = ""
    caller_number: str = ""
    caller_name: str = ""
    alert_key: str | None = None  # Kazoo Alert-Key (default loc-key "IC_MSG")
    alert_params: tuple[str, ...] | None = None  # Kazoo Alert-Params (default [caller])
    sound: str | None = None  # Kazoo Sound
    payload: Mapping[str, object] | None = None  # Kazoo Payload: merged into the default payload
    # "call" wakes the phone for a call; "missed_call" is the alert after it ended unanswered;
    # "refresh" asks it to refresh its binding (RFC 8599 sip.pnsreg), showing nothing
    kind: Literal["call", "missed_call", "refresh"] = "call"


@attrs.frozen
class Delivered:
    """The provider accepted the push (APNs 200 / FCM 200)."""

    id: str = ""  # apns-id or FCM message name


@attrs.frozen
class TokenInvalid:
    """The token is dead (APNs 410/BadDeviceToken/DeviceTokenNotForTopic, FCM UNREGISTERED)."""

    reason: str


@attrs.frozen
class RetryLater:
    """Try again later (429/500/503); `after` in seconds when the provider said."""

    reason: str
    after: float | None = None


@attrs.frozen
class AuthFailed:
    """Our credentials were refused (bad certificate, bad provider token, OAuth failure)."""

    reason: str


@attrs.frozen
class Rejected:
    """Refused for another documented reason, or not sent (no app, payload too large, timeout)."""

    reason: str


Outcome = Delivered | TokenInvalid | RetryLater | AuthFailed | Rejected


class Pusher(Protocol):
    """The provider side as the push service sees it (pusher_trio.providers implements it)."""

    async def send(
        self, app: App, device: Device, message: PushMessage, *, expires_at: float
    ) -> Outcome:
        """Push once (retrying RetryLater inside the caller's cancel-scope deadline).

        `expires_at` is the UNIX time of the wait deadline (apns-expiration, FCM ttl).
        Documented provider answers come back as values; the caller bounds the time
        with a cancel scope.
        """
        ...
