"""The seed pipeline (examples/pipeline_from_functions.py) as a module the tests can build without
submitting: the same step functions, imported from the example."""
import importlib.util
import os

from drover import PipelineController

_EXAMPLE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "examples",
    "pipeline_from_functions.py",
)
_spec = importlib.util.spec_from_file_location("pipeline_from_functions", _EXAMPLE)
_example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_example)
step_one, step_two, step_three = _example.step_one, _example.step_two, _example.step_three


def build(url):
    """The script's main block up to (not including) `pipe.start()`."""
    pipe = PipelineController(
        project="examples", name="Pipeline demo", version="1.1", add_pipeline_tags=False,
    )
    pipe.set_default_execution_queue("default")
    pipe.add_parameter(name="url", description="url to pickle file", default=url)
    pipe.add_function_step(
        name="step_one", function=step_one,
        function_kwargs=dict(pickle_data_url="${pipeline.url}"),
        function_return=["data_frame"], cache_executed_step=True,
    )
    pipe.add_function_step(
        name="step_two", function=step_two,
        function_kwargs=dict(data_frame="${step_one.data_frame}"),
        function_return=["processed_data"], cache_executed_step=True,
    )
    pipe.add_function_step(
        name="step_three", function=step_three,
        function_kwargs=dict(data="${step_two.processed_data}"),
        function_return=["model"], cache_executed_step=True,
    )
    return pipe
