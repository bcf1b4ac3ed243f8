/* ops.c - every operation of the Python layer that reads a tensor handle or
 * makes a new dlpx.Tensor: one GIL-held call each, which reads the handle
 * from the owner capsule while holding it and hands the result to a new
 * Tensor object before returning, so no Python code runs between the C
 * work and the transfer of ownership.  Long copies release the GIL. */
#include "config.h"

#include <string.h>

#include "pyapi.h"

#define api dlpx__py

/* Copies of at least this many bytes release the GIL. */
#define NOGIL_BYTES ((int64_t)1 << 16)

static int raise_general(int rc) { return dlpx__py_raise(rc, false); }

static DLDataType dtype_of_key(int64_t key) {
  DLDataType d;
  d.code = (uint8_t)(key & 0xff);
  d.bits = (uint8_t)((key >> 8) & 0xff);
  d.lanes = (uint16_t)((key >> 16) & 0xffff);
  return d;
}

/* ---- arguments ---------------------------------------------------------------- */

/* A tuple of ints into |out| (at most DLPX_MAX_NDIM); -1 with an exception
 * (ValueError for |what| values outside int64, TypeError otherwise). */
static int int64s_of(void *tuple, int64_t *out, int32_t *n, const char *what) {
  ptrdiff_t len = api.PyTuple_Size(tuple);
  if (len < 0) {
    api.PyErr_Clear();
    api.PyErr_Format(api.exceptions[DLPX_PY_EXC_TypeError], "%s must be a tuple of ints", what);
    return -1;
  }
  if (len > DLPX_MAX_NDIM) {
    api.PyErr_Format(api.exceptions[DLPX_PY_EXC_ValueError],
                     "%s has %zd entries: ndim %zd is outside [0, %d]", what, len, len,
                     DLPX_MAX_NDIM);
    return -1;
  }
  for (ptrdiff_t i = 0; i < len; i++) {
    void *item = api.PyTuple_GetItem(tuple, i);
    long long v = api.PyLong_AsLongLong(item);
    if (v == -1 && api.PyErr_Occurred()) {
      api.PyErr_Clear();
      api.PyErr_Format(api.exceptions[DLPX_PY_EXC_ValueError],
                       "%s[%zd] = %R is not an integer in the int64 range", what, i, item);
      return -1;
    }
    out[i] = (int64_t)v;
  }
  *n = (int32_t)len;
  return 0;
}

/* A dimension: an int that fits int32 and is not the DLPX_ALL_DIMS
 * sentinel (anything else is out of range for every tensor: IndexError). */
static int dim_of(void *obj, int32_t *out) {
  long long v = api.PyLong_AsLongLong(obj);
  if (v == -1 && api.PyErr_Occurred()) {
    api.PyErr_Clear();
    api.PyErr_Format(api.exceptions[DLPX_PY_EXC_IndexError],
                     "dimension %R is not an integer in range", obj);
    return -1;
  }
  if (v <= INT32_MIN || v > INT32_MAX) {
    api.PyErr_Format(api.exceptions[DLPX_PY_EXC_IndexError], "dimension %lld is out of range",
                     v);
    return -1;
  }
  *out = (int32_t)v;
  return 0;
}

static int dims_of(void *tuple, int32_t *out, int32_t *n) {
  ptrdiff_t len = api.PyTuple_Size(tuple);
  if (len < 0) {
    api.PyErr_Clear();
    dlpx__py_raise_msg(DLPX_PY_EXC_TypeError, DLPX_EINVAL, "dimensions must be a tuple of ints");
    return -1;
  }
  if (len > DLPX_MAX_NDIM) {
    dlpx__py_raise_msg(DLPX_PY_EXC_ValueError, DLPX_EINVAL, "too many dimensions");
    return -1;
  }
  for (ptrdiff_t i = 0; i < len; i++)
    if (dim_of(api.PyTuple_GetItem(tuple, i), &out[i])) return -1;
  *n = (int32_t)len;
  return 0;
}

static bool is_instance(void *obj, void *type) {
  int r = api.PyObject_IsInstance(obj, type);
  if (r < 0) api.PyErr_Clear();
  return r > 0;
}

/* One item of a NumPy basic index. */
static int index_item_of(void *k, dlpx_index *item) {
  memset(item, 0, sizeof *item);
  if (k == api.obj_None) {
    item->kind = DLPX_INDEX_NEWAXIS;
    return 0;
  }
  if (k == api.obj_Ellipsis) {
    item->kind = DLPX_INDEX_ELLIPSIS;
    return 0;
  }
  if (k != api.obj_True && k != api.obj_False) {
    if (is_instance(k, api.type_slice)) {
      ptrdiff_t start, stop, step;
      if (api.PySlice_Unpack(k, &start, &stop, &step) < 0) return -1; /* Python's own error */
      /* Unpack clamps to the ssize_t range; the lowest value is dlpx's
       * "omitted" sentinel, which here would turn -inf into "to the end". */
      item->kind = DLPX_INDEX_SLICE;
      item->start = start == INT64_MIN ? INT64_MIN + 1 : (int64_t)start;
      item->stop = stop == INT64_MIN ? INT64_MIN + 1 : (int64_t)stop;
      item->step = (int64_t)step;
      return 0;
    }
    void *i = api.PyNumber_Index(k);
    if (i) {
      long long v = api.PyLong_AsLongLong(i);
      api.Py_DecRef(i);
      if (v == -1 && api.PyErr_Occurred()) {
        api.PyErr_Clear();
        api.PyErr_Format(api.exceptions[DLPX_PY_EXC_IndexError], "index %R is out of bounds", k);
        return -1;
      }
      if (v == INT64_MIN) {
        api.PyErr_Format(api.exceptions[DLPX_PY_EXC_IndexError], "index %R is out of bounds", k);
        return -1;
      }
      item->kind = DLPX_INDEX_INT;
      item->start = (int64_t)v;
      return 0;
    }
    api.PyErr_Clear();
  }
  void *type = api.PyObject_Type(k);
  api.PyErr_Format(api.exceptions[DLPX_PY_EXC_IndexError],
                   "only integers, slices (`:`), ellipsis (`...`) and None (`newaxis`) are valid "
                   "indices, not %R",
                   type ? type : api.obj_None);
  if (type) api.Py_DecRef(type);
  return -1;
}

static int index_of(const dlpx_tensor *t, void *key, dlpx_tensor **out) {
  dlpx_index items[2 * DLPX_MAX_NDIM + 2];
  int32_t n = 0;
  if (is_instance(key, api.type_tuple)) {
    ptrdiff_t len = api.PyTuple_Size(key);
    if (len > (ptrdiff_t)DLPX__COUNT(items)) {
      dlpx__py_raise_msg(DLPX_PY_EXC_IndexError, DLPX_EINDEX, "too many indices");
      return -1;
    }
    for (ptrdiff_t i = 0; i < len; i++)
      if (index_item_of(api.PyTuple_GetItem(key, i), &items[n++])) return -1;
  } else {
    if (index_item_of(key, &items[n++])) return -1;
  }
  int rc = dlpx_tensor_index(t, n, items, out);
  return rc ? raise_general(rc) : 0;
}

/* ---- operations ------------------------------------------------------------------ */

static bool big(const dlpx_tensor *t) { return dlpx_tensor_nbytes(t) >= NOGIL_BYTES; }

/* The copying operations, with the GIL released when the copy is large. */
static int copy_op(const dlpx_tensor *t, int op, dlpx_tensor **out) {
  void *ts = big(t) ? api.PyEval_SaveThread() : NULL;
  int rc;
  switch (op) {
    case DLPX_PY_OP_CONTIGUOUS: rc = dlpx_tensor_contiguous(t, out); break;
    case DLPX_PY_OP_COPY_C: rc = dlpx_tensor_copy(t, 'C', out); break;
    case DLPX_PY_OP_COPY_F: rc = dlpx_tensor_copy(t, 'F', out); break;
    default: { /* DLPX_PY_OP_COPY_PADDED */
      dlpx_tensor *c = NULL;
      rc = dlpx_tensor_new(t->dl.dtype, t->dl.ndim, t->dl.shape, DLPX_TENSOR_SUBBYTE_PADDED, 1, &c);
      if (rc == 0 && (rc = dlpx_tensor_copy_into(c, t)) != 0) {
        dlpx_tensor_free(c);
        c = NULL;
      }
      *out = c;
      break;
    }
  }
  if (ts) api.PyEval_RestoreThread(ts);
  return rc ? raise_general(rc) : 0;
}

static int apply(const dlpx_tensor *t, int op, void *arg, dlpx_tensor **out) {
  int64_t v[DLPX_MAX_NDIM];
  int32_t d[DLPX_MAX_NDIM], n = 0, dim = 0;
  int rc;
  switch (op) {
    case DLPX_PY_OP_CLONE: rc = dlpx_tensor_clone(t, out); break;
    case DLPX_PY_OP_TRANSPOSE: rc = dlpx_tensor_transpose(t, out); break;
    case DLPX_PY_OP_PERMUTE:
      if (dims_of(arg, d, &n)) return -1;
      rc = dlpx_tensor_permute(t, n, d, out);
      break;
    case DLPX_PY_OP_RESHAPE:
    case DLPX_PY_OP_RESHAPE_ANY:
      if (int64s_of(arg, v, &n, "shape")) return -1;
      rc = dlpx_tensor_reshape(t, n, v, out);
      if (rc == DLPX_ELAYOUT && op == DLPX_PY_OP_RESHAPE_ANY) {
        dlpx_tensor *c = NULL;
        if (copy_op(t, DLPX_PY_OP_COPY_C, &c)) return -1;
        rc = dlpx_tensor_reshape(c, n, v, out);
        dlpx_tensor_free(c);
      }
      break;
    case DLPX_PY_OP_SQUEEZE:
      if (arg == api.obj_None) {
        dim = DLPX_ALL_DIMS;
      } else if (dim_of(arg, &dim)) {
        return -1;
      }
      rc = dlpx_tensor_squeeze(t, dim, out);
      break;
    case DLPX_PY_OP_UNSQUEEZE:
      if (dim_of(arg, &dim)) return -1;
      rc = dlpx_tensor_unsqueeze(t, dim, out);
      break;
    case DLPX_PY_OP_BROADCAST:
      if (int64s_of(arg, v, &n, "shape")) return -1;
      rc = dlpx_tensor_broadcast_to(t, n, v, out);
      break;
    case DLPX_PY_OP_VIEW_DTYPE: {
      long long key = api.PyLong_AsLongLong(arg);
      if (key == -1 && api.PyErr_Occurred()) return -1;
      rc = dlpx_tensor_view_as(t, dtype_of_key(key), out);
      break;
    }
    case DLPX_PY_OP_READONLY: rc = dlpx_tensor_with_flags(t, DLPX_TENSOR_READONLY, out); break;
    case DLPX_PY_OP_CONTIGUOUS:
    case DLPX_PY_OP_COPY_C:
    case DLPX_PY_OP_COPY_F:
    case DLPX_PY_OP_COPY_PADDED: return copy_op(t, op, out);
    case DLPX_PY_OP_INDEX: return index_of(t, arg, out);
    default:
      return dlpx__py_raise_msg(DLPX_PY_EXC_ValueError, DLPX_EINVAL, "unknown tensor operation");
  }
  return rc ? raise_general(rc) : 0;
}

void *dlpx_py_tensor_op(void *obj, int op, void *arg) {
  if (!dlpx__py_check_ready()) return NULL;
  void *cap;
  dlpx_tensor *t = dlpx__py_tensor_of(obj, &cap);
  if (!t) return NULL;
  dlpx_tensor *r = NULL;
  int rc = apply(t, op, arg, &r);
  api.Py_DecRef(cap);
  return rc ? NULL : dlpx__py_new_tensor(r);
}

/* ---- queries ------------------------------------------------------------------ */

static void *int_tuple(const int64_t *v, int32_t n) {
  void *tup = api.PyTuple_New(n);
  if (!tup) return NULL;
  for (int32_t i = 0; i < n; i++) {
    void *item = api.PyLong_FromLongLong((long long)v[i]);
    if (!item || api.PyTuple_SetItem(tup, i, item) != 0) {
      api.Py_DecRef(tup);
      return NULL;
    }
  }
  return tup;
}

void *dlpx_py_tensor_meta(void *obj) {
  if (!dlpx__py_check_ready()) return NULL;
  void *cap;
  dlpx_tensor *t = dlpx__py_tensor_of(obj, &cap);
  if (!t) return NULL;
  const int32_t ndim = t->dl.ndim;
  const int64_t numel = dlpx_tensor_numel(t);
  int neg = 0;
  if (numel > 0)
    for (int32_t i = 0; i < ndim; i++)
      if (t->dl.strides[i] < 0 && t->dl.shape[i] > 1) neg = 1;
  void *shape = int_tuple(t->dl.shape, ndim);
  void *strides = shape ? int_tuple(t->dl.strides, ndim) : NULL;
  void *addr = strides ? api.PyLong_FromVoidPtr(dlpx_tensor_data(t)) : NULL;
  void *result = NULL;
  if (addr) {
    const DLDataType dt = t->dl.dtype;
    /* N steals the three references, also on failure */
    result = api.Py_BuildValue("(NNLiiILLNLiii)", shape, strides,
                               (long long)DLPX_PY_DTYPE_KEY(dt.code, dt.bits, dt.lanes),
                               (int)t->dl.device.device_type, (int)t->dl.device.device_id,
                               (unsigned)t->flags, (long long)numel,
                               (long long)dlpx_tensor_nbytes(t), addr,
                               (long long)t->dl.byte_offset, dlpx_tensor_is_c_contiguous(t),
                               dlpx_tensor_is_f_contiguous(t), neg);
  } else {
    if (shape) api.Py_DecRef(shape);
    if (strides) api.Py_DecRef(strides);
  }
  api.Py_DecRef(cap);
  return result;
}

/* ---- new tensors ----------------------------------------------------------------- */

void *dlpx_py_tensor_new(int64_t dtype_key, void *shape_tuple, uint32_t flags, int zero) {
  if (!dlpx__py_check_ready()) return NULL;
  int64_t shape[DLPX_MAX_NDIM];
  int32_t n = 0;
  if (int64s_of(shape_tuple, shape, &n, "shape")) return NULL;
  dlpx_tensor *t = NULL;
  /* Zero-filling (calloc of fresh pages) is cheap: the GIL stays held. */
  int rc = dlpx_tensor_new(dtype_of_key(dtype_key), n, shape, flags, zero, &t);
  if (rc) {
    raise_general(rc);
    return NULL;
  }
  return dlpx__py_new_tensor(t);
}

/* CPython's Py_buffer (stable ABI since 3.11, the same layout since 3.3). */
typedef struct {
  void *buf;
  void *obj;
  ptrdiff_t len;
  ptrdiff_t itemsize;
  int readonly;
  int ndim;
  char *format;
  ptrdiff_t *shape;
  ptrdiff_t *strides;
  ptrdiff_t *suboffsets;
  void *internal;
} py_buffer;

#define PY_BUF_RECORDS_RO 0x1C /* PyBUF_STRIDES | PyBUF_FORMAT: any strides, no suboffsets */

void *dlpx_py_tensor_from_buffer(void *owner, int64_t offset, int64_t dtype_key,
                                 void *shape_tuple, void *strides_tuple, uint32_t flags) {
  if (!dlpx__py_check_ready()) return NULL;
  py_buffer pb;
  if (api.PyObject_GetBuffer(owner, &pb, PY_BUF_RECORDS_RO) != 0) return NULL;
  /* |owner| keeps the memory exported while it lives (a memoryview does):
   * the address stays valid after this release, and the storage will hold
   * |owner| itself. */
  void *base = pb.buf;
  if (pb.readonly) flags |= DLPX_TENSOR_READONLY;
  api.PyBuffer_Release(&pb);
  if (offset < 0) {
    dlpx__py_raise_msg(DLPX_PY_EXC_ValueError, DLPX_EINVAL, "negative buffer offset");
    return NULL;
  }
  uintptr_t data = (uintptr_t)base + (uintptr_t)offset;
  if (!base && offset == 0) data = 0;
  int64_t shape[DLPX_MAX_NDIM], strides[DLPX_MAX_NDIM];
  int32_t n = 0, ns = 0;
  if (int64s_of(shape_tuple, shape, &n, "shape")) return NULL;
  const int64_t *sp = NULL;
  if (strides_tuple != api.obj_None) {
    if (int64s_of(strides_tuple, strides, &ns, "strides")) return NULL;
    if (ns != n) {
      dlpx__py_raise_msg(DLPX_PY_EXC_ValueError, DLPX_ESHAPE,
                         "strides and shape have different lengths");
      return NULL;
    }
    sp = strides;
  }
  DLDevice dev = {kDLCPU, 0};
  dlpx_tensor *t = NULL;
  int rc = dlpx_tensor_wrap((void *)data, dev, dtype_of_key(dtype_key), n, shape, sp, flags,
                            dlpx_py_release_object, owner, &t);
  if (rc) {
    raise_general(rc); /* nothing was taken */
    return NULL;
  }
  api.Py_IncRef(owner); /* the storage's reference, dropped by dlpx_py_release_object */
  return dlpx__py_new_tensor(t);
}

/* ---- copies ------------------------------------------------------------------------ */

int dlpx_py_tensor_copy_into(void *dst_obj, void *src_obj) {
  if (!dlpx__py_check_ready()) return -1;
  void *dcap, *scap;
  dlpx_tensor *dst = dlpx__py_tensor_of(dst_obj, &dcap);
  if (!dst) return -1;
  dlpx_tensor *src = dlpx__py_tensor_of(src_obj, &scap);
  if (!src) {
    api.Py_DecRef(dcap);
    return -1;
  }
  /* Both capsules are held: the handles outlive the copy, GIL or not. */
  void *ts = big(dst) ? api.PyEval_SaveThread() : NULL;
  int rc = dlpx_tensor_copy_into(dst, src);
  if (ts) api.PyEval_RestoreThread(ts);
  api.Py_DecRef(scap);
  api.Py_DecRef(dcap);
  return rc ? raise_general(rc) : 0;
}
