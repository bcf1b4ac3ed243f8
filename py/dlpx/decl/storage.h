/* decl/storage.h - include/dlpx/storage.h for cffi (see decl/README). */

typedef struct dlpx_storage dlpx_storage;
typedef void (*dlpx_release_fn)(void *data, void *ctx);

typedef enum {
  DLPX_STORAGE_OWNED = 1, DLPX_STORAGE_BORROWED = 2, DLPX_STORAGE_FOREIGN = 3,
  DLPX_STORAGE_FOREIGN_LEGACY = 4, DLPX_STORAGE_MAPPED = 5,
  DLPX_STORAGE_CUDA_POOL = 6, DLPX_STORAGE_CUDA_MANAGED = 7, DLPX_STORAGE_CUDA_REGISTERED = 8,
  DLPX_STORAGE_CUDA_IPC = 9
} dlpx_storage_kind;

int dlpx_storage_alloc(size_t nbytes, size_t alignment, int zero, dlpx_storage **out);
int dlpx_storage_wrap(void *data, size_t nbytes, DLDevice device, dlpx_release_fn release,
                      void *ctx, dlpx_storage **out);
void dlpx_storage_retain(dlpx_storage *storage);
void dlpx_storage_release(dlpx_storage *storage);
void *dlpx_storage_data(const dlpx_storage *storage);
size_t dlpx_storage_nbytes(const dlpx_storage *storage);
DLDevice dlpx_storage_device(const dlpx_storage *storage);
int dlpx_storage_kind_of(const dlpx_storage *storage);
int64_t dlpx_storage_refcount(const dlpx_storage *storage);
