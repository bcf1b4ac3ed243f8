/* managed.c - foreign DLPack managed tensors: the one place that runs their
 * deleters, and the storage kind that owns one. */
#include "config.h"

#include "internal.h"

void dlpx__call_deleter(void *managed, bool versioned) {
  /* A deleter may call dlpx (and fail): the caller's error must survive. */
  dlpx__error_state saved;
  dlpx__error_save(&saved);
  if (versioned) {
    DLManagedTensorVersioned *m = managed;
    if (m->deleter) m->deleter(m);
  } else {
    DLManagedTensor *m = managed;
    if (m->deleter) m->deleter(m);
  }
  dlpx__error_restore(&saved);
}

void dlpx__run_deleter(void *managed, bool versioned) {
  dlpx__call_deleter(managed, versioned);
  dlpx__count(&dlpx__stats.foreign_deleters_run, 1);
}

typedef struct {
  void *managed;
} foreign_state;

static void foreign_release(dlpx_storage *s) {
  dlpx__run_deleter(((foreign_state *)dlpx__storage_payload(s))->managed, true);
}

static void foreign_release_legacy(dlpx_storage *s) {
  dlpx__run_deleter(((foreign_state *)dlpx__storage_payload(s))->managed, false);
}

static const dlpx__storage_ops foreign_ops = {DLPX_STORAGE_FOREIGN, "foreign", foreign_release};
static const dlpx__storage_ops foreign_legacy_ops = {DLPX_STORAGE_FOREIGN_LEGACY,
                                                     "foreign legacy", foreign_release_legacy};

int dlpx__storage_foreign(void *managed, bool versioned, void *data, size_t nbytes,
                          DLDevice device, dlpx_storage **out) {
  dlpx_storage *s = dlpx__storage_new(versioned ? &foreign_ops : &foreign_legacy_ops,
                                      sizeof(foreign_state), data, nbytes, device);
  if (!s) return DLPX_ENOMEM;
  ((foreign_state *)dlpx__storage_payload(s))->managed = managed;
  *out = s;
  return 0;
}
