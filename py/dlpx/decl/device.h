/* decl/device.h - include/dlpx/device.h for cffi (see decl/README). */

#define DLPX_DEVICE_ADDRESSABLE 1
#define DLPX_DEVICE_HOST 2

typedef struct {
  int32_t device_type;
  const char *name;
  uint32_t flags;
} dlpx_device_info;

const dlpx_device_info *dlpx_device_table(size_t *count);
int dlpx_device_check(DLDevice device);
