"""The DLPack Python protocol as the array API standard and the DLPack spec
define it: dlpx as producer (__dlpack__, __dlpack_device__) and consumer
(from_dlpack), with foreign producers and consumers played by ctypes."""

import ctypes
import gc

import numpy as np
import pytest

import dlpx
from conftest import needs_versioned_numpy
from dlpack_ctypes import (IS_COPIED, READ_ONLY, ForeignProducer, capsule_is_valid,
                           consume_legacy, consume_versioned, name_of, peek)


@pytest.fixture
def t():
    x = dlpx.empty((3, 4), "float32")
    x.copy_(np.arange(12, dtype=np.float32).reshape(3, 4))
    return x


# ---- producer: which capsule ------------------------------------------------


@pytest.mark.parametrize("max_version,name", [
    (None, "dltensor"), ((0, 8), "dltensor"), ((1, 0), "dltensor_versioned"),
    ((1, 3), "dltensor_versioned"), ((2, 0), "dltensor_versioned"),
])
def test_capsule_kind_follows_max_version(t, max_version, name, no_leaks):
    cap = t.__dlpack__() if max_version is None else t.__dlpack__(max_version=max_version)
    assert name_of(cap) == name
    m = peek(cap)
    if name == "dltensor_versioned":
        assert (m.version.major, m.version.minor) == (1, 3)
        assert m.flags == 0
    dl = m.dl_tensor
    assert dl.data == t.data_ptr
    assert (dl.ndim, dl.shape[0], dl.shape[1]) == (2, 3, 4)
    assert (dl.strides[0], dl.strides[1]) == (4, 1)
    assert (dl.dtype.code, dl.dtype.bits, dl.dtype.lanes) == (2, 32, 1)
    assert dl.byte_offset == 0
    del cap, m, dl  # unconsumed: the capsule's destructor runs the deleter


def test_byte_offset_is_folded_into_data(t):
    v = t[1:, 2:]
    m = peek(v.__dlpack__(max_version=(1, 0)))
    assert m.dl_tensor.byte_offset == 0
    assert m.dl_tensor.data == t.data_ptr + (4 + 2) * 4


def test_strides_never_null(t):
    for v in (t, t[0], t[:, :1], t.T):
        m = peek(v.__dlpack__(max_version=(1, 0)))
        assert bool(m.dl_tensor.strides)
    m0 = peek(t[0, 0].__dlpack__(max_version=(1, 0)))
    assert m0.dl_tensor.ndim == 0


def test_dlpack_device(t):
    assert t.__dlpack_device__() == (1, 0)
    assert t.device == "cpu"
    assert t.device == (dlpx.DLDeviceType.kDLCPU, 0)


def test_copy_true_exports_private_copy(t, no_leaks):
    cap = t.__dlpack__(max_version=(1, 0), copy=True)
    m = peek(cap)
    assert m.flags & IS_COPIED
    assert m.dl_tensor.data != t.data_ptr
    c = dlpx.from_dlpack(cap)
    assert c.data_ptr == m.dl_tensor.data and not c.readonly
    a = c.numpy()
    np.testing.assert_array_equal(a, t.numpy())
    a[0, 0] = 99
    assert t.numpy()[0, 0] == 0
    del a, c, cap, m


def test_copy_true_legacy_has_no_flags_but_copies(t):
    m = peek(t.__dlpack__(copy=True))
    assert m.dl_tensor.data != t.data_ptr


def test_copy_false_never_copies(t):
    m = peek(t.__dlpack__(max_version=(1, 0), copy=False))
    assert m.flags == 0
    assert m.dl_tensor.data == t.data_ptr


def test_stream_must_be_none_on_cpu(t):
    t.__dlpack__(stream=None)
    for bad in (0, 1, 2, -1, 12345):
        with pytest.raises(ValueError, match="stream must be None"):
            t.__dlpack__(stream=bad)


def test_dl_device(t):
    m = peek(t.__dlpack__(max_version=(1, 0), dl_device=(1, 0)))
    assert m.dl_tensor.data == t.data_ptr
    m = peek(t.__dlpack__(max_version=(1, 0), dl_device=(dlpx.DLDeviceType.kDLCPU, 0)))
    with pytest.raises(BufferError, match="cannot export a cpu tensor to cuda:0"):
        t.__dlpack__(max_version=(1, 0), dl_device=(2, 0))
    with pytest.raises(ValueError):
        t.__dlpack__(max_version=(1, 0), dl_device=(99, 0))
    with pytest.raises(ValueError):
        t.__dlpack__(max_version=(1, 0), dl_device="cpu!")


@pytest.mark.parametrize("kwargs,exc", [
    ({"max_version": "1.0"}, TypeError), ({"max_version": (1,)}, TypeError),
    ({"max_version": (1, 0, 0)}, TypeError), ({"max_version": [1, 0]}, TypeError),
    ({"max_version": (1.0, 0)}, TypeError), ({"copy": "yes"}, TypeError),
    ({"copy": 1}, TypeError), ({"nonsense": 1}, TypeError),
])
def test_bad_arguments(t, kwargs, exc, no_leaks):
    with pytest.raises(exc):
        t.__dlpack__(**kwargs)


def test_positional_arguments_refused(t):
    with pytest.raises(TypeError, match="keyword"):
        t.__dlpack__(None)


def test_numpy_int_max_version_accepted(t):
    cap = t.__dlpack__(max_version=(np.int64(1), np.int64(0)))
    assert name_of(cap) == "dltensor_versioned"


def test_readonly_versioned_carries_flag_legacy_refuses(t):
    r = t.as_readonly()
    assert r.readonly and not t.readonly
    m = peek(r.__dlpack__(max_version=(1, 0)))
    assert m.flags & READ_ONLY
    with pytest.raises(BufferError, match="read-only"):
        r.__dlpack__()
    m = peek(r.__dlpack__(copy=True))  # a private copy is writable
    assert m.dl_tensor.data != t.data_ptr


def test_unconsumed_capsules_release(no_leaks):
    x = dlpx.zeros((100,), "int64")
    caps = [x.__dlpack__(max_version=(1, 0)) for _ in range(5)] + [x.__dlpack__() for _ in range(5)]
    assert dlpx.stats()["exports_live"] >= 10
    del caps, x


def test_destructor_preserves_pending_exception(t):
    # A capsule dying while an exception propagates must not clobber it.
    def boom():
        cap = t.__dlpack__(max_version=(1, 0))  # noqa: F841 (dies during unwinding)
        raise KeyError("original")
    with pytest.raises(KeyError, match="original"):
        boom()


# ---- consumer -----------------------------------------------------------------


def test_consume_capsule_directly(t, no_leaks):
    cap = t.__dlpack__(max_version=(1, 0))
    u = dlpx.from_dlpack(cap)
    assert name_of(cap) == "used_dltensor_versioned"
    assert u.data_ptr == t.data_ptr and not u.readonly
    with pytest.raises(ValueError, match="already consumed"):
        dlpx.from_dlpack(cap)
    cap2 = t.__dlpack__()
    u2 = dlpx.from_dlpack(cap2)
    assert name_of(cap2) == "used_dltensor"
    assert u2.readonly  # legacy: cannot say it is writable
    with pytest.raises(ValueError, match="already consumed"):
        dlpx.from_dlpack(cap2)
    del cap, u, cap2, u2


def test_consumed_capsule_refused_by_numpy_too(t):
    cap = t.__dlpack__(max_version=(1, 0))
    dlpx.from_dlpack(cap)
    assert not capsule_is_valid(cap, b"dltensor_versioned")


def test_not_a_dlpack_object():
    with pytest.raises(TypeError, match="does not support DLPack"):
        dlpx.from_dlpack(object())
    with pytest.raises(TypeError, match="does not support DLPack"):
        dlpx.from_dlpack([1, 2, 3])
    with pytest.raises(TypeError, match="dltensor"):
        dlpx.from_dlpack(dlpx.Tensor.__dlpack_c_exchange_api__)  # a capsule, wrong name


class LegacyOnlyProducer:
    """A producer written before DLPack 1.0: no keywords but stream."""

    def __init__(self, arr):
        self.arr = arr
        self.calls = []

    def __dlpack__(self, stream=None):
        self.calls.append(stream)
        return self.arr.__dlpack__()

    def __dlpack_device__(self):
        return self.arr.__dlpack_device__()


class VersionedOnlyProducer:
    """A producer that only answers max_version >= 1 callers."""

    def __init__(self, arr):
        self.arr = arr

    def __dlpack__(self, *, max_version, stream=None, dl_device=None, copy=None):
        if max_version[0] < 1:
            raise BufferError("only DLPack 1.x")
        return self.arr.__dlpack__(max_version=max_version, copy=copy, dl_device=dl_device)

    def __dlpack_device__(self):
        return self.arr.__dlpack_device__()


def test_legacy_only_producer(no_leaks):
    a = np.arange(6.0)
    p = LegacyOnlyProducer(a)
    u = dlpx.from_dlpack(p)
    assert p.calls == [None]
    assert u.data_ptr == a.ctypes.data and u.readonly
    np.testing.assert_array_equal(np.from_dlpack(u), a)
    # copy=True: the old producer cannot copy; dlpx does, and the copy is writable.
    c = dlpx.from_dlpack(p, copy=True)
    assert c.data_ptr != a.ctypes.data and not c.readonly
    del u, c, p


@needs_versioned_numpy
def test_versioned_only_producer(no_leaks):
    a = np.arange(6.0)
    u = dlpx.from_dlpack(VersionedOnlyProducer(a))
    assert u.data_ptr == a.ctypes.data and not u.readonly
    c = dlpx.from_dlpack(VersionedOnlyProducer(a), copy=True)
    assert c.data_ptr != a.ctypes.data
    with pytest.raises(BufferError):
        dlpx.from_dlpack(VersionedOnlyProducer(a), device="cuda:0")
    del u, c


def test_from_dlpack_device_argument():
    a = np.arange(3.0)
    assert dlpx.from_dlpack(a, device="cpu").data_ptr == a.ctypes.data
    assert dlpx.from_dlpack(a, device=(1, 0)).device == "cpu"
    with pytest.raises(BufferError):
        dlpx.from_dlpack(a, device="cuda")
    with pytest.raises(ValueError):
        dlpx.from_dlpack(a, device="tpu")


def test_from_dlpack_of_dlpx_tensor(t):
    u = dlpx.from_dlpack(t)
    assert u is not t and u.data_ptr == t.data_ptr
    c = dlpx.from_dlpack(t, copy=True)
    assert c.data_ptr != t.data_ptr


class LegacyConsumer:
    """A consumer written before DLPack 1.0: calls __dlpack__() with no
    arguments, takes the legacy capsule, calls the deleter when done."""

    def take(self, obj):
        cap = obj.__dlpack__()
        assert name_of(cap) == "dltensor"
        m = consume_legacy(cap)
        dl = m.dl_tensor
        n = dl.ndim
        values = np.ctypeslib.as_array(ctypes.cast(dl.data, ctypes.POINTER(ctypes.c_float)),
                                       shape=(dl.shape[0] * dl.strides[0],)).copy()
        shape = tuple(dl.shape[i] for i in range(n))
        m.deleter(ctypes.pointer(m))
        return shape, values


class VersionedConsumer:
    def take(self, obj):
        cap = obj.__dlpack__(max_version=(1, 0))
        assert name_of(cap) == "dltensor_versioned"
        m = consume_versioned(cap)
        out = (m.version.major, m.flags, m.dl_tensor.data)
        m.deleter(ctypes.pointer(m))
        return out


def test_legacy_consumer(t, no_leaks):
    shape, values = LegacyConsumer().take(t)
    assert shape == (3, 4)
    assert values[:12].tolist() == list(range(12))


def test_versioned_consumer(t, no_leaks):
    assert VersionedConsumer().take(t) == (1, 0, t.data_ptr)
    assert VersionedConsumer().take(t.as_readonly())[1] == READ_ONLY


# ---- foreign tensors dlpx refuses -------------------------------------------------


@pytest.fixture
def producer():
    p = ForeignProducer()
    yield p
    gc.collect()


def _buf(n=64):
    return (ctypes.c_char * n)()


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"major": 2}, BufferError, "major version 2"),
    ({"major": 0}, BufferError, "major version 0"),
    ({"shape": (2, -3)}, BufferError, "negative"),
    ({"shape": (2,), "ndim": 1000}, BufferError, "ndim 1000"),
    ({"shape": (2,), "ndim": -1}, BufferError, "ndim -1"),
    ({"code": 42}, BufferError, "unknown dtype code 42"),
    ({"bits": 24}, BufferError, "no 24-bit type"),
    ({"lanes": 4}, BufferError, "4 lanes"),
    ({"code": 3, "bits": 64}, BufferError, "opaque"),
    ({"shape": (2**62, 8)}, BufferError, "overflow"),
    ({"shape": (4,), "strides": (2**62,)}, BufferError, "overflow"),
    ({"device": (6, 0)}, BufferError, "unknown device type 6"),
    ({"device": (1, -1)}, BufferError, "negative device id"),
    ({"data": 0, "buffer": None}, ValueError, "NULL data"),
])
def test_refused_foreign_tensors(producer, kwargs, exc, match):
    args = {"buffer": _buf(), "shape": (2, 3)}
    args.update(kwargs)
    cap = producer.versioned(**args)
    with pytest.raises(exc, match=match):
        dlpx.from_dlpack(cap)
    assert producer.deleted == 1  # ownership was taken, deleter ran once
    with pytest.raises(ValueError, match="already consumed"):
        dlpx.from_dlpack(cap)
    assert producer.deleted == 1


def test_foreign_zero_size_null_data_accepted(producer):
    cap = producer.versioned(None, (0, 5), data=0)
    u = dlpx.from_dlpack(cap)
    assert u.shape == (0, 5) and u.size == 0
    del u
    gc.collect()
    assert producer.deleted == 1


def test_foreign_null_strides_and_byte_offset(producer):
    buf = (ctypes.c_float * 12)(*range(12))
    cap = producer.legacy(buf, (2, 3), strides=None, byte_offset=8)
    u = dlpx.from_dlpack(cap)
    assert u.strides == (3, 1)
    assert u.data_ptr == ctypes.addressof(buf) + 8
    assert np.from_dlpack(u).tolist() == [[2, 3, 4], [5, 6, 7]]
    del u
    gc.collect()
    assert producer.deleted == 1


def test_foreign_readonly_flag(producer):
    buf = (ctypes.c_float * 4)()
    u = dlpx.from_dlpack(producer.versioned(buf, (4,), flags=READ_ONLY))
    assert u.readonly
    a = u.numpy()
    assert not a.flags.writeable
    with pytest.raises(ValueError):
        a[0] = 1
    u2 = dlpx.from_dlpack(producer.versioned(buf, (4,)))
    assert not u2.readonly
    del u, a, u2
    gc.collect()
    assert producer.deleted == 2


# ---- the DLPack C exchange API ---------------------------------------------------------


class _Api(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32), ("prev", ctypes.c_void_p),
                ("allocator", ctypes.c_void_p), ("from_py", ctypes.c_void_p),
                ("to_py", ctypes.c_void_p), ("dltensor_from_py", ctypes.c_void_p),
                ("stream", ctypes.c_void_p)]


def _api():
    cap = dlpx.Tensor.__dlpack_c_exchange_api__
    assert capsule_is_valid(cap, b"dlpack_exchange_api")
    ptr = ctypes.pythonapi.PyCapsule_GetPointer
    ptr.restype = ctypes.c_void_p
    ptr.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return _Api.from_address(ptr(cap, b"dlpack_exchange_api"))


def test_exchange_api_table():
    api = _api()
    assert (api.major, api.minor) == (1, 3)
    assert api.prev is None
    assert all((api.allocator, api.from_py, api.to_py, api.dltensor_from_py, api.stream))


def test_exchange_api_round_trip(t, no_leaks):
    api = _api()
    from_py = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.POINTER(ctypes.c_void_p))(
        api.from_py)
    to_py = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.py_object))(
        api.to_py)
    out = ctypes.c_void_p()
    assert from_py(t, ctypes.byref(out)) == 0
    obj = ctypes.py_object()
    assert to_py(out.value, ctypes.byref(obj)) == 0  # steals the managed tensor
    u = obj.value
    # the C function wrote a new reference that ctypes does not own: drop it
    decref = ctypes.pythonapi.Py_DecRef
    decref.argtypes = [ctypes.py_object]
    decref.restype = None
    decref(u)
    assert isinstance(u, dlpx.Tensor)
    assert u.data_ptr == t.data_ptr and u.shape == t.shape
    with pytest.raises(TypeError):
        from_py(object(), ctypes.byref(out))
    del u, obj


def test_exchange_api_dltensor_and_stream(t):
    from dlpack_ctypes import DLTensor
    api = _api()
    dl_from_py = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.POINTER(DLTensor))(
        api.dltensor_from_py)
    dl = DLTensor()
    v = t[1:]
    assert dl_from_py(v, ctypes.byref(dl)) == 0
    assert dl.data == v.data_ptr and dl.byte_offset == 0
    assert (dl.shape[0], dl.shape[1], dl.strides[0]) == (2, 4, 4)
    stream = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_int32, ctypes.c_int32,
                               ctypes.POINTER(ctypes.c_void_p))(api.stream)
    s = ctypes.c_void_p(123)
    assert stream(1, 0, ctypes.byref(s)) == 0 and s.value is None


def test_exchange_api_allocator(no_leaks):
    from dlpack_ctypes import DLDataType, DLDevice, DLManagedTensorVersioned, DLTensor
    api = _api()
    errors = []
    SETERR = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p)
    seterr = SETERR(lambda ctx, kind, msg: errors.append((kind.decode(), msg.decode())))
    alloc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.POINTER(DLTensor),
                              ctypes.POINTER(ctypes.POINTER(DLManagedTensorVersioned)),
                              ctypes.c_void_p, SETERR)(api.allocator)
    shape = (ctypes.c_int64 * 2)(5, 7)
    proto = DLTensor(None, DLDevice(1, 0), 2, DLDataType(2, 64, 1), shape, None, 0)
    out = ctypes.POINTER(DLManagedTensorVersioned)()
    assert alloc(ctypes.byref(proto), ctypes.byref(out), None, seterr) == 0
    m = out.contents
    assert (m.dl_tensor.shape[0], m.dl_tensor.shape[1], m.dl_tensor.strides[0]) == (5, 7, 7)
    assert m.dl_tensor.data % 64 == 0
    m.deleter(out)
    proto.device = DLDevice(2, 0)
    assert alloc(ctypes.byref(proto), ctypes.byref(out), None, seterr) != 0
    assert errors and errors[-1][0] == "BufferError" and "kDLCPU" in errors[-1][1]


def test_torch_exchange_api_is_used_as_consumer():
    torch = pytest.importorskip("torch")
    if not hasattr(torch.Tensor, "__dlpack_c_exchange_api__"):
        pytest.skip("this PyTorch has no DLPack exchange API")
    x = torch.arange(6.0)
    u = dlpx.from_dlpack(x)
    assert u.data_ptr == x.data_ptr()
    from dlpx import _consume
    assert _consume._lanes.get(torch.Tensor)  # the fast lane was taken
