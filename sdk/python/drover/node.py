"""A pipeline step as ClearML's step callbacks see it (`PipelineController.Node`).

`pre_execute_callback(pipeline, node, parameters)` runs before the step starts (returning False
skips it and every step that depends on it), `status_change_callback(pipeline, node,
previous_status)` after each change of `node.status`, and `post_execute_callback(pipeline, node)`
once the step has ended. drover runs them in the process that runs the pipeline's logic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# drover's step statuses as ClearML's node statuses.
STATUS = {"pending": "pending", "queued": "queued", "running": "running", "succeeded": "completed",
          "cached": "cached", "failed": "failed", "skipped": "skipped", "aborted": "aborted"}
CALLBACKS = ("pre_execute_callback", "post_execute_callback", "status_change_callback")


class Node:
    """One step: its name, parents, queue, parameters (`kwargs/NAME` of a function step,
    `Section/name` of a task step), the registered task it runs (`base_task_id`, task steps),
    status and, once it ran, `executed` (the step's id, which `Task.get_task` accepts) with its
    start and end times."""

    def __init__(self, name: str, parents: list[str], queue: str | None, parameters: dict[str, Any],
                 callbacks: dict[str, Callable[..., Any]], base_task_id: str | None = None) -> None:
        self.name = name
        self.base_task_id = base_task_id  # the registered task an add_step step runs
        self.parents = list(parents)
        self.queue = queue
        self.parameters = dict(parameters)
        self.callbacks = dict(callbacks)
        self.status = "pending"
        self.executed: str | None = None
        self.job_started: float | None = None
        self.job_ended: float | None = None
        self.skip_job = False

    def __repr__(self) -> str:
        return f"<Node {self.name} {self.status}>"

    def set_status(self, pipeline: Any, status: str) -> None:
        """Moves the node to drover status `status`, calling its status_change_callback."""
        new = STATUS.get(status, status)
        previous, self.status = self.status, new
        callback = self.callbacks.get("status_change_callback")
        if callback is not None and new != previous:
            callback(pipeline, self, previous)

    def pre_execute(self, pipeline: Any) -> bool:
        """The pre_execute_callback's verdict: False skips the step (and what depends on it)."""
        callback = self.callbacks.get("pre_execute_callback")
        if callback is None:
            return True
        self.skip_job = callback(pipeline, self, self.parameters) is False
        return not self.skip_job

    def post_execute(self, pipeline: Any) -> None:
        callback = self.callbacks.get("post_execute_callback")
        if callback is not None:
            callback(pipeline, self)


def check(where: str, callbacks: dict[str, Any]) -> dict[str, Callable[..., Any]]:
    """The callbacks given (not None), each checked to be callable."""
    given = {}
    for name, value in callbacks.items():
        if value is None:
            continue
        if not callable(value):
            raise TypeError(f"{where}: {name}={value!r} is not callable")
        given[name] = value
    return given
