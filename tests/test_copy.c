/* test_copy.c - strided copies: fast paths, overlap, refusals (hand-picked
 * cases; test_random.c compares against a reference at random). */
#include "config.h"

#include "check.h"

static dlpx_tensor *filled(const char *dtype, int32_t ndim, const int64_t *shape) {
  dlpx_tensor *t = NULL;
  if (dlpx_tensor_empty(dt(dtype), ndim, shape, &t) != 0) return NULL;
  unsigned char *p = dlpx_tensor_data(t);
  for (int64_t i = 0; i < dlpx_tensor_nbytes(t); i++) p[i] = (unsigned char)(i * 7 + 1);
  return t;
}

static void test_contiguous_copy(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {5, 7};
  dlpx_tensor *a = filled("int16", 2, shape), *b = NULL;
  ASSERT_OK(dlpx_tensor_zeros(dt("int16"), 2, shape, &b));
  ASSERT_OK(dlpx_tensor_copy_into(b, a));
  ASSERT_EQ(memcmp(dlpx_tensor_data(a), dlpx_tensor_data(b), 70), 0);
  dlpx_tensor_free(a);
  dlpx_tensor_free(b);
  ASSERT_NO_LEAKS(&l);
}

static void test_transpose_copy(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {67, 45};
  const char *types[] = {"int8", "int16", "float32", "float64", "complex128", "float8_e5m2"};
  for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
    dlpx_tensor *a = filled(types[k], 2, shape), *at = NULL, *c = NULL;
    ASSERT_OK(dlpx_tensor_transpose(a, &at));
    ASSERT_OK(dlpx_tensor_copy(at, 'C', &c));
    ASSERT_TRUE(dlpx_tensor_is_c_contiguous(c));
    int64_t es = dlpx_dtype_bits(dt(types[k])) / 8;
    const unsigned char *src = dlpx_tensor_data(a), *dst = dlpx_tensor_data(c);
    for (int64_t i = 0; i < 45; i++)
      for (int64_t j = 0; j < 67; j++)
        ASSERT_EQ(memcmp(dst + (i * 67 + j) * es, src + (j * 45 + i) * es, (size_t)es), 0);
    dlpx_tensor_free(c);
    dlpx_tensor_free(at);
    dlpx_tensor_free(a);
  }
  ASSERT_NO_LEAKS(&l);
}

static void test_f_order_copy(void) {
  int64_t shape[] = {3, 4, 5};
  dlpx_tensor *a = filled("float32", 3, shape), *c = NULL;
  ASSERT_OK(dlpx_tensor_copy(a, 'F', &c));
  ASSERT_TRUE(dlpx_tensor_is_f_contiguous(c));
  const float *s = dlpx_tensor_data(a), *d = dlpx_tensor_data(c);
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 4; j++)
      for (int k = 0; k < 5; k++) ASSERT_EQ(memcmp(&d[i + 3 * j + 12 * k], &s[i * 20 + j * 5 + k], 4), 0);
  ASSERT_RC(DLPX_EINVAL, dlpx_tensor_copy(a, 'K', &c));
  dlpx_tensor_free(c);
  dlpx_tensor_free(a);
}

static void test_broadcast_source(void) {
  int64_t shape[] = {4};
  dlpx_tensor *a = filled("int32", 1, shape), *b = NULL, *c = NULL;
  int64_t to[] = {3, 4};
  ASSERT_OK(dlpx_tensor_broadcast_to(a, 2, to, &b));
  ASSERT_OK(dlpx_tensor_zeros(dt("int32"), 2, to, &c));
  ASSERT_OK(dlpx_tensor_copy_into(c, b));
  const int32_t *s = dlpx_tensor_data(a), *d = dlpx_tensor_data(c);
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 4; j++) ASSERT_EQ(d[i * 4 + j], s[j]);
  /* A broadcast destination writes elements twice: refused. */
  ASSERT_RC(DLPX_ELAYOUT, dlpx_tensor_copy_into(b, c));
  ASSERT_MSG("more than once");
  dlpx_tensor_free(c);
  dlpx_tensor_free(b);
  dlpx_tensor_free(a);
}

static void test_overlapping_destination_strides(void) {
  float buf[16] = {0};
  int64_t shape[] = {3, 4};
  int64_t st[] = {2, 1}; /* rows overlap */
  dlpx_tensor *d = NULL, *s = NULL;
  ASSERT_OK(dlpx_tensor_wrap(buf, (DLDevice){kDLCPU, 0}, dt("float32"), 2, shape, st, 0, NULL,
                             NULL, &d));
  ASSERT_OK(dlpx_tensor_zeros(dt("float32"), 2, shape, &s));
  ASSERT_RC(DLPX_ELAYOUT, dlpx_tensor_copy_into(d, s));
  dlpx_tensor_free(d);
  dlpx_tensor_free(s);
}

static void test_overlap_between_src_and_dst(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {10};
  dlpx_tensor *x = NULL, *a = NULL, *b = NULL;
  ASSERT_OK(dlpx_tensor_empty(dt("int32"), 1, shape, &x));
  int32_t *p = dlpx_tensor_data(x);
  for (int i = 0; i < 10; i++) p[i] = i;
  /* x[1:] = x[:-1]: a naive forward loop would smear x[0] everywhere. */
  ASSERT_OK(dlpx_tensor_slice(x, 0, 1, DLPX_NONE, 1, &a));
  ASSERT_OK(dlpx_tensor_slice(x, 0, DLPX_NONE, -1, 1, &b));
  ASSERT_OK(dlpx_tensor_copy_into(a, b));
  ASSERT_EQ(p[0], 0);
  for (int i = 1; i < 10; i++) ASSERT_EQ(p[i], i - 1);
  dlpx_tensor_free(a);
  dlpx_tensor_free(b);
  /* x = x[::-1] */
  for (int i = 0; i < 10; i++) p[i] = i;
  ASSERT_OK(dlpx_tensor_slice(x, 0, DLPX_NONE, DLPX_NONE, -1, &a));
  ASSERT_OK(dlpx_tensor_copy_into(x, a));
  for (int i = 0; i < 10; i++) ASSERT_EQ(p[i], 9 - i);
  dlpx_tensor_free(a);
  /* the same view: nothing to do */
  ASSERT_OK(dlpx_tensor_copy_into(x, x));
  for (int i = 0; i < 10; i++) ASSERT_EQ(p[i], 9 - i);
  dlpx_tensor_free(x);
  /* in-place transpose of a square matrix */
  int64_t sq[] = {5, 5};
  ASSERT_OK(dlpx_tensor_empty(dt("float64"), 2, sq, &x));
  double *q = dlpx_tensor_data(x);
  for (int i = 0; i < 25; i++) q[i] = i;
  ASSERT_OK(dlpx_tensor_transpose(x, &a));
  ASSERT_OK(dlpx_tensor_copy_into(x, a));
  for (int i = 0; i < 5; i++)
    for (int j = 0; j < 5; j++) ASSERT_TRUE(q[i * 5 + j] == (double)(j * 5 + i));
  dlpx_tensor_free(a);
  dlpx_tensor_free(x);
  ASSERT_NO_LEAKS(&l);
}

static void test_copy_refusals(void) {
  int64_t s1[] = {3, 4}, s2[] = {4, 3};
  dlpx_tensor *a = filled("float32", 2, s1), *b = filled("float32", 2, s2), *c = filled("int32", 2, s1);
  dlpx_tensor *r = NULL;
  ASSERT_RC(DLPX_ESHAPE, dlpx_tensor_copy_into(a, b));
  ASSERT_MSG("dimension 0: 3 vs 4");
  ASSERT_RC(DLPX_EDTYPE, dlpx_tensor_copy_into(a, c));
  ASSERT_OK(dlpx_tensor_with_flags(a, DLPX_TENSOR_READONLY, &r));
  ASSERT_RC(DLPX_EREADONLY, dlpx_tensor_copy_into(r, a));
  ASSERT_OK(dlpx_tensor_copy_into(a, r)); /* reading is fine */
  ASSERT_RC(DLPX_EINVAL, dlpx_tensor_copy_into(NULL, a));
  int64_t s3[] = {12};
  dlpx_tensor *flat = filled("float32", 1, s3);
  ASSERT_RC(DLPX_ESHAPE, dlpx_tensor_copy_into(a, flat));
  dlpx_storage *gs = NULL;
  dlpx_tensor *g = NULL;
  ASSERT_OK(dlpx_storage_wrap((void *)(uintptr_t)0x10000, 48, (DLDevice){kDLCUDA, 0}, NULL, NULL, &gs));
  ASSERT_OK(dlpx_tensor_from_storage(gs, dt("float32"), 2, s1, NULL, 0, 0, &g));
  ASSERT_RC(DLPX_EDEVICE, dlpx_tensor_copy_into(a, g));
  ASSERT_RC(DLPX_EDEVICE, dlpx_tensor_copy_into(g, a));
  dlpx_tensor *cg = NULL, *gt = NULL;
  ASSERT_OK(dlpx_tensor_contiguous(g, &cg)); /* already contiguous: a new handle, no copy */
  ASSERT_PTR_EQ(dlpx_tensor_data(cg), dlpx_tensor_data(g));
  dlpx_tensor_free(cg);
  ASSERT_OK(dlpx_tensor_transpose(g, &gt));
  ASSERT_RC(DLPX_EDEVICE, dlpx_tensor_contiguous(gt, &cg));
  dlpx_tensor_free(gt);
  dlpx_tensor_free(g);
  dlpx_storage_release(gs);
  dlpx_tensor_free(flat);
  dlpx_tensor_free(r);
  dlpx_tensor_free(a);
  dlpx_tensor_free(b);
  dlpx_tensor_free(c);
}

static void test_zero_size_and_0d(void) {
  int64_t z[] = {0, 4};
  dlpx_tensor *a = NULL, *b = NULL;
  ASSERT_OK(dlpx_tensor_empty(dt("float32"), 2, z, &a));
  ASSERT_OK(dlpx_tensor_empty(dt("float32"), 2, z, &b));
  ASSERT_OK(dlpx_tensor_copy_into(a, b));
  dlpx_tensor_free(a);
  dlpx_tensor_free(b);
  ASSERT_OK(dlpx_tensor_zeros(dt("complex128"), 0, NULL, &a));
  ASSERT_OK(dlpx_tensor_empty(dt("complex128"), 0, NULL, &b));
  memset(dlpx_tensor_data(b), 0xAB, 16);
  ASSERT_OK(dlpx_tensor_copy_into(a, b));
  ASSERT_EQ(((unsigned char *)dlpx_tensor_data(a))[15], 0xAB);
  dlpx_tensor_free(a);
  dlpx_tensor_free(b);
}

static void test_contiguous_shares_when_possible(void) {
  int64_t shape[] = {4, 4};
  dlpx_tensor *a = filled("float32", 2, shape), *c = NULL, *t = NULL;
  ASSERT_OK(dlpx_tensor_contiguous(a, &c));
  ASSERT_PTR_EQ(dlpx_tensor_data(c), dlpx_tensor_data(a));
  dlpx_tensor_free(c);
  ASSERT_OK(dlpx_tensor_transpose(a, &t));
  ASSERT_OK(dlpx_tensor_contiguous(t, &c));
  ASSERT_TRUE(dlpx_tensor_data(c) != dlpx_tensor_data(a));
  ASSERT_TRUE(dlpx_tensor_is_c_contiguous(c));
  dlpx_tensor_free(c);
  dlpx_tensor_free(t);
  dlpx_tensor_free(a);
}

static void test_subbyte_copy_keeps_neighbours(void) {
  int64_t shape[] = {7};
  dlpx_tensor *a = NULL, *b = NULL, *v = NULL;
  ASSERT_OK(dlpx_tensor_empty(dt("float4_e2m1fn"), 1, shape, &a));
  ASSERT_OK(dlpx_tensor_empty(dt("float4_e2m1fn"), 1, shape, &b));
  unsigned char *pa = dlpx_tensor_data(a), *pb = dlpx_tensor_data(b);
  memcpy(pa, "\x21\x43\x65\x07", 4);   /* nibbles 1..7 */
  memcpy(pb, "\xFF\xFF\xFF\xFF", 4);
  /* b[0:3] = a[0:3]: 12 bits; the high nibble of byte 1 must stay F. */
  dlpx_tensor *as = NULL;
  ASSERT_OK(dlpx_tensor_slice(b, 0, 0, 3, 1, &v));
  ASSERT_OK(dlpx_tensor_slice(a, 0, 0, 3, 1, &as));
  ASSERT_OK(dlpx_tensor_copy_into(v, as));
  ASSERT_EQ(pb[0], 0x21);
  ASSERT_EQ(pb[1], 0xF3);
  dlpx_tensor_free(as);
  dlpx_tensor_free(v);
  /* reversed: b = a[::-1] through the bit path */
  ASSERT_OK(dlpx_tensor_slice(a, 0, DLPX_NONE, DLPX_NONE, -1, &v));
  ASSERT_OK(dlpx_tensor_copy_into(b, v));
  ASSERT_EQ(pb[0], 0x67);
  ASSERT_EQ(pb[1], 0x45);
  ASSERT_EQ(pb[2], 0x23);
  ASSERT_EQ(pb[3] & 0x0F, 0x01);
  dlpx_tensor_free(v);
  dlpx_tensor_free(a);
  dlpx_tensor_free(b);
  /* 6-bit elements straddle bytes */
  int64_t s6[] = {5};
  ASSERT_OK(dlpx_tensor_zeros(dt("float6_e3m2fn"), 1, s6, &a));
  ASSERT_OK(dlpx_tensor_empty(dt("float6_e3m2fn"), 1, s6, &b));
  pa = dlpx_tensor_data(a);
  /* elements 1,2,3,4,5 packed little bit-endian */
  uint64_t packed = 0;
  for (int i = 0; i < 5; i++) packed |= (uint64_t)(i + 1) << (6 * i);
  for (int i = 0; i < 4; i++) pa[i] = (unsigned char)(packed >> (8 * i));
  ASSERT_OK(dlpx_tensor_slice(a, 0, DLPX_NONE, DLPX_NONE, -1, &v));
  ASSERT_OK(dlpx_tensor_copy_into(b, v));
  pb = dlpx_tensor_data(b);
  uint64_t got = 0;
  for (int i = 0; i < 4; i++) got |= (uint64_t)pb[i] << (8 * i);
  for (int i = 0; i < 5; i++) ASSERT_EQ((got >> (6 * i)) & 63, 5 - i);
  dlpx_tensor_free(v);
  dlpx_tensor_free(a);
  dlpx_tensor_free(b);
}

static void test_packed_padded_round_trip(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {3, 5};
  dlpx_tensor *packed = NULL, *padded = NULL, *back = NULL, *pt = NULL;
  ASSERT_OK(dlpx_tensor_zeros(dt("float6_e2m3fn"), 2, shape, &packed));
  unsigned char *p = dlpx_tensor_data(packed);
  /* element i holds (i * 5 + 1) mod 64, packed little bit-endian */
  for (int i = 0; i < 15; i++) {
    unsigned v = (unsigned)(i * 5 + 1) & 63u;
    for (int b = 0; b < 6; b++)
      if (v & (1u << b)) p[(i * 6 + b) / 8] |= (unsigned char)(1u << ((i * 6 + b) % 8));
  }
  ASSERT_OK(dlpx_tensor_new(dt("float6_e2m3fn"), 2, shape, DLPX_TENSOR_SUBBYTE_PADDED, 0, &padded));
  ASSERT_EQ(dlpx_tensor_nbytes(padded), 15);
  ASSERT_OK(dlpx_tensor_copy_into(padded, packed));
  const unsigned char *q = dlpx_tensor_data(padded);
  for (int i = 0; i < 15; i++) ASSERT_EQ(q[i], (i * 5 + 1) & 63);
  /* and back, through a transposed padded view into a packed F-order copy */
  ASSERT_OK(dlpx_tensor_transpose(padded, &pt));
  ASSERT_OK(dlpx_tensor_zeros(dt("float6_e2m3fn"), 2, (int64_t[]){5, 3}, &back));
  ASSERT_OK(dlpx_tensor_copy_into(back, pt));
  const unsigned char *r = dlpx_tensor_data(back);
  for (int i = 0; i < 5; i++)
    for (int j = 0; j < 3; j++) {
      int k = i * 3 + j; /* position in back */
      unsigned v = 0;
      for (int b = 0; b < 6; b++) v |= (unsigned)((r[(k * 6 + b) / 8] >> ((k * 6 + b) % 8)) & 1) << b;
      ASSERT_EQ(v, (unsigned)((j * 5 + i) * 5 + 1) & 63u);
    }
  /* a padded uint8 view reads as the padded dtype and back */
  dlpx_tensor *u8 = NULL, *again = NULL;
  ASSERT_OK(dlpx_tensor_view_as(padded, dt("uint8"), &u8));
  ASSERT_EQ(dlpx_tensor_flags(u8), 0);
  ASSERT_OK(dlpx_tensor_view_as(u8, dt("float4_e2m1fn"), &again));
  ASSERT_EQ(dlpx_tensor_flags(again), DLPX_TENSOR_SUBBYTE_PADDED);
  dlpx_tensor *refused = NULL;
  ASSERT_RC(DLPX_EDTYPE, dlpx_tensor_view_as(packed, dt("uint8"), &refused)); /* 6 bits, not 8 */
  ASSERT_PTR_EQ(refused, NULL);
  dlpx_tensor_free(again);
  dlpx_tensor_free(u8);
  dlpx_tensor_free(pt);
  dlpx_tensor_free(back);
  dlpx_tensor_free(padded);
  dlpx_tensor_free(packed);
  ASSERT_NO_LEAKS(&l);
}

/* Defect: copy_ between a packed and a padded sub-byte view that start at
 * the same address did nothing (the "same view" shortcut ignored element
 * width). */
static void test_packed_to_padded_at_the_same_address(void) {
  check_live l;
  check_live_begin(&l);
  dlpx_storage *s = NULL;
  ASSERT_OK(dlpx_storage_alloc(8, 0, 1, &s));
  unsigned char *b = dlpx_storage_data(s);
  int64_t shape[] = {4};
  dlpx_tensor *packed = NULL, *padded = NULL;
  ASSERT_OK(dlpx_tensor_from_storage(s, dt("float4_e2m1fn"), 1, shape, NULL, 0, 0, &packed));
  ASSERT_OK(dlpx_tensor_from_storage(s, dt("float4_e2m1fn"), 1, shape, NULL, 0,
                                     DLPX_TENSOR_SUBBYTE_PADDED, &padded));
  b[0] = 0x21; /* elements 1, 2 */
  b[1] = 0x43; /* elements 3, 4 */
  ASSERT_OK(dlpx_tensor_copy_into(padded, packed));
  ASSERT_EQ(b[0], 1);
  ASSERT_EQ(b[1], 2);
  ASSERT_EQ(b[2], 3);
  ASSERT_EQ(b[3], 4);
  /* and back: padded bytes 5, 6, 7, 8 packed into the first two bytes */
  b[0] = 5; b[1] = 6; b[2] = 7; b[3] = 8;
  ASSERT_OK(dlpx_tensor_copy_into(packed, padded));
  ASSERT_EQ(b[0], 0x65);
  ASSERT_EQ(b[1], 0x87);
  dlpx_tensor_free(packed);
  dlpx_tensor_free(padded);
  dlpx_storage_release(s);
  ASSERT_NO_LEAKS(&l);
}

int main(void) {
  RUN(test_contiguous_copy);
  RUN(test_transpose_copy);
  RUN(test_f_order_copy);
  RUN(test_broadcast_source);
  RUN(test_overlapping_destination_strides);
  RUN(test_overlap_between_src_and_dst);
  RUN(test_copy_refusals);
  RUN(test_zero_size_and_0d);
  RUN(test_contiguous_shares_when_possible);
  RUN(test_subbyte_copy_keeps_neighbours);
  RUN(test_packed_padded_round_trip);
  RUN(test_packed_to_padded_at_the_same_address);
  CHECK_DONE();
}
