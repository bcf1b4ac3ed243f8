/*
 * dlpx/tensor.h - tensors: immutable views (dtype, shape, strides in
 * elements, byte offset, device, flags) over one storage, and the
 * operations that make new views or copy elements.
 *
 * A dlpx_tensor is immutable once made: operations that change the view
 * return a new tensor.  Tensors may be read, exported and freed from any
 * thread; one handle must not be freed twice.
 */
#ifndef DLPX_TENSOR_H
#define DLPX_TENSOR_H

#include <dlpx/common.h>
#include <dlpx/storage.h>

DLPX_BEGIN_DECLS

typedef struct dlpx_tensor dlpx_tensor;

/* Tensor flags, given at creation and reported by dlpx_tensor_flags. */
#define DLPX_TENSOR_READONLY 1u       /* writes through this view are refused */
#define DLPX_TENSOR_SUBBYTE_PADDED 2u /* sub-byte elements take one byte each */
/* Set together with READONLY on tensors imported from a legacy
 * DLManagedTensor with DLPX_IMPORT_LEGACY_READONLY: read-only only because a
 * legacy producer cannot say whether its data may be written.  Such a tensor
 * may be exported as a legacy DLManagedTensor again (its producer handed the
 * memory out that way already); a tensor made read-only on purpose may not.
 * dlpx_tensor_with_flags(READONLY) clears it. */
#define DLPX_TENSOR_LEGACY_READONLY 4u


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
 * dtype one element per byte (ignored for dtypes of 8 bits or more),
 * LEGACY_READONLY needs READONLY.  New.
 * Returns the errors of dlpx_tensor_empty and DLPX_EINVAL for unknown flags
 * (or LEGACY_READONLY without READONLY). */
DLPX_API int dlpx_tensor_new(DLDataType dtype, int32_t ndim, const int64_t *shape,
                             uint32_t flags, int zero, dlpx_tensor **out);

/* Creates a view over |storage|: element 0 at byte |byte_offset| of the
 * storage, |strides| in elements (NULL: C-contiguous; negative and zero
 * strides allowed), |flags| a mask of DLPX_TENSOR_* (LEGACY_READONLY only
 * with READONLY).  Every byte the view
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

/* Returns a new tensor with the same view and |flags| (DLPX_TENSOR_READONLY,
 * the only flag that can be added) set in addition to the tensor's own: a
 * read-only view.  The view is read-only on purpose, so it loses
 * DLPX_TENSOR_LEGACY_READONLY.
 * Returns 0, DLPX_EINVAL (NULL, another flag), DLPX_ENOMEM. */
DLPX_API int dlpx_tensor_with_flags(const dlpx_tensor *tensor, uint32_t flags, dlpx_tensor **out);

/* ---- copies --------------------------------------------------------------- */

/* Copies the elements of |src| into |dst|: host tensors of equal shape and
 * dtype, any strides (negative, and zero in src); a packed sub-byte tensor
 * may be copied to a padded one and back.  When the memory of src
 * and dst overlaps the copy behaves as if src were first copied to a
 * temporary buffer; when they are the same view (same first element,
 * strides and element width) nothing is done.
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

DLPX_END_DECLS

#endif /* DLPX_TENSOR_H */
