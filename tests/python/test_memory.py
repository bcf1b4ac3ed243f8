"""Memory safety: no growth over a million exchanges, deleters on threads
that never ran Python, interpreter exit with exports alive, valgrind."""

import ctypes
import gc
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import dlpx
from dlpack_ctypes import consume_versioned

HERE = os.path.dirname(os.path.abspath(__file__))


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_million_mixed_cycles_do_not_grow(no_leaks):
    torch = pytest.importorskip("torch")
    a = np.arange(64, dtype=np.float32).reshape(8, 8)
    base = dlpx.from_dlpack(a)
    tt = torch.arange(16.0)

    def cycles(n):
        for _ in range(n // 8):
            t = dlpx.from_dlpack(a)                    # numpy -> dlpx
            np.from_dlpack(t)                          # dlpx -> numpy
            torch.from_dlpack(base)                    # dlpx -> torch
            dlpx.from_dlpack(tt)                       # torch -> dlpx (exchange API)
            base.__dlpack__(max_version=(1, 0))        # capsule dropped unconsumed
            dlpx.from_dlpack(base.__dlpack__())        # legacy capsule consumed
            _ = t[1:, ::-1].T                          # views
            dlpx.from_dlpack(base)                     # dlpx -> dlpx

    cycles(80_000)  # warm up caches and allocator pools
    gc.collect()
    before = rss_bytes()
    cycles(1_000_000)
    gc.collect()
    growth = rss_bytes() - before
    assert growth < 10 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 1,000,000 cycles"
    s = dlpx.stats()
    assert s["python_refs_leaked"] == 0


def _pthread_call(fn_addr, arg_addr):
    """Runs fn(arg) on a new POSIX thread that has never run Python code, and
    joins it (ctypes releases the GIL while it waits)."""
    libc = ctypes.CDLL(None)
    tid = ctypes.c_ulong()
    start = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)(fn_addr)
    assert libc.pthread_create(ctypes.byref(tid), None, start, ctypes.c_void_p(arg_addr)) == 0
    assert libc.pthread_join(tid, None) == 0


def test_deleter_on_a_thread_that_never_ran_python(no_leaks):
    ba = bytearray(256)
    t = dlpx.frombuffer(ba, "float32")     # memory owned by a Python object
    cap = t.__dlpack__(max_version=(1, 0))
    m = consume_versioned(cap)             # we are the consumer now
    del t
    gc.collect()
    with pytest.raises(BufferError):
        ba.append(0)                       # still exported through m
    deleter = ctypes.cast(m.deleter, ctypes.c_void_p).value
    # The deleter drops the last reference to the Python owner: it must take
    # the GIL itself on that thread, and does.
    _pthread_call(deleter, ctypes.addressof(m))
    ba.append(0)                           # the buffer was released
    assert dlpx.stats()["python_refs_leaked"] == 0
    del cap


def test_deleter_called_without_the_gil_through_cffi(no_leaks):
    ba = bytearray(64)
    t = dlpx.frombuffer(ba, "int32")
    cap = t.__dlpack__(max_version=(1, 0))
    m = consume_versioned(cap)
    del t
    ffi = dlpx.ffi
    mt = ffi.cast("DLManagedTensorVersioned *", ctypes.addressof(m))
    mt.deleter(mt)  # cffi releases the GIL around the call
    ba.append(0)
    del cap


def test_torch_tensor_freed_in_worker_threads(no_leaks):
    torch = pytest.importorskip("torch")
    ba = bytearray(4096)
    views = [torch.from_dlpack(dlpx.frombuffer(ba, "float32")[i::4]) for i in range(4)]
    gc.collect()

    def drop(k):
        views[k] = None
    threads = [threading.Thread(target=drop, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    gc.collect()
    ba.append(0)


EXIT_SCRIPT = textwrap.dedent("""
    import threading, sys
    import numpy as np, dlpx
    try:
        import torch
    except ImportError:
        torch = None
    keep = []
    ba = bytearray(1024)
    base = dlpx.frombuffer(ba, "float32")              # owned by a Python object
    keep.append(np.from_dlpack(base))                  # numpy holds an export
    if torch is not None:
        keep.append(torch.from_dlpack(base[1:]))       # torch holds an export
        keep.append(dlpx.from_dlpack(torch.arange(8.0)))
    keep.append(base.__dlpack__(max_version=(1, 0)))   # unconsumed capsules
    keep.append(base.__dlpack__())
    keep.append(dlpx.from_dlpack(np.arange(5.0)))
    # a daemon thread still holding views when the interpreter exits
    ev = threading.Event()
    def hold():
        mine = [base[::2], base.__dlpack__(max_version=(1, 0))]
        ev.set()
        threading.Event().wait()
    threading.Thread(target=hold, daemon=True).start()
    ev.wait()
    cyc = [base]; cyc.append(cyc)                      # a reference cycle
    del base
    print("exiting", flush=True)
    sys.exit(MODE)
""")


@pytest.mark.parametrize("mode", ["0", "None", "'sys.exit with a message'"])
def test_interpreter_exit_with_live_exports(mode):
    script = EXIT_SCRIPT.replace("MODE", mode)
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                       timeout=120)
    want = 1 if "message" in mode else 0
    assert r.returncode == want, r.stderr
    assert "exiting" in r.stdout
    assert "Fatal" not in r.stderr and "Segmentation" not in r.stderr
    assert "Traceback" not in r.stderr, r.stderr


def test_interpreter_exit_from_exception_with_capsules_alive():
    script = textwrap.dedent("""
        import dlpx, numpy as np
        t = dlpx.from_dlpack(np.ones(3))
        caps = [t.__dlpack__(max_version=(1, 0)) for _ in range(3)]
        raise SystemExit(3)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stderr


VALGRIND_SCRIPT = textwrap.dedent("""
    import gc, numpy as np, dlpx
    a = np.arange(60, dtype=np.float64).reshape(3, 4, 5)
    t = dlpx.from_dlpack(a)
    for v in (t, t[1:, ::-1], t.T, t[..., None, 2], t.reshape(12, 5)):
        b = np.from_dlpack(v)
        assert (b == a.reshape(b.shape) if v is None else True)
        c = v.copy()
        np.from_dlpack(c)
        v.__dlpack__()
    x = dlpx.zeros((7, 9), "float6_e2m3fn")
    x.T.copy()
    bb = bytearray(64)
    f = dlpx.frombuffer(bb, "int16")
    f[::2] = np.arange(16, dtype=np.int16)
    cap = f.__dlpack__(max_version=(1, 0))
    try:
        dlpx.from_dlpack(cap); dlpx.from_dlpack(cap)
    except ValueError:
        pass
    del t, f, cap, x
    gc.collect()
    print("valgrind session done")
""")


@pytest.mark.slow
def test_valgrind_python_session_no_invalid_access_in_libdlpx(tmp_path):
    if not shutil.which("valgrind"):
        pytest.skip("valgrind is not installed")
    script = tmp_path / "session.py"
    script.write_text(VALGRIND_SCRIPT)
    log = tmp_path / "vg.log"
    env = dict(os.environ, PYTHONMALLOC="malloc")
    r = subprocess.run(
        ["valgrind", "--tool=memcheck", "--error-limit=no", "--track-origins=no",
         f"--log-file={log}", sys.executable, str(script)],
        capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "valgrind session done" in r.stdout
    ours = [b for b in valgrind_error_blocks(log.read_text()) if _OURS.search(b)]
    assert not ours, "\n\n".join(ours)[:4000]


# A frame in libdlpx: one of its functions (with debug info) or the .so.
_OURS = re.compile(r"\bdlpx_\w+ \(|libdlpx")


_ERROR_KINDS = ("Invalid read", "Invalid write", "uninitialised", "Invalid free",
                "Mismatched free", "Source and destination overlap")


def valgrind_error_blocks(text):
    """The memcheck error reports in a valgrind log, one string each."""
    lines = [line.split("== ", 1)[1] if line.startswith("==") and "== " in line else line
             for line in text.splitlines()]
    blocks, cur = [], []
    for line in lines + [""]:
        if line.strip():
            cur.append(line)
        elif cur:
            blocks.append("\n".join(cur))
            cur = []
    return [b for b in blocks if b.splitlines()[0].startswith(_ERROR_KINDS) or
            any(k in b.splitlines()[0] for k in _ERROR_KINDS)]
