"""Every use of the CPython C-API in the dlpx package, through ctypes.

The functions are bound on a private ``ctypes.PyDLL`` handle with private
prototypes: dlpx never sets ``argtypes`` or ``restype`` on the function
objects of the process-wide ``ctypes.pythonapi``, so code elsewhere that
sets different ones cannot break dlpx (nor dlpx break it).  PyDLL calls keep
the GIL and raise the exception a function sets.
"""

from __future__ import annotations

import ctypes
from typing import Any

__all__ = ["address", "capsule_new", "capsule_is_valid", "capsule_get_pointer",
           "keep_forever", "new_method", "is_main_interpreter"]

_py = ctypes.PyDLL(None)  # the interpreter's own symbols, as ctypes.pythonapi
_P = ctypes.py_object
_V = ctypes.c_void_p


def _fn(name: str, restype: Any, *argtypes: Any) -> Any:
    """A private function object for C-API function |name|."""
    return ctypes.PYFUNCTYPE(restype, *argtypes)((name, _py))


def address(name: str) -> int | None:
    """The address of C-API function |name|, or None where this Python has
    none (for dlpx_pyapi)."""
    try:
        return ctypes.cast(getattr(_py, name), _V).value
    except AttributeError:
        return None


capsule_new = _fn("PyCapsule_New", _P, _V, _V, _V)
capsule_is_valid = _fn("PyCapsule_IsValid", ctypes.c_int, _P, ctypes.c_char_p)
capsule_get_pointer = _fn("PyCapsule_GetPointer", _V, _P, ctypes.c_char_p)
_incref = _fn("Py_IncRef", None, _P)
_interp_get = _fn("PyInterpreterState_Get", _V)
_interp_main = _fn("PyInterpreterState_Main", _V)
new_method = _fn("PyDescr_NewMethod", _P, _V, _V)


_kept: list[Any] = []  # objects whose addresses libdlpx holds


def keep_forever(obj: Any) -> int:
    """Keeps |obj| alive for the life of the process (libdlpx holds its
    address) and returns that address: one reference is never dropped, so
    it survives even module teardown at shutdown."""
    _kept.append(obj)
    _incref(obj)
    return id(obj)


def is_main_interpreter() -> bool:
    """True in the main interpreter, False in a sub-interpreter."""
    return bool(_interp_get() == _interp_main())
