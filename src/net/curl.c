/* curl.c - libcurl, opened with dlopen on first use: libdlpx has no
 * link-time dependency on it (the wheel carries no copy of curl, its TLS
 * library or their CA paths; the system's libcurl.so.4 serves). */
#include "config.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../glibc_compat.h"
#include "net.h"

static dlpx__curl_api api;
static const dlpx__curl_api *loaded;
static char why[DLPX__MSG_MAX];
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* dlsym's void * to a function pointer, without the cast ISO C lacks. */
#define RESOLVE(field, name)                                    \
  do {                                                          \
    void *sym_ = dlsym(h, name);                                \
    if (!sym_) {                                                \
      snprintf(why, sizeof why, "%s lacks %s", file, name);     \
      return;                                                   \
    }                                                           \
    memcpy(&api.field, &sym_, sizeof sym_);                     \
  } while (0)

static void load(void) {
  const char *file = getenv("DLPX_LIBCURL");
  if (!file || !*file) file = "libcurl.so.4";
  void *h = dlopen(file, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    snprintf(why, sizeof why,
             "libcurl is not available (%s); HTTP and S3 need it (Debian: apt-get install "
             "libcurl4)",
             dlerror());
    return;
  }
  CURLcode (*global_init)(long) = NULL;
  {
    void *sym = dlsym(h, "curl_global_init");
    if (!sym) {
      snprintf(why, sizeof why, "%s lacks curl_global_init", file);
      return;
    }
    memcpy(&global_init, &sym, sizeof sym);
  }
  RESOLVE(easy_init, "curl_easy_init");
  RESOLVE(easy_setopt, "curl_easy_setopt");
  RESOLVE(easy_getinfo, "curl_easy_getinfo");
  RESOLVE(easy_reset, "curl_easy_reset");
  RESOLVE(easy_cleanup, "curl_easy_cleanup");
  RESOLVE(easy_strerror, "curl_easy_strerror");
  RESOLVE(multi_init, "curl_multi_init");
  RESOLVE(multi_setopt, "curl_multi_setopt");
  RESOLVE(multi_add_handle, "curl_multi_add_handle");
  RESOLVE(multi_remove_handle, "curl_multi_remove_handle");
  RESOLVE(multi_perform, "curl_multi_perform");
  RESOLVE(multi_poll, "curl_multi_poll");
  RESOLVE(multi_info_read, "curl_multi_info_read");
  RESOLVE(multi_cleanup, "curl_multi_cleanup");
  RESOLVE(multi_strerror, "curl_multi_strerror");
  RESOLVE(slist_append, "curl_slist_append");
  RESOLVE(slist_free_all, "curl_slist_free_all");
  RESOLVE(version_info, "curl_version_info");
  curl_version_info_data *v = api.version_info(CURLVERSION_NOW);
  if (!v || v->version_num < 0x074b00) { /* 7.75.0: CURLOPT_AWS_SIGV4 */
    snprintf(why, sizeof why, "%s is libcurl %s; dlpx needs 7.75 or newer (AWS SigV4)", file,
             v ? v->version : "of unknown version");
    return;
  }
  if (!(v->features & CURL_VERSION_SSL))
    fprintf(stderr, "dlpx: %s has no TLS: https:// URLs will fail\n", file);
  if (global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    snprintf(why, sizeof why, "curl_global_init failed");
    return;
  }
  loaded = &api; /* the handle stays open for the life of the process */
}

const dlpx__curl_api *dlpx__curl(void) {
  pthread_once(&once, load);
  if (!loaded) dlpx__fail(DLPX_ENOTSUP, "%s", why);
  return loaded;
}

int dlpx_remote_available(void) { return dlpx__curl() ? 1 : 0; }
