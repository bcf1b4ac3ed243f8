/* target.c - where a URL's requests go and how they are signed: http(s)
 * URLs as given, s3:// URLs resolved to an endpoint (path-style or
 * virtual-hosted) with the region and credentials of the options, the
 * environment or the shared credentials file. */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "net.h"

#define DEFAULT_PART ((uint64_t)8 << 20)
#define DEFAULT_CONCURRENCY 8u
#define DEFAULT_RETRIES 5
#define DEFAULT_TIMEOUT 30.0
#define MAX_CONCURRENCY 256u
#define URL_MAX 8192

void dlpx_remote_options_init(dlpx_remote_options *o) {
  if (!o) return;
  memset(o, 0, sizeof *o);
  o->size = sizeof *o;
  o->path_style = -1;
  o->retries = -1;
  o->verify_tls = 1;
}

int dlpx_is_url(const char *s) {
  if (!s) return 0;
  return strncasecmp(s, "http://", 7) == 0 || strncasecmp(s, "https://", 8) == 0 ||
         strncasecmp(s, "s3://", 5) == 0;
}

bool dlpx__uri_encode(char *buf, size_t cap, size_t *len, const char *s, bool keep_slash) {
  static const char hex[] = "0123456789ABCDEF";
  size_t n = *len;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    unsigned char c = *p;
    if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      if (n + 1 >= cap) return false;
      buf[n++] = (char)c;
    } else {
      if (n + 3 >= cap) return false;
      buf[n++] = '%';
      buf[n++] = hex[c >> 4];
      buf[n++] = hex[c & 15];
    }
  }
  buf[n] = '\0';
  *len = n;
  return true;
}

static const char *env(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

static char *dup_or_null(const char *s, bool *oom) {
  if (!s) return NULL;
  char *d = strdup(s);
  if (!d) *oom = true;
  return d;
}

void dlpx__target_free(dlpx__target *t) {
  if (!t) return;
  free(t->url);
  free(t->label);
  free(t->sigv4);
  if (t->userpwd) {
    memset(t->userpwd, 0, strlen(t->userpwd));
    free(t->userpwd);
  }
  free(t->token_hdr);
  free(t->bearer);
  free(t->ca_file);
  free(t->bucket_url);
  free(t->key);
  free(t);
}

/* An endpoint "scheme://host[:port][/path]" without a trailing slash. */
static int check_endpoint(const char *e) {
  if (strncasecmp(e, "http://", 7) && strncasecmp(e, "https://", 8))
    return dlpx__fail(DLPX_EINVAL, "S3 endpoint \"%.200s\" must start with http:// or https://",
                      e);
  return 0;
}

static int resolve_s3(dlpx__target *t, const char *url, const dlpx_remote_options *o) {
  const char *rest = url + 5;
  const char *slash = strchr(rest, '/');
  size_t blen = slash ? (size_t)(slash - rest) : strlen(rest);
  if (blen == 0 || blen > 255)
    return dlpx__fail(DLPX_EINVAL, "%s: no bucket name (s3://bucket/key)", url);
  char bucket[256];
  memcpy(bucket, rest, blen);
  bucket[blen] = '\0';
  for (size_t i = 0; i < blen; i++) {
    unsigned char c = (unsigned char)bucket[i];
    if (!(isalnum(c) || c == '-' || c == '.' || c == '_'))
      return dlpx__fail(DLPX_EINVAL, "%s: bad character in the bucket name \"%s\"", url, bucket);
  }
  const char *key = slash ? slash + 1 : "";
  t->key = strdup(key);
  if (!t->key) return dlpx__fail(DLPX_ENOMEM, "no memory");
  const char *region = o->region && *o->region ? o->region : env("AWS_REGION");
  if (!region) region = env("AWS_DEFAULT_REGION");
  if (!region) region = "us-east-1";
  for (const char *p = region; *p; p++)
    if (!(isalnum((unsigned char)*p) || *p == '-'))
      return dlpx__fail(DLPX_EINVAL, "bad S3 region \"%.100s\"", region);
  const char *endpoint = o->endpoint && *o->endpoint ? o->endpoint : env("AWS_ENDPOINT_URL_S3");
  if (!endpoint) endpoint = env("AWS_ENDPOINT_URL");
  int rc;
  if (endpoint && (rc = check_endpoint(endpoint))) return rc;
  bool path_style = o->path_style >= 0 ? o->path_style != 0 : endpoint != NULL;
  if (!path_style && strchr(bucket, '.') && !endpoint) path_style = true; /* TLS names */
  char base[URL_MAX];
  size_t el = endpoint ? strlen(endpoint) : 0;
  while (el && endpoint[el - 1] == '/') el--;
  if (endpoint && path_style) {
    snprintf(base, sizeof base, "%.*s/%s", (int)el, endpoint, bucket);
  } else if (endpoint) { /* virtual-hosted at a custom endpoint: bucket.host */
    const char *host = strstr(endpoint, "://") + 3;
    snprintf(base, sizeof base, "%.*s%s.%.*s", (int)(host - endpoint), endpoint, bucket,
             (int)(el - (size_t)(host - endpoint)), host);
  } else if (path_style) {
    snprintf(base, sizeof base, "https://s3.%s.amazonaws.com/%s", region, bucket);
  } else {
    snprintf(base, sizeof base, "https://%s.s3.%s.amazonaws.com", bucket, region);
  }
  t->bucket_url = strdup(base);
  char full[URL_MAX];
  size_t n = (size_t)snprintf(full, sizeof full, "%s/", base);
  if (n >= sizeof full || !dlpx__uri_encode(full, sizeof full, &n, key, true))
    return dlpx__fail(DLPX_EINVAL, "%s: URL too long", url);
  t->url = strdup(full);
  if (!t->url || !t->bucket_url) return dlpx__fail(DLPX_ENOMEM, "no memory");

  /* Credentials: all three from the first source that has a key id. */
  bool oom = false;
  char *id = NULL, *secret = NULL, *token = NULL;
  if (o->access_key_id && *o->access_key_id) {
    id = dup_or_null(o->access_key_id, &oom);
    secret = dup_or_null(o->secret_access_key, &oom);
    token = dup_or_null(o->session_token, &oom);
  } else if (env("AWS_ACCESS_KEY_ID")) {
    id = dup_or_null(env("AWS_ACCESS_KEY_ID"), &oom);
    secret = dup_or_null(env("AWS_SECRET_ACCESS_KEY"), &oom);
    token = dup_or_null(env("AWS_SESSION_TOKEN"), &oom);
  } else {
    const char *profile = o->profile && *o->profile ? o->profile : env("AWS_PROFILE");
    rc = dlpx__read_credentials(profile ? profile : "default", &id, &secret, &token);
    if (rc) oom = true;
  }
  rc = 0;
  if (oom) {
    rc = dlpx__fail(DLPX_ENOMEM, "no memory for credentials");
  } else if (id && !secret) {
    rc = dlpx__fail(DLPX_EINVAL, "%s: an access key id without a secret access key", url);
  } else if (id) {
    size_t need = strlen(id) + strlen(secret) + 2;
    t->userpwd = malloc(need);
    char sig[160];
    snprintf(sig, sizeof sig, "aws:amz:%s:s3", region);
    t->sigv4 = strdup(sig);
    if (!t->userpwd || !t->sigv4) {
      rc = dlpx__fail(DLPX_ENOMEM, "no memory");
    } else {
      snprintf(t->userpwd, need, "%s:%s", id, secret);
      if (token && *token) {
        size_t tl = strlen(token) + 32;
        t->token_hdr = malloc(tl);
        if (!t->token_hdr) rc = dlpx__fail(DLPX_ENOMEM, "no memory");
        else snprintf(t->token_hdr, tl, "x-amz-security-token: %s", token);
      }
    }
  }
  if (secret) memset(secret, 0, strlen(secret));
  free(id);
  free(secret);
  free(token);
  return rc;
}

int dlpx__target_new(const char *url, const dlpx_remote_options *opts, dlpx__target **out) {
  *out = NULL;
  if (!url) return dlpx__fail(DLPX_EINVAL, "NULL URL");
  dlpx_remote_options defaults;
  dlpx_remote_options_init(&defaults);
  const dlpx_remote_options *o = opts ? opts : &defaults;
  if (opts && opts->size != sizeof *opts)
    return dlpx__fail(DLPX_EINVAL, "dlpx_remote_options.size is %zu, this libdlpx expects %zu",
                      opts->size, sizeof *opts);
  if (o->timeout < 0 || o->timeout != o->timeout)
    return dlpx__fail(DLPX_EINVAL, "timeout must be positive (or 0 for the default)");
  if (o->retries < -1) return dlpx__fail(DLPX_EINVAL, "retries must be >= 0 (or -1)");
  if (o->checksum > DLPX_REMOTE_CHECKSUM_CRC32)
    return dlpx__fail(DLPX_EINVAL, "unknown checksum %u", o->checksum);
  if (o->concurrency > MAX_CONCURRENCY)
    return dlpx__fail(DLPX_EINVAL, "concurrency %u is more than %u", o->concurrency,
                      MAX_CONCURRENCY);
  if (o->threads > DLPX__REMOTE_THREADS_MAX)
    return dlpx__fail(DLPX_EINVAL, "threads %u is more than %u", o->threads,
                      DLPX__REMOTE_THREADS_MAX);
  if (strlen(url) >= URL_MAX / 2) return dlpx__fail(DLPX_EINVAL, "URL too long");
  /* s3:// keys are encoded here, so they may hold spaces; http(s) URLs
   * arrive encoded. */
  bool s3 = strncasecmp(url, "s3://", 5) == 0;
  for (const unsigned char *p = (const unsigned char *)url; *p; p++)
    if (*p < ' ' || *p == 0x7f || (*p == ' ' && !s3))
      return dlpx__fail(DLPX_EINVAL, "URL \"%.200s\" holds a %s", url,
                        *p == ' ' ? "space (encode it as %20)" : "control character");
  if (!dlpx_is_url(url))
    return dlpx__fail(DLPX_EINVAL, "\"%.200s\" is not an http://, https:// or s3:// URL", url);
  dlpx__target *t = calloc(1, sizeof *t);
  if (!t) return dlpx__fail(DLPX_ENOMEM, "no memory");
  bool oom = false;
  t->label = dup_or_null(url, &oom);
  t->part_size = o->part_size ? o->part_size : DEFAULT_PART;
  t->concurrency = o->concurrency ? o->concurrency : DEFAULT_CONCURRENCY;
  t->threads = o->threads;
  t->retries = o->retries >= 0 ? o->retries : DEFAULT_RETRIES;
  t->timeout = o->timeout > 0 ? o->timeout : DEFAULT_TIMEOUT;
  t->checksum = o->checksum;
  t->verify_tls = o->verify_tls != 0;
  t->ca_file = dup_or_null(o->ca_file && *o->ca_file ? o->ca_file : env("AWS_CA_BUNDLE"), &oom);
  int rc = 0;
  if (strncasecmp(url, "s3://", 5) == 0) {
    t->s3 = true;
    rc = resolve_s3(t, url, o);
  } else {
    t->url = dup_or_null(url, &oom);
    t->bearer = dup_or_null(o->bearer_token && *o->bearer_token ? o->bearer_token : NULL, &oom);
  }
  if (!rc && oom) rc = dlpx__fail(DLPX_ENOMEM, "no memory");
  if (rc) {
    dlpx__target_free(t);
    return rc;
  }
  *out = t;
  return 0;
}
