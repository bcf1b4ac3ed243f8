/* pool.c - the caching pools: one for device memory and one for pinned host
 * memory per device.  Requests are rounded to size classes (512 bytes
 * below 1 MiB, 2 MiB above: at most 2 MiB wasted per block, no powers of
 * two); a freed block waits in its class for reuse, at once on the stream
 * it was freed on and on another stream once an event recorded on that
 * stream (when another stream first asked for it) has completed.
 * Allocation and free of device memory on one stream never call the
 * driver.  Pinned blocks are different: the host writes them directly, so
 * a pinned block is reused only once an event recorded at its free (after
 * the copies queued on it) has completed, on any stream. */
#include "config.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../glibc_compat.h"
#include "cuda_int.h"

#define SMALL_LIMIT ((size_t)1 << 20)
#define SMALL_ROUND ((size_t)512)
#define LARGE_ROUND ((size_t)2 << 20)

typedef struct block {
  void *ptr;
  size_t size;      /* the size class */
  size_t requested; /* what the holder asked for */
  CUstream stream;  /* the stream it was last used on */
  CUevent event;    /* recorded on stream for another stream's reuse, or NULL */
  struct block *next;
} block;

typedef struct {
  size_t size;
  block *head;
} bucket;

typedef struct {
  pthread_mutex_t lock;
  bool ready;
  bucket *buckets; /* free blocks by class, sorted by size */
  size_t nbuckets, cap_buckets;
  block **live; /* blocks handed out: open addressing by address */
  size_t live_n, live_cap;
  dlpx_cuda_pool_stats st;
} pool;

static pool pools[2][DLPX__CUDA_MAX_DEVICES];
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static const char *const kind_names[2] = {"device", "pinned"};

size_t dlpx_cuda_pool_round(size_t n) {
  size_t unit = n < SMALL_LIMIT ? SMALL_ROUND : LARGE_ROUND;
  if (n == 0) return SMALL_ROUND;
  if (n > SIZE_MAX - unit) return 0;
  return (n + unit - 1) / unit * unit;
}

static pool *get_pool(int kind, int device) {
  if (device < 0 || device >= DLPX__CUDA_MAX_DEVICES) {
    dlpx__fail(DLPX_EDEVICE, "CUDA device %d is out of range", device);
    return NULL;
  }
  pool *p = &pools[kind][device];
  pthread_mutex_lock(&init_lock);
  if (!p->ready) {
    pthread_mutex_init(&p->lock, NULL);
    p->st.limit = -1;
    p->ready = true;
  }
  pthread_mutex_unlock(&init_lock);
  return p;
}

/* ---- the table of blocks handed out --------------------------------------------------- */

static size_t slot_of(const pool *p, const void *ptr) {
  uint64_t h = (uint64_t)(uintptr_t)ptr * 0x9E3779B97F4A7C15ull;
  return (size_t)(h >> 20) & (p->live_cap - 1);
}

static bool live_grow(pool *p) {
  size_t cap = p->live_cap ? p->live_cap * 2 : 256;
  block **old = p->live;
  size_t old_cap = p->live_cap;
  block **t = calloc(cap, sizeof *t);
  if (!t) return false;
  p->live = t;
  p->live_cap = cap;
  for (size_t i = 0; i < old_cap; i++) {
    if (!old[i]) continue;
    size_t j = slot_of(p, old[i]->ptr);
    while (t[j]) j = (j + 1) & (cap - 1);
    t[j] = old[i];
  }
  free(old);
  return true;
}

static bool live_add(pool *p, block *b) {
  if ((p->live_n + 1) * 2 > p->live_cap && !live_grow(p)) return false;
  size_t j = slot_of(p, b->ptr);
  while (p->live[j]) j = (j + 1) & (p->live_cap - 1);
  p->live[j] = b;
  p->live_n++;
  return true;
}

/* Removes and returns the block at |ptr| (backward-shift deletion). */
static block *live_take(pool *p, const void *ptr) {
  if (!p->live_cap) return NULL;
  size_t mask = p->live_cap - 1, j = slot_of(p, ptr);
  while (p->live[j] && p->live[j]->ptr != ptr) j = (j + 1) & mask;
  block *b = p->live[j];
  if (!b) return NULL;
  p->live[j] = NULL;
  p->live_n--;
  for (size_t k = (j + 1) & mask; p->live[k]; k = (k + 1) & mask) {
    size_t home = slot_of(p, p->live[k]->ptr);
    /* move k back to j when j lies cyclically in [home, k) */
    if (((k - home) & mask) >= ((k - j) & mask)) {
      p->live[j] = p->live[k];
      p->live[k] = NULL;
      j = k;
    }
  }
  return b;
}

/* ---- free blocks by class ------------------------------------------------------------------ */

static bucket *find_bucket(pool *p, size_t size, bool create) {
  size_t lo = 0, hi = p->nbuckets;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (p->buckets[mid].size < size)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo < p->nbuckets && p->buckets[lo].size == size) return &p->buckets[lo];
  if (!create) return NULL;
  if (p->nbuckets == p->cap_buckets) {
    size_t cap = p->cap_buckets ? p->cap_buckets * 2 : 32;
    bucket *nb = realloc(p->buckets, cap * sizeof *nb);
    if (!nb) return NULL;
    p->buckets = nb;
    p->cap_buckets = cap;
  }
  memmove(&p->buckets[lo + 1], &p->buckets[lo], (p->nbuckets - lo) * sizeof *p->buckets);
  p->buckets[lo] = (bucket){size, NULL};
  p->nbuckets++;
  return &p->buckets[lo];
}

/* Unlinks the first block of |bk| freed on |stream|, or NULL. */
static block *take_same_stream(bucket *bk, CUstream stream) {
  for (block **pp = &bk->head; *pp; pp = &(*pp)->next) {
    if ((*pp)->stream == stream) {
      block *b = *pp;
      *pp = b->next;
      return b;
    }
  }
  return NULL;
}

static void event_done(pool *p, block *b, const dlpx__cu_api *cu, int device) {
  if (!b->event) return;
  dlpx__cu_event_put(cu, device, b->event);
  b->event = NULL;
  p->st.active_bytes -= (int64_t)b->size;
}

/* Unlinks a block of |bk| whose stream's work is done, for another stream;
 * records events on the streams of the others for later calls.  Runs
 * inside the device's context. */
static block *take_ready(pool *p, bucket *bk, const dlpx__cu_api *cu, int device) {
  for (block **pp = &bk->head; *pp; pp = &(*pp)->next) {
    block *b = *pp;
    if (!b->event) {
      if (dlpx__cu_event_get(cu, device, &b->event)) continue;
      if (cu->EventRecord(b->event, b->stream) != CUDA_SUCCESS) {
        (void)cu->EventDestroy(b->event); /* the stream is gone or broken: keep it cached */
        b->event = NULL;
        continue;
      }
      p->st.active_bytes += (int64_t)b->size;
    }
    if (cu->EventQuery(b->event) == CUDA_SUCCESS) {
      event_done(p, b, cu, device);
      *pp = b->next;
      return b;
    }
  }
  return NULL;
}

static void peak(int64_t *peak_value, int64_t now) {
  if (now > *peak_value) *peak_value = now;
}

static void hand_out(pool *p, block *b, size_t requested, CUstream stream) {
  b->requested = requested;
  b->stream = stream;
  b->next = NULL;
  p->st.allocated_bytes += (int64_t)b->size;
  p->st.active_bytes += (int64_t)b->size;
  p->st.requested_bytes += (int64_t)requested;
  p->st.allocations++;
  p->st.allocation_count++;
  peak(&p->st.allocated_bytes_peak, p->st.allocated_bytes);
  peak(&p->st.active_bytes_peak, p->st.active_bytes);
}

/* ---- talking to the driver (inside the context, under the lock) ------------------------------ */

static CUresult driver_alloc(const dlpx__cu_api *cu, int kind, size_t size, void **ptr) {
  if (kind == DLPX__POOL_PINNED) return cu->MemHostAlloc(ptr, size, CU_MEMHOSTALLOC_PORTABLE);
  CUdeviceptr d = 0;
  CUresult r = cu->MemAlloc(&d, size);
  *ptr = (void *)d;
  return r;
}

static void driver_free(const dlpx__cu_api *cu, int kind, void *ptr) {
  if (kind == DLPX__POOL_PINNED)
    (void)cu->MemFreeHost(ptr);
  else
    (void)cu->MemFree((CUdeviceptr)ptr);
}

/* Frees every cached block, after waiting for the device (the driver's
 * frees would wait anyway). */
static CUresult flush(pool *p, int kind, int device, const dlpx__cu_api *cu) {
  p->st.cache_flushes++;
  bool any = false;
  for (size_t i = 0; i < p->nbuckets && !any; i++) any = p->buckets[i].head != NULL;
  if (!any) return CUDA_SUCCESS;
  CUresult r = cu->CtxSynchronize();
  if (r != CUDA_SUCCESS) return r;
  for (size_t i = 0; i < p->nbuckets; i++) {
    while (p->buckets[i].head) {
      block *b = p->buckets[i].head;
      p->buckets[i].head = b->next;
      event_done(p, b, cu, device);
      driver_free(cu, kind, b->ptr);
      p->st.reserved_bytes -= (int64_t)b->size;
      p->st.segments--;
      p->st.segment_free_count++;
      free(b);
    }
  }
  p->nbuckets = 0;
  return CUDA_SUCCESS;
}

static int out_of_memory(pool *p, int kind, int device, size_t size, const dlpx__cu_api *cu,
                         const char *why) {
  size_t free_b = 0, total = 0;
  if (kind == DLPX__POOL_DEVICE) (void)cu->MemGetInfo(&free_b, &total);
  p->st.oom_count++;
  return dlpx__fail(DLPX_ENOMEM,
                    "CUDA out of memory: cannot allocate %zu bytes of %s memory on device %d "
                    "(%s); the pool has %" PRId64 " bytes allocated and %" PRId64
                    " reserved, limit %" PRId64 "%s%zu of %zu bytes free on the device",
                    size, kind_names[kind], device, why, p->st.allocated_bytes,
                    p->st.reserved_bytes, p->st.limit, kind == DLPX__POOL_DEVICE ? "; " : "",
                    free_b, total);
}

static bool within_limit(const pool *p, size_t size) {
  return p->st.limit < 0 || p->st.reserved_bytes + (int64_t)size <= p->st.limit;
}

/* A new block from the driver, emptying the cache and trying once more
 * when memory (or the limit) runs out. */
static int grow(pool *p, int kind, int device, size_t size, const dlpx__cu_api *cu, block **out) {
  block *b = malloc(sizeof *b);
  if (!b) return dlpx__fail(DLPX_ENOMEM, "cannot allocate a pool block record");
  void *ptr = NULL;
  CUresult r = CUDA_ERROR_OUT_OF_MEMORY;
  for (int attempt = 0; attempt < 2; attempt++) {
    if (attempt) {
      CUresult fr = flush(p, kind, device, cu);
      if (fr != CUDA_SUCCESS) {
        free(b);
        return dlpx__cu_fail(fr, "emptying the CUDA cache");
      }
    }
    if (!within_limit(p, size)) continue;
    r = driver_alloc(cu, kind, size, &ptr);
    if (r != CUDA_ERROR_OUT_OF_MEMORY) break;
  }
  if (!within_limit(p, size)) {
    free(b);
    return out_of_memory(p, kind, device, size, cu, "over the pool's limit");
  }
  if (r != CUDA_SUCCESS) {
    free(b);
    if (r == CUDA_ERROR_OUT_OF_MEMORY)
      return out_of_memory(p, kind, device, size, cu, "the driver has none");
    return dlpx__cu_fail(r, kind == DLPX__POOL_PINNED ? "cuMemHostAlloc" : "cuMemAlloc");
  }
  *b = (block){ptr, size, 0, NULL, NULL, NULL};
  p->st.reserved_bytes += (int64_t)size;
  peak(&p->st.reserved_bytes_peak, p->st.reserved_bytes);
  p->st.segments++;
  p->st.segment_alloc_count++;
  *out = b;
  return 0;
}

/* ---- alloc and free ------------------------------------------------------------------------------ */

int dlpx__pool_alloc(int kind, int device, size_t nbytes, uintptr_t stream_value, void **ptr) {
  size_t size = dlpx_cuda_pool_round(nbytes);
  if (!size || size > (size_t)INT64_MAX)
    return dlpx__fail(DLPX_EOVERFLOW, "a CUDA allocation of %zu bytes is too large", nbytes);
  pool *p = get_pool(kind, device);
  if (!p) return DLPX_EDEVICE;
  CUstream stream = dlpx__cu_stream(stream_value);
  /* fast path: a block freed on this stream, no driver call */
  pthread_mutex_lock(&p->lock);
  bucket *bk = find_bucket(p, size, false);
  block *b = bk && kind == DLPX__POOL_DEVICE ? take_same_stream(bk, stream) : NULL;
  if (b) {
    if (live_add(p, b)) {
      hand_out(p, b, nbytes, stream);
      pthread_mutex_unlock(&p->lock);
      *ptr = b->ptr;
      return 0;
    }
    b->next = bk->head; /* no room to track it: put it back */
    bk->head = b;
    pthread_mutex_unlock(&p->lock);
    return dlpx__fail(DLPX_ENOMEM, "cannot grow the pool's block table");
  }
  pthread_mutex_unlock(&p->lock);

  const dlpx__cu_api *cu;
  int rc = dlpx__cu_enter(device, &cu);
  if (rc) return rc;
  pthread_mutex_lock(&p->lock);
  bk = find_bucket(p, size, false);
  b = bk && kind == DLPX__POOL_DEVICE ? take_same_stream(bk, stream) : NULL;
  if (!b && bk) b = take_ready(p, bk, cu, device);
  if (!b) rc = grow(p, kind, device, size, cu, &b);
  if (!rc && !live_add(p, b)) {
    driver_free(cu, kind, b->ptr); /* never handed out: give it straight back */
    p->st.reserved_bytes -= (int64_t)b->size;
    p->st.segments--;
    p->st.segment_free_count++;
    free(b);
    rc = dlpx__fail(DLPX_ENOMEM, "cannot grow the pool's block table");
  }
  if (!rc) {
    hand_out(p, b, nbytes, stream);
    *ptr = b->ptr;
  }
  pthread_mutex_unlock(&p->lock);
  dlpx__cu_leave();
  return rc;
}

/* For a pinned block: an event after the work queued on |stream| so far
 * (NULL when the driver fails: the block then gets one when asked for). */
static CUevent pinned_event(int device, CUstream stream) {
  const dlpx__cu_api *cu;
  CUevent ev = NULL;
  dlpx__error_state saved;
  dlpx__error_save(&saved);
  if (dlpx__cu_enter(device, &cu) == 0) {
    if (dlpx__cu_event_get(cu, device, &ev) == 0 && cu->EventRecord(ev, stream) != CUDA_SUCCESS) {
      (void)cu->EventDestroy(ev);
      ev = NULL;
    }
    dlpx__cu_leave();
  }
  dlpx__error_restore(&saved);
  return ev;
}

int dlpx__pool_free(int kind, int device, void *ptr, uintptr_t stream_value) {
  pool *p = get_pool(kind, device);
  if (!p) return DLPX_EDEVICE;
  CUevent ev = kind == DLPX__POOL_PINNED ? pinned_event(device, dlpx__cu_stream(stream_value)) : NULL;
  pthread_mutex_lock(&p->lock);
  block *b = live_take(p, ptr);
  if (!b) {
    pthread_mutex_unlock(&p->lock);
    if (ev) dlpx__cu_event_put(dlpx__cu(), device, ev);
    return dlpx__fail(DLPX_EINVAL, "%p is no block of the %s pool of device %d", ptr,
                      kind_names[kind], device);
  }
  p->st.allocated_bytes -= (int64_t)b->size;
  p->st.active_bytes -= (int64_t)b->size;
  p->st.requested_bytes -= (int64_t)b->requested;
  p->st.allocations--;
  p->st.free_count++;
  b->stream = dlpx__cu_stream(stream_value);
  if (ev) {
    b->event = ev;
    p->st.active_bytes += (int64_t)b->size;
  }
  bucket *bk = find_bucket(p, b->size, true);
  if (!bk) {
    /* no memory for a new class: leave the block out of the cache (it is
     * still reserved and counted; empty_cache cannot see it, a small leak
     * only under memory exhaustion of the host) */
    pthread_mutex_unlock(&p->lock);
    free(b);
    return 0;
  }
  b->next = bk->head;
  bk->head = b;
  pthread_mutex_unlock(&p->lock);
  return 0;
}

/* ---- public ------------------------------------------------------------------------------------- */

static int pool_kind(DLDevice device, int *kind) {
  if (device.device_type == kDLCUDA)
    *kind = DLPX__POOL_DEVICE;
  else if (device.device_type == kDLCUDAHost)
    *kind = DLPX__POOL_PINNED;
  else
    return dlpx__fail(DLPX_EDEVICE, "device type %d has no dlpx pool (kDLCUDA, kDLCUDAHost)",
                      (int)device.device_type);
  return 0;
}

int dlpx_cuda_pool_alloc(DLDevice device, size_t nbytes, uintptr_t stream, void **ptr) {
  if (!ptr) return dlpx__fail(DLPX_EINVAL, "ptr is NULL");
  int kind = 0, rc = pool_kind(device, &kind);
  return rc ? rc : dlpx__pool_alloc(kind, device.device_id, nbytes, stream, ptr);
}

int dlpx_cuda_pool_free(DLDevice device, void *ptr, uintptr_t stream) {
  int kind = 0, rc = pool_kind(device, &kind);
  return rc ? rc : dlpx__pool_free(kind, device.device_id, ptr, stream);
}

int dlpx_cuda_pool_stats_get(DLDevice device, dlpx_cuda_pool_stats *out) {
  if (!out) return dlpx__fail(DLPX_EINVAL, "out is NULL");
  int kind = 0, rc = pool_kind(device, &kind);
  if (rc) return rc;
  pool *p = get_pool(kind, device.device_id);
  if (!p) return DLPX_EDEVICE;
  pthread_mutex_lock(&p->lock);
  *out = p->st;
  pthread_mutex_unlock(&p->lock);
  return 0;
}

int dlpx_cuda_pool_reset_peaks(DLDevice device) {
  int kind = 0, rc = pool_kind(device, &kind);
  if (rc) return rc;
  pool *p = get_pool(kind, device.device_id);
  if (!p) return DLPX_EDEVICE;
  pthread_mutex_lock(&p->lock);
  p->st.allocated_bytes_peak = p->st.allocated_bytes;
  p->st.active_bytes_peak = p->st.active_bytes;
  p->st.reserved_bytes_peak = p->st.reserved_bytes;
  pthread_mutex_unlock(&p->lock);
  return 0;
}

int dlpx_cuda_empty_cache(DLDevice device) {
  int kind = 0, rc = pool_kind(device, &kind);
  if (rc) return rc;
  pool *p = get_pool(kind, device.device_id);
  if (!p) return DLPX_EDEVICE;
  pthread_mutex_lock(&p->lock);
  bool any = false;
  for (size_t i = 0; i < p->nbuckets && !any; i++) any = p->buckets[i].head != NULL;
  pthread_mutex_unlock(&p->lock);
  if (!any) return 0; /* nothing cached: no driver needed (nor present) */
  const dlpx__cu_api *cu;
  rc = dlpx__cu_enter(device.device_id, &cu);
  if (rc) return rc;
  pthread_mutex_lock(&p->lock);
  CUresult r = flush(p, kind, device.device_id, cu);
  pthread_mutex_unlock(&p->lock);
  dlpx__cu_leave();
  return r == CUDA_SUCCESS ? 0 : dlpx__cu_fail(r, "emptying the CUDA cache");
}

int dlpx_cuda_set_memory_limit(DLDevice device, int64_t limit) {
  if (limit < -1) return dlpx__fail(DLPX_EINVAL, "memory limit %" PRId64 " is below -1", limit);
  int kind = 0, rc = pool_kind(device, &kind);
  if (rc) return rc;
  pool *p = get_pool(kind, device.device_id);
  if (!p) return DLPX_EDEVICE;
  pthread_mutex_lock(&p->lock);
  p->st.limit = limit;
  pthread_mutex_unlock(&p->lock);
  return 0;
}
