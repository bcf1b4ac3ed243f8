/* decl/dtype.h - include/dlpx/dtype.h for cffi (see decl/README). */

#define DLPX_DTYPE_NAME_MAX 32

typedef struct {
  DLDataType dtype;
  const char *name;
} dlpx_dtype_info;

const dlpx_dtype_info *dlpx_dtype_table(size_t *count);
int dlpx_dtype_check(DLDataType dtype);
int dlpx_dtype_parse(const char *name, DLDataType *out);
int dlpx_dtype_format(DLDataType dtype, char *buf, size_t size);
int64_t dlpx_dtype_bits(DLDataType dtype);
int dlpx_dtype_nbytes(DLDataType dtype, int64_t count, int64_t *out);
