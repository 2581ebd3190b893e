"""A running pipeline function's side of a dynamic run: component calls become steps over the channel.

Each component call asks the agent to `add_step` with its call key: the call's position in this
process (`seq`, from 0), the component's name and a digest of its arguments that is the same in
every process given the same values (see `call_digest`). The answer names the step; its return
values come back as lazy values. A value that is not a JSON literal is pickled, stored with
`put` and passed as a blob. While the answers say `existing: true` the function is replaying a
lost attempt's calls, and every line it prints is marked `[replay] `.
"""

from __future__ import annotations

import contextvars
import hashlib
import io
import json
import math
import os
import pickle
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .channel import Client
from .lazy import LazyValue

if TYPE_CHECKING:
    from .watch import Watch

TERMINAL = ("succeeded", "cached", "failed", "skipped", "aborted")
SUCCEEDED = ("succeeded", "cached")
REPLAY_PREFIX = "[replay] "

current: contextvars.ContextVar[Session | None] = contextvars.ContextVar("drover_session", default=None)


class ComponentFailed(RuntimeError):
    """A component step did not succeed; raised where its value is used."""

    def __init__(self, step: str, status: str, message: str | None) -> None:
        why = f": {message}" if message else ""
        super().__init__(f"component step {step!r} {status}{why}")
        self.step, self.status = step, status


def is_literal(value: object) -> bool:
    """Whether `value` survives a JSON round trip unchanged (and holds no `${` a step would read
    as a reference): None, bool, int, finite float, str, and lists and str-keyed dicts of them."""
    if value is None or type(value) in (bool, int):
        return True
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is str:
        return "${" not in value
    if type(value) is list:
        return all(is_literal(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and is_literal(v) for k, v in value.items())
    return False


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def call_digest(encoded: Mapping[str, str]) -> str:
    """sha256 over each kwarg's name and encoding (reference text, canonical JSON, or the
    sha256 of its pickle), in name order."""
    h = hashlib.sha256()
    for name in sorted(encoded):
        h.update(name.encode("utf-8") + b"\0" + encoded[name].encode("utf-8") + b"\n")
    return h.hexdigest()


def pickled(value: object) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


class Session:
    """One process's pipeline function (a driver) or component (for nested calls)."""

    def __init__(self, client: Client, workdir: str, default_queue: str | None = None,
                 replaying: bool = False) -> None:
        self.client = client
        self.workdir = workdir
        self.default_queue = default_queue
        self.replaying = replaying
        self._seq = 0
        self._lock = threading.Lock()
        self._views: dict[str, dict[str, Any]] = {}
        self.requirements: dict[str, list[str]] = {}  # step -> its requirements
        self.steps: list[str] = []
        self.producers: dict[str, list[str]] = {}  # step -> the steps whose values it takes
        # The components' callbacks, in the process running the pipeline function (not in a
        # component's nested calls); see `drover.watch`.
        self.watch: Watch | None = None
        self.run_id: str | None = None

    # -- calls ------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        with self._lock:
            seq = self._seq
            self._seq += 1
            return seq

    def encode(self, component: str, kwargs: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, Any],
                                                                          dict[str, str], list[str]]:
        """(kwargs as JSON text, blobs, digest encodings, referenced steps) for one call."""
        texts: dict[str, str] = {}
        blobs: dict[str, Any] = {}
        encoded: dict[str, str] = {}
        producers: list[str] = []
        for name in sorted(kwargs):
            value = kwargs[name]
            reference = LazyValue.reference_of(value)
            if reference is not None:
                texts[name] = encoded[name] = json.dumps(reference)
                producers.append(reference[2:].split(".", 1)[0])
            elif is_literal(value):
                texts[name] = encoded[name] = canonical_json(value)
            else:
                data = pickled(value)
                digest = hashlib.sha256(data).hexdigest()
                folder = os.path.join(self.workdir, "_blobs")
                os.makedirs(folder, exist_ok=True)
                path = os.path.join(folder, f"{digest}.pkl")
                with open(path, "wb") as f:
                    f.write(data)
                blobs[name] = self.client.put(path)
                encoded[name] = f"blob:{digest}"
        return texts, blobs, encoded, producers

    def call(self, component: Any, kwargs: Mapping[str, Any]) -> Any:
        """Adds the step for one component call; its return values as lazy values."""
        seq = self._next_seq()
        texts, blobs, encoded, producers = self.encode(component.name, kwargs)
        requirements = component.requirements_for(kwargs, [self.requirements.get(p, []) for p in producers])
        spec = component.step_spec(texts, blobs, requirements, self.default_queue)
        callbacks = dict(getattr(component, "callbacks", None) or {}) if self.watch is not None else {}
        if "pre_execute_callback" in callbacks:
            spec["await_callback"] = True  # held by the controller until the watch answers
        call = {"seq": seq, "component": component.name, "digest": call_digest(encoded)}
        if callbacks and self.watch is not None:
            self.watch.expect(seq, spec, callbacks)
        name, existing = self.client.add_step(call, spec)
        if not existing:
            self.replaying = False
        self.requirements[name] = requirements
        self.producers[name] = producers
        if callbacks and self.watch is not None:
            self.watch.bind(seq, name)
            if self.run_id is not None:
                self.watch.follow(self.client, self.run_id)
        self.steps.append(name)
        values = [LazyValue(f"${{{name}.{r}}}", self._loader(name, r)) for r in component.return_values]
        if not values:
            return None
        return values[0] if len(values) == 1 else tuple(values)

    # -- results ----------------------------------------------------------------------------

    def view(self, step: str) -> dict[str, Any]:
        """The step's view once it is terminal (asked once per step)."""
        cached = self._views.get(step)
        if cached is None:
            cached = self.client.wait(step)
            self._views[step] = cached
        return cached

    def _loader(self, step: str, output: str) -> Any:
        return lambda: self.load(step, output)

    def declined(self, step: str) -> bool:
        """Whether the step was skipped by its pre_execute_callback, or because a step whose
        values it takes was: its values are then None, as in ClearML."""
        if self.watch is None:
            return False
        if self.watch.declined(step):
            return True
        return (str(self.view(step).get("status")) == "skipped"
                and any(self.declined(p) for p in self.producers.get(step, [])))

    def load(self, step: str, output: str) -> Any:
        view = self.view(step)
        status = str(view.get("status"))
        if status not in SUCCEEDED and self.declined(step):
            return None
        if status not in SUCCEEDED:
            raise ComponentFailed(step, status, view.get("message"))
        artifact = (view.get("outputs") or {}).get(output)
        if artifact is None:
            raise ComponentFailed(step, f"stored no output {output!r}", None)
        folder = os.path.join(self.workdir, "_values")
        os.makedirs(folder, exist_ok=True)
        dest = os.path.join(folder, f"{step}.{output}.pkl")
        self.client.get(artifact, dest)
        with open(dest, "rb") as f:
            return pickle.load(f)

    def wait_all(self) -> list[tuple[str, str]]:
        """Waits for every step this session added; (step, status) of those that did not succeed."""
        bad = []
        for step in list(self.steps):
            status = str(self.view(step).get("status"))
            if status not in SUCCEEDED and not self.declined(step):
                bad.append((step, status))
        if self.watch is not None:
            self.watch.finish()
        return bad


class ReplayMarker(io.TextIOBase):
    """A text stream that prefixes each line with `[replay] ` while its session replays."""

    def __init__(self, inner: Any, session: Session) -> None:
        self.inner = inner
        self.session = session
        self.at_line_start = True

    def write(self, text: str) -> int:
        if not self.session.replaying:
            self.at_line_start = text.endswith("\n") if text else self.at_line_start
            return int(self.inner.write(text))
        out = []
        for line in text.splitlines(keepends=True):
            if self.at_line_start:
                out.append(REPLAY_PREFIX)
            out.append(line)
            self.at_line_start = line.endswith("\n")
        self.inner.write("".join(out))
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def fileno(self) -> int:
        return int(self.inner.fileno())

    def isatty(self) -> bool:
        return False


def mark_replays(session: Session) -> None:
    """Marks what this process prints while `session` replays."""
    sys.stdout = ReplayMarker(sys.stdout, session)
    sys.stderr = ReplayMarker(sys.stderr, session)
