"""The driver step: runs a decorator pipeline's module on an agent and calls its pipeline function.

The submitted driver step's function is a small bootstrap (see `bootstrap_source`) holding the
pipeline module's source. `main` runs that source as a module named `__drover_pipeline__`
(so its `if __name__ == "__main__":` block does not run), decodes the run's parameters (JSON
text, as submitted) and calls the pipeline function with every component call going through the
attempt's channel. When the attempt is not the first, the calls are replayed: the controller
answers those it has seen with their existing steps, and what the function prints until its
first new call is marked `[replay] `.
"""

from __future__ import annotations

import json
import linecache
import os
import sys
import types
from collections.abc import Mapping
from typing import Any

from . import dynamic, watch
from .channel import Client

MODULE_NAME = "__drover_pipeline__"
ENTRY = "drover_driver"


def bootstrap_source(module_source: str, module_file: str, pipeline: str) -> str:
    """The driver step's function source: the module travels inside it as a string."""
    return (
        f"def {ENTRY}(**params):\n"
        "    from drover import driver\n"
        "    return driver.main(MODULE_SOURCE, MODULE_FILE, PIPELINE, params)\n\n\n"
        f"MODULE_SOURCE = {module_source!r}\n"
        f"MODULE_FILE = {module_file!r}\n"
        f"PIPELINE = {pipeline!r}\n"
    )


def decode_param(text: object) -> Any:
    """A parameter as the pipeline function gets it: its JSON value, or the text itself when
    someone set it to text that is not JSON."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def load_module(source: str, filename: str) -> types.ModuleType:
    """Runs the pipeline module's source as `__drover_pipeline__`; tracebacks show its lines."""
    module = types.ModuleType(MODULE_NAME)
    module.__file__ = filename
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    sys.modules[MODULE_NAME] = module
    exec(compile(source, filename, "exec"), module.__dict__)
    return module


def main(module_source: str, module_file: str, pipeline: str, params: Mapping[str, Any]) -> Any:
    """Runs the pipeline function `pipeline` of the module with `params`; returns its result."""
    client = Client.from_env()
    if client is None:
        raise RuntimeError("the driver runs as a step of a run: DROVER_CHANNEL is not set")
    attempt = int(os.environ.get("DROVER_ATTEMPT", "1") or 1)
    module = load_module(module_source, module_file)
    target = getattr(module, pipeline, None)
    function = getattr(target, "function", None)
    if function is None:
        raise NameError(f"the pipeline module defines no @PipelineDecorator.pipeline function {pipeline!r}")
    session = dynamic.Session(client, os.getcwd(), default_queue=getattr(target, "default_queue", None),
                              replaying=attempt > 1)
    dynamic.mark_replays(session)
    info = client.info()
    session.run_id = str(info["run_id"])
    session.watch = watch.for_pipeline(session.run_id, str(getattr(target, "name", pipeline)),
                                       str(getattr(target, "project", "")), getattr(target, "version", None),
                                       {name: str(value) for name, value in params.items()})
    from .decorator import use_session

    use_session(session)
    kwargs = {name: decode_param(value) for name, value in params.items()}
    result = function(**kwargs)
    failed = session.wait_all()
    if failed:
        print("drover: the pipeline function returned; steps that did not succeed: "
              + ", ".join(f"{s} ({status})" for s, status in failed), flush=True)
    return result
