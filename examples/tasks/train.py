"""Task 3 of examples/tasks: fits a classifier on the arrays of the task `split_task` names and
uploads it with its test accuracy."""
from sklearn.tree import DecisionTreeClassifier

from drover import Task, TaskTypes

task = Task.init(project_name="examples", task_name="iris train", task_type=TaskTypes.training)
settings = {"split_task": "", "max_depth": 3}
task.connect(settings)
task.execute_remotely()

arrays = Task.get_task(task_id=settings["split_task"]).artifacts
model = DecisionTreeClassifier(max_depth=settings["max_depth"])
model.fit(arrays["features_train"].get(), arrays["labels_train"].get())
accuracy = model.score(arrays["features_test"].get(), arrays["labels_test"].get())
task.upload_artifact("model", artifact_object=model)
task.upload_artifact("accuracy", artifact_object=accuracy)
print(f"test accuracy {accuracy:.3f} at max_depth={settings['max_depth']}")
