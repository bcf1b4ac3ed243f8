/*
 * pyapi.h - what the files of the Python bridge (src/python/) share: the
 * registered C-API table and the helpers that raise exceptions, read the
 * handle of a dlpx.Tensor and make new ones.
 *
 * Every function here that touches a Python object runs with the GIL held
 * (the callers are GIL-held entry points or CPython itself), except where a
 * comment says otherwise.
 */
#ifndef DLPX_PYTHON_PYAPI_H
#define DLPX_PYTHON_PYAPI_H

#include "../internal.h"

/* The registered API (bridge.c).  Written by dlpx_py_register, read
 * afterwards. */
extern dlpx_pyapi dlpx__py;

/* 1 once dlpx_py_register has succeeded (bridge.c). */
bool dlpx__py_registered(void);

/* Raises the Python exception of dlpx error |code| with the current
 * dlpx_last_error() text: from the DLPack column of DLPX_ERROR_MAP when
 * |dlpack|, else the general one.  Returns -1. */
int dlpx__py_raise(int code, bool dlpack);

/* Raises exception |exc| (a dlpx_py_exception) with |msg|, and records it
 * as the last dlpx error with |code|.  Returns -1. */
int dlpx__py_raise_msg(int exc, int code, const char *msg);

/* The handle of the dlpx.Tensor |obj|, read from its owner capsule; *cap
 * gets a new reference to that capsule, which keeps the handle alive until
 * the caller drops it.  NULL with TypeError set when |obj| has no valid
 * owner capsule. */
dlpx_tensor *dlpx__py_tensor_of(void *obj, void **cap);

/* A new dlpx.Tensor owning |t| (taken in every case: freed on error), or
 * NULL with an exception set.  Runs no Python code of its own. */
void *dlpx__py_new_tensor(dlpx_tensor *t);

/* A new DLPack capsule exporting |t| (see dlpx_py_tensor_export). */
void *dlpx__py_export_capsule(const dlpx_tensor *t, int versioned, uint32_t flags);

/* Rejects use before registration: records DLPX_EPYTHON and returns false
 * (no Python exception can be set without the API). */
bool dlpx__py_check_ready(void);

#endif /* DLPX_PYTHON_PYAPI_H */
