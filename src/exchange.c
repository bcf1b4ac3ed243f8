/* exchange.c - DLPack export (managed tensors out) and import (in). */
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
  if (t->dl.device.device_type != kDLCPU)
    return dlpx__fail(DLPX_EDEVICE, "copy on export is only supported for CPU tensors");
  return dlpx_tensor_copy(t, 'C', out);
}

int dlpx_tensor_export(const dlpx_tensor *t, uint32_t flags, DLManagedTensorVersioned **out) {
  if (DLPX__UNLIKELY(!t || !out)) return dlpx__fail(DLPX_EINVAL, "tensor or out is NULL");
  if (DLPX__UNLIKELY(flags & ~DLPX_EXPORT_COPY))
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
  if (copy) mflags |= DLPACK_FLAG_BITMASK_IS_COPIED;
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
  } else if (t->flags & DLPX_TENSOR_READONLY) {
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

/* ---- import ------------------------------------------------------------------ */

static void run_deleter(void *managed, bool versioned) {
  if (versioned) {
    DLManagedTensorVersioned *m = managed;
    if (m->deleter) m->deleter(m);
  } else {
    DLManagedTensor *m = managed;
    if (m->deleter) m->deleter(m);
  }
  dlpx__count(&dlpx__stats.foreign_deleters_run, 1);
}

/* Validates |dl| and builds the tensor; returns 0 or an error code with the
 * managed tensor untouched (the caller runs its deleter). */
static int import_checked(const DLTensor *dl, uint64_t mflags, void *managed, bool versioned,
                          uint32_t iflags, dlpx_tensor **out) {
  const int32_t ndim = dl->ndim;
  if (ndim < 0 || ndim > DLPX_MAX_NDIM)
    return dlpx__fail(DLPX_ESHAPE, "DLPack tensor has ndim %d, outside [0, %d]", (int)ndim,
                      DLPX_MAX_NDIM);
  if (ndim > 0 && !dl->shape)
    return dlpx__fail(DLPX_ESHAPE, "DLPack tensor has NULL shape with ndim %d", (int)ndim);
  for (int32_t i = 0; i < ndim; i++)
    if (dl->shape[i] < 0)
      return dlpx__fail(DLPX_ESHAPE, "DLPack tensor shape[%d] is negative: %lld", (int)i,
                        (long long)dl->shape[i]);
  int rc = dlpx__dtype_check_element(dl->dtype);
  if (rc) return rc;
  if ((rc = dlpx__device_check(dl->device))) return rc;

  uint32_t tflags = 0;
  if ((mflags & DLPACK_FLAG_BITMASK_READ_ONLY) || (iflags & DLPX_IMPORT_READONLY))
    tflags |= DLPX_TENSOR_READONLY;
  if ((mflags & DLPACK_FLAG_BITMASK_IS_SUBBYTE_TYPE_PADDED) && dl->dtype.bits < 8)
    tflags |= DLPX_TENSOR_SUBBYTE_PADDED;
  const int64_t ebits = dlpx__elem_bits(dl->dtype, tflags);

  int64_t numel, nbytes, lo, hi, cstr[DLPX_MAX_NDIM];
  if ((rc = dlpx__numel(ndim, dl->shape, &numel))) return rc;
  if (tflags & DLPX_TENSOR_SUBBYTE_PADDED)
    nbytes = numel;
  else if ((rc = dlpx_dtype_nbytes(dl->dtype, numel, &nbytes)))
    return rc;
  const int64_t *strides = dl->strides;
  if (!strides && ndim > 0) {
    dlpx__c_strides(ndim, dl->shape, cstr);
    strides = cstr;
  }
  if ((rc = dlpx__extent(ndim, dl->shape, strides, ebits, &lo, &hi))) return rc;
  if (numel > 0 && !dl->data)
    return dlpx__fail(DLPX_EINVAL, "DLPack tensor has NULL data but %lld elements",
                      (long long)numel);
  if (dl->byte_offset > (uint64_t)INT64_MAX)
    return dlpx__fail(DLPX_EOVERFLOW, "DLPack tensor byte_offset %llu overflows int64",
                      (unsigned long long)dl->byte_offset);
  const int64_t boff = (int64_t)dl->byte_offset;

  /* The storage spans the bytes the view touches.  With plain addresses its
   * base is the lowest touched byte; opaque handles keep their base and the
   * view must not reach below it. */
  void *base = dl->data;
  int64_t offset = 0, size = 0;
  if (numel == 0) {
    if (dl->data && dlpx__device_addressable((int32_t)dl->device.device_type))
      base = (char *)dl->data + boff;
  } else if (dlpx__device_addressable((int32_t)dl->device.device_type)) {
    int64_t first;
    if (dlpx__add_overflow(boff, lo, &first))
      return dlpx__fail(DLPX_EOVERFLOW, "byte_offset plus extent overflows int64");
    base = (void *)((uintptr_t)dl->data + (uintptr_t)first);
    offset = -lo;
    size = hi - lo;
  } else {
    if (dlpx__add_overflow(boff, lo, &offset) || offset < 0)
      return dlpx__fail(DLPX_EBOUNDS, "DLPack tensor reaches below its data handle");
    if (dlpx__add_overflow(boff, hi, &size))
      return dlpx__fail(DLPX_EOVERFLOW, "byte_offset plus extent overflows int64");
    offset = boff;
  }

  dlpx_storage *s;
  if ((rc = dlpx__storage_foreign(managed, versioned, base, (size_t)size, dl->device, &s)))
    return rc;
  dlpx_tensor *t = dlpx__tensor_alloc(s, ndim);
  if (!t) {
    s->kind = DLPX_STORAGE_BORROWED; /* the caller runs the deleter, not the storage */
    s->release = NULL;
    dlpx_storage_release(s);
    return dlpx__fail(DLPX_ENOMEM, "cannot allocate a tensor");
  }
  dlpx_storage_release(s); /* the tensor holds the only reference */
  t->dl.dtype = dl->dtype;
  t->dl.byte_offset = (uint64_t)offset;
  t->flags = tflags;
  if (ndim) {
    memcpy(t->dl.shape, dl->shape, (size_t)ndim * sizeof(int64_t));
    memcpy(t->dl.strides, strides, (size_t)ndim * sizeof(int64_t));
  }
  *out = t;
  return 0;
}

int dlpx_tensor_import(DLManagedTensorVersioned *m, uint32_t flags, dlpx_tensor **out) {
  if (!m) return dlpx__fail(DLPX_EINVAL, "managed tensor is NULL");
  int rc;
  if (!out) {
    rc = dlpx__fail(DLPX_EINVAL, "out is NULL");
  } else if (flags & ~(DLPX_IMPORT_READONLY | DLPX_IMPORT_LEGACY_READONLY)) {
    rc = dlpx__fail(DLPX_EINVAL, "unknown import flags 0x%x", (unsigned)flags);
  } else if (m->version.major != DLPACK_MAJOR_VERSION) {
    /* Past the flags field the layout is unknown: only the deleter is safe. */
    rc = dlpx__fail(DLPX_EVERSION, "DLPack major version %u is not supported (only %d)",
                    (unsigned)m->version.major, DLPACK_MAJOR_VERSION);
  } else {
    rc = import_checked(&m->dl_tensor, m->flags, m, true, flags, out);
    if (rc == 0) return 0;
  }
  run_deleter(m, true);
  return rc;
}

int dlpx_tensor_import_legacy(DLManagedTensor *m, uint32_t flags, dlpx_tensor **out) {
  if (!m) return dlpx__fail(DLPX_EINVAL, "managed tensor is NULL");
  int rc;
  if (!out) {
    rc = dlpx__fail(DLPX_EINVAL, "out is NULL");
  } else if (flags & ~(DLPX_IMPORT_READONLY | DLPX_IMPORT_LEGACY_READONLY)) {
    rc = dlpx__fail(DLPX_EINVAL, "unknown import flags 0x%x", (unsigned)flags);
  } else {
    if (flags & DLPX_IMPORT_LEGACY_READONLY) flags |= DLPX_IMPORT_READONLY;
    rc = import_checked(&m->dl_tensor, 0, m, false, flags, out);
    if (rc == 0) return 0;
  }
  run_deleter(m, false);
  return rc;
}
