/* loader.c - the CUDA driver, opened with dlopen on first use: libdlpx has
 * no link-time dependency on libcuda.  Entry points come from
 * cuGetProcAddress (the versioned entry for DLPX__CUDA_API_VERSION, as the
 * runtime does) where the driver has it, else from dlsym with the versioned
 * symbol names.  Primary contexts are retained once per device and made
 * current only around each call. */
#include "config.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../glibc_compat.h"
#include "cuda_int.h"

static dlpx__cu_api api;
static const dlpx__cu_api *loaded;
static char why[DLPX__MSG_MAX];
static pthread_once_t once = PTHREAD_ONCE_INIT;

typedef CUresult (*getproc_v2_fn)(const char *, void **, int, uint64_t, int *);
typedef CUresult (*getproc_fn)(const char *, void **, int, uint64_t);

/* One entry: cuGetProcAddress first, dlsym second.  False when absent. */
static bool resolve(void *h, getproc_v2_fn gp2, getproc_fn gp, const char *name,
                    const char *vname, void *field, size_t size) {
  void *sym = NULL;
  if (gp2 && (gp2(name, &sym, DLPX__CUDA_API_VERSION, CU_GET_PROC_ADDRESS_DEFAULT, NULL) !=
                  CUDA_SUCCESS))
    sym = NULL;
  if (!sym && gp && gp(name, &sym, DLPX__CUDA_API_VERSION, CU_GET_PROC_ADDRESS_DEFAULT) !=
                        CUDA_SUCCESS)
    sym = NULL;
  if (!sym) sym = dlsym(h, vname);
  if (!sym) return false;
  memcpy(field, &sym, size); /* void * to a function pointer without a cast ISO C lacks */
  return true;
}

static void load(void) {
  const char *file = getenv("DLPX_LIBCUDA");
  if (!file || !*file) file = "libcuda.so.1";
  void *h = dlopen(file, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    snprintf(why, sizeof why, "no CUDA driver: %s (dlpx needs the NVIDIA driver's libcuda.so.1)",
             dlerror());
    return;
  }
  getproc_v2_fn gp2 = NULL;
  getproc_fn gp = NULL;
  void *s = dlsym(h, "cuGetProcAddress_v2");
  if (s) memcpy(&gp2, &s, sizeof s);
  s = dlsym(h, "cuGetProcAddress");
  if (s) memcpy(&gp, &s, sizeof s);
#define DLPX__RESOLVE(field, name, vname, params)                                   \
  if (!resolve(h, gp2, gp, name, vname, &api.field, sizeof api.field)) {             \
    snprintf(why, sizeof why, "the CUDA driver %s lacks %s (too old for dlpx)", file, vname); \
    return;                                                                        \
  }
  DLPX__CU_ENTRIES(DLPX__RESOLVE)
#undef DLPX__RESOLVE
  CUresult r = api.Init(0);
  if (r != CUDA_SUCCESS) {
    const char *name = NULL;
    if (api.GetErrorName(r, &name) != CUDA_SUCCESS || !name) name = "an unknown error";
    snprintf(why, sizeof why, "the CUDA driver %s does not start: cuInit failed with %s%s", file,
             name, r == CUDA_ERROR_NO_DEVICE ? " (no GPU is visible)" : "");
    return;
  }
  loaded = &api; /* the handle stays open for the life of the process */
}

const dlpx__cu_api *dlpx__cu(void) {
  pthread_once(&once, load);
  if (!loaded) dlpx__fail(DLPX_ECUDA, "%s", why);
  return loaded;
}

int dlpx__cu_fail(CUresult r, const char *what) {
  const char *name = NULL, *text = NULL;
  if (loaded) {
    if (loaded->GetErrorName(r, &name) != CUDA_SUCCESS) name = NULL;
    if (loaded->GetErrorString(r, &text) != CUDA_SUCCESS) text = NULL;
  }
  int code = r == CUDA_ERROR_OUT_OF_MEMORY                              ? DLPX_ENOMEM
             : r == CUDA_ERROR_INVALID_DEVICE || r == CUDA_ERROR_NO_DEVICE ? DLPX_EDEVICE
             : r == CUDA_ERROR_NOT_SUPPORTED                              ? DLPX_ENOTSUP
             : r == CUDA_ERROR_NOT_READY                                  ? DLPX_ESTATE
                                                                          : DLPX_ECUDA;
  if (name)
    return dlpx__fail(code, "%s failed: %s (%s)", what, name, text ? text : "no description");
  return dlpx__fail(code, "%s failed: CUDA error %d", what, (int)r);
}

/* ---- primary contexts ----------------------------------------------------------- */

static pthread_mutex_t ctx_lock = PTHREAD_MUTEX_INITIALIZER;
static CUcontext contexts[DLPX__CUDA_MAX_DEVICES];
static int device_count = -1;

static int primary(const dlpx__cu_api *cu, int device, CUcontext *out) {
  if (device < 0 || device >= DLPX__CUDA_MAX_DEVICES)
    return dlpx__fail(DLPX_EDEVICE, "CUDA device %d is out of range", device);
  pthread_mutex_lock(&ctx_lock);
  int rc = 0;
  if (device_count < 0) {
    int n = 0;
    CUresult r = cu->DeviceGetCount(&n);
    if (r != CUDA_SUCCESS) {
      rc = dlpx__cu_fail(r, "cuDeviceGetCount");
      goto done;
    }
    device_count = n;
  }
  if (device >= device_count) {
    rc = dlpx__fail(DLPX_EDEVICE, "no CUDA device %d: this machine has %d", device,
                    device_count);
    goto done;
  }
  if (!contexts[device]) {
    CUdevice dev;
    CUcontext ctx;
    CUresult r = cu->DeviceGet(&dev, device);
    if (r == CUDA_SUCCESS) r = cu->DevicePrimaryCtxRetain(&ctx, dev);
    if (r != CUDA_SUCCESS) {
      rc = dlpx__cu_fail(r, "retaining the primary context");
      goto done;
    }
    contexts[device] = ctx; /* retained for the life of the process */
  }
  *out = contexts[device];
done:
  pthread_mutex_unlock(&ctx_lock);
  return rc;
}

int dlpx__cu_enter(int device, const dlpx__cu_api **out) {
  const dlpx__cu_api *cu = dlpx__cu();
  if (!cu) return DLPX_ECUDA;
  CUcontext ctx = NULL;
  int rc = primary(cu, device, &ctx);
  if (rc) return rc;
  CUresult r = cu->CtxPushCurrent(ctx);
  if (r != CUDA_SUCCESS) return dlpx__cu_fail(r, "cuCtxPushCurrent");
  *out = cu;
  return 0;
}

void dlpx__cu_leave(void) {
  CUcontext ignored;
  (void)loaded->CtxPopCurrent(&ignored);
}

int dlpx__cu_fail_leave(CUresult r, const char *what) {
  int rc = dlpx__cu_fail(r, what);
  dlpx__cu_leave();
  return rc;
}

/* ---- the driver, publicly ------------------------------------------------------------- */

int dlpx_cuda_available(void) {
  int n = 0;
  if (dlpx_cuda_device_count(&n)) return 0;
  if (n == 0) dlpx__fail(DLPX_EDEVICE, "the CUDA driver reports no device");
  return n > 0;
}

int dlpx_cuda_device_count(int *count) {
  if (!count) return dlpx__fail(DLPX_EINVAL, "count is NULL");
  *count = 0;
  const dlpx__cu_api *cu = dlpx__cu();
  if (!cu) return DLPX_ECUDA;
  int n = 0;
  CUresult r = cu->DeviceGetCount(&n);
  if (r != CUDA_SUCCESS) return dlpx__cu_fail(r, "cuDeviceGetCount");
  *count = n < DLPX__CUDA_MAX_DEVICES ? n : DLPX__CUDA_MAX_DEVICES;
  return 0;
}

int dlpx_cuda_driver_version(int *version) {
  if (!version) return dlpx__fail(DLPX_EINVAL, "version is NULL");
  const dlpx__cu_api *cu = dlpx__cu();
  if (!cu) return DLPX_ECUDA;
  CUresult r = cu->DriverGetVersion(version);
  return r == CUDA_SUCCESS ? 0 : dlpx__cu_fail(r, "cuDriverGetVersion");
}

int dlpx_cuda_device_info(int device, char *buf, size_t size, size_t *total_bytes) {
  if (buf && size == 0) return dlpx__fail(DLPX_EINVAL, "buffer of 0 bytes");
  const dlpx__cu_api *cu;
  int rc = dlpx__cu_enter(device, &cu);
  if (rc) return rc;
  CUdevice dev;
  CUresult r = cu->DeviceGet(&dev, device);
  if (r != CUDA_SUCCESS) return dlpx__cu_fail_leave(r, "cuDeviceGet");
  if (buf) {
    char name[256] = {0};
    r = cu->DeviceGetName(name, (int)sizeof name - 1, dev);
    if (r != CUDA_SUCCESS) return dlpx__cu_fail_leave(r, "cuDeviceGetName");
    snprintf(buf, size, "%s", name);
  }
  if (total_bytes) {
    r = cu->DeviceTotalMem(total_bytes, dev);
    if (r != CUDA_SUCCESS) return dlpx__cu_fail_leave(r, "cuDeviceTotalMem");
  }
  dlpx__cu_leave();
  return 0;
}

int dlpx_cuda_mem_get_info(int device, size_t *free_bytes, size_t *total_bytes) {
  if (!free_bytes || !total_bytes) return dlpx__fail(DLPX_EINVAL, "free or total is NULL");
  const dlpx__cu_api *cu;
  int rc = dlpx__cu_enter(device, &cu);
  if (rc) return rc;
  CUresult r = cu->MemGetInfo(free_bytes, total_bytes);
  if (r != CUDA_SUCCESS) return dlpx__cu_fail_leave(r, "cuMemGetInfo");
  dlpx__cu_leave();
  return 0;
}

int dlpx_cuda_synchronize(int device) {
  const dlpx__cu_api *cu;
  int rc = dlpx__cu_enter(device, &cu);
  if (rc) return rc;
  CUresult r = cu->CtxSynchronize();
  if (r != CUDA_SUCCESS) return dlpx__cu_fail_leave(r, "cuCtxSynchronize");
  dlpx__cu_leave();
  return 0;
}
