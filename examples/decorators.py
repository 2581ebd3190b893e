"""A decorator pipeline: one input split into 8 shards, each shard scored in parallel, then merged.

Written against ClearML's PipelineDecorator API, which drover implements. Calling `fan_out_in()`
submits a run whose driver (on an agent serving the `drivers` queue) runs `fan_out_in` and adds
one step per component call while it runs; the 8 `score` steps start together because nothing
waits for them until `merge` is called. `python examples/decorators.py --local` runs the same
pipeline here instead, each component as a local subprocess.
"""
import sys

from drover import PipelineDecorator


@PipelineDecorator.component(return_values=["shards"], cache=True)
def make_shards(size, parts):
    # Imports inside a component are its requirements; these are the standard library's.
    import random

    rng = random.Random(size)
    values = [rng.random() for _ in range(size)]
    return [values[i::parts] for i in range(parts)]


@PipelineDecorator.component(return_values=["score"])
def score(shard, power):
    import time

    time.sleep(1)  # stands for real work: the 8 shards are scored at the same time
    return sum(v**power for v in shard)


@PipelineDecorator.component(return_values=["total", "best"])
def merge(scores):
    scores = list(scores)
    return sum(scores), max(range(len(scores)), key=scores.__getitem__)


@PipelineDecorator.pipeline(name="fan-out-in", project="examples", version="1.0")
def fan_out_in(size=80_000, parts=8, power=2):
    shards = make_shards(size, parts)
    # Indexing a lazy value waits for make_shards and loads its list; each score call then
    # returns at once with a lazy value of its own.
    scores = [score(shards[i], power) for i in range(parts)]
    # Passing the list of lazy values to merge waits for every score (they are pickled into
    # merge's input); passing one lazy value alone would only make a DAG edge.
    total, best = merge(scores)
    print(f"total {total:.2f}, best shard {best}")
    return float(total)


if __name__ == "__main__":
    if "--local" in sys.argv:
        PipelineDecorator.run_locally()
    fan_out_in()
