/* stream.c - streams and events, the stream ordering every CUDA exchange
 * goes through (an event recorded on the producer's stream, waited for on
 * the consumer's: no host block, no device-wide sync), and each thread's
 * current stream. */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>

#include "../glibc_compat.h"
#include "cuda_int.h"

/* ---- streams ---------------------------------------------------------------------- */

int dlpx_cuda_stream_create(int device, int non_blocking, uintptr_t *out) {
  if (!out) return dlpx__fail(DLPX_EINVAL, "out is NULL");
  const dlpx__cu_api *cu;
  int rc = dlpx__cu_enter(device, &cu);
  if (rc) return rc;
  CUstream s;
  CUresult r = cu->StreamCreate(&s, non_blocking ? CU_STREAM_NON_BLOCKING : 0u);
  if (r != CUDA_SUCCESS) return dlpx__cu_fail_leave(r, "cuStreamCreate");
  dlpx__cu_leave();
  *out = (uintptr_t)s;
  return 0;
}

int dlpx_cuda_stream_destroy(int device, uintptr_t stream) {
  if (stream <= DLPX_CUDA_STREAM_PER_THREAD || stream == UINTPTR_MAX)
    return dlpx__fail(DLPX_EINVAL, "stream %ju is a default stream: it cannot be destroyed",
                      (uintmax_t)stream);
  const dlpx__cu_api *cu;
  int rc = dlpx__cu_enter(device, &cu);
  if (rc) return rc;
  CUresult r = cu->StreamDestroy((CUstream)stream);
  if (r != CUDA_SUCCESS) return dlpx__cu_fail_leave(r, "cuStreamDestroy");
  dlpx__cu_leave();
  return 0;
}

int dlpx_cuda_stream_synchronize(int device, uintptr_t stream) {
  const dlpx__cu_api *cu;
  int rc = dlpx__cu_enter(device, &cu);
  if (rc) return rc;
  CUresult r = cu->StreamSynchronize(dlpx__cu_stream(stream));
  if (r != CUDA_SUCCESS) return dlpx__cu_fail_leave(r, "cuStreamSynchronize");
  dlpx__cu_leave();
  return 0;
}

int dlpx_cuda_stream_query(int device, uintptr_t stream) {
  const dlpx__cu_api *cu;
  int rc = dlpx__cu_enter(device, &cu);
  if (rc) return rc;
  CUresult r = cu->StreamQuery(dlpx__cu_stream(stream));
  if (r != CUDA_SUCCESS && r != CUDA_ERROR_NOT_READY)
    return dlpx__cu_fail_leave(r, "cuStreamQuery");
  dlpx__cu_leave();
  return r == CUDA_SUCCESS;
}

/* ---- events ----------------------------------------------------------------------- */

static unsigned event_flags(uint32_t flags) {
  unsigned f = 0;
  if (!(flags & DLPX_CUDA_EVENT_TIMING)) f |= CU_EVENT_DISABLE_TIMING;
  if (flags & DLPX_CUDA_EVENT_BLOCKING_SYNC) f |= CU_EVENT_BLOCKING_SYNC;
  if (flags & DLPX_CUDA_EVENT_INTERPROCESS) f |= CU_EVENT_INTERPROCESS;
  return f;
}

int dlpx_cuda_event_create(int device, uint32_t flags, uintptr_t *out) {
  if (!out) return dlpx__fail(DLPX_EINVAL, "out is NULL");
  const uint32_t known =
      DLPX_CUDA_EVENT_TIMING | DLPX_CUDA_EVENT_BLOCKING_SYNC | DLPX_CUDA_EVENT_INTERPROCESS;
  if (flags & ~known) return dlpx__fail(DLPX_EINVAL, "unknown event flags 0x%x", flags & ~known);
  if ((flags & DLPX_CUDA_EVENT_INTERPROCESS) && (flags & DLPX_CUDA_EVENT_TIMING))
    return dlpx__fail(DLPX_EINVAL, "an interprocess event cannot be timed");
  const dlpx__cu_api *cu;
  int rc = dlpx__cu_enter(device, &cu);
  if (rc) return rc;
  CUevent ev;
  CUresult r = cu->EventCreate(&ev, event_flags(flags));
  if (r != CUDA_SUCCESS) return dlpx__cu_fail_leave(r, "cuEventCreate");
  dlpx__cu_leave();
  *out = (uintptr_t)ev;
  return 0;
}

/* The body of the event calls that take one event and maybe a stream. */
typedef enum { EV_DESTROY, EV_RECORD, EV_WAIT, EV_SYNC, EV_QUERY } ev_op;

static int event_call(int device, uintptr_t event, uintptr_t stream, ev_op op) {
  static const char *const names[] = {"cuEventDestroy", "cuEventRecord", "cuStreamWaitEvent",
                                      "cuEventSynchronize", "cuEventQuery"};
  if (!event) return dlpx__fail(DLPX_EINVAL, "event is 0");
  const dlpx__cu_api *cu;
  int rc = dlpx__cu_enter(device, &cu);
  if (rc) return rc;
  CUevent ev = (CUevent)event;
  CUresult r = op == EV_DESTROY  ? cu->EventDestroy(ev)
               : op == EV_RECORD ? cu->EventRecord(ev, dlpx__cu_stream(stream))
               : op == EV_WAIT   ? cu->StreamWaitEvent(dlpx__cu_stream(stream), ev, 0)
               : op == EV_SYNC   ? cu->EventSynchronize(ev)
                                 : cu->EventQuery(ev);
  if (op == EV_QUERY && r == CUDA_ERROR_NOT_READY) {
    dlpx__cu_leave();
    return 0;
  }
  if (r != CUDA_SUCCESS) return dlpx__cu_fail_leave(r, names[op]);
  dlpx__cu_leave();
  return op == EV_QUERY ? 1 : 0;
}

int dlpx_cuda_event_destroy(int device, uintptr_t event) {
  return event_call(device, event, 0, EV_DESTROY);
}
int dlpx_cuda_event_record(int device, uintptr_t event, uintptr_t stream) {
  return event_call(device, event, stream, EV_RECORD);
}
int dlpx_cuda_stream_wait_event(int device, uintptr_t stream, uintptr_t event) {
  return event_call(device, event, stream, EV_WAIT);
}
int dlpx_cuda_event_synchronize(int device, uintptr_t event) {
  return event_call(device, event, 0, EV_SYNC);
}
int dlpx_cuda_event_query(int device, uintptr_t event) {
  return event_call(device, event, 0, EV_QUERY);
}

int dlpx_cuda_event_elapsed(int device, uintptr_t start, uintptr_t end, float *ms) {
  if (!start || !end || !ms) return dlpx__fail(DLPX_EINVAL, "an event or ms is 0/NULL");
  const dlpx__cu_api *cu;
  int rc = dlpx__cu_enter(device, &cu);
  if (rc) return rc;
  CUresult r = cu->EventElapsedTime(ms, (CUevent)start, (CUevent)end);
  if (r != CUDA_SUCCESS) return dlpx__cu_fail_leave(r, "cuEventElapsedTime");
  dlpx__cu_leave();
  return 0;
}

/* ---- the event cache and stream ordering ---------------------------------------------------
 *
 * Ordering records an event on the producer and makes the consumer wait
 * for it; the event can go back to the cache at once, since a wait binds
 * to the record made before it. */

#define CACHE_MAX 64

static struct {
  pthread_mutex_t lock;
  CUevent events[CACHE_MAX];
  int n;
} cache[DLPX__CUDA_MAX_DEVICES];

static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static void cache_init(void) {
  for (int i = 0; i < DLPX__CUDA_MAX_DEVICES; i++) pthread_mutex_init(&cache[i].lock, NULL);
}

int dlpx__cu_event_get(const dlpx__cu_api *cu, int device, CUevent *out) {
  pthread_once(&cache_once, cache_init);
  pthread_mutex_lock(&cache[device].lock);
  CUevent ev = cache[device].n ? cache[device].events[--cache[device].n] : NULL;
  pthread_mutex_unlock(&cache[device].lock);
  if (ev) {
    *out = ev;
    return 0;
  }
  CUresult r = cu->EventCreate(out, CU_EVENT_DISABLE_TIMING);
  return r == CUDA_SUCCESS ? 0 : dlpx__cu_fail(r, "cuEventCreate");
}

void dlpx__cu_event_put(const dlpx__cu_api *cu, int device, CUevent ev) {
  pthread_once(&cache_once, cache_init);
  pthread_mutex_lock(&cache[device].lock);
  if (cache[device].n < CACHE_MAX) {
    cache[device].events[cache[device].n++] = ev;
    ev = NULL;
  }
  pthread_mutex_unlock(&cache[device].lock);
  if (ev) (void)cu->EventDestroy(ev);
}

int dlpx__cu_order(const dlpx__cu_api *cu, int device, uintptr_t producer, uintptr_t consumer) {
  if (producer == UINTPTR_MAX || consumer == UINTPTR_MAX) return 0;
  if (dlpx__cu_stream(producer) == dlpx__cu_stream(consumer)) return 0;
  CUevent ev;
  int rc = dlpx__cu_event_get(cu, device, &ev);
  if (rc) return rc;
  CUresult r = cu->EventRecord(ev, dlpx__cu_stream(producer));
  if (r == CUDA_SUCCESS) r = cu->StreamWaitEvent(dlpx__cu_stream(consumer), ev, 0);
  if (r != CUDA_SUCCESS) {
    (void)cu->EventDestroy(ev); /* its state is unknown: not back to the cache */
    return dlpx__cu_fail(r, "ordering one stream after another");
  }
  dlpx__cu_event_put(cu, device, ev);
  return 0;
}

int dlpx_cuda_stream_order(int device, uintptr_t producer, uintptr_t consumer) {
  if (producer == UINTPTR_MAX || consumer == UINTPTR_MAX ||
      dlpx__cu_stream(producer) == dlpx__cu_stream(consumer))
    return 0;
  const dlpx__cu_api *cu;
  int rc = dlpx__cu_enter(device, &cu);
  if (rc) return rc;
  rc = dlpx__cu_order(cu, device, producer, consumer);
  dlpx__cu_leave();
  return rc;
}

/* ---- current streams ---------------------------------------------------------------------- */

static _Thread_local uintptr_t current[DLPX__CUDA_MAX_DEVICES];

uintptr_t dlpx_cuda_current_stream(int device) {
  return device >= 0 && device < DLPX__CUDA_MAX_DEVICES ? current[device] : 0;
}

int dlpx_cuda_set_current_stream(int device, uintptr_t stream) {
  if (device < 0 || device >= DLPX__CUDA_MAX_DEVICES)
    return dlpx__fail(DLPX_EDEVICE, "CUDA device %d is out of range", device);
  current[device] = stream;
  return 0;
}
