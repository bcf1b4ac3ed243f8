/*
 * cuda_int.h - what the files of src/cuda/ share: the driver opened at run
 * time and the primary contexts (loader.c), streams and the event cache
 * (stream.c), the caching pools (pool.c) and the storages over them
 * (memory.c).  copy.c, ipc.c and load.c build on these.
 */
#ifndef DLPX_CUDA_CUDA_INT_H
#define DLPX_CUDA_CUDA_INT_H

#include <dlpx/cuda.h>

#include "../internal.h"
#include "driver.h"

/* The most devices dlpx addresses (ordinals 0 .. DLPX__CUDA_MAX_DEVICES-1). */
#define DLPX__CUDA_MAX_DEVICES 64

/* ---- loader.c ------------------------------------------------------------------ */

/* The driver's entry points, loaded and cuInit'ed on first use
 * (thread-safe); NULL with DLPX_ECUDA recorded when there is no usable
 * driver.  $DLPX_LIBCUDA names the library file (tests: the double). */
const dlpx__cu_api *dlpx__cu(void);

/* Turns a failed driver call into a dlpx error naming |what| and the
 * driver's error: DLPX_ENOMEM, DLPX_EDEVICE, DLPX_ENOTSUP, DLPX_ESTATE
 * (not ready) or DLPX_ECUDA.  |r| must not be CUDA_SUCCESS. */
int dlpx__cu_fail(CUresult r, const char *what);

/* Makes |device|'s primary context current on this thread (retained once
 * per process), remembering the caller's to put back in dlpx__cu_leave.
 * On success *api is the driver.  Returns 0, DLPX_ECUDA, DLPX_EDEVICE
 * or DLPX_ECUDA; on failure nothing is to be left. */
int dlpx__cu_enter(int device, const dlpx__cu_api **api);
void dlpx__cu_leave(void);

/* dlpx__cu_fail, then leave. */
int dlpx__cu_fail_leave(CUresult r, const char *what);

/* DLPack stream values to the driver's: 0 and 1 legacy, 2 per thread. */
static inline CUstream dlpx__cu_stream(uintptr_t s) {
  return s == 0 ? CU_STREAM_LEGACY : (CUstream)s;
}

/* ---- stream.c ------------------------------------------------------------------- */

/* The ordering step of dlpx_cuda_stream_order, inside dlpx__cu_enter. */
int dlpx__cu_order(const dlpx__cu_api *cu, int device, uintptr_t producer, uintptr_t consumer);

/* An event from the cache of |device| (DISABLE_TIMING), and back. */
int dlpx__cu_event_get(const dlpx__cu_api *cu, int device, CUevent *out);
void dlpx__cu_event_put(const dlpx__cu_api *cu, int device, CUevent ev);

/* ---- pool.c ---------------------------------------------------------------------- */

/* Pool kinds: device memory and pinned host memory. */
enum { DLPX__POOL_DEVICE = 0, DLPX__POOL_PINNED = 1 };

/* A block from the pool of |device| of |kind|, for |stream|. */
int dlpx__pool_alloc(int kind, int device, size_t nbytes, uintptr_t stream, void **ptr);
/* Gives back a block handed out for |nbytes|; it is reused at once on
 * |stream|, elsewhere after an event. */
int dlpx__pool_free(int kind, int device, void *ptr, uintptr_t stream);

/* ---- memory.c --------------------------------------------------------------------- */

/* True for storages made by dlpx_cuda_storage_alloc / host_register. */
bool dlpx__cuda_storage(const dlpx_storage *s);
/* Records that the memory of a storage on a CUDA device is now ordered on
 * |stream|, which the caller has already ordered after the old one
 * (-1: unchanged).  Other storages: nothing. */
void dlpx__cuda_storage_mark(dlpx_storage *storage, uintptr_t stream);

#endif /* DLPX_CUDA_CUDA_INT_H */
