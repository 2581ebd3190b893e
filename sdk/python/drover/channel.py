"""The client side of the channel: newline-delimited JSON over the Unix socket `DROVER_CHANNEL`.

The agent running a Python function step serves the channel for that one attempt (see
ARCHITECTURE.md, "The channel"). Each thread keeps its own connection, so several threads can
wait on several steps at once; on one connection every request gets exactly one answer line,
in order.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from typing import Any

ENV = "DROVER_CHANNEL"


class ChannelError(RuntimeError):
    """The agent refused a request: `code` is one of the API error codes."""

    def __init__(self, op: str, code: str, message: str) -> None:
        super().__init__(f"{op}: {message} ({code})")
        self.op, self.code, self.message = op, code, message


class Client:
    """Requests to the agent serving this attempt's channel at `path`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()

    @classmethod
    def from_env(cls) -> Client | None:
        """The channel named by `DROVER_CHANNEL`, or None outside a step."""
        path = os.environ.get(ENV)
        return cls(path) if path else None

    def _connection(self) -> tuple[socket.socket, Any]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
            except OSError as e:
                sock.close()
                raise ConnectionError(f"cannot reach the step's channel at {self.path}: {e}") from e
            conn = (sock, sock.makefile("rb"))
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn[1].close()
            conn[0].close()

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """Sends one request and returns the answer's fields; raises ChannelError when the
        agent answers `ok: false`, ConnectionError when the channel is gone."""
        op = str(body.get("op"))
        sock, reader = self._connection()
        try:
            sock.sendall(json.dumps(body, separators=(",", ":")).encode("utf-8") + b"\n")
            line = reader.readline()
        except OSError as e:
            self._drop()
            raise ConnectionError(f"the step's channel failed during {op}: {e}") from e
        if not line:
            self._drop()
            raise ConnectionError(f"the step's channel closed before answering {op}")
        answer = json.loads(line)
        if not isinstance(answer, dict):
            raise ConnectionError(f"the step's channel answered {op} with {answer!r}")
        if not answer.get("ok"):
            error = answer.get("error") or {}
            raise ChannelError(op, str(error.get("code", "internal")), str(error.get("message", answer)))
        return answer

    def info(self) -> dict[str, Any]:
        return self.request({"op": "info"})

    def add_step(self, call: dict[str, Any], step: dict[str, Any]) -> tuple[str, bool]:
        """The step's final name and whether it already existed (a replayed call)."""
        answer = self.request({"op": "add_step", "call": call, "step": step})
        return str(answer["step"]), bool(answer.get("existing", False))

    def wait(self, step: str) -> dict[str, Any]:
        """The step's view once it is terminal."""
        view: dict[str, Any] = self.request({"op": "wait", "step": step})["view"]
        return view

    def put(self, path: str) -> dict[str, Any]:
        """Stores the file as a blob; its artifact (digest, size, file_name)."""
        artifact: dict[str, Any] = self.request({"op": "put", "path": os.path.abspath(path)})["artifact"]
        return artifact

    def get(self, artifact: dict[str, Any], dest: str) -> None:
        """Fetches a stored artifact into `dest` (inside the workdir)."""
        self.request({"op": "get", "artifact": artifact, "dest": os.path.abspath(dest)})

    def scalars(self, points: list[dict[str, Any]]) -> int:
        """Reports points `{title, series, iteration, value}`; how many the controller took."""
        return int(self.request({"op": "scalars", "points": points}).get("stored", 0))

    def run(self) -> dict[str, Any]:
        """The current view of this step's run (`RunView`)."""
        view: dict[str, Any] = self.request({"op": "run"})["view"]
        return view

    def callback(self, step: str, proceed: bool) -> str:
        """Answers the pre_execute_callback of step `step` of this run; the step's status."""
        return str(self.request({"op": "callback", "step": step, "proceed": proceed})["status"])

    def close(self) -> None:
        self._drop()
