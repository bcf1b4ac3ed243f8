"""Shared fixtures for the Python tests.

The tests use whichever dlpx is importable: the installed package (what
the README's test command does), or a checkout (PYTHONPATH=py with
DLPX_LIBRARY pointing at a built libdlpx.so)."""

import gc
import os
import sys
import time

import pytest

try:
    import numpy  # noqa: F401  (loaded first: dlpx's NumPy checks look at it)
except ImportError:  # pragma: no cover
    numpy = None

import dlpx
from dlpx import _quirks

# What the installed NumPy does with DLPack (the suite runs on NumPy 2.0 on
# Python 3.9 as well as on the newest).
#   NUMPY_VERSIONED: exports and imports versioned capsules (NumPy >= 2.1);
#     older ones speak legacy DLPack only and refuse read-only arrays.
#   NUMPY_IMPORT_WRITABLE: np.from_dlpack of writable data is writable
#     (NumPy >= 2.2.5; older ones mark every DLPack import read-only).
NUMPY_VERSIONED = numpy is None or _quirks.numpy_speaks_versioned()
NUMPY_IMPORT_WRITABLE = numpy is None or _quirks.numpy_imports_writable()
needs_versioned_numpy = pytest.mark.skipif(
    not NUMPY_VERSIONED, reason="this NumPy speaks only legacy DLPack (NumPy < 2.1)")


def live():
    s = dlpx.stats()
    return s["storages_live"], s["tensors_live"], s["exports_live"]


@pytest.fixture
def no_leaks():
    """Asserts that the test leaves no libdlpx storage, tensor or export
    alive (every deleter ran, nothing was freed twice)."""
    gc.collect()
    before = live()
    yield
    gc.collect()
    # JAX releases imported buffers from a thread of its own: give it a moment
    deadline = time.monotonic() + (3 if "jax" in sys.modules else 0)
    while live() != before and time.monotonic() < deadline:
        time.sleep(0.01)
        gc.collect()
    assert live() == before, f"live (storages, tensors, exports) before {before}, after {live()}"


@pytest.fixture(scope="module")
def _frozen_heap():
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture
def gc_baseline(_frozen_heap):
    """Use before no_leaks in suites that load PyTorch or JAX.  no_leaks
    calls gc.collect() around every test, and with those libraries loaded a
    full collection walks hundreds of thousands of objects; so what exists
    now (collected by the previous test's no_leaks) is frozen and each
    collection sees only what this test makes.  A previous failure's
    traceback (sys.last_*) is dropped first, so objects it held are not
    freed in the middle of this test."""
    if getattr(sys, "last_traceback", None) is not None:
        sys.last_type = sys.last_value = sys.last_traceback = None
        gc.collect()
    gc.freeze()


# ---- layouts shared by the interop suites -------------------------------------------


def _broadcast(x, row, shape):
    if isinstance(x, dlpx.Tensor):
        return x[row].broadcast_to(shape)
    return numpy.broadcast_to(x[row], shape)


def _permute(x, axes):
    return x.permute(*axes) if isinstance(x, dlpx.Tensor) else x.transpose(axes)


def layouts(cols=6, negative_step=-2, offset=2):
    """Views of a (4, cols) base that a NumPy array and a dlpx.Tensor both
    make (both speak NumPy basic indexing), by name."""
    return {
        "contiguous": lambda x: x,
        "transposed": lambda x: x.T,
        "negative": lambda x: x[::-1, ::negative_step],
        "step": lambda x: x[::2, 1::3],
        "offset": lambda x: x[1:, offset:],
        "zero_size": lambda x: x[2:2],
        "zero_d": lambda x: x[1, 2, ...],
        "size1": lambda x: x[1:2, None, :],
        "broadcast": lambda x: _broadcast(x, 1, (3, cols)),
        "3d_permuted": lambda x: _permute(x.reshape(2, 2, cols)[:, ::-1], (2, 0, 1)),
    }


# ---- shared memory: the suite leaves nothing in /dev/shm -------------------------------


def _dlpx_shm_entries():
    try:
        return {n for n in os.listdir("/dev/shm") if n.startswith("dlpx.")}
    except OSError:
        return set()


@pytest.fixture(scope="session", autouse=True)
def no_dev_shm_leftovers():
    """After the whole suite, /dev/shm holds no dlpx entry that was not
    there before it (anonymous segments never appear there; named ones the
    tests make are unlinked, also when a test fails)."""
    before = _dlpx_shm_entries()
    yield
    left = _dlpx_shm_entries() - before
    for n in left:  # clean up, then fail
        try:
            os.unlink(os.path.join("/dev/shm", n))
        except OSError:
            pass
    assert not left, f"the suite left these in /dev/shm: {sorted(left)}"
