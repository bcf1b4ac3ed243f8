/*
 * dlpx/dlpx.h - the dlpx C API.
 *
 * dlpx describes tensors with DLPack, owns them with reference counts, and
 * exchanges them with any DLPack producer or consumer without copying.
 *
 * Conventions
 *  - Functions return int: 0 on success or a negative DLPX_E* code.  Results
 *    come back through out-parameters, which are left untouched on failure
 *    unless stated otherwise.  dlpx_last_error() gives a message that says
 *    what exactly went wrong, for the calling thread.
 *  - Each function states its ownership rule: a *new* object (the caller
 *    frees it), a *borrowed* pointer (valid while the argument lives), or
 *    *takes ownership* of an argument.
 *  - Destructors (dlpx_tensor_free, dlpx_storage_release) accept NULL.
 *  - A dlpx_tensor is immutable once made: operations that change the view
 *    return a new tensor.  Tensors may be read, exported and freed from any
 *    thread; one handle must not be freed twice.
 *  - The library never aborts, exits or prints.
 */
#ifndef DLPX_DLPX_H
#define DLPX_DLPX_H

#include <stddef.h>
#include <stdint.h>

#include <dlpx/dlpack.h>

#if defined(DLPX_BUILDING) && defined(__GNUC__)
#define DLPX_API __attribute__((visibility("default")))
#else
#define DLPX_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Version                                                                   */
/* ------------------------------------------------------------------------ */

#define DLPX_VERSION_MAJOR 0
#define DLPX_VERSION_MINOR 1
#define DLPX_VERSION_PATCH 0
#define DLPX_VERSION_STRING "0.1.0"
/* major * 10000 + minor * 100 + patch */
#define DLPX_VERSION_NUMBER \
  (DLPX_VERSION_MAJOR * 10000 + DLPX_VERSION_MINOR * 100 + DLPX_VERSION_PATCH)

/* Returns the version of the loaded library as DLPX_VERSION_NUMBER encodes
 * it, so a program can check it loaded the library it was built against. */
DLPX_API int dlpx_version_number(void);

/* Returns the version string of the loaded library, e.g. "0.1.0".  The
 * string is static (borrowed, never freed). */
DLPX_API const char *dlpx_version_string(void);

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

/* Error codes.  All are negative and lie in [-1099, -1000]. */
typedef enum {
  DLPX_OK = 0,
  DLPX_EINVAL = -1001,    /* an argument is invalid (NULL, out of its range) */
  DLPX_ENOMEM = -1002,    /* an allocation failed */
  DLPX_EOVERFLOW = -1003, /* a size or offset does not fit in 64 bits */
  DLPX_EDTYPE = -1004,    /* unknown or unsupported data type */
  DLPX_ESHAPE = -1005,    /* bad shape, ndim or mismatch between shapes */
  DLPX_EINDEX = -1006,    /* index or axis out of range */
  DLPX_EDEVICE = -1007,   /* unknown device, or the operation needs another one */
  DLPX_EVERSION = -1008,  /* unsupported DLPack major version */
  DLPX_EREADONLY = -1009, /* write access to read-only data */
  DLPX_ELAYOUT = -1010,   /* strides do not allow this without a copy */
  DLPX_EBOUNDS = -1011,   /* a view reaches outside its storage */
  DLPX_ENOTSUP = -1012,   /* valid but not supported by this build or call */
  DLPX_EPYTHON = -1013,   /* the Python bridge is not registered, or a Python call failed */
  DLPX_ESTATE = -1014     /* the object is not in a state that allows this */
} dlpx_error;

/* Returns a static, human-readable description of |code| ("invalid
 * argument"), or "unknown error" for a value that is no dlpx_error.
 * Borrowed: the string is static. */
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

/* ------------------------------------------------------------------------ */
/* Limits                                                                    */
/* ------------------------------------------------------------------------ */

/* The largest ndim dlpx accepts. */
#define DLPX_MAX_NDIM 128
/* The default (and smallest) alignment of owned allocations, in bytes. */
#define DLPX_DEFAULT_ALIGNMENT 64

/* ------------------------------------------------------------------------ */
/* Data types                                                                */
/* ------------------------------------------------------------------------ */

/* Longest name dlpx_dtype_format writes, with its terminating NUL. */
#define DLPX_DTYPE_NAME_MAX 32

/* Checks that |dtype| is a type dlpx knows: a DLDataTypeCode other than
 * kDLOpaqueHandle with a bit width defined for it (int/uint: 8, 16, 32, 64;
 * float: 16, 32, 64; bfloat: 16; complex: 32, 64, 128; bool: 8; float8
 * codes: 8; float6 codes: 6; float4: 4) and lanes >= 1.
 * Returns 0, or DLPX_EDTYPE (with the reason in dlpx_last_error). */
DLPX_API int dlpx_dtype_check(DLDataType dtype);

/* Parses a dtype name: "bool", "int8".."int64", "uint8".."uint64",
 * "float16", "float32", "float64", "bfloat16", "complex32", "complex64",
 * "complex128", "float8_e3m4", "float8_e4m3", "float8_e4m3b11fnuz",
 * "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
 * "float8_e8m0fnu", "float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn", and
 * the aliases "half", "float", "double", "cfloat", "cdouble".  A suffix
 * "xN" gives N lanes ("float32x4").  Writes *out.
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

/* ------------------------------------------------------------------------ */
/* Storage: a reference-counted block of memory with one release action      */
/* ------------------------------------------------------------------------ */

typedef struct dlpx_storage dlpx_storage;

/* A release callback for borrowed memory: called exactly once, from
 * whatever thread drops the last reference, with the data pointer and the
 * context given to dlpx_storage_wrap. */
typedef void (*dlpx_release_fn)(void *data, void *ctx);

/* What a storage does when its last reference goes. */
typedef enum {
  DLPX_STORAGE_OWNED = 1,       /* dlpx allocated it and frees it */
  DLPX_STORAGE_BORROWED = 2,    /* calls the release callback */
  DLPX_STORAGE_FOREIGN = 3,     /* calls a versioned managed tensor's deleter */
  DLPX_STORAGE_FOREIGN_LEGACY = 4 /* calls a legacy managed tensor's deleter */
} dlpx_storage_kind;

/* Allocates |nbytes| of host memory aligned to |alignment| (a power of two;
 * 0 means DLPX_DEFAULT_ALIGNMENT, smaller values are raised to it), filled
 * with zeros when |zero| is non-zero.  The block is never NULL, even for
 * nbytes == 0.  New: *out holds one reference.
 * Returns 0, DLPX_EINVAL (out NULL, alignment not a power of two),
 * DLPX_EOVERFLOW (nbytes too large), DLPX_ENOMEM. */
DLPX_API int dlpx_storage_alloc(size_t nbytes, size_t alignment, int zero,
                                dlpx_storage **out);

/* Wraps |nbytes| of memory at |data| on |device|, which dlpx does not own:
 * |release| (may be NULL) is called as release(data, ctx) exactly once when
 * the last reference goes.  New: *out holds one reference.  On failure
 * nothing is taken: release is not called and the caller still owns data.
 * Returns 0, DLPX_EINVAL (out NULL; data NULL with nbytes > 0),
 * DLPX_EDEVICE (unknown device type, negative id), DLPX_ENOMEM. */
DLPX_API int dlpx_storage_wrap(void *data, size_t nbytes, DLDevice device,
                               dlpx_release_fn release, void *ctx,
                               dlpx_storage **out);

/* Adds a reference to |storage| (NULL: nothing).  Thread-safe. */
DLPX_API void dlpx_storage_retain(dlpx_storage *storage);

/* Drops a reference; the last one runs the release action and frees the
 * storage.  Accepts NULL.  Thread-safe. */
DLPX_API void dlpx_storage_release(dlpx_storage *storage);

/* The base address (borrowed), size in bytes, device, kind, and current
 * reference count of a storage.  |storage| must not be NULL. */
DLPX_API void *dlpx_storage_data(const dlpx_storage *storage);
DLPX_API size_t dlpx_storage_nbytes(const dlpx_storage *storage);
DLPX_API DLDevice dlpx_storage_device(const dlpx_storage *storage);
DLPX_API int dlpx_storage_kind_of(const dlpx_storage *storage);
DLPX_API int64_t dlpx_storage_refcount(const dlpx_storage *storage);

/* ------------------------------------------------------------------------ */
/* Tensors: views over a storage                                             */
/* ------------------------------------------------------------------------ */

typedef struct dlpx_tensor dlpx_tensor;

/* Tensor flags, given at creation and reported by dlpx_tensor_flags. */
#define DLPX_TENSOR_READONLY 1u       /* writes through this view are refused */
#define DLPX_TENSOR_SUBBYTE_PADDED 2u /* sub-byte elements take one byte each */

/* Creates an uninitialized (dlpx_tensor_empty; packed sub-byte dtypes are
 * zero-filled anyway, as their bytes are shared by elements) or zero-filled
 * (dlpx_tensor_zeros) C-contiguous host tensor of |dtype| (lanes must be 1)
 * and |shape| (ndim entries, each >= 0; may be NULL when ndim == 0) in a new
 * owned storage.  New: free with dlpx_tensor_free.
 * Returns 0, DLPX_EINVAL (out NULL, shape NULL with ndim > 0),
 * DLPX_ESHAPE (ndim < 0 or > DLPX_MAX_NDIM, a negative extent),
 * DLPX_EDTYPE, DLPX_EOVERFLOW (size beyond INT64_MAX bytes), DLPX_ENOMEM. */
DLPX_API int dlpx_tensor_empty(DLDataType dtype, int32_t ndim, const int64_t *shape,
                               dlpx_tensor **out);
DLPX_API int dlpx_tensor_zeros(DLDataType dtype, int32_t ndim, const int64_t *shape,
                               dlpx_tensor **out);

/* Creates a C-contiguous host tensor like dlpx_tensor_empty (|zero| == 0) or
 * dlpx_tensor_zeros, with tensor |flags| (DLPX_TENSOR_*): READONLY makes the
 * result read-only (useful only with zero), SUBBYTE_PADDED stores a sub-byte
 * dtype one element per byte (ignored for dtypes of 8 bits or more).  New.
 * Returns the errors of dlpx_tensor_empty and DLPX_EINVAL for unknown flags. */
DLPX_API int dlpx_tensor_new(DLDataType dtype, int32_t ndim, const int64_t *shape,
                             uint32_t flags, int zero, dlpx_tensor **out);

/* Creates a view over |storage|: element 0 at byte |byte_offset| of the
 * storage, |strides| in elements (NULL: C-contiguous; negative and zero
 * strides allowed), |flags| a mask of DLPX_TENSOR_*.  Every byte the view
 * touches must lie inside the storage.  The tensor takes its own reference
 * to |storage|; the caller keeps its own.  New.
 * Returns 0, DLPX_EINVAL (storage/out NULL, shape NULL with ndim > 0, unknown
 * flags), DLPX_ESHAPE, DLPX_EDTYPE, DLPX_EOVERFLOW, DLPX_EBOUNDS (the view
 * reaches outside the storage), DLPX_ELAYOUT (a sub-byte view whose elements
 * do not start on a byte), DLPX_ENOMEM. */
DLPX_API int dlpx_tensor_from_storage(dlpx_storage *storage, DLDataType dtype, int32_t ndim,
                                      const int64_t *shape, const int64_t *strides,
                                      int64_t byte_offset, uint32_t flags,
                                      dlpx_tensor **out);

/* Wraps external memory as a tensor: |data| is the address of element 0 on
 * |device|, |strides| as in dlpx_tensor_from_storage.  |release| (may be
 * NULL) is called as release(data, ctx) exactly once when the last view of
 * this memory goes.  On failure nothing is taken (release is not called).
 * New.  Returns the errors of dlpx_storage_wrap and
 * dlpx_tensor_from_storage; DLPX_EINVAL for data NULL with elements. */
DLPX_API int dlpx_tensor_wrap(void *data, DLDevice device, DLDataType dtype, int32_t ndim,
                              const int64_t *shape, const int64_t *strides, uint32_t flags,
                              dlpx_release_fn release, void *ctx, dlpx_tensor **out);

/* Frees a tensor handle and drops its storage reference.  Accepts NULL. */
DLPX_API void dlpx_tensor_free(dlpx_tensor *tensor);

/* A new handle on the same view (and storage).  New.
 * Returns 0, DLPX_EINVAL, DLPX_ENOMEM. */
DLPX_API int dlpx_tensor_clone(const dlpx_tensor *tensor, dlpx_tensor **out);

/* ---- queries (tensor must not be NULL) ---------------------------------- */

/* A DLTensor describing the view, owned by the tensor (borrowed: valid while
 * the tensor lives; do not modify).  Its data is the storage base and its
 * byte_offset the offset of element 0; strides are never NULL for ndim > 0. */
DLPX_API const DLTensor *dlpx_tensor_dltensor(const dlpx_tensor *tensor);
DLPX_API int32_t dlpx_tensor_ndim(const dlpx_tensor *tensor);
/* Borrowed arrays of ndim entries (NULL when ndim == 0). */
DLPX_API const int64_t *dlpx_tensor_shape(const dlpx_tensor *tensor);
DLPX_API const int64_t *dlpx_tensor_strides(const dlpx_tensor *tensor);
DLPX_API DLDataType dlpx_tensor_dtype(const dlpx_tensor *tensor);
DLPX_API DLDevice dlpx_tensor_device(const dlpx_tensor *tensor);
/* Byte offset of element 0 from the storage base. */
DLPX_API int64_t dlpx_tensor_byte_offset(const dlpx_tensor *tensor);
/* Address of element 0 (storage base + byte offset).  For devices whose
 * pointers are opaque handles (OpenCL, Vulkan, Metal, ...) the sum is not an
 * address: use dlpx_tensor_dltensor instead.  Borrowed. */
DLPX_API void *dlpx_tensor_data(const dlpx_tensor *tensor);
/* The storage (borrowed; dlpx_storage_retain it to keep it). */
DLPX_API dlpx_storage *dlpx_tensor_storage(const dlpx_tensor *tensor);
/* DLPX_TENSOR_* bits. */
DLPX_API uint32_t dlpx_tensor_flags(const dlpx_tensor *tensor);
DLPX_API int dlpx_tensor_is_readonly(const dlpx_tensor *tensor);
/* Number of elements (product of the shape; 1 for ndim == 0). */
DLPX_API int64_t dlpx_tensor_numel(const dlpx_tensor *tensor);
/* Bytes of the elements if stored contiguously. */
DLPX_API int64_t dlpx_tensor_nbytes(const dlpx_tensor *tensor);
/* 1 if the layout is C- (row-major) or F- (column-major) contiguous; extents
 * of size 1 and tensors with no elements ignore strides, as in NumPy. */
DLPX_API int dlpx_tensor_is_c_contiguous(const dlpx_tensor *tensor);
DLPX_API int dlpx_tensor_is_f_contiguous(const dlpx_tensor *tensor);
/* The byte range the view touches, relative to element 0: [*lo, *hi).
 * Both 0 for a tensor without elements.  Either pointer may be NULL. */
DLPX_API void dlpx_tensor_extent(const dlpx_tensor *tensor, int64_t *lo, int64_t *hi);

/* ---- views -------------------------------------------------------------- */
/* Each returns a new tensor on the same storage, with the same flags, and
 * leaves the argument unchanged. */

/* Sentinel for an omitted slice bound (Python's None). */
#define DLPX_NONE INT64_MIN

/* Slices dimension |dim| (negative counts from the end) with Python
 * semantics: start/stop may be negative or DLPX_NONE and are clamped, step
 * is non-zero and may be negative (DLPX_NONE means 1).  A result without
 * elements keeps the offset of |tensor|, so it never points past its storage.
 * Returns 0, DLPX_EINVAL (NULL, step 0), DLPX_EINDEX (dim out
 * of range), DLPX_ELAYOUT (sub-byte element not on a byte), DLPX_ENOMEM. */
DLPX_API int dlpx_tensor_slice(const dlpx_tensor *tensor, int32_t dim, int64_t start,
                               int64_t stop, int64_t step, dlpx_tensor **out);

/* Selects index |index| (negative counts from the end) of dimension |dim|,
 * removing that dimension.  Returns 0, DLPX_EINVAL, DLPX_EINDEX (dim or
 * index out of range), DLPX_ELAYOUT, DLPX_ENOMEM. */
DLPX_API int dlpx_tensor_select(const dlpx_tensor *tensor, int32_t dim, int64_t index,
                                dlpx_tensor **out);

/* One item of a NumPy basic index. */
typedef enum {
  DLPX_INDEX_INT = 0,     /* start: the index; removes the dimension */
  DLPX_INDEX_SLICE = 1,   /* start, stop, step as in dlpx_tensor_slice */
  DLPX_INDEX_NEWAXIS = 2, /* inserts a dimension of size 1 (None) */
  DLPX_INDEX_ELLIPSIS = 3 /* as many full slices as needed (at most one) */
} dlpx_index_kind;

typedef struct {
  int32_t kind; /* a dlpx_index_kind */
  int64_t start;
  int64_t stop;
  int64_t step;
} dlpx_index;

/* Applies |n| index items the way NumPy applies a basic index tuple:
 * missing trailing items are full slices.
 * Returns 0, DLPX_EINVAL (bad kind, step 0), DLPX_EINDEX (two ellipses, too
 * many indices, an integer out of range), DLPX_ESHAPE (result ndim beyond
 * DLPX_MAX_NDIM), DLPX_ELAYOUT, DLPX_ENOMEM. */
DLPX_API int dlpx_tensor_index(const dlpx_tensor *tensor, int32_t n, const dlpx_index *items,
                               dlpx_tensor **out);

/* Reorders dimensions: result dimension i is input dimension axes[i]
 * (negative counts from the end); |axes| is a permutation of ndim entries.
 * Returns 0, DLPX_EINVAL (NULL, n != ndim), DLPX_EINDEX (out of range or
 * repeated axis), DLPX_ENOMEM. */
DLPX_API int dlpx_tensor_permute(const dlpx_tensor *tensor, int32_t n, const int32_t *axes,
                                 dlpx_tensor **out);

/* Reverses the order of the dimensions (NumPy's .T).
 * Returns 0, DLPX_EINVAL, DLPX_ENOMEM. */
DLPX_API int dlpx_tensor_transpose(const dlpx_tensor *tensor, dlpx_tensor **out);

/* Reshapes to |shape| (one entry may be -1, inferred) as a view.  Fails with
 * DLPX_ELAYOUT when the strides cannot express the new shape without a copy
 * (copy first with dlpx_tensor_contiguous).
 * Returns 0, DLPX_EINVAL, DLPX_ESHAPE (element count differs, two -1s, a
 * negative extent, bad ndim), DLPX_ELAYOUT, DLPX_ENOMEM. */
DLPX_API int dlpx_tensor_reshape(const dlpx_tensor *tensor, int32_t ndim, const int64_t *shape,
                                 dlpx_tensor **out);

/* Removes dimension |dim| if its extent is 1 (DLPX_ESHAPE otherwise); with
 * dim == DLPX_ALL_DIMS removes every dimension of extent 1.  On a 0-d tensor
 * dim 0 and -1 are accepted and change nothing (as in NumPy and PyTorch).
 * Returns 0, DLPX_EINVAL, DLPX_EINDEX, DLPX_ESHAPE, DLPX_ENOMEM. */
#define DLPX_ALL_DIMS INT32_MIN
DLPX_API int dlpx_tensor_squeeze(const dlpx_tensor *tensor, int32_t dim, dlpx_tensor **out);

/* Inserts a dimension of extent 1 at position |dim| (0..ndim; negative
 * counts from ndim + 1, as in PyTorch).
 * Returns 0, DLPX_EINVAL, DLPX_EINDEX, DLPX_ESHAPE (ndim at the limit),
 * DLPX_ENOMEM. */
DLPX_API int dlpx_tensor_unsqueeze(const dlpx_tensor *tensor, int32_t dim, dlpx_tensor **out);

/* Broadcasts to |shape| with NumPy's rules (new leading dimensions, extents
 * of 1 stretched with stride 0).  The result is read-only-in-spirit: writing
 * through it writes the same element many times; dlpx_tensor_copy_into
 * refuses it as a destination.
 * Returns 0, DLPX_EINVAL, DLPX_ESHAPE (not broadcastable), DLPX_ENOMEM. */
DLPX_API int dlpx_tensor_broadcast_to(const dlpx_tensor *tensor, int32_t ndim,
                                      const int64_t *shape, dlpx_tensor **out);

/* Reinterprets the elements as |dtype|, which must occupy the same number of
 * bits per element in storage (e.g. uint16 <-> bfloat16 <-> float16).  A
 * sub-byte dtype viewed over 8-bit elements becomes padded (one element per
 * byte, DLPX_TENSOR_SUBBYTE_PADDED), and a padded sub-byte tensor viewed as
 * an 8-bit dtype loses that flag.  A new view.
 * Returns 0, DLPX_EINVAL, DLPX_EDTYPE (unknown, lanes != 1, other width),
 * DLPX_ENOMEM. */
DLPX_API int dlpx_tensor_view_as(const dlpx_tensor *tensor, DLDataType dtype, dlpx_tensor **out);

/* Returns a new tensor with the same view and |flags| (DLPX_TENSOR_*) set in
 * addition to the tensor's own (use it to make a read-only view).
 * Returns 0, DLPX_EINVAL, DLPX_ENOMEM. */
DLPX_API int dlpx_tensor_with_flags(const dlpx_tensor *tensor, uint32_t flags, dlpx_tensor **out);

/* ---- copies --------------------------------------------------------------- */

/* Copies the elements of |src| into |dst|: host tensors of equal shape and
 * dtype, any strides (negative, and zero in src); a packed sub-byte tensor
 * may be copied to a padded one and back.  When the memory of src
 * and dst overlaps the copy behaves as if src were first copied to a
 * temporary buffer; when they are the same view nothing is done.
 * Neither argument changes ownership.
 * Returns 0, DLPX_EINVAL (NULL), DLPX_ESHAPE (shapes differ), DLPX_EDTYPE
 * (dtypes differ), DLPX_EDEVICE (not host memory), DLPX_EREADONLY (dst is
 * read-only), DLPX_ELAYOUT (dst writes one element twice: a zero stride or
 * overlapping strides), DLPX_ENOMEM (the temporary for an overlap). */
DLPX_API int dlpx_tensor_copy_into(const dlpx_tensor *dst, const dlpx_tensor *src);

/* Copies |tensor| into a new owned C-contiguous (|order| 'C') or
 * F-contiguous ('F') host tensor.  The copy is writable.  New.
 * Returns 0, DLPX_EINVAL (NULL, order not 'C'/'F'), DLPX_EDEVICE,
 * DLPX_ENOMEM. */
DLPX_API int dlpx_tensor_copy(const dlpx_tensor *tensor, char order, dlpx_tensor **out);

/* Returns |tensor| itself as a new handle if it is C-contiguous, else a
 * C-contiguous copy.  New.  Returns the errors of dlpx_tensor_copy. */
DLPX_API int dlpx_tensor_contiguous(const dlpx_tensor *tensor, dlpx_tensor **out);

/* ------------------------------------------------------------------------ */
/* DLPack export and import                                                  */
/* ------------------------------------------------------------------------ */

/* Export flags. */
#define DLPX_EXPORT_COPY 1u /* export a fresh private copy (sets IS_COPIED) */

/* Exports |tensor| as a new DLManagedTensorVersioned (version 1.3) that
 * holds its own reference to the storage, so a tensor can be exported any
 * number of times at once and each deleter frees only its part.  strides
 * are always non-NULL for ndim > 0; for devices with plain addresses
 * (CPU, CUDA, CUDA host/managed, ROCm, ROCm host) the byte offset is folded
 * into data and byte_offset is 0.  flags carries READ_ONLY, IS_COPIED and
 * IS_SUBBYTE_TYPE_PADDED.  New: the receiver calls (*out)->deleter(*out)
 * exactly once, from any thread.
 * Returns 0, DLPX_EINVAL (NULL, unknown flags), DLPX_EDEVICE (COPY of a
 * non-host tensor), DLPX_ENOMEM. */
DLPX_API int dlpx_tensor_export(const dlpx_tensor *tensor, uint32_t flags,
                                DLManagedTensorVersioned **out);

/* Exports |tensor| as a legacy DLManagedTensor for consumers older than
 * DLPack 1.0.  A legacy tensor cannot say it is read-only, so a read-only
 * tensor is refused (DLPX_EREADONLY) unless DLPX_EXPORT_COPY is given, which
 * exports a writable private copy; nor can it say its sub-byte elements are
 * padded, so padded tensors are always refused (DLPX_ENOTSUP).  New, as
 * dlpx_tensor_export.
 * Returns 0, DLPX_EINVAL, DLPX_EREADONLY, DLPX_ENOTSUP, DLPX_EDEVICE,
 * DLPX_ENOMEM. */
DLPX_API int dlpx_tensor_export_legacy(const dlpx_tensor *tensor, uint32_t flags,
                                       DLManagedTensor **out);

/* Import flags. */
#define DLPX_IMPORT_READONLY 1u /* make the tensor read-only whatever the flags say */
/* make legacy tensors read-only: they cannot say whether their data may be
 * written (JAX's are immutable); versioned tensors keep their own flag */
#define DLPX_IMPORT_LEGACY_READONLY 2u

/* Imports a versioned managed tensor from any producer.  Takes ownership of
 * |managed| in every case (except NULL): on success its deleter runs exactly
 * once, when the last view of the resulting tensor goes; on failure it has
 * run exactly once before the call returns.  Validates, in this order:
 * major version 1 (any minor); ndim in [0, DLPX_MAX_NDIM]; shape non-NULL
 * with ndim > 0 and no negative extent; dtype known with lanes 1; a known
 * device type and device_id >= 0; data non-NULL when there are elements;
 * byte size and byte extent within int64; byte_offset within int64.  NULL
 * strides mean C-contiguous; byte_offset is honoured; READ_ONLY and
 * IS_SUBBYTE_TYPE_PADDED flags are kept.  New.
 * Returns 0, DLPX_EINVAL (NULL pointers, NULL data with elements),
 * DLPX_EVERSION, DLPX_ESHAPE, DLPX_EDTYPE, DLPX_EDEVICE, DLPX_EOVERFLOW,
 * DLPX_ENOMEM. */
DLPX_API int dlpx_tensor_import(DLManagedTensorVersioned *managed, uint32_t flags,
                                dlpx_tensor **out);

/* Imports a legacy managed tensor; the same rules as dlpx_tensor_import
 * except the version check.  Takes ownership of |managed|. */
DLPX_API int dlpx_tensor_import_legacy(DLManagedTensor *managed, uint32_t flags,
                                       dlpx_tensor **out);

/* ------------------------------------------------------------------------ */
/* Counters for leak and ownership tests                                    */
/* ------------------------------------------------------------------------ */

/* Live objects and lifetime totals, counted with relaxed atomics. */
typedef struct {
  int64_t storages_live;          /* storages not yet released */
  int64_t tensors_live;           /* tensor handles not yet freed */
  int64_t exports_live;           /* exported managed tensors whose deleter has not run */
  int64_t foreign_deleters_run;   /* foreign deleters called (total) */
  int64_t borrowed_releases_run;  /* release callbacks called (total) */
  int64_t python_refs_leaked;     /* Python references dropped unreleased at shutdown */
} dlpx_stats;

/* Fills |out| with the current counters (NULL: nothing). */
DLPX_API void dlpx_stats_get(dlpx_stats *out);

/* ------------------------------------------------------------------------ */
/* Python bridge (no Python at build or link time)                           */
/* ------------------------------------------------------------------------ */

/* The CPython C-API functions and objects the bridge uses, registered once
 * by the Python layer (addresses from ctypes.pythonapi and id()).  PyObject*
 * is void* here.  |size| must be sizeof(dlpx_pyapi) of the caller's header,
 * so the struct can grow at its end.
 *
 * The first group is required by dlpx_py_register.  The second group is
 * needed by the functions marked "GIL held" below (they fail with
 * DLPX_EPYTHON when it is incomplete); the objects in it must stay alive for
 * the life of the process (the Python layer keeps a reference forever). */
typedef struct {
  size_t size;
  /* required */
  int (*PyGILState_Ensure)(void);          /* returns a PyGILState_STATE */
  void (*PyGILState_Release)(int state);
  int (*PyGILState_Check)(void);
  int (*Py_IsFinalizing)(void);            /* may be NULL */
  void (*PyErr_Fetch)(void **type, void **value, void **traceback);
  void (*PyErr_Restore)(void *type, void *value, void *traceback);
  int (*PyCapsule_IsValid)(void *capsule, const char *name);
  void *(*PyCapsule_GetPointer)(void *capsule, const char *name);
  void (*Py_IncRef)(void *obj);
  void (*Py_DecRef)(void *obj);
  /* for the GIL-held functions */
  void *(*PyCapsule_New)(void *pointer, const char *name, void (*destructor)(void *));
  int (*PyCapsule_SetName)(void *capsule, const char *name);
  void (*PyErr_SetString)(void *type, const char *message);
  void *(*PyErr_Occurred)(void);
  void *(*PyObject_GetAttr)(void *obj, void *name);
  int (*PyObject_SetAttr)(void *obj, void *name, void *value);
  void *(*PyLong_FromVoidPtr)(void *p);
  void *(*PyObject_CallObject)(void *callable, void *args); /* args NULL */
  void *exc_BufferError;
  void *exc_ValueError;
  void *exc_TypeError;
  void *exc_MemoryError;
  void *exc_IndexError;
  void *exc_RuntimeError;
  void *name_cap;        /* interned str "_cap": the owner capsule attribute */
  void *name_addr;       /* interned str "_addr": the handle address attribute */
  void *tensor_factory;  /* callable returning a new, unbound dlpx.Tensor */
  /* for the C methods of dlpx.Tensor (dlpx_py_method_defs) */
  ptrdiff_t (*PyTuple_Size)(void *tuple);
  void *(*PyTuple_GetItem)(void *tuple, ptrdiff_t index);
  ptrdiff_t (*PyLong_AsSsize_t)(void *obj); /* exact ints only, on every version */
  void (*PyErr_Clear)(void);
  int (*PyUnicode_CompareWithASCIIString)(void *str, const char *ascii);
  void *(*Py_BuildValue)(const char *format, ...);
  void *(*PyObject_CallFunctionObjArgs)(void *callable, ...);
  void *obj_None;
  void *name_stream;      /* interned keyword names of __dlpack__ */
  void *name_max_version;
  void *name_dl_device;
  void *name_copy;
  void *dlpack_fallback;  /* f(self, stream, max_version, dl_device, copy) for
                             the cases the C method hands to Python */
} dlpx_pyapi;

/* Registers the C-API functions (copied; later calls replace them).  Every
 * required function must be non-NULL.  Also clears the shutdown mark.
 * Returns 0, DLPX_EINVAL. */
DLPX_API int dlpx_py_register(const dlpx_pyapi *api);

/* Marks the interpreter as shutting down (call from an atexit handler):
 * from then on the bridge never calls into Python; references to Python
 * objects still held are leaked (counted in python_refs_leaked) instead of
 * released. */
DLPX_API void dlpx_py_shutdown(void);

/* 1 if dlpx_py_register has been called and dlpx_py_shutdown has not. */
DLPX_API int dlpx_py_active(void);

/* PyCapsule destructors for capsules named "dltensor_versioned" and
 * "dltensor" whose pointer is a managed tensor of the matching kind.  Called
 * by CPython with the GIL held when the capsule dies: if the capsule still
 * has its original name (nobody consumed it) the managed tensor's deleter is
 * called, with any pending Python exception saved and restored around it;
 * a consumed (renamed) capsule is left alone. */
DLPX_API void dlpx_py_capsule_destructor(void *capsule);
DLPX_API void dlpx_py_capsule_destructor_legacy(void *capsule);

/* A dlpx_release_fn for memory owned by a Python object: |ctx| is a
 * PyObject* whose reference the storage owns.  Callable from any thread,
 * with or without the GIL: it takes the GIL when this thread lacks it,
 * saves and restores a pending exception, and after dlpx_py_shutdown (or
 * while the interpreter finalizes on a thread without the GIL) leaks the
 * reference instead of touching Python. */
DLPX_API void dlpx_py_release_object(void *data, void *ctx);

/* ---- GIL held: call these only from Python through ctypes.PyDLL ---------- */
/* Each reports failure by returning -1 (or NULL) with a Python exception set:
 * BufferError for data DLPack cannot carry here (dtype, layout, device,
 * version, read-only), ValueError/TypeError for bad arguments, MemoryError,
 * IndexError; the message is the dlpx_last_error() text. */

/* The static capsule name strings dlpx uses (borrowed, static):
 * 0 "dltensor", 1 "dltensor_versioned", 2 "used_dltensor",
 * 3 "used_dltensor_versioned", 4 "dlpack_exchange_api", 5 "dlpx.tensor";
 * NULL for other values. */
DLPX_API const char *dlpx_py_capsule_name(int which);

/* Makes |obj| (a dlpx.Tensor) the owner of |tensor|: sets obj._cap to a new
 * "dlpx.tensor" capsule whose destructor frees the tensor, and obj._addr to
 * its address.  Takes ownership of |tensor| in every case (freed on error).
 * Returns 0 or -1 (exception set). */
DLPX_API int dlpx_py_bind(void *obj, dlpx_tensor *tensor);

/* Consumes a DLPack capsule into |obj|: a "dltensor_versioned" or
 * "dltensor" capsule is renamed "used_..." (so its producer-side destructor
 * leaves it alone) and its managed tensor imported with |flags|
 * (DLPX_IMPORT_*) and bound to obj as dlpx_py_bind does.  A capsule already
 * consumed gives ValueError; any other object TypeError; a refused tensor
 * BufferError (its deleter has run).  Returns 0 or -1 (exception set). */
DLPX_API int dlpx_py_consume(void *obj, void *capsule, uint32_t flags);

/* Imports |producer| through a DLPack C exchange API table |api| (from its
 * type's __dlpack_c_exchange_api__ capsule) into |obj|, as dlpx_py_consume
 * does.  Checks the table's major version.  Returns 0 or -1 (exception set,
 * by the producer or by dlpx). */
DLPX_API int dlpx_py_consume_exchange(void *obj, const DLPackExchangeAPI *api, void *producer,
                                      uint32_t flags);

/* Exports the tensor owned by the "dlpx.tensor" capsule |owner| as a new
 * DLPack capsule: "dltensor_versioned" when |versioned|, else "dltensor",
 * with dlpx_py_capsule_destructor[_legacy] as destructor.  |flags| as
 * dlpx_tensor_export.  Returns a new reference, or NULL (exception set). */
DLPX_API void *dlpx_py_export(void *owner, int versioned, uint32_t flags);

/* The destructor of "dlpx.tensor" owner capsules: frees the tensor. */
DLPX_API void dlpx_py_tensor_capsule_destructor(void *capsule);

/* The C methods of dlpx.Tensor, as a static PyMethodDef array ending with a
 * NULL entry (its layout is CPython's stable ABI: name, function, flags,
 * doc).  The Python layer installs each with PyDescr_NewMethod:
 *   __dlpack__(*, stream=None, max_version=None, dl_device=None, copy=None)
 *     METH_FASTCALL | METH_KEYWORDS: the common call (stream, dl_device and
 *     copy None; no negative strides) runs entirely in C; every other call
 *     goes to the registered dlpack_fallback.
 *   __dlpack_device__()  METH_NOARGS: (device_type, device_id).
 * Borrowed, static. */
DLPX_API const void *dlpx_py_method_defs(void);

/* dlpx's DLPack C exchange API table (DLPack 1.3): static, lives for the
 * process.  Its functions take dlpx.Tensor objects (through their _cap
 * attribute) and need the second group of dlpx_pyapi. */
DLPX_API const DLPackExchangeAPI *dlpx_py_exchange_api(void);

#ifdef __cplusplus
}
#endif

#endif /* DLPX_DLPX_H */
