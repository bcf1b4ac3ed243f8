"""Shared tensors across MPI ranks (mpi4py): :func:`share` gives every
rank of a communicator the root's tensors, with one copy of them per node.

Ranks on the root's node attach the root's segment, zero copy.  Each other
node's leader (its lowest rank) receives the segment's image once, straight
into a new segment of its node (the root sends from its own mapping: no
copy on the sending side), and the ranks of that node attach the leader's.
So a model of N bytes costs N bytes per node, not per rank, and moves over
the network once per node.

dlpx tensors need nothing from this module to go through mpi4py's buffer
calls (``comm.Send(t)``, ``comm.Recv(t)``, ``comm.Allreduce(a, b)``,
``comm.Bcast(t)``...): mpi4py takes them as buffers through ``__dlpack__``,
zero copy, and refuses (BufferError) to receive into a read-only one, such
as an attached tensor.

``DLPX_MPI_RANKS_PER_NODE=k`` makes :func:`node_comm` group ranks into
pretend nodes of k consecutive ranks instead of asking MPI which share
memory: it lets one machine run what several nodes do (tests).
"""

from __future__ import annotations

import mmap
import os
from typing import Any, Mapping, Optional, cast

from mpi4py import MPI

from . import _share
from ._lib import lib

__all__ = ["share", "node_comm"]

_RANKS_ENV = "DLPX_MPI_RANKS_PER_NODE"
# Bytes per broadcast: MPI counts are C ints, so an image goes in pieces.
_CHUNK = 1 << 30


def node_comm(comm: Optional[MPI.Intracomm] = None) -> MPI.Intracomm:
    """The ranks of |comm| (default COMM_WORLD) that share this rank's
    memory, ordered as in |comm| (collective; free it when done).  With
    DLPX_MPI_RANKS_PER_NODE=k, pretend nodes of k consecutive ranks."""
    comm = _comm_arg(comm)
    k = os.environ.get(_RANKS_ENV, "")
    if k:
        if not k.isdigit() or int(k) < 1:
            raise ValueError(f"{_RANKS_ENV}={k!r}: expected a positive number of ranks")
        return cast(MPI.Intracomm, comm.Split(comm.Get_rank() // int(k), comm.Get_rank()))
    return cast(MPI.Intracomm, comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank()))


def _comm_arg(comm: Any) -> MPI.Intracomm:
    if comm is None:
        return MPI.COMM_WORLD
    if not isinstance(comm, MPI.Intracomm):
        raise TypeError(f"comm must be an mpi4py intracommunicator, not "
                        f"{type(comm).__name__}")
    return comm


def _agree(comm: MPI.Intracomm, error: Optional[str], what: str) -> list[Any]:
    """Every rank's error (or None), so that all ranks raise together
    rather than some waiting forever in the next collective."""
    errors: list[Any] = comm.allgather(error)
    bad = [(r, e) for r, e in enumerate(errors) if e is not None]
    if bad:
        detail = "; ".join(f"rank {r}: {e}" for r, e in bad[:4])
        more = f" (and {len(bad) - 4} more ranks)" if len(bad) > 4 else ""
        raise RuntimeError(f"dlpx.mpi.share failed {what}: {detail}{more}")
    return errors


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _send_image(leaders: MPI.Intracomm, h: _share.Handle) -> None:
    """The root's side: the image from a read-only mapping of its segment."""
    fd = lib.dlpx_segment_fd(h._seg)
    with mmap.mmap(fd, h.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ) as m:
        whole = memoryview(m)
        try:
            for off in range(0, h.size, _CHUNK):
                piece = whole[off:off + _CHUNK]
                try:
                    leaders.Bcast([piece, MPI.BYTE], root=0)
                finally:
                    piece.release()
        finally:
            whole.release()


def _recv_image(leaders: MPI.Intracomm, view: memoryview, size: int) -> None:
    """A leader's side: straight into its new segment's writable mapping."""
    for off in range(0, size, _CHUNK):
        piece = view[off:off + _CHUNK]
        try:
            leaders.Bcast([piece, MPI.BYTE], root=0)
        finally:
            piece.release()


def share(tensors: Optional[Mapping[str, Any]] = None, comm: Optional[MPI.Intracomm] = None,
          root: int = 0, framework: str = "dlpx", name: Optional[str] = None,
          *, timeout: float = 30.0) -> dict[str, Any]:
    """Gives every rank of |comm| (default COMM_WORLD) the tensors of rank
    |root| (|tensors|, a dict of name -> host tensor, read on the root
    only), zero copy within a node: collective, and every rank returns the
    dict of name -> |framework| tensor (read-only where the framework has
    read-only tensors).

    |name| makes the segments named (/dev/shm/dlpx.<name>; a pretend node
    on the root's machine adds ".<leader index>"), left for
    :func:`dlpx.unlink`.  All ranks raise RuntimeError together when any
    rank fails (the root's tensors cannot be shared, a node's segment
    cannot be made, a rank cannot attach), naming each failing rank and
    why; a bad |comm| or |root|, the same on every rank, raises TypeError
    or ValueError before any communication."""
    from ._convert import framework_arg
    comm = _comm_arg(comm)
    rank, size = comm.Get_rank(), comm.Get_size()
    if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < size:
        raise ValueError(f"root must be a rank of the communicator (0 to {size - 1}), "
                         f"not {root!r}")

    # 1. Arguments, and the root's segment: every rank learns the image size.
    h: Optional[_share.Handle] = None
    error: Optional[str] = None
    info: Any = None
    try:
        fw = framework_arg(framework)
        if name is not None:
            _share._name_arg(name)
        if rank == root:
            if tensors is None:
                raise ValueError("the root rank needs the tensors to share")
            h = _share.share(tensors, name=name)
            info = (h.size, _share.node_id())
    except Exception as e:
        error = _describe(e)
    try:
        _agree(comm, error, "on its arguments")
    except BaseException:
        if h is not None:
            h.close()
        raise
    image_size, root_machine = comm.bcast(info, root=root)

    try:
        node = node_comm(comm)
    except BaseException:
        if h is not None:
            h.close()
        raise
    leaders = MPI.COMM_NULL
    local: Optional[_share.Handle] = None
    out: dict[str, Any] = {}
    try:
        # 2. One leader per node, the root leading its own; they form a
        # communicator where the root is rank 0.
        root_at = node.allreduce(node.Get_rank() if rank == root else -1, op=MPI.MAX)
        leader = root_at if root_at >= 0 else 0
        is_leader = node.Get_rank() == leader
        leaders = cast(MPI.Intracomm, comm.Split(0 if is_leader else MPI.UNDEFINED,
                                                 0 if rank == root else rank + 1))

        # 3. The image, once per other node.
        text: Optional[str] = None
        error = None
        if is_leader:
            try:
                local = _lead(leaders, h if rank == root else None, image_size,
                              _node_name(name, root_machine, leaders.Get_rank()))
                text = str(local)
            except Exception as e:
                error = _describe(e)

        # 4. Every rank attaches its node's segment.
        got = node.bcast((text, error), root=leader)
        text, error = got
        if error is None:
            try:
                assert text is not None
                mine = local if is_leader and local is not None else _share.Handle.parse(text)
                out = _share.attach(mine, fw, timeout=timeout)
            except Exception as e:
                error = _describe(e)
        # Every rank has attached (or failed) once this returns: the leaders
        # may stop giving their segments out.
        _agree(comm, error, "to attach")
    finally:
        if local is not None:
            local.close()
        if h is not None:
            h.close()
        if leaders != MPI.COMM_NULL:
            leaders.Free()
        node.Free()
    return out


def _node_name(name: Optional[str], root_machine: str, index: int) -> Optional[str]:
    """A non-root node's segment name: the root's, unless this "node" is a
    pretend one on the root's own machine, where that name is taken."""
    if name is None or index == 0 or _share.node_id() != root_machine:
        return name
    return f"{name}.{index}"


def _lead(leaders: MPI.Intracomm, h: Optional[_share.Handle], size: int,
          name: Optional[str]) -> _share.Handle:
    """A node leader's part: the root sends its image; the others build a
    segment, receive the image into it and seal it.  Leaders first agree
    that each has its segment ready, so that no broadcast is left waiting
    for one that failed."""
    if leaders.Get_size() == 1:
        assert h is not None
        return h
    seg: Any = None
    view: Optional[memoryview] = None
    error: Optional[str] = None
    if h is None:
        try:
            seg, view = _share.build_segment(size, name)
        except Exception as e:
            error = _describe(e)
    errors = leaders.allgather(error)
    bad = [f"leader {r}: {e}" for r, e in enumerate(errors) if e is not None]
    if bad:
        if view is not None:
            view.release()
        raise OSError("could not make the node segments: " + "; ".join(bad[:4]))
    if h is not None:
        _send_image(leaders, h)
        return h
    assert view is not None
    try:
        _recv_image(leaders, view, size)
    except BaseException:
        view.release()
        raise
    return _share.seal_segment(seg, view)
