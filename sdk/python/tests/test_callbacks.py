"""`start()` with step callbacks: the submitted run gets a driver carrying the callbacks' source."""
import ast
import json

import pytest

from drover import PipelineController, callbacks, drive


def one(x=1):
    return x


def pre(pipeline, node, parameters):
    import sys

    print("pre", node.name, parameters, file=sys.stdout)
    return node.name != "skip"


def post(pipeline, node):
    print("post", node.name, node.executed)


def changed(pipeline, node, previous):
    print("status", node.name, previous, node.status)


HOOKS = dict(pre_execute_callback=pre, post_execute_callback=post, status_change_callback=changed)


def pipeline():
    pipe = PipelineController(name="p", project="x", version="1")
    pipe.add_parameter("n", 4)
    pipe.add_function_step("first", one, function_kwargs={"x": "${pipeline.n}"}, function_return=["y"], **HOOKS)
    pipe.add_function_step("second", one, function_kwargs={"x": "${first.y}"}, function_return=["y"],
                           post_execute_callback=post)
    pipe.add_function_step("plain", one, function_return=["y"])
    return pipe


def test_start_submits_a_driver_with_the_callbacks_source_and_holds_steps_with_a_pre_callback():
    spec = pipeline()._submit_message(with_driver=True)["body"]["spec"]
    steps = {s["name"]: s for s in spec["step"]}
    assert list(steps) == ["first", "second", "plain", "driver"]
    driver = steps["driver"]
    assert driver["driver"] is True and driver["queue"] is None and driver["parents"] == []
    assert driver["function"]["kwargs"] == {"n": '"${pipeline.n}"'}
    assert steps["first"].get("await_callback") is True
    assert "await_callback" not in steps["second"] and "await_callback" not in steps["plain"]
    # The bootstrap is valid Python whose literals are the callbacks' source and the step table.
    tree = ast.parse(driver["function"]["source"])
    literals = {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)}
    assert literals["PIPELINE"] == {"name": "p", "project": "x", "version": "1", "default_queue": "default",
                                    "description": None}
    table = literals["STEPS"]
    assert sorted(table) == ["first", "second"]
    assert table["first"]["callbacks"] == {"pre_execute_callback": "pre", "post_execute_callback": "post",
                                           "status_change_callback": "changed"}
    assert table["second"]["parents"] == ["first"]
    defined = callbacks.load(literals["CALLBACK_SOURCE"])
    assert {"pre", "post", "changed"} <= set(defined)
    assert literals["CALLBACK_SOURCE"].count("def post(") == 1  # shared callbacks travel once


def test_without_callbacks_there_is_no_driver():
    pipe = PipelineController(name="p", project="x", version="1")
    pipe.add_function_step("first", one)
    assert [s["name"] for s in pipe._submit_message()["body"]["spec"]["step"]] == ["first"]


def test_the_pre_callback_gets_the_step_parameters_with_pipeline_parameters_filled_in():
    entries = drive.table(pipeline()._steps)
    assert drive.parameters(entries["first"], {"n": "4"}) == {"kwargs/x": "4"}
    assert drive.parameters(entries["second"], {"n": "4"}) == {"kwargs/x": "${first.y}"}
    task = {"base_task_id": "t1", "parameters": {"General/url": "${pipeline.n}/x", "General/k": "0.25"}}
    assert drive.parameters(task, {"n": "4"}) == {"General/url": "4/x", "General/k": "0.25"}


def test_a_step_waits_for_its_callback_when_the_controller_says_so():
    assert drive.waiting({"status": "pending", "pending_reason": {"reason": "waiting_for_callback"}})
    assert not drive.waiting({"status": "pending", "pending_reason": {"reason": "queue_full", "queue": "q"}})
    assert not drive.waiting({"status": "pending"})
    assert not drive.waiting({"status": "queued", "pending_reason": {"reason": "waiting_for_callback"}})


def test_a_lambda_callback_is_refused_for_start():
    pipe = PipelineController(name="p", project="x", version="1")
    pipe.add_function_step("first", one, post_execute_callback=lambda p, n: None)
    with pytest.raises(ValueError, match=r"'first': post_execute_callback.*defined with def"):
        pipe._submit_message(with_driver=True)


def test_a_closure_callback_is_refused_for_start():
    flag = True

    def uses_flag(pipeline, node):
        return flag

    pipe = PipelineController(name="p", project="x", version="1")
    pipe.add_function_step("first", one, post_execute_callback=uses_flag)
    with pytest.raises(ValueError, match=r"uses_flag.*flag.*module level"):
        pipe._submit_message(with_driver=True)


def test_a_step_named_driver_clashes_with_the_callbacks_driver():
    pipe = PipelineController(name="p", project="x", version="1")
    pipe.add_function_step("driver", one, post_execute_callback=post)
    with pytest.raises(ValueError, match="'driver' would clash"):
        pipe._submit_message(with_driver=True)


def test_the_driver_passes_the_spec_checks():
    message = pipeline()._submit_message(with_driver=True)
    json.dumps(message)  # travels as JSON


def test_ids_and_artifact_urls_of_ended_steps_are_filled_in_from_the_run_view():
    view = {"run_id": "r1", "url": "http://ctl:1/runs/r1",
            "steps": [{"name": "data", "status": "succeeded", "outputs": {"dataset": {"digest": "d"}}},
                      {"name": "later", "status": "pending", "outputs": {}}]}
    task = {"base_task_id": "t1", "parameters": {
        "General/url": "${data.artifacts.dataset.url}", "General/id": "${data.id}",
        "General/missing": "${data.artifacts.nope.url}", "General/later": "${later.artifacts.x.url}"}}
    assert drive.parameters(task, {}, view) == {
        "General/url": "http://ctl:1/api/v1/runs/r1/steps/data/artifacts/dataset", "General/id": "r1/data",
        "General/missing": "${data.artifacts.nope.url}", "General/later": "${later.artifacts.x.url}"}
    function = {"kwargs": {"x": '"${data.id}"', "n": "3"}}
    assert drive.parameters(function, {}, view) == {"kwargs/x": "r1/data", "kwargs/n": 3}
