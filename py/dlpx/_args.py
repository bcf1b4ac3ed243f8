"""Argument normalization shared by the modules that call libdlpx: shapes
and dimensions as the exact ints the C side takes, with the errors NumPy
and PyTorch users expect."""

from __future__ import annotations

import operator
from typing import Any

__all__ = ["shape_arg", "copy_arg"]


def shape_arg(shape: Any) -> tuple[int, ...]:
    """A shape from an int or a sequence of ints (``f(2, 3)``, ``f((2, 3))``,
    ``f([2, 3])``), as a tuple of ints."""
    kind = type(shape)
    if kind is tuple:  # the common case first: a tuple of exact ints
        for s in shape:
            if type(s) is not int:
                break
        else:
            return shape  # type: ignore[no-any-return]
    elif kind is int:
        return (shape,)
    if isinstance(shape, tuple) and len(shape) == 1 and not isinstance(shape[0], int):
        shape = shape[0]  # f(*shape) called with one sequence
    if isinstance(shape, (str, bytes)) or shape is None:
        raise TypeError(f"a shape is an int or a sequence of ints, not {shape!r}")
    try:
        return (operator.index(shape),)
    except TypeError:
        pass
    try:
        return tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"a shape is an int or a sequence of ints, not {shape!r}") from None


def copy_arg(copy: Any) -> None:
    """Checks a ``copy=`` argument of the array API: True, False or None."""
    if copy is not None and not isinstance(copy, bool):
        raise TypeError(f"copy must be True, False or None, not {copy!r}")
