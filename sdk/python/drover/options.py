"""ClearML arguments that drover does not act on: refused when they matter, warned when harmless."""
from __future__ import annotations

import warnings
from collections.abc import Mapping

# Argument name -> (value given, its default).
Given = Mapping[str, tuple[object, object]]

_NO_REPO = ("steps ship their function's source; drover does not check out repositories (import "
            "the code inside the function, or pass helpers with helper_functions=)")
_NO_DOCKER = ("steps run in per-requirements virtualenvs on the agents, not in containers; give "
              "the step's packages with packages=")
_NO_CALLBACK = ("the controller is a service and cannot call back into this script; follow the run "
                "with wait() and act on get_pipeline_dag() / is_successful() afterwards")

# Arguments whose effect drover cannot provide; giving them would change what runs.
UNSUPPORTED = {
    "repo": _NO_REPO,
    "repo_branch": _NO_REPO,
    "repo_commit": _NO_REPO,
    "working_dir": "each step runs in a fresh work directory on the agent; use absolute paths or "
                   "pass files as step outputs",
    "docker": _NO_DOCKER,
    "docker_args": _NO_DOCKER,
    "docker_bash_setup_script": _NO_DOCKER,
    "pre_execute_callback": _NO_CALLBACK,
    "post_execute_callback": _NO_CALLBACK,
    "status_change_callback": _NO_CALLBACK,
    "step_task_created_callback": _NO_CALLBACK,
    "step_task_completed_callback": _NO_CALLBACK,
    "draft": "every step of a submitted pipeline is executed; leave the step out to not run it",
    "configuration_overrides": "a task step takes parameter_override only; connect the values as "
                               "parameters (task.connect) to override them",
    "task_overrides": "a task step runs the registered script as it is; register another task to change it",
    "base_task_factory": "a task step runs a task registered with the controller; name it with "
                         "base_task_id= or base_task_project= and base_task_name=",
    "recursively_parse_parameters": "references are read in parameter_override's values as given, "
                                    "not inside nested values",
    "artifact_serialization_function": "return values always travel as pickle files; return bytes "
                                       "from the step to choose the format yourself",
    "artifact_deserialization_function": "return values always travel as pickle files; return bytes "
                                         "from the step to choose the format yourself",
    "abort_on_failure": (
        "a failing step skips only the steps that depend on it; independent branches finish "
        "(make the other steps depend on it with parents= to stop them)"
    ),
}

# Arguments about ClearML's bookkeeping; drover runs the same pipeline without them.
IGNORED = {
    "add_pipeline_tags": "drover has no tags",
    "pool_frequency": "the controller follows runs by their events, not by polling",
    "tags": "drover has no tags",
    "target_project": "steps are shown within their run, not in projects",
    "project_name": "steps are shown within their run, not in projects",
    "task_name": "a step is shown by its step name",
    "task_type": "drover has no task types",
    "auto_version_bump": "the version is sent as given",
    "always_create_from_code": "steps are always created from the function's code",
    "output_uri": "artifacts are stored by the controller",
    "auto_connect_frameworks": "drover does not log framework outputs",
    "auto_connect_arg_parser": "drover does not connect argument parsers",
    "monitor_metrics": "drover does not collect metrics; return values are the artifacts",
    "monitor_artifacts": "drover stores return values only",
    "monitor_models": "drover stores return values only",
    "stage": "drover does not group steps into stages",
    "clone_base_task": "a task step always runs the registered script and never changes the task",
    "packages": (
        "the controller runs no Python; give packages= to add_function_step for a step's needs"
    ),
}


def refuse(where: str, given: Given) -> None:
    """Raises NotImplementedError for the first unsupported argument in `given` that is set.

    `given` maps argument name -> (value, default); a value equal to its default is fine.
    """
    for arg, (value, default) in given.items():
        if value != default and arg in UNSUPPORTED:
            raise NotImplementedError(f"{where}: {arg}= is not supported by drover: {UNSUPPORTED[arg]}")


def warn_ignored(where: str, given: Given, stacklevel: int = 3) -> None:
    """Warns once per harmless argument in `given` set to something other than its default."""
    for arg, (value, default) in given.items():
        if value != default and arg in IGNORED:
            warnings.warn(f"{where}: {arg}={value!r} has no effect: {IGNORED[arg]}", stacklevel=stacklevel)


CONTINUE_BEHAVIOUR = {
    # key -> the value drover implements when it is not the step's continue_on_fail
    "continue_on_abort": False,
    "skip_children_on_fail": True,
    "skip_children_on_abort": True,
}


def continue_on_fail_from(step: str, continue_on_fail: object, continue_behaviour: object) -> bool:
    """The step's continue_on_fail after ClearML's `continue_behaviour` dict, refusing what
    drover does not do (children of a failed or aborted step are always skipped)."""
    if continue_behaviour is None:
        return bool(continue_on_fail)
    if not isinstance(continue_behaviour, dict):
        raise ValueError(f"step {step!r}: continue_behaviour must be a dict, not {continue_behaviour!r}")
    for key, value in continue_behaviour.items():
        if key == "continue_on_fail":
            continue_on_fail = bool(value)
        elif key in CONTINUE_BEHAVIOUR:
            if bool(value) != CONTINUE_BEHAVIOUR[key]:
                raise NotImplementedError(
                    f"step {step!r}: continue_behaviour {key}={value!r} is not supported by drover "
                    "(the steps depending on a failed or aborted step are always skipped)"
                )
        else:
            raise ValueError(f"step {step!r}: unknown continue_behaviour key {key!r}")
    return bool(continue_on_fail)


def retries_from(where: str, retry_on_failure: object, default: int = 0) -> int:
    """A retry count from ClearML's `retry_on_failure` (an int; callbacks are not supported)."""
    if retry_on_failure is None:
        return default
    if callable(retry_on_failure):
        raise NotImplementedError(
            f"{where}: retry_on_failure as a callback is not supported by drover; give a number of retries"
        )
    if isinstance(retry_on_failure, bool) or not isinstance(retry_on_failure, int) or retry_on_failure < 0:
        raise ValueError(f"{where}: retry_on_failure must be a number of retries >= 0, not {retry_on_failure!r}")
    return retry_on_failure
