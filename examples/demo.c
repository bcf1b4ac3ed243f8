/* demo.c - what libdlpx does, in one run: create a tensor, export it the
 * way a DLPack consumer receives it, import it back as a foreign tensor,
 * slice and transpose it without copying, copy it, and show that every
 * deleter ran exactly once. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include <dlpx/dlpx.h>

#define CHECK(call)                                                                       \
  do {                                                                                    \
    int rc_ = (call);                                                                     \
    if (rc_ != 0) {                                                                       \
      fprintf(stderr, "%s failed: %s: %s\n", #call, dlpx_error_name(rc_), dlpx_last_error()); \
      exit(1);                                                                            \
    }                                                                                     \
  } while (0)

static void show(const char *label, const dlpx_tensor *t) {
  char dtype[DLPX_DTYPE_NAME_MAX];
  dlpx_dtype_format(dlpx_tensor_dtype(t), dtype, sizeof dtype);
  printf("%-28s %-8s shape (", label, dtype);
  for (int32_t i = 0; i < dlpx_tensor_ndim(t); i++)
    printf("%s%lld", i ? ", " : "", (long long)dlpx_tensor_shape(t)[i]);
  printf(") strides (");
  for (int32_t i = 0; i < dlpx_tensor_ndim(t); i++)
    printf("%s%lld", i ? ", " : "", (long long)dlpx_tensor_strides(t)[i]);
  printf(") data %p%s\n", dlpx_tensor_data(t), dlpx_tensor_is_readonly(t) ? " read-only" : "");
}

static void print_matrix(const dlpx_tensor *t) {
  const float *p = dlpx_tensor_data(t);
  const int64_t *sh = dlpx_tensor_shape(t), *st = dlpx_tensor_strides(t);
  for (int64_t i = 0; i < sh[0]; i++) {
    printf("    ");
    for (int64_t j = 0; j < sh[1]; j++) printf("%5.0f", (double)p[i * st[0] + j * st[1]]);
    printf("\n");
  }
}

int main(void) {
  printf("libdlpx %s (DLPack %d.%d ABI)\n\n", dlpx_version_string(), DLPACK_MAJOR_VERSION,
         DLPACK_MINOR_VERSION);
  DLDataType f32;
  CHECK(dlpx_dtype_parse("float32", &f32));

  /* 1. A 4x6 float32 tensor holding 0..23. */
  int64_t shape[] = {4, 6};
  dlpx_tensor *a = NULL;
  CHECK(dlpx_tensor_empty(f32, 2, shape, &a));
  float *p = dlpx_tensor_data(a);
  for (int i = 0; i < 24; i++) p[i] = (float)i;
  show("created", a);

  /* 2. Export: what a consumer (NumPy, PyTorch, ...) receives. */
  DLManagedTensorVersioned *m = NULL;
  CHECK(dlpx_tensor_export(a, 0, &m));
  printf("%-28s version %u.%u, data %p, flags %llu, storage refs %lld\n", "exported (versioned)",
         m->version.major, m->version.minor, m->dl_tensor.data, (unsigned long long)m->flags,
         (long long)dlpx_storage_refcount(dlpx_tensor_storage(a)));

  /* 3. Import it back as any consumer would: ownership of m moves in. */
  dlpx_tensor *b = NULL;
  CHECK(dlpx_tensor_import(m, 0, &b));
  show("imported (foreign)", b);

  /* 4. Views: b[1:, ::-2] and its transpose share a's memory. */
  dlpx_index idx[] = {{DLPX_INDEX_SLICE, 1, DLPX_NONE, 1},
                      {DLPX_INDEX_SLICE, DLPX_NONE, DLPX_NONE, -2}};
  dlpx_tensor *v = NULL, *vt = NULL;
  CHECK(dlpx_tensor_index(b, 2, idx, &v));
  show("b[1:, ::-2]", v);
  print_matrix(v);
  CHECK(dlpx_tensor_transpose(v, &vt));
  show("b[1:, ::-2].T", vt);
  print_matrix(vt);

  /* 5. A copy into fresh C-contiguous memory. */
  dlpx_tensor *c = NULL;
  CHECK(dlpx_tensor_copy(vt, 'C', &c));
  show("contiguous copy", c);
  printf("%-28s %s\n", "copy is C-contiguous", dlpx_tensor_is_c_contiguous(c) ? "yes" : "no");

  /* 6. Read-only data cannot leave as a legacy tensor, which cannot say so. */
  dlpx_tensor *ro = NULL;
  DLManagedTensor *lm = NULL;
  CHECK(dlpx_tensor_with_flags(c, DLPX_TENSOR_READONLY, &ro));
  int rc = dlpx_tensor_export_legacy(ro, 0, &lm);
  printf("%-28s %s: %s\n", "legacy export of read-only", dlpx_error_name(rc), dlpx_last_error());

  /* 7. Release everything; the counters show nothing is left. */
  dlpx_tensor *all[] = {a, b, v, vt, c, ro};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dlpx_tensor_free(all[i]);
  dlpx_stats s;
  dlpx_stats_get(&s);
  printf("\nafter release: %lld storages, %lld tensors, %lld exports live; "
         "%lld foreign deleter(s) run\n",
         (long long)s.storages_live, (long long)s.tensors_live, (long long)s.exports_live,
         (long long)s.foreign_deleters_run);
  return s.storages_live == 0 && s.tensors_live == 0 && s.exports_live == 0 ? 0 : 1;
}
