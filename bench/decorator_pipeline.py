"""Benchmark 9 helper: one pipeline of N trivial steps, as a decorator pipeline or with add_function_step.

    python bench/decorator_pipeline.py decorator chain|fanout N   submit, wait, print JSON
    python bench/decorator_pipeline.py functions chain|fanout N   the same with PipelineController

Every step computes `x + 1`. `chain`: step i takes step i-1's result (the first takes 0);
`fanout`: step i takes i, no step depends on another. Both ways make the same steps with the
same names (`inc`, `inc_1`, ..., the names ClearML gives repeated component calls), on the
`default` queue, cache off. The decorator pipeline's function only makes the calls (passing a
lazy value on is a DAG edge and does not wait), so neither way reads a result while the run is
timed; the last step's output is checked after the run ended.

Prints one JSON object on its last line; times are milliseconds, measured from just before the
submitting call (the decorated function's call, or `start()`) to the controller's timestamps
of the component steps' first attempts.
"""
import json
import pickle
import sys
import time
import urllib.request

from drover import PipelineController, PipelineDecorator


@PipelineDecorator.component(return_values=["y"])
def inc(x):
    return x + 1


def inc_function(x):
    return x + 1


@PipelineDecorator.pipeline(name="bench-decorator", project="bench", version="1")
def decorated(n=10, shape="chain"):
    if shape == "chain":
        x = 0
        for _ in range(n):
            x = inc(x)
    else:
        for i in range(n):
            inc(i)


def step_name(i):
    return "inc" if i == 0 else f"inc_{i}"


def with_functions(n, shape):
    pipe = PipelineController(project="bench", name="bench-functions", version="1",
                              add_pipeline_tags=False)
    pipe.set_default_execution_queue("default")
    for i in range(n):
        if shape == "chain":
            x = 0 if i == 0 else f"${{{step_name(i - 1)}.y}}"
        else:
            x = i
        pipe.add_function_step(name=step_name(i), function=inc_function, function_kwargs={"x": x},
                               function_return=["y"], cache_executed_step=False)
    return pipe


def submit(way, n, shape):
    """Submits the pipeline; the run's id and the time just before the submitting call."""
    if way == "decorator":
        start = time.time()
        decorated(n=n, shape=shape)
        return decorated.run_ids[-1], start
    pipe = with_functions(n, shape)
    start = time.time()
    pipe.start()
    return pipe._run_id, start


def output(base, run_id, step):
    from drover import settings

    url = f"{base}/api/v1/runs/{run_id}/steps/{step}/artifacts/y"
    request = urllib.request.Request(url, headers=settings.auth_headers(url))
    with urllib.request.urlopen(request, timeout=30) as response:
        return pickle.loads(response.read())


def measure(way, n, shape):
    from drover import api, settings

    base = settings.controller_url()
    run_id, start = submit(way, n, shape)
    while True:
        try:
            view = api.get_run(base, run_id)
            if view["status"] in api.TERMINAL_RUN_STATUSES:
                break
        except api.RunNotFound:
            pass
        time.sleep(0.05)
    submitted = start * 1000.0
    steps = [s for s in view["steps"] if not s.get("driver")]
    firsts = [s["attempts"][0] for s in steps if s["attempts"]]
    result = {
        "way": way, "shape": shape, "n": n, "run_id": run_id, "status": view["status"],
        "error": view.get("error"),
        "steps": {s["name"]: s["status"] for s in view["steps"]},
    }
    if view["status"] != "succeeded" or len(firsts) != n:
        return result
    first_queued = min(a["queued_at"] for a in firsts)
    result.update({
        "to_first_dispatch_ms": first_queued - submitted,
        "to_first_claim_ms": min(a["started_at"] for a in firsts) - submitted,
        "per_step_ms": (max(a["ended_at"] for a in firsts) - first_queued) / n,
        # The mean time between two dispatches; in a decorator fan-out, one component call's
        # round trip through the channel, the agent and the controller.
        "dispatch_spacing_ms": (max(a["queued_at"] for a in firsts) - first_queued) / max(1, n - 1),
        "to_end_ms": view["ended_at"] - submitted,
        "last_output": output(base, run_id, step_name(n - 1)),
    })
    # Where the time went, for reading an outlier: the longest wait for an agent, the longest
    # run, and in a chain the longest gap from a step's end to its successor's dispatch.
    by_name = {s["name"]: s["attempts"][0] for s in steps}
    waits = [(a["started_at"] - a["queued_at"], name) for name, a in by_name.items()]
    runs = [(a["ended_at"] - a["started_at"], name) for name, a in by_name.items()]
    result["longest_wait"] = max(waits)
    result["longest_run"] = max(runs)
    if shape == "chain" and n > 1:
        result["longest_hop"] = max((by_name[step_name(i)]["queued_at"] - by_name[step_name(i - 1)]["ended_at"],
                                     step_name(i)) for i in range(1, n))
    driver = [s for s in view["steps"] if s.get("driver")]
    if driver:
        result["to_driver_claim_ms"] = driver[0]["attempts"][0]["started_at"] - submitted
    return result


def main():
    way, shape, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if way not in ("decorator", "functions") or shape not in ("chain", "fanout") or n < 1:
        raise SystemExit("usage: decorator_pipeline.py decorator|functions chain|fanout N (N >= 1)")
    print(json.dumps(measure(way, n, shape)), flush=True)


if __name__ == "__main__":
    main()
