"""PipelineController: ClearML's pipeline-from-functions API, submitting to a drover controller."""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import api, messages, names, node, options, registry, requirements, settings, spec, validate
from .local import LocalRun

# drover's run and step statuses as ClearML's task statuses (completed, failed, stopped).
_OUTCOME = {"succeeded": "completed", "cached": "completed", "failed": "failed", "rejected": "failed",
            "aborted": "stopped"}
# ClearML's fail_condition -> the outcomes that count as success.
_SUCCESS = {"all": ("completed",), "failed": ("completed", "stopped"), "aborted": ("completed", "failed")}


# `${STEP.parameters.SECTION/NAME}`: resolved when the pipeline is built (see _parameter_refs).
_PARAMETER_REF = re.compile(r"(?<!\$)\$\{([A-Za-z0-9_-]+)\.parameters\.([^}]+)\}")


class PipelineController:
    """A pipeline of Python function steps, built in this script and run by drover.

    Keyword names and defaults follow ClearML's PipelineController. Arguments drover cannot
    honour raise NotImplementedError when set; bookkeeping-only ones are accepted with a warning.
    Step code never sees this script's module-level imports: each step must import what it
    uses inside its function (`skip_global_imports` is therefore always in effect).
    """

    def __init__(self, name: str, project: str | None, version: str | None = None,
                 pool_frequency: float = 0.2,
                 add_pipeline_tags: bool = False, target_project: str | bool | None = True,
                 auto_version_bump: bool | None = None, abort_on_failure: bool = False,
                 add_run_number: bool = True, retry_on_failure: int | None = None,
                 docker: str | None = None, docker_args: str | None = None,
                 docker_bash_setup_script: str | None = None, packages: object = None,
                 repo: str | None = None, repo_branch: str | None = None,
                 repo_commit: str | None = None, always_create_from_code: bool = True,
                 artifact_serialization_function: Callable[..., Any] | None = None,
                 artifact_deserialization_function: Callable[..., Any] | None = None,
                 output_uri: str | bool | None = None, skip_global_imports: bool = False,
                 working_dir: str | None = None, enable_local_imports: bool = True) -> None:
        given = {
            "abort_on_failure": (abort_on_failure, False), "docker": (docker, None),
            "docker_args": (docker_args, None), "docker_bash_setup_script": (docker_bash_setup_script, None),
            "repo": (repo, None), "repo_branch": (repo_branch, None), "repo_commit": (repo_commit, None),
            "artifact_serialization_function": (artifact_serialization_function, None),
            "artifact_deserialization_function": (artifact_deserialization_function, None),
            "working_dir": (working_dir, None), "add_pipeline_tags": (add_pipeline_tags, False),
            "pool_frequency": (pool_frequency, 0.2), "target_project": (target_project, True),
            "auto_version_bump": (bool(auto_version_bump), False),
            "always_create_from_code": (always_create_from_code, True), "output_uri": (output_uri, None),
            "packages": (packages, None),
        }
        options.refuse("PipelineController", given)
        if not name or not str(name).strip():
            raise ValueError("PipelineController needs a non-empty name")
        self._default_retries = options.retries_from("PipelineController", retry_on_failure)
        options.warn_ignored("PipelineController", given)
        self._name, self._project, self._version = str(name), str(project or ""), str(version or "")
        self._default_queue = "default"
        self._params: dict[str, spec.ParamSpec] = {}
        self._steps: list[spec.Step] = []
        self._run_id: str | None = None
        self._view: api.RunView | None = None
        self._local: LocalRun | None = None

    # -- building -----------------------------------------------------------------------------

    def add_parameter(self, name: str, default: object = None, description: str | None = None,
                      param_type: type | str | None = None) -> None:
        """Declares `${pipeline.<name>}`; values travel as strings (`str(default)`)."""
        self._params[names.check_param_name(name)] = spec.param_spec(default, description, param_type)

    def set_default_execution_queue(self, default_execution_queue: str | None) -> None:
        """The queue of every step that does not name its own `execution_queue`; None goes back
        to drover's default queue, `default`."""
        if default_execution_queue is None:
            self._default_queue = "default"
            return
        names.check_queue_name(default_execution_queue)
        self._default_queue = default_execution_queue

    def add_step(
        self, name: str, base_task_id: str | None = None, parents: Iterable[str] | None = None,
        parameter_override: Mapping[str, Any] | None = None,
        configuration_overrides: Mapping[str, Any] | None = None,
        task_overrides: Mapping[str, Any] | None = None, execution_queue: str | None = None,
        monitor_metrics: object = None, monitor_artifacts: object = None, monitor_models: object = None,
        time_limit: float | None = None, base_task_project: str | None = None,
        base_task_name: str | None = None, clone_base_task: bool = True, continue_on_fail: bool = False,
        pre_execute_callback: Callable[..., Any] | None = None,
        post_execute_callback: Callable[..., Any] | None = None, cache_executed_step: bool = False,
        base_task_factory: Callable[..., Any] | None = None, retry_on_failure: int | None = None,
        status_change_callback: Callable[..., Any] | None = None, recursively_parse_parameters: bool = False,
        output_uri: str | bool | None = None, continue_behaviour: Mapping[str, bool] | None = None,
        stage: str | None = None,
    ) -> bool:
        """Adds a step that runs a task registered with the controller (a script that called
        `Task.init`; see `drover tasks`), found by `base_task_id` or by `base_task_project` and
        `base_task_name` (the newest such task) when this is called. The step runs the task's
        script on an agent, in an environment with the task's requirements, as `python
        script.py`; the task's registered parameters, with `parameter_override`
        (`{"General/test_size": 0.25}`) over them, reach the script through `task.connect`, cast
        to the connected value's type. Overrides may hold
        `${step.id}`, `${step.artifacts.NAME.url}`, `${step.OUTPUT}` and `${pipeline.NAME}`;
        a referenced step becomes a parent. What the script uploads with `upload_artifact` are
        the step's artifacts."""
        where = f"add_step({name!r})"
        given = {
            "configuration_overrides": (configuration_overrides, None), "task_overrides": (task_overrides, None),
            "base_task_factory": (base_task_factory, None),
            "monitor_metrics": (monitor_metrics, None), "monitor_artifacts": (monitor_artifacts, None),
            "monitor_models": (monitor_models, None), "output_uri": (output_uri, None), "stage": (stage, None),
            "recursively_parse_parameters": (recursively_parse_parameters, False),
            "clone_base_task": (clone_base_task, True),
        }
        options.refuse(where, given)
        names.check_step_name(name)
        if any(s.name == name for s in self._steps):
            raise ValueError(f"step {name!r} is added twice; step names must be unique")
        if execution_queue is not None:
            names.check_queue_name(execution_queue)
        explicit = self._check_parents(name, parents)
        task = registry.resolve(where, base_task_id, base_task_project, base_task_name)
        # As in ClearML, the step starts from the parameters registered with the task.
        overrides = {str(k): str(v) for k, v in (task.get("parameters") or {}).items()}
        referenced: list[str] = []
        overrides.update({str(k): self._parameter_refs(name, registry.override_text(v), referenced)
                          for k, v in (parameter_override or {}).items()})
        explicit += [p for p in referenced if p not in explicit]
        kwargs = registry.step_kwargs(task, overrides)
        spec.check_references(name, kwargs, {s.name: s.returns for s in self._steps})
        step = spec.Step(
            name=name, function=registry.run_task_script, source=registry.SCRIPT_RUNNER,
            entry=registry.ENTRY, kwargs=spec.encode_kwargs(name, kwargs), values=kwargs, returns=[],
            requirements=list(task.get("requirements") or []), queue=execution_queue, parents=explicit,
            cache=bool(cache_executed_step),
            continue_on_fail=options.continue_on_fail_from(name, continue_on_fail, continue_behaviour),
            retries=options.retries_from(f"step {name!r}", retry_on_failure, self._default_retries),
            timeout=spec.timeout_text(name, time_limit),
            callbacks=node.check(where, {"pre_execute_callback": pre_execute_callback,
                                         "post_execute_callback": post_execute_callback,
                                         "status_change_callback": status_change_callback}),
            base_task_id=str(task["id"]),
        )
        step.parameters = dict(overrides)
        options.warn_ignored(where, given)
        self._steps.append(step)
        return True

    def add_function_step(
        self, name: str, function: Callable[..., Any], function_kwargs: Mapping[str, Any] | None = None,
        function_return: str | Iterable[str] | None = None, project_name: str | None = None,
        task_name: str | None = None, task_type: str | None = None,
        auto_connect_frameworks: object = None, auto_connect_arg_parser: object = None,
        packages: str | os.PathLike[str] | Iterable[str] | None = None, repo: str | None = None,
        repo_branch: str | None = None, repo_commit: str | None = None,
        helper_functions: Iterable[Callable[..., Any]] | None = None, docker: str | None = None,
        docker_args: str | None = None, docker_bash_setup_script: str | None = None,
        parents: str | Iterable[str] | None = None, execution_queue: str | None = None,
        monitor_metrics: object = None, monitor_artifacts: object = None, monitor_models: object = None,
        time_limit: float | None = None, continue_on_fail: bool = False,
        pre_execute_callback: Callable[..., Any] | None = None,
        post_execute_callback: Callable[..., Any] | None = None, cache_executed_step: bool = False,
        retry_on_failure: int | None = None, status_change_callback: Callable[..., Any] | None = None,
        tags: object = None, output_uri: str | bool | None = None, draft: bool = False,
        working_dir: str | None = None, continue_behaviour: Mapping[str, bool] | None = None,
        stage: str | None = None, priority: int | None = None, prewarm: bool = True,
    ) -> bool:
        """Adds a step that calls `function(**function_kwargs)` on an agent.

        A kwarg that is exactly `'${step.output}'` receives that output's value, other
        `${step.output}` text becomes the output file's local path, and `${pipeline.param}` is
        substituted; referencing a step makes it a parent. Each name in `function_return` stores
        one return value (several names unpack a tuple).

        Requirements are the function's (and helpers') third-party imports, pinned to the
        versions installed here, or `packages=`. A step that consumes another step's output also
        gets that step's requirements, because loading the value needs the producer's libraries
        (a step receiving a pandas DataFrame needs pandas even if it never imports it).

        `priority` (drover's own, 0 to 9, default 0): among steps waiting on a queue, higher
        priorities are taken first. `prewarm=False` (drover's own): the step always starts in a
        new interpreter, never forked from the agent's warm parent of its environment.
        """
        where = f"add_function_step({name!r})"
        given = {
            "repo": (repo, None), "repo_branch": (repo_branch, None), "repo_commit": (repo_commit, None),
            "docker": (docker, None), "docker_args": (docker_args, None),
            "docker_bash_setup_script": (docker_bash_setup_script, None), "draft": (draft, False),
            "working_dir": (working_dir, None), "project_name": (project_name, None),
            "task_name": (task_name, None), "task_type": (task_type, None),
            "auto_connect_frameworks": (auto_connect_frameworks, None),
            "auto_connect_arg_parser": (auto_connect_arg_parser, None),
            "monitor_metrics": (monitor_metrics, None), "monitor_artifacts": (monitor_artifacts, None),
            "monitor_models": (monitor_models, None), "tags": (tags, None),
            "output_uri": (output_uri, None), "stage": (stage, None),
        }
        options.refuse(where, given)
        names.check_step_name(name)
        if any(s.name == name for s in self._steps):
            raise ValueError(f"step {name!r} is added twice; step names must be unique")
        returns = spec.check_returns(name, function_return)
        referenced: list[str] = []
        kwargs = {k: self._parameter_refs(name, v, referenced) if isinstance(v, str) else v
                  for k, v in (function_kwargs or {}).items()}
        if execution_queue is not None:
            names.check_queue_name(execution_queue)
        explicit = self._check_parents(name, parents)
        explicit += [p for p in referenced if p not in explicit]
        # A decorated function travels as its decorators and its own source, `@` lines included.
        inner, decorators = spec.undecorated(function)
        shipped = [*decorators, *(helper_functions or [])]
        source = spec.function_source(inner, helper_functions, name)
        if decorators:  # defined before the `@` lines that use them
            source = spec.function_source(decorators[0], decorators[1:], name) + "\n\n" + source
        spec.check_signature(name, function, kwargs)
        spec.check_references(name, kwargs, {s.name: s.returns for s in self._steps})
        spec.warn_if_not_self_contained(inner, shipped, name)
        step = spec.Step(
            name=name, function=function, source=source, entry=inner.__name__,
            kwargs=spec.encode_kwargs(name, kwargs), values=kwargs, returns=returns,
            requirements=[], queue=execution_queue, parents=explicit,
            cache=bool(cache_executed_step),
            continue_on_fail=options.continue_on_fail_from(name, continue_on_fail, continue_behaviour),
            retries=options.retries_from(f"step {name!r}", retry_on_failure, self._default_retries),
            timeout=spec.timeout_text(name, time_limit),
            priority=spec.check_priority(name, priority),
            callbacks=node.check(where, {"pre_execute_callback": pre_execute_callback,
                                         "post_execute_callback": post_execute_callback,
                                         "status_change_callback": status_change_callback}),
            prewarm=bool(prewarm),
        )
        step.requirements = self._requirements(step, packages)
        options.warn_ignored(where, given)
        self._steps.append(step)
        return True

    def _parameter_refs(self, step: str, text: str, referenced: list[str]) -> str:
        """`text` with each `${STEP.parameters.SECTION/NAME}` replaced by that parameter of an
        earlier step, as the pipeline gives it: a task step's registered parameters with its
        overrides, a function step's keyword arguments as `kwargs/NAME`. A value that is itself
        a reference stays one (the controller fills it in). Each step named is added to
        `referenced`: it becomes a parent, as with every other reference."""
        def value(match: re.Match[str]) -> str:
            other, parameter = match.group(1), match.group(2)
            found = self._step(other)
            if found is None:
                raise ValueError(f"step {step!r} references {match.group(0)}, but there is no step {other!r} "
                                 "(add it first)")
            if parameter not in found.parameters:
                raise ValueError(f"step {step!r} references {match.group(0)}, but step {other!r} has no "
                                 f"parameter {parameter!r} (it has {sorted(found.parameters)})")
            if other not in referenced:
                referenced.append(other)
            return found.parameters[parameter]

        return _PARAMETER_REF.sub(value, text)

    def _step(self, name: str) -> spec.Step | None:
        return next((s for s in self._steps if s.name == name), None)

    def _check_parents(self, step: str, parents: str | Iterable[str] | None) -> list[str]:
        parents = [parents] if isinstance(parents, str) else list(parents or [])
        for p in parents:
            if p == step:
                raise ValueError(f"step {step!r} cannot be its own parent")
            if self._step(p) is None:
                raise ValueError(f"step {step!r} names parent {p!r}, which is not a step (add it first)")
        return parents

    def _requirements(self, step: spec.Step,
                      packages: str | os.PathLike[str] | Iterable[str] | None) -> list[str]:
        own = (requirements.from_argument(packages, step.name) if packages is not None
               else requirements.detect(step.source, step.name))
        producers = (self._step(p) for p in step.referenced_steps())
        inherited = [r for producer in producers if producer is not None for r in producer.requirements]
        return requirements.merge(own, inherited, step.name)

    # -- the spec and the messages ------------------------------------------------------------

    def _spec(self) -> dict[str, Any]:
        """The PipelineSpec dict, after the checks that need the whole pipeline."""
        return self._checked()[0]

    def _checked(self) -> tuple[dict[str, Any], validate.Checked]:
        """The PipelineSpec dict and its DAG, checked as the controller will check it."""
        spec.check_complete(self._name, self._params, self._steps)
        pipeline = spec.pipeline_spec(self._name, self._project, self._version,
                                      self._default_queue, self._params, self._steps)
        return pipeline, validate.validate(pipeline, self._launch_params())

    def _launch_params(self) -> dict[str, str]:
        """Parameter values given at launch (`DROVER_PARAM_<NAME>` variables), by name."""
        return settings.param_overrides(self._params)

    def _submit_message(self, run_id: str | None = None, with_driver: bool = False) -> dict[str, Any]:
        """The Submit envelope `start()` publishes, as a dict (nothing is sent); parameters set
        by `DROVER_PARAM_<NAME>` variables are its overrides, as `drover run --param` sends.
        `with_driver` adds the driver that runs the steps' callbacks on an agent."""
        pipeline = self._spec()
        if with_driver:
            from .callbacks import driver_step

            pipeline["step"].append(driver_step(self._steps, pipeline["pipeline"], list(self._params)))
            validate.validate(pipeline, self._launch_params())
        return messages.submit(run_id or names.new_run_id(), pipeline, self._launch_params())

    # -- running ------------------------------------------------------------------------------

    def start(self, queue: str = "services",
              step_task_created_callback: Callable[..., Any] | None = None,
              step_task_completed_callback: Callable[..., Any] | None = None,
              wait: bool = True) -> bool:
        """Submits the pipeline to the controller through the `services` queue; returns True.

        With `wait=True` (the default, as in ClearML) it then follows the run to its end (see
        `wait`); `wait=False` returns once the run is submitted. Unlike ClearML, which ends the
        local process once the pipeline is enqueued, the script goes on after `start()`.

        When steps have callbacks, the run also gets a driver step (named `driver`, on the
        reserved `drivers` queue) that runs them on an agent from their source, as the pipeline
        process does in ClearML (see `drover.callbacks`): each callback must be a module-level
        `def` that imports what it uses inside its body.
        """
        options.refuse("start", {
            "step_task_created_callback": (step_task_created_callback, None),
            "step_task_completed_callback": (step_task_completed_callback, None),
        })
        if queue != settings.SERVICES_QUEUE:
            raise NotImplementedError(
                f"start(queue={queue!r}): the drover controller takes pipelines from 'services' only; "
                "leave queue at its default and choose the steps' queues with execution_queue"
            )
        if self._run_id is not None:
            raise RuntimeError(f"pipeline {self._name!r} was already started as run {self._run_id}")
        self._submit(with_driver=any(s.callbacks for s in self._steps))
        if wait:
            self.wait()
        return True

    def _submit(self, with_driver: bool = False) -> str:
        """Publishes the run; its id. `with_driver`: the steps' callbacks run in a driver on an
        agent, submitted with the steps (see `drover.callbacks`)."""
        from .submit import publish

        message = self._submit_message(with_driver=with_driver)
        publish(message)
        self._run_id = message["body"]["run_id"]
        url = api.run_page(settings.controller_url(), self._run_id)
        print(f"drover: pipeline '{self._name}' submitted as run {self._run_id}: {url}", flush=True)
        return str(self._run_id)

    def start_locally(self, run_pipeline_steps_locally: bool = False) -> None:
        """Runs the pipeline from this process.

        With `run_pipeline_steps_locally=True` every step runs here, parents first: values pass
        between steps through pickle files as they would between agents; with a reachable
        controller the run is recorded there (see `drover.record`). As on the controller, a
        raising step (its traceback is printed) skips the steps that depend on it while
        independent ones still run, and the run fails unless
        the step has continue_on_fail. As in ClearML, a failed run does not raise or end the
        process with an error: it prints that the pipeline failed, and `is_successful()` is
        False (end the script with `sys.exit(0 if pipe.is_successful() else 1)` to fail it).
        With False the pipeline is submitted, its steps run on agents, and this process follows
        the run to its end running the steps' callbacks (see `drover.drive`).
        Step callbacks (`pre_execute_callback`, `post_execute_callback`,
        `status_change_callback`) run in this process either way.
        """
        if not run_pipeline_steps_locally:
            self._drive()
            return
        params = {k: p["default"] for k, p in self._params.items() if p["default"] is not None}
        params.update(self._launch_params())
        spec, checked = self._checked()  # the same checks as a submission
        from . import record

        run_id = names.new_run_id()
        recorder = record.Recorder.connect(run_id, f"pipeline {self._name!r}")
        for step in spec["step"]:  # this process asks the callbacks itself before it starts a step
            step.pop("await_callback", None)
        if recorder is not None and not recorder.submit(spec, self._launch_params()):
            recorder = None
        if recorder is not None:
            self._run_id = run_id
            print(f"drover: running pipeline '{self._name}' locally (recorded as run {run_id}: {recorder.url})",
                  flush=True)
        self._local = LocalRun(self._steps, checked, params, report=lambda line: print(line, flush=True),
                               recorder=recorder, pipeline=self, run_id=run_id)
        try:
            ok = self._local.run()
        finally:
            if recorder is not None:
                recorder.close()
        print(f"drover: pipeline '{self._name}' {'succeeded' if ok else 'failed'} locally", flush=True)

    def _drive(self) -> None:
        """Submits the run and follows it from here, running the steps' callbacks (see
        `drover.drive`)."""
        from .drive import drive

        if self._run_id is not None:
            raise RuntimeError(f"pipeline {self._name!r} was already started as run {self._run_id}")
        run_id = self._submit()
        params = {k: p["default"] for k, p in self._params.items() if p["default"] is not None}
        params.update(self._launch_params())
        self._view = drive(self, run_id, self._steps, params, lambda line: print(line, flush=True))
        print(f"drover: run {run_id} {self._view['status']}", flush=True)
        if self._view["status"] != "succeeded":
            print(f"drover: {api.failure_message(self._view)}", flush=True)

    def wait(self, timeout: float | None = None) -> bool:
        """Follows the run until it ends, printing each step's status changes (and, when it did
        not succeed, which steps failed and why); `timeout` is in minutes, as in ClearML.
        Returns True once the run has ended (whatever its status: see `is_successful`), False
        when `timeout` passed first."""
        if self._local is not None:
            return True
        if self._run_id is None:
            raise RuntimeError("wait(): the pipeline was not started; call start() first")
        seconds = None if timeout is None else float(timeout) * 60.0
        try:
            self._view = api.wait_for_run(settings.controller_url(), self._run_id, timeout=seconds,
                                          report=lambda line: print(line, flush=True),
                                          ns=settings.namespace())
        except TimeoutError:
            print(f"drover: run {self._run_id} still running after {timeout} minute(s)", flush=True)
            return False
        print(f"drover: run {self._run_id} {self._view['status']}", flush=True)
        if self._view["status"] != "succeeded":
            print(f"drover: {api.failure_message(self._view)}", flush=True)
        return True

    def is_successful(self, fail_on_step_fail: bool = True, fail_condition: str = "all") -> bool:
        """Whether the run (local or submitted) ended successfully; False while it runs.

        As in ClearML: `fail_condition` "all" counts a failed or an aborted run as unsuccessful,
        "failed" only a failed one, "aborted" only an aborted one; with `fail_on_step_fail` every
        step must also have ended that way (so a failed step with continue_on_fail, or a skipped
        step, makes it False), without it only the run's status counts.
        """
        if fail_condition not in _SUCCESS:
            raise ValueError(
                f"is_successful(fail_condition={fail_condition!r}): use 'all', 'failed' or 'aborted'"
            )
        ok = _SUCCESS[fail_condition]
        if self._local is not None:
            if self._local.ok is None:
                return False
            run_status = "succeeded" if self._local.ok else "failed"
            step_statuses = list(self._local.status.values())
        else:
            view = self._current_view()
            if view is None or view.get("status") not in api.TERMINAL_RUN_STATUSES:
                return False
            run_status = view["status"]
            step_statuses = [s["status"] for s in view.get("steps", [])]
        if _OUTCOME.get(run_status) not in ok:
            return False
        return not fail_on_step_fail or all(_OUTCOME.get(s) in ok for s in step_statuses)

    def _current_view(self) -> api.RunView | None:
        """The run as the controller last reported it, asked again unless it had ended."""
        if self._run_id is None:
            return None
        if self._view is None or self._view.get("status") not in api.TERMINAL_RUN_STATUSES:
            try:
                self._view = api.get_run(settings.controller_url(), self._run_id)
            except api.RunNotFound:
                return None
        return self._view

    def stop(self, timeout: float | None = None, mark_failed: bool = False,
             mark_aborted: bool = False) -> None:
        """Aborts the submitted run unless it has ended (running steps are cancelled); with
        `timeout` (minutes, as in ClearML), waits up to that long for it to end. The run ends
        `aborted`, so `mark_aborted` changes nothing and `mark_failed` is refused."""
        if mark_failed:
            raise NotImplementedError(
                "stop(mark_failed=True): an aborted drover run ends 'aborted'; call stop() or "
                "stop(mark_aborted=True)"
            )
        if self._run_id is None:
            return
        if self._view is not None and self._view.get("status") in api.TERMINAL_RUN_STATUSES:
            return
        from .submit import publish

        publish(messages.abort(self._run_id, f"stopped from the Python SDK by {messages.submitted_by()}"))
        if timeout:
            try:
                self._view = api.wait_for_run(settings.controller_url(), self._run_id,
                                              timeout=float(timeout) * 60.0, report=lambda line: None)
            except TimeoutError:
                pass

    # -- inspection ---------------------------------------------------------------------------

    @property
    def id(self) -> str | None:
        """The run id once started (None before)."""
        return self._run_id

    def get_parameters(self) -> dict[str, str | None]:
        """Parameter name -> current value (a string, or None without a default): the
        default, or the value a `DROVER_PARAM_<NAME>` variable sets."""
        values: dict[str, str | None] = {k: p["default"] for k, p in self._params.items()}
        values.update(self._launch_params())
        return values

    def get_pipeline_dag(self) -> dict[str, dict[str, Any]]:
        """Step name -> its parents (explicit and from references), queue and return names."""
        return {
            s.name: {"parents": s.all_parents(), "queue": s.queue or self._default_queue,
                     "returns": list(s.returns)}
            for s in self._steps
        }
