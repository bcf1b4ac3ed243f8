/*
 * io.h - what the files of src/io/ share: the parsed safetensors header,
 * the open file, and the mapping storage.
 */
#ifndef DLPX_IO_IO_H
#define DLPX_IO_IO_H

#include <sys/stat.h>

#include "../internal.h"

/* The reserved __metadata__ keys of dlpx. */
#define DLPX__META_CHECKSUMS "dlpx.checksums"
#define DLPX__META_PREFIX "dlpx."
/* Aligned images (segments): the number of padding tensors, which are
 * named "dlpx.pad.<k>", under this key. */
#define DLPX__META_PAD "dlpx.pad"

typedef struct {
  uint64_t *hashes; /* one per chunk, NULL when the tensor has no checksums */
  size_t count;
} dlpx__entry_sums;

struct dlpx_st_header {
  size_t count;
  dlpx_st_entry *entries; /* in data order */
  const dlpx_st_entry **by_name; /* entries sorted by name, for lookups */
  dlpx__entry_sums *sums; /* per entry */
  uint64_t chunk;         /* checksum chunk; 0 without checksums */
  size_t nmeta;
  char **meta;            /* key, value, key, value, ... */
  bool has_meta;          /* __metadata__ is there (an object, maybe empty) */
  void *arena;            /* names and shapes */
  dlpx_st_table table;    /* the entries as flat arrays */
  void *table_block;      /* what table points into */
};

/* The byte size of |numel| elements of |dtype| in a safetensors file, or
 * an error naming |name| when it is not a whole number of bytes. */
int dlpx__st_nbytes(const char *name, DLDataType dtype, int32_t ndim, const int64_t *shape,
                    uint64_t *out);

/* The rank of a dtype in the reference writer's order (higher first). */
int dlpx__st_dtype_rank(DLDataType dtype);

/* Parses the "dlpx.checksums" value into the header's sums. */
int dlpx__st_parse_checksums(dlpx_st_header *h, const char *value);

/* Encodes checksums for saving: a new NUL-terminated JSON string (free
 * it), for |n| tensors named |names| with |counts| hashes each. */
int dlpx__st_encode_checksums(size_t n, const char *const *names, const uint64_t *const *hashes,
                              const size_t *counts, uint64_t chunk, char **out);

/* Checks the chunks of tensor |index| that lie wholly in bytes [begin, end)
 * of the tensor, whose bytes from |begin| are at |data|. */
int dlpx__st_verify(const dlpx_st_header *h, size_t index, uint64_t begin, uint64_t end,
                    const void *data);

/* Checks a tensor's bytes as they arrive in order, in pieces of any size:
 * each chunk fed whole, from its first byte to its last, is compared with
 * its checksum when its last byte arrives (a range that starts or ends
 * inside a chunk leaves that chunk unchecked).  dlpx__sumstream_new sets
 * *out to NULL when tensor |index| has no checksums (nothing to check). */
typedef struct dlpx__sumstream dlpx__sumstream;
int dlpx__sumstream_new(const dlpx_st_header *h, size_t index, uint64_t begin,
                        dlpx__sumstream **out);
void dlpx__sumstream_free(dlpx__sumstream *s);
/* 0, or DLPX_ECHECKSUM naming the tensor and the chunk. */
int dlpx__sumstream_feed(dlpx__sumstream *s, const void *data, size_t len);

/* Computes the chunk hashes of a tensor of |size| bytes fed in order, in
 * pieces of any size, into |hashes| (ceil(size / chunk) entries). */
typedef struct dlpx__hasher dlpx__hasher;
int dlpx__hasher_new(uint64_t chunk, uint64_t size, uint64_t *hashes, dlpx__hasher **out);
void dlpx__hasher_feed(dlpx__hasher *s, const void *data, size_t len);
void dlpx__hasher_free(dlpx__hasher *s);

/* fstat and fstatat without the GLIBC_2.33 symbols that glibc 2.33 gave
 * them (which would raise the wheel's manylinux floor from 2.17 to 2.34):
 * the system calls, whose struct stat is glibc's on the 64-bit Linux ports
 * the wheel is built for. */
int dlpx__fstat(int fd, struct stat *st);
int dlpx__fstatat(int dirfd, const char *path, struct stat *st, int flags);

/* XXH3-64 kernels: checksum.c's baseline (SSE2 on x86-64) and, where the
 * processor has it, hash_avx2.c's.  |update| takes an XXH3_state_t. */
typedef struct {
  const char *name;
  uint64_t (*hash)(const void *data, size_t size);
  void (*update)(void *state, const void *data, size_t size);
} dlpx__xxh3_kernels;

/* The AVX2 kernels, or NULL where the processor (or the build) lacks them. */
const dlpx__xxh3_kernels *dlpx__xxh3_avx2(void);

struct dlpx_file {
  int fd;
  int direct_fd;         /* -1 without O_DIRECT */
  uint64_t size;         /* file size at open */
  uint64_t data_offset;  /* 8 + header length */
  dlpx_st_header *header;
  char *path;
  /* the mapping, made on first use (guarded by map_lock) */
  atomic_flag map_lock;
  dlpx_storage *map[2]; /* read-only, copy-on-write */
  atomic_bool direct_ok; /* O_DIRECT reads work (cleared when the file system refuses one) */
  struct dlpx__remote *remote; /* opened from a URL (src/net/): fd is -1, reads are GETs */
};

/* Remote files (src/net/remote.c): bytes [begin, end) of tensor |index|
 * into |dst|, for each of |n| ranges, fetched concurrently; |verify|
 * checks the chunks wholly inside each range as their bytes arrive. */
typedef struct {
  size_t index;
  uint64_t begin, end;
  char *dst;
} dlpx__tensor_range;
int dlpx__remote_read_ranges(dlpx_file *f, size_t n, const dlpx__tensor_range *ranges,
                             bool verify);
void dlpx__remote_free(struct dlpx__remote *r);


/* A safetensors image about to be written (save.c): dlpx_save_file's
 * checks of the names, tensors and metadata, then its bytes, which
 * dlpx_save_file and shared-memory segments (src/shm/) both write.
 * dlpx__st_image_new checks as dlpx_save_file does (|fn| names the caller
 * in messages) and keeps the arguments borrowed: they must live until the
 * image is freed.  |align| (a power of two, 8 to 4096) is the alignment of
 * the data section: spaces after the JSON pad the header up to it (8 is
 * the reference writer's padding); above 8 every tensor starts at a
 * multiple of it as well, as fresh allocations do (kernels may take other
 * paths on less aligned data, and results then differ in the last bits):
 * the gaps are tensors of bytes named "dlpx.pad.<k>", counted in
 * __metadata__ under "dlpx.pad", as the format allows no gaps; tensor
 * names starting with "dlpx.pad." are then refused.  |extra_key| (NULL for none) adds one
 * more __metadata__ pair, which may be a reserved "dlpx." key (and forces
 * __metadata__ to be there). */
typedef struct dlpx__st_image dlpx__st_image;
int dlpx__st_image_new(const char *fn, size_t n, const char *const *names,
                       const dlpx_tensor *const *tensors, size_t nmeta, const char *const *keys,
                       const char *const *values, uint32_t flags, uint64_t align,
                       const char *extra_key, const char *extra_value, dlpx__st_image **out);
/* Writes the whole image to |fd| from offset 0 with pwrite (the data
 * first, the header last); |label| names the file in messages.  Sets *size
 * (may be NULL) to the image's byte size. */
int dlpx__st_image_write(dlpx__st_image *img, int fd, const char *label, uint64_t *size);
void dlpx__st_image_free(dlpx__st_image *img);

/* pread of exactly |len| bytes at |off| (retrying short reads and EINTR);
 * a short file is DLPX_EIO naming |path|. */
int dlpx__pread_full(int fd, void *dst, size_t len, uint64_t off, const char *path);

#endif /* DLPX_IO_IO_H */
