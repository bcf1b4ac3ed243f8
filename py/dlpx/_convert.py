"""Tensor -> NumPy / PyTorch / JAX, through each library's from_dlpack,
copying only when that library cannot take the data as it is (the reasons
are framework quirks, see dlpx._quirks)."""

from __future__ import annotations

from typing import Any, Optional

from . import _quirks
from ._args import copy_arg
from ._dtypes import NUMPY_NATIVE_CODES
from ._lib import lib

__all__ = ["to_numpy", "to_torch", "to_jax", "FRAMEWORKS", "framework_arg", "to_framework",
           "exportable", "is_readonly_numpy"]

_PADDED = lib.DLPX_TENSOR_SUBBYTE_PADDED


def _needs(t: Any, copy: Optional[bool], reason: Optional[str]) -> Any:
    """Applies copy semantics when the target cannot take |t| as it is."""
    if reason is None:
        return t.copy() if copy else t
    if copy is False:
        raise BufferError(f"{reason}; pass copy=None or copy=True")
    return t.copy()


def _from_dlpack(t: Any, raw: Any) -> Any:
    """np.from_dlpack(t), elements read as NumPy dtype |raw|, read-only
    exactly when |t| is, also on NumPy releases that cannot say that through
    DLPack (numpy#20742, numpy#28599)."""
    import numpy as np

    if _quirks.numpy_needs_array_interface():
        return _quirks.numpy_array(t, raw)
    return np.from_dlpack(t)


def to_numpy(t: Any, copy: Optional[bool]) -> Any:
    import numpy as np

    copy_arg(copy)
    dt = t.dtype
    if dt.lanes != 1:
        raise BufferError(f"NumPy has no dtype for {dt.name}")
    if dt.code in NUMPY_NATIVE_CODES and not (dt.code == lib.kDLComplex and dt.bits == 32):
        return _from_dlpack(t.copy() if copy else t, dt.numpy)
    try:
        npdt = dt.numpy  # an ml_dtypes dtype
    except TypeError as exc:
        raise BufferError(f"NumPy cannot hold {dt.name}: {exc}") from None
    padded = bool(t._m()[4] & _PADDED)
    if dt.is_subbyte and not padded:
        # NumPy (ml_dtypes) stores float4/float6 one element per byte.
        if copy is False:
            raise BufferError(f"NumPy stores {dt.name} one element per byte; this packed "
                              "tensor needs a copy (copy=None or copy=True)")
        t = t._padded_copy()
        padded = True
    elif copy:
        t = t.copy()
    # NumPy will not take ml_dtypes types through DLPack (numpy#31256):
    # their bits go as unsigned integers and are viewed back.
    raw_name = {8: "uint8", 16: "uint16", 32: "uint32"}[8 if padded else dt.bits]
    return _from_dlpack(t.view(raw_name), np.dtype(raw_name)).view(npdt)


def to_torch(t: Any, copy: Optional[bool]) -> Any:
    import torch

    copy_arg(copy)
    m = t._m()
    reason = None
    if m[4] & lib.DLPX_TENSOR_READONLY:  # for any reason: PyTorch would write it
        reason = _quirks.TORCH_READONLY
    elif m[5]:
        reason = _quirks.TORCH_NEGATIVE_STRIDES
    return torch.from_dlpack(_needs(t, copy, reason))  # type: ignore[attr-defined]


def to_jax(t: Any, copy: Optional[bool]) -> Any:
    import jax

    copy_arg(copy)
    m = t._m()
    if m[2].is_subbyte:
        # JAX has float4/float6 arrays but takes none through DLPack: go
        # through NumPy (ml_dtypes, one element per byte).
        if copy is False:
            raise BufferError(f"JAX cannot import {m[2].name} through DLPack; "
                              "pass copy=None or copy=True")
        import jax.numpy as jnp
        return jnp.asarray(t.numpy(copy=True))
    src = t
    if _quirks.readonly_on_purpose(m[4]):
        src = _needs(t, copy, _quirks.JAX_READONLY)
    elif not t.is_contiguous() and not _quirks.jax_honours_strides():
        src = _needs(t, copy, "this JAX indexes layouts that are not row-major wrongly "
                              "(jax#17784)")
    elif copy:
        src = t.copy()
    try:
        out = jax.dlpack.from_dlpack(src)
    except Exception as exc:  # JAX refuses layouts it cannot describe (negative strides...)
        if copy is False or src is not t:
            raise BufferError(f"JAX cannot take this layout without a copy: {exc}") from exc
        src = t.copy()
        out = jax.dlpack.from_dlpack(src)
    if copy is False and _quirks.jax_copied(out, src.data_ptr):
        raise BufferError(f"JAX copied the data (its CPU backend aliases only data aligned to "
                          f"{_quirks.JAX_ALIGNMENT} bytes, jax#29810); pass copy=None or "
                          "copy=True")
    return out


#: framework names (as safetensors spells them too) -> the library
FRAMEWORKS = {"dlpx": "dlpx", "numpy": "numpy", "np": "numpy", "torch": "torch",
              "pt": "torch", "pytorch": "torch", "jax": "jax", "flax": "jax"}


def framework_arg(framework: Any) -> str:
    """The library a framework= argument names."""
    if not isinstance(framework, str):
        raise TypeError(f"framework must be a string, not {type(framework).__name__}")
    got = FRAMEWORKS.get(framework.lower())
    if got is None:
        raise ValueError(f"unknown framework {framework!r}: expected one of "
                         f"{', '.join(sorted(FRAMEWORKS))}")
    return got


def to_framework(t: Any, framework: str) -> Any:
    """|t| as a tensor of |framework| (a FRAMEWORKS value), through DLPack
    without a copy where that library takes the view as it is."""
    if framework == "dlpx":
        return t
    if framework == "numpy":
        return to_numpy(t, None)
    if framework == "torch":
        return to_torch(t, None)
    return to_jax(t, None)


def exportable(t: Any) -> Any:
    """|t| ready for its own __dlpack__: PyTorch refuses to export tensors
    that require grad, so those are detached (the same memory)."""
    if type(t).__module__.startswith("torch") and getattr(t, "requires_grad", False):
        return t.detach()
    return t


def is_readonly_numpy(t: Any) -> bool:
    """Whether |t| is a NumPy array that must not be written."""
    return type(t).__module__.startswith("numpy") and not getattr(t, "flags").writeable
