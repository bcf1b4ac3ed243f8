/* checksum.c - dlpx checksums: XXH3-64 of each chunk of a tensor's bytes,
 * kept in __metadata__ under "dlpx.checksums" as a JSON string
 *   {"algorithm": "xxh3-64", "chunk": 16777216,
 *    "tensors": {"name": "<16 hex digits per chunk>", ...}}
 * (per chunk, so the threads that read a tensor in pieces check each piece
 * as it arrives, while it is still in cache). */
#include "config.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "io.h"
#include "json.h"

#define ALGORITHM "xxh3-64"

static uint64_t base_hash(const void *data, size_t size) {
  return (uint64_t)XXH3_64bits(size ? data : "", size);
}

static void base_update(void *state, const void *data, size_t size) {
  XXH3_64bits_update((XXH3_state_t *)state, data, size);
}

static const dlpx__xxh3_kernels base = {"baseline", base_hash, base_update};

/* Chosen on first use; racing threads choose the same. */
static _Atomic(const dlpx__xxh3_kernels *) chosen;

static const dlpx__xxh3_kernels *kernels(void) {
  const dlpx__xxh3_kernels *k = atomic_load_explicit(&chosen, memory_order_acquire);
  if (!k) {
    k = dlpx__xxh3_avx2();
    if (!k) k = &base;
    atomic_store_explicit(&chosen, k, memory_order_release);
  }
  return k;
}

uint64_t dlpx_xxh3(const void *data, size_t size) { return kernels()->hash(data, size); }

static size_t chunks_of(uint64_t nbytes, uint64_t chunk) {
  return (size_t)((nbytes + chunk - 1) / chunk);
}

int dlpx_st_header_checksums(const dlpx_st_header *h, size_t index, uint64_t *chunk,
                             size_t *count, const uint64_t **hashes) {
  if (!h || index >= h->count || !h->chunk || !h->sums[index].hashes) return 0;
  if (chunk) *chunk = h->chunk;
  if (count) *count = h->sums[index].count;
  if (hashes) *hashes = h->sums[index].hashes;
  return 1;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

static int bad(const char *why, const char *name) {
  return dlpx__fail(DLPX_EFORMAT, "the dlpx checksums of this file are malformed: %s%s%.200s%s",
                    why, name ? " (tensor \"" : "", name ? name : "", name ? "\")" : "");
}

static int parse_sums(dlpx_st_header *h, const dlpx__json *tensors) {
  for (size_t t = 0; t < tensors->len; t++) {
    const char *name = dlpx__json_key(tensors, t);
    const dlpx__json *v = dlpx__json_value(tensors, t);
    size_t index;
    if (dlpx_st_header_find(h, name, &index)) return bad("a checksum for no tensor", name);
    if (!dlpx__json_is(v, DLPX__JSON_STRING)) return bad("not a string", name);
    const dlpx_st_entry *e = &h->entries[index];
    size_t count = chunks_of(e->end - e->begin, h->chunk);
    const char *hex = v->u.string;
    if (v->len != 16 * count) return bad("wrong number of chunk hashes", name);
    uint64_t *hashes = malloc((count ? count : 1) * sizeof *hashes);
    if (!hashes) return dlpx__fail(DLPX_ENOMEM, "cannot allocate checksums");
    for (size_t c = 0; c < count; c++) {
      uint64_t x = 0;
      for (int d = 0; d < 16; d++) {
        int n = hexval(hex[16 * c + (size_t)d]);
        if (n < 0) {
          free(hashes);
          return bad("not lower-case hexadecimal", name);
        }
        x = x << 4 | (uint64_t)n;
      }
      hashes[c] = x;
    }
    h->sums[index].hashes = hashes;
    h->sums[index].count = count;
  }
  return 0;
}

int dlpx__st_parse_checksums(dlpx_st_header *h, const char *value) {
  /* |value| is a C string: what jansson's json_loads read of it */
  dlpx__json_error err;
  dlpx__json_doc *doc = dlpx__json_parse(value, strlen(value), &err);
  if (!doc) {
    if (err.nomem) return dlpx__fail(DLPX_ENOMEM, "cannot allocate checksums");
    return bad("not JSON", NULL);
  }
  int rc;
  const dlpx__json *root = dlpx__json_root(doc), *alg = dlpx__json_get(root, "algorithm"),
                   *chunk = dlpx__json_get(root, "chunk"), *tensors = dlpx__json_get(root, "tensors");
  if (!dlpx__json_is(alg, DLPX__JSON_STRING) || !dlpx__json_is(chunk, DLPX__JSON_INTEGER) ||
      !dlpx__json_is(tensors, DLPX__JSON_OBJECT)) {
    rc = bad("it needs \"algorithm\", \"chunk\" and \"tensors\"", NULL);
  } else if (strcmp(alg->u.string, ALGORITHM) != 0) {
    /* a later algorithm this version does not know: the file loads as any
     * file without checksums does */
    rc = 0;
  } else if (chunk->u.integer < 4096 || chunk->u.integer > (1LL << 40)) {
    rc = bad("a chunk size outside [4096, 2^40]", NULL);
  } else {
    h->chunk = (uint64_t)chunk->u.integer;
    rc = parse_sums(h, tensors);
    if (rc) h->chunk = 0;
  }
  dlpx__json_free(doc);
  return rc;
}

int dlpx__st_encode_checksums(size_t n, const char *const *names, const uint64_t *const *hashes,
                              const size_t *counts, uint64_t chunk, char **out) {
  json_t *root = json_object(), *tensors = json_object();
  int rc = DLPX_ENOMEM;
  char *hex = NULL;
  if (!root || !tensors) goto done;
  if (json_object_set_new(root, "algorithm", json_string(ALGORITHM)) ||
      json_object_set_new(root, "chunk", json_integer((json_int_t)chunk)))
    goto done;
  for (size_t i = 0; i < n; i++) {
    if (!names[i]) continue; /* not stored (an alias) */
    hex = malloc(16 * counts[i] + 1);
    if (!hex) goto done;
    for (size_t c = 0; c < counts[i]; c++)
      snprintf(hex + 16 * c, 17, "%016" PRIx64, hashes[i][c]);
    hex[16 * counts[i]] = '\0';
    if (json_object_set_new(tensors, names[i], json_string(hex))) goto done;
    free(hex);
    hex = NULL;
  }
  if (json_object_set(root, "tensors", tensors)) goto done;
  *out = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
  if (*out) rc = 0;
done:
  free(hex);
  json_decref(tensors);
  json_decref(root);
  return rc ? dlpx__fail(rc, "cannot encode the checksums") : 0;
}

static int mismatch(const dlpx_st_entry *e, uint64_t a, uint64_t b) {
  return dlpx__fail(DLPX_ECHECKSUM,
                    "tensor \"%.200s\": bytes [%" PRIu64 ", %" PRIu64
                    ") do not match their checksum: the file is corrupt",
                    e->name, a, b);
}

int dlpx__st_verify(const dlpx_st_header *h, size_t index, uint64_t begin, uint64_t end,
                    const void *data) {
  const uint64_t *hashes;
  size_t count;
  uint64_t chunk;
  if (!dlpx_st_header_checksums(h, index, &chunk, &count, &hashes)) return 0;
  const dlpx_st_entry *e = &h->entries[index];
  uint64_t size = e->end - e->begin;
  for (uint64_t c = (begin + chunk - 1) / chunk; c < count; c++) {
    uint64_t a = c * chunk, b = a + chunk < size ? a + chunk : size;
    if (b > end) break;
    if (dlpx_xxh3((const char *)data + (a - begin), (size_t)(b - a)) != hashes[c])
      return mismatch(e, a, b);
  }
  return 0;
}

/* ---- streaming ---------------------------------------------------------------- */

struct dlpx__sumstream {
  XXH3_state_t state;
  const dlpx_st_header *h;
  size_t index;
  uint64_t pos;  /* tensor byte the next feed starts at */
  bool active;   /* the current chunk was fed from its start */
};

int dlpx__sumstream_new(const dlpx_st_header *h, size_t index, uint64_t begin,
                        dlpx__sumstream **out) {
  *out = NULL;
  if (!dlpx_st_header_checksums(h, index, NULL, NULL, NULL)) return 0;
  void *p = NULL;
  if (posix_memalign(&p, 64, sizeof(dlpx__sumstream)))
    return dlpx__fail(DLPX_ENOMEM, "cannot allocate a checksum state");
  dlpx__sumstream *s = p;
  s->h = h;
  s->index = index;
  s->pos = begin;
  s->active = begin % h->chunk == 0;
  if (s->active) XXH3_64bits_reset(&s->state);
  *out = s;
  return 0;
}

void dlpx__sumstream_free(dlpx__sumstream *s) { free(s); }

int dlpx__sumstream_feed(dlpx__sumstream *s, const void *data, size_t len) {
  const dlpx_st_entry *e = &s->h->entries[s->index];
  uint64_t chunk = s->h->chunk, size = e->end - e->begin;
  const char *p = data;
  while (len) {
    uint64_t c = s->pos / chunk, cend = (c + 1) * chunk < size ? (c + 1) * chunk : size;
    size_t take = (size_t)(cend - s->pos) < len ? (size_t)(cend - s->pos) : len;
    if (s->active) kernels()->update(&s->state, p, take);
    s->pos += take;
    p += take;
    len -= take;
    if (s->pos == cend) {
      if (s->active && (uint64_t)XXH3_64bits_digest(&s->state) != s->h->sums[s->index].hashes[c])
        return mismatch(e, c * chunk, cend);
      s->active = true;
      XXH3_64bits_reset(&s->state);
    }
  }
  return 0;
}

/* ---- computing, for saving ------------------------------------------------------ */

struct dlpx__hasher {
  XXH3_state_t state;
  uint64_t chunk, size, pos;
  uint64_t *hashes;
};

int dlpx__hasher_new(uint64_t chunk, uint64_t size, uint64_t *hashes, dlpx__hasher **out) {
  void *p = NULL;
  if (posix_memalign(&p, 64, sizeof(dlpx__hasher)))
    return dlpx__fail(DLPX_ENOMEM, "cannot allocate a checksum state");
  dlpx__hasher *s = p;
  s->chunk = chunk;
  s->size = size;
  s->pos = 0;
  s->hashes = hashes;
  XXH3_64bits_reset(&s->state);
  *out = s;
  return 0;
}

void dlpx__hasher_feed(dlpx__hasher *s, const void *data, size_t len) {
  const char *p = data;
  while (len) {
    uint64_t c = s->pos / s->chunk;
    uint64_t cend = (c + 1) * s->chunk < s->size ? (c + 1) * s->chunk : s->size;
    size_t take = (size_t)(cend - s->pos) < len ? (size_t)(cend - s->pos) : len;
    kernels()->update(&s->state, p, take);
    s->pos += take;
    p += take;
    len -= take;
    if (s->pos == cend) {
      s->hashes[c] = (uint64_t)XXH3_64bits_digest(&s->state);
      XXH3_64bits_reset(&s->state);
    }
  }
}

void dlpx__hasher_free(dlpx__hasher *s) { free(s); }
