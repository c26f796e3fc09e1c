"""The exceptions of :mod:`sip`: the only ones its parsers let escape."""

from __future__ import annotations

__all__ = ["HepParseError", "SipParseError"]


class SipParseError(ValueError):
    """The bytes or text are not a SIP message, header, URI or parameter we can read.

    Every parser entry point of :mod:`sip` raises this (or a subclass) and nothing
    else on bad input; anything else escaping is a bug (the fuzz harness checks it).
    """


class HepParseError(SipParseError):
    """A HEPv3 packet is malformed: bad magic, a length out of bounds, a bad chunk."""
