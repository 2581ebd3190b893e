"""`${pipeline.PARAM}`, `${STEP.OUTPUT}`, `${STEP.id}` and `${STEP.artifacts.NAME.url}`
references, parsed exactly as the controller parses them.

Only `${NAME.NAME}` (letters, digits, `_`, `-`, `.`; split at the first dot) is a reference;
other `${...}` text stays as written, so shell variables keep working, and `$${` writes a
literal `${`. After `STEP.`, `id` is the step's task id and `artifacts.NAME.url` the URL of one
of its artifacts (the controller fills both in when it dispatches the consuming step); anything
else is an output. The cases in `protocol/tests/golden/cases/refs.json` pin this for both sides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")


@dataclasses.dataclass(frozen=True)
class Param:
    """`${pipeline.NAME}`: a pipeline parameter."""

    name: str

    def __str__(self) -> str:
        return f"${{pipeline.{self.name}}}"


@dataclasses.dataclass(frozen=True)
class Output:
    """`${STEP.OUTPUT}`: the local path (or, as a whole kwarg, the value) of a step's output."""

    step: str
    output: str

    def __str__(self) -> str:
        return f"${{{self.step}.{self.output}}}"

    @property
    def key(self) -> str:
        """`STEP.OUTPUT`, the key of this input in a step's job."""
        return f"{self.step}.{self.output}"


@dataclasses.dataclass(frozen=True)
class StepId:
    """`${STEP.id}`: the step's task id, `<run id>/<step>`."""

    step: str

    def __str__(self) -> str:
        return f"${{{self.step}.id}}"

    @property
    def key(self) -> str:
        return f"{self.step}.id"


@dataclasses.dataclass(frozen=True)
class ArtifactUrl:
    """`${STEP.artifacts.NAME.url}`: the URL the controller serves one of the step's artifacts at."""

    step: str
    artifact: str

    def __str__(self) -> str:
        return f"${{{self.key}}}"

    @property
    def key(self) -> str:
        return f"{self.step}.artifacts.{self.artifact}.url"


Reference = Param | Output | StepId | ArtifactUrl
# A piece of a template: plain text (a str) or a reference.
Part = str | Param | Output | StepId | ArtifactUrl


def is_reference_name(text: str) -> bool:
    """Whether `text` may appear between `${` and `}`: letters, digits, `_`, `-` and `.`."""
    return bool(text) and all(c in _NAME_CHARS for c in text)


def _reference_at(text: str, start: int) -> tuple[Reference, int] | None:
    """The reference `${a.b}` at `text[start:]` and the index just past it, or None."""
    if not text.startswith("${", start):
        return None
    end = text.find("}", start + 2)
    if end < 0:
        return None
    inner = text[start + 2 : end]
    if not is_reference_name(inner):
        return None
    head, dot, tail = inner.partition(".")
    if not dot or not head or not tail:
        return None
    return _reference(head, tail), end + 1


def _reference(head: str, tail: str) -> Reference:
    if head == "pipeline":
        return Param(tail)
    if tail == "id":
        return StepId(head)
    if tail.startswith("artifacts.") and tail.endswith(".url") and len(tail) > len("artifacts..url"):
        return ArtifactUrl(head, tail[len("artifacts."):-len(".url")])
    return Output(head, tail)


def parse(text: str) -> list[Part]:
    """Splits `text` into plain text and references, in order; adjacent text is joined."""
    parts: list[Part] = []
    pending: list[str] = []
    at = 0
    while True:
        dollar = text.find("$", at)
        if dollar < 0:
            break
        pending.append(text[at:dollar])
        if text.startswith("$${", dollar):
            pending.append("${")
            at = dollar + 3
            continue
        found = _reference_at(text, dollar)
        if found is None:
            pending.append("$")
            at = dollar + 1
            continue
        reference, at = found
        if "".join(pending):
            parts.append("".join(pending))
        pending = []
        parts.append(reference)
    pending.append(text[at:])
    if "".join(pending):
        parts.append("".join(pending))
    return parts


def references(text: str) -> list[Reference]:
    """Every reference in `text`, in order."""
    return [part for part in parse(text) if not isinstance(part, str)]


def whole_output(text: str) -> Output | None:
    """The output reference when `text` is exactly one `${STEP.OUTPUT}`: such a kwarg gets the
    output's value instead of its path."""
    parts = parse(text)
    if len(parts) == 1 and isinstance(parts[0], Output):
        return parts[0]
    return None


def render(text: str, resolve: Callable[[Reference], str | None]) -> str:
    """Replaces each reference with `resolve(reference)`; None keeps it as written. `$${`
    becomes `${`, and values are not parsed again."""
    pieces: list[str] = []
    for part in parse(text):
        if isinstance(part, str):
            pieces.append(part)
        else:
            value = resolve(part)
            pieces.append(str(part) if value is None else value)
    return "".join(pieces)


def escape(text: str) -> str:
    """`text` with `${` escaped, so it survives `render` as plain text."""
    return text.replace("${", "$${")


def render_partial(text: str, resolve: Callable[[Reference], str | None]) -> str:
    """Like `render`, but the result is still a template (as the controller substitutes
    parameters before the agent resolves outputs): known references become their escaped
    values, unknown ones stay references and literal `${` stays escaped."""
    pieces: list[str] = []
    for part in parse(text):
        if isinstance(part, str):
            pieces.append(escape(part))
        else:
            value = resolve(part)
            pieces.append(str(part) if value is None else escape(value))
    return "".join(pieces)
