/* decl/python.h - include/dlpx/python.h for cffi (see decl/README).  The
 * functions marked "GIL held" in the header must not be called through
 * cffi, which releases the GIL: dlpx._bridge calls them through
 * ctypes.PyDLL. */

typedef enum {
  DLPX_PY_CAPSULE_LEGACY = 0, DLPX_PY_CAPSULE_VERSIONED = 1, DLPX_PY_CAPSULE_USED_LEGACY = 2,
  DLPX_PY_CAPSULE_USED_VERSIONED = 3, DLPX_PY_CAPSULE_EXCHANGE_API = 4, DLPX_PY_CAPSULE_OWNER = 5
} dlpx_py_capsule;

const char *dlpx_py_capsule_name(int which);

typedef enum {
  DLPX_PY_EXC_BufferError = 0, DLPX_PY_EXC_ValueError = 1, DLPX_PY_EXC_TypeError = 2,
  DLPX_PY_EXC_MemoryError = 3, DLPX_PY_EXC_IndexError = 4, DLPX_PY_EXC_RuntimeError = 5,
  DLPX_PY_EXC_OSError = 6, DLPX_PY_EXC_KeyError = 7, DLPX_PY_EXC_FileNotFoundError = 8,
  DLPX_PY_EXC_PermissionError = 9, DLPX_PY_EXC_TimeoutError = 10, DLPX_PY_EXCEPTION_COUNT = 11
} dlpx_py_exception;

const char *dlpx_py_exception_name(int index);

typedef struct {
  size_t size;
  int (*PyGILState_Ensure)(void);
  void (*PyGILState_Release)(int state);
  int (*PyGILState_Check)(void);
  int (*Py_IsFinalizing)(void);
  void (*PyErr_Fetch)(void **type, void **value, void **traceback);
  void (*PyErr_Restore)(void *type, void *value, void *traceback);
  int (*PyCapsule_IsValid)(void *capsule, const char *name);
  void *(*PyCapsule_GetPointer)(void *capsule, const char *name);
  void (*Py_IncRef)(void *obj);
  void (*Py_DecRef)(void *obj);
  void *(*PyInterpreterState_Get)(void);
  void *(*PyInterpreterState_Main)(void);
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
  ptrdiff_t (*PyLong_AsSsize_t)(void *obj);
  void *(*PyNumber_Index)(void *obj);
  void *(*PyTuple_New)(ptrdiff_t size);
  ptrdiff_t (*PyTuple_Size)(void *tuple);
  void *(*PyTuple_GetItem)(void *tuple, ptrdiff_t index);
  int (*PyTuple_SetItem)(void *tuple, ptrdiff_t index, void *item);
  int (*PySlice_Unpack)(void *slice, ptrdiff_t *start, ptrdiff_t *stop, ptrdiff_t *step);
  int (*PyUnicode_CompareWithASCIIString)(void *str, const char *ascii);
  void *(*PyEval_SaveThread)(void);
  void (*PyEval_RestoreThread)(void *tstate);
  int (*PyObject_GetBuffer)(void *obj, void *view, int flags);
  void (*PyBuffer_Release)(void *view);
  void *exceptions[11];
  void *obj_None;
  void *obj_Ellipsis;
  void *obj_True;
  void *obj_False;
  void *type_tuple;
  void *type_slice;
  void *tensor_type;
  void *name_cap;
  void *name_stream;
  void *name_max_version;
  void *name_dl_device;
  void *name_copy;
  void *dlpack_fallback;
} dlpx_pyapi;

int dlpx_py_register(const dlpx_pyapi *api);
void dlpx_py_shutdown(void);
int dlpx_py_active(void);

void dlpx_py_capsule_destructor(void *capsule);
void dlpx_py_capsule_destructor_legacy(void *capsule);
void dlpx_py_release_object(void *data, void *ctx);

void *dlpx_py_tensor_object(dlpx_tensor *tensor);
void *dlpx_py_consume(void *capsule, uint32_t flags);
void *dlpx_py_consume_exchange(const DLPackExchangeAPI *api, void *producer, uint32_t flags);
void *dlpx_py_tensor_export(void *tensor, int versioned, uint32_t flags);
void *dlpx_py_tensor_meta(void *tensor);

typedef enum {
  DLPX_PY_OP_CLONE = 0, DLPX_PY_OP_TRANSPOSE = 1, DLPX_PY_OP_PERMUTE = 2, DLPX_PY_OP_RESHAPE = 3,
  DLPX_PY_OP_RESHAPE_ANY = 4, DLPX_PY_OP_SQUEEZE = 5, DLPX_PY_OP_UNSQUEEZE = 6,
  DLPX_PY_OP_BROADCAST = 7, DLPX_PY_OP_VIEW_DTYPE = 8, DLPX_PY_OP_READONLY = 9,
  DLPX_PY_OP_CONTIGUOUS = 10, DLPX_PY_OP_COPY_C = 11, DLPX_PY_OP_COPY_F = 12,
  DLPX_PY_OP_COPY_PADDED = 13, DLPX_PY_OP_INDEX = 14
} dlpx_py_op;

void *dlpx_py_tensor_op(void *tensor, int op, void *arg);
void *dlpx_py_tensor_new(int64_t dtype_key, void *shape, uint32_t flags, int zero);
void *dlpx_py_tensor_from_buffer(void *owner, int64_t offset, int64_t dtype_key, void *shape,
                                 void *strides, uint32_t flags);
int dlpx_py_tensor_copy_into(void *dst, void *src);

const void *dlpx_py_method_defs(void);
const DLPackExchangeAPI *dlpx_py_exchange_api(void);
