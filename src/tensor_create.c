/* tensor_create.c - making tensors: new owned host memory, views over a
 * storage, and external memory. */
#include "config.h"

#include <string.h>

#include "internal.h"

static int check_strides_extent(const dlpx_storage *s, int32_t ndim, const int64_t *shape,
                                const int64_t *strides, int64_t elem_bits, int64_t byte_offset) {
  int64_t lo, hi, numel;
  int rc = dlpx__numel(ndim, shape, &numel);
  if (rc) return rc;
  rc = dlpx__extent(ndim, shape, strides, elem_bits, &lo, &hi);
  if (rc) return rc;
  if (byte_offset < 0)
    return dlpx__fail(DLPX_EBOUNDS, "byte offset %lld is negative", (long long)byte_offset);
  if (numel == 0) {
    if ((uint64_t)byte_offset > s->nbytes)
      return dlpx__fail(DLPX_EBOUNDS, "byte offset %lld is past the storage end (%zu bytes)",
                        (long long)byte_offset, s->nbytes);
    return 0;
  }
  int64_t first, last;
  if (dlpx__add_overflow(byte_offset, lo, &first) || dlpx__add_overflow(byte_offset, hi, &last))
    return dlpx__fail(DLPX_EOVERFLOW, "byte offset plus extent overflows int64");
  if (first < 0 || (uint64_t)last > s->nbytes)
    return dlpx__fail(DLPX_EBOUNDS,
                      "view touches bytes [%lld, %lld) but the storage has %zu bytes",
                      (long long)first, (long long)last, s->nbytes);
  return 0;
}

int dlpx_tensor_from_storage(dlpx_storage *storage, DLDataType dtype, int32_t ndim,
                             const int64_t *shape, const int64_t *strides, int64_t byte_offset,
                             uint32_t flags, dlpx_tensor **out) {
  if (!storage || !out) return dlpx__fail(DLPX_EINVAL, "storage or out is NULL");
  int rc = dlpx__check_tensor_flags(flags);
  if (rc) return rc;
  if ((rc = dlpx__check_shape(ndim, shape))) return rc;
  if ((rc = dlpx__dtype_check_element(dtype))) return rc;
  int64_t cstr[DLPX_MAX_NDIM];
  if (!strides) {
    dlpx__c_strides(ndim, shape, cstr);
    strides = cstr;
  }
  int64_t ebits = dlpx__elem_bits(dtype, flags);
  if ((rc = check_strides_extent(storage, ndim, shape, strides, ebits, byte_offset))) return rc;
  dlpx_tensor *t = dlpx__tensor_alloc(storage, ndim);
  if (!t) return dlpx__fail(DLPX_ENOMEM, "cannot allocate a tensor");
  t->dl.dtype = dtype;
  t->dl.byte_offset = (uint64_t)byte_offset;
  t->flags = flags;
  if (ndim) {
    memcpy(t->dl.shape, shape, (size_t)ndim * sizeof(int64_t));
    memcpy(t->dl.strides, strides, (size_t)ndim * sizeof(int64_t));
  }
  *out = t;
  return 0;
}

int dlpx__tensor_new_owned(DLDataType dtype, int32_t ndim, const int64_t *shape, char order,
                           uint32_t flags, bool zero, dlpx_tensor **out) {
  int rc = dlpx__check_shape(ndim, shape);
  if (rc) return rc;
  if ((rc = dlpx__dtype_check_element(dtype))) return rc;
  int64_t numel, nbytes;
  if ((rc = dlpx__numel(ndim, shape, &numel))) return rc;
  if (flags & DLPX_TENSOR_SUBBYTE_PADDED) {
    nbytes = numel; /* one byte per element */
  } else if ((rc = dlpx_dtype_nbytes(dtype, numel, &nbytes))) {
    return rc;
  }
  /* Packed sub-byte elements are written by read-modify-write of their
   * bytes, so such storage always starts zeroed: no byte is ever read
   * uninitialized (and the bits past the last element stay 0). */
  if (dlpx__elem_bits(dtype, flags) % 8 != 0) zero = true;
  dlpx_storage *s;
  if ((rc = dlpx_storage_alloc((size_t)nbytes, 0, zero, &s))) return rc;
  dlpx_tensor *t = dlpx__tensor_alloc(s, ndim);
  dlpx_storage_release(s); /* the tensor holds the only reference now */
  if (!t) return dlpx__fail(DLPX_ENOMEM, "cannot allocate a tensor");
  t->dl.dtype = dtype;
  t->flags = flags;
  if (ndim) {
    memcpy(t->dl.shape, shape, (size_t)ndim * sizeof(int64_t));
    if (order == 'F')
      dlpx__f_strides(ndim, shape, t->dl.strides);
    else
      dlpx__c_strides(ndim, shape, t->dl.strides);
  }
  *out = t;
  return 0;
}

int dlpx_tensor_new(DLDataType dtype, int32_t ndim, const int64_t *shape, uint32_t flags,
                    int zero, dlpx_tensor **out) {
  if (!out) return dlpx__fail(DLPX_EINVAL, "out is NULL");
  int rc = dlpx__check_tensor_flags(flags);
  if (rc) return rc;
  if (dtype.bits >= 8) flags &= ~(uint32_t)DLPX_TENSOR_SUBBYTE_PADDED;
  return dlpx__tensor_new_owned(dtype, ndim, shape, 'C', flags, zero != 0, out);
}

int dlpx_tensor_empty(DLDataType dtype, int32_t ndim, const int64_t *shape, dlpx_tensor **out) {
  if (!out) return dlpx__fail(DLPX_EINVAL, "out is NULL");
  return dlpx__tensor_new_owned(dtype, ndim, shape, 'C', 0, false, out);
}

int dlpx_tensor_zeros(DLDataType dtype, int32_t ndim, const int64_t *shape, dlpx_tensor **out) {
  if (!out) return dlpx__fail(DLPX_EINVAL, "out is NULL");
  return dlpx__tensor_new_owned(dtype, ndim, shape, 'C', 0, true, out);
}

int dlpx_tensor_wrap(void *data, DLDevice device, DLDataType dtype, int32_t ndim,
                     const int64_t *shape, const int64_t *strides, uint32_t flags,
                     dlpx_release_fn release, void *ctx, dlpx_tensor **out) {
  if (!out) return dlpx__fail(DLPX_EINVAL, "out is NULL");
  int rc = dlpx__check_tensor_flags(flags);
  if (rc) return rc;
  if ((rc = dlpx__check_shape(ndim, shape))) return rc;
  if ((rc = dlpx__dtype_check_element(dtype))) return rc;
  int64_t cstr[DLPX_MAX_NDIM], numel, lo, hi;
  if ((rc = dlpx__numel(ndim, shape, &numel))) return rc;
  if (!strides) {
    dlpx__c_strides(ndim, shape, cstr);
    strides = cstr;
  }
  if ((rc = dlpx__extent(ndim, shape, strides, dlpx__elem_bits(dtype, flags), &lo, &hi)))
    return rc;
  if (numel > 0 && !data) return dlpx__fail(DLPX_EINVAL, "data is NULL but the tensor has elements");
  /* The storage spans exactly the bytes the view touches; its base is the
   * lowest one.  Opaque device handles cannot be offset, so their views must
   * not reach below element 0. */
  void *base = data;
  if (lo < 0) {
    if (!dlpx__device_addressable((int32_t)device.device_type))
      return dlpx__fail(DLPX_ELAYOUT,
                        "negative strides on a device with opaque handles need byte_offset");
    base = (char *)data + lo;
  }
  dlpx_storage *s;
  if ((rc = dlpx_storage_wrap(base, (size_t)(hi - lo), device, NULL, NULL, &s))) return rc;
  dlpx_tensor *t;
  rc = dlpx_tensor_from_storage(s, dtype, ndim, shape, strides, -lo, flags, &t);
  if (rc) {
    dlpx__storage_discard(s); /* nothing is taken */
    return rc;
  }
  /* Only now does the storage take the memory over. */
  dlpx__storage_set_release(s, release, data, ctx);
  dlpx_storage_release(s);
  *out = t;
  return 0;
}
