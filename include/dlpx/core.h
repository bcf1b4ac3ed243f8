/*
 * dlpx/core.h - the core of the dlpx C API: version, errors, data types,
 * devices, storages, tensors and their views and copies, DLPack export and
 * import.  Everything here works without Python and without any device
 * runtime.
 *
 * Conventions
 *  - Functions return int: 0 on success or a negative DLPX_E* code.  Results
 *    come back through out-parameters, which are left untouched on failure
 *    unless stated otherwise.  dlpx_last_error() gives a message that says
 *    what exactly went wrong, for the calling thread.
 *  - Each function states its ownership rule: a *new* object (the caller
 *    frees it), a *borrowed* pointer (valid while the argument lives), or
 *    *takes ownership* of an argument.
 *  - Destructors (dlpx_tensor_free, dlpx_storage_release) accept NULL.
 *  - The library never aborts, exits or prints.
 */
#ifndef DLPX_CORE_H
#define DLPX_CORE_H

#include <dlpx/common.h>
#include <dlpx/version.h>
#include <dlpx/errors.h>
#include <dlpx/dtype.h>
#include <dlpx/device.h>
#include <dlpx/storage.h>
#include <dlpx/tensor.h>
#include <dlpx/exchange.h>

DLPX_BEGIN_DECLS

/* Returns the version of the loaded library as DLPX_VERSION_NUMBER encodes
 * it, so a program can check it loaded the library it was built against. */
DLPX_API int dlpx_version_number(void);

/* Returns the version string of the loaded library, e.g. "0.2.0".  The
 * string is static (borrowed, never freed). */
DLPX_API const char *dlpx_version_string(void);

DLPX_END_DECLS

#endif /* DLPX_CORE_H */
