/* header.c - the safetensors header: JSON parsed by json.c (jansson's
 * language, ~10x faster: this runs on every open and every attach), every
 * rule of the format checked before anything is handed out. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "json.h"

void dlpx_st_header_free(dlpx_st_header *h) {
  if (!h) return;
  if (h->sums)
    for (size_t i = 0; i < h->count; i++) free(h->sums[i].hashes);
  for (size_t i = 0; i < 2 * h->nmeta; i++) free(h->meta[i]);
  free(h->meta);
  free(h->sums);
  free(h->by_name);
  free(h->entries);
  free(h->arena);
  free(h->table_block);
  free(h);
}

size_t dlpx_st_header_count(const dlpx_st_header *h) { return h->count; }

const dlpx_st_entry *dlpx_st_header_entry(const dlpx_st_header *h, size_t index) {
  return index < h->count ? &h->entries[index] : NULL;
}

size_t dlpx_st_header_metadata_count(const dlpx_st_header *h) { return h->nmeta; }

int dlpx_st_header_metadata(const dlpx_st_header *h, size_t index, const char **key,
                            const char **value) {
  if (index >= h->nmeta) return dlpx__fail(DLPX_EINDEX, "metadata index %zu out of range", index);
  if (key) *key = h->meta[2 * index];
  if (value) *value = h->meta[2 * index + 1];
  return 0;
}

int dlpx_st_header_has_metadata(const dlpx_st_header *h) { return h && h->has_meta ? 1 : 0; }

int dlpx_st_header_find(const dlpx_st_header *h, const char *name, size_t *index) {
  if (!h || !name) return DLPX_EINVAL;
  size_t lo = 0, hi = h->count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(h->by_name[mid]->name, name);
    if (c == 0) {
      if (index) *index = (size_t)(h->by_name[mid] - h->entries);
      return 0;
    }
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return DLPX_EINDEX;
}

/* ---- parsing --------------------------------------------------------------- */

/* A non-negative JSON integer. */
static int get_u64(const dlpx__json *v, uint64_t *out) {
  if (!dlpx__json_is(v, DLPX__JSON_INTEGER)) return -1;
  long long i = v->u.integer;
  if (i < 0) return -1;
  *out = (uint64_t)i;
  return 0;
}

static int by_offset(const void *a, const void *b) {
  const dlpx_st_entry *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return strcmp(x->name, y->name); /* empty tensors at one offset: a fixed order */
}

static int by_name(const void *a, const void *b) {
  return strcmp((*(const dlpx_st_entry *const *)a)->name, (*(const dlpx_st_entry *const *)b)->name);
}

static int parse_entry(const char *name, const dlpx__json *v, dlpx_st_entry *e, int64_t *dims) {
  if (!dlpx__json_is(v, DLPX__JSON_OBJECT))
    return dlpx__fail(DLPX_EFORMAT, "the entry of tensor \"%.200s\" is not a JSON object", name);
  const dlpx__json *dt = dlpx__json_get(v, "dtype"), *shape = dlpx__json_get(v, "shape"),
                   *off = dlpx__json_get(v, "data_offsets");
  if (!dlpx__json_is(dt, DLPX__JSON_STRING) || !dlpx__json_is(shape, DLPX__JSON_ARRAY) ||
      !dlpx__json_is(off, DLPX__JSON_ARRAY))
    return dlpx__fail(DLPX_EFORMAT,
                      "tensor \"%.200s\" needs \"dtype\" (a string), \"shape\" and "
                      "\"data_offsets\" (arrays)",
                      name);
  if (dlpx_st_dtype_parse(dt->u.string, &e->dtype))
    return dlpx__fail(DLPX_EDTYPE, "tensor \"%.200s\" has an unknown dtype \"%.40s\"", name,
                      dt->u.string);
  size_t ndim = shape->len;
  if (ndim > DLPX_MAX_NDIM)
    return dlpx__fail(DLPX_EFORMAT, "tensor \"%.200s\" has %zu dimensions (dlpx takes %d)", name,
                      ndim, DLPX_MAX_NDIM);
  for (size_t d = 0; d < ndim; d++) {
    uint64_t x;
    if (get_u64(&shape->u.items[d], &x) || x > (uint64_t)INT64_MAX)
      return dlpx__fail(DLPX_EFORMAT,
                        "shape[%zu] of tensor \"%.200s\" is not a non-negative integer", d, name);
    dims[d] = (int64_t)x;
  }
  if (off->len != 2 || get_u64(&off->u.items[0], &e->begin) ||
      get_u64(&off->u.items[1], &e->end))
    return dlpx__fail(DLPX_EFORMAT,
                      "data_offsets of tensor \"%.200s\" are not two non-negative integers", name);
  if (e->begin > e->end)
    return dlpx__fail(DLPX_EFORMAT, "data_offsets of tensor \"%.200s\" are out of order: [%llu, %llu)",
                      name, (unsigned long long)e->begin, (unsigned long long)e->end);
  e->ndim = (int32_t)ndim;
  e->shape = dims;
  uint64_t nbytes;
  int rc = dlpx__st_nbytes(name, e->dtype, e->ndim, dims, &nbytes);
  if (rc) return rc;
  if (e->end - e->begin != nbytes)
    return dlpx__fail(DLPX_EFORMAT,
                      "tensor \"%.200s\" takes %llu bytes in data_offsets but its shape and dtype "
                      "need %llu",
                      name, (unsigned long long)(e->end - e->begin), (unsigned long long)nbytes);
  return 0;
}

static int parse_metadata(dlpx_st_header *h, const dlpx__json *m) {
  if (dlpx__json_is(m, DLPX__JSON_NULL)) return 0;
  if (!dlpx__json_is(m, DLPX__JSON_OBJECT))
    return dlpx__fail(DLPX_EFORMAT, "__metadata__ is not a JSON object of strings");
  h->has_meta = true;
  size_t n = m->len;
  h->meta = calloc(2 * n + 1, sizeof(char *));
  if (!h->meta) return dlpx__fail(DLPX_ENOMEM, "cannot allocate the metadata");
  for (size_t i = 0; i < n; i++) {
    const char *key = dlpx__json_key(m, i);
    const dlpx__json *value = dlpx__json_value(m, i);
    if (!dlpx__json_is(value, DLPX__JSON_STRING))
      return dlpx__fail(DLPX_EFORMAT, "__metadata__ value of \"%.200s\" is not a string", key);
    if (strlen(value->u.string) != value->len) /* kept: the parser refuses \u0000 already */
      return dlpx__fail(DLPX_EFORMAT, "__metadata__ value of \"%.200s\" holds a NUL byte", key);
    char *k = strdup(key), *v = strdup(value->u.string);
    h->meta[2 * h->nmeta] = k;
    h->meta[2 * h->nmeta + 1] = v;
    h->nmeta++;
    if (!k || !v) return dlpx__fail(DLPX_ENOMEM, "cannot allocate the metadata");
  }
  return 0;
}

/* The entries again as flat arrays in data order (dlpx_st_header_table),
 * in one block. */
static int make_table(dlpx_st_header *h) {
  size_t n = h->count, names_len = 0, ndims = 0;
  for (size_t i = 0; i < n; i++) {
    names_len += strlen(h->entries[i].name) + 1;
    ndims += (size_t)h->entries[i].ndim;
  }
  size_t bytes = n * (2 * sizeof(uint64_t) + sizeof(uint32_t) + sizeof(int32_t)) +
                 ndims * sizeof(int64_t) + names_len + 1;
  char *block = malloc(bytes);
  if (!block) return dlpx__fail(DLPX_ENOMEM, "cannot allocate a header of %zu tensors", n);
  uint64_t *begins = (uint64_t *)block, *ends = begins + n;
  int64_t *shapes = (int64_t *)(ends + n);
  uint32_t *dtypes = (uint32_t *)(shapes + ndims);
  int32_t *nd = (int32_t *)(dtypes + n);
  char *names = (char *)(nd + n);
  h->table = (dlpx_st_table){n, names, names_len, dtypes, nd, shapes, begins, ends};
  for (size_t i = 0; i < n; i++) {
    const dlpx_st_entry *e = &h->entries[i];
    size_t k = strlen(e->name) + 1;
    memcpy(names, e->name, k);
    names += k;
    dtypes[i] = (uint32_t)e->dtype.code | (uint32_t)e->dtype.bits << 8 |
                (uint32_t)e->dtype.lanes << 16;
    nd[i] = e->ndim;
    memcpy(shapes, e->shape, sizeof(int64_t) * (size_t)e->ndim);
    shapes += e->ndim;
    begins[i] = e->begin;
    ends[i] = e->end;
  }
  *names = '\0';
  h->table_block = block;
  return 0;
}

const dlpx_st_table *dlpx_st_header_table(const dlpx_st_header *h) {
  return h ? &h->table : NULL;
}

static int parse(dlpx_st_header *h, const dlpx__json *root, uint64_t data_len) {
  size_t nkeys = root->len;
  const dlpx__json *meta = dlpx__json_get(root, "__metadata__");
  size_t count = nkeys - (meta ? 1 : 0);
  /* one arena for the names and the shapes */
  size_t names_len = 0, ndims = 0;
  for (size_t i = 0; i < nkeys; i++) {
    const char *key = dlpx__json_key(root, i);
    if (strcmp(key, "__metadata__") == 0) continue;
    names_len += root->u.items[2 * i].len + 1;
    const dlpx__json *shape = dlpx__json_get(dlpx__json_value(root, i), "shape");
    size_t nd = dlpx__json_is(shape, DLPX__JSON_ARRAY) ? shape->len : 0;
    ndims += nd > DLPX_MAX_NDIM ? 0 : nd;
  }
  h->entries = calloc(count + 1, sizeof *h->entries);
  h->by_name = calloc(count + 1, sizeof *h->by_name);
  h->sums = calloc(count + 1, sizeof *h->sums);
  h->arena = malloc(ndims * sizeof(int64_t) + names_len + 1);
  if (!h->entries || !h->by_name || !h->sums || !h->arena)
    return dlpx__fail(DLPX_ENOMEM, "cannot allocate a header of %zu tensors", count);
  int64_t *dims = h->arena;
  char *names = (char *)(dims + ndims);
  for (size_t i = 0; i < nkeys; i++) {
    const char *key = dlpx__json_key(root, i);
    if (strcmp(key, "__metadata__") == 0) continue;
    dlpx_st_entry *e = &h->entries[h->count];
    size_t klen = root->u.items[2 * i].len + 1;
    memcpy(names, key, klen);
    e->name = names;
    names += klen;
    int rc = parse_entry(e->name, dlpx__json_value(root, i), e, dims);
    if (rc) return rc;
    dims += e->ndim;
    h->count++;
  }
  if (meta) {
    int rc = parse_metadata(h, meta);
    if (rc) return rc;
  }
  /* data order: no gaps, no overlaps, up to the end of the data */
  qsort(h->entries, h->count, sizeof *h->entries, by_offset);
  uint64_t at = 0;
  for (size_t i = 0; i < h->count; i++) {
    const dlpx_st_entry *e = &h->entries[i];
    if (e->begin < at)
      return dlpx__fail(DLPX_EFORMAT, "tensor \"%.200s\" overlaps the tensor before it", e->name);
    if (e->begin > at)
      return dlpx__fail(DLPX_EFORMAT,
                        "%llu bytes before tensor \"%.200s\" belong to no tensor (a gap)",
                        (unsigned long long)(e->begin - at), e->name);
    at = e->end;
  }
  if (at != data_len)
    return dlpx__fail(DLPX_EFORMAT,
                      "the tensors end at byte %llu of the data but the data has %llu bytes%s",
                      (unsigned long long)at, (unsigned long long)data_len,
                      at > data_len ? " (the file is truncated)" : "");
  for (size_t i = 0; i < h->count; i++) h->by_name[i] = &h->entries[i];
  qsort(h->by_name, h->count, sizeof *h->by_name, by_name);
  int trc = make_table(h);
  if (trc) return trc;
  for (size_t i = 0; i < h->nmeta; i++)
    if (strcmp(h->meta[2 * i], DLPX__META_CHECKSUMS) == 0)
      return dlpx__st_parse_checksums(h, h->meta[2 * i + 1]);
  return 0;
}

int dlpx_st_header_parse(const char *json, size_t len, uint64_t data_len, dlpx_st_header **out) {
  if (!json || !out) return dlpx__fail(DLPX_EINVAL, "json or out is NULL");
  if (len > DLPX_ST_HEADER_MAX)
    return dlpx__fail(DLPX_EFORMAT, "the header has %zu bytes; at most %d are allowed", len,
                      DLPX_ST_HEADER_MAX);
  if (len == 0 || json[0] != '{')
    return dlpx__fail(DLPX_EFORMAT, "the header does not start with '{'");
  dlpx__json_error err;
  dlpx__json_doc *doc = dlpx__json_parse(json, len, &err);
  if (!doc) {
    if (err.nomem) return dlpx__fail(DLPX_ENOMEM, "cannot allocate a header of %zu bytes", len);
    return dlpx__fail(DLPX_EFORMAT, "the header is not valid JSON: %s (at byte %zu)", err.text,
                      err.position);
  }
  const dlpx__json *root = dlpx__json_root(doc);
  if (!dlpx__json_is(root, DLPX__JSON_OBJECT)) {
    dlpx__json_free(doc);
    return dlpx__fail(DLPX_EFORMAT, "the header is not a JSON object");
  }
  dlpx_st_header *h = calloc(1, sizeof *h);
  if (!h) {
    dlpx__json_free(doc);
    return dlpx__fail(DLPX_ENOMEM, "cannot allocate a header");
  }
  int rc = parse(h, root, data_len);
  dlpx__json_free(doc);
  if (rc) {
    dlpx_st_header_free(h);
    return rc;
  }
  *out = h;
  return 0;
}
