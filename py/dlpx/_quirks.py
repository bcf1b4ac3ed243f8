"""Every framework quirk dlpx works around, in one place.  Each is named by
the upstream issue that describes it, and tests/python/test_quirks.py has a
test named after that issue for each.

PyTorch
  pytorch#188023  torch.from_dlpack aborted the whole process on negative
                  strides (older releases still do): PyTorch, as consumer,
                  gets a BufferError instead.
  pytorch#188554  PyTorch has no read-only tensors and its importer ignores
                  DLPack's READ_ONLY flag (read-only support exists only for
                  export): read-only data (a bytes object, JAX's immutable
                  buffers) reaches PyTorch as a private copy (copy=None) or
                  not at all (copy=False).
  pytorch#56058   The negative and conjugate bits: torch.Tensor.__dlpack__
                  refuses the conjugate bit but exports a tensor with the
                  negative bit (x.conj().imag) as if the bit were clear, so
                  its values arrive with the wrong sign.  dlpx resolves both
                  bits (a copy) or refuses with copy=False.
  pytorch#150691  PyTorch's exports raise RuntimeError for what the array API
                  calls BufferError (sparse, mkldnn, quantized tensors); the
                  C exchange API of torch.Tensor skips the checks its
                  __dlpack__ makes (gradients, conjugate and negative bits,
                  overrides in subclasses): dlpx takes that lane only for
                  plain host torch.Tensor objects and says BufferError.
  The consumer is recognised by the module of the code that calls
  __dlpack__: torch's own package ("torch" or "torch.*"), never a prefix
  match (torchvision or a user's torchhelpers.py are not PyTorch).

NumPy and ml_dtypes
  numpy#31256     NumPy refuses to export arrays of ml_dtypes types
                  (bfloat16, float8/6/4, complex32) through DLPack: dlpx
                  imports their bytes as unsigned integers of the same width
                  and reads them as that dtype.
  numpy#20742     NumPy before 2.1 (the NumPy of Python 3.9) speaks only
                  legacy DLPack and refuses to export read-only arrays.  Its
                  legacy capsules therefore always hold writable arrays:
                  dlpx imports them writable.  Read-only arrays come in
                  through the buffer protocol instead (zero copy, read-only),
                  and read-only dlpx tensors reach such a NumPy through the
                  array interface from Tensor.numpy(); its from_dlpack also
                  has no copy= keyword.
  numpy#28599     NumPy before 2.2.5 marks every array it imports through
                  DLPack read-only: Tensor.numpy() hands such a NumPy the
                  array interface instead, which keeps the writability.

JAX
  jax#17784       JAX before CPU layout support (0.6 still) aliases data whose
                  layout is not row-major but indexes it as if it were: its
                  values come out wrong.  Tensor.jax() copies such layouts
                  for a JAX that does so (found by trying it once).
  jax#29810       JAX's CPU backend aliases only data aligned to 64 bytes and
                  silently copies the rest; it also speaks only legacy
                  (unversioned) DLPack, so data read-only on purpose cannot
                  reach it without a copy (data that came from a legacy
                  capsule, JAX's own included, goes back zero-copy).
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any, Callable, Optional

from . import _capi
from ._lib import lib

__all__ = ["torch_is_caller", "TORCH_NEGATIVE_STRIDES", "TORCH_READONLY", "exchange_lane",
           "is_torch_type", "is_torch_tensor", "torch_prepare", "ml_dtypes_raw", "numpy_speaks_versioned",
           "numpy_imports_writable", "numpy_needs_array_interface", "legacy_capsule_writable",
           "numpy_readonly_buffer", "numpy_array",
           "JAX_ALIGNMENT", "JAX_READONLY", "jax_honours_strides", "jax_copied"]

# ---- PyTorch as consumer -------------------------------------------------------

TORCH_NEGATIVE_STRIDES = ("PyTorch aborts the process on negative strides (pytorch#188023): "
                          "export a copy (torch.from_dlpack(t, copy=True) or t.contiguous())")
TORCH_READONLY = ("PyTorch has no read-only tensors and ignores DLPack's READ_ONLY flag "
                  "(pytorch#188554)")


def _is_torch_module(name: str) -> bool:
    return name == "torch" or name.startswith("torch.")


def torch_is_caller(frame: Optional[FrameType]) -> bool:
    """True when |frame| (the code that called __dlpack__) belongs to
    PyTorch's own package."""
    if frame is None or "torch" not in sys.modules:
        return False
    return _is_torch_module(frame.f_globals.get("__name__") or "")


# ---- PyTorch as producer -------------------------------------------------------


def _torch_plain(x: Any) -> bool:
    """The exchange lane skips what torch.Tensor.__dlpack__ checks and never
    synchronizes streams: plain host tensors only."""
    return bool(x.is_cpu and not (x.requires_grad or x.is_conj() or x.is_neg()))


def _host_producer(x: Any) -> bool:
    """Other producers: the exchange lane does no stream synchronization,
    so use it for host data only."""
    return bool(x.__dlpack_device__()[0] == lib.kDLCPU)


def exchange_lane(kind: type) -> tuple[int, Callable[[Any], bool]] | None:
    """(table address, guard) when instances of |kind| may be imported
    through its DLPack C exchange API, else None.  Only the class that
    defines the table itself takes the lane: a subclass may override
    __dlpack__ (or __torch_function__), which the table would bypass."""
    cap = kind.__dict__.get("__dlpack_c_exchange_api__")
    if cap is None:
        return None
    try:
        if not _capi.capsule_is_valid(cap, b"dlpack_exchange_api"):
            return None
        addr = _capi.capsule_get_pointer(cap, b"dlpack_exchange_api") or 0
    except (TypeError, ValueError):  # not a capsule
        return None
    if not addr:
        return None
    torch = sys.modules.get("torch")
    guard = _torch_plain if torch is not None and kind is torch.Tensor else _host_producer
    return addr, guard


def is_torch_type(kind: type) -> bool:
    """True for torch.Tensor and its subclasses (PyTorch loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and issubclass(kind, torch.Tensor)


def is_torch_tensor(x: Any) -> bool:
    """True for torch.Tensor objects (PyTorch loaded, any subclass)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def torch_prepare(x: Any, copy: Optional[bool]) -> Any:
    """|x| ready for torch.Tensor.__dlpack__: a tensor with the negative or
    conjugate bit set resolved into a copy (pytorch#56058), or BufferError
    when copy=False forbids that.  Other objects pass unchanged."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(x, torch.Tensor):
        return x
    if type(x).__dlpack__ is not torch.Tensor.__dlpack__:
        return x  # the subclass's own __dlpack__ decides
    if x.layout is not torch.strided:
        return x  # torch raises BufferError itself
    bits = [name for name, on in (("negative", x.is_neg()), ("conjugate", x.is_conj())) if on]
    if not bits:
        return x
    if copy is False:
        raise BufferError(f"this PyTorch tensor has its {' and '.join(bits)} bit set: its "
                          "memory does not hold its values, so it cannot be shared without a "
                          "copy (pass copy=None or copy=True, or call x.resolve_neg() / "
                          "x.resolve_conj())")
    if x.requires_grad:
        return x  # torch refuses it (BufferError) before looking at the bits
    return x.resolve_conj().resolve_neg()


# ---- NumPy with ml_dtypes ------------------------------------------------------

_RAW = {1: "uint8", 2: "uint16", 4: "uint32", 8: "uint64"}


def ml_dtypes_raw(x: Any) -> tuple[Any, str] | None:
    """(|x| viewed as unsigned integers, the ml_dtypes dtype name) for a
    NumPy array of an ml_dtypes type, which NumPy refuses to export
    (numpy#31256); None for anything else."""
    np = sys.modules.get("numpy")
    if np is None or not isinstance(x, np.ndarray):
        return None
    if not (x.dtype.type.__module__ or "").startswith("ml_dtypes"):
        return None
    raw = _RAW.get(x.dtype.itemsize)
    if raw is None:
        return None
    return x.view(raw), x.dtype.name


_numpy_versioned: list[bool] = []


def numpy_speaks_versioned() -> bool:
    """True when the loaded NumPy exports (and imports) versioned DLPack
    capsules, i.e. NumPy >= 2.1 (numpy#20742)."""
    if not _numpy_versioned:
        np = sys.modules.get("numpy")
        if np is None:
            return True  # nothing to work around
        try:
            np.empty(0).__dlpack__(max_version=(1, 0))
            _numpy_versioned.append(True)
        except TypeError:
            _numpy_versioned.append(False)
    return _numpy_versioned[0]


_numpy_writable: list[bool] = []


def numpy_imports_writable() -> bool:
    """True when np.from_dlpack of writable data gives a writable array
    (NumPy >= 2.2.5; numpy#28599)."""
    if not _numpy_writable:
        np = sys.modules.get("numpy")
        if np is None:
            return True
        a = np.zeros(1)
        # versioned where NumPy has it: NumPy >= 2.3 imports every legacy
        # capsule read-only on purpose (numpy#28600)
        cap = a.__dlpack__(max_version=(1, 0)) if numpy_speaks_versioned() else a.__dlpack__()
        _numpy_writable.append(bool(np.from_dlpack(_Capsule(cap, a)).flags.writeable))
    return _numpy_writable[0]


class _Capsule:
    """Hands NumPy's from_dlpack a capsule it already has."""

    def __init__(self, cap: Any, src: Any) -> None:
        self.cap, self.src = cap, src

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self.cap

    def __dlpack_device__(self) -> Any:
        return self.src.__dlpack_device__()


def numpy_needs_array_interface() -> bool:
    """True when Tensor.numpy() must use the array interface: a NumPy that
    speaks only legacy DLPack (it could not take read-only data) or that
    marks every DLPack import read-only (numpy#20742, numpy#28599)."""
    return not (numpy_speaks_versioned() and numpy_imports_writable())


def legacy_capsule_writable(x: Any) -> bool:
    """True when |x|'s legacy capsule is known to hold writable data: a
    NumPy array of a NumPy that refuses read-only exports (numpy#20742)."""
    np = sys.modules.get("numpy")
    return (np is not None and type(x) is np.ndarray and bool(x.flags.writeable)
            and not numpy_speaks_versioned())


def numpy_readonly_buffer(x: Any) -> Any:
    """A memoryview of a read-only NumPy array that a legacy-only NumPy
    would not export (numpy#20742), or None."""
    np = sys.modules.get("numpy")
    if np is None or not isinstance(x, np.ndarray) or x.flags.writeable:
        return None
    if numpy_speaks_versioned():
        return None
    try:
        return memoryview(x)
    except (TypeError, ValueError, BufferError):  # a dtype with no buffer format
        return None


class _ArrayInterface:
    """Hands NumPy a view of a tensor through the array interface (which can
    say read-only, unlike legacy DLPack), keeping the tensor alive as the
    array's base."""

    def __init__(self, t: Any, typestr: str) -> None:
        self.t = t
        self.__array_interface__ = {
            "version": 3, "shape": t.shape, "typestr": typestr,
            "data": (t.data_ptr, t.readonly), "strides": t.byte_strides}


def numpy_array(t: Any, raw_dtype: Any) -> Any:
    """A NumPy array over |t| (elements read as |raw_dtype|), read-only
    exactly when |t| is, through the array interface (numpy#20742,
    numpy#28599)."""
    import numpy as np

    if not t.size:  # nothing to alias
        a = np.empty(t.shape, raw_dtype)
        a.flags.writeable = not t.readonly
        return a
    return np.asarray(_ArrayInterface(t, np.dtype(raw_dtype).str))


# ---- JAX ----------------------------------------------------------------------

#: JAX's CPU backend aliases only data aligned to this many bytes (jax#29810).
JAX_ALIGNMENT = 64
JAX_READONLY = "JAX asks for legacy DLPack capsules, which cannot carry read-only data"


_jax_strides: list[bool] = []


def jax_honours_strides() -> bool:
    """True when jax.dlpack.from_dlpack reads a transposed buffer right
    (jax#17784), tried once on a small aligned array."""
    if not _jax_strides:
        import jax
        import numpy as np

        base = np.zeros(64 + 24, np.uint8)
        off = (-base.ctypes.data) % JAX_ALIGNMENT
        a = np.frombuffer(base[off:off + 24], np.float32).reshape(2, 3)
        a[...] = np.arange(6, dtype=np.float32).reshape(2, 3)
        j = jax.dlpack.from_dlpack(a.T)
        _jax_strides.append(bool(np.array_equal(np.asarray(j[1]), a.T[1])))
    return _jax_strides[0]


def jax_copied(out: Any, src_ptr: int) -> bool:
    """True when JAX copied the data instead of aliasing it (jax#29810)."""
    return bool(out.unsafe_buffer_pointer() != src_ptr)


# Readability for callers: the flags the quirks look at.
READONLY_ON_PURPOSE = lib.DLPX_TENSOR_READONLY
LEGACY_READONLY = lib.DLPX_TENSOR_LEGACY_READONLY


def readonly_on_purpose(flags: int) -> bool:
    """Read-only because someone said so, not because a legacy capsule could
    not say otherwise."""
    return bool(flags & READONLY_ON_PURPOSE) and not flags & LEGACY_READONLY


def writable_file_views(framework: str) -> bool:
    """pytorch#188554: PyTorch has no read-only tensors, so mmap loads for
    it map the file copy-on-write (writable views whose writes stay in the
    process) instead of read-only, which PyTorch would only take as a
    copy."""
    return framework == "torch"
