/* ipc.c - CUDA memory shared with other processes through the driver's
 * legacy IPC handles.  An export holds its storage, an interprocess event
 * recorded after the work that wrote it, and a small reference cell in
 * /dev/shm (dlpx-cuda-ipc.<pid>.<id>) that importers count themselves
 * in by pid.  Closing an export keeps the memory until the cell says every
 * importer has closed or died (dlpx_cuda_ipc_collect, run on every IPC
 * call).  An
 * importer opens each export once per process (cuIpcOpenMemHandle may map
 * a handle only once) and shares the mapping between the storages it
 * makes; the last one closes it and leaves the cell.  A handle whose
 * producer is gone, or that names a cell of another export, is refused. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../glibc_compat.h"
#include "../io/io.h"
#include "cuda_int.h"

#define MAGIC 0x31435049585044ull /* "DPXIPC1" */

/* The wire form of a handle (inside dlpx_cuda_ipc_handle's bytes). */
typedef struct {
  uint64_t magic;
  uint64_t nonce;  /* random, also in the cell: a reused pid or id is caught */
  uint64_t id;     /* the export, per producer process */
  uint64_t nbytes; /* the storage's bytes */
  uint64_t offset; /* of the storage inside the driver's allocation */
  int32_t pid;
  int32_t device;
  CUipcMemHandle mem;
  CUipcEventHandle event;
} wire;

_Static_assert(sizeof(wire) <= sizeof(dlpx_cuda_ipc_handle), "the handle holds the wire form");

/* The reference cell importers put their pid in (one slot a process,
 * freed when it unmaps; a killed importer's slot is freed by the
 * producer when it finds the pid gone). */
#define SLOTS 128
typedef struct {
  uint64_t nonce;
  _Atomic int32_t pids[SLOTS];
} cell;

static bool alive(int32_t pid) { return pid > 0 && !(kill(pid, 0) != 0 && errno == ESRCH); }

/* Importers with a live process; clears the slots of dead ones. */
static int live_importers(cell *c) {
  int n = 0;
  for (int i = 0; i < SLOTS; i++) {
    int32_t pid = atomic_load(&c->pids[i]);
    if (!pid) continue;
    if (alive(pid))
      n++;
    else
      atomic_compare_exchange_strong(&c->pids[i], &pid, 0);
  }
  return n;
}

/* The cell's path: in /dev/shm directly (as named segments are; shm_open
 * would bind a glibc 2.34 symbol). */
static void cell_name(char *buf, size_t size, int32_t pid, uint64_t id) {
  snprintf(buf, size, "/dev/shm/dlpx-cuda-ipc.%d.%llu", (int)pid, (unsigned long long)id);
}

static cell *cell_map(int fd) {
  void *p = mmap(NULL, sizeof(cell), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  return p == MAP_FAILED ? NULL : p;
}

/* ---- exports --------------------------------------------------------------------------- */

struct dlpx_cuda_export {
  dlpx_storage *storage;
  CUevent event;
  cell *cell;
  uint64_t id;
  bool closed;
  struct dlpx_cuda_export *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static dlpx_cuda_export *exports; /* open and closed-but-imported */
static uint64_t next_id = 1;

static void export_free(dlpx_cuda_export *e) {
  char name[96];
  cell_name(name, sizeof name, (int32_t)getpid(), e->id);
  unlink(name);
  munmap(e->cell, sizeof(cell));
  const dlpx__cu_api *cu;
  int device = e->storage->device.device_id;
  if (dlpx__cu_enter(device, &cu) == 0) {
    (void)cu->EventDestroy(e->event);
    dlpx__cu_leave();
  }
  dlpx_storage_release(e->storage);
  free(e);
}

/* Removes the cells of producers that died without closing their exports
 * (killed: no destructor ran).  Only this user's files are touched. */
static void sweep_dead_cells(void) {
  DIR *d = opendir("/dev/shm");
  if (!d) return;
  const char prefix[] = "dlpx-cuda-ipc.";
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (strncmp(de->d_name, prefix, sizeof prefix - 1) != 0) continue;
    char *end;
    long pid = strtol(de->d_name + sizeof prefix - 1, &end, 10);
    if (*end != '.' || pid <= 0 || pid > INT32_MAX || alive((int32_t)pid)) continue;
    struct stat st;
    if (dlpx__fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        st.st_uid == geteuid() && S_ISREG(st.st_mode))
      (void)unlinkat(dirfd(d), de->d_name, 0);
  }
  closedir(d);
}

static int collect_closed(void);

int dlpx_cuda_ipc_collect(void) {
  sweep_dead_cells();
  return collect_closed();
}

static int collect_closed(void) {
  dlpx__error_state saved;
  dlpx__error_save(&saved);
  int pending = 0;
  pthread_mutex_lock(&lock);
  for (dlpx_cuda_export **pp = &exports; *pp;) {
    dlpx_cuda_export *e = *pp;
    if (e->closed && live_importers(e->cell) == 0) {
      *pp = e->next;
      export_free(e);
    } else {
      if (e->closed) pending++;
      pp = &e->next;
    }
  }
  pthread_mutex_unlock(&lock);
  dlpx__error_restore(&saved);
  return pending;
}

/* A process that exits leaves no cell behind. */
__attribute__((destructor)) static void unlink_cells(void) {
  char name[96];
  for (dlpx_cuda_export *e = exports; e; e = e->next) {
    cell_name(name, sizeof name, (int32_t)getpid(), e->id);
    unlink(name);
  }
}

static uint64_t random_nonce(void) {
  uint64_t v = 0;
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    if (read(fd, &v, sizeof v) != (ssize_t)sizeof v) v = 0;
    close(fd);
  }
  return v ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&v;
}

static int new_cell(uint64_t id, uint64_t nonce, cell **out) {
  char name[96];
  cell_name(name, sizeof name, (int32_t)getpid(), id);
  int fd = open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return dlpx__fail(DLPX_EIO, "cannot create %s: %s", name, strerror(errno));
  cell *c = ftruncate(fd, sizeof(cell)) == 0 ? cell_map(fd) : NULL;
  close(fd);
  if (!c) {
    unlink(name);
    return dlpx__fail(DLPX_EIO, "cannot map %s: %s", name, strerror(errno));
  }
  c->nonce = nonce;
  *out = c;
  return 0;
}

int dlpx_cuda_ipc_export(dlpx_storage *storage, dlpx_cuda_export **out,
                         dlpx_cuda_ipc_handle *handle) {
  if (!storage || !out || !handle) return dlpx__fail(DLPX_EINVAL, "storage, out or handle is NULL");
  if (storage->device.device_type != kDLCUDA)
    return dlpx__fail(DLPX_EDEVICE, "only CUDA device memory (kDLCUDA) can be shared by IPC");
  if (storage->nbytes == 0) return dlpx__fail(DLPX_EINVAL, "an empty storage has nothing to share");
  (void)dlpx_cuda_ipc_collect();
  int device = storage->device.device_id;
  const dlpx__cu_api *cu;
  int rc = dlpx__cu_enter(device, &cu);
  if (rc) return rc;
  wire w;
  memset(&w, 0, sizeof w);
  CUdeviceptr base = 0;
  size_t size = 0;
  CUevent ev = NULL;
  CUresult r = cu->MemGetAddressRange(&base, &size, (CUdeviceptr)storage->data);
  if (r == CUDA_SUCCESS) r = cu->IpcGetMemHandle(&w.mem, base);
  if (r == CUDA_SUCCESS) r = cu->EventCreate(&ev, CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS);
  if (r == CUDA_SUCCESS)
    r = cu->EventRecord(ev, dlpx__cu_stream(atomic_load(&storage->stream)));
  if (r == CUDA_SUCCESS) r = cu->IpcGetEventHandle(&w.event, ev);
  if (r != CUDA_SUCCESS) {
    if (ev) (void)cu->EventDestroy(ev);
    return dlpx__cu_fail_leave(r, "exporting CUDA memory by IPC");
  }
  dlpx__cu_leave();
  dlpx_cuda_export *e = calloc(1, sizeof *e);
  if (!e) {
    if (dlpx__cu_enter(device, &cu) == 0) {
      (void)cu->EventDestroy(ev);
      dlpx__cu_leave();
    }
    return dlpx__fail(DLPX_ENOMEM, "cannot allocate an IPC export");
  }
  pthread_mutex_lock(&lock);
  e->id = next_id++;
  pthread_mutex_unlock(&lock);
  w.magic = MAGIC;
  w.nonce = random_nonce();
  w.id = e->id;
  w.nbytes = storage->nbytes;
  w.offset = (uint64_t)((CUdeviceptr)storage->data - base);
  w.pid = (int32_t)getpid();
  w.device = device;
  rc = new_cell(e->id, w.nonce, &e->cell);
  if (rc) {
    if (dlpx__cu_enter(device, &cu) == 0) {
      (void)cu->EventDestroy(ev);
      dlpx__cu_leave();
    }
    free(e);
    return rc;
  }
  e->event = ev;
  e->storage = storage;
  dlpx_storage_retain(storage);
  memset(handle, 0, sizeof *handle);
  memcpy(handle->bytes, &w, sizeof w);
  pthread_mutex_lock(&lock);
  e->next = exports;
  exports = e;
  pthread_mutex_unlock(&lock);
  *out = e;
  return 0;
}

void dlpx_cuda_export_close(dlpx_cuda_export *e) {
  if (!e) return;
  pthread_mutex_lock(&lock);
  e->closed = true;
  pthread_mutex_unlock(&lock);
  (void)collect_closed();
}

/* ---- imports --------------------------------------------------------------------------- */

static void leave_cell(cell *c) {
  int32_t me = (int32_t)getpid();
  for (int i = 0; i < SLOTS; i++) {
    int32_t pid = me;
    if (atomic_compare_exchange_strong(&c->pids[i], &pid, 0)) break;
  }
  munmap(c, sizeof(cell));
}

typedef struct mapping {
  int32_t pid;
  uint64_t id, nonce;
  int device;
  CUdeviceptr base;
  CUevent event;
  cell *cell;
  int64_t refs; /* storages over it, under |lock| */
  struct mapping *next;
} mapping;

static mapping *mappings;

typedef struct {
  mapping *m;
} ipc_state;

static void close_mapping(mapping *m) {
  const dlpx__cu_api *cu;
  if (dlpx__cu_enter(m->device, &cu) == 0) {
    (void)cu->IpcCloseMemHandle(m->base);
    (void)cu->EventDestroy(m->event);
    dlpx__cu_leave();
  }
  leave_cell(m->cell);
  free(m);
}

static void ipc_release(dlpx_storage *s) {
  ipc_state *st = dlpx__storage_payload(s);
  dlpx__error_state saved;
  dlpx__error_save(&saved);
  mapping *m = st->m, *dead = NULL;
  pthread_mutex_lock(&lock);
  if (--m->refs == 0) {
    for (mapping **pp = &mappings; *pp; pp = &(*pp)->next)
      if (*pp == m) {
        *pp = m->next;
        break;
      }
    dead = m;
  }
  pthread_mutex_unlock(&lock);
  if (dead) {
    /* the consumer's work on it is ordered before its storage's stream */
    const dlpx__cu_api *cu;
    if (dlpx__cu_enter(dead->device, &cu) == 0) {
      (void)cu->StreamSynchronize(dlpx__cu_stream(atomic_load(&s->stream)));
      dlpx__cu_leave();
    }
    close_mapping(dead);
  }
  dlpx__error_restore(&saved);
}

static const dlpx__storage_ops ipc_ops = {DLPX_STORAGE_CUDA_IPC, "CUDA IPC mapping", ipc_release};

static int check_wire(const dlpx_cuda_ipc_handle *h, wire *w) {
  memcpy(w, h->bytes, sizeof *w);
  if (w->magic != MAGIC) return dlpx__fail(DLPX_EINVAL, "not a dlpx CUDA IPC handle");
  if (w->pid <= 0 || w->device < 0 || w->device >= DLPX__CUDA_MAX_DEVICES || w->nbytes == 0 ||
      w->nbytes > (uint64_t)INT64_MAX || w->offset > (uint64_t)INT64_MAX - w->nbytes)
    return dlpx__fail(DLPX_EINVAL, "a malformed CUDA IPC handle");
  if (w->pid == (int32_t)getpid())
    return dlpx__fail(DLPX_EINVAL, "a CUDA IPC handle is opened in another process than its "
                                   "producer (here, use the tensor itself)");
  return 0;
}

/* The reference cell of an export, counted in; ENOENT when the producer
 * or the export is gone. */
static int join_cell(const wire *w, cell **out) {
  char name[96];
  cell_name(name, sizeof name, w->pid, w->id);
  if (!alive(w->pid))
    return dlpx__fail(DLPX_ENOENT, "the producer (pid %d) of the CUDA IPC handle is gone",
                      (int)w->pid);
  int fd = open(name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0)
    return dlpx__fail(DLPX_ENOENT, "the CUDA IPC export %s is gone (its producer closed it or "
                                   "exited)", name + 9);
  struct stat st;
  if (dlpx__fstat(fd, &st) != 0 || st.st_size != (off_t)sizeof(cell) || st.st_uid != geteuid()) {
    close(fd);
    return dlpx__fail(DLPX_ENOENT, "%s is not the reference cell of a CUDA IPC export",
                      name + 9);
  }
  cell *c = cell_map(fd);
  close(fd);
  if (!c) return dlpx__fail(DLPX_EIO, "cannot map %s: %s", name, strerror(errno));
  if (c->nonce != w->nonce) {
    munmap(c, sizeof(cell));
    return dlpx__fail(DLPX_ENOENT, "the CUDA IPC handle is stale: %s belongs to another export",
                      name + 9);
  }
  for (int i = 0; i < SLOTS; i++) {
    int32_t free_slot = 0;
    if (atomic_compare_exchange_strong(&c->pids[i], &free_slot, (int32_t)getpid())) {
      *out = c;
      return 0;
    }
  }
  munmap(c, sizeof(cell));
  return dlpx__fail(DLPX_ENOMEM, "the CUDA IPC export %s has %d importers already", name + 9,
                    SLOTS);
}

static int open_mapping(const wire *w, mapping **out) {
  for (mapping *m = mappings; m; m = m->next)
    if (m->pid == w->pid && m->id == w->id && m->nonce == w->nonce) {
      m->refs++;
      *out = m;
      return 0;
    }
  mapping *m = calloc(1, sizeof *m);
  if (!m) return dlpx__fail(DLPX_ENOMEM, "cannot allocate an IPC mapping");
  int rc = join_cell(w, &m->cell);
  if (rc) {
    free(m);
    return rc;
  }
  const dlpx__cu_api *cu;
  rc = dlpx__cu_enter(w->device, &cu);
  if (!rc) {
    CUresult r = cu->IpcOpenMemHandle(&m->base, w->mem, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS);
    if (r == CUDA_SUCCESS) {
      r = cu->IpcOpenEventHandle(&m->event, w->event);
      if (r != CUDA_SUCCESS) (void)cu->IpcCloseMemHandle(m->base);
    }
    if (r != CUDA_SUCCESS) rc = dlpx__cu_fail(r, "opening a CUDA IPC handle");
    dlpx__cu_leave();
  }
  if (rc) {
    leave_cell(m->cell);
    free(m);
    return rc;
  }
  m->pid = w->pid;
  m->id = w->id;
  m->nonce = w->nonce;
  m->device = w->device;
  m->refs = 1;
  m->next = mappings;
  mappings = m;
  *out = m;
  return 0;
}

int dlpx_cuda_ipc_open(const dlpx_cuda_ipc_handle *handle, uintptr_t stream, dlpx_storage **out) {
  if (!handle || !out) return dlpx__fail(DLPX_EINVAL, "handle or out is NULL");
  wire w;
  int rc = check_wire(handle, &w);
  if (rc) return rc;
  (void)collect_closed();
  mapping *m = NULL;
  pthread_mutex_lock(&lock);
  rc = open_mapping(&w, &m);
  pthread_mutex_unlock(&lock);
  if (rc) return rc;
  /* the consumer's stream waits for the producer's writes (on the device) */
  const dlpx__cu_api *cu;
  rc = dlpx__cu_enter(w.device, &cu);
  if (!rc) {
    CUresult r = cu->StreamWaitEvent(dlpx__cu_stream(stream == UINTPTR_MAX ? 0 : stream),
                                     m->event, 0);
    if (r != CUDA_SUCCESS) rc = dlpx__cu_fail(r, "waiting for the producer's event");
    dlpx__cu_leave();
  }
  dlpx_storage *s = NULL;
  if (!rc) {
    s = dlpx__storage_new(&ipc_ops, sizeof(ipc_state), (char *)m->base + w.offset,
                          (size_t)w.nbytes, (DLDevice){kDLCUDA, w.device});
    if (!s) rc = DLPX_ENOMEM;
  }
  if (rc) {
    pthread_mutex_lock(&lock);
    bool last = --m->refs == 0;
    if (last)
      for (mapping **pp = &mappings; *pp; pp = &(*pp)->next)
        if (*pp == m) {
          *pp = m->next;
          break;
        }
    pthread_mutex_unlock(&lock);
    if (last) close_mapping(m);
    return rc;
  }
  ((ipc_state *)dlpx__storage_payload(s))->m = m;
  atomic_store(&s->stream, stream == UINTPTR_MAX ? 0 : stream);
  *out = s;
  return 0;
}

int dlpx_cuda_export_importers(const dlpx_cuda_export *e) {
  return e ? live_importers(e->cell) : 0;
}
