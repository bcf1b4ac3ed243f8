/* storage.c - reference-counted storages.  This file knows no kind of
 * storage: each kind is a table of operations (dlpx__storage_ops) defined
 * next to its constructor (storage_host.c, managed.c, ...). */
#include "config.h"

#include <stdlib.h>

#include "internal.h"

dlpx_storage *dlpx__storage_new(const dlpx__storage_ops *ops, size_t payload_size, void *data,
                                size_t nbytes, DLDevice device) {
  dlpx_storage *s = malloc(sizeof *s + payload_size);
  if (!s) {
    dlpx__fail(DLPX_ENOMEM, "cannot allocate a storage");
    return NULL;
  }
  atomic_init(&s->refcount, 1);
  s->ops = ops;
  s->device = device;
  s->data = data;
  s->nbytes = nbytes;
  atomic_init(&s->stream, 0);
  dlpx__count(&dlpx__stats.storages_live, 1);
  return s;
}

void dlpx__storage_discard(dlpx_storage *s) {
  dlpx__count(&dlpx__stats.storages_live, -1);
  free(s);
}

void dlpx_storage_retain(dlpx_storage *s) {
  if (s) atomic_fetch_add_explicit(&s->refcount, 1, memory_order_relaxed);
}

void dlpx_storage_release(dlpx_storage *s) {
  if (!s) return;
  /* Release ordering publishes this thread's writes; the acquire fence on
   * the last reference makes every other thread's writes visible to the
   * release action. */
  if (atomic_fetch_sub_explicit(&s->refcount, 1, memory_order_release) == 1) {
    atomic_thread_fence(memory_order_acquire);
    s->ops->release(s);
    dlpx__storage_discard(s);
  }
}

void *dlpx_storage_data(const dlpx_storage *s) { return s->data; }
size_t dlpx_storage_nbytes(const dlpx_storage *s) { return s->nbytes; }
DLDevice dlpx_storage_device(const dlpx_storage *s) { return s->device; }
int dlpx_storage_kind_of(const dlpx_storage *s) { return s->ops->kind; }
int64_t dlpx_storage_refcount(const dlpx_storage *s) {
  return atomic_load_explicit(&s->refcount, memory_order_relaxed);
}
