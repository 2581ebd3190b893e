"""Identifiers checked the way the drover protocol checks them, and fresh run and message ids."""
import os
import re
import threading
import time
import uuid

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_STEP_NAME = re.compile(r"[A-Za-z0-9_-]+")
MAX_NAME_LEN = 128
MAX_QUEUE_LEN = 200


def check_step_name(name):
    """Raises ValueError unless `name` is a valid step name: it becomes a path component and
    the head of `${STEP.OUTPUT}`, so no dots, and `pipeline` is reserved for parameters."""
    if not isinstance(name, str) or not _STEP_NAME.fullmatch(name):
        raise ValueError(
            f"invalid step name {name!r}: use letters, digits, '_' and '-' only"
        )
    if len(name) > MAX_NAME_LEN:
        raise ValueError(f"invalid step name {name!r}: longer than {MAX_NAME_LEN} characters")
    if name == "pipeline":
        raise ValueError("invalid step name 'pipeline': it is reserved for ${pipeline.NAME} parameters")


def check_output_name(step, name):
    """Raises ValueError unless `name` can name a step's output (it becomes a file name)."""
    ok = isinstance(name, str) and _NAME.fullmatch(name) and name not in (".", "..")
    if not ok or len(name) > MAX_NAME_LEN:
        raise ValueError(
            f"step {step!r}: invalid return name {name!r}: use letters, digits, '_', '-' and '.' "
            f"only, at most {MAX_NAME_LEN} characters"
        )


def check_queue_name(name):
    """Raises ValueError unless `name` is a valid queue name (it becomes an AMQP queue name)."""
    ok = isinstance(name, str) and _NAME.fullmatch(name) and name not in (".", "..")
    if not ok or len(name) > MAX_QUEUE_LEN:
        raise ValueError(
            f"invalid queue name {name!r}: use letters, digits, '_', '-' and '.' only"
        )


_last = {"ms": 0, "seq": 0}
_lock = threading.Lock()


def new_run_id():
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


def new_message_id():
    """A random id for one message (UUIDv4, simple form), used for logs and deduplication."""
    return uuid.uuid4().hex
