/*
 * fakecuda.h - the control API of tests/fakecuda.c, the test double of the
 * CUDA Driver API that the tests load through DLPX_LIBCUDA.  Tests reach
 * these functions with dlsym on the double's handle (or by linking it).
 *
 * Entry names are the Driver API's base names, as cuGetProcAddress takes
 * them: "cuMemAlloc", "cuInit", "cuStreamWaitEvent" ...
 *
 * Environment, read by the double:
 *   FAKECUDA_DEVICES    devices cuInit finds (default 1, at most 16; 0: no device)
 *   FAKECUDA_MEMORY     bytes of memory per device (default 1 GiB)
 *   FAKECUDA_DELAY_US   initial fakecuda_set_delay_us (default 0)
 *   FAKECUDA_FAIL       injections at load, "entry:after:code,..." as fakecuda_fail
 *   FAKECUDA_NO_GETPROC non-empty: cuGetProcAddress fails, so loaders use dlsym
 */
#ifndef DLPX_TESTS_FAKECUDA_H
#define DLPX_TESTS_FAKECUDA_H

#include <stdint.h>

/* The call of |entry| numbered after+1 from now (after 0: the next one)
 * returns |code| once, before any side effect.  One injection per entry: a
 * new one replaces the last.  Code 0 clears the entry's injections, this
 * one and fakecuda_fail_always's. */
void fakecuda_fail(const char *entry, int after, int code);

/* Every call of |entry| returns |code| until cleared with code 0. */
void fakecuda_fail_always(const char *entry, int code);

/* The calls of |entry| so far (failed and injected ones too); -1 for a
 * name that is no entry. */
long fakecuda_calls(const char *entry);

/* Sets every entry's call count to 0. */
void fakecuda_reset_counts(void);

/* The delay each copy and memset enqueued from now sleeps in its stream
 * before it runs (the value at the call that enqueues it counts), so a
 * consumer that does not wait for it reads stale data. */
void fakecuda_set_delay_us(unsigned us);

/* Device and managed bytes allocated on |device| and not freed; -1 for a
 * device that does not exist. */
long long fakecuda_live_bytes(int device);

/* Live device, managed and pinned (cuMemHostAlloc) allocations, host
 * registrations and opened IPC mappings. */
long fakecuda_live_allocations(void);

/* Streams made by cuStreamCreate and not destroyed (the default streams
 * are not counted). */
long fakecuda_live_streams(void);

/* Events made or opened (IPC) and not destroyed. */
long fakecuda_live_events(void);

/* 1 when |p| is a device pointer (of cuMemAlloc or cuIpcOpenMemHandle)
 * inside a live allocation, else 0. */
int fakecuda_is_device_pointer(uintptr_t p);

#endif /* DLPX_TESTS_FAKECUDA_H */
