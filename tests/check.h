/* check.h - tiny test harness for the C tests: asserts that print both
 * operands, one TAP line per test case ("ok 3 - name", "not ok", or
 * "ok 4 - name # SKIP reason"), read by automake's TAP driver; exit status
 * 0 when all pass. */
#ifndef DLPX_TESTS_CHECK_H
#define DLPX_TESTS_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dlpx/dlpx.h>

#include "fixtures.h"

static int check__failed;    /* failures in the current test */
static const char *check__skip; /* reason, when the current test skipped */
static int check__total_failed;
static int check__count;

#define CHECK_FAIL_(...)                                              \
  do {                                                                \
    fprintf(stderr, "# %s:%d: ", __FILE__, __LINE__);                 \
    fprintf(stderr, __VA_ARGS__);                                     \
    fprintf(stderr, "\n");                                            \
    check__failed++;                                                  \
  } while (0)

#define ASSERT_EQ(a, b)                                                                   \
  do {                                                                                    \
    long long a_ = (long long)(a), b_ = (long long)(b);                                   \
    if (a_ != b_) {                                                                       \
      CHECK_FAIL_("ASSERT_EQ(%s, %s): %lld != %lld", #a, #b, a_, b_);                     \
      return;                                                                             \
    }                                                                                     \
  } while (0)

#define ASSERT_NE(a, b)                                                                   \
  do {                                                                                    \
    long long a_ = (long long)(a), b_ = (long long)(b);                                   \
    if (a_ == b_) {                                                                       \
      CHECK_FAIL_("ASSERT_NE(%s, %s): both %lld", #a, #b, a_);                            \
      return;                                                                             \
    }                                                                                     \
  } while (0)

#define ASSERT_PTR_EQ(a, b)                                                               \
  do {                                                                                    \
    const void *a_ = (const void *)(a), *b_ = (const void *)(b);                          \
    if (a_ != b_) {                                                                       \
      CHECK_FAIL_("ASSERT_PTR_EQ(%s, %s): %p != %p", #a, #b, a_, b_);                     \
      return;                                                                             \
    }                                                                                     \
  } while (0)

#define ASSERT_STR_EQ(a, b)                                                               \
  do {                                                                                    \
    const char *a_ = (a), *b_ = (b);                                                      \
    if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                              \
      CHECK_FAIL_("ASSERT_STR_EQ(%s, %s): \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)",  \
                  b_ ? b_ : "(null)");                                                    \
      return;                                                                             \
    }                                                                                     \
  } while (0)

#define ASSERT_TRUE(x)                                \
  do {                                                \
    if (!(x)) {                                       \
      CHECK_FAIL_("ASSERT_TRUE(%s) failed", #x);      \
      return;                                         \
    }                                                 \
  } while (0)

/* The call returns |code|; on a mismatch prints the library's message. */
#define ASSERT_RC(code, call)                                                                \
  do {                                                                                       \
    int rc_ = (call);                                                                        \
    if (rc_ != (code)) {                                                                     \
      CHECK_FAIL_("%s returned %s (%d), expected %s: %s", #call, dlpx_error_name(rc_), rc_, \
                  dlpx_error_name(code), dlpx_last_error());                                 \
      return;                                                                                \
    }                                                                                        \
  } while (0)

#define ASSERT_OK(call) ASSERT_RC(0, call)

/* The last error message contains |needle|. */
#define ASSERT_MSG(needle)                                                              \
  do {                                                                                  \
    if (!strstr(dlpx_last_error(), (needle))) {                                         \
      CHECK_FAIL_("last error \"%s\" lacks \"%s\"", dlpx_last_error(), (needle));       \
      return;                                                                           \
    }                                                                                   \
  } while (0)

/* Live object counters, to prove nothing leaked or was freed twice. */
typedef struct {
  dlpx_stats before;
} check_live;

static inline void check_live_begin(check_live *l) { dlpx_stats_get(&l->before); }

#define ASSERT_NO_LEAKS(l)                                                          \
  do {                                                                              \
    dlpx_stats now_;                                                                \
    dlpx_stats_get(&now_);                                                          \
    ASSERT_EQ(now_.storages_live, (l)->before.storages_live);                       \
    ASSERT_EQ(now_.tensors_live, (l)->before.tensors_live);                         \
    ASSERT_EQ(now_.exports_live, (l)->before.exports_live);                         \
  } while (0)

/* Ends the current test as skipped, with |reason| (a string literal). */
#define SKIP(reason)        \
  do {                      \
    check__skip = (reason); \
    return;                 \
  } while (0)

#define RUN(fn)                                                                   \
  do {                                                                            \
    check__failed = 0;                                                            \
    check__skip = NULL;                                                           \
    fn();                                                                         \
    check__count++;                                                               \
    if (check__failed) check__total_failed++;                                     \
    if (check__skip && !check__failed)                                            \
      printf("ok %d - %s # SKIP %s\n", check__count, #fn, check__skip);           \
    else                                                                          \
      printf("%s %d - %s\n", check__failed ? "not ok" : "ok", check__count, #fn); \
    fflush(stdout);                                                               \
  } while (0)

#define CHECK_DONE()                                                            \
  do {                                                                          \
    printf("1..%d\n", check__count);                                            \
    if (check__total_failed)                                                    \
      fprintf(stderr, "# %d of %d tests failed\n", check__total_failed, check__count); \
    return check__total_failed ? 1 : 0;                                         \
  } while (0)

/* A deterministic generator (splitmix64) for randomized tests. */
typedef struct {
  uint64_t s;
} check_rng;

static inline uint64_t rng_next(check_rng *r) {
  uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static inline int64_t rng_range(check_rng *r, int64_t lo, int64_t hi) {
  return lo + (int64_t)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

/* The seed: $DLPX_TEST_SEED or a fixed default, printed so a failure can be
 * replayed. */
static inline uint64_t check_seed(void) {
  const char *e = getenv("DLPX_TEST_SEED");
  uint64_t seed = e ? strtoull(e, NULL, 0) : 0x5eed2026ull;
  printf("# seed 0x%" PRIx64 " (set DLPX_TEST_SEED to replay)\n", seed);
  return seed;
}

static inline int under_valgrind(void) { return getenv("DLPX_TEST_UNDER_VALGRIND") != NULL; }

#endif
