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

import copy
import io
import pickle
from itertools import repeat
from typing import Any, Optional, cast

import torch

from . import _convert, _share

__all__ = ["share_module", "ModuleHandle"]

# A place of a module's tensors: (submodule path, attribute, is a
# parameter, key of the tensor in the segment).
_Place = tuple[str, str, bool, str]


def _places(module: torch.nn.Module) -> tuple[list[_Place], dict[str, torch.Tensor]]:
    """Every parameter and buffer slot of |module| (shared submodules and
    tied tensors included, once per place) and the distinct tensors, keyed
    by the first full name that holds each."""
    places: list[_Place] = []
    tensors: dict[str, torch.Tensor] = {}
    key_of: dict[int, str] = {}
    for path, mod in module.named_modules(remove_duplicate=False):
        for is_param, slots in ((True, mod._parameters), (False, mod._buffers)):
            for attr, t in slots.items():
                if t is None:
                    continue
                if t.device.type != "cpu":
                    raise ValueError(f"{path + '.' if path else ''}{attr} is on {t.device}: "
                                     "share_module shares host (CPU) tensors")
                key = key_of.get(id(t))
                if key is None:
                    key = key_of[id(t)] = f"{path}.{attr}" if path else attr
                    tensors[key] = t.detach()
                places.append((path, attr, is_param, key))
    return places, tensors


# A place as ModuleHandle.load fills it: (index of the submodule in the
# skeleton's list of submodules, attribute, is a parameter, key).
_Slot = tuple[int, str, bool, str]


def _skeleton(module: torch.nn.Module, places: list[_Place]) -> tuple[bytes, tuple[_Slot, ...]]:
    """|module| pickled with every parameter and buffer slot emptied (None):
    the structure without the weights, which costs nothing to unpickle;
    :meth:`ModuleHandle.load` fills every slot before anyone sees it.  The
    pickle holds (the module, its submodules that hold tensors), so that
    load finds them without walking the module; the slots say where each
    tensor goes in that list."""
    memo: dict[int, Any] = {}
    for path, mod in module.named_modules(remove_duplicate=False):
        for slots in (mod._parameters, mod._buffers):
            for t in slots.values():
                if t is not None:
                    memo[id(t)] = None  # deepcopy takes a memo entry as the copy
    skel = copy.deepcopy(module, memo)
    # by path as named_modules walks (get_submodule would take a submodule
    # named like a method of Module, "half" or "float", for the method)
    by_path = dict(skel.named_modules(remove_duplicate=False))
    where: dict[str, int] = {}
    mods: list[torch.nn.Module] = []
    plan: list[_Slot] = []
    for path, attr, is_param, key in places:
        i = where.get(path)
        if i is None:
            i = where[path] = len(mods)
            mods.append(by_path[path])
        plan.append((i, attr, is_param, key))
    buf = io.BytesIO()
    try:
        pickle.dump((skel, mods), buf, protocol=pickle.HIGHEST_PROTOCOL)
    except (AttributeError, TypeError, pickle.PicklingError) as e:
        raise TypeError(f"the module's structure cannot be pickled ({e}): workers rebuild it "
                        "from a pickle, so its classes must be importable (defined at module "
                        "level, not inside a function)") from None
    return buf.getvalue(), tuple(plan)


class ModuleHandle:
    """A shared module: its structure (pickled, without weights), where each
    weight goes, and the :class:`dlpx.Handle` of the segment holding the
    weights.  Picklable; :meth:`load` rebuilds the module; :meth:`close`
    (the producer's; idempotent, also on leaving ``with``) stops giving the
    segment out, and loaded modules stay valid."""

    __slots__ = ("tensors", "skeleton", "places", "slots", "_params")

    def __init__(self, tensors: _share.Handle, skeleton: bytes, places: list[_Place],
                 slots: tuple[_Slot, ...]) -> None:
        self.tensors = tensors
        self.skeleton = skeleton
        self.places = places
        self.slots = slots
        self._params: Optional[tuple[str, ...]] = None

    def __getstate__(self) -> Any:
        return (self.tensors, self.skeleton, self.places, self.slots)

    def __setstate__(self, state: Any) -> None:
        self.tensors, self.skeleton, self.places, self.slots = state
        self._params = None

    def __repr__(self) -> str:
        return f"dlpx.torch.ModuleHandle({len(self.places)} tensors, {self.tensors!r})"

    def load(self, *, timeout: float = 5.0) -> torch.nn.Module:
        """The module with its weights mapped from the segment, zero copy,
        ``requires_grad`` off, in the training/eval mode it was shared in."""
        weights = _share.attach(self.tensors, _convert.TORCH, timeout=timeout)
        module: Any
        module, mods = pickle.loads(self.skeleton)
        keys = self._params
        if keys is None:  # the distinct parameters' keys, once per handle
            keys = self._params = tuple(dict.fromkeys(
                key for _, _, is_param, key in self.slots if is_param))
        try:
            # what Parameter(t, False) does, without its checks: one call each
            params = dict(zip(keys, map(torch.Tensor._make_subclass, repeat(_PARAM),
                                        map(weights.__getitem__, keys), repeat(False))))
            for i, attr, is_param, key in self.slots:
                if is_param:
                    mods[i]._parameters[attr] = params[key]
                else:
                    mods[i]._buffers[attr] = weights[key]
        except KeyError as e:
            raise ValueError(f"the shared weights have no tensor {e.args[0]!r}: a damaged "
                             "handle") from None
        return cast("torch.nn.Module", module)

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
    places, tensors = _places(module)
    skeleton, slots = _skeleton(module, places)
    return ModuleHandle(_share.share(tensors, name=name, tied="error"), skeleton, places, slots)
