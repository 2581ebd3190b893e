"""Function steps and the pipeline spec dict, with exactly the field names the controller decodes."""
from __future__ import annotations

import ast
import builtins
import dataclasses
import dis
import inspect
import json
import math
import sys
import textwrap
import types
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from . import names, refs, validate

# A `[parameters]` entry: default, description and type, each a string or None.
ParamSpec = dict[str, str | None]


@dataclasses.dataclass
class Step:
    """One function step as added to a PipelineController."""

    name: str
    function: Callable[..., Any]
    source: str
    entry: str
    kwargs: dict[str, str]  # name -> JSON text
    values: dict[str, Any]  # name -> the Python value given
    returns: list[str]
    requirements: list[str]
    queue: str | None = None
    parents: list[str] = dataclasses.field(default_factory=list)
    cache: bool = False
    continue_on_fail: bool = False
    retries: int = 0
    timeout: str | None = None
    priority: int | None = None  # 0..9, or None for the default (0)
    prewarm: bool = True  # False: always a new interpreter, never forked from a warm parent
    python: str = f"{sys.version_info.major}.{sys.version_info.minor}"
    # pre_execute_callback, post_execute_callback, status_change_callback: run where the
    # pipeline's logic runs (start_locally); never part of the spec
    callbacks: dict[str, Callable[..., Any]] = dataclasses.field(default_factory=dict, compare=False)
    # `"Section/name"` -> text, for `${STEP.parameters.SECTION/NAME}`: a task step's overrides;
    # a function step's keyword arguments as `kwargs/NAME` (filled in by __post_init__).
    parameters: dict[str, str] = dataclasses.field(default_factory=dict)
    # The registered task an `add_step` step runs; None for a function step.
    base_task_id: str | None = None

    def __post_init__(self) -> None:
        if not self.parameters:
            self.parameters = {f"kwargs/{k}": v if isinstance(v, str) else json.dumps(v)
                               for k, v in self.values.items() if _json_like(v)}

    def referenced_steps(self) -> list[str]:
        """Steps this step's kwargs reference (outputs, ids, artifact URLs), in order of first use."""
        seen: list[str] = []
        for value in self.values.values():
            if isinstance(value, str):
                for reference in refs.references(value):
                    if not isinstance(reference, refs.Param) and reference.step not in seen:
                        seen.append(reference.step)
        return seen

    def all_parents(self) -> list[str]:
        """Explicit parents plus the steps referenced in kwargs, as the controller derives them."""
        return sorted(set(self.parents) | set(self.referenced_steps()))

    def to_spec(self) -> dict[str, Any]:
        """The `[[step]]` entry: every StepSpec field, command-only ones at their defaults."""
        return {
            "name": self.name,
            "command": None,
            "function": {
                "source": self.source,
                "entry": self.entry,
                "kwargs": dict(sorted(self.kwargs.items())),
                "returns": list(self.returns),
                "requirements": list(self.requirements),
                "python": self.python,
                # Sent only when off, so a controller that predates warm starts accepts it.
                **({} if self.prewarm else {"prewarm": False}),
            },
            "outputs": {},
            "queue": self.queue,
            "parents": list(self.parents),
            "env": {},
            "timeout": self.timeout,
            "retries": self.retries,
            "retry_backoff": None,
            "cache": self.cache,
            "continue_on_fail": self.continue_on_fail,
            # Sent only when set, so a controller that predates priorities still accepts it.
            **({"priority": self.priority} if self.priority is not None else {}),
            # The step waits for its pre_execute_callback's answer (steps on agents, the callbacks
            # in the process holding the pipeline's logic).
            **({"await_callback": True} if "pre_execute_callback" in self.callbacks else {}),
        }


def _json_like(value: object) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def check_priority(step: str, priority: object) -> int | None:
    """0 (lowest, the default) to 9 (highest): among waiting steps, higher ones run first."""
    if priority is None:
        return None
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise ValueError(f"step {step!r}: priority must be a whole number from 0 to 9, not {priority!r}")
    return priority


def function_source(function: object, helpers: Iterable[object] | None, step: str) -> str:
    """The dedented source of the step function followed by its helper functions'.

    The source is all an agent gets, so the function must be a plain `def` whose source
    Python can find (not a lambda, builtin or one typed into a bare interactive prompt).
    """
    parts = []
    for fn in [function, *(helpers or [])]:
        if not inspect.isfunction(fn):
            raise ValueError(f"step {step!r}: {fn!r} is not a Python function defined with def")
        if fn.__name__ == "<lambda>":
            raise ValueError(f"step {step!r}: lambdas cannot be steps or helpers; use def")
        try:
            text = inspect.getsource(fn)
        except (OSError, TypeError) as e:
            raise ValueError(f"step {step!r}: cannot read the source of {fn.__name__}(): {e}") from e
        parts.append(textwrap.dedent(text).rstrip() + "\n")
    return "\n\n".join(parts)


def undecorated(function: Callable[..., Any]) -> tuple[Callable[..., Any], list[Callable[..., Any]]]:
    """The function a decorator wrapped and the decorators (module-level functions) its `@`
    lines name, or `(function, [])` when it is not a decorated function.

    A decorated step is shipped as the decorators' source followed by the wrapped function's
    own, `@` lines included, so the agent applies the same decorators. The wrapped function is
    found through `__wrapped__` (`functools.wraps`) or as the one function among the wrapper's
    closure variables."""
    inner: Any = getattr(function, "__wrapped__", None)
    if not inspect.isfunction(inner) and inspect.isfunction(function) and function.__closure__:
        cells = [c.cell_contents for c in function.__closure__ if inspect.isfunction(c.cell_contents)]
        inner = cells[0] if len(cells) == 1 else None
    if not inspect.isfunction(inner):
        return function, []
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(inner)))
    except (OSError, TypeError, SyntaxError):
        return function, []
    node = tree.body[0] if tree.body else None
    if not isinstance(node, ast.FunctionDef) or not node.decorator_list:
        return function, []
    decorators: list[Callable[..., Any]] = []
    for expression in node.decorator_list:
        head = expression.func if isinstance(expression, ast.Call) else expression
        value = inner.__globals__.get(head.id) if isinstance(head, ast.Name) else None
        if not inspect.isfunction(value):
            return function, []
        decorators.append(value)
    return inner, decorators


def _global_names(code: types.CodeType) -> set[str]:
    """Names a code object (and the functions nested in it) loads as globals."""
    found = set()
    for ins in dis.get_instructions(code):
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and isinstance(ins.argval, str):
            found.add(ins.argval)
    for const in code.co_consts:
        if inspect.iscode(const):
            found |= _global_names(const)
    return found


def warn_if_not_self_contained(function: Callable[..., Any], helpers: Iterable[Callable[..., Any]] | None,
                               step: str) -> None:
    """Warns about what the step uses but will not have on the agent: module-level imports,
    functions and classes of the submitting script, and variables of an enclosing function."""
    # function_source has checked that each is a plain function.
    functions = [fn for fn in [function, *(helpers or [])] if isinstance(fn, types.FunctionType)]
    shipped = {fn.__name__ for fn in functions}
    missing: list[str] = []
    for fn in functions:
        for name in sorted(_global_names(fn.__code__)):
            if name in shipped or hasattr(builtins, name) or name not in fn.__globals__:
                continue
            value = fn.__globals__[name]
            if inspect.ismodule(value) or inspect.isfunction(value) or inspect.isclass(value):
                missing.append(name)
        if fn.__code__.co_freevars:
            missing.extend(fn.__code__.co_freevars)
    if missing:
        used = ", ".join(sorted(set(missing)))
        warnings.warn(
            f"step {step!r} uses {used} from outside its function: the step runs from its "
            "source alone, so import inside the function or pass helper_functions=",
            stacklevel=3,
        )


def encode_kwargs(step: str, kwargs: Mapping[Any, object] | None) -> dict[str, str]:
    """Each kwarg as JSON text (`'${pipeline.url}'` -> `'"${pipeline.url}"'`)."""
    encoded = {}
    for name, value in (kwargs or {}).items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"step {step!r}: kwarg name {name!r} is not a Python identifier")
        try:
            encoded[name] = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"step {step!r}: kwarg {name!r} = {value!r} cannot be sent as JSON ({e}); "
                "pass JSON values (str, int, float, bool, None, lists, dicts) or return the "
                "object from another step and reference it with '${step.name}'"
            ) from e
        if not isinstance(value, str) and "${" in encoded[name]:
            warnings.warn(
                f"step {step!r}: kwarg {name!r} holds '${{' inside a {type(value).__name__}; "
                "references are resolved only in string kwargs",
                stacklevel=3,
            )
    return encoded


def check_signature(step: str, function: Callable[..., Any], kwargs: Mapping[str, object] | None) -> None:
    """Raises ValueError when the kwargs do not fit the function, before anything runs."""
    try:
        inspect.signature(function).bind(**(kwargs or {}))
    except TypeError as e:
        raise ValueError(f"step {step!r}: function_kwargs do not fit {function.__name__}(): {e}") from e


def timeout_text(step: str, time_limit: object) -> str | None:
    """`time_limit` seconds as a duration the controller parses (`90s`, `1500ms`)."""
    if time_limit is None:
        return None
    if isinstance(time_limit, bool) or not isinstance(time_limit, (int, float)):
        raise ValueError(f"step {step!r}: time_limit must be seconds (a number), not {time_limit!r}")
    if not math.isfinite(time_limit) or time_limit <= 0:
        raise ValueError(f"step {step!r}: time_limit must be positive seconds, not {time_limit!r}")
    if float(time_limit).is_integer():
        return f"{int(time_limit)}s"
    return f"{max(1, round(time_limit * 1000))}ms"


def param_spec(default: object, description: object, param_type: object) -> ParamSpec:
    """A `[parameters]` entry: values travel as strings; None means no default."""
    if isinstance(param_type, type):
        param_type = param_type.__name__
    return {
        "default": None if default is None else str(default),
        "description": None if description is None else str(description),
        "type": None if param_type is None else str(param_type),
    }


def pipeline_spec(name: str, project: str, version: str, default_queue: str,
                  params: Mapping[str, ParamSpec], steps: Sequence[Step]) -> dict[str, Any]:
    """The whole PipelineSpec dict: `pipeline`, `parameters` and `step` (the list key)."""
    return {
        "pipeline": {
            "name": name,
            "project": project,
            "version": version,
            "default_queue": default_queue,
            "description": None,
        },
        "parameters": {k: dict(v) for k, v in sorted(params.items())},
        "step": [s.to_spec() for s in steps],
    }


def check_returns(step: str, function_return: str | Iterable[str] | None) -> list[str]:
    """The return names as a list; each must be a valid output name, none repeated."""
    if function_return is None:
        return []
    returns = [function_return] if isinstance(function_return, str) else list(function_return)
    for r in returns:
        try:
            names.check_output_name(r)
        except names.InvalidName as e:
            raise ValueError(f"step {step!r}: invalid return name {r!r}: {e.reason}") from e
    if len(set(returns)) != len(returns):
        raise ValueError(f"step {step!r}: function_return {returns} repeats a name")
    return returns


def check_references(step: str, kwargs: Mapping[str, object],
                     declared: Mapping[str, Sequence[str]]) -> None:
    """Every `${step.output}` in a string kwarg must name an earlier step and one of its return
    names (`declared`: each earlier step's return names), by the controller's rules;
    `${pipeline.x}` is checked once the pipeline is complete."""
    for kwarg, value in kwargs.items():
        if not isinstance(value, str):
            continue
        for reference in refs.references(value):
            errors = validate.reference_errors(step, reference, declared, params=None)
            if errors:
                raise ValueError(f"{errors[0]} (kwarg {kwarg!r})")


def check_complete(pipeline: str, params: Mapping[str, ParamSpec], steps: Sequence[Step]) -> None:
    """The checks that need the whole pipeline and that the SDK words its own way: some steps,
    and every parameter with a default (nothing can override it at submit time)."""
    if not steps:
        raise ValueError(f"pipeline {pipeline!r} has no steps; add some with add_function_step")
    for name, p in params.items():
        if p["default"] is None:
            raise ValueError(f"parameter {name!r} has no default; give add_parameter a default")
