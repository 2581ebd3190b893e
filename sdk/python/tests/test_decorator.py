"""PipelineDecorator in debug_pipeline() and run_locally() modes (real subprocesses), refusals,
the driver's submitted spec, and the digest's stability across interpreters."""
import json
import os
import subprocess
import sys

import decorated
import pytest

from drover import PipelineDecorator, validate
from drover import decorator as decorator_module
from drover.dynamic import ComponentFailed, Session, call_digest

SDK = os.path.join(os.path.dirname(__file__), "..")


@pytest.fixture
def mode():
    """Restores the process-wide mode and forgets earlier calls after each test."""
    yield
    decorator_module._State.mode = "remote"
    decorator_module._State.pending = []
    for p in (decorated.fan, decorated.mixed, decorated.failing, decorated.names_pipeline, decorated.watched):
        p.calls = 0


def test_imports_follow_clearml():
    from drover.automation import PipelineController as C1
    from drover.automation import PipelineDecorator as D1
    from drover.automation.controller import PipelineController as C2
    from drover.automation.controller import PipelineDecorator as D2

    assert D1 is D2 is PipelineDecorator and C1 is C2


def test_debug_pipeline_calls_plain_functions(mode):
    PipelineDecorator.debug_pipeline()
    assert decorated.fan(3) == (6, 3)
    result = decorated.mixed()
    assert result == {"set": "set:[1, 2, 3]", "decorated": 2, "nested": 110, "chained": 12, "helped": 20}


def test_outside_a_pipeline_a_component_is_a_plain_function():
    assert decorated.double(4) == 8


def test_run_locally_runs_each_component_as_a_subprocess(mode, capsys):
    PipelineDecorator.run_locally()
    assert decorated.fan(4) == (12, 4)
    out = capsys.readouterr().out
    for name in ("double", "double_1", "double_2", "double_3", "total_and_count"):
        assert f"  {name}: succeeded" in out
    assert "[double_3] doubling 3" in out  # the step's own output, from its subprocess


def test_run_locally_without_a_controller_warns_once_and_runs_unrecorded(mode, capsys):
    PipelineDecorator.run_locally()
    with pytest.warns(UserWarning, match="runs here without being recorded") as warned:
        assert decorated.fan(2) == (2, 2)
    assert len([w for w in warned if "recorded" in str(w.message)]) == 1
    assert "recorded as run" not in capsys.readouterr().out


def test_run_locally_sets_decorated_nested_and_chained_components(mode, capsys):
    PipelineDecorator.run_locally()
    assert decorated.mixed() == {"set": "set:[1, 2, 3]", "decorated": 2, "nested": 110, "chained": 12, "helped": 20}
    out = capsys.readouterr().out
    # the nested call made its own step, named as the controller names a second call
    assert "  outer: succeeded" in out and "  double_1: succeeded" in out


def test_a_failing_component_raises_where_its_value_is_used_naming_the_step(mode, capsys):
    PipelineDecorator.run_locally()
    with pytest.raises(ComponentFailed, match="component step 'broken' failed"):
        decorated.failing()
    assert "ValueError: broken on 1" in capsys.readouterr().out


def test_component_callbacks_run_here_under_run_locally(mode, capsys):
    PipelineDecorator.run_locally()
    decorated.EVENTS.clear()
    # As in ClearML, a pre_execute_callback returning False skips the step and what depends on
    # it, and their values are None; the run still succeeds.
    assert decorated.watched() == [2, None, None]
    events = decorated.EVENTS
    assert ("pre", "watched_double", {"kwargs/x": 1}, "watched") in events
    assert ("pre", "watched_double_1", {"kwargs/x": 3}, "watched") in events
    run_posts = [e for e in events if e[0] == "post"]
    assert len(run_posts) == 1 and run_posts[0][1] == "watched_double" and run_posts[0][2].endswith("/watched_double")
    statuses = [e[1:] for e in events if e[0] == "status"]
    kept = [s for s in statuses if s[0] == "watched_double"]
    assert kept == [("watched_double", "pending", "running"), ("watched_double", "running", "completed")]
    assert [s for s in statuses if s[0] == "watched_double_1"] == [("watched_double_1", "pending", "skipped")]
    # the callbacks ran before the step started, and each post after the step ended
    order = [(e[0], e[1]) for e in events]
    assert order.index(("pre", "watched_double")) < order.index(("status", "watched_double"))
    out = capsys.readouterr().out
    assert "watched_double_1: skipped (skipped: its pre_execute_callback returned False)" in out
    assert "double: skipped (parent watched_double_1 skipped)" in out


def test_a_raising_component_callback_fails_its_step_under_run_locally(mode, monkeypatch):
    PipelineDecorator.run_locally()

    def boom(pipeline, node, parameters):
        raise RuntimeError("callback broke")

    node = decorated.watched_double
    monkeypatch.setitem(node.callbacks, "pre_execute_callback", boom)
    with pytest.raises(ComponentFailed, match="callback broke"):
        decorated.watched()


def test_calls_of_one_component_get_numbered_step_names(mode):
    PipelineDecorator.run_locally()
    values, steps = decorated.names_pipeline()
    assert values == [1, 2, 3]
    assert steps == ["echo", "echo_1", "echo_2"]


def test_a_pipeline_runs_once_per_process_without_multi_instance_support(mode):
    PipelineDecorator.debug_pipeline()
    decorated.fan(1)
    with pytest.raises(RuntimeError, match="multi_instance_support=True"):
        decorated.fan(1)


def test_parallel_multi_instance_pipelines_are_collected_in_call_order(mode):
    @PipelineDecorator.pipeline(name="par", project="t", multi_instance_support="parallel")
    def par(x):
        return decorated.double(x)

    PipelineDecorator.debug_pipeline()
    assert par(1) is None and par(2) is None
    assert PipelineDecorator.wait_for_multi_pipelines() == [2, 4]


@pytest.mark.parametrize("kwargs, arg", [
    ({"docker": "python:3.11"}, "docker"), ({"repo": "https://x"}, "repo"),
    ({"draft": True}, "draft"),
])
def test_components_refuse_what_drover_cannot_do(kwargs, arg):
    with pytest.raises(NotImplementedError, match=f"PipelineDecorator.component: {arg}= is not supported"):
        PipelineDecorator.component(**kwargs)


@pytest.mark.parametrize("kwargs, arg", [
    ({"docker": "python:3.11"}, "docker"), ({"repo_branch": "main"}, "repo_branch"),
    ({"start_controller_locally": True}, "start_controller_locally"),
    ({"artifact_serialization_function": print}, "artifact_serialization_function"),
    ({"pipeline_execution_queue": None}, "pipeline_execution_queue=None"),
])
def test_pipelines_refuse_what_drover_cannot_do(kwargs, arg):
    with pytest.raises(NotImplementedError, match=f"PipelineDecorator.pipeline: {arg}"):
        PipelineDecorator.pipeline(name="p", project="x", **kwargs)


def test_upload_artifact_outside_a_pipeline_stores_nothing(capsys):
    assert PipelineDecorator.upload_artifact("a", 1) is False
    assert "artifact 'a' not stored" in capsys.readouterr().out
    with pytest.raises(NotImplementedError, match="serialization_function"):
        PipelineDecorator.upload_artifact("a", 1, serialization_function=repr)


def test_the_submitted_spec_has_one_driver_step_with_the_arguments_as_parameters():
    spec = decorated.fan.spec({"n": 8})
    validate.validate(spec)
    (driver,) = spec["step"]
    assert driver["driver"] is True and driver["queue"] is None and driver["parents"] == []
    assert spec["parameters"] == {"n": {"default": "8", "description": None, "type": "int"}}
    assert driver["function"]["kwargs"] == {"n": '"${pipeline.n}"'}
    assert driver["function"]["entry"] == "drover_driver"
    assert "def double(x):" in driver["function"]["source"]  # the module travels with it
    seed = int(driver["env"]["PYTHONHASHSEED"])
    assert 1 <= seed < 2**32


def test_pipeline_arguments_must_be_json_values():
    with pytest.raises(ValueError, match=r"argument n=.* cannot be a run parameter"):
        decorated.fan.spec({"n": {1, 2}})


DIGEST = """
import json, sys
from drover.dynamic import Session, call_digest
class NoPut:
    def put(self, path):
        return {"digest": "0" * 64, "size": 0, "file_name": "x"}
session = Session(NoPut(), sys.argv[1])
kwargs = {"tags": {f"tag{i}" for i in range(40)}, "n": 3, "cfg": {"b": [1, 2], "a": None}}
print(call_digest(session.encode("c", kwargs)[2]))
"""


def digest_in_new_interpreter(tmp_path, seed):
    env = {**os.environ, "PYTHONHASHSEED": str(seed), "PYTHONPATH": SDK}
    out = subprocess.run([sys.executable, "-c", DIGEST, str(tmp_path)], env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def test_the_call_digest_is_stable_across_interpreters_with_the_same_hash_seed(tmp_path):
    assert digest_in_new_interpreter(tmp_path, 1234) == digest_in_new_interpreter(tmp_path, 1234)
    # a set pickles in hash order: the run's fixed seed is what makes its digest repeatable
    assert digest_in_new_interpreter(tmp_path, 1234) != digest_in_new_interpreter(tmp_path, 99)


def test_the_call_digest_covers_names_references_and_literals():
    base = {"a": '"${s.o}"', "b": "1"}
    assert call_digest(base) == call_digest(dict(reversed(list(base.items()))))
    assert call_digest(base) != call_digest({**base, "b": "2"})
    assert call_digest(base) != call_digest({"a": '"${s_1.o}"', "b": "1"})
    assert call_digest({"a": "1"}) != call_digest({"b": "1"})


def test_literals_travel_as_json_and_the_rest_as_blobs(tmp_path):
    puts = []

    class Recorder:
        def put(self, path):
            puts.append(path)
            return {"digest": "1" * 64, "size": os.path.getsize(path), "file_name": os.path.basename(path)}

    session = Session(Recorder(), str(tmp_path))
    texts, blobs, _, _ = session.encode("c", {
        "n": 1, "f": 0.5, "s": "x", "l": [1, {"k": None}], "t": (1, 2), "nan": float("nan"),
        "dollar": "${not.a_ref}", "st": {1},
    })
    assert texts == {"n": "1", "f": "0.5", "s": '"x"', "l": '[1,{"k":null}]'}
    assert sorted(blobs) == ["dollar", "nan", "st", "t"]
    assert len(puts) == 4 and all(p.startswith(str(tmp_path)) for p in puts)
    assert json.loads(texts["l"]) == [1, {"k": None}]


def test_a_component_under_another_decorator_is_named_after_its_def():
    assert decorated.one.name == "one"  # not "wrapper", the function plus_one returned


def test_clearml_task_types_are_accepted():
    from drover import TaskTypes

    assert callable(PipelineDecorator.component(task_type=TaskTypes.training))
    assert str(TaskTypes.data_processing) == "data_processing"


@pytest.mark.parametrize("queue", ["services", "drivers"])
def test_reserved_queues_are_refused_for_components(queue):
    with pytest.raises(ValueError, match=f"execution_queue='{queue}' is reserved"):
        PipelineDecorator.component(execution_queue=queue)
    with pytest.raises(ValueError, match="is reserved"):
        PipelineDecorator.set_default_execution_queue(queue)
    with pytest.raises(ValueError, match=f"default_queue='{queue}' is reserved"):
        PipelineDecorator.pipeline(name="p", project="x", default_queue=queue)


def test_the_logger_prints_text_and_scalars_and_ignores_plots(capsys):
    logger = PipelineDecorator.get_logger()
    logger.report_text("hello")
    logger.report_scalar("loss", "train", 0.5, iteration=3)
    with pytest.warns(UserWarning, match="report_histogram has no effect"):
        logger.report_histogram("h", "s", values=[1, 2])
    assert capsys.readouterr().out == "hello\nscalar loss/train @3: 0.5\n"
    with pytest.raises(AttributeError):
        logger.something_else  # noqa: B018
