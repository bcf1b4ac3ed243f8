/* bench_core.c - timings of the core dlpx paths.
 *
 * Prints one plain-text table: the cost of a DLPack export+release and of an
 * import+release cycle, and the bandwidth of strided copies (contiguous,
 * 2-D transpose, 3-D permute) next to plain memcpy measured in the same run.
 * Each row is the median of several repetitions after warm-ups, timed with
 * CLOCK_MONOTONIC.  Targets are printed beside the measurements; nothing here
 * ever fails because of a time.  The program exits non-zero only when a dlpx
 * call fails or a copy produces wrong data.
 *
 * Usage: bench_core [--quick]
 *   --quick  small sizes and few repetitions: a smoke run for the tests.
 */
#include "config.h" /* first: _GNU_SOURCE for clock_gettime under -std=c11 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <dlpx/dlpx.h>

/* ---- timing and reporting helpers ------------------------------------------------ */

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Median of |n| samples (sorts them in place). */
static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void die(const char *what, int rc) {
  fprintf(stderr, "bench_core: %s failed: %s (%s)\n", what, dlpx_error_name(rc),
          dlpx_last_error());
  exit(1);
}

static void check(int rc, const char *what) {
  if (rc != 0) die(what, rc);
}

#define MAX_REPS 15

typedef struct {
  int quick;
  int reps;        /* repetitions per row; the median is reported */
  int warmups;     /* untimed runs before them */
  long cycles;     /* calls per repetition of a per-call row */
  int64_t mat_n;   /* transpose: mat_n x mat_n float32 */
  int64_t cube[3]; /* permute: a 3-D float32 tensor */
} config;

#define ROW_FORMAT "%-44s %10s %-4s %8s %9s %14s %s"

static void print_rule(void) {
  printf(ROW_FORMAT "\n", "--------------------------------------------", "----------", "----",
         "--------", "---------", "--------------", "------");
}

/* One table row: |value| in |unit|; for copies the memcpy GB/s timed in the
 * same rounds and the ratio (|mem| < 0 leaves both blank); |target| NULL
 * leaves the target blank; |status| is "ok", "MISS" or "" (no target). */
static void print_row(const char *name, double value, const char *unit, double mem,
                      double ratio, const char *target, const char *status) {
  char vbuf[24], mbuf[24] = "", rbuf[24] = "", line[192];
  snprintf(vbuf, sizeof vbuf, "%.2f", value);
  if (mem >= 0) {
    snprintf(mbuf, sizeof mbuf, "%.2f", mem);
    snprintf(rbuf, sizeof rbuf, "%.3f", ratio);
  }
  int n = snprintf(line, sizeof line, ROW_FORMAT, name, vbuf, unit, mbuf, rbuf,
                   target ? target : "", status);
  if (n > (int)sizeof line - 1) n = (int)sizeof line - 1;
  while (n > 0 && line[n - 1] == ' ') line[--n] = '\0';
  puts(line);
}

/* ---- machine description ------------------------------------------------------------ */

/* Copies the value of the first "model name" line of /proc/cpuinfo (other
 * architectures: "Hardware", "cpu model", "cpu") into |buf|. */
static void cpu_model(char *buf, size_t size) {
  static const char *const keys[] = {"model name", "Hardware", "cpu model", "cpu"};
  snprintf(buf, size, "unknown");
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[512];
  int best = (int)(sizeof keys / sizeof keys[0]); /* index of the key found so far */
  while (fgets(line, sizeof line, f)) {
    char *colon = strchr(line, ':');
    if (!colon) continue;
    for (int k = 0; k < best; k++) {
      size_t kl = strlen(keys[k]);
      if (strncmp(line, keys[k], kl) != 0) continue;
      const char *rest = line + kl;
      while (*rest == ' ' || *rest == '\t') rest++;
      if (rest != colon) continue; /* "cpu MHz" is not "cpu" */
      const char *v = colon + 1;
      while (*v == ' ' || *v == '\t') v++;
      snprintf(buf, size, "%s", v);
      buf[strcspn(buf, "\n")] = '\0';
      best = k;
      break;
    }
  }
  fclose(f);
}

/* ---- export + release ---------------------------------------------------------------- */

static double bench_export(const config *c, const dlpx_tensor *t, int legacy) {
  double samples[MAX_REPS];
  for (int r = -c->warmups; r < c->reps; r++) {
    double t0 = now_ns();
    for (long i = 0; i < c->cycles; i++) {
      if (legacy) {
        DLManagedTensor *m;
        int rc = dlpx_tensor_export_legacy(t, 0, &m);
        if (rc) die("dlpx_tensor_export_legacy", rc);
        m->deleter(m);
      } else {
        DLManagedTensorVersioned *m;
        int rc = dlpx_tensor_export(t, 0, &m);
        if (rc) die("dlpx_tensor_export", rc);
        m->deleter(m);
      }
    }
    double dt = now_ns() - t0;
    if (r >= 0) samples[r] = dt / (double)c->cycles;
  }
  return median(samples, c->reps);
}

/* ---- import + release of a foreign tensor ---------------------------------------------- */

/* A minimal foreign producer: one static managed tensor of each kind over a
 * static 16x16 float32 buffer, reused for every import.  The deleters only
 * count, so the measurement is dlpx's own cost. */
static float foreign_data[16 * 16];
static int64_t foreign_shape[2] = {16, 16};
static int64_t foreign_strides[2] = {16, 1};
static long foreign_deleted, foreign_deleted_legacy;

static void foreign_deleter(DLManagedTensorVersioned *self) {
  (void)self;
  foreign_deleted++;
}

static void foreign_deleter_legacy(DLManagedTensor *self) {
  (void)self;
  foreign_deleted_legacy++;
}

static void foreign_dltensor(DLTensor *dl) {
  dl->data = foreign_data;
  dl->device.device_type = kDLCPU;
  dl->device.device_id = 0;
  dl->ndim = 2;
  dl->dtype.code = kDLFloat;
  dl->dtype.bits = 32;
  dl->dtype.lanes = 1;
  dl->shape = foreign_shape;
  dl->strides = foreign_strides;
  dl->byte_offset = 0;
}

static DLManagedTensorVersioned foreign;
static DLManagedTensor foreign_legacy;

static double bench_import(const config *c, int legacy) {
  double samples[MAX_REPS];
  long expected = 0;
  for (int r = -c->warmups; r < c->reps; r++) {
    double t0 = now_ns();
    for (long i = 0; i < c->cycles; i++) {
      dlpx_tensor *t;
      if (legacy) {
        int rc = dlpx_tensor_import_legacy(&foreign_legacy, 0, &t);
        if (rc) die("dlpx_tensor_import_legacy", rc);
      } else {
        int rc = dlpx_tensor_import(&foreign, 0, &t);
        if (rc) die("dlpx_tensor_import", rc);
      }
      dlpx_tensor_free(t);
    }
    double dt = now_ns() - t0;
    expected += c->cycles;
    if (r >= 0) samples[r] = dt / (double)c->cycles;
  }
  if ((legacy ? foreign_deleted_legacy : foreign_deleted) != expected) {
    fprintf(stderr, "bench_core: foreign deleter ran %ld times, expected %ld\n",
            legacy ? foreign_deleted_legacy : foreign_deleted, expected);
    exit(1);
  }
  return median(samples, c->reps);
}

/* ---- copies ---------------------------------------------------------------------------- */

static const DLDataType f32 = {kDLFloat, 32, 1};

/* A new C-contiguous float32 tensor; with |fill| element i holds i (exact in
 * float32 up to 2^24 elements, which is enough to tell positions apart in
 * the checks below), else every page is written once so page faults stay out
 * of the timings. */
static dlpx_tensor *new_f32(int32_t ndim, const int64_t *shape, int fill) {
  dlpx_tensor *t;
  check(dlpx_tensor_empty(f32, ndim, shape, &t), "dlpx_tensor_empty");
  float *p = dlpx_tensor_data(t);
  int64_t n = dlpx_tensor_numel(t);
  if (fill)
    for (int64_t i = 0; i < n; i++) p[i] = (float)(i & 0xffffff);
  else
    memset(p, 0, (size_t)n * sizeof(float));
  return t;
}

/* The plain memcpy that every copy row is compared with: 64 MiB (1 MiB with
 * --quick) between two buffers of its own.  Its timings are taken alternately
 * with those of each row, so both see the same state of the machine; all of
 * them together give the memcpy row. */
typedef struct {
  void *src, *dst;
  size_t nbytes;
  double all[4 * MAX_REPS]; /* every memcpy sample, seconds */
  int nall;
} memcpy_ref;

/* Times |c->reps| rounds of { memcpy, dlpx_tensor_copy_into(dst, src) }
 * after warm-up rounds; returns the median seconds of the copy and writes
 * the median of the memcpy rounds to *mem_s. */
static double time_copy(const config *c, memcpy_ref *m, const dlpx_tensor *dst,
                        const dlpx_tensor *src, double *mem_s) {
  double cs[MAX_REPS], ms[MAX_REPS];
  for (int r = -c->warmups; r < c->reps; r++) {
    double t0 = now_ns();
    memcpy(m->dst, m->src, m->nbytes); /* dst escapes: not a dead store */
    double t1 = now_ns();
    check(dlpx_tensor_copy_into(dst, src), "dlpx_tensor_copy_into");
    double t2 = now_ns();
    if (r >= 0) {
      ms[r] = (t1 - t0) * 1e-9;
      cs[r] = (t2 - t1) * 1e-9;
      if (m->nall < (int)(sizeof m->all / sizeof m->all[0])) m->all[m->nall++] = ms[r];
    }
  }
  *mem_s = median(ms, c->reps);
  return median(cs, c->reps);
}

/* Checks dst == src element by element, walking src through its strides
 * (float32, any ndim <= 3); exits on the first difference. */
static void verify(const dlpx_tensor *dst, const dlpx_tensor *src, const char *what) {
  const int32_t nd = dlpx_tensor_ndim(src);
  const int64_t *shape = dlpx_tensor_shape(src), *st = dlpx_tensor_strides(src);
  const float *s = dlpx_tensor_data(src), *d = dlpx_tensor_data(dst);
  int64_t n[3] = {1, 1, 1}, ss[3] = {0, 0, 0};
  for (int32_t i = 0; i < nd; i++) {
    n[3 - nd + i] = shape[i];
    ss[3 - nd + i] = st[i];
  }
  int64_t k = 0; /* dst is C-contiguous */
  for (int64_t i = 0; i < n[0]; i++)
    for (int64_t j = 0; j < n[1]; j++)
      for (int64_t l = 0; l < n[2]; l++, k++) {
        float want = s[i * ss[0] + j * ss[1] + l * ss[2]];
        if (memcmp(&d[k], &want, sizeof want) != 0) {
          fprintf(stderr, "bench_core: %s copied wrong data at element %lld\n", what,
                  (long long)k);
          exit(1);
        }
      }
}

static double gbps(int64_t bytes, double seconds) { return (double)bytes / seconds * 1e-9; }

/* ---- main ------------------------------------------------------------------------------ */

int main(int argc, char **argv) {
  config c;
  memset(&c, 0, sizeof c);
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0) {
      c.quick = 1;
    } else {
      fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
      return 2;
    }
  }
  if (c.quick) {
    c.reps = 3;
    c.warmups = 1;
    c.cycles = 2000;
    c.mat_n = 512;                          /* 1 MiB */
    c.cube[0] = c.cube[1] = c.cube[2] = 64; /* 1 MiB */
  } else {
    c.reps = 11;
    c.warmups = 2;
    c.cycles = 200000;
    c.mat_n = 4096;                          /* 64 MiB */
    c.cube[0] = c.cube[1] = c.cube[2] = 256; /* 64 MiB */
  }
  const int64_t cont_elems = c.mat_n * c.mat_n; /* the contiguous copy moves the same bytes */
  const int64_t cont_bytes = cont_elems * 4;

  char model[256];
  cpu_model(model, sizeof model);
  printf("dlpx %s core benchmark%s\n", dlpx_version_string(), c.quick ? " (--quick)" : "");
  printf("machine: %ld online CPUs (nproc), %s\n", sysconf(_SC_NPROCESSORS_ONLN), model);
  printf("method:  CLOCK_MONOTONIC; median of %d repetitions after %d warm-up(s); a ns row\n"
         "         averages %ld calls per repetition.  GB/s = 1e9 bytes copied (one direction)\n"
         "         per second; \"memcpy\" = GB/s of a plain memcpy of as many bytes timed\n"
         "         alternately with that row; \"vs memcpy\" = memcpy time / copy time there\n\n",
         c.reps, c.warmups, c.cycles);
  printf(ROW_FORMAT "\n", "benchmark", "measured", "unit", "memcpy", "vs memcpy", "target",
         "status");
  print_rule();

  /* 1. export + release */
  {
    const int64_t shape[2] = {16, 16};
    dlpx_tensor *t = new_f32(2, shape, 1);
    double v = bench_export(&c, t, 0);
    print_row("export+release (versioned), 16x16 f32", v, "ns", -1, -1, "<= 100 ns",
              v <= 100 ? "ok" : "MISS");
    double l = bench_export(&c, t, 1);
    print_row("export+release (legacy), 16x16 f32", l, "ns", -1, -1, "<= 100 ns",
              l <= 100 ? "ok" : "MISS");
    dlpx_tensor_free(t);
  }

  /* 2. import + release of a foreign tensor */
  {
    foreign_dltensor(&foreign.dl_tensor);
    foreign.version.major = DLPACK_MAJOR_VERSION;
    foreign.version.minor = DLPACK_MINOR_VERSION;
    foreign.manager_ctx = NULL;
    foreign.deleter = foreign_deleter;
    foreign.flags = 0;
    foreign_dltensor(&foreign_legacy.dl_tensor);
    foreign_legacy.manager_ctx = NULL;
    foreign_legacy.deleter = foreign_deleter_legacy;
    print_row("import+free (versioned), foreign 16x16 f32", bench_import(&c, 0), "ns", -1, -1,
              NULL, "");
    print_row("import+free (legacy), foreign 16x16 f32", bench_import(&c, 1), "ns", -1, -1, NULL,
              "");
  }

  /* 3. copies, each moving cont_bytes (64 MiB in a full run); rows are
   * printed after the memcpy row, which needs the samples of all of them */
  memcpy_ref ref;
  memset(&ref, 0, sizeof ref);
  ref.nbytes = (size_t)cont_bytes;
  ref.src = malloc(ref.nbytes);
  ref.dst = malloc(ref.nbytes);
  if (!ref.src || !ref.dst) {
    fprintf(stderr, "bench_core: out of memory\n");
    return 1;
  }
  memset(ref.src, 1, ref.nbytes);
  memset(ref.dst, 0, ref.nbytes);
  char names[3][64];
  double gb[3], mem[3], ratio[3], mem_s;
  {
    const int64_t shape[1] = {cont_elems};
    dlpx_tensor *src = new_f32(1, shape, 1), *dst = new_f32(1, shape, 0);
    double t = time_copy(&c, &ref, dst, src, &mem_s);
    verify(dst, src, "contiguous copy");
    snprintf(names[0], sizeof names[0], "copy_into contiguous, %lld MiB f32",
             (long long)(cont_bytes >> 20));
    gb[0] = gbps(cont_bytes, t);
    mem[0] = gbps(cont_bytes, mem_s);
    ratio[0] = mem_s / t;
    dlpx_tensor_free(src);
    dlpx_tensor_free(dst);
  }
  {
    const int64_t shape[2] = {c.mat_n, c.mat_n};
    dlpx_tensor *m = new_f32(2, shape, 1), *dst = new_f32(2, shape, 0), *mt;
    check(dlpx_tensor_transpose(m, &mt), "dlpx_tensor_transpose");
    double t = time_copy(&c, &ref, dst, mt, &mem_s);
    verify(dst, mt, "transpose");
    snprintf(names[1], sizeof names[1], "copy_into transpose %lldx%lld f32", (long long)c.mat_n,
             (long long)c.mat_n);
    gb[1] = gbps(cont_bytes, t);
    mem[1] = gbps(cont_bytes, mem_s);
    ratio[1] = mem_s / t;
    dlpx_tensor_free(mt);
    dlpx_tensor_free(m);
    dlpx_tensor_free(dst);
  }
  {
    const int32_t axes[3] = {2, 0, 1};
    const int64_t pshape[3] = {c.cube[2], c.cube[0], c.cube[1]};
    dlpx_tensor *x = new_f32(3, c.cube, 1), *dst = new_f32(3, pshape, 0), *xp;
    check(dlpx_tensor_permute(x, 3, axes, &xp), "dlpx_tensor_permute");
    double t = time_copy(&c, &ref, dst, xp, &mem_s);
    verify(dst, xp, "permute");
    snprintf(names[2], sizeof names[2], "copy_into permute(2,0,1) %lldx%lldx%lld f32",
             (long long)c.cube[0], (long long)c.cube[1], (long long)c.cube[2]);
    gb[2] = gbps(dlpx_tensor_nbytes(x), t); /* = cont_bytes with the sizes above */
    mem[2] = gbps(cont_bytes, mem_s);
    ratio[2] = mem_s / t;
    dlpx_tensor_free(xp);
    dlpx_tensor_free(x);
    dlpx_tensor_free(dst);
  }
  char name[64];
  snprintf(name, sizeof name, "memcpy, %lld MiB (median of all rounds)",
           (long long)(cont_bytes >> 20));
  const double all = gbps(cont_bytes, median(ref.all, ref.nall));
  print_row(name, all, "GB/s", all, 1.0, NULL, "");
  print_row(names[0], gb[0], "GB/s", mem[0], ratio[0], NULL, "");
  print_row(names[1], gb[1], "GB/s", mem[1], ratio[1], ">= 0.50 memcpy",
            ratio[1] >= 0.5 ? "ok" : "MISS");
  print_row(names[2], gb[2], "GB/s", mem[2], ratio[2], NULL, "");
  free(ref.src);
  free(ref.dst);
  print_rule();
  printf("targets are goals, not checks: a MISS never changes the exit status\n");
  return 0;
}
