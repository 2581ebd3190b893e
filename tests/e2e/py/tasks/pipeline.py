"""Runs the two registered task scripts as a pipeline, with overrides and references: submitted,
or with `--locally` here (start_locally(run_pipeline_steps_locally=True))."""
import sys

from drover import PipelineController

pipe = PipelineController(name="from tasks", project="e2e", version="1")
pipe.set_default_execution_queue("default")
pipe.add_parameter(name="label", default="from the pipeline")
pipe.add_step(name="make", base_task_project="e2e", base_task_name="make data",
              parameter_override={"General/rows": 4})
pipe.add_step(name="process", base_task_project="e2e", base_task_name="process",
              parameter_override={"General/dataset_task_id": "${make.id}", "General/scale": "0.5",
                                  "General/label": "${pipeline.label}, ${make.parameters.General/rows} rows"})
if sys.argv[1:] == ["--locally"]:
    pipe.start_locally(run_pipeline_steps_locally=True)
    print("successful:", pipe.is_successful())
else:
    pipe.start(wait=False)
    print("pipeline submitted")
