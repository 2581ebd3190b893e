"""`${pipeline.PARAM}` and `${STEP.OUTPUT}` references in kwargs, parsed as the controller does.

Only `${NAME.NAME}` (letters, digits, `_`, `-`, `.`) is a reference; other `${...}` text stays
as written, and `$${` writes a literal `${`.
"""
import re

_REF = re.compile(r"\$\$\{|\$\{([A-Za-z0-9_.-]+)\}")


def _split(inner):
    """`a.b.c` -> ("a", "b.c"), or None when it is not a reference."""
    head, dot, tail = inner.partition(".")
    if not dot or not head or not tail:
        return None
    return head, tail


def references(text):
    """Every reference in `text` as (head, tail) pairs: head is `pipeline` or a step name."""
    found = []
    for m in _REF.finditer(text):
        if m.group(1) is not None:
            ref = _split(m.group(1))
            if ref is not None:
                found.append(ref)
    return found


def whole_reference(text):
    """(step, output) when `text` is exactly one `${STEP.OUTPUT}`: such a kwarg gets the value."""
    m = _REF.fullmatch(text)
    if m is None or m.group(1) is None:
        return None
    ref = _split(m.group(1))
    if ref is None or ref[0] == "pipeline":
        return None
    return ref


def render(text, resolve):
    """Replaces each reference with `resolve(head, tail)`; None keeps it as written; `$${` -> `${`."""

    def replace(m):
        if m.group(1) is None:
            return "${"
        ref = _split(m.group(1))
        if ref is None:
            return m.group(0)
        value = resolve(*ref)
        return m.group(0) if value is None else value

    return _REF.sub(replace, text)
