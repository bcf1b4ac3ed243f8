/* save.c - crash-safe saving in the safetensors format: the header and the
 * data go to a temporary file in the target's directory, which is fsynced,
 * renamed over the target, and the directory fsynced.  Checksums are
 * computed while the data is written and the header (whose size does not
 * depend on their values) is written last. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"

#define WRITE_PIECE ((size_t)8 << 20)
#define STAGING_SIZE ((size_t)8 << 20)

typedef struct {
  const char *name;
  const dlpx_tensor *t;
  int rank;
  uint64_t nbytes;
  int64_t lo, hi;      /* memory extent (absolute addresses) */
  size_t alias_of;     /* index of the stored item it repeats, or SIZE_MAX */
  uint64_t begin;      /* data offset in the file */
  uint64_t pad;        /* bytes of padding right before it (aligned images) */
  uint64_t *hashes;
  size_t nhashes;
} item;

static int by_order(const void *a, const void *b) {
  const item *x = a, *y = b;
  if (x->rank != y->rank) return x->rank > y->rank ? -1 : 1;
  return strcmp(x->name, y->name);
}

static int by_lo(const void *a, const void *b) {
  const item *x = *(const item *const *)a, *y = *(const item *const *)b;
  if (x->lo != y->lo) return x->lo < y->lo ? -1 : 1;
  return strcmp(x->name, y->name);
}

static int by_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool same_view(const dlpx_tensor *a, const dlpx_tensor *b) {
  const DLTensor *x = &a->dl, *y = &b->dl;
  if ((char *)x->data + x->byte_offset != (char *)y->data + y->byte_offset) return false;
  if (!dlpx__dtype_eq(x->dtype, y->dtype) || x->ndim != y->ndim) return false;
  if ((a->flags & DLPX_TENSOR_SUBBYTE_PADDED) != (b->flags & DLPX_TENSOR_SUBBYTE_PADDED))
    return false;
  for (int32_t i = 0; i < x->ndim; i++)
    if (x->shape[i] != y->shape[i] || (x->shape[i] > 1 && x->strides[i] != y->strides[i]))
      return false;
  return true;
}

static int check_item(item *it) {
  const dlpx_tensor *t = it->t;
  if (!t) return dlpx__fail(DLPX_EINVAL, "tensor \"%.200s\" is NULL", it->name);
  if (!dlpx__device_host(t->dl.device.device_type))
    return dlpx__fail(DLPX_EDEVICE, "tensor \"%.200s\" is not in host memory", it->name);
  it->rank = dlpx__st_dtype_rank(t->dl.dtype);
  if (it->rank < 0) {
    char d[32];
    dlpx_dtype_format(t->dl.dtype, d, sizeof d);
    return dlpx__fail(DLPX_EDTYPE, "tensor \"%.200s\": the safetensors format has no dtype %s",
                      it->name, d);
  }
  int rc = dlpx__st_nbytes(it->name, t->dl.dtype, t->dl.ndim, t->dl.shape, &it->nbytes);
  if (rc == DLPX_EFORMAT) {
    /* The message is the buffer dlpx__fail writes: copy it first. */
    char msg[512];
    snprintf(msg, sizeof msg, "%s", dlpx_last_error());
    return dlpx__fail(DLPX_EINVAL, "%s", msg);
  }
  if (rc) return rc;
  it->alias_of = SIZE_MAX;
  it->lo = it->hi = 0;
  if (it->nbytes) {
    int64_t lo, hi;
    rc = dlpx__extent(t->dl.ndim, t->dl.shape, t->dl.strides,
                      dlpx__elem_bits(t->dl.dtype, t->flags), &lo, &hi);
    if (rc) return rc;
    intptr_t base = (intptr_t)((char *)t->dl.data + t->dl.byte_offset);
    it->lo = (int64_t)base + lo;
    it->hi = (int64_t)base + hi;
  }
  return 0;
}

/* Refuses tensors that share memory, naming both, except repeated views
 * when |aliases| (then the later names, by name, repeat the first). */
static int check_overlaps(item *items, size_t n, bool aliases) {
  item **v = malloc((n ? n : 1) * sizeof *v);
  if (!v) return dlpx__fail(DLPX_ENOMEM, "no memory");
  size_t m = 0;
  for (size_t i = 0; i < n; i++)
    if (items[i].nbytes) v[m++] = &items[i];
  qsort(v, m, sizeof *v, by_lo);
  int rc = 0;
  item *reach = NULL; /* the item reaching furthest so far */
  for (size_t i = 0; i < m && !rc; i++) {
    item *it = v[i];
    if (reach && it->lo < reach->hi) {
      /* Find a stored item of the same view among those overlapping. */
      item *same = NULL;
      for (size_t j = i; j-- > 0 && v[j]->lo == it->lo && !same;)
        if (v[j]->alias_of == SIZE_MAX && same_view(v[j]->t, it->t)) same = v[j];
      if (aliases && same) {
        it->alias_of = (size_t)(same - items);
        continue;
      }
      item *other = same ? same : reach;
      rc = dlpx__fail(DLPX_EOVERLAP,
                      "tensors \"%.200s\" and \"%.200s\" share memory%s; save one of them, or "
                      "copies%s",
                      other->name, it->name, same ? " (the same view)" : "",
                      same ? ", or allow tied tensors to be stored once" : "");
      break;
    }
    if (!reach || it->hi > reach->hi) reach = it;
  }
  free(v);
  return rc;
}

/* 0666 less the process umask, as other writers create files (read from
 * /proc: umask(2) cannot be read without changing it, racing threads). */
static mode_t new_file_mode(void) {
  mode_t mask = 022;
  FILE *fp = fopen("/proc/self/status", "re");
  if (fp) {
    char line[256];
    while (fgets(line, sizeof line, fp)) {
      unsigned m;
      if (sscanf(line, "Umask: %o", &m) == 1) {
        mask = (mode_t)m;
        break;
      }
    }
    fclose(fp);
  }
  return 0666 & ~mask;
}

static int write_all(int fd, const void *data, size_t len, uint64_t off, const char *path) {
  const char *p = data;
  while (len) {
    size_t want = len < ((size_t)1 << 30) ? len : ((size_t)1 << 30);
    ssize_t w = pwrite(fd, p, want, (off_t)off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0)
      return dlpx__fail(DLPX_EIO, "%s: write failed: %s", path,
                        w < 0 ? strerror(errno) : "no progress");
    p += w, off += (uint64_t)w, len -= (size_t)w;
  }
  return 0;
}

/* Writes one tensor's bytes at |off|, C order, packed, hashing as it goes. */
static int write_tensor(int fd, const item *it, uint64_t off, dlpx__hasher *h, const char *path) {
  const dlpx_tensor *t = it->t;
  if (!it->nbytes) return 0;
  bool direct = !(t->flags & DLPX_TENSOR_SUBBYTE_PADDED) &&
                dlpx__contiguous(t->dl.ndim, t->dl.shape, t->dl.strides, true);
  if (direct) {
    const char *p = (const char *)t->dl.data + t->dl.byte_offset;
    for (uint64_t done = 0; done < it->nbytes;) {
      size_t k = it->nbytes - done < WRITE_PIECE ? (size_t)(it->nbytes - done) : WRITE_PIECE;
      if (h) dlpx__hasher_feed(h, p + done, k);
      int rc = write_all(fd, p + done, k, off + done, path);
      if (rc) return rc;
      done += k;
    }
    return 0;
  }
  /* Any other layout: groups of rows of dimension 0 through a staging
   * tensor (which also packs padded sub-byte elements).  Groups hold a
   * multiple of |g| rows, which end on a byte: a row of sub-byte elements
   * may end inside one (g divides rows, as the tensor is whole bytes);
   * |row| is the bytes of |g| rows. */
  uint64_t rows = (uint64_t)t->dl.shape[0], rowbits = it->nbytes * 8 / rows, g = 1;
  while ((g * rowbits) % 8) g *= 2;
  uint64_t row = g * rowbits / 8;
  uint64_t per = row >= STAGING_SIZE ? g : STAGING_SIZE / row * g;
  if (per > rows) per = rows;
  int64_t shape[DLPX_MAX_NDIM];
  memcpy(shape, t->dl.shape, sizeof(int64_t) * (size_t)t->dl.ndim);
  shape[0] = (int64_t)per;
  dlpx_tensor *stage = NULL;
  int rc = dlpx__tensor_new_owned(t->dl.dtype, t->dl.ndim, shape, 'C', 0, false, &stage);
  for (uint64_t r0 = 0; !rc && r0 < rows; r0 += per) {
    uint64_t k = rows - r0 < per ? rows - r0 : per;
    dlpx_index s1 = {.kind = DLPX_INDEX_SLICE, .start = (int64_t)r0, .stop = (int64_t)(r0 + k), .step = 1};
    dlpx_index s2 = {.kind = DLPX_INDEX_SLICE, .start = 0, .stop = (int64_t)k, .step = 1};
    dlpx_tensor *src = NULL, *dst = NULL;
    rc = dlpx_tensor_index(t, 1, &s1, &src);
    if (!rc) rc = dlpx_tensor_index(stage, 1, &s2, &dst);
    if (!rc) rc = dlpx_tensor_copy_into(dst, src);
    if (!rc) {
      const char *p = (const char *)stage->dl.data + stage->dl.byte_offset;
      if (h) dlpx__hasher_feed(h, p, (size_t)(k / g * row));
      rc = write_all(fd, p, (size_t)(k / g * row), off + r0 / g * row, path);
    }
    dlpx_tensor_free(src);
    dlpx_tensor_free(dst);
  }
  dlpx_tensor_free(stage);
  return rc;
}

static int json_fail(const char *what, const char *s) {
  return dlpx__fail(DLPX_EINVAL, "%s \"%.200s\" is not valid UTF-8", what, s);
}

/* serde_json (the reference writer) spells \u escapes with lowercase hex
 * digits, jansson with uppercase ones: lowercased in place, the bytes are
 * the reference's. */
static void lowercase_escapes(char *s) {
  for (; *s; s++)
    if (*s == '\\' && *++s == 'u')
      for (int i = 0; i < 4 && s[1]; i++, s++)
        if (s[1] >= 'A' && s[1] <= 'F') s[1] = (char)(s[1] - 'A' + 'a');
}

/* The header JSON: __metadata__ first, then the tensors in data order. */
static int build_header(item *items, size_t n, size_t nmeta, const char *const *keys,
                        const char *const *values, const char *sums, const char *aliases,
                        bool meta_always, const char *extra_key, const char *extra_value,
                        char **out) {
  json_t *root = json_object();
  if (!root) return dlpx__fail(DLPX_ENOMEM, "no memory for the header");
  int rc = 0;
  size_t npads = 0;
  for (size_t i = 0; i < n; i++) npads += items[i].pad != 0;
  if (nmeta || sums || aliases || meta_always || extra_key || npads) {
    json_t *m = json_object();
    if (!m || json_object_set_new(root, "__metadata__", m)) rc = DLPX_ENOMEM;
    for (size_t i = 0; !rc && i < nmeta; i++) {
      json_t *v = json_string(values[i]);
      if (!v) rc = json_fail("metadata value", values[i]);
      else if (json_object_set_new(m, keys[i], v)) rc = json_fail("metadata key", keys[i]);
    }
    if (!rc && sums && json_object_set_new(m, DLPX__META_CHECKSUMS, json_string(sums)))
      rc = DLPX_ENOMEM;
    if (!rc && aliases && json_object_set_new(m, DLPX__META_PREFIX "aliases", json_string(aliases)))
      rc = DLPX_ENOMEM;
    if (!rc && extra_key) {
      json_t *v = json_string(extra_value);
      if (!v) rc = json_fail("metadata value", extra_value);
      else if (json_object_set_new(m, extra_key, v)) rc = json_fail("metadata key", extra_key);
    }
    if (!rc && npads) {
      char count[24];
      snprintf(count, sizeof count, "%zu", npads);
      if (json_object_set_new(m, DLPX__META_PAD, json_string(count))) rc = DLPX_ENOMEM;
    }
  }
  for (size_t i = 0; !rc && i < n; i++) {
    const item *it = &items[i];
    if (it->alias_of != SIZE_MAX) continue;
    json_t *e = json_object(), *shape = json_array(), *offs = json_array();
    if (!e || !shape || !offs) {
      json_decref(e), json_decref(shape), json_decref(offs);
      rc = DLPX_ENOMEM;
      break;
    }
    for (int32_t d = 0; d < it->t->dl.ndim; d++)
      json_array_append_new(shape, json_integer((json_int_t)it->t->dl.shape[d]));
    json_array_append_new(offs, json_integer((json_int_t)it->begin));
    json_array_append_new(offs, json_integer((json_int_t)(it->begin + it->nbytes)));
    json_object_set_new(e, "dtype", json_string(dlpx_st_dtype_name(it->t->dl.dtype)));
    json_object_set_new(e, "shape", shape);
    json_object_set_new(e, "data_offsets", offs);
    if (json_object_set_new(root, it->name, e)) rc = json_fail("tensor name", it->name);
  }
  /* The padding, as tensors of bytes "dlpx.pad.<k>" (the format allows no
   * gaps between tensors). */
  for (size_t i = 0, k = 0; !rc && i < n; i++) {
    const item *it = &items[i];
    if (!it->pad) continue;
    char name[32];
    snprintf(name, sizeof name, DLPX__META_PAD ".%zu", k++);
    json_t *e = json_pack("{s:s, s:[I], s:[I, I]}", "dtype", "U8", "shape", (json_int_t)it->pad,
                          "data_offsets", (json_int_t)(it->begin - it->pad),
                          (json_int_t)it->begin);
    if (!e || json_object_set_new(root, name, e)) rc = DLPX_ENOMEM;
  }
  if (!rc) {
    *out = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!*out) rc = DLPX_ENOMEM;
    else lowercase_escapes(*out);
  }
  json_decref(root);
  if (rc == DLPX_ENOMEM) return dlpx__fail(rc, "no memory for the header");
  return rc;
}

/* "dlpx.aliases": {"alias": "stored name", ...} */
static int encode_aliases(const item *items, size_t n, char **out) {
  *out = NULL;
  json_t *a = json_object();
  if (!a) return dlpx__fail(DLPX_ENOMEM, "no memory");
  size_t count = 0;
  for (size_t i = 0; i < n; i++)
    if (items[i].alias_of != SIZE_MAX) {
      if (json_object_set_new(a, items[i].name, json_string(items[items[i].alias_of].name))) {
        json_decref(a);
        return json_fail("tensor name", items[i].name); /* not UTF-8 (or no memory) */
      }
      count++;
    }
  if (count) *out = json_dumps(a, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(a);
  return count && !*out ? dlpx__fail(DLPX_ENOMEM, "no memory") : 0;
}

static int check_names(size_t n, const char *const *names, size_t nmeta, const char *const *keys,
                       const char *const *values) {
  const char **v = malloc(((n > nmeta ? n : nmeta) + 1) * sizeof *v);
  if (!v) return dlpx__fail(DLPX_ENOMEM, "no memory");
  int rc = 0;
  for (size_t i = 0; !rc && i < n; i++) {
    if (!names[i]) rc = dlpx__fail(DLPX_EINVAL, "tensor name %zu is NULL", i);
    else if (!strcmp(names[i], "__metadata__"))
      rc = dlpx__fail(DLPX_EINVAL, "\"__metadata__\" is reserved and cannot name a tensor");
    v[i] = names[i];
  }
  if (!rc) {
    qsort(v, n, sizeof *v, by_str);
    for (size_t i = 1; !rc && i < n; i++)
      if (!strcmp(v[i - 1], v[i]))
        rc = dlpx__fail(DLPX_EINVAL, "tensor name \"%.200s\" is given twice", v[i]);
  }
  for (size_t i = 0; !rc && i < nmeta; i++) {
    if (!keys[i] || !values[i]) rc = dlpx__fail(DLPX_EINVAL, "metadata entry %zu is NULL", i);
    else if (!strncmp(keys[i], DLPX__META_PREFIX, strlen(DLPX__META_PREFIX)))
      rc = dlpx__fail(DLPX_EINVAL,
                      "metadata key \"%.200s\": keys starting with \"dlpx.\" are reserved", keys[i]);
    v[i] = keys[i];
  }
  if (!rc) {
    qsort(v, nmeta, sizeof *v, by_str);
    for (size_t i = 1; !rc && i < nmeta; i++)
      if (!strcmp(v[i - 1], v[i]))
        rc = dlpx__fail(DLPX_EINVAL, "metadata key \"%.200s\" is given twice", v[i]);
  }
  free(v);
  return rc;
}

/* The directory of |path| ("." when it has none), new. */
static char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return strdup(".");
  if (slash == path) return strdup("/");
  return strndup(path, (size_t)(slash - path));
}

struct dlpx__st_image {
  item *items; /* in the reference writer's order */
  size_t n, nmeta;
  const char *const *keys, *const *values;
  uint32_t flags;
  uint64_t align;
  const char *extra_key, *extra_value;
};

int dlpx__st_image_new(const char *fn, size_t n, const char *const *names,
                       const dlpx_tensor *const *tensors, size_t nmeta, const char *const *keys,
                       const char *const *values, uint32_t flags, uint64_t align,
                       const char *extra_key, const char *extra_value, dlpx__st_image **out) {
  *out = NULL;
  if ((n && (!names || !tensors)) || (nmeta && (!keys || !values)) ||
      (extra_key && !extra_value))
    return dlpx__fail(DLPX_EINVAL, "%s: NULL argument", fn);
  if (flags & ~(DLPX_SAVE_CHECKSUMS | DLPX_SAVE_ALIASES_ONCE | DLPX_SAVE_NO_FSYNC |
                DLPX_SAVE_METADATA))
    return dlpx__fail(DLPX_EINVAL, "%s: unknown flags 0x%x", fn, flags);
  if (align < 8 || (align & (align - 1)) || align > 4096)
    return dlpx__fail(DLPX_EINVAL, "%s: bad alignment %llu", fn, (unsigned long long)align);
  int rc = check_names(n, names, nmeta, keys, values);
  if (rc) return rc;
  for (size_t i = 0; align > 8 && i < n; i++)
    if (strncmp(names[i], DLPX__META_PAD ".", sizeof DLPX__META_PAD) == 0)
      return dlpx__fail(DLPX_EINVAL, "%s: tensor name \"%.200s\": names starting with \""
                        DLPX__META_PAD ".\" are reserved for the padding", fn, names[i]);
  dlpx__st_image *img = calloc(1, sizeof *img);
  item *items = calloc(n + 1, sizeof *items);
  if (!img || !items) {
    free(img), free(items);
    return dlpx__fail(DLPX_ENOMEM, "no memory");
  }
  for (size_t i = 0; !rc && i < n; i++) {
    items[i].name = names[i];
    items[i].t = tensors[i];
    rc = check_item(&items[i]);
  }
  if (!rc) qsort(items, n, sizeof *items, by_order);
  if (!rc) rc = check_overlaps(items, n, flags & DLPX_SAVE_ALIASES_ONCE);
  if (rc) {
    free(items), free(img);
    return rc;
  }
  *img = (dlpx__st_image){items, n, nmeta, keys, values, flags, align, extra_key, extra_value};
  *out = img;
  return 0;
}

void dlpx__st_image_free(dlpx__st_image *img) {
  if (!img) return;
  free(img->items);
  free(img);
}

int dlpx__st_image_write(dlpx__st_image *img, int fd, const char *tmp, uint64_t *size) {
  item *items = img->items;
  size_t n = img->n, nmeta = img->nmeta;
  const char *const *keys = img->keys, *const *values = img->values;
  uint32_t flags = img->flags;
  int rc = 0;
  uint64_t pos = 0;
  size_t total_hashes = 0;
  bool aligned = img->align > 8; /* every tensor at a multiple of the alignment too */
  for (size_t i = 0; i < n; i++) {
    item *it = &items[i];
    if (it->alias_of != SIZE_MAX) continue;
    it->pad = aligned && it->nbytes && pos % img->align ? img->align - pos % img->align : 0;
    pos += it->pad;
    it->begin = pos;
    pos += it->nbytes;
    it->nhashes = (size_t)((it->nbytes + DLPX_CHECKSUM_CHUNK - 1) / DLPX_CHECKSUM_CHUNK);
    total_hashes += it->nhashes;
  }
  bool sums = flags & DLPX_SAVE_CHECKSUMS;
  uint64_t *hashes = sums ? calloc(total_hashes + 1, sizeof *hashes) : NULL;
  const char **snames = sums ? calloc(n + 1, sizeof *snames) : NULL;
  const uint64_t **shashes = sums ? calloc(n + 1, sizeof *shashes) : NULL;
  size_t *scounts = sums ? calloc(n + 1, sizeof *scounts) : NULL;
  char *sums_json = NULL, *aliases = NULL, *header = NULL;
  if (sums && (!hashes || !snames || !shashes || !scounts)) {
    rc = dlpx__fail(DLPX_ENOMEM, "no memory for checksums");
    goto done;
  }
  if (sums) {
    size_t h = 0;
    for (size_t i = 0; i < n; i++) {
      if (items[i].alias_of != SIZE_MAX) continue;
      items[i].hashes = hashes + h;
      h += items[i].nhashes;
      snames[i] = items[i].name;
      shashes[i] = items[i].hashes;
      scounts[i] = items[i].nhashes;
    }
    /* Placeholders: the header's size does not depend on the values. */
    if ((rc = dlpx__st_encode_checksums(n, snames, shashes, scounts, DLPX_CHECKSUM_CHUNK,
                                        &sums_json)))
      goto done;
  }
  if ((rc = encode_aliases(items, n, &aliases))) goto done;
  if ((rc = build_header(items, n, nmeta, keys, values, sums_json, aliases,
                          flags & DLPX_SAVE_METADATA, img->extra_key, img->extra_value, &header)))
    goto done;
  size_t hlen = strlen(header);
  /* Spaces after the JSON put the data at a multiple of the alignment (8:
   * the reference writer's padding). */
  uint64_t data0 = (8 + hlen + img->align - 1) / img->align * img->align;
  uint64_t padded = data0 - 8;
  for (size_t i = 0; !rc && i < n; i++) {
    item *it = &items[i];
    if (it->alias_of != SIZE_MAX) continue;
    dlpx__hasher *hs = NULL;
    if (sums && it->nbytes && (rc = dlpx__hasher_new(DLPX_CHECKSUM_CHUNK, it->nbytes, it->hashes, &hs)))
      break;
    rc = write_tensor(fd, it, data0 + it->begin, hs, tmp);
    dlpx__hasher_free(hs);
  }
  if (rc) goto done;
  if (sums) { /* the real values, the same length */
    free(sums_json);
    free(header);
    sums_json = header = NULL;
    if ((rc = dlpx__st_encode_checksums(n, snames, shashes, scounts, DLPX_CHECKSUM_CHUNK,
                                        &sums_json)) ||
        (rc = build_header(items, n, nmeta, keys, values, sums_json, aliases,
                           flags & DLPX_SAVE_METADATA, img->extra_key, img->extra_value,
                           &header)))
      goto done;
    if (strlen(header) != hlen) {
      rc = dlpx__fail(DLPX_ESTATE, "internal error: the header changed size");
      goto done;
    }
  }
  unsigned char *block = malloc(data0);
  if (!block) {
    rc = dlpx__fail(DLPX_ENOMEM, "no memory for the header");
    goto done;
  }
  for (int b = 0; b < 8; b++) block[b] = (unsigned char)(padded >> (8 * b));
  memcpy(block + 8, header, hlen);
  memset(block + 8 + hlen, ' ', padded - hlen);
  rc = write_all(fd, block, data0, 0, tmp);
  free(block);
  if (!rc && size) *size = data0 + pos;
done:
  free(hashes);
  free(snames);
  free(shashes);
  free(scounts);
  free(sums_json);
  free(aliases);
  free(header);
  return rc;
}

/* Whether |name| is a temporary file of a save of |base|: ".<base>.tmp-"
 * and the six characters mkostemp puts in place of XXXXXX. */
static bool is_tmp_of(const char *name, const char *base) {
  size_t bl = strlen(base);
  if (name[0] != '.' || strncmp(name + 1, base, bl) || strncmp(name + 1 + bl, ".tmp-", 5))
    return false;
  const char *x = name + 1 + bl + 5;
  for (int i = 0; i < 6; i++) {
    char c = x[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
      return false;
  }
  return x[6] == '\0';
}

static bool older(const struct timespec *a, const struct timespec *b) {
  return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* After a save of |base| in |dir| succeeded: removes the temporary files
 * that earlier saves of it left when they were killed.  A save holds an
 * flock on its temporary file until it is renamed, so only unlocked ones
 * go, and only those last written before this save made its own (|start|,
 * the mtime of that file: the same clock), which covers a save that has
 * made its file but not yet locked it.  Best effort: failures are ignored. */
static void remove_stale_tmps(const char *dir, const char *base, const struct timespec *start) {
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return;
  DIR *d = fdopendir(dfd);
  if (!d) {
    close(dfd);
    return;
  }
  struct dirent *de;
  while ((de = readdir(d))) {
    struct stat st, fst;
    if (!is_tmp_of(de->d_name, base) ||
        dlpx__fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) ||
        !older(&st.st_mtim, start))
      continue;
    int fd = openat(dfd, de->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) continue;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0 && dlpx__fstat(fd, &fst) == 0 && fst.st_dev == st.st_dev &&
        fst.st_ino == st.st_ino)
      unlinkat(dfd, de->d_name, 0);
    close(fd);
  }
  closedir(d);
}

int dlpx_save_file(const char *path, size_t n, const char *const *names,
                   const dlpx_tensor *const *tensors, size_t nmeta, const char *const *keys,
                   const char *const *values, uint32_t flags) {
  if (!path || (n && (!names || !tensors)) || (nmeta && (!keys || !values)))
    return dlpx__fail(DLPX_EINVAL, "dlpx_save_file: NULL argument");
  if (flags & ~(DLPX_SAVE_CHECKSUMS | DLPX_SAVE_ALIASES_ONCE | DLPX_SAVE_NO_FSYNC |
                DLPX_SAVE_METADATA))
    return dlpx__fail(DLPX_EINVAL, "dlpx_save_file: unknown flags 0x%x", flags);
  if (!*path) return dlpx__fail(DLPX_EINVAL, "dlpx_save_file: empty path");
  dlpx__st_image *img;
  int rc = dlpx__st_image_new("dlpx_save_file", n, names, tensors, nmeta, keys, values, flags, 8,
                              NULL, NULL, &img);
  if (rc) return rc;
  char *dir = dir_of(path);
  size_t tl = strlen(path) + 32;
  char *tmp = malloc(tl);
  if (!dir || !tmp) {
    free(dir), free(tmp), dlpx__st_image_free(img);
    return dlpx__fail(DLPX_ENOMEM, "no memory");
  }
  /* A hidden sibling: same file system, so the rename is atomic. */
  const char *slash = strrchr(path, '/');
  if (slash)
    snprintf(tmp, tl, "%.*s/.%s.tmp-XXXXXX", (int)(slash - path), path, slash + 1);
  else
    snprintf(tmp, tl, ".%s.tmp-XXXXXX", path);
  /* Locked until renamed (through |held|, which outlives the close of
   * |fd|): later saves leave it alone while this one runs.  Without flock
   * (some network file systems) no temporary file is ever removed.  A
   * concurrent save may find the file before it is locked and remove it
   * (holding the lock while it does): wait for the lock, and make another
   * file if this one is gone. */
  int fd, lrc;
  struct stat st;
  bool locked;
  size_t tmplen = strlen(tmp);
  for (;;) {
    memcpy(tmp + tmplen - 6, "XXXXXX", 6);
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
      rc = dlpx__fail(DLPX_EIO, "%s: cannot create a temporary file in %s: %s", path, dir,
                      strerror(errno));
      goto out;
    }
    while ((lrc = flock(fd, LOCK_EX)) != 0 && errno == EINTR) {
    }
    locked = lrc == 0 && dlpx__fstat(fd, &st) == 0;
    if (!locked || st.st_nlink > 0) break;
    close(fd);
  }
  int held = locked ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
  if (fchmod(fd, new_file_mode()) != 0) {
    rc = dlpx__fail(DLPX_EIO, "%s: fchmod failed: %s", tmp, strerror(errno));
  }
  if (!rc) rc = dlpx__st_image_write(img, fd, tmp, NULL);
  if (!rc && !(flags & DLPX_SAVE_NO_FSYNC) && fsync(fd) != 0)
    rc = dlpx__fail(DLPX_EIO, "%s: fsync failed: %s", tmp, strerror(errno));
  if (close(fd) != 0 && !rc)
    rc = dlpx__fail(DLPX_EIO, "%s: close failed: %s", tmp, strerror(errno));
  if (!rc && rename(tmp, path) != 0)
    rc = dlpx__fail(DLPX_EIO, "%s: cannot rename the temporary file into place: %s", path,
                    strerror(errno));
  if (rc) {
    unlink(tmp);
    if (held >= 0) close(held);
    goto out;
  }
  if (held >= 0) close(held);
  if (!(flags & DLPX_SAVE_NO_FSYNC)) {
    /* The rename is durable once the directory is. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      if (fsync(dfd) != 0 && errno != EINVAL)
        rc = dlpx__fail(DLPX_EIO, "%s: fsync of the directory failed: %s", dir, strerror(errno));
      close(dfd);
    }
  }
  if (!rc && held >= 0) remove_stale_tmps(dir, slash ? slash + 1 : path, &st.st_mtim);
out:
  free(dir);
  free(tmp);
  dlpx__st_image_free(img);
  return rc;
}
