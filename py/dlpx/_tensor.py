"""dlpx.Tensor: a view over libdlpx memory that speaks DLPack."""

import operator
import sys

from . import _bridge
from ._dtypes import Device, DLDeviceType, as_device, dtype
from ._errors import check
from ._lib import ffi, lib

__all__ = ["Tensor", "wrap_new", "dlpack_fallback"]

_new = object.__new__
_NONE = lib.DLPX_NONE
_INT64_MAX = 2**63 - 1
_export = _bridge.export
_HOST_TYPES = (DLDeviceType.kDLCPU, DLDeviceType.kDLCUDAHost, DLDeviceType.kDLROCMHost)


def wrap_new(ptr):
    """A Tensor owning the new dlpx_tensor* |ptr| (a cffi pointer)."""
    t = _new(Tensor)
    if _bridge.bind(t, int(ffi.cast("uintptr_t", ptr))) != 0:
        raise RuntimeError(ffi.string(lib.dlpx_last_error()).decode())
    t._p = ptr
    return t


def _out():
    return ffi.new("dlpx_tensor **")


def _clamp(v):
    """A slice bound as int64 (Python clamps anyway)."""
    v = operator.index(v)
    if v > _INT64_MAX:
        return _INT64_MAX
    if v < -_INT64_MAX:
        return -_INT64_MAX
    return v


def _shape_arg(shape):
    """A shape from an int or a sequence of ints, as a tuple."""
    if isinstance(shape, tuple) and len(shape) == 1 and not isinstance(shape[0], int):
        shape = shape[0]  # f(*shape) called with one sequence
    try:
        return (operator.index(shape),)
    except TypeError:
        pass
    try:
        return tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"a shape is an int or a sequence of ints, not {shape!r}") from None


def _called_from_torch(depth):
    """True when the function |depth| frames up belongs to PyTorch."""
    try:
        frame = sys._getframe(depth)
    except ValueError:
        return False
    return (frame.f_globals.get("__name__") or "").startswith("torch")


def dlpack_fallback(self, stream, max_version, dl_device, copy):
    """The __dlpack__ calls libdlpx's C method hands back: any stream,
    dl_device or copy argument, a malformed max_version, negative strides."""
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
    return self._dlpack_checked(stream, versioned, dl_device, copy)


class Tensor:
    """A tensor: a DLPack view (dtype, shape, strides, device) over memory
    that libdlpx owns or borrows.  Made by :func:`dlpx.empty`,
    :func:`dlpx.zeros`, :func:`dlpx.from_dlpack` and :func:`dlpx.frombuffer`;
    indexing and the shape methods give views without copying."""

    # _cap: the "dlpx.tensor" capsule that owns the C handle (C destructor);
    # _addr: its address; _p: cffi pointer (lazy); _meta: cached layout.
    __slots__ = ("_cap", "_addr", "_p", "_meta", "__weakref__")

    def __init__(self, *args, **kwargs):
        raise TypeError(
            "dlpx.Tensor is not constructed directly: use dlpx.empty, dlpx.zeros, "
            "dlpx.from_dlpack or dlpx.frombuffer")

    # ---- internals ----------------------------------------------------------

    @property
    def _ptr(self):
        try:
            return self._p
        except AttributeError:
            p = self._p = ffi.cast("dlpx_tensor *", self._addr)
            return p

    def _m(self):
        """(shape, strides, dtype, device, flags, has_negative_stride)."""
        try:
            return self._meta
        except AttributeError:
            pass
        p = self._ptr
        dl = lib.dlpx_tensor_dltensor(p)
        n = dl.ndim
        shape = tuple(dl.shape[0:n]) if n else ()
        strides = tuple(dl.strides[0:n]) if n else ()
        m = self._meta = (
            shape, strides, dtype._make(dl.dtype.code, dl.dtype.bits, dl.dtype.lanes),
            Device(DLDeviceType(dl.device.device_type), dl.device.device_id),
            lib.dlpx_tensor_flags(p),
            0 not in shape and any(s < 0 for s, e in zip(strides, shape) if e > 1))
        return m

    def _view(self, fn, *args):
        out = _out()
        check(fn(self._ptr, *args, out))
        return wrap_new(out[0])

    # ---- DLPack --------------------------------------------------------------

    def _dlpack_checked(self, stream, versioned, dl_device, copy):
        flags = 0
        if copy is not None:
            if copy is True:
                flags = lib.DLPX_EXPORT_COPY
            elif copy is not False:
                raise TypeError(f"copy must be True, False or None, not {copy!r}")
        meta = self._m()
        if stream is not None:
            if meta[3].device_type in _HOST_TYPES:
                raise ValueError(f"stream must be None for a {meta[3]} tensor, not {stream!r}")
        if dl_device is not None:
            self._check_dl_device(dl_device, meta[3])
        if meta[5] and not flags and _called_from_torch(3):
            raise BufferError(
                "PyTorch aborts the process on negative strides (pytorch#188023): "
                "export a copy (torch.from_dlpack(t, copy=True) or t.contiguous())")
        return _export(self._cap, versioned, flags)

    @staticmethod
    def _check_dl_device(dl_device, have):
        try:
            want = as_device(tuple(dl_device))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"dl_device must be a (device_type, device_id) tuple: {exc}") from None
        if want != have:
            raise BufferError(f"dlpx cannot export a {have} tensor to {want} without a device copy")

    # ---- layout ----------------------------------------------------------------

    @property
    def shape(self):
        """Extents, a tuple of ints."""
        return self._m()[0]

    @property
    def strides(self):
        """Strides in elements (as PyTorch's stride())."""
        return self._m()[1]

    @property
    def byte_strides(self):
        """Strides in bytes (as NumPy's strides); ValueError for packed
        sub-byte dtypes, whose elements have no byte address."""
        m = self._m()
        bits = m[2].bits * m[2].lanes
        if m[4] & lib.DLPX_TENSOR_SUBBYTE_PADDED:
            bits = 8
        if bits % 8:
            raise ValueError(f"packed {m[2].name} elements have no byte strides")
        return tuple(s * (bits // 8) for s in m[1])

    def stride(self, dim=None):
        """Strides in elements, or the stride of one dimension (PyTorch)."""
        s = self._m()[1]
        return s if dim is None else s[dim]

    @property
    def dtype(self):
        return self._m()[2]

    @property
    def device(self):
        return self._m()[3]

    @property
    def ndim(self):
        return len(self._m()[0])

    @property
    def size(self):
        """Number of elements."""
        return lib.dlpx_tensor_numel(self._ptr)

    def numel(self):
        return lib.dlpx_tensor_numel(self._ptr)

    @property
    def nbytes(self):
        """Bytes of the elements if stored contiguously."""
        return lib.dlpx_tensor_nbytes(self._ptr)

    @property
    def itemsize(self):
        """Bytes per element (a fraction for packed sub-byte dtypes)."""
        m = self._m()
        return 1 if m[4] & lib.DLPX_TENSOR_SUBBYTE_PADDED else m[2].itemsize

    @property
    def readonly(self):
        return bool(self._m()[4] & lib.DLPX_TENSOR_READONLY)

    @property
    def data_ptr(self):
        """Address of element 0 (an int)."""
        return int(ffi.cast("uintptr_t", lib.dlpx_tensor_data(self._ptr)))

    def is_contiguous(self, order="C"):
        if order == "C":
            return bool(lib.dlpx_tensor_is_c_contiguous(self._ptr))
        if order == "F":
            return bool(lib.dlpx_tensor_is_f_contiguous(self._ptr))
        raise ValueError(f"order must be 'C' or 'F', not {order!r}")

    def __len__(self):
        shape = self._m()[0]
        if not shape:
            raise TypeError("len() of a 0-d tensor")
        return shape[0]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self):
        m = self._m()
        extra = ", readonly=True" if m[4] & lib.DLPX_TENSOR_READONLY else ""
        return (f"dlpx.Tensor(shape={m[0]}, strides={m[1]}, dtype={m[2].name}, "
                f"device={m[3]}{extra})")

    # ---- views -------------------------------------------------------------------

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        n = len(key)
        items = ffi.new("dlpx_index[]", n)
        for i, k in enumerate(key):
            item = items[i]
            if isinstance(k, slice):
                item.kind = lib.DLPX_INDEX_SLICE
                try:
                    item.start = _NONE if k.start is None else _clamp(k.start)
                    item.stop = _NONE if k.stop is None else _clamp(k.stop)
                    item.step = _NONE if k.step is None else _clamp(k.step)
                except TypeError:
                    raise TypeError(f"slice indices must be integers or None, not {k!r}") from None
            elif k is None:
                item.kind = lib.DLPX_INDEX_NEWAXIS
            elif k is Ellipsis:
                item.kind = lib.DLPX_INDEX_ELLIPSIS
            elif isinstance(k, bool) or not hasattr(type(k), "__index__"):
                raise IndexError(
                    "only integers, slices (`:`), ellipsis (`...`) and None (`newaxis`) are "
                    f"valid indices, not {type(k).__name__}")
            else:
                v = operator.index(k)
                if not -_INT64_MAX <= v <= _INT64_MAX:
                    raise IndexError(f"index {v} is out of bounds")
                item.kind = lib.DLPX_INDEX_INT
                item.start = v
        return self._view(lib.dlpx_tensor_index, n, items)

    def __setitem__(self, key, value):
        """``t[key] = src`` copies a tensor (anything with __dlpack__) of the
        same dtype, broadcast to the indexed shape."""
        self[key].copy_(value)

    @property
    def T(self):
        """The dimensions reversed (NumPy's .T)."""
        return self._view(lib.dlpx_tensor_transpose)

    @property
    def mT(self):
        """The last two dimensions swapped."""
        if self.ndim < 2:
            raise ValueError("mT needs at least 2 dimensions")
        return self.swapaxes(-1, -2)

    def permute(self, *dims):
        """Reorders the dimensions: result dimension i is dims[i]."""
        dims = _shape_arg(dims)
        axes = ffi.new("int32_t[]", dims)
        return self._view(lib.dlpx_tensor_permute, len(dims), axes)

    def swapaxes(self, a, b):
        order = list(range(self.ndim))
        try:
            order[a], order[b] = order[b], order[a]
        except IndexError:
            raise IndexError(f"axes ({a}, {b}) out of range for {self.ndim} dimensions") from None
        return self.permute(order)

    def reshape(self, *shape):
        """A view with a new shape (one extent may be -1) when the strides
        allow it, else a C-contiguous copy (as NumPy and PyTorch)."""
        shape = _shape_arg(shape)
        out = _out()
        arr = ffi.new("int64_t[]", shape)
        rc = lib.dlpx_tensor_reshape(self._ptr, len(shape), arr, out)
        if rc == lib.DLPX_ELAYOUT:
            return self.contiguous().reshape(shape)
        check(rc)
        return wrap_new(out[0])

    def view(self, *spec):
        """``view(shape...)``: a view with a new shape, ValueError when the
        strides do not allow one.  ``view(dtype)``: the same bytes read as
        another dtype of the same width."""
        if len(spec) == 1 and (isinstance(spec[0], (str, dtype)) or
                               not isinstance(spec[0], (int, tuple, list))):
            try:
                dt = dtype(spec[0])
            except TypeError:
                dt = None
            if dt is not None:
                d = ffi.new("DLDataType *", {"code": dt.code, "bits": dt.bits, "lanes": dt.lanes})
                return self._view(lib.dlpx_tensor_view_as, d[0])
        shape = _shape_arg(spec)
        return self._view(lib.dlpx_tensor_reshape, len(shape), ffi.new("int64_t[]", shape))

    def squeeze(self, dim=None):
        return self._view(lib.dlpx_tensor_squeeze, lib.DLPX_ALL_DIMS if dim is None else dim)

    def unsqueeze(self, dim):
        return self._view(lib.dlpx_tensor_unsqueeze, dim)

    def broadcast_to(self, shape):
        shape = _shape_arg(shape)
        return self._view(lib.dlpx_tensor_broadcast_to, len(shape), ffi.new("int64_t[]", shape))

    def as_readonly(self):
        """A read-only view of the same data."""
        return self._view(lib.dlpx_tensor_with_flags, lib.DLPX_TENSOR_READONLY)

    # ---- copies -------------------------------------------------------------------

    def contiguous(self):
        """This tensor if C-contiguous (a new handle), else a C-contiguous copy."""
        return self._view(lib.dlpx_tensor_contiguous)

    def copy(self, order="C"):
        """A new, writable copy in C (default) or F order."""
        if order not in ("C", "F"):
            raise ValueError(f"order must be 'C' or 'F', not {order!r}")
        return self._view(lib.dlpx_tensor_copy, order.encode())

    def clone(self):
        return self.copy()

    def _padded_copy(self):
        """A C-contiguous copy storing each sub-byte element in a byte."""
        m = self._m()
        dt = m[2]
        d = ffi.new("DLDataType *", {"code": dt.code, "bits": dt.bits, "lanes": dt.lanes})
        out = _out()
        check(lib.dlpx_tensor_new(d[0], len(m[0]), ffi.new("int64_t[]", m[0]),
                                  lib.DLPX_TENSOR_SUBBYTE_PADDED, 1, out))
        t = wrap_new(out[0])
        check(lib.dlpx_tensor_copy_into(t._ptr, self._ptr))
        return t

    def copy_(self, src):
        """Copies |src| (a dlpx.Tensor or any DLPack producer) of the same
        dtype into this tensor, broadcasting |src| to this shape.  Overlapping
        memory is handled.  Returns self."""
        from ._create import from_dlpack

        if not isinstance(src, Tensor):
            src = from_dlpack(src)
        if src.shape != self.shape:
            src = src.broadcast_to(self.shape)
        check(lib.dlpx_tensor_copy_into(self._ptr, src._ptr))
        return self

    # ---- conversions ------------------------------------------------------------------

    def numpy(self, *, copy=None):
        """A NumPy array over the same memory (no copy unless ``copy=True``,
        or ``copy=None`` and NumPy cannot hold the layout).  bfloat16 and the
        float8/6/4 types come out as ml_dtypes dtypes."""
        from ._convert import to_numpy

        return to_numpy(self, copy)

    def torch(self, *, copy=None):
        """A torch.Tensor over the same memory.  PyTorch has no read-only
        tensors and aborts on negative strides, so those need a copy:
        ``copy=None`` makes one, ``copy=False`` raises BufferError."""
        from ._convert import to_torch

        return to_torch(self, copy)

    def jax(self, *, copy=None):
        """A jax.Array over the same memory when JAX can take it zero-copy
        (C-contiguous, writable, and aligned as JAX's CPU backend wants: 64
        bytes, which dlpx's allocations are); otherwise a copy
        (``copy=None``) or BufferError (``copy=False``)."""
        from ._convert import to_jax

        return to_jax(self, copy)

    def __array__(self, dtype=None, copy=None):
        arr = self.numpy(copy=copy)
        return arr if dtype is None else arr.astype(dtype, copy=False)

    def tolist(self):
        return self.numpy().tolist()


Tensor.__dlpack_c_exchange_api__ = _bridge.exchange_api_capsule()
# __dlpack__ and __dlpack_device__ are C methods from libdlpx (see
# dlpx_py_method_defs); they are installed once the bridge is registered.
