"""Logging: one line per event, as text or as JSON lines.

Everything goes through the standard `logging` module under the
"pusher_trio" logger. Structured fields are passed with
`extra={"fields": {...}}` and rendered as `key=value` (text) or as JSON keys.

`serve` writes its lines in batches (`BatchingHandler`): a write system call per
line cost about a tenth of the sidecar's CPU at a few thousand pushes a second.
Warnings and errors go out at once, with whatever waited before them; info lines
wait at most `FLUSH_INTERVAL` (the app's flusher task writes the tail).

Secrets never reach a log line whole: fields whose name says token, key,
secret, password or pem are masked here as a last line of defence (callers
already pass masked tokens, DESIGN §11).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from . import _json
from .model import mask_token

LOGGER_NAME = "pusher_trio"

# Field names whose values are secrets or tokens (compared lower-cased, substring).
_SECRET_WORDS = ("token", "secret", "password", "pem", "private", "auth_key", "key_pem")
_MASKED_ALREADY = "…"


@functools.lru_cache(maxsize=1024)
def _secret_name(name: str) -> bool:
    """The same few field names come with every line: decide once per name."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def mask_field(name: str, value: object) -> object:
    """Mask a field value when its name says it holds a secret or a token."""
    if isinstance(value, str) and _secret_name(name):
        if _MASKED_ALREADY in value:
            return value
        return mask_token(value)
    return value


def _fields(record: logging.LogRecord) -> Mapping[str, object]:
    """The record's fields with secrets masked; the caller's own mapping when nothing
    needs masking (the common case: callers pass masked tokens), to spare a copy."""
    fields = getattr(record, "fields", None)
    if not isinstance(fields, Mapping):
        return {}
    for key, value in fields.items():
        if type(key) is not str or (
            isinstance(value, str) and _secret_name(key) and _MASKED_ALREADY not in value
        ):
            return {str(k): mask_field(str(k), v) for k, v in fields.items()}
    return fields


_NEEDS_QUOTES = re.compile(r'[ "=\n]')


def _text_value(value: object) -> str:
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return repr(value)  # what json.dumps writes for these
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or _NEEDS_QUOTES.search(text):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    """`2026-11-26T09:00:00.123Z info pusher_trio.app message key=value ...`"""

    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # one strftime per second, not per line
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        stamp = self._stamp
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
        return _json.dumps_text(obj, default=str)


_HANDLER_ATTR = "_pusher_trio_handler"
FLUSH_INTERVAL = 0.05  # seconds an info line may wait for its batch
MAX_BATCH = 512  # lines; a burst is written in pieces of about this size


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes its lines in batches: one write per batch, not per line.

    A line waits until `MAX_BATCH` lines are pending, `FLUSH_INTERVAL` has passed since
    the oldest pending one (checked when the next line comes), a line at WARNING or
    above arrives, or `flush()` is called (the app's flusher task, shutdown, exit).
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._oldest = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        now = time.monotonic()
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            if not self._pending:
                self._oldest = now
            self._pending.append(line)
            due = (
                record.levelno >= logging.WARNING
                or len(self._pending) >= MAX_BATCH
                or now - self._oldest >= FLUSH_INTERVAL
            )
        if due:
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._pending:
                text = "\n".join(self._pending) + "\n"
                self._pending.clear()
                try:
                    self.stream.write(text)
                except Exception:
                    pass  # a closed or broken stderr must not stop the service
            try:
                self.stream.flush()
            except Exception:
                pass


class _Line:
    """What our formatters read of a LogRecord, for `info_line` (no LogRecord built)."""

    __slots__ = ("args", "created", "exc_info", "fields", "levelname", "levelno", "msecs",
                 "msg", "name")  # fmt: skip

    def __init__(self, name: str, msg: str, args: tuple[object, ...], fields: object) -> None:
        self.name = name
        self.msg = msg
        self.args = args
        self.fields = fields
        self.levelno = logging.INFO
        self.levelname = "INFO"
        self.created = time.time()
        self.msecs = (self.created - int(self.created)) * 1000
        self.exc_info = None

    def getMessage(self) -> str:  # LogRecord's method, as the formatters call it
        return self.msg % self.args if self.args else self.msg


def info_line(
    logger: logging.Logger, msg: str, args: tuple[object, ...], fields: Mapping[str, object]
) -> None:
    """`logger.info(msg, *args, extra={"fields": fields})`, cheaper on a hot path.

    When `serve`'s setup is in place (the line would go to one `BatchingHandler` of
    the "pusher_trio" logger and nowhere else, no filters), the line is formatted and
    queued without a LogRecord and the logging module's dispatch (a few µs a line, at
    one line per push). Anything else (tests capturing records, another handler):
    the ordinary call.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    parent = logger.parent
    handler = _sole_handler(parent) if parent is not None and parent.name == LOGGER_NAME else None
    if handler is None or logger.handlers or logger.filters or not logger.propagate:
        logger.info(msg, *args, extra={"fields": fields})
        return
    handler.emit(_Line(logger.name, msg, args, fields))  # type: ignore[arg-type]


def _sole_handler(logger: logging.Logger) -> BatchingHandler | None:
    if logger.propagate or logger.filters or len(logger.handlers) != 1:
        return None
    handler = logger.handlers[0]
    if type(handler) is not BatchingHandler or handler.filters or handler.level > logging.INFO:
        return None
    return handler


def flush_logs() -> None:
    """Write out the lines a `BatchingHandler` of the "pusher_trio" logger holds."""
    for handler in logging.getLogger(LOGGER_NAME).handlers:
        if getattr(handler, _HANDLER_ATTR, False):
            handler.flush()


def setup_logging(
    level: str = "info", fmt: str = "text", stream: TextIO | None = None, *, batched: bool = False
) -> None:
    """Configure the "pusher_trio" logger; calling it again (SIGHUP) replaces the handler.

    `batched`: lines go out in batches (`BatchingHandler`); whoever sets it must call
    `flush_logs()` at least every `FLUSH_INTERVAL` (app.run does with `manage_logging`).
    """
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if getattr(handler, _HANDLER_ATTR, False):
            handler.flush()
            logger.removeHandler(handler)
    target = stream if stream is not None else sys.stderr
    if batched:
        # Our formatters print no process, thread or multiprocessing field: do not let each
        # record look them up (a getpid() system call per line in `serve`).
        logging.logProcesses = logging.logThreads = logging.logMultiprocessing = False
        # Nor find the caller's file and line (a stack walk per line): no formatter prints them.
        logging._srcfile = None
    handler = BatchingHandler(target) if batched else logging.StreamHandler(target)
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
            handler.flush()
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
