/* pybridge.c - the C side of the Python layer, with no Python at build time.
 *
 * CPython calls capsule destructors with the GIL held; DLPack deleters and
 * storage releases may run on any thread, with or without the GIL, and even
 * while the interpreter shuts down.  Everything here therefore reaches
 * Python only through the C-API pointers registered by the Python layer,
 * takes the GIL itself when needed, keeps a pending exception intact, and
 * stops touching Python once the interpreter is going away.
 */
#include "config.h"

#include <string.h>

#include "internal.h"

/* The registered API.  Written by dlpx_py_register (at import, while no
 * deleter can yet refer to a Python object) and read afterwards. */
static dlpx_pyapi api;
static atomic_int registered; /* 1 after dlpx_py_register */
static atomic_int shutting_down;

int dlpx_py_register(const dlpx_pyapi *a) {
  if (!a) return dlpx__fail(DLPX_EINVAL, "api is NULL");
  if (a->size < sizeof(dlpx_pyapi))
    return dlpx__fail(DLPX_EINVAL, "dlpx_pyapi of %zu bytes is older than this library's (%zu)",
                      a->size, sizeof(dlpx_pyapi));
  if (!a->PyGILState_Ensure || !a->PyGILState_Release || !a->PyGILState_Check ||
      !a->PyErr_Fetch || !a->PyErr_Restore || !a->PyCapsule_IsValid ||
      !a->PyCapsule_GetPointer || !a->Py_IncRef || !a->Py_DecRef)
    return dlpx__fail(DLPX_EINVAL, "a required C-API function pointer is NULL");
  memcpy(&api, a, sizeof api);
  api.size = sizeof api;
  atomic_store(&shutting_down, 0);
  atomic_store(&registered, 1);
  return 0;
}

void dlpx_py_shutdown(void) { atomic_store(&shutting_down, 1); }

int dlpx_py_active(void) { return atomic_load(&registered) && !atomic_load(&shutting_down); }

/* Destroys a capsule's managed tensor if nobody consumed it. */
static void capsule_destroy(void *capsule, const char *name, bool versioned) {
  if (!atomic_load(&registered)) return; /* cannot be: we made the capsule */
  /* Called by CPython with the GIL held, possibly with an exception set
   * (e.g. while an exception unwinds a frame holding the capsule). */
  void *et, *ev, *tb;
  api.PyErr_Fetch(&et, &ev, &tb);
  if (api.PyCapsule_IsValid(capsule, name)) {
    void *p = api.PyCapsule_GetPointer(capsule, name);
    if (p) {
      if (versioned) {
        DLManagedTensorVersioned *m = p;
        if (m->deleter) m->deleter(m);
      } else {
        DLManagedTensor *m = p;
        if (m->deleter) m->deleter(m);
      }
    }
  }
  api.PyErr_Restore(et, ev, tb);
}

void dlpx_py_capsule_destructor(void *capsule) {
  capsule_destroy(capsule, "dltensor_versioned", true);
}

void dlpx_py_capsule_destructor_legacy(void *capsule) {
  capsule_destroy(capsule, "dltensor", false);
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
