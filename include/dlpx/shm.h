/*
 * dlpx/shm.h - tensors shared across processes, zero copy: a segment is a
 * safetensors image (the same bytes a tensor file holds, with its data
 * 64-byte aligned) in shared memory, which nobody can change once it is
 * filled.
 *
 * Two kinds of segment:
 *  - anonymous: a memfd sealed against writes, shrinking and growing
 *    (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) as soon as
 *    it is filled, so a reader can prove, by its seals, that the bytes it
 *    validated cannot change.  It lives while any process holds its
 *    descriptor or a mapping of it: nothing is left behind when processes
 *    die.  Other processes get the descriptor from the producer with
 *    dlpx_segment_publish / dlpx_segment_fetch (SCM_RIGHTS over a Unix
 *    socket of the producer, in the abstract namespace).
 *  - named: a file in /dev/shm called "dlpx.<name>", for processes that
 *    share no ancestry and may outlive the producer.  Linux seals memfds
 *    only, so a named segment is made read-only instead (mode 0400, after
 *    it is filled and before its name appears: readers never see a partial
 *    one); readers refuse one that anybody may write to or that another
 *    user owns.  It stays until dlpx_segment_unlink.
 *
 * Readers map a segment copy-on-write (MAP_PRIVATE, readable and writable):
 * tensors over it carry DLPX_TENSOR_READ_ONLY, and a consumer that writes
 * anyway (PyTorch ignores the flag) changes only its own private pages,
 * never what the other processes see, and takes no SIGSEGV.  Attaching
 * validates the whole header (dlpx_st_header_parse) before any tensor is
 * made; it costs the same for a segment of any byte size.
 *
 * Every segment carries a random 128-bit id in its __metadata__ (under
 * "dlpx.segment", 32 lowercase hex digits), which handles name and
 * fetches check, so a stale handle never attaches to another segment.
 */
#ifndef DLPX_SHM_H
#define DLPX_SHM_H

#include <dlpx/common.h>
#include <dlpx/files.h>
#include <dlpx/tensor.h>

DLPX_BEGIN_DECLS

typedef struct dlpx_segment dlpx_segment;

/* Limits. */
#define DLPX_SEGMENT_NAME_MAX 200 /* bytes of a segment name */
#define DLPX_SEGMENT_ID_LEN 32    /* hex digits of a segment id */
#define DLPX_SEGMENT_ALIGN 64     /* the data section starts at a multiple of this */
#define DLPX_SEGMENT_ADDRESS_MAX 108 /* bytes of a publish address, with its NUL */

/* The directory of named segments and the prefix of their file names. */
#define DLPX_SEGMENT_DIR "/dev/shm"
#define DLPX_SEGMENT_PREFIX "dlpx."

/* ---- making segments ------------------------------------------------------ */

/* Makes a segment holding the |n| host tensors |tensors| under |names|,
 * with the |nmeta| metadata pairs |keys|/|values|, as dlpx_save_file would
 * save them (the same checks, order and flags: DLPX_SAVE_CHECKSUMS,
 * DLPX_SAVE_ALIASES_ONCE, DLPX_SAVE_METADATA; DLPX_SAVE_NO_FSYNC is
 * accepted and means nothing here), with the data section 64-byte
 * aligned.  The tensors are copied once; they keep their ownership.
 * |name| NULL makes an anonymous sealed memfd; otherwise a named segment
 * "dlpx.<name>" in /dev/shm (|name|: 1 to DLPX_SEGMENT_NAME_MAX characters
 * of [A-Za-z0-9._-], not starting with '.'), which must not exist yet.
 * The segment comes back attached (as dlpx_segment_attach_fd would give
 * it).  New: free with dlpx_segment_close.
 * Returns 0, the errors of dlpx_save_file, DLPX_EINVAL (a bad name),
 * DLPX_EIO (memfd_create or /dev/shm failed; the name exists: the message
 * says so), DLPX_ENOMEM. */
DLPX_API int dlpx_segment_create(const char *name, size_t n, const char *const *names,
                                 const dlpx_tensor *const *tensors, size_t nmeta,
                                 const char *const *keys, const char *const *values,
                                 uint32_t flags, dlpx_segment **out);

/* For images that arrive as bytes (from another machine, through MPI or
 * Ray): makes an unfilled anonymous (|name| NULL) or named segment of
 * |size| bytes and sets *data to a writable shared mapping of it, to be
 * filled with a whole safetensors image and then given to
 * dlpx_segment_seal.  New: free with dlpx_segment_close (which, before
 * dlpx_segment_seal, discards it).
 * Returns 0, DLPX_EINVAL (size < 8, bad name), DLPX_EIO, DLPX_ENOMEM. */
DLPX_API int dlpx_segment_build(const char *name, uint64_t size, void **data,
                                dlpx_segment **out);

/* Finishes a segment of dlpx_segment_build: replaces the writable shared
 * mapping with a private one at the same address (the pointer given by
 * dlpx_segment_build stays readable until dlpx_segment_close, and writes
 * through it no longer reach the segment), seals
 * it (anonymous) or makes it read-only and gives it its name (named), and
 * attaches it, validating the image as any reader does.  On failure the
 * segment is discarded (close it).
 * Returns 0, DLPX_ESTATE (not a built, unsealed segment), the errors of
 * dlpx_segment_attach_fd. */
DLPX_API int dlpx_segment_seal(dlpx_segment *seg);

/* ---- attaching ------------------------------------------------------------ */

/* Attaches the segment whose descriptor is |fd|: checks that it is a
 * memfd sealed against writes, shrinking and growing, or a file nobody may
 * write to owned by this user; reads and validates its header; maps it
 * copy-on-write.  |fd| is duplicated: the caller keeps its own.  New: free
 * with dlpx_segment_close.
 * Returns 0, DLPX_EINVAL (flags, fd < 0), DLPX_EFORMAT (not sealed,
 * writable, too short, a bad image: the message says which),
 * DLPX_EDTYPE, DLPX_EIO, DLPX_ENOMEM. */
DLPX_API int dlpx_segment_attach_fd(int fd, uint32_t flags, dlpx_segment **out);

/* Attaches the named segment "dlpx.<name>" in /dev/shm.  New.
 * Returns 0, DLPX_EINVAL (a bad name), DLPX_ENOENT (no such segment), the
 * errors of dlpx_segment_attach_fd. */
DLPX_API int dlpx_segment_open(const char *name, uint32_t flags, dlpx_segment **out);

/* Removes the name of segment "dlpx.<name>" (processes that attached it
 * keep their mappings).  Returns 0, DLPX_EINVAL, DLPX_ENOENT, DLPX_EIO. */
DLPX_API int dlpx_segment_unlink(const char *name);

/* Closes a segment: its descriptor and, for a producer, its publication.
 * Tensors made from it stay valid: they hold the mapping.  Accepts NULL. */
DLPX_API void dlpx_segment_close(dlpx_segment *seg);

/* ---- what a segment holds --------------------------------------------- */

/* The validated header (borrowed: valid while the segment is open). */
DLPX_API const dlpx_st_header *dlpx_segment_header(const dlpx_segment *seg);

/* The segment's id: DLPX_SEGMENT_ID_LEN hex digits, NUL-terminated
 * (borrowed), or NULL when the image carries none (made by another
 * writer). */
DLPX_API const char *dlpx_segment_id(const dlpx_segment *seg);

/* The segment's name (borrowed), or NULL for an anonymous one. */
DLPX_API const char *dlpx_segment_name(const dlpx_segment *seg);

/* The byte size of the whole image, and the offset of its data section. */
DLPX_API uint64_t dlpx_segment_size(const dlpx_segment *seg);
DLPX_API uint64_t dlpx_segment_data_offset(const dlpx_segment *seg);

/* The header's JSON bytes as they were read and validated when the segment
 * was attached (borrowed: valid while the segment is open), *len of them
 * (the header length, trailing spaces included), not NUL-terminated; NULL
 * before dlpx_segment_seal.  Readers that parse the header themselves (the
 * Python layer does, to make many tensors at once) take these bytes, not
 * the segment's again: a named segment's owner could change those. */
DLPX_API const char *dlpx_segment_header_json(const dlpx_segment *seg, size_t *len);

/* The segment's descriptor (borrowed: valid while the segment is open), or
 * -1 before dlpx_segment_seal. */
DLPX_API int dlpx_segment_fd(const dlpx_segment *seg);

/* Tensor |index| as a view over the segment's copy-on-write mapping, zero
 * copy, with DLPX_TENSOR_READ_ONLY; with DLPX_READ_COPY_ON_WRITE without it
 * (for consumers that have no read-only tensors: their writes stay in this
 * process).  New.  Returns 0, DLPX_EINDEX, DLPX_EINVAL (unknown flags),
 * DLPX_ESTATE (not attached), DLPX_ENOMEM. */
DLPX_API int dlpx_segment_tensor(const dlpx_segment *seg, size_t index, uint32_t flags,
                                 dlpx_tensor **out);

/* All tensors at once, in data order: out[i] for header entry i (an array
 * of dlpx_st_header_count entries).  New (each); on failure none is made.
 * Returns the errors of dlpx_segment_tensor. */
DLPX_API int dlpx_segment_tensors(const dlpx_segment *seg, uint32_t flags, dlpx_tensor **out);

/* The whole data section as one 1-D uint8 view (flags as
 * dlpx_segment_tensor), for consumers that slice typed views out of it
 * themselves.  New.  Returns the errors of dlpx_segment_tensor. */
DLPX_API int dlpx_segment_bytes(const dlpx_segment *seg, uint32_t flags, dlpx_tensor **out);

/* ---- passing descriptors between processes ------------------------------ */

/* Publishes an anonymous segment to other processes: a server thread of
 * this process (started on first use, one per process, again after a
 * fork) answers fetches of the segment's id on a Unix socket in the
 * abstract namespace, sending its descriptor with SCM_RIGHTS, until
 * dlpx_segment_unpublish or dlpx_segment_close.  Writes the socket's
 * address ("@dlpx.<pid>.<random>/<fd>.<inode>", NUL-terminated: the
 * socket, then the number of the producer's descriptor of this segment and
 * the memfd's inode) to |address|, which has room for
 * DLPX_SEGMENT_ADDRESS_MAX bytes.  Publishing twice is no error.
 * Thread-safe.
 * Returns 0, DLPX_EINVAL (NULL, a named or unsealed segment, one without an
 * id), DLPX_EIO (socket or thread creation failed), DLPX_ENOMEM. */
DLPX_API int dlpx_segment_publish(dlpx_segment *seg, char *address);

/* Stops answering fetches of |seg| (processes that have it keep it).
 * Accepts NULL and unpublished segments. */
DLPX_API void dlpx_segment_unpublish(dlpx_segment *seg);

/* Fetches the segment |id| (DLPX_SEGMENT_ID_LEN hex digits) from the
 * process publishing it at |address| and attaches it (checking that the
 * image carries that id).  Where the address names the producer's
 * descriptor, it is first opened through /proc/<pid>/fd (no round trip to
 * the producer; the same checks: a dlpx memfd, sealed, that inode, that
 * id); the producer's socket answers whenever that does not work.  Gives up after |timeout_ms| milliseconds (0:
 * 5000).  New.
 * Returns 0, DLPX_EINVAL (a bad address or id), DLPX_ENOENT (nobody
 * listens at |address|: the producer is gone; or it no longer publishes
 * |id|), DLPX_EIO (the exchange failed or timed out), the errors of
 * dlpx_segment_attach_fd. */
DLPX_API int dlpx_segment_fetch(const char *address, const char *id, uint32_t timeout_ms,
                                uint32_t flags, dlpx_segment **out);

DLPX_END_DECLS

#endif /* DLPX_SHM_H */
