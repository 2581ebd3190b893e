"""The Submit the SDK builds for the seed pipeline has the golden Submit's shape and content."""
import importlib.metadata
import json
import os
import sys

import msgpack
import pytest

import seed_pipeline
from drover import PipelineController, submit

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "..", "..", "protocol", "tests", "golden")
PANDAS = f"pandas=={importlib.metadata.version('pandas')}"
SKLEARN = f"scikit-learn=={importlib.metadata.version('scikit-learn')}"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def golden_submit():
    """The golden Submit as decoded, keys in the order Rust wrote them."""
    with open(os.path.join(GOLDEN, "submit.msgpack"), "rb") as f:
        return msgpack.unpackb(f.read(), raw=False)


@pytest.fixture
def message():
    return seed_pipeline.build("/tmp/iris.pkl")._submit_message()


def test_envelope_and_body_have_the_golden_fields_in_order(message):
    golden = golden_submit()
    assert list(message) == list(golden)
    assert list(message["body"]) == list(golden["body"])
    assert list(message["body"]["spec"]) == list(golden["body"]["spec"])
    assert list(message["body"]["spec"]["pipeline"]) == list(golden["body"]["spec"]["pipeline"])
    assert list(message["body"]["spec"]["parameters"]["url"]) == list(
        golden["body"]["spec"]["parameters"]["url"]
    )
    golden_step = golden["body"]["spec"]["step"][0]
    # Fields Rust leaves out at their defaults (blobs empty, driver false) are left out here too.
    optional = {"blobs", "driver"}
    for step in message["body"]["spec"]["step"]:
        assert list(step) == [k for k in golden_step if k not in optional or k in step]
        function = step["function"]
        assert list(function) == [k for k in golden_step["function"] if k not in optional or k in function]


def test_envelope_values(message):
    assert message["v"] == 1 and message["kind"] == "submit"
    assert len(message["id"]) == 32 and int(message["id"], 16) >= 0
    assert abs(message["sent_at"] - __import__("time").time() * 1000) < 60_000
    assert message["body"]["params"] == {}
    assert "@" in message["body"]["submitted_by"]


def test_seed_spec_content(message):
    spec = message["body"]["spec"]
    assert spec["pipeline"] == {
        "name": "Pipeline demo", "project": "examples", "version": "1.1",
        "default_queue": "default", "description": None,
    }
    assert spec["parameters"] == {
        "url": {"default": "/tmp/iris.pkl", "description": "url to pickle file", "type": None}
    }
    one, two, three = spec["step"]
    assert [s["name"] for s in spec["step"]] == ["step_one", "step_two", "step_three"]
    assert one["function"]["kwargs"] == {"pickle_data_url": '"${pipeline.url}"'}
    assert two["function"]["kwargs"] == {"data_frame": '"${step_one.data_frame}"'}
    assert three["function"]["kwargs"] == {"data": '"${step_two.processed_data}"'}
    assert [s["function"]["returns"] for s in spec["step"]] == [["data_frame"], ["processed_data"], ["model"]]
    assert all(s["cache"] and s["queue"] is None and s["parents"] == [] for s in spec["step"])
    assert one["function"]["entry"] == "step_one"
    assert one["function"]["source"].startswith("def step_one(pickle_data_url):\n")
    assert one["function"]["python"] == PYTHON


def test_requirements_are_detected_pinned_and_inherited(message):
    one, two, three = message["body"]["spec"]["step"]
    # step_one imports pandas and sklearn; drover and the stdlib are not requirements.
    assert one["function"]["requirements"] == [PANDAS, SKLEARN]
    # step_two imports sklearn only, but unpickling step_one's DataFrame needs pandas.
    assert two["function"]["requirements"] == [PANDAS, SKLEARN]
    # step_three inherits step_two's requirements (its own import is sklearn).
    assert three["function"]["requirements"] == [PANDAS, SKLEARN]


def test_parents_are_derived_from_references():
    dag = seed_pipeline.build("/tmp/iris.pkl").get_pipeline_dag()
    assert dag["step_one"]["parents"] == []
    assert dag["step_two"]["parents"] == ["step_one"]
    assert dag["step_three"]["parents"] == ["step_two"]
    assert dag["step_three"]["queue"] == "default"


def golden_like_step_one(pickle_data_url):
    return 1


def test_an_equivalent_pipeline_builds_the_golden_function_step():
    golden = golden_submit()["body"]["spec"]
    pipe = PipelineController(name="Pipeline demo", project="examples", version="1.1")
    pipe.add_parameter(name="url", default="/data/iris.pkl", description="url to pickle file")
    pipe.add_function_step(
        name="step_one", function=golden_like_step_one,
        function_kwargs=dict(pickle_data_url="${pipeline.url}"), function_return=["data_frame"],
        packages=["pandas==2.3.3"], cache_executed_step=True,
    )
    spec = pipe._submit_message()["body"]["spec"]
    step = spec["step"][0]
    step["function"]["source"] = step["function"]["source"].replace("golden_like_step_one", "step_one")
    step["function"]["entry"] = "step_one"
    step["function"]["python"] = "3.11"
    # The golden step also passes a blob, which PipelineController never does.
    expected = {**golden["step"][0], "function": dict(golden["step"][0]["function"])}
    del expected["function"]["blobs"]
    assert step == expected
    assert spec["pipeline"] == golden["pipeline"]
    assert spec["parameters"] == golden["parameters"]


def test_the_encoded_submit_decodes_back_unchanged(message):
    assert msgpack.unpackb(submit.encode(message), raw=False) == message


def test_kwargs_are_json_text():
    def f(a, b, c, d, e):
        return a

    pipe = PipelineController(name="p", project="x", version="1")
    pipe.add_function_step(name="s", function=f, function_kwargs=dict(
        a=3, b=[1, "two"], c={"k": None}, d=True, e="plain"))
    kwargs = pipe._submit_message()["body"]["spec"]["step"][0]["function"]["kwargs"]
    assert {k: json.loads(v) for k, v in kwargs.items()} == dict(a=3, b=[1, "two"], c={"k": None}, d=True, e="plain")
    assert kwargs["e"] == '"plain"'
    assert list(kwargs) == sorted(kwargs)


def test_step_options_map_to_spec_fields():
    def f():
        return 1

    pipe = PipelineController(name="p", project="x", version="1", retry_on_failure=1)
    pipe.add_function_step(name="a", function=f, function_return=["r"])
    pipe.add_function_step(name="b", function=f, parents=["a"], execution_queue="gpu",
                           time_limit=90, retry_on_failure=3, continue_on_fail=True)
    pipe.add_function_step(name="c", function=f, time_limit=1.5,
                           continue_behaviour={"continue_on_fail": True})
    a, b, c = pipe._submit_message()["body"]["spec"]["step"]
    assert (a["retries"], a["timeout"], a["queue"], a["continue_on_fail"]) == (1, None, None, False)
    assert (b["retries"], b["timeout"], b["queue"], b["parents"]) == (3, "90s", "gpu", ["a"])
    assert b["continue_on_fail"] is True
    assert (c["timeout"], c["continue_on_fail"]) == ("1500ms", True)


def test_priority_is_sent_only_when_given_and_checked():
    def f():
        return 1

    pipe = PipelineController(name="p", project="x", version="1")
    pipe.add_function_step(name="a", function=f)
    pipe.add_function_step(name="b", function=f, priority=7)
    a, b = pipe._submit_message()["body"]["spec"]["step"]
    assert "priority" not in a and b["priority"] == 7
    for i, bad in enumerate((10, -1, 2.5, True, "9")):
        with pytest.raises(ValueError, match="priority must be a whole number from 0 to 9"):
            pipe.add_function_step(name=f"bad{i}", function=f, priority=bad)
