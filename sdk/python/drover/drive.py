"""Following a run from the process that holds its pipeline's logic, calling the steps' callbacks.

Each step with a `pre_execute_callback` is submitted marked `await_callback`, so the controller
holds it once its parents are done ("waiting for callback"). The process holding the logic
follows the run's view: it calls each step's `status_change_callback` as the step's status
changes, its `pre_execute_callback` once the controller says the step waits for it (the answer,
run or skip, goes back to the controller), and its `post_execute_callback` once the step has
ended. Changes a pre callback makes to `parameters` are not applied: the step's arguments were
fixed at submission.

Two processes do this: the calling process under `start_locally()` with steps on agents
(`drive`, over HTTP), and the driver step `start()` submits with the DAG (`drover.callbacks`,
over its channel). Both build their nodes from the same table (`table`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from . import api, record, resolve, settings
from .node import Node
from .spec import Step

WAITING_FOR_CALLBACK = "waiting for callback"

# A step with callbacks as the following process needs it: parents, queue, the registered task
# it runs (None for a function step), its kwargs (JSON text, a function step's) or parameters
# (`Section/name` -> text, a task step's) and, by kind, its callbacks' function names.
Entry = dict[str, Any]


class Transport(Protocol):
    """How the following process reads the run and answers a held step."""

    def view(self) -> api.RunView | None:
        """The run's view, or None while the controller has not picked it up."""

    def answer(self, step: str, proceed: bool) -> None:
        """Answers step `step`'s pre_execute_callback."""


def table(steps: Sequence[Step]) -> dict[str, Entry]:
    """The steps with callbacks, as plain data (it travels as a literal inside a driver)."""
    return {
        s.name: {
            "parents": s.all_parents(), "queue": s.queue, "base_task_id": s.base_task_id,
            "kwargs": {} if s.base_task_id else dict(s.kwargs),
            "parameters": dict(s.parameters) if s.base_task_id else {},
            "callbacks": {kind: fn.__name__ for kind, fn in s.callbacks.items()},
        }
        for s in steps if s.callbacks
    }


def parameters(entry: Entry, params: Mapping[str, str], view: api.RunView | None = None) -> dict[str, Any]:
    """What the step's pre_execute_callback gets as `parameters`, filled in as ClearML fills them
    before its callback: `${pipeline.NAME}` and, from the run's `view`, `${STEP.id}` and
    `${STEP.artifacts.NAME.url}` of steps that have ended (the controller fills the same in when
    it dispatches the step; see `drover.resolve`)."""
    return resolve.parameters(entry.get("base_task_id"), entry.get("kwargs") or {}, entry.get("parameters") or {},
                              resolve.from_view(params, view))


def nodes(entries: Mapping[str, Entry], callbacks: Callable[[str, str], Callable[..., Any]]) -> dict[str, Node]:
    """A Node per entry; `callbacks(step, function_name)` finds each callback function."""
    return {
        name: Node(name, e["parents"], e["queue"], {},
                   {kind: callbacks(name, fn) for kind, fn in e["callbacks"].items()},
                   base_task_id=e.get("base_task_id"))
        for name, e in entries.items()
    }


def waiting(step: Mapping[str, Any]) -> bool:
    """Whether the controller holds the step for its pre_execute_callback's answer."""
    if step.get("status") != "pending":
        return False
    reason = step.get("pending_reason")
    if isinstance(reason, Mapping):
        return reason.get("reason") == "waiting_for_callback"
    return step.get("message") == WAITING_FOR_CALLBACK


def follow(pipeline: Any, run_id: str, entries: Mapping[str, Entry], nodes: Mapping[str, Node],
           params: Mapping[str, str], transport: Transport, report: Callable[[str], None],
           done: Callable[[api.RunView], bool], poll: float, patience: float = 60) -> api.RunView:
    """Follows run `run_id` until `done(view)`, calling the nodes' callbacks; its last view.
    A callback that raises stops the following (the exception goes up), as in ClearML."""
    answered: set[str] = set()
    ended: set[str] = set()
    deadline = time.monotonic() + patience
    while True:
        view = transport.view()
        if view is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the controller has not picked up run {run_id} after {patience:.0f} s; "
                                   "is it consuming this namespace (DROVER_NAMESPACE)?")
            time.sleep(poll)
            continue
        for step in view.get("steps", []):
            name, status = step["name"], step["status"]
            node = nodes.get(name)
            if node is None:
                continue
            previous = node.status
            node.set_status(pipeline, status)
            if node.status != previous:
                report(f"  {name}: {status}")
            if waiting(step) and name not in answered:
                node.parameters = parameters(entries[name], params, view)
                proceed = node.pre_execute(pipeline)
                transport.answer(name, proceed)
                answered.add(name)
            if status in record.TERMINAL and status != "skipped" and name not in ended:
                ended.add(name)
                node.executed = f"{run_id}/{name}"
                node.job_ended = time.time()
                node.post_execute(pipeline)
            elif status == "running" and node.job_started is None:
                node.job_started = time.time()
        if done(view):
            return view
        time.sleep(poll)


class _Http:
    """The run over HTTP, with the configured URL and token."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.http = record.Recorder(settings.controller_url(), run_id)

    def view(self) -> api.RunView | None:
        try:
            return api.get_run(self.http.base, self.run_id)
        except api.RunNotFound:
            return None

    def answer(self, step: str, proceed: bool) -> None:
        self.http._post_json(f"/api/v1/runs/{self.run_id}/steps/{step}/callback", {"proceed": proceed},
                             f"answer the callback of step {step}")


def drive(pipeline: Any, run_id: str, steps: Sequence[Step], params: Mapping[str, str],
          report: Callable[[str], None], poll: float = 0.2) -> api.RunView:
    """Follows run `run_id` to its end from this process (`start_locally()` with steps on
    agents), running its steps' callbacks here; its last view."""
    entries = table(steps)
    # Every step prints its status changes; those with callbacks call them here.
    found = {s.name: Node(s.name, s.all_parents(), s.queue, {}, s.callbacks, base_task_id=s.base_task_id)
             for s in steps}
    return follow(pipeline, run_id, entries, found, params, _Http(run_id), report,
                  lambda view: view.get("status") in api.TERMINAL_RUN_STATUSES, poll)
