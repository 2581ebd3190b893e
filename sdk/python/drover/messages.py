"""The messages the SDK sends (Submit, Abort) as plain dicts in drover's envelope."""
from __future__ import annotations

import getpass
import socket
import time
from collections.abc import Mapping
from typing import Any

from .names import new_message_id

PROTOCOL_VERSION = 1


def envelope(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """The outer frame every drover message has: version, kind, unique id, send time in ms."""
    return {
        "v": PROTOCOL_VERSION,
        "kind": kind,
        "id": new_message_id(),
        "sent_at": time.time_ns() // 1_000_000,
        "body": body,
    }


def submitted_by() -> str:
    """`user@host`, shown next to the run."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name (containers without a passwd entry)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def submit(run_id: str, spec: dict[str, Any], params: Mapping[str, str] | None = None,
           external: bool = False) -> dict[str, Any]:
    """A Submit envelope: starts `run_id` with `spec` and parameter overrides; `external`: this
    process runs it and reports its steps (see `drover.record`)."""
    body: dict[str, Any] = {
        "run_id": run_id,
        "spec": spec,
        "params": dict(params or {}),
        "submitted_by": submitted_by(),
    }
    if external:
        body["external"] = True
    return envelope("submit", body)


def abort(run_id: str, reason: str) -> dict[str, Any]:
    """An Abort envelope for a whole run."""
    return envelope("abort", {"run_id": run_id, "step": None, "reason": reason})
