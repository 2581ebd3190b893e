"""Sending a step's scalars to its agent (stdlib only).

Inside a drover step, `Logger.report_scalar` and `report_single_value` queue points here; a
background thread sends them over the attempt's channel (`scalars` op) in batches: when
`BATCH_POINTS` are waiting, `FLUSH_SECONDS` after the first of them, on `Logger.flush()` and at
exit. Reporting never waits for the controller: it appends to a bounded buffer (points beyond
`MAX_PENDING` are dropped, with one warning), and a failed batch is dropped with one warning
instead of failing the step.
"""
from __future__ import annotations

import atexit
import math
import threading
import time
import warnings
from typing import Any

from . import channel

BATCH_POINTS = 1000
FLUSH_SECONDS = 1.0
MAX_PENDING = 100_000
# How long exit waits for the last batches.
EXIT_SECONDS = 15.0
# How long `Logger.flush(wait=True)` waits.
WAIT_SECONDS = 30.0


class Sender:
    """Batches points and sends them over `client` from one daemon thread."""

    def __init__(self, client: channel.Client) -> None:
        self._client = client
        self._cond = threading.Condition()
        self._pending: list[dict[str, Any]] = []
        self._first_at: float | None = None
        self._sending = 0  # points taken by the thread and not yet answered
        self._flush_asked = False
        self._warned: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="drover-scalars", daemon=True)
        self._thread.start()

    def add(self, title: str, series: str, iteration: int, value: float) -> None:
        if not math.isfinite(value):
            self._warn_once("nonfinite", f"drover: scalar {title}/{series} at iteration {iteration} is "
                                         f"{value}, which cannot be stored; it is printed only")
            return
        point = {"title": title, "series": series, "iteration": iteration, "value": value}
        with self._cond:
            if len(self._pending) >= MAX_PENDING:
                self._warn_once("full", f"drover: more than {MAX_PENDING} scalars are waiting to be sent; "
                                        "further ones are dropped until they are")
                return
            if not self._pending:
                self._first_at = time.monotonic()
                self._cond.notify_all()  # the thread starts counting the time bound
            self._pending.append(point)
            if len(self._pending) >= BATCH_POINTS:
                self._cond.notify_all()

    def flush(self, wait: bool, timeout: float = WAIT_SECONDS) -> bool:
        """Sends what is waiting now; with `wait`, returns once it was answered (True) or after
        `timeout` (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flush_asked = True
            self._cond.notify_all()
            if not wait:
                return True
            while self._pending or self._sending:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(left)
            return True

    def _due(self) -> bool:
        if not self._pending:
            return False
        if self._flush_asked or len(self._pending) >= BATCH_POINTS:
            return True
        return self._first_at is not None and time.monotonic() - self._first_at >= FLUSH_SECONDS

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due():
                    if not self._pending:
                        self._flush_asked = False
                    timeout = None
                    if self._first_at is not None and self._pending:
                        timeout = max(0.0, FLUSH_SECONDS - (time.monotonic() - self._first_at))
                    self._cond.wait(timeout)
                batch, self._pending = self._pending[:BATCH_POINTS], self._pending[BATCH_POINTS:]
                self._first_at = time.monotonic() if self._pending else None
                self._sending = len(batch)
            try:
                self._client.scalars(batch)
            except (channel.ChannelError, ConnectionError, OSError, ValueError) as e:
                self._warn_once("send", f"drover: {len(batch)} scalar(s) could not be stored and are "
                                        f"only in the step's log: {e}")
            finally:
                with self._cond:
                    self._sending = 0
                    self._cond.notify_all()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=4)


_lock = threading.Lock()
_sender: Sender | None = None
_resolved = False


def sender() -> Sender | None:
    """This process's sender, when it runs inside a drover step (has a channel); else None."""
    global _sender, _resolved
    with _lock:
        if not _resolved:
            _resolved = True
            client = channel.Client.from_env()
            if client is not None:
                _sender = Sender(client)
                atexit.register(_sender.flush, True, EXIT_SECONDS)
        return _sender
