/* test_errors.c - error codes, names, messages and the version. */
#include "config.h"

#include <pthread.h>

#include "check.h"

static void test_strerror_and_names(void) {
  const int codes[] = {DLPX_EINVAL,   DLPX_ENOMEM,  DLPX_EOVERFLOW, DLPX_EDTYPE, DLPX_ESHAPE,
                       DLPX_EINDEX,   DLPX_EDEVICE, DLPX_EVERSION,  DLPX_EREADONLY,
                       DLPX_ELAYOUT,  DLPX_EBOUNDS, DLPX_ENOTSUP,   DLPX_EPYTHON, DLPX_ESTATE};
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    ASSERT_TRUE(codes[i] <= -1000 && codes[i] >= -1099);
    ASSERT_TRUE(strcmp(dlpx_strerror(codes[i]), "unknown error") != 0);
    ASSERT_TRUE(strncmp(dlpx_error_name(codes[i]), "DLPX_E", 6) == 0);
    for (size_t j = 0; j < i; j++) ASSERT_NE(codes[i], codes[j]);
  }
  ASSERT_STR_EQ(dlpx_error_name(DLPX_EINVAL), "DLPX_EINVAL");
  ASSERT_STR_EQ(dlpx_strerror(DLPX_ENOMEM), "out of memory");
  ASSERT_STR_EQ(dlpx_strerror(0), "success");
  ASSERT_STR_EQ(dlpx_strerror(-1), "unknown error");
  ASSERT_STR_EQ(dlpx_error_name(12345), "DLPX_E?");
}

static void test_last_error_message(void) {
  int64_t shape[3] = {2, 5, -3};
  dlpx_tensor *t = NULL;
  ASSERT_RC(DLPX_ESHAPE, dlpx_tensor_empty(dt("float32"), 3, shape, &t));
  ASSERT_STR_EQ(dlpx_last_error(), "shape[2] is negative: -3");
  ASSERT_EQ(dlpx_last_error_code(), DLPX_ESHAPE);
  ASSERT_PTR_EQ(t, NULL);
  /* A success does not clear it. */
  shape[2] = 1;
  ASSERT_OK(dlpx_tensor_empty(dt("float32"), 3, shape, &t));
  ASSERT_EQ(dlpx_last_error_code(), DLPX_ESHAPE);
  dlpx_tensor_free(t);
}

static void *other_thread(void *arg) {
  (void)arg;
  /* A fresh thread has no error. */
  int *ok = malloc(sizeof *ok);
  *ok = dlpx_last_error()[0] == '\0' && dlpx_last_error_code() == 0;
  DLDataType d;
  *ok = *ok && dlpx_dtype_parse("nope", &d) == DLPX_EDTYPE &&
        strcmp(dlpx_last_error(), "unknown dtype name 'nope'") == 0;
  return ok;
}

static void test_message_is_per_thread(void) {
  dlpx_tensor *t;
  ASSERT_RC(DLPX_EINVAL, dlpx_tensor_empty(dt("float32"), 1, NULL, &t));
  char mine[128];
  snprintf(mine, sizeof mine, "%s", dlpx_last_error());
  pthread_t th;
  void *res;
  ASSERT_EQ(pthread_create(&th, NULL, other_thread, NULL), 0);
  ASSERT_EQ(pthread_join(th, &res), 0);
  int ok = *(int *)res;
  free(res);
  ASSERT_TRUE(ok);
  ASSERT_STR_EQ(dlpx_last_error(), mine);
}

static void test_version(void) {
  ASSERT_EQ(dlpx_version_number(), DLPX_VERSION_NUMBER);
  ASSERT_STR_EQ(dlpx_version_string(), DLPX_VERSION_STRING);
  char buf[32];
  snprintf(buf, sizeof buf, "%d.%d.%d", DLPX_VERSION_MAJOR, DLPX_VERSION_MINOR,
           DLPX_VERSION_PATCH);
  ASSERT_STR_EQ(buf, DLPX_VERSION_STRING);
}

int main(void) {
  RUN(test_strerror_and_names);
  RUN(test_last_error_message);
  RUN(test_message_is_per_thread);
  RUN(test_version);
  CHECK_DONE();
}
