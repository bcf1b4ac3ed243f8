"""CUDA for dlpx.Tensor: the stream arguments, device copies and exports
ordered on streams.  libdlpx does the work (include/dlpx/cuda.h); the
public module is dlpx.cuda.  Imports nothing of the Tensor class."""

from __future__ import annotations

import operator
from typing import Any, Optional

from ._bridge import handle, wrap
from ._devices import Device, DLDeviceType, as_device
from ._errors import check, check_dlpack
from ._lib import ffi, lib, types

__all__ = ["CUDA_TYPES", "CUDA_DEVICE", "NO_SYNC", "stream_arg", "dlpack_stream", "run_device", "to_device",
           "copy_into", "ready_for", "mark", "empty", "c_device", "device_arg", "fill_zero"]

#: Device types whose memory libdlpx manages through the CUDA driver.
CUDA_TYPES = frozenset(DLDeviceType(t) for t in (lib.kDLCUDA, lib.kDLCUDAHost,
                                                 lib.kDLCUDAManaged))
#: kDLCUDA, device memory.
CUDA_DEVICE = DLDeviceType(lib.kDLCUDA)
_HOST = DLDeviceType(lib.kDLCUDAHost)
#: DLPack's stream -1: no synchronisation, as a uintptr_t.
NO_SYNC = (1 << 64) - 1


def run_device(device: Device) -> int:
    """The ordinal of the CUDA device that runs work for |device|
    (pinned host memory belongs to device 0's context)."""
    return 0 if device.device_type == _HOST else device.device_id


def stream_arg(stream: Any, device: int) -> int:
    """A stream argument of dlpx's own calls as a uintptr_t: None the
    calling thread's current stream for |device|, a dlpx.cuda.Stream (or
    anything with ``cuda_stream``, such as torch.cuda.Stream), or an int
    handle (0 the legacy default)."""
    if stream is None:
        return int(lib.dlpx_cuda_current_stream(device))
    value = getattr(stream, "cuda_stream", stream)
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"stream must be a dlpx.cuda.Stream, an object with cuda_stream or an "
                        f"int handle, not {type(stream).__name__}") from None
    if value == -1:
        return NO_SYNC
    if value < 0 or value >= NO_SYNC:
        raise ValueError(f"stream {value} is not a stream handle")
    return value


def dlpack_stream(stream: Any) -> int:
    """__dlpack__'s stream for a CUDA tensor as the spec gives it: None the
    legacy default (1), 1 legacy, 2 per-thread, -1 no synchronisation, 0
    refused (it is ambiguous), other ints a stream handle."""
    if stream is None:
        return int(lib.DLPX_CUDA_STREAM_LEGACY)
    if type(stream) is bool:
        raise TypeError("stream must be an int, not bool")
    try:
        value = operator.index(stream)
    except TypeError:
        raise TypeError(f"stream must be None or an int, not {type(stream).__name__}") from None
    if value == 0:
        raise ValueError("stream=0 is ambiguous for CUDA and disallowed by DLPack: use 1 for "
                         "the legacy default stream or 2 for the per-thread default stream")
    if value == -1:
        return NO_SYNC
    if value < -1 or value >= NO_SYNC:
        raise ValueError(f"stream {value} is not a stream handle")
    return value


def ready_for(t: Any, consumer: int) -> None:
    """Orders the consumer's stream after the work that wrote |t| (no host
    block; pinned memory waits on the host)."""
    check_dlpack(lib.dlpx_cuda_tensor_ready(handle(t), consumer))


def mark(t: Any, stream: int) -> None:
    """Records that |t|'s memory is ready on |stream| (a producer made it
    so for us)."""
    if stream != NO_SYNC:
        check(lib.dlpx_cuda_storage_mark(lib.dlpx_tensor_storage(handle(t)), stream))


def c_device(device: Device) -> Any:
    """|device| as a DLDevice struct for libdlpx."""
    return ffi.new(types.device_p, (int(device.device_type), device.device_id))[0]


def to_device(t: Any, device: Device, stream: Any, non_blocking: bool) -> Any:
    """A C-contiguous copy of |t| on |device|, queued on |stream|; waits
    for it unless |non_blocking|."""
    src = t.device
    runs_on = run_device(device) if device.device_type in CUDA_TYPES else run_device(src)
    s = stream_arg(stream, runs_on)
    out = ffi.new(types.tensor_pp)
    check(lib.dlpx_cuda_tensor_to(handle(t), c_device(device), s, 0 if non_blocking else 1, out))
    return wrap(out[0])


def copy_into(dst: Any, src: Any, stream: Any, non_blocking: bool) -> None:
    """Copies |src| into |dst| (one of them on a CUDA device) on |stream|."""
    cuda = dst.device if dst.device.device_type in CUDA_TYPES else src.device
    dev = run_device(cuda)
    s = stream_arg(stream, dev)
    check(lib.dlpx_cuda_tensor_copy_into(handle(dst), handle(src), s))
    if not non_blocking:
        check(lib.dlpx_cuda_stream_synchronize(dev, s))


def empty(shape: tuple[int, ...], dt: Any, device: Device, stream: Any = None) -> Any:
    """An uninitialised C-contiguous tensor in new CUDA memory of |device|."""
    s = stream_arg(stream, run_device(device))
    out = ffi.new(types.tensor_pp)
    dims = ffi.new(types.int64_array, list(shape)) if shape else ffi.NULL
    c_dt = ffi.new(types.dtype_p, {"code": dt.code, "bits": dt.bits, "lanes": dt.lanes})[0]
    check(lib.dlpx_cuda_tensor_empty(c_device(device), c_dt, len(shape), dims, s, out))
    return wrap(out[0])


def fill_zero(t: Any, stream: Any) -> None:
    """Zeroes the bytes of a new C-contiguous CUDA tensor on |stream|."""
    dev = run_device(t.device)
    check(lib.dlpx_cuda_memset(dev, ffi.cast(types.void_p, t.data_ptr), 0, t.nbytes,
                               stream_arg(stream, dev)))


def device_arg(device: Any) -> Optional[Device]:
    """A device argument: None, or a Device from a string, tuple or Device
    (torch.device too: its str is "cuda:0")."""
    if device is None:
        return None
    if not isinstance(device, (str, tuple, Device)):
        device = str(device)
    return as_device(device)
