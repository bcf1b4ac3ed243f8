"""libdlpx's live-object counters (dlpx/stats.h), for tests that prove
nothing leaks or is freed twice.  Not a stable API."""

from __future__ import annotations

from ._lib import ffi, lib, types

__all__ = ["stats"]

_FIELDS = tuple(name for name, _ in ffi.typeof("dlpx_stats").fields)


def stats() -> dict[str, int]:
    """libdlpx's live-object counters (a dict): storages, tensors and
    exports alive, deleters and releases run, Python references leaked at
    shutdown.  Tests use them to prove nothing leaks; not a stable API."""
    s = ffi.new(types.stats_p)
    lib.dlpx_stats_get(s)
    return {k: getattr(s, k) for k in _FIELDS}
