"""Sharing a model's weights with worker processes: dlpx.share / attach and
dlpx.torch.share_module beside a copy per worker, torch.load, safetensors
mmap, torch.multiprocessing, Ray's ray.get and ray-zerocopy, measured in the
same run.  Prints tables and writes JSON; never asserts on time.

    python bench/bench_share.py [--quick] [--workers 1,2,4,8] [--size-mib N]
        [--attach-mib N] [--reps N] [--loads N] [--only KEY] [--no-ray]
        [--start-method forkserver|spawn] [--store-mib N] [--dir DIR]
        [--json PATH] [-v]

The models: nn.Sequential of Linear layers, float32, random weights saved
once as model.pt (torch.save) and model.safetensors in a new directory
under --dir (default /tmp), removed at the end.
  - footprint, isolation and repeated loads: 8 x Linear(4096, 4096)
    (16 tensors, 512 MiB; --size-mib changes the width);
  - attach and ready times: 100 Linear layers alternating (a, b), (b, a),
    200 tensors, 1 GiB (--attach-mib), and the same 200 tensors at 1/64 of
    the size, to show what depends on the byte size.

Workers are processes started by multiprocessing (forkserver, torch
preloaded; --start-method) or, for the Ray rows, Ray actors
(num_cpus=0), fresh for every measurement (--quick reuses the Ray
actors, so its Ray footprints are rough).  Every worker runs one thread (OMP_NUM_THREADS=1,
torch.set_num_threads(1)), imports its method's modules and builds and
runs a tiny model the way the loaders do (meta device, assign) before
anything is measured (bench/share_workers.py).  Ray is started when its
rows begin (--store-mib, default 3 x the attach model) and started anew
before each Ray method's footprint runs.

The methods (what the parent makes once, what each worker gets):
  copy        the state dict pickled with pickle (torch's multiprocessing
              reductions would share it): every worker unpickles a copy
  torch.load  the path of model.pt; torch.load(weights_only=True), also
              with mmap=True
  safetensors the path of model.safetensors; safetensors.torch.load_file
              (mmap)
  torch.mp    model.share_memory(), the module sent with torch's
              multiprocessing pickler (file-descriptor strategy)
  ray.get     ray.put(state_dict) once; each actor ray.get()s it
  ray-zerocopy ModelWrapper.from_model(model, mode="actor"); each actor
              .load()s it
  dlpx        h = dlpx.share(state_dict), each worker dlpx.attach(h,
              framework="torch"); and dlpx.torch.share_module(model), each
              worker mh.load()
State dicts become models by load_state_dict(assign=True) on a model built
on the meta device (no copy, no initialisation).

Footprint: N workers (1, 2, 4, 8) each load the model and run one forward
pass (batch 4).  "workers" = (sum of the workers' PSS, /proc/<pid>/
smaps_rollup, after the forward pass - the sum of the same workers' PSS
while idle, just before the load) / the model's bytes.  "+producer" adds
what the producing side gained over the same time: the PSS of this
process and its other descendants (the forkserver, Ray's raylet, GCS and
agents; not Ray's idle pool workers), after it dropped its own copy of the
model where the method allows it (copy: the pickled bytes; torch.mp: the
module, once every worker has it; ray-zerocopy: the module, once wrapped;
dlpx: the state dict or module, once shared), its heap trimmed.  Pages of
shared memory count in the PSS of the processes that map them, split
among them: a producer that still maps them (Ray's driver, which wrote the
object) takes its share and the workers' column shows less than the
model.  Pages mapped by nobody count nowhere, so each Ray footprint run's
object is kept until the method's runs end (the next one lands on new
pages).  Shmem is /proc/meminfo's Shmem over the same time.

Isolation: two workers load the model; worker 0 multiplies every parameter
by 2 in place (torch.no_grad(), p.mul_(2); where PyTorch refuses, once
more under torch.inference_mode()); then worker 1, and a worker started
after the write, compute the output for a fixed input, compared with the
original output.

Repeated loads: one worker loads (and runs) the model --loads times (20),
dropping the last model before each load; its PSS after the first and
after the last.  The worker holds its handle throughout (for copy: the
pickled bytes, a second copy).

Attach and ready: one worker, --reps loads (7), the median and the
fastest.  From the handle in hand, already unpickled, to every tensor in
hand ("attach": nothing is read from the pages; for a copy or a file,
their bytes are) and to a model ready to run ("ready").  For copy and
torch.mp the unpickling is the attaching, so it is counted; for dlpx it is
shown apart ("unpickle").  Ray hands the actor its arguments unpickled:
ray.get is the attach; ray-zerocopy's attach is ray.get of its refs and
its ready is wrapper.load() (which gets them again).  Rows timed while
other processes (or the hypervisor) took more than 10% of the CPUs are
marked busy (from /proc/stat, less this process tree's CPU time).

A method that fails is reported in its rows ("n/a: why"); the run goes on.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
os.environ["OMP_NUM_THREADS"] = "1"  # before torch: this process and every worker
os.environ["PYTHONPATH"] = os.pathsep.join(  # Ray's workers import share_workers
    [HERE] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

import numpy as np  # noqa: E402

import machine as _machine  # noqa: E402  bench/machine.py, beside this script
import share_workers as W  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
clock = time.perf_counter
VERBOSE = [False]
NCPU = os.cpu_count() or 1


def say(msg):
    """Progress, on stderr: with --verbose or when stderr is a terminal."""
    if VERBOSE[0] or sys.stderr.isatty():
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def short(e):
    s = f"{type(e).__name__}: {e}".strip()
    return s.splitlines()[0][:200] if s else type(e).__name__


# ---- processes and their memory -----------------------------------------------------------


def _ppids():
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
            out[int(d)] = int(s[s.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            pass
    return out


def descendants(root):
    pp = _ppids()
    kids = {}
    for pid, ppid in pp.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def producer_pids(exclude):
    """This process and its descendants, less |exclude| (the workers) and
    Ray's idle pool workers (they come and go by themselves)."""
    ex = set(exclude)
    out = [os.getpid()]
    for pid in descendants(os.getpid()):
        if pid in ex:
            continue
        c = cmdline(pid)
        if c.startswith(("ray::IDLE", "ray::Worker")) or "default_worker.py" in c:
            continue
        out.append(pid)
    return out


def pss_sum(pids):
    return sum(W.pss_kib(p) or 0 for p in pids) * 1024


def shmem_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Shmem:"):
                return int(line.split()[1]) * 1024
    return 0


def mem_total():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            v = f.read()
        v = v[v.rindex(")") + 2:].split()
        return int(v[11]) + int(v[12])  # utime + stime
    except (OSError, ValueError, IndexError):
        return None


def _tree_ticks():
    out = {}
    for pid in [os.getpid()] + descendants(os.getpid()):
        t = _ticks(pid)
        if t is not None:
            out[pid] = t
    return out


def _machine_ticks():
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v[:8]) - v[3] - v[4]  # all but idle and iowait (steal included)
    except (OSError, ValueError):
        return None


class Others:
    """The share of all CPUs that processes other than this one and its
    descendants (and the hypervisor: steal) used since made."""

    def __init__(self):
        self.t, self.all, self.tree = clock(), _machine_ticks(), _tree_ticks()

    def share(self, least=0.2):
        wall = clock() - self.t
        a = _machine_ticks()
        if a is None or self.all is None or wall < least:
            return None
        tree = _tree_ticks()
        ours = sum(t - self.tree.get(p, 0) for p, t in tree.items())
        hz = os.sysconf("SC_CLK_TCK")
        return min(1.0, max(0.0, ((a - self.all) - ours) / hz / (wall * NCPU)))


def signame(code):
    import signal
    if code is None:
        return "still running"
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit {code}"


# ---- the models ------------------------------------------------------------------------------


class Model:
    """Random float32 weights of make_model(spec), saved as model.pt and
    model.safetensors; the output for a fixed input (batch 4)."""

    def __init__(self, name, spec, dirpath, seed=0):
        import torch
        from safetensors.torch import save_file
        self.name, self.spec = name, [tuple(s) for s in spec]
        g = torch.Generator().manual_seed(seed)
        sd = {}
        for k, (i, o) in enumerate(self.spec):
            a = 1.0 / i ** 0.5
            sd[f"{k}.weight"] = torch.empty(o, i).uniform_(-a, a, generator=g)
            sd[f"{k}.bias"] = torch.empty(o).uniform_(-a, a, generator=g)
        self.ntensors = len(sd)
        self.nbytes = sum(t.numel() * t.element_size() for t in sd.values())
        d = os.path.join(dirpath, name)
        os.makedirs(d, exist_ok=True)
        self.pt = os.path.join(d, "model.pt")
        self.st = os.path.join(d, "model.safetensors")
        torch.save(sd, self.pt)
        save_file(sd, self.st)
        self.x = torch.empty(4, self.spec[0][0]).uniform_(-1, 1, generator=g).numpy()
        m = W.assign(self.spec, sd)
        with torch.no_grad():
            self.ref = m(torch.from_numpy(self.x)).numpy().copy()
        del m, sd
        gc.collect()

    def describe(self):
        kinds = {}
        for s in self.spec:
            kinds[s] = kinds.get(s, 0) + 1
        layers = " + ".join(f"{n} x Linear{s}" for s, n in kinds.items())
        return (f"{layers}: {self.ntensors} float32 tensors, {self.nbytes / MiB:.1f} MiB "
                f"({self.nbytes} bytes)")

    def state_dict(self):
        """A private copy, as a producer holds one."""
        import torch
        return torch.load(self.pt, weights_only=True)

    def module(self):
        return W.assign(self.spec, self.state_dict())


def same(y, ref):
    y = np.asarray(y)
    if y.shape != ref.shape or not np.all(np.isfinite(y)):
        return False
    return bool(np.allclose(y, ref, rtol=1e-4, atol=1e-6 * float(np.abs(ref).max() or 1.0)))


# ---- the methods (the producer's side) ----------------------------------------------------


class Method:
    key = label = ""
    backend = "mp"
    imports: tuple = ()
    unpickle_is_attach = False  # the unpickling of the handle is the attach
    fresh_handles = False       # each handle can be attached once (torch.mp)

    def available(self):
        """None, or why the method cannot run here."""
        return None

    def setup(self, model):
        raise NotImplementedError

    def handle(self):
        raise NotImplementedError

    def release(self):
        """Drops the producer's own copy of the model, where it may."""

    def keepalive(self):
        """What holds the shared copy (Ray: the object), to keep a while."""
        return None

    def close(self):
        gc.collect()


class Copy(Method):
    key, label = "copy", "copy per worker (pickled state_dict)"
    unpickle_is_attach = True

    def setup(self, model):
        sd = model.state_dict()
        self.blob = pickle.dumps(sd, protocol=pickle.HIGHEST_PROTOCOL)
        del sd

    def handle(self):
        return self.blob

    def release(self):
        self.blob = None
        gc.collect()

    close = release


class TorchLoad(Method):
    def __init__(self, mmap):
        self.mmap = mmap
        self.key = "torch.load.mmap" if mmap else "torch.load"
        self.label = "torch.load(mmap=True) per worker" if mmap else "torch.load per worker"

    def setup(self, model):
        self.blob = pickle.dumps(model.pt)

    def handle(self):
        return self.blob


class Safetensors(Method):
    key, label = "safetensors", "safetensors load_file (mmap) + assign"
    imports = ("safetensors.torch",)

    def setup(self, model):
        self.blob = pickle.dumps(model.st)

    def handle(self):
        return self.blob


class TorchMP(Method):
    key, label = "torch.mp", "torch.multiprocessing share_memory()"
    unpickle_is_attach = True
    fresh_handles = True

    def setup(self, model):
        from multiprocessing.reduction import ForkingPickler
        import torch.multiprocessing  # noqa: F401  (its reductions on ForkingPickler)
        self.pickler = ForkingPickler
        self.model = model.module()
        self.model.share_memory()

    def handle(self):
        return bytes(self.pickler.dumps(self.model))

    def release(self):
        self.model = None
        gc.collect()

    close = release


class RayGet(Method):
    key, label = "ray.get", "Ray ray.put once, ray.get (state_dict)"
    backend = "ray"

    def available(self):
        return ray_missing()

    def setup(self, model):
        import ray
        sd = model.state_dict()
        self.ref = ray.put(sd)
        del sd
        gc.collect()

    def handle(self):
        return [self.ref]  # in a list: Ray would resolve a top-level ref itself

    def keepalive(self):
        return self.ref

    def close(self):
        self.ref = None
        gc.collect()


class RayZeroCopy(Method):
    key, label = "ray-zerocopy", "ray-zerocopy ModelWrapper (actor) .load()"
    backend = "ray"
    imports = ("ray_zerocopy",)

    def available(self):
        r = ray_missing()
        if r:
            return r
        try:
            import ray_zerocopy  # noqa: F401
        except Exception as e:
            return short(e)
        return None

    def setup(self, model):
        from ray_zerocopy import ModelWrapper
        m = model.module()
        self.w = ModelWrapper.from_model(m, mode="actor")
        del m
        gc.collect()

    def handle(self):
        return self.w

    def keepalive(self):
        return self.w

    def close(self):
        self.w = None
        gc.collect()


class DlpxAttach(Method):
    key, label = "dlpx.attach", "dlpx.share + attach (torch) + assign"
    imports = ("dlpx",)

    def available(self):
        try:
            import dlpx
        except Exception as e:
            return short(e)
        if not (hasattr(dlpx, "share") and hasattr(dlpx, "attach")):
            return f"dlpx {dlpx.__version__} has no share/attach"
        return None

    def setup(self, model):
        import dlpx
        sd = model.state_dict()
        self.h = dlpx.share(sd)
        del sd
        gc.collect()
        self.blob = pickle.dumps(self.h)

    def handle(self):
        return self.blob

    def close(self):
        h, self.h, self.blob = getattr(self, "h", None), None, None
        if h is not None:
            h.close()
        gc.collect()


class DlpxModule(Method):
    key, label = "dlpx.module", "dlpx.torch.share_module -> load()"
    imports = ("dlpx", "dlpx.torch")

    def available(self):
        try:
            import dlpx
            import dlpx.torch
        except Exception as e:
            return short(e)
        if not hasattr(dlpx.torch, "share_module"):
            return f"dlpx {dlpx.__version__}: dlpx.torch has no share_module"
        return None

    def setup(self, model):
        import dlpx.torch
        m = model.module()
        self.h = dlpx.torch.share_module(m)
        del m
        gc.collect()
        self.blob = pickle.dumps(self.h)

    def handle(self):
        return self.blob

    def close(self):
        h, self.h, self.blob = getattr(self, "h", None), None, None
        if h is not None and hasattr(h, "close"):
            h.close()
        gc.collect()


def all_methods():
    return [Copy(), TorchLoad(False), TorchLoad(True), Safetensors(), TorchMP(),
            RayGet(), RayZeroCopy(), DlpxAttach(), DlpxModule()]


# ---- Ray ----------------------------------------------------------------------------------------


RAY = {"state": None, "error": None, "store": 0}


def ray_missing():
    if RAY["error"]:
        return RAY["error"]
    try:
        import ray  # noqa: F401
    except Exception as e:
        RAY["error"] = f"no ray ({short(e)})"
    return RAY["error"]


def ray_up():
    if RAY["state"] == "up":
        return
    import logging
    import ray
    say(f"starting Ray (object store {RAY['store'] / MiB:.0f} MiB) ...")
    t0 = clock()
    ray.init(num_cpus=NCPU, object_store_memory=RAY["store"], include_dashboard=False,
             log_to_driver=False, logging_level=logging.ERROR)
    RAY["state"] = "up"
    RAY.setdefault("inits_s", []).append(clock() - t0)
    RAY["init_s"] = statistics.median(RAY["inits_s"])


def ray_down():
    if RAY["state"] == "up":
        import ray
        ray.shutdown()
        RAY["state"] = "down"
        RayWorker._cls = None


# ---- worker pools -----------------------------------------------------------------------------


class WorkerDied(Exception):
    pass


class WorkerError(Exception):
    pass


class MPWorker:
    """A multiprocessing worker process running share_workers.serve."""

    def __init__(self, mpctx, method, spec):
        self.conn, b = mpctx.Pipe()
        self.proc = mpctx.Process(target=W.serve, args=(b, method.key, spec, method.imports),
                                  daemon=True)
        self.proc.start()
        b.close()
        self.pid = None

    def started(self):
        self.pid = self.result(None)

    def submit(self, name, args=(), payloads=()):
        try:
            self.conn.send((name, tuple(args), len(payloads)))
            for p in payloads:
                self.conn.send_bytes(p)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            pass  # the answer (EOF) says why

    def result(self, token):
        try:
            st, res = self.conn.recv()
        except (EOFError, ConnectionResetError):
            self.proc.join(10)
            raise WorkerDied(signame(self.proc.exitcode))
        if st == "error":
            raise WorkerError(res.strip().splitlines()[-1][:300])
        return res

    def alive(self):
        return self.proc.is_alive()

    def close(self):
        if self.proc.is_alive():
            try:
                self.conn.send(("exit", (), 0))
            except OSError:
                pass
            self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


class RayWorker:
    """A Ray actor of share_workers.Worker (num_cpus=0: any number of them)."""

    _cls = None

    def __init__(self, method, spec):
        import ray
        ray_up()
        if RayWorker._cls is None:
            RayWorker._cls = ray.remote(num_cpus=0)(W.Worker)
        self.actor = RayWorker._cls.remote(method.key, spec, method.imports)
        self._pid = self.actor.pid.remote()
        self.pid, self.dead = None, False

    def started(self):
        self.pid = self.result(self._pid)

    def submit(self, name, args=(), payloads=()):
        if name in ("load", "load_forward"):
            args = (payloads[0],) + tuple(args)
        elif name in ("time_loads", "repeat"):
            args = (list(payloads),) + tuple(args)
        return getattr(self.actor, name).remote(*args)

    def result(self, token):
        import ray
        from ray.exceptions import RayActorError, RayTaskError
        try:
            return ray.get(token)
        except RayActorError as e:
            self.dead = True
            raise WorkerDied(f"actor died: {short(e)[:100]}")
        except RayTaskError as e:
            raise WorkerError(str(e).strip().splitlines()[-1][:300])

    def alive(self):
        return not self.dead

    def close(self):
        import ray
        try:
            ray.kill(self.actor)
        except Exception:
            pass
        self.dead = True


class Pool:
    def __init__(self, workers):
        self.workers = workers
        self.pids = [w.pid for w in workers]

    def submit(self, i, name, args=(), payloads=()):
        return (i, self.workers[i].submit(name, args, payloads))

    def result(self, fut):
        i, token = fut
        return self.workers[i].result(token)

    def call(self, i, name, args=(), payloads=()):
        return self.result(self.submit(i, name, args, payloads))


class Runner:
    """Starts workers; keeps those of the backends in |reuse| (--quick:
    Ray's, slow to start) for later pools, reconfigured for the next
    method (fewer starts, less exact numbers); |quick|: shorter pauses."""

    def __init__(self, start_method, reuse=(), quick=False):
        import multiprocessing as mp
        self.mpctx = mp.get_context(start_method)
        if start_method == "forkserver":
            self.mpctx.set_forkserver_preload(["torch", "share_workers"])
        self.reuse, self.quick = set(reuse), quick
        self.cache = {"mp": [], "ray": []}
        self.live = []
        self.starts = {"mp": 0, "ray": 0}
        self.hold = []

    def pool(self, method, spec, n):
        ws = []
        cache = self.cache[method.backend]
        while cache and len(ws) < n:
            w = cache.pop()
            if not w.alive():
                self._forget(w)
                continue
            try:
                w.result(w.submit("configure", (method.key, spec, method.imports)))
                ws.append(w)
            except (WorkerDied, WorkerError):
                w.close()
                self._forget(w)
        fresh = []
        try:
            for _ in range(n - len(ws)):
                w = (RayWorker(method, spec) if method.backend == "ray"
                     else MPWorker(self.mpctx, method, spec))
                self.starts[method.backend] += 1
                fresh.append(w)
                self.live.append(w)
            for w in fresh:
                w.started()
        except BaseException:
            self.done(Pool(ws + fresh), keep=False)
            raise
        return Pool(ws + fresh)

    def _forget(self, w):
        if w in self.live:
            self.live.remove(w)

    def done(self, pool, keep=True):
        for w in pool.workers:
            if keep and ("ray" if type(w) is RayWorker else "mp") in self.reuse and w.alive():
                try:
                    w.result(w.submit("drop"))
                    self.cache["ray" if type(w) is RayWorker else "mp"].append(w)
                    continue
                except (WorkerDied, WorkerError):
                    pass
            w.close()
            self._forget(w)
        if not self.quick:
            time.sleep(0.1)  # let the processes go before the next measurement

    def worker_pids(self):
        return [w.pid for w in self.live if w.pid]

    def close(self, backend=None):
        for k, ws in self.cache.items():
            if backend in (None, k):
                for w in ws:
                    w.close()
                    self._forget(w)
                ws.clear()


# ---- the measurements --------------------------------------------------------------------------


def _malloc_trim():
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def settle(run):
    """Before a PSS reading: this process's garbage collected and its free
    heap given back (what it freed is no method's cost), workers idle."""
    gc.collect()
    _malloc_trim()
    time.sleep(0.1 if run.quick else 0.3)


def footprint(run, method, model, n):
    """N workers load and run the model: PSS over idle, workers and producer."""
    pool = run.pool(method, model.spec, n)
    try:
        settle(run)
        idle = pss_sum(pool.pids)
        prod0 = pss_sum(producer_pids(run.worker_pids()))
        shm0 = shmem_bytes()
        busy = Others()
        t0 = clock()
        method.setup(model)
        futs = [pool.submit(i, "load_forward", (model.x,), [method.handle()]) for i in range(n)]
        res = [pool.result(f) for f in futs]
        wall = clock() - t0
        method.release()
        settle(run)
        loaded = pss_sum(pool.pids)
        prod1 = pss_sum(producer_pids(run.worker_pids()))
        shm1 = shmem_bytes()
        ok = all(same(y, model.ref) for _, y, _ in res)
        return {"n": n, "idle_bytes": idle, "loaded_bytes": loaded, "others_busy": busy.share(),
                "producer_before": prod0, "producer_after": prod1,
                "workers_x": (loaded - idle) / model.nbytes,
                "producer_x": (prod1 - prod0) / model.nbytes,
                "total_x": (loaded - idle + prod1 - prod0) / model.nbytes,
                "shmem_x": (shm1 - shm0) / model.nbytes,
                "ready_s": [t["ready"] + (t["unpickle"] or 0) for t, _, _ in res],
                "wall_s": wall, "check": "ok" if ok else "WRONG OUTPUT"}
    finally:
        run.done(pool)
        if method.backend == "ray":
            run.hold.append(method.keepalive())
        method.close()


def isolation(run, method, model):
    method.setup(model)
    pools = []
    try:
        pool = run.pool(method, model.spec, 2)
        pools.append(pool)
        futs = [pool.submit(i, "load_forward", (model.x,), [method.handle()]) for i in range(2)]
        before = [pool.result(f)[1] for f in futs]
        if not all(same(y, model.ref) for y in before):
            return {"verdict": "n/a: wrong output before the write"}
        out = {}
        try:
            w = pool.call(0, "write")
            out["write"] = w
            yw = pool.call(0, "forward", (model.x,))
            out["writer_changed"] = not same(yw, model.ref)
        except WorkerDied as e:
            out["crash"] = str(e)
        y1 = pool.call(1, "forward", (model.x,))
        out["other_same"] = same(y1, model.ref)
        later = run.pool(method, model.spec, 1)
        pools.append(later)
        _, y2, _ = later.call(0, "load_forward", (model.x,), [method.handle()])
        out["later_same"] = same(y2, model.ref)
        out["verdict"] = verdict(out)
        return out
    finally:
        for p in pools:
            run.done(p)
        method.close()


def verdict(o):
    others = []
    if not o["other_same"]:
        others.append("a worker started before")
    if not o["later_same"]:
        others.append("a worker started later")
    seen = ("LEAKS (" + " and ".join(others) + " see the write)") if others else "isolated"
    if "crash" in o:
        return f"crash ({o['crash']} in the writer); others: {seen}"
    w = o["write"]
    if w.get("how") is None:
        return f"refused ({w.get('refused')}; under inference_mode: {w.get('refused2')})"
    if not o.get("writer_changed"):
        return f"the write changed nothing for the writer; others: {seen}"
    if w["how"] == "inference_mode":
        return f"no_grad refused ({w['refused'][:70]}); under inference_mode: {seen}"
    return seen


def repeated(pool, method, model, n):
    pool.call(0, "configure", (method.key, model.spec, method.imports))
    method.setup(model)
    try:
        hs = [method.handle() for _ in range(n if method.fresh_handles else 1)]
        r = pool.call(0, "repeat", (n, model.x), hs)
        r["delta_bytes"] = (r["last_kib"] - r["first_kib"]) * 1024
        return r
    finally:
        hs = None
        method.close()


def attach_times(pool, method, model, reps):
    pool.call(0, "configure", (method.key, model.spec, method.imports))
    method.setup(model)
    try:
        hs = [method.handle() for _ in range(reps if method.fresh_handles else 1)]
        busy = Others()
        ts = pool.call(0, "time_loads", (reps,), hs)
        others = busy.share(least=0.05)
    finally:
        hs = None
        method.close()
    out = {"runs": ts, "others_busy": others}

    def pick(f):
        v = [f(t) for t in ts]
        v = [x for x in v if x is not None]
        return (statistics.median(v), min(v)) if v else (None, None)
    ua = method.unpickle_is_attach

    def plus(t, k):  # counted from the handle in hand; for copy and torch.mp, the unpickling
        return None if t[k] is None else t[k] + ((t["unpickle"] or 0) if ua else 0)
    out["attach_s"], out["attach_min_s"] = pick(lambda t: plus(t, "attach"))
    out["ready_s"], out["ready_min_s"] = pick(lambda t: plus(t, "ready"))
    out["unpickle_s"], _ = pick(lambda t: None if ua else t["unpickle"])
    return out


def guarded(what, fn, *a):
    try:
        return fn(*a)
    except Exception as e:
        if os.environ.get("BENCH_TRACE"):
            traceback.print_exc()
        say(f"    {what}: n/a: {short(e)}")
        return {"error": short(e)}


def run_method(run, method, models, args, res):
    r = res[method.key] = {"key": method.key, "label": method.label}
    why = method.available()
    if why:
        r["error"] = why
        say(f"{method.label}: n/a: {why}")
        return
    t0 = clock()
    fp = r["footprint"] = {}
    if method.backend == "ray" and "ray" not in run.reuse:
        # A new object store for the footprint series, whose objects are all
        # kept until it ends: each lands on pages nothing touched before.  (A
        # page an earlier object touched stays mapped in the driver, which
        # would take the new object's share of the PSS.)
        ray_down()
    for n in args.workers:
        say(f"{method.label}: footprint, {n} worker(s)")
        fp[n] = guarded("footprint", footprint, run, method, models["fp"], n)
        if "workers_x" in fp[n]:
            f = fp[n]
            say(f"    workers {f['workers_x']:.3f}x, +producer {f['total_x']:.3f}x, "
                f"shmem {f['shmem_x']:+.2f}x [{f['check']}]")
    run.hold.clear()
    gc.collect()
    say(f"{method.label}: isolation")
    r["isolation"] = guarded("isolation", isolation, run, method, models["fp"])
    say(f"    {r['isolation'].get('verdict', r['isolation'].get('error'))}")
    # one worker for the repeated loads and the attach times
    pool = guarded("worker", run.pool, method, models["fp"].spec, 1)
    if isinstance(pool, dict):
        r["repeat"] = pool
        r["attach"] = {"big": pool, "small": pool}
        return
    try:
        say(f"{method.label}: {args.loads} loads in one worker")
        r["repeat"] = guarded("repeat", repeated, pool, method, models["fp"], args.loads)
        r["attach"] = {}
        for size in ("big", "small"):
            say(f"{method.label}: attach/ready, {models[size].nbytes / MiB:.1f} MiB")
            a = r["attach"][size] = guarded("attach", attach_times, pool, method, models[size],
                                            args.reps)
            if a.get("ready_s") is not None:
                say(f"    attach {ms(a['attach_s'])} ms, ready {ms(a['ready_s'])} ms")
    finally:
        run.done(pool, keep=pool.workers[0].alive())
    r["elapsed_s"] = clock() - t0


# ---- the report -----------------------------------------------------------------------------


BUSY = 0.10  # other processes' share of the CPUs above which a row is marked


def ms(s, width=0):
    if s is None:
        return f"{'-':>{width}s}"
    v = s * 1e3
    txt = f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 1000 else f"{v:.0f}"
    return f"{txt:>{width}s}"


def xs(v, width=7):
    return f"{'-':>{width}s}" if v is None else f"{v:{width}.3f}"


def print_footprint(res, methods, model, workers):
    print(f"## Footprint: {model.describe()}; each worker loads it and runs one forward "
          "pass (batch 4)")
    print()
    ncol = " ".join(f"{'N=' + str(n):>7s}" for n in workers)
    head = f"{'method':42s} | workers x model: {ncol} | +producer: {ncol} | check"
    print(head)
    print("-" * len(head))
    print(f"{'ideal: one copy, shared':42s} | {'':17s}" +
          " ".join(f"{1.0:7.3f}" for _ in workers) + f" | {'':10s} " +
          " ".join(f"{1.0:7.3f}" for _ in workers) + " |")
    print(f"{'target: 1.0x + 0.5% per added worker':42s} | {'':17s}" +
          " ".join(f"{1.0 + 0.005 * (n - 1):7.3f}" for n in workers) + " |")
    for m in methods:
        r = res.get(m.key, {})
        if "error" in r:
            print(f"{m.label:42s} | n/a: {r['error']}"[:200])
            continue
        fp = r.get("footprint", {})
        cells_w, cells_t, checks = [], [], []
        for n in workers:
            f = fp.get(n, {})
            cells_w.append(xs(f.get("workers_x")))
            cells_t.append(xs(f.get("total_x")))
            checks.append(f.get("check") or ("n/a: " + f.get("error", "?")))
        uniq = sorted(set(checks))
        print(f"{m.label:42s} | {'':17s}" + " ".join(cells_w) + f" | {'':10s} " +
              " ".join(cells_t) + " | " + "; ".join(uniq)[:120])
    print()
    print("workers x model = (sum of the workers' PSS after the forward pass - the same workers'"
          " PSS idle, just before) / model bytes;")
    print("+producer: the same plus what this process and its other descendants (forkserver; "
          "Ray's raylet, GCS, agents) gained,")
    print("after the producer dropped its own copy where the method allows (see the docstring). "
          "Shmem growth (x model), N = " + ",".join(map(str, workers)) + ":")
    for m in methods:
        r = res.get(m.key, {})
        fp = r.get("footprint", {})
        if "error" in r or not fp:
            continue
        cells = [fp.get(n, {}).get("shmem_x") for n in workers]
        if any(c is not None and abs(c) > 0.01 for c in cells):
            print(f"  {m.label:42s} " + " ".join(
                f"{c:+.2f}" if c is not None else "-" for c in cells))


def print_isolation(res, methods, model):
    print(f"## Isolation: {model.describe()}; worker 0 multiplies every parameter by 2 in "
          "place (no_grad, p.mul_(2));")
    print("worker 1 (started before the write) and a worker started after it compute the "
          "output for a fixed input")
    print()
    head = f"{'method':42s} | result"
    print(head)
    print("-" * 100)
    for m in methods:
        r = res.get(m.key, {})
        if "error" in r:
            print(f"{m.label:42s} | n/a: {r['error']}"[:200])
            continue
        i = r.get("isolation", {})
        print(f"{m.label:42s} | {i.get('verdict') or 'n/a: ' + i.get('error', '?')}")


def print_repeat(res, methods, model, loads):
    print(f"## Repeated loads: one worker loads {model.name} ({model.nbytes / MiB:.0f} MiB) "
          f"and runs it {loads} times, dropping the model before each load")
    print()
    head = (f"{'method':42s} | {'PSS after 1st':>13s} | {'after last':>10s} | {'growth':>9s} | "
            f"{'x model':>7s}")
    print(head)
    print("-" * len(head))
    for m in methods:
        r = res.get(m.key, {})
        if "error" in r:
            print(f"{m.label:42s} | n/a: {r['error']}"[:200])
            continue
        p = r.get("repeat", {})
        if "error" in p:
            print(f"{m.label:42s} | n/a: {p['error']}"[:200])
            continue
        d = p["delta_bytes"]
        print(f"{m.label:42s} | {p['first_kib'] / 1024:9.1f} MiB | {p['last_kib'] / 1024:6.1f} "
              f"MiB | {d / MiB:+5.1f} MiB | {d / model.nbytes:+7.3f}")


def print_attach(res, methods, models, reps):
    big, small = models["big"], models["small"]
    print(f"## Attach and ready: {big.describe()};")
    print(f"small: {small.describe()}. One worker, {reps} loads: median (fastest), ms")
    print()
    b, s = f"{big.nbytes / MiB:.0f} MiB", f"{small.nbytes / MiB:.0f} MiB"
    head = (f"{'method':42s} | {'attach ' + b:>21s} | {'ready ' + b:>21s} | "
            f"{'attach ' + s:>11s} | {'ready ' + s:>10s} | unpickle")
    print(head)
    print("-" * len(head))
    for m in methods:
        r = res.get(m.key, {})
        if "error" in r:
            print(f"{m.label:42s} | n/a: {r['error']}"[:200])
            continue
        ab, as_ = r.get("attach", {}).get("big", {}), r.get("attach", {}).get("small", {})
        if "error" in ab:
            print(f"{m.label:42s} | n/a: {ab['error']}"[:200])
            continue

        def two(a, k):
            if a.get(k) is None:
                return f"{'-':>21s}"
            return f"{ms(a[k]):>10s} ({ms(a[k.replace('_s', '_min_s')])})".rjust(21)
        up = ""
        if ab.get("unpickle_s") is not None:
            up = f"{ms(ab['unpickle_s'])} / {ms(as_.get('unpickle_s'))}"
        busy = [a.get("others_busy") for a in (ab, as_) if a.get("others_busy") is not None]
        note = (f"  busy: others took {max(busy):.0%} of the CPUs"
                if busy and max(busy) > BUSY else "")
        print(f"{m.label:42s} | {two(ab, 'attach_s')} | {two(ab, 'ready_s')} | "
              f"{ms(as_.get('attach_s'), 11)} | {ms(as_.get('ready_s'), 10)} | {up:13s}{note}")
    print()
    print("attach: handle in hand (unpickled) -> every tensor in hand; ready: -> a model ready "
          "to run. copy and torch.mp: the unpickling")
    print("is the attach and is counted; dlpx: unpickling the handle is apart (unpickle, big / "
          "small); ray-zerocopy: attach = ray.get of its refs,")
    print("ready = wrapper.load() alone. torch.load and copy read every byte; the mapped ones "
          "(mmap, shared memory) read none.")
    print(f"busy: while the row was timed, processes outside this benchmark (and steal) took "
          f"more than {BUSY:.0%} of the CPUs: its times are not reliable.")


def targets(res, models, workers):
    out = []

    def add(name, value, text, ok, want):
        o = {"target": name, "value": value, "want": want}
        if value is None:
            o.update(verdict="n/a", text="n/a")
        else:
            o.update(verdict="PASS" if ok else "MISS", text=text)
        out.append(o)
    d = res.get("dlpx.attach", {})
    dm = res.get("dlpx.module", {})
    for key, r in (("dlpx.attach", d), ("dlpx.module", dm)):
        for n in workers:
            f = r.get("footprint", {}).get(n, {})
            v = f.get("workers_x")
            lim = 1.0 + 0.005 * (n - 1)
            add(f"{key} footprint, {n} workers (workers' PSS)", v,
                f"{v:.3f}x" if v is not None else "", v is not None and v <= lim,
                f"<= {lim:.3f}x")
    a = d.get("attach", {}).get("big", {}).get("attach_s")
    add("dlpx.attach: all tensors of the big segment", a, f"{ms(a)} ms",
        a is not None and a < 1e-3, "< 1 ms")
    a2 = d.get("attach", {}).get("small", {}).get("attach_s")
    if a is not None and a2:
        add("dlpx.attach: big / small segment time", a / a2, f"{a / a2:.2f}x",
            a / a2 <= 1.5, "about 1x (independent of bytes)")
    peers = {k: r.get("attach", {}).get("big", {}).get("ready_s") for k, r in res.items()
             if not k.startswith("dlpx")}
    peers = {k: v for k, v in peers.items() if v is not None}
    best = min(peers.items(), key=lambda kv: kv[1]) if peers else (None, None)
    mine = dm.get("attach", {}).get("big", {}).get("ready_s")
    if mine is not None and best[1] is not None:
        v = best[1] / mine
        add(f"dlpx.module load() vs fastest peer ({best[0]}) ready: speed", v,
            f"{v:.1f}x" + (" faster" if v >= 1 else " (slower)"), v >= 5, ">= 5x faster")
    else:
        add("dlpx.module load() vs fastest peer ready: speed", None, "", False, ">= 5x faster")
    for key in ("dlpx.attach", "dlpx.module"):
        iso = res.get(key, {}).get("isolation", {}).get("verdict")
        add(f"{key} isolation", iso, iso or "", iso == "isolated", "isolated")
        rp = res.get(key, {}).get("repeat", {})
        v = rp.get("delta_bytes")
        add(f"{key} repeated loads: PSS growth", v,
            f"{v / MiB:+.1f} MiB" if v is not None else "",
            v is not None and v <= 0.01 * models["fp"].nbytes, "<= 1% of the model")
    print("targets (from the numbers above; informational, never asserted):")
    for o in out:
        print(f"  {o['verdict']:4s}  {o['target']:62s} {o['text']:>14s}  target {o['want']}")
    return out


def versions():
    from importlib.metadata import version
    out = {}
    for mod in ("dlpx", "torch", "numpy", "safetensors", "ray", "ray-zerocopy"):
        try:
            out[mod] = version(mod)
        except Exception:
            try:
                out[mod] = __import__(mod.replace("-", "_")).__version__
            except Exception as e:
                out[mod] = f"n/a ({type(e).__name__})"
    return out


def spec_200(total_bytes):
    """100 Linear layers alternating (a, b), (b, a), a about 2 b, summing to
    about |total_bytes| (float32 weights and biases: 200 tensors)."""
    per = total_bytes / 4 / 100
    b = max(2, int(round((per / 2) ** 0.5)))
    a = max(2, int(round((per - 1.5 * b) / b)))
    return [(a, b) if k % 2 == 0 else (b, a) for k in range(100)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="CI smoke run: 8 MiB models, 1 and 2 workers, few repeats")
    ap.add_argument("--workers", default=None, help="worker counts (default 1,2,4,8)")
    ap.add_argument("--size-mib", type=int, default=None,
                    help="footprint model size (default 512: 8 x Linear(4096, 4096))")
    ap.add_argument("--attach-mib", type=int, default=None,
                    help="attach model size, 200 tensors (default 1024)")
    ap.add_argument("--reps", type=int, default=None, help="loads per attach timing (default 7)")
    ap.add_argument("--loads", type=int, default=None, help="repeated loads (default 20)")
    ap.add_argument("--only", action="append", default=[],
                    help="run only methods whose key contains this (repeatable)")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray rows")
    ap.add_argument("--start-method", default="forkserver", choices=("forkserver", "spawn"))
    ap.add_argument("--store-mib", type=int, default=None,
                    help="Ray object store (default 3 x the attach model, at least 256)")
    ap.add_argument("--dir", default=None, help="where to write the model files (default /tmp)")
    ap.add_argument("--json", default="bench-share.json", help="where to write the results")
    ap.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = ap.parse_args()
    VERBOSE[0] = args.verbose
    args.workers = [int(x) for x in (args.workers or ("1,2" if args.quick else "1,2,4,8"))
                    .split(",")]
    size_mib = args.size_mib or (8 if args.quick else 512)
    attach_mib = args.attach_mib or (8 if args.quick else 1024)
    args.reps = args.reps or (3 if args.quick else 7)
    args.loads = args.loads or (3 if args.quick else 20)
    RAY["store"] = (args.store_mib or max(256, 3 * attach_mib)) * MiB

    import torch
    torch.set_num_threads(1)
    gc.collect()
    gc.freeze()  # torch's objects: the many gc.collect() calls below skip them

    methods = all_methods()
    if args.only:
        methods = [m for m in methods if any(o in m.key for o in args.only)]
    if args.no_ray:
        RAY["error"] = "skipped (--no-ray)"

    workdir = tempfile.mkdtemp(prefix="dlpx-bench-share-", dir=args.dir or "/tmp")
    t_start = clock()
    res = {}
    try:
        info = _machine.machine(np.__version__)
        info.update(kernel=platform.release(), mem_gib=round(mem_total() / GiB, 1))
        vers = versions()
        say(f"writing the models in {workdir} ...")
        width = max(8, int(round(4096 * (size_mib / 512) ** 0.5)))
        models = {"fp": Model("footprint", [(width, width)] * 8, workdir, seed=1),
                  "big": Model("attach-big", spec_200(attach_mib * MiB), workdir, seed=2),
                  "small": Model("attach-small", spec_200(attach_mib * MiB // 64), workdir,
                                 seed=3)}
        run = Runner(args.start_method, reuse={"ray"} if args.quick else (), quick=args.quick)
        # the multiprocessing methods first, then Ray's (started once, for them)
        try:
            for m in sorted(methods, key=lambda m: m.backend == "ray"):
                if m.backend == "ray":
                    run.close("mp")
                run_method(run, m, models, args, res)
        finally:
            run.close()
        ray_down()
        elapsed = clock() - t_start

        print()
        print(f"dlpx {vers['dlpx']} sharing benchmark: {info['cpu']}, {info['cores']} cores, "
              f"{info['mem_gib']} GiB RAM, kernel {info['kernel']}, Python {info['python']}")
        print("peers: " + ", ".join(f"{k} {v}" for k, v in vers.items() if k != "dlpx"))
        print(f"workers: {args.start_method} processes (torch preloaded) or Ray actors, one "
              f"thread each"
              + (f"; Ray object store {RAY['store'] / MiB:.0f} MiB, ray.init "
                 f"{RAY['init_s']:.1f} s" if "init_s" in RAY else "")
              + (f" (x{len(RAY['inits_s'])}: a new Ray for each Ray method's footprint runs)"
                 if len(RAY.get("inits_s", ())) > 1 else "")
              + f"; {run.starts['mp']} processes and {run.starts['ray']} actors started"
              + (" (--quick: Ray's reused across pools)" if run.reuse else
                 " (fresh for every pool)"))
        print()
        print_footprint(res, methods, models["fp"], args.workers)
        print()
        print_isolation(res, methods, models["fp"])
        print()
        print_repeat(res, methods, models["fp"], args.loads)
        print()
        print_attach(res, methods, models, args.reps)
        print()
        tg = targets(res, models, args.workers)
        if args.quick:
            print("  (--quick: models too small for these to mean much; run without --quick)")
        out = {"machine": info, "versions": vers, "start_method": args.start_method,
               "workers": args.workers, "reps": args.reps, "loads": args.loads,
               "models": {k: {"spec": m.spec, "tensors": m.ntensors, "bytes": m.nbytes}
                          for k, m in models.items()},
               "ray_store_bytes": RAY["store"], "ray_init_s": RAY.get("init_s"),
               "results": res, "targets": tg, "elapsed_s": elapsed,
               "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        path = os.path.abspath(args.json)
        with open(path, "w") as f:
            json.dump(out, f, indent=2, default=str)
        print(f"\nwrote {path} ({clock() - t_start:.0f} s in all)")
    finally:
        try:
            ray_down()
        except Exception:
            pass
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
