"""ClearML's `TaskScheduler` and `TriggerScheduler` over the controller's schedules and triggers.

In drover the controller is the scheduler that is always running: `start()` and
`start_remotely()` register what was added with it (`POST /api/v1/schedules`,
`/api/v1/triggers`) and return; the controller fires the runs from then on, across its
restarts. What is scheduled is an earlier run (`schedule_task_id`): its pipeline is submitted
again as it was, with `task_parameters` changed.

ClearML's timing arguments are turned into a cron expression (`to_cron`); the arguments with no
counterpart (`schedule_function`, `year`, `recurring=False`, `limit_execution_time`,
`reuse_task`, `task_overrides`, `target_project`, ...) raise NotImplementedError naming them.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from . import controllers, settings
from .api import error_message

WEEKDAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")


def to_cron(minute: int | None = None, hour: int | None = None, day: int | None = None,
            weekdays: Sequence[str] | None = None, month: int | None = None) -> str:
    """The 5-field cron expression of ClearML's timing arguments: the longest one given is the
    interval between runs, the shorter ones the time within it (`minute=15`: every 15 minutes;
    `hour=1, minute=30`: every hour at :30; `day=1, hour=22, minute=30`: every day at 22:30;
    `day=0, weekdays=['saturday'], hour=8`: Saturdays at 8:00; `month=1, day=5`: the 5th of
    every month)."""
    dow = "*"
    if weekdays:
        unknown = [w for w in weekdays if w.lower() not in WEEKDAYS]
        if unknown:
            raise ValueError(f"weekdays {unknown} are not day names; use {', '.join(WEEKDAYS)}")
        dow = ",".join(str(WEEKDAYS.index(w.lower())) for w in weekdays)
    for name, value, top in (("minute", minute, 59), ("hour", hour, 23), ("day", day, 31), ("month", month, 12)):
        if value is not None and not 0 <= value <= top:
            raise ValueError(f"{name}={value} is out of range 0..{top}")
    if month:
        return f"{minute or 0} {hour or 0} {day or 1} */{month} {dow}".replace("*/1 ", "* ")
    if day:
        return f"{minute or 0} {hour or 0} */{day} * {dow}".replace("*/1 ", "* ")
    if day == 0 or (weekdays and not hour and not minute):
        if not weekdays:
            raise ValueError("day=0 means on the given weekdays: pass weekdays=[...]")
        return f"{minute or 0} {hour or 0} * * {dow}"
    if hour:
        return f"{minute or 0} */{hour} * * {dow}".replace("*/1 ", "* ")
    if minute:
        return f"*/{minute} * * * {dow}".replace("*/1 ", "* ")
    raise ValueError("give at least one of minute, hour, day, weekdays or month")


def _post(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POSTs JSON to the controller, with its token or else a CSRF token and cookie."""
    base = settings.controller_url()
    headers = {"content-type": "application/json", "accept": "application/json",
               **settings.auth_headers(base + path)}
    if "authorization" not in headers:
        csrf = _get("/api/v1/csrf")
        headers["x-drover-csrf"] = csrf["token"]
        headers["cookie"] = csrf["cookie"]
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with controllers.urlopen(request, timeout=30) as response:
            doc: dict[str, Any] = json.load(response)
            return doc
    except urllib.error.HTTPError as e:
        detail = error_message(e.read().decode("utf-8", "replace").strip())
        raise RuntimeError(f"POST {path} answered {e.code}: {detail}") from e


def _get(path: str) -> dict[str, Any]:
    base = settings.controller_url()
    request = urllib.request.Request(base + path, headers={"accept": "application/json",
                                                           **settings.auth_headers(base + path)})
    try:
        with controllers.urlopen(request, timeout=30) as response:
            doc: dict[str, Any] = json.load(response)
            return doc
    except urllib.error.HTTPError as e:
        detail = error_message(e.read().decode("utf-8", "replace").strip())
        raise RuntimeError(f"GET {path} answered {e.code}: {detail}") from e


def _run_id(task: Any) -> str:
    """A run id from a run id or anything with one as `.id`."""
    run = task if isinstance(task, str) else getattr(task, "id", None)
    if not isinstance(run, str) or not run:
        raise ValueError(f"schedule_task_id must be a run id (or have one as .id), got {task!r}")
    return run


def _params(task_parameters: dict[str, Any] | None) -> dict[str, str]:
    """Parameter overrides as text; ClearML's `Args/` section prefix is dropped."""
    return {k.split("/", 1)[1] if k.startswith("Args/") else k: v if isinstance(v, str) else json.dumps(v)
            for k, v in (task_parameters or {}).items()}


def _refuse(args: dict[str, Any], defaults: dict[str, Any], method: str) -> None:
    given = sorted(name for name, value in args.items() if value != defaults.get(name))
    if given:
        raise NotImplementedError(f"{method}: drover has no counterpart for {', '.join(given)}")


class TaskScheduler:
    """Runs earlier runs' pipelines again on a schedule kept by the controller."""

    def __init__(self, sync_frequency_minutes: float = 15, force_create_task_name: str | None = None,
                 force_create_task_project: str | None = None) -> None:
        # The controller keeps the schedules: there is no scheduler task to sync or create.
        self._pending: list[dict[str, Any]] = []
        self._immediately: list[str] = []

    def add_task(self, schedule_task_id: Any = None, schedule_function: Callable[..., Any] | None = None,
                 queue: str | None = None, name: str | None = None, target_project: str | None = None,
                 minute: int | None = None, hour: int | None = None, day: int | None = None,
                 weekdays: list[str] | None = None, month: int | None = None, year: int | None = None,
                 limit_execution_time: float | None = None, single_instance: bool = False,
                 recurring: bool = True, execute_immediately: bool = False, reuse_task: bool = False,
                 task_parameters: dict[str, Any] | None = None, task_overrides: dict[str, Any] | None = None) -> bool:
        """Adds a schedule for the pipeline of run `schedule_task_id` (registered by `start()`).
        `single_instance=True` skips a slot while the previous run is unfinished;
        `execute_immediately=True` also submits it once at `start()`. The steps run on the queues
        their pipeline names: `queue` is not used."""
        _refuse({"schedule_function": schedule_function, "target_project": target_project, "year": year,
                 "limit_execution_time": limit_execution_time, "recurring": recurring,
                 "reuse_task": reuse_task, "task_overrides": task_overrides},
                {"recurring": True, "reuse_task": False}, "TaskScheduler.add_task")
        if queue is not None:
            warnings.warn(f"queue={queue!r} is not used: a scheduled run's steps run on the queues "
                          "its pipeline names", stacklevel=2)
        run = _run_id(schedule_task_id)
        schedule_name = name or run
        schedule: dict[str, Any] = {
            "name": schedule_name,
            "cron": to_cron(minute=minute, hour=hour, day=day, weekdays=weekdays, month=month),
            "overlap": not single_instance,
            "from_run": run,
            "params": _params(task_parameters),
        }
        self._pending.append(schedule)
        if execute_immediately:
            self._immediately.append(schedule_name)
        return True

    def get_scheduled_tasks(self) -> list[dict[str, Any]]:
        """The controller's schedules (`ScheduleView`s), then those not registered yet."""
        listed: list[dict[str, Any]] = _get("/api/v1/schedules")["schedules"]
        return listed + list(self._pending)

    def remove_task(self, task_id: Any) -> bool:
        """Removes the schedule named `task_id` (by default a schedule is named after its run)."""
        name = task_id if isinstance(task_id, str) else _run_id(task_id)
        before = len(self._pending)
        self._pending = [s for s in self._pending if s["name"] != name]
        if len(self._pending) < before:
            return True
        try:
            _post(f"/api/v1/schedules/{name}/remove", {})
        except RuntimeError as e:
            if " 404:" in str(e):
                return False
            raise
        return True

    def start(self) -> None:
        """Registers the added schedules with the controller, which fires them from now on;
        returns at once (ClearML's loop runs in the controller)."""
        while self._pending:
            _post("/api/v1/schedules", self._pending[0])
            self._pending.pop(0)
        for name in self._immediately:
            _post(f"/api/v1/schedules/{name}/run-now", {})
        self._immediately = []

    def start_remotely(self, queue: str = "services") -> None:
        """As `start()`: the controller is drover's remote scheduler."""
        self.start()


class TriggerScheduler:
    """Runs an earlier run's pipeline each time a run of another pipeline ends as asked."""

    def __init__(self, pooling_frequency_minutes: float = 3.0, sync_frequency_minutes: float = 15,
                 force_create_task_name: str | None = None, force_create_task_project: str | None = None) -> None:
        self._pending: list[dict[str, Any]] = []

    def add_task_trigger(self, schedule_task_id: Any = None, schedule_queue: str | None = None,
                         schedule_function: Callable[[str], None] | None = None, trigger_project: str | None = None,
                         trigger_name: str | None = None, trigger_on_tags: list[str] | None = None,
                         trigger_on_status: list[str] | None = None, trigger_exclude_dev_tasks: bool | None = None,
                         trigger_on_metric: str | None = None, trigger_on_variant: str | None = None,
                         trigger_on_threshold: float | None = None, trigger_on_sign: str | None = None,
                         trigger_required_tags: list[str] | None = None, name: str | None = None,
                         target_project: str | None = None, add_tag: bool | str = True, single_instance: bool = False,
                         reuse_task: bool = False, task_parameters: dict[str, Any] | None = None,
                         task_overrides: dict[str, Any] | None = None) -> None:
        """Adds a trigger (registered by `start()`): each run of pipeline `trigger_name` in
        project `trigger_project` that ends `completed` (succeeded; the default) or `failed`
        submits the pipeline of run `schedule_task_id`, with the triggering run's id in its
        parameter `trigger_run` (which it must declare)."""
        _refuse({"schedule_function": schedule_function, "trigger_on_tags": trigger_on_tags,
                 "trigger_exclude_dev_tasks": trigger_exclude_dev_tasks, "trigger_on_metric": trigger_on_metric,
                 "trigger_on_variant": trigger_on_variant, "trigger_on_threshold": trigger_on_threshold,
                 "trigger_on_sign": trigger_on_sign, "trigger_required_tags": trigger_required_tags,
                 "target_project": target_project, "single_instance": single_instance,
                 "reuse_task": reuse_task, "task_overrides": task_overrides},
                {"single_instance": False, "reuse_task": False}, "TriggerScheduler.add_task_trigger")
        if not trigger_project or not trigger_name:
            raise ValueError("give trigger_project and trigger_name: the pipeline whose runs fire the trigger")
        statuses = trigger_on_status or ["completed"]
        on = {"completed": "success", "succeeded": "success", "failed": "failure"}
        unknown = [s for s in statuses if s not in on]
        if unknown or len({on[s] for s in statuses}) != 1:
            raise NotImplementedError(
                f"trigger_on_status={statuses}: drover triggers on one of 'completed' or 'failed'")
        if schedule_queue is not None:
            warnings.warn(f"schedule_queue={schedule_queue!r} is not used: a triggered run's steps run on "
                          "the queues its pipeline names", stacklevel=2)
        run = _run_id(schedule_task_id)
        self._pending.append({
            "name": name or f"{trigger_name}-{run[-8:]}",
            "on": on[statuses[0]],
            "upstream": f"{trigger_project}/{trigger_name}",
            "from_run": run,
            "params": _params(task_parameters),
        })

    def start(self) -> None:
        """Registers the added triggers with the controller and returns."""
        while self._pending:
            _post("/api/v1/triggers", self._pending[0])
            self._pending.pop(0)

    def start_remotely(self, queue: str = "services") -> None:
        """As `start()`: the controller is drover's remote scheduler."""
        self.start()
