"""Pipelines run in this process and recorded with the controller, for the end-to-end tests.

`python local_runs.py CASE [ARG]`: `ok` (a decorator pipeline under run_locally(): a fan-out,
a nested component and prints), `raising` (a component raises, so the pipeline does), `hang`
(takes a file: the pipeline function writes it and then waits to be killed), `controller`
(a PipelineController run with start_locally(run_pipeline_steps_locally=True)), `callbacks`
(the same with step callbacks; one step is skipped by its pre_execute_callback), `driven` (those
callbacks under start_locally(): the steps on agents, the callbacks here). Connection
settings come from DROVER_*.
"""
import sys

from drover import PipelineController, PipelineDecorator


@PipelineDecorator.component(return_values=["squared"])
def square(x):
    print(f"squaring {x}")
    return x * x


@PipelineDecorator.component(return_values=["total"])
def add_all(values):
    return sum(values)


@PipelineDecorator.component(return_values=["plus"])
def square_plus_one(x):
    return square(x) + 1


@PipelineDecorator.component(return_values=["never"])
def explode(x):
    raise ValueError(f"bad input {x}")


@PipelineDecorator.pipeline(name="local-ok", project="e2e", version="1", return_value="answer")
def ok(width=3, label="fan"):
    squares = [square(i) for i in range(width)]
    total = add_all(squares)
    nested = square_plus_one(total)
    print(f"pipeline {label}: total {total}, nested {nested}")
    return int(nested)


@PipelineDecorator.pipeline(name="local-raising", project="e2e", version="1")
def raising():
    value = explode(7)
    print("never printed", value)


@PipelineDecorator.pipeline(name="local-hang", project="e2e", version="1")
def hang(marker):
    import time

    first = square(2)
    print("first", first, flush=True)
    open(marker, "w").close()
    while True:  # the test kills this process here
        time.sleep(0.1)


def double(x):
    print(f"doubling {x}")
    return x * 2


def controller():
    pipe = PipelineController(name="local-controller", project="e2e", version="1")
    pipe.add_parameter("x", 5)
    pipe.add_function_step("first", double, function_kwargs={"x": "${pipeline.x}"}, function_return=["y"])
    pipe.add_function_step("second", double, function_kwargs={"x": "${first.y}"}, function_return=["y"])
    pipe.start_locally(run_pipeline_steps_locally=True)
    print("successful", pipe.is_successful())


def callbacks(steps_here=True):
    def pre(pipeline, node, parameters):
        print(f"pre {node.name} {parameters}")
        if not steps_here:  # the controller holds the step while its callback runs
            from drover import api, settings

            view = api.get_run(settings.controller_url(), pipeline.id)
            held = next(s for s in view["steps"] if s["name"] == node.name)
            print(f"held {node.name}: {held['status']}, {held['message']}")
        return node.name != "skipped"

    def post(pipeline, node):
        print(f"post {node.name} {node.status} {node.executed}")

    def changed(pipeline, node, previous):
        print(f"status {node.name} {previous} -> {node.status}")

    hooks = dict(pre_execute_callback=pre, post_execute_callback=post, status_change_callback=changed)
    pipe = PipelineController(name="local-callbacks", project="e2e", version="1")
    pipe.add_function_step("first", double, function_kwargs={"x": 2}, function_return=["y"], **hooks)
    pipe.add_function_step("skipped", double, function_kwargs={"x": "${first.y}"}, function_return=["y"],
                           **hooks)
    pipe.add_function_step("after", double, function_kwargs={"x": "${skipped.y}"}, function_return=["y"],
                           **hooks)
    pipe.add_function_step("other", double, function_kwargs={"x": "${first.y}"}, function_return=["y"],
                           **hooks)
    pipe.start_locally(run_pipeline_steps_locally=steps_here)
    print("successful", pipe.is_successful(fail_on_step_fail=False))


if __name__ == "__main__":
    PipelineDecorator.run_locally()
    case = sys.argv[1]
    if case == "ok":
        print("answer", ok(width=3, label="fan"))
    elif case == "raising":
        raising()
    elif case == "hang":
        hang(sys.argv[2])
    elif case == "controller":
        controller()
    elif case == "callbacks":
        callbacks()
    elif case == "driven":
        callbacks(steps_here=False)
    else:
        raise SystemExit(f"unknown case {case!r}")
