"""Hostile tests of cross-process sharing (dlpx.share / dlpx.attach,
dlpx.torch.share_module): fake producers on the segment socket, forged
pickles and strings, things planted in /dev/shm, races with close, fork,
many cycles, and odd modules.  Every failure must be a clear exception
(ValueError / OSError / FileNotFoundError / TypeError), never a crash, a
hang or a leaked descriptor."""

import copy
import gc
import os
import pickle
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import dlpx
from dlpx import _share

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import share_hostile_helpers as H  # noqa: E402

NODE = _share.node_id()
ID0 = "0" * 32


def _fds():
    return len(os.listdir("/proc/self/fd"))


def _name(tag):
    return f"dlpxhostile-{os.getpid()}-{tag}"


def _path(name):
    return f"/dev/shm/dlpx.{name}"


def _rm(name):
    try:
        os.rmdir(_path(name)) if os.path.isdir(_path(name)) and not os.path.islink(
            _path(name)) else os.unlink(_path(name))
    except FileNotFoundError:
        pass


def _image(tensors):
    """A real segment's image and id (made and closed at once)."""
    with dlpx.share(tensors) as h:
        return os.pread(dlpx.lib.dlpx_segment_fd(h._seg), h.size, 0), h.id


def _run(script, *args, timeout=30):
    return subprocess.run([sys.executable, os.path.join(HERE, script), *args],
                          capture_output=True, text=True, timeout=timeout)


X = {"x": np.arange(32, dtype=np.float64)}


# ---- fake producers -----------------------------------------------------------------


def _b_close(conn, srv):
    pass


def _b_garbage(conn, srv):
    conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n" + os.urandom(64))


def _b_bad_status(conn, srv):
    conn.sendall(H.MAGIC + b"\x07\0\0\0")


def _b_found_no_fd(conn, srv):
    conn.sendall(H.reply(H.FOUND))


def _b_not_found(conn, srv):
    conn.sendall(H.reply(H.NOT_FOUND))


def _b_pipe(conn, srv):
    r, w = os.pipe()
    H.send(conn, H.reply(H.FOUND), [r, w])  # two descriptors (and of the wrong kind)


def _fd_sender(make):
    def behave(conn, srv):
        H.send(conn, H.reply(H.FOUND), [make()])
    return behave


def _writable_file():
    import tempfile
    fd, p = tempfile.mkstemp()
    os.write(fd, _image(X)[0])
    os.unlink(p)
    return fd


def _dir_fd():
    return os.open("/dev/shm", os.O_RDONLY | os.O_DIRECTORY)


def _socket_fd():
    import socket
    a, b = socket.socketpair()
    b.close()
    return a.detach()


def _fifo_fd():
    r, w = os.pipe()
    os.close(w)
    return r


FAKES = {
    # name: (behave, exception, message fragment)
    "closes": (_b_close, OSError, "without an answer"),
    "garbage": (_b_garbage, OSError, "not a dlpx segment server"),
    "bad_status": (_b_bad_status, OSError, "not a dlpx segment server"),
    "found_without_fd": (_b_found_no_fd, OSError, "descriptors"),
    "not_found": (_b_not_found, FileNotFoundError, "no longer shared"),
    "two_fds": (_b_pipe, OSError, "descriptors"),
    "five_fds": (lambda c, s: H.send(c, H.reply(H.FOUND), [os.open("/dev/null", os.O_RDONLY)
                                                          for _ in range(5)]),
                 OSError, "more than"),
    "pipe": (_fd_sender(_fifo_fd), ValueError, "not a regular file"),
    "socket": (_fd_sender(_socket_fd), ValueError, "not a regular file"),
    "dev_zero": (_fd_sender(lambda: os.open("/dev/zero", os.O_RDONLY)), ValueError,
                 "not a regular file"),
    "directory": (_fd_sender(_dir_fd), ValueError, "not a regular file"),
    "writable_file": (_fd_sender(_writable_file), ValueError, "writable"),
    "unsealed_memfd": (None, ValueError, "seal"),
    "chmod_memfd": (None, ValueError, "seal"),
    "other_segment": (None, ValueError, "asked for segment"),
    "truncated": (None, ValueError, None),
    "grown": (None, ValueError, None),
}


def _fake(case, img, sid):
    behave, exc, match = FAKES[case]
    if case == "unsealed_memfd":
        behave = _fd_sender(lambda: H.memfd(img, seals=0))
    elif case == "chmod_memfd":  # read-only by mode, yet the sender may still write it
        behave = _fd_sender(lambda: H.memfd(img, seals=0, mode=0o400))
    elif case == "other_segment":
        other = _image({"y": np.ones(3)})[0]
        behave = _fd_sender(lambda: H.memfd(other))
    elif case == "truncated":
        behave = _fd_sender(lambda: H.memfd(img[:-100]))
    elif case == "grown":
        behave = _fd_sender(lambda: H.memfd(img + b"\0" * 4096))
    return behave, exc, match


@pytest.mark.parametrize("case", sorted(FAKES))
def test_fake_producers_fail_clearly_without_leaks(case):
    img, sid = _image(X)
    behave, exc, match = _fake(case, img, sid)
    h = dlpx.Handle("memfd", sid, len(img), "@x", NODE)
    gc.collect()
    before = _fds()
    with H.FakeServer(behave) as srv:
        h.where = srv.address
        for _ in range(3):
            with pytest.raises(exc, match=match) as e:
                dlpx.attach(h, "numpy", timeout=2)
            assert not isinstance(e.value, FileNotFoundError) or exc is FileNotFoundError
    gc.collect()
    assert _fds() == before
    # the consumer sent exactly one well-formed request each time
    assert srv.requests and all(r == H.MAGIC + sid.encode() for r in srv.requests)


def test_fake_producer_that_is_correct_attaches_even_in_pieces():
    img, sid = _image(X)

    def behave(conn, srv):  # the reply in three pieces, the descriptor with the second
        rep = H.reply(H.FOUND)
        conn.sendall(rep[:3])
        time.sleep(0.02)
        H.send(conn, rep[3:7], [H.memfd(img)])
        time.sleep(0.02)
        conn.sendall(rep[7:])

    before = _fds()
    with H.FakeServer(behave) as srv:
        got = dlpx.attach(dlpx.Handle("memfd", sid, len(img), srv.address, NODE), "numpy")
        np.testing.assert_array_equal(got["x"], X["x"])
        del got
    gc.collect()
    assert _fds() == before


def test_a_producer_that_never_answers_times_out():
    with H.FakeServer(lambda c, s: s.stop.wait(10)) as srv:
        h = dlpx.Handle("memfd", ID0, 100, srv.address, NODE)
        t0 = time.monotonic()
        with pytest.raises(OSError, match="did not answer") as e:
            dlpx.attach(h, timeout=0.3)
        assert not isinstance(e.value, FileNotFoundError)
        assert time.monotonic() - t0 < 2
        srv.stop.set()


def test_a_producer_that_never_accepts_times_out():
    import socket
    addr = f"@dlpx.hostile.{os.getpid()}.noaccept"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind("\0" + addr[1:])
    s.listen(0)
    try:
        t0 = time.monotonic()
        for _ in range(3):  # fills the backlog: later connects block until the timeout
            with pytest.raises(OSError):
                dlpx.attach(dlpx.Handle("memfd", ID0, 100, addr, NODE), timeout=0.2)
        assert time.monotonic() - t0 < 3
    finally:
        s.close()


def test_a_producer_that_trickles_its_reply_is_cut_off_at_the_timeout():
    def behave(conn, srv):
        for b in H.reply(H.NOT_FOUND):
            conn.sendall(bytes([b]))
            if srv.stop.wait(0.2):
                return

    with H.FakeServer(behave) as srv:
        t0 = time.monotonic()
        with pytest.raises(OSError):
            dlpx.attach(dlpx.Handle("memfd", ID0, 100, srv.address, NODE), timeout=0.3)
        took = time.monotonic() - t0
        srv.stop.set()
    assert took < 1.0, f"attach(timeout=0.3) took {took:.1f} s"


def test_c_fetch_refuses_an_unsealed_memfd_made_read_only():
    r = _run("share_hostile_c_repro.py", "chmod")
    assert r.returncode == 0 and "refused" in r.stdout, (r.returncode, r.stdout, r.stderr[-500:])


def test_python_attach_refuses_a_chmod_memfd_and_survives_its_truncation():
    img, sid = _image(X)
    keep = []

    def behave(conn, srv):
        fd = H.memfd(img, seals=0, mode=0o400)
        keep.append(os.dup(fd))
        H.send(conn, H.reply(H.FOUND), [fd])

    try:
        with H.FakeServer(behave) as srv:
            with pytest.raises(ValueError, match="sealed"):
                dlpx.attach(dlpx.Handle("memfd", sid, len(img), srv.address, NODE), "numpy")
    finally:
        for fd in keep:
            os.close(fd)


# ---- forged handles: pickles and strings ---------------------------------------------


class _Forge:
    def __init__(self, *args):
        self.args = args

    def __reduce__(self):
        return (_share._rebuild, self.args)


FORGED = {
    "id_int": ("memfd", 5, 100, "@dlpx.1.x", NODE, {}),
    "where_int": ("memfd", ID0, 100, 7, NODE, {}),
    "where_bytes": ("memfd", ID0, 100, b"@dlpx.1.x", NODE, {}),
    "kind_tcp": ("tcp", ID0, 100, "@dlpx.1.x", NODE, {}),
    "kind_none": (None, ID0, 100, "@dlpx.1.x", NODE, {}),
    "size_negative": ("memfd", ID0, -5, "@dlpx.1.x", NODE, {}),
    "size_huge": ("memfd", ID0, 10 ** 30, "@dlpx.1.x", NODE, {}),
    "size_str": ("memfd", ID0, "100", "@dlpx.1.x", NODE, {}),
    "size_float": ("memfd", ID0, 100.0, "@dlpx.1.x", NODE, {}),
    "size_bool": ("memfd", ID0, True, "@dlpx.1.x", NODE, {}),
    "node_none": ("memfd", ID0, 100, "@dlpx.1.x", None, {}),
    "extra_list": ("memfd", ID0, 100, "@dlpx.1.x", NODE, [1, 2]),
    "traversal": ("named", ID0, 100, "../etc/passwd", NODE, {}),
    "slash": ("named", ID0, 100, "a/b", NODE, {}),
    "nul_name": ("named", ID0, 100, "a\0b", NODE, {}),
    "nul_address": ("memfd", ID0, 100, "@dlpx.1\0x", NODE, {}),
    "unicode_name": ("named", ID0, 100, "ünï", NODE, {}),
    "long_address": ("memfd", ID0, 100, "@" + "a" * 200, NODE, {}),
    "id_upper": ("memfd", ID0.upper().replace("0", "A"), 100, "@dlpx.1.x", NODE, {}),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_tampered_pickles_are_value_errors(case):
    data = pickle.dumps(_Forge(*FORGED[case]))
    with pytest.raises(ValueError):
        dlpx.attach(pickle.loads(data), timeout=0.3)


def test_tampered_pickle_of_a_real_handle():
    with dlpx.share(X) as h:
        kind, sid, size, where, node, extra = h.__reduce__()[1]
        ok = pickle.loads(pickle.dumps(_Forge(kind, sid, size, where, node, extra)))
        assert ok == h and not ok.owner
        np.testing.assert_array_equal(dlpx.attach(ok, "numpy")["x"], X["x"])
        with pytest.raises(ValueError, match="bytes"):
            dlpx.attach(pickle.loads(pickle.dumps(_Forge(kind, sid, size + 64, where, node,
                                                         extra))))
        with pytest.raises(ValueError, match="bytes"):
            dlpx.attach(pickle.loads(pickle.dumps(_Forge(kind, sid, 8, where, node, extra))))


@pytest.mark.parametrize("text", [
    "dlpx-shm:1:memfd:" + ID0 + ":١٢٨:" + NODE + ":@dlpx.1.x",  # Arabic-Indic digits
    "dlpx-shm:1:memfd:" + ID0 + ":²:" + NODE + ":@dlpx.1.x",  # isdigit() but not int()
    "dlpx-shm:1:memfd:" + ID0 + ":100:" + NODE + ":@dlpx.1.é",
    "dlpx-shm:1:memfd:" + ID0 + ":100:" + NODE + ":@dlpx.1.x\0",
    "dlpx-shm:1:memfd:" + ID0 + ":100:" + NODE + ":@dlpx.1.x\n",
    "dlpx-shm:1:named:" + ID0 + ":100:" + NODE + ":../etc/passwd",
    "dlpx-shm:1:named:" + ID0 + ":100:" + NODE + ":a/b",
    "dlpx-shm:1:named:" + ID0 + ":100:" + NODE + ":" + "a" * 201,
    "dlpx-shm:1:named:" + ID0 + ":100:" + NODE + ":",
    "dlpx-shm:1:memfd:" + ID0 + ":100:" + NODE + ":@" + "a" * 107,
    "dlpx-shm:1:memfd:" + ID0 + ":" + "9" * 21 + ":" + NODE + ":@dlpx.1.x",
    "dlpx-shm:1:memfd:" + "０" * 32 + ":100:" + NODE + ":@dlpx.1.x",  # fullwidth zeros
    "dlpx-shm:1:memfd:" + ID0 + ":100:" + NODE.upper() + ":@dlpx.1.x",
    "dlpx-shm:1:memfd:" + ID0 + ":100:" + NODE + "\0:@dlpx.1.x",
    "dlpx-shm:1:memfd:" + ID0 + ":100:" + NODE + ":@" + "x" * 10 ** 6,
    "dlpx-shm:1:" + "memfd:" * 10 ** 5,
    "\ud800",  # a lone surrogate
])
def test_hostile_strings_are_value_errors(text):
    t0 = time.monotonic()
    with pytest.raises(ValueError) as e:
        dlpx.attach(text, timeout=0.3)
    assert len(str(e.value)) < 1000  # the message quotes a bounded prefix
    assert time.monotonic() - t0 < 1


def test_a_handle_made_by_hand_with_a_bad_name_is_refused_by_c():
    for bad in ("../etc/passwd", "a/b", ".hidden", "", "x" * 201):
        with pytest.raises(ValueError):
            dlpx.attach(dlpx.Handle("named", ID0, 100, bad, NODE))


def test_handle_copy_deepcopy_and_dict_key():
    with dlpx.share(X) as h:
        c, d = copy.copy(h), copy.deepcopy(h)
        for q in (c, d):
            assert q == h and hash(q) == hash(h) and not q.owner  # like a pickle: no owner
            q.close()  # owns nothing
        assert h.owner
        table = {h: 1}
        assert table[c] == 1 and table[dlpx.Handle.parse(str(h))] == 1
        np.testing.assert_array_equal(dlpx.attach(d, "numpy")["x"], X["x"])
    assert c.closed and h.closed
    with pytest.raises(FileNotFoundError):
        dlpx.attach(c)


# ---- things planted in /dev/shm --------------------------------------------------------


def test_a_symlink_at_a_segment_path_is_refused():
    real, link = _name("real"), _name("link")
    try:
        h = dlpx.share(X, name=real)
        os.symlink(_path(real), _path(link))
        forged = dlpx.Handle("named", h.id, h.size, link, NODE)
        with pytest.raises(OSError, match="symbolic|loop|ELOOP"):
            dlpx.attach(forged)
        os.unlink(_path(link))
        os.symlink("/etc/passwd", _path(link))
        with pytest.raises(OSError):
            dlpx.attach(forged)
        h.close()
    finally:
        _rm(link)
        _rm(real)


@pytest.mark.parametrize("kind", ["fifo", "directory", "socket"])
def test_a_special_file_at_a_segment_path_does_not_block(kind):
    name = _name(kind)
    try:
        if kind == "fifo":
            os.mkfifo(_path(name), 0o600)
        elif kind == "directory":
            os.mkdir(_path(name))
        else:
            import socket
            s = socket.socket(socket.AF_UNIX)
            s.bind(_path(name))
            s.close()
        code = ("import dlpx, sys\nfrom dlpx import _share\n"
                f"h = dlpx.Handle('named', '{ID0}', 100, '{name}', _share.node_id())\n"
                "try:\n    dlpx.attach(h)\nexcept (ValueError, OSError) as e:\n"
                "    print(type(e).__name__, e)\n")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0, (r.stdout, r.stderr[-500:])
        if kind == "socket":  # open(2) itself refuses it (ENXIO)
            assert "OSError" in r.stdout and "No such device" in r.stdout, r.stdout
        else:
            assert "ValueError" in r.stdout and "regular" in r.stdout, r.stdout
    finally:
        _rm(name)


def test_c_segment_open_of_a_fifo_returns():
    name = _name("cfifo")
    os.mkfifo(_path(name), 0o600)
    try:
        try:
            r = _run("share_hostile_c_repro.py", "fifo", name, timeout=3)
        except subprocess.TimeoutExpired:
            pytest.fail("dlpx_segment_open of a FIFO blocked")
        assert "refused" in r.stdout
    finally:
        _rm(name)


def test_named_segment_replaced_under_its_name():
    name = _name("swap")
    try:
        h = dlpx.share(X, name=name)
        q = pickle.loads(pickle.dumps(h))
        old = dlpx.attach(q, "numpy")["x"]
        h.close()
        dlpx.unlink(name)
        with pytest.raises(FileNotFoundError):
            dlpx.attach(q)
        with open(_path(name), "wb") as f:  # a plain file of ours, writable
            f.write(_image(X)[0])
        with pytest.raises(ValueError, match="writ"):
            dlpx.attach(q)
        os.chmod(_path(name), 0o400)  # read-only, but another segment's image
        with pytest.raises(ValueError, match="stale"):
            dlpx.attach(q)
        np.testing.assert_array_equal(old, X["x"])
    finally:
        _rm(name)


# ---- many threads and a close -------------------------------------------------------------


def test_threads_attach_while_the_producer_closes(no_leaks):
    src = {"x": np.arange(1000, dtype=np.int64), "y": np.ones((4, 4), dtype=np.float32)}
    h = dlpx.share(src)
    copy_ = pickle.loads(pickle.dumps(h))
    start = threading.Barrier(17)
    errors, counts = [], {"ok": 0, "gone": 0}
    lock = threading.Lock()

    def worker(k):
        start.wait()
        mine = h if k % 2 else copy_  # the owner handle itself, or a copy
        for _ in range(200):
            try:
                got = dlpx.attach(mine, "numpy")
            except FileNotFoundError:
                with lock:
                    counts["gone"] += 1
                continue
            except BaseException as e:  # pragma: no cover
                errors.append(e)
                return
            if got["x"][-1] != 999 or got["y"].sum() != 16:  # pragma: no cover
                errors.append(AssertionError("wrong data"))
            with lock:
                counts["ok"] += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    start.wait()
    time.sleep(0.05)
    h.close()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert counts["ok"] + counts["gone"] == 3200 and counts["ok"] > 0


# ---- producers -------------------------------------------------------------------------


def test_every_framework_and_layout_shares():
    torch = pytest.importorskip("torch")
    ml_dtypes = pytest.importorskip("ml_dtypes")
    ro = np.arange(12.0).reshape(3, 4)
    ro.setflags(write=False)
    tt = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    src = {
        "np_strided": np.arange(60).reshape(6, 10)[::2, ::-3],
        "np_readonly": ro,
        "np_bf16": np.arange(8, dtype=np.float32).astype(ml_dtypes.bfloat16),
        "pt_t": tt.t(),
        "pt_slice": torch.arange(30).reshape(5, 6)[1:, ::2],
        "pt_bf16": torch.arange(8, dtype=torch.bfloat16),
        "pt_0d": torch.tensor(2.5),
        "np_0d": np.array(7, dtype=np.int16),
        "pt_bool": torch.tensor([True, False]),
    }
    with dlpx.share(src) as h:
        got = dlpx.attach(h, "torch")
        for k, v in src.items():
            want = v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(
                v.astype(np.float32) if v.dtype == ml_dtypes.bfloat16 else v).copy())
            g = got[k].float() if got[k].dtype == torch.bfloat16 else got[k]
            w = want.float() if want.dtype == torch.bfloat16 else want
            assert g.shape == w.shape and torch.equal(g, w.to(g.dtype)), k
        assert got["pt_bf16"].dtype == torch.bfloat16 and got["pt_0d"].shape == ()
        gn = dlpx.attach(h, "numpy")
        assert gn["np_bf16"].dtype == ml_dtypes.bfloat16
        assert not gn["np_readonly"].flags.writeable
        np.testing.assert_array_equal(gn["np_strided"], src["np_strided"])


def test_jax_arrays_share():
    jnp = pytest.importorskip("jax.numpy")
    src = {"a": jnp.arange(10, dtype=jnp.float32).reshape(2, 5), "b": jnp.array(3)}
    with dlpx.share(src) as h:
        got = dlpx.attach(h, "jax")
        assert np.asarray(got["a"]).tolist() == np.asarray(src["a"]).tolist()
        assert np.asarray(got["b"]).item() == 3
        del got


def test_a_thousand_tiny_tensors_attach_fast():
    src = {f"layer.{k}.w": np.full(3, k, dtype=np.float32) for k in range(1000)}
    with dlpx.share(src) as h:
        q = pickle.loads(pickle.dumps(h))
        t0 = time.perf_counter()
        for fw in ("numpy", "torch", "dlpx"):
            got = dlpx.attach(q, fw)
            assert len(got) == 1000
        took = time.perf_counter() - t0
        assert np.asarray(got["layer.999.w"]).tolist() == [999.0] * 3
    assert took < 3, f"3 attaches of 1000 tensors took {took:.2f} s"


def test_names_unicode_spaces_and_reserved():
    src = {"poids ünï": np.ones(2), "空 白": np.zeros(3), "": np.arange(2), "a/b.c": np.ones(1),
           "emoji 😀": np.arange(3)}
    with dlpx.share(src) as h:
        got = dlpx.attach(h, "numpy")
        assert set(got) == set(src)
    for bad in ("dlpx.pad.0", "dlpx.pad.7", "__metadata__"):
        with pytest.raises(ValueError):
            dlpx.share({bad: np.ones(2)})
    with pytest.raises(ValueError):
        dlpx.share({"bad \ud800": np.ones(2)})
    with pytest.raises(ValueError):
        dlpx.share({"nul\0": np.ones(2)})


def test_metadata_round_trip_and_pad_entries_hidden():
    meta = {"author": "ünï", "k": "", "long": "x" * 10000}
    src = {"a": np.ones(3, dtype=np.int8), "b": np.ones(5, dtype=np.float64)}  # needs padding
    with dlpx.share(src, metadata=meta, checksum=True) as h:
        seg = _share.open_segment(h)
        try:
            entries, got = _share.header_of(seg)
        finally:
            dlpx.ffi.release(seg)
        assert {k: got[k] for k in meta} == meta
        assert sorted(e[0] for e in entries) == ["a", "b"]
        assert all(e[3] % 64 == 0 for e in entries)
        assert set(dlpx.attach(h)) == {"a", "b"}  # no pad entry leaks out


def test_share_of_a_zero_d_tensor_and_empty_names_dict():
    with dlpx.share({"s": np.float32(1.5) * np.ones(())}) as h:
        assert dlpx.attach(h, "numpy")["s"].shape == ()
        assert float(dlpx.attach(h, "torch")["s"]) == 1.5


# ---- lifetime --------------------------------------------------------------------------


def test_numpy_arrays_outlive_every_dlpx_object(no_leaks):
    h = dlpx.share(X)
    arr = dlpx.attach(pickle.loads(pickle.dumps(h)), "numpy")["x"]
    h.close()
    del h
    gc.collect()
    assert arr.tolist() == X["x"].tolist()
    view = arr[::3]
    del arr
    gc.collect()
    assert view.tolist() == X["x"][::3].tolist()
    del view


def test_fork_producer_child_and_exit_without_close():
    r = _run("share_hostile_fork.py", timeout=60)
    assert r.returncode == 0 and "ok" in r.stdout, (r.stdout, r.stderr[-2000:])


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_two_thousand_cycles_keep_rss_and_descriptors_flat():
    src = {"x": np.ones(1 << 17, dtype=np.float64)}  # 1 MiB

    def cycle():
        with dlpx.share(src) as h:
            got = dlpx.attach(pickle.loads(pickle.dumps(h)), "numpy")
            assert got["x"][-1] == 1.0
            del got

    for _ in range(200):
        cycle()
    gc.collect()
    fds, rss = _fds(), _rss()
    for _ in range(2000):
        cycle()
    gc.collect()
    assert _fds() == fds
    assert _rss() - rss < 32 << 20, f"RSS grew {(_rss() - rss) >> 20} MiB"


# ---- dlpx.torch.share_module -----------------------------------------------------------

torch = pytest.importorskip("torch")
nn = torch.nn
import dlpx.torch  # noqa: E402


class Twins(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight  # one Parameter in two modules
        self.register_buffer("nothing", None)
        self.register_buffer("steps", torch.tensor(3))


class WithLock(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.lock = threading.Lock()


def test_module_with_shared_parameters_and_none_buffer():
    m = Twins()
    m.eval()
    with dlpx.torch.share_module(m) as mh:
        got = pickle.loads(pickle.dumps(mh)).load()
        assert got.a.weight is got.b.weight
        assert got.nothing is None and "nothing" in got._buffers
        assert int(got.steps) == 3 and not got.training
        assert all(not p.requires_grad for p in got.parameters())
        x = torch.randn(3, 4)
        with torch.no_grad():
            assert torch.equal(got.b(got.a(x)), m.b(m.a(x)))


def test_module_with_an_unpicklable_attribute_is_a_type_error():
    with pytest.raises(TypeError, match="lock"):
        dlpx.torch.share_module(WithLock())


def test_module_on_the_meta_device_is_a_clear_error():
    with torch.device("meta"):
        m = nn.Linear(3, 3)
    with pytest.raises(ValueError, match="meta"):
        dlpx.torch.share_module(m)


def test_two_parameters_over_one_storage_are_refused():
    """Two distinct Parameter objects over the same memory: share_module
    ties by object identity, so the segment sees an untied alias and
    refuses it (a limitation: Parameter(p.data) ties are not kept)."""
    m = Twins()
    m.b.weight = nn.Parameter(m.a.weight.data)
    with pytest.raises(ValueError, match="share memory"):
        dlpx.torch.share_module(m)


def test_scripted_module():
    """torch.jit.script modules do not pickle: a clear TypeError (it was
    TorchScript's RuntimeError "Tried to serialize object ...")."""
    m = torch.jit.script(nn.Linear(3, 3))
    with pytest.raises(TypeError, match="TorchScript"):
        dlpx.torch.share_module(m).close()


def test_compiled_module_shares_and_loads():
    c = torch.compile(nn.Linear(3, 3))
    with dlpx.torch.share_module(c) as mh:
        got = pickle.loads(pickle.dumps(mh)).load()
        assert torch.equal(got._orig_mod.weight, c._orig_mod.weight.detach())


def test_loads_are_independent_and_grad_state():
    m = nn.Linear(3, 3)
    m.weight.requires_grad_(True)
    with dlpx.torch.share_module(m) as mh:
        one, two = mh.load(), mh.load()
        assert not one.weight.requires_grad and not two.weight.requires_grad
        with torch.no_grad():
            one.weight.fill_(5.0)
        assert not torch.equal(two.weight, one.weight)
        assert torch.equal(two.weight, m.weight.detach())
        assert torch.equal(mh.load().weight, m.weight.detach())
        one.weight.requires_grad_(True)  # a worker may fine-tune its private copy
        one(torch.ones(1, 3)).sum().backward()
        assert one.weight.grad is not None
