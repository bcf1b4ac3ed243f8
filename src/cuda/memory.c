/* memory.c - CUDA memory as dlpx storages: blocks of the device and pinned
 * pools, managed memory, and registered host memory.  Each storage knows
 * the stream its memory is ordered on: exports order consumers after it,
 * and a pooled block goes back to its pool for that stream. */
#include "config.h"

#include <stdlib.h>

#include "cuda_int.h"

typedef struct {
  int pool_kind;           /* DLPX__POOL_*, for pooled storages */
  dlpx_release_fn release; /* registered memory: the owner's callback */
  void *ctx;
} cuda_state;

static cuda_state *state_of(dlpx_storage *s) { return dlpx__storage_payload(s); }

static void pool_release(dlpx_storage *s) {
  cuda_state *st = state_of(s);
  dlpx__error_state saved;
  dlpx__error_save(&saved);
  (void)dlpx__pool_free(st->pool_kind, s->device.device_id, s->data, atomic_load(&s->stream));
  dlpx__error_restore(&saved);
}

/* Waits for the storage's stream, then runs |fn| on its memory, inside the
 * device's context; failures are not the releasing caller's. */
static void driver_release(dlpx_storage *s, bool managed) {
  cuda_state *st = state_of(s);
  dlpx__error_state saved;
  dlpx__error_save(&saved);
  const dlpx__cu_api *cu;
  if (dlpx__cu_enter(s->device.device_id, &cu) == 0) {
    (void)cu->StreamSynchronize(dlpx__cu_stream(atomic_load(&s->stream)));
    if (managed)
      (void)cu->MemFree((CUdeviceptr)s->data);
    else
      (void)cu->MemHostUnregister(s->data);
    dlpx__cu_leave();
  }
  if (!managed && st->release) {
    st->release(s->data, st->ctx);
    dlpx__count(&dlpx__stats.borrowed_releases_run, 1);
  }
  dlpx__error_restore(&saved);
}

static void managed_release(dlpx_storage *s) { driver_release(s, true); }
static void registered_release(dlpx_storage *s) { driver_release(s, false); }

static const dlpx__storage_ops pool_ops = {DLPX_STORAGE_CUDA_POOL, "CUDA pool block", pool_release};
static const dlpx__storage_ops managed_ops = {DLPX_STORAGE_CUDA_MANAGED, "CUDA managed memory",
                                              managed_release};
static const dlpx__storage_ops registered_ops = {DLPX_STORAGE_CUDA_REGISTERED,
                                                 "CUDA registered host memory",
                                                 registered_release};

bool dlpx__cuda_storage(const dlpx_storage *s) {
  return s && (s->ops == &pool_ops || s->ops == &managed_ops || s->ops == &registered_ops);
}

static dlpx_storage *new_storage(const dlpx__storage_ops *ops, void *data, size_t nbytes,
                                 DLDevice device, uintptr_t stream, int kind) {
  dlpx_storage *s = dlpx__storage_new(ops, sizeof(cuda_state), data, nbytes, device);
  if (!s) return NULL;
  cuda_state *st = state_of(s);
  atomic_store(&s->stream, stream);
  st->pool_kind = kind;
  st->release = NULL;
  st->ctx = NULL;
  return s;
}

static int alloc_managed(DLDevice device, size_t nbytes, uintptr_t stream, dlpx_storage **out) {
  const dlpx__cu_api *cu;
  int rc = dlpx__cu_enter(device.device_id, &cu);
  if (rc) return rc;
  CUdeviceptr ptr = 0;
  CUresult r = cu->MemAllocManaged(&ptr, nbytes ? nbytes : 1, CU_MEM_ATTACH_GLOBAL);
  if (r != CUDA_SUCCESS) return dlpx__cu_fail_leave(r, "cuMemAllocManaged");
  dlpx_storage *s = new_storage(&managed_ops, (void *)ptr, nbytes, device, stream, 0);
  if (!s) {
    (void)cu->MemFree(ptr);
    dlpx__cu_leave();
    return DLPX_ENOMEM;
  }
  dlpx__cu_leave();
  *out = s;
  return 0;
}

int dlpx_cuda_storage_alloc(DLDevice device, size_t nbytes, uintptr_t stream,
                            dlpx_storage **out) {
  if (!out) return dlpx__fail(DLPX_EINVAL, "out is NULL");
  if (nbytes > (size_t)INT64_MAX / 2)
    return dlpx__fail(DLPX_EOVERFLOW, "a CUDA allocation of %zu bytes is too large", nbytes);
  if (device.device_id < 0 || device.device_id >= DLPX__CUDA_MAX_DEVICES)
    return dlpx__fail(DLPX_EDEVICE, "CUDA device %d is out of range", (int)device.device_id);
  if (device.device_type == kDLCUDAManaged) return alloc_managed(device, nbytes, stream, out);
  int kind;
  if (device.device_type == kDLCUDA)
    kind = DLPX__POOL_DEVICE;
  else if (device.device_type == kDLCUDAHost)
    kind = DLPX__POOL_PINNED;
  else
    return dlpx__fail(DLPX_EDEVICE,
                      "device type %d is no CUDA memory (kDLCUDA, kDLCUDAHost, kDLCUDAManaged)",
                      (int)device.device_type);
  void *ptr;
  int rc = dlpx__pool_alloc(kind, device.device_id, nbytes, stream, &ptr);
  if (rc) return rc;
  dlpx_storage *s = new_storage(&pool_ops, ptr, nbytes, device, stream, kind);
  if (!s) {
    (void)dlpx__pool_free(kind, device.device_id, ptr, stream);
    return DLPX_ENOMEM;
  }
  *out = s;
  return 0;
}

int dlpx_cuda_tensor_empty(DLDevice device, DLDataType dtype, int32_t ndim, const int64_t *shape,
                           uintptr_t stream, dlpx_tensor **out) {
  if (!out) return dlpx__fail(DLPX_EINVAL, "out is NULL");
  int64_t numel, nbytes;
  int rc = dlpx__check_shape(ndim, shape);
  if (!rc) rc = dlpx__dtype_check_element(dtype);
  if (!rc) rc = dlpx__numel(ndim, shape, &numel);
  if (!rc) rc = dlpx_dtype_nbytes(dtype, numel, &nbytes);
  if (rc) return rc;
  dlpx_storage *s;
  rc = dlpx_cuda_storage_alloc(device, (size_t)nbytes, stream, &s);
  if (rc) return rc;
  rc = dlpx_tensor_from_storage(s, dtype, ndim, shape, NULL, 0, 0, out);
  dlpx_storage_release(s);
  return rc;
}

static bool cuda_memory(const dlpx_storage *s) {
  int32_t t = (int32_t)s->device.device_type;
  return t == kDLCUDA || t == kDLCUDAHost || t == kDLCUDAManaged;
}

uintptr_t dlpx_cuda_storage_stream(const dlpx_storage *storage) {
  if (!storage || !cuda_memory(storage)) return 0;
  return atomic_load(&((dlpx_storage *)(uintptr_t)storage)->stream);
}

void dlpx__cuda_storage_mark(dlpx_storage *storage, uintptr_t stream) {
  if (storage && cuda_memory(storage) && stream != UINTPTR_MAX)
    atomic_store(&storage->stream, stream);
}

int dlpx_cuda_storage_mark(dlpx_storage *storage, uintptr_t stream) {
  if (!storage || !cuda_memory(storage))
    return dlpx__fail(DLPX_EINVAL, "the storage is not CUDA memory");
  dlpx__cuda_storage_mark(storage, stream);
  return 0;
}

int dlpx_cuda_storage_set_stream(dlpx_storage *storage, uintptr_t stream) {
  if (!storage || !cuda_memory(storage))
    return dlpx__fail(DLPX_EINVAL, "the storage is not CUDA memory");
  uintptr_t old = atomic_load(&storage->stream);
  int device = storage->device.device_type == kDLCUDAHost ? 0 : storage->device.device_id;
  int rc = dlpx_cuda_stream_order(device, old, stream);
  if (rc) return rc;
  dlpx__cuda_storage_mark(storage, stream);
  return 0;
}

int dlpx_cuda_tensor_ready(const dlpx_tensor *tensor, uintptr_t consumer) {
  if (!tensor) return dlpx__fail(DLPX_EINVAL, "tensor is NULL");
  const dlpx_storage *s = tensor->storage;
  int32_t type = (int32_t)tensor->dl.device.device_type;
  uintptr_t producer = atomic_load(&((dlpx_storage *)(uintptr_t)s)->stream);
  if (type == kDLCUDA || type == kDLCUDAManaged)
    return dlpx_cuda_stream_order(tensor->dl.device.device_id, producer, consumer);
  if (type == kDLCUDAHost && (dlpx__cuda_storage(s) || producer))
    return dlpx_cuda_stream_synchronize(0, producer);
  return 0;
}

int dlpx_cuda_host_register(void *data, size_t nbytes, dlpx_release_fn release, void *ctx,
                            dlpx_storage **out) {
  if (!out) return dlpx__fail(DLPX_EINVAL, "out is NULL");
  if (!data || nbytes == 0)
    return dlpx__fail(DLPX_EINVAL, "registering %zu bytes at %p: need memory", nbytes, data);
  if (nbytes > (size_t)INT64_MAX)
    return dlpx__fail(DLPX_EOVERFLOW, "%zu bytes is too large", nbytes);
  const dlpx__cu_api *cu;
  int rc = dlpx__cu_enter(0, &cu);
  if (rc) return rc;
  CUresult r = cu->MemHostRegister(data, nbytes, CU_MEMHOSTREGISTER_PORTABLE);
  if (r != CUDA_SUCCESS) return dlpx__cu_fail_leave(r, "cuMemHostRegister");
  dlpx_storage *s =
      new_storage(&registered_ops, data, nbytes, (DLDevice){kDLCUDAHost, 0}, 0, 0);
  if (!s) {
    (void)cu->MemHostUnregister(data);
    dlpx__cu_leave();
    return DLPX_ENOMEM;
  }
  dlpx__cu_leave();
  state_of(s)->release = release;
  state_of(s)->ctx = ctx;
  *out = s;
  return 0;
}
