"""Loading a tensor file over HTTP: dlpx.load_file(url) beside boto3's
managed transfer, obstore, fsspec's HTTP filesystem and runai-model-
streamer, and beside curl (the limit of this machine's loopback and
server), all against one real nginx started by this script and measured in
the same run.  Prints a table and writes JSON; never asserts on time.

    python bench/bench_remote.py [--quick] [--size-mib N] [--reps N]
        [--only NAME] [--parallel N] [--part-mib N] [--dir DIR]
        [--json PATH] [-v]

The file: about 200 float32 tensors shaped like a small transformer (16
layers of attention, MLP and norms, an embedding and an LM head),
--size-mib in all (default 1024; --quick: 64 MiB and one rep), saved by
safetensors.numpy.save_file as <docroot>/bucket/model.safetensors in a new
directory under --dir (default /tmp), removed at the end.

The server: /usr/sbin/nginx -p <dir> -c <dir>/nginx.conf -g 'daemon off;'
(sendfile on, keep-alive, access_log off, one worker per core) listening on
127.0.0.1:<a free port>, stopped at exit.  GET /bucket/model.safetensors
with or without Range is all the methods need; S3 clients see it as the
object "model.safetensors" of bucket "bucket" at a path-style endpoint
(unsigned requests; nginx ignores the signature).  The file is read once
before each run so nginx serves it from the page cache.

Every run of every method is a fresh subprocess (this script with
--child), so each one's memory is its own.  A child imports what its method
needs and builds its client (boto3's client, obstore's store, fsspec's
filesystem: set-up that a program pays once, not per file), then resets its
peak RSS (/proc/self/clear_refs, "5") and takes its RSS as the baseline.
Timed: from the call until every tensor is in hand and one element per 4096
bytes of each was read (as numpy, through DLPack where needed) and summed;
the sums are compared with the saved tensors', so a method that returns
wrong data is marked.  "xfer s": where a method first downloads the bytes
and then parses them (boto3, obstore, fsspec), the download alone.  "peak
MiB": VmHWM at the end (every tensor still held) minus the baseline.  The
curl rows are curl processes: wall time from the parent, peak RSS from
wait4 minus that of a curl fetching a 1-byte file.

Rows (--only NAME runs those whose key contains NAME, repeatable; the curl
limits always run):
  curl             curl -s -o /dev/null URL: one connection, the limit
  curl.par         curl --parallel (--parallel N, default 8) with N ranges
                   of size/N each, to /dev/null: the parallel limit
  curl.par.parts   the same with --part-mib (8) ranges, N in flight: the
                   shape of a ranged-GET loader's requests
  curl.mem         curl -s -o /dev/shm/<new file>: one connection landing
                   every byte in memory the process has not touched (tmpfs
                   pages), as a loader must; the limit of a load into new
                   memory (the file is removed after each run)
  dlpx             dlpx.load_file(url) (dlpx tensors); dlpx.numpy with
                   framework="numpy"; dlpx.opts with storage_options=
                   {"concurrency": 2N, "part_size": 2 x --part-mib}; rows
                   say "not available" where this dlpx has no dlpx.remote
                   (or no such keyword)
  boto3            boto3.client("s3", endpoint_url=..., UNSIGNED, path
                   style).download_fileobj into a BytesIO (its managed,
                   ranged, threaded transfer), then safetensors.numpy.load
  obstore.get      HTTPStore.from_url(...); obstore.get(...).bytes(), then
                   safetensors.numpy.load(bytes(...))
  obstore.ranges   --part-mib ranges fetched with get_range_async, N at a
                   time (obstore.get_ranges would coalesce adjacent ranges
                   into one request) on an event loop made in set-up,
                   joined, then safetensors.numpy.load
  fsspec.cat       fsspec.filesystem("http").cat_file(url), then load
  fsspec.open      fs.open(url, block_size=--part-mib).read(), then load
  runai.s3         runai_model_streamer.SafetensorsStreamer on
                   s3://bucket/model.safetensors with AWS_ENDPOINT_URL set
                   to nginx (needs the runai-model-streamer-s3 package)
  runai.http       the same streamer given the http:// URL
  st.local         safetensors.numpy.load_file of the same file from the
                   page cache: a reference, not a peer
A method that is missing or fails says so in its row ("not installed",
"cannot read this URL: why", "n/a: why"); the run goes on.

Each method runs --reps times (default 3), the reps interleaved (every
method once, then every method again), and the table shows the best and
the median time; GB/s and the percentages are the best run's (file bytes /
seconds, 1 GB = 1e9 bytes); peak MiB is the largest of the runs.  "vs
target" is peak MiB minus the tensors' MiB: the design target of a loader
is at most 256 (the tensors + 256 MiB); shown, never asserted.  CPU time
taken by other processes (less the children's and nginx's) while the runs
went is measured from /proc/stat; rows measured on a busy machine are
marked.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from shapes import shapes_for  # bench/shapes.py, beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 1 << 20
PAGE = 4096
NCPU = os.cpu_count() or 1
NGINX = "/usr/sbin/nginx"
BUCKET, KEY = "bucket", "model.safetensors"
BUSY = 0.10  # other processes' share of the CPUs above which a row is marked

clock = time.perf_counter
VERBOSE = [False]


def say(msg):
    """Progress, on stderr: with --verbose or when stderr is a terminal."""
    if VERBOSE[0] or sys.stderr.isatty():
        print(msg, file=sys.stderr, flush=True)


# ---- the file --------------------------------------------------------------------------------


def as_numpy(t):
    import numpy as np
    if isinstance(t, np.ndarray):
        return t
    if type(t).__module__.startswith("torch"):
        return t.detach().numpy()
    return np.from_dlpack(t)


def touch(t):
    """Reads one element per 4096 bytes of tensor |t|; returns their sum."""
    import numpy as np
    flat = as_numpy(t).reshape(-1)
    return float(np.add.reduce(flat[::max(1, PAGE // flat.itemsize)], dtype=np.float64))


def build(path, total_bytes, seed=0):
    """Writes the file; returns (tensor count, tensor bytes, reference sums)."""
    import numpy as np
    from safetensors.numpy import save_file
    rng = np.random.default_rng(seed)
    sd = {}
    for name, shape in shapes_for(total_bytes):
        a = np.empty(shape, np.float32)
        rng.random(out=a.reshape(-1), dtype=np.float32)
        a -= 0.5
        sd[name] = a
    sums = {k: touch(v) for k, v in sd.items()}
    nbytes = sum(a.nbytes for a in sd.values())
    save_file(sd, path)
    n = len(sd)
    del sd
    gc.collect()
    return n, nbytes, sums


def warm(path):
    with open(path, "rb", buffering=0) as f:
        while f.read(16 * MiB):
            pass


# ---- nginx -----------------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NGINX_CONF = """\
worker_processes {workers};
error_log {prefix}/logs/error.log warn;
pid {prefix}/logs/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {prefix}/docroot;
    }}
}}
"""


def _die_with_parent():
    """In the child before exec: SIGTERM (nginx's fast shutdown) when this
    script dies, even by SIGKILL (prctl PR_SET_PDEATHSIG; Linux)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


class Nginx:
    """nginx serving |prefix|/docroot on 127.0.0.1:<free port>."""

    def __init__(self, prefix):
        self.prefix, self.proc, self.port = prefix, None, None
        self.version = ""

    def start(self):
        if not os.access(NGINX, os.X_OK):
            raise RuntimeError(f"{NGINX} not found: install nginx (apt-get install nginx-light)")
        v = subprocess.run([NGINX, "-v"], capture_output=True, text=True)
        self.version = (v.stderr or v.stdout).strip().split("/")[-1]
        for d in ("logs", "tmp"):
            os.makedirs(os.path.join(self.prefix, d), exist_ok=True)
        conf = os.path.join(self.prefix, "nginx.conf")
        last = ""
        for _ in range(5):  # a free port may be taken before nginx binds it
            self.port = free_port()
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(prefix=self.prefix, port=self.port, workers=NCPU))
            self.proc = subprocess.Popen(
                [NGINX, "-p", self.prefix, "-c", conf, "-e", os.path.join(self.prefix, "logs",
                                                                          "error.log"),
                 "-g", "daemon off;"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True, preexec_fn=_die_with_parent)
            t_end = time.monotonic() + 10
            while time.monotonic() < t_end:
                if self.proc.poll() is not None:
                    break
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                        return self
                except OSError:
                    time.sleep(0.05)
            last = self._log_tail()
            self.stop()
        raise RuntimeError(f"nginx did not start: {last}")

    def _log_tail(self):
        err = ""
        if self.proc and self.proc.poll() is not None and self.proc.stderr:
            err = self.proc.stderr.read().decode(errors="replace")
        try:
            with open(os.path.join(self.prefix, "logs", "error.log")) as f:
                err += f.read()
        except OSError:
            pass
        return " | ".join(err.strip().splitlines()[-3:])

    def pids(self):
        """The master's pid and its workers'."""
        if not self.proc:
            return []
        out = [self.proc.pid]
        try:
            for t in os.listdir(f"/proc/{self.proc.pid}/task"):
                with open(f"/proc/{self.proc.pid}/task/{t}/children") as f:
                    out += [int(x) for x in f.read().split()]
        except OSError:
            pass
        return out

    def cpu(self):
        """CPU seconds the master and its workers used so far."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
            except (OSError, ValueError, IndexError):
                pass
        return total

    def stop(self):
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        try:
            p.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        except OSError:
            pass


# ---- busy: how much of the CPUs other processes took -----------------------------------------


def machine_cpu():
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def own_cpu():
    t = os.times()
    return t.user + t.system


# ---- the runs (parent side) ------------------------------------------------------------------


def wait_rusage(proc, timeout):
    """Waits for |proc| (killed after |timeout| s); returns (rc, rusage,
    timed out?)."""
    killed = []

    def kill():
        killed.append(1)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        _, status, ru = os.wait4(proc.pid, 0)
    except BaseException:  # interrupted: the child goes too
        kill()
        os.wait4(proc.pid, 0)
        raise
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, ru, bool(killed)


def run_proc(argv, env, timeout, nginx):
    """Runs |argv|; returns (wall s, rc, stdout, stderr tail, rusage,
    others' share of the CPUs, timed out?)."""
    m0, o0, n0 = machine_cpu(), own_cpu(), nginx.cpu()
    t0 = clock()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                             start_new_session=True)
        rc, ru, timed_out = wait_rusage(p, timeout)
        wall = clock() - t0
        m1, o1, n1 = machine_cpu(), own_cpu(), nginx.cpu()
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read()[-20000:].decode(errors="replace")
    others = None
    if m0 is not None and m1 is not None and wall >= 0.3:
        mine = (o1 - o0) + (n1 - n0) + ru.ru_utime + ru.ru_stime
        others = min(1.0, max(0.0, (m1 - m0) - mine) / (wall * NCPU))
    return wall, rc, stdout, stderr, ru, others, timed_out


def last_error(stderr):
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln:
            return ln
    return lines[-1] if lines else ""


def curl_argv(url, size, ranges, parallel, out="/dev/null"):
    """curl to |out|; |ranges|: (first, last) pairs, or None for one GET."""
    if not ranges:
        return ["curl", "-s", "-S", "-o", out, "-w", "%{http_code} %{size_download}\n",
                url], [(200, size)]
    argv = ["curl", "--parallel", "--parallel-max", str(parallel)]
    want = []
    for i, (a, b) in enumerate(ranges):
        if i:
            argv.append("--next")
        argv += ["-s", "-S", "-r", f"{a}-{b}", "-o", "/dev/null", "-w",
                 "%{http_code} %{size_download}\n", url]
        want.append((206, b - a + 1))
    return argv, want


def run_curl(ctx, ranges, out="/dev/null"):
    argv, want = curl_argv(ctx["url"], ctx["file_bytes"], ranges, ctx["parallel"], out)
    try:
        wall, rc, stdout, stderr, ru, others, timed_out = run_proc(
            argv, os.environ.copy(), ctx["timeout"], ctx["nginx"])
    finally:
        if out != "/dev/null":
            try:
                os.unlink(out)
            except OSError:
                pass
    if timed_out:
        return {"error": f"timed out after {ctx['timeout']} s"}
    if rc:
        return {"error": f"curl exit {rc}: {last_error(stderr)}"}
    got = sorted(tuple(int(x) for x in ln.split()) for ln in stdout.split("\n") if ln.strip())
    check = "ok" if got == sorted(want) else f"wrong responses: {got[:3]}..."
    return {"seconds": wall, "peak_kib": ru.ru_maxrss, "check": check, "others_busy": others}


def run_child(ctx, key):
    env = os.environ.copy()
    env.update(ctx["child_env"].get(key, {}))
    argv = [sys.executable, os.path.abspath(__file__), "--child", key, "--spec", ctx["spec"]]
    wall, rc, stdout, stderr, ru, others, timed_out = run_proc(argv, env, ctx["timeout"],
                                                                ctx["nginx"])
    if timed_out:
        return {"error": f"timed out after {ctx['timeout']} s"}
    res = None
    for ln in stdout.splitlines():
        if ln.startswith("RESULT "):
            res = json.loads(ln[7:])
    if res is None:
        why = last_error(stderr) or f"exit status {rc}"
        return {"error": f"the child died: {why}"}
    res["others_busy"] = others
    res["child_wall_s"] = wall
    return res


# (key, label, kind): kind "curl" (a limit), "child" (a peer), "ref" (not a peer)
ROWS = [
    ("curl", "curl -o /dev/null (1 connection)", "curl"),
    ("curl.par", "curl --parallel {n}: {n} ranges", "curl"),
    ("curl.par.parts", "curl --parallel {n}: {part} MiB ranges", "curl"),
    ("curl.mem", "curl -o /dev/shm (into fresh memory)", "curl"),
    ("dlpx", "dlpx.load_file(url)", "child"),
    ("dlpx.numpy", "dlpx.load_file(url, framework='numpy')", "child"),
    ("dlpx.opts", "dlpx.load_file(url, storage_options={c}x{p}M)", "child"),
    ("dlpx.into", "dlpx.load_into(url, existing tensors)", "child"),
    ("boto3", "boto3 download_fileobj + st.numpy.load", "child"),
    ("obstore.get", "obstore get().bytes() + st.numpy.load", "child"),
    ("obstore.ranges", "obstore get_range_async x{n} + st.load", "child"),
    ("fsspec.cat", "fsspec http cat_file + st.numpy.load", "child"),
    ("fsspec.open", "fsspec http open().read() + st.numpy.load", "child"),
    ("runai.s3", "runai-model-streamer s3:// (AWS_ENDPOINT_URL)", "child"),
    ("runai.http", "runai-model-streamer http://", "child"),
    ("st.local", "ref: safetensors.numpy.load_file local", "ref"),
]


def runai_s3_env():
    """Environment for runai's s3:// rows: the endpoint (nginx), path-style
    addressing, no instance metadata, dummy keys (nginx ignores the
    signature).  libstreamer dlopens libstreamers3.so from its own
    directory: where runai-model-streamer-s3 lies elsewhere (pip install
    --target), its directory goes on LD_LIBRARY_PATH."""
    import importlib.util
    env = {"RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    try:
        spec = importlib.util.find_spec("runai_model_streamer_s3")
        main = importlib.util.find_spec("runai_model_streamer")
    except (ImportError, ValueError):
        return env
    if spec and spec.origin and main and main.origin:
        s3lib = os.path.join(os.path.dirname(os.path.dirname(spec.origin)), "runai_model_streamer",
                             "libstreamer", "lib")
        mainlib = os.path.join(os.path.dirname(main.origin), "libstreamer", "lib")
        if (os.path.exists(os.path.join(s3lib, "libstreamers3.so"))
                and not os.path.exists(os.path.join(mainlib, "libstreamers3.so"))):
            old = os.environ.get("LD_LIBRARY_PATH")
            env["LD_LIBRARY_PATH"] = s3lib + (os.pathsep + old if old else "")
    return env


def shm_target():
    """A new file name in /dev/shm (tmpfs: its pages are memory, new for
    each run), or /dev/null where there is none."""
    if not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK):
        return "/dev/null"
    return os.path.join("/dev/shm", f"dlpx-bench-remote-{os.getpid()}.bin")


def prefault(nbytes):
    """Touches |nbytes| of fresh memory in a short-lived process, so that
    the next process's allocations get pages the machine has backed already.
    On this VM the first touch of guest memory the host has not backed yet
    costs ~3.5 ms per MiB (measured: 0.9 s for 256 MiB, 0.065 s the second
    time), and whichever method ran first after memory was given back would
    pay it: the methods measure their own work, not the VM's."""
    code = ("import mmap\n"
            f"m = mmap.mmap(-1, {int(nbytes)})\n"
            f"for i in range(0, {int(nbytes)}, 4096): m[i] = 1\n")
    subprocess.run([sys.executable, "-c", code], check=False)


def run_all(ctx, rows, reps):
    """Every row once per round, --reps rounds; curl's tiny-file baseline
    first."""
    results = {key: {"key": key, "label": label, "kind": kind, "runs": []}
               for key, label, kind in rows}
    tiny = run_curl({**ctx, "url": ctx["tiny_url"], "file_bytes": 1}, None)
    ctx["curl_base_kib"] = tiny.get("peak_kib", 0)
    n, size = ctx["parallel"], ctx["file_bytes"]
    per = -(-size // n)
    part = ctx["part_bytes"]
    spread = [(a, min(size, a + per) - 1) for a in range(0, size, per)]
    parts = [(a, min(size, a + part) - 1) for a in range(0, size, part)]
    for rep in range(reps):
        for key, label, kind in rows:
            r = results[key]
            if r.get("final"):  # not installed, not available: once is enough
                continue
            warm(ctx["path"])
            if key == "curl":
                res = run_curl(ctx, None)
            elif key == "curl.par":
                res = run_curl(ctx, spread)
            elif key == "curl.par.parts":
                res = run_curl(ctx, parts)
            elif key == "curl.mem":  # lands every byte in new pages, as a loader must
                prefault(2 * ctx["file_bytes"])
                res = run_curl(ctx, None, shm_target())
            else:
                prefault(2 * ctx["file_bytes"])
                res = run_child(ctx, key)
            if "peak_kib" in res and kind == "curl":
                res["peak_mib"] = max(0, res["peak_kib"] - ctx["curl_base_kib"]) / 1024
            if res.get("status"):
                r["final"] = res["status"]
                say(f"  {label}: {res['status']}")
                continue
            r["runs"].append(res)
            if "error" in res:
                say(f"  {label}: n/a: {res['error']}")
            else:
                say(f"  {label}: {res['seconds']:.3f} s, {size / res['seconds'] / 1e9:.2f} GB/s,"
                    f" peak +{res['peak_mib']:.0f} MiB [{res['check']}]")
            gc.collect()
    for r in results.values():
        summarize(r, size)
    return results


def summarize(r, size):
    good = [x for x in r["runs"] if "error" not in x]
    if not good:
        if "final" not in r:
            errs = [x["error"] for x in r["runs"] if "error" in x]
            r["error"] = errs[0] if errs else "no runs"
        return
    times = [x["seconds"] for x in good]
    best = min(good, key=lambda x: x["seconds"])
    r.update(best_s=best["seconds"], median_s=statistics.median(times),
             gbps=size / best["seconds"] / 1e9, peak_mib=max(x["peak_mib"] for x in good),
             transfer_s=best.get("transfer_s"),
             check=next((x["check"] for x in good if x["check"] != "ok"), "ok"),
             others_busy=max((x["others_busy"] for x in good
                              if x.get("others_busy") is not None), default=None),
             failed_runs=len(r["runs"]) - len(good))
    for k in ("version", "module_path", "hwm_reset"):
        if k in best:
            r[k] = best[k]


# ---- the report ------------------------------------------------------------------------------


def versions():
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for dist in ("boto3", "obstore", "fsspec", "aiohttp", "safetensors",
                 "runai-model-streamer", "runai-model-streamer-s3", "numpy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    try:
        cv = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout
        out["curl"] = cv.split()[1]
    except (OSError, IndexError):
        out["curl"] = "not installed"
    return out


def print_table(results, tensor_mib):
    lim = results.get("curl", {}).get("gbps")
    plim = max((results.get(k, {}).get("gbps") or 0 for k in ("curl.par", "curl.par.parts")),
               default=0) or None
    head = (f"{'method':46s} {'best s':>7s} {'med s':>7s} {'GB/s':>6s} {'%curl':>6s} "
            f"{'%par':>5s} {'xfer s':>7s} {'peak MiB':>8s} {'vs target':>9s}  check")
    print(head)
    print("-" * len(head))
    for r in results.values():
        label = r["label"]
        if "final" in r:
            print(f"{label:46s} {r['final']}"[:240])
            continue
        if "error" in r:
            print(f"{label:46s} n/a: {r['error']}"[:240])
            continue
        pc = f"{r['gbps'] / lim * 100:5.0f}%" if lim and r["key"] != "curl" else ""
        pp = (f"{r['gbps'] / plim * 100:4.0f}%" if plim and not r["key"].startswith("curl.par")
              else "")
        xfer = f"{r['transfer_s']:7.3f}" if r.get("transfer_s") is not None else ""
        if r["kind"] == "curl":
            tgt = ""
        else:
            over = r["peak_mib"] - tensor_mib
            tgt = f"{over:+6.0f} {'ok' if over <= 256 else 'X '}"
        notes = [] if r["check"] == "ok" else [r["check"]]
        if r.get("failed_runs"):
            notes.append(f"{r['failed_runs']} runs failed")
        if r.get("others_busy") is not None and r["others_busy"] > BUSY:
            notes.append(f"busy {r['others_busy']:.0%}")
        print(f"{label:46s} {r['best_s']:7.3f} {r['median_s']:7.3f} {r['gbps']:6.2f} {pc:>6s} "
              f"{pp:>5s} {xfer:>7s} {r['peak_mib']:8.0f} {tgt:>9s}  "
              f"{'; '.join(notes) or ('' if r['kind'] == 'curl' else 'ok')}")
    print()
    print("best s / med s: the fastest and the median run, each in a fresh process, from the call "
          "to every tensor in hand")
    print("(one element per page read); GB/s = file bytes / best s; %curl, %par: over one curl's "
          "and the better parallel curl's GB/s;")
    print("xfer s: the download alone, before parsing; peak MiB: peak RSS over the process's RSS "
          "after imports and set-up (largest run);")
    print(f"vs target: peak MiB - the tensors' {tensor_mib:.0f} MiB, against the target of at "
          "most +256 (ok / X); busy: other processes took")
    print(f"more than {BUSY:.0%} of the CPUs during the row's runs.")


def main():
    ap = argparse.ArgumentParser(description="Loading a tensor file over HTTP from a local "
                                 "nginx: dlpx beside its peers and curl, in one run.")
    ap.add_argument("--quick", action="store_true", help="CI smoke run: 64 MiB, 1 rep")
    ap.add_argument("--size-mib", type=int, default=None, help="file size (default 1024)")
    ap.add_argument("--reps", type=int, default=None, help="runs per method (default 3)")
    ap.add_argument("--only", action="append", default=[],
                    help="run only methods whose key contains this (repeatable)")
    ap.add_argument("--parallel", type=int, default=8,
                    help="requests in flight for the parallel rows (default 8)")
    ap.add_argument("--part-mib", type=int, default=8, help="range size of the ranged rows "
                    "(default 8)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds one run may take (default 60 + 1 per MiB)")
    ap.add_argument("--dir", default=None, help="where to make the server's directory "
                    "(default /tmp)")
    ap.add_argument("--json", default="bench-remote.json", help="where to write the results")
    ap.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_main(args.child, args.spec)
    VERBOSE[0] = args.verbose
    size_mib = args.size_mib or (64 if args.quick else 1024)
    reps = args.reps or (1 if args.quick else 3)
    n, part_mib = max(1, args.parallel), max(1, args.part_mib)
    rows = []
    for key, label, kind in ROWS:
        if args.only and kind != "curl" and not any(o in key for o in args.only):
            continue
        rows.append((key, label.format(n=n, part=part_mib, c=2 * n, p=2 * part_mib), kind))

    base = args.dir or "/tmp"
    os.makedirs(base, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="dlpx-bench-remote-", dir=base)
    nginx = Nginx(workdir)
    t_start = clock()

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    old_term = signal.signal(signal.SIGTERM, on_signal)
    try:
        os.chmod(workdir, 0o755)  # nginx's workers run as nobody under root
        docroot = os.path.join(workdir, "docroot")
        os.makedirs(os.path.join(docroot, BUCKET))
        path = os.path.join(docroot, BUCKET, KEY)
        say(f"writing a {size_mib} MiB safetensors file in {workdir} ...")
        ntensors, tensor_bytes, sums = build(path, size_mib * MiB)
        tiny = os.path.join(docroot, BUCKET, "tiny")
        with open(tiny, "wb") as f:
            f.write(b"x")
        for p in (path, tiny):
            os.chmod(p, 0o644)
        file_bytes = os.path.getsize(path)
        nginx.start()
        url = f"http://127.0.0.1:{nginx.port}/{BUCKET}/{KEY}"
        spec = {"url": url, "endpoint": f"http://127.0.0.1:{nginx.port}", "bucket": BUCKET,
                "key": KEY, "path": path, "file_bytes": file_bytes,
                "tensor_bytes": tensor_bytes, "sums": sums, "parallel": n,
                "part_bytes": part_mib * MiB}
        spec_path = os.path.join(workdir, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        renv = runai_s3_env()
        renv["AWS_ENDPOINT_URL"] = spec["endpoint"]
        ctx = {"url": url, "tiny_url": f"http://127.0.0.1:{nginx.port}/{BUCKET}/tiny",
               "path": path, "file_bytes": file_bytes, "parallel": n,
               "part_bytes": part_mib * MiB, "nginx": nginx, "spec": spec_path,
               "timeout": args.timeout or 60 + size_mib,
               "child_env": {"runai.s3": renv, "runai.http": renv}}
        vers = versions()
        m0, t0 = machine_cpu(), clock()
        results = run_all(ctx, rows, reps)
        wall = clock() - t0
        m1 = machine_cpu()
        tensor_mib = tensor_bytes / MiB

        try:
            import numpy as np
            npv = np.__version__
        except ImportError:
            npv = "n/a"
        import machine as _machine  # bench/machine.py, beside this script
        info = _machine.machine(npv)
        info.update(kernel=platform.release(), nginx=vers.get("nginx", nginx.version))
        dl = next((r for r in results.values() if r.get("module_path")), None)
        print()
        print(f"dlpx remote-load benchmark: {info['cpu']}, {info['cores']} cores, kernel "
              f"{info['kernel']}, Python {info['python']}, numpy {npv}, nginx {nginx.version} "
              f"(loopback, sendfile, {NCPU} workers), curl {vers['curl']}")
        print("peers: " + ", ".join(f"{k} {v}" for k, v in vers.items() if k != "curl"))
        if dl:
            print(f"dlpx {dl.get('version')} from {dl['module_path']}")
        print(f"file: {ntensors} float32 tensors, {tensor_mib:.0f} MiB ({file_bytes} bytes) in "
              f"model.safetensors; {reps} runs per method, each a fresh process; warm page cache;"
              f" parallel rows {n} in flight, {part_mib} MiB ranges")
        if m0 is not None and m1 is not None and wall > 0:
            # all the CPU time used while the runs went (ours included)
            print(f"the machine's CPUs were {min(1.0, (m1 - m0) / (wall * NCPU)):.0%} busy during "
                  "the runs (the methods themselves included)")
        print()
        print_table(results, tensor_mib)
        if size_mib < 256:
            print(f"({size_mib} MiB: too small a file for the times to mean much; run without "
                  "--quick)")
        out = {"machine": info, "versions": vers, "size_mib": size_mib, "reps": reps,
               "parallel": n, "part_mib": part_mib, "tensors": ntensors,
               "tensor_bytes": tensor_bytes, "file_bytes": file_bytes, "results": results,
               "curl_base_kib": ctx.get("curl_base_kib"),
               "elapsed_s": clock() - t_start, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        jpath = os.path.abspath(args.json)
        with open(jpath, "w") as f:
            json.dump(out, f, indent=2, default=str)
        print(f"\nwrote {jpath} ({clock() - t_start:.0f} s in all)")
    finally:
        nginx.stop()
        signal.signal(signal.SIGTERM, old_term)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


# ---- the child: one run of one method ----------------------------------------------------------


class Unavailable(Exception):
    """The method cannot run here: the row says why, once."""


def _need(mod, dist=None):
    import importlib
    try:
        return importlib.import_module(mod)
    except ImportError as e:
        raise Unavailable(f"not installed ({dist or mod}: {e})") from None


def _st_load(data):
    from safetensors.numpy import load
    return load(data)


def c_dlpx(spec, key):
    dlpx = _need("dlpx", "dlpx-cffi")
    try:
        import dlpx.remote  # noqa: F401
    except Exception as e:
        raise Unavailable(f"not available: this dlpx ({getattr(dlpx, '__version__', '?')}, "
                          f"{os.path.dirname(dlpx.__file__)}) has no dlpx.remote "
                          f"({type(e).__name__}: {e})") from None
    import inspect
    params = inspect.signature(dlpx.load_file).parameters
    kw = {}
    if key == "dlpx.numpy":
        if "framework" not in params:
            raise Unavailable("not available: load_file has no framework keyword")
        kw["framework"] = "numpy"
    elif key == "dlpx.opts":
        if "storage_options" not in params:
            raise Unavailable("not available: load_file has no storage_options keyword")
        kw["storage_options"] = {"concurrency": 2 * spec["parallel"],
                                 "part_size": 2 * spec["part_bytes"]}
    info = {"version": getattr(dlpx, "__version__", "?"),
            "module_path": os.path.dirname(dlpx.__file__)}
    if key == "dlpx.into":
        # tensors that exist already and are faulted in, as a model's
        # parameters are: the transfer alone, without the first touch of
        # fresh memory (which this VM makes slow and uneven)
        import numpy as np
        from dlpx._files import File
        with File(spec["url"]) as f:
            targets = {e.name: np.ones(e.shape, np.float32) for e in f.entries}

        def run_into(mark):
            dlpx.load_into(spec["url"], targets, verify=False)
            return targets
        return run_into, info
    return (lambda mark: dlpx.load_file(spec["url"], **kw)), info


def c_boto3(spec, key):
    boto3 = _need("boto3")
    _need("safetensors")
    import io
    from botocore import UNSIGNED
    from botocore.config import Config
    client = boto3.client("s3", endpoint_url=spec["endpoint"], region_name="us-east-1",
                          config=Config(signature_version=UNSIGNED,
                                        s3={"addressing_style": "path"}))

    def run(mark):
        buf = io.BytesIO()
        client.download_fileobj(spec["bucket"], spec["key"], buf)
        mark()
        data = buf.getvalue()
        del buf
        return _st_load(data)
    return run, {}


def c_obstore(spec, key):
    obstore = _need("obstore")
    _need("safetensors")
    from obstore.store import HTTPStore
    store = HTTPStore.from_url(f"{spec['endpoint']}/{spec['bucket']}",
                               client_options={"allow_http": True})
    if key == "obstore.get":
        def run(mark):
            got = obstore.get(store, spec["key"]).bytes()
            mark()
            data = bytes(got)  # safetensors.numpy.load takes bytes only
            del got
            return _st_load(data)
        return run, {}

    import asyncio

    async def fetch(size):
        sem = asyncio.Semaphore(spec["parallel"])
        part = spec["part_bytes"]

        async def one(a):
            async with sem:
                return await obstore.get_range_async(store, spec["key"], start=a,
                                                     end=min(size, a + part))
        return await asyncio.gather(*(one(a) for a in range(0, size, part)))

    # a loop made in set-up, as in a program that has one: asyncio.run()
    # would add its shutdown (about 1.8 s here with obstore's futures)
    loop = asyncio.new_event_loop()

    def run(mark):
        size = obstore.head(store, spec["key"])["size"]
        parts = loop.run_until_complete(fetch(size))
        mark()
        data = b"".join(parts)
        del parts
        return _st_load(data)
    return run, {}


def c_fsspec(spec, key):
    fsspec = _need("fsspec")
    _need("aiohttp")
    _need("safetensors")
    fs = fsspec.filesystem("http")

    def run(mark):
        if key == "fsspec.cat":
            data = fs.cat_file(spec["url"])
        else:
            with fs.open(spec["url"], "rb", block_size=spec["part_bytes"]) as f:
                data = f.read()
        mark()
        return _st_load(data)
    return run, {}


def c_runai(spec, key):
    _need("runai_model_streamer", "runai-model-streamer")
    _need("torch")
    from runai_model_streamer import SafetensorsStreamer
    if key == "runai.s3":
        import importlib.util
        if importlib.util.find_spec("runai_model_streamer_s3") is None:
            raise Unavailable("cannot read this URL: s3:// needs the runai-model-streamer-s3 "
                              "package (not installed)")
        url = f"s3://{spec['bucket']}/{spec['key']}"
    else:
        url = spec["url"]

    def run(mark):
        def items():
            with SafetensorsStreamer() as s:
                s.stream_file(url)
                yield from s.get_tensors()
        return items()
    return run, {}


def c_st_local(spec, key):
    _need("safetensors")
    from safetensors.numpy import load_file
    return (lambda mark: load_file(spec["path"])), {}


CHILD = {"dlpx": c_dlpx, "dlpx.numpy": c_dlpx, "dlpx.opts": c_dlpx, "dlpx.into": c_dlpx,
         "boto3": c_boto3,
         "obstore.get": c_obstore, "obstore.ranges": c_obstore, "fsspec.cat": c_fsspec,
         "fsspec.open": c_fsspec, "runai.s3": c_runai, "runai.http": c_runai,
         "st.local": c_st_local}


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child_main(key, spec_path):
    def emit(obj):
        print("RESULT " + json.dumps(obj), flush=True)
        return 0
    with open(spec_path) as f:
        spec = json.load(f)
    try:
        import numpy  # noqa: F401  every method's tensors are read as numpy
        run, info = CHILD[key](spec, key)
    except Unavailable as e:
        return emit({"status": str(e)})
    except Exception as e:
        return emit({"error": f"set-up: {type(e).__name__}: {e}"})
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        hwm_reset = True
    except OSError:
        hwm_reset = False
    base = _status_kib("VmRSS")
    marks = []
    t0 = clock()
    try:
        got = run(lambda: marks.append(clock() - t0))
        items = got.items() if hasattr(got, "items") else got
        sums, keep = {}, []
        for name, t in items:
            sums[name] = touch(t)
            keep.append(t)
        seconds = clock() - t0
    except Exception as e:
        msg = f"{type(e).__name__}: {e}".strip().splitlines()
        if key == "runai.http":
            return emit({"status": f"cannot read this URL: {msg[0] if msg else ''} "
                                   "(http(s):// is read as a local path; it reads s3://, gs://, "
                                   "az:// and files)"})
        return emit({"error": " ".join(msg[:2])[:300]})
    peak = _status_kib("VmHWM")  # without the reset: the peak since the start
    want = spec["sums"]
    if set(sums) != set(want):
        check = f"wrong names ({len(sums)} tensors, expected {len(want)})"
    else:
        wrong = [k for k in want if sums[k] != want[k]]
        check = f"wrong data in {len(wrong)} tensors (e.g. {wrong[0]})" if wrong else "ok"
    del keep, got, items
    return emit({"seconds": seconds, "transfer_s": marks[0] if marks else None,
                 "peak_mib": max(0, peak - base) / 1024, "base_mib": base / 1024,
                 "hwm_reset": hwm_reset, "check": check, **info})


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: nginx is stopped, the files gone
        print(f"interrupted ({e or 'SIGINT'})", file=sys.stderr)
        sys.exit(130)
