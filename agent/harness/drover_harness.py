"""Runs one drover function step: `python drover_harness.py job.json` in the step's workdir.

The agent writes job.json (see ARCHITECTURE.md, "Python function steps") and puts the bundled
drover SDK beside this file on PYTHONPATH. The step is run by `drover.runner`, the same code
that runs steps locally (`start_locally(run_pipeline_steps_locally=True)`): the exit status is
0 on success and 1 after printing the traceback on failure, so the step's log holds it. The
process then ends without the interpreter's teardown, once atexit handlers have run and open
files are flushed (`drover.runner.end_process`).
"""

import sys

from drover.runner import end_process, main

if __name__ == "__main__":
    end_process(main(sys.argv))
