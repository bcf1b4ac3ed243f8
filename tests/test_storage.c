/* test_storage.c - owned and borrowed storages, reference counts. */
#include "config.h"

#include "check.h"

static int releases;
static void *released_data;
static void *released_ctx;

static void count_release(void *data, void *ctx) {
  releases++;
  released_data = data;
  released_ctx = ctx;
}

static void test_alloc_owned(void) {
  check_live l;
  check_live_begin(&l);
  dlpx_storage *s = NULL;
  ASSERT_OK(dlpx_storage_alloc(1000, 0, 1, &s));
  ASSERT_EQ((uintptr_t)dlpx_storage_data(s) % DLPX_DEFAULT_ALIGNMENT, 0);
  ASSERT_EQ(dlpx_storage_nbytes(s), 1000);
  ASSERT_EQ(dlpx_storage_kind_of(s), DLPX_STORAGE_OWNED);
  ASSERT_EQ(dlpx_storage_device(s).device_type, kDLCPU);
  ASSERT_EQ(dlpx_storage_refcount(s), 1);
  const unsigned char *p = dlpx_storage_data(s);
  for (int i = 0; i < 1000; i++) ASSERT_EQ(p[i], 0);
  dlpx_storage_release(s);
  ASSERT_NO_LEAKS(&l);
}

static void test_alloc_alignment_and_zero_size(void) {
  check_live l;
  check_live_begin(&l);
  dlpx_storage *s = NULL;
  ASSERT_OK(dlpx_storage_alloc(10, 4096, 0, &s));
  ASSERT_EQ((uintptr_t)dlpx_storage_data(s) % 4096, 0);
  dlpx_storage_release(s);
  ASSERT_OK(dlpx_storage_alloc(10, 4096, 1, &s));
  ASSERT_EQ((uintptr_t)dlpx_storage_data(s) % 4096, 0);
  dlpx_storage_release(s);
  ASSERT_OK(dlpx_storage_alloc(0, 0, 0, &s));
  ASSERT_TRUE(dlpx_storage_data(s) != NULL);
  dlpx_storage_release(s);
  ASSERT_OK(dlpx_storage_alloc(0, 0, 1, &s));
  ASSERT_TRUE(dlpx_storage_data(s) != NULL);
  dlpx_storage_release(s);
  ASSERT_OK(dlpx_storage_alloc(8, 8, 0, &s)); /* raised to the default */
  ASSERT_EQ((uintptr_t)dlpx_storage_data(s) % DLPX_DEFAULT_ALIGNMENT, 0);
  dlpx_storage_release(s);
  ASSERT_NO_LEAKS(&l);
}

static void test_alloc_errors(void) {
  dlpx_storage *s = NULL;
  ASSERT_RC(DLPX_EINVAL, dlpx_storage_alloc(10, 0, 0, NULL));
  ASSERT_RC(DLPX_EINVAL, dlpx_storage_alloc(10, 96, 0, &s));
  ASSERT_MSG("not a power of two");
  ASSERT_RC(DLPX_EOVERFLOW, dlpx_storage_alloc(SIZE_MAX, 0, 0, &s));
  ASSERT_RC(DLPX_EOVERFLOW, dlpx_storage_alloc((size_t)INT64_MAX, 0, 1, &s));
  /* Too large for this machine but representable: ENOMEM, not a crash. */
  ASSERT_RC(DLPX_ENOMEM, dlpx_storage_alloc((size_t)1 << 62, 0, 0, &s));
  ASSERT_RC(DLPX_ENOMEM, dlpx_storage_alloc((size_t)1 << 62, 0, 1, &s));
  ASSERT_PTR_EQ(s, NULL);
}

static void test_wrap_release_once(void) {
  check_live l;
  check_live_begin(&l);
  static char buf[64];
  int ctx = 0;
  releases = 0;
  dlpx_storage *s = NULL;
  ASSERT_OK(dlpx_storage_wrap(buf, sizeof buf, (DLDevice){kDLCPU, 0}, count_release, &ctx, &s));
  ASSERT_EQ(dlpx_storage_kind_of(s), DLPX_STORAGE_BORROWED);
  dlpx_storage_retain(s);
  dlpx_storage_retain(s);
  ASSERT_EQ(dlpx_storage_refcount(s), 3);
  dlpx_storage_release(s);
  dlpx_storage_release(s);
  ASSERT_EQ(releases, 0);
  dlpx_storage_release(s);
  ASSERT_EQ(releases, 1);
  ASSERT_PTR_EQ(released_data, buf);
  ASSERT_PTR_EQ(released_ctx, &ctx);
  ASSERT_NO_LEAKS(&l);
}

static void test_wrap_errors_take_nothing(void) {
  check_live l;
  check_live_begin(&l);
  releases = 0;
  dlpx_storage *s = NULL;
  char buf[4];
  ASSERT_RC(DLPX_EINVAL, dlpx_storage_wrap(NULL, 4, (DLDevice){kDLCPU, 0}, count_release, NULL, &s));
  ASSERT_RC(DLPX_EDEVICE, dlpx_storage_wrap(buf, 4, (DLDevice){5, 0}, count_release, NULL, &s));
  ASSERT_MSG("unknown device type 5");
  ASSERT_RC(DLPX_EDEVICE, dlpx_storage_wrap(buf, 4, (DLDevice){99, 0}, count_release, NULL, &s));
  ASSERT_RC(DLPX_EDEVICE, dlpx_storage_wrap(buf, 4, (DLDevice){kDLCUDA, -1}, count_release, NULL, &s));
  ASSERT_RC(DLPX_EINVAL, dlpx_storage_wrap(buf, 4, (DLDevice){kDLCPU, 0}, count_release, NULL, NULL));
  ASSERT_RC(DLPX_EOVERFLOW,
            dlpx_storage_wrap(buf, SIZE_MAX, (DLDevice){kDLCPU, 0}, count_release, NULL, &s));
  ASSERT_EQ(releases, 0);
  /* NULL data with no bytes and no callback is fine. */
  ASSERT_OK(dlpx_storage_wrap(NULL, 0, (DLDevice){kDLCPU, 0}, NULL, NULL, &s));
  dlpx_storage_release(s);
  ASSERT_NO_LEAKS(&l);
}

static void test_release_null(void) {
  dlpx_storage_release(NULL);
  dlpx_storage_retain(NULL);
  dlpx_stats_get(NULL);
}

static void test_every_device_type(void) {
  const int known[] = {1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18};
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
    dlpx_storage *s = NULL;
    ASSERT_OK(dlpx_storage_wrap((void *)(uintptr_t)0x1000, 16, (DLDevice){known[i], 3}, NULL,
                                NULL, &s));
    ASSERT_EQ(dlpx_storage_device(s).device_type, known[i]);
    ASSERT_EQ(dlpx_storage_device(s).device_id, 3);
    dlpx_storage_release(s);
  }
  const int unknown[] = {0, 5, 6, 19, -1, 1000};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    dlpx_storage *s = NULL;
    ASSERT_RC(DLPX_EDEVICE, dlpx_storage_wrap((void *)(uintptr_t)0x1000, 16,
                                              (DLDevice){unknown[i], 0}, NULL, NULL, &s));
  }
}

int main(void) {
  RUN(test_alloc_owned);
  RUN(test_alloc_alignment_and_zero_size);
  RUN(test_alloc_errors);
  RUN(test_wrap_release_once);
  RUN(test_wrap_errors_take_nothing);
  RUN(test_release_null);
  RUN(test_every_device_type);
  CHECK_DONE();
}
