"""Tests of the bytecode compiler that runs beside a warm parent's preload."""
import os
import subprocess
import sys
from importlib.util import cache_from_source

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "drover_compile.py")


def make_package(root):
    """`pkg` reaching `pkg.a` (relative), `pkg.sub.b` (parenthesized, across lines, beside a
    name that is no module), `pkg.lazy` (inside a function) and `other` (absolute);
    `pkg.unused` is reached by nothing."""
    pkg = root / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "import os, other\n"
        "from . import a\n"
        "from .sub import (\n    b,  # a comment\n    nothing,\n)\n"
    )
    (pkg / "a.py").write_text("def f():\n    from pkg import lazy\n    return lazy\n")
    (pkg / "lazy.py").write_text("X = 1\n")
    (pkg / "unused.py").write_text("Y = 2\n")
    (pkg / "sub" / "__init__.py").write_text("nothing = None\n")
    (pkg / "sub" / "b.py").write_text("from .. import a\n")
    (root / "other.py").write_text("Z = 3\n")
    return pkg


def run(args, root, env=None):
    full = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    full.update(PYTHONPATH=str(root), **(env or {}))
    return subprocess.run([sys.executable, *args], env=full, cwd=root, capture_output=True,
                          text=True, check=True, timeout=60)


def test_the_files_an_import_reaches_are_found_without_importing_them(tmp_path):
    make_package(tmp_path)
    code = (
        f"import sys; sys.path.insert(0, {HERE!r})\n"
        "import drover_compile as c\n"
        "files = c._reached(['pkg'], c._roots())\n"
        "print('\\n'.join(files)); print('pkg' in sys.modules)\n"
    )
    lines = run(["-c", code], tmp_path).stdout.split()
    found = {os.path.relpath(f, tmp_path) for f in lines[:-1]}
    assert found == {
        "pkg/__init__.py", "other.py", "pkg/a.py", "pkg/lazy.py", "pkg/sub/__init__.py",
        "pkg/sub/b.py",
    }
    assert lines[0].endswith("pkg/__init__.py")
    assert lines[-1] == "False"


def test_the_bytecode_written_is_what_an_import_accepts(tmp_path):
    pkg = make_package(tmp_path)
    if len(os.sched_getaffinity(0)) < 2:
        return  # it compiles nothing on one CPU; the next test checks that
    run([SCRIPT, "pkg"], tmp_path)
    sources = [pkg / "__init__.py", pkg / "a.py", pkg / "lazy.py", pkg / "sub" / "b.py",
               tmp_path / "other.py"]
    written = {s: os.stat(cache_from_source(str(s))).st_mtime_ns for s in sources}
    assert not os.path.exists(cache_from_source(str(pkg / "unused.py")))
    # An import that found the bytecode stale would write it again.
    run(["-c", "import pkg, pkg.a; pkg.a.f()"], tmp_path)
    assert written == {s: os.stat(cache_from_source(str(s))).st_mtime_ns for s in sources}
    leftovers = [n for n in os.listdir(pkg / "__pycache__") if not n.endswith(".pyc")]
    assert leftovers == []


def test_nothing_is_written_where_bytecode_is_not_wanted(tmp_path):
    pkg = make_package(tmp_path)
    run([SCRIPT, "pkg"], tmp_path, env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert not (pkg / "__pycache__").exists()
    run(["-c", "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
         f"import runpy, sys; sys.path.insert(0, {HERE!r}); sys.argv = [{SCRIPT!r}, 'pkg']; "
         f"runpy.run_path({SCRIPT!r}, run_name='__main__')"], tmp_path)
    assert not (pkg / "__pycache__").exists()
