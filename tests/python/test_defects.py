"""Regression tests for the defects found in review (issue 7), one or more
per defect, numbered as in the issue.  Each failed before its fix.  Crash
and hang cases run in a child interpreter, so a regression fails the test
instead of killing the suite."""

import ctypes
import gc
import os
import pickle
import subprocess
import sys
import textwrap
import threading

import pytest

import dlpx
from dlpack_ctypes import ForeignProducer

np = pytest.importorskip("numpy")


def run_child(code, timeout=120):
    """Runs |code| in a fresh interpreter; returns (returncode, output)."""
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, timeout=timeout, env=env)
    return r.returncode, r.stdout + r.stderr


def live():
    s = dlpx.stats()
    return s["storages_live"], s["tensors_live"], s["exports_live"]


# ---- 1. copy_ between packed and padded sub-byte views at one address -------------


def test_1_copy_packed_to_padded_at_the_same_address(no_leaks):
    buf = bytearray(8)
    buf[0], buf[1] = 0x21, 0x43  # float4 elements 1, 2, 3, 4, packed
    packed = dlpx.frombuffer(buf, "float4_e2m1fn")           # 16 elements
    padded = dlpx.frombuffer(buf, "uint8").view("float4_e2m1fn")  # 8, one per byte
    assert packed.data_ptr == padded.data_ptr
    padded[:4].copy_(packed[:4])
    assert list(buf[:4]) == [1, 2, 3, 4]
    buf[0:4] = bytes([5, 6, 7, 8])
    packed[:4].copy_(padded[:4])
    assert list(buf[:2]) == [0x65, 0x87]
    del packed, padded


# ---- 2. no dlpx call hangs while cffi holds its parsing lock ------------------------

# Every public operation, as a function of a few inputs; run from a signal
# handler or gc callback, or with cffi's lock held, it must finish.
OPS = """
import numpy as np, dlpx
def every_op():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    t = dlpx.from_dlpack(a)
    t = dlpx.from_dlpack(a.__dlpack__())
    z = dlpx.zeros((2, 3), "bfloat16"); e = dlpx.empty(5, "int16x2".split("x")[0])
    b = dlpx.frombuffer(bytearray(16), "float32")
    v = t[1:, ::-1, None, ...].T
    v.permute(3, 2, 1, 0); t.swapaxes(0, 2); t.reshape(-1); t.view(24); t.view("int32")
    t.squeeze(); t.unsqueeze(0); t[0].broadcast_to((3, 3, 4)); t.as_readonly()
    t.contiguous(); v.copy(); v.copy("F"); z.copy_(dlpx.zeros((2, 3), "bfloat16"))
    t.mT; t.shape; t.strides; t.byte_strides; t.dtype; t.device; t.nbytes; t.data_ptr
    t.is_contiguous("F"); repr(t); len(t); t.readonly; t.itemsize
    np.from_dlpack(v); t.__dlpack__(); t.__dlpack__(max_version=(1, 3), copy=True)
    t.__dlpack_device__(); t.numpy(); z.numpy(); b.tolist()
    dlpx.dtype("float8_e4m3fnuz"); dlpx.dtype(np.uint16); dlpx.dtype("float32x3")
    dlpx.stats(); dlpx.Device(1, 0) == "cpu"
    try:
        dlpx.zeros((-1,))
    except ValueError:
        pass
    try:
        t.view("nope")
    except TypeError:
        pass
"""


def test_2_dlpx_with_cffi_parse_lock_held():
    """cffi parses a type on first use under a lock that is not reentrant:
    Python code that runs while this thread holds it (a signal handler, a
    gc callback) must not need it.  dlpx parses everything at import."""
    rc, out = run_child(OPS + """
import dlpx
lock = dlpx.ffi._lock  # what cffi holds while it parses a declaration
with lock:
    every_op()
    every_op()
print("done")
""", timeout=60)
    assert rc == 0 and "done" in out, out


@pytest.mark.slow
def test_2_dlpx_from_gc_callbacks_and_signal_handlers_while_cffi_parses():
    rc, out = run_child(OPS + """
import gc, signal, dlpx
every_op()  # lazy imports (ml_dtypes) done: what is tested is cffi's lock
calls = {"gc": 0, "signal": 0}
def on_gc(phase, info):
    if phase == "start":
        calls["gc"] += 1
        every_op()
def on_alarm(signum, frame):
    calls["signal"] += 1
    every_op()
gc.callbacks.append(on_gc)
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
gc.collect(); gc.freeze()
gc.set_threshold(1, 1, 1)  # collect on nearly every allocation: inside cffi's parser too
ffi = dlpx.ffi
for i in range(150):  # user code parsing new declarations with dlpx's cffi
    ffi.typeof("struct { int a[%d]; double b; } *" % (i + 1))
signal.setitimer(signal.ITIMER_REAL, 0, 0)
gc.callbacks.remove(on_gc)
print("done", calls["gc"] > 0)
""", timeout=120)
    assert rc == 0 and "done True" in out, out
    assert "Exception ignored" not in out, out


# ---- 3. sub-interpreters -----------------------------------------------------------------


def test_3_sub_interpreter_is_refused_and_main_keeps_working():
    rc, out = run_child("""
import importlib, sys
try:
    interps = importlib.import_module("_interpreters")
except ImportError:
    try:
        interps = importlib.import_module("_xxsubinterpreters")
    except ImportError:
        print("SKIP no sub-interpreter module"); sys.exit(0)
import dlpx
b = bytearray(64)
keep = dlpx.frombuffer(b, "float32")[2:]
before = dlpx.stats()["python_refs_leaked"]
code = '''
try:
    import dlpx
except ImportError as exc:
    result = "refused: %s" % exc
else:
    result = "imported"
assert result.startswith("refused"), result
'''
sub = None
for make in (lambda: interps.create("legacy"), lambda: interps.create(isolated=False),
             interps.create):  # a legacy (shared-GIL) sub-interpreter where there is one
    try:
        sub = make()
        break
    except (TypeError, ValueError):
        continue
failure = None
try:
    r = interps.run_string(sub, code)
    if r is not None:
        failure = r
except Exception as exc:  # RunFailedError on 3.11-3.12
    failure = exc
interps.destroy(sub)
assert failure is None, failure
assert dlpx.lib.dlpx_py_active() == 1, "the sub-interpreter switched the bridge off"
t = dlpx.zeros(3)
del keep
import gc; gc.collect()
b.append(1)  # the buffer export was released: not leaked by a dead registration
assert dlpx.stats()["python_refs_leaked"] == before
print("ok")
""")
    if "SKIP" in out:
        pytest.skip(out.strip())
    assert rc == 0 and "ok" in out, out


# ---- 4. no pure-Python operation on a dlpx object crashes ----------------------------------


def test_4_deleting_or_replacing_the_owner_capsule_never_frees_a_handle_in_use():
    rc, out = run_child("""
import copy, gc, pickle, weakref, dlpx
def attempts():
    a = dlpx.zeros((4, 5))
    b = dlpx.zeros((2,), "int8")
    yield "del _cap", lambda: delattr(a, "_cap")
    a = dlpx.zeros((4, 5))
    yield "object.__delattr__", lambda: object.__delattr__(a, "_cap")
    a = dlpx.zeros((4, 5))
    yield "slot descriptor delete", lambda: type(a)._cap.__delete__(a)
    a = dlpx.zeros((4, 5))
    yield "swap capsules", lambda: setattr(a, "_cap", b._cap)
    a = dlpx.zeros((4, 5))
    yield "garbage _cap", lambda: setattr(a, "_cap", 12345)
    a = dlpx.zeros((4, 5))
    yield "garbage _meta", lambda: setattr(a, "_meta", ("x",) * 11)
    a = dlpx.zeros((4, 5))
    yield "unbound tensor", lambda: object.__new__(dlpx.Tensor)
    yield "foreign capsule as _cap", lambda: setattr(a, "_cap", a.__dlpack__())
ops = [lambda t: t[1], lambda t: t.T, lambda t: t.shape, lambda t: t.reshape(-1),
       lambda t: t.copy(), lambda t: t.__dlpack__(), lambda t: t.__dlpack__(max_version=(1, 0)),
       lambda t: t.__dlpack_device__(), lambda t: t.numpy(), lambda t: repr(t),
       lambda t: t.copy_(dlpx.zeros((4, 5))), lambda t: dlpx.from_dlpack(t),
       lambda t: pickle.dumps(t), lambda t: copy.deepcopy(t), lambda t: t.data_ptr,
       lambda t: type(t).__dlpack_c_exchange_api__]
for name, act in attempts():
    r = act()
    victim = r if isinstance(r, dlpx.Tensor) else None
    gc.collect()
    for _ in range(100):  # churn the allocator: freed handles would be reused
        dlpx.zeros((3, 3))
    for op in ops:
        for t in [victim] if victim is not None else []:
            try:
                op(t)
            except (TypeError, AttributeError, ValueError, BufferError, IndexError):
                pass
print("survived")
""")
    assert rc == 0 and "survived" in out, out


def test_4_deleted_owner_gives_a_clean_typeerror():
    t = dlpx.zeros((4, 5))
    del t._cap
    for op in (lambda: t[1], lambda: t.T, lambda: t.copy(), lambda: t.__dlpack__(),
               lambda: t.__dlpack_device__(), lambda: dlpx.zeros((4, 5)).copy_(t)):
        with pytest.raises(TypeError, match="tensor handle"):
            op()
    assert "without a tensor handle" in repr(t)
    u = object.__new__(dlpx.Tensor)
    with pytest.raises(TypeError):
        u.shape
    with pytest.raises(TypeError, match="not constructed directly"):
        dlpx.Tensor()


def test_4_copy_deepcopy_and_pickle_are_by_value(no_leaks):
    import copy
    t = dlpx.from_dlpack(np.arange(12.0).reshape(3, 4))[:, 1:]
    for c in (copy.copy(t), copy.deepcopy(t), pickle.loads(pickle.dumps(t))):
        assert c.shape == t.shape and c.dtype == t.dtype
        assert c.data_ptr != t.data_ptr
        assert np.array_equal(np.from_dlpack(c), np.from_dlpack(t))
    ro = pickle.loads(pickle.dumps(dlpx.frombuffer(b"\x01\x02\x03\x04", "uint8")))
    assert ro.readonly and ro.tolist() == [1, 2, 3, 4]
    f4 = dlpx.frombuffer(bytearray(b"\x21\x43"), "float4_e2m1fn")
    back = pickle.loads(pickle.dumps(f4))
    assert back.shape == (4,) and back.dtype == "float4_e2m1fn"
    assert back.copy_(f4) is back  # writable, as the original
    del t, c, ro, f4, back


# ---- 5. read-only data never becomes writable through PyTorch -------------------------------


def test_5_torch_from_dlpack_of_readonly_data_cannot_write_it():
    torch = pytest.importorskip("torch")
    data = bytes(range(16))
    t = dlpx.frombuffer(data, "uint8")
    assert t.readonly
    x = torch.from_dlpack(t)  # copy=None: PyTorch gets a private copy
    x[0] = 99
    assert data[0] == 0 and x[0] == 99
    assert x.data_ptr() != t.data_ptr
    with pytest.raises(BufferError, match="read-only"):
        torch.from_dlpack(t, copy=False)
    assert t.torch().data_ptr() != t.data_ptr
    with pytest.raises(BufferError):
        t.torch(copy=False)
    # a writable view of the same kind of data still aliases
    w = dlpx.frombuffer(bytearray(data), "uint8")
    assert torch.from_dlpack(w).data_ptr() == w.data_ptr


# ---- 6. asynchronous exceptions leak nothing ------------------------------------------------


class _Interrupt(BaseException):
    pass


def _interrupt_after(n):
    """A trace function raising _Interrupt at the |n|-th opcode run in dlpx's
    Python code, as a signal handler's KeyboardInterrupt would."""
    pkg = os.path.dirname(dlpx.__file__)
    count = [0]

    def local(frame, event, arg):
        # opcode and line events: Python 3.12 gives settrace no opcode
        # events, only lines
        if event in ("opcode", "line"):
            count[0] += 1
            if count[0] == n:
                raise _Interrupt
        return local

    def tracer(frame, event, arg):
        if frame.f_code.co_filename.startswith(pkg):
            frame.f_trace_opcodes = True
            return local
        return None

    return tracer, count


def _attempt(fn, env, n):
    """Runs fn(env) interrupted at its |n|-th opcode, in a thread of its own:
    the thread's end drops whatever its exception state still refers to (an
    exception raised inside an except block leaves the handled one there),
    so what stays alive is what dlpx failed to hand to an owner."""
    done = []

    def body():
        tracer, _ = _interrupt_after(n)
        sys.settrace(tracer)
        try:
            fn(env)
            done.append(True)
        except _Interrupt:
            pass
        finally:
            sys.settrace(None)

    th = threading.Thread(target=body)
    th.start()
    th.join()
    return bool(done)


ASYNC_CASES = {
    "zeros": lambda env: dlpx.zeros((3, 4), "float32"),
    "frombuffer": lambda env: dlpx.frombuffer(env["buf"], "float32"),
    "frombuffer_format": lambda env: dlpx.frombuffer(memoryview(env["buf"]).cast("f")),
    "from_dlpack": lambda env: dlpx.from_dlpack(env["arr"]),
    "from_capsule": lambda env: dlpx.from_dlpack(env["arr"].__dlpack__()),
    "view_ops": lambda env: env["t"][1:, ::-1].T.reshape(-1).view("int32").unsqueeze(0),
    "copy": lambda env: env["t"].copy("F").contiguous(),
    "copy_": lambda env: env["t"].copy_(env["arr"]),
    "export": lambda env: env["t"].__dlpack__(max_version=(1, 3), copy=True),
    "numpy": lambda env: env["t"].numpy(),
    "readonly_export": lambda env: env["ro"].__dlpack__(max_version=(1, 3)),
}


@pytest.mark.skipif(sys.version_info < (3, 10), reason=(
    "an exception raised by a trace function corrupts Python 3.9's own state (SystemError: "
    "'returned a result with an error set'): the injection needs 3.10 or newer"))
@pytest.mark.parametrize("case", list(ASYNC_CASES))
def test_6_async_exception_at_every_opcode_leaks_nothing(case):
    env = {"buf": bytearray(48), "arr": np.arange(12, dtype=np.float32).reshape(3, 4)}
    env["t"] = dlpx.from_dlpack(np.zeros((3, 4), np.float32))
    env["ro"] = dlpx.frombuffer(b"\0" * 48, "float32")
    fn = ASYNC_CASES[case]
    gc.collect()
    gc.freeze()  # each collection below sees only what the attempt made
    try:
        base = live()
        n, completed = 1, False
        while not completed:
            completed = _attempt(fn, env, n)
            gc.collect()
            assert live() == base, f"{case}: interrupted at opcode {n}: {live()} != {base}"
            env["buf"].append(0)  # not exported any more: no reference was leaked
            del env["buf"][-1]
            n += 1
            assert n < 5000
    finally:
        gc.unfreeze()
    assert n > 10, f"{case}: only {n} points were interrupted"  # the injection works


# ---- 7. a refused tensor's error message survives its deleter -----------------------------


def test_7_refusal_message_survives_a_deleter_that_calls_dlpx():
    producer = ForeignProducer()
    buf = (ctypes.c_float * 6)()
    cap = producer.versioned(buf, (2, -3))  # a negative extent: refused
    original = producer._on_delete

    def chatty(ptr):  # a deleter that uses dlpx (and fails) while it runs
        out = dlpx.ffi.new("DLDataType *")
        assert dlpx.lib.dlpx_dtype_parse(b"no such dtype", out) != 0
        original(ptr)

    producer._on_delete = chatty
    producer._vdel = type(producer._vdel)(chatty)
    import dlpack_ctypes
    m = dlpack_ctypes.peek(cap)
    m.deleter = producer._vdel
    with pytest.raises(BufferError, match="negative"):
        dlpx.from_dlpack(cap)
    assert producer.deleted == 1


# ---- 8. zero-element tensors with huge other extents -----------------------------------------


def test_8_zero_element_tensors_with_huge_extents(no_leaks):
    big = 2**62
    for shape in [(0, big, big), (big, big, 0), (2**63 - 1, 0, 2**63 - 1)]:
        t = dlpx.zeros(shape)
        assert t.size == 0 and t.nbytes == 0 and t.is_contiguous() and t.is_contiguous("F")
        for v in (t[1:], t[::-3], t[..., ::2], t.T, t.reshape(0), t.reshape(shape), t.squeeze(),
                  t.unsqueeze(1), t.view("int32"), t.copy(), t.copy("F"), t.contiguous(),
                  dlpx.from_dlpack(t.__dlpack__(max_version=(1, 3))),
                  dlpx.from_dlpack(t.__dlpack__())):
            assert v.size == 0
        if shape[0]:
            assert t[shape[0] - 1].size == 0
        del t, v


# ---- 9. PyTorch is recognised exactly, not by a name prefix ---------------------------------


@pytest.mark.parametrize("module", ["torchvision.fake", "torchhelpers", "torch_utils", "mytorch"])
def test_9_code_outside_torch_is_not_treated_as_pytorch(module):
    pytest.importorskip("torch")
    t = dlpx.from_dlpack(np.arange(6.0))[::-1]  # negative strides: refused to PyTorch only
    ns = {"__name__": module, "t": t}
    exec("cap = t.__dlpack__(max_version=(1, 0))", ns)
    u = dlpx.from_dlpack(ns["cap"])
    assert u.data_ptr == t.data_ptr
    ro = dlpx.frombuffer(b"\0" * 8, "uint8")  # read-only: copied for PyTorch only
    ns = {"__name__": module, "t": ro}
    exec("cap = t.__dlpack__(max_version=(1, 0))", ns)
    assert dlpx.from_dlpack(ns["cap"]).data_ptr == ro.data_ptr


def test_9_pytorch_itself_is_recognised():
    torch = pytest.importorskip("torch")
    t = dlpx.from_dlpack(np.arange(6.0))[::-1]
    with pytest.raises(BufferError, match="188023"):
        torch.from_dlpack(t)
    ns = {"__name__": "torch.utils.dlpack", "t": t}
    with pytest.raises(BufferError):
        exec("t.__dlpack__(max_version=(1, 0))", ns)


# ---- 10. bad arguments are refused --------------------------------------------------------


def test_10_bad_arguments_are_refused():
    assert dlpx.zeros(3, None).dtype == dlpx.float32 == dlpx.empty(2, None).dtype
    assert dlpx.zeros(3).dtype == dlpx.float32
    t = dlpx.zeros((2, 3), "float64")
    with pytest.raises(TypeError, match="None"):
        t.view(None)
    with pytest.raises(TypeError):
        dlpx.dtype(None)
    with pytest.raises(TypeError):
        dlpx.dtype("float32\0junk")
    with pytest.raises(TypeError):
        dlpx.zeros(3, "float32\0junk")
    with pytest.raises(TypeError):
        dlpx.dtype(b"float32")
    s = dlpx.zeros((1, 2, 1))
    for bad in (-2**31, 2**31, -2**31 - 1, 2**63, -2**64):
        with pytest.raises(IndexError):
            s.squeeze(bad)
        with pytest.raises(IndexError):
            s.unsqueeze(bad)
        with pytest.raises(IndexError):
            s.permute(bad, 0, 1)
    with pytest.raises(TypeError):
        s.squeeze(1.0)
    assert s.squeeze().shape == (2,) and s.squeeze(0).shape == (2, 1)


# ---- 11. errors say what is wrong -----------------------------------------------------------


def test_11_view_of_unknown_dtype_is_a_dtype_error():
    t = dlpx.zeros((2, 3))
    with pytest.raises(TypeError, match="data type .bogus."):
        t.view("bogus")


def test_11_dl_device_error_names_both_devices():
    t = dlpx.zeros(3)
    with pytest.raises(BufferError, match=r"cpu tensor to cpu:1"):
        t.__dlpack__(max_version=(1, 0), dl_device=(1, 1))
    assert str(dlpx.Device(1, 1)) == "cpu:1" and str(dlpx.Device(1, 0)) == "cpu"


# ---- 12. PyTorch's negative bit ------------------------------------------------------------


def test_12_torch_negative_bit_keeps_its_sign():
    torch = pytest.importorskip("torch")
    x = torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64)
    y = x.conj().imag
    assert y.is_neg()
    t = dlpx.from_dlpack(y)  # copy=None: resolved into a copy
    assert np.from_dlpack(t).tolist() == [-2.0, 4.0]
    with pytest.raises(BufferError, match="negative"):
        dlpx.from_dlpack(y, copy=False)
    c = x.conj()  # the conjugate bit
    assert np.from_dlpack(dlpx.from_dlpack(c)).tolist() == [1 - 2j, 3 + 4j]
    with pytest.raises(BufferError, match="conjugate"):
        dlpx.from_dlpack(c, copy=False)


# ---- 13. one dtype object per dtype, also across threads -------------------------------------


def test_13_threads_get_the_same_multi_lane_dtype():
    names = [f"float32x{n}" for n in range(200, 400)] + [f"int8x{n}" for n in range(2, 200)]
    results = [None] * 8
    barrier = threading.Barrier(8)

    def work(k):
        barrier.wait()
        results[k] = [dlpx.dtype(n) for n in names]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for r in results[1:]:
        for a, b in zip(results[0], r):
            assert a is b and a == b
    assert dlpx.dtype("float32x7") == "float32x7" and dlpx.dtype("float32x7").lanes == 7


# ---- 14. PyTorch layouts that cannot be exchanged: BufferError ----------------------------


def test_14_torch_sparse_quantized_mkldnn_give_buffererror():
    torch = pytest.importorskip("torch")
    cases = [torch.ones(3).to_sparse(), torch.eye(3).to_sparse_csr(),
             torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.quint8)]
    if torch.backends.mkldnn.is_available():
        cases.append(torch.ones(2, 3).to_mkldnn())
    for x in cases:
        with pytest.raises(BufferError):
            dlpx.from_dlpack(x)
        with pytest.raises(BufferError):
            dlpx.from_dlpack(x, copy=False)


# ---- 15. torch.Tensor subclasses defined outside the torch package ------------------------


def test_15_torch_subclasses_keep_pytorch_checks():
    torch = pytest.importorskip("torch")

    class Mine(torch.Tensor):
        pass

    class Counting(torch.Tensor):
        calls = 0

        def __dlpack__(self, **kwargs):
            type(self).calls += 1
            return torch.Tensor.__dlpack__(self, **kwargs)

    x = torch.tensor([1 + 2j, 3 - 4j]).as_subclass(Mine)
    assert np.from_dlpack(dlpx.from_dlpack(x.conj())).tolist() == [1 - 2j, 3 + 4j]
    with pytest.raises(BufferError):
        dlpx.from_dlpack(x.conj(), copy=False)
    g = torch.ones(3, requires_grad=True).as_subclass(Mine)
    g.requires_grad_(True)
    with pytest.raises(BufferError, match="gradient"):
        dlpx.from_dlpack(g)
    c = torch.arange(4.0).as_subclass(Counting)
    u = dlpx.from_dlpack(c)
    assert Counting.calls == 1 and u.data_ptr == c.data_ptr()
    plain = torch.arange(4.0).as_subclass(Mine)
    assert dlpx.from_dlpack(plain).data_ptr == plain.data_ptr()


# ---- 16. dlpx keeps its own ctypes prototypes ----------------------------------------------


def test_16_foreign_argtypes_on_ctypes_pythonapi_do_not_break_dlpx():
    rc, out = run_child("""
import ctypes, numpy as np, dlpx
api = ctypes.pythonapi
for name in ("PyCapsule_New", "PyCapsule_GetPointer", "PyCapsule_IsValid", "PyCapsule_SetName",
             "Py_IncRef", "Py_DecRef", "PyObject_GetBuffer", "PyBuffer_Release",
             "PyDescr_NewMethod", "PyInterpreterState_Get"):
    f = getattr(api, name)
    f.argtypes = [ctypes.c_int, ctypes.c_double]   # someone else's (wrong) prototypes
    f.restype = ctypes.c_char
a = np.arange(6.0)
t = dlpx.from_dlpack(a)
assert np.from_dlpack(t[::2]).tolist() == [0.0, 2.0, 4.0]
b = dlpx.frombuffer(bytearray(8), "uint8")
assert dlpx.from_dlpack(t.__dlpack__(max_version=(1, 0))).data_ptr == t.data_ptr
assert type(dlpx.Tensor.__dlpack_c_exchange_api__).__name__ == "PyCapsule"
import importlib, dlpx._capi
importlib.reload(dlpx._capi)  # binding again under the foreign prototypes
print("ok", b.shape)
""")
    assert rc == 0 and "ok (8,)" in out, out


# ---- 18. zero-copy round trips through legacy-only peers ----------------------------------


def test_18_legacy_capsule_data_goes_back_out_as_legacy(no_leaks):
    a = np.arange(6.0)
    t = dlpx.from_dlpack(a.__dlpack__())  # legacy: read-only, the capsule cannot say
    assert t.readonly
    cap = t[1:].__dlpack__()  # a legacy consumer (NumPy 2.0, JAX) asks without max_version
    u = dlpx.from_dlpack(cap)
    assert u.data_ptr == t.data_ptr + 8
    assert np.from_dlpack(t).flags.writeable is False
    # made read-only on purpose: not as legacy
    with pytest.raises(BufferError):
        t.as_readonly().__dlpack__()
    with pytest.raises(BufferError):
        dlpx.frombuffer(b"abcd", "uint8").__dlpack__()
    del t, u, cap


def test_18_jax_round_trip_is_zero_copy():
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    j = jnp.arange(16.0, dtype=jnp.float32)
    t = dlpx.from_dlpack(j)
    j2 = jax.dlpack.from_dlpack(t)
    assert j2.unsafe_buffer_pointer() == j.unsafe_buffer_pointer() == t.data_ptr
    assert t.jax(copy=False).unsafe_buffer_pointer() == t.data_ptr
