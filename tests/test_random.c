/* test_random.c - randomized tests of views and copies against reference
 * models written independently of the library.
 *
 * Every case draws its parameters from the splitmix generator of check.h,
 * seeded by check_seed(): DLPX_TEST_SEED replays a run, and DLPX_TEST_CASE=N
 * runs only case N of each test (the cases before it are drawn but not run).
 * A failing case prints its number and what it did, then its test stops;
 * only the checks marked with defer_fail() let the run go on and report their
 * first failure when the test ends.  Under valgrind (under_valgrind()) each
 * test runs 1/20 of its cases.
 *
 *  1. views: the reference of a view is its shape and the flat storage index
 *     of each element in C order.  Random chains of slice, select, index,
 *     permute, transpose, reshape, squeeze, unsqueeze and broadcast_to
 *     transform it with plain index arithmetic (Python slices by walking the
 *     candidate indices); every element the library's view addresses, the
 *     contiguity flags, the extent and the error codes are compared with it.
 *  2. copy_into: the expected destination is read element by element through
 *     the source's own strides from snapshots of the storages, bit by bit for
 *     sub-byte types; every other bit of the destination storage must keep
 *     its old value.  Views come from view calls, from explicit strides and
 *     offsets (also over wrapped memory of exactly the bytes they touch), and
 *     overlap in one storage; destinations that write an element twice must
 *     be refused.
 *  3. copy('C'/'F') and contiguous: the layout of the result and every
 *     element.
 */
#include "config.h"

#include <stdarg.h>
#include <stdbool.h>

#include "check.h"

#if defined(__GNUC__)
#define TR_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define TR_PRINTF(a, b)
#endif

#define MAXD 16     /* the most dimensions a test view gets */
#define VCAP 20000  /* the most elements a view of the view test gets */

/* Runs a helper that may fail an ASSERT_* and returns from the caller too. */
#define SUB(call)                         \
  do {                                    \
    int sub_failed_ = check__failed;      \
    call;                                 \
    if (check__failed != sub_failed_) return; \
  } while (0)

/* A value *out never holds unless a call wrote it. */
static char out_marker;
#define OUT_MARK ((dlpx_tensor *)(void *)&out_marker)

/* ---- per-case bookkeeping ----------------------------------------------------- */

/* Everything a case makes is freed after it, even when an assertion returned
 * early. */
#define ARENA_T 512
#define ARENA_S 16
#define ARENA_M 64
static dlpx_tensor *arena_t[ARENA_T];
static int arena_nt;
static dlpx_storage *arena_s[ARENA_S];
static int arena_ns;
static void *arena_m[ARENA_M];
static int arena_nm;

static dlpx_tensor *keep(dlpx_tensor *t) {
  if (arena_nt == ARENA_T) {
    fprintf(stderr, "# test_random: too many tensors in one case\n");
    exit(99);
  }
  arena_t[arena_nt++] = t;
  return t;
}

static void keep_storage(dlpx_storage *s) {
  if (arena_ns == ARENA_S) {
    fprintf(stderr, "# test_random: too many storages in one case\n");
    exit(99);
  }
  arena_s[arena_ns++] = s;
}

static void *tmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p || arena_nm == ARENA_M) {
    fprintf(stderr, "# test_random: out of memory\n");
    exit(99);
  }
  arena_m[arena_nm++] = p;
  return p;
}

static void arena_free(void) {
  while (arena_nt > 0) dlpx_tensor_free(arena_t[--arena_nt]);
  while (arena_ns > 0) dlpx_storage_release(arena_s[--arena_ns]);
  while (arena_nm > 0) free(arena_m[--arena_nm]);
}

/* What the current case did, printed when it fails. */
static char note_buf[16384];
static size_t note_len;

TR_PRINTF(1, 2) static void note(const char *fmt, ...) {
  if (note_len + 1 >= sizeof note_buf) return;
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(note_buf + note_len, sizeof note_buf - note_len, fmt, ap);
  va_end(ap);
  if (k > 0) note_len += (size_t)k;
  if (note_len >= sizeof note_buf) note_len = sizeof note_buf - 1;
}

static void note_dims(const char *label, int32_t nd, const int64_t *v) {
  note("%s(", label);
  for (int32_t i = 0; i < nd; i++) note(i ? ",%lld" : "%lld", (long long)v[i]);
  note(")");
}

static void note_bound(int64_t v) {
  if (v == DLPX_NONE)
    note("None");
  else
    note("%lld", (long long)v);
}

static void note_view(const char *label, const dlpx_tensor *t) {
  int32_t nd = dlpx_tensor_ndim(t);
  note(" %s=[", label);
  note_dims("shape", nd, dlpx_tensor_shape(t));
  note_dims(" strides", nd, dlpx_tensor_strides(t));
  note(" off=%lld flags=%u]", (long long)dlpx_tensor_byte_offset(t), dlpx_tensor_flags(t));
}

static void fmt_index(char *buf, size_t size, int32_t nd, const int64_t *shape, int64_t linear) {
  int64_t idx[MAXD];
  for (int32_t k = nd - 1; k >= 0; k--) {
    idx[k] = shape[k] ? linear % shape[k] : 0;
    linear = shape[k] ? linear / shape[k] : 0;
  }
  size_t len = 0;
  buf[0] = '\0';
  for (int32_t k = 0; k < nd && len + 1 < size; k++) {
    int w = snprintf(buf + len, size - len, k ? ",%lld" : "%lld", (long long)idx[k]);
    if (w < 0) break;
    len += (size_t)w;
  }
  if (len >= size) buf[size - 1] = '\0';
}

/* Failures that do not stop the run: the first of each kind (with its case)
 * is reported when the test ends, so that one contract violation found in
 * many cases does not hide the checks of all the cases after it. */
#define DEFER_KINDS 2
static long cur_case, deferred_n[DEFER_KINDS];
static char deferred_first[DEFER_KINDS][2048];

TR_PRINTF(2, 3) static void defer_fail(int kind, const char *fmt, ...) {
  if (deferred_n[kind]++ > 0) return;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(deferred_first[kind], sizeof deferred_first[kind], "case %ld: %s; the case did: %.1200s",
           cur_case, msg, note_buf);
}

static void report_deferred(const char *what) {
  for (int k = 0; k < DEFER_KINDS; k++) {
    if (deferred_n[k] > 0)
      CHECK_FAIL_("%s: this check failed %ld time(s) without stopping the run; the first, %s",
                  what, deferred_n[k], deferred_first[k]);
    deferred_n[k] = 0;
  }
}

typedef void (*case_fn)(check_rng *r);

static long case_count(long full) { return under_valgrind() ? full / 20 : full; }

/* Runs |count| cases, each with its own generator drawn from |master|. */
static void run_cases(const char *what, case_fn fn, long count, check_rng *master) {
  const char *only = getenv("DLPX_TEST_CASE");
  long only_case = only ? strtol(only, NULL, 0) : -1;
  for (long i = 0; i < count; i++) {
    check_rng r = {rng_next(master)};
    if (only_case >= 0 && i != only_case) continue;
    note_len = 0;
    note_buf[0] = '\0';
    cur_case = i;
    int before = check__failed;
    fn(&r);
    arena_free();
    if (check__failed != before) {
      fprintf(stderr, "# %s: case %ld failed (replay: DLPX_TEST_CASE=%ld with the same seed)\n",
              what, i, i);
      fprintf(stderr, "# case %ld did: %s\n", i, note_buf);
      return;
    }
  }
}

/* Pointwise geometry, to prove a view call left its input alone. */
typedef struct {
  int32_t nd;
  int64_t shape[DLPX_MAX_NDIM];
  int64_t strides[DLPX_MAX_NDIM];
  int64_t off;
} geom;

static void geom_get(const dlpx_tensor *t, geom *g) {
  g->nd = dlpx_tensor_ndim(t);
  for (int32_t k = 0; k < g->nd; k++) {
    g->shape[k] = dlpx_tensor_shape(t)[k];
    g->strides[k] = dlpx_tensor_strides(t)[k];
  }
  g->off = dlpx_tensor_byte_offset(t);
}

static bool geom_same(const dlpx_tensor *t, const geom *g) {
  if (dlpx_tensor_ndim(t) != g->nd || dlpx_tensor_byte_offset(t) != g->off) return false;
  for (int32_t k = 0; k < g->nd; k++)
    if (dlpx_tensor_shape(t)[k] != g->shape[k] || dlpx_tensor_strides(t)[k] != g->strides[k])
      return false;
  return true;
}

/* Checks |rc| of a call that makes *out from |in|: 0 when |want| is 0,
 * otherwise |want| or |want2| (when non-zero); on failure *out still holds
 * OUT_MARK and the thread's last error is rc. */
static void check_rc(const char *what, int rc, int want, int want2, dlpx_tensor *out,
                     const dlpx_tensor *in, const geom *g) {
  if (rc == 0 && out != OUT_MARK && out) keep(out);
  if (in && !geom_same(in, g)) {
    CHECK_FAIL_("%s changed its input view", what);
    return;
  }
  if (want == 0) {
    if (rc != 0) {
      CHECK_FAIL_("%s returned %s, expected success: %s", what, dlpx_error_name(rc),
                  dlpx_last_error());
      return;
    }
    if (out == OUT_MARK || !out) {
      CHECK_FAIL_("%s succeeded without writing *out", what);
      return;
    }
    return;
  }
  if (rc != want && (want2 == 0 || rc != want2)) {
    CHECK_FAIL_("%s returned %s, expected %s%s%s (%s)", what, dlpx_error_name(rc),
                dlpx_error_name(want), want2 ? " or " : "", want2 ? dlpx_error_name(want2) : "",
                rc ? dlpx_last_error() : "no error");
    return;
  }
  if (out != OUT_MARK) {
    CHECK_FAIL_("%s failed with %s but changed *out", what, dlpx_error_name(rc));
    return;
  }
  if (dlpx_last_error_code() != rc || dlpx_last_error()[0] == '\0') {
    CHECK_FAIL_("%s failed with %s but the last error is %s \"%s\"", what, dlpx_error_name(rc),
                dlpx_error_name(dlpx_last_error_code()), dlpx_last_error());
    return;
  }
}

static void shuffle32(check_rng *r, int32_t *v, int32_t n) {
  for (int32_t i = n - 1; i > 0; i--) {
    int32_t j = (int32_t)rng_range(r, 0, i);
    int32_t t = v[i];
    v[i] = v[j];
    v[j] = t;
  }
}

static int64_t prod(int32_t nd, const int64_t *s) {
  int64_t p = 1;
  for (int32_t i = 0; i < nd; i++) p *= s[i];
  return p;
}

/* ======================================================================== */
/* 1. views against flat-index lists                                         */
/* ======================================================================== */

typedef struct {
  const char *name;
  int64_t size;
} vtype;

static const vtype vtypes[] = {
    {"int8", 1}, {"int16", 2}, {"float32", 4}, {"float64", 8}, {"complex128", 16}};

/* Element |f| of the base tensor holds the value f in the element type. */
static void put_value(unsigned char *p, int kind, int64_t f) {
  switch (kind) {
    case 0: {
      uint8_t v = (uint8_t)(f & 0xff);
      memcpy(p, &v, sizeof v);
      break;
    }
    case 1: {
      uint16_t v = (uint16_t)(f & 0xffff);
      memcpy(p, &v, sizeof v);
      break;
    }
    case 2: {
      float v = (float)f;
      memcpy(p, &v, sizeof v);
      break;
    }
    case 3: {
      double v = (double)f;
      memcpy(p, &v, sizeof v);
      break;
    }
    default: {
      double v[2] = {(double)f, -(double)f - 0.5};
      memcpy(p, v, sizeof v);
      break;
    }
  }
}

static bool value_is(const unsigned char *p, int kind, int64_t f) {
  unsigned char want[16];
  put_value(want, kind, f);
  return memcmp(p, want, (size_t)vtypes[kind].size) == 0;
}

/* A view as the test sees it: its shape and the flat storage index of every
 * element, in C order. */
typedef struct {
  int32_t nd;
  int64_t shape[MAXD];
  int64_t n;
  int64_t *flat;
} vref;

/* How a result view reads its input: result dimension k walks input
 * dimension from[k] (-1: a new dimension that reads nothing) through map[k]
 * (NULL: index i reads index i); input dimensions no result dimension walks
 * stay at fixed[]. */
typedef struct {
  int32_t nd;
  int64_t shape[MAXD];
  int32_t from[MAXD];
  const int64_t *map[MAXD];
  int64_t fixed[MAXD];
} remap;

static int64_t ref_buf[2][VCAP];
static int64_t map_buf[MAXD][VCAP];
static const int64_t zeros_buf[VCAP];

static void remap_identity(remap *m, const vref *in) {
  memset(m, 0, sizeof *m);
  m->nd = in->nd;
  for (int32_t k = 0; k < in->nd; k++) {
    m->shape[k] = in->shape[k];
    m->from[k] = k;
  }
}

static void ref_remap(const vref *in, const remap *m, vref *out) {
  out->nd = m->nd;
  out->n = 1;
  for (int32_t k = 0; k < m->nd; k++) {
    out->shape[k] = m->shape[k];
    out->n *= m->shape[k];
  }
  int64_t idx[MAXD] = {0};
  for (int64_t e = 0; e < out->n; e++) {
    int64_t in_idx[MAXD];
    memcpy(in_idx, m->fixed, sizeof in_idx);
    for (int32_t k = 0; k < m->nd; k++)
      if (m->from[k] >= 0) in_idx[m->from[k]] = m->map[k] ? m->map[k][idx[k]] : idx[k];
    int64_t lin = 0;
    for (int32_t d = 0; d < in->nd; d++) lin = lin * in->shape[d] + in_idx[d];
    out->flat[e] = in->flat[lin];
    for (int32_t k = m->nd - 1; k >= 0; k--) {
      if (++idx[k] < m->shape[k]) break;
      idx[k] = 0;
    }
  }
}

/* The indices Python's range(len)[start:stop:step] picks, in order, found by
 * walking every candidate: the first one inside the bounds anchors the
 * progression.  Returns how many. */
static int64_t ref_slice(int64_t len, int64_t start, int64_t stop, int64_t step, int64_t *out) {
  const bool has_start = start != DLPX_NONE, has_stop = stop != DLPX_NONE;
  int64_t s = start, t = stop, n = 0, first = -1;
  if (has_start && s < 0) s += len;
  if (has_stop && t < 0) t += len;
  if (step > 0) {
    for (int64_t i = 0; i < len; i++) {
      if ((has_start && i < s) || (has_stop && i >= t)) continue;
      if (first < 0) first = i;
      if ((i - first) % step == 0) out[n++] = i;
    }
  } else {
    for (int64_t i = len - 1; i >= 0; i--) {
      if ((has_start && i > s) || (has_stop && i <= t)) continue;
      if (first < 0) first = i;
      if ((first - i) % -step == 0) out[n++] = i;
    }
  }
  return n;
}

/* Whether some strides express |ref| as a view: the candidate stride of each
 * dimension is the distance its unit step moves, and it must hold for every
 * element.  Writes the strides. */
static bool ref_expressible(const vref *ref, int64_t *strides) {
  if (ref->n == 0) return true;
  int64_t unit = 1;
  for (int32_t k = ref->nd - 1; k >= 0; k--) {
    strides[k] = ref->shape[k] > 1 ? ref->flat[unit] - ref->flat[0] : 0;
    unit *= ref->shape[k];
  }
  int64_t idx[MAXD] = {0};
  for (int64_t e = 0; e < ref->n; e++) {
    int64_t at = ref->flat[0];
    for (int32_t k = 0; k < ref->nd; k++) at += idx[k] * strides[k];
    if (at != ref->flat[e]) return false;
    for (int32_t k = ref->nd - 1; k >= 0; k--) {
      if (++idx[k] < ref->shape[k]) break;
      idx[k] = 0;
    }
  }
  return true;
}

/* Counts for the summary line. */
static long stat_ops[9], stat_op_errors[9], stat_reshape_elayout;
static const char *const op_names[9] = {"slice",     "select",  "index",
                                        "permute",   "transpose", "reshape",
                                        "squeeze",   "unsqueeze", "broadcast_to"};

/* Compares view |v| of |base| with |ref|: shape, every element's address and
 * value, the contiguity flags, the byte extent, and that it stays inside the
 * storage. */
static void check_view(const dlpx_tensor *v, const vref *ref, const dlpx_tensor *base, int kind) {
  const int64_t isz = vtypes[kind].size;
  const int32_t nd = dlpx_tensor_ndim(v);
  ASSERT_EQ(nd, ref->nd);
  const int64_t *sh = dlpx_tensor_shape(v), *st = dlpx_tensor_strides(v);
  if (nd > 0) {
    ASSERT_TRUE(sh != NULL);
    ASSERT_TRUE(st != NULL);
  }
  for (int32_t k = 0; k < nd; k++)
    if (sh[k] != ref->shape[k]) {
      CHECK_FAIL_("shape[%d] is %lld, the reference has %lld", (int)k, (long long)sh[k],
                  (long long)ref->shape[k]);
      return;
    }
  ASSERT_EQ(dlpx_tensor_numel(v), ref->n);
  DLDataType a = dlpx_tensor_dtype(v), b = dlpx_tensor_dtype(base);
  ASSERT_EQ(a.code, b.code);
  ASSERT_EQ(a.bits, b.bits);
  ASSERT_EQ(a.lanes, b.lanes);
  ASSERT_PTR_EQ(dlpx_tensor_storage(v), dlpx_tensor_storage(base));
  ASSERT_EQ(dlpx_tensor_flags(v), dlpx_tensor_flags(base));
  const DLTensor *dl = dlpx_tensor_dltensor(v);
  ASSERT_EQ(dl->ndim, nd);
  const int64_t off = dlpx_tensor_byte_offset(v);
  ASSERT_EQ((int64_t)dl->byte_offset, off);
  const dlpx_storage *s = dlpx_tensor_storage(v);
  const int64_t nbytes = (int64_t)dlpx_storage_nbytes(s);
  const unsigned char *sbase = dlpx_storage_data(s);
  ASSERT_PTR_EQ(dl->data, sbase);
  int64_t lo = -1, hi = -1;
  dlpx_tensor_extent(v, &lo, &hi);
  if (ref->n == 0) {
    ASSERT_EQ(lo, 0);
    ASSERT_EQ(hi, 0);
    ASSERT_EQ(dlpx_tensor_is_c_contiguous(v), 1);
    ASSERT_EQ(dlpx_tensor_is_f_contiguous(v), 1);
    /* A view without elements still has element 0 inside its storage, as
     * dlpx_tensor_from_storage demands (0 <= byte_offset <= nbytes) and
     * dlpx_tensor_index takes care to keep. */
    if (off < 0 || off > nbytes)
      defer_fail(0, "empty view has byte offset %lld outside its storage of %lld bytes",
                 (long long)off, (long long)nbytes);
    return;
  }
  if (off < 0 || off >= nbytes) {
    CHECK_FAIL_("byte offset %lld is outside the storage of %lld bytes", (long long)off,
                (long long)nbytes);
    return;
  }
  const unsigned char *data = dlpx_tensor_data(v);
  ASSERT_PTR_EQ(data, sbase + off);
  int64_t idx[MAXD] = {0}, min_e = 0, max_e = 0;
  for (int64_t i = 0; i < ref->n; i++) {
    int64_t e = 0;
    for (int32_t k = 0; k < nd; k++) e += idx[k] * st[k];
    if (e < min_e) min_e = e;
    if (e > max_e) max_e = e;
    int64_t byte = off + e * isz;
    char ib[128];
    if (byte < 0 || byte + isz > nbytes || byte % isz != 0 || byte / isz != ref->flat[i]) {
      fmt_index(ib, sizeof ib, nd, sh, i);
      CHECK_FAIL_("element [%s] is at storage byte %lld (element %lld), the reference says "
                  "element %lld",
                  ib, (long long)byte, (long long)(byte / isz), (long long)ref->flat[i]);
      return;
    }
    if (!value_is(data + e * isz, kind, ref->flat[i])) {
      fmt_index(ib, sizeof ib, nd, sh, i);
      CHECK_FAIL_("element [%s] does not hold the value %lld", ib, (long long)ref->flat[i]);
      return;
    }
    for (int32_t k = nd - 1; k >= 0; k--) {
      if (++idx[k] < sh[k]) break;
      idx[k] = 0;
    }
  }
  ASSERT_EQ(lo, min_e * isz);
  ASSERT_EQ(hi, (max_e + 1) * isz);
  bool c = true, f = true;
  for (int64_t i = 0; i < ref->n && c; i++) c = ref->flat[i] == ref->flat[0] + i;
  int64_t fi[MAXD] = {0};
  for (int64_t i = 0; i < ref->n && f; i++) {
    int64_t lin = 0;
    for (int32_t k = 0; k < nd; k++) lin = lin * sh[k] + fi[k];
    f = ref->flat[lin] == ref->flat[0] + i;
    for (int32_t k = 0; k < nd; k++) {
      if (++fi[k] < sh[k]) break;
      fi[k] = 0;
    }
  }
  ASSERT_EQ(dlpx_tensor_is_c_contiguous(v), c);
  ASSERT_EQ(dlpx_tensor_is_f_contiguous(v), f);
}

/* Only the values (a copy lives in another storage). */
static void check_values(const dlpx_tensor *v, const vref *ref, int kind) {
  const int64_t isz = vtypes[kind].size;
  const int32_t nd = dlpx_tensor_ndim(v);
  ASSERT_EQ(nd, ref->nd);
  const int64_t *sh = dlpx_tensor_shape(v), *st = dlpx_tensor_strides(v);
  for (int32_t k = 0; k < nd; k++) ASSERT_EQ(sh[k], ref->shape[k]);
  const unsigned char *data = dlpx_tensor_data(v);
  int64_t idx[MAXD] = {0};
  for (int64_t i = 0; i < ref->n; i++) {
    int64_t e = 0;
    for (int32_t k = 0; k < nd; k++) e += idx[k] * st[k];
    if (!value_is(data + e * isz, kind, ref->flat[i])) {
      char ib[128];
      fmt_index(ib, sizeof ib, nd, sh, i);
      CHECK_FAIL_("copy: element [%s] does not hold the value %lld", ib, (long long)ref->flat[i]);
      return;
    }
    for (int32_t k = nd - 1; k >= 0; k--) {
      if (++idx[k] < sh[k]) break;
      idx[k] = 0;
    }
  }
}

/* A dimension argument: usually in [-nd, nd), sometimes out of range. */
static int32_t rand_dim(check_rng *r, int32_t nd) {
  if (nd > 0 && rng_range(r, 0, 11) != 0) return (int32_t)rng_range(r, -nd, nd - 1);
  switch (rng_range(r, 0, 3)) {
    case 0: return nd;
    case 1: return -nd - 1;
    case 2: return nd + 2;
    default: return DLPX_ALL_DIMS;
  }
}

static bool dim_valid(int32_t dim, int32_t nd) { return nd > 0 && dim >= -nd && dim < nd; }

static int64_t rand_bound(check_rng *r, int64_t len) {
  if (rng_range(r, 0, 4) == 0) return DLPX_NONE;
  return rng_range(r, -len - 3, len + 3);
}

static int64_t rand_step(check_rng *r) {
  int64_t s = rng_range(r, 1, 3);
  return rng_range(r, 0, 1) ? s : -s;
}

typedef struct {
  check_rng *r;
  const dlpx_tensor *cur;
  const vref *in;
  dlpx_tensor *next; /* the new view, NULL if the operation failed as expected */
  vref *out;
  int kind;
} op_ctx;

static void op_slice(op_ctx *c) {
  const int32_t nd = c->in->nd;
  const int32_t dim = rand_dim(c->r, nd);
  const bool ok = dim_valid(dim, nd);
  const int32_t d = ok ? (dim < 0 ? dim + nd : dim) : 0;
  const int64_t len = ok ? c->in->shape[d] : 4;
  const int64_t start = rand_bound(c->r, len), stop = rand_bound(c->r, len);
  int64_t step = rand_step(c->r);
  /* Step 0 is invalid; DLPX_NONE means 1 (Python's None), as documented. */
  if (rng_range(c->r, 0, 39) == 0) step = 0;
  if (rng_range(c->r, 0, 199) == 0) step = DLPX_NONE;
  note(" slice(%d,", (int)dim);
  note_bound(start);
  note(",");
  note_bound(stop);
  note(",");
  note_bound(step);
  note(")");
  geom g;
  geom_get(c->cur, &g);
  dlpx_tensor *o = OUT_MARK;
  int rc = dlpx_tensor_slice(c->cur, dim, start, stop, step, &o);
  int want = !ok ? DLPX_EINDEX : step == 0 ? DLPX_EINVAL : 0;
  SUB(check_rc("slice", rc, want, 0, o, c->cur, &g));
  if (step == DLPX_NONE) step = 1;
  if (rc) return;
  remap m;
  remap_identity(&m, c->in);
  m.shape[d] = ref_slice(len, start, stop, step, map_buf[d]);
  m.map[d] = map_buf[d];
  ref_remap(c->in, &m, c->out);
  c->next = o;
}

/* An index for an extent: usually in range, sometimes just outside. */
static int64_t rand_index(check_rng *r, int64_t len) {
  if (len > 0 && rng_range(r, 0, 7) != 0) return rng_range(r, -len, len - 1);
  return rng_range(r, 0, 1) ? len + rng_range(r, 0, 2) : -len - 1 - rng_range(r, 0, 2);
}

static void op_select(op_ctx *c) {
  const int32_t nd = c->in->nd;
  const int32_t dim = rand_dim(c->r, nd);
  const bool ok = dim_valid(dim, nd);
  const int32_t d = ok ? (dim < 0 ? dim + nd : dim) : 0;
  const int64_t len = ok ? c->in->shape[d] : 3;
  const int64_t index = rand_index(c->r, len);
  const bool iok = index >= -len && index < len;
  note(" select(%d,%lld)", (int)dim, (long long)index);
  geom g;
  geom_get(c->cur, &g);
  dlpx_tensor *o = OUT_MARK;
  int rc = dlpx_tensor_select(c->cur, dim, index, &o);
  SUB(check_rc("select", rc, ok && iok ? 0 : DLPX_EINDEX, 0, o, c->cur, &g));
  if (rc) return;
  remap m;
  memset(&m, 0, sizeof m);
  m.nd = nd - 1;
  for (int32_t k = 0; k < nd - 1; k++) {
    m.from[k] = k < d ? k : k + 1;
    m.shape[k] = c->in->shape[m.from[k]];
  }
  m.fixed[d] = index < 0 ? index + len : index;
  ref_remap(c->in, &m, c->out);
  c->next = o;
}

static void op_index(op_ctx *c) {
  const int32_t nd = c->in->nd;
  dlpx_index items[12];
  int32_t n = (int32_t)rng_range(c->r, 0, nd + 2 < 8 ? nd + 2 : 8);
  int32_t consumed = 0, ellipses = 0, newaxes = 0;
  bool bad_kind = false;
  for (int32_t i = 0; i < n; i++) {
    int64_t p = rng_range(c->r, 0, 99);
    int32_t kind = p < 38 ? DLPX_INDEX_INT
                   : p < 76 ? DLPX_INDEX_SLICE
                   : p < 88 ? DLPX_INDEX_NEWAXIS
                            : DLPX_INDEX_ELLIPSIS;
    if (kind == DLPX_INDEX_ELLIPSIS && ellipses > 0 && rng_range(c->r, 0, 7) != 0)
      kind = DLPX_INDEX_SLICE;
    if ((kind == DLPX_INDEX_INT || kind == DLPX_INDEX_SLICE) && consumed >= nd &&
        rng_range(c->r, 0, 9) != 0)
      kind = DLPX_INDEX_NEWAXIS;
    if (kind == DLPX_INDEX_NEWAXIS && (newaxes >= 3 || nd >= 12)) kind = DLPX_INDEX_ELLIPSIS;
    if (kind == DLPX_INDEX_ELLIPSIS && ellipses > 0 && rng_range(c->r, 0, 7) != 0)
      kind = DLPX_INDEX_SLICE;
    if (kind == DLPX_INDEX_INT || kind == DLPX_INDEX_SLICE) consumed++;
    if (kind == DLPX_INDEX_NEWAXIS) newaxes++;
    if (kind == DLPX_INDEX_ELLIPSIS) ellipses++;
    items[i].kind = kind;
    items[i].start = items[i].stop = items[i].step = 0;
  }
  if (n > 0 && rng_range(c->r, 0, 59) == 0) {
    items[rng_range(c->r, 0, n - 1)].kind = rng_range(c->r, 0, 1) ? 4 : -1;
    bad_kind = true;
  }
  /* What NumPy would do; the first error in item order wins: an unknown
   * kind is EINVAL, a second ellipsis EINDEX (IndexError, as in NumPy). */
  int want = 0;
  int32_t seen_ellipses = 0;
  for (int32_t i = 0; i < n && !want; i++) {
    const int32_t k = items[i].kind;
    if (k < DLPX_INDEX_INT || k > DLPX_INDEX_ELLIPSIS)
      want = DLPX_EINVAL;
    else if (k == DLPX_INDEX_ELLIPSIS && ++seen_ellipses > 1)
      want = DLPX_EINDEX;
  }
  if (!want && consumed > nd) want = DLPX_EINDEX;
  (void)bad_kind;
  (void)ellipses;
  remap m;
  memset(&m, 0, sizeof m);
  int32_t id = 0;
  for (int32_t i = 0; i < n; i++) {
    dlpx_index *it = &items[i];
    const int64_t len = id < nd ? c->in->shape[id] : 3;
    switch (it->kind) {
      case DLPX_INDEX_ELLIPSIS:
        for (int32_t j = 0; j < nd - consumed && id < nd; j++, id++) {
          m.from[m.nd] = id;
          m.shape[m.nd++] = c->in->shape[id];
        }
        break;
      case DLPX_INDEX_NEWAXIS:
        m.from[m.nd] = -1;
        m.shape[m.nd++] = 1;
        break;
      case DLPX_INDEX_INT:
        it->start = rand_index(c->r, len);
        if (it->start < -len || it->start >= len) {
          if (!want) want = DLPX_EINDEX;
        } else if (id < nd) {
          m.fixed[id] = it->start < 0 ? it->start + len : it->start;
        }
        id++;
        break;
      case DLPX_INDEX_SLICE:
        it->start = rand_bound(c->r, len);
        it->stop = rand_bound(c->r, len);
        it->step = rng_range(c->r, 0, 49) == 0 ? 0 : rand_step(c->r);
        if (it->step == 0 && !want) want = DLPX_EINVAL;
        if (id < nd && m.nd < MAXD) {
          m.from[m.nd] = id;
          m.shape[m.nd] = ref_slice(len, it->start, it->stop, it->step ? it->step : 1,
                                    map_buf[m.nd]);
          m.map[m.nd] = map_buf[m.nd];
          m.nd++;
        }
        id++;
        break;
      default:
        it->start = rng_range(c->r, -3, 3);
        break;
    }
  }
  for (; id < nd && m.nd < MAXD; id++) {
    m.from[m.nd] = id;
    m.shape[m.nd++] = c->in->shape[id];
  }
  note(" index[");
  for (int32_t i = 0; i < n; i++) {
    const dlpx_index *it = &items[i];
    if (i) note(",");
    switch (it->kind) {
      case DLPX_INDEX_INT: note("%lld", (long long)it->start); break;
      case DLPX_INDEX_NEWAXIS: note("None"); break;
      case DLPX_INDEX_ELLIPSIS: note("..."); break;
      case DLPX_INDEX_SLICE:
        note_bound(it->start);
        note(":");
        note_bound(it->stop);
        note(":%lld", (long long)it->step);
        break;
      default: note("kind%d", (int)it->kind); break;
    }
  }
  note("]");
  geom g;
  geom_get(c->cur, &g);
  dlpx_tensor *o = OUT_MARK;
  int rc = dlpx_tensor_index(c->cur, n, n > 0 || rng_range(c->r, 0, 1) ? items : NULL, &o);
  SUB(check_rc("index", rc, want, 0, o, c->cur, &g));
  if (rc) return;
  ref_remap(c->in, &m, c->out);
  c->next = o;
}

static void op_permute(op_ctx *c) {
  const int32_t nd = c->in->nd;
  int32_t axes[MAXD + 1], n = nd;
  for (int32_t i = 0; i < nd; i++) axes[i] = i;
  shuffle32(c->r, axes, nd);
  int32_t norm[MAXD];
  for (int32_t i = 0; i < nd; i++) {
    norm[i] = axes[i];
    if (rng_range(c->r, 0, 1)) axes[i] -= nd;
  }
  int want = 0;
  switch (rng_range(c->r, 0, 24)) {
    case 0:
      n = rng_range(c->r, 0, 1) || nd == 0 ? nd + 1 : nd - 1;
      axes[nd] = 0;
      want = DLPX_EINVAL;
      break;
    case 1:
      if (nd >= 2) {
        axes[1] = rng_range(c->r, 0, 1) ? norm[0] : norm[0] - nd;
        want = DLPX_EINDEX;
      }
      break;
    case 2:
      if (nd >= 1) {
        axes[rng_range(c->r, 0, nd - 1)] = rng_range(c->r, 0, 1) ? nd : -nd - 1;
        want = DLPX_EINDEX;
      }
      break;
    default: break;
  }
  note(" permute(");
  for (int32_t i = 0; i < n; i++) note(i ? ",%d" : "%d", (int)axes[i]);
  note(")");
  geom g;
  geom_get(c->cur, &g);
  dlpx_tensor *o = OUT_MARK;
  int rc = dlpx_tensor_permute(c->cur, n, axes, &o);
  SUB(check_rc("permute", rc, want, 0, o, c->cur, &g));
  if (rc) return;
  remap m;
  memset(&m, 0, sizeof m);
  m.nd = nd;
  for (int32_t k = 0; k < nd; k++) {
    m.from[k] = norm[k];
    m.shape[k] = c->in->shape[norm[k]];
  }
  ref_remap(c->in, &m, c->out);
  c->next = o;
}

static void op_transpose(op_ctx *c) {
  const int32_t nd = c->in->nd;
  note(" transpose()");
  geom g;
  geom_get(c->cur, &g);
  dlpx_tensor *o = OUT_MARK;
  int rc = dlpx_tensor_transpose(c->cur, &o);
  SUB(check_rc("transpose", rc, 0, 0, o, c->cur, &g));
  remap m;
  memset(&m, 0, sizeof m);
  m.nd = nd;
  for (int32_t k = 0; k < nd; k++) {
    m.from[k] = nd - 1 - k;
    m.shape[k] = c->in->shape[nd - 1 - k];
  }
  ref_remap(c->in, &m, c->out);
  c->next = o;
}

/* A random divisor of n > 0. */
static int64_t rand_divisor(check_rng *r, int64_t n) {
  int64_t divs[512];
  int nd = 0;
  for (int64_t d = 1; d * d <= n && nd < 510; d++)
    if (n % d == 0) {
      divs[nd++] = d;
      if (d != n / d) divs[nd++] = n / d;
    }
  return divs[rng_range(r, 0, nd - 1)];
}

static void op_reshape(op_ctx *c) {
  const int64_t n = c->in->n;
  int64_t shp[MAXD];
  int32_t nn = (int32_t)(n == 1 ? rng_range(c->r, 0, 5) : rng_range(c->r, 1, 5));
  if (n == 0) {
    for (int32_t k = 0; k < nn; k++) shp[k] = rng_range(c->r, 0, 6);
    shp[rng_range(c->r, 0, nn - 1)] = 0;
  } else {
    int64_t rem = n;
    for (int32_t k = 0; k + 1 < nn; k++) {
      shp[k] = rand_divisor(c->r, rem);
      rem /= shp[k];
    }
    if (nn > 0) shp[nn - 1] = rem;
    for (int32_t i = nn - 1; i > 0; i--) {
      int32_t j = (int32_t)rng_range(c->r, 0, i);
      int64_t t = shp[i];
      shp[i] = shp[j];
      shp[j] = t;
    }
  }
  if (nn > 0 && rng_range(c->r, 0, 9) < 3) shp[rng_range(c->r, 0, nn - 1)] = -1;
  if (nn > 0) switch (rng_range(c->r, 0, 49)) {
      case 0:
      case 1: {
        int32_t j = (int32_t)rng_range(c->r, 0, nn - 1);
        if (shp[j] >= 0) shp[j]++;
        break;
      }
      case 2:
        if (nn >= 2) shp[0] = shp[nn - 1] = -1;
        break;
      case 3: shp[rng_range(c->r, 0, nn - 1)] = -2 - rng_range(c->r, 0, 3); break;
      default: break;
    }
  note_dims(" reshape", nn, shp);
  /* Expected: NumPy's rules for -1, then a view exactly when some strides
   * express the elements in their C order. */
  int want = 0, infer = -1, minus = 0;
  int64_t known = 1;
  for (int32_t k = 0; k < nn; k++) {
    if (shp[k] == -1) {
      minus++;
      infer = k;
    } else if (shp[k] < 0) {
      want = DLPX_ESHAPE;
    } else {
      known *= shp[k];
    }
  }
  if (minus > 1) want = DLPX_ESHAPE;
  vref *out = c->out;
  out->nd = nn;
  for (int32_t k = 0; k < nn; k++) out->shape[k] = shp[k];
  if (!want) {
    if (minus == 1) {
      if (known == 0 || n % known != 0)
        want = DLPX_ESHAPE;
      else
        out->shape[infer] = n / known;
    } else if (known != n) {
      want = DLPX_ESHAPE;
    }
  }
  int64_t strides[MAXD];
  bool expressible = false;
  if (!want) {
    out->n = n;
    memcpy(out->flat, c->in->flat, (size_t)n * sizeof *out->flat);
    expressible = ref_expressible(out, strides);
    if (!expressible) want = DLPX_ELAYOUT;
  }
  geom g;
  geom_get(c->cur, &g);
  dlpx_tensor *o = OUT_MARK;
  int rc = dlpx_tensor_reshape(c->cur, nn, shp, &o);
  if (rc == DLPX_ELAYOUT && expressible) note_dims(" [a view would do: strides", nn, strides);
  SUB(check_rc("reshape", rc, want, 0, o, c->cur, &g));
  if (rc == DLPX_ELAYOUT) {
    /* Really not a view: not C-contiguous, and a contiguous copy reshapes. */
    stat_reshape_elayout++;
    ASSERT_EQ(dlpx_tensor_is_c_contiguous(c->cur), 0);
    dlpx_tensor *cc = NULL, *cr = NULL;
    ASSERT_OK(dlpx_tensor_contiguous(c->cur, &cc));
    keep(cc);
    ASSERT_EQ(dlpx_tensor_is_c_contiguous(cc), 1);
    ASSERT_OK(dlpx_tensor_reshape(cc, nn, shp, &cr));
    keep(cr);
    ASSERT_PTR_EQ(dlpx_tensor_storage(cr), dlpx_tensor_storage(cc));
    SUB(check_values(cr, out, c->kind));
    return;
  }
  if (rc) return;
  c->next = o;
}

static void op_squeeze(op_ctx *c) {
  const int32_t nd = c->in->nd;
  int32_t dim;
  int64_t p = rng_range(c->r, 0, 2);
  if (p == 0) {
    dim = DLPX_ALL_DIMS;
  } else {
    dim = rand_dim(c->r, nd);
    if (p == 1) /* prefer a dimension of extent 1 */
      for (int32_t k = 0; k < nd; k++)
        if (c->in->shape[k] == 1 && rng_range(c->r, 0, 1)) dim = rng_range(c->r, 0, 1) ? k : k - nd;
  }
  /* NumPy and PyTorch accept axis 0 and -1 of a 0-d tensor: nothing to do. */
  const bool all = dim == DLPX_ALL_DIMS || (nd == 0 && (dim == 0 || dim == -1));
  const bool ok = all || dim_valid(dim, nd);
  const int32_t d = !all && ok ? (dim < 0 ? dim + nd : dim) : -1;
  int want = !ok ? DLPX_EINDEX : (d >= 0 && c->in->shape[d] != 1) ? DLPX_ESHAPE : 0;
  if (all)
    note(" squeeze(all)");
  else
    note(" squeeze(%d)", (int)dim);
  geom g;
  geom_get(c->cur, &g);
  dlpx_tensor *o = OUT_MARK;
  int rc = dlpx_tensor_squeeze(c->cur, dim, &o);
  SUB(check_rc("squeeze", rc, want, 0, o, c->cur, &g));
  if (rc) return;
  remap m;
  memset(&m, 0, sizeof m);
  for (int32_t k = 0; k < nd; k++) {
    if (all ? c->in->shape[k] == 1 : k == d) continue;
    m.from[m.nd] = k;
    m.shape[m.nd++] = c->in->shape[k];
  }
  ref_remap(c->in, &m, c->out);
  c->next = o;
}

static void op_unsqueeze(op_ctx *c) {
  const int32_t nd = c->in->nd;
  if (nd >= 12) return;
  int32_t dim;
  if (rng_range(c->r, 0, 11) != 0) {
    dim = (int32_t)rng_range(c->r, -nd - 1, nd);
  } else {
    int64_t p = rng_range(c->r, 0, 2);
    dim = p == 0 ? nd + 1 : p == 1 ? -nd - 2 : DLPX_ALL_DIMS;
  }
  const bool ok = dim >= -nd - 1 && dim <= nd;
  note(" unsqueeze(%d)", (int)dim);
  geom g;
  geom_get(c->cur, &g);
  dlpx_tensor *o = OUT_MARK;
  int rc = dlpx_tensor_unsqueeze(c->cur, dim, &o);
  SUB(check_rc("unsqueeze", rc, ok ? 0 : DLPX_EINDEX, 0, o, c->cur, &g));
  if (rc) return;
  const int32_t at = dim < 0 ? dim + nd + 1 : dim;
  remap m;
  memset(&m, 0, sizeof m);
  m.nd = nd + 1;
  for (int32_t k = 0, j = 0; k <= nd; k++) {
    if (k == at) {
      m.from[k] = -1;
      m.shape[k] = 1;
    } else {
      m.from[k] = j;
      m.shape[k] = c->in->shape[j++];
    }
  }
  ref_remap(c->in, &m, c->out);
  c->next = o;
}

static void op_broadcast(op_ctx *c) {
  const int32_t nd = c->in->nd;
  if (nd > 12) return;
  int32_t lead = (int32_t)rng_range(c->r, 0, 2), tn = nd + lead;
  int64_t target[MAXD];
  for (int attempt = 0;; attempt++) {
    for (int32_t k = 0; k < tn; k++) {
      if (k < lead) {
        target[k] = rng_range(c->r, 0, 19) == 0 ? 0 : rng_range(c->r, 1, 3);
      } else {
        int64_t have = c->in->shape[k - lead];
        target[k] = have == 1 && rng_range(c->r, 0, 1) ? rng_range(c->r, 0, 4) : have;
      }
      if (attempt > 0 && (k < lead || c->in->shape[k - lead] == 1)) target[k] = 1;
    }
    if (prod(tn, target) <= VCAP) break;
  }
  int want = 0;
  switch (rng_range(c->r, 0, 24)) {
    case 0:
      for (int32_t k = lead; k < tn; k++)
        if (c->in->shape[k - lead] > 1) {
          target[k] = c->in->shape[k - lead] + 1;
          want = DLPX_ESHAPE;
          break;
        }
      break;
    case 1:
      if (nd >= 1) { /* fewer dimensions than the tensor */
        for (int32_t k = 0; k + 1 < nd; k++) target[k] = c->in->shape[k + 1];
        lead = 0;
        tn = nd - 1;
        want = DLPX_ESHAPE;
      }
      break;
    case 2:
      if (tn >= 1) {
        target[rng_range(c->r, 0, tn - 1)] = -1;
        want = DLPX_ESHAPE;
      }
      break;
    default: break;
  }
  note_dims(" broadcast_to", tn, target);
  geom g;
  geom_get(c->cur, &g);
  dlpx_tensor *o = OUT_MARK;
  int rc = dlpx_tensor_broadcast_to(c->cur, tn, target, &o);
  SUB(check_rc("broadcast_to", rc, want, 0, o, c->cur, &g));
  if (rc) return;
  remap m;
  memset(&m, 0, sizeof m);
  m.nd = tn;
  for (int32_t k = 0; k < tn; k++) {
    m.shape[k] = target[k];
    m.from[k] = k < lead ? -1 : k - lead;
    if (k >= lead && c->in->shape[k - lead] == 1) m.map[k] = zeros_buf;
  }
  ref_remap(c->in, &m, c->out);
  c->next = o;
}

static void views_case(check_rng *r) {
  const int kind = (int)rng_range(r, 0, 4);
  const vtype *vt = &vtypes[kind];
  const int32_t nd = (int32_t)rng_range(r, 0, 5);
  int64_t shape[MAXD];
  for (int32_t k = 0; k < nd; k++) shape[k] = rng_range(r, 0, 15) == 0 ? 0 : rng_range(r, 1, 6);
  note("%s", vt->name);
  note_dims(" base", nd, shape);
  dlpx_tensor *base = NULL;
  ASSERT_OK(dlpx_tensor_empty(dt(vt->name), nd, shape, &base));
  keep(base);
  const int64_t n = dlpx_tensor_numel(base);
  unsigned char *p = dlpx_tensor_data(base);
  for (int64_t i = 0; i < n; i++) put_value(p + i * vt->size, kind, i);
  vref a, b;
  a.nd = nd;
  for (int32_t k = 0; k < nd; k++) a.shape[k] = shape[k];
  a.n = n;
  a.flat = ref_buf[0];
  b.flat = ref_buf[1];
  for (int64_t i = 0; i < n; i++) a.flat[i] = i;
  SUB(check_view(base, &a, base, kind));
  const dlpx_tensor *cur = base;
  const int nops = (int)rng_range(r, 1, 4);
  for (int i = 0; i < nops; i++) {
    static const int weights[9] = {3, 1, 3, 1, 1, 3, 1, 1, 2};
    int64_t pick = rng_range(r, 0, 15);
    int op = 0;
    while (pick >= weights[op]) pick -= weights[op++];
    op_ctx c = {r, cur, &a, NULL, &b, kind};
    switch (op) {
      case 0: SUB(op_slice(&c)); break;
      case 1: SUB(op_select(&c)); break;
      case 2: SUB(op_index(&c)); break;
      case 3: SUB(op_permute(&c)); break;
      case 4: SUB(op_transpose(&c)); break;
      case 5: SUB(op_reshape(&c)); break;
      case 6: SUB(op_squeeze(&c)); break;
      case 7: SUB(op_unsqueeze(&c)); break;
      default: SUB(op_broadcast(&c)); break;
    }
    stat_ops[op]++;
    if (!c.next) {
      stat_op_errors[op]++;
      continue;
    }
    SUB(check_view(c.next, &b, base, kind));
    int64_t *t = a.flat;
    a = b;
    b.flat = t;
    cur = c.next;
  }
}

static void test_random_views(void) {
  check_live l;
  check_live_begin(&l);
  check_rng master = {check_seed() ^ 0x1111u};
  memset(stat_ops, 0, sizeof stat_ops);
  memset(stat_op_errors, 0, sizeof stat_op_errors);
  run_cases("views", views_case, case_count(10000), &master);
  printf("# views:");
  for (int i = 0; i < 9; i++)
    printf(" %s %ld (%ld refused)", op_names[i], stat_ops[i], stat_op_errors[i]);
  printf("; reshape needing a copy %ld\n", stat_reshape_elayout);
  report_deferred("views");
  ASSERT_NO_LEAKS(&l);
}

/* ======================================================================== */
/* 2. strided copies against element-by-element reads                        */
/* ======================================================================== */

typedef struct {
  const char *name;
  int64_t bits;
  uint32_t flags;
} ctype;

static const ctype ctypes[] = {
    {"int8", 8, 0},
    {"int16", 16, 0},
    {"float32", 32, 0},
    {"float64", 64, 0},
    {"complex128", 128, 0},
    {"float4_e2m1fn", 4, 0},
    {"float6_e2m3fn", 6, 0},
    {"float4_e2m1fn", 4, DLPX_TENSOR_SUBBYTE_PADDED},
};
#define N_CTYPES ((int64_t)(sizeof ctypes / sizeof ctypes[0]))

/* Bits one element takes in storage. */
static int64_t ebits_of(const ctype *c) {
  return (c->flags & DLPX_TENSOR_SUBBYTE_PADDED) ? 8 : c->bits;
}

static int64_t bytes_for(const ctype *c, int64_t count) { return (count * ebits_of(c) + 7) / 8; }

static void fill_random(check_rng *r, unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(rng_next(r) >> 24);
}

static void fill_sentinel(unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(0xA5u ^ (unsigned)(i * 0x3Bu));
}

static unsigned char *snapshot(const dlpx_tensor *t) {
  const dlpx_storage *s = dlpx_tensor_storage(t);
  size_t n = dlpx_storage_nbytes(s);
  unsigned char *p = tmalloc(n);
  if (n) memcpy(p, dlpx_storage_data(s), n);
  return p;
}

static bool storage_is(const dlpx_tensor *t, const unsigned char *snap) {
  const dlpx_storage *s = dlpx_tensor_storage(t);
  size_t n = dlpx_storage_nbytes(s);
  return n == 0 || memcmp(dlpx_storage_data(s), snap, n) == 0;
}

/* The storage bit position of every element of |t|, in C order. */
static int64_t *elem_bitpos(const dlpx_tensor *t, int64_t ebits) {
  const int64_t n = dlpx_tensor_numel(t);
  const int32_t nd = dlpx_tensor_ndim(t);
  const int64_t *sh = dlpx_tensor_shape(t), *st = dlpx_tensor_strides(t);
  int64_t *pos = tmalloc((size_t)(n > 0 ? n : 1) * sizeof *pos);
  int64_t idx[DLPX_MAX_NDIM] = {0};
  const int64_t base = dlpx_tensor_byte_offset(t) * 8;
  for (int64_t i = 0; i < n; i++) {
    int64_t e = 0;
    for (int32_t k = 0; k < nd; k++) e += idx[k] * st[k];
    pos[i] = base + e * ebits;
    for (int32_t k = nd - 1; k >= 0; k--) {
      if (++idx[k] < sh[k]) break;
      idx[k] = 0;
    }
  }
  return pos;
}

static unsigned bit_at(const unsigned char *p, int64_t pos) {
  return (unsigned)(p[pos / 8] >> (pos % 8)) & 1u;
}

static bool same_bits(const unsigned char *a, int64_t pa, const unsigned char *b, int64_t pb,
                      int64_t n) {
  if (pa % 8 == 0 && pb % 8 == 0 && n % 8 == 0)
    return memcmp(a + pa / 8, b + pb / 8, (size_t)(n / 8)) == 0;
  for (int64_t j = 0; j < n; j++)
    if (bit_at(a, pa + j) != bit_at(b, pb + j)) return false;
  return true;
}

/* The first (up to) 64 bits at |pos|, for messages. */
static unsigned long long bits_u64(const unsigned char *p, int64_t pos, int64_t n) {
  unsigned long long v = 0;
  for (int64_t j = 0; j < n && j < 64; j++) v |= (unsigned long long)bit_at(p, pos + j) << j;
  return v;
}

/* True when two elements of |t| share memory (brute force). */
static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static bool strides_overlap(int32_t nd, const int64_t *S, const int64_t *st) {
  const int64_t n = prod(nd, S);
  if (n < 2) return false;
  int64_t *pos = tmalloc((size_t)n * sizeof *pos), idx[MAXD] = {0};
  for (int64_t i = 0; i < n; i++) {
    pos[i] = 0;
    for (int32_t k = 0; k < nd; k++) pos[i] += idx[k] * st[k];
    for (int32_t k = nd - 1; k >= 0; k--) {
      if (++idx[k] < S[k]) break;
      idx[k] = 0;
    }
  }
  qsort(pos, (size_t)n, sizeof *pos, cmp_i64);
  for (int64_t i = 1; i < n; i++)
    if (pos[i] == pos[i - 1]) return true;
  return false;
}

static bool self_overlaps(const dlpx_tensor *t) {
  return strides_overlap(dlpx_tensor_ndim(t), dlpx_tensor_shape(t), dlpx_tensor_strides(t));
}

/* After dst <- src: each element of dst holds what src held in the
 * snapshots; every other bit of dst's storage is as in |dsnap|; src's
 * storage, if another one, is as in |ssnap|. */
static void verify_copy(const dlpx_tensor *dst, const dlpx_tensor *src, const unsigned char *dsnap,
                        const unsigned char *ssnap, int64_t ebits) {
  const dlpx_storage *ds = dlpx_tensor_storage(dst), *ss = dlpx_tensor_storage(src);
  const int64_t dn = (int64_t)dlpx_storage_nbytes(ds);
  const unsigned char *now = dlpx_storage_data(ds);
  const int64_t n = dlpx_tensor_numel(dst);
  ASSERT_EQ(dlpx_tensor_numel(src), n);
  const int64_t *dp = elem_bitpos(dst, ebits), *sp = elem_bitpos(src, ebits);
  unsigned char *mask = tmalloc((size_t)dn);
  memset(mask, 0, (size_t)dn);
  for (int64_t i = 0; i < n; i++) {
    if (dp[i] < 0 || dp[i] + ebits > dn * 8) {
      CHECK_FAIL_("dst element %lld lies at bit %lld, outside its storage of %lld bytes",
                  (long long)i, (long long)dp[i], (long long)dn);
      return;
    }
    if (ebits % 8 == 0)
      memset(mask + dp[i] / 8, 0xff, (size_t)(ebits / 8));
    else
      for (int64_t j = 0; j < ebits; j++)
        mask[(dp[i] + j) / 8] |= (unsigned char)(1u << ((dp[i] + j) % 8));
  }
  const int32_t nd = dlpx_tensor_ndim(dst);
  for (int64_t i = 0; i < n; i++)
    if (!same_bits(now, dp[i], ssnap, sp[i], ebits)) {
      char ib[128];
      fmt_index(ib, sizeof ib, nd, dlpx_tensor_shape(dst), i);
      CHECK_FAIL_("element [%s]: dst (bit %lld) holds 0x%llx, src (bit %lld) held 0x%llx", ib,
                  (long long)dp[i], bits_u64(now, dp[i], ebits), (long long)sp[i],
                  bits_u64(ssnap, sp[i], ebits));
      return;
    }
  for (int64_t b = 0; b < dn; b++)
    if ((now[b] ^ dsnap[b]) & ~mask[b]) {
      CHECK_FAIL_("dst storage byte %lld outside the view changed: 0x%02x -> 0x%02x (view bits "
                  "0x%02x)",
                  (long long)b, dsnap[b], now[b], mask[b]);
      return;
    }
  if (ss != ds && !storage_is(src, ssnap)) {
    CHECK_FAIL_("the source storage changed");
    return;
  }
}

/* ---- building views ---------------------------------------------------------- */

typedef struct {
  bool bcast;      /* may broadcast (a source) */
  bool contiguous; /* a plain C-contiguous view of its parent */
  int64_t maxstep;
  bool random_fill; /* random bytes, else the sentinel pattern */
} vopts;

/* A view of |shape| built with public view calls: a contiguous parent with
 * room for steps, permuted, sliced with random signed steps, broadcast. */
static void build_view_a(check_rng *r, const ctype *ct, int32_t nd, const int64_t *S,
                         const vopts *o, dlpx_tensor **out) {
  const int64_t eb = ebits_of(ct);
  const bool packed = eb % 8 != 0;
  int32_t lead = 0;
  bool bc[MAXD] = {false}, any_bc = false;
  if (o->bcast && nd > 0) {
    if (rng_range(r, 0, 6) == 0) lead = (int32_t)rng_range(r, 1, nd < 2 ? nd : 2);
    for (int32_t k = lead; k < nd; k++) {
      bc[k] = rng_range(r, 0, 6) == 0;
      if (bc[k]) any_bc = true;
    }
  }
  const int32_t m = nd - lead;
  int64_t T[MAXD], P[MAXD], st[MAXD], Q[MAXD];
  int32_t pi[MAXD], axes[MAXD];
  for (int32_t j = 0; j < m; j++) {
    int32_t k = j + lead;
    T[j] = bc[k] ? 1 : S[k];
    int64_t a = o->contiguous ? 1 : rng_range(r, 1, o->maxstep);
    st[j] = (o->contiguous || rng_range(r, 0, 1)) ? a : -a;
    P[j] = T[j] == 0 ? rng_range(r, 0, 3)
                     : (T[j] - 1) * a + 1 + (o->contiguous ? 0 : rng_range(r, 0, 2));
    pi[j] = j;
  }
  if (!o->contiguous) shuffle32(r, pi, m);
  bool ident = true;
  for (int32_t j = 0; j < m; j++) {
    Q[j] = P[pi[j]];
    axes[pi[j]] = j;
    if (pi[j] != j) ident = false;
  }
  const int64_t boff = rng_range(r, 0, o->contiguous ? 3 : 9);
  const size_t nbytes = (size_t)(boff + bytes_for(ct, prod(m, Q)) + rng_range(r, 0, 5));
  dlpx_storage *s = NULL;
  ASSERT_OK(dlpx_storage_alloc(nbytes, 0, 0, &s));
  keep_storage(s);
  if (o->random_fill)
    fill_random(r, dlpx_storage_data(s), nbytes);
  else
    fill_sentinel(dlpx_storage_data(s), nbytes);
  dlpx_tensor *v = NULL, *w = NULL;
  ASSERT_OK(dlpx_tensor_from_storage(s, dt(ct->name), m, Q, NULL, boff, ct->flags, &v));
  keep(v);
  note_dims(" parent", m, Q);
  note(" @%lld", (long long)boff);
  if (!ident) {
    w = NULL;
    ASSERT_OK(dlpx_tensor_permute(v, m, axes, &w));
    v = keep(w);
    note(" permute(");
    for (int32_t j = 0; j < m; j++) note(j ? ",%d" : "%d", (int)axes[j]);
    note(")");
  }
  for (int32_t j = 0; j < m; j++) {
    const int64_t len = P[j], a = st[j] < 0 ? -st[j] : st[j];
    const int64_t stride = dlpx_tensor_strides(v)[j];
    int64_t start, stop, step = st[j];
    if (T[j] == 0) {
      start = stop = rng_range(r, 0, len);
    } else {
      const int64_t lo = step > 0 ? 0 : (T[j] - 1) * a;
      const int64_t hi = step > 0 ? len - 1 - (T[j] - 1) * a : len - 1;
      start = rng_range(r, lo, hi);
      if (packed && (start * stride * eb) % 8 != 0) {
        /* A non-empty slice off a byte boundary is refused. */
        if (dlpx_tensor_numel(v) > 0 && rng_range(r, 0, 3) == 0) {
          dlpx_tensor *bad = OUT_MARK;
          geom g;
          geom_get(v, &g);
          note(" slice(%d,%lld,None,%lld)->ELAYOUT", (int)j, (long long)start, (long long)step);
          int rc = dlpx_tensor_slice(v, j, start, DLPX_NONE, step, &bad);
          SUB(check_rc("unaligned sub-byte slice", rc, DLPX_ELAYOUT, 0, bad, v, &g));
        }
        int64_t found = -1;
        for (int64_t s2 = lo; s2 <= hi && found < 0; s2++)
          if ((s2 * stride * eb) % 8 == 0) found = s2;
        if (found < 0) {
          step = a;
          found = 0;
        }
        start = found;
      }
      stop = step > 0 ? start + (T[j] - 1) * a + 1 : start - (T[j] - 1) * a - 1;
      if (stop < 0) stop = DLPX_NONE;
    }
    note(" slice(%d,%lld,", (int)j, (long long)start);
    note_bound(stop);
    note(",%lld)", (long long)step);
    w = NULL;
    ASSERT_OK(dlpx_tensor_slice(v, j, start, stop, step, &w));
    v = keep(w);
    ASSERT_EQ(dlpx_tensor_shape(v)[j], T[j]);
  }
  if (lead > 0 || any_bc) {
    note_dims(" broadcast_to", nd, S);
    w = NULL;
    ASSERT_OK(dlpx_tensor_broadcast_to(v, nd, S, &w));
    v = keep(w);
  }
  *out = v;
}

/* Element strides for |S|.  kind 0: no two elements share memory (each
 * stride, by size, passes the span of the smaller ones); 1: a source, which
 * may also have zero or arbitrary strides; 2: a destination that likely
 * writes an element twice. */
static void gen_strides(check_rng *r, int32_t nd, const int64_t *S, int kind, int64_t *st) {
  int32_t ord[MAXD];
  for (int32_t k = 0; k < nd; k++) ord[k] = k;
  shuffle32(r, ord, nd);
  int64_t span = 0;
  for (int32_t q = 0; q < nd; q++) {
    int32_t k = ord[q];
    if (S[k] <= 1) {
      st[k] = rng_range(r, -6, 6);
      continue;
    }
    int64_t mag = span + 1 + (rng_range(r, 0, 3) == 0 ? rng_range(r, 1, 3) : 0);
    st[k] = rng_range(r, 0, 1) ? mag : -mag;
    span += mag * (S[k] - 1);
  }
  if (kind == 1) {
    if (rng_range(r, 0, 11) == 0)
      for (int32_t k = 0; k < nd; k++) st[k] = rng_range(r, -5, 5);
    for (int32_t k = 0; k < nd; k++)
      if (rng_range(r, 0, 7) == 0) st[k] = 0;
  } else if (kind == 2) {
    if (rng_range(r, 0, 1)) {
      for (int32_t k = 0; k < nd; k++) st[k] = rng_range(r, -4, 4);
    } else {
      for (int32_t k = 0; k < nd; k++)
        if (S[k] > 1) {
          st[k] = 0;
          break;
        }
    }
  }
}

static int64_t floor_div8(int64_t x) { return x >= 0 ? x / 8 : -((-x + 7) / 8); }

/* Bytes [*lo, *hi) a view touches relative to element 0's byte. */
static void span_bytes(int32_t nd, const int64_t *S, const int64_t *st, int64_t eb, int64_t *lo,
                       int64_t *hi) {
  int64_t min_e = 0, max_e = 0;
  for (int32_t k = 0; k < nd; k++)
    if (S[k] == 0) {
      *lo = *hi = 0;
      return;
    }
  for (int32_t k = 0; k < nd; k++) {
    int64_t d = st[k] * (S[k] - 1);
    if (d < 0)
      min_e += d;
    else
      max_e += d;
  }
  *lo = floor_div8(min_e * eb);
  *hi = ((max_e + 1) * eb + 7) / 8;
}

/* Makes the view of |S| and |st| over |s| at a random offset that fits; now
 * and then first checks that an offset one past either end is refused. */
static void place_view(check_rng *r, dlpx_storage *s, const ctype *ct, int32_t nd,
                       const int64_t *S, const int64_t *st, dlpx_tensor **out) {
  const int64_t eb = ebits_of(ct);
  const int64_t nb = (int64_t)dlpx_storage_nbytes(s);
  int64_t lo, hi;
  span_bytes(nd, S, st, eb, &lo, &hi);
  ASSERT_TRUE(hi - lo <= nb);
  if (prod(nd, S) > 0 && rng_range(r, 0, 29) == 0) {
    int64_t bad = rng_range(r, 0, 1) ? nb - hi + 1 : -lo - 1;
    dlpx_tensor *t = OUT_MARK;
    note(" [from_storage @%lld -> EBOUNDS]", (long long)bad);
    int rc = dlpx_tensor_from_storage(s, dt(ct->name), nd, S, st, bad, ct->flags, &t);
    SUB(check_rc("from_storage out of bounds", rc, DLPX_EBOUNDS, 0, t, NULL, NULL));
  }
  const int64_t off = rng_range(r, -lo, nb - hi);
  dlpx_tensor *t = NULL;
  note_dims(" view", nd, S);
  note_dims("/", nd, st);
  note("@%lld", (long long)off);
  ASSERT_OK(dlpx_tensor_from_storage(s, dt(ct->name), nd, S, st, off, ct->flags, &t));
  keep(t);
  *out = t;
}

/* A view of |S| and |st| wrapping a malloc'd block of exactly the bytes it
 * touches, so that a sanitizer sees any access outside it. */
static void wrap_view(check_rng *r, const ctype *ct, int32_t nd, const int64_t *S,
                      const int64_t *st, bool random_fill, dlpx_tensor **out) {
  int64_t lo, hi;
  span_bytes(nd, S, st, ebits_of(ct), &lo, &hi);
  unsigned char *buf = tmalloc((size_t)(hi - lo));
  if (random_fill)
    fill_random(r, buf, (size_t)(hi - lo));
  else
    fill_sentinel(buf, (size_t)(hi - lo));
  note_dims(" wrap", nd, S);
  note_dims("/", nd, st);
  const DLDevice cpu = {kDLCPU, 0};
  dlpx_tensor *t = NULL;
  ASSERT_OK(
      dlpx_tensor_wrap(buf + (-lo), cpu, dt(ct->name), nd, S, st, ct->flags, NULL, NULL, &t));
  keep(t);
  ASSERT_EQ((int64_t)dlpx_storage_nbytes(dlpx_tensor_storage(t)), hi - lo);
  *out = t;
}

static void new_storage(check_rng *r, size_t n, bool random_fill, dlpx_storage **out) {
  dlpx_storage *s = NULL;
  ASSERT_OK(dlpx_storage_alloc(n, 0, 0, &s));
  keep_storage(s);
  if (random_fill)
    fill_random(r, dlpx_storage_data(s), n);
  else
    fill_sentinel(dlpx_storage_data(s), n);
  *out = s;
}

/* A C-contiguous tensor at a random byte offset of a new storage. */
static void make_contig(check_rng *r, const ctype *ct, int32_t nd, const int64_t *S,
                        bool random_fill, dlpx_tensor **out) {
  const int64_t off = rng_range(r, 0, 9);
  dlpx_storage *s = NULL;
  SUB(new_storage(r, (size_t)(off + bytes_for(ct, prod(nd, S)) + rng_range(r, 0, 3)),
                  random_fill, &s));
  dlpx_tensor *t = NULL;
  ASSERT_OK(dlpx_tensor_from_storage(s, dt(ct->name), nd, S, NULL, off, ct->flags, &t));
  keep(t);
  note_dims(" x", nd, S);
  note("@%lld", (long long)off);
  *out = t;
}

/* A shape for copies.  *big: a large one (2-D or 3-D with extents >= 8). */
static int32_t rand_copy_shape(check_rng *r, int64_t *S, bool *big) {
  int64_t c = rng_range(r, 0, 11);
  *big = c < 2;
  if (c == 0) {
    const int64_t v = rng_range(r, 0, 7);
    if (v < 2) {
      S[0] = 37;
      S[1] = 129;
    } else if (v == 2) { /* one side beyond a 256-element block */
      const int64_t k = rng_range(r, 0, 1);
      S[k] = rng_range(r, 250, 300);
      S[1 - k] = rng_range(r, 8, 24);
    } else {
      S[0] = rng_range(r, 8, 140);
      S[1] = rng_range(r, 8, 140);
    }
    return 2;
  }
  if (c == 1) {
    for (int k = 0; k < 3; k++) S[k] = rng_range(r, 1, 20);
    S[rng_range(r, 0, 2)] = rng_range(r, 8, 20);
    S[rng_range(r, 0, 2)] = rng_range(r, 8, 20);
    return 3;
  }
  int32_t nd = (int32_t)rng_range(r, 1, 5);
  for (int32_t k = 0; k < nd; k++)
    S[k] = rng_range(r, 0, 15) == 0 ? 0 : rng_range(r, 1, nd <= 2 ? 12 : 6);
  return nd;
}

/* Counts for the summary line. */
static long stat_copy[6], stat_blocked, stat_conservative, stat_overlap_refused;
static const char *const copy_kinds[6] = {"views", "strided", "shared storage", "overlap",
                                          "refusals", "sub-byte"};

/* Whether the copy plan can take the blocked transpose path: dst contiguous
 * along one dimension, src contiguous along another, both extents >= 8. */
static bool blocked_candidate(const dlpx_tensor *dst, const dlpx_tensor *src) {
  const int32_t nd = dlpx_tensor_ndim(dst);
  const int64_t *sh = dlpx_tensor_shape(dst), *ds = dlpx_tensor_strides(dst),
                *ss = dlpx_tensor_strides(src);
  for (int32_t i = 0; i < nd; i++) {
    if (sh[i] < 8 || (ds[i] != 1 && ds[i] != -1)) continue;
    for (int32_t j = 0; j < nd; j++)
      if (j != i && sh[j] >= 8 && (ds[j] < 0 ? -ss[j] : ss[j]) == 1) return true;
  }
  return false;
}

/* Copies and checks; dst must not write an element twice. */
static void copy_and_verify(const dlpx_tensor *dst, const dlpx_tensor *src, const ctype *ct) {
  note_view("dst", dst);
  note_view("src", src);
  if (blocked_candidate(dst, src)) stat_blocked++;
  if (ebits_of(ct) % 8 != 0) stat_copy[5]++;
  const unsigned char *dsnap = snapshot(dst), *ssnap = snapshot(src);
  int rc = dlpx_tensor_copy_into(dst, src);
  if (rc != 0) {
    CHECK_FAIL_("copy_into returned %s: %s", dlpx_error_name(rc), dlpx_last_error());
    return;
  }
  SUB(verify_copy(dst, src, dsnap, ssnap, ebits_of(ct)));
}

/* Mode A: both views made with view calls over separate storages. */
static void copy_case_views(check_rng *r, const ctype *ct) {
  int64_t S[MAXD];
  bool big;
  const int32_t nd = rand_copy_shape(r, S, &big);
  vopts so = {true, false, big ? 2 : 3, true};
  vopts dopt = {false, big ? rng_range(r, 0, 1) == 0 : rng_range(r, 0, 3) == 0, big ? 2 : 3, false};
  if (big && rng_range(r, 0, 1)) so.maxstep = 1;
  dlpx_tensor *dst = NULL, *src = NULL;
  note(" [dst]");
  SUB(build_view_a(r, ct, nd, S, &dopt, &dst));
  note(" [src]");
  SUB(build_view_a(r, ct, nd, S, &so, &src));
  if (rng_range(r, 0, 9) == 0) {
    dlpx_tensor *ro = NULL;
    ASSERT_OK(dlpx_tensor_with_flags(src, DLPX_TENSOR_READONLY, &ro));
    src = keep(ro);
  }
  stat_copy[0]++;
  SUB(copy_and_verify(dst, src, ct));
}

/* Mode B: explicit strides and offsets, separate or shared storages; now and
 * then a destination that may write an element twice. */
static void copy_case_strided(check_rng *r, const ctype *ct) {
  int64_t S[MAXD], dst_st[MAXD], src_st[MAXD];
  bool big;
  const int32_t nd = rand_copy_shape(r, S, &big);
  const bool shared = rng_range(r, 0, 2) == 0;
  const int dkind = rng_range(r, 0, 9) == 0 ? 2 : 0;
  const int64_t eb = ebits_of(ct);
  gen_strides(r, nd, S, dkind, dst_st);
  gen_strides(r, nd, S, 1, src_st);
  int64_t dlo, dhi, slo, shi;
  span_bytes(nd, S, dst_st, eb, &dlo, &dhi);
  span_bytes(nd, S, src_st, eb, &slo, &shi);
  dlpx_storage *ds = NULL, *ss = NULL;
  dlpx_tensor *dst = NULL, *src = NULL;
  note(shared ? " shared" : " separate");
  if (shared) {
    int64_t w = dhi - dlo > shi - slo ? dhi - dlo : shi - slo;
    SUB(new_storage(r, (size_t)(w + rng_range(r, 0, 16)), true, &ds));
    SUB(place_view(r, ds, ct, nd, S, dst_st, &dst));
    SUB(place_view(r, ds, ct, nd, S, src_st, &src));
  } else {
    /* sometimes wrapped memory of exactly the bytes the view touches */
    if (rng_range(r, 0, 3) == 0) {
      SUB(wrap_view(r, ct, nd, S, dst_st, false, &dst));
    } else {
      SUB(new_storage(r, (size_t)(dhi - dlo + rng_range(r, 0, 16)), false, &ds));
      SUB(place_view(r, ds, ct, nd, S, dst_st, &dst));
    }
    if (rng_range(r, 0, 3) == 0) {
      SUB(wrap_view(r, ct, nd, S, src_st, true, &src));
    } else {
      SUB(new_storage(r, (size_t)(shi - slo + rng_range(r, 0, 16)), true, &ss));
      SUB(place_view(r, ss, ct, nd, S, src_st, &src));
    }
  }
  stat_copy[shared ? 2 : 1]++;
  if (self_overlaps(dst) || dkind == 2) {
    note_view("dst", dst);
    note_view("src", src);
    const bool twice = self_overlaps(dst);
    const unsigned char *dsnap = snapshot(dst), *ssnap = snapshot(src);
    int rc = dlpx_tensor_copy_into(dst, src);
    if (twice) {
      stat_overlap_refused++;
      if (rc != DLPX_ELAYOUT) {
        CHECK_FAIL_("copy into a destination that writes an element twice returned %s",
                    dlpx_error_name(rc));
        return;
      }
      ASSERT_TRUE(storage_is(dst, dsnap));
      ASSERT_TRUE(storage_is(src, ssnap));
      return;
    }
    if (rc == DLPX_ELAYOUT) { /* the library's overlap test is only sufficient */
      stat_conservative++;
      ASSERT_TRUE(storage_is(dst, dsnap));
      return;
    }
    if (rc != 0) {
      CHECK_FAIL_("copy_into returned %s: %s", dlpx_error_name(rc), dlpx_last_error());
      return;
    }
    SUB(verify_copy(dst, src, dsnap, ssnap, eb));
    return;
  }
  SUB(copy_and_verify(dst, src, ct));
}

/* A k in [1, len) that keeps a sub-byte slice on a byte, -1 if none. */
static int64_t aligned_shift(check_rng *r, int64_t len, int64_t stride, int64_t eb) {
  int64_t cand[64], n = 0;
  for (int64_t k = 1; k < len && n < 64; k++)
    if ((k * stride * eb) % 8 == 0) cand[n++] = k;
  return n ? cand[rng_range(r, 0, n - 1)] : -1;
}

/* Overlapping source and destination in one storage. */
static void copy_case_overlap(check_rng *r, const ctype *ct) {
  const int64_t eb = ebits_of(ct);
  const int64_t kind = rng_range(r, 0, 3);
  dlpx_tensor *x = NULL, *dst = NULL, *src = NULL, *w = NULL;
  int64_t S[MAXD];
  stat_copy[3]++;
  if (kind == 0) { /* shifted: x[k:] = x[:-k] and the like, along one dimension */
    int32_t nd;
    if (rng_range(r, 0, 7) == 0) {
      nd = 1;
      S[0] = rng_range(r, 64, 600);
    } else {
      nd = (int32_t)rng_range(r, 1, 3);
      for (int32_t k = 0; k < nd; k++) S[k] = rng_range(r, 1, 9);
    }
    const int32_t d = (int32_t)rng_range(r, 0, nd - 1);
    if (S[d] < 2) S[d] = rng_range(r, 2, 12);
    SUB(make_contig(r, ct, nd, S, true, &x));
    const int64_t len = S[d], stride = dlpx_tensor_strides(x)[d];
    const int64_t v = rng_range(r, 0, 3);
    if (v == 3) { /* x[::-1] = x */
      if (((len - 1) * stride * eb) % 8 != 0) return;
      note(" x[::-1]=x dim %d", (int)d);
      ASSERT_OK(dlpx_tensor_slice(x, d, DLPX_NONE, DLPX_NONE, -1, &w));
      dst = keep(w);
      src = x;
    } else {
      const int64_t k = aligned_shift(r, len, stride, eb);
      if (k < 0) return;
      const int64_t step = v == 2 ? 2 : 1;
      dlpx_tensor *hi = NULL, *lo = NULL;
      /* x[k::step] and x[:len-k:step] have the same extent */
      ASSERT_OK(dlpx_tensor_slice(x, d, k, DLPX_NONE, step, &hi));
      keep(hi);
      ASSERT_OK(dlpx_tensor_slice(x, d, DLPX_NONE, -k, step, &lo));
      keep(lo);
      const bool up = rng_range(r, 0, 1);
      note(" dim %d k=%lld step %lld %s", (int)d, (long long)k, (long long)step,
           up ? "x[k:]=x[:-k]" : "x[:-k]=x[k:]");
      dst = up ? hi : lo;
      src = up ? lo : hi;
    }
  } else if (kind == 1) { /* a square matrix and its transpose */
    const int64_t n = rng_range(r, 0, 2) == 0 ? rng_range(r, 8, 48) : rng_range(r, 1, 12);
    const int32_t nd = rng_range(r, 0, 3) == 0 ? 3 : 2;
    if (nd == 3) S[0] = rng_range(r, 1, 3);
    S[nd - 2] = S[nd - 1] = n;
    SUB(make_contig(r, ct, nd, S, true, &x));
    int32_t axes[3] = {0, 1, 2};
    axes[nd - 2] = nd - 1;
    axes[nd - 1] = nd - 2;
    ASSERT_OK(dlpx_tensor_permute(x, nd, axes, &w));
    keep(w);
    const bool t_dst = rng_range(r, 0, 1);
    note(t_dst ? " x.T=x" : " x=x.T");
    dst = t_dst ? w : x;
    src = t_dst ? x : w;
  } else if (kind == 2) { /* the same view: nothing changes */
    int64_t shp[MAXD];
    bool big;
    const int32_t nd = rand_copy_shape(r, shp, &big);
    vopts o = {false, false, 2, true};
    SUB(build_view_a(r, ct, nd, shp, &o, &x));
    dst = x;
    const int64_t v = rng_range(r, 0, 2);
    if (v == 0) {
      src = x;
    } else if (v == 1) {
      ASSERT_OK(dlpx_tensor_clone(x, &w));
      src = keep(w);
    } else {
      ASSERT_OK(dlpx_tensor_with_flags(x, DLPX_TENSOR_READONLY, &w));
      src = keep(w);
    }
    note(" same view (%lld)", (long long)v);
  } else { /* x = x[row] broadcast over the rows */
    S[0] = rng_range(r, 1, 9);
    S[1] = rng_range(r, 1, rng_range(r, 0, 3) == 0 ? 40 : 9);
    SUB(make_contig(r, ct, 2, S, true, &x));
    int64_t row = rng_range(r, 0, S[0] - 1);
    while (row > 0 && (row * S[1] * eb) % 8 != 0) row--;
    dlpx_tensor *sel = NULL, *un = NULL;
    ASSERT_OK(dlpx_tensor_select(x, 0, row, &sel));
    keep(sel);
    ASSERT_OK(dlpx_tensor_unsqueeze(sel, 0, &un));
    keep(un);
    ASSERT_OK(dlpx_tensor_broadcast_to(un, 2, S, &w));
    src = keep(w);
    dst = x;
    note(" x=broadcast(x[%lld])", (long long)row);
  }
  SUB(copy_and_verify(dst, src, ct));
}

/* Copies that must be refused, leaving the destination alone. */
static void copy_case_refusals(check_rng *r, const ctype *ct) {
  int64_t S[MAXD];
  const int32_t nd = (int32_t)rng_range(r, 1, 4);
  for (int32_t k = 0; k < nd; k++) S[k] = rng_range(r, 1, 6);
  dlpx_tensor *dst = NULL, *src = NULL, *w = NULL;
  SUB(make_contig(r, ct, nd, S, false, &dst));
  const int64_t kind = rng_range(r, 0, 7);
  int want = 0;
  stat_copy[4]++;
  switch (kind) {
    case 0: { /* an extent differs */
      int64_t S2[MAXD];
      memcpy(S2, S, sizeof S2);
      S2[rng_range(r, 0, nd - 1)] += rng_range(r, 0, 1) ? 1 : -1;
      SUB(make_contig(r, ct, nd, S2, true, &src));
      want = DLPX_ESHAPE;
      break;
    }
    case 1: /* ndim differs */
      SUB(make_contig(r, ct, nd, S, true, &w));
      ASSERT_OK(dlpx_tensor_unsqueeze(w, (int32_t)rng_range(r, 0, nd), &src));
      keep(src);
      want = DLPX_ESHAPE;
      break;
    case 2: { /* dtype differs */
      static const ctype others[] = {{"uint8", 8, 0},  {"float16", 16, 0},   {"int32", 32, 0},
                                     {"int64", 64, 0}, {"complex64", 64, 0}, {"bool", 8, 0}};
      const ctype o = others[rng_range(r, 0, 5)];
      SUB(make_contig(r, &o, nd, S, true, &src));
      want = DLPX_EDTYPE;
      break;
    }
    case 3: /* read-only destination */
      SUB(make_contig(r, ct, nd, S, true, &src));
      ASSERT_OK(dlpx_tensor_with_flags(dst, DLPX_TENSOR_READONLY, &w));
      dst = keep(w);
      want = DLPX_EREADONLY;
      break;
    case 4: { /* a destination that is not host memory (host bytes labelled CUDA) */
      dlpx_tensor *h = NULL;
      SUB(make_contig(r, ct, nd, S, false, &h));
      dlpx_storage *st = NULL;
      ASSERT_OK(dlpx_storage_wrap(dlpx_storage_data(dlpx_tensor_storage(h)),
                                  dlpx_storage_nbytes(dlpx_tensor_storage(h)),
                                  (DLDevice){kDLCUDA, 0}, NULL, NULL, &st));
      ASSERT_OK(dlpx_tensor_from_storage(st, dlpx_tensor_dtype(h), nd, S, NULL, 0, ct->flags, &w));
      dlpx_storage_release(st);
      dst = keep(w);
      SUB(make_contig(r, ct, nd, S, true, &src));
      want = DLPX_EDEVICE;
      break;
    }
    case 5: { /* a broadcast destination writes elements twice */
      int64_t S1[MAXD];
      memcpy(S1, S, sizeof S1);
      int32_t d = (int32_t)rng_range(r, 0, nd - 1);
      S[d] = rng_range(r, 2, 6);
      S1[d] = 1;
      SUB(make_contig(r, ct, nd, S1, false, &w));
      dlpx_tensor *b = NULL;
      ASSERT_OK(dlpx_tensor_broadcast_to(w, nd, S, &b));
      dst = keep(b);
      SUB(make_contig(r, ct, nd, S, true, &src));
      want = DLPX_ELAYOUT;
      break;
    }
    case 6: /* NULL */
      SUB(make_contig(r, ct, nd, S, true, &src));
      want = DLPX_EINVAL;
      break;
    default: { /* wrapped memory whose custom strides make elements overlap */
      int64_t st[MAXD];
      if (S[0] < 2) S[0] = 2;
      gen_strides(r, nd, S, 2, st);
      if (!strides_overlap(nd, S, st)) st[0] = 0;
      SUB(wrap_view(r, ct, nd, S, st, false, &dst));
      SUB(make_contig(r, ct, nd, S, true, &src));
      want = DLPX_ELAYOUT;
      break;
    }
  }
  note(" refusal %lld", (long long)kind);
  note_view("dst", dst);
  note_view("src", src);
  const unsigned char *dsnap = snapshot(dst), *ssnap = snapshot(src);
  int rc;
  if (kind == 6) {
    rc = rng_range(r, 0, 1) ? dlpx_tensor_copy_into(NULL, src) : dlpx_tensor_copy_into(dst, NULL);
  } else {
    rc = dlpx_tensor_copy_into(dst, src);
  }
  if (rc != want) {
    CHECK_FAIL_("copy_into returned %s, expected %s", dlpx_error_name(rc), dlpx_error_name(want));
    return;
  }
  ASSERT_EQ(dlpx_last_error_code(), want);
  ASSERT_TRUE(storage_is(dst, dsnap));
  ASSERT_TRUE(storage_is(src, ssnap));
}

static void copy_case(check_rng *r) {
  const ctype *ct = &ctypes[rng_range(r, 0, N_CTYPES - 1)];
  note("%s%s", ct->name, (ct->flags & DLPX_TENSOR_SUBBYTE_PADDED) ? " (padded)" : "");
  const int64_t mode = rng_range(r, 0, 99);
  if (mode < 45)
    copy_case_views(r, ct);
  else if (mode < 80)
    copy_case_strided(r, ct);
  else if (mode < 94)
    copy_case_overlap(r, ct);
  else
    copy_case_refusals(r, ct);
}

static void test_random_copy_into(void) {
  check_live l;
  check_live_begin(&l);
  check_rng master = {check_seed() ^ 0x2222u};
  run_cases("copy_into", copy_case, case_count(10000), &master);
  printf("# copy_into:");
  for (int i = 0; i < 6; i++) printf(" %s %ld,", copy_kinds[i], stat_copy[i]);
  printf(" blocked-transpose shape %ld, self-overlapping dst refused %ld, non-overlapping dst "
         "refused (conservative check) %ld\n",
         stat_blocked, stat_overlap_refused, stat_conservative);
  ASSERT_NO_LEAKS(&l);
}

/* ======================================================================== */
/* 3. dlpx_tensor_copy and dlpx_tensor_contiguous                            */
/* ======================================================================== */

static long stat_contig_shared, stat_contig_copied;

/* |c| is a copy of |t| (in |order|), or for dlpx_tensor_contiguous of a
 * C-contiguous |t| (|shared|) the same view. */
static void check_copy_of(const dlpx_tensor *t, const dlpx_tensor *c, char order, bool shared,
                          const ctype *ct) {
  const int32_t nd = dlpx_tensor_ndim(t);
  ASSERT_EQ(dlpx_tensor_ndim(c), nd);
  const int64_t *sh = dlpx_tensor_shape(t), *csh = dlpx_tensor_shape(c),
                *cst = dlpx_tensor_strides(c);
  for (int32_t k = 0; k < nd; k++) ASSERT_EQ(csh[k], sh[k]);
  DLDataType a = dlpx_tensor_dtype(t), b = dlpx_tensor_dtype(c);
  ASSERT_EQ(a.code, b.code);
  ASSERT_EQ(a.bits, b.bits);
  ASSERT_EQ(a.lanes, b.lanes);
  const int64_t n = dlpx_tensor_numel(t);
  if (shared) {
    ASSERT_PTR_EQ(dlpx_tensor_storage(c), dlpx_tensor_storage(t));
    ASSERT_EQ(dlpx_tensor_byte_offset(c), dlpx_tensor_byte_offset(t));
    ASSERT_EQ(dlpx_tensor_flags(c), dlpx_tensor_flags(t));
    for (int32_t k = 0; k < nd; k++) ASSERT_EQ(cst[k], dlpx_tensor_strides(t)[k]);
    return;
  }
  ASSERT_TRUE(dlpx_tensor_storage(c) != dlpx_tensor_storage(t));
  ASSERT_EQ(dlpx_storage_kind_of(dlpx_tensor_storage(c)), DLPX_STORAGE_OWNED);
  ASSERT_EQ(dlpx_storage_refcount(dlpx_tensor_storage(c)), 1);
  ASSERT_EQ(dlpx_tensor_byte_offset(c), 0);
  ASSERT_EQ(dlpx_tensor_flags(c), ct->flags & DLPX_TENSOR_SUBBYTE_PADDED);
  ASSERT_EQ(dlpx_tensor_is_readonly(c), 0);
  ASSERT_TRUE((int64_t)dlpx_storage_nbytes(dlpx_tensor_storage(c)) >= bytes_for(ct, n));
  if (order == 'C')
    ASSERT_EQ(dlpx_tensor_is_c_contiguous(c), 1);
  else
    ASSERT_EQ(dlpx_tensor_is_f_contiguous(c), 1);
  if (n > 0) { /* the strides themselves, for extents above 1 */
    int64_t want = 1;
    for (int32_t q = 0; q < nd; q++) {
      int32_t k = order == 'C' ? nd - 1 - q : q;
      if (sh[k] > 1 && cst[k] != want) {
        CHECK_FAIL_("%c copy: stride[%d] is %lld, expected %lld", order, (int)k,
                    (long long)cst[k], (long long)want);
        return;
      }
      want *= sh[k];
    }
  }
  const int64_t eb = ebits_of(ct);
  const int64_t *tp = elem_bitpos(t, eb), *cp = elem_bitpos(c, eb);
  const unsigned char *td = dlpx_storage_data(dlpx_tensor_storage(t)),
                      *cd = dlpx_storage_data(dlpx_tensor_storage(c));
  for (int64_t i = 0; i < n; i++)
    if (!same_bits(cd, cp[i], td, tp[i], eb)) {
      char ib[128];
      fmt_index(ib, sizeof ib, nd, sh, i);
      CHECK_FAIL_("%c copy: element [%s] is 0x%llx, the source has 0x%llx", order, ib,
                  bits_u64(cd, cp[i], eb), bits_u64(td, tp[i], eb));
      return;
    }
}

static void contig_case(check_rng *r) {
  const ctype *ct = &ctypes[rng_range(r, 0, N_CTYPES - 1)];
  note("%s%s", ct->name, (ct->flags & DLPX_TENSOR_SUBBYTE_PADDED) ? " (padded)" : "");
  int64_t S[MAXD];
  bool big;
  const int32_t nd = rand_copy_shape(r, S, &big);
  dlpx_tensor *t = NULL;
  const int64_t how = rng_range(r, 0, 3);
  if (how == 0) { /* explicit strides, possibly zero or overlapping */
    int64_t st[MAXD], lo, hi;
    gen_strides(r, nd, S, 1, st);
    span_bytes(nd, S, st, ebits_of(ct), &lo, &hi);
    dlpx_storage *s = NULL;
    SUB(new_storage(r, (size_t)(hi - lo + rng_range(r, 0, 8)), true, &s));
    SUB(place_view(r, s, ct, nd, S, st, &t));
  } else { /* view calls; sometimes a plain contiguous one */
    vopts o = {true, how == 1, big ? 2 : 3, true};
    SUB(build_view_a(r, ct, nd, S, &o, &t));
  }
  if (rng_range(r, 0, 6) == 0) {
    dlpx_tensor *ro = NULL;
    ASSERT_OK(dlpx_tensor_with_flags(t, DLPX_TENSOR_READONLY, &ro));
    t = keep(ro);
  }
  note_view("t", t);
  const unsigned char *snap = snapshot(t);
  for (int which = 0; which < 3; which++) {
    dlpx_tensor *c = OUT_MARK;
    int rc;
    if (which == 0) {
      rc = dlpx_tensor_copy(t, 'C', &c);
    } else if (which == 1) {
      rc = dlpx_tensor_copy(t, 'F', &c);
    } else {
      rc = dlpx_tensor_contiguous(t, &c);
    }
    static const char *const names[3] = {"copy('C')", "copy('F')", "contiguous"};
    SUB(check_rc(names[which], rc, 0, 0, c, NULL, NULL));
    const bool shared = which == 2 && dlpx_tensor_is_c_contiguous(t);
    if (which == 2) {
      if (shared)
        stat_contig_shared++;
      else
        stat_contig_copied++;
    }
    SUB(check_copy_of(t, c, which == 1 ? 'F' : 'C', shared, ct));
  }
  if (rng_range(r, 0, 19) == 0) {
    static const char bad[] = {'X', 'c', 'f', 'A', '\0'};
    const char order = bad[rng_range(r, 0, 4)];
    dlpx_tensor *c = OUT_MARK;
    note(" copy(order %d)", order);
    int rc = dlpx_tensor_copy(t, order, &c);
    SUB(check_rc("copy with a bad order", rc, DLPX_EINVAL, 0, c, NULL, NULL));
  }
  ASSERT_TRUE(storage_is(t, snap));
}

static void test_random_copy_and_contiguous(void) {
  check_live l;
  check_live_begin(&l);
  check_rng master = {check_seed() ^ 0x3333u};
  run_cases("copy/contiguous", contig_case, case_count(10000), &master);
  printf("# copy/contiguous: contiguous() shared %ld, copied %ld\n", stat_contig_shared,
         stat_contig_copied);
  ASSERT_NO_LEAKS(&l);
}

int main(void) {
  RUN(test_random_views);
  RUN(test_random_copy_into);
  RUN(test_random_copy_and_contiguous);
  CHECK_DONE();
}
