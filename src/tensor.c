/* tensor.c - tensor handles: allocation, freeing and queries. */
#include "config.h"

#include <stdlib.h>

#include "internal.h"

dlpx_tensor *dlpx__tensor_alloc(dlpx_storage *storage, int32_t ndim) {
  dlpx_tensor *t = malloc(sizeof *t + 2 * (size_t)ndim * sizeof(int64_t));
  if (!t) return NULL;
  t->dl.data = storage->data;
  t->dl.device = storage->device;
  t->dl.ndim = ndim;
  t->dl.shape = ndim ? t->dims : NULL;
  t->dl.strides = ndim ? t->dims + ndim : NULL;
  t->dl.byte_offset = 0;
  t->storage = storage;
  t->flags = 0;
  dlpx_storage_retain(storage);
  dlpx__count(&dlpx__stats.tensors_live, 1);
  return t;
}

int dlpx__check_tensor_flags(uint32_t flags) {
  if (flags & ~(uint32_t)DLPX__TENSOR_FLAGS)
    return dlpx__fail(DLPX_EINVAL, "unknown tensor flags 0x%x", (unsigned)flags);
  if ((flags & DLPX_TENSOR_LEGACY_READONLY) && !(flags & DLPX_TENSOR_READONLY))
    return dlpx__fail(DLPX_EINVAL, "DLPX_TENSOR_LEGACY_READONLY needs DLPX_TENSOR_READONLY");
  return 0;
}

void dlpx_tensor_free(dlpx_tensor *t) {
  if (!t) return;
  dlpx_storage_release(t->storage);
  dlpx__count(&dlpx__stats.tensors_live, -1);
  free(t);
}

const DLTensor *dlpx_tensor_dltensor(const dlpx_tensor *t) { return &t->dl; }
int32_t dlpx_tensor_ndim(const dlpx_tensor *t) { return t->dl.ndim; }
const int64_t *dlpx_tensor_shape(const dlpx_tensor *t) { return t->dl.shape; }
const int64_t *dlpx_tensor_strides(const dlpx_tensor *t) { return t->dl.strides; }
DLDataType dlpx_tensor_dtype(const dlpx_tensor *t) { return t->dl.dtype; }
DLDevice dlpx_tensor_device(const dlpx_tensor *t) { return t->dl.device; }
int64_t dlpx_tensor_byte_offset(const dlpx_tensor *t) { return (int64_t)t->dl.byte_offset; }
void *dlpx_tensor_data(const dlpx_tensor *t) {
  if (!t->dl.data) return NULL;
  return (char *)t->dl.data + t->dl.byte_offset;
}
dlpx_storage *dlpx_tensor_storage(const dlpx_tensor *t) { return t->storage; }
uint32_t dlpx_tensor_flags(const dlpx_tensor *t) { return t->flags; }
int dlpx_tensor_is_readonly(const dlpx_tensor *t) { return (t->flags & DLPX_TENSOR_READONLY) != 0; }

int64_t dlpx_tensor_numel(const dlpx_tensor *t) {
  int64_t n = 0;
  dlpx__numel(t->dl.ndim, t->dl.shape, &n); /* checked when the view was made */
  return n;
}

int64_t dlpx_tensor_nbytes(const dlpx_tensor *t) {
  int64_t n = dlpx_tensor_numel(t);
  if (t->flags & DLPX_TENSOR_SUBBYTE_PADDED) return n;
  int64_t nb = 0;
  dlpx_dtype_nbytes(t->dl.dtype, n, &nb);
  return nb;
}

int dlpx_tensor_is_c_contiguous(const dlpx_tensor *t) {
  return dlpx__contiguous(t->dl.ndim, t->dl.shape, t->dl.strides, true);
}

int dlpx_tensor_is_f_contiguous(const dlpx_tensor *t) {
  return dlpx__contiguous(t->dl.ndim, t->dl.shape, t->dl.strides, false);
}

void dlpx_tensor_extent(const dlpx_tensor *t, int64_t *lo, int64_t *hi) {
  int64_t l = 0, h = 0;
  /* Cannot overflow: checked when the view was made. */
  dlpx__extent(t->dl.ndim, t->dl.shape, t->dl.strides, dlpx__elem_bits(t->dl.dtype, t->flags), &l,
               &h);
  if (lo) *lo = l;
  if (hi) *hi = h;
}
