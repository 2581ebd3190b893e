"""Names checked by the protocol's rules (step, output and queue names), and fresh run and message ids.

The rules are the controller's; `protocol/tests/golden/cases/names.json` pins them for both sides.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

from . import refs

MAX_NAME_LEN = 128
MAX_QUEUE_LEN = 200


class InvalidName(ValueError):
    """A string that is not a valid name of its kind (`step name`, `output name`, `queue name`)."""

    def __init__(self, kind: str, value: str, reason: str) -> None:
        super().__init__(f"invalid {kind} {value!r}: {reason}")
        self.kind = kind
        self.value = value
        self.reason = reason


def _check_name(kind: str, value: object, max_len: int) -> str:
    """`value` made of `[A-Za-z0-9_.-]`, not `.` or `..`, 1 to `max_len` bytes: a safe path
    component. Returns it; raises InvalidName."""
    if not isinstance(value, str):
        raise InvalidName(kind, repr(value), f"must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidName(kind, value, "must not be empty")
    if len(value.encode("utf-8", "surrogatepass")) > max_len:
        raise InvalidName(kind, value, f"longer than {max_len} bytes")
    if value in (".", ".."):
        raise InvalidName(kind, value, "must not be '.' or '..'")
    bad = next((c for c in value if not refs.is_reference_name(c)), None)
    if bad is not None:
        raise InvalidName(kind, value, f"contains {bad!r}; use letters, digits, '_', '-' and '.' only")
    return value


def check_step_name(name: object) -> str:
    """A valid step name: it becomes a path component and the head of `${STEP.OUTPUT}`, so no
    dots, and `pipeline` is reserved for parameters. Raises InvalidName."""
    value = _check_name("step name", name, MAX_NAME_LEN)
    if "." in value:
        raise InvalidName(
            "step name", value, "must not contain '.' (it separates step and output in ${STEP.OUTPUT})"
        )
    if value == "pipeline":
        raise InvalidName("step name", value, "'pipeline' is reserved for ${pipeline.NAME} parameters")
    return value


def check_output_name(name: object) -> str:
    """A valid output (return) name: it becomes a file name. Raises InvalidName."""
    return _check_name("output name", name, MAX_NAME_LEN)


def check_queue_name(name: object) -> str:
    """A valid queue name (it becomes an AMQP queue name). Raises InvalidName."""
    return _check_name("queue name", name, MAX_QUEUE_LEN)


def check_namespace(ns: object) -> str:
    """A valid namespace: it prefixes queue names, so it follows their rule. Raises InvalidName."""
    try:
        return check_queue_name(ns)
    except InvalidName as e:
        raise InvalidName("namespace", e.value, e.reason) from None


def check_param_name(name: object) -> str:
    """A parameter name that `${pipeline.NAME}` can reference. Raises InvalidName."""
    if not isinstance(name, str) or not refs.is_reference_name(name):
        raise InvalidName(
            "parameter name", repr(name) if not isinstance(name, str) else name,
            "use letters, digits, '_', '-' and '.' so ${pipeline.NAME} can reference it",
        )
    return name


_last: dict[str, int] = {"ms": 0, "seq": 0}
_lock = threading.Lock()


def new_run_id() -> str:
    """A UUIDv7 as 32 lowercase hex digits, so run ids sort by creation time.

    Layout: 48-bit Unix milliseconds, version 7, 12 bits that count up within one millisecond
    (so ids made by this process strictly increase), variant 0b10, 62 random bits.
    """
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last["ms"]:
            seq = int.from_bytes(os.urandom(2), "big") & 0x7FF  # leave room to count up
        else:
            ms, seq = _last["ms"], _last["seq"] + 1
            if seq > 0xFFF:
                ms, seq = ms + 1, 0
        _last["ms"], _last["seq"] = ms, seq
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= seq << 64
    value |= 0b10 << 62
    value |= rand_b
    return f"{value:032x}"


def new_message_id() -> str:
    """A random id for one message (UUIDv4, simple form), used for logs and deduplication."""
    return uuid.uuid4().hex
