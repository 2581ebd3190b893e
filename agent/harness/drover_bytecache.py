"""A bytecode cache shared by every environment of a machine, keyed by the source's content.

Package files are the same in every environment uv builds from its cache (it links them), but
each environment's `__pycache__` starts empty, so each new environment compiled the same
modules again. This cache keeps, per interpreter cache tag (`cpython-311`, with `.opt-N` under
`-O`) and sha256 of a source file's bytes, that source's bytecode as a checked-hash pyc (PEP 552:
flags 0b11, the header holding `importlib.util.source_hash` of the source). Python checks such a
pyc against the source at every import and compiles the source itself when it differs, so an
entry can only ever be used for the source it was made from.

- `place(files, cache)`: for each source file without current bytecode, copies its entry (if
  any, and only if whole: right magic number, flags and source hash, and a code object inside)
  into the file's `__pycache__`, through a temporary file renamed into place.
- `harvest(files, cache, limit)`: stores the current bytecode of each file not in the cache yet
  (a timestamp pyc matching the source's mtime and size, with its header rewritten to the
  checked-hash one; a checked-hash pyc matching the source as it is), then removes the least
  recently used entries (by mtime; `place` touches what it uses) while the cache holds more
  than `limit` bytes. One harvest at a time per cache (a lock; a second one waits for it).
- Sets. A harvest also records, per set of installed distributions (the `*.dist-info` names of
  the environment's site directories, so every environment of a machine built from the same
  requirements shares one), which entry serves which file of the environment, as paths below
  `sys.prefix`, and which modules' imports it followed. `place_set` links those entries into a
  new environment of the same set without reading a source: a path, a size and a link per file.
  Python still checks each against its source at import, so a wrong guess costs a compile,
  never stale code.

The directory is made private to its user (mode 700): whoever can write into it chooses the
code that imports of matching sources run.
"""

import fcntl
import hashlib
import marshal
import os
import sys
import types
from collections.abc import Iterable
from importlib.util import MAGIC_NUMBER, cache_from_source, source_hash

# A checked-hash pyc: hash-based (0b01), checked against the source at import (0b10).
CHECKED_HASH = 0b11
HEADER = 16


def tag() -> str:
    """The directory of this interpreter's entries: its cache tag and optimisation level."""
    optimize = sys.flags.optimize
    suffix = f".opt-{optimize}" if optimize else ""
    return f"{sys.implementation.cache_tag}{suffix}"


def entry_of(cache: str, source: bytes) -> str:
    digest = hashlib.sha256(source).hexdigest()
    return os.path.join(cache, tag(), digest[:2], digest[2:] + ".pyc")


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _write_atomic(path: str, data: bytes, durable: bool = False) -> None:
    """Writes `path` whole or not at all: a reader sees the old file or the new one; `durable`
    also after a crash (the data reaches the disk before the name does)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(temp, path)
    except OSError:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def valid(data: bytes, source: bytes) -> bool:
    """Whether `data` is a whole checked-hash pyc of this interpreter for `source`."""
    if len(data) <= HEADER or data[:4] != MAGIC_NUMBER:
        return False
    if int.from_bytes(data[4:8], "little") != CHECKED_HASH:
        return False
    if data[8:16] != source_hash(source):
        return False
    try:
        return isinstance(marshal.loads(data[HEADER:]), types.CodeType)
    except (EOFError, ValueError, TypeError):
        return False


def _current(pyc: bytes, path: str, source: bytes) -> bool:
    """Whether `pyc`, read from `path`'s `__pycache__`, is the bytecode of `source` as an import
    would accept it (a timestamp pyc matching the file's mtime and size, or a hash-based one
    matching its bytes)."""
    if len(pyc) <= HEADER or pyc[:4] != MAGIC_NUMBER:
        return False
    flags = int.from_bytes(pyc[4:8], "little")
    if flags & 0b1:
        return pyc[8:16] == source_hash(source)
    if flags:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    mtime = int(st.st_mtime) & 0xFFFFFFFF
    size = st.st_size & 0xFFFFFFFF
    return (
        int.from_bytes(pyc[8:12], "little") == mtime
        and int.from_bytes(pyc[12:16], "little") == size
        and size == len(source) & 0xFFFFFFFF
    )


def place(files: Iterable[str], cache: str) -> int:
    """Copies the cached bytecode of each of `files` (source paths) that has none that is
    current into its `__pycache__`; returns how many were placed. A missing, stale, corrupt or
    truncated entry is skipped (a bad one removed), leaving the file to be compiled."""
    placed = 0
    for path in files:
        target = cache_from_source(path)
        try:
            if os.stat(target).st_mtime >= os.stat(path).st_mtime:
                continue
        except OSError:
            pass
        source = _read(path)
        if source is None:
            continue
        entry = entry_of(cache, source)
        data = _read(entry)
        if data is None:
            continue
        if not valid(data, source):
            try:
                os.unlink(entry)
            except OSError:
                pass
            continue
        try:
            _write_atomic(target, data)
            os.utime(entry)
        except OSError:
            continue
        placed += 1
    return placed


def harvest(files: Iterable[str], cache: str, limit: int, modules: Iterable[str] = ()) -> int:
    """Stores the current bytecode of `files` that the cache lacks, records the environment's
    set (`record`) when `modules` are the imports `files` were found from, then keeps the cache
    within `limit` bytes; returns how many entries were added."""
    os.makedirs(cache, mode=0o700, exist_ok=True)
    with open(os.path.join(cache, "harvest.lock"), "wb") as lock:
        # A second preload's harvest waits: returning would leave its modules out of the
        # environment's set until some later agent imports them again.
        fcntl.flock(lock, fcntl.LOCK_EX)
        added = 0
        served: list[tuple[str, str]] = []
        lost: list[str] = []
        where = _location(cache)
        recorded = _read_set(where[1]) if where else ({}, set())
        known = {f"{digest[2:]}.pyc" for digest, _ in recorded[0].values()}
        for path in files:
            source = _read(path)
            if source is None:
                continue
            entry = entry_of(cache, source)
            if os.path.exists(entry):
                # A set names only whole entries: one it does not name yet is checked first
                # (entries written before sets were may not have reached the disk whole).
                if os.path.basename(entry) in known or valid(_read(entry) or b"", source):
                    served.append((path, entry))
                    continue
            pyc = _read(cache_from_source(path))
            if pyc is None or not _current(pyc, path, source):
                continue
            data = MAGIC_NUMBER + CHECKED_HASH.to_bytes(4, "little") + source_hash(source)
            data += pyc[HEADER:]
            try:
                if not valid(data, source):
                    raise OSError("not a whole pyc")
                _write_atomic(entry, data, durable=True)
            except OSError:
                lost.append(path)
                continue
            served.append((path, entry))
            added += 1
        modules = list(modules)
        if modules and where:
            record(where, recorded, served, modules, lost)
        evict(cache, limit)
        return added


def covers(cache: str, modules: Iterable[str]) -> bool:
    """Whether the environment's set already covers the imports of every one of `modules`."""
    where = _location(cache)
    return where is not None and set(modules) <= _read_set(where[1])[1]


def _site() -> tuple[str, list[str]] | None:
    """The environment's prefix and its site directories (those below the prefix), or `None`
    when it has none."""
    import site

    prefix = os.path.realpath(sys.prefix)
    dirs = [os.path.realpath(d) for d in site.getsitepackages()]
    dirs = [d for d in dirs if d.startswith(prefix + os.sep) and os.path.isdir(d)]
    return (prefix, dirs) if dirs else None


def prefix() -> str | None:
    """The environment's prefix, as the sets' paths are relative to, with a trailing `/`."""
    found = _site()
    return found[0] + os.sep if found else None


def _location(cache: str) -> tuple[str, str] | None:
    """The environment's prefix (with a trailing `/`: its set's paths are relative to it) and
    where the set of its installed distributions is recorded; `None` when it has no site
    directory."""
    found = _site()
    if found is None:
        return None
    names = sorted(n for d in found[1] for n in os.listdir(d) if n.endswith(".dist-info"))
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()
    return found[0] + os.sep, os.path.join(cache, tag(), "sets", digest[:32])


def _read_set(path: str) -> tuple[dict[str, tuple[str, int]], set[str]]:
    """A set's files (path below the prefix -> entry digest and size) and the modules whose
    imports it covers."""
    files: dict[str, tuple[str, int]] = {}
    modules: set[str] = set()
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return files, modules
    for line in lines:
        if line.startswith("# modules "):
            modules.update(line.split()[2:])
            continue
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1].isdigit():
            files[parts[2]] = (parts[0], int(parts[1]))
    return files, modules


def record(
    where: tuple[str, str],
    recorded: tuple[dict[str, tuple[str, int]], set[str]],
    served: list[tuple[str, str]],
    modules: list[str],
    lost: list[str],
) -> None:
    """Adds to the environment's set each file below its prefix and the entry that serves it
    (in the order given: about the order an import reaches them). The modules count as covered
    when no file below the prefix with bytecode (`lost`: none could be stored) was left out:
    what has no bytecode the import of `modules` did not reach. `where` is the environment's
    `_location`, `recorded` its set as read before."""
    prefix, path = where
    files, covered = dict(recorded[0]), set(recorded[1])
    whole = not any(os.path.realpath(p).startswith(prefix) for p in lost)
    for source, entry in served:
        real = os.path.realpath(source)
        # Files elsewhere (the bundled SDK, a step's own modules) are no part of the set; their
        # bytecode, written once beside them, stays there.
        if not real.startswith(prefix) or "\n" in real:
            continue
        try:
            size = os.stat(entry).st_size
        except OSError:
            whole = False
            continue
        digest = os.path.basename(os.path.dirname(entry)) + os.path.basename(entry)[:-4]
        files[real[len(prefix):]] = (digest, size)
    if whole and files:
        covered.update(modules)
    if (files, covered) == recorded:
        return
    lines = [f"# modules {' '.join(sorted(covered))}"] if covered else []
    lines += [f"{d} {size} {rel}" for rel, (d, size) in files.items()]
    _write_atomic(path, ("\n".join(lines) + "\n").encode(), durable=True)


def place_set(cache: str, modules: Iterable[str]) -> tuple[int, bool]:
    """Links the entries the environment's set names into the `__pycache__` of each file that
    has no bytecode yet (copies them where a link cannot be made); returns how many were placed
    and whether the set covers every one of `modules` with nothing missing, in which case the
    import of `modules` needs nothing else from the cache."""
    where = _location(cache)
    if where is None:
        return 0, False
    prefix, path = where
    files, covered = _read_set(path)
    whole = bool(files) and set(modules) <= covered
    placed = 0
    made: set[str] = set()
    base = os.path.join(cache, tag())
    for rel, (digest, size) in files.items():
        target = cache_from_source(prefix + rel)
        entry = os.path.join(base, digest[:2], digest[2:] + ".pyc")
        try:
            if os.stat(entry).st_size != size:
                whole = False
                continue
            folder = os.path.dirname(target)
            if folder not in made:
                os.makedirs(folder, exist_ok=True)
                made.add(folder)
            try:
                os.link(entry, target)
            except FileExistsError:
                continue
            except OSError:
                data = _read(entry)
                if data is None:
                    whole = False
                    continue
                _write_atomic(target, data)
            # In use: the least recently used go first; and newer than its source, as
            # current bytecode is.
            os.utime(entry)
        except OSError:
            whole = False
            continue
        placed += 1
    return placed, whole


def evict(cache: str, limit: int) -> None:
    """Removes the least recently used entries (oldest mtime first) while all hold more than
    `limit` bytes, down to nine tenths of it."""
    entries: list[tuple[float, int, str]] = []
    for root, _dirs, names in os.walk(cache):
        for name in names:
            if not name.endswith(".pyc"):
                continue
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            entries.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in entries)
    if total <= limit:
        return
    entries.sort()
    for _, size, path in entries:
        if total <= limit * 9 // 10:
            break
        try:
            os.unlink(path)
        except OSError:
            continue
        total -= size
