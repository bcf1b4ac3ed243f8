"""Finds and opens libdlpx with cffi (ABI mode), and checks its version.

Search order:
  1. ``$DLPX_LIBRARY`` (a path).  When set it is the only place tried, so a
     wrong value is reported rather than silently replaced by another copy.
  2. The copy shipped inside this package (``dlpx/libdlpx.so.<major>``, its
     soname).
  3. The system linker path, by soname (``libdlpx.so.<major>``), e.g. after
     ``make install``.

cffi parses a declaration the first time it is used, under a lock that a
signal handler or gc callback running dlpx code in the middle of that parse
would wait on forever.  So everything dlpx needs from cffi is parsed here,
at import: every function and constant of ``lib`` is resolved, and the
types the package uses are parsed once into :data:`types`.  No dlpx call
parses anything later.
"""

from __future__ import annotations

import os
import types as _pytypes
from typing import Any

import cffi

from . import _version

__all__ = ["ffi", "lib", "library_path", "LIBRARY_VERSION", "__version__", "types",
           "include_dir"]

# The cdef, one file per public header, in an order where each file only
# uses types declared before it.
DECLARATIONS = ("dlpack.h", "core.h", "errors.h", "dtype.h", "device.h", "storage.h",
                "tensor.h", "exchange.h", "files.h", "shm.h", "remote.h", "cuda.h",
                "python.h", "stats.h")

_HERE = os.path.dirname(os.path.abspath(__file__))

ffi = cffi.FFI()
for _name in DECLARATIONS:
    with open(os.path.join(_HERE, "decl", _name), encoding="utf-8") as _f:
        ffi.cdef(_f.read())


def _candidates() -> list[tuple[str, str]]:
    env = os.environ.get("DLPX_LIBRARY")
    if env:
        return [("$DLPX_LIBRARY", env)]
    here = os.path.join(_HERE, _version.SONAME)
    return [("the dlpx package", here), ("the system linker path", _version.SONAME)]


def _open() -> tuple[Any, str]:
    tried = []
    for where, name in _candidates():
        if os.sep in name and not os.path.exists(name):
            tried.append(f"  {where}: {name}: no such file")
            continue
        try:
            return ffi.dlopen(name), name
        except OSError as exc:
            tried.append(f"  {where}: {name}: {exc}")
    raise OSError(
        "dlpx cannot load libdlpx; tried, in order:\n"
        + "\n".join(tried)
        + "\nInstall the package with pip (it ships the library), run `make install`, "
        "or set DLPX_LIBRARY to the path of libdlpx.so."
    )


lib, library_path = _open()

_number = lib.dlpx_version_number()
LIBRARY_VERSION = (_number // 10000, _number // 100 % 100, _number % 100)
if _version.VERSION is not None and LIBRARY_VERSION[:2] != _version.VERSION[:2]:
    raise ImportError(
        f"libdlpx {'.'.join(map(str, LIBRARY_VERSION))} was loaded from {library_path}, "
        f"but this dlpx Python package is {_version.__version__} and needs "
        f"{_version.VERSION[0]}.{_version.VERSION[1]}.x"
    )
__version__: str = _version.__version__ or ffi.string(lib.dlpx_version_string()).decode()

# Resolve every function and constant now (each first access of a lib
# attribute takes cffi's lock).
for _name in dir(lib):
    getattr(lib, _name)

# Every C type the package uses, parsed once (see the module docstring).
types = _pytypes.SimpleNamespace(
    **{key: ffi.typeof(decl) for key, decl in {
        "char_array": "char[]",
        "size_t_p": "size_t *",
        "uintptr_t": "uintptr_t",
        "dtype_p": "DLDataType *",
        "stats_p": "dlpx_stats *",
        "pyapi_p": "dlpx_pyapi *",
        "void_p": "void *",
        "uint64_t_p": "uint64_t *",
        "remote_options_p": "dlpx_remote_options *",
        "progress_fn": "dlpx_progress_fn",
        "list_fn": "dlpx_list_fn",
        "tensor_p": "dlpx_tensor *",
        "device_p": "DLDevice *",
        "int64_array": "int64_t[]",
        "tensor_pp": "dlpx_tensor **",
        "int_p": "int *",
        "float_p": "float *",
        "uintptr_t_p": "uintptr_t *",
        "pool_stats_p": "dlpx_cuda_pool_stats *",
    }.items()})


def include_dir() -> str:
    """The directory with dlpx's C headers (``#include <dlpx/dlpx.h>``), for
    C extensions built against the libdlpx shipped in this package."""
    return os.path.join(_HERE, "include")
