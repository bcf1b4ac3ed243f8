/* dtype.c - DLPack data types: validation, names, sizes. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Names of the types whose code fixes the width (bits given). */
typedef struct {
  uint8_t code;
  uint8_t bits;
  const char *name;
} fixed_type;

static const fixed_type fixed_types[] = {
    {kDLBfloat, 16, "bfloat16"},
    {kDLBool, 8, "bool"},
    {kDLFloat8_e3m4, 8, "float8_e3m4"},
    {kDLFloat8_e4m3, 8, "float8_e4m3"},
    {kDLFloat8_e4m3b11fnuz, 8, "float8_e4m3b11fnuz"},
    {kDLFloat8_e4m3fn, 8, "float8_e4m3fn"},
    {kDLFloat8_e4m3fnuz, 8, "float8_e4m3fnuz"},
    {kDLFloat8_e5m2, 8, "float8_e5m2"},
    {kDLFloat8_e5m2fnuz, 8, "float8_e5m2fnuz"},
    {kDLFloat8_e8m0fnu, 8, "float8_e8m0fnu"},
    {kDLFloat6_e2m3fn, 6, "float6_e2m3fn"},
    {kDLFloat6_e3m2fn, 6, "float6_e3m2fn"},
    {kDLFloat4_e2m1fn, 4, "float4_e2m1fn"},
};

/* Families with several widths: the name is prefix + bits. */
typedef struct {
  uint8_t code;
  const char *prefix;
  uint8_t widths[4];
} family_type;

static const family_type families[] = {
    {kDLInt, "int", {8, 16, 32, 64}},
    {kDLUInt, "uint", {8, 16, 32, 64}},
    {kDLFloat, "float", {16, 32, 64, 0}},
    {kDLComplex, "complex", {32, 64, 128, 0}},
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

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

int dlpx_dtype_check(DLDataType dtype) {
  if (dtype.lanes == 0) return dlpx__fail(DLPX_EDTYPE, "dtype lanes is 0");
  for (size_t i = 0; i < COUNT(fixed_types); i++) {
    if (fixed_types[i].code != dtype.code) continue;
    if (fixed_types[i].bits != dtype.bits)
      return dlpx__fail(DLPX_EDTYPE, "dtype %s must have %u bits, not %u", fixed_types[i].name,
                        (unsigned)fixed_types[i].bits, (unsigned)dtype.bits);
    return 0;
  }
  for (size_t i = 0; i < COUNT(families); i++) {
    if (families[i].code != dtype.code) continue;
    for (size_t j = 0; j < 4; j++)
      if (families[i].widths[j] != 0 && families[i].widths[j] == dtype.bits) return 0;
    return dlpx__fail(DLPX_EDTYPE, "dtype code %u (%s) has no %u-bit type", (unsigned)dtype.code,
                      families[i].prefix, (unsigned)dtype.bits);
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
  char base[DLPX_DTYPE_NAME_MAX];
  base[0] = '\0';
  for (size_t i = 0; i < COUNT(fixed_types); i++)
    if (fixed_types[i].code == dtype.code) snprintf(base, sizeof base, "%s", fixed_types[i].name);
  for (size_t i = 0; i < COUNT(families); i++)
    if (families[i].code == dtype.code)
      snprintf(base, sizeof base, "%s%u", families[i].prefix, (unsigned)dtype.bits);
  int n = dtype.lanes == 1 ? snprintf(buf, size, "%s", base)
                           : snprintf(buf, size, "%sx%u", base, (unsigned)dtype.lanes);
  if (n < 0 || (size_t)n >= size) {
    buf[0] = '\0';
    return dlpx__fail(DLPX_EINVAL, "buffer of %zu bytes is too small for dtype name", size);
  }
  return 0;
}

/* Parses a decimal in [1, max]; returns 0 on failure. */
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
  for (size_t i = 0; i < COUNT(fixed_types); i++)
    if (strcmp(name, fixed_types[i].name) == 0) {
      *out = (DLDataType){fixed_types[i].code, fixed_types[i].bits, 1};
      return 0;
    }
  for (size_t i = 0; i < COUNT(aliases); i++)
    if (strcmp(name, aliases[i].alias) == 0) {
      *out = aliases[i].dtype;
      return 0;
    }
  /* Longest prefix first: "uint" before "int". */
  static const int order[] = {1, 0, 3, 2};
  for (size_t k = 0; k < 4; k++) {
    const family_type *f = &families[order[k]];
    size_t n = strlen(f->prefix);
    if (strncmp(name, f->prefix, n) != 0) continue;
    unsigned long bits = parse_count(name + n, 255);
    for (size_t j = 0; bits && j < 4; j++)
      if (f->widths[j] == bits) {
        *out = (DLDataType){f->code, (uint8_t)bits, 1};
        return 0;
      }
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

/* ---- devices ---- */

bool dlpx__device_type_known(int32_t type) {
  return (type >= kDLCPU && type <= kDLOpenCL) || (type >= kDLVulkan && type <= kDLTrn);
}

bool dlpx__device_addressable(int32_t type) {
  switch (type) {
    case kDLCPU:
    case kDLCUDA:
    case kDLCUDAHost:
    case kDLCUDAManaged:
    case kDLROCM:
    case kDLROCMHost:
      return true;
    default:
      return false;
  }
}

int dlpx__device_check(DLDevice device) {
  if (!dlpx__device_type_known((int32_t)device.device_type))
    return dlpx__fail(DLPX_EDEVICE, "unknown device type %d", (int)device.device_type);
  if (device.device_id < 0)
    return dlpx__fail(DLPX_EDEVICE, "negative device id %d", (int)device.device_id);
  return 0;
}
