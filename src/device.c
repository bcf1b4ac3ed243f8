/* device.c - the one table of DLPack device types dlpx knows, and device
 * checks. */
#include "config.h"

#include "internal.h"

#define A DLPX_DEVICE_ADDRESSABLE
#define H DLPX_DEVICE_HOST

static const dlpx_device_info devices[] = {
    {kDLCPU, "cpu", A | H},
    {kDLCUDA, "cuda", A},
    {kDLCUDAHost, "cuda_host", A | H},
    {kDLOpenCL, "opencl", 0},
    {kDLVulkan, "vulkan", 0},
    {kDLMetal, "metal", 0},
    {kDLVPI, "vpi", 0},
    {kDLROCM, "rocm", A},
    {kDLROCMHost, "rocm_host", A | H},
    {kDLExtDev, "ext_dev", 0},
    {kDLCUDAManaged, "cuda_managed", A},
    {kDLOneAPI, "oneapi", 0},
    {kDLWebGPU, "webgpu", 0},
    {kDLHexagon, "hexagon", 0},
    {kDLMAIA, "maia", 0},
    {kDLTrn, "trn", 0},
};

#undef A
#undef H

const dlpx_device_info *dlpx_device_table(size_t *count) {
  if (count) *count = DLPX__COUNT(devices);
  return devices;
}

static const dlpx_device_info *find(int32_t type) {
  for (size_t i = 0; i < DLPX__COUNT(devices); i++)
    if (devices[i].device_type == type) return &devices[i];
  return NULL;
}

bool dlpx__device_addressable(int32_t type) {
  const dlpx_device_info *d = find(type);
  return d && (d->flags & DLPX_DEVICE_ADDRESSABLE);
}

bool dlpx__device_host(int32_t type) {
  const dlpx_device_info *d = find(type);
  return d && (d->flags & DLPX_DEVICE_HOST);
}

int dlpx_device_check(DLDevice device) {
  if (!find((int32_t)device.device_type))
    return dlpx__fail(DLPX_EDEVICE, "unknown device type %d", (int)device.device_type);
  if (device.device_id < 0)
    return dlpx__fail(DLPX_EDEVICE, "negative device id %d", (int)device.device_id);
  return 0;
}
