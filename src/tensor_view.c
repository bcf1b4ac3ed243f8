/* tensor_view.c - views: new tensors over the same storage with another
 * shape, strides, offset, dtype or flags.  Views of tensors without
 * elements may have strides of any size (dlpx__c_strides saturates), so the
 * offset of element 0 is computed with saturating arithmetic and dropped
 * when the result has no elements either. */
#include "config.h"

#include <string.h>

#include "internal.h"

static int64_t add_sat(int64_t a, int64_t b) {
  int64_t r;
  if (!__builtin_add_overflow(a, b, &r)) return r;
  return a < 0 ? -INT64_MAX : INT64_MAX;
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
  if ((rc = make_view(t, t->dl.ndim, t->dl.shape, t->dl.strides, 0, flags, out))) return rc;
  (*out)->dl.dtype = dtype;
  return 0;
}

int dlpx_tensor_with_flags(const dlpx_tensor *t, uint32_t flags, dlpx_tensor **out) {
  if (!t || !out) return dlpx__fail(DLPX_EINVAL, "tensor or out is NULL");
  if (flags & ~(uint32_t)DLPX_TENSOR_READONLY)
    return dlpx__fail(DLPX_EINVAL, "only DLPX_TENSOR_READONLY can be added, not 0x%x",
                      (unsigned)flags);
  uint32_t f = t->flags | flags;
  if (flags & DLPX_TENSOR_READONLY) f &= ~(uint32_t)DLPX_TENSOR_LEGACY_READONLY; /* on purpose */
  return make_view(t, t->dl.ndim, t->dl.shape, t->dl.strides, 0, f, out);
}

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
                       bool empty, int64_t *nlen, int64_t *nstride, int64_t *delta) {
  int64_t s = 0, st = 1, n = 0;
  int rc = slice_indices(len, start, stop, step, &s, &st, &n);
  if (rc) return rc;
  /* With two or more elements |step| < len, so the new stride stays inside
   * the checked extent; with fewer the stride is never used (and step may be
   * anything, e.g. 2**63 - 1): keep the old one. */
  int64_t ns = stride;
  if (n > 1 && dlpx__mul_overflow(stride, st, &ns)) {
    if (!empty) return dlpx__fail(DLPX_EOVERFLOW, "slice stride overflows int64");
    ns = dlpx__mul_sat(stride, st); /* never used to address memory */
  }
  *nlen = n;
  *nstride = ns;
  /* With elements |s| < len keeps s * stride within the checked extent. */
  *delta = n > 0 ? dlpx__mul_sat(s, stride) : 0;
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
  rc = apply_slice(shape[d], strides[d], start, stop, step, dlpx_tensor_numel(t) == 0, &shape[d],
                   &strides[d], &delta);
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
  return make_view(t, n, shape, strides, dlpx__mul_sat(i, t->dl.strides[d]), t->flags, out);
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
  const bool empty = dlpx_tensor_numel(t) == 0;
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
      /* with elements, stays within the checked extent */
      delta = add_sat(delta, dlpx__mul_sat(i, t->dl.strides[id]));
      id++;
    } else { /* slice */
      if (od >= DLPX_MAX_NDIM) goto too_many;
      int64_t d = 0;
      int rc = apply_slice(t->dl.shape[id], t->dl.strides[id], items[k].start, items[k].stop,
                           items[k].step, empty, &shape[od], &strides[od], &d);
      if (rc) return rc;
      delta = add_sat(delta, d);
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
  int rc = dlpx__check_ndim(ndim);
  if (rc) return rc;
  if (ndim > 0 && !shape_in) return dlpx__fail(DLPX_EINVAL, "shape is NULL but ndim is %d", (int)ndim);
  int64_t numel = dlpx_tensor_numel(t);
  int64_t shape[DLPX_MAX_NDIM], strides[DLPX_MAX_NDIM];
  int32_t infer = -1;
  int64_t known = 1;
  bool zero = false; /* a 0 extent: the product is 0 whatever the others are */
  for (int32_t i = 0; i < ndim; i++) {
    shape[i] = shape_in[i];
    if (shape[i] == -1) {
      if (infer >= 0) return dlpx__fail(DLPX_ESHAPE, "only one dimension can be -1");
      infer = i;
    } else if (shape[i] < 0) {
      return dlpx__fail(DLPX_ESHAPE, "shape[%d] is negative: %lld", (int)i, (long long)shape[i]);
    } else if (shape[i] == 0) {
      zero = true;
    }
  }
  for (int32_t i = 0; i < ndim && !zero; i++)
    if (i != infer && dlpx__mul_overflow(known, shape[i], &known))
      return dlpx__fail(DLPX_ESHAPE, "cannot reshape %lld elements: new shape overflows",
                        (long long)numel);
  if (zero) known = 0;
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
  int rc = dlpx__check_shape(ndim, target);
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
