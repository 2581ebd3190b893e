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
  than `limit` bytes. One harvest at a time per cache (a lock; a second one returns at once).

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


def _write_atomic(path: str, data: bytes) -> None:
    """Writes `path` whole or not at all: a reader sees the old file or the new one."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temp, "wb") as f:
            f.write(data)
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


def harvest(files: Iterable[str], cache: str, limit: int) -> int:
    """Stores the current bytecode of `files` that the cache lacks, then keeps it within
    `limit` bytes; returns how many entries were added (0 when another harvest holds the lock)."""
    os.makedirs(cache, mode=0o700, exist_ok=True)
    with open(os.path.join(cache, "harvest.lock"), "wb") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0
        added = 0
        for path in files:
            source = _read(path)
            if source is None:
                continue
            entry = entry_of(cache, source)
            if os.path.exists(entry):
                continue
            pyc = _read(cache_from_source(path))
            if pyc is None or not _current(pyc, path, source):
                continue
            data = MAGIC_NUMBER + CHECKED_HASH.to_bytes(4, "little") + source_hash(source)
            data += pyc[HEADER:]
            if not valid(data, source):
                continue
            try:
                _write_atomic(entry, data)
            except OSError:
                continue
            added += 1
        evict(cache, limit)
        return added


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
