"""The messages the SDK sends (Submit, Abort) as plain dicts in drover's envelope."""
import getpass
import socket
import time

from .names import new_message_id

PROTOCOL_VERSION = 1


def envelope(kind, body):
    """The outer frame every drover message has: version, kind, unique id, send time in ms."""
    return {
        "v": PROTOCOL_VERSION,
        "kind": kind,
        "id": new_message_id(),
        "sent_at": time.time_ns() // 1_000_000,
        "body": body,
    }


def submitted_by():
    """`user@host`, shown next to the run."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name (containers without a passwd entry)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def submit(run_id, spec, params=None):
    """A Submit envelope: starts `run_id` with `spec` and parameter overrides."""
    return envelope(
        "submit",
        {
            "run_id": run_id,
            "spec": spec,
            "params": dict(params or {}),
            "submitted_by": submitted_by(),
        },
    )


def abort(run_id, reason):
    """An Abort envelope for a whole run."""
    return envelope("abort", {"run_id": run_id, "step": None, "reason": reason})
