/* test_pybridge.c - the capsule destructors and the Python-object release
 * callback, driven through a fake CPython C-API: a mutex plays the GIL,
 * "objects" check that the GIL is held when their count changes, and a
 * thread-local slot plays the pending exception. */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>

#include "check.h"

/* ---- the fake interpreter ------------------------------------------------- */

static pthread_mutex_t gil = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local int holding;   /* this thread holds the fake GIL */
static _Thread_local void *pending; /* this thread's pending "exception" */
static int finalizing;
static atomic_int ensures, violations, api_calls;

enum { LOCKED = 0, UNLOCKED = 1 }; /* PyGILState_STATE values */

static int f_ensure(void) {
  atomic_fetch_add(&api_calls, 1);
  atomic_fetch_add(&ensures, 1);
  if (holding) return LOCKED;
  pthread_mutex_lock(&gil);
  holding = 1;
  return UNLOCKED;
}
static void f_release(int state) {
  atomic_fetch_add(&api_calls, 1);
  if (state == UNLOCKED) {
    holding = 0;
    pthread_mutex_unlock(&gil);
  }
}
static int f_check(void) {
  atomic_fetch_add(&api_calls, 1);
  return holding;
}
static int f_finalizing(void) {
  atomic_fetch_add(&api_calls, 1);
  return finalizing;
}
static void f_fetch(void **t, void **v, void **tb) {
  atomic_fetch_add(&api_calls, 1);
  if (!holding) atomic_fetch_add(&violations, 1);
  *t = pending;
  *v = NULL;
  *tb = NULL;
  pending = NULL;
}
static void f_restore(void *t, void *v, void *tb) {
  atomic_fetch_add(&api_calls, 1);
  (void)v;
  (void)tb;
  if (!holding) atomic_fetch_add(&violations, 1);
  pending = t;
}

typedef struct {
  const char *name;
  void *pointer;
} fake_capsule;

static int f_is_valid(void *cap, const char *name) {
  atomic_fetch_add(&api_calls, 1);
  fake_capsule *c = cap;
  return c && c->pointer && c->name && strcmp(c->name, name) == 0;
}
static void *f_get_pointer(void *cap, const char *name) {
  static int error_marker;
  if (!f_is_valid(cap, name)) {
    pending = &error_marker;
    return NULL;
  }
  return ((fake_capsule *)cap)->pointer;
}

typedef struct {
  int refcnt;
} fake_object;

static int exception_clobber;
static void f_incref(void *o) {
  atomic_fetch_add(&api_calls, 1);
  if (!holding) atomic_fetch_add(&violations, 1);
  ((fake_object *)o)->refcnt++;
}
static void f_decref(void *o) {
  atomic_fetch_add(&api_calls, 1);
  if (!holding) atomic_fetch_add(&violations, 1);
  ((fake_object *)o)->refcnt--;
  pending = &exception_clobber; /* as arbitrary __del__ code might */
}

/* Two interpreters: the main one and a sub-interpreter. */
static int interp_main, interp_sub;
static void *current_interp = &interp_main;
static void *f_interp_get(void) { return current_interp; }
static void *f_interp_main(void) { return &interp_main; }

/* Stands in for the GIL-held C-API functions these tests never reach. */
static atomic_int unexpected;
static void f_unexpected(void) { atomic_fetch_add(&unexpected, 1); }

static dlpx_pyapi fake_api(void) {
  dlpx_pyapi a;
  memset(&a, 0, sizeof a);
  /* every pointer set (registration requires it), then the ones used */
  void (*u)(void) = f_unexpected;
  for (char *p = (char *)&a.PyGILState_Ensure; p + sizeof u <= (char *)(&a + 1); p += sizeof u)
    memcpy(p, &u, sizeof u);
  a.size = sizeof a;
  a.PyInterpreterState_Get = f_interp_get;
  a.PyInterpreterState_Main = f_interp_main;
  a.PyGILState_Ensure = f_ensure;
  a.PyGILState_Release = f_release;
  a.PyGILState_Check = f_check;
  a.Py_IsFinalizing = f_finalizing;
  a.PyErr_Fetch = f_fetch;
  a.PyErr_Restore = f_restore;
  a.PyCapsule_IsValid = f_is_valid;
  a.PyCapsule_GetPointer = f_get_pointer;
  a.Py_IncRef = f_incref;
  a.Py_DecRef = f_decref;
  return a;
}

static void reset(void) {
  dlpx_pyapi a = fake_api();
  dlpx_py_register(&a);
  finalizing = 0;
  atomic_store(&ensures, 0);
  atomic_store(&violations, 0);
  atomic_store(&api_calls, 0);
  pending = NULL;
}

static void gil_take(void) {
  pthread_mutex_lock(&gil);
  holding = 1;
}
static void gil_drop(void) {
  holding = 0;
  pthread_mutex_unlock(&gil);
}

/* A tensor over memory owned by |obj| (one reference taken for it). */
static dlpx_tensor *tensor_owned_by(fake_object *obj) {
  static float buf[8];
  int64_t shape[] = {8};
  dlpx_tensor *t = NULL;
  obj->refcnt++; /* the reference the storage will own */
  if (dlpx_tensor_wrap(buf, (DLDevice){kDLCPU, 0}, dt("float32"), 1, shape, NULL, 0,
                       dlpx_py_release_object, obj, &t) != 0)
    return NULL;
  return t;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_register_validation(void) {
  dlpx_pyapi a = fake_api();
  ASSERT_RC(DLPX_EINVAL, dlpx_py_register(NULL));
  a.size = sizeof a - 8;
  ASSERT_RC(DLPX_EINVAL, dlpx_py_register(&a));
  ASSERT_MSG("older than this library");
  a = fake_api();
  a.Py_DecRef = NULL;
  ASSERT_RC(DLPX_EINVAL, dlpx_py_register(&a));
  a = fake_api();
  a.PyTuple_New = NULL; /* a GIL-held function: required as well */
  ASSERT_RC(DLPX_EINVAL, dlpx_py_register(&a));
  a = fake_api();
  a.obj_None = NULL; /* and the objects */
  ASSERT_RC(DLPX_EINVAL, dlpx_py_register(&a));
  a = fake_api();
  a.Py_IsFinalizing = NULL; /* optional */
  ASSERT_OK(dlpx_py_register(&a));
  ASSERT_TRUE(dlpx_py_active());
  dlpx_py_shutdown();
  ASSERT_TRUE(!dlpx_py_active());
  reset();
  ASSERT_TRUE(dlpx_py_active());
}

static void test_destructor_unconsumed_versioned(void) {
  reset();
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {4};
  dlpx_tensor *t = NULL;
  ASSERT_OK(dlpx_tensor_zeros(dt("float32"), 1, shape, &t));
  DLManagedTensorVersioned *m = NULL;
  ASSERT_OK(dlpx_tensor_export(t, 0, &m));
  dlpx_tensor_free(t);
  fake_capsule cap = {"dltensor_versioned", m};
  static int pending_error;
  gil_take();
  pending = &pending_error;
  dlpx_py_capsule_destructor(&cap);
  ASSERT_PTR_EQ(pending, &pending_error); /* preserved */
  pending = NULL;
  gil_drop();
  ASSERT_EQ(atomic_load(&violations), 0);
  ASSERT_NO_LEAKS(&l); /* the deleter ran */
}

static void test_destructor_consumed_is_left_alone(void) {
  reset();
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {4};
  dlpx_tensor *t = NULL;
  ASSERT_OK(dlpx_tensor_zeros(dt("float32"), 1, shape, &t));
  DLManagedTensorVersioned *m = NULL;
  DLManagedTensor *lm = NULL;
  ASSERT_OK(dlpx_tensor_export(t, 0, &m));
  ASSERT_OK(dlpx_tensor_export_legacy(t, 0, &lm));
  dlpx_tensor_free(t);
  fake_capsule used = {"used_dltensor_versioned", m};
  fake_capsule used_legacy = {"used_dltensor", lm};
  fake_capsule wrong_kind = {"dltensor", m}; /* versioned destructor, legacy name */
  gil_take();
  dlpx_py_capsule_destructor(&used);
  dlpx_py_capsule_destructor_legacy(&used_legacy);
  dlpx_py_capsule_destructor(&wrong_kind);
  gil_drop();
  dlpx_stats s;
  dlpx_stats_get(&s);
  ASSERT_EQ(s.exports_live, l.before.exports_live + 2); /* nothing freed */
  /* The consumer owns them and calls the deleters. */
  m->deleter(m);
  lm->deleter(lm);
  ASSERT_NO_LEAKS(&l);
}

static void test_destructor_legacy(void) {
  reset();
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {2, 2};
  dlpx_tensor *t = NULL;
  ASSERT_OK(dlpx_tensor_zeros(dt("int8"), 2, shape, &t));
  DLManagedTensor *lm = NULL;
  ASSERT_OK(dlpx_tensor_export_legacy(t, 0, &lm));
  dlpx_tensor_free(t);
  fake_capsule cap = {"dltensor", lm};
  gil_take();
  dlpx_py_capsule_destructor_legacy(&cap);
  gil_drop();
  ASSERT_NO_LEAKS(&l);
  /* A NULL pointer capsule is ignored. */
  fake_capsule empty = {"dltensor", NULL};
  gil_take();
  dlpx_py_capsule_destructor_legacy(&empty);
  gil_drop();
}

static void test_release_without_gil_takes_it(void) {
  reset();
  fake_object obj = {1};
  dlpx_tensor *t = tensor_owned_by(&obj);
  ASSERT_TRUE(t != NULL);
  ASSERT_EQ(obj.refcnt, 2);
  static int mine;
  pending = &mine; /* would be wrong to touch without the GIL; we don't hold it */
  dlpx_tensor_free(t); /* no GIL held here */
  ASSERT_EQ(obj.refcnt, 1);
  ASSERT_EQ(atomic_load(&ensures), 1);
  ASSERT_EQ(atomic_load(&violations), 0);
  ASSERT_PTR_EQ(pending, &mine);
  pending = NULL;
}

static void test_release_with_gil_held(void) {
  reset();
  fake_object obj = {1};
  dlpx_tensor *t = tensor_owned_by(&obj);
  static int mine;
  gil_take();
  pending = &mine;
  dlpx_tensor_free(t);
  ASSERT_PTR_EQ(pending, &mine); /* the decref's clobbering undone */
  pending = NULL;
  gil_drop();
  ASSERT_EQ(obj.refcnt, 1);
  ASSERT_EQ(atomic_load(&ensures), 0); /* no re-entry needed */
  ASSERT_EQ(atomic_load(&violations), 0);
}

typedef struct {
  DLManagedTensorVersioned *m;
} thread_arg;

static void *call_deleter(void *p) {
  thread_arg *a = p;
  a->m->deleter(a->m);
  return NULL;
}

static void test_deleter_on_foreign_thread(void) {
  reset();
  fake_object obj = {1};
  dlpx_tensor *t = tensor_owned_by(&obj);
  DLManagedTensorVersioned *m = NULL;
  ASSERT_OK(dlpx_tensor_export(t, 0, &m));
  gil_take();
  dlpx_tensor_free(t); /* the export still holds the storage */
  gil_drop();
  ASSERT_EQ(obj.refcnt, 2);
  pthread_t th;
  thread_arg a = {m};
  ASSERT_EQ(pthread_create(&th, NULL, call_deleter, &a), 0);
  ASSERT_EQ(pthread_join(th, NULL), 0);
  ASSERT_EQ(obj.refcnt, 1);
  ASSERT_EQ(atomic_load(&ensures), 1);
  ASSERT_EQ(atomic_load(&violations), 0);
}

static void test_release_while_finalizing_leaks(void) {
  reset();
  fake_object obj = {1};
  dlpx_tensor *t = tensor_owned_by(&obj);
  dlpx_stats before, after;
  dlpx_stats_get(&before);
  finalizing = 1;
  dlpx_tensor_free(t); /* no GIL: must not try to take it */
  ASSERT_EQ(obj.refcnt, 2);
  ASSERT_EQ(atomic_load(&ensures), 0);
  dlpx_stats_get(&after);
  ASSERT_EQ(after.python_refs_leaked, before.python_refs_leaked + 1);
  /* With the GIL held during finalization the reference is released. */
  t = tensor_owned_by(&obj);
  gil_take();
  dlpx_tensor_free(t);
  gil_drop();
  ASSERT_EQ(obj.refcnt, 2);
  finalizing = 0;
}

static void test_after_shutdown_python_is_never_called(void) {
  reset();
  fake_object obj = {1};
  dlpx_tensor *t = tensor_owned_by(&obj);
  dlpx_stats before, after;
  dlpx_stats_get(&before);
  dlpx_py_shutdown();
  atomic_store(&api_calls, 0);
  gil_take();
  dlpx_tensor_free(t);
  gil_drop();
  ASSERT_EQ(atomic_load(&api_calls), 0);
  ASSERT_EQ(obj.refcnt, 2);
  dlpx_stats_get(&after);
  ASSERT_EQ(after.python_refs_leaked, before.python_refs_leaked + 1);
  reset();
}

static void *free_many(void *p) {
  dlpx_tensor **ts = p;
  for (int i = 0; i < 1000; i++) dlpx_tensor_free(ts[i]);
  return NULL;
}

static void test_concurrent_releases_serialize_on_the_gil(void) {
  reset();
  fake_object obj = {1};
  static dlpx_tensor *ts[4][1000];
  for (int k = 0; k < 4; k++)
    for (int i = 0; i < 1000; i++) ts[k][i] = tensor_owned_by(&obj);
  ASSERT_EQ(obj.refcnt, 4001);
  pthread_t th[4];
  for (int k = 0; k < 4; k++) ASSERT_EQ(pthread_create(&th[k], NULL, free_many, ts[k]), 0);
  for (int k = 0; k < 4; k++) ASSERT_EQ(pthread_join(th[k], NULL), 0);
  ASSERT_EQ(obj.refcnt, 1); /* no lost update: every decref held the GIL */
  ASSERT_EQ(atomic_load(&violations), 0);
}

/* Before any registration the GIL-held functions refuse cleanly (no
 * Python to raise in) and take nothing they should not; runs first. */
static void test_gil_functions_before_register(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {3};
  dlpx_tensor *t = NULL;
  ASSERT_OK(dlpx_tensor_zeros(dt("int16"), 1, shape, &t));
  fake_object obj = {1};
  ASSERT_PTR_EQ(dlpx_py_tensor_object(t), NULL); /* takes t: freed */
  ASSERT_EQ(dlpx_last_error_code(), DLPX_EPYTHON);
  fake_capsule cap = {"dltensor", NULL};
  ASSERT_PTR_EQ(dlpx_py_consume(&cap, 0), NULL);
  ASSERT_PTR_EQ(dlpx_py_consume_exchange(dlpx_py_exchange_api(), &obj, 0), NULL);
  ASSERT_PTR_EQ(dlpx_py_tensor_export(&obj, 1, 0), NULL);
  ASSERT_PTR_EQ(dlpx_py_tensor_meta(&obj), NULL);
  ASSERT_PTR_EQ(dlpx_py_tensor_op(&obj, DLPX_PY_OP_CLONE, &obj), NULL);
  ASSERT_EQ(dlpx_py_tensor_copy_into(&obj, &obj), -1);
  ASSERT_EQ(dlpx_last_error_code(), DLPX_EPYTHON);
  ASSERT_MSG("not registered");
  ASSERT_EQ(obj.refcnt, 1);
  ASSERT_NO_LEAKS(&l);
}

/* Defect: a sub-interpreter's import replaced the process-wide
 * registration.  Only the main interpreter may register; a refused
 * registration leaves the main one's in place. */
static void test_only_the_main_interpreter_registers(void) {
  reset();
  dlpx_pyapi a = fake_api();
  current_interp = &interp_sub;
  ASSERT_RC(DLPX_ESTATE, dlpx_py_register(&a));
  ASSERT_MSG("main interpreter");
  current_interp = &interp_main;
  ASSERT_TRUE(dlpx_py_active());
  /* the main interpreter's registration still works: a release takes the GIL */
  fake_object obj = {1};
  dlpx_tensor *t = tensor_owned_by(&obj);
  ASSERT_TRUE(t != NULL);
  dlpx_tensor_free(t);
  ASSERT_EQ(obj.refcnt, 1);
  ASSERT_EQ(atomic_load(&violations), 0);
}

static void test_capsule_names(void) {
  const char *want[] = {"dltensor", "dltensor_versioned", "used_dltensor",
                        "used_dltensor_versioned", "dlpack_exchange_api", "dlpx.tensor"};
  for (int i = 0; i < 6; i++) ASSERT_STR_EQ(dlpx_py_capsule_name(i), want[i]);
  ASSERT_STR_EQ(dlpx_py_capsule_name(DLPX_PY_CAPSULE_OWNER), DLPX_CAPSULE_OWNER);
  ASSERT_STR_EQ(dlpx_py_capsule_name(DLPX_PY_CAPSULE_VERSIONED), DLPX_CAPSULE_VERSIONED);
  ASSERT_STR_EQ(dlpx_py_exception_name(DLPX_PY_EXC_BufferError), "BufferError");
  ASSERT_PTR_EQ(dlpx_py_exception_name(DLPX_PY_EXCEPTION_COUNT), NULL);
  ASSERT_PTR_EQ(dlpx_py_capsule_name(6), NULL);
  ASSERT_PTR_EQ(dlpx_py_capsule_name(-1), NULL);
  /* the same static strings every time: capsules may keep the pointers */
  ASSERT_PTR_EQ(dlpx_py_capsule_name(1), dlpx_py_capsule_name(1));
}

typedef struct {
  const char *ml_name;
  void *(*ml_meth)(void *, void *);
  int ml_flags;
  const char *ml_doc;
} method_def; /* CPython's PyMethodDef */

static void test_method_defs(void) {
  const method_def *defs = dlpx_py_method_defs();
  ASSERT_STR_EQ(defs[0].ml_name, "__dlpack__");
  ASSERT_EQ(defs[0].ml_flags, 0x0080 | 0x0002); /* METH_FASTCALL | METH_KEYWORDS */
  ASSERT_TRUE(defs[0].ml_meth != NULL && strstr(defs[0].ml_doc, "max_version") != NULL);
  ASSERT_STR_EQ(defs[1].ml_name, "__dlpack_device__");
  ASSERT_EQ(defs[1].ml_flags, 0x0004); /* METH_NOARGS */
  ASSERT_PTR_EQ(defs[2].ml_name, NULL);
}

static char set_error_kind[32];
static void record_error(void *ctx, const char *kind, const char *message) {
  (void)message;
  *(int *)ctx += 1;
  snprintf(set_error_kind, sizeof set_error_kind, "%s", kind);
}

static void test_exchange_table_without_python(void) {
  check_live l;
  check_live_begin(&l);
  const DLPackExchangeAPI *x = dlpx_py_exchange_api();
  ASSERT_EQ(x->header.version.major, 1);
  ASSERT_EQ(x->header.version.minor, DLPACK_MINOR_VERSION);
  ASSERT_PTR_EQ(x->header.prev_api, NULL);
  ASSERT_TRUE(x->managed_tensor_allocator && x->managed_tensor_from_py_object_no_sync &&
              x->managed_tensor_to_py_object_no_sync && x->dltensor_from_py_object_no_sync &&
              x->current_work_stream);
  void *stream = (void *)1;
  ASSERT_EQ(x->current_work_stream(kDLCPU, 0, &stream), 0);
  ASSERT_PTR_EQ(stream, NULL);
  /* the allocator needs no Python */
  int64_t shape[] = {4, 5};
  DLTensor proto;
  memset(&proto, 0, sizeof proto);
  proto.device.device_type = kDLCPU;
  proto.ndim = 2;
  proto.shape = shape;
  proto.dtype = dt("float16");
  DLManagedTensorVersioned *m = NULL;
  int errors = 0;
  ASSERT_EQ(x->managed_tensor_allocator(&proto, &m, &errors, record_error), 0);
  ASSERT_EQ(errors, 0);
  ASSERT_EQ(m->dl_tensor.strides[0], 5);
  ASSERT_EQ((uintptr_t)m->dl_tensor.data % 64, 0);
  m->deleter(m);
  proto.device.device_type = kDLCUDA;
  ASSERT_EQ(x->managed_tensor_allocator(&proto, &m, &errors, record_error), -1);
  ASSERT_EQ(errors, 1);
  ASSERT_STR_EQ(set_error_kind, "BufferError");
  proto.device.device_type = kDLCPU;
  shape[0] = -1;
  ASSERT_EQ(x->managed_tensor_allocator(&proto, &m, &errors, record_error), -1);
  ASSERT_EQ(errors, 2);
  ASSERT_NO_LEAKS(&l);
}

int main(void) {
  RUN(test_gil_functions_before_register);
  RUN(test_register_validation);
  RUN(test_only_the_main_interpreter_registers);
  RUN(test_destructor_unconsumed_versioned);
  RUN(test_destructor_consumed_is_left_alone);
  RUN(test_destructor_legacy);
  RUN(test_release_without_gil_takes_it);
  RUN(test_release_with_gil_held);
  RUN(test_deleter_on_foreign_thread);
  RUN(test_release_while_finalizing_leaks);
  RUN(test_after_shutdown_python_is_never_called);
  RUN(test_concurrent_releases_serialize_on_the_gil);
  RUN(test_capsule_names);
  RUN(test_method_defs);
  RUN(test_exchange_table_without_python);
  CHECK_DONE();
}
