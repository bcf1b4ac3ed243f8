/* decl/cuda.h - include/dlpx/cuda.h for cffi (see decl/README). */

#define DLPX_CUDA_STREAM_LEGACY 1
#define DLPX_CUDA_STREAM_PER_THREAD 2
#define DLPX_CUDA_EVENT_TIMING 1
#define DLPX_CUDA_EVENT_BLOCKING_SYNC 2
#define DLPX_CUDA_EVENT_INTERPROCESS 4

int dlpx_cuda_available(void);
int dlpx_cuda_device_count(int *count);
int dlpx_cuda_driver_version(int *version);
int dlpx_cuda_device_info(int device, char *buf, size_t size, size_t *total_bytes);
int dlpx_cuda_mem_get_info(int device, size_t *free_bytes, size_t *total_bytes);
int dlpx_cuda_synchronize(int device);

int dlpx_cuda_stream_create(int device, int non_blocking, uintptr_t *out);
int dlpx_cuda_stream_destroy(int device, uintptr_t stream);
int dlpx_cuda_stream_synchronize(int device, uintptr_t stream);
int dlpx_cuda_stream_query(int device, uintptr_t stream);
int dlpx_cuda_event_create(int device, uint32_t flags, uintptr_t *out);
int dlpx_cuda_event_destroy(int device, uintptr_t event);
int dlpx_cuda_event_record(int device, uintptr_t event, uintptr_t stream);
int dlpx_cuda_stream_wait_event(int device, uintptr_t stream, uintptr_t event);
int dlpx_cuda_event_synchronize(int device, uintptr_t event);
int dlpx_cuda_event_query(int device, uintptr_t event);
int dlpx_cuda_event_elapsed(int device, uintptr_t start, uintptr_t end, float *ms);
int dlpx_cuda_stream_order(int device, uintptr_t producer, uintptr_t consumer);
uintptr_t dlpx_cuda_current_stream(int device);
int dlpx_cuda_set_current_stream(int device, uintptr_t stream);

int dlpx_cuda_storage_alloc(DLDevice device, size_t nbytes, uintptr_t stream,
                            dlpx_storage **out);
int dlpx_cuda_tensor_empty(DLDevice device, DLDataType dtype, int32_t ndim,
                           const int64_t *shape, uintptr_t stream, dlpx_tensor **out);
uintptr_t dlpx_cuda_storage_stream(const dlpx_storage *storage);
int dlpx_cuda_storage_set_stream(dlpx_storage *storage, uintptr_t stream);
int dlpx_cuda_storage_mark(dlpx_storage *storage, uintptr_t stream);
int dlpx_cuda_tensor_ready(const dlpx_tensor *tensor, uintptr_t consumer);
int dlpx_cuda_host_register(void *data, size_t nbytes, dlpx_release_fn release, void *ctx,
                            dlpx_storage **out);

typedef struct {
  int64_t allocated_bytes, allocated_bytes_peak;
  int64_t active_bytes, active_bytes_peak;
  int64_t reserved_bytes, reserved_bytes_peak;
  int64_t requested_bytes;
  int64_t allocations;
  int64_t allocation_count;
  int64_t free_count;
  int64_t segments;
  int64_t segment_alloc_count;
  int64_t segment_free_count;
  int64_t cache_flushes;
  int64_t oom_count;
  int64_t limit;
} dlpx_cuda_pool_stats;

int dlpx_cuda_pool_stats_get(DLDevice device, dlpx_cuda_pool_stats *out);
int dlpx_cuda_pool_reset_peaks(DLDevice device);
int dlpx_cuda_empty_cache(DLDevice device);
int dlpx_cuda_set_memory_limit(DLDevice device, int64_t limit);
size_t dlpx_cuda_pool_round(size_t nbytes);
int dlpx_cuda_pool_alloc(DLDevice device, size_t nbytes, uintptr_t stream, void **ptr);
int dlpx_cuda_pool_free(DLDevice device, void *ptr, uintptr_t stream);

int dlpx_cuda_memcpy(int device, void *dst, const void *src, size_t nbytes, uintptr_t stream);
int dlpx_cuda_memset(int device, void *dst, int value, size_t nbytes, uintptr_t stream);
int dlpx_cuda_tensor_copy_into(const dlpx_tensor *dst, const dlpx_tensor *src,
                               uintptr_t stream);
int dlpx_cuda_tensor_to(const dlpx_tensor *src, DLDevice device, uintptr_t stream,
                        int synchronize, dlpx_tensor **out);

typedef struct dlpx_file dlpx_file;
typedef struct {
  size_t buffer_bytes;
  uint32_t buffers;
  uint32_t threads;
} dlpx_cuda_load_options;

int dlpx_cuda_file_load(dlpx_file *file, size_t n, const size_t *indices, DLDevice device,
                        uintptr_t stream, const dlpx_cuda_load_options *options, uint32_t flags,
                        dlpx_tensor **out);

typedef struct {
  unsigned char bytes[192];
} dlpx_cuda_ipc_handle;
typedef struct dlpx_cuda_export dlpx_cuda_export;
int dlpx_cuda_ipc_export(dlpx_storage *storage, dlpx_cuda_export **out,
                         dlpx_cuda_ipc_handle *handle);
void dlpx_cuda_export_close(dlpx_cuda_export *export_);
int dlpx_cuda_ipc_collect(void);
int dlpx_cuda_export_importers(const dlpx_cuda_export *export_);
int dlpx_cuda_ipc_open(const dlpx_cuda_ipc_handle *handle, uintptr_t stream, dlpx_storage **out);
