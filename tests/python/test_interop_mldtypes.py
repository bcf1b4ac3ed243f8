"""dlpx <-> NumPy arrays of ml_dtypes types (bfloat16, float8, float6,
float4), which NumPy itself refuses to export through DLPack: dlpx imports
their bytes and reads them as the right dtype, without copying.  NumPy and
ml_dtypes keep float4/float6 one element per byte ("padded"); dlpx also
has packed sub-byte tensors, which need a copy to become NumPy arrays."""


import pytest

np = pytest.importorskip("numpy")
ml_dtypes = pytest.importorskip("ml_dtypes")

import dlpx  # noqa: E402
from conftest import layouts  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

pytestmark = pytest.mark.usefixtures("gc_baseline", "no_leaks")



ML_NAMES = [d.name for d in dlpx.ALL_DTYPES
            if d.code not in (0, 1, 2, 5, 6)]  # not int, uint, float, complex, bool
ML_DTYPES = [n for n in ML_NAMES if hasattr(ml_dtypes, n)]
SUBBYTE = [n for n in ML_DTYPES if getattr(dlpx, n).is_subbyte]
BYTE = [n for n in ML_DTYPES if n not in SUBBYTE]
TORCH_HAS = {"bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
             "float8_e8m0fnu"}

SHAPE = (4, 8)


def np_dtype(name):
    return np.dtype(getattr(ml_dtypes, name))


def ref_values(name, shape=SHAPE, seed=0):
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.float64) + seed
    if name == "float8_e8m0fnu":
        v = 2.0 ** ((i % 9) - 4)  # powers of two only
    elif name == "bfloat16":
        v = i * 0.25 - 2.5
    else:
        v = ((i % 9) - 4) * 0.5  # -2 .. 2: exact in float4, float6 and every float8
    return v.astype(np_dtype(name)).reshape(shape)


def np_ptr(a):
    return a.__array_interface__["data"][0]


def equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return (a.shape == b.shape and a.dtype == b.dtype
            and np.array_equal(a.astype(np.float64), b.astype(np.float64)))


def attempt(fn):
    """(fn(), None) or (None, "Type: message"), the traceback dropped so a
    failing assertion does not keep objects alive for no_leaks to report."""
    try:
        return fn(), None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


# ---- dtypes --------------------------------------------------------------------------


def test_every_ml_dtype_dlpx_knows_is_covered():
    assert set(ML_DTYPES) >= {"bfloat16", "float8_e4m3fn", "float8_e5m2", "float4_e2m1fn"}
    for name in ("float8_e3m4", "float8_e4m3", "float8_e4m3b11fnuz", "float8_e4m3fnuz",
                 "float8_e5m2fnuz", "float8_e8m0fnu", "float6_e2m3fn", "float6_e3m2fn"):
        if hasattr(ml_dtypes, name):
            assert name in ML_DTYPES


@pytest.mark.parametrize("name", ML_DTYPES)
def test_dtype_objects_match_ml_dtypes(name):
    dt = getattr(dlpx, name)
    assert dlpx.dtype(np_dtype(name)) is dt
    assert dlpx.dtype(getattr(ml_dtypes, name)) is dt
    assert dt == np_dtype(name) and dt == name
    assert dt.numpy == np_dtype(name)
    assert dt != np.dtype("uint8") and dt != np.dtype("float16")


# ---- ml_dtypes NumPy array -> dlpx ----------------------------------------------------------


# the 3-d permutation does not apply to the (4, 8) base of these tests' values
LAYOUTS = {k: v for k, v in layouts(cols=8, negative_step=-3, offset=3).items()
           if k != "3d_permuted"}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", ML_DTYPES)
def test_ml_dtypes_to_dlpx(name, layout):
    base = ref_values(name).copy()
    view = LAYOUTS[layout](base)
    t, err = attempt(lambda: dlpx.from_dlpack(view))
    assert err is None, f"dlpx.from_dlpack(ml_dtypes.{name} array) failed: {err}"
    assert t.dtype is getattr(dlpx, name) and t.dtype == view.dtype
    assert t.shape == view.shape
    assert t.readonly == (not view.flags.writeable)
    assert t.itemsize == view.itemsize  # float4/float6: padded, one byte each
    assert not view.size or all(  # strides of extent-1 dims carry no meaning
        a == b for a, b, n in zip(t.byte_strides, view.strides, view.shape) if n > 1)
    if view.size:
        assert t.data_ptr == np_ptr(view)  # zero copy
    arr = t.numpy()
    assert arr.dtype == np_dtype(name)
    assert equal(arr, view)
    if view.size:
        assert np_ptr(arr) == np_ptr(view)
    assert equal(t.copy().numpy(), view)  # dlpx's C copy reads the same bytes
    if not view.flags.writeable or not view.size or layout == "broadcast":
        return
    new = ref_values(name, view.shape, seed=1)
    view[...] = new
    assert equal(t.copy().numpy(), new)
    t.copy_(dlpx.from_dlpack(ref_values(name, view.shape)))
    assert equal(view, ref_values(name, view.shape))


@pytest.mark.parametrize("name", ML_DTYPES)
def test_readonly_ml_dtypes_array(name):
    a = ref_values(name).copy()
    a.flags.writeable = False
    t, err = attempt(lambda: dlpx.from_dlpack(a))
    assert err is None, err
    assert t.readonly and t.data_ptr == np_ptr(a)
    arr = t.numpy()
    assert not arr.flags.writeable and np_ptr(arr) == np_ptr(a)
    with pytest.raises(ValueError):
        t.copy_(dlpx.zeros(SHAPE, name))
    c = t.numpy(copy=True)
    assert c.flags.writeable and np_ptr(c) != np_ptr(a) and equal(c, a)


@pytest.mark.parametrize("name", ML_DTYPES)
def test_ml_dtypes_copy_keyword(name):
    a = ref_values(name).copy()
    same, err = attempt(lambda: dlpx.from_dlpack(a, copy=False))
    assert err is None, err
    assert same.data_ptr == np_ptr(a)
    dup = dlpx.from_dlpack(a, copy=True)
    assert dup.data_ptr != np_ptr(a) and not dup.readonly
    assert dup.dtype is getattr(dlpx, name)
    assert equal(dup.numpy(), a)


def test_float8_e5m2_numpy_array_imports():
    """ml_dtypes gives float8_e5m2 dtype.kind 'f' (the others 'V'); it must
    import like every other ml_dtypes array."""
    a = np.array([1.0, -2.0, 0.5], dtype=ml_dtypes.float8_e5m2)
    assert a.dtype.kind == "f"  # the ml_dtypes quirk this test is about
    t, err = attempt(lambda: dlpx.from_dlpack(a))
    assert err is None, f"dlpx.from_dlpack(float8_e5m2 array): {err}"
    assert t.dtype is dlpx.float8_e5m2 and t.data_ptr == np_ptr(a)
    assert equal(t.numpy(), a)


# ---- dlpx -> NumPy (ml_dtypes) ---------------------------------------------------------------


@pytest.mark.parametrize("name", BYTE)
def test_dlpx_byte_types_to_numpy_zero_copy(name):
    t = dlpx.empty(SHAPE, name)
    t.numpy()[...] = ref_values(name)
    for arr in (t.numpy(), t.numpy(copy=False), np.asarray(t), t.T.numpy(), t[::-1, 1::2].numpy()):
        assert arr.dtype == np_dtype(name)
        assert arr.flags.writeable
    assert np_ptr(t.numpy()) == t.data_ptr
    v = t[::-1, 1::2]
    arr = v.numpy()
    assert np_ptr(arr) == v.data_ptr and arr.strides == v.byte_strides
    assert equal(arr, ref_values(name)[::-1, 1::2])
    arr[...] = ref_values(name, arr.shape, seed=1)  # NumPy writes, dlpx sees
    assert equal(v.copy().numpy(), ref_values(name, arr.shape, seed=1))
    c = t.numpy(copy=True)
    assert np_ptr(c) != t.data_ptr
    ro = t.as_readonly().numpy()
    assert not ro.flags.writeable and np_ptr(ro) == t.data_ptr


PACKED_LAYOUTS = {  # views whose first element starts on a byte in packed storage
    "contiguous": lambda x: x,
    "transposed": lambda x: x.T,
    "rows_reversed": lambda x: x[::-1],
    "step": lambda x: x[::2, ::4],
    "offset": lambda x: x[1:],
    "zero_d": lambda x: x[1, 4, ...],
    "zero_size": lambda x: x[:0],
    "broadcast": LAYOUTS["broadcast"],
}


@pytest.mark.parametrize("layout", list(PACKED_LAYOUTS))
@pytest.mark.parametrize("name", SUBBYTE)
def test_packed_subbyte_to_numpy_copies(name, layout):
    ref = ref_values(name)
    t = dlpx.zeros(SHAPE, name)  # packed: 4 or 6 bits an element
    assert t.itemsize < 1
    t.copy_(dlpx.from_dlpack(ref))  # padded (ml_dtypes) -> packed
    v = PACKED_LAYOUTS[layout](t)
    expect = PACKED_LAYOUTS[layout](ref)
    arr = v.numpy()  # ml_dtypes stores one element per byte: a copy
    assert arr.dtype == np_dtype(name)
    assert equal(arr, expect)
    assert equal(np.asarray(v), expect)
    if v.size:
        with pytest.raises(BufferError):
            v.numpy(copy=False)
        arr[...] = ref_values(name, arr.shape, seed=1)  # the copy is private
        assert equal(v.numpy(), expect)


@pytest.mark.parametrize("name", SUBBYTE)
def test_padded_subbyte_round_trip(name):
    ref = ref_values(name)
    padded = dlpx.from_dlpack(ref)
    assert padded.itemsize == 1 and padded.byte_strides == ref.strides
    arr = padded.numpy(copy=False)  # padded: NumPy's own layout, no copy
    assert np_ptr(arr) == np_ptr(ref) and equal(arr, ref)
    packed = dlpx.zeros(SHAPE, name)
    packed.copy_(padded)
    back = dlpx.from_dlpack(np.zeros(SHAPE, np_dtype(name)))
    back.copy_(packed)  # packed -> padded
    assert equal(back.numpy(), ref)
    assert equal(padded.copy().numpy(), ref)


# ---- ml_dtypes -> dlpx -> PyTorch --------------------------------------------------------------


@pytest.mark.parametrize("name", ML_DTYPES)
def test_ml_dtypes_to_torch(name):
    if torch is None:
        pytest.skip("PyTorch is not installed")
    ref = ref_values(name)
    t, err = attempt(lambda: dlpx.from_dlpack(ref))
    assert err is None, err
    if name not in TORCH_HAS:  # PyTorch has no such dtype (or only as float4_e2m1fn_x2)
        with pytest.raises(BufferError):
            torch.from_dlpack(t)
        with pytest.raises((BufferError, TypeError)):
            t.torch()
        return
    for x in (t.torch(), torch.from_dlpack(t)):
        assert x.dtype is getattr(torch, name)
        assert x.data_ptr() == np_ptr(ref)  # zero copy, NumPy's memory
        assert np.array_equal(x.to(torch.float64).numpy(), ref.astype(np.float64))
    back = dlpx.from_dlpack(x).numpy()
    assert back.dtype == np_dtype(name) and np_ptr(back) == np_ptr(ref)


# ---- complex32 (ml_dtypes >= 0.6: two float16, as DLPack's and PyTorch's) -------------------


def _need_complex32():
    if not hasattr(ml_dtypes, "complex32"):
        pytest.skip(f"ml_dtypes {ml_dtypes.__version__} has no complex32")


C32_VALUES = [1 + 2j, 3 - 4j, -0.5 + 0.25j, 0j]


def test_complex32_dtype_matches_ml_dtypes():
    _need_complex32()
    assert dlpx.complex32.numpy == np.dtype(ml_dtypes.complex32)
    assert dlpx.dtype(np.dtype(ml_dtypes.complex32)) is dlpx.complex32
    assert dlpx.complex32 == np.dtype(ml_dtypes.complex32)


def test_dlpx_complex32_to_numpy():
    """dlpx.complex32.numpy names ml_dtypes' complex32, so a complex32 tensor
    should become such an array (same memory layout: real, imag float16)."""
    _need_complex32()
    t = dlpx.zeros(4, "complex32")
    halves = np.array([[v.real, v.imag] for v in C32_VALUES], dtype=np.float16)
    t.view("uint32").numpy()[...] = halves.view(np.uint32).reshape(4)
    arr, err = attempt(t.numpy)
    ptr = t.data_ptr
    del t
    assert err is None, f"complex32 tensor .numpy(): {err}"
    assert arr.dtype == np.dtype(ml_dtypes.complex32)
    assert np_ptr(arr) == ptr
    assert np.array_equal(arr.astype(np.complex64), np.array(C32_VALUES, np.complex64))


def test_complex32_numpy_array_to_dlpx():
    _need_complex32()
    a = np.array(C32_VALUES, dtype=ml_dtypes.complex32)
    t, err = attempt(lambda: dlpx.from_dlpack(a))
    assert err is None, f"dlpx.from_dlpack(ml_dtypes.complex32 array): {err}"
    assert t.dtype is dlpx.complex32 and t.shape == (4,)
    assert t.data_ptr == np_ptr(a)
    got = t.view("uint32").numpy().view(np.float16).reshape(4, 2)
    assert np.array_equal(got, a.view(np.float16).reshape(4, 2))
