/*
 * shm.h - what the files of src/shm/ share: the segment, the system calls
 * made raw (so that the library keeps the oldest glibc symbol versions,
 * like src/io/sys.c), and the messages of the descriptor server.
 */
#ifndef DLPX_SHM_SHM_H
#define DLPX_SHM_SHM_H

#include "../io/io.h"

/* What a segment is doing. */
enum {
  DLPX__SEG_BUILT = 1, /* dlpx_segment_build: a writable shared mapping, not sealed yet */
  DLPX__SEG_ATTACHED,  /* validated and mapped copy-on-write: tensors can be made */
  DLPX__SEG_DISCARDED  /* a dlpx_segment_seal that failed: only close remains */
};

struct dlpx_segment {
  int state;
  int fd;                /* attached: our descriptor (read-only for a named one); else -1 */
  bool sealed;           /* a memfd sealed against writes, shrinking and growing */
  char *json;            /* the header bytes that were validated */
  uint64_t size;         /* bytes of the image */
  uint64_t data_offset;  /* 8 + header length */
  dlpx_st_header *header;
  bool has_id;
  char id[DLPX_SEGMENT_ID_LEN + 1];
  char *name;            /* NULL for an anonymous segment */
  dlpx_storage *map;     /* the copy-on-write mapping of the whole image */
  /* dlpx_segment_build */
  int build_fd;          /* the memfd or the temporary file; -1 when none */
  void *build_data;      /* its writable shared mapping */
  size_t build_len;
  void *sealed_data;     /* after dlpx_segment_seal: a private mapping at build_data's
                          * address, until close */
  char *tmp_path;        /* the temporary file of a named segment, until it is linked */
};

/* ---- system calls (segment.c) ------------------------------------------------ */

/* memfd_create("dlpx", MFD_CLOEXEC | MFD_ALLOW_SEALING) made with
 * syscall(2): the glibc wrapper is GLIBC_2.27.  -1 with errno on failure. */
int dlpx__memfd(void);

/* |len| random bytes from getrandom(2) (GLIBC_2.25 as a wrapper, so made
 * with syscall(2)), or /dev/urandom where the kernel lacks it.  Returns 0,
 * or DLPX_EIO. */
int dlpx__random(void *buf, size_t len);

/* |len| bytes as lowercase hex digits at |out| (2 * len + 1 bytes, with
 * the NUL). */
void dlpx__hex(const unsigned char *bytes, size_t len, char *out);

/* 1 when |s| is exactly DLPX_SEGMENT_ID_LEN lowercase hex digits. */
bool dlpx__segment_id_ok(const char *s, size_t len);

/* ---- the descriptor server (server.c) ---------------------------------------------
 *
 * A fetch is one connection: the client sends a request, the server
 * answers with a reply (carrying the descriptor with SCM_RIGHTS when the
 * status is DLPX__SHM_FOUND) and closes the connection. */

#define DLPX__SHM_MAGIC "DLPXSHM1" /* 8 bytes, no NUL on the wire */
#define DLPX__SHM_MAGIC_LEN 8
#define DLPX__SHM_REQUEST_LEN (DLPX__SHM_MAGIC_LEN + DLPX_SEGMENT_ID_LEN)
#define DLPX__SHM_REPLY_LEN (DLPX__SHM_MAGIC_LEN + 4)

enum { DLPX__SHM_FOUND = 0, DLPX__SHM_NOT_FOUND = 1 };

/* Parses the |len| bytes of a request, which come from anybody: 0 and the
 * id (NUL-terminated) in |id|, or -1 when they are not exactly a request
 * (a length other than DLPX__SHM_REQUEST_LEN, another magic, an id that is
 * not lowercase hex). */
int dlpx__shm_parse_request(const void *buf, size_t len, char id[DLPX_SEGMENT_ID_LEN + 1]);

/* Parses the |len| bytes of a reply: 0 and its status, or -1. */
int dlpx__shm_parse_reply(const void *buf, size_t len, int32_t *status);

#endif /* DLPX_SHM_SHM_H */
