"""dlpx <-> NumPy with the real NumPy: every NumPy dtype DLPack carries, both
directions, zero copy, shared writes, layouts, read-only data, capsules,
copy semantics and lifetimes."""

import gc
import threading

import pytest

np = pytest.importorskip("numpy")

import dlpx  # noqa: E402
from conftest import (NUMPY_IMPORT_WRITABLE, NUMPY_VERSIONED, layouts,  # noqa: E402
                      needs_versioned_numpy)

pytestmark = pytest.mark.usefixtures("gc_baseline", "no_leaks")


NUMPY_DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                "uint64", "float16", "float32", "float64", "complex64", "complex128"]

SHAPE = (4, 6)


def ref_values(name, shape=SHAPE, seed=0):
    """Distinct, exactly representable values of dtype |name|."""
    n = int(np.prod(shape))
    i = np.arange(n) + seed
    if name == "bool":
        v = (i % 3) == 0
    elif name.startswith(("int", "uint")):
        v = (i * 7 + 3) % 120
    elif name.startswith("float"):
        v = i * 0.25 - 2.5
    else:
        v = (i * 0.5 - 1) + 1j * (3 - i * 0.25)
    return np.asarray(v).astype(name).reshape(shape)


def other_values(name, shape):
    """Values that differ elementwise from ref_values (to detect writes)."""
    if name == "bool":
        return ~ref_values(name, shape)
    return ref_values(name, shape, seed=1)


def np_ptr(a):
    return a.__array_interface__["data"][0]


def same_layout(shape, strides_a, strides_b):
    """Strides equal wherever they matter (extent > 1, with elements)."""
    if 0 in shape:
        return True
    return all(e <= 1 or sa == sb for e, sa, sb in zip(shape, strides_a, strides_b))


LAYOUTS = layouts(cols=6, negative_step=-2)


def has_zero_stride(shape, byte_strides):
    return any(e > 1 and s == 0 for e, s in zip(shape, byte_strides))


# ---- dtypes ------------------------------------------------------------------


@pytest.mark.parametrize("name", NUMPY_DTYPES)
def test_dtype_objects_match_numpy(name):
    dt = getattr(dlpx, name)
    assert dlpx.dtype(np.dtype(name)) is dt
    assert dlpx.dtype(getattr(np, name)) is dt
    assert dt == np.dtype(name) and dt == name and dt == getattr(np, name)
    assert dt != np.dtype("int8" if name != "int8" else "uint8")
    assert dt.numpy == np.dtype(name)
    assert dt.itemsize == np.dtype(name).itemsize


# ---- NumPy -> dlpx -------------------------------------------------------------


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", NUMPY_DTYPES)
def test_numpy_to_dlpx(name, layout):
    base = ref_values(name).copy()
    view = LAYOUTS[layout](base)
    t = dlpx.from_dlpack(view)
    assert t.dtype == view.dtype and t.dtype is getattr(dlpx, name)
    assert t.shape == view.shape
    assert t.device == "cpu"
    assert t.readonly == (not view.flags.writeable)
    assert same_layout(view.shape, t.byte_strides, view.strides)
    if view.size:
        assert t.data_ptr == np_ptr(view)  # zero copy
    # dlpx's own C copy reads the shared memory
    assert np.array_equal(np.from_dlpack(t.copy()), view)
    if not view.flags.writeable or has_zero_stride(view.shape, view.strides) or not view.size:
        return
    # a write through NumPy is seen by dlpx ...
    new = other_values(name, view.shape)
    view[...] = new
    assert np.array_equal(np.from_dlpack(t.copy()), new)
    # ... and a write through dlpx is seen by NumPy
    t.copy_(dlpx.from_dlpack(ref_values(name, view.shape)))
    assert np.array_equal(view, ref_values(name, view.shape))


@pytest.mark.parametrize("name", NUMPY_DTYPES)
def test_numpy_writable_zero_stride_imports_zero_copy(name):
    row = ref_values(name, (6,))
    view = np.lib.stride_tricks.as_strided(row, shape=(3, 6), strides=(0, row.itemsize),
                                           writeable=True)
    t = dlpx.from_dlpack(view)
    assert not t.readonly
    assert t.strides == (0, 1)
    assert t.data_ptr == np_ptr(row)
    row[0] = other_values(name, (6,))[0]
    assert np.array_equal(np.from_dlpack(t.copy()), np.broadcast_to(row, (3, 6)))


# ---- dlpx -> NumPy -------------------------------------------------------------


def dlpx_filled(name, shape=SHAPE):
    t = dlpx.empty(shape, name)
    t.numpy()[...] = ref_values(name, shape)
    return t


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", NUMPY_DTYPES)
def test_dlpx_to_numpy(name, layout):
    base = dlpx_filled(name)
    v = LAYOUTS[layout](base)
    expect = LAYOUTS[layout](ref_values(name))
    for arr, via_numpy in ((v.numpy(), False), (np.from_dlpack(v), True), (np.asarray(v), False)):
        assert arr.dtype == np.dtype(name)
        assert arr.shape == v.shape
        assert np.array_equal(arr, expect)
        # NumPy < 2.2.5 marks every DLPack import read-only (numpy#28599);
        # dlpx's own conversions keep the tensor's writability on any NumPy
        assert arr.flags.writeable == (NUMPY_IMPORT_WRITABLE or not via_numpy)
        assert same_layout(v.shape, arr.strides, v.byte_strides)
        if v.size:
            assert np_ptr(arr) == v.data_ptr  # zero copy
    if not v.size or has_zero_stride(v.shape, v.byte_strides):
        return
    # a write through NumPy is seen by dlpx (read back by dlpx's C copy)
    new = other_values(name, v.shape)
    arr = v.numpy()
    arr[...] = new
    assert np.array_equal(np.from_dlpack(v.copy()), new)
    # and one through dlpx is seen by NumPy
    v.copy_(dlpx.from_dlpack(expect.copy()))
    assert np.array_equal(arr, expect)


@pytest.mark.parametrize("name", NUMPY_DTYPES)
def test_dlpx_to_numpy_values_survive_owner(name):
    arr = dlpx_filled(name).numpy()  # the dlpx tensor is dropped at once
    gc.collect()
    assert np.array_equal(arr, ref_values(name))
    assert dlpx.stats()["storages_live"] >= 1  # kept by the array


def test_numpy_source_outlives_its_array():
    a = ref_values("float64").copy()
    t = dlpx.from_dlpack(a)
    ptr = np_ptr(a)
    del a
    gc.collect()
    assert t.data_ptr == ptr
    assert np.array_equal(np.from_dlpack(t.copy()), ref_values("float64"))
    arr = t.numpy()
    del t
    gc.collect()
    assert np_ptr(arr) == ptr
    assert np.array_equal(arr, ref_values("float64"))


# ---- copy semantics ------------------------------------------------------------


def test_numpy_copy_keyword_semantics():
    t = dlpx_filled("float32")
    cases = [(t.numpy(), True), (t.numpy(copy=False), True), (t.numpy(copy=True), False),
             (np.asarray(t), True), (np.array(t), False), (np.asarray(t, copy=False), True)]
    if NUMPY_VERSIONED:  # np.from_dlpack has copy= from NumPy 2.1 on
        cases += [(np.from_dlpack(t, copy=True), False), (np.from_dlpack(t, copy=False), True)]
    for arr, shared in cases:
        assert (np_ptr(arr) == t.data_ptr) is shared
        assert arr.flags.writeable
        assert np.array_equal(arr, ref_values("float32"))


@pytest.mark.parametrize("writable", [True, False], ids=["writable", "readonly"])
def test_from_dlpack_copy_keyword(writable):
    a = ref_values("int32").copy()
    a.flags.writeable = writable
    same = dlpx.from_dlpack(a, copy=False)
    assert same.data_ptr == np_ptr(a) and same.readonly == (not writable)
    dup = dlpx.from_dlpack(a, copy=True)
    assert dup.data_ptr != np_ptr(a)
    assert not dup.readonly  # a private copy is the caller's to write
    assert np.array_equal(dup.numpy(), a)
    dup.numpy()[0, 0] = 99
    assert a[0, 0] != 99
    cpu = dlpx.from_dlpack(a, device="cpu")
    assert cpu.data_ptr == np_ptr(a)


def test_copy_of_negative_strides_is_right():
    a = ref_values("float64")
    t = dlpx.from_dlpack(a)[::-1, ::-3]
    assert np.array_equal(t.numpy(copy=True), a[::-1, ::-3])
    assert np.array_equal(t.copy(order="F").numpy(), a[::-1, ::-3])
    assert t.copy(order="F").numpy().flags.f_contiguous


# ---- read-only -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bool", "int16", "float64", "complex64"])
def test_readonly_numpy_to_dlpx_and_back(name):
    a = ref_values(name).copy()
    a.flags.writeable = False
    t = dlpx.from_dlpack(a)
    assert t.readonly
    assert t.data_ptr == np_ptr(a)
    with pytest.raises(ValueError):
        t.copy_(dlpx.from_dlpack(ref_values(name)))
    with pytest.raises(ValueError):
        t[0] = dlpx.from_dlpack(ref_values(name)[0])
    arrs = [t.numpy(), np.asarray(t), t[::-1].numpy(), t.T.numpy()]
    if NUMPY_VERSIONED:
        arrs.append(np.from_dlpack(t))
    else:  # legacy DLPack cannot say read-only: such a NumPy gets none
        with pytest.raises(BufferError):
            np.from_dlpack(t)
    for arr in arrs:
        assert not arr.flags.writeable
        assert np.shares_memory(arr, a)
    with pytest.raises(ValueError):
        t.numpy()[0, 0] = a[1, 1]
    # views of a read-only tensor stay read-only
    assert t[1:].readonly and t.T.readonly and t.reshape(-1).readonly
    # an explicit copy is writable
    c = t.numpy(copy=True)
    assert c.flags.writeable and not np.shares_memory(c, a)


def test_dlpx_readonly_to_numpy():
    t = dlpx_filled("float32").as_readonly()
    arrs = [t.numpy(), np.asarray(t)]
    if NUMPY_VERSIONED:
        arrs.append(np.from_dlpack(t))
    else:  # legacy DLPack cannot say read-only: such a NumPy gets none
        with pytest.raises(BufferError):
            np.from_dlpack(t)
    for arr in arrs:
        assert not arr.flags.writeable
        assert np_ptr(arr) == t.data_ptr
    arr = t.numpy(copy=True)
    assert arr.flags.writeable and np_ptr(arr) != t.data_ptr


def test_numpy_broadcast_to_is_readonly_in_dlpx():
    t = dlpx.from_dlpack(np.broadcast_to(np.arange(3.0), (4, 3)))
    assert t.readonly and t.strides == (0, 1)


# ---- capsules -----------------------------------------------------------------------


def test_numpy_legacy_capsule_is_readonly():
    a = ref_values("float32").copy()
    cap = a.__dlpack__()
    t = dlpx.from_dlpack(cap)
    assert t.readonly  # a legacy capsule cannot say whether writes are allowed
    assert t.data_ptr == np_ptr(a)
    a[0, 0] = 42  # NumPy still owns and writes it; dlpx sees that
    assert t.numpy()[0, 0] == 42
    assert not t.numpy().flags.writeable


@needs_versioned_numpy
def test_numpy_versioned_capsule_keeps_writability():
    a = ref_values("float32").copy()
    t = dlpx.from_dlpack(a.__dlpack__(max_version=(1, 0)))
    assert not t.readonly and t.data_ptr == np_ptr(a)
    a.flags.writeable = False
    t = dlpx.from_dlpack(a.__dlpack__(max_version=(1, 0)))
    assert t.readonly


class LegacyOnlyProducer:
    """A producer older than DLPack 1.0: __dlpack__ takes only stream."""

    def __init__(self, arr):
        self.arr = arr

    def __dlpack__(self, stream=None):
        return self.arr.__dlpack__()

    def __dlpack_device__(self):
        return self.arr.__dlpack_device__()


def test_legacy_only_producer_imports_readonly():
    a = ref_values("int64").copy()
    t = dlpx.from_dlpack(LegacyOnlyProducer(a))
    assert t.readonly and t.data_ptr == np_ptr(a)
    t2 = dlpx.from_dlpack(LegacyOnlyProducer(a), copy=True)
    assert not t2.readonly and t2.data_ptr != np_ptr(a)
    assert np.array_equal(t2.numpy(), a)


@pytest.mark.parametrize("kind", ["numpy_legacy", "numpy_versioned", "dlpx_legacy",
                                  "dlpx_versioned"])
def test_capsule_consumed_twice_is_refused(kind):
    a = ref_values("float64").copy()
    if kind == "numpy_legacy":
        cap = a.__dlpack__()
    elif kind == "numpy_versioned":
        if not NUMPY_VERSIONED:
            pytest.skip("this NumPy speaks only legacy DLPack (NumPy < 2.1)")
        cap = a.__dlpack__(max_version=(1, 0))
    else:
        src = dlpx.from_dlpack(a)
        cap = src.__dlpack__() if kind == "dlpx_legacy" else src.__dlpack__(max_version=(1, 3))
        del src
    t = dlpx.from_dlpack(cap)
    with pytest.raises(ValueError):
        dlpx.from_dlpack(cap)
    assert t.data_ptr == np_ptr(a)  # the failed second use harmed nothing
    assert np.array_equal(t.numpy(), a)


def test_unconsumed_capsules_release_their_data():
    t = dlpx_filled("float32")
    before = dlpx.stats()["exports_live"]
    caps = [t.__dlpack__(), t.__dlpack__(max_version=(1, 3))]
    assert dlpx.stats()["exports_live"] == before + 2
    del caps
    gc.collect()
    assert dlpx.stats()["exports_live"] == before


# ---- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("arr", [
    pytest.param(lambda: np.arange(3.0).astype(">f8"), id="big_endian"),
    pytest.param(lambda: np.array(["a", "b"]), id="str"),
    pytest.param(lambda: np.zeros(3, "V2"), id="void"),
    pytest.param(lambda: np.zeros(3, "datetime64[s]"), id="datetime"),
    pytest.param(lambda: np.zeros(3, [("a", "i4"), ("b", "f4")]), id="structured"),
    pytest.param(lambda: np.zeros(3, object), id="object"),
])
def test_numpy_arrays_without_dlpack_dtype_are_refused(arr):
    with pytest.raises(BufferError):
        dlpx.from_dlpack(arr())


def test_complex32_has_no_numpy_form():
    try:
        import ml_dtypes
    except ImportError:
        ml_dtypes = None
    if hasattr(ml_dtypes, "complex32"):
        pytest.skip("ml_dtypes provides complex32: see test_interop_mldtypes.py")
    src = dlpx.empty(4, "complex32")
    with pytest.raises(BufferError):
        src.numpy()


# ---- ndim ------------------------------------------------------------------------------------


def test_numpy_max_ndim_both_ways():
    shape = (2, 1, 3) + (1,) * 59 + (2, 2)  # 64 dims, NumPy's limit
    a = np.arange(int(np.prod(shape)), dtype=np.int16).reshape(shape)
    a = a[::-1, :, ::2]
    t = dlpx.from_dlpack(a)
    assert t.ndim == 64 and t.shape == a.shape
    assert t.data_ptr == np_ptr(a)
    assert same_layout(a.shape, t.byte_strides, a.strides)
    back = t.numpy()
    assert back.ndim == 64 and np_ptr(back) == np_ptr(a)
    assert np.array_equal(back, a)
    w = dlpx.zeros((1,) * 64, "uint8")
    assert w.numpy().ndim == 64


def test_more_dims_than_numpy_is_an_error_not_a_crash():
    t = dlpx.zeros((1,) * 65, "float32")
    with pytest.raises((RuntimeError, BufferError, ValueError)):
        np.from_dlpack(t)
    with pytest.raises((RuntimeError, BufferError, ValueError)):
        t.numpy()
    assert t.squeeze().numpy().shape == ()


# ---- lifetimes across threads -----------------------------------------------------------


def test_numpy_holder_dropped_in_another_thread():
    t = dlpx_filled("float64")
    before = dlpx.stats()
    arrs = [t.numpy(), np.from_dlpack(t[::-1])]
    ptr = t.data_ptr
    del t
    gc.collect()
    assert dlpx.stats()["storages_live"] == before["storages_live"]  # still held
    assert np_ptr(arrs[0]) == ptr and np.array_equal(arrs[0], ref_values("float64"))

    def drop():
        arrs.clear()
        gc.collect()

    th = threading.Thread(target=drop)
    th.start()
    th.join()
    assert dlpx.stats()["storages_live"] == before["storages_live"] - 1
    assert dlpx.stats()["exports_live"] == before["exports_live"]
