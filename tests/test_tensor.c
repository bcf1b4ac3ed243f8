/* test_tensor.c - tensor creation, queries and views (hand-picked cases;
 * test_random.c compares views against a reference at random). */
#include "config.h"

#include "check.h"

/* Element at a multi-index of a float32 view. */
static float at(const dlpx_tensor *t, const int64_t *idx) {
  const float *p = dlpx_tensor_data(t);
  int64_t off = 0;
  for (int32_t i = 0; i < dlpx_tensor_ndim(t); i++) off += idx[i] * dlpx_tensor_strides(t)[i];
  return p[off];
}

#define ASSERT_SHAPE(t, ...)                                       \
  do {                                                             \
    const int64_t want_[] = {__VA_ARGS__};                         \
    const int32_t n_ = (int32_t)(sizeof want_ / sizeof want_[0]);  \
    ASSERT_EQ(dlpx_tensor_ndim(t), n_);                            \
    for (int32_t i_ = 0; i_ < n_; i_++)                            \
      ASSERT_EQ(dlpx_tensor_shape(t)[i_], want_[i_]);              \
  } while (0)

#define ASSERT_STRIDES(t, ...)                                     \
  do {                                                             \
    const int64_t want_[] = {__VA_ARGS__};                         \
    const int32_t n_ = (int32_t)(sizeof want_ / sizeof want_[0]);  \
    for (int32_t i_ = 0; i_ < n_; i_++)                            \
      ASSERT_EQ(dlpx_tensor_strides(t)[i_], want_[i_]);            \
  } while (0)

static void test_empty_and_zeros(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {2, 3, 4};
  dlpx_tensor *t = NULL;
  ASSERT_OK(dlpx_tensor_zeros(dt("float64"), 3, shape, &t));
  ASSERT_SHAPE(t, 2, 3, 4);
  ASSERT_STRIDES(t, 12, 4, 1);
  ASSERT_EQ(dlpx_tensor_numel(t), 24);
  ASSERT_EQ(dlpx_tensor_nbytes(t), 192);
  ASSERT_EQ(dlpx_tensor_byte_offset(t), 0);
  ASSERT_EQ(dlpx_tensor_device(t).device_type, kDLCPU);
  ASSERT_TRUE(dlpx_tensor_is_c_contiguous(t));
  ASSERT_TRUE(!dlpx_tensor_is_f_contiguous(t));
  ASSERT_TRUE(!dlpx_tensor_is_readonly(t));
  ASSERT_EQ(dlpx_storage_refcount(dlpx_tensor_storage(t)), 1);
  const double *p = dlpx_tensor_data(t);
  for (int i = 0; i < 24; i++) ASSERT_TRUE(p[i] == 0.0);
  const DLTensor *dl = dlpx_tensor_dltensor(t);
  ASSERT_EQ(dl->ndim, 3);
  ASSERT_EQ(dl->dtype.code, kDLFloat);
  ASSERT_EQ(dl->dtype.bits, 64);
  ASSERT_PTR_EQ(dl->shape, dlpx_tensor_shape(t));
  dlpx_tensor_free(t);
  ASSERT_NO_LEAKS(&l);
}

static void test_zero_dim_and_zero_size(void) {
  check_live l;
  check_live_begin(&l);
  dlpx_tensor *t = NULL;
  ASSERT_OK(dlpx_tensor_zeros(dt("int32"), 0, NULL, &t));
  ASSERT_EQ(dlpx_tensor_ndim(t), 0);
  ASSERT_PTR_EQ(dlpx_tensor_shape(t), NULL);
  ASSERT_PTR_EQ(dlpx_tensor_strides(t), NULL);
  ASSERT_EQ(dlpx_tensor_numel(t), 1);
  ASSERT_EQ(dlpx_tensor_nbytes(t), 4);
  ASSERT_TRUE(dlpx_tensor_is_c_contiguous(t) && dlpx_tensor_is_f_contiguous(t));
  int64_t lo, hi;
  dlpx_tensor_extent(t, &lo, &hi);
  ASSERT_EQ(lo, 0);
  ASSERT_EQ(hi, 4);
  dlpx_tensor_free(t);
  int64_t shape[] = {3, 0, 5};
  ASSERT_OK(dlpx_tensor_empty(dt("int32"), 3, shape, &t));
  ASSERT_EQ(dlpx_tensor_numel(t), 0);
  ASSERT_EQ(dlpx_tensor_nbytes(t), 0);
  ASSERT_TRUE(dlpx_tensor_data(t) != NULL);
  ASSERT_TRUE(dlpx_tensor_is_c_contiguous(t) && dlpx_tensor_is_f_contiguous(t));
  dlpx_tensor_extent(t, &lo, &hi);
  ASSERT_EQ(lo, 0);
  ASSERT_EQ(hi, 0);
  dlpx_tensor_free(t);
  ASSERT_NO_LEAKS(&l);
}

static void test_max_ndim(void) {
  int64_t shape[DLPX_MAX_NDIM + 1];
  for (int i = 0; i <= DLPX_MAX_NDIM; i++) shape[i] = 1;
  dlpx_tensor *t = NULL;
  ASSERT_OK(dlpx_tensor_empty(dt("int8"), 64, shape, &t));
  ASSERT_EQ(dlpx_tensor_ndim(t), 64);
  dlpx_tensor_free(t);
  ASSERT_OK(dlpx_tensor_empty(dt("int8"), DLPX_MAX_NDIM, shape, &t));
  dlpx_tensor *u = NULL;
  ASSERT_RC(DLPX_ESHAPE, dlpx_tensor_unsqueeze(t, 0, &u));
  dlpx_index items[1] = {{DLPX_INDEX_NEWAXIS, 0, 0, 0}};
  ASSERT_RC(DLPX_ESHAPE, dlpx_tensor_index(t, 1, items, &u));
  dlpx_tensor_free(t);
  ASSERT_RC(DLPX_ESHAPE, dlpx_tensor_empty(dt("int8"), DLPX_MAX_NDIM + 1, shape, &t));
  ASSERT_RC(DLPX_ESHAPE, dlpx_tensor_empty(dt("int8"), -1, shape, &t));
  ASSERT_MSG("ndim -1 is outside");
}

static void test_create_errors(void) {
  dlpx_tensor *t = NULL;
  int64_t big[] = {INT64_MAX / 2, 3};
  ASSERT_RC(DLPX_EOVERFLOW, dlpx_tensor_empty(dt("int8"), 2, big, &t));
  int64_t big2[] = {INT64_MAX / 4};
  ASSERT_RC(DLPX_EOVERFLOW, dlpx_tensor_empty(dt("float64"), 1, big2, &t));
  int64_t s[] = {2};
  ASSERT_RC(DLPX_EINVAL, dlpx_tensor_empty(dt("int8"), 1, s, NULL));
  ASSERT_RC(DLPX_EDTYPE, dlpx_tensor_empty(dt("float32x4"), 1, s, &t));
  ASSERT_MSG("4 lanes");
  ASSERT_RC(DLPX_EDTYPE, dlpx_tensor_empty((DLDataType){kDLInt, 7, 1}, 1, s, &t));
  int64_t huge[] = {(int64_t)1 << 61};
  ASSERT_RC(DLPX_ENOMEM, dlpx_tensor_empty(dt("int8"), 1, huge, &t));
  ASSERT_PTR_EQ(t, NULL);
}

static void test_from_storage_bounds(void) {
  check_live l;
  check_live_begin(&l);
  dlpx_storage *s = NULL;
  ASSERT_OK(dlpx_storage_alloc(100, 0, 1, &s));
  dlpx_tensor *t = NULL;
  int64_t shape[] = {5, 5};
  ASSERT_OK(dlpx_tensor_from_storage(s, dt("float32"), 2, shape, NULL, 0, 0, &t));
  ASSERT_EQ(dlpx_storage_refcount(s), 2);
  dlpx_tensor_free(t);
  int64_t st[] = {5, 1};
  ASSERT_RC(DLPX_EBOUNDS, dlpx_tensor_from_storage(s, dt("float32"), 2, shape, st, 4, 0, &t));
  ASSERT_MSG("view touches bytes [4, 104) but the storage has 100 bytes");
  int64_t neg[] = {-5, 1};
  ASSERT_RC(DLPX_EBOUNDS, dlpx_tensor_from_storage(s, dt("float32"), 2, shape, neg, 0, 0, &t));
  ASSERT_OK(dlpx_tensor_from_storage(s, dt("float32"), 2, shape, neg, 80, 0, &t));
  ASSERT_EQ(dlpx_tensor_strides(t)[0], -5);
  dlpx_tensor_free(t);
  ASSERT_RC(DLPX_EBOUNDS, dlpx_tensor_from_storage(s, dt("float32"), 2, shape, NULL, -4, 0, &t));
  int64_t zero[] = {0, 5};
  ASSERT_OK(dlpx_tensor_from_storage(s, dt("float32"), 2, zero, NULL, 100, 0, &t));
  dlpx_tensor_free(t);
  ASSERT_RC(DLPX_EBOUNDS, dlpx_tensor_from_storage(s, dt("float32"), 2, zero, NULL, 101, 0, &t));
  int64_t huge_st[] = {INT64_MAX, 1};
  ASSERT_RC(DLPX_EOVERFLOW, dlpx_tensor_from_storage(s, dt("float32"), 2, shape, huge_st, 0, 0, &t));
  ASSERT_RC(DLPX_EINVAL, dlpx_tensor_from_storage(s, dt("float32"), 2, shape, NULL, 0, 8, &t));
  ASSERT_RC(DLPX_EINVAL, dlpx_tensor_from_storage(NULL, dt("float32"), 2, shape, NULL, 0, 0, &t));
  ASSERT_RC(DLPX_EINVAL, dlpx_tensor_from_storage(s, dt("float32"), 2, NULL, NULL, 0, 0, &t));
  ASSERT_EQ(dlpx_storage_refcount(s), 1);
  dlpx_storage_release(s);
  ASSERT_NO_LEAKS(&l);
}

static int wrap_released;
static void wrap_release(void *data, void *ctx) {
  (void)data;
  (void)ctx;
  wrap_released++;
}

static void test_wrap(void) {
  check_live l;
  check_live_begin(&l);
  float buf[12];
  for (int i = 0; i < 12; i++) buf[i] = (float)i;
  int64_t shape[] = {3, 4};
  dlpx_tensor *t = NULL;
  wrap_released = 0;
  ASSERT_OK(dlpx_tensor_wrap(buf, (DLDevice){kDLCPU, 0}, dt("float32"), 2, shape, NULL, 0,
                             wrap_release, NULL, &t));
  ASSERT_PTR_EQ(dlpx_tensor_data(t), buf);
  dlpx_tensor *v = NULL;
  ASSERT_OK(dlpx_tensor_transpose(t, &v));
  dlpx_tensor_free(t);
  ASSERT_EQ(wrap_released, 0);
  dlpx_tensor_free(v);
  ASSERT_EQ(wrap_released, 1);
  /* Negative strides: data is element 0, the storage starts lower. */
  int64_t neg[] = {-4, -1};
  ASSERT_OK(dlpx_tensor_wrap(buf + 11, (DLDevice){kDLCPU, 0}, dt("float32"), 2, shape, neg,
                             DLPX_TENSOR_READONLY, wrap_release, NULL, &t));
  ASSERT_PTR_EQ(dlpx_tensor_data(t), buf + 11);
  ASSERT_PTR_EQ(dlpx_storage_data(dlpx_tensor_storage(t)), buf);
  ASSERT_EQ(dlpx_storage_nbytes(dlpx_tensor_storage(t)), 48);
  ASSERT_TRUE(dlpx_tensor_is_readonly(t));
  int64_t idx[] = {0, 0};
  ASSERT_TRUE(at(t, idx) == 11.0f);
  dlpx_tensor_free(t);
  ASSERT_EQ(wrap_released, 2);
  /* Failures take nothing. */
  ASSERT_RC(DLPX_EINVAL, dlpx_tensor_wrap(NULL, (DLDevice){kDLCPU, 0}, dt("float32"), 2, shape,
                                          NULL, 0, wrap_release, NULL, &t));
  ASSERT_RC(DLPX_EDEVICE, dlpx_tensor_wrap(buf, (DLDevice){6, 0}, dt("float32"), 2, shape, NULL,
                                           0, wrap_release, NULL, &t));
  ASSERT_RC(DLPX_ELAYOUT, dlpx_tensor_wrap(buf, (DLDevice){kDLOpenCL, 0}, dt("float32"), 2, shape,
                                           neg, 0, wrap_release, NULL, &t));
  ASSERT_EQ(wrap_released, 2);
  ASSERT_NO_LEAKS(&l);
}

/* dlpx_tensor_wrap documents release(data, ctx) with the data pointer it
 * was given, also when negative strides make the storage start lower. */
static void *released_data;
static void record_release(void *data, void *ctx) {
  (void)ctx;
  released_data = data;
}

static void test_wrap_release_gets_the_given_pointer(void) {
  float buf[12];
  int64_t shape[] = {3, 4}, neg[] = {-4, -1};
  dlpx_tensor *t = NULL;
  released_data = NULL;
  ASSERT_OK(dlpx_tensor_wrap(buf + 11, (DLDevice){kDLCPU, 0}, dt("float32"), 2, shape, neg, 0,
                             record_release, NULL, &t));
  ASSERT_PTR_EQ(dlpx_storage_data(dlpx_tensor_storage(t)), buf);
  dlpx_tensor_free(t);
  ASSERT_PTR_EQ(released_data, buf + 11);
}

/* Defect: signed overflow (UBSAN aborts) in the stride and element-count
 * helpers for tensors without elements whose other extents are huge.  Every
 * operation on such tensors must work (or refuse cleanly) without UB; the
 * UBSAN build of this test proves it. */
static void zero_element_ops(dlpx_tensor *t) {
  const int32_t ndim = dlpx_tensor_ndim(t);
  dlpx_tensor *v = NULL, *w = NULL;
  int64_t lo = -1, hi = -1;
  ASSERT_EQ(dlpx_tensor_numel(t), 0);
  ASSERT_EQ(dlpx_tensor_nbytes(t), 0);
  ASSERT_TRUE(dlpx_tensor_is_c_contiguous(t) && dlpx_tensor_is_f_contiguous(t));
  dlpx_tensor_extent(t, &lo, &hi);
  ASSERT_EQ(lo, 0);
  ASSERT_EQ(hi, 0);
  for (int32_t d = 0; d < ndim; d++) {
    const int64_t steps[] = {1, 2, -1, -3, INT64_MAX, -INT64_MAX};
    for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
      ASSERT_OK(dlpx_tensor_slice(t, d, DLPX_NONE, DLPX_NONE, steps[k], &v));
      ASSERT_EQ(dlpx_tensor_numel(v), 0);
      dlpx_tensor_free(v);
      ASSERT_OK(dlpx_tensor_slice(t, d, 1, INT64_MAX - 1, steps[k], &v));
      dlpx_tensor_free(v);
    }
    if (dlpx_tensor_shape(t)[d] > 0) {
      int64_t last = dlpx_tensor_shape(t)[d] - 1;
      ASSERT_OK(dlpx_tensor_select(t, d, last, &v));
      ASSERT_EQ(dlpx_tensor_numel(v), 0);
      dlpx_tensor_free(v);
      ASSERT_OK(dlpx_tensor_select(t, d, -1, &v));
      dlpx_tensor_free(v);
      dlpx_index items[3] = {{DLPX_INDEX_ELLIPSIS, 0, 0, 0},
                             {DLPX_INDEX_NEWAXIS, 0, 0, 0},
                             {DLPX_INDEX_INT, last, 0, 0}};
      if (d == ndim - 1) {
        ASSERT_OK(dlpx_tensor_index(t, 3, items, &v));
        dlpx_tensor_free(v);
      }
    }
    ASSERT_OK(dlpx_tensor_unsqueeze(t, d, &v));
    dlpx_tensor_free(v);
  }
  dlpx_index all[2] = {{DLPX_INDEX_INT, 0, 0, 0}, {DLPX_INDEX_SLICE, 3, DLPX_NONE, -2}};
  if (dlpx_tensor_shape(t)[0] > 0 && ndim >= 2) {
    all[0].start = dlpx_tensor_shape(t)[0] - 1;
    ASSERT_OK(dlpx_tensor_index(t, 2, all, &v));
    dlpx_tensor_free(v);
  }
  ASSERT_OK(dlpx_tensor_transpose(t, &v));
  ASSERT_OK(dlpx_tensor_contiguous(v, &w));
  ASSERT_TRUE(dlpx_tensor_is_c_contiguous(w));
  dlpx_tensor_free(w);
  ASSERT_OK(dlpx_tensor_copy(v, 'F', &w));
  dlpx_tensor_free(w);
  ASSERT_OK(dlpx_tensor_copy_into(v, v));
  dlpx_tensor_free(v);
  int32_t rev[DLPX_MAX_NDIM];
  for (int32_t d = 0; d < ndim; d++) rev[d] = ndim - 1 - d;
  ASSERT_OK(dlpx_tensor_permute(t, ndim, rev, &v));
  dlpx_tensor_free(v);
  int64_t flat[] = {0}, minus[] = {-1, 0}, same[DLPX_MAX_NDIM];
  ASSERT_OK(dlpx_tensor_reshape(t, 1, flat, &v));
  dlpx_tensor_free(v);
  ASSERT_RC(DLPX_ESHAPE, dlpx_tensor_reshape(t, 2, minus, &v)); /* -1 of 0 elements */
  memcpy(same, dlpx_tensor_shape(t), (size_t)ndim * sizeof(int64_t));
  ASSERT_OK(dlpx_tensor_reshape(t, ndim, same, &v));
  dlpx_tensor_free(v);
  ASSERT_OK(dlpx_tensor_squeeze(t, DLPX_ALL_DIMS, &v));
  dlpx_tensor_free(v);
  ASSERT_OK(dlpx_tensor_broadcast_to(t, ndim, same, &v));
  dlpx_tensor_free(v);
  ASSERT_OK(dlpx_tensor_view_as(t, dt("int32"), &v));
  dlpx_tensor_free(v);
  /* out through DLPack and back in, both kinds */
  DLManagedTensorVersioned *m = NULL;
  ASSERT_OK(dlpx_tensor_export(t, 0, &m));
  ASSERT_OK(dlpx_tensor_import(m, 0, &v));
  ASSERT_EQ(dlpx_tensor_numel(v), 0);
  dlpx_tensor_free(v);
  DLManagedTensor *ml = NULL;
  ASSERT_OK(dlpx_tensor_export_legacy(t, 0, &ml));
  ml->dl_tensor.strides = NULL; /* the importer computes C strides itself */
  ASSERT_OK(dlpx_tensor_import_legacy(ml, 0, &v));
  dlpx_tensor_free(v);
}

static void test_zero_elements_with_huge_extents(void) {
  check_live l;
  check_live_begin(&l);
  const int64_t big = (int64_t)1 << 62;
  const int64_t shapes[][3] = {{0, big, big},         {big, big, 0},         {big, 0, big},
                               {INT64_MAX, 0, INT64_MAX}, {INT64_MAX, INT64_MAX, 0}};
  for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
    dlpx_tensor *t = NULL;
    ASSERT_OK(dlpx_tensor_zeros(dt("float32"), 3, shapes[k], &t));
    zero_element_ops(t);
    dlpx_tensor_free(t);
    if (check__failed) return;
    float one = 0;
    ASSERT_OK(dlpx_tensor_wrap(&one, (DLDevice){kDLCPU, 0}, dt("float32"), 3, shapes[k], NULL, 0,
                               NULL, NULL, &t));
    zero_element_ops(t);
    dlpx_tensor_free(t);
    if (check__failed) return;
    /* a foreign tensor with NULL strides and NULL data */
    fake_versioned *f = fake_new(0, NULL);
    f->mt.dl_tensor.ndim = 3;
    memcpy(f->shape, shapes[k], sizeof shapes[k]);
    f->mt.dl_tensor.shape = f->shape;
    f->mt.dl_tensor.strides = NULL;
    f->mt.dl_tensor.data = NULL;
    ASSERT_OK(dlpx_tensor_import(&f->mt, 0, &t));
    zero_element_ops(t);
    dlpx_tensor_free(t);
    if (check__failed) return;
  }
  ASSERT_NO_LEAKS(&l);
}

static void test_slice_python_semantics(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {10};
  dlpx_tensor *t = fixture_arange_f32(1, shape), *v = NULL;
  struct {
    int64_t start, stop, step, len, first;
  } cases[] = {
      {DLPX_NONE, DLPX_NONE, DLPX_NONE, 10, 0}, {2, 5, 1, 3, 2},      {-3, DLPX_NONE, 1, 3, 7},
      {DLPX_NONE, DLPX_NONE, -1, 10, 9},        {8, 2, -2, 3, 8},     {-100, 100, 3, 4, 0},
      {100, -100, -3, 4, 9},                    {5, 5, 1, 0, -1},     {7, 3, 1, 0, -1},
      {-1, -11, -1, 10, 9},                     {DLPX_NONE, -12, -1, 10, 9},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    ASSERT_OK(dlpx_tensor_slice(t, 0, cases[c].start, cases[c].stop, cases[c].step, &v));
    ASSERT_EQ(dlpx_tensor_shape(v)[0], cases[c].len);
    if (cases[c].len > 0) {
      int64_t i0 = 0;
      ASSERT_TRUE(at(v, &i0) == (float)cases[c].first);
      int64_t step = cases[c].step == DLPX_NONE ? 1 : cases[c].step;
      ASSERT_EQ(dlpx_tensor_strides(v)[0], step);
    }
    dlpx_tensor_free(v);
  }
  ASSERT_RC(DLPX_EINVAL, dlpx_tensor_slice(t, 0, 0, 5, 0, &v));
  ASSERT_MSG("step cannot be zero");
  /* a step so large that one element remains: no stride overflow */
  ASSERT_OK(dlpx_tensor_slice(t, 0, DLPX_NONE, DLPX_NONE, INT64_MAX, &v));
  ASSERT_EQ(dlpx_tensor_shape(v)[0], 1);
  dlpx_tensor_free(v);
  ASSERT_OK(dlpx_tensor_slice(t, 0, DLPX_NONE, DLPX_NONE, -INT64_MAX, &v));
  ASSERT_EQ(dlpx_tensor_shape(v)[0], 1);
  dlpx_tensor_free(v);
  ASSERT_RC(DLPX_EINDEX, dlpx_tensor_slice(t, 1, 0, 5, 1, &v));
  ASSERT_RC(DLPX_EINDEX, dlpx_tensor_slice(t, -2, 0, 5, 1, &v));
  ASSERT_OK(dlpx_tensor_slice(t, -1, 1, 3, 1, &v));
  dlpx_tensor_free(v);
  dlpx_tensor_free(t);
  ASSERT_NO_LEAKS(&l);
}

static void test_select_and_index(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {2, 3, 4};
  dlpx_tensor *t = fixture_arange_f32(3, shape), *v = NULL;
  ASSERT_OK(dlpx_tensor_select(t, 1, -1, &v));
  ASSERT_SHAPE(v, 2, 4);
  int64_t idx[] = {1, 2};
  ASSERT_TRUE(at(v, idx) == 12 + 8 + 2);
  dlpx_tensor_free(v);
  ASSERT_RC(DLPX_EINDEX, dlpx_tensor_select(t, 1, 3, &v));
  ASSERT_MSG("index 3 is out of range for dimension 1 of extent 3");
  ASSERT_RC(DLPX_EINDEX, dlpx_tensor_select(t, 1, -4, &v));
  /* t[..., None, 1, ::-2] -> shape (2, 1, 2)?  Ellipsis takes one dim. */
  dlpx_index items[] = {{DLPX_INDEX_ELLIPSIS, 0, 0, 0},
                        {DLPX_INDEX_NEWAXIS, 0, 0, 0},
                        {DLPX_INDEX_INT, 1, 0, 0},
                        {DLPX_INDEX_SLICE, DLPX_NONE, DLPX_NONE, -2}};
  ASSERT_OK(dlpx_tensor_index(t, 4, items, &v));
  ASSERT_SHAPE(v, 2, 1, 2);
  int64_t i3[] = {1, 0, 1};
  ASSERT_TRUE(at(v, i3) == 12 + 4 + 1);
  dlpx_tensor_free(v);
  /* t[1] with trailing dims implied */
  dlpx_index one[] = {{DLPX_INDEX_INT, 1, 0, 0}};
  ASSERT_OK(dlpx_tensor_index(t, 1, one, &v));
  ASSERT_SHAPE(v, 3, 4);
  ASSERT_EQ(dlpx_tensor_byte_offset(v), 48);
  dlpx_tensor_free(v);
  /* empty index: the same view */
  ASSERT_OK(dlpx_tensor_index(t, 0, NULL, &v));
  ASSERT_SHAPE(v, 2, 3, 4);
  dlpx_tensor_free(v);
  dlpx_index too_many[] = {{DLPX_INDEX_INT, 0, 0, 0}, {DLPX_INDEX_INT, 0, 0, 0},
                           {DLPX_INDEX_INT, 0, 0, 0}, {DLPX_INDEX_INT, 0, 0, 0}};
  ASSERT_RC(DLPX_EINDEX, dlpx_tensor_index(t, 4, too_many, &v));
  ASSERT_MSG("too many indices");
  dlpx_index two_ell[] = {{DLPX_INDEX_ELLIPSIS, 0, 0, 0}, {DLPX_INDEX_ELLIPSIS, 0, 0, 0}};
  ASSERT_RC(DLPX_EINDEX, dlpx_tensor_index(t, 2, two_ell, &v));
  dlpx_index bad_kind[] = {{7, 0, 0, 0}};
  ASSERT_RC(DLPX_EINVAL, dlpx_tensor_index(t, 1, bad_kind, &v));
  dlpx_index oob[] = {{DLPX_INDEX_INT, 0, 0, 0}, {DLPX_INDEX_INT, 3, 0, 0}};
  ASSERT_RC(DLPX_EINDEX, dlpx_tensor_index(t, 2, oob, &v));
  ASSERT_MSG("index 3 is out of bounds for axis 1 with size 3");
  dlpx_index zero_step[] = {{DLPX_INDEX_SLICE, 0, 1, 0}};
  ASSERT_RC(DLPX_EINVAL, dlpx_tensor_index(t, 1, zero_step, &v));
  ASSERT_RC(DLPX_EINVAL, dlpx_tensor_index(t, -1, items, &v));
  dlpx_tensor_free(t);
  ASSERT_NO_LEAKS(&l);
}

static void test_index_zero_length_keeps_offset_in_bounds(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {4, 4};
  dlpx_tensor *t = fixture_arange_f32(2, shape), *v = NULL;
  dlpx_index items[] = {{DLPX_INDEX_INT, 3, 0, 0}, {DLPX_INDEX_SLICE, 4, DLPX_NONE, 1}};
  ASSERT_OK(dlpx_tensor_index(t, 2, items, &v));
  ASSERT_SHAPE(v, 0);
  ASSERT_TRUE(dlpx_tensor_byte_offset(v) <= 64);
  dlpx_tensor_free(v);
  dlpx_tensor_free(t);
  ASSERT_NO_LEAKS(&l);
}

static void test_permute_transpose(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {2, 3, 4};
  dlpx_tensor *t = fixture_arange_f32(3, shape), *v = NULL;
  int32_t axes[] = {2, 0, -2};
  ASSERT_OK(dlpx_tensor_permute(t, 3, axes, &v));
  ASSERT_SHAPE(v, 4, 2, 3);
  ASSERT_STRIDES(v, 1, 12, 4);
  dlpx_tensor_free(v);
  ASSERT_OK(dlpx_tensor_transpose(t, &v));
  ASSERT_SHAPE(v, 4, 3, 2);
  ASSERT_STRIDES(v, 1, 4, 12);
  ASSERT_TRUE(dlpx_tensor_is_f_contiguous(v));
  ASSERT_TRUE(!dlpx_tensor_is_c_contiguous(v));
  dlpx_tensor_free(v);
  int32_t rep[] = {0, 0, 1};
  ASSERT_RC(DLPX_EINDEX, dlpx_tensor_permute(t, 3, rep, &v));
  ASSERT_MSG("repeated");
  int32_t shortp[] = {0, 1};
  ASSERT_RC(DLPX_EINVAL, dlpx_tensor_permute(t, 2, shortp, &v));
  int32_t oob[] = {0, 1, 3};
  ASSERT_RC(DLPX_EINDEX, dlpx_tensor_permute(t, 3, oob, &v));
  dlpx_tensor_free(t);
  ASSERT_NO_LEAKS(&l);
}

static void test_reshape(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {2, 3, 4};
  dlpx_tensor *t = fixture_arange_f32(3, shape), *v = NULL, *w = NULL;
  int64_t s1[] = {6, -1};
  ASSERT_OK(dlpx_tensor_reshape(t, 2, s1, &v));
  ASSERT_SHAPE(v, 6, 4);
  ASSERT_STRIDES(v, 4, 1);
  dlpx_tensor_free(v);
  int64_t s2[] = {1, 24, 1};
  ASSERT_OK(dlpx_tensor_reshape(t, 3, s2, &v));
  ASSERT_SHAPE(v, 1, 24, 1);
  ASSERT_TRUE(dlpx_tensor_is_c_contiguous(v));
  dlpx_tensor_free(v);
  /* Transposed: (4,3,2) strides (1,4,12).  Merging 4x3 is impossible, but
   * splitting the last dim works. */
  ASSERT_OK(dlpx_tensor_transpose(t, &v));
  int64_t s3[] = {12, 2};
  ASSERT_RC(DLPX_ELAYOUT, dlpx_tensor_reshape(v, 2, s3, &w));
  ASSERT_MSG("without a copy");
  int64_t s4[] = {4, 3, 2, 1};
  ASSERT_OK(dlpx_tensor_reshape(v, 4, s4, &w));
  dlpx_tensor_free(w);
  int64_t s5[] = {2, 2, 3, 2};
  ASSERT_OK(dlpx_tensor_reshape(v, 4, s5, &w));
  ASSERT_STRIDES(w, 2, 1, 4, 12);
  dlpx_tensor_free(w);
  dlpx_tensor_free(v);
  /* A reversed slice merges with its neighbour when strides line up. */
  ASSERT_OK(dlpx_tensor_slice(t, 2, DLPX_NONE, DLPX_NONE, -1, &v));
  int64_t s6[] = {6, 4};
  ASSERT_OK(dlpx_tensor_reshape(v, 2, s6, &w));
  ASSERT_STRIDES(w, 4, -1);
  dlpx_tensor_free(w);
  int64_t s7[] = {24};
  ASSERT_RC(DLPX_ELAYOUT, dlpx_tensor_reshape(v, 1, s7, &w));
  dlpx_tensor_free(v);
  int64_t bad[] = {5, -1};
  ASSERT_RC(DLPX_ESHAPE, dlpx_tensor_reshape(t, 2, bad, &v));
  int64_t two[] = {-1, -1};
  ASSERT_RC(DLPX_ESHAPE, dlpx_tensor_reshape(t, 2, two, &v));
  int64_t neg[] = {-2, -12};
  ASSERT_RC(DLPX_ESHAPE, dlpx_tensor_reshape(t, 2, neg, &v));
  int64_t wrong[] = {5, 5};
  ASSERT_RC(DLPX_ESHAPE, dlpx_tensor_reshape(t, 2, wrong, &v));
  ASSERT_MSG("cannot reshape 24 elements into 25");
  int64_t ovf[] = {INT64_MAX, 2, 0};
  ASSERT_RC(DLPX_ESHAPE, dlpx_tensor_reshape(t, 3, ovf, &v));
  /* to and from 0-d */
  int64_t one[] = {1};
  dlpx_tensor *s = NULL;
  ASSERT_OK(dlpx_tensor_zeros(dt("float32"), 1, one, &s));
  ASSERT_OK(dlpx_tensor_reshape(s, 0, NULL, &v));
  ASSERT_EQ(dlpx_tensor_ndim(v), 0);
  int64_t m1[] = {-1};
  ASSERT_OK(dlpx_tensor_reshape(v, 1, m1, &w));
  ASSERT_SHAPE(w, 1);
  dlpx_tensor_free(w);
  dlpx_tensor_free(v);
  dlpx_tensor_free(s);
  /* zero elements: anything with zero elements */
  int64_t z[] = {0, 3};
  ASSERT_OK(dlpx_tensor_zeros(dt("float32"), 2, z, &s));
  int64_t z2[] = {3, 0, 7};
  ASSERT_OK(dlpx_tensor_reshape(s, 3, z2, &v));
  dlpx_tensor_free(v);
  int64_t z3[] = {-1, 0};
  ASSERT_RC(DLPX_ESHAPE, dlpx_tensor_reshape(s, 2, z3, &v));
  dlpx_tensor_free(s);
  dlpx_tensor_free(t);
  ASSERT_NO_LEAKS(&l);
}

static void test_squeeze_unsqueeze(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {1, 3, 1, 2};
  dlpx_tensor *t = fixture_arange_f32(4, shape), *v = NULL, *w = NULL;
  ASSERT_OK(dlpx_tensor_squeeze(t, DLPX_ALL_DIMS, &v));
  ASSERT_SHAPE(v, 3, 2);
  dlpx_tensor_free(v);
  ASSERT_OK(dlpx_tensor_squeeze(t, -2, &v));
  ASSERT_SHAPE(v, 1, 3, 2);
  dlpx_tensor_free(v);
  ASSERT_RC(DLPX_ESHAPE, dlpx_tensor_squeeze(t, 1, &v));
  ASSERT_RC(DLPX_EINDEX, dlpx_tensor_squeeze(t, 4, &v));
  ASSERT_OK(dlpx_tensor_unsqueeze(t, -1, &v));
  ASSERT_SHAPE(v, 1, 3, 1, 2, 1);
  ASSERT_OK(dlpx_tensor_unsqueeze(v, 2, &w));
  ASSERT_SHAPE(w, 1, 3, 1, 1, 2, 1);
  ASSERT_TRUE(dlpx_tensor_is_c_contiguous(w));
  dlpx_tensor_free(w);
  dlpx_tensor_free(v);
  ASSERT_RC(DLPX_EINDEX, dlpx_tensor_unsqueeze(t, 5, &v));
  dlpx_tensor *z = NULL;
  ASSERT_OK(dlpx_tensor_zeros(dt("int8"), 0, NULL, &z));
  ASSERT_OK(dlpx_tensor_squeeze(z, 0, &v)); /* 0-d: axis 0 and -1 are no-ops */
  ASSERT_EQ(dlpx_tensor_ndim(v), 0);
  dlpx_tensor_free(v);
  ASSERT_OK(dlpx_tensor_squeeze(z, -1, &v));
  dlpx_tensor_free(v);
  ASSERT_RC(DLPX_EINDEX, dlpx_tensor_squeeze(z, 1, &v));
  dlpx_tensor_free(z);
  ASSERT_RC(DLPX_EINDEX, dlpx_tensor_unsqueeze(t, -6, &v));
  dlpx_tensor_free(t);
  ASSERT_NO_LEAKS(&l);
}

static void test_broadcast(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {3, 1};
  dlpx_tensor *t = fixture_arange_f32(2, shape), *v = NULL;
  int64_t to[] = {2, 3, 4};
  ASSERT_OK(dlpx_tensor_broadcast_to(t, 3, to, &v));
  ASSERT_SHAPE(v, 2, 3, 4);
  ASSERT_STRIDES(v, 0, 1, 0);
  int64_t idx[] = {1, 2, 3};
  ASSERT_TRUE(at(v, idx) == 2.0f);
  dlpx_tensor_free(v);
  int64_t bad[] = {2, 4};
  ASSERT_RC(DLPX_ESHAPE, dlpx_tensor_broadcast_to(t, 2, bad, &v));
  ASSERT_MSG("cannot broadcast dimension 0 of extent 3 to 2");
  int64_t fewer[] = {3};
  ASSERT_RC(DLPX_ESHAPE, dlpx_tensor_broadcast_to(t, 1, fewer, &v));
  int64_t to0[] = {3, 0};
  ASSERT_OK(dlpx_tensor_broadcast_to(t, 2, to0, &v));
  ASSERT_EQ(dlpx_tensor_numel(v), 0);
  dlpx_tensor_free(v);
  dlpx_tensor_free(t);
  ASSERT_NO_LEAKS(&l);
}

static void test_flags_propagate(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {4, 4};
  dlpx_tensor *t = fixture_arange_f32(2, shape), *r = NULL, *v = NULL;
  ASSERT_OK(dlpx_tensor_with_flags(t, DLPX_TENSOR_READONLY, &r));
  ASSERT_TRUE(dlpx_tensor_is_readonly(r));
  ASSERT_TRUE(!dlpx_tensor_is_readonly(t));
  ASSERT_OK(dlpx_tensor_slice(r, 0, 1, 3, 1, &v));
  ASSERT_TRUE(dlpx_tensor_is_readonly(v));
  dlpx_tensor_free(v);
  ASSERT_OK(dlpx_tensor_clone(r, &v));
  ASSERT_TRUE(dlpx_tensor_is_readonly(v));
  ASSERT_PTR_EQ(dlpx_tensor_data(v), dlpx_tensor_data(r));
  dlpx_tensor_free(v);
  ASSERT_RC(DLPX_EINVAL, dlpx_tensor_with_flags(t, DLPX_TENSOR_SUBBYTE_PADDED, &v));
  ASSERT_EQ(dlpx_storage_refcount(dlpx_tensor_storage(t)), 2);
  dlpx_tensor_free(r);
  dlpx_tensor_free(t);
  dlpx_tensor_free(NULL);
  ASSERT_NO_LEAKS(&l);
}

static void test_subbyte_views(void) {
  check_live l;
  check_live_begin(&l);
  int64_t shape[] = {4, 6};
  dlpx_tensor *t = NULL, *v = NULL;
  ASSERT_OK(dlpx_tensor_zeros(dt("float4_e2m1fn"), 2, shape, &t));
  ASSERT_EQ(dlpx_tensor_nbytes(t), 12);
  ASSERT_EQ(dlpx_storage_nbytes(dlpx_tensor_storage(t)), 12);
  ASSERT_OK(dlpx_tensor_select(t, 0, 1, &v)); /* 6 nibbles in: byte 3 */
  ASSERT_EQ(dlpx_tensor_byte_offset(v), 3);
  dlpx_tensor_free(v);
  ASSERT_OK(dlpx_tensor_slice(t, 1, 2, DLPX_NONE, 1, &v));
  ASSERT_EQ(dlpx_tensor_byte_offset(v), 1);
  dlpx_tensor_free(v);
  ASSERT_RC(DLPX_ELAYOUT, dlpx_tensor_slice(t, 1, 1, DLPX_NONE, 1, &v));
  ASSERT_MSG("byte boundary");
  int64_t extent_lo, extent_hi;
  dlpx_tensor_extent(t, &extent_lo, &extent_hi);
  ASSERT_EQ(extent_hi, 12);
  dlpx_tensor_free(t);
  int64_t s3[] = {3};
  ASSERT_OK(dlpx_tensor_zeros(dt("float6_e2m3fn"), 1, s3, &t));
  ASSERT_EQ(dlpx_tensor_nbytes(t), 3);
  ASSERT_RC(DLPX_ELAYOUT, dlpx_tensor_select(t, 0, 1, &v));
  dlpx_tensor_free(t);
  ASSERT_NO_LEAKS(&l);
}

static void test_extent(void) {
  int64_t shape[] = {3, 4};
  dlpx_tensor *t = fixture_arange_f32(2, shape), *v = NULL;
  int64_t lo, hi;
  ASSERT_OK(dlpx_tensor_slice(t, 1, DLPX_NONE, DLPX_NONE, -1, &v));
  dlpx_tensor_extent(v, &lo, &hi);
  ASSERT_EQ(lo, -12);
  ASSERT_EQ(hi, 36);
  dlpx_tensor_extent(v, NULL, NULL);
  dlpx_tensor_free(v);
  dlpx_tensor_free(t);
}

int main(void) {
  RUN(test_empty_and_zeros);
  RUN(test_zero_dim_and_zero_size);
  RUN(test_max_ndim);
  RUN(test_create_errors);
  RUN(test_from_storage_bounds);
  RUN(test_wrap);
  RUN(test_wrap_release_gets_the_given_pointer);
  RUN(test_zero_elements_with_huge_extents);
  RUN(test_slice_python_semantics);
  RUN(test_select_and_index);
  RUN(test_index_zero_length_keeps_offset_in_bounds);
  RUN(test_permute_transpose);
  RUN(test_reshape);
  RUN(test_squeeze_unsqueeze);
  RUN(test_broadcast);
  RUN(test_flags_propagate);
  RUN(test_subbyte_views);
  RUN(test_extent);
  CHECK_DONE();
}
