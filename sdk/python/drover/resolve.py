"""Filling in a step's references in Python as the controller fills them in when it dispatches it.

The controller substitutes `${pipeline.NAME}` at submission, and `${STEP.id}` (`<run id>/<step>`)
and `${STEP.artifacts.NAME.url}` (the download address of an artifact of an ended step) at
dispatch, in the JSON strings of a function step's kwargs (`controller/src/scheduler/resolve.rs`);
`${STEP.OUTPUT}` is left to the agent. `${STEP.parameters.SECTION/NAME}` never reaches it:
`add_step` replaces it when the pipeline is built. Three Python processes do the same: the
process running steps under `start_locally(run_pipeline_steps_locally=True)` (strict: a missing
artifact fails the consuming step, naming it, with the controller's message), and those showing
a step's `parameters` to its callbacks (lenient: what is not known yet stays a reference).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from typing import Any

from . import refs, stepartifacts

# Resolves one reference to its text; None leaves it as written.
Filler = Callable[[refs.Reference], str | None]


class MissingArtifact(ValueError):
    """A step names an artifact the step it references did not store."""


def filler(params: Mapping[str, str], run_id: str = "", artifacts: Mapping[str, Collection[str]] | None = None,
           url: Callable[[str, str], str] | None = None, strict: bool = False) -> Filler:
    """Fills `${pipeline.NAME}` from `params` and, when `run_id` is given, the ids and artifact
    URLs of the steps in `artifacts` (step -> the names of its artifacts; the ended steps):
    `url(step, name)` is an artifact's address. `strict`: an artifact the step does not have
    raises MissingArtifact, as the controller fails the consuming step."""
    known = artifacts or {}

    def fill(reference: refs.Reference) -> str | None:
        if isinstance(reference, refs.Param):
            return params.get(reference.name)
        if not run_id or isinstance(reference, refs.Output) or reference.step not in known:
            return None
        if isinstance(reference, refs.StepId):
            return f"{run_id}/{reference.step}"
        names = known[reference.step]
        if reference.artifact in names and url is not None:
            return url(reference.step, reference.artifact)
        if strict:
            raise MissingArtifact(f"{reference}: step {reference.step} has no artifact "
                                  f"{json.dumps(reference.artifact)} (its artifacts: {json.dumps(sorted(names))})")
        return None

    return fill


def from_view(params: Mapping[str, str], view: Mapping[str, Any] | None) -> Filler:
    """A lenient filler from a run's view (the controller's API or an agent's `run`)."""
    if not view:
        return filler(params)
    run_id = str(view.get("run_id", ""))
    page = str(view.get("url", ""))
    base = page.rsplit("/runs/", 1)[0] if "/runs/" in page else ""
    artifacts = {s["name"]: list(s.get("outputs") or {}) for s in view.get("steps", [])}

    def url(step: str, name: str) -> str:
        return stepartifacts.artifact_url(base, run_id, step, name)

    return filler(params, run_id, artifacts, url if base else None)


def kwargs(texts: Mapping[str, str], fill: Filler) -> dict[str, str]:
    """A function step's kwargs (JSON text) with the references `fill` knows filled in; the
    result is still a template for those it does not (`${STEP.OUTPUT}`, for the runner)."""
    out = {}
    for name, text in texts.items():
        value = json.loads(text)
        out[name] = json.dumps(refs.render_partial(value, fill)) if isinstance(value, str) else text
    return out


def parameters(base_task_id: str | None, texts: Mapping[str, str], task_parameters: Mapping[str, str],
               fill: Filler) -> dict[str, Any]:
    """A step's parameters as ClearML's pre_execute_callback gets them, filled in: a function
    step's kwargs as `kwargs/NAME` (their values), a task step's as `Section/name` (text, as
    its script gets them)."""
    if base_task_id:
        return {k: refs.render_partial(v, fill) for k, v in task_parameters.items()}
    return {f"kwargs/{k}": json.loads(v) for k, v in kwargs(texts, fill).items()}
