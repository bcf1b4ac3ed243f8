"""Hostile servers and hostile files over the network.

1. Malformed files served by nginx give the errors they give locally (the
   builders of test_files_hostile.py), also cut at sampled bytes and
   randomly mutated (hypothesis).
2. Faults injected by servers.FaultProxy in front of nginx (HTTP) and moto
   (S3): transient 5xx/429 are retried, persistent ones are OSError after
   the retries (and the number of attempts is the retries + 1), 403/404 are
   not retried, slow servers still succeed, connection resets are resumed,
   stalls beyond the timeout are TimeoutError, a shifted Content-Range or a
   changed ETag is an OSError (never wrong data).
3. Uploads under faults: a failed part is retried; an upload that cannot
   finish leaves the old object as it was and no multipart upload behind.
"""

from __future__ import annotations

import os
import random
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dlpx
import servers
from servers import (assert_same_tensors, every_dtype_file, is_part_upload, random_raw, same,
                     st_bytes)

remote = pytest.importorskip("dlpx.remote", reason="dlpx.remote is not importable (yet)")
if not remote.available():  # pragma: no cover
    pytest.skip("dlpx.remote.available() is False (libcurl missing)", allow_module_level=True)

from test_files_hostile import HOSTILE  # noqa: E402  (the local suite's hostile files)

KiB, MiB = 1 << 10, 1 << 20
NOT_OTHER_OSERRORS = (FileNotFoundError, PermissionError, TimeoutError)


def local_outcome(path, fn):
    """('ok', result) or (exception type, message) of fn(path)."""
    try:
        return "ok", fn(path)
    except Exception as e:  # noqa: BLE001
        return type(e), str(e)


# ---- 1. hostile files over HTTP ------------------------------------------------------------


def _entry_points(opts):
    def load(u):
        return dlpx.load_file(u, framework="numpy", storage_options=opts)

    def load_pread(u):
        return dlpx.load_file(u, framework="numpy", mode="pread", storage_options=opts)

    def opened(u):
        with dlpx.safe_open(u, framework="numpy", storage_options=opts) as f:
            return {k: f.get_tensor(k) for k in f.keys()}

    def into(u):
        return dlpx.load_into(u, {}, strict=False, storage_options=opts)
    return {"load_file": load, "pread": load_pread, "safe_open": opened, "load_into": into}


def _local_entry_points():
    return {"load_file": lambda p: dlpx.load_file(p, framework="numpy", mode="pread"),
            "pread": lambda p: dlpx.load_file(p, framework="numpy", mode="pread"),
            "safe_open": lambda p: _open_all_local(p),
            "load_into": lambda p: dlpx.load_into(p, {}, strict=False)}


def _open_all_local(p):
    with dlpx.safe_open(p, framework="numpy", mode="pread") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_file_over_http_is_refused_as_locally(no_fd_leaks, nginx, tmp_path, no_leaks, name):
    data, match = HOSTILE[name]
    nginx.put("h.safetensors", data)
    (tmp_path / "h").write_bytes(data)
    url = nginx.url("h.safetensors")
    for ep, fn in _entry_points({"retries": 1, "timeout": 10.0}).items():
        with pytest.raises(ValueError, match=match) as e:
            fn(url)
        assert not isinstance(e.value, OSError), (ep, e.value)


def test_truncated_files_over_http(nginx, tmp_path, no_leaks):
    rng = np.random.default_rng(40)
    good = dlpx.save({"w": rng.standard_normal((40, 3)).astype(np.float32),
                      "b": np.arange(6, dtype=np.int16), "e": np.zeros((0, 2))},
                     metadata={"k": "v"})
    n = int.from_bytes(good[:8], "little")
    cuts = sorted({0, 1, 7, 8, 9, 8 + n - 1, 8 + n, 8 + n + 1, len(good) - 1}
                  | set(random.Random(4).sample(range(len(good)), 12)))
    url = nginx.url("cut.safetensors")
    p = str(tmp_path / "cut")
    for cut in cuts:
        nginx.put("cut.safetensors", good[:cut])
        with open(p, "wb") as f:
            f.write(good[:cut])
        want_t, want_msg = local_outcome(p, lambda q: dlpx.load_file(q, mode="pread"))
        assert want_t is ValueError, (cut, want_t, want_msg)
        with pytest.raises(ValueError) as e:
            dlpx.load_file(url, storage_options={"retries": 1})
        # the same problem named (the byte counts of the message included)
        assert str(e.value).split(":")[-1].strip() == want_msg.split(":")[-1].strip(), cut


_MUTATION = st.tuples(st.sampled_from(["set", "insert", "delete"]), st.integers(0, 1 << 16),
                      st.integers(0, 255))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(mutations=st.lists(_MUTATION, min_size=1, max_size=4),
       cut=st.one_of(st.none(), st.integers(0, 1 << 16)))
def test_random_mutations_over_http_match_local(nginx_server, tmp_path, mutations, cut):
    rng = np.random.default_rng(41)
    good = dlpx.save({"w": rng.standard_normal((4, 3)).astype(np.float32),
                      "b": np.arange(6, dtype=np.int16).reshape(2, 3),
                      "m": np.array([True, False])}, metadata={"format": "pt"})
    b = bytearray(good)
    for op, pos, byte in mutations:
        pos %= len(b) + (op == "insert")
        if op == "set" and pos < len(b):
            b[pos] = byte
        elif op == "insert":
            b.insert(pos, byte)
        elif len(b) > 1:
            del b[pos % len(b)]
    if cut is not None:
        del b[cut % (len(b) + 1):]
    data = bytes(b)
    p = str(tmp_path / "mut")
    with open(p, "wb") as f:
        f.write(data)
    nginx_server.put("mut.safetensors", data)
    url = nginx_server.url("mut.safetensors")
    o = {"retries": 1}
    for ep, local_fn in _local_entry_points().items():
        want = local_outcome(p, local_fn)
        got = local_outcome(url, _entry_points(o)[ep])
        if want[0] == "ok" and isinstance(want[1], dict):
            assert got[0] == "ok", (ep, got)
            assert_same_tensors(got[1], want[1])
        else:
            assert got[0] == want[0], (ep, want, got)
            if want[0] is ValueError:
                assert got[1].split(":")[-1] == want[1].split(":")[-1], (ep, want, got)


# ---- 2. faults, over HTTP (nginx) and S3 (moto) ----------------------------------------------


class Backend:
    """A file reachable through a FaultProxy: .url, .opts, .want (the
    tensors), .proxy."""


@pytest.fixture(params=["http", "s3"])
def backend(request, fault_proxy, tmp_path, monkeypatch):
    rng = np.random.default_rng(42)
    t = {f"t{i}": ("F32", (128, 256), random_raw("F32", (128, 256), rng)) for i in range(4)}
    data = st_bytes(t)  # 4 tensors of 128 KiB
    p = tmp_path / "f.safetensors"
    p.write_bytes(data)
    b = Backend()
    b.data = data
    b.want = dlpx.load_file(str(p), framework="numpy", mode="pread")
    if request.param == "http":
        ng = request.getfixturevalue("nginx")
        ng.put("f.safetensors", data)
        b.proxy = fault_proxy(ng.http)
        b.url = b.proxy.url + "/files/f.safetensors"
    else:
        s3 = request.getfixturevalue("s3")
        s3.put("f.safetensors", data)
        b.proxy = fault_proxy(s3.endpoint)
        monkeypatch.setenv("AWS_ENDPOINT_URL", b.proxy.url)
        b.url = s3.url("f.safetensors")
        b.s3 = s3
    b.kind = request.param
    b.opts = {"part_size": 64 * KiB, "concurrency": 4, "retries": 3, "timeout": 5.0}
    return b


def data_get(req):
    """A ranged GET of tensor data (not of the header at byte 0)."""
    return req.method == "GET" and "range" in req.headers and not req.headers["range"].startswith(
        "bytes=0-")


def attempts(proxy, pred=None):
    return [r for r in proxy.requests if pred is None or pred(r)]


def load(b, **kw):
    return dlpx.load_file(b.url, framework="numpy", storage_options=dict(b.opts, **kw))


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_errors_are_retried(backend, status, no_leaks):
    backend.proxy.inject("status", 2, status=status)  # the first two requests, the header's
    backend.proxy.inject("status", 2, match=data_get, status=status)
    assert_same_tensors(load(backend), backend.want)
    assert sum(r.fault == "status" for r in backend.proxy.requests) == 4


def test_persistent_errors_fail_after_the_retries(no_fd_leaks, backend, no_leaks):
    backend.proxy.inject("status", float("inf"), status=500)
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        load(backend, retries=2)
    assert not isinstance(e.value, NOT_OTHER_OSERRORS), e.value
    assert len(backend.proxy.requests) == 3, [r.path for r in backend.proxy.requests]
    assert time.monotonic() - t0 < 30
    # persistent failures of data requests only: opened, then a read fails
    backend.proxy.clear()
    backend.proxy.inject("status", float("inf"), match=data_get, status=503)
    with dlpx.safe_open(backend.url, framework="numpy",
                        storage_options=dict(backend.opts, retries=1)) as f:
        with pytest.raises(OSError) as e:
            f.get_tensor("t2")
        assert not isinstance(e.value, NOT_OTHER_OSERRORS), e.value


@pytest.mark.parametrize("status,exc", [(403, PermissionError), (404, FileNotFoundError)])
def test_client_errors_are_not_retried(backend, status, exc):
    backend.proxy.inject("status", float("inf"), status=status)
    with pytest.raises(exc):
        load(backend)
    assert len(backend.proxy.requests) == 1


def test_slow_responses_still_succeed(backend, no_leaks):
    backend.proxy.inject("delay", float("inf"), seconds=0.3)
    backend.proxy.inject("slow", float("inf"), chunk=32 * KiB, seconds=0.02)
    assert_same_tensors(load(backend, timeout=2.0), backend.want)
    backend.proxy.clear()
    backend.proxy.inject("slow", float("inf"), chunk=16 * KiB, seconds=0.05)
    assert_same_tensors(load(backend, timeout=2.0), backend.want)


def test_connection_resets_are_retried(no_fd_leaks, backend, no_leaks):
    backend.proxy.inject("reset", 3, match=data_get, after=10_000)
    assert_same_tensors(load(backend), backend.want)
    assert sum(r.fault == "reset" for r in backend.proxy.requests) == 3
    backend.proxy.clear()
    backend.proxy.inject("reset", 1, after=20)  # inside the header's answer
    assert_same_tensors(load(backend), backend.want)


def test_persistent_resets_are_an_oserror(backend):
    backend.proxy.inject("reset", float("inf"), match=data_get, after=1000)
    with pytest.raises(OSError) as e:
        load(backend, retries=2)
    assert not isinstance(e.value, (FileNotFoundError, PermissionError)), e.value


def test_a_stall_shorter_than_the_retries_is_survived(backend, no_leaks):
    backend.proxy.inject("stall", 1, match=data_get, after=5000, seconds=30)
    t0 = time.monotonic()
    assert_same_tensors(load(backend, timeout=1.0), backend.want)
    assert time.monotonic() - t0 < 15


def test_stalls_beyond_the_timeout_are_timeouterror(no_fd_leaks, backend, no_leaks):
    backend.proxy.inject("stall", float("inf"), match=data_get, after=5000, seconds=60)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        load(backend, timeout=1.0, retries=1)
    assert time.monotonic() - t0 < 20
    # a server that accepts and then never answers at all
    backend.proxy.clear()
    backend.proxy.inject("hang", float("inf"), seconds=60)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        dlpx.safe_open(backend.url, storage_options=dict(backend.opts, timeout=1.0, retries=1))
    assert time.monotonic() - t0 < 20


def test_shifted_content_range_is_an_oserror(backend, no_leaks):
    backend.proxy.inject("shift", float("inf"), match=data_get, shift=4)
    with pytest.raises(OSError) as e:
        load(backend, retries=1)
    assert not isinstance(e.value, NOT_OTHER_OSERRORS), e.value


def test_changed_etag_is_an_oserror(backend, no_leaks):
    backend.proxy.inject("etag", float("inf"), match=data_get)
    with pytest.raises(OSError) as e:
        load(backend, retries=1)
    assert not isinstance(e.value, NOT_OTHER_OSERRORS), e.value


def test_faults_mixed_at_random(backend, no_leaks):
    """Any mix of transient faults on a few requests: the data is right."""
    r = random.Random(43)
    for _ in range(3):
        backend.proxy.clear()
        for _ in range(3):
            kind = r.choice(["status", "reset", "slow", "delay"])
            kw = {"status": {"status": r.choice([500, 503])}, "reset": {"after": r.randrange(9000)},
                  "slow": {"chunk": 8192, "seconds": 0.01}, "delay": {"seconds": 0.1}}[kind]
            backend.proxy.inject(kind, 1, match=data_get, **kw)
        assert_same_tensors(load(backend, retries=5), backend.want)


# ---- 3. uploads under faults (S3) ------------------------------------------------------------


@pytest.fixture
def s3_proxy(s3, fault_proxy, monkeypatch):
    p = fault_proxy(s3.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", p.url)
    return s3, p


def _big(seed, nbytes=11 * MiB):
    rng = np.random.default_rng(seed)
    return {f"p{i}": rng.standard_normal(nbytes // 12).astype(np.float32) for i in range(3)}


def test_a_failed_part_is_retried(s3_proxy, tmp_path, no_leaks):
    s3, proxy = s3_proxy
    d = _big(44)
    proxy.inject("status", 1, match=lambda r: is_part_upload(r) and "partNumber=2" in r.path,
                 status=500)
    proxy.inject("reset", 1, match=lambda r: is_part_upload(r) and "partNumber=1" in r.path)
    dlpx.save_file(d, s3.url("retried.safetensors"),
                   storage_options={"part_size": 5 * MiB, "retries": 3})
    local = tmp_path / "l"
    dlpx.save_file(d, local)
    assert s3.get("retried.safetensors") == local.read_bytes()
    assert s3.uploads() == []
    assert sum(r.fault is not None for r in proxy.requests) == 2


def test_a_failed_upload_leaves_the_old_object_and_no_parts(no_fd_leaks, s3_proxy, tmp_path, no_leaks):
    s3, proxy = s3_proxy
    old = every_dtype_file(seed=45)
    s3.put("kept.safetensors", old)
    proxy.inject("status", float("inf"), match=lambda r: is_part_upload(r) and
                 "partNumber=2" in r.path, status=500)
    with pytest.raises(OSError) as e:
        dlpx.save_file(_big(46), s3.url("kept.safetensors"),
                       storage_options={"part_size": 5 * MiB, "retries": 1})
    assert not isinstance(e.value, NOT_OTHER_OSERRORS), e.value
    assert s3.get("kept.safetensors") == old
    assert s3.uploads() == []
    assert any(r.method == "DELETE" and "uploadId=" in r.path for r in proxy.requests)
    # and a new key is not created at all
    with pytest.raises(OSError):
        dlpx.save_file(_big(46), s3.url("never.safetensors"),
                       storage_options={"part_size": 5 * MiB, "retries": 0})
    assert not s3.exists("never.safetensors")
    assert s3.uploads() == []


def test_a_failed_single_put_is_retried_then_reported(s3_proxy, no_leaks):
    s3, proxy = s3_proxy
    d = {"a": np.arange(1000, dtype=np.float64)}
    proxy.inject("status", 1, match=lambda r: r.method == "PUT", status=503)
    dlpx.save_file(d, s3.url("one.safetensors"), storage_options={"retries": 2})
    assert_same_tensors(dlpx.load_file(s3.url("one.safetensors"), framework="numpy"), d)
    proxy.clear()
    proxy.inject("status", float("inf"), match=lambda r: r.method == "PUT", status=500)
    with pytest.raises(OSError):
        dlpx.save_file(d, s3.url("two.safetensors"), storage_options={"retries": 1})
    assert sum(r.method == "PUT" for r in proxy.requests) == 2
    assert not s3.exists("two.safetensors")


def test_upload_stall_is_timeouterror(s3_proxy, no_leaks):
    s3, proxy = s3_proxy
    proxy.inject("hang", float("inf"), match=lambda r: r.method == "PUT", seconds=60)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        dlpx.save_file({"a": np.arange(10)}, s3.url("stalled.safetensors"),
                       storage_options={"retries": 1, "timeout": 1.0})
    assert time.monotonic() - t0 < 20
    assert not s3.exists("stalled.safetensors")
