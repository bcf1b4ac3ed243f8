/*
 * dlpx/cuda.h - CUDA memory, streams, copies and IPC through the Driver
 * API, opened at run time: libdlpx does not link libcuda.  The first call
 * that needs the driver opens libcuda.so.1 ($DLPX_LIBCUDA names another
 * file); on a machine without a driver or GPU every call here fails with
 * DLPX_ECUDA (no driver, or it does not start) or DLPX_EDEVICE (no such
 * device) and a message saying why, and the rest of dlpx works as before.
 * DLPX_ENOTSUP in the lists below means the driver refused an operation
 * (CUDA_ERROR_NOT_SUPPORTED) or dlpx does not do it.
 *
 * Streams and events are the driver's handles as integers (uintptr_t), with
 * DLPack's meaning for streams: 0 and 1 (DLPX_CUDA_STREAM_LEGACY) the legacy
 * default stream, 2 (DLPX_CUDA_STREAM_PER_THREAD) the per-thread default
 * stream, any other value a CUstream.  Every call runs in the primary
 * context of its device, pushed and popped around the call: the caller's
 * current context is left as it was.
 *
 * Driver failures return DLPX_ECUDA with the driver's error name in
 * dlpx_last_error(), except out of memory (DLPX_ENOMEM) and bad devices
 * (DLPX_EDEVICE).
 */
#ifndef DLPX_CUDA_H
#define DLPX_CUDA_H

#include <dlpx/common.h>
#include <dlpx/storage.h>
#include <dlpx/tensor.h>

DLPX_BEGIN_DECLS

#define DLPX_CUDA_STREAM_LEGACY 1u     /* the legacy default stream */
#define DLPX_CUDA_STREAM_PER_THREAD 2u /* the per-thread default stream */

/* ---- the driver ---------------------------------------------------------------- */

/* 1 when the driver loads and reports at least one device, else 0 (the
 * reason is in dlpx_last_error()).  Never fails. */
DLPX_API int dlpx_cuda_available(void);

/* The number of devices in *count (0 when there is no driver: that call
 * also returns DLPX_ECUDA, with the reason).
 * Returns 0, DLPX_EINVAL (count NULL), DLPX_ENOTSUP, DLPX_ECUDA. */
DLPX_API int dlpx_cuda_device_count(int *count);

/* The driver's version (12040 for 12.4) in *version.
 * Returns 0, DLPX_EINVAL, DLPX_ENOTSUP. */
DLPX_API int dlpx_cuda_driver_version(int *version);

/* The name of |device| into |buf| (|size| bytes, NUL-terminated, cut to
 * fit) and its total memory in *total_bytes (either may be NULL).
 * Returns 0, DLPX_EINVAL, DLPX_ENOTSUP, DLPX_EDEVICE, DLPX_ECUDA. */
DLPX_API int dlpx_cuda_device_info(int device, char *buf, size_t size, size_t *total_bytes);

/* Free and total memory of |device| as the driver reports them.
 * Returns 0, DLPX_EINVAL, DLPX_ENOTSUP, DLPX_EDEVICE, DLPX_ECUDA. */
DLPX_API int dlpx_cuda_mem_get_info(int device, size_t *free_bytes, size_t *total_bytes);

/* Waits on the host for all work queued on |device| (cuCtxSynchronize).
 * dlpx itself never calls it: exchanges order streams with events.
 * Returns 0, DLPX_ENOTSUP, DLPX_EDEVICE, DLPX_ECUDA. */
DLPX_API int dlpx_cuda_synchronize(int device);

/* ---- streams and events -------------------------------------------------------------- */

/* A new stream on |device| that does not synchronise with the legacy
 * default stream (CU_STREAM_NON_BLOCKING when |non_blocking|).  New: destroy
 * with dlpx_cuda_stream_destroy.
 * Returns 0, DLPX_EINVAL, DLPX_ENOTSUP, DLPX_EDEVICE, DLPX_ECUDA. */
DLPX_API int dlpx_cuda_stream_create(int device, int non_blocking, uintptr_t *out);

/* Destroys a stream made by dlpx_cuda_stream_create (work queued on it
 * still completes).  The default streams (0, 1, 2) are refused.
 * Returns 0, DLPX_EINVAL, DLPX_ENOTSUP, DLPX_ECUDA. */
DLPX_API int dlpx_cuda_stream_destroy(int device, uintptr_t stream);

/* Waits on the host until |stream| is idle.
 * Returns 0, DLPX_ENOTSUP, DLPX_EDEVICE, DLPX_ECUDA. */
DLPX_API int dlpx_cuda_stream_synchronize(int device, uintptr_t stream);

/* 1 when all work on |stream| has finished, 0 when some is pending, or a
 * negative DLPX_E* code. */
DLPX_API int dlpx_cuda_stream_query(int device, uintptr_t stream);

/* Event flags. */
#define DLPX_CUDA_EVENT_TIMING 1u       /* can be timed (dlpx_cuda_event_elapsed) */
#define DLPX_CUDA_EVENT_BLOCKING_SYNC 2u /* synchronize sleeps instead of spinning */
#define DLPX_CUDA_EVENT_INTERPROCESS 4u  /* can be shared with another process */

/* A new event on |device| with |flags| (DLPX_CUDA_EVENT_*; INTERPROCESS
 * excludes TIMING).  New: destroy with dlpx_cuda_event_destroy.
 * Returns 0, DLPX_EINVAL, DLPX_ENOTSUP, DLPX_EDEVICE, DLPX_ECUDA. */
DLPX_API int dlpx_cuda_event_create(int device, uint32_t flags, uintptr_t *out);
/* Returns 0, DLPX_EINVAL (0 handle), DLPX_ENOTSUP, DLPX_ECUDA. */
DLPX_API int dlpx_cuda_event_destroy(int device, uintptr_t event);
/* Records |event| at the current end of |stream|.
 * Returns 0, DLPX_EINVAL, DLPX_ENOTSUP, DLPX_EDEVICE, DLPX_ECUDA. */
DLPX_API int dlpx_cuda_event_record(int device, uintptr_t event, uintptr_t stream);
/* Makes later work on |stream| wait for |event|'s last record, on the
 * device (the host does not block).  Returns as dlpx_cuda_event_record. */
DLPX_API int dlpx_cuda_stream_wait_event(int device, uintptr_t stream, uintptr_t event);
/* Waits on the host for |event|.  Returns as dlpx_cuda_event_record. */
DLPX_API int dlpx_cuda_event_synchronize(int device, uintptr_t event);
/* 1 when |event| has completed (or was never recorded), 0 when pending,
 * or a negative DLPX_E* code. */
DLPX_API int dlpx_cuda_event_query(int device, uintptr_t event);
/* Milliseconds between two completed TIMING events in *ms.
 * Returns 0, DLPX_EINVAL, DLPX_ENOTSUP, DLPX_ESTATE (not completed),
 * DLPX_ECUDA. */
DLPX_API int dlpx_cuda_event_elapsed(int device, uintptr_t start, uintptr_t end, float *ms);

/* Orders |consumer| after the work queued so far on |producer|, both on
 * |device|: an event (from a per-device cache) is recorded on producer and
 * consumer waits for it on the device; the host never blocks and nothing is
 * synchronised device-wide.  Nothing is done when they are the same stream
 * or either is (uintptr_t)-1 (DLPack's "no synchronisation").
 * Returns 0, DLPX_ENOTSUP, DLPX_EDEVICE, DLPX_ECUDA. */
DLPX_API int dlpx_cuda_stream_order(int device, uintptr_t producer, uintptr_t consumer);

/* The calling thread's current stream for |device| (the legacy default, 0,
 * until set), which dlpx uses where a call takes no stream and gives
 * DLPack consumers as its current work stream. */
DLPX_API uintptr_t dlpx_cuda_current_stream(int device);
/* Sets the calling thread's current stream for |device| (0 to go back to
 * the default).  Returns 0, DLPX_EDEVICE (device outside [0, 63]). */
DLPX_API int dlpx_cuda_set_current_stream(int device, uintptr_t stream);

/* ---- memory ------------------------------------------------------------------------ */

/* A storage of |nbytes| on |device|: kDLCUDA (device memory from the
 * device's caching pool), kDLCUDAHost (pinned host memory from the pinned
 * pool) or kDLCUDAManaged (managed memory, cuMemAllocManaged, not pooled).
 * |stream| is the stream the memory will be used on: a pooled block goes
 * back to the pool when the last reference goes, reusable at once on that
 * stream and on others only once the work queued on it so far has finished
 * (dlpx_cuda_storage_stream).  When a pool cannot get memory it empties its
 * cache and tries once more.  New: *out holds one reference.
 * Returns 0, DLPX_EINVAL, DLPX_EOVERFLOW, DLPX_EDEVICE (another device
 * type, no such device), DLPX_ENOTSUP, DLPX_ENOMEM (device or limit
 * exhausted, with the pool's numbers in the message), DLPX_ECUDA. */
DLPX_API int dlpx_cuda_storage_alloc(DLDevice device, size_t nbytes, uintptr_t stream,
                                     dlpx_storage **out);

/* A C-contiguous tensor of |dtype| and |shape| in new memory of |device|
 * (as dlpx_cuda_storage_alloc), contents undefined.  New.
 * Returns the errors of dlpx_cuda_storage_alloc and dlpx_tensor_empty. */
DLPX_API int dlpx_cuda_tensor_empty(DLDevice device, DLDataType dtype, int32_t ndim,
                                    const int64_t *shape, uintptr_t stream, dlpx_tensor **out);

/* The stream the memory of a storage on a CUDA device (kDLCUDA,
 * kDLCUDAHost, kDLCUDAManaged; dlpx's own or imported) is ordered on: the
 * one it was allocated or last written on by dlpx, or the one its producer
 * made it ready on; exports order consumers after it.  0 for other
 * storages and for memory nobody said anything about. */
DLPX_API uintptr_t dlpx_cuda_storage_stream(const dlpx_storage *storage);
/* Moves a storage on a CUDA device to |stream| after ordering |stream|
 * behind the storage's current one (dlpx_cuda_stream_order); a pool block
 * then goes back to its pool for |stream|.  -1 leaves the stream as it is.
 * Returns 0, DLPX_EINVAL (NULL or not CUDA memory), and the errors of
 * dlpx_cuda_stream_order. */
DLPX_API int dlpx_cuda_storage_set_stream(dlpx_storage *storage, uintptr_t stream);
/* Records that the memory is ready on |stream| without ordering anything:
 * for a consumer whose producer has just made it so (a DLPack import with
 * a stream).  -1 leaves it as it is.  Returns 0, DLPX_EINVAL. */
DLPX_API int dlpx_cuda_storage_mark(dlpx_storage *storage, uintptr_t stream);

/* Makes the memory of |tensor| ready for a consumer working on
 * |consumer| (a DLPack stream value: 1 legacy, 2 per thread, a handle, or
 * (uintptr_t)-1 for none), as a CUDA producer must before an export: for
 * kDLCUDA and kDLCUDAManaged memory the consumer's stream is ordered after
 * the storage's (dlpx_cuda_stream_order: no host block); for kDLCUDAHost
 * memory, which the consumer reads from the host, the call waits on the
 * host for the storage's stream.  Nothing for other devices.
 * Returns 0, DLPX_EINVAL, and the errors of dlpx_cuda_stream_order. */
DLPX_API int dlpx_cuda_tensor_ready(const dlpx_tensor *tensor, uintptr_t consumer);

/* Page-locks |nbytes| of existing host memory at |data| (cuMemHostRegister,
 * exact size: no pool rounding) and wraps it as a kDLCUDAHost storage; when
 * the last reference goes the memory is unregistered and then |release|
 * (may be NULL) is called as release(data, ctx).  On failure nothing is
 * taken.  New.
 * Returns 0, DLPX_EINVAL, DLPX_ENOTSUP, DLPX_EDEVICE, DLPX_ENOMEM,
 * DLPX_ECUDA (already registered, among others). */
DLPX_API int dlpx_cuda_host_register(void *data, size_t nbytes, dlpx_release_fn release,
                                     void *ctx, dlpx_storage **out);

/* ---- the caching pools ------------------------------------------------------------------ */

/* Pool statistics, in the manner of torch.cuda.memory_stats: bytes in
 * blocks handed out (allocated), in blocks handed out or waiting for
 * their stream's work before reuse (active), and held from the driver
 * (reserved); each current and peak; counts of calls. */
typedef struct {
  int64_t allocated_bytes, allocated_bytes_peak;
  int64_t active_bytes, active_bytes_peak;
  int64_t reserved_bytes, reserved_bytes_peak;
  int64_t requested_bytes;     /* bytes asked for by the blocks handed out */
  int64_t allocations;         /* blocks handed out now */
  int64_t allocation_count;    /* allocations ever */
  int64_t free_count;          /* frees ever */
  int64_t segments;            /* driver allocations held now */
  int64_t segment_alloc_count; /* driver allocations ever (cache misses) */
  int64_t segment_free_count;  /* driver frees ever */
  int64_t cache_flushes;       /* empty_cache calls, including OOM retries */
  int64_t oom_count;           /* allocations that failed for memory */
  int64_t limit;               /* the reserved-bytes limit, -1 for none */
} dlpx_cuda_pool_stats;

/* The statistics of the pool of |device| (kDLCUDA or kDLCUDAHost) in *out.
 * Returns 0, DLPX_EINVAL, DLPX_EDEVICE. */
DLPX_API int dlpx_cuda_pool_stats_get(DLDevice device, dlpx_cuda_pool_stats *out);
/* Resets the peaks to the current values.  Returns as above. */
DLPX_API int dlpx_cuda_pool_reset_peaks(DLDevice device);
/* Gives the cached blocks of the pool of |device| whose streams are done
 * back to the driver.  Returns 0, DLPX_EDEVICE, DLPX_ECUDA. */
DLPX_API int dlpx_cuda_empty_cache(DLDevice device);
/* Caps the bytes the pool of |device| reserves from the driver (-1: no cap).
 * Returns 0, DLPX_EINVAL (below -1), DLPX_EDEVICE. */
DLPX_API int dlpx_cuda_set_memory_limit(DLDevice device, int64_t limit);

/* The rounding a pool applies to a request of |nbytes| (its size class):
 * multiples of 512 bytes below 1 MiB, of 2 MiB above; so no block wastes
 * more than 2 MiB.  Returns 0 for requests too large to round. */
DLPX_API size_t dlpx_cuda_pool_round(size_t nbytes);

/* Raw blocks from the pool of |device| for C users, |stream| as in
 * dlpx_cuda_storage_alloc: *ptr is the address.  Free with
 * dlpx_cuda_pool_free(device, ptr, stream) exactly once: the block is
 * reusable at once on |stream| (the stream of the last work on it).
 * Returns 0, and the errors of dlpx_cuda_storage_alloc; free returns
 * DLPX_EINVAL for a pointer the pool did not hand out. */
DLPX_API int dlpx_cuda_pool_alloc(DLDevice device, size_t nbytes, uintptr_t stream, void **ptr);
DLPX_API int dlpx_cuda_pool_free(DLDevice device, void *ptr, uintptr_t stream);

/* ---- copies ----------------------------------------------------------------------------------- */

/* Copies |nbytes| from |src| to |dst|, any of host, pinned, managed and
 * device memory, asynchronously on |stream| of |device| (pageable host
 * memory makes the driver stage it).  Returns 0, DLPX_EINVAL, DLPX_ENOTSUP,
 * DLPX_EDEVICE, DLPX_ECUDA. */
DLPX_API int dlpx_cuda_memcpy(int device, void *dst, const void *src, size_t nbytes,
                              uintptr_t stream);

/* Sets |nbytes| bytes at |dst| (device, pinned or managed memory) to
 * |value| on |stream| of |device| (cuMemsetD8Async).  Returns 0,
 * DLPX_EINVAL, DLPX_ENOTSUP, DLPX_EDEVICE, DLPX_ECUDA. */
DLPX_API int dlpx_cuda_memset(int device, void *dst, int value, size_t nbytes, uintptr_t stream);

/* Copies the elements of |src| into |dst| (same shape and dtype, any
 * devices among CPU, CUDA, CUDA host and managed; at least one CUDA
 * device, or both host) on |stream| of the CUDA device involved:
 * contiguous runs as one copy; layouts that reduce to two or three
 * dimensions with unit inner strides and positive pitches as
 * cuMemcpy2D/3D; other layouts (negative or zero strides, transposes)
 * through contiguous staging buffers, which wait on the host for the
 * stream.  The copy first waits for the streams src's and dst's storages
 * are ordered on (dlpx_cuda_stream_order), and later work on src's stream
 * waits for it; dst's storage is then ordered on |stream|.
 * Returns 0, DLPX_EINVAL, DLPX_ESHAPE, DLPX_EDTYPE, DLPX_EREADONLY,
 * DLPX_ELAYOUT (dst writes one element twice), DLPX_EDEVICE (two different
 * CUDA devices, or a device with no address), DLPX_ENOTSUP (packed
 * sub-byte elements that are not both C-contiguous), DLPX_ENOMEM,
 * DLPX_ECUDA. */
DLPX_API int dlpx_cuda_tensor_copy_into(const dlpx_tensor *dst, const dlpx_tensor *src,
                                        uintptr_t stream);

/* A new C-contiguous copy of |src| on |device| (kDLCPU, kDLCUDA,
 * kDLCUDAHost, kDLCUDAManaged), made on |stream| as
 * dlpx_cuda_tensor_copy_into; the result is writable.  When
 * |synchronize| is non-zero the call returns after the copy has finished
 * (needed before the host reads a kDLCPU result).  New.
 * Returns the errors of dlpx_cuda_storage_alloc and
 * dlpx_cuda_tensor_copy_into. */
DLPX_API int dlpx_cuda_tensor_to(const dlpx_tensor *src, DLDevice device, uintptr_t stream,
                                 int synchronize, dlpx_tensor **out);

/* ---- IPC: device memory shared with other processes ----------------------------------------------- */

/* A handle to CUDA memory of another process: plain bytes, to send any way
 * (a pipe, a pickle).  Holds the driver's legacy IPC handles of the memory
 * and of an event, where the storage lies in its allocation, the
 * producer's pid and a random nonce. */
typedef struct {
  unsigned char bytes[192];
} dlpx_cuda_ipc_handle;

typedef struct dlpx_cuda_export dlpx_cuda_export;

/* Shares the kDLCUDA memory of |storage| with other processes: records an
 * interprocess event on the storage's stream (after the work that wrote
 * it) and fills *handle.  The export holds a reference to the storage; a
 * reference cell in /dev/shm (dlpx-cuda-ipc.<pid>.<id>) counts the
 * processes that have it open.  New: close with dlpx_cuda_export_close.
 * Returns 0, DLPX_EINVAL, DLPX_EDEVICE (not device memory), DLPX_EIO (the
 * cell), DLPX_ENOMEM, DLPX_ECUDA. */
DLPX_API int dlpx_cuda_ipc_export(dlpx_storage *storage, dlpx_cuda_export **out,
                                  dlpx_cuda_ipc_handle *handle);

/* Closes an export: new opens of its handle fail; the memory stays until
 * every importer has closed it or exited, killed or not (then the next IPC
 * call, or dlpx_cuda_ipc_collect, releases it).  Accepts NULL. */
DLPX_API void dlpx_cuda_export_close(dlpx_cuda_export *export_);

/* Releases closed exports no process has open any more, and removes the
 * reference cells that killed producers of this user left in /dev/shm
 * (dlpx_cuda_ipc_export does that too); returns the number of closed
 * exports still held for importers. */
DLPX_API int dlpx_cuda_ipc_collect(void);

/* The number of live processes that have |export_| open now (at most
 * 128 at once; more opens fail with DLPX_ENOMEM). */
DLPX_API int dlpx_cuda_export_importers(const dlpx_cuda_export *export_);

/* Opens a handle from another process as a kDLCUDA storage over the same
 * memory (a DLPX_STORAGE_CUDA_IPC storage): each export is mapped once per
 * process and shared by the storages opened from it; the last one to go
 * unmaps it.  |stream| waits for the producer's event (on the device) and
 * becomes the storage's stream.  New: *out holds one reference.
 * Returns 0, DLPX_EINVAL (not a dlpx handle, malformed, or opened in its
 * producer), DLPX_ENOENT (the producer or its export is gone, or the handle
 * is stale), DLPX_EIO, DLPX_ENOMEM, DLPX_ECUDA. */
DLPX_API int dlpx_cuda_ipc_open(const dlpx_cuda_ipc_handle *handle, uintptr_t stream,
                                dlpx_storage **out);

/* ---- tensor files to device memory ---------------------------------------------------------- */

typedef struct dlpx_file dlpx_file; /* dlpx/files.h */

/* How dlpx_cuda_file_load stages reads: |threads| readers (0: the number of
 * CPUs, at most 8), each with |buffers| pinned buffers (0: 2) of
 * |buffer_bytes| (0: 16 MiB; when verifying, a multiple of the file's
 * checksum chunk, raised to one chunk if smaller).  Peak host memory is threads x buffers x buffer_bytes. */
typedef struct {
  size_t buffer_bytes;
  uint32_t buffers;
  uint32_t threads;
} dlpx_cuda_load_options;

/* Loads the |n| tensors |indices| of |file| into device memory of |device|
 * (kDLCUDA or kDLCUDAManaged): one pooled block holds them all, each
 * 256-byte aligned in it, and out[i] is a view of tensor indices[i].  The
 * bytes go through a ring of pinned staging buffers: each reader thread
 * fills a buffer with pread (many small tensors share one) while the
 * copies of its other buffers run on |stream|, so no pageable page is ever
 * under a copy and reads overlap copies.  With DLPX_READ_VERIFY checksums
 * are checked as the bytes arrive.  The tensors are ready on |stream| when
 * the call returns (the host did not wait for the last copies: order other
 * streams after it, or use the tensors on it).  New (each out[i]); on
 * failure none is made and nothing stays allocated.
 * Returns 0, DLPX_EINVAL, DLPX_EINDEX, DLPX_EDEVICE, DLPX_EOVERFLOW,
 * DLPX_EIO, DLPX_ECHECKSUM (naming the tensor), DLPX_ENOMEM, DLPX_ECUDA. */
DLPX_API int dlpx_cuda_file_load(dlpx_file *file, size_t n, const size_t *indices,
                                 DLDevice device, uintptr_t stream,
                                 const dlpx_cuda_load_options *options, uint32_t flags,
                                 dlpx_tensor **out);

DLPX_END_DECLS

#endif /* DLPX_CUDA_H */
