"""dlpx data types: every DLPack type, comparable with names and with NumPy,
ml_dtypes and PyTorch dtypes.  The list of types is libdlpx's
(dlpx_dtype_table), read at import."""

from __future__ import annotations

import sys
from typing import Any

from ._lib import ffi, lib, types

__all__ = ["dtype", "ALL_DTYPES", "NUMPY_NATIVE_CODES"]

# DLPack codes NumPy has native dtypes for (the others come from ml_dtypes).
NUMPY_NATIVE_CODES = frozenset(
    int(c) for c in (lib.kDLBool, lib.kDLInt, lib.kDLUInt, lib.kDLFloat, lib.kDLComplex))

# NumPy's reading of the Python scalar types, without needing NumPy.
_PYTHON_TYPES = {bool: "bool", int: "int64", float: "float64", complex: "complex128"}


class dtype:
    """A DLPack element type (code, bits, lanes).

    ``dlpx.dtype("float32")``, ``dlpx.dtype(numpy.float32)``,
    ``dlpx.dtype(torch.bfloat16)`` and ``dlpx.float32`` all give the same
    object, which compares equal to its name (``dlpx.float32 == "float32"``).
    """

    __slots__ = ("name", "code", "bits", "lanes", "key")
    name: str
    code: int
    bits: int
    lanes: int
    key: int  # code | bits << 8 | lanes << 16, as libdlpx's Python bridge takes it

    _by_key: dict[int, dtype] = {}
    _by_name: dict[str, dtype] = {}

    def __new__(cls, spec: Any) -> dtype:
        if isinstance(spec, dtype):
            return spec
        found = _lookup(spec)
        if found is None:
            raise TypeError(f"data type {spec!r} is not understood by dlpx")
        return found

    @classmethod
    def _make(cls, code: int, bits: int, lanes: int) -> dtype:
        """The one dtype object for (code, bits, lanes).  Lock-free: threads
        that race here may each build an object, but setdefault keeps one
        and every caller returns that one."""
        key = code | bits << 8 | lanes << 16
        got = cls._by_key.get(key)
        if got is not None:
            return got
        dt = ffi.new(types.dtype_p, {"code": code, "bits": bits, "lanes": lanes})
        buf = ffi.new(types.char_array, lib.DLPX_DTYPE_NAME_MAX)
        if lib.dlpx_dtype_format(dt[0], buf, lib.DLPX_DTYPE_NAME_MAX) != 0:
            raise TypeError(ffi.string(lib.dlpx_last_error()).decode())
        self = object.__new__(cls)
        for attr, value in (("name", ffi.string(buf).decode()), ("code", code), ("bits", bits),
                            ("lanes", lanes), ("key", key)):
            object.__setattr__(self, attr, value)
        got = cls._by_key.setdefault(key, self)
        cls._by_name.setdefault(got.name, got)
        return got

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("dlpx.dtype is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("dlpx.dtype is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return (dtype, (self.name,))

    @property
    def itemsize(self) -> int | float:
        """Bytes per element: an int, or a fraction (0.5, 0.75) for packed
        sub-byte types."""
        bits = self.bits * self.lanes
        return bits // 8 if bits % 8 == 0 else bits / 8

    @property
    def is_subbyte(self) -> bool:
        return self.bits * self.lanes < 8

    def __eq__(self, other: object) -> bool:
        if isinstance(other, dtype):
            return self.key == other.key
        try:
            found = _lookup(other)
        except Exception:  # a foreign object we cannot interpret
            return NotImplemented
        return found is not None and found.key == self.key

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"dlpx.{self.name}" if self.lanes == 1 else f"dlpx.dtype({self.name!r})"

    def __str__(self) -> str:
        return self.name

    @property
    def numpy(self) -> Any:
        """The NumPy dtype (ml_dtypes for bfloat16 and the float8/6/4 types;
        packed float4/float6 have none, their NumPy form is one byte each)."""
        import numpy as np

        if self.lanes != 1:
            raise TypeError(f"NumPy has no dtype for {self.name}")
        if self.code in NUMPY_NATIVE_CODES and not (self.code == lib.kDLComplex and
                                                    self.bits == 32):
            return np.dtype(self.name)
        try:
            import ml_dtypes
        except ImportError:
            raise TypeError(f"NumPy needs the ml_dtypes package for {self.name}") from None
        t = getattr(ml_dtypes, self.name, None)
        if t is None:
            raise TypeError(f"ml_dtypes {ml_dtypes.__version__} has no {self.name}")
        return np.dtype(t)

    @property
    def dtype(self) -> Any:
        """The NumPy dtype, so NumPy and JAX accept dlpx dtypes
        (``np.zeros(3, dtype=dlpx.bfloat16)``)."""
        return self.numpy

    @property
    def torch(self) -> Any:
        """The torch.dtype."""
        import torch

        t = getattr(torch, self.name, None) if self.lanes == 1 else None
        if not isinstance(t, torch.dtype):
            raise TypeError(f"PyTorch has no dtype {self.name}")
        return t


def _parse_name(name: str) -> dtype | None:
    got = dtype._by_name.get(name)
    if got is not None:
        return got
    if "\0" in name:  # C would stop reading at the NUL
        return None
    out = ffi.new(types.dtype_p)
    if lib.dlpx_dtype_parse(name.encode("utf-8", "replace"), out) != 0:
        return None
    return dtype._make(out.code, out.bits, out.lanes)


def _lookup(spec: Any) -> dtype | None:
    """The dlpx dtype for a name, a Python scalar type, a NumPy dtype or
    scalar type, or a torch.dtype; None if it is none of these."""
    if isinstance(spec, str):
        return _parse_name(spec)
    if spec is None or isinstance(spec, (bytes, bytearray, int, float)):
        return None
    if isinstance(spec, type) and spec in _PYTHON_TYPES:
        return _parse_name(_PYTHON_TYPES[spec])
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(spec, torch.dtype):
        text = str(spec)  # "torch.float32"
        return _parse_name(text[6:]) if text.startswith("torch.") else None
    np = sys.modules.get("numpy")  # a NumPy dtype needs NumPy loaded already
    if np is None:
        return None
    try:
        nd = np.dtype(spec)
    except (TypeError, ValueError):
        return None
    if nd.byteorder not in "=|" and nd.byteorder != ("<" if sys.byteorder == "little" else ">"):
        raise TypeError(f"non-native byte order {nd} cannot be described by DLPack")
    if nd.kind == "c" and nd.itemsize == 4:  # numpy has no complex32: be exact
        return None
    return _parse_name(nd.name)


def _table() -> tuple[dtype, ...]:
    n = ffi.new(types.size_t_p)
    entries = lib.dlpx_dtype_table(n)
    return tuple(dtype._make(e.dtype.code, e.dtype.bits, e.dtype.lanes) for e in entries[0:n[0]])


#: Every element type libdlpx knows, in DLPack code order.
ALL_DTYPES: tuple[dtype, ...] = _table()
