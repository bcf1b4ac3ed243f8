/*
 * fakecuda.c - a test double of the NVIDIA CUDA Driver API: the entry points
 * of src/cuda/driver.h, over host memory, for machines without a GPU.  The
 * tests load it in place of libcuda.so.1 through DLPX_LIBCUDA and steer it
 * with the control API of fakecuda.h.
 *
 * Modelled: cuInit before anything else; devices and their memory
 * (environment, see fakecuda.h); primary contexts and a per-thread context
 * stack; device memory in memfds, handed out with bit 62 set so that a host
 * read of it faults, checked on every use (a range must lie in one live
 * allocation); managed, pinned and registered host memory; streams, each a
 * worker thread running a FIFO of copies, memsets and event markers, with
 * the legacy default stream's implicit synchronisation with blocking
 * streams (per-thread default streams among them; synchronising or querying
 * the legacy stream covers their earlier work too); copies from pageable
 * host memory behave as the driver's (the source is taken at the call, a
 * copy into pageable memory returns once done); events with timing,
 * re-recording and stream waits on the record current at the wait; IPC of
 * memory and events between processes (pidfd_getfd, else /proc/<pid>/fd;
 * an interprocess event is a pair of counters in a shared page, and a wait
 * on it is for as many completed records as were made at the wait);
 * failure injection.
 *
 * Not modelled: kernels, arrays, peer access, memory pools, graphs, stream
 * priorities and callbacks, non-primary contexts, cuDevicePrimaryCtxRelease;
 * copy and memset delays apply to those only (event markers take no time).
 * Opening one IPC memory handle twice maps it twice (two pointers, each to
 * be closed), where the driver returns the same pointer.  After fork() the
 * child keeps cuInit, contexts and host memory but loses the parent's
 * streams, events, device memory and IPC mappings (it has no worker
 * threads); the driver does not support the child at all.  The destructor
 * discards work still queued and assumes no call is in flight.
 */
#include "driver.h"
#include "fakecuda.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

#define MAX_DEVICES 16
#define MAX_CONTEXT_DEPTH 64
#define MAX_ATTRIBUTE 140
#define DRIVER_VERSION 12040
#define DEVICE_TAG ((uintptr_t)1 << 62) /* non-canonical on x86-64 */
#define POLL_NS 200000L                 /* between looks at another process's counters */
#define IPC_MEM_MAGIC 0x4d494346u       /* "FCIM" */
#define IPC_EVENT_MAGIC 0x45494346u     /* "FCIE" */
#define SYS_PIDFD_OPEN 434
#define SYS_PIDFD_GETFD 438

/* Each entry point is fc_<field>, exported under its versioned name. */
#define DECLARE_ENTRY(field, name, vname, params) EXPORT CUresult fc_##field params __asm__(vname);
DLPX__CU_ENTRIES(DECLARE_ENTRY)

EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion,
                                    uint64_t flags, int *symbolStatus);
EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion,
                                 uint64_t flags);

#define ENTRY_ENUM(field, name, vname, params) E_##field,
enum entry { DLPX__CU_ENTRIES(ENTRY_ENUM) E_COUNT };

#define ENTRY_NAME(field, name, vname, params) name,
static const char *const entry_names[E_COUNT] = {DLPX__CU_ENTRIES(ENTRY_NAME)};

#define ENTRY_FUNCTION(field, name, vname, params) .field = fc_##field,
static const dlpx__cu_api entry_functions = {DLPX__CU_ENTRIES(ENTRY_FUNCTION)};

/* ---- state ------------------------------------------------------------------------ */

enum kind { K_DEVICE, K_MANAGED, K_HOST, K_REGISTERED, K_IPC };
#define KINDS_TAGGED (1u << K_DEVICE | 1u << K_IPC)
#define KINDS_OWNED_HOST (1u << K_MANAGED | 1u << K_HOST)
#define KINDS_HOST (KINDS_OWNED_HOST | 1u << K_REGISTERED)

/* Memory the double made or knows; freed when no queued operation uses it. */
struct alloc {
  struct alloc *next;
  enum kind kind;
  char *host; /* where it is in this process */
  size_t size;
  int device;
  int fd; /* K_DEVICE: its memfd, else -1 */
  uint64_t id;
  int refs; /* 1 while live, plus 1 per queued operation */
};

/* One cuEventRecord: done when its stream reaches it. */
struct record {
  int refs; /* its event's latest, its marker, waits on it */
  bool done;
  struct timespec stamp;
};

/* An interprocess event's record counters, in a page processes share: a
 * wait there is for completed >= the records made when it was enqueued. */
struct counters {
  _Atomic uint64_t recorded, completed;
};

struct CUevent_st {
  struct CUevent_st *next;
  unsigned flags;
  int device;
  int refs;              /* 1 while live, plus 1 per queued operation and waiter */
  struct record *last;   /* the latest record; NULL before the first */
  struct counters *page; /* interprocess events: the shared counters, else NULL */
  int fd;                /* exported interprocess event: the page's memfd, else -1 */
  uint64_t id;
};

/* Where one side of a copy is: its first byte, and the rows from there. */
struct side {
  char *base;
  size_t pitch, slice, extent;
  struct alloc *owner; /* the double's allocation holding it, or NULL */
  bool pageable;       /* host memory the double does not know */
};

enum op_kind { OP_COPY, OP_SET, OP_RECORD, OP_WAIT };

struct op {
  struct op *next;
  enum op_kind kind;
  uint64_t ticket; /* order of enqueueing, across all streams */
  struct side dst, src;
  size_t width, rows, depth;
  unsigned char value;
  unsigned delay_us; /* copies and memsets: the delay when enqueued */
  char *staged;      /* a pageable source, copied at the call */
  struct record *record; /* OP_RECORD: its record; OP_WAIT: the one waited for */
  struct CUevent_st *event;
  uint64_t seq; /* interprocess: the record's number, or the one waited for */
};

enum stream_kind { S_USER, S_LEGACY, S_PER_THREAD };

struct CUstream_st {
  struct CUstream_st *next;
  enum stream_kind kind;
  int device;
  bool blocking;  /* synchronises with the legacy stream */
  uint64_t owner; /* S_PER_THREAD: the thread's token */
  struct op *head, *tail;
  bool closing; /* destroyed: runs what it has, then its worker returns */
  bool exited;  /* its worker returned: to be joined */
  int users;    /* threads waiting on it */
  pthread_t thread;
};

struct CUctx_st {
  int device;
  int refs;
};

struct injection {
  long calls;
  int skip, code, always;
};

static struct {
  pthread_mutex_t lock; /* guards everything here */
  pthread_cond_t changed;
  bool initialized, shutting_down;
  int devices;
  size_t capacity, used[MAX_DEVICES];
  struct CUctx_st contexts[MAX_DEVICES];
  struct CUstream_st *legacy[MAX_DEVICES];
  struct CUstream_st *streams; /* live, draining and exited ones */
  struct alloc *allocs;        /* live ones */
  struct CUevent_st *events;   /* live ones */
  uint64_t tickets, ids;
  unsigned delay_us;
  struct injection inject[E_COUNT];
  pthread_key_t thread_key;
} g;

static _Thread_local struct {
  CUcontext stack[MAX_CONTEXT_DEPTH];
  int depth;
  uint64_t token; /* names the thread's per-thread streams */
} self;

/* ---- small helpers ---------------------------------------------------------------- */

static unsigned long long env_number(const char *name, unsigned long long fallback) {
  const char *s = getenv(name);
  if (!s || !*s) return fallback;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  return errno || *end ? fallback : v;
}

static void pause_us(unsigned us) {
  struct timespec t = {(time_t)(us / 1000000u), (long)(us % 1000000u) * 1000L};
  while (us && nanosleep(&t, &t) != 0 && errno == EINTR) {
  }
}

/* Waits under g.lock for a change; |poll|: also after POLL_NS, for counters
 * that another process moves. */
static void wait_change(bool poll) {
  if (!poll) {
    pthread_cond_wait(&g.changed, &g.lock);
    return;
  }
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  t.tv_nsec += POLL_NS;
  if (t.tv_nsec >= 1000000000L) {
    t.tv_sec++;
    t.tv_nsec -= 1000000000L;
  }
  pthread_cond_timedwait(&g.changed, &g.lock, &t);
}

static void init_sync(void) {
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&g.changed, &attr);
  pthread_condattr_destroy(&attr);
  pthread_mutex_init(&g.lock, NULL);
}

static int entry_index(const char *name) {
  for (int e = 0; name && e < E_COUNT; e++)
    if (!strcmp(name, entry_names[e])) return e;
  return -1;
}

static bool device_ok(CUdevice d) { return d >= 0 && d < g.devices; }

/* ---- calls: injection, initialisation, the current context ----------------------------- */

static CUresult injected(enum entry e) {
  struct injection *in = &g.inject[e];
  in->calls++;
  if (in->always) return in->always;
  if (!in->code || in->skip-- > 0) return CUDA_SUCCESS;
  int code = in->code;
  in->code = 0;
  return code;
}

enum need { NEED_NOTHING, NEED_INIT, NEED_CONTEXT };

/* Starts a call of |e|: takes g.lock (leave gives it back) and checks what
 * the call needs; with NEED_CONTEXT *device is the current context's. */
static CUresult enter(enum entry e, enum need need, int *device) {
  pthread_mutex_lock(&g.lock);
  CUresult r = injected(e);
  if (r != CUDA_SUCCESS) return r;
  if (g.shutting_down) return CUDA_ERROR_DEINITIALIZED;
  if (need >= NEED_INIT && !g.initialized) return CUDA_ERROR_NOT_INITIALIZED;
  if (need == NEED_CONTEXT) {
    if (self.depth == 0) return CUDA_ERROR_INVALID_CONTEXT;
    *device = self.stack[self.depth - 1]->device;
  }
  return CUDA_SUCCESS;
}

static CUresult leave(CUresult r) {
  pthread_mutex_unlock(&g.lock);
  return r;
}

/* ---- allocations ------------------------------------------------------------------------ */

static uintptr_t address_of(const struct alloc *a) {
  return (uintptr_t)a->host | ((1u << a->kind) & KINDS_TAGGED ? DEVICE_TAG : 0);
}

/* The live allocation of one of |kinds| holding host address |addr|. */
static struct alloc *alloc_at(uintptr_t addr, unsigned kinds) {
  for (struct alloc *a = g.allocs; a; a = a->next)
    if ((1u << a->kind) & kinds && addr >= (uintptr_t)a->host &&
        addr - (uintptr_t)a->host < a->size)
      return a;
  return NULL;
}

/* The live allocation of one of |kinds| whose pointer |p| is, exactly. */
static struct alloc *alloc_based(uintptr_t p, unsigned kinds) {
  struct alloc *a = alloc_at(p & ~DEVICE_TAG, kinds);
  return a && address_of(a) == p ? a : NULL;
}

static bool overlaps(uintptr_t addr, size_t bytes, unsigned kinds) {
  for (struct alloc *a = g.allocs; a; a = a->next)
    if ((1u << a->kind) & kinds && addr < (uintptr_t)a->host + a->size &&
        (uintptr_t)a->host < addr + bytes)
      return true;
  return false;
}

static struct alloc *alloc_add(enum kind kind, void *host, size_t size, int device, int fd) {
  struct alloc *a = calloc(1, sizeof *a);
  if (!a) return NULL;
  *a = (struct alloc){g.allocs, kind, host, size, device, fd, ++g.ids, 1};
  g.allocs = a;
  if (kind == K_DEVICE || kind == K_MANAGED) g.used[device] += size;
  return a;
}

static void alloc_unref(struct alloc *a) {
  if (!a || --a->refs > 0) return;
  if (a->kind == K_DEVICE || a->kind == K_IPC) munmap(a->host, a->size);
  if (a->kind == K_MANAGED || a->kind == K_HOST) free(a->host);
  if (a->fd >= 0) close(a->fd);
  free(a);
}

/* Takes |a| out of the live ones; its memory goes with its last user. */
static void alloc_remove(struct alloc *a) {
  struct alloc **p = &g.allocs;
  while (*p != a) p = &(*p)->next;
  *p = a->next;
  if (a->kind == K_DEVICE || a->kind == K_MANAGED) g.used[a->device] -= a->size;
  alloc_unref(a);
}

static void memfd_name(char *buf, size_t size, long pid, uint64_t id) {
  snprintf(buf, size, "fakecuda-%ld-%llu", pid, (unsigned long long)id);
}

/* A shared mapping of a new memfd of |bytes|, or MAP_FAILED. */
static void *shared_memory(size_t bytes, uint64_t id, int *fd) {
  char name[64];
  memfd_name(name, sizeof name, (long)getpid(), id);
  *fd = memfd_create(name, MFD_CLOEXEC);
  if (*fd < 0) return MAP_FAILED;
  void *p = ftruncate(*fd, (off_t)bytes) == 0
                ? mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0)
                : MAP_FAILED;
  if (p == MAP_FAILED) close(*fd);
  return p;
}

static CUresult device_alloc(int device, size_t bytes, struct alloc **out) {
  if (bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  if (bytes > g.capacity - g.used[device]) return CUDA_ERROR_OUT_OF_MEMORY;
  int fd;
  uint64_t id = g.ids + 1; /* the id alloc_add gives */
  void *p = shared_memory(bytes, id, &fd);
  if (p == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
  *out = alloc_add(K_DEVICE, p, bytes, device, fd);
  if (*out) return CUDA_SUCCESS;
  munmap(p, bytes);
  close(fd);
  return CUDA_ERROR_OUT_OF_MEMORY;
}

/* Page-aligned host memory the double owns: managed (zeroed) or pinned. */
static CUresult host_alloc(enum kind kind, int device, size_t bytes, void **out) {
  if (bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  if (kind == K_MANAGED && bytes > g.capacity - g.used[device]) return CUDA_ERROR_OUT_OF_MEMORY;
  void *p;
  if (posix_memalign(&p, 4096, bytes) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
  if (kind == K_MANAGED) memset(p, 0, bytes);
  if (alloc_add(kind, p, bytes, device, -1)) {
    *out = p;
    return CUDA_SUCCESS;
  }
  free(p);
  return CUDA_ERROR_OUT_OF_MEMORY;
}

/* Side |out| for |len| bytes at |offset| from |origin|, a device pointer or
 * a host one: a device range must lie in one live allocation, and so must a
 * host range that starts in one of the double's. */
static CUresult resolve(uintptr_t origin, size_t offset, size_t len, struct side *out) {
  uintptr_t tag = origin & DEVICE_TAG, addr;
  if (!(origin & ~DEVICE_TAG) || __builtin_add_overflow(origin & ~DEVICE_TAG, offset, &addr) ||
      addr & DEVICE_TAG)
    return CUDA_ERROR_INVALID_VALUE;
  struct alloc *a = alloc_at(addr, tag ? KINDS_TAGGED : KINDS_OWNED_HOST);
  if (tag && !a) return CUDA_ERROR_INVALID_VALUE;
  if (a && len > (uintptr_t)a->host + a->size - addr) return CUDA_ERROR_INVALID_VALUE;
  out->base = (char *)addr;
  out->extent = len;
  out->owner = a;
  out->pageable = !tag && !a && !alloc_at(addr, 1u << K_REGISTERED);
  return CUDA_SUCCESS;
}

/* ---- streams ------------------------------------------------------------------------------ */

static void event_unref(struct CUevent_st *ev);
static void record_unref(struct record *rec);
static void complete_record(const struct op *op);

static void op_free(struct op *op) {
  alloc_unref(op->dst.owner);
  alloc_unref(op->src.owner);
  if (op->event) event_unref(op->event);
  if (op->record) record_unref(op->record);
  free(op->staged);
  free(op);
}

/* True while |s| has work enqueued up to |ticket| not finished. */
static bool busy_upto(const struct CUstream_st *s, uint64_t ticket) {
  return s->head && s->head->ticket <= ticket;
}

/* The legacy stream waits for blocking streams' earlier work, and they for its. */
static bool legacy_order_met(const struct CUstream_st *s, uint64_t ticket) {
  if (s->kind == S_LEGACY) {
    for (const struct CUstream_st *t = g.streams; t; t = t->next)
      if (t->device == s->device && t->kind != S_LEGACY && t->blocking &&
          busy_upto(t, ticket - 1))
        return false;
    return true;
  }
  const struct CUstream_st *legacy = g.legacy[s->device];
  return !s->blocking || !legacy || !busy_upto(legacy, ticket - 1);
}

/* True while |s| has unfinished work up to |ticket|; for the legacy stream
 * that includes the blocking streams' (it synchronises with them). */
static bool stream_busy(const struct CUstream_st *s, uint64_t ticket) {
  return busy_upto(s, ticket) || (s->kind == S_LEGACY && !legacy_order_met(s, ticket + 1));
}

static bool op_ready(const struct CUstream_st *s, const struct op *op) {
  if (op->kind == OP_WAIT &&
      (op->record ? !op->record->done : atomic_load(&op->event->page->completed) < op->seq))
    return false;
  return legacy_order_met(s, op->ticket);
}

static void copy_rows(const struct op *op) {
  for (size_t z = 0; z < op->depth; z++)
    for (size_t y = 0; y < op->rows; y++)
      memmove(op->dst.base + z * op->dst.slice + y * op->dst.pitch,
              op->src.base + z * op->src.slice + y * op->src.pitch, op->width);
}

/* Runs |op|, under g.lock; data moves outside it, after its delay. */
static void run(struct op *op) {
  if (op->kind == OP_RECORD) complete_record(op);
  if (op->kind != OP_COPY && op->kind != OP_SET) return;
  pthread_mutex_unlock(&g.lock);
  pause_us(op->delay_us);
  if (op->kind == OP_SET)
    memset(op->dst.base, op->value, op->width);
  else
    copy_rows(op);
  pthread_mutex_lock(&g.lock);
}

static void discard_ops(struct CUstream_st *s) {
  while (s->head) {
    struct op *op = s->head;
    s->head = op->next;
    op_free(op);
  }
  s->tail = NULL;
}

static void *worker(void *arg) {
  struct CUstream_st *s = arg;
  pthread_mutex_lock(&g.lock);
  while (!g.shutting_down && (s->head || !s->closing)) {
    struct op *op = s->head;
    if (!op || !op_ready(s, op)) {
      wait_change(op && op->kind == OP_WAIT && !op->record);
      continue;
    }
    run(op);
    s->head = op->next;
    if (!s->head) s->tail = NULL;
    op_free(op);
    pthread_cond_broadcast(&g.changed);
  }
  discard_ops(s);
  s->exited = true;
  pthread_cond_broadcast(&g.changed);
  pthread_mutex_unlock(&g.lock);
  return NULL;
}

static struct CUstream_st *stream_new(enum stream_kind kind, int device, bool blocking) {
  struct CUstream_st *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->kind = kind;
  s->device = device;
  s->blocking = blocking;
  s->owner = kind == S_PER_THREAD ? self.token : 0;
  if (pthread_create(&s->thread, NULL, worker, s) != 0) {
    free(s);
    return NULL;
  }
  s->next = g.streams;
  g.streams = s;
  return s;
}

/* Joins and frees the streams whose workers returned and nobody waits on. */
static void reap(void) {
  for (struct CUstream_st **p = &g.streams; *p;) {
    struct CUstream_st *s = *p;
    if (!s->exited || s->users) {
      p = &s->next;
      continue;
    }
    *p = s->next;
    pthread_join(s->thread, NULL); /* it returned or is returning: needs no lock */
    free(s);
  }
}

static void close_stream(struct CUstream_st *s) {
  s->closing = true;
  pthread_cond_broadcast(&g.changed);
}

static struct CUstream_st *user_stream(CUstream h) {
  for (struct CUstream_st *s = g.streams; s; s = s->next)
    if (s == h && s->kind == S_USER && !s->closing) return s;
  return NULL;
}

static struct CUstream_st *per_thread_stream(int device) {
  if (!self.token) {
    self.token = ++g.ids;
    pthread_setspecific(g.thread_key, (void *)(uintptr_t)self.token);
  }
  for (struct CUstream_st *s = g.streams; s; s = s->next)
    if (s->kind == S_PER_THREAD && s->owner == self.token && s->device == device && !s->closing)
      return s;
  return stream_new(S_PER_THREAD, device, true);
}

/* The stream handle |h| names for work on |device| (NULL and 1 the legacy
 * stream, 2 the per-thread one, made on first use). */
static CUresult stream_of(CUstream h, int device, struct CUstream_st **out) {
  if (h == NULL || h == CU_STREAM_LEGACY) {
    if (!g.legacy[device]) g.legacy[device] = stream_new(S_LEGACY, device, true);
    *out = g.legacy[device];
  } else if (h == CU_STREAM_PER_THREAD) {
    *out = per_thread_stream(device);
  } else {
    *out = user_stream(h);
    if (!*out) return CUDA_ERROR_INVALID_HANDLE;
  }
  return *out ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

/* Waits until |s| finished its work up to |ticket| (stream_busy). */
static CUresult wait_stream(struct CUstream_st *s, uint64_t ticket) {
  s->users++;
  while (stream_busy(s, ticket) && !g.shutting_down) wait_change(false);
  s->users--;
  return g.shutting_down ? CUDA_ERROR_DEINITIALIZED : CUDA_SUCCESS;
}

static bool device_busy(int device, uint64_t ticket) {
  for (const struct CUstream_st *s = g.streams; s; s = s->next)
    if (s->device == device && busy_upto(s, ticket)) return true;
  return false;
}

/* Enqueues a copy of |tmpl| on |s|: the operation then holds what it uses.
 * A copy into pageable memory returns once done, as the driver's does. */
static CUresult submit(struct CUstream_st *s, const struct op *tmpl) {
  struct op *op = malloc(sizeof *op);
  if (!op) return CUDA_ERROR_OUT_OF_MEMORY;
  *op = *tmpl;
  if (op->kind == OP_COPY && op->src.pageable) {
    op->staged = malloc(op->src.extent);
    if (!op->staged) {
      free(op);
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
    memcpy(op->staged, op->src.base, op->src.extent);
    op->src.base = op->staged;
  }
  if (op->dst.owner) op->dst.owner->refs++;
  if (op->src.owner) op->src.owner->refs++;
  if (op->event) op->event->refs++;
  if (op->record) op->record->refs++;
  op->next = NULL;
  op->delay_us = g.delay_us;
  op->ticket = ++g.tickets;
  if (s->tail)
    s->tail->next = op;
  else
    s->head = op;
  s->tail = op;
  pthread_cond_broadcast(&g.changed);
  return op->dst.pageable ? wait_stream(s, op->ticket) : CUDA_SUCCESS;
}

/* ---- events -------------------------------------------------------------------------------- */

static struct CUevent_st *event_new(int device, unsigned flags) {
  struct CUevent_st *ev = calloc(1, sizeof *ev);
  if (!ev) return NULL;
  ev->flags = flags;
  ev->device = device;
  ev->refs = 1;
  ev->fd = -1;
  ev->id = ++g.ids;
  ev->next = g.events;
  g.events = ev;
  return ev;
}

static void record_unref(struct record *rec) {
  if (--rec->refs == 0) free(rec);
}

static void event_unref(struct CUevent_st *ev) {
  if (--ev->refs > 0) return;
  if (ev->last) record_unref(ev->last);
  if (ev->page) munmap(ev->page, sizeof *ev->page);
  if (ev->fd >= 0) close(ev->fd);
  free(ev);
}

static void event_remove(struct CUevent_st *ev) {
  struct CUevent_st **p = &g.events;
  while (*p != ev) p = &(*p)->next;
  *p = ev->next;
  event_unref(ev);
}

static struct CUevent_st *event_find(CUevent h) {
  for (struct CUevent_st *ev = g.events; ev; ev = ev->next)
    if (ev == h) return ev;
  return NULL;
}

/* Complete: never recorded, or its latest record done. */
static bool event_done(const struct CUevent_st *ev) {
  if (ev->page) return atomic_load(&ev->page->completed) >= atomic_load(&ev->page->recorded);
  return !ev->last || ev->last->done;
}

static void complete_record(const struct op *op) {
  op->record->done = true;
  clock_gettime(CLOCK_MONOTONIC, &op->record->stamp);
  struct counters *page = op->event->page;
  if (!page) return;
  uint64_t was = atomic_load(&page->completed);
  while (was < op->seq && !atomic_compare_exchange_weak(&page->completed, &was, op->seq)) {
  }
}

/* ---- IPC ----------------------------------------------------------------------------------- */

/* What an IPC handle holds. */
struct wire {
  uint32_t magic;
  int32_t pid, fd;
  uint64_t size, id;
};
_Static_assert(sizeof(struct wire) <= sizeof(CUipcMemHandle), "IPC handle too small");

static void wire_put(char *handle, uint32_t magic, int fd, size_t size, uint64_t id) {
  struct wire w;
  memset(&w, 0, sizeof w); /* no undefined padding in a handle that may be sent */
  w.magic = magic;
  w.pid = (int32_t)getpid();
  w.fd = fd;
  w.size = size;
  w.id = id;
  memset(handle, 0, sizeof(CUipcMemHandle));
  memcpy(handle, &w, sizeof w);
}

/* True when |fd| is the memfd the handle's exporter made for |w|. */
static bool is_exported_memfd(int fd, const struct wire *w) {
  char path[64], link[128], name[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(path, link, sizeof link - 1);
  if (n < 0) return false;
  link[n] = '\0';
  memfd_name(name, sizeof name, (long)w->pid, w->id);
  size_t len = strlen("/memfd:") + strlen(name);
  struct stat st;
  return !strncmp(link, "/memfd:", 7) && !strncmp(link + 7, name, strlen(name)) &&
         (link[len] == ' ' || link[len] == '\0') && fstat(fd, &st) == 0 &&
         (uint64_t)st.st_size == w->size;
}

/* Maps the exporter's memfd of |w|: MAP_FAILED with *r set on failure. */
static void *map_exported(const struct wire *w, CUresult *r) {
  *r = CUDA_ERROR_INVALID_HANDLE;
  int fd = -1, pidfd = (int)syscall(SYS_PIDFD_OPEN, (pid_t)w->pid, 0);
  if (pidfd >= 0) {
    fd = (int)syscall(SYS_PIDFD_GETFD, pidfd, w->fd, 0);
    close(pidfd);
  }
  if (fd < 0) { /* no pidfds, or not allowed: /proc needs less */
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)w->pid, (int)w->fd);
    fd = open(path, O_RDWR | O_CLOEXEC);
  }
  if (fd < 0) return MAP_FAILED;
  void *p = is_exported_memfd(fd, w)
                ? mmap(NULL, w->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                : MAP_FAILED;
  close(fd);
  return p;
}

/* Checks an IPC handle for opening: INVALID_VALUE for a bad one,
 * INVALID_CONTEXT in the exporting process. */
static CUresult wire_get(const char *handle, uint32_t magic, struct wire *w) {
  memcpy(w, handle, sizeof *w);
  if (w->magic != magic || w->size == 0) return CUDA_ERROR_INVALID_VALUE;
  return w->pid == (int32_t)getpid() ? CUDA_ERROR_INVALID_CONTEXT : CUDA_SUCCESS;
}

/* ---- initialisation, devices, errors ------------------------------------------------------ */

#define ERRORS(X)                                                                           \
  X(CUDA_SUCCESS, "no error")                                                               \
  X(CUDA_ERROR_INVALID_VALUE, "invalid argument")                                           \
  X(CUDA_ERROR_OUT_OF_MEMORY, "out of memory")                                              \
  X(CUDA_ERROR_NOT_INITIALIZED, "initialization error")                                     \
  X(CUDA_ERROR_DEINITIALIZED, "driver shutting down")                                       \
  X(CUDA_ERROR_STUB_LIBRARY, "CUDA driver is a stub library")                               \
  X(CUDA_ERROR_NO_DEVICE, "no CUDA-capable device is detected")                             \
  X(CUDA_ERROR_INVALID_DEVICE, "invalid device ordinal")                                    \
  X(CUDA_ERROR_INVALID_CONTEXT, "invalid device context")                                   \
  X(CUDA_ERROR_ALREADY_MAPPED, "resource already mapped")                                   \
  X(CUDA_ERROR_INVALID_HANDLE, "invalid resource handle")                                   \
  X(CUDA_ERROR_NOT_FOUND, "named symbol not found")                                         \
  X(CUDA_ERROR_NOT_READY, "device not ready")                                               \
  X(CUDA_ERROR_ILLEGAL_ADDRESS, "an illegal memory access was encountered")                 \
  X(CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED,                                              \
    "part or all of the requested memory range is already mapped")                          \
  X(CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED,                                                  \
    "pointer does not correspond to a registered memory region")                            \
  X(CUDA_ERROR_NOT_SUPPORTED, "operation not supported")                                    \
  X(CUDA_ERROR_UNKNOWN, "unknown error")

#define ERROR_ROW(code, text) {code, #code, text},
static const struct {
  CUresult code;
  const char *name, *text;
} errors[] = {ERRORS(ERROR_ROW)};

static CUresult error_text(CUresult e, const char **s, bool name) {
  if (!s) return CUDA_ERROR_INVALID_VALUE;
  *s = NULL;
  for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
    if (errors[i].code == e) {
      *s = name ? errors[i].name : errors[i].text;
      return CUDA_SUCCESS;
    }
  return CUDA_ERROR_INVALID_VALUE;
}

CUresult fc_Init(unsigned int flags) {
  CUresult r = enter(E_Init, NEED_NOTHING, NULL);
  if (r == CUDA_SUCCESS && flags != 0) r = CUDA_ERROR_INVALID_VALUE;
  if (r != CUDA_SUCCESS || g.initialized) return leave(r);
  unsigned long long n = env_number("FAKECUDA_DEVICES", 1);
  if (n == 0) return leave(CUDA_ERROR_NO_DEVICE);
  g.devices = n < MAX_DEVICES ? (int)n : MAX_DEVICES;
  g.capacity = (size_t)env_number("FAKECUDA_MEMORY", 1ull << 30);
  for (int d = 0; d < MAX_DEVICES; d++) g.contexts[d].device = d;
  g.initialized = true;
  return leave(CUDA_SUCCESS);
}

CUresult fc_DriverGetVersion(int *version) {
  CUresult r = enter(E_DriverGetVersion, NEED_NOTHING, NULL);
  if (r == CUDA_SUCCESS && !version) r = CUDA_ERROR_INVALID_VALUE;
  if (r == CUDA_SUCCESS) *version = DRIVER_VERSION;
  return leave(r);
}

CUresult fc_GetErrorName(CUresult e, const char **s) {
  CUresult r = enter(E_GetErrorName, NEED_NOTHING, NULL);
  return leave(r == CUDA_SUCCESS ? error_text(e, s, true) : r);
}

CUresult fc_GetErrorString(CUresult e, const char **s) {
  CUresult r = enter(E_GetErrorString, NEED_NOTHING, NULL);
  return leave(r == CUDA_SUCCESS ? error_text(e, s, false) : r);
}

CUresult fc_DeviceGetCount(int *count) {
  CUresult r = enter(E_DeviceGetCount, NEED_INIT, NULL);
  if (r == CUDA_SUCCESS && !count) r = CUDA_ERROR_INVALID_VALUE;
  if (r == CUDA_SUCCESS) *count = g.devices;
  return leave(r);
}

CUresult fc_DeviceGet(CUdevice *dev, int ordinal) {
  CUresult r = enter(E_DeviceGet, NEED_INIT, NULL);
  if (r == CUDA_SUCCESS && !dev) r = CUDA_ERROR_INVALID_VALUE;
  if (r == CUDA_SUCCESS && !device_ok(ordinal)) r = CUDA_ERROR_INVALID_DEVICE;
  if (r == CUDA_SUCCESS) *dev = ordinal;
  return leave(r);
}

CUresult fc_DeviceGetName(char *name, int len, CUdevice dev) {
  CUresult r = enter(E_DeviceGetName, NEED_INIT, NULL);
  if (r == CUDA_SUCCESS && (!name || len <= 0)) r = CUDA_ERROR_INVALID_VALUE;
  if (r == CUDA_SUCCESS && !device_ok(dev)) r = CUDA_ERROR_INVALID_DEVICE;
  if (r == CUDA_SUCCESS) snprintf(name, (size_t)len, "dlpx fake GPU %d", dev);
  return leave(r);
}

static int attribute(int attrib) {
  return attrib == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR ? 9
         : attrib == CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING     ? 1
                                                                : 0;
}

CUresult fc_DeviceGetAttribute(int *value, int attrib, CUdevice dev) {
  CUresult r = enter(E_DeviceGetAttribute, NEED_INIT, NULL);
  if (r == CUDA_SUCCESS && (!value || attrib < 1 || attrib > MAX_ATTRIBUTE))
    r = CUDA_ERROR_INVALID_VALUE;
  if (r == CUDA_SUCCESS && !device_ok(dev)) r = CUDA_ERROR_INVALID_DEVICE;
  if (r == CUDA_SUCCESS) *value = attribute(attrib);
  return leave(r);
}

CUresult fc_DeviceTotalMem(size_t *bytes, CUdevice dev) {
  CUresult r = enter(E_DeviceTotalMem, NEED_INIT, NULL);
  if (r == CUDA_SUCCESS && !bytes) r = CUDA_ERROR_INVALID_VALUE;
  if (r == CUDA_SUCCESS && !device_ok(dev)) r = CUDA_ERROR_INVALID_DEVICE;
  if (r == CUDA_SUCCESS) *bytes = g.capacity;
  return leave(r);
}

/* ---- contexts ------------------------------------------------------------------------------ */

CUresult fc_DevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev) {
  CUresult r = enter(E_DevicePrimaryCtxRetain, NEED_INIT, NULL);
  if (r == CUDA_SUCCESS && !ctx) r = CUDA_ERROR_INVALID_VALUE;
  if (r == CUDA_SUCCESS && !device_ok(dev)) r = CUDA_ERROR_INVALID_DEVICE;
  if (r == CUDA_SUCCESS) {
    g.contexts[dev].refs++;
    *ctx = &g.contexts[dev];
  }
  return leave(r);
}

static bool context_ok(CUcontext ctx) {
  for (int d = 0; d < g.devices; d++)
    if (ctx == &g.contexts[d]) return ctx->refs > 0;
  return false;
}

CUresult fc_CtxPushCurrent(CUcontext ctx) {
  CUresult r = enter(E_CtxPushCurrent, NEED_INIT, NULL);
  if (r == CUDA_SUCCESS && !context_ok(ctx)) r = CUDA_ERROR_INVALID_CONTEXT;
  if (r == CUDA_SUCCESS && self.depth == MAX_CONTEXT_DEPTH) r = CUDA_ERROR_INVALID_VALUE;
  if (r == CUDA_SUCCESS) self.stack[self.depth++] = ctx;
  return leave(r);
}

CUresult fc_CtxPopCurrent(CUcontext *ctx) {
  CUresult r = enter(E_CtxPopCurrent, NEED_INIT, NULL);
  if (r == CUDA_SUCCESS && self.depth == 0) r = CUDA_ERROR_INVALID_CONTEXT;
  if (r != CUDA_SUCCESS) return leave(r);
  self.depth--;
  if (ctx) *ctx = self.stack[self.depth];
  return leave(CUDA_SUCCESS);
}

CUresult fc_CtxSynchronize(void) {
  int dev;
  CUresult r = enter(E_CtxSynchronize, NEED_CONTEXT, &dev);
  uint64_t ticket = g.tickets;
  while (r == CUDA_SUCCESS && device_busy(dev, ticket))
    if (g.shutting_down)
      r = CUDA_ERROR_DEINITIALIZED;
    else
      wait_change(false);
  return leave(r);
}

/* ---- memory -------------------------------------------------------------------------------- */

CUresult fc_MemGetInfo(size_t *free_bytes, size_t *total) {
  int dev;
  CUresult r = enter(E_MemGetInfo, NEED_CONTEXT, &dev);
  if (r == CUDA_SUCCESS && (!free_bytes || !total)) r = CUDA_ERROR_INVALID_VALUE;
  if (r == CUDA_SUCCESS) {
    *free_bytes = g.capacity - g.used[dev];
    *total = g.capacity;
  }
  return leave(r);
}

CUresult fc_MemAlloc(CUdeviceptr *ptr, size_t bytes) {
  int dev;
  struct alloc *a;
  CUresult r = enter(E_MemAlloc, NEED_CONTEXT, &dev);
  if (r == CUDA_SUCCESS && !ptr) r = CUDA_ERROR_INVALID_VALUE;
  if (r == CUDA_SUCCESS) r = device_alloc(dev, bytes, &a);
  if (r == CUDA_SUCCESS) *ptr = address_of(a);
  return leave(r);
}

CUresult fc_MemFree(CUdeviceptr ptr) {
  int dev;
  CUresult r = enter(E_MemFree, NEED_CONTEXT, &dev);
  struct alloc *a = alloc_based(ptr, 1u << K_DEVICE | 1u << K_MANAGED);
  if (r == CUDA_SUCCESS && !a) r = CUDA_ERROR_INVALID_VALUE;
  if (r == CUDA_SUCCESS) alloc_remove(a);
  return leave(r);
}

CUresult fc_MemAllocManaged(CUdeviceptr *ptr, size_t bytes, unsigned int flags) {
  int dev;
  void *p;
  CUresult r = enter(E_MemAllocManaged, NEED_CONTEXT, &dev);
  if (r == CUDA_SUCCESS && (!ptr || (flags != CU_MEM_ATTACH_GLOBAL && flags != 2u)))
    r = CUDA_ERROR_INVALID_VALUE;
  if (r == CUDA_SUCCESS) r = host_alloc(K_MANAGED, dev, bytes, &p);
  if (r == CUDA_SUCCESS) *ptr = (CUdeviceptr)p;
  return leave(r);
}

CUresult fc_MemHostAlloc(void **ptr, size_t bytes, unsigned int flags) {
  int dev;
  CUresult r = enter(E_MemHostAlloc, NEED_CONTEXT, &dev);
  if (r == CUDA_SUCCESS && (!ptr || flags & ~0x7u)) r = CUDA_ERROR_INVALID_VALUE;
  if (r == CUDA_SUCCESS) r = host_alloc(K_HOST, dev, bytes, ptr);
  return leave(r);
}

CUresult fc_MemFreeHost(void *ptr) {
  int dev;
  CUresult r = enter(E_MemFreeHost, NEED_CONTEXT, &dev);
  struct alloc *a = alloc_based((uintptr_t)ptr, 1u << K_HOST);
  if (r == CUDA_SUCCESS && !a) r = CUDA_ERROR_INVALID_VALUE;
  if (r == CUDA_SUCCESS) alloc_remove(a);
  return leave(r);
}

CUresult fc_MemHostRegister(void *ptr, size_t bytes, unsigned int flags) {
  int dev;
  uintptr_t p = (uintptr_t)ptr;
  CUresult r = enter(E_MemHostRegister, NEED_CONTEXT, &dev);
  if (r == CUDA_SUCCESS && (!p || p & DEVICE_TAG || !bytes || flags & ~0xFu || p + bytes < p))
    r = CUDA_ERROR_INVALID_VALUE;
  if (r == CUDA_SUCCESS && overlaps(p, bytes, 1u << K_HOST | 1u << K_REGISTERED))
    r = CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
  if (r == CUDA_SUCCESS && !alloc_add(K_REGISTERED, ptr, bytes, dev, -1))
    r = CUDA_ERROR_OUT_OF_MEMORY;
  return leave(r);
}

CUresult fc_MemHostUnregister(void *ptr) {
  int dev;
  CUresult r = enter(E_MemHostUnregister, NEED_CONTEXT, &dev);
  struct alloc *a = alloc_based((uintptr_t)ptr, 1u << K_REGISTERED);
  if (r == CUDA_SUCCESS && !a) r = CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
  if (r == CUDA_SUCCESS) alloc_remove(a);
  return leave(r);
}

CUresult fc_MemGetAddressRange(CUdeviceptr *base, size_t *size, CUdeviceptr ptr) {
  int dev;
  CUresult r = enter(E_MemGetAddressRange, NEED_CONTEXT, &dev);
  bool tagged = ptr & DEVICE_TAG;
  struct alloc *a = alloc_at(ptr & ~DEVICE_TAG, tagged ? KINDS_TAGGED : KINDS_OWNED_HOST);
  if (r == CUDA_SUCCESS && !a) r = tagged ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_NOT_FOUND;
  if (r != CUDA_SUCCESS) return leave(r);
  if (base) *base = address_of(a);
  if (size) *size = a->size;
  return leave(CUDA_SUCCESS);
}

CUresult fc_PointerGetAttribute(void *data, int attribute, CUdeviceptr ptr) {
  CUresult r = enter(E_PointerGetAttribute, NEED_INIT, NULL);
  struct alloc *a = alloc_at(ptr & ~DEVICE_TAG, ptr & DEVICE_TAG ? KINDS_TAGGED : KINDS_HOST);
  if (r == CUDA_SUCCESS && (!data || !a)) r = CUDA_ERROR_INVALID_VALUE;
  if (r != CUDA_SUCCESS) return leave(r);
  if (attribute == CU_POINTER_ATTRIBUTE_MEMORY_TYPE) {
    unsigned type = (1u << a->kind) & KINDS_HOST & ~(1u << K_MANAGED) ? CU_MEMORYTYPE_HOST
                                                                        : CU_MEMORYTYPE_DEVICE;
    memcpy(data, &type, sizeof type);
  } else if (attribute == CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL) {
    memcpy(data, &a->device, sizeof a->device);
  } else {
    r = CUDA_ERROR_INVALID_VALUE;
  }
  return leave(r);
}

/* ---- copies -------------------------------------------------------------------------------- */

/* One side of a 2D or 3D copy, as its descriptor gives it. */
struct place {
  int type;
  const void *host;
  CUdeviceptr device;
  size_t x, y, z, pitch, height;
};

/* Where the |depth| x |rows| x |width| bytes of |p| are: arrays are not
 * modelled, a row must fit its pitch and a slice its height. */
static CUresult side_of(const struct place *p, size_t width, size_t rows, size_t depth,
                        struct side *out) {
  uintptr_t origin = p->type == CU_MEMORYTYPE_HOST ? (uintptr_t)p->host : p->device;
  if ((p->type != CU_MEMORYTYPE_HOST && p->type != CU_MEMORYTYPE_DEVICE &&
       p->type != CU_MEMORYTYPE_UNIFIED) ||
      (p->type == CU_MEMORYTYPE_HOST && origin & DEVICE_TAG) || width > p->pitch ||
      (depth > 1 && p->height < rows))
    return CUDA_ERROR_INVALID_VALUE;
  size_t slice, at_z, at_y, offset, last_z, last_y, extent;
  if (__builtin_mul_overflow(p->pitch, p->height, &slice) ||
      __builtin_mul_overflow(p->z, slice, &at_z) ||
      __builtin_mul_overflow(p->y, p->pitch, &at_y) ||
      __builtin_add_overflow(at_z, at_y, &offset) ||
      __builtin_add_overflow(offset, p->x, &offset) ||
      __builtin_mul_overflow(depth - 1, slice, &last_z) ||
      __builtin_mul_overflow(rows - 1, p->pitch, &last_y) ||
      __builtin_add_overflow(last_z, last_y, &extent) ||
      __builtin_add_overflow(extent, width, &extent))
    return CUDA_ERROR_INVALID_VALUE;
  out->pitch = p->pitch;
  out->slice = slice;
  return resolve(origin, offset, extent, out);
}

/* Enqueues a copy of |depth| x |rows| x |width| bytes from |src| to |dst|. */
static CUresult copy_boxes(int dev, const struct place *dst, const struct place *src,
                           size_t width, size_t rows, size_t depth, CUstream stream) {
  struct CUstream_st *s;
  struct op op = {.kind = OP_COPY, .width = width, .rows = rows, .depth = depth};
  CUresult r = stream_of(stream, dev, &s);
  if (r != CUDA_SUCCESS || !width || !rows || !depth) return r;
  r = side_of(dst, width, rows, depth, &op.dst);
  if (r == CUDA_SUCCESS) r = side_of(src, width, rows, depth, &op.src);
  return r == CUDA_SUCCESS ? submit(s, &op) : r;
}

CUresult fc_MemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream stream) {
  int dev;
  struct CUstream_st *s;
  struct op op = {.kind = OP_COPY, .width = bytes, .rows = 1, .depth = 1};
  CUresult r = enter(E_MemcpyAsync, NEED_CONTEXT, &dev);
  if (r == CUDA_SUCCESS) r = stream_of(stream, dev, &s);
  if (r != CUDA_SUCCESS || bytes == 0) return leave(r);
  r = resolve(dst, 0, bytes, &op.dst);
  if (r == CUDA_SUCCESS) r = resolve(src, 0, bytes, &op.src);
  return leave(r == CUDA_SUCCESS ? submit(s, &op) : r);
}

CUresult fc_Memcpy2DAsync(const CUDA_MEMCPY2D *c, CUstream stream) {
  int dev;
  CUresult r = enter(E_Memcpy2DAsync, NEED_CONTEXT, &dev);
  if (r == CUDA_SUCCESS && !c) r = CUDA_ERROR_INVALID_VALUE;
  if (r != CUDA_SUCCESS) return leave(r);
  struct place dst = {c->dstMemoryType, c->dstHost, c->dstDevice, c->dstXInBytes, c->dstY, 0,
                      c->dstPitch, c->Height};
  struct place src = {c->srcMemoryType, c->srcHost, c->srcDevice, c->srcXInBytes, c->srcY, 0,
                      c->srcPitch, c->Height};
  return leave(copy_boxes(dev, &dst, &src, c->WidthInBytes, c->Height, 1, stream));
}

CUresult fc_Memcpy3DAsync(const CUDA_MEMCPY3D *c, CUstream stream) {
  int dev;
  CUresult r = enter(E_Memcpy3DAsync, NEED_CONTEXT, &dev);
  if (r == CUDA_SUCCESS && (!c || c->srcLOD || c->dstLOD)) r = CUDA_ERROR_INVALID_VALUE;
  if (r != CUDA_SUCCESS) return leave(r);
  struct place dst = {c->dstMemoryType, c->dstHost, c->dstDevice, c->dstXInBytes, c->dstY,
                      c->dstZ, c->dstPitch, c->dstHeight};
  struct place src = {c->srcMemoryType, c->srcHost, c->srcDevice, c->srcXInBytes, c->srcY,
                      c->srcZ, c->srcPitch, c->srcHeight};
  return leave(copy_boxes(dev, &dst, &src, c->WidthInBytes, c->Height, c->Depth, stream));
}

CUresult fc_MemsetD8Async(CUdeviceptr dst, unsigned char value, size_t n, CUstream stream) {
  int dev;
  struct CUstream_st *s;
  struct op op = {.kind = OP_SET, .width = n, .value = value};
  CUresult r = enter(E_MemsetD8Async, NEED_CONTEXT, &dev);
  if (r == CUDA_SUCCESS) r = stream_of(stream, dev, &s);
  if (r != CUDA_SUCCESS || n == 0) return leave(r);
  r = resolve(dst, 0, n, &op.dst);
  return leave(r == CUDA_SUCCESS ? submit(s, &op) : r);
}

/* ---- stream entry points ------------------------------------------------------------------- */

CUresult fc_StreamCreate(CUstream *stream, unsigned int flags) {
  int dev;
  CUresult r = enter(E_StreamCreate, NEED_CONTEXT, &dev);
  if (r == CUDA_SUCCESS && (!stream || flags & ~CU_STREAM_NON_BLOCKING))
    r = CUDA_ERROR_INVALID_VALUE;
  if (r != CUDA_SUCCESS) return leave(r);
  reap();
  *stream = stream_new(S_USER, dev, !(flags & CU_STREAM_NON_BLOCKING));
  return leave(*stream ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY);
}

CUresult fc_StreamDestroy(CUstream stream) {
  int dev;
  CUresult r = enter(E_StreamDestroy, NEED_CONTEXT, &dev);
  struct CUstream_st *s = user_stream(stream);
  if (r == CUDA_SUCCESS && !s) r = CUDA_ERROR_INVALID_HANDLE;
  if (r != CUDA_SUCCESS) return leave(r);
  close_stream(s);
  reap();
  return leave(CUDA_SUCCESS);
}

CUresult fc_StreamSynchronize(CUstream stream) {
  int dev;
  struct CUstream_st *s;
  CUresult r = enter(E_StreamSynchronize, NEED_CONTEXT, &dev);
  if (r == CUDA_SUCCESS) r = stream_of(stream, dev, &s);
  return leave(r == CUDA_SUCCESS ? wait_stream(s, g.tickets) : r);
}

CUresult fc_StreamQuery(CUstream stream) {
  int dev;
  struct CUstream_st *s;
  CUresult r = enter(E_StreamQuery, NEED_CONTEXT, &dev);
  if (r == CUDA_SUCCESS) r = stream_of(stream, dev, &s);
  return leave(r == CUDA_SUCCESS && stream_busy(s, g.tickets) ? CUDA_ERROR_NOT_READY : r);
}

CUresult fc_StreamWaitEvent(CUstream stream, CUevent event, unsigned int flags) {
  int dev;
  struct CUstream_st *s;
  CUresult r = enter(E_StreamWaitEvent, NEED_CONTEXT, &dev);
  struct CUevent_st *ev = event_find(event);
  if (r == CUDA_SUCCESS && flags) r = CUDA_ERROR_INVALID_VALUE;
  if (r == CUDA_SUCCESS && !ev) r = CUDA_ERROR_INVALID_HANDLE;
  if (r == CUDA_SUCCESS) r = stream_of(stream, dev, &s);
  if (r != CUDA_SUCCESS || event_done(ev)) return leave(r);
  struct op op = {.kind = OP_WAIT};
  if (ev->page) {
    op.event = ev;
    op.seq = atomic_load(&ev->page->recorded);
  } else {
    op.record = ev->last;
  }
  return leave(submit(s, &op));
}

/* ---- event entry points -------------------------------------------------------------------- */

CUresult fc_EventCreate(CUevent *event, unsigned int flags) {
  int dev;
  CUresult r = enter(E_EventCreate, NEED_CONTEXT, &dev);
  if (r == CUDA_SUCCESS &&
      (!event || flags & ~0x7u ||
       (flags & CU_EVENT_INTERPROCESS && !(flags & CU_EVENT_DISABLE_TIMING))))
    r = CUDA_ERROR_INVALID_VALUE;
  if (r != CUDA_SUCCESS) return leave(r);
  struct CUevent_st *ev = event_new(dev, flags);
  if (!ev) return leave(CUDA_ERROR_OUT_OF_MEMORY);
  if (flags & CU_EVENT_INTERPROCESS) {
    void *page = shared_memory(sizeof *ev->page, ev->id, &ev->fd);
    if (page == MAP_FAILED) {
      ev->fd = -1;
      event_remove(ev);
      return leave(CUDA_ERROR_OUT_OF_MEMORY);
    }
    ev->page = page;
  }
  *event = ev;
  return leave(CUDA_SUCCESS);
}

CUresult fc_EventDestroy(CUevent event) {
  int dev;
  CUresult r = enter(E_EventDestroy, NEED_CONTEXT, &dev);
  struct CUevent_st *ev = event_find(event);
  if (r == CUDA_SUCCESS && !ev) r = CUDA_ERROR_INVALID_HANDLE;
  if (r == CUDA_SUCCESS) event_remove(ev);
  return leave(r);
}

CUresult fc_EventRecord(CUevent event, CUstream stream) {
  int dev;
  struct CUstream_st *s;
  CUresult r = enter(E_EventRecord, NEED_CONTEXT, &dev);
  struct CUevent_st *ev = event_find(event);
  if (r == CUDA_SUCCESS && !ev) r = CUDA_ERROR_INVALID_HANDLE;
  if (r == CUDA_SUCCESS) r = stream_of(stream, dev, &s);
  if (r == CUDA_SUCCESS && s->device != ev->device) r = CUDA_ERROR_INVALID_HANDLE;
  struct record *rec = r == CUDA_SUCCESS ? calloc(1, sizeof *rec) : NULL;
  if (r == CUDA_SUCCESS && !rec) r = CUDA_ERROR_OUT_OF_MEMORY;
  if (r != CUDA_SUCCESS) return leave(r);
  rec->refs = 1; /* the event's */
  struct op op = {.kind = OP_RECORD, .event = ev, .record = rec};
  if (ev->page) op.seq = atomic_load(&ev->page->recorded) + 1;
  r = submit(s, &op);
  if (r != CUDA_SUCCESS) {
    free(rec);
    return leave(r);
  }
  if (ev->page) atomic_fetch_add(&ev->page->recorded, 1);
  if (ev->last) record_unref(ev->last);
  ev->last = rec;
  return leave(CUDA_SUCCESS);
}

CUresult fc_EventSynchronize(CUevent event) {
  int dev;
  CUresult r = enter(E_EventSynchronize, NEED_CONTEXT, &dev);
  struct CUevent_st *ev = event_find(event);
  if (r == CUDA_SUCCESS && !ev) r = CUDA_ERROR_INVALID_HANDLE;
  if (r != CUDA_SUCCESS) return leave(r);
  struct record *rec = ev->page ? NULL : ev->last;
  uint64_t target = ev->page ? atomic_load(&ev->page->recorded) : 0;
  ev->refs++; /* another thread may destroy it meanwhile, or record it again */
  if (rec) rec->refs++;
  while (!g.shutting_down && (rec ? !rec->done
                                  : ev->page && atomic_load(&ev->page->completed) < target))
    wait_change(!rec);
  if (rec) record_unref(rec);
  event_unref(ev);
  return leave(g.shutting_down ? CUDA_ERROR_DEINITIALIZED : CUDA_SUCCESS);
}

CUresult fc_EventQuery(CUevent event) {
  int dev;
  CUresult r = enter(E_EventQuery, NEED_CONTEXT, &dev);
  struct CUevent_st *ev = event_find(event);
  if (r == CUDA_SUCCESS && !ev) r = CUDA_ERROR_INVALID_HANDLE;
  return leave(r == CUDA_SUCCESS && !event_done(ev) ? CUDA_ERROR_NOT_READY : r);
}

static double seconds(const struct timespec *t) { return (double)t->tv_sec + t->tv_nsec / 1e9; }

CUresult fc_EventElapsedTime(float *ms, CUevent start, CUevent end) {
  int dev;
  CUresult r = enter(E_EventElapsedTime, NEED_CONTEXT, &dev);
  struct CUevent_st *a = event_find(start), *b = event_find(end);
  if (r == CUDA_SUCCESS && !ms) r = CUDA_ERROR_INVALID_VALUE;
  if (r == CUDA_SUCCESS &&
      (!a || !b || (a->flags | b->flags) & CU_EVENT_DISABLE_TIMING || !a->last || !b->last))
    r = CUDA_ERROR_INVALID_HANDLE;
  if (r == CUDA_SUCCESS && (!a->last->done || !b->last->done)) r = CUDA_ERROR_NOT_READY;
  if (r == CUDA_SUCCESS)
    *ms = (float)((seconds(&b->last->stamp) - seconds(&a->last->stamp)) * 1e3);
  return leave(r);
}

/* ---- IPC entry points ---------------------------------------------------------------------- */

CUresult fc_IpcGetMemHandle(CUipcMemHandle *handle, CUdeviceptr ptr) {
  int dev;
  CUresult r = enter(E_IpcGetMemHandle, NEED_CONTEXT, &dev);
  struct alloc *a = alloc_based(ptr, 1u << K_DEVICE);
  if (r == CUDA_SUCCESS && (!handle || !a)) r = CUDA_ERROR_INVALID_VALUE;
  if (r == CUDA_SUCCESS) wire_put(handle->reserved, IPC_MEM_MAGIC, a->fd, a->size, a->id);
  return leave(r);
}

CUresult fc_IpcOpenMemHandle(CUdeviceptr *ptr, CUipcMemHandle handle, unsigned int flags) {
  int dev;
  struct wire w;
  CUresult r = enter(E_IpcOpenMemHandle, NEED_CONTEXT, &dev);
  if (r == CUDA_SUCCESS && (!ptr || flags & ~CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS))
    r = CUDA_ERROR_INVALID_VALUE;
  if (r == CUDA_SUCCESS) r = wire_get(handle.reserved, IPC_MEM_MAGIC, &w);
  if (r != CUDA_SUCCESS) return leave(r);
  void *p = map_exported(&w, &r);
  if (p == MAP_FAILED) return leave(r);
  struct alloc *a = alloc_add(K_IPC, p, w.size, dev, -1);
  if (!a) {
    munmap(p, w.size);
    return leave(CUDA_ERROR_OUT_OF_MEMORY);
  }
  *ptr = address_of(a);
  return leave(CUDA_SUCCESS);
}

CUresult fc_IpcCloseMemHandle(CUdeviceptr ptr) {
  int dev;
  CUresult r = enter(E_IpcCloseMemHandle, NEED_CONTEXT, &dev);
  struct alloc *a = alloc_based(ptr, 1u << K_IPC);
  if (r == CUDA_SUCCESS && !a) r = CUDA_ERROR_INVALID_VALUE;
  if (r == CUDA_SUCCESS) alloc_remove(a);
  return leave(r);
}

CUresult fc_IpcGetEventHandle(CUipcEventHandle *handle, CUevent event) {
  int dev;
  CUresult r = enter(E_IpcGetEventHandle, NEED_CONTEXT, &dev);
  struct CUevent_st *ev = event_find(event);
  if (r == CUDA_SUCCESS && !ev) r = CUDA_ERROR_INVALID_HANDLE;
  if (r == CUDA_SUCCESS && (!handle || ev->fd < 0)) r = CUDA_ERROR_INVALID_VALUE;
  if (r == CUDA_SUCCESS)
    wire_put(handle->reserved, IPC_EVENT_MAGIC, ev->fd, sizeof *ev->page, ev->id);
  return leave(r);
}

CUresult fc_IpcOpenEventHandle(CUevent *event, CUipcEventHandle handle) {
  int dev;
  struct wire w;
  CUresult r = enter(E_IpcOpenEventHandle, NEED_CONTEXT, &dev);
  if (r == CUDA_SUCCESS && !event) r = CUDA_ERROR_INVALID_VALUE;
  if (r == CUDA_SUCCESS) r = wire_get(handle.reserved, IPC_EVENT_MAGIC, &w);
  if (r == CUDA_SUCCESS && w.size != sizeof(struct counters)) r = CUDA_ERROR_INVALID_VALUE;
  if (r != CUDA_SUCCESS) return leave(r);
  void *page = map_exported(&w, &r);
  if (page == MAP_FAILED) return leave(r);
  struct CUevent_st *ev = event_new(dev, CU_EVENT_INTERPROCESS | CU_EVENT_DISABLE_TIMING);
  if (!ev) {
    munmap(page, w.size);
    return leave(CUDA_ERROR_OUT_OF_MEMORY);
  }
  ev->page = page;
  *event = ev;
  return leave(CUDA_SUCCESS);
}

/* ---- cuGetProcAddress ---------------------------------------------------------------------- */

CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion, uint64_t flags,
                             int *symbolStatus) {
  (void)cudaVersion;
  (void)flags;
  const char *off = getenv("FAKECUDA_NO_GETPROC");
  if (off && *off) return CUDA_ERROR_NOT_SUPPORTED;
  if (!symbol || !pfn) return CUDA_ERROR_INVALID_VALUE;
  *pfn = NULL;
#define FIND_ENTRY(field, name, vname, params) \
  if (!strcmp(symbol, name)) memcpy(pfn, &entry_functions.field, sizeof *pfn);
  DLPX__CU_ENTRIES(FIND_ENTRY)
#undef FIND_ENTRY
  if (symbolStatus) *symbolStatus = *pfn ? 0 : 1; /* 1: CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND */
  return *pfn ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}

CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, uint64_t flags) {
  return cuGetProcAddress_v2(symbol, pfn, cudaVersion, flags, NULL);
}

/* ---- control API --------------------------------------------------------------------------- */

static void inject(const char *entry, int after, int code, bool always) {
  int e = entry_index(entry);
  if (e < 0) {
    fprintf(stderr, "fakecuda: no entry %s to fail\n", entry ? entry : "(null)");
    return;
  }
  pthread_mutex_lock(&g.lock);
  struct injection *in = &g.inject[e];
  if (code == 0)
    in->code = in->always = 0;
  else if (always)
    in->always = code;
  else {
    in->skip = after > 0 ? after : 0;
    in->code = code;
  }
  pthread_mutex_unlock(&g.lock);
}

EXPORT void fakecuda_fail(const char *entry, int after, int code) {
  inject(entry, after, code, false);
}

EXPORT void fakecuda_fail_always(const char *entry, int code) { inject(entry, 0, code, true); }

EXPORT long fakecuda_calls(const char *entry) {
  int e = entry_index(entry);
  if (e < 0) return -1;
  pthread_mutex_lock(&g.lock);
  long n = g.inject[e].calls;
  pthread_mutex_unlock(&g.lock);
  return n;
}

EXPORT void fakecuda_reset_counts(void) {
  pthread_mutex_lock(&g.lock);
  for (int e = 0; e < E_COUNT; e++) g.inject[e].calls = 0;
  pthread_mutex_unlock(&g.lock);
}

EXPORT void fakecuda_set_delay_us(unsigned us) {
  pthread_mutex_lock(&g.lock);
  g.delay_us = us;
  pthread_mutex_unlock(&g.lock);
}

EXPORT long long fakecuda_live_bytes(int device) {
  if (device < 0 || device >= MAX_DEVICES) return -1;
  pthread_mutex_lock(&g.lock);
  long long n = device < g.devices ? (long long)g.used[device] : -1;
  pthread_mutex_unlock(&g.lock);
  return n;
}

EXPORT long fakecuda_live_allocations(void) {
  long n = 0;
  pthread_mutex_lock(&g.lock);
  for (const struct alloc *a = g.allocs; a; a = a->next) n++;
  pthread_mutex_unlock(&g.lock);
  return n;
}

EXPORT long fakecuda_live_streams(void) {
  long n = 0;
  pthread_mutex_lock(&g.lock);
  for (const struct CUstream_st *s = g.streams; s; s = s->next)
    n += s->kind == S_USER && !s->closing;
  pthread_mutex_unlock(&g.lock);
  return n;
}

EXPORT long fakecuda_live_events(void) {
  long n = 0;
  pthread_mutex_lock(&g.lock);
  for (const struct CUevent_st *ev = g.events; ev; ev = ev->next) n++;
  pthread_mutex_unlock(&g.lock);
  return n;
}

EXPORT int fakecuda_is_device_pointer(uintptr_t p) {
  pthread_mutex_lock(&g.lock);
  int yes = p & DEVICE_TAG && alloc_at(p & ~DEVICE_TAG, KINDS_TAGGED);
  pthread_mutex_unlock(&g.lock);
  return yes;
}

/* ---- life cycle ---------------------------------------------------------------------------- */

/* FAKECUDA_FAIL: "entry:after:code,..." */
static void inject_from_env(void) {
  const char *spec = getenv("FAKECUDA_FAIL");
  char *copy = spec ? strdup(spec) : NULL, *save = NULL;
  for (char *item = copy ? strtok_r(copy, ",", &save) : NULL; item;
       item = strtok_r(NULL, ",", &save)) {
    char name[64];
    int after, code;
    if (sscanf(item, " %63[^:]:%d:%d", name, &after, &code) == 3)
      fakecuda_fail(name, after, code);
    else
      fprintf(stderr, "fakecuda: FAKECUDA_FAIL item \"%s\" is not entry:after:code\n", item);
  }
  free(copy);
}

/* A thread that used CU_STREAM_PER_THREAD exits: its streams drain and go. */
static void thread_gone(void *token) {
  pthread_mutex_lock(&g.lock);
  for (struct CUstream_st *s = g.streams; s; s = s->next)
    if (s->kind == S_PER_THREAD && s->owner == (uintptr_t)token) close_stream(s);
  pthread_mutex_unlock(&g.lock);
}

/* Drops the streams (whose workers are gone or joined), then the events and
 * the memory of |kinds|. */
static void drop_state(unsigned kinds) {
  while (g.streams) {
    struct CUstream_st *s = g.streams;
    g.streams = s->next;
    discard_ops(s);
    free(s);
  }
  memset(g.legacy, 0, sizeof g.legacy);
  while (g.events) event_remove(g.events);
  for (struct alloc **p = &g.allocs; *p;) {
    if ((1u << (*p)->kind) & kinds)
      alloc_remove(*p);
    else
      p = &(*p)->next;
  }
}

static void before_fork(void) { pthread_mutex_lock(&g.lock); }
static void after_fork_parent(void) { pthread_mutex_unlock(&g.lock); }

/* The child has no worker threads: it keeps cuInit, contexts and host
 * memory, and starts again without streams, events and device memory. */
static void after_fork_child(void) {
  init_sync();
  drop_state(KINDS_TAGGED);
}

__attribute__((constructor)) static void load(void) {
  init_sync();
  g.delay_us = (unsigned)env_number("FAKECUDA_DELAY_US", 0);
  inject_from_env();
  pthread_key_create(&g.thread_key, thread_gone);
  pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

__attribute__((destructor)) static void unload(void) {
  pthread_mutex_lock(&g.lock);
  g.shutting_down = true;
  pthread_cond_broadcast(&g.changed);
  struct CUstream_st *streams = g.streams;
  pthread_mutex_unlock(&g.lock);
  for (struct CUstream_st *s = streams; s; s = s->next) pthread_join(s->thread, NULL);
  pthread_mutex_lock(&g.lock);
  drop_state(~0u);
  pthread_mutex_unlock(&g.lock);
  pthread_key_delete(g.thread_key);
}
