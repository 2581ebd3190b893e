"""The step runner: keyword arguments passed as pickled blobs reach the function as values."""

import pickle

import pytest

from drover import runner

SOURCE = """
def describe(rows, labels, scale):
    return sorted(labels), [r * scale for r in rows]
"""


def _job(tmp_path, blobs, kwargs):
    return runner.Job(
        source=SOURCE,
        entry="describe",
        kwargs=kwargs,
        blobs=blobs,
        returns=["labels", "rows"],
        output_dir=str(tmp_path / "_outputs"),
    )


def _blob(tmp_path, name, value):
    path = tmp_path / "_inputs" / "_kwargs" / f"{name}.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(value))
    return str(path)


def test_blob_kwargs_are_unpickled_and_passed(tmp_path):
    # A set is no JSON value: only a blob can carry it.
    blobs = {
        "rows": _blob(tmp_path, "rows", (1, 2, 3)),
        "labels": _blob(tmp_path, "labels", {"b", "a"}),
    }
    runner.run(_job(tmp_path, blobs, {"scale": "10"}))
    out = tmp_path / "_outputs"
    assert pickle.loads((out / "labels.pkl").read_bytes()) == ["a", "b"]
    assert pickle.loads((out / "rows.pkl").read_bytes()) == [10, 20, 30]


def test_a_kwarg_given_twice_is_refused(tmp_path):
    blobs = {
        "rows": _blob(tmp_path, "rows", [1]),
        "labels": _blob(tmp_path, "labels", set()),
        "scale": _blob(tmp_path, "scale", 2),
    }
    with pytest.raises(ValueError, match="'scale' is given both as JSON and as a blob"):
        runner.run(_job(tmp_path, blobs, {"scale": "10"}))


def test_a_step_that_returns_nothing_creates_no_output_directory(tmp_path):
    job = runner.Job(source="def f():\n    return 1\n", entry="f", kwargs={}, returns=[],
                     output_dir=str(tmp_path / "_outputs"))
    runner.run(job)
    assert not (tmp_path / "_outputs").exists()
