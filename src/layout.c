/* layout.c - shape and stride arithmetic shared by tensors, views, copies
 * and imports.  Everything is overflow-checked or saturating: shapes with no
 * elements may have any other extents (a (0, 2**62, 2**62) tensor is
 * valid), so products of extents are never trusted to fit. */
#include "config.h"

#include "internal.h"

int dlpx__check_ndim(int32_t ndim) {
  if (ndim < 0 || ndim > DLPX_MAX_NDIM)
    return dlpx__fail(DLPX_ESHAPE, "ndim %d is outside [0, %d]", (int)ndim, DLPX_MAX_NDIM);
  return 0;
}

int dlpx__check_shape(int32_t ndim, const int64_t *shape) {
  int rc = dlpx__check_ndim(ndim);
  if (rc) return rc;
  if (ndim > 0 && !shape) return dlpx__fail(DLPX_EINVAL, "shape is NULL but ndim is %d", (int)ndim);
  for (int32_t i = 0; i < ndim; i++)
    if (shape[i] < 0)
      return dlpx__fail(DLPX_ESHAPE, "shape[%d] is negative: %lld", (int)i, (long long)shape[i]);
  return 0;
}

int dlpx__numel(int32_t ndim, const int64_t *shape, int64_t *out) {
  for (int32_t i = 0; i < ndim; i++)
    if (shape[i] == 0) {
      *out = 0;
      return 0;
    }
  int64_t n = 1;
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
    if (shape[i] > 1) s = dlpx__mul_sat(s, shape[i]);
  }
}

void dlpx__f_strides(int32_t ndim, const int64_t *shape, int64_t *strides) {
  int64_t s = 1;
  for (int32_t i = 0; i < ndim; i++) {
    strides[i] = s;
    if (shape[i] > 1) s = dlpx__mul_sat(s, shape[i]);
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

int dlpx__contiguous(int32_t ndim, const int64_t *shape, const int64_t *strides, bool c_order) {
  for (int32_t i = 0; i < ndim; i++)
    if (shape[i] == 0) return 1;
  int64_t expect = 1; /* with elements the products fit: they are bounded by the extent */
  for (int32_t k = 0; k < ndim; k++) {
    int32_t i = c_order ? ndim - 1 - k : k;
    if (shape[i] == 1) continue;
    if (strides[i] != expect) return 0;
    expect *= shape[i];
  }
  return 1;
}
