/* abi_system.h - layout facts of Debian's dlpack.h, gathered in a
 * translation unit that includes that header instead of ours. */
#ifndef DLPX_TESTS_ABI_SYSTEM_H
#define DLPX_TESTS_ABI_SYSTEM_H

#include <stddef.h>

typedef struct {
  const char *what;
  size_t value;
} abi_fact;

/* Fills |out| (capacity |cap|) and returns the count; 0 when the system
 * header was not available at build time. */
size_t abi_system_facts(abi_fact *out, size_t cap);

#endif
