"""A decorated function as a step: it travels with its decorators and runs decorated, as in ClearML."""
from drover import PipelineController, spec


def plus_one(func):
    def function_wrapper(*args, **kwargs):
        return func(*args, **kwargs) + 1
    return function_wrapper


def times(n):
    import functools  # decorators travel from their source alone, as steps do

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            return func(*args, **kwargs) * n
        return wrapper
    return decorate


@plus_one
def one():
    return 1


@times(3)
def scaled(x):
    return x


def plain(x):
    return x


def test_the_wrapped_function_and_its_decorators_are_found():
    inner, decorators = spec.undecorated(one)
    assert inner.__name__ == "one" and decorators == [plus_one]
    inner, decorators = spec.undecorated(scaled)
    assert inner.__name__ == "scaled" and decorators == [times]
    assert spec.undecorated(plain) == (plain, [])


def test_decorated_steps_run_decorated():
    pipe = PipelineController(name="decorated", project="t", version="1")
    pipe.add_function_step("one", one, function_return=["r"])
    pipe.add_function_step("scaled", scaled, function_kwargs={"x": "${one.r}"}, function_return=["r"])
    source = pipe._steps[0].source
    assert source.index("def plus_one(") < source.index("@plus_one\ndef one(")
    assert pipe._steps[0].entry == "one"
    pipe.start_locally(run_pipeline_steps_locally=True)
    assert pipe.is_successful()
    assert pipe._local.values["one"]["r"] == 2
    assert pipe._local.values["scaled"]["r"] == 6
