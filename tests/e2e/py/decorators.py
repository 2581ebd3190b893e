"""Decorator pipelines for the end-to-end tests; `python decorators.py CASE [ARG]` submits one.

Each case calls a `@PipelineDecorator.pipeline` function, which submits a run whose driver runs
this module on an agent serving `drivers`. Cases: lazy, parallel, values, fanout, nested,
raising, multi (two runs of one pipeline, waited for), replay, diverge (these two take a
directory where the driver's first attempt writes `driver-waiting` and then waits to be
killed), growing (takes a file: the driver prints, waits for the file to exist, then adds one
step a second apart, each after the previous one's result), watched (component callbacks, which
print; the call with x=3 is declined), watched_local (the same under run_locally()),
raising_callback. Connection settings come from DROVER_*.
"""
import sys

from drover import PipelineDecorator


@PipelineDecorator.component(return_values=["numbers", "label"])
def make(n):
    return list(range(n)), "box"


@PipelineDecorator.component(return_values=["value"])
def ident(value):
    return value


@PipelineDecorator.component(return_values=["slept"])
def nap(i):
    import time

    time.sleep(1)
    return i


@PipelineDecorator.component(return_values=["total"])
def add_all(values):
    return sum(values)


@PipelineDecorator.component(return_values=["summary"])
def describe(tags, frame):
    import pandas as pd

    assert isinstance(frame, pd.DataFrame)
    return {"tags": sorted(tags), "rows": len(frame), "sum": int(frame["x"].sum())}


@PipelineDecorator.component(return_values=["squared"])
def square(x):
    return x * x


@PipelineDecorator.component(return_values=["cubed"])
def cube(x):
    return x * x * x


@PipelineDecorator.component(return_values=["plus"])
def square_plus_one(x):
    return square(x) + 1


@PipelineDecorator.component(return_values=["after"])
def pause(value):
    import time

    time.sleep(1)
    return value + 1


@PipelineDecorator.component(return_values=["never"])
def explode(x):
    raise ValueError(f"bad input {x}")


@PipelineDecorator.pipeline(name="lazy", project="e2e", version="1")
def lazy(n=4):
    numbers, label = make(n)
    seven = ident(7)
    assert seven + 1 == 8 and 10 - seven == 3 and seven * 2 == 14  # arithmetic
    assert seven == 7 and seven > 6 and not seven < 7  # comparison
    assert str(seven) == "7" and f"{seven:03d}" == "007"  # str, format
    print("printed", seven)  # print
    assert bool(seven) and (True if seven else False)  # bool
    assert [x for x in numbers] == [0, 1, 2, 3] and len(numbers) == 4  # iteration, len
    assert numbers[1] == 1 and numbers[-1] == 3 and [9, 8, 7, 6][numbers[2]] == 7  # indexing
    assert label.upper() == "BOX"  # attribute access
    assert sorted(numbers, reverse=True) == [3, 2, 1, 0] and max(numbers) == 3  # ordinary code
    assert int(seven) == 7 and float(seven) == 7.0 and list(range(seven))[-1] == 6  # conversions
    doubled = ident(numbers)  # a reference: a DAG edge, no waiting
    assert doubled == [0, 1, 2, 3]
    print("lazy ok")


@PipelineDecorator.pipeline(name="parallel", project="e2e", version="1")
def parallel(width=8):
    naps = [nap(i) for i in range(width)]
    print("parallel total", add_all(naps))


@PipelineDecorator.pipeline(name="values", project="e2e", version="1")
def values():
    import pandas as pd

    frame = pd.DataFrame({"x": [1, 2, 3]})
    summary = describe({"b", "a", "c"}, frame)
    print("summary", summary)
    assert summary == {"tags": ["a", "b", "c"], "rows": 3, "sum": 6}


@PipelineDecorator.pipeline(name="fanout", project="e2e", version="1")
def fanout(width=8):
    squares = [square(i) for i in range(width)]
    total = add_all(squares)
    again = ident(total)  # an edge from the fan-in
    print("fanout total", again)
    assert again == sum(i * i for i in range(width))


@PipelineDecorator.pipeline(name="nested", project="e2e", version="1")
def nested(x=4):
    result = square_plus_one(x)
    print("nested result", result)
    assert result == 17


@PipelineDecorator.pipeline(name="raising", project="e2e", version="1")
def raising():
    value = explode(7)
    print("never printed", value)


@PipelineDecorator.pipeline(name="replay", project="e2e", version="1")
def replay(marker_dir, diverge=False):
    import os
    import time

    import pandas as pd

    attempt = int(os.environ.get("DROVER_ATTEMPT", "1"))
    first = cube(3) if diverge and attempt > 1 else square(3)
    # A set (pickled in hash order) and a DataFrame built here: the replay pickles them again in
    # a new process, and their digests must match for the call to get its step back.
    summary = describe({f"tag{i}" for i in range(30)}, pd.DataFrame({"x": list(range(10))}))
    print("first value", first, "rows", summary["rows"])
    if attempt == 1:
        open(os.path.join(marker_dir, "driver-waiting"), "w").close()
        while True:  # the test kills this driver's agent here
            time.sleep(0.1)
    print("second value", square(first))


@PipelineDecorator.pipeline(name="growing", project="e2e", version="1")
def growing(go_file, count=3):
    import os
    import time

    print("driver waiting for the page", flush=True)
    deadline = time.monotonic() + 120
    while not os.path.exists(go_file):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{go_file} did not appear within 120 s")
        time.sleep(0.05)
    value = 0
    for i in range(count):
        # Using the result waits for the step, so the next one is added a second later.
        value = pause(value)
        print(f"driver: step {i + 1} of {count} gave {int(value)}", flush=True)


@PipelineDecorator.pipeline(name="multi", project="e2e", version="1", return_value="answer",
                            multi_instance_support=True)
def multi(x):
    return {"x": x, "squared": int(square(x))}


def note_pre(pipeline, node, parameters):
    print("pre", node.name, parameters, pipeline.name, flush=True)
    return parameters.get("kwargs/x") != 3


def note_post(pipeline, node):
    print("post", node.name, node.status, node.executed, flush=True)


def note_status(pipeline, node, previous_status):
    print("status", node.name, previous_status, "->", node.status, flush=True)


def broken_pre(pipeline, node, parameters):
    raise RuntimeError(f"the callback of {node.name} broke")


@PipelineDecorator.component(return_values=["doubled"], pre_execute_callback=note_pre,
                             post_execute_callback=note_post, status_change_callback=note_status)
def watched_double(x):
    return 2 * x


@PipelineDecorator.component(return_values=["doubled"], pre_execute_callback=broken_pre)
def badly_watched(x):
    return 2 * x


@PipelineDecorator.pipeline(name="watched", project="e2e", version="1")
def watched():
    kept, declined = watched_double(1), watched_double(3)
    after = square(declined)  # depends on the declined step: skipped, its value None too
    print(f"values {kept} {declined} {after}", flush=True)


@PipelineDecorator.pipeline(name="raising_callback", project="e2e", version="1")
def raising_callback():
    print(f"value {badly_watched(2)}", flush=True)


if __name__ == "__main__":
    case = sys.argv[1]
    if case == "multi":
        multi(2)
        multi(3)
        print("results", PipelineDecorator.wait_for_multi_pipelines())
    elif case == "growing":
        growing(sys.argv[2])
    elif case in ("replay", "diverge"):
        replay(sys.argv[2], diverge=case == "diverge")
    elif case == "watched_local":
        PipelineDecorator.run_locally()
        watched()
    elif case in ("lazy", "parallel", "values", "fanout", "nested", "raising", "watched", "raising_callback"):
        globals()[case]()
    else:
        raise SystemExit(f"unknown case {case!r}")
    print("pipeline submitted")
