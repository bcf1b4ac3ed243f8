/* bridge.c - registration of the CPython C-API, the shutdown switch, and
 * what may run on any thread: capsule destructors and the release of
 * memory owned by Python objects.
 *
 * CPython calls capsule destructors with the GIL held; DLPack deleters and
 * storage releases may run on any thread, with or without the GIL, and even
 * while the interpreter shuts down.  Everything here therefore reaches
 * Python only through the registered pointers, takes the GIL itself when
 * needed, keeps a pending exception intact, and stops touching Python once
 * the interpreter is going away. */
#include "config.h"

#include <string.h>

#include "pyapi.h"

dlpx_pyapi dlpx__py;
static atomic_int registered; /* 1 after dlpx_py_register */
static atomic_int shutting_down;
static void *registered_interpreter;

#define api dlpx__py

bool dlpx__py_registered(void) { return atomic_load(&registered) != 0; }

bool dlpx__py_check_ready(void) {
  if (DLPX__LIKELY(atomic_load(&registered))) return true;
  dlpx__fail(DLPX_EPYTHON, "the Python bridge is not registered (import dlpx first)");
  return false;
}

/* ---- names ------------------------------------------------------------------ */

#define EXC_NAME(name) #name,
static const char *const exception_names[] = {DLPX_PY_EXCEPTION_MAP(EXC_NAME)};

const char *dlpx_py_exception_name(int index) {
  if (index < 0 || index >= DLPX_PY_EXCEPTION_COUNT) return NULL;
  return exception_names[index];
}

static const char *const capsule_names[] = {
    [DLPX_PY_CAPSULE_LEGACY] = DLPX_CAPSULE_LEGACY,
    [DLPX_PY_CAPSULE_VERSIONED] = DLPX_CAPSULE_VERSIONED,
    [DLPX_PY_CAPSULE_USED_LEGACY] = DLPX_CAPSULE_USED_LEGACY,
    [DLPX_PY_CAPSULE_USED_VERSIONED] = DLPX_CAPSULE_USED_VERSIONED,
    [DLPX_PY_CAPSULE_EXCHANGE_API] = DLPX_CAPSULE_EXCHANGE_API,
    [DLPX_PY_CAPSULE_OWNER] = DLPX_CAPSULE_OWNER,
};

const char *dlpx_py_capsule_name(int which) {
  if (which < 0 || (size_t)which >= DLPX__COUNT(capsule_names)) return NULL;
  return capsule_names[which];
}

/* ---- registration ------------------------------------------------------------ */

/* Every field from PyGILState_Ensure on is a pointer that must be set,
 * except Py_IsFinalizing. */
static bool complete(const dlpx_pyapi *a) {
  const char *p = (const char *)&a->PyGILState_Ensure;
  const char *end = (const char *)a + sizeof *a;
  for (; p + sizeof(void *) <= end; p += sizeof(void *)) {
    if (p == (const char *)&a->Py_IsFinalizing) continue;
    void *v;
    memcpy(&v, p, sizeof v);
    if (!v) return false;
  }
  return true;
}

int dlpx_py_register(const dlpx_pyapi *a) {
  if (!a) return dlpx__fail(DLPX_EINVAL, "api is NULL");
  if (a->size < sizeof(dlpx_pyapi))
    return dlpx__fail(DLPX_EINVAL, "dlpx_pyapi of %zu bytes is older than this library's (%zu)",
                      a->size, sizeof(dlpx_pyapi));
  if (!complete(a)) return dlpx__fail(DLPX_EINVAL, "a C-API pointer of dlpx_pyapi is NULL");
  /* The caller holds the GIL (a PyDLL call): its interpreter is current. */
  void *interp = a->PyInterpreterState_Get();
  if (interp != a->PyInterpreterState_Main())
    return dlpx__fail(DLPX_ESTATE,
                      "dlpx supports only the main interpreter: libdlpx is shared by the whole "
                      "process and holds objects of the interpreter that registered it");
  if (atomic_load(&registered) && registered_interpreter != interp)
    return dlpx__fail(DLPX_ESTATE, "the Python bridge is registered by another interpreter");
  memcpy(&api, a, sizeof api);
  api.size = sizeof api;
  registered_interpreter = interp;
  atomic_store(&shutting_down, 0);
  atomic_store(&registered, 1);
  return 0;
}

void dlpx_py_shutdown(void) { atomic_store(&shutting_down, 1); }

int dlpx_py_active(void) { return atomic_load(&registered) && !atomic_load(&shutting_down); }

/* ---- any thread ---------------------------------------------------------------- */

/* Destroys a capsule's managed tensor if nobody consumed it. */
static void capsule_destroy(void *capsule, const char *name, bool versioned) {
  if (!atomic_load(&registered)) return; /* cannot be: we made the capsule */
  /* Called by CPython with the GIL held, possibly with an exception set
   * (e.g. while an exception unwinds a frame holding the capsule). */
  void *et, *ev, *tb;
  api.PyErr_Fetch(&et, &ev, &tb);
  if (api.PyCapsule_IsValid(capsule, name)) {
    void *p = api.PyCapsule_GetPointer(capsule, name);
    if (p) dlpx__call_deleter(p, versioned);
  }
  api.PyErr_Restore(et, ev, tb);
}

void dlpx_py_capsule_destructor(void *capsule) {
  capsule_destroy(capsule, DLPX_CAPSULE_VERSIONED, true);
}

void dlpx_py_capsule_destructor_legacy(void *capsule) {
  capsule_destroy(capsule, DLPX_CAPSULE_LEGACY, false);
}

void dlpx_py_release_object(void *data, void *ctx) {
  (void)data;
  if (!ctx) return;
  /* After the atexit mark the interpreter may be finalizing or gone: drop
   * the reference on the floor rather than touch Python. */
  if (!atomic_load(&registered) || atomic_load(&shutting_down)) {
    dlpx__count(&dlpx__stats.python_refs_leaked, 1);
    return;
  }
  int held = api.PyGILState_Check();
  if (!held && api.Py_IsFinalizing && api.Py_IsFinalizing()) {
    /* Taking the GIL now could hang or end this thread. */
    dlpx__count(&dlpx__stats.python_refs_leaked, 1);
    return;
  }
  int state = 0;
  if (!held) state = api.PyGILState_Ensure();
  void *et, *ev, *tb;
  api.PyErr_Fetch(&et, &ev, &tb);
  api.Py_DecRef(ctx);
  api.PyErr_Restore(et, ev, tb);
  if (!held) api.PyGILState_Release(state);
}
