/* fixtures.h - shared C test fixtures: dtypes by name, filled tensors, and
 * foreign DLPack producers whose deleters count their calls. */
#ifndef DLPX_TESTS_FIXTURES_H
#define DLPX_TESTS_FIXTURES_H

#include <stdatomic.h>

#include <dlpx/dlpx.h>

/* The dtype of a name; exits the test program (status 2) for a bad one. */
DLDataType dt(const char *name);

/* A C-contiguous float32 tensor of |shape| holding 0, 1, 2, ... */
dlpx_tensor *fixture_arange_f32(int32_t ndim, const int64_t *shape);

/* Deleter calls of every fake producer below, all fakes together. */
extern atomic_int fake_deleted;

typedef struct {
  DLManagedTensorVersioned mt;
  int64_t shape[8];
  int64_t strides[8];
  void *buffer;
} fake_versioned;

typedef struct {
  DLManagedTensor mt;
  int64_t shape[8];
  int64_t strides[8];
  void *buffer;
} fake_legacy;

/* A C-contiguous float32 tensor of |ndim| <= 8 dims holding 0, 1, 2, ...
 * (strides filled in; set them NULL afterwards to test that case), from a
 * foreign producer: its deleter frees it and counts in fake_deleted. */
fake_versioned *fake_new(int32_t ndim, const int64_t *shape);
fake_legacy *fake_legacy_new(int32_t ndim, const int64_t *shape);

/* The deleter fake_new installs; a test may wrap it. */
void fake_versioned_deleter(DLManagedTensorVersioned *self);

#endif
