"""Lazy values: what a component call returns at once, loaded from its step when first used.

Any use of a LazyValue (arithmetic, comparison, `str`, `print`, `bool`, iteration, indexing,
attribute access, `len`, `int`/`float`/`__index__`, hashing, pickling...) waits for the step
that produces it and loads the value, once; passing it to another component does not: it
becomes a `${step.output}` reference, a DAG edge the controller resolves.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Iterator
from typing import Any

_UNSET = object()


def _identity(value: Any) -> Any:
    """Unpickles a lazy value as the value it stood for."""
    return value


class LazyValue:
    """One return value of a component step, loaded by `load()` on first use."""

    __slots__ = ("__weakref__", "_drover_load", "_drover_lock", "_drover_ref", "_drover_value")

    def __init__(self, reference: str | None, load: Callable[[], Any]) -> None:
        object.__setattr__(self, "_drover_ref", reference)
        object.__setattr__(self, "_drover_load", load)
        object.__setattr__(self, "_drover_value", _UNSET)
        object.__setattr__(self, "_drover_lock", threading.Lock())

    @staticmethod
    def reference_of(value: object) -> str | None:
        """`${step.output}` when `value` is a lazy value, else None."""
        if type(value) is LazyValue:
            return object.__getattribute__(value, "_drover_ref")  # type: ignore[no-any-return]
        return None

    @staticmethod
    def resolve(value: object) -> Any:
        """The loaded value of a lazy value (waiting for its step), anything else as it is."""
        if type(value) is not LazyValue:
            return value
        with object.__getattribute__(value, "_drover_lock"):
            loaded = object.__getattribute__(value, "_drover_value")
            if loaded is _UNSET:
                loaded = object.__getattribute__(value, "_drover_load")()
                object.__setattr__(value, "_drover_value", loaded)
        return loaded

    # -- attribute access -------------------------------------------------------------------

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance() sees the loaded value's class
        return type(LazyValue.resolve(self))

    def __getattr__(self, name: str) -> Any:
        return getattr(LazyValue.resolve(self), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(LazyValue.resolve(self), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(LazyValue.resolve(self), name)

    def __dir__(self) -> list[str]:
        return dir(LazyValue.resolve(self))

    # -- conversions ------------------------------------------------------------------------

    def __repr__(self) -> str:
        return repr(LazyValue.resolve(self))

    def __str__(self) -> str:
        return str(LazyValue.resolve(self))

    def __format__(self, spec: str) -> str:
        return format(LazyValue.resolve(self), spec)

    def __bytes__(self) -> bytes:
        return bytes(LazyValue.resolve(self))

    def __bool__(self) -> bool:
        return bool(LazyValue.resolve(self))

    def __int__(self) -> int:
        return int(LazyValue.resolve(self))

    def __float__(self) -> float:
        return float(LazyValue.resolve(self))

    def __complex__(self) -> complex:
        return complex(LazyValue.resolve(self))

    def __index__(self) -> int:
        return operator.index(LazyValue.resolve(self))

    def __round__(self, ndigits: int | None = None) -> Any:
        return round(LazyValue.resolve(self), ndigits)

    def __trunc__(self) -> Any:
        import math

        return math.trunc(LazyValue.resolve(self))

    def __floor__(self) -> Any:
        import math

        return math.floor(LazyValue.resolve(self))

    def __ceil__(self) -> Any:
        import math

        return math.ceil(LazyValue.resolve(self))

    def __hash__(self) -> int:
        return hash(LazyValue.resolve(self))

    def __fspath__(self) -> Any:
        import os

        return os.fspath(LazyValue.resolve(self))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_identity, (LazyValue.resolve(self),))

    def __copy__(self) -> Any:
        import copy

        return copy.copy(LazyValue.resolve(self))

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        import copy

        return copy.deepcopy(LazyValue.resolve(self), memo)

    # -- containers -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(LazyValue.resolve(self))

    def __iter__(self) -> Iterator[Any]:
        values: Iterator[Any] = iter(LazyValue.resolve(self))
        return values

    def __reversed__(self) -> Iterator[Any]:
        values: Iterator[Any] = reversed(LazyValue.resolve(self))
        return values

    def __contains__(self, item: object) -> bool:
        return item in LazyValue.resolve(self)

    def __getitem__(self, key: Any) -> Any:
        return LazyValue.resolve(self)[LazyValue.resolve(key)]

    def __setitem__(self, key: Any, value: Any) -> None:
        LazyValue.resolve(self)[LazyValue.resolve(key)] = value

    def __delitem__(self, key: Any) -> None:
        del LazyValue.resolve(self)[LazyValue.resolve(key)]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return LazyValue.resolve(self)(*args, **kwargs)

    def __enter__(self) -> Any:
        return LazyValue.resolve(self).__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return LazyValue.resolve(self).__exit__(*exc)


def _binary(op: Callable[[Any, Any], Any]) -> tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any]]:
    def forward(self: Any, other: Any) -> Any:
        return op(LazyValue.resolve(self), LazyValue.resolve(other))

    def reflected(self: Any, other: Any) -> Any:
        return op(LazyValue.resolve(other), LazyValue.resolve(self))

    return forward, reflected


_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "matmul": operator.matmul,
    "truediv": operator.truediv, "floordiv": operator.floordiv, "mod": operator.mod,
    "divmod": divmod, "pow": operator.pow, "lshift": operator.lshift, "rshift": operator.rshift,
    "and": operator.and_, "xor": operator.xor, "or": operator.or_,
}
for _name, _op in _BINARY.items():
    _forward, _reflected = _binary(_op)
    setattr(LazyValue, f"__{_name}__", _forward)
    setattr(LazyValue, f"__r{_name}__", _reflected)

# In-place operators give a new value; the lazy value itself never changes.
for _name in _BINARY:
    if _name != "divmod":
        setattr(LazyValue, f"__i{_name}__", getattr(LazyValue, f"__{_name}__"))

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
}
for _name, _op in _COMPARE.items():
    setattr(LazyValue, f"__{_name}__", _binary(_op)[0])

def _unary(op: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def apply(self: Any) -> Any:
        return op(LazyValue.resolve(self))

    return apply


_UNARY: dict[str, Callable[[Any], Any]] = {"neg": operator.neg, "pos": operator.pos, "abs": operator.abs,
                                           "invert": operator.invert}
for _name, _op1 in _UNARY.items():
    setattr(LazyValue, f"__{_name}__", _unary(_op1))
