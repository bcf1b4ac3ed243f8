"""dlpx <-> JAX (CPU) with the real JAX: every dtype JAX exchanges, both
directions, zero copy where JAX shares memory, read-only legacy capsules,
copies where JAX cannot take a layout, and a NumPy -> dlpx -> PyTorch -> JAX
round trip with pointer checks.

What JAX 0.10 does, as probed: it exports (and asks for) legacy "dltensor"
capsules only, so everything it gives is read-only in dlpx; it imports
without copying only compact row-major (or transposed) data whose address is
64-byte aligned, and copies other aligned-or-not data; it has no DLPack form
for complex32, float6 or int2/int4, and its CPU buffers refuse sub-byte
(float4) imports."""

import gc

import pytest

np = pytest.importorskip("numpy")
jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
ml_dtypes = pytest.importorskip("ml_dtypes")

import dlpx  # noqa: E402

try:  # for the round trips (imported here, not in a test: it is big)
    import torch
except ImportError:  # pragma: no cover
    torch = None


def need_torch():
    if torch is None:
        pytest.skip("PyTorch is not installed")

pytestmark = pytest.mark.usefixtures("gc_baseline", "no_leaks", "x64")



@pytest.fixture
def x64():
    """64-bit types exist in JAX only with x64 enabled (else int64 -> int32)."""
    enable = getattr(jax, "enable_x64", None)
    if enable is None:  # JAX < 0.7
        from jax.experimental import enable_x64 as enable
    with enable(True):
        yield


JAX_DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
              "float16", "float32", "float64", "bfloat16", "complex64", "complex128",
              "float8_e3m4", "float8_e4m3", "float8_e4m3b11fnuz", "float8_e4m3fn",
              "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu"]

SHAPE = (4, 6)


def np_dtype(name):
    return np.dtype(getattr(ml_dtypes, name, None) or name)


def ref_values(name, shape=SHAPE, seed=0):
    """A NumPy array (ml_dtypes where needed) of exactly representable values."""
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.float64) + seed
    if name == "bool":
        v = (i % 3) == 0
    elif name.startswith(("int", "uint")):
        v = (i * 7 + 3) % 120
    elif name == "float8_e8m0fnu":
        v = 2.0 ** ((i % 9) - 4)
    elif name.startswith(("float8", "float4")):
        v = ((i % 9) - 4) * 0.5
    elif name.startswith("complex"):
        v = (i * 0.5 - 1) + 1j * (3 - i * 0.25)
    else:
        v = i * 0.25 - 2.5
    return v.astype(np_dtype(name)).reshape(shape)


def attempt(fn):
    """(fn(), None), or (None, "Type: message") if it raised.  The traceback
    is dropped here, so a failing assertion afterwards does not keep dlpx
    objects alive (which no_leaks would report as a second error)."""
    try:
        return fn(), None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def jptr(j):
    return j.unsafe_buffer_pointer()


def np_ptr(a):
    return a.__array_interface__["data"][0]


def dlpx_filled(name, shape=SHAPE):
    t = dlpx.empty(shape, name)
    t.numpy()[...] = ref_values(name, shape)
    return t


def equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(
        a.astype(np.complex128 if a.dtype.kind == "c" else np.float64),
        b.astype(np.complex128 if b.dtype.kind == "c" else np.float64))


# ---- JAX -> dlpx -------------------------------------------------------------------


@pytest.mark.parametrize("shape", [SHAPE, (), (0, 3), (1, 5, 1), (2, 3, 4)],
                         ids=["2d", "0d", "zero_size", "size1", "3d"])
@pytest.mark.parametrize("name", JAX_DTYPES)
def test_jax_to_dlpx(name, shape):
    ref = ref_values(name, shape)
    j = jnp.asarray(ref)
    assert j.dtype == np_dtype(name)
    t = dlpx.from_dlpack(j)
    assert t.dtype is getattr(dlpx, name) and t.dtype == j.dtype
    assert t.shape == shape
    assert t.readonly  # JAX arrays are immutable (and come in legacy capsules)
    assert t.is_contiguous()
    if j.size:
        assert t.data_ptr == jptr(j)  # zero copy
    arr = t.numpy()
    assert not arr.flags.writeable
    if j.size:
        assert np_ptr(arr) == jptr(j)
    assert equal(arr, ref)
    with pytest.raises(ValueError):
        t.copy_(dlpx.zeros(shape, name))  # dlpx will not write JAX's buffer


def test_jax_data_outlives_the_array():
    ref = ref_values("float32")
    j = jnp.asarray(ref)
    ptr = jptr(j)
    t = dlpx.from_dlpack(j)
    del j
    gc.collect()
    assert t.data_ptr == ptr
    assert equal(t.numpy(), ref)
    assert equal(t.copy().numpy(), ref)


def test_jax_float4_is_packed():
    vals = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.5, -1, -6, 0, 1, 2, 3, 4]
    ref = np.array(vals, dtype=ml_dtypes.float4_e2m1fn).reshape(2, 8)
    j = jnp.asarray(ref)
    t = dlpx.from_dlpack(j)
    assert t.dtype is dlpx.float4_e2m1fn
    assert t.itemsize == 0.5 and t.nbytes == 8  # two elements per byte
    assert t.readonly and t.data_ptr == jptr(j)
    assert equal(t.numpy(), ref)  # unpacked copy for NumPy
    with pytest.raises(BufferError):
        t.numpy(copy=False)
    assert equal(t[::-1, ::2].numpy(), ref[::-1, ::2])
    assert equal(t.T.numpy(), ref.T)


def test_jax_slices_come_as_copies_jax_made():
    """JAX arrays are always compact; a sliced JAX array is a new buffer."""
    j = jnp.arange(24.0).reshape(4, 6)
    s = j[::2, 1::3]
    t = dlpx.from_dlpack(s)
    assert t.shape == (2, 2) and t.is_contiguous()
    assert equal(t.numpy(), np.asarray(j)[::2, 1::3])


def test_jax_capsule_is_readonly_and_consumed_once():
    j = jnp.arange(6.0).reshape(2, 3)
    cap = j.__dlpack__()
    t = dlpx.from_dlpack(cap)
    assert t.readonly and t.data_ptr == jptr(j)
    with pytest.raises(ValueError):
        dlpx.from_dlpack(cap)
    assert equal(t.numpy(), np.asarray(j))


def test_jax_to_dlpx_copy_keyword():
    ref = ref_values("float32")
    j = jnp.asarray(ref)
    same = dlpx.from_dlpack(j, copy=False)
    assert same.data_ptr == jptr(j) and same.readonly
    del same
    dup = dlpx.from_dlpack(j, copy=True)
    assert dup.data_ptr != jptr(j)
    assert equal(dup.numpy(), ref)
    readonly = dup.readonly
    del dup
    # dlpx asked JAX for a copy and got one: that copy is the caller's to
    # write, even though it came in a legacy capsule
    assert not readonly, "dlpx.from_dlpack(jax_array, copy=True) returned a read-only tensor"


def test_jax_to_dlpx_to_torch_copies_readonly():
    need_torch()
    j = jnp.asarray(ref_values("float32"))
    t = dlpx.from_dlpack(j)
    x = t.torch()
    assert x.data_ptr() != jptr(j)  # PyTorch could write JAX's immutable buffer: copied
    assert torch.equal(x, torch.from_numpy(ref_values("float32")))
    with pytest.raises(BufferError):
        t.torch(copy=False)


# ---- dlpx -> JAX ---------------------------------------------------------------------


@pytest.mark.parametrize("how", ["method", "jax.dlpack", "jnp"])
@pytest.mark.parametrize("shape", [SHAPE, (), (0, 3), (1, 5, 1), (2, 3, 4)],
                         ids=["2d", "0d", "zero_size", "size1", "3d"])
@pytest.mark.parametrize("name", JAX_DTYPES)
def test_dlpx_to_jax_zero_copy(name, shape, how):
    t = dlpx_filled(name, shape)
    assert t.data_ptr % 64 == 0  # dlpx allocations are 64-byte aligned ...
    if how == "method":
        j = t.jax()
    elif how == "jax.dlpack":
        j = jax.dlpack.from_dlpack(t)
    else:
        j = jnp.from_dlpack(t)
    assert j.dtype == np_dtype(name)
    assert j.shape == shape
    if j.size:
        assert jptr(j) == t.data_ptr  # ... so JAX takes them without copying
    assert equal(j, ref_values(name, shape))


def test_dlpx_to_jax_shares_writes():
    t = dlpx_filled("float32")
    j = t.jax()
    assert jptr(j) == t.data_ptr
    t.numpy()[1, 2] = 1234.0  # JAX assumes immutability, but the memory is one
    assert float(j[1, 2]) == 1234.0
    assert float((j + 1)[1, 2]) == 1235.0


def test_jax_releases_dlpx_export():
    before = dlpx.stats()
    t = dlpx_filled("float64")
    j = t.jax()
    assert dlpx.stats()["exports_live"] == before["exports_live"] + 1
    del t
    gc.collect()
    assert equal(j, ref_values("float64"))  # data valid while JAX holds it
    assert float(jnp.sum(j)) == float(ref_values("float64").sum())
    del j
    gc.collect()
    after = dlpx.stats()
    assert after["exports_live"] == before["exports_live"]
    assert after["storages_live"] == before["storages_live"]


def test_jax_releases_borrowed_python_memory_from_another_thread():
    import threading

    a = _aligned_numpy((32,), np.float32)
    a[...] = np.arange(32, dtype=np.float32)
    before = dlpx.stats()["borrowed_releases_run"]
    t = dlpx.frombuffer(memoryview(a))  # memory a Python object owns
    holder = [t.jax()]
    assert jptr(holder[0]) == np_ptr(a)  # aligned and compact: JAX shares it
    del t, a
    gc.collect()
    assert float(jnp.sum(holder[0])) == float(np.arange(32).sum())  # still valid
    th = threading.Thread(target=holder.clear)
    th.start()
    th.join()
    gc.collect()
    assert dlpx.stats()["borrowed_releases_run"] == before + 1


LAYOUTS = {
    "transposed": lambda x: x.T,
    "negative": lambda x: x[::-1, ::-2],
    "step": lambda x: x[::2, 1::3],
    "offset_unaligned": lambda x: x[1:, 1:],
    "broadcast": lambda x: x[1].broadcast_to((3, 6)) if isinstance(x, dlpx.Tensor)
    else np.broadcast_to(x[1], (3, 6)),
    "3d_permuted": lambda x: x.reshape(2, 2, 6).permute(2, 0, 1) if isinstance(x, dlpx.Tensor)
    else x.reshape(2, 2, 6).transpose(2, 0, 1),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", ["bool", "int64", "float32", "bfloat16", "complex128",
                                  "float8_e4m3fn"])
def test_dlpx_to_jax_layouts_copy(name, layout):
    t = dlpx_filled(name)
    v = LAYOUTS[layout](t)
    expect = LAYOUTS[layout](ref_values(name))
    j = v.jax()  # copy=None: a copy where JAX cannot take the layout
    assert j.shape == v.shape
    assert equal(j, expect)
    j2 = v.jax(copy=True)
    assert jptr(j2) != v.data_ptr and equal(j2, expect)
    # copy=False: either JAX aliases the memory (it takes transposes of
    # aligned data) or dlpx refuses; never a silent copy.
    try:
        j3 = v.jax(copy=False)
    except BufferError:
        pass
    else:
        assert jptr(j3) == v.data_ptr and equal(j3, expect)


def test_dlpx_to_jax_aligned_view_is_zero_copy():
    t = dlpx_filled("float32", (8, 16))
    v = t[2:]  # 2 rows of 16 float32: 128 bytes in, still 64-byte aligned
    assert v.is_contiguous() and v.data_ptr % 64 == 0
    j = v.jax()
    assert jptr(j) == v.data_ptr
    assert equal(j, ref_values("float32", (8, 16))[2:])


def test_dlpx_unaligned_view_to_jax():
    t = dlpx_filled("float32", (8, 16))
    v = t.reshape(-1)[3:]  # C-contiguous, 12 bytes in
    assert v.is_contiguous() and v.data_ptr % 64 != 0
    j = v.jax()  # JAX copies unaligned data itself; the values must be right
    assert equal(j, ref_values("float32", (8, 16)).reshape(-1)[3:])


@pytest.mark.parametrize("name", ["float32", "int8", "bfloat16"])
def test_readonly_to_jax(name):
    t = dlpx_filled(name).as_readonly()
    j = t.jax()  # JAX asks for a legacy capsule, which cannot carry read-only data
    assert jptr(j) != t.data_ptr
    assert equal(j, ref_values(name))
    with pytest.raises(BufferError):
        t.jax(copy=False)
    with pytest.raises(BufferError):
        jax.dlpack.from_dlpack(t)  # dlpx refuses to hand out read-only data as writable


def test_jax_round_trip_through_dlpx():
    j = jnp.asarray(ref_values("float32"))
    t = dlpx.from_dlpack(j)  # read-only view of JAX's buffer
    j2 = t.jax()
    assert equal(j2, np.asarray(j))


def test_complex32_is_refused_by_jax():
    t = dlpx.zeros(4, "complex32")
    with pytest.raises((BufferError, TypeError, jax.errors.JaxRuntimeError)):
        t.jax()


@pytest.mark.parametrize("packing", ["packed", "padded"])
def test_dlpx_float4_to_jax(packing):
    """JAX has float4_e2m1fn arrays, but its CPU buffers take no sub-byte
    DLPack import; with copy=None .jax() should still deliver the values."""
    ref = ref_values("float4_e2m1fn")
    padded = dlpx.from_dlpack(ref.copy())  # ml_dtypes: one element per byte
    t = padded.copy() if packing == "padded" else dlpx.zeros(SHAPE, "float4_e2m1fn")
    if packing == "packed":
        t.copy_(padded)
        assert t.itemsize == 0.5
    j, err = attempt(t.jax)
    del t, padded
    assert err is None, f"{packing} float4_e2m1fn .jax() failed: {err}"
    assert j.dtype == np_dtype("float4_e2m1fn")
    assert equal(j, ref)


# ---- ndim ---------------------------------------------------------------------------------


def test_jax_ndim_up_to_dlpx_limit():
    shape = (2,) + (1,) * 125 + (3, 2)  # 128 dims, dlpx's limit (JAX takes them)
    t = dlpx.zeros(shape, "int16")
    t.reshape(12).numpy()[...] = np.arange(12, dtype=np.int16)  # NumPy stops at 64 dims
    j = t.jax()
    assert j.ndim == 128 and j.shape == shape and jptr(j) == t.data_ptr
    assert equal(np.asarray(j.reshape(12)), np.arange(12, dtype=np.int16))
    back = dlpx.from_dlpack(j)
    assert back.ndim == 128 and back.data_ptr == t.data_ptr and back.readonly
    assert equal(back.reshape(12).numpy(), np.arange(12, dtype=np.int16))
    with pytest.raises(BufferError):
        dlpx.from_dlpack(jnp.zeros((1,) * 129))


# ---- NumPy -> dlpx -> PyTorch -> JAX -> dlpx -> NumPy ---------------------------------------


def _aligned_numpy(shape, dtype, align=64):
    dt = np.dtype(dtype)
    n = int(np.prod(shape)) * dt.itemsize
    raw = np.zeros(n + align, dtype=np.uint8)
    off = (-np_ptr(raw)) % align
    return raw[off:off + n].view(dt).reshape(shape)


def test_round_trip_numpy_dlpx_torch_jax_and_back():
    need_torch()
    a = _aligned_numpy((8, 16), np.float32)
    a[...] = np.arange(128, dtype=np.float32).reshape(8, 16)
    ptr = np_ptr(a)

    t1 = dlpx.from_dlpack(a)  # NumPy -> dlpx
    assert t1.data_ptr == ptr and not t1.readonly
    x = torch.from_dlpack(t1)  # dlpx -> PyTorch
    assert x.data_ptr() == ptr
    x[0, 0] = -1.0  # PyTorch writes, NumPy sees
    assert a[0, 0] == -1.0
    j = jax.dlpack.from_dlpack(x)  # PyTorch -> JAX (aligned, compact: shared)
    assert jptr(j) == ptr
    t2 = dlpx.from_dlpack(j)  # JAX -> dlpx: read-only (legacy capsule)
    assert t2.data_ptr == ptr and t2.readonly
    b = t2.numpy()  # dlpx -> NumPy: read-only view
    assert np_ptr(b) == ptr and not b.flags.writeable
    assert np.array_equal(b, a)
    j2 = t1.jax()  # dlpx (writable, aligned, C-contiguous) -> JAX: shared
    assert jptr(j2) == ptr
    y = t2.torch()  # read-only to PyTorch: a copy
    assert y.data_ptr() != ptr and torch.equal(y, x)
    a[3, 4] = 99.0  # one memory behind every zero-copy holder
    for view in (x, t1.numpy(), b, np.asarray(j), np.asarray(j2)):
        assert float(view[3, 4]) == 99.0
    assert float(y[3, 4]) != 99.0


def test_round_trip_dlpx_allocated_through_all():
    need_torch()
    t = dlpx_filled("bfloat16", (16, 8))
    ptr = t.data_ptr
    x = t.torch()
    assert x.data_ptr() == ptr and x.dtype == torch.bfloat16
    j = jax.dlpack.from_dlpack(x)
    assert jptr(j) == ptr and j.dtype == jnp.bfloat16
    back = dlpx.from_dlpack(j)
    assert back.data_ptr == ptr and back.dtype is dlpx.bfloat16
    arr = back.numpy()
    assert np_ptr(arr) == ptr and arr.dtype == np_dtype("bfloat16")
    assert equal(arr, ref_values("bfloat16", (16, 8)))


def test_unaligned_numpy_through_dlpx_to_jax():
    a = _aligned_numpy((40,), np.float32)[1:]  # 4 bytes past a 64-byte boundary
    a[...] = np.arange(39, dtype=np.float32)
    t = dlpx.from_dlpack(a)
    j = t.jax()  # JAX copies (unaligned): assert only the values
    assert equal(j, a)
    a[0] = 7.0
    assert np_ptr(a) == t.data_ptr
