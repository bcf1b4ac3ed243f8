"""dlpx as a DLPack consumer: :func:`from_dlpack` takes anything that speaks
DLPack (or a raw capsule) and returns a dlpx.Tensor over the same memory."""

from __future__ import annotations

from typing import Any, Callable, Optional

from . import _bridge, _cuda, _quirks
from ._create import frombuffer
from ._devices import DeviceLike, as_device
from ._dtypes import dtype
from ._lib import lib

__all__ = ["from_dlpack", "MAX_VERSION"]

#: The DLPack version dlpx asks producers for.
MAX_VERSION = (lib.DLPACK_MAJOR_VERSION, lib.DLPACK_MINOR_VERSION)
_LEGACY_RO = lib.DLPX_IMPORT_LEGACY_READONLY
_consume = _bridge.consume
_consume_exchange = _bridge.consume_exchange
_OP_CLONE = _bridge.OP.CLONE
_op = _bridge.op

_CapsuleType = type(_bridge.exchange_api_capsule())

# producer type -> (exchange API table address, guard), or None: no lane
_lanes: dict[type, Optional[tuple[int, Callable[[Any], bool]]]] = {}
# producer types that may take the plain fast path: x.__dlpack__(max_version)
# straight into a capsule consume (no framework quirk applies to them)
_plain: dict[type, bool] = {}

_UNKNOWN: Any = object()


def _lane(kind: type) -> Optional[tuple[int, Callable[[Any], bool]]]:
    try:
        return _lanes[kind]
    except KeyError:
        lane = _lanes[kind] = _quirks.exchange_lane(kind)
        return lane


def _is_plain(kind: type) -> bool:
    plain = _plain.get(kind)
    if plain is None:
        plain = _plain[kind] = (kind is not _bridge.tensor_type() and kind is not _CapsuleType
                                and not _quirks.is_torch_type(kind))
    return plain


def from_dlpack(x: Any, /, *, device: Optional[DeviceLike] = None,
                copy: Optional[bool] = None, stream: Any = None) -> Any:
    """A dlpx.Tensor over the data of |x| (any object with ``__dlpack__``,
    or a DLPack capsule), without copying.

    Uses the producer's DLPack C exchange API when its type offers one, else
    ``x.__dlpack__(max_version=(1, 3))``, falling back to a plain
    ``x.__dlpack__()`` for producers older than DLPack 1.0.  Data that came
    in a legacy capsule is read-only (such capsules cannot say whether it may
    be written) but may leave dlpx as a legacy capsule again; read-only
    producers stay read-only.

    ``device``: the device the result must be on (only the producer can move
    data; dlpx never copies between devices).  ``copy``: True always copies,
    False never does, None copies only if it must (a PyTorch tensor with its
    negative or conjugate bit set, say).  ``stream``: for CUDA producers,
    the stream the caller will use the data on (a DLPack stream value, a
    dlpx.cuda.Stream or anything with ``cuda_stream``), given to
    ``__dlpack__`` so the producer orders it after its own work; dlpx's
    copies and exports of the result then order after that stream.
    """
    if stream is not None:
        return _from_dunder(x, device, copy, stream)
    kind = type(x)
    if device is None and copy is None and _plain.get(kind) is not False and _is_plain(kind):
        lane = _lanes.get(kind, _UNKNOWN)
        if lane is _UNKNOWN:
            lane = _lane(kind)
        if lane is None:  # the common case, kept short: NumPy, JAX, CuPy, ...
            try:
                cap = x.__dlpack__(max_version=MAX_VERSION)
            except AttributeError:
                raise TypeError(f"{kind.__name__} does not support DLPack "
                                "(it has no __dlpack__ method)") from None
            except (TypeError, BufferError):
                return _from_dunder(x, None, None)  # legacy producers, quirks
            return _consume(cap, _LEGACY_RO)
    if kind is _bridge.tensor_type():
        if device is not None and as_device(device) != x.device:
            raise BufferError(f"dlpx cannot move a {x.device} tensor to {device}")
        return x.copy() if copy else _op(x, _OP_CLONE, None)
    if kind is _CapsuleType:
        if device is not None or copy is not None:
            return _finish(_consume(x, _LEGACY_RO), device, copy)
        return _consume(x, _LEGACY_RO)
    if device is None and copy is None:
        lane = _lanes.get(kind, _UNKNOWN)
        if lane is _UNKNOWN:
            lane = _lane(kind)
        if lane is not None and lane[1](x):
            try:
                return _consume_exchange(lane[0], x, _LEGACY_RO)
            except RuntimeError as exc:  # pytorch#150691: what the array API calls BufferError
                raise BufferError(f"{kind.__name__} cannot export this tensor: {exc}") from exc
    return _from_dunder(x, device, copy)


def _from_dunder(x: Any, device: Optional[DeviceLike], copy: Optional[bool],
                 stream: Any = None) -> Any:
    """Through x.__dlpack__, with the keywords the request needs."""
    if copy is not None and not isinstance(copy, bool):
        raise TypeError(f"copy must be True, False or None, not {copy!r}")
    try:
        method = x.__dlpack__
    except AttributeError:
        raise TypeError(f"{type(x).__name__} does not support DLPack "
                        "(it has no __dlpack__ method)") from None
    x2 = _quirks.torch_prepare(x, copy)
    resolved = x2 is not x  # already a private copy
    if resolved:
        method, copy = x2.__dlpack__, None
    kwargs: dict[str, Any] = {"max_version": MAX_VERSION}
    consumer = None
    if stream is not None:
        consumer = _cuda.stream_arg(stream, 0)
        kwargs["stream"] = -1 if consumer == _cuda.NO_SYNC else consumer
    if copy is not None:
        kwargs["copy"] = copy
    if device is not None:
        target = as_device(device)
        kwargs["dl_device"] = (int(target.device_type), target.device_id)
    producer_copied = copy is not None
    legacy = False
    try:
        try:
            cap = method(**kwargs)
        except TypeError:
            producer_copied, legacy = False, True
            cap = method()  # a producer older than DLPack 1.0
    except BufferError:
        buf = _quirks.numpy_readonly_buffer(x)  # numpy#20742
        if buf is not None:
            return _finish(frombuffer(buf), device, copy)
        ml = _quirks.ml_dtypes_raw(x)  # numpy#31256
        if ml is None:
            raise
        return _finish(from_dlpack(ml[0]).view(dtype(ml[1])), device, copy)
    except (NotImplementedError, ValueError) as exc:
        # A producer that cannot serve the requested device says so in its own
        # way (PyTorch: NotImplementedError, NumPy 2.2: ValueError); the
        # protocol's word for it is BufferError.
        if device is None:
            raise
        raise BufferError(f"{type(x).__name__} cannot export to {device}: {exc}") from exc
    except RuntimeError as exc:
        if not _quirks.is_torch_tensor(x):
            raise
        raise BufferError(f"PyTorch cannot export this tensor: {exc}") from exc  # pytorch#150691
    # A producer that accepted copy=True (a DLPack >= 1.0 keyword) made a
    # private copy: it is ours to write even if it came in a legacy capsule.
    private = resolved or (copy is True and producer_copied)
    writable = private or (legacy and _quirks.legacy_capsule_writable(x))  # numpy#20742
    t = _consume(cap, 0 if writable else _LEGACY_RO)
    if consumer is not None and t.device.device_type in _cuda.CUDA_TYPES:
        _cuda.mark(t, consumer)  # the producer made it ready on the caller's stream
    return _finish(t, device, None if producer_copied or resolved else copy)


def _finish(t: Any, device: Optional[DeviceLike], copy: Optional[bool]) -> Any:
    """Applies device/copy requests the producer could not handle."""
    if device is not None and as_device(device) != t.device:
        raise BufferError(f"the producer gave a {t.device} tensor, not {device}")
    if copy:
        return t.copy()
    return t
