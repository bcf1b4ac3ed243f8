"""The worker side of bench/bench_share.py: one class, Worker, run either in
a multiprocessing (forkserver) child through serve() or as a Ray actor.

A worker is made for one sharing method and one model shape.  It imports
torch (one thread) and the method's modules, runs a tiny forward pass (so
the idle worker has what any worker has: torch's allocator, its thread pool,
torch.nn), and then waits.  load() turns what the parent sent (the
"handle") into a model ready to run and says how long each step took;
forward() runs it; write() changes its weights in place; repeat() loads
many times and says what the process's PSS did.

Through serve(), handles arrive as bytes (what the parent pickled with the
method's pickler) and the worker unpickles them itself, timed; Ray actors
get them already unpickled by Ray.
"""

from __future__ import annotations

import gc
import importlib
import os
import pickle
import sys
import time
import traceback

clock = time.perf_counter


def pss_kib(pid="self"):
    """The Pss line of /proc/<pid>/smaps_rollup, in KiB (None: gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def make_model(spec):
    """nn.Sequential of Linear(i, o) for (i, o) in |spec|: parameters "k.weight",
    "k.bias"; built on the current default device (meta for the loaders)."""
    import torch
    return torch.nn.Sequential(*[torch.nn.Linear(i, o) for i, o in spec])


def assign(spec, sd):
    """A model built on the meta device, given the tensors of |sd| with
    load_state_dict(assign=True): no copy, no initialisation."""
    import torch
    with torch.device("meta"):
        m = make_model(spec)
    m.load_state_dict(sd, assign=True)
    return m.eval()


class Raw:
    """A handle as the parent pickled it (through serve())."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data


# ---- the loaders: handle (unpickled) -> (model, keep, times) -----------------------------
# times: "attach" (every tensor in hand) and "ready" (a model ready to run),
# seconds from the moment the handle is in hand (already unpickled).


def _timed_sd(fn, spec):
    t0 = clock()
    sd = fn()
    t1 = clock()
    m = assign(spec, sd)
    t2 = clock()
    return m, None, {"attach": t1 - t0, "ready": t2 - t0}


def load_copy(obj, spec):  # obj: the state dict itself (its unpickling was the copy)
    return _timed_sd(lambda: obj, spec)


def load_torch(obj, spec, mmap=False):
    import torch
    return _timed_sd(lambda: torch.load(obj, weights_only=True, mmap=mmap), spec)


def load_torch_mmap(obj, spec):
    return load_torch(obj, spec, mmap=True)


def load_safetensors(obj, spec):
    from safetensors.torch import load_file
    return _timed_sd(lambda: load_file(obj), spec)


def load_module(obj, spec):  # torch.multiprocessing: obj is the module (unpickling attached it)
    t0 = clock()
    m = obj.eval()
    t = clock() - t0
    return m, None, {"attach": t, "ready": t}


def load_ray_get(obj, spec):
    import ray
    return _timed_sd(lambda: ray.get(obj[0]), spec)


def load_ray_zerocopy(obj, spec):
    import ray
    refs = obj.model_refs
    t0 = clock()
    got = ray.get(list(refs.values()))  # the skeleton and the NumPy arrays, zero copy
    t1 = clock()
    del got
    t2 = clock()
    m = obj.load()  # ray.get again and the arrays put into the skeleton
    t3 = clock()
    return m, None, {"attach": t1 - t0, "ready": t3 - t2}


def load_dlpx_attach(obj, spec):
    import dlpx
    t0 = clock()
    tensors = dlpx.attach(obj, framework="torch")
    t1 = clock()
    m = assign(spec, tensors)
    t2 = clock()
    return m, obj, {"attach": t1 - t0, "ready": t2 - t0}


def load_dlpx_module(obj, spec):
    t0 = clock()
    m = obj.load()
    t = clock() - t0
    return m, obj, {"attach": None, "ready": t}


LOADERS = {
    "copy": load_copy,
    "torch.load": load_torch,
    "torch.load.mmap": load_torch_mmap,
    "safetensors": load_safetensors,
    "torch.mp": load_module,
    "ray.get": load_ray_get,
    "ray-zerocopy": load_ray_zerocopy,
    "dlpx.attach": load_dlpx_attach,
    "dlpx.module": load_dlpx_module,
}


class Worker:
    def __init__(self, method, spec, imports=()):
        os.environ["OMP_NUM_THREADS"] = "1"
        import numpy as np
        import torch
        torch.set_num_threads(1)
        self.model = self.keep = None
        self.configure(method, spec, imports)
        # what any worker has: torch.nn, the meta device's kernels, the
        # allocator, a thread pool (a tiny model built as the loaders build them)
        tiny = assign([(8, 8)], {"0.weight": torch.ones(8, 8), "0.bias": torch.ones(8)})
        with torch.no_grad():
            tiny(torch.ones(4, 8)).sum().item()
        del tiny
        self._np = np
        gc.collect()
        gc.freeze()  # the imports' objects: later collections skip them

    def configure(self, method, spec, imports=()):
        """Serve |method| for a model of shape |spec| from now on."""
        self.drop()
        for name in imports:
            importlib.import_module(name)
        self.method, self.spec = method, [tuple(s) for s in spec]
        self.loader = LOADERS[method]
        if imports:
            gc.collect()
            gc.freeze()

    def pid(self):
        return os.getpid()

    def pss_kib(self):
        return pss_kib()

    @staticmethod
    def _obtain(h):
        """(the unpickled handle, seconds its unpickling took or None)."""
        if isinstance(h, Raw):
            t0 = clock()
            obj = pickle.loads(h.data)
            return obj, clock() - t0
        return h, None

    def _load_one(self, h):
        obj, t_unpickle = self._obtain(h)
        m, keep, times = self.loader(obj, self.spec)
        times["unpickle"] = t_unpickle
        return m, keep, times

    def load(self, h):
        self.drop()
        self.model, self.keep, times = self._load_one(h)
        gc.collect()
        return times

    def forward(self, x):
        import torch
        with torch.no_grad():
            y = self.model(torch.from_numpy(x))
        return y.detach().numpy().copy()

    def load_forward(self, h, x):
        times = self.load(h)
        return times, self.forward(x), pss_kib()

    def write(self):
        """Multiplies every parameter by 2 in place through PyTorch: under
        no_grad, and where PyTorch refuses, under inference_mode (what a
        writer who means it would do next)."""
        import torch
        params = list(self.model.parameters())
        out = {"params": len(params)}
        done = 0
        try:
            with torch.no_grad():
                for p in params:
                    p.mul_(2)
                    done += 1
            out.update(how="no_grad", done=done)
            return out
        except Exception as e:
            out["refused"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            out["done_before_refusal"] = done
        done2 = 0
        try:
            with torch.inference_mode():
                for p in params[done:]:
                    p.mul_(2)
                    done2 += 1
            out.update(how="inference_mode", done=done + done2)
        except Exception as e:
            out.update(how=None, done=done + done2,
                       refused2=f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")
        return out

    def drop(self):
        self.model = self.keep = None
        gc.collect()

    def time_loads(self, handles, reps):
        """|reps| loads, the last one dropped before each: their times."""
        out = []
        for i in range(reps):
            self.drop()
            m, keep, times = self._load_one(handles[i % len(handles)])
            out.append(times)
            del m, keep
        self.drop()
        return out

    def repeat(self, handles, n, x):
        """|n| loads and forward passes, each model dropped before the next
        load: PSS after the first and after the last."""
        first = None
        for i in range(n):
            self.drop()
            self.model, self.keep, _ = self._load_one(handles[i % len(handles)])
            self.forward(x)
            gc.collect()
            if i == 0:
                first = pss_kib()
        last = pss_kib()
        self.drop()
        return {"first_kib": first, "last_kib": last, "n": n}


def serve(conn, method, spec, imports):
    """A multiprocessing worker: commands ("name", args, npayloads) on
    |conn|, each followed by npayloads raw handles (send_bytes); answers
    ("ok", result) or ("error", text)."""
    try:
        w = Worker(method, spec, imports)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ok", os.getpid()))
    while True:
        try:
            name, args, npay = conn.recv()
        except EOFError:
            return
        if name == "exit":
            conn.send(("ok", None))
            return
        try:
            raws = [Raw(conn.recv_bytes()) for _ in range(npay)]
            if name in ("load", "load_forward"):
                args = (raws[0],) + tuple(args)
            elif name in ("time_loads", "repeat"):
                args = (raws,) + tuple(args)
            del raws
            res = getattr(w, name)(*args)
            conn.send(("ok", res))
        except BaseException:
            conn.send(("error", traceback.format_exc()))
        args = res = None


if __name__ == "__main__":
    sys.exit("run bench/bench_share.py")
