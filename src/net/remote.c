/* remote.c - dlpx/remote.h: safetensors files opened from URLs (the
 * header with one small request, tensors by concurrent ranged GETs into
 * their final memory, verified as they arrive), uploads (S3 multipart,
 * aborted on failure), copies, listing and deletion. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../io/io.h"
#include "../glibc_compat.h"
#include "net.h"

#define PROBE_SIZE ((uint64_t)64 << 10)
#define COALESCE_GAP ((uint64_t)64 << 10) /* read and drop gaps this small */
#define PARALLEL_MIN_BYTES ((uint64_t)64 << 20) /* smaller reads: one thread */
#define READ_THREADS_MAX 4u                     /* the automatic choice's limit */
#define READ_THREADS_CAP DLPX__REMOTE_THREADS_MAX
#define S3_MIN_PART ((uint64_t)5 << 20)
#define S3_MAX_PARTS 10000u

/* ---- opening ---------------------------------------------------------------- */

void dlpx__remote_free(dlpx__remote *r) {
  if (!r) return;
  for (int i = 0; i < r->nidle; i++)
    if (r->idle[i] != r->conn) dlpx__conn_free(r->idle[i]);
  dlpx__conn_free(r->conn);
  dlpx__target_free(r->target);
  pthread_mutex_destroy(&r->lock);
  free(r);
}

/* A connection for one read (see struct dlpx__remote). */
static int take_conn(dlpx__remote *r, dlpx__conn **out) {
  pthread_mutex_lock(&r->lock);
  dlpx__conn *c = r->nidle ? r->idle[--r->nidle] : NULL;
  pthread_mutex_unlock(&r->lock);
  if (!c) {
    int rc = dlpx__conn_new(r->target, &c);
    if (rc) return rc;
    dlpx__conn_set_size(c, r->size);
    dlpx__conn_set_etag(c, r->etag);
  }
  *out = c;
  return 0;
}

static void give_conn(dlpx__remote *r, dlpx__conn *c) {
  pthread_mutex_lock(&r->lock);
  if (dlpx__conn_no_range(c)) r->no_range = true;
  if (r->nidle < (int)DLPX__COUNT(r->idle)) {
    r->idle[r->nidle++] = c;
    c = NULL;
  }
  pthread_mutex_unlock(&r->lock);
  if (c && c != r->conn) dlpx__conn_free(c);
}

static int remote_new(const char *url, const dlpx_remote_options *opts, dlpx__remote **out) {
  *out = NULL;
  dlpx__remote *r = calloc(1, sizeof *r);
  if (!r) return dlpx__fail(DLPX_ENOMEM, "no memory");
  pthread_mutex_init(&r->lock, NULL);
  int rc = dlpx__target_new(url, opts, &r->target);
  if (!rc) rc = dlpx__conn_new(r->target, &r->conn);
  if (rc) {
    dlpx__remote_free(r);
    return rc;
  }
  *out = r;
  return 0;
}

static void le64(const unsigned char *p, uint64_t *v) {
  *v = 0;
  for (int i = 7; i >= 0; i--) *v = (*v << 8) | p[i];
}

int dlpx_file_open_url(const char *url, const dlpx_remote_options *opts, uint32_t flags,
                       dlpx_file **out) {
  if (!url || !out) return dlpx__fail(DLPX_EINVAL, "dlpx_file_open_url: NULL argument");
  *out = NULL;
  if (flags) return dlpx__fail(DLPX_EINVAL, "dlpx_file_open_url: unknown flags 0x%x", flags);
  dlpx__remote *rem;
  int rc = remote_new(url, opts, &rem);
  if (rc) return rc;
  const char *u = rem->target->label;
  unsigned char *probe = malloc(PROBE_SIZE);
  char *json = NULL;
  dlpx_file *f = NULL;
  if (!probe) {
    rc = dlpx__fail(DLPX_ENOMEM, "no memory");
    goto fail;
  }
  dlpx__sink sink = {.off = 0, .len = PROBE_SIZE, .dst = (char *)probe};
  dlpx__req req = {.method = "GET", .off = 0, .end = PROBE_SIZE, .sinks = &sink, .nsinks = 1,
                   .probe = true, .ranged = true, .up_fd = -1};
  rc = dlpx__xfer_run(rem->conn, &req, 1, NULL, NULL, 0);
  free(req.resp);
  if (rc) goto fail;
  uint64_t got = req.cursor, size = req.total;
  if (size == 0) size = got; /* no size given: what came is all there is */
  rem->size = size;
  snprintf(rem->etag, sizeof rem->etag, "%s", req.etag);
  dlpx__conn_set_size(rem->conn, size);
  dlpx__conn_set_etag(rem->conn, req.etag);
  if (size < 8) {
    rc = dlpx__fail(DLPX_EFORMAT,
                    "%s: %llu bytes is too short for a safetensors file (8-byte header length, "
                    "then the header)", u, (unsigned long long)size);
    goto fail;
  }
  uint64_t n;
  le64(probe, &n);
  if (n == 0) {
    rc = dlpx__fail(DLPX_EFORMAT, "%s: the header length is 0 (a header is at least \"{}\")", u);
    goto fail;
  }
  if (n > DLPX_ST_HEADER_MAX) {
    rc = dlpx__fail(DLPX_EFORMAT, "%s: the header length %llu exceeds the limit of %d bytes", u,
                    (unsigned long long)n, DLPX_ST_HEADER_MAX);
    goto fail;
  }
  if (n > size - 8) {
    rc = dlpx__fail(DLPX_EFORMAT,
                    "%s: the header length %llu runs past the end of the file (%llu bytes): "
                    "the file is truncated or not a safetensors file",
                    u, (unsigned long long)n, (unsigned long long)size);
    goto fail;
  }
  json = malloc((size_t)n);
  if (!json) {
    rc = dlpx__fail(DLPX_ENOMEM, "%s: no memory for a %llu-byte header", u, (unsigned long long)n);
    goto fail;
  }
  uint64_t have = got > 8 ? got - 8 : 0;
  if (have > n) have = n;
  memcpy(json, probe + 8, (size_t)have);
  if (have < n) {
    dlpx__sink s2 = {.off = 8 + have, .len = n - have, .dst = json + have};
    dlpx__req r2 = {.method = "GET", .off = 8 + have, .end = 8 + n, .sinks = &s2, .nsinks = 1,
                    .ranged = true, .up_fd = -1};
    rc = dlpx__xfer_run(rem->conn, &r2, 1, NULL, NULL, 0);
    free(r2.resp);
    if (rc) goto fail;
  }
  f = calloc(1, sizeof *f);
  if (!f || !(f->path = strdup(u))) {
    rc = dlpx__fail(DLPX_ENOMEM, "no memory for a file");
    goto fail;
  }
  f->fd = f->direct_fd = -1;
  atomic_flag_clear(&f->map_lock);
  f->size = size;
  rc = dlpx_st_header_parse(json, (size_t)n, size - 8 - n, &f->header);
  if (rc) {
    char msg[DLPX__MSG_MAX];
    snprintf(msg, sizeof msg, "%s", dlpx_last_error());
    rc = dlpx__fail(rc, "%s: %s", u, msg);
    goto fail;
  }
  f->data_offset = 8 + n;
  f->remote = rem;
  rem->no_range = dlpx__conn_no_range(rem->conn);
  rem->idle[rem->nidle++] = rem->conn; /* the first of the pool */
  free(probe);
  free(json);
  *out = f;
  return 0;
fail:
  free(probe);
  free(json);
  if (f) {
    f->remote = NULL;
    dlpx_file_close(f);
  }
  dlpx__remote_free(rem);
  return rc;
}

int dlpx_file_is_remote(const dlpx_file *f) { return f && f->remote ? 1 : 0; }

/* ---- reading ---------------------------------------------------------------- */

static int by_off(const void *a, const void *b) {
  const dlpx__sink *x = a, *y = b;
  return x->off < y->off ? -1 : x->off > y->off;
}

/* ---- reads on several threads -------------------------------------------- */

/* One thread's share of a read: its connection pool, and how it ended. */
typedef struct {
  dlpx__remote *rem;
  dlpx__conn *conn;
  dlpx__req *reqs;
  size_t n;
  dlpx__xfer_share *q;
  pthread_t thread;
  bool started, stopped;
  int rc;
  char msg[DLPX__MSG_MAX];
} reader;

static void *reader_main(void *arg) {
  reader *w = arg;
  w->rc = dlpx__xfer_run_shared(w->conn, w->reqs, w->n, w->q, &w->stopped);
  if (w->rc) snprintf(w->msg, sizeof w->msg, "%s", dlpx_last_error());
  return NULL;
}

/* How many threads receive a read of |bytes| in |n| requests: the
 * target's setting, else one per CPU (at most READ_THREADS_MAX), and
 * one for reads too small to gain from more.  Receiving is bound by the
 * copies out of the socket and into the tensors, on the thread that
 * receives: one thread is one core's worth. */
static uint32_t read_threads(const dlpx__target *t, size_t n, uint64_t bytes) {
  uint32_t want = t->threads;
  if (!want) {
    if (bytes < PARALLEL_MIN_BYTES) return 1;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    want = cpus < 1 ? 1 : cpus > READ_THREADS_MAX ? READ_THREADS_MAX : (uint32_t)cpus;
  }
  if (want > t->concurrency) want = t->concurrency; /* each keeps one request in flight */
  if (want > n) want = (uint32_t)(n ? n : 1);
  return want;
}

/* Runs |reqs| on |conn| and, when worth it, on more threads with
 * connections of their own from |rem|'s pool; together they keep the
 * target's concurrency in flight.  Gives |conn| back. */
static int run_parallel(dlpx__remote *rem, dlpx__conn *conn, dlpx__req *reqs, size_t n,
                        uint64_t bytes) {
  uint32_t nt = read_threads(rem->target, n, bytes);
  if (nt <= 1) {
    int rc = dlpx__xfer_run(conn, reqs, n, NULL, NULL, 0);
    give_conn(rem, conn);
    return rc;
  }
  reader w[READ_THREADS_CAP];
  if (nt > READ_THREADS_CAP) nt = READ_THREADS_CAP;
  uint32_t conc = rem->target->concurrency;
  dlpx__xfer_share q = {.slots = (conc + nt - 1) / nt};
  atomic_init(&q.next, 0);
  atomic_init(&q.failed, 0);
  for (uint32_t i = 0; i < nt; i++)
    w[i] = (reader){.rem = rem, .reqs = reqs, .n = n, .q = &q};
  w[0].conn = conn;
  /* the others: a connection each (none: fewer threads) */
  for (uint32_t i = 1; i < nt; i++) {
    dlpx__error_state saved;
    dlpx__error_save(&saved);
    if (take_conn(rem, &w[i].conn)) {
      dlpx__error_restore(&saved);
      w[i].conn = NULL;
      break;
    }
    if (pthread_create(&w[i].thread, NULL, reader_main, &w[i]) != 0) {
      give_conn(rem, w[i].conn);
      w[i].conn = NULL;
      break;
    }
    w[i].started = true;
  }
  reader_main(&w[0]);
  for (uint32_t i = 1; i < nt; i++)
    if (w[i].started) pthread_join(w[i].thread, NULL);
  /* the error of the one that failed, not of those it stopped */
  int rc = 0;
  const char *msg = "";
  for (int pass = 0; pass < 2 && !rc; pass++)
    for (uint32_t i = 0; i < nt && !rc; i++)
      if (w[i].conn && w[i].rc && (pass || !w[i].stopped)) rc = w[i].rc, msg = w[i].msg;
  for (uint32_t i = 0; i < nt; i++)
    if (w[i].conn) give_conn(rem, w[i].conn);
  if (rc) dlpx__fail(rc, "%s", msg);
  return rc;
}

int dlpx__remote_read_ranges(dlpx_file *f, size_t n, const dlpx__tensor_range *ranges,
                             bool verify) {
  dlpx__remote *rem = f->remote;
  const dlpx__target *t = rem->target;
  const dlpx_st_header *h = f->header;
  uint64_t part = t->part_size;
  if (verify && h->chunk) part = (part + h->chunk - 1) / h->chunk * h->chunk;
  /* the sinks: each range in parts (aligned to the tensor's start) */
  size_t ns = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t len = ranges[i].end - ranges[i].begin;
    ns += (size_t)((len + part - 1) / part);
  }
  dlpx__sink *sinks = calloc(ns ? ns : 1, sizeof *sinks);
  dlpx__req *reqs = calloc(ns ? ns : 1, sizeof *reqs);
  int rc = 0;
  if (!sinks || !reqs) {
    rc = dlpx__fail(DLPX_ENOMEM, "no memory");
    goto done;
  }
  size_t k = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    const dlpx__tensor_range *g = &ranges[i];
    const dlpx_st_entry *e = &h->entries[g->index];
    for (uint64_t b = g->begin; b < g->end;) {
      uint64_t pe = (b / part + 1) * part;
      if (pe > g->end) pe = g->end;
      dlpx__sink *s = &sinks[k++];
      s->off = f->data_offset + e->begin + b;
      s->len = pe - b;
      s->dst = g->dst + (b - g->begin);
      if (verify) rc = dlpx__sumstream_new(h, g->index, b, &s->sums);
      if (rc) break;
      b = pe;
    }
  }
  if (rc) goto done;
  qsort(sinks, k, sizeof *sinks, by_off);
  size_t nr = 0;
  dlpx__conn *conn = NULL;
  if ((rc = take_conn(rem, &conn))) goto done;
  pthread_mutex_lock(&rem->lock);
  bool no_range = rem->no_range || dlpx__conn_no_range(conn);
  pthread_mutex_unlock(&rem->lock);
  if (no_range) { /* one pass over the whole body */
    if (k) {
      uint64_t end = 0;
      for (size_t i = 0; i < k; i++)
        if (sinks[i].off + sinks[i].len > end) end = sinks[i].off + sinks[i].len;
      reqs[nr++] = (dlpx__req){.method = "GET", .off = sinks[0].off, .end = end, .sinks = sinks,
                               .nsinks = k, .ranged = true, .up_fd = -1};
    }
  } else {
    /* neighbours share a request while it stays within a part */
    for (size_t i = 0; i < k;) {
      size_t j = i + 1;
      uint64_t end = sinks[i].off + sinks[i].len;
      while (j < k && sinks[j].off >= end && sinks[j].off - end <= COALESCE_GAP &&
             sinks[j].off + sinks[j].len - sinks[i].off <= part) {
        end = sinks[j].off + sinks[j].len;
        j++;
      }
      reqs[nr++] = (dlpx__req){.method = "GET", .off = sinks[i].off, .end = end,
                               .sinks = &sinks[i], .nsinks = j - i, .ranged = true, .up_fd = -1};
      i = j;
    }
  }
  uint64_t bytes = 0;
  for (size_t i = 0; i < nr; i++) bytes += reqs[i].end - reqs[i].off;
  rc = run_parallel(rem, conn, reqs, nr, bytes);
  if (rc == DLPX_ECHECKSUM) {
    char msg[DLPX__MSG_MAX];
    snprintf(msg, sizeof msg, "%s", dlpx_last_error());
    rc = dlpx__fail(rc, "%s: %s", t->label, msg);
  }
done:
  if (sinks)
    for (size_t i = 0; i < ns; i++) dlpx__sumstream_free(sinks[i].sums);
  if (reqs)
    for (size_t i = 0; i < ns; i++) free(reqs[i].resp);
  free(sinks);
  free(reqs);
  return rc;
}

/* ---- single requests -------------------------------------------------------- */

/* One request to |url|, its answer's body in *body (may be NULL). */
static int one(dlpx__remote *rem, dlpx__req *r, char **body, size_t *len) {
  int rc = dlpx__xfer_run(rem->conn, r, 1, NULL, NULL, 0);
  if (body && !rc) {
    *body = r->resp;
    if (len) *len = r->resp_len;
    r->resp = NULL;
  }
  free(r->resp);
  r->resp = NULL;
  return rc;
}

int dlpx_remote_stat(const char *url, const dlpx_remote_options *opts, uint64_t *size) {
  if (!url || !size) return dlpx__fail(DLPX_EINVAL, "dlpx_remote_stat: NULL argument");
  dlpx__remote *rem;
  int rc = remote_new(url, opts, &rem);
  if (rc) return rc;
  dlpx__req r = {.method = "HEAD", .up_fd = -1};
  rc = one(rem, &r, NULL, NULL);
  if (!rc) *size = r.total;
  dlpx__remote_free(rem);
  return rc;
}

int dlpx_remote_delete(const char *url, const dlpx_remote_options *opts) {
  if (!url) return dlpx__fail(DLPX_EINVAL, "dlpx_remote_delete: NULL argument");
  dlpx__remote *rem;
  int rc = remote_new(url, opts, &rem);
  if (rc) return rc;
  dlpx__req r = {.method = "DELETE", .up_fd = -1};
  rc = one(rem, &r, NULL, NULL);
  if (rc == DLPX_ENOENT) rc = 0;
  dlpx__remote_free(rem);
  return rc;
}

/* ---- get: to a local file ----------------------------------------------------- */

/* Progress over several runs of the engine: each run counts from 0. */
typedef struct {
  dlpx_progress_fn fn;
  void *ctx;
  uint64_t base;
} progress_chain;

static int chained(void *ctx, uint64_t done, uint64_t total) {
  progress_chain *p = ctx;
  return p->fn ? p->fn(p->ctx, p->base + done, total) : 0;
}

int dlpx_remote_get(const char *url, const dlpx_remote_options *opts, const char *path,
                    dlpx_progress_fn progress, void *ctx) {
  if (!url || !path) return dlpx__fail(DLPX_EINVAL, "dlpx_remote_get: NULL argument");
  dlpx__remote *rem;
  int rc = remote_new(url, opts, &rem);
  if (rc) return rc;
  dlpx__req head = {.method = "HEAD", .up_fd = -1};
  rc = one(rem, &head, NULL, NULL);
  uint64_t size = head.total;
  char *tmp = NULL;
  int fd = -1;
  void *map = MAP_FAILED;
  dlpx__sink *sinks = NULL;
  dlpx__req *reqs = NULL;
  if (rc) goto done;
  dlpx__conn_set_size(rem->conn, size);
  dlpx__conn_set_etag(rem->conn, head.etag);
  size_t pl = strlen(path);
  tmp = malloc(pl + 16);
  if (!tmp) {
    rc = dlpx__fail(DLPX_ENOMEM, "no memory");
    goto done;
  }
  snprintf(tmp, pl + 16, "%s.tmp-XXXXXX", path);
  fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) {
    rc = dlpx__fail(DLPX_EIO, "%s: cannot create a file there: %s", path, strerror(errno));
    free(tmp);
    tmp = NULL;
    goto done;
  }
  if (size) {
    int e = posix_fallocate(fd, 0, (off_t)size); /* no SIGBUS on a full disk later */
    if (e) {
      rc = dlpx__fail(DLPX_EIO, "%s: cannot reserve %llu bytes: %s", path,
                      (unsigned long long)size, strerror(e));
      goto done;
    }
    map = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
      rc = dlpx__fail(DLPX_EIO, "%s: mmap failed: %s", path, strerror(errno));
      goto done;
    }
    uint64_t part = rem->target->part_size;
    size_t np = (size_t)((size + part - 1) / part);
    sinks = calloc(np, sizeof *sinks);
    reqs = calloc(np, sizeof *reqs);
    if (!sinks || !reqs) {
      rc = dlpx__fail(DLPX_ENOMEM, "no memory");
      goto done;
    }
    for (size_t i = 0; i < np; i++) {
      uint64_t b = i * part, e2 = b + part < size ? b + part : size;
      sinks[i] = (dlpx__sink){.off = b, .len = e2 - b, .dst = (char *)map + b};
      reqs[i] = (dlpx__req){.method = "GET", .off = b, .end = e2, .sinks = &sinks[i], .nsinks = 1,
                            .ranged = true, .up_fd = -1};
    }
    /* The first part alone first: a server that ignores Range shows it
     * there, and the rest then comes as one streamed body instead of
     * every part downloading the object from its start. */
    progress_chain pc = {.fn = progress, .ctx = ctx, .base = 0};
    rc = dlpx__xfer_run(rem->conn, reqs, 1, progress ? chained : NULL, &pc, size);
    free(reqs[0].resp);
    reqs[0].resp = NULL;
    pc.base = sinks[0].len;
    if (!rc && np > 1) {
      size_t first = 1, nreq = np - 1;
      if (dlpx__conn_no_range(rem->conn)) {
        reqs[1].end = size;
        reqs[1].sinks = &sinks[1];
        reqs[1].nsinks = np - 1;
        nreq = 1;
      }
      rc = dlpx__xfer_run(rem->conn, reqs + first, nreq, progress ? chained : NULL, &pc, size);
      for (size_t i = first; i < first + nreq; i++) free(reqs[i].resp);
    }
    if (rc) goto done;
    if (munmap(map, (size_t)size)) rc = dlpx__fail(DLPX_EIO, "munmap: %s", strerror(errno));
    map = MAP_FAILED;
  } else if (progress && progress(ctx, 0, 0)) {
    rc = dlpx__fail(DLPX_ESTATE, "%s: cancelled", url);
  }
  if (!rc && fsync(fd)) rc = dlpx__fail(DLPX_EIO, "%s: fsync: %s", path, strerror(errno));
  if (!rc && fchmod(fd, 0644)) rc = dlpx__fail(DLPX_EIO, "%s: chmod: %s", path, strerror(errno));
  if (!rc && rename(tmp, path))
    rc = dlpx__fail(DLPX_EIO, "%s: rename failed: %s", path, strerror(errno));
done:
  if (map != MAP_FAILED) munmap(map, (size_t)size);
  if (fd >= 0) close(fd);
  if (rc && tmp) unlink(tmp);
  free(tmp);
  free(sinks);
  free(reqs);
  dlpx__remote_free(rem);
  return rc;
}

/* ---- put: from a file descriptor ------------------------------------------------ */

static uint32_t crc32_table[256];

static void crc32_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    crc32_table[i] = c;
  }
}

/* x-amz-checksum-crc32 of |len| bytes of |fd| at |off|, as base64. */
static int crc32_of(int fd, uint64_t off, uint64_t len, char out[16]) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, crc32_init);
  enum { BUF = 1 << 20 };
  unsigned char *buf = malloc(BUF);
  if (!buf) return dlpx__fail(DLPX_ENOMEM, "no memory");
  uint32_t c = 0xFFFFFFFFu;
  int rc = 0;
  while (len && !rc) {
    size_t k = len < BUF ? (size_t)len : BUF;
    rc = dlpx__pread_full(fd, buf, k, off, "the upload's source");
    for (size_t i = 0; !rc && i < k; i++) c = crc32_table[(c ^ buf[i]) & 0xFF] ^ (c >> 8);
    off += k, len -= k;
  }
  free(buf);
  c ^= 0xFFFFFFFFu;
  unsigned char be[4] = {(unsigned char)(c >> 24), (unsigned char)(c >> 16),
                         (unsigned char)(c >> 8), (unsigned char)c};
  static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  out[0] = b64[be[0] >> 2];
  out[1] = b64[((be[0] & 3) << 4) | (be[1] >> 4)];
  out[2] = b64[((be[1] & 15) << 2) | (be[2] >> 6)];
  out[3] = b64[be[2] & 63];
  out[4] = b64[be[3] >> 2];
  out[5] = b64[(be[3] & 3) << 4];
  out[6] = '=';
  out[7] = '=';
  out[8] = '\0';
  return rc;
}

static int put_fd(dlpx__remote *rem, int fd, uint64_t size, dlpx_progress_fn progress,
                  void *ctx) {
  const dlpx__target *t = rem->target;
  bool sum = t->checksum == DLPX_REMOTE_CHECKSUM_CRC32;
  uint64_t part = t->part_size;
  if (!t->s3 || size <= part) { /* one PUT */
    char hdr[64] = "";
    int rc = 0;
    if (sum) {
      char b[16];
      if ((rc = crc32_of(fd, 0, size, b))) return rc;
      snprintf(hdr, sizeof hdr, "x-amz-checksum-crc32: %s", b);
    }
    dlpx__req r = {.method = "PUT", .up_fd = fd, .up_off = 0, .up_len = size,
                   .content_md5_or_sum = sum ? hdr : NULL};
    rc = dlpx__xfer_run(rem->conn, &r, 1, progress, ctx, size);
    free(r.resp);
    return rc;
  }
  if (part < S3_MIN_PART) part = S3_MIN_PART;
  while ((size + part - 1) / part > S3_MAX_PARTS) part *= 2;
  size_t np = (size_t)((size + part - 1) / part);
  /* create */
  dlpx__req cr = {.method = "POST", .query = "uploads=", .keep_body = true, .up_fd = -1,
                  .content_md5_or_sum = sum ? "x-amz-checksum-algorithm: CRC32" : NULL};
  char *body = NULL;
  int rc = one(rem, &cr, &body, NULL);
  if (rc) return rc;
  char *id = dlpx__xml_text(body, "UploadId", NULL, true);
  free(body);
  if (!id) return dlpx__fail(DLPX_EIO, "%s: the server's answer to CreateMultipartUpload has "
                             "no UploadId", t->label);
  char eid[1024];
  size_t el = 0;
  if (!dlpx__uri_encode(eid, sizeof eid, &el, id, false)) {
    free(id);
    return dlpx__fail(DLPX_EIO, "%s: the UploadId is too long", t->label);
  }
  free(id);
  dlpx__req *reqs = calloc(np, sizeof *reqs);
  char (*queries)[1200] = calloc(np, sizeof *queries);
  char (*sums)[64] = calloc(np, sizeof *sums);
  char *xml = NULL;
  if (!reqs || !queries || !sums) {
    rc = dlpx__fail(DLPX_ENOMEM, "no memory");
    goto abort;
  }
  for (size_t i = 0; i < np && !rc; i++) {
    uint64_t b = i * part, e = b + part < size ? b + part : size;
    snprintf(queries[i], sizeof queries[i], "partNumber=%zu&uploadId=%s", i + 1, eid);
    if (sum) {
      char b64[16];
      rc = crc32_of(fd, b, e - b, b64);
      snprintf(sums[i], sizeof sums[i], "x-amz-checksum-crc32: %s", b64);
    }
    reqs[i] = (dlpx__req){.method = "PUT", .query = queries[i], .up_fd = fd, .up_off = b,
                          .up_len = e - b, .content_md5_or_sum = sum ? sums[i] : NULL};
  }
  if (!rc) rc = dlpx__xfer_run(rem->conn, reqs, np, progress, ctx, size);
  if (rc) goto abort;
  /* complete */
  size_t cap = 128 + np * 256, at = 0;
  xml = malloc(cap);
  if (!xml) {
    rc = dlpx__fail(DLPX_ENOMEM, "no memory");
    goto abort;
  }
  at += (size_t)snprintf(xml + at, cap - at, "<CompleteMultipartUpload>");
  for (size_t i = 0; i < np; i++) {
    if (!reqs[i].etag[0]) {
      rc = dlpx__fail(DLPX_EIO, "%s: the server gave part %zu no ETag", t->label, i + 1);
      goto abort;
    }
    char etag[200];
    size_t k = 0;
    for (const char *p = reqs[i].etag; *p && k < sizeof etag - 7; p++) {
      if (*p == '"') {
        memcpy(etag + k, "&quot;", 6);
        k += 6;
      } else {
        etag[k++] = *p;
      }
    }
    etag[k] = '\0';
    at += (size_t)snprintf(xml + at, cap - at, "<Part><PartNumber>%zu</PartNumber><ETag>%s</ETag>",
                           i + 1, etag);
    if (sum)
      at += (size_t)snprintf(xml + at, cap - at, "<ChecksumCRC32>%s</ChecksumCRC32>",
                             sums[i] + strlen("x-amz-checksum-crc32: "));
    at += (size_t)snprintf(xml + at, cap - at, "</Part>");
  }
  at += (size_t)snprintf(xml + at, cap - at, "</CompleteMultipartUpload>");
  char q[1200];
  snprintf(q, sizeof q, "uploadId=%s", eid);
  dlpx__req co = {.method = "POST", .query = q, .body = xml, .body_len = at, .keep_body = true,
                  .up_fd = -1};
  char *answer = NULL;
  rc = one(rem, &co, &answer, NULL);
  if (!rc && answer && strstr(answer, "<Error>")) { /* S3 may fail a 200 in its body */
    char *code = dlpx__xml_text(answer, "Code", NULL, true), *msg = dlpx__xml_text(answer, "Message", NULL, true);
    rc = dlpx__fail(DLPX_EIO, "%s: CompleteMultipartUpload failed: %s: %s", t->label,
                    code ? code : "?", msg ? msg : "");
    free(code);
    free(msg);
  }
  free(answer);
  if (rc) goto abort;
  goto done;
abort:;
  {
    /* keep the first error's message; the abort's own failure is ignored */
    char keep[DLPX__MSG_MAX];
    snprintf(keep, sizeof keep, "%s", dlpx_last_error());
    char q2[1200];
    snprintf(q2, sizeof q2, "uploadId=%s", eid);
    dlpx__req ab = {.method = "DELETE", .query = q2, .up_fd = -1};
    (void)one(rem, &ab, NULL, NULL);
    rc = dlpx__fail(rc, "%s (the upload was aborted)", keep);
  }
done:
  if (reqs)
    for (size_t i = 0; i < np; i++) free(reqs[i].resp);
  free(reqs);
  free(queries);
  free(sums);
  free(xml);
  return rc;
}

int dlpx_remote_put(const char *path, const char *url, const dlpx_remote_options *opts,
                    dlpx_progress_fn progress, void *ctx) {
  if (!url || !path) return dlpx__fail(DLPX_EINVAL, "dlpx_remote_put: NULL argument");
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return dlpx__fail(errno == ENOENT ? DLPX_ENOENT : errno == EACCES ? DLPX_EACCES : DLPX_EIO,
                      "%s: open failed: %s", path, strerror(errno));
  struct stat st;
  int rc = 0;
  if (dlpx__fstat(fd, &st) || !S_ISREG(st.st_mode)) {
    close(fd);
    return dlpx__fail(DLPX_EIO, "%s: not a regular file", path);
  }
  dlpx__remote *rem;
  rc = remote_new(url, opts, &rem);
  if (!rc) rc = put_fd(rem, fd, (uint64_t)st.st_size, progress, ctx);
  dlpx__remote_free(rem); /* NULL when remote_new failed */
  close(fd);
  return rc;
}

int dlpx_save_url(const char *url, const dlpx_remote_options *opts, size_t n,
                  const char *const *names, const dlpx_tensor *const *tensors, size_t nmeta,
                  const char *const *keys, const char *const *values, uint32_t flags) {
  if (!url) return dlpx__fail(DLPX_EINVAL, "dlpx_save_url: NULL URL");
  dlpx__st_image *img;
  int rc = dlpx__st_image_new("dlpx_save_url", n, names, tensors, nmeta, keys, values, flags, 8,
                              NULL, NULL, &img);
  if (rc) return rc;
  dlpx__remote *rem = NULL;
  rc = remote_new(url, opts, &rem);
  /* The image goes to an unlinked temporary file first (its header, with
   * the checksums, is known only after the data), then up from there. */
  int fd = -1;
  char tmp[4096];
  if (!rc) {
    const char *dir = getenv("TMPDIR");
    snprintf(tmp, sizeof tmp, "%s/dlpx-upload-XXXXXX", dir && *dir ? dir : "/tmp");
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) rc = dlpx__fail(DLPX_EIO, "%s: cannot create a temporary file: %s", tmp,
                                strerror(errno));
    else unlink(tmp);
  }
  uint64_t size = 0;
  if (!rc) rc = dlpx__st_image_write(img, fd, "the upload's temporary file", &size);
  if (!rc) rc = put_fd(rem, fd, size, NULL, NULL);
  if (fd >= 0) close(fd);
  dlpx__st_image_free(img);
  dlpx__remote_free(rem);
  return rc;
}

/* ---- listing ------------------------------------------------------------------ */

int dlpx_remote_list(const char *url, const dlpx_remote_options *opts, dlpx_list_fn fn,
                     void *ctx) {
  if (!url || !fn) return dlpx__fail(DLPX_EINVAL, "dlpx_remote_list: NULL argument");
  dlpx__remote *rem;
  int rc = remote_new(url, opts, &rem);
  if (rc) return rc;
  if (!rem->target->s3) {
    dlpx__remote_free(rem);
    return dlpx__fail(DLPX_ENOTSUP, "%s: only s3:// URLs can be listed", url);
  }
  char *token = NULL;
  char prefix[3072];
  size_t pl = 0;
  if (!dlpx__uri_encode(prefix, sizeof prefix, &pl, rem->target->key, false)) {
    dlpx__remote_free(rem);
    return dlpx__fail(DLPX_EINVAL, "%s: prefix too long", url);
  }
  for (;;) {
    char q[8192];
    size_t ql = 0;
    q[0] = '\0';
    if (token) {
      ql = (size_t)snprintf(q, sizeof q, "continuation-token=");
      if (!dlpx__uri_encode(q, sizeof q, &ql, token, false)) {
        rc = dlpx__fail(DLPX_EIO, "%s: continuation token too long", url);
        break;
      }
      ql += (size_t)snprintf(q + ql, sizeof q - ql, "&");
    }
    snprintf(q + ql, sizeof q - ql, "list-type=2&prefix=%s", prefix);
    dlpx__req r = {.method = "GET", .url = rem->target->bucket_url, .query = q,
                   .keep_body = true, .up_fd = -1};
    char *body = NULL;
    if ((rc = one(rem, &r, &body, NULL))) break;
    const char *p = body;
    const char *after;
    char *item;
    while (!rc && p && (item = dlpx__xml_text(p, "Contents", &after, false))) {
      char *key = dlpx__xml_text(item, "Key", NULL, true), *sz = dlpx__xml_text(item, "Size", NULL, true);
      if (key) rc = fn(ctx, key, sz ? strtoull(sz, NULL, 10) : 0);
      free(key);
      free(sz);
      free(item);
      p = after;
    }
    char *trunc = dlpx__xml_text(body, "IsTruncated", NULL, true);
    free(token);
    token = trunc && strcmp(trunc, "true") == 0 ? dlpx__xml_text(body, "NextContinuationToken", NULL, true)
                                                : NULL;
    free(trunc);
    free(body);
    if (rc || !token) break;
  }
  free(token);
  dlpx__remote_free(rem);
  return rc;
}
