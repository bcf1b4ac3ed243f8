/* server.c - passing segment descriptors between processes: a server
 * thread per process (started by the first dlpx_segment_publish) answers
 * fetches on a Unix stream socket in the abstract namespace, one short
 * connection per fetch, sending the descriptor of the segment asked for
 * with SCM_RIGHTS.  Fetches first try a shortcut that asks nothing of the
 * server: the descriptor the server holds, opened through /proc (see
 * fetch_proc); the socket decides whenever the shortcut does not work.
 *
 * Whoever can reach the socket may connect, so the server treats every
 * byte as hostile: a request is exactly DLPX__SHM_REQUEST_LEN bytes (magic,
 * then the id), anything else closes the connection unanswered, and each
 * connection has 1 s to send its request and take its answer, so a client
 * that stalls holds the server for at most that.  The 128-bit random id is
 * what grants a segment: the address alone gives nothing.
 *
 * The table of published segments holds a duplicate descriptor of each
 * (its own, closed by unpublish under the lock), so a fetch racing with
 * dlpx_segment_close never sends a descriptor that was closed or reused.
 * After fork the child has no server thread: its copy of the state is
 * dropped (pthread_atfork) and its first publish starts its own server. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <time.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "shm.h"

#include "../glibc_compat.h"

#define IO_TIMEOUT_S 1          /* per connection, on the server's side */
#define DEFAULT_TIMEOUT_MS 5000 /* dlpx_segment_fetch with timeout_ms 0 */
#define MAX_FDS 4               /* room for descriptors in a reply (one is right) */

typedef struct {
  const dlpx_segment *seg;
  char id[DLPX_SEGMENT_ID_LEN + 1];
  int fd; /* our own duplicate */
  unsigned long long ino; /* the memfd's inode number */
} entry;

static struct {
  pthread_mutex_t lock;
  int listen_fd; /* -1 until the server runs (in this process) */
  char address[DLPX_SEGMENT_ADDRESS_MAX];
  entry *entries;
  size_t count, cap;
} srv = {PTHREAD_MUTEX_INITIALIZER, -1, "", NULL, 0, 0};

/* ---- messages ------------------------------------------------------------------------ */

int dlpx__shm_parse_request(const void *buf, size_t len, char id[DLPX_SEGMENT_ID_LEN + 1]) {
  const char *p = buf;
  if (!p || len != DLPX__SHM_REQUEST_LEN || memcmp(p, DLPX__SHM_MAGIC, DLPX__SHM_MAGIC_LEN))
    return -1;
  if (!dlpx__segment_id_ok(p + DLPX__SHM_MAGIC_LEN, DLPX_SEGMENT_ID_LEN)) return -1;
  memcpy(id, p + DLPX__SHM_MAGIC_LEN, DLPX_SEGMENT_ID_LEN);
  id[DLPX_SEGMENT_ID_LEN] = '\0';
  return 0;
}

int dlpx__shm_parse_reply(const void *buf, size_t len, int32_t *status) {
  const unsigned char *p = buf;
  if (!p || len != DLPX__SHM_REPLY_LEN || memcmp(p, DLPX__SHM_MAGIC, DLPX__SHM_MAGIC_LEN))
    return -1;
  uint32_t s = 0;
  for (int i = 3; i >= 0; i--) s = s << 8 | p[DLPX__SHM_MAGIC_LEN + i];
  if (s != DLPX__SHM_FOUND && s != DLPX__SHM_NOT_FOUND) return -1;
  *status = (int32_t)s;
  return 0;
}

static void put_reply(unsigned char *buf, int32_t status) {
  memcpy(buf, DLPX__SHM_MAGIC, DLPX__SHM_MAGIC_LEN);
  for (int i = 0; i < 4; i++) buf[DLPX__SHM_MAGIC_LEN + i] = (unsigned char)((uint32_t)status >> (8 * i));
}

/* ---- the server ------------------------------------------------------------------------ */

static void set_timeouts(int s, uint32_t ms) {
  struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* One fetch: the request, then the answer (with the descriptor when found). */
static void serve_one(int c) {
  set_timeouts(c, IO_TIMEOUT_S * 1000);
  /* One read of the whole request: with MSG_WAITALL the receive timeout
   * bounds the call, not each piece of a client that trickles bytes.
   * Descriptors a client may send are discarded (no control buffer). */
  unsigned char req[DLPX__SHM_REQUEST_LEN];
  ssize_t r = recv(c, req, sizeof req, MSG_WAITALL);
  char id[DLPX_SEGMENT_ID_LEN + 1];
  if (r < 0 || dlpx__shm_parse_request(req, (size_t)r, id) != 0) return;
  int fd = -1;
  bool found = false;
  pthread_mutex_lock(&srv.lock);
  for (size_t i = 0; i < srv.count && !found; i++)
    if (!strcmp(srv.entries[i].id, id)) {
      found = true;
      /* A descriptor of our own for the send: unpublish may close the
       * table's meanwhile. */
      fd = fcntl(srv.entries[i].fd, F_DUPFD_CLOEXEC, 0);
    }
  pthread_mutex_unlock(&srv.lock);
  if (found && fd < 0) return; /* out of descriptors: the client sees the exchange fail */
  unsigned char reply[DLPX__SHM_REPLY_LEN];
  put_reply(reply, found ? DLPX__SHM_FOUND : DLPX__SHM_NOT_FOUND);
  struct iovec iov = {reply, sizeof reply};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } ctl;
  memset(&ctl, 0, sizeof ctl);
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (fd >= 0) {
    msg.msg_control = ctl.buf;
    msg.msg_controllen = sizeof ctl.buf;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof(int));
  }
  while (sendmsg(c, &msg, MSG_NOSIGNAL) < 0 && errno == EINTR) {
  }
  if (fd >= 0) close(fd);
}

static void *serve(void *arg) {
  int lfd = (int)(intptr_t)arg;
  for (;;) {
    int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        poll(NULL, 0, 10); /* out of resources: let some go, then answer again */
        continue;
      }
      return NULL; /* the socket is gone */
    }
    serve_one(c);
    close(c);
  }
}

/* Starts the server: the socket, then the thread.  Under srv.lock. */
static int start_server(void) {
  unsigned char rnd[8];
  char hex[17];
  int rc = dlpx__random(rnd, sizeof rnd);
  if (rc) return rc;
  dlpx__hex(rnd, sizeof rnd, hex);
  char name[64]; /* "dlpx.<pid>.<16 hex digits>" */
  int len = snprintf(name, sizeof name, "dlpx.%ld.%s", (long)getpid(), hex);
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path + 1, name, (size_t)len); /* sun_path[0] = 0: the abstract namespace */
  socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)len);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return dlpx__fail(DLPX_EIO, "segment server: socket failed: %s", strerror(errno));
  if (bind(fd, (struct sockaddr *)&sa, salen) != 0 || listen(fd, 128) != 0) {
    rc = dlpx__fail(DLPX_EIO, "segment server: cannot listen at @%s: %s", name, strerror(errno));
    close(fd);
    return rc;
  }
  /* The thread takes no signals (they are for the application's threads)
   * and is detached: it serves until the process ends.  sigprocmask is
   * the calling thread's mask in glibc (pthread_sigmask has a newer
   * symbol version). */
  pthread_attr_t attr;
  sigset_t all, old;
  sigfillset(&all);
  pthread_t tid;
  int err = pthread_attr_init(&attr);
  if (!err) {
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigprocmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&tid, &attr, serve, (void *)(intptr_t)fd);
    sigprocmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
  }
  if (err) {
    close(fd);
    return dlpx__fail(DLPX_EIO, "segment server: cannot start its thread: %s", strerror(err));
  }
  srv.listen_fd = fd;
  snprintf(srv.address, sizeof srv.address, "@%s", name);
  return 0;
}

/* fork: the lock is taken around it, so the child's copy is consistent;
 * the child has no server thread, so it drops the server's state (closing
 * its copies of the socket and of the table's descriptors). */
static void atfork_prepare(void) { pthread_mutex_lock(&srv.lock); }
static void atfork_parent(void) { pthread_mutex_unlock(&srv.lock); }
static void atfork_child(void) {
  if (srv.listen_fd >= 0) close(srv.listen_fd);
  srv.listen_fd = -1;
  srv.address[0] = '\0';
  for (size_t i = 0; i < srv.count; i++) close(srv.entries[i].fd);
  srv.count = 0;
  pthread_mutex_unlock(&srv.lock);
}

/* Registered when the library is loaded, not at the first publish: fork
 * runs the prepare handlers holding glibc's atfork lock, which
 * pthread_atfork takes too, so registering under srv.lock could deadlock
 * with a fork in another thread. */
__attribute__((constructor)) static void register_atfork(void) {
  pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

int dlpx_segment_publish(dlpx_segment *seg, char *address) {
  if (!seg || !address) return dlpx__fail(DLPX_EINVAL, "dlpx_segment_publish: NULL argument");
  if (seg->name)
    return dlpx__fail(DLPX_EINVAL,
                      "dlpx_segment_publish: segment \"%.200s\" is named: other processes open "
                      "it by its name",
                      seg->name);
  if (seg->state != DLPX__SEG_ATTACHED || !seg->sealed)
    return dlpx__fail(DLPX_EINVAL, "dlpx_segment_publish: the segment is not a sealed memfd%s",
                      seg->state == DLPX__SEG_BUILT ? " (seal it first)" : "");
  if (!seg->has_id)
    return dlpx__fail(DLPX_EINVAL, "dlpx_segment_publish: the segment carries no id");
  int rc = 0;
  pthread_mutex_lock(&srv.lock);
  if (srv.listen_fd < 0) rc = start_server();
  bool there = false;
  for (size_t i = 0; i < srv.count && !there; i++) there = srv.entries[i].seg == seg;
  if (!rc && !there) {
    if (srv.count == srv.cap) {
      size_t cap = srv.cap ? 2 * srv.cap : 16;
      entry *e = realloc(srv.entries, cap * sizeof *e);
      if (!e) rc = dlpx__fail(DLPX_ENOMEM, "no memory");
      else srv.entries = e, srv.cap = cap;
    }
    int fd = rc ? -1 : fcntl(seg->fd, F_DUPFD_CLOEXEC, 0);
    if (!rc && fd < 0)
      rc = dlpx__fail(DLPX_EIO, "dlpx_segment_publish: cannot duplicate the descriptor: %s",
                      strerror(errno));
    struct stat st;
    if (!rc && dlpx__fstat(fd, &st) != 0) {
      rc = dlpx__fail(DLPX_EIO, "dlpx_segment_publish: fstat failed: %s", strerror(errno));
      close(fd);
    }
    if (!rc) {
      entry *e = &srv.entries[srv.count++];
      e->seg = seg;
      e->fd = fd;
      e->ino = (unsigned long long)st.st_ino;
      memcpy(e->id, seg->id, sizeof e->id);
    }
  }
  for (size_t i = 0; !rc && i < srv.count; i++)
    if (srv.entries[i].seg == seg)
      snprintf(address, DLPX_SEGMENT_ADDRESS_MAX, "%.64s/%d.%llu", srv.address, srv.entries[i].fd,
               srv.entries[i].ino);
  pthread_mutex_unlock(&srv.lock);
  return rc;
}

void dlpx_segment_unpublish(dlpx_segment *seg) {
  if (!seg) return;
  pthread_mutex_lock(&srv.lock);
  for (size_t i = 0; i < srv.count; i++)
    if (srv.entries[i].seg == seg) {
      close(srv.entries[i].fd);
      srv.entries[i] = srv.entries[--srv.count];
      break;
    }
  pthread_mutex_unlock(&srv.lock);
}

/* ---- fetching ----------------------------------------------------------------------- */

/* An address is "@" and the socket's name in the abstract namespace,
 * then, from dlpx_segment_publish, "/<descriptor>.<inode>": the number of
 * the producer's own descriptor of the segment (its table's duplicate,
 * open while the segment is published) and the memfd's inode number.  The
 * socket's name is everything before the first '/'. */
static int check_address(const char *address, struct sockaddr_un *sa, socklen_t *salen) {
  size_t len = strnlen(address, DLPX_SEGMENT_ADDRESS_MAX);
  if (address[0] != '@' || len < 2 || len >= DLPX_SEGMENT_ADDRESS_MAX)
    return dlpx__fail(DLPX_EINVAL,
                      "dlpx_segment_fetch: \"%.120s\" is not a segment address (\"@\" and 1 to "
                      "%d printable characters)",
                      address, DLPX_SEGMENT_ADDRESS_MAX - 2);
  for (size_t i = 1; i < len; i++)
    if ((unsigned char)address[i] < 0x21 || (unsigned char)address[i] > 0x7e)
      return dlpx__fail(DLPX_EINVAL,
                        "dlpx_segment_fetch: the address has a character that is not printable "
                        "at %zu",
                        i);
  const char *slash = memchr(address, '/', len);
  if (slash) len = (size_t)(slash - address);
  if (len < 2)
    return dlpx__fail(DLPX_EINVAL, "dlpx_segment_fetch: \"%.120s\" names no socket", address);
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  memcpy(sa->sun_path + 1, address + 1, len - 1);
  *salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
  return 0;
}

/* Reads the reply, keeping every descriptor that comes with it (at most
 * MAX_FDS; the kernel drops and closes any more, and says so with
 * MSG_CTRUNC). */
static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads the reply, however the producer splits it, within |timeout_ms| in
 * all (a receive timeout alone would restart with every byte). */
static int read_reply(int s, unsigned char *buf, size_t *got, int *fds, int *nfds, bool *extra,
                      uint32_t timeout_ms) {
  *got = 0;
  int64_t deadline = now_ms() + timeout_ms;
  while (*got < DLPX__SHM_REPLY_LEN) {
    int64_t left = deadline - now_ms();
    if (left <= 0) return -EAGAIN;
    struct pollfd pfd = {.fd = s, .events = POLLIN};
    int pr = poll(&pfd, 1, (int)(left > INT32_MAX ? INT32_MAX : left));
    if (pr < 0 && errno == EINTR) continue;
    if (pr < 0) return -errno;
    if (pr == 0) return -EAGAIN;
    struct iovec iov = {buf + *got, DLPX__SHM_REPLY_LEN - *got};
    union {
      char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
      struct cmsghdr align;
    } ctl;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                         .msg_controllen = sizeof ctl.buf};
    ssize_t r = recvmsg(s, &msg, MSG_CMSG_CLOEXEC);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -errno;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
      if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
      size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t j = 0; j < k; j++) {
        int fd;
        memcpy(&fd, CMSG_DATA(cm) + j * sizeof(int), sizeof fd);
        if (*nfds < MAX_FDS) fds[(*nfds)++] = fd;
        else close(fd), *extra = true;
      }
    }
    if (msg.msg_flags & MSG_CTRUNC) *extra = true;
    if (r == 0) break;
    *got += (size_t)r;
  }
  return 0;
}

/* Digits [p, end) as a number below |max|, or -1. */
static long long number(const char *p, const char *end, long long max) {
  if (p >= end || end - p > 19) return -1;
  long long v = 0;
  for (; p < end; p++) {
    if (*p < '0' || *p > '9') return -1;
    v = v * 10 + (*p - '0');
    if (v > max) return -1;
  }
  return v;
}

/* The fast path: the producer's descriptor opened through
 * /proc/<pid>/fd/<n>, which needs no answer from the producer (a fetch over
 * the socket waits for its server thread to be scheduled: 0.1 to 0.8 ms on
 * an idle machine, against some microseconds here).  It is only a shortcut:
 * anything unexpected (no such process or descriptor: the producer is
 * gone, in another pid namespace, behind hidepid, or unpublished the
 * segment and the number now names another file; a link that is not a
 * dlpx memfd; another inode; another segment) returns NULL, and the socket,
 * which the producer answers for itself, decides.  Same-user processes may
 * open each other's descriptors this way with or without dlpx: it grants
 * nothing the socket does not.  The link is checked before the open, which
 * is non-blocking and never makes a terminal ours, so that a number reused
 * for a FIFO or a device is never opened. */
static dlpx_segment *fetch_proc(const char *address, const char *want) {
  const char *slash = strchr(address, '/');
  if (!slash || strncmp(address, "@dlpx.", 6)) return NULL;
  const char *p = address + 6, *dot = strchr(p, '.');
  if (!dot || dot > slash) return NULL;
  long long pid = number(p, dot, 1LL << 30);
  const char *dot2 = strchr(slash + 1, '.');
  if (!dot2) return NULL;
  long long fdn = number(slash + 1, dot2, 1LL << 30);
  long long ino = number(dot2 + 1, dot2 + 1 + strlen(dot2 + 1), (long long)(~0ULL >> 1));
  if (pid <= 0 || fdn < 0 || ino < 0) return NULL;
  char path[64], link[64];
  snprintf(path, sizeof path, "/proc/%lld/fd/%lld", pid, fdn);
  ssize_t n = readlink(path, link, sizeof link - 1);
  if (n < 0) return NULL;
  link[n] = '\0';
  static const char memfd[] = "/memfd:dlpx (deleted)";
  if (strcmp(link, memfd)) return NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return NULL;
  struct stat st;
  dlpx_segment *seg = NULL;
  if (dlpx__fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
      (unsigned long long)st.st_ino == (unsigned long long)ino &&
      dlpx_segment_attach_fd(fd, 0, &seg) == 0 &&
      (!seg->sealed || !seg->has_id || strcmp(seg->id, want))) {
    dlpx_segment_close(seg);
    seg = NULL;
  }
  close(fd);
  return seg;
}

int dlpx_segment_fetch(const char *address, const char *id, uint32_t timeout_ms, uint32_t flags,
                       dlpx_segment **out) {
  if (!out) return dlpx__fail(DLPX_EINVAL, "dlpx_segment_fetch: NULL output");
  *out = NULL;
  if (!address || !id) return dlpx__fail(DLPX_EINVAL, "dlpx_segment_fetch: NULL argument");
  struct sockaddr_un sa;
  socklen_t salen = 0;
  int rc = check_address(address, &sa, &salen);
  if (rc) return rc;
  size_t idlen = strnlen(id, DLPX_SEGMENT_ID_LEN + 1);
  char want[DLPX_SEGMENT_ID_LEN + 1];
  for (size_t i = 0; i < idlen && i < DLPX_SEGMENT_ID_LEN; i++)
    want[i] = (char)(id[i] >= 'A' && id[i] <= 'F' ? id[i] - 'A' + 'a' : id[i]);
  if (!dlpx__segment_id_ok(want, idlen))
    return dlpx__fail(DLPX_EINVAL, "dlpx_segment_fetch: \"%.40s\" is not a segment id (%d hex "
                      "digits)", id, DLPX_SEGMENT_ID_LEN);
  want[DLPX_SEGMENT_ID_LEN] = '\0';
  if (flags) return dlpx__fail(DLPX_EINVAL, "dlpx_segment_fetch: unknown flags 0x%x", flags);
  if (!timeout_ms) timeout_ms = DEFAULT_TIMEOUT_MS;
  if ((*out = fetch_proc(address, want))) return 0;

  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return dlpx__fail(DLPX_EIO, "dlpx_segment_fetch: socket failed: %s", strerror(errno));
  set_timeouts(s, timeout_ms);
  int fds[MAX_FDS], nfds = 0;
  bool extra = false;
  if (connect(s, (struct sockaddr *)&sa, salen) != 0) {
    rc = errno == ECONNREFUSED || errno == ENOENT
             ? dlpx__fail(DLPX_ENOENT, "the producer is gone: nobody listens at %s", address)
         : errno == EAGAIN || errno == ETIMEDOUT
             ? dlpx__fail(DLPX_EIO, "%s: the producer did not answer in %u ms", address,
                          timeout_ms)
             : dlpx__fail(DLPX_EIO, "%s: connect failed: %s", address, strerror(errno));
    goto out;
  }
  unsigned char req[DLPX__SHM_REQUEST_LEN];
  memcpy(req, DLPX__SHM_MAGIC, DLPX__SHM_MAGIC_LEN);
  memcpy(req + DLPX__SHM_MAGIC_LEN, want, DLPX_SEGMENT_ID_LEN);
  ssize_t w;
  while ((w = send(s, req, sizeof req, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
  }
  if (w != (ssize_t)sizeof req) {
    rc = dlpx__fail(DLPX_EIO, "%s: sending the request failed: %s", address,
                    w < 0 ? strerror(errno) : "short write");
    goto out;
  }
  unsigned char reply[DLPX__SHM_REPLY_LEN];
  size_t got;
  int err = read_reply(s, reply, &got, fds, &nfds, &extra, timeout_ms);
  int32_t status;
  if (err == -EAGAIN || err == -EWOULDBLOCK) {
    rc = dlpx__fail(DLPX_EIO, "%s: the producer did not answer in %u ms", address, timeout_ms);
  } else if (err) {
    rc = dlpx__fail(DLPX_EIO, "%s: reading the answer failed: %s", address, strerror(-err));
  } else if (got < DLPX__SHM_REPLY_LEN) {
    rc = dlpx__fail(DLPX_EIO, "%s: the producer closed the connection without an answer",
                    address);
  } else if (dlpx__shm_parse_reply(reply, got, &status) != 0) {
    rc = dlpx__fail(DLPX_EIO, "%s: the answer is not a dlpx segment server's", address);
  } else if (status == DLPX__SHM_NOT_FOUND) {
    rc = dlpx__fail(DLPX_ENOENT, "segment %s is no longer shared by its producer (%s)", want,
                    address);
  } else if (nfds != 1 || extra) {
    rc = dlpx__fail(DLPX_EIO, "%s: the producer sent %s%d descriptors, not one", address,
                    extra ? "more than " : "", nfds);
  } else {
    dlpx_segment *seg;
    char label[160];
    if ((rc = dlpx_segment_attach_fd(fds[0], 0, &seg))) {
      /* the message names the descriptor, which is about to go: name the address */
      snprintf(label, sizeof label, "segment %s from %s", want, address);
      char msg[DLPX__MSG_MAX];
      snprintf(msg, sizeof msg, "%s", dlpx_last_error());
      rc = dlpx__fail(rc, "%s: %s", label, msg);
    } else if (!seg->sealed) {
      /* Producers publish sealed memfds only: anything else (a memfd made
       * read-only with chmod, whose sender may still shrink it under the
       * mapping) is not a segment of theirs. */
      rc = dlpx__fail(DLPX_EFORMAT, "%s: the producer sent a descriptor that is not a sealed "
                      "memfd (its bytes could change or vanish under the mapping)", address);
      dlpx_segment_close(seg);
    } else if (!seg->has_id || strcmp(seg->id, want)) {
      rc = dlpx__fail(DLPX_EFORMAT, "%s: asked for segment %s, got %s%s", address, want,
                      seg->has_id ? "segment " : "one without an id", seg->has_id ? seg->id : "");
      dlpx_segment_close(seg);
    } else {
      *out = seg;
    }
  }
out:
  for (int i = 0; i < nfds; i++) close(fds[i]);
  close(s);
  return rc;
}
