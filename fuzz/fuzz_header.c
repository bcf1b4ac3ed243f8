/* fuzz_header.c - libFuzzer target for the parsers of outside data: the
 * safetensors header (dlpx_st_header_parse, with the "dlpx.checksums"
 * metadata) and files opened for loading (dlpx_file_open and every read
 * path).  Built and run by scripts/fuzz.sh with
 * -fsanitize=fuzzer,address,undefined; LeakSanitizer is on, so a leak on
 * any path (an error path included) is a finding.
 *
 * Each input is used twice:
 *  (a) as a whole safetensors file: written to one memfd (reused, truncated
 *      for each input) and opened through /proc/self/fd/N; if it opens,
 *      every tensor is read (plain, verified, O_DIRECT), mapped (verified,
 *      and copy on write), read into a strided tensor, read in subranges
 *      (one with O_DIRECT into congruent memory) and in slices, and the
 *      header and its metadata are walked; one input in 16 has the file
 *      shrink after it was opened;
 *  (b) straight to dlpx_st_header_parse, with the header length N taken
 *      from the first 8 bytes (little-endian): when N fits in the input,
 *      the N bytes after them with the rest as the data length, as a file
 *      would be read; otherwise all the bytes after them as the header and
 *      N itself as the data length, so that headers describing large
 *      tensors (many checksum chunks, offsets near 2^63) are reached
 *      without inputs of that size.
 * Every text parsed as JSON on the way (the header bytes of (b), the
 * whole input, the metadata values of a parsed header, "dlpx.checksums"
 * among them) is also parsed by jansson, the parser src/io/json.c
 * replaced: they must agree on accept or reject and on the value tree
 * (tests/json_oracle.h), else the target aborts.
 * Whatever is read successfully is compared with the input's own bytes
 * (slices with the same index applied to the whole tensor in memory), so
 * a wrong read is a finding too.  The subranges and the slice are taken
 * from the last bytes of the input (usually the file's data), so that
 * mutations explore them. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <dlpx/dlpx.h>
#include <dlpx/files.h>

#include "../tests/json_oracle.h"

static int memfd = -1;
static char memfd_path[64];

/* A byte of the input counted from its end (0 when too short). */
static uint8_t tail_byte(const uint8_t *data, size_t size, size_t k) {
  return k < size ? data[size - 1 - k] : 0;
}

/* A small signed value in [-4, 11] from one byte. */
static int64_t small(uint8_t b) { return (int64_t)(b & 15) - 4; }

/* Aborts when json.c and jansson disagree about the |len| bytes at |text|. */
static void differential(const char *text, size_t len) {
  const char *d = json_oracle_check(text, len, NULL);
  if (d) {
    fprintf(stderr, "fuzz_header: json.c and jansson disagree: %s\n", d);
    abort();
  }
}

static void walk_header(const dlpx_st_header *h) {
  size_t n = dlpx_st_header_count(h);
  for (size_t i = 0; i < n; i++) {
    const dlpx_st_entry *e = dlpx_st_header_entry(h, i);
    if (!e) abort(); /* in range: must exist */
    size_t j;
    if (dlpx_st_header_find(h, e->name, &j) != 0 || j != i) abort(); /* names are distinct */
    const char *dn = dlpx_st_dtype_name(e->dtype);
    DLDataType back;
    if (!dn || dlpx_st_dtype_parse(dn, &back) != 0) abort(); /* parsed dtypes have names */
    if (e->begin > e->end) abort();
    if (i > 0 && dlpx_st_header_entry(h, i - 1)->end != e->begin) abort(); /* no gaps */
    volatile uint64_t sum = 0;
    for (int32_t d = 0; d < e->ndim; d++) sum += (uint64_t)e->shape[d];
    (void)sum;
    uint64_t chunk = 0;
    size_t count = 0;
    const uint64_t *hashes = NULL;
    if (dlpx_st_header_checksums(h, i, &chunk, &count, &hashes)) {
      uint64_t nbytes = e->end - e->begin;
      if (chunk == 0 || count != (size_t)((nbytes + chunk - 1) / chunk)) abort();
      volatile uint64_t x = 0;
      for (size_t c = 0; c < count; c++) x ^= hashes[c];
      (void)x;
    }
  }
  if (dlpx_st_header_entry(h, n) != NULL) abort();
  size_t nm = dlpx_st_header_metadata_count(h);
  for (size_t i = 0; i < nm; i++) {
    const char *k = NULL, *v = NULL;
    if (dlpx_st_header_metadata(h, i, &k, &v) != 0 || !k || !v) abort();
    volatile size_t len = strlen(k) + strlen(v);
    (void)len;
    differential(v, strlen(v));
  }
  const char *k, *v;
  if (dlpx_st_header_metadata(h, nm, &k, &v) == 0) abort();
  size_t j;
  (void)dlpx_st_header_find(h, "", &j);
  (void)dlpx_st_header_find(h, "__metadata__", &j);
}

static void touch(const dlpx_tensor *t) {
  if (!t) return;
  volatile int64_t x = dlpx_tensor_numel(t) + dlpx_tensor_nbytes(t);
  (void)x;
}

/* Aborts unless the elements of |t| are the |len| bytes at |want| in C
 * order (a strided |t| is copied to C order first). */
static void expect(const dlpx_tensor *t, const void *want, uint64_t len, const char *what) {
  dlpx_tensor *c = NULL;
  if (dlpx_tensor_copy(t, 'C', &c) != 0) {
    fprintf(stderr, "fuzz_header: %s: cannot copy the result: %s\n", what, dlpx_last_error());
    abort();
  }
  if ((uint64_t)dlpx_tensor_nbytes(c) != len ||
      (len && memcmp(dlpx_tensor_data(c), want, (size_t)len) != 0)) {
    fprintf(stderr, "fuzz_header: %s: the bytes differ from the file's\n", what);
    abort();
  }
  dlpx_tensor_free(c);
}

/* Aborts when a read of bytes [a, b) of tensor |e| succeeded although
 * the file was cut at |avail| bytes before them. */
static void check_cut(const dlpx_file *f, const dlpx_st_entry *e, uint64_t a, uint64_t b,
                      size_t avail, const char *what) {
  if (b > a && dlpx_file_data_offset(f) + e->begin + b > avail) {
    fprintf(stderr, "fuzz_header: %s succeeded past the end of a file that shrank\n", what);
    abort();
  }
}

/* |avail|: the size of the file now (less than |size| when it shrank after
 * it was opened). */
static void exercise_tensor(dlpx_file *f, size_t i, const dlpx_st_entry *e, const uint8_t *data,
                            size_t size, size_t avail) {
  uint64_t nbytes = e->end - e->begin;
  /* the tensor's bytes in the input */
  const uint8_t *bytes = data + dlpx_file_data_offset(f) + e->begin;
  if (dlpx_file_data_offset(f) + e->end > size) abort(); /* validated against the size */
  dlpx_tensor *t = NULL, *whole = NULL;
  /* the reference for the slices: the input's bytes as a tensor */
  if (dlpx_tensor_wrap((void *)(uintptr_t)bytes, (DLDevice){kDLCPU, 0}, e->dtype, e->ndim,
                       e->shape, NULL, DLPX_TENSOR_READONLY, NULL, NULL, &whole) != 0) {
    fprintf(stderr, "fuzz_header: a valid entry cannot be wrapped: %s\n", dlpx_last_error());
    abort();
  }

  /* whole: plain, verified, and through the O_DIRECT path (or its fallback) */
  static const uint32_t read_flags[3] = {0, DLPX_READ_VERIFY, DLPX_READ_VERIFY | DLPX_READ_DIRECT};
  for (int k = 0; k < 3; k++) {
    if (dlpx_file_read(f, i, read_flags[k], &t) == 0) {
      expect(t, bytes, nbytes, "dlpx_file_read");
      check_cut(f, e, 0, nbytes, avail, "dlpx_file_read");
    }
    dlpx_tensor_free(t);
    t = NULL;
  }

  /* mapped, verified; and copy on write, written to (refused once the
   * file shrank) */
  if (dlpx_file_map(f, i, DLPX_READ_VERIFY, &t) == 0) {
    expect(t, bytes, nbytes, "dlpx_file_map");
    if (avail < size) {
      fprintf(stderr, "fuzz_header: dlpx_file_map mapped a file that shrank\n");
      abort();
    }
  }
  dlpx_tensor_free(t);
  t = NULL;
  if (dlpx_file_map(f, i, DLPX_READ_COPY_ON_WRITE, &t) == 0 && nbytes)
    *(volatile char *)dlpx_tensor_data(t) = 1;
  dlpx_tensor_free(t);
  t = NULL;

  /* a subrange */
  if (nbytes) {
    uint64_t a = tail_byte(data, size, 0) % (nbytes + 1);
    uint64_t b = a + tail_byte(data, size, 1) % (nbytes - a + 1);
    char *buf = malloc(b > a ? (size_t)(b - a) : 1);
    if (buf && dlpx_file_read_range(f, i, a, b, buf, DLPX_READ_VERIFY) == 0) {
      if (memcmp(buf, bytes + a, (size_t)(b - a)) != 0) {
        fprintf(stderr, "fuzz_header: dlpx_file_read_range: the bytes differ from the file's\n");
        abort();
      }
      check_cut(f, e, a, b, avail, "dlpx_file_read_range");
    }
    free(buf);
    /* a long one with O_DIRECT into memory congruent with the file (the
     * path that reads straight into |dst|) */
    b = nbytes - tail_byte(data, size, 1) % (nbytes - a + 1);
    uint64_t off = dlpx_file_data_offset(f) + e->begin + a;
    void *page = NULL;
    if (posix_memalign(&page, 4096, (size_t)(b - a) + 4096) == 0) {
      char *dst = (char *)page + off % 4096;
      if (dlpx_file_read_range(f, i, a, b, dst, DLPX_READ_VERIFY | DLPX_READ_DIRECT) == 0) {
        if (memcmp(dst, bytes + a, (size_t)(b - a)) != 0) {
          fprintf(stderr, "fuzz_header: O_DIRECT dlpx_file_read_range: the bytes differ\n");
          abort();
        }
        check_cut(f, e, a, b, avail, "O_DIRECT dlpx_file_read_range");
      }
      free(page);
    }
  }
  char byte;
  if (dlpx_file_read_range(f, i, nbytes, nbytes + 1, &byte, 0) == 0) abort(); /* out of range */

  /* a slice: up to two items from the input's last bytes, compared with
   * the same index of the whole tensor */
  uint8_t s0 = tail_byte(data, size, 2), s1 = tail_byte(data, size, 3),
          s2 = tail_byte(data, size, 4), s3 = tail_byte(data, size, 5);
  dlpx_index items[2];
  items[0] = (dlpx_index){.kind = DLPX_INDEX_SLICE,
                          .start = small(s0),
                          .stop = (s1 & 16) ? DLPX_NONE : small(s1),
                          .step = (s0 & 16) ? -1 - (s0 >> 5 & 3) : 1 + (s0 >> 5 & 3)};
  items[1] = (dlpx_index){.kind = s2 & 3, .start = small(s3), .stop = DLPX_NONE,
                          .step = 1 + (s2 >> 2 & 3)};
  int32_t nitems = e->ndim == 0 ? 0 : (s2 & 128) ? 2 : 1;
  /* a whole column (the short-run path, from the mapping) */
  dlpx_index col[2] = {{.kind = DLPX_INDEX_SLICE, .start = DLPX_NONE, .stop = DLPX_NONE, .step = 1},
                       {.kind = DLPX_INDEX_INT, .start = 0}};
  for (int pass = 0; pass < 2; pass++) {
    const dlpx_index *it = pass ? col : items;
    int32_t nit = pass ? 2 : nitems;
    if (pass && e->ndim < 2) break;
    if (dlpx_file_read_slice(f, i, nit, it, pass ? 0 : DLPX_READ_VERIFY, &t) == 0) {
      dlpx_tensor *want = NULL, *wantc = NULL;
      if (dlpx_tensor_index(whole, nit, it, &want) != 0 ||
          dlpx_tensor_copy(want, 'C', &wantc) != 0) {
        fprintf(stderr, "fuzz_header: a slice was read but cannot be made in memory: %s\n",
                dlpx_last_error());
        abort();
      }
      expect(t, dlpx_tensor_data(wantc), (uint64_t)dlpx_tensor_nbytes(wantc),
             "dlpx_file_read_slice");
      dlpx_tensor_free(want);
      dlpx_tensor_free(wantc);
    }
    dlpx_tensor_free(t);
    t = NULL;
  }

  /* into a strided tensor: every other row of a tensor twice as tall */
  if (e->ndim >= 1 && e->shape[0] > 0 && e->shape[0] <= INT64_MAX / 2 && nbytes <= 65536) {
    int64_t shape[DLPX_MAX_NDIM];
    memcpy(shape, e->shape, sizeof(int64_t) * (size_t)e->ndim);
    shape[0] *= 2;
    dlpx_tensor *big = NULL, *view = NULL;
    if (dlpx_tensor_empty(e->dtype, e->ndim, shape, &big) == 0 &&
        dlpx_tensor_slice(big, 0, 0, DLPX_NONE, 2, &view) == 0 &&
        dlpx_file_read_into(f, i, view, DLPX_READ_VERIFY) == 0) {
      expect(view, bytes, nbytes, "dlpx_file_read_into (strided)");
      check_cut(f, e, 0, nbytes, avail, "dlpx_file_read_into");
    }
    dlpx_tensor_free(view);
    dlpx_tensor_free(big);
  }
  dlpx_tensor_free(whole);
}

static void fuzz_file(const uint8_t *data, size_t size) {
  if (memfd < 0) {
    memfd = memfd_create("dlpx-fuzz", MFD_CLOEXEC);
    if (memfd < 0) {
      perror("memfd_create");
      abort();
    }
    snprintf(memfd_path, sizeof memfd_path, "/proc/self/fd/%d", memfd);
  }
  if (ftruncate(memfd, 0) != 0 || ftruncate(memfd, (off_t)size) != 0) abort();
  for (size_t done = 0; done < size;) {
    ssize_t w = pwrite(memfd, data + done, size - done, (off_t)done);
    if (w <= 0) abort();
    done += (size_t)w;
  }

  dlpx_file *f = NULL;
  if (dlpx_file_open(memfd_path, DLPX_FILE_DIRECT, &f) != 0) {
    if (f) abort(); /* a failed open hands nothing out */
    return;
  }
  const dlpx_st_header *h = dlpx_file_header(f);
  if (!h || dlpx_file_data_offset(f) < 10 || dlpx_file_data_offset(f) > size) abort();
  walk_header(h);
  /* one input in 16 (by a byte near its end): the file shrinks after it
   * was opened; reads past the cut must fail (DLPX_EIO), mapping is refused */
  size_t avail = size;
  if ((tail_byte(data, size, 6) & 15) == 15) {
    avail = 8 + (size_t)tail_byte(data, size, 7) * 61 % (size - 8);
    if (ftruncate(memfd, (off_t)avail) != 0) abort();
  }
  size_t n = dlpx_st_header_count(h);
  for (size_t i = 0; i < n; i++)
    exercise_tensor(f, i, dlpx_st_header_entry(h, i), data, size, avail);
  dlpx_tensor *t = NULL;
  if (dlpx_file_read(f, n, 0, &t) == 0 || t) abort(); /* out of range */

  /* every tensor in one block, read in one call (small tensors' path) */
  if (n && n <= 4096) {
    size_t *idx = malloc(n * sizeof *idx);
    dlpx_tensor **ts = calloc(n, sizeof *ts);
    void **dst = calloc(n, sizeof *dst);
    if (!idx || !ts || !dst) abort();
    for (size_t i = 0; i < n; i++) idx[n - 1 - i] = i; /* any order */
    if (dlpx_file_empty_many(f, n, idx, ts) == 0) {
      for (size_t i = 0; i < n; i++) dst[i] = dlpx_tensor_data(ts[i]);
      if (dlpx_file_read_many(f, n, idx, dst, DLPX_READ_VERIFY) == 0) {
        for (size_t i = 0; i < n; i++) {
          const dlpx_st_entry *e = dlpx_st_header_entry(h, idx[i]);
          check_cut(f, e, 0, e->end - e->begin, avail, "dlpx_file_read_many");
          if (avail == size)
            expect(ts[i], data + dlpx_file_data_offset(f) + e->begin, e->end - e->begin,
                   "dlpx_file_read_many");
        }
      }
      for (size_t i = 0; i < n; i++) dlpx_tensor_free(ts[i]);
    } else {
      for (size_t i = 0; i < n; i++)
        if (ts[i]) abort(); /* a failure makes nothing */
    }
    free(idx);
    free(ts);
    free(dst);
  }

  /* a mapping outlives the file */
  if (n && dlpx_file_map(f, 0, 0, &t) != 0) t = NULL;
  dlpx_file_close(f);
  touch(t);
  dlpx_tensor_free(t);
}

static void fuzz_parse(const uint8_t *data, size_t size) {
  if (size < 8) return;
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = n << 8 | data[i];
  const char *json = (const char *)data + 8;
  size_t len = size - 8;
  uint64_t data_len = n;
  if (n <= len) {
    data_len = len - n;
    len = (size_t)n;
  }
  differential(json, len);
  if (len != size - 8) differential(json, size - 8);
  differential((const char *)data, size);
  dlpx_st_header *h = NULL;
  if (dlpx_st_header_parse(json, len, data_len, &h) == 0) {
    walk_header(h);
    dlpx_st_header_free(h);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_file(data, size);
  fuzz_parse(data, size);
  return 0;
}
