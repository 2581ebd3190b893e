"""Steps of registered tasks (add_step) under start_locally(run_pipeline_steps_locally=True): each
task's script runs as a subprocess with its step's context, as an agent runs it."""

import socket

import pytest

from drover import PipelineController, Task, registry

MAKE = """
from drover import Task, TaskTypes

task = Task.init(project_name="t", task_name="make", task_type=TaskTypes.data_processing)
args = {"rows": 3, "note": "registered"}
task.connect(args)
task.execute_remotely()  # does nothing inside a step
print(f"making {args['rows']} rows ({type(args['rows']).__name__}) as {task.id}")
task.upload_artifact("dataset", artifact_object=list(range(args["rows"])))
with open("notes.txt", "w") as f:
    f.write(args["note"])
task.upload_artifact("notes", artifact_object="notes.txt")
"""

USE = """
from drover import Task

task = Task.init(project_name="t", task_name="use")
args = {"dataset_task_id": "", "notes_url": "", "scale": 1.0}
task.connect(args)
task.execute_remotely()
made = Task.get_task(task_id=args["dataset_task_id"])
with open(made.artifacts["notes"].get_local_copy()) as f:
    notes = f.read()
task.upload_artifact("scaled", artifact_object={
    "values": [r * args["scale"] for r in made.artifacts["dataset"].get()], "notes": notes,
    "notes_url": args["notes_url"], "id": task.id, "current": Task.current_task() is task,
    "locally": Task.running_locally(), "main": __name__})
"""

FAILS = """
from drover import Task

task = Task.init(project_name="t", task_name="fails")
task.execute_remotely()
raise RuntimeError("this task fails")
"""


@pytest.fixture
def tasks(monkeypatch):
    """Registered tasks by id, as the controller keeps them (this process reaches none: a local
    run then records nothing)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DROVER_URL", f"http://127.0.0.1:{port}")
    registered = {
        name: {"id": name, "script": script, "script_name": f"{name}.py", "requirements": [], "parameters": params}
        for name, script, params in (
            ("make", MAKE, {"General/rows": "3", "General/note": "registered"}),
            ("use", USE, {"General/dataset_task_id": "", "General/notes_url": "", "General/scale": "1.0"}),
            ("fails", FAILS, {}),
        )
    }
    monkeypatch.setattr(registry, "resolve", lambda where, task_id, project, name: registered[task_id])
    return registered


def test_task_steps_run_their_scripts_with_overrides_and_pass_artifacts(tasks, capfd):
    pipe = PipelineController(name="tasks", project="t")
    pipe.add_parameter(name="scale", default=0.5)
    pipe.add_step(name="make", base_task_id="make", parameter_override={"General/rows": 4})
    seen = []
    pipe.add_step(
        name="use",
        base_task_id="use",
        pre_execute_callback=lambda pipeline, node, parameters: seen.append(node.base_task_id) or True,
        parameter_override={
            "General/dataset_task_id": "${make.id}",
            "General/notes_url": "${make.artifacts.notes.url}",
            "General/scale": "${pipeline.scale}",
        },
    )
    pipe.start_locally(run_pipeline_steps_locally=True)
    out = capfd.readouterr().out
    assert pipe._local.status == {"make": "succeeded", "use": "succeeded"}, out
    run_id = pipe._local.run_id
    assert f"making 4 rows (int) as {run_id}/make" in out
    assert pipe._local.values["make"] == {"dataset": [0, 1, 2, 3]}
    scaled = pipe._local.values["use"]["scaled"]
    assert scaled["values"] == [0.0, 0.5, 1.0, 1.5]
    assert scaled["notes"] == "registered"
    assert scaled["notes_url"].startswith("file://") and scaled["notes_url"].endswith("/notes.txt")
    assert (scaled["id"], scaled["current"], scaled["locally"], scaled["main"]) == (
        f"{run_id}/use",
        True,
        False,
        "__main__",
    )
    assert seen == ["use"]  # the callback's node names the registered task
    assert Task.current_task() is None  # the scripts' tasks stayed in their processes
    assert pipe.is_successful()


def test_a_failing_task_script_fails_its_step_and_the_run(tasks, capfd):
    pipe = PipelineController(name="tasks", project="t")
    pipe.add_step(name="fails", base_task_id="fails")
    pipe.add_step(name="use", base_task_id="use", parents=["fails"])
    pipe.add_step(name="make", base_task_id="make", retry_on_failure=0)
    pipe.start_locally(run_pipeline_steps_locally=True)
    out, err = capfd.readouterr()
    assert pipe._local.status == {"fails": "failed", "use": "skipped", "make": "succeeded"}, out + err
    assert "RuntimeError: this task fails" in out
    assert "drover: step 'fails': its script exited with code 1" in err
    assert "drover: pipeline 'tasks' failed locally" in out
    assert not pipe.is_successful()
