/* fixtures.c - shared C test fixtures (see fixtures.h). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixtures.h"

atomic_int fake_deleted;

DLDataType dt(const char *name) {
  DLDataType d = {0, 0, 0};
  if (dlpx_dtype_parse(name, &d) != 0) {
    fprintf(stderr, "# bad dtype name in test: %s\n", name);
    exit(2);
  }
  return d;
}

dlpx_tensor *fixture_arange_f32(int32_t ndim, const int64_t *shape) {
  dlpx_tensor *t = NULL;
  if (dlpx_tensor_empty(dt("float32"), ndim, shape, &t) != 0) return NULL;
  float *p = dlpx_tensor_data(t);
  for (int64_t i = 0; i < dlpx_tensor_numel(t); i++) p[i] = (float)i;
  return t;
}

void fake_versioned_deleter(DLManagedTensorVersioned *self) {
  fake_versioned *f = self->manager_ctx;
  free(f->buffer);
  free(f);
  atomic_fetch_add(&fake_deleted, 1);
}

static void fake_legacy_deleter(DLManagedTensor *self) {
  fake_legacy *f = self->manager_ctx;
  free(f->buffer);
  free(f);
  atomic_fetch_add(&fake_deleted, 1);
}

fake_versioned *fake_new(int32_t ndim, const int64_t *shape) {
  fake_versioned *f = calloc(1, sizeof *f);
  if (!f) abort();
  int64_t n = 1;
  for (int32_t i = ndim - 1; i >= 0; i--) {
    f->shape[i] = shape[i];
    f->strides[i] = n;
    n *= shape[i];
  }
  f->buffer = malloc((size_t)(n ? n : 1) * sizeof(float));
  if (!f->buffer) abort();
  for (int64_t i = 0; i < n; i++) ((float *)f->buffer)[i] = (float)i;
  f->mt.version.major = 1;
  f->mt.version.minor = 0;
  f->mt.manager_ctx = f;
  f->mt.deleter = fake_versioned_deleter;
  f->mt.flags = 0;
  f->mt.dl_tensor.data = f->buffer;
  f->mt.dl_tensor.device.device_type = kDLCPU;
  f->mt.dl_tensor.device.device_id = 0;
  f->mt.dl_tensor.ndim = ndim;
  f->mt.dl_tensor.dtype.code = kDLFloat;
  f->mt.dl_tensor.dtype.bits = 32;
  f->mt.dl_tensor.dtype.lanes = 1;
  f->mt.dl_tensor.shape = ndim ? f->shape : NULL;
  f->mt.dl_tensor.strides = ndim ? f->strides : NULL;
  f->mt.dl_tensor.byte_offset = 0;
  return f;
}

fake_legacy *fake_legacy_new(int32_t ndim, const int64_t *shape) {
  fake_versioned *v = fake_new(ndim, shape);
  fake_legacy *f = calloc(1, sizeof *f);
  if (!f) abort();
  memcpy(f->shape, v->shape, sizeof f->shape);
  memcpy(f->strides, v->strides, sizeof f->strides);
  f->buffer = v->buffer;
  f->mt.dl_tensor = v->mt.dl_tensor;
  f->mt.dl_tensor.shape = ndim ? f->shape : NULL;
  f->mt.dl_tensor.strides = ndim ? f->strides : NULL;
  f->mt.manager_ctx = f;
  f->mt.deleter = fake_legacy_deleter;
  free(v);
  return f;
}
