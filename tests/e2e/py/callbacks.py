"""PipelineControllers given to start() whose steps have callbacks, for the end-to-end tests.

`python callbacks.py CASE [ARG]`: `functions` (every callback kind on function steps; one step
is skipped by its pre_execute_callback, and so its child), `gated` (takes a file: the step's
pre_execute_callback waits for it to exist, so the test can see the step held), `raising` (a
pre_execute_callback raises), `tasks` (callbacks on add_step steps of the task `make data`,
registered first by tests/e2e/py/tasks/make_data.py). Each prints "submitted as run ID".
Connection settings come from DROVER_*.
"""
import sys

from drover import PipelineController


def double(x):
    print(f"doubling {x}")
    return x * 2


def pre(pipeline, node, parameters):
    from drover.channel import Client

    held = next(s for s in Client.from_env().run()["steps"] if s["name"] == node.name)
    print(f"pre {node.name} {parameters} held {held['status']} {held.get('pending_reason')}", flush=True)
    return node.name != "skipped"


def post(pipeline, node):
    print(f"post {node.name} {node.status} {node.executed}", flush=True)


def changed(pipeline, node, previous):
    print(f"status {node.name} {previous} -> {node.status}", flush=True)


def gate(pipeline, node, parameters):
    import os
    import time

    path = pipeline.get_parameters()["gate"]
    while not os.path.exists(path):
        time.sleep(0.1)
    print(f"gate {node.name} opened", flush=True)
    return True


def explode(pipeline, node, parameters):
    raise ValueError(f"no go for {node.name}")


def task_pre(pipeline, node, parameters):
    print(f"task pre {node.name} {node.base_task_id} {sorted(parameters.items())}", flush=True)
    return True


HOOKS = dict(pre_execute_callback=pre, post_execute_callback=post, status_change_callback=changed)


def functions():
    pipe = PipelineController(name="callbacks", project="e2e", version="1")
    pipe.add_parameter("x", 2)
    pipe.add_function_step("first", double, function_kwargs={"x": "${pipeline.x}"}, function_return=["y"],
                           **HOOKS)
    pipe.add_function_step("skipped", double, function_kwargs={"x": "${first.y}"}, function_return=["y"],
                           **HOOKS)
    pipe.add_function_step("after", double, function_kwargs={"x": "${skipped.y}"}, function_return=["y"],
                           **HOOKS)
    pipe.add_function_step("other", double, function_kwargs={"x": "${first.y}"}, function_return=["y"],
                           post_execute_callback=post)
    return pipe


def gated(path):
    pipe = PipelineController(name="gated", project="e2e", version="1")
    pipe.add_parameter("gate", path)
    pipe.add_function_step("first", double, function_kwargs={"x": 1}, function_return=["y"])
    pipe.add_function_step("gated", double, function_kwargs={"x": "${first.y}"}, function_return=["y"],
                           pre_execute_callback=gate)
    return pipe


def raising():
    pipe = PipelineController(name="raising", project="e2e", version="1")
    pipe.add_function_step("first", double, function_kwargs={"x": 1}, function_return=["y"])
    pipe.add_function_step("second", double, function_kwargs={"x": "${first.y}"}, function_return=["y"],
                           pre_execute_callback=explode)
    return pipe


def tasks():
    pipe = PipelineController(name="task callbacks", project="e2e", version="1")
    pipe.set_default_execution_queue("default")
    pipe.add_step(name="make", base_task_project="e2e", base_task_name="make data",
                  parameter_override={"General/rows": 4}, pre_execute_callback=task_pre,
                  post_execute_callback=post, status_change_callback=changed)
    return pipe


if __name__ == "__main__":
    case = sys.argv[1]
    if case == "functions":
        built = functions()
    elif case == "gated":
        built = gated(sys.argv[2])
    elif case == "raising":
        built = raising()
    elif case == "tasks":
        built = tasks()
    else:
        raise SystemExit(f"unknown case {case!r}")
    built.start(wait=False)
