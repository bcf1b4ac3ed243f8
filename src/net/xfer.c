/* xfer.c - requests run concurrently on the calling thread with curl's
 * multi interface: ranged GETs written straight into their sinks (checked
 * against the range asked for), uploads read from a file or memory,
 * retries with backoff that resume a GET at its first missing byte. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "../io/io.h"
#include "net.h"

#define ERR_BODY_MAX ((size_t)4096)
#define KEEP_BODY_MAX ((size_t)64 << 20)
#define BUFFER_SIZE 524288L
#define STREAM_SINK_MIN ((uint64_t)1 << 20) /* sinks this large: dlpx__copy_stream */
#define BACKOFF_BASE_NS 100000000LL /* 0.1 s */
#define BACKOFF_MAX_NS 5000000000LL

typedef struct {
  CURL *easy;
  struct curl_slist *hdrs;
  dlpx__req *req;
  char errbuf[CURL_ERROR_SIZE];
} slot;

struct dlpx__conn {
  const dlpx__target *t;
  const dlpx__curl_api *c;
  CURLM *multi;
  slot *slots;
  uint32_t nslots;
  char etag[160];
  bool no_range;
  uint64_t size;   /* the object's size once known (0: unknown) */
  uint64_t moved;  /* bytes through the callbacks (progress) */
  uint64_t seed;
};

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int dlpx__conn_new(const dlpx__target *t, dlpx__conn **out) {
  *out = NULL;
  const dlpx__curl_api *c = dlpx__curl();
  if (!c) return DLPX_ENOTSUP;
  dlpx__conn *k = calloc(1, sizeof *k);
  if (!k) return dlpx__fail(DLPX_ENOMEM, "no memory");
  k->t = t;
  k->c = c;
  k->nslots = t->concurrency;
  k->slots = calloc(k->nslots, sizeof *k->slots);
  k->multi = c->multi_init();
  k->seed = (uint64_t)now_ns() ^ (uint64_t)getpid() << 32;
  if (!k->slots || !k->multi) {
    dlpx__conn_free(k);
    return dlpx__fail(DLPX_ENOMEM, "no memory for HTTP connections");
  }
  c->multi_setopt(k->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)k->nslots);
  for (uint32_t i = 0; i < k->nslots; i++)
    if (!(k->slots[i].easy = c->easy_init())) {
      dlpx__conn_free(k);
      return dlpx__fail(DLPX_ENOMEM, "no memory for HTTP connections");
    }
  *out = k;
  return 0;
}

void dlpx__conn_free(dlpx__conn *k) {
  if (!k) return;
  for (uint32_t i = 0; k->slots && i < k->nslots; i++) {
    if (k->slots[i].easy) k->c->easy_cleanup(k->slots[i].easy);
    if (k->slots[i].hdrs) k->c->slist_free_all(k->slots[i].hdrs);
  }
  if (k->multi) k->c->multi_cleanup(k->multi);
  free(k->slots);
  free(k);
}

void dlpx__conn_set_etag(dlpx__conn *k, const char *etag) {
  snprintf(k->etag, sizeof k->etag, "%s", etag ? etag : "");
}

bool dlpx__conn_no_range(const dlpx__conn *k) { return k->no_range; }

void dlpx__conn_set_size(dlpx__conn *k, uint64_t size) { k->size = size; }

/* ---- callbacks ------------------------------------------------------------- */

static bool append(dlpx__req *r, const char *p, size_t n, size_t cap) {
  if (r->resp_len + n > cap) n = cap > r->resp_len ? cap - r->resp_len : 0;
  if (!n) return true;
  if (r->resp_len + n + 1 > r->resp_cap) {
    size_t want = (r->resp_len + n + 1) * 2;
    if (want > cap + 1) want = cap + 1;
    char *b = realloc(r->resp, want);
    if (!b) return false;
    r->resp = b;
    r->resp_cap = want;
  }
  memcpy(r->resp + r->resp_len, p, n);
  r->resp_len += n;
  r->resp[r->resp_len] = '\0';
  return true;
}

static size_t on_header(char *p, size_t sz, size_t nm, void *ud) {
  dlpx__req *r = ud;
  size_t n = sz * nm;
  char line[512];
  size_t k = n < sizeof line - 1 ? n : sizeof line - 1;
  memcpy(line, p, k);
  line[k] = '\0';
  while (k && (line[k - 1] == '\r' || line[k - 1] == '\n')) line[--k] = '\0';
  if (strncmp(line, "HTTP/", 5) == 0) { /* a new response (after a redirect, or 100) */
    r->etag[0] = '\0';
    r->total = 0;
    r->header_checked = false;
    r->skip = 0;
    r->status = 0;
    char *sp = strchr(line, ' ');
    if (sp) r->status = strtol(sp + 1, NULL, 10);
    r->cr_start = -1; /* no Content-Range seen yet */
    return n;
  }
  char *colon = strchr(line, ':');
  if (!colon) return n;
  *colon = '\0';
  char *v = colon + 1;
  while (*v == ' ' || *v == '\t') v++;
  if (strcasecmp(line, "ETag") == 0) {
    snprintf(r->etag, sizeof r->etag, "%s", v);
  } else if (strcasecmp(line, "Content-Range") == 0) {
    uint64_t a, b, t;
    if (dlpx__content_range(v, &a, &b, &t)) {
      (void)b;
      r->cr_start = (int64_t)a;
      r->total = t;
    } else {
      r->cr_start = -2; /* unreadable */
    }
  } else if (strcasecmp(line, "Content-Length") == 0 && !r->total && r->status == 200) {
    r->total = strtoull(v, NULL, 10);
  }
  return n;
}

/* A server that ignores If-Match must still not mix two versions of an
 * object: the answer's ETag, when it gives one, is the one seen at open. */
static int check_etag(dlpx__conn *k, const dlpx__req *r) {
  if (!k->etag[0] || !r->etag[0] || strcmp(k->etag, r->etag) == 0) return 0;
  return dlpx__fail(DLPX_EIO, "%s: the object changed while it was read (its ETag was %s, "
                    "now %s)", k->t->label, k->etag, r->etag);
}

/* Checks the response that a GET's first body byte belongs to: 0 to take
 * its bytes, 1 for an error answer (its body is collected), or a dlpx
 * error. */
static int check_response(dlpx__conn *k, dlpx__req *r) {
  r->header_checked = true;
  int64_t start = r->cr_start;
  if (r->status < 200 || r->status > 299) return 1;
  if (!r->nsinks) return 0;
  const char *u = k->t->label;
  if (r->status == 206) {
    if (start == -1 || start == -2)
      return dlpx__fail(DLPX_EIO, "%s: a 206 answer with %s Content-Range", u,
                        start == -1 ? "no" : "an unreadable");
    if ((uint64_t)start != r->cursor)
      return dlpx__fail(DLPX_EIO,
                        "%s: asked for bytes from %llu, the server sent bytes from %lld "
                        "(a wrong range: refusing to assemble it)",
                        u, (unsigned long long)r->cursor, (long long)start);
    if (k->size && r->total && r->total != k->size)
      return dlpx__fail(DLPX_EIO, "%s: the object is now %llu bytes, it was %llu when opened "
                        "(it changed while it was read)", u, (unsigned long long)r->total,
                        (unsigned long long)k->size);
    return check_etag(k, r);
  }
  /* 200: the whole object, from byte 0 (the server ignores Range). */
  if (r->ranged) k->no_range = true;
  if (k->size && r->total && r->total != k->size)
    return dlpx__fail(DLPX_EIO, "%s: the object is now %llu bytes, it was %llu when opened "
                      "(it changed while it was read)", u, (unsigned long long)r->total,
                      (unsigned long long)k->size);
  r->skip = r->cursor;
  return check_etag(k, r);
}

static size_t on_write(char *p, size_t sz, size_t nm, void *ud) {
  dlpx__req *r = ud;
  dlpx__conn *k = r->conn;
  size_t n = sz * nm, all = n;
  if (!r->header_checked) {
    int rc = check_response(k, r);
    if (rc < 0) {
      r->fail = rc;
      return 0;
    }
  }
  r->last_byte = now_ns();
  if (r->status < 200 || r->status > 299) {
    if (!append(r, p, n, ERR_BODY_MAX)) r->fail = dlpx__fail(DLPX_ENOMEM, "no memory");
    return r->fail ? 0 : all;
  }
  if (r->keep_body) {
    if (!append(r, p, n, KEEP_BODY_MAX)) {
      r->fail = dlpx__fail(DLPX_ENOMEM, "no memory for a response");
      return 0;
    }
    return all;
  }
  if (!r->nsinks) return all;
  if (r->skip) {
    size_t s = r->skip < n ? (size_t)r->skip : n;
    r->skip -= s, p += s, n -= s;
  }
  while (n && r->cursor < r->end) {
    while (r->sink < r->nsinks && r->cursor >= r->sinks[r->sink].off + r->sinks[r->sink].len)
      r->sink++;
    if (r->sink == r->nsinks) break;
    dlpx__sink *s = &r->sinks[r->sink];
    if (r->cursor < s->off) { /* a gap between sinks (a streamed body) */
      uint64_t gap = s->off - r->cursor;
      size_t g = gap < n ? (size_t)gap : n;
      r->cursor += g, p += g, n -= g;
      continue;
    }
    uint64_t left = s->off + s->len - r->cursor;
    size_t c = left < n ? (size_t)left : n;
    /* A large sink is a tensor being filled: its bytes skip the caches.
     * The checksum reads them where they came from (still cached). */
    if (s->len >= STREAM_SINK_MIN)
      dlpx__copy_stream(s->dst + (r->cursor - s->off), p, c);
    else
      memcpy(s->dst + (r->cursor - s->off), p, c);
    if (s->sums) {
      int rc = dlpx__sumstream_feed(s->sums, p, c);
      if (rc) {
        r->fail = rc;
        return 0;
      }
    }
    r->cursor += c, p += c, n -= c;
    k->moved += c;
  }
  if (r->cursor >= r->end && n) { /* more than asked for: stop here */
    r->stop_ok = true;
    return 0;
  }
  return all;
}

static size_t on_read(char *buf, size_t sz, size_t nm, void *ud) {
  dlpx__req *r = ud;
  size_t n = sz * nm;
  uint64_t left = r->up_len - r->up_sent;
  if (left < n) n = (size_t)left;
  if (!n) return 0;
  if (r->up_fd >= 0) {
    int rc = dlpx__pread_full(r->up_fd, buf, n, r->up_off + r->up_sent, "the upload's source");
    if (rc) {
      r->fail = rc;
      return CURL_READFUNC_ABORT;
    }
  } else {
    memcpy(buf, r->body + r->up_sent, n);
  }
  r->up_sent += n;
  ((dlpx__conn *)r->conn)->moved += n;
  r->last_byte = now_ns();
  return n;
}

static int on_seek(void *ud, curl_off_t off, int origin) {
  dlpx__req *r = ud;
  if (origin != SEEK_SET || off < 0 || (uint64_t)off > r->up_len) return CURL_SEEKFUNC_FAIL;
  ((dlpx__conn *)r->conn)->moved -= r->up_sent - (uint64_t)off;
  r->up_sent = (uint64_t)off;
  return CURL_SEEKFUNC_OK;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
  (void)dt, (void)dn, (void)ut, (void)un;
  dlpx__req *r = ud;
  dlpx__conn *k = r->conn;
  if (now_ns() - r->last_byte > (int64_t)(k->t->timeout * 1e9)) {
    r->stalled = true;
    return 1;
  }
  return 0;
}

/* ---- one request on one easy handle ----------------------------------------- */

static int setup(dlpx__conn *k, slot *s, dlpx__req *r) {
  const dlpx__curl_api *c = k->c;
  const dlpx__target *t = k->t;
  CURL *e = s->easy;
  c->easy_reset(e);
  if (s->hdrs) c->slist_free_all(s->hdrs);
  s->hdrs = NULL;
  s->errbuf[0] = '\0';
  s->req = r;
  r->easy = e;
  r->conn = k;
  r->header_checked = r->stop_ok = r->stalled = false;
  r->status = 0;
  r->skip = 0;
  r->fail = 0;
  r->last_byte = now_ns();
  r->resp_len = 0;
  if (r->resp) r->resp[0] = '\0';
  char url[16384];
  const char *base = r->url ? r->url : t->url;
  if ((size_t)snprintf(url, sizeof url, "%s%s%s", base, r->query ? "?" : "",
                       r->query ? r->query : "") >= sizeof url)
    return dlpx__fail(DLPX_EINVAL, "%s: URL too long", t->label);
  int bad = 0;
#define SET(opt, val) bad |= c->easy_setopt(e, opt, val) != CURLE_OK
  SET(CURLOPT_URL, url);
  SET(CURLOPT_PRIVATE, (void *)s);
  SET(CURLOPT_ERRORBUFFER, s->errbuf);
  SET(CURLOPT_NOSIGNAL, 1L);
  SET(CURLOPT_FOLLOWLOCATION, 1L);
  SET(CURLOPT_MAXREDIRS, 10L);
  SET(CURLOPT_BUFFERSIZE, BUFFER_SIZE);
  SET(CURLOPT_TCP_KEEPALIVE, 1L);
  SET(CURLOPT_EXPECT_100_TIMEOUT_MS, 200L);
  SET(CURLOPT_CONNECTTIMEOUT_MS, (long)(t->timeout * 1000));
  SET(CURLOPT_NOPROGRESS, 0L);
  SET(CURLOPT_XFERINFOFUNCTION, on_progress);
  SET(CURLOPT_XFERINFODATA, (void *)r);
  SET(CURLOPT_HEADERFUNCTION, on_header);
  SET(CURLOPT_HEADERDATA, (void *)r);
  SET(CURLOPT_WRITEFUNCTION, on_write);
  SET(CURLOPT_WRITEDATA, (void *)r);
  SET(CURLOPT_SSL_VERIFYPEER, t->verify_tls ? 1L : 0L);
  SET(CURLOPT_SSL_VERIFYHOST, t->verify_tls ? 2L : 0L);
  if (t->ca_file) SET(CURLOPT_CAINFO, t->ca_file);
  /* Only http and https, for the URL and for redirects (ignored by a
   * libcurl older than 7.85, which knows only the deprecated bitmask). */
  c->easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  c->easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  if (t->sigv4) {
    SET(CURLOPT_AWS_SIGV4, t->sigv4);
    SET(CURLOPT_USERPWD, t->userpwd);
  }
  if (t->bearer) {
    SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
    SET(CURLOPT_XOAUTH2_BEARER, t->bearer);
  }
  struct curl_slist *h = NULL;
  bool oom = false;
#define HDR(line)                                 \
  do {                                            \
    struct curl_slist *h2_ = c->slist_append(h, line); \
    if (!h2_) oom = true;                         \
    else h = h2_;                                 \
  } while (0)
  /* No "Expect:" to turn 100-continue off: libcurl 7.88 signs the empty
   * header it then leaves out (SignatureDoesNotMatch).  Servers that never
   * answer 100 cost at most the short wait set below. */
  if (t->s3) HDR("x-amz-content-sha256: UNSIGNED-PAYLOAD");
  if (t->token_hdr) HDR(t->token_hdr);
  if (r->content_md5_or_sum) HDR(r->content_md5_or_sum);
  bool get = strcmp(r->method, "GET") == 0;
  if (get && r->ranged) {
    char range[64];
    snprintf(range, sizeof range, "%llu-%llu", (unsigned long long)r->cursor,
             (unsigned long long)(r->end - 1));
    SET(CURLOPT_RANGE, range);
    if (k->etag[0] && strncmp(k->etag, "W/", 2)) {
      char im[200];
      snprintf(im, sizeof im, "If-Match: %s", k->etag);
      HDR(im);
    }
  }
  if (strcmp(r->method, "HEAD") == 0) {
    SET(CURLOPT_NOBODY, 1L);
  } else if (strcmp(r->method, "PUT") == 0) {
    r->up_sent = 0;
    SET(CURLOPT_UPLOAD, 1L);
    SET(CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->up_len);
    SET(CURLOPT_READFUNCTION, on_read);
    SET(CURLOPT_READDATA, (void *)r);
    SET(CURLOPT_SEEKFUNCTION, on_seek);
    SET(CURLOPT_SEEKDATA, (void *)r);
  } else if (strcmp(r->method, "POST") == 0) {
    HDR("Content-Type: application/xml");
    SET(CURLOPT_POST, 1L);
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    SET(CURLOPT_COPYPOSTFIELDS, r->body ? r->body : "");
  } else if (!get) {
    SET(CURLOPT_CUSTOMREQUEST, r->method);
  }
  if (oom) {
    if (h) c->slist_free_all(h);
    return dlpx__fail(DLPX_ENOMEM, "no memory");
  }
  s->hdrs = h;
  SET(CURLOPT_HTTPHEADER, h);
#undef SET
#undef HDR
  if (bad) return dlpx__fail(DLPX_ENOTSUP, "%s: libcurl refused an option", t->label);
  if (c->multi_add_handle(k->multi, e) != CURLM_OK)
    return dlpx__fail(DLPX_ENOMEM, "curl_multi_add_handle failed");
  return 0;
}

/* The message of an error answer: the S3 error's Code and Message when
 * the body is one, else its start. */
static void answer_text(const dlpx__req *r, char *out, size_t cap) {
  out[0] = '\0';
  if (!r->resp || !r->resp_len) return;
  const char *code = strstr(r->resp, "<Code>"), *msg = strstr(r->resp, "<Message>");
  if (code) {
    const char *ce = strstr(code, "</Code>");
    const char *me = msg ? strstr(msg, "</Message>") : NULL;
    snprintf(out, cap, ": %.*s%s%.*s", ce ? (int)(ce - code - 6) : 0, code + 6,
             me ? ": " : "", me ? (int)(me - msg - 9) : 0, msg ? msg + 9 : "");
    return;
  }
  /* the start of the text, tags dropped and spaces collapsed */
  size_t n = 0;
  char buf[121];
  bool tag = false;
  for (size_t i = 0; i < r->resp_len && n < 120; i++) {
    char ch = r->resp[i];
    if (ch == '<') tag = true;
    if (tag) {
      if (ch == '>') tag = false;
      ch = ' ';
    }
    if (ch < ' ' || ch >= 0x7f) ch = ' ';
    if (ch == ' ' && (n == 0 || buf[n - 1] == ' ')) continue;
    buf[n++] = ch;
  }
  while (n && buf[n - 1] == ' ') n--;
  buf[n] = '\0';
  snprintf(out, cap, ": %s", buf);
}

/* After a request ended: 0 (done), 1 (retry), or a dlpx error. */
static int judge(dlpx__conn *k, slot *s, dlpx__req *r, CURLcode cc, int *retry_code) {
  const char *u = k->t->label;
  const char *m = r->method;
  if (r->fail) return r->fail;
  if (cc == CURLE_OK || (cc == CURLE_WRITE_ERROR && r->stop_ok)) {
    if (r->status == 0) k->c->easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &r->status);
    long st = r->status;
    if (st == 416 && r->probe) { /* an empty object: nothing in range */
      r->total = 0;
      r->done = true;
      return 0;
    }
    if (st >= 200 && st <= 299) {
      if (r->nsinks && r->cursor < r->end && !r->probe) { /* cut short: resume */
        *retry_code = dlpx__fail(DLPX_EIO, "%s: the answer to %s ended early, at byte %llu of "
                                 "[%llu, %llu)", u, m, (unsigned long long)r->cursor,
                                 (unsigned long long)r->off, (unsigned long long)r->end);
        return 1;
      }
      r->done = true;
      return 0;
    }
    char text[300];
    answer_text(r, text, sizeof text);
    if (st == 404)
      return dlpx__fail(DLPX_ENOENT, "%s: not found (HTTP 404%s)", u, text);
    if (st == 401 || st == 403)
      return dlpx__fail(DLPX_EACCES, "%s: access denied (HTTP %ld%s)", u, st, text);
    if (st == 412)
      return dlpx__fail(DLPX_EIO, "%s: the object changed while it was read (HTTP 412: its "
                        "ETag is no longer %s)", u, k->etag);
    if (st == 408 || st == 429 || st >= 500) {
      *retry_code = dlpx__fail(DLPX_EIO, "%s: %s failed with HTTP %ld%s", u, m, st, text);
      return 1;
    }
    return dlpx__fail(DLPX_EIO, "%s: %s failed with HTTP %ld%s", u, m, st, text);
  }
  const char *why = s->errbuf[0] ? s->errbuf : k->c->easy_strerror(cc);
  switch (cc) {
    case CURLE_ABORTED_BY_CALLBACK:
      if (!r->stalled) return dlpx__fail(DLPX_ESTATE, "%s: cancelled", u);
      *retry_code = dlpx__fail(DLPX_ETIMEDOUT, "%s: no data for %g s (%s)", u, k->t->timeout, m);
      return 1;
    case CURLE_OPERATION_TIMEDOUT:
      *retry_code = dlpx__fail(DLPX_ETIMEDOUT, "%s: %s timed out: %s", u, m, why);
      return 1;
    case CURLE_COULDNT_CONNECT:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_WRITE_ERROR: /* not ours: stop_ok was false and no failure set */
      *retry_code = dlpx__fail(DLPX_EIO, "%s: %s failed: %s", u, m, why);
      return 1;
    case CURLE_PEER_FAILED_VERIFICATION:
      return dlpx__fail(DLPX_EIO, "%s: the server's TLS certificate was not accepted: %s", u, why);
    default:
      return dlpx__fail(DLPX_EIO, "%s: %s failed: %s", u, m, why);
  }
}

static int64_t backoff(dlpx__conn *k, int attempt) {
  int64_t d = BACKOFF_BASE_NS << (attempt < 16 ? attempt : 16);
  if (d > BACKOFF_MAX_NS || d <= 0) d = BACKOFF_MAX_NS;
  k->seed = k->seed * 6364136223846793005ULL + 1442695040888963407ULL;
  double jitter = 0.5 + 0.5 * (double)(k->seed >> 11) / (double)(1ULL << 53);
  return (int64_t)((double)d * jitter);
}

enum { IDLE, ACTIVE, WAITING, FINISHED };

/* Claims the next request to start: the next of this call's own, or of
 * the queue that several threads share; n when none is left. */
static size_t claim(size_t *next, dlpx__xfer_share *q, size_t n) {
  if (!q) return *next < n ? (*next)++ : n;
  size_t i = atomic_fetch_add_explicit(&q->next, 1, memory_order_relaxed);
  return i < n ? i : n;
}

static int run(dlpx__conn *k, dlpx__req *reqs, size_t n, dlpx_progress_fn progress, void *ctx,
               uint64_t total, dlpx__xfer_share *q, bool *stopped) {
  const dlpx__curl_api *c = k->c;
  uint32_t nslots = q && q->slots && q->slots < k->nslots ? q->slots : k->nslots;
  unsigned char *state = calloc(n ? n : 1, 1);
  if (!state) return dlpx__fail(DLPX_ENOMEM, "no memory");
  /* claimed: requests this call took on; more: the queue may hold others */
  size_t finished = 0, next = 0, waiting = 0, claimed = 0; /* waiting: requests to retry */
  bool more = n > 0;
  int rc = 0;
  uint64_t moved0 = k->moved;
  while ((more || finished < claimed) && !rc) {
    if (q && atomic_load_explicit(&q->failed, memory_order_relaxed)) {
      rc = dlpx__fail(DLPX_ESTATE, "%s: stopped (a request on another thread failed)",
                      k->t->label);
      *stopped = true;
      break;
    }
    /* start what may start */
    int64_t t = now_ns(), wake = -1;
    for (uint32_t si = 0; si < nslots && !rc; si++) {
      if (k->slots[si].req) continue;
      dlpx__req *pick = NULL;
      /* retries first; the scan only while there are any (a slice may
       * be thousands of requests) */
      for (size_t i = 0; waiting && i < n && !pick; i++)
        if (state[i] == WAITING) {
          if (reqs[i].retry_at <= t) pick = &reqs[i];
          else if (wake < 0 || reqs[i].retry_at < wake) wake = reqs[i].retry_at;
        }
      if (!pick && more) {
        size_t i = claim(&next, q, n);
        if (i < n) { /* set up by the one that claims it: others may be running theirs */
          pick = &reqs[i];
          pick->cursor = pick->off;
          pick->sink = 0;
          pick->attempts = 0;
          pick->done = false;
          claimed++;
        } else {
          more = false;
        }
      }
      if (!pick) break;
      if (state[pick - reqs] == WAITING) waiting--;
      state[pick - reqs] = ACTIVE;
      if ((rc = setup(k, &k->slots[si], pick))) {
        k->slots[si].req = NULL;
        break;
      }
    }
    if (rc) break;
    int running = 0;
    bool freed = false;
    CURLMcode mc = c->multi_perform(k->multi, &running);
    if (mc != CURLM_OK) {
      rc = dlpx__fail(DLPX_EIO, "%s: %s", k->t->label, c->multi_strerror(mc));
      break;
    }
    CURLMsg *msg;
    int left;
    while (!rc && (msg = c->multi_info_read(k->multi, &left))) {
      if (msg->msg != CURLMSG_DONE) continue;
      slot *s = NULL;
      c->easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
      CURLcode cc = msg->data.result;
      c->multi_remove_handle(k->multi, msg->easy_handle);
      dlpx__req *r = s->req;
      s->req = NULL;
      freed = true;
      size_t idx = (size_t)(r - reqs);
      int retry_code = 0;
      int v = judge(k, s, r, cc, &retry_code);
      if (v == 0) {
        state[idx] = FINISHED;
        finished++;
      } else if (v == 1) {
        if (r->attempts >= k->t->retries) {
          rc = retry_code;
          if (k->t->retries) {
            char msg2[DLPX__MSG_MAX];
            snprintf(msg2, sizeof msg2, "%s", dlpx_last_error());
            rc = dlpx__fail(retry_code, "%s (after %d retries)", msg2, k->t->retries);
          }
        } else {
          r->retry_at = now_ns() + backoff(k, r->attempts);
          r->attempts++;
          if (strcmp(r->method, "PUT") == 0) k->moved -= r->up_sent;
          r->up_sent = 0;
          state[idx] = WAITING;
          waiting++;
        }
      } else {
        rc = v;
      }
    }
    if (rc) break;
    if (progress && progress(ctx, k->moved - moved0, total)) {
      rc = dlpx__fail(DLPX_ESTATE, "%s: cancelled", k->t->label);
      break;
    }
    if (!more && finished == claimed) break;
    /* a slot came free and work waits: start it now, not after a poll
     * (which, with nothing running, would sleep its whole timeout) */
    if (freed && more) continue;
    int ms = 100;
    if (!running && wake >= 0) {
      int64_t d = (wake - now_ns()) / 1000000;
      ms = d < 0 ? 0 : d > 100 ? 100 : (int)d;
    }
    c->multi_poll(k->multi, NULL, 0, ms, NULL);
  }
  if (rc && q && !*stopped) /* the first failure stops the other threads */
    atomic_store_explicit(&q->failed, 1, memory_order_relaxed);
  /* stop whatever still runs */
  for (uint32_t si = 0; si < k->nslots; si++)
    if (k->slots[si].req) {
      c->multi_remove_handle(k->multi, k->slots[si].easy);
      k->slots[si].req = NULL;
    }
  free(state);
  return rc;
}

int dlpx__xfer_run(dlpx__conn *k, dlpx__req *reqs, size_t n, dlpx_progress_fn progress,
                   void *ctx, uint64_t total) {
  return run(k, reqs, n, progress, ctx, total, NULL, NULL);
}

int dlpx__xfer_run_shared(dlpx__conn *k, dlpx__req *reqs, size_t n, dlpx__xfer_share *q,
                          bool *stopped) {
  *stopped = false;
  return run(k, reqs, n, NULL, NULL, 0, q, stopped);
}
