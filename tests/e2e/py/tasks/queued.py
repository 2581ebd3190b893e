"""A task script that sends itself to a queue: registered, run once as a step there, and exits."""
from drover import Task

task = Task.init(project_name="e2e", task_name="queued task")
args = {"word": "hello"}
task.connect(args)
task.execute_remotely(queue_name="default")
task.upload_artifact("shout", artifact_object=args["word"].upper())
