"""libdlpx's error codes as Python exceptions, derived from the one list in
C (DLPX_ERROR_MAP, read through dlpx_error_table): the codes, their names,
and which exception each raises, for general calls and for DLPack protocol
calls (where the array API wants BufferError for data that cannot be
exchanged)."""

from __future__ import annotations

import builtins
import enum
from typing import Any, NoReturn

from ._lib import ffi, lib, types

__all__ = ["ErrorCode", "check", "check_dlpack", "raise_for", "message"]


def _table() -> list[tuple[int, str, str, str, str]]:
    n = ffi.new(types.size_t_p)
    entries = lib.dlpx_error_table(n)
    return [(e.code, ffi.string(e.name).decode(), ffi.string(e.message).decode(),
             ffi.string(e.exception).decode(), ffi.string(e.dlpack_exception).decode())
            for e in entries[0:n[0]]]


_ENTRIES = _table()

#: The codes, named as in C without the ``DLPX_`` prefix: ``ErrorCode.EINVAL``.
ErrorCode: Any = enum.IntEnum(  # type: ignore[misc]
    "ErrorCode", [(name[len("DLPX_"):], code) for code, name, *_ in _ENTRIES],
    module=__name__)

_GENERAL: dict[int, type[Exception]] = {
    code: getattr(builtins, exc) for code, _, _, exc, _ in _ENTRIES}
_DLPACK: dict[int, type[Exception]] = {
    code: getattr(builtins, exc) for code, _, _, _, exc in _ENTRIES}


def message() -> str:
    """The detail message of the last libdlpx failure on this thread."""
    return str(ffi.string(lib.dlpx_last_error()).decode("utf-8", "replace"))


def raise_for(code: int, dlpack: bool = False) -> NoReturn:
    """Raises the exception for a negative libdlpx code, with its message."""
    exc = (_DLPACK if dlpack else _GENERAL).get(code, RuntimeError)
    raise exc(message() or ffi.string(lib.dlpx_strerror(code)).decode())


def check(code: int) -> None:
    """Raises for a failed general API call; returns None on success."""
    if code:
        raise_for(code)


def check_dlpack(code: int) -> None:
    """Raises for a failed DLPack protocol call (BufferError for data)."""
    if code:
        raise_for(code, dlpack=True)
