"""The three registered tasks of examples/tasks as one pipeline: each step runs its task's script
with its parameters overridden, and hands its task id to the next with `${step.id}`.

    python examples/tasks/dataset.py; python examples/tasks/split.py; python examples/tasks/train.py
    python examples/tasks/pipeline.py
"""
from drover import PipelineController

pipe = PipelineController(name="iris from tasks", project="examples", version="1.0")
pipe.set_default_execution_queue("default")
pipe.add_parameter(name="depth", default="4")
pipe.add_step(name="data", base_task_project="examples", base_task_name="iris dataset")
pipe.add_step(name="split", base_task_project="examples", base_task_name="iris split",
              parameter_override={"General/source_task": "${data.id}", "General/holdout": 0.25})
pipe.add_step(name="train", base_task_project="examples", base_task_name="iris train",
              parameter_override={"General/split_task": "${split.id}", "General/max_depth": "${pipeline.depth}"},
              cache_executed_step=True)
pipe.start()
print("the accuracy is artifact accuracy of step train: drover artifacts get RUN train accuracy")
