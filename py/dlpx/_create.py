"""Making dlpx tensors: new host memory (:func:`empty`, :func:`zeros`) and
views of any buffer-protocol object (:func:`frombuffer`)."""

from __future__ import annotations

import operator
from typing import Any, Optional

from . import _bridge, _cuda
from ._args import shape_arg
from ._devices import as_device
from ._dtypes import dtype as _dtype

__all__ = ["empty", "zeros", "frombuffer", "DEFAULT_DTYPE"]

#: The dtype of new tensors when none is given (as in PyTorch).
DEFAULT_DTYPE = _dtype("float32")

_new = _bridge.new
_from_buffer = _bridge.from_buffer


_HOST_CPU = as_device("cpu")


def _dtype_arg(dt: Any) -> _dtype:
    return DEFAULT_DTYPE if dt is None else _dtype(dt)


def empty(shape: Any, dtype: Any = None, *, device: Any = None, stream: Any = None) -> Any:
    """A new C-contiguous tensor, uninitialized; ``dtype`` defaults to
    float32.  On the host (default; 64-byte aligned) or on ``device``
    ("cuda", "cuda:1", "cuda_host", "cuda_managed"), from dlpx's caching
    pool for ``stream`` (default: the current stream)."""
    dev = _cuda.device_arg(device)
    if dev is None or dev == _HOST_CPU:
        return _new(_dtype_arg(dtype).key, shape_arg(shape), 0, 0)
    return _cuda.empty(tuple(shape_arg(shape)), _dtype_arg(dtype), dev, stream)


def zeros(shape: Any, dtype: Any = None, *, device: Any = None, stream: Any = None) -> Any:
    """A new C-contiguous tensor filled with zeros; ``dtype`` defaults to
    float32; ``device`` and ``stream`` as :func:`empty` (a CUDA tensor is
    zeroed on the stream, without waiting)."""
    dev = _cuda.device_arg(device)
    if dev is None or dev == _HOST_CPU:
        return _new(_dtype_arg(dtype).key, shape_arg(shape), 0, 1)
    t = _cuda.empty(tuple(shape_arg(shape)), _dtype_arg(dtype), dev, stream)
    _cuda.fill_zero(t, stream)
    return t


# struct format characters (native or standard size) -> dtype names
_FORMATS = {
    "?": "bool", "b": "int8", "B": "uint8", "h": "int16", "H": "uint16", "i": "int32",
    "I": "uint32", "l": "int64", "L": "uint64", "q": "int64", "Q": "uint64", "n": "int64",
    "N": "uint64", "e": "float16", "f": "float32", "d": "float64", "Zf": "complex64",
    "Zd": "complex128", "c": "uint8",
}


def _format_dtype(fmt: str, itemsize: int) -> _dtype:
    f = fmt.lstrip("@=<")
    if fmt.startswith((">", "!")) and itemsize > 1:
        raise BufferError(f"big-endian buffer format {fmt!r} cannot be described by DLPack")
    name = _FORMATS.get(f)
    if name is None:
        raise BufferError(f"buffer format {fmt!r} has no DLPack dtype; pass dtype=")
    dt = _dtype(name)
    if dt.itemsize != itemsize:
        raise BufferError(f"buffer format {fmt!r} has itemsize {itemsize}, not {dt.itemsize}")
    return dt


def frombuffer(buffer: Any, dtype: Any = None, count: int = -1, offset: int = 0) -> Any:
    """A tensor over the memory of any buffer-protocol object, without
    copying.  The object stays alive (and its buffer exported, so a
    bytearray cannot be resized) until the last view of it and the last
    DLPack export of those views are gone, whichever thread drops them.

    With ``dtype=None`` the buffer's own format, shape and strides are kept
    (a memoryview of a 2-D array gives a 2-D tensor).  With a dtype, the
    buffer's bytes from ``offset`` are read as ``count`` elements (-1: all)
    of it, 1-D, as numpy.frombuffer does.  Read-only buffers give read-only
    tensors."""
    view = memoryview(buffer)
    strides: Optional[tuple[int, ...]]
    if dtype is None:
        if count != -1 or offset != 0:
            raise ValueError("count and offset need an explicit dtype")
        dt = _format_dtype(view.format, view.itemsize)
        shape = tuple(view.shape or ())
        if view.nbytes == 0:
            strides = None
        else:
            vstrides = tuple(view.strides or ())
            if any(s % view.itemsize for s in vstrides):
                raise BufferError(f"buffer strides {vstrides} are not multiples of the "
                                  "itemsize")
            strides = tuple(s // view.itemsize for s in vstrides)
        start = 0
    else:
        dt = _dtype(dtype)
        if not view.contiguous:
            raise BufferError("a buffer read with an explicit dtype must be contiguous")
        nbytes = view.nbytes
        offset = operator.index(offset)
        count = operator.index(count)
        if not 0 <= offset <= nbytes:
            raise ValueError(f"offset {offset} is outside the buffer of {nbytes} bytes")
        bits = dt.bits * dt.lanes
        if count < 0:
            if count != -1:
                raise ValueError(f"count must be -1 or >= 0, not {count}")
            if ((nbytes - offset) * 8) % bits:
                raise ValueError(f"buffer size {nbytes - offset} is not a multiple of the "
                                 f"{dt.name} element size")
            count = (nbytes - offset) * 8 // bits
        elif count * bits > (nbytes - offset) * 8:
            raise ValueError(f"buffer is smaller than {count} {dt.name} elements")
        shape, strides, start = (count,), None, offset
    # The memoryview holds the exporter's buffer (a bytearray cannot be
    # resized under it); libdlpx reads its address and takes a reference to
    # it in the one call that makes the tensor, dropped when the last view
    # and export are gone.
    return _from_buffer(view, start, dt.key, shape, strides, 0)
