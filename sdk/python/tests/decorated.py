"""Decorator pipelines the decorator tests run (locally and in debug mode)."""
from drover import PipelineDecorator
from drover.lazy import LazyValue


def plus_one(function):
    def wrapper(*args, **kwargs):
        return function(*args, **kwargs) + 1

    return wrapper


def scale(v):
    return v * 10


@PipelineDecorator.component(return_values=["scaled"], helper_functions=[scale])
def scaled(v):
    return scale(v)


@PipelineDecorator.component(return_values=["doubled"])
def double(x):
    print("doubling", x)
    return 2 * x


@PipelineDecorator.component(return_values=["total", "count"])
def total_and_count(values):
    values = list(values)
    return sum(values), len(values)


@PipelineDecorator.component(return_values=["kind"])
def describe(value):
    return f"{type(value).__name__}:{sorted(value) if isinstance(value, set) else value}"


@PipelineDecorator.component()
@plus_one
def one():
    return 1


@PipelineDecorator.component(return_values=["result"])
def outer(n):
    return double(n) + 100


@PipelineDecorator.component(return_values=["never"])
def broken(x):
    raise ValueError(f"broken on {x}")


@PipelineDecorator.component(return_values=["echo"], helper_functions=[])
def echo(value):
    return value


@PipelineDecorator.pipeline(name="fan", project="tests", version="1")
def fan(n=4):
    parts = [double(i) for i in range(n)]
    total, count = total_and_count(parts)
    return int(total), int(count)


@PipelineDecorator.pipeline(name="mixed", project="tests", multi_instance_support=True)
def mixed():
    return {
        "set": str(describe({3, 1, 2})),
        "decorated": int(one()),
        "nested": int(outer(5)),
        "chained": int(double(double(3))),
        "helped": int(scaled(2)),
    }


@PipelineDecorator.pipeline(name="failing", project="tests", multi_instance_support=True)
def failing():
    value = broken(1)
    return value + 1


@PipelineDecorator.pipeline(name="names", project="tests", multi_instance_support=True)
def names_pipeline():
    a, b, c = echo(1), echo(2), echo(3)
    return [int(a), int(b), int(c)], PipelineDecorator.get_current_pipeline().steps


EVENTS = []  # what the component callbacks saw, in order


def note_pre(pipeline, node, parameters):
    EVENTS.append(("pre", node.name, dict(parameters), pipeline.name))
    return parameters.get("kwargs/x") != 3  # the call with x=3 is skipped


def note_post(pipeline, node):
    EVENTS.append(("post", node.name, node.executed))


def note_status(pipeline, node, previous_status):
    EVENTS.append(("status", node.name, previous_status, node.status))


@PipelineDecorator.component(return_values=["doubled"], pre_execute_callback=note_pre,
                             post_execute_callback=note_post, status_change_callback=note_status)
def watched_double(x):
    return 2 * x


@PipelineDecorator.pipeline(name="watched", project="tests", multi_instance_support=True)
def watched():
    kept, declined = watched_double(1), watched_double(3)
    after = double(declined)  # depends on the declined step: skipped, its value None too
    return [LazyValue.resolve(v) for v in (kept, declined, after)]
