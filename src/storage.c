/* storage.c - reference-counted memory blocks and the object counters. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

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

static dlpx_storage *storage_new(int32_t kind, void *data, size_t nbytes, DLDevice device) {
  dlpx_storage *s = malloc(sizeof *s);
  if (!s) return NULL;
  atomic_init(&s->refcount, 1);
  s->kind = kind;
  s->device = device;
  s->data = data;
  s->nbytes = nbytes;
  s->alloc = NULL;
  s->release = NULL;
  s->ctx = NULL;
  dlpx__count(&dlpx__stats.storages_live, 1);
  return s;
}

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
  dlpx_storage *s = storage_new(DLPX_STORAGE_OWNED, data, nbytes, (DLDevice){kDLCPU, 0});
  if (!s) {
    free(alloc);
    return dlpx__fail(DLPX_ENOMEM, "cannot allocate a storage");
  }
  s->alloc = alloc;
  *out = s;
  return 0;
}

int dlpx_storage_wrap(void *data, size_t nbytes, DLDevice device, dlpx_release_fn release,
                      void *ctx, dlpx_storage **out) {
  if (!out) return dlpx__fail(DLPX_EINVAL, "out is NULL");
  if (!data && nbytes > 0) return dlpx__fail(DLPX_EINVAL, "data is NULL but nbytes is %zu", nbytes);
  if (nbytes > (size_t)INT64_MAX)
    return dlpx__fail(DLPX_EOVERFLOW, "nbytes %zu exceeds INT64_MAX", nbytes);
  int rc = dlpx__device_check(device);
  if (rc) return rc;
  dlpx_storage *s = storage_new(DLPX_STORAGE_BORROWED, data, nbytes, device);
  if (!s) return dlpx__fail(DLPX_ENOMEM, "cannot allocate a storage");
  s->release = release;
  s->ctx = ctx;
  *out = s;
  return 0;
}

int dlpx__storage_foreign(void *managed, bool versioned, void *data, size_t nbytes,
                          DLDevice device, dlpx_storage **out) {
  dlpx_storage *s = storage_new(versioned ? DLPX_STORAGE_FOREIGN : DLPX_STORAGE_FOREIGN_LEGACY,
                                data, nbytes, device);
  if (!s) return dlpx__fail(DLPX_ENOMEM, "cannot allocate a storage");
  s->ctx = managed;
  *out = s;
  return 0;
}

void dlpx_storage_retain(dlpx_storage *s) {
  if (s) atomic_fetch_add_explicit(&s->refcount, 1, memory_order_relaxed);
}

static void storage_destroy(dlpx_storage *s) {
  switch (s->kind) {
    case DLPX_STORAGE_OWNED:
      free(s->alloc);
      break;
    case DLPX_STORAGE_BORROWED:
      if (s->release) {
        s->release(s->data, s->ctx);
        dlpx__count(&dlpx__stats.borrowed_releases_run, 1);
      }
      break;
    case DLPX_STORAGE_FOREIGN: {
      DLManagedTensorVersioned *m = s->ctx;
      if (m->deleter) m->deleter(m);
      dlpx__count(&dlpx__stats.foreign_deleters_run, 1);
      break;
    }
    case DLPX_STORAGE_FOREIGN_LEGACY: {
      DLManagedTensor *m = s->ctx;
      if (m->deleter) m->deleter(m);
      dlpx__count(&dlpx__stats.foreign_deleters_run, 1);
      break;
    }
    default:
      break;
  }
  dlpx__count(&dlpx__stats.storages_live, -1);
  free(s);
}

void dlpx_storage_release(dlpx_storage *s) {
  if (!s) return;
  /* Release ordering publishes this thread's writes; the acquire fence on
   * the last reference makes every other thread's writes visible to the
   * release action. */
  if (atomic_fetch_sub_explicit(&s->refcount, 1, memory_order_release) == 1) {
    atomic_thread_fence(memory_order_acquire);
    storage_destroy(s);
  }
}

void *dlpx_storage_data(const dlpx_storage *s) { return s->data; }
size_t dlpx_storage_nbytes(const dlpx_storage *s) { return s->nbytes; }
DLDevice dlpx_storage_device(const dlpx_storage *s) { return s->device; }
int dlpx_storage_kind_of(const dlpx_storage *s) { return s->kind; }
int64_t dlpx_storage_refcount(const dlpx_storage *s) {
  return atomic_load_explicit(&s->refcount, memory_order_relaxed);
}
