"""One test per framework quirk of dlpx._quirks, named after the upstream
issue that describes it, with the real framework."""

import os

import pytest

import dlpx
from dlpx import _quirks

np = pytest.importorskip("numpy")


def test_quirks_live_in_one_module():
    """No other module of the package knows a framework's module name."""
    pkg = os.path.dirname(dlpx.__file__)
    for name in os.listdir(pkg):
        if name.endswith(".py") and name not in ("_quirks.py", "_convert.py", "_dtypes.py"):
            text = open(os.path.join(pkg, name)).read()
            assert '"torch"' not in text and "'torch'" not in text, name
            assert "startswith(\"torch" not in text, name


def test_pytorch_188023_negative_strides_are_refused_to_pytorch():
    torch = pytest.importorskip("torch")
    t = dlpx.from_dlpack(np.arange(8.0))[::-2]
    with pytest.raises(BufferError, match="188023"):
        torch.from_dlpack(t)
    x = torch.from_dlpack(t, copy=True)  # a copy is fine
    assert x.tolist() == [7.0, 5.0, 3.0, 1.0]
    assert t.torch().tolist() == [7.0, 5.0, 3.0, 1.0]  # .torch() copies by itself
    with pytest.raises(BufferError):
        t.torch(copy=False)
    assert np.from_dlpack(t).tolist() == [7.0, 5.0, 3.0, 1.0]  # other consumers: zero copy


def test_pytorch_188554_readonly_data_reaches_pytorch_only_as_a_copy():
    torch = pytest.importorskip("torch")
    data = bytearray(range(8))
    ro = dlpx.frombuffer(data, "uint8").as_readonly()
    x = torch.from_dlpack(ro)
    assert x.data_ptr() != ro.data_ptr and x.tolist() == list(range(8))
    x[0] = 42
    assert data[0] == 0
    with pytest.raises(BufferError, match="188554"):
        torch.from_dlpack(ro, copy=False)
    # the versioned capsule other consumers get still says read-only, zero copy
    a = np.from_dlpack(ro)
    assert not a.flags.writeable and a.ctypes.data == ro.data_ptr
    # JAX's immutable buffers (read-only because their legacy capsule cannot
    # say otherwise) are copied for PyTorch too
    jnp = pytest.importorskip("jax.numpy")
    j = jnp.arange(4.0)
    tj = dlpx.from_dlpack(j)
    assert torch.from_dlpack(tj).data_ptr() != tj.data_ptr


def test_pytorch_56058_negative_and_conjugate_bits_are_resolved():
    torch = pytest.importorskip("torch")
    z = torch.tensor([1 + 2j, -3 + 4j], dtype=torch.complex128)
    neg = z.conj().imag
    assert _quirks.torch_prepare(neg, None) is not neg
    assert _quirks.torch_prepare(neg, None).tolist() == [-2.0, -4.0]
    assert np.from_dlpack(dlpx.from_dlpack(neg)).tolist() == [-2.0, -4.0]
    assert np.from_dlpack(dlpx.from_dlpack(z.conj())).tolist() == [1 - 2j, -3 - 4j]
    with pytest.raises(BufferError):
        dlpx.from_dlpack(neg, copy=False)
    plain = torch.arange(3.0)
    assert _quirks.torch_prepare(plain, False) is plain  # nothing to resolve: no copy


def test_pytorch_150691_export_failures_are_buffererror_and_the_lane_is_guarded():
    torch = pytest.importorskip("torch")
    lane = _quirks.exchange_lane(torch.Tensor)
    if lane is None:
        pytest.skip("this PyTorch has no DLPack exchange API")
    addr, guard = lane
    assert addr and guard(torch.ones(2)) and not guard(torch.ones(2, requires_grad=True))
    assert not guard(torch.ones(2, dtype=torch.complex64).conj())

    class Sub(torch.Tensor):
        pass

    assert _quirks.exchange_lane(Sub) is None  # subclasses go through __dlpack__
    with pytest.raises(BufferError):
        dlpx.from_dlpack(torch.ones(3).to_sparse())  # RuntimeError in PyTorch
    with pytest.raises(BufferError, match="gradient"):
        dlpx.from_dlpack(torch.ones(3, requires_grad=True))


def test_pytorch_consumer_is_recognised_by_package_not_prefix():
    pytest.importorskip("torch")
    import types

    def frame_of(module):
        ns = {"__name__": module}
        exec("import sys\ndef f():\n    return sys._getframe()", ns)
        return ns["f"]()

    assert _quirks.torch_is_caller(frame_of("torch"))
    assert _quirks.torch_is_caller(frame_of("torch.utils.dlpack"))
    for other in ("torchvision", "torchvision.io", "torchhelpers", "mytorch", "__main__"):
        assert not _quirks.torch_is_caller(frame_of(other)), other
    assert not _quirks.torch_is_caller(None)
    assert isinstance(types, object)


def test_numpy_31256_ml_dtypes_arrays_import_through_their_bits():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    a = np.array([1.5, -2.0, 3.25], dtype=ml_dtypes.bfloat16)
    with pytest.raises(BufferError):
        np.from_dlpack(a)  # NumPy itself refuses to export it
    raw, name = _quirks.ml_dtypes_raw(a)
    assert raw.dtype == np.uint16 and name == "bfloat16"
    t = dlpx.from_dlpack(a)
    assert t.dtype == dlpx.bfloat16 and t.data_ptr == a.ctypes.data
    assert t.numpy().tolist() == [1.5, -2.0, 3.25]
    assert _quirks.ml_dtypes_raw(np.arange(3)) is None


def test_jax_29810_unaligned_data_is_copied_or_refused():
    jax = pytest.importorskip("jax")
    t = dlpx.zeros(32, "float32")
    assert t.data_ptr % _quirks.JAX_ALIGNMENT == 0
    j = t.jax(copy=False)  # aligned: JAX aliases it
    assert not _quirks.jax_copied(j, t.data_ptr)
    u = t[1:]  # 4 bytes in: JAX would copy
    assert u.data_ptr % _quirks.JAX_ALIGNMENT
    with pytest.raises(BufferError, match="29810"):
        u.jax(copy=False)
    assert u.jax().shape == (31,)
    assert jax.dlpack.from_dlpack(t).unsafe_buffer_pointer() == t.data_ptr


def test_numpy_20742_legacy_only_numpy_keeps_writability_and_readonly_data():
    from conftest import NUMPY_VERSIONED
    a = np.arange(6.0)
    t = dlpx.from_dlpack(a)
    assert not t.readonly and t.data_ptr == a.ctypes.data
    ro = np.arange(6.0)
    ro.flags.writeable = False
    r = dlpx.from_dlpack(ro)
    assert r.readonly and r.data_ptr == ro.ctypes.data
    if NUMPY_VERSIONED:
        assert _quirks.numpy_readonly_buffer(ro) is None  # nothing to work around
        assert not _quirks.legacy_capsule_writable(a)
    else:
        assert _quirks.legacy_capsule_writable(a)
        assert _quirks.numpy_readonly_buffer(ro) is not None
        with pytest.raises(BufferError):
            ro.__dlpack__()  # what NumPy itself does


def test_numpy_28599_tensor_numpy_keeps_writability_on_any_numpy():
    t = dlpx.zeros((2, 3), "float32")
    for arr in (t.numpy(), _quirks.numpy_array(t, np.float32)):
        assert arr.flags.writeable and arr.ctypes.data == t.data_ptr
        arr[0, 0] = 5
        assert t.numpy()[0, 0] == 5
    ro = t.as_readonly()
    for arr in (ro.numpy(), _quirks.numpy_array(ro, np.float32)):
        assert not arr.flags.writeable and arr.ctypes.data == ro.data_ptr
    v = t[:, ::-2]
    arr = _quirks.numpy_array(v, np.float32)  # strided views too, zero copy
    assert arr.strides == v.byte_strides and np.array_equal(arr, v.numpy())
    expect = v.numpy().copy()
    del t, v, ro
    import gc
    gc.collect()  # the array keeps the tensor alive
    assert np.array_equal(arr, expect)
    empty = _quirks.numpy_array(dlpx.zeros((0, 3)), np.float32)
    assert empty.shape == (0, 3) and empty.flags.writeable


def test_jax_17784_layouts_that_are_not_row_major_reach_jax_right():
    jax = pytest.importorskip("jax")
    t = dlpx.zeros((3, 4), "float32")
    t.copy_(dlpx.from_dlpack(np.arange(12, dtype=np.float32).reshape(3, 4)))
    v = t.T
    j = v.jax()
    for i in range(4):  # indexing, not only printing, gives the right values
        assert np.asarray(j[i]).tolist() == v.numpy()[i].tolist()
    if not _quirks.jax_honours_strides():
        with pytest.raises(BufferError, match="17784"):
            v.jax(copy=False)
    else:
        assert jax.dlpack.from_dlpack(v).unsafe_buffer_pointer() == v.data_ptr
