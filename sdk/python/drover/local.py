"""Running a whole pipeline in this process, without broker or controller, the way they would.

Parameters are substituted as the controller substitutes them, and each step then runs through
`drover.runner`, the code the agent's harness runs, from its shipped source (not the live
function object): a step that is not self-contained fails here as it would on an agent. Values
cross steps through pickle files, as artifacts do. Which steps run follows the scheduler: a
step whose parent did not succeed is skipped, every other step runs, and the run fails when a
step without `continue_on_fail` failed.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import refs, runner
from .spec import Step
from .validate import Checked


def job_kwargs(kwargs: Mapping[str, str], params: Mapping[str, str]) -> dict[str, str]:
    """The kwargs as the controller sends them: `${pipeline.x}` substituted in JSON strings,
    the result still a template for the output references."""

    def param(reference: refs.Reference) -> str | None:
        return params.get(reference.name) if isinstance(reference, refs.Param) else None

    rendered = {}
    for name, text in kwargs.items():
        value = json.loads(text)
        rendered[name] = json.dumps(refs.render_partial(value, param)) if isinstance(value, str) else text
    return rendered


class LocalRun:
    """One in-process run: step statuses, the pickle file of every output, and the values."""

    def __init__(self, steps: Sequence[Step], checked: Checked, params: Mapping[str, str],
                 report: Callable[[str], None] = print) -> None:
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

    def _job(self, step: Step) -> runner.Job:
        """The job an agent would get for `step`."""
        inputs = {f"{s}.{o}": self.outputs[f"{s}.{o}"] for s, o in self.checked.inputs[step.name]}
        return {
            "source": step.source,
            "entry": step.entry,
            "kwargs": job_kwargs(step.kwargs, self.params),
            "inputs": inputs,
            "returns": list(step.returns),
            "output_dir": os.path.join(self.dir, step.name, "_outputs"),
        }

    def _run_step(self, step: Step) -> bool:
        """Runs one step with its retries; returns whether it succeeded."""
        if step.timeout:
            warnings.warn(f"step {step.name!r}: time_limit is not enforced when running locally", stacklevel=2)
        job = self._job(step)
        for attempt in range(1, step.retries + 2):
            self._set(step.name, "running")
            if runner.run_reporting(job):
                for name in step.returns:
                    self.outputs[f"{step.name}.{name}"] = os.path.join(job["output_dir"], f"{name}.pkl")
                self._set(step.name, "succeeded")
                return True
            if attempt <= step.retries:
                self.report(f"  {step.name}: retrying (attempt {attempt + 1} of {step.retries + 1})")
        self._set(step.name, "failed")
        return False

    def _set(self, name: str, status: str, why: str | None = None) -> None:
        self.status[name] = status
        self.report(f"  {name}: {status}" + (f" ({why})" if why else ""))

    def _blocked_by(self, step: Step) -> str | None:
        """Why `step` cannot run: a parent that ended without succeeding, as the scheduler says it."""
        for parent in self.checked.parents[step.name]:
            if self.status[parent] != "succeeded":
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
                elif not self._run_step(step) and not step.continue_on_fail:
                    failed.append(step.name)
            self.values = self._read_values()
        self.ok = not failed
        return self.ok

    def _read_values(self) -> dict[str, dict[str, Any]]:
        """Every output's value, read back before the temporary directory goes away."""
        values: dict[str, dict[str, Any]] = {}
        for key, path in self.outputs.items():
            step, name = key.split(".", 1)
            values.setdefault(step, {})[name] = runner.load_input(path)
        return values
