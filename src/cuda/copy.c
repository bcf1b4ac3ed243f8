/* copy.c - copies to, from and between CUDA memory, queued on a stream.
 * The layout is planned as for host copies (src/copy.c: byte strides,
 * dimensions merged); a contiguous run is one cuMemcpyAsync, layouts with a
 * contiguous inner run become cuMemcpy2DAsync or cuMemcpy3DAsync calls,
 * and anything else goes through host staging: the source's and the
 * destination's byte extents come to the host, the host copy kernel
 * rearranges them, and the result goes back. */
#include "config.h"

#include <string.h>

#include "cuda_int.h"

/* Most 2-D calls one copy may be cut into before staging wins. */
#define MAX_2D_CALLS 1024

static bool cuda_type(int32_t t) {
  return t == kDLCUDA || t == kDLCUDAHost || t == kDLCUDAManaged;
}

static int memory_type(int32_t t) {
  return t == kDLCUDA ? CU_MEMORYTYPE_DEVICE
         : t == kDLCUDAManaged ? CU_MEMORYTYPE_UNIFIED
                               : CU_MEMORYTYPE_HOST;
}

/* The CUDA device a copy between |a| and |b| runs on. */
static int copy_device(DLDevice a, DLDevice b, int *device) {
  const DLDevice ds[2] = {a, b};
  int found = -1, rank = 0; /* kDLCUDA beats managed beats pinned */
  for (int i = 0; i < 2; i++) {
    int32_t t = (int32_t)ds[i].device_type;
    if (t != kDLCPU && !cuda_type(t))
      return dlpx__fail(DLPX_EDEVICE, "dlpx copies CPU and CUDA memory, not device type %d",
                        (int)t);
    int r = t == kDLCUDA ? 3 : t == kDLCUDAManaged ? 2 : t == kDLCUDAHost ? 1 : 0;
    if (r == 3 && rank == 3 && found != ds[i].device_id)
      return dlpx__fail(DLPX_EDEVICE, "a copy between CUDA devices %d and %d (peer copies are "
                                      "not supported: go through the host)",
                        found, (int)ds[i].device_id);
    if (r > rank) {
      rank = r;
      found = t == kDLCUDAHost ? 0 : ds[i].device_id;
    }
  }
  *device = found;
  return 0;
}

typedef struct {
  const dlpx__cu_api *cu;
  CUstream stream;
  int src_type, dst_type;
} copier;

static CUresult copy_2d(const copier *c, char *dst, int64_t dpitch, const char *src,
                        int64_t spitch, int64_t width, int64_t height) {
  CUDA_MEMCPY2D m;
  memset(&m, 0, sizeof m);
  m.srcMemoryType = memory_type(c->src_type);
  m.srcHost = src;
  m.srcDevice = (CUdeviceptr)src;
  m.srcPitch = (size_t)spitch;
  m.dstMemoryType = memory_type(c->dst_type);
  m.dstHost = dst;
  m.dstDevice = (CUdeviceptr)dst;
  m.dstPitch = (size_t)dpitch;
  m.WidthInBytes = (size_t)width;
  m.Height = (size_t)height;
  return c->cu->Memcpy2DAsync(&m, c->stream);
}

static CUresult copy_3d(const copier *c, const dlpx__copy_plan *p, int64_t width) {
  CUDA_MEMCPY3D m;
  memset(&m, 0, sizeof m);
  m.srcMemoryType = memory_type(c->src_type);
  m.srcHost = p->src;
  m.srcDevice = (CUdeviceptr)p->src;
  m.srcPitch = (size_t)p->ss[1];
  m.srcHeight = (size_t)(p->ss[0] / p->ss[1]);
  m.dstMemoryType = memory_type(c->dst_type);
  m.dstHost = p->dst;
  m.dstDevice = (CUdeviceptr)p->dst;
  m.dstPitch = (size_t)p->ds[1];
  m.dstHeight = (size_t)(p->ds[0] / p->ds[1]);
  m.WidthInBytes = (size_t)width;
  m.Height = (size_t)p->n[1];
  m.Depth = (size_t)p->n[0];
  return c->cu->Memcpy3DAsync(&m, c->stream);
}

/* Number of 2-D copies the outer dimensions (all but the last two) make. */
static int64_t outer_count(const dlpx__copy_plan *p) {
  int64_t n = 1;
  for (int32_t i = 0; i + 2 < p->ndim; i++) {
    if (n > MAX_2D_CALLS) return n;
    n *= p->n[i];
  }
  return n;
}

/* Runs the plan as driver copies; false when the layout needs staging. */
static bool direct(const copier *c, const dlpx__copy_plan *p, CUresult *r) {
  const int32_t k = p->ndim;
  const int64_t es = p->esize;
  if (k == 0) {
    *r = c->cu->MemcpyAsync((CUdeviceptr)p->dst, (CUdeviceptr)p->src, (size_t)es, c->stream);
    return true;
  }
  for (int32_t i = 0; i < k; i++)
    if (p->ss[i] < 0) return false; /* pitches are unsigned */
  if (p->ds[k - 1] != es || p->ss[k - 1] != es) return false;
  const int64_t width = p->n[k - 1] * es;
  if (k == 1) {
    *r = c->cu->MemcpyAsync((CUdeviceptr)p->dst, (CUdeviceptr)p->src, (size_t)width, c->stream);
    return true;
  }
  /* rows: each pitch must hold a row (a broadcast source does not) */
  if (p->ds[k - 2] < width || p->ss[k - 2] < width) return false;
  if (k == 2) {
    *r = copy_2d(c, p->dst, p->ds[0], p->src, p->ss[0], width, p->n[0]);
    return true;
  }
  if (k == 3 && p->ds[0] % p->ds[1] == 0 && p->ss[0] % p->ss[1] == 0 &&
      p->ds[0] / p->ds[1] >= p->n[1] && p->ss[0] / p->ss[1] >= p->n[1]) {
    *r = copy_3d(c, p, width);
    return true;
  }
  if (outer_count(p) > MAX_2D_CALLS) return false;
  int64_t idx[DLPX_MAX_NDIM] = {0};
  for (;;) {
    int64_t doff = 0, soff = 0;
    for (int32_t i = 0; i + 2 < k; i++) {
      doff += idx[i] * p->ds[i];
      soff += idx[i] * p->ss[i];
    }
    *r = copy_2d(c, p->dst + doff, p->ds[k - 2], p->src + soff, p->ss[k - 2], width,
                 p->n[k - 2]);
    if (*r != CUDA_SUCCESS) return true;
    int32_t i = k - 3;
    while (i >= 0 && ++idx[i] == p->n[i]) idx[i--] = 0;
    if (i < 0) return true;
  }
}

/* ---- staging --------------------------------------------------------------------------------- */

/* A host view of |t|: itself when the host can address it, else its byte
 * extent copied into a pinned block on the stream (for a destination, to
 * keep the bytes between its elements); *hold
 * gets the block's storage. */
static int host_view(const copier *c, const dlpx_tensor *t, dlpx_tensor **view,
                     dlpx_storage **hold) {
  *hold = NULL;
  if (dlpx__device_host((int32_t)t->dl.device.device_type) ||
      t->dl.device.device_type == kDLCUDAManaged) /* the host addresses it: a borrowed view */
    return dlpx_tensor_wrap(dlpx_tensor_data(t), (DLDevice){kDLCPU, 0}, t->dl.dtype, t->dl.ndim,
                            t->dl.shape, t->dl.strides, 0, NULL, NULL, view);
  int64_t lo, hi;
  dlpx_tensor_extent(t, &lo, &hi);
  dlpx_storage *s;
  int rc = dlpx_cuda_storage_alloc((DLDevice){kDLCUDAHost, 0}, (size_t)(hi - lo),
                                   (uintptr_t)c->stream, &s);
  if (rc) return rc;
  CUresult r = c->cu->MemcpyAsync((CUdeviceptr)s->data,
                                  (CUdeviceptr)((char *)dlpx_tensor_data(t) + lo),
                                  (size_t)(hi - lo), c->stream);
  if (r != CUDA_SUCCESS) {
    dlpx_storage_release(s);
    return dlpx__cu_fail(r, "cuMemcpyAsync (staging)");
  }
  rc = dlpx_tensor_from_storage(s, t->dl.dtype, t->dl.ndim, t->dl.shape, t->dl.strides, -lo, 0,
                                view);
  if (rc) {
    dlpx_storage_release(s);
    return rc;
  }
  *hold = s;
  return 0;
}

static int staged(const copier *c, const dlpx_tensor *dst, const dlpx_tensor *src) {
  dlpx_tensor *sv = NULL, *dv = NULL;
  dlpx_storage *sh = NULL, *dh = NULL;
  int rc = host_view(c, src, &sv, &sh);
  if (!rc) rc = host_view(c, dst, &dv, &dh);
  CUresult r = CUDA_SUCCESS;
  if (!rc) {
    r = c->cu->StreamSynchronize(c->stream);
    if (r != CUDA_SUCCESS) rc = dlpx__cu_fail(r, "cuStreamSynchronize (staging)");
  }
  if (!rc) rc = dlpx_tensor_copy_into(dv, sv);
  if (!rc && dh) {
    int64_t lo, hi;
    dlpx_tensor_extent(dst, &lo, &hi);
    r = c->cu->MemcpyAsync((CUdeviceptr)((char *)dlpx_tensor_data(dst) + lo),
                           (CUdeviceptr)dh->data, (size_t)(hi - lo), c->stream);
    if (r != CUDA_SUCCESS) rc = dlpx__cu_fail(r, "cuMemcpyAsync (staging)");
  }
  /* the pinned blocks go back to their pool behind an event on the stream */
  dlpx_tensor_free(sv);
  dlpx_tensor_free(dv);
  dlpx_storage_release(sh);
  dlpx_storage_release(dh);
  return rc;
}

/* ---- entry points ------------------------------------------------------------------------------ */

static int check_devices(const dlpx_tensor *dst, const dlpx_tensor *src, int *device) {
  int rc = copy_device(dst->dl.device, src->dl.device, device);
  if (rc) return rc;
  if (*device < 0)
    return dlpx__fail(DLPX_EDEVICE, "a copy between host tensors needs no CUDA: use "
                                    "dlpx_tensor_copy_into");
  return 0;
}

int dlpx_cuda_tensor_copy_into(const dlpx_tensor *dst, const dlpx_tensor *src,
                               uintptr_t stream) {
  int rc = dlpx__copy_check(dst, src);
  if (rc) return rc;
  int device;
  if ((rc = check_devices(dst, src, &device))) return rc;
  const int64_t ebits = dlpx__elem_bits(dst->dl.dtype, dst->flags);
  if (ebits != dlpx__elem_bits(src->dl.dtype, src->flags) ||
      (ebits % 8 && !(dlpx_tensor_is_c_contiguous(dst) && dlpx_tensor_is_c_contiguous(src))))
    return dlpx__fail(DLPX_ENOTSUP, "CUDA copies of packed sub-byte elements need two "
                                    "C-contiguous tensors of one packing");
  if (dlpx_tensor_numel(dst) == 0) return 0;
  if (stream == UINTPTR_MAX) stream = 0;
  const dlpx__cu_api *cu;
  if ((rc = dlpx__cu_enter(device, &cu))) return rc;
  copier c = {cu, dlpx__cu_stream(stream), (int)src->dl.device.device_type,
              (int)dst->dl.device.device_type};
  /* wait for the work that wrote src and the work still using dst */
  rc = dlpx__cu_order(cu, device, dlpx_cuda_storage_stream(src->storage), stream);
  if (!rc) rc = dlpx__cu_order(cu, device, dlpx_cuda_storage_stream(dst->storage), stream);
  if (!rc) {
    dlpx__copy_plan p;
    dlpx__copy_plan_build(&p, dst, src);
    if (ebits % 8) { /* contiguous packed elements: the bytes they occupy */
      p.ndim = 1;
      p.n[0] = (dlpx_tensor_numel(dst) * ebits + 7) / 8;
      p.ds[0] = p.ss[0] = p.esize = 1;
    }
    CUresult r = CUDA_SUCCESS;
    if (direct(&c, &p, &r)) {
      if (r != CUDA_SUCCESS) rc = dlpx__cu_fail(r, "queueing the CUDA copy");
    } else {
      rc = staged(&c, dst, src);
    }
  }
  /* later work on src's stream (a reuse of its block) waits for this read */
  if (!rc) rc = dlpx__cu_order(cu, device, stream, dlpx_cuda_storage_stream(src->storage));
  dlpx__cu_leave();
  if (!rc) dlpx__cuda_storage_mark(dst->storage, stream); /* ordered above */
  return rc;
}

int dlpx_cuda_tensor_to(const dlpx_tensor *src, DLDevice device, uintptr_t stream,
                        int synchronize, dlpx_tensor **out) {
  if (!src || !out) return dlpx__fail(DLPX_EINVAL, "src or out is NULL");
  int run_on;
  int rc = copy_device(src->dl.device, device, &run_on);
  if (rc) return rc;
  if (run_on < 0)
    return dlpx__fail(DLPX_EDEVICE, "a host-to-host copy needs no CUDA: use dlpx_tensor_copy");
  dlpx_tensor *t;
  uint32_t keep = src->flags & DLPX_TENSOR_SUBBYTE_PADDED;
  if (device.device_type == kDLCPU)
    rc = dlpx_tensor_new(src->dl.dtype, src->dl.ndim, src->dl.shape, keep, 0, &t);
  else if (keep)
    rc = dlpx__fail(DLPX_ENOTSUP, "padded sub-byte tensors stay on the host");
  else
    rc = dlpx_cuda_tensor_empty(device, src->dl.dtype, src->dl.ndim, src->dl.shape, stream, &t);
  if (rc) return rc;
  rc = dlpx_cuda_tensor_copy_into(t, src, stream);
  if (!rc && synchronize) rc = dlpx_cuda_stream_synchronize(run_on, stream);
  if (rc) {
    dlpx_tensor_free(t);
    return rc;
  }
  *out = t;
  return 0;
}

int dlpx_cuda_memcpy(int device, void *dst, const void *src, size_t nbytes, uintptr_t stream) {
  if ((!dst || !src) && nbytes) return dlpx__fail(DLPX_EINVAL, "dst or src is NULL");
  if (nbytes == 0) return 0;
  const dlpx__cu_api *cu;
  int rc = dlpx__cu_enter(device, &cu);
  if (rc) return rc;
  CUresult r = cu->MemcpyAsync((CUdeviceptr)dst, (CUdeviceptr)src, nbytes,
                               dlpx__cu_stream(stream == UINTPTR_MAX ? 0 : stream));
  if (r != CUDA_SUCCESS) return dlpx__cu_fail_leave(r, "cuMemcpyAsync");
  dlpx__cu_leave();
  return 0;
}

int dlpx_cuda_memset(int device, void *dst, int value, size_t nbytes, uintptr_t stream) {
  if (!dst && nbytes) return dlpx__fail(DLPX_EINVAL, "dst is NULL");
  if (nbytes == 0) return 0;
  const dlpx__cu_api *cu;
  int rc = dlpx__cu_enter(device, &cu);
  if (rc) return rc;
  CUresult r = cu->MemsetD8Async((CUdeviceptr)dst, (unsigned char)value, nbytes,
                                 dlpx__cu_stream(stream == UINTPTR_MAX ? 0 : stream));
  if (r != CUDA_SUCCESS) return dlpx__cu_fail_leave(r, "cuMemsetD8Async");
  dlpx__cu_leave();
  return 0;
}
