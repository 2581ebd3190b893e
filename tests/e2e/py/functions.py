"""Function-step pipelines for the end-to-end tests; `python functions.py CASE` submits one.

Cases: exception, two_returns, diamond, local, task, task_artifacts, missing_artifact. Connection settings come from DROVER_* variables.
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
    uploaded = task.upload_artifact("x", x)
    return {"id": task.id, "name": task.name, "locally": Task.running_locally(),
            "connected": task.connect({"x": x}), "uploaded": uploaded}


def makes_artifacts(rows):
    import os

    from drover import Task

    task = Task.current_task()
    task.upload_artifact("table", artifact_object={"rows": rows})
    with open("notes.txt", "w") as f:
        f.write("plain file\n")
    task.upload_artifact("notes", artifact_object="notes.txt")
    os.makedirs("model/weights", exist_ok=True)
    with open("model/weights/w.txt", "w") as f:
        f.write("0.5\n")
    task.upload_artifact("model", artifact_object="model")
    try:
        task.upload_artifact("count", artifact_object=1)
    except ValueError as e:
        clash = str(e)
    return len(rows), clash


def reads_artifacts(producer, notes_url):
    import os

    from drover import StorageManager, Task

    other = Task.get_task(task_id=producer)
    found = other.artifacts
    folder = found["model"].get_local_copy()
    with open(os.path.join(folder, "weights", "w.txt")) as f:
        weight = f.read().strip()
    with open(found["notes"].get_local_copy()) as f:
        notes = f.read().strip()
    by_url = StorageManager.get_local_copy(found["table"].url)
    with open(StorageManager.get_local_copy(notes_url)) as f:
        notes_by_reference = f.read().strip()
    try:
        other.upload_artifact("x", 1)
    except PermissionError as e:
        refused = str(e)
    return {"names": sorted(found), "table": found["table"].get(), "count": found["count"].get(),
            "types": {n: a.type for n, a in sorted(found.items())}, "weight": weight, "notes": notes,
            "by_url": os.path.basename(by_url), "refused": "read-only" in refused, "id": other.id,
            "url": found["table"].url, "notes_url": notes_url, "notes_by_reference": notes_by_reference}


def never_runs(url):
    return url


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
    elif case == "task_artifacts":
        pipe = pipeline("task artifacts")
        pipe.add_function_step(name="make", function=makes_artifacts, function_kwargs=dict(rows=[1, 2, 3]),
                               function_return=["count", "clash"])
        pipe.add_function_step(name="read", function=reads_artifacts, parents=["make"],
                               function_kwargs=dict(producer="${make.id}", notes_url="${make.artifacts.notes.url}"),
                               function_return=["seen"])
    elif case == "missing_artifact":
        pipe = pipeline("missing artifact")
        pipe.add_function_step(name="make", function=makes_artifacts, function_kwargs=dict(rows=[1]),
                               function_return=["count", "clash"])
        pipe.add_function_step(name="use", function=never_runs,
                               function_kwargs=dict(url="${make.artifacts.ghost.url}"), function_return=["url"])
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
