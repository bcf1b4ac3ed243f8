/*
 * driver.h - the part of the CUDA Driver API that dlpx uses, declared by
 * dlpx (libdlpx neither includes cuda.h nor links libcuda), and the table
 * of entry points that loader.c fills from libcuda.so.1 at run time.
 *
 * The layouts and values below are the Driver API's (cuda.h of CUDA 12),
 * which NVIDIA keeps stable across drivers.  tests/fakecuda.c, the test
 * double of the driver, implements the same entry points over host memory.
 */
#ifndef DLPX_CUDA_DRIVER_H
#define DLPX_CUDA_DRIVER_H

#include <stddef.h>
#include <stdint.h>

/* ---- types ------------------------------------------------------------------- */

typedef int CUresult;
typedef int CUdevice;
typedef uintptr_t CUdeviceptr; /* unsigned long long on 64-bit Linux */
typedef struct CUctx_st *CUcontext;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef struct CUarray_st *CUarray;
typedef void (*CUhostFn)(void *userData);

typedef struct {
  char reserved[64];
} CUipcMemHandle;
typedef struct {
  char reserved[64];
} CUipcEventHandle;

/* cuMemcpy2D / cuMemcpy3D descriptors (CUDA_MEMCPY2D_v2, CUDA_MEMCPY3D_v2). */
typedef struct {
  size_t srcXInBytes, srcY;
  int srcMemoryType;
  const void *srcHost;
  CUdeviceptr srcDevice;
  CUarray srcArray;
  size_t srcPitch;
  size_t dstXInBytes, dstY;
  int dstMemoryType;
  void *dstHost;
  CUdeviceptr dstDevice;
  CUarray dstArray;
  size_t dstPitch;
  size_t WidthInBytes, Height;
} CUDA_MEMCPY2D;

typedef struct {
  size_t srcXInBytes, srcY, srcZ, srcLOD;
  int srcMemoryType;
  const void *srcHost;
  CUdeviceptr srcDevice;
  CUarray srcArray;
  void *reserved0;
  size_t srcPitch, srcHeight;
  size_t dstXInBytes, dstY, dstZ, dstLOD;
  int dstMemoryType;
  void *dstHost;
  CUdeviceptr dstDevice;
  CUarray dstArray;
  void *reserved1;
  size_t dstPitch, dstHeight;
  size_t WidthInBytes, Height, Depth;
} CUDA_MEMCPY3D;

/* ---- values ------------------------------------------------------------------- */

enum {
  CUDA_SUCCESS = 0,
  CUDA_ERROR_INVALID_VALUE = 1,
  CUDA_ERROR_OUT_OF_MEMORY = 2,
  CUDA_ERROR_NOT_INITIALIZED = 3,
  CUDA_ERROR_DEINITIALIZED = 4,
  CUDA_ERROR_STUB_LIBRARY = 34,
  CUDA_ERROR_NO_DEVICE = 100,
  CUDA_ERROR_INVALID_DEVICE = 101,
  CUDA_ERROR_INVALID_CONTEXT = 201,
  CUDA_ERROR_ALREADY_MAPPED = 208,
  CUDA_ERROR_INVALID_HANDLE = 400,
  CUDA_ERROR_NOT_FOUND = 500,
  CUDA_ERROR_NOT_READY = 600,
  CUDA_ERROR_ILLEGAL_ADDRESS = 700,
  CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED = 712,
  CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED = 713,
  CUDA_ERROR_NOT_SUPPORTED = 801,
  CUDA_ERROR_UNKNOWN = 999
};

#define CU_STREAM_LEGACY ((CUstream)0x1)
#define CU_STREAM_PER_THREAD ((CUstream)0x2)
#define CU_STREAM_NON_BLOCKING 0x1u

#define CU_EVENT_DEFAULT 0x0u
#define CU_EVENT_BLOCKING_SYNC 0x1u
#define CU_EVENT_DISABLE_TIMING 0x2u
#define CU_EVENT_INTERPROCESS 0x4u

#define CU_MEMHOSTALLOC_PORTABLE 0x1u
#define CU_MEMHOSTREGISTER_PORTABLE 0x1u
#define CU_MEM_ATTACH_GLOBAL 0x1u
#define CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS 0x1u

#define CU_MEMORYTYPE_HOST 1
#define CU_MEMORYTYPE_DEVICE 2
#define CU_MEMORYTYPE_UNIFIED 4

#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR 75
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR 76
#define CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING 41

#define CU_POINTER_ATTRIBUTE_MEMORY_TYPE 2
#define CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL 9

#define CU_GET_PROC_ADDRESS_DEFAULT 0
/* The Driver API version whose entry points dlpx asks cuGetProcAddress for. */
#define DLPX__CUDA_API_VERSION 12000

/* ---- entry points -------------------------------------------------------------
 *
 * X(field, name, versioned name, return, parameters): |name| is what
 * cuGetProcAddress is asked for, |versioned name| the symbol dlsym falls
 * back to on drivers without cuGetProcAddress.  Every entry is required. */
#define DLPX__CU_ENTRIES(X)                                                                     \
  X(Init, "cuInit", "cuInit", (unsigned int flags))                                           \
  X(DriverGetVersion, "cuDriverGetVersion", "cuDriverGetVersion", (int *version))              \
  X(GetErrorName, "cuGetErrorName", "cuGetErrorName", (CUresult e, const char **s))            \
  X(GetErrorString, "cuGetErrorString", "cuGetErrorString", (CUresult e, const char **s))      \
  X(DeviceGetCount, "cuDeviceGetCount", "cuDeviceGetCount", (int *count))                      \
  X(DeviceGet, "cuDeviceGet", "cuDeviceGet", (CUdevice * dev, int ordinal))                    \
  X(DeviceGetName, "cuDeviceGetName", "cuDeviceGetName", (char *name, int len, CUdevice dev))  \
  X(DeviceGetAttribute, "cuDeviceGetAttribute", "cuDeviceGetAttribute",                        \
    (int *value, int attrib, CUdevice dev))                                                    \
  X(DeviceTotalMem, "cuDeviceTotalMem", "cuDeviceTotalMem_v2", (size_t * bytes, CUdevice dev)) \
  X(DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", "cuDevicePrimaryCtxRetain",            \
    (CUcontext * ctx, CUdevice dev))                                                           \
  X(CtxPushCurrent, "cuCtxPushCurrent", "cuCtxPushCurrent_v2", (CUcontext ctx))                \
  X(CtxPopCurrent, "cuCtxPopCurrent", "cuCtxPopCurrent_v2", (CUcontext * ctx))                 \
  X(CtxSynchronize, "cuCtxSynchronize", "cuCtxSynchronize", (void))                            \
  X(MemGetInfo, "cuMemGetInfo", "cuMemGetInfo_v2", (size_t * free_bytes, size_t * total))      \
  X(MemAlloc, "cuMemAlloc", "cuMemAlloc_v2", (CUdeviceptr * ptr, size_t bytes))                \
  X(MemFree, "cuMemFree", "cuMemFree_v2", (CUdeviceptr ptr))                                   \
  X(MemAllocManaged, "cuMemAllocManaged", "cuMemAllocManaged",                                 \
    (CUdeviceptr * ptr, size_t bytes, unsigned int flags))                                     \
  X(MemHostAlloc, "cuMemHostAlloc", "cuMemHostAlloc",                                          \
    (void **ptr, size_t bytes, unsigned int flags))                                            \
  X(MemFreeHost, "cuMemFreeHost", "cuMemFreeHost", (void *ptr))                                \
  X(MemHostRegister, "cuMemHostRegister", "cuMemHostRegister_v2",                              \
    (void *ptr, size_t bytes, unsigned int flags))                                             \
  X(MemHostUnregister, "cuMemHostUnregister", "cuMemHostUnregister", (void *ptr))              \
  X(MemGetAddressRange, "cuMemGetAddressRange", "cuMemGetAddressRange_v2",                     \
    (CUdeviceptr * base, size_t * size, CUdeviceptr ptr))                                      \
  X(MemcpyAsync, "cuMemcpyAsync", "cuMemcpyAsync",                                             \
    (CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream stream))                         \
  X(Memcpy2DAsync, "cuMemcpy2DAsync", "cuMemcpy2DAsync_v2",                                    \
    (const CUDA_MEMCPY2D *copy, CUstream stream))                                              \
  X(Memcpy3DAsync, "cuMemcpy3DAsync", "cuMemcpy3DAsync_v2",                                    \
    (const CUDA_MEMCPY3D *copy, CUstream stream))                                              \
  X(MemsetD8Async, "cuMemsetD8Async", "cuMemsetD8Async",                                       \
    (CUdeviceptr dst, unsigned char value, size_t n, CUstream stream))                         \
  X(PointerGetAttribute, "cuPointerGetAttribute", "cuPointerGetAttribute",                     \
    (void *data, int attribute, CUdeviceptr ptr))                                              \
  X(StreamCreate, "cuStreamCreate", "cuStreamCreate", (CUstream * stream, unsigned int flags)) \
  X(StreamDestroy, "cuStreamDestroy", "cuStreamDestroy_v2", (CUstream stream))                 \
  X(StreamSynchronize, "cuStreamSynchronize", "cuStreamSynchronize", (CUstream stream))        \
  X(StreamQuery, "cuStreamQuery", "cuStreamQuery", (CUstream stream))                          \
  X(StreamWaitEvent, "cuStreamWaitEvent", "cuStreamWaitEvent",                                 \
    (CUstream stream, CUevent event, unsigned int flags))                                      \
  X(EventCreate, "cuEventCreate", "cuEventCreate", (CUevent * event, unsigned int flags))      \
  X(EventDestroy, "cuEventDestroy", "cuEventDestroy_v2", (CUevent event))                      \
  X(EventRecord, "cuEventRecord", "cuEventRecord", (CUevent event, CUstream stream))           \
  X(EventSynchronize, "cuEventSynchronize", "cuEventSynchronize", (CUevent event))             \
  X(EventQuery, "cuEventQuery", "cuEventQuery", (CUevent event))                               \
  X(EventElapsedTime, "cuEventElapsedTime", "cuEventElapsedTime",                              \
    (float *ms, CUevent start, CUevent end))                                                   \
  X(IpcGetMemHandle, "cuIpcGetMemHandle", "cuIpcGetMemHandle",                                 \
    (CUipcMemHandle * handle, CUdeviceptr ptr))                                                \
  X(IpcOpenMemHandle, "cuIpcOpenMemHandle", "cuIpcOpenMemHandle_v2",                           \
    (CUdeviceptr * ptr, CUipcMemHandle handle, unsigned int flags))                            \
  X(IpcCloseMemHandle, "cuIpcCloseMemHandle", "cuIpcCloseMemHandle", (CUdeviceptr ptr))        \
  X(IpcGetEventHandle, "cuIpcGetEventHandle", "cuIpcGetEventHandle",                           \
    (CUipcEventHandle * handle, CUevent event))                                                \
  X(IpcOpenEventHandle, "cuIpcOpenEventHandle", "cuIpcOpenEventHandle",                        \
    (CUevent * event, CUipcEventHandle handle))

#define DLPX__CU_FIELD(field, name, vname, params) CUresult (*field) params;

/* The entry points, resolved once (loader.c). */
typedef struct {
  DLPX__CU_ENTRIES(DLPX__CU_FIELD)
} dlpx__cu_api;

#endif /* DLPX_CUDA_DRIVER_H */
