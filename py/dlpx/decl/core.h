/* decl/core.h - include/dlpx/core.h for cffi (see decl/README). */

#define DLPX_MAX_NDIM 128
#define DLPX_DEFAULT_ALIGNMENT 64

int dlpx_version_number(void);
const char *dlpx_version_string(void);
