"""A registered task's step under `LocalRun`: its script run as a subprocess, as an agent runs it.

A task step (`PipelineController.add_step`) runs a script that calls `Task.init`, so it cannot
run inside the calling process: there `Task.init` is the caller's task, not the step's. Here
the step's job (`drover.registry.SCRIPT_RUNNER` with the filled-in overrides) runs through
`drover.runner` in a subprocess with its own working directory and the Python of the calling
process (function steps of `LocalRun` run in that Python too), and with the channel an agent
gives a step served in this process (`drover.localchannel`): `Task.init` is the step's task,
`connect` applies the overrides, `execute_remotely()` does nothing, and what the script uploads
with `upload_artifact` (`artifact` op) becomes the step's outputs. `Task.get_task` reaches the
ended steps of the run (`wait`, `get`). The script's output is printed as it comes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from typing import Any

from . import localchannel, names, runner

# The outputs of an ended step of the run (name -> file), or None while it has not ended.
Outputs = Callable[[str], Mapping[str, str] | None]


class TaskAttempt:
    """One attempt of a task step: its channel, and the artifacts its script stored."""

    def __init__(
        self, run_id: str, step: str, attempt: int, workdir: str, outputs: Outputs, controller_url: str | None
    ) -> None:
        self.run_id, self.step, self.attempt = run_id, step, attempt
        self.workdir = workdir
        self.outputs = outputs
        self.controller_url = controller_url
        self.kept = os.path.join(workdir, "_artifacts", f"_attempt-{attempt}")
        self.artifacts: dict[str, str] = {}  # name -> the kept file
        self.blobs: dict[str, str] = {}  # digest -> a file with that content
        self.lock = threading.Lock()

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "info":
            return {
                "ok": True,
                "run_id": self.run_id,
                "step": self.step,
                "attempt": self.attempt,
                "controller_url": self.controller_url,
            }
        if op == "artifact":
            return self._keep(str(request.get("name")), str(request.get("path")))
        if op == "wait":
            return self._view(str(request.get("step")))
        if op == "get":
            with self.lock:
                source = self.blobs.get(str((request.get("artifact") or {}).get("digest")))
            if source is None:
                return localchannel.bad("not_found", f"no blob {request.get('artifact')!r} in this run")
            dest = os.path.join(self.workdir, str(request["dest"]))
            os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
            shutil.copyfile(source, dest)
            return {"ok": True}
        if op == "scalars":
            # A local run keeps no metrics: the step's Logger has printed them already.
            return {"ok": True, "stored": len(request.get("points") or [])}
        return localchannel.bad(
            "bad_request", f"unknown op {op!r} (a task step run locally answers info, artifact, wait, get and scalars)"
        )

    def _ref(self, path: str) -> dict[str, Any]:
        ref = localchannel.file_ref(path)
        with self.lock:
            self.blobs[ref["digest"]] = path
        return ref

    def _keep(self, name: str, path: str) -> dict[str, Any]:
        """Stores the file as the step's artifact `name` (again: replaces it), as the agent does."""
        try:
            names.check_output_name(name)
        except ValueError as e:
            return localchannel.bad("bad_request", str(e))
        source = os.path.realpath(os.path.join(self.workdir, path))
        if os.path.commonpath([source, os.path.realpath(self.workdir)]) != os.path.realpath(self.workdir):
            return localchannel.bad("forbidden", f"{path} is outside the step's working directory")
        if not os.path.isfile(source):
            return localchannel.bad("bad_request", f"no such file: {path}")
        folder = os.path.join(self.kept, name)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        kept = os.path.join(folder, os.path.basename(source))
        shutil.copyfile(source, kept)
        with self.lock:
            self.artifacts[name] = kept
        return {"ok": True, "artifact": self._ref(kept)}

    def _view(self, step: str) -> dict[str, Any]:
        """Another step once it has ended; under LocalRun its parents have, as they run first."""
        outputs = self.outputs(step)
        if outputs is None:
            return localchannel.bad(
                "not_found",
                f"step {step!r} of this run has not ended before step "
                f"{self.step!r}; make it a parent (parents=[{step!r}])",
            )
        view = {
            "name": step,
            "status": "succeeded",
            "kind": "task",
            "outputs": {name: self._ref(path) for name, path in outputs.items()},
        }
        return {"ok": True, "view": view}


def run(
    job: runner.Job,
    run_id: str,
    step: str,
    attempt: int,
    workdir: str,
    outputs: Outputs,
    controller_url: str | None = None,
) -> tuple[int, dict[str, str]]:
    """Runs one attempt of task step `step` (its job as an agent gets it) in `workdir`; its exit
    code and the artifacts its script stored (name -> file, valid until `workdir` goes)."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "job.json"), "w", encoding="utf-8") as f:
        json.dump(job, f)
    here = TaskAttempt(run_id, step, attempt, workdir, outputs, controller_url)
    sockets = tempfile.mkdtemp(prefix="drover-channel-")  # short: a socket path has at most 107 bytes
    channel = os.path.join(sockets, "channel.sock")
    server = localchannel.serve(channel, here.answer)
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", localchannel.RUN, "job.json"],
            cwd=workdir,
            env=localchannel.step_env(channel, run_id, step, attempt, {"DROVER_WORKDIR": workdir}),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                sys.stdout.write(raw.decode("utf-8", "replace"))
                sys.stdout.flush()
            code = process.wait()
        finally:
            if process.poll() is None:  # interrupted here (an abort): the script goes too
                process.kill()
                process.wait()
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(sockets, ignore_errors=True)
    return code, dict(here.artifacts) if code == 0 else {}
