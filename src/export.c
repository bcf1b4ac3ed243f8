/* export.c - DLPack export: managed tensors out to any consumer, one
 * allocation each, each holding its own storage reference. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- export ------------------------------------------------------------------ */

/* One allocation per export: the managed tensor, the storage reference it
 * holds, and its shape and strides.  manager_ctx points to the block. */
typedef struct {
  DLManagedTensorVersioned mt;
  dlpx_storage *storage;
  int64_t dims[];
} export_block;

typedef struct {
  DLManagedTensor mt;
  dlpx_storage *storage;
  int64_t dims[];
} export_block_legacy;

static void export_deleter(DLManagedTensorVersioned *self) {
  if (!self) return;
  export_block *b = self->manager_ctx;
  dlpx_storage_release(b->storage);
  dlpx__count(&dlpx__stats.exports_live, -1);
  free(b);
}

static void export_deleter_legacy(DLManagedTensor *self) {
  if (!self) return;
  export_block_legacy *b = self->manager_ctx;
  dlpx_storage_release(b->storage);
  dlpx__count(&dlpx__stats.exports_live, -1);
  free(b);
}

/* Fills the exported DLTensor from |t|: shape, strides (extents of 1 get the
 * stride a contiguous layout would have, which some consumers insist on),
 * and data with the byte offset folded in where addresses allow it. */
static void fill_dltensor(DLTensor *dl, const dlpx_tensor *t, int64_t *dims) {
  const int32_t ndim = t->dl.ndim;
  *dl = t->dl;
  if (ndim) {
    dl->shape = dims;
    dl->strides = dims + ndim;
    memcpy(dims, t->dl.shape, (size_t)ndim * sizeof(int64_t));
    for (int32_t i = ndim - 1; i >= 0; i--) {
      int64_t s = t->dl.strides[i];
      if (t->dl.shape[i] == 1) {
        int64_t r = 1;
        if (i + 1 < ndim && __builtin_mul_overflow(dims[i + 1], dl->strides[i + 1], &r)) r = 1;
        s = r;
      }
      dl->strides[i] = s;
    }
  }
  if (!t->dl.data) {
    dl->data = NULL;
    dl->byte_offset = 0;
  } else if (dlpx__device_addressable((int32_t)t->dl.device.device_type)) {
    dl->data = (char *)t->dl.data + t->dl.byte_offset;
    dl->byte_offset = 0;
  }
}

/* Makes the private copy for DLPX_EXPORT_COPY. */
static int export_copy(const dlpx_tensor *t, dlpx_tensor **out) {
  int32_t type = (int32_t)t->dl.device.device_type;
  if (type == kDLCUDA || type == kDLCUDAManaged) /* on the device, queued after its writer */
    return dlpx_cuda_tensor_to(t, t->dl.device, dlpx_cuda_storage_stream(t->storage), 0, out);
  if (!dlpx__device_host(type))
    return dlpx__fail(DLPX_EDEVICE, "copy on export is only supported for host and CUDA tensors");
  return dlpx_tensor_copy(t, 'C', out);
}

int dlpx_tensor_export(const dlpx_tensor *t, uint32_t flags, DLManagedTensorVersioned **out) {
  if (DLPX__UNLIKELY(!t || !out)) return dlpx__fail(DLPX_EINVAL, "tensor or out is NULL");
  if (DLPX__UNLIKELY(flags & ~(DLPX_EXPORT_COPY | DLPX_EXPORT_COPIED)))
    return dlpx__fail(DLPX_EINVAL, "unknown export flags 0x%x", (unsigned)flags);
  dlpx_tensor *copy = NULL;
  if (flags & DLPX_EXPORT_COPY) {
    int rc = export_copy(t, &copy);
    if (rc) return rc;
    t = copy;
  }
  const int32_t ndim = t->dl.ndim;
  export_block *b = malloc(sizeof *b + 2 * (size_t)ndim * sizeof(int64_t));
  if (DLPX__UNLIKELY(!b)) {
    dlpx_tensor_free(copy);
    return dlpx__fail(DLPX_ENOMEM, "cannot allocate a managed tensor");
  }
  b->mt.version.major = DLPACK_MAJOR_VERSION;
  b->mt.version.minor = DLPACK_MINOR_VERSION;
  b->mt.manager_ctx = b;
  b->mt.deleter = export_deleter;
  uint64_t mflags = 0;
  if (t->flags & DLPX_TENSOR_READONLY) mflags |= DLPACK_FLAG_BITMASK_READ_ONLY;
  if (t->flags & DLPX_TENSOR_SUBBYTE_PADDED) mflags |= DLPACK_FLAG_BITMASK_IS_SUBBYTE_TYPE_PADDED;
  if (copy || (flags & DLPX_EXPORT_COPIED)) mflags |= DLPACK_FLAG_BITMASK_IS_COPIED;
  b->mt.flags = mflags;
  fill_dltensor(&b->mt.dl_tensor, t, b->dims);
  b->storage = t->storage;
  dlpx_storage_retain(t->storage);
  dlpx__count(&dlpx__stats.exports_live, 1);
  dlpx_tensor_free(copy);
  *out = &b->mt;
  return 0;
}

int dlpx_tensor_export_legacy(const dlpx_tensor *t, uint32_t flags, DLManagedTensor **out) {
  if (DLPX__UNLIKELY(!t || !out)) return dlpx__fail(DLPX_EINVAL, "tensor or out is NULL");
  if (DLPX__UNLIKELY(flags & ~DLPX_EXPORT_COPY))
    return dlpx__fail(DLPX_EINVAL, "unknown export flags 0x%x", (unsigned)flags);
  if (t->flags & DLPX_TENSOR_SUBBYTE_PADDED)
    return dlpx__fail(DLPX_ENOTSUP,
                      "a legacy DLManagedTensor cannot describe padded sub-byte elements");
  dlpx_tensor *copy = NULL;
  if (flags & DLPX_EXPORT_COPY) {
    int rc = export_copy(t, &copy);
    if (rc) return rc;
    t = copy;
  } else if ((t->flags & DLPX_TENSOR_READONLY) && !(t->flags & DLPX_TENSOR_LEGACY_READONLY)) {
    /* (A tensor that is read-only only because it came in a legacy capsule
     * goes back out the way it came.) */
    return dlpx__fail(DLPX_EREADONLY,
                      "cannot export a read-only tensor as a legacy DLManagedTensor, which "
                      "cannot mark it read-only (ask for DLPack >= 1.0, or copy)");
  }
  const int32_t ndim = t->dl.ndim;
  export_block_legacy *b = malloc(sizeof *b + 2 * (size_t)ndim * sizeof(int64_t));
  if (DLPX__UNLIKELY(!b)) {
    dlpx_tensor_free(copy);
    return dlpx__fail(DLPX_ENOMEM, "cannot allocate a managed tensor");
  }
  b->mt.manager_ctx = b;
  b->mt.deleter = export_deleter_legacy;
  fill_dltensor(&b->mt.dl_tensor, t, b->dims);
  b->storage = t->storage;
  dlpx_storage_retain(t->storage);
  dlpx__count(&dlpx__stats.exports_live, 1);
  dlpx_tensor_free(copy);
  *out = &b->mt;
  return 0;
}
