/* storage_host.c - two kinds of storage: host memory dlpx allocates
 * (owned), and memory of any device that someone else owns (borrowed, with
 * a release callback). */
#include "config.h"

#include <stdlib.h>

#include "internal.h"

/* ---- owned ------------------------------------------------------------------ */

typedef struct {
  void *alloc; /* the block to free (data lies inside it) */
} owned_state;

static void owned_release(dlpx_storage *s) {
  owned_state *st = dlpx__storage_payload(s);
  free(st->alloc);
}

static const dlpx__storage_ops owned_ops = {DLPX_STORAGE_OWNED, "owned", owned_release};

int dlpx_storage_alloc(size_t nbytes, size_t alignment, int zero, dlpx_storage **out) {
  if (!out) return dlpx__fail(DLPX_EINVAL, "out is NULL");
  if (alignment == 0) alignment = DLPX_DEFAULT_ALIGNMENT;
  if (alignment & (alignment - 1))
    return dlpx__fail(DLPX_EINVAL, "alignment %zu is not a power of two", alignment);
  if (alignment < DLPX_DEFAULT_ALIGNMENT) alignment = DLPX_DEFAULT_ALIGNMENT;
  if (nbytes > (size_t)INT64_MAX - alignment)
    return dlpx__fail(DLPX_EOVERFLOW, "allocation of %zu bytes is too large", nbytes);
  void *alloc, *data;
  if (zero) {
    /* calloc gets fresh zero pages from the kernel for large blocks, which
     * is much cheaper than memset; align inside the over-allocation. */
    alloc = calloc(1, nbytes + alignment);
    if (!alloc) return dlpx__fail(DLPX_ENOMEM, "cannot allocate %zu bytes", nbytes);
    data = (void *)(((uintptr_t)alloc + alignment - 1) & ~(uintptr_t)(alignment - 1));
  } else {
    if (posix_memalign(&alloc, alignment, nbytes ? nbytes : 1) != 0)
      return dlpx__fail(DLPX_ENOMEM, "cannot allocate %zu bytes", nbytes);
    data = alloc;
  }
  dlpx_storage *s =
      dlpx__storage_new(&owned_ops, sizeof(owned_state), data, nbytes, (DLDevice){kDLCPU, 0});
  if (!s) {
    free(alloc);
    return DLPX_ENOMEM;
  }
  ((owned_state *)dlpx__storage_payload(s))->alloc = alloc;
  *out = s;
  return 0;
}

/* ---- borrowed ----------------------------------------------------------------- */

typedef struct {
  dlpx_release_fn release; /* may be NULL */
  void *release_data;      /* the data pointer the owner gave (not always s->data) */
  void *ctx;
} borrowed_state;

static void borrowed_release(dlpx_storage *s) {
  borrowed_state *st = dlpx__storage_payload(s);
  if (st->release) {
    st->release(st->release_data, st->ctx);
    dlpx__count(&dlpx__stats.borrowed_releases_run, 1);
  }
}

static const dlpx__storage_ops borrowed_ops = {DLPX_STORAGE_BORROWED, "borrowed",
                                               borrowed_release};

int dlpx_storage_wrap(void *data, size_t nbytes, DLDevice device, dlpx_release_fn release,
                      void *ctx, dlpx_storage **out) {
  if (!out) return dlpx__fail(DLPX_EINVAL, "out is NULL");
  if (!data && nbytes > 0) return dlpx__fail(DLPX_EINVAL, "data is NULL but nbytes is %zu", nbytes);
  if (nbytes > (size_t)INT64_MAX)
    return dlpx__fail(DLPX_EOVERFLOW, "nbytes %zu exceeds INT64_MAX", nbytes);
  int rc = dlpx_device_check(device);
  if (rc) return rc;
  dlpx_storage *s = dlpx__storage_new(&borrowed_ops, sizeof(borrowed_state), data, nbytes, device);
  if (!s) return DLPX_ENOMEM;
  borrowed_state *st = dlpx__storage_payload(s);
  st->release = release;
  st->release_data = data;
  st->ctx = ctx;
  *out = s;
  return 0;
}

void dlpx__storage_set_release(dlpx_storage *s, dlpx_release_fn release, void *release_data,
                               void *ctx) {
  borrowed_state *st = dlpx__storage_payload(s);
  st->release = release;
  st->release_data = release_data;
  st->ctx = ctx;
}
