"""Fake segment servers for test_share_hostile.py: an abstract-namespace
Unix socket that speaks (or mangles) the protocol of libdlpx's segment
server (src/shm/server.c), so that a consumer meets every kind of hostile
producer.  Also used by the share_hostile_*.py subprocess scripts."""

import os
import secrets
import socket
import struct
import threading

MAGIC = b"DLPXSHM1"
FOUND, NOT_FOUND = 0, 1
F_ADD_SEALS = 1033
SEALS = 0x2 | 0x4 | 0x8  # F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE
ALL_SEALS = SEALS | 0x1  # and F_SEAL_SEAL


def reply(status):
    return MAGIC + struct.pack("<I", status)


def memfd(data, seals=ALL_SEALS, mode=None):
    import fcntl
    fd = os.memfd_create("dlpx-hostile", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    if mode is not None:
        os.fchmod(fd, mode)
    if seals:
        fcntl.fcntl(fd, F_ADD_SEALS, seals)
    return fd


def send(conn, data, fds=()):
    """Sends |data| with |fds| (SCM_RIGHTS), then closes our copies of them."""
    try:
        if fds:
            socket.send_fds(conn, [data], list(fds))
        else:
            conn.sendall(data)
    finally:
        for fd in fds:
            os.close(fd)


class FakeServer:
    """Serves every connection with behave(conn, server) in a thread of
    this process.  server.requests holds what clients sent."""

    def __init__(self, behave):
        self.behave = behave
        self.address = f"@dlpx.hostile.{os.getpid()}.{secrets.token_hex(8)}"
        self.requests = []
        self.stop = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind("\0" + self.address[1:])
        self.sock.listen(16)
        self.sock.settimeout(0.02)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                try:
                    self.requests.append(conn.recv(64))
                    self.behave(conn, self)
                except OSError:
                    pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)
        self.sock.close()
