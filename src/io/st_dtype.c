/* st_dtype.c - the safetensors dtype names: the one table mapping them to
 * DLPack dtypes, in the reference writer's order. */
#include "config.h"

#include <string.h>

#include "io.h"

/* In the order of the reference package's dtype enum: its writer sorts
 * tensors by this rank, highest first, then by name. */
static const struct {
  const char *name;
  DLDataType dtype;
} names[] = {
    {"BOOL", {kDLBool, 8, 1}},
    {"F4", {kDLFloat4_e2m1fn, 4, 1}},
    {"F6_E2M3", {kDLFloat6_e2m3fn, 6, 1}},
    {"F6_E3M2", {kDLFloat6_e3m2fn, 6, 1}},
    {"U8", {kDLUInt, 8, 1}},
    {"I8", {kDLInt, 8, 1}},
    {"F8_E5M2", {kDLFloat8_e5m2, 8, 1}},
    {"F8_E4M3", {kDLFloat8_e4m3fn, 8, 1}},
    {"F8_E8M0", {kDLFloat8_e8m0fnu, 8, 1}},
    {"F8_E4M3FNUZ", {kDLFloat8_e4m3fnuz, 8, 1}},
    {"F8_E5M2FNUZ", {kDLFloat8_e5m2fnuz, 8, 1}},
    {"I16", {kDLInt, 16, 1}},
    {"U16", {kDLUInt, 16, 1}},
    {"F16", {kDLFloat, 16, 1}},
    {"BF16", {kDLBfloat, 16, 1}},
    {"I32", {kDLInt, 32, 1}},
    {"U32", {kDLUInt, 32, 1}},
    {"F32", {kDLFloat, 32, 1}},
    {"C64", {kDLComplex, 64, 1}},
    {"F64", {kDLFloat, 64, 1}},
    {"I64", {kDLInt, 64, 1}},
    {"U64", {kDLUInt, 64, 1}},
};

const char *dlpx_st_dtype_name(DLDataType dtype) {
  for (size_t i = 0; i < DLPX__COUNT(names); i++)
    if (dlpx__dtype_eq(names[i].dtype, dtype)) return names[i].name;
  return NULL;
}

int dlpx_st_dtype_parse(const char *name, DLDataType *out) {
  if (!name || !out) return dlpx__fail(DLPX_EINVAL, "name or out is NULL");
  for (size_t i = 0; i < DLPX__COUNT(names); i++)
    if (strcmp(names[i].name, name) == 0) {
      *out = names[i].dtype;
      return 0;
    }
  return dlpx__fail(DLPX_EDTYPE, "unknown safetensors dtype \"%.40s\"", name);
}

int dlpx__st_dtype_rank(DLDataType dtype) {
  for (size_t i = 0; i < DLPX__COUNT(names); i++)
    if (dlpx__dtype_eq(names[i].dtype, dtype)) return (int)i;
  return -1;
}

int dlpx__st_nbytes(const char *name, DLDataType dtype, int32_t ndim, const int64_t *shape,
                    uint64_t *out) {
  int64_t numel, bits;
  if (dlpx__numel(ndim, shape, &numel))
    return dlpx__fail(DLPX_EOVERFLOW, "the shape of tensor \"%.200s\" overflows", name);
  if (dlpx__mul_overflow(numel, (int64_t)dtype.bits, &bits))
    return dlpx__fail(DLPX_EOVERFLOW, "the size of tensor \"%.200s\" overflows", name);
  if (bits % 8)
    return dlpx__fail(DLPX_EFORMAT,
                      "tensor \"%.200s\" of %lld %u-bit elements is not a whole number of bytes",
                      name, (long long)numel, (unsigned)dtype.bits);
  *out = (uint64_t)(bits / 8);
  return 0;
}
