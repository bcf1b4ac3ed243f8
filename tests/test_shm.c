/* test_shm.c - shared-memory segments: anonymous (sealed memfds) and named
 * (/dev/shm) segments made from tensors and from bytes, their images
 * against dlpx_save_file's, read-only and copy-on-write views, hostile
 * images and descriptors, publishing and fetching descriptors across fork
 * in both directions, fake servers and hostile clients, and descriptor
 * leaks over many rounds. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#define ALL_SEALS (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

/* ---- helpers ------------------------------------------------------------------- */

static char g_dir[4096];   /* scratch directory for saved files */
static char g_prefix[64];  /* "test-<pid>-": this run's named segments */

static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL)
    if (de->d_name[0] != '.') {
      n++;
      if (getenv("DLPX_TEST_SHOW_FDS")) {
        char p[300], t[300];
        snprintf(p, sizeof p, "/proc/self/fd/%s", de->d_name);
        ssize_t k = readlink(p, t, sizeof t - 1);
        fprintf(stderr, "#   %s -> %.*s\n", de->d_name, (int)(k > 0 ? k : 0), t);
      }
    }
  closedir(d);
  if (getenv("DLPX_TEST_SHOW_FDS")) fprintf(stderr, "# --\n");
  return n - 1; /* the directory's own descriptor */
}

/* count_fds once it is down to |want| (waiting up to 2 s): the server
 * thread closes its end of a connection, and the descriptor it sent, just
 * after the client has its answer. */
static int fds_settled(int want) {
  int n = count_fds();
  for (int i = 0; i < 200 && n > want; i++) {
    poll(NULL, 0, 10);
    n = count_fds();
  }
  return n;
}

/* A segment name of this run (four rotating buffers). */
static const char *sname(const char *suffix) {
  static char bufs[4][128];
  static int next;
  char *b = bufs[next++ % 4];
  snprintf(b, sizeof bufs[0], "%s%s", g_prefix, suffix);
  return b;
}

static const char *spath(const char *name) {
  static char bufs[4][256];
  static int next;
  char *b = bufs[next++ % 4];
  snprintf(b, sizeof bufs[0], "/dev/shm/dlpx.%s", name);
  return b;
}

/* Files of /dev/shm of this run (named segments and temporary files). */
static int count_run_files(void) {
  DIR *d = opendir("/dev/shm");
  if (!d) return -1;
  char want[128];
  snprintf(want, sizeof want, "dlpx.%s", g_prefix);
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL)
    if (!strncmp(de->d_name, want, strlen(want))) n++;
  closedir(d);
  return n;
}

static void remove_run_files(void) {
  DIR *d = opendir("/dev/shm");
  if (!d) return;
  char want[128], p[512];
  snprintf(want, sizeof want, "dlpx.%s", g_prefix);
  struct dirent *de;
  while ((de = readdir(d)) != NULL)
    if (!strncmp(de->d_name, want, strlen(want))) {
      snprintf(p, sizeof p, "/dev/shm/%s", de->d_name);
      unlink(p);
    }
  closedir(d);
}

static void remove_tree(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *de;
  char p[4400];
  while ((de = readdir(d)) != NULL) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
    unlink(p);
  }
  closedir(d);
  rmdir(dir);
}

static int write_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len) {
    ssize_t w = write(fd, p, len);
    if (w <= 0) return -1;
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

static unsigned char *read_file(const char *path, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NULL;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return NULL;
  }
  size_t n = (size_t)st.st_size;
  unsigned char *buf = malloc(n ? n : 1);
  if (buf && pread(fd, buf, n, 0) != (ssize_t)n) {
    free(buf);
    buf = NULL;
  }
  close(fd);
  if (buf) *len = n;
  return buf;
}

/* A memfd holding |len| bytes, with the seals |seals| added (0: none). */
static int memfd_with(const void *data, size_t len, int seals) {
  int fd = memfd_create("dlpx-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return -1;
  if (write_all(fd, data, len) != 0 || (seals && fcntl(fd, F_ADD_SEALS, seals) != 0)) {
    close(fd);
    return -1;
  }
  return fd;
}

/* A safetensors image from a JSON header (as it is) and data bytes, new. */
static unsigned char *image(const char *json, const void *data, size_t dlen, size_t *len) {
  size_t n = strlen(json);
  unsigned char *buf = malloc(8 + n + dlen + 1);
  if (!buf) return NULL;
  for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)n >> (8 * i));
  memcpy(buf + 8, json, n);
  if (dlen) memcpy(buf + 8 + n, data, dlen);
  *len = 8 + n + dlen;
  return buf;
}

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

/* The value of metadata |key|, or NULL. */
static const char *meta(const dlpx_st_header *h, const char *key) {
  for (size_t i = 0; i < dlpx_st_header_metadata_count(h); i++) {
    const char *k, *v;
    if (dlpx_st_header_metadata(h, i, &k, &v) == 0 && !strcmp(k, key)) return v;
  }
  return NULL;
}

/* ---- aligned images: the padding entries "dlpx.pad.<k>" ------------------------------ */

#define PAD_PREFIX "dlpx.pad."

static int is_pad(const char *name) { return strncmp(name, PAD_PREFIX, strlen(PAD_PREFIX)) == 0; }

/* The number of real tensors of |h|: the entries not named dlpx.pad.*. */
static size_t real_count(const dlpx_st_header *h) {
  size_t n = 0;
  for (size_t i = 0; i < dlpx_st_header_count(h); i++)
    n += !is_pad(dlpx_st_header_entry(h, i)->name);
  return n;
}

/* The |k|-th real tensor of |h| in data order (its index in *index), or NULL. */
static const dlpx_st_entry *real_entry(const dlpx_st_header *h, size_t k, size_t *index) {
  for (size_t i = 0; i < dlpx_st_header_count(h); i++) {
    const dlpx_st_entry *e = dlpx_st_header_entry(h, i);
    if (is_pad(e->name)) continue;
    if (k-- == 0) {
      if (index) *index = i;
      return e;
    }
  }
  return NULL;
}

#define BAD_LAYOUT(...)                                  \
  do {                                                   \
    fprintf(stderr, "# layout: " __VA_ARGS__);           \
    fprintf(stderr, "\n");                               \
    return -1;                                           \
  } while (0)

/* Checks the layout of an image made by dlpx_segment_create (or built from
 * one): every real tensor with bytes starts at a multiple of 64 within the
 * data section, and so in memory; the gaps before them, and nothing else,
 * are entries "dlpx.pad.<k>" (k = 0 .. count-1, each once) of dtype U8 and
 * shape [gap], 0 < gap < 64 (so a tensor starts at the first multiple of 64
 * after the one before it), each ending where a real tensor with bytes
 * begins; "dlpx.pad" in __metadata__ is their count in decimal, absent
 * when there are none.  With |zeros| the padding bytes are zeros (what
 * dlpx_segment_create leaves there).  Returns the number of pads, or -1
 * (saying why on stderr). */
static int check_padding(const dlpx_segment *seg, int zeros) {
  const dlpx_st_header *h = dlpx_segment_header(seg);
  if (!h) BAD_LAYOUT("no header");
  uint64_t off = dlpx_segment_data_offset(seg);
  if (off % DLPX_SEGMENT_ALIGN) BAD_LAYOUT("data section at %llu", (unsigned long long)off);
  size_t n = dlpx_st_header_count(h), npads = n - real_count(h);
  char *seen = calloc(npads + 1, 1);
  if (!seen) BAD_LAYOUT("no memory");
  const unsigned char *bytes = NULL;
  dlpx_tensor *b = NULL;
  if (zeros && dlpx_segment_bytes(seg, 0, &b) == 0) bytes = dlpx_tensor_data(b);
  int bad = zeros && !b;
  uint64_t prev_end = 0; /* of the last real tensor with bytes */
  for (size_t i = 0; i < n && !bad; i++) {
    const dlpx_st_entry *e = dlpx_st_header_entry(h, i);
    uint64_t len = e->end - e->begin;
    if (!is_pad(e->name)) {
      if (!len) continue;
      if (e->begin % DLPX_SEGMENT_ALIGN) {
        fprintf(stderr, "# layout: tensor \"%s\" at %llu\n", e->name,
                (unsigned long long)e->begin);
        bad = 1;
      } else if (e->begin - prev_end >= DLPX_SEGMENT_ALIGN) {
        fprintf(stderr, "# layout: tensor \"%s\" at %llu, the one before ends at %llu\n",
                e->name, (unsigned long long)e->begin, (unsigned long long)prev_end);
        bad = 1;
      }
      prev_end = e->end;
      continue;
    }
    char *endp;
    unsigned long k = strtoul(e->name + strlen(PAD_PREFIX), &endp, 10);
    size_t next;
    const dlpx_st_entry *after = NULL;
    for (next = 0; next < n && !after; next++) {
      const dlpx_st_entry *x = dlpx_st_header_entry(h, next);
      if (!is_pad(x->name) && x->end > x->begin && x->begin == e->end) after = x;
    }
    if (*endp || endp == e->name + strlen(PAD_PREFIX) || k >= npads || seen[k]++) {
      fprintf(stderr, "# layout: pad \"%s\" (of %zu)\n", e->name, npads);
      bad = 1;
    } else if (e->dtype.code != kDLUInt || e->dtype.bits != 8 || e->dtype.lanes != 1 ||
               e->ndim != 1 || e->shape[0] != (int64_t)len) {
      fprintf(stderr, "# layout: pad \"%s\" is not U8 [%llu]\n", e->name,
              (unsigned long long)len);
      bad = 1;
    } else if (len == 0 || len >= DLPX_SEGMENT_ALIGN || e->end % DLPX_SEGMENT_ALIGN || !after) {
      fprintf(stderr, "# layout: pad \"%s\" [%llu, %llu) aligns no tensor\n", e->name,
              (unsigned long long)e->begin, (unsigned long long)e->end);
      bad = 1;
    } else if (bytes) {
      for (uint64_t j = e->begin; j < e->end; j++)
        if (bytes[j]) {
          fprintf(stderr, "# layout: pad \"%s\" has byte %u at %llu\n", e->name, bytes[j],
                  (unsigned long long)j);
          bad = 1;
          break;
        }
    }
  }
  dlpx_tensor_free(b);
  free(seen);
  if (bad) return -1;
  const char *count = meta(h, "dlpx.pad");
  char want[32];
  snprintf(want, sizeof want, "%zu", npads);
  if (npads ? !count || strcmp(count, want) : count != NULL)
    BAD_LAYOUT("%zu pads, __metadata__ \"dlpx.pad\" is %s", npads, count ? count : "absent");
  return (int)npads;
}

/* Every tensor of |seg| with bytes, as a view (read-only and
 * copy-on-write, one by one and all at once), has its data at a multiple
 * of 64 in memory.  Returns the number of such tensors, or -1. */
static int check_aligned_views(const dlpx_segment *seg) {
  const dlpx_st_header *h = dlpx_segment_header(seg);
  size_t n = dlpx_st_header_count(h);
  dlpx_tensor **all = calloc(n + 1, sizeof *all);
  if (!all) return -1;
  int count = 0;
  for (int pass = 0; pass < 2 && count >= 0; pass++) {
    uint32_t flags = pass ? DLPX_READ_COPY_ON_WRITE : 0;
    if (dlpx_segment_tensors(seg, flags, all) != 0) count = -1;
    for (size_t i = 0; i < n && count >= 0; i++) {
      const dlpx_st_entry *e = dlpx_st_header_entry(h, i);
      if (is_pad(e->name) || e->end == e->begin) continue;
      dlpx_tensor *v = NULL;
      if (dlpx_segment_tensor(seg, i, flags, &v) != 0) {
        count = -1;
        break;
      }
      uintptr_t p = (uintptr_t)dlpx_tensor_data(v), q = (uintptr_t)dlpx_tensor_data(all[i]);
      if (p % 64 || q != p || (dlpx_segment_data_offset(seg) + e->begin) % 64 ||
          dlpx_tensor_nbytes(v) != (int64_t)(e->end - e->begin)) {
        fprintf(stderr, "# tensor \"%s\" at %p (data offset %llu + %llu)\n", e->name, (void *)p,
                (unsigned long long)dlpx_segment_data_offset(seg),
                (unsigned long long)e->begin);
        count = -1;
      } else if (!pass) {
        count++;
      }
      dlpx_tensor_free(v);
    }
    for (size_t i = 0; i < n; i++) {
      dlpx_tensor_free(all[i]);
      all[i] = NULL;
    }
  }
  free(all);
  return count;
}

/* The segment |seg| holds what dlpx_save_file saved at |path| from the
 * same tensors and metadata: the same real tensors in the same data order,
 * with the same dtypes, shapes and bytes; the same metadata but for the
 * segment's "dlpx.segment" and "dlpx.pad".  The file itself has no padding
 * (align 8, no dlpx.pad entries), and its data section is its tensors'
 * bytes back to back.  Returns 0, or -1 (saying why on stderr). */
static int same_as_file(const dlpx_segment *seg, const char *path) {
  size_t flen = 0;
  unsigned char *file = read_file(path, &flen);
  if (!file || flen < 8) {
    free(file);
    BAD_LAYOUT("cannot read %s", path);
  }
  uint64_t fn = 0;
  for (int i = 7; i >= 0; i--) fn = fn << 8 | file[i];
  dlpx_st_header *fh = NULL;
  dlpx_tensor *b = NULL;
  int rc = -1;
  const dlpx_st_header *h = dlpx_segment_header(seg);
  if (fn > flen - 8 || (8 + fn) % 8 ||
      dlpx_st_header_parse((char *)file + 8, (size_t)fn, flen - 8 - fn, &fh) != 0) {
    fprintf(stderr, "# %s: bad header\n", path);
    goto out;
  }
  if (dlpx_segment_bytes(seg, 0, &b) != 0) goto out;
  const unsigned char *fdata = file + 8 + fn, *sdata = dlpx_tensor_data(b);
  size_t n = dlpx_st_header_count(fh);
  uint64_t total = 0;
  if (real_count(h) != n || real_count(fh) != n || meta(fh, "dlpx.pad")) {
    fprintf(stderr, "# %zu tensors in the file (%zu real), %zu in the segment\n", n,
            real_count(fh), real_count(h));
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    const dlpx_st_entry *fe = dlpx_st_header_entry(fh, i), *se = real_entry(h, i, NULL);
    int same = se && !strcmp(fe->name, se->name) && fe->dtype.code == se->dtype.code &&
               fe->dtype.bits == se->dtype.bits && fe->dtype.lanes == se->dtype.lanes &&
               fe->ndim == se->ndim && fe->end - fe->begin == se->end - se->begin &&
               fe->begin == total &&
               !memcmp(fdata + fe->begin, sdata + se->begin, (size_t)(fe->end - fe->begin));
    for (int32_t d = 0; same && d < fe->ndim; d++) same = fe->shape[d] == se->shape[d];
    if (!same) {
      fprintf(stderr, "# tensor %zu \"%s\" of the file differs in the segment (\"%s\")\n", i,
              fe->name, se ? se->name : "none");
      goto out;
    }
    total += fe->end - fe->begin;
  }
  if (total != flen - 8 - fn) {
    fprintf(stderr, "# the file's data section has %llu bytes, its tensors %llu\n",
            (unsigned long long)(flen - 8 - fn), (unsigned long long)total);
    goto out;
  }
  size_t fm = dlpx_st_header_metadata_count(fh), extra = 0;
  for (size_t i = 0; i < fm; i++) {
    const char *k, *v, *sv;
    if (dlpx_st_header_metadata(fh, i, &k, &v) != 0 || !(sv = meta(h, k)) || strcmp(v, sv)) {
      fprintf(stderr, "# metadata %zu of the file differs in the segment\n", i);
      goto out;
    }
  }
  for (size_t i = 0; i < dlpx_st_header_metadata_count(h); i++) {
    const char *k, *v;
    if (dlpx_st_header_metadata(h, i, &k, &v) == 0 && !meta(fh, k)) {
      if (strcmp(k, "dlpx.segment") && strcmp(k, "dlpx.pad")) {
        fprintf(stderr, "# metadata \"%s\" of the segment is not the file's\n", k);
        goto out;
      }
      extra++;
    }
  }
  if (extra != 1 + (real_count(h) != dlpx_st_header_count(h))) {
    fprintf(stderr, "# %zu metadata entries of the segment only\n", extra);
    goto out;
  }
  rc = 0;
out:
  dlpx_tensor_free(b);
  dlpx_st_header_free(fh);
  free(file);
  return rc;
}

/* Mappings of this process whose file name contains |needle| (lines of
 * /proc/self/maps). */
static int count_maps(const char *needle) {
  FILE *fp = fopen("/proc/self/maps", "re");
  if (!fp) return -1;
  char line[4608];
  int n = 0;
  while (fgets(line, sizeof line, fp))
    if (strstr(line, needle)) n++;
  fclose(fp);
  return n;
}

/* A set of tensors of several dtypes and layouts (one a strided view). */
enum { NT = 7 };
typedef struct {
  dlpx_tensor *t[NT];
  const char *names[NT];
  dlpx_tensor *base; /* what the strided view is of */
} tset;

static void tset_free(tset *s) {
  for (int i = 0; i < NT; i++) dlpx_tensor_free(s->t[i]);
  dlpx_tensor_free(s->base);
}

static int tset_make(tset *s, unsigned seed) {
  memset(s, 0, sizeof *s);
  static const int64_t s23[] = {2, 3}, s5[] = {5}, s0[] = {0}, s7[] = {7}, s46[] = {4, 6},
                       s64[] = {6, 4}, s100[] = {100};
  static const char *names[NT] = {"w.f32", "idx.i64", "scalar.u8", "empty.bf16", "mask.bool",
                                  "strided.f16", "fp4"};
  memcpy(s->names, names, sizeof names);
  s->t[0] = filled("float32", 2, s23, seed);
  s->t[1] = filled("int64", 1, s5, seed + 1);
  s->t[2] = filled("uint8", 0, NULL, seed + 2);
  s->t[3] = filled("bfloat16", 1, s0, seed + 3);
  s->t[4] = filled("bool", 1, s7, seed + 4);
  s->base = filled("float16", 2, s46, seed + 5);
  if (!s->base || dlpx_tensor_transpose(s->base, &s->t[5]) != 0) return -1; /* 6 x 4, strided */
  (void)s64;
  s->t[6] = filled("float4_e2m1fn", 1, s100, seed + 6);
  for (int i = 0; i < NT; i++)
    if (!s->t[i]) return -1;
  return 0;
}

/* Checks every tensor of |seg| against the set, by name: the segment's
 * real tensors (the entries not named dlpx.pad.*) are the set's, laid out
 * as check_padding wants. */
static int tset_check(const tset *s, const dlpx_segment *seg, uint32_t flags) {
  const dlpx_st_header *h = dlpx_segment_header(seg);
  if (!h || real_count(h) != NT || check_padding(seg, 1) < 0) return -1;
  for (int i = 0; i < NT; i++) {
    size_t k;
    dlpx_tensor *v = NULL;
    if (dlpx_st_header_find(h, s->names[i], &k) != 0) return -1;
    if (dlpx_segment_tensor(seg, k, flags, &v) != 0) return -1;
    int ok = same_elements(v, s->t[i]) &&
             dlpx_tensor_is_readonly(v) == !(flags & DLPX_READ_COPY_ON_WRITE);
    dlpx_tensor_free(v);
    if (!ok) return -1;
  }
  return 0;
}

static int create_set(const tset *s, const char *name, dlpx_segment **out) {
  const char *keys[] = {"format"}, *values[] = {"pt"};
  return dlpx_segment_create(name, NT, s->names, (const dlpx_tensor *const *)s->t, 1, keys,
                             values, 0, out);
}

static int create_one(const char *name, unsigned seed, dlpx_segment **out) {
  static const int64_t shape[] = {3, 5};
  dlpx_tensor *t = filled("float32", 2, shape, seed);
  if (!t) return DLPX_ENOMEM;
  const char *names[] = {"x"};
  const dlpx_tensor *ts[] = {t};
  int rc = dlpx_segment_create(name, 1, names, ts, 0, NULL, NULL, 0, out);
  dlpx_tensor_free(t);
  return rc;
}

/* The first float of tensor 0 of a segment. */
static float first_float(const dlpx_segment *seg) {
  dlpx_tensor *t = NULL;
  if (dlpx_segment_tensor(seg, 0, 0, &t) != 0) return -1.0f;
  float f;
  memcpy(&f, dlpx_tensor_data(t), sizeof f);
  dlpx_tensor_free(t);
  return f;
}

/* ---- making and attaching ---------------------------------------------------- */

static void test_create_anonymous(void) {
  check_live l;
  check_live_begin(&l);
  int fds0 = count_fds();
  tset s;
  ASSERT_EQ(tset_make(&s, 1), 0);
  dlpx_segment *seg = NULL;
  ASSERT_OK(create_set(&s, NULL, &seg));
  ASSERT_TRUE(dlpx_segment_name(seg) == NULL);
  const char *id = dlpx_segment_id(seg);
  ASSERT_TRUE(id != NULL);
  ASSERT_EQ(strlen(id), DLPX_SEGMENT_ID_LEN);
  ASSERT_EQ(strspn(id, "0123456789abcdef"), DLPX_SEGMENT_ID_LEN);
  int fd = dlpx_segment_fd(seg);
  ASSERT_TRUE(fd >= 0);
  ASSERT_EQ(fcntl(fd, F_GET_SEALS) & ALL_SEALS, ALL_SEALS);
  struct stat st;
  ASSERT_EQ(fstat(fd, &st), 0);
  ASSERT_EQ(dlpx_segment_size(seg), st.st_size);
  ASSERT_EQ(dlpx_segment_data_offset(seg) % DLPX_SEGMENT_ALIGN, 0);
  const dlpx_st_header *h = dlpx_segment_header(seg);
  ASSERT_STR_EQ(meta(h, "format"), "pt");
  ASSERT_STR_EQ(meta(h, "dlpx.segment"), id);
  ASSERT_EQ(tset_check(&s, seg, 0), 0);
  ASSERT_EQ(tset_check(&s, seg, DLPX_READ_COPY_ON_WRITE), 0);
  /* the set's sizes leave gaps: there are pads, counted in the metadata */
  ASSERT_TRUE(check_padding(seg, 1) > 0);
  ASSERT_EQ(dlpx_st_header_count(h), NT + (size_t)check_padding(seg, 1));
  ASSERT_STR_EQ(dlpx_st_header_entry(h, 0)->name, "idx.i64"); /* the data order */
  /* every tensor's data is 64-byte aligned in memory too (all but the
   * empty one have bytes) */
  ASSERT_EQ(check_aligned_views(seg), NT - 1);
  dlpx_tensor *t0 = NULL;
  ASSERT_OK(dlpx_segment_tensor(seg, 0, 0, &t0));
  ASSERT_EQ((uintptr_t)dlpx_tensor_data(t0) % 64, 0);
  ASSERT_EQ(dlpx_storage_kind_of(dlpx_tensor_storage(t0)), DLPX_STORAGE_MAPPED);
  dlpx_tensor_free(t0);
  /* the bytes can be neither written nor resized */
  char c = 0;
  ASSERT_EQ(pwrite(fd, &c, 1, 0), -1);
  ASSERT_EQ(ftruncate(fd, 0), -1);
  ASSERT_TRUE(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED);
  /* two creates, two ids */
  dlpx_segment *other = NULL;
  ASSERT_OK(create_set(&s, NULL, &other));
  ASSERT_TRUE(strcmp(dlpx_segment_id(other), id) != 0);
  dlpx_segment_close(other);
  dlpx_segment_close(seg);
  tset_free(&s);
  ASSERT_EQ(count_fds(), fds0);
  ASSERT_NO_LEAKS(&l);
}

/* The image is what dlpx_save_file writes, but for the padding of the
 * header (to 64 bytes), the padding before each tensor (to 64 bytes, the
 * entries dlpx.pad.*, counted under "dlpx.pad") and the "dlpx.segment"
 * metadata: the same tensors in the same order, with the same bytes. */
static void test_image_matches_save(void) {
  tset s;
  ASSERT_EQ(tset_make(&s, 2), 0);
  char path[4200];
  snprintf(path, sizeof path, "%s/set.safetensors", g_dir);
  const char *keys[] = {"format"}, *values[] = {"pt"};
  for (int withsums = 0; withsums < 2; withsums++) {
    uint32_t flags = withsums ? DLPX_SAVE_CHECKSUMS : 0;
    ASSERT_OK(dlpx_save_file(path, NT, s.names, (const dlpx_tensor *const *)s.t, 1, keys, values,
                             flags | DLPX_SAVE_NO_FSYNC));
    dlpx_segment *seg = NULL;
    ASSERT_OK(dlpx_segment_create(NULL, NT, s.names, (const dlpx_tensor *const *)s.t, 1, keys,
                                  values, flags, &seg));
    size_t flen;
    unsigned char *file = read_file(path, &flen);
    ASSERT_TRUE(file != NULL);
    size_t slen = (size_t)dlpx_segment_size(seg);
    unsigned char *img = malloc(slen);
    ASSERT_TRUE(img != NULL);
    ASSERT_EQ(pread(dlpx_segment_fd(seg), img, slen, 0), (ssize_t)slen);
    uint64_t fn = 0, sn = 0;
    for (int i = 7; i >= 0; i--) fn = fn << 8 | file[i], sn = sn << 8 | img[i];
    ASSERT_EQ((8 + fn) % 8, 0);
    ASSERT_EQ((8 + sn) % 64, 0);
    ASSERT_EQ(8 + sn, dlpx_segment_data_offset(seg));
    /* the same tensors, bytes and metadata; the file has no padding */
    ASSERT_EQ(same_as_file(seg, path), 0);
    const dlpx_st_header *h = dlpx_segment_header(seg);
    int npads = check_padding(seg, 1);
    ASSERT_TRUE(npads > 0);
    ASSERT_EQ(dlpx_st_header_count(h), NT + (size_t)npads);
    /* the data sections differ by the padding alone */
    uint64_t padbytes = 0;
    for (size_t i = 0; i < dlpx_st_header_count(h); i++) {
      const dlpx_st_entry *e = dlpx_st_header_entry(h, i);
      if (is_pad(e->name)) padbytes += e->end - e->begin;
    }
    ASSERT_EQ(slen - 8 - sn, flen - 8 - fn + padbytes);
    /* checksums: the file's, for the real tensors only */
    if (withsums) {
      ASSERT_TRUE(meta(h, "dlpx.checksums") != NULL);
      for (size_t i = 0; i < dlpx_st_header_count(h); i++) {
        const dlpx_st_entry *e = dlpx_st_header_entry(h, i);
        uint64_t chunk;
        size_t count;
        const uint64_t *hashes;
        int has = dlpx_st_header_checksums(h, i, &chunk, &count, &hashes);
        if (is_pad(e->name) || e->end == e->begin) {
          ASSERT_TRUE(is_pad(e->name) ? has == 0 : has == 0 || count == 0);
          continue;
        }
        ASSERT_EQ(has, 1);
        ASSERT_EQ(count, 1);
        ASSERT_EQ(hashes[0], dlpx_xxh3(img + 8 + sn + e->begin, (size_t)(e->end - e->begin)));
      }
    } else {
      ASSERT_TRUE(meta(h, "dlpx.checksums") == NULL);
    }
    /* the header is the file's entries, then the pads: __metadata__ first */
    char *sj = strndup((char *)img + 8, (size_t)sn);
    ASSERT_TRUE(sj != NULL);
    ASSERT_EQ(strncmp(sj, "{\"__metadata__\":{", 17), 0);
    char *first_pad = strstr(sj, "\"" PAD_PREFIX);
    ASSERT_TRUE(first_pad != NULL);
    for (int i = 0; i < NT; i++) {
      char quoted[64];
      snprintf(quoted, sizeof quoted, "\"%s\":{", s.names[i]);
      char *at = strstr(sj, quoted);
      ASSERT_TRUE(at != NULL && at < first_pad);
    }
    free(sj);
    /* and it parses as a header on its own */
    dlpx_st_header *ph = NULL;
    ASSERT_OK(dlpx_st_header_parse((char *)img + 8, (size_t)sn, slen - 8 - sn, &ph));
    ASSERT_EQ(dlpx_st_header_count(ph), NT + (size_t)npads);
    ASSERT_EQ(real_count(ph), NT);
    dlpx_st_header_free(ph);
    free(file);
    free(img);
    dlpx_segment_close(seg);
  }
  /* no metadata given: the id and the pad count make __metadata__; one
   * tensor needs no padding, and no "dlpx.pad" is there */
  dlpx_segment *seg = NULL;
  ASSERT_OK(dlpx_segment_create(NULL, 2, s.names, (const dlpx_tensor *const *)s.t, 0, NULL, NULL,
                                0, &seg));
  ASSERT_EQ(dlpx_st_header_has_metadata(dlpx_segment_header(seg)), 1);
  ASSERT_EQ(dlpx_st_header_metadata_count(dlpx_segment_header(seg)), 2);
  ASSERT_EQ(check_padding(seg, 1), 1);
  dlpx_segment_close(seg);
  ASSERT_OK(dlpx_segment_create(NULL, 1, s.names, (const dlpx_tensor *const *)s.t, 0, NULL, NULL,
                                0, &seg));
  ASSERT_EQ(dlpx_st_header_has_metadata(dlpx_segment_header(seg)), 1);
  ASSERT_EQ(dlpx_st_header_metadata_count(dlpx_segment_header(seg)), 1);
  ASSERT_EQ(check_padding(seg, 1), 0);
  ASSERT_TRUE(meta(dlpx_segment_header(seg), "dlpx.pad") == NULL);
  dlpx_segment_close(seg);
  tset_free(&s);
}

/* Tensors of many dtypes and sizes (an int64 scalar first, odd-sized
 * uint8 ones, empty ones between): in a segment each one with bytes starts
 * at a multiple of 64, in the data section and in memory, however the
 * segment is made, flagged or attached; the gaps are the pads, counted in
 * the metadata; a file saved from the same tensors has none, and the same
 * tensors in the same order. */
enum { NA = 17 };
static const struct {
  const char *name, *dtype;
  int32_t ndim;
  int64_t shape[2];
} aligned_spec[NA] = {
    {"a.scalar.i64", "int64", 0, {0, 0}},   {"b.f64", "float64", 1, {3, 0}},
    {"c.f32", "float32", 1, {5, 0}},        {"c.f32.empty", "float32", 2, {0, 3}},
    {"d.i32", "int32", 1, {1, 0}},          {"e.bf16", "bfloat16", 0, {0, 0}},
    {"f.f16", "float16", 2, {2, 3}},        {"g.u8.1", "uint8", 1, {1, 0}},
    {"g.u8.127", "uint8", 1, {127, 0}},     {"g.u8.3", "uint8", 1, {3, 0}},
    {"g.u8.63", "uint8", 1, {63, 0}},       {"g.u8.64", "uint8", 1, {64, 0}},
    {"g.u8.65", "uint8", 2, {5, 13}},       {"h.i8.empty", "int8", 1, {0, 0}},
    {"i.bool", "bool", 1, {9, 0}},          {"j.f4", "float4_e2m1fn", 1, {6, 0}},
    {"k.f8", "float8_e4m3fn", 1, {5, 0}},
};

/* The pads an aligned layout of |h|'s real tensors needs, counted apart
 * from the pads the header has. */
static int pads_needed(const dlpx_st_header *h) {
  uint64_t pos = 0;
  int pads = 0;
  for (size_t k = 0; k < real_count(h); k++) {
    const dlpx_st_entry *e = real_entry(h, k, NULL);
    uint64_t len = e->end - e->begin;
    if (len && pos % 64) pads++, pos += 64 - pos % 64;
    pos += len;
  }
  return pads;
}

/* Every tensor of the spec is in |seg| with the values of |ts|. */
static int aligned_check(const dlpx_segment *seg, dlpx_tensor *const *ts) {
  const dlpx_st_header *h = dlpx_segment_header(seg);
  int nonempty = 0;
  for (int i = 0; i < NA; i++) {
    size_t k;
    dlpx_tensor *v = NULL;
    if (dlpx_st_header_find(h, aligned_spec[i].name, &k) != 0 ||
        dlpx_segment_tensor(seg, k, 0, &v) != 0) {
      fprintf(stderr, "# no tensor \"%s\"\n", aligned_spec[i].name);
      return -1;
    }
    int ok = same_elements(v, ts[i]);
    nonempty += dlpx_tensor_nbytes(v) > 0;
    dlpx_tensor_free(v);
    if (!ok) {
      fprintf(stderr, "# tensor \"%s\" differs\n", aligned_spec[i].name);
      return -1;
    }
  }
  int pads = check_padding(seg, 1);
  if (pads < 0 || pads != pads_needed(h) || check_aligned_views(seg) != nonempty) return -1;
  return pads;
}

static void test_aligned_layout(void) {
  check_live l;
  check_live_begin(&l);
  int fds0 = count_fds();
  dlpx_tensor *ts[NA + 1];
  const char *names[NA + 1];
  for (int i = 0; i < NA; i++) {
    names[i] = aligned_spec[i].name;
    ts[i] = filled(aligned_spec[i].dtype, aligned_spec[i].ndim, aligned_spec[i].shape,
                   (unsigned)(40 + i));
    ASSERT_TRUE(ts[i] != NULL);
  }
  names[NA] = "c.z.alias"; /* with DLPX_SAVE_ALIASES_ONCE: stored once, as c.f32 (first by name) */
  ts[NA] = ts[2];
  char path[4200];
  snprintf(path, sizeof path, "%s/aligned.safetensors", g_dir);
  static const uint32_t flagsets[] = {0, DLPX_SAVE_CHECKSUMS,
                                      DLPX_SAVE_CHECKSUMS | DLPX_SAVE_ALIASES_ONCE,
                                      DLPX_SAVE_METADATA};
  const char *keys[] = {"format", "note"}, *values[] = {"pt", "aligned"};
  for (size_t f = 0; f < sizeof flagsets / sizeof flagsets[0]; f++) {
    uint32_t flags = flagsets[f];
    size_t n = (flags & DLPX_SAVE_ALIASES_ONCE) ? NA + 1 : NA;
    size_t nmeta = f == 3 ? 0 : f == 0 ? 1 : 2;
    ASSERT_OK(dlpx_save_file(path, n, names, (const dlpx_tensor *const *)ts, nmeta, keys, values,
                             flags | DLPX_SAVE_NO_FSYNC));
    for (int named = 0; named < 2; named++) {
      const char *name = named ? sname("aligned") : NULL;
      dlpx_segment *seg = NULL, *again = NULL;
      ASSERT_OK(dlpx_segment_create(name, n, names, (const dlpx_tensor *const *)ts, nmeta, keys,
                                    values, flags, &seg));
      const dlpx_st_header *h = dlpx_segment_header(seg);
      ASSERT_EQ(real_count(h), NA);
      /* the int64 scalar is first; the float64 after it is at 64, after
       * the first pad */
      const dlpx_st_entry *e0 = dlpx_st_header_entry(h, 0), *e1 = dlpx_st_header_entry(h, 1),
                          *e2 = dlpx_st_header_entry(h, 2);
      ASSERT_STR_EQ(e0->name, "a.scalar.i64");
      ASSERT_EQ(e0->begin, 0);
      ASSERT_EQ(e0->end, 8);
      ASSERT_STR_EQ(e1->name, "dlpx.pad.0");
      ASSERT_EQ(e1->begin, 8);
      ASSERT_EQ(e1->end, 64);
      ASSERT_EQ(e1->shape[0], 56);
      ASSERT_STR_EQ(e2->name, "b.f64");
      ASSERT_EQ(e2->begin, 64);
      int pads = aligned_check(seg, ts);
      ASSERT_TRUE(pads > 5);
      ASSERT_EQ(dlpx_st_header_count(h), NA + (size_t)pads);
      ASSERT_EQ(same_as_file(seg, path), 0);
      if (flags & DLPX_SAVE_ALIASES_ONCE)
        ASSERT_STR_EQ(meta(h, "dlpx.aliases"), "{\"c.z.alias\":\"c.f32\"}");
      /* attached again: by its descriptor, by its name */
      ASSERT_OK(dlpx_segment_attach_fd(dlpx_segment_fd(seg), 0, &again));
      ASSERT_EQ(aligned_check(again, ts), pads);
      dlpx_segment_close(again);
      if (named) {
        ASSERT_OK(dlpx_segment_open(name, 0, &again));
        ASSERT_EQ(aligned_check(again, ts), pads);
        dlpx_segment_close(again);
        ASSERT_OK(dlpx_segment_unlink(name));
      }
      dlpx_segment_close(seg);
    }
  }
  /* sizes that are multiples of 64 need no pads, and have no "dlpx.pad" */
  {
    static const int64_t s16[] = {16}, s64[] = {64}, s0[] = {0};
    dlpx_tensor *a = filled("float32", 1, s16, 1), *b = filled("uint8", 1, s64, 2),
                *z = filled("float64", 1, s0, 3);
    ASSERT_TRUE(a && b && z);
    const char *nm[] = {"a", "b", "z"};
    const dlpx_tensor *three[] = {a, b, z};
    dlpx_segment *seg = NULL;
    ASSERT_OK(dlpx_segment_create(NULL, 3, nm, three, 0, NULL, NULL, 0, &seg));
    ASSERT_EQ(check_padding(seg, 1), 0);
    ASSERT_EQ(dlpx_st_header_count(dlpx_segment_header(seg)), 3);
    ASSERT_TRUE(meta(dlpx_segment_header(seg), "dlpx.pad") == NULL);
    ASSERT_EQ(check_aligned_views(seg), 2);
    dlpx_segment_close(seg);
    dlpx_tensor_free(a);
    dlpx_tensor_free(b);
    dlpx_tensor_free(z);
  }
  for (int i = 0; i < NA; i++) dlpx_tensor_free(ts[i]);
  ASSERT_EQ(count_run_files(), 0);
  ASSERT_EQ(count_fds(), fds0);
  ASSERT_NO_LEAKS(&l);
}

/* Tensor names starting with "dlpx.pad." are the padding's: a segment
 * refuses them (anonymous or named, stored or as an alias, empty or not);
 * dlpx_save_file, which pads nothing, saves them as any name. */
static void test_pad_names_reserved(void) {
  check_live l;
  check_live_begin(&l);
  static const int64_t s3[] = {3}, s0[] = {0};
  dlpx_tensor *u = filled("uint8", 1, s3, 1), *x = filled("float32", 1, s3, 2),
              *z = filled("int16", 1, s0, 3);
  ASSERT_TRUE(u && x && z);
  char path[4200];
  snprintf(path, sizeof path, "%s/padname.safetensors", g_dir);
  static const char *reserved[] = {"dlpx.pad.0", "dlpx.pad.7", "dlpx.pad.", "dlpx.pad.x"};
  for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
    for (int kind = 0; kind < 3; kind++) {
      /* kind 0: a tensor of bytes; 1: an empty one; 2: an alias of "x" */
      const char *names[] = {"x", reserved[i]};
      const dlpx_tensor *ts[] = {x, kind == 0 ? u : kind == 1 ? z : x};
      uint32_t flags = kind == 2 ? DLPX_SAVE_ALIASES_ONCE : 0;
      dlpx_segment *seg = (dlpx_segment *)&l;
      ASSERT_RC(DLPX_EINVAL, dlpx_segment_create(NULL, 2, names, ts, 0, NULL, NULL, flags, &seg));
      ASSERT_MSG("reserved");
      ASSERT_MSG(reserved[i]);
      ASSERT_TRUE(seg == NULL);
      ASSERT_RC(DLPX_EINVAL, dlpx_segment_create(sname("padname"), 2, names, ts, 0, NULL, NULL,
                                                 flags, &seg));
      ASSERT_MSG("reserved");
      ASSERT_EQ(count_run_files(), 0);
      ASSERT_RC(DLPX_ENOENT, dlpx_segment_open(sname("padname"), 0, &seg));
      /* a file takes the name */
      ASSERT_OK(dlpx_save_file(path, 2, names, ts, 0, NULL, NULL, flags | DLPX_SAVE_NO_FSYNC));
      dlpx_file *file = NULL;
      ASSERT_OK(dlpx_file_open(path, 0, &file));
      const dlpx_st_header *h = dlpx_file_header(file);
      size_t k;
      ASSERT_EQ(dlpx_st_header_count(h), kind == 2 ? 1 : 2);
      ASSERT_TRUE(meta(h, "dlpx.pad") == NULL);
      if (kind == 2) {
        ASSERT_TRUE(meta(h, "dlpx.aliases") != NULL);
        ASSERT_TRUE(strstr(meta(h, "dlpx.aliases"), reserved[i]) != NULL);
      } else {
        ASSERT_OK(dlpx_st_header_find(h, reserved[i], &k));
        const dlpx_st_entry *e = dlpx_st_header_entry(h, k);
        ASSERT_EQ(e->end - e->begin, kind == 0 ? 3 : 0);
        if (kind == 0) {
          size_t flen;
          unsigned char *bytes = read_file(path, &flen);
          ASSERT_TRUE(bytes != NULL);
          ASSERT_EQ(memcmp(bytes + dlpx_file_data_offset(file) + e->begin, dlpx_tensor_data(u),
                           3),
                    0);
          free(bytes);
        }
      }
      dlpx_file_close(file);
    }
  }
  /* names that only look alike are fine, and are real tensors */
  const char *alike[] = {"dlpx.pad", "dlpx.padding", "x.dlpx.pad.0", "DLPX.PAD.0"};
  static const int64_t s5[] = {5};
  dlpx_tensor *four[4];
  for (int i = 0; i < 4; i++) ASSERT_TRUE((four[i] = filled("uint8", 1, s5, 10u + (unsigned)i)));
  dlpx_segment *seg = NULL;
  ASSERT_OK(dlpx_segment_create(NULL, 4, alike, (const dlpx_tensor *const *)four, 0, NULL, NULL, 0,
                                &seg));
  const dlpx_st_header *h = dlpx_segment_header(seg);
  ASSERT_EQ(real_count(h), 4);
  ASSERT_EQ(check_padding(seg, 1), 3);
  for (int i = 0; i < 4; i++) {
    size_t k;
    dlpx_tensor *v = NULL;
    ASSERT_OK(dlpx_st_header_find(h, alike[i], &k));
    ASSERT_OK(dlpx_segment_tensor(seg, k, 0, &v));
    ASSERT_EQ(same_elements(v, four[i]), 1);
    dlpx_tensor_free(v);
  }
  dlpx_segment_close(seg);
  for (int i = 0; i < 4; i++) dlpx_tensor_free(four[i]);
  dlpx_tensor_free(u);
  dlpx_tensor_free(x);
  dlpx_tensor_free(z);
  ASSERT_NO_LEAKS(&l);
}

static void test_create_errors(void) {
  tset s;
  ASSERT_EQ(tset_make(&s, 3), 0);
  dlpx_segment *seg = (dlpx_segment *)&s; /* set to NULL on failure */
  const char *dup[] = {"a", "a"};
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_create(NULL, 2, dup, (const dlpx_tensor *const *)s.t, 0,
                                             NULL, NULL, 0, &seg));
  ASSERT_TRUE(seg == NULL);
  const char *keys[] = {"dlpx.segment"}, *values[] = {"0123"};
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_create(NULL, 1, s.names, (const dlpx_tensor *const *)s.t,
                                             1, keys, values, 0, &seg));
  ASSERT_MSG("reserved");
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_create(NULL, 1, s.names, (const dlpx_tensor *const *)s.t,
                                             0, NULL, NULL, 0x100, &seg));
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_create(NULL, 1, s.names, (const dlpx_tensor *const *)s.t,
                                             0, NULL, NULL, 0, NULL));
  /* overlapping tensors are refused as dlpx_save_file refuses them */
  const dlpx_tensor *twice[] = {s.t[0], s.t[0]};
  const char *two[] = {"a", "b"};
  ASSERT_RC(DLPX_EOVERLAP, dlpx_segment_create(NULL, 2, two, twice, 0, NULL, NULL, 0, &seg));
  ASSERT_OK(dlpx_segment_create(NULL, 2, two, twice, 0, NULL, NULL, DLPX_SAVE_ALIASES_ONCE, &seg));
  ASSERT_EQ(dlpx_st_header_count(dlpx_segment_header(seg)), 1);
  ASSERT_TRUE(meta(dlpx_segment_header(seg), "dlpx.aliases") != NULL);
  dlpx_segment_close(seg);
  /* bad names */
  char longname[DLPX_SEGMENT_NAME_MAX + 2];
  memset(longname, 'a', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  const char *bad[] = {"", ".hidden", "a/b", "a b", "é", longname};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ASSERT_RC(DLPX_EINVAL, create_one(bad[i], 1, &seg));
    ASSERT_RC(DLPX_EINVAL, dlpx_segment_open(bad[i], 0, &seg));
    ASSERT_RC(DLPX_EINVAL, dlpx_segment_unlink(bad[i]));
  }
  longname[DLPX_SEGMENT_NAME_MAX - 20] = '\0'; /* fits, with our prefix */
  char okname[DLPX_SEGMENT_NAME_MAX + 80];
  snprintf(okname, sizeof okname, "%s%s", g_prefix, longname);
  ASSERT_OK(create_one(okname, 1, &seg));
  dlpx_segment_close(seg);
  ASSERT_OK(dlpx_segment_unlink(okname));
  tset_free(&s);
  ASSERT_EQ(count_run_files(), 0);
}

static void test_views(void) {
  check_live l;
  check_live_begin(&l);
  dlpx_segment *seg = NULL, *again = NULL;
  ASSERT_OK(create_one(NULL, 4, &seg));
  float orig = first_float(seg);
  /* a copy-on-write view is writable; its writes stay in this mapping */
  dlpx_tensor *cow = NULL, *ro = NULL;
  ASSERT_OK(dlpx_segment_tensor(seg, 0, DLPX_READ_COPY_ON_WRITE, &cow));
  ASSERT_EQ(dlpx_tensor_is_readonly(cow), 0);
  ASSERT_OK(dlpx_segment_tensor(seg, 0, 0, &ro));
  ASSERT_EQ(dlpx_tensor_is_readonly(ro), 1);
  ASSERT_TRUE(dlpx_tensor_flags(ro) & DLPX_TENSOR_READONLY);
  float nf = orig + 1000.0f;
  memcpy(dlpx_tensor_data(cow), &nf, sizeof nf);
  /* another attach (in this process or any other) sees the segment's bytes */
  ASSERT_OK(dlpx_segment_attach_fd(dlpx_segment_fd(seg), 0, &again));
  ASSERT_TRUE(first_float(again) == orig);
  ASSERT_STR_EQ(dlpx_segment_id(again), dlpx_segment_id(seg));
  ASSERT_TRUE(dlpx_segment_fd(again) != dlpx_segment_fd(seg)); /* its own descriptor */
  /* the whole data section as bytes */
  dlpx_tensor *bytes = NULL;
  ASSERT_OK(dlpx_segment_bytes(again, 0, &bytes));
  ASSERT_EQ(dlpx_tensor_ndim(bytes), 1);
  ASSERT_EQ(dlpx_tensor_shape(bytes)[0], 3 * 5 * 4);
  ASSERT_EQ(dlpx_tensor_is_readonly(bytes), 1);
  float fb;
  memcpy(&fb, dlpx_tensor_data(bytes), sizeof fb);
  ASSERT_TRUE(fb == orig);
  /* all tensors at once; bad index and flags */
  dlpx_tensor *all[1] = {NULL};
  ASSERT_OK(dlpx_segment_tensors(again, 0, all));
  dlpx_tensor *t = (dlpx_tensor *)seg;
  ASSERT_RC(DLPX_EINDEX, dlpx_segment_tensor(again, 1, 0, &t));
  ASSERT_TRUE(t == NULL);
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_tensor(again, 0, DLPX_READ_VERIFY, &t));
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_bytes(NULL, 0, &t));
  /* views outlive the segment */
  dlpx_segment_close(seg);
  dlpx_segment_close(again);
  float f;
  memcpy(&f, dlpx_tensor_data(all[0]), sizeof f);
  ASSERT_TRUE(f == orig);
  memcpy(&f, dlpx_tensor_data(cow), sizeof f);
  ASSERT_TRUE(f == nf);
  dlpx_tensor_free(all[0]);
  dlpx_tensor_free(bytes);
  dlpx_tensor_free(cow);
  dlpx_tensor_free(ro);
  ASSERT_NO_LEAKS(&l);
}

static void test_empty_segments(void) {
  check_live l;
  check_live_begin(&l);
  dlpx_segment *seg = NULL, *again = NULL;
  ASSERT_OK(dlpx_segment_create(NULL, 0, NULL, NULL, 0, NULL, NULL, 0, &seg));
  ASSERT_EQ(dlpx_st_header_count(dlpx_segment_header(seg)), 0);
  ASSERT_EQ(dlpx_segment_size(seg), dlpx_segment_data_offset(seg));
  dlpx_tensor *b = NULL;
  ASSERT_OK(dlpx_segment_bytes(seg, 0, &b));
  ASSERT_EQ(dlpx_tensor_numel(b), 0);
  dlpx_tensor_free(b);
  ASSERT_OK(dlpx_segment_tensors(seg, 0, &b)); /* no entries: nothing written */
  ASSERT_OK(dlpx_segment_attach_fd(dlpx_segment_fd(seg), 0, &again));
  dlpx_segment_close(again);
  dlpx_segment_close(seg);
  /* only zero-size tensors: an empty data section */
  static const int64_t s0[] = {0, 4};
  dlpx_tensor *z = filled("float64", 2, s0, 0);
  ASSERT_TRUE(z != NULL);
  const char *names[] = {"z"};
  const dlpx_tensor *ts[] = {z};
  ASSERT_OK(dlpx_segment_create(NULL, 1, names, ts, 0, NULL, NULL, 0, &seg));
  dlpx_tensor *v = NULL;
  ASSERT_OK(dlpx_segment_tensor(seg, 0, 0, &v));
  ASSERT_EQ(dlpx_tensor_numel(v), 0);
  ASSERT_EQ(dlpx_tensor_shape(v)[1], 4);
  dlpx_tensor_free(v);
  dlpx_segment_close(seg);
  dlpx_tensor_free(z);
  ASSERT_NO_LEAKS(&l);
}

/* The header bytes that were validated stay with the segment, for readers
 * that parse them again (the Python layer), and a FIFO planted under a
 * segment's name neither blocks dlpx_segment_open nor attaches. */
static void test_header_json_and_fifo(void) {
  static const int64_t s3[] = {3};
  dlpx_tensor *t = filled("float32", 1, s3, 0);
  ASSERT_TRUE(t != NULL);
  const char *names[] = {"t"};
  const dlpx_tensor *ts[] = {t};
  dlpx_segment *seg = NULL;
  ASSERT_OK(dlpx_segment_create(NULL, 1, names, ts, 0, NULL, NULL, 0, &seg));
  size_t len = 0;
  const char *json = dlpx_segment_header_json(seg, &len);
  ASSERT_TRUE(json != NULL);
  ASSERT_EQ(len, dlpx_segment_data_offset(seg) - 8);
  char *file = malloc(len);
  ASSERT_TRUE(file != NULL);
  ASSERT_EQ(pread(dlpx_segment_fd(seg), file, len, 8), (ssize_t)len);
  ASSERT_TRUE(memcmp(json, file, len) == 0);
  ASSERT_EQ(json[0], '{');
  free(file);
  dlpx_segment_close(seg);
  ASSERT_TRUE(dlpx_segment_header_json(NULL, &len) == NULL);
  ASSERT_EQ(len, 0);
  void *data = NULL;
  ASSERT_OK(dlpx_segment_build(NULL, 64, &data, &seg));
  ASSERT_TRUE(dlpx_segment_header_json(seg, NULL) == NULL); /* not sealed yet */
  dlpx_segment_close(seg);
  dlpx_tensor_free(t);

  char name[64], path[128];
  snprintf(name, sizeof name, "dlpxtest-%d-fifo", (int)getpid());
  snprintf(path, sizeof path, DLPX_SEGMENT_DIR "/" DLPX_SEGMENT_PREFIX "%s", name);
  ASSERT_EQ(mkfifo(path, 0600), 0);
  ASSERT_RC(DLPX_EFORMAT, dlpx_segment_open(name, 0, &seg));
  ASSERT_TRUE(seg == NULL);
  ASSERT_OK(dlpx_segment_unlink(name));
}

static void test_named(void) {
  check_live l;
  check_live_begin(&l);
  int fds0 = count_fds();
  tset s;
  ASSERT_EQ(tset_make(&s, 5), 0);
  const char *name = sname("named");
  dlpx_segment *seg = NULL, *opened = NULL, *dup = NULL;
  ASSERT_OK(create_set(&s, name, &seg));
  ASSERT_STR_EQ(dlpx_segment_name(seg), name);
  struct stat st;
  ASSERT_EQ(lstat(spath(name), &st), 0);
  ASSERT_EQ(st.st_mode & 07777, 0400);
  ASSERT_EQ(st.st_uid, geteuid());
  ASSERT_EQ(count_run_files(), 1); /* no temporary file left */
  /* the segment's own descriptor cannot write */
  ASSERT_EQ(fcntl(dlpx_segment_fd(seg), F_GETFL) & O_ACCMODE, O_RDONLY);
  ASSERT_OK(dlpx_segment_open(name, 0, &opened));
  ASSERT_STR_EQ(dlpx_segment_name(opened), name);
  ASSERT_STR_EQ(dlpx_segment_id(opened), dlpx_segment_id(seg));
  ASSERT_EQ(tset_check(&s, opened, 0), 0);
  ASSERT_EQ(dlpx_segment_data_offset(opened) % 64, 0);
  /* a name is made once */
  ASSERT_RC(DLPX_EIO, create_set(&s, name, &dup));
  ASSERT_MSG("exists");
  void *data = NULL;
  ASSERT_RC(DLPX_EIO, dlpx_segment_build(name, 64, &data, &dup));
  ASSERT_EQ(count_run_files(), 1);
  /* named segments are opened by name, not fetched */
  char address[DLPX_SEGMENT_ADDRESS_MAX];
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_publish(seg, address));
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_publish(opened, address));
  /* unlinked: gone for new readers, there for those who have it */
  ASSERT_OK(dlpx_segment_unlink(name));
  ASSERT_RC(DLPX_ENOENT, dlpx_segment_unlink(name));
  ASSERT_RC(DLPX_ENOENT, dlpx_segment_open(name, 0, &dup));
  ASSERT_TRUE(dup == NULL);
  ASSERT_EQ(tset_check(&s, opened, 0), 0);
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_open(name, 1, &dup));
  dlpx_segment_close(opened);
  dlpx_segment_close(seg);
  tset_free(&s);
  ASSERT_EQ(count_run_files(), 0);
  ASSERT_EQ(count_fds(), fds0);
  ASSERT_NO_LEAKS(&l);
}

/* ---- dlpx_segment_build ---------------------------------------------------------- */

/* The image dlpx_save_file makes of one tensor, new. */
static unsigned char *saved_image(unsigned seed, size_t *len) {
  static const int64_t shape[] = {4, 3};
  dlpx_tensor *t = filled("int32", 2, shape, seed);
  char path[4200];
  snprintf(path, sizeof path, "%s/one.safetensors", g_dir);
  const char *names[] = {"t"};
  const dlpx_tensor *ts[] = {t};
  unsigned char *img = NULL;
  if (t && dlpx_save_file(path, 1, names, ts, 0, NULL, NULL, DLPX_SAVE_NO_FSYNC) == 0)
    img = read_file(path, len);
  dlpx_tensor_free(t);
  return img;
}

/* The first byte of tensor 0 of a segment, through a fresh attach of its
 * descriptor (-1 when that fails). */
static int first_byte_attached(int fd) {
  dlpx_segment *seg = NULL;
  dlpx_tensor *t = NULL;
  int c = -1;
  if (dlpx_segment_attach_fd(fd, 0, &seg) == 0 && dlpx_segment_tensor(seg, 0, 0, &t) == 0)
    c = *(const unsigned char *)dlpx_tensor_data(t);
  dlpx_tensor_free(t);
  dlpx_segment_close(seg);
  return c;
}

static void test_build_seal(void) {
  check_live l;
  check_live_begin(&l);
  int fds0 = count_fds();
  size_t len;
  unsigned char *img = saved_image(6, &len);
  ASSERT_TRUE(img != NULL);
  for (int named = 0; named < 2; named++) {
    const char *name = named ? sname("built") : NULL;
    /* the mappings of the segment's memfd or file */
    char needle[128];
    if (named) snprintf(needle, sizeof needle, "/dev/shm/dlpx.%s", g_prefix);
    else snprintf(needle, sizeof needle, "/memfd:dlpx (deleted)");
    int maps0 = count_maps(needle);
    ASSERT_TRUE(maps0 >= 0);
    void *data = NULL;
    dlpx_segment *seg = NULL, *other = NULL;
    ASSERT_OK(dlpx_segment_build(name, len, &data, &seg));
    ASSERT_TRUE(data != NULL);
    ASSERT_EQ(dlpx_segment_fd(seg), -1);
    ASSERT_EQ(dlpx_segment_size(seg), len);
    ASSERT_EQ(count_maps(needle), maps0 + 1);
    dlpx_tensor *t = NULL;
    ASSERT_RC(DLPX_ESTATE, dlpx_segment_tensor(seg, 0, 0, &t));
    char address[DLPX_SEGMENT_ADDRESS_MAX];
    ASSERT_RC(DLPX_EINVAL, dlpx_segment_publish(seg, address));
    if (named) {
      ASSERT_RC(DLPX_ENOENT, dlpx_segment_open(name, 0, &other)); /* not before seal */
    }
    memcpy(data, img, len);
    ASSERT_OK(dlpx_segment_seal(seg));
    ASSERT_RC(DLPX_ESTATE, dlpx_segment_seal(seg));
    int fd = dlpx_segment_fd(seg);
    ASSERT_TRUE(fd >= 0);
    ASSERT_TRUE(dlpx_segment_id(seg) == NULL); /* another writer's image carries none */
    ASSERT_EQ(dlpx_segment_size(seg), len);
    uint64_t off = dlpx_segment_data_offset(seg);
    ASSERT_OK(dlpx_segment_tensor(seg, 0, 0, &t));
    ASSERT_EQ(memcmp(dlpx_tensor_data(t), img + off, 48), 0);
    /* the pointer of dlpx_segment_build still reads the image (a private
     * mapping at the same address, besides the segment's own) */
    ASSERT_EQ(memcmp(data, img, len), 0);
    ASSERT_EQ(count_maps(needle), maps0 + 2);
    /* a write through it stays private: neither the segment's descriptor,
     * nor its mapping, nor a fresh attach, nor a reader by name sees it */
    unsigned char *p = (unsigned char *)data + off;
    unsigned char orig = img[off], changed = (unsigned char)(orig ^ 0xA5);
    *p = changed;
    ASSERT_EQ(*(volatile unsigned char *)p, changed);
    unsigned char c = 0;
    ASSERT_EQ(pread(fd, &c, 1, (off_t)off), 1);
    ASSERT_EQ(c, orig);
    ASSERT_EQ(*(const unsigned char *)dlpx_tensor_data(t), orig);
    dlpx_tensor_free(t);
    ASSERT_EQ(first_byte_attached(fd), orig);
    ASSERT_EQ(memcmp((unsigned char *)data + off + 1, img + off + 1, len - off - 1), 0);
    if (named) {
      ASSERT_OK(dlpx_segment_open(name, 0, &other));
      ASSERT_EQ(first_byte_attached(dlpx_segment_fd(other)), orig);
      dlpx_segment_close(other);
      ASSERT_OK(dlpx_segment_unlink(name));
    } else {
      /* still sealed, every seal: the private mapping does not hold them off */
      ASSERT_EQ(fcntl(fd, F_GET_SEALS) & ALL_SEALS, ALL_SEALS);
      ASSERT_EQ(pwrite(fd, &c, 1, 0), -1);
      ASSERT_TRUE(mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED);
      ASSERT_OK(dlpx_segment_attach_fd(fd, 0, &other));
      ASSERT_EQ(fcntl(dlpx_segment_fd(other), F_GET_SEALS) & ALL_SEALS, ALL_SEALS);
      dlpx_segment_close(other);
      /* sealed but without an id: nothing to fetch it by */
      ASSERT_RC(DLPX_EINVAL, dlpx_segment_publish(seg, address));
    }
    dlpx_segment_close(seg);
    ASSERT_EQ(count_maps(needle), maps0); /* close unmapped the pointer's pages */

    /* a bad image: the seal fails, the segment is discarded; the pointer
     * still reads what was written, until close */
    ASSERT_OK(dlpx_segment_build(name, len, &data, &seg));
    memcpy(data, img, len);
    ((unsigned char *)data)[9] = 'X'; /* breaks the JSON */
    ASSERT_RC(DLPX_EFORMAT, dlpx_segment_seal(seg));
    ASSERT_EQ(((unsigned char *)data)[9], 'X');
    ASSERT_EQ(memcmp((unsigned char *)data + 10, img + 10, len - 10), 0);
    ASSERT_RC(DLPX_ESTATE, dlpx_segment_tensor(seg, 0, 0, &t));
    ASSERT_RC(DLPX_ESTATE, dlpx_segment_seal(seg));
    ASSERT_EQ(dlpx_segment_fd(seg), -1);
    if (named) ASSERT_RC(DLPX_ENOENT, dlpx_segment_open(name, 0, &other));
    ASSERT_EQ(count_run_files(), 0);
    dlpx_segment_close(seg);
    ASSERT_EQ(count_maps(needle), maps0);
    /* closed before seal: discarded */
    ASSERT_OK(dlpx_segment_build(name, len, &data, &seg));
    dlpx_segment_close(seg);
    ASSERT_EQ(count_run_files(), 0);
    ASSERT_EQ(count_maps(needle), maps0);
  }
  void *data = NULL;
  dlpx_segment *seg = NULL;
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_build(NULL, 7, &data, &seg));
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_build(".x", 64, &data, &seg));
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_build(NULL, 64, NULL, &seg));
  ASSERT_RC(DLPX_ESTATE, dlpx_segment_seal(NULL));
  free(img);
  ASSERT_EQ(count_fds(), fds0);
  ASSERT_NO_LEAKS(&l);
}

/* An image of dlpx_segment_create (an id, the padding) given as bytes to
 * dlpx_segment_build: sealed, it is that segment again, fetchable by the
 * id; writes through the build pointer after the seal reach no fetched
 * copy. */
static void test_build_from_image(void) {
  check_live l;
  check_live_begin(&l);
  int fds0 = count_fds();
  tset s;
  ASSERT_EQ(tset_make(&s, 19), 0);
  dlpx_segment *src = NULL, *seg = NULL, *got = NULL;
  ASSERT_OK(create_set(&s, NULL, &src));
  size_t len = (size_t)dlpx_segment_size(src);
  unsigned char *img = malloc(len);
  ASSERT_TRUE(img != NULL);
  ASSERT_EQ(pread(dlpx_segment_fd(src), img, len, 0), (ssize_t)len);
  char id[DLPX_SEGMENT_ID_LEN + 1];
  memcpy(id, dlpx_segment_id(src), sizeof id);
  int npads = check_padding(src, 1);
  ASSERT_TRUE(npads > 0);
  dlpx_segment_close(src);
  void *data = NULL;
  ASSERT_OK(dlpx_segment_build(NULL, len, &data, &seg));
  memcpy(data, img, len);
  ASSERT_OK(dlpx_segment_seal(seg));
  ASSERT_STR_EQ(dlpx_segment_id(seg), id);
  ASSERT_EQ(dlpx_segment_data_offset(seg) % 64, 0);
  ASSERT_EQ(tset_check(&s, seg, 0), 0);
  ASSERT_EQ(check_padding(seg, 1), npads);
  ASSERT_EQ(check_aligned_views(seg), NT - 1);
  ASSERT_EQ(memcmp(data, img, len), 0);
  char address[DLPX_SEGMENT_ADDRESS_MAX];
  ASSERT_OK(dlpx_segment_publish(seg, address));
  /* every byte of the build pointer changed after the seal */
  memset(data, 0xEE, len);
  ASSERT_OK(dlpx_segment_fetch(address, id, 0, 0, &got));
  ASSERT_EQ(fcntl(dlpx_segment_fd(got), F_GET_SEALS) & ALL_SEALS, ALL_SEALS);
  ASSERT_EQ(tset_check(&s, got, 0), 0);
  ASSERT_EQ(tset_check(&s, seg, 0), 0);
  dlpx_tensor *b = NULL;
  ASSERT_OK(dlpx_segment_bytes(got, 0, &b));
  ASSERT_EQ(memcmp(dlpx_tensor_data(b), img + dlpx_segment_data_offset(got),
                   len - dlpx_segment_data_offset(got)),
            0);
  dlpx_tensor_free(b);
  ASSERT_EQ(check_aligned_views(got), NT - 1);
  dlpx_segment_close(got);
  free(img); /* before the fork: the child, which _exits, holds nothing only it would free */
  img = NULL;
  /* in another process too */
  fflush(stdout);
  pid_t pid = fork();
  ASSERT_TRUE(pid >= 0);
  if (pid == 0) {
    dlpx_segment *child = NULL;
    int ok = dlpx_segment_fetch(address, id, 0, 0, &child) == 0 && tset_check(&s, child, 0) == 0;
    if (!ok) fprintf(stderr, "# child: %s\n", dlpx_last_error());
    dlpx_segment_close(child);
    _exit(ok ? 0 : 1);
  }
  int status;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_EQ(((unsigned char *)data)[len - 1], 0xEE); /* this process's own pages */
  dlpx_segment_close(seg);
  tset_free(&s);
  ASSERT_TRUE(fds_settled(fds0 + 1) - fds0 <= 1); /* the server's socket may stay */
  ASSERT_NO_LEAKS(&l);
}

/* ---- hostile images and descriptors ---------------------------------------------- */

static void test_hostile_images(void) {
  check_live l;
  check_live_begin(&l);
  int fds0 = count_fds();
  size_t len;
  unsigned char *img = saved_image(7, &len);
  ASSERT_TRUE(img != NULL);
  dlpx_segment *seg = NULL;
  int fd;
  /* a valid image in a memfd nobody sealed */
  ASSERT_TRUE((fd = memfd_with(img, len, 0)) >= 0);
  ASSERT_RC(DLPX_EFORMAT, dlpx_segment_attach_fd(fd, 0, &seg));
  ASSERT_MSG("could change");
  ASSERT_TRUE(seg == NULL);
  close(fd);
  /* sealed against writes only: it could still shrink (SIGBUS) */
  ASSERT_TRUE((fd = memfd_with(img, len, F_SEAL_WRITE)) >= 0);
  ASSERT_RC(DLPX_EFORMAT, dlpx_segment_attach_fd(fd, 0, &seg));
  close(fd);
  /* F_SEAL_FUTURE_WRITE is not F_SEAL_WRITE (a writable mapping made
   * before it could still write) */
  fd = memfd_with(img, len, F_SEAL_SHRINK | F_SEAL_GROW);
  ASSERT_TRUE(fd >= 0);
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE) == 0)
    ASSERT_RC(DLPX_EFORMAT, dlpx_segment_attach_fd(fd, 0, &seg));
  close(fd);
  /* sealed, fine */
  ASSERT_TRUE((fd = memfd_with(img, len, ALL_SEALS)) >= 0);
  ASSERT_OK(dlpx_segment_attach_fd(fd, 0, &seg));
  dlpx_segment_close(seg);
  close(fd);
  /* sealed but truncated: the header runs past the end, or the data does */
  size_t cuts[] = {0, 5, 8, 20, len - 1};
  for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
    ASSERT_TRUE((fd = memfd_with(img, cuts[i], ALL_SEALS)) >= 0);
    ASSERT_RC(DLPX_EFORMAT, dlpx_segment_attach_fd(fd, 0, &seg));
    close(fd);
  }
  /* trailing bytes: the data section does not match the header */
  unsigned char *longer = malloc(len + 3);
  ASSERT_TRUE(longer != NULL);
  memcpy(longer, img, len);
  memset(longer + len, 0, 3);
  ASSERT_TRUE((fd = memfd_with(longer, len + 3, ALL_SEALS)) >= 0);
  ASSERT_RC(DLPX_EFORMAT, dlpx_segment_attach_fd(fd, 0, &seg));
  close(fd);
  free(longer);
  /* corrupt headers */
  static const char *bad[] = {
      "{\"t\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}",   /* bad JSON */
      "{\"t\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,4]}}",  /* size mismatch */
      "{\"t\":{\"dtype\":\"Q9\",\"shape\":[1],\"data_offsets\":[0,4]}}",   /* unknown dtype */
      "{\"__metadata__\":{\"dlpx.segment\":\"ABCDEF0123456789abcdef0123456789\"}}",
      "{\"__metadata__\":{\"dlpx.segment\":\"abc\"}}",
      "{\"__metadata__\":{\"dlpx.segment\":\"0123456789abcdef0123456789abcdefg\"}}",
  };
  static const int codes[] = {DLPX_EFORMAT, DLPX_EFORMAT, DLPX_EDTYPE,
                              DLPX_EFORMAT, DLPX_EFORMAT, DLPX_EFORMAT};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    size_t n;
    unsigned char *b = image(bad[i], "abcd", strstr(bad[i], "data_offsets") ? 4 : 0, &n);
    ASSERT_TRUE(b != NULL);
    ASSERT_TRUE((fd = memfd_with(b, n, ALL_SEALS)) >= 0);
    ASSERT_RC(codes[i], dlpx_segment_attach_fd(fd, 0, &seg));
    close(fd);
    free(b);
  }
  /* a good id is taken */
  {
    size_t n;
    unsigned char *b =
        image("{\"__metadata__\":{\"dlpx.segment\":\"0123456789abcdef0123456789abcdef\"}}", "", 0,
              &n);
    ASSERT_TRUE(b != NULL);
    ASSERT_TRUE((fd = memfd_with(b, n, ALL_SEALS)) >= 0);
    ASSERT_OK(dlpx_segment_attach_fd(fd, 0, &seg));
    ASSERT_STR_EQ(dlpx_segment_id(seg), "0123456789abcdef0123456789abcdef");
    dlpx_segment_close(seg);
    close(fd);
    free(b);
  }
  /* not a regular file */
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  ASSERT_RC(DLPX_EFORMAT, dlpx_segment_attach_fd(p[0], 0, &seg));
  close(p[0]);
  close(p[1]);
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_attach_fd(-1, 0, &seg));
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_attach_fd(999999, 0, &seg));
  ASSERT_TRUE((fd = memfd_with(img, len, ALL_SEALS)) >= 0);
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_attach_fd(fd, 1, &seg));
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_attach_fd(fd, 0, NULL));
  close(fd);

  /* named segments made by hand: writable by anybody, by the group, or by
   * the owner, are refused; read-only is fine */
  const char *name = sname("byhand");
  static const mode_t modes[] = {0644, 0460, 0200 | 0400, 0444};
  for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
    fd = open(spath(name), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    ASSERT_TRUE(fd >= 0);
    ASSERT_EQ(write_all(fd, img, len), 0);
    ASSERT_EQ(fchmod(fd, modes[i]), 0);
    close(fd);
    int rc = dlpx_segment_open(name, 0, &seg);
    if (modes[i] & 0222) {
      ASSERT_RC(DLPX_EFORMAT, rc);
      ASSERT_MSG("writable");
    } else {
      ASSERT_OK(rc);
      dlpx_segment_close(seg);
    }
    ASSERT_OK(dlpx_segment_unlink(name));
  }
  /* a symbolic link is not followed */
  ASSERT_EQ(symlink("/etc/passwd", spath(name)), 0);
  ASSERT_RC(DLPX_EIO, dlpx_segment_open(name, 0, &seg));
  ASSERT_OK(dlpx_segment_unlink(name));
  free(img);
  ASSERT_EQ(count_run_files(), 0);
  ASSERT_EQ(count_fds(), fds0);
  ASSERT_NO_LEAKS(&l);
}

/* ---- publish and fetch ----------------------------------------------------------- */

static void test_publish_fetch(void) {
  check_live l;
  check_live_begin(&l);
  int fds0 = count_fds();
  dlpx_segment *seg = NULL, *got = NULL;
  char address[DLPX_SEGMENT_ADDRESS_MAX], again[DLPX_SEGMENT_ADDRESS_MAX];
  ASSERT_OK(create_one(NULL, 8, &seg));
  ASSERT_OK(dlpx_segment_publish(seg, address));
  char pre[64];
  snprintf(pre, sizeof pre, "@dlpx.%ld.", (long)getpid());
  ASSERT_EQ(strncmp(address, pre, strlen(pre)), 0);
  /* the socket, then the producer's descriptor and the memfd's inode */
  size_t sock = strcspn(address, "/");
  ASSERT_EQ(sock, strlen(pre) + 16);
  int pfd = -1;
  unsigned long long ino = 0;
  ASSERT_EQ(sscanf(address + sock, "/%d.%llu", &pfd, &ino), 2);
  struct stat st;
  ASSERT_EQ(fstat(pfd, &st), 0);
  ASSERT_EQ((unsigned long long)st.st_ino, ino);
  ASSERT_OK(dlpx_segment_publish(seg, again)); /* twice: no error, the same address */
  ASSERT_STR_EQ(again, address);
  const char *id = dlpx_segment_id(seg);
  ASSERT_OK(dlpx_segment_fetch(address, id, 0, 0, &got));
  ASSERT_STR_EQ(dlpx_segment_id(got), id);
  ASSERT_TRUE(first_float(got) == first_float(seg));
  ASSERT_EQ(fcntl(dlpx_segment_fd(got), F_GET_SEALS) & ALL_SEALS, ALL_SEALS);
  ASSERT_TRUE(dlpx_segment_name(got) == NULL);
  /* a fetched segment can be published again: the same socket */
  ASSERT_OK(dlpx_segment_publish(got, again));
  ASSERT_EQ(strncmp(again, address, sock + 1), 0);
  dlpx_segment_close(got);
  /* the shortcut through /proc asks nothing of the socket: it works with a
   * socket name nobody listens at */
  char quiet[DLPX_SEGMENT_ADDRESS_MAX];
  snprintf(quiet, sizeof quiet, "%s0000000000000000%s", pre, address + sock);
  ASSERT_OK(dlpx_segment_fetch(quiet, id, 0, 0, &got));
  ASSERT_STR_EQ(dlpx_segment_id(got), id);
  dlpx_segment_close(got);
  /* the socket alone (an address without the descriptor) */
  char bare[DLPX_SEGMENT_ADDRESS_MAX];
  snprintf(bare, sizeof bare, "%.*s", (int)sock, address);
  ASSERT_OK(dlpx_segment_fetch(bare, id, 0, 0, &got));
  dlpx_segment_close(got);
  /* a descriptor number that names something else (a FIFO, a file, a
   * closed number), another inode, garbage: the socket answers */
  int pp[2];
  ASSERT_EQ(pipe(pp), 0);
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_TRUE(devnull >= 0);
  int nums[] = {pp[0], devnull, 1000000, pfd, pfd, pfd, pfd};
  unsigned long long inos[] = {ino, ino, ino, ino + 1, ino, ino, ino};
  for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
    char a[DLPX_SEGMENT_ADDRESS_MAX], tail[64];
    if (i == 4) snprintf(tail, sizeof tail, "/%d.%llux", nums[i], inos[i]);
    else if (i == 5) snprintf(tail, sizeof tail, "/x%d.%llu", nums[i], inos[i]);
    else if (i == 6) snprintf(tail, sizeof tail, "/%d", nums[i]);
    else snprintf(tail, sizeof tail, "/%d.%llu", nums[i], inos[i]);
    snprintf(a, sizeof a, "%.*s%s", (int)sock, address, tail);
    ASSERT_OK(dlpx_segment_fetch(a, id, 0, 0, &got));
    ASSERT_STR_EQ(dlpx_segment_id(got), id);
    dlpx_segment_close(got);
    snprintf(a, sizeof a, "%s0000000000000000%s", pre, tail);
    ASSERT_RC(DLPX_ENOENT, dlpx_segment_fetch(a, id, 0, 0, &got));
    ASSERT_TRUE(got == NULL);
  }
  close(pp[0]);
  close(pp[1]);
  close(devnull);
  /* ids in upper case are fine */
  char upper[DLPX_SEGMENT_ID_LEN + 1];
  for (int i = 0; i <= DLPX_SEGMENT_ID_LEN; i++)
    upper[i] = (char)(id[i] >= 'a' && id[i] <= 'f' ? id[i] - 'a' + 'A' : id[i]);
  ASSERT_OK(dlpx_segment_fetch(address, upper, 1000, 0, &got));
  dlpx_segment_close(got);
  /* unknown and stale ids */
  ASSERT_RC(DLPX_ENOENT,
            dlpx_segment_fetch(address, "0123456789abcdef0123456789abcdef", 0, 0, &got));
  ASSERT_MSG("no longer shared");
  char stale[DLPX_SEGMENT_ID_LEN + 1];
  memcpy(stale, id, sizeof stale);
  dlpx_segment_unpublish(seg);
  dlpx_segment_unpublish(seg); /* twice: nothing */
  ASSERT_RC(DLPX_ENOENT, dlpx_segment_fetch(address, stale, 0, 0, &got));
  ASSERT_TRUE(got == NULL);
  ASSERT_OK(dlpx_segment_publish(seg, again));
  ASSERT_OK(dlpx_segment_fetch(address, stale, 0, 0, &got));
  dlpx_segment_close(got);
  dlpx_segment_close(seg); /* closing unpublishes */
  ASSERT_RC(DLPX_ENOENT, dlpx_segment_fetch(address, stale, 0, 0, &got));
  /* bad arguments */
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_fetch("dlpx.1.2", stale, 0, 0, &got));
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_fetch("@", stale, 0, 0, &got));
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_fetch("@a b", stale, 0, 0, &got));
  char longaddr[200];
  memset(longaddr, 'a', sizeof longaddr - 1);
  longaddr[0] = '@';
  longaddr[sizeof longaddr - 1] = '\0';
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_fetch(longaddr, stale, 0, 0, &got));
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_fetch(address, "0123", 0, 0, &got));
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_fetch(address, "0123456789abcdef0123456789abcdeg", 0, 0,
                                            &got));
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_fetch(address, stale, 0, 1, &got));
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_fetch(NULL, stale, 0, 0, &got));
  ASSERT_RC(DLPX_EINVAL, dlpx_segment_publish(NULL, again));
  /* nobody listens */
  ASSERT_RC(DLPX_ENOENT, dlpx_segment_fetch("@dlpx.0.nobody-listens-here", stale, 0, 0, &got));
  ASSERT_MSG("the producer is gone");
  dlpx_segment_unpublish(NULL);
  ASSERT_TRUE(fds_settled(fds0 + 1) - fds0 <= 1); /* the server's socket, which stays */
  ASSERT_NO_LEAKS(&l);
}

/* Publish, unpublish and close in every order, with fetches between. */
static void test_publish_orders(void) {
  check_live l;
  check_live_begin(&l);
  int fds0 = count_fds();
  char address[DLPX_SEGMENT_ADDRESS_MAX];
  for (int order = 0; order < 4; order++) {
    dlpx_segment *a = NULL, *b = NULL, *got = NULL;
    ASSERT_OK(create_one(NULL, 10, &a));
    ASSERT_OK(create_one(NULL, 11, &b));
    char ida[DLPX_SEGMENT_ID_LEN + 1], idb[DLPX_SEGMENT_ID_LEN + 1];
    memcpy(ida, dlpx_segment_id(a), sizeof ida);
    memcpy(idb, dlpx_segment_id(b), sizeof idb);
    ASSERT_OK(dlpx_segment_publish(a, address));
    ASSERT_OK(dlpx_segment_publish(b, address));
    if (order & 1) {
      dlpx_segment_close(a);
      ASSERT_RC(DLPX_ENOENT, dlpx_segment_fetch(address, ida, 0, 0, &got));
      ASSERT_OK(dlpx_segment_fetch(address, idb, 0, 0, &got));
      dlpx_segment_close(got);
      if (order & 2) dlpx_segment_unpublish(b);
      dlpx_segment_close(b);
    } else {
      dlpx_segment_unpublish(b);
      dlpx_segment *none = NULL;
      ASSERT_OK(dlpx_segment_fetch(address, ida, 0, 0, &got));
      ASSERT_RC(DLPX_ENOENT, dlpx_segment_fetch(address, idb, 0, 0, &none));
      if (order & 2) {
        dlpx_segment_close(b);
        dlpx_segment_close(a);
      } else {
        dlpx_segment_close(a);
        dlpx_segment_close(b);
      }
      /* the fetched one outlives the producer's handle */
      ASSERT_STR_EQ(dlpx_segment_id(got), ida);
      dlpx_segment_close(got);
    }
    ASSERT_RC(DLPX_ENOENT, dlpx_segment_fetch(address, ida, 0, 0, &got));
    ASSERT_RC(DLPX_ENOENT, dlpx_segment_fetch(address, idb, 0, 0, &got));
  }
  /* the first publish of the run may have started the server (one socket) */
  ASSERT_TRUE(fds_settled(fds0 + 1) - fds0 <= 1);
  ASSERT_NO_LEAKS(&l);
}

static int read_full(int fd, void *buf, size_t len) {
  char *p = buf;
  while (len) {
    ssize_t r = read(fd, p, len);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    p += r;
    len -= (size_t)r;
  }
  return 0;
}

/* A child fetches from its parent, which publishes. */
static void test_fork_child_fetches(void) {
  dlpx_segment *seg = NULL;
  char address[DLPX_SEGMENT_ADDRESS_MAX];
  ASSERT_OK(create_one(NULL, 12, &seg));
  ASSERT_OK(dlpx_segment_publish(seg, address));
  float want = first_float(seg);
  fflush(stdout);
  pid_t pid = fork();
  ASSERT_TRUE(pid >= 0);
  if (pid == 0) {
    dlpx_segment *got = NULL;
    int ok = dlpx_segment_fetch(address, dlpx_segment_id(seg), 0, 0, &got) == 0 &&
             first_float(got) == want &&
             (fcntl(dlpx_segment_fd(got), F_GET_SEALS) & ALL_SEALS) == ALL_SEALS;
    if (!ok) fprintf(stderr, "# child: %s\n", dlpx_last_error());
    /* the child's own publishes go to its own server */
    char mine[DLPX_SEGMENT_ADDRESS_MAX];
    if (ok && (dlpx_segment_publish(got, mine) != 0 || !strcmp(mine, address))) ok = 0;
    dlpx_segment *back = NULL;
    if (ok && (dlpx_segment_fetch(mine, dlpx_segment_id(got), 0, 0, &back) != 0)) ok = 0;
    dlpx_segment_close(back);
    dlpx_segment_close(got);
    _exit(ok ? 0 : 1);
  }
  int status;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  /* the parent's server still answers */
  dlpx_segment *got = NULL;
  ASSERT_OK(dlpx_segment_fetch(address, dlpx_segment_id(seg), 0, 0, &got));
  dlpx_segment_close(got);
  dlpx_segment_close(seg);
}

/* The parent fetches from a child, which publishes, then goes away. */
static void test_fork_parent_fetches(void) {
  check_live l;
  check_live_begin(&l);
  int to_parent[2], to_child[2];
  ASSERT_EQ(pipe(to_parent), 0);
  ASSERT_EQ(pipe(to_child), 0);
  fflush(stdout);
  pid_t pid = fork();
  ASSERT_TRUE(pid >= 0);
  if (pid == 0) {
    close(to_parent[0]);
    close(to_child[1]);
    dlpx_segment *seg = NULL;
    char msg[DLPX_SEGMENT_ADDRESS_MAX + DLPX_SEGMENT_ID_LEN + 1 + sizeof(float)];
    memset(msg, 0, sizeof msg);
    int ok = create_one(NULL, 13, &seg) == 0 && dlpx_segment_publish(seg, msg) == 0;
    if (ok) {
      memcpy(msg + DLPX_SEGMENT_ADDRESS_MAX, dlpx_segment_id(seg), DLPX_SEGMENT_ID_LEN + 1);
      float f = first_float(seg);
      memcpy(msg + DLPX_SEGMENT_ADDRESS_MAX + DLPX_SEGMENT_ID_LEN + 1, &f, sizeof f);
    }
    ok = ok && write_all(to_parent[1], msg, sizeof msg) == 0;
    char c;
    ok = ok && read_full(to_child[0], &c, 1) == 0;
    dlpx_segment_close(seg);
    _exit(ok ? 0 : 1);
  }
  close(to_parent[1]);
  close(to_child[0]);
  char msg[DLPX_SEGMENT_ADDRESS_MAX + DLPX_SEGMENT_ID_LEN + 1 + sizeof(float)];
  int rd = read_full(to_parent[0], msg, sizeof msg);
  close(to_parent[0]);
  dlpx_segment *got = NULL;
  int rc = rd == 0 ? dlpx_segment_fetch(msg, msg + DLPX_SEGMENT_ADDRESS_MAX, 0, 0, &got) : -1;
  if (write(to_child[1], "x", 1) != 1) rc = -2;
  close(to_child[1]);
  int status;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_OK(rc);
  float want;
  memcpy(&want, msg + DLPX_SEGMENT_ADDRESS_MAX + DLPX_SEGMENT_ID_LEN + 1, sizeof want);
  /* the producer is gone; what was fetched stays */
  ASSERT_TRUE(first_float(got) == want);
  dlpx_segment *again = NULL;
  ASSERT_RC(DLPX_ENOENT, dlpx_segment_fetch(msg, msg + DLPX_SEGMENT_ADDRESS_MAX, 0, 0, &again));
  ASSERT_MSG("the producer is gone");
  dlpx_segment_close(got);
  ASSERT_NO_LEAKS(&l);
}

/* ---- fake servers and hostile clients ----------------------------------------------- */

enum { FAKE_TWO_FDS, FAKE_WRONG_ID, FAKE_GARBAGE, FAKE_SILENT_CLOSE, FAKE_NOT_FOUND_WITH_FD,
       FAKE_UNSEALED, FAKE_NO_FD, FAKE_STALL, FAKE_COUNT };

typedef struct {
  int mode;
  int listen_fd;
  int fd_a, fd_b; /* what it sends */
} fake;

static void *fake_serve(void *arg) {
  fake *f = arg;
  int c = accept(f->listen_fd, NULL, NULL);
  if (c < 0) return NULL;
  char req[64];
  ssize_t r = recv(c, req, 40, MSG_WAITALL);
  (void)r;
  unsigned char reply[12] = {'D', 'L', 'P', 'X', 'S', 'H', 'M', '1', 0, 0, 0, 0};
  int fds[2] = {f->fd_a, f->fd_b}, nfds = 1;
  switch (f->mode) {
  case FAKE_TWO_FDS: nfds = 2; break;
  case FAKE_GARBAGE: memcpy(reply, "HTTP/1.1 200", 12); break;
  case FAKE_NOT_FOUND_WITH_FD: reply[8] = 1; break;
  case FAKE_NO_FD: nfds = 0; break;
  default: break;
  }
  if (f->mode == FAKE_STALL) {
    poll(NULL, 0, 1500);
  } else if (f->mode != FAKE_SILENT_CLOSE) {
    struct iovec iov = {reply, sizeof reply};
    union {
      char buf[CMSG_SPACE(2 * sizeof(int))];
      struct cmsghdr align;
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds) {
      msg.msg_control = ctl.buf;
      msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
      struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_RIGHTS;
      cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
      memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
    }
    (void)!sendmsg(c, &msg, MSG_NOSIGNAL);
  }
  close(c);
  return NULL;
}

static int listen_at(const char *name, socklen_t *len_out) {
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path + 1, name, strlen(name));
  socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
  if (s < 0 || bind(s, (struct sockaddr *)&sa, len) != 0 || listen(s, 4) != 0) {
    if (s >= 0) close(s);
    return -1;
  }
  if (len_out) *len_out = len;
  return s;
}

static void test_fake_servers(void) {
  check_live l;
  check_live_begin(&l);
  dlpx_segment *real = NULL, *wrong = NULL;
  ASSERT_OK(create_one(NULL, 14, &real));
  ASSERT_OK(create_one(NULL, 15, &wrong));
  size_t len;
  unsigned char *img = saved_image(16, &len);
  ASSERT_TRUE(img != NULL);
  int unsealed = memfd_with(img, len, 0);
  ASSERT_TRUE(unsealed >= 0);
  free(img);
  char name[64], address[80];
  snprintf(name, sizeof name, "dlpx-test-fake.%ld", (long)getpid());
  snprintf(address, sizeof address, "@%s", name);
  int fds0 = count_fds();
  static const int want[FAKE_COUNT] = {DLPX_EIO, DLPX_EFORMAT, DLPX_EIO, DLPX_EIO,
                                       DLPX_ENOENT, DLPX_EFORMAT, DLPX_EIO, DLPX_EIO};
  for (int mode = 0; mode < FAKE_COUNT; mode++) {
    fake f = {mode, listen_at(name, NULL), dlpx_segment_fd(real), dlpx_segment_fd(real)};
    ASSERT_TRUE(f.listen_fd >= 0);
    if (mode == FAKE_WRONG_ID) f.fd_a = dlpx_segment_fd(wrong);
    if (mode == FAKE_UNSEALED) f.fd_a = unsealed;
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, fake_serve, &f), 0);
    dlpx_segment *got = NULL;
    int rc = dlpx_segment_fetch(address, dlpx_segment_id(real), mode == FAKE_STALL ? 300 : 0, 0,
                                &got);
    pthread_join(th, NULL);
    close(f.listen_fd);
    if (rc != want[mode]) fprintf(stderr, "# mode %d: %s\n", mode, dlpx_last_error());
    ASSERT_EQ(rc, want[mode]);
    ASSERT_TRUE(got == NULL);
    if (mode == FAKE_STALL) ASSERT_MSG("did not answer");
    ASSERT_TRUE(fds_settled(fds0) <= fds0); /* whatever came was closed */
  }
  close(unsealed);
  dlpx_segment_close(real);
  dlpx_segment_close(wrong);
  ASSERT_NO_LEAKS(&l);
}

/* Clients that send garbage, too little, too much or nothing do not stop
 * the server from answering the next fetch. */
static void test_hostile_clients(void) {
  dlpx_segment *seg = NULL, *got = NULL;
  char address[DLPX_SEGMENT_ADDRESS_MAX];
  ASSERT_OK(create_one(NULL, 17, &seg));
  ASSERT_OK(dlpx_segment_publish(seg, address));
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  size_t alen = strcspn(address, "/"); /* the socket's part of the address */
  memcpy(sa.sun_path + 1, address + 1, alen - 1);
  socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + alen);
  char good[41];
  snprintf(good, sizeof good, "DLPXSHM1%s", dlpx_segment_id(seg));
  char upper[41];
  memcpy(upper, good, sizeof upper);
  for (int i = 8; i < 40; i++)
    if (upper[i] >= 'a' && upper[i] <= 'f') upper[i] = (char)(upper[i] - 'a' + 'A');
  const struct {
    const char *bytes;
    size_t len;
  } sends[] = {
      {"DLPXSHM1", 8},                       /* short */
      {"XXXXXXXX0123456789abcdef0123456789abcdef", 40}, /* wrong magic */
      {"DLPXSHM1zz23456789abcdef0123456789abcdef", 40}, /* not hex */
      {upper, 40},                                     /* upper case on the wire */
      {good, 20},                                      /* half */
  };
  for (size_t i = 0; i < sizeof sends / sizeof sends[0]; i++) {
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_TRUE(s >= 0);
    ASSERT_EQ(connect(s, (struct sockaddr *)&sa, salen), 0);
    ASSERT_EQ(send(s, sends[i].bytes, sends[i].len, MSG_NOSIGNAL), (ssize_t)sends[i].len);
    /* the server closes without an answer */
    shutdown(s, SHUT_WR);
    char buf[16];
    struct pollfd pfd = {s, POLLIN, 0};
    ASSERT_EQ(poll(&pfd, 1, 3000), 1);
    ASSERT_EQ(recv(s, buf, sizeof buf, 0), 0);
    close(s);
  }
  /* a client sending descriptors with a good request: they are dropped */
  {
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(connect(s, (struct sockaddr *)&sa, salen), 0);
    int fd = dlpx_segment_fd(seg);
    struct iovec iov = {good, 40};
    union {
      char buf[CMSG_SPACE(sizeof(int))];
      struct cmsghdr align;
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                         .msg_controllen = sizeof ctl.buf};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof fd);
    ASSERT_EQ(sendmsg(s, &msg, MSG_NOSIGNAL), 40);
    char reply[12];
    ASSERT_EQ(recv(s, reply, sizeof reply, MSG_WAITALL), 12);
    ASSERT_EQ(memcmp(reply, "DLPXSHM1", 8), 0);
    close(s);
  }
  /* a client that connects and never reads its answer */
  {
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(connect(s, (struct sockaddr *)&sa, salen), 0);
    ASSERT_EQ(send(s, good, 40, MSG_NOSIGNAL), 40);
    close(s);
  }
  /* a client that connects and sends nothing holds the server for its 1 s,
   * then the next fetch is answered */
  int idle = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(connect(idle, (struct sockaddr *)&sa, salen), 0);
  poll(NULL, 0, 50); /* let the server take it first */
  ASSERT_OK(dlpx_segment_fetch(address, dlpx_segment_id(seg), 0, 0, &got));
  close(idle);
  dlpx_segment_close(got);
  dlpx_segment_close(seg);
}

/* Many rounds leak nothing: descriptors, mappings, memory. */
static void test_rounds(void) {
  check_live l;
  check_live_begin(&l);
  dlpx_segment *seg = NULL;
  char address[DLPX_SEGMENT_ADDRESS_MAX];
  ASSERT_OK(create_one(NULL, 18, &seg)); /* the server runs before counting */
  ASSERT_OK(dlpx_segment_publish(seg, address));
  dlpx_segment_close(seg);
  int fds0 = count_fds();
  int rounds = under_valgrind() ? 50 : 1000;
  for (int i = 0; i < rounds; i++) {
    dlpx_segment *got = NULL;
    dlpx_tensor *t = NULL;
    ASSERT_OK(create_one(NULL, (unsigned)i, &seg));
    ASSERT_OK(dlpx_segment_publish(seg, address));
    ASSERT_OK(dlpx_segment_fetch(address, dlpx_segment_id(seg), 0, 0, &got));
    ASSERT_OK(dlpx_segment_tensor(got, 0, 0, &t));
    if (i & 1) {
      dlpx_segment_close(seg);
      dlpx_segment_close(got);
    } else {
      dlpx_segment_close(got);
      dlpx_segment_close(seg);
    }
    dlpx_tensor_free(t);
  }
  ASSERT_TRUE(fds_settled(fds0) <= fds0);
  ASSERT_NO_LEAKS(&l);
}

/* Threads fetch while the producer publishes and closes. */
typedef struct {
  pthread_mutex_t lock; /* over ids and addresses */
  char ids[8][DLPX_SEGMENT_ID_LEN + 1];
  char addresses[8][DLPX_SEGMENT_ADDRESS_MAX]; /* as published last: numbers get reused */
  atomic_int stop;
  atomic_int errors;
} race;

static void *fetcher(void *arg) {
  race *r = arg;
  for (unsigned i = 0; !atomic_load(&r->stop); i++) {
    char id[DLPX_SEGMENT_ID_LEN + 1], address[DLPX_SEGMENT_ADDRESS_MAX];
    pthread_mutex_lock(&r->lock);
    memcpy(id, r->ids[i % 8], sizeof id);
    memcpy(address, r->addresses[i % 8], sizeof address);
    pthread_mutex_unlock(&r->lock);
    dlpx_segment *got = NULL;
    int rc = dlpx_segment_fetch(address, id, 0, 0, &got);
    if (rc != 0 && rc != DLPX_ENOENT) {
      fprintf(stderr, "# fetcher: %s\n", dlpx_last_error());
      atomic_fetch_add(&r->errors, 1);
    }
    if (rc == 0 && strcmp(dlpx_segment_id(got), id)) atomic_fetch_add(&r->errors, 1);
    dlpx_segment_close(got);
  }
  return NULL;
}

static void test_threads(void) {
  static race r;
  memset(&r, 0, sizeof r);
  pthread_mutex_init(&r.lock, NULL);
  dlpx_segment *segs[8] = {NULL};
  for (int i = 0; i < 8; i++) {
    ASSERT_OK(create_one(NULL, (unsigned)(100 + i), &segs[i]));
    ASSERT_OK(dlpx_segment_publish(segs[i], r.addresses[i]));
    memcpy(r.ids[i], dlpx_segment_id(segs[i]), DLPX_SEGMENT_ID_LEN + 1);
  }
  pthread_t th[3];
  for (int i = 0; i < 3; i++) ASSERT_EQ(pthread_create(&th[i], NULL, fetcher, &r), 0);
  int iters = under_valgrind() ? 20 : 300;
  char address[DLPX_SEGMENT_ADDRESS_MAX];
  for (int k = 0; k < iters; k++) {
    int i = k % 8;
    if (k & 1) {
      dlpx_segment_unpublish(segs[i]);
      ASSERT_OK(dlpx_segment_publish(segs[i], address));
    } else {
      dlpx_segment_close(segs[i]);
      segs[i] = NULL;
      ASSERT_OK(create_one(NULL, (unsigned)k, &segs[i]));
      ASSERT_OK(dlpx_segment_publish(segs[i], address));
    }
    /* the fetchers go on with the old address a while (its descriptor
     * number may now name another segment) */
    if (k % 3 == 0) continue;
    pthread_mutex_lock(&r.lock);
    memcpy(r.ids[i], dlpx_segment_id(segs[i]), DLPX_SEGMENT_ID_LEN + 1);
    memcpy(r.addresses[i], address, sizeof address);
    pthread_mutex_unlock(&r.lock);
  }
  atomic_store(&r.stop, 1);
  for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < 8; i++) dlpx_segment_close(segs[i]);
  pthread_mutex_destroy(&r.lock);
  ASSERT_EQ(atomic_load(&r.errors), 0);
}

int main(void) {
  signal(SIGPIPE, SIG_DFL); /* a write to a closed socket must not kill us: MSG_NOSIGNAL */
  const char *base = getenv("TMPDIR");
  if (!base || !*base) base = "/tmp";
  snprintf(g_dir, sizeof g_dir, "%s/dlpx-test-shm-XXXXXX", base);
  if (!mkdtemp(g_dir)) {
    perror("mkdtemp");
    return 2;
  }
  snprintf(g_prefix, sizeof g_prefix, "test-%ld-", (long)getpid());
  struct stat st;
  if (stat("/dev/shm", &st) != 0 || !S_ISDIR(st.st_mode)) {
    printf("1..0 # SKIP no /dev/shm\n");
    return 0;
  }
  RUN(test_create_anonymous);
  RUN(test_image_matches_save);
  RUN(test_aligned_layout);
  RUN(test_pad_names_reserved);
  RUN(test_create_errors);
  RUN(test_views);
  RUN(test_empty_segments);
  RUN(test_header_json_and_fifo);
  RUN(test_named);
  RUN(test_build_seal);
  RUN(test_build_from_image);
  RUN(test_hostile_images);
  RUN(test_publish_fetch);
  RUN(test_publish_orders);
  RUN(test_fork_child_fetches);
  RUN(test_fork_parent_fetches);
  RUN(test_fake_servers);
  RUN(test_hostile_clients);
  RUN(test_rounds);
  RUN(test_threads);
  remove_run_files();
  remove_tree(g_dir);
  CHECK_DONE();
}
