"""Device records and dynamic configuration.

`Store` is the interface every caller uses; `SqliteStore` is the embedded
default. A Redis backend (DESIGN §10) implements the same interface.

Reads are synchronous and served from memory, so the push path and the
sniffer never wait for disk; writes are queued and committed in batches by a
writer thread, so they never block the event loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from .model import App, Device


class Store(Protocol):
    # --- devices ---------------------------------------------------------------
    def devices(self, aor: str | None = None) -> list[Device]:
        """All records of `aor` (every record when None), valid and invalid."""
        ...

    def device_count(self) -> int: ...

    def put_devices(self, devices: Iterable[Device]) -> list[Device]:
        """Create or update records (keyed by aor + device_id); return those that changed.

        A record that differs only in `last_registered` is updated in memory
        but costs no disk write within the refresh interval.
        """
        ...

    def unbind(self, aor: str, device_ids: Iterable[str] | None = None) -> int:
        """Mark records unbound (expires=0; None: all of the AOR, `Contact: *`). Keeps them."""
        ...

    def invalidate(self, aor: str, device_id: str, reason: str, now: float) -> bool:
        """A provider said the token is dead; the next REGISTER with a token revives it."""
        ...

    def remove_devices(self, aor: str, token: str | None = None) -> int: ...

    # --- dynamic configuration (DESIGN §5) -------------------------------------------
    def apps(self) -> Mapping[str, App]: ...

    def put_app(self, app: App) -> None: ...

    def remove_app(self, app_id: str) -> bool: ...

    def get_config(self, key: str | None = None) -> Any:
        """Value at a dotted key ("User-Agents.MyApp.regex"); the whole tree when None.

        Raises KeyError when the key is absent.
        """
        ...

    def set_config(self, key: str, value: Any) -> None:
        """Set a JSON value at a dotted key, creating intermediate objects."""
        ...

    def delete_config(self, key: str) -> bool: ...

    # --- lifecycle ------------------------------------------------------------------
    def flush(self) -> None:
        """Block until every queued write is committed (call from a thread in trio code)."""
        ...

    def close(self) -> None: ...

    def statistics(self) -> dict[str, int]: ...
