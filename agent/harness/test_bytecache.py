"""Tests of the machine's shared bytecode cache (`drover_bytecache`), as `drover_compile.py`
fills it after a preload and uses it before one."""
import fcntl
import os
import subprocess
import sys
import time
from importlib.util import cache_from_source
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "drover_compile.py")
sys.path.insert(0, HERE)

import drover_bytecache  # noqa: E402


def make_env(root, value=1):
    """An environment holding package `pkg` (`pkg.mod.VALUE == value`)."""
    pkg = root / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import mod\n")
    (pkg / "mod.py").write_text(f"VALUE = {value}\n")
    return pkg


def run(args, root, cache=None, env=None):
    full = {k: v for k, v in os.environ.items()
            if k not in ("PYTHONDONTWRITEBYTECODE", "DROVER_BYTECODE_CACHE")}
    full.update(PYTHONPATH=str(root), **(env or {}))
    if cache is not None:
        full["DROVER_BYTECODE_CACHE"] = str(cache)
    return subprocess.run([sys.executable, *args], env=full, cwd=root, capture_output=True,
                          text=True, check=True, timeout=60)


def one_cpu(args):
    """`drover_compile.py ARGS` on one CPU: it places cached bytecode but compiles nothing, so
    what is in `__pycache__` afterwards came from the cache."""
    return ["-c", "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            f"import runpy, sys; sys.path.insert(0, {HERE!r}); sys.argv = [{SCRIPT!r}, *{args!r}]; "
            f"runpy.run_path({SCRIPT!r}, run_name='__main__')"]


def flags(path):
    with open(cache_from_source(str(path)), "rb") as f:
        return int.from_bytes(f.read(8)[4:8], "little")


def fill(root, cache):
    """Imports `pkg` in the environment at `root` (writing its bytecode), then harvests it."""
    run(["-c", "import pkg"], root)
    run([SCRIPT, "--harvest", "pkg"], root, cache)


def test_two_environments_share_the_cache(tmp_path):
    cache = tmp_path / "cache"
    a, b = tmp_path / "a", tmp_path / "b"
    make_env(a)
    pkg = make_env(b)
    fill(a, cache)
    entries = [n for _, _, names in os.walk(cache) for n in names if n.endswith(".pyc")]
    assert len(entries) == 2
    run(one_cpu(["pkg"]), b, cache)
    mod = cache_from_source(str(pkg / "mod.py"))
    assert flags(pkg / "mod.py") == drover_bytecache.CHECKED_HASH
    assert flags(pkg / "__init__.py") == drover_bytecache.CHECKED_HASH
    before = os.stat(mod).st_mtime_ns
    # The import accepts it: an import that found it stale would write it again.
    assert run(["-c", "import pkg; print(pkg.mod.VALUE)"], b).stdout.strip() == "1"
    assert os.stat(mod).st_mtime_ns == before
    assert [n for n in os.listdir(pkg / "__pycache__") if not n.endswith(".pyc")] == []


def test_an_entry_for_another_source_is_never_used(tmp_path):
    cache = tmp_path / "cache"
    a, b = tmp_path / "a", tmp_path / "b"
    make_env(a, value=1)
    pkg = make_env(b, value=2)
    fill(a, cache)
    old = (a / "pkg" / "mod.py").read_bytes()
    new = (pkg / "mod.py").read_bytes()
    with open(drover_bytecache.entry_of(str(cache), old), "rb") as f:
        stale = f.read()
    # Not found: the key is the source's content.
    run(one_cpu(["pkg"]), b, cache)
    assert not os.path.exists(cache_from_source(str(pkg / "mod.py")))
    # Not placed, and removed, when filed under the new source's key.
    forged = drover_bytecache.entry_of(str(cache), new)
    os.makedirs(os.path.dirname(forged), exist_ok=True)
    with open(forged, "wb") as f:
        f.write(stale)
    run(one_cpu(["pkg"]), b, cache)
    assert not os.path.exists(cache_from_source(str(pkg / "mod.py")))
    assert not os.path.exists(forged)
    # And in `__pycache__` itself, Python checks it against the source: the new code runs.
    os.makedirs(pkg / "__pycache__", exist_ok=True)
    with open(cache_from_source(str(pkg / "mod.py")), "wb") as f:
        f.write(stale)
    assert run(["-c", "import pkg; print(pkg.mod.VALUE)"], b).stdout.strip() == "2"


def test_a_corrupt_or_truncated_entry_is_ignored(tmp_path):
    cache = tmp_path / "cache"
    a = tmp_path / "a"
    make_env(a)
    fill(a, cache)
    source = (a / "pkg" / "mod.py").read_bytes()
    entry = drover_bytecache.entry_of(str(cache), source)
    with open(entry, "rb") as f:
        whole = f.read()
    for bad in (whole[: len(whole) - 3], whole[:16], whole[:7], b"\x00" * len(whole),
                whole[:16] + b"\xff" * (len(whole) - 16)):
        b = tmp_path / f"b{len(os.listdir(tmp_path))}"
        pkg = make_env(b)
        with open(entry, "wb") as f:
            f.write(bad)
        run(one_cpu(["pkg"]), b, cache)
        assert not os.path.exists(cache_from_source(str(pkg / "mod.py")))
        assert not os.path.exists(entry)
        assert run(["-c", "import pkg; print(pkg.mod.VALUE)"], b).stdout.strip() == "1"
        # The import compiled it itself, and the next harvest stores it again.
        run([SCRIPT, "--harvest", "pkg"], b, cache)
        with open(entry, "rb") as f:
            assert drover_bytecache.valid(f.read(), source)


def test_nothing_is_cached_or_placed_without_a_cache(tmp_path):
    cache = tmp_path / "cache"
    a, b = tmp_path / "a", tmp_path / "b"
    make_env(a)
    pkg = make_env(b)
    run(["-c", "import pkg"], a)
    run([SCRIPT, "--harvest", "pkg"], a)
    assert not cache.exists()
    fill(a, cache)
    run(one_cpu(["pkg"]), b)
    assert not (pkg / "__pycache__").exists()
    # Nor where bytecode is not written at all.
    run(one_cpu(["pkg"]), b, cache, env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert not (pkg / "__pycache__").exists()


def test_the_least_recently_used_entries_go_past_the_limit(tmp_path):
    cache = tmp_path / "cache"
    a = tmp_path / "a"
    pkg = make_env(a)
    for i in range(6):
        (pkg / f"m{i}.py").write_text(f"X = {i}\n" + "Y = 'padding'\n" * 200)
    (pkg / "__init__.py").write_text("".join(f"from . import m{i}\n" for i in range(6)))
    run(["-c", "import pkg"], a)
    run([SCRIPT, "--harvest", "pkg"], a, cache)

    def entry(i):
        return drover_bytecache.entry_of(str(cache), (pkg / f"m{i}.py").read_bytes())

    size = os.stat(entry(0)).st_size
    for i in range(6):
        os.utime(entry(i), (1000 + i, 1000 + i))
    drover_bytecache.evict(str(cache), 4 * size + 10)
    kept = [i for i in range(6) if os.path.exists(entry(i))]
    assert kept == [3, 4, 5]


def make_venv(root, value=1, version="1.0"):
    """A virtualenv at `root` whose site directory holds package `pkg` (`pkg.mod.VALUE ==
    value`) as distribution `pkg` `version`; returns its python and the package's directory."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True,
                   timeout=60)
    python = root / "bin" / "python"
    site = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / f"pkg-{version}.dist-info").mkdir()
    return python, make_env(Path(site), value)


def venv_env(cache=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "DROVER_BYTECODE_CACHE", "PYTHONPATH")}
    if cache is not None:
        env["DROVER_BYTECODE_CACHE"] = str(cache)
    return env


def run_in(python, args, cache=None):
    return subprocess.run([python, *args], env=venv_env(cache), capture_output=True, text=True,
                          check=True, timeout=60)


def set_files(cache):
    return [os.path.join(d, n) for d, _, names in os.walk(cache)
            if os.path.basename(d) == "sets" for n in names]


def test_an_environment_of_the_same_set_gets_links_without_a_scan(tmp_path):
    cache = tmp_path / "cache"
    a, _ = make_venv(tmp_path / "a")
    run_in(a, ["-c", "import pkg"])
    run_in(a, [SCRIPT, "--harvest", "pkg"], cache)
    [recorded] = set_files(cache)
    with open(recorded) as f:
        lines = f.read().splitlines()
    assert lines[0] == "# modules pkg"
    assert sorted(line.rsplit("/", 1)[1] for line in lines[1:]) == ["__init__.py", "mod.py"]

    b, pkg_b = make_venv(tmp_path / "b")
    # One CPU: anything in `__pycache__` afterwards was placed, not compiled.
    run_in(b, one_cpu(["pkg"]), cache)
    mod = cache_from_source(str(pkg_b / "mod.py"))
    entry = drover_bytecache.entry_of(str(cache), (pkg_b / "mod.py").read_bytes())
    assert os.path.samefile(mod, entry)
    assert flags(pkg_b / "__init__.py") == drover_bytecache.CHECKED_HASH
    before = os.stat(mod).st_mtime_ns
    assert run_in(b, ["-c", "import pkg; print(pkg.mod.VALUE)"]).stdout.strip() == "1"
    assert os.stat(mod).st_mtime_ns == before
    # The set covers `pkg` now: a second harvest changes nothing.
    with open(recorded) as f:
        text = f.read()
    run_in(b, [SCRIPT, "--harvest", "pkg"], cache)
    with open(recorded) as f:
        assert f.read() == text


def test_a_set_entry_for_a_changed_source_or_cut_short_is_not_run(tmp_path):
    cache = tmp_path / "cache"
    a, pkg_a = make_venv(tmp_path / "a")
    run_in(a, ["-c", "import pkg"])
    run_in(a, [SCRIPT, "--harvest", "pkg"], cache)
    # Same distributions, but a source edited in place: its entry is linked, and Python, checking
    # it against the source, compiles the new one.
    b, _ = make_venv(tmp_path / "b", value=2)
    run_in(b, one_cpu(["pkg"]), cache)
    assert run_in(b, ["-c", "import pkg; print(pkg.mod.VALUE)"]).stdout.strip() == "2"
    # An entry of another size than recorded is not linked.
    entry = drover_bytecache.entry_of(str(cache), (pkg_a / "mod.py").read_bytes())
    with open(entry, "rb") as f:
        whole = f.read()
    with open(entry, "wb") as f:
        f.write(whole[:-3])
    c, pkg_c = make_venv(tmp_path / "c")
    run_in(c, one_cpu(["pkg"]), cache)
    assert not os.path.exists(cache_from_source(str(pkg_c / "mod.py")))
    assert run_in(c, ["-c", "import pkg; print(pkg.mod.VALUE)"]).stdout.strip() == "1"
    # Another set of distributions has a record of its own.
    d, _ = make_venv(tmp_path / "d", version="2.0")
    run_in(d, ["-c", "import pkg"])
    run_in(d, [SCRIPT, "--harvest", "pkg"], cache)
    assert len(set_files(cache)) == 2


def test_a_harvest_waits_for_the_one_before_it(tmp_path):
    cache = tmp_path / "cache"
    a, _ = make_venv(tmp_path / "a")
    run_in(a, ["-c", "import pkg"])
    cache.mkdir()
    with open(cache / "harvest.lock", "wb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        second = subprocess.Popen([a, SCRIPT, "--harvest", "pkg"], env=venv_env(cache))
        time.sleep(1)
        assert second.poll() is None
        assert set_files(cache) == []
        fcntl.flock(lock, fcntl.LOCK_UN)
        assert second.wait(timeout=60) == 0
    assert len(set_files(cache)) == 1
