"""dlpx.Tensor: a view over libdlpx memory that speaks DLPack.

A Tensor holds exactly one thing: ``_cap``, the capsule that owns its C
handle (plus a cache of its layout).  Python never holds the raw handle:
every operation passes the Tensor itself to a GIL-held libdlpx function
(dlpx._bridge), which reads the handle from the capsule while holding it.
So deleting or replacing ``_cap`` gives a clean TypeError, never a freed
handle in use.
"""

from __future__ import annotations

import ctypes
import operator
import sys
from typing import Any, Iterator, Optional

from . import _bridge, _cuda, _quirks
from ._args import copy_arg, shape_arg
from ._consume import from_dlpack
from ._convert import to_jax, to_numpy, to_torch
from ._create import frombuffer
from ._devices import HOST_DEVICE_TYPES, Device, DLDeviceType, as_device
from ._dtypes import dtype
from ._lib import lib

__all__ = ["Tensor", "dlpack_fallback"]

_op = _bridge.op
_meta = _bridge.meta
_export = _bridge.export
_copy_into = _bridge.copy_into
OP = _bridge.OP
_READONLY = lib.DLPX_TENSOR_READONLY
_PADDED = lib.DLPX_TENSOR_SUBBYTE_PADDED
_COPY = lib.DLPX_EXPORT_COPY
_COPIED = lib.DLPX_EXPORT_COPIED
_CUDA_TYPES = _cuda.CUDA_TYPES
_CPU_DEVICE = as_device("cpu")
_dtype_by_key = dtype._by_key

# Fields of the cached layout (Tensor._m()).
_SHAPE, _STRIDES, _DTYPE, _DEVICE, _FLAGS, _NEG, _NUMEL, _NBYTES, _PTR, _C, _F = range(11)


def _dim(d: Any) -> int:
    """A dimension argument: an int (libdlpx checks the range)."""
    return operator.index(d)


def dlpack_fallback(self: Tensor, stream: Any, max_version: Any, dl_device: Any,
                    copy: Any) -> Any:
    """The __dlpack__ calls libdlpx's C method hands back: any stream,
    dl_device or copy argument, a malformed max_version, negative strides,
    read-only data."""
    if max_version is None:
        versioned = 0
    else:
        try:
            if type(max_version) is not tuple:
                raise TypeError
            major, minor = max_version
            major, minor = operator.index(major), operator.index(minor)
        except (TypeError, ValueError):
            raise TypeError(
                f"max_version must be a (major, minor) tuple of ints, not {max_version!r}") from None
        versioned = 1 if major >= 1 else 0
    # The C method adds no frame: frame 1 is the code that called __dlpack__.
    torch_consumer = _quirks.torch_is_caller(sys._getframe(1))
    return self._dlpack_checked(stream, versioned, dl_device, copy, torch_consumer)


class Tensor:
    """A tensor: a DLPack view (dtype, shape, strides, device) over memory
    that libdlpx owns or borrows.  Made by :func:`dlpx.empty`,
    :func:`dlpx.zeros`, :func:`dlpx.from_dlpack` and :func:`dlpx.frombuffer`;
    indexing and the shape methods give views without copying."""

    # _cap: the "dlpx.tensor" capsule that owns the C handle (its destructor
    # is C); _meta: the cached layout, made from the handle on first use.
    __slots__ = ("_cap", "_meta", "__weakref__")
    _cap: Any
    _meta: tuple[Any, ...]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "dlpx.Tensor is not constructed directly: use dlpx.empty, dlpx.zeros, "
            "dlpx.from_dlpack or dlpx.frombuffer")

    # ---- internals ----------------------------------------------------------

    def _m(self) -> tuple[Any, ...]:
        """The layout (the _SHAPE, _STRIDES, ... fields), cached."""
        try:
            return self._meta
        except AttributeError:
            pass
        m = _meta(self)
        dt = _dtype_by_key.get(m[2])
        if dt is None:
            dt = dtype._make(m[2] & 0xFF, (m[2] >> 8) & 0xFF, m[2] >> 16)
        meta = self._meta = (m[0], m[1], dt, Device(DLDeviceType(m[3]), m[4]), m[5], m[12],
                             m[6], m[7], m[8], m[10], m[11])
        return meta

    # ---- DLPack --------------------------------------------------------------

    def _dlpack_checked(self, stream: Any, versioned: int, dl_device: Any, copy: Any,
                        torch_consumer: bool = False) -> Any:
        copy_arg(copy)
        flags = _COPY if copy is True else 0
        m = self._m()
        have = m[_DEVICE]
        cuda = have.device_type in _CUDA_TYPES and have.device_type not in HOST_DEVICE_TYPES
        if cuda:
            consumer = _cuda.dlpack_stream(stream)
        elif stream is not None:
            raise ValueError(f"stream must be None for a {have} tensor, not {stream!r}")
        if dl_device is not None:
            want = self._check_dl_device(dl_device, have)
            if want != have:
                if copy is False:
                    raise BufferError(f"a {have} tensor reaches {want} only as a copy "
                                      "(copy=False refuses one)")
                # a host copy, complete when returned (the consumer reads it on the host)
                host = _cuda.to_device(self, want, None, False)
                return _export(host, versioned, _COPIED if versioned else 0)
        if torch_consumer and not flags:
            if m[_NEG]:
                raise BufferError(_quirks.TORCH_NEGATIVE_STRIDES)
            if m[_FLAGS] & _READONLY:
                if copy is False:
                    raise BufferError(f"{_quirks.TORCH_READONLY}: this read-only tensor can "
                                      "reach PyTorch only as a copy (copy=None or copy=True)")
                flags = _COPY  # a private copy, marked IS_COPIED
        if cuda:
            _cuda.ready_for(self, consumer)
        elif have.device_type in _CUDA_TYPES:  # pinned: the host reads it
            _cuda.ready_for(self, _cuda.NO_SYNC)
        return _export(self, versioned, flags)

    @staticmethod
    def _check_dl_device(dl_device: Any, have: Device) -> Device:
        """The device a consumer asks for: |have|, or the host for a CUDA
        tensor (a copy); BufferError for anything else."""
        try:
            want = as_device(tuple(dl_device))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"dl_device must be a (device_type, device_id) tuple: {exc}") from None
        if want != have and not (want == _CPU_DEVICE and have.device_type in _CUDA_TYPES):
            raise BufferError(f"dlpx cannot export a {have} tensor to {want} without a "
                              "device copy")
        return want

    # ---- layout ----------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        """Extents, a tuple of ints."""
        return self._m()[_SHAPE]  # type: ignore[no-any-return]

    @property
    def strides(self) -> tuple[int, ...]:
        """Strides in elements (as PyTorch's stride())."""
        return self._m()[_STRIDES]  # type: ignore[no-any-return]

    @property
    def byte_strides(self) -> tuple[int, ...]:
        """Strides in bytes (as NumPy's strides); ValueError for packed
        sub-byte dtypes, whose elements have no byte address."""
        m = self._m()
        bits = 8 if m[_FLAGS] & _PADDED else m[_DTYPE].bits * m[_DTYPE].lanes
        if bits % 8:
            raise ValueError(f"packed {m[_DTYPE].name} elements have no byte strides")
        return tuple(s * (bits // 8) for s in m[_STRIDES])

    def stride(self, dim: Optional[int] = None) -> Any:
        """Strides in elements, or the stride of one dimension (PyTorch)."""
        s = self._m()[_STRIDES]
        return s if dim is None else s[dim]

    @property
    def dtype(self) -> dtype:
        return self._m()[_DTYPE]  # type: ignore[no-any-return]

    @property
    def device(self) -> Device:
        return self._m()[_DEVICE]  # type: ignore[no-any-return]

    @property
    def ndim(self) -> int:
        return len(self._m()[_SHAPE])

    @property
    def size(self) -> int:
        """Number of elements."""
        return self._m()[_NUMEL]  # type: ignore[no-any-return]

    def numel(self) -> int:
        return self._m()[_NUMEL]  # type: ignore[no-any-return]

    @property
    def nbytes(self) -> int:
        """Bytes of the elements if stored contiguously."""
        return self._m()[_NBYTES]  # type: ignore[no-any-return]

    @property
    def itemsize(self) -> int | float:
        """Bytes per element (a fraction for packed sub-byte dtypes)."""
        m = self._m()
        return 1 if m[_FLAGS] & _PADDED else m[_DTYPE].itemsize  # type: ignore[no-any-return]

    @property
    def readonly(self) -> bool:
        return bool(self._m()[_FLAGS] & _READONLY)

    @property
    def data_ptr(self) -> int:
        """Address of element 0 (an int)."""
        return self._m()[_PTR]  # type: ignore[no-any-return]

    def is_contiguous(self, order: str = "C") -> bool:
        if order == "C":
            return bool(self._m()[_C])
        if order == "F":
            return bool(self._m()[_F])
        raise ValueError(f"order must be 'C' or 'F', not {order!r}")

    def __len__(self) -> int:
        shape = self._m()[_SHAPE]
        if not shape:
            raise TypeError("len() of a 0-d tensor")
        return shape[0]  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[Tensor]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        try:
            m = self._m()
        except TypeError:
            return "<dlpx.Tensor without a tensor handle>"
        extra = ", readonly=True" if m[_FLAGS] & _READONLY else ""
        return (f"dlpx.Tensor(shape={m[_SHAPE]}, strides={m[_STRIDES]}, "
                f"dtype={m[_DTYPE].name}, device={m[_DEVICE]}{extra})")

    # ---- views -------------------------------------------------------------------

    def __getitem__(self, key: Any) -> Tensor:
        """NumPy basic indexing: ints, slices, ``...`` and ``None``."""
        return _op(self, OP.INDEX, key)  # type: ignore[no-any-return]

    def __setitem__(self, key: Any, value: Any) -> None:
        """``t[key] = src`` copies a tensor (anything with __dlpack__) of the
        same dtype, or a scalar (through NumPy), broadcast to the indexed
        shape."""
        self[key].copy_(value)

    @property
    def T(self) -> Tensor:
        """The dimensions reversed (NumPy's .T)."""
        return _op(self, OP.TRANSPOSE, None)  # type: ignore[no-any-return]

    @property
    def mT(self) -> Tensor:
        """The last two dimensions swapped."""
        if self.ndim < 2:
            raise ValueError("mT needs at least 2 dimensions")
        return self.swapaxes(-1, -2)

    def permute(self, *dims: Any) -> Tensor:
        """Reorders the dimensions: result dimension i is dims[i]."""
        return _op(self, OP.PERMUTE, shape_arg(dims))  # type: ignore[no-any-return]

    def swapaxes(self, a: int, b: int) -> Tensor:
        order = list(range(self.ndim))
        try:
            order[_dim(a)], order[_dim(b)] = order[_dim(b)], order[_dim(a)]
        except IndexError:
            raise IndexError(f"axes ({a}, {b}) out of range for {self.ndim} dimensions") from None
        return self.permute(order)

    def reshape(self, *shape: Any) -> Tensor:
        """A view with a new shape (one extent may be -1) when the strides
        allow it, else a C-contiguous copy (as NumPy and PyTorch)."""
        return _op(self, OP.RESHAPE_ANY, shape_arg(shape))  # type: ignore[no-any-return]

    def view(self, *spec: Any) -> Tensor:
        """``view(shape...)``: a view with a new shape, ValueError when the
        strides do not allow one.  ``view(dtype)``: the same bytes read as
        another dtype of the same width (a name, a dlpx, NumPy or PyTorch
        dtype)."""
        if len(spec) == 1:
            s = spec[0]
            if s is None:
                raise TypeError("view() needs a shape or a dtype, not None")
            if isinstance(s, (str, dtype)):
                return _op(self, OP.VIEW_DTYPE, dtype(s).key)  # type: ignore[no-any-return]
            if not isinstance(s, (int, tuple, list)):
                try:
                    dt = dtype(s)
                except TypeError:
                    dt = None
                if dt is not None:
                    return _op(self, OP.VIEW_DTYPE, dt.key)  # type: ignore[no-any-return]
        return _op(self, OP.RESHAPE, shape_arg(spec))  # type: ignore[no-any-return]

    def squeeze(self, dim: Optional[int] = None) -> Tensor:
        """Without the dimension |dim| of extent 1, or every one (None)."""
        return _op(self, OP.SQUEEZE, None if dim is None else _dim(dim))  # type: ignore[no-any-return]

    def unsqueeze(self, dim: int) -> Tensor:
        """With a new dimension of extent 1 at |dim| (PyTorch)."""
        return _op(self, OP.UNSQUEEZE, _dim(dim))  # type: ignore[no-any-return]

    def broadcast_to(self, shape: Any) -> Tensor:
        return _op(self, OP.BROADCAST, shape_arg(shape))  # type: ignore[no-any-return]

    def as_readonly(self) -> Tensor:
        """A read-only view of the same data."""
        return _op(self, OP.READONLY, None)  # type: ignore[no-any-return]

    # ---- copies -------------------------------------------------------------------

    def contiguous(self) -> Tensor:
        """This tensor if C-contiguous (a new handle), else a C-contiguous copy."""
        return _op(self, OP.CONTIGUOUS, None)  # type: ignore[no-any-return]

    def copy(self, order: str = "C") -> Tensor:
        """A new, writable copy in C (default) or F order (CUDA tensors:
        C order, on the same device, queued on the current stream)."""
        if self._m()[_DEVICE].device_type in _CUDA_TYPES:
            if order != "C":
                raise ValueError(f"CUDA tensors are copied in C order, not {order!r}")
            return _cuda.to_device(self, self._m()[_DEVICE], None, True)  # type: ignore[no-any-return]
        if order == "C":
            return _op(self, OP.COPY_C, None)  # type: ignore[no-any-return]
        if order == "F":
            return _op(self, OP.COPY_F, None)  # type: ignore[no-any-return]
        raise ValueError(f"order must be 'C' or 'F', not {order!r}")

    def clone(self) -> Tensor:
        return self.copy()

    def _padded_copy(self) -> Tensor:
        """A C-contiguous copy storing each sub-byte element in a byte."""
        return _op(self, OP.COPY_PADDED, None)  # type: ignore[no-any-return]

    def copy_(self, src: Any, non_blocking: bool = False, *, stream: Any = None) -> Tensor:
        """Copies |src| (a dlpx.Tensor, any DLPack producer, or a scalar) of
        the same dtype into this tensor, broadcasting |src| to this shape.
        Overlapping host memory is handled.  When either is on a CUDA device
        the copy is queued on |stream| (default: the current stream) and
        waited for unless |non_blocking|.  Returns self."""
        if type(src) is not Tensor:
            src = self._source(src)
        if src.shape != self.shape:
            src = src.broadcast_to(self.shape)
        if (self._m()[_DEVICE].device_type in _CUDA_TYPES
                or src._m()[_DEVICE].device_type in _CUDA_TYPES):
            _cuda.copy_into(self, src, stream, non_blocking)
        else:
            _copy_into(self, src)
        return self

    def to(self, device: Any, *, stream: Any = None, non_blocking: bool = False,
           copy: bool = False) -> Tensor:
        """This tensor on |device| ("cpu", "cuda", "cuda:1", "cuda_host",
        "cuda_managed", a Device or a torch.device): itself when it is there
        already (unless ``copy``), else a C-contiguous copy made on |stream|
        (default: the current stream), waited for unless |non_blocking|."""
        want = _cuda.device_arg(device)
        if want is None:
            raise TypeError("to() needs a device")
        have = self._m()[_DEVICE]
        if want == have and not copy:
            return self
        if want.device_type not in _CUDA_TYPES and have.device_type not in _CUDA_TYPES:
            if want == have:
                return self.copy()
            raise ValueError(f"dlpx copies between the host and CUDA devices, not {have} to "
                             f"{want}")
        return _cuda.to_device(self, want, stream, non_blocking)  # type: ignore[no-any-return]

    def cpu(self) -> Tensor:
        """This tensor in host memory (a copy, waited for, unless it is there)."""
        return self.to(_CPU_DEVICE)

    def cuda(self, device: Any = None, *, stream: Any = None,
             non_blocking: bool = False) -> Tensor:
        """This tensor on CUDA device |device| (default 0)."""
        dev = device if isinstance(device, (str, Device)) else f"cuda:{device or 0}"
        return self.to(dev, stream=stream, non_blocking=non_blocking)

    @property
    def is_cuda(self) -> bool:
        """True for tensors in CUDA device memory (kDLCUDA)."""
        return bool(self._m()[_DEVICE].device_type == _cuda.CUDA_DEVICE)

    def _source(self, value: Any) -> Tensor:
        if hasattr(value, "__dlpack__") or type(value).__name__ == "PyCapsule":
            return from_dlpack(value)  # type: ignore[no-any-return]
        np = sys.modules.get("numpy")
        if np is None:
            raise TypeError(f"cannot copy a {type(value).__name__} into a dlpx.Tensor: it has "
                            "no __dlpack__ (scalars and sequences need NumPy)")
        return from_dlpack(np.asarray(value, dtype=self.dtype.numpy))  # type: ignore[no-any-return]

    def __copy__(self) -> Tensor:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> Tensor:
        return self.copy()

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles by value (host tensors): the elements in C order, as
        NumPy and PyTorch do."""
        m = self._m()
        if m[_DEVICE].device_type not in HOST_DEVICE_TYPES:
            raise TypeError(f"cannot pickle a {m[_DEVICE]} tensor")
        padded = bool(m[_FLAGS] & _PADDED)
        c = self._padded_copy() if padded else self.copy()
        data = ctypes.string_at(c.data_ptr, c.nbytes) if c.nbytes else b""
        return (_rebuild, (data, m[_DTYPE].name, m[_SHAPE], padded,
                           _quirks.readonly_on_purpose(m[_FLAGS])))

    # ---- conversions ------------------------------------------------------------------

    def numpy(self, *, copy: Optional[bool] = None) -> Any:
        """A NumPy array over the same memory (no copy unless ``copy=True``,
        or ``copy=None`` and NumPy cannot hold the layout).  bfloat16 and the
        float8/6/4 types come out as ml_dtypes dtypes."""
        return to_numpy(self, copy)

    def torch(self, *, copy: Optional[bool] = None) -> Any:
        """A torch.Tensor over the same memory.  PyTorch has no read-only
        tensors and aborts on negative strides, so those need a copy:
        ``copy=None`` makes one, ``copy=False`` raises BufferError."""
        return to_torch(self, copy)

    def jax(self, *, copy: Optional[bool] = None) -> Any:
        """A jax.Array over the same memory when JAX can take it zero-copy
        (C-contiguous, writable, and aligned as JAX's CPU backend wants: 64
        bytes, which dlpx's allocations are); otherwise a copy
        (``copy=None``) or BufferError (``copy=False``)."""
        return to_jax(self, copy)

    def __array__(self, dtype: Any = None, copy: Optional[bool] = None) -> Any:
        arr = self.numpy(copy=copy)
        return arr if dtype is None else arr.astype(dtype, copy=False)

    def tolist(self) -> Any:
        return self.numpy().tolist()


def _rebuild(data: bytes, name: str, shape: tuple[int, ...], padded: bool,
             readonly: bool) -> Tensor:
    """Unpickles a Tensor (see Tensor.__reduce__)."""
    dt = dtype(name)
    numel = 1
    for n in shape:
        numel *= n
    buf = bytearray(data)
    if padded:
        t = frombuffer(buf, "uint8").view(dt)
    else:
        t = frombuffer(buf, dt, count=numel)
    t = t.reshape(shape)
    return t.as_readonly() if readonly else t  # type: ignore[no-any-return]


Tensor.__dlpack_c_exchange_api__ = _bridge.exchange_api_capsule()  # type: ignore[attr-defined]
# __dlpack__ and __dlpack_device__ are C methods from libdlpx (see
# dlpx_py_method_defs); the package installs them once the bridge is
# registered.
