"""Writes the signatures of the ClearML methods drover mirrors, as JSON, from an installed clearml.

Run it in a throwaway virtualenv holding only the pinned clearml release:

    python3 -m venv /tmp/clearml-venv
    /tmp/clearml-venv/bin/pip install clearml==2.1.12
    /tmp/clearml-venv/bin/python sdk/python/scripts/clearml_signatures.py > sdk/python/tests/clearml_signatures.json

`tests/test_signatures.py` compares drover's classes with the file this writes, without clearml.
The shared logic (what a signature is recorded as) is `signature_of` below; the test imports it
from here, so both sides are described the same way.
"""
from __future__ import annotations

import importlib
import inspect
import json
import sys
from typing import Any

# Class -> (where ClearML defines it, the public methods drover offers or should offer).
# Methods drover does not offer yet are listed in the test's NOT_YET, so the snapshot already
# holds what they must look like.
METHODS: dict[str, tuple[str, list[str]]] = {
    "PipelineController": ("clearml.automation.controller", [
        "__init__", "add_parameter", "set_default_execution_queue", "add_step", "add_function_step",
        "start", "start_locally", "wait", "is_successful", "stop", "get_parameters", "get_pipeline_dag", "id",
    ]),
    "PipelineDecorator": ("clearml.automation.controller", [
        "component", "pipeline", "run_locally", "debug_pipeline", "set_default_execution_queue",
        "get_current_pipeline", "upload_artifact", "get_logger",
    ]),
    "StorageManager": ("clearml.storage.manager", ["get_local_copy"]),
    "TaskScheduler": ("clearml.automation.scheduler", [
        "__init__", "add_task", "get_scheduled_tasks", "remove_task", "start", "start_remotely",
    ]),
    "TriggerScheduler": ("clearml.automation.trigger", ["__init__", "add_task_trigger", "start", "start_remotely"]),
    "Task": ("clearml.task", [
        "init", "current_task", "running_locally", "get_task", "connect", "connect_configuration",
        "get_parameters", "upload_artifact", "artifacts", "get_logger", "execute_remotely", "close",
        "id", "name",
    ]),
    "Logger": ("clearml.logger", [
        "current_logger", "report_scalar", "report_single_value", "report_text", "report_table", "flush",
    ]),
}

# Return annotations compared by name; anything richer (a TaskInstance, a Mapping of nodes) is
# recorded as None and not compared.
SIMPLE_RETURNS = {"None", "bool", "str", "float", "int", "dict", "list"}


def _return_name(annotation: Any) -> str | None:
    if annotation is inspect.Signature.empty:
        return None
    if annotation is None:
        return "None"
    if isinstance(annotation, str):
        name = annotation.split("[", 1)[0].strip()
    elif isinstance(annotation, type) and annotation.__module__ == "builtins":
        name = annotation.__name__
    else:
        return None
    return name if name in SIMPLE_RETURNS else None


def signature_of(cls: type, name: str) -> dict[str, Any]:
    """How `cls.name` is recorded: its binding (function, classmethod, staticmethod, property) and,
    for callables, each parameter's name, kind and default's repr (absent when it has none) and
    the return annotation's name when it is a simple one."""
    raw = inspect.getattr_static(cls, name)
    if isinstance(raw, property):
        return {"binding": "property"}
    binding = ("classmethod" if isinstance(raw, classmethod)
               else "staticmethod" if isinstance(raw, staticmethod) else "function")
    signature = inspect.signature(getattr(cls, name))
    params = []
    for p in signature.parameters.values():
        if binding == "function" and not params and p.name == "self":
            continue
        entry: dict[str, Any] = {"name": p.name, "kind": p.kind.name}
        if p.default is not inspect.Parameter.empty:
            entry["default"] = repr(p.default)
        params.append(entry)
    return {"binding": binding, "params": params, "returns": _return_name(signature.return_annotation)}


def snapshot() -> dict[str, Any]:
    import clearml

    classes = {}
    for cls_name, (module, methods) in METHODS.items():
        cls = getattr(importlib.import_module(module), cls_name)
        classes[cls_name] = {m: signature_of(cls, m) for m in methods}
    return {"clearml_version": clearml.__version__,
            "python": f"{sys.version_info.major}.{sys.version_info.minor}", "classes": classes}


if __name__ == "__main__":
    json.dump(snapshot(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
