"""PyTorch model sharing: :func:`share_module` puts every parameter and
buffer of a ``torch.nn.Module`` in one shared segment and returns a
picklable :class:`ModuleHandle`: the module's structure without its
weights, plus the segment's handle.  :meth:`ModuleHandle.load`, in any
process of the machine, rebuilds the module with its weights mapped zero
copy (``requires_grad`` off; tied weights stay tied).

    >>> import dlpx.torch
    >>> mh = dlpx.torch.share_module(model)      # the producer
    >>> model = mh.load()                        # a worker: zero copy

Weights are mapped copy-on-write: a worker that writes into them (an
in-place op) changes its own pages only, never the other workers' model.
"""

from __future__ import annotations

import copyreg
import io
import pickle
from typing import Any, Optional, cast

import torch

from . import _convert, _share

__all__ = ["share_module", "ModuleHandle"]

def _places(module: torch.nn.Module) -> tuple[dict[int, str], dict[str, torch.Tensor]]:
    """The distinct parameters and buffers of |module| (shared submodules
    and tied tensors once), keyed by the first full name that holds each:
    (the key of each by id, the tensors by key)."""
    tensors: dict[str, torch.Tensor] = {}
    key_of: dict[int, str] = {}
    for path, mod in module.named_modules(remove_duplicate=False):
        for slots in (mod._parameters, mod._buffers):
            for attr, t in slots.items():
                if t is None or id(t) in key_of:
                    continue
                if not isinstance(t, torch.Tensor):
                    raise TypeError(f"{path + '.' if path else ''}{attr} is a "
                                    f"{type(t).__name__}, not a tensor")
                if t.device.type != "cpu":
                    raise ValueError(f"{path + '.' if path else ''}{attr} is on {t.device}: "
                                     "share_module shares host (CPU) tensors")
                key = key_of[id(t)] = f"{path}.{attr}" if path else attr
                tensors[key] = t.detach()
    return key_of, tensors


class _Ref:
    """What stands for a tensor in the skeleton's pickle: a persistent id
    (the index of the tensor in :attr:`ModuleHandle.refs`)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def _set_state(module: Any, state: dict[str, Any]) -> None:
    """A module's state set as ``Module.__setstate__`` would, without its
    checks for pickles of older PyTorch versions (a third of what rebuilding
    a module costs): used for modules that keep ``Module.__setstate__``,
    when the worker runs the producer's PyTorch version."""
    module.__dict__.update(state)


def _own_setstate(module: Any, state: Any) -> None:
    """A module's state set by its class's own ``__setstate__``."""
    module.__setstate__(state)


class _Pickler(pickle.Pickler):
    """Pickles a module with every parameter and buffer slot replaced by a
    :class:`_Ref` (a persistent id): the structure without the weights.  A
    tensor gets one ref per role (a parameter, or a buffer), tied ones one
    ref in all."""

    def __init__(self, file: Any, key_of: dict[int, str]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.key_of = key_of
        self.refs: list[tuple[str, bool]] = []
        self.index: dict[tuple[str, bool], _Ref] = {}

    def ref(self, t: Any, is_param: bool) -> _Ref:
        k = (self.key_of[id(t)], is_param)
        r = self.index.get(k)
        if r is None:
            r = self.index[k] = _Ref(len(self.refs))
            self.refs.append(k)
        return r

    def persistent_id(self, obj: Any) -> Optional[int]:
        if type(obj) is _Ref:
            return obj.index
        if isinstance(obj, torch.Tensor) and id(obj) in self.key_of:
            # a slot outside a module's state dict (a module with its own
            # __getstate__): a parameter if it is one
            return self.ref(obj, isinstance(obj, _PARAM)).index
        return None

    def reducer_override(self, obj: Any) -> Any:
        if not isinstance(obj, torch.nn.Module) or isinstance(obj, type):
            return NotImplemented
        cls = type(obj)
        if cls.__reduce_ex__ is not object.__reduce_ex__ or cls.__reduce__ is not object.__reduce__:
            # its own reduction (torch.compile's wrapper): pickled as it
            # says, its tensors still replaced (persistent_id)
            return NotImplemented
        state = getattr(obj, "__getstate__")()  # Module's is untyped
        if type(state) is not dict:
            return NotImplemented
        state = dict(state)  # never the module's own
        for slot, is_param in (("_parameters", True), ("_buffers", False)):
            d = state.get(slot)
            if isinstance(d, dict) and d:
                state[slot] = {k: None if t is None else self.ref(t, is_param)
                               for k, t in d.items()}
        setter = _set_state if cls.__setstate__ is torch.nn.Module.__setstate__ else _own_setstate
        # copyreg.__newobj__ (typeshed lacks it): the unpickler's NEWOBJ, cls.__new__ in C
        return (getattr(copyreg, "__newobj__"), (cls,), state, None, None, setter)


def _skeleton(module: torch.nn.Module, key_of: dict[int, str]) -> tuple[bytes,
                                                                       tuple[tuple[str, bool], ...]]:
    """|module| pickled with every parameter and buffer replaced by a
    persistent id, and what each id stands for: (the tensor's key in the
    segment, whether it is a parameter).  :meth:`ModuleHandle.load` makes
    the tensors first and hands them to the unpickler, which puts them in
    their slots as it rebuilds the modules: no walk over the modules after."""
    buf = io.BytesIO()
    p = _Pickler(buf, key_of)
    try:
        p.dump(module)
    except (AttributeError, TypeError, pickle.PicklingError) as e:
        raise TypeError(f"the module's structure cannot be pickled ({e}): workers rebuild it "
                        "from a pickle, so its classes must be importable (defined at module "
                        "level, not inside a function)") from None
    return buf.getvalue(), tuple(p.refs)


class _CompatUnpickler(pickle.Unpickler):
    """The skeleton's unpickler where the worker's PyTorch is not the
    producer's: every module's state goes through its class's own
    ``__setstate__``, which fills what another version's pickle lacks."""

    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name == "_set_state":
            return _own_setstate
        return super().find_class(module, name)


class ModuleHandle:
    """A shared module: its structure (pickled, without weights), what
    stands for each weight in it, and the :class:`dlpx.Handle` of the
    segment holding the weights.  Picklable; :meth:`load` rebuilds the
    module; :meth:`close` (the producer's; idempotent, also on leaving
    ``with``) stops giving the segment out, and loaded modules stay valid.

    ``keys[i]`` is the segment's tensor that persistent id i of the
    skeleton stands for; the ids in ``params`` are parameters made from
    their tensor itself, those in ``own_params`` parameters of their own
    (their tensor is also a buffer); the others are buffers."""

    __slots__ = ("tensors", "skeleton", "keys", "params", "own_params", "torch_version")

    def __init__(self, tensors: _share.Handle, skeleton: bytes, refs: tuple[tuple[str, bool], ...],
                 torch_version: str) -> None:
        self.tensors = tensors
        self.skeleton = skeleton
        self.keys = tuple(k for k, _ in refs)
        buffers = {k for k, is_param in refs if not is_param}
        self.params = tuple(i for i, (k, p) in enumerate(refs) if p and k not in buffers)
        self.own_params = tuple(i for i, (k, p) in enumerate(refs) if p and k in buffers)
        self.torch_version = torch_version

    def __getstate__(self) -> Any:
        return (self.tensors, self.skeleton, self.keys, self.params, self.own_params,
                self.torch_version)

    def __setstate__(self, state: Any) -> None:
        # what load() uses is checked as it is used: anything damaged is a
        # ValueError there
        if type(state) is not tuple or len(state) != 6:
            raise ValueError("dlpx.torch.ModuleHandle: a damaged pickle")
        (self.tensors, self.skeleton, self.keys, self.params, self.own_params,
         self.torch_version) = state

    def __repr__(self) -> str:
        return f"dlpx.torch.ModuleHandle({len(self.keys)} tensors, {self.tensors!r})"

    def load(self, *, timeout: float = 5.0) -> torch.nn.Module:
        """The module with its weights mapped from the segment, zero copy,
        ``requires_grad`` off, in the training/eval mode it was shared in."""
        weights = _share.attach(self.tensors, _convert.TORCH, timeout=timeout)
        try:
            objs = list(map(weights.__getitem__, self.keys))
        except KeyError as e:
            raise ValueError(f"the shared weights have no tensor {e.args[0]!r}: a damaged "
                             "handle") from None
        except TypeError:
            raise ValueError("dlpx.torch.ModuleHandle: damaged keys") from None
        try:
            # What Parameter(t, False) makes of a plain tensor that requires
            # no grad (torch.Tensor._make_subclass: an alias of class
            # Parameter), made by turning the tensor, which nothing else
            # holds, into one.
            for i in self.params:
                objs[i].__class__ = _PARAM
            for i in self.own_params:
                objs[i] = torch.Tensor._make_subclass(_PARAM, objs[i], False)
            u = pickle.Unpickler(io.BytesIO(self.skeleton)) \
                if self.torch_version == torch.__version__ else \
                _CompatUnpickler(io.BytesIO(self.skeleton))
        except (IndexError, TypeError) as e:
            raise ValueError(f"dlpx.torch.ModuleHandle: a damaged handle ({e})") from None
        u.persistent_load = objs.__getitem__  # type: ignore[assignment,method-assign]
        try:
            module = u.load()
        except (IndexError, TypeError) as e:
            raise ValueError(f"dlpx.torch.ModuleHandle: a damaged skeleton ({e})") from None
        if not isinstance(module, torch.nn.Module):
            raise ValueError("dlpx.torch.ModuleHandle: the skeleton is not a module")
        return module

    def close(self) -> None:
        self.tensors.close()

    def __enter__(self) -> "ModuleHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_PARAM = torch.nn.Parameter


def share_module(module: torch.nn.Module, *, name: Optional[str] = None) -> ModuleHandle:
    """Shares |module| (a ``torch.nn.Module`` on the CPU) with other
    processes: its parameters and buffers are copied once into one shared
    segment (tied ones once), and the returned :class:`ModuleHandle` is
    what workers unpickle and :meth:`~ModuleHandle.load`.  |name| makes
    the segment named (see :func:`dlpx.share`)."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"share_module needs a torch.nn.Module, not {type(module).__name__}")
    if isinstance(module, torch.jit.ScriptModule):
        raise TypeError("share_module shares eager modules, not a TorchScript "
                        f"{type(module).__name__} (its structure does not pickle): share the "
                        "eager module and torch.jit.script it in each worker after load()")
    key_of, tensors = _places(module)
    skeleton, refs = _skeleton(module, key_of)
    return ModuleHandle(_share.share(tensors, name=name, tied="error"), skeleton, refs,
                        torch.__version__)
