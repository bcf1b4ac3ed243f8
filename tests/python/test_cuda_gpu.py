"""dlpx's CUDA support against a real GPU and the real frameworks: interop
with PyTorch, CuPy and JAX both ways for every shared dtype and for views;
stream hand-offs between a producer's and a consumer's stream (and proof
that the check can fail); the caching pool's reuse, statistics, limit and
no leak over 100,000 cycles; copies of every layout vs NumPy and PyTorch;
tensor files to the device vs the safetensors package; IPC between two
processes.

Runs only with DLPX_TEST_CUDA=real on a machine whose driver dlpx can open
(scripts/device_gpu.sh on the GPU machine); everywhere else every test
skips with the reason.  tests/python/test_cuda.py covers the same API
against the driver's test double."""

import os
import pickle
import random
import subprocess
import sys
import textwrap
import time

# JAX would otherwise take 75% of the GPU at its first use, which the leak
# and file tests (and PyTorch) need.  Set before anything imports JAX.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import dlpx  # noqa: E402
import dlpx.cuda as cuda  # noqa: E402
from conftest import REAL_CUDA  # noqa: E402


def _why_skip():
    if not REAL_CUDA:
        return ("real-GPU tests: run with DLPX_TEST_CUDA=real on a machine with an NVIDIA GPU "
                "(bash scripts/device_gpu.sh on the GPU machine)")
    if not cuda.is_available():
        return f"DLPX_TEST_CUDA=real but dlpx finds no GPU: {cuda.why_unavailable()}"
    return None


_SKIP = _why_skip()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")


# ---- the frameworks, each skipped on its own when it has no GPU ---------------------------

@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA on this machine")
    return torch


@pytest.fixture(scope="module")
def cupy():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no device")
    except Exception as e:  # CuPy raises its own CUDARuntimeError
        pytest.skip(f"CuPy has no GPU: {e}")
    return cupy


@pytest.fixture(scope="module")
def jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)  # else int64/float64 become 32-bit
    try:
        gpus = jax.devices("gpu")
    except RuntimeError as e:
        pytest.skip(f"JAX has no GPU backend: {e}")
    if not gpus:
        pytest.skip("JAX has no GPU")
    return jax


# ---- values and layouts shared by the interop tests -----------------------------------------

# 4 x 6 bases; each layout is a view both the framework and dlpx make.
def _permute(x, axes):
    return x.permute(*axes) if hasattr(x, "permute") else x.transpose(axes)


LAYOUTS = {
    "contiguous": lambda x: x,
    "rows": lambda x: x[1:3],
    "columns_step": lambda x: x[:, 1::2],
    "transposed": lambda x: x.T,
    "3d_permuted": lambda x: _permute(x.reshape(2, 2, 6), (2, 0, 1)),
    "zero_size": lambda x: x[2:2],
    "zero_d": lambda x: x[1, 2, ...],
}
SHAPE = (4, 6)

# dtypes PyTorch's CUDA kernels write (zero_) in every version
WRITABLE_IN_TORCH = {"int8", "int16", "int32", "int64", "uint8", "float16", "bfloat16",
                     "float32", "float64", "complex64", "complex128"}
NUMPY_DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                "uint64", "float16", "float32", "float64", "complex64", "complex128"]
ML_DTYPES = ["bfloat16", "float8_e4m3fn", "float8_e5m2"]  # NumPy dtypes through ml_dtypes
TORCH_DTYPES = NUMPY_DTYPES + ML_DTYPES + ["float8_e4m3fnuz", "float8_e5m2fnuz",
                                           "float8_e8m0fnu"]


def _np_dtype(name):
    if name in NUMPY_DTYPES:
        return np.dtype(name)
    ml = pytest.importorskip("ml_dtypes")
    if not hasattr(ml, name):
        pytest.skip(f"ml_dtypes has no {name}")
    return np.dtype(getattr(ml, name))


def _np_values(name, shape=SHAPE, seed=0):
    """Distinct small values of dtype |name| (exact in every dtype)."""
    n = int(np.prod(shape))
    v = (np.arange(n) * 7 + seed) % 13
    if name == "bool":
        return (v % 2 == 1).reshape(shape)
    dt = _np_dtype(name)
    if dt.kind == "c":
        return (v + 1j * (v % 5)).astype(dt).reshape(shape)
    return v.astype(np.float32).astype(dt).reshape(shape)


def _bits(a):
    """|a| (NumPy-like) as integers of the same width: compares any dtype,
    ml_dtypes ones too, bit for bit."""
    a = np.ascontiguousarray(np.asarray(a))
    if a.dtype.kind == "c":
        a = a.view(np.dtype(f"f{a.dtype.itemsize // 2}")).reshape(a.shape + (2,))
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def _torch_bits(torch, t):
    """A torch tensor (any device, dtype, layout) as a NumPy integer array."""
    t = t.detach().cpu().contiguous()
    if t.is_complex():
        t = torch.view_as_real(t)
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.view(view).numpy().view({1: np.uint8, 2: np.uint16, 4: np.uint32,
                                      8: np.uint64}[t.element_size()])


def _dlpx_bits(d):
    """A dlpx tensor on any device as a NumPy integer array (through a host copy)."""
    return _bits(d.cpu().numpy())


def _torch_dtype(torch, name):
    dt = getattr(torch, name, None)
    if dt is None:
        pytest.skip(f"this PyTorch has no {name}")
    try:  # PyTorch's own DLPack support, independent of dlpx
        torch.utils.dlpack.to_dlpack(torch.zeros(2, dtype=dt))
    except Exception as e:
        pytest.skip(f"PyTorch does not export {name} through DLPack: {e}")
    return dt


def _torch_values(torch, name, device):
    dt = _torch_dtype(torch, name)
    v = (torch.arange(SHAPE[0] * SHAPE[1], device=device) * 7) % 13
    if name == "bool":
        return (v % 2 == 1).reshape(SHAPE)
    if dt.is_complex:
        return torch.complex(v.double(), (v % 5).double()).to(dt).reshape(SHAPE)
    return v.float().to(dt).reshape(SHAPE)


def _dense_strides(shape, strides):
    """Strides of the dimensions that have more than one element (DLPack
    producers may normalise the others)."""
    return tuple(s for n, s in zip(shape, strides) if n > 1)


# ---- (a) interop: PyTorch ------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", TORCH_DTYPES)
def test_torch_to_dlpx_zero_copy(torch, name, layout):
    base = _torch_values(torch, name, "cuda")
    tv = LAYOUTS[layout](base)
    d = dlpx.from_dlpack(tv)
    assert d.device == "cuda:0" and d.is_cuda
    assert d.dtype == dlpx.dtype(name)
    assert d.shape == tuple(tv.shape)
    if tv.numel():
        assert d.data_ptr == tv.data_ptr()
        assert _dense_strides(d.shape, d.strides) == _dense_strides(tv.shape, tv.stride())
    back = torch.from_dlpack(d)  # and back: the same memory again
    assert back.device.type == "cuda" and back.dtype == tv.dtype
    if tv.numel():
        assert back.data_ptr() == tv.data_ptr()
    np.testing.assert_array_equal(_torch_bits(torch, back), _torch_bits(torch, tv))
    # through dlpx's device-to-host copy of the view
    host = torch.from_dlpack(d.cpu())
    np.testing.assert_array_equal(_torch_bits(torch, host), _torch_bits(torch, tv))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", TORCH_DTYPES)
def test_dlpx_to_torch_zero_copy(torch, name, layout):
    src = _torch_values(torch, name, "cpu")
    d = dlpx.from_dlpack(src).to("cuda")  # dlpx's host-to-device copy
    dv = LAYOUTS[layout](d)
    t = torch.from_dlpack(dv)
    assert t.device == torch.device("cuda", 0) and t.dtype == src.dtype
    assert tuple(t.shape) == dv.shape
    if dv.size:
        assert t.data_ptr() == dv.data_ptr
    np.testing.assert_array_equal(_torch_bits(torch, t), _torch_bits(torch, LAYOUTS[layout](src)))
    # PyTorch writes through the view; dlpx sees it
    if dv.size and name in WRITABLE_IN_TORCH:
        t.zero_()
        assert not _dlpx_bits(dv).any()


# ---- (a) interop: CuPy ----------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", NUMPY_DTYPES)
def test_cupy_both_ways(cupy, name, layout):
    a = _np_values(name)
    c = LAYOUTS[layout](cupy.asarray(a))
    want = LAYOUTS[layout](a)
    d = dlpx.from_dlpack(c)  # CuPy -> dlpx, zero copy
    assert d.device == "cuda:0" and d.shape == c.shape
    if c.size:
        assert d.data_ptr == c.data.ptr
        assert _dense_strides(d.shape, d.byte_strides) == _dense_strides(c.shape, c.strides)
    np.testing.assert_array_equal(_dlpx_bits(d), _bits(want))
    c2 = cupy.from_dlpack(d)  # and back
    if c.size:
        assert c2.data.ptr == c.data.ptr
    np.testing.assert_array_equal(_bits(cupy.asnumpy(c2)), _bits(want))
    # dlpx's own device memory -> CuPy
    dv = LAYOUTS[layout](dlpx.from_dlpack(a).to("cuda"))
    c3 = cupy.from_dlpack(dv)
    if dv.size:
        assert c3.data.ptr == dv.data_ptr
    np.testing.assert_array_equal(_bits(cupy.asnumpy(c3)), _bits(want))


# ---- (a) interop: JAX -----------------------------------------------------------------------

def _jax_gpu_array(jax, a):
    return jax.device_put(a, jax.devices("gpu")[0])


def _jax_takes(jax, name):
    """Skips when JAX cannot move |name| through DLPack itself."""
    j = _jax_gpu_array(jax, _np_values(name, (3,)))
    try:
        jax.numpy.from_dlpack(j)
    except Exception as e:
        pytest.skip(f"JAX does not take {name} through DLPack: {e}")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", NUMPY_DTYPES + ML_DTYPES)
def test_jax_to_dlpx(jax, name, layout):
    _jax_takes(jax, name)
    a = _np_values(name)
    j = _jax_gpu_array(jax, a)
    d = dlpx.from_dlpack(j)  # zero copy: JAX's buffer
    assert d.device == "cuda:0" and d.shape == a.shape and d.dtype == dlpx.dtype(name)
    assert d.data_ptr == j.unsafe_buffer_pointer()
    dv = LAYOUTS[layout](d)  # dlpx views of JAX's memory, read back through dlpx's copies
    np.testing.assert_array_equal(_dlpx_bits(dv), _bits(LAYOUTS[layout](a)))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", NUMPY_DTYPES + ML_DTYPES)
def test_dlpx_to_jax(jax, name, layout):
    _jax_takes(jax, name)
    a = _np_values(name)
    d = dlpx.from_dlpack(a).to("cuda")
    dv = LAYOUTS[layout](d)
    try:
        j = jax.numpy.from_dlpack(dv)
    except Exception as e:
        if dv.is_contiguous() or dv.size == 0:
            raise  # dense tensors JAX must take
        pytest.skip(f"JAX refuses the {layout} layout: {type(e).__name__}: {e}")
    if layout == "contiguous":
        assert j.unsafe_buffer_pointer() == d.data_ptr  # aliased, no copy
    np.testing.assert_array_equal(_bits(np.asarray(j)), _bits(LAYOUTS[layout](a)))


# ---- (b) stream hand-offs -------------------------------------------------------------------
#
# Each hand-off: a producer stream P sleeps a random number of cycles
# (torch.cuda._sleep), then writes k into a tensor of random size; a
# consumer stream C reads it at once.  Synchronised through DLPack (the
# consumer's stream given to __dlpack__ / from_dlpack), C must never see
# the old contents; with the wait removed (stream=-1) the same procedure
# must see them at least once, which proves the check can fail.

HANDOFFS = 1000
MAX_ELEMS = 1 << 20
MAX_CYCLES = 2_000_000  # ~1 ms at the H200's ~2 GHz: longer than a read takes to start


def _pinned_full(n, k):
    src = dlpx.empty((n,), "int32", device="cuda_host")
    src.numpy()[...] = k
    return src


def _dlpx_producer_torch_consumer(torch, P, C, n, cycles, k, sync):
    x = dlpx.zeros((n,), "int32", device="cuda")
    src = _pinned_full(n, k)
    torch.cuda.synchronize()  # x's zeros are written: only the hand-off below is in question
    with torch.cuda.stream(P):
        torch.cuda._sleep(cycles)
    x.copy_(src, non_blocking=True, stream=P.cuda_stream)  # x is now ordered on P
    with torch.cuda.stream(C):
        # torch.from_dlpack passes C to x.__dlpack__; stream=-1: no ordering
        y = torch.from_dlpack(x if sync else x.__dlpack__(stream=-1))
        stale = bool((y != k).any().item())  # read and fetched on C
    torch.cuda.synchronize()
    return stale


def _torch_producer_dlpx_consumer(torch, P, C, n, cycles, k, sync):
    t = torch.zeros(n, dtype=torch.int32, device="cuda")
    torch.cuda.synchronize()
    with torch.cuda.stream(P):  # PyTorch orders a consumer after its current stream
        torch.cuda._sleep(cycles)
        t.fill_(k)
        d = dlpx.from_dlpack(t, stream=C.cuda_stream if sync else -1)
    host = d.to("cpu", stream=C.cuda_stream)  # dlpx reads on C (and waits for that read)
    torch.cuda.synchronize()
    return not bool((host.numpy() == k).all())


def _dlpx_producer_dlpx_consumer(torch, P, C, n, cycles, k, sync):
    # dlpx on both sides: from_dlpack of a dlpx tensor keeps its storage, whose
    # stream dlpx orders later copies after, so only the synchronised case is run
    x = dlpx.zeros((n,), "int32", device="cuda")
    src = _pinned_full(n, k)
    torch.cuda.synchronize()
    with torch.cuda.stream(P):
        torch.cuda._sleep(cycles)
    x.copy_(src, non_blocking=True, stream=P.cuda_stream)
    d = dlpx.from_dlpack(x, stream=C.cuda_stream)
    host = d.to("cpu", stream=C.cuda_stream)
    torch.cuda.synchronize()
    return not bool((host.numpy() == k).all())


HANDOFF_KINDS = {
    "dlpx->torch": _dlpx_producer_torch_consumer,
    "torch->dlpx": _torch_producer_dlpx_consumer,
    "dlpx->dlpx": _dlpx_producer_dlpx_consumer,
}


def _handoffs(torch, trial, sync, seed):
    """Stale reads among HANDOFFS randomized hand-offs."""
    rng = random.Random(seed)
    P, C = torch.cuda.Stream(), torch.cuda.Stream()  # PyTorch's streams are non-blocking
    stale = 0
    for k in range(1, HANDOFFS + 1):
        stale += trial(torch, P, C, rng.randint(1, MAX_ELEMS), rng.randint(0, MAX_CYCLES), k, sync)
    return stale


@pytest.mark.parametrize("kind", HANDOFF_KINDS)
def test_stream_handoffs_never_stale(torch, kind):
    stale = _handoffs(torch, HANDOFF_KINDS[kind], True, seed=1)
    assert stale == 0, f"{kind}: {stale} of {HANDOFFS} synchronised hand-offs read stale data"


@pytest.mark.parametrize("kind", ["dlpx->torch", "torch->dlpx"])
def test_stream_handoffs_without_the_wait_go_stale(torch, kind):
    stale = _handoffs(torch, HANDOFF_KINDS[kind], False, seed=2)
    assert stale >= 1, (f"{kind}: no stale read in {HANDOFFS} unsynchronised hand-offs: the "
                        "hand-off test cannot tell ordered from unordered streams")


def test_events_time_the_device(torch):
    with cuda.Stream(non_blocking=True) as s:
        e0, e1 = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
        e0.record(s)
        with torch.cuda.stream(torch.cuda.ExternalStream(s.cuda_stream)):
            torch.cuda._sleep(20_000_000)  # ~10 ms
        e1.record(s)
        assert not e1.query()
        e1.synchronize()
        assert e1.query() and s.query()
        assert 2.0 < e0.elapsed_time(e1) < 1000.0
        e0.close()
        e1.close()


# ---- (c) the pool: reuse, statistics, limits --------------------------------------------------

STAT_KEYS = ("allocated_bytes.all.current", "allocated_bytes.all.peak",
             "active_bytes.all.current", "active_bytes.all.peak",
             "reserved_bytes.all.current", "reserved_bytes.all.peak",
             "requested_bytes.all.current", "allocation.all.current",
             "allocation.all.allocated", "allocation.all.freed", "segment.all.current",
             "segment.all.allocated", "segment.all.freed", "num_alloc_retries", "num_ooms",
             "memory_limit")


def test_device_facts(torch):
    assert cuda.device_count() == torch.cuda.device_count()
    assert cuda.get_device_name() == torch.cuda.get_device_name(0)
    props = cuda.get_device_properties(0)
    assert props["total_memory"] == torch.cuda.get_device_properties(0).total_memory
    free, total = cuda.mem_get_info()
    assert 0 < free <= total == props["total_memory"]
    assert cuda.driver_version() >= 12000


def test_pool_reuses_blocks_on_the_same_stream():
    cuda.synchronize()
    cuda.empty_cache()
    base = cuda.memory_stats()
    assert set(STAT_KEYS) <= set(base)
    x = dlpx.empty((3 << 20,), "uint8", device="cuda")
    ptr = x.data_ptr
    s = cuda.memory_stats()
    assert s["allocated_bytes.all.current"] - base["allocated_bytes.all.current"] == \
        cuda.pool_round(3 << 20)
    assert s["requested_bytes.all.current"] - base["requested_bytes.all.current"] == 3 << 20
    assert s["segment.all.allocated"] == base["segment.all.allocated"] + 1
    del x
    y = dlpx.empty((3 << 20,), "uint8", device="cuda")  # the cached block, no driver call
    assert y.data_ptr == ptr
    assert cuda.memory_stats()["segment.all.allocated"] == base["segment.all.allocated"] + 1
    del y
    s = cuda.memory_stats()
    assert s["allocated_bytes.all.current"] == base["allocated_bytes.all.current"]
    assert s["allocation.all.allocated"] - base["allocation.all.allocated"] == 2
    assert s["allocation.all.freed"] - base["allocation.all.freed"] == 2
    assert cuda.memory_reserved() >= cuda.pool_round(3 << 20)
    cuda.empty_cache()
    assert cuda.memory_reserved() == base["reserved_bytes.all.current"]
    cuda.reset_peak_memory_stats()
    z = dlpx.empty((64 << 20,), "uint8", device="cuda")
    assert cuda.max_memory_allocated() >= 64 << 20
    del z
    assert cuda.max_memory_allocated() >= 64 << 20 > cuda.memory_allocated()
    cuda.empty_cache()


def test_pool_waits_for_the_old_stream_before_reuse_on_another(torch):
    S, T = torch.cuda.Stream(), torch.cuda.Stream()
    cuda.synchronize()
    cuda.empty_cache()
    x = dlpx.empty((1 << 20,), "uint8", device="cuda", stream=S.cuda_stream)
    ptr = x.data_ptr
    with torch.cuda.stream(S):
        torch.cuda._sleep(200_000_000)  # ~100 ms of pending work on S
    del x  # back to the pool, its stream S still busy
    y = dlpx.empty((1 << 20,), "uint8", device="cuda", stream=T.cuda_stream)
    assert y.data_ptr != ptr, "a block still in use on S was handed out for T"
    z = dlpx.empty((1 << 20,), "uint8", device="cuda", stream=S.cuda_stream)
    assert z.data_ptr == ptr, "on its own stream a freed block is reusable at once"
    del z
    torch.cuda.synchronize()  # S is done: now the block is T's to reuse too
    w = dlpx.empty((1 << 20,), "uint8", device="cuda", stream=T.cuda_stream)
    assert w.data_ptr == ptr
    del w, y
    cuda.empty_cache()


def test_memory_limit_and_out_of_memory():
    cuda.synchronize()
    cuda.empty_cache()
    base = cuda.memory_stats()
    cuda.set_memory_limit(cuda.memory_reserved() + (64 << 20))
    try:
        a = dlpx.empty((40 << 20,), "uint8", device="cuda")
        with pytest.raises(MemoryError, match="limit"):
            dlpx.empty((40 << 20,), "uint8", device="cuda")
        s = cuda.memory_stats()
        assert s["num_ooms"] == base["num_ooms"] + 1
        assert s["memory_limit"] == base["reserved_bytes.all.current"] + (64 << 20)
        del a
        b = dlpx.empty((40 << 20,), "uint8", device="cuda")  # fits again
        del b
    finally:
        cuda.set_memory_limit(None)
    assert cuda.memory_stats()["memory_limit"] == -1
    free, total = cuda.mem_get_info()
    with pytest.raises(MemoryError):  # more than the GPU has: the driver's own OOM
        dlpx.empty((total + (1 << 30),), "uint8", device="cuda")
    c = dlpx.zeros((1 << 20,), "uint8", device="cuda")  # and the pool still works
    assert not c.cpu().numpy().any()
    del c
    h = cuda.host_memory_stats()
    p = dlpx.empty((1 << 20,), "uint8", device="cuda_host")
    assert cuda.host_memory_stats()["allocated_bytes.all.current"] > \
        h["allocated_bytes.all.current"]
    del p
    cuda.empty_cache()
    cuda.empty_cache(host=True)


# ---- (d) no device-memory leak over 100,000 cycles -----------------------------------------------

CYCLES = 100_000
SIZES = [1, 512, 4000, 100_000, 1 << 20, (1 << 20) + 1, 3 << 20, 17 << 20]


def _settled_free():
    cuda.synchronize()
    cuda.empty_cache()
    return cuda.mem_get_info()[0]


def test_no_leak_over_many_cycles():
    rng = random.Random(3)
    live_before = dlpx.stats()["storages_live"]
    free0 = _settled_free()
    stats0 = cuda.memory_stats()
    with cuda.Stream(non_blocking=True) as s:
        streams = [None, s]
        held = []
        for _ in range(CYCLES):  # a few blocks held at a time, on two streams, mixed sizes
            held.append(dlpx.empty((rng.choice(SIZES),), "uint8", device="cuda",
                                   stream=rng.choice(streams)))
            if len(held) > rng.randint(0, 8):
                del held[rng.randrange(len(held))]
        del held
        s.synchronize()
    free1 = _settled_free()
    stats1 = cuda.memory_stats()
    assert dlpx.stats()["storages_live"] == live_before
    assert stats1["allocated_bytes.all.current"] == stats0["allocated_bytes.all.current"]
    assert stats1["allocation.all.allocated"] - stats0["allocation.all.allocated"] == CYCLES
    assert stats1["reserved_bytes.all.current"] == stats0["reserved_bytes.all.current"]
    assert stats1["segment.all.current"] == stats0["segment.all.current"]
    # the driver's count of free bytes is back (2 MiB: its own bookkeeping)
    assert free1 >= free0 - (2 << 20), f"{(free0 - free1) / 2**20:.1f} MiB of the GPU lost"


def test_no_leak_over_many_raw_pool_cycles():
    ffi, lib = dlpx.ffi, dlpx.lib
    dev = ffi.new("DLDevice *", (lib.kDLCUDA, 0))[0]
    p = ffi.new("void **")
    free0 = _settled_free()
    rng = random.Random(4)
    for _ in range(CYCLES):
        n = rng.choice(SIZES)
        assert lib.dlpx_cuda_pool_alloc(dev, n, 0, p) == 0, dlpx._errors.message()
        assert lib.dlpx_cuda_pool_free(dev, p[0], 0) == 0
    assert lib.dlpx_cuda_pool_free(dev, ffi.cast("void *", 12345), 0) != 0  # not the pool's
    free1 = _settled_free()
    assert free1 >= free0 - (2 << 20), f"{(free0 - free1) / 2**20:.1f} MiB of the GPU lost"


# ---- (e) copies: round trips vs NumPy, strided copies vs PyTorch -----------------------------

ROUND_SHAPES = [(), (0,), (0, 3), (7,), (33, 65), (3, 4, 5, 6)]


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda_host", "cuda_managed"])
@pytest.mark.parametrize("name", NUMPY_DTYPES + ML_DTYPES)
def test_round_trip_vs_numpy(name, device):
    for shape in ROUND_SHAPES:
        a = _np_values(name, shape, seed=len(shape))
        d = dlpx.from_dlpack(a).to(device)
        assert d.device == device
        assert d.shape == a.shape and d.dtype == dlpx.dtype(name)
        back = d.cpu()
        assert back.device == "cpu"
        np.testing.assert_array_equal(_bits(back.numpy()), _bits(a))
        np.testing.assert_array_equal(_dlpx_bits(d.copy()), _bits(a))


def test_large_round_trip_and_methods():
    a = np.random.default_rng(5).standard_normal(64 << 20, dtype=np.float32)  # 256 MiB
    h = dlpx.from_dlpack(a)
    d = h.cuda()
    assert d.device == "cuda:0" and d.to("cuda") is d and d.to("cuda", copy=True) is not d
    np.testing.assert_array_equal(d.cpu().numpy(), a)
    pinned = dlpx.empty(a.shape, "float32", device="cuda_host")
    pinned.copy_(d)
    np.testing.assert_array_equal(pinned.numpy(), a)
    d2 = pinned.to("cuda", non_blocking=True)
    cuda.synchronize()
    np.testing.assert_array_equal(d2.cpu().numpy(), a)
    # the host reads dlpx_tensor.__dlpack__(dl_device=cpu) as a finished copy
    np.testing.assert_array_equal(np.from_dlpack(d, device="cpu"), a)


def _views_2d():
    return {
        "column_slice": lambda x: x[:, 5:17],
        "column_step": lambda x: x[:, ::3],
        "rows_and_columns": lambda x: x[3:50:2, 7:],
        "single_column": lambda x: x[:, 4:5],
        "transposed": lambda x: x.T,
        "transposed_slice": lambda x: x[2:40, 1:30].T,
    }


def _views_3d():
    return {
        "slices": lambda x: x[1:4, ::2, 3:20],
        "inner_slice": lambda x: x[:, :, 5:9],
        "permuted": lambda x: _permute(x, (2, 0, 1)),
        "permuted_slice": lambda x: _permute(x[:, 1:, ::2], (1, 2, 0)),
        "middle_step": lambda x: x[:, ::3, :],
    }


STRIDED = [("2d", k, f) for k, f in _views_2d().items()] + \
    [("3d", k, f) for k, f in _views_3d().items()]


@pytest.mark.parametrize("dt", ["float32", "float64", "int16", "uint8", "complex64"])
@pytest.mark.parametrize("rank,name,view", STRIDED, ids=[f"{r}-{n}" for r, n, _ in STRIDED])
def test_strided_copies_vs_torch(torch, rank, name, view, dt):
    tdt = getattr(torch, dt)
    shape = (64, 48) if rank == "2d" else (6, 40, 33)
    n = int(np.prod(shape))
    t = (torch.arange(n, device="cuda") % 251).to(tdt).reshape(shape)
    d = dlpx.from_dlpack(t)
    tv, dv = view(t), view(d)
    # device -> host, strided source
    got = torch.from_dlpack(dv.cpu())
    assert torch.equal(got, tv.cpu())
    # device -> device, strided source into a new C-contiguous tensor
    assert torch.equal(torch.from_dlpack(dv.copy()), tv.contiguous())
    # host -> device into a strided destination; the rest untouched
    z, zref = torch.zeros_like(t), torch.zeros_like(t)
    view(dlpx.from_dlpack(z)).copy_(dlpx.from_dlpack(tv.cpu().contiguous()))
    view(zref).copy_(tv)
    torch.cuda.synchronize()
    assert torch.equal(z, zref)
    # device -> device, strided into strided
    z.zero_()
    view(dlpx.from_dlpack(z)).copy_(dv)
    assert torch.equal(z, zref)
    # host strided source -> device
    hv = view(dlpx.from_dlpack(t.cpu()))
    assert torch.equal(torch.from_dlpack(hv.to("cuda")), tv)


@pytest.mark.parametrize("dt", ["float32", "int8", "complex128"])
def test_negative_strides_vs_numpy(dt):
    a = _np_values(dt, (40, 30))
    d = dlpx.from_dlpack(a).to("cuda")
    for view in (lambda x: x[::-1], lambda x: x[::-2, 3::-1], lambda x: x[5:1:-1, ::-3].T):
        np.testing.assert_array_equal(view(d).cpu().numpy(), view(a))
        np.testing.assert_array_equal(view(d).copy().cpu().numpy(), view(a))


# ---- (f) tensor files to the device vs the safetensors package ---------------------------------

def _checkpoint(torch):
    g = torch.Generator().manual_seed(6)
    t = {
        "w": torch.randn(1024, 4096, generator=g),  # 16 MiB
        "big": torch.randn(64 << 20, generator=g),  # 256 MiB: many staging buffers
        "h": torch.randn(333, 77, generator=g).half(),
        "b": torch.randn(5, 7, 9, generator=g).bfloat16(),
        "d": torch.randn(1000, generator=g).double(),
        "i": torch.arange(-50, 50, dtype=torch.int64),
        "u": torch.arange(256, dtype=torch.uint8),
        "flag": torch.arange(10) % 3 == 0,
        "scalar": torch.tensor(3.5, dtype=torch.float64),
        "empty": torch.zeros(0, 5),
    }
    for name in ("float8_e4m3fn", "float8_e5m2"):
        if hasattr(torch, name):
            t[name] = torch.randn(64, 3, generator=g).to(getattr(torch, name))
    return t


@pytest.fixture(scope="module")
def checkpoint(torch, tmp_path_factory):
    st = pytest.importorskip("safetensors.torch")
    path = str(tmp_path_factory.mktemp("gpu-files") / "model.safetensors")
    tensors = _checkpoint(torch)
    try:
        st.save_file(tensors, path)
    except Exception:  # an older safetensors without float8
        tensors = {k: v for k, v in tensors.items() if not k.startswith("float8")}
        st.save_file(tensors, path)
    return path, st


def _same_tensor_dicts(torch, got, ref):
    assert set(got) == set(ref)
    for k, r in ref.items():
        g = got[k]
        assert g.device == r.device, k
        assert g.dtype == r.dtype and g.shape == r.shape, k
        np.testing.assert_array_equal(_torch_bits(torch, g), _torch_bits(torch, r), err_msg=k)


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_load_file_to_device_matches_safetensors(torch, checkpoint, device):
    path, st = checkpoint
    ref = st.load_file(path, device=device)
    got = dlpx.load_file(path, device=device, framework="torch")
    _same_tensor_dicts(torch, got, ref)
    dl = dlpx.load_file(path, device=device, framework="dlpx", threads=1)
    assert all(v.device == "cuda:0" for v in dl.values())
    _same_tensor_dicts(torch, {k: torch.from_dlpack(v) for k, v in dl.items()}, ref)
    with dlpx.safe_open(path, framework="torch", device=device) as f:
        assert torch.equal(f.get_tensor("w"), ref["w"])


def test_load_file_is_ready_on_the_consumers_stream(torch, checkpoint):
    path, st = checkpoint
    ref = st.load_file(path, device="cuda")
    torch.cuda.synchronize()  # ref's own copies are done before C reads it
    C = torch.cuda.Stream()
    for _ in range(3):
        with torch.cuda.stream(C):  # PyTorch reads on C at once: the copies must be ordered
            got = dlpx.load_file(path, device="cuda", framework="torch")
            same = all(torch.equal(got[k], ref[k]) for k in ("big", "w"))
        assert same
        del got
    torch.cuda.synchronize()


# ---- (g) IPC between two processes ------------------------------------------------------------

IPC_CHILD = textwrap.dedent(r"""
    import pickle, sys
    import numpy as np
    import dlpx, dlpx.cuda as cuda
    assert cuda.is_available(), cuda.why_unavailable()
    cuda.synchronize()  # the driver is up before the producer starts its write
    print("ready", flush=True)
    h = pickle.loads(bytes.fromhex(sys.stdin.readline()))
    want = float(sys.stdin.readline())
    try:
        t = h.open()
    except FileNotFoundError as e:
        print("gone", e, flush=True)
        sys.exit(0)
    got = t.cpu().numpy()
    print("opened", t.device, t.shape, int((got == want).sum()), got.size, flush=True)
    sys.stdin.readline()  # "write"
    t.copy_(dlpx.from_dlpack(np.full(t.shape, 7, dtype=got.dtype)))
    del t
    print("done", flush=True)
""")


def _ipc_api():
    if not hasattr(cuda, "ipc_export"):
        pytest.skip("no IPC API (dlpx.cuda.ipc_export)")
    return cuda.ipc_export


def _ipc_child():
    return subprocess.Popen([sys.executable, "-c", IPC_CHILD], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ))


def _line(p):
    line = p.stdout.readline()
    if not line:
        p.wait(timeout=60)
        raise AssertionError(f"the child process ended (rc {p.returncode}): {p.stderr.read()}")
    return line.split()


def _ipc_cells():
    try:
        return {n for n in os.listdir("/dev/shm") if n.startswith(f"dlpx-cuda-ipc.{os.getpid()}.")}
    except OSError:
        return set()


def test_ipc_two_processes(torch):
    ipc_export = _ipc_api()
    n = 1 << 22  # 16 MiB of float32
    x = dlpx.zeros((n,), "float32", device="cuda")
    src = dlpx.empty((n,), "float32", device="cuda_host")
    src.numpy()[...] = 3.0
    cells = _ipc_cells()
    child, late = _ipc_child(), None
    try:
        assert _line(child) == ["ready"]
        # the write is still pending when the handle leaves: the child's stream
        # must wait for the producer's event, not find the zeros
        P = torch.cuda.Stream()
        with torch.cuda.stream(P):
            torch.cuda._sleep(400_000_000)  # ~200 ms
        x.copy_(src, non_blocking=True, stream=P.cuda_stream)
        exp = ipc_export(x)
        child.stdin.write(pickle.dumps(exp.handle).hex() + "\n3.0\n")
        child.stdin.flush()
        opened = _line(child)
        assert opened[0] == "opened" and opened[-2] == opened[-1] == str(n), opened
        assert exp.importers == 1
        child.stdin.write("write\n")
        child.stdin.flush()
        assert _line(child) == ["done"]
        assert child.wait(timeout=60) == 0, child.stderr.read()
        assert (x.cpu().numpy() == 7).all(), "the child's write is not in the producer's memory"
        deadline = time.monotonic() + 10
        while exp.importers and time.monotonic() < deadline:
            time.sleep(0.05)
        assert exp.importers == 0
        exp.close()
        # after close, a new process cannot open the handle
        late = _ipc_child()
        assert _line(late) == ["ready"]
        late.stdin.write(pickle.dumps(exp.handle).hex() + "\n0\n")
        late.stdin.flush()
        assert _line(late)[0] == "gone"
        assert late.wait(timeout=60) == 0
    finally:
        for p in (child, late):
            if p is not None and p.poll() is None:
                p.kill()
    torch.cuda.synchronize()
    assert _ipc_cells() <= cells, "the export left its reference cell in /dev/shm"


def test_ipc_of_a_torch_tensor(torch):
    ipc_export = _ipc_api()
    base = torch.full((3, 1 << 20), 5.0, device="cuda")
    t = base[1]  # an offset into PyTorch's allocation
    with ipc_export(t) as exp:
        child = _ipc_child()
        try:
            assert _line(child) == ["ready"]
            child.stdin.write(pickle.dumps(exp.handle).hex() + "\n5.0\n")
            child.stdin.flush()
            opened = _line(child)
            assert opened[0] == "opened" and opened[-2] == opened[-1] == str(1 << 20), opened
            child.stdin.write("write\n")
            child.stdin.flush()
            assert _line(child) == ["done"]
            assert child.wait(timeout=60) == 0, child.stderr.read()
        finally:
            if child.poll() is None:
                child.kill()
    torch.cuda.synchronize()
    assert (base[1] == 7).all() and (base[0] == 5).all() and (base[2] == 5).all()
