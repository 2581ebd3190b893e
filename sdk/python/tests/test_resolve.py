"""drover.resolve: references filled in as the controller fills them in at dispatch, and
start_locally(run_pipeline_steps_locally=True) filling them in the same way."""
import pytest

from drover import PipelineController, resolve


def test_ids_and_artifact_urls_of_known_steps_are_filled_and_the_rest_stays():
    fill = resolve.filler({"p": "v"}, "r1", {"a": ["data"]}, lambda step, name: f"http://c/{step}/{name}")
    texts = {"id": '"task ${a.id}"', "url": '"${a.artifacts.data.url}"', "param": '"${pipeline.p}"',
             "output": '"${a.data}"', "later": '"${b.id}"', "n": "3"}
    assert resolve.kwargs(texts, fill) == {
        "id": '"task r1/a"', "url": '"http://c/a/data"', "param": '"v"',
        "output": '"${a.data}"', "later": '"${b.id}"', "n": "3"}


def test_a_missing_artifact_is_named_with_the_controllers_message_when_strict():
    fill = resolve.filler({}, "r1", {"a": ["r"]}, lambda step, name: "x", strict=True)
    with pytest.raises(resolve.MissingArtifact) as e:
        resolve.kwargs({"u": '"${a.artifacts.data.url}"'}, fill)
    # the same text as controller/src/scheduler/resolve.rs
    assert str(e.value) == '${a.artifacts.data.url}: step a has no artifact "data" (its artifacts: ["r"])'
    lenient = resolve.filler({}, "r1", {"a": ["r"]}, lambda step, name: "x")
    assert resolve.kwargs({"u": '"${a.artifacts.data.url}"'}, lenient) == {"u": '"${a.artifacts.data.url}"'}


def test_a_task_steps_parameters_are_its_overrides_filled_in():
    fill = resolve.filler({"n": "4"}, "r1", {"a": []})
    got = resolve.parameters("t1", {}, {"General/id": "${a.id}", "General/n": "${pipeline.n}", "General/k": "0.25"},
                             fill)
    assert got == {"General/id": "r1/a", "General/n": "4", "General/k": "0.25"}
    function = resolve.parameters(None, {"x": '"${pipeline.n}"', "y": "[1]"}, {}, fill)
    assert function == {"kwargs/x": "4", "kwargs/y": [1]}


def make(n):
    return list(range(n))


def show(task_id, url, label, copied):
    import pickle
    import urllib.request

    with urllib.request.urlopen(url) as f:  # a file:// URL when the run is not recorded
        data = pickle.load(f)
    return {"id": task_id, "url": url, "data": data, "label": label, "copied": copied}


def test_start_locally_fills_ids_artifact_urls_parameters_and_step_parameters():
    pipe = PipelineController(name="refs", project="t", version="1")
    pipe.add_parameter(name="label", default="run-1")
    pipe.add_function_step(name="a", function=make, function_kwargs=dict(n=3), function_return=["data"])
    pipe.add_function_step(name="b", function=show, function_return=["seen"], function_kwargs=dict(
        task_id="${a.id}", url="${a.artifacts.data.url}", label="${pipeline.label}",
        copied="n=${a.parameters.kwargs/n}"))
    seen = {}

    def pre(pipeline, node, parameters):
        seen.update(parameters)

    pipe._steps[-1].callbacks["pre_execute_callback"] = pre
    pipe.start_locally(run_pipeline_steps_locally=True)
    assert pipe.is_successful()
    out = pipe._local.values["b"]["seen"]
    run_id = pipe._local.run_id
    assert run_id and out["id"] == f"{run_id}/a"
    assert out["url"].startswith("file://") and out["data"] == [0, 1, 2]
    assert out["label"] == "run-1" and out["copied"] == "n=3"
    # what the callback saw: resolved values, not the references as written
    assert seen["kwargs/task_id"] == f"{run_id}/a" and seen["kwargs/url"] == out["url"]


def test_start_locally_fails_the_step_naming_a_missing_artifact(capsys):
    pipe = PipelineController(name="missing", project="t", version="1")
    pipe.add_function_step(name="a", function=make, function_kwargs=dict(n=3), function_return=["data"])
    pipe.add_function_step(name="b", function=show, function_return=["seen"], function_kwargs=dict(
        task_id="${a.id}", url="${a.artifacts.nope.url}", label="x", copied="y"))
    pipe.start_locally(run_pipeline_steps_locally=True)
    assert not pipe.is_successful()
    assert pipe._local.status == {"a": "succeeded", "b": "failed"}
    out = capsys.readouterr().out
    assert 'b: failed (${a.artifacts.nope.url}: step a has no artifact "nope" (its artifacts: ["data"]))' in out

