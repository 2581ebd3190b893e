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

With `DROVER_BYTECODE_CACHE` set (the machine's shared bytecode cache, `drover_bytecache`), it
first copies the cached bytecode of each file into place as the scan finds it, at the parent's
priority, so a new environment whose packages an earlier one compiled starts with their
bytecode; what is left it compiles as above. Before that it links in what the cache's record
of the environment's set of distributions names (`drover_bytecache.place_set`), and stops there
when that record covers the modules. `drover_compile.py --harvest MODULE...`, started after a
preload, stores the bytecode the environment now has for the files those modules reach into
that cache and records them in the set, at `os.nice(19)`, within `DROVER_BYTECODE_CACHE_SIZE`
bytes; it does nothing when the set covers the modules already.
"""

import os
import re
import signal
import sys
import sysconfig
from collections.abc import Iterator
from importlib.util import cache_from_source
from py_compile import PycInvalidationMode
from py_compile import compile as compile_file

import drover_bytecache

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


def _walk(modules: list[str], roots: dict[str, set[str]], skip: str | None = None) -> Iterator[str]:
    """Source files the modules and, transitively, their imports reach, in the order found;
    none below the directory `skip` (whose files' imports are not followed either)."""
    seen: set[str] = set()
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
            if path is None or (skip and path.startswith(skip)):
                continue
            yield path
            package = name if is_package else name.rpartition(".")[0]
            todo.extend(reversed(_imports(path, package)))


def _reached(modules: list[str], roots: dict[str, set[str]]) -> list[str]:
    return list(_walk(modules, roots))


def _needs_bytecode(path: str) -> bool:
    try:
        return os.stat(cache_from_source(path)).st_mtime < os.stat(path).st_mtime
    except OSError:
        return True


def _cache() -> tuple[str | None, int]:
    """The shared bytecode cache the agent named (`drover_bytecache`) and its size limit."""
    cache = os.environ.get("DROVER_BYTECODE_CACHE") or None
    try:
        limit = int(os.environ.get("DROVER_BYTECODE_CACHE_SIZE", ""))
    except ValueError:
        limit = 1 << 30
    return cache, limit


def _placed(files: Iterator[str], cache: str) -> list[str]:
    """Each file as the scan finds it, its cached bytecode placed first: the parent imports
    them in about this order, each slower than a copy, so it finds most of them compiled."""
    found: list[str] = []
    for path in files:
        if _stop:
            break
        drover_bytecache.place([path], cache)
        found.append(path)
    return found


def main() -> None:
    signal.signal(signal.SIGTERM, _on_term)
    if sys.dont_write_bytecode:
        return
    cache, limit = _cache()
    if sys.argv[1:2] == ["--harvest"]:
        # After a preload, on what nothing else wants.
        os.nice(19)
        modules = sys.argv[2:]
        if cache and not drover_bytecache.covers(cache, modules):
            drover_bytecache.harvest(_reached(modules, _roots()), cache, limit, modules)
        return
    # An environment whose set an earlier one recorded gets its bytecode without a scan of the
    # environment; the files outside it that the modules reach (the bundled SDK) are placed
    # as below.
    if cache and drover_bytecache.place_set(cache, sys.argv[1:])[1]:
        _placed(_walk(sys.argv[1:], _roots(), drover_bytecache.prefix()), cache)
        return
    cpus = len(os.sched_getaffinity(0))
    walk = _walk(sys.argv[1:], _roots())
    # Placing is much cheaper than compiling: it runs at the parent's priority, on one CPU too.
    reached = _placed(walk, cache) if cache else None
    # With one CPU there is none the parent leaves idle.
    if cpus < 2:
        return
    # Only the time the parent and the steps leave.
    os.nice(10)
    files = [f for f in (walk if reached is None else reached) if _needs_bytecode(f)]
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
