/*
 * dlpx/device.h - DLPack devices: the table of known device types and the
 * check every device a tensor names goes through.
 */
#ifndef DLPX_DEVICE_H
#define DLPX_DEVICE_H

#include <dlpx/common.h>

DLPX_BEGIN_DECLS

/* What dlpx knows of a device type. */
#define DLPX_DEVICE_ADDRESSABLE 1u /* data pointers are plain addresses (offsets fold in) */
#define DLPX_DEVICE_HOST 2u        /* the CPU can read and write the memory directly */

/* One known device type, as dlpx_device_table() gives it. */
typedef struct {
  int32_t device_type; /* a DLDeviceType */
  const char *name;    /* "cpu", "cuda", "cuda_host", ...; static */
  uint32_t flags;      /* DLPX_DEVICE_* */
} dlpx_device_info;

/* The device types of DLPack that dlpx knows, in DLDeviceType order.
 * Writes the number of entries to *count when count is not NULL.
 * Borrowed: static. */
DLPX_API const dlpx_device_info *dlpx_device_table(size_t *count);

/* Checks |device|: a known device type and device_id >= 0.
 * Returns 0 or DLPX_EDEVICE. */
DLPX_API int dlpx_device_check(DLDevice device);

DLPX_END_DECLS

#endif /* DLPX_DEVICE_H */
