/*
 * dlpx/dtype.h - DLPack data types: the table of known types, validation,
 * names and sizes.
 */
#ifndef DLPX_DTYPE_H
#define DLPX_DTYPE_H

#include <dlpx/common.h>

DLPX_BEGIN_DECLS

/* Longest name dlpx_dtype_format writes, with its terminating NUL. */
#define DLPX_DTYPE_NAME_MAX 32

/* One known element type, as dlpx_dtype_table() gives it. */
typedef struct {
  DLDataType dtype; /* lanes is 1 */
  const char *name; /* canonical name, "float32"; static */
} dlpx_dtype_info;

/* The element types dlpx knows, each once with lanes 1 (27 today: bool, the
 * ints and uints, the floats, bfloat16, the complex types, the float8,
 * float6 and float4 kinds), in DLPack code order then by width.  Writes the
 * number of entries to *count when count is not NULL.  Borrowed: static. */
DLPX_API const dlpx_dtype_info *dlpx_dtype_table(size_t *count);

/* Checks that |dtype| is a type dlpx knows: a DLDataTypeCode other than
 * kDLOpaqueHandle with a bit width defined for it (int/uint: 8, 16, 32, 64;
 * float: 16, 32, 64; bfloat: 16; complex: 32, 64, 128; bool: 8; float8
 * codes: 8; float6 codes: 6; float4: 4) and lanes >= 1.
 * Returns 0, or DLPX_EDTYPE (with the reason in dlpx_last_error). */
DLPX_API int dlpx_dtype_check(DLDataType dtype);

/* Parses a dtype name: a canonical name of dlpx_dtype_table() or one of the
 * aliases "half", "float", "double", "cfloat", "cdouble".  A suffix "xN"
 * (N in [1, 65535], no leading zero) gives N lanes ("float32x4").  The whole
 * string must match.  Writes *out.
 * Returns 0, DLPX_EINVAL if |name| or |out| is NULL, DLPX_EDTYPE if the
 * name is not known. */
DLPX_API int dlpx_dtype_parse(const char *name, DLDataType *out);

/* Writes the canonical name of |dtype| ("float32", "float32x4") into |buf|
 * of |size| bytes, NUL-terminated.  DLPX_DTYPE_NAME_MAX bytes always do.
 * Returns 0, DLPX_EDTYPE for an unknown dtype, DLPX_EINVAL if |buf| is NULL
 * or |size| too small (then buf holds "" if size > 0). */
DLPX_API int dlpx_dtype_format(DLDataType dtype, char *buf, size_t size);

/* Bits one element takes in a packed buffer: bits * lanes. */
DLPX_API int64_t dlpx_dtype_bits(DLDataType dtype);

/* Bytes needed to store |count| packed elements of |dtype|:
 * ceil(count * bits * lanes / 8).  Writes *out.
 * Returns 0, DLPX_EINVAL for count < 0 or out NULL, DLPX_EDTYPE for an
 * unknown dtype, DLPX_EOVERFLOW if the result exceeds INT64_MAX. */
DLPX_API int dlpx_dtype_nbytes(DLDataType dtype, int64_t count, int64_t *out);

DLPX_END_DECLS

#endif /* DLPX_DTYPE_H */
