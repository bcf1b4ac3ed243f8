/* copy.c - strided copies between host tensors.
 *
 * The plan: express both layouts in byte strides, drop extents of 1, turn
 * negative destination strides around (moving both base pointers to the
 * other end), order the dimensions by destination stride and merge the ones
 * that are contiguous in both.  Then one of three kernels runs:
 *   - contiguous inner run in both: memcpy per run (one memcpy if all merge);
 *   - destination contiguous along one dimension, source along another: a
 *     cache-blocked 2-D transpose over those two, the rest iterated outside;
 *   - anything else: an element loop specialised by element size.
 * Packed sub-byte types whose views are not both contiguous go through a
 * bit-level element loop.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef dlpx__copy_plan copy_plan;

static int64_t abs64(int64_t v) { return v < 0 ? -v : v; }

/* Sorts dimensions by destination stride, largest first (insertion sort:
 * ndim is small); ties are broken by source stride. */
static void sort_dims(copy_plan *p) {
  for (int32_t i = 1; i < p->ndim; i++) {
    int64_t n = p->n[i], d = p->ds[i], s = p->ss[i];
    int32_t j = i - 1;
    while (j >= 0 && (p->ds[j] < d || (p->ds[j] == d && abs64(p->ss[j]) < abs64(s)))) {
      p->n[j + 1] = p->n[j];
      p->ds[j + 1] = p->ds[j];
      p->ss[j + 1] = p->ss[j];
      j--;
    }
    p->n[j + 1] = n;
    p->ds[j + 1] = d;
    p->ss[j + 1] = s;
  }
}

void dlpx__copy_plan_build(copy_plan *p, const dlpx_tensor *dst, const dlpx_tensor *src) {
  const int64_t es = dlpx__elem_bits(dst->dl.dtype, dst->flags) / 8;
  p->esize = es;
  p->dst = dlpx_tensor_data(dst);
  p->src = dlpx_tensor_data(src);
  p->ndim = 0;
  for (int32_t i = 0; i < dst->dl.ndim; i++) {
    int64_t n = dst->dl.shape[i];
    if (n == 1) continue;
    int64_t d = dst->dl.strides[i] * es, s = src->dl.strides[i] * es;
    if (d < 0) { /* walk this dimension backwards in both */
      p->dst += (n - 1) * d;
      p->src += (n - 1) * s;
      d = -d;
      s = -s;
    }
    p->n[p->ndim] = n;
    p->ds[p->ndim] = d;
    p->ss[p->ndim] = s;
    p->ndim++;
  }
  sort_dims(p);
  /* Merge dimension i into i+1 (inner) when both layouts allow it. */
  int32_t k = 0;
  for (int32_t i = 0; i < p->ndim; i++) {
    if (k > 0 && p->ds[k - 1] == p->ds[i] * p->n[i] && p->ss[k - 1] == p->ss[i] * p->n[i]) {
      p->n[k - 1] *= p->n[i];
      p->ds[k - 1] = p->ds[i];
      p->ss[k - 1] = p->ss[i];
    } else {
      p->n[k] = p->n[i];
      p->ds[k] = p->ds[i];
      p->ss[k] = p->ss[i];
      k++;
    }
  }
  p->ndim = k;
}

/* ---- kernels --------------------------------------------------------------- */

#define DEF_STRIDED(name, T)                                                                 \
  static void name(char *d, int64_t ds, const char *s, int64_t ss, int64_t n) {             \
    for (int64_t i = 0; i < n; i++) {                                                        \
      T v;                                                                                   \
      memcpy(&v, s + i * ss, sizeof v);                                                      \
      memcpy(d + i * ds, &v, sizeof v);                                                      \
    }                                                                                        \
  }

typedef struct {
  uint64_t a, b;
} u128;

DEF_STRIDED(strided1, uint8_t)
DEF_STRIDED(strided2, uint16_t)
DEF_STRIDED(strided4, uint32_t)
DEF_STRIDED(strided8, uint64_t)
DEF_STRIDED(strided16, u128)

typedef void (*strided_fn)(char *, int64_t, const char *, int64_t, int64_t);

static strided_fn pick_strided(int64_t es) {
  switch (es) {
    case 1: return strided1;
    case 2: return strided2;
    case 4: return strided4;
    case 8: return strided8;
    case 16: return strided16;
    default: return NULL;
  }
}

static void strided_generic(char *d, int64_t ds, const char *s, int64_t ss, int64_t n,
                            int64_t es) {
  for (int64_t i = 0; i < n; i++) memcpy(d + i * ds, s + i * ss, (size_t)es);
}

/* ---- 2-D transpose ----------------------------------------------------------
 *
 * dst is contiguous along a (length na), src along b (length nb); dst stride
 * along b is db, src stride along a is sa, both in bytes:
 *   d[b * db + a * es] = s[a * sa + b * es].
 *
 * A naive loop walks one of the two arrays across rows, one element per row.
 * With large power-of-two strides (a 4096-float matrix has 16 KiB rows) all
 * rows fall into the same L1 set (8 ways) and each row is a different page,
 * so lines read or written in part are evicted before the rest of them is
 * used, and TLB entries are refilled over and over.  The work is therefore
 * blocked at three levels:
 *   1. micro-kernel: a K x K block transposed in SSE2 registers: K rows of 16
 *      bytes (8 for 1-byte elements) loaded from src, K rows stored to dst;
 *   2. tile: TILE x TILE elements, at least one 64-byte cache line each way.
 *      The micro-kernels of a tile run along a, so each group of K dst lines
 *      is completed before the next starts, and every src line the tile reads
 *      is used up by the end of the tile: no line has to survive in L1 from
 *      one tile to the next.  Sixteen rows at least keep enough independent
 *      cache misses in flight;
 *   3. block: TRANSPOSE_BLOCK x TRANSPOSE_BLOCK elements walked tile by tile,
 *      so the pages of the block's src and dst rows (a few hundred) stay in
 *      the TLB while its columns are swept.  (Measured on a 4096 x 4096
 *      float32 transpose: 256 beats 128 and 512.)
 * Ragged edges (extents that are not a multiple of K or of a tile) go through
 * an element loop.  Without SSE2, K is 1 and the blocking is kept. */
#define TRANSPOSE_BLOCK 256 /* elements along each side of a block */

/* Copies the elements [a0, a1) x [b0, b1) one by one. */
#define DEF_TRANSPOSE_EDGE(name, T)                                                         \
  static void name(char *d, int64_t db, const char *s, int64_t sa, int64_t a0, int64_t a1, \
                   int64_t b0, int64_t b1) {                                                \
    for (int64_t b = b0; b < b1; b++) {                                                     \
      char *dr = d + b * db;                                                                \
      const char *sc = s + b * (int64_t)sizeof(T);                                          \
      for (int64_t a = a0; a < a1; a++)                                                     \
        memcpy(dr + a * (int64_t)sizeof(T), sc + a * sa, sizeof(T));                        \
    }                                                                                       \
  }

/* Micro-kernels: transpose the K x K block at s (rows sa bytes apart) into d
 * (rows db bytes apart).  A 1 x 1 block is a single element. */
#define DEF_MICRO_1X1(name, T)                                              \
  static inline void name(char *d, int64_t db, const char *s, int64_t sa) { \
    (void)db;                                                               \
    (void)sa;                                                               \
    memcpy(d, s, sizeof(T));                                                \
  }

#if defined(__SSE2__)
#include <emmintrin.h>

#define LOAD16(p) _mm_loadu_si128((const __m128i *)(const void *)(p))
#define STORE16(p, v) _mm_storeu_si128((__m128i *)(void *)(p), (v))
#define LOAD8(p) _mm_loadl_epi64((const __m128i *)(const void *)(p))
#define STORE8(p, v) _mm_storel_epi64((__m128i *)(void *)(p), (v))

/* 8-byte elements, 2 x 2: one unpack step. */
static inline void micro8_2x2(char *d, int64_t db, const char *s, int64_t sa) {
  __m128i r0 = LOAD16(s), r1 = LOAD16(s + sa);
  STORE16(d, _mm_unpacklo_epi64(r0, r1));
  STORE16(d + db, _mm_unpackhi_epi64(r0, r1));
}

/* 4-byte elements, 4 x 4: interleave 32-bit pairs of rows, then 64-bit. */
static inline void micro4_4x4(char *d, int64_t db, const char *s, int64_t sa) {
  __m128i r0 = LOAD16(s), r1 = LOAD16(s + sa);
  __m128i r2 = LOAD16(s + 2 * sa), r3 = LOAD16(s + 3 * sa);
  __m128i t0 = _mm_unpacklo_epi32(r0, r1); /* r0[0] r1[0] r0[1] r1[1] */
  __m128i t1 = _mm_unpacklo_epi32(r2, r3); /* r2[0] r3[0] r2[1] r3[1] */
  __m128i t2 = _mm_unpackhi_epi32(r0, r1); /* r0[2] r1[2] r0[3] r1[3] */
  __m128i t3 = _mm_unpackhi_epi32(r2, r3); /* r2[2] r3[2] r2[3] r3[3] */
  STORE16(d, _mm_unpacklo_epi64(t0, t1));          /* column 0 */
  STORE16(d + db, _mm_unpackhi_epi64(t0, t1));     /* column 1 */
  STORE16(d + 2 * db, _mm_unpacklo_epi64(t2, t3)); /* column 2 */
  STORE16(d + 3 * db, _mm_unpackhi_epi64(t2, t3)); /* column 3 */
}

/* 2-byte elements, 8 x 8: three unpack steps (16-, 32-, 64-bit).  After step
 * one, lo01 holds columns 0-3 of rows 0 and 1 interleaved, hi01 columns 4-7;
 * after step two each register holds two columns of four rows; step three
 * joins rows 0-3 with rows 4-7. */
static inline void micro2_8x8(char *d, int64_t db, const char *s, int64_t sa) {
  __m128i r0 = LOAD16(s), r1 = LOAD16(s + sa), r2 = LOAD16(s + 2 * sa), r3 = LOAD16(s + 3 * sa);
  __m128i r4 = LOAD16(s + 4 * sa), r5 = LOAD16(s + 5 * sa), r6 = LOAD16(s + 6 * sa),
          r7 = LOAD16(s + 7 * sa);
  __m128i lo01 = _mm_unpacklo_epi16(r0, r1), hi01 = _mm_unpackhi_epi16(r0, r1);
  __m128i lo23 = _mm_unpacklo_epi16(r2, r3), hi23 = _mm_unpackhi_epi16(r2, r3);
  __m128i lo45 = _mm_unpacklo_epi16(r4, r5), hi45 = _mm_unpackhi_epi16(r4, r5);
  __m128i lo67 = _mm_unpacklo_epi16(r6, r7), hi67 = _mm_unpackhi_epi16(r6, r7);
  /* cXY_03: columns X and Y of rows 0-3; cXY_47: of rows 4-7 */
  __m128i c01_03 = _mm_unpacklo_epi32(lo01, lo23), c23_03 = _mm_unpackhi_epi32(lo01, lo23);
  __m128i c45_03 = _mm_unpacklo_epi32(hi01, hi23), c67_03 = _mm_unpackhi_epi32(hi01, hi23);
  __m128i c01_47 = _mm_unpacklo_epi32(lo45, lo67), c23_47 = _mm_unpackhi_epi32(lo45, lo67);
  __m128i c45_47 = _mm_unpacklo_epi32(hi45, hi67), c67_47 = _mm_unpackhi_epi32(hi45, hi67);
  STORE16(d, _mm_unpacklo_epi64(c01_03, c01_47));
  STORE16(d + db, _mm_unpackhi_epi64(c01_03, c01_47));
  STORE16(d + 2 * db, _mm_unpacklo_epi64(c23_03, c23_47));
  STORE16(d + 3 * db, _mm_unpackhi_epi64(c23_03, c23_47));
  STORE16(d + 4 * db, _mm_unpacklo_epi64(c45_03, c45_47));
  STORE16(d + 5 * db, _mm_unpackhi_epi64(c45_03, c45_47));
  STORE16(d + 6 * db, _mm_unpacklo_epi64(c67_03, c67_47));
  STORE16(d + 7 * db, _mm_unpackhi_epi64(c67_03, c67_47));
}

/* 1-byte elements, 8 x 8 with 8-byte rows (the low half of each register):
 * unpacking 8-, 16- and 32-bit pieces leaves two dst rows per register. */
static inline void micro1_8x8(char *d, int64_t db, const char *s, int64_t sa) {
  __m128i u01 = _mm_unpacklo_epi8(LOAD8(s), LOAD8(s + sa));
  __m128i u23 = _mm_unpacklo_epi8(LOAD8(s + 2 * sa), LOAD8(s + 3 * sa));
  __m128i u45 = _mm_unpacklo_epi8(LOAD8(s + 4 * sa), LOAD8(s + 5 * sa));
  __m128i u67 = _mm_unpacklo_epi8(LOAD8(s + 6 * sa), LOAD8(s + 7 * sa));
  /* vXY_03: columns X-Y of rows 0-3 (4 bytes per column) */
  __m128i v03_03 = _mm_unpacklo_epi16(u01, u23), v47_03 = _mm_unpackhi_epi16(u01, u23);
  __m128i v03_47 = _mm_unpacklo_epi16(u45, u67), v47_47 = _mm_unpackhi_epi16(u45, u67);
  __m128i c01 = _mm_unpacklo_epi32(v03_03, v03_47); /* dst rows 0 and 1 */
  __m128i c23 = _mm_unpackhi_epi32(v03_03, v03_47);
  __m128i c45 = _mm_unpacklo_epi32(v47_03, v47_47);
  __m128i c67 = _mm_unpackhi_epi32(v47_03, v47_47);
  STORE8(d, c01);
  STORE8(d + db, _mm_unpackhi_epi64(c01, c01));
  STORE8(d + 2 * db, c23);
  STORE8(d + 3 * db, _mm_unpackhi_epi64(c23, c23));
  STORE8(d + 4 * db, c45);
  STORE8(d + 5 * db, _mm_unpackhi_epi64(c45, c45));
  STORE8(d + 6 * db, c67);
  STORE8(d + 7 * db, _mm_unpackhi_epi64(c67, c67));
}

#define MICRO1 micro1_8x8
#define MICRO1_K 8
#define MICRO2 micro2_8x8
#define MICRO2_K 8
#define MICRO4 micro4_4x4
#define MICRO4_K 4
#define MICRO8 micro8_2x2
#define MICRO8_K 2
#else /* portable: element by element, still blocked */
DEF_MICRO_1X1(micro1_1x1, uint8_t)
DEF_MICRO_1X1(micro2_1x1, uint16_t)
DEF_MICRO_1X1(micro4_1x1, uint32_t)
DEF_MICRO_1X1(micro8_1x1, uint64_t)
#define MICRO1 micro1_1x1
#define MICRO1_K 1
#define MICRO2 micro2_1x1
#define MICRO2_K 1
#define MICRO4 micro4_1x1
#define MICRO4_K 1
#define MICRO8 micro8_1x1
#define MICRO8_K 1
#endif
DEF_MICRO_1X1(micro16_1x1, u128) /* a 16-byte element is a register row already */

static int64_t min64(int64_t x, int64_t y) { return x < y ? x : y; }

/* The blocked transpose for elements of type T, with micro-kernel MICRO of
 * size K (a divisor of TILE).  name##_tile does one tile [a0, a1) x [b0, b1):
 * its whole K x K blocks, K dst rows at a time, then the ragged edges. */
#define DEF_TRANSPOSE(name, T, MICRO, K, TILE)                                                \
  DEF_TRANSPOSE_EDGE(name##_edge, T)                                                          \
  static void name##_tile(char *d, int64_t db, const char *s, int64_t sa, int64_t a0,         \
                          int64_t a1, int64_t b0, int64_t b1) {                               \
    const int64_t es = (int64_t)sizeof(T);                                                    \
    const int64_t ak = a0 + (a1 - a0) / (K) * (K), bk = b0 + (b1 - b0) / (K) * (K);           \
    for (int64_t b = b0; b < bk; b += (K)) {                                                  \
      for (int64_t a = a0; a < ak; a += (K))                                                  \
        MICRO(d + b * db + a * es, db, s + a * sa + b * es, sa);                              \
      name##_edge(d, db, s, sa, ak, a1, b, b + (K));                                          \
    }                                                                                         \
    name##_edge(d, db, s, sa, a0, a1, bk, b1);                                                \
  }                                                                                           \
  static void name(char *d, int64_t db, const char *s, int64_t sa, int64_t na, int64_t nb) {  \
    for (int64_t B0 = 0; B0 < nb; B0 += TRANSPOSE_BLOCK) {                                    \
      const int64_t B1 = min64(B0 + TRANSPOSE_BLOCK, nb);                                     \
      for (int64_t A0 = 0; A0 < na; A0 += TRANSPOSE_BLOCK) {                                  \
        const int64_t A1 = min64(A0 + TRANSPOSE_BLOCK, na);                                   \
        for (int64_t b0 = B0; b0 < B1; b0 += (TILE))                                          \
          for (int64_t a0 = A0; a0 < A1; a0 += (TILE))                                        \
            name##_tile(d, db, s, sa, a0, min64(a0 + (TILE), A1), b0, min64(b0 + (TILE), B1)); \
      }                                                                                       \
    }                                                                                         \
  }

/* Tile sides: one cache line of elements for 1- and 2-byte types, 16
 * elements (one line or more) for the others. */
DEF_TRANSPOSE(transpose1, uint8_t, MICRO1, MICRO1_K, 64)
DEF_TRANSPOSE(transpose2, uint16_t, MICRO2, MICRO2_K, 32)
DEF_TRANSPOSE(transpose4, uint32_t, MICRO4, MICRO4_K, 16)
DEF_TRANSPOSE(transpose8, uint64_t, MICRO8, MICRO8_K, 16)
DEF_TRANSPOSE(transpose16, u128, micro16_1x1, 1, 16)

typedef void (*transpose_fn)(char *, int64_t, const char *, int64_t, int64_t, int64_t);

static transpose_fn pick_transpose(int64_t es) {
  switch (es) {
    case 1: return transpose1;
    case 2: return transpose2;
    case 4: return transpose4;
    case 8: return transpose8;
    case 16: return transpose16;
    default: return NULL;
  }
}

/* Iterates over every dimension except those in |skip| (a bit mask of at
 * most two dims), calling |body| with the base pointers of each position. */
typedef void (*body_fn)(const copy_plan *p, char *d, const char *s, void *arg);

static void for_outer(const copy_plan *p, int32_t skip0, int32_t skip1, body_fn body,
                      void *arg) {
  int32_t dims[DLPX_MAX_NDIM], m = 0;
  for (int32_t i = 0; i < p->ndim; i++)
    if (i != skip0 && i != skip1) dims[m++] = i;
  int64_t idx[DLPX_MAX_NDIM] = {0};
  char *d = p->dst;
  const char *s = p->src;
  for (;;) {
    body(p, d, s, arg);
    int32_t k = m - 1;
    for (; k >= 0; k--) {
      int32_t i = dims[k];
      if (++idx[k] < p->n[i]) {
        d += p->ds[i];
        s += p->ss[i];
        break;
      }
      d -= p->ds[i] * (p->n[i] - 1);
      s -= p->ss[i] * (p->n[i] - 1);
      idx[k] = 0;
    }
    if (k < 0) return;
  }
}

typedef struct {
  int32_t inner;     /* the dim copied by the innermost call */
  int32_t other;     /* transpose: the src-contiguous dim */
  strided_fn fn;
  transpose_fn tfn;
} body_arg;

static void body_memcpy(const copy_plan *p, char *d, const char *s, void *arg) {
  const body_arg *a = arg;
  memcpy(d, s, (size_t)(p->n[a->inner] * p->esize));
}

static void body_strided(const copy_plan *p, char *d, const char *s, void *arg) {
  const body_arg *a = arg;
  int32_t i = a->inner;
  if (a->fn)
    a->fn(d, p->ds[i], s, p->ss[i], p->n[i]);
  else
    strided_generic(d, p->ds[i], s, p->ss[i], p->n[i], p->esize);
}

static void body_transpose(const copy_plan *p, char *d, const char *s, void *arg) {
  const body_arg *a = arg;
  a->tfn(d, p->ds[a->other], s, p->ss[a->inner], p->n[a->inner], p->n[a->other]);
}

static void copy_bytes(const copy_plan *p) {
  const int64_t es = p->esize;
  if (p->ndim == 0) { /* a single element */
    memcpy(p->dst, p->src, (size_t)es);
    return;
  }
  const int32_t in = p->ndim - 1;
  body_arg a = {in, -1, pick_strided(es), pick_transpose(es)};
  if (p->ds[in] == es && p->ss[in] == es) {
    for_outer(p, in, -1, body_memcpy, &a);
    return;
  }
  if (p->ds[in] == es && a.tfn && p->n[in] >= 8) {
    /* Is the source contiguous along some other dimension? */
    for (int32_t j = 0; j < in; j++)
      if (p->ss[j] == es && p->n[j] >= 8) {
        a.other = j;
        for_outer(p, in, j, body_transpose, &a);
        return;
      }
  }
  for_outer(p, in, -1, body_strided, &a);
}

/* ---- packed sub-byte elements ---------------------------------------------------- */

static unsigned read_bits(const unsigned char *base, int64_t bitpos, int bits) {
  const unsigned char *b = base + (bitpos >> 3);
  unsigned shift = (unsigned)(bitpos & 7);
  unsigned v = b[0];
  if (shift + (unsigned)bits > 8) v |= (unsigned)b[1] << 8;
  return (v >> shift) & ((1u << bits) - 1u);
}

static void write_bits(unsigned char *base, int64_t bitpos, int bits, unsigned v) {
  unsigned char *b = base + (bitpos >> 3);
  unsigned shift = (unsigned)(bitpos & 7);
  if (bits == 8 && shift == 0) { /* a whole byte (padded elements): no blend */
    b[0] = (unsigned char)v;
    return;
  }
  unsigned mask = ((1u << bits) - 1u) << shift;
  unsigned w = (unsigned)b[0] | (shift + (unsigned)bits > 8 ? (unsigned)b[1] << 8 : 0u);
  w = (w & ~mask) | ((v << shift) & mask);
  b[0] = (unsigned char)w;
  if (shift + (unsigned)bits > 8) b[1] = (unsigned char)(w >> 8);
}

/* Element by element through bit offsets: packed sub-byte views that are
 * not both contiguous, and copies between packed and padded (one element per
 * byte, high bits zero) layouts. */
static void copy_subbyte(const dlpx_tensor *dst, const dlpx_tensor *src) {
  const int bits = dst->dl.dtype.bits; /* value bits */
  const int64_t dbits = dlpx__elem_bits(dst->dl.dtype, dst->flags);
  const int64_t sbits = dlpx__elem_bits(src->dl.dtype, src->flags);
  const int32_t ndim = dst->dl.ndim;
  unsigned char *d = dlpx_tensor_data(dst);
  const unsigned char *s = dlpx_tensor_data(src);
  int64_t idx[DLPX_MAX_NDIM] = {0};
  int64_t doff = 0, soff = 0; /* element offsets */
  for (;;) {
    write_bits(d, doff * dbits, (int)dbits, read_bits(s, soff * sbits, bits));
    int32_t k = ndim - 1;
    for (; k >= 0; k--) {
      if (++idx[k] < dst->dl.shape[k]) {
        doff += dst->dl.strides[k];
        soff += src->dl.strides[k];
        break;
      }
      doff -= dst->dl.strides[k] * (dst->dl.shape[k] - 1);
      soff -= src->dl.strides[k] * (src->dl.shape[k] - 1);
      idx[k] = 0;
    }
    if (k < 0) return;
  }
}

/* ---- checks and entry points ------------------------------------------------------ */

/* A sufficient test that no two elements of the view share memory: with the
 * extents sorted by |stride|, each stride exceeds the span of all smaller
 * ones.  Views that fail it are treated as self-overlapping. */
bool dlpx__no_self_overlap(const dlpx_tensor *t) {
  int64_t s[DLPX_MAX_NDIM], n[DLPX_MAX_NDIM];
  int32_t m = 0;
  for (int32_t i = 0; i < t->dl.ndim; i++) {
    if (t->dl.shape[i] == 0) return true;
    if (t->dl.shape[i] == 1) continue;
    int64_t a = abs64(t->dl.strides[i]), ni = t->dl.shape[i];
    int32_t j = m;
    while (j > 0 && s[j - 1] > a) {
      s[j] = s[j - 1];
      n[j] = n[j - 1];
      j--;
    }
    s[j] = a;
    n[j] = ni;
    m++;
  }
  int64_t span = 0; /* elements spanned by the smaller strides */
  for (int32_t i = 0; i < m; i++) {
    if (s[i] <= span) return false;
    span += s[i] * (n[i] - 1); /* bounded by the checked extent */
  }
  return true;
}

/* The same elements in the same layout: same first element, same element
 * width (a packed and a padded sub-byte view may start at one address) and
 * the same strides wherever they matter. */
static bool same_view(const dlpx_tensor *a, const dlpx_tensor *b) {
  if (dlpx_tensor_data(a) != dlpx_tensor_data(b)) return false;
  if (dlpx__elem_bits(a->dl.dtype, a->flags) != dlpx__elem_bits(b->dl.dtype, b->flags)) return false;
  for (int32_t i = 0; i < a->dl.ndim; i++)
    if (a->dl.shape[i] != 1 && a->dl.strides[i] != b->dl.strides[i]) return false;
  return true;
}

static bool ranges_overlap(const dlpx_tensor *a, const dlpx_tensor *b) {
  int64_t alo, ahi, blo, bhi;
  dlpx_tensor_extent(a, &alo, &ahi);
  dlpx_tensor_extent(b, &blo, &bhi);
  if (ahi == alo || bhi == blo) return false;
  uintptr_t a0 = (uintptr_t)dlpx_tensor_data(a) + (uintptr_t)alo;
  uintptr_t a1 = (uintptr_t)dlpx_tensor_data(a) + (uintptr_t)ahi;
  uintptr_t b0 = (uintptr_t)dlpx_tensor_data(b) + (uintptr_t)blo;
  uintptr_t b1 = (uintptr_t)dlpx_tensor_data(b) + (uintptr_t)bhi;
  return a0 < b1 && b0 < a1;
}

void dlpx__copy_raw(const dlpx_tensor *dst, const dlpx_tensor *src) {
  if (dlpx_tensor_numel(dst) == 0) return;
  const int64_t ebits = dlpx__elem_bits(dst->dl.dtype, dst->flags);
  if (ebits != dlpx__elem_bits(src->dl.dtype, src->flags)) { /* packed <-> padded */
    copy_subbyte(dst, src);
    return;
  }
  if (ebits % 8 != 0) {
    if (dlpx_tensor_is_c_contiguous(dst) && dlpx_tensor_is_c_contiguous(src)) {
      /* Whole bytes at once; the bits of a last partial byte one by one, so
       * whatever follows the view in that byte is kept. */
      const int64_t n = dlpx_tensor_numel(dst), full = n * ebits / 8;
      unsigned char *d = dlpx_tensor_data(dst);
      const unsigned char *s = dlpx_tensor_data(src);
      memcpy(d, s, (size_t)full);
      for (int64_t i = full * 8 / ebits; i < n; i++)
        write_bits(d, i * ebits, (int)ebits, read_bits(s, i * ebits, (int)ebits));
      return;
    }
    copy_subbyte(dst, src);
    return;
  }
  copy_plan p;
  dlpx__copy_plan_build(&p, dst, src);
  copy_bytes(&p);
}

int dlpx__copy_check(const dlpx_tensor *dst, const dlpx_tensor *src) {
  if (!dst || !src) return dlpx__fail(DLPX_EINVAL, "dst or src is NULL");
  if (dst->dl.ndim != src->dl.ndim)
    return dlpx__fail(DLPX_ESHAPE, "copy between %d-d and %d-d tensors", (int)dst->dl.ndim,
                      (int)src->dl.ndim);
  for (int32_t i = 0; i < dst->dl.ndim; i++)
    if (dst->dl.shape[i] != src->dl.shape[i])
      return dlpx__fail(DLPX_ESHAPE, "shape mismatch at dimension %d: %lld vs %lld", (int)i,
                        (long long)dst->dl.shape[i], (long long)src->dl.shape[i]);
  if (!dlpx__dtype_eq(dst->dl.dtype, src->dl.dtype))
    return dlpx__fail(DLPX_EDTYPE, "copy between different dtypes");
  if (dst->flags & DLPX_TENSOR_READONLY)
    return dlpx__fail(DLPX_EREADONLY, "destination tensor is read-only");
  if (!dlpx__no_self_overlap(dst))
    return dlpx__fail(DLPX_ELAYOUT,
                      "destination has zero or overlapping strides: elements would be written "
                      "more than once");
  return 0;
}

int dlpx_tensor_copy_into(const dlpx_tensor *dst, const dlpx_tensor *src) {
  if (!dst || !src) return dlpx__fail(DLPX_EINVAL, "dst or src is NULL");
  if (!dlpx__device_host((int32_t)dst->dl.device.device_type) ||
      !dlpx__device_host((int32_t)src->dl.device.device_type))
    return dlpx__fail(DLPX_EDEVICE, "copy needs host memory (device types %d -> %d)",
                      (int)src->dl.device.device_type, (int)dst->dl.device.device_type);
  int rc = dlpx__copy_check(dst, src);
  if (rc) return rc;
  if (dlpx_tensor_numel(dst) == 0) return 0;
  if (ranges_overlap(dst, src)) {
    if (same_view(dst, src)) return 0;
    dlpx_tensor *tmp;
    rc = dlpx_tensor_copy(src, 'C', &tmp);
    if (rc) return rc;
    dlpx__copy_raw(dst, tmp);
    dlpx_tensor_free(tmp);
    return 0;
  }
  dlpx__copy_raw(dst, src);
  return 0;
}

int dlpx_tensor_copy(const dlpx_tensor *t, char order, dlpx_tensor **out) {
  if (!t || !out) return dlpx__fail(DLPX_EINVAL, "tensor or out is NULL");
  if (order != 'C' && order != 'F')
    return dlpx__fail(DLPX_EINVAL, "order must be 'C' or 'F'");
  if (!dlpx__device_host((int32_t)t->dl.device.device_type))
    return dlpx__fail(DLPX_EDEVICE, "copy needs host memory (device type %d)",
                      (int)t->dl.device.device_type);
  dlpx_tensor *c;
  int rc = dlpx__tensor_new_owned(t->dl.dtype, t->dl.ndim, t->dl.shape, order,
                                  t->flags & DLPX_TENSOR_SUBBYTE_PADDED, false, &c);
  if (rc) return rc;
  dlpx__copy_raw(c, t);
  *out = c;
  return 0;
}

int dlpx_tensor_contiguous(const dlpx_tensor *t, dlpx_tensor **out) {
  if (!t || !out) return dlpx__fail(DLPX_EINVAL, "tensor or out is NULL");
  if (dlpx_tensor_is_c_contiguous(t)) return dlpx_tensor_clone(t, out);
  return dlpx_tensor_copy(t, 'C', out);
}
