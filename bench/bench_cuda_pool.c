/* bench_cuda_pool.c - the cost of one allocate+free pair of CUDA device
 * memory from C: libdlpx's caching pool (dlpx_cuda_pool_alloc /
 * dlpx_cuda_pool_free) beside the driver's own cuMemAlloc / cuMemFree,
 * measured in the same run.  bench/bench_cuda.py compiles and runs it and
 * prints its numbers in its pool table; it also runs on its own.
 *
 * The driver is opened the way libdlpx opens it ($DLPX_LIBCUDA, else
 * libcuda.so.1), so against the test double (tests/fakecuda.c) both columns
 * exercise the same fake and the program doubles as a smoke test.
 *
 * Output: one line per measurement, "<method> <bytes> <ns per pair>", or
 * "<method> <bytes> n/a <reason>"; the median of the repetitions after
 * warm-ups, timed with CLOCK_MONOTONIC.  Nothing here fails because of a
 * time: the exit status is non-zero only when a call fails.
 *
 * Usage: bench_cuda_pool [--quick] [BYTES ...]   (default sizes 4 KiB,
 * 1 MiB, 64 MiB)
 */
#define _GNU_SOURCE /* clock_gettime and dlopen under -std=c11 */

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dlpx/cuda.h>
#include <dlpx/errors.h>

#define REPS 5

/* ---- timing -------------------------------------------------------------------------- */

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---- the two allocators behind one signature ----------------------------------------- */

/* One allocate+free pair of |bytes|; 0 on success, else a message in |err|. */
typedef int (*pair_fn)(size_t bytes, char *err, size_t errsize);

static int dlpx_pair(size_t bytes, char *err, size_t errsize) {
  DLDevice dev = {kDLCUDA, 0};
  void *p = NULL;
  /* stream 0, the legacy default: a freed block is reusable at once there */
  int rc = dlpx_cuda_pool_alloc(dev, bytes, 0, &p);
  if (rc == 0) rc = dlpx_cuda_pool_free(dev, p, 0);
  if (rc != 0) snprintf(err, errsize, "%s: %s", dlpx_error_name(rc), dlpx_last_error());
  return rc;
}

/* The Driver API entries the raw column needs (versioned names, as the
 * driver exports them). */
typedef int CUresult;
typedef unsigned long long CUdeviceptr;
static struct {
  CUresult (*init)(unsigned);
  CUresult (*device_get)(int *, int);
  CUresult (*ctx_retain)(void **, int);
  CUresult (*ctx_push)(void *);
  CUresult (*mem_alloc)(CUdeviceptr *, size_t);
  CUresult (*mem_free)(CUdeviceptr);
} cu;

/* Opens the driver and makes device 0's primary context current; NULL on
 * success, else why not. */
static const char *driver_open(void) {
  static char why[512];
  const char *path = getenv("DLPX_LIBCUDA");
  if (!path || !*path) path = "libcuda.so.1";
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    snprintf(why, sizeof why, "dlopen(%s): %s", path, dlerror());
    return why;
  }
#define SYM(field, name)                                        \
  do {                                                          \
    *(void **)&cu.field = dlsym(h, name);                       \
    if (!cu.field) {                                            \
      snprintf(why, sizeof why, "%s has no %s", path, name);    \
      return why;                                               \
    }                                                           \
  } while (0)
  SYM(init, "cuInit");
  SYM(device_get, "cuDeviceGet");
  SYM(ctx_retain, "cuDevicePrimaryCtxRetain");
  SYM(ctx_push, "cuCtxPushCurrent_v2");
  SYM(mem_alloc, "cuMemAlloc_v2");
  SYM(mem_free, "cuMemFree_v2");
#undef SYM
  int dev = 0;
  void *ctx = NULL;
  CUresult r = cu.init(0);
  if (r == 0) r = cu.device_get(&dev, 0);
  if (r == 0) r = cu.ctx_retain(&ctx, dev);
  if (r == 0) r = cu.ctx_push(ctx); /* stays current on this thread for the run */
  if (r != 0) {
    snprintf(why, sizeof why, "the driver did not start (CUresult %d)", r);
    return why;
  }
  return NULL;
}

static int driver_pair(size_t bytes, char *err, size_t errsize) {
  CUdeviceptr p = 0;
  CUresult r = cu.mem_alloc(&p, bytes);
  if (r == 0) r = cu.mem_free(p);
  if (r != 0) snprintf(err, errsize, "cuMemAlloc/cuMemFree: CUresult %d", r);
  return r;
}

/* ---- one row -------------------------------------------------------------------------- */

/* Prints the median ns per pair of |pairs| pairs, after |pairs| / 10 + 1
 * warm-ups (which fill the pool's cache).  Returns 0, or 1 when a call
 * failed (printed as n/a). */
static int measure(const char *name, pair_fn fn, size_t bytes, long pairs) {
  char err[512] = "";
  double per[REPS];
  for (long i = 0; i < pairs / 10 + 1; i++)
    if (fn(bytes, err, sizeof err) != 0) goto fail;
  for (int r = 0; r < REPS; r++) {
    double t0 = now_ns();
    for (long i = 0; i < pairs; i++)
      if (fn(bytes, err, sizeof err) != 0) goto fail;
    per[r] = (now_ns() - t0) / (double)pairs;
  }
  printf("%s %zu %.1f\n", name, bytes, median(per, REPS));
  fflush(stdout);
  return 0;
fail:
  printf("%s %zu n/a %s\n", name, bytes, err);
  fflush(stdout);
  return 1;
}

int main(int argc, char **argv) {
  int quick = 0;
  size_t sizes[16];
  int n = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--quick"))
      quick = 1;
    else if (n < 16)
      sizes[n++] = (size_t)strtoull(argv[i], NULL, 0);
  }
  if (n == 0) {
    sizes[n++] = 4096;
    sizes[n++] = 1u << 20;
    sizes[n++] = 64u << 20;
  }
  if (!dlpx_cuda_available()) {
    printf("no-gpu %s\n", dlpx_last_error());
    return 0;
  }
  const char *why = driver_open();
  int failed = 0;
  for (int i = 0; i < n; i++) {
    /* the pool's pairs cost ~100 ns, the driver's microseconds to milliseconds */
    failed |= measure("dlpx_pool", dlpx_pair, sizes[i], quick ? 2000 : 100000);
    if (why)
      printf("cuMemAlloc %zu n/a %s\n", sizes[i], why);
    else
      failed |= measure("cuMemAlloc", driver_pair, sizes[i], quick ? 50 : 500);
  }
  return failed;
}
