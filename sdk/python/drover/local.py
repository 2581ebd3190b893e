"""Running a whole pipeline in this process, without broker or controller, the way agents would.

Each step runs from its shipped source (not the live function object), so a step that is not
self-contained fails here as it would on an agent. Values cross steps through pickle files,
as artifacts do.
"""
import json
import linecache
import os
import pickle
import tempfile
import traceback
import warnings

from . import refs


class StepFailed(Exception):
    """A step raised, or returned something that does not match its return names."""


def topological(steps):
    """Steps parents-first, keeping the order they were added among independent ones."""
    done, ordered, pending = set(), [], list(steps)
    while pending:
        ready = [s for s in pending if set(s.all_parents()) <= done]
        if not ready:
            names = ", ".join(s.name for s in pending)
            raise ValueError(f"steps {names} wait on each other (a cycle)")
        for s in ready:
            ordered.append(s)
            done.add(s.name)
        pending = [s for s in pending if s.name not in done]
    return ordered


def _load_function(step):
    """Defines the step's source in a fresh namespace and returns its entry function."""
    filename = f"<drover step {step.name}>"
    linecache.cache[filename] = (len(step.source), None, step.source.splitlines(True), filename)
    namespace = {"__name__": f"drover_step_{step.name}"}
    exec(compile(step.source, filename, "exec"), namespace)
    return namespace[step.entry]


class LocalRun:
    """One in-process run: step statuses, the pickle file of every output, and the values."""

    def __init__(self, steps, params, report=print):
        self.steps = topological(steps)
        self.params = params
        self.report = report
        self.status = {s.name: "pending" for s in self.steps}
        self.outputs = {}  # (step, output) -> pickle path
        self.values = {}  # step -> {output: value}, once the run ended
        self.ok = None
        self.dir = None

    def _resolve_kwarg(self, step, name, text):
        value = json.loads(text)
        if not isinstance(value, str):
            return value
        whole = refs.whole_reference(value)
        if whole is not None:
            with open(self.outputs[whole], "rb") as f:
                return pickle.load(f)

        def resolve(head, tail):
            if head == "pipeline":
                return self.params.get(tail)
            return self.outputs.get((head, tail))

        return refs.render(value, resolve)

    def _store(self, step, result):
        names = step.returns
        if not names:
            return
        if len(names) == 1:
            values = [result]
        else:
            try:
                values = list(result)
            except TypeError:
                values = None
            if values is None or len(values) != len(names):
                got = type(result).__name__ if values is None else f"{len(values)} values"
                raise StepFailed(
                    f"step {step.name!r} returns {names} ({len(names)} values) but its function "
                    f"returned {got}"
                )
        os.makedirs(os.path.join(self.dir, step.name), exist_ok=True)
        for name, value in zip(names, values):
            path = os.path.join(self.dir, step.name, f"{name}.pkl")
            with open(path, "wb") as f:
                pickle.dump(value, f)
            self.outputs[(step.name, name)] = path

    def _attempt(self, step):
        function = _load_function(step)
        kwargs = {k: self._resolve_kwarg(step, k, v) for k, v in step.kwargs.items()}
        self._store(step, function(**kwargs))

    def _run_step(self, step):
        """Runs one step with its retries; returns whether it succeeded."""
        if step.timeout:
            warnings.warn(f"step {step.name!r}: time_limit is not enforced when running locally", stacklevel=2)
        for attempt in range(1, step.retries + 2):
            self._set(step.name, "running")
            try:
                self._attempt(step)
                self._set(step.name, "succeeded")
                return True
            except Exception:  # the step's own error: report it like an agent would
                traceback.print_exc()
                if attempt <= step.retries:
                    self.report(f"  {step.name}: retrying (attempt {attempt + 1} of {step.retries + 1})")
        self._set(step.name, "failed")
        return False

    def _set(self, name, status):
        self.status[name] = status
        self.report(f"  {name}: {status}")

    def _skip_blocked(self, step):
        """Skips a step when a parent did not succeed; returns whether it did."""
        bad = [p for p in step.all_parents() if self.status[p] != "succeeded"]
        if bad:
            self._set(step.name, "skipped")
        return bool(bad)

    def run(self):
        """Runs every step; returns True when the run succeeded.

        A failing step stops the run (the remaining steps are skipped) unless it has
        continue_on_fail, in which case only the steps that depend on it are skipped.
        """
        stop = False
        with tempfile.TemporaryDirectory(prefix="drover-local-") as self.dir:
            for step in self.steps:
                if stop or self._skip_blocked(step):
                    if self.status[step.name] == "pending":
                        self._set(step.name, "skipped")
                    continue
                if not self._run_step(step) and not step.continue_on_fail:
                    stop = True
            self.values = self._read_values()
        self.ok = not stop
        return self.ok

    def _read_values(self):
        """Every output's value, read back before the temporary directory goes away."""
        values = {}
        for (step, name), path in self.outputs.items():
            with open(path, "rb") as f:
                values.setdefault(step, {})[name] = pickle.load(f)
        return values
