/* capsule.c - dlpx.Tensor objects and their owner capsules, and the DLPack
 * protocol in capsules: consuming a producer's capsule or exchange API,
 * exporting a tensor as a capsule.  GIL held throughout. */
#include "config.h"

#include "pyapi.h"

#define api dlpx__py

/* ---- exceptions --------------------------------------------------------------- */

#define EXC_ROW(name, value, message, exception, dlpack_exception) \
  {DLPX_##name, DLPX_PY_EXC_##exception, DLPX_PY_EXC_##dlpack_exception},

/* Each error's exceptions, as indexes of dlpx_pyapi.exceptions; an error
 * naming an exception missing from DLPX_PY_EXCEPTION_MAP does not compile. */
static const struct {
  int code, exc, dlpack_exc;
} exception_of[] = {DLPX_ERROR_MAP(EXC_ROW)};

int dlpx__py_raise(int code, bool dlpack) {
  int exc = DLPX_PY_EXC_RuntimeError;
  for (size_t i = 0; i < DLPX__COUNT(exception_of); i++)
    if (exception_of[i].code == code) {
      exc = dlpack ? exception_of[i].dlpack_exc : exception_of[i].exc;
      break;
    }
  const char *msg = dlpx_last_error();
  api.PyErr_SetString(api.exceptions[exc], *msg ? msg : dlpx_strerror(code));
  return -1;
}

int dlpx__py_raise_msg(int exc, int code, const char *msg) {
  dlpx__fail(code, "%s", msg);
  api.PyErr_SetString(api.exceptions[exc], msg);
  return -1;
}

/* ---- Tensor objects ------------------------------------------------------------- */

static void owner_destructor(void *capsule) {
  if (!dlpx__py_registered()) return;
  void *et, *ev, *tb;
  api.PyErr_Fetch(&et, &ev, &tb);
  if (api.PyCapsule_IsValid(capsule, DLPX_CAPSULE_OWNER))
    dlpx_tensor_free(api.PyCapsule_GetPointer(capsule, DLPX_CAPSULE_OWNER));
  api.PyErr_Restore(et, ev, tb);
}

void *dlpx__py_new_tensor(dlpx_tensor *t) {
  void *obj = api.PyType_GenericNew(api.tensor_type, NULL, NULL);
  if (!obj) {
    dlpx_tensor_free(t);
    return NULL;
  }
  void *cap = api.PyCapsule_New(t, DLPX_CAPSULE_OWNER, owner_destructor);
  if (!cap) {
    dlpx_tensor_free(t);
    api.Py_DecRef(obj);
    return NULL;
  }
  int rc = api.PyObject_SetAttr(obj, api.name_cap, cap);
  api.Py_DecRef(cap); /* obj holds it now, or it frees t */
  if (rc != 0) {
    api.Py_DecRef(obj);
    return NULL;
  }
  return obj;
}

dlpx_tensor *dlpx__py_tensor_of(void *obj, void **cap) {
  void *c = api.PyObject_GetAttr(obj, api.name_cap);
  if (!c) api.PyErr_Clear();
  if (!c || !api.PyCapsule_IsValid(c, DLPX_CAPSULE_OWNER)) {
    if (c) api.Py_DecRef(c);
    dlpx__py_raise_msg(DLPX_PY_EXC_TypeError, DLPX_EINVAL,
                       "expected a dlpx.Tensor with a tensor handle (this object was not made "
                       "by dlpx, or its _cap attribute was deleted or replaced)");
    return NULL;
  }
  *cap = c;
  return api.PyCapsule_GetPointer(c, DLPX_CAPSULE_OWNER);
}

void *dlpx_py_tensor_object(dlpx_tensor *t) {
  if (!dlpx__py_check_ready()) {
    dlpx_tensor_free(t);
    return NULL;
  }
  if (!t) {
    dlpx__py_raise_msg(DLPX_PY_EXC_ValueError, DLPX_EINVAL, "dlpx_py_tensor_object: NULL tensor");
    return NULL;
  }
  return dlpx__py_new_tensor(t);
}

/* ---- consuming ----------------------------------------------------------------- */

void *dlpx_py_consume(void *capsule, uint32_t flags) {
  if (!dlpx__py_check_ready()) return NULL;
  dlpx_tensor *t = NULL;
  int rc;
  if (api.PyCapsule_IsValid(capsule, DLPX_CAPSULE_VERSIONED)) {
    DLManagedTensorVersioned *m = api.PyCapsule_GetPointer(capsule, DLPX_CAPSULE_VERSIONED);
    /* Rename first: from here on we own m, whatever happens. */
    if (api.PyCapsule_SetName(capsule, DLPX_CAPSULE_USED_VERSIONED) != 0) return NULL;
    rc = dlpx_tensor_import(m, flags, &t);
  } else if (api.PyCapsule_IsValid(capsule, DLPX_CAPSULE_LEGACY)) {
    DLManagedTensor *m = api.PyCapsule_GetPointer(capsule, DLPX_CAPSULE_LEGACY);
    if (api.PyCapsule_SetName(capsule, DLPX_CAPSULE_USED_LEGACY) != 0) return NULL;
    rc = dlpx_tensor_import_legacy(m, flags, &t);
  } else if (api.PyCapsule_IsValid(capsule, DLPX_CAPSULE_USED_VERSIONED) ||
             api.PyCapsule_IsValid(capsule, DLPX_CAPSULE_USED_LEGACY)) {
    dlpx__py_raise_msg(DLPX_PY_EXC_ValueError, DLPX_EINVAL,
                       "this DLPack capsule was already consumed (a capsule can be used once)");
    return NULL;
  } else {
    dlpx__py_raise_msg(DLPX_PY_EXC_TypeError, DLPX_EINVAL,
                       "expected a DLPack capsule named 'dltensor' or 'dltensor_versioned' "
                       "holding a managed tensor");
    return NULL;
  }
  if (rc) {
    dlpx__py_raise(rc, true);
    return NULL;
  }
  return dlpx__py_new_tensor(t);
}

void *dlpx_py_consume_exchange(const DLPackExchangeAPI *xapi, void *producer, uint32_t flags) {
  if (!dlpx__py_check_ready()) return NULL;
  if (!xapi || !xapi->managed_tensor_from_py_object_no_sync) {
    dlpx__py_raise_msg(DLPX_PY_EXC_TypeError, DLPX_EINVAL, "invalid DLPack exchange API table");
    return NULL;
  }
  if (xapi->header.version.major != DLPACK_MAJOR_VERSION) {
    dlpx__py_raise_msg(DLPX_PY_EXC_BufferError, DLPX_EVERSION,
                       "the producer's DLPack exchange API has an unsupported major version");
    return NULL;
  }
  DLManagedTensorVersioned *m = NULL;
  if (xapi->managed_tensor_from_py_object_no_sync(producer, &m) != 0 || !m) {
    if (!api.PyErr_Occurred())
      dlpx__py_raise_msg(DLPX_PY_EXC_BufferError, DLPX_EPYTHON,
                         "the producer's exchange API failed without an exception");
    return NULL;
  }
  dlpx_tensor *t = NULL;
  int rc = dlpx_tensor_import(m, flags, &t); /* takes m in every case */
  if (rc) {
    dlpx__py_raise(rc, true);
    return NULL;
  }
  /* "no sync": the data is ready on the producer's current stream, which
   * dlpx's later work and exports order after */
  int32_t type = (int32_t)t->dl.device.device_type;
  if ((type == kDLCUDA || type == kDLCUDAManaged) && xapi->current_work_stream) {
    void *stream = NULL;
    if (xapi->current_work_stream((DLDeviceType)type, t->dl.device.device_id, &stream) == 0)
      atomic_store(&t->storage->stream, (uintptr_t)stream);
    else
      api.PyErr_Clear();
  }
  return dlpx__py_new_tensor(t);
}

/* ---- exporting ------------------------------------------------------------------ */

void *dlpx__py_export_capsule(const dlpx_tensor *t, int versioned, uint32_t flags) {
  void *cap;
  if (versioned) {
    DLManagedTensorVersioned *m = NULL;
    int rc = dlpx_tensor_export(t, flags, &m);
    if (rc) {
      dlpx__py_raise(rc, true);
      return NULL;
    }
    cap = api.PyCapsule_New(m, DLPX_CAPSULE_VERSIONED, dlpx_py_capsule_destructor);
    if (!cap) dlpx__call_deleter(m, true);
  } else {
    DLManagedTensor *m = NULL;
    int rc = dlpx_tensor_export_legacy(t, flags, &m);
    if (rc) {
      dlpx__py_raise(rc, true);
      return NULL;
    }
    cap = api.PyCapsule_New(m, DLPX_CAPSULE_LEGACY, dlpx_py_capsule_destructor_legacy);
    if (!cap) dlpx__call_deleter(m, false);
  }
  return cap;
}

void *dlpx_py_tensor_export(void *obj, int versioned, uint32_t flags) {
  if (!dlpx__py_check_ready()) return NULL;
  void *cap;
  dlpx_tensor *t = dlpx__py_tensor_of(obj, &cap);
  if (!t) return NULL;
  void *result = dlpx__py_export_capsule(t, versioned, flags);
  api.Py_DecRef(cap);
  return result;
}
