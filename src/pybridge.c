/* pybridge.c - the C side of the Python layer, with no Python at build time.
 *
 * CPython calls capsule destructors with the GIL held; DLPack deleters and
 * storage releases may run on any thread, with or without the GIL, and even
 * while the interpreter shuts down.  Everything here therefore reaches
 * Python only through the C-API pointers registered by the Python layer,
 * takes the GIL itself when needed, keeps a pending exception intact, and
 * stops touching Python once the interpreter is going away.
 */
#include "config.h"

#include <string.h>

#include "internal.h"

/* The registered API.  Written by dlpx_py_register (at import, while no
 * deleter can yet refer to a Python object) and read afterwards. */
static dlpx_pyapi api;
static atomic_int registered; /* 1 after dlpx_py_register */
static atomic_int shutting_down;

int dlpx_py_register(const dlpx_pyapi *a) {
  if (!a) return dlpx__fail(DLPX_EINVAL, "api is NULL");
  if (a->size < sizeof(dlpx_pyapi))
    return dlpx__fail(DLPX_EINVAL, "dlpx_pyapi of %zu bytes is older than this library's (%zu)",
                      a->size, sizeof(dlpx_pyapi));
  if (!a->PyGILState_Ensure || !a->PyGILState_Release || !a->PyGILState_Check ||
      !a->PyErr_Fetch || !a->PyErr_Restore || !a->PyCapsule_IsValid ||
      !a->PyCapsule_GetPointer || !a->Py_IncRef || !a->Py_DecRef)
    return dlpx__fail(DLPX_EINVAL, "a required C-API function pointer is NULL");
  memcpy(&api, a, sizeof api);
  api.size = sizeof api;
  atomic_store(&shutting_down, 0);
  atomic_store(&registered, 1);
  return 0;
}

void dlpx_py_shutdown(void) { atomic_store(&shutting_down, 1); }

int dlpx_py_active(void) { return atomic_load(&registered) && !atomic_load(&shutting_down); }

/* Destroys a capsule's managed tensor if nobody consumed it. */
static void capsule_destroy(void *capsule, const char *name, bool versioned) {
  if (!atomic_load(&registered)) return; /* cannot be: we made the capsule */
  /* Called by CPython with the GIL held, possibly with an exception set
   * (e.g. while an exception unwinds a frame holding the capsule). */
  void *et, *ev, *tb;
  api.PyErr_Fetch(&et, &ev, &tb);
  if (api.PyCapsule_IsValid(capsule, name)) {
    void *p = api.PyCapsule_GetPointer(capsule, name);
    if (p) {
      if (versioned) {
        DLManagedTensorVersioned *m = p;
        if (m->deleter) m->deleter(m);
      } else {
        DLManagedTensor *m = p;
        if (m->deleter) m->deleter(m);
      }
    }
  }
  api.PyErr_Restore(et, ev, tb);
}

void dlpx_py_capsule_destructor(void *capsule) {
  capsule_destroy(capsule, "dltensor_versioned", true);
}

void dlpx_py_capsule_destructor_legacy(void *capsule) {
  capsule_destroy(capsule, "dltensor", false);
}

void dlpx_py_release_object(void *data, void *ctx) {
  (void)data;
  if (!ctx) return;
  /* After the atexit mark the interpreter may be finalizing or gone: drop
   * the reference on the floor rather than touch Python. */
  if (!atomic_load(&registered) || atomic_load(&shutting_down)) {
    dlpx__count(&dlpx__stats.python_refs_leaked, 1);
    return;
  }
  int held = api.PyGILState_Check();
  if (!held && api.Py_IsFinalizing && api.Py_IsFinalizing()) {
    /* Taking the GIL now could hang or end this thread. */
    dlpx__count(&dlpx__stats.python_refs_leaked, 1);
    return;
  }
  int state = 0;
  if (!held) state = api.PyGILState_Ensure();
  void *et, *ev, *tb;
  api.PyErr_Fetch(&et, &ev, &tb);
  api.Py_DecRef(ctx);
  api.PyErr_Restore(et, ev, tb);
  if (!held) api.PyGILState_Release(state);
}

/* ======================================================================== */
/* GIL-held functions, called from Python through ctypes.PyDLL.             */
/* ======================================================================== */

static const char NAME_LEGACY[] = "dltensor";
static const char NAME_VERSIONED[] = "dltensor_versioned";
static const char NAME_USED_LEGACY[] = "used_dltensor";
static const char NAME_USED_VERSIONED[] = "used_dltensor_versioned";
static const char NAME_EXCHANGE[] = "dlpack_exchange_api";
static const char NAME_OWNER[] = "dlpx.tensor";

const char *dlpx_py_capsule_name(int which) {
  switch (which) {
    case 0: return NAME_LEGACY;
    case 1: return NAME_VERSIONED;
    case 2: return NAME_USED_LEGACY;
    case 3: return NAME_USED_VERSIONED;
    case 4: return NAME_EXCHANGE;
    case 5: return NAME_OWNER;
    default: return NULL;
  }
}

/* True when the second group of the API is there. */
static bool full_api(void) {
  return atomic_load(&registered) && api.PyCapsule_New && api.PyCapsule_SetName &&
         api.PyErr_SetString && api.PyErr_Occurred && api.PyObject_GetAttr &&
         api.PyObject_SetAttr && api.PyLong_FromVoidPtr && api.exc_BufferError &&
         api.exc_ValueError && api.exc_TypeError && api.exc_MemoryError &&
         api.exc_IndexError && api.exc_RuntimeError && api.name_cap && api.name_addr;
}

/* Raises the Python exception for a dlpx error code, with the detail
 * message; returns -1. */
static int raise_code(int code) {
  void *exc;
  switch (code) {
    case DLPX_EINVAL: exc = api.exc_ValueError; break;
    case DLPX_ENOMEM: exc = api.exc_MemoryError; break;
    case DLPX_EINDEX: exc = api.exc_IndexError; break;
    case DLPX_EPYTHON:
    case DLPX_ESTATE: exc = api.exc_RuntimeError; break;
    default: exc = api.exc_BufferError; break; /* what DLPack cannot carry */
  }
  api.PyErr_SetString(exc, dlpx_last_error());
  return -1;
}

static int raise_msg(void *exc, int code, const char *msg) {
  dlpx__fail(code, "%s", msg);
  api.PyErr_SetString(exc, msg);
  return -1;
}

void dlpx_py_tensor_capsule_destructor(void *capsule) {
  if (!atomic_load(&registered)) return;
  void *et, *ev, *tb;
  api.PyErr_Fetch(&et, &ev, &tb);
  if (api.PyCapsule_IsValid(capsule, NAME_OWNER))
    dlpx_tensor_free(api.PyCapsule_GetPointer(capsule, NAME_OWNER));
  api.PyErr_Restore(et, ev, tb);
}

int dlpx_py_bind(void *obj, dlpx_tensor *t) {
  if (!full_api()) {
    dlpx_tensor_free(t);
    return dlpx__fail(DLPX_EPYTHON, "the Python bridge is not fully registered");
  }
  if (!obj || !t) {
    dlpx_tensor_free(t);
    return raise_msg(api.exc_ValueError, DLPX_EINVAL, "dlpx_py_bind: NULL object or tensor");
  }
  void *cap = api.PyCapsule_New(t, NAME_OWNER, dlpx_py_tensor_capsule_destructor);
  if (!cap) {
    dlpx_tensor_free(t);
    return -1;
  }
  void *addr = api.PyLong_FromVoidPtr(t);
  int rc = -1;
  if (addr && api.PyObject_SetAttr(obj, api.name_cap, cap) == 0 &&
      api.PyObject_SetAttr(obj, api.name_addr, addr) == 0)
    rc = 0;
  if (addr) api.Py_DecRef(addr);
  api.Py_DecRef(cap); /* obj holds it now, or it frees t on failure */
  return rc;
}

int dlpx_py_consume(void *obj, void *capsule, uint32_t flags) {
  if (!full_api()) return dlpx__fail(DLPX_EPYTHON, "the Python bridge is not fully registered");
  dlpx_tensor *t = NULL;
  int rc;
  if (api.PyCapsule_IsValid(capsule, NAME_VERSIONED)) {
    DLManagedTensorVersioned *m = api.PyCapsule_GetPointer(capsule, NAME_VERSIONED);
    /* Rename first: from here on we own m, whatever happens. */
    if (api.PyCapsule_SetName(capsule, NAME_USED_VERSIONED) != 0) return -1;
    rc = dlpx_tensor_import(m, flags, &t);
  } else if (api.PyCapsule_IsValid(capsule, NAME_LEGACY)) {
    DLManagedTensor *m = api.PyCapsule_GetPointer(capsule, NAME_LEGACY);
    if (api.PyCapsule_SetName(capsule, NAME_USED_LEGACY) != 0) return -1;
    rc = dlpx_tensor_import_legacy(m, flags, &t);
  } else if (api.PyCapsule_IsValid(capsule, NAME_USED_VERSIONED) ||
             api.PyCapsule_IsValid(capsule, NAME_USED_LEGACY)) {
    return raise_msg(api.exc_ValueError, DLPX_EINVAL,
                     "this DLPack capsule was already consumed (a capsule can be used once)");
  } else {
    return raise_msg(api.exc_TypeError, DLPX_EINVAL,
                     "expected a DLPack capsule named 'dltensor' or 'dltensor_versioned' "
                     "holding a managed tensor");
  }
  if (rc) return raise_code(rc);
  return dlpx_py_bind(obj, t);
}

int dlpx_py_consume_exchange(void *obj, const DLPackExchangeAPI *xapi, void *producer,
                             uint32_t flags) {
  if (!full_api()) return dlpx__fail(DLPX_EPYTHON, "the Python bridge is not fully registered");
  if (!xapi || !xapi->managed_tensor_from_py_object_no_sync)
    return raise_msg(api.exc_TypeError, DLPX_EINVAL, "invalid DLPack exchange API table");
  if (xapi->header.version.major != DLPACK_MAJOR_VERSION)
    return raise_msg(api.exc_BufferError, DLPX_EVERSION,
                     "the producer's DLPack exchange API has an unsupported major version");
  DLManagedTensorVersioned *m = NULL;
  if (xapi->managed_tensor_from_py_object_no_sync(producer, &m) != 0 || !m) {
    if (!api.PyErr_Occurred())
      return raise_msg(api.exc_BufferError, DLPX_EPYTHON,
                       "the producer's exchange API failed without an exception");
    return -1;
  }
  dlpx_tensor *t = NULL;
  int rc = dlpx_tensor_import(m, flags, &t);
  if (rc) return raise_code(rc);
  return dlpx_py_bind(obj, t);
}

static dlpx_tensor *owner_tensor(void *owner) {
  if (!api.PyCapsule_IsValid(owner, NAME_OWNER)) {
    raise_msg(api.exc_TypeError, DLPX_EINVAL, "not a dlpx tensor handle");
    return NULL;
  }
  return api.PyCapsule_GetPointer(owner, NAME_OWNER);
}

/* Exports |t| as a new DLPack capsule (new reference), or NULL with an
 * exception set. */
static void *export_capsule(const dlpx_tensor *t, int versioned, uint32_t flags) {
  void *cap;
  if (versioned) {
    DLManagedTensorVersioned *m = NULL;
    int rc = dlpx_tensor_export(t, flags, &m);
    if (rc) {
      raise_code(rc);
      return NULL;
    }
    cap = api.PyCapsule_New(m, NAME_VERSIONED, dlpx_py_capsule_destructor);
    if (!cap) m->deleter(m);
  } else {
    DLManagedTensor *m = NULL;
    int rc = dlpx_tensor_export_legacy(t, flags, &m);
    if (rc) {
      raise_code(rc);
      return NULL;
    }
    cap = api.PyCapsule_New(m, NAME_LEGACY, dlpx_py_capsule_destructor_legacy);
    if (!cap) m->deleter(m);
  }
  return cap;
}

void *dlpx_py_export(void *owner, int versioned, uint32_t flags) {
  if (!full_api()) {
    dlpx__fail(DLPX_EPYTHON, "the Python bridge is not fully registered");
    return NULL;
  }
  dlpx_tensor *t = owner_tensor(owner);
  return t ? export_capsule(t, versioned, flags) : NULL;
}

/* ---- the producer side of the DLPack C exchange API ----------------------- */

static bool methods_api(void);

/* The tensor of a dlpx.Tensor object (borrowed), or NULL with an exception. */
static dlpx_tensor *object_tensor(void *obj) {
  if (!methods_api()) {
    dlpx__fail(DLPX_EPYTHON, "the Python bridge is not fully registered");
    return NULL;
  }
  void *cap = api.PyObject_GetAttr(obj, api.name_cap);
  if (!cap) {
    api.PyErr_Clear();
    raise_msg(api.exc_TypeError, DLPX_EINVAL, "not a dlpx.Tensor");
    return NULL;
  }
  dlpx_tensor *t = owner_tensor(cap);
  api.Py_DecRef(cap); /* obj keeps it alive */
  return t;
}

static int x_from_py_object(void *obj, DLManagedTensorVersioned **out) {
  dlpx_tensor *t = object_tensor(obj);
  if (!t) return -1;
  int rc = dlpx_tensor_export(t, 0, out);
  return rc ? raise_code(rc) : 0;
}

static int x_dltensor_from_py_object(void *obj, DLTensor *out) {
  dlpx_tensor *t = object_tensor(obj);
  if (!t) return -1;
  *out = t->dl; /* shape and strides stay owned by the tensor */
  if (t->dl.data && dlpx__device_addressable((int32_t)t->dl.device.device_type)) {
    out->data = (char *)t->dl.data + t->dl.byte_offset;
    out->byte_offset = 0;
  }
  return 0;
}

static int x_to_py_object(DLManagedTensorVersioned *m, void **out) {
  if (!full_api() || !api.tensor_factory || !api.PyObject_CallObject) {
    if (m && m->deleter) m->deleter(m);
    return dlpx__fail(DLPX_EPYTHON, "the Python bridge is not fully registered");
  }
  dlpx_tensor *t = NULL;
  int rc = dlpx_tensor_import(m, 0, &t); /* takes m in every case */
  if (rc) return raise_code(rc);
  void *obj = api.PyObject_CallObject(api.tensor_factory, NULL);
  if (!obj) {
    dlpx_tensor_free(t);
    return -1;
  }
  if (dlpx_py_bind(obj, t) != 0) {
    api.Py_DecRef(obj);
    return -1;
  }
  *out = obj;
  return 0;
}

static int x_allocator(DLTensor *proto, DLManagedTensorVersioned **out, void *error_ctx,
                       void (*set_error)(void *, const char *, const char *)) {
  int rc;
  dlpx_tensor *t = NULL;
  if (!proto || !out) {
    rc = dlpx__fail(DLPX_EINVAL, "prototype or out is NULL");
  } else if (proto->device.device_type != kDLCPU) {
    rc = dlpx__fail(DLPX_EDEVICE, "dlpx allocates host (kDLCPU) tensors only, not device type %d",
                    (int)proto->device.device_type);
  } else if ((rc = dlpx_tensor_empty(proto->dtype, proto->ndim, proto->shape, &t)) == 0) {
    rc = dlpx_tensor_export(t, 0, out);
    dlpx_tensor_free(t);
  }
  if (rc == 0) return 0;
  if (set_error)
    set_error(error_ctx, rc == DLPX_ENOMEM ? "MemoryError" : "BufferError", dlpx_last_error());
  return -1;
}

static int x_current_work_stream(DLDeviceType type, int32_t id, void **out) {
  (void)type;
  (void)id;
  if (out) *out = NULL; /* dlpx has no stream of its own: the legacy default */
  return 0;
}

static const DLPackExchangeAPI exchange_api = {
    {{DLPACK_MAJOR_VERSION, DLPACK_MINOR_VERSION}, NULL},
    x_allocator,
    x_from_py_object,
    x_to_py_object,
    x_dltensor_from_py_object,
    x_current_work_stream,
};

const DLPackExchangeAPI *dlpx_py_exchange_api(void) { return &exchange_api; }

/* ---- C methods of dlpx.Tensor ------------------------------------------------ */

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

static bool methods_api(void) {
  return full_api() && api.PyTuple_Size && api.PyTuple_GetItem && api.PyLong_AsSsize_t &&
         api.PyErr_Clear && api.PyUnicode_CompareWithASCIIString && api.Py_BuildValue &&
         api.PyObject_CallFunctionObjArgs && api.obj_None && api.name_stream &&
         api.name_max_version && api.name_dl_device && api.name_copy && api.dlpack_fallback;
}

static bool kw_is(void *name, void *interned, const char *ascii) {
  if (name == interned) return true; /* keywords at call sites are interned */
  return api.PyUnicode_CompareWithASCIIString(name, ascii) == 0;
}

/* __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None) */
static void *method_dlpack(void *self, void *const *args, ptrdiff_t nargs, void *kwnames) {
  if (!methods_api()) {
    dlpx__fail(DLPX_EPYTHON, "the Python bridge is not fully registered");
    return NULL;
  }
  void *none = api.obj_None;
  void *stream = none, *maxv = none, *dldev = none, *copy = none;
  if (nargs != 0) {
    raise_msg(api.exc_TypeError, DLPX_EINVAL, "__dlpack__() takes only keyword arguments");
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
      raise_msg(api.exc_TypeError, DLPX_EINVAL, "__dlpack__() got an unexpected keyword argument");
      return NULL;
    }
  }
  if (stream != none || dldev != none || copy != none) goto fallback;
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
  void *cap = api.PyObject_GetAttr(self, api.name_cap);
  if (!cap) return NULL;
  dlpx_tensor *t = owner_tensor(cap);
  if (!t) {
    api.Py_DecRef(cap);
    return NULL;
  }
  if (dlpx_tensor_numel(t) > 0)
    for (int32_t i = 0; i < t->dl.ndim; i++)
      if (t->dl.strides[i] < 0 && t->dl.shape[i] > 1) { /* Python checks the consumer */
        api.Py_DecRef(cap);
        goto fallback;
      }
  void *result = export_capsule(t, versioned, 0); /* self keeps t alive */
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
  if (!methods_api()) {
    dlpx__fail(DLPX_EPYTHON, "the Python bridge is not fully registered");
    return NULL;
  }
  void *cap = api.PyObject_GetAttr(self, api.name_cap);
  if (!cap) return NULL;
  dlpx_tensor *t = owner_tensor(cap);
  api.Py_DecRef(cap);
  if (!t) return NULL;
  return api.Py_BuildValue("(ii)", (int)t->dl.device.device_type, (int)t->dl.device.device_id);
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
