"""The proxy side of RFC 8599 at REGISTER time (pure): may this registration be served,
and which Feature-Caps go in its 2xx.

Kamailio asks `check {contact, expires?, user_agent?}` for a REGISTER whose Contact
carries `pn-provider`, before `save()` (DESIGN §12):

* RFC 8599 §5.2 ("If the SIP proxy does not support the PNS"): a `pn-provider` we
  cannot serve gets **555 Push Notification Service Not Supported**; so does one whose
  `pn-param` names no configured app: nothing could ever be pushed to it, and saying
  so at REGISTER time beats a 480 on the first call.
* RFC 8599 §4.1.1 makes `pn-prid` mandatory next to `pn-provider`: a Contact with
  `pn-provider` but no usable `pn-prid`/`pn-param` is malformed (400), not unsupported.
* The 2xx carries `Feature-Caps` (RFC 6809) with `+sip.pns` (the providers with an app
  configured), `+sip.vapid` (the Web Push VAPID public key, when a Web Push app exists)
  and, to a UA whose Contact carries `+sip.pnsreg`, `+sip.pnsreg="<seconds>"` when
  binding-refresh pushes are on: the sidecar pushes that long before the binding expires.

Contacts without `pn-provider` (legacy Linphone/Kazoo params, the User-Agents mapping)
are none of RFC 8599's business: always `ok`, no Feature-Caps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal

import attrs

import sip

from .model import App, Device, TokenType
from .providers.webpush import app_vapid_public_key
from .registrations import _instance_id, _merged_params, target_from_params

CheckStatus = Literal["ok", "unsupported", "invalid"]

# RFC 8599 §10.1 pn-provider values the sidecar can push through, by app type.
PROVIDER_OF_TYPE: dict[TokenType, str] = {"apple": "apns", "firebase": "fcm", "webpush": "webpush"}
KNOWN_PROVIDERS = ("apns", "fcm", "webpush")


@attrs.frozen
class CheckResult:
    """The answer to `check`: `status`, a reason when not ok, the Feature-Caps value."""

    status: CheckStatus
    reason: str = ""
    feature_caps: str = ""
    providers: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "status": self.status,
            "reason": self.reason,
            "feature_caps": self.feature_caps,
            "providers": list(self.providers),
        }


def _quoted(value: str) -> str:
    """RFC 6809 fcap-string-value: a quoted string; `"` and `\\` escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def feature_caps(
    providers: Iterable[str], vapid_keys: Sequence[str] = (), pnsreg: int | None = None
) -> str:
    """The Feature-Caps header value (RFC 6809 §6, RFC 8599 §10): empty when nothing to say.

    `*` is the fcap tree wildcard RFC 6809 requires before the indicators; `+sip.pnsreg`
    carries the binding-refresh lead time in seconds.
    """
    names = sorted(set(providers))
    if not names:
        return ""
    parts = ["*", f"+sip.pns={_quoted(','.join(names))}"]
    if vapid_keys:
        # RFC 8599 §10.3: one VAPID public key (base64url); the first app's when several.
        parts.append(f"+sip.vapid={_quoted(vapid_keys[0])}")
    if pnsreg is not None:
        parts.append(f"+sip.pnsreg={_quoted(str(pnsreg))}")
    return ";".join(parts)


def served_providers(apps: Iterable[App]) -> list[str]:
    """The pn-provider values with at least one app configured."""
    return sorted({PROVIDER_OF_TYPE[app.type] for app in apps if app.type in PROVIDER_OF_TYPE})


def check_contacts(
    contact_header: str,
    *,
    apps: Mapping[str, App],
    app_for: Callable[[Device], App | None],
    expires: int | None = None,
    vapid_keys: Sequence[str] = (),
    pnsreg: int | None = None,
    now: float = 0.0,
) -> CheckResult:
    """Decide one REGISTER from its Contact header value(s).

    A Contact being removed (`expires=0`, or the request's Expires 0) needs no push
    service: it is never refused. The first refused Contact decides.
    """
    try:
        contacts = sip.parse_contacts(contact_header)
    except sip.SipParseError as exc:
        return CheckResult("invalid", f"unparsable Contact: {exc}")
    providers = served_providers(apps.values())
    asked = False
    wants_refresh = False
    for contact in contacts:
        if contact.is_wildcard:
            continue
        params = _merged_params(contact.uri.params, contact.params)
        provider = params.get("pn-provider", "").lower()
        if not provider:
            continue
        binding_expires = contact.expires if contact.expires is not None else expires
        if binding_expires == 0:
            continue
        asked = True
        wants_refresh = wants_refresh or any(n.lower() == "+sip.pnsreg" for n in contact.params)
        if provider.endswith(".dev"):  # Linphone/Flexisip: apns.dev is APNs' sandbox
            provider = provider[:-4]
        if provider not in KNOWN_PROVIDERS or provider not in providers:
            return CheckResult("unsupported", f"pn-provider {provider} is not served here")
        device = target_from_params(
            params,
            _instance_id(contact.params),
            aor="",
            contact="",
            user_agent="",
            user_agents={},
            now=now,
        )
        if device is None:
            return CheckResult(
                "invalid", f"pn-provider={provider} without a usable pn-prid/pn-param"
            )
        app = app_for(device)
        if app is None or app.type != device.type:
            return CheckResult("unsupported", f"no {provider} app configured for {device.app}")
    if not asked:
        return CheckResult("ok")
    # +sip.pnsreg only to a UA that asked for binding-refresh pushes (RFC 8599):
    # the others keep their own refresh timers
    caps = feature_caps(providers, vapid_keys, pnsreg if wants_refresh else None)
    return CheckResult("ok", feature_caps=caps, providers=tuple(providers))


def vapid_public_keys(apps: Iterable[App]) -> list[str]:
    """The VAPID public keys of the Web Push apps, for `+sip.vapid` (RFC 8599 §10.3)."""
    keys: list[str] = []
    for app in apps:
        key = app_vapid_public_key(app)
        if key:
            keys.append(key)
    return keys


__all__ = [
    "CheckResult",
    "check_contacts",
    "feature_caps",
    "served_providers",
    "vapid_public_keys",
]
