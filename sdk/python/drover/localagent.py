"""`run_locally()`'s stand-in for agent and controller: the channel served in this process.

The pipeline function runs in the calling process and talks to this server exactly as a driver
talks to its agent; each component step runs as a subprocess of `drover.runner` on a job.json,
in its own thread, once the steps it references have ended, with `DROVER_CHANNEL` pointing
here so its own component calls (nested components) work the same way. Steps are named as the
controller names them (`c`, `c_1`, ...); a step whose producer did not succeed is skipped, as
the scheduler skips it. Blobs and outputs live in a temporary directory, addressed by sha256.
Each running step (and the driver) has a channel socket of its own, so a call names its caller.

With a `Recorder` (a reachable controller, see `drover.record`) the run is recorded: steps are
added to the controller's run, which names them, and each attempt is taken, kept alive, logged
and ended there; the controller decides retries and may end a step as a cache hit, whose
outputs are then fetched instead of run. Without one, nothing is cached, and queues and time
limits are not applied (every step runs at once, here).
"""

from __future__ import annotations

import json
import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import localchannel, refs
from .dynamic import SUCCEEDED, TERMINAL
from .record import Recorder

if TYPE_CHECKING:
    from .watch import Watch



class _Step:
    def __init__(self, name: str, spec: dict[str, Any]) -> None:
        self.name = name
        self.spec = spec
        self.status = "pending"
        self.message: str | None = None
        self.outputs: dict[str, dict[str, Any]] = {}
        self.done = threading.Event()
        self.attempt = 0  # the attempt running here and taken at the controller, 0 when none
        # Asks its pre_execute_callback before it starts (this process answers, not the controller).
        self.awaits = bool(spec.pop("await_callback", False))

    def view(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "outputs": self.outputs, "message": self.message,
                "kind": "function"}


class _Caller:
    """Who speaks on one channel socket: a step (or the driver) and its current attempt."""

    def __init__(self, step: str, attempt: int = 1) -> None:
        self.step, self.attempt = step, attempt


class LocalAgent:
    """Channel servers (the driver's at `self.path`) running component steps as local subprocesses."""

    def __init__(self, run_id: str, report: Callable[[str], None] = print, env: dict[str, str] | None = None,
                 recorder: Recorder | None = None, watch: Watch | None = None) -> None:
        self.run_id = run_id
        self.watch = watch  # the components' callbacks, called as the steps go (see drover.watch)
        self._report = report
        self.env = dict(env or {})
        self.recorder = recorder
        self.dir = tempfile.mkdtemp(prefix="drover-local-")
        self.steps: dict[str, _Step] = {}
        self.lock = threading.Lock()
        # Callbacks run one at a time, as they do in a driver's single following thread: steps
        # run in threads of their own here, and a user's callbacks need not be thread-safe. The
        # runner's own lines wait for them too, so a callback's printed line stays whole.
        self.callbacks = threading.RLock()
        self.threads: list[threading.Thread] = []
        self.servers: list[socketserver.ThreadingUnixStreamServer] = []
        self.path = self.serve(_Caller("driver"))

    def serve(self, caller: _Caller) -> str:
        """A channel socket for `caller`'s requests; its path."""
        with self.lock:
            path = os.path.join(self.dir, f"channel-{len(self.servers)}.sock")
            self.servers.append(localchannel.serve(path, lambda request: self.answer(request, caller)))
        return path

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- requests ---------------------------------------------------------------------------

    def answer(self, request: dict[str, Any], caller: _Caller) -> dict[str, Any]:
        op = request.get("op")
        if op == "info":
            return {"ok": True, "run_id": self.run_id, "step": caller.step, "attempt": caller.attempt,
                    "controller_url": self.recorder.base if self.recorder else None}
        if op == "add_step":
            name, existing = self.add_step(request["step"], request.get("call") or {}, caller)
            return {"ok": True, "step": name, "existing": existing}
        if op == "wait":
            step = self.steps.get(str(request.get("step")))
            if step is None:
                return localchannel.bad("not_found", f"no step {request.get('step')!r} in this run")
            step.done.wait()
            return {"ok": True, "view": step.view()}
        if op == "put":
            path = str(request["path"])
            if not os.path.isfile(path):
                return localchannel.bad("bad_request", f"no such file: {path}")
            artifact = self.store(path)
            if self.recorder is not None:  # an added step's blob arguments must be stored there
                self.recorder.put_blob(self.blob_path(artifact["digest"]))
            return {"ok": True, "artifact": artifact}
        if op == "get":
            source = self.blob_path(request["artifact"]["digest"])
            if not os.path.isfile(source):
                return localchannel.bad("not_found", f"no blob {request['artifact']['digest']}")
            dest = str(request["dest"])
            os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
            shutil.copyfile(source, dest)
            return {"ok": True}
        if op == "scalars":
            # A local run keeps no metrics: the step's Logger has printed them already.
            return {"ok": True, "stored": len(request.get("points") or [])}
        return localchannel.bad("bad_request", f"unknown op {op!r}")

    def blob_path(self, digest: str) -> str:
        return os.path.join(self.dir, "blobs", digest)

    def store(self, path: str) -> dict[str, Any]:
        ref = localchannel.file_ref(path)
        digest = ref["digest"]
        os.makedirs(os.path.join(self.dir, "blobs"), exist_ok=True)
        if not os.path.exists(self.blob_path(digest)):
            tmp = self.blob_path(digest) + f".{threading.get_ident()}.tmp"
            shutil.copyfile(path, tmp)
            os.replace(tmp, self.blob_path(digest))
        return ref

    def add_step(self, spec: dict[str, Any], call: dict[str, Any], caller: _Caller) -> tuple[str, bool]:
        """Adds the step (to the recorded run, which names it, or here) and starts its thread."""
        spec = dict(spec)
        awaits = bool(spec.pop("await_callback", False))  # answered here, not by the controller
        if awaits:
            spec["await_callback"] = True  # kept by _Step, left out of what is recorded
        if self.recorder is not None:
            recorded = {k: v for k, v in spec.items() if k != "await_callback"}
            name, existing = self.recorder.add_step(caller.step, caller.attempt, call, recorded)
            with self.lock:
                if name in self.steps:
                    return name, existing
                step = _Step(name, spec)
                self.steps[name] = step
        else:
            existing = False
            with self.lock:
                base = str(spec["name"])
                name, n = base, 0
                while name in self.steps:
                    n += 1
                    name = f"{base}_{n}"
                step = _Step(name, spec)
                self.steps[name] = step
        if self.watch is not None and caller.step == "driver" and "seq" in call:
            self.watch.bind(int(call["seq"]), name)
        thread = threading.Thread(target=self._run, args=(step,), daemon=True)
        self.threads.append(thread)
        thread.start()
        return name, existing

    # -- running steps ----------------------------------------------------------------------

    def _producers(self, spec: dict[str, Any]) -> list[str]:
        found = list(spec.get("parents") or [])
        for text in (spec["function"].get("kwargs") or {}).values():
            value = json.loads(text)
            if isinstance(value, str):
                found += [r.step for r in refs.references(value) if isinstance(r, refs.Output)]
        return found

    def _run(self, step: _Step) -> None:
        try:
            self._run_step(step)
        except Exception as e:
            step.status, step.message = "failed", f"{type(e).__name__}: {e}"
            if self.recorder is not None and step.attempt:
                try:  # the attempt could not be run or reported: end it as one that could not run
                    self.recorder.finish(step.name, step.attempt, "error", None, step.message)
                except Exception as again:
                    self.report(f"  {step.name}: cannot report attempt {step.attempt}: {again}")
        finally:
            self.report(f"  {step.name}: {step.status}" + (f" ({step.message})" if step.message else ""))
            try:
                self._ended(step)
            finally:
                step.done.set()

    def report(self, line: str) -> None:
        """Prints one of the runner's lines, never in the middle of a callback's."""
        with self.callbacks:
            self._report(line)

    def _set_running(self, step: _Step) -> None:
        step.status = "running"
        if self.watch is not None:
            with self.callbacks:
                self.watch.status(step.name, "running")
                self.watch.started(step.name)

    def _ended(self, step: _Step) -> None:
        """The ended step's status_change_callback and post_execute_callback; one that raises
        fails the step (its values are then not read)."""
        if self.watch is None:
            return
        try:
            with self.callbacks:
                self.watch.status(step.name, step.status)
                if step.status != "skipped":
                    self.watch.post_execute(step.name, self.run_id)
        except Exception as e:
            step.status, step.message = "failed", f"a callback raised {type(e).__name__}: {e}"
            self.report(f"  {step.name}: {step.status} ({step.message})")

    def _declined(self, step: _Step) -> bool:
        """Asks the step's pre_execute_callback; False skips it (recorded so at the controller)."""
        if not step.awaits or self.watch is None:
            return False
        with self.callbacks:
            if self.watch.pre_execute(step.name):
                return False
        step.status, step.message = "skipped", "skipped: its pre_execute_callback returned False"
        if self.recorder is not None:
            self.recorder.report(step.name, {"kind": "skipped", "reason": step.message})
        return True

    def _run_step(self, step: _Step) -> None:
        for producer in self._producers(step.spec):
            parent = self.steps.get(producer)
            if parent is None:
                raise ValueError(f"step {step.name!r} references {producer!r}, which is not a step of this run")
            parent.done.wait()
            if parent.status not in SUCCEEDED:
                step.status, step.message = "skipped", f"parent {producer} {parent.status}"
                return
        if self._declined(step):
            return
        function = step.spec["function"]
        workdir = os.path.join(self.dir, "steps", step.name)
        os.makedirs(workdir, exist_ok=True)
        inputs: dict[str, str] = {}
        kwargs = dict(function.get("kwargs") or {})
        for text in kwargs.values():
            value = json.loads(text)
            if isinstance(value, str):
                for r in refs.references(value):
                    if isinstance(r, refs.Output):
                        inputs[r.key] = self.blob_path(self.steps[r.step].outputs[r.output]["digest"])
        blobs = {kwarg: self.blob_path(a["digest"]) for kwarg, a in (function.get("blobs") or {}).items()}
        output_dir = os.path.join(workdir, "_outputs")
        job = {"source": function["source"], "entry": function["entry"], "kwargs": kwargs, "inputs": inputs,
               "blobs": blobs, "returns": list(function.get("returns") or []), "output_dir": output_dir}
        with open(os.path.join(workdir, "job.json"), "w", encoding="utf-8") as f:
            json.dump(job, f)
        if self.recorder is not None:
            self._run_recorded(step, workdir, job, self.recorder)
            return
        retries = int(step.spec.get("retries") or 0)
        caller = _Caller(step.name)
        channel = self.serve(caller)
        for attempt in range(1, retries + 2):
            self._set_running(step)
            caller.attempt = attempt
            code = self._process(step, workdir, caller, channel)
            if code == 0:
                for r in job["returns"]:
                    step.outputs[r] = self.store(os.path.join(output_dir, f"{r}.pkl"))
                step.status, step.message = "succeeded", None
                return
            step.status, step.message = "failed", f"exit code {code}"
        if step.spec.get("continue_on_fail"):
            step.message = f"{step.message} (continue_on_fail)"

    def _run_recorded(self, step: _Step, workdir: str, job: dict[str, Any], recorder: Recorder) -> None:
        """Runs the attempts the controller queues for the step until it ends there."""
        caller = _Caller(step.name)
        channel = self.serve(caller)
        while True:
            answer = recorder.start(step.name)
            if answer["status"] != "running":
                self._adopt(step, answer, recorder)
                return
            self._set_running(step)
            caller.attempt = step.attempt = attempt = int(answer["attempt"])
            stopped: list[str] = []
            log = recorder.log(step.name, attempt)
            try:
                code = self._process(step, workdir, caller, channel, log, recorder, stopped)
            finally:
                log.close()
            outputs: dict[str, Any] = {}
            if code == 0 and not stopped:
                for r in job["returns"]:
                    local = self.store(os.path.join(job["output_dir"], f"{r}.pkl"))
                    outputs[r] = recorder.put_blob(self.blob_path(local["digest"]))
                    outputs[r]["file_name"] = local["file_name"]
                ended = recorder.finish(step.name, attempt, "succeeded", 0, None, outputs)
            elif stopped:
                ended = recorder.finish(step.name, attempt, "aborted", code, stopped[0])
            else:
                ended = recorder.finish(step.name, attempt, "failed", code, None)
            step.attempt = 0
            if ended["status"] in TERMINAL:
                step.outputs = outputs
                step.status, step.message = str(ended["status"]), None
                if step.status not in SUCCEEDED:
                    step.message = f"exit code {code}" if not stopped else stopped[0]
                return
            self.report(f"  {step.name}: attempt {attempt} failed (exit code {code}); the controller retries it")

    def _adopt(self, step: _Step, answer: dict[str, Any], recorder: Recorder) -> None:
        """The step ended at the controller without running here: a cache hit (its outputs are
        fetched), or skipped or aborted there."""
        step.status = str(answer["status"])
        for name, artifact in (answer.get("outputs") or {}).items():
            dest = self.blob_path(artifact["digest"])
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if not os.path.exists(dest):
                recorder.get_blob(artifact["digest"], dest)
            step.outputs[name] = artifact
        if step.status == "cached":
            step.message = "cache hit"
        elif step.status not in SUCCEEDED:
            step.message = "ended by the controller"

    def _process(self, step: _Step, workdir: str, caller: _Caller, channel: str, log: Any = None,
                 recorder: Recorder | None = None, stopped: list[str] | None = None) -> int:
        """Runs one attempt; its output goes to `report` (and `log`). With a recorder the
        attempt's lease is kept, and a stop the controller asks for kills it (noted in `stopped`)."""
        env = localchannel.step_env(channel, self.run_id, step.name, caller.attempt,
                                    {**self.env, **(step.spec.get("env") or {})})
        process = subprocess.Popen([sys.executable, "-c", localchannel.RUN, "job.json"], cwd=workdir, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if recorder is not None:
            def stop(why: str) -> None:
                if stopped is not None:
                    stopped.append(why)
                process.kill()

            recorder.running(step.name, caller.attempt, stop)
        assert process.stdout is not None
        for raw in process.stdout:
            if log is not None:
                log.write(raw)
            self.report(f"[{step.name}] {raw.decode('utf-8', 'replace').rstrip()}")
        return process.wait()
