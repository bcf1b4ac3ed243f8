/* tensor.c - tensor handles: creation, queries and views. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- helpers ------------------------------------------------------------- */

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

static int check_ndim(int32_t ndim) {
  if (ndim < 0 || ndim > DLPX_MAX_NDIM)
    return dlpx__fail(DLPX_ESHAPE, "ndim %d is outside [0, %d]", (int)ndim, DLPX_MAX_NDIM);
  return 0;
}

static int check_shape(int32_t ndim, const int64_t *shape) {
  int rc = check_ndim(ndim);
  if (rc) return rc;
  if (ndim > 0 && !shape) return dlpx__fail(DLPX_EINVAL, "shape is NULL but ndim is %d", (int)ndim);
  for (int32_t i = 0; i < ndim; i++)
    if (shape[i] < 0)
      return dlpx__fail(DLPX_ESHAPE, "shape[%d] is negative: %lld", (int)i, (long long)shape[i]);
  return 0;
}

int dlpx__numel(int32_t ndim, const int64_t *shape, int64_t *out) {
  int64_t n = 1;
  bool zero = false;
  for (int32_t i = 0; i < ndim; i++)
    if (shape[i] == 0) zero = true;
  if (zero) {
    *out = 0;
    return 0;
  }
  for (int32_t i = 0; i < ndim; i++)
    if (dlpx__mul_overflow(n, shape[i], &n))
      return dlpx__fail(DLPX_EOVERFLOW, "the element count of the shape overflows int64");
  *out = n;
  return 0;
}

void dlpx__c_strides(int32_t ndim, const int64_t *shape, int64_t *strides) {
  int64_t s = 1;
  for (int32_t i = ndim - 1; i >= 0; i--) {
    strides[i] = s;
    if (shape[i] > 1) s *= shape[i]; /* no overflow: the caller checked numel */
  }
}

static void f_strides(int32_t ndim, const int64_t *shape, int64_t *strides) {
  int64_t s = 1;
  for (int32_t i = 0; i < ndim; i++) {
    strides[i] = s;
    if (shape[i] > 1) s *= shape[i];
  }
}

/* floor(a / 8) and ceil(a / 8) for any sign. */
static int64_t floor8(int64_t a) { return a >= 0 ? a / 8 : -((-a + 7) / 8); }
static int64_t ceil8(int64_t a) { return a >= 0 ? (a + 7) / 8 : -((-a) / 8); }

int dlpx__extent(int32_t ndim, const int64_t *shape, const int64_t *strides, int64_t elem_bits,
                 int64_t *lo, int64_t *hi) {
  int64_t min_e = 0, max_e = 0;
  for (int32_t i = 0; i < ndim; i++)
    if (shape[i] == 0) {
      *lo = *hi = 0;
      return 0;
    }
  for (int32_t i = 0; i < ndim; i++) {
    int64_t span;
    if (shape[i] == 1) continue;
    if (dlpx__mul_overflow(strides[i], shape[i] - 1, &span)) goto overflow;
    if (span < 0) {
      if (dlpx__add_overflow(min_e, span, &min_e)) goto overflow;
    } else {
      if (dlpx__add_overflow(max_e, span, &max_e)) goto overflow;
    }
  }
  int64_t lo_bits, hi_bits;
  if (dlpx__mul_overflow(min_e, elem_bits, &lo_bits)) goto overflow;
  if (dlpx__add_overflow(max_e, 1, &max_e) || dlpx__mul_overflow(max_e, elem_bits, &hi_bits))
    goto overflow;
  *lo = floor8(lo_bits);
  *hi = ceil8(hi_bits);
  return 0;
overflow:
  return dlpx__fail(DLPX_EOVERFLOW, "the byte extent of the strides overflows int64");
}

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

/* Makes a new view of |src| with the given geometry; element 0 moves by
 * |delta| elements. */
static int make_view(const dlpx_tensor *src, int32_t ndim, const int64_t *shape,
                     const int64_t *strides, int64_t delta, uint32_t flags, dlpx_tensor **out) {
  int64_t ebits = dlpx__elem_bits(src->dl.dtype, src->flags);
  int64_t bits, off = (int64_t)src->dl.byte_offset;
  /* Without elements there is no element 0 to point at: keep the offset. */
  for (int32_t i = 0; i < ndim; i++)
    if (shape[i] == 0) delta = 0;
  if (delta != 0) {
    if (dlpx__mul_overflow(delta, ebits, &bits))
      return dlpx__fail(DLPX_EOVERFLOW, "view offset overflows int64");
    if (bits % 8 != 0)
      return dlpx__fail(DLPX_ELAYOUT,
                        "a view of %lld-bit elements must start on a byte boundary",
                        (long long)ebits);
    if (dlpx__add_overflow(off, bits / 8, &off))
      return dlpx__fail(DLPX_EOVERFLOW, "view offset overflows int64");
  }
  dlpx_tensor *t = dlpx__tensor_alloc(src->storage, ndim);
  if (!t) return dlpx__fail(DLPX_ENOMEM, "cannot allocate a tensor");
  t->dl.data = src->dl.data;
  t->dl.dtype = src->dl.dtype;
  t->dl.byte_offset = (uint64_t)off;
  t->flags = flags;
  if (ndim) {
    memcpy(t->dl.shape, shape, (size_t)ndim * sizeof(int64_t));
    memcpy(t->dl.strides, strides, (size_t)ndim * sizeof(int64_t));
  }
  *out = t;
  return 0;
}

/* ---- creation ------------------------------------------------------------ */

int dlpx_tensor_from_storage(dlpx_storage *storage, DLDataType dtype, int32_t ndim,
                             const int64_t *shape, const int64_t *strides, int64_t byte_offset,
                             uint32_t flags, dlpx_tensor **out) {
  if (!storage || !out) return dlpx__fail(DLPX_EINVAL, "storage or out is NULL");
  if (flags & ~(DLPX_TENSOR_READONLY | DLPX_TENSOR_SUBBYTE_PADDED))
    return dlpx__fail(DLPX_EINVAL, "unknown tensor flags 0x%x", (unsigned)flags);
  int rc = check_shape(ndim, shape);
  if (rc) return rc;
  if ((rc = dlpx__dtype_check_element(dtype))) return rc;
  int64_t cstr[DLPX_MAX_NDIM];
  if (!strides) {
    int64_t numel;
    if ((rc = dlpx__numel(ndim, shape, &numel))) return rc;
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
  int rc = check_shape(ndim, shape);
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
      f_strides(ndim, shape, t->dl.strides);
    else
      dlpx__c_strides(ndim, shape, t->dl.strides);
  }
  *out = t;
  return 0;
}

int dlpx_tensor_new(DLDataType dtype, int32_t ndim, const int64_t *shape, uint32_t flags,
                    int zero, dlpx_tensor **out) {
  if (!out) return dlpx__fail(DLPX_EINVAL, "out is NULL");
  if (flags & ~(DLPX_TENSOR_READONLY | DLPX_TENSOR_SUBBYTE_PADDED))
    return dlpx__fail(DLPX_EINVAL, "unknown tensor flags 0x%x", (unsigned)flags);
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
  int rc = check_shape(ndim, shape);
  if (rc) return rc;
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
    dlpx_storage_release(s); /* no release callback set yet: nothing is taken */
    return rc;
  }
  /* Only now does the storage take the memory over. */
  s->release = release;
  s->ctx = ctx;
  dlpx_storage_release(s);
  *out = t;
  return 0;
}

void dlpx_tensor_free(dlpx_tensor *t) {
  if (!t) return;
  dlpx_storage_release(t->storage);
  dlpx__count(&dlpx__stats.tensors_live, -1);
  free(t);
}

int dlpx_tensor_clone(const dlpx_tensor *t, dlpx_tensor **out) {
  if (!t || !out) return dlpx__fail(DLPX_EINVAL, "tensor or out is NULL");
  return make_view(t, t->dl.ndim, t->dl.shape, t->dl.strides, 0, t->flags, out);
}

int dlpx_tensor_view_as(const dlpx_tensor *t, DLDataType dtype, dlpx_tensor **out) {
  if (!t || !out) return dlpx__fail(DLPX_EINVAL, "tensor or out is NULL");
  int rc = dlpx__dtype_check_element(dtype);
  if (rc) return rc;
  const int64_t have = dlpx__elem_bits(t->dl.dtype, t->flags);
  uint32_t flags = t->flags & ~(uint32_t)DLPX_TENSOR_SUBBYTE_PADDED;
  int64_t want = dlpx_dtype_bits(dtype);
  if (want < 8 && have == 8) { /* one sub-byte element per byte */
    flags |= DLPX_TENSOR_SUBBYTE_PADDED;
    want = 8;
  }
  if (have != want)
    return dlpx__fail(DLPX_EDTYPE, "cannot view %lld-bit elements as a %lld-bit dtype",
                      (long long)have, (long long)want);
  int rc2 = make_view(t, t->dl.ndim, t->dl.shape, t->dl.strides, 0, flags, out);
  if (rc2 == 0) (*out)->dl.dtype = dtype;
  return rc2;
}

int dlpx_tensor_with_flags(const dlpx_tensor *t, uint32_t flags, dlpx_tensor **out) {
  if (!t || !out) return dlpx__fail(DLPX_EINVAL, "tensor or out is NULL");
  if (flags & ~(uint32_t)DLPX_TENSOR_READONLY)
    return dlpx__fail(DLPX_EINVAL, "only DLPX_TENSOR_READONLY can be added, not 0x%x",
                      (unsigned)flags);
  return make_view(t, t->dl.ndim, t->dl.shape, t->dl.strides, 0, t->flags | flags, out);
}

/* ---- queries -------------------------------------------------------------- */

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
  int64_t n = 1;
  for (int32_t i = 0; i < t->dl.ndim; i++) n *= t->dl.shape[i]; /* checked at creation */
  return n;
}

int64_t dlpx_tensor_nbytes(const dlpx_tensor *t) {
  int64_t n = dlpx_tensor_numel(t);
  if (t->flags & DLPX_TENSOR_SUBBYTE_PADDED) return n;
  int64_t nb = 0;
  dlpx_dtype_nbytes(t->dl.dtype, n, &nb);
  return nb;
}

static int contiguous(int32_t ndim, const int64_t *shape, const int64_t *strides, bool c_order) {
  int64_t expect = 1;
  for (int32_t i = 0; i < ndim; i++)
    if (shape[i] == 0) return 1;
  for (int32_t k = 0; k < ndim; k++) {
    int32_t i = c_order ? ndim - 1 - k : k;
    if (shape[i] == 1) continue;
    if (strides[i] != expect) return 0;
    expect *= shape[i];
  }
  return 1;
}

int dlpx_tensor_is_c_contiguous(const dlpx_tensor *t) {
  return contiguous(t->dl.ndim, t->dl.shape, t->dl.strides, true);
}

int dlpx_tensor_is_f_contiguous(const dlpx_tensor *t) {
  return contiguous(t->dl.ndim, t->dl.shape, t->dl.strides, false);
}

void dlpx_tensor_extent(const dlpx_tensor *t, int64_t *lo, int64_t *hi) {
  int64_t l = 0, h = 0;
  /* Cannot overflow: checked when the view was made. */
  dlpx__extent(t->dl.ndim, t->dl.shape, t->dl.strides, dlpx__elem_bits(t->dl.dtype, t->flags), &l,
               &h);
  if (lo) *lo = l;
  if (hi) *hi = h;
}

/* ---- views ----------------------------------------------------------------- */

/* The stride given to a new axis of extent 1 in front of a dimension of
 * |extent| and |stride|: what a contiguous layout would have there.  Any
 * value is valid for extent 1; this one keeps contiguous tensors
 * contiguous for consumers that compare every stride. */
static int64_t unit_stride(int64_t extent, int64_t stride) {
  int64_t r;
  if (dlpx__mul_overflow(extent, stride, &r)) return 1;
  return r;
}

static int norm_dim(int32_t dim, int32_t ndim, int32_t *out) {
  int32_t d = dim < 0 ? dim + ndim : dim;
  if (dim == DLPX_ALL_DIMS || d < 0 || d >= ndim)
    return dlpx__fail(DLPX_EINDEX, "dimension %d is out of range for a %d-d tensor", (int)dim,
                      (int)ndim);
  *out = d;
  return 0;
}

/* Python's slice.indices() followed by the slice length. */
static int slice_indices(int64_t len, int64_t start, int64_t stop, int64_t step, int64_t *ostart,
                         int64_t *ostep, int64_t *olen) {
  if (step == DLPX_NONE) step = 1;
  if (step == 0) return dlpx__fail(DLPX_EINVAL, "slice step cannot be zero");
  if (start == DLPX_NONE) {
    start = step < 0 ? len - 1 : 0;
  } else {
    if (start < 0) {
      start += len;
      if (start < 0) start = step < 0 ? -1 : 0;
    } else if (start >= len) {
      start = step < 0 ? len - 1 : len;
    }
  }
  if (stop == DLPX_NONE) {
    stop = step < 0 ? -1 : len;
  } else {
    if (stop < 0) {
      stop += len;
      if (stop < 0) stop = step < 0 ? -1 : 0;
    } else if (stop >= len) {
      stop = step < 0 ? len - 1 : len;
    }
  }
  int64_t n = 0;
  if (step < 0) {
    if (stop < start) n = (start - stop - 1) / (-step) + 1;
  } else {
    if (start < stop) n = (stop - start - 1) / step + 1;
  }
  *ostart = start;
  *ostep = step;
  *olen = n;
  return 0;
}

/* Applies a slice to one dimension: new extent and stride, element delta. */
static int apply_slice(int64_t len, int64_t stride, int64_t start, int64_t stop, int64_t step,
                       int64_t *nlen, int64_t *nstride, int64_t *delta) {
  int64_t s = 0, st = 1, n = 0;
  int rc = slice_indices(len, start, stop, step, &s, &st, &n);
  if (rc) return rc;
  /* With two or more elements |step| < len, so the new stride stays inside
   * the checked extent; with fewer the stride is never used (and step may be
   * anything, e.g. 2**63 - 1): keep the old one. */
  int64_t ns = stride;
  if (n > 1 && dlpx__mul_overflow(stride, st, &ns))
    return dlpx__fail(DLPX_EOVERFLOW, "slice stride overflows int64");
  *nlen = n;
  *nstride = ns;
  *delta = n > 0 ? s * stride : 0; /* |s| < len: no overflow past the extent */
  return 0;
}

int dlpx_tensor_slice(const dlpx_tensor *t, int32_t dim, int64_t start, int64_t stop, int64_t step,
                      dlpx_tensor **out) {
  if (!t || !out) return dlpx__fail(DLPX_EINVAL, "tensor or out is NULL");
  int32_t d = 0;
  int rc = norm_dim(dim, t->dl.ndim, &d);
  if (rc) return rc;
  int64_t shape[DLPX_MAX_NDIM], strides[DLPX_MAX_NDIM], delta;
  memcpy(shape, t->dl.shape, (size_t)t->dl.ndim * sizeof(int64_t));
  memcpy(strides, t->dl.strides, (size_t)t->dl.ndim * sizeof(int64_t));
  rc = apply_slice(shape[d], strides[d], start, stop, step, &shape[d], &strides[d], &delta);
  if (rc) return rc;
  return make_view(t, t->dl.ndim, shape, strides, delta, t->flags, out);
}

int dlpx_tensor_select(const dlpx_tensor *t, int32_t dim, int64_t index, dlpx_tensor **out) {
  if (!t || !out) return dlpx__fail(DLPX_EINVAL, "tensor or out is NULL");
  int32_t d = 0;
  int rc = norm_dim(dim, t->dl.ndim, &d);
  if (rc) return rc;
  int64_t len = t->dl.shape[d];
  int64_t i = index < 0 ? index + len : index;
  if (index == DLPX_NONE || i < 0 || i >= len)
    return dlpx__fail(DLPX_EINDEX, "index %lld is out of range for dimension %d of extent %lld",
                      (long long)index, (int)d, (long long)len);
  int64_t shape[DLPX_MAX_NDIM], strides[DLPX_MAX_NDIM];
  int32_t n = 0;
  for (int32_t k = 0; k < t->dl.ndim; k++) {
    if (k == d) continue;
    shape[n] = t->dl.shape[k];
    strides[n++] = t->dl.strides[k];
  }
  return make_view(t, n, shape, strides, i * t->dl.strides[d], t->flags, out);
}

int dlpx_tensor_index(const dlpx_tensor *t, int32_t n, const dlpx_index *items,
                      dlpx_tensor **out) {
  if (!t || !out || (n > 0 && !items))
    return dlpx__fail(DLPX_EINVAL, "tensor, items or out is NULL");
  if (n < 0) return dlpx__fail(DLPX_EINVAL, "negative index count %d", (int)n);
  int32_t consumed = 0, ellipses = 0;
  for (int32_t k = 0; k < n; k++) {
    switch (items[k].kind) {
      case DLPX_INDEX_INT:
      case DLPX_INDEX_SLICE:
        consumed++;
        break;
      case DLPX_INDEX_NEWAXIS:
        break;
      case DLPX_INDEX_ELLIPSIS:
        if (++ellipses > 1) return dlpx__fail(DLPX_EINDEX, "an index can only have a single ellipsis");
        break;
      default:
        return dlpx__fail(DLPX_EINVAL, "unknown index kind %d at position %d", (int)items[k].kind,
                          (int)k);
    }
  }
  const int32_t ndim = t->dl.ndim;
  if (consumed > ndim)
    return dlpx__fail(DLPX_EINDEX, "too many indices: %d-d tensor, %d indexed", (int)ndim,
                      (int)consumed);
  int64_t shape[DLPX_MAX_NDIM], strides[DLPX_MAX_NDIM], delta = 0;
  int32_t od = 0, id = 0; /* output and input dimension */
  for (int32_t k = 0; k <= n; k++) {
    int32_t kind;
    if (k < n) {
      kind = items[k].kind;
    } else {
      if (id >= ndim) break;
      kind = DLPX_INDEX_ELLIPSIS; /* trailing dimensions: full slices */
    }
    if (kind == DLPX_INDEX_ELLIPSIS) {
      int32_t full = k < n ? ndim - consumed : ndim - id;
      for (int32_t j = 0; j < full; j++, id++) {
        if (od >= DLPX_MAX_NDIM) goto too_many;
        shape[od] = t->dl.shape[id];
        strides[od++] = t->dl.strides[id];
      }
    } else if (kind == DLPX_INDEX_NEWAXIS) {
      if (od >= DLPX_MAX_NDIM) goto too_many;
      /* stride of a new axis: what unsqueeze would give */
      shape[od] = 1;
      strides[od++] = id < ndim ? unit_stride(t->dl.shape[id], t->dl.strides[id]) : 1;
    } else if (kind == DLPX_INDEX_INT) {
      int64_t len = t->dl.shape[id], idx = items[k].start;
      int64_t i = idx < 0 ? idx + len : idx;
      if (idx == DLPX_NONE || i < 0 || i >= len)
        return dlpx__fail(DLPX_EINDEX, "index %lld is out of bounds for axis %d with size %lld",
                          (long long)idx, (int)id, (long long)len);
      delta += i * t->dl.strides[id]; /* stays within the checked extent */
      id++;
    } else { /* slice */
      if (od >= DLPX_MAX_NDIM) goto too_many;
      int64_t d = 0;
      int rc = apply_slice(t->dl.shape[id], t->dl.strides[id], items[k].start, items[k].stop,
                           items[k].step, &shape[od], &strides[od], &d);
      if (rc) return rc;
      delta += d;
      od++;
      id++;
    }
  }
  return make_view(t, od, shape, strides, delta, t->flags, out);
too_many:
  return dlpx__fail(DLPX_ESHAPE, "indexing result has more than %d dimensions", DLPX_MAX_NDIM);
}

int dlpx_tensor_permute(const dlpx_tensor *t, int32_t n, const int32_t *axes, dlpx_tensor **out) {
  if (!t || !out || (n > 0 && !axes)) return dlpx__fail(DLPX_EINVAL, "tensor, axes or out is NULL");
  const int32_t ndim = t->dl.ndim;
  if (n != ndim)
    return dlpx__fail(DLPX_EINVAL, "permutation has %d axes but the tensor has %d dimensions",
                      (int)n, (int)ndim);
  int64_t shape[DLPX_MAX_NDIM], strides[DLPX_MAX_NDIM];
  bool seen[DLPX_MAX_NDIM] = {false};
  for (int32_t i = 0; i < n; i++) {
    int32_t a = 0;
    int rc = norm_dim(axes[i], ndim, &a);
    if (rc) return rc;
    if (seen[a]) return dlpx__fail(DLPX_EINDEX, "axis %d repeated in permutation", (int)a);
    seen[a] = true;
    shape[i] = t->dl.shape[a];
    strides[i] = t->dl.strides[a];
  }
  return make_view(t, ndim, shape, strides, 0, t->flags, out);
}

int dlpx_tensor_transpose(const dlpx_tensor *t, dlpx_tensor **out) {
  if (!t || !out) return dlpx__fail(DLPX_EINVAL, "tensor or out is NULL");
  int64_t shape[DLPX_MAX_NDIM], strides[DLPX_MAX_NDIM];
  const int32_t ndim = t->dl.ndim;
  for (int32_t i = 0; i < ndim; i++) {
    shape[i] = t->dl.shape[ndim - 1 - i];
    strides[i] = t->dl.strides[ndim - 1 - i];
  }
  return make_view(t, ndim, shape, strides, 0, t->flags, out);
}

int dlpx_tensor_reshape(const dlpx_tensor *t, int32_t ndim, const int64_t *shape_in,
                        dlpx_tensor **out) {
  if (!t || !out) return dlpx__fail(DLPX_EINVAL, "tensor or out is NULL");
  int rc = check_ndim(ndim);
  if (rc) return rc;
  if (ndim > 0 && !shape_in) return dlpx__fail(DLPX_EINVAL, "shape is NULL but ndim is %d", (int)ndim);
  int64_t numel = dlpx_tensor_numel(t);
  int64_t shape[DLPX_MAX_NDIM], strides[DLPX_MAX_NDIM];
  int32_t infer = -1;
  int64_t known = 1;
  for (int32_t i = 0; i < ndim; i++) {
    shape[i] = shape_in[i];
    if (shape[i] == -1) {
      if (infer >= 0) return dlpx__fail(DLPX_ESHAPE, "only one dimension can be -1");
      infer = i;
    } else if (shape[i] < 0) {
      return dlpx__fail(DLPX_ESHAPE, "shape[%d] is negative: %lld", (int)i, (long long)shape[i]);
    } else if (dlpx__mul_overflow(known, shape[i], &known)) {
      return dlpx__fail(DLPX_ESHAPE, "cannot reshape %lld elements: new shape overflows",
                        (long long)numel);
    }
  }
  if (infer >= 0) {
    if (known == 0 || numel % known != 0)
      return dlpx__fail(DLPX_ESHAPE, "cannot reshape %lld elements into a shape with -1",
                        (long long)numel);
    shape[infer] = numel / known;
    known = numel;
  }
  if (known != numel)
    return dlpx__fail(DLPX_ESHAPE, "cannot reshape %lld elements into %lld", (long long)numel,
                      (long long)known);
  if (numel == 0) {
    dlpx__c_strides(ndim, shape, strides);
    return make_view(t, ndim, shape, strides, 0, t->flags, out);
  }
  /* The old dimensions other than 1s, grouped against the new ones: each
   * group must be contiguous in the old layout. */
  int64_t os[DLPX_MAX_NDIM], ost[DLPX_MAX_NDIM];
  int32_t on = 0;
  for (int32_t i = 0; i < t->dl.ndim; i++)
    if (t->dl.shape[i] != 1) {
      os[on] = t->dl.shape[i];
      ost[on++] = t->dl.strides[i];
    }
  int32_t ni = 0, oi = 0;
  while (ni < ndim && oi < on) {
    int64_t np = shape[ni], op = os[oi];
    int32_t nj = ni + 1, oj = oi + 1;
    while (np != op) {
      if (np < op)
        np *= shape[nj++];
      else
        op *= os[oj++];
    }
    for (int32_t k = oi; k < oj - 1; k++)
      if (ost[k] != os[k + 1] * ost[k + 1])
        return dlpx__fail(DLPX_ELAYOUT,
                          "cannot reshape this strided view without a copy (use contiguous())");
    strides[nj - 1] = ost[oj - 1];
    for (int32_t k = nj - 1; k > ni; k--) strides[k - 1] = strides[k] * shape[k];
    ni = nj;
    oi = oj;
  }
  for (; ni < ndim; ni++) strides[ni] = 1; /* trailing extents of 1 */
  return make_view(t, ndim, shape, strides, 0, t->flags, out);
}

int dlpx_tensor_squeeze(const dlpx_tensor *t, int32_t dim, dlpx_tensor **out) {
  if (!t || !out) return dlpx__fail(DLPX_EINVAL, "tensor or out is NULL");
  int64_t shape[DLPX_MAX_NDIM], strides[DLPX_MAX_NDIM];
  int32_t n = 0, d = -1;
  if (t->dl.ndim == 0 && (dim == 0 || dim == -1)) /* as NumPy and PyTorch: a no-op */
    return dlpx_tensor_clone(t, out);
  if (dim != DLPX_ALL_DIMS) {
    int rc = norm_dim(dim, t->dl.ndim, &d);
    if (rc) return rc;
    if (t->dl.shape[d] != 1)
      return dlpx__fail(DLPX_ESHAPE, "cannot squeeze dimension %d of extent %lld", (int)d,
                        (long long)t->dl.shape[d]);
  }
  for (int32_t k = 0; k < t->dl.ndim; k++) {
    if (dim == DLPX_ALL_DIMS ? t->dl.shape[k] == 1 : k == d) continue;
    shape[n] = t->dl.shape[k];
    strides[n++] = t->dl.strides[k];
  }
  return make_view(t, n, shape, strides, 0, t->flags, out);
}

int dlpx_tensor_unsqueeze(const dlpx_tensor *t, int32_t dim, dlpx_tensor **out) {
  if (!t || !out) return dlpx__fail(DLPX_EINVAL, "tensor or out is NULL");
  const int32_t ndim = t->dl.ndim;
  if (ndim >= DLPX_MAX_NDIM)
    return dlpx__fail(DLPX_ESHAPE, "tensor already has %d dimensions", DLPX_MAX_NDIM);
  int32_t d = dim < 0 ? dim + ndim + 1 : dim;
  if (dim == DLPX_ALL_DIMS || d < 0 || d > ndim)
    return dlpx__fail(DLPX_EINDEX, "dimension %d is out of range for unsqueeze of a %d-d tensor",
                      (int)dim, (int)ndim);
  int64_t shape[DLPX_MAX_NDIM], strides[DLPX_MAX_NDIM];
  for (int32_t k = 0, j = 0; k <= ndim; k++) {
    if (k == d) {
      shape[k] = 1;
      strides[k] = d < ndim ? unit_stride(t->dl.shape[d], t->dl.strides[d]) : 1;
    } else {
      shape[k] = t->dl.shape[j];
      strides[k] = t->dl.strides[j++];
    }
  }
  return make_view(t, ndim + 1, shape, strides, 0, t->flags, out);
}

int dlpx_tensor_broadcast_to(const dlpx_tensor *t, int32_t ndim, const int64_t *target,
                             dlpx_tensor **out) {
  if (!t || !out) return dlpx__fail(DLPX_EINVAL, "tensor or out is NULL");
  int rc = check_shape(ndim, target);
  if (rc) return rc;
  if (ndim < t->dl.ndim)
    return dlpx__fail(DLPX_ESHAPE, "cannot broadcast a %d-d tensor to %d dimensions",
                      (int)t->dl.ndim, (int)ndim);
  int64_t numel;
  if ((rc = dlpx__numel(ndim, target, &numel))) return rc;
  int64_t strides[DLPX_MAX_NDIM];
  int32_t lead = ndim - t->dl.ndim;
  for (int32_t i = 0; i < ndim; i++) {
    if (i < lead) {
      strides[i] = 0;
      continue;
    }
    int64_t have = t->dl.shape[i - lead];
    if (have == target[i]) {
      strides[i] = t->dl.strides[i - lead];
    } else if (have == 1) {
      strides[i] = 0;
    } else {
      return dlpx__fail(DLPX_ESHAPE, "cannot broadcast dimension %d of extent %lld to %lld",
                        (int)(i - lead), (long long)have, (long long)target[i]);
    }
  }
  return make_view(t, ndim, target, strides, 0, t->flags, out);
}
