/* decl/files.h - include/dlpx/files.h for cffi (see decl/README). */

#define DLPX_ST_HEADER_MAX 100000000

const char *dlpx_st_dtype_name(DLDataType dtype);
int dlpx_st_dtype_parse(const char *name, DLDataType *out);

typedef struct dlpx_st_header dlpx_st_header;

typedef struct {
  const char *name;
  DLDataType dtype;
  int32_t ndim;
  const int64_t *shape;
  uint64_t begin, end;
} dlpx_st_entry;

int dlpx_st_header_parse(const char *json, size_t len, uint64_t data_len,
                         dlpx_st_header **out);
void dlpx_st_header_free(dlpx_st_header *header);
size_t dlpx_st_header_count(const dlpx_st_header *header);
const dlpx_st_entry *dlpx_st_header_entry(const dlpx_st_header *header, size_t index);
int dlpx_st_header_find(const dlpx_st_header *header, const char *name, size_t *index);
typedef struct {
  size_t count;
  const char *names;
  size_t names_len;
  const uint32_t *dtypes;
  const int32_t *ndims;
  const int64_t *shapes;
  const uint64_t *begins, *ends;
} dlpx_st_table;

const dlpx_st_table *dlpx_st_header_table(const dlpx_st_header *header);
int dlpx_st_header_has_metadata(const dlpx_st_header *header);
size_t dlpx_st_header_metadata_count(const dlpx_st_header *header);
int dlpx_st_header_metadata(const dlpx_st_header *header, size_t index, const char **key,
                            const char **value);

#define DLPX_CHECKSUM_CHUNK 16777216

uint64_t dlpx_xxh3(const void *data, size_t size);
int dlpx_st_header_checksums(const dlpx_st_header *header, size_t index, uint64_t *chunk,
                             size_t *count, const uint64_t **hashes);

typedef struct dlpx_file dlpx_file;

#define DLPX_FILE_DIRECT 1

int dlpx_file_open(const char *path, uint32_t flags, dlpx_file **out);
void dlpx_file_close(dlpx_file *file);
const dlpx_st_header *dlpx_file_header(const dlpx_file *file);
uint64_t dlpx_file_data_offset(const dlpx_file *file);
int dlpx_file_direct(const dlpx_file *file);

#define DLPX_READ_VERIFY 1
#define DLPX_READ_DIRECT 2
#define DLPX_READ_COPY_ON_WRITE 4

int dlpx_file_map(dlpx_file *file, size_t index, uint32_t flags, dlpx_tensor **out);
int dlpx_file_read_range(dlpx_file *file, size_t index, uint64_t begin, uint64_t end,
                         void *dst, uint32_t flags);
int dlpx_file_read_into(dlpx_file *file, size_t index, const dlpx_tensor *dst, uint32_t flags);
int dlpx_file_empty(dlpx_file *file, size_t index, dlpx_tensor **out);
int dlpx_file_empty_many(dlpx_file *file, size_t n, const size_t *indices,
                         dlpx_tensor **out);
int dlpx_file_read_many(dlpx_file *file, size_t n, const size_t *indices, void *const *dsts,
                        uint32_t flags);
int dlpx_file_read(dlpx_file *file, size_t index, uint32_t flags, dlpx_tensor **out);
int dlpx_file_read_slice(dlpx_file *file, size_t index, int32_t n, const dlpx_index *items,
                         uint32_t flags, dlpx_tensor **out);

#define DLPX_SAVE_CHECKSUMS 1
#define DLPX_SAVE_ALIASES_ONCE 2
#define DLPX_SAVE_NO_FSYNC 4
#define DLPX_SAVE_METADATA 8

int dlpx_save_file(const char *path, size_t n, const char *const *names,
                   const dlpx_tensor *const *tensors, size_t nmeta, const char *const *keys,
                   const char *const *values, uint32_t flags);
