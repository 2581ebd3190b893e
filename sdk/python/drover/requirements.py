"""Which pip requirements a function step needs: detected from its imports, pinned to this machine.

Steps run on agents in an environment built from these requirements, so pinning them to the
versions installed where the pipeline is submitted gives the agents the same libraries.
"""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
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
