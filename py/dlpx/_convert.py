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


def writable_views(framework: str) -> bool:
    """Whether |framework| gets writable views of copy-on-write memory
    (mapped files, shared segments) rather than read-only ones: PyTorch,
    which has no read-only tensors (pytorch#188554)."""
    return _quirks.writable_file_views(framework)


_PACKED_DTYPES: dict[tuple[int, str], Any] = {}


def _packed_dtype(packed: int, framework: str) -> Any:
    """(the |framework| dtype, its bytes) of a dtype packed as code | bits
    << 8 | lanes << 16, or None when typed views of it cannot be sliced
    from bytes (sub-byte kinds, vectors, dtypes the framework lacks)."""
    key = (packed, framework)
    if key in _PACKED_DTYPES:
        return _PACKED_DTYPES[key]
    from ._dtypes import dtype as _dtype
    got: Any = None
    try:
        dt = _dtype._make(packed & 0xFF, packed >> 8 & 0xFF, packed >> 16)
        if not dt.is_subbyte and dt.lanes == 1:
            got = (dt.torch if framework == "torch" else dt.numpy, dt.bits // 8)
    except (TypeError, ValueError, AttributeError, ImportError):
        got = None
    _PACKED_DTYPES[key] = got
    return got


def typed_views_for(framework: str) -> bool:
    """Whether :func:`typed_views` can cut |framework|'s tensors."""
    return framework in ("torch", "numpy")


#: The framework name dlpx.torch's modules load their weights as.
TORCH = "torch"


def typed_views(data: Any, entries: list[tuple[str, int, tuple[int, ...], int, int]],
                framework: str) -> Optional[dict[str, Any]]:
    """Tensors of |framework| (torch or numpy) cut out of |data|, a 1-D
    uint8 dlpx.Tensor over a whole data section: one from_dlpack for the
    section, then typed views (name, dtype, shape, begin, end)
    of it, which costs far less per tensor than one exchange each (dtypes
    packed as code | bits << 8 | lanes << 16).  None
    when some entry cannot be cut so (a dtype the framework lacks, a
    misaligned offset): the caller then exchanges tensor by tensor."""
    plan = typed_plan(entries, framework)
    return None if plan is None else typed_cut(data, plan)


def typed_plan(entries: list[tuple[str, int, tuple[int, ...], int, int]],
               framework: str) -> Optional[tuple[Any, ...]]:
    """What :func:`typed_cut` needs to cut |entries| (as :func:`typed_views`
    takes them) out of a data section, worked out once: it depends on the
    header alone, so a caller may keep it for the next data section of the
    same header.  None when some entry cannot be cut so."""
    names: list[str] = []
    shapes: list[tuple[int, ...]] = []
    offsets: list[int] = []
    kinds: list[Any] = []
    strides: dict[tuple[int, ...], tuple[int, ...]] = {}
    st_of: list[tuple[int, ...]] = []
    packed = _PACKED_DTYPES
    numpy = framework == "numpy"
    for name, st, shape, begin, end in entries:
        key = (st, framework)
        got = packed[key] if key in packed else _packed_dtype(st, framework)
        if got is None or begin % got[1]:
            return None
        names.append(name)
        shapes.append(shape)
        if numpy:
            offsets.append(begin)
            kinds.append(got[0])
        else:
            offsets.append(begin // got[1])
            kinds.append(got)
            s = strides.get(shape)
            if s is None:
                s = strides[shape] = _c_strides(shape)
            st_of.append(s)
    if numpy:
        return ("numpy", names, shapes, kinds, offsets)
    groups = list(dict.fromkeys(kinds))
    index = {g: i for i, g in enumerate(groups)}
    return ("torch", names, groups) + _torch_runs([index[k] for k in kinds], shapes, st_of,
                                                  offsets)


#: Tensors of one dtype and shape at evenly spaced offsets, at least this
#: many, are cut as one view with a leading dimension, unbound (PyTorch
#: makes a view in C++ for half what a Python-level call costs).
_RUN_MIN = 3


def _torch_runs(gi: list[int], shapes: list[tuple[int, ...]], strides: list[tuple[int, ...]],
                offsets: list[int]) -> tuple[Any, ...]:
    """The torch part of :func:`typed_plan`: (the single views: their typed
    base, shape, strides, offset; the runs: (typed base, (count,) + shape,
    (step,) + strides, first offset); which output of those, singles first,
    each tensor in data order is, as an itemgetter)."""
    import operator
    by: dict[tuple[int, tuple[int, ...], tuple[int, ...]], list[int]] = {}
    for i, key in enumerate(zip(gi, shapes, strides)):
        by.setdefault(key, []).append(i)
    single: list[int] = []
    runs: list[tuple[int, tuple[int, ...], tuple[int, ...], int]] = []
    in_runs: list[int] = []
    for (g, shape, st), idx in by.items():
        idx.sort(key=offsets.__getitem__)
        j = 0
        while j < len(idx):
            k = j + 1
            step = offsets[idx[k]] - offsets[idx[j]] if k < len(idx) else 0
            while step > 0 and k < len(idx) and offsets[idx[k]] - offsets[idx[k - 1]] == step:
                k += 1
            if k - j >= _RUN_MIN:
                runs.append((g, (k - j,) + shape, (step,) + st, offsets[idx[j]]))
                in_runs.extend(idx[j:k])
            else:
                k = j + 1
                single.append(idx[j])
            j = k
    perm = [0] * len(gi)
    for pos, i in enumerate(single + in_runs):
        perm[i] = pos
    get = operator.itemgetter(*perm) if len(perm) != 1 else (lambda flat: (flat[0],))
    singles = ([gi[i] for i in single], [shapes[i] for i in single],
               [strides[i] for i in single], [offsets[i] for i in single])
    return (singles, runs, get)


def typed_cut(data: Any, plan: tuple[Any, ...]) -> dict[str, Any]:
    """The tensors of a :func:`typed_plan` cut out of |data| (the data
    section, a 1-D uint8 dlpx.Tensor): one from_dlpack for the section, a
    typed view of it per dtype, and one view per tensor, made in a few
    Python-level calls."""
    from itertools import repeat
    if plan[0] == "torch":
        import torch
        _, names, groups, singles, runs, get = plan
        if not names:
            return {}
        base = torch.from_dlpack(data)  # type: ignore[attr-defined]
        n = base.shape[0]
        typed = [base[:n - n % size].view(tdt) for tdt, size in groups]
        gi, shapes, strides, offsets = singles
        flat = list(map(torch.as_strided, map(typed.__getitem__, gi), shapes, strides, offsets))
        for g, shape, st, off in runs:
            flat.extend(torch.as_strided(typed[g], shape, st, off).unbind(0))
        return dict(zip(names, get(flat)))
    import numpy as np
    _, names, shapes, dtypes, offsets = plan
    nbase: Any = np.from_dlpack(data) if not _quirks.numpy_needs_array_interface() else \
        _quirks.numpy_array(data, np.dtype("uint8"))
    return dict(zip(names, map(np.ndarray, shapes, dtypes, repeat(nbase), offsets)))


def _c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """C-order strides in elements."""
    st = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        st[i] = st[i + 1] * max(shape[i + 1], 1)
    return tuple(st)
