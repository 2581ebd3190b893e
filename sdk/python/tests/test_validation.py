"""Mistakes in a pipeline are reported when the step is added, naming the step and the culprit."""
import warnings

import pytest

from drover import PipelineController


def one(x=1):
    return x


def two(a, b):
    return a + b


@pytest.fixture
def pipe():
    p = PipelineController(name="p", project="x", version="1")
    p.add_function_step(name="first", function=one, function_return=["out"])
    return p


def test_duplicate_step(pipe):
    with pytest.raises(ValueError, match="'first' is added twice"):
        pipe.add_function_step(name="first", function=one)


@pytest.mark.parametrize("bad", ["a.b", "has space", "pipeline", "", "a/b"])
def test_bad_step_name(pipe, bad):
    with pytest.raises(ValueError, match="step name"):
        pipe.add_function_step(name=bad, function=one)


def test_reference_to_an_unknown_step_names_both(pipe):
    with pytest.raises(ValueError) as e:
        pipe.add_function_step(name="second", function=two, function_kwargs=dict(a="${nope.out}", b=1))
    assert "'second'" in str(e.value) and "'nope'" in str(e.value)


def test_reference_to_an_unknown_output_lists_the_known_ones(pipe):
    with pytest.raises(ValueError, match=r"returns \['out'\]"):
        pipe.add_function_step(name="second", function=two, function_kwargs=dict(a="${first.other}", b=1))


def test_self_reference(pipe):
    with pytest.raises(ValueError, match="own output"):
        pipe.add_function_step(name="loop", function=one, function_kwargs=dict(x="${loop.out}"),
                               function_return=["out"])


def test_unknown_parent(pipe):
    with pytest.raises(ValueError, match="parent 'ghost'"):
        pipe.add_function_step(name="second", function=one, parents=["ghost"])


@pytest.mark.parametrize("bad", ["a/b", "..", "", "x y"])
def test_bad_return_names(pipe, bad):
    with pytest.raises(ValueError, match="return name"):
        pipe.add_function_step(name="second", function=one, function_return=[bad])


def test_repeated_return_name(pipe):
    with pytest.raises(ValueError, match="repeats"):
        pipe.add_function_step(name="second", function=one, function_return=["r", "r"])


def test_non_json_kwarg_names_step_and_kwarg(pipe):
    with pytest.raises(ValueError) as e:
        pipe.add_function_step(name="second", function=one, function_kwargs=dict(x=object()))
    assert "'second'" in str(e.value) and "'x'" in str(e.value)
    with pytest.raises(ValueError, match="'x'"):
        pipe.add_function_step(name="third", function=one, function_kwargs=dict(x=float("nan")))


def test_kwargs_must_fit_the_function(pipe):
    with pytest.raises(ValueError, match="two"):
        pipe.add_function_step(name="second", function=two, function_kwargs=dict(a=1))
    with pytest.raises(ValueError, match="unexpected"):
        pipe.add_function_step(name="third", function=one, function_kwargs=dict(y=1))


def test_lambdas_are_refused(pipe):
    with pytest.raises(ValueError, match="lambda"):
        pipe.add_function_step(name="second", function=lambda: 1)


def test_unknown_parameter_is_found_before_submitting(pipe):
    pipe.add_function_step(name="second", function=one, function_kwargs=dict(x="${pipeline.nope}"))
    with pytest.raises(ValueError, match="no parameter 'nope'"):
        pipe._submit_message()


def test_parameter_without_default_is_refused(pipe):
    pipe.add_parameter(name="n")
    with pytest.raises(ValueError, match="'n' has no default"):
        pipe._submit_message()


def test_bad_queue_name(pipe):
    with pytest.raises(ValueError, match="queue name"):
        pipe.set_default_execution_queue("a/b")
    with pytest.raises(ValueError, match="queue name"):
        pipe.add_function_step(name="second", function=one, execution_queue="no way")


def test_time_limit_must_be_positive(pipe):
    with pytest.raises(ValueError, match="time_limit"):
        pipe.add_function_step(name="second", function=one, time_limit=0)


@pytest.mark.parametrize("arg, value", [
    ("docker", "python:3.11"), ("repo", "https://example.invalid/r.git"), ("draft", True),
    ("working_dir", "src"), ("retry_on_failure", print),
])
def test_unsupported_step_arguments_raise_naming_them(pipe, arg, value):
    with pytest.raises(NotImplementedError, match=arg):
        pipe.add_function_step(name="second", function=one, **{arg: value})


def test_a_step_callback_must_be_callable(pipe):
    with pytest.raises(TypeError, match="post_execute_callback"):
        pipe.add_function_step(name="second", function=one, post_execute_callback="not a function")


@pytest.mark.parametrize("arg, value", [
    ("docker", "python:3.11"), ("abort_on_failure", True), ("repo", "x"),
    ("artifact_serialization_function", print), ("retry_on_failure", print),
])
def test_unsupported_pipeline_arguments_raise_naming_them(arg, value):
    with pytest.raises(NotImplementedError, match=arg):
        PipelineController(name="p", project="x", version="1", **{arg: value})


def test_continue_behaviour_drover_lacks_is_refused(pipe):
    with pytest.raises(NotImplementedError, match="skip_children_on_fail"):
        pipe.add_function_step(name="second", function=one,
                               continue_behaviour={"skip_children_on_fail": False})


def test_start_on_another_queue_is_refused(pipe):
    with pytest.raises(NotImplementedError, match="services"):
        pipe.start(queue="other")


def test_harmless_arguments_warn_only_when_set():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PipelineController(name="p", project="x", version="1", add_pipeline_tags=False,
                           add_run_number=False, enable_local_imports=False, skip_global_imports=True)
    with pytest.warns(UserWarning, match="add_pipeline_tags"):
        PipelineController(name="p", project="x", version="1", add_pipeline_tags=True)
    p = PipelineController(name="p", project="x", version="1")
    with pytest.warns(UserWarning, match="tags"):
        p.add_function_step(name="s", function=one, tags=["a"])


def uses_global():
    return warnings.catch_warnings


def test_module_level_names_in_a_step_warn(pipe):
    with pytest.warns(UserWarning, match="warnings"):
        pipe.add_function_step(name="second", function=uses_global)


def test_helper_functions_are_shipped_and_silence_the_warning(pipe):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.add_function_step(name="second", function=one, helper_functions=[two])
    source = pipe._submit_message()["body"]["spec"]["step"][1]["function"]["source"]
    assert "def one(" in source and "def two(" in source


def test_clearml_defaults_need_no_version_and_warn_about_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = PipelineController(name="p", project="x", pool_frequency=0.2, target_project=True)
    p.add_function_step(name="s", function=one)
    assert p._submit_message()["body"]["spec"]["pipeline"]["version"] == ""
    with pytest.warns(UserWarning, match="pool_frequency"):
        PipelineController(name="p", project="x", pool_frequency=1.0)


def test_no_default_queue_goes_back_to_drovers(pipe):
    pipe.set_default_execution_queue("gpu")
    assert pipe.get_pipeline_dag()["first"]["queue"] == "gpu"
    pipe.set_default_execution_queue(None)
    assert pipe.get_pipeline_dag()["first"]["queue"] == "default"


def test_steps_from_tasks_refuse_what_drover_cannot_do_before_looking_the_task_up(pipe):
    with pytest.raises(NotImplementedError, match=r"add_step\('t'\): base_task_factory=.*base_task_id="):
        pipe.add_step(name="t", base_task_factory=lambda node: None)
    with pytest.raises(NotImplementedError, match=r"task_overrides="):
        pipe.add_step(name="t", base_task_project="x", base_task_name="y", task_overrides={"a": 1})


def test_stop_mark_failed_is_refused_naming_the_alternative(pipe):
    with pytest.raises(NotImplementedError, match=r"mark_failed.*stop\(mark_aborted=True\)"):
        pipe.stop(mark_failed=True)


def test_parameter_references_are_filled_in_from_earlier_steps_when_the_pipeline_is_built(pipe, monkeypatch):
    from drover import registry

    registered = {"id": "t1", "script": "print(1)\n", "script_name": "s.py", "requirements": [],
                  "parameters": {"General/rows": "3", "General/source": ""}}
    monkeypatch.setattr(registry, "resolve", lambda where, task_id, project, name: registered)
    pipe.add_function_step(name="second", function=one, function_kwargs={"x": 5}, function_return=["y"])
    pipe.add_step(name="data", base_task_id="t1", parameter_override={"General/source": "${first.id}"})
    pipe.add_step(name="use", base_task_id="t1", parameter_override={
        "General/rows": "${data.parameters.General/rows}", "General/source": "${data.parameters.General/source}",
        "General/x": "x=${second.parameters.kwargs/x}"})
    use = pipe._step("use")
    assert use is not None
    assert use.parameters == {"General/rows": "3", "General/source": "${first.id}", "General/x": "x=5"}
    # The steps named are parents, and so is `first`, whose reference a parameter held.
    assert use.all_parents() == ["data", "first", "second"]
    with pytest.raises(ValueError, match=r"step 'data' has no parameter 'General/gone' \(it has \['General/rows', "):
        pipe.add_step(name="bad", base_task_id="t1",
                      parameter_override={"General/x": "${data.parameters.General/gone}"})
    with pytest.raises(ValueError, match=r"there is no step 'ghost'"):
        pipe.add_step(name="bad", base_task_id="t1",
                      parameter_override={"General/x": "${ghost.parameters.General/x}"})
