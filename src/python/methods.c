/* methods.c - __dlpack__ and __dlpack_device__ of dlpx.Tensor as C
 * methods: a Python-level __dlpack__ costs a microsecond or more in
 * argument handling alone.  GIL held (CPython calls them). */
#include "config.h"

#include "pyapi.h"

#define api dlpx__py

/* CPython's PyMethodDef, whose layout is part of the stable ABI. */
typedef void *(*py_cfunction)(void *self, void *args); /* PyCFunction */
typedef struct {
  const char *ml_name;
  py_cfunction ml_meth; /* cast as CPython does for other signatures */
  int ml_flags;
  const char *ml_doc;
} py_method_def;

#define PY_METH_NOARGS 0x0004
#define PY_METH_KEYWORDS 0x0002
#define PY_METH_FASTCALL 0x0080

static bool kw_is(void *name, void *interned, const char *ascii) {
  if (name == interned) return true; /* keywords at call sites are interned */
  return api.PyUnicode_CompareWithASCIIString(name, ascii) == 0;
}

/* True when the C method can export |t| itself: the Python fallback decides
 * about negative strides and read-only data, where the consumer matters
 * (PyTorch aborts on the first and ignores the read-only flag). */
static bool plain_export(const dlpx_tensor *t) {
  if (t->flags & DLPX_TENSOR_READONLY) return false;
  if (dlpx_tensor_numel(t) > 0)
    for (int32_t i = 0; i < t->dl.ndim; i++)
      if (t->dl.strides[i] < 0 && t->dl.shape[i] > 1) return false;
  return true;
}

/* __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None) */
static void *method_dlpack(void *self, void *const *args, ptrdiff_t nargs, void *kwnames) {
  if (!dlpx__py_check_ready()) return NULL;
  void *none = api.obj_None;
  void *stream = none, *maxv = none, *dldev = none, *copy = none;
  if (nargs != 0) {
    dlpx__py_raise_msg(DLPX_PY_EXC_TypeError, DLPX_EINVAL,
                       "__dlpack__() takes only keyword arguments");
    return NULL;
  }
  ptrdiff_t nk = kwnames ? api.PyTuple_Size(kwnames) : 0;
  for (ptrdiff_t i = 0; i < nk; i++) {
    void *name = api.PyTuple_GetItem(kwnames, i), *value = args[i];
    if (kw_is(name, api.name_max_version, "max_version")) {
      maxv = value;
    } else if (kw_is(name, api.name_stream, "stream")) {
      stream = value;
    } else if (kw_is(name, api.name_dl_device, "dl_device")) {
      dldev = value;
    } else if (kw_is(name, api.name_copy, "copy")) {
      copy = value;
    } else {
      dlpx__py_raise_msg(DLPX_PY_EXC_TypeError, DLPX_EINVAL,
                         "__dlpack__() got an unexpected keyword argument");
      return NULL;
    }
  }
  if (dldev != none || copy != none) goto fallback;
  int versioned = 0;
  if (maxv != none) {
    /* A (major, minor) tuple of exact ints; anything else (NumPy ints, or
     * garbage) goes to Python, which accepts __index__ and says why not. */
    if (api.PyTuple_Size(maxv) != 2) goto clear_fallback;
    ptrdiff_t major = api.PyLong_AsSsize_t(api.PyTuple_GetItem(maxv, 0));
    if (major == -1 && api.PyErr_Occurred()) goto clear_fallback;
    ptrdiff_t minor = api.PyLong_AsSsize_t(api.PyTuple_GetItem(maxv, 1));
    if (minor == -1 && api.PyErr_Occurred()) goto clear_fallback;
    versioned = major >= 1;
  }
  void *cap;
  dlpx_tensor *t = dlpx__py_tensor_of(self, &cap);
  if (!t) return NULL;
  if (!plain_export(t)) {
    api.Py_DecRef(cap);
    goto fallback;
  }
  int32_t type = (int32_t)t->dl.device.device_type;
  if (type == kDLCUDA || type == kDLCUDAManaged) {
    /* DLPack's stream values: None the legacy default (1), -1 none, 0
     * refused (the fallback says why), anything else a stream */
    uintptr_t consumer = DLPX_CUDA_STREAM_LEGACY;
    if (stream != none) {
      ptrdiff_t v = api.PyLong_AsSsize_t(stream);
      if (v == -1 && api.PyErr_Occurred()) {
        api.Py_DecRef(cap);
        goto clear_fallback;
      }
      if (v == 0 || v < -1) {
        api.Py_DecRef(cap);
        goto fallback;
      }
      consumer = v == -1 ? UINTPTR_MAX : (uintptr_t)v;
    }
    int rc = dlpx_cuda_tensor_ready(t, consumer);
    if (rc) {
      api.Py_DecRef(cap);
      dlpx__py_raise(rc, true);
      return NULL;
    }
  } else if (stream != none) {
    api.Py_DecRef(cap);
    goto fallback;
  } else if (type == kDLCUDAHost) {
    int rc = dlpx_cuda_tensor_ready(t, UINTPTR_MAX);
    if (rc) {
      api.Py_DecRef(cap);
      dlpx__py_raise(rc, true);
      return NULL;
    }
  }
  void *result = dlpx__py_export_capsule(t, versioned, 0);
  api.Py_DecRef(cap);
  return result;
clear_fallback:
  api.PyErr_Clear();
fallback:
  return api.PyObject_CallFunctionObjArgs(api.dlpack_fallback, self, stream, maxv, dldev, copy,
                                          (void *)NULL);
}

/* __dlpack_device__(self) */
static void *method_dlpack_device(void *self, void *unused) {
  (void)unused;
  if (!dlpx__py_check_ready()) return NULL;
  void *cap;
  dlpx_tensor *t = dlpx__py_tensor_of(self, &cap);
  if (!t) return NULL;
  DLDevice d = t->dl.device;
  api.Py_DecRef(cap);
  return api.Py_BuildValue("(ii)", (int)d.device_type, (int)d.device_id);
}

static const py_method_def method_defs[] = {
    {"__dlpack__", (py_cfunction)(void (*)(void))method_dlpack, PY_METH_FASTCALL | PY_METH_KEYWORDS,
     "__dlpack__(*, stream=None, max_version=None, dl_device=None, copy=None)\n--\n\n"
     "Exports the tensor as a DLPack capsule (Python array API): versioned when\n"
     "max_version has major >= 1, else legacy (which cannot carry read-only data).\n"
     "copy=True exports a private copy; stream must be None for host memory."},
    {"__dlpack_device__", (py_cfunction)method_dlpack_device, PY_METH_NOARGS,
     "__dlpack_device__()\n--\n\n(device_type, device_id) of the tensor's data."},
    {NULL, NULL, 0, NULL},
};

const void *dlpx_py_method_defs(void) { return method_defs; }
