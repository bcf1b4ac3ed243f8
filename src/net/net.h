/*
 * net.h - what the files of src/net/ share: libcurl opened at run time
 * (curl.c), where a URL leads and how its requests are signed
 * (target.c), and the engine that runs requests concurrently with
 * retries (xfer.c).  remote.c builds the public API of dlpx/remote.h on
 * them; src/io/file.c reads remote files through dlpx__remote_read.
 */
#ifndef DLPX_NET_NET_H
#define DLPX_NET_NET_H

/* Types and constants only: libdlpx does not link libcurl. */
#include <curl/curl.h>
#include <pthread.h>

#include <dlpx/remote.h>

#include "../internal.h"
#include "../io/io.h"

/* ---- curl.c: the functions of libcurl that dlpx calls ------------------- */

typedef struct {
  CURL *(*easy_init)(void);
  CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
  CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
  void (*easy_reset)(CURL *);
  void (*easy_cleanup)(CURL *);
  const char *(*easy_strerror)(CURLcode);
  CURLM *(*multi_init)(void);
  CURLMcode (*multi_setopt)(CURLM *, CURLMoption, ...);
  CURLMcode (*multi_add_handle)(CURLM *, CURL *);
  CURLMcode (*multi_remove_handle)(CURLM *, CURL *);
  CURLMcode (*multi_perform)(CURLM *, int *);
  CURLMcode (*multi_poll)(CURLM *, struct curl_waitfd *, unsigned int, int, int *);
  CURLMsg *(*multi_info_read)(CURLM *, int *);
  CURLMcode (*multi_cleanup)(CURLM *);
  const char *(*multi_strerror)(CURLMcode);
  struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
  void (*slist_free_all)(struct curl_slist *);
  curl_version_info_data *(*version_info)(CURLversion);
} dlpx__curl_api;

/* libcurl, loaded and initialised on first use (thread-safe); NULL with
 * DLPX_ENOTSUP set when it cannot be (missing, or older than 7.75, the
 * first with AWS SigV4).  $DLPX_LIBCURL names another library file. */
const dlpx__curl_api *dlpx__curl(void);

/* ---- target.c: where requests go ------------------------------------------- */

typedef struct {
  char *url;         /* the object's http(s) URL, encoded */
  char *label;       /* the URL as the user wrote it, for messages */
  bool s3;
  char *sigv4;       /* "aws:amz:<region>:s3", NULL when unsigned */
  char *userpwd;     /* "<key id>:<secret>" */
  char *token_hdr;   /* "x-amz-security-token: ..." or NULL */
  char *bearer;      /* http(s) bearer token, or NULL */
  char *ca_file;
  bool verify_tls;
  uint64_t part_size;
  uint32_t concurrency;
  uint32_t threads;  /* receiving threads of one read (0: automatic) */
  int32_t retries;
  double timeout;
  uint32_t checksum;
  /* s3: the bucket's URL (for listing) and the key */
  char *bucket_url;
  char *key;
} dlpx__target;

#define DLPX__REMOTE_THREADS_MAX 16u

/* Resolves |url| with |opts| (NULL: defaults) into *out (free with
 * dlpx__target_free). */
int dlpx__target_new(const char *url, const dlpx_remote_options *opts, dlpx__target **out);
void dlpx__target_free(dlpx__target *t);

/* Appends |s| to |buf| (of |cap| bytes at |*len|) URI-encoded in the AWS
 * way: unreserved characters kept, '/' kept when |keep_slash|, the rest
 * %XX.  Returns false when it does not fit. */
bool dlpx__uri_encode(char *buf, size_t cap, size_t *len, const char *s, bool keep_slash);

/* ---- parse.c: what servers and files send ------------------------------------ */

/* "bytes a-b/t" (t 0 for "*"): false unless well formed with a <= b < t. */
bool dlpx__content_range(const char *v, uint64_t *a, uint64_t *b, uint64_t *t);
/* The text of the first <tag>...</tag> of |xml| as a new string (XML's
 * five entities decoded when |decode|), *after (may be NULL) past its end;
 * NULL when there is none (or no memory). */
char *dlpx__xml_text(const char *xml, const char *tag, const char **after, bool decode);
/* The aws_access_key_id, aws_secret_access_key and aws_session_token of
 * [|profile|] in the INI |text|; each found replaces *id, *secret,
 * *token (new strings).  dlpx__read_credentials reads the shared
 * credentials file ($AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials;
 * none is not an error). */
int dlpx__credentials_parse(const char *text, size_t len, const char *profile, char **id,
                            char **secret, char **token);
int dlpx__read_credentials(const char *profile, char **id, char **secret, char **token);

/* ---- xfer.c: requests, run concurrently -------------------------------------- */

/* Where the bytes of a GET go: [off, off + len) of the object into |dst|,
 * fed to |sums| (may be NULL) in order. */
typedef struct {
  uint64_t off, len;
  char *dst;
  dlpx__sumstream *sums;
  const char *what; /* the tensor, for checksum messages (may be NULL) */
} dlpx__sink;

typedef struct dlpx__req dlpx__req;
struct dlpx__req {
  /* set by the caller */
  const char *method;  /* "GET", "HEAD", "PUT", "POST", "DELETE" */
  const char *url;     /* NULL: the target's */
  const char *query;   /* appended after '?' (already encoded and sorted), or NULL */
  /* GET: the range [off, end) with its sinks in order (they cover it);
   * |probe|: the object may be shorter than the range (the open's read) */
  uint64_t off, end;
  dlpx__sink *sinks;
  size_t nsinks;
  bool probe;
  bool ranged;         /* send a Range header (GET) */
  /* PUT: the body, from a file (|up_fd| >= 0) or memory */
  int up_fd;
  uint64_t up_off, up_len;
  const char *body;
  size_t body_len;
  const char *content_md5_or_sum; /* an extra header line, or NULL */
  bool keep_body;      /* collect the response body in |resp| (XML answers) */
  /* results */
  long status;
  char etag[160];
  uint64_t total;      /* the object's size, when the response says it */
  char *resp;          /* collected body (free) */
  size_t resp_len;
  /* the engine's */
  uint64_t cursor;     /* next object byte expected */
  size_t sink;         /* current sink */
  uint64_t skip;       /* bytes of a 200 to skip (server ignored Range) */
  uint64_t up_sent;
  int attempts;
  int64_t retry_at;    /* monotonic ns */
  int64_t last_byte;   /* monotonic ns of the last progress */
  int64_t cr_start;    /* Content-Range of the answer: -1 none, -2 unreadable */
  bool done, stalled, stop_ok, header_checked;
  int fail;            /* a dlpx error found in a callback */
  size_t resp_cap;
  void *easy;
  void *conn;
};

typedef struct dlpx__conn dlpx__conn;

/* A connection pool for one target: a curl multi handle and its easy
 * handles, kept between calls so connections stay alive. */
int dlpx__conn_new(const dlpx__target *t, dlpx__conn **out);
void dlpx__conn_free(dlpx__conn *c);
/* The ETag to require (If-Match) on GETs from now on ("" for none). */
void dlpx__conn_set_etag(dlpx__conn *c, const char *etag);
/* The object's size, checked against every answer from now on. */
void dlpx__conn_set_size(dlpx__conn *c, uint64_t size);
/* Whether the server was seen to ignore Range. */
bool dlpx__conn_no_range(const dlpx__conn *c);

/* Runs |n| requests, at most the target's concurrency at a time, each
 * retried as the target says.  Returns 0 when every request got a 2xx
 * answer; else the first failure (every request stopped).  |progress|
 * (may be NULL) gets the bytes moved so far. */
int dlpx__xfer_run(dlpx__conn *c, dlpx__req *reqs, size_t n, dlpx_progress_fn progress,
                   void *ctx, uint64_t total);

/* Several threads running one list of requests, each on its own
 * connection pool: each claims the next request not yet taken, and the
 * first failure stops the others.  Zero it, set |slots|, and give the
 * same one to every thread. */
typedef struct {
  _Atomic size_t next; /* the next request nobody has claimed */
  _Atomic int failed;  /* set by the first thread whose run failed */
  uint32_t slots;      /* requests in flight per thread (0: the pool's all) */
} dlpx__xfer_share;

/* As dlpx__xfer_run, for one of the threads sharing |q| (no progress).
 * *stopped tells a thread stopped by another's failure (its error then
 * says only that) from the one that failed. */
int dlpx__xfer_run_shared(dlpx__conn *c, dlpx__req *reqs, size_t n, dlpx__xfer_share *q,
                          bool *stopped);

/* ---- remote.c ---------------------------------------------------------------- */

/* The remote half of a dlpx_file (file.c keeps a pointer to it). */
typedef struct dlpx__remote dlpx__remote;
struct dlpx__remote {
  dlpx__target *target;
  dlpx__conn *conn;     /* the open's; also the first of the pool */
  uint64_t size;
  char etag[160];       /* seen at open */
  /* Connections for reads: a call takes one (a new one when none is
   * idle), so reads from several threads run in parallel, never on one
   * connection at once. */
  pthread_mutex_t lock;
  dlpx__conn *idle[16];
  int nidle;
  bool no_range;        /* some connection saw the server ignore Range */
};

#endif /* DLPX_NET_NET_H */
