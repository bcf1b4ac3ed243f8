/* hash_avx2.c - the XXH3 kernels compiled for AVX2, chosen at run time by
 * checksum.c on processors that have it: about twice the SSE2 baseline's
 * throughput in cache, which is where the loaders hash (each piece right
 * after it is read).  XXH3's result does not depend on the kernel. */
#include "config.h"

#include "io.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2")
#endif

#include <immintrin.h> /* xxhash.h includes it only when built with -mavx2 */

#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_AVX2
#include <xxhash.h>

static uint64_t avx2_hash(const void *data, size_t size) {
  return (uint64_t)XXH3_64bits(size ? data : "", size);
}

static void avx2_update(void *state, const void *data, size_t size) {
  XXH3_64bits_update((XXH3_state_t *)state, data, size);
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

static const dlpx__xxh3_kernels avx2 = {"avx2", avx2_hash, avx2_update};

const dlpx__xxh3_kernels *dlpx__xxh3_avx2(void) {
  return __builtin_cpu_supports("avx2") ? &avx2 : NULL;
}

#else

const dlpx__xxh3_kernels *dlpx__xxh3_avx2(void) { return NULL; }

#endif
