"""C reproducers for test_share_hostile.py, run in a subprocess (they may
hang or crash the process): python share_hostile_c_repro.py CASE [ARG].

fifo NAME:   dlpx_segment_open of /dev/shm/dlpx.NAME (a FIFO the test made)
             straight through the C API; prints "refused" when it returns.
chmod:       dlpx_segment_fetch from a fake server that sends an *unsealed*
             memfd made read-only with fchmod(0400); the server keeps a
             writable descriptor and truncates the memfd after the
             consumer attached; the consumer then reads its tensor
             (SIGBUS when the fetch accepted the descriptor).  Prints
             "refused" when libdlpx refuses the descriptor."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import dlpx  # noqa: E402
from dlpx import _share  # noqa: E402
import share_hostile_helpers as H  # noqa: E402

ffi, lib = dlpx.ffi, dlpx.lib


def fifo(name):
    out = ffi.new("dlpx_segment **")
    rc = lib.dlpx_segment_open(name.encode(), 0, out)
    print("refused" if rc else "attached", rc, flush=True)


def chmod():
    with dlpx.share({"x": np.arange(1 << 16, dtype=np.float64)}) as h:
        img = os.pread(lib.dlpx_segment_fd(h._seg), h.size, 0)
        sid = h.id
    keep = []

    def behave(conn, srv):
        fd = H.memfd(img, seals=0, mode=0o400)
        keep.append(os.dup(fd))
        H.send(conn, H.reply(H.FOUND), [fd])

    with H.FakeServer(behave) as srv:
        out = ffi.new("dlpx_segment **")
        rc = lib.dlpx_segment_fetch(srv.address.encode(), sid.encode(), 2000, 0, out)
    if rc:
        print("refused", rc, dlpx._errors.message(), flush=True)
        return
    t = ffi.new("dlpx_tensor **")
    assert lib.dlpx_segment_bytes(out[0], 0, t) == 0
    view = np.from_dlpack(dlpx._files.wrap(t[0]))
    print("accepted an unsealed memfd; first bytes", view[:4].tolist(), flush=True)
    os.ftruncate(keep[0], 0)  # the producer's writable descriptor
    print("truncated by the producer; reading", flush=True)
    print("sum", int(view.sum()), flush=True)  # SIGBUS here


if __name__ == "__main__":
    {"fifo": lambda: fifo(sys.argv[2]), "chmod": chmod}[sys.argv[1]]()
