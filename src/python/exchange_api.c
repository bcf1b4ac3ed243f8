/* exchange_api.c - dlpx as a producer of the DLPack C exchange API
 * (DLPack 1.3): a static table of functions that other libraries call with
 * the GIL held, instead of __dlpack__ and a capsule. */
#include "config.h"

#include "pyapi.h"

#define api dlpx__py

static int x_from_py_object(void *obj, DLManagedTensorVersioned **out) {
  if (!dlpx__py_check_ready()) return -1;
  void *cap;
  dlpx_tensor *t = dlpx__py_tensor_of(obj, &cap);
  if (!t) return -1;
  int rc = dlpx_tensor_export(t, 0, out);
  api.Py_DecRef(cap); /* the export holds its own storage reference */
  return rc ? dlpx__py_raise(rc, true) : 0;
}

static int x_dltensor_from_py_object(void *obj, DLTensor *out) {
  if (!dlpx__py_check_ready()) return -1;
  void *cap;
  dlpx_tensor *t = dlpx__py_tensor_of(obj, &cap);
  if (!t) return -1;
  /* shape and strides stay owned by the tensor, which obj keeps alive */
  *out = t->dl;
  if (t->dl.data && dlpx__device_addressable((int32_t)t->dl.device.device_type)) {
    out->data = (char *)t->dl.data + t->dl.byte_offset;
    out->byte_offset = 0;
  }
  api.Py_DecRef(cap);
  return 0;
}

static int x_to_py_object(DLManagedTensorVersioned *m, void **out) {
  if (!dlpx__py_check_ready()) {
    if (m) dlpx__run_deleter(m, true);
    return -1;
  }
  dlpx_tensor *t = NULL;
  int rc = dlpx_tensor_import(m, 0, &t); /* takes m in every case */
  if (rc) return dlpx__py_raise(rc, true);
  void *obj = dlpx__py_new_tensor(t);
  if (!obj) return -1;
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

/* The calling thread's current dlpx stream for the device
 * (dlpx_cuda_set_current_stream; NULL, the legacy default, until set). */
static int x_current_work_stream(DLDeviceType type, int32_t id, void **out) {
  uintptr_t s = 0;
  if (type == kDLCUDA || type == kDLCUDAManaged) s = dlpx_cuda_current_stream(id);
  if (out) *out = (void *)s;
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
