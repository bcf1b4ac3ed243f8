"""DLPack devices.  The device types are DLPack's (the DLDeviceType enum of
dlpack.h, through the cdef); their names and properties are libdlpx's
(dlpx_device_table), read at import."""

from __future__ import annotations

import enum
from typing import Any, NamedTuple, Union

from ._lib import ffi, lib, types

__all__ = ["DLDeviceType", "Device", "as_device", "DeviceLike", "HOST_DEVICE_TYPES"]

#: DLPack device types (kDLCPU = 1, kDLCUDA = 2, ...).
DLDeviceType: Any = enum.IntEnum(  # type: ignore[misc]
    "DLDeviceType", sorted(ffi.typeof("DLDeviceType").relements.items(), key=lambda kv: kv[1]),
    module=__name__)


def _table() -> list[tuple[int, str, int]]:
    n = ffi.new(types.size_t_p)
    entries = lib.dlpx_device_table(n)
    return [(e.device_type, ffi.string(e.name).decode(), e.flags) for e in entries[0:n[0]]]


_TABLE = _table()
_NAMES = {DLDeviceType(t): name for t, name, _ in _TABLE}
_TYPES = {name: DLDeviceType(t) for t, name, _ in _TABLE}

#: Device types whose memory the CPU reads and writes directly.
HOST_DEVICE_TYPES = frozenset(DLDeviceType(t) for t, _, f in _TABLE
                              if f & lib.DLPX_DEVICE_HOST)
_CPU = DLDeviceType(lib.kDLCPU)


class Device(NamedTuple):
    """A DLPack device, e.g. ``Device(kDLCPU, 0)``, shown as ``cpu`` or
    ``cuda:1``; compares equal to that string and to ``(type, id)``."""

    device_type: Any  # a DLDeviceType
    device_id: int

    def __str__(self) -> str:
        name = _NAMES.get(self.device_type, str(int(self.device_type)))
        if self.device_type == _CPU and self.device_id == 0:
            return name
        return f"{name}:{self.device_id}"

    def __repr__(self) -> str:
        return f"Device({self.device_type.name}, {self.device_id})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = as_device(other)
            except ValueError:
                return False
        return tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return tuple.__hash__(self)


DeviceLike = Union[Device, str, "tuple[int, int]"]


def as_device(spec: Any) -> Device:
    """A Device from a Device, a (type, id) tuple, or a string like "cpu",
    "cuda" or "cuda:1"."""
    if isinstance(spec, Device):
        return spec
    if isinstance(spec, str):
        name, _, index = spec.partition(":")
        if name not in _TYPES or (index and not index.isdigit()):
            raise ValueError(f"unknown device {spec!r}")
        return Device(_TYPES[name], int(index) if index else 0)
    if isinstance(spec, tuple) and len(spec) == 2:
        try:
            kind = DLDeviceType(int(spec[0]))
        except ValueError:
            raise ValueError(f"unknown DLPack device type {spec[0]!r}") from None
        try:
            device_id = int(spec[1])
        except (TypeError, ValueError):
            raise ValueError(f"device id {spec[1]!r} is not an integer") from None
        if device_id < 0:
            raise ValueError(f"device id {device_id} is negative")
        return Device(kind, device_id)
    raise TypeError(f"a device is a string like 'cpu' or a (type, id) tuple, not {spec!r}")
