/*
 * dlpx/common.h - what every dlpx header needs: the export macro, C linkage
 * and the library-wide limits.  Included by each header of the API.
 */
#ifndef DLPX_COMMON_H
#define DLPX_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include <dlpx/dlpack.h>

/* Marks a function of the public API.  Only these leave libdlpx.so (the
 * library is built with -fvisibility=hidden); the macro is empty for users. */
#if defined(DLPX_BUILDING) && defined(__GNUC__)
#define DLPX_API __attribute__((visibility("default")))
#else
#define DLPX_API
#endif

#ifdef __cplusplus
#define DLPX_BEGIN_DECLS extern "C" {
#define DLPX_END_DECLS }
#else
#define DLPX_BEGIN_DECLS
#define DLPX_END_DECLS
#endif

/* The largest ndim dlpx accepts. */
#define DLPX_MAX_NDIM 128

/* The default (and smallest) alignment of owned allocations, in bytes. */
#define DLPX_DEFAULT_ALIGNMENT 64

#endif /* DLPX_COMMON_H */
