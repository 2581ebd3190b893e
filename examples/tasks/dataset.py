"""Task 1 of examples/tasks: publishes the iris data set as the artifact `iris`.

Run once with a controller reachable (`python examples/make_iris_pickle.py` first) to register
it; `execute_remotely()` then stops the script. As a pipeline step it runs to the end.
"""
import os

from drover import StorageManager, Task, TaskTypes

task = Task.init(project_name="examples", task_name="iris dataset", task_type=TaskTypes.data_processing)
settings = {"source": os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "iris.pkl")}
task.connect(settings)
task.execute_remotely()

local = StorageManager.get_local_copy(settings["source"])
task.upload_artifact("iris", artifact_object=local)
print(f"published {local} as artifact 'iris' of task {task.id}")
