/* import.c - DLPack import: managed tensors in from any producer, validated
 * before anything is trusted.  Every path, refusals included, runs the
 * producer's deleter exactly once. */
#include "config.h"

#include <string.h>

#include "internal.h"

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
  if ((rc = dlpx_device_check(dl->device))) return rc;

  uint32_t tflags = 0;
  if ((mflags & DLPACK_FLAG_BITMASK_READ_ONLY) || (iflags & DLPX_IMPORT_READONLY))
    tflags |= DLPX_TENSOR_READONLY;
  else if (!versioned && (iflags & DLPX_IMPORT_LEGACY_READONLY))
    tflags |= DLPX_TENSOR_READONLY | DLPX_TENSOR_LEGACY_READONLY;
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
    dlpx__storage_discard(s); /* the caller runs the deleter, not the storage */
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
  dlpx__run_deleter(m, true); /* keeps the message of the refusal */
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
    rc = import_checked(&m->dl_tensor, 0, m, false, flags, out);
    if (rc == 0) return 0;
  }
  dlpx__run_deleter(m, false);
  return rc;
}
