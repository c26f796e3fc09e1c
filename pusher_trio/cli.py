"""Command line (DESIGN §6)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(f"pusher-trio: not implemented yet: {' '.join(args)}", file=sys.stderr)
    return 2
