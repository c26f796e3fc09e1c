"""Push payloads: the Kazoo-compatible default and per-app JSON templates (pure).

DESIGN §11 payload keys: `call-id`, `caller-id-number`, `caller-id-name`,
`utc_unix_timestamp_ms`, and for alert pushes `aps.alert.loc-key` (`IC_MSG`),
`aps.alert.loc-args` ([caller]) and `aps.sound`. A Kazoo push_req `Payload` object is
merged over the result (Kazoo's pusher did the same).

A template is JSON text in which any string value may name placeholders written
`{name}`: `{call_id}`, `{caller_number}`, `{caller_name}`, `{caller}` (the name, else the
number), `{timestamp_ms}`, `{alert_key}`, `{sound}`, `{kind}` (`call`, or `missed_call` for the
alert after a call ended unanswered). A string that is exactly one
placeholder is replaced by the value (so `"{timestamp_ms}"` becomes a number); other
strings get the text substituted. `{{` and `}}` are literal braces.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ..model import PushMessage, PushType

DEFAULT_ALERT_KEY = "IC_MSG"  # Kazoo's default loc-key ("incoming call")
# The missed-call alert's loc-key, in Kazoo's style (the app's Localizable.strings maps it,
# e.g. "MC_MSG" = "Missed call from %@"); Kazoo itself sent no missed-call push.
MISSED_CALL_ALERT_KEY = "MC_MSG"
DEFAULT_SOUND = "default"

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([a-z_]+)\}")


class TemplateError(ValueError):
    """The template is not a JSON object or names an unknown placeholder."""


def _values(message: PushMessage, now: float) -> dict[str, Any]:
    caller = message.caller_name or message.caller_number
    return {
        "call_id": message.call_id,
        "caller_number": message.caller_number,
        "caller_name": message.caller_name,
        "caller": caller,
        "timestamp_ms": int(now * 1000),
        "alert_key": message.alert_key
        or (MISSED_CALL_ALERT_KEY if message.kind == "missed_call" else DEFAULT_ALERT_KEY),
        "sound": message.sound or DEFAULT_SOUND,
        "kind": message.kind,
    }


def default_payload(message: PushMessage, push_type: PushType, now: float) -> dict[str, Any]:
    """Kazoo's payload: call details at the top level, an `aps` alert for alert pushes."""
    values = _values(message, now)
    payload: dict[str, Any] = {}
    if push_type == "alert":
        args = (
            list(message.alert_params) if message.alert_params is not None else [values["caller"]]
        )
        payload["aps"] = {
            "alert": {"loc-key": values["alert_key"], "loc-args": args},
            "sound": values["sound"],
        }
    payload["call-id"] = message.call_id
    payload["caller-id-number"] = message.caller_number
    payload["caller-id-name"] = message.caller_name
    payload["utc_unix_timestamp_ms"] = values["timestamp_ms"]
    return payload


def _substitute(text: str, values: Mapping[str, Any]) -> Any:
    whole = _PLACEHOLDER.fullmatch(text)
    if whole and whole.group(1):
        return _lookup(whole.group(1), values)

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "{{":
            return "{"
        if match.group(0) == "}}":
            return "}"
        return str(_lookup(match.group(1), values))

    return _PLACEHOLDER.sub(one, text)


def _lookup(name: str, values: Mapping[str, Any]) -> Any:
    if name not in values:
        raise TemplateError(f"unknown placeholder {{{name}}} (known: {', '.join(sorted(values))})")
    return values[name]


def _render(node: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(node, str):
        return _substitute(node, values)
    if isinstance(node, list):
        return [_render(item, values) for item in node]
    if isinstance(node, dict):
        return {key: _render(item, values) for key, item in node.items()}
    return node


def check_template(template: str) -> None:
    """Raise TemplateError when `template` cannot render (used when an app is added)."""
    render_template(template, PushMessage(), 0.0)


def render_template(template: str, message: PushMessage, now: float) -> dict[str, Any]:
    try:
        tree = json.loads(template)
    except ValueError as error:
        raise TemplateError(f"payload template is not JSON: {error}") from error
    if not isinstance(tree, dict):
        raise TemplateError("payload template must be a JSON object")
    rendered = _render(tree, _values(message, now))
    assert isinstance(rendered, dict)
    return rendered


def merge(base: dict[str, Any], extra: Mapping[str, object]) -> dict[str, Any]:
    """Kazoo's `Payload` override: objects merge recursively, anything else replaces."""
    result = dict(base)
    for key, value in extra.items():
        current = result.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            result[key] = merge(current, value)
        else:
            result[key] = value
    return result


def build_payload(
    message: PushMessage, push_type: PushType, template: str | None, now: float
) -> dict[str, Any]:
    """The payload object for one push: template or default, then Kazoo's Payload merged."""
    payload = (
        render_template(template, message, now)
        if template
        else default_payload(message, push_type, now)
    )
    if message.payload:
        payload = merge(payload, message.payload)
    return payload
