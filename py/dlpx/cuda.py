"""dlpx.cuda: CUDA devices, streams, events and the caching pools, named
after torch.cuda.  libdlpx opens the NVIDIA driver (libcuda.so.1) the first
time one of these needs it; without a driver or a GPU, :func:`is_available`
is False and the rest raise with the reason.

    >>> import dlpx, dlpx.cuda
    >>> if dlpx.cuda.is_available():
    ...     s = dlpx.cuda.Stream()
    ...     x = dlpx.zeros((1024, 1024)).to("cuda", stream=s)
    ...     dlpx.cuda.memory_stats()["allocated_bytes.all.current"]
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

from . import _cuda
from ._cuda_ipc import IpcExport, IpcHandle, ipc_export
from ._devices import Device, DLDeviceType
from ._errors import check, message
from ._lib import ffi, lib, types

__all__ = ["is_available", "device_count", "driver_version", "get_device_name",
           "get_device_properties", "mem_get_info", "synchronize", "Stream", "ExternalStream",
           "Event", "current_stream", "default_stream", "set_stream", "stream",
           "memory_stats", "host_memory_stats", "memory_allocated", "max_memory_allocated",
           "memory_reserved", "max_memory_reserved", "reset_peak_memory_stats", "empty_cache",
           "set_memory_limit", "pool_round", "ipc_export", "IpcExport", "IpcHandle"]

_CUDA = DLDeviceType(lib.kDLCUDA)
_HOST = DLDeviceType(lib.kDLCUDAHost)


def _ordinal(device: Any) -> int:
    """A device argument (None: 0, an int, "cuda:1", a Device, a
    torch.device) as a CUDA ordinal."""
    if device is None:
        return 0
    if isinstance(device, int) and not isinstance(device, bool):
        if device < 0:
            raise ValueError(f"CUDA device {device} is negative")
        return device
    d = _cuda.device_arg(device)
    assert d is not None
    if d.device_type not in _cuda.CUDA_TYPES:
        raise ValueError(f"{d} is not a CUDA device")
    return _cuda.run_device(d)


# ---- devices ---------------------------------------------------------------------

def is_available() -> bool:
    """True when the CUDA driver loads and reports at least one GPU."""
    return bool(lib.dlpx_cuda_available())


def why_unavailable() -> str:
    """Why :func:`is_available` is False ("" when it is True)."""
    return "" if lib.dlpx_cuda_available() else message()


def device_count() -> int:
    """The number of GPUs (0 without a driver)."""
    n = ffi.new(types.int_p)
    lib.dlpx_cuda_device_count(n)
    return int(n[0])


def driver_version() -> int:
    """The driver's CUDA version, e.g. 12040 for 12.4."""
    v = ffi.new(types.int_p)
    check(lib.dlpx_cuda_driver_version(v))
    return int(v[0])


def get_device_name(device: Any = None) -> str:
    buf = ffi.new(types.char_array, 256)
    check(lib.dlpx_cuda_device_info(_ordinal(device), buf, 256, ffi.NULL))
    return str(ffi.string(buf).decode("utf-8", "replace"))


def get_device_properties(device: Any = None) -> dict[str, Any]:
    """The device's name and total memory."""
    buf = ffi.new(types.char_array, 256)
    total = ffi.new(types.size_t_p)
    check(lib.dlpx_cuda_device_info(_ordinal(device), buf, 256, total))
    return {"name": ffi.string(buf).decode("utf-8", "replace"), "total_memory": int(total[0])}


def mem_get_info(device: Any = None) -> tuple[int, int]:
    """(free, total) bytes of the device, as the driver reports them."""
    free, total = ffi.new(types.size_t_p), ffi.new(types.size_t_p)
    check(lib.dlpx_cuda_mem_get_info(_ordinal(device), free, total))
    return int(free[0]), int(total[0])


def synchronize(device: Any = None) -> None:
    """Waits for all work on the device (dlpx itself never needs this)."""
    check(lib.dlpx_cuda_synchronize(_ordinal(device)))


# ---- streams ----------------------------------------------------------------------

class Stream:
    """A CUDA stream on a device.  ``Stream()`` creates one (destroyed by
    :meth:`close`, the context manager's exit, or garbage collection); the
    default streams and :class:`ExternalStream` are borrowed.  The handle is
    ``cuda_stream`` (an int, as torch.cuda.Stream's), which ``__dlpack__``
    takes as its ``stream`` argument."""

    __slots__ = ("device", "_handle", "_owned", "__weakref__")
    device: Device

    def __init__(self, device: Any = None, *, non_blocking: bool = False) -> None:
        dev = _ordinal(device)
        out = ffi.new(types.uintptr_t_p)
        self._owned = False
        self._handle = 0
        check(lib.dlpx_cuda_stream_create(dev, 1 if non_blocking else 0, out))
        self.device = Device(_CUDA, dev)
        self._handle = int(out[0])
        self._owned = True

    @classmethod
    def _borrow(cls, device: int, handle: int) -> Stream:
        self = object.__new__(cls)
        self.device = Device(_CUDA, device)
        self._handle = handle
        self._owned = False
        return self

    @property
    def cuda_stream(self) -> int:
        if self._owned and not self._handle:
            raise ValueError("the stream is closed")
        return self._handle

    def close(self) -> None:
        """Destroys a stream this object created (queued work still runs);
        idempotent.  Borrowed streams are left alone."""
        h, self._handle = self._handle, 0
        if self._owned and h:
            check(lib.dlpx_cuda_stream_destroy(self.device.device_id, h))

    def __del__(self) -> None:
        try:
            if self._owned and self._handle:
                lib.dlpx_cuda_stream_destroy(self.device.device_id, self._handle)
                self._handle = 0
        except Exception:  # interpreter shutdown
            pass

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def synchronize(self) -> None:
        check(lib.dlpx_cuda_stream_synchronize(self.device.device_id, self.cuda_stream))

    def query(self) -> bool:
        """True when all work queued on the stream has finished."""
        rc = lib.dlpx_cuda_stream_query(self.device.device_id, self.cuda_stream)
        if rc < 0:
            check(rc)
        return bool(rc)

    def record_event(self, event: Optional[Event] = None) -> Event:
        event = event if event is not None else Event(device=self.device.device_id)
        event.record(self)
        return event

    def wait_event(self, event: Event) -> None:
        """Later work on this stream waits for |event| (on the device)."""
        check(lib.dlpx_cuda_stream_wait_event(self.device.device_id, self.cuda_stream,
                                              event.cuda_event))

    def wait_stream(self, other: Stream) -> None:
        """Later work on this stream waits for the work queued on |other|."""
        check(lib.dlpx_cuda_stream_order(self.device.device_id, other.cuda_stream,
                                         self.cuda_stream))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Stream):
            return (self.device, self._handle) == (other.device, other._handle)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.device, self._handle))

    def __repr__(self) -> str:
        return f"<dlpx.cuda.Stream device={self.device} cuda_stream={self._handle:#x}>"


def ExternalStream(stream_ptr: int, device: Any = None) -> Stream:
    """A borrowed Stream over a handle made elsewhere (torch's, CuPy's)."""
    return Stream._borrow(_ordinal(device), _cuda.stream_arg(stream_ptr, 0))


def default_stream(device: Any = None) -> Stream:
    """The legacy default stream of the device."""
    return Stream._borrow(_ordinal(device), 0)


def current_stream(device: Any = None) -> Stream:
    """This thread's current stream for the device (the default until
    :func:`set_stream`); dlpx's copies use it when given no stream."""
    dev = _ordinal(device)
    return Stream._borrow(dev, int(lib.dlpx_cuda_current_stream(dev)))


def set_stream(s: Stream) -> None:
    """Makes |s| this thread's current stream for its device."""
    check(lib.dlpx_cuda_set_current_stream(s.device.device_id, s.cuda_stream))


@contextlib.contextmanager
def stream(s: Optional[Stream]) -> Iterator[Optional[Stream]]:
    """Makes |s| current for its device inside the block (None: no change)."""
    if s is None:
        yield None
        return
    dev = s.device.device_id
    prev = int(lib.dlpx_cuda_current_stream(dev))
    check(lib.dlpx_cuda_set_current_stream(dev, s.cuda_stream))
    try:
        yield s
    finally:
        lib.dlpx_cuda_set_current_stream(dev, prev)


# ---- events ------------------------------------------------------------------------

class Event:
    """A CUDA event (torch.cuda.Event's arguments).  Destroyed by
    :meth:`close`, the context manager's exit or garbage collection."""

    __slots__ = ("device", "_handle", "_timing")

    def __init__(self, enable_timing: bool = False, blocking: bool = False,
                 interprocess: bool = False, *, device: Any = None) -> None:
        dev = _ordinal(device)
        flags = ((lib.DLPX_CUDA_EVENT_TIMING if enable_timing else 0)
                 | (lib.DLPX_CUDA_EVENT_BLOCKING_SYNC if blocking else 0)
                 | (lib.DLPX_CUDA_EVENT_INTERPROCESS if interprocess else 0))
        out = ffi.new(types.uintptr_t_p)
        self._handle = 0
        check(lib.dlpx_cuda_event_create(dev, flags, out))
        self.device = Device(_CUDA, dev)
        self._handle = int(out[0])
        self._timing = enable_timing

    @property
    def cuda_event(self) -> int:
        if not self._handle:
            raise ValueError("the event is closed")
        return self._handle

    def record(self, stream: Optional[Stream] = None) -> None:
        """Records the event at the end of |stream| (the current stream)."""
        dev = self.device.device_id
        check(lib.dlpx_cuda_event_record(dev, self.cuda_event, _cuda.stream_arg(stream, dev)))

    def wait(self, stream: Optional[Stream] = None) -> None:
        """Makes |stream| (the current stream) wait for this event."""
        dev = self.device.device_id
        check(lib.dlpx_cuda_stream_wait_event(dev, _cuda.stream_arg(stream, dev),
                                              self.cuda_event))

    def query(self) -> bool:
        rc = lib.dlpx_cuda_event_query(self.device.device_id, self.cuda_event)
        if rc < 0:
            check(rc)
        return bool(rc)

    def synchronize(self) -> None:
        check(lib.dlpx_cuda_event_synchronize(self.device.device_id, self.cuda_event))

    def elapsed_time(self, end: Event) -> float:
        """Milliseconds from this event to |end| (both timed, both done)."""
        ms = ffi.new(types.float_p)
        check(lib.dlpx_cuda_event_elapsed(self.device.device_id, self.cuda_event,
                                          end.cuda_event, ms))
        return float(ms[0])

    def close(self) -> None:
        h, self._handle = self._handle, 0
        if h:
            check(lib.dlpx_cuda_event_destroy(self.device.device_id, h))

    def __del__(self) -> None:
        try:
            if self._handle:
                lib.dlpx_cuda_event_destroy(self.device.device_id, self._handle)
                self._handle = 0
        except Exception:
            pass

    def __enter__(self) -> Event:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<dlpx.cuda.Event device={self.device} cuda_event={self._handle:#x}>"


# ---- the caching pools ----------------------------------------------------------------

def _pool_device(device: Any, host: bool) -> Any:
    return _cuda.c_device(Device(_HOST, 0) if host else Device(_CUDA, _ordinal(device)))


def _stats(device: Any, host: bool) -> dict[str, int]:
    st = ffi.new(types.pool_stats_p)
    check(lib.dlpx_cuda_pool_stats_get(_pool_device(device, host), st))
    return {
        "allocated_bytes.all.current": st.allocated_bytes,
        "allocated_bytes.all.peak": st.allocated_bytes_peak,
        "active_bytes.all.current": st.active_bytes,
        "active_bytes.all.peak": st.active_bytes_peak,
        "reserved_bytes.all.current": st.reserved_bytes,
        "reserved_bytes.all.peak": st.reserved_bytes_peak,
        "requested_bytes.all.current": st.requested_bytes,
        "allocation.all.current": st.allocations,
        "allocation.all.allocated": st.allocation_count,
        "allocation.all.freed": st.free_count,
        "segment.all.current": st.segments,
        "segment.all.allocated": st.segment_alloc_count,
        "segment.all.freed": st.segment_free_count,
        "num_alloc_retries": st.cache_flushes,
        "num_ooms": st.oom_count,
        "memory_limit": st.limit,
    }


def memory_stats(device: Any = None) -> dict[str, int]:
    """The device pool's statistics, with torch.cuda.memory_stats' keys
    (``allocated_bytes.all.current``, ``reserved_bytes.all.peak``, ...)."""
    return _stats(device, False)


def host_memory_stats() -> dict[str, int]:
    """The pinned host pool's statistics (keys as :func:`memory_stats`)."""
    return _stats(None, True)


def memory_allocated(device: Any = None) -> int:
    return memory_stats(device)["allocated_bytes.all.current"]


def max_memory_allocated(device: Any = None) -> int:
    return memory_stats(device)["allocated_bytes.all.peak"]


def memory_reserved(device: Any = None) -> int:
    return memory_stats(device)["reserved_bytes.all.current"]


def max_memory_reserved(device: Any = None) -> int:
    return memory_stats(device)["reserved_bytes.all.peak"]


def reset_peak_memory_stats(device: Any = None, *, host: bool = False) -> None:
    check(lib.dlpx_cuda_pool_reset_peaks(_pool_device(device, host)))


def empty_cache(device: Any = None, *, host: bool = False) -> None:
    """Gives the pool's cached blocks back to the driver."""
    check(lib.dlpx_cuda_empty_cache(_pool_device(device, host)))


def set_memory_limit(limit: Optional[int], device: Any = None, *, host: bool = False) -> None:
    """Caps the bytes the pool reserves (None: no cap).  An allocation over
    the cap empties the cache, then raises MemoryError."""
    value = -1 if limit is None else int(limit)
    if limit is not None and value < 0:
        raise ValueError(f"memory limit {limit} is negative")
    check(lib.dlpx_cuda_set_memory_limit(_pool_device(device, host), value))


def pool_round(nbytes: int) -> int:
    """The size class a pool gives a request of |nbytes|."""
    if nbytes < 0:
        raise ValueError("nbytes is negative")
    return int(lib.dlpx_cuda_pool_round(nbytes))
