/*
 * dlpx/stats.h - live-object counters for leak and ownership tests.
 *
 * NOT a stable API: the counters exist so that tests (dlpx's own and its
 * users') can prove that every deleter ran exactly once and nothing leaked.
 * Fields may be added, renamed or removed in any release; do not build
 * program logic on them.
 */
#ifndef DLPX_STATS_H
#define DLPX_STATS_H

#include <dlpx/common.h>

DLPX_BEGIN_DECLS

/* Live objects and lifetime totals, counted with relaxed atomics. */
typedef struct {
  int64_t storages_live;          /* storages not yet released */
  int64_t tensors_live;           /* tensor handles not yet freed */
  int64_t exports_live;           /* exported managed tensors whose deleter has not run */
  int64_t foreign_deleters_run;   /* foreign deleters called (total) */
  int64_t borrowed_releases_run;  /* release callbacks called (total) */
  int64_t python_refs_leaked;     /* Python references dropped unreleased at shutdown */
} dlpx_stats;

/* Fills |out| with the current counters (NULL: nothing).  Unstable API. */
DLPX_API void dlpx_stats_get(dlpx_stats *out);

DLPX_END_DECLS

#endif /* DLPX_STATS_H */
