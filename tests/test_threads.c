/* test_threads.c - one tensor exported and released concurrently. */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>

#include "check.h"

#define THREADS 4

static int iterations(void) { return under_valgrind() ? 20000 : 100000; }

static dlpx_tensor *shared;

static void *export_release(void *arg) {
  long failures = 0;
  int legacy = (int)(intptr_t)arg & 1;
  for (int i = 0; i < iterations(); i++) {
    if (legacy) {
      DLManagedTensor *m = NULL;
      if (dlpx_tensor_export_legacy(shared, 0, &m) != 0) {
        failures++;
        continue;
      }
      if (((float *)m->dl_tensor.data)[3] != 3.0f) failures++;
      m->deleter(m);
    } else {
      DLManagedTensorVersioned *m = NULL;
      if (dlpx_tensor_export(shared, 0, &m) != 0) {
        failures++;
        continue;
      }
      if (((float *)m->dl_tensor.data)[3] != 3.0f) failures++;
      m->deleter(m);
    }
  }
  return (void *)failures;
}

static dlpx_tensor *make_shared(void) {
  int64_t shape[] = {16, 16};
  dlpx_tensor *t = NULL;
  if (dlpx_tensor_empty(dt("float32"), 2, shape, &t)) return NULL;
  float *p = dlpx_tensor_data(t);
  for (int i = 0; i < 256; i++) p[i] = (float)i;
  return t;
}

static void test_concurrent_export_release(void) {
  check_live l;
  check_live_begin(&l);
  shared = make_shared();
  pthread_t th[THREADS];
  for (intptr_t k = 0; k < THREADS; k++)
    ASSERT_EQ(pthread_create(&th[k], NULL, export_release, (void *)k), 0);
  long failures = 0;
  for (int k = 0; k < THREADS; k++) {
    void *r;
    ASSERT_EQ(pthread_join(th[k], &r), 0);
    failures += (long)r;
  }
  ASSERT_EQ(failures, 0);
  ASSERT_EQ(dlpx_storage_refcount(dlpx_tensor_storage(shared)), 1);
  dlpx_tensor_free(shared);
  ASSERT_NO_LEAKS(&l);
}

/* Producers export and hand the managed tensors to consumers on other
 * threads through a ring; the consumers call the deleters. */
#define RING 1024
static DLManagedTensorVersioned *_Atomic ring[RING];
static atomic_long produced, consumed;

static void *producer(void *arg) {
  (void)arg;
  long n = iterations() / 2;
  for (long i = 0; i < n; i++) {
    DLManagedTensorVersioned *m = NULL;
    if (dlpx_tensor_export(shared, 0, &m) != 0) return (void *)1;
    long slot = atomic_fetch_add(&produced, 1) % RING;
    DLManagedTensorVersioned *expected = NULL;
    while (!atomic_compare_exchange_weak(&ring[slot], &expected, m)) expected = NULL;
  }
  return NULL;
}

static void *consumer(void *arg) {
  long n = (long)(intptr_t)arg;
  for (long i = 0; i < n; i++) {
    long slot = atomic_fetch_add(&consumed, 1) % RING;
    DLManagedTensorVersioned *m;
    while (!(m = atomic_exchange(&ring[slot], NULL))) {
    }
    m->deleter(m);
  }
  return NULL;
}

static void test_deleters_on_other_threads(void) {
  check_live l;
  check_live_begin(&l);
  shared = make_shared();
  atomic_store(&produced, 0);
  atomic_store(&consumed, 0);
  dlpx_tensor *view = shared;
  pthread_t p[2], c[2];
  long per_consumer = (long)(iterations() / 2);
  for (int k = 0; k < 2; k++) ASSERT_EQ(pthread_create(&p[k], NULL, producer, NULL), 0);
  for (int k = 0; k < 2; k++)
    ASSERT_EQ(pthread_create(&c[k], NULL, consumer, (void *)(intptr_t)per_consumer), 0);
  for (int k = 0; k < 2; k++) {
    void *r;
    ASSERT_EQ(pthread_join(p[k], &r), 0);
    ASSERT_PTR_EQ(r, NULL);
  }
  /* Drop our handle while consumers may still hold exports: the last
   * deleter, on some consumer thread, frees the storage. */
  dlpx_tensor_free(view);
  for (int k = 0; k < 2; k++) ASSERT_EQ(pthread_join(c[k], NULL), 0);
  ASSERT_NO_LEAKS(&l);
}

/* Views made and freed concurrently over one foreign tensor: the foreign
 * deleter runs exactly once, after the last view. */
static void *views(void *arg) {
  dlpx_tensor *base = arg;
  for (int i = 0; i < iterations() / 4; i++) {
    dlpx_tensor *v = NULL, *w = NULL;
    if (dlpx_tensor_slice(base, 0, 1, DLPX_NONE, 2, &v)) return (void *)1;
    if (dlpx_tensor_transpose(v, &w)) return (void *)1;
    DLManagedTensorVersioned *m = NULL;
    if (dlpx_tensor_export(w, 0, &m)) return (void *)1;
    dlpx_tensor_free(v);
    dlpx_tensor *back = NULL;
    if (dlpx_tensor_import(m, 0, &back)) return (void *)1;
    dlpx_tensor_free(w);
    dlpx_tensor_free(back);
  }
  return NULL;
}

static void test_concurrent_views_of_foreign(void) {
  check_live l;
  check_live_begin(&l);
  atomic_store(&fake_deleted, 0);
  int64_t shape[] = {8, 8};
  fake_versioned *f = fake_new(2, shape);
  dlpx_tensor *t = NULL;
  ASSERT_OK(dlpx_tensor_import(&f->mt, 0, &t));
  pthread_t th[THREADS];
  for (int k = 0; k < THREADS; k++) ASSERT_EQ(pthread_create(&th[k], NULL, views, t), 0);
  for (int k = 0; k < THREADS; k++) {
    void *r;
    ASSERT_EQ(pthread_join(th[k], &r), 0);
    ASSERT_PTR_EQ(r, NULL);
  }
  ASSERT_EQ(atomic_load(&fake_deleted), 0);
  dlpx_tensor_free(t);
  ASSERT_EQ(atomic_load(&fake_deleted), 1);
  ASSERT_NO_LEAKS(&l);
}

int main(void) {
  RUN(test_concurrent_export_release);
  RUN(test_deleters_on_other_threads);
  RUN(test_concurrent_views_of_foreign);
  CHECK_DONE();
}
