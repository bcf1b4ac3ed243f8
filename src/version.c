/* version.c - the version of the loaded library (from configure.ac, through
 * the generated dlpx/version.h). */
#include "config.h"

#include "internal.h"

int dlpx_version_number(void) { return DLPX_VERSION_NUMBER; }

const char *dlpx_version_string(void) { return DLPX_VERSION_STRING; }
