/* test_files.c - safetensors headers, files, loading and saving: the dtype
 * names, every rule of the header, byte-exact saving in the reference
 * writer's layout, checksums, mapping, strided reads and writes, slices,
 * O_DIRECT, aliases, truncated files, failed saves and threads. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

/* ---- helpers ---------------------------------------------------------------- */

static char g_dir[4096]; /* the scratch directory of this run */

/* A path in the scratch directory (four rotating buffers, so that a few may
 * be used at once). */
static const char *tpath(const char *name) {
  static char bufs[4][4200];
  static int next;
  char *b = bufs[next++ % 4];
  snprintf(b, sizeof bufs[0], "%s/%s", g_dir, name);
  return b;
}

static int make_scratch_dir(void) {
  const char *base = getenv("TMPDIR");
  if (!base || !*base) base = "/tmp";
  snprintf(g_dir, sizeof g_dir, "%s/dlpx-test-files-XXXXXX", base);
  return mkdtemp(g_dir) ? 0 : -1;
}

static void remove_tree(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *de;
  char p[4400];
  while ((de = readdir(d)) != NULL) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
    struct stat st;
    if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
      remove_tree(p);
    else
      unlink(p);
  }
  closedir(d);
  rmdir(dir);
}

/* Open file descriptors of this process. */
static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL)
    if (de->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

/* Entries of the scratch directory; *tmp counts those that look like a
 * temporary file of dlpx_save_file (".name.tmp-XXXXXX"). */
static int count_entries(const char *dir, int *tmp) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int n = 0;
  if (tmp) *tmp = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
    n++;
    if (tmp && strstr(de->d_name, ".tmp-")) (*tmp)++;
  }
  closedir(d);
  return n;
}

static int write_bytes(const char *path, const void *data, size_t len) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  const char *p = data;
  while (len) {
    ssize_t w = write(fd, p, len);
    if (w <= 0) {
      close(fd);
      return -1;
    }
    p += w;
    len -= (size_t)w;
  }
  return close(fd);
}

/* The whole file, new (free it); NULL on failure. */
static unsigned char *read_all(const char *path, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NULL;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return NULL;
  }
  size_t n = (size_t)st.st_size;
  unsigned char *buf = malloc(n ? n : 1);
  size_t got = 0;
  while (buf && got < n) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r <= 0) {
      free(buf);
      buf = NULL;
      break;
    }
    got += (size_t)r;
  }
  close(fd);
  if (buf) *len = n;
  return buf;
}

/* A safetensors file from a JSON header (taken as it is: no padding) and
 * data bytes. */
static int write_st(const char *path, const char *json, const void *data, size_t dlen) {
  size_t n = strlen(json);
  unsigned char *buf = malloc(8 + n + dlen);
  if (!buf) return -1;
  for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)n >> (8 * i));
  memcpy(buf + 8, json, n);
  if (dlen) memcpy(buf + 8 + n, data, dlen);
  int rc = write_bytes(path, buf, 8 + n + dlen);
  free(buf);
  return rc;
}

/* XORs byte |off| of a file with 0x5a, in place. */
static int flip_byte(const char *path, uint64_t off) {
  int fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) return -1;
  unsigned char c;
  int rc = -1;
  if (pread(fd, &c, 1, (off_t)off) == 1) {
    c ^= 0x5a;
    if (pwrite(fd, &c, 1, (off_t)off) == 1) rc = 0;
  }
  close(fd);
  return rc;
}

/* The JSON header text of a file (new, NUL-terminated) and its length
 * field. */
static char *header_text(const char *path, uint64_t *n_out) {
  size_t len;
  unsigned char *all = read_all(path, &len);
  if (!all || len < 8) {
    free(all);
    return NULL;
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = n << 8 | all[i];
  if (n > len - 8) {
    free(all);
    return NULL;
  }
  char *s = malloc((size_t)n + 1);
  if (s) {
    memcpy(s, all + 8, (size_t)n);
    s[n] = '\0';
  }
  free(all);
  *n_out = n;
  return s;
}

/* A C-contiguous tensor of |dtype| whose bytes are a pattern of |seed|. */
static dlpx_tensor *filled(const char *dtype, int32_t ndim, const int64_t *shape, unsigned seed) {
  dlpx_tensor *t = NULL;
  if (dlpx_tensor_empty(dt(dtype), ndim, shape, &t) != 0) return NULL;
  unsigned char *p = dlpx_tensor_data(t);
  int64_t n = dlpx_tensor_nbytes(t);
  uint64_t x = 0x9E3779B97F4A7C15ull * (seed + 1);
  for (int64_t i = 0; i < n; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    p[i] = (unsigned char)(x >> 24);
  }
  return t;
}

/* 1 when |a| and |b| have the same dtype, shape and elements (compared as
 * bytes of C-contiguous copies). */
static int same_elements(const dlpx_tensor *a, const dlpx_tensor *b) {
  DLDataType da = dlpx_tensor_dtype(a), db = dlpx_tensor_dtype(b);
  if (da.code != db.code || da.bits != db.bits || da.lanes != db.lanes) return 0;
  if (dlpx_tensor_ndim(a) != dlpx_tensor_ndim(b)) return 0;
  for (int32_t i = 0; i < dlpx_tensor_ndim(a); i++)
    if (dlpx_tensor_shape(a)[i] != dlpx_tensor_shape(b)[i]) return 0;
  dlpx_tensor *ca = NULL, *cb = NULL;
  int ok = dlpx_tensor_copy(a, 'C', &ca) == 0 && dlpx_tensor_copy(b, 'C', &cb) == 0 &&
           dlpx_tensor_nbytes(ca) == dlpx_tensor_nbytes(cb) &&
           memcmp(dlpx_tensor_data(ca), dlpx_tensor_data(cb), (size_t)dlpx_tensor_nbytes(ca)) == 0;
  dlpx_tensor_free(ca);
  dlpx_tensor_free(cb);
  return ok;
}

static const uint32_t NOSYNC = DLPX_SAVE_NO_FSYNC;

/* Saves one tensor. */
static int save1(const char *path, const char *name, const dlpx_tensor *t, uint32_t flags) {
  const char *names[] = {name};
  const dlpx_tensor *ts[] = {t};
  return dlpx_save_file(path, 1, names, ts, 0, NULL, NULL, flags);
}

/* The index of tensor |name| of an open file, or SIZE_MAX. */
static size_t find(const dlpx_file *f, const char *name) {
  size_t i;
  return dlpx_st_header_find(dlpx_file_header(f), name, &i) == 0 ? i : SIZE_MAX;
}

/* ---- dtype names -------------------------------------------------------------- */

static void test_dtype_names(void) {
  check_live l;
  check_live_begin(&l);
  static const struct {
    const char *st, *dlpx;
  } names[] = {
      {"BOOL", "bool"},
      {"U8", "uint8"},
      {"I8", "int8"},
      {"I16", "int16"},
      {"U16", "uint16"},
      {"F16", "float16"},
      {"BF16", "bfloat16"},
      {"I32", "int32"},
      {"U32", "uint32"},
      {"F32", "float32"},
      {"F64", "float64"},
      {"I64", "int64"},
      {"U64", "uint64"},
      {"F8_E5M2", "float8_e5m2"},
      {"F8_E4M3", "float8_e4m3fn"},
      {"F8_E8M0", "float8_e8m0fnu"},
      {"F8_E4M3FNUZ", "float8_e4m3fnuz"},
      {"F8_E5M2FNUZ", "float8_e5m2fnuz"},
      {"C64", "complex64"},
      {"F4", "float4_e2m1fn"},
      {"F6_E2M3", "float6_e2m3fn"},
      {"F6_E3M2", "float6_e3m2fn"},
  };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    DLDataType d = {0, 0, 0}, want = dt(names[i].dlpx);
    ASSERT_OK(dlpx_st_dtype_parse(names[i].st, &d));
    ASSERT_EQ(d.code, want.code);
    ASSERT_EQ(d.bits, want.bits);
    ASSERT_EQ(d.lanes, 1);
    ASSERT_STR_EQ(dlpx_st_dtype_name(d), names[i].st);
  }
  /* From the other side: every dtype of dlpx either has one of the names
   * above (and round-trips) or none. */
  size_t count = 0, named = 0;
  const dlpx_dtype_info *table = dlpx_dtype_table(&count);
  for (size_t i = 0; i < count; i++) {
    const char *st = dlpx_st_dtype_name(table[i].dtype);
    if (!st) continue;
    named++;
    DLDataType back = {0, 0, 0};
    ASSERT_OK(dlpx_st_dtype_parse(st, &back));
    ASSERT_EQ(back.code, table[i].dtype.code);
    ASSERT_EQ(back.bits, table[i].dtype.bits);
  }
  ASSERT_EQ(named, sizeof names / sizeof names[0]);
  /* Types the format lacks. */
  const char *lacking[] = {"complex128", "complex32", "float8_e3m4", "float8_e4m3",
                           "float8_e4m3b11fnuz", "float32x4", "int8x2"};
  for (size_t i = 0; i < sizeof lacking / sizeof lacking[0]; i++)
    ASSERT_PTR_EQ(dlpx_st_dtype_name(dt(lacking[i])), NULL);
  ASSERT_PTR_EQ(dlpx_st_dtype_name((DLDataType){kDLFloat, 32, 2}), NULL);
  /* Names that are not safetensors names. */
  const char *bad[] = {"", "f32", "F32 ", "float32", "C128", "F8_E4M3FN", "I4", "BOOL\n"};
  DLDataType d = {0, 0, 0};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    ASSERT_RC(DLPX_EDTYPE, dlpx_st_dtype_parse(bad[i], &d));
  ASSERT_MSG("unknown safetensors dtype");
  ASSERT_RC(DLPX_EINVAL, dlpx_st_dtype_parse(NULL, &d));
  ASSERT_RC(DLPX_EINVAL, dlpx_st_dtype_parse("F32", NULL));
  ASSERT_NO_LEAKS(&l);
}

/* ---- headers ------------------------------------------------------------------ */

static int parse(const char *json, uint64_t data_len, dlpx_st_header **h) {
  *h = NULL;
  return dlpx_st_header_parse(json, strlen(json), data_len, h);
}

static void test_header_good(void) {
  check_live l;
  check_live_begin(&l);
  dlpx_st_header *h = NULL;
  /* The smallest header, and trailing spaces (the reference's padding). */
  ASSERT_OK(parse("{}", 0, &h));
  ASSERT_EQ(dlpx_st_header_count(h), 0);
  ASSERT_EQ(dlpx_st_header_metadata_count(h), 0);
  ASSERT_PTR_EQ(dlpx_st_header_entry(h, 0), NULL);
  ASSERT_EQ(dlpx_st_header_checksums(h, 0, NULL, NULL, NULL), 0);
  dlpx_st_header_free(h);
  ASSERT_OK(parse("{}      ", 0, &h));
  dlpx_st_header_free(h);
  /* Only |len| bytes are parsed. */
  ASSERT_OK(dlpx_st_header_parse("{}garbage", 2, 0, &h));
  dlpx_st_header_free(h);

  /* Metadata; null metadata is no metadata. */
  ASSERT_OK(parse("{\"__metadata__\":{\"format\":\"pt\",\"empty\":\"\",\"u\":\"\\u00fc\"}}", 0, &h));
  ASSERT_EQ(dlpx_st_header_count(h), 0);
  ASSERT_EQ(dlpx_st_header_metadata_count(h), 3);
  int seen = 0;
  for (size_t i = 0; i < 3; i++) {
    const char *k = NULL, *v = NULL;
    ASSERT_OK(dlpx_st_header_metadata(h, i, &k, &v));
    if (!strcmp(k, "format")) {
      ASSERT_STR_EQ(v, "pt");
      seen |= 1;
    }
    if (!strcmp(k, "empty")) {
      ASSERT_STR_EQ(v, "");
      seen |= 2;
    }
    if (!strcmp(k, "u")) {
      ASSERT_STR_EQ(v, "\xc3\xbc");
      seen |= 4;
    }
  }
  ASSERT_EQ(seen, 7);
  ASSERT_RC(DLPX_EINDEX, dlpx_st_header_metadata(h, 3, NULL, NULL));
  dlpx_st_header_free(h);
  ASSERT_OK(parse("{\"__metadata__\":null}", 0, &h));
  ASSERT_EQ(dlpx_st_header_metadata_count(h), 0);
  dlpx_st_header_free(h);

  /* Entries out of order in the JSON come out in data order; zero-size
   * tensors and scalars; an empty tensor between two others. */
  const char *json =
      "{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
      "\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
      "\"y\":{\"dtype\":\"I64\",\"shape\":[3,0,2],\"data_offsets\":[4,4]},"
      "\"s\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]},"
      "\"__metadata__\":{\"k\":\"v\"},"
      "\"c\":{\"dtype\":\"F4\",\"shape\":[3,2],\"data_offsets\":[12,15]},"
      "\"last\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[15,15]}}";
  ASSERT_OK(parse(json, 15, &h));
  ASSERT_EQ(dlpx_st_header_count(h), 6);
  ASSERT_EQ(dlpx_st_header_metadata_count(h), 1);
  const char *order[] = {"s", "y", "z", "b", "c", "last"};
  for (size_t i = 0; i < 6; i++) ASSERT_STR_EQ(dlpx_st_header_entry(h, i)->name, order[i]);
  const dlpx_st_entry *e = dlpx_st_header_entry(h, 0);
  ASSERT_EQ(e->ndim, 0);
  ASSERT_EQ(e->dtype.code, kDLInt);
  ASSERT_EQ(e->dtype.bits, 32);
  ASSERT_EQ(e->begin, 0);
  ASSERT_EQ(e->end, 4);
  e = dlpx_st_header_entry(h, 1);
  ASSERT_EQ(e->ndim, 3);
  ASSERT_EQ(e->shape[0], 3);
  ASSERT_EQ(e->shape[1], 0);
  ASSERT_EQ(e->shape[2], 2);
  ASSERT_EQ(e->begin, 4);
  ASSERT_EQ(e->end, 4);
  e = dlpx_st_header_entry(h, 4);
  ASSERT_EQ(e->dtype.code, kDLFloat4_e2m1fn);
  ASSERT_EQ(e->dtype.bits, 4);
  ASSERT_EQ(e->end - e->begin, 3);
  ASSERT_PTR_EQ(dlpx_st_header_entry(h, 6), NULL);
  size_t idx = 99;
  for (size_t i = 0; i < 6; i++) {
    ASSERT_OK(dlpx_st_header_find(h, order[i], &idx));
    ASSERT_EQ(idx, i);
  }
  /* A failed lookup is not an error of the thread. */
  DLDataType scratch;
  ASSERT_RC(DLPX_EDTYPE, dlpx_st_dtype_parse("nope", &scratch));
  int before = dlpx_last_error_code();
  char msg[256];
  snprintf(msg, sizeof msg, "%s", dlpx_last_error());
  ASSERT_RC(DLPX_EINDEX, dlpx_st_header_find(h, "missing", &idx));
  ASSERT_RC(DLPX_EINDEX, dlpx_st_header_find(h, "", &idx));
  ASSERT_RC(DLPX_EINDEX, dlpx_st_header_find(h, "__metadata__", &idx));
  ASSERT_EQ(dlpx_last_error_code(), before);
  ASSERT_STR_EQ(dlpx_last_error(), msg);
  ASSERT_OK(dlpx_st_header_find(h, "b", NULL));
  for (size_t i = 0; i < 6; i++) ASSERT_EQ(dlpx_st_header_checksums(h, i, NULL, NULL, NULL), 0);
  dlpx_st_header_free(h);

  /* UTF-8 names, escapes, 128 dimensions, big but valid sizes, and an
   * extra field in an entry (the reference reader ignores unknown fields). */
  ASSERT_OK(parse("{\"\\u00e9t\\u00e9/\\\"q\\\"\":"
                  "{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
                  1, &h));
  ASSERT_STR_EQ(dlpx_st_header_entry(h, 0)->name, "\xc3\xa9t\xc3\xa9/\"q\"");
  dlpx_st_header_free(h);
  char big[2048];
  size_t at = (size_t)snprintf(big, sizeof big, "{\"d\":{\"dtype\":\"U8\",\"shape\":[");
  for (int i = 0; i < DLPX_MAX_NDIM; i++)
    at += (size_t)snprintf(big + at, sizeof big - at, "%s1", i ? "," : "");
  snprintf(big + at, sizeof big - at, "],\"data_offsets\":[0,1]}}");
  ASSERT_OK(parse(big, 1, &h));
  ASSERT_EQ(dlpx_st_header_entry(h, 0)->ndim, DLPX_MAX_NDIM);
  dlpx_st_header_free(h);
  ASSERT_OK(parse("{\"x\":{\"dtype\":\"U8\",\"shape\":[1099511627776,0],\"data_offsets\":[0,0]}}",
                  0, &h));
  dlpx_st_header_free(h);
  ASSERT_OK(parse("{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"extra\":[1,2]}}", 1,
                  &h));
  dlpx_st_header_free(h);

  /* Arguments. */
  ASSERT_RC(DLPX_EINVAL, dlpx_st_header_parse(NULL, 2, 0, &h));
  ASSERT_RC(DLPX_EINVAL, dlpx_st_header_parse("{}", 2, 0, NULL));
  dlpx_st_header_free(NULL);
  ASSERT_NO_LEAKS(&l);
}

typedef struct {
  const char *json;
  uint64_t data_len;
  int code;
  const char *msg; /* a part of the message, or NULL */
} bad_header;

#define T(name, body) "\"" name "\":{" body "}"
#define E(dtype, shape, b, e) \
  "\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" b "," e "]"

/* dlpx_st_header_table: the entries as flat arrays, in data order. */
static void test_header_table(void) {
  dlpx_st_header *h = NULL;
  ASSERT_OK(parse("{}", 0, &h));
  const dlpx_st_table *t = dlpx_st_header_table(h);
  ASSERT_TRUE(t != NULL);
  ASSERT_EQ(t->count, 0);
  ASSERT_EQ(t->names_len, 0);
  dlpx_st_header_free(h);
  ASSERT_PTR_EQ(dlpx_st_header_table(NULL), NULL);
  ASSERT_OK(parse("{\"b\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[8,32]},"
                  "\"a\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
                  "\"\u00fc\":{\"dtype\":\"BF16\",\"shape\":[0,4],\"data_offsets\":[32,32]}}",
                  32, &h));
  t = dlpx_st_header_table(h);
  ASSERT_EQ(t->count, 3);
  const char *name = t->names;
  size_t dims = 0;
  for (size_t i = 0; i < 3; i++) {
    const dlpx_st_entry *e = dlpx_st_header_entry(h, i);
    ASSERT_TRUE(strcmp(name, e->name) == 0);
    name += strlen(name) + 1;
    ASSERT_EQ(t->dtypes[i], (uint32_t)e->dtype.code | (uint32_t)e->dtype.bits << 8 |
                                (uint32_t)e->dtype.lanes << 16);
    ASSERT_EQ(t->ndims[i], e->ndim);
    for (int32_t d = 0; d < e->ndim; d++) ASSERT_EQ(t->shapes[dims + (size_t)d], e->shape[d]);
    dims += (size_t)e->ndim;
    ASSERT_EQ(t->begins[i], e->begin);
    ASSERT_EQ(t->ends[i], e->end);
  }
  ASSERT_EQ((size_t)(name - t->names), t->names_len);
  ASSERT_TRUE(strcmp(t->names, "a") == 0); /* data order */
  ASSERT_EQ(t->dtypes[0], (uint32_t)kDLInt | 64u << 8 | 1u << 16);
  ASSERT_EQ(dims, 4);
  dlpx_st_header_free(h);
}

static void test_header_rejections(void) {
  check_live l;
  check_live_begin(&l);
  static const bad_header cases[] = {
      /* the start, the JSON */
      {"", 0, DLPX_EFORMAT, "start with '{'"},
      {" {}", 0, DLPX_EFORMAT, "start with '{'"},
      {"[]", 0, DLPX_EFORMAT, "start with '{'"},
      {"\"{}\"", 0, DLPX_EFORMAT, "start with '{'"},
      {"{", 0, DLPX_EFORMAT, "not valid JSON"},
      {"{}x", 0, DLPX_EFORMAT, "not valid JSON"},
      {"{} {}", 0, DLPX_EFORMAT, "not valid JSON"},
      {"{\"a\":}", 0, DLPX_EFORMAT, "not valid JSON"},
      {"{'a':1}", 0, DLPX_EFORMAT, "not valid JSON"},
      {"{\"\xff\":" "{" E("U8", "[1]", "0", "1") "}}", 1, DLPX_EFORMAT, "not valid JSON"},
      /* duplicate keys, at any level */
      {"{" T("a", E("U8", "[1]", "0", "1")) "," T("a", E("U8", "[1]", "1", "2")) "}", 2, DLPX_EFORMAT,
       "duplicate"},
      {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, DLPX_EFORMAT, "duplicate"},
      {"{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, DLPX_EFORMAT, "duplicate"},
      {"{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
       DLPX_EFORMAT, "duplicate"},
      /* dtypes */
      {"{" T("a", E("F33", "[1]", "0", "4")) "}", 4, DLPX_EDTYPE, "\"a\""},
      {"{" T("a", E("f32", "[1]", "0", "4")) "}", 4, DLPX_EDTYPE, "f32"},
      {"{" T("a", E("C128", "[1]", "0", "16")) "}", 16, DLPX_EDTYPE, NULL},
      {"{\"a\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, DLPX_EFORMAT, "\"a\""},
      /* missing fields, entries that are not objects */
      {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, DLPX_EFORMAT, "\"a\""},
      {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, DLPX_EFORMAT, "\"a\""},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, DLPX_EFORMAT, "\"a\""},
      {"{\"a\":{}}", 0, DLPX_EFORMAT, "\"a\""},
      {"{\"a\":5}", 0, DLPX_EFORMAT, "not a JSON object"},
      {"{\"a\":[]}", 0, DLPX_EFORMAT, "not a JSON object"},
      {"{\"a\":null}", 0, DLPX_EFORMAT, "not a JSON object"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4, DLPX_EFORMAT, "\"a\""},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{}}}", 4, DLPX_EFORMAT, "\"a\""},
      /* data_offsets: two non-negative integers in order */
      {"{" T("a", E("U8", "[1]", "0", "1,2")) "}", 2, DLPX_EFORMAT, "two non-negative"},
      {"{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0]}}", 0, DLPX_EFORMAT,
       "two non-negative"},
      {"{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[]}}", 0, DLPX_EFORMAT,
       "two non-negative"},
      {"{" T("a", E("U8", "[1]", "-1", "0")) "}", 0, DLPX_EFORMAT, "two non-negative"},
      {"{" T("a", E("U8", "[1]", "0", "1.0")) "}", 1, DLPX_EFORMAT, "two non-negative"},
      {"{" T("a", E("U8", "[1]", "0", "\"1\"")) "}", 1, DLPX_EFORMAT, "two non-negative"},
      {"{" T("a", E("U8", "[1]", "0", "1e0")) "}", 1, DLPX_EFORMAT, "two non-negative"},
      {"{" T("a", E("U8", "[4]", "8", "4")) "}", 8, DLPX_EFORMAT, "out of order"},
      /* shapes: non-negative integers */
      {"{" T("a", E("U8", "[-1]", "0", "0")) "}", 0, DLPX_EFORMAT, "shape[0] of tensor \"a\""},
      {"{" T("a", E("U8", "[2,-3]", "0", "0")) "}", 0, DLPX_EFORMAT, "shape[1] of tensor \"a\""},
      {"{" T("a", E("U8", "[1.0]", "0", "1")) "}", 1, DLPX_EFORMAT, "shape[0]"},
      {"{" T("a", E("U8", "[1.5]", "0", "1")) "}", 1, DLPX_EFORMAT, "shape[0]"},
      {"{" T("a", E("U8", "[\"1\"]", "0", "1")) "}", 1, DLPX_EFORMAT, "shape[0]"},
      {"{" T("a", E("U8", "[null]", "0", "1")) "}", 1, DLPX_EFORMAT, "shape[0]"},
      {"{" T("a", E("U8", "[[1]]", "0", "1")) "}", 1, DLPX_EFORMAT, "shape[0]"},
      {"{" T("a", E("U8", "[true]", "0", "1")) "}", 1, DLPX_EFORMAT, "shape[0]"},
      /* sizes that overflow int64 */
      {"{" T("a", E("F32", "[4294967296,4294967296]", "0", "0")) "}", 0, DLPX_EOVERFLOW, "\"a\""},
      {"{" T("a", E("U8", "[9223372036854775807,2]", "0", "0")) "}", 0, DLPX_EOVERFLOW, "\"a\""},
      {"{" T("a", E("F32", "[4611686018427387904]", "0", "0")) "}", 0, DLPX_EOVERFLOW, "\"a\""},
      {"{" T("a", E("U8", "[9223372036854775808]", "0", "0")) "}", 0, DLPX_EFORMAT, NULL},
      {"{" T("a", E("U8", "[18446744073709551617]", "0", "0")) "}", 0, DLPX_EFORMAT, NULL},
      {"{" T("a", E("U8", "[1]", "0", "9223372036854775808")) "}", 0, DLPX_EFORMAT, NULL},
      /* sizes that disagree with shape x dtype */
      {"{" T("a", E("F32", "[3]", "0", "8")) "}", 8, DLPX_EFORMAT, "need 12"},
      {"{" T("a", E("F32", "[3]", "0", "16")) "}", 16, DLPX_EFORMAT, "\"a\" takes 16 bytes"},
      {"{" T("a", E("F64", "[]", "0", "4")) "}", 4, DLPX_EFORMAT, "need 8"},
      {"{" T("a", E("U8", "[0]", "0", "1")) "}", 1, DLPX_EFORMAT, "need 0"},
      {"{" T("a", E("F4", "[3]", "0", "2")) "}", 2, DLPX_EFORMAT, "whole number of bytes"},
      {"{" T("a", E("F6_E2M3", "[2]", "0", "2")) "}", 2, DLPX_EFORMAT, "whole number of bytes"},
      {"{" T("a", E("F4", "[4]", "0", "4")) "}", 4, DLPX_EFORMAT, "need 2"},
      /* coverage of the data: gaps, overlaps, the end */
      {"{" T("a", E("U8", "[4]", "4", "8")) "}", 8, DLPX_EFORMAT, "gap"},
      {"{" T("a", E("U8", "[4]", "0", "4")) "," T("b", E("U8", "[4]", "8", "12")) "}", 12,
       DLPX_EFORMAT, "4 bytes before tensor \"b\""},
      {"{" T("a", E("U8", "[8]", "0", "8")) "," T("b", E("U8", "[8]", "4", "12")) "}", 12,
       DLPX_EFORMAT, "\"b\" overlaps"},
      {"{" T("a", E("U8", "[8]", "0", "8")) "," T("b", E("U8", "[8]", "0", "8")) "}", 8,
       DLPX_EFORMAT, "overlaps"},
      {"{" T("a", E("U8", "[8]", "0", "8")) "," T("e", E("U8", "[0]", "4", "4")) "}", 8,
       DLPX_EFORMAT, "\"e\" overlaps"},
      {"{" T("a", E("U8", "[8]", "0", "8")) "," T("e", E("U8", "[0]", "9", "9")) "}", 9,
       DLPX_EFORMAT, "gap"},
      {"{" T("a", E("U8", "[8]", "0", "8")) "}", 9, DLPX_EFORMAT, "the data has 9 bytes"},
      {"{" T("a", E("U8", "[8]", "0", "8")) "}", 7, DLPX_EFORMAT, "truncated"},
      {"{" T("a", E("U8", "[8]", "0", "8")) "}", 0, DLPX_EFORMAT, "truncated"},
      {"{}", 1, DLPX_EFORMAT, "the data has 1 bytes"},
      {"{\"__metadata__\":{}}", 4, DLPX_EFORMAT, "the data has 4 bytes"},
      /* metadata: an object of strings */
      {"{\"__metadata__\":{\"a\":1}}", 0, DLPX_EFORMAT, "value of \"a\" is not a string"},
      {"{\"__metadata__\":{\"a\":null}}", 0, DLPX_EFORMAT, "value of \"a\""},
      {"{\"__metadata__\":{\"a\":{\"b\":\"c\"}}}", 0, DLPX_EFORMAT, "value of \"a\""},
      {"{\"__metadata__\":{\"a\":[\"b\"]}}", 0, DLPX_EFORMAT, "value of \"a\""},
      {"{\"__metadata__\":{\"a\":true}}", 0, DLPX_EFORMAT, "value of \"a\""},
      {"{\"__metadata__\":\"x\"}", 0, DLPX_EFORMAT, "__metadata__ is not"},
      {"{\"__metadata__\":[]}", 0, DLPX_EFORMAT, "__metadata__ is not"},
      {"{\"__metadata__\":5}", 0, DLPX_EFORMAT, "__metadata__ is not"},
      /* NUL bytes in names and values */
      {"{\"a\\u0000b\":{" E("U8", "[1]", "0", "1") "}}", 1, DLPX_EFORMAT, NULL},
      {"{\"__metadata__\":{\"k\\u0000\":\"v\"}}", 0, DLPX_EFORMAT, NULL},
      {"{\"__metadata__\":{\"k\":\"v\\u0000w\"}}", 0, DLPX_EFORMAT, NULL},
      /* dlpx checksums that are malformed */
      {"{\"__metadata__\":{\"dlpx.checksums\":\"nope\"}}", 0, DLPX_EFORMAT, "not JSON"},
      {"{\"__metadata__\":{\"dlpx.checksums\":\"[]\"}}", 0, DLPX_EFORMAT, "it needs"},
      {"{\"__metadata__\":{\"dlpx.checksums\":"
       "\"{\\\"algorithm\\\":\\\"xxh3-64\\\",\\\"chunk\\\":4096}\"}}",
       0, DLPX_EFORMAT, "it needs"},
      {"{\"__metadata__\":{\"dlpx.checksums\":"
       "\"{\\\"algorithm\\\":\\\"xxh3-64\\\",\\\"chunk\\\":100,\\\"tensors\\\":{}}\"}}",
       0, DLPX_EFORMAT, "chunk size"},
      {"{\"__metadata__\":{\"dlpx.checksums\":"
       "\"{\\\"algorithm\\\":\\\"xxh3-64\\\",\\\"chunk\\\":4096,"
       "\\\"tensors\\\":{\\\"x\\\":\\\"\\\"}}\"}}",
       0, DLPX_EFORMAT, "a checksum for no tensor (tensor \"x\")"},
      {"{\"__metadata__\":{\"dlpx.checksums\":"
       "\"{\\\"algorithm\\\":\\\"xxh3-64\\\",\\\"chunk\\\":4096,"
       "\\\"tensors\\\":{\\\"a\\\":\\\"00\\\"}}\"},"
       T("a", E("U8", "[1]", "0", "1")) "}",
       1, DLPX_EFORMAT, "wrong number"},
      {"{\"__metadata__\":{\"dlpx.checksums\":"
       "\"{\\\"algorithm\\\":\\\"xxh3-64\\\",\\\"chunk\\\":4096,\\\"tensors\\\":"
       "{\\\"a\\\":\\\"00000000000000AB\\\"}}\"}," T("a", E("U8", "[1]", "0", "1")) "}",
       1, DLPX_EFORMAT, "hexadecimal"},
      {"{\"__metadata__\":{\"dlpx.checksums\":"
       "\"{\\\"algorithm\\\":\\\"xxh3-64\\\",\\\"chunk\\\":4096,\\\"tensors\\\":"
       "{\\\"a\\\":7}}\"}," T("a", E("U8", "[1]", "0", "1")) "}",
       1, DLPX_EFORMAT, "not a string"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    dlpx_st_header *h = NULL;
    int rc = parse(cases[i].json, cases[i].data_len, &h);
    if (rc != cases[i].code || h != NULL ||
        (cases[i].msg && !strstr(dlpx_last_error(), cases[i].msg))) {
      CHECK_FAIL_("case %zu %s: returned %s: \"%s\" (expected %s, \"%s\")", i, cases[i].json,
                  dlpx_error_name(rc), dlpx_last_error(), dlpx_error_name(cases[i].code),
                  cases[i].msg ? cases[i].msg : "");
      dlpx_st_header_free(h);
    }
  }
  /* Padding with NUL bytes instead of spaces, and a NUL inside. */
  dlpx_st_header *hn = NULL;
  ASSERT_RC(DLPX_EFORMAT, dlpx_st_header_parse("{}\0\0\0\0\0\0", 8, 0, &hn));
  ASSERT_RC(DLPX_EFORMAT, dlpx_st_header_parse("{\0}", 3, 0, &hn));
  ASSERT_PTR_EQ(hn, NULL);
  /* 129 dimensions. */
  char big[2048];
  size_t at = (size_t)snprintf(big, sizeof big, "{\"d\":{\"dtype\":\"U8\",\"shape\":[");
  for (int i = 0; i <= DLPX_MAX_NDIM; i++)
    at += (size_t)snprintf(big + at, sizeof big - at, "%s1", i ? "," : "");
  snprintf(big + at, sizeof big - at, "],\"data_offsets\":[0,1]}}");
  dlpx_st_header *h = NULL;
  ASSERT_RC(DLPX_EFORMAT, parse(big, 1, &h));
  ASSERT_MSG("129 dimensions");
  /* A header over the limit is refused before it is read. */
  char *huge = calloc((size_t)DLPX_ST_HEADER_MAX + 1, 1);
  ASSERT_TRUE(huge != NULL);
  huge[0] = '{';
  huge[1] = '}';
  ASSERT_RC(DLPX_EFORMAT, dlpx_st_header_parse(huge, (size_t)DLPX_ST_HEADER_MAX + 1, 0, &h));
  ASSERT_MSG("at most");
  if (!under_valgrind()) { /* ... and one exactly at the limit is fine */
    memset(huge + 2, ' ', (size_t)DLPX_ST_HEADER_MAX - 2);
    ASSERT_OK(dlpx_st_header_parse(huge, (size_t)DLPX_ST_HEADER_MAX, 0, &h));
    dlpx_st_header_free(h);
  }
  free(huge);
  /* An algorithm this version does not know: read as without checksums. */
  ASSERT_OK(parse("{\"__metadata__\":{\"dlpx.checksums\":"
                  "\"{\\\"algorithm\\\":\\\"xxh9\\\",\\\"chunk\\\":4096,"
                  "\\\"tensors\\\":{\\\"a\\\":7}}\"},"
                  T("a", E("U8", "[1]", "0", "1")) "}",
                  1, &h));
  ASSERT_EQ(dlpx_st_header_checksums(h, 0, NULL, NULL, NULL), 0);
  dlpx_st_header_free(h);
  ASSERT_NO_LEAKS(&l);
}

static void test_xxh3(void) {
  check_live l;
  check_live_begin(&l);
  /* The published XXH3-64 of the empty input (seed 0). */
  ASSERT_EQ(dlpx_xxh3("", 0), 0x2D06800538D394C2ull);
  ASSERT_EQ(dlpx_xxh3(NULL, 0), 0x2D06800538D394C2ull);
  unsigned char buf[300];
  for (int i = 0; i < 300; i++) buf[i] = (unsigned char)i;
  /* Deterministic and sensitive to every byte and to the length. */
  uint64_t h = dlpx_xxh3(buf, sizeof buf);
  ASSERT_EQ(dlpx_xxh3(buf, sizeof buf), h);
  ASSERT_NE(dlpx_xxh3(buf, sizeof buf - 1), h);
  buf[150] ^= 1;
  ASSERT_NE(dlpx_xxh3(buf, sizeof buf), h);
  ASSERT_NO_LEAKS(&l);
}

/* ---- saving and loading -------------------------------------------------------- */

static void test_roundtrip_dtypes(void) {
  check_live l;
  check_live_begin(&l);
  static const char *dtypes[] = {"bool", "uint8", "int8", "int16", "uint16", "float16",
                                 "bfloat16", "int32", "uint32", "float32", "float64", "int64",
                                 "uint64", "float8_e5m2", "float8_e4m3fn", "float8_e8m0fnu",
                                 "float8_e4m3fnuz", "float8_e5m2fnuz", "complex64"};
  static const int64_t shapes[][3] = {{0, 0, 0}, {7, 0, 0}, {3, 5, 0}, {2, 3, 4}, {0, 0, 0}, {4, 0, 3}};
  static const int32_t ndims[] = {0, 1, 2, 3, 1, 3};
  enum { ND = sizeof dtypes / sizeof dtypes[0], NS = sizeof ndims / sizeof ndims[0] };
  const char *path = tpath("dtypes.safetensors");
  for (size_t s = 0; s < NS; s++) {
    dlpx_tensor *ts[ND] = {NULL};
    char names[ND][32];
    const char *np[ND];
    for (size_t d = 0; d < ND; d++) {
      ts[d] = filled(dtypes[d], ndims[s], shapes[s], (unsigned)(d * 10 + s));
      ASSERT_TRUE(ts[d] != NULL);
      snprintf(names[d], sizeof names[d], "t.%s", dtypes[d]);
      np[d] = names[d];
    }
    ASSERT_OK(dlpx_save_file(path, ND, np, (const dlpx_tensor *const *)ts, 0, NULL, NULL, NOSYNC));
    dlpx_file *f = NULL;
    ASSERT_OK(dlpx_file_open(path, 0, &f));
    ASSERT_EQ(dlpx_st_header_count(dlpx_file_header(f)), ND);
    ASSERT_EQ(dlpx_file_data_offset(f) % 8, 0);
    for (size_t d = 0; d < ND; d++) {
      size_t i = find(f, np[d]);
      ASSERT_TRUE(i != SIZE_MAX);
      const dlpx_st_entry *e = dlpx_st_header_entry(dlpx_file_header(f), i);
      ASSERT_EQ(e->ndim, ndims[s]);
      for (int32_t k = 0; k < e->ndim; k++) ASSERT_EQ(e->shape[k], shapes[s][k]);
      ASSERT_EQ(e->end - e->begin, (uint64_t)dlpx_tensor_nbytes(ts[d]));
      dlpx_tensor *r = NULL, *m = NULL;
      ASSERT_OK(dlpx_file_read(f, i, 0, &r));
      ASSERT_TRUE(same_elements(r, ts[d]));
      ASSERT_EQ((uintptr_t)dlpx_tensor_data(r) % 64, 0);
      ASSERT_EQ(dlpx_tensor_is_readonly(r), 0);
      ASSERT_TRUE(dlpx_tensor_is_c_contiguous(r));
      ASSERT_OK(dlpx_file_map(f, i, 0, &m));
      ASSERT_TRUE(same_elements(m, ts[d]));
      ASSERT_EQ(dlpx_tensor_is_readonly(m), 1);
      ASSERT_EQ(dlpx_storage_kind_of(dlpx_tensor_storage(m)), DLPX_STORAGE_MAPPED);
      dlpx_tensor_free(r);
      dlpx_tensor_free(m);
    }
    dlpx_file_close(f);
    for (size_t d = 0; d < ND; d++) dlpx_tensor_free(ts[d]);
  }
  ASSERT_NO_LEAKS(&l);
}

/* Saves |view| alone, reads it back and compares with a C copy of it, also
 * byte for byte in the file. */
static int roundtrip_view(const dlpx_tensor *view, const char *name) {
  static char path[4400];
  snprintf(path, sizeof path, "%s/view.safetensors", g_dir);
  int rc = save1(path, name, view, NOSYNC | DLPX_SAVE_CHECKSUMS);
  if (rc) return rc;
  dlpx_file *f = NULL;
  if ((rc = dlpx_file_open(path, 0, &f))) return rc;
  dlpx_tensor *r = NULL, *c = NULL;
  rc = dlpx_file_read(f, 0, DLPX_READ_VERIFY, &r);
  if (!rc) rc = same_elements(r, view) ? 0 : DLPX_ESTATE;
  if (!rc) rc = dlpx_tensor_copy(view, 'C', &c);
  if (!rc) {
    size_t len;
    unsigned char *all = read_all(path, &len);
    uint64_t off = dlpx_file_data_offset(f);
    if (!all || len != off + (size_t)dlpx_tensor_nbytes(c) ||
        memcmp(all + off, dlpx_tensor_data(c), (size_t)dlpx_tensor_nbytes(c)) != 0)
      rc = DLPX_ESTATE;
    free(all);
  }
  dlpx_tensor_free(c);
  dlpx_tensor_free(r);
  dlpx_file_close(f);
  return rc;
}

static void test_roundtrip_noncontiguous(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {6, 10};
  const char *types[] = {"int32", "float64", "uint8", "bfloat16", "complex64"};
  for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
    dlpx_tensor *a = filled(types[k], 2, shape, (unsigned)k), *v = NULL, *w = NULL;
    ASSERT_TRUE(a != NULL);
    /* transposed */
    ASSERT_OK(dlpx_tensor_transpose(a, &v));
    ASSERT_OK(roundtrip_view(v, "transposed"));
    dlpx_tensor_free(v);
    /* sliced with steps */
    dlpx_index steps[] = {{DLPX_INDEX_SLICE, 1, 6, 2}, {DLPX_INDEX_SLICE, DLPX_NONE, DLPX_NONE, 3}};
    ASSERT_OK(dlpx_tensor_index(a, 2, steps, &v));
    ASSERT_EQ(dlpx_tensor_shape(v)[0], 3);
    ASSERT_EQ(dlpx_tensor_shape(v)[1], 4);
    ASSERT_OK(roundtrip_view(v, "steps"));
    dlpx_tensor_free(v);
    /* negative strides */
    dlpx_index neg[] = {{DLPX_INDEX_SLICE, DLPX_NONE, DLPX_NONE, -1},
                        {DLPX_INDEX_SLICE, DLPX_NONE, DLPX_NONE, -2}};
    ASSERT_OK(dlpx_tensor_index(a, 2, neg, &v));
    ASSERT_TRUE(dlpx_tensor_strides(v)[0] < 0);
    ASSERT_OK(roundtrip_view(v, "negative"));
    /* transposed and reversed */
    ASSERT_OK(dlpx_tensor_transpose(v, &w));
    ASSERT_OK(roundtrip_view(w, "both"));
    dlpx_tensor_free(w);
    dlpx_tensor_free(v);
    /* a row, a column, one element (0-d) */
    ASSERT_OK(dlpx_tensor_select(a, 1, 3, &v));
    ASSERT_OK(roundtrip_view(v, "column"));
    dlpx_tensor_free(v);
    dlpx_index one[] = {{DLPX_INDEX_INT, 4, 0, 0}, {DLPX_INDEX_INT, 7, 0, 0}};
    ASSERT_OK(dlpx_tensor_index(a, 2, one, &v));
    ASSERT_EQ(dlpx_tensor_ndim(v), 0);
    ASSERT_OK(roundtrip_view(v, "scalar"));
    dlpx_tensor_free(v);
    /* broadcast (stride 0) */
    int64_t to[] = {3, 6, 10};
    ASSERT_OK(dlpx_tensor_broadcast_to(a, 3, to, &v));
    ASSERT_OK(roundtrip_view(v, "broadcast"));
    dlpx_tensor_free(v);
    /* an empty slice of a strided view */
    ASSERT_OK(dlpx_tensor_slice(a, 1, 4, 4, 1, &v));
    ASSERT_OK(roundtrip_view(v, "empty"));
    dlpx_tensor_free(v);
    dlpx_tensor_free(a);
  }
  /* 3-D permuted, and a strided view bigger than the staging buffer. */
  int64_t s3[] = {5, 6, 7};
  dlpx_tensor *b = filled("int16", 3, s3, 77), *v = NULL;
  int32_t axes[] = {2, 0, 1};
  ASSERT_OK(dlpx_tensor_permute(b, 3, axes, &v));
  ASSERT_OK(roundtrip_view(v, "permuted"));
  dlpx_tensor_free(v);
  dlpx_tensor_free(b);
  int64_t sbig[] = {1100, 2100}; /* 9.2 MB of float32 */
  b = filled("float32", 2, sbig, 78);
  ASSERT_OK(dlpx_tensor_transpose(b, &v));
  ASSERT_OK(roundtrip_view(v, "big"));
  dlpx_tensor_free(v);
  dlpx_tensor_free(b);
  ASSERT_NO_LEAKS(&l);
}

/* Packed sub-byte tensors: F4 (float4_e2m1fn, two per byte) and F6. */
static void test_roundtrip_subbyte(void) {
  check_live l;
  check_live_begin(&l);
  int64_t s46[] = {4, 6};
  dlpx_tensor *a = filled("float4_e2m1fn", 2, s46, 5), *v = NULL;
  ASSERT_TRUE(a != NULL);
  ASSERT_EQ(dlpx_tensor_nbytes(a), 12);
  const char *path = tpath("f4.safetensors");
  ASSERT_OK(save1(path, "w", a, NOSYNC));
  /* The bytes are stored as they are: packed, two elements a byte. */
  size_t len;
  unsigned char *all = read_all(path, &len);
  ASSERT_TRUE(all != NULL);
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = n << 8 | all[i];
  ASSERT_EQ(len, 8 + n + 12);
  ASSERT_EQ(memcmp(all + 8 + n, dlpx_tensor_data(a), 12), 0);
  free(all);
  uint64_t hn;
  char *text = header_text(path, &hn);
  ASSERT_TRUE(text != NULL);
  const char *wj = "{\"w\":{\"dtype\":\"F4\",\"shape\":[4,6],\"data_offsets\":[0,12]}}";
  ASSERT_TRUE(strstr(text, wj) == text);
  free(text);
  dlpx_file *f = NULL;
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  dlpx_tensor *r = NULL;
  ASSERT_OK(dlpx_file_read(f, 0, 0, &r));
  ASSERT_EQ(dlpx_tensor_dtype(r).code, kDLFloat4_e2m1fn);
  ASSERT_EQ(dlpx_tensor_nbytes(r), 12);
  ASSERT_EQ(memcmp(dlpx_tensor_data(r), dlpx_tensor_data(a), 12), 0);
  dlpx_tensor_free(r);
  ASSERT_OK(dlpx_file_map(f, 0, 0, &r));
  ASSERT_EQ(memcmp(dlpx_tensor_data(r), dlpx_tensor_data(a), 12), 0);
  dlpx_tensor_free(r);
  /* Into a strided packed destination: every other row of a [8, 6]. */
  int64_t s86[] = {8, 6};
  dlpx_tensor *big = NULL, *dst = NULL;
  ASSERT_OK(dlpx_tensor_zeros(dt("float4_e2m1fn"), 2, s86, &big));
  ASSERT_OK(dlpx_tensor_slice(big, 0, 0, 8, 2, &dst));
  ASSERT_OK(dlpx_file_read_into(f, 0, dst, 0));
  ASSERT_TRUE(same_elements(dst, a));
  const unsigned char *bp = dlpx_tensor_data(big);
  for (int row = 1; row < 8; row += 2)
    for (int b = 0; b < 3; b++) ASSERT_EQ(bp[row * 3 + b], 0);
  dlpx_tensor_free(dst);
  dlpx_tensor_free(big);
  /* A padded destination is a different layout: refused. */
  ASSERT_OK(dlpx_tensor_new(dt("float4_e2m1fn"), 2, s46, DLPX_TENSOR_SUBBYTE_PADDED, 1, &dst));
  ASSERT_RC(DLPX_EDTYPE, dlpx_file_read_into(f, 0, dst, 0));
  ASSERT_MSG("padded");
  dlpx_tensor_free(dst);
  /* Slices that select whole bytes, and one that splits them. */
  dlpx_index rows[] = {{DLPX_INDEX_SLICE, 1, 3, 1}};
  dlpx_index pairs[] = {{DLPX_INDEX_SLICE, DLPX_NONE, DLPX_NONE, 1}, {DLPX_INDEX_SLICE, 2, 4, 1}};
  dlpx_index rowstep[] = {{DLPX_INDEX_SLICE, 3, DLPX_NONE, -2}};
  dlpx_index row[] = {{DLPX_INDEX_INT, -1, 0, 0}};
  const dlpx_index *ok_items[] = {rows, pairs, rowstep, row};
  const int32_t ok_n[] = {1, 2, 1, 1};
  for (size_t i = 0; i < 4; i++) {
    dlpx_tensor *ref = NULL;
    ASSERT_OK(dlpx_tensor_index(a, ok_n[i], ok_items[i], &ref));
    ASSERT_OK(dlpx_file_read_slice(f, 0, ok_n[i], ok_items[i], 0, &r));
    ASSERT_TRUE(same_elements(r, ref));
    dlpx_tensor_free(r);
    dlpx_tensor_free(ref);
  }
  dlpx_index col[] = {{DLPX_INDEX_SLICE, DLPX_NONE, DLPX_NONE, 1}, {DLPX_INDEX_SLICE, 0, 1, 1}};
  ASSERT_RC(DLPX_ENOTSUP, dlpx_file_read_slice(f, 0, 2, col, 0, &r));
  ASSERT_MSG("whole bytes");
  dlpx_index every2[] = {{DLPX_INDEX_SLICE, DLPX_NONE, DLPX_NONE, 1},
                         {DLPX_INDEX_SLICE, DLPX_NONE, DLPX_NONE, 2}};
  ASSERT_RC(DLPX_ENOTSUP, dlpx_file_read_slice(f, 0, 2, every2, 0, &r));
  dlpx_index odd[] = {{DLPX_INDEX_SLICE, DLPX_NONE, DLPX_NONE, 1}, {DLPX_INDEX_SLICE, 1, 3, 1}};
  ASSERT_RC(DLPX_ELAYOUT, dlpx_file_read_slice(f, 0, 2, odd, 0, &r)); /* starts mid-byte */
  dlpx_index elem[] = {{DLPX_INDEX_INT, 0, 0, 0}, {DLPX_INDEX_INT, 0, 0, 0}};
  ASSERT_RC(DLPX_ENOTSUP, dlpx_file_read_slice(f, 0, 2, elem, 0, &r));
  ASSERT_PTR_EQ(r, NULL);
  dlpx_file_close(f);

  /* Non-contiguous packed sources: transposed, and rows of 1.5 bytes. */
  ASSERT_OK(dlpx_tensor_transpose(a, &v));
  ASSERT_OK(roundtrip_view(v, "t"));
  dlpx_tensor_free(v);
  int64_t s32[] = {3, 2};
  dlpx_tensor *c = filled("float4_e2m1fn", 2, s32, 6);
  ASSERT_OK(dlpx_tensor_transpose(c, &v)); /* [2, 3]: rows of 3 elements */
  ASSERT_OK(roundtrip_view(v, "t23"));
  dlpx_tensor_free(v);
  dlpx_tensor_free(c);
  ASSERT_OK(dlpx_tensor_slice(a, 1, 0, 3, 1, &v)); /* [4, 3] of a [4, 6] */
  ASSERT_OK(roundtrip_view(v, "s43"));
  dlpx_tensor_free(v);
  ASSERT_OK(dlpx_tensor_slice(a, 0, 3, DLPX_NONE, -1, &v)); /* rows reversed */
  ASSERT_OK(roundtrip_view(v, "rev"));
  dlpx_tensor_free(v);
  /* F6: 4 elements are 3 bytes; a column of 4 F6 rows is 3 bytes too. */
  int64_t s44[] = {4, 4};
  dlpx_tensor *six = filled("float6_e2m3fn", 2, s44, 9);
  ASSERT_EQ(dlpx_tensor_nbytes(six), 12);
  ASSERT_OK(roundtrip_view(six, "f6"));
  ASSERT_OK(dlpx_tensor_slice(six, 1, 0, 2, 1, &v)); /* [4, 2]: rows of 12 bits */
  ASSERT_OK(roundtrip_view(v, "f6a"));
  dlpx_tensor_free(v);
  ASSERT_OK(dlpx_tensor_slice(six, 1, 0, 1, 1, &v)); /* [4, 1]: rows of 6 bits */
  ASSERT_OK(roundtrip_view(v, "f6b"));
  dlpx_tensor_free(v);
  ASSERT_OK(dlpx_tensor_transpose(six, &v));
  ASSERT_OK(roundtrip_view(v, "f6t"));
  dlpx_tensor_free(v);
  dlpx_tensor_free(six);
  /* A strided read into packed rows of 1.5 bytes: a [4, 3] read into the
   * first 3 columns of a [4, 4]. */
  int64_t s43[] = {4, 3};
  c = filled("float4_e2m1fn", 2, s43, 10);
  ASSERT_OK(save1(path, "c", c, NOSYNC | DLPX_SAVE_CHECKSUMS));
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  int64_t s44b[] = {4, 4};
  ASSERT_OK(dlpx_tensor_zeros(dt("float4_e2m1fn"), 2, s44b, &big));
  ASSERT_OK(dlpx_tensor_slice(big, 1, 0, 3, 1, &dst));
  ASSERT_OK(dlpx_file_read_into(f, 0, dst, DLPX_READ_VERIFY));
  ASSERT_TRUE(same_elements(dst, c));
  dlpx_tensor_free(dst);
  dlpx_tensor_free(big);
  dlpx_file_close(f);
  dlpx_tensor_free(c);

  /* A padded source is saved packed. */
  dlpx_tensor *p = NULL;
  ASSERT_OK(dlpx_tensor_new(dt("float4_e2m1fn"), 2, s46, DLPX_TENSOR_SUBBYTE_PADDED, 1, &p));
  ASSERT_OK(dlpx_tensor_copy_into(p, a));
  ASSERT_OK(save1(path, "p", p, NOSYNC));
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  ASSERT_EQ(dlpx_st_header_entry(dlpx_file_header(f), 0)->end, 12);
  ASSERT_OK(dlpx_file_read(f, 0, 0, &r));
  ASSERT_EQ(memcmp(dlpx_tensor_data(r), dlpx_tensor_data(a), 12), 0);
  dlpx_tensor_free(r);
  dlpx_file_close(f);
  int64_t s23[] = {2, 3};
  dlpx_tensor *p23 = NULL;
  c = filled("float4_e2m1fn", 2, s23, 11);
  ASSERT_OK(dlpx_tensor_new(dt("float4_e2m1fn"), 2, s23, DLPX_TENSOR_SUBBYTE_PADDED, 1, &p23));
  ASSERT_OK(dlpx_tensor_copy_into(p23, c));
  ASSERT_OK(save1(path, "p23", p23, NOSYNC | DLPX_SAVE_CHECKSUMS));
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  ASSERT_OK(dlpx_file_read(f, 0, DLPX_READ_VERIFY, &r));
  ASSERT_EQ(dlpx_tensor_nbytes(r), 3);
  ASSERT_EQ(memcmp(dlpx_tensor_data(r), dlpx_tensor_data(c), 3), 0);
  dlpx_tensor_free(r);
  dlpx_file_close(f);
  dlpx_tensor_free(p23);
  dlpx_tensor_free(c);
  dlpx_tensor_free(p);

  /* Sizes that are not whole bytes cannot be saved. */
  int64_t s3[] = {3};
  c = filled("float4_e2m1fn", 1, s3, 12);
  ASSERT_RC(DLPX_EINVAL, save1(path, "odd", c, NOSYNC));
  ASSERT_MSG("whole number of bytes");
  dlpx_tensor_free(c);
  dlpx_tensor_free(a);
  ASSERT_NO_LEAKS(&l);
}

/* The reference writer's layout, byte for byte: an 8-byte length, the JSON
 * (metadata first, then the tensors by dtype rank, highest first, then by
 * name), spaces up to a multiple of 8, the data in the same order. */
static void test_reference_layout(void) {
  check_live l;
  check_live_begin(&l);
  const char *path = tpath("layout.safetensors");
  /* The reference package's own examples. */
  int64_t s123[] = {1, 2, 3}, s1123[] = {1, 1, 2, 3};
  dlpx_tensor *a = NULL, *b = NULL;
  ASSERT_OK(dlpx_tensor_empty(dt("float32"), 3, s123, &a));
  for (int i = 0; i < 6; i++) ((float *)dlpx_tensor_data(a))[i] = (float)i;
  ASSERT_OK(dlpx_tensor_reshape(a, 4, s1123, &b));
  ASSERT_OK(save1(path, "attn.0", a, NOSYNC));
  size_t len;
  unsigned char *all = read_all(path, &len);
  const char *j1 = "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}";
  ASSERT_EQ(strlen(j1), 64);
  ASSERT_EQ(len, 8 + 64 + 24);
  ASSERT_EQ(all[0], 64);
  for (int i = 1; i < 8; i++) ASSERT_EQ(all[i], 0);
  ASSERT_EQ(memcmp(all + 8, j1, 64), 0);
  ASSERT_EQ(memcmp(all + 72, dlpx_tensor_data(a), 24), 0);
  static const unsigned char f32_1[] = {0, 0, 0x80, 0x3f};
  ASSERT_EQ(memcmp(all + 76, f32_1, 4), 0); /* 1.0f, little-endian */
  free(all);
  ASSERT_OK(save1(path, "attn0", b, NOSYNC));
  all = read_all(path, &len);
  const char *j2 = "{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}       ";
  ASSERT_EQ(strlen(j2), 72);
  ASSERT_EQ(len, 8 + 72 + 24);
  ASSERT_EQ(all[0], 72);
  ASSERT_EQ(memcmp(all + 8, j2, 72), 0);
  free(all);
  dlpx_tensor_free(b);
  dlpx_tensor_free(a);
  ASSERT_OK(dlpx_save_file(path, 0, NULL, NULL, 0, NULL, NULL, NOSYNC));
  all = read_all(path, &len);
  static const unsigned char empty[] = {8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
  ASSERT_EQ(len, sizeof empty);
  ASSERT_EQ(memcmp(all, empty, sizeof empty), 0);
  free(all);
  const char *k[] = {"framework"}, *v[] = {"pt"};
  ASSERT_OK(dlpx_save_file(path, 0, NULL, NULL, 1, k, v, NOSYNC));
  all = read_all(path, &len);
  const char *j3 = "{\"__metadata__\":{\"framework\":\"pt\"}}     ";
  ASSERT_EQ(len, 8 + 40);
  ASSERT_EQ(all[0], 40);
  ASSERT_EQ(memcmp(all + 8, j3, 40), 0);
  free(all);

  /* Many dtypes and names: the order of the header and of the data. */
  struct {
    const char *name, *dtype;
    int32_t ndim;
    int64_t shape[2];
  } spec[] = {
      {"b", "float32", 1, {2, 0}},   {"a", "float32", 1, {1, 0}},      {"z", "uint8", 1, {3, 0}},
      {"c", "float64", 1, {1, 0}},   {"m", "int64", 0, {0, 0}},        {"k", "bool", 1, {2, 0}},
      {"f4", "float4_e2m1fn", 1, {2, 0}}, {"B", "float32", 2, {0, 5}}, {"u", "uint64", 1, {1, 0}},
      {"h", "bfloat16", 1, {1, 0}},  {"g", "float16", 1, {1, 0}},      {"x", "complex64", 1, {1, 0}},
      {"e", "float8_e4m3fn", 1, {1, 0}}, {"d", "float8_e5m2", 1, {1, 0}}, {"i", "int8", 1, {1, 0}},
  };
  enum { NSPEC = sizeof spec / sizeof spec[0] };
  dlpx_tensor *ts[NSPEC];
  const char *names[NSPEC];
  for (size_t i = 0; i < NSPEC; i++) {
    ts[i] = filled(spec[i].dtype, spec[i].ndim, spec[i].shape, (unsigned)i);
    ASSERT_TRUE(ts[i] != NULL);
    names[i] = spec[i].name;
  }
  const char *mk[] = {"zeta", "alpha"}, *mv[] = {"1", "two \"quoted\"\n"};
  ASSERT_OK(dlpx_save_file(path, NSPEC, names, (const dlpx_tensor *const *)ts, 2, mk, mv, NOSYNC));
  const char *want =
      "{\"__metadata__\":{\"zeta\":\"1\",\"alpha\":\"two \\\"quoted\\\"\\n\"},"
      "\"u\":{\"dtype\":\"U64\",\"shape\":[1],\"data_offsets\":[0,8]},"
      "\"m\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]},"
      "\"c\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[16,24]},"
      "\"x\":{\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[24,32]},"
      "\"B\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[32,32]},"
      "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32,36]},"
      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[36,44]},"
      "\"h\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[44,46]},"
      "\"g\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[46,48]},"
      "\"e\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[48,49]},"
      "\"d\":{\"dtype\":\"F8_E5M2\",\"shape\":[1],\"data_offsets\":[49,50]},"
      "\"i\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[50,51]},"
      "\"z\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[51,54]},"
      "\"f4\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[54,55]},"
      "\"k\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[55,57]}}";
  uint64_t n;
  char *text = header_text(path, &n);
  ASSERT_TRUE(text != NULL);
  size_t wl = strlen(want);
  ASSERT_EQ(n % 8, 0);
  ASSERT_EQ(n, (wl + 7) / 8 * 8);
  if (strncmp(text, want, wl) != 0) CHECK_FAIL_("header\n%s\nexpected\n%s", text, want);
  for (size_t i = wl; i < n; i++) ASSERT_EQ(text[i], ' ');
  free(text);
  all = read_all(path, &len);
  ASSERT_EQ(len, 8 + n + 57);
  const char *data_order[] = {"u", "m", "c", "x", "B", "a", "b", "h",
                              "g", "e", "d", "i", "z", "f4", "k"};
  size_t at = 8 + (size_t)n;
  for (size_t o = 0; o < NSPEC; o++)
    for (size_t i = 0; i < NSPEC; i++)
      if (!strcmp(spec[i].name, data_order[o])) {
        size_t nb = (size_t)dlpx_tensor_nbytes(ts[i]);
        ASSERT_EQ(memcmp(all + at, dlpx_tensor_data(ts[i]), nb), 0);
        at += nb;
      }
  ASSERT_EQ(at, len);
  free(all);
  /* Read back through the API: names, metadata, data. */
  dlpx_file *f = NULL;
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  const dlpx_st_header *h = dlpx_file_header(f);
  ASSERT_EQ(dlpx_file_data_offset(f), 8 + n);
  ASSERT_EQ(dlpx_st_header_count(h), NSPEC);
  ASSERT_EQ(dlpx_st_header_metadata_count(h), 2);
  for (size_t i = 0; i < 2; i++) {
    const char *key, *val;
    ASSERT_OK(dlpx_st_header_metadata(h, i, &key, &val));
    ASSERT_STR_EQ(val, !strcmp(key, "zeta") ? "1" : "two \"quoted\"\n");
  }
  for (size_t i = 0; i < NSPEC; i++) {
    dlpx_tensor *r = NULL;
    ASSERT_OK(dlpx_file_read(f, find(f, spec[i].name), 0, &r));
    ASSERT_TRUE(same_elements(r, ts[i]));
    dlpx_tensor_free(r);
  }
  dlpx_file_close(f);
  for (size_t i = 0; i < NSPEC; i++) dlpx_tensor_free(ts[i]);
  ASSERT_NO_LEAKS(&l);
}

/* A file of another writer: entries in name order, offsets in another
 * order, a header length that is no multiple of 8. */
static void test_foreign_file(void) {
  check_live l;
  check_live_begin(&l);
  const char *path = tpath("foreign.safetensors");
  unsigned char data[20];
  for (int i = 0; i < 20; i++) data[i] = (unsigned char)(100 + i);
  const char *json = "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[16,20]},"
                     "\"b\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";
  ASSERT_NE(strlen(json) % 8, 0);
  ASSERT_OK(write_st(path, json, data, 20));
  dlpx_file *f = NULL;
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  const dlpx_st_header *h = dlpx_file_header(f);
  ASSERT_STR_EQ(dlpx_st_header_entry(h, 0)->name, "b");
  ASSERT_STR_EQ(dlpx_st_header_entry(h, 1)->name, "a");
  ASSERT_EQ(dlpx_file_data_offset(f), 8 + strlen(json));
  dlpx_tensor *r = NULL, *m = NULL;
  ASSERT_OK(dlpx_file_read(f, find(f, "a"), DLPX_READ_VERIFY, &r));
  ASSERT_EQ(memcmp(dlpx_tensor_data(r), data + 16, 4), 0);
  dlpx_tensor_free(r);
  ASSERT_OK(dlpx_file_read(f, find(f, "b"), 0, &r));
  ASSERT_EQ(memcmp(dlpx_tensor_data(r), data, 16), 0);
  ASSERT_OK(dlpx_file_map(f, find(f, "b"), 0, &m)); /* not aligned: a view anyway */
  ASSERT_TRUE(same_elements(r, m));
  dlpx_tensor_free(m);
  dlpx_tensor_free(r);
  dlpx_file_close(f);
  ASSERT_NO_LEAKS(&l);
}

static void test_metadata_and_names(void) {
  check_live l;
  check_live_begin(&l);
  const char *path = tpath("meta.safetensors");
  int64_t s[] = {3};
  dlpx_tensor *a = filled("int32", 1, s, 1), *b = filled("int32", 1, s, 2);
  const dlpx_tensor *ts[] = {a, b};
  const char *names[] = {"a", "b"};
  const char *keys[] = {"format", "note", "dlpxish", "", "dlp.x"};
  const char *vals[] = {"pt", "\xc3\xbc \"q\" \\ \t/ end", "ok", "empty key", "fine"};
  ASSERT_OK(dlpx_save_file(path, 2, names, ts, 5, keys, vals, NOSYNC));
  dlpx_file *f = NULL;
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  const dlpx_st_header *h = dlpx_file_header(f);
  ASSERT_EQ(dlpx_st_header_metadata_count(h), 5);
  for (size_t i = 0; i < 5; i++) {
    const char *k = NULL, *v = NULL;
    ASSERT_OK(dlpx_st_header_metadata(h, i, &k, &v));
    int hit = 0;
    for (size_t j = 0; j < 5; j++)
      if (!strcmp(k, keys[j])) {
        ASSERT_STR_EQ(v, vals[j]);
        hit = 1;
      }
    ASSERT_TRUE(hit);
  }
  dlpx_file_close(f);

  /* Refusals, before anything is written: the old file stays. */
  size_t len0;
  unsigned char *before = read_all(path, &len0);
  ASSERT_TRUE(before != NULL);
  int entries0 = count_entries(g_dir, NULL);
  const char *rk[] = {"dlpx.checksums"}, *rk2[] = {"dlpx."}, *rk3[] = {"dlpx.aliases"};
  const char *rv[] = {"x"};
  ASSERT_RC(DLPX_EINVAL, dlpx_save_file(path, 2, names, ts, 1, rk, rv, NOSYNC));
  ASSERT_MSG("reserved");
  ASSERT_RC(DLPX_EINVAL, dlpx_save_file(path, 2, names, ts, 1, rk2, rv, NOSYNC));
  ASSERT_RC(DLPX_EINVAL, dlpx_save_file(path, 2, names, ts, 1, rk3, rv, NOSYNC));
  const char *dk[] = {"k", "k"}, *dv[] = {"1", "2"};
  ASSERT_RC(DLPX_EINVAL, dlpx_save_file(path, 2, names, ts, 2, dk, dv, NOSYNC));
  ASSERT_MSG("given twice");
  const char *same[] = {"a", "a"};
  ASSERT_RC(DLPX_EINVAL, dlpx_save_file(path, 2, same, ts, 0, NULL, NULL, NOSYNC));
  ASSERT_MSG("\"a\" is given twice");
  const char *meta[] = {"a", "__metadata__"};
  ASSERT_RC(DLPX_EINVAL, dlpx_save_file(path, 2, meta, ts, 0, NULL, NULL, NOSYNC));
  ASSERT_MSG("__metadata__");
  const char *nul[] = {"a", NULL};
  ASSERT_RC(DLPX_EINVAL, dlpx_save_file(path, 2, nul, ts, 0, NULL, NULL, NOSYNC));
  const char *nk[] = {NULL}, *nv[] = {NULL}, *ok1[] = {"k"};
  ASSERT_RC(DLPX_EINVAL, dlpx_save_file(path, 2, names, ts, 1, nk, rv, NOSYNC));
  ASSERT_RC(DLPX_EINVAL, dlpx_save_file(path, 2, names, ts, 1, ok1, nv, NOSYNC));
  ASSERT_RC(DLPX_EINVAL, dlpx_save_file(path, 2, names, ts, 1, NULL, NULL, NOSYNC));
  ASSERT_RC(DLPX_EINVAL, dlpx_save_file(path, 2, NULL, ts, 0, NULL, NULL, NOSYNC));
  ASSERT_RC(DLPX_EINVAL, dlpx_save_file(path, 2, names, NULL, 0, NULL, NULL, NOSYNC));
  const dlpx_tensor *tnull[] = {a, NULL};
  ASSERT_RC(DLPX_EINVAL, dlpx_save_file(path, 2, names, tnull, 0, NULL, NULL, NOSYNC));
  ASSERT_RC(DLPX_EINVAL, dlpx_save_file(NULL, 2, names, ts, 0, NULL, NULL, NOSYNC));
  ASSERT_RC(DLPX_EINVAL, dlpx_save_file("", 2, names, ts, 0, NULL, NULL, NOSYNC));
  ASSERT_RC(DLPX_EINVAL, dlpx_save_file(path, 2, names, ts, 0, NULL, NULL, 0x100));
  ASSERT_MSG("unknown flags");
  /* Text that is not UTF-8: found while the header is built, after the
   * temporary file exists; it must go. */
  const char *badname[] = {"a", "\xff\xfe"};
  ASSERT_RC(DLPX_EINVAL, dlpx_save_file(path, 2, badname, ts, 0, NULL, NULL, NOSYNC));
  ASSERT_MSG("UTF-8");
  const char *bk[] = {"k\xc3"};
  ASSERT_RC(DLPX_EINVAL, dlpx_save_file(path, 2, names, ts, 1, bk, rv, NOSYNC));
  const char *bv[] = {"\xe2\x82"};
  ASSERT_RC(DLPX_EINVAL, dlpx_save_file(path, 2, names, ts, 1, ok1, bv, NOSYNC));
  int tmp = -1;
  ASSERT_EQ(count_entries(g_dir, &tmp), entries0);
  ASSERT_EQ(tmp, 0);
  size_t len1;
  unsigned char *after = read_all(path, &len1);
  ASSERT_TRUE(after != NULL);
  ASSERT_EQ(len1, len0);
  ASSERT_EQ(memcmp(before, after, len0), 0);
  free(before);
  free(after);
  /* Names that are fine: UTF-8, escapes, a name like a metadata key. */
  const char *odd[] = {"\xe2\x82\xac/x.y", "__metadata"};
  ASSERT_OK(dlpx_save_file(path, 2, odd, ts, 0, NULL, NULL, NOSYNC));
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  ASSERT_TRUE(find(f, "\xe2\x82\xac/x.y") != SIZE_MAX);
  ASSERT_TRUE(find(f, "__metadata") != SIZE_MAX);
  dlpx_file_close(f);
  dlpx_tensor_free(a);
  dlpx_tensor_free(b);
  ASSERT_NO_LEAKS(&l);
}

/* ---- checksums ------------------------------------------------------------------ */

static void test_checksums(void) {
  check_live l;
  check_live_begin(&l);
  const char *path = tpath("sums.safetensors");
  int64_t s1[] = {64, 100}, s2[] = {5}, s0[] = {0};
  dlpx_tensor *a = filled("int32", 2, s1, 1), *b = filled("uint8", 1, s2, 2),
              *e = filled("float32", 1, s0, 3);
  const dlpx_tensor *ts[] = {a, b, e};
  const char *names[] = {"a", "b", "e"};
  ASSERT_OK(dlpx_save_file(path, 3, names, ts, 0, NULL, NULL, DLPX_SAVE_CHECKSUMS));
  /* The header holds them as a string in __metadata__. */
  uint64_t n;
  char *text = header_text(path, &n);
  ASSERT_TRUE(text != NULL);
  char want[512];
  snprintf(want, sizeof want,
           "{\"__metadata__\":{\"dlpx.checksums\":\"{\\\"algorithm\\\":\\\"xxh3-64\\\","
           "\\\"chunk\\\":16777216,\\\"tensors\\\":{\\\"a\\\":\\\"%016" PRIx64 "\\\","
           "\\\"b\\\":\\\"%016" PRIx64 "\\\",\\\"e\\\":\\\"\\\"}}\"},"
           "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
           "\"a\":{\"dtype\":\"I32\",\"shape\":[64,100],\"data_offsets\":[0,25600]},"
           "\"b\":{\"dtype\":\"U8\",\"shape\":[5],\"data_offsets\":[25600,25605]}}",
           dlpx_xxh3(dlpx_tensor_data(a), 25600), dlpx_xxh3(dlpx_tensor_data(b), 5));
  if (strncmp(text, want, strlen(want)) != 0) CHECK_FAIL_("header\n%s\nexpected\n%s", text, want);
  free(text);
  dlpx_file *f = NULL;
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  const dlpx_st_header *h = dlpx_file_header(f);
  size_t ia = find(f, "a"), ib = find(f, "b"), ie = find(f, "e");
  uint64_t chunk = 0;
  size_t count = 0;
  const uint64_t *hashes = NULL;
  ASSERT_EQ(dlpx_st_header_checksums(h, ia, &chunk, &count, &hashes), 1);
  ASSERT_EQ(chunk, DLPX_CHECKSUM_CHUNK);
  ASSERT_EQ(count, 1);
  ASSERT_EQ(hashes[0], dlpx_xxh3(dlpx_tensor_data(a), 25600));
  ASSERT_EQ(dlpx_st_header_checksums(h, ie, &chunk, &count, &hashes), 1);
  ASSERT_EQ(count, 0);
  ASSERT_EQ(dlpx_st_header_checksums(h, 99, &chunk, &count, &hashes), 0);
  ASSERT_EQ(dlpx_st_header_checksums(NULL, 0, NULL, NULL, NULL), 0);
  /* The checksums are metadata the file keeps; they come back as such. */
  ASSERT_EQ(dlpx_st_header_metadata_count(h), 1);
  dlpx_tensor *r = NULL;
  ASSERT_OK(dlpx_file_read(f, ia, DLPX_READ_VERIFY, &r));
  ASSERT_TRUE(same_elements(r, a));
  dlpx_tensor_free(r);
  ASSERT_OK(dlpx_file_read(f, ie, DLPX_READ_VERIFY, &r));
  dlpx_tensor_free(r);
  dlpx_file_close(f);

  /* One byte of "a" changes on disk. */
  uint64_t data0 = 8 + n;
  ASSERT_OK(flip_byte(path, data0 + 12345));
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  ASSERT_RC(DLPX_ECHECKSUM, dlpx_file_read(f, ia, DLPX_READ_VERIFY, &r));
  ASSERT_MSG("\"a\"");
  ASSERT_MSG(path);
  ASSERT_PTR_EQ(r, NULL);
  ASSERT_RC(DLPX_ECHECKSUM, dlpx_file_read(f, ia, DLPX_READ_VERIFY | DLPX_READ_DIRECT, &r));
  void *buf = malloc(25600);
  ASSERT_RC(DLPX_ECHECKSUM, dlpx_file_read_range(f, ia, 0, 25600, buf, DLPX_READ_VERIFY));
  /* A range that does not hold the whole chunk cannot be checked. */
  ASSERT_OK(dlpx_file_read_range(f, ia, 0, 25599, buf, DLPX_READ_VERIFY));
  ASSERT_OK(dlpx_file_read_range(f, ia, 1, 25600, buf, DLPX_READ_VERIFY));
  ASSERT_OK(dlpx_file_read_range(f, ia, 0, 25600, buf, 0));
  ASSERT_EQ(((unsigned char *)buf)[12345], ((unsigned char *)dlpx_tensor_data(a))[12345] ^ 0x5a);
  free(buf);
  ASSERT_RC(DLPX_ECHECKSUM, dlpx_file_map(f, ia, DLPX_READ_VERIFY, &r));
  ASSERT_MSG("\"a\"");
  ASSERT_PTR_EQ(r, NULL);
  ASSERT_RC(DLPX_ECHECKSUM, dlpx_file_map(f, ia, DLPX_READ_VERIFY | DLPX_READ_COPY_ON_WRITE, &r));
  ASSERT_OK(dlpx_file_map(f, ia, 0, &r));
  dlpx_tensor_free(r);
  dlpx_tensor *dst = NULL, *big = NULL, *dv = NULL;
  ASSERT_OK(dlpx_tensor_empty(dt("int32"), 2, s1, &dst));
  ASSERT_RC(DLPX_ECHECKSUM, dlpx_file_read_into(f, ia, dst, DLPX_READ_VERIFY));
  ASSERT_OK(dlpx_file_read_into(f, ia, dst, 0));
  int64_t s1t[] = {100, 64};
  ASSERT_OK(dlpx_tensor_empty(dt("int32"), 2, s1t, &big));
  ASSERT_OK(dlpx_tensor_transpose(big, &dv));
  ASSERT_RC(DLPX_ECHECKSUM, dlpx_file_read_into(f, ia, dv, DLPX_READ_VERIFY)); /* staged */
  ASSERT_OK(dlpx_file_read_into(f, ia, dv, 0));
  ASSERT_TRUE(same_elements(dv, dst));
  /* A slice read in runs of pread verifies the chunks inside a run: here
   * the whole tensor is one run. */
  ASSERT_RC(DLPX_ECHECKSUM, dlpx_file_read_slice(f, ia, 0, NULL, DLPX_READ_VERIFY, &r));
  ASSERT_OK(dlpx_file_read_slice(f, ia, 0, NULL, 0, &r));
  dlpx_tensor_free(r);
  /* The other tensors are fine. */
  ASSERT_OK(dlpx_file_read(f, ib, DLPX_READ_VERIFY, &r));
  ASSERT_TRUE(same_elements(r, b));
  dlpx_tensor_free(r);
  ASSERT_OK(dlpx_file_map(f, ib, DLPX_READ_VERIFY, &r));
  dlpx_tensor_free(r);
  dlpx_file_close(f);

  /* Checksums of no tensors. */
  ASSERT_OK(dlpx_save_file(path, 0, NULL, NULL, 0, NULL, NULL, NOSYNC | DLPX_SAVE_CHECKSUMS));
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  ASSERT_EQ(dlpx_st_header_count(dlpx_file_header(f)), 0);
  ASSERT_EQ(dlpx_st_header_metadata_count(dlpx_file_header(f)), 1);
  dlpx_file_close(f);
  /* Without checksums, VERIFY has nothing to check. */
  ASSERT_OK(dlpx_save_file(path, 3, names, ts, 0, NULL, NULL, NOSYNC));
  text = header_text(path, &n);
  ASSERT_TRUE(text != NULL);
  ASSERT_TRUE(strstr(text, "dlpx.checksums") == NULL);
  free(text);
  ASSERT_OK(flip_byte(path, 8 + n + 3));
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  ASSERT_EQ(dlpx_st_header_checksums(dlpx_file_header(f), find(f, "a"), NULL, NULL, NULL), 0);
  ASSERT_OK(dlpx_file_read(f, find(f, "a"), DLPX_READ_VERIFY, &r));
  dlpx_tensor_free(r);
  dlpx_file_close(f);
  dlpx_tensor_free(dv);
  dlpx_tensor_free(big);
  dlpx_tensor_free(dst);
  dlpx_tensor_free(a);
  dlpx_tensor_free(b);
  dlpx_tensor_free(e);
  ASSERT_NO_LEAKS(&l);
}

/* A tensor of several chunks (40 MiB: 16 + 16 + 8). */
static void test_checksums_multichunk(void) {
  check_live l;
  check_live_begin(&l);
  const uint64_t C = DLPX_CHECKSUM_CHUNK;
  const int64_t size = 40 << 20;
  const char *path = tpath("multi.safetensors");
  int64_t s[] = {size / 4};
  dlpx_tensor *t = filled("float32", 1, s, 40), *pre = filled("uint8", 1, (int64_t[]){3}, 41);
  const dlpx_tensor *ts[] = {t, pre};
  const char *names[] = {"big", "pre"};
  ASSERT_OK(dlpx_save_file(path, 2, names, ts, 0, NULL, NULL, DLPX_SAVE_CHECKSUMS | NOSYNC));
  dlpx_file *f = NULL;
  ASSERT_OK(dlpx_file_open(path, DLPX_FILE_DIRECT, &f));
  size_t ib = find(f, "big");
  const unsigned char *src = dlpx_tensor_data(t);
  uint64_t chunk;
  size_t count;
  const uint64_t *hashes;
  ASSERT_EQ(dlpx_st_header_checksums(dlpx_file_header(f), ib, &chunk, &count, &hashes), 1);
  ASSERT_EQ(count, 3);
  ASSERT_EQ(hashes[0], dlpx_xxh3(src, C));
  ASSERT_EQ(hashes[1], dlpx_xxh3(src + C, C));
  ASSERT_EQ(hashes[2], dlpx_xxh3(src + 2 * C, (size_t)size - 2 * C));
  dlpx_tensor *r = NULL;
  ASSERT_OK(dlpx_file_read(f, ib, DLPX_READ_VERIFY, &r));
  ASSERT_EQ(memcmp(dlpx_tensor_data(r), src, (size_t)size), 0);
  dlpx_tensor_free(r);
  ASSERT_OK(dlpx_file_read(f, ib, DLPX_READ_VERIFY | DLPX_READ_DIRECT, &r));
  ASSERT_EQ(memcmp(dlpx_tensor_data(r), src, (size_t)size), 0);
  dlpx_tensor_free(r);
  uint64_t off = dlpx_file_data_offset(f) + dlpx_st_header_entry(dlpx_file_header(f), ib)->begin;
  dlpx_file_close(f);

  /* A byte in the middle chunk changes. */
  ASSERT_OK(flip_byte(path, off + C + 12345));
  ASSERT_OK(dlpx_file_open(path, DLPX_FILE_DIRECT, &f));
  unsigned char *buf = malloc((size_t)size);
  ASSERT_TRUE(buf != NULL);
  ASSERT_OK(dlpx_file_read_range(f, ib, 0, C, buf, DLPX_READ_VERIFY));
  ASSERT_EQ(memcmp(buf, src, C), 0);
  ASSERT_OK(dlpx_file_read_range(f, ib, 2 * C, (uint64_t)size, buf, DLPX_READ_VERIFY));
  ASSERT_OK(dlpx_file_read_range(f, ib, C + 1, (uint64_t)size, buf, DLPX_READ_VERIFY));
  ASSERT_OK(dlpx_file_read_range(f, ib, 0, 2 * C - 1, buf, DLPX_READ_VERIFY));
  ASSERT_OK(dlpx_file_read_range(f, ib, C + 12340, C + 12350, buf, DLPX_READ_VERIFY));
  ASSERT_EQ(buf[5], src[C + 12345] ^ 0x5a);
  ASSERT_RC(DLPX_ECHECKSUM, dlpx_file_read_range(f, ib, C, 2 * C, buf, DLPX_READ_VERIFY));
  ASSERT_MSG("bytes [16777216, 33554432)");
  ASSERT_RC(DLPX_ECHECKSUM, dlpx_file_read_range(f, ib, C - 1, 2 * C, buf, DLPX_READ_VERIFY));
  ASSERT_RC(DLPX_ECHECKSUM, dlpx_file_read_range(f, ib, 0, (uint64_t)size, buf, DLPX_READ_VERIFY));
  ASSERT_RC(DLPX_ECHECKSUM,
            dlpx_file_read_range(f, ib, 0, (uint64_t)size, buf, DLPX_READ_VERIFY | DLPX_READ_DIRECT));
  ASSERT_RC(DLPX_ECHECKSUM, dlpx_file_read(f, ib, DLPX_READ_VERIFY, &r));
  ASSERT_RC(DLPX_ECHECKSUM, dlpx_file_map(f, ib, DLPX_READ_VERIFY, &r));
  ASSERT_MSG("bytes [16777216, 33554432)");
  /* Checked in pieces on chunk boundaries, only the bad one fails. */
  for (uint64_t c = 0; c < 3; c++) {
    uint64_t b = c * C, e = b + C < (uint64_t)size ? b + C : (uint64_t)size;
    ASSERT_RC(c == 1 ? DLPX_ECHECKSUM : 0, dlpx_file_read_range(f, ib, b, e, buf + b, DLPX_READ_VERIFY));
  }
  ASSERT_OK(dlpx_file_read(f, find(f, "pre"), DLPX_READ_VERIFY, &r));
  dlpx_tensor_free(r);
  free(buf);
  dlpx_file_close(f);
  dlpx_tensor_free(t);
  dlpx_tensor_free(pre);
  ASSERT_NO_LEAKS(&l);
}

/* ---- reading ---------------------------------------------------------------------- */

static void test_read_range(void) {
  check_live l;
  check_live_begin(&l);
  const char *path = tpath("range.safetensors");
  int64_t s[] = {1000};
  dlpx_tensor *t = filled("int64", 1, s, 7);
  ASSERT_OK(save1(path, "t", t, NOSYNC | DLPX_SAVE_CHECKSUMS));
  dlpx_file *f = NULL;
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  const unsigned char *src = dlpx_tensor_data(t);
  unsigned char buf[8000];
  const uint64_t ranges[][2] = {{0, 8000}, {0, 1}, {7999, 8000}, {123, 4567}, {4096, 8000}, {1, 7999}};
  for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
    memset(buf, 0xee, sizeof buf);
    uint64_t b = ranges[i][0], e = ranges[i][1];
    ASSERT_OK(dlpx_file_read_range(f, 0, b, e, buf, DLPX_READ_VERIFY));
    ASSERT_EQ(memcmp(buf, src + b, e - b), 0);
    if (e - b < sizeof buf) ASSERT_EQ(buf[e - b], 0xee); /* nothing past the range */
  }
  /* Empty ranges need no destination. */
  ASSERT_OK(dlpx_file_read_range(f, 0, 0, 0, NULL, 0));
  ASSERT_OK(dlpx_file_read_range(f, 0, 8000, 8000, NULL, DLPX_READ_VERIFY));
  /* Errors. */
  ASSERT_RC(DLPX_EINVAL, dlpx_file_read_range(f, 0, 10, 5, buf, 0));
  ASSERT_RC(DLPX_EINVAL, dlpx_file_read_range(f, 0, 0, 8001, buf, 0));
  ASSERT_MSG("outside tensor");
  ASSERT_RC(DLPX_EINVAL, dlpx_file_read_range(f, 0, 8001, 8001, buf, 0));
  ASSERT_RC(DLPX_EINVAL, dlpx_file_read_range(f, 0, 0, 8, NULL, 0));
  ASSERT_RC(DLPX_EINVAL, dlpx_file_read_range(f, 0, 0, 8, buf, DLPX_READ_COPY_ON_WRITE));
  ASSERT_RC(DLPX_EINVAL, dlpx_file_read_range(f, 0, 0, 8, buf, 0x80));
  ASSERT_RC(DLPX_EINDEX, dlpx_file_read_range(f, 1, 0, 8, buf, 0));
  ASSERT_RC(DLPX_EINVAL, dlpx_file_read_range(NULL, 0, 0, 8, buf, 0));
  dlpx_tensor *r = NULL;
  ASSERT_RC(DLPX_EINDEX, dlpx_file_read(f, 1, 0, &r));
  ASSERT_RC(DLPX_EINVAL, dlpx_file_read(f, 0, 0, NULL));
  ASSERT_RC(DLPX_EINVAL, dlpx_file_read(f, 0, DLPX_READ_COPY_ON_WRITE, &r));
  ASSERT_PTR_EQ(r, NULL);
  dlpx_file_close(f);
  dlpx_tensor_free(t);
  ASSERT_NO_LEAKS(&l);
}

/* dlpx_file_empty_many: one block, each tensor 64-byte aligned in it, and
 * the block lives until the last tensor goes. */
static void test_empty_many(void) {
  check_live l;
  check_live_begin(&l);
  const char *path = tpath("many.safetensors");
  int64_t s1[] = {3}, s2[] = {5, 7}, s3[] = {0};
  dlpx_tensor *a = filled("float32", 1, s1, 1), *b = filled("int16", 2, s2, 2),
              *c = filled("uint8", 1, s3, 3);
  const char *names[] = {"a", "b", "c"};
  const dlpx_tensor *ts[] = {a, b, c};
  ASSERT_OK(dlpx_save_file(path, 3, names, ts, 0, NULL, NULL, NOSYNC | DLPX_SAVE_CHECKSUMS));
  dlpx_file *f = NULL;
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  size_t idx[] = {find(f, "b"), find(f, "c"), find(f, "a")};
  dlpx_tensor *out[3] = {NULL, NULL, NULL};
  ASSERT_OK(dlpx_file_empty_many(f, 3, idx, out));
  ASSERT_PTR_EQ(dlpx_tensor_storage(out[0]), dlpx_tensor_storage(out[1]));
  ASSERT_PTR_EQ(dlpx_tensor_storage(out[0]), dlpx_tensor_storage(out[2]));
  const dlpx_tensor *want[] = {b, c, a};
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ((uintptr_t)dlpx_tensor_data(out[i]) % 64, 0);
    ASSERT_OK(dlpx_file_read_into(f, idx[i], out[i], DLPX_READ_VERIFY));
    ASSERT_EQ(same_elements(out[i], want[i]), 1);
  }
  /* dlpx_file_read_many: the same bytes in one call, and its errors. */
  for (int i = 0; i < 3; i++) memset(dlpx_tensor_data(out[i]), 0, (size_t)dlpx_tensor_nbytes(out[i]));
  void *dsts[] = {dlpx_tensor_data(out[0]), dlpx_tensor_data(out[1]), dlpx_tensor_data(out[2])};
  ASSERT_OK(dlpx_file_read_many(f, 3, idx, dsts, DLPX_READ_VERIFY));
  for (int i = 0; i < 3; i++) ASSERT_EQ(same_elements(out[i], want[i]), 1);
  size_t idx_bad[] = {idx[0], 99};
  ASSERT_RC(DLPX_EINDEX, dlpx_file_read_many(f, 2, idx_bad, dsts, 0));
  ASSERT_RC(DLPX_EINVAL, dlpx_file_read_many(f, 1, idx, NULL, 0));
  ASSERT_OK(dlpx_file_read_many(f, 0, NULL, NULL, 0));
  dlpx_file_close(f);
  dlpx_tensor_free(out[0]);
  dlpx_tensor_free(out[2]);
  ASSERT_EQ(same_elements(out[1], c), 1); /* the block is still there */
  dlpx_tensor_free(out[1]);
  /* Errors make nothing. */
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  size_t bad[] = {0, 9};
  out[0] = out[1] = (dlpx_tensor *)&l;
  ASSERT_RC(DLPX_EINDEX, dlpx_file_empty_many(f, 2, bad, out));
  ASSERT_PTR_EQ(out[0], NULL);
  ASSERT_RC(DLPX_EINVAL, dlpx_file_empty_many(f, 2, NULL, out));
  ASSERT_OK(dlpx_file_empty_many(f, 0, NULL, NULL));
  dlpx_file_close(f);
  dlpx_tensor_free(a);
  dlpx_tensor_free(b);
  dlpx_tensor_free(c);
  ASSERT_NO_LEAKS(&l);
}

static void test_open_errors(void) {
  check_live l;
  check_live_begin(&l);
  int fds = count_fds();
  dlpx_file *f = (dlpx_file *)&f;
  ASSERT_RC(DLPX_EINVAL, dlpx_file_open(NULL, 0, &f));
  ASSERT_RC(DLPX_EINVAL, dlpx_file_open("x", 0, NULL));
  ASSERT_RC(DLPX_EINVAL, dlpx_file_open(tpath("x"), 2, &f));
  ASSERT_PTR_EQ(f, NULL);
  ASSERT_RC(DLPX_EIO, dlpx_file_open(tpath("does-not-exist"), 0, &f));
  ASSERT_MSG("does-not-exist");
  ASSERT_RC(DLPX_EIO, dlpx_file_open(g_dir, 0, &f)); /* a directory */
  ASSERT_RC(DLPX_EIO, dlpx_file_open(tpath("nodir/x.safetensors"), DLPX_FILE_DIRECT, &f));
  ASSERT_PTR_EQ(f, NULL);
  dlpx_file_close(NULL);
  ASSERT_PTR_EQ(dlpx_file_header(NULL), NULL);
  ASSERT_EQ(dlpx_file_data_offset(NULL), 0);
  ASSERT_EQ(dlpx_file_direct(NULL), 0);
  /* Header lengths: zero, over the limit, past the end. */
  const char *path = tpath("len.safetensors");
  unsigned char raw[16] = {0};
  memcpy(raw + 8, "{}      ", 8);
  ASSERT_OK(write_bytes(path, raw, 16));
  ASSERT_RC(DLPX_EFORMAT, dlpx_file_open(path, 0, &f));
  ASSERT_MSG("header length is 0");
  uint64_t big = (uint64_t)DLPX_ST_HEADER_MAX + 1;
  for (int i = 0; i < 8; i++) raw[i] = (unsigned char)(big >> (8 * i));
  ASSERT_OK(write_bytes(path, raw, 16));
  ASSERT_RC(DLPX_EFORMAT, dlpx_file_open(path, 0, &f));
  ASSERT_MSG("exceeds the limit");
  memset(raw, 0xff, 8);
  ASSERT_OK(write_bytes(path, raw, 16));
  ASSERT_RC(DLPX_EFORMAT, dlpx_file_open(path, 0, &f));
  raw[0] = 9;
  memset(raw + 1, 0, 7);
  ASSERT_OK(write_bytes(path, raw, 16));
  ASSERT_RC(DLPX_EFORMAT, dlpx_file_open(path, 0, &f));
  ASSERT_MSG("runs past the end");
  /* Not a safetensors file. */
  ASSERT_OK(write_bytes(path, "PK\3\4 this is a zip file, not tensors", 36));
  ASSERT_RC(DLPX_EFORMAT, dlpx_file_open(path, 0, &f));
  /* The header's own errors come with the path. */
  ASSERT_OK(write_st(path, "{\"a\":{\"dtype\":\"Q8\",\"shape\":[1],\"data_offsets\":[0,1]}}", "x", 1));
  ASSERT_RC(DLPX_EDTYPE, dlpx_file_open(path, 0, &f));
  ASSERT_MSG(path);
  ASSERT_MSG("\"a\"");
  ASSERT_OK(write_st(path, "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", "xyz", 3));
  ASSERT_RC(DLPX_EFORMAT, dlpx_file_open(path, 0, &f)); /* junk after the data */
  ASSERT_OK(write_st(path, "{}", NULL, 0));
  ASSERT_OK(dlpx_file_open(path, 0, &f)); /* header only */
  ASSERT_EQ(dlpx_st_header_count(dlpx_file_header(f)), 0);
  ASSERT_EQ(dlpx_file_data_offset(f), 10);
  dlpx_file_close(f);
  ASSERT_EQ(count_fds(), fds);
  ASSERT_NO_LEAKS(&l);
}

/* A valid file cut short at every interesting point is refused at open. */
static void test_truncated_files(void) {
  check_live l;
  check_live_begin(&l);
  int fds = count_fds();
  const char *path = tpath("whole.safetensors"), *cut = tpath("cut.safetensors");
  int64_t s[] = {10, 10};
  dlpx_tensor *a = filled("float32", 2, s, 1), *b = filled("uint8", 1, s, 2);
  const dlpx_tensor *ts[] = {a, b};
  const char *names[] = {"a", "b"};
  ASSERT_OK(dlpx_save_file(path, 2, names, ts, 0, NULL, NULL, NOSYNC | DLPX_SAVE_CHECKSUMS));
  size_t len;
  unsigned char *all = read_all(path, &len);
  ASSERT_TRUE(all != NULL);
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = n << 8 | all[i];
  size_t d0 = 8 + (size_t)n;
  ASSERT_EQ(len, d0 + 410);
  const size_t cuts[] = {0, 1, 4, 7, 8, 9, 8 + (size_t)n / 2, d0 - 1, d0, d0 + 1, d0 + 399, d0 + 400,
                         d0 + 401, len - 1};
  for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
    ASSERT_OK(write_bytes(cut, all, cuts[i]));
    dlpx_file *f = NULL;
    int rc = dlpx_file_open(cut, 0, &f);
    if (rc != DLPX_EFORMAT) {
      CHECK_FAIL_("cut at %zu of %zu: %s (%s)", cuts[i], len, dlpx_error_name(rc), dlpx_last_error());
      dlpx_file_close(f);
      return;
    }
    ASSERT_PTR_EQ(f, NULL);
    rc = dlpx_file_open(cut, DLPX_FILE_DIRECT, &f);
    ASSERT_EQ(rc, DLPX_EFORMAT);
  }
  ASSERT_OK(write_bytes(cut, all, 3));
  dlpx_file *f = NULL;
  ASSERT_RC(DLPX_EFORMAT, dlpx_file_open(cut, 0, &f));
  ASSERT_MSG("too short");
  ASSERT_OK(write_bytes(cut, all, d0 - 1));
  ASSERT_RC(DLPX_EFORMAT, dlpx_file_open(cut, 0, &f));
  ASSERT_MSG("runs past the end");
  ASSERT_OK(write_bytes(cut, all, len - 1));
  ASSERT_RC(DLPX_EFORMAT, dlpx_file_open(cut, 0, &f));
  ASSERT_MSG("truncated");
  /* And the whole file opens. */
  ASSERT_OK(write_bytes(cut, all, len));
  ASSERT_OK(dlpx_file_open(cut, 0, &f));
  dlpx_file_close(f);
  free(all);
  dlpx_tensor_free(a);
  dlpx_tensor_free(b);
  ASSERT_EQ(count_fds(), fds);
  ASSERT_NO_LEAKS(&l);
}

/* A file that shrinks after it was opened: errors, never a crash. */
static void test_truncated_after_open(void) {
  check_live l;
  check_live_begin(&l);
  int fds = count_fds();
  const char *path = tpath("shrink.safetensors");
  int64_t s[] = {64, 1024};
  dlpx_tensor *a = filled("int32", 2, s, 1), *b = filled("int32", 2, s, 2);
  const dlpx_tensor *ts[] = {a, b};
  const char *names[] = {"a", "b"};
  ASSERT_OK(dlpx_save_file(path, 2, names, ts, 0, NULL, NULL, NOSYNC | DLPX_SAVE_CHECKSUMS));
  dlpx_file *f = NULL;
  ASSERT_OK(dlpx_file_open(path, DLPX_FILE_DIRECT, &f));
  size_t ia = find(f, "a"), ib = find(f, "b");
  ASSERT_EQ(ia, 0);
  /* A mapping made before: it stays alive, its lost pages never touched. */
  dlpx_tensor *early = NULL, *r = NULL;
  ASSERT_OK(dlpx_file_map(f, ia, 0, &early));
  dlpx_tensor_free(early);
  const dlpx_st_entry *eb = dlpx_st_header_entry(dlpx_file_header(f), ib);
  uint64_t keep = dlpx_file_data_offset(f) + eb->begin + (eb->end - eb->begin) / 2;
  ASSERT_EQ(truncate(path, (off_t)keep), 0);
  ASSERT_RC(DLPX_EIO, dlpx_file_read(f, ib, 0, &r));
  ASSERT_MSG("shrank");
  ASSERT_PTR_EQ(r, NULL);
  ASSERT_RC(DLPX_EIO, dlpx_file_read(f, ib, DLPX_READ_VERIFY, &r));
  ASSERT_RC(DLPX_EIO, dlpx_file_read(f, ib, DLPX_READ_DIRECT, &r));
  ASSERT_RC(DLPX_EIO, dlpx_file_read(f, ib, DLPX_READ_DIRECT | DLPX_READ_VERIFY, &r));
  ASSERT_RC(DLPX_EIO, dlpx_file_map(f, ib, 0, &r));
  ASSERT_MSG("shrank");
  ASSERT_RC(DLPX_EIO, dlpx_file_map(f, ia, 0, &r)); /* its pages exist, still refused */
  ASSERT_RC(DLPX_EIO, dlpx_file_map(f, ib, DLPX_READ_COPY_ON_WRITE, &r));
  ASSERT_PTR_EQ(r, NULL);
  dlpx_tensor *dst = NULL, *big = NULL, *dv = NULL;
  ASSERT_OK(dlpx_tensor_empty(dt("int32"), 2, s, &dst));
  ASSERT_RC(DLPX_EIO, dlpx_file_read_into(f, ib, dst, 0));
  int64_t st[] = {1024, 64};
  ASSERT_OK(dlpx_tensor_empty(dt("int32"), 2, st, &big));
  ASSERT_OK(dlpx_tensor_transpose(big, &dv));
  ASSERT_RC(DLPX_EIO, dlpx_file_read_into(f, ib, dv, 0));
  /* Slices: long runs by pread, short ones from the (refused) mapping. */
  dlpx_index rows[] = {{DLPX_INDEX_SLICE, 40, 64, 1}};
  dlpx_index cols[] = {{DLPX_INDEX_SLICE, DLPX_NONE, DLPX_NONE, 1}, {DLPX_INDEX_SLICE, 0, 3, 1}};
  ASSERT_RC(DLPX_EIO, dlpx_file_read_slice(f, ib, 1, rows, 0, &r));
  ASSERT_RC(DLPX_EIO, dlpx_file_read_slice(f, ib, 2, cols, 0, &r));
  ASSERT_RC(DLPX_EIO, dlpx_file_read_slice(f, ia, 2, cols, 0, &r));
  /* What is left can still be read. */
  ASSERT_OK(dlpx_file_read(f, ia, DLPX_READ_VERIFY, &r));
  ASSERT_TRUE(same_elements(r, a));
  dlpx_tensor_free(r);
  ASSERT_OK(dlpx_file_read_slice(f, ib, 1, (dlpx_index[]){{DLPX_INDEX_SLICE, 0, 8, 1}}, 0, &r));
  dlpx_tensor_free(r);
  dlpx_file_close(f);
  /* Reopened, the short file is refused. */
  ASSERT_RC(DLPX_EFORMAT, dlpx_file_open(path, 0, &f));
  dlpx_tensor_free(dv);
  dlpx_tensor_free(big);
  dlpx_tensor_free(dst);
  dlpx_tensor_free(a);
  dlpx_tensor_free(b);
  ASSERT_EQ(count_fds(), fds);
  ASSERT_NO_LEAKS(&l);
}

static void test_map(void) {
  check_live l;
  check_live_begin(&l);
  const char *path = tpath("map.safetensors");
  int64_t s[] = {16, 33}, s0[] = {0, 4};
  dlpx_tensor *a = filled("float64", 2, s, 1), *b = filled("int16", 2, s, 2),
              *e = filled("bool", 2, s0, 3);
  const dlpx_tensor *ts[] = {a, b, e};
  const char *names[] = {"a", "b", "e"}; /* "e" is last in the data: it ends at the file's end */
  ASSERT_OK(dlpx_save_file(path, 3, names, ts, 0, NULL, NULL, NOSYNC | DLPX_SAVE_CHECKSUMS));
  size_t len0;
  unsigned char *before = read_all(path, &len0);
  dlpx_file *f = NULL;
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  size_t ia = find(f, "a"), ib = find(f, "b"), ie = find(f, "e");
  dlpx_tensor *ma = NULL, *mb = NULL, *me = NULL, *ca = NULL, *ca2 = NULL, *r = NULL;
  ASSERT_OK(dlpx_file_map(f, ia, DLPX_READ_VERIFY, &ma));
  ASSERT_OK(dlpx_file_map(f, ib, 0, &mb));
  ASSERT_OK(dlpx_file_map(f, ie, DLPX_READ_VERIFY, &me));
  ASSERT_EQ(dlpx_st_header_entry(dlpx_file_header(f), ie)->begin + dlpx_file_data_offset(f), len0);
  ASSERT_TRUE(same_elements(ma, a));
  ASSERT_TRUE(same_elements(mb, b));
  ASSERT_TRUE(same_elements(me, e));
  ASSERT_TRUE(dlpx_tensor_is_readonly(ma) && dlpx_tensor_is_readonly(mb));
  ASSERT_TRUE(dlpx_tensor_is_c_contiguous(ma));
  /* One mapping per file, shared by the views. */
  ASSERT_PTR_EQ(dlpx_tensor_storage(ma), dlpx_tensor_storage(mb));
  ASSERT_EQ(dlpx_storage_nbytes(dlpx_tensor_storage(ma)), len0);
  ASSERT_EQ(dlpx_tensor_byte_offset(ma),
            (int64_t)(dlpx_file_data_offset(f) + dlpx_st_header_entry(dlpx_file_header(f), ia)->begin));
  ASSERT_RC(DLPX_EREADONLY, dlpx_tensor_copy_into(ma, a));
  /* Copy-on-write views: writable, writes stay in this process. */
  ASSERT_OK(dlpx_file_map(f, ia, DLPX_READ_COPY_ON_WRITE | DLPX_READ_VERIFY, &ca));
  ASSERT_EQ(dlpx_tensor_is_readonly(ca), 0);
  ASSERT_TRUE(dlpx_tensor_storage(ca) != dlpx_tensor_storage(ma));
  ASSERT_TRUE(same_elements(ca, a));
  double *cp = dlpx_tensor_data(ca);
  cp[0] = 1234.5;
  cp[16 * 33 - 1] = -1.0;
  ASSERT_TRUE(same_elements(ma, a)); /* the read-only mapping sees the file */
  ASSERT_OK(dlpx_file_read(f, ia, DLPX_READ_VERIFY, &r));
  ASSERT_TRUE(same_elements(r, a));
  dlpx_tensor_free(r);
  ASSERT_OK(dlpx_file_map(f, ia, DLPX_READ_COPY_ON_WRITE, &ca2));
  ASSERT_PTR_EQ(dlpx_tensor_storage(ca2), dlpx_tensor_storage(ca));
  /* Errors. */
  ASSERT_RC(DLPX_EINDEX, dlpx_file_map(f, 3, 0, &r));
  ASSERT_PTR_EQ(r, NULL);
  ASSERT_RC(DLPX_EINVAL, dlpx_file_map(f, 0, DLPX_READ_DIRECT, &r));
  ASSERT_RC(DLPX_EINVAL, dlpx_file_map(f, 0, 0x40, &r));
  ASSERT_RC(DLPX_EINVAL, dlpx_file_map(f, 0, 0, NULL));
  ASSERT_RC(DLPX_EINVAL, dlpx_file_map(NULL, 0, 0, &r));
  /* The views outlive the file. */
  dlpx_file_close(f);
  ASSERT_TRUE(same_elements(ma, a));
  ASSERT_TRUE(same_elements(mb, b));
  ASSERT_TRUE(cp[0] == 1234.5);
  cp[1] = 99.0;
  ASSERT_TRUE(((double *)dlpx_tensor_data(ca2))[1] == 99.0);
  dlpx_tensor_free(ma);
  ASSERT_TRUE(same_elements(mb, b));
  dlpx_tensor_free(mb);
  dlpx_tensor_free(me);
  dlpx_tensor_free(ca);
  dlpx_tensor_free(ca2);
  /* Nothing reached the file. */
  size_t len1;
  unsigned char *after = read_all(path, &len1);
  ASSERT_TRUE(before && after);
  ASSERT_EQ(len1, len0);
  ASSERT_EQ(memcmp(before, after, len0), 0);
  free(before);
  free(after);
  dlpx_tensor_free(a);
  dlpx_tensor_free(b);
  dlpx_tensor_free(e);
  ASSERT_NO_LEAKS(&l);
}

static void test_read_into(void) {
  check_live l;
  check_live_begin(&l);
  const char *path = tpath("into.safetensors");
  int64_t s[] = {12, 17}, sc[] = {0};
  dlpx_tensor *a = filled("uint16", 2, s, 1), *sca = filled("float64", 0, sc, 2);
  const dlpx_tensor *ts[] = {a, sca};
  const char *names[] = {"a", "s"};
  ASSERT_OK(dlpx_save_file(path, 2, names, ts, 0, NULL, NULL, NOSYNC | DLPX_SAVE_CHECKSUMS));
  dlpx_file *f = NULL;
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  size_t ia = find(f, "a"), is = find(f, "s");
  /* Contiguous. */
  dlpx_tensor *dst = NULL, *big = NULL, *v = NULL, *w = NULL;
  ASSERT_OK(dlpx_tensor_zeros(dt("uint16"), 2, s, &dst));
  ASSERT_OK(dlpx_file_read_into(f, ia, dst, DLPX_READ_VERIFY));
  ASSERT_TRUE(same_elements(dst, a));
  dlpx_tensor_free(dst);
  /* Every other row of a bigger tensor, the rest untouched. */
  int64_t s2[] = {24, 17};
  ASSERT_OK(dlpx_tensor_empty(dt("uint16"), 2, s2, &big));
  memset(dlpx_tensor_data(big), 0xab, 24 * 17 * 2);
  ASSERT_OK(dlpx_tensor_slice(big, 0, 1, DLPX_NONE, 2, &v));
  ASSERT_OK(dlpx_file_read_into(f, ia, v, DLPX_READ_VERIFY));
  ASSERT_TRUE(same_elements(v, a));
  const uint16_t *bp = dlpx_tensor_data(big);
  for (int i = 0; i < 24; i += 2)
    for (int j = 0; j < 17; j++) ASSERT_EQ(bp[i * 17 + j], 0xabab);
  dlpx_tensor_free(v);
  /* Transposed, reversed, columns of a wider tensor. */
  int64_t st[] = {17, 12};
  dlpx_tensor *tt = NULL;
  ASSERT_OK(dlpx_tensor_zeros(dt("uint16"), 2, st, &tt));
  ASSERT_OK(dlpx_tensor_transpose(tt, &v));
  ASSERT_OK(dlpx_file_read_into(f, ia, v, DLPX_READ_VERIFY));
  ASSERT_TRUE(same_elements(v, a));
  dlpx_tensor_free(v);
  dlpx_index rev[] = {{DLPX_INDEX_SLICE, DLPX_NONE, DLPX_NONE, -1},
                      {DLPX_INDEX_SLICE, DLPX_NONE, DLPX_NONE, -1}};
  ASSERT_OK(dlpx_tensor_index(tt, 2, rev, &w));
  ASSERT_OK(dlpx_tensor_transpose(w, &v));
  ASSERT_OK(dlpx_file_read_into(f, ia, v, 0));
  ASSERT_TRUE(same_elements(v, a));
  dlpx_tensor_free(v);
  dlpx_tensor_free(w);
  dlpx_tensor_free(tt);
  int64_t sw[] = {12, 40};
  ASSERT_OK(dlpx_tensor_zeros(dt("uint16"), 2, sw, &tt));
  ASSERT_OK(dlpx_tensor_slice(tt, 1, 20, 37, 1, &v));
  ASSERT_OK(dlpx_file_read_into(f, ia, v, DLPX_READ_VERIFY));
  ASSERT_TRUE(same_elements(v, a));
  dlpx_tensor_free(v);
  dlpx_tensor_free(tt);
  /* A scalar. */
  ASSERT_OK(dlpx_tensor_zeros(dt("float64"), 0, NULL, &dst));
  ASSERT_OK(dlpx_file_read_into(f, is, dst, DLPX_READ_VERIFY));
  ASSERT_TRUE(same_elements(dst, sca));
  /* Errors. */
  ASSERT_RC(DLPX_EDTYPE, dlpx_file_read_into(f, ia, dst, 0));
  ASSERT_MSG("tensor 'a' is uint16");
  dlpx_tensor_free(dst);
  ASSERT_OK(dlpx_tensor_zeros(dt("int16"), 2, s, &dst));
  ASSERT_RC(DLPX_EDTYPE, dlpx_file_read_into(f, ia, dst, 0));
  dlpx_tensor_free(dst);
  int64_t bad1[] = {17, 12}, bad2[] = {12, 17, 1}, bad3[] = {204};
  ASSERT_OK(dlpx_tensor_zeros(dt("uint16"), 2, bad1, &dst));
  ASSERT_RC(DLPX_ESHAPE, dlpx_file_read_into(f, ia, dst, 0));
  ASSERT_MSG("(12, 17)");
  dlpx_tensor_free(dst);
  ASSERT_OK(dlpx_tensor_zeros(dt("uint16"), 3, bad2, &dst));
  ASSERT_RC(DLPX_ESHAPE, dlpx_file_read_into(f, ia, dst, 0));
  dlpx_tensor_free(dst);
  ASSERT_OK(dlpx_tensor_zeros(dt("uint16"), 1, bad3, &dst));
  ASSERT_RC(DLPX_ESHAPE, dlpx_file_read_into(f, ia, dst, 0));
  dlpx_tensor_free(dst);
  ASSERT_OK(dlpx_tensor_zeros(dt("uint16"), 2, s, &dst));
  ASSERT_OK(dlpx_tensor_with_flags(dst, DLPX_TENSOR_READONLY, &v));
  ASSERT_RC(DLPX_EREADONLY, dlpx_file_read_into(f, ia, v, 0));
  dlpx_tensor_free(v);
  ASSERT_RC(DLPX_EINDEX, dlpx_file_read_into(f, 2, dst, 0));
  ASSERT_RC(DLPX_EINVAL, dlpx_file_read_into(f, ia, NULL, 0));
  ASSERT_RC(DLPX_EINVAL, dlpx_file_read_into(f, ia, dst, DLPX_READ_COPY_ON_WRITE));
  ASSERT_RC(DLPX_EINVAL, dlpx_file_read_into(NULL, ia, dst, 0));
  dlpx_tensor_free(dst);
  ASSERT_OK(dlpx_tensor_wrap((void *)(uintptr_t)0x10000, (DLDevice){kDLCUDA, 0}, dt("uint16"), 2, s,
                             NULL, 0, NULL, NULL, &dst));
  ASSERT_RC(DLPX_EDEVICE, dlpx_file_read_into(f, ia, dst, 0));
  dlpx_tensor_free(dst);
  /* A failed read_into leaves the destination's ownership alone. */
  dlpx_tensor_free(big);
  dlpx_file_close(f);

  /* A strided destination bigger than the staging buffer (9.2 MB). */
  int64_t sb[] = {2100, 1100}, sbt[] = {1100, 2100};
  dlpx_tensor *src = filled("float32", 2, sb, 9);
  ASSERT_OK(save1(path, "big", src, NOSYNC | DLPX_SAVE_CHECKSUMS));
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  ASSERT_OK(dlpx_tensor_zeros(dt("float32"), 2, sbt, &tt));
  ASSERT_OK(dlpx_tensor_transpose(tt, &v));
  ASSERT_OK(dlpx_file_read_into(f, 0, v, DLPX_READ_VERIFY));
  ASSERT_TRUE(same_elements(v, src));
  dlpx_tensor_free(v);
  dlpx_tensor_free(tt);
  dlpx_file_close(f);
  dlpx_tensor_free(src);
  dlpx_tensor_free(a);
  dlpx_tensor_free(sca);
  ASSERT_NO_LEAKS(&l);
}

/* ---- slices ------------------------------------------------------------------------ */

#define N_ DLPX_NONE
#define SL(a, b, s) {DLPX_INDEX_SLICE, (a), (b), (s)}
#define IX(i) {DLPX_INDEX_INT, (i), 0, 0}
#define ELL {DLPX_INDEX_ELLIPSIS, 0, 0, 0}
#define NEW {DLPX_INDEX_NEWAXIS, 0, 0, 0}

typedef struct {
  int32_t n;
  dlpx_index items[4];
} index_case;

static void test_read_slice(void) {
  check_live l;
  check_live_begin(&l);
  const char *path = tpath("slice.safetensors");
  int64_t sa[] = {24, 1100}, sb[] = {30, 50}, sc[] = {6, 7, 9}, sd[] = {5}, se[] = {0, 7};
  dlpx_tensor *a = filled("int32", 2, sa, 1);   /* rows of 4400 bytes: pread */
  dlpx_tensor *b = filled("float32", 2, sb, 2); /* rows of 200 bytes: the mapping */
  dlpx_tensor *c = filled("uint16", 3, sc, 3);
  dlpx_tensor *d = filled("int8", 1, sd, 4);
  dlpx_tensor *z = filled("int16", 2, se, 5); /* no elements */
  const dlpx_tensor *ts[] = {a, b, c, d, z};
  const char *names[] = {"a", "b", "c", "d", "z"};
  ASSERT_OK(dlpx_save_file(path, 5, names, ts, 0, NULL, NULL, NOSYNC | DLPX_SAVE_CHECKSUMS));
  static const index_case cases[] = {
      {0, {{0}}},
      {1, {SL(2, 10, 1)}},
      {1, {SL(1, 30, 3)}},
      {1, {SL(N_, N_, -1)}},
      {1, {SL(-2, N_, -3)}},
      {1, {IX(3)}},
      {1, {IX(-1)}},
      {2, {IX(3), IX(4)}},
      {2, {SL(N_, N_, 1), SL(5, 9, 1)}},
      {2, {SL(N_, N_, 1), SL(N_, N_, 7)}},
      {2, {SL(N_, N_, -2), SL(N_, N_, -3)}},
      {2, {SL(1, 20, 4), SL(3, -3, 2)}},
      {2, {SL(N_, N_, 1), IX(2)}},
      {2, {ELL, IX(2)}},
      {2, {IX(1), ELL}},
      {2, {ELL, SL(0, 1, 1)}},
      {2, {ELL, SL(N_, N_, -1)}},
      {3, {NEW, SL(2, 4, 1), ELL}},
      {2, {SL(5, 5, 1), ELL}},
      {2, {SL(100, 200, 1), IX(0)}},
      {1, {SL(0, 1, 1)}},
      {2, {SL(3, 4, 1), SL(0, 1, 1)}},
      {1, {ELL}},
      /* errors: the same as dlpx_tensor_index */
      {1, {SL(0, 4, 0)}},
      {1, {IX(1000)}},
      {1, {IX(-1000)}},
      {2, {ELL, ELL}},
      {4, {IX(0), IX(0), IX(0), IX(0)}},
      {1, {{9, 0, 0, 0}}},
  };
  dlpx_file *f = NULL;
  ASSERT_OK(dlpx_file_open(path, DLPX_FILE_DIRECT, &f));
  for (size_t k = 0; k < 5; k++) {
    dlpx_tensor *full = NULL;
    size_t ti = find(f, names[k]);
    ASSERT_OK(dlpx_file_read(f, ti, 0, &full));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
      for (uint32_t flags = 0; flags <= (DLPX_READ_VERIFY | DLPX_READ_DIRECT); flags++) {
        dlpx_tensor *ref = NULL, *got = NULL, *refc = NULL;
        int want = dlpx_tensor_index(full, cases[i].n, cases[i].n ? cases[i].items : NULL, &ref);
        if (!want) want = dlpx_tensor_copy(ref, 'C', &refc);
        const dlpx_index *items = cases[i].n ? cases[i].items : NULL;
        int rc = dlpx_file_read_slice(f, ti, cases[i].n, items, flags, &got);
        if (rc != want || (!rc && (!same_elements(got, refc) || !dlpx_tensor_is_c_contiguous(got) ||
                                   dlpx_tensor_is_readonly(got)))) {
          CHECK_FAIL_("tensor %s case %zu flags %u: %s (%s), expected %s", names[k], i, flags,
                      dlpx_error_name(rc), dlpx_last_error(), dlpx_error_name(want));
          dlpx_tensor_free(got);
          dlpx_tensor_free(refc);
          dlpx_tensor_free(ref);
          dlpx_tensor_free(full);
          dlpx_file_close(f);
          return;
        }
        if (rc) ASSERT_PTR_EQ(got, NULL);
        dlpx_tensor_free(got);
        dlpx_tensor_free(refc);
        dlpx_tensor_free(ref);
      }
    }
    dlpx_tensor_free(full);
  }
  dlpx_tensor *r = NULL;
  ASSERT_RC(DLPX_EINDEX, dlpx_file_read_slice(f, 9, 0, NULL, 0, &r));
  ASSERT_RC(DLPX_EINVAL, dlpx_file_read_slice(f, 0, 0, NULL, DLPX_READ_COPY_ON_WRITE, &r));
  ASSERT_RC(DLPX_EINVAL, dlpx_file_read_slice(f, 0, 0, NULL, 0, NULL));
  dlpx_file_close(f);
  /* Slices read only what they select: a corrupt byte elsewhere is not
   * seen, one inside a verified run is. */
  size_t ia;
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  ia = find(f, "a");
  uint64_t at = dlpx_file_data_offset(f) + dlpx_st_header_entry(dlpx_file_header(f), ia)->begin;
  dlpx_file_close(f);
  ASSERT_OK(flip_byte(path, at + 20 * 4400 + 7)); /* row 20 of "a" */
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  dlpx_index first[] = {SL(0, 10, 1)};
  ASSERT_OK(dlpx_file_read_slice(f, ia, 1, first, DLPX_READ_VERIFY, &r));
  dlpx_tensor *ref = NULL, *refc = NULL;
  ASSERT_OK(dlpx_tensor_index(a, 1, first, &ref));
  ASSERT_TRUE(same_elements(r, ref));
  dlpx_tensor_free(ref);
  dlpx_tensor_free(r);
  ASSERT_RC(DLPX_ECHECKSUM, dlpx_file_read_slice(f, ia, 0, NULL, DLPX_READ_VERIFY, &r));
  dlpx_index row20[] = {IX(20)};
  ASSERT_OK(dlpx_file_read_slice(f, ia, 1, row20, DLPX_READ_VERIFY, &r)); /* no whole chunk */
  ASSERT_OK(dlpx_tensor_index(a, 1, row20, &ref));
  ASSERT_OK(dlpx_tensor_copy(ref, 'C', &refc));
  const unsigned char *got7 = dlpx_tensor_data(r), *want7 = dlpx_tensor_data(refc);
  ASSERT_EQ(got7[7], want7[7] ^ 0x5a);
  dlpx_tensor_free(refc);
  dlpx_tensor_free(ref);
  dlpx_tensor_free(r);
  dlpx_file_close(f);
  dlpx_tensor_free(a);
  dlpx_tensor_free(b);
  dlpx_tensor_free(c);
  dlpx_tensor_free(d);
  dlpx_tensor_free(z);
  ASSERT_NO_LEAKS(&l);
}

/* ---- O_DIRECT ---------------------------------------------------------------------- */

static void test_direct(void) {
  check_live l;
  check_live_begin(&l);
  int fds = count_fds();
  const char *path = tpath("direct.safetensors");
  int64_t s1[] = {(2 << 20) + 3 * 4096 + 333}, s2[] = {5000}, s3[] = {777};
  dlpx_tensor *a = filled("uint8", 1, s1, 1), *b = filled("uint8", 1, s2, 2),
              *c = filled("uint8", 1, s3, 3);
  const dlpx_tensor *ts[] = {a, b, c};
  const char *names[] = {"a", "b", "c"}; /* data order a, b, c: c ends the file */
  ASSERT_OK(dlpx_save_file(path, 3, names, ts, 0, NULL, NULL, DLPX_SAVE_CHECKSUMS));
  dlpx_file *f = NULL, *plain = NULL;
  ASSERT_OK(dlpx_file_open(path, DLPX_FILE_DIRECT, &f));
  ASSERT_OK(dlpx_file_open(path, 0, &plain));
  ASSERT_EQ(dlpx_file_direct(plain), 0);
  int direct = dlpx_file_direct(f);
  printf("# O_DIRECT %s in %s\n", direct ? "available" : "not available", g_dir);
  size_t cap = (4 << 20) + 3 * 4096;
  unsigned char *raw = NULL;
  ASSERT_EQ(posix_memalign((void **)&raw, 4096, cap), 0);
  for (size_t k = 0; k < 3; k++) {
    const dlpx_st_entry *e = dlpx_st_header_entry(dlpx_file_header(f), k);
    const unsigned char *src = dlpx_tensor_data(ts[k]);
    uint64_t nb = e->end - e->begin;
    const uint64_t ranges[][2] = {{0, nb},      {1, nb},       {0, nb - 1},
                                  {4095, nb - 4097}, {10, 20}, {nb - 1, nb},
                                  {nb / 2, nb}, {4096, 4096 + 8192 < nb ? 4096 + 8192 : nb}};
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
      uint64_t rb = ranges[i][0], re = ranges[i][1];
      if (rb >= re || re > nb) continue;
      uint64_t off = dlpx_file_data_offset(f) + e->begin + rb;
      /* congruent with the file offset, and not */
      size_t shifts[] = {(size_t)(off % 4096), (size_t)((off + 1) % 4096),
                         (size_t)((off + 2048) % 4096)};
      for (size_t j = 0; j < 3; j++) {
        unsigned char *dst = raw + shifts[j];
        memset(raw, 0xcd, cap);
        ASSERT_OK(dlpx_file_read_range(f, k, rb, re, dst, DLPX_READ_DIRECT));
        if (memcmp(dst, src + rb, re - rb) != 0) {
          CHECK_FAIL_("tensor %zu range [%llu, %llu) shift %zu differs", k, (unsigned long long)rb,
                      (unsigned long long)re, shifts[j]);
          free(raw);
          dlpx_file_close(f);
          dlpx_file_close(plain);
          return;
        }
        ASSERT_EQ(dst[re - rb], 0xcd);
        if (shifts[j]) ASSERT_EQ(dst[-1], 0xcd);
        ASSERT_OK(dlpx_file_read_range(f, k, rb, re, dst, DLPX_READ_DIRECT | DLPX_READ_VERIFY));
        ASSERT_EQ(memcmp(dst, src + rb, re - rb), 0);
        /* DIRECT without an O_DIRECT descriptor reads normally. */
        ASSERT_OK(dlpx_file_read_range(plain, k, rb, re, dst, DLPX_READ_DIRECT));
        ASSERT_EQ(memcmp(dst, src + rb, re - rb), 0);
      }
    }
    dlpx_tensor *r = NULL;
    ASSERT_OK(dlpx_file_read(f, k, DLPX_READ_DIRECT | DLPX_READ_VERIFY, &r));
    ASSERT_TRUE(same_elements(r, ts[k]));
    dlpx_tensor_free(r);
  }
  ASSERT_EQ(dlpx_file_direct(f), direct); /* reads did not turn it off */
  free(raw);
  dlpx_file_close(f);
  dlpx_file_close(plain);
  dlpx_tensor_free(a);
  dlpx_tensor_free(b);
  dlpx_tensor_free(c);
  ASSERT_EQ(count_fds(), fds);
  ASSERT_NO_LEAKS(&l);
}

/* ---- aliases and overlaps ----------------------------------------------------------- */

static void test_aliases_and_overlaps(void) {
  check_live l;
  check_live_begin(&l);
  int entries0 = count_entries(g_dir, NULL);
  const char *path = tpath("alias.safetensors");
  int64_t s[] = {4, 5};
  dlpx_tensor *base = filled("float32", 2, s, 1), *same = NULL, *again = NULL, *part = NULL,
              *lo = NULL, *hi = NULL, *asint = NULL, *tr = NULL, *e1 = NULL, *e2 = NULL;
  ASSERT_OK(dlpx_tensor_clone(base, &same));
  ASSERT_OK(dlpx_tensor_slice(base, 0, 0, 4, 1, &again)); /* the same view, made anew */
  ASSERT_OK(dlpx_tensor_slice(base, 0, 1, 3, 1, &part));
  ASSERT_OK(dlpx_tensor_slice(base, 0, 0, 2, 1, &lo));
  ASSERT_OK(dlpx_tensor_slice(base, 0, 2, 4, 1, &hi));
  ASSERT_OK(dlpx_tensor_view_as(base, dt("int32"), &asint));
  ASSERT_OK(dlpx_tensor_transpose(base, &tr));
  ASSERT_OK(dlpx_tensor_slice(base, 0, 1, 1, 1, &e1));
  ASSERT_OK(dlpx_tensor_slice(base, 0, 2, 2, 1, &e2));
  {
    const dlpx_tensor *ts[] = {base, same};
    const char *names[] = {"w", "tied"};
    ASSERT_RC(DLPX_EOVERLAP, dlpx_save_file(path, 2, names, ts, 0, NULL, NULL, NOSYNC));
    ASSERT_MSG("\"tied\"");
    ASSERT_MSG("\"w\"");
    ASSERT_MSG("the same view");
    /* Stored once, the later name (by name) recorded as an alias. */
    ASSERT_OK(dlpx_save_file(path, 2, names, ts, 0, NULL, NULL, NOSYNC | DLPX_SAVE_ALIASES_ONCE));
    dlpx_file *f = NULL;
    ASSERT_OK(dlpx_file_open(path, 0, &f));
    const dlpx_st_header *h = dlpx_file_header(f);
    ASSERT_EQ(dlpx_st_header_count(h), 1);
    ASSERT_STR_EQ(dlpx_st_header_entry(h, 0)->name, "tied");
    ASSERT_EQ(dlpx_st_header_metadata_count(h), 1);
    const char *k, *v;
    ASSERT_OK(dlpx_st_header_metadata(h, 0, &k, &v));
    ASSERT_STR_EQ(k, "dlpx.aliases");
    ASSERT_STR_EQ(v, "{\"w\":\"tied\"}");
    dlpx_tensor *r = NULL;
    ASSERT_OK(dlpx_file_read(f, 0, 0, &r));
    ASSERT_TRUE(same_elements(r, base));
    dlpx_tensor_free(r);
    dlpx_file_close(f);
  }
  {
    /* Three names of one view, with checksums and other tensors. */
    int64_t s3[] = {3};
    dlpx_tensor *other = filled("uint8", 1, s3, 9);
    const dlpx_tensor *ts[] = {again, other, base, same};
    const char *names[] = {"c", "o", "a", "b"};
    ASSERT_OK(dlpx_save_file(path, 4, names, ts, 0, NULL, NULL,
                             NOSYNC | DLPX_SAVE_ALIASES_ONCE | DLPX_SAVE_CHECKSUMS));
    uint64_t n;
    char *text = header_text(path, &n);
    ASSERT_TRUE(text != NULL);
    ASSERT_TRUE(strstr(text, "\"dlpx.aliases\":\"{\\\"b\\\":\\\"a\\\",\\\"c\\\":\\\"a\\\"}\"") != NULL);
    free(text);
    dlpx_file *f = NULL;
    ASSERT_OK(dlpx_file_open(path, 0, &f));
    int sums_seen = 0;
    for (size_t i = 0; i < dlpx_st_header_metadata_count(dlpx_file_header(f)); i++) {
      const char *k, *v;
      ASSERT_OK(dlpx_st_header_metadata(dlpx_file_header(f), i, &k, &v));
      if (strcmp(k, "dlpx.checksums")) continue;
      sums_seen = 1; /* the stored tensors only */
      ASSERT_TRUE(strstr(v, "\"a\":\"") && strstr(v, "\"o\":\""));
      ASSERT_TRUE(!strstr(v, "\"b\"") && !strstr(v, "\"c\""));
    }
    ASSERT_TRUE(sums_seen);
    ASSERT_EQ(dlpx_st_header_count(dlpx_file_header(f)), 2);
    ASSERT_TRUE(find(f, "a") != SIZE_MAX && find(f, "o") != SIZE_MAX);
    ASSERT_TRUE(find(f, "b") == SIZE_MAX && find(f, "c") == SIZE_MAX);
    dlpx_tensor *r = NULL;
    ASSERT_OK(dlpx_file_read(f, find(f, "a"), DLPX_READ_VERIFY, &r));
    ASSERT_TRUE(same_elements(r, base));
    dlpx_tensor_free(r);
    ASSERT_OK(dlpx_file_read(f, find(f, "o"), DLPX_READ_VERIFY, &r));
    ASSERT_TRUE(same_elements(r, other));
    dlpx_tensor_free(r);
    dlpx_file_close(f);
    dlpx_tensor_free(other);
  }
  {
    /* An alias is a name like any other: one that is not UTF-8 is refused,
     * not dropped, and the old file stays. */
    const dlpx_tensor *ts[] = {base, same};
    const char *names[] = {"a", "\xff"};
    const char *names2[] = {"\xfe", "z"};
    const uint32_t fl = NOSYNC | DLPX_SAVE_ALIASES_ONCE;
    ASSERT_RC(DLPX_EINVAL, dlpx_save_file(path, 2, names, ts, 0, NULL, NULL, fl));
    ASSERT_MSG("UTF-8");
    ASSERT_RC(DLPX_EINVAL, dlpx_save_file(path, 2, names2, ts, 0, NULL, NULL, fl));
    dlpx_file *f = NULL;
    ASSERT_OK(dlpx_file_open(path, 0, &f));
    ASSERT_EQ(dlpx_st_header_count(dlpx_file_header(f)), 2); /* the save before */
    dlpx_file_close(f);
  }
  /* Overlaps that are not the same view: refused, with or without the flag. */
  const dlpx_tensor *pairs[][2] = {{base, part}, {part, base}, {base, asint}, {base, tr}, {lo, base}};
  for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
    const char *names[] = {"x", "y"};
    ASSERT_RC(DLPX_EOVERLAP, dlpx_save_file(path, 2, names, pairs[i], 0, NULL, NULL, NOSYNC));
    ASSERT_MSG("\"x\"");
    ASSERT_MSG("\"y\"");
    ASSERT_RC(DLPX_EOVERLAP,
              dlpx_save_file(path, 2, names, pairs[i], 0, NULL, NULL, NOSYNC | DLPX_SAVE_ALIASES_ONCE));
  }
  {
    /* One tensor overlapping two others, and a tie next to an overlap. */
    const dlpx_tensor *ts[] = {lo, hi, part};
    const char *names[] = {"lo", "hi", "mid"};
    ASSERT_RC(DLPX_EOVERLAP, dlpx_save_file(path, 3, names, ts, 0, NULL, NULL, NOSYNC));
    const dlpx_tensor *ts2[] = {base, same, part};
    ASSERT_RC(DLPX_EOVERLAP,
              dlpx_save_file(path, 3, names, ts2, 0, NULL, NULL, NOSYNC | DLPX_SAVE_ALIASES_ONCE));
    ASSERT_MSG("\"mid\"");
  }
  {
    /* Adjacent halves do not overlap; nor do empty views. */
    const dlpx_tensor *ts[] = {lo, hi, e1, e2};
    const char *names[] = {"lo", "hi", "e1", "e2"};
    ASSERT_OK(dlpx_save_file(path, 4, names, ts, 0, NULL, NULL, NOSYNC));
    dlpx_file *f = NULL;
    ASSERT_OK(dlpx_file_open(path, 0, &f));
    ASSERT_EQ(dlpx_st_header_count(dlpx_file_header(f)), 4);
    dlpx_tensor *r = NULL;
    ASSERT_OK(dlpx_file_read(f, find(f, "hi"), 0, &r));
    ASSERT_TRUE(same_elements(r, hi));
    dlpx_tensor_free(r);
    dlpx_file_close(f);
  }
  int tmp = -1;
  ASSERT_EQ(count_entries(g_dir, &tmp), entries0 + 1);
  ASSERT_EQ(tmp, 0);
  dlpx_tensor_free(base);
  dlpx_tensor_free(same);
  dlpx_tensor_free(again);
  dlpx_tensor_free(part);
  dlpx_tensor_free(lo);
  dlpx_tensor_free(hi);
  dlpx_tensor_free(asint);
  dlpx_tensor_free(tr);
  dlpx_tensor_free(e1);
  dlpx_tensor_free(e2);
  ASSERT_NO_LEAKS(&l);
}

/* ---- failed saves ------------------------------------------------------------------- */

static void test_failed_saves(void) {
  check_live l;
  check_live_begin(&l);
  int fds = count_fds();
  mkdir(tpath("sub"), 0755);
  const char *dir = tpath("sub");
  char target[4400], missing[4400];
  snprintf(target, sizeof target, "%s/model.safetensors", dir);
  snprintf(missing, sizeof missing, "%s/no/such/dir/model.safetensors", dir);
  int64_t s[] = {1 << 18};
  dlpx_tensor *a = filled("float32", 1, s, 1), *b = filled("float32", 1, s, 2);
  /* A directory that does not exist. */
  ASSERT_RC(DLPX_EIO, save1(missing, "a", a, 0));
  ASSERT_MSG("temporary file");
  ASSERT_EQ(count_entries(dir, NULL), 0);
  /* A target that exists stays as it is when a save fails. */
  ASSERT_OK(save1(target, "a", a, 0));
  size_t len0;
  unsigned char *before = read_all(target, &len0);
  ASSERT_TRUE(before != NULL);
  dlpx_tensor *cplx = NULL, *dev = NULL;
  int64_t s2[] = {2};
  ASSERT_OK(dlpx_tensor_zeros(dt("complex128"), 1, s2, &cplx));
  ASSERT_OK(dlpx_tensor_wrap((void *)(uintptr_t)0x10000, (DLDevice){kDLCUDA, 0}, dt("float32"), 1, s2,
                             NULL, 0, NULL, NULL, &dev));
  {
    const dlpx_tensor *ts[] = {b, cplx};
    const char *names[] = {"b", "c"};
    ASSERT_RC(DLPX_EDTYPE, dlpx_save_file(target, 2, names, ts, 0, NULL, NULL, 0));
    ASSERT_MSG("complex128");
    ASSERT_MSG("\"c\"");
    const dlpx_tensor *td[] = {b, dev};
    ASSERT_RC(DLPX_EDEVICE, dlpx_save_file(target, 2, names, td, 0, NULL, NULL, 0));
    const char *bad[] = {"b", "\xc0\x80"};
    const dlpx_tensor *tb[] = {b, a};
    ASSERT_RC(DLPX_EINVAL, dlpx_save_file(target, 2, bad, tb, 0, NULL, NULL, 0));
  }
  /* A target that is a directory: the rename fails. */
  char adir[4400];
  snprintf(adir, sizeof adir, "%s/adir", dir);
  ASSERT_EQ(mkdir(adir, 0755), 0);
  ASSERT_RC(DLPX_EIO, save1(adir, "a", a, NOSYNC));
  ASSERT_MSG("rename");
  ASSERT_EQ(rmdir(adir), 0);
  /* A write that fails half way (the file size limit): the temporary file
   * goes. */
  struct rlimit old;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = 64 << 10;
  int can_limit = setrlimit(RLIMIT_FSIZE, &small) == 0;
  if (can_limit) {
    int rc = save1(target, "b", b, DLPX_SAVE_CHECKSUMS);
    setrlimit(RLIMIT_FSIZE, &old);
    ASSERT_EQ(rc, DLPX_EIO);
    ASSERT_MSG("write failed");
  }
  signal(SIGXFSZ, old_handler);
  int tmp = -1;
  ASSERT_EQ(count_entries(dir, &tmp), 1);
  ASSERT_EQ(tmp, 0);
  size_t len1;
  unsigned char *after = read_all(target, &len1);
  ASSERT_TRUE(after != NULL);
  ASSERT_EQ(len1, len0);
  ASSERT_EQ(memcmp(before, after, len0), 0);
  free(after);
  /* A save that works replaces it, and leaves nothing else. */
  ASSERT_OK(save1(target, "b", b, DLPX_SAVE_CHECKSUMS));
  ASSERT_EQ(count_entries(dir, &tmp), 1);
  ASSERT_EQ(tmp, 0);
  dlpx_file *f = NULL;
  ASSERT_OK(dlpx_file_open(target, 0, &f));
  dlpx_tensor *r = NULL;
  ASSERT_OK(dlpx_file_read(f, find(f, "b"), DLPX_READ_VERIFY, &r));
  ASSERT_TRUE(same_elements(r, b));
  dlpx_tensor_free(r);
  dlpx_file_close(f);
  /* The new file's mode follows the umask. */
  mode_t um = umask(027);
  ASSERT_OK(save1(target, "a", a, NOSYNC));
  umask(um);
  struct stat st;
  ASSERT_EQ(stat(target, &st), 0);
  ASSERT_EQ(st.st_mode & 0777, 0640);
  /* A path without a directory: the current one. */
  int cwd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_TRUE(cwd >= 0);
  ASSERT_EQ(chdir(dir), 0);
  int rc = save1("rel.safetensors", "a", a, 0);
  int rc2 = dlpx_file_open("rel.safetensors", 0, &f);
  ASSERT_EQ(fchdir(cwd), 0);
  close(cwd);
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(rc2, 0);
  ASSERT_OK(dlpx_file_read(f, 0, 0, &r));
  ASSERT_TRUE(same_elements(r, a));
  dlpx_tensor_free(r);
  dlpx_file_close(f);
  ASSERT_EQ(count_entries(dir, &tmp), 2);
  ASSERT_EQ(tmp, 0);
  free(before);
  dlpx_tensor_free(cplx);
  dlpx_tensor_free(dev);
  dlpx_tensor_free(a);
  dlpx_tensor_free(b);
  ASSERT_EQ(count_fds(), fds);
  ASSERT_NO_LEAKS(&l);
}

/* ---- file descriptors ---------------------------------------------------------------- */

static void test_no_fd_leaks(void) {
  check_live l;
  check_live_begin(&l);
  char path[4400], bad[4400], out[4400], none[4400], nodir[4400];
  snprintf(path, sizeof path, "%s/fds.safetensors", g_dir);
  snprintf(bad, sizeof bad, "%s/fds-bad.safetensors", g_dir);
  snprintf(out, sizeof out, "%s/fds-out.safetensors", g_dir);
  snprintf(none, sizeof none, "%s/nothing-here", g_dir);
  snprintf(nodir, sizeof nodir, "%s/nothing/x", g_dir);
  int64_t s[] = {100, 100};
  dlpx_tensor *a = filled("float32", 2, s, 1);
  ASSERT_OK(save1(path, "a", a, NOSYNC | DLPX_SAVE_CHECKSUMS));
  ASSERT_OK(write_st(bad, "{\"a\":1}", NULL, 0));
  int fds = count_fds();
  ASSERT_TRUE(fds > 0);
  dlpx_tensor *keep = NULL;
  for (int i = 0; i < 20; i++) {
    dlpx_file *f = NULL;
    ASSERT_OK(dlpx_file_open(path, (uint32_t)(i % 2) * DLPX_FILE_DIRECT, &f));
    ASSERT_TRUE(count_fds() > fds);
    dlpx_tensor *r = NULL;
    ASSERT_OK(dlpx_file_read(f, 0, DLPX_READ_VERIFY | DLPX_READ_DIRECT, &r));
    dlpx_tensor_free(r);
    ASSERT_OK(dlpx_file_map(f, 0, 0, &r));
    if (i == 7) keep = r;
    else dlpx_tensor_free(r);
    dlpx_index cols[] = {SL(N_, N_, 1), SL(0, 2, 1)};
    ASSERT_OK(dlpx_file_read_slice(f, 0, 2, cols, 0, &r));
    dlpx_tensor_free(r);
    dlpx_file_close(f);
    ASSERT_RC(DLPX_EFORMAT, dlpx_file_open(bad, DLPX_FILE_DIRECT, &f));
    ASSERT_RC(DLPX_EIO, dlpx_file_open(none, 0, &f));
    ASSERT_OK(save1(out, "a", a, 0));
    ASSERT_RC(DLPX_EIO, save1(nodir, "a", a, 0));
  }
  /* A mapping holds no descriptor. */
  ASSERT_EQ(count_fds(), fds);
  ASSERT_TRUE(same_elements(keep, a));
  dlpx_tensor_free(keep);
  ASSERT_EQ(count_fds(), fds);
  dlpx_tensor_free(a);
  ASSERT_NO_LEAKS(&l);
}

/* ---- temporary files that killed saves left ------------------------------------------ */

static int touch_at(const char *path, time_t when) {
  if (write_bytes(path, "stale", 5) != 0) return -1;
  struct timespec ts[2] = {{when, 0}, {when, 0}};
  return utimensat(AT_FDCWD, path, ts, 0);
}

static int exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

static void test_stale_tmps(void) {
  check_live l;
  check_live_begin(&l);
  int fds = count_fds();
  char dir[4200], target[4400], p[12][4400];
  snprintf(dir, sizeof dir, "%s/stale", g_dir);
  ASSERT_EQ(mkdir(dir, 0755), 0);
  snprintf(target, sizeof target, "%s/m.st", dir);
  const char *names[] = {
      ".m.st.tmp-Ab12yZ",  /* 0: stale: goes */
      ".m.st.tmp-000000",  /* 1: stale: goes */
      ".m.st.tmp-Ab12y",   /* 2: 5 characters: stays */
      ".m.st.tmp-Ab12yZ9", /* 3: 7 characters: stays */
      ".m.st.tmp-Ab-2yZ",  /* 4: not from mkostemp: stays */
      ".x.st.tmp-Ab12yZ",  /* 5: another file's: stays */
      "m.st.tmp-Ab12yZ",   /* 6: not hidden: stays */
      ".m.st.tmp-NEWer1",  /* 7: newer than the save: stays */
      ".m.st.tmp-LOCKed",  /* 8: locked, a save in progress: stays */
      ".m.st.tmp-DIRect",  /* 9: a directory: stays */
      ".m.st.tmp-LINKed",  /* 10: a symbolic link: stays, its target too */
      ".m.st.Tmp-Ab12yZ",  /* 11: stays */
  };
  time_t old = time(NULL) - 3600, later = time(NULL) + 3600;
  for (int i = 0; i < 12; i++) snprintf(p[i], sizeof p[i], "%s/%s", dir, names[i]);
  for (int i = 0; i < 12; i++)
    if (i != 9 && i != 10) ASSERT_OK(touch_at(p[i], i == 7 ? later : old));
  ASSERT_EQ(mkdir(p[9], 0755), 0);
  char victim[4400];
  snprintf(victim, sizeof victim, "%s/victim", dir);
  ASSERT_OK(touch_at(victim, old));
  ASSERT_EQ(symlink(victim, p[10]), 0);
  int lfd = open(p[8], O_RDONLY | O_CLOEXEC);
  ASSERT_TRUE(lfd >= 0);
  ASSERT_EQ(flock(lfd, LOCK_EX | LOCK_NB), 0);
  ASSERT_OK(touch_at(p[8], old)); /* rewritten (same inode), still locked, old again */
  int64_t s[] = {10};
  dlpx_tensor *a = filled("uint8", 1, s, 1);
  /* A failed save removes nothing. */
  const char *bad[] = {"\xff"};
  const dlpx_tensor *ts[] = {a};
  ASSERT_RC(DLPX_EINVAL, dlpx_save_file(target, 1, bad, ts, 0, NULL, NULL, NOSYNC));
  for (int i = 0; i < 12; i++) ASSERT_TRUE(exists(p[i]));
  /* A save that works removes the stale ones of its own file only. */
  ASSERT_OK(save1(target, "a", a, NOSYNC));
  ASSERT_TRUE(exists(target));
  for (int i = 0; i < 12; i++)
    if (exists(p[i]) != (i >= 2)) CHECK_FAIL_("%s %s", names[i], exists(p[i]) ? "stayed" : "went");
  ASSERT_TRUE(exists(victim));
  /* Once unlocked (its save was killed), it goes with the next save. */
  close(lfd);
  ASSERT_OK(save1(target, "a", a, 0));
  ASSERT_TRUE(!exists(p[8]));
  ASSERT_TRUE(exists(p[7]) && exists(p[2]) && exists(p[9]) && exists(p[10]));
  dlpx_tensor_free(a);
  ASSERT_EQ(count_fds(), fds);
  ASSERT_NO_LEAKS(&l);
}

/* ---- threads ---------------------------------------------------------------------- */

typedef struct {
  dlpx_file *f;
  size_t index;
  uint64_t begin, end;
  const unsigned char *expect; /* the whole tensor */
  int iters;
  int failures;
  char why[256];
} reader;

static void *reader_main(void *arg) {
  reader *r = arg;
  size_t len = (size_t)(r->end - r->begin);
  unsigned char *buf = malloc(len);
  if (!buf) {
    r->failures++;
    return NULL;
  }
  for (int i = 0; i < r->iters; i++) {
    uint32_t flags = (i % 2 ? DLPX_READ_VERIFY : 0) | (i % 3 == 0 ? DLPX_READ_DIRECT : 0);
    int rc = dlpx_file_read_range(r->f, r->index, r->begin, r->end, buf, flags);
    if (rc || memcmp(buf, r->expect + r->begin, len) != 0) {
      r->failures++;
      snprintf(r->why, sizeof r->why, "read_range: %s %s", dlpx_error_name(rc), dlpx_last_error());
    }
    dlpx_tensor *t = NULL;
    if (i % 4 == 1) {
      rc = dlpx_file_read(r->f, r->index, DLPX_READ_VERIFY, &t);
      if (rc || memcmp(dlpx_tensor_data(t), r->expect, (size_t)dlpx_tensor_nbytes(t)) != 0) {
        r->failures++;
        snprintf(r->why, sizeof r->why, "read: %s %s", dlpx_error_name(rc), dlpx_last_error());
      }
      dlpx_tensor_free(t);
    }
    t = NULL;
    rc = dlpx_file_map(r->f, r->index, i % 2 ? 0 : DLPX_READ_COPY_ON_WRITE, &t);
    if (rc ||
        memcmp((const unsigned char *)dlpx_tensor_data(t) + r->begin, r->expect + r->begin, len)) {
      r->failures++;
      snprintf(r->why, sizeof r->why, "map: %s %s", dlpx_error_name(rc), dlpx_last_error());
    }
    dlpx_tensor_free(t);
  }
  free(buf);
  return NULL;
}

static void test_threads(void) {
  check_live l;
  check_live_begin(&l);
  const char *path = tpath("threads.safetensors");
  int64_t s[] = {1 << 20};
  dlpx_tensor *t = filled("float32", 1, s, 1);
  ASSERT_OK(save1(path, "t", t, NOSYNC | DLPX_SAVE_CHECKSUMS));
  dlpx_file *f = NULL;
  ASSERT_OK(dlpx_file_open(path, DLPX_FILE_DIRECT, &f));
  enum { NT = 4 };
  reader rs[NT];
  pthread_t th[NT];
  uint64_t total = 4u << 20;
  int iters = under_valgrind() ? 4 : 24;
  for (int i = 0; i < NT; i++) {
    memset(&rs[i], 0, sizeof rs[i]);
    rs[i].f = f;
    rs[i].index = 0;
    rs[i].begin = total / NT * (uint64_t)i + (uint64_t)i * 3; /* unaligned, different */
    rs[i].end = i == NT - 1 ? total : total / NT * (uint64_t)(i + 1);
    rs[i].expect = dlpx_tensor_data(t);
    rs[i].iters = iters;
  }
  rs[0].begin = 0;
  rs[0].end = total; /* one reads the whole tensor: verified */
  for (int i = 0; i < NT; i++) ASSERT_EQ(pthread_create(&th[i], NULL, reader_main, &rs[i]), 0);
  for (int i = 0; i < NT; i++) ASSERT_EQ(pthread_join(th[i], NULL), 0);
  for (int i = 0; i < NT; i++) {
    if (rs[i].failures) CHECK_FAIL_("thread %d: %d failures, last %s", i, rs[i].failures, rs[i].why);
    ASSERT_EQ(rs[i].failures, 0);
  }
  dlpx_file_close(f);
  dlpx_tensor_free(t);
  ASSERT_NO_LEAKS(&l);
}

typedef struct {
  const char *path;
  const dlpx_tensor *t;
  int iters;
  int failures;
  char why[300];
} saver;

static void *saver_main(void *arg) {
  saver *s = arg;
  for (int i = 0; i < s->iters; i++) {
    int rc = save1(s->path, "t", s->t, NOSYNC | DLPX_SAVE_CHECKSUMS);
    if (rc) {
      s->failures++;
      snprintf(s->why, sizeof s->why, "%s %s", dlpx_error_name(rc), dlpx_last_error());
    }
  }
  return NULL;
}

/* Threads saving to one path at once: every save works, the file is one of
 * them whole, and no temporary file is left. */
static void test_concurrent_saves(void) {
  check_live l;
  check_live_begin(&l);
  char dir[4200], path[4400];
  snprintf(dir, sizeof dir, "%s/conc", g_dir);
  ASSERT_EQ(mkdir(dir, 0755), 0);
  snprintf(path, sizeof path, "%s/same.safetensors", dir);
  enum { NT = 4 };
  saver ss[NT];
  pthread_t th[NT];
  dlpx_tensor *ts[NT];
  int64_t s[] = {17}; /* small: many saves, close together */
  for (int i = 0; i < NT; i++) {
    ts[i] = filled("int32", 1, s, (unsigned)(100 + i));
    memset(&ss[i], 0, sizeof ss[i]);
    ss[i].path = path;
    ss[i].t = ts[i];
    ss[i].iters = under_valgrind() ? 50 : 400;
  }
  for (int i = 0; i < NT; i++) ASSERT_EQ(pthread_create(&th[i], NULL, saver_main, &ss[i]), 0);
  for (int i = 0; i < NT; i++) ASSERT_EQ(pthread_join(th[i], NULL), 0);
  for (int i = 0; i < NT; i++)
    if (ss[i].failures) CHECK_FAIL_("saver %d: %d failures, last: %s", i, ss[i].failures, ss[i].why);
  int tmp = -1;
  ASSERT_EQ(count_entries(dir, &tmp), 1);
  ASSERT_EQ(tmp, 0);
  dlpx_file *f = NULL;
  ASSERT_OK(dlpx_file_open(path, 0, &f));
  dlpx_tensor *r = NULL;
  ASSERT_OK(dlpx_file_read(f, 0, DLPX_READ_VERIFY, &r));
  int which = 0;
  for (int i = 0; i < NT; i++) which += same_elements(r, ts[i]);
  ASSERT_EQ(which, 1);
  dlpx_tensor_free(r);
  dlpx_file_close(f);
  for (int i = 0; i < NT; i++) dlpx_tensor_free(ts[i]);
  ASSERT_NO_LEAKS(&l);
}

int main(void) {
  if (make_scratch_dir() != 0) {
    fprintf(stderr, "# cannot make a scratch directory: %s\n", strerror(errno));
    return 99;
  }
  int fds = count_fds();
  RUN(test_dtype_names);
  RUN(test_header_good);
  RUN(test_header_table);
  RUN(test_header_rejections);
  RUN(test_xxh3);
  RUN(test_roundtrip_dtypes);
  RUN(test_roundtrip_noncontiguous);
  RUN(test_roundtrip_subbyte);
  RUN(test_reference_layout);
  RUN(test_foreign_file);
  RUN(test_metadata_and_names);
  RUN(test_checksums);
  RUN(test_checksums_multichunk);
  RUN(test_read_range);
  RUN(test_empty_many);
  RUN(test_open_errors);
  RUN(test_truncated_files);
  RUN(test_truncated_after_open);
  RUN(test_map);
  RUN(test_read_into);
  RUN(test_read_slice);
  RUN(test_direct);
  RUN(test_aliases_and_overlaps);
  RUN(test_failed_saves);
  RUN(test_no_fd_leaks);
  RUN(test_stale_tmps);
  RUN(test_threads);
  RUN(test_concurrent_saves);
  if (count_fds() != fds) {
    fprintf(stderr, "# %d file descriptors before the tests, %d after\n", fds, count_fds());
    check__total_failed++;
  }
  remove_tree(g_dir);
  CHECK_DONE();
}
