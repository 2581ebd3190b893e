"""A function step that reports scalars, for the end-to-end and browser tests.

usage: python scalars.py GO_FILE

Submits one step, `report`, which reports two titles (loss, accuracy) with two series each
(train, test) at iterations 0 to 4 through ClearML's Logger, prints `reported`, waits (up to
120 s) until GO_FILE exists, and returns. The values (10 * title index + series index +
iteration / 4) are exact in binary, so what is read back can be compared for equality.
"""
import sys

from drover import PipelineController


def report(go):
    import os
    import time

    from drover import Logger

    logger = Logger.current_logger()
    titles, series_names = ("loss", "accuracy"), ("train", "test")  # a step's source is only this function
    for i in range(5):
        for t, title in enumerate(titles):
            for s, series in enumerate(series_names):
                logger.report_scalar(title, series, t * 10 + s + i * 0.25, i)
    print("reported", flush=True)
    deadline = time.monotonic() + 120
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise SystemExit("no go file within 120 s")
        time.sleep(0.05)  # waiting for the test is this step's workload
    return "done"


def main(go):
    pipe = PipelineController(name="scalars", project="e2e", version="1")
    pipe.set_default_execution_queue("default")
    pipe.add_function_step(name="report", function=report, function_kwargs=dict(go=go),
                           function_return=["result"])
    pipe.start(wait=False)
    print("pipeline submitted")


if __name__ == "__main__":
    main(sys.argv[1])
