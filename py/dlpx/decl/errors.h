/* decl/errors.h - include/dlpx/errors.h for cffi (see decl/README). */

typedef struct {
  int code;
  const char *name;
  const char *message;
  const char *exception;
  const char *dlpack_exception;
} dlpx_error_info;

const dlpx_error_info *dlpx_error_table(size_t *count);
const char *dlpx_strerror(int code);
const char *dlpx_error_name(int code);
const char *dlpx_last_error(void);
int dlpx_last_error_code(void);
