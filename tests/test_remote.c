/* test_remote.c - dlpx/remote.h against an HTTP/1.1 server of this test's
 * own (a thread per connection on 127.0.0.1, keep-alive, Range, ETag and
 * If-Match, PUT) that misbehaves on request: ignores Range, answers 503,
 * resets a connection mid-body, stalls, sends the wrong range, 404/403,
 * changes the object.  The real servers (nginx, moto's S3) are the Python
 * suite's; this one runs the engine under valgrind, ASAN and UBSAN.
 * Skips when libcurl cannot be loaded. */
#include "config.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

/* ---- the server ------------------------------------------------------------ */

#define MAX_CONNS 64

static struct {
  int lfd;
  int port;
  pthread_t acceptor;
  pthread_mutex_t lock;
  int fds[MAX_CONNS]; /* -1: a free slot */
  int active;
  /* the object */
  char *body;
  size_t len;
  char etag[32];
  /* misbehaviour, each consumed as it is used */
  atomic_int ignore_range;   /* answer ranged GETs with 200 and the whole body */
  atomic_int fail_n;         /* the next N requests get 503 */
  atomic_int reset_n;        /* the next N bodies are cut after reset_at bytes */
  atomic_long reset_at;
  atomic_int stall_n;        /* the next N answers stall stall_ms before the body */
  atomic_int stall_ms;
  atomic_int wrong_range_n;  /* the next N 206 answers start one byte late */
  atomic_int status;         /* answer every request with this status (0: normal) */
  atomic_int requests;       /* requests seen */
  atomic_long bytes_sent;
  /* PUT bodies land here */
  char *put;
  size_t put_len;
} S;

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) && errno == EINTR) {
  }
}

static int send_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w, n -= (size_t)w;
    atomic_fetch_add(&S.bytes_sent, (long)w);
  }
  return 0;
}

static int take(atomic_int *n) {
  int v = atomic_load(n);
  while (v > 0 && !atomic_compare_exchange_weak(n, &v, v - 1)) {
  }
  return v > 0;
}

/* One request: reads the head (and a PUT's body), answers.  0 to go on,
 * -1 to close the connection. */
static int serve_one(int fd, char *buf, size_t cap, size_t *have) {
  char *end;
  while (!(end = memmem(buf, *have, "\r\n\r\n", 4))) {
    if (*have == cap) return -1;
    ssize_t r = recv(fd, buf + *have, cap - *have, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    *have += (size_t)r;
  }
  size_t head = (size_t)(end - buf) + 4;
  char line[8192];
  size_t hl = head < sizeof line - 1 ? head : sizeof line - 1;
  memcpy(line, buf, hl);
  line[hl] = '\0';
  atomic_fetch_add(&S.requests, 1);
  char method[16] = "";
  sscanf(line, "%15s", method);
  long long a = -1, b = -1;
  const char *rg = strcasestr(line, "\r\nRange: bytes=");
  if (rg) sscanf(rg + 15, "%lld-%lld", &a, &b);
  size_t clen = 0;
  const char *cl = strcasestr(line, "\r\nContent-Length:");
  if (cl) clen = (size_t)strtoull(cl + 17, NULL, 10);
  const char *im = strcasestr(line, "\r\nIf-Match:");
  char want[64] = "";
  if (im) sscanf(im + 11, " %63s", want);
  /* a PUT's body */
  size_t body_have = *have - head;
  char *put = NULL;
  if (strcmp(method, "PUT") == 0) {
    put = malloc(clen ? clen : 1);
    if (!put) return -1;
    size_t got = body_have < clen ? body_have : clen;
    memcpy(put, buf + head, got);
    while (got < clen) {
      ssize_t r = recv(fd, put + got, clen - got, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        free(put);
        return -1;
      }
      got += (size_t)r;
    }
    body_have = body_have > clen ? body_have - clen : 0;
    memmove(buf, buf + head + (*have - head - body_have), body_have);
    *have = body_have;
  } else {
    memmove(buf, buf + head, *have - head);
    *have -= head;
  }
  char hdr[512];
  int st = atomic_load(&S.status);
  if (st || take(&S.fail_n)) {
    if (!st) st = 503;
    const char *msg = "<Error><Code>Test</Code><Message>as asked</Message></Error>";
    int n = snprintf(hdr, sizeof hdr, "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n\r\n", st,
                     strlen(msg));
    free(put);
    return send_all(fd, hdr, (size_t)n) || send_all(fd, msg, strlen(msg)) ? -1 : 0;
  }
  if (put) {
    pthread_mutex_lock(&S.lock);
    free(S.put);
    S.put = put;
    S.put_len = clen;
    pthread_mutex_unlock(&S.lock);
    int n = snprintf(hdr, sizeof hdr, "HTTP/1.1 200 OK\r\nETag: \"put\"\r\nContent-Length: 0\r\n\r\n");
    return send_all(fd, hdr, (size_t)n) ? -1 : 0;
  }
  if (want[0] && strcmp(want, S.etag) != 0) {
    int n = snprintf(hdr, sizeof hdr, "HTTP/1.1 412 Precondition Failed\r\nContent-Length: 0\r\n\r\n");
    return send_all(fd, hdr, (size_t)n) ? -1 : 0;
  }
  size_t off = 0, len = S.len;
  int code = 200;
  if (a >= 0 && !atomic_load(&S.ignore_range)) {
    if ((size_t)a >= S.len) {
      int n = snprintf(hdr, sizeof hdr, "HTTP/1.1 416 X\r\nContent-Range: bytes */%zu\r\n"
                       "Content-Length: 0\r\n\r\n", S.len);
      return send_all(fd, hdr, (size_t)n) ? -1 : 0;
    }
    if (b < 0 || (size_t)b >= S.len) b = (long long)S.len - 1;
    off = (size_t)a;
    if (take(&S.wrong_range_n) && off + 1 < S.len) off++;
    len = (size_t)b + 1 - off;
    code = 206;
  }
  int n;
  if (code == 206)
    n = snprintf(hdr, sizeof hdr, "HTTP/1.1 206 Partial Content\r\nETag: %s\r\n"
                 "Content-Range: bytes %zu-%zu/%zu\r\nContent-Length: %zu\r\n\r\n",
                 S.etag, off, off + len - 1, S.len, len);
  else
    n = snprintf(hdr, sizeof hdr, "HTTP/1.1 200 OK\r\nETag: %s\r\nContent-Length: %zu\r\n\r\n",
                 S.etag, len);
  if (send_all(fd, hdr, (size_t)n)) return -1;
  if (strcmp(method, "HEAD") == 0) return 0;
  if (take(&S.stall_n)) sleep_ms(atomic_load(&S.stall_ms));
  if (take(&S.reset_n)) {
    size_t k = (size_t)atomic_load(&S.reset_at);
    if (k > len) k = len;
    send_all(fd, S.body + off, k);
    struct linger lg = {1, 0}; /* RST, not FIN */
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    return -1;
  }
  return send_all(fd, S.body + off, len) ? -1 : 0;
}

static void *conn_main(void *arg) {
  int slot = (int)(intptr_t)arg;
  int fd = S.fds[slot];
  size_t cap = 65536, have = 0;
  char *buf = malloc(cap);
  while (buf && serve_one(fd, buf, cap, &have) == 0) {
  }
  free(buf);
  pthread_mutex_lock(&S.lock);
  close(fd);
  S.fds[slot] = -1;
  S.active--;
  pthread_mutex_unlock(&S.lock);
  return NULL;
}

static void *accept_main(void *arg) {
  (void)arg;
  for (;;) {
    int fd = accept(S.lfd, NULL, NULL);
    if (fd < 0) {
      if (errno == EINTR) continue;
      return NULL; /* shut down */
    }
    int one = 1; /* no Nagle: the head and the body go as separate sends */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    pthread_mutex_lock(&S.lock);
    int slot = -1;
    for (int i = 0; i < MAX_CONNS && slot < 0; i++)
      if (S.fds[i] < 0) slot = i;
    pthread_t tid;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (slot >= 0) S.fds[slot] = fd;
    if (slot < 0 || pthread_create(&tid, &attr, conn_main, (void *)(intptr_t)slot)) {
      if (slot >= 0) S.fds[slot] = -1;
      close(fd);
    } else {
      S.active++;
    }
    pthread_attr_destroy(&attr);
    pthread_mutex_unlock(&S.lock);
  }
}

static int server_start(void) {
  pthread_mutex_init(&S.lock, NULL);
  for (int i = 0; i < MAX_CONNS; i++) S.fds[i] = -1;
  snprintf(S.etag, sizeof S.etag, "\"v1\"");
  S.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  if (S.lfd < 0 || bind(S.lfd, (struct sockaddr *)&sa, sizeof sa) || listen(S.lfd, 64) ||
      getsockname(S.lfd, (struct sockaddr *)&sa, &sl))
    return -1;
  S.port = ntohs(sa.sin_port);
  return pthread_create(&S.acceptor, NULL, accept_main, NULL) ? -1 : 0;
}

static void server_stop(void) {
  shutdown(S.lfd, SHUT_RDWR);
  pthread_join(S.acceptor, NULL);
  close(S.lfd);
  for (;;) { /* every connection's thread closes its socket and leaves */
    pthread_mutex_lock(&S.lock);
    int left = S.active;
    for (int i = 0; i < MAX_CONNS; i++)
      if (S.fds[i] >= 0) shutdown(S.fds[i], SHUT_RDWR);
    pthread_mutex_unlock(&S.lock);
    if (!left) break;
    sleep_ms(5);
  }
  free(S.body);
  free(S.put);
  pthread_mutex_destroy(&S.lock);
}

static void reset_faults(void) {
  atomic_store(&S.ignore_range, 0);
  atomic_store(&S.fail_n, 0);
  atomic_store(&S.reset_n, 0);
  atomic_store(&S.stall_n, 0);
  atomic_store(&S.wrong_range_n, 0);
  atomic_store(&S.status, 0);
  snprintf(S.etag, sizeof S.etag, "\"v1\"");
}

/* ---- fixtures ------------------------------------------------------------------ */

static char g_dir[256], g_file[300], g_url[128];
#define NT 12

/* A file of NT float tensors of various sizes (some empty), with
 * checksums, served as the object. */
static int make_object(void) {
  dlpx_tensor *ts[NT];
  const char *names[NT];
  char nbuf[NT][16];
  for (int i = 0; i < NT; i++) {
    int64_t shape[2] = {i == 3 ? 0 : 37 * (i + 1), 129 + i};
    if (dlpx_tensor_empty((DLDataType){kDLFloat, 32, 1}, 2, shape, &ts[i])) return -1;
    float *p = (float *)dlpx_tensor_data(ts[i]);
    for (int64_t k = 0; k < shape[0] * shape[1]; k++) p[k] = (float)(k * 7 + i);
    snprintf(nbuf[i], sizeof nbuf[i], "t%02d", i);
    names[i] = nbuf[i];
  }
  int rc = dlpx_save_file(g_file, NT, names, (const dlpx_tensor *const *)ts, 0, NULL, NULL,
                          DLPX_SAVE_CHECKSUMS | DLPX_SAVE_NO_FSYNC);
  for (int i = 0; i < NT; i++) dlpx_tensor_free(ts[i]);
  if (rc) return rc;
  FILE *fp = fopen(g_file, "rb");
  if (!fp) return -1;
  fseek(fp, 0, SEEK_END);
  S.len = (size_t)ftell(fp);
  fseek(fp, 0, SEEK_SET);
  S.body = malloc(S.len);
  size_t got = S.body ? fread(S.body, 1, S.len, fp) : 0;
  fclose(fp);
  return got == S.len ? 0 : -1;
}

/* Descriptors open in the process, the server's connections left out
 * (their threads close them a moment after the client does). */
static int count_fds(void) {
  for (int tries = 0; tries < 1000; tries++) { /* up to 5 s: a stalled answer sleeps 2 */
    pthread_mutex_lock(&S.lock);
    int active = S.active;
    pthread_mutex_unlock(&S.lock);
    if (!active) break;
    sleep_ms(5);
  }
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  if (!d) return -1;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (getenv("DLPX_TEST_SHOW_FDS")) {
      char p[300], t[300] = "";
      snprintf(p, sizeof p, "/proc/self/fd/%s", de->d_name);
      ssize_t k = readlink(p, t, sizeof t - 1);
      if (k > 0) t[k] = 0;
      fprintf(stderr, "# fd %s -> %s\n", de->d_name, t);
    }
    n++;
  }
  closedir(d);
  return n;
}

static dlpx_remote_options opts(uint64_t part, uint32_t conc, int32_t retries, double timeout) {
  dlpx_remote_options o;
  dlpx_remote_options_init(&o);
  o.part_size = part;
  o.concurrency = conc;
  o.retries = retries;
  o.timeout = timeout;
  return o;
}

/* Reads every tensor of the remote file with read_many and compares them
 * with the local file's.  0 when equal. */
static int read_all_equal(const dlpx_remote_options *o, uint32_t flags, int *rc_out) {
  dlpx_file *r = NULL, *l = NULL;
  int rc = dlpx_file_open_url(g_url, o, 0, &r);
  if (!rc) rc = dlpx_file_open(g_file, 0, &l);
  int diff = 0;
  if (!rc) {
    size_t n = dlpx_st_header_count(dlpx_file_header(r));
    size_t idx[NT];
    void *dst[NT];
    dlpx_tensor *mine[NT] = {0};
    for (size_t i = 0; i < n && !rc; i++) {
      idx[i] = i;
      rc = dlpx_file_empty(r, i, &mine[i]);
      dst[i] = mine[i] ? dlpx_tensor_data(mine[i]) : NULL;
    }
    if (!rc) rc = dlpx_file_read_many(r, n, idx, dst, flags);
    for (size_t i = 0; i < n && !rc; i++) {
      dlpx_tensor *t = NULL;
      rc = dlpx_file_read(l, i, 0, &t);
      const dlpx_st_entry *e = dlpx_st_header_entry(dlpx_file_header(l), i);
      if (!rc && memcmp(dlpx_tensor_data(t), dlpx_tensor_data(mine[i]), (size_t)(e->end - e->begin)))
        diff = 1;
      dlpx_tensor_free(t);
    }
    for (size_t i = 0; i < n; i++) dlpx_tensor_free(mine[i]);
  }
  dlpx_file_close(r);
  dlpx_file_close(l);
  *rc_out = rc;
  return diff;
}

/* ---- tests ----------------------------------------------------------------------- */

static void test_urls_and_options(void) {
  ASSERT_EQ(dlpx_is_url("http://x/y"), 1);
  ASSERT_EQ(dlpx_is_url("HTTPS://x"), 1);
  ASSERT_EQ(dlpx_is_url("s3://b/k"), 1);
  ASSERT_EQ(dlpx_is_url("/tmp/s3://"), 0);
  ASSERT_EQ(dlpx_is_url("file:///x"), 0);
  ASSERT_EQ(dlpx_is_url(NULL), 0);
  dlpx_file *f = (dlpx_file *)1;
  ASSERT_RC(DLPX_EINVAL, dlpx_file_open_url("ftp://x/y", NULL, 0, &f));
  ASSERT_PTR_EQ(f, NULL);
  ASSERT_RC(DLPX_EINVAL, dlpx_file_open_url("http://x/a b", NULL, 0, &f));
  ASSERT_MSG("space");
  ASSERT_RC(DLPX_EINVAL, dlpx_file_open_url("http://x/\ta", NULL, 0, &f));
  ASSERT_RC(DLPX_EINVAL, dlpx_file_open_url("s3:///key", NULL, 0, &f));
  ASSERT_MSG("bucket");
  ASSERT_RC(DLPX_EINVAL, dlpx_file_open_url("s3://bad^bucket/key", NULL, 0, &f));
  dlpx_remote_options o = opts(0, 1000, -1, 0);
  ASSERT_RC(DLPX_EINVAL, dlpx_file_open_url(g_url, &o, 0, &f));
  o = opts(0, 0, -2, 0);
  ASSERT_RC(DLPX_EINVAL, dlpx_file_open_url(g_url, &o, 0, &f));
  o = opts(0, 0, -1, -1);
  ASSERT_RC(DLPX_EINVAL, dlpx_file_open_url(g_url, &o, 0, &f));
  o = opts(0, 0, -1, 0);
  o.size = 8;
  ASSERT_RC(DLPX_EINVAL, dlpx_file_open_url(g_url, &o, 0, &f));
  ASSERT_MSG("size");
  o = opts(0, 0, -1, 0);
  o.checksum = 7;
  ASSERT_RC(DLPX_EINVAL, dlpx_file_open_url(g_url, &o, 0, &f));
  ASSERT_RC(DLPX_EINVAL, dlpx_file_open_url(g_url, NULL, 1, &f));
  ASSERT_RC(DLPX_EINVAL, dlpx_file_open_url(NULL, NULL, 0, &f));
  o = opts(0, 0, -1, 0);
  o.endpoint = "ftp://x";
  ASSERT_RC(DLPX_EINVAL, dlpx_file_open_url("s3://bkt/k", &o, 0, &f));
}

static void test_read(void) {
  check_live live;
  check_live_begin(&live);
  int fds = count_fds();
  /* parts smaller than tensors, and larger; few and many connections */
  const uint64_t parts[] = {1000, 4096, 65536, 8 << 20};
  const uint32_t concs[] = {1, 3, 8, 16};
  for (size_t i = 0; i < 4; i++) {
    dlpx_remote_options o = opts(parts[i], concs[i], 0, 10);
    int rc;
    int diff = read_all_equal(&o, DLPX_READ_VERIFY, &rc);
    ASSERT_OK(rc);
    ASSERT_EQ(diff, 0);
  }
  ASSERT_EQ(count_fds(), fds); /* connections closed with the files */
  /* dlpx_file_open takes URLs too (the defaults); mapping one is refused */
  dlpx_file *f;
  ASSERT_OK(dlpx_file_open(g_url, 0, &f));
  ASSERT_EQ(dlpx_file_is_remote(f), 1);
  dlpx_tensor *t = NULL;
  ASSERT_RC(DLPX_ENOTSUP, dlpx_file_map(f, 0, 0, &t));
  ASSERT_MSG("cannot be mapped");
  /* a range and a slice (a strided pick: many small runs) */
  ASSERT_OK(dlpx_file_read(f, 5, DLPX_READ_VERIFY, &t));
  float first;
  ASSERT_OK(dlpx_file_read_range(f, 5, 4, 8, &first, 0));
  ASSERT_EQ((long long)first, (long long)((const float *)dlpx_tensor_data(t))[1]);
  dlpx_index items[2] = {{.kind = DLPX_INDEX_SLICE, .start = 3, .stop = 100, .step = 7},
                         {.kind = DLPX_INDEX_SLICE, .start = 1, .stop = 90, .step = 3}};
  dlpx_tensor *s = NULL;
  ASSERT_OK(dlpx_file_read_slice(f, 5, 2, items, 0, &s));
  const float *all = dlpx_tensor_data(t), *got = dlpx_tensor_data(s);
  const DLTensor *td = dlpx_tensor_dltensor(t), *sd = dlpx_tensor_dltensor(s);
  int64_t cols = td->shape[1];
  ASSERT_EQ(sd->shape[0], 14);
  ASSERT_EQ(sd->shape[1], 30);
  for (int64_t r = 0; r < sd->shape[0]; r++)
    for (int64_t c = 0; c < sd->shape[1]; c++)
      ASSERT_EQ((long long)got[r * sd->shape[1] + c],
                (long long)all[(3 + 7 * r) * cols + 1 + 3 * c]);
  dlpx_tensor_free(s);
  dlpx_tensor_free(t);
  dlpx_file_close(f);
  ASSERT_NO_LEAKS(&live);
}

static void test_server_ignores_range(void) {
  reset_faults();
  atomic_store(&S.ignore_range, 1);
  long sent0 = atomic_load(&S.bytes_sent);
  dlpx_remote_options o = opts(1000, 4, 0, 10);
  int rc;
  int diff = read_all_equal(&o, DLPX_READ_VERIFY, &rc);
  reset_faults();
  ASSERT_OK(rc);
  ASSERT_EQ(diff, 0);
  /* the open's probe and one streamed body: not one body per part */
  ASSERT_EQ(atomic_load(&S.bytes_sent) - sent0 < (long)(4 * S.len), 1);
}

static void test_retries(void) {
  reset_faults();
  int rc;
  dlpx_remote_options o = opts(4096, 4, 5, 10);
  atomic_store(&S.fail_n, 3);
  ASSERT_EQ(read_all_equal(&o, DLPX_READ_VERIFY, &rc), 0);
  ASSERT_OK(rc);
  /* persistent 503s: the error names the retries */
  o = opts(4096, 4, 2, 10);
  atomic_store(&S.status, 503);
  read_all_equal(&o, 0, &rc);
  reset_faults();
  ASSERT_EQ(rc, DLPX_EIO);
  ASSERT_MSG("503");
  ASSERT_MSG("after 2 retries");
  /* connections reset mid-body: resumed at the first missing byte */
  o = opts(65536, 2, 3, 10);
  atomic_store(&S.reset_at, 1000);
  atomic_store(&S.reset_n, 2);
  ASSERT_EQ(read_all_equal(&o, DLPX_READ_VERIFY, &rc), 0);
  reset_faults();
  ASSERT_OK(rc);
}

static void test_stall_and_timeout(void) {
  reset_faults();
  int rc;
  dlpx_file *f;
  dlpx_remote_options o = opts(65536, 2, 0, 0.5);
  ASSERT_OK(dlpx_file_open_url(g_url, &o, 0, &f));
  dlpx_tensor *t = NULL;
  atomic_store(&S.stall_ms, 2000);
  atomic_store(&S.stall_n, 1);
  ASSERT_RC(DLPX_ETIMEDOUT, dlpx_file_read(f, 11, 0, &t));
  ASSERT_MSG("no data for");
  dlpx_file_close(f);
  /* with a retry the second answer comes at once */
  o = opts(65536, 2, 1, 0.5);
  atomic_store(&S.stall_n, 1);
  ASSERT_EQ(read_all_equal(&o, 0, &rc), 0);
  ASSERT_OK(rc);
  reset_faults();
}

static void test_bad_answers(void) {
  reset_faults();
  dlpx_file *f = NULL;
  dlpx_remote_options o = opts(4096, 2, 0, 10);
  /* a 206 that starts elsewhere than asked is never assembled */
  ASSERT_OK(dlpx_file_open_url(g_url, &o, 0, &f));
  dlpx_tensor *t = NULL;
  atomic_store(&S.wrong_range_n, 1);
  ASSERT_RC(DLPX_EIO, dlpx_file_read(f, 7, 0, &t));
  ASSERT_MSG("wrong range");
  /* the object changed after open: If-Match fails */
  snprintf(S.etag, sizeof S.etag, "\"v2\"");
  ASSERT_RC(DLPX_EIO, dlpx_file_read(f, 7, 0, &t));
  ASSERT_MSG("changed");
  reset_faults();
  dlpx_file_close(f);
  /* statuses */
  atomic_store(&S.status, 404);
  ASSERT_RC(DLPX_ENOENT, dlpx_file_open_url(g_url, &o, 0, &f));
  ASSERT_MSG("404");
  atomic_store(&S.status, 403);
  ASSERT_RC(DLPX_EACCES, dlpx_file_open_url(g_url, &o, 0, &f));
  ASSERT_MSG("Test: as asked"); /* the S3-style error body, quoted */
  atomic_store(&S.status, 400);
  ASSERT_RC(DLPX_EIO, dlpx_file_open_url(g_url, &o, 0, &f));
  reset_faults();
  /* nobody listening */
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  bind(lfd, (struct sockaddr *)&sa, sizeof sa);
  getsockname(lfd, (struct sockaddr *)&sa, &sl);
  close(lfd); /* the port is free again: connections are refused */
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/x", ntohs(sa.sin_port));
  ASSERT_RC(DLPX_EIO, dlpx_file_open_url(url, &o, 0, &f));
}

static void test_corrupt_object(void) {
  reset_faults();
  dlpx_file *f = NULL;
  dlpx_remote_options o = opts(4096, 3, 0, 10);
  ASSERT_OK(dlpx_file_open_url(g_url, &o, 0, &f));
  const dlpx_st_entry *e = dlpx_st_header_entry(dlpx_file_header(f), 9);
  size_t at = (size_t)(dlpx_file_data_offset(f) + e->begin + 5000);
  S.body[at] ^= 0x40;
  dlpx_tensor *t = NULL;
  int rc = dlpx_file_read(f, 9, DLPX_READ_VERIFY, &t);
  S.body[at] ^= 0x40;
  ASSERT_EQ(rc, DLPX_ECHECKSUM);
  ASSERT_MSG("t09");
  /* unverified, the bytes come as they are */
  ASSERT_OK(dlpx_file_read(f, 9, 0, &t));
  dlpx_tensor_free(t);
  dlpx_file_close(f);
}

static void test_truncated_and_malformed(void) {
  reset_faults();
  char *keep = S.body;
  size_t keep_len = S.len;
  dlpx_file *f = NULL;
  dlpx_remote_options o = opts(4096, 2, 0, 10);
  S.len = 5; /* shorter than the length prefix */
  ASSERT_RC(DLPX_EFORMAT, dlpx_file_open_url(g_url, &o, 0, &f));
  ASSERT_MSG("too short");
  S.len = keep_len / 2; /* the header promises more data than there is */
  ASSERT_RC(DLPX_EFORMAT, dlpx_file_open_url(g_url, &o, 0, &f));
  static char bad[64]; /* static: a server thread may still be sending it after the test */
  memset(bad, 0, sizeof bad);
  bad[0] = 40; /* a header of 40 bytes that is not JSON */
  memset(bad + 8, 'x', 40);
  S.body = bad;
  S.len = 48;
  ASSERT_RC(DLPX_EFORMAT, dlpx_file_open_url(g_url, &o, 0, &f));
  bad[0] = (char)0xff, bad[1] = (char)0xff, bad[2] = (char)0xff; /* longer than the object */
  ASSERT_RC(DLPX_EFORMAT, dlpx_file_open_url(g_url, &o, 0, &f));
  S.body = keep;
  S.len = keep_len;
}

static int ticks;
static uint64_t last_done;
static int on_progress(void *ctx, uint64_t done, uint64_t total) {
  (void)ctx;
  (void)total;
  ticks++;
  last_done = done;
  return 0;
}
static int cancel(void *ctx, uint64_t done, uint64_t total) {
  (void)ctx, (void)done, (void)total;
  return 1;
}

static void test_get_put_stat(void) {
  reset_faults();
  dlpx_remote_options o = opts(1000, 4, 0, 10);
  uint64_t size = 0;
  ASSERT_OK(dlpx_remote_stat(g_url, &o, &size));
  ASSERT_EQ(size, S.len);
  char out[400];
  snprintf(out, sizeof out, "%s/copy.safetensors", g_dir);
  ticks = 0;
  ASSERT_OK(dlpx_remote_get(g_url, &o, out, on_progress, NULL));
  ASSERT_EQ(ticks > 0, 1);
  ASSERT_EQ(last_done, S.len);
  FILE *fp = fopen(out, "rb");
  ASSERT_NE(fp, NULL);
  char *got = malloc(S.len + 1);
  size_t n = fread(got, 1, S.len + 1, fp);
  fclose(fp);
  ASSERT_EQ(n, S.len);
  ASSERT_EQ(memcmp(got, S.body, n), 0);
  free(got);
  /* from a server that ignores Range: right, and not a body per part */
  atomic_store(&S.ignore_range, 1);
  long sent0 = atomic_load(&S.bytes_sent);
  ASSERT_OK(dlpx_remote_get(g_url, &o, out, NULL, NULL));
  reset_faults();
  ASSERT_EQ(atomic_load(&S.bytes_sent) - sent0 < (long)(3 * S.len), 1);
  fp = fopen(out, "rb");
  ASSERT_NE(fp, NULL);
  got = malloc(S.len + 1);
  n = fread(got, 1, S.len + 1, fp);
  fclose(fp);
  ASSERT_EQ(n, S.len);
  ASSERT_EQ(memcmp(got, S.body, n), 0);
  free(got);
  /* a cancelled download leaves no file behind, not even a temporary */
  char out2[400];
  snprintf(out2, sizeof out2, "%s/cancelled", g_dir);
  ASSERT_RC(DLPX_ESTATE, dlpx_remote_get(g_url, &o, out2, cancel, NULL));
  ASSERT_EQ(access(out2, F_OK), -1);
  DIR *d = opendir(g_dir);
  struct dirent *de;
  int tmps = 0;
  while ((de = readdir(d)))
    if (strstr(de->d_name, ".tmp-")) tmps++;
  closedir(d);
  ASSERT_EQ(tmps, 0);
  /* a 404 download leaves nothing either */
  atomic_store(&S.status, 404);
  ASSERT_RC(DLPX_ENOENT, dlpx_remote_get(g_url, &o, out2, NULL, NULL));
  reset_faults();
  ASSERT_EQ(access(out2, F_OK), -1);
  /* PUT of a local file (http: one request) */
  ASSERT_OK(dlpx_remote_put(g_file, g_url, &o, NULL, NULL));
  ASSERT_EQ(S.put_len, S.len);
  ASSERT_EQ(memcmp(S.put, S.body, S.len), 0);
  /* a failing PUT is retried from its start */
  o = opts(1000, 4, 3, 10);
  atomic_store(&S.fail_n, 2);
  free(S.put);
  S.put = NULL;
  ASSERT_OK(dlpx_remote_put(g_file, g_url, &o, NULL, NULL));
  ASSERT_EQ(S.put_len, S.len);
  ASSERT_EQ(memcmp(S.put, S.body, S.len), 0);
  ASSERT_RC(DLPX_ENOENT, dlpx_remote_put("/nonexistent/file", g_url, &o, NULL, NULL));
  ASSERT_RC(DLPX_EINVAL, dlpx_remote_list(g_url, &o, NULL, NULL));
}

static int list_cb(void *ctx, const char *key, uint64_t size) {
  (void)ctx, (void)key, (void)size;
  return 0;
}

static void test_list_needs_s3(void) {
  ASSERT_RC(DLPX_ENOTSUP, dlpx_remote_list(g_url, NULL, list_cb, NULL));
  ASSERT_MSG("s3://");
}

/* Reads every tensor of an open remote file with one read_many. */
static int read_many_all(dlpx_file *r) {
  size_t n = dlpx_st_header_count(dlpx_file_header(r));
  size_t idx[NT];
  void *dst[NT];
  dlpx_tensor *mine[NT] = {0};
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    idx[i] = i;
    rc = dlpx_file_empty(r, i, &mine[i]);
    dst[i] = mine[i] ? dlpx_tensor_data(mine[i]) : NULL;
  }
  if (!rc) rc = dlpx_file_read_many(r, n, idx, dst, DLPX_READ_VERIFY);
  for (size_t i = 0; i < n; i++) dlpx_tensor_free(mine[i]);
  return rc;
}

static void test_threads(void) {
  reset_faults();
  check_live live;
  check_live_begin(&live);
  int fds = count_fds();
  dlpx_file *f = NULL;
  dlpx_remote_options o = opts(4096, 4, 0, 10);
  o.threads = 17;
  ASSERT_RC(DLPX_EINVAL, dlpx_file_open_url(g_url, &o, 0, &f));
  ASSERT_MSG("threads");
  /* more threads than requests in flight, than requests, and between */
  const uint32_t threads[] = {2, 3, 16, 16, 4};
  const uint32_t concs[] = {2, 7, 4, 16, 1};
  const uint64_t parts[] = {1000, 4096, 65536, 8 << 20, 4096};
  for (size_t i = 0; i < 5; i++) {
    o = opts(parts[i], concs[i], 0, 10);
    o.threads = threads[i];
    int rc;
    ASSERT_EQ(read_all_equal(&o, DLPX_READ_VERIFY, &rc), 0);
    ASSERT_OK(rc);
  }
  /* retries stay with the thread that took the request */
  o = opts(4096, 6, 5, 10);
  o.threads = 3;
  atomic_store(&S.fail_n, 4);
  int rc;
  ASSERT_EQ(read_all_equal(&o, DLPX_READ_VERIFY, &rc), 0);
  ASSERT_OK(rc);
  reset_faults();
  /* one thread's failure stops the others; the error is the failure's,
   * not a stopped thread's */
  o = opts(2048, 6, 0, 10);
  o.threads = 3;
  ASSERT_OK(dlpx_file_open_url(g_url, &o, 0, &f));
  atomic_store(&S.wrong_range_n, 1);
  ASSERT_RC(DLPX_EIO, read_many_all(f));
  ASSERT_MSG("wrong range");
  reset_faults();
  atomic_store(&S.status, 404);
  ASSERT_RC(DLPX_ENOENT, read_many_all(f));
  ASSERT_MSG("404");
  reset_faults();
  const dlpx_st_entry *e = dlpx_st_header_entry(dlpx_file_header(f), 9);
  size_t at = (size_t)(dlpx_file_data_offset(f) + e->begin + 3000);
  S.body[at] ^= 0x10;
  rc = read_many_all(f);
  S.body[at] ^= 0x10;
  ASSERT_EQ(rc, DLPX_ECHECKSUM);
  ASSERT_MSG("t09");
  /* and the file reads whole afterwards, on the same pools */
  ASSERT_OK(read_many_all(f));
  dlpx_file_close(f);
  ASSERT_EQ(count_fds(), fds);
  ASSERT_NO_LEAKS(&live);
}

static void test_rounds(void) {
  /* many opens and reads: no descriptor or memory left behind */
  reset_faults();
  check_live live;
  check_live_begin(&live);
  int fds = count_fds();
  int rounds = getenv("DLPX_TEST_UNDER_VALGRIND") ? 5 : 50;
  for (int i = 0; i < rounds; i++) {
    dlpx_remote_options o = opts(8192, (uint32_t)(1 + i % 6), 0, 10);
    o.threads = (uint32_t)(i % 4); /* automatic, then 1 to 3 */
    int rc;
    ASSERT_EQ(read_all_equal(&o, (i & 1) ? DLPX_READ_VERIFY : 0, &rc), 0);
    ASSERT_OK(rc);
  }
  ASSERT_EQ(count_fds(), fds);
  ASSERT_NO_LEAKS(&live);
}

int main(void) {
  if (!dlpx_remote_available()) {
    printf("1..0 # SKIP %s\n", dlpx_last_error());
    return 0;
  }
  const char *base = getenv("TMPDIR");
  if (!base || !*base) base = "/tmp";
  snprintf(g_dir, sizeof g_dir, "%s/dlpx-test-remote-XXXXXX", base);
  if (!mkdtemp(g_dir)) {
    perror("mkdtemp");
    return 2;
  }
  snprintf(g_file, sizeof g_file, "%s/object.safetensors", g_dir);
  if (server_start() || make_object()) {
    fprintf(stderr, "# cannot start the test server or make the object\n");
    return 2;
  }
  snprintf(g_url, sizeof g_url, "http://127.0.0.1:%d/object.safetensors", S.port);
#define RUN_SOME(fn)                                                     \
  do {                                                                   \
    const char *only_ = getenv("DLPX_TEST_ONLY");                        \
    if (!only_ || strstr(#fn, only_)) RUN(fn);                           \
  } while (0)
  RUN_SOME(test_urls_and_options);
  RUN_SOME(test_read);
  RUN_SOME(test_server_ignores_range);
  RUN_SOME(test_retries);
  RUN_SOME(test_stall_and_timeout);
  RUN_SOME(test_bad_answers);
  RUN_SOME(test_corrupt_object);
  RUN_SOME(test_threads);
  RUN_SOME(test_truncated_and_malformed);
  RUN_SOME(test_get_put_stat);
  RUN_SOME(test_list_needs_s3);
  RUN_SOME(test_rounds);
  server_stop();
  char p[400];
  snprintf(p, sizeof p, "%s/copy.safetensors", g_dir);
  unlink(p);
  unlink(g_file);
  rmdir(g_dir);
  CHECK_DONE();
}
