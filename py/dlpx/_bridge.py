"""Registers the CPython C-API with libdlpx, and binds the bridge's GIL-held
functions (include/dlpx/python.h).

libdlpx contains the capsule destructors, the release callback for memory
owned by Python objects, the C methods of dlpx.Tensor, and every operation
that reads a tensor handle or makes a new Tensor.  They are C (no Python
callback ever sits on a destructor or deleter path, and no Python code runs
between making a handle and giving it to its owner) and reach Python
through function pointers registered here once.

cffi releases the GIL around every call, so these functions are called
through ``ctypes.PyDLL``, which keeps it and raises the exception they set:
one foreign call per operation.
"""

from __future__ import annotations

import atexit
import builtins
import ctypes
import sys
from typing import Any, Callable

from . import _capi
from ._lib import ffi, lib, library_path, types

__all__ = ["register", "install_methods", "exchange_api_capsule", "tensor_type",
           "consume", "consume_exchange", "export", "meta", "op", "new", "from_buffer", "copy_into",
           "tensor_object", "handle", "wrap",
           "OP"]

_pydll = ctypes.PyDLL(library_path)
_P = ctypes.py_object


def _bind(name: str, restype: Any, *argtypes: Any) -> Any:
    f = getattr(_pydll, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


# The GIL-held functions.  Each returns a new object (or 0) or raises.
consume = _bind("dlpx_py_consume", _P, _P, ctypes.c_uint32)
consume_exchange = _bind("dlpx_py_consume_exchange", _P, ctypes.c_void_p, _P, ctypes.c_uint32)
export = _bind("dlpx_py_tensor_export", _P, _P, ctypes.c_int, ctypes.c_uint32)
meta = _bind("dlpx_py_tensor_meta", _P, _P)
op = _bind("dlpx_py_tensor_op", _P, _P, ctypes.c_int, _P)
new = _bind("dlpx_py_tensor_new", _P, ctypes.c_int64, _P, ctypes.c_uint32, ctypes.c_int)
from_buffer = _bind("dlpx_py_tensor_from_buffer", _P, _P, ctypes.c_int64, ctypes.c_int64, _P, _P,
                    ctypes.c_uint32)
copy_into = _bind("dlpx_py_tensor_copy_into", ctypes.c_int, _P, _P)
#: a new dlpx.Tensor owning a dlpx_tensor * (given as an address)
tensor_object = _bind("dlpx_py_tensor_object", _P, ctypes.c_void_p)
_register = _bind("dlpx_py_register", ctypes.c_int, ctypes.c_void_p)


def wrap(ptr: Any) -> Any:
    """A dlpx.Tensor that owns the ``dlpx_tensor *`` |ptr| (taken even on
    failure)."""
    return tensor_object(int(ffi.cast(types.uintptr_t, ptr)))


def handle(t: Any) -> Any:
    """The ``dlpx_tensor *`` of a dlpx.Tensor (borrowed: keep |t| alive)."""
    addr = _capi.capsule_get_pointer(t._cap, b"dlpx.tensor")
    return ffi.cast(types.tensor_p, addr)


class OP:
    """The operations of dlpx_py_tensor_op (the dlpx_py_op enum)."""

    CLONE = lib.DLPX_PY_OP_CLONE
    TRANSPOSE = lib.DLPX_PY_OP_TRANSPOSE
    PERMUTE = lib.DLPX_PY_OP_PERMUTE
    RESHAPE = lib.DLPX_PY_OP_RESHAPE
    RESHAPE_ANY = lib.DLPX_PY_OP_RESHAPE_ANY
    SQUEEZE = lib.DLPX_PY_OP_SQUEEZE
    UNSQUEEZE = lib.DLPX_PY_OP_UNSQUEEZE
    BROADCAST = lib.DLPX_PY_OP_BROADCAST
    VIEW_DTYPE = lib.DLPX_PY_OP_VIEW_DTYPE
    READONLY = lib.DLPX_PY_OP_READONLY
    CONTIGUOUS = lib.DLPX_PY_OP_CONTIGUOUS
    COPY_C = lib.DLPX_PY_OP_COPY_C
    COPY_F = lib.DLPX_PY_OP_COPY_F
    COPY_PADDED = lib.DLPX_PY_OP_COPY_PADDED
    INDEX = lib.DLPX_PY_OP_INDEX


_registered: list[type] = []


def tensor_type() -> type:
    """The dlpx.Tensor class (registered by the package at import)."""
    return _registered[0]


def _finalizing_address() -> int | None:
    for name in ("Py_IsFinalizing", "_Py_IsFinalizing"):
        addr = _capi.address(name)
        if addr:
            return addr
    return None


# The C-API functions of dlpx_pyapi, by field name (the field order is the
# header's; cffi's struct knows it).
_FUNCTIONS = [name for name, _ in ffi.typeof("dlpx_pyapi").fields
              if name[:2] == "Py" and name != "Py_IsFinalizing"]


def register(tensor_class: type, dlpack_fallback: Callable[..., Any]) -> None:
    """Fills libdlpx's dlpx_pyapi table.  |tensor_class| is dlpx.Tensor
    (libdlpx makes its instances); |dlpack_fallback| handles the
    __dlpack__ calls the C method does not."""
    api = ffi.new(types.pyapi_p)
    api.size = ffi.sizeof("dlpx_pyapi")
    for field in _FUNCTIONS:
        addr = _capi.address(field)
        if not addr:
            raise ImportError(f"dlpx needs the C-API function {field}, which this Python lacks")
        setattr(api, field, ffi.cast(ffi.typeof(getattr(api, field)), addr))
    fin = _finalizing_address()
    if fin is not None:
        api.Py_IsFinalizing = ffi.cast(ffi.typeof(api.Py_IsFinalizing), fin)

    def obj(o: Any) -> Any:
        return ffi.cast(types.void_p, _capi.keep_forever(o))

    for i in range(lib.DLPX_PY_EXCEPTION_COUNT):
        api.exceptions[i] = obj(getattr(builtins, ffi.string(lib.dlpx_py_exception_name(i))
                                        .decode()))
    api.obj_None = obj(None)
    api.obj_Ellipsis = obj(Ellipsis)
    api.obj_True = obj(True)
    api.obj_False = obj(False)
    api.type_tuple = obj(tuple)
    api.type_slice = obj(slice)
    api.tensor_type = obj(tensor_class)
    api.name_cap = obj(sys.intern("_cap"))
    for kw in ("stream", "max_version", "dl_device", "copy"):
        setattr(api, "name_" + kw, obj(sys.intern(kw)))
    api.dlpack_fallback = obj(dlpack_fallback)
    if _register(int(ffi.cast(types.uintptr_t, api))) != 0:
        raise ImportError(ffi.string(lib.dlpx_last_error()).decode())
    _registered[:] = [tensor_class]
    # From the atexit hook on, deleters never call into Python again: the
    # interpreter may be finalizing (or gone) when the last ones run.
    atexit.register(lib.dlpx_py_shutdown)


_PY_METHOD_DEF_SIZE = 4 * ctypes.sizeof(ctypes.c_void_p)  # name, meth, flags (padded), doc


def install_methods(cls: type) -> None:
    """Installs libdlpx's C methods (dlpx_py_method_defs) on |cls|, as
    method descriptors: __dlpack__ and __dlpack_device__ run in C."""
    base = int(ffi.cast(types.uintptr_t, lib.dlpx_py_method_defs()))
    i = 0
    while ctypes.c_void_p.from_address(base + i * _PY_METHOD_DEF_SIZE).value:
        descr = _capi.new_method(id(cls), base + i * _PY_METHOD_DEF_SIZE)
        setattr(cls, descr.__name__, descr)
        i += 1


def capsule_name(which: int) -> int:
    """Address of one of libdlpx's static capsule names (dlpx_py_capsule)."""
    return int(ffi.cast(types.uintptr_t, lib.dlpx_py_capsule_name(which)))


def exchange_api_capsule() -> Any:
    """A "dlpack_exchange_api" capsule over libdlpx's static table."""
    table = int(ffi.cast(types.uintptr_t, lib.dlpx_py_exchange_api()))
    return _capi.capsule_new(table, capsule_name(lib.DLPX_PY_CAPSULE_EXCHANGE_API), None)
