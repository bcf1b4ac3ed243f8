/* _cdef.h - the declarations cffi needs to call libdlpx (ABI mode).
 *
 * This is include/dlpx/dlpack.h and include/dlpx/dlpx.h in the form cffi's
 * parser reads: no preprocessor logic, no DLPX_API, integer #defines only.
 * tests/python/test_cdef.py checks that it declares exactly the functions,
 * constants and layouts of the real headers.
 *
 * Functions named dlpx_py_* marked "GIL held" must not be called through
 * cffi (which releases the GIL): dlpx calls them through ctypes.PyDLL.
 */

/* ---- dlpack.h ---- */
#define DLPACK_MAJOR_VERSION 1
#define DLPACK_MINOR_VERSION 3

typedef struct { uint32_t major; uint32_t minor; } DLPackVersion;

typedef enum {
  kDLCPU = 1, kDLCUDA = 2, kDLCUDAHost = 3, kDLOpenCL = 4, kDLVulkan = 7, kDLMetal = 8,
  kDLVPI = 9, kDLROCM = 10, kDLROCMHost = 11, kDLExtDev = 12, kDLCUDAManaged = 13,
  kDLOneAPI = 14, kDLWebGPU = 15, kDLHexagon = 16, kDLMAIA = 17, kDLTrn = 18
} DLDeviceType;

typedef struct { DLDeviceType device_type; int32_t device_id; } DLDevice;

typedef enum {
  kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLOpaqueHandle = 3, kDLBfloat = 4, kDLComplex = 5,
  kDLBool = 6, kDLFloat8_e3m4 = 7, kDLFloat8_e4m3 = 8, kDLFloat8_e4m3b11fnuz = 9,
  kDLFloat8_e4m3fn = 10, kDLFloat8_e4m3fnuz = 11, kDLFloat8_e5m2 = 12, kDLFloat8_e5m2fnuz = 13,
  kDLFloat8_e8m0fnu = 14, kDLFloat6_e2m3fn = 15, kDLFloat6_e3m2fn = 16, kDLFloat4_e2m1fn = 17
} DLDataTypeCode;

typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; } DLDataType;

typedef struct {
  void *data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t *shape;
  int64_t *strides;
  uint64_t byte_offset;
} DLTensor;

typedef struct DLManagedTensor {
  DLTensor dl_tensor;
  void *manager_ctx;
  void (*deleter)(struct DLManagedTensor *self);
} DLManagedTensor;

#define DLPACK_FLAG_BITMASK_READ_ONLY 1
#define DLPACK_FLAG_BITMASK_IS_COPIED 2
#define DLPACK_FLAG_BITMASK_IS_SUBBYTE_TYPE_PADDED 4

typedef struct DLManagedTensorVersioned {
  DLPackVersion version;
  void *manager_ctx;
  void (*deleter)(struct DLManagedTensorVersioned *self);
  uint64_t flags;
  DLTensor dl_tensor;
} DLManagedTensorVersioned;

typedef int (*DLPackManagedTensorAllocator)(
    DLTensor *prototype, DLManagedTensorVersioned **out, void *error_ctx,
    void (*SetError)(void *error_ctx, const char *kind, const char *message));
typedef int (*DLPackManagedTensorFromPyObjectNoSync)(void *py_object,
                                                     DLManagedTensorVersioned **out);
typedef int (*DLPackDLTensorFromPyObjectNoSync)(void *py_object, DLTensor *out);
typedef int (*DLPackCurrentWorkStream)(DLDeviceType device_type, int32_t device_id,
                                       void **out_current_stream);
typedef int (*DLPackManagedTensorToPyObjectNoSync)(DLManagedTensorVersioned *tensor,
                                                   void **out_py_object);

typedef struct DLPackExchangeAPIHeader {
  DLPackVersion version;
  struct DLPackExchangeAPIHeader *prev_api;
} DLPackExchangeAPIHeader;

typedef struct DLPackExchangeAPI {
  DLPackExchangeAPIHeader header;
  DLPackManagedTensorAllocator managed_tensor_allocator;
  DLPackManagedTensorFromPyObjectNoSync managed_tensor_from_py_object_no_sync;
  DLPackManagedTensorToPyObjectNoSync managed_tensor_to_py_object_no_sync;
  DLPackDLTensorFromPyObjectNoSync dltensor_from_py_object_no_sync;
  DLPackCurrentWorkStream current_work_stream;
} DLPackExchangeAPI;

/* ---- dlpx.h ---- */
#define DLPX_VERSION_MAJOR 0
#define DLPX_VERSION_MINOR 1
#define DLPX_VERSION_PATCH 0
#define DLPX_VERSION_NUMBER 100

int dlpx_version_number(void);
const char *dlpx_version_string(void);

typedef enum {
  DLPX_OK = 0, DLPX_EINVAL = -1001, DLPX_ENOMEM = -1002, DLPX_EOVERFLOW = -1003,
  DLPX_EDTYPE = -1004, DLPX_ESHAPE = -1005, DLPX_EINDEX = -1006, DLPX_EDEVICE = -1007,
  DLPX_EVERSION = -1008, DLPX_EREADONLY = -1009, DLPX_ELAYOUT = -1010, DLPX_EBOUNDS = -1011,
  DLPX_ENOTSUP = -1012, DLPX_EPYTHON = -1013, DLPX_ESTATE = -1014
} dlpx_error;

const char *dlpx_strerror(int code);
const char *dlpx_error_name(int code);
const char *dlpx_last_error(void);
int dlpx_last_error_code(void);

#define DLPX_MAX_NDIM 128
#define DLPX_DEFAULT_ALIGNMENT 64
#define DLPX_DTYPE_NAME_MAX 32

int dlpx_dtype_check(DLDataType dtype);
int dlpx_dtype_parse(const char *name, DLDataType *out);
int dlpx_dtype_format(DLDataType dtype, char *buf, size_t size);
int64_t dlpx_dtype_bits(DLDataType dtype);
int dlpx_dtype_nbytes(DLDataType dtype, int64_t count, int64_t *out);

typedef struct dlpx_storage dlpx_storage;
typedef void (*dlpx_release_fn)(void *data, void *ctx);

typedef enum {
  DLPX_STORAGE_OWNED = 1, DLPX_STORAGE_BORROWED = 2, DLPX_STORAGE_FOREIGN = 3,
  DLPX_STORAGE_FOREIGN_LEGACY = 4
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

typedef struct dlpx_tensor dlpx_tensor;

#define DLPX_TENSOR_READONLY 1
#define DLPX_TENSOR_SUBBYTE_PADDED 2

int dlpx_tensor_empty(DLDataType dtype, int32_t ndim, const int64_t *shape, dlpx_tensor **out);
int dlpx_tensor_zeros(DLDataType dtype, int32_t ndim, const int64_t *shape, dlpx_tensor **out);
int dlpx_tensor_new(DLDataType dtype, int32_t ndim, const int64_t *shape, uint32_t flags,
                    int zero, dlpx_tensor **out);
int dlpx_tensor_from_storage(dlpx_storage *storage, DLDataType dtype, int32_t ndim,
                             const int64_t *shape, const int64_t *strides, int64_t byte_offset,
                             uint32_t flags, dlpx_tensor **out);
int dlpx_tensor_wrap(void *data, DLDevice device, DLDataType dtype, int32_t ndim,
                     const int64_t *shape, const int64_t *strides, uint32_t flags,
                     dlpx_release_fn release, void *ctx, dlpx_tensor **out);
void dlpx_tensor_free(dlpx_tensor *tensor);
int dlpx_tensor_clone(const dlpx_tensor *tensor, dlpx_tensor **out);

const DLTensor *dlpx_tensor_dltensor(const dlpx_tensor *tensor);
int32_t dlpx_tensor_ndim(const dlpx_tensor *tensor);
const int64_t *dlpx_tensor_shape(const dlpx_tensor *tensor);
const int64_t *dlpx_tensor_strides(const dlpx_tensor *tensor);
DLDataType dlpx_tensor_dtype(const dlpx_tensor *tensor);
DLDevice dlpx_tensor_device(const dlpx_tensor *tensor);
int64_t dlpx_tensor_byte_offset(const dlpx_tensor *tensor);
void *dlpx_tensor_data(const dlpx_tensor *tensor);
dlpx_storage *dlpx_tensor_storage(const dlpx_tensor *tensor);
uint32_t dlpx_tensor_flags(const dlpx_tensor *tensor);
int dlpx_tensor_is_readonly(const dlpx_tensor *tensor);
int64_t dlpx_tensor_numel(const dlpx_tensor *tensor);
int64_t dlpx_tensor_nbytes(const dlpx_tensor *tensor);
int dlpx_tensor_is_c_contiguous(const dlpx_tensor *tensor);
int dlpx_tensor_is_f_contiguous(const dlpx_tensor *tensor);
void dlpx_tensor_extent(const dlpx_tensor *tensor, int64_t *lo, int64_t *hi);

#define DLPX_NONE -9223372036854775808

int dlpx_tensor_slice(const dlpx_tensor *tensor, int32_t dim, int64_t start, int64_t stop,
                      int64_t step, dlpx_tensor **out);
int dlpx_tensor_select(const dlpx_tensor *tensor, int32_t dim, int64_t index, dlpx_tensor **out);

typedef enum {
  DLPX_INDEX_INT = 0, DLPX_INDEX_SLICE = 1, DLPX_INDEX_NEWAXIS = 2, DLPX_INDEX_ELLIPSIS = 3
} dlpx_index_kind;

typedef struct { int32_t kind; int64_t start; int64_t stop; int64_t step; } dlpx_index;

int dlpx_tensor_index(const dlpx_tensor *tensor, int32_t n, const dlpx_index *items,
                      dlpx_tensor **out);
int dlpx_tensor_permute(const dlpx_tensor *tensor, int32_t n, const int32_t *axes,
                        dlpx_tensor **out);
int dlpx_tensor_transpose(const dlpx_tensor *tensor, dlpx_tensor **out);
int dlpx_tensor_reshape(const dlpx_tensor *tensor, int32_t ndim, const int64_t *shape,
                        dlpx_tensor **out);

#define DLPX_ALL_DIMS -2147483648

int dlpx_tensor_squeeze(const dlpx_tensor *tensor, int32_t dim, dlpx_tensor **out);
int dlpx_tensor_unsqueeze(const dlpx_tensor *tensor, int32_t dim, dlpx_tensor **out);
int dlpx_tensor_broadcast_to(const dlpx_tensor *tensor, int32_t ndim, const int64_t *shape,
                             dlpx_tensor **out);
int dlpx_tensor_view_as(const dlpx_tensor *tensor, DLDataType dtype, dlpx_tensor **out);
int dlpx_tensor_with_flags(const dlpx_tensor *tensor, uint32_t flags, dlpx_tensor **out);

int dlpx_tensor_copy_into(const dlpx_tensor *dst, const dlpx_tensor *src);
int dlpx_tensor_copy(const dlpx_tensor *tensor, char order, dlpx_tensor **out);
int dlpx_tensor_contiguous(const dlpx_tensor *tensor, dlpx_tensor **out);

#define DLPX_EXPORT_COPY 1

int dlpx_tensor_export(const dlpx_tensor *tensor, uint32_t flags, DLManagedTensorVersioned **out);
int dlpx_tensor_export_legacy(const dlpx_tensor *tensor, uint32_t flags, DLManagedTensor **out);

#define DLPX_IMPORT_READONLY 1
#define DLPX_IMPORT_LEGACY_READONLY 2

int dlpx_tensor_import(DLManagedTensorVersioned *managed, uint32_t flags, dlpx_tensor **out);
int dlpx_tensor_import_legacy(DLManagedTensor *managed, uint32_t flags, dlpx_tensor **out);

typedef struct {
  int64_t storages_live;
  int64_t tensors_live;
  int64_t exports_live;
  int64_t foreign_deleters_run;
  int64_t borrowed_releases_run;
  int64_t python_refs_leaked;
} dlpx_stats;

void dlpx_stats_get(dlpx_stats *out);

typedef struct {
  size_t size;
  int (*PyGILState_Ensure)(void);
  void (*PyGILState_Release)(int state);
  int (*PyGILState_Check)(void);
  int (*Py_IsFinalizing)(void);
  void (*PyErr_Fetch)(void **type, void **value, void **traceback);
  void (*PyErr_Restore)(void *type, void *value, void *traceback);
  int (*PyCapsule_IsValid)(void *capsule, const char *name);
  void *(*PyCapsule_GetPointer)(void *capsule, const char *name);
  void (*Py_IncRef)(void *obj);
  void (*Py_DecRef)(void *obj);
  void *(*PyCapsule_New)(void *pointer, const char *name, void (*destructor)(void *));
  int (*PyCapsule_SetName)(void *capsule, const char *name);
  void (*PyErr_SetString)(void *type, const char *message);
  void *(*PyErr_Occurred)(void);
  void *(*PyObject_GetAttr)(void *obj, void *name);
  int (*PyObject_SetAttr)(void *obj, void *name, void *value);
  void *(*PyLong_FromVoidPtr)(void *p);
  void *(*PyObject_CallObject)(void *callable, void *args);
  void *exc_BufferError;
  void *exc_ValueError;
  void *exc_TypeError;
  void *exc_MemoryError;
  void *exc_IndexError;
  void *exc_RuntimeError;
  void *name_cap;
  void *name_addr;
  void *tensor_factory;
  ptrdiff_t (*PyTuple_Size)(void *tuple);
  void *(*PyTuple_GetItem)(void *tuple, ptrdiff_t index);
  ptrdiff_t (*PyLong_AsSsize_t)(void *obj); /* exact ints only, on every version */
  void (*PyErr_Clear)(void);
  int (*PyUnicode_CompareWithASCIIString)(void *str, const char *ascii);
  void *(*Py_BuildValue)(const char *format, ...);
  void *(*PyObject_CallFunctionObjArgs)(void *callable, ...);
  void *obj_None;
  void *name_stream;
  void *name_max_version;
  void *name_dl_device;
  void *name_copy;
  void *dlpack_fallback;
} dlpx_pyapi;

int dlpx_py_register(const dlpx_pyapi *api);
void dlpx_py_shutdown(void);
int dlpx_py_active(void);
void dlpx_py_capsule_destructor(void *capsule);
void dlpx_py_capsule_destructor_legacy(void *capsule);
void dlpx_py_release_object(void *data, void *ctx);
const char *dlpx_py_capsule_name(int which);
int dlpx_py_bind(void *obj, dlpx_tensor *tensor);                     /* GIL held */
int dlpx_py_consume(void *obj, void *capsule, uint32_t flags);        /* GIL held */
int dlpx_py_consume_exchange(void *obj, const DLPackExchangeAPI *api, void *producer,
                             uint32_t flags);                         /* GIL held */
void *dlpx_py_export(void *owner, int versioned, uint32_t flags);     /* GIL held */
void dlpx_py_tensor_capsule_destructor(void *capsule);
const void *dlpx_py_method_defs(void);
const DLPackExchangeAPI *dlpx_py_exchange_api(void);
