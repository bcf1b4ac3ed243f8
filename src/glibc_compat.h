/*
 * glibc_compat.h - glibc 2.34 moved pthread_* and dl* into libc under a
 * new version, GLIBC_2.34, which would raise the wheel's manylinux floor
 * (2.17); the old versions are still there, for the binaries linked
 * before: bind to them (the sanitizers' interceptors take both).  Include
 * it in every file that calls one of these.
 */
#ifndef DLPX_GLIBC_COMPAT_H
#define DLPX_GLIBC_COMPAT_H

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
#if defined(__x86_64__)
#define DLPX__OLD_GLIBC "GLIBC_2.2.5"
#elif defined(__aarch64__)
#define DLPX__OLD_GLIBC "GLIBC_2.17"
#endif
#ifdef DLPX__OLD_GLIBC
__asm__(".symver pthread_create,pthread_create@" DLPX__OLD_GLIBC);
__asm__(".symver pthread_once,pthread_once@" DLPX__OLD_GLIBC);
__asm__(".symver pthread_join,pthread_join@" DLPX__OLD_GLIBC);
__asm__(".symver dlopen,dlopen@" DLPX__OLD_GLIBC);
__asm__(".symver dlsym,dlsym@" DLPX__OLD_GLIBC);
__asm__(".symver dlerror,dlerror@" DLPX__OLD_GLIBC);
#endif
#endif

#endif /* DLPX_GLIBC_COMPAT_H */
