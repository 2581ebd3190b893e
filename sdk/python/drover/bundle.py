"""The source a component step runs: every component of its module, so components can call components.

A component's step gets one text per module: `from drover import PipelineDecorator`, the helper
functions of the module's components, then each component's `def` as written in the module,
with its other decorators kept and `@PipelineDecorator.component(...)` replaced by a
registration carrying the options already resolved by the driver. Inside the step, calling one
of those components therefore adds a step through the channel (a nested component), and the
step's entry `_drover_entry_<def name>` is the undecorated function. The text also holds itself
as `_drover_bundle`, the source of the nested steps it starts.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import linecache
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

PRELUDE = "from drover import PipelineDecorator\nfrom drover.decorator import _shipped\n"


def entry_name(def_name: str) -> str:
    """The name the step's runner calls: the component's function without the registration."""
    return f"_drover_entry_{def_name}"


def full_source(bundle: str) -> str:
    """The step's source: the bundle and the bundle's own text, for nested calls."""
    return f"{bundle}\n_drover_bundle = {bundle!r}\n"


def _is_component_decorator(node: ast.expr) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    return (isinstance(target, ast.Attribute) and target.attr in ("component", "_shipped")) or (
        isinstance(target, ast.Name) and target.id in ("component", "_shipped"))


_TREES: dict[tuple[str, str], ast.Module] = {}


def _module_tree(filename: str, module_globals: Mapping[str, Any]) -> tuple[list[str], ast.Module]:
    lines = linecache.getlines(filename, dict(module_globals))
    if not lines:
        raise ValueError(f"cannot read the source of {filename}: components must be defined in a file")
    text = "".join(lines)
    key = (filename, hashlib.sha256(text.encode("utf-8")).hexdigest())
    tree = _TREES.get(key)
    if tree is None:
        tree = _TREES[key] = ast.parse(text, filename)
    return lines, tree


def find_def(filename: str, lineno: int, module_globals: Mapping[str, Any]) -> ast.FunctionDef:
    """The module-level `def` whose decorators include the one applied at `lineno`."""
    _, tree = _module_tree(filename, module_globals)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([d.lineno for d in node.decorator_list] + [node.lineno])
            if first <= lineno <= node.lineno:
                if isinstance(node, ast.AsyncFunctionDef):
                    raise ValueError(f"component {node.name}: async functions cannot be components")
                return node
    raise ValueError(
        f"{filename}:{lineno}: a component must be a module-level function decorated with "
        "@PipelineDecorator.component(...)"
    )


class Piece:
    """One component's part of the bundle: its def text and what it needs."""

    def __init__(self, def_name: str, text: str, decorator_names: list[str]) -> None:
        self.def_name = def_name
        self.text = text  # the def with its other decorators, without the component one
        self.decorator_names = decorator_names


def piece(filename: str, node: ast.FunctionDef, module_globals: Mapping[str, Any]) -> Piece:
    """The def of `node` as written, minus the component decorator."""
    lines, _ = _module_tree(filename, module_globals)
    kept = [d for d in node.decorator_list if not _is_component_decorator(d)]
    decorators = []
    names: list[str] = []
    for d in kept:
        segment = ast.get_source_segment("".join(lines), d)
        decorators.append(f"@{segment}\n")
        names.extend(n.id for n in ast.walk(d) if isinstance(n, ast.Name))
    body = "".join(lines[node.lineno - 1 : node.end_lineno])
    return Piece(node.name, "".join(decorators) + textwrap.dedent(body).rstrip() + "\n", names)


def function_text(fn: Any, owner: str) -> str:
    """The dedented source of a helper function."""
    if not inspect.isfunction(fn) or fn.__name__ == "<lambda>":
        raise ValueError(f"component {owner}: helper {fn!r} is not a function defined with def")
    try:
        return textwrap.dedent(inspect.getsource(fn)).rstrip() + "\n"
    except (OSError, TypeError) as e:
        raise ValueError(f"component {owner}: cannot read the source of {fn.__name__}(): {e}") from e


def module_function_text(name: str, filename: str, module_globals: Mapping[str, Any]) -> str | None:
    """The source of the module-level function `name` (used as a decorator), when there is one."""
    lines, tree = _module_tree(filename, module_globals)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            first = min([d.lineno for d in node.decorator_list] + [node.lineno])
            return textwrap.dedent("".join(lines[first - 1 : node.end_lineno])).rstrip() + "\n"
    return None


def build(pieces: Sequence[tuple[Piece, dict[str, Any]]], helpers: Sequence[str],
          decorator_sources: Sequence[str]) -> str:
    """The bundle text: the prelude, helpers, decorators used by components, then each
    component registered with its resolved options and its entry."""
    parts = [PRELUDE]
    seen: set[str] = set()
    for text in [*helpers, *decorator_sources]:
        if text not in seen:
            seen.add(text)
            parts.append(text)
    for p, options in pieces:
        registration = f"@_shipped({json.dumps(options, sort_keys=True)!r})\n"
        parts.append(registration + p.text + f"{entry_name(p.def_name)} = {p.def_name}.function\n")
    return "\n\n".join(parts)
