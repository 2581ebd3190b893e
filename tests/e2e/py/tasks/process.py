"""A task script that reads another step's artifact through the task id it is given."""
from drover import Task

task = Task.init(project_name="e2e", task_name="process")
args = {"dataset_task_id": "", "scale": 1.0, "label": "none", "keep": True}
task.connect(args)
task.execute_remotely()
rows = Task.get_task(task_id=args["dataset_task_id"]).artifacts["dataset"].get()
task.upload_artifact("scaled", artifact_object={
    "values": [r * args["scale"] for r in rows], "scale_type": type(args["scale"]).__name__,
    "label": args["label"], "keep": args["keep"], "id": task.id, "main": __name__,
})
