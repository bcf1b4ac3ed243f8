/*
 * internal.h - declarations shared by the files of libdlpx.
 * Internal non-static symbols are named dlpx__* and are not exported.
 */
#ifndef DLPX_INTERNAL_H
#define DLPX_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <dlpx/dlpx.h>

#if defined(__GNUC__)
#define DLPX__LIKELY(x) __builtin_expect(!!(x), 1)
#define DLPX__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define DLPX__PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define DLPX__LIKELY(x) (x)
#define DLPX__UNLIKELY(x) (x)
#define DLPX__PRINTF(a, b)
#endif

/* ---- errors (error.c) ---- */

/* Records |code| and a formatted detail message for this thread; returns
 * code so callers can write `return dlpx__fail(DLPX_EINVAL, "...")`. */
int dlpx__fail(int code, const char *fmt, ...) DLPX__PRINTF(2, 3);

/* ---- counters (storage.c) ---- */

typedef struct {
  atomic_llong storages_live;
  atomic_llong tensors_live;
  atomic_llong exports_live;
  atomic_llong foreign_deleters_run;
  atomic_llong borrowed_releases_run;
  atomic_llong python_refs_leaked;
} dlpx__counters;

extern dlpx__counters dlpx__stats;

static inline void dlpx__count(atomic_llong *c, long long d) {
  atomic_fetch_add_explicit(c, d, memory_order_relaxed);
}

/* ---- dtypes (dtype.c) ---- */

/* Checks a dtype for use as a tensor element type: known, lanes == 1. */
int dlpx__dtype_check_element(DLDataType dtype);

/* Bits one element occupies in storage: bits*lanes, or 8 for a padded
 * sub-byte type. */
static inline int64_t dlpx__elem_bits(DLDataType dtype, uint32_t tflags) {
  int64_t b = (int64_t)dtype.bits * (int64_t)dtype.lanes;
  if (b < 8 && (tflags & DLPX_TENSOR_SUBBYTE_PADDED)) return 8;
  return b;
}

/* ---- devices ---- */

/* True for known DLDeviceType values. */
bool dlpx__device_type_known(int32_t type);
/* True when data pointers of this device are plain addresses, so a byte
 * offset may be folded into the pointer. */
bool dlpx__device_addressable(int32_t type);
int dlpx__device_check(DLDevice device);

/* ---- storage (storage.c) ---- */

struct dlpx_storage {
  atomic_llong refcount;
  int32_t kind;     /* dlpx_storage_kind */
  DLDevice device;
  void *data;       /* base address (or handle) */
  size_t nbytes;
  void *alloc;      /* OWNED: the block to free */
  dlpx_release_fn release; /* BORROWED */
  void *ctx;        /* BORROWED: release context; FOREIGN*: managed tensor */
};

/* Creates a storage whose release calls a foreign managed tensor's deleter.
 * Takes ownership of |managed| only on success. */
int dlpx__storage_foreign(void *managed, bool versioned, void *data, size_t nbytes,
                          DLDevice device, dlpx_storage **out);

/* ---- tensor (tensor.c) ---- */

struct dlpx_tensor {
  DLTensor dl;          /* data = storage base; byte_offset = offset of element 0 */
  dlpx_storage *storage;
  uint32_t flags;       /* DLPX_TENSOR_* */
  int64_t dims[];       /* shape[ndim] then strides[ndim] */
};

/* Allocates a tensor handle with room for ndim dims; shape/strides point
 * into it; takes a new reference to |storage|. */
dlpx_tensor *dlpx__tensor_alloc(dlpx_storage *storage, int32_t ndim);

/* Computes the byte extent [lo, hi) touched by a view, relative to element
 * 0, for elements of |elem_bits| bits.  Returns 0 or DLPX_EOVERFLOW. */
int dlpx__extent(int32_t ndim, const int64_t *shape, const int64_t *strides, int64_t elem_bits,
                 int64_t *lo, int64_t *hi);

/* Product of the shape with overflow check; returns 0 or DLPX_EOVERFLOW. */
int dlpx__numel(int32_t ndim, const int64_t *shape, int64_t *out);

/* Fills C-contiguous strides. */
void dlpx__c_strides(int32_t ndim, const int64_t *shape, int64_t *strides);

/* Creates a contiguous host tensor in new owned storage. */
int dlpx__tensor_new_owned(DLDataType dtype, int32_t ndim, const int64_t *shape, char order,
                           uint32_t flags, bool zero, dlpx_tensor **out);

/* ---- copy (copy.c) ---- */
int dlpx__copy_raw(const dlpx_tensor *dst, const dlpx_tensor *src);

/* ---- checked arithmetic ---- */
static inline bool dlpx__mul_overflow(int64_t a, int64_t b, int64_t *r) {
  return __builtin_mul_overflow(a, b, r);
}
static inline bool dlpx__add_overflow(int64_t a, int64_t b, int64_t *r) {
  return __builtin_add_overflow(a, b, r);
}

#endif /* DLPX_INTERNAL_H */
