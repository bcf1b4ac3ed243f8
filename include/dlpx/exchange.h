/*
 * dlpx/exchange.h - DLPack export (managed tensors out to any consumer) and
 * import (managed tensors in from any producer), with full validation of
 * everything that comes in.
 */
#ifndef DLPX_EXCHANGE_H
#define DLPX_EXCHANGE_H

#include <dlpx/common.h>
#include <dlpx/tensor.h>

DLPX_BEGIN_DECLS

/* Export flags. */
#define DLPX_EXPORT_COPY 1u   /* export a fresh private copy (sets IS_COPIED) */
#define DLPX_EXPORT_COPIED 2u /* the tensor is a private copy already: set IS_COPIED
                                 (versioned exports only) */

/* Exports |tensor| as a new DLManagedTensorVersioned (version 1.3) that
 * holds its own reference to the storage, so a tensor can be exported any
 * number of times at once and each deleter frees only its part.  strides
 * are always non-NULL for ndim > 0; for devices with plain addresses
 * (CPU, CUDA, CUDA host/managed, ROCm, ROCm host) the byte offset is folded
 * into data and byte_offset is 0.  flags carries READ_ONLY, IS_COPIED and
 * IS_SUBBYTE_TYPE_PADDED.  New: the receiver calls (*out)->deleter(*out)
 * exactly once, from any thread.
 * COPY of a CUDA tensor copies on its device, queued on its storage's
 * stream.
 * Returns 0, DLPX_EINVAL (NULL, unknown flags), DLPX_EDEVICE (COPY of a
 * tensor neither on the host nor on a CUDA device), DLPX_ENOMEM, and the
 * errors of dlpx_cuda_tensor_to for CUDA tensors. */
DLPX_API int dlpx_tensor_export(const dlpx_tensor *tensor, uint32_t flags,
                                DLManagedTensorVersioned **out);

/* Exports |tensor| as a legacy DLManagedTensor for consumers older than
 * DLPack 1.0.  A legacy tensor cannot say it is read-only, so a read-only
 * tensor is refused (DLPX_EREADONLY) unless DLPX_EXPORT_COPY is given, which
 * exports a writable private copy, or the tensor is read-only only because
 * it came in a legacy DLManagedTensor itself (DLPX_TENSOR_LEGACY_READONLY):
 * handing that memory on the way it came loses nothing.  Nor can a legacy
 * tensor say its sub-byte elements are padded, so padded tensors are always
 * refused (DLPX_ENOTSUP).  New, as dlpx_tensor_export.
 * Returns 0, DLPX_EINVAL, DLPX_EREADONLY, DLPX_ENOTSUP, DLPX_EDEVICE,
 * DLPX_ENOMEM. */
DLPX_API int dlpx_tensor_export_legacy(const dlpx_tensor *tensor, uint32_t flags,
                                       DLManagedTensor **out);

/* Import flags. */
#define DLPX_IMPORT_READONLY 1u /* make the tensor read-only whatever the flags say */
/* make legacy tensors read-only (DLPX_TENSOR_READONLY |
 * DLPX_TENSOR_LEGACY_READONLY): they cannot say whether their data may be
 * written (JAX's are immutable); versioned tensors keep their own flag */
#define DLPX_IMPORT_LEGACY_READONLY 2u

/* Imports a versioned managed tensor from any producer.  Takes ownership of
 * |managed| in every case (except NULL): on success its deleter runs exactly
 * once, when the last view of the resulting tensor goes; on failure it has
 * run exactly once before the call returns.  Validates, in this order:
 * major version 1 (any minor); ndim in [0, DLPX_MAX_NDIM]; shape non-NULL
 * with ndim > 0 and no negative extent; dtype known with lanes 1; a known
 * device type and device_id >= 0; data non-NULL when there are elements;
 * byte size and byte extent within int64; byte_offset within int64.  NULL
 * strides mean C-contiguous; byte_offset is honoured; READ_ONLY and
 * IS_SUBBYTE_TYPE_PADDED flags are kept.  New.
 * When the tensor is refused, the detail message (dlpx_last_error) and code
 * are those of the refusal, even if the producer's deleter calls dlpx.
 * Returns 0, DLPX_EINVAL (NULL pointers, NULL data with elements),
 * DLPX_EVERSION, DLPX_ESHAPE, DLPX_EDTYPE, DLPX_EDEVICE, DLPX_EOVERFLOW,
 * DLPX_ENOMEM. */
DLPX_API int dlpx_tensor_import(DLManagedTensorVersioned *managed, uint32_t flags,
                                dlpx_tensor **out);

/* Imports a legacy managed tensor; the same rules as dlpx_tensor_import
 * except the version check.  Takes ownership of |managed|. */
DLPX_API int dlpx_tensor_import_legacy(DLManagedTensor *managed, uint32_t flags,
                                       dlpx_tensor **out);

DLPX_END_DECLS

#endif /* DLPX_EXCHANGE_H */
