"""Run ids are UUIDv7 in the form the controller accepts; names follow the protocol's rules."""
import time
import uuid

import pytest

from drover import names, settings


def test_run_id_is_32_lowercase_hex_uuid7():
    run_id = names.new_run_id()
    assert len(run_id) == 32 and all(c in "0123456789abcdef" for c in run_id)
    parsed = uuid.UUID(hex=run_id)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert run_id[12] == "7"


def test_run_id_carries_the_time_in_ms():
    before = time.time_ns() // 1_000_000
    run_id = names.new_run_id()
    after = time.time_ns() // 1_000_000
    assert before <= int(run_id[:12], 16) <= after + 1


def test_run_ids_increase_within_and_across_milliseconds():
    ids = [names.new_run_id() for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    first = names.new_run_id()
    time.sleep(0.003)
    assert names.new_run_id() > first


@pytest.mark.parametrize("bad", ["", "a.b", "a b", "a/b", "pipeline", "x" * 129, "é"])
def test_invalid_step_names(bad):
    with pytest.raises(ValueError):
        names.check_step_name(bad)


@pytest.mark.parametrize("good", ["step_one", "A-1", "x" * 128])
def test_valid_step_names(good):
    names.check_step_name(good)


def test_queue_names_per_namespace():
    assert settings.services_queue("drover") == "services"
    assert settings.services_queue("t1") == "t1.services"
    assert settings.dead_queue("t1") == "t1.dead"


def test_redact_hides_the_password():
    assert settings.redact("amqp://guest:secret@host:5672/%2f") == "amqp://guest:***@host:5672/%2f"
    assert settings.redact("amqp://host/") == "amqp://host/"
