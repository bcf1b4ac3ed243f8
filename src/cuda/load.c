/* load.c - tensor files straight into device memory through a ring of
 * pinned buffers.  The tensors are packed into one pooled device block
 * (256-byte aligned each) and cut into pieces; consecutive pieces whose
 * span fits a buffer form a batch.  Reader threads take batches in turn:
 * each waits until the copy out of its next buffer has finished (an event),
 * preads the batch's pieces into the buffer at their offsets in the block,
 * and queues one host-to-device copy of the buffer on the stream.  The
 * host never touches pageable memory under a copy, and reads of one
 * thread overlap the copies of the others. */
#include "config.h"

#include <dlpx/files.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../glibc_compat.h"
#include "cuda_int.h"

#define ALIGN 256
#define DEFAULT_BUFFER ((size_t)16 << 20)
#define MAX_THREADS 8

typedef struct {
  size_t index;       /* the tensor */
  uint64_t begin, end; /* bytes of the tensor */
  uint64_t dev;       /* where byte |begin| goes in the block */
} piece;

typedef struct {
  size_t first, count; /* pieces */
  uint64_t lo, hi;     /* the span in the block */
} batch;

typedef struct load_job load_job;

typedef struct {
  load_job *job;
  void *buf[4];
  CUevent ev[4];
  pthread_t thread;
  bool started;
} reader;

struct load_job {
  const dlpx__cu_api *cu;
  int device;
  dlpx_file *file;
  uint32_t flags;
  CUstream stream;
  char *block;
  piece *pieces;
  batch *batches;
  size_t nbatches;
  uint32_t nbuf;
  size_t buffer_bytes;
  atomic_size_t next;  /* the next batch to take */
  atomic_int failed;   /* the first error code, 0 while none */
  pthread_mutex_t lock; /* for the error message */
  char message[DLPX__MSG_MAX];
};

static void job_fail(load_job *j, int code) {
  int zero = 0;
  if (atomic_compare_exchange_strong(&j->failed, &zero, code)) {
    pthread_mutex_lock(&j->lock);
    snprintf(j->message, sizeof j->message, "%s", dlpx_last_error());
    pthread_mutex_unlock(&j->lock);
  }
}

static void *reader_main(void *arg) {
  reader *r = arg;
  load_job *j = r->job;
  const dlpx__cu_api *cu = j->cu;
  const dlpx__cu_api *entered;
  if (dlpx__cu_enter(j->device, &entered)) {
    job_fail(j, DLPX_ECUDA);
    return NULL;
  }
  uint32_t slot = 0;
  for (;;) {
    if (atomic_load(&j->failed)) break;
    size_t b = atomic_fetch_add(&j->next, 1);
    if (b >= j->nbatches) break;
    const batch *bt = &j->batches[b];
    CUresult cr = cu->EventSynchronize(r->ev[slot]); /* its last copy is done */
    if (cr != CUDA_SUCCESS) {
      job_fail(j, dlpx__cu_fail(cr, "waiting for a staging buffer"));
      break;
    }
    char *buf = r->buf[slot];
    int rc = 0;
    for (size_t i = bt->first; i < bt->first + bt->count && !rc; i++) {
      const piece *p = &j->pieces[i];
      rc = dlpx_file_read_range(j->file, p->index, p->begin, p->end, buf + (p->dev - bt->lo),
                                j->flags);
    }
    if (rc) {
      job_fail(j, rc);
      break;
    }
    cr = cu->MemcpyAsync((CUdeviceptr)(j->block + bt->lo), (CUdeviceptr)buf,
                         (size_t)(bt->hi - bt->lo), j->stream);
    if (cr == CUDA_SUCCESS) cr = cu->EventRecord(r->ev[slot], j->stream);
    if (cr != CUDA_SUCCESS) {
      job_fail(j, dlpx__cu_fail(cr, "queueing a copy to the device"));
      break;
    }
    slot = (slot + 1) % j->nbuf;
  }
  dlpx__cu_leave();
  return NULL;
}

/* Lays the tensors out in the block and cuts them into pieces and
 * batches.  Returns the block's size in *size. */
static int plan(load_job *j, const dlpx_st_header *h, size_t n, const size_t *indices,
                uint64_t *offsets, uint64_t *size) {
  uint64_t at = 0, piece_max = j->buffer_bytes;
  size_t np = 0;
  for (size_t i = 0; i < n; i++) {
    const dlpx_st_entry *e = dlpx_st_header_entry(h, indices[i]);
    if (!e)
      return dlpx__fail(DLPX_EINDEX, "tensor index %zu is out of range (%zu tensors)",
                        indices[i], dlpx_st_header_count(h));
    uint64_t len = e->end - e->begin;
    offsets[i] = at;
    at += (len + ALIGN - 1) / ALIGN * ALIGN;
    np += len ? (size_t)((len + piece_max - 1) / piece_max) : 0;
  }
  *size = at;
  j->pieces = malloc((np ? np : 1) * sizeof *j->pieces);
  j->batches = malloc((np ? np : 1) * sizeof *j->batches);
  if (!j->pieces || !j->batches) return dlpx__fail(DLPX_ENOMEM, "cannot plan the load");
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const dlpx_st_entry *e = dlpx_st_header_entry(h, indices[i]);
    uint64_t len = e->end - e->begin;
    for (uint64_t b = 0; b < len; b += piece_max) {
      uint64_t end = b + piece_max < len ? b + piece_max : len;
      j->pieces[k++] = (piece){indices[i], b, end, offsets[i] + b};
    }
  }
  size_t nb = 0;
  for (size_t i = 0; i < k;) { /* greedy: pieces in block order while the span fits */
    batch bt = {i, 0, j->pieces[i].dev, 0};
    while (i < k && j->pieces[i].dev + (j->pieces[i].end - j->pieces[i].begin) - bt.lo <=
                        j->buffer_bytes) {
      bt.hi = j->pieces[i].dev + (j->pieces[i].end - j->pieces[i].begin);
      bt.count++;
      i++;
    }
    j->batches[nb++] = bt;
  }
  j->nbatches = nb;
  return 0;
}

/* The staging buffer size: |want|, or the file's checksum chunk when that
 * is bigger (a piece must hold whole chunks to be verified). */
static size_t buffer_size(const dlpx_st_header *h, size_t n, const size_t *indices, size_t want) {
  for (size_t i = 0; i < n; i++) {
    uint64_t chunk;
    size_t count;
    const uint64_t *hashes;
    if (dlpx_st_header_checksums(h, indices[i], &chunk, &count, &hashes) && chunk) {
      if (chunk > want) return (size_t)chunk;
      return (size_t)(want / chunk * chunk);
    }
  }
  return want;
}

/* The buffers go back to the pinned pool behind an event on the stream
 * (reused only once their copies are done); the host does not wait. */
static void free_readers(load_job *j, reader *rd, uint32_t nthreads, uintptr_t stream) {
  for (uint32_t t = 0; t < nthreads; t++) {
    for (uint32_t s = 0; s < j->nbuf; s++) {
      if (rd[t].buf[s]) (void)dlpx__pool_free(DLPX__POOL_PINNED, 0, rd[t].buf[s], stream);
      if (rd[t].ev[s]) dlpx__cu_event_put(j->cu, j->device, rd[t].ev[s]);
    }
  }
}

int dlpx_cuda_file_load(dlpx_file *file, size_t n, const size_t *indices, DLDevice device,
                        uintptr_t stream, const dlpx_cuda_load_options *options, uint32_t flags,
                        dlpx_tensor **out) {
  if (!file || (n && (!indices || !out)))
    return dlpx__fail(DLPX_EINVAL, "file, indices or out is NULL");
  if (flags & ~(uint32_t)DLPX_READ_VERIFY)
    return dlpx__fail(DLPX_EINVAL, "unknown flags 0x%x (DLPX_READ_VERIFY only)", flags);
  if (device.device_type != kDLCUDA && device.device_type != kDLCUDAManaged)
    return dlpx__fail(DLPX_EDEVICE, "loading to device type %d: kDLCUDA or kDLCUDAManaged",
                      (int)device.device_type);
  if (n == 0) return 0;
  if (stream == UINTPTR_MAX) stream = 0;
  dlpx_cuda_load_options o = options ? *options : (dlpx_cuda_load_options){0, 0, 0};
  if (o.buffers > 4) return dlpx__fail(DLPX_EINVAL, "at most 4 buffers per reader");
  const dlpx_st_header *h = dlpx_file_header(file);
  load_job j;
  memset(&j, 0, sizeof j);
  j.device = device.device_id;
  j.file = file;
  j.flags = flags;
  j.stream = dlpx__cu_stream(stream);
  j.nbuf = o.buffers ? o.buffers : 2;
  j.buffer_bytes = o.buffer_bytes ? o.buffer_bytes : DEFAULT_BUFFER;
  if (flags & DLPX_READ_VERIFY) j.buffer_bytes = buffer_size(h, n, indices, j.buffer_bytes);
  atomic_init(&j.next, 0);
  atomic_init(&j.failed, 0);
  pthread_mutex_init(&j.lock, NULL);
  uint64_t *offsets = malloc(n * sizeof *offsets);
  dlpx_storage *block = NULL;
  reader *rd = NULL;
  uint32_t nthreads = 0;
  uint64_t size = 0;
  int rc = offsets ? 0 : dlpx__fail(DLPX_ENOMEM, "cannot plan the load");
  if (!rc) rc = plan(&j, h, n, indices, offsets, &size);
  if (!rc) rc = dlpx_cuda_storage_alloc(device, (size_t)size, stream, &block);
  const dlpx__cu_api *cu = NULL;
  if (!rc) rc = dlpx__cu_enter(j.device, &cu);
  if (!rc) {
    j.cu = cu;
    j.block = dlpx_storage_data(block);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    nthreads = o.threads ? o.threads : (uint32_t)(cpus > 0 ? cpus : 1);
    if (nthreads > MAX_THREADS && !o.threads) nthreads = MAX_THREADS;
    if (nthreads > j.nbatches) nthreads = (uint32_t)(j.nbatches ? j.nbatches : 1);
    rd = calloc(nthreads, sizeof *rd);
    if (!rd) rc = dlpx__fail(DLPX_ENOMEM, "cannot allocate the readers");
    for (uint32_t t = 0; t < nthreads && !rc; t++) {
      rd[t].job = &j;
      for (uint32_t s = 0; s < j.nbuf && !rc; s++) {
        rc = dlpx__pool_alloc(DLPX__POOL_PINNED, 0, j.buffer_bytes, stream, &rd[t].buf[s]);
        if (!rc) rc = dlpx__cu_event_get(cu, j.device, &rd[t].ev[s]);
      }
    }
    for (uint32_t t = 0; t < nthreads && !rc; t++) {
      if (pthread_create(&rd[t].thread, NULL, reader_main, &rd[t]) != 0)
        rc = dlpx__fail(DLPX_ENOMEM, "cannot start a reader thread");
      else
        rd[t].started = true;
    }
    if (rc) job_fail(&j, rc); /* stops the readers already running */
    for (uint32_t t = 0; t < nthreads; t++)
      if (rd && rd[t].started) pthread_join(rd[t].thread, NULL);
    if (!rc && atomic_load(&j.failed)) {
      rc = atomic_load(&j.failed);
      dlpx__fail(rc, "%s", j.message);
    }
    if (rd) free_readers(&j, rd, nthreads, stream);
    dlpx__cu_leave();
  }
  for (size_t i = 0; i < n && !rc; i++) {
    const dlpx_st_entry *e = dlpx_st_header_entry(h, indices[i]);
    rc = dlpx_tensor_from_storage(block, e->dtype, e->ndim, e->shape, NULL,
                                  (int64_t)offsets[i], 0, &out[i]);
    if (rc)
      for (size_t k = 0; k < i; k++) dlpx_tensor_free(out[k]);
  }
  dlpx_storage_release(block);
  free(rd);
  free(offsets);
  free(j.pieces);
  free(j.batches);
  pthread_mutex_destroy(&j.lock);
  return rc;
}
