"""dlpx.Tensor's Python API: attributes, views, copies, buffers, dtypes."""

import array
import gc
import pickle

import numpy as np
import pytest

import dlpx


def arange(shape, dtype="float32"):
    t = dlpx.empty(shape, dtype)
    t.copy_(np.arange(int(np.prod(shape))).reshape(shape).astype(dtype))
    return t


def npv(t):
    return t.numpy()


# ---- creation and attributes ---------------------------------------------------


def test_empty_zeros_attributes(no_leaks):
    t = dlpx.zeros((2, 3, 4), "float64")
    assert t.shape == (2, 3, 4)
    assert t.strides == (12, 4, 1) == t.stride()
    assert t.stride(1) == 4
    assert t.byte_strides == (96, 32, 8)
    assert t.dtype == dlpx.float64 and t.dtype == "float64" and t.dtype == np.float64
    assert t.device == "cpu" and str(t.device) == "cpu"
    assert (t.ndim, t.size, t.numel(), t.nbytes, t.itemsize) == (3, 24, 24, 192, 8)
    assert not t.readonly
    assert t.data_ptr % 64 == 0
    assert len(t) == 2
    assert t.is_contiguous() and not t.is_contiguous("F")
    assert npv(t).sum() == 0
    assert repr(t) == "dlpx.Tensor(shape=(2, 3, 4), strides=(12, 4, 1), dtype=float64, device=cpu)"
    del t


def test_shape_arguments():
    assert dlpx.empty(5).shape == (5,)
    assert dlpx.empty(()).shape == ()
    assert dlpx.empty([2, 3]).shape == (2, 3)
    assert dlpx.empty((np.int64(2), 3)).shape == (2, 3)
    with pytest.raises(TypeError):
        dlpx.empty("abc")
    with pytest.raises(TypeError):
        dlpx.empty((2.5,))
    with pytest.raises(ValueError, match="negative"):
        dlpx.empty((2, -1))
    with pytest.raises(ValueError, match="outside"):
        dlpx.empty((1,) * 129)
    with pytest.raises(MemoryError):
        dlpx.empty((2**60,), "uint8")
    with pytest.raises(ValueError, match="overflow"):
        dlpx.empty((2**62, 2**62))
    with pytest.raises(TypeError, match="not understood"):
        dlpx.empty((2,), "float128")


def test_tensor_not_constructed_directly():
    with pytest.raises(TypeError, match="dlpx.empty"):
        dlpx.Tensor()


def test_zero_dim(no_leaks):
    t = dlpx.zeros((), "int32")
    assert t.shape == () and t.size == 1 and t.ndim == 0
    with pytest.raises(TypeError, match="0-d"):
        len(t)
    assert npv(t).shape == ()
    del t


# ---- dtypes and devices ------------------------------------------------------------


def test_dtype_objects():
    assert dlpx.dtype("float32") is dlpx.float32
    assert dlpx.dtype(np.dtype("int16")) is dlpx.int16
    assert dlpx.dtype(np.bool_) is dlpx.bool
    assert dlpx.float32 == "float32" and dlpx.float32 != "float64"
    assert dlpx.float32 != 3 and dlpx.float32 != object()
    assert hash(dlpx.float32) == hash("float32")
    assert {dlpx.float32: 1}["float32"] == 1
    assert str(dlpx.bfloat16) == "bfloat16" and repr(dlpx.bfloat16) == "dlpx.bfloat16"
    assert dlpx.float4_e2m1fn.itemsize == 0.5 and dlpx.float4_e2m1fn.is_subbyte
    assert dlpx.float6_e2m3fn.itemsize == 0.75
    assert dlpx.complex128.itemsize == 16
    assert pickle.loads(pickle.dumps(dlpx.bfloat16)) is dlpx.bfloat16
    assert dlpx.dtype("float32x4").lanes == 4
    with pytest.raises(AttributeError):
        dlpx.float32.bits = 8
    with pytest.raises(TypeError):
        dlpx.dtype(np.dtype(">f4"))
    with pytest.raises(TypeError):
        dlpx.dtype("nope")
    assert len(dlpx.ALL_DTYPES) == 27


def test_dtype_numpy_and_torch_conversions():
    assert dlpx.float16.numpy == np.float16
    ml_dtypes = pytest.importorskip("ml_dtypes")
    assert dlpx.bfloat16.numpy == np.dtype(ml_dtypes.bfloat16)
    assert dlpx.dtype(ml_dtypes.float8_e4m3fn) is dlpx.float8_e4m3fn
    torch = pytest.importorskip("torch")
    assert dlpx.bfloat16.torch is torch.bfloat16
    assert dlpx.dtype(torch.float8_e5m2) is dlpx.float8_e5m2
    assert dlpx.uint16 == torch.uint16
    with pytest.raises(TypeError):
        _ = dlpx.float6_e2m3fn.torch


def test_devices():
    cpu = dlpx.Device(dlpx.DLDeviceType.kDLCPU, 0)
    assert cpu == "cpu" and cpu == (1, 0) and str(cpu) == "cpu"
    cuda = dlpx.Device(dlpx.DLDeviceType.kDLCUDA, 1)
    assert str(cuda) == "cuda:1" and cuda == "cuda:1" and cuda != "cuda:0"
    assert repr(cuda) == "Device(kDLCUDA, 1)"
    assert cpu != "not a device"


# ---- views ---------------------------------------------------------------------------


def test_indexing_matches_numpy(no_leaks):
    t = arange((4, 5, 6))
    a = npv(t)
    keys = [0, -1, (1, 2), (slice(None), 3), (Ellipsis, 2), (None, 1), (1, None, slice(None, None, -2)),
            slice(1, 3), (slice(None), slice(None, None, -1), 0), (np.int64(2),), (), Ellipsis,
            (slice(10, 20),), (slice(-100, 100, 3), Ellipsis, None), (2, 3, 4)]
    for k in keys:
        v, want = t[k], np.asarray(a[k])
        np.testing.assert_array_equal(npv(v), want, err_msg=str(k))
        assert v.shape == want.shape
        if isinstance(a[k], np.ndarray) and a[k].size:
            assert v.data_ptr == a[k].ctypes.data
    del t, a, v


def test_indexing_errors():
    t = arange((4, 5))
    with pytest.raises(IndexError, match="out of bounds"):
        t[4]
    with pytest.raises(IndexError):
        t[0, -6]
    with pytest.raises(IndexError, match="too many indices"):
        t[0, 0, 0]
    with pytest.raises(IndexError, match="valid indices"):
        t[1.5]
    with pytest.raises(IndexError, match="valid indices"):
        t[True]
    with pytest.raises(IndexError, match="valid indices"):
        t[[0, 1]]
    with pytest.raises(IndexError, match="valid indices"):
        t["a"]
    with pytest.raises(IndexError, match="single ellipsis"):
        t[..., ...]
    with pytest.raises(ValueError, match="step cannot be zero"):
        t[::0]
    with pytest.raises(TypeError, match="slice indices"):
        t[1.0:]
    with pytest.raises(IndexError):
        t[2**70]
    assert t[2**70:].shape == (0, 5)  # slice bounds clamp, as in Python
    assert t[-2**70:].shape == (4, 5)


def test_iteration():
    t = arange((3, 2))
    rows = [npv(r).tolist() for r in t]
    assert rows == [[0, 1], [2, 3], [4, 5]]


def test_shape_methods():
    t = arange((2, 3, 4))
    a = npv(t)
    np.testing.assert_array_equal(npv(t.T), a.T)
    np.testing.assert_array_equal(npv(t.mT), np.swapaxes(a, -1, -2))
    np.testing.assert_array_equal(npv(t.permute(2, 0, 1)), a.transpose(2, 0, 1))
    np.testing.assert_array_equal(npv(t.permute((1, 2, 0))), a.transpose(1, 2, 0))
    np.testing.assert_array_equal(npv(t.swapaxes(0, 2)), np.swapaxes(a, 0, 2))
    np.testing.assert_array_equal(npv(t.reshape(6, 4)), a.reshape(6, 4))
    np.testing.assert_array_equal(npv(t.reshape((-1,))), a.reshape(-1))
    assert t.reshape(4, 6).data_ptr == t.data_ptr  # a view
    r = t.T.reshape(-1)  # needs a copy
    np.testing.assert_array_equal(npv(r), a.T.reshape(-1))
    assert r.data_ptr != t.data_ptr
    with pytest.raises(ValueError, match="without a copy"):
        t.T.view(-1)
    assert t.view(3, 8).shape == (3, 8)
    np.testing.assert_array_equal(npv(t.unsqueeze(1).squeeze(1)), a)
    assert t.unsqueeze(-1).shape == (2, 3, 4, 1)
    assert t[:, :1].squeeze().shape == (2, 4)
    with pytest.raises(ValueError, match="cannot squeeze"):
        t.squeeze(0)
    b = t[0, :, :1].broadcast_to((5, 3, 4))
    np.testing.assert_array_equal(npv(b), np.broadcast_to(a[0, :, :1], (5, 3, 4)))
    assert b.strides == (0, 4, 0)
    with pytest.raises(ValueError, match="broadcast"):
        t.broadcast_to((3, 3))
    with pytest.raises(IndexError):
        t.permute(0, 1, 1)
    with pytest.raises(ValueError):
        t.permute(0, 1)
    with pytest.raises(ValueError, match="mT"):
        _ = dlpx.empty(3).mT


def test_view_dtype():
    t = arange((2, 4), "uint16")
    v = t.view("float16")
    assert v.dtype == dlpx.float16 and v.data_ptr == t.data_ptr
    assert t.view(dlpx.bfloat16).dtype == "bfloat16"
    with pytest.raises(TypeError, match="16-bit"):
        t.view("float32")
    u8 = dlpx.zeros((4,), "uint8")
    f4 = u8.view("float4_e2m1fn")  # one element per byte: padded
    assert f4.shape == (4,) and f4.itemsize == 1 and f4.nbytes == 4
    assert f4.view("uint8").dtype == "uint8"


def test_readonly_views():
    t = arange((3,))
    r = t.as_readonly()
    assert r.readonly and r[1:].readonly and r.T.readonly
    with pytest.raises(ValueError, match="read-only"):
        r.copy_(t)
    assert not r.copy().readonly
    a = npv(r)
    assert not a.flags.writeable


# ---- copies -----------------------------------------------------------------------------


def test_copy_and_contiguous(no_leaks):
    t = arange((3, 4))
    c = t.copy()
    assert c.data_ptr != t.data_ptr and c.is_contiguous()
    f = t.copy("F")
    assert f.is_contiguous("F") and f.strides == (1, 3)
    np.testing.assert_array_equal(npv(f), npv(t))
    assert t.contiguous().data_ptr == t.data_ptr
    tc = t.T.contiguous()
    assert tc.is_contiguous() and tc.data_ptr != t.data_ptr
    np.testing.assert_array_equal(npv(tc), npv(t).T)
    assert t.clone().data_ptr != t.data_ptr
    with pytest.raises(ValueError):
        t.copy("K")
    del t, c, f, tc


def test_copy_into_and_setitem():
    t = dlpx.zeros((3, 4), "int32")
    src = np.arange(4, dtype=np.int32)
    t[...] = src  # broadcast from any DLPack producer
    np.testing.assert_array_equal(npv(t), np.broadcast_to(src, (3, 4)))
    t[1] = np.full(4, 7, dtype=np.int32)
    assert npv(t)[1].tolist() == [7] * 4
    t[:, ::-1] = t  # overlapping: as if through a temporary
    assert npv(t)[0].tolist() == [3, 2, 1, 0]
    t.T[...] = np.ones((4, 3), dtype=np.int32)
    assert npv(t).sum() == 12
    with pytest.raises(TypeError, match="dtypes"):
        t[...] = np.zeros((3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="broadcast"):
        t[...] = np.zeros(5, dtype=np.int32)
    b = dlpx.zeros((1, 4), "int32").broadcast_to((3, 4))
    with pytest.raises(ValueError, match="more than once"):
        b.copy_(t)


def test_tolist_and_array():
    t = arange((2, 2), "int64")
    assert t.tolist() == [[0, 1], [2, 3]]
    a = np.asarray(t)
    assert a.ctypes.data == t.data_ptr
    assert np.asarray(t, dtype=np.float64).dtype == np.float64
    assert np.array(t, copy=True).ctypes.data != t.data_ptr


# ---- frombuffer -------------------------------------------------------------------------


def test_frombuffer_bytes_is_readonly(no_leaks):
    b = bytes(range(16))
    t = dlpx.frombuffer(b)
    assert t.readonly and t.dtype == "uint8" and t.shape == (16,)
    assert npv(t).tolist() == list(range(16))
    f = dlpx.frombuffer(b, dtype="uint32", count=2, offset=4)
    assert npv(f).tolist() == [int.from_bytes(bytes(range(4, 8)), "little"),
                               int.from_bytes(bytes(range(8, 12)), "little")]
    del t, f


def test_frombuffer_keeps_owner_alive_and_locked(no_leaks):
    ba = bytearray(8)
    t = dlpx.frombuffer(ba, "int16")
    assert not t.readonly and t.shape == (4,)
    npv(t)[:] = [1, 2, 3, 4]
    assert ba[:4] == b"\x01\x00\x02\x00"
    with pytest.raises(BufferError):
        ba.append(0)  # exported: cannot resize under the view
    cap = t.__dlpack__(max_version=(1, 0))
    del t
    gc.collect()
    with pytest.raises(BufferError):
        ba.append(0)  # the unconsumed capsule still holds it
    del cap
    gc.collect()
    ba.append(0)  # released


def test_frombuffer_multidimensional_memoryview():
    a = np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::-2]
    t = dlpx.frombuffer(memoryview(a))
    assert t.shape == (3, 2) and t.strides == (4, -2) and t.dtype == "float64"
    assert t.data_ptr == a.ctypes.data
    np.testing.assert_array_equal(npv(t), a)


def test_frombuffer_formats():
    assert dlpx.frombuffer(array.array("f", [1, 2])).dtype == "float32"
    assert dlpx.frombuffer(array.array("q", [1, 2])).dtype == "int64"
    assert dlpx.frombuffer(array.array("H", [1])).dtype == "uint16"
    assert dlpx.frombuffer(np.zeros(2, np.complex64)).dtype == "complex64"
    assert dlpx.frombuffer(np.zeros(2, bool)).dtype == "bool"
    assert dlpx.frombuffer(b"").shape == (0,)
    assert dlpx.frombuffer(np.float32(3.0)).shape == ()


def test_frombuffer_errors():
    with pytest.raises(TypeError):
        dlpx.frombuffer(3)
    with pytest.raises(ValueError, match="multiple"):
        dlpx.frombuffer(b"abc", "int16")
    with pytest.raises(ValueError, match="outside"):
        dlpx.frombuffer(b"abcd", "int8", offset=5)
    with pytest.raises(ValueError, match="smaller"):
        dlpx.frombuffer(b"abcd", "int16", count=3)
    with pytest.raises(ValueError, match="explicit dtype"):
        dlpx.frombuffer(b"abcd", count=2)
    with pytest.raises(BufferError, match="big-endian"):
        dlpx.frombuffer(np.zeros(2, ">i4"))
    with pytest.raises(BufferError, match="contiguous"):
        dlpx.frombuffer(memoryview(np.zeros((4, 4))[:, ::2]), "uint8")
    assert dlpx.frombuffer(b"\x00" * 3, "float4_e2m1fn").shape == (6,)


def test_frombuffer_from_other_thread_release():
    import threading
    ba = bytearray(64)
    t = dlpx.frombuffer(ba, "float32")
    holder = [t.__dlpack__(max_version=(1, 0))]
    del t

    def drop():
        holder.clear()  # the capsule (and the last view) dies on this thread
        gc.collect()
    th = threading.Thread(target=drop)
    th.start()
    th.join()
    gc.collect()
    ba.append(1)


def test_stats_keys():
    s = dlpx.stats()
    assert set(s) == {"storages_live", "tensors_live", "exports_live", "foreign_deleters_run",
                      "borrowed_releases_run", "python_refs_leaked"}
