/*
 * dlpx/errors.h - error codes and the per-thread detail message.
 *
 * Functions of the API return 0 on success or a negative DLPX_E* code, and
 * dlpx_last_error() says in words what went wrong on the calling thread.
 */
#ifndef DLPX_ERRORS_H
#define DLPX_ERRORS_H

#include <dlpx/common.h>

DLPX_BEGIN_DECLS

/* The one list of error codes.  Each entry is
 *   X(name, value, message, exception, dlpack_exception)
 * where |exception| is the Python exception the Python layer raises for the
 * code from a general call and |dlpack_exception| the one it raises from a
 * DLPack protocol call (from_dlpack, __dlpack__), where the array API wants
 * BufferError for data that cannot be exchanged.  The enum, the names, the
 * messages, dlpx_error_table() and the Python mapping all come from it.
 * Codes lie in [-1099, -1000]; new ones are only ever appended. */
#define DLPX_ERROR_MAP(X)                                                                      \
  X(EINVAL, -1001, "invalid argument", ValueError, ValueError)                                 \
  X(ENOMEM, -1002, "out of memory", MemoryError, MemoryError)                                  \
  X(EOVERFLOW, -1003, "size or offset overflows 64 bits", ValueError, BufferError)             \
  X(EDTYPE, -1004, "unknown or unsupported data type", TypeError, BufferError)                 \
  X(ESHAPE, -1005, "bad shape or number of dimensions", ValueError, BufferError)               \
  X(EINDEX, -1006, "index or axis out of range", IndexError, IndexError)                       \
  X(EDEVICE, -1007, "unsupported or unknown device", ValueError, BufferError)                  \
  X(EVERSION, -1008, "unsupported DLPack version", BufferError, BufferError)                   \
  X(EREADONLY, -1009, "data is read-only", ValueError, BufferError)                            \
  X(ELAYOUT, -1010, "memory layout does not allow this without a copy", ValueError,            \
    BufferError)                                                                               \
  X(EBOUNDS, -1011, "view reaches outside its storage", ValueError, BufferError)               \
  X(ENOTSUP, -1012, "operation not supported", ValueError, BufferError)                        \
  X(EPYTHON, -1013, "Python bridge not available", RuntimeError, RuntimeError)                 \
  X(ESTATE, -1014, "object is in the wrong state", RuntimeError, RuntimeError)                 \
  X(EIO, -1015, "input/output error", OSError, OSError)                                        \
  X(EFORMAT, -1016, "malformed file or header", ValueError, ValueError)                        \
  X(ECHECKSUM, -1017, "checksum mismatch: the data is corrupt", ValueError, ValueError)        \
  X(EOVERLAP, -1018, "tensors share memory", ValueError, ValueError)                           \
  X(ENOENT, -1019, "no such file, object or shared segment, or its producer is gone",          \
    FileNotFoundError, FileNotFoundError)                                                      \
  X(EACCES, -1020, "permission denied (wrong or missing credentials)", PermissionError,         \
    PermissionError)                                                                           \
  X(ETIMEDOUT, -1021, "timed out", TimeoutError, TimeoutError)                                \
  X(ECUDA, -1022, "CUDA driver call failed", RuntimeError, BufferError)

#define DLPX__ERROR_ENUM(name, value, message, exception, dlpack_exception) DLPX_##name = value,

/* Error codes: DLPX_OK and the entries of DLPX_ERROR_MAP. */
typedef enum { DLPX_OK = 0, DLPX_ERROR_MAP(DLPX__ERROR_ENUM) } dlpx_error;

/* One entry of the error list, as dlpx_error_table() gives it.  All strings
 * are static. */
typedef struct {
  int code;                     /* DLPX_E* */
  const char *name;             /* "DLPX_EINVAL" */
  const char *message;          /* what dlpx_strerror returns */
  const char *exception;        /* Python exception name for general calls */
  const char *dlpack_exception; /* Python exception name for DLPack calls */
} dlpx_error_info;

/* The error list (DLPX_ERROR_MAP, without DLPX_OK), in code order; writes
 * the number of entries to *count when count is not NULL.  Borrowed:
 * static. */
DLPX_API const dlpx_error_info *dlpx_error_table(size_t *count);

/* Returns a static, human-readable description of |code| ("invalid
 * argument"), "success" for DLPX_OK, or "unknown error" for a value that is
 * no dlpx_error.  Borrowed: the string is static. */
DLPX_API const char *dlpx_strerror(int code);

/* Returns the name of |code| as a static string ("DLPX_EINVAL"), or
 * "DLPX_E?" for an unknown value.  Borrowed: the string is static. */
DLPX_API const char *dlpx_error_name(int code);

/* Returns the detail message of the last failure on the calling thread
 * ("shape[2] is negative: -3"), or "" if no call on this thread has failed.
 * Borrowed: valid until the next dlpx call on this thread. */
DLPX_API const char *dlpx_last_error(void);

/* Returns the code of the last failure on the calling thread (DLPX_OK if
 * none).  Successful calls do not reset it. */
DLPX_API int dlpx_last_error_code(void);

DLPX_END_DECLS

#endif /* DLPX_ERRORS_H */
