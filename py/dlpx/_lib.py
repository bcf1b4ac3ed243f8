"""Finds and opens libdlpx with cffi (ABI mode), and checks its version.

Search order:
  1. ``$DLPX_LIBRARY`` (a path).  When set it is the only place tried, so a
     wrong value is reported rather than silently replaced by another copy.
  2. The copy shipped inside this package (``dlpx/libdlpx.so``).
  3. The system linker path, by soname (``libdlpx.so.0``), e.g. after
     ``make install``.
"""

import os

import cffi

__all__ = ["ffi", "lib", "library_path", "LIBRARY_VERSION"]

# The library version this Python layer was written for: major and minor
# must match (patch releases of the .so are compatible).
_EXPECTED = (0, 1)
_SONAME = "libdlpx.so.0"

ffi = cffi.FFI()
with open(os.path.join(os.path.dirname(__file__), "_cdef.h"), encoding="utf-8") as _f:
    ffi.cdef(_f.read())


def _candidates():
    env = os.environ.get("DLPX_LIBRARY")
    if env:
        return [("$DLPX_LIBRARY", env)]
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libdlpx.so")
    return [("the dlpx package", here), ("the system linker path", _SONAME)]


def _open():
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
if LIBRARY_VERSION[:2] != _EXPECTED:
    raise ImportError(
        f"libdlpx {'.'.join(map(str, LIBRARY_VERSION))} was loaded from {library_path}, "
        f"but this dlpx Python package needs {_EXPECTED[0]}.{_EXPECTED[1]}.x"
    )
