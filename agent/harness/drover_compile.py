"""Writes the bytecode of the modules a warm parent is about to import, on the CPUs it leaves idle.

The agent starts `python drover_compile.py MODULE...` in a step environment beside a warm
parent's preload of the same modules, and ends it (SIGTERM) when the preload is done. A parent
compiles every module it imports that has no bytecode yet, one after another on one CPU; this
process finds, without importing anything, the source files those imports are likely to reach
(the modules named, then whatever their sources import, followed through the environment's
packages) and compiles them from the end of that list, so the parent, importing from its
start, finds the later ones compiled. What it guesses wrong costs only its own CPU time: a
file it misses the parent compiles itself, one the parent never imports is bytecode written
early. Bytecode is written as an import writes it (`py_compile` with this interpreter's
settings: timestamp validation, `sys.pycache_prefix`, the optimisation level), and nothing at
all when `sys.dont_write_bytecode` is set. Each file's bytecode is written to a temporary
file and renamed into place, and a SIGTERM stops the work between two files, so the parent
never reads a half-written one and none is left behind.
"""

import os
import re
import signal
import sys
import sysconfig
from importlib.util import cache_from_source
from py_compile import PycInvalidationMode
from py_compile import compile as compile_file

# A line `import a.b, c` or `from .a import (b, c)` (names across lines inside parentheses), at
# any indentation; searched in bytes from a newline, several times faster than a `re.M` search
# of text.
_IMPORT = re.compile(
    rb"\n[ \t]*(?:import[ \t]+([\w. \t,]+)|from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*))"
)

_stop = False


def _on_term(_sig: int, _frame: object) -> None:
    global _stop
    _stop = True


def _roots() -> dict[str, set[str]]:
    """The directories searched, each with the names in it: the path without the
    interpreter's own library, whose modules were compiled when it was installed."""
    stdlib = tuple(os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib"))
    roots: dict[str, set[str]] = {}
    for entry in sys.path:
        real = os.path.realpath(entry or os.getcwd())
        if real.startswith(stdlib) and "site-packages" not in real:
            continue
        try:
            roots.setdefault(real, set(os.listdir(real)))
        except OSError:
            continue
    return roots


def _file_of(name: str, roots: dict[str, set[str]]) -> tuple[str | None, bool]:
    """The source file of module `name` (`__init__.py` of a package) and whether it is a
    package; `(None, False)` when it is not a source file under the `roots` (each with the
    names it holds)."""
    parts = name.split(".")
    for root, names in roots.items():
        if parts[0] not in names and parts[0] + ".py" not in names:
            continue
        base = os.path.join(root, *parts)
        init = os.path.join(base, "__init__.py")
        if os.path.isfile(init):
            return init, True
        if os.path.isfile(base + ".py"):
            return base + ".py", False
    return None, False


def _imports(path: str, package: str) -> list[str]:
    """The absolute names the source at `path` (a module of `package`) imports."""
    try:
        with open(path, "rb") as f:
            text = b"\n" + f.read()
    except OSError:
        return []
    names: list[str] = []
    for match in _IMPORT.finditer(text):
        plain, module_, what_ = (g.decode("ascii", "replace") if g else "" for g in match.groups())
        for part in plain.split(","):
            words = part.split()
            if words:
                names.append(words[0])
        if not match.group(2):
            continue
        module, what = module_, what_
        dots = len(module) - len(module.lstrip("."))
        if dots:
            base = package.split(".")
            if dots > 1:
                base = base[: len(base) - (dots - 1)]
            rest = module[dots:]
            module = ".".join(base + ([rest] if rest else []))
        if not module:
            continue
        names.append(module)
        for part in what.strip("()").replace("\n", ",").split(","):
            words = part.split("#")[0].split()
            if words and words[0].isidentifier():
                names.append(f"{module}.{words[0]}")
    return names


def _reached(modules: list[str], roots: dict[str, set[str]]) -> list[str]:
    """Source files the modules and, transitively, their imports reach, in the order found."""
    seen: set[str] = set()
    files: list[str] = []
    todo = list(reversed(modules))
    while todo:
        name = todo.pop()
        if name in seen or not all(p.isidentifier() for p in name.split(".")):
            continue
        seen.add(name)
        # A submodule's import runs its packages' `__init__` first.
        parents = name.split(".")
        for i in range(1, len(parents)):
            if ".".join(parents[:i]) not in seen:
                todo.append(name)
                todo.append(".".join(parents[:i]))
                seen.discard(name)
                break
        else:
            path, is_package = _file_of(name, roots)
            if path is None:
                continue
            files.append(path)
            package = name if is_package else name.rpartition(".")[0]
            todo.extend(reversed(_imports(path, package)))
    return files


def _needs_bytecode(path: str) -> bool:
    try:
        return os.stat(cache_from_source(path)).st_mtime < os.stat(path).st_mtime
    except OSError:
        return True


def main() -> None:
    signal.signal(signal.SIGTERM, _on_term)
    cpus = len(os.sched_getaffinity(0))
    # With one CPU there is none the parent leaves idle.
    if sys.dont_write_bytecode or cpus < 2:
        return
    # Only the time the parent and the steps leave.
    os.nice(10)
    files = [f for f in _reached(sys.argv[1:], _roots()) if _needs_bytecode(f)]
    # One worker per CPU the parent leaves, each taking every n-th file from the end.
    workers = cpus - 1
    stripe = 0
    for n in range(1, workers):
        if os.fork() == 0:
            stripe = n
            break
    for path in list(reversed(files))[stripe::workers]:
        if _stop:
            break
        if not _needs_bytecode(path):  # the parent got there first
            continue
        try:
            compile_file(path, invalidation_mode=PycInvalidationMode.TIMESTAMP, quiet=2)
        except Exception:  # a file the parent will fail on or compile itself
            pass
    if stripe:
        os._exit(0)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break


if __name__ == "__main__":
    main()
