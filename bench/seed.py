"""Benchmark 4 helper: the seed pipeline's three functions, run by drover or as plain processes.

    python bench/seed.py drover --cache 0|1   submit the seed pipeline, wait, print JSON
    python bench/seed.py floor DIR            the same functions as three `python` processes
    python bench/seed.py inprocess DIR        the same functions in one fresh `python` process
    python bench/seed.py step N DIR           (internal) one of those processes

The functions are imported from examples/pipeline_from_functions.py and the pipeline is built
exactly as its `__main__` block builds it, except that `cache_executed_step` is a flag: the
warm timed runs turn it off so every step really runs, the all-cached re-runs turn it on.
Prints one JSON object on its last line; times are milliseconds.
"""
import json
import os
import pickle
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

import pipeline_from_functions as seed  # noqa: E402


def build(cache):
    from drover import PipelineController

    pipe = PipelineController(project="examples", name="Pipeline demo", version="1.1",
                              add_pipeline_tags=False)
    pipe.set_default_execution_queue("default")
    pipe.add_parameter(name="url", description="url to pickle file", default=seed.DATA)
    pipe.add_function_step(name="step_one", function=seed.step_one,
                           function_kwargs=dict(pickle_data_url="${pipeline.url}"),
                           function_return=["data_frame"], cache_executed_step=cache)
    pipe.add_function_step(name="step_two", function=seed.step_two,
                           function_kwargs=dict(data_frame="${step_one.data_frame}"),
                           function_return=["processed_data"], cache_executed_step=cache)
    pipe.add_function_step(name="step_three", function=seed.step_three,
                           function_kwargs=dict(data="${step_two.processed_data}"),
                           function_return=["model"], cache_executed_step=cache)
    return pipe


def run_drover(cache):
    from drover import api, settings

    pipe = build(cache)
    start = time.time()
    pipe.start(wait=False)
    run_id = pipe._run_id
    base = settings.controller_url()
    while True:
        try:
            view = api.get_run(base, run_id)
            if view["status"] in api.TERMINAL_RUN_STATUSES:
                break
        except api.RunNotFound:
            pass
        time.sleep(0.01)
    wall_ms = view["ended_at"] - start * 1000.0
    steps = {s["name"]: s["status"] for s in view["steps"]}
    return {"wall_ms": wall_ms, "status": view["status"], "steps": steps, "run_id": run_id}


def run_step(n, workdir):
    path = lambda i: os.path.join(workdir, f"out{i}.pkl")  # noqa: E731
    if n == 1:
        value = seed.step_one(seed.DATA)
    else:
        with open(path(n - 1), "rb") as f:
            given = pickle.load(f)
        value = seed.step_two(given) if n == 2 else seed.step_three(given)
    with open(path(n), "wb") as f:
        pickle.dump(value, f)


def run_floor(workdir):
    start = time.time()
    for n in (1, 2, 3):
        subprocess.run([sys.executable, os.path.abspath(__file__), "step", str(n), workdir],
                       check=True)
    return {"wall_ms": (time.time() - start) * 1000.0}


def run_inprocess(workdir):
    start = time.time()
    subprocess.run([sys.executable, os.path.abspath(__file__), "all", workdir], check=True)
    return {"wall_ms": (time.time() - start) * 1000.0}


def main():
    mode = sys.argv[1]
    if mode == "drover":
        result = run_drover(sys.argv[3] == "1")
    elif mode == "floor":
        result = run_floor(sys.argv[2])
    elif mode == "inprocess":
        result = run_inprocess(sys.argv[2])
    elif mode == "step":
        run_step(int(sys.argv[2]), sys.argv[3])
        return
    elif mode == "all":
        for n in (1, 2, 3):
            run_step(n, sys.argv[2])
        return
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
