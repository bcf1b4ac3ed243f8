/* test_abi.c - dlpx's dlpack.h has DLPack's layout: equal to Debian's
 * header where both declare a thing, and the x86-64 numbers of the
 * versioned struct and of the exchange API table. */
#include "config.h"

#include "abi_system.h"
#include "check.h"

#include "abi_facts.inc"

#define ASSERT_AT(type, field, off) ASSERT_EQ(offsetof(type, field), off)

static void test_matches_system_header(void) {
  abi_fact sys[64], ours[64];
  size_t ns = abi_system_facts(sys, 64), no = abi_dlpx_facts(ours, 64);
  if (ns == 0) SKIP("Debian's dlpack/dlpack.h was not found at configure time (libdlpack-dev)");
  ASSERT_EQ(ns, no);
  for (size_t i = 0; i < ns; i++) {
    ASSERT_STR_EQ(sys[i].what, ours[i].what);
    if (sys[i].value != ours[i].value) fprintf(stderr, "# %s differs\n", sys[i].what);
    ASSERT_EQ(sys[i].value, ours[i].value);
  }
}

static void test_x86_64_layout(void) {
  if (sizeof(void *) != 8) SKIP("not a 64-bit target");
  ASSERT_EQ(sizeof(DLTensor), 48);
  ASSERT_AT(DLTensor, data, 0);
  ASSERT_AT(DLTensor, device, 8);
  ASSERT_AT(DLTensor, ndim, 16);
  ASSERT_AT(DLTensor, dtype, 20);
  ASSERT_AT(DLTensor, shape, 24);
  ASSERT_AT(DLTensor, strides, 32);
  ASSERT_AT(DLTensor, byte_offset, 40);
  ASSERT_EQ(sizeof(DLManagedTensor), 64);
  ASSERT_AT(DLManagedTensor, manager_ctx, 48);
  ASSERT_AT(DLManagedTensor, deleter, 56);
  ASSERT_EQ(sizeof(DLManagedTensorVersioned), 80);
  ASSERT_AT(DLManagedTensorVersioned, version, 0);
  ASSERT_AT(DLManagedTensorVersioned, manager_ctx, 8);
  ASSERT_AT(DLManagedTensorVersioned, deleter, 16);
  ASSERT_AT(DLManagedTensorVersioned, flags, 24);
  ASSERT_AT(DLManagedTensorVersioned, dl_tensor, 32);
  ASSERT_EQ(sizeof(DLPackVersion), 8);
  ASSERT_EQ(sizeof(DLPackExchangeAPIHeader), 16);
  ASSERT_EQ(sizeof(DLPackExchangeAPI), 56);
  ASSERT_AT(DLPackExchangeAPI, managed_tensor_allocator, 16);
  ASSERT_AT(DLPackExchangeAPI, managed_tensor_from_py_object_no_sync, 24);
  ASSERT_AT(DLPackExchangeAPI, managed_tensor_to_py_object_no_sync, 32);
  ASSERT_AT(DLPackExchangeAPI, dltensor_from_py_object_no_sync, 40);
  ASSERT_AT(DLPackExchangeAPI, current_work_stream, 48);
}

static void test_newer_enum_values(void) {
  ASSERT_EQ(kDLOneAPI, 14);
  ASSERT_EQ(kDLWebGPU, 15);
  ASSERT_EQ(kDLHexagon, 16);
  ASSERT_EQ(kDLMAIA, 17);
  ASSERT_EQ(kDLTrn, 18);
  ASSERT_EQ(kDLBool, 6);
  ASSERT_EQ(kDLFloat8_e3m4, 7);
  ASSERT_EQ(kDLFloat8_e8m0fnu, 14);
  ASSERT_EQ(kDLFloat6_e2m3fn, 15);
  ASSERT_EQ(kDLFloat4_e2m1fn, 17);
  ASSERT_EQ(DLPACK_FLAG_BITMASK_READ_ONLY, 1);
  ASSERT_EQ(DLPACK_FLAG_BITMASK_IS_COPIED, 2);
  ASSERT_EQ(DLPACK_FLAG_BITMASK_IS_SUBBYTE_TYPE_PADDED, 4);
  ASSERT_EQ(DLPACK_MAJOR_VERSION, 1);
}

int main(void) {
  RUN(test_matches_system_header);
  RUN(test_x86_64_layout);
  RUN(test_newer_enum_values);
  CHECK_DONE();
}
