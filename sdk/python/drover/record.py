"""Recording a run this process executes itself with the controller (an `external` run).

`PipelineDecorator.run_locally()` and `PipelineController.start_locally(run_pipeline_steps_locally=True)`
run the pipeline here. When a controller is reachable (`DROVER_URL`, `DROVER_TOKEN`) the run is
submitted with `external: true`: the controller records it (`drover runs`, the web UI) and
dispatches nothing. This process then reports each step as an agent would, over HTTP
(`POST /api/v1/runs/{run}/steps/{step}/report` and `.../log`): it takes the step's attempt
(`started`), renews its lease from a background thread (`alive`, every third of the lease),
appends the attempt's output to its log and ends it (`finished`, its outputs first stored as
blobs). Should this process die, the leases run out and the controller fails the run, saying
why. With no controller reachable, `connect` warns once and the run goes on unrecorded.
"""

from __future__ import annotations

import _thread
import hashlib
import io
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from . import api, controllers, messages, settings

TERMINAL = ("succeeded", "cached", "failed", "skipped", "aborted")
# How long a new run may stay unknown to the controller (it takes it from the broker).
_UNKNOWN_GRACE = 60.0
_warned = False


class RecordError(RuntimeError):
    """The controller refused a report or a request (`code`: an API error code)."""

    def __init__(self, what: str, status: int, code: str, message: str) -> None:
        super().__init__(f"{what}: {message} ({code})")
        self.status, self.code, self.message = status, code, message


def runner_id() -> str:
    """This process as the runner of its steps: `local-<host>-<pid>`, an agent id's characters."""
    host = "".join(c if c.isalnum() or c in "_-." else "-" for c in socket.gethostname()) or "host"
    return f"local-{host}-{os.getpid()}"


def _warn_once(text: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(text, stacklevel=3)


class Recorder:
    """Reports one external run's steps to the controller at `base_url`."""

    def __init__(self, base_url: str, run_id: str) -> None:
        self.base = base_url
        self.run_id = run_id
        self.runner = runner_id()
        self.lease_ms = 30_000
        self._csrf: dict[str, str] | None = None
        self._lock = threading.Lock()
        self._running: dict[tuple[str, int], Callable[[str], None]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def connect(cls, run_id: str, what: str) -> Recorder | None:
        """A recorder for `run_id` when the configured controller answers `/healthz`; else None
        (warned once per process: `what` runs unrecorded)."""
        base = " ".join(controllers.parse())
        try:
            base = settings.controller_url()
            with controllers.urlopen(f"{base}/healthz", timeout=2) as response:
                health = json.load(response)
        except (OSError, ValueError) as e:
            _warn_once(f"no drover controller at {base} ({e}): {what} runs here without being recorded; "
                       "start one with `drover up` or set DROVER_URL to have it in `drover runs` and the web UI")
            return None
        if health.get("status") != "ok":
            _warn_once(f"the drover controller at {base} is {health.get('status')} (broker "
                       f"{health.get('broker')}): {what} runs here without being recorded")
            return None
        return cls(base, run_id)

    def submit(self, spec: dict[str, Any], params: Mapping[str, str] | None = None) -> bool:
        """Submits the run as executed here; False (warned once) when the broker refuses it."""
        from .submit import PublishError, publish

        try:
            publish(messages.submit(self.run_id, spec, params, external=True))
        except PublishError as e:
            _warn_once(f"cannot record the run with the controller ({e}); it runs here unrecorded")
            return False
        return True

    @property
    def url(self) -> str:
        return api.run_page(self.base, self.run_id)

    # -- HTTP ---------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: bytes | None = None,
                 content_type: str = "application/json", what: str = "") -> Any:
        url = f"{self.base}{path}"
        for _ in range(2):
            headers = {"accept": "application/json", **settings.auth_headers(url)}
            if body is not None:
                headers["content-type"] = content_type
            if method == "POST" and self._csrf is not None:
                headers["x-drover-csrf"] = self._csrf["token"]
                headers["cookie"] = self._csrf["cookie"]
            request = urllib.request.Request(url, data=body, method=method, headers=headers)
            try:
                with controllers.urlopen(request, timeout=60) as response:
                    data = response.read()
                    return json.loads(data) if data else None
            except urllib.error.HTTPError as e:
                text = e.read().decode("utf-8", "replace")
                try:
                    error = json.loads(text)
                except ValueError:
                    error = {"code": "internal", "message": text}
                code, message = str(error.get("code")), str(error.get("message"))
                # A controller without a token wants a CSRF token on every POST.
                if e.code == 403 and method == "POST" and "CSRF" in message and self._csrf is None:
                    self._csrf = self._request("GET", "/api/v1/csrf")
                    continue
                raise RecordError(what or f"{method} {path}", e.code, code, message) from None
        raise RecordError(what or f"{method} {path}", 403, "forbidden", "the CSRF token was refused")

    def _post_json(self, path: str, doc: Mapping[str, Any], what: str) -> Any:
        return self._request("POST", path, json.dumps(doc).encode("utf-8"), what=what)

    # -- steps --------------------------------------------------------------------------------

    def report(self, step: str, report: Mapping[str, Any]) -> dict[str, Any]:
        """One report about `step`; the controller's `StepReported`."""
        answer: dict[str, Any] = self._post_json(
            f"/api/v1/runs/{self.run_id}/steps/{step}/report",
            {"runner": self.runner, "report": dict(report)}, f"step {step}: {report.get('kind')}")
        self.lease_ms = int(answer.get("lease_ms") or self.lease_ms)
        return answer

    def start(self, step: str) -> dict[str, Any]:
        """Takes the step's queued attempt once the controller has queued it; the answer's
        `status` is `running` then, or how the step ended without running here (a cache hit, or
        skipped or aborted by the controller)."""
        deadline = time.monotonic() + _UNKNOWN_GRACE
        while True:
            try:
                answer = self.report(step, {"kind": "started"})
            except RecordError as e:
                # The run (or a step just added) may not have reached the controller yet.
                if e.status != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
                continue
            if answer["status"] == "running" or answer["status"] in TERMINAL:
                return answer
            time.sleep(0.1)  # pending: its parents are being recorded, or a retry's backoff

    def running(self, step: str, attempt: int, stop: Callable[[str], None]) -> None:
        """Keeps the attempt's lease until `finish`; `stop(reason)` is called when the controller
        wants it stopped (an abort) or no longer takes it."""
        with self._lock:
            self._running[(step, attempt)] = stop
            if self._thread is None:
                self._thread = threading.Thread(target=self._keep_leases, name="drover-leases", daemon=True)
                self._thread.start()

    def finish(self, step: str, attempt: int, outcome: str, exit_code: int | None = None,
               message: str | None = None, outputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Ends the attempt (outputs already stored with `put_blob`)."""
        with self._lock:
            self._running.pop((step, attempt), None)
        return self.report(step, {"kind": "finished", "attempt": attempt, "outcome": outcome,
                                  "exit_code": exit_code, "message": message, "outputs": dict(outputs or {})})

    def _keep_leases(self) -> None:
        while not self._stop.wait(max(self.lease_ms / 3000.0, 0.2)):
            with self._lock:
                running = list(self._running.items())
            for (step, attempt), stop in running:
                try:
                    answer = self.report(step, {"kind": "alive", "attempt": attempt})
                except RecordError as e:
                    with self._lock:
                        still = self._running.pop((step, attempt), None)
                    if still is not None:
                        stop(e.message)
                    continue
                except OSError:
                    continue  # the controller is restarting: the lease covers a while
                if answer.get("abort_requested"):
                    stop("aborted on request")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def add_step(self, caller: str, attempt: int, call: Mapping[str, Any],
                 spec: Mapping[str, Any]) -> tuple[str, bool]:
        """Adds a step to the run for `caller`'s call; (its name, whether it existed)."""
        answer = self._post_json(f"/api/v1/runs/{self.run_id}/steps",
                                 {"caller": caller, "attempt": attempt, "call": dict(call), "step": dict(spec)},
                                 f"add step {spec.get('name')} from {caller}")
        return str(answer["step"]), bool(answer.get("existing", False))

    # -- blobs and logs -----------------------------------------------------------------------

    def put_blob(self, path: str) -> dict[str, Any]:
        """Stores the file as a blob (unless the store has it); its artifact."""
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        try:
            self._request("HEAD", f"/api/v1/blobs/{digest}")
        except RecordError as e:
            if e.status != 404:
                raise
            with open(path, "rb") as f:
                self._request("PUT", f"/api/v1/blobs/{digest}", f.read(), "application/octet-stream",
                              what=f"store {os.path.basename(path)}")
        return {"digest": digest, "size": os.path.getsize(path), "file_name": os.path.basename(path)}

    def get_blob(self, digest: str, dest: str) -> None:
        url = f"{self.base}/api/v1/blobs/{digest}"
        request = urllib.request.Request(url, headers=settings.auth_headers(url))
        with controllers.urlopen(request, timeout=60) as response, open(dest, "wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)

    def log(self, step: str, attempt: int) -> AttemptLog:
        return AttemptLog(self, step, attempt)


class AttemptLog:
    """An attempt's output on its way to the controller: buffered, sent every half second and
    on `close`, each chunk from the offset the log has reached."""

    def __init__(self, recorder: Recorder, step: str, attempt: int) -> None:
        self.recorder, self.step, self.attempt = recorder, step, attempt
        self.offset = 0
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"drover-log-{step}", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        with self._lock:
            self._buffer += data

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self.flush()

    def flush(self) -> None:
        with self._send_lock:
            with self._lock:
                data, self._buffer = bytes(self._buffer), bytearray()
            if not data:
                return
            query = urllib.parse.urlencode({"attempt": self.attempt, "offset": self.offset})
            try:
                answer = self.recorder._request(
                    "POST", f"/api/v1/runs/{self.recorder.run_id}/steps/{self.step}/log?{query}", data,
                    "application/octet-stream", what=f"log of step {self.step}")
                self.offset = int(answer["size"])
            except (RecordError, OSError):
                # The attempt no longer runs (ended, aborted) or the controller is away: the
                # output is still on this terminal; the recorded log misses it.
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()


class _Tee(io.TextIOBase):
    """A text stream writing to `inner` and to an attempt's log."""

    def __init__(self, inner: Any, log: AttemptLog) -> None:
        self.inner, self.log = inner, log

    def write(self, text: str) -> int:
        self.log.write(text.encode("utf-8", "replace"))
        return int(self.inner.write(text))

    def flush(self) -> None:
        self.inner.flush()

    def fileno(self) -> int:
        return int(self.inner.fileno())

    def isatty(self) -> bool:
        return False


class RecordedAttempt:
    """An attempt that runs inside this process (a driver, or a step of start_locally), taken
    with `Recorder.start` (its answer is `started`). Entered, it keeps the attempt's lease and
    copies what this process prints to the attempt's log; `finish` ends it. A stop the
    controller asks for (an abort) interrupts the main thread when the attempt runs there."""

    def __init__(self, recorder: Recorder, step: str, started: Mapping[str, Any]) -> None:
        if started["status"] != "running":
            raise RecordError(f"step {step}", 400, "bad_request",
                              f"the controller has the step {started['status']}; it cannot run here")
        self.recorder, self.step = recorder, step
        self.attempt = int(started["attempt"])
        self.stopped: str | None = None
        self.finished = False
        self._streams: tuple[Any, Any] | None = None
        self._main = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> RecordedAttempt:
        self.log = self.recorder.log(self.step, self.attempt)
        self._streams = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = _Tee(sys.stdout, self.log), _Tee(sys.stderr, self.log)
        self.recorder.running(self.step, self.attempt, self._stop)
        return self

    def _stop(self, why: str) -> None:
        self.stopped = why
        if self._main:
            _thread.interrupt_main()

    def write_log(self, text: str) -> None:
        """Text for the attempt's log only (not this terminal)."""
        self.log.write(text.encode("utf-8", "replace"))

    def finish(self, outcome: str, exit_code: int | None, message: str | None = None,
               outputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        self.log.flush()
        self.finished = True
        return self.recorder.finish(self.step, self.attempt, outcome, exit_code, message, outputs)

    def __exit__(self, *exc: object) -> None:
        if self._streams is not None:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            sys.stdout, sys.stderr = self._streams
        self.log.close()
        if not self.finished:
            try:
                self.finish("error", None, "the attempt ended without reporting how")
            except (RecordError, OSError) as e:
                print(f"drover: cannot end attempt {self.attempt} of {self.step}: {e}", file=sys.stderr)
