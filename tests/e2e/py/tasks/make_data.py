"""A task script: run once on its own it registers itself and exits; as a step it uploads rows."""
from drover import Task, TaskTypes

task = Task.init(project_name="e2e", task_name="make data", task_type=TaskTypes.data_processing)
args = {"rows": 3}
task.connect(args)
task.execute_remotely()
task.upload_artifact("dataset", artifact_object=list(range(args["rows"])))
print(f"uploaded {args['rows']} rows")
