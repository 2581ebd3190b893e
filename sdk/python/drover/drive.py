"""`start_locally()` with steps on agents: this process holds the pipeline's logic.

The run is submitted as `start()` submits it, each step with a `pre_execute_callback` marked
`await_callback`, so the controller holds it once its parents are done ("waiting for
callback"). This process then follows the run: it calls each step's `status_change_callback`
as the step's status changes, its `pre_execute_callback` once the step waits for it (the answer,
run or skip, goes to `POST .../steps/{step}/callback`), and its `post_execute_callback` once the
step has ended. Changes a pre callback makes to `parameters` are not applied: the step's
arguments were fixed at submission.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import api, record, settings
from .local import job_kwargs
from .node import Node
from .spec import Step

_DONE = ("succeeded", "cached")


def drive(pipeline: Any, run_id: str, steps: Sequence[Step], params: Mapping[str, str],
          report: Callable[[str], None], poll: float = 0.2) -> api.RunView:
    """Follows run `run_id` to its end, running its steps' callbacks here; its last view."""
    http = record.Recorder(settings.controller_url(), run_id)
    by_name = {s.name: s for s in steps}
    nodes = {s.name: Node(s.name, s.all_parents(), s.queue, {}, s.callbacks) for s in steps}
    answered: set[str] = set()
    ended: set[str] = set()
    deadline = time.monotonic() + 60
    while True:
        try:
            view = api.get_run(http.base, run_id)
        except api.RunNotFound:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the controller at {http.base} has not picked up run {run_id} after 60 s; "
                                   "is it consuming this namespace (DROVER_NAMESPACE)?") from None
            time.sleep(poll)
            continue
        statuses = {s["name"]: s["status"] for s in view.get("steps", [])}
        for step in view.get("steps", []):
            name, status = step["name"], step["status"]
            node = nodes.get(name)
            if node is None:
                continue
            previous = node.status
            node.set_status(pipeline, status)
            if node.status != previous:
                report(f"  {name}: {status}")
            waiting = status == "pending" and all(statuses.get(p) in _DONE for p in node.parents)
            if waiting and "pre_execute_callback" in node.callbacks and name not in answered:
                kwargs = job_kwargs(by_name[name].kwargs, params)
                node.parameters = {f"kwargs/{k}": json.loads(v) for k, v in kwargs.items()}
                proceed = node.pre_execute(pipeline)
                http._post_json(f"/api/v1/runs/{run_id}/steps/{name}/callback", {"proceed": proceed},
                                f"answer the callback of step {name}")
                answered.add(name)
            if status in record.TERMINAL and status != "skipped" and name not in ended:
                ended.add(name)
                node.executed = f"{run_id}/{name}"
                node.post_execute(pipeline)
        if view.get("status") in api.TERMINAL_RUN_STATUSES:
            return view
        time.sleep(poll)
