"""Shared fixtures for the Python tests.

The tests use whichever dlpx is importable: the installed package (what
the README's test command does), or a checkout (PYTHONPATH=py with
DLPX_LIBRARY pointing at a built libdlpx.so)."""

import gc

import pytest

import dlpx


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
    assert live() == before, f"live (storages, tensors, exports) before {before}, after {live()}"
