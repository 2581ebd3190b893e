"""Tests of the warm parent's preloading and of the pool sizes its children get."""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def in_python(code, tmp_path, env=None):
    """Runs `code` in a new interpreter with the warm parent's script importable; its stdout."""
    full = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, str(tmp_path)]), **(env or {}))
    done = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_from_imports_preload_a_submodule_or_a_lazily_loaded_attribute(tmp_path):
    lazy = tmp_path / "lazypkg"
    lazy.mkdir()
    (lazy / "__init__.py").write_text(
        "def __getattr__(name):\n"
        "    if name == 'Heavy':\n"
        "        from .heavy import Heavy\n"
        "        return Heavy\n"
        "    raise AttributeError(name)\n"
    )
    (lazy / "heavy.py").write_text("class Heavy:\n    pass\n")
    out = in_python(
        "import json, sys, drover_warm\n"
        "r = drover_warm._preload(['json', 'json.decoder', 'lazypkg', 'lazypkg.Heavy', 'lazypkg.Nothing'])\n"
        "print(json.dumps([r, 'lazypkg.heavy' in sys.modules]))\n",
        tmp_path,
    )
    result, loaded = json.loads(out)
    assert result["imported"] == ["json", "json.decoder", "lazypkg", "lazypkg.Heavy"]
    assert result["missing"] == ["lazypkg.Nothing"]
    assert loaded


def test_a_child_sizes_the_pools_the_parent_found_and_the_parent_keeps_one_thread(tmp_path):
    code = (
        "import json, os, drover_warm, threadpoolctl\n"
        "drover_warm._preload(['numpy'])\n"
        "assert drover_warm._pools is not None\n"
        "r, w = os.pipe()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    drover_warm._blas_threads({'OMP_NUM_THREADS': '3'})\n"
        "    sizes = sorted({i['num_threads'] for i in threadpoolctl.threadpool_info()})\n"
        "    os.write(w, json.dumps(sizes).encode())\n"
        "    os._exit(0)\n"
        "os.close(w)\n"
        "os.waitpid(pid, 0)\n"
        "child = json.loads(os.read(r, 1000))\n"
        "parent = sorted({i['num_threads'] for i in threadpoolctl.threadpool_info()})\n"
        "print(json.dumps([child, parent]))\n"
    )
    pinned = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    child, parent = json.loads(in_python(code, tmp_path, pinned))
    assert child == [3]
    assert parent == [1]


def test_a_child_flushes_a_file_the_parent_opened_before_it_froze_its_objects(tmp_path):
    # A frozen object is no longer listed by gc.get_objects(), which is how a step's process
    # finds the open files to flush when it ends.
    path = tmp_path / "opened-before.txt"
    code = (
        "import os, drover_warm\n"
        f"f = open({str(path)!r}, 'w')\n"
        "f.write('written by the step')\n"
        "drover_warm._freeze()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    from drover.runner import end_process\n"
        "    end_process(0)\n"
        "os.waitpid(pid, 0)\n"
        f"print(open({str(path)!r}).read())\n"
        "os._exit(0)\n"
    )
    assert in_python(code, tmp_path) == "written by the step\n"


def test_the_harness_compiled_before_the_fork_runs_as_runpy_would_run_it(tmp_path):
    # What a script can see of how it was run; both ways run in a forked child, as a step does.
    script = tmp_path / "script.py"
    script.write_text(
        "import json, sys\n"
        "main = sys.modules['__main__']\n"
        "seen = {k: repr(v) for k, v in globals().items() if k != '__builtins__'}\n"
        "seen['main_is_globals'] = main.__dict__ is globals()\n"
        "seen['argv'] = sys.argv\n"
        "print(json.dumps(seen, sort_keys=True), flush=True)\n"
    )
    code = (
        "import os, runpy, sys, drover_warm\n"
        f"path = {str(script)!r}\n"
        "sys.argv = [path, 'job.json']\n"
        "with open(path, 'rb') as f:\n"
        "    drover_warm._harness = (path, compile(f.read(), path, 'exec'))\n"
        "for run in (lambda: runpy.run_path(path, run_name='__main__'),\n"
        "            lambda: drover_warm._run_main(path)):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        run()\n"
        "        os._exit(0)\n"
        "    os.waitpid(pid, 0)\n"
    )
    by_runpy, compiled = in_python(code, tmp_path).splitlines()
    assert json.loads(compiled) == json.loads(by_runpy)
    assert json.loads(compiled)["main_is_globals"] is True


def test_a_child_gets_the_step_environment_and_keeps_what_the_parent_added(tmp_path):
    code = (
        "import json, os, drover_warm\n"
        "os.environ.update(PARENT_ONLY='1', ADDED_BY_AN_IMPORT='2', SHARED='parent')\n"
        "step = {'SHARED': 'step', 'NEW': '3'}\n"
        "got = drover_warm._step_environ(step, ['PARENT_ONLY'])\n"
        "print(json.dumps([got == dict(os.environ), dict(os.environ)]))\n"
    )
    same, env = json.loads(in_python(code, tmp_path, {"PARENT_ONLY": "0"}))
    assert same
    assert "PARENT_ONLY" not in env
    assert env["ADDED_BY_AN_IMPORT"] == "2"
    assert env["SHARED"] == "step"
    assert env["NEW"] == "3"
