/* file.c - safetensors files opened for loading: the header read and
 * validated at open, then tensors read with pread (optionally O_DIRECT and
 * verified while streaming), mapped, read into existing tensors, or read in
 * slices. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"

#define DIRECT_ALIGN ((size_t)4096)
#define BOUNCE_SIZE ((size_t)2 << 20)     /* O_DIRECT bounce buffer */
#define VERIFY_PIECE ((size_t)256 << 10)  /* read, then hash while still in L2 */
#define DIRECT_VERIFY_PIECE ((size_t)4 << 20) /* O_DIRECT: large reads (no cache to keep) */
#define STAGING_SIZE ((size_t)8 << 20)    /* read_into a strided tensor */
#define SLICE_RUN_MIN ((uint64_t)4096)    /* shorter runs of a slice: copy from the mapping */
#define PREAD_MAX ((size_t)1 << 30)

int dlpx__pread_full(int fd, void *dst, size_t len, uint64_t off, const char *path) {
  char *p = dst;
  while (len) {
    size_t want = len < PREAD_MAX ? len : PREAD_MAX;
    ssize_t r = pread(fd, p, want, (off_t)off);
    if (r < 0) {
      if (errno == EINTR) continue;
      return dlpx__fail(DLPX_EIO, "%s: read of %zu bytes at offset %llu failed: %s", path, want,
                        (unsigned long long)off, strerror(errno));
    }
    if (r == 0)
      return dlpx__fail(DLPX_EIO,
                        "%s: the file ends at offset %llu, before the data its header "
                        "describes (it shrank after it was opened)",
                        path, (unsigned long long)off);
    p += r;
    off += (uint64_t)r;
    len -= (size_t)r;
  }
  return 0;
}

/* ---- open and close ------------------------------------------------------- */

static int os_fail(const char *what, const char *path) {
  return dlpx__fail(DLPX_EIO, "%s: %s failed: %s", path, what, strerror(errno));
}

static int open_checked(const char *path, dlpx_file *f) {
  f->fd = open(path, O_RDONLY | O_CLOEXEC);
  if (f->fd < 0) return os_fail("open", path);
  struct stat st;
  if (dlpx__fstat(f->fd, &st) != 0) return os_fail("fstat", path);
  if (!S_ISREG(st.st_mode))
    return dlpx__fail(DLPX_EIO, "%s: not a regular file", path);
  f->size = (uint64_t)st.st_size;
  if (f->size < 8)
    return dlpx__fail(DLPX_EFORMAT,
                      "%s: %llu bytes is too short for a safetensors file (8-byte header "
                      "length, then the header)",
                      path, (unsigned long long)f->size);
  unsigned char len8[8];
  int rc = dlpx__pread_full(f->fd, len8, 8, 0, path);
  if (rc) return rc;
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | len8[i];
  if (n == 0)
    return dlpx__fail(DLPX_EFORMAT, "%s: the header length is 0 (a header is at least \"{}\")",
                      path);
  if (n > DLPX_ST_HEADER_MAX)
    return dlpx__fail(DLPX_EFORMAT, "%s: the header length %llu exceeds the limit of %d bytes",
                      path, (unsigned long long)n, DLPX_ST_HEADER_MAX);
  if (n > f->size - 8)
    return dlpx__fail(DLPX_EFORMAT,
                      "%s: the header length %llu runs past the end of the file (%llu bytes): "
                      "the file is truncated or not a safetensors file",
                      path, (unsigned long long)n, (unsigned long long)f->size);
  char *json = malloc((size_t)n);
  if (!json) return dlpx__fail(DLPX_ENOMEM, "%s: no memory for a %llu-byte header", path,
                               (unsigned long long)n);
  rc = dlpx__pread_full(f->fd, json, (size_t)n, 8, path);
  if (!rc) rc = dlpx_st_header_parse(json, (size_t)n, f->size - 8 - n, &f->header);
  free(json);
  if (rc) {
    /* Prefix the header's message with the file it came from. */
    char msg[512];
    snprintf(msg, sizeof msg, "%s", dlpx_last_error());
    return dlpx__fail(rc, "%s: %s", path, msg);
  }
  f->data_offset = 8 + n;
  return 0;
}

int dlpx_file_open(const char *path, uint32_t flags, dlpx_file **out) {
  if (!path || !out) return dlpx__fail(DLPX_EINVAL, "dlpx_file_open: NULL argument");
  *out = NULL;
  if (flags & ~DLPX_FILE_DIRECT)
    return dlpx__fail(DLPX_EINVAL, "dlpx_file_open: unknown flags 0x%x", flags);
  if (dlpx_is_url(path)) return dlpx_file_open_url(path, NULL, 0, out); /* the defaults */
  dlpx_file *f = calloc(1, sizeof *f);
  if (!f) return dlpx__fail(DLPX_ENOMEM, "no memory for a file");
  f->fd = f->direct_fd = -1;
  atomic_flag_clear(&f->map_lock);
  f->path = strdup(path);
  if (!f->path) {
    free(f);
    return dlpx__fail(DLPX_ENOMEM, "no memory for a file");
  }
  int rc = open_checked(path, f);
  if (rc) {
    dlpx_file_close(f);
    return rc;
  }
#ifdef O_DIRECT
  if (flags & DLPX_FILE_DIRECT) {
    /* Refused (EINVAL) on file systems without O_DIRECT, such as tmpfs:
     * reads then go through the page cache. */
    f->direct_fd = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
    atomic_store(&f->direct_ok, f->direct_fd >= 0);
  }
#endif
  *out = f;
  return 0;
}

void dlpx_file_close(dlpx_file *f) {
  if (!f) return;
  if (f->fd >= 0) close(f->fd);
  if (f->direct_fd >= 0) close(f->direct_fd);
  for (int i = 0; i < 2; i++)
    if (f->map[i]) dlpx_storage_release(f->map[i]);
  dlpx_st_header_free(f->header);
  dlpx__remote_free(f->remote);
  free(f->path);
  free(f);
}

const dlpx_st_header *dlpx_file_header(const dlpx_file *f) { return f ? f->header : NULL; }

uint64_t dlpx_file_data_offset(const dlpx_file *f) { return f ? f->data_offset : 0; }

int dlpx_file_direct(const dlpx_file *f) { return f && atomic_load(&f->direct_ok) ? 1 : 0; }

static int entry_of(const dlpx_file *f, size_t index, const dlpx_st_entry **e) {
  if (!f) return dlpx__fail(DLPX_EINVAL, "NULL file");
  *e = dlpx_st_header_entry(f->header, index);
  if (!*e)
    return dlpx__fail(DLPX_EINDEX, "%s: tensor index %zu out of range (%zu tensors)", f->path,
                      index, f->header->count);
  return 0;
}

/* ---- pread ------------------------------------------------------------------ */

/* O_DIRECT: blocks aligned in the file and in memory go straight to |dst|
 * when the two alignments agree; otherwise through an aligned bounce
 * buffer.  Returns 1 (not an error) when the file system refuses the
 * O_DIRECT read, so that the caller reads normally. */
static int read_direct(dlpx_file *f, char *dst, size_t len, uint64_t off) {
  size_t mis = (size_t)(off % DIRECT_ALIGN);
  if ((((uintptr_t)dst) % DIRECT_ALIGN) == mis) {
    /* Congruent: unaligned head and tail through the page cache, the
     * middle straight from the device into |dst|. */
    size_t head = mis ? DIRECT_ALIGN - mis : 0;
    if (head > len) head = len;
    size_t mid = (len - head) / DIRECT_ALIGN * DIRECT_ALIGN;
    if (mid) {
      char *p = dst + head;
      uint64_t o = off + head;
      size_t left = mid;
      while (left) {
        size_t want = left < PREAD_MAX ? left : PREAD_MAX;
        ssize_t r = pread(f->direct_fd, p, want, (off_t)o);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno == EINVAL && left == mid) return 1;
        if (r < 0) return os_fail("O_DIRECT read", f->path);
        if (r == 0 || (size_t)r % DIRECT_ALIGN) {
          /* Short at the end of the file (or the file shrank): the rest
           * normally, which also reports a shrink. */
          p += r, o += (uint64_t)r, left -= (size_t)r;
          int rc = dlpx__pread_full(f->fd, p, left, o, f->path);
          if (rc) return rc;
          break;
        }
        p += r, o += (uint64_t)r, left -= (size_t)r;
      }
    }
    int rc = head ? dlpx__pread_full(f->fd, dst, head, off, f->path) : 0;
    size_t tail = len - head - mid;
    if (!rc && tail) rc = dlpx__pread_full(f->fd, dst + head + mid, tail, off + head + mid, f->path);
    return rc;
  }
  /* Each read asks for the aligned blocks that hold what is left, at most
   * the bounce buffer: a small tensor, or the end of a piece, must not cost
   * a whole buffer of reading. */
  size_t need = (mis + len + DIRECT_ALIGN - 1) / DIRECT_ALIGN * DIRECT_ALIGN;
  size_t cap = need < BOUNCE_SIZE ? need : BOUNCE_SIZE;
  void *bounce = NULL;
  if (posix_memalign(&bounce, DIRECT_ALIGN, cap))
    return dlpx__fail(DLPX_ENOMEM, "no memory for an O_DIRECT buffer");
  int rc = 0;
  uint64_t pos = off - mis; /* aligned */
  size_t skip = mis;
  while (len) {
    size_t want = (skip + len + DIRECT_ALIGN - 1) / DIRECT_ALIGN * DIRECT_ALIGN;
    if (want > cap) want = cap;
    ssize_t r = pread(f->direct_fd, bounce, want, (off_t)pos);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EINVAL && pos == off - mis) {
      rc = 1;
      break;
    }
    if (r < 0) {
      rc = os_fail("O_DIRECT read", f->path);
      break;
    }
    if ((size_t)r <= skip) {
      rc = dlpx__pread_full(f->fd, dst, len, pos + skip, f->path); /* reports the shrink */
      break;
    }
    size_t got = (size_t)r - skip;
    if (got > len) got = len;
    memcpy(dst, (char *)bounce + skip, got);
    dst += got, len -= got;
    pos += (uint64_t)r;
    skip = 0;
    if ((size_t)r < want && len) { /* end of file */
      rc = dlpx__pread_full(f->fd, dst, len, pos, f->path);
      break;
    }
  }
  free(bounce);
  return rc;
}

static int read_bytes(dlpx_file *f, char *dst, size_t len, uint64_t off, uint32_t flags) {
  if ((flags & DLPX_READ_DIRECT) && atomic_load(&f->direct_ok)) {
    int rc = read_direct(f, dst, len, off);
    if (rc <= 0) return rc;
    atomic_store(&f->direct_ok, false); /* refused: plain reads from now on */
  }
  return dlpx__pread_full(f->fd, dst, len, off, f->path);
}

static const uint32_t READ_FLAGS = DLPX_READ_VERIFY | DLPX_READ_DIRECT;

static int check_flags(uint32_t flags, uint32_t allowed) {
  if (flags & ~allowed) return dlpx__fail(DLPX_EINVAL, "unknown read flags 0x%x", flags & ~allowed);
  return 0;
}

int dlpx_file_read_range(dlpx_file *f, size_t index, uint64_t begin, uint64_t end, void *dst,
                         uint32_t flags) {
  const dlpx_st_entry *e;
  int rc = entry_of(f, index, &e);
  if (rc || (rc = check_flags(flags, READ_FLAGS))) return rc;
  uint64_t nbytes = e->end - e->begin;
  if (begin > end || end > nbytes)
    return dlpx__fail(DLPX_EINVAL, "bytes [%llu, %llu) are outside tensor '%s' (%llu bytes)",
                      (unsigned long long)begin, (unsigned long long)end, e->name,
                      (unsigned long long)nbytes);
  if (begin == end) return 0;
  if (!dst) return dlpx__fail(DLPX_EINVAL, "NULL destination");
  if (end - begin > SIZE_MAX) return dlpx__fail(DLPX_EOVERFLOW, "range too large");
  if (f->remote) {
    dlpx__tensor_range r = {.index = index, .begin = begin, .end = end, .dst = dst};
    return dlpx__remote_read_ranges(f, 1, &r, flags & DLPX_READ_VERIFY);
  }
  uint64_t off = f->data_offset + e->begin + begin;
  size_t len = (size_t)(end - begin);
  dlpx__sumstream *sums = NULL;
  if ((flags & DLPX_READ_VERIFY) && (rc = dlpx__sumstream_new(f->header, index, begin, &sums)))
    return rc;
  if (!sums) return read_bytes(f, dst, len, off, flags);
  /* Verified: read a piece, hash it while it is in cache. */
  char *p = dst;
  size_t piece = (flags & DLPX_READ_DIRECT) ? DIRECT_VERIFY_PIECE : VERIFY_PIECE;
  while (len && !rc) {
    size_t want = len < piece ? len : piece;
    rc = read_bytes(f, p, want, off, flags);
    if (!rc) rc = dlpx__sumstream_feed(sums, p, want);
    p += want, off += want, len -= want;
  }
  dlpx__sumstream_free(sums);
  if (rc == DLPX_ECHECKSUM) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", dlpx_last_error());
    return dlpx__fail(rc, "%s: %s", f->path, msg);
  }
  return rc;
}

/* ---- mapping ------------------------------------------------------------------ */

static int get_map(dlpx_file *f, bool writable, dlpx_storage **out) {
  if (f->remote)
    return dlpx__fail(DLPX_ENOTSUP, "%s: a file opened from a URL cannot be mapped; read it",
                      f->path);
  /* A file cut short after open would raise SIGBUS when its lost pages are
   * touched: refuse to map it. */
  struct stat st;
  if (dlpx__fstat(f->fd, &st) != 0) return os_fail("fstat", f->path);
  if ((uint64_t)st.st_size < f->size)
    return dlpx__fail(DLPX_EIO,
                      "%s: the file shrank from %llu to %llu bytes after it was opened; "
                      "mapping it would crash on the missing pages (SIGBUS)",
                      f->path, (unsigned long long)f->size, (unsigned long long)st.st_size);
  while (atomic_flag_test_and_set_explicit(&f->map_lock, memory_order_acquire)) {
  }
  int rc = 0;
  dlpx_storage **slot = &f->map[writable ? 1 : 0];
  if (!*slot) rc = dlpx__storage_map_file(f->fd, f->size, writable, slot);
  if (!rc) {
    dlpx_storage_retain(*slot);
    *out = *slot;
  }
  atomic_flag_clear_explicit(&f->map_lock, memory_order_release);
  return rc;
}

static int view_of(dlpx_file *f, const dlpx_st_entry *e, dlpx_storage *map, uint32_t tflags,
                   dlpx_tensor **out) {
  return dlpx_tensor_from_storage(map, e->dtype, e->ndim, e->shape, NULL,
                                  (int64_t)(f->data_offset + e->begin), tflags, out);
}

int dlpx_file_map(dlpx_file *f, size_t index, uint32_t flags, dlpx_tensor **out) {
  const dlpx_st_entry *e;
  if (!out) return dlpx__fail(DLPX_EINVAL, "NULL output");
  *out = NULL;
  int rc = entry_of(f, index, &e);
  if (rc || (rc = check_flags(flags, DLPX_READ_VERIFY | DLPX_READ_COPY_ON_WRITE))) return rc;
  bool cow = flags & DLPX_READ_COPY_ON_WRITE;
  dlpx_storage *map;
  if ((rc = get_map(f, cow, &map))) return rc;
  if (flags & DLPX_READ_VERIFY) {
    const char *data = (const char *)dlpx_storage_data(map) + f->data_offset + e->begin;
    rc = dlpx__st_verify(f->header, index, 0, e->end - e->begin, data);
    if (rc) {
      dlpx_storage_release(map);
      char msg[512];
      snprintf(msg, sizeof msg, "%s", dlpx_last_error());
      return dlpx__fail(rc, "%s: %s", f->path, msg);
    }
  }
  rc = view_of(f, e, map, cow ? 0 : DLPX_TENSOR_READONLY, out);
  dlpx_storage_release(map);
  return rc;
}

/* ---- into tensors ------------------------------------------------------------------ */

static int check_dst(const dlpx_file *f, const dlpx_st_entry *e, const dlpx_tensor *dst) {
  const DLTensor *t = &dst->dl;
  if (!dlpx__device_host(t->device.device_type))
    return dlpx__fail(DLPX_EDEVICE, "tensor '%s' can only be read into host memory", e->name);
  if (dst->flags & (DLPX_TENSOR_READONLY | DLPX_TENSOR_LEGACY_READONLY))
    return dlpx__fail(DLPX_EREADONLY, "cannot read tensor '%s' into a read-only tensor", e->name);
  if (!dlpx__dtype_eq(t->dtype, e->dtype) || (dst->flags & DLPX_TENSOR_SUBBYTE_PADDED)) {
    char a[32], b[32];
    dlpx_dtype_format(e->dtype, a, sizeof a);
    dlpx_dtype_format(t->dtype, b, sizeof b);
    return dlpx__fail(DLPX_EDTYPE, "%s: tensor '%s' is %s, the destination %s%s", f->path, e->name,
                      a, b, (dst->flags & DLPX_TENSOR_SUBBYTE_PADDED) ? " (padded)" : "");
  }
  bool same = t->ndim == e->ndim;
  for (int32_t i = 0; same && i < e->ndim; i++) same = t->shape[i] == e->shape[i];
  if (!same) {
    char a[160] = "", b[160] = "";
    size_t la = 0, lb = 0;
    for (int32_t i = 0; i < e->ndim && la < sizeof a - 24; i++)
      la += (size_t)snprintf(a + la, sizeof a - la, "%s%lld", i ? ", " : "", (long long)e->shape[i]);
    for (int32_t i = 0; i < t->ndim && lb < sizeof b - 24; i++)
      lb += (size_t)snprintf(b + lb, sizeof b - lb, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    return dlpx__fail(DLPX_ESHAPE, "%s: tensor '%s' has shape (%s), the destination (%s)", f->path,
                      e->name, a, b);
  }
  return 0;
}

static char *c_data(const dlpx_tensor *t) { return (char *)t->dl.data + t->dl.byte_offset; }

/* A strided destination: rows of dimension 0 are read in order to a
 * staging buffer and copied into place; checksums are fed in file order. */
static int read_staged(dlpx_file *f, size_t index, const dlpx_st_entry *e, const dlpx_tensor *dst,
                       uint32_t flags) {
  uint64_t rows = (uint64_t)e->shape[0];
  /* Rows are staged in groups of |g| rows ending on a byte: a row of
   * sub-byte elements may end inside one (g divides rows, as the tensor
   * is whole bytes); |row| is the bytes of a group. */
  uint64_t rowbits = e->dtype.bits, g = 1;
  for (int32_t d = 1; d < e->ndim; d++) rowbits *= (uint64_t)e->shape[d];
  while ((g * rowbits) % 8) g *= 2;
  uint64_t row = g * rowbits / 8;
  uint64_t per = row >= STAGING_SIZE ? g : STAGING_SIZE / row * g;
  if (per > rows) per = rows;
  if (row > SIZE_MAX / (per / g)) return dlpx__fail(DLPX_EOVERFLOW, "row too large");
  int rc = 0;
  dlpx__sumstream *sums = NULL;
  if ((flags & DLPX_READ_VERIFY) && (rc = dlpx__sumstream_new(f->header, index, 0, &sums)))
    return rc;
  dlpx_tensor *stage = NULL;
  int64_t shape[DLPX_MAX_NDIM];
  memcpy(shape, e->shape, sizeof(int64_t) * (size_t)e->ndim);
  shape[0] = (int64_t)per;
  rc = dlpx__tensor_new_owned(e->dtype, e->ndim, shape, 'C', 0, 0, &stage);
  for (uint64_t r0 = 0; !rc && r0 < rows; r0 += per) {
    uint64_t k = rows - r0 < per ? rows - r0 : per;
    rc = dlpx_file_read_range(f, index, r0 / g * row, (r0 + k) / g * row, c_data(stage),
                              flags & DLPX_READ_DIRECT);
    if (!rc && sums) rc = dlpx__sumstream_feed(sums, c_data(stage), (size_t)(k / g * row));
    dlpx_index sel[2] = {{.kind = DLPX_INDEX_SLICE, .start = (int64_t)r0, .stop = (int64_t)(r0 + k), .step = 1},
                         {.kind = DLPX_INDEX_SLICE, .start = 0, .stop = (int64_t)k, .step = 1}};
    dlpx_tensor *d = NULL, *s = NULL;
    if (!rc) rc = dlpx_tensor_index(dst, 1, &sel[0], &d);
    if (!rc) rc = dlpx_tensor_index(stage, 1, &sel[1], &s);
    if (!rc) rc = dlpx_tensor_copy_into(d, s);
    dlpx_tensor_free(d);
    dlpx_tensor_free(s);
  }
  dlpx_tensor_free(stage);
  dlpx__sumstream_free(sums);
  return rc;
}

int dlpx_file_read_into(dlpx_file *f, size_t index, const dlpx_tensor *dst, uint32_t flags) {
  const dlpx_st_entry *e;
  int rc = entry_of(f, index, &e);
  if (rc || (rc = check_flags(flags, READ_FLAGS))) return rc;
  if (!dst) return dlpx__fail(DLPX_EINVAL, "NULL destination");
  if ((rc = check_dst(f, e, dst))) return rc;
  uint64_t nbytes = e->end - e->begin;
  if (nbytes == 0) return 0;
  int c = dlpx__contiguous(dst->dl.ndim, dst->dl.shape, dst->dl.strides, true);
  if (c || e->ndim == 0) return dlpx_file_read_range(f, index, 0, nbytes, c_data(dst), flags);
  return read_staged(f, index, e, dst, flags);
}

int dlpx_file_empty(dlpx_file *f, size_t index, dlpx_tensor **out) {
  const dlpx_st_entry *e;
  if (!out) return dlpx__fail(DLPX_EINVAL, "NULL output");
  *out = NULL;
  int rc = entry_of(f, index, &e);
  if (rc) return rc;
  uint64_t nbytes = e->end - e->begin;
  if (nbytes > SIZE_MAX) return dlpx__fail(DLPX_EOVERFLOW, "tensor too large");
  dlpx_storage *s;
  if ((rc = dlpx__storage_alloc_pages((size_t)nbytes, &s))) return rc;
  rc = dlpx_tensor_from_storage(s, e->dtype, e->ndim, e->shape, NULL, 0, 0, out);
  dlpx_storage_release(s);
  return rc;
}

int dlpx_file_read_many(dlpx_file *f, size_t n, const size_t *indices, void *const *dsts,
                        uint32_t flags) {
  if (!f || (n && (!indices || !dsts))) return dlpx__fail(DLPX_EINVAL, "NULL argument");
  if (f->remote) { /* every tensor at once: the requests run concurrently */
    int rc = check_flags(flags, READ_FLAGS);
    dlpx__tensor_range *r = rc ? NULL : calloc(n ? n : 1, sizeof *r);
    if (!rc && !r) rc = dlpx__fail(DLPX_ENOMEM, "no memory");
    for (size_t i = 0; !rc && i < n; i++) {
      const dlpx_st_entry *e;
      if ((rc = entry_of(f, indices[i], &e))) break;
      if (!dsts[i] && e->end > e->begin) rc = dlpx__fail(DLPX_EINVAL, "NULL destination");
      r[i] = (dlpx__tensor_range){.index = indices[i], .begin = 0, .end = e->end - e->begin,
                                  .dst = dsts[i]};
    }
    if (!rc) rc = dlpx__remote_read_ranges(f, n, r, flags & DLPX_READ_VERIFY);
    free(r);
    return rc;
  }
  for (size_t i = 0; i < n; i++) {
    const dlpx_st_entry *e;
    int rc = entry_of(f, indices[i], &e);
    if (!rc) rc = dlpx_file_read_range(f, indices[i], 0, e->end - e->begin, dsts[i], flags);
    if (rc) return rc;
  }
  return 0;
}

int dlpx_file_empty_many(dlpx_file *f, size_t n, const size_t *indices, dlpx_tensor **out) {
  if (!f || (n && (!indices || !out))) return dlpx__fail(DLPX_EINVAL, "NULL argument");
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) {
    out[i] = NULL;
    const dlpx_st_entry *e;
    int rc = entry_of(f, indices[i], &e);
    if (rc) return rc;
    uint64_t nbytes = (e->end - e->begin + 63) & ~(uint64_t)63; /* each 64-byte aligned */
    if (nbytes > SIZE_MAX - total) return dlpx__fail(DLPX_EOVERFLOW, "tensors too large");
    total += nbytes;
  }
  dlpx_storage *s;
  int rc = dlpx__storage_alloc_pages((size_t)(total ? total : 1), &s);
  if (rc) return rc;
  uint64_t at = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    const dlpx_st_entry *e = &f->header->entries[indices[i]];
    rc = dlpx_tensor_from_storage(s, e->dtype, e->ndim, e->shape, NULL, (int64_t)at, 0, &out[i]);
    at += (e->end - e->begin + 63) & ~(uint64_t)63;
  }
  dlpx_storage_release(s);
  if (rc)
    for (size_t i = 0; i < n; i++) {
      dlpx_tensor_free(out[i]);
      out[i] = NULL;
    }
  return rc;
}

int dlpx_file_read(dlpx_file *f, size_t index, uint32_t flags, dlpx_tensor **out) {
  const dlpx_st_entry *e;
  if (!out) return dlpx__fail(DLPX_EINVAL, "NULL output");
  *out = NULL;
  int rc = entry_of(f, index, &e);
  if (rc || (rc = check_flags(flags, READ_FLAGS))) return rc;
  dlpx_tensor *t = NULL;
  rc = dlpx_file_empty(f, index, &t);
  if (!rc) rc = dlpx_file_read_range(f, index, 0, e->end - e->begin, c_data(t), flags);
  if (rc) {
    dlpx_tensor_free(t);
    return rc;
  }
  *out = t;
  return 0;
}

/* ---- slices ------------------------------------------------------------------------ */

/* Where the index items lead in a tensor's bytes: a view over a stand-in
 * storage whose data pointer is a fixed address that is never read. */
#define PLACE ((uintptr_t)1 << 40)

static void noop_release(void *data, void *ctx) {
  (void)data;
  (void)ctx;
}

int dlpx_file_read_slice(dlpx_file *f, size_t index, int32_t n, const dlpx_index *items,
                         uint32_t flags, dlpx_tensor **out) {
  const dlpx_st_entry *e;
  if (!out) return dlpx__fail(DLPX_EINVAL, "NULL output");
  *out = NULL;
  int rc = entry_of(f, index, &e);
  if (rc || (rc = check_flags(flags, READ_FLAGS))) return rc;
  uint64_t nbytes = e->end - e->begin;
  dlpx_storage *place;
  rc = dlpx_storage_wrap((void *)PLACE, (size_t)nbytes, (DLDevice){kDLCPU, 0}, noop_release, NULL,
                         &place);
  if (rc) return rc;
  dlpx_tensor *whole = NULL, *sel = NULL, *res = NULL;
  rc = dlpx_tensor_from_storage(place, e->dtype, e->ndim, e->shape, NULL, 0, 0, &whole);
  dlpx_storage_release(place);
  if (!rc) rc = dlpx_tensor_index(whole, n, items, &sel);
  dlpx_tensor_free(whole);
  if (rc) return rc;
  const DLTensor *v = &sel->dl;
  int64_t numel; /* (a plain product of the extents may overflow before a 0) */
  if ((rc = dlpx__numel(v->ndim, v->shape, &numel))) goto done;
  int64_t bits = (int64_t)v->dtype.bits * v->dtype.lanes;
  uint64_t start = (uint64_t)((uintptr_t)v->data + (uintptr_t)v->byte_offset - PLACE);
  /* The contiguous runs: the longest row-major suffix of the selection.
   * Without elements there is nothing to read, and the strides (which
   * saturate for such shapes) may overflow when multiplied. */
  int32_t k = v->ndim;
  int64_t run = 1;
  while (numel && k > 0 && v->strides[k - 1] == run) run *= v->shape[--k];
  bool whole_bytes = (run * bits) % 8 == 0;
  for (int32_t i = 0; numel && i < k; i++)
    if (v->shape[i] > 1 && (v->strides[i] * bits) % 8) whole_bytes = false;
  if (bits % 8 && numel && !whole_bytes) {
    dlpx_tensor_free(sel);
    return dlpx__fail(DLPX_ENOTSUP,
                      "%s: a slice of the sub-byte tensor '%s' must select whole bytes", f->path,
                      e->name);
  }
  rc = dlpx__tensor_new_owned(v->dtype, v->ndim, v->shape, 'C', 0, 0, &res);
  if (rc || numel == 0) goto done;
  uint64_t run_bytes = (uint64_t)(run * bits / 8);
  if (f->remote) {
    /* Every run a range, fetched together (neighbours share requests). */
    uint64_t nruns = (uint64_t)numel / (uint64_t)run;
    dlpx__tensor_range *rr = nruns <= SIZE_MAX / sizeof *rr ? calloc((size_t)nruns, sizeof *rr) : NULL;
    if (!rr) {
      rc = dlpx__fail(DLPX_ENOMEM, "no memory for %llu ranges", (unsigned long long)nruns);
      goto done;
    }
    int64_t idx[DLPX_MAX_NDIM] = {0};
    char *dst = c_data(res);
    for (uint64_t j = 0; j < nruns; j++) {
      int64_t off = 0;
      for (int32_t i = 0; i < k; i++) off += idx[i] * v->strides[i];
      uint64_t b = start + (uint64_t)(off * bits / 8);
      rr[j] = (dlpx__tensor_range){.index = index, .begin = b, .end = b + run_bytes, .dst = dst};
      dst += run_bytes;
      int32_t i = k - 1;
      while (i >= 0 && ++idx[i] == v->shape[i]) idx[i--] = 0;
    }
    rc = dlpx__remote_read_ranges(f, (size_t)nruns, rr, flags & DLPX_READ_VERIFY);
    free(rr);
  } else if (run_bytes >= SLICE_RUN_MIN || k == 0 || bits % 8) {
    /* Each run read straight into place: an odometer over dims [0, k). */
    int64_t idx[DLPX_MAX_NDIM] = {0};
    char *dst = c_data(res);
    for (;;) {
      int64_t off = 0;
      for (int32_t i = 0; i < k; i++) off += idx[i] * v->strides[i];
      uint64_t b = start + (uint64_t)(off * bits / 8);
      if ((rc = dlpx_file_read_range(f, index, b, b + run_bytes, dst, flags))) break;
      dst += run_bytes;
      int32_t i = k - 1;
      while (i >= 0 && ++idx[i] == v->shape[i]) idx[i--] = 0;
      if (i < 0) break;
    }
  } else {
    /* Short runs (a column, a strided pick): copy from the mapping, which
     * reads only the pages the selection touches. */
    dlpx_storage *map;
    if ((rc = get_map(f, false, &map))) goto done;
    dlpx_tensor *mv = NULL;
    rc = dlpx_tensor_from_storage(map, v->dtype, v->ndim, v->shape, v->strides,
                                  (int64_t)(f->data_offset + e->begin + start),
                                  DLPX_TENSOR_READONLY, &mv);
    dlpx_storage_release(map);
    if (!rc) rc = dlpx_tensor_copy_into(res, mv);
    dlpx_tensor_free(mv);
  }
done:
  dlpx_tensor_free(sel);
  if (rc) {
    dlpx_tensor_free(res);
    return rc;
  }
  *out = res;
  return 0;
}
