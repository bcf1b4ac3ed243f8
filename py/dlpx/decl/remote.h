/* decl/remote.h - include/dlpx/remote.h for cffi (see decl/README). */

#define DLPX_REMOTE_CHECKSUM_NONE 0
#define DLPX_REMOTE_CHECKSUM_CRC32 1

typedef struct {
  size_t size;
  const char *bearer_token;
  const char *region;
  const char *endpoint;
  int32_t path_style;
  const char *access_key_id;
  const char *secret_access_key;
  const char *session_token;
  const char *profile;
  uint64_t part_size;
  uint32_t concurrency;
  int32_t retries;
  double timeout;
  const char *ca_file;
  int32_t verify_tls;
  uint32_t checksum;
  uint32_t threads;
} dlpx_remote_options;

void dlpx_remote_options_init(dlpx_remote_options *opts);
int dlpx_is_url(const char *s);
int dlpx_remote_available(void);
int dlpx_file_open_url(const char *url, const dlpx_remote_options *opts, uint32_t flags,
                       dlpx_file **out);
int dlpx_file_is_remote(const dlpx_file *file);
int dlpx_save_url(const char *url, const dlpx_remote_options *opts, size_t n,
                  const char *const *names, const dlpx_tensor *const *tensors, size_t nmeta,
                  const char *const *keys, const char *const *values, uint32_t flags);
typedef int (*dlpx_progress_fn)(void *ctx, uint64_t done, uint64_t total);
int dlpx_remote_stat(const char *url, const dlpx_remote_options *opts, uint64_t *size);
int dlpx_remote_get(const char *url, const dlpx_remote_options *opts, const char *path,
                    dlpx_progress_fn progress, void *ctx);
int dlpx_remote_put(const char *path, const char *url, const dlpx_remote_options *opts,
                    dlpx_progress_fn progress, void *ctx);
typedef int (*dlpx_list_fn)(void *ctx, const char *key, uint64_t size);
int dlpx_remote_list(const char *url, const dlpx_remote_options *opts, dlpx_list_fn fn,
                     void *ctx);
int dlpx_remote_delete(const char *url, const dlpx_remote_options *opts);
