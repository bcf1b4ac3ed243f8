/* sys.c - system calls the io files need, made so that the library keeps
 * the oldest glibc symbol versions (see dlpx__fstat in io.h). */
#include "config.h"

#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "io.h"

#if defined(__linux__) && (defined(__x86_64__) || defined(__aarch64__)) && \
    defined(SYS_fstat) && defined(SYS_newfstatat)
#define DLPX__RAW_STAT 1
#endif

int dlpx__fstat(int fd, struct stat *st) {
#ifdef DLPX__RAW_STAT
  return (int)syscall(SYS_fstat, fd, st);
#else
  return fstat(fd, st);
#endif
}

int dlpx__fstatat(int dirfd, const char *path, struct stat *st, int flags) {
#ifdef DLPX__RAW_STAT
  return (int)syscall(SYS_newfstatat, dirfd, path, st, flags);
#else
  return fstatat(dirfd, path, st, flags);
#endif
}
