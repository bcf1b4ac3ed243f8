"""One place that turns libdlpx error codes into Python exceptions."""

from ._lib import ffi, lib

__all__ = ["check", "check_dlpack", "raise_for"]

# General API calls: bad arguments are ValueError/TypeError, and so on.
_GENERAL = {
    lib.DLPX_EINVAL: ValueError,
    lib.DLPX_ENOMEM: MemoryError,
    lib.DLPX_EOVERFLOW: ValueError,
    lib.DLPX_EDTYPE: TypeError,
    lib.DLPX_ESHAPE: ValueError,
    lib.DLPX_EINDEX: IndexError,
    lib.DLPX_EDEVICE: ValueError,
    lib.DLPX_EVERSION: BufferError,
    lib.DLPX_EREADONLY: ValueError,
    lib.DLPX_ELAYOUT: ValueError,
    lib.DLPX_EBOUNDS: ValueError,
    lib.DLPX_ENOTSUP: ValueError,
    lib.DLPX_EPYTHON: RuntimeError,
    lib.DLPX_ESTATE: RuntimeError,
}

# DLPack protocol calls: what the data cannot be exchanged as is BufferError.
_DLPACK = dict(_GENERAL)
for _code in (lib.DLPX_EOVERFLOW, lib.DLPX_EDTYPE, lib.DLPX_ESHAPE, lib.DLPX_EDEVICE,
              lib.DLPX_EREADONLY, lib.DLPX_ELAYOUT, lib.DLPX_EBOUNDS, lib.DLPX_ENOTSUP):
    _DLPACK[_code] = BufferError


def _message():
    return ffi.string(lib.dlpx_last_error()).decode("utf-8", "replace")


def raise_for(code, table=_GENERAL):
    """Raises the exception for a negative libdlpx code, with its message."""
    exc = table.get(code, RuntimeError)
    raise exc(_message() or ffi.string(lib.dlpx_strerror(code)).decode())


def check(code):
    """Raises for a failed general API call; returns None on success."""
    if code:
        raise_for(code, _GENERAL)


def check_dlpack(code):
    """Raises for a failed DLPack protocol call (BufferError for data)."""
    if code:
        raise_for(code, _DLPACK)
