/*
 * dlpx/dlpack.h - the DLPack ABI as dlpx declares it.
 *
 * Written for dlpx.  Every struct, enum value and flag here has exactly the
 * size, offset and value that DLPack 1.3 gives it, so a pointer to any of
 * these types can be passed to or received from any other DLPack
 * implementation.  tests/test_abi.c checks the layout against Debian's
 * dlpack.h where the two overlap and against the x86-64 numbers below.
 *
 * If another dlpack.h was included first (its include guard DLPACK_DLPACK_H_
 * is defined) this header declares nothing: the types are the same.
 *
 * x86-64 layout:
 *   DLTensor                  48 bytes: data 0, device 8, ndim 16, dtype 20,
 *                                       shape 24, strides 32, byte_offset 40
 *   DLManagedTensor           64 bytes: dl_tensor 0, manager_ctx 48, deleter 56
 *   DLManagedTensorVersioned  80 bytes: version 0, manager_ctx 8, deleter 16,
 *                                       flags 24, dl_tensor 32
 */
#ifndef DLPX_DLPACK_H
#define DLPX_DLPACK_H

#include <stddef.h>
#include <stdint.h>

#ifndef DLPACK_DLPACK_H_
#define DLPACK_DLPACK_H_

/* The DLPack version whose ABI this header describes. */
#define DLPACK_MAJOR_VERSION 1
#define DLPACK_MINOR_VERSION 3

#ifdef __cplusplus
extern "C" {
#endif

/* A DLPack version.  Consumers must not read past the flags field of a
 * DLManagedTensorVersioned whose major version differs from theirs; they may
 * only call its deleter. */
typedef struct {
  uint32_t major;
  uint32_t minor;
} DLPackVersion;

/* Where the memory lives. */
#ifdef __cplusplus
typedef enum : int32_t {
#else
typedef enum {
#endif
  kDLCPU = 1,          /* host memory */
  kDLCUDA = 2,         /* CUDA device memory */
  kDLCUDAHost = 3,     /* page-locked host memory (cudaMallocHost) */
  kDLOpenCL = 4,       /* OpenCL buffer (data is a cl_mem handle) */
  kDLVulkan = 7,       /* Vulkan buffer */
  kDLMetal = 8,        /* Metal buffer */
  kDLVPI = 9,          /* Verilog simulator buffer */
  kDLROCM = 10,        /* ROCm/HIP device memory */
  kDLROCMHost = 11,    /* page-locked host memory (hipMallocHost) */
  kDLExtDev = 12,      /* reserved for extension devices */
  kDLCUDAManaged = 13, /* CUDA managed memory (cudaMallocManaged) */
  kDLOneAPI = 14,      /* oneAPI unified shared memory */
  kDLWebGPU = 15,      /* WebGPU buffer */
  kDLHexagon = 16,     /* Qualcomm Hexagon DSP */
  kDLMAIA = 17,        /* Microsoft MAIA */
  kDLTrn = 18          /* AWS Trainium */
} DLDeviceType;

/* A device: its type and index (0 for host, pinned and managed memory). */
typedef struct {
  DLDeviceType device_type;
  int32_t device_id;
} DLDevice;

/* Type codes of DLDataType.code. */
typedef enum {
  kDLInt = 0U,                 /* signed two's complement integer */
  kDLUInt = 1U,                /* unsigned integer */
  kDLFloat = 2U,               /* IEEE 754 binary floating point */
  kDLOpaqueHandle = 3U,        /* opaque handle, for testing only */
  kDLBfloat = 4U,              /* bfloat16 */
  kDLComplex = 5U,             /* complex: real then imaginary part; bits count both */
  kDLBool = 6U,                /* boolean, one byte per element */
  kDLFloat8_e3m4 = 7U,         /* 8-bit floats (bits 8) */
  kDLFloat8_e4m3 = 8U,
  kDLFloat8_e4m3b11fnuz = 9U,
  kDLFloat8_e4m3fn = 10U,
  kDLFloat8_e4m3fnuz = 11U,
  kDLFloat8_e5m2 = 12U,
  kDLFloat8_e5m2fnuz = 13U,
  kDLFloat8_e8m0fnu = 14U,
  kDLFloat6_e2m3fn = 15U,      /* 6-bit floats (bits 6), packed unless flagged padded */
  kDLFloat6_e3m2fn = 16U,
  kDLFloat4_e2m1fn = 17U       /* 4-bit float (bits 4), packed unless flagged padded */
} DLDataTypeCode;

/* An element type: code (a DLDataTypeCode), bits per lane, lanes.
 * Packed sub-byte data is little bit-endian: element i of a packed buffer D
 * is (D >> (i * bits)) & ((1 << bits) - 1). */
typedef struct {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
} DLDataType;

/* A tensor description that owns nothing.
 * Element (i0, i1, ...) lives at (char *)data + byte_offset +
 * (i0 * strides[0] + i1 * strides[1] + ...) * itemsize.
 * strides count elements, not bytes; since DLPack 1.2 they must be non-NULL
 * when ndim != 0 (older producers send NULL for row-major data).  shape and
 * strides may be NULL when ndim == 0; data may be NULL when the tensor has no
 * elements. */
typedef struct {
  void *data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t *shape;
  int64_t *strides;
  uint64_t byte_offset;
} DLTensor;

/* The legacy (pre-1.0, capsule name "dltensor") managed tensor.  Whoever
 * receives it calls deleter(self) exactly once when done (deleter may be
 * NULL); the deleter frees self as well. */
typedef struct DLManagedTensor {
  DLTensor dl_tensor;
  void *manager_ctx;
  void (*deleter)(struct DLManagedTensor *self);
} DLManagedTensor;

/* Bits of DLManagedTensorVersioned.flags. */
#define DLPACK_FLAG_BITMASK_READ_ONLY (1UL << 0UL)              /* consumer must not write */
#define DLPACK_FLAG_BITMASK_IS_COPIED (1UL << 1UL)              /* producer made a private copy */
#define DLPACK_FLAG_BITMASK_IS_SUBBYTE_TYPE_PADDED (1UL << 2UL) /* sub-byte elements take a byte each */

/* The versioned (DLPack >= 1.0, capsule name "dltensor_versioned") managed
 * tensor.  Everything up to and including flags keeps its place in every
 * future major version. */
typedef struct DLManagedTensorVersioned {
  DLPackVersion version;
  void *manager_ctx;
  void (*deleter)(struct DLManagedTensorVersioned *self);
  uint64_t flags;
  DLTensor dl_tensor;
} DLManagedTensorVersioned;

/* ---- The C exchange API (DLPack 1.3, `__dlpack_c_exchange_api__`) ----
 * A producer type carries a PyCapsule named "dlpack_exchange_api" whose
 * pointer is a DLPackExchangeAPI* that lives for the whole process.  Python
 * objects are passed as void* (PyObject*); every function is called with the
 * GIL held and reports failure by returning non-zero with a Python exception
 * set (the allocator reports through SetError instead). */

/* Allocates a new tensor like prototype (dtype, ndim, shape, device). */
typedef int (*DLPackManagedTensorAllocator)(
    DLTensor *prototype, DLManagedTensorVersioned **out, void *error_ctx,
    void (*SetError)(void *error_ctx, const char *kind, const char *message));

/* Exports py_object as a new owning managed tensor, with no stream sync. */
typedef int (*DLPackManagedTensorFromPyObjectNoSync)(void *py_object,
                                                     DLManagedTensorVersioned **out);

/* Describes py_object in *out without transferring ownership; valid only
 * until control returns to Python. */
typedef int (*DLPackDLTensorFromPyObjectNoSync)(void *py_object, DLTensor *out);

/* The producer's current work stream on a device (NULL on CPU). */
typedef int (*DLPackCurrentWorkStream)(DLDeviceType device_type, int32_t device_id,
                                       void **out_current_stream);

/* Wraps an owning managed tensor (stolen) into a new producer object. */
typedef int (*DLPackManagedTensorToPyObjectNoSync)(DLManagedTensorVersioned *tensor,
                                                   void **out_py_object);

/* The part of the table that stays fixed across versions. */
typedef struct DLPackExchangeAPIHeader {
  DLPackVersion version;
  struct DLPackExchangeAPIHeader *prev_api; /* an older table, or NULL */
} DLPackExchangeAPIHeader;

/* The function table. */
typedef struct DLPackExchangeAPI {
  DLPackExchangeAPIHeader header;
  DLPackManagedTensorAllocator managed_tensor_allocator;                     /* never NULL */
  DLPackManagedTensorFromPyObjectNoSync managed_tensor_from_py_object_no_sync; /* never NULL */
  DLPackManagedTensorToPyObjectNoSync managed_tensor_to_py_object_no_sync;   /* never NULL */
  DLPackDLTensorFromPyObjectNoSync dltensor_from_py_object_no_sync;         /* may be NULL */
  DLPackCurrentWorkStream current_work_stream;                               /* never NULL */
} DLPackExchangeAPI;

#ifdef __cplusplus
}
#endif

#endif /* DLPACK_DLPACK_H_ */
#endif /* DLPX_DLPACK_H */
