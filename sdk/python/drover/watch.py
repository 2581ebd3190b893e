"""The callbacks of a decorator pipeline's components, called in the process that runs its logic.

As in ClearML, a component's `pre_execute_callback(pipeline, node, parameters)` runs when its
step is about to start, its parents done (returning False skips the step and every step that
depends on it; the call's values are then None), `status_change_callback(pipeline, node,
previous_status)` after each change of the step's status and `post_execute_callback(pipeline,
node)` once the step has ended (not when it was skipped). Each call of a component with callbacks
gets a `Node` named as its step. `pipeline` is the run: its id, name, parameters and the steps
with callbacks (`drover.callbacks.RemotePipeline`).

Where the pipeline function runs decides who calls them:
- in a driver on an agent, a thread follows the run through the driver's channel with
  `drive.follow`, as PipelineController's driver does: a step with a pre_execute_callback is
  added marked `await_callback`, held by the controller ("waiting for callback") until the
  thread answers. A callback that raises ends the driver with exit code 1, which fails the run;
- under `run_locally()`, the local agent calls `status`, `pre_execute` and `post_execute` as it
  runs each step; a callback that raises fails that step.

Callbacks run from the pipeline module's source, which travels with the driver; a nested call
(a component calling a component) runs none, as its logic is the calling step's.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from . import api, drive
from .channel import Client
from .dynamic import TERMINAL
from .node import Node

# How often a driver reads its run's view while steps with callbacks are going.
POLL_SECONDS = 0.5


def for_pipeline(run_id: str, name: str, project: str, version: str | None, params: Mapping[str, str]) -> Watch:
    """The watch of one run of a decorator pipeline; its `pipeline` (what the callbacks get) is
    the run with its parameters (text) and the steps with callbacks added so far."""
    from .callbacks import RemotePipeline

    watch = Watch(None, params)
    info = {"name": name, "project": project, "version": version or ""}
    watch.pipeline = RemotePipeline(run_id, info, params, watch.entries)
    return watch


class Watch:
    """The steps with callbacks of one running pipeline function, and their nodes."""

    def __init__(self, pipeline: Any, params: Mapping[str, str]) -> None:
        self.pipeline = pipeline
        self.params = dict(params)
        self.entries: dict[str, drive.Entry] = {}
        self.nodes: dict[str, Node] = {}
        self._expected: dict[int, tuple[Mapping[str, Any], dict[str, Callable[..., Any]]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def expect(self, seq: int, spec: Mapping[str, Any], callbacks: Mapping[str, Callable[..., Any]]) -> None:
        """Call `seq` of the pipeline function, about to add a step with `spec`, has `callbacks`."""
        with self._lock:
            self._expected[seq] = (spec, dict(callbacks))

    def bind(self, seq: int, step: str) -> None:
        """Call `seq` added step `step` (the name the controller, or the local agent, gave it).
        The local agent binds before it starts the step, so no status change goes unseen."""
        with self._lock:
            expected = self._expected.pop(seq, None)
        if expected is not None:
            self.add(step, *expected)

    def add(self, step: str, spec: Mapping[str, Any], callbacks: Mapping[str, Callable[..., Any]]) -> None:
        """Step `step` (added with `spec`) calls `callbacks`."""
        parents = list(spec.get("parents") or [])
        entry: drive.Entry = {
            "parents": parents, "queue": spec.get("queue"), "base_task_id": None,
            "kwargs": dict(spec["function"].get("kwargs") or {}), "parameters": {},
            "callbacks": {kind: getattr(fn, "__name__", kind) for kind, fn in callbacks.items()},
        }
        with self._lock:
            self.entries[step] = entry
            self.nodes[step] = Node(step, parents, spec.get("queue"), {}, dict(callbacks))

    def declined(self, step: str) -> bool:
        """Whether the step's pre_execute_callback returned False."""
        node = self.nodes.get(step)
        return node is not None and node.skip_job

    # -- a driver on an agent -----------------------------------------------------------------

    def follow(self, client: Client, run_id: str) -> None:
        """Starts following the run through the driver's channel (once)."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._follow, args=(client, run_id),
                                            name="drover-callbacks", daemon=True)
            self._thread.start()

    def _follow(self, client: Client, run_id: str) -> None:
        from .callbacks import _Channel

        try:
            drive.follow(self.pipeline, run_id, self.entries, self.nodes, self.params, _Channel(client),
                         lambda line: print(line, flush=True), self._all_ended, POLL_SECONDS)
        except BaseException:
            # The pipeline function may be blocked on a step only this thread would answer:
            # end the driver, as a raising callback ends ClearML's pipeline process.
            print("drover: a component callback raised; the pipeline's driver stops:", file=sys.stderr)
            traceback.print_exc()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)

    def _all_ended(self, view: api.RunView) -> bool:
        if not self._stop.is_set():
            return False
        status = {s["name"]: s["status"] for s in view.get("steps", [])}
        return all(status.get(name) in TERMINAL for name in list(self.nodes))

    def finish(self) -> None:
        """Waits until every callback of the steps added has run (the steps have ended)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join()

    # -- run_locally() ------------------------------------------------------------------------

    def status(self, step: str, status: str) -> None:
        node = self.nodes.get(step)
        if node is not None:
            node.set_status(self.pipeline, status)

    def pre_execute(self, step: str) -> bool:
        """The step's pre_execute_callback's verdict (True when it has none)."""
        node = self.nodes.get(step)
        if node is None:
            return True
        node.parameters = drive.parameters(self.entries[step], self.params)
        return node.pre_execute(self.pipeline)

    def post_execute(self, step: str, run_id: str) -> None:
        node = self.nodes.get(step)
        if node is None:
            return
        node.executed = f"{run_id}/{step}"
        node.job_ended = time.time()
        node.post_execute(self.pipeline)

    def started(self, step: str) -> None:
        node = self.nodes.get(step)
        if node is not None and node.job_started is None:
            node.job_started = time.time()
