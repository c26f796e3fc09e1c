"""Logging: one line per event, as text or as JSON lines.

Everything goes through the standard `logging` module under the
"pusher_trio" logger. Structured fields are passed with
`extra={"fields": {...}}` and rendered as `key=value` (text) or as JSON keys.

Secrets never reach a log line whole: fields whose name says token, key,
secret, password or pem are masked here as a last line of defence (callers
already pass masked tokens, DESIGN §11).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from .model import mask_token

LOGGER_NAME = "pusher_trio"

# Field names whose values are secrets or tokens (compared lower-cased, substring).
_SECRET_WORDS = ("token", "secret", "password", "pem", "private", "auth_key", "key_pem")
_MASKED_ALREADY = "…"


def mask_field(name: str, value: object) -> object:
    """Mask a field value when its name says it holds a secret or a token."""
    lowered = name.lower()
    if isinstance(value, str) and any(word in lowered for word in _SECRET_WORDS):
        if _MASKED_ALREADY in value:
            return value
        return mask_token(value)
    return value


def _fields(record: logging.LogRecord) -> Mapping[str, object]:
    fields = getattr(record, "fields", None)
    if isinstance(fields, Mapping):
        return {str(k): mask_field(str(k), v) for k, v in fields.items()}
    return {}


def _text_value(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or any(c in text for c in ' "=\n'):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    """`2026-11-26T09:00:00.123Z info pusher_trio.app message key=value ...`"""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        millis = int(record.msecs)
        parts = [
            f"{stamp}.{millis:03d}Z",
            record.levelname.lower(),
            record.name,
            record.getMessage(),
        ]
        message = parts[-1]
        parts.extend(
            f"{k}={_text_value(v)}"
            for k, v in _fields(record).items()
            if f"{k}=" not in message  # already written into the message itself
        )
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            obj.setdefault(key, value)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False, default=str)


_HANDLER_ATTR = "_pusher_trio_handler"


def setup_logging(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Configure the "pusher_trio" logger; calling it again (SIGHUP) replaces the handler."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if getattr(handler, _HANDLER_ATTR, False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _HANDLER_ATTR, True)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


def reset_logging() -> None:
    """Undo setup_logging (tests): records propagate to the root logger again."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if getattr(handler, _HANDLER_ATTR, False):
            logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


def get_logger(name: str) -> logging.Logger:
    """A child of the "pusher_trio" logger (`get_logger("app")` -> "pusher_trio.app")."""
    if name.startswith(LOGGER_NAME):
        return logging.getLogger(name)
    return logging.getLogger(f"{LOGGER_NAME}.{name}")


def log_event(logger: logging.Logger, level: int, message: str, **fields: object) -> None:
    """Log `message` with structured fields (masked by name, see module docstring)."""
    if logger.isEnabledFor(level):
        logger.log(level, message, extra={"fields": fields})
