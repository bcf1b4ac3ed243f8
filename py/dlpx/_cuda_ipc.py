"""CUDA tensors shared with other processes (dlpx.cuda.ipc_export): the
producer's export keeps the memory alive while any process has it open;
the handle is a small picklable object that any other process on the
machine opens as a dlpx.Tensor over the same device memory, its stream
ordered after the producer's writes."""

from __future__ import annotations

from typing import Any, Optional

from . import _cuda
from ._bridge import handle as _handle, wrap
from ._errors import check
from ._lib import ffi, lib, types

__all__ = ["IpcHandle", "IpcExport", "ipc_export"]


class IpcHandle:
    """What another process needs to open a shared CUDA tensor: the
    driver's IPC handles (as bytes) and the tensor's layout.  Picklable;
    :meth:`open` it in another process."""

    __slots__ = ("raw", "dtype", "shape", "strides", "offset")

    def __init__(self, raw: bytes, dtype: str, shape: tuple[int, ...], strides: tuple[int, ...],
                 offset: int) -> None:
        if not isinstance(raw, bytes) or len(raw) != ffi.sizeof("dlpx_cuda_ipc_handle"):
            raise ValueError("not a dlpx CUDA IPC handle")
        self.raw, self.dtype, self.shape, self.strides, self.offset = \
            raw, dtype, tuple(shape), tuple(strides), int(offset)

    def __reduce__(self) -> tuple[Any, ...]:
        return (IpcHandle, (self.raw, self.dtype, self.shape, self.strides, self.offset))

    def open(self, stream: Any = None) -> Any:
        """The shared tensor, zero copy, in this process; |stream| (default:
        the current stream) waits for the producer's writes.  The export is
        mapped once per process however often it is opened.  Raises
        FileNotFoundError when the producer or its export is gone."""
        from ._dtypes import dtype as _dtype
        h = ffi.new("dlpx_cuda_ipc_handle *")
        ffi.memmove(h.bytes, self.raw, len(self.raw))
        s = _cuda.stream_arg(stream, 0)
        st = ffi.new("dlpx_storage **")
        check(lib.dlpx_cuda_ipc_open(h, s, st))
        try:
            dt = _dtype(self.dtype)
            c_dt = ffi.new(types.dtype_p, {"code": dt.code, "bits": dt.bits, "lanes": dt.lanes})
            n = len(self.shape)
            shape = ffi.new(types.int64_array, list(self.shape)) if n else ffi.NULL
            strides = ffi.new(types.int64_array, list(self.strides)) if n else ffi.NULL
            out = ffi.new(types.tensor_pp)
            check(lib.dlpx_tensor_from_storage(st[0], c_dt[0], n, shape, strides, self.offset, 0,
                                               out))
            return wrap(out[0])
        finally:
            lib.dlpx_storage_release(st[0])  # the tensor holds its own reference

    def __repr__(self) -> str:
        return f"<dlpx.cuda.IpcHandle {self.dtype}{list(self.shape)}>"


class IpcExport:
    """A CUDA tensor's memory shared by IPC (made by :func:`ipc_export`):
    ``handle`` goes to the other processes.  :meth:`close` (or the context
    manager's exit) stops new opens; the memory stays until every process
    that opened it has let it go."""

    def __init__(self, export: Any, handle: IpcHandle) -> None:
        self._export: Optional[Any] = export
        self.handle = handle

    @property
    def importers(self) -> int:
        """Processes that have the memory open now."""
        return int(lib.dlpx_cuda_export_importers(self._export)) if self._export else 0

    def close(self) -> None:
        e, self._export = self._export, None
        if e is not None:
            lib.dlpx_cuda_export_close(e)

    def __enter__(self) -> IpcExport:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def ipc_export(t: Any) -> IpcExport:
    """Shares the CUDA device memory of |t| (a dlpx.Tensor, or any DLPack
    CUDA tensor: PyTorch, CuPy, JAX) with other processes, zero copy."""
    from ._consume import from_dlpack
    from ._tensor import Tensor
    if not isinstance(t, Tensor):
        t = from_dlpack(t)
    h = _handle(t)
    storage = lib.dlpx_tensor_storage(h)
    out = ffi.new("dlpx_cuda_export **")
    raw = ffi.new("dlpx_cuda_ipc_handle *")
    check(lib.dlpx_cuda_ipc_export(storage, out, raw))
    base = int(ffi.cast(types.uintptr_t, lib.dlpx_storage_data(storage)))
    offset = t.data_ptr - base
    return IpcExport(out[0], IpcHandle(bytes(ffi.buffer(raw.bytes)), t.dtype.name, t.shape,
                                       t.strides, offset))
