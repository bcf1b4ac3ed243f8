/* decl/shm.h - include/dlpx/shm.h for cffi (see decl/README). */

typedef struct dlpx_segment dlpx_segment;

#define DLPX_SEGMENT_NAME_MAX 200
#define DLPX_SEGMENT_ID_LEN 32
#define DLPX_SEGMENT_ALIGN 64
#define DLPX_SEGMENT_ADDRESS_MAX 108

int dlpx_segment_create(const char *name, size_t n, const char *const *names,
                        const dlpx_tensor *const *tensors, size_t nmeta,
                        const char *const *keys, const char *const *values,
                        uint32_t flags, dlpx_segment **out);
int dlpx_segment_build(const char *name, uint64_t size, void **data, dlpx_segment **out);
int dlpx_segment_seal(dlpx_segment *seg);
int dlpx_segment_attach_fd(int fd, uint32_t flags, dlpx_segment **out);
int dlpx_segment_open(const char *name, uint32_t flags, dlpx_segment **out);
int dlpx_segment_unlink(const char *name);
void dlpx_segment_close(dlpx_segment *seg);
const dlpx_st_header *dlpx_segment_header(const dlpx_segment *seg);
const char *dlpx_segment_id(const dlpx_segment *seg);
const char *dlpx_segment_name(const dlpx_segment *seg);
uint64_t dlpx_segment_size(const dlpx_segment *seg);
uint64_t dlpx_segment_data_offset(const dlpx_segment *seg);
const char *dlpx_segment_header_json(const dlpx_segment *seg, size_t *len);
int dlpx_segment_fd(const dlpx_segment *seg);
int dlpx_segment_tensor(const dlpx_segment *seg, size_t index, uint32_t flags,
                        dlpx_tensor **out);
int dlpx_segment_tensors(const dlpx_segment *seg, uint32_t flags, dlpx_tensor **out);
int dlpx_segment_bytes(const dlpx_segment *seg, uint32_t flags, dlpx_tensor **out);
int dlpx_segment_publish(dlpx_segment *seg, char *address);
void dlpx_segment_unpublish(dlpx_segment *seg);
int dlpx_segment_fetch(const char *address, const char *id, uint32_t timeout_ms,
                       uint32_t flags, dlpx_segment **out);
