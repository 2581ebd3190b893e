"""Running one function step from its job: the agent's harness and local runs both call this.

A job is what the agent writes to `job.json` (see ARCHITECTURE.md, "Python function steps"):
the function's source and entry, keyword arguments as JSON text, the local path of each input
artifact by `STEP.OUTPUT`, the local path of each keyword argument passed as a pickled blob,
the return names and the output directory. The function is defined
from its source alone, its kwargs resolved, its result split by return name and each value
pickled to `<output_dir>/<name>.pkl`. Only the standard library is used: a step's environment
may hold nothing else.
"""

from __future__ import annotations

import gc
import io
import json
import linecache
import os
import pickle
import sys
import traceback
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TypedDict

from . import refs


class Job(TypedDict, total=False):
    """The fields of `job.json`; all but `source` and `entry` may be missing."""

    source: str
    entry: str
    kwargs: dict[str, str]
    inputs: dict[str, str]
    blobs: dict[str, str]
    returns: list[str]
    output_dir: str


def load_input(path: str) -> Any:
    """The value an input artifact holds."""
    with open(path, "rb") as f:
        return pickle.load(f)


def resolve_kwarg(name: str, text: str, inputs: Mapping[str, str]) -> Any:
    """A JSON kwarg as the function receives it.

    Exactly "${STEP.OUTPUT}" is that output's unpickled value; a reference inside a longer string
    becomes the local path of the downloaded artifact; everything else is the JSON value itself.
    """
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ValueError(f"keyword argument {name!r} is not valid JSON: {e}") from None
    if not isinstance(value, str):
        return value
    whole = refs.whole_output(value)
    if whole is not None and whole.key in inputs:
        return load_input(inputs[whole.key])

    def path_of(reference: refs.Reference) -> str | None:
        return inputs.get(reference.key) if isinstance(reference, refs.Output) else None

    return refs.render(value, path_of)


def load_function(source: str, entry: str) -> Callable[..., Any]:
    """Defines `source` in a fresh namespace and returns its function `entry`; tracebacks show
    the source's lines."""
    filename = f"<step function {entry}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {"__name__": "__drover_step__"}
    exec(compile(source, filename, "exec"), namespace)
    function = namespace.get(entry)
    if not callable(function):
        raise NameError(f"the step's source defines no function named {entry!r}")
    return function  # type: ignore[no-any-return]


def split_returns(result: Any, names: Sequence[str]) -> dict[str, Any]:
    """One name gets the whole value; several names unpack a sequence of the same length."""
    if len(names) <= 1:
        return {name: result for name in names}
    try:
        values = list(result)
    except TypeError:
        raise TypeError(
            f"the function returned a {type(result).__name__}, "
            f"but function_return names {len(names)} values {list(names)}"
        ) from None
    if len(values) != len(names):
        raise ValueError(
            f"the function returned {len(values)} values, "
            f"but function_return names {len(names)}: {list(names)}"
        )
    return dict(zip(names, values, strict=True))


def save_outputs(outputs: Mapping[str, Any], output_dir: str) -> None:
    """Pickles each value to `<output_dir>/<name>.pkl`, renamed into place once written. A step
    that returns nothing creates no directory: a file system entry is not free for a short step."""
    if not outputs:
        return
    os.makedirs(output_dir, exist_ok=True)
    for name, value in outputs.items():
        path = os.path.join(output_dir, f"{name}.pkl")
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)


def run(job: Job) -> None:
    """Runs one step; raises what the function raises, or why its result does not fit."""
    function = load_function(job["source"], job["entry"])
    inputs = job.get("inputs", {})
    kwargs = {
        name: resolve_kwarg(name, text, inputs) for name, text in job.get("kwargs", {}).items()
    }
    for name, path in job.get("blobs", {}).items():
        if name in kwargs:
            raise ValueError(f"keyword argument {name!r} is given both as JSON and as a blob")
        kwargs[name] = load_input(path)
    result = function(**kwargs)
    save_outputs(split_returns(result, job.get("returns", [])), job.get("output_dir", "_outputs"))


def _print_failure() -> None:
    traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()


def run_reporting(job: Job) -> bool:
    """Runs one step; a failure (an exception, or the step calling sys.exit) prints its
    traceback to stderr and returns False. An interrupt of this process is not the step's."""
    try:
        run(job)
    except (Exception, SystemExit):
        _print_failure()
        return False
    return True


def main(argv: Sequence[str]) -> int:
    """`drover_harness.py job.json`: 0 when the step succeeded, 1 (with the traceback on
    stderr, so it is in the step's log) when it failed, 2 on a usage error."""
    if len(argv) != 2:
        print("usage: drover_harness.py job.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        job: Job = json.load(f)
    try:
        run(job)
    except BaseException:  # every failure, an interrupt too, must reach the step's log
        _print_failure()
        return 1
    return 0


def end_process(code: int) -> NoReturn:
    """Ends the step's process with `code` the way the interpreter would, without its teardown.

    What a normal exit does that a step can see is done first: non-daemon threads are joined,
    atexit handlers run (`logging.shutdown()` among them once logging was imported; called again
    here in case), and every open file is flushed, including one the step never closed. Freeing
    every module and object, which takes a large part of a short step after big imports, is
    left to the kernel.
    """
    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()  # what the interpreter calls at exit
    import atexit

    atexit._run_exitfuncs()
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.shutdown()
    _flush_open_files()
    os._exit(code)


# The file objects among those `freeze` moved out of the collector's reach, which
# `gc.get_objects()` no longer lists: weak references, so the freezing process still closes a
# file nothing refers to any more.
_frozen_files: list[Callable[[], io.IOBase | None]] = []


def freeze() -> None:
    """Moves every object alive now out of the collector's reach (`gc.freeze()`), for a process
    that forks: its children then neither write to those objects' pages when they collect nor
    list them when they end, yet `end_process` still flushes the open files among them."""
    _frozen_files.extend(_referred(f) for f in gc.get_objects() if issubclass(type(f), io.IOBase))
    gc.freeze()


def _referred(f: io.IOBase) -> Callable[[], io.IOBase | None]:
    try:
        return weakref.ref(f)
    except TypeError:  # a type without weak references: kept alive, still flushed
        return lambda: f


def _flush_open_files() -> None:
    """Flushes every open file object: text layers first, so their bytes reach the buffers."""
    files = [f for f in gc.get_objects() if issubclass(type(f), io.IOBase)]
    files.extend(f for f in (ref() for ref in _frozen_files) if f is not None)
    files.sort(key=lambda f: not isinstance(f, io.TextIOBase))
    for f in [*files, sys.stdout, sys.stderr]:
        try:
            if f is not None and not f.closed:
                f.flush()
        except Exception:  # a broken pipe or a closed descriptor: nothing left to save
            pass
