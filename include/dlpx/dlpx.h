/*
 * dlpx/dlpx.h - the dlpx C API, all of it.
 *
 * dlpx describes tensors with DLPack, owns them with reference counts, and
 * exchanges them with any DLPack producer or consumer without copying.
 * This umbrella header includes one header per concern:
 *
 *   dlpx/core.h      version, errors, dtypes, devices, storage, tensors,
 *                    views, copies, DLPack export and import (the
 *                    conventions every function follows are stated there)
 *   dlpx/files.h     tensor files (safetensors): load, save, checksums
 *   dlpx/shm.h       tensors shared across processes (sealed memfds,
 *                    /dev/shm), zero copy
 *   dlpx/remote.h    tensor files and objects over HTTP(S) and S3 (libcurl,
 *                    opened at run time)
 *   dlpx/cuda.h      CUDA memory, pools, streams and copies (the Driver
 *                    API, opened at run time)
 *   dlpx/python.h    the Python bridge (used by the dlpx Python package)
 *   dlpx/stats.h     live-object counters for tests (not a stable API)
 *   dlpx/dlpack.h    the DLPack 1.3 ABI
 *
 * Build with `pkg-config --cflags --libs dlpx`.
 */
#ifndef DLPX_DLPX_H
#define DLPX_DLPX_H

#include <dlpx/core.h>
#include <dlpx/files.h>
#include <dlpx/shm.h>
#include <dlpx/remote.h>
#include <dlpx/cuda.h>
#include <dlpx/python.h>
#include <dlpx/stats.h>

#endif /* DLPX_DLPX_H */
