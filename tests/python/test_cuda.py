"""dlpx.cuda and CUDA tensors against the driver's test double
(tests/fakecuda.c, loaded through DLPX_LIBCUDA by conftest.py): devices,
streams and events, the pools' statistics and limits, copies of every
layout to and from the device, __dlpack__'s stream rules, from_dlpack's
stream, file loads to the device, and the errors without a driver.  With
DLPX_TEST_CUDA=real (the GPU machine) the tests that need the double
skip; tests/python/test_cuda_gpu.py covers the real driver."""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import dlpx
import dlpx.cuda as cuda
from conftest import FAKE_CUDA, NUMPY_VERSIONED
import fakecuda

pytestmark = pytest.mark.skipif(not FAKE_CUDA, reason="the CUDA driver double is not in use "
                                "(DLPX_TEST_CUDA=real, or no C compiler to build it)")

CTL = fakecuda.Control(FAKE_CUDA) if FAKE_CUDA else None


@pytest.fixture(autouse=True)
def _clean():
    CTL.delay(0)
    yield
    CTL.delay(0)


def test_devices():
    assert cuda.is_available()
    assert cuda.why_unavailable() == ""
    assert cuda.device_count() == 2
    assert "fake" in cuda.get_device_name(1)
    props = cuda.get_device_properties("cuda:1")
    assert props["total_memory"] == 1 << 30
    free, total = cuda.mem_get_info()
    assert 0 < free <= total
    assert cuda.driver_version() >= 12000
    cuda.synchronize()
    cuda.synchronize("cuda:1")
    with pytest.raises(ValueError, match="no CUDA device 5"):
        cuda.synchronize(5)
    with pytest.raises(ValueError, match="not a CUDA device"):
        cuda.synchronize("cpu")
    with pytest.raises(ValueError, match="negative"):
        cuda.synchronize(-1)


def test_streams_and_events():
    before = CTL.live_streams()
    s = cuda.Stream()
    assert s.cuda_stream > 2 and s.device == "cuda:0"
    assert s.query()
    e0, e1 = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
    e0.record(s)
    CTL.delay(20000)
    dlpx.zeros((256,), device="cuda", stream=s)
    e1.record(s)
    assert not e1.query()
    e1.synchronize()
    assert e0.elapsed_time(e1) >= 15
    plain = cuda.Event()
    with pytest.raises(RuntimeError, match="INVALID_HANDLE"):
        plain.elapsed_time(e1)
    t = cuda.Stream(non_blocking=True)
    t.wait_stream(s)
    t.wait_event(e1)
    assert s.record_event().query() in (True, False)
    with cuda.stream(t):
        assert cuda.current_stream() == t
    assert cuda.current_stream().cuda_stream == 0
    assert cuda.default_stream().cuda_stream == 0
    for x in (s, t, e0, e1, plain):
        x.close()
        x.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        s.cuda_stream
    with cuda.Stream() as u:
        pass
    with pytest.raises(ValueError, match="closed"):
        u.synchronize()
    assert CTL.live_streams() == before
    ext = cuda.ExternalStream(12345)
    assert ext.cuda_stream == 12345
    ext.close()  # borrowed: not destroyed


def _host(shape, dtype="float32"):
    a = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)
    return a, dlpx.from_dlpack(a)


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "cuda_host", "cuda_managed"])
def test_to_and_back(device, no_leaks):
    a, h = _host((5, 7))
    d = h.to(device)
    assert d.device == device and d.shape == (5, 7) and d.dtype == dlpx.float32
    if device.startswith("cuda") and d.device.device_type == dlpx.DLDeviceType.kDLCUDA:
        assert CTL.is_device_pointer(d.data_ptr)
        assert d.is_cuda
    back = d.cpu()
    assert back.device == "cpu"
    np.testing.assert_array_equal(back.numpy(), a)
    assert d.to(device) is d
    assert d.to(device, copy=True) is not d
    np.testing.assert_array_equal(d.copy().cpu().numpy(), a)
    np.testing.assert_array_equal(d.clone().cpu().numpy(), a)
    del d, back


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 9), cols=st.integers(1, 9),
       r0=st.integers(0, 3), rs=st.sampled_from([1, 2, -1, -2]),
       c0=st.integers(0, 3), cs=st.sampled_from([1, 2, -1, 3]), transpose=st.booleans(),
       dtype=st.sampled_from(["uint8", "int16", "float32", "float64", "complex128"]))
def test_strided_views_roundtrip(rows, cols, r0, rs, c0, cs, transpose, dtype):
    a, h = _host((rows + 3, cols + 3), dtype)
    d = h.to("cuda")
    view_a = a[r0::rs, c0::cs]
    view_d = d[r0::rs, c0::cs]
    if transpose:
        view_a, view_d = view_a.T, view_d.T
    np.testing.assert_array_equal(view_d.cpu().numpy(), view_a)
    # into a strided device destination, the rest untouched
    z = dlpx.zeros(a.shape, dtype, device="cuda")
    dest = z[r0::rs, c0::cs]
    if transpose:
        dest = dest.T
    dest.copy_(dlpx.from_dlpack(np.ascontiguousarray(view_a)))
    want = np.zeros_like(a)
    (want[r0::rs, c0::cs].T if transpose else want[r0::rs, c0::cs])[...] = view_a
    np.testing.assert_array_equal(z.cpu().numpy(), want)


def test_copy_between_devices_and_broadcast():
    a, h = _host((3, 4))
    d = dlpx.empty((3, 4), device="cuda")
    d.copy_(h)
    pinned = dlpx.empty((3, 4), device="cuda_host")
    pinned.copy_(d)
    np.testing.assert_array_equal(pinned.numpy(), a)
    row = dlpx.from_dlpack(np.arange(4, dtype="float32"))
    d.copy_(row)  # broadcast
    np.testing.assert_array_equal(d.cpu().numpy(), np.broadcast_to(np.arange(4), (3, 4)))
    d2 = dlpx.empty((3, 4), device="cuda:1")
    with pytest.raises(ValueError, match="peer"):
        d2.copy_(d)
    with pytest.raises(ValueError, match="broadcast"):
        d.copy_(dlpx.zeros((2, 4)))
    with pytest.raises(ValueError, match="read-only"):
        d.as_readonly().copy_(h)
    e = dlpx.empty((0, 3), device="cuda")
    assert e.cpu().shape == (0, 3)
    s = dlpx.zeros((), "int64", device="cuda")
    assert s.cpu().tolist() == 0


def test_dlpack_protocol_streams():
    d = dlpx.zeros((4,), device="cuda")
    assert d.__dlpack_device__() == (dlpx.DLDeviceType.kDLCUDA, 0)
    with cuda.Stream() as s:
        for stream in (None, 1, 2, -1, s.cuda_stream):
            cap = d.__dlpack__(stream=stream, max_version=(1, 3))
            assert type(cap).__name__ == "PyCapsule"
        with pytest.raises(ValueError, match="ambiguous"):
            d.__dlpack__(stream=0)
        with pytest.raises(TypeError):
            d.__dlpack__(stream="1")
        with pytest.raises(ValueError, match="not a stream"):
            d.__dlpack__(stream=-5)
        # ordering: the consumer's stream waits for the tensor's (an event, no host wait)
        d2 = dlpx.zeros((4,), device="cuda", stream=s)
        rec = CTL.calls("cuEventRecord")
        syncs = CTL.calls("cuStreamSynchronize") + CTL.calls("cuCtxSynchronize")
        d2.__dlpack__(stream=1)
        assert CTL.calls("cuEventRecord") == rec + 1
        d2.__dlpack__(stream=s.cuda_stream)  # its own stream: nothing to do
        d2.__dlpack__(stream=-1)
        assert CTL.calls("cuEventRecord") == rec + 1
        assert CTL.calls("cuStreamSynchronize") + CTL.calls("cuCtxSynchronize") == syncs
        del d2
    # host streams: refused for host memory
    with pytest.raises(ValueError, match="stream must be None"):
        dlpx.zeros(3).__dlpack__(stream=1)


def test_dlpack_to_host_copy():
    a, h = _host((2, 3))
    d = h.to("cuda")
    cap = d.__dlpack__(max_version=(1, 3), dl_device=(1, 0))
    back = dlpx.from_dlpack(cap)
    assert back.device == "cpu"
    np.testing.assert_array_equal(back.numpy(), a)
    if NUMPY_VERSIONED:  # NumPy >= 2.1 asks for dl_device
        np.testing.assert_array_equal(np.from_dlpack(d, device="cpu"), a)
    with pytest.raises(BufferError, match="only as a copy"):
        d.__dlpack__(max_version=(1, 3), dl_device=(1, 0), copy=False)
    with pytest.raises(BufferError):
        d.__dlpack__(max_version=(1, 3), dl_device=(2, 1))
    cap = d.__dlpack__(max_version=(1, 3), copy=True)  # a copy on the device
    c = dlpx.from_dlpack(cap)
    assert c.device == "cuda:0" and c.data_ptr != d.data_ptr
    np.testing.assert_array_equal(c.cpu().numpy(), a)


def test_from_dlpack_stream_marks_the_storage():
    d = dlpx.zeros((8,), device="cuda")
    with cuda.Stream() as s:
        t = dlpx.from_dlpack(d, stream=s)
        assert t.data_ptr == d.data_ptr
        ptr = dlpx.lib.dlpx_tensor_storage(dlpx._bridge.handle(t))
        assert dlpx.lib.dlpx_cuda_storage_stream(ptr) == s.cuda_stream
        t2 = dlpx.from_dlpack(d, stream=-1)
        assert t2.data_ptr == d.data_ptr
        del t, t2
    with pytest.raises(ValueError, match="ambiguous"):
        dlpx.from_dlpack(d, stream=0)


def test_memory_stats_limit_and_empty_cache():
    cuda.empty_cache()
    base = cuda.memory_stats()
    for key in ("allocated_bytes.all.current", "reserved_bytes.all.peak",
                "active_bytes.all.current", "allocation.all.allocated", "num_ooms",
                "segment.all.current", "num_alloc_retries", "requested_bytes.all.current"):
        assert key in base
    x = dlpx.empty((1000,), "uint8", device="cuda")
    assert cuda.memory_allocated() - base["allocated_bytes.all.current"] == 1024
    assert cuda.memory_stats()["requested_bytes.all.current"] - \
        base["requested_bytes.all.current"] == 1000
    del x
    assert cuda.memory_allocated() == base["allocated_bytes.all.current"]
    assert cuda.memory_reserved() >= 1024
    cuda.empty_cache()
    assert cuda.memory_reserved() == base["reserved_bytes.all.current"]
    cuda.set_memory_limit(cuda.memory_reserved() + (4 << 20))
    try:
        y = dlpx.empty((3 << 20,), "uint8", device="cuda")
        with pytest.raises(MemoryError, match="CUDA out of memory.*limit"):
            dlpx.empty((3 << 20,), "uint8", device="cuda")
        assert cuda.memory_stats()["num_ooms"] == base["num_ooms"] + 1
        del y
    finally:
        cuda.set_memory_limit(None)
    with pytest.raises(ValueError):
        cuda.set_memory_limit(-5)
    with pytest.raises(MemoryError, match="the driver has none"):
        dlpx.empty((2 << 30,), "uint8", device="cuda")
    h = cuda.host_memory_stats()
    p = dlpx.empty((10,), device="cuda_host")
    assert cuda.host_memory_stats()["allocated_bytes.all.current"] > \
        h["allocated_bytes.all.current"]
    del p
    cuda.reset_peak_memory_stats()
    assert cuda.max_memory_allocated() == cuda.memory_allocated()
    assert cuda.pool_round(1) == 512 and cuda.pool_round((1 << 20) + 1) == 2 << 20
    cuda.empty_cache()
    cuda.empty_cache(host=True)


def test_driver_failures_are_clean_errors(no_leaks):
    CTL.fail("cuMemcpyAsync", 0, 700)
    with pytest.raises(RuntimeError, match="ILLEGAL_ADDRESS"):
        dlpx.zeros(4).to("cuda")
    CTL.fail("cuStreamCreate", 0, 2)
    with pytest.raises(MemoryError):
        cuda.Stream()
    CTL.fail("cuMemsetD8Async", 0, 1)
    with pytest.raises(RuntimeError, match="INVALID_VALUE"):
        dlpx.zeros(4, device="cuda")


def test_load_file_to_device(tmp_path, no_leaks):
    tensors = {"w": np.arange(300000, dtype="float32").reshape(300, 1000),
               "b": np.arange(5, dtype="int16"), "e": np.zeros((0, 2), "float64")}
    path = str(tmp_path / "m.safetensors")
    dlpx.save_file({k: dlpx.from_dlpack(v) for k, v in tensors.items()}, path, checksum=True)
    got = dlpx.load_file(path, device="cuda", framework="dlpx")
    assert set(got) == set(tensors)
    for k, v in tensors.items():
        assert got[k].device == "cuda:0"
        np.testing.assert_array_equal(got[k].cpu().numpy(), v)
    got1 = dlpx.load_file(path, device="cuda:1", framework="dlpx", verify=True)
    assert got1["w"].device == "cuda:1"
    with dlpx.safe_open(path, framework="dlpx", device="cuda") as f:
        w = f.get_tensor("w")
        assert w.device == "cuda:0"
        np.testing.assert_array_equal(w.cpu().numpy(), tensors["w"])
    del got, got1, w
    cuda.empty_cache()
    cuda.empty_cache("cuda:1")


NO_DRIVER = """
import dlpx, dlpx.cuda as c
assert not c.is_available()
assert "no CUDA driver" in c.why_unavailable(), c.why_unavailable()
assert c.device_count() == 0
for f in (lambda: dlpx.empty(3, device="cuda"), c.Stream, lambda: dlpx.zeros(3).to("cuda")):
    try:
        f()
    except RuntimeError as e:
        assert "no CUDA driver" in str(e), e
    else:
        raise AssertionError("no error")
assert dlpx.zeros(3).to("cpu").device == "cpu"
print("ok")
"""


def test_without_a_driver():
    env = dict(os.environ, DLPX_LIBCUDA="/nonexistent/libcuda.so.1")
    r = subprocess.run([sys.executable, "-c", NO_DRIVER], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


IPC_CHILD = """
import pickle, sys
import numpy as np
import dlpx, dlpx.cuda as c
h = pickle.loads(sys.stdin.buffer.read())
t = h.open()
t2 = h.open()
assert t.data_ptr == t2.data_ptr and t.device == "cuda:0"
print(t.cpu().numpy().tolist(), flush=True)
sys.stdin.close()
"""


def test_ipc_between_processes():
    import pickle
    a, h = _host((3, 4))
    d = h.to("cuda")[:, 1:3]  # a view: offset and strides travel with the handle
    with cuda.ipc_export(d) as ex:
        blob = pickle.dumps(ex.handle)
        assert ex.importers == 0
        r = subprocess.run([sys.executable, "-c", IPC_CHILD], input=blob, capture_output=True,
                           timeout=120, env=dict(os.environ))
        assert r.returncode == 0, r.stderr.decode()
        assert eval(r.stdout.decode()) == a[:, 1:3].tolist()
        assert ex.importers == 0  # the child closed it when it exited
        with pytest.raises(ValueError, match="another process"):
            ex.handle.open()
    # closed: a new process cannot open it any more
    r = subprocess.run([sys.executable, "-c", IPC_CHILD], input=blob, capture_output=True,
                       timeout=120, env=dict(os.environ))
    assert r.returncode != 0 and b"FileNotFoundError" in r.stderr
    with pytest.raises(ValueError, match="not a dlpx CUDA IPC handle"):
        fakecuda_handle = cuda.IpcHandle(b"x" * 5, "float32", (1,), (1,), 0)
        del fakecuda_handle
    with pytest.raises(ValueError, match="only CUDA device memory"):
        cuda.ipc_export(dlpx.zeros(3, device="cuda_host"))
