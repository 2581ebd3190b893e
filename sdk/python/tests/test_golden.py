"""The Rust side's golden files decode with msgpack to the JSON beside them, and re-encode
byte for byte: Python and Rust agree on the wire format."""
import glob
import json
import os

import msgpack
import pytest

from drover import submit

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "..", "..", "protocol", "tests", "golden")
FILES = sorted(glob.glob(os.path.join(GOLDEN, "*.msgpack")))


def as_json(value):
    """The decoded value as serde_json wrote it: bytes become lists of numbers."""
    if isinstance(value, bytes):
        return list(value)
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json(v) for v in value]
    return value


def test_every_message_kind_has_a_golden_file():
    kinds = {os.path.basename(f)[: -len(".msgpack")] for f in FILES}
    assert {"submit", "abort", "log", "finished", "step_job"} <= kinds, kinds


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_golden_file_decodes_to_its_json(path):
    with open(path, "rb") as f:
        raw = f.read()
    with open(path[: -len(".msgpack")] + ".json", encoding="utf-8") as f:
        expected = json.load(f)
    decoded = msgpack.unpackb(raw, raw=False)
    assert as_json(decoded) == expected
    assert submit.encode(decoded) == raw


def test_log_data_is_binary_not_text():
    with open(os.path.join(GOLDEN, "log.msgpack"), "rb") as f:
        decoded = msgpack.unpackb(f.read(), raw=False)
    assert isinstance(decoded["body"]["data"], bytes)
    assert b"\r\xff" in decoded["body"]["data"]
