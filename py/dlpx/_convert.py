"""Tensor -> NumPy / PyTorch / JAX, through each library's from_dlpack,
copying only when that library cannot take the data as it is."""

from ._lib import lib

__all__ = ["to_numpy", "to_torch", "to_jax"]

_NUMPY_CODES = {int(lib.kDLBool), int(lib.kDLInt), int(lib.kDLUInt), int(lib.kDLFloat),
                int(lib.kDLComplex)}


def _check_copy(copy):
    if copy is not None and not isinstance(copy, bool):
        raise TypeError(f"copy must be True, False or None, not {copy!r}")


def _needs(t, copy, reason):
    """Applies copy semantics when the target cannot take |t| as it is."""
    if reason is None:
        return t.copy() if copy else t
    if copy is False:
        raise BufferError(f"{reason}; pass copy=None or copy=True")
    return t.copy()


def to_numpy(t, copy):
    import numpy as np

    _check_copy(copy)
    dt = t.dtype
    if dt.lanes != 1:
        raise BufferError(f"NumPy has no dtype for {dt.name}")
    if dt.code in _NUMPY_CODES and not (dt.code == lib.kDLComplex and dt.bits == 32):
        return np.from_dlpack(t, copy=True) if copy else np.from_dlpack(t)
    try:
        npdt = dt.numpy  # an ml_dtypes dtype
    except TypeError as exc:
        raise BufferError(f"NumPy cannot hold {dt.name}: {exc}") from None
    padded = bool(t._m()[4] & lib.DLPX_TENSOR_SUBBYTE_PADDED)
    if dt.is_subbyte and not padded:
        # NumPy (ml_dtypes) stores float4/float6 one element per byte.
        if copy is False:
            raise BufferError(f"NumPy stores {dt.name} one element per byte; this packed "
                              "tensor needs a copy (copy=None or copy=True)")
        t = t._padded_copy()
        padded = True
    elif copy:
        t = t.copy()
    raw = t.view({8: "uint8", 16: "uint16", 32: "uint32"}[8 if padded else dt.bits])
    return np.from_dlpack(raw).view(npdt)


def to_torch(t, copy):
    import torch

    _check_copy(copy)
    m = t._m()
    reason = None
    if m[4] & lib.DLPX_TENSOR_READONLY:
        reason = "PyTorch has no read-only tensors (it ignores DLPack's READ_ONLY flag)"
    elif m[5]:
        reason = "PyTorch aborts on negative strides (pytorch#188023)"
    return torch.from_dlpack(_needs(t, copy, reason))


def to_jax(t, copy):
    import jax

    _check_copy(copy)
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
    if m[4] & lib.DLPX_TENSOR_READONLY:
        reason = "JAX asks for legacy DLPack capsules, which cannot carry read-only data"
        src = _needs(t, copy, reason)
    elif copy:
        src = t.copy()
    try:
        out = jax.dlpack.from_dlpack(src)
    except Exception as exc:  # JAX refuses layouts it cannot describe (negative strides...)
        if copy is False or src is not t:
            raise BufferError(f"JAX cannot take this layout without a copy: {exc}") from exc
        src = t.copy()
        out = jax.dlpack.from_dlpack(src)
    if copy is False and out.unsafe_buffer_pointer() != src.data_ptr:
        # JAX copies what its CPU backend cannot alias (e.g. data not aligned
        # to 64 bytes; dlpx's own allocations are).
        raise BufferError("JAX copied the data (it aliases only suitably aligned buffers); "
                          "pass copy=None or copy=True")
    return out
