"""Running a whole pipeline in this process, without broker or controller, the way they would.

References are filled in as the controller fills them in (`drover.resolve`): parameters, and
the ids and artifact URLs of ended steps (an artifact URL is the controller's download address
when the run is recorded, else the `file://` URL of the local file; a missing artifact fails the
consuming step, naming it). Each step then runs through
`drover.runner`, the code the agent's harness runs, from its shipped source (not the live
function object): a step that is not self-contained fails here as it would on an agent. Values
cross steps through pickle files, as artifacts do. Which steps run follows the scheduler: a
step whose parent did not succeed is skipped, every other step runs, and the run fails when a
step without `continue_on_fail` failed.

With a `Recorder` (a reachable controller, see `drover.record`) the run is recorded there as it
runs: each step's attempts are taken, logged and ended at the controller, which decides retries
and may end a step as a cache hit (its outputs are then fetched instead of computed).
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import localtask, record, resolve, runner, stepartifacts
from .node import Node
from .spec import Step
from .validate import Checked


class LocalRun:
    """One in-process run: step statuses, the pickle file of every output, and the values."""

    def __init__(self, steps: Sequence[Step], checked: Checked, params: Mapping[str, str],
                 report: Callable[[str], None] = print, recorder: record.Recorder | None = None,
                 pipeline: Any = None, run_id: str = "") -> None:
        by_name = {s.name: s for s in steps}
        self.steps = [by_name[name] for name in checked.order]
        self.checked = checked
        self.params = dict(params)
        self.report = report
        self.status = {s.name: "pending" for s in self.steps}
        self.outputs: dict[str, str] = {}  # "STEP.OUTPUT" -> pickle path
        self.values: dict[str, dict[str, Any]] = {}  # step -> {output: value}, once the run ended
        self.ok: bool | None = None
        self.dir = ""
        self.recorder = recorder
        self.run_id = recorder.run_id if recorder is not None else run_id
        self.pipeline = pipeline  # what the steps' callbacks get as `pipeline`
        self.nodes = {s.name: Node(s.name, checked.parents[s.name], s.queue, {}, s.callbacks,
                                   base_task_id=s.base_task_id) for s in self.steps}

    def _filler(self, strict: bool) -> resolve.Filler:
        """Fills references as the controller does when it dispatches a step (`drover.resolve`)."""
        artifacts: dict[str, list[str]] = {}
        for key in self.outputs:
            step, name = key.split(".", 1)
            artifacts.setdefault(step, []).append(name)
        for name, status in self.status.items():
            if status in record.TERMINAL:
                artifacts.setdefault(name, [])

        def url(step: str, name: str) -> str:
            if self.recorder is not None:
                return stepartifacts.artifact_url(self.recorder.base, self.run_id, step, name)
            return pathlib.Path(self.outputs[f"{step}.{name}"]).resolve().as_uri()

        return resolve.filler(self.params, self.run_id, artifacts, url, strict)

    def _job(self, step: Step) -> runner.Job:
        """The job an agent would get for `step`; MissingArtifact when it names an artifact a
        step did not store."""
        inputs = {f"{s}.{o}": self.outputs[f"{s}.{o}"] for s, o in self.checked.inputs[step.name]}
        return {
            "source": step.source,
            "entry": step.entry,
            "kwargs": resolve.kwargs(step.kwargs, self._filler(strict=True)),
            "inputs": inputs,
            "returns": list(step.returns),
            "output_dir": os.path.join(self.dir, step.name, "_outputs"),
        }

    def _run_step(self, step: Step) -> bool:
        """Runs one step with its retries; returns whether it succeeded."""
        if step.timeout:
            warnings.warn(f"step {step.name!r}: time_limit is not enforced when running locally", stacklevel=2)
        try:
            job = self._job(step)
        except resolve.MissingArtifact as e:
            return self._cannot_run(step, str(e))
        node = self.nodes[step.name]
        node.parameters = resolve.parameters(step.base_task_id, step.kwargs, step.parameters,
                                             self._filler(strict=False))
        if not node.pre_execute(self.pipeline):
            why = "pre_execute_callback returned False"
            if self.recorder is not None:
                self.recorder.report(step.name, {"kind": "skipped", "reason": why})
            self._set(step.name, "skipped", why)
            return False
        # A callback may have changed the parameters: the step gets them as they are now.
        for key, value in node.parameters.items():
            if key.startswith("kwargs/") and key[len("kwargs/"):] in job["kwargs"]:
                job["kwargs"][key[len("kwargs/"):]] = json.dumps(value)
        node.job_started = time.time()
        try:
            return self._attempts(step, job)
        finally:
            node.job_ended = time.time()
            node.executed = f"{self.recorder.run_id}/{step.name}" if self.recorder else step.name
            node.post_execute(self.pipeline)

    def _cannot_run(self, step: Step, why: str) -> bool:
        """Fails a step whose job cannot be made, as the controller fails it at dispatch."""
        if self.recorder is not None:
            started = self.recorder.start(step.name)
            if started["status"] == "running":
                self.recorder.finish(step.name, int(started["attempt"]), "failed", None, why)
        self._set(step.name, "failed", why)
        return False

    def _attempts(self, step: Step, job: runner.Job) -> bool:
        if self.recorder is not None:
            return self._run_recorded(step, job, self.recorder)
        for attempt in range(1, step.retries + 2):
            self._set(step.name, "running")
            ok, outputs = self._execute(step, job, attempt)
            if ok:
                self.outputs.update({f"{step.name}.{name}": path for name, path in outputs.items()})
                self._set(step.name, "succeeded")
                return True
            if attempt <= step.retries:
                self.report(f"  {step.name}: retrying (attempt {attempt + 1} of {step.retries + 1})")
        self._set(step.name, "failed")
        return False

    def _run_recorded(self, step: Step, job: runner.Job, recorder: record.Recorder) -> bool:
        """Runs the attempts the controller queues for the step until it ends there."""
        while True:
            started = recorder.start(step.name)
            if started["status"] != "running":
                return self._adopt(step, started, job, recorder)
            self._set(step.name, "running")
            with record.RecordedAttempt(recorder, step.name, started) as attempt:
                ok, paths = self._execute(step, job, attempt.attempt)
                outputs = {name: recorder.put_blob(path) for name, path in paths.items()}
                ended = attempt.finish("succeeded" if ok else "failed", 0 if ok else 1, None, outputs)
            if ended["status"] in record.TERMINAL:
                if ok:
                    self.outputs.update({f"{step.name}.{name}": path for name, path in paths.items()})
                self._set(step.name, str(ended["status"]))
                return bool(ok)
            self.report(f"  {step.name}: retrying (the controller queued attempt {int(started['attempt']) + 1})")

    def _execute(self, step: Step, job: runner.Job, attempt: int) -> tuple[bool, dict[str, str]]:
        """Runs one attempt: a function step here, a registered task's script as a subprocess
        (`drover.localtask`). Whether it succeeded, and its outputs (name -> file)."""
        if step.base_task_id is None:
            ok = runner.run_reporting(job)
            return ok, {name: os.path.join(job["output_dir"], f"{name}.pkl") for name in step.returns} if ok else {}
        base = self.recorder.base if self.recorder is not None else None
        code, artifacts = localtask.run(job, self.run_id, step.name, attempt, os.path.join(self.dir, step.name),
                                        self._outputs_of, base)
        if code != 0:
            print(f"drover: step {step.name!r}: its script exited with code {code}", file=sys.stderr, flush=True)
        return code == 0, artifacts

    def _outputs_of(self, step: str) -> dict[str, str] | None:
        """An ended step's outputs (name -> file), or None while it has not ended."""
        if self.status.get(step) not in record.TERMINAL:
            return None
        prefix = f"{step}."
        return {key[len(prefix):]: path for key, path in self.outputs.items() if key.startswith(prefix)}

    def _adopt(self, step: Step, answer: Mapping[str, Any], job: runner.Job, recorder: record.Recorder) -> bool:
        """The step ended at the controller without running here: a cache hit (its outputs are
        fetched) or skipped or aborted there."""
        status = str(answer["status"])
        for name, artifact in (answer.get("outputs") or {}).items():
            path = os.path.join(job["output_dir"], f"{name}.pkl")
            os.makedirs(job["output_dir"], exist_ok=True)
            recorder.get_blob(artifact["digest"], path)
            self.outputs[f"{step.name}.{name}"] = path
        self._set(step.name, status, "cache hit" if status == "cached" else None)
        return status in ("succeeded", "cached")

    def _set(self, name: str, status: str, why: str | None = None) -> None:
        self.status[name] = status
        self.nodes[name].set_status(self.pipeline, status)
        self.report(f"  {name}: {status}" + (f" ({why})" if why else ""))

    def _blocked_by(self, step: Step) -> str | None:
        """Why `step` cannot run: a parent that ended without succeeding, as the scheduler says it."""
        for parent in self.checked.parents[step.name]:
            if self.status[parent] not in ("succeeded", "cached"):
                return f"parent {parent} {self.status[parent]}"
        return None

    def run(self) -> bool:
        """Runs every step whose parents succeeded, parents first; returns whether the run
        succeeded: no step failed unless it has continue_on_fail."""
        failed = []
        with tempfile.TemporaryDirectory(prefix="drover-local-") as self.dir:
            for step in self.steps:
                why = self._blocked_by(step)
                if why is not None:
                    self._set(step.name, "skipped", why)
                elif (not self._run_step(step) and not step.continue_on_fail
                      and self.status[step.name] != "skipped"):  # skipped by its pre_execute_callback
                    failed.append(step.name)
            self.values = self._read_values()
        self.ok = not failed
        return self.ok

    def _read_values(self) -> dict[str, dict[str, Any]]:
        """Every output's value, read back before the temporary directory goes away."""
        values: dict[str, dict[str, Any]] = {}
        for key, path in self.outputs.items():
            step, name = key.split(".", 1)
            if path.endswith(".pkl"):  # a task's artifact stored as a file (not pickled) has no value
                values.setdefault(step, {})[name] = runner.load_input(path)
        return values
