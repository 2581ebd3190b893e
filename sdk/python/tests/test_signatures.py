"""drover's public methods have ClearML's parameters, kinds and defaults.

The snapshot `clearml_signatures.json` is written by `scripts/clearml_signatures.py` from a
pip-installed, pinned clearml release; this test needs no clearml.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
from typing import Any

import pytest

HERE = os.path.dirname(__file__)
CLEARML_VERSION = "2.1.12"

with open(os.path.join(HERE, "clearml_signatures.json"), encoding="utf-8") as f:
    SNAPSHOT = json.load(f)

_spec = importlib.util.spec_from_file_location(
    "clearml_signatures", os.path.join(HERE, "..", "scripts", "clearml_signatures.py"))
assert _spec is not None and _spec.loader is not None
signatures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(signatures)

# ClearML class -> where drover defines it.
DROVER = {
    "PipelineController": "drover.pipeline",
    "StorageManager": "drover.storage",
    "Task": "drover.task",
    "Logger": "drover.logger",
    "PipelineDecorator": "drover.decorator",
    "TaskScheduler": "drover.scheduler",
    "TriggerScheduler": "drover.scheduler",
}

# Classes drover does not have yet; the test fails once one appears, so it gets compared.
NOT_YET_CLASSES: set[str] = set()

# Methods in the snapshot that drover does not offer yet (they need the controller).
NOT_YET = {
}

# drover's own trailing, defaulted parameters, which ClearML code never passes.
EXTRA = {
    ("PipelineController", "add_function_step"): {"priority", "prewarm"},
    ("PipelineDecorator", "component"): {"prewarm"},
}


def drover_class(name: str) -> type:
    return getattr(importlib.import_module(DROVER[name]), name)  # type: ignore[no-any-return]


def cases() -> list[tuple[str, str]]:
    return [(c, m) for c, methods in SNAPSHOT["classes"].items() if c in DROVER for m in methods]


def test_the_snapshot_is_of_the_pinned_release():
    assert SNAPSHOT["clearml_version"] == CLEARML_VERSION
    assert set(SNAPSHOT["classes"]) == set(signatures.METHODS)
    for cls, (_, methods) in signatures.METHODS.items():
        assert list(SNAPSHOT["classes"][cls]) == sorted(methods), f"regenerate the snapshot for {cls}"


def test_every_snapshot_class_is_compared_or_known_missing():
    assert set(SNAPSHOT["classes"]) == set(DROVER) | NOT_YET_CLASSES
    import drover

    for name in NOT_YET_CLASSES:
        assert not hasattr(drover, name), f"drover has {name} now: add it to DROVER"


def without_extras(cls: str, method: str, recorded: dict[str, Any]) -> dict[str, Any]:
    extras = EXTRA.get((cls, method), set())
    params = recorded.get("params", [])
    kept = [p for p in params if p["name"] not in extras]
    dropped = params[len(kept):]
    assert {p["name"] for p in dropped} == extras, f"{cls}.{method}: drover's own parameters must come last"
    assert all("default" in p for p in dropped), f"{cls}.{method}: drover's own parameters need defaults"
    return {**recorded, "params": kept} if "params" in recorded else recorded


@pytest.mark.parametrize(("cls", "method"), cases())
def test_signature_matches_clearml(cls: str, method: str):
    expected = SNAPSHOT["classes"][cls][method]
    target = drover_class(cls)
    if (cls, method) in NOT_YET:
        assert not hasattr(target, method), f"drover offers {cls}.{method} now: remove it from NOT_YET"
        return
    assert hasattr(target, method), f"drover's {cls} has no {method}"
    actual = without_extras(cls, method, signatures.signature_of(target, method))
    if expected.get("returns") is None:
        actual.pop("returns", None)
        expected = {k: v for k, v in expected.items() if k != "returns"}
    assert actual == expected
