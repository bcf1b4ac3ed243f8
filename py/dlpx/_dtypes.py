"""dlpx data types: every DLPack type, comparable with names and with NumPy,
ml_dtypes and PyTorch dtypes."""

import enum
from typing import NamedTuple

from ._lib import ffi, lib

__all__ = ["dtype", "DLDeviceType", "Device", "as_dtype", "as_device", "ALL_DTYPES"]


class dtype:
    """A DLPack element type (code, bits, lanes).

    ``dlpx.dtype("float32")``, ``dlpx.dtype(numpy.float32)``,
    ``dlpx.dtype(torch.bfloat16)`` and ``dlpx.float32`` all give the same
    object, which compares equal to its name (``dlpx.float32 == "float32"``).
    """

    __slots__ = ("name", "code", "bits", "lanes")
    _by_key = {}
    _by_name = {}

    def __new__(cls, spec):
        if isinstance(spec, dtype):
            return spec
        found = _lookup(spec)
        if found is None:
            raise TypeError(f"data type {spec!r} is not understood by dlpx")
        return found

    @classmethod
    def _make(cls, code, bits, lanes):
        key = (code, bits, lanes)
        got = cls._by_key.get(key)
        if got is not None:
            return got
        dt = ffi.new("DLDataType *", {"code": code, "bits": bits, "lanes": lanes})
        buf = ffi.new("char[]", lib.DLPX_DTYPE_NAME_MAX)
        if lib.dlpx_dtype_format(dt[0], buf, lib.DLPX_DTYPE_NAME_MAX) != 0:
            raise TypeError(ffi.string(lib.dlpx_last_error()).decode())
        self = object.__new__(cls)
        object.__setattr__(self, "name", ffi.string(buf).decode())
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "bits", bits)
        object.__setattr__(self, "lanes", lanes)
        cls._by_key[key] = self
        cls._by_name[self.name] = self
        return self

    def __setattr__(self, name, value):
        raise AttributeError("dlpx.dtype is immutable")

    def __reduce__(self):
        return (dtype, (self.name,))

    @property
    def itemsize(self):
        """Bytes per element: an int, or a fraction (0.5, 0.75) for packed
        sub-byte types."""
        bits = self.bits * self.lanes
        return bits // 8 if bits % 8 == 0 else bits / 8

    @property
    def is_subbyte(self):
        return self.bits * self.lanes < 8

    def __eq__(self, other):
        if isinstance(other, dtype):
            return self is other
        try:
            return self is _lookup(other)
        except Exception:  # a foreign object we cannot interpret
            return NotImplemented

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self):
        return hash(self.name)

    def __repr__(self):
        return f"dlpx.{self.name}" if self.lanes == 1 else f"dlpx.dtype({self.name!r})"

    def __str__(self):
        return self.name

    @property
    def numpy(self):
        """The NumPy dtype (ml_dtypes for bfloat16 and the float8/6/4 types;
        packed float4/float6 have none, their NumPy form is one byte each)."""
        import numpy as np

        if self.lanes != 1:
            raise TypeError(f"NumPy has no dtype for {self.name}")
        if self.code in _NUMPY_NATIVE:
            return np.dtype(self.name)
        try:
            import ml_dtypes
        except ImportError:
            raise TypeError(f"NumPy needs the ml_dtypes package for {self.name}") from None
        t = getattr(ml_dtypes, self.name, None)
        if t is None:
            raise TypeError(f"ml_dtypes {ml_dtypes.__version__} has no {self.name}")
        return np.dtype(t)

    @property
    def dtype(self):
        """The NumPy dtype, so NumPy and JAX accept dlpx dtypes
        (``np.zeros(3, dtype=dlpx.bfloat16)``)."""
        return self.numpy

    @property
    def torch(self):
        """The torch.dtype."""
        import torch

        t = getattr(torch, self.name, None) if self.lanes == 1 else None
        if not isinstance(t, torch.dtype):
            raise TypeError(f"PyTorch has no dtype {self.name}")
        return t


_NUMPY_NATIVE = {int(lib.kDLBool), int(lib.kDLInt), int(lib.kDLUInt), int(lib.kDLFloat),
                 int(lib.kDLComplex)}


def _parse_name(name):
    got = dtype._by_name.get(name)
    if got is not None:
        return got
    out = ffi.new("DLDataType *")
    if lib.dlpx_dtype_parse(name.encode("utf-8", "replace"), out) != 0:
        return None
    return dtype._make(out.code, out.bits, out.lanes)


def _lookup(spec):
    """The dlpx dtype for a name, a NumPy dtype or scalar type, or a
    torch.dtype; None if it is none of these."""
    if isinstance(spec, str):
        return _parse_name(spec)
    mod = type(spec).__module__ or ""
    if mod.startswith("torch"):  # torch.dtype: "torch.float32"
        text = str(spec)
        return _parse_name(text[6:]) if text.startswith("torch.") else None
    try:
        import numpy as np
    except ImportError:
        return None
    try:
        nd = np.dtype(spec)
    except TypeError:
        return None
    if nd.byteorder not in "=|" and nd.byteorder != ("<" if np.little_endian else ">"):
        raise TypeError(f"non-native byte order {nd} cannot be described by DLPack")
    if nd.kind == "c" and nd.itemsize == 4:  # numpy has no complex32 but be exact
        return None
    return _parse_name(nd.name)


def as_dtype(spec):
    """dtype(spec), with a TypeError that says what was given."""
    return dtype(spec)


ALL_DTYPES = tuple(
    dtype(n) for n in (
        "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "float16", "float32", "float64", "bfloat16", "complex32", "complex64", "complex128",
        "float8_e3m4", "float8_e4m3", "float8_e4m3b11fnuz", "float8_e4m3fn", "float8_e4m3fnuz",
        "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu", "float6_e2m3fn", "float6_e3m2fn",
        "float4_e2m1fn"))


class DLDeviceType(enum.IntEnum):
    """DLPack device types."""

    kDLCPU = 1
    kDLCUDA = 2
    kDLCUDAHost = 3
    kDLOpenCL = 4
    kDLVulkan = 7
    kDLMetal = 8
    kDLVPI = 9
    kDLROCM = 10
    kDLROCMHost = 11
    kDLExtDev = 12
    kDLCUDAManaged = 13
    kDLOneAPI = 14
    kDLWebGPU = 15
    kDLHexagon = 16
    kDLMAIA = 17
    kDLTrn = 18


_DEVICE_NAMES = {
    DLDeviceType.kDLCPU: "cpu", DLDeviceType.kDLCUDA: "cuda",
    DLDeviceType.kDLCUDAHost: "cuda_host", DLDeviceType.kDLOpenCL: "opencl",
    DLDeviceType.kDLVulkan: "vulkan", DLDeviceType.kDLMetal: "metal", DLDeviceType.kDLVPI: "vpi",
    DLDeviceType.kDLROCM: "rocm", DLDeviceType.kDLROCMHost: "rocm_host",
    DLDeviceType.kDLExtDev: "ext_dev", DLDeviceType.kDLCUDAManaged: "cuda_managed",
    DLDeviceType.kDLOneAPI: "oneapi", DLDeviceType.kDLWebGPU: "webgpu",
    DLDeviceType.kDLHexagon: "hexagon", DLDeviceType.kDLMAIA: "maia", DLDeviceType.kDLTrn: "trn",
}
_DEVICE_TYPES = {v: k for k, v in _DEVICE_NAMES.items()}


class Device(NamedTuple):
    """A DLPack device, e.g. ``Device(kDLCPU, 0)``, shown as ``cpu`` or
    ``cuda:1``; compares equal to that string and to ``(type, id)``."""

    device_type: DLDeviceType
    device_id: int

    def __str__(self):
        name = _DEVICE_NAMES[self.device_type]
        return name if self.device_type == DLDeviceType.kDLCPU else f"{name}:{self.device_id}"

    def __repr__(self):
        return f"Device({self.device_type.name}, {self.device_id})"

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = as_device(other)
            except ValueError:
                return False
        return tuple.__eq__(self, other)

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = tuple.__hash__


def as_device(spec):
    """A Device from a Device, a (type, id) tuple, or a string like "cpu",
    "cuda" or "cuda:1"."""
    if isinstance(spec, Device):
        return spec
    if isinstance(spec, str):
        name, _, index = spec.partition(":")
        if name not in _DEVICE_TYPES or (index and not index.isdigit()):
            raise ValueError(f"unknown device {spec!r}")
        return Device(_DEVICE_TYPES[name], int(index) if index else 0)
    if isinstance(spec, tuple) and len(spec) == 2:
        try:
            kind = DLDeviceType(int(spec[0]))
        except ValueError:
            raise ValueError(f"unknown DLPack device type {spec[0]!r}") from None
        return Device(kind, int(spec[1]))
    raise TypeError(f"a device is a string like 'cpu' or a (type, id) tuple, not {spec!r}")
