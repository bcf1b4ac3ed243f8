"""dlpx <-> PyTorch (CPU) with the real PyTorch: every dtype both sides know,
both directions, zero copy, shared writes, layouts, negative strides (which
PyTorch must never receive), read-only data, capsules, ndim limits and
deleters run from other threads."""

import gc
import subprocess
import sys
import threading

import pytest

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")

import dlpx  # noqa: E402

try:  # dlpx gives bfloat16/float8 (and, with ml_dtypes >= 0.6, complex32) to NumPy through it
    import ml_dtypes  # noqa: F401
except ImportError:  # pragma: no cover
    pass

pytestmark = [pytest.mark.usefixtures("gc_baseline", "no_leaks"),
              pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")]



TORCH_DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                "uint64", "float16", "float32", "float64", "bfloat16", "complex32",
                "complex64", "complex128", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
                "float8_e5m2fnuz", "float8_e8m0fnu"]

SHAPE = (4, 6)


def torch_values(name, shape=SHAPE, seed=0):
    """A tensor of dtype |name| with distinct values every dtype holds exactly."""
    dt = getattr(torch, name)
    n = 1
    for e in shape:
        n *= e
    i = torch.arange(n, dtype=torch.float64) + seed
    if name == "bool":
        v = (i % 3) == 0
    elif name == "float8_e8m0fnu":  # powers of two only
        v = torch.pow(2.0, (i % 9) - 4)
    elif name.startswith("float8"):
        v = ((i % 9) - 4) * 0.5  # -2 .. 2 in steps of 0.5
    elif dt.is_floating_point:
        v = i * 0.25 - 2.5
    elif dt.is_complex:
        v = torch.complex(i * 0.5 - 1, 3 - i * 0.25)
    else:
        v = (i * 7 + 3) % 120
    return v.to(dt).reshape(shape)


def wide(x):
    """|x| as a dtype torch.equal can compare everywhere."""
    if x.dtype.is_complex:
        return x.to(torch.complex128)
    if x.dtype.is_floating_point:
        return x.to(torch.float64)
    return x.to(torch.int64)


def same_values(a, b):
    return a.shape == b.shape and torch.equal(wide(a), wide(b))


def dlpx_filled(name, shape=SHAPE):
    """A dlpx-owned tensor holding torch_values(name)."""
    t = dlpx.empty(shape, name)
    t.copy_(torch_values(name, shape))
    return t


def read_back(t):
    """The values of a dlpx tensor, copied by dlpx's C code into PyTorch."""
    return torch.from_dlpack(t.copy()).clone()


def attempt(fn):
    """(fn(), None) or (None, "Type: message"), the traceback dropped so a
    failing assertion does not keep dlpx objects alive (no_leaks would then
    report a second error)."""
    try:
        return fn(), None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def same_layout(shape, a, b):
    return all(e <= 1 or x == y for e, x, y in zip(shape, a, b))


def has_zero_stride(shape, strides):
    return any(e > 1 and s == 0 for e, s in zip(shape, strides))


# ---- dtypes ----------------------------------------------------------------------


@pytest.mark.parametrize("name", TORCH_DTYPES)
def test_dtype_objects_match_torch(name):
    dt = getattr(dlpx, name)
    assert dlpx.dtype(getattr(torch, name)) is dt
    assert dt == getattr(torch, name) and dt == name
    assert dt.torch is getattr(torch, name)
    assert dt != (torch.uint8 if name == "int8" else torch.int8)
    assert dt.itemsize == getattr(torch, name).itemsize


def test_dtype_aliases_match_torch():
    assert dlpx.dtype(torch.half) is dlpx.float16
    assert dlpx.dtype(torch.cfloat) is dlpx.complex64
    assert dlpx.dtype(torch.chalf) is dlpx.complex32
    assert dlpx.float32 == torch.float and dlpx.int64 == torch.long


# ---- PyTorch -> dlpx ----------------------------------------------------------------


LAYOUTS = {
    "contiguous": lambda x: x,
    "transposed": lambda x: x.t(),
    "step": lambda x: x[::2, 1::3],
    "offset": lambda x: x[1:, 2:],
    "zero_size": lambda x: x[2:2],
    "zero_d": lambda x: x[1, 2],
    "size1": lambda x: x[1:2].unsqueeze(1),
    "expand": lambda x: x[1].expand(3, 6),
    "3d_permuted": lambda x: x.reshape(2, 2, 6).permute(2, 0, 1),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", TORCH_DTYPES)
def test_torch_to_dlpx(name, layout):
    base = torch_values(name)
    x = LAYOUTS[layout](base)
    t = dlpx.from_dlpack(x)
    assert t.dtype == x.dtype and t.dtype is getattr(dlpx, name)
    assert t.shape == tuple(x.shape)
    assert same_layout(t.shape, t.strides, x.stride())
    assert not t.readonly  # PyTorch tensors are writable
    assert t.device == "cpu"
    if x.numel():
        assert t.data_ptr == x.data_ptr()  # zero copy
    assert same_values(read_back(t), x)
    if not x.numel() or has_zero_stride(x.shape, x.stride()):
        return
    # a write through PyTorch is seen by dlpx ...
    new = torch_values(name, tuple(x.shape), seed=1)
    if name == "bool":
        new = ~x
    x.copy_(new)
    assert same_values(read_back(t), new)
    # ... and one through dlpx by PyTorch
    t.copy_(torch_values(name, tuple(x.shape)))
    assert same_values(x, torch_values(name, tuple(x.shape)))


@pytest.mark.parametrize("name", TORCH_DTYPES)
def test_torch_to_dlpx_to_numpy(name):
    x = torch_values(name)
    t = dlpx.from_dlpack(x)
    if name == "complex32" and not hasattr(sys.modules.get("ml_dtypes"), "complex32"):
        with pytest.raises(BufferError):  # NumPy alone has no complex32
            t.numpy()
        return
    arr, err = attempt(t.numpy)  # bfloat16, float8 (and complex32) come out as ml_dtypes
    del t
    assert err is None, f"{name} tensor .numpy(): {err}"
    assert arr.__array_interface__["data"][0] == x.data_ptr()
    assert dlpx.dtype(arr.dtype) is getattr(dlpx, name)
    ref = wide(x).numpy()
    assert np.array_equal(arr.astype(ref.dtype), ref)


def test_torch_source_outlives_its_tensor():
    x = torch_values("float32")
    ptr = x.data_ptr()
    t = dlpx.from_dlpack(x)
    before = dlpx.stats()["foreign_deleters_run"]
    del x
    gc.collect()
    assert t.data_ptr == ptr
    assert same_values(read_back(t), torch_values("float32"))
    del t
    assert dlpx.stats()["foreign_deleters_run"] == before + 1  # PyTorch's deleter ran


def test_float4_e2m1fn_x2_is_refused():
    x = torch.zeros(4, 3, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    with pytest.raises(BufferError):
        dlpx.from_dlpack(x)
    with pytest.raises(BufferError):
        dlpx.from_dlpack(x, copy=True)
    with pytest.raises(BufferError):
        dlpx.from_dlpack(torch.utils.dlpack.to_dlpack(x))
    # the refused tensor's storage is left to PyTorch, untouched and usable
    assert torch.equal(x.view(torch.uint8), torch.zeros(4, 3, dtype=torch.uint8))


def test_conjugate_view_is_not_imported_unconjugated():
    """A conjugate view's memory holds the unconjugated numbers: an importer
    must resolve the conjugation or refuse (torch's __dlpack__ refuses)."""
    c = torch.tensor([1 + 2j, 3 - 4j, -5 + 0.5j], dtype=torch.complex64).conj()
    assert c.is_conj()
    try:
        t = dlpx.from_dlpack(c)
    except BufferError:
        return
    got = read_back(t)  # a PyTorch copy: nothing of dlpx's is held below
    del t
    assert same_values(got, c.resolve_conj()), f"imported {got}, the tensor is {c}"


def test_requires_grad_tensor_is_refused_like_torch_does():
    """torch's own __dlpack__ refuses tensors that require grad (writes
    through the alias would bypass autograd); so should an import of one."""
    g = torch.ones(3, requires_grad=True)
    with pytest.raises(BufferError):
        g.__dlpack__()
    with pytest.raises(BufferError):
        dlpx.from_dlpack(g)
    assert dlpx.from_dlpack(g.detach()).data_ptr == g.data_ptr()


# ---- dlpx -> PyTorch ----------------------------------------------------------------------


DLPX_LAYOUTS = {
    "contiguous": lambda x: x,
    "transposed": lambda x: x.T,
    "step": lambda x: x[::2, 1::3],
    "offset": lambda x: x[1:, 2:],
    "zero_size": lambda x: x[2:2],
    "zero_d": lambda x: x[1, 2],
    "size1": lambda x: x[1:2, None],
    "broadcast": lambda x: x[1].broadcast_to((3, 6)),
    "3d_permuted": lambda x: x.reshape(2, 2, 6).permute(2, 0, 1),
    "size1_reversed": lambda x: x[1:2][::-1],  # negative stride on an extent of 1
}

# the same views of a torch tensor, for the expected values
TORCH_EQUIV = dict(LAYOUTS, size1=lambda x: x[1:2, None], broadcast=LAYOUTS["expand"],
                   size1_reversed=lambda x: x[1:2])


@pytest.mark.parametrize("how", ["from_dlpack", "method"])
@pytest.mark.parametrize("layout", list(DLPX_LAYOUTS))
@pytest.mark.parametrize("name", TORCH_DTYPES)
def test_dlpx_to_torch(name, layout, how):
    base = dlpx_filled(name)
    v = DLPX_LAYOUTS[layout](base)
    x = torch.from_dlpack(v) if how == "from_dlpack" else v.torch()
    assert x.dtype is getattr(torch, name)
    assert tuple(x.shape) == v.shape
    assert same_layout(v.shape, x.stride(), v.strides)
    if v.size:
        assert x.data_ptr() == v.data_ptr  # zero copy
    expect = TORCH_EQUIV[layout](torch_values(name))
    assert same_values(x, expect)
    if not v.size or has_zero_stride(v.shape, v.strides):
        return
    # a write through PyTorch is seen by dlpx, one through dlpx by PyTorch
    new = ~expect if name == "bool" else torch_values(name, tuple(expect.shape), seed=1)
    x.copy_(new)
    assert same_values(read_back(v), new)
    v.copy_(expect.contiguous())
    assert same_values(x, expect)


def test_torch_copy_keyword_semantics():
    t = dlpx_filled("float32")
    expect = torch_values("float32")
    for x, shared in ((t.torch(), True), (t.torch(copy=False), True), (t.torch(copy=True), False),
                      (torch.from_dlpack(t, copy=False), True),
                      (torch.from_dlpack(t, copy=True), False)):
        assert (x.data_ptr() == t.data_ptr) is shared
        assert same_values(x, expect)
    with pytest.raises(TypeError):
        t.torch(copy="yes")


# ---- negative strides: PyTorch must never receive them -------------------------------------


NEGATIVE = {
    "reversed_rows": lambda x: x[::-1],
    "reversed_cols_step": lambda x: x[:, ::-2],
    "both_transposed": lambda x: x[::-1, ::-1].T,
    "selected": lambda x: x[::-1, 2],
    "broadcast": lambda x: x[::-1, :1].broadcast_to((4, 5)),
}


def test_empty_view_with_negative_strides_goes_to_torch():
    # no element is ever addressed, so PyTorch cannot trip over the strides
    v = dlpx_filled("float64")[:0, ::-1]
    n = v.shape[1]
    a, b = torch.from_dlpack(v), v.torch(copy=False)
    shapes = (tuple(a.shape), tuple(b.shape))
    del a, b, v
    assert shapes == ((0, n), (0, n))


@pytest.mark.parametrize("case", list(NEGATIVE))
def test_negative_strides_are_refused_to_torch_from_dlpack(case):
    v = NEGATIVE[case](dlpx_filled("float64"))
    with pytest.raises(BufferError):
        torch.from_dlpack(v)
    with pytest.raises(BufferError):
        torch.from_dlpack(v, device="cpu")
    with pytest.raises(BufferError):
        torch.utils.dlpack.from_dlpack(v)
    with pytest.raises(BufferError):
        v.torch(copy=False)


@pytest.mark.parametrize("case", list(NEGATIVE))
def test_negative_strides_copied_for_torch(case):
    base = dlpx_filled("float64")
    v = NEGATIVE[case](base)
    expect = torch.from_numpy(np.array(v.numpy()))  # NumPy takes negative strides
    for x in (v.torch(), v.torch(copy=True), torch.from_dlpack(v, copy=True)):
        assert same_values(x, expect)
        assert all(s >= 0 for s in x.stride())
        if v.size:
            assert x.data_ptr() != v.data_ptr  # a copy
        x.fill_(0)  # the copy is private
    assert same_values(read_back(v), expect)


def test_negative_strides_never_abort_the_process():
    """Run the refused calls in a child: an abort there fails this test
    instead of killing the test run."""
    code = (
        "import numpy as np, torch, dlpx\n"
        "t = dlpx.from_dlpack(np.arange(12.0).reshape(3, 4))[:, ::-1]\n"
        "for f in (lambda: torch.from_dlpack(t), lambda: torch.as_tensor(t),\n"
        "          lambda: torch.asarray(t), lambda: torch.tensor(t),\n"
        "          lambda: torch.from_dlpack(t, copy=False)):\n"
        "    try:\n"
        "        x = f()\n"
        "        assert x.tolist() == t.numpy().tolist(), x\n"
        "    except BufferError:\n"
        "        pass\n"
        "print('survived')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "survived" in r.stdout, r.stderr[-2000:]


# ---- read-only ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bool", "int32", "float32", "bfloat16", "complex64",
                                  "float8_e5m2"])
def test_readonly_to_torch_copies_by_default(name):
    base = dlpx_filled(name)
    ro = base.as_readonly()
    x = ro.torch()
    assert x.data_ptr() != ro.data_ptr  # PyTorch has no read-only tensors: a copy
    assert same_values(x, torch_values(name))
    x.fill_(1)
    assert same_values(read_back(base), torch_values(name))  # the original is untouched
    with pytest.raises(BufferError):
        ro.torch(copy=False)
    y = ro.torch(copy=True)
    assert y.data_ptr() != ro.data_ptr and same_values(y, torch_values(name))


def test_readonly_numpy_through_dlpx_to_torch():
    a = np.arange(12.0).reshape(3, 4)
    a.flags.writeable = False
    t = dlpx.from_dlpack(a)
    assert t.readonly
    x = t.torch()
    assert x.data_ptr() != a.__array_interface__["data"][0]
    assert torch.equal(x, torch.from_numpy(a.copy()))
    with pytest.raises(BufferError):
        t.torch(copy=False)


def test_torch_legacy_capsule_is_readonly():
    x = torch_values("int16")
    t = dlpx.from_dlpack(torch.utils.dlpack.to_dlpack(x))
    assert t.readonly and t.data_ptr == x.data_ptr()
    x[0, 0] = 111
    assert int(read_back(t)[0, 0]) == 111
    assert not t.numpy().flags.writeable
    y = t.torch()  # read-only comes back to PyTorch as a copy
    assert y.data_ptr() != x.data_ptr() and torch.equal(y, x)


def test_torch_versioned_capsule_keeps_writability():
    x = torch_values("float32")
    t = dlpx.from_dlpack(x.__dlpack__(max_version=(1, 0)))
    assert not t.readonly and t.data_ptr == x.data_ptr()


# ---- capsules ----------------------------------------------------------------------------


def test_torch_capsule_consumed_twice_is_refused():
    x = torch_values("float32")
    cap = torch.utils.dlpack.to_dlpack(x)
    t = dlpx.from_dlpack(cap)
    with pytest.raises(ValueError):
        dlpx.from_dlpack(cap)
    assert t.data_ptr == x.data_ptr()
    cap = x.__dlpack__(max_version=(1, 0))
    t2 = dlpx.from_dlpack(cap)
    with pytest.raises(ValueError):
        dlpx.from_dlpack(cap)
    assert t2.data_ptr == x.data_ptr()


@pytest.mark.parametrize("versioned", [False, True], ids=["legacy", "versioned"])
def test_dlpx_capsule_consumed_by_torch_then_dlpx_is_refused(versioned):
    t = dlpx_filled("float32")
    cap = t.__dlpack__(max_version=(1, 3)) if versioned else t.__dlpack__()
    x = torch.from_dlpack(cap)
    assert x.data_ptr() == t.data_ptr
    with pytest.raises(ValueError):
        dlpx.from_dlpack(cap)
    with pytest.raises(RuntimeError):  # PyTorch refuses it too (its own error type)
        torch.from_dlpack(cap)
    assert same_values(x, torch_values("float32"))


# ---- ndim ------------------------------------------------------------------------------------


def test_max_ndim_both_ways():
    shape = (2,) + (1,) * 125 + (3, 2)  # 128 dims, dlpx's limit (PyTorch allows more)
    t = dlpx.zeros(shape, "int32")
    t.copy_(torch.arange(12, dtype=torch.int32).reshape(shape))
    x = torch.from_dlpack(t)
    assert x.ndim == 128 and x.data_ptr() == t.data_ptr
    assert torch.equal(x.flatten(), torch.arange(12, dtype=torch.int32))
    xt = x.transpose(0, 126)
    back = dlpx.from_dlpack(xt)
    assert back.ndim == 128 and back.data_ptr == t.data_ptr
    assert back.shape == tuple(xt.shape) and back.shape[0] == 3
    assert back.strides[0] == x.stride(126) and back.strides[126] == x.stride(0)
    assert torch.equal(read_back(back), xt)


def test_more_dims_than_dlpx_allows_is_refused():
    x = torch.zeros((1,) * 129)
    with pytest.raises(BufferError):
        dlpx.from_dlpack(x)
    with pytest.raises(BufferError):
        dlpx.from_dlpack(torch.utils.dlpack.to_dlpack(x))


# ---- lifetimes and threads -------------------------------------------------------------------


def _drop_in_thread(holder):
    def drop():
        holder.clear()
        gc.collect()
    th = threading.Thread(target=drop)
    th.start()
    th.join()


def test_torch_holding_dlpx_export_freed_in_another_thread():
    before = dlpx.stats()
    t = dlpx_filled("float64")
    holder = [torch.from_dlpack(t)]
    ptr = t.data_ptr
    del t
    gc.collect()
    s = dlpx.stats()
    assert s["exports_live"] == before["exports_live"] + 1
    assert s["storages_live"] == before["storages_live"] + 1
    assert holder[0].data_ptr() == ptr
    assert same_values(holder[0], torch_values("float64"))  # data valid while torch holds it
    _drop_in_thread(holder)
    s = dlpx.stats()
    assert s["exports_live"] == before["exports_live"]
    assert s["storages_live"] == before["storages_live"]


def test_data_valid_while_any_holder_lives():
    before = dlpx.stats()["storages_live"]
    t = dlpx_filled("float32")
    expect = torch_values("float32")
    holders = {"torch": torch.from_dlpack(t), "torch_view": t[::2].torch(),
               "numpy": t.numpy(), "dlpx_view": t.T}
    del t
    holders["torch_view"][0, 0] = 42.0  # one storage behind all of them
    assert holders["numpy"][0, 0] == 42.0 and float(holders["torch"][0, 0]) == 42.0
    expect[0, 0] = 42.0
    for name in ["dlpx_view", "torch", "numpy"]:
        h = [holders.pop(name)]
        _drop_in_thread(h)
        assert dlpx.stats()["storages_live"] == before + 1
        last = holders["torch_view"]
        assert same_values(last, expect[::2])
        last.add_(0)  # still writable memory
        del last
    assert dlpx.stats()["storages_live"] == before + 1
    _drop_in_thread([holders.pop("torch_view")])
    assert dlpx.stats()["storages_live"] == before


def test_borrowed_buffer_released_from_another_thread():
    buf = bytearray(np.arange(16, dtype=np.float32).tobytes())
    before = dlpx.stats()["borrowed_releases_run"]
    t = dlpx.frombuffer(buf, dtype="float32")
    holder = [torch.from_dlpack(t)]
    del t
    gc.collect()
    with pytest.raises(BufferError):
        buf.append(0)  # still exported: the torch tensor holds it
    assert torch.equal(holder[0], torch.arange(16, dtype=torch.float32))
    _drop_in_thread(holder)
    assert dlpx.stats()["borrowed_releases_run"] == before + 1
    buf.append(0)  # released: resizable again


def test_torch_deleter_runs_when_dlpx_view_freed_in_another_thread():
    before = dlpx.stats()["foreign_deleters_run"]
    x = torch_values("int64")
    holder = [dlpx.from_dlpack(x)[1:]]
    del x
    _drop_in_thread(holder)
    assert dlpx.stats()["foreign_deleters_run"] == before + 1


def test_many_threads_export_and_free_concurrently():
    t = dlpx_filled("float32")
    expect = torch_values("float32")
    errors = []

    def worker():
        try:
            for _ in range(200):
                x = torch.from_dlpack(t)
                y = dlpx.from_dlpack(x)
                if y.data_ptr != t.data_ptr or not torch.equal(x, expect):
                    errors.append("wrong data")
                del x, y
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
