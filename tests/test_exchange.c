/* test_exchange.c - DLPack export and import: layout, flags, validation,
 * and the deleter-exactly-once rule on every ownership path. */
#include "config.h"

#include "check.h"

static void test_export_versioned(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {3, 4};
  dlpx_tensor *t = fixture_arange_f32(2, shape), *v = NULL;
  ASSERT_OK(dlpx_tensor_slice(t, 0, 1, DLPX_NONE, 1, &v)); /* byte offset 16 */
  DLManagedTensorVersioned *m = NULL;
  ASSERT_OK(dlpx_tensor_export(v, 0, &m));
  ASSERT_EQ(m->version.major, 1);
  ASSERT_EQ(m->version.minor, DLPACK_MINOR_VERSION);
  ASSERT_EQ(m->flags, 0);
  ASSERT_PTR_EQ(m->dl_tensor.data, (char *)dlpx_tensor_data(t) + 16); /* folded */
  ASSERT_EQ(m->dl_tensor.byte_offset, 0);
  ASSERT_EQ(m->dl_tensor.ndim, 2);
  ASSERT_EQ(m->dl_tensor.shape[0], 2);
  ASSERT_EQ(m->dl_tensor.shape[1], 4);
  ASSERT_EQ(m->dl_tensor.strides[0], 4);
  ASSERT_EQ(m->dl_tensor.strides[1], 1);
  ASSERT_EQ(m->dl_tensor.device.device_type, kDLCPU);
  ASSERT_EQ(m->dl_tensor.dtype.code, kDLFloat);
  ASSERT_TRUE(m->dl_tensor.shape != dlpx_tensor_shape(v)); /* its own copy */
  /* The export keeps the storage alive after every handle is gone. */
  dlpx_tensor_free(v);
  dlpx_tensor_free(t);
  ASSERT_TRUE(((float *)m->dl_tensor.data)[0] == 4.0f);
  dlpx_stats s;
  dlpx_stats_get(&s);
  ASSERT_EQ(s.exports_live, l.before.exports_live + 1);
  m->deleter(m);
  ASSERT_NO_LEAKS(&l);
}

static void test_export_0d_strides_and_unit_dims(void) {
  check_live l;
  check_live_begin(&l);
  dlpx_tensor *t = NULL, *v = NULL;
  ASSERT_OK(dlpx_tensor_zeros(dt("int64"), 0, NULL, &t));
  DLManagedTensorVersioned *m = NULL;
  ASSERT_OK(dlpx_tensor_export(t, 0, &m));
  ASSERT_EQ(m->dl_tensor.ndim, 0);
  m->deleter(m);
  dlpx_tensor_free(t);
  /* (4,1) transposed to (1,4) has strides (1,1): the unit dim gets the
   * contiguous stride 4. */
  int64_t shape[] = {4, 1};
  t = fixture_arange_f32(2, shape);
  ASSERT_OK(dlpx_tensor_transpose(t, &v));
  ASSERT_OK(dlpx_tensor_export(v, 0, &m));
  ASSERT_EQ(m->dl_tensor.strides[0], 4);
  ASSERT_EQ(m->dl_tensor.strides[1], 1);
  m->deleter(m);
  dlpx_tensor_free(v);
  dlpx_tensor_free(t);
  ASSERT_NO_LEAKS(&l);
}

static void test_export_readonly_and_copy(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {2, 3};
  dlpx_tensor *t = fixture_arange_f32(2, shape), *r = NULL, *tr = NULL;
  ASSERT_OK(dlpx_tensor_with_flags(t, DLPX_TENSOR_READONLY, &r));
  DLManagedTensorVersioned *m = NULL;
  ASSERT_OK(dlpx_tensor_export(r, 0, &m));
  ASSERT_EQ(m->flags, DLPACK_FLAG_BITMASK_READ_ONLY);
  m->deleter(m);
  DLManagedTensor *lm = NULL;
  ASSERT_RC(DLPX_EREADONLY, dlpx_tensor_export_legacy(r, 0, &lm));
  ASSERT_MSG("read-only");
  ASSERT_PTR_EQ(lm, NULL);
  /* A copy of a read-only tensor is the consumer's own: writable. */
  ASSERT_OK(dlpx_tensor_export_legacy(r, DLPX_EXPORT_COPY, &lm));
  ASSERT_TRUE(lm->dl_tensor.data != dlpx_tensor_data(t));
  lm->deleter(lm);
  ASSERT_OK(dlpx_tensor_transpose(r, &tr));
  ASSERT_OK(dlpx_tensor_export(tr, DLPX_EXPORT_COPY, &m));
  ASSERT_EQ(m->flags, DLPACK_FLAG_BITMASK_IS_COPIED);
  ASSERT_EQ(m->dl_tensor.shape[0], 3);
  ASSERT_EQ(m->dl_tensor.strides[0], 2); /* C-contiguous copy */
  ASSERT_EQ(m->dl_tensor.strides[1], 1);
  const float *c = m->dl_tensor.data;
  ASSERT_TRUE(c[0] == 0.0f && c[1] == 3.0f && c[2] == 1.0f && c[5] == 5.0f);
  ASSERT_TRUE(c != dlpx_tensor_data(t));
  m->deleter(m);
  ASSERT_RC(DLPX_EINVAL, dlpx_tensor_export(t, 4, &m));
  ASSERT_RC(DLPX_EINVAL, dlpx_tensor_export(NULL, 0, &m));
  ASSERT_RC(DLPX_EINVAL, dlpx_tensor_export_legacy(t, 0, NULL));
  dlpx_tensor_free(tr);
  dlpx_tensor_free(r);
  dlpx_tensor_free(t);
  ASSERT_NO_LEAKS(&l);
}

static void test_export_many_at_once(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {8};
  dlpx_tensor *t = fixture_arange_f32(1, shape);
  DLManagedTensorVersioned *m[16];
  DLManagedTensor *lm[16];
  for (int i = 0; i < 16; i++) {
    ASSERT_OK(dlpx_tensor_export(t, 0, &m[i]));
    ASSERT_OK(dlpx_tensor_export_legacy(t, 0, &lm[i]));
  }
  ASSERT_EQ(dlpx_storage_refcount(dlpx_tensor_storage(t)), 33);
  dlpx_tensor_free(t);
  /* Each deleter frees only its own part, in any order. */
  for (int i = 15; i >= 0; i -= 2) m[i]->deleter(m[i]);
  for (int i = 0; i < 16; i++) lm[i]->deleter(lm[i]);
  for (int i = 14; i >= 0; i -= 2) m[i]->deleter(m[i]);
  ASSERT_NO_LEAKS(&l);
}

static void test_export_opaque_device_keeps_byte_offset(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {4};
  dlpx_storage *s = NULL;
  ASSERT_OK(dlpx_storage_wrap((void *)(uintptr_t)0xABC000, 64, (DLDevice){kDLOpenCL, 1}, NULL,
                              NULL, &s));
  dlpx_tensor *t = NULL;
  ASSERT_OK(dlpx_tensor_from_storage(s, dt("float32"), 1, shape, NULL, 16, 0, &t));
  DLManagedTensorVersioned *m = NULL;
  ASSERT_OK(dlpx_tensor_export(t, 0, &m));
  ASSERT_PTR_EQ(m->dl_tensor.data, (void *)(uintptr_t)0xABC000);
  ASSERT_EQ(m->dl_tensor.byte_offset, 16);
  ASSERT_EQ(m->dl_tensor.device.device_type, kDLOpenCL);
  ASSERT_EQ(m->dl_tensor.device.device_id, 1);
  ASSERT_RC(DLPX_EDEVICE, dlpx_tensor_export(t, DLPX_EXPORT_COPY, &m));
  m->deleter(m);
  dlpx_tensor_free(t);
  dlpx_storage_release(s);
  ASSERT_NO_LEAKS(&l);
}

static void test_import_versioned_and_release_once(void) {
  check_live l;
  check_live_begin(&l);
  atomic_store(&fake_deleted, 0);
  int64_t shape[] = {3, 4};
  fake_versioned *f = fake_new(2, shape);
  f->mt.flags = DLPACK_FLAG_BITMASK_READ_ONLY;
  dlpx_tensor *t = NULL, *v = NULL;
  ASSERT_OK(dlpx_tensor_import(&f->mt, 0, &t));
  ASSERT_PTR_EQ(dlpx_tensor_data(t), f->buffer);
  ASSERT_TRUE(dlpx_tensor_is_readonly(t));
  ASSERT_EQ(dlpx_storage_kind_of(dlpx_tensor_storage(t)), DLPX_STORAGE_FOREIGN);
  ASSERT_OK(dlpx_tensor_transpose(t, &v));
  DLManagedTensorVersioned *m = NULL;
  ASSERT_OK(dlpx_tensor_export(v, 0, &m)); /* re-export a foreign tensor */
  ASSERT_EQ(m->flags, DLPACK_FLAG_BITMASK_READ_ONLY);
  dlpx_tensor_free(t);
  dlpx_tensor_free(v);
  ASSERT_EQ(atomic_load(&fake_deleted), 0);
  m->deleter(m);
  ASSERT_EQ(atomic_load(&fake_deleted), 1);
  ASSERT_NO_LEAKS(&l);
}

static void test_import_legacy(void) {
  check_live l;
  check_live_begin(&l);
  atomic_store(&fake_deleted, 0);
  int64_t shape[] = {5};
  fake_legacy *f = fake_legacy_new(1, shape);
  dlpx_tensor *t = NULL;
  ASSERT_OK(dlpx_tensor_import_legacy(&f->mt, 0, &t));
  ASSERT_TRUE(!dlpx_tensor_is_readonly(t));
  ASSERT_EQ(dlpx_storage_kind_of(dlpx_tensor_storage(t)), DLPX_STORAGE_FOREIGN_LEGACY);
  dlpx_tensor_free(t);
  ASSERT_EQ(atomic_load(&fake_deleted), 1);
  f = fake_legacy_new(1, shape);
  ASSERT_OK(dlpx_tensor_import_legacy(&f->mt, DLPX_IMPORT_READONLY, &t));
  ASSERT_TRUE(dlpx_tensor_is_readonly(t));
  dlpx_tensor_free(t);
  ASSERT_EQ(atomic_load(&fake_deleted), 2);
  ASSERT_NO_LEAKS(&l);
}

static void test_import_null_strides_and_byte_offset(void) {
  check_live l;
  check_live_begin(&l);
  atomic_store(&fake_deleted, 0);
  int64_t shape[] = {2, 3};
  fake_versioned *f = fake_new(2, shape);
  f->mt.dl_tensor.strides = NULL; /* pre-1.2 producers: row-major */
  f->mt.dl_tensor.byte_offset = 8;
  f->mt.dl_tensor.shape[1] = 2; /* view of 2x2 starting at element 2 */
  f->mt.dl_tensor.shape[0] = 2;
  dlpx_tensor *t = NULL;
  ASSERT_OK(dlpx_tensor_import(&f->mt, 0, &t));
  ASSERT_EQ(dlpx_tensor_strides(t)[0], 2);
  ASSERT_EQ(dlpx_tensor_strides(t)[1], 1);
  ASSERT_PTR_EQ(dlpx_tensor_data(t), (char *)f->buffer + 8);
  ASSERT_TRUE(((float *)dlpx_tensor_data(t))[0] == 2.0f);
  DLManagedTensorVersioned *m = NULL;
  ASSERT_OK(dlpx_tensor_export(t, 0, &m));
  ASSERT_PTR_EQ(m->dl_tensor.data, (char *)f->buffer + 8);
  ASSERT_EQ(m->dl_tensor.byte_offset, 0);
  m->deleter(m);
  dlpx_tensor_free(t);
  ASSERT_EQ(atomic_load(&fake_deleted), 1);
  ASSERT_NO_LEAKS(&l);
}

static void test_import_negative_strides(void) {
  check_live l;
  check_live_begin(&l);
  atomic_store(&fake_deleted, 0);
  int64_t shape[] = {3, 4};
  fake_versioned *f = fake_new(2, shape);
  /* x[::-1, ::-1]: element 0 is the last one. */
  f->mt.dl_tensor.data = (float *)f->buffer + 11;
  f->strides[0] = -4;
  f->strides[1] = -1;
  dlpx_tensor *t = NULL;
  ASSERT_OK(dlpx_tensor_import(&f->mt, 0, &t));
  ASSERT_TRUE(((float *)dlpx_tensor_data(t))[0] == 11.0f);
  ASSERT_PTR_EQ(dlpx_storage_data(dlpx_tensor_storage(t)), f->buffer);
  ASSERT_EQ(dlpx_storage_nbytes(dlpx_tensor_storage(t)), 48);
  dlpx_tensor *c = NULL;
  ASSERT_OK(dlpx_tensor_copy(t, 'C', &c));
  ASSERT_TRUE(((float *)dlpx_tensor_data(c))[1] == 10.0f);
  dlpx_tensor_free(c);
  dlpx_tensor_free(t);
  ASSERT_EQ(atomic_load(&fake_deleted), 1);
  ASSERT_NO_LEAKS(&l);
}

static void test_import_zero_size_null_data(void) {
  check_live l;
  check_live_begin(&l);
  atomic_store(&fake_deleted, 0);
  int64_t shape[] = {0, 3};
  fake_versioned *f = fake_new(2, shape);
  f->mt.dl_tensor.data = NULL;
  dlpx_tensor *t = NULL;
  ASSERT_OK(dlpx_tensor_import(&f->mt, 0, &t));
  ASSERT_EQ(dlpx_tensor_numel(t), 0);
  DLManagedTensorVersioned *m = NULL;
  ASSERT_OK(dlpx_tensor_export(t, 0, &m));
  ASSERT_PTR_EQ(m->dl_tensor.data, NULL);
  m->deleter(m);
  dlpx_tensor_free(t);
  /* 0-d with NULL shape and strides */
  f = fake_new(0, NULL);
  ASSERT_OK(dlpx_tensor_import(&f->mt, 0, &t));
  ASSERT_EQ(dlpx_tensor_numel(t), 1);
  ASSERT_TRUE(((float *)dlpx_tensor_data(t))[0] == 0.0f);
  dlpx_tensor_free(t);
  ASSERT_EQ(atomic_load(&fake_deleted), 2);
  ASSERT_NO_LEAKS(&l);
}

static void test_import_opaque_device(void) {
  check_live l;
  check_live_begin(&l);
  atomic_store(&fake_deleted, 0);
  int64_t shape[] = {4};
  fake_versioned *f = fake_new(1, shape);
  void *host = f->buffer;
  f->mt.dl_tensor.data = (void *)(uintptr_t)0x5000; /* an opaque handle */
  f->mt.dl_tensor.device = (DLDevice){kDLVulkan, 0};
  f->mt.dl_tensor.byte_offset = 32;
  dlpx_tensor *t = NULL;
  ASSERT_OK(dlpx_tensor_import(&f->mt, 0, &t));
  ASSERT_PTR_EQ(dlpx_tensor_dltensor(t)->data, (void *)(uintptr_t)0x5000);
  ASSERT_EQ(dlpx_tensor_byte_offset(t), 32);
  dlpx_tensor *c = NULL;
  ASSERT_RC(DLPX_EDEVICE, dlpx_tensor_copy(t, 'C', &c));
  dlpx_tensor_free(t);
  ASSERT_EQ(atomic_load(&fake_deleted), 1);
  (void)host;
  /* Negative strides reaching below the handle are refused. */
  f = fake_new(1, shape);
  f->mt.dl_tensor.data = (void *)(uintptr_t)0x5000;
  f->mt.dl_tensor.device = (DLDevice){kDLVulkan, 0};
  f->strides[0] = -1;
  f->mt.dl_tensor.byte_offset = 8;
  ASSERT_RC(DLPX_EBOUNDS, dlpx_tensor_import(&f->mt, 0, &t));
  ASSERT_EQ(atomic_load(&fake_deleted), 2);
  ASSERT_NO_LEAKS(&l);
}

/* Each refusal: the right code, a message, and the deleter run once. */
typedef void (*spoil_fn)(fake_versioned *f);

static void spoil_major(fake_versioned *f) { f->mt.version.major = 2; }
static void spoil_major0(fake_versioned *f) { f->mt.version.major = 0; }
static void spoil_ndim_neg(fake_versioned *f) { f->mt.dl_tensor.ndim = -1; }
static void spoil_ndim_big(fake_versioned *f) { f->mt.dl_tensor.ndim = 1000; }
static void spoil_shape_null(fake_versioned *f) { f->mt.dl_tensor.shape = NULL; }
static void spoil_shape_neg(fake_versioned *f) { f->shape[1] = -3; }
static void spoil_dtype(fake_versioned *f) { f->mt.dl_tensor.dtype.code = 42; }
static void spoil_bits(fake_versioned *f) { f->mt.dl_tensor.dtype.bits = 24; }
static void spoil_lanes(fake_versioned *f) { f->mt.dl_tensor.dtype.lanes = 4; }
static void spoil_lanes0(fake_versioned *f) { f->mt.dl_tensor.dtype.lanes = 0; }
static void spoil_opaque(fake_versioned *f) { f->mt.dl_tensor.dtype.code = kDLOpaqueHandle; }
static void spoil_device(fake_versioned *f) { f->mt.dl_tensor.device.device_type = 6; }
static void spoil_device_id(fake_versioned *f) { f->mt.dl_tensor.device.device_id = -2; }
static void spoil_null_data(fake_versioned *f) { f->mt.dl_tensor.data = NULL; }
static void spoil_size(fake_versioned *f) {
  f->shape[0] = INT64_MAX / 2;
  f->shape[1] = 4;
}
static void spoil_bytes(fake_versioned *f) { /* count fits, bytes do not */
  f->mt.dl_tensor.dtype = (DLDataType){kDLFloat, 64, 1};
  f->shape[0] = INT64_MAX / 4;
  f->shape[1] = 1;
  f->strides[0] = 1;
}
static void spoil_strides(fake_versioned *f) { f->strides[0] = INT64_MAX / 2; }
static void spoil_offset(fake_versioned *f) { f->mt.dl_tensor.byte_offset = UINT64_MAX - 3; }

static void test_import_refusals(void) {
  check_live l;
  check_live_begin(&l);
  struct {
    spoil_fn spoil;
    int code;
    const char *msg;
  } cases[] = {
      {spoil_major, DLPX_EVERSION, "major version 2"},
      {spoil_major0, DLPX_EVERSION, "major version 0"},
      {spoil_ndim_neg, DLPX_ESHAPE, "ndim -1"},
      {spoil_ndim_big, DLPX_ESHAPE, "ndim 1000"},
      {spoil_shape_null, DLPX_ESHAPE, "NULL shape"},
      {spoil_shape_neg, DLPX_ESHAPE, "shape[1] is negative: -3"},
      {spoil_dtype, DLPX_EDTYPE, "unknown dtype code 42"},
      {spoil_bits, DLPX_EDTYPE, "no 24-bit type"},
      {spoil_lanes, DLPX_EDTYPE, "4 lanes"},
      {spoil_lanes0, DLPX_EDTYPE, "lanes is 0"},
      {spoil_opaque, DLPX_EDTYPE, "opaque"},
      {spoil_device, DLPX_EDEVICE, "unknown device type 6"},
      {spoil_device_id, DLPX_EDEVICE, "negative device id"},
      {spoil_null_data, DLPX_EINVAL, "NULL data"},
      {spoil_size, DLPX_EOVERFLOW, "overflows"},
      {spoil_bytes, DLPX_EOVERFLOW, "overflow"},
      {spoil_strides, DLPX_EOVERFLOW, "overflows"},
      {spoil_offset, DLPX_EOVERFLOW, "byte_offset"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    atomic_store(&fake_deleted, 0);
    int64_t shape[] = {2, 3};
    fake_versioned *f = fake_new(2, shape);
    cases[i].spoil(f);
    dlpx_tensor *t = NULL;
    int rc = dlpx_tensor_import(&f->mt, 0, &t);
    if (rc != cases[i].code) fprintf(stderr, "# case %zu: %s\n", i, dlpx_last_error());
    ASSERT_EQ(rc, cases[i].code);
    ASSERT_MSG(cases[i].msg);
    ASSERT_PTR_EQ(t, NULL);
    ASSERT_EQ(atomic_load(&fake_deleted), 1);
  }
  ASSERT_NO_LEAKS(&l);
}

static void test_import_legacy_refusal_and_args(void) {
  check_live l;
  check_live_begin(&l);
  atomic_store(&fake_deleted, 0);
  int64_t shape[] = {2};
  fake_legacy *f = fake_legacy_new(1, shape);
  f->mt.dl_tensor.dtype.bits = 3;
  dlpx_tensor *t = NULL;
  ASSERT_RC(DLPX_EDTYPE, dlpx_tensor_import_legacy(&f->mt, 0, &t));
  ASSERT_EQ(atomic_load(&fake_deleted), 1);
  /* Bad arguments still take ownership (the rule is: always). */
  f = fake_legacy_new(1, shape);
  ASSERT_RC(DLPX_EINVAL, dlpx_tensor_import_legacy(&f->mt, 0, NULL));
  ASSERT_EQ(atomic_load(&fake_deleted), 2);
  fake_versioned *v = fake_new(1, shape);
  ASSERT_RC(DLPX_EINVAL, dlpx_tensor_import(&v->mt, 0x80, &t));
  ASSERT_EQ(atomic_load(&fake_deleted), 3);
  ASSERT_RC(DLPX_EINVAL, dlpx_tensor_import(NULL, 0, &t));
  ASSERT_RC(DLPX_EINVAL, dlpx_tensor_import_legacy(NULL, 0, &t));
  ASSERT_EQ(atomic_load(&fake_deleted), 3);
  ASSERT_NO_LEAKS(&l);
}

static void test_import_null_deleter(void) {
  check_live l;
  check_live_begin(&l);
  static float data[4] = {1, 2, 3, 4};
  static int64_t shape[1] = {4};
  static DLManagedTensorVersioned m;
  memset(&m, 0, sizeof m);
  m.version.major = 1;
  m.dl_tensor.data = data;
  m.dl_tensor.device.device_type = kDLCPU;
  m.dl_tensor.ndim = 1;
  m.dl_tensor.dtype = dt("float32");
  m.dl_tensor.shape = shape;
  dlpx_tensor *t = NULL;
  ASSERT_OK(dlpx_tensor_import(&m, 0, &t)); /* deleter NULL: nothing to call */
  dlpx_tensor_free(t);
  m.version.major = 3;
  ASSERT_RC(DLPX_EVERSION, dlpx_tensor_import(&m, 0, &t));
  ASSERT_NO_LEAKS(&l);
}

static void test_import_minor_versions_and_flags(void) {
  check_live l;
  check_live_begin(&l);
  atomic_store(&fake_deleted, 0);
  int64_t shape[] = {4};
  fake_versioned *f = fake_new(1, shape);
  f->mt.version.minor = 99; /* a future minor: same layout */
  f->mt.flags = DLPACK_FLAG_BITMASK_IS_COPIED | (1ull << 40);
  dlpx_tensor *t = NULL;
  ASSERT_OK(dlpx_tensor_import(&f->mt, 0, &t));
  ASSERT_TRUE(!dlpx_tensor_is_readonly(t));
  dlpx_tensor_free(t);
  ASSERT_EQ(atomic_load(&fake_deleted), 1);
  ASSERT_NO_LEAKS(&l);
}

static void test_subbyte_padded_round_trip(void) {
  check_live l;
  check_live_begin(&l);
  atomic_store(&fake_deleted, 0);
  int64_t shape[] = {2, 3};
  fake_versioned *f = fake_new(2, shape);
  f->mt.dl_tensor.dtype = dt("float4_e2m1fn");
  f->mt.flags = DLPACK_FLAG_BITMASK_IS_SUBBYTE_TYPE_PADDED;
  dlpx_tensor *t = NULL;
  ASSERT_OK(dlpx_tensor_import(&f->mt, 0, &t));
  ASSERT_EQ(dlpx_tensor_flags(t), DLPX_TENSOR_SUBBYTE_PADDED);
  ASSERT_EQ(dlpx_tensor_nbytes(t), 6);
  ASSERT_EQ(dlpx_storage_nbytes(dlpx_tensor_storage(t)), 6);
  DLManagedTensorVersioned *m = NULL;
  ASSERT_OK(dlpx_tensor_export(t, 0, &m));
  ASSERT_EQ(m->flags, DLPACK_FLAG_BITMASK_IS_SUBBYTE_TYPE_PADDED);
  m->deleter(m);
  DLManagedTensor *lm = NULL;
  ASSERT_RC(DLPX_ENOTSUP, dlpx_tensor_export_legacy(t, 0, &lm));
  dlpx_tensor *c = NULL;
  ASSERT_OK(dlpx_tensor_copy(t, 'F', &c));
  ASSERT_EQ(dlpx_tensor_flags(c), DLPX_TENSOR_SUBBYTE_PADDED);
  ASSERT_EQ(dlpx_tensor_nbytes(c), 6);
  dlpx_tensor_free(c);
  dlpx_tensor_free(t);
  ASSERT_EQ(atomic_load(&fake_deleted), 1);
  /* packed: 6 nibbles in 3 bytes */
  f = fake_new(2, shape);
  f->mt.dl_tensor.dtype = dt("float4_e2m1fn");
  ASSERT_OK(dlpx_tensor_import(&f->mt, 0, &t));
  ASSERT_EQ(dlpx_tensor_nbytes(t), 3);
  ASSERT_EQ(dlpx_storage_nbytes(dlpx_tensor_storage(t)), 3);
  dlpx_tensor_free(t);
  ASSERT_NO_LEAKS(&l);
}

static void test_round_trip_dlpx_to_dlpx(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {3, 5};
  dlpx_tensor *t = fixture_arange_f32(2, shape), *v = NULL, *back = NULL;
  ASSERT_OK(dlpx_tensor_slice(t, 1, DLPX_NONE, DLPX_NONE, -2, &v));
  DLManagedTensorVersioned *m = NULL;
  ASSERT_OK(dlpx_tensor_export(v, 0, &m));
  ASSERT_OK(dlpx_tensor_import(m, 0, &back));
  ASSERT_PTR_EQ(dlpx_tensor_data(back), dlpx_tensor_data(v));
  ASSERT_EQ(dlpx_tensor_strides(back)[1], -2);
  ASSERT_EQ(dlpx_tensor_shape(back)[1], 3);
  dlpx_tensor_free(v);
  dlpx_tensor_free(t);
  /* back keeps everything alive through the export it owns */
  ASSERT_TRUE(((float *)dlpx_tensor_data(back))[0] == 4.0f);
  dlpx_tensor_free(back);
  ASSERT_NO_LEAKS(&l);
}

/* Defect: when a foreign tensor was refused, the producer's deleter ran
 * before the error message was read, and a deleter that calls dlpx
 * overwrote it. */
static void chatty_deleter(DLManagedTensorVersioned *self) {
  DLDataType d;
  (void)dlpx_dtype_parse("no such dtype", &d); /* fails: sets the last error */
  fake_versioned_deleter(self);
}

static void chatty_legacy_deleter(DLManagedTensor *self) {
  DLDataType d;
  (void)dlpx_dtype_parse("no such dtype", &d);
  fake_legacy *f = self->manager_ctx;
  free(f->buffer);
  free(f);
  atomic_fetch_add(&fake_deleted, 1);
}

static void test_refusal_message_survives_the_deleter(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {2, 3};
  dlpx_tensor *t = NULL;
  atomic_store(&fake_deleted, 0);
  fake_versioned *f = fake_new(2, shape);
  f->mt.deleter = chatty_deleter;
  f->shape[1] = -3;
  ASSERT_RC(DLPX_ESHAPE, dlpx_tensor_import(&f->mt, 0, &t));
  ASSERT_EQ(atomic_load(&fake_deleted), 1);
  ASSERT_EQ(dlpx_last_error_code(), DLPX_ESHAPE);
  ASSERT_MSG("shape[1] is negative");
  fake_legacy *g = fake_legacy_new(2, shape);
  g->mt.deleter = chatty_legacy_deleter;
  g->mt.dl_tensor.dtype.code = 42;
  ASSERT_RC(DLPX_EDTYPE, dlpx_tensor_import_legacy(&g->mt, 0, &t));
  ASSERT_EQ(atomic_load(&fake_deleted), 2);
  ASSERT_EQ(dlpx_last_error_code(), DLPX_EDTYPE);
  ASSERT_MSG("unknown dtype code 42");
  /* an unsupported major version: only the deleter may be touched */
  f = fake_new(2, shape);
  f->mt.deleter = chatty_deleter;
  f->mt.version.major = 7;
  ASSERT_RC(DLPX_EVERSION, dlpx_tensor_import(&f->mt, 0, &t));
  ASSERT_MSG("major version 7");
  ASSERT_NO_LEAKS(&l);
}

/* Defect: a tensor imported from a legacy capsule is read-only (the
 * capsule cannot say), and read-only tensors were refused to legacy
 * consumers, so zero-copy round trips through legacy-only peers failed.
 * Read-only "because the capsule could not say" may go back out as legacy;
 * read-only on purpose may not. */
static void test_legacy_readonly_goes_back_out_as_legacy(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {2, 3};
  fake_legacy *g = fake_legacy_new(2, shape);
  void *data = g->mt.dl_tensor.data;
  dlpx_tensor *t = NULL, *v = NULL, *ro = NULL;
  ASSERT_OK(dlpx_tensor_import_legacy(&g->mt, DLPX_IMPORT_LEGACY_READONLY, &t));
  ASSERT_TRUE(dlpx_tensor_is_readonly(t));
  ASSERT_EQ(dlpx_tensor_flags(t), DLPX_TENSOR_READONLY | DLPX_TENSOR_LEGACY_READONLY);
  /* views keep the mark; a legacy export aliases the same memory */
  ASSERT_OK(dlpx_tensor_slice(t, 1, 1, DLPX_NONE, 1, &v));
  DLManagedTensor *ml = NULL;
  ASSERT_OK(dlpx_tensor_export_legacy(v, 0, &ml));
  ASSERT_PTR_EQ(ml->dl_tensor.data, (float *)data + 1);
  ml->deleter(ml);
  /* a versioned export says read-only */
  DLManagedTensorVersioned *m = NULL;
  ASSERT_OK(dlpx_tensor_export(t, 0, &m));
  ASSERT_TRUE(m->flags & DLPACK_FLAG_BITMASK_READ_ONLY);
  m->deleter(m);
  /* writes stay refused */
  ASSERT_RC(DLPX_EREADONLY, dlpx_tensor_copy_into(v, v));
  /* made read-only on purpose: no longer goes out as legacy */
  ASSERT_OK(dlpx_tensor_with_flags(t, DLPX_TENSOR_READONLY, &ro));
  ASSERT_EQ(dlpx_tensor_flags(ro), DLPX_TENSOR_READONLY);
  ASSERT_RC(DLPX_EREADONLY, dlpx_tensor_export_legacy(ro, 0, &ml));
  dlpx_tensor_free(ro);
  dlpx_tensor_free(v);
  dlpx_tensor_free(t);
  /* DLPX_IMPORT_READONLY asks for read-only on purpose */
  g = fake_legacy_new(2, shape);
  ASSERT_OK(dlpx_tensor_import_legacy(&g->mt, DLPX_IMPORT_READONLY, &t));
  ASSERT_EQ(dlpx_tensor_flags(t), DLPX_TENSOR_READONLY);
  ASSERT_RC(DLPX_EREADONLY, dlpx_tensor_export_legacy(t, 0, &ml));
  dlpx_tensor_free(t);
  /* a versioned import ignores the legacy flag: its own flag decides */
  fake_versioned *f = fake_new(2, shape);
  ASSERT_OK(dlpx_tensor_import(&f->mt, DLPX_IMPORT_LEGACY_READONLY, &t));
  ASSERT_EQ(dlpx_tensor_flags(t), 0);
  dlpx_tensor_free(t);
  /* the flag needs READONLY when given at creation */
  ASSERT_RC(DLPX_EINVAL, dlpx_tensor_new(dt("float32"), 2, shape, DLPX_TENSOR_LEGACY_READONLY, 1,
                                         &t));
  ASSERT_NO_LEAKS(&l);
}

int main(void) {
  RUN(test_export_versioned);
  RUN(test_export_0d_strides_and_unit_dims);
  RUN(test_export_readonly_and_copy);
  RUN(test_export_many_at_once);
  RUN(test_export_opaque_device_keeps_byte_offset);
  RUN(test_import_versioned_and_release_once);
  RUN(test_import_legacy);
  RUN(test_import_null_strides_and_byte_offset);
  RUN(test_import_negative_strides);
  RUN(test_import_zero_size_null_data);
  RUN(test_import_opaque_device);
  RUN(test_import_refusals);
  RUN(test_import_legacy_refusal_and_args);
  RUN(test_import_null_deleter);
  RUN(test_import_minor_versions_and_flags);
  RUN(test_subbyte_padded_round_trip);
  RUN(test_round_trip_dlpx_to_dlpx);
  RUN(test_refusal_message_survives_the_deleter);
  RUN(test_legacy_readonly_goes_back_out_as_legacy);
  CHECK_DONE();
}
