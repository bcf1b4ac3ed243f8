/* dtype.c - DLPack data types: the one table of known types, validation,
 * names, sizes. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "internal.h"

/* Every element type dlpx knows, in DLPack code order, then by width.  The
 * Python layer reads this table (dlpx_dtype_table) instead of keeping its
 * own list. */
static const dlpx_dtype_info dtypes[] = {
    {{kDLInt, 8, 1}, "int8"},
    {{kDLInt, 16, 1}, "int16"},
    {{kDLInt, 32, 1}, "int32"},
    {{kDLInt, 64, 1}, "int64"},
    {{kDLUInt, 8, 1}, "uint8"},
    {{kDLUInt, 16, 1}, "uint16"},
    {{kDLUInt, 32, 1}, "uint32"},
    {{kDLUInt, 64, 1}, "uint64"},
    {{kDLFloat, 16, 1}, "float16"},
    {{kDLFloat, 32, 1}, "float32"},
    {{kDLFloat, 64, 1}, "float64"},
    {{kDLBfloat, 16, 1}, "bfloat16"},
    {{kDLComplex, 32, 1}, "complex32"},
    {{kDLComplex, 64, 1}, "complex64"},
    {{kDLComplex, 128, 1}, "complex128"},
    {{kDLBool, 8, 1}, "bool"},
    {{kDLFloat8_e3m4, 8, 1}, "float8_e3m4"},
    {{kDLFloat8_e4m3, 8, 1}, "float8_e4m3"},
    {{kDLFloat8_e4m3b11fnuz, 8, 1}, "float8_e4m3b11fnuz"},
    {{kDLFloat8_e4m3fn, 8, 1}, "float8_e4m3fn"},
    {{kDLFloat8_e4m3fnuz, 8, 1}, "float8_e4m3fnuz"},
    {{kDLFloat8_e5m2, 8, 1}, "float8_e5m2"},
    {{kDLFloat8_e5m2fnuz, 8, 1}, "float8_e5m2fnuz"},
    {{kDLFloat8_e8m0fnu, 8, 1}, "float8_e8m0fnu"},
    {{kDLFloat6_e2m3fn, 6, 1}, "float6_e2m3fn"},
    {{kDLFloat6_e3m2fn, 6, 1}, "float6_e3m2fn"},
    {{kDLFloat4_e2m1fn, 4, 1}, "float4_e2m1fn"},
};

typedef struct {
  const char *alias;
  DLDataType dtype;
} alias_type;

static const alias_type aliases[] = {
    {"half", {kDLFloat, 16, 1}},    {"float", {kDLFloat, 32, 1}},
    {"double", {kDLFloat, 64, 1}},  {"cfloat", {kDLComplex, 64, 1}},
    {"cdouble", {kDLComplex, 128, 1}},
};

const dlpx_dtype_info *dlpx_dtype_table(size_t *count) {
  if (count) *count = DLPX__COUNT(dtypes);
  return dtypes;
}

static const dlpx_dtype_info *find(uint8_t code, uint8_t bits) {
  for (size_t i = 0; i < DLPX__COUNT(dtypes); i++)
    if (dtypes[i].dtype.code == code && dtypes[i].dtype.bits == bits) return &dtypes[i];
  return NULL;
}

int dlpx_dtype_check(DLDataType dtype) {
  if (dtype.lanes == 0) return dlpx__fail(DLPX_EDTYPE, "dtype lanes is 0");
  if (find(dtype.code, dtype.bits)) return 0;
  const dlpx_dtype_info *first = NULL;
  size_t widths = 0;
  for (size_t i = 0; i < DLPX__COUNT(dtypes); i++)
    if (dtypes[i].dtype.code == dtype.code) {
      if (!first) first = &dtypes[i];
      widths++;
    }
  if (widths == 1)
    return dlpx__fail(DLPX_EDTYPE, "dtype %s must have %u bits, not %u", first->name,
                      (unsigned)first->dtype.bits, (unsigned)dtype.bits);
  if (widths > 1) {
    /* a family: the name without its width ("int8" -> "int") */
    size_t n = strcspn(first->name, "0123456789");
    return dlpx__fail(DLPX_EDTYPE, "dtype code %u (%.*s) has no %u-bit type",
                      (unsigned)dtype.code, (int)n, first->name, (unsigned)dtype.bits);
  }
  if (dtype.code == kDLOpaqueHandle)
    return dlpx__fail(DLPX_EDTYPE, "dtype code 3 (opaque handle) is not supported");
  return dlpx__fail(DLPX_EDTYPE, "unknown dtype code %u (bits %u)", (unsigned)dtype.code,
                    (unsigned)dtype.bits);
}

int dlpx__dtype_check_element(DLDataType dtype) {
  int rc = dlpx_dtype_check(dtype);
  if (rc) return rc;
  if (dtype.lanes != 1)
    return dlpx__fail(DLPX_EDTYPE, "dtype with %u lanes is not supported (only 1 lane)",
                      (unsigned)dtype.lanes);
  return 0;
}

int64_t dlpx_dtype_bits(DLDataType dtype) { return (int64_t)dtype.bits * dtype.lanes; }

int dlpx_dtype_nbytes(DLDataType dtype, int64_t count, int64_t *out) {
  if (!out) return dlpx__fail(DLPX_EINVAL, "out is NULL");
  if (count < 0) return dlpx__fail(DLPX_EINVAL, "element count is negative: %lld", (long long)count);
  int rc = dlpx_dtype_check(dtype);
  if (rc) return rc;
  int64_t bits = dlpx_dtype_bits(dtype);
  /* ceil(count * bits / 8) without overflowing the intermediate product. */
  int64_t whole = count / 8, rest = count % 8, r;
  if (dlpx__mul_overflow(whole, bits, &r) || dlpx__add_overflow(r, (rest * bits + 7) / 8, &r))
    return dlpx__fail(DLPX_EOVERFLOW, "%lld elements of %lld bits overflow int64",
                      (long long)count, (long long)bits);
  *out = r;
  return 0;
}

int dlpx_dtype_format(DLDataType dtype, char *buf, size_t size) {
  if (!buf || size == 0) return dlpx__fail(DLPX_EINVAL, "buffer is NULL or empty");
  buf[0] = '\0';
  int rc = dlpx_dtype_check(dtype);
  if (rc) return rc;
  const dlpx_dtype_info *info = find(dtype.code, dtype.bits); /* checked above */
  const char *base = info ? info->name : "?";
  int n = dtype.lanes == 1 ? snprintf(buf, size, "%s", base)
                           : snprintf(buf, size, "%sx%u", base, (unsigned)dtype.lanes);
  if (n < 0 || (size_t)n >= size) {
    buf[0] = '\0';
    return dlpx__fail(DLPX_EINVAL, "buffer of %zu bytes is too small for dtype name", size);
  }
  return 0;
}

/* Parses a decimal in [1, max] without a leading zero; returns 0 on
 * failure. */
static unsigned long parse_count(const char *s, unsigned long max) {
  if (*s < '1' || *s > '9') return 0;
  unsigned long v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return 0;
    v = v * 10 + (unsigned long)(*s - '0');
    if (v > max) return 0;
  }
  return v;
}

static int parse_base(const char *name, DLDataType *out) {
  for (size_t i = 0; i < DLPX__COUNT(dtypes); i++)
    if (strcmp(name, dtypes[i].name) == 0) {
      *out = dtypes[i].dtype;
      return 0;
    }
  for (size_t i = 0; i < DLPX__COUNT(aliases); i++)
    if (strcmp(name, aliases[i].alias) == 0) {
      *out = aliases[i].dtype;
      return 0;
    }
  return -1;
}

int dlpx_dtype_parse(const char *name, DLDataType *out) {
  if (!name || !out) return dlpx__fail(DLPX_EINVAL, "name or out is NULL");
  char buf[DLPX_DTYPE_NAME_MAX];
  size_t len = strlen(name);
  if (len >= sizeof buf) return dlpx__fail(DLPX_EDTYPE, "unknown dtype name (too long)");
  memcpy(buf, name, len + 1);
  DLDataType dt;
  if (parse_base(buf, &dt) == 0) {
    *out = dt;
    return 0;
  }
  /* "<base>x<lanes>" */
  char *x = strrchr(buf, 'x');
  if (x && x != buf) {
    unsigned long lanes = parse_count(x + 1, 65535);
    *x = '\0';
    if (lanes && parse_base(buf, &dt) == 0) {
      dt.lanes = (uint16_t)lanes;
      *out = dt;
      return 0;
    }
  }
  return dlpx__fail(DLPX_EDTYPE, "unknown dtype name '%s'", name);
}
