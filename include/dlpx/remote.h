/*
 * dlpx/remote.h - tensor files and objects over HTTP(S) and S3.
 *
 * URLs: "http://host[:port]/path", "https://..." and "s3://bucket/key".
 * libdlpx opens libcurl (libcurl.so.4) with dlopen on first use, so the
 * library has no link-time dependency on it; where it is missing every
 * call here fails with DLPX_ENOTSUP saying so.  TLS, redirects and the AWS
 * Signature Version 4 of S3 requests are libcurl's (CURLOPT_AWS_SIGV4).
 *
 * Reads are ranged GETs run concurrently on one thread (curl's multi
 * interface, keep-alive connections), written straight into the
 * destination memory: nothing holds a whole-file buffer.  Each range
 * response must be a 206 whose Content-Range is exactly the range asked
 * for and whose ETag is the one seen at open; a server that ignores Range
 * (a 200 with the whole object) is detected and its body streamed once,
 * each byte to its place.  Failed requests (5xx, 408, 429, resets, stalls)
 * are retried from the first byte not yet received, with exponential
 * backoff and jitter.
 *
 * S3 addressing: the endpoint is, in order, the options' |endpoint|,
 * $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, else
 * https://s3.<region>.amazonaws.com.  Path-style ("<endpoint>/<bucket>/
 * <key>") is used with an endpoint override (MinIO, R2, test servers),
 * virtual-hosted style ("<bucket>.s3.<region>.amazonaws.com") otherwise,
 * unless |path_style| says.  The region is the options', then $AWS_REGION,
 * $AWS_DEFAULT_REGION, else "us-east-1".  Credentials: the options', then
 * $AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY / $AWS_SESSION_TOKEN, then
 * the profile (options, $AWS_PROFILE, else "default") of the shared
 * credentials file ($AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials);
 * without any, requests go unsigned (public buckets).
 *
 * Errors of every function here: DLPX_EINVAL (bad URL or options),
 * DLPX_ENOENT (404: no such object or bucket), DLPX_EACCES (401/403,
 * wrong credentials), DLPX_ETIMEDOUT (no progress within the timeout,
 * after the retries), DLPX_EIO (other HTTP statuses, network errors, a
 * server answering with the wrong range, an object that changed while it
 * was read), DLPX_ENOTSUP (libcurl missing), DLPX_ENOMEM.
 */
#ifndef DLPX_REMOTE_H
#define DLPX_REMOTE_H

#include <dlpx/files.h>

DLPX_BEGIN_DECLS

/* Checksum headers that uploads send (only when asked: S3-compatible
 * servers that do not know them may reject them). */
#define DLPX_REMOTE_CHECKSUM_NONE 0u
#define DLPX_REMOTE_CHECKSUM_CRC32 1u /* x-amz-checksum-crc32 on every part */

/* How to reach a URL.  Set |size| to sizeof(dlpx_remote_options) and the
 * rest with dlpx_remote_options_init, then change what you need; NULL
 * strings and zero numbers mean the defaults.  The strings are borrowed
 * for the call that takes the options (a dlpx_file copies what it keeps). */
typedef struct {
  size_t size;
  const char *bearer_token;      /* http(s): "Authorization: Bearer <token>" */
  const char *region;            /* s3 */
  const char *endpoint;          /* s3: "http://127.0.0.1:9000" */
  int32_t path_style;            /* s3: -1 automatic, 0 virtual-hosted, 1 path-style */
  const char *access_key_id;     /* s3: all three from one source */
  const char *secret_access_key;
  const char *session_token;
  const char *profile;           /* s3: of the shared credentials file */
  uint64_t part_size;            /* bytes per ranged request or uploaded part; 0: 8 MiB */
  uint32_t concurrency;          /* requests in flight; 0: 8 */
  int32_t retries;               /* retries of one request; -1: 5 */
  double timeout;                /* seconds without progress before a request fails
                                  * (and the connect limit); 0: 30 */
  const char *ca_file;           /* https: a CA bundle (PEM); NULL: the system's */
  int32_t verify_tls;            /* 1 (default): verify peer and host; 0: do not */
  uint32_t checksum;             /* uploads: DLPX_REMOTE_CHECKSUM_* */
  uint32_t threads;              /* reads: threads receiving one read's requests (at most
                                  * 16, each with connections of its own); 0: one per
                                  * CPU up to 4, one for reads under 64 MiB */
} dlpx_remote_options;

/* Fills |opts| with the defaults (|size| included). */
DLPX_API void dlpx_remote_options_init(dlpx_remote_options *opts);

/* 1 when |s| starts with "http://", "https://" or "s3://" (any case),
 * else 0. */
DLPX_API int dlpx_is_url(const char *s);

/* 1 when libcurl could be loaded (loading it now if need be), else 0
 * with the reason in dlpx_last_error(). */
DLPX_API int dlpx_remote_available(void);

/* Opens the safetensors file at |url| (|opts| may be NULL for the
 * defaults): one request for the first 64 KiB (a second one when the
 * header is longer), the header validated as dlpx_file_open does.  The
 * file is then read with dlpx_file_read / read_range / read_into /
 * read_many / read_slice, all ranged GETs (read_many runs them
 * concurrently); dlpx_file_map fails with DLPX_ENOTSUP.  |flags| must be
 * 0.  On success the caller owns *out (dlpx_file_close). */
DLPX_API int dlpx_file_open_url(const char *url, const dlpx_remote_options *opts, uint32_t flags,
                                dlpx_file **out);

/* 1 when |file| was opened from a URL (it cannot be mapped), else 0. */
DLPX_API int dlpx_file_is_remote(const dlpx_file *file);

/* As dlpx_save_file (same arguments, flags and checks), to an "s3://"
 * URL: an S3 multipart upload of parts of |opts->part_size| (at least
 * 5 MiB) sent concurrently, completed only when every part is in: the
 * object appears whole or not at all, and a failed upload is aborted (no
 * parts left behind).  An image of one part is a single PUT.  http(s) URLs
 * get one PUT.  Borrowed arguments. */
DLPX_API int dlpx_save_url(const char *url, const dlpx_remote_options *opts, size_t n,
                           const char *const *names, const dlpx_tensor *const *tensors,
                           size_t nmeta, const char *const *keys, const char *const *values,
                           uint32_t flags);

/* Progress of a copy: called on the calling thread with the bytes done so
 * far and the total; a nonzero return cancels the copy (DLPX_ESTATE). */
typedef int (*dlpx_progress_fn)(void *ctx, uint64_t done, uint64_t total);

/* The byte size of the object at |url| (a HEAD request) in *size. */
DLPX_API int dlpx_remote_stat(const char *url, const dlpx_remote_options *opts, uint64_t *size);

/* Copies the object at |url| to the local file |path| (created or
 * truncated; written under a temporary name and renamed into place, so
 * |path| is whole or untouched), by concurrent ranged GETs.  |progress|
 * may be NULL. */
DLPX_API int dlpx_remote_get(const char *url, const dlpx_remote_options *opts, const char *path,
                             dlpx_progress_fn progress, void *ctx);

/* Copies the local file |path| to |url|: for s3:// a multipart upload as
 * in dlpx_save_url, for http(s) one PUT.  |progress| may be NULL. */
DLPX_API int dlpx_remote_put(const char *path, const char *url, const dlpx_remote_options *opts,
                             dlpx_progress_fn progress, void *ctx);

/* Lists the objects under the "s3://bucket/prefix" |url|
 * (ListObjectsV2, every page): |fn| gets each key (borrowed, for the call)
 * and size; a nonzero return stops the listing (and is returned). */
typedef int (*dlpx_list_fn)(void *ctx, const char *key, uint64_t size);
DLPX_API int dlpx_remote_list(const char *url, const dlpx_remote_options *opts, dlpx_list_fn fn,
                              void *ctx);

/* Deletes the object at |url| (DELETE; an absent object is not an
 * error, as in S3). */
DLPX_API int dlpx_remote_delete(const char *url, const dlpx_remote_options *opts);

DLPX_END_DECLS

#endif /* DLPX_REMOTE_H */
