"""The rank side of test_share_mpi.py: ``mpirun -np 4 python mpi_worker.py CASE``.

Every rank runs CASE; a failed check on any rank aborts the whole job
(MPI_Abort) rather than leaving the others waiting in a collective, and
rank 0 prints "OK CASE" when every rank passed."""

import os
import sys
import traceback

import numpy as np
from mpi4py import MPI

import dlpx
import dlpx.mpi

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()


def tensors():
    rng = np.random.default_rng(7)
    return {
        "w": rng.standard_normal((64, 33)).astype(np.float32),
        "ids": np.arange(1000, dtype=np.int64),
        "mask": rng.integers(0, 2, (17,)).astype(np.bool_),
        "empty": np.zeros((0, 4), dtype=np.float16),
    }


def memfd_inode(addr):
    """The inode of the memfd mapping that holds |addr|, or None."""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= addr < hi:
                path = " ".join(parts[5:])
                return int(parts[4]) if path.startswith("/memfd:dlpx") else None
    return None


def check_values(got):
    want = tensors()
    assert set(got) == set(want), (sorted(got), sorted(want))
    for k, v in want.items():
        a = np.asarray(got[k])
        assert a.dtype == v.dtype and a.shape == v.shape, (k, a.dtype, a.shape)
        assert np.array_equal(a, v), k


def inodes(got):
    """The memfd inode under every non-empty tensor, which must be one."""
    found = {memfd_inode(np.asarray(t).ctypes.data) for t in got.values()
             if np.asarray(t).size}
    assert len(found) == 1 and None not in found, found
    return found.pop()


def share_round(root, framework="numpy"):
    got = dlpx.mpi.share(tensors() if rank == root else None, root=root, framework=framework)
    check_values(got)
    if framework == "numpy":
        assert not got["w"].flags.writeable
    return comm.allgather(inodes(got))


def case_node():
    # All ranks on one node (as MPI sees it): all attach the root's segment.
    assert "DLPX_MPI_RANKS_PER_NODE" not in os.environ
    node = dlpx.mpi.node_comm()
    assert node.Get_size() == size, node.Get_size()
    node.Free()
    for root in (0, 2):
        seen = share_round(root)
        assert len(set(seen)) == 1, seen
    seen = share_round(3, "dlpx")
    assert len(set(seen)) == 1, seen


def case_pretend():
    # DLPX_MPI_RANKS_PER_NODE=2: nodes {0, 1} and {2, 3}.
    assert os.environ.get("DLPX_MPI_RANKS_PER_NODE") == "2"
    node = dlpx.mpi.node_comm()
    assert node.Get_size() == 2 and node.Get_rank() == rank % 2
    node.Free()
    dlpx.mpi._CHUNK = 1000  # the image goes in many pieces, a short last one
    for root in (0, 1, 3):  # 1: the root leads its node although not its first rank
        seen = share_round(root)
        assert seen[0] == seen[1] and seen[2] == seen[3] and seen[0] != seen[2], seen
    # The framework is each rank's own: PyTorch on one rank of each node
    # (writable copy-on-write tensors: a write stays in its rank), NumPy
    # (read-only) on the others.
    fw = "torch" if rank % 2 == 0 else "numpy"
    got = dlpx.mpi.share(tensors() if rank == 0 else None, framework=fw)
    if fw == "torch":
        import torch
        assert isinstance(got["w"], torch.Tensor)
        got["w"][0, 0] = 1234.0
    comm.Barrier()
    w = np.asarray(got["w"])
    assert (w[0, 0] == 1234.0) == (fw == "torch")
    assert np.array_equal(w[1:], tensors()["w"][1:]) and np.array_equal(
        np.asarray(got["ids"]), tensors()["ids"])


def case_named():
    name = f"mpitest-{os.environ.get('DLPX_TEST_TAG', 'x')}"
    got = dlpx.mpi.share(tensors() if rank == 0 else None, name=name, framework="numpy")
    check_values(got)
    comm.Barrier()
    if rank == 0:
        names = sorted(s["name"] for s in dlpx._share.list_named() if
                       s["name"].startswith(name))
        assert names == [name, name + ".1"], names
        for n in names:
            dlpx.unlink(n)
    comm.Barrier()


def case_errors():
    # The root forgets its tensors: every rank raises, none hangs.
    try:
        dlpx.mpi.share(None)
    except RuntimeError as e:
        assert "rank 0" in str(e) and "needs the tensors" in str(e), e
    else:
        raise AssertionError("no error")
    # One rank asks for an unknown framework.
    try:
        dlpx.mpi.share(tensors() if rank == 0 else None,
                       framework="nope" if rank == 3 else "numpy")
    except RuntimeError as e:
        assert "rank 3" in str(e), e
    else:
        raise AssertionError("no error")
    # A tensor that cannot be shared (not a tensor).
    try:
        dlpx.mpi.share({"x": object()} if rank == 0 else None)
    except RuntimeError as e:
        assert "rank 0" in str(e), e
    else:
        raise AssertionError("no error")
    try:
        dlpx.mpi.share(tensors(), root=size)
    except ValueError:
        pass
    else:
        raise AssertionError("no error")
    # Still in step: a good round afterwards.
    seen = share_round(0)
    assert len(set(seen)) == (1 if "DLPX_MPI_RANKS_PER_NODE" not in os.environ else 2)


def case_buffers():
    # dlpx tensors straight through mpi4py's buffer calls (via __dlpack__).
    base = np.arange(12, dtype=np.float32).reshape(3, 4) + rank
    src = dlpx.from_dlpack(base)
    assert src.data_ptr == base.ctypes.data  # zero copy from NumPy
    out = dlpx.zeros((3, 4), dtype=dlpx.float32)
    ptr = out.data_ptr
    comm.Allreduce(src, out, op=MPI.SUM)
    want = sum(np.arange(12, dtype=np.float32).reshape(3, 4) + r for r in range(size))
    assert out.data_ptr == ptr and np.array_equal(np.asarray(out), want)

    # Into a NumPy array's memory, through a dlpx view of it.
    back = np.zeros((3, 4), dtype=np.float32)
    comm.Allreduce(src, dlpx.from_dlpack(back), op=MPI.MAX)
    assert np.array_equal(back, np.arange(12, dtype=np.float32).reshape(3, 4) + size - 1)

    # Point to point, ring.
    nxt, prv = (rank + 1) % size, (rank - 1) % size
    got = dlpx.zeros((3, 4), dtype=dlpx.float32)
    ptr = got.data_ptr
    req = comm.Isend(src, dest=nxt, tag=5)
    comm.Recv(got, source=prv, tag=5)
    req.Wait()
    assert got.data_ptr == ptr
    assert np.array_equal(np.asarray(got), np.arange(12, dtype=np.float32).reshape(3, 4) + prv)
    if rank == 0:
        comm.Send(src, dest=1, tag=6)
    elif rank == 1:
        r = dlpx.zeros((3, 4), dtype=dlpx.float32)
        comm.Recv(r, source=0, tag=6)
        assert np.array_equal(np.asarray(r), np.arange(12, dtype=np.float32).reshape(3, 4))

    # Bcast into a dlpx tensor; int64, a 1-D view of a 2-D one.
    b = dlpx.zeros((2, 5), dtype=dlpx.int64)
    if rank == 2:
        np.asarray(b.numpy())[...] = np.arange(10).reshape(2, 5) * 3
    comm.Bcast(b, root=2)
    assert np.array_equal(np.asarray(b), np.arange(10).reshape(2, 5) * 3)

    # Attached tensors are sent as they are, and refuse to be received into.
    shared = dlpx.mpi.share(tensors() if rank == 0 else None)
    w = shared["w"]
    if rank == 0:
        try:
            comm.Recv(w, source=1, tag=7)
        except BufferError:
            pass
        else:
            raise AssertionError("received into a read-only tensor")
    dst = dlpx.zeros((64, 33), dtype=dlpx.float32)
    comm.Allreduce(w, dst, op=MPI.MAX)
    assert np.array_equal(np.asarray(dst), tensors()["w"])
    # Gather of one tensor per rank.
    rows = dlpx.zeros((size, 4), dtype=dlpx.float32)
    comm.Allgather(dlpx.from_dlpack(np.full(4, rank, dtype=np.float32)), rows)
    assert np.array_equal(np.asarray(rows), np.repeat(np.arange(size, dtype=np.float32), 4)
                          .reshape(size, 4))


CASES = {"node": case_node, "pretend": case_pretend, "named": case_named,
         "errors": case_errors, "buffers": case_buffers}


def main():
    names = sys.argv[1:]
    for name in names:
        try:
            CASES[name]()
        except BaseException:
            sys.stderr.write(f"rank {rank}: case {name} failed:\n{traceback.format_exc()}")
            sys.stderr.flush()
            comm.Abort(1)
    comm.Barrier()
    if rank == 0:
        print("OK " + " ".join(names), flush=True)


if __name__ == "__main__":
    main()
