"""Runs one drover function step: `python drover_harness.py job.json` in the step's workdir.

The agent writes job.json (see ARCHITECTURE.md, "Python function steps"); this script loads the
function's source, turns the keyword arguments into Python values, calls the function and pickles
each declared return value to `<output_dir>/<name>.pkl`, which the agent then uploads. Any
exception ends the process with status 1 after printing its traceback, so the step fails with the
traceback in its log. Only the standard library and the bundled SDK are used: the step's
environment may hold nothing else.
"""

import json
import os
import pickle
import sys
import traceback

# The bundled SDK sits beside this file on PYTHONPATH; its parser is the controller's.
from drover.refs import render, whole_reference


def load_input(path):
    with open(path, "rb") as f:
        return pickle.load(f)


def resolve_kwarg(name, text, inputs):
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
    whole = whole_reference(value)
    if whole and f"{whole[0]}.{whole[1]}" in inputs:
        return load_input(inputs[f"{whole[0]}.{whole[1]}"])
    return render(value, lambda head, tail: inputs.get(f"{head}.{tail}"))


def load_function(source, entry):
    namespace = {"__name__": "__drover_step__"}
    code = compile(source, f"<step function {entry}>", "exec")
    exec(code, namespace)
    function = namespace.get(entry)
    if not callable(function):
        raise NameError(f"the step's source defines no function named {entry!r}")
    return function


def split_returns(result, names):
    """One name gets the whole value; several names unpack a sequence of the same length."""
    if len(names) <= 1:
        return dict(zip(names, [result]))
    try:
        values = list(result)
    except TypeError:
        raise TypeError(
            f"the function returned a {type(result).__name__}, "
            f"but function_return names {len(names)} values {names}"
        ) from None
    if len(values) != len(names):
        raise ValueError(
            f"the function returned {len(values)} values, "
            f"but function_return names {len(names)}: {names}"
        )
    return dict(zip(names, values))


def save_outputs(outputs, output_dir):
    os.makedirs(output_dir, exist_ok=True)
    for name, value in outputs.items():
        path = os.path.join(output_dir, f"{name}.pkl")
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)


def run(job):
    function = load_function(job["source"], job["entry"])
    inputs = job.get("inputs", {})
    kwargs = {
        name: resolve_kwarg(name, text, inputs) for name, text in job.get("kwargs", {}).items()
    }
    result = function(**kwargs)
    save_outputs(split_returns(result, job.get("returns", [])), job.get("output_dir", "_outputs"))


def main(argv):
    if len(argv) != 2:
        print("usage: drover_harness.py job.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        job = json.load(f)
    try:
        run(job)
    except BaseException:  # noqa: BLE001 - every failure must reach the step's log
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
