"""Registers the CPython C-API with libdlpx and binds its GIL-holding calls.

libdlpx contains the capsule destructors, the release callback for memory
owned by Python objects, and the few hot-path functions that build and
consume capsules.  They are C (no Python callback ever sits on a destructor
or deleter path) and reach Python through function pointers registered here
once, taken from ``ctypes.pythonapi``.

cffi releases the GIL around every call, so the functions that need it are
called through ``ctypes.PyDLL``, which keeps the GIL and raises the Python
exception they set.  That is one foreign call per DLPack exchange.
"""

import atexit
import ctypes
import sys

from ._lib import ffi, lib, library_path

__all__ = ["register", "consume", "consume_exchange", "export", "bind", "NAME_OWNER"]

_api = ctypes.pythonapi
_keep = []  # objects whose addresses libdlpx holds: kept for the whole process


def _fn(name):
    return ctypes.cast(getattr(_api, name), ctypes.c_void_p).value


def _immortal(obj):
    """Keeps |obj| alive for the life of the process (libdlpx holds it)."""
    _keep.append(obj)
    incref = _api.Py_IncRef
    incref.argtypes = [ctypes.py_object]
    incref.restype = None
    incref(obj)  # one reference never dropped: survives module teardown
    return ffi.cast("void *", id(obj))


def _finalizing_fn():
    for name in ("Py_IsFinalizing", "_Py_IsFinalizing"):
        try:
            return _fn(name)
        except AttributeError:
            continue
    return None


def register(tensor_factory, dlpack_fallback):
    """Fills libdlpx's dlpx_pyapi table.  |tensor_factory| makes bare
    Tensors; |dlpack_fallback| handles the __dlpack__ calls the C method
    does not."""
    api = ffi.new("dlpx_pyapi *")
    api.size = ffi.sizeof("dlpx_pyapi")
    for field in ("PyGILState_Ensure", "PyGILState_Release", "PyGILState_Check", "PyErr_Fetch",
                  "PyErr_Restore", "PyCapsule_IsValid", "PyCapsule_GetPointer", "Py_IncRef",
                  "Py_DecRef", "PyCapsule_New", "PyCapsule_SetName", "PyErr_SetString",
                  "PyErr_Occurred", "PyObject_GetAttr", "PyObject_SetAttr", "PyLong_FromVoidPtr",
                  "PyObject_CallObject", "PyTuple_Size", "PyTuple_GetItem", "PyLong_AsSsize_t",
                  "PyErr_Clear", "PyUnicode_CompareWithASCIIString", "Py_BuildValue",
                  "PyObject_CallFunctionObjArgs"):
        setattr(api, field, ffi.cast(ffi.typeof(getattr(api, field)), _fn(field)))
    fin = _finalizing_fn()
    if fin is not None:
        api.Py_IsFinalizing = ffi.cast(ffi.typeof(api.Py_IsFinalizing), fin)
    for exc in (BufferError, ValueError, TypeError, MemoryError, IndexError, RuntimeError):
        setattr(api, "exc_" + exc.__name__, _immortal(exc))
    api.name_cap = _immortal(sys.intern("_cap"))
    api.name_addr = _immortal(sys.intern("_addr"))
    api.tensor_factory = _immortal(tensor_factory)
    api.obj_None = ffi.cast("void *", id(None))
    for kw in ("stream", "max_version", "dl_device", "copy"):
        setattr(api, "name_" + kw, _immortal(sys.intern(kw)))
    api.dlpack_fallback = _immortal(dlpack_fallback)
    if lib.dlpx_py_register(api) != 0:
        raise RuntimeError(ffi.string(lib.dlpx_last_error()).decode())
    # From the atexit hook on, deleters never call into Python again: the
    # interpreter may be finalizing (or gone) when the last ones run.
    atexit.register(lib.dlpx_py_shutdown)


_pydll = ctypes.PyDLL(library_path)


def _bind_fn(name, restype, *argtypes):
    f = getattr(_pydll, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_P = ctypes.py_object
consume = _bind_fn("dlpx_py_consume", ctypes.c_int, _P, _P, ctypes.c_uint32)
consume_exchange = _bind_fn("dlpx_py_consume_exchange", ctypes.c_int, _P, ctypes.c_void_p, _P,
                            ctypes.c_uint32)
export = _bind_fn("dlpx_py_export", _P, _P, ctypes.c_int, ctypes.c_uint32)
bind = _bind_fn("dlpx_py_bind", ctypes.c_int, _P, ctypes.c_void_p)

NAME_OWNER = b"dlpx.tensor"

# Capsule helpers through ctypes.pythonapi (they hold the GIL).
capsule_new = _api.PyCapsule_New
capsule_new.restype = ctypes.py_object
capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
capsule_get_pointer = _api.PyCapsule_GetPointer
capsule_get_pointer.restype = ctypes.c_void_p
capsule_get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
capsule_is_valid = _api.PyCapsule_IsValid
capsule_is_valid.restype = ctypes.c_int
capsule_is_valid.argtypes = [ctypes.py_object, ctypes.c_char_p]


_PY_METHOD_DEF_SIZE = 4 * ctypes.sizeof(ctypes.c_void_p)  # name, meth, flags (padded), doc
_new_method = _api.PyDescr_NewMethod
_new_method.restype = ctypes.py_object
_new_method.argtypes = [ctypes.c_void_p, ctypes.c_void_p]


def install_methods(cls):
    """Installs libdlpx's C methods (dlpx_py_method_defs) on |cls|, as
    method descriptors: __dlpack__ and __dlpack_device__ run in C."""
    base = int(ffi.cast("uintptr_t", lib.dlpx_py_method_defs()))
    i = 0
    while ctypes.c_void_p.from_address(base + i * _PY_METHOD_DEF_SIZE).value:
        descr = _new_method(id(cls), base + i * _PY_METHOD_DEF_SIZE)
        setattr(cls, descr.__name__, descr)
        i += 1


def c_name(which):
    """Address of one of libdlpx's static capsule names (see dlpx.h)."""
    return int(ffi.cast("uintptr_t", lib.dlpx_py_capsule_name(which)))


def exchange_api_capsule():
    """A "dlpack_exchange_api" capsule over libdlpx's static table."""
    table = int(ffi.cast("uintptr_t", lib.dlpx_py_exchange_api()))
    return capsule_new(table, c_name(4), None)
