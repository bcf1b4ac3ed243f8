/* test_cuda.c - CUDA through the driver test double (tests/fakecuda.c,
 * loaded with DLPX_LIBCUDA): loading and its failures, devices, streams and
 * events, stream ordering (a stale read without it), the caching pools
 * (reuse by stream, statistics, limits, out of memory, leaks over many
 * cycles), copies of every layout kind between host, pinned, managed and
 * device memory, registered memory, and injected failures of every driver
 * entry dlpx calls on those paths. */
#include "config.h"

#include <dirent.h>
#include <dlfcn.h>
#include <stdbool.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

#ifndef FAKECUDA_PATH
#error "FAKECUDA_PATH names the driver double"
#endif

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the double's control API --------------------------------------------------- */

static struct {
  void (*fail)(const char *, int, int);
  void (*fail_always)(const char *, int);
  long (*calls)(const char *);
  void (*set_delay_us)(unsigned);
  long long (*live_bytes)(int);
  long (*live_allocations)(void);
  long (*live_events)(void);
  long (*live_streams)(void);
  int (*is_device_pointer)(uintptr_t);
} fake;

static bool load_fake(void) {
  void *h = dlopen(FAKECUDA_PATH, RTLD_NOW | RTLD_LOCAL);
  if (!h) return false;
#define SYM(field, name)                \
  do {                                  \
    void *s_ = dlsym(h, name);          \
    if (!s_) return false;              \
    memcpy(&fake.field, &s_, sizeof s_); \
  } while (0)
  SYM(fail, "fakecuda_fail");
  SYM(fail_always, "fakecuda_fail_always");
  SYM(calls, "fakecuda_calls");
  SYM(set_delay_us, "fakecuda_set_delay_us");
  SYM(live_bytes, "fakecuda_live_bytes");
  SYM(live_allocations, "fakecuda_live_allocations");
  SYM(live_events, "fakecuda_live_events");
  SYM(live_streams, "fakecuda_live_streams");
  SYM(is_device_pointer, "fakecuda_is_device_pointer");
#undef SYM
  return true; /* the handle stays open: the same instance libdlpx opens */
}

static const DLDevice GPU0 = {kDLCUDA, 0}, GPU1 = {kDLCUDA, 1}, PINNED = {kDLCUDAHost, 0},
                      MANAGED = {kDLCUDAManaged, 0}, CPU = {kDLCPU, 0};
static const DLDataType F32 = {kDLFloat, 32, 1}, U8 = {kDLUInt, 8, 1};

/* Runs |fn| in a child process with |env| ("NAME=value") set first; the
 * child's exit status is fn's (0: passed). */
static int in_child(const char *name, const char *value, int (*fn)(void)) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    setenv(name, value, 1);
    _exit(fn());
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

/* ---- loading ------------------------------------------------------------------------ */

static int child_no_driver(void) {
  if (dlpx_cuda_available()) return 1;
  if (!strstr(dlpx_last_error(), "no CUDA driver")) return 2;
  int n = -1;
  if (dlpx_cuda_device_count(&n) != DLPX_ECUDA || n != 0) return 3;
  dlpx_storage *s = NULL;
  if (dlpx_cuda_storage_alloc(GPU0, 16, 0, &s) != DLPX_ECUDA || s) return 4;
  uintptr_t st;
  if (dlpx_cuda_stream_create(0, 0, &st) != DLPX_ECUDA) return 5;
  /* the pools' statistics need no driver */
  dlpx_cuda_pool_stats ps;
  if (dlpx_cuda_pool_stats_get(GPU0, &ps) != 0 || ps.allocated_bytes != 0) return 6;
  if (dlpx_cuda_empty_cache(GPU0) != 0) return 7;
  return 0;
}

static int child_init_fails(void) {
  fake.fail("cuInit", 0, 100); /* CUDA_ERROR_NO_DEVICE */
  if (dlpx_cuda_available()) return 1;
  if (!strstr(dlpx_last_error(), "cuInit")) return 2;
  if (!strstr(dlpx_last_error(), "CUDA_ERROR_NO_DEVICE")) return 3;
  return 0;
}

static int child_no_getproc(void) {
  /* entry points come from dlsym when cuGetProcAddress refuses */
  if (!dlpx_cuda_available()) return 1;
  dlpx_storage *s;
  if (dlpx_cuda_storage_alloc(GPU0, 100, 0, &s)) return 2;
  dlpx_storage_release(s);
  return 0;
}

static int child_no_devices(void) {
  if (dlpx_cuda_available()) return 1;
  return strstr(dlpx_last_error(), "no GPU") ? 0 : 2;
}

static void test_loading_failures(void) {
  ASSERT_EQ(in_child("DLPX_LIBCUDA", "/nonexistent/libcuda.so.1", child_no_driver), 0);
  ASSERT_EQ(in_child("FAKECUDA_UNUSED", "", child_init_fails), 0);
  ASSERT_EQ(in_child("FAKECUDA_NO_GETPROC", "1", child_no_getproc), 0);
  ASSERT_EQ(in_child("FAKECUDA_DEVICES", "0", child_no_devices), 0);
}

/* ---- devices -------------------------------------------------------------------------- */

static void test_devices(void) {
  ASSERT_EQ(dlpx_cuda_available(), 1);
  int n = 0, v = 0;
  ASSERT_OK(dlpx_cuda_device_count(&n));
  ASSERT_EQ(n, 2);
  ASSERT_OK(dlpx_cuda_driver_version(&v));
  ASSERT_TRUE(v >= 12000);
  char name[64];
  size_t total = 0, free_b = 0;
  ASSERT_OK(dlpx_cuda_device_info(1, name, sizeof name, &total));
  ASSERT_TRUE(strstr(name, "1") != NULL);
  ASSERT_TRUE(total > 0);
  ASSERT_OK(dlpx_cuda_mem_get_info(0, &free_b, &total));
  ASSERT_TRUE(free_b <= total);
  ASSERT_RC(DLPX_EDEVICE, dlpx_cuda_device_info(2, name, sizeof name, NULL));
  ASSERT_MSG("has 2");
  ASSERT_RC(DLPX_EDEVICE, dlpx_cuda_synchronize(-1));
  ASSERT_RC(DLPX_EDEVICE, dlpx_cuda_synchronize(1000));
  ASSERT_RC(DLPX_EINVAL, dlpx_cuda_device_count(NULL));
  ASSERT_RC(DLPX_EINVAL, dlpx_cuda_device_info(0, name, 0, NULL));
  ASSERT_OK(dlpx_cuda_synchronize(1));
}

/* ---- streams and events ------------------------------------------------------------------ */

static void test_streams_events(void) {
  long streams0 = fake.live_streams(), events0 = fake.live_events();
  uintptr_t s, e0, e1, ev;
  ASSERT_OK(dlpx_cuda_stream_create(0, 1, &s));
  ASSERT_TRUE(s > DLPX_CUDA_STREAM_PER_THREAD);
  ASSERT_EQ(dlpx_cuda_stream_query(0, s), 1);
  ASSERT_OK(dlpx_cuda_event_create(0, DLPX_CUDA_EVENT_TIMING, &e0));
  ASSERT_OK(dlpx_cuda_event_create(0, DLPX_CUDA_EVENT_TIMING, &e1));
  ASSERT_OK(dlpx_cuda_event_create(0, 0, &ev));
  ASSERT_EQ(dlpx_cuda_event_query(0, ev), 1); /* never recorded: complete */
  fake.set_delay_us(20000);
  ASSERT_OK(dlpx_cuda_event_record(0, e0, s));
  char *dev;
  ASSERT_OK(dlpx_cuda_pool_alloc(GPU0, 64, s, (void **)&dev));
  char host[64] = {0};
  ASSERT_OK(dlpx_cuda_memcpy(0, dev, host, sizeof host, s));
  ASSERT_OK(dlpx_cuda_event_record(0, e1, s));
  ASSERT_EQ(dlpx_cuda_stream_query(0, s), 0);
  ASSERT_EQ(dlpx_cuda_event_query(0, e1), 0);
  float ms = -1;
  ASSERT_RC(DLPX_ESTATE, dlpx_cuda_event_elapsed(0, e0, e1, &ms));
  ASSERT_OK(dlpx_cuda_event_synchronize(0, e1));
  fake.set_delay_us(0);
  ASSERT_EQ(dlpx_cuda_event_query(0, e1), 1);
  ASSERT_OK(dlpx_cuda_event_elapsed(0, e0, e1, &ms));
  ASSERT_TRUE(ms >= 15.0f);
  ASSERT_RC(DLPX_ECUDA, dlpx_cuda_event_elapsed(0, ev, e1, &ms)); /* ev is not timed */
  ASSERT_OK(dlpx_cuda_stream_synchronize(0, s));
  ASSERT_OK(dlpx_cuda_pool_free(GPU0, dev, s));
  /* refusals */
  ASSERT_RC(DLPX_EINVAL, dlpx_cuda_stream_destroy(0, 0));
  ASSERT_RC(DLPX_EINVAL, dlpx_cuda_stream_destroy(0, DLPX_CUDA_STREAM_PER_THREAD));
  ASSERT_RC(DLPX_EINVAL, dlpx_cuda_event_create(0, DLPX_CUDA_EVENT_INTERPROCESS |
                                                       DLPX_CUDA_EVENT_TIMING, &ev));
  ASSERT_RC(DLPX_EINVAL, dlpx_cuda_event_create(0, 0x100, &ev));
  ASSERT_RC(DLPX_EINVAL, dlpx_cuda_event_record(0, 0, s));
  ASSERT_OK(dlpx_cuda_event_destroy(0, e0));
  ASSERT_OK(dlpx_cuda_event_destroy(0, e1));
  ASSERT_OK(dlpx_cuda_event_destroy(0, ev));
  ASSERT_RC(DLPX_ECUDA, dlpx_cuda_event_query(0, ev)); /* destroyed: the driver says so */
  ASSERT_OK(dlpx_cuda_stream_destroy(0, s));
  ASSERT_RC(DLPX_ECUDA, dlpx_cuda_stream_query(0, s));
  ASSERT_EQ(fake.live_streams(), streams0);
  ASSERT_TRUE(fake.live_events() <= events0 + 64); /* the ordering cache may hold some */
  /* current streams are per thread */
  ASSERT_EQ(dlpx_cuda_current_stream(1), 0);
  ASSERT_OK(dlpx_cuda_set_current_stream(1, 77));
  ASSERT_EQ(dlpx_cuda_current_stream(1), 77);
  ASSERT_OK(dlpx_cuda_set_current_stream(1, 0));
  ASSERT_RC(DLPX_EDEVICE, dlpx_cuda_set_current_stream(64, 1));
  ASSERT_EQ(dlpx_cuda_current_stream(-1), 0);
}

/* A write queued on stream a (slow) and a read on stream b: with the
 * ordering the read sees the write; without it, the old bytes. */
static void test_stream_order_and_stale_read(void) {
  uintptr_t a, b;
  ASSERT_OK(dlpx_cuda_stream_create(0, 1, &a));
  ASSERT_OK(dlpx_cuda_stream_create(0, 1, &b));
  unsigned char *dev;
  ASSERT_OK(dlpx_cuda_pool_alloc(GPU0, 4096, a, (void **)&dev));
  ASSERT_TRUE(fake.is_device_pointer((uintptr_t)dev));
  unsigned char zeros[4096] = {0}, ones[4096], out[4096];
  memset(ones, 1, sizeof ones);
  for (int ordered = 1; ordered >= 0; ordered--) {
    ASSERT_OK(dlpx_cuda_memcpy(0, dev, zeros, sizeof zeros, a));
    ASSERT_OK(dlpx_cuda_stream_synchronize(0, a));
    fake.set_delay_us(30000);
    ASSERT_OK(dlpx_cuda_memcpy(0, dev, ones, sizeof ones, a)); /* the producer's write */
    if (ordered) ASSERT_OK(dlpx_cuda_stream_order(0, a, b));
    fake.set_delay_us(0);
    memset(out, 7, sizeof out);
    ASSERT_OK(dlpx_cuda_memcpy(0, out, dev, sizeof out, b)); /* the consumer's read */
    ASSERT_OK(dlpx_cuda_stream_synchronize(0, b));
    ASSERT_EQ(out[100], ordered ? 1 : 0);
    ASSERT_OK(dlpx_cuda_stream_synchronize(0, a));
  }
  /* no-ops: the same stream, or -1 */
  long rec = fake.calls("cuEventRecord");
  ASSERT_OK(dlpx_cuda_stream_order(0, a, a));
  ASSERT_OK(dlpx_cuda_stream_order(0, a, UINTPTR_MAX));
  ASSERT_OK(dlpx_cuda_stream_order(0, 0, DLPX_CUDA_STREAM_LEGACY)); /* both legacy */
  ASSERT_EQ(fake.calls("cuEventRecord"), rec);
  /* the ordering's failures: clear errors, no event left behind */
  long events = fake.live_events();
  fake.fail("cuStreamWaitEvent", 0, 400);
  ASSERT_RC(DLPX_ECUDA, dlpx_cuda_stream_order(0, a, b));
  ASSERT_MSG("CUDA_ERROR_INVALID_HANDLE");
  fake.fail("cuEventRecord", 0, 1);
  ASSERT_RC(DLPX_ECUDA, dlpx_cuda_stream_order(0, a, b));
  ASSERT_TRUE(fake.live_events() <= events);
  ASSERT_OK(dlpx_cuda_pool_free(GPU0, dev, a));
  ASSERT_OK(dlpx_cuda_stream_destroy(0, a));
  ASSERT_OK(dlpx_cuda_stream_destroy(0, b));
}

/* ---- the pools ------------------------------------------------------------------------------ */

static void test_pool_rounding(void) {
  ASSERT_EQ(dlpx_cuda_pool_round(0), 512);
  ASSERT_EQ(dlpx_cuda_pool_round(1), 512);
  ASSERT_EQ(dlpx_cuda_pool_round(513), 1024);
  ASSERT_EQ(dlpx_cuda_pool_round((1u << 20) - 1), 1u << 20);
  ASSERT_EQ(dlpx_cuda_pool_round((1u << 20) + 1), 2u << 20);
  ASSERT_EQ(dlpx_cuda_pool_round((5u << 20) + 1), 6u << 20);
  ASSERT_EQ(dlpx_cuda_pool_round(SIZE_MAX - 5), 0);
  for (size_t n = 1; n < ((size_t)64 << 20); n = n * 3 + 7) {
    size_t r = dlpx_cuda_pool_round(n);
    ASSERT_TRUE(r >= n);
    ASSERT_TRUE(r - n < ((size_t)2 << 20)); /* at most 2 MiB of waste */
  }
}

static void test_pool_reuse_by_stream(void) {
  ASSERT_OK(dlpx_cuda_empty_cache(GPU0));
  uintptr_t a, b;
  ASSERT_OK(dlpx_cuda_stream_create(0, 1, &a));
  ASSERT_OK(dlpx_cuda_stream_create(0, 1, &b));
  dlpx_cuda_pool_stats st0, st;
  ASSERT_OK(dlpx_cuda_pool_stats_get(GPU0, &st0));
  void *p, *q;
  ASSERT_OK(dlpx_cuda_pool_alloc(GPU0, 3000, a, &p));
  ASSERT_OK(dlpx_cuda_pool_stats_get(GPU0, &st));
  ASSERT_EQ(st.allocated_bytes - st0.allocated_bytes, 3072);
  ASSERT_EQ(st.requested_bytes - st0.requested_bytes, 3000);
  ASSERT_EQ(st.segment_alloc_count - st0.segment_alloc_count, 1);
  ASSERT_OK(dlpx_cuda_pool_free(GPU0, p, a));
  ASSERT_RC(DLPX_EINVAL, dlpx_cuda_pool_free(GPU0, p, a)); /* twice */
  ASSERT_RC(DLPX_EINVAL, dlpx_cuda_pool_free(GPU0, (char *)p + 8, a));
  /* the same stream: the same block at once, no driver call */
  long allocs = fake.calls("cuMemAlloc"), queries = fake.calls("cuEventQuery");
  ASSERT_OK(dlpx_cuda_pool_alloc(GPU0, 2900, a, &q));
  ASSERT_PTR_EQ(q, p);
  ASSERT_EQ(fake.calls("cuMemAlloc"), allocs);
  ASSERT_EQ(fake.calls("cuEventQuery"), queries);
  /* pending work on a: stream b must not get the block until it is done */
  fake.set_delay_us(30000);
  char host[3072] = {0};
  ASSERT_OK(dlpx_cuda_memcpy(0, q, host, sizeof host, a));
  fake.set_delay_us(0);
  ASSERT_OK(dlpx_cuda_pool_free(GPU0, q, a));
  ASSERT_OK(dlpx_cuda_pool_alloc(GPU0, 3072, b, &q));
  ASSERT_TRUE(q != p); /* a new block */
  ASSERT_OK(dlpx_cuda_stream_synchronize(0, a));
  void *r;
  ASSERT_OK(dlpx_cuda_pool_alloc(GPU0, 3072, b, &r));
  ASSERT_PTR_EQ(r, p); /* a's work is done now: reused on b */
  ASSERT_OK(dlpx_cuda_pool_free(GPU0, q, b));
  ASSERT_OK(dlpx_cuda_pool_free(GPU0, r, b));
  ASSERT_OK(dlpx_cuda_pool_stats_get(GPU0, &st));
  ASSERT_EQ(st.allocated_bytes, st0.allocated_bytes);
  ASSERT_EQ(st.allocations, st0.allocations);
  ASSERT_EQ(st.allocation_count - st0.allocation_count, 4);
  ASSERT_EQ(st.free_count - st0.free_count, 4);
  ASSERT_TRUE(st.reserved_bytes >= 2 * 3072);
  ASSERT_TRUE(st.allocated_bytes_peak >= 2 * 3072);
  ASSERT_OK(dlpx_cuda_empty_cache(GPU0));
  ASSERT_OK(dlpx_cuda_pool_stats_get(GPU0, &st));
  ASSERT_EQ(st.reserved_bytes, 0);
  ASSERT_EQ(st.segments, 0);
  ASSERT_EQ(fake.live_bytes(0), 0);
  ASSERT_OK(dlpx_cuda_pool_reset_peaks(GPU0));
  ASSERT_OK(dlpx_cuda_pool_stats_get(GPU0, &st));
  ASSERT_EQ(st.reserved_bytes_peak, 0);
  ASSERT_OK(dlpx_cuda_stream_destroy(0, a));
  ASSERT_OK(dlpx_cuda_stream_destroy(0, b));
  /* bad arguments */
  ASSERT_RC(DLPX_EDEVICE, dlpx_cuda_pool_alloc(CPU, 8, 0, &p));
  ASSERT_RC(DLPX_EINVAL, dlpx_cuda_pool_alloc(GPU0, 8, 0, NULL));
  ASSERT_RC(DLPX_EOVERFLOW, dlpx_cuda_pool_alloc(GPU0, SIZE_MAX - 3, 0, &p));
  ASSERT_RC(DLPX_EINVAL, dlpx_cuda_set_memory_limit(GPU0, -2));
  dlpx_cuda_empty_cache(GPU1);
}

static void test_pool_limit_and_oom(void) {
  ASSERT_OK(dlpx_cuda_empty_cache(GPU0));
  dlpx_cuda_pool_stats st0, st;
  ASSERT_OK(dlpx_cuda_pool_stats_get(GPU0, &st0));
  /* a limit: an allocation over it empties the cache, then fails */
  ASSERT_OK(dlpx_cuda_set_memory_limit(GPU0, 8 << 20));
  void *p[4];
  ASSERT_OK(dlpx_cuda_pool_alloc(GPU0, 4 << 20, 0, &p[0]));
  ASSERT_OK(dlpx_cuda_pool_alloc(GPU0, 2 << 20, 0, &p[1]));
  ASSERT_OK(dlpx_cuda_pool_free(GPU0, p[1], 0)); /* cached: 6 MiB reserved */
  ASSERT_OK(dlpx_cuda_pool_alloc(GPU0, 4 << 20, 0, &p[2])); /* flush, then fits */
  ASSERT_OK(dlpx_cuda_pool_stats_get(GPU0, &st));
  ASSERT_EQ(st.cache_flushes - st0.cache_flushes, 1);
  ASSERT_EQ(st.reserved_bytes, 8 << 20);
  ASSERT_RC(DLPX_ENOMEM, dlpx_cuda_pool_alloc(GPU0, 1, 0, &p[3]));
  ASSERT_MSG("CUDA out of memory");
  ASSERT_MSG("limit");
  ASSERT_OK(dlpx_cuda_pool_stats_get(GPU0, &st));
  ASSERT_EQ(st.oom_count - st0.oom_count, 1);
  ASSERT_OK(dlpx_cuda_pool_free(GPU0, p[0], 0));
  ASSERT_OK(dlpx_cuda_pool_free(GPU0, p[2], 0));
  ASSERT_OK(dlpx_cuda_set_memory_limit(GPU0, -1));
  /* the driver runs out (the double has 256 MiB): cached blocks are given
   * back and the request tried again */
  ASSERT_OK(dlpx_cuda_pool_alloc(GPU0, 200 << 20, 0, &p[0]));
  ASSERT_OK(dlpx_cuda_pool_free(GPU0, p[0], 0));
  ASSERT_OK(dlpx_cuda_pool_alloc(GPU0, 150 << 20, 0, &p[0]));
  ASSERT_OK(dlpx_cuda_pool_stats_get(GPU0, &st));
  ASSERT_EQ(st.reserved_bytes, 150 << 20);
  ASSERT_RC(DLPX_ENOMEM, dlpx_cuda_pool_alloc(GPU0, 200 << 20, 0, &p[1]));
  ASSERT_MSG("the driver has none");
  ASSERT_OK(dlpx_cuda_pool_free(GPU0, p[0], 0));
  /* another driver failure is passed on as such */
  fake.fail("cuMemAlloc", 0, 999);
  ASSERT_RC(DLPX_ECUDA, dlpx_cuda_pool_alloc(GPU0, 300 << 20, 0, &p[1]));
  ASSERT_MSG("cuMemAlloc");
  ASSERT_OK(dlpx_cuda_empty_cache(GPU0));
  ASSERT_EQ(fake.live_bytes(0), 0);
}

static void test_pinned_pool_waits_for_copies(void) {
  ASSERT_OK(dlpx_cuda_empty_cache(PINNED));
  uintptr_t s;
  ASSERT_OK(dlpx_cuda_stream_create(0, 1, &s));
  void *dev, *pin, *pin2;
  ASSERT_OK(dlpx_cuda_pool_alloc(GPU0, 1 << 16, s, &dev));
  ASSERT_OK(dlpx_cuda_pool_alloc(PINNED, 1 << 16, s, &pin));
  memset(pin, 5, 1 << 16); /* the host writes pinned memory directly */
  fake.set_delay_us(30000);
  ASSERT_OK(dlpx_cuda_memcpy(0, dev, pin, 1 << 16, s));
  fake.set_delay_us(0);
  ASSERT_OK(dlpx_cuda_pool_free(PINNED, pin, s));
  /* even on the same stream: the copy still reads it */
  ASSERT_OK(dlpx_cuda_pool_alloc(PINNED, 1 << 16, s, &pin2));
  ASSERT_TRUE(pin2 != pin);
  ASSERT_OK(dlpx_cuda_stream_synchronize(0, s));
  void *pin3;
  ASSERT_OK(dlpx_cuda_pool_alloc(PINNED, 1 << 16, s, &pin3));
  ASSERT_PTR_EQ(pin3, pin);
  ASSERT_OK(dlpx_cuda_pool_free(PINNED, pin2, s));
  ASSERT_OK(dlpx_cuda_pool_free(PINNED, pin3, s));
  ASSERT_OK(dlpx_cuda_pool_free(GPU0, dev, s));
  dlpx_cuda_pool_stats st;
  ASSERT_OK(dlpx_cuda_pool_stats_get(PINNED, &st));
  ASSERT_EQ(st.allocated_bytes, 0);
  ASSERT_OK(dlpx_cuda_empty_cache(PINNED));
  ASSERT_OK(dlpx_cuda_empty_cache(GPU0));
  ASSERT_OK(dlpx_cuda_stream_destroy(0, s));
}

static void test_pool_cycles_no_leak(void) {
  ASSERT_OK(dlpx_cuda_empty_cache(GPU0));
  long allocs = fake.calls("cuMemAlloc");
  for (int i = 0; i < 100000; i++) {
    void *p;
    ASSERT_OK(dlpx_cuda_pool_alloc(GPU0, (size_t)(i % 7 + 1) * 1000, 0, &p));
    ASSERT_OK(dlpx_cuda_pool_free(GPU0, p, 0));
  }
  ASSERT_TRUE(fake.calls("cuMemAlloc") - allocs <= 7);
  ASSERT_OK(dlpx_cuda_empty_cache(GPU0));
  ASSERT_EQ(fake.live_bytes(0), 0);
}

typedef struct {
  int failures;
} worker_result;

static void *pool_worker(void *arg) {
  worker_result *res = arg;
  uintptr_t s;
  if (dlpx_cuda_stream_create(0, 1, &s)) {
    res->failures++;
    return NULL;
  }
  void *held[8] = {0};
  for (int i = 0; i < 20000; i++) {
    int k = i % 8;
    if (held[k] && dlpx_cuda_pool_free(GPU0, held[k], s)) res->failures++;
    held[k] = NULL;
    if (dlpx_cuda_pool_alloc(GPU0, (size_t)(k + 1) * 4096, s, &held[k])) res->failures++;
  }
  for (int k = 0; k < 8; k++)
    if (held[k] && dlpx_cuda_pool_free(GPU0, held[k], s)) res->failures++;
  if (dlpx_cuda_stream_destroy(0, s)) res->failures++;
  return NULL;
}

static void test_pool_threads(void) {
  pthread_t th[4];
  worker_result res[4] = {{0}};
  for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, pool_worker, &res[i]);
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < 4; i++) ASSERT_EQ(res[i].failures, 0);
  dlpx_cuda_pool_stats st;
  ASSERT_OK(dlpx_cuda_pool_stats_get(GPU0, &st));
  ASSERT_EQ(st.allocations, 0);
  ASSERT_OK(dlpx_cuda_empty_cache(GPU0));
  ASSERT_EQ(fake.live_bytes(0), 0);
}

/* ---- storages and tensors -------------------------------------------------------------------- */

static void fill_iota(dlpx_tensor *t) {
  float *p = dlpx_tensor_data(t);
  for (int64_t i = 0; i < dlpx_tensor_numel(t); i++) p[i] = (float)i;
}

static void test_storages(void) {
  check_live live;
  check_live_begin(&live);
  dlpx_storage *s;
  ASSERT_OK(dlpx_cuda_storage_alloc(GPU1, 1000, 0, &s));
  ASSERT_EQ(dlpx_storage_kind_of(s), DLPX_STORAGE_CUDA_POOL);
  ASSERT_EQ(dlpx_storage_device(s).device_id, 1);
  ASSERT_TRUE(fake.is_device_pointer((uintptr_t)dlpx_storage_data(s)));
  dlpx_storage_release(s);
  ASSERT_OK(dlpx_cuda_storage_alloc(MANAGED, 100, 0, &s));
  ASSERT_EQ(dlpx_storage_kind_of(s), DLPX_STORAGE_CUDA_MANAGED);
  memset(dlpx_storage_data(s), 3, 100); /* the host can touch managed memory */
  dlpx_storage_release(s);
  ASSERT_RC(DLPX_EDEVICE, dlpx_cuda_storage_alloc(CPU, 100, 0, &s));
  ASSERT_RC(DLPX_EDEVICE, dlpx_cuda_storage_alloc((DLDevice){kDLCUDA, 5}, 100, 0, &s));
  ASSERT_RC(DLPX_EDEVICE, dlpx_cuda_storage_alloc((DLDevice){kDLCUDA, -1}, 100, 0, &s));
  fake.fail("cuMemAllocManaged", 0, 2);
  ASSERT_RC(DLPX_ENOMEM, dlpx_cuda_storage_alloc(MANAGED, 100, 0, &s));
  dlpx_tensor *t;
  int64_t shape[2] = {3, 5};
  ASSERT_OK(dlpx_cuda_tensor_empty(GPU0, F32, 2, shape, 0, &t));
  ASSERT_EQ(dlpx_tensor_device(t).device_type, kDLCUDA);
  ASSERT_EQ(dlpx_tensor_nbytes(t), 60);
  dlpx_tensor_free(t);
  int64_t bad[1] = {-1};
  ASSERT_RC(DLPX_ESHAPE, dlpx_cuda_tensor_empty(GPU0, F32, 1, bad, 0, &t));
  ASSERT_NO_LEAKS(&live);
}

static int released;
static void count_release(void *data, void *ctx) {
  (void)data;
  (void)ctx;
  released++;
}

static void test_host_register(void) {
  check_live live;
  check_live_begin(&live);
  long allocs = fake.live_allocations();
  char *buf = malloc(1 << 16);
  dlpx_storage *s, *s2;
  released = 0;
  ASSERT_OK(dlpx_cuda_host_register(buf, 1 << 16, count_release, NULL, &s));
  ASSERT_EQ(dlpx_storage_kind_of(s), DLPX_STORAGE_CUDA_REGISTERED);
  ASSERT_EQ(dlpx_storage_nbytes(s), 1 << 16); /* exact: no rounding */
  ASSERT_EQ(dlpx_storage_device(s).device_type, kDLCUDAHost);
  ASSERT_RC(DLPX_ECUDA, dlpx_cuda_host_register(buf + 100, 10, NULL, NULL, &s2));
  ASSERT_MSG("ALREADY_REGISTERED");
  dlpx_storage_release(s);
  ASSERT_EQ(released, 1);
  ASSERT_EQ(fake.live_allocations(), allocs);
  ASSERT_RC(DLPX_EINVAL, dlpx_cuda_host_register(NULL, 10, NULL, NULL, &s));
  ASSERT_RC(DLPX_EINVAL, dlpx_cuda_host_register(buf, 0, NULL, NULL, &s));
  free(buf);
  ASSERT_NO_LEAKS(&live);
}

/* ---- copies ------------------------------------------------------------------------------------ */

/* Copies a host tensor to |dev| through |view| (a view-maker applied on
 * both sides) and back, and compares with the host copy of the view. */
static void roundtrip_layout(DLDevice dev, int64_t rows, int64_t cols, int kind) {
  int64_t shape[2] = {rows, cols};
  dlpx_tensor *h, *d, *hv, *dv, *back, *want;
  ASSERT_OK(dlpx_tensor_empty(F32, 2, shape, &h));
  fill_iota(h);
  ASSERT_OK(dlpx_cuda_tensor_empty(dev, F32, 2, shape, 0, &d));
  ASSERT_OK(dlpx_cuda_tensor_copy_into(d, h, 0));
  /* kind 0: contiguous; 1: a column slice (2-D copy); 2: transposed
   * (staging); 3: reversed rows (negative strides: staging) */
  if (kind == 1) {
    ASSERT_OK(dlpx_tensor_slice(h, 1, 1, cols - 1, 1, &hv));
    ASSERT_OK(dlpx_tensor_slice(d, 1, 1, cols - 1, 1, &dv));
  } else if (kind == 2) {
    ASSERT_OK(dlpx_tensor_transpose(h, &hv));
    ASSERT_OK(dlpx_tensor_transpose(d, &dv));
  } else if (kind == 3) {
    ASSERT_OK(dlpx_tensor_slice(h, 0, DLPX_NONE, DLPX_NONE, -1, &hv));
    ASSERT_OK(dlpx_tensor_slice(d, 0, DLPX_NONE, DLPX_NONE, -1, &dv));
  } else {
    ASSERT_OK(dlpx_tensor_clone(h, &hv));
    ASSERT_OK(dlpx_tensor_clone(d, &dv));
  }
  ASSERT_OK(dlpx_cuda_tensor_to(dv, CPU, 0, 1, &back));
  ASSERT_OK(dlpx_tensor_copy(hv, 'C', &want));
  ASSERT_EQ(memcmp(dlpx_tensor_data(back), dlpx_tensor_data(want),
                   (size_t)dlpx_tensor_nbytes(want)), 0);
  /* and into a strided device destination */
  dlpx_tensor *d2, *d2v, *back2;
  ASSERT_OK(dlpx_cuda_tensor_empty(dev, F32, 2, shape, 0, &d2));
  ASSERT_OK(dlpx_cuda_memset(0, dlpx_tensor_data(d2), 0, (size_t)dlpx_tensor_nbytes(d2), 0));
  if (kind == 1)
    ASSERT_OK(dlpx_tensor_slice(d2, 1, 1, cols - 1, 1, &d2v));
  else if (kind == 2)
    ASSERT_OK(dlpx_tensor_transpose(d2, &d2v));
  else if (kind == 3)
    ASSERT_OK(dlpx_tensor_slice(d2, 0, DLPX_NONE, DLPX_NONE, -1, &d2v));
  else
    ASSERT_OK(dlpx_tensor_clone(d2, &d2v));
  ASSERT_OK(dlpx_cuda_tensor_copy_into(d2v, hv, 0));
  ASSERT_OK(dlpx_cuda_tensor_to(d2v, CPU, 0, 1, &back2));
  ASSERT_EQ(memcmp(dlpx_tensor_data(back2), dlpx_tensor_data(want),
                   (size_t)dlpx_tensor_nbytes(want)), 0);
  if (kind == 1) { /* the bytes between the slice's rows are untouched */
    dlpx_tensor *full;
    ASSERT_OK(dlpx_cuda_tensor_to(d2, CPU, 0, 1, &full));
    ASSERT_EQ(((float *)dlpx_tensor_data(full))[0], 0.0f);
    ASSERT_EQ(((float *)dlpx_tensor_data(full))[cols - 1], 0.0f);
    dlpx_tensor_free(full);
  }
  dlpx_tensor *all[] = {h, d, hv, dv, back, want, d2, d2v, back2};
  for (size_t i = 0; i < COUNT(all); i++) dlpx_tensor_free(all[i]);
}

static void test_copies(void) {
  check_live live;
  check_live_begin(&live);
  long calls2d = fake.calls("cuMemcpy2DAsync");
  const DLDevice devs[3] = {GPU0, PINNED, MANAGED};
  for (int d = 0; d < 3; d++)
    for (int kind = 0; kind < 4; kind++) {
      roundtrip_layout(devs[d], 7, 9, kind);
      if (check__failed) {
        fprintf(stderr, "# device type %d, layout %d\n", (int)devs[d].device_type, kind);
        return;
      }
    }
  ASSERT_TRUE(fake.calls("cuMemcpy2DAsync") > calls2d);
  ASSERT_OK(dlpx_cuda_empty_cache(GPU0));
  ASSERT_OK(dlpx_cuda_empty_cache(PINNED));
  ASSERT_NO_LEAKS(&live);
}

static void test_copy_3d_and_zero_size(void) {
  int64_t shape[3] = {4, 5, 6};
  dlpx_tensor *h, *d, *hv, *dv, *back, *want;
  ASSERT_OK(dlpx_tensor_empty(F32, 3, shape, &h));
  fill_iota(h);
  ASSERT_OK(dlpx_cuda_tensor_to(h, GPU0, 0, 0, &d));
  long c3 = fake.calls("cuMemcpy3DAsync");
  dlpx_index idx[3] = {{DLPX_INDEX_SLICE, 0, 4, 1}, {DLPX_INDEX_SLICE, 1, 4, 1},
                       {DLPX_INDEX_SLICE, 0, 5, 1}};
  ASSERT_OK(dlpx_tensor_index(h, 3, idx, &hv));
  ASSERT_OK(dlpx_tensor_index(d, 3, idx, &dv));
  ASSERT_OK(dlpx_cuda_tensor_to(dv, CPU, 0, 1, &back));
  ASSERT_EQ(fake.calls("cuMemcpy3DAsync"), c3 + 1);
  ASSERT_OK(dlpx_tensor_copy(hv, 'C', &want));
  ASSERT_EQ(memcmp(dlpx_tensor_data(back), dlpx_tensor_data(want),
                   (size_t)dlpx_tensor_nbytes(want)), 0);
  dlpx_tensor *all[] = {h, d, hv, dv, back, want};
  for (size_t i = 0; i < COUNT(all); i++) dlpx_tensor_free(all[i]);
  int64_t zero[2] = {0, 3};
  ASSERT_OK(dlpx_cuda_tensor_empty(GPU0, F32, 2, zero, 0, &d));
  ASSERT_OK(dlpx_cuda_tensor_to(d, CPU, 0, 1, &back));
  ASSERT_EQ(dlpx_tensor_numel(back), 0);
  dlpx_tensor_free(d);
  dlpx_tensor_free(back);
}

static void test_copy_errors(void) {
  int64_t shape[1] = {4}, other[1] = {5};
  dlpx_tensor *a, *b, *c, *g1, *ro;
  ASSERT_OK(dlpx_cuda_tensor_empty(GPU0, F32, 1, shape, 0, &a));
  ASSERT_OK(dlpx_tensor_empty(F32, 1, other, &b));
  ASSERT_OK(dlpx_tensor_empty(U8, 1, shape, &c));
  ASSERT_OK(dlpx_cuda_tensor_empty(GPU1, F32, 1, shape, 0, &g1));
  ASSERT_RC(DLPX_ESHAPE, dlpx_cuda_tensor_copy_into(a, b, 0));
  ASSERT_RC(DLPX_EDTYPE, dlpx_cuda_tensor_copy_into(a, c, 0));
  ASSERT_RC(DLPX_EDEVICE, dlpx_cuda_tensor_copy_into(a, g1, 0));
  ASSERT_MSG("peer");
  ASSERT_OK(dlpx_tensor_with_flags(a, DLPX_TENSOR_READONLY, &ro));
  ASSERT_RC(DLPX_EREADONLY, dlpx_cuda_tensor_copy_into(ro, a, 0));
  ASSERT_RC(DLPX_EDEVICE, dlpx_cuda_tensor_copy_into(b, b, 0)); /* host only */
  ASSERT_RC(DLPX_EINVAL, dlpx_cuda_tensor_copy_into(NULL, a, 0));
  dlpx_tensor *h4;
  ASSERT_OK(dlpx_tensor_empty(F32, 1, shape, &h4));
  fake.fail("cuMemcpyAsync", 0, 700);
  ASSERT_RC(DLPX_ECUDA, dlpx_cuda_tensor_copy_into(a, h4, 0));
  ASSERT_MSG("CUDA_ERROR_ILLEGAL_ADDRESS");
  dlpx_tensor *bc, *out;
  int64_t big[2] = {3, 4};
  ASSERT_OK(dlpx_tensor_broadcast_to(a, 2, big, &bc)); /* zero stride source: staging */
  ASSERT_OK(dlpx_cuda_tensor_to(bc, CPU, 0, 1, &out));
  ASSERT_EQ(dlpx_tensor_numel(out), 12);
  dlpx_tensor *all[] = {a, b, c, g1, ro, h4, bc, out};
  for (size_t i = 0; i < COUNT(all); i++) dlpx_tensor_free(all[i]);
  ASSERT_OK(dlpx_cuda_empty_cache(GPU1));
}

/* A storage remembers the stream it was written on; a copy into it moves
 * it there, and dlpx_cuda_tensor_ready orders a consumer after it. */
static void test_storage_streams(void) {
  uintptr_t a, b;
  ASSERT_OK(dlpx_cuda_stream_create(0, 1, &a));
  ASSERT_OK(dlpx_cuda_stream_create(0, 1, &b));
  int64_t shape[1] = {1024};
  dlpx_tensor *h, *d, *out;
  ASSERT_OK(dlpx_tensor_empty(U8, 1, shape, &h));
  memset(dlpx_tensor_data(h), 9, 1024);
  ASSERT_OK(dlpx_cuda_tensor_empty(GPU0, U8, 1, shape, a, &d));
  ASSERT_EQ(dlpx_cuda_storage_stream(dlpx_tensor_storage(d)), a);
  ASSERT_EQ(dlpx_cuda_storage_stream(dlpx_tensor_storage(h)), 0);
  fake.set_delay_us(30000);
  ASSERT_OK(dlpx_cuda_tensor_copy_into(d, h, a));
  fake.set_delay_us(0);
  ASSERT_OK(dlpx_cuda_tensor_ready(d, b)); /* the consumer on b */
  ASSERT_OK(dlpx_tensor_empty(U8, 1, shape, &out));
  memset(dlpx_tensor_data(out), 0, 1024);
  ASSERT_OK(dlpx_cuda_memcpy(0, dlpx_tensor_data(out), dlpx_tensor_data(d), 1024, b));
  ASSERT_OK(dlpx_cuda_stream_synchronize(0, b));
  ASSERT_EQ(((unsigned char *)dlpx_tensor_data(out))[1000], 9);
  ASSERT_OK(dlpx_cuda_storage_set_stream(dlpx_tensor_storage(d), b));
  ASSERT_EQ(dlpx_cuda_storage_stream(dlpx_tensor_storage(d)), b);
  ASSERT_RC(DLPX_EINVAL, dlpx_cuda_storage_set_stream(dlpx_tensor_storage(h), b));
  ASSERT_OK(dlpx_cuda_tensor_ready(h, b)); /* host memory: nothing to do */
  dlpx_tensor_free(h);
  dlpx_tensor_free(d);
  dlpx_tensor_free(out);
  ASSERT_OK(dlpx_cuda_stream_synchronize(0, a));
  ASSERT_OK(dlpx_cuda_stream_destroy(0, a));
  ASSERT_OK(dlpx_cuda_stream_destroy(0, b));
  ASSERT_OK(dlpx_cuda_empty_cache(GPU0));
}

/* An export of a CUDA tensor: device and pointer as they are, copy on
 * export stays on the device. */
static void test_export(void) {
  int64_t shape[2] = {2, 3};
  dlpx_tensor *d;
  ASSERT_OK(dlpx_cuda_tensor_empty(GPU1, F32, 2, shape, 0, &d));
  DLManagedTensorVersioned *m;
  ASSERT_OK(dlpx_tensor_export(d, 0, &m));
  ASSERT_EQ(m->dl_tensor.device.device_type, kDLCUDA);
  ASSERT_EQ(m->dl_tensor.device.device_id, 1);
  ASSERT_PTR_EQ(m->dl_tensor.data, dlpx_tensor_data(d));
  m->deleter(m);
  ASSERT_OK(dlpx_tensor_export(d, DLPX_EXPORT_COPY, &m));
  ASSERT_TRUE(m->flags & DLPACK_FLAG_BITMASK_IS_COPIED);
  ASSERT_TRUE(m->dl_tensor.data != dlpx_tensor_data(d));
  ASSERT_TRUE(fake.is_device_pointer((uintptr_t)m->dl_tensor.data));
  m->deleter(m);
  dlpx_tensor_free(d);
  ASSERT_OK(dlpx_cuda_empty_cache(GPU1));
}

/* ---- files to the device -------------------------------------------------------------------------- */

static void test_file_load(void) {
  check_live live;
  check_live_begin(&live);
  char path[] = "/tmp/dlpx-test-cuda-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_TRUE(fd >= 0);
  close(fd);
  /* a big tensor cut into pieces, small ones sharing buffers, an empty one */
  int64_t shapes[4][2] = {{300, 1000}, {3, 5}, {0, 4}, {7, 1}};
  const char *names[4] = {"big", "small", "empty", "tiny"};
  dlpx_tensor *ts[4];
  for (int i = 0; i < 4; i++) {
    ASSERT_OK(dlpx_tensor_empty(F32, 2, shapes[i], &ts[i]));
    float *p = dlpx_tensor_data(ts[i]);
    for (int64_t k = 0; k < dlpx_tensor_numel(ts[i]); k++) p[k] = (float)(k * (i + 1));
  }
  ASSERT_OK(dlpx_save_file(path, 4, names, (const dlpx_tensor *const *)ts, 0, NULL, NULL,
                           DLPX_SAVE_CHECKSUMS | DLPX_SAVE_NO_FSYNC));
  dlpx_file *f;
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  size_t idx[4];
  for (int i = 0; i < 4; i++) ASSERT_OK(dlpx_st_header_find(dlpx_file_header(f), names[i], &idx[i]));
  dlpx_cuda_load_options opts = {64 << 10, 2, 3};
  dlpx_tensor *out[4];
  uintptr_t s;
  ASSERT_OK(dlpx_cuda_stream_create(0, 1, &s));
  fake.set_delay_us(200);
  ASSERT_OK(dlpx_cuda_file_load(f, 4, idx, GPU0, s, &opts, DLPX_READ_VERIFY, out));
  fake.set_delay_us(0);
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ(dlpx_tensor_device(out[i]).device_type, kDLCUDA);
    ASSERT_EQ((uintptr_t)dlpx_tensor_data(out[i]) % 256, 0);
    dlpx_tensor *back;
    ASSERT_OK(dlpx_cuda_tensor_to(out[i], CPU, s, 1, &back));
    ASSERT_EQ(memcmp(dlpx_tensor_data(back), dlpx_tensor_data(ts[i]),
                     (size_t)dlpx_tensor_nbytes(ts[i])), 0);
    dlpx_tensor_free(back);
    dlpx_tensor_free(out[i]);
  }
  /* bad arguments */
  ASSERT_RC(DLPX_EDEVICE, dlpx_cuda_file_load(f, 1, idx, PINNED, s, NULL, 0, out));
  size_t bad = 99;
  ASSERT_RC(DLPX_EINDEX, dlpx_cuda_file_load(f, 1, &bad, GPU0, s, NULL, 0, out));
  ASSERT_RC(DLPX_EINVAL, dlpx_cuda_file_load(f, 1, idx, GPU0, s, NULL, 0x80, out));
  /* a failing copy in the middle: an error, nothing left allocated */
  dlpx_cuda_pool_stats st0, st;
  ASSERT_OK(dlpx_cuda_pool_stats_get(GPU0, &st0));
  fake.fail("cuMemcpyAsync", 1, 700); /* the second batch */
  ASSERT_RC(DLPX_ECUDA, dlpx_cuda_file_load(f, 4, idx, GPU0, s, &opts, 0, out));
  ASSERT_MSG("ILLEGAL_ADDRESS");
  ASSERT_OK(dlpx_cuda_pool_stats_get(GPU0, &st));
  ASSERT_EQ(st.allocated_bytes, st0.allocated_bytes);
  dlpx_file_close(f);
  /* a corrupted byte: the checksum error names the tensor */
  fd = open(path, O_RDWR);
  ASSERT_TRUE(fd >= 0);
  struct stat sb;
  ASSERT_EQ(fstat(fd, &sb), 0);
  ASSERT_EQ(pwrite(fd, "\x55", 1, sb.st_size - 600000), 1);
  close(fd);
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  ASSERT_RC(DLPX_ECHECKSUM, dlpx_cuda_file_load(f, 4, idx, GPU0, s, &opts, DLPX_READ_VERIFY, out));
  ASSERT_MSG("big");
  ASSERT_OK(dlpx_cuda_file_load(f, 1, &idx[1], GPU0, s, NULL, DLPX_READ_VERIFY, out));
  dlpx_tensor_free(out[0]);
  dlpx_file_close(f);
  unlink(path);
  for (int i = 0; i < 4; i++) dlpx_tensor_free(ts[i]);
  ASSERT_OK(dlpx_cuda_stream_synchronize(0, s));
  ASSERT_OK(dlpx_cuda_stream_destroy(0, s));
  ASSERT_OK(dlpx_cuda_empty_cache(GPU0));
  ASSERT_OK(dlpx_cuda_empty_cache(PINNED));
  ASSERT_NO_LEAKS(&live);
}

/* ---- IPC ------------------------------------------------------------------------------------------ */

static int g_to_child[2], g_to_parent[2];

static void say(int fd, char c) {
  if (write(fd, &c, 1) != 1) _exit(90);
}
static char hear(int fd) {
  char c = 0;
  if (read(fd, &c, 1) != 1) return 0;
  return c;
}

static int ipc_importer(const dlpx_cuda_ipc_handle *h) {
  dlpx_storage *s, *s2;
  if (dlpx_cuda_ipc_open(h, 0, &s)) return 1;
  if (dlpx_cuda_ipc_open(h, 0, &s2)) return 2; /* the same mapping, counted once */
  if (dlpx_storage_data(s) != dlpx_storage_data(s2)) return 3;
  if (dlpx_storage_kind_of(s) != DLPX_STORAGE_CUDA_IPC) return 4;
  unsigned char out[4096];
  if (dlpx_cuda_memcpy(0, out, dlpx_storage_data(s), sizeof out, 0)) return 5;
  if (dlpx_cuda_stream_synchronize(0, 0)) return 6;
  for (size_t i = 0; i < sizeof out; i++)
    if (out[i] != (unsigned char)i) return 7;
  say(g_to_parent[1], 'o'); /* opened: the parent checks the count */
  if (hear(g_to_child[0]) != 'c') return 8;
  dlpx_storage_release(s);
  dlpx_storage_release(s2); /* the last: unmapped */
  say(g_to_parent[1], 'x');
  return 0;
}

static void test_ipc(void) {
  dlpx_storage *s;
  ASSERT_OK(dlpx_cuda_storage_alloc(GPU0, 4096, 0, &s));
  unsigned char bytes[4096];
  for (size_t i = 0; i < sizeof bytes; i++) bytes[i] = (unsigned char)i;
  fake.set_delay_us(20000); /* the importer must wait for this write: the event */
  ASSERT_OK(dlpx_cuda_memcpy(0, dlpx_storage_data(s), bytes, sizeof bytes, 0));
  fake.set_delay_us(0);
  dlpx_cuda_export *e;
  dlpx_cuda_ipc_handle h;
  ASSERT_OK(dlpx_cuda_ipc_export(s, &e, &h));
  dlpx_storage_release(s); /* the export holds it */
  dlpx_storage *mine;
  ASSERT_RC(DLPX_EINVAL, dlpx_cuda_ipc_open(&h, 0, &mine)); /* its own producer */
  ASSERT_EQ(pipe(g_to_child), 0);
  ASSERT_EQ(pipe(g_to_parent), 0);
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) _exit(ipc_importer(&h));
  ASSERT_EQ(hear(g_to_parent[0]), 'o');
  ASSERT_EQ(dlpx_cuda_export_importers(e), 1);
  dlpx_cuda_export_close(e); /* held for the importer */
  ASSERT_EQ(dlpx_cuda_ipc_collect(), 1);
  say(g_to_child[1], 'c');
  ASSERT_EQ(hear(g_to_parent[0]), 'x');
  int status;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  ASSERT_EQ(dlpx_cuda_ipc_collect(), 0); /* released now */
  close(g_to_child[0]);
  close(g_to_child[1]);
  close(g_to_parent[0]);
  close(g_to_parent[1]);
  /* hostile and stale handles */
  dlpx_cuda_ipc_handle junk;
  memset(&junk, 0x41, sizeof junk);
  ASSERT_RC(DLPX_EINVAL, dlpx_cuda_ipc_open(&junk, 0, &mine));
  ASSERT_RC(DLPX_EINVAL, dlpx_cuda_ipc_open(NULL, 0, &mine));
  ASSERT_RC(DLPX_EINVAL, dlpx_cuda_ipc_export(NULL, &e, &h));
  dlpx_storage *host;
  ASSERT_OK(dlpx_storage_alloc(64, 0, 0, &host));
  ASSERT_RC(DLPX_EDEVICE, dlpx_cuda_ipc_export(host, &e, &h));
  dlpx_storage_release(host);
}

static int count_cells(const char *prefix) {
  DIR *d = opendir("/dev/shm");
  if (!d) return -1;
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) n += strncmp(de->d_name, prefix, strlen(prefix)) == 0;
  closedir(d);
  return n;
}

/* An importer killed while it has the memory open does not pin it. */
static void test_ipc_importer_killed(void) {
  dlpx_storage *s;
  ASSERT_OK(dlpx_cuda_storage_alloc(GPU0, 2048, 0, &s));
  dlpx_cuda_export *e;
  dlpx_cuda_ipc_handle h;
  ASSERT_OK(dlpx_cuda_ipc_export(s, &e, &h));
  dlpx_storage_release(s);
  ASSERT_EQ(pipe(g_to_parent), 0);
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    dlpx_storage *mine;
    if (dlpx_cuda_ipc_open(&h, 0, &mine)) _exit(1);
    say(g_to_parent[1], 'o');
    raise(SIGKILL);
  }
  ASSERT_EQ(hear(g_to_parent[0]), 'o');
  int status;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  dlpx_cuda_export_close(e);
  ASSERT_EQ(dlpx_cuda_ipc_collect(), 0); /* the dead importer's slot is freed */
  close(g_to_parent[0]);
  close(g_to_parent[1]);
}

/* A handle whose producer has exited, or whose export was closed. */
static int ipc_gone_child(void) {
  dlpx_storage *s;
  dlpx_cuda_export *e;
  dlpx_cuda_ipc_handle h;
  if (dlpx_cuda_storage_alloc(GPU0, 512, 0, &s)) return 1;
  if (dlpx_cuda_ipc_export(s, &e, &h)) return 2;
  if (write(g_to_parent[1], &h, sizeof h) != (ssize_t)sizeof h) return 3;
  dlpx_cuda_ipc_handle h2;
  if (dlpx_cuda_ipc_export(s, &e, &h2)) return 4;
  dlpx_cuda_export_close(e); /* closed, never opened: released at once */
  if (write(g_to_parent[1], &h2, sizeof h2) != (ssize_t)sizeof h2) return 5;
  if (hear(g_to_child[0]) != 'q') return 6;
  return 0; /* exits with the first export open */
}

static void test_ipc_producer_gone(void) {
  ASSERT_EQ(pipe(g_to_child), 0);
  ASSERT_EQ(pipe(g_to_parent), 0);
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) _exit(ipc_gone_child());
  dlpx_cuda_ipc_handle h, h2;
  ASSERT_EQ(read(g_to_parent[0], &h, sizeof h), (ssize_t)sizeof h);
  ASSERT_EQ(read(g_to_parent[0], &h2, sizeof h2), (ssize_t)sizeof h2);
  dlpx_storage *s;
  ASSERT_RC(DLPX_ENOENT, dlpx_cuda_ipc_open(&h2, 0, &s));
  ASSERT_MSG("gone");
  say(g_to_child[1], 'q');
  int status;
  waitpid(pid, &status, 0);
  ASSERT_EQ(WEXITSTATUS(status), 0);
  ASSERT_RC(DLPX_ENOENT, dlpx_cuda_ipc_open(&h, 0, &s));
  ASSERT_MSG("gone");
  /* the producer died with an export open (no destructor ran): its cell
   * is swept */
  char prefix[64];
  snprintf(prefix, sizeof prefix, "dlpx-cuda-ipc.%d.", (int)pid);
  ASSERT_EQ(count_cells(prefix), 1);
  ASSERT_EQ(dlpx_cuda_ipc_collect(), 0);
  ASSERT_EQ(count_cells(prefix), 0);
  close(g_to_child[0]);
  close(g_to_child[1]);
  close(g_to_parent[0]);
  close(g_to_parent[1]);
}

static void test_everything_freed(void) {
  ASSERT_OK(dlpx_cuda_empty_cache(GPU0));
  ASSERT_OK(dlpx_cuda_empty_cache(GPU1));
  ASSERT_OK(dlpx_cuda_empty_cache(PINNED));
  ASSERT_EQ(fake.live_bytes(0), 0);
  ASSERT_EQ(fake.live_bytes(1), 0);
  ASSERT_EQ(fake.live_allocations(), 0);
  char prefix[64];
  snprintf(prefix, sizeof prefix, "dlpx-cuda-ipc.%d.", (int)getpid());
  ASSERT_EQ(count_cells(prefix), 0);
}

int main(void) {
  setenv("DLPX_LIBCUDA", FAKECUDA_PATH, 1);
  setenv("FAKECUDA_DEVICES", "2", 1);
  setenv("FAKECUDA_MEMORY", "268435456", 1);
  if (!load_fake()) {
    printf("1..0 # SKIP the driver double %s does not load: %s\n", FAKECUDA_PATH, dlerror());
    return 0;
  }
  RUN(test_loading_failures);
  RUN(test_devices);
  RUN(test_streams_events);
  RUN(test_stream_order_and_stale_read);
  RUN(test_pool_rounding);
  RUN(test_pool_reuse_by_stream);
  RUN(test_pool_limit_and_oom);
  RUN(test_pinned_pool_waits_for_copies);
  RUN(test_pool_cycles_no_leak);
  RUN(test_pool_threads);
  RUN(test_storages);
  RUN(test_host_register);
  RUN(test_copies);
  RUN(test_copy_3d_and_zero_size);
  RUN(test_copy_errors);
  RUN(test_storage_streams);
  RUN(test_export);
  RUN(test_file_load);
  RUN(test_ipc);
  RUN(test_ipc_importer_killed);
  RUN(test_ipc_producer_gone);
  RUN(test_everything_freed);
  CHECK_DONE();
}
