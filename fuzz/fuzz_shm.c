/* fuzz_shm.c - libFuzzer target for what shared-memory segments take from
 * other processes: segment images (dlpx_segment_attach_fd and every view of
 * src/shm/segment.c) and the messages of the descriptor server
 * (dlpx__shm_parse_request, dlpx__shm_parse_reply of src/shm/server.c).
 * Built and run by scripts/fuzz.sh with -fsanitize=fuzzer,address,undefined;
 * LeakSanitizer is on, so a leak on any path (an error path included) is a
 * finding, and so is a memfd or socket left open (counted every 256
 * inputs).
 *
 * Each input is used three ways:
 *  (a) as a whole segment image: written to a new memfd, sealed as a
 *      producer seals it, attached; if it attaches, every tensor is made
 *      (read-only and copy-on-write) and compared with the input's bytes,
 *      the data section is taken as bytes, the id checked against the
 *      metadata, and one view is kept past dlpx_segment_close;
 *  (b) one input in four (by its last byte), through dlpx_segment_build
 *      and dlpx_segment_seal, which must agree with (a);
 *  (c) as a request and a reply of the descriptor server (whole, and its
 *      first DLPX__SHM_REQUEST_LEN bytes): what the parser accepts must be
 *      exactly a well-formed message. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <dlpx/dlpx.h>

#include "../src/shm/shm.h"

#define ALL_SEALS (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

/* Descriptors of the kinds this code makes (memfds, sockets); the
 * fuzzer's and the sanitizers' own (pipes, files) come and go. */
static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    char p[300], target[300];
    snprintf(p, sizeof p, "/proc/self/fd/%s", de->d_name);
    ssize_t len = readlink(p, target, sizeof target - 1);
    if (len <= 0) continue;
    target[len] = '\0';
    if (!strncmp(target, "/memfd:", 7) || !strncmp(target, "socket:", 7)) n++;
  }
  closedir(d);
  return n;
}

static void expect(const dlpx_tensor *t, const void *want, uint64_t len, const char *what) {
  dlpx_tensor *c = NULL;
  if (dlpx_tensor_copy(t, 'C', &c) != 0) {
    fprintf(stderr, "fuzz_shm: %s: cannot copy: %s\n", what, dlpx_last_error());
    abort();
  }
  if ((uint64_t)dlpx_tensor_nbytes(c) != len ||
      (len && memcmp(dlpx_tensor_data(c), want, (size_t)len) != 0)) {
    fprintf(stderr, "fuzz_shm: %s: the bytes differ from the image's\n", what);
    abort();
  }
  dlpx_tensor_free(c);
}

/* Everything a consumer does with an attached segment; returns the number
 * of tensors. */
static size_t exercise(dlpx_segment *seg, const uint8_t *data, size_t size) {
  const dlpx_st_header *h = dlpx_segment_header(seg);
  if (!h || dlpx_segment_size(seg) != size || dlpx_segment_data_offset(seg) > size ||
      dlpx_segment_data_offset(seg) < 10 || dlpx_segment_fd(seg) < 0)
    abort();
  uint64_t off = dlpx_segment_data_offset(seg);
  /* the id is the metadata's, and well formed */
  const char *id = dlpx_segment_id(seg);
  const char *mid = NULL;
  for (size_t i = 0; i < dlpx_st_header_metadata_count(h); i++) {
    const char *k, *v;
    if (dlpx_st_header_metadata(h, i, &k, &v) == 0 && !strcmp(k, "dlpx.segment")) mid = v;
  }
  if ((id == NULL) != (mid == NULL) || (id && (strcmp(id, mid) || strlen(id) != 32))) abort();
  size_t n = dlpx_st_header_count(h);
  for (size_t i = 0; i < n; i++) {
    const dlpx_st_entry *e = dlpx_st_header_entry(h, i);
    if (off + e->end > size) abort(); /* validated against the size */
    dlpx_tensor *ro = NULL, *cow = NULL;
    if (dlpx_segment_tensor(seg, i, 0, &ro) != 0) {
      fprintf(stderr, "fuzz_shm: a valid entry makes no tensor: %s\n", dlpx_last_error());
      abort();
    }
    if (!dlpx_tensor_is_readonly(ro)) abort();
    expect(ro, data + off + e->begin, e->end - e->begin, "dlpx_segment_tensor");
    if (dlpx_segment_tensor(seg, i, DLPX_READ_COPY_ON_WRITE, &cow) != 0 ||
        dlpx_tensor_is_readonly(cow))
      abort();
    dlpx_tensor_free(cow);
    dlpx_tensor_free(ro);
  }
  dlpx_tensor *t = NULL;
  if (dlpx_segment_tensor(seg, n, 0, &t) == 0 || t) abort(); /* out of range */
  if (n && n <= 4096) {
    dlpx_tensor **all = calloc(n, sizeof *all);
    if (!all || dlpx_segment_tensors(seg, 0, all) != 0) abort();
    for (size_t i = 0; i < n; i++) dlpx_tensor_free(all[i]);
    free(all);
  }
  if (dlpx_segment_bytes(seg, 0, &t) != 0) abort();
  expect(t, data + off, size - off, "dlpx_segment_bytes");
  dlpx_tensor_free(t);
  return n;
}

static void fuzz_image(const uint8_t *data, size_t size) {
  int fd = memfd_create("dlpx-fuzz-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) {
    perror("memfd_create");
    abort();
  }
  for (size_t done = 0; done < size;) {
    ssize_t w = pwrite(fd, data + done, size - done, (off_t)done);
    if (w <= 0) abort();
    done += (size_t)w;
  }
  if (fcntl(fd, F_ADD_SEALS, ALL_SEALS) != 0) abort();
  dlpx_segment *seg = NULL;
  int rc = dlpx_segment_attach_fd(fd, 0, &seg);
  close(fd);
  size_t n = 0;
  dlpx_tensor *kept = NULL;
  if (rc == 0) {
    n = exercise(seg, data, size);
    if (dlpx_segment_bytes(seg, DLPX_READ_COPY_ON_WRITE, &kept) != 0) abort();
  } else if (seg) {
    abort(); /* a failed attach hands nothing out */
  }
  dlpx_segment_close(seg);
  if (kept) { /* a view outlives the segment */
    uint64_t off = size - (uint64_t)dlpx_tensor_nbytes(kept);
    expect(kept, data + off, size - off, "a view after dlpx_segment_close");
    dlpx_tensor_free(kept);
  }

  /* (b) the same image through dlpx_segment_build and dlpx_segment_seal */
  if (size >= 8 && (data[size - 1] & 3) == 3) {
    void *p = NULL;
    dlpx_segment *b = NULL;
    if (dlpx_segment_build(NULL, size, &p, &b) != 0) abort();
    memcpy(p, data, size);
    int brc = dlpx_segment_seal(b);
    if ((brc == 0) != (rc == 0)) {
      fprintf(stderr, "fuzz_shm: attach gave %d, build and seal %d\n", rc, brc);
      abort();
    }
    if (brc == 0 && exercise(b, data, size) != n) abort();
    dlpx_tensor *t = NULL;
    if (brc != 0 && dlpx_segment_tensor(b, 0, 0, &t) != DLPX_ESTATE) abort();
    dlpx_segment_close(b);
  }
}

static void fuzz_messages(const uint8_t *data, size_t size) {
  char id[DLPX_SEGMENT_ID_LEN + 1];
  for (int k = 0; k < 2; k++) {
    size_t len = k ? (size < DLPX__SHM_REQUEST_LEN ? size : DLPX__SHM_REQUEST_LEN) : size;
    memset(id, 'x', sizeof id);
    if (dlpx__shm_parse_request(data, len, id) == 0) {
      if (len != DLPX__SHM_REQUEST_LEN || memcmp(data, "DLPXSHM1", 8) ||
          memcmp(id, data + 8, DLPX_SEGMENT_ID_LEN) || id[DLPX_SEGMENT_ID_LEN] != '\0')
        abort();
      for (int i = 0; i < DLPX_SEGMENT_ID_LEN; i++)
        if (!strchr("0123456789abcdef", id[i])) abort();
    }
    int32_t status = -7;
    size_t rlen = k ? (size < DLPX__SHM_REPLY_LEN ? size : DLPX__SHM_REPLY_LEN) : size;
    if (dlpx__shm_parse_reply(data, rlen, &status) == 0 &&
        (rlen != DLPX__SHM_REPLY_LEN || memcmp(data, "DLPXSHM1", 8) ||
         (status != DLPX__SHM_FOUND && status != DLPX__SHM_NOT_FOUND)))
      abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int fds0 = -1;
  static unsigned runs;
  if (fds0 < 0) fds0 = count_fds();
  fuzz_image(data, size);
  fuzz_messages(data, size);
  if (++runs % 256 == 0 && count_fds() != fds0) {
    fprintf(stderr, "fuzz_shm: %d memfds and sockets open, %d at the start\n", count_fds(),
            fds0);
    abort();
  }
  return 0;
}
