"""`pusher-trio serve` as a subprocess, for tests and batteries that need a real process
(SIGTERM, SIGHUP, kill -9). Its JSON log lines on stderr are read by one thread, so
the pipe never fills and `wait_for` can be called at any time.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

MAX_LINES = 100_000  # a long storm at debug level must not grow the list without bound


class ServeProcess:
    """One `python -m pusher_trio serve --config FILE`, started in the config's folder."""

    def __init__(self, config: Path, *, timeout: float = 15.0) -> None:
        self.config = config
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pusher_trio", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            # a broken byte (seen once with py-spy stopping the process mid-write) must not
            # end the reader thread and with it every wait_for()
            errors="replace",
            cwd=str(config.parent),
        )
        self.lines: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._ended = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.running = self.wait_for("pusher-trio running", timeout)
        self.startup = time.monotonic() - self.started

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"msg": raw.strip()}
            if not isinstance(line, dict):
                line = {"msg": raw.strip()}
            with self._changed:
                if len(self.lines) < MAX_LINES:
                    self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, message: str, timeout: float = 10.0) -> dict[str, Any]:
        """The first log line (since start) whose msg starts with `message` (blocking, bounded).

        A process that ends or stays silent is killed and the last lines are reported.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if str(line.get("msg", "")).startswith(message):
                        return dict(line)
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self._ended or left <= 0:
                    break
                self._changed.wait(left)
            last = self.lines[-5:]
        self.kill()
        raise RuntimeError(f"pusher-trio serve: no log line {message!r}; last lines {last}")

    @property
    def sniffer(self) -> tuple[str, int]:
        host, port = str(self.running["sniffer"]).split()[0].rsplit(":", 1)
        return host, int(port)

    @property
    def tcp(self) -> str:
        return str(self.running["tcp"])

    @property
    def socket(self) -> str:
        return str(self.running["control"])

    def _close(self) -> None:
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._close()

    def terminate(self) -> int:
        """SIGTERM and the exit code (-9 when it had to be killed after 10 s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9
        self._close()
        return code
