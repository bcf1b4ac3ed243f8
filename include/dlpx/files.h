/*
 * dlpx/files.h - tensor files in the safetensors format: a parsed and
 * validated header, files opened for loading (mmap, pread, O_DIRECT, into
 * existing tensors, slices), crash-safe saving, and per-tensor checksums.
 *
 * The format (the reference package's rules): an 8-byte little-endian
 * header length N; N bytes of UTF-8 JSON starting with '{' (trailing spaces
 * allowed); then the data.  Each entry is {"dtype", "shape",
 * "data_offsets": [begin, end)} relative to the data start; an optional
 * "__metadata__" maps strings to strings.  Entries have distinct names,
 * cover the data without gaps or overlaps, have end - begin equal to the
 * size of shape x dtype, and the last end is the data length.  Elements are
 * little-endian, in C order.  dlpx keeps per-tensor checksums (XXH3-64 of
 * each chunk of a tensor's bytes) in __metadata__ under "dlpx.checksums",
 * so its files stay readable by every other reader.
 */
#ifndef DLPX_FILES_H
#define DLPX_FILES_H

#include <dlpx/common.h>
#include <dlpx/tensor.h>

DLPX_BEGIN_DECLS

/* Limits of the format. */
#define DLPX_ST_HEADER_MAX 100000000 /* bytes of JSON header */

/* ---- safetensors dtype names --------------------------------------------- */

/* The safetensors name of |dtype| ("F32", "BF16", "F8_E4M3", "F4"), or NULL
 * when the format has none (complex128, float8_e3m4, ...).  Borrowed:
 * static. */
DLPX_API const char *dlpx_st_dtype_name(DLDataType dtype);

/* The dtype of a safetensors dtype name.  Returns 0, or DLPX_EDTYPE for a
 * name the format does not have. */
DLPX_API int dlpx_st_dtype_parse(const char *name, DLDataType *out);

/* ---- headers ----------------------------------------------------------- */

typedef struct dlpx_st_header dlpx_st_header;

/* One tensor of a header.  Pointers are borrowed from the header. */
typedef struct {
  const char *name;       /* UTF-8, NUL-terminated (names with a NUL are refused) */
  DLDataType dtype;
  int32_t ndim;
  const int64_t *shape;   /* ndim entries */
  uint64_t begin, end;    /* byte offsets [begin, end) relative to the data start */
} dlpx_st_entry;

/* Parses and validates the |len| bytes of JSON at |json| as a safetensors
 * header whose data section has |data_len| bytes; every rule of the format
 * is checked before it returns.  Entries are kept in data order (by
 * begin).  New: free with dlpx_st_header_free.
 * Returns 0, DLPX_EINVAL (NULL arguments), DLPX_EFORMAT (the header breaks
 * a rule of the format: the message says which, naming the tensor),
 * DLPX_EDTYPE (an unknown dtype name), DLPX_EOVERFLOW, DLPX_ENOMEM. */
DLPX_API int dlpx_st_header_parse(const char *json, size_t len, uint64_t data_len,
                                  dlpx_st_header **out);

/* Frees a header.  Accepts NULL. */
DLPX_API void dlpx_st_header_free(dlpx_st_header *header);

/* The number of tensors, and the entry of tensor |index| in data order
 * (borrowed; valid while the header lives).  dlpx_st_header_entry returns
 * NULL for an index out of range. */
DLPX_API size_t dlpx_st_header_count(const dlpx_st_header *header);
DLPX_API const dlpx_st_entry *dlpx_st_header_entry(const dlpx_st_header *header, size_t index);

/* The index of the tensor named |name|.  Returns 0, or DLPX_EINDEX (no such
 * tensor; not recorded as the last error: a lookup may fail harmlessly). */
DLPX_API int dlpx_st_header_find(const dlpx_st_header *header, const char *name, size_t *index);

/* Every entry at once, as flat arrays in data order: for bindings whose
 * per-call cost (dlpx_st_header_entry per tensor) would exceed the work.
 * Borrowed from the header (valid while it lives); made when the header was
 * parsed.  Entry i has name (UTF-8, NUL-terminated) number i of |names|,
 * dtype code | bits << 8 | lanes << 16 in dtypes[i], ndims[i] dims in
 * |shapes| after those of the entries before it, and bytes
 * [begins[i], ends[i]) of the data. */
typedef struct {
  size_t count;
  const char *names;      /* count names, each NUL-terminated, one after another */
  size_t names_len;       /* bytes of |names|, their NULs included */
  const uint32_t *dtypes;
  const int32_t *ndims;
  const int64_t *shapes;
  const uint64_t *begins, *ends;
} dlpx_st_table;

DLPX_API const dlpx_st_table *dlpx_st_header_table(const dlpx_st_header *header);

/* 1 when the header has a __metadata__ object (maybe empty), 0 when it has
 * none (or null). */
DLPX_API int dlpx_st_header_has_metadata(const dlpx_st_header *header);

/* The number of __metadata__ entries and entry |index|: key and value,
 * borrowed.  Returns 0 or DLPX_EINDEX. */
DLPX_API size_t dlpx_st_header_metadata_count(const dlpx_st_header *header);
DLPX_API int dlpx_st_header_metadata(const dlpx_st_header *header, size_t index,
                                     const char **key, const char **value);

/* ---- checksums ----------------------------------------------------------- */

/* The default chunk of dlpx checksums: a tensor's bytes are hashed in
 * pieces of this size (the last may be shorter), so any piece can be
 * verified on its own, by any thread, as soon as it is read. */
#define DLPX_CHECKSUM_CHUNK ((uint64_t)1 << 24) /* 16 MiB */

/* XXH3-64 of |size| bytes at |data|. */
DLPX_API uint64_t dlpx_xxh3(const void *data, size_t size);

/* Whether the header carries dlpx checksums, the chunk they use, and the
 * number of chunk hashes of tensor |index| (ceil(bytes / chunk), 0 for an
 * empty tensor, which has nothing to check).  Returns 1 if tensor |index|
 * has checksums, 0 if not. */
DLPX_API int dlpx_st_header_checksums(const dlpx_st_header *header, size_t index,
                                      uint64_t *chunk, size_t *count, const uint64_t **hashes);

/* ---- files --------------------------------------------------------------- */

typedef struct dlpx_file dlpx_file;

/* Flags of dlpx_file_open. */
#define DLPX_FILE_DIRECT 1u /* also open the file with O_DIRECT for DLPX_READ_DIRECT */

/* Opens a safetensors file: reads the header length and the header only
 * (never the data) and validates the header against the file's size.  With
 * DLPX_FILE_DIRECT a second descriptor is opened with O_DIRECT; a file
 * system that refuses O_DIRECT is not an error (dlpx_file_direct says so).
 * New: free with dlpx_file_close.  Thread-safe once open: any number of
 * threads may read from one file at once.
 * Returns 0, DLPX_EINVAL, DLPX_EIO (the file cannot be opened or read; the
 * message has the OS error), DLPX_EFORMAT (truncated file, bad header
 * length, the rules of dlpx_st_header_parse), DLPX_EDTYPE, DLPX_ENOMEM. */
DLPX_API int dlpx_file_open(const char *path, uint32_t flags, dlpx_file **out);

/* Closes a file.  Tensors loaded from it (mmap views included) stay valid:
 * they hold the memory they need.  Accepts NULL. */
DLPX_API void dlpx_file_close(dlpx_file *file);

/* The parsed header (borrowed: valid while the file is open). */
DLPX_API const dlpx_st_header *dlpx_file_header(const dlpx_file *file);

/* The byte offset of the data section in the file (8 + header length). */
DLPX_API uint64_t dlpx_file_data_offset(const dlpx_file *file);

/* 1 when O_DIRECT reads are available (DLPX_FILE_DIRECT given and accepted
 * by the file system), else 0. */
DLPX_API int dlpx_file_direct(const dlpx_file *file);

/* Flags of the read functions. */
#define DLPX_READ_VERIFY 1u /* check dlpx checksums of the bytes read (when the file has them) */
#define DLPX_READ_DIRECT 2u /* read with O_DIRECT (falls back to plain reads when unavailable) */
#define DLPX_READ_COPY_ON_WRITE 4u /* dlpx_file_map: a writable view whose writes stay in
                                    * this process (never reach the file) */

/* Tensor |index| as a read-only view over a mapping of the file (mmap,
 * private, read-only), zero copy; with DLPX_READ_COPY_ON_WRITE a writable
 * view over a private copy-on-write mapping instead (for consumers that
 * have no read-only tensors: pages are copied only when written).  Each
 * mapping is made once per file and is a storage: it lives until the last
 * view of it goes, also after dlpx_file_close.  A file that shrank since
 * it was opened is refused (its lost pages would raise SIGBUS); a file cut
 * short later, while mapped, still can: use the read functions on files
 * that others may truncate.  With DLPX_READ_VERIFY the tensor's checksums
 * are checked first (which reads its pages).  New.
 * Returns 0, DLPX_EINDEX, DLPX_EINVAL (unknown flags), DLPX_EIO (mmap
 * failed, the file shrank), DLPX_ECHECKSUM (the message names the tensor),
 * DLPX_ENOMEM. */
DLPX_API int dlpx_file_map(dlpx_file *file, size_t index, uint32_t flags, dlpx_tensor **out);

/* Reads bytes [|begin|, |end|) of tensor |index| (offsets within the
 * tensor's data) to |dst|, which receives byte |begin| at dst[0].  With
 * DLPX_READ_VERIFY every checksum chunk that lies wholly inside the range
 * is checked (callers that split a tensor on chunk boundaries verify all of
 * it).  Thread-safe; releases nothing, takes nothing.
 * Returns 0, DLPX_EINDEX, DLPX_EINVAL (a range outside the tensor), DLPX_EIO
 * (a read failed, or the file is shorter than its header says: it shrank),
 * DLPX_ECHECKSUM. */
DLPX_API int dlpx_file_read_range(dlpx_file *file, size_t index, uint64_t begin, uint64_t end,
                                  void *dst, uint32_t flags);

/* Reads tensor |index| into the existing host tensor |dst| of the same
 * dtype and shape (any strides; a C-contiguous |dst| is read into
 * directly, others through a bounded staging buffer).  |dst| keeps its
 * ownership.
 * Returns 0, DLPX_EINDEX, DLPX_EDTYPE, DLPX_ESHAPE, DLPX_EREADONLY,
 * DLPX_EDEVICE, DLPX_EIO, DLPX_ECHECKSUM, DLPX_ENOMEM. */
DLPX_API int dlpx_file_read_into(dlpx_file *file, size_t index, const dlpx_tensor *dst,
                                 uint32_t flags);

/* A new uninitialized owned C-contiguous host tensor with the dtype and
 * shape of tensor |index|, in memory made for being filled by reads (blocks
 * of 2 MiB and more are 2 MiB aligned and advised to use transparent huge
 * pages: on fresh memory the page faults, not the reads, bound a load).
 * For callers that fill it themselves, e.g. with dlpx_file_read_range from
 * several threads.  New.  Returns 0, DLPX_EINDEX, DLPX_ENOMEM. */
DLPX_API int dlpx_file_empty(dlpx_file *file, size_t index, dlpx_tensor **out);

/* dlpx_file_empty for the |n| tensors |indices| at once, in one block of
 * memory (each tensor 64-byte aligned in it), so that small tensors cost
 * one allocation and few page faults: out[i] for indices[i].  The block
 * lives until the last of the tensors goes.  New (each out[i]); on failure
 * none is made.  Returns 0, DLPX_EINVAL, DLPX_EINDEX, DLPX_EOVERFLOW,
 * DLPX_ENOMEM. */
DLPX_API int dlpx_file_empty_many(dlpx_file *file, size_t n, const size_t *indices,
                                  dlpx_tensor **out);

/* Reads the whole of each of the |n| tensors |indices| to dsts[i] (as
 * dlpx_file_read_range from 0 to its size), in order, in one call: for
 * many small tensors, whose reads would cost less than the calls.  Stops at
 * the first error.  Returns the errors of dlpx_file_read_range. */
DLPX_API int dlpx_file_read_many(dlpx_file *file, size_t n, const size_t *indices,
                                 void *const *dsts, uint32_t flags);

/* Tensor |index| read into new owned, 64-byte aligned host memory
 * (dlpx_file_read_into of a new tensor), in this thread.  New.
 * Returns the errors of dlpx_file_read_into and DLPX_ENOMEM. */
DLPX_API int dlpx_file_read(dlpx_file *file, size_t index, uint32_t flags, dlpx_tensor **out);

/* The part of tensor |index| that the |n| index items select (NumPy basic
 * indexing, as dlpx_tensor_index), read into new owned C-contiguous memory;
 * only the bytes the selection touches are read (runs of 4 KiB and more
 * with pread, shorter ones by copying from the file's read-only mapping).
 * With DLPX_READ_VERIFY the checksum chunks lying wholly inside a run read
 * with pread are checked.  Sub-byte dtypes must select whole bytes.  New.
 * Returns the errors of dlpx_tensor_index and dlpx_file_read, and
 * DLPX_ENOTSUP (a sub-byte selection that splits bytes). */
DLPX_API int dlpx_file_read_slice(dlpx_file *file, size_t index, int32_t n,
                                  const dlpx_index *items, uint32_t flags, dlpx_tensor **out);

/* ---- saving --------------------------------------------------------------- */

/* Flags of dlpx_save_file. */
#define DLPX_SAVE_CHECKSUMS 1u  /* store dlpx checksums in __metadata__ */
#define DLPX_SAVE_ALIASES_ONCE 2u /* store tensors that are the same view once; see below */
#define DLPX_SAVE_NO_FSYNC 4u   /* skip the fsyncs (not crash-safe; for scratch files) */
#define DLPX_SAVE_METADATA 8u   /* write __metadata__ also when it has no entries (as the
                                 * reference does for an empty dict) */

/* Saves the |n| host tensors |tensors| under the UTF-8 |names| (distinct,
 * no NUL) to |path| in the safetensors format, in the reference writer's
 * order (dtype, then name) and header padding (to 8 bytes), with the |nmeta|
 * metadata pairs |keys|/|values| (may be NULL when nmeta is 0; keys
 * starting with "dlpx." are reserved).  Crash-safe: the bytes go to a
 * temporary file in the same directory, which is fsynced, renamed over
 * |path|, and the directory fsynced; a crash at any point leaves the old
 * file or the new one, and a failed save removes its temporary file.
 * The temporary file is ".<name>.tmp-XXXXXX" beside |path| (6 characters
 * from mkostemp) and is flock(2)ed until it is renamed; a save that
 * succeeds then removes the ones a killed save of the same |path| left:
 * siblings of exactly that pattern, regular files, unlocked (so not a save
 * in progress, in this process or another), last modified before this
 * save created its own.  Other files are never touched; on file systems
 * without flock nothing is removed.
 * Tensors whose memory overlaps are refused, naming both, unless they are
 * the same view and DLPX_SAVE_ALIASES_ONCE is given: then the later names
 * are recorded in __metadata__ ("dlpx.aliases") and loaders restore them.
 * Tensors keep their ownership; they may be any layout.
 * Returns 0, DLPX_EINVAL (bad arguments, duplicate or reserved names),
 * DLPX_EDTYPE (a dtype the format lacks), DLPX_EDEVICE (not host memory),
 * DLPX_EOVERLAP (tensors sharing memory), DLPX_EIO, DLPX_ENOMEM. */
DLPX_API int dlpx_save_file(const char *path, size_t n, const char *const *names,
                            const dlpx_tensor *const *tensors, size_t nmeta,
                            const char *const *keys, const char *const *values, uint32_t flags);

DLPX_END_DECLS

#endif /* DLPX_FILES_H */
