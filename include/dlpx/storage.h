/*
 * dlpx/storage.h - storages: reference-counted blocks of memory, each with
 * one release action that runs exactly once, when the last reference goes.
 */
#ifndef DLPX_STORAGE_H
#define DLPX_STORAGE_H

#include <dlpx/common.h>

DLPX_BEGIN_DECLS

typedef struct dlpx_storage dlpx_storage;

/* A release callback for borrowed memory: called exactly once, from
 * whatever thread drops the last reference, with the data pointer and the
 * context given to dlpx_storage_wrap. */
typedef void (*dlpx_release_fn)(void *data, void *ctx);

/* What a storage does when its last reference goes (dlpx_storage_kind_of).
 * New kinds are only ever appended. */
typedef enum {
  DLPX_STORAGE_OWNED = 1,         /* dlpx allocated it and frees it */
  DLPX_STORAGE_BORROWED = 2,      /* calls the release callback */
  DLPX_STORAGE_FOREIGN = 3,       /* calls a versioned managed tensor's deleter */
  DLPX_STORAGE_FOREIGN_LEGACY = 4, /* calls a legacy managed tensor's deleter */
  DLPX_STORAGE_MAPPED = 5,         /* a private mapping of a file (munmap) */
  DLPX_STORAGE_CUDA_POOL = 6,      /* device or pinned memory from a dlpx CUDA pool */
  DLPX_STORAGE_CUDA_MANAGED = 7,   /* managed memory (cuMemFree) */
  DLPX_STORAGE_CUDA_REGISTERED = 8, /* registered host memory (unregister, then release) */
  DLPX_STORAGE_CUDA_IPC = 9         /* another process's CUDA memory, opened by IPC */
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
 * DLPX_EOVERFLOW (nbytes beyond INT64_MAX), DLPX_EDEVICE (unknown device
 * type, negative id), DLPX_ENOMEM. */
DLPX_API int dlpx_storage_wrap(void *data, size_t nbytes, DLDevice device,
                               dlpx_release_fn release, void *ctx,
                               dlpx_storage **out);

/* Adds a reference to |storage| (NULL: nothing).  Thread-safe. */
DLPX_API void dlpx_storage_retain(dlpx_storage *storage);

/* Drops a reference; the last one runs the release action and frees the
 * storage.  Accepts NULL.  Thread-safe. */
DLPX_API void dlpx_storage_release(dlpx_storage *storage);

/* The base address (borrowed), size in bytes, device, kind
 * (dlpx_storage_kind), and current reference count of a storage.
 * |storage| must not be NULL. */
DLPX_API void *dlpx_storage_data(const dlpx_storage *storage);
DLPX_API size_t dlpx_storage_nbytes(const dlpx_storage *storage);
DLPX_API DLDevice dlpx_storage_device(const dlpx_storage *storage);
DLPX_API int dlpx_storage_kind_of(const dlpx_storage *storage);
DLPX_API int64_t dlpx_storage_refcount(const dlpx_storage *storage);

DLPX_END_DECLS

#endif /* DLPX_STORAGE_H */
