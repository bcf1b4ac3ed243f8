/* segment.c - shared-memory segments: safetensors images in a memfd sealed
 * once it is filled, or in a read-only file of /dev/shm, attached by
 * validating the header and mapping the whole image copy-on-write (see
 * include/dlpx/shm.h for the rules a reader checks). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shm.h"

/* The constants of memfds and seals, for build hosts whose headers predate
 * them (the wheel's build image is old; the kernel it runs on is not). */
#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 0x0001U
#endif
#ifndef MFD_ALLOW_SEALING
#define MFD_ALLOW_SEALING 0x0002U
#endif
#ifndef F_ADD_SEALS
#define F_ADD_SEALS 1033
#define F_GET_SEALS 1034
#endif
#ifndef F_SEAL_SEAL
#define F_SEAL_SEAL 0x0001
#define F_SEAL_SHRINK 0x0002
#define F_SEAL_GROW 0x0004
#define F_SEAL_WRITE 0x0008
#endif
#if !defined(SYS_memfd_create) && defined(__x86_64__)
#define SYS_memfd_create 319
#elif !defined(SYS_memfd_create) && defined(__aarch64__)
#define SYS_memfd_create 279
#endif
#if !defined(SYS_getrandom) && defined(__x86_64__)
#define SYS_getrandom 318
#elif !defined(SYS_getrandom) && defined(__aarch64__)
#define SYS_getrandom 278
#endif

/* What makes a memfd's bytes final (F_SEAL_SEAL is added by the producer
 * so nobody can remove them; a reader needs only these three). */
#define SEALS (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW)
#define META_ID DLPX__META_PREFIX "segment"

/* ---- system calls and small helpers ----------------------------------------------- */

int dlpx__memfd(void) {
#ifdef SYS_memfd_create
  return (int)syscall(SYS_memfd_create, "dlpx", MFD_CLOEXEC | MFD_ALLOW_SEALING);
#else
  errno = ENOSYS;
  return -1;
#endif
}

int dlpx__random(void *buf, size_t len) {
  unsigned char *p = buf;
  size_t got = 0;
#ifdef SYS_getrandom
  while (got < len) {
    long r = syscall(SYS_getrandom, p + got, len - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break; /* ENOSYS: a kernel older than 3.17 */
    got += (size_t)r;
  }
#endif
  if (got < len) {
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    while (fd >= 0 && got < len) {
      ssize_t r = read(fd, p + got, len - got);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      got += (size_t)r;
    }
    if (fd >= 0) close(fd);
  }
  return got == len ? 0 : dlpx__fail(DLPX_EIO, "no random bytes: getrandom and /dev/urandom failed");
}

void dlpx__hex(const unsigned char *bytes, size_t len, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < len; i++) {
    out[2 * i] = digits[bytes[i] >> 4];
    out[2 * i + 1] = digits[bytes[i] & 15];
  }
  out[2 * len] = '\0';
}

bool dlpx__segment_id_ok(const char *s, size_t len) {
  if (len != DLPX_SEGMENT_ID_LEN) return false;
  for (size_t i = 0; i < len; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
  return true;
}

static int check_name(const char *fn, const char *name) {
  if (!name) return dlpx__fail(DLPX_EINVAL, "%s: NULL name", fn);
  size_t len = strnlen(name, DLPX_SEGMENT_NAME_MAX + 1);
  if (len == 0 || len > DLPX_SEGMENT_NAME_MAX)
    return dlpx__fail(DLPX_EINVAL, "%s: a segment name has 1 to %d characters, not %s", fn,
                      DLPX_SEGMENT_NAME_MAX, len ? "more" : "none");
  if (name[0] == '.')
    return dlpx__fail(DLPX_EINVAL, "%s: segment name \"%.200s\" starts with '.'", fn, name);
  for (size_t i = 0; i < len; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '.' || c == '_' || c == '-'))
      return dlpx__fail(DLPX_EINVAL,
                        "%s: segment name \"%.200s\" has a character other than "
                        "[A-Za-z0-9._-] at %zu",
                        fn, name, i);
  }
  return 0;
}

/* "/dev/shm/dlpx.<name>", new (NULL when out of memory, recorded). */
static char *segment_path(const char *name) {
  size_t len = strlen(DLPX_SEGMENT_DIR "/" DLPX_SEGMENT_PREFIX) + strlen(name) + 1;
  char *p = malloc(len);
  if (!p) {
    dlpx__fail(DLPX_ENOMEM, "no memory");
    return NULL;
  }
  snprintf(p, len, "%s/%s%s", DLPX_SEGMENT_DIR, DLPX_SEGMENT_PREFIX, name);
  return p;
}

static dlpx_segment *segment_new(void) {
  dlpx_segment *seg = calloc(1, sizeof *seg);
  if (!seg) {
    dlpx__fail(DLPX_ENOMEM, "no memory for a segment");
    return NULL;
  }
  seg->fd = seg->build_fd = -1;
  return seg;
}

/* Prefixes the last error's message with |label|; returns |rc|. */
static int relabel(int rc, const char *label) {
  char msg[DLPX__MSG_MAX];
  snprintf(msg, sizeof msg, "%s", dlpx_last_error());
  return dlpx__fail(rc, "%s: %s", label, msg);
}

/* ---- attaching ------------------------------------------------------------------ */

/* The bytes of |fd| cannot change under a reader: a memfd sealed against
 * writes, shrinking and growing; or else a regular file nobody may write
 * to, owned by this user (only the owner could make it writable again).
 * Sets *size and *sealed. */
static int check_fd(int fd, const char *label, uint64_t *size, bool *sealed) {
  struct stat st;
  if (dlpx__fstat(fd, &st) != 0)
    return dlpx__fail(DLPX_EIO, "%s: fstat failed: %s", label, strerror(errno));
  /* Files of tmpfs answer F_GET_SEALS too (with F_SEAL_SEAL alone: a file
   * of /dev/shm cannot be sealed), other files fail with EINVAL. */
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0 && errno != EINVAL)
    return dlpx__fail(DLPX_EIO, "%s: F_GET_SEALS failed: %s", label, strerror(errno));
  *sealed = seals >= 0 && (seals & SEALS) == SEALS;
  if (!*sealed) {
    if (!S_ISREG(st.st_mode))
      return dlpx__fail(DLPX_EFORMAT, "%s: the segment is not a regular file", label);
    if (st.st_mode & 0222)
      return dlpx__fail(DLPX_EFORMAT,
                        "%s: the segment is not sealed against writes, shrinking and growing, "
                        "and its file is writable (mode %04o): its bytes could change",
                        label, (unsigned)(st.st_mode & 07777));
    if (st.st_uid != geteuid())
      return dlpx__fail(DLPX_EFORMAT,
                        "%s: the segment is not sealed and its file is owned by another user "
                        "(uid %u), who could make it writable: its bytes could change",
                        label, (unsigned)st.st_uid);
  }
  if (st.st_size < 8)
    return dlpx__fail(DLPX_EFORMAT,
                      "%s: %lld bytes is too short for a segment (8-byte header length, then "
                      "the header)",
                      label, (long long)st.st_size);
  *size = (uint64_t)st.st_size;
  return 0;
}

static int read_header(int fd, uint64_t size, const char *label, dlpx_st_header **out,
                       uint64_t *data_offset, char **json_out) {
  unsigned char len8[8];
  int rc = dlpx__pread_full(fd, len8, 8, 0, label);
  if (rc) return rc;
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | len8[i];
  if (n == 0)
    return dlpx__fail(DLPX_EFORMAT, "%s: the header length is 0 (a header is at least \"{}\")",
                      label);
  if (n > DLPX_ST_HEADER_MAX)
    return dlpx__fail(DLPX_EFORMAT, "%s: the header length %llu exceeds the limit of %d bytes",
                      label, (unsigned long long)n, DLPX_ST_HEADER_MAX);
  if (n > size - 8)
    return dlpx__fail(DLPX_EFORMAT,
                      "%s: the header length %llu runs past the end of the segment (%llu "
                      "bytes): it is truncated or not a safetensors image",
                      label, (unsigned long long)n, (unsigned long long)size);
  char *json = malloc((size_t)n);
  if (!json)
    return dlpx__fail(DLPX_ENOMEM, "%s: no memory for a %llu-byte header", label,
                      (unsigned long long)n);
  rc = dlpx__pread_full(fd, json, (size_t)n, 8, label);
  if (!rc && (rc = dlpx_st_header_parse(json, (size_t)n, size - 8 - n, out)))
    rc = relabel(rc, label);
  if (rc) {
    free(json);
    return rc;
  }
  *data_offset = 8 + n;
  *json_out = json; /* kept: the bytes that were validated (dlpx_segment_header_json) */
  return 0;
}

/* The id under "dlpx.segment", when there is one. */
static int read_id(dlpx_segment *seg, const char *label) {
  size_t nm = dlpx_st_header_metadata_count(seg->header);
  for (size_t i = 0; i < nm; i++) {
    const char *k, *v;
    if (dlpx_st_header_metadata(seg->header, i, &k, &v) || strcmp(k, META_ID)) continue;
    if (!dlpx__segment_id_ok(v, strlen(v)))
      return dlpx__fail(DLPX_EFORMAT,
                        "%s: the segment id \"%.40s\" (__metadata__ \"" META_ID
                        "\") is not %d lowercase hex digits",
                        label, v, DLPX_SEGMENT_ID_LEN);
    memcpy(seg->id, v, DLPX_SEGMENT_ID_LEN + 1);
    seg->has_id = true;
  }
  return 0;
}

/* Undoes attach. */
static void detach(dlpx_segment *seg) {
  if (seg->fd >= 0) close(seg->fd);
  seg->fd = -1;
  dlpx_st_header_free(seg->header);
  seg->header = NULL;
  free(seg->json);
  seg->json = NULL;
  if (seg->map) dlpx_storage_release(seg->map);
  seg->map = NULL;
  seg->has_id = false;
  seg->id[0] = '\0';
}

/* Attaches |seg| to (a duplicate of) |src|; on failure takes nothing. */
static int attach(dlpx_segment *seg, int src, const char *label) {
  int fd = fcntl(src, F_DUPFD_CLOEXEC, 0);
  if (fd < 0)
    return dlpx__fail(errno == EBADF ? DLPX_EINVAL : DLPX_EIO,
                      "%s: cannot duplicate descriptor %d: %s", label, src, strerror(errno));
  seg->fd = fd;
  int rc = check_fd(fd, label, &seg->size, &seg->sealed);
  if (!rc) rc = read_header(fd, seg->size, label, &seg->header, &seg->data_offset, &seg->json);
  if (!rc) rc = read_id(seg, label);
  /* Copy-on-write: a consumer that writes anyway (ignoring
   * DLPX_TENSOR_READONLY) changes private pages, not the segment. */
  if (!rc && (rc = dlpx__storage_map_file(fd, seg->size, true, &seg->map)))
    rc = relabel(rc, label);
  if (rc) {
    detach(seg);
    return rc;
  }
  seg->state = DLPX__SEG_ATTACHED;
  return 0;
}

int dlpx_segment_attach_fd(int fd, uint32_t flags, dlpx_segment **out) {
  if (!out) return dlpx__fail(DLPX_EINVAL, "dlpx_segment_attach_fd: NULL output");
  *out = NULL;
  if (fd < 0) return dlpx__fail(DLPX_EINVAL, "dlpx_segment_attach_fd: descriptor %d", fd);
  if (flags) return dlpx__fail(DLPX_EINVAL, "dlpx_segment_attach_fd: unknown flags 0x%x", flags);
  dlpx_segment *seg = segment_new();
  if (!seg) return DLPX_ENOMEM;
  char label[48];
  snprintf(label, sizeof label, "segment (descriptor %d)", fd);
  int rc = attach(seg, fd, label);
  if (rc) {
    free(seg);
    return rc;
  }
  *out = seg;
  return 0;
}

int dlpx_segment_open(const char *name, uint32_t flags, dlpx_segment **out) {
  if (!out) return dlpx__fail(DLPX_EINVAL, "dlpx_segment_open: NULL output");
  *out = NULL;
  int rc = check_name("dlpx_segment_open", name);
  if (rc) return rc;
  if (flags) return dlpx__fail(DLPX_EINVAL, "dlpx_segment_open: unknown flags 0x%x", flags);
  char *path = segment_path(name);
  if (!path) return DLPX_ENOMEM;
  /* O_NONBLOCK: a FIFO planted under the name must not block the open
   * (it is then refused as not a regular file). */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    rc = dlpx__fail(errno == ENOENT ? DLPX_ENOENT : DLPX_EIO, "%s: %s", path,
                    errno == ENOENT ? "no such segment" : strerror(errno));
    free(path);
    return rc;
  }
  dlpx_segment *seg = segment_new();
  rc = seg ? attach(seg, fd, path) : DLPX_ENOMEM;
  close(fd);
  if (!rc && !(seg->name = strdup(name))) rc = dlpx__fail(DLPX_ENOMEM, "no memory");
  free(path);
  if (rc) {
    dlpx_segment_close(seg);
    return rc;
  }
  *out = seg;
  return 0;
}

int dlpx_segment_unlink(const char *name) {
  int rc = check_name("dlpx_segment_unlink", name);
  if (rc) return rc;
  char *path = segment_path(name);
  if (!path) return DLPX_ENOMEM;
  if (unlink(path) != 0)
    rc = dlpx__fail(errno == ENOENT ? DLPX_ENOENT : DLPX_EIO, "%s: %s", path,
                    errno == ENOENT ? "no such segment" : strerror(errno));
  free(path);
  return rc;
}

/* ---- making segments ------------------------------------------------------------------ */

/* A new temporary file "dlpx.<name>.tmp-XXXXXX" in /dev/shm (mode 0600),
 * after checking that the segment's name is free (checked again, for good,
 * by link(2) in finish_named). */
static int make_tmp(const char *name, char **tmp_out, int *fd_out) {
  char *path = segment_path(name);
  if (!path) return DLPX_ENOMEM;
  struct stat st;
  if (dlpx__fstatat(AT_FDCWD, path, &st, AT_SYMLINK_NOFOLLOW) == 0) {
    int rc = dlpx__fail(DLPX_EIO,
                        "segment %s exists (%s): unlink it first, or choose another name", name,
                        path);
    free(path);
    return rc;
  }
  size_t tl = strlen(path) + 16;
  char *tmp = malloc(tl);
  if (!tmp) {
    free(path);
    return dlpx__fail(DLPX_ENOMEM, "no memory");
  }
  snprintf(tmp, tl, "%s.tmp-XXXXXX", path);
  free(path);
  int fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) {
    free(tmp);
    return dlpx__fail(DLPX_EIO, "cannot create a temporary file in %s: %s", DLPX_SEGMENT_DIR,
                      strerror(errno));
  }
  *fd_out = fd;
  *tmp_out = tmp;
  return 0;
}

/* A filled named segment, in its temporary file |tmp| (descriptor |fd|):
 * made read-only, attached (validated) through a read-only descriptor of
 * its own, and only then given its name, so readers never see a partial or
 * invalid one.  The caller removes |tmp|. */
static int finish_named(dlpx_segment *seg, int fd, const char *tmp, const char *name) {
  char *path = segment_path(name);
  if (!path) return DLPX_ENOMEM;
  int rc = 0;
  if (fchmod(fd, 0400) != 0)
    rc = dlpx__fail(DLPX_EIO, "%s: fchmod failed: %s", tmp, strerror(errno));
  int ro = rc ? -1 : open(tmp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (!rc && ro < 0) rc = dlpx__fail(DLPX_EIO, "%s: open failed: %s", tmp, strerror(errno));
  if (!rc) rc = attach(seg, ro, path);
  if (ro >= 0) close(ro);
  if (!rc && link(tmp, path) != 0) {
    rc = errno == EEXIST
             ? dlpx__fail(DLPX_EIO, "segment %s exists (%s): unlink it first, or choose "
                          "another name", name, path)
             : dlpx__fail(DLPX_EIO, "%s: link failed: %s", path, strerror(errno));
    detach(seg);
  }
  if (!rc && !seg->name && !(seg->name = strdup(name))) {
    unlink(path);
    detach(seg);
    rc = dlpx__fail(DLPX_ENOMEM, "no memory");
  }
  free(path);
  return rc;
}

static int seal_memfd(int fd) {
  if (fcntl(fd, F_ADD_SEALS, SEALS | F_SEAL_SEAL) != 0)
    return dlpx__fail(DLPX_EIO, "segment: sealing the memfd failed: %s%s", strerror(errno),
                      errno == EBUSY ? " (a writable shared mapping of it is still there, "
                                       "maybe in a child process)"
                                     : "");
  return 0;
}

int dlpx_segment_create(const char *name, size_t n, const char *const *names,
                        const dlpx_tensor *const *tensors, size_t nmeta,
                        const char *const *keys, const char *const *values, uint32_t flags,
                        dlpx_segment **out) {
  if (!out) return dlpx__fail(DLPX_EINVAL, "dlpx_segment_create: NULL output");
  *out = NULL;
  int rc = name ? check_name("dlpx_segment_create", name) : 0;
  if (rc) return rc;
  unsigned char rnd[DLPX_SEGMENT_ID_LEN / 2];
  char id[DLPX_SEGMENT_ID_LEN + 1];
  if ((rc = dlpx__random(rnd, sizeof rnd))) return rc;
  dlpx__hex(rnd, sizeof rnd, id);
  dlpx__st_image *img;
  if ((rc = dlpx__st_image_new("dlpx_segment_create", n, names, tensors, nmeta, keys, values,
                               flags, DLPX_SEGMENT_ALIGN, META_ID, id, &img)))
    return rc;
  dlpx_segment *seg = segment_new();
  if (!seg) {
    dlpx__st_image_free(img);
    return DLPX_ENOMEM;
  }
  int fd = -1;
  char *tmp = NULL;
  if (!name) {
    fd = dlpx__memfd();
    if (fd < 0) rc = dlpx__fail(DLPX_EIO, "memfd_create failed: %s", strerror(errno));
    if (!rc) rc = dlpx__st_image_write(img, fd, "segment", NULL);
    if (!rc) rc = seal_memfd(fd);
    if (!rc) rc = attach(seg, fd, "segment");
  } else {
    rc = make_tmp(name, &tmp, &fd);
    if (!rc) rc = dlpx__st_image_write(img, fd, tmp, NULL);
    if (!rc) rc = finish_named(seg, fd, tmp, name);
  }
  if (fd >= 0) close(fd);
  if (tmp) unlink(tmp);
  free(tmp);
  dlpx__st_image_free(img);
  if (rc) {
    dlpx_segment_close(seg);
    return rc;
  }
  *out = seg;
  return 0;
}

int dlpx_segment_build(const char *name, uint64_t size, void **data, dlpx_segment **out) {
  if (!data || !out) return dlpx__fail(DLPX_EINVAL, "dlpx_segment_build: NULL argument");
  *data = NULL;
  *out = NULL;
  int rc = name ? check_name("dlpx_segment_build", name) : 0;
  if (rc) return rc;
  if (size < 8)
    return dlpx__fail(DLPX_EINVAL,
                      "dlpx_segment_build: %llu bytes is too small for an image (8-byte header "
                      "length, then the header)",
                      (unsigned long long)size);
  if (size > (uint64_t)INT64_MAX || size > SIZE_MAX)
    return dlpx__fail(DLPX_ENOMEM, "dlpx_segment_build: %llu bytes is too large",
                      (unsigned long long)size);
  dlpx_segment *seg = segment_new();
  if (!seg) return DLPX_ENOMEM;
  if (!name) {
    seg->build_fd = dlpx__memfd();
    if (seg->build_fd < 0) rc = dlpx__fail(DLPX_EIO, "memfd_create failed: %s", strerror(errno));
  } else {
    rc = make_tmp(name, &seg->tmp_path, &seg->build_fd);
    if (!rc && !(seg->name = strdup(name))) rc = dlpx__fail(DLPX_ENOMEM, "no memory");
  }
  const char *label = seg->tmp_path ? seg->tmp_path : "segment";
  if (!rc && ftruncate(seg->build_fd, (off_t)size) != 0)
    rc = dlpx__fail(DLPX_EIO, "%s: cannot make it %llu bytes: %s", label,
                    (unsigned long long)size, strerror(errno));
  if (!rc) {
    void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, seg->build_fd, 0);
    if (p == MAP_FAILED)
      rc = dlpx__fail(errno == ENOMEM ? DLPX_ENOMEM : DLPX_EIO, "%s: mmap of %llu bytes failed: %s",
                      label, (unsigned long long)size, strerror(errno));
    else
      seg->build_data = p, seg->build_len = (size_t)size;
  }
  if (rc) {
    dlpx_segment_close(seg);
    return rc;
  }
  seg->state = DLPX__SEG_BUILT;
  *data = seg->build_data;
  *out = seg;
  return 0;
}

/* Drops what dlpx_segment_build made (the temporary file of a named one
 * included). */
static void unbuild(dlpx_segment *seg) {
  if (seg->build_data) munmap(seg->build_data, seg->build_len);
  seg->build_data = NULL;
  if (seg->build_fd >= 0) close(seg->build_fd);
  seg->build_fd = -1;
  if (seg->tmp_path) unlink(seg->tmp_path);
  free(seg->tmp_path);
  seg->tmp_path = NULL;
}

int dlpx_segment_seal(dlpx_segment *seg) {
  if (!seg || seg->state != DLPX__SEG_BUILT)
    return dlpx__fail(DLPX_ESTATE, "dlpx_segment_seal: not a built, unsealed segment");
  /* Seals refuse to go on while a writable shared mapping exists: it is
   * replaced, at the same address, by a private mapping of the same pages
   * (not a shared one, so the seals go on), which stays until close.  A
   * caller that still holds the pointer of dlpx_segment_build (a buffer
   * of Python's may) then reads the image, and its writes, too late for
   * the image, stay private, where a plain munmap would make them fault. */
  void *p = mmap(seg->build_data, seg->build_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED,
                 seg->build_fd, 0);
  if (p == MAP_FAILED) munmap(seg->build_data, seg->build_len);
  else seg->sealed_data = p;
  seg->build_data = NULL;
  int rc;
  if (!seg->name) {
    rc = seal_memfd(seg->build_fd);
    if (!rc) rc = attach(seg, seg->build_fd, "segment");
  } else {
    rc = finish_named(seg, seg->build_fd, seg->tmp_path, seg->name);
  }
  unbuild(seg);
  if (rc) {
    seg->state = DLPX__SEG_DISCARDED;
    free(seg->name);
    seg->name = NULL;
  }
  return rc;
}

void dlpx_segment_close(dlpx_segment *seg) {
  if (!seg) return;
  dlpx_segment_unpublish(seg);
  unbuild(seg);
  if (seg->sealed_data) munmap(seg->sealed_data, seg->build_len);
  detach(seg);
  free(seg->name);
  free(seg);
}

/* ---- what a segment holds --------------------------------------------------------- */

const dlpx_st_header *dlpx_segment_header(const dlpx_segment *seg) {
  return seg ? seg->header : NULL;
}

const char *dlpx_segment_id(const dlpx_segment *seg) {
  return seg && seg->has_id ? seg->id : NULL;
}

const char *dlpx_segment_name(const dlpx_segment *seg) { return seg ? seg->name : NULL; }

uint64_t dlpx_segment_size(const dlpx_segment *seg) {
  if (!seg) return 0;
  return seg->state == DLPX__SEG_BUILT ? (uint64_t)seg->build_len : seg->size;
}

uint64_t dlpx_segment_data_offset(const dlpx_segment *seg) { return seg ? seg->data_offset : 0; }

const char *dlpx_segment_header_json(const dlpx_segment *seg, size_t *len) {
  if (!seg || !seg->json) {
    if (len) *len = 0;
    return NULL;
  }
  if (len) *len = (size_t)(seg->data_offset - 8);
  return seg->json;
}

int dlpx_segment_fd(const dlpx_segment *seg) { return seg ? seg->fd : -1; }

static int check_view(const dlpx_segment *seg, uint32_t flags, dlpx_tensor **out) {
  if (!out) return dlpx__fail(DLPX_EINVAL, "NULL output");
  *out = NULL;
  if (!seg) return dlpx__fail(DLPX_EINVAL, "NULL segment");
  if (flags & ~DLPX_READ_COPY_ON_WRITE)
    return dlpx__fail(DLPX_EINVAL, "unknown flags 0x%x for a segment's tensors",
                      flags & ~DLPX_READ_COPY_ON_WRITE);
  if (seg->state != DLPX__SEG_ATTACHED)
    return dlpx__fail(DLPX_ESTATE, "the segment is not attached (%s)",
                      seg->state == DLPX__SEG_BUILT ? "seal it first" : "its seal failed");
  return 0;
}

static uint32_t view_flags(uint32_t flags) {
  return (flags & DLPX_READ_COPY_ON_WRITE) ? 0 : DLPX_TENSOR_READONLY;
}

int dlpx_segment_tensor(const dlpx_segment *seg, size_t index, uint32_t flags,
                        dlpx_tensor **out) {
  int rc = check_view(seg, flags, out);
  if (rc) return rc;
  const dlpx_st_entry *e = dlpx_st_header_entry(seg->header, index);
  if (!e)
    return dlpx__fail(DLPX_EINDEX, "segment: tensor index %zu out of range (%zu tensors)", index,
                      dlpx_st_header_count(seg->header));
  return dlpx_tensor_from_storage(seg->map, e->dtype, e->ndim, e->shape, NULL,
                                  (int64_t)(seg->data_offset + e->begin), view_flags(flags), out);
}

int dlpx_segment_tensors(const dlpx_segment *seg, uint32_t flags, dlpx_tensor **out) {
  dlpx_tensor *probe;
  int rc = check_view(seg, flags, out ? &probe : NULL);
  if (rc) return rc;
  size_t n = dlpx_st_header_count(seg->header);
  for (size_t i = 0; i < n; i++) out[i] = NULL;
  for (size_t i = 0; i < n && !rc; i++) rc = dlpx_segment_tensor(seg, i, flags, &out[i]);
  if (rc)
    for (size_t i = 0; i < n; i++) {
      dlpx_tensor_free(out[i]);
      out[i] = NULL;
    }
  return rc;
}

int dlpx_segment_bytes(const dlpx_segment *seg, uint32_t flags, dlpx_tensor **out) {
  int rc = check_view(seg, flags, out);
  if (rc) return rc;
  int64_t len = (int64_t)(seg->size - seg->data_offset);
  return dlpx_tensor_from_storage(seg->map, (DLDataType){kDLUInt, 8, 1}, 1, &len, NULL,
                                  (int64_t)seg->data_offset, view_flags(flags), out);
}
