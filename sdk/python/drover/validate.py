"""Submit-time validation of a pipeline spec dict, with the controller's rules and error codes.

`validate(spec, overrides)` checks what the controller checks when a pipeline is submitted
(names, references, parents, parameters, commands, output paths, kwargs, requirements,
environment names, priorities, cycles) and returns the checked DAG or every problem found. Durations are left to
the controller. `protocol/tests/golden/cases/validate.json` pins the rules for both sides; the
SDK runs this before it sends a pipeline, and checks each step's references as it is added.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from . import names, refs, requirements

MAX_PRIORITY = 9
SERVICES_QUEUE = "services"
DRIVERS_QUEUE = "drivers"
# Queues a step may not name: the controller's intake and the pipeline drivers' queue.
RESERVED_QUEUES = (SERVICES_QUEUE, DRIVERS_QUEUE)

# An error's structured fields, as the controller serializes them (`code` plus names).
Fields = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class SpecError:
    """One problem: a stable `code`, the names it blames and a message for people."""

    code: str
    fields: Fields
    message: str

    def __str__(self) -> str:
        return self.message

    def case(self) -> Fields:
        """The error as the shared cases write it: its code and the names it blames (prose
        fields such as a `reason` left out)."""
        return {"code": self.code, **{k: v for k, v in self.fields.items() if k != "reason"}}


class SpecErrors(ValueError):
    """Every problem found in one pipeline."""

    def __init__(self, errors: Sequence[SpecError]) -> None:
        self.errors = list(errors)
        n = len(self.errors)
        lines = "".join(f"\n  - {e.message}" for e in self.errors)
        super().__init__(f"invalid pipeline ({n} problem{'' if n == 1 else 's'}):{lines}")


@dataclasses.dataclass
class Checked:
    """A valid pipeline's DAG: steps parents first, each step's parents and consumed outputs."""

    order: list[str]
    parents: dict[str, list[str]]
    inputs: dict[str, list[tuple[str, str]]]


def _error(code: str, message: str, **fields: Any) -> SpecError:
    return SpecError(code, fields, message)


def invalid_name(e: names.InvalidName) -> SpecError:
    """An InvalidName as the controller reports it."""
    return _error("invalid_name", str(e), kind=e.kind, name=e.value)


def reference_errors(
    step: str, reference: refs.Reference, declared: Mapping[str, Sequence[str]],
    params: Mapping[str, str] | None,
) -> list[SpecError]:
    """What is wrong with one reference of `step`: `declared` maps each step to its output
    names; with `params` None, parameter references are not checked (not known yet)."""
    text = str(reference)
    if isinstance(reference, refs.Param):
        if params is None or reference.name in params:
            return []
        return [_error("unknown_param", f"step {step!r} references {text}, but the pipeline has "
                       f"no parameter {reference.name!r}; declare it under [parameters] "
                       "(add_parameter)", step=step, reference=text)]
    if reference.step == step:
        return [_error("self_reference", f"step {step!r} references its own output in {text}; "
                       "a step cannot use its own output", step=step, reference=text)]
    outputs = declared.get(reference.step)
    if outputs is None:
        return [_error("unknown_step", f"step {step!r} references {text}, but there is no step "
                       f"{reference.step!r} (add it first)", step=step, reference=text)]
    # An id is always there; an artifact may be uploaded while the step runs, so the controller
    # checks it when it dispatches the consuming step.
    if isinstance(reference, (refs.StepId, refs.ArtifactUrl)):
        return []
    if reference.output not in outputs:
        return [_error("unknown_output", f"step {step!r} references {text}, but step "
                       f"{reference.step!r} returns {list(outputs)}", step=step, reference=text,
                       available=list(outputs))]
    return []


def _output_names(step: Mapping[str, Any]) -> list[str]:
    function = step.get("function")
    if function is not None:
        return list(function.get("returns") or [])
    return sorted(step.get("outputs") or {})


def _params(spec: Mapping[str, Any], overrides: Mapping[str, str],
            errors: list[SpecError]) -> dict[str, str]:
    declared: Mapping[str, Any] = spec.get("parameters") or {}
    for name in sorted(overrides):
        if name not in declared:
            errors.append(_error(
                "unknown_override", f"--param {name!r} is not a parameter of this pipeline "
                f"(known: {sorted(declared)})", name=name, known=sorted(declared)))
    params = {}
    for name in sorted(declared):
        value = overrides.get(name, (declared[name] or {}).get("default"))
        if value is None:
            errors.append(_error("missing_param", f"parameter {name!r} has no default and no value",
                                 name=name))
        else:
            params[name] = value
    return params


def _output_path_problem(path: str) -> str | None:
    if not path:
        return "is empty"
    if "\0" in path:
        return "contains a NUL byte"
    if posixpath.isabs(path):
        return "must be relative to the step's workdir"
    if ".." in path.split("/"):
        return "must not contain '..'"
    return None


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON, whatever Python's parser allows."""
    raise ValueError(f"{name} is not a JSON value")


def _env_name_ok(name: str) -> bool:
    return (bool(name) and not name[0].isdigit()
            and all(c == "_" or (c.isascii() and c.isalnum()) for c in name))


class _StepChecker:
    """The checks of one step; its errors, parents and inputs."""

    def __init__(self, step: Mapping[str, Any], declared: Mapping[str, Sequence[str]],
                 params: Mapping[str, str]) -> None:
        self.step = step
        self.name: str = step.get("name", "")
        self.declared = declared
        self.params = params
        self.errors: list[SpecError] = []
        self.parents: set[str] = set()
        self.inputs: set[tuple[str, str]] = set()

    def template(self, text: str) -> None:
        for reference in refs.references(text):
            found = reference_errors(self.name, reference, self.declared, self.params)
            self.errors.extend(found)
            if found or isinstance(reference, refs.Param):
                continue
            self.parents.add(reference.step)
            if isinstance(reference, refs.Output):
                self.inputs.add((reference.step, reference.output))

    def explicit_parents(self) -> None:
        for parent in self.step.get("parents") or []:
            if parent not in self.declared:
                self.errors.append(_error(
                    "unknown_parent", f"step {self.name!r} names parent {parent!r}, which is not "
                    "a step (add it first)", step=self.name, parent=parent))
            else:
                self.parents.add(parent)

    def command(self, argv: Sequence[str]) -> None:
        if not argv or not argv[0].strip():
            self.errors.append(_error("empty_command", f"step {self.name!r} has an empty command",
                                      step=self.name))
        for output, path in sorted((self.step.get("outputs") or {}).items()):
            try:
                names.check_output_name(output)
            except names.InvalidName as e:
                self.errors.append(invalid_name(e))
                continue
            problem = _output_path_problem(path)
            if problem is not None:
                self.errors.append(_error(
                    "bad_output_path", f"step {self.name!r} output {output!r}: path {path!r} "
                    f"{problem}", step=self.name, output=output, path=path))
        for arg in argv:
            self.template(arg)

    def function(self, function: Mapping[str, Any]) -> None:
        if self.step.get("outputs"):
            self.errors.append(_error(
                "outputs_on_function", f"step {self.name!r}: function steps declare outputs with "
                "returns, not outputs", step=self.name))
        for name in function.get("returns") or []:
            try:
                names.check_output_name(name)
            except names.InvalidName as e:
                self.errors.append(invalid_name(e))
        for kwarg in sorted(function.get("blobs") or {}):
            if kwarg in (function.get("kwargs") or {}):
                self.errors.append(_error(
                    "kwarg_twice", f"step {self.name!r}: keyword argument {kwarg!r} is given both as "
                    "JSON and as a blob", step=self.name, name=kwarg))
        for kwarg, text in sorted((function.get("kwargs") or {}).items()):
            try:
                value = json.loads(text, parse_constant=_no_constant)
            except ValueError as e:
                self.errors.append(_error(
                    "bad_kwarg", f"step {self.name!r}: keyword argument {kwarg!r} is not valid "
                    f"JSON ({e})", step=self.name, name=kwarg))
                continue
            if isinstance(value, str):
                self.template(value)
        for req in function.get("requirements") or []:
            why = requirements.problem(req)
            if why is not None:
                self.errors.append(_error(
                    "bad_requirement", f"step {self.name!r}: requirement {req!r} {why}; give PEP "
                    "508 specifiers such as 'pandas==2.3.3' or 'name @ https://...', never "
                    "installer options", step=self.name, requirement=req))

    def run(self) -> None:
        self.explicit_parents()
        command, function = self.step.get("command"), self.step.get("function")
        if command is None and function is None:
            self.errors.append(_error("no_command", f"step {self.name!r} has neither a command "
                                      "nor a function", step=self.name))
        elif command is not None and function is not None:
            self.errors.append(_error("command_and_function", f"step {self.name!r} has both a "
                                      "command and a function; keep one", step=self.name))
        elif command is not None:
            self.command(command)
        elif function is not None:
            self.function(function)
        for key, value in sorted((self.step.get("env") or {}).items()):
            if not _env_name_ok(key):
                self.errors.append(_error(
                    "bad_env_name", f"step {self.name!r}: environment variable name {key!r} is "
                    "not valid", step=self.name, name=key))
            self.template(value)


def _reserved(step: Mapping[str, Any], queue: str) -> SpecError:
    name = step.get("name", "")
    return _error("reserved_queue", f"step {name!r}: queue {queue!r} is reserved for drover itself "
                  "(submissions and pipeline drivers); pick another queue", step=name, queue=queue)


def _driver_errors(step: Mapping[str, Any]) -> list[SpecError]:
    """A driver is a function step without parents whose queue, when given, is `drivers`."""
    name = step.get("name", "")
    reasons = []
    if step.get("function") is None:
        reasons.append("a driver must be a function step")
    if step.get("parents"):
        reasons.append("a driver has no parents")
    if step.get("queue") not in (None, DRIVERS_QUEUE):
        reasons.append("a driver runs on the `drivers` queue; leave `queue` unset")
    return [_error("bad_driver", f"step {name!r}: {r}", step=name, reason=r) for r in reasons]


def _check_step(step: Mapping[str, Any], declared: Mapping[str, Sequence[str]],
                params: Mapping[str, str], default_queue_ok: bool, default_queue: str,
                errors: list[SpecError]) -> tuple[set[str], set[tuple[str, str]]] | None:
    """Checks one step; returns its parents and inputs, or None when it has a problem."""
    ok = True
    try:
        names.check_step_name(step.get("name", ""))
    except names.InvalidName as e:
        errors.append(invalid_name(e))
        ok = False
    queue = step.get("queue")
    if step.get("driver"):
        found = _driver_errors(step)
        errors.extend(found)
        ok = ok and not found
    elif queue is None:
        ok = ok and default_queue_ok  # its queue is the default one, reported once above
        if default_queue_ok and default_queue in RESERVED_QUEUES:
            errors.append(_reserved(step, default_queue))
            ok = False
    else:
        try:
            names.check_queue_name(queue)
        except names.InvalidName as e:
            errors.append(invalid_name(e))
            ok = False
        else:
            if queue in RESERVED_QUEUES:
                errors.append(_reserved(step, queue))
                ok = False
    priority = step.get("priority")
    if priority is not None and priority > MAX_PRIORITY:
        errors.append(_error(
            "bad_priority", f"step {step.get('name')!r}: priority {priority} is out of range; use "
            f"0 (lowest) to {MAX_PRIORITY} (highest)", step=step.get("name"), priority=priority,
            max=MAX_PRIORITY))
        ok = False
    checker = _StepChecker(step, declared, params)
    checker.run()
    errors.extend(checker.errors)
    if not ok or checker.errors:
        return None
    return checker.parents, checker.inputs


def _order(parents: dict[str, set[str]]) -> list[str] | SpecError:
    """Steps parents first (Kahn's algorithm in the controller's order), or one cycle."""
    steps = list(parents)
    index = {name: i for i, name in enumerate(steps)}
    pending = [len(parents[name]) for name in steps]
    children: list[list[int]] = [[] for _ in steps]
    for i, name in enumerate(steps):
        for parent in sorted(parents[name]):
            children[index[parent]].append(i)
    ready = [i for i in range(len(steps)) if pending[i] == 0]
    ready.reverse()
    order: list[int] = []
    while ready:
        i = ready.pop()
        order.append(i)
        for child in reversed(children[i]):
            pending[child] -= 1
            if pending[child] == 0:
                ready.append(child)
    if len(order) == len(steps):
        return [steps[i] for i in order]
    return _cycle(steps, parents, index, pending)


def _cycle(steps: list[str], parents: dict[str, set[str]], index: dict[str, int],
           pending: list[int]) -> SpecError:
    """Walks parent links among the steps left over by Kahn's algorithm until one repeats."""
    at = next(i for i in range(len(steps)) if pending[i] > 0)
    seen: dict[int, int] = {}
    path: list[int] = []
    while at not in seen:
        seen[at] = len(path)
        path.append(at)
        # Every leftover step has a leftover parent.
        at = next(index[p] for p in sorted(parents[steps[at]]) if pending[index[p]] > 0)
    cycle = [steps[i] for i in path[seen[at]:]]
    cycle.reverse()
    cycle.append(cycle[0])
    return _error("cycle", f"dependency cycle: {' -> '.join(cycle)}", path=cycle)


def validate(spec: Mapping[str, Any], overrides: Mapping[str, str] | None = None) -> Checked:
    """Checks a PipelineSpec dict (the `[pipeline]`, `[parameters]` and `[[step]]` of a
    pipeline file) with parameter overrides; raises SpecErrors listing every problem."""
    errors: list[SpecError] = []
    meta: Mapping[str, Any] = spec.get("pipeline") or {}
    steps: Sequence[Mapping[str, Any]] = spec.get("step") or []
    if not str(meta.get("name") or "").strip():
        errors.append(_error("empty_pipeline_name", "the pipeline has no name"))
    if not steps:
        errors.append(_error("no_steps", "the pipeline has no steps"))
    params = _params(spec, overrides or {}, errors)
    default_queue_ok = True
    default_queue = meta.get("default_queue", "default")
    try:
        names.check_queue_name(default_queue)
    except names.InvalidName as e:
        errors.append(invalid_name(e))
        default_queue_ok = False

    declared: dict[str, list[str]] = {}
    for step in steps:
        name = step.get("name", "")
        if name in declared:
            errors.append(_error("duplicate_step", f"duplicate step name {name!r}: step names "
                                 "must be unique", step=name))
        declared[name] = _output_names(step)
    drivers = [str(step.get("name", "")) for step in steps if step.get("driver")]
    if len(drivers) > 1:
        errors.append(_error("several_drivers", f"the pipeline has more than one driver step: {drivers}",
                             steps=drivers))

    graph: dict[str, set[str]] = {}
    inputs: dict[str, list[tuple[str, str]]] = {}
    for step in steps:
        checked = _check_step(step, declared, params, default_queue_ok, default_queue, errors)
        if checked is not None:
            graph[step["name"]], step_inputs = checked
            inputs[step["name"]] = sorted(step_inputs)
    if errors:
        raise SpecErrors(errors)
    order = _order(graph)
    if isinstance(order, SpecError):
        raise SpecErrors([order])
    return Checked(order, {name: sorted(p) for name, p in graph.items()}, inputs)
