"""Worker functions for the sharing tests: module-level, so that every
multiprocessing start method (fork, spawn, forkserver) and
concurrent.futures can run them."""

import os
import resource
import signal
import time

import numpy as np

import dlpx


def _in_memfd(addr):
    """Whether |addr| lies in a mapping of a dlpx memfd (/proc/self/maps)."""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= addr < hi:
                return len(parts) > 5 and "memfd:dlpx" in line
    return False


def total(a):
    """The sum of an array's (real parts of its) elements, as a float."""
    return float(np.real(np.asarray(a)).astype(np.float64).sum())


def sums(handle, framework="numpy"):
    """name -> (sum of the tensor as float64, read-only flag, in a memfd)."""
    got = dlpx.attach(handle, framework)
    out = {}
    for k, v in got.items():
        if framework == "numpy":
            out[k] = (total(v), not v.flags.writeable,
                      v.size == 0 or _in_memfd(v.ctypes.data))
        else:
            out[k] = (float(v.double().sum()), None, v.numel() == 0 or _in_memfd(v.data_ptr()))
    return out


def values(handle):
    """The tensors as NumPy copies (for comparing in the parent)."""
    return {k: np.array(v) for k, v in dlpx.attach(handle, "numpy").items()}


def write_then_read(handle, name):
    """Writes into the tensor through PyTorch (which ignores READ_ONLY),
    and returns (its sum before, its sum after) as this process sees it."""
    import torch
    t = dlpx.attach(handle, "torch")[name]
    before = float(t.double().sum())
    with torch.no_grad():
        t.add_(1)
    return before, float(t.double().sum())


def attach_loop(handle, rounds):
    """Attaches and drops the tensors |rounds| times; returns (descriptors
    before, after, max RSS in KiB after the warm-up, after)."""
    for _ in range(min(200, rounds)):  # warm up (caches, allocator arenas)
        dlpx.attach(handle)
    fds0 = len(os.listdir("/proc/self/fd"))
    rss0 = _rss_kib()
    for _ in range(rounds):
        got = dlpx.attach(handle)
        assert len(got) > 0
        del got
    return fds0, len(os.listdir("/proc/self/fd")), rss0, _rss_kib()


def _rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def read_forever(handle, name, ready, stop):
    """Attaches, signals |ready|, and keeps summing the tensor until |stop|;
    returns the number of sums, all of which must equal the first."""
    t = dlpx.attach(handle, "numpy")[name]
    first = float(t.sum())
    ready.set()
    n = 0
    while not stop.is_set():
        assert float(t.sum()) == first
        n += 1
    return n


def hold_and_die(handle, name, ready):
    """Attaches, reads, signals, then kills itself with SIGKILL."""
    t = dlpx.attach(handle, "numpy")[name]
    float(t.sum())
    ready.set()
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)


def load_module(mh, x):
    """Loads a shared module and runs it on |x|; returns the output, whether
    every weight is mapped from a memfd and none requires grad."""
    import torch
    m = mh.load()
    with torch.no_grad():
        y = m(x)
    mapped = all(_in_memfd(p.data_ptr()) for p in list(m.parameters()) + list(m.buffers())
                 if p.numel())
    grads = any(p.requires_grad for p in m.parameters())
    return y, mapped, grads


def load_write_run(mh, x):
    """Loads a shared module, doubles every weight in place, runs it."""
    import torch
    m = mh.load()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(2)
        return m(x)
