"""Tensor files over HTTP(S), against a real nginx (servers.NginxServer):
ranged reads equal to the local file for every dtype, part size and
concurrency; a server that ignores Range; redirects; bearer tokens;
slices that fetch only what they need (nginx's access log says); 404;
TLS verification; PUT; dlpx.remote.copy/stat; the CLI on URLs; no leaked
descriptors, tensors or storages."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dlpx
import servers
from servers import (BEARER, NUMPY_DTYPES, assert_same_tensors, every_dtype_file, random_raw,
                     raw_bytes, same, st_bytes)

remote = pytest.importorskip("dlpx.remote", reason="dlpx.remote is not importable (yet)")
if not remote.available():  # pragma: no cover
    pytest.skip("dlpx.remote.available() is False (libcurl missing)", allow_module_level=True)

try:
    import safetensors.numpy as ref
except ImportError:  # pragma: no cover
    ref = None

KiB, MiB = 1 << 10, 1 << 20
FAST = {"retries": 2, "timeout": 10.0}


def local_load(path):
    return dlpx.load_file(path, framework="numpy", mode="pread")


def publish(nginx, name, data, tmp_path):
    """|data| served as /files/|name| and written at tmp_path/|name|;
    returns the local path."""
    nginx.put(name, data)
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def opts(nginx=None, **kw):
    o = dict(FAST)
    if nginx is not None:
        o["ca_file"] = nginx.cert
    o.update(kw)
    return o


# ---- every dtype, both schemes, every entry point -----------------------------------------


@pytest.mark.parametrize("https", [False, True], ids=["http", "https"])
def test_every_dtype_equals_the_local_file(no_fd_leaks, nginx, tmp_path, no_leaks, https):
    data = every_dtype_file(seed=1)
    p = publish(nginx, "all.safetensors", data, tmp_path)
    url = nginx.url("all.safetensors", https=https)
    o = opts(nginx)
    want = local_load(p)
    assert_same_tensors(dlpx.load_file(url, framework="numpy", storage_options=o), want)
    assert_same_tensors(dlpx.load_file(url, framework="numpy", mode="pread",
                                       storage_options=o), want)
    with dlpx.safe_open(url, framework="numpy", storage_options=o) as f:
        assert sorted(f.keys()) == sorted(want)
        assert f.metadata() == {"format": "pt", "seed": "1"}
        assert_same_tensors({k: f.get_tensor(k) for k in f.keys()}, want)
    # the default framework: dlpx tensors
    got = dlpx.load_file(url, storage_options=o)
    assert all(isinstance(v, dlpx.Tensor) for v in got.values())
    assert {k: raw_bytes(v) for k, v in got.items()} == {k: raw_bytes(v) for k, v in want.items()}
    del got, want
    if ref is not None:  # the reference agrees (on the dtypes it reads: not F4, F6)
        rng = np.random.default_rng(1)
        d = {dt: (dt, (3, 8), random_raw(dt, (3, 8), rng)) for dt in NUMPY_DTYPES}
        p = publish(nginx, "ref.safetensors", st_bytes(d), tmp_path)
        theirs = ref.load_file(p)
        got = dlpx.load_file(nginx.url("ref.safetensors", https=https), framework="numpy",
                             storage_options=o)
        assert {k: raw_bytes(v) for k, v in got.items()} == {
            k: raw_bytes(v) for k, v in theirs.items()}
        del got


def test_load_into_existing_tensors(nginx, tmp_path, no_leaks):
    data = every_dtype_file(seed=2)
    p = publish(nginx, "into.safetensors", data, tmp_path)
    want = local_load(p)
    # not the sub-byte dtypes: NumPy (ml_dtypes) holds one element a byte, the
    # file packs them (load_into of those is wrong locally too)
    want = {k: v for k, v in want.items() if not k.startswith(("t_f4", "t_f6"))}
    targets = {k: np.zeros_like(v) for k, v in want.items()}
    dlpx.load_into(nginx.url("into.safetensors"), targets, strict=False, storage_options=opts())
    assert_same_tensors(targets, want)


# ---- part sizes, concurrency, shapes, dtypes (hypothesis) --------------------------------

_shape = st.lists(st.integers(0, 70), min_size=0, max_size=3)
_tensor = st.tuples(st.sampled_from(sorted(NUMPY_DTYPES) + ["BF16", "F8_E4M3"]), _shape)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(tensors=st.lists(_tensor, min_size=1, max_size=6),
       big=st.sampled_from([0, 100 * KiB, 700 * KiB + 3]),
       part_size=st.sampled_from([4 * KiB, 4 * KiB + 1, 64 * KiB, 1 * MiB, 8 * MiB]),
       concurrency=st.integers(1, 8),
       threads=st.sampled_from([None, 1, 2, 3, 16]),
       location=st.sampled_from(["files", "norange"]),
       seed=st.integers(0, 2**32 - 1))
def test_ranged_reads_equal_the_local_file(nginx_server, tmp_path, tensors, big, part_size,
                                           concurrency, threads, location, seed):
    rng = np.random.default_rng(seed)
    t = {f"t{i}": (dt, shape, random_raw(dt, shape, rng)) for i, (dt, shape) in enumerate(tensors)}
    if big:  # a tensor larger than several parts
        t["big"] = ("I16", (big // 2,), random_raw("U8", (big // 2 * 2,), rng))
    data = st_bytes(t)
    name = f"h{seed}.safetensors"
    p = publish(nginx_server, name, data, tmp_path)
    o = opts(part_size=part_size, concurrency=concurrency)
    if threads is not None:  # receiving threads, each with connections of its own
        o["threads"] = threads
    url = nginx_server.url(name, location)
    want = local_load(p)
    assert_same_tensors(dlpx.load_file(url, framework="numpy", storage_options=o), want)
    with dlpx.safe_open(url, framework="numpy", storage_options=o) as f:
        k = max(want, key=lambda k: want[k].nbytes)
        assert_same_tensors({k: f.get_tensor(k)}, {k: want[k]})
    os.unlink(os.path.join(nginx_server.docroot, name))


def test_zero_byte_tensors_only(nginx, tmp_path, no_leaks):
    data = st_bytes({"a": ("F32", (0,), b""), "b": ("I64", (3, 0, 2), b""),
                     "c": ("U8", (0, 0), b"")})
    p = publish(nginx, "zero.safetensors", data, tmp_path)
    for loc in ("files", "norange"):
        got = dlpx.load_file(nginx.url("zero.safetensors", loc), framework="numpy",
                             storage_options=opts(part_size=4 * KiB))
        assert_same_tensors(got, local_load(p))


def test_no_tensors_at_all(nginx, tmp_path):
    data = st_bytes({}, {"k": "v"})
    publish(nginx, "none.safetensors", data, tmp_path)
    url = nginx.url("none.safetensors")
    assert dlpx.load_file(url, storage_options=opts()) == {}
    with dlpx.safe_open(url, storage_options=opts()) as f:
        assert f.keys() == [] and f.metadata() == {"k": "v"}


# ---- a server that ignores Range -------------------------------------------------------------


def test_server_ignoring_range_gives_correct_data(no_fd_leaks, nginx, tmp_path, no_leaks):
    """/norange/ answers every ranged GET with 200 and the whole body: the
    data must still land in the right places (not each part's bytes taken
    from the file's start)."""
    rng = np.random.default_rng(4)
    t = {f"t{i}": ("F32", (64, 256), random_raw("F32", (64, 256), rng)) for i in range(6)}
    data = st_bytes(t)
    p = publish(nginx, "nr.safetensors", data, tmp_path)
    want = local_load(p)
    mark = nginx.log_mark()
    got = dlpx.load_file(nginx.url("nr.safetensors", "norange"), framework="numpy",
                         storage_options=opts(part_size=16 * KiB, concurrency=4))
    assert_same_tensors(got, want)
    log = nginx.requests(mark)
    assert log and all(e.status == 200 for e in log)
    # streamed, not fetched once per part: a bounded number of whole bodies
    assert sum(e.body_bytes_sent for e in log) <= 3 * len(data), log
    with dlpx.safe_open(nginx.url("nr.safetensors", "norange"), framework="numpy",
                        storage_options=opts(part_size=16 * KiB)) as f:
        assert same(f.get_slice("t3")[5:9, 100:], want["t3"][5:9, 100:])
        assert same(f.get_tensor("t5"), want["t5"])


# ---- redirects, tokens, TLS ------------------------------------------------------------------


@pytest.mark.parametrize("location", ["redirect", "redirect301", "redirect307", "redirect308"])
def test_redirects_are_followed(nginx, tmp_path, location):
    p = publish(nginx, "r.safetensors", every_dtype_file(seed=5), tmp_path)
    url = nginx.url("r.safetensors", location)
    assert_same_tensors(dlpx.load_file(url, framework="numpy", storage_options=opts()),
                        local_load(p))
    assert remote.stat(url) == os.path.getsize(p)


def test_redirect_loop_is_an_oserror(nginx, tmp_path):
    publish(nginx, "loop.safetensors", every_dtype_file(), tmp_path)
    with pytest.raises(OSError) as e:
        dlpx.load_file(nginx.url("loop.safetensors", "loop"), storage_options=opts())
    assert not isinstance(e.value, (FileNotFoundError, PermissionError, TimeoutError))


def test_bearer_token(nginx, tmp_path, no_leaks):
    p = publish(nginx, "tok.safetensors", every_dtype_file(seed=6), tmp_path)
    url = nginx.url("tok.safetensors", "private")
    want = local_load(p)
    assert_same_tensors(
        dlpx.load_file(url, framework="numpy", storage_options=opts(token=BEARER)), want)
    with dlpx.safe_open(url, framework="numpy", storage_options=opts(token=BEARER)) as f:
        assert same(f.get_slice("t_f32")[1:3], want["t_f32"][1:3])
    with pytest.raises(PermissionError):
        dlpx.load_file(url, storage_options=opts())
    with pytest.raises(PermissionError):
        dlpx.load_file(url, storage_options=opts(token="wrong"))
    with pytest.raises(PermissionError):
        dlpx.safe_open(url, storage_options=opts())
    with pytest.raises(PermissionError):
        remote.stat(url)
    assert remote.stat(url, storage_options=opts(token=BEARER)) == os.path.getsize(p)


def test_tls_verification(nginx, tmp_path):
    p = publish(nginx, "tls.safetensors", every_dtype_file(seed=7), tmp_path)
    url = nginx.url("tls.safetensors", https=True)
    want = local_load(p)
    with pytest.raises(OSError) as e:  # a self-signed certificate, no CA given
        dlpx.load_file(url, storage_options=dict(FAST))
    assert not isinstance(e.value, (FileNotFoundError, PermissionError))
    assert_same_tensors(dlpx.load_file(url, framework="numpy",
                                       storage_options=opts(ca_file=nginx.cert)), want)
    assert_same_tensors(dlpx.load_file(url, framework="numpy",
                                       storage_options=dict(FAST, verify=False)), want)


# ---- slices fetch only what they need ---------------------------------------------------------


def test_get_slice_fetches_a_bounded_number_of_bytes(nginx, tmp_path, no_leaks):
    rng = np.random.default_rng(8)
    t = {"a": ("F32", (1024, 1024), random_raw("F32", (1024, 1024), rng)),   # 4 MiB first
         "w": ("F32", (1024, 1024), random_raw("F32", (1024, 1024), rng))}   # 4 MiB after it
    p = publish(nginx, "slice.safetensors", st_bytes(t), tmp_path)
    want = local_load(p)
    url = nginx.url("slice.safetensors")
    o = opts(part_size=1 * MiB)
    with dlpx.safe_open(url, framework="numpy", storage_options=o) as f:
        assert f.get_slice("w").get_shape() == [1024, 1024]
        mark = nginx.log_mark()
        rows = f.get_slice("w")[500:502]
        assert same(rows, want["w"][500:502])
        log = nginx.requests(mark)
        fetched = sum(e.body_bytes_sent for e in log)
        assert 8 * KiB <= fetched <= 8 * KiB + 64 * KiB, log   # 2 rows of 4 KiB, not 4 MiB
        assert all(e.status == 206 for e in log), log
        mark = nginx.log_mark()
        s = f.get_slice("w")[3, 10:20]
        assert same(s, want["w"][3, 10:20])
        assert sum(e.body_bytes_sent for e in nginx.requests(mark)) <= 64 * KiB
        mark = nginx.log_mark()
        col = f.get_slice("w")[:, 7]  # a column: at most the tensor's span
        assert same(col, want["w"][:, 7])
        assert sum(e.body_bytes_sent for e in nginx.requests(mark)) <= 4 * MiB + 64 * KiB
        # step and negative-free slices of the first tensor
        assert same(f.get_slice("a")[::100, 5:9], want["a"][::100, 5:9])
        mark = nginx.log_mark()
        assert same(f.get_tensor("a"), want["a"])
        assert sum(e.body_bytes_sent for e in nginx.requests(mark)) <= 4 * MiB + 64 * KiB


def test_open_fetches_only_the_header(nginx, tmp_path):
    """Opening reads the header (one request of the first 64 KiB), not the
    file."""
    rng = np.random.default_rng(9)
    t = {"w": ("U8", (4 * MiB,), random_raw("U8", (4 * MiB,), rng))}
    publish(nginx, "hdr.safetensors", st_bytes(t), tmp_path)
    mark = nginx.log_mark()
    with dlpx.safe_open(nginx.url("hdr.safetensors"), storage_options=opts()) as f:
        assert f.keys() == ["w"]
    log = nginx.requests(mark)
    assert 1 <= len(log) <= 2 and sum(e.body_bytes_sent for e in log) <= 128 * KiB, log


# ---- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("https", [False, True], ids=["http", "https"])
def test_missing_file_is_filenotfounderror(no_fd_leaks, nginx, https, no_leaks):
    url = nginx.url("missing.safetensors", https=https)
    o = opts(nginx)
    with pytest.raises(FileNotFoundError):
        dlpx.load_file(url, storage_options=o)
    with pytest.raises(FileNotFoundError):
        dlpx.safe_open(url, storage_options=o)
    with pytest.raises(FileNotFoundError):
        dlpx.load_into(url, {}, strict=False, storage_options=o)
    with pytest.raises(FileNotFoundError):
        remote.stat(url, storage_options=o)
    with pytest.raises(FileNotFoundError):
        dlpx.load_file(nginx.http + "/elsewhere/x.safetensors", storage_options=o)


def test_connection_refused_is_an_oserror(tmp_path):
    url = f"http://127.0.0.1:{servers.free_port()}/x.safetensors"
    with pytest.raises(OSError) as e:
        dlpx.load_file(url, storage_options=dict(retries=1, timeout=2.0))
    assert not isinstance(e.value, (FileNotFoundError, PermissionError))


def test_unknown_or_bad_storage_options(nginx, tmp_path):
    publish(nginx, "o.safetensors", every_dtype_file(), tmp_path)
    url = nginx.url("o.safetensors")
    with pytest.raises(TypeError, match="no_such_option"):
        dlpx.load_file(url, storage_options={"no_such_option": 1})
    with pytest.raises(TypeError):
        dlpx.safe_open(url, storage_options={"tokn": BEARER})
    for bad in ({"part_size": -1}, {"concurrency": 0}, {"timeout": -1.0}, {"retries": "x"},
                {"checksum": "md5"}, {"threads": 0}, {"threads": 17}, {"threads": 2.0}):
        with pytest.raises((TypeError, ValueError)):
            dlpx.load_file(url, storage_options=bad)


def test_file_changed_between_open_and_read_is_an_oserror(nginx, tmp_path, no_leaks):
    """nginx's ETag (mtime-size) changes when the file is replaced: reads
    of the old open must fail, not mix two versions."""
    rng = np.random.default_rng(10)
    t = {"a": ("U8", (256 * KiB,), random_raw("U8", (256 * KiB,), rng))}
    nginx.put("chg.safetensors", st_bytes(t))
    url = nginx.url("chg.safetensors")
    with dlpx.safe_open(url, framework="numpy", storage_options=opts()) as f:
        t2 = {"a": ("U8", (256 * KiB,), random_raw("U8", (256 * KiB,), rng))}
        path = nginx.put("chg.safetensors", st_bytes(t2))  # same size, other bytes
        st_ = os.stat(path)
        os.utime(path, (st_.st_atime + 100, st_.st_mtime + 100))
        with pytest.raises(OSError) as e:
            f.get_tensor("a")
        assert not isinstance(e.value, (FileNotFoundError, PermissionError, TimeoutError))


def test_checksum_mismatch_over_http_names_the_tensor(nginx, tmp_path, no_leaks):
    rng = np.random.default_rng(11)
    d = {"good": rng.standard_normal((64, 64)).astype(np.float32),
         "bad": rng.standard_normal((64, 64)).astype(np.float32)}
    p = tmp_path / "ck.safetensors"
    dlpx.save_file(d, p, checksum=True)
    data = servers.corrupt(p.read_bytes(), "bad")
    nginx.put("ck.safetensors", data)
    url = nginx.url("ck.safetensors")
    with pytest.raises(ValueError, match="bad"):
        dlpx.load_file(url, storage_options=opts())
    with dlpx.safe_open(url, framework="numpy", storage_options=opts()) as f:
        assert same(f.get_tensor("good"), d["good"])
        with pytest.raises(ValueError, match="bad"):
            f.get_tensor("bad")
    got = dlpx.load_file(url, framework="numpy", verify=False, storage_options=opts())
    assert not same(got["bad"], d["bad"])


# ---- writing: PUT, copy, stat ------------------------------------------------------------------


def test_save_file_puts_over_http(nginx, tmp_path, no_leaks):
    rng = np.random.default_rng(12)
    d = {"w": rng.standard_normal((33, 17)).astype(np.float32), "i": np.arange(7)}
    url = nginx.url("out/saved.safetensors", "dav")
    dlpx.save_file(d, url, {"k": "v"}, storage_options=opts())
    local = tmp_path / "local.safetensors"
    dlpx.save_file(d, local, {"k": "v"})
    with open(os.path.join(nginx.docroot, "dav", "out", "saved.safetensors"), "rb") as f:
        assert f.read() == local.read_bytes()


def test_copy_http_to_local_with_progress(no_fd_leaks, nginx, tmp_path):
    data = every_dtype_file(seed=13, big=3 * MiB + 5)
    publish(nginx, "cp.safetensors", data, tmp_path)
    calls = []
    dst = tmp_path / "copied.safetensors"
    remote.copy(nginx.url("cp.safetensors"), str(dst), progress=lambda d, t: calls.append((d, t)),
                storage_options=opts(part_size=1 * MiB, concurrency=3))
    assert dst.read_bytes() == data
    assert calls and calls[-1] == (len(data), len(data))
    assert all(t == len(data) for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    # a missing source leaves no file behind
    with pytest.raises(FileNotFoundError):
        remote.copy(nginx.url("nope"), str(tmp_path / "nope"))
    assert not (tmp_path / "nope").exists()
    assert [n for n in os.listdir(tmp_path) if "nope" in n] == []


def test_copy_local_to_http_put(nginx, tmp_path):
    src = tmp_path / "src.safetensors"
    src.write_bytes(every_dtype_file(seed=14, big=200 * KiB))
    remote.copy(str(src), nginx.url("up.safetensors", "dav"), storage_options=opts())
    with open(os.path.join(nginx.docroot, "dav", "up.safetensors"), "rb") as f:
        assert f.read() == src.read_bytes()


def test_stat(nginx, tmp_path):
    for size in (0, 1, 65537):
        nginx.put(f"s{size}", b"x" * size)
        assert remote.stat(nginx.url(f"s{size}")) == size
        assert remote.stat(nginx.url(f"s{size}", https=True),
                           storage_options={"ca_file": nginx.cert}) == size


def test_is_url_and_local_paths_still_work(tmp_path):
    p = tmp_path / "plain.safetensors"
    dlpx.save_file({"a": np.arange(3)}, p)
    assert same(dlpx.load_file(str(p), framework="numpy")["a"], np.arange(3))


# ---- leaks -------------------------------------------------------------------------------------


def test_no_leaks_over_many_loads_and_failures(no_fd_leaks, nginx, tmp_path, no_leaks):
    publish(nginx, "many.safetensors", every_dtype_file(seed=15), tmp_path)
    url = nginx.url("many.safetensors")
    for _ in range(10):
        dlpx.load_file(url, storage_options=opts(concurrency=4, part_size=4 * KiB))
        with dlpx.safe_open(url, storage_options=opts()) as f:
            f.get_slice("t_f32")[1:2]
        with pytest.raises(FileNotFoundError):
            dlpx.load_file(nginx.url("absent"), storage_options=opts())
        with pytest.raises(PermissionError):
            dlpx.load_file(nginx.url("many.safetensors", "private"), storage_options=opts())
    # a safe_open never closed explicitly gives everything back when collected
    f = dlpx.safe_open(url, storage_options=opts())
    f.get_tensor("t_u8")
    del f


# ---- the CLI on URLs ---------------------------------------------------------------------------


def cli(*args):
    return subprocess.run([sys.executable, "-m", "dlpx", *map(str, args)], capture_output=True,
                          text=True, env=os.environ.copy(), timeout=120)


def test_cli_ls_verify_cp_on_http(nginx, tmp_path):
    from dlpx import _cli
    d = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(5, np.int64)}
    p = tmp_path / "c.safetensors"
    dlpx.save_file(d, p, {"note": "x"}, checksum=True)
    nginx.put("c.safetensors", p.read_bytes())
    url = nginx.url("c.safetensors")
    r = cli("ls", url, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    got = {t["name"]: t for t in doc["tensors"]}
    assert got["w"]["shape"] == [3, 4] and got["w"]["dtype"] == "F32"
    assert doc["metadata"] == {"note": "x"} and doc["checksums"] is True
    r = cli("verify", url)
    assert r.returncode == _cli.EXIT_OK, (r.stdout, r.stderr)
    data = bytearray(p.read_bytes())
    data[-1] ^= 1
    nginx.put("c.safetensors", bytes(data))
    r = cli("verify", url)
    assert r.returncode == _cli.EXIT_MISMATCH, (r.stdout, r.stderr)
    r = cli("ls", nginx.url("missing.safetensors"))
    assert r.returncode == _cli.EXIT_BAD_INPUT, (r.stdout, r.stderr)
    nginx.put("c.safetensors", p.read_bytes())
    dst = tmp_path / "got.safetensors"
    r = cli("cp", url, dst)
    assert r.returncode == 0, r.stderr
    assert dst.read_bytes() == p.read_bytes()


def test_reads_from_many_threads_at_once(no_fd_leaks, nginx, tmp_path, no_leaks):
    """A safe_open of a URL is used from several threads at once: each read
    takes a connection of its own (never one connection from two threads),
    every tensor is right, and the connections go with the file."""
    import threading
    rng = np.random.default_rng(7)
    want = {f"t{i}": rng.standard_normal((50 + i, 300)).astype(np.float32) for i in range(24)}
    p = tmp_path / "threads.safetensors"
    dlpx.save_file(want, str(p))
    nginx.put("threads.safetensors", p.read_bytes())
    errors, got = [], {}
    with dlpx.safe_open(nginx.url("threads.safetensors"), framework="numpy",
                        storage_options=opts(part_size=8 * KiB, concurrency=3)) as f:
        def worker(names):
            try:
                for _ in range(3):
                    for n in names:
                        got[n] = f.get_tensor(n)
                        assert np.array_equal(f.get_slice(n)[5:9, 10:20], want[n][5:9, 10:20])
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
        names = sorted(want)
        ts = [threading.Thread(target=worker, args=(names[i::6],)) for i in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert not errors, errors[0]
    for n, a in want.items():
        assert np.array_equal(got[n], a)
    del got


@pytest.mark.parametrize("threads", [None, 2, 4, 16])
def test_large_read_on_several_receiving_threads(no_fd_leaks, nginx, tmp_path, no_leaks, threads):
    """A read large enough for several receiving threads (each with its
    own connections, all claiming parts from one queue), into new tensors
    and into existing ones: every byte lands where it belongs, however late
    a thread starts, and a second load on the same pools is right too."""
    rng = np.random.default_rng(11)
    want = {f"w{i:02d}": rng.integers(0, 2**31, (256 + 8 * i, 1024), dtype=np.int32)
            for i in range(72)}  # ~ 80 MiB: over the 64 MiB of the automatic choice
    p = tmp_path / "large.safetensors"
    dlpx.save_file(want, str(p))
    nginx.put("large.safetensors", p.read_bytes())
    o = opts(part_size=512 * KiB, concurrency=8)
    if threads is not None:
        o["threads"] = threads
    url = nginx.url("large.safetensors")
    assert_same_tensors(dlpx.load_file(url, framework="numpy", storage_options=o), want)
    into = {k: np.zeros_like(v) for k, v in want.items()}
    for _ in range(2):
        dlpx.load_into(url, into, storage_options=o)
        assert_same_tensors(into, want)
        for v in into.values():
            v[...] = -1
    os.unlink(os.path.join(nginx.docroot, "large.safetensors"))
