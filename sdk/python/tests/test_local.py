"""start_locally(run_pipeline_steps_locally=True): the whole pipeline in this process."""
import json
import os
import subprocess
import sys

import pytest

from drover import PipelineController


def source(n):
    return list(range(n))


def total(xs):
    return sum(xs)


def biggest(xs):
    result = max(xs)
    xs.append(100)  # each consumer gets its own copy: `total` must not see this
    return result


def combine(t, m, label):
    return {"total": t, "max": m, "label": label}


def read_path(path):
    import pickle

    with open(path.split("=", 1)[1], "rb") as f:
        return pickle.load(f)


def split(n):
    return n, n * 10


def explode(x):
    raise ValueError(f"bad input {x}")


def never_called(v):
    raise AssertionError("a step after a failure ran")


def diamond():
    pipe = PipelineController(name="diamond", project="t", version="1")
    pipe.add_parameter(name="label", default="run-1")
    pipe.add_function_step(name="source", function=source, function_kwargs=dict(n=5), function_return=["xs"])
    pipe.add_function_step(name="biggest", function=biggest, function_kwargs=dict(xs="${source.xs}"),
                           function_return=["m"])
    pipe.add_function_step(name="total", function=total, function_kwargs=dict(xs="${source.xs}"),
                           function_return=["t"])
    pipe.add_function_step(name="combine", function=combine, function_return=["result"],
                           function_kwargs=dict(t="${total.t}", m="${biggest.m}", label="${pipeline.label}!"))
    pipe.add_function_step(name="path", function=read_path, function_return=["copy"],
                           function_kwargs=dict(path="file=${combine.result}"))
    return pipe


def test_a_diamond_runs_in_order_and_passes_values(capsys):
    pipe = diamond()
    assert pipe.start_locally(run_pipeline_steps_locally=True) is None
    assert pipe.is_successful()
    values = pipe._local.values
    assert values["combine"]["result"] == {"total": 10, "max": 4, "label": "run-1!"}
    assert values["path"]["copy"] == values["combine"]["result"]
    assert values["source"]["xs"] == [0, 1, 2, 3, 4]
    out = capsys.readouterr().out
    assert "  combine: succeeded" in out and "succeeded locally" in out


def echo(text):
    return text


def test_parameters_are_substituted_as_the_controller_does():
    """A parameter's value is text: `${...}` in it is not a reference, and `$${` stays literal."""
    pipe = PipelineController(name="params", project="t", version="1")
    pipe.add_parameter(name="p", default="${x.y} and $${z}")
    pipe.add_function_step(name="whole", function=echo, function_kwargs=dict(text="${pipeline.p}"),
                           function_return=["out"])
    pipe.add_function_step(name="mixed", function=echo, function_return=["out"],
                           function_kwargs=dict(text="[${pipeline.p}] $${pipeline.p} ${HOME}"))
    pipe.start_locally(run_pipeline_steps_locally=True)
    assert pipe.is_successful()
    assert pipe._local.values["whole"]["out"] == "${x.y} and $${z}"
    assert pipe._local.values["mixed"]["out"] == "[${x.y} and $${z}] ${pipeline.p} ${HOME}"


def test_several_returns_unpack_the_tuple():
    pipe = PipelineController(name="two", project="t", version="1")
    pipe.add_function_step(name="split", function=split, function_kwargs=dict(n=3),
                           function_return=["small", "big"])
    pipe.start_locally(run_pipeline_steps_locally=True)
    assert pipe.is_successful()
    assert pipe._local.values["split"] == {"small": 3, "big": 30}


def test_a_return_count_mismatch_fails_the_step(capsys):
    pipe = PipelineController(name="two", project="t", version="1")
    pipe.add_function_step(name="split", function=split, function_kwargs=dict(n=3),
                           function_return=["a", "b", "c"])
    pipe.start_locally(run_pipeline_steps_locally=True)
    assert not pipe.is_successful()
    assert "returned 2 values" in capsys.readouterr().err


def test_an_exception_skips_its_dependents_while_independent_steps_finish(capsys):
    pipe = PipelineController(name="boom", project="t", version="1")
    pipe.add_function_step(name="explode", function=explode, function_kwargs=dict(x=7),
                           function_return=["never"])
    pipe.add_function_step(name="after", function=never_called, function_kwargs=dict(v="${explode.never}"))
    pipe.add_function_step(name="independent", function=source, function_kwargs=dict(n=1))
    pipe.start_locally(run_pipeline_steps_locally=True)
    assert not pipe.is_successful()
    captured = capsys.readouterr()
    assert "Traceback" in captured.err and "ValueError: bad input 7" in captured.err
    assert pipe._local.status == {"explode": "failed", "after": "skipped", "independent": "succeeded"}
    assert "  after: skipped (parent explode failed)" in captured.out
    assert "failed locally" in captured.out


def test_continue_on_fail_skips_only_the_dependents(capsys):
    pipe = PipelineController(name="boom", project="t", version="1")
    pipe.add_function_step(name="explode", function=explode, function_kwargs=dict(x=1),
                           function_return=["never"], continue_on_fail=True, retry_on_failure=1)
    pipe.add_function_step(name="after", function=never_called, function_kwargs=dict(v="${explode.never}"))
    pipe.add_function_step(name="independent", function=source, function_kwargs=dict(n=1))
    pipe.start_locally(run_pipeline_steps_locally=True)
    # The run succeeded; as in ClearML, its failed and skipped steps count unless told not to.
    assert pipe.is_successful(fail_on_step_fail=False)
    assert not pipe.is_successful()
    assert pipe._local.status == {"explode": "failed", "after": "skipped", "independent": "succeeded"}
    assert capsys.readouterr().err.count("ValueError: bad input 1") == 2  # one retry


def exits():
    import sys

    sys.exit(3)


def test_a_step_calling_sys_exit_fails_without_ending_this_process(capsys):
    pipe = PipelineController(name="exit", project="t", version="1")
    pipe.add_function_step(name="exits", function=exits)
    pipe.add_function_step(name="independent", function=source, function_kwargs=dict(n=1))
    pipe.start_locally(run_pipeline_steps_locally=True)
    assert pipe._local.status == {"exits": "failed", "independent": "succeeded"}
    assert "SystemExit: 3" in capsys.readouterr().err


def test_a_step_that_is_not_self_contained_fails_locally_too():
    pipe = PipelineController(name="p", project="t", version="1")
    with pytest.warns(UserWarning, match="pytest"):
        pipe.add_function_step(name="uses_pytest", function=uses_module_global)
    pipe.start_locally(run_pipeline_steps_locally=True)
    assert not pipe.is_successful()


def uses_module_global():
    return pytest.__name__


def succeed():
    return None


def fail():
    raise RuntimeError("this step fails")


SKIPS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "protocol", "tests", "golden", "cases",
                     "skips.json")
with open(SKIPS, encoding="utf-8") as _f:
    SKIP_CASES = json.load(_f)["cases"]


@pytest.mark.parametrize("case", SKIP_CASES, ids=lambda c: c["name"])
def test_shared_skip_cases_match_the_scheduler(case):
    """The cases the controller's scheduler runs too (controller/src/scheduler/tests/skips.rs)."""
    pipe = PipelineController(name="skips", project="t", version="1")
    for step in case["steps"]:
        pipe.add_function_step(name=step["name"], function=fail if step.get("fails") else succeed,
                               parents=step["parents"], continue_on_fail=step.get("continue_on_fail", False))
    pipe.start_locally(run_pipeline_steps_locally=True)
    assert pipe._local.status == case["statuses"]
    assert pipe.is_successful(fail_on_step_fail=False) == (case["run"] == "succeeded")
    every_step_ok = all(status == "succeeded" for status in case["statuses"].values())
    assert pipe.is_successful() == (case["run"] == "succeeded" and every_step_ok)


FAILING_SCRIPT = """
from drover import PipelineController


def fail():
    raise RuntimeError("this step fails")


pipe = PipelineController(name="exits", project="t")
pipe.add_function_step(name="fail", function=fail)
pipe.start_locally(run_pipeline_steps_locally=True)
print("successful:", pipe.is_successful())
"""


def test_a_failed_local_run_ends_the_process_normally_as_in_clearml(tmp_path):
    """ClearML marks the pipeline failed and returns from start_locally; the exit status stays 0."""
    script = tmp_path / "exits.py"
    script.write_text(FAILING_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "drover: pipeline 'exits' failed locally" in out.stdout
    assert "successful: False" in out.stdout
    assert "RuntimeError: this step fails" in out.stderr


def test_step_callbacks_run_here_and_a_false_pre_execute_skips_the_subtree():
    seen = []

    def pre(pipeline, node, parameters):
        seen.append(("pre", node.name, dict(parameters)))
        if node.name == "total":
            return False
        if node.name == "source":
            parameters["kwargs/n"] = 3  # the step runs with what the callback leaves
        return True

    def post(pipeline, node):
        seen.append(("post", node.name, node.status, pipeline is pipe))

    def changed(pipeline, node, previous):
        seen.append(("status", node.name, previous, node.status))

    pipe = PipelineController(name="callbacks", project="t", version="1")
    callbacks = dict(pre_execute_callback=pre, post_execute_callback=post, status_change_callback=changed)
    pipe.add_function_step(name="source", function=source, function_kwargs=dict(n=5), function_return=["xs"],
                           **callbacks)
    pipe.add_function_step(name="total", function=total, function_kwargs=dict(xs="${source.xs}"),
                           function_return=["t"], **callbacks)
    pipe.add_function_step(name="biggest", function=biggest, function_kwargs=dict(xs="${source.xs}"),
                           function_return=["m"], **callbacks)
    pipe.add_function_step(name="combine", function=combine, function_return=["result"], **callbacks,
                           function_kwargs=dict(t="${total.t}", m="${biggest.m}", label="x"))
    pipe.start_locally(run_pipeline_steps_locally=True)
    assert pipe.is_successful(fail_on_step_fail=False)
    assert pipe._local.values["source"]["xs"] == [0, 1, 2]
    assert pipe._local.status == {"source": "succeeded", "total": "skipped", "biggest": "succeeded",
                                  "combine": "skipped"}
    assert ("pre", "source", {"kwargs/n": 5}) in seen
    assert ("pre", "total", {"kwargs/xs": "${source.xs}"}) in seen
    assert ("status", "source", "pending", "running") in seen
    assert ("status", "source", "running", "completed") in seen
    assert ("status", "total", "pending", "skipped") in seen
    assert ("post", "source", "completed", True) in seen
    assert ("post", "biggest", "completed", True) in seen
    assert not any(e[0] == "post" and e[1] in ("total", "combine") for e in seen)
    assert not any(e[0] == "pre" and e[1] == "combine" for e in seen)  # skipped under its parent
