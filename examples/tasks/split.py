"""Task 2 of examples/tasks: splits the data set of the task `source_task` names into train and
test arrays, uploaded as one artifact each."""
import pickle

from sklearn.model_selection import train_test_split

from drover import Task, TaskTypes

task = Task.init(project_name="examples", task_name="iris split", task_type=TaskTypes.data_processing)
settings = {"source_task": "", "holdout": 0.3, "seed": 7}
task.connect(settings)
task.execute_remotely()

source = Task.get_task(task_id=settings["source_task"])
with open(source.artifacts["iris"].get_local_copy(), "rb") as f:
    iris = pickle.load(f)
parts = train_test_split(iris.data, iris.target, test_size=settings["holdout"], random_state=settings["seed"])
for name, value in zip(["features_train", "features_test", "labels_train", "labels_test"], parts):
    task.upload_artifact(name, artifact_object=value)
print(f"split {len(iris.target)} rows, holding out {settings['holdout']:.0%}")
