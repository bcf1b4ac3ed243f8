/*
 * dlpx/python.h - the Python bridge: the C side of the dlpx Python package,
 * with no Python at build or link time.
 *
 * The Python layer registers the CPython C-API functions and objects the
 * bridge needs (their addresses, from ctypes) once at import.  With them
 * libdlpx implements what must not be Python: PyCapsule destructors, the
 * release of memory owned by Python objects (from any thread, with or
 * without the GIL, also during interpreter shutdown), the C methods
 * __dlpack__ and __dlpack_device__ of dlpx.Tensor, the DLPack C exchange
 * API table, and every operation that makes a dlpx.Tensor.
 *
 * Ownership rule of the Python layer: Python code never holds a raw
 * dlpx_tensor pointer.  A dlpx.Tensor owns its handle through a capsule
 * named DLPX_CAPSULE_OWNER in its _cap attribute; the functions below take
 * and return Tensor objects, read the handle from _cap while holding a
 * reference to that capsule, and make each new Tensor in one call that
 * runs no Python code, so no Python operation (deleting or replacing an
 * attribute, an exception raised asynchronously by a signal handler) can
 * free a handle in use or lose one.
 *
 * PyObject * is void * here.  Only the main interpreter may register:
 * libdlpx is shared by the whole process and the objects it holds belong to
 * one interpreter.
 */
#ifndef DLPX_PYTHON_H
#define DLPX_PYTHON_H

#include <dlpx/common.h>
#include <dlpx/tensor.h>

DLPX_BEGIN_DECLS

/* ---- capsule names ------------------------------------------------------- */

#define DLPX_CAPSULE_LEGACY "dltensor"
#define DLPX_CAPSULE_VERSIONED "dltensor_versioned"
#define DLPX_CAPSULE_USED_LEGACY "used_dltensor"
#define DLPX_CAPSULE_USED_VERSIONED "used_dltensor_versioned"
#define DLPX_CAPSULE_EXCHANGE_API "dlpack_exchange_api"
#define DLPX_CAPSULE_OWNER "dlpx.tensor" /* the capsule that owns a Tensor's handle */

/* The capsule names as dlpx_py_capsule_name() indexes them. */
typedef enum {
  DLPX_PY_CAPSULE_LEGACY = 0,
  DLPX_PY_CAPSULE_VERSIONED = 1,
  DLPX_PY_CAPSULE_USED_LEGACY = 2,
  DLPX_PY_CAPSULE_USED_VERSIONED = 3,
  DLPX_PY_CAPSULE_EXCHANGE_API = 4,
  DLPX_PY_CAPSULE_OWNER = 5
} dlpx_py_capsule;

/* The static string of a capsule name (a dlpx_py_capsule), for capsules
 * made outside libdlpx, whose name must outlive them; NULL for other
 * values.  Borrowed: static. */
DLPX_API const char *dlpx_py_capsule_name(int which);

/* ---- registration -------------------------------------------------------- */

/* The Python exceptions the bridge raises, registered by name: the
 * exception columns of DLPX_ERROR_MAP must name entries of this list. */
#define DLPX_PY_EXCEPTION_MAP(X) \
  X(BufferError) X(ValueError) X(TypeError) X(MemoryError) X(IndexError) X(RuntimeError) \
  X(OSError) X(KeyError) X(FileNotFoundError) X(PermissionError) X(TimeoutError)

#define DLPX__PY_EXC_ENUM(name) DLPX_PY_EXC_##name,
/* Indexes of dlpx_pyapi.exceptions. */
typedef enum { DLPX_PY_EXCEPTION_MAP(DLPX__PY_EXC_ENUM) DLPX_PY_EXCEPTION_COUNT } dlpx_py_exception;

/* The name of exception |index| of dlpx_pyapi.exceptions ("BufferError"),
 * or NULL past the end.  Borrowed: static. */
DLPX_API const char *dlpx_py_exception_name(int index);

/* The CPython C-API functions and objects the bridge uses.  |size| must be
 * sizeof(dlpx_pyapi) of the caller's header, so the struct can grow at its
 * end.  Every function pointer except Py_IsFinalizing must be non-NULL, and
 * every object must stay alive for the life of the process (the Python
 * layer keeps one reference to each forever). */
typedef struct {
  size_t size;
  /* deleter and destructor paths (any thread, GIL or not) */
  int (*PyGILState_Ensure)(void); /* returns a PyGILState_STATE */
  void (*PyGILState_Release)(int state);
  int (*PyGILState_Check)(void);
  int (*Py_IsFinalizing)(void); /* may be NULL */
  void (*PyErr_Fetch)(void **type, void **value, void **traceback);
  void (*PyErr_Restore)(void *type, void *value, void *traceback);
  int (*PyCapsule_IsValid)(void *capsule, const char *name);
  void *(*PyCapsule_GetPointer)(void *capsule, const char *name);
  void (*Py_IncRef)(void *obj);
  void (*Py_DecRef)(void *obj);
  /* which interpreter registers */
  void *(*PyInterpreterState_Get)(void);
  void *(*PyInterpreterState_Main)(void);
  /* GIL-held functions */
  void *(*PyCapsule_New)(void *pointer, const char *name, void (*destructor)(void *));
  int (*PyCapsule_SetName)(void *capsule, const char *name);
  void (*PyErr_SetString)(void *type, const char *message);
  void *(*PyErr_Occurred)(void);
  void (*PyErr_Clear)(void);
  void *(*PyErr_Format)(void *exc, const char *format, ...);
  void *(*PyObject_GetAttr)(void *obj, void *name);
  int (*PyObject_SetAttr)(void *obj, void *name, void *value);
  void *(*PyObject_CallFunctionObjArgs)(void *callable, ...);
  void *(*PyObject_Type)(void *obj);
  int (*PyObject_IsInstance)(void *obj, void *cls);
  void *(*PyType_GenericNew)(void *type, void *args, void *kwds);
  void *(*Py_BuildValue)(const char *format, ...);
  void *(*PyLong_FromVoidPtr)(void *p);
  void *(*PyLong_FromLongLong)(long long v);
  long long (*PyLong_AsLongLong)(void *obj);
  ptrdiff_t (*PyLong_AsSsize_t)(void *obj); /* exact ints only, on every version */
  void *(*PyNumber_Index)(void *obj);
  void *(*PyTuple_New)(ptrdiff_t size);
  ptrdiff_t (*PyTuple_Size)(void *tuple);
  void *(*PyTuple_GetItem)(void *tuple, ptrdiff_t index);
  int (*PyTuple_SetItem)(void *tuple, ptrdiff_t index, void *item); /* steals item */
  int (*PySlice_Unpack)(void *slice, ptrdiff_t *start, ptrdiff_t *stop, ptrdiff_t *step);
  int (*PyUnicode_CompareWithASCIIString)(void *str, const char *ascii);
  void *(*PyEval_SaveThread)(void);
  void (*PyEval_RestoreThread)(void *tstate);
  int (*PyObject_GetBuffer)(void *obj, void *view, int flags); /* view: a Py_buffer */
  void (*PyBuffer_Release)(void *view);
  /* objects */
  void *exceptions[DLPX_PY_EXCEPTION_COUNT]; /* by dlpx_py_exception */
  void *obj_None;
  void *obj_Ellipsis;
  void *obj_True;
  void *obj_False;
  void *type_tuple;       /* tuple */
  void *type_slice;       /* slice */
  void *tensor_type;      /* dlpx.Tensor: instances made with PyType_GenericNew */
  void *name_cap;         /* interned "_cap": the owner capsule attribute */
  void *name_stream;      /* interned keyword names of __dlpack__ */
  void *name_max_version;
  void *name_dl_device;
  void *name_copy;
  void *dlpack_fallback;  /* f(self, stream, max_version, dl_device, copy): the
                             __dlpack__ calls the C method hands to Python */
} dlpx_pyapi;

/* Registers the C-API (copied; a later registration by the same interpreter
 * replaces it) and clears the shutdown mark.  Refused when called from an
 * interpreter other than the main one, or when another interpreter has
 * registered already.
 * Returns 0, DLPX_EINVAL (api NULL or too old, a function pointer NULL),
 * DLPX_ESTATE (not the main interpreter). */
DLPX_API int dlpx_py_register(const dlpx_pyapi *api);

/* Marks the interpreter as shutting down (call from an atexit handler):
 * from then on the bridge never calls into Python; references to Python
 * objects still held are leaked (counted in python_refs_leaked) instead of
 * released. */
DLPX_API void dlpx_py_shutdown(void);

/* 1 if dlpx_py_register has been called and dlpx_py_shutdown has not. */
DLPX_API int dlpx_py_active(void);

/* ---- callable from any thread ------------------------------------------- */

/* PyCapsule destructors for capsules named "dltensor_versioned" and
 * "dltensor" whose pointer is a managed tensor of the matching kind.  Called
 * by CPython with the GIL held when the capsule dies: if the capsule still
 * has its original name (nobody consumed it) the managed tensor's deleter is
 * called, with any pending Python exception saved and restored around it;
 * a consumed (renamed) capsule is left alone. */
DLPX_API void dlpx_py_capsule_destructor(void *capsule);
DLPX_API void dlpx_py_capsule_destructor_legacy(void *capsule);

/* A dlpx_release_fn for memory owned by a Python object: |ctx| is a
 * PyObject* whose reference the storage owns.  Callable from any thread,
 * with or without the GIL: it takes the GIL when this thread lacks it,
 * saves and restores a pending exception, and after dlpx_py_shutdown (or
 * while the interpreter finalizes on a thread without the GIL) leaks the
 * reference instead of touching Python. */
DLPX_API void dlpx_py_release_object(void *data, void *ctx);

/* ---- GIL held: call these only from Python through ctypes.PyDLL ---------- */
/* Each reports failure by returning NULL (or -1) with a Python exception
 * set, chosen by DLPX_ERROR_MAP (the DLPack column for the protocol calls
 * dlpx_py_consume*, dlpx_py_tensor_export and __dlpack__, the general
 * column for the others), with the dlpx_last_error() text as message.  A
 * |tensor| argument that is not a dlpx.Tensor with a valid owner capsule
 * gives TypeError.  Objects returned are new references. */

/* A new dlpx.Tensor that owns |tensor|.  Takes ownership of |tensor| in
 * every case (freed on error). */
DLPX_API void *dlpx_py_tensor_object(dlpx_tensor *tensor);

/* Consumes a DLPack capsule: a "dltensor_versioned" or "dltensor" capsule
 * is renamed "used_..." (so its producer-side destructor leaves it alone)
 * and its managed tensor imported with |flags| (DLPX_IMPORT_*) into a new
 * dlpx.Tensor.  A capsule already consumed gives ValueError; any other
 * object TypeError; a refused tensor BufferError (its deleter has run). */
DLPX_API void *dlpx_py_consume(void *capsule, uint32_t flags);

/* Imports |producer| through a DLPack C exchange API table |api| (from its
 * type's __dlpack_c_exchange_api__ capsule) into a new dlpx.Tensor, as
 * dlpx_py_consume does.  Checks the table's major version.  The producer's
 * own exception passes through unchanged. */
DLPX_API void *dlpx_py_consume_exchange(const DLPackExchangeAPI *api, void *producer,
                                        uint32_t flags);

/* Exports |tensor| (a dlpx.Tensor) as a new DLPack capsule:
 * "dltensor_versioned" when |versioned|, else "dltensor", destroyed by
 * dlpx_py_capsule_destructor[_legacy].  |flags| as dlpx_tensor_export. */
DLPX_API void *dlpx_py_tensor_export(void *tensor, int versioned, uint32_t flags);

/* The key of a dtype for the functions below: code | bits << 8 | lanes << 16. */
#define DLPX_PY_DTYPE_KEY(code, bits, lanes) \
  ((int64_t)(code) | ((int64_t)(bits) << 8) | ((int64_t)(lanes) << 16))

/* What |tensor| looks like, as a tuple:
 *   (shape, strides, dtype_key, device_type, device_id, flags, numel,
 *    nbytes, data_ptr, byte_offset, c_contiguous, f_contiguous,
 *    has_negative_stride)
 * shape and strides (in elements) are tuples of ints; data_ptr is the
 * address of element 0; has_negative_stride counts only extents > 1 of a
 * tensor with elements. */
DLPX_API void *dlpx_py_tensor_meta(void *tensor);

/* The operations of dlpx_py_tensor_op, each making a new dlpx.Tensor from
 * |tensor| with the dlpx_tensor_* function named; |arg| as given. */
typedef enum {
  DLPX_PY_OP_CLONE = 0,        /* arg ignored: the same view (dlpx_tensor_clone) */
  DLPX_PY_OP_TRANSPOSE = 1,    /* arg ignored */
  DLPX_PY_OP_PERMUTE = 2,      /* a tuple of ints */
  DLPX_PY_OP_RESHAPE = 3,      /* a tuple of ints; a view or ValueError */
  DLPX_PY_OP_RESHAPE_ANY = 4,  /* a tuple of ints; a view, else a C-contiguous copy */
  DLPX_PY_OP_SQUEEZE = 5,      /* an int, or None for every extent of 1 */
  DLPX_PY_OP_UNSQUEEZE = 6,    /* an int */
  DLPX_PY_OP_BROADCAST = 7,    /* a tuple of ints */
  DLPX_PY_OP_VIEW_DTYPE = 8,   /* an int: a dtype key */
  DLPX_PY_OP_READONLY = 9,     /* arg ignored: a read-only view */
  DLPX_PY_OP_CONTIGUOUS = 10,  /* arg ignored */
  DLPX_PY_OP_COPY_C = 11,      /* arg ignored: a C-contiguous copy */
  DLPX_PY_OP_COPY_F = 12,      /* arg ignored: an F-contiguous copy */
  DLPX_PY_OP_COPY_PADDED = 13, /* arg ignored: a C-contiguous copy, sub-byte elements padded */
  DLPX_PY_OP_INDEX = 14        /* the key of t[key]: an int, slice, None, Ellipsis, or a
                                  tuple of these (NumPy basic indexing) */
} dlpx_py_op;

/* Applies |op| (a dlpx_py_op) to |tensor| and returns the new dlpx.Tensor.
 * Integer arguments outside int64 (int32 for dimensions) give IndexError for
 * dimensions and indices, ValueError for extents.  Copies release the GIL
 * while they copy. */
DLPX_API void *dlpx_py_tensor_op(void *tensor, int op, void *arg);

/* A new C-contiguous host dlpx.Tensor (dlpx_tensor_new) of the dtype with
 * key |dtype_key| and |shape| (a tuple of ints). */
DLPX_API void *dlpx_py_tensor_new(int64_t dtype_key, void *shape, uint32_t flags, int zero);

/* A new host dlpx.Tensor over the buffer of |owner| (any buffer-protocol
 * object; the Python layer passes a memoryview, which holds the exporter's
 * buffer for as long as it lives): element 0 at byte |offset| of the
 * buffer, |shape| a tuple of ints, |strides| a tuple of ints (elements) or
 * None (C order).  A read-only buffer gives a read-only tensor whatever
 * |flags| says.  On success the tensor's storage holds a new reference to
 * |owner|, dropped by dlpx_py_release_object when the last view and export
 * are gone; on failure no reference is taken.  Getting the buffer's address
 * and taking the reference happen in this one call, so an exception raised
 * asynchronously in the caller cannot leave the buffer exported. */
DLPX_API void *dlpx_py_tensor_from_buffer(void *owner, int64_t offset, int64_t dtype_key,
                                          void *shape, void *strides, uint32_t flags);

/* Copies the elements of the dlpx.Tensor |src| into the dlpx.Tensor |dst|
 * (dlpx_tensor_copy_into), with the GIL released during large copies.
 * Returns 0 or -1. */
DLPX_API int dlpx_py_tensor_copy_into(void *dst, void *src);

/* ---- the dlpx.Tensor type ------------------------------------------------ */

/* The C methods of dlpx.Tensor, as a static PyMethodDef array ending with a
 * NULL entry (its layout is CPython's stable ABI: name, function, flags,
 * doc).  The Python layer installs each with PyDescr_NewMethod:
 *   __dlpack__(*, stream=None, max_version=None, dl_device=None, copy=None)
 *     METH_FASTCALL | METH_KEYWORDS: the common call (stream, dl_device and
 *     copy None; a writable tensor without negative strides) runs entirely
 *     in C; every other call goes to the registered dlpack_fallback.
 *   __dlpack_device__()  METH_NOARGS: (device_type, device_id).
 * Borrowed, static. */
DLPX_API const void *dlpx_py_method_defs(void);

/* dlpx's DLPack C exchange API table (DLPack 1.3): static, lives for the
 * process.  Its functions take dlpx.Tensor objects and need the bridge to
 * be registered. */
DLPX_API const DLPackExchangeAPI *dlpx_py_exchange_api(void);

DLPX_END_DECLS

#endif /* DLPX_PYTHON_H */
