"""Tests of the step harness: kwargs from JSON and artifacts, returns to pickles, failures."""
import json
import os
import pickle
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.join(HERE, "..", "..", "sdk", "python")


def run_job(tmp_path, job):
    (tmp_path / "job.json").write_text(json.dumps(job))
    env = dict(os.environ, PYTHONPATH=SDK)
    return subprocess.run(
        [sys.executable, os.path.join(HERE, "drover_harness.py"), "job.json"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )


def output(tmp_path, name):
    with open(tmp_path / "_outputs" / f"{name}.pkl", "rb") as f:
        return pickle.load(f)


def test_kwargs_get_artifacts_paths_and_literals(tmp_path):
    artifact = tmp_path / "frame.pkl"
    artifact.write_bytes(pickle.dumps({"rows": 3}))
    source = (
        "def f(frame, where, literal, n):\n"
        "    return frame['rows'] + n, where, literal\n"
    )
    job = {
        "source": source, "entry": "f",
        "kwargs": {
            "frame": json.dumps("${load.data.v2}"),
            "where": json.dumps("file at ${load.data.v2}"),
            "literal": json.dumps("$${not.a_ref}"),
            "n": "4",
        },
        "inputs": {"load.data.v2": str(artifact)},
        "returns": ["total", "where", "literal"],
        "output_dir": "_outputs",
    }
    done = run_job(tmp_path, job)
    assert done.returncode == 0, done.stderr
    assert output(tmp_path, "total") == 7
    assert output(tmp_path, "where") == f"file at {artifact}"
    assert output(tmp_path, "literal") == "${not.a_ref}"


def test_one_return_name_gets_the_whole_tuple(tmp_path):
    job = {"source": "def f():\n    return 1, 2\n", "entry": "f", "kwargs": {},
           "inputs": {}, "returns": ["pair"], "output_dir": "_outputs"}
    assert run_job(tmp_path, job).returncode == 0
    assert output(tmp_path, "pair") == (1, 2)


def test_wrong_number_of_returns_fails_clearly(tmp_path):
    job = {"source": "def f():\n    return 1, 2, 3\n", "entry": "f", "kwargs": {},
           "inputs": {}, "returns": ["a", "b"], "output_dir": "_outputs"}
    done = run_job(tmp_path, job)
    assert done.returncode == 1
    assert "returned 3 values, but function_return names 2" in done.stderr


def test_an_exception_fails_with_its_traceback(tmp_path):
    source = "def f(x):\n    raise ValueError(f'bad {x}')\n"
    job = {"source": source, "entry": "f", "kwargs": {"x": "7"}, "inputs": {},
           "returns": [], "output_dir": "_outputs"}
    done = run_job(tmp_path, job)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "ValueError: bad 7" in done.stderr
    assert "<step function f>" in done.stderr


def test_a_missing_entry_is_named(tmp_path):
    job = {"source": "def g():\n    pass\n", "entry": "f", "kwargs": {}, "inputs": {},
           "returns": [], "output_dir": "_outputs"}
    done = run_job(tmp_path, job)
    assert done.returncode == 1
    assert "no function named 'f'" in done.stderr


def test_a_step_calling_sys_exit_fails_even_with_status_0(tmp_path):
    source = "def f():\n    import sys\n    sys.exit(0)\n"
    job = {"source": source, "entry": "f", "kwargs": {}, "inputs": {}, "returns": [],
           "output_dir": "_outputs"}
    done = run_job(tmp_path, job)
    assert done.returncode == 1
    assert "SystemExit: 0" in done.stderr


def test_a_parameter_value_holding_a_reference_stays_text(tmp_path):
    """The controller escapes parameter values (`$${`); the harness turns them back into `${`."""
    job = {"source": "def f(t):\n    return t\n", "entry": "f",
           "kwargs": {"t": json.dumps("$${x.y} at ${a.b}")}, "inputs": {"a.b": "/in/a/b"},
           "returns": ["t"], "output_dir": "_outputs"}
    assert run_job(tmp_path, job).returncode == 0
    assert output(tmp_path, "t") == "${x.y} at /in/a/b"


def test_no_job_file_is_a_usage_error(tmp_path):
    done = subprocess.run([sys.executable, os.path.join(HERE, "drover_harness.py")], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=SDK), capture_output=True, text=True)
    assert done.returncode == 2
    assert "usage: drover_harness.py job.json" in done.stderr
