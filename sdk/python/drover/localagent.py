"""`run_locally()`'s stand-in for agent and controller: the channel served in this process.

The pipeline function runs in the calling process and talks to this server exactly as a driver
talks to its agent; each component step runs as a subprocess of `drover.runner` on a job.json,
in its own thread, once the steps it references have ended, with `DROVER_CHANNEL` pointing
here so its own component calls (nested components) work the same way. Steps are named as the
controller names them (`c`, `c_1`, ...); a step whose producer did not succeed is skipped, as
the scheduler skips it. Blobs and outputs live in a temporary directory, addressed by sha256.
Not done locally: caching, queues and time limits (every step runs at once, here).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from . import refs
from .dynamic import SUCCEEDED

_SDK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_RUN = "import sys; from drover.runner import main; sys.exit(main(sys.argv))"


class _Step:
    def __init__(self, name: str, spec: dict[str, Any]) -> None:
        self.name = name
        self.spec = spec
        self.status = "pending"
        self.message: str | None = None
        self.outputs: dict[str, dict[str, Any]] = {}
        self.done = threading.Event()

    def view(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "outputs": self.outputs, "message": self.message,
                "kind": "function"}


def _bad(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


class LocalAgent:
    """A channel server at `self.path` running component steps as local subprocesses."""

    def __init__(self, run_id: str, report: Callable[[str], None] = print, env: dict[str, str] | None = None) -> None:
        self.run_id = run_id
        self.report = report
        self.env = dict(env or {})
        self.dir = tempfile.mkdtemp(prefix="drover-local-")
        self.path = os.path.join(self.dir, "channel.sock")
        self.steps: dict[str, _Step] = {}
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        agent = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for line in self.rfile:
                    try:
                        answer = agent.answer(json.loads(line))
                    except Exception as e:  # a bad request must not kill the server
                        answer = _bad("internal", f"{type(e).__name__}: {e}")
                    self.wfile.write(json.dumps(answer).encode("utf-8") + b"\n")
                    self.wfile.flush()

        self.server = socketserver.ThreadingUnixStreamServer(self.path, Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- requests ---------------------------------------------------------------------------

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "info":
            return {"ok": True, "run_id": self.run_id, "step": "driver", "attempt": 1, "controller_url": None}
        if op == "add_step":
            return {"ok": True, "step": self.add_step(request["step"]), "existing": False}
        if op == "wait":
            step = self.steps.get(str(request.get("step")))
            if step is None:
                return _bad("not_found", f"no step {request.get('step')!r} in this run")
            step.done.wait()
            return {"ok": True, "view": step.view()}
        if op == "put":
            path = str(request["path"])
            if not os.path.isfile(path):
                return _bad("bad_request", f"no such file: {path}")
            return {"ok": True, "artifact": self.store(path)}
        if op == "get":
            source = self.blob_path(request["artifact"]["digest"])
            if not os.path.isfile(source):
                return _bad("not_found", f"no blob {request['artifact']['digest']}")
            dest = str(request["dest"])
            os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
            shutil.copyfile(source, dest)
            return {"ok": True}
        if op == "scalars":
            # A local run keeps no metrics: the step's Logger has printed them already.
            return {"ok": True, "stored": len(request.get("points") or [])}
        return _bad("bad_request", f"unknown op {op!r}")

    def blob_path(self, digest: str) -> str:
        return os.path.join(self.dir, "blobs", digest)

    def store(self, path: str) -> dict[str, Any]:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        os.makedirs(os.path.join(self.dir, "blobs"), exist_ok=True)
        if not os.path.exists(self.blob_path(digest)):
            tmp = self.blob_path(digest) + f".{threading.get_ident()}.tmp"
            shutil.copyfile(path, tmp)
            os.replace(tmp, self.blob_path(digest))
        return {"digest": digest, "size": os.path.getsize(path), "file_name": os.path.basename(path)}

    def add_step(self, spec: dict[str, Any]) -> str:
        with self.lock:
            base = str(spec["name"])
            name, n = base, 0
            while name in self.steps:
                n += 1
                name = f"{base}_{n}"
            step = _Step(name, spec)
            self.steps[name] = step
        thread = threading.Thread(target=self._run, args=(step,), daemon=True)
        self.threads.append(thread)
        thread.start()
        return name

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
        finally:
            self.report(f"  {step.name}: {step.status}" + (f" ({step.message})" if step.message else ""))
            step.done.set()

    def _run_step(self, step: _Step) -> None:
        for producer in self._producers(step.spec):
            parent = self.steps.get(producer)
            if parent is None:
                raise ValueError(f"step {step.name!r} references {producer!r}, which is not a step of this run")
            parent.done.wait()
            if parent.status not in SUCCEEDED:
                step.status, step.message = "skipped", f"parent {producer} {parent.status}"
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
        retries = int(step.spec.get("retries") or 0)
        for attempt in range(1, retries + 2):
            step.status = "running"
            code = self._process(step, workdir, attempt)
            if code == 0:
                for r in job["returns"]:
                    step.outputs[r] = self.store(os.path.join(output_dir, f"{r}.pkl"))
                step.status, step.message = "succeeded", None
                return
            step.status, step.message = "failed", f"exit code {code}"
        if step.spec.get("continue_on_fail"):
            step.message = f"{step.message} (continue_on_fail)"

    def _process(self, step: _Step, workdir: str, attempt: int) -> int:
        env = dict(os.environ)
        env.update(self.env)
        env.update({"DROVER_CHANNEL": self.path, "DROVER_RUN_ID": self.run_id, "DROVER_STEP": step.name,
                    "DROVER_ATTEMPT": str(attempt)})
        env.update(step.spec.get("env") or {})
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_SDK_ROOT, env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        process = subprocess.Popen([sys.executable, "-c", _RUN, "job.json"], cwd=workdir, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None
        for line in process.stdout:
            self.report(f"[{step.name}] {line.rstrip()}")
        return process.wait()
