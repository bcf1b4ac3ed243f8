/* decl/stats.h - include/dlpx/stats.h for cffi (see decl/README). */

typedef struct {
  int64_t storages_live;
  int64_t tensors_live;
  int64_t exports_live;
  int64_t foreign_deleters_run;
  int64_t borrowed_releases_run;
  int64_t python_refs_leaked;
} dlpx_stats;

void dlpx_stats_get(dlpx_stats *out);
