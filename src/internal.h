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

#define DLPX__COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- errors (error.c) ------------------------------------------------------ */

/* Records |code| and a formatted detail message for this thread; returns
 * code so callers can write `return dlpx__fail(DLPX_EINVAL, "...")`. */
int dlpx__fail(int code, const char *fmt, ...) DLPX__PRINTF(2, 3);

/* The last error of this thread, saved and put back around code that may
 * call dlpx and fail (a foreign deleter): the caller's error survives it. */
#define DLPX__MSG_MAX 512
typedef struct {
  int code;
  char message[DLPX__MSG_MAX];
} dlpx__error_state;

void dlpx__error_save(dlpx__error_state *saved);
void dlpx__error_restore(const dlpx__error_state *saved);

/* ---- counters (stats.c) ---------------------------------------------------- */

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

/* ---- checked arithmetic ---------------------------------------------------- */

static inline bool dlpx__mul_overflow(int64_t a, int64_t b, int64_t *r) {
  return __builtin_mul_overflow(a, b, r);
}
static inline bool dlpx__add_overflow(int64_t a, int64_t b, int64_t *r) {
  return __builtin_add_overflow(a, b, r);
}
/* a * b, or INT64_MAX (with the sign of the product) when it overflows. */
static inline int64_t dlpx__mul_sat(int64_t a, int64_t b) {
  int64_t r;
  if (!__builtin_mul_overflow(a, b, &r)) return r;
  return ((a < 0) != (b < 0)) ? -INT64_MAX : INT64_MAX;
}

/* ---- dtypes (dtype.c) ------------------------------------------------------ */

/* Checks a dtype for use as a tensor element type: known, lanes == 1. */
int dlpx__dtype_check_element(DLDataType dtype);

/* Bits one element occupies in storage: bits*lanes, or 8 for a padded
 * sub-byte type. */
static inline int64_t dlpx__elem_bits(DLDataType dtype, uint32_t tflags) {
  int64_t b = (int64_t)dtype.bits * (int64_t)dtype.lanes;
  if (b < 8 && (tflags & DLPX_TENSOR_SUBBYTE_PADDED)) return 8;
  return b;
}

static inline bool dlpx__dtype_eq(DLDataType a, DLDataType b) {
  return a.code == b.code && a.bits == b.bits && a.lanes == b.lanes;
}

/* ---- devices (device.c) ---------------------------------------------------- */

/* True when data pointers of this device are plain addresses, so a byte
 * offset may be folded into the pointer. */
bool dlpx__device_addressable(int32_t type);
/* True when the CPU reads and writes the device's memory directly. */
bool dlpx__device_host(int32_t type);

/* ---- storage (storage.c) ----------------------------------------------------
 *
 * A storage kind is a table of operations.  storage.c knows none of the
 * kinds: each kind's file defines its table and a constructor, and puts the
 * state it needs in the storage's payload (allocated with the storage). */

typedef struct dlpx__storage_ops {
  int32_t kind;     /* dlpx_storage_kind reported by dlpx_storage_kind_of */
  const char *name; /* for messages */
  /* Runs the release action when the last reference goes (the storage
   * itself is freed afterwards by storage.c).  Never NULL. */
  void (*release)(dlpx_storage *storage);
} dlpx__storage_ops;

struct dlpx_storage {
  atomic_llong refcount;
  const dlpx__storage_ops *ops;
  DLDevice device;
  void *data; /* base address (or handle) */
  size_t nbytes;
  /* CUDA memory: the stream its contents are ordered on (written by dlpx
   * or handed over by a producer), which exports order consumers after */
  _Atomic uintptr_t stream;
  max_align_t payload[]; /* the kind's state */
};

/* Allocates a storage of |ops| with |payload_size| bytes of payload and one
 * reference.  Returns NULL (with DLPX_ENOMEM recorded) on failure. */
dlpx_storage *dlpx__storage_new(const dlpx__storage_ops *ops, size_t payload_size, void *data,
                                size_t nbytes, DLDevice device);

/* Frees a storage whose release action must not run: nothing was taken
 * over yet (the constructor's caller keeps ownership).  The caller must hold
 * the only reference. */
void dlpx__storage_discard(dlpx_storage *storage);

static inline void *dlpx__storage_payload(dlpx_storage *s) { return s->payload; }

/* Sets the release action of a borrowed storage (storage_host.c), for
 * dlpx_tensor_wrap: its storage spans the bytes a view touches, whose
 * lowest address may lie below the data pointer the owner gave; the
 * callback still gets that pointer, |release_data|. */
void dlpx__storage_set_release(dlpx_storage *s, dlpx_release_fn release, void *release_data,
                               void *ctx);

/* A private mapping of |len| bytes of |fd| from offset 0, as a storage
 * (munmap on release): read-only, or |writable| copy-on-write (writes stay
 * in this process).  New.  (storage_map.c) */
int dlpx__storage_map_file(int fd, uint64_t len, bool writable, dlpx_storage **out);

/* Owned host memory for tensors about to be filled by reads: blocks of
 * 2 MiB and more come from mmap, aligned to 2 MiB and advised to use
 * transparent huge pages (a read into fresh memory is bound by its page
 * faults); smaller ones from dlpx_storage_alloc.  New.  (storage_map.c) */
int dlpx__storage_alloc_pages(size_t nbytes, dlpx_storage **out);

/* ---- foreign managed tensors (managed.c) ---------------------------------- */

/* Calls the deleter of a versioned or legacy managed tensor (if it has
 * one), keeping this thread's last error intact: the one place any deleter
 * is called from.  dlpx__run_deleter also counts it as a foreign deleter. */
void dlpx__call_deleter(void *managed, bool versioned);
void dlpx__run_deleter(void *managed, bool versioned);

/* Creates a storage whose release runs a foreign managed tensor's deleter.
 * Takes ownership of |managed| only on success. */
int dlpx__storage_foreign(void *managed, bool versioned, void *data, size_t nbytes,
                          DLDevice device, dlpx_storage **out);

/* ---- layout arithmetic (layout.c) ------------------------------------------ */

int dlpx__check_ndim(int32_t ndim);
/* ndim in range, shape non-NULL when ndim > 0, no negative extent. */
int dlpx__check_shape(int32_t ndim, const int64_t *shape);

/* Product of the shape with overflow check (0 as soon as an extent is 0);
 * returns 0 or DLPX_EOVERFLOW. */
int dlpx__numel(int32_t ndim, const int64_t *shape, int64_t *out);

/* C- and F-contiguous strides.  The products saturate at INT64_MAX: that
 * only happens for shapes without elements (callers check numel first),
 * where strides are never used to address memory. */
void dlpx__c_strides(int32_t ndim, const int64_t *shape, int64_t *strides);
void dlpx__f_strides(int32_t ndim, const int64_t *shape, int64_t *strides);

/* Computes the byte extent [lo, hi) touched by a view, relative to element
 * 0, for elements of |elem_bits| bits.  Returns 0 or DLPX_EOVERFLOW. */
int dlpx__extent(int32_t ndim, const int64_t *shape, const int64_t *strides, int64_t elem_bits,
                 int64_t *lo, int64_t *hi);

/* 1 if the layout is C- (|c_order|) or F-contiguous. */
int dlpx__contiguous(int32_t ndim, const int64_t *shape, const int64_t *strides, bool c_order);

/* ---- tensor (tensor.c, tensor_create.c, tensor_view.c) --------------------- */

#define DLPX__TENSOR_FLAGS \
  (DLPX_TENSOR_READONLY | DLPX_TENSOR_SUBBYTE_PADDED | DLPX_TENSOR_LEGACY_READONLY)

struct dlpx_tensor {
  DLTensor dl;          /* data = storage base; byte_offset = offset of element 0 */
  dlpx_storage *storage;
  uint32_t flags;       /* DLPX_TENSOR_* */
  int64_t dims[];       /* shape[ndim] then strides[ndim] */
};

/* Checks a mask of tensor flags given at creation; returns 0 or DLPX_EINVAL. */
int dlpx__check_tensor_flags(uint32_t flags);

/* Allocates a tensor handle with room for ndim dims; shape/strides point
 * into it; takes a new reference to |storage|.  NULL when out of memory. */
dlpx_tensor *dlpx__tensor_alloc(dlpx_storage *storage, int32_t ndim);

/* Creates a contiguous host tensor in new owned storage. */
int dlpx__tensor_new_owned(DLDataType dtype, int32_t ndim, const int64_t *shape, char order,
                           uint32_t flags, bool zero, dlpx_tensor **out);

/* ---- copy_stream.c ---------------------------------------------------------- */

/* Pieces smaller than this are copied with memcpy. */
#define DLPX__STREAM_MIN ((size_t)4096)

/* memcpy of |n| bytes into |dst| that will not be read soon: non-temporal
 * stores where the machine has them (the bytes bypass the caches). */
void dlpx__copy_stream(void *dst, const void *src, size_t n);

/* ---- copy (copy.c) --------------------------------------------------------- */

/* A copy in byte strides: dimensions of extent 1 dropped, destination
 * strides made positive (both bases moved), sorted by destination stride
 * (outermost first) and merged where both layouts are contiguous. */
typedef struct {
  int32_t ndim;
  int64_t n[DLPX_MAX_NDIM];  /* extents, outermost first */
  int64_t ds[DLPX_MAX_NDIM]; /* destination byte strides */
  int64_t ss[DLPX_MAX_NDIM]; /* source byte strides */
  char *dst;
  const char *src;
  int64_t esize; /* element size in bytes */
} dlpx__copy_plan;

/* Plans a copy of whole-byte elements between checked views. */
void dlpx__copy_plan_build(dlpx__copy_plan *p, const dlpx_tensor *dst, const dlpx_tensor *src);

/* False when two elements of the view may share memory. */
bool dlpx__no_self_overlap(const dlpx_tensor *t);

/* The checks of every copy but the devices': non-NULL, equal shapes and
 * dtypes, dst writable and without self-overlap.  Returns 0 or the error. */
int dlpx__copy_check(const dlpx_tensor *dst, const dlpx_tensor *src);

/* Copies between views already checked: equal shapes and dtypes, |dst| with
 * no self-overlap and not overlapping |src|. */
void dlpx__copy_raw(const dlpx_tensor *dst, const dlpx_tensor *src);

#endif /* DLPX_INTERNAL_H */
