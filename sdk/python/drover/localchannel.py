"""The step channel served in this process, for steps run as local subprocesses.

`run_locally()` (`drover.localagent`) and `start_locally(run_pipeline_steps_locally=True)`
(`drover.localtask`) run a step as `python -c RUN job.json` in its own working directory, with
the Python of the calling process and the environment an agent gives a step: `DROVER_CHANNEL`
naming a Unix socket served here, `DROVER_RUN_ID`, `DROVER_STEP`, `DROVER_ATTEMPT`. Each
request on the socket is one JSON line, answered by one JSON line.
"""

from __future__ import annotations

import hashlib
import json
import os
import socketserver
import threading
from collections.abc import Callable, Mapping
from typing import Any

SDK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = "import sys; from drover.runner import main; sys.exit(main(sys.argv))"

Answer = Callable[[dict[str, Any]], dict[str, Any]]


def bad(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


def serve(path: str, answer: Answer) -> socketserver.ThreadingUnixStreamServer:
    """Serves `answer` on a Unix socket at `path`, in a daemon thread; the caller shuts it down."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                try:
                    reply = answer(json.loads(line))
                except Exception as e:  # a bad request must not kill the server
                    reply = bad("internal", f"{type(e).__name__}: {e}")
                self.wfile.write(json.dumps(reply).encode("utf-8") + b"\n")
                self.wfile.flush()

    server = socketserver.ThreadingUnixStreamServer(path, Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def step_env(channel: str, run_id: str, step: str, attempt: int, extra: Mapping[str, str] = {}) -> dict[str, str]:
    """This process's environment with what an agent gives step `step`'s attempt."""
    env = dict(os.environ)
    env.update(extra)
    env.update(
        {"DROVER_CHANNEL": channel, "DROVER_RUN_ID": run_id, "DROVER_STEP": step, "DROVER_ATTEMPT": str(attempt)}
    )
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SDK_ROOT, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def file_ref(path: str) -> dict[str, Any]:
    """The artifact reference of a file: its sha256, size and name."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"digest": h.hexdigest(), "size": os.path.getsize(path), "file_name": os.path.basename(path)}
