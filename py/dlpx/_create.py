"""Making dlpx tensors: from any DLPack producer, from buffers, or new."""

import ctypes
import operator
import sys

from . import _bridge
from ._dtypes import DLDeviceType, as_device, dtype
from ._errors import check
from ._lib import ffi, lib
from ._tensor import Tensor, _shape_arg, wrap_new

__all__ = ["from_dlpack", "empty", "zeros", "frombuffer", "stats"]

_new = object.__new__
_MAX_VERSION = (lib.DLPACK_MAJOR_VERSION, lib.DLPACK_MINOR_VERSION)
_LEGACY_RO = lib.DLPX_IMPORT_LEGACY_READONLY
_consume_raw = _bridge.consume
_consume_exchange_raw = _bridge.consume_exchange


def _bridge_failed():
    # Failures raise from inside the call; a bare non-zero code means the
    # bridge itself is unusable.
    raise RuntimeError(ffi.string(lib.dlpx_last_error()).decode())


def _consume(t, cap, flags):
    if _consume_raw(t, cap, flags):
        _bridge_failed()


_exchange_tables = {}  # producer type -> address of its exchange API, or 0
_CapsuleType = type(Tensor.__dlpack_c_exchange_api__)


def _exchange_table(kind):
    """The address of |kind|'s DLPack C exchange API table (0 if none)."""
    cap = getattr(kind, "__dlpack_c_exchange_api__", None)
    addr = 0
    if type(cap) is _CapsuleType and _bridge.capsule_is_valid(cap, b"dlpack_exchange_api"):
        addr = _bridge.capsule_get_pointer(cap, b"dlpack_exchange_api") or 0
    if addr and kind not in _exchange_guards:
        _exchange_guards[kind] = _guard_for(kind)  # before the table: other threads
    _exchange_tables[kind] = addr
    return addr


def _torch_exchange_ok(x):
    """PyTorch's exchange function skips the checks of its __dlpack__
    (gradients, conjugate and negative bits) and never synchronizes
    streams: take the fast lane only for plain host tensors."""
    return x.is_cpu and not (x.requires_grad or x.is_conj() or x.is_neg())


def _host_producer(x):
    """Other producers: the exchange lane does no stream synchronization,
    so use it for host data only."""
    return x.__dlpack_device__()[0] == DLDeviceType.kDLCPU


def _guard_for(kind):
    mod = kind.__module__ or ""
    return _torch_exchange_ok if mod.split(".")[0] == "torch" else _host_producer


_exchange_guards = {}  # producer type -> predicate for the exchange lane


def from_dlpack(x, /, *, device=None, copy=None):
    """A dlpx.Tensor over the data of |x| (any object with ``__dlpack__``,
    or a DLPack capsule), without copying.

    Uses the producer's DLPack C exchange API when its type offers one, else
    ``x.__dlpack__(max_version=(1, 3))``, falling back to a plain
    ``x.__dlpack__()`` for producers older than DLPack 1.0.  Data that came
    in a legacy capsule is read-only (such capsules cannot say whether it may
    be written); read-only producers stay read-only.

    ``device``: the device the result must be on (only the producer can move
    data; dlpx never copies between devices).  ``copy``: True always copies,
    False never does, None copies only if the producer must.
    """
    kind = type(x)
    if kind is Tensor:
        if device is not None and as_device(device) != x.device:
            raise BufferError(f"dlpx cannot move a {x.device} tensor to {device}")
        return x.copy() if copy else x._view(lib.dlpx_tensor_clone)
    t = _new(Tensor)
    if kind is _CapsuleType:
        _consume(t, x, lib.DLPX_IMPORT_LEGACY_READONLY)
        return _finish(t, device, copy)
    if device is None and copy is None:
        table = _exchange_tables.get(kind)
        if table is None:
            table = _exchange_table(kind)
        if table and _exchange_guards[kind](x):
            if _consume_exchange_raw(t, table, x, _LEGACY_RO):
                _bridge_failed()
            return t
        try:
            method = x.__dlpack__
        except AttributeError:
            raise TypeError(f"{kind.__name__} does not support DLPack "
                            "(it has no __dlpack__ method)") from None
        try:
            cap = method(max_version=_MAX_VERSION)
        except TypeError:
            cap = method()  # a producer older than DLPack 1.0
        except BufferError:
            ml = _from_ml_dtypes(x)
            if ml is None:
                raise
            return ml
        if _consume_raw(t, cap, _LEGACY_RO):
            _bridge_failed()
        return t
    return _from_dlpack_slow(t, x, device, copy)


_RAW = {1: "uint8", 2: "uint16", 4: "uint32", 8: "uint64"}


def _from_ml_dtypes(x):
    """NumPy refuses to export arrays of ml_dtypes types (bfloat16, the
    float8/6/4 kinds, complex32) through DLPack: import their bytes as
    unsigned integers of the same width and read them as that dtype.  None
    when |x| is not such an array."""
    np = sys.modules.get("numpy")
    if np is None or not isinstance(x, np.ndarray):
        return None
    if not (x.dtype.type.__module__ or "").startswith("ml_dtypes"):
        return None
    try:
        dt = dtype(x.dtype)
    except TypeError:
        return None
    raw = _RAW.get(x.dtype.itemsize)
    if raw is None:
        return None
    return from_dlpack(x.view(raw)).view(dt)


def _from_dlpack_slow(t, x, device, copy):
    if copy is not None and not isinstance(copy, bool):
        raise TypeError(f"copy must be True, False or None, not {copy!r}")
    if not hasattr(x, "__dlpack__"):
        raise TypeError(f"{type(x).__name__} does not support DLPack (no __dlpack__ method)")
    kwargs = {"max_version": _MAX_VERSION}
    if copy is not None:
        kwargs["copy"] = copy
    if device is not None:
        target = as_device(device)
        kwargs["dl_device"] = (int(target.device_type), target.device_id)
    producer_copied = copy is not None
    try:
        cap = x.__dlpack__(**kwargs)
    except TypeError:
        producer_copied = False
        cap = x.__dlpack__()
    except BufferError:
        ml = _from_ml_dtypes(x)
        if ml is None:
            raise
        return _finish(ml, device, copy)
    except (NotImplementedError, ValueError) as exc:
        # A producer that cannot serve the requested device says so in its own
        # way (PyTorch: NotImplementedError, NumPy 2.2: ValueError); the
        # protocol's word for it is BufferError.
        if device is None:
            raise
        raise BufferError(f"{type(x).__name__} cannot export to {device}: {exc}") from exc
    # A producer that accepted copy=True (a DLPack >= 1.0 keyword) made a
    # private copy: it is ours to write even if it came in a legacy capsule.
    flags = 0 if (copy is True and producer_copied) else lib.DLPX_IMPORT_LEGACY_READONLY
    _consume(t, cap, flags)
    return _finish(t, device, copy if not producer_copied else None)


def _finish(t, device, copy):
    """Applies device/copy requests the producer could not handle."""
    if device is not None and as_device(device) != t.device:
        raise BufferError(f"the producer gave a {t.device} tensor, not {device}")
    if copy:
        return t.copy()
    return t


def _dtype_struct(dt):
    return ffi.new("DLDataType *", {"code": dt.code, "bits": dt.bits, "lanes": dt.lanes})[0]


def empty(shape, dtype="float32"):
    """A new C-contiguous host tensor, uninitialized (64-byte aligned)."""
    return _create(shape, dtype, False)


def zeros(shape, dtype="float32"):
    """A new C-contiguous host tensor filled with zeros."""
    return _create(shape, dtype, True)


def _create(shape, dt, zero):
    shape = _shape_arg(shape)
    dt = globals()["dtype"](dt)
    out = ffi.new("dlpx_tensor **")
    check(lib.dlpx_tensor_new(_dtype_struct(dt), len(shape), ffi.new("int64_t[]", shape), 0,
                              1 if zero else 0, out))
    return wrap_new(out[0])


# struct format characters (native or standard size) -> dtype names
_FORMATS = {
    "?": "bool", "b": "int8", "B": "uint8", "h": "int16", "H": "uint16", "i": "int32",
    "I": "uint32", "l": "int64", "L": "uint64", "q": "int64", "Q": "uint64", "n": "int64",
    "N": "uint64", "e": "float16", "f": "float32", "d": "float64", "Zf": "complex64",
    "Zd": "complex128", "c": "uint8",
}

_incref = ctypes.pythonapi.Py_IncRef
_incref.argtypes = [ctypes.py_object]
_incref.restype = None
_decref = ctypes.pythonapi.Py_DecRef
_decref.argtypes = [ctypes.py_object]
_decref.restype = None


class _PyBuffer(ctypes.Structure):
    """CPython's Py_buffer (stable ABI since 3.11, unchanged since 3.3)."""

    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p), ("len", ctypes.c_ssize_t),
                ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int),
                ("ndim", ctypes.c_int), ("format", ctypes.c_char_p),
                ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                ("suboffsets", ctypes.c_void_p), ("internal", ctypes.c_void_p)]


_PyBUF_RECORDS_RO = 0x1C  # PyBUF_STRIDES | PyBUF_FORMAT: any strides, no suboffsets
_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]
_release_buffer.restype = None


def _buffer_address(view):
    """The address of element 0 of a memoryview (any strides).  The
    memoryview itself keeps the memory exported while it lives."""
    pb = _PyBuffer()
    _get_buffer(view, ctypes.byref(pb), _PyBUF_RECORDS_RO)
    try:
        return pb.buf or 0
    finally:
        _release_buffer(ctypes.byref(pb))


def _format_dtype(fmt, itemsize):
    f = fmt.lstrip("@=<")
    if fmt.startswith((">", "!")) and itemsize > 1:
        raise BufferError(f"big-endian buffer format {fmt!r} cannot be described by DLPack")
    name = _FORMATS.get(f)
    if name is None:
        raise BufferError(f"buffer format {fmt!r} has no DLPack dtype; pass dtype=")
    dt = dtype(name)
    if dt.itemsize != itemsize:
        raise BufferError(f"buffer format {fmt!r} has itemsize {itemsize}, not {dt.itemsize}")
    return dt


def frombuffer(buffer, dtype=None, count=-1, offset=0):
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
    readonly = view.readonly
    if dtype is None:
        if count != -1 or offset != 0:
            raise ValueError("count and offset need an explicit dtype")
        dt = _format_dtype(view.format, view.itemsize)
        shape = view.shape
        if view.nbytes == 0:
            strides = None
        else:
            if any(s % view.itemsize for s in view.strides):
                raise BufferError(f"buffer strides {view.strides} are not multiples of the itemsize")
            strides = tuple(s // view.itemsize for s in view.strides)
        start = 0
    else:
        dt = globals()["dtype"](dtype)
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
    base = _buffer_address(view)
    data = ffi.cast("void *", base + start) if (base or start) else ffi.NULL
    ndim = len(shape)
    out = ffi.new("dlpx_tensor **")
    # The memoryview holds the exporter's buffer (a bytearray cannot be
    # resized under it); the storage owns one reference to it, dropped by
    # dlpx_py_release_object when the last view and export are gone.
    _incref(view)
    rc = lib.dlpx_tensor_wrap(
        data, {"device_type": lib.kDLCPU, "device_id": 0}, _dtype_struct(dt), ndim,
        ffi.new("int64_t[]", shape), ffi.new("int64_t[]", strides) if strides else ffi.NULL,
        lib.DLPX_TENSOR_READONLY if readonly else 0, lib.dlpx_py_release_object,
        ffi.cast("void *", id(view)), out)
    if rc:
        _decref(view)  # nothing was taken
        check(rc)
    return wrap_new(out[0])


def stats():
    """libdlpx's live-object counters (a dict): storages, tensors and
    exports alive, deleters and releases run, Python references leaked at
    shutdown.  Tests use them to prove nothing leaks."""
    s = ffi.new("dlpx_stats *")
    lib.dlpx_stats_get(s)
    return {k: getattr(s, k) for k in ("storages_live", "tensors_live", "exports_live",
                                       "foreign_deleters_run", "borrowed_releases_run",
                                       "python_refs_leaked")}
