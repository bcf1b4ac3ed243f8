/* stats.c - the live-object counters behind dlpx_stats_get (dlpx/stats.h). */
#include "config.h"

#include "internal.h"

dlpx__counters dlpx__stats;

void dlpx_stats_get(dlpx_stats *out) {
  if (!out) return;
  out->storages_live = atomic_load_explicit(&dlpx__stats.storages_live, memory_order_relaxed);
  out->tensors_live = atomic_load_explicit(&dlpx__stats.tensors_live, memory_order_relaxed);
  out->exports_live = atomic_load_explicit(&dlpx__stats.exports_live, memory_order_relaxed);
  out->foreign_deleters_run =
      atomic_load_explicit(&dlpx__stats.foreign_deleters_run, memory_order_relaxed);
  out->borrowed_releases_run =
      atomic_load_explicit(&dlpx__stats.borrowed_releases_run, memory_order_relaxed);
  out->python_refs_leaked =
      atomic_load_explicit(&dlpx__stats.python_refs_leaked, memory_order_relaxed);
}
