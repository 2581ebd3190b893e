"""Function-step pipelines for the end-to-end tests; `python functions.py CASE` submits one.

Cases: exception, two_returns, diamond, local, task. Connection settings come from DROVER_* variables.
"""
import sys

from drover import PipelineController


def explode(x):
    raise ValueError(f"bad input {x}")


def split(n):
    return n, n * 10


def add(a, b):
    return a + b


def uses_task(x):
    from drover import Logger, Task

    task = Task.current_task()
    Logger.current_logger().report_scalar("loss", "train", 0.5, 1)
    try:
        task.upload_artifact("x", x)
    except NotImplementedError as e:
        refused = str(e)
    return {"id": task.id, "name": task.name, "locally": Task.running_locally(),
            "connected": task.connect({"x": x}), "refused": refused}


def source(n):
    return list(range(n))


def total(xs):
    return sum(xs)


def biggest(xs):
    return max(xs)


def combine(t, m):
    return {"total": t, "max": m}


def pipeline(name):
    pipe = PipelineController(name=name, project="e2e", version="1")
    pipe.set_default_execution_queue("default")
    return pipe


def main(case):
    if case == "exception":
        pipe = pipeline("exception")
        pipe.add_function_step(name="explode", function=explode,
                               function_kwargs=dict(x=7), function_return=["never"])
    elif case == "two_returns":
        pipe = pipeline("two returns")
        pipe.add_parameter(name="n", default="4")
        pipe.add_function_step(name="split", function=split,
                               function_kwargs=dict(n=3), function_return=["small", "big"])
        pipe.add_function_step(name="add", function=add,
                               function_kwargs=dict(a="${split.small}", b="${split.big}"),
                               function_return=["sum"])
    elif case == "task":
        pipe = pipeline("task")
        pipe.add_function_step(name="train", function=uses_task, function_kwargs=dict(x=3),
                               function_return=["seen"])
    elif case in ("diamond", "local"):
        pipe = pipeline("diamond")
        pipe.add_function_step(name="source", function=source,
                               function_kwargs=dict(n=5), function_return=["xs"])
        pipe.add_function_step(name="total", function=total,
                               function_kwargs=dict(xs="${source.xs}"), function_return=["t"])
        pipe.add_function_step(name="biggest", function=biggest,
                               function_kwargs=dict(xs="${source.xs}"), function_return=["m"])
        pipe.add_function_step(name="combine", function=combine,
                               function_kwargs=dict(t="${total.t}", m="${biggest.m}"),
                               function_return=["result"])
    else:
        raise SystemExit(f"unknown case {case!r}")
    if case == "local":
        pipe.start_locally(run_pipeline_steps_locally=True)
        print("local pipeline succeeded" if pipe.is_successful() else "local pipeline failed")
    else:
        pipe.start(wait=False)
    print("pipeline submitted")


if __name__ == "__main__":
    main(sys.argv[1])
