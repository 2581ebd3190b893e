"""Every use of a lazy value loads it (once); a reference passes it on without loading."""
import math
import operator
import pickle

import pytest

from drover.lazy import LazyValue


class Counter:
    def __init__(self, value):
        self.value = value
        self.loads = 0

    def __call__(self):
        self.loads += 1
        return self.value


def lazy(value, ref="${s.o}"):
    counter = Counter(value)
    return LazyValue(ref, counter), counter


class Point:
    def __init__(self):
        self.x = 3

    def norm(self):
        return 5


USES = [
    ("add", 7, lambda v: v + 1, 8), ("radd", 7, lambda v: 1 + v, 8), ("sub", 7, lambda v: v - 2, 5),
    ("rsub", 7, lambda v: 10 - v, 3), ("mul", 7, lambda v: v * 2, 14), ("truediv", 7, lambda v: v / 2, 3.5),
    ("floordiv", 7, lambda v: v // 2, 3), ("mod", 7, lambda v: v % 4, 3), ("pow", 2, lambda v: v ** 3, 8),
    ("rpow", 3, lambda v: 2 ** v, 8), ("divmod", 7, lambda v: divmod(v, 2), (3, 1)),
    ("neg", 7, operator.neg, -7), ("abs", -7, abs, 7), ("invert", 0, operator.invert, -1),
    ("and", 6, lambda v: v & 3, 2), ("or", 4, lambda v: v | 1, 5), ("xor", 6, lambda v: v ^ 3, 5),
    ("lshift", 1, lambda v: v << 3, 8), ("matmul", None, None, None),
    ("eq", 7, lambda v: v == 7, True), ("ne", 7, lambda v: v != 7, False), ("lt", 7, lambda v: v < 8, True),
    ("le", 7, lambda v: v <= 6, False), ("gt", 7, lambda v: v > 6, True), ("ge", 7, lambda v: v >= 8, False),
    ("str", 7, str, "7"), ("repr", "x", repr, "'x'"), ("format", 3.14159, lambda v: f"{v:.2f}", "3.14"),
    ("bool", 0, bool, False), ("if", [1], lambda v: "yes" if v else "no", "yes"),
    ("int", 7.9, int, 7), ("float", 7, float, 7.0), ("index", 2, lambda v: [10, 20, 30][v], 30),
    ("range", 3, lambda v: list(range(v)), [0, 1, 2]), ("round", 2.567, lambda v: round(v, 1), 2.6),
    ("floor", 2.5, math.floor, 2), ("len", [1, 2, 3], len, 3), ("iter", [1, 2], list, [1, 2]),
    ("unpack", (1, 2), lambda v: [*v], [1, 2]), ("reversed", [1, 2], lambda v: list(reversed(v)), [2, 1]),
    ("in", [1, 2], lambda v: 2 in v, True), ("getitem", {"k": 4}, lambda v: v["k"], 4),
    ("slice", [1, 2, 3], lambda v: v[1:], [2, 3]), ("attribute", Point(), lambda v: v.x, 3),
    ("method", Point(), lambda v: v.norm(), 5), ("call", len, lambda v: v("abc"), 3),
    ("hash", "k", lambda v: {v: 1}["k"], 1), ("isinstance", {"a": 1}, lambda v: isinstance(v, dict), True),
    ("ordinary code", [3, 1, 2], sorted, [1, 2, 3]), ("sum", [1, 2], sum, 3), ("max", [1, 5], max, 5),
    ("print", 7, lambda v: print(v), None), ("json-like", {"a": 1}, lambda v: dict(v), {"a": 1}),
]


@pytest.mark.parametrize("name, value, use, expected", [u for u in USES if u[2] is not None],
                         ids=[u[0] for u in USES if u[2] is not None])
def test_each_use_loads_the_value_once(name, value, use, expected, capsys):
    v, counter = lazy(value)
    assert counter.loads == 0
    assert use(v) == expected
    use(v)
    assert counter.loads == 1
    if name == "print":
        assert capsys.readouterr().out == "7\n7\n"


def test_matmul_and_in_place_operators():
    class M:
        def __matmul__(self, other):
            return "mm"

    v, _ = lazy(M())
    assert v @ 1 == "mm"
    w, _ = lazy(5)
    x = w
    x += 1
    assert x == 6 and w == 5  # the lazy value itself never changes


def test_setting_an_attribute_or_item_changes_the_loaded_value():
    v, counter = lazy({"a": 1})
    v["b"] = 2
    assert v == {"a": 1, "b": 2} and counter.loads == 1


def test_a_reference_does_not_load():
    v, counter = lazy(7, ref="${double_1.doubled}")
    assert LazyValue.reference_of(v) == "${double_1.doubled}"
    assert LazyValue.reference_of(7) is None
    assert type(v) is LazyValue
    assert counter.loads == 0


def test_pickling_stores_the_loaded_value():
    v, _ = lazy([1, 2])
    nested = [v, {"k": v}]
    assert pickle.loads(pickle.dumps(nested)) == [[1, 2], {"k": [1, 2]}]


def test_copies_copy_the_loaded_value():
    import copy

    v, _ = lazy([[1], 2])
    shallow, deep = copy.copy(v), copy.deepcopy(v)
    loaded = LazyValue.resolve(v)
    assert shallow == loaded and shallow is not loaded and shallow[0] is loaded[0]
    assert deep == loaded and deep[0] is not loaded[0]


def test_a_failing_load_raises_at_each_use():
    def fail():
        raise RuntimeError("component step 'x' failed")

    v = LazyValue("${x.o}", fail)
    with pytest.raises(RuntimeError, match="'x' failed"):
        v + 1
    with pytest.raises(RuntimeError, match="'x' failed"):
        str(v)
