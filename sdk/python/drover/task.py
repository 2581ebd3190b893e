"""Task: ClearML's experiment object, as far as drover runs it (stdlib only).

`Task.init` in a script run outside drover registers the script with the controller when one
answers at the SDK's URL (`drover.registry`: source, requirements, connected parameters, updated
as `connect` is called), so a pipeline can run it as a step; `execute_remotely()` then exits.
With no controller, or no script file, the task runs **offline**: it warns once, says where the
task keeps its files (`DROVER_OFFLINE_DIR`, else `~/.cache/drover/offline`, then `<task id>/`),
keeps connected parameters and configurations in memory, artifacts in
`<that dir>/artifacts/<name>/` and reports on its `Logger`. A registered task keeps its
artifacts there too.

Inside a drover step (the agent sets `DROVER_RUN_ID` and `DROVER_STEP`), `Task.init` and
`Task.current_task()` give that step's task, whose id is `<run id>/<step>` (the same for every
attempt). `upload_artifact` stores the object as one of the step's outputs through the step's
channel (see `drover.stepartifacts`), and `Task.get_task(task_id=...)` gives another step of
the run, read-only, whose `artifacts` are fetched through the channel as well (outside a step,
through the HTTP API). `connect` applies the step's parameter overrides (a step made from a
registered task); the logger prints reports to the step's console and stores its scalars
with the step (`drover.scalars`).
"""
from __future__ import annotations

import ast
import json
import os
import pathlib
import re
import sys
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from . import artifacts, controllers, options, registry, requirements, settings, stepartifacts, task_types
from .logger import Logger
from .task_types import TaskTypes

__all__ = ["Task", "TaskTypes"]


def offline_root() -> str:
    """Where offline tasks keep their files: `DROVER_OFFLINE_DIR`, else `~/.cache/drover/offline`."""
    return os.environ.get("DROVER_OFFLINE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "drover",
                                                                "offline")


def _controller_reachable(timeout: float = 1.0) -> bool:
    url = f"{settings.controller_url()}/healthz"
    try:
        with controllers.urlopen(urllib.request.Request(url, headers=settings.auth_headers(url)),
                                    timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _step_env() -> tuple[str, str] | None:
    """(run id, step) when this process runs a drover step."""
    run, step = os.environ.get("DROVER_RUN_ID"), os.environ.get("DROVER_STEP")
    return (run, step) if run and step else None


class Task:
    """One task: offline in a plain script, the step's task inside a drover step."""

    TaskTypes = TaskTypes

    _main: ClassVar[Task | None] = None
    _warned_offline: ClassVar[bool] = False
    _step_overrides: ClassVar[dict[str, str]] = {}

    def __init__(self, task_id: str, project_name: str, task_name: str, task_type: task_types.TaskTypes,
                 in_step: bool, directory: str | None) -> None:
        self._id, self._project, self._name, self._type = task_id, project_name, task_name, task_type
        self._in_step = in_step
        self._dir = directory
        self._parameters: dict[str, Any] = {}  # "Section/name" -> the connected value
        self._overrides: dict[str, str] = {}  # "Section/name" -> the value to apply on connect
        self._configurations: dict[str, Any] = {}
        self._artifacts: dict[str, artifacts.Artifact | artifacts.StoredArtifact] = {}
        self._logger = Logger(self)
        self._closed = False
        self._read_only = False
        self._script: tuple[str, str] | None = None  # (file name, source) of a registered task

    # -- creating -----------------------------------------------------------------------------

    @classmethod
    def init(cls, project_name: str | None = None, task_name: str | None = None,
             task_type: task_types.TaskTypes | str = TaskTypes.training, tags: Sequence[str] | None = None,
             reuse_last_task_id: bool | str = True, continue_last_task: bool | str | int = False,
             output_uri: str | bool | None = None, auto_connect_arg_parser: bool | Mapping[str, bool] = True,
             auto_connect_frameworks: bool | Mapping[str, Any] = True,
             auto_resource_monitoring: bool | Mapping[str, Any] = True,
             auto_connect_streams: bool | Mapping[str, bool] = True, deferred_init: bool = False) -> Task:
        """This process's task: the step's inside a drover step, else a new offline task.

        A second call returns the same task, as in ClearML. `continue_last_task` is refused;
        tags and `output_uri` only matter to ClearML's bookkeeping and storage, and warn.
        """
        if continue_last_task not in (False, None, 0, ""):
            raise NotImplementedError(
                "Task.init: continue_last_task= is not supported by drover: each Task.init starts a new "
                "task; keep state in artifacts and read them back with Task.artifacts")
        options.warn_ignored("Task.init", {"tags": (tags, None), "output_uri": (output_uri, None)})
        kind = _task_type(task_type)
        if cls._main is not None:
            return cls._main
        where = _step_env()
        if where is not None:
            cls._main = cls._step_task(where, project_name or "", kind)
            return cls._main
        name = task_name or "untitled"
        script = _main_script()
        registered = None
        if script is not None and _controller_reachable():
            registered = _register(None, project_name or "", name, kind, script, {})
        task_id = registered or uuid.uuid4().hex
        directory = os.path.join(offline_root(), task_id)
        os.makedirs(os.path.join(directory, "artifacts"), exist_ok=True)
        cls._main = cls(task_id, project_name or "", name, kind, in_step=False, directory=directory)
        if registered is not None:
            cls._main._script = script
            print(f"drover Task: registered task id={registered} ({project_name or ''}/{name}) with "
                  f"{settings.controller_url()}; a pipeline runs it with add_step(base_task_id=...)")
        elif not cls._warned_offline:
            cls._warned_offline = True
            why = ("this is no script file to register" if script is None and _controller_reachable()
                   else f"no drover controller is reachable at {settings.controller_url()}")
            warnings.warn(f"drover: Task {name!r} runs offline ({why}); its artifacts are kept in "
                          f"{directory}", stacklevel=2)
        return cls._main

    @classmethod
    def set_step_overrides(cls, overrides: Mapping[str, str]) -> None:
        """The parameter overrides of the step this process runs (`"Section/name"` -> text),
        applied by `connect` to the step's task."""
        cls._step_overrides = dict(overrides)
        if cls._main is not None and cls._main._in_step:
            cls._main._overrides.update(cls._step_overrides)

    @classmethod
    def _step_task(cls, where: tuple[str, str], project: str, kind: task_types.TaskTypes) -> Task:
        run, step = where
        task = cls(f"{run}/{step}", project, step, kind, in_step=True, directory=None)
        task._overrides.update(cls._step_overrides)
        return task

    @classmethod
    def current_task(cls) -> Task | None:
        """The task `Task.init` made; inside a drover step, the step's task even without
        `Task.init`; else None."""
        if cls._main is None:
            where = _step_env()
            if where is not None:
                cls._main = cls._step_task(where, "", TaskTypes.training)
        return cls._main

    @staticmethod
    def running_locally() -> bool:
        """False inside a drover step (run by an agent), True otherwise."""
        return _step_env() is None

    @classmethod
    def get_task(cls, task_id: str | None = None, project_name: str | None = None, task_name: str | None = None,
                 tags: Sequence[str] | None = None, allow_archived: bool = True,
                 task_filter: Mapping[str, Any] | None = None) -> Task:
        """The task of a drover step, read-only, by its id `<run id>/<step>` (`task.id`,
        `${step.id}`): its artifacts are the step's outputs. Inside a step, only steps of the
        same run are reachable, and another step is read once it has ended."""
        if task_id is None and _step_env() is not None:
            raise NotImplementedError(
                "Task.get_task(project_name=, task_name=) inside a step: a step reaches only the steps "
                "of its own run; pass task_id= (another step's task.id, or ${step.id} in a pipeline)")
        if task_id is None:
            return cls._registered(registry.resolve("Task.get_task", None, project_name, task_name))
        run, slash, step = str(task_id).partition("/")
        if not slash and _step_env() is None:
            return cls._registered(registry.resolve("Task.get_task", str(task_id), None, None))
        if not slash or not run or not step:
            raise ValueError(f"Task.get_task: {task_id!r} is not a drover task id: give '<run id>/<step>', "
                             "as a step's task.id or ${step.id} in a pipeline gives it")
        current = cls.current_task()
        if current is not None and current.id == task_id:
            return current
        try:
            found = stepartifacts.step_artifacts(run, step)
        except stepartifacts.StepNotFound as e:
            raise ValueError(f"Task.get_task: no task {task_id!r}: {e}") from None
        task = cls(task_id, project_name or "", step, TaskTypes.training, in_step=False, directory=None)
        task._read_only = True
        task._artifacts.update(found)
        return task

    @classmethod
    def _registered(cls, view: Mapping[str, Any]) -> Task:
        """A task registered with the controller, read-only: its parameters as registered."""
        task = cls(str(view["id"]), str(view.get("project", "")), str(view.get("name", "")),
                   _task_type(view.get("task_type") or "training"), in_step=False, directory=None)
        task._read_only = True
        task._parameters.update(view.get("parameters") or {})
        return task

    def execute_remotely(self, queue_name: str | None = None, clone: bool = False,
                         exit_process: bool = True) -> Task | None:
        """Inside a drover step (running remotely) this does nothing, as in ClearML. Outside, the
        task must be registered (a controller answered at `Task.init`): with no queue that is
        all, and with `queue_name` a one-step run of its script is submitted on that queue; then
        the process exits when `exit_process`. `clone=True` is refused."""
        if self._in_step:
            return None
        if clone:
            raise NotImplementedError(
                "execute_remotely(clone=True) is not supported by drover: a run never changes the registered "
                "task, so run the task itself (clone=False)")
        if self._script is None:
            raise RuntimeError(
                f"execute_remotely: task {self._name!r} is not registered: no drover controller was "
                f"reachable at {settings.controller_url()} when Task.init ran (set DROVER_URL)")
        if queue_name is not None:
            self._submit_one_step_run(queue_name)
        if exit_process:
            print(f"drover Task: task id={self._id} is registered; exiting (execute_remotely)")
            sys.stdout.flush()
            raise SystemExit(0)
        return None

    def _submit_one_step_run(self, queue: str) -> None:
        """A run of this task's script alone, on `queue`, with its registered parameters."""
        from .pipeline import PipelineController  # late: the pipeline module imports much more

        step = re.sub(r"[^A-Za-z0-9_-]+", "_", self._name).strip("_")[:100] or "task"
        if step == "pipeline":
            step = "task"
        pipe = PipelineController(name=self._name, project=self._project or "tasks", version="1")
        pipe.add_step(name=step, base_task_id=self._id, execution_queue=queue)
        pipe.start(wait=False)

    # -- what it is ---------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The task's id: a random hex id offline, `<run id>/<step>` inside a step."""
        return self._id

    @property
    def name(self) -> str:
        return self._name

    @property
    def task_type(self) -> task_types.TaskTypes:
        return self._type

    def get_project_name(self) -> str:
        return self._project

    def get_offline_mode_folder(self) -> pathlib.Path | None:
        """The directory an offline task keeps its files in; None inside a step."""
        return pathlib.Path(self._dir) if self._dir else None

    # -- parameters and configuration ---------------------------------------------------------

    def connect(self, mutable: Any, name: str | None = None, ignore_remote_overrides: bool = False) -> Any:
        """Records the parameters of a dict or an object's public attributes under section
        `name` (default "General") and returns `mutable` itself, after applying any override
        for them cast to the connected value's type. An offline task has no overrides; a
        drover step has none yet (function steps take their values as arguments)."""
        section = name or "General"
        if isinstance(mutable, dict):
            for key, value in mutable.items():
                mutable[key] = self._connect_value(section, str(key), value, ignore_remote_overrides)
        elif isinstance(mutable, (str, bytes, int, float, bool)) or mutable is None:
            raise ValueError(f"connect: give a dict or an object with attributes, not {type(mutable).__name__}")
        else:
            for key, value in _public_attributes(mutable).items():
                setattr(mutable, key, self._connect_value(section, key, value, ignore_remote_overrides))
        if self._script is not None:
            _register(self._id, self._project, self._name, self._type, self._script, self.get_parameters())
        return mutable

    def _connect_value(self, section: str, key: str, value: Any, ignore_overrides: bool) -> Any:
        path = f"{section}/{key}"
        if not ignore_overrides and path in self._overrides:
            value = cast_override(path, self._overrides[path], value)
        self._parameters[path] = value
        return value

    def connect_configuration(self, configuration: Mapping[str, Any] | list[Any] | pathlib.Path | str,
                              name: str | None = None, description: str | None = None,
                              ignore_remote_overrides: bool = False) -> Any:
        """Records a configuration (a dict or list, or a file's text for a path) under `name`
        (default "General") and returns it as given: the same dict or list, or the file's path."""
        section = name or "General"
        if isinstance(configuration, (str, pathlib.PurePath)):
            path = os.fspath(configuration)
            if not os.path.isfile(path):
                raise ValueError(f"connect_configuration: no such configuration file: {path}")
            with open(path, encoding="utf-8") as f:
                self._configurations[section] = f.read()
            return configuration
        if not isinstance(configuration, (Mapping, list)):
            raise ValueError("connect_configuration: give a dict, a list or a file path, "
                             f"not {type(configuration).__name__}")
        self._configurations[section] = configuration
        return configuration

    def get_configuration_object(self, name: str) -> str | None:
        """A configuration recorded by `connect_configuration`, as text (JSON for a dict or list)."""
        value = self._configurations.get(name)
        if value is None or isinstance(value, str):
            return value
        return json.dumps(value, sort_keys=True)

    def get_parameters(self, backwards_compatibility: bool = True, cast: bool = False) -> dict[str, Any]:
        """The connected parameters as `{"Section/name": value}`: values as strings, as ClearML
        stores them, or as connected with `cast=True`."""
        if cast:
            return dict(self._parameters)
        return {k: _as_text(v) for k, v in self._parameters.items()}

    # -- artifacts ----------------------------------------------------------------------------

    def upload_artifact(self, name: str, artifact_object: Any, metadata: Mapping[str, Any] | None = None,
                        delete_after_upload: bool = False, auto_pickle: bool | None = None,
                        preview: Any = None, wait_on_upload: bool = False, extension_name: str | None = None,
                        serialization_function: Callable[[Any], bytes] | None = None, retries: int = 0,
                        sort_keys: bool = True) -> bool:
        """Keeps `artifact_object` as artifact `name` and returns True: an existing file as it
        is, a folder zipped, anything else pickled. Offline under `<offline dir>/artifacts/<name>/`;
        inside a drover step it becomes one of the step's outputs (`drover artifacts get RUN STEP
        NAME`), which must not have the name of one of its return values."""
        if serialization_function is not None or extension_name is not None:
            raise NotImplementedError(
                "upload_artifact: serialization_function= and extension_name= are not supported by drover: "
                "objects are pickled and files are kept as they are; give a file path to choose the format")
        if self._read_only:
            raise PermissionError(f"upload_artifact: task {self._id} belongs to another step and is read-only "
                                  "here; a step stores artifacts on its own task (Task.current_task())")
        if self._in_step:
            here = stepartifacts.InStep.from_env()
            staged = artifacts.store(here.staging, name, artifact_object, metadata, delete_after_upload,
                                     auto_pickle)
            stored = here.store(self._name, name, staged.get_local_copy(extract_archive=False))
            stored.metadata = dict(metadata or {})
            self._artifacts[name] = stored
            return True
        if self._dir is None:
            raise RuntimeError(f"upload_artifact: task {self._id} has no place to keep artifacts")
        self._artifacts[name] = artifacts.store(os.path.join(self._dir, "artifacts"), name, artifact_object,
                                                metadata, delete_after_upload, auto_pickle)
        return True

    @property
    def artifacts(self) -> dict[str, artifacts.Artifact | artifacts.StoredArtifact]:
        """Name -> Artifact for what this task uploaded (read-only copy); for another step's
        task, that step's outputs."""
        return dict(self._artifacts)

    # -- reporting ----------------------------------------------------------------------------

    def get_logger(self) -> Logger:
        return self._logger

    def get_reported_scalars(self) -> dict[str, dict[str, dict[str, list[float]]]]:
        """What `report_scalar` recorded, in ClearML's shape: title -> series -> {"x", "y"}."""
        return {title: {series: {"x": [float(i) for i, _ in points], "y": [v for _, v in points]}
                        for series, points in lines.items()}
                for title, lines in self._logger.scalars.items()}

    def get_reported_single_values(self) -> dict[str, float]:
        return dict(self._logger.single_values)

    def close(self) -> None:
        """Ends the task: `Task.current_task()` is None afterwards (a step's task comes back)."""
        self._logger.flush()
        self._closed = True
        if Task._main is self:
            Task._main = None

    def __repr__(self) -> str:
        mode = "step" if self._in_step else "read-only" if self._read_only else "offline"
        return f"<Task {self._name!r} id={self._id} ({mode})>"


def _main_script() -> tuple[str, str] | None:
    """(file name, source) of the script this process runs, or None (an interactive session)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return os.path.basename(path), f.read()


def _register(task_id: str | None, project: str, name: str, kind: TaskTypes, script: tuple[str, str],
              parameters: Mapping[str, str]) -> str:
    """Registers (or updates) the task with the controller; its id."""
    file_name, source = script
    view = registry.register({
        "id": task_id, "project": project, "name": name, "task_type": kind.value, "script": source,
        "script_name": file_name, "requirements": requirements.detect(source, name),
        "parameters": dict(parameters),
    })
    return str(view["id"])


def _task_type(task_type: object) -> TaskTypes:
    try:
        return TaskTypes(str(task_type))
    except ValueError:
        known = ", ".join(t.value for t in TaskTypes)
        raise ValueError(f"Task.init: unknown task_type {task_type!r} (one of: {known})") from None


def _public_attributes(obj: Any) -> dict[str, Any]:
    """An object's (or a class's) public, non-callable attributes, as ClearML connects them."""
    source = vars(obj) if not isinstance(obj, type) and hasattr(obj, "__dict__") else {
        k: getattr(obj, k) for k in dir(obj)}
    return {k: v for k, v in source.items() if not k.startswith("_") and not callable(v)}


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return str(value)


_TRUE, _FALSE = {"true", "1", "yes", "y", "on"}, {"false", "0", "no", "n", "off", ""}


def cast_override(path: str, text: str, connected: Any) -> Any:
    """An override's text as the type of the value it replaces (`"0.25"` for a float is 0.25),
    as ClearML casts; a value that does not fit that type is a ValueError naming the parameter."""
    if connected is None or isinstance(connected, str):
        return text
    try:
        if isinstance(connected, bool):
            lowered = text.strip().lower()
            if lowered not in _TRUE | _FALSE:
                raise ValueError(text)
            return lowered in _TRUE
        if isinstance(connected, int):
            number = float(text)
            if not number.is_integer():
                raise ValueError(text)
            return int(number)
        if isinstance(connected, float):
            return float(text)
        if isinstance(connected, (list, tuple, dict)):
            try:
                value = json.loads(text)
            except ValueError:
                value = ast.literal_eval(text)
            if not isinstance(value, (list, tuple, dict)) or isinstance(value, dict) != isinstance(connected, dict):
                raise ValueError(text)
            return type(connected)(value)
    except (ValueError, SyntaxError):
        raise ValueError(f"parameter {path}: override {text!r} is not a {type(connected).__name__}, "
                         f"the type of the connected value {connected!r}") from None
    return type(connected)(text)
