"""dlpx handles in Ray tasks and actors, on a local cluster of two Ray nodes
that this module starts (``ray start --head`` and a second ``ray start``
joining it, each its own raylet and object store: two node ids on one
machine) and stops.

On the head node (the producer's) tasks and actors attach the producer's
own segment, zero copy.  On the second node they go the cross-node way:
the image comes through Ray's object store once, into a node-local
segment that one copy actor keeps, and every process of that node maps it.
DLPX_RAY_FORCE_REMOTE=1 sends a head-node task the cross-node way too.

Zero copy is checked in each process through /proc/self/maps: a tensor's
memory lies in a ``/memfd:dlpx`` mapping, and its inode says which
segment (the producer's, or a node copy)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

ray = pytest.importorskip("ray")
np = pytest.importorskip("numpy")

import dlpx  # noqa: E402

# dlpx.ray is imported by the cluster fixture, not here: the workers import
# this module too (for the functions below), and one test checks that they
# need not import dlpx.ray themselves.

HERE = os.path.dirname(os.path.abspath(__file__))
RAY = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
START_TIMEOUT = 120

pytestmark = pytest.mark.skipif(RAY is None, reason="no ray command next to this Python")


# ---- what the workers run (this module is importable there: see _env) -------------


def memfd_inode(addr):
    """The inode of the dlpx memfd mapping holding |addr| in this process,
    or None when |addr| is in no such mapping (a copy)."""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= addr < hi:
                return int(parts[4]) if " ".join(parts[5:]).startswith("/memfd:dlpx") else None
    return None


def _addr(t):
    if isinstance(t, np.ndarray):
        return t.ctypes.data
    p = t.data_ptr
    return p() if callable(p) else p


def probe(h, framework="numpy", engine=True):
    """Attaches |h| here: (node id, the memfd inodes under the tensors, the
    values as NumPy copies, {had_engine: whether dlpx.ray was imported
    before, node_copy_kind: the kind of this node's copy, if one is used}).
    With |engine|, imports dlpx.ray first, as Ray users do."""
    had_engine = "dlpx.ray" in sys.modules
    kind = None
    if engine:
        import dlpx.ray as engine_module
        local = engine_module.node_handle(h)
        kind = local.kind if local is not None else None
    d = dlpx.attach(h, framework)
    inodes = sorted({memfd_inode(_addr(t)) for t in d.values() if _size(t)}, key=str)
    vals = {k: np.array(t.numpy() if framework == "torch" else np.asarray(t)) for k, t in d.items()}
    info = {"had_engine": had_engine, "node_copy_kind": kind}
    return ray.get_runtime_context().get_node_id(), inodes, vals, info


def _size(t):
    return t.numel() if callable(getattr(t, "numel", None)) else np.asarray(t).size


@ray.remote(num_cpus=0)
def probe_task(h, framework="numpy"):
    return probe(h, framework)


@ray.remote(num_cpus=0)
def slow_probe_task(h):
    time.sleep(0.5)  # so that two of them overlap
    return probe(h)


@ray.remote(num_cpus=0)
class Holder:
    """An actor that attaches a handle and keeps the tensors."""

    def attach(self, h, framework="numpy"):
        self.got = dlpx.attach(h, framework)
        return probe(h, framework)

    def values(self):
        return {k: np.array(v) for k, v in self.got.items()}

    def model(self, mh, x):
        import dlpx.ray  # noqa: F401
        self.m = mh.load()
        import torch
        with torch.no_grad():
            y = self.m(torch.from_numpy(x))
        w = next(self.m.parameters())
        return y.numpy(), memfd_inode(w.data_ptr()), ray.get_runtime_context().get_node_id()


@ray.remote(num_cpus=0)
class Producer:
    """A producer that lives in an actor (and can be killed)."""

    def share(self):
        import dlpx.ray  # noqa: F401
        self.h = dlpx.share(tensors())
        return self.h, os.getpid()


# ---- the cluster -------------------------------------------------------------------


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ)
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(dlpx.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [pkg, HERE] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["DLPX_LIBRARY"] = str(dlpx.library_path)
    # Token authentication would read (or write) ~/.ray: this cluster is
    # private to the test and listens on loopback ports only.
    env["RAY_AUTH_MODE"] = "disabled"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"  # stop at once, not in 30 s
    env.pop("RAY_ADDRESS", None)
    env.pop("DLPX_RAY_FORCE_REMOTE", None)
    return env


def _spawn(args, log_path, env):
    """`ray start --block ARGS` in a process group of its own: its Ray
    processes die with it (and with the group)."""
    with open(log_path, "w") as log:
        return subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", *args],
                                stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def _wait_up(p, log_path, until=None):
    """Waits until `ray start --block` says its node is up (or, with
    |until|, until that returns true)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if until is not None and until():
            return
        with open(log_path) as f:
            text = f.read()
        if until is None and "block forever" in text:
            return
        if p.poll() is not None:
            break
        time.sleep(0.1)
    with open(log_path) as f:
        pytest.fail(f"ray start failed:\n{f.read()[-4000:]}")


def _listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _stop(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
    try:  # anything of the group that outlived its leader
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture(scope="module")
def cluster():
    import dlpx.ray  # noqa: F401  (the producer side: this process)
    tmp = tempfile.mkdtemp(prefix="dlpxray-", dir="/tmp")  # short: Ray's socket paths
    env = _env()
    port = _free_port()
    store = str(100 * 1024 * 1024)
    procs = []
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    try:
        head_log, node2_log = os.path.join(tmp, "head.log"), os.path.join(tmp, "node2.log")
        procs.append(_spawn(
            ["--head", f"--port={port}", f"--ray-client-server-port={_free_port()}",
             "--num-cpus=1", "--resources=" + json.dumps({"head": 1}),
             f"--object-store-memory={store}", f"--temp-dir={tmp}",
             "--include-dashboard=false", f"--dashboard-agent-listen-port={_free_port()}",
             f"--metrics-export-port={_free_port()}"],
            head_log, env))
        # The second node joins as soon as the head's GCS listens; both start
        # their raylets at once.
        _wait_up(procs[0], head_log, until=lambda: _listening(port))
        procs.append(_spawn(
            [f"--address=127.0.0.1:{port}", "--num-cpus=1",
             "--resources=" + json.dumps({"node2": 1}), f"--object-store-memory={store}",
             f"--dashboard-agent-listen-port={_free_port()}",
             f"--metrics-export-port={_free_port()}"],
            node2_log, env))
        _wait_up(procs[0], head_log)
        _wait_up(procs[1], node2_log)
        os.environ["RAY_AUTH_MODE"] = "disabled"
        os.environ.pop("RAY_ADDRESS", None)
        ray.init(address=f"127.0.0.1:{port}", namespace="dlpx-test", log_to_driver=False,
                 configure_logging=False)
        deadline = time.monotonic() + 60
        while True:
            nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
            if len(nodes) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        head = [n for n, r in nodes.items() if "head" in r]
        node2 = [n for n, r in nodes.items() if "node2" in r]
        # Two `ray start`s on one machine are two Ray nodes (two raylets and
        # object stores, two node ids): the cross-node path runs for real.
        assert len(nodes) == 2 and len(head) == 1 and len(node2) == 1, nodes
        assert head[0] != node2[0]
        yield {"head": head[0], "node2": node2[0], "tmp": tmp}
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for p in reversed(procs):
            _stop(p)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)


ON_HEAD = {"resources": {"head": 0.001}}
ON_NODE2 = {"resources": {"node2": 0.001}}


def tensors():
    rng = np.random.default_rng(3)
    return {"w": rng.standard_normal((256, 130)).astype(np.float32),
            "ids": np.arange(5000, dtype=np.int64),
            "flags": rng.integers(0, 2, 33).astype(np.bool_)}


def same(vals, want):
    assert set(vals) == set(want)
    for k in want:
        assert vals[k].dtype == want[k].dtype and np.array_equal(vals[k], want[k]), k


def producer_inode(h):
    d = dlpx.attach(h, "numpy")
    (ino,) = {memfd_inode(t.ctypes.data) for t in d.values() if t.size}
    return ino


def wait_for(pred, timeout=20):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


# ---- tests -------------------------------------------------------------------------


def test_head_node_task_and_actor_attach_the_producers_segment(cluster):
    want = tensors()
    with dlpx.share(want) as h:
        mine = producer_inode(h)
        assert mine is not None
        node, inodes, vals, _ = ray.get(probe_task.options(**ON_HEAD).remote(h))
        assert node == cluster["head"]
        assert inodes == [mine]  # zero copy: the producer's memfd itself
        same(vals, want)
        a = Holder.options(**ON_HEAD).remote()
        node, inodes, vals, _ = ray.get(a.attach.remote(h, "torch"))
        assert node == cluster["head"] and inodes == [mine]
        same(vals, want)
        # The image went to the object store (two nodes), but no copy was made.
        assert "ray_image" in h.extra and dlpx.ray.node_copies(h.id) == []
    # Closed: the actor keeps its tensors.
    same(ray.get(a.values.remote()), want)
    ray.kill(a)


def test_cross_node_one_copy_per_node(cluster):
    want = tensors()
    h = dlpx.share(want)
    try:
        mine = producer_inode(h)
        # Two overlapping tasks and an actor on node 2: one node copy.
        refs = [slow_probe_task.options(**ON_NODE2).remote(h) for _ in range(2)]
        a = Holder.options(**ON_NODE2).remote()
        got = ray.get(refs) + [ray.get(a.attach.remote(h))]
        seen = set()
        for node, inodes, vals, info in got:
            assert node == cluster["node2"]
            assert info["node_copy_kind"] == "memfd"  # a node copy leaves nothing in /dev/shm
            assert len(inodes) == 1 and inodes[0] is not None and inodes[0] != mine
            seen.add(inodes[0])
            same(vals, want)
        assert len(seen) == 1, seen  # every process of node 2 maps the same copy
        copies = dlpx.ray.node_copies(h.id)
        assert copies == [f"dlpx.{h.id}.{cluster['node2']}"], copies
        # Later tasks there reuse it.
        node, inodes, vals, _ = ray.get(probe_task.options(**ON_NODE2).remote(h, "torch"))
        assert inodes == sorted(seen) and dlpx.ray.node_copies(h.id) == copies
        same(vals, want)
    finally:
        h.close()
    # The producer's close kills the node copies; attached tensors stay.
    assert wait_for(lambda: dlpx.ray.node_copies(h.id) == []), dlpx.ray.node_copies(h.id)
    same(ray.get(a.values.remote()), want)
    # ... and no new consumer gets the segment any more.
    with pytest.raises(FileNotFoundError):
        ray.get(probe_task.options(**ON_NODE2).remote(h))
    ray.kill(a)


def test_forced_remote_on_the_producers_node(cluster):
    want = tensors()
    with dlpx.share(want) as h:
        mine = producer_inode(h)
        forced = {"runtime_env": {"env_vars": {"DLPX_RAY_FORCE_REMOTE": "1"}}, **ON_HEAD}
        node, inodes, vals, _ = ray.get(probe_task.options(**forced).remote(h))
        assert node == cluster["head"]
        assert len(inodes) == 1 and inodes[0] not in (None, mine)  # the node copy
        same(vals, want)
        assert dlpx.ray.node_copies(h.id) == [f"dlpx.{h.id}.{cluster['head']}"]
    assert wait_for(lambda: dlpx.ray.node_copies(h.id) == [])


def test_consumers_need_not_import_dlpx_ray(cluster):
    if not hasattr(dlpx._share, "_load_engines"):
        pytest.skip("dlpx._share does not load dlpx.ray by itself yet")

    @ray.remote(num_cpus=0)
    def fresh(h):
        return probe(h, engine=False)

    want = tensors()
    with dlpx.share(want) as h:
        for where in (ON_HEAD, ON_NODE2):
            # A runtime env of its own: a new worker process, that never
            # imported dlpx.ray.
            env = {"env_vars": {"DLPX_TEST_FRESH": f"{os.getpid()}.{time.monotonic()}"}}
            node, inodes, vals, info = ray.get(fresh.options(runtime_env=env,
                                                             **where).remote(h))
            assert not info["had_engine"] and inodes[0] is not None
            same(vals, want)


def test_share_module_in_actors(cluster):
    torch = pytest.importorskip("torch")
    import dlpx.torch
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 4)).eval()
    x = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    with dlpx.torch.share_module(model) as mh:
        mine = producer_inode(mh.tensors)
        actors = {k: Holder.options(**opts).remote() for k, opts in
                  (("head", ON_HEAD), ("node2", ON_NODE2))}
        got = ray.get([a.model.remote(mh, x) for a in actors.values()])
        for (where, a), (y, ino, node) in zip(actors.items(), got):
            assert node == cluster[where]
            np.testing.assert_array_equal(y, want)
            assert ino is not None and (ino == mine) == (where == "head")
    for a in actors.values():
        ray.kill(a)


def test_single_node_pickles_without_an_image(cluster, monkeypatch):
    # A handle pickled outside Ray, or where only one node is alive, puts
    # nothing in the object store.
    import pickle
    with dlpx.share(tensors()) as h:
        monkeypatch.setattr(dlpx.ray, "_alive_nodes", lambda: 1)
        h2 = pickle.loads(pickle.dumps(h))
        assert h2.extra.get("ray_node") == cluster["head"]
        assert "ray_image" not in h.extra and "ray_image" not in h2.extra
        assert dlpx.ray.node_handle(h2) is None  # this node: the usual attach
        same({k: np.array(v) for k, v in dlpx.attach(h2, "numpy").items()}, tensors())


def test_producer_killed_consumers_get_file_not_found(cluster):
    p = Producer.options(**ON_HEAD).remote()
    h, pid = ray.get(p.share.remote())
    assert h.extra["ray_node"] == cluster["head"] and "ray_image" in h.extra
    ray.kill(p)
    assert wait_for(lambda: not os.path.exists(f"/proc/{pid}"))  # one machine
    # Neither the producer's socket (head) nor its image (node 2) is there.
    for where in (ON_HEAD, ON_NODE2):
        with pytest.raises(FileNotFoundError):
            ray.get(probe_task.options(**where).remote(h))
    assert dlpx.ray.node_copies(h.id) == []
