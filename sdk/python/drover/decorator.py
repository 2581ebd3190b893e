"""PipelineDecorator: ClearML's decorator pipelines, run as dynamic drover runs.

`@PipelineDecorator.component(...)` makes a function a pipeline step; `@PipelineDecorator.pipeline(...)`
makes a function the pipeline's logic. Calling the pipeline function:

- by default submits a run whose only step is the driver; the driver, on an agent serving the
  `drivers` queue, runs this module's source and the pipeline function; each component call
  adds a step to the run. The call prints the run's URL and returns None (ClearML ends the
  calling process there; drover returns, so the script goes on);
- after `PipelineDecorator.run_locally()` runs the pipeline function here and each component
  step as a local subprocess (`drover.localagent`);
- after `PipelineDecorator.debug_pipeline()` runs everything as plain function calls here.

A component call returns at once with lazy values (`drover.lazy`); see `drover.dynamic` for
what a call sends. Keyword names and defaults follow ClearML 2.x; arguments drover cannot honour
raise NotImplementedError naming them.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import json
import os
import secrets
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from . import bundle, controllers, dynamic, names, node, options, record, requirements, watch
from .lazy import LazyValue

if TYPE_CHECKING:
    from .logger import Logger

# ClearML's component arguments drover does not honour, and what to do instead.
_UNSUPPORTED = {
    **options.UNSUPPORTED,
    "start_controller_locally": "the pipeline logic runs on the drivers queue; use "
                                "PipelineDecorator.run_locally() to run it here",
}


class _State:
    """Process-wide settings of the PipelineDecorator class."""

    mode: ClassVar[str] = "remote"  # "remote", "local" (run_locally) or "debug" (debug_pipeline)
    default_queue: ClassVar[str | None] = None
    components: ClassVar[dict[int, list[Component]]] = {}  # id(module globals) -> its components
    bundles: ClassVar[dict[int, tuple[int, str]]] = {}  # id(module globals) -> (components seen, bundle)
    pipelines: ClassVar[list[Pipeline]] = []
    pending: ClassVar[list[tuple[Pipeline, Any]]] = []  # multi-instance calls: (pipeline, thread or run id)
    step_session: ClassVar[dynamic.Session | None] = None
    lock: ClassVar[threading.Lock] = threading.Lock()


def use_session(session: dynamic.Session) -> None:
    """Makes `session` this process's: the driver's, for every thread of the pipeline function."""
    dynamic.current.set(session)
    with _State.lock:
        _State.step_session = session


def _step_session() -> dynamic.Session | None:
    """The process's session when the context names none: inside a component step (DROVER_CHANNEL
    set by its agent) the one for nested calls, in a driver the driver's."""
    from .channel import Client

    with _State.lock:
        if _State.step_session is None:
            client = Client.from_env()
            if client is None:
                return None
            _State.step_session = dynamic.Session(client, os.getcwd())
        return _State.step_session


class Component:
    """A function made a pipeline step; calling it inside a pipeline adds a step."""

    def __init__(self, function: Callable[..., Any], options: dict[str, Any],
                 origin: tuple[str, int] | None, shipped: bool = False) -> None:
        self.function = function
        self.options = options
        self.origin = origin
        self.shipped = shipped
        self.name: str = options["name"]
        self.return_values: list[str] = list(options["return_values"])
        self.globals: dict[str, Any] = getattr(function, "__globals__", {})
        self.__doc__ = function.__doc__
        self.__wrapped__ = function
        self._def_name: str | None = options.get("def_name")
        self.resolved: dict[str, Any] | None = None
        # pre_execute_callback, post_execute_callback, status_change_callback (see drover.watch)
        self.callbacks: dict[str, Callable[..., Any]] = dict(options.get("callbacks") or {})

    def __repr__(self) -> str:
        return f"<PipelineDecorator component {self.name}>"

    # -- the step ---------------------------------------------------------------------------

    def def_name(self) -> str:
        if self._def_name is None:
            assert self.origin is not None
            node = bundle.find_def(self.origin[0], self.origin[1], self.globals)
            self._def_name = node.name
        return self._def_name

    def source(self) -> str:
        """The step's source: its module's bundle of components."""
        if self.shipped:
            return bundle.full_source(str(self.globals["_drover_bundle"]))
        return bundle.full_source(_module_bundle(self.globals))

    def own_requirements(self) -> list[str]:
        if self.shipped:
            return list(self.options.get("requirements") or [])
        return _resolved_options(self)["requirements"]  # type: ignore[no-any-return]

    def requirements_for(self, kwargs: Mapping[str, Any], inherited: Iterable[list[str]]) -> list[str]:
        """Its own requirements, those of the steps it consumes and of the blobs' types."""
        extra = [r for reqs in inherited for r in reqs]
        if self.options.get("packages") is None:
            modules = {type(v).__module__.split(".")[0] for v in kwargs.values()
                       if LazyValue.reference_of(v) is None and not dynamic.is_literal(v)}
            modules -= {"builtins", "drover", "__main__", dynamic.__name__}
            if modules:
                text = "".join(f"import {m}\n" for m in sorted(modules) if m.isidentifier())
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    extra += requirements.detect(text, self.name)
        return requirements.merge(self.own_requirements(), extra, self.name)

    def step_spec(self, kwargs: Mapping[str, str], blobs: Mapping[str, Any], reqs: list[str],
                  default_queue: str | None) -> dict[str, Any]:
        function: dict[str, Any] = {
            "source": self.source(), "entry": bundle.entry_name(self.def_name()), "kwargs": dict(kwargs),
            "returns": list(self.return_values), "requirements": reqs,
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        }
        if blobs:
            function["blobs"] = dict(blobs)
        if self.options.get("prewarm") is False:
            function["prewarm"] = False
        return {
            "name": self.name, "command": None, "function": function, "outputs": {},
            "queue": self.options.get("execution_queue") or default_queue or _State.default_queue,
            "parents": list(self.options.get("parents") or []), "env": {}, "timeout": None,
            "retries": int(self.options.get("retries") or 0), "retry_backoff": None,
            "cache": bool(self.options.get("cache")),
            "continue_on_fail": bool(self.options.get("continue_on_fail")),
        }

    # -- calling ----------------------------------------------------------------------------

    def arguments(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name, as the step receives them."""
        try:
            bound = inspect.signature(self.function).bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"component {self.name}: {e}") from None
        out: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            kind = bound.signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                if value:
                    raise TypeError(f"component {self.name}: *{name} cannot be passed to a step; "
                                    "name the arguments")
            elif kind is inspect.Parameter.VAR_KEYWORD:
                out.update(value)
            else:
                out[name] = value
        return out

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        session = None if _State.mode == "debug" else dynamic.current.get()
        if session is None and _State.mode != "debug":
            session = _step_session()
        if session is None:
            return self.function(*args, **kwargs)
        return session.call(self, self.arguments(args, kwargs))


def _shipped(options_json: str) -> Callable[[Callable[..., Any]], Component]:
    """Registers a component inside a component step, with the options the driver resolved."""
    options = json.loads(options_json)

    def register(function: Callable[..., Any]) -> Component:
        return Component(function, options, None, shipped=True)

    return register


def _resolved_options(component: Component) -> dict[str, Any]:
    """The options a shipped copy of `component` needs: names, returns, queue, requirements
    (worked out once per component)."""
    if component.resolved is None:
        component.resolved = _resolve(component)
    return component.resolved


def _resolve(component: Component) -> dict[str, Any]:
    node = bundle.find_def(component.origin[0], component.origin[1], component.globals)  # type: ignore[index]
    piece = bundle.piece(component.origin[0], node, component.globals)  # type: ignore[index]
    helpers = "".join(bundle.function_text(h, component.name) for h in component.options["helper_functions"])
    packages = component.options.get("packages")
    reqs = (requirements.from_argument(packages, component.name) if packages is not None
            else requirements.detect(piece.text + helpers, component.name))
    keep = ("name", "return_values", "execution_queue", "parents", "retries", "cache", "continue_on_fail")
    cold = {"prewarm": False} if component.options.get("prewarm") is False else {}
    return {**{k: component.options.get(k) for k in keep}, "def_name": node.name, "requirements": reqs,
            "packages": packages, **cold}


def _module_bundle(module_globals: dict[str, Any]) -> str:
    """The bundle of every component of the module (rebuilt when the module gained components)."""
    key = id(module_globals)
    with _State.lock:
        components = list(_State.components.get(key, []))
        cached = _State.bundles.get(key)
    if cached is not None and cached[0] == len(components):
        return cached[1]
    pieces = []
    helpers: list[str] = []
    decorators: list[str] = []
    for c in components:
        assert c.origin is not None
        node = bundle.find_def(c.origin[0], c.origin[1], c.globals)
        piece = bundle.piece(c.origin[0], node, c.globals)
        pieces.append((piece, _resolved_options(c)))
        helpers += [bundle.function_text(h, c.name) for h in c.options["helper_functions"]]
        for name in piece.decorator_names:
            text = bundle.module_function_text(name, c.origin[0], c.globals)
            if text is not None and inspect.isfunction(c.globals.get(name)):
                decorators.append(text)
    text = bundle.build(pieces, helpers, decorators)
    with _State.lock:
        _State.bundles[key] = (len(components), text)
    return text


class Pipeline:
    """A function made a pipeline's logic: calling it runs the pipeline (see the module doc)."""

    def __init__(self, function: Callable[..., Any], name: str, project: str, version: str | None,
                 return_value: str | None, default_queue: str | None,
                 multi_instance_support: bool | str, args_map: Mapping[str, Any] | None) -> None:
        self.function = function
        self.name, self.project, self.version = name, project, version
        self.return_value = return_value
        self.default_queue = default_queue
        self.multi_instance_support = multi_instance_support
        self.args_map = args_map
        self.calls = 0
        self.run_ids: list[str] = []
        self.__doc__ = function.__doc__
        self.__wrapped__ = function

    def __repr__(self) -> str:
        return f"<PipelineDecorator pipeline {self.name}>"

    def parameters(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        try:
            bound = inspect.signature(self.function).bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"pipeline {self.name!r}: {e}") from None
        bound.apply_defaults()
        for name, p in bound.signature.parameters.items():
            if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                raise TypeError(f"pipeline {self.name!r}: *{name}/**{name} cannot be pipeline parameters; "
                                "name each argument")
        return dict(bound.arguments)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        params = self.parameters(args, kwargs)
        if self.calls and not self.multi_instance_support:
            raise RuntimeError(
                f"pipeline {self.name!r} was already called in this process; give "
                "@PipelineDecorator.pipeline(multi_instance_support=True) to run it more than once"
            )
        self.calls += 1
        mode = _State.mode
        if mode == "remote":
            run_id = self.submit(params)
            if self.multi_instance_support:
                _State.pending.append((self, run_id))
            return None
        if self.multi_instance_support == "parallel":
            holder: dict[str, Any] = {}
            context = contextvars.copy_context()

            def target() -> None:
                try:
                    holder["value"] = context.run(self.run_here, mode, params)
                except BaseException as e:
                    holder["error"] = e

            thread = threading.Thread(target=target, name=f"pipeline-{self.name}", daemon=True)
            thread.start()
            _State.pending.append((self, (thread, holder)))
            return None
        return self.run_here(mode, params)

    def run_here(self, mode: str, params: Mapping[str, Any]) -> Any:
        """Runs the pipeline function in this process: plainly, or with local component steps."""
        if mode == "debug":
            token = dynamic.current.set(None)
            try:
                return self.function(**params)
            finally:
                dynamic.current.reset(token)
        from .localagent import LocalAgent

        run_id = names.new_run_id()
        recorder = self.recorder(run_id, params)
        terminal = sys.stdout

        def report(line: str) -> None:  # step output: this terminal, not the driver's console
            terminal.write(line + "\n")
            terminal.flush()

        where = f"recorded as run {run_id}: {recorder.url}" if recorder else f"run {run_id}"
        print(f"drover: running pipeline '{self.name}' locally ({where})", flush=True)
        texts = {k: dynamic.canonical_json(v) if dynamic.is_literal(v) else repr(v) for k, v in params.items()}
        watched = watch.for_pipeline(run_id, self.name, self.project, self.version, texts)
        agent = LocalAgent(run_id, report=report, recorder=recorder, watch=watched,
                           env={"PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED") or str(_hash_seed())})
        from .channel import Client

        session = dynamic.Session(Client(agent.path), os.path.join(agent.dir, "driver"),
                                  default_queue=self.default_queue)
        session.watch = watched
        token = dynamic.current.set(session)
        with _State.lock:
            # Threads the pipeline function starts see no context variable: they use this one.
            outer, _State.step_session = _State.step_session, _State.step_session or session
        attempt = record.RecordedAttempt(recorder, "driver", recorder.start("driver")) if recorder else None
        try:
            with attempt or contextlib.nullcontext():
                try:
                    result = self.function(**params)
                    failed = session.wait_all()
                except BaseException as e:
                    if attempt is not None:
                        attempt.write_log(traceback.format_exc())
                        outcome = "aborted" if attempt.stopped else "failed"
                        attempt.finish(outcome, 1, attempt.stopped or f"{type(e).__name__}: {e}")
                    raise
                if attempt is not None:
                    attempt.finish("succeeded", 0, None, self._driver_outputs(result, agent))
        finally:
            dynamic.current.reset(token)
            with _State.lock:
                _State.step_session = outer
            for thread in agent.threads:
                thread.join()
            session.client.close()
            agent.close()
            if recorder is not None:
                recorder.close()
        hard = [(s, st) for s, st in failed if not agent.steps[s].spec.get("continue_on_fail")]
        if hard:
            raise RuntimeError(f"pipeline {self.name!r} failed: "
                               + ", ".join(f"step {s} {status}" for s, status in hard))
        print(f"drover: pipeline '{self.name}' succeeded locally", flush=True)
        return result

    def recorder(self, run_id: str, params: Mapping[str, Any]) -> record.Recorder | None:
        """A recorder of this local run when a controller is reachable and the run can be
        described to it (its module's source, JSON arguments); else None, with a warning."""
        recorder = record.Recorder.connect(run_id, f"pipeline {self.name!r}")
        if recorder is None:
            return None
        try:
            spec = self.spec(params)
        except ValueError as e:
            warnings.warn(f"pipeline {self.name!r} runs here without being recorded: {e}", stacklevel=3)
            return None
        return recorder if recorder.submit(spec) else None

    def _driver_outputs(self, result: Any, agent: Any) -> dict[str, Any]:
        """The driver's output named `return_value` (the function's result, pickled), stored."""
        if self.return_value is None or agent.recorder is None:
            return {}
        path = os.path.join(agent.dir, "driver", "_outputs", f"{self.return_value}.pkl")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(dynamic.pickled(result))
        return {self.return_value: agent.recorder.put_blob(path)}

    # -- submitting -------------------------------------------------------------------------

    def spec(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The submitted PipelineSpec: the parameters and the driver step."""
        from .driver import ENTRY, bootstrap_source

        filename = inspect.getsourcefile(self.function) or ""
        try:
            with open(filename, encoding="utf-8") as f:
                module_source = f.read()
        except OSError as e:
            raise ValueError(f"pipeline {self.name!r}: cannot read its module's source {filename!r}: {e}; "
                             "a decorator pipeline must be defined in a file") from e
        parameters = {}
        for name, value in params.items():
            names.check_param_name(name)
            if not dynamic.is_literal(value):
                raise ValueError(
                    f"pipeline {self.name!r}: argument {name}={value!r} cannot be a run parameter: "
                    "pipeline arguments travel as JSON (str, int, float, bool, None, lists, dicts); "
                    "build other values inside the pipeline function"
                )
            parameters[name] = {"default": dynamic.canonical_json(value), "description": None,
                                "type": type(value).__name__}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reqs = requirements.detect(module_source, "driver")
        driver: dict[str, Any] = {
            "name": "driver", "command": None,
            "function": {
                "source": bootstrap_source(module_source, os.path.basename(filename), self.function.__name__),
                "entry": ENTRY,
                "kwargs": {name: json.dumps(f"${{pipeline.{name}}}") for name in sorted(params)},
                "returns": [self.return_value] if self.return_value else [],
                "requirements": reqs,
                "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            },
            "outputs": {}, "queue": None, "parents": [], "env": {"PYTHONHASHSEED": str(_hash_seed())},
            "timeout": None, "retries": 0, "retry_backoff": None, "cache": False, "continue_on_fail": False,
            "driver": True,
        }
        return {
            "pipeline": {"name": self.name, "project": self.project or "", "version": self.version or "",
                         "default_queue": self.default_queue or _State.default_queue or "default",
                         "description": None},
            "parameters": parameters,
            "step": [driver],
        }

    def submit(self, params: Mapping[str, Any]) -> str:
        from . import api, messages, settings, validate
        from .submit import publish

        spec = self.spec(params)
        validate.validate(spec)
        run_id = names.new_run_id()
        publish(messages.submit(run_id, spec))
        self.run_ids.append(run_id)
        url = api.run_page(settings.controller_url(), run_id)
        print(f"drover: pipeline '{self.name}' submitted as run {run_id}: {url}", flush=True)
        return run_id


def _hash_seed() -> int:
    """A PYTHONHASHSEED for one run: its driver and steps hash strings the same way."""
    return secrets.randbelow(2**32 - 1) + 1


def _check_step_queue(where: str, queue: str) -> None:
    names.check_queue_name(queue)
    from .validate import RESERVED_QUEUES

    if queue in RESERVED_QUEUES:
        raise ValueError(f"{where}={queue!r} is reserved for drover itself (submissions and pipeline "
                         "drivers); give component steps another queue, such as 'default'")


def _def_name(origin: tuple[str, int], function: Callable[..., Any]) -> str:
    """The name the component is defined under (not that of a wrapper another decorator made)."""
    try:
        return bundle.find_def(origin[0], origin[1], getattr(function, "__globals__", {})).name
    except (ValueError, SyntaxError):
        return str(getattr(function, "__name__", "component"))


def _frame_origin() -> tuple[str, int]:
    frame = sys._getframe(2)
    return frame.f_code.co_filename, frame.f_lineno


class PipelineDecorator:
    """ClearML's decorator pipelines: `@PipelineDecorator.component` and `@PipelineDecorator.pipeline`."""

    @classmethod
    def component(
        cls, _func: Callable[..., Any] | None = None, *, return_values: str | Iterable[str] = ("return_object",),
        name: str | None = None, cache: bool = False, packages: str | Iterable[str] | None = None,
        parents: Iterable[str] | None = None, execution_queue: str | None = None,
        continue_on_fail: bool = False, docker: str | None = None, docker_args: str | None = None,
        docker_bash_setup_script: str | None = None, task_type: object = None,
        auto_connect_frameworks: object = None, auto_connect_arg_parser: object = None,
        repo: str | None = None, repo_branch: str | None = None, repo_commit: str | None = None,
        helper_functions: Iterable[Callable[..., Any]] | None = None, monitor_metrics: object = None,
        monitor_artifacts: object = None, monitor_models: object = None,
        retry_on_failure: int | None = None, pre_execute_callback: Callable[..., Any] | None = None,
        post_execute_callback: Callable[..., Any] | None = None,
        status_change_callback: Callable[..., Any] | None = None, tags: object = None,
        output_uri: str | bool | None = None, draft: bool = False, working_dir: str | None = None,
        continue_behaviour: Mapping[str, bool] | None = None, stage: str | None = None,
        prewarm: bool = True,
    ) -> Any:
        """Makes a function a pipeline step (ClearML's `PipelineDecorator.component`).

        Each name in `return_values` is one output (several give several lazy values); `cache`
        reuses a step with the same code and inputs from any run; `packages` overrides the
        requirements detected from the function's imports; `helper_functions` ship with it;
        `execution_queue` is its queue (else the pipeline's default queue); `parents` names
        steps it must wait for. The step's source is this module's components, so a component
        may call components. `prewarm=False` (drover's own): its steps always start in a new
        interpreter, never forked from the agent's warm parent of their environment.
        """
        origin = _frame_origin()
        given = {
            "docker": (docker, None), "docker_args": (docker_args, None),
            "docker_bash_setup_script": (docker_bash_setup_script, None), "repo": (repo, None),
            "repo_branch": (repo_branch, None), "repo_commit": (repo_commit, None),
            "draft": (draft, False),
            "working_dir": (working_dir, None), "task_type": (task_type, None),
            "auto_connect_frameworks": (auto_connect_frameworks, None),
            "auto_connect_arg_parser": (auto_connect_arg_parser, None),
            "monitor_metrics": (monitor_metrics, None), "monitor_artifacts": (monitor_artifacts, None),
            "monitor_models": (monitor_models, None), "tags": (tags, None), "output_uri": (output_uri, None),
            "stage": (stage, None),
        }
        where = "PipelineDecorator.component"
        options.refuse(where, given)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*task_type.*")
            options.warn_ignored(where, given)
        returns = [return_values] if isinstance(return_values, str) else list(return_values or [])
        for r in returns:
            names.check_output_name(r)
        if execution_queue is not None:
            _check_step_queue(f"{where}: execution_queue", execution_queue)
        if packages is not None and not isinstance(packages, (str, list, tuple)):
            packages = list(packages)
        callbacks = node.check(where, {"pre_execute_callback": pre_execute_callback,
                                       "post_execute_callback": post_execute_callback,
                                       "status_change_callback": status_change_callback})

        def decorate(function: Callable[..., Any]) -> Component:
            if not callable(function):
                raise TypeError(f"{where}: {function!r} is not a function")
            step_name = name or _def_name(origin, function)
            names.check_step_name(step_name)
            opts = {
                "name": step_name, "return_values": returns, "cache": bool(cache), "packages": packages,
                "parents": list(parents or []), "execution_queue": execution_queue,
                "retries": options.retries_from(f"component {step_name!r}", retry_on_failure),
                "continue_on_fail": options.continue_on_fail_from(step_name, continue_on_fail,
                                                                  continue_behaviour),
                "helper_functions": list(helper_functions or []),
                "prewarm": bool(prewarm), "callbacks": callbacks,
            }
            component = Component(function, opts, origin)
            with _State.lock:
                _State.components.setdefault(id(component.globals), []).append(component)
            return component

        return decorate if _func is None else decorate(_func)

    @classmethod
    def pipeline(
        cls, _func: Callable[..., Any] | None = None, *, name: str, project: str, version: str | None = None,
        return_value: str | None = None, default_queue: str | None = None, pool_frequency: float = 0.2,
        add_pipeline_tags: bool = False, target_project: str | None = None, abort_on_failure: bool = False,
        pipeline_execution_queue: str | None = "services", multi_instance_support: bool | str = False,
        add_run_number: bool = True, args_map: Mapping[str, Iterable[str]] | None = None,
        start_controller_locally: bool = False, retry_on_failure: int | None = None,
        docker: str | None = None, docker_args: str | None = None,
        docker_bash_setup_script: str | None = None, packages: object = None, repo: str | None = None,
        repo_branch: str | None = None, repo_commit: str | None = None,
        artifact_serialization_function: Callable[..., Any] | None = None,
        artifact_deserialization_function: Callable[..., Any] | None = None,
        output_uri: str | bool | None = None, skip_global_imports: bool = False,
        working_dir: str | None = None, enable_local_imports: bool = True,
    ) -> Any:
        """Makes a function a pipeline's logic (ClearML's `PipelineDecorator.pipeline`).

        Its arguments are the run's parameters (JSON values). `pipeline_execution_queue`
        'services' runs the logic on drover's reserved `drivers` queue; `default_queue` is the
        queue of components that name none; `return_value` stores the function's result as the
        driver step's output of that name; `multi_instance_support` allows calling it more than
        once (`'parallel'`: each call runs in the background, collect the results with
        `wait_for_multi_pipelines()`).
        """
        where = "PipelineDecorator.pipeline"
        given = {
            "docker": (docker, None), "docker_args": (docker_args, None),
            "docker_bash_setup_script": (docker_bash_setup_script, None), "repo": (repo, None),
            "repo_branch": (repo_branch, None), "repo_commit": (repo_commit, None),
            "artifact_serialization_function": (artifact_serialization_function, None),
            "artifact_deserialization_function": (artifact_deserialization_function, None),
            "working_dir": (working_dir, None), "abort_on_failure": (abort_on_failure, False),
            "start_controller_locally": (start_controller_locally, False),
            "add_pipeline_tags": (add_pipeline_tags, False), "target_project": (target_project, None),
            "output_uri": (output_uri, None),
        }
        for arg, (value, default) in given.items():
            if value != default and arg in _UNSUPPORTED:
                raise NotImplementedError(f"{where}: {arg}= is not supported by drover: {_UNSUPPORTED[arg]}")
        if pipeline_execution_queue is None:
            raise NotImplementedError(
                f"{where}: pipeline_execution_queue=None (the pipeline logic in this process, its steps "
                "on agents) is not supported by drover: leave it 'services' to run the logic on an agent "
                "serving the drivers queue, or call PipelineDecorator.run_locally()"
            )
        if pipeline_execution_queue != "services":
            warnings.warn(f"{where}: pipeline_execution_queue={pipeline_execution_queue!r} has no effect: "
                          "drover runs every pipeline's logic on its reserved 'drivers' queue", stacklevel=2)
        if retry_on_failure:
            warnings.warn(f"{where}: retry_on_failure has no effect on the pipeline logic: a driver "
                          "whose agent is lost is restarted and replays its calls", stacklevel=2)
        if packages is not None:
            warnings.warn(f"{where}: packages= has no effect: the driver's requirements are "
                          "detected from the module's imports", stacklevel=2)
        options.warn_ignored(where, given)
        if not name or not str(name).strip():
            raise ValueError(f"{where} needs a non-empty name")
        if default_queue is not None:
            _check_step_queue(f"{where}: default_queue", default_queue)
        if return_value is not None:
            names.check_output_name(return_value)
        if multi_instance_support not in (True, False, "parallel"):
            raise ValueError(f"{where}: multi_instance_support must be True, False or 'parallel'")

        def decorate(function: Callable[..., Any]) -> Pipeline:
            pipeline = Pipeline(function, str(name), str(project or ""), version, return_value, default_queue,
                                multi_instance_support, args_map)
            _State.pipelines.append(pipeline)
            return pipeline

        return decorate if _func is None else decorate(_func)

    @classmethod
    def run_locally(cls) -> None:
        """Runs pipelines called after this here, each component step as a local subprocess."""
        _State.mode = "local"

    @classmethod
    def debug_pipeline(cls) -> None:
        """Runs pipelines called after this here, every component as a plain function call."""
        _State.mode = "debug"

    @classmethod
    def set_default_execution_queue(cls, default_execution_queue: str | None) -> None:
        """The queue of components that name none, when the pipeline names no default_queue."""
        if default_execution_queue is not None:
            _check_step_queue("set_default_execution_queue", default_execution_queue)
        _State.default_queue = default_execution_queue

    @classmethod
    def get_current_pipeline(cls) -> Any:
        """The running pipeline's context: `run_id`, `step` and `steps` (the steps added so
        far), or None outside a running pipeline. ClearML returns the controller object;
        drover has no such object in the driver."""
        session = dynamic.current.get()
        if session is None:
            return None
        info = session.client.info()
        return _CurrentPipeline(str(info.get("run_id")), str(info.get("step")), list(session.steps))

    @classmethod
    def upload_artifact(cls, name: str, artifact_object: Any, metadata: Mapping[str, Any] | None = None,
                        delete_after_upload: bool = False, auto_pickle: bool | None = None,
                        preview: Any = None, wait_on_upload: bool = False,
                        serialization_function: Callable[..., Any] | None = None,
                        sort_keys: bool = True) -> bool:
        """Stores an object (pickled) or a file (a path) in the run's blob store from a driver or
        a component, and prints where: `<controller>/api/v1/blobs/<sha256>`. drover keeps no
        artifact names yet (the Task API will); a component's return values are its named outputs.
        In debug_pipeline() or outside a pipeline nothing is stored."""
        if serialization_function is not None:
            raise NotImplementedError("upload_artifact: serialization_function= is not supported by drover: "
                                      "objects are pickled")
        names.check_output_name(name)
        session = None if _State.mode == "debug" else (dynamic.current.get() or _step_session())
        if session is None:
            print(f"drover: artifact {name!r} not stored: no running pipeline (debug mode or outside one)",
                  flush=True)
            return False
        path = os.fspath(artifact_object) if isinstance(artifact_object, (str, os.PathLike)) else None
        # ClearML's auto_pickle=None means pickling what is not a file; sort_keys only matters to
        # its JSON serialisation, which drover does not do.
        if path is None or not os.path.isfile(path) or auto_pickle is False:
            folder = os.path.join(session.workdir, "_artifacts")
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, f"{name}.pkl")
            with open(path, "wb") as f:
                f.write(dynamic.pickled(artifact_object))
        artifact = session.client.put(path)
        base = session.client.info().get("controller_url") or ""
        print(f"drover: artifact {name!r} stored: {base}/api/v1/blobs/{artifact['digest']}", flush=True)
        if delete_after_upload and path == os.fspath(artifact_object):
            os.unlink(path)
        return True

    @classmethod
    def get_logger(cls) -> Logger | _PrintLogger:
        """Inside a step, the step's `Logger` (its scalars are stored with the step). Elsewhere a
        minimal logger: `report_text` and `report_scalar` print to the console, other
        `report_*` calls warn and do nothing."""
        from .task import Task

        task = Task.current_task()
        return task.get_logger() if task is not None else _PrintLogger()

    @classmethod
    def wait_for_multi_pipelines(cls) -> list[Any]:
        """Waits for every pipeline started with multi_instance_support; their return values in
        call order. A submitted run's value is its driver's output named by the pipeline's
        `return_value` (None when it names none); a run that did not succeed raises."""
        pending, _State.pending = _State.pending, []
        results: list[Any] = []
        for pipeline, handle in pending:
            if isinstance(handle, str):
                from . import api, settings

                view = api.wait_for_run(settings.controller_url(), handle)
                if view.get("status") != "succeeded":
                    raise RuntimeError(f"pipeline {pipeline.name!r} run {handle} {view.get('status')}: "
                                       f"{api.failure_message(view)}")
                results.append(_run_result(handle, pipeline.return_value))
            else:
                thread, holder = handle
                thread.join()
                if "error" in holder:
                    raise holder["error"]
                results.append(holder.get("value"))
        return results


def _run_result(run_id: str, return_value: str | None) -> Any:
    """A submitted pipeline's return value: the driver's output `return_value`, or None."""
    if return_value is None:
        return None
    import pickle
    import urllib.request

    from . import settings

    url = f"{settings.controller_url()}/api/v1/runs/{run_id}/steps/driver/artifacts/{return_value}"
    request = urllib.request.Request(url, headers=settings.auth_headers(url))
    with controllers.urlopen(request, timeout=60) as response:
        return pickle.loads(response.read())


class _CurrentPipeline:
    def __init__(self, run_id: str, step: str, steps: list[str]) -> None:
        self.run_id, self.step, self.steps = run_id, step, steps

    def __repr__(self) -> str:
        return f"<pipeline run {self.run_id}, {len(self.steps)} steps>"


class _PrintLogger:
    """Prints what ClearML's Logger would record."""

    def report_text(self, msg: object, level: object = None, print_console: bool = True, **_: Any) -> None:
        print(msg, flush=True)

    def report_scalar(self, title: str, series: str, value: float, iteration: int = 0) -> None:
        print(f"scalar {title}/{series} @{iteration}: {value}", flush=True)

    def flush(self) -> None:
        sys.stdout.flush()

    def __getattr__(self, name: str) -> Callable[..., None]:
        if not name.startswith("report_"):
            raise AttributeError(name)

        def ignored(*args: Any, **kwargs: Any) -> None:
            warnings.warn(f"Logger.{name} has no effect: drover stores no plots or media yet", stacklevel=2)

        return ignored
