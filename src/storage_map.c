/* storage_map.c - storages made with mmap: private mappings of a file
 * (DLPX_STORAGE_MAPPED), and large owned blocks of anonymous memory backed
 * by transparent huge pages, for tensors that are about to be filled by
 * reads (owned: dlpx frees them). */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#define HUGE_PAGE ((size_t)2 << 20)

typedef struct {
  void *addr; /* the whole mapping */
  size_t len;
} map_state;

static void map_release(dlpx_storage *s) {
  map_state *st = dlpx__storage_payload(s);
  munmap(st->addr, st->len);
}

static const dlpx__storage_ops file_ops = {DLPX_STORAGE_MAPPED, "mapped file", map_release};
static const dlpx__storage_ops pages_ops = {DLPX_STORAGE_OWNED, "owned (huge pages)",
                                            map_release};

static int wrap(const dlpx__storage_ops *ops, void *addr, size_t len, void *data, size_t nbytes,
                dlpx_storage **out) {
  dlpx_storage *s = dlpx__storage_new(ops, sizeof(map_state), data, nbytes, (DLDevice){kDLCPU, 0});
  if (!s) {
    munmap(addr, len);
    return DLPX_ENOMEM;
  }
  map_state *st = dlpx__storage_payload(s);
  st->addr = addr;
  st->len = len;
  *out = s;
  return 0;
}

int dlpx__storage_map_file(int fd, uint64_t len, bool writable, dlpx_storage **out) {
  if (len == 0 || len > (uint64_t)INT64_MAX)
    return dlpx__fail(DLPX_EINVAL, "cannot map %llu bytes", (unsigned long long)len);
  /* Private: writes through a copy-on-write mapping stay in this process
   * and never reach the file. */
  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  void *addr = mmap(NULL, (size_t)len, prot, MAP_PRIVATE, fd, 0);
  if (addr == MAP_FAILED)
    return dlpx__fail(errno == ENOMEM ? DLPX_ENOMEM : DLPX_EIO, "mmap of %llu bytes failed: %s",
                      (unsigned long long)len, strerror(errno));
  return wrap(&file_ops, addr, (size_t)len, addr, (size_t)len, out);
}

int dlpx__storage_alloc_pages(size_t nbytes, dlpx_storage **out) {
  if (nbytes < HUGE_PAGE) return dlpx_storage_alloc(nbytes, 0, 0, out);
  if (nbytes > (size_t)INT64_MAX - 2 * HUGE_PAGE)
    return dlpx__fail(DLPX_EOVERFLOW, "allocation of %zu bytes is too large", nbytes);
  /* Map one huge page more than needed and trim to a 2 MiB boundary, so
   * that the kernel can back the block with huge pages: a fault then
   * brings 2 MiB, not 4 KiB, which is what bounds reads into fresh memory. */
  size_t len = (nbytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
  char *raw = mmap(NULL, len + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return dlpx__fail(DLPX_ENOMEM, "cannot map %zu bytes", nbytes);
  char *addr = (char *)(((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
  if (addr > raw) munmap(raw, (size_t)(addr - raw));
  size_t tail = (size_t)(raw + len + HUGE_PAGE - (addr + len));
  if (tail) munmap(addr + len, tail);
#ifdef MADV_HUGEPAGE
  madvise(addr, len, MADV_HUGEPAGE); /* a hint: refused where THP is off */
#endif
  return wrap(&pages_ops, addr, len, addr, nbytes, out);
}
