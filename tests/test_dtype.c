/* test_dtype.c - dtype names, validation and sizes. */
#include "config.h"

#include "check.h"

typedef struct {
  const char *name;
  uint8_t code, bits;
} named;

static const named all_types[] = {
    {"bool", kDLBool, 8},
    {"int8", kDLInt, 8},
    {"int16", kDLInt, 16},
    {"int32", kDLInt, 32},
    {"int64", kDLInt, 64},
    {"uint8", kDLUInt, 8},
    {"uint16", kDLUInt, 16},
    {"uint32", kDLUInt, 32},
    {"uint64", kDLUInt, 64},
    {"float16", kDLFloat, 16},
    {"float32", kDLFloat, 32},
    {"float64", kDLFloat, 64},
    {"bfloat16", kDLBfloat, 16},
    {"complex32", kDLComplex, 32},
    {"complex64", kDLComplex, 64},
    {"complex128", kDLComplex, 128},
    {"float8_e3m4", kDLFloat8_e3m4, 8},
    {"float8_e4m3", kDLFloat8_e4m3, 8},
    {"float8_e4m3b11fnuz", kDLFloat8_e4m3b11fnuz, 8},
    {"float8_e4m3fn", kDLFloat8_e4m3fn, 8},
    {"float8_e4m3fnuz", kDLFloat8_e4m3fnuz, 8},
    {"float8_e5m2", kDLFloat8_e5m2, 8},
    {"float8_e5m2fnuz", kDLFloat8_e5m2fnuz, 8},
    {"float8_e8m0fnu", kDLFloat8_e8m0fnu, 8},
    {"float6_e2m3fn", kDLFloat6_e2m3fn, 6},
    {"float6_e3m2fn", kDLFloat6_e3m2fn, 6},
    {"float4_e2m1fn", kDLFloat4_e2m1fn, 4},
};
#define NTYPES (sizeof all_types / sizeof all_types[0])

static void test_every_name_round_trips(void) {
  for (size_t i = 0; i < NTYPES; i++) {
    DLDataType d;
    ASSERT_OK(dlpx_dtype_parse(all_types[i].name, &d));
    ASSERT_EQ(d.code, all_types[i].code);
    ASSERT_EQ(d.bits, all_types[i].bits);
    ASSERT_EQ(d.lanes, 1);
    ASSERT_OK(dlpx_dtype_check(d));
    char buf[DLPX_DTYPE_NAME_MAX];
    ASSERT_OK(dlpx_dtype_format(d, buf, sizeof buf));
    ASSERT_STR_EQ(buf, all_types[i].name);
  }
}

static void test_every_code_is_covered(void) {
  /* Every DLDataTypeCode 0..17 but the opaque handle has a name. */
  for (unsigned code = 0; code <= kDLFloat4_e2m1fn; code++) {
    int found = 0;
    for (size_t i = 0; i < NTYPES; i++) found |= all_types[i].code == code;
    ASSERT_EQ(found, code != kDLOpaqueHandle);
  }
}

static void test_aliases_and_lanes(void) {
  DLDataType d;
  ASSERT_OK(dlpx_dtype_parse("half", &d));
  ASSERT_TRUE(d.code == kDLFloat && d.bits == 16);
  ASSERT_OK(dlpx_dtype_parse("double", &d));
  ASSERT_TRUE(d.code == kDLFloat && d.bits == 64);
  ASSERT_OK(dlpx_dtype_parse("cfloat", &d));
  ASSERT_TRUE(d.code == kDLComplex && d.bits == 64);
  ASSERT_OK(dlpx_dtype_parse("float32x4", &d));
  ASSERT_TRUE(d.code == kDLFloat && d.bits == 32 && d.lanes == 4);
  char buf[DLPX_DTYPE_NAME_MAX];
  ASSERT_OK(dlpx_dtype_format(d, buf, sizeof buf));
  ASSERT_STR_EQ(buf, "float32x4");
  ASSERT_OK(dlpx_dtype_parse("float4_e2m1fnx2", &d));
  ASSERT_TRUE(d.code == kDLFloat4_e2m1fn && d.bits == 4 && d.lanes == 2);
  ASSERT_EQ(dlpx_dtype_bits(d), 8);
}

static void test_bad_names(void) {
  const char *bad[] = {"", "float", "int7", "int", "uint", "float128", "float32x0", "float32x",
                       "x4", "int8x65536", "bfloat", "complex", "float8", "Float32", "float32 ",
                       "int08", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    DLDataType d = {99, 99, 99};
    int rc = dlpx_dtype_parse(bad[i], &d);
    if (strcmp(bad[i], "float") == 0) { /* an alias */
      ASSERT_EQ(rc, 0);
      continue;
    }
    if (rc != DLPX_EDTYPE) {
      fprintf(stderr, "# name '%s'\n", bad[i]);
      ASSERT_EQ(rc, DLPX_EDTYPE);
    }
    ASSERT_EQ(d.code, 99); /* untouched */
  }
  ASSERT_RC(DLPX_EINVAL, dlpx_dtype_parse(NULL, NULL));
}

static void test_check_rejects(void) {
  ASSERT_RC(DLPX_EDTYPE, dlpx_dtype_check((DLDataType){kDLFloat, 8, 1}));
  ASSERT_MSG("has no 8-bit type");
  ASSERT_RC(DLPX_EDTYPE, dlpx_dtype_check((DLDataType){kDLBool, 1, 1}));
  ASSERT_RC(DLPX_EDTYPE, dlpx_dtype_check((DLDataType){kDLBfloat, 32, 1}));
  ASSERT_RC(DLPX_EDTYPE, dlpx_dtype_check((DLDataType){kDLOpaqueHandle, 64, 1}));
  ASSERT_RC(DLPX_EDTYPE, dlpx_dtype_check((DLDataType){18, 8, 1}));
  ASSERT_MSG("unknown dtype code 18");
  ASSERT_RC(DLPX_EDTYPE, dlpx_dtype_check((DLDataType){255, 8, 1}));
  ASSERT_RC(DLPX_EDTYPE, dlpx_dtype_check((DLDataType){kDLFloat, 32, 0}));
  ASSERT_RC(DLPX_EDTYPE, dlpx_dtype_check((DLDataType){kDLFloat6_e2m3fn, 8, 1}));
  ASSERT_RC(DLPX_EDTYPE, dlpx_dtype_check((DLDataType){kDLFloat4_e2m1fn, 8, 1}));
  char buf[DLPX_DTYPE_NAME_MAX] = "x";
  ASSERT_RC(DLPX_EDTYPE, dlpx_dtype_format((DLDataType){kDLInt, 12, 1}, buf, sizeof buf));
  ASSERT_STR_EQ(buf, "");
  ASSERT_RC(DLPX_EINVAL, dlpx_dtype_format((DLDataType){kDLInt, 32, 1}, buf, 3));
  ASSERT_STR_EQ(buf, "");
  ASSERT_RC(DLPX_EINVAL, dlpx_dtype_format((DLDataType){kDLInt, 32, 1}, NULL, 3));
}

static void test_nbytes(void) {
  int64_t n;
  ASSERT_OK(dlpx_dtype_nbytes(dt("float32"), 10, &n));
  ASSERT_EQ(n, 40);
  ASSERT_OK(dlpx_dtype_nbytes(dt("complex128"), 3, &n));
  ASSERT_EQ(n, 48);
  ASSERT_OK(dlpx_dtype_nbytes(dt("bool"), 3, &n));
  ASSERT_EQ(n, 3);
  ASSERT_OK(dlpx_dtype_nbytes(dt("float4_e2m1fn"), 3, &n));
  ASSERT_EQ(n, 2);
  ASSERT_OK(dlpx_dtype_nbytes(dt("float6_e2m3fn"), 5, &n));
  ASSERT_EQ(n, 4); /* 30 bits */
  ASSERT_OK(dlpx_dtype_nbytes(dt("float6_e2m3fn"), 4, &n));
  ASSERT_EQ(n, 3);
  ASSERT_OK(dlpx_dtype_nbytes(dt("float32x4"), 2, &n));
  ASSERT_EQ(n, 32);
  ASSERT_OK(dlpx_dtype_nbytes(dt("int8"), 0, &n));
  ASSERT_EQ(n, 0);
  ASSERT_OK(dlpx_dtype_nbytes(dt("int8"), INT64_MAX, &n));
  ASSERT_EQ(n, INT64_MAX);
  ASSERT_OK(dlpx_dtype_nbytes(dt("float4_e2m1fn"), INT64_MAX, &n));
  ASSERT_EQ(n, INT64_MAX / 2 + 1);
  ASSERT_RC(DLPX_EOVERFLOW, dlpx_dtype_nbytes(dt("int16"), INT64_MAX, &n));
  ASSERT_RC(DLPX_EOVERFLOW, dlpx_dtype_nbytes(dt("float64"), INT64_MAX / 4, &n));
  ASSERT_RC(DLPX_EINVAL, dlpx_dtype_nbytes(dt("int8"), -1, &n));
  ASSERT_RC(DLPX_EINVAL, dlpx_dtype_nbytes(dt("int8"), 1, NULL));
  ASSERT_RC(DLPX_EDTYPE, dlpx_dtype_nbytes((DLDataType){kDLInt, 3, 1}, 1, &n));
}

int main(void) {
  RUN(test_every_name_round_trips);
  RUN(test_every_code_is_covered);
  RUN(test_aliases_and_lanes);
  RUN(test_bad_names);
  RUN(test_check_rejects);
  RUN(test_nbytes);
  CHECK_DONE();
}
