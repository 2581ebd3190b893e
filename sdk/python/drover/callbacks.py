"""The driver `start()` submits with a PipelineController's DAG when its steps have callbacks.

ClearML runs `pre_execute_callback`, `post_execute_callback` and `status_change_callback` in the
process that holds the pipeline's logic. A pipeline given to `start()` runs on agents, so its
logic is a driver step on the reserved `drivers` queue, submitted with the steps. Its function is
a small bootstrap (`bootstrap_source`) carrying the callbacks' source and the table of the steps
that have callbacks (`drive.table`); on the agent, `main` defines the callbacks from that source
and follows the run through the attempt's channel (`run`, `callback`), as the calling process
does under `start_locally()`. It ends once every other step has ended. A callback that raises
fails the driver, which takes the run down (as the pipeline process fails in ClearML).

Callbacks run from their source alone, like step functions: each must be a plain `def` that
imports what it uses inside its body.
"""

from __future__ import annotations

import inspect
import linecache
import sys
import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import api, requirements, spec
from .channel import Client
from .drive import Entry, follow, nodes, table
from .spec import Step

STEP_NAME = "driver"
ENTRY = "drover_callbacks"
MODULE_NAME = "__drover_callbacks__"
SOURCE_FILE = "pipeline_callbacks.py"
# How often the driver reads the run's view (through its agent).
POLL_SECONDS = 0.5


def callback_source(steps: Sequence[Step]) -> str:
    """The source of every callback the steps name, each once; refuses what cannot travel."""
    seen: dict[str, Callable[..., Any]] = {}
    parts = []
    for step in steps:
        for kind, fn in step.callbacks.items():
            where = f"step {step.name!r}: {kind}"
            other = seen.get(getattr(fn, "__name__", ""))
            if other is fn:
                continue
            if not inspect.isfunction(fn) or fn.__name__ == "<lambda>":
                raise ValueError(f"{where}={fn!r}: a pipeline given to start() runs its callbacks on an "
                                 "agent from their source, so each must be a function defined with def")
            if other is not None:
                raise ValueError(f"{where}: two different callbacks are named {fn.__name__!r}; give them "
                                 "distinct names (they are defined side by side on the agent)")
            if fn.__code__.co_freevars:
                raise ValueError(
                    f"{where}={fn.__name__}() uses {', '.join(fn.__code__.co_freevars)} of its enclosing "
                    "function, which does not travel to the agent; define the callback at module level"
                )
            spec.warn_if_not_self_contained(fn, None, f"{step.name} ({kind})")
            parts.append(spec.function_source(fn, None, step.name))
            seen[fn.__name__] = fn
    return "\n\n".join(parts)


def bootstrap_source(source: str, entries: Mapping[str, Entry], pipeline: Mapping[str, str]) -> str:
    """The driver's function source: the callbacks' source and the step table as literals."""
    return (
        f"def {ENTRY}(**params):\n"
        "    from drover import callbacks\n"
        "    return callbacks.main(CALLBACK_SOURCE, STEPS, PIPELINE, params)\n\n\n"
        f"CALLBACK_SOURCE = {source!r}\n"
        f"STEPS = {dict(entries)!r}\n"
        f"PIPELINE = {dict(pipeline)!r}\n"
    )


def driver_step(steps: Sequence[Step], pipeline: Mapping[str, str], params: Sequence[str]) -> dict[str, Any]:
    """The `[[step]]` entry of the driver, which gets the run's parameters as keyword arguments."""
    if any(s.name == STEP_NAME for s in steps):
        raise ValueError(f"start(): step {STEP_NAME!r} would clash with the driver that runs the steps' "
                         "callbacks on an agent; rename that step")
    source = callback_source(steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reqs = requirements.detect(source, STEP_NAME)
    return {
        "name": STEP_NAME, "command": None,
        "function": {
            "source": bootstrap_source(source, table(steps), pipeline),
            "entry": ENTRY,
            "kwargs": {name: f'"${{pipeline.{name}}}"' for name in sorted(params)},
            "returns": [],
            "requirements": reqs,
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        },
        "outputs": {}, "queue": None, "parents": [], "env": {},
        "timeout": None, "retries": 0, "retry_backoff": None, "cache": False, "continue_on_fail": False,
        "driver": True,
    }


class RemotePipeline:
    """What the callbacks get as `pipeline` on the agent: the run, its parameters and its DAG."""

    def __init__(self, run_id: str, info: Mapping[str, str], params: Mapping[str, str],
                 entries: Mapping[str, Entry]) -> None:
        self.id = run_id
        self.name = info.get("name", "")
        self.project = info.get("project", "")
        self.version = info.get("version", "")
        self._params = dict(params)
        self._entries = entries

    def __repr__(self) -> str:
        return f"<pipeline {self.name!r} run {self.id}>"

    def get_parameters(self) -> dict[str, str]:
        return dict(self._params)

    def get_pipeline_dag(self) -> dict[str, dict[str, Any]]:
        """The steps with callbacks: their parents and queue."""
        return {name: {"parents": list(e["parents"]), "queue": e["queue"]} for name, e in self._entries.items()}


class _Channel:
    """The run through the driver's channel (its agent relays with its own credentials)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def view(self) -> api.RunView | None:
        return self.client.run()

    def answer(self, step: str, proceed: bool) -> None:
        self.client.callback(step, proceed)


def load(source: str) -> dict[str, Any]:
    """Defines the callbacks from their source; tracebacks show its lines."""
    module = types.ModuleType(MODULE_NAME)
    module.__file__ = SOURCE_FILE
    linecache.cache[SOURCE_FILE] = (len(source), None, source.splitlines(True), SOURCE_FILE)
    sys.modules[MODULE_NAME] = module
    exec(compile(source, SOURCE_FILE, "exec"), module.__dict__)
    return module.__dict__


def main(source: str, entries: Mapping[str, Entry], pipeline: Mapping[str, str], params: Mapping[str, Any]) -> None:
    """Runs the steps' callbacks as the run goes, until every other step has ended."""
    client = Client.from_env()
    if client is None:
        raise RuntimeError("the callbacks' driver runs as a step of a run: DROVER_CHANNEL is not set")
    info = client.info()
    run_id, me = str(info["run_id"]), str(info["step"])
    namespace = load(source)
    found = nodes(entries, lambda step, name: namespace[name])
    # Parameters reach the driver as `${pipeline.NAME}` filled in: text, as the steps get them.
    texts = {name: str(value) for name, value in params.items()}
    remote = RemotePipeline(run_id, pipeline, texts, entries)

    def others_ended(view: api.RunView) -> bool:
        return all(s["status"] in ("succeeded", "cached", "failed", "skipped", "aborted")
                   for s in view.get("steps", []) if s["name"] != me)

    follow(remote, run_id, entries, found, texts, _Channel(client), lambda line: print(line, flush=True),
           others_ended, POLL_SECONDS)
