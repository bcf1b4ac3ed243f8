/* abi_system.c - sizes, offsets and enum values from Debian's dlpack.h. */
#include "config.h"

#include "abi_system.h"

#ifdef HAVE_SYSTEM_DLPACK
#include <dlpack/dlpack.h>
#define FACTS_OF_SYSTEM_HEADER
#include "abi_facts.inc"
#else
size_t abi_system_facts(abi_fact *out, size_t cap) {
  (void)out;
  (void)cap;
  return 0;
}
#endif
