"""Shared tensors in Ray tasks and actors: importing this module makes a
:class:`dlpx.Handle` work on every node of a Ray cluster.

On the producer's Ray node a handle attaches as anywhere else: zero copy,
the descriptor fetched from the producer.  A node elsewhere cannot map the
producer's memory, so when a producer's handle is pickled while the
cluster has more than one node, the segment's image is put once in Ray's
object store (one copy, on the producer's node).  The first process on
another node that attaches the handle starts a small actor pinned to that
node (named after the segment and the node, so there is one per node
however many tasks ask), which gets the image (the one transfer to that
node) and copies it into a node-local segment; every process of that node
then attaches the actor's segment, zero copy.  Closing the producer's
handle kills those actors and drops the object store copy; processes that
attached keep their tensors.

    >>> import ray, dlpx, dlpx.ray
    >>> h = dlpx.share({"w": weights})
    >>> @ray.remote
    ... def work(h):
    ...     return dlpx.attach(h, framework="pt")["w"].sum()

Set ``DLPX_RAY_FORCE_REMOTE=1`` (in the producer and the consumers) to send
every consumer through the node copy, even on the producer's node (a
single-node cluster can then exercise what a multi-node one does).
"""

from __future__ import annotations

import atexit
import mmap
import os
import threading
import weakref
from typing import Any, Optional

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from . import _share
from ._lib import lib

__all__ = ["NAMESPACE", "node_copies", "node_handle"]

#: The Ray namespace of the node-copy actors: fixed, so that consumers of
#: every job find the same actor.
NAMESPACE = "dlpx"
_PREFIX = "dlpx."
_FORCE_ENV = "DLPX_RAY_FORCE_REMOTE"
_TIMEOUT_ENV = "DLPX_RAY_TIMEOUT"

# Where an open producer leaves word that its segment may still be copied
# (Ray's GCS key-value store): consumers check it before and after making a
# node copy, so that none is made, and left behind, after close().
_KV_NAMESPACE = "dlpx"

_lock = threading.Lock()
# Producer handles whose image is in the object store, to clean up at exit.
_published: "weakref.WeakSet[_share.Handle]" = weakref.WeakSet()
# This process's node-local handle strings: (segment id, node) -> str(handle).
_local: dict[tuple[str, str], str] = {}


def _timeout() -> float:
    """How long a consumer waits for its node's copy (start an actor, move
    the image, copy it): generous by default, since images may be many GiB."""
    text = os.environ.get(_TIMEOUT_ENV, "")
    try:
        value = float(text) if text else 600.0
    except ValueError:
        raise ValueError(f"{_TIMEOUT_ENV}={text!r}: expected seconds") from None
    if not value > 0:
        raise ValueError(f"{_TIMEOUT_ENV}={text!r}: expected a positive number of seconds")
    return value


def _forced() -> bool:
    return os.environ.get(_FORCE_ENV, "") not in ("", "0")


def _actor_name(segment_id: str, node: str) -> str:
    return f"{_PREFIX}{segment_id}.{node}"


def _node() -> Optional[str]:
    """This process's Ray node, or None outside Ray."""
    if not ray.is_initialized():
        return None
    return str(ray.get_runtime_context().get_node_id())


def _kv() -> Any:
    """Ray's internal key-value store (a private module of Ray, stable for
    years), or None where this Ray lacks it: then nothing marks a closed
    producer, and only its close() and exit remove the node copies."""
    try:
        from ray.experimental import internal_kv
    except ImportError:  # pragma: no cover
        return None
    ready = internal_kv._internal_kv_initialized()  # type: ignore[no-untyped-call]
    return internal_kv if ready else None


def _open_key(segment_id: str) -> str:
    return f"{_PREFIX}open.{segment_id}"


def _still_open(segment_id: str) -> bool:
    kv = _kv()
    return kv is None or bool(kv._internal_kv_exists(_open_key(segment_id),
                                                     namespace=_KV_NAMESPACE))


def _alive_nodes() -> int:
    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    return len([n for n in nodes if n.get("Alive")])


def _read_image(h: _share.Handle) -> Any:
    """The whole image of a producer's segment as a read-only NumPy array
    over a mapping of its descriptor (no copy: ray.put makes the one)."""
    import numpy as np
    seg = h._seg
    if seg is None:
        raise ValueError(f"{h!r} is closed: its segment cannot be published to Ray")
    fd = lib.dlpx_segment_fd(seg)
    m = mmap.mmap(fd, h.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    return m, np.frombuffer(m, dtype=np.uint8)


def _put_image(h: _share.Handle) -> Any:
    """ray.put of the segment's image, run in a thread of its own: this is
    called while Ray pickles the task's arguments, and a ray.put in the
    same thread would reset the serializer's per-thread state (the object
    refs it has collected so far)."""
    box: dict[str, Any] = {}

    def put() -> None:
        try:
            m, arr = _read_image(h)
            try:
                box["ref"] = ray.put(arr)
            finally:
                del arr
                try:
                    m.close()
                except BufferError:  # still exported: the collector unmaps it
                    pass
        except BaseException as e:  # handed to the pickling thread
            box["error"] = e

    t = threading.Thread(target=put, name="dlpx-ray-put", daemon=True)
    t.start()
    t.join()
    err = box.get("error")
    if isinstance(err, ray.exceptions.RayError):
        raise OSError(f"dlpx.ray: could not put segment {h.id} ({h.size} bytes) in Ray's "
                      f"object store for the other nodes: {err}") from None
    if err is not None:
        raise err
    return box["ref"]


def _on_pickle(h: _share.Handle) -> None:
    """Records where the producer lives and, when other nodes may need it,
    puts the image in the object store (once per handle)."""
    node = _node()
    if node is None:
        return
    with _lock:
        h.extra["ray_node"] = node
        if "ray_image" in h.extra or h._seg is None:
            return
        if not _forced() and _alive_nodes() < 2:
            return
        h.extra["ray_image"] = _put_image(h)
        _published.add(h)
        kv = _kv()
        if kv is not None:
            kv._internal_kv_put(_open_key(h.id), node.encode(), namespace=_KV_NAMESPACE)


def node_copies(segment_id: Optional[str] = None) -> list[str]:
    """The names of the node-copy actors alive in the cluster (of one
    segment, by its id, or of all): for tests and for cleaning up after a
    producer that died without closing its handle (``ray.kill`` them)."""
    prefix = _PREFIX + (segment_id + "." if segment_id else "")
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a.get("namespace") == NAMESPACE and a["name"].startswith(prefix))


def _on_close(h: _share.Handle) -> None:
    """Kills the node copies of a producer's segment and drops its image."""
    with _lock:
        image = h.extra.pop("ray_image", None)
        _published.discard(h)
    if image is None or not ray.is_initialized():
        return
    del image  # the object store copy goes when the last borrower's goes
    try:
        kv = _kv()
        if kv is not None:  # first: consumers make no copy from now on
            kv._internal_kv_del(_open_key(h.id), namespace=_KV_NAMESPACE)
        names = node_copies(h.id)
    except Exception:  # Ray going down: its actors go with it
        return
    for name in names:
        try:
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
        except ValueError:  # gone meanwhile (another close, a dead node)
            pass


@atexit.register
def _at_exit() -> None:
    """Kills the node copies of handles never closed: registered after
    ``import ray``, so this runs before Ray's own exit handler disconnects.
    (A producer killed outright leaves them: see :func:`node_copies`.)"""
    for h in list(_published):
        try:
            _on_close(h)
        except Exception:
            pass


@ray.remote(num_cpus=0, max_restarts=0)
class _NodeCopy:
    """A node's copy of one segment, alive until the producer closes its
    handle: the image arrived once from the object store (Ray resolved it
    as the argument, on this node) and every process here attaches this
    actor's segment."""

    def __init__(self, image: Any) -> None:
        seg, view = _share.build_segment(int(image.nbytes))
        try:
            view[:] = memoryview(image).cast("B")
        except BaseException:
            view.release()
            raise
        del image
        self._handle = _share.seal_segment(seg, view)

    def handle(self) -> str:
        # The string form carries no extra: it never goes back to Ray.
        return str(self._handle)


def _closed(segment_id: str) -> FileNotFoundError:
    return FileNotFoundError(f"dlpx.ray: segment {segment_id} is no longer shared (its "
                             "producer closed the handle or is gone)")


def _make_copy(h: _share.Handle, here: str, image: Any) -> str:
    """Gets or starts this node's copy actor of |h| and returns the string
    form of its handle."""
    if not _still_open(h.id):
        raise _closed(h.id)
    name = _actor_name(h.id, here)
    timeout = _timeout()
    try:
        actor = _NodeCopy.options(  # type: ignore[attr-defined]
            name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
        ).remote(image)
        text = str(ray.get(actor.handle.remote(), timeout=timeout))
    except ray.exceptions.GetTimeoutError:
        raise OSError(f"dlpx.ray: no copy of segment {h.id} on node {here} after "
                      f"{timeout:g} s (set {_TIMEOUT_ENV} to wait longer)") from None
    except ray.exceptions.RayError as e:
        if not _still_open(h.id) or _lost(e):
            raise _closed(h.id) from None
        raise OSError(f"dlpx.ray: could not copy segment {h.id} to node {here}: {e}") from None
    if not _still_open(h.id):
        # The producer closed meanwhile, maybe after it killed the copies it
        # saw: this one may be new, so it goes too.
        try:
            ray.kill(actor, no_restart=True)
        except Exception:
            pass
        raise _closed(h.id)
    return text


def _lost(e: BaseException) -> bool:
    """Whether a Ray error says the image is gone (its owner, the producer,
    died)."""
    seen: set[int] = set()
    cur: Optional[BaseException] = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ray.exceptions.ObjectLostError):
            return True
        cur = getattr(cur, "cause", None) or cur.__cause__
    text = str(e)
    return "OwnerDiedError" in text or "ObjectLostError" in text or "owner has exited" in text


def node_handle(h: _share.Handle) -> Optional[_share.Handle]:
    """The handle of this node's copy of |h|'s segment, made on first use
    (by the node's copy actor), or None when |h| attaches directly here
    (it comes from this node, or from outside Ray)."""
    origin = h.extra.get("ray_node")
    if origin is None or h._seg is not None:
        return None
    here = _node()
    if here is None or (here == origin and not _forced()):
        return None
    image = h.extra.get("ray_image")
    if image is None:
        # Pickled while the cluster had one node: on this machine the usual
        # attach works; on another, open_segment says why it cannot.
        return None
    key = (h.id, here)
    with _lock:
        text = _local.get(key)
    if text is None:
        text = _make_copy(h, here, image)
        with _lock:
            _local[key] = text
    return _share.Handle.parse(text)


def _remote(h: _share.Handle) -> Any:
    """The remote hook of _share.open_segment: this node's copy, opened."""
    local = node_handle(h)
    if local is None:
        return None
    try:
        return _share.open_segment(local)
    except FileNotFoundError:
        # The copy this process knew is gone (its actor was killed): ask
        # again, and the actor (if the producer is still open) is remade.
        with _lock:
            _local.pop((h.id, str(_node())), None)
        local = node_handle(h)
        if local is None:
            return None
        return _share.open_segment(local)


def _install() -> None:
    for hooks, fn in ((_share._pickle_hooks, _on_pickle), (_share._close_hooks, _on_close),
                      (_share._remote_hooks, _remote)):
        if fn not in hooks:
            hooks.append(fn)  # type: ignore[attr-defined]


_install()
