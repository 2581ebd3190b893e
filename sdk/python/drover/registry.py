"""Tasks registered with the controller (`/api/v1/tasks`), and the step that runs one (stdlib only).

A script that calls `Task.init` outside drover, with a controller reachable, registers itself:
project, name, type, its source, its requirements (its imports, pinned as for function steps)
and its connected parameters, updated as `connect` is called. `PipelineController.add_step`
finds a task here by id or by project and name, and adds a function step whose function runs
the script as `python script.py` would (`__name__ == "__main__"`) with the step's parameter
overrides, which `Task.connect` applies, cast to the connected values' types.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from . import controllers, refs, settings

# A task as the controller describes it (`TaskView`).
TaskView = dict[str, Any]

# The entry of a task's step, defined by `SCRIPT_RUNNER`.
ENTRY = "run_task_script"

SCRIPT_RUNNER = '''
def run_task_script(script, script_name, overrides):
    """Runs a registered task's script as `python script.py`, its overrides given to Task."""
    import json
    import sys

    from drover.task import Task

    Task.set_step_overrides(json.loads(overrides))
    name = script_name or "task_script.py"
    sys.argv = [name]
    namespace = {"__name__": "__main__", "__file__": name, "__builtins__": __builtins__}
    exec(compile(script, name, "exec"), namespace)
'''


def run_task_script(script: str, script_name: str, overrides: str) -> None:
    """Stands for the step's function in the SDK; the step runs `SCRIPT_RUNNER`'s copy."""
    namespace: dict[str, Any] = {}
    exec(SCRIPT_RUNNER, namespace)
    namespace[ENTRY](script, script_name, overrides)


class TaskNotFound(LookupError):
    """The controller has no such task."""


def _request(method: str, path: str, body: Mapping[str, Any] | None = None, timeout: float = 30) -> Any:
    url = f"{settings.controller_url()}{path}"
    headers = {"accept": "application/json", **settings.auth_headers(url)}
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["content-type"] = "application/json"
        if not settings.token():
            # A controller without a token wants a CSRF token and its cookie on every POST.
            csrf = _request("GET", "/api/v1/csrf")
            headers["x-drover-csrf"], headers["cookie"] = csrf["token"], csrf["cookie"]
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with controllers.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace").strip()
        if e.code == 404:
            raise TaskNotFound(detail) from None
        raise RuntimeError(f"{method} {url} answered {e.code}: {detail}") from None
    except urllib.error.URLError as e:
        raise ConnectionError(f"cannot reach the drover controller at {settings.controller_url()} "
                              f"({e.reason}); registered tasks live there (set DROVER_URL)") from None


def register(registration: Mapping[str, Any]) -> TaskView:
    """Registers a task (or updates the one `registration["id"]` names); its view."""
    view: TaskView = _request("POST", "/api/v1/tasks", registration)
    return view


def get(task_id: str) -> TaskView:
    view: TaskView = _request("GET", f"/api/v1/tasks/{urllib.parse.quote(task_id)}")
    return view


def find(project: str | None, name: str | None) -> TaskView | None:
    """The newest task registered with this project and name."""
    query = urllib.parse.urlencode({k: v for k, v in (("project", project), ("name", name)) if v is not None})
    tasks: list[TaskView] = _request("GET", f"/api/v1/tasks?{query}")["tasks"]
    return tasks[0] if tasks else None


def resolve(where: str, task_id: str | None, project: str | None, name: str | None) -> TaskView:
    """The task `add_step` names, or a ValueError saying what is missing and how to register it."""
    base = settings.controller_url()
    if task_id is not None:
        try:
            return get(task_id)
        except TaskNotFound:
            raise ValueError(f"{where}: no task {task_id!r} is registered with the controller at {base}; "
                             "`drover tasks` lists them") from None
    if name is None:
        raise ValueError(f"{where}: name the task with base_task_id= or base_task_name= "
                         "(and base_task_project=)")
    found = find(project, name)
    if found is None:
        raise ValueError(f"{where}: no task named {name!r} in project {project!r} is registered with the "
                         f"controller at {base}; run its script once (python SCRIPT.py, which calls "
                         "Task.init) to register it, and see `drover tasks`")
    return found


def override_text(value: object) -> str:
    """A parameter override as ClearML sends it: text (JSON for lists and dicts)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def step_kwargs(task: TaskView, overrides: Mapping[str, str]) -> dict[str, str]:
    """The keyword arguments of `run_task_script`. The script's text is escaped so that `${` in
    it is never a reference; the overrides may hold references (`${step.id}`, ...)."""
    return {
        "script": refs.escape(str(task["script"])),
        "script_name": str(task.get("script_name") or "task_script.py"),
        "overrides": json.dumps(dict(overrides), sort_keys=True),
    }
