"""Which pip requirements a function step needs: detected from its imports, pinned to this machine.

Steps run on agents in an environment built from these requirements, so pinning them to the
versions installed where the pipeline is submitted gives the agents the same libraries.
"""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import re
import sys
import warnings
from collections.abc import Iterable

# Provided to every step by the agent, or not a distribution at all.
_ALWAYS_THERE = {"drover", "__future__", "__main__"}

_DIST_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def imported_modules(source: str) -> set[str]:
    """Top-level names of the absolute imports in `source` (`import a.b` and `from a import c` -> `a`)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def canonical(dist: str) -> str:
    """The comparable form of a distribution name (PEP 503): `Scikit_Learn` -> `scikit-learn`."""
    return re.sub(r"[-_.]+", "-", dist).lower()


def dist_name(requirement: str) -> str:
    """The distribution a requirement string names: `pandas>=2; python_version>'3'` -> `pandas`."""
    m = _DIST_NAME.match(requirement)
    return canonical(m.group(1)) if m else canonical(requirement.strip())


def _pick_distribution(module: str, candidates: list[str]) -> str:
    """The distribution that provides `module`, preferring one named like it when several do."""
    for dist in candidates:
        if canonical(dist) == canonical(module):
            return dist
    return sorted(candidates)[0]


def _importable(module: str) -> bool:
    """Whether `module` can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def detect(source: str, step: str) -> list[str]:
    """Pinned requirements for the third-party imports of `source`.

    Standard-library modules and drover itself are dropped. Each module maps to the distribution
    that installed it (`sklearn` -> `scikit-learn==1.7.2`). A module that is not installed here
    is kept as its bare name, with a warning, since pip may still find it. A module importable
    here but installed by no distribution (a local file) is left out with a warning: the agent
    cannot get it, so the step must not need it.
    """
    owners = importlib.metadata.packages_distributions()
    found: dict[str, str] = {}
    for module in sorted(imported_modules(source)):
        if module in sys.stdlib_module_names or module in _ALWAYS_THERE:
            continue
        if module in owners:
            dist = _pick_distribution(module, owners[module])
            version = importlib.metadata.version(dist)
            found.setdefault(canonical(dist), f"{dist}=={version}")
        elif _importable(module):
            warnings.warn(
                f"step {step!r} imports {module!r}, a local module that no installed distribution "
                "provides: agents will not have it; make the step self-contained or pass packages=",
                stacklevel=4,
            )
        else:
            warnings.warn(
                f"step {step!r} imports {module!r}, which is not installed here: requiring it "
                f"unpinned as {module!r}; pass packages= to name the right distribution",
                stacklevel=4,
            )
            found.setdefault(canonical(module), module)
    return [found[k] for k in sorted(found)]


def from_argument(packages: str | os.PathLike[str] | Iterable[object], step: str) -> list[str]:
    """`packages=` as a list of requirement strings, or the lines of a requirements file."""
    if isinstance(packages, (str, os.PathLike)):
        path = os.fspath(packages)
        if not os.path.isfile(path):
            raise ValueError(f"step {step!r}: packages={path!r} is not a requirements file")
        with open(path, encoding="utf-8") as f:
            lines = [re.sub(r"(^|\s)#.*", "", line).strip() for line in f]
        packages = [line for line in lines if line]
    requirements = []
    for req in packages:
        if not isinstance(req, str) or not req.strip():
            raise ValueError(f"step {step!r}: packages holds {req!r}, not a requirement string")
        if req.lstrip().startswith("-"):
            raise ValueError(
                f"step {step!r}: pip option {req!r} in packages is not supported; "
                "list requirement specifiers only"
            )
        why = problem(req)
        if why is not None:
            raise ValueError(
                f"step {step!r}: packages holds {req!r}, which {why}; give PEP 508 specifiers "
                "such as 'pandas==2.3.3' or 'name @ https://...'"
            )
        requirements.append(req.strip())
    return requirements


def merge(own: Iterable[str], inherited: Iterable[str], step: str) -> list[str]:
    """`own` plus `inherited` requirements, one per distribution (own first), sorted by name.

    When two inherited lists pin one distribution differently the first wins, with a warning.
    """
    chosen: dict[str, str] = {}
    for req in own:
        chosen.setdefault(dist_name(req), req)
    own_names = set(chosen)
    for req in inherited:
        name = dist_name(req)
        if name in chosen and chosen[name] != req and name not in own_names:
            warnings.warn(
                f"step {step!r} inherits both {chosen[name]!r} and {req!r}; using {chosen[name]!r}",
                stacklevel=4,
            )
        chosen.setdefault(name, req)
    return [chosen[k] for k in sorted(chosen)]


# The PEP 508 check: the same grammar as the controller's (protocol/src/validate/requirement.rs),
# pinned for both by protocol/tests/golden/cases/validate.json.

MAX_REQUIREMENT_LEN = 1000

_ENV_VARS = frozenset({
    "python_version", "python_full_version", "os_name", "sys_platform", "platform_release",
    "platform_system", "platform_version", "platform_machine", "platform_python_implementation",
    "implementation_name", "implementation_version", "extra",
})
_COMPARISONS = ("===", "==", "!=", "<=", ">=", "~=", "<", ">")
_IDENTIFIER = re.compile(r"[A-Za-z0-9._-]*")
_VERSION = re.compile(r"[A-Za-z0-9_.*+!-]*")
_WORD = re.compile(r"[A-Za-z0-9_]*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*\Z")


class _Refused(Exception):
    pass


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def unexpected(self, wanted: str) -> _Refused:
        if self.i >= len(self.s):
            return _Refused(f"ends where {wanted} was expected")
        rest = json.dumps(self.s[self.i:])
        return _Refused(f"has {rest} at byte {self.i} where {wanted} was expected")

    def wsp(self) -> None:
        while self.peek() in (" ", "\t") and self.peek():
            self.i += 1

    def at_end_after_wsp(self) -> bool:
        self.wsp()
        return self.i >= len(self.s)

    def eat(self, token: str) -> bool:
        if self.s.startswith(token, self.i):
            self.i += len(token)
            return True
        return False

    def identifier(self, what: str) -> None:
        m = _IDENTIFIER.match(self.s, self.i)
        word = m.group(0) if m else ""
        if not word or not word[0].isalnum() or not word[-1].isalnum():
            raise self.unexpected(what)
        self.i += len(word)

    def extras(self) -> None:
        self.i += 1
        self.wsp()
        if self.eat("]"):
            return
        while True:
            self.identifier("an extra's name")
            self.wsp()
            if self.eat("]"):
                return
            if not self.eat(","):
                raise self.unexpected("',' or ']'")
            self.wsp()

    def url(self) -> None:
        start = self.i
        while self.peek() and self.peek() not in " \t":
            self.i += 1
        scheme, sep, rest = self.s[start:self.i].partition("://")
        if not (sep and rest and _SCHEME.match(scheme)):
            self.i = start
            raise self.unexpected("a URL with a scheme (`name @ https://...`)")

    def comparison(self) -> bool:
        return any(self.eat(op) for op in _COMPARISONS)

    def version_spec(self) -> None:
        parenthesised = self.eat("(")
        while True:
            self.wsp()
            if not self.comparison():
                raise self.unexpected("a version comparison (==, >=, ~=, ...)")
            self.wsp()
            m = _VERSION.match(self.s, self.i)
            if not m or not m.group(0):
                raise self.unexpected("a version")
            self.i += len(m.group(0))
            self.wsp()
            if not self.eat(","):
                break
        if parenthesised and not self.eat(")"):
            raise self.unexpected("')'")

    def marker_clause(self) -> None:
        if not self.eat(";"):
            raise self.unexpected("a version comparison, '@ URL' or '; marker'")
        self.wsp()
        self.marker_or()

    def keyword(self, word: str) -> bool:
        save = self.i
        self.wsp()
        if self.eat(word) and not (self.peek().isalnum() or self.peek() == "_"):
            self.wsp()
            return True
        self.i = save
        return False

    def marker_or(self) -> None:
        self.marker_and()
        while self.keyword("or"):
            self.marker_and()

    def marker_and(self) -> None:
        self.marker_expr()
        while self.keyword("and"):
            self.marker_expr()

    def not_in(self) -> bool:
        save = self.i
        if self.eat("not"):
            gap = self.i
            self.wsp()
            if self.i > gap and self.eat("in"):
                return True
        self.i = save
        return False

    def marker_expr(self) -> None:
        self.wsp()
        if self.eat("("):
            self.wsp()
            self.marker_or()
            self.wsp()
            if not self.eat(")"):
                raise self.unexpected("')'")
            return
        self.marker_var()
        self.wsp()
        if not (self.comparison() or self.keyword("in") or self.not_in()):
            raise self.unexpected("a marker operator (==, in, not in, ...)")
        self.wsp()
        self.marker_var()

    def marker_var(self) -> None:
        quote = self.peek()
        if quote in ("'", '"') and quote:
            end = self.s.find(quote, self.i + 1)
            if end < 0:
                raise self.unexpected("a closed string")
            self.i = end + 1
            return
        m = _WORD.match(self.s, self.i)
        if not m or m.group(0) not in _ENV_VARS:
            raise self.unexpected(
                "a marker variable (python_version, sys_platform, ...) or a quoted string")
        self.i += len(m.group(0))


def _check(p: _Parser) -> None:
    p.wsp()
    if p.peek() == "-":
        raise _Refused("starts with '-': installer options are not requirements")
    p.identifier("a distribution name")
    p.wsp()
    if p.peek() == "[":
        p.extras()
        p.wsp()
    if p.peek() == "@":
        p.i += 1
        p.wsp()
        p.url()
        if p.at_end_after_wsp():
            return
        if p.s[p.i - 1] not in " \t":
            raise p.unexpected("whitespace before ';' after a URL")
        p.marker_clause()
    else:
        if p.peek() and p.peek() in "(<>=!~":
            p.version_spec()
            p.wsp()
        if p.peek():
            p.marker_clause()
    if not p.at_end_after_wsp():
        raise p.unexpected("the end")


def problem(text: str) -> str | None:
    """None for a PEP 508 requirement, else why not: options, paths and bare URLs are refused."""
    if len(text.encode("utf-8")) > MAX_REQUIREMENT_LEN:
        return f"is longer than {MAX_REQUIREMENT_LEN} bytes"
    for c in text:
        if not (" " <= c <= "~" or c == "\t"):
            return f"holds {c!r}: only printable ASCII is allowed in a requirement"
    try:
        _check(_Parser(text))
    except _Refused as e:
        return str(e)
    return None
