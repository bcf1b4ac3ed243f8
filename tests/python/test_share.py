"""Tensors shared across processes (dlpx.share / dlpx.attach): zero copy,
sealed, isolated, through every multiprocessing start method; handles
forged, stale or damaged; producers and workers that die."""

import concurrent.futures
import json
import multiprocessing as mp
import os
import pickle
import stat
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import dlpx
from dlpx import _share

sys.path.insert(0, os.path.dirname(__file__))
import share_workers as W  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def sample():
    return {
        "w": np.arange(24, dtype=np.float32).reshape(4, 6),
        "b": np.linspace(-1, 1, 7),
        "i": np.arange(-5, 5, dtype=np.int64),
        "flag": np.array([True, False, True]),
        "h": np.arange(10, dtype=np.float16),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "scalar": np.array(3.5, dtype=np.float64),
        "strided": np.arange(40, dtype=np.int32).reshape(5, 8)[::2, 1::3],
        "c": (np.arange(4) + 1j).astype(np.complex64),
        "u8": np.arange(200, dtype=np.uint8),
    }


def _fds():
    return len(os.listdir("/proc/self/fd"))


def _name(tag):
    return f"dlpxtest-{os.getpid()}-{tag}"


# ---- in one process ---------------------------------------------------------------


def test_roundtrip_numpy_zero_copy_read_only():
    src = sample()
    with dlpx.share(src) as h:
        got = dlpx.attach(h, "numpy")
        assert list(got) == sorted(got, key=lambda k: list(got).index(k))  # a dict
        assert set(got) == set(src)
        for k, v in src.items():
            assert got[k].dtype == v.dtype and got[k].shape == v.shape
            np.testing.assert_array_equal(got[k], v)
            assert not got[k].flags.writeable
            if v.size:
                assert W._in_memfd(got[k].ctypes.data)


def test_attach_frameworks_agree():
    src = sample()
    with dlpx.share(src) as h:
        d = dlpx.attach(h)
        assert all(isinstance(t, dlpx.Tensor) for t in d.values())
        assert all(t.readonly for t in d.values())
        for k, v in src.items():
            np.testing.assert_array_equal(d[k].numpy(), v)  # NumPy 2.0 takes no read-only DLPack


def test_data_is_64_byte_aligned_and_an_image_safetensors_reads():
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    src = {k: v for k, v in sample().items() if k != "c"}  # safetensors.numpy lacks C64
    with dlpx.share(src, metadata={"who": "test"}) as h:
        seg = _share.open_segment(h)
        try:
            off = int(dlpx.lib.dlpx_segment_data_offset(seg))
            assert off % 64 == 0
            size = int(dlpx.lib.dlpx_segment_size(seg))
            image = os.pread(dlpx.lib.dlpx_segment_fd(seg), size, 0)
        finally:
            dlpx.ffi.release(seg)
    ref = safetensors_numpy.load(image)
    for k, v in src.items():
        np.testing.assert_array_equal(ref[k], v)
    n = struct.unpack("<Q", image[:8])[0]
    meta = json.loads(image[8:8 + n])["__metadata__"]
    assert meta["who"] == "test" and len(meta["dlpx.segment"]) == 32


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(
    st.text(min_size=1, max_size=12).filter(lambda s: "\0" not in s and s != "__metadata__"),
    hnp.arrays(st.sampled_from([np.float32, np.float64, np.int8, np.uint16, np.int64,
                                np.bool_, np.float16]),
               hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)),
    max_size=6))
def test_property_share_attach_is_identity(tensors):
    with dlpx.share(tensors) as h:
        got = dlpx.attach(h, "numpy")
        assert set(got) == set(tensors)
        for k, v in tensors.items():
            assert got[k].dtype == v.dtype and got[k].shape == v.shape
            np.testing.assert_array_equal(got[k], v)


def test_metadata_reads_back():
    with dlpx.share({"x": np.zeros(2)}, metadata={"format": "pt", "ü": "ß"}) as h:
        assert h.metadata() == {"format": "pt", "ü": "ß"}
        assert pickle.loads(pickle.dumps(h)).metadata() == {"format": "pt", "ü": "ß"}
    with dlpx.share({"x": np.zeros(2)}) as h:
        assert h.metadata() is None


def test_tied_tensors_attach_as_one():
    w = np.arange(12.0).reshape(3, 4)
    # c overlaps a without being the same view: refused
    with pytest.raises(ValueError, match="share memory"):
        dlpx.share({"a": w, "c": w[1:]})
    with dlpx.share({"a": w, "b": w}) as h:
        with dlpx.share({"a": w, "b": w.copy()}) as two:
            assert h.size <= two.size - w.nbytes + 64  # stored once
        got = dlpx.attach(h, "numpy")
        assert got["a"] is got["b"]
        d = dlpx.attach(h)
        assert d["a"] is d["b"]
    with pytest.raises(ValueError, match="share memory"):
        dlpx.share({"a": w, "b": w}, tied="error")


def test_tied_tensors_attach_as_one_torch_tensor():
    pytest.importorskip("torch")
    w = np.arange(12.0).reshape(3, 4)
    with dlpx.share({"a": w, "b": w}) as h:
        gt = dlpx.attach(h, "torch")
        assert gt["a"] is gt["b"]


def test_torch_gets_writable_views_whose_writes_stay_private():
    torch = pytest.importorskip("torch")
    with dlpx.share({"x": np.ones(1000, dtype=np.float32)}) as h:
        a = dlpx.attach(h, "torch")["x"]
        b = dlpx.attach(h, "torch")["x"]
        assert W._in_memfd(a.data_ptr())
        with torch.no_grad():
            a.mul_(3)
        assert float(a.sum()) == 3000.0
        assert float(b.sum()) == 1000.0  # another attach: its own copy-on-write mapping
        assert float(dlpx.attach(h, "numpy")["x"].sum()) == 1000.0


def test_jax_attach():
    jnp = pytest.importorskip("jax.numpy")
    with dlpx.share({"x": np.arange(16.0)}) as h:
        x = dlpx.attach(h, "jax")["x"]
        assert float(jnp.sum(x)) == 120.0


def test_segment_is_sealed_against_every_change():
    import fcntl
    with dlpx.share({"x": np.arange(10.0)}) as h:
        fd = dlpx.lib.dlpx_segment_fd(h._seg)
        seals = fcntl.fcntl(fd, 1034)  # F_GET_SEALS
        # F_SEAL_SEAL 1, SHRINK 2, GROW 4, WRITE 8
        assert seals & 0xF == 0xF
        with pytest.raises(OSError):
            os.pwrite(fd, b"x", 100)
        with pytest.raises(OSError):
            os.ftruncate(fd, 8)
        with pytest.raises(OSError):
            os.ftruncate(fd, 1 << 20)
        import mmap
        with pytest.raises(PermissionError):
            mmap.mmap(fd, h.size, mmap.MAP_SHARED, mmap.PROT_WRITE)


def test_bad_arguments():
    with pytest.raises(TypeError):
        dlpx.share([np.zeros(3)])
    with pytest.raises(TypeError):
        dlpx.share({1: np.zeros(3)})
    with pytest.raises(TypeError, match="not a tensor"):
        dlpx.share({"a": object()})
    with pytest.raises(ValueError, match="reserved"):
        dlpx.share({"a": np.zeros(1)}, metadata={"dlpx.segment": "x"})
    with pytest.raises(TypeError):
        dlpx.share({"a": np.zeros(1)}, metadata={"k": 1})
    with pytest.raises(ValueError):
        dlpx.share({"a": np.zeros(1)}, tied="maybe")
    with pytest.raises(TypeError):
        dlpx.attach(42)
    with pytest.raises(ValueError, match="framework"):
        with dlpx.share({"a": np.zeros(1)}) as h:
            dlpx.attach(h, "tensorflow")
    with pytest.raises(ValueError):
        with dlpx.share({"a": np.zeros(1)}) as h:
            dlpx.attach(h, timeout=0)


def test_empty_dict_shares():
    with dlpx.share({}) as h:
        assert dlpx.attach(h) == {}
        assert pickle.loads(pickle.dumps(h)).attach() == {}


def test_close_is_idempotent_and_attached_tensors_survive(no_leaks):
    h = dlpx.share({"x": np.arange(5.0)})
    t = dlpx.attach(h)["x"]
    q = pickle.loads(pickle.dumps(h))
    assert h.owner and not q.owner
    h.close()
    h.close()
    q.close()  # a copy owns nothing
    assert h.closed
    assert t.numpy().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    with pytest.raises(FileNotFoundError, match="no longer shared|gone"):
        dlpx.attach(q)
    del t


def test_no_descriptor_leak_share_attach_close():
    for _ in range(20):
        with dlpx.share({"x": np.arange(3.0)}) as h:
            dlpx.attach(pickle.loads(pickle.dumps(h)))
    fds = _fds()
    for _ in range(200):
        with dlpx.share({"x": np.arange(3.0)}) as h:
            dlpx.attach(pickle.loads(pickle.dumps(h)))
            dlpx.attach(h)
    assert _fds() == fds


# ---- handles: the string form, forged and stale ones ---------------------------------


def test_string_form_roundtrip():
    with dlpx.share({"x": np.arange(4.0)}) as h:
        s = str(h)
        assert s.startswith("dlpx-shm:1:memfd:")
        q = dlpx.Handle.parse(s)
        assert q == h and q.size == h.size and not q.owner
        assert dlpx.attach(s, "numpy")["x"].tolist() == [0.0, 1.0, 2.0, 3.0]
        assert repr(h).startswith("dlpx.Handle(memfd")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_property_garbage_strings_are_value_errors(text):
    try:
        dlpx.Handle.parse(text)
    except ValueError:
        return
    # the rare string that parses must still attach safely (nothing listens)
    with pytest.raises((FileNotFoundError, ValueError, OSError)):
        dlpx.attach(text, timeout=0.5)


@pytest.mark.parametrize("mutate", ["id", "size", "address", "node", "version", "kind"])
def test_forged_handles_fail_clearly(mutate):
    with dlpx.share({"x": np.arange(4.0)}) as h:
        parts = str(h).split(":", 6)
        if mutate == "id":
            parts[3] = "0" * 32
            exc, match = FileNotFoundError, "no longer shared"
        elif mutate == "size":
            parts[4] = str(h.size + 64)
            exc, match = ValueError, "bytes"
        elif mutate == "address":
            parts[6] = "@dlpx.1.nobody"
            exc, match = FileNotFoundError, "gone"
        elif mutate == "node":
            parts[5] = "0123abcd-0000-0000-0000-000000000000"
            exc, match = OSError, "another machine"
        elif mutate == "version":
            parts[1] = "9"
            exc, match = ValueError, "version"
        else:
            parts[2] = "tcp"
            exc, match = ValueError, "kind"
        with pytest.raises(exc, match=match):
            dlpx.attach(":".join(parts))


def test_handle_of_a_producer_that_is_gone():
    code = ("import numpy as np, dlpx, sys; h = dlpx.share({'x': np.arange(3.0)}); "
            "print(h, flush=True)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    with pytest.raises(FileNotFoundError, match="gone"):
        dlpx.attach(out)


# ---- hostile segments ---------------------------------------------------------------


def _image(tensors):
    return dlpx.save(tensors, checksum=False)


def _attach_fd(fd):
    out = dlpx.ffi.new("dlpx_segment **")
    rc = dlpx.lib.dlpx_segment_attach_fd(fd, 0, out)
    if rc == 0:
        dlpx.lib.dlpx_segment_close(out[0])
    return rc, dlpx._errors.message()


def _memfd(data, seals):
    import fcntl
    fd = os.memfd_create("dlpxtest", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    if seals:
        fcntl.fcntl(fd, 1033, seals)  # F_ADD_SEALS
    return fd


SEALED = 0x2 | 0x4 | 0x8


def test_unsealed_memfd_is_refused():
    fd = _memfd(_image({"x": np.arange(4.0)}), 0)
    try:
        rc, msg = _attach_fd(fd)
        assert rc == dlpx.ErrorCode.EFORMAT and "seal" in msg
    finally:
        os.close(fd)
    fd = _memfd(_image({"x": np.arange(4.0)}), 0x8)  # write-sealed, may still shrink
    try:
        rc, msg = _attach_fd(fd)
        assert rc == dlpx.ErrorCode.EFORMAT and "seal" in msg
    finally:
        os.close(fd)


def test_sealed_memfd_with_an_image_of_another_writer_attaches():
    fd = _memfd(_image({"x": np.arange(4.0)}), SEALED)
    try:
        assert _attach_fd(fd)[0] == 0
    finally:
        os.close(fd)


@pytest.mark.parametrize("damage", ["truncated", "header", "length", "short", "empty",
                                    "offsets", "trailing"])
def test_damaged_images_are_format_errors(damage):
    img = bytearray(_image({"x": np.arange(64.0), "y": np.arange(8, dtype=np.int32)}))
    n = struct.unpack("<Q", img[:8])[0]
    if damage == "truncated":
        img = img[:-9]
    elif damage == "header":
        img[8 + n // 2] = ord("}")
    elif damage == "length":
        img[:8] = struct.pack("<Q", len(img) * 4)
    elif damage == "short":
        img = img[:5]
    elif damage == "empty":
        img = bytearray()
    elif damage == "offsets":
        doc = json.loads(img[8:8 + n])
        doc["x"]["data_offsets"][1] += 8
        hdr = json.dumps(doc).encode().ljust(n)[:n]
        img[8:8 + n] = hdr if len(json.dumps(doc)) <= n else img[8:8 + n]
        img = img[:-8]
    else:
        img += b"\0" * 8
    fd = _memfd(bytes(img), SEALED)
    try:
        rc, msg = _attach_fd(fd)
        assert rc in (dlpx.ErrorCode.EFORMAT, dlpx.ErrorCode.EINVAL), msg
        assert msg
    finally:
        os.close(fd)


def test_a_regular_writable_file_is_refused(tmp_path):
    p = tmp_path / "img"
    p.write_bytes(_image({"x": np.arange(4.0)}))
    os.chmod(p, 0o600)
    fd = os.open(p, os.O_RDONLY)
    try:
        rc, msg = _attach_fd(fd)
        assert rc == dlpx.ErrorCode.EFORMAT and "writ" in msg
    finally:
        os.close(fd)
    os.chmod(p, 0o400)
    fd = os.open(p, os.O_RDONLY)
    try:
        assert _attach_fd(fd)[0] == 0
    finally:
        os.close(fd)


def test_attach_fd_of_nonsense_descriptors():
    r, w = os.pipe()
    try:
        assert _attach_fd(r)[0] != 0
    finally:
        os.close(r), os.close(w)
    assert _attach_fd(-1)[0] == dlpx.ErrorCode.EINVAL
    assert _attach_fd(10 ** 6)[0] != 0


def _segment_image(tensors):
    with dlpx.share(tensors) as h:
        return os.pread(dlpx.lib.dlpx_segment_fd(h._seg), h.size, 0)


def test_build_and_seal_an_image_that_arrives_as_bytes(no_leaks):
    img = _segment_image({"x": np.arange(6.0), "y": np.ones(3, dtype=np.int8)})
    seg, view = _share.build_segment(len(img))
    view[:] = img
    h = _share.seal_segment(seg, view)
    try:
        got = dlpx.attach(pickle.loads(pickle.dumps(h)), "numpy")
        assert got["x"].tolist() == list(range(6)) and got["y"].tolist() == [1, 1, 1]
        del got
    finally:
        h.close()
    seg, view = _share.build_segment(len(img))
    view[:] = b"\x01" * len(img)  # garbage
    with pytest.raises(ValueError):
        _share.seal_segment(seg, view)
    dlpx.ffi.release(seg)
    seg, view = _share.build_segment(len(img))  # an image without a segment id
    foreign = _image({"x": np.arange(6.0)})
    view[:len(foreign)] = foreign
    view[len(foreign):] = b" " * (len(img) - len(foreign))
    with pytest.raises(ValueError):
        _share.seal_segment(seg, view)
    dlpx.ffi.release(seg)
    # memory lent out before the seal stays readable, and writes to it
    # no longer reach the segment
    seg, view = _share.build_segment(len(img))
    held = np.frombuffer(view, dtype=np.uint8)
    held[:] = np.frombuffer(img, dtype=np.uint8)
    h = _share.seal_segment(seg, view)
    assert held.tobytes() == img
    held[-8:] = 0xFF
    got = dlpx.attach(str(h), "numpy")
    assert got["x"].tolist() == list(range(6)) and got["y"].tolist() == [1, 1, 1]
    del held, got
    h.close()


# ---- named segments -------------------------------------------------------------------


def test_named_segment_outlives_its_producer_until_unlinked():
    name = _name("life")
    h = dlpx.share({"x": np.arange(4.0)}, name=name)
    path = os.path.join("/dev/shm", "dlpx." + name)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o400
        s = str(h)
        assert s.startswith("dlpx-shm:1:named:")
        h.close()
        assert dlpx.attach(s, "numpy")["x"].tolist() == [0.0, 1.0, 2.0, 3.0]
        assert any(e["name"] == name for e in _share.list_named())
        with pytest.raises(OSError, match="exists"):
            dlpx.share({"x": np.arange(4.0)}, name=name)
    finally:
        dlpx.unlink(name)
    assert not os.path.exists(path)
    with pytest.raises(FileNotFoundError):
        dlpx.attach(s)
    with pytest.raises(FileNotFoundError):
        dlpx.unlink(name)


def test_named_segment_recreated_under_the_same_name_is_a_stale_handle():
    name = _name("stale")
    with dlpx.share({"x": np.arange(4.0)}, name=name) as old:
        pass
    dlpx.unlink(name)
    with dlpx.share({"x": np.arange(4.0)}, name=name):
        try:
            with pytest.raises(ValueError, match="stale"):
                dlpx.attach(old)
        finally:
            dlpx.unlink(name)


def test_named_segment_made_writable_is_refused():
    name = _name("chmod")
    dlpx.share({"x": np.arange(4.0)}, name=name).close()
    path = os.path.join("/dev/shm", "dlpx." + name)
    try:
        os.chmod(path, 0o600)
        with pytest.raises(ValueError, match="writ"):
            dlpx.attach(f"dlpx-shm:1:named:{'0' * 32}:64:{_share.node_id()}:{name}")
    finally:
        dlpx.unlink(name)


@pytest.mark.parametrize("bad", ["", ".hidden", "a/b", "x" * 201, "sp ace", "nul\0"])
def test_bad_names(bad):
    with pytest.raises(ValueError):
        dlpx.share({"x": np.zeros(1)}, name=bad)
    with pytest.raises(ValueError):
        dlpx.unlink(bad)


def test_cli_lists_and_removes_named_segments():
    names = [_name(f"cli{i}") for i in range(2)]
    for n in names:
        dlpx.share({"x": np.zeros(3)}, name=n).close()
    run = [sys.executable, "-m", "dlpx", "shm"]
    out = subprocess.run(run + ["ls", "--json"], capture_output=True, text=True, check=True)
    listed = {e["name"] for e in json.loads(out.stdout)["segments"]}
    assert set(names) <= listed
    out = subprocess.run(run + ["ls"], capture_output=True, text=True, check=True)
    assert names[0] in out.stdout
    r = subprocess.run(run + ["rm", names[0], "nonexistent-" + names[0]], capture_output=True,
                       text=True)
    assert r.returncode == 3 and "removed " + names[0] in r.stdout
    assert "nonexistent" in r.stderr
    r = subprocess.run(run + ["rm", names[1], "--json"], capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(r.stdout)["removed"] == [names[1]]
    assert not any(e["name"] in names for e in _share.list_named())
    r = subprocess.run(run + ["rm"], capture_output=True, text=True)
    assert r.returncode == 2


# ---- across processes ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_start_methods(method):
    src = sample()
    ctx = mp.get_context(method)
    with dlpx.share(src) as h, ctx.Pool(2) as pool:
        results = pool.map(W.sums, [h] * 4)
    for r in results:
        for k, v in src.items():
            total, ro, mapped = r[k]
            assert total == W.total(v)
            assert ro and mapped


def test_process_pool_executor_and_values_equal():
    src = sample()
    with dlpx.share(src) as h, concurrent.futures.ProcessPoolExecutor(
            2, mp_context=mp.get_context("spawn")) as ex:
        got = list(ex.map(W.values, [h, h]))
    for g in got:
        for k, v in src.items():
            np.testing.assert_array_equal(g[k], v)


def test_string_handle_in_an_unrelated_process():
    with dlpx.share({"x": np.arange(10.0)}) as h:
        code = "import dlpx, sys; print(float(dlpx.attach(sys.argv[1], 'numpy')['x'].sum()))"
        out = subprocess.run([sys.executable, "-c", code, str(h)], capture_output=True,
                             text=True, check=True, timeout=60)
        assert out.stdout.strip() == "45.0"


def test_isolation_a_writer_changes_only_its_own_pages():
    pytest.importorskip("torch")
    ctx = mp.get_context("spawn")
    x = np.ones(1 << 16, dtype=np.float32)
    with dlpx.share({"x": x}) as h, ctx.Pool(2) as pool:
        before, after = pool.apply(W.write_then_read, (h, "x"))
        assert (before, after) == (65536.0, 131072.0)
        # the other workers, and workers started later, see the original
        assert pool.apply(W.sums, (h,))["x"][0] == 65536.0
        with ctx.Pool(1) as later:
            assert later.apply(W.sums, (h, "torch"))["x"][0] == 65536.0
    assert float(x.sum()) == 65536.0


def test_producer_exit_leaves_attached_data_valid():
    ctx = mp.get_context("spawn")
    code = ("import numpy as np, dlpx, sys, time\n"
            "h = dlpx.share({'x': np.arange(1 << 20, dtype=np.float64)})\n"
            "print(h, flush=True)\n"
            "sys.stdin.readline()\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        s = p.stdout.readline().strip()
        x = dlpx.attach(s, "numpy")["x"]
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait(timeout=60)
        assert p.returncode == 0
        assert float(x.sum()) == float(np.arange(1 << 20, dtype=np.float64).sum())
        with pytest.raises(FileNotFoundError, match="gone"):
            dlpx.attach(s)
    finally:
        p.kill()
    del ctx


def test_a_worker_killed_mid_use_does_not_disturb_the_others():
    ctx = mp.get_context("spawn")
    with dlpx.share({"x": np.arange(1 << 18, dtype=np.float32)}) as h:
        ready = [ctx.Event() for _ in range(3)]
        stop = ctx.Event()
        readers = [ctx.Process(target=W.read_forever, args=(h, "x", ready[i], stop))
                   for i in range(2)]
        victim = ctx.Process(target=W.hold_and_die, args=(h, "x", ready[2]))
        for p in readers + [victim]:
            p.start()
        for e in ready:
            assert e.wait(60)
        victim.join(30)
        assert victim.exitcode == -9
        time.sleep(0.2)
        assert dlpx.attach(h, "numpy")["x"][5] == 5.0  # the producer still serves
        stop.set()
        for p in readers:
            p.join(30)
            assert p.exitcode == 0


@pytest.mark.slow
def test_eight_workers_attach_ten_thousand_times_without_leaks():
    ctx = mp.get_context("spawn")
    tensors = {f"t{i}": np.full(64, i, dtype=np.float32) for i in range(20)}
    with dlpx.share(tensors) as h, ctx.Pool(8) as pool:
        fds = _fds()
        results = pool.starmap(W.attach_loop, [(h, 10_000)] * 8)
        assert _fds() == fds  # the producer's server keeps nothing per request
    for fd0, fd1, rss0, rss1 in results:
        assert fd0 == fd1
        assert rss1 - rss0 < 2048, (rss0, rss1)  # KiB: no growth with the rounds


def test_attach_is_fast_and_independent_of_byte_size():
    """Not a benchmark (bench/bench_share.py is): a bound far above the
    measured time, to catch an attach that reads the data."""
    small = {f"t{i}": np.zeros(4, dtype=np.float32) for i in range(200)}
    big = {f"t{i}": np.zeros((1 << 20) // 4 * 2, dtype=np.float32) for i in range(200)}  # 400 MiB
    times = {}
    for label, d in (("small", small), ("big", big)):
        with dlpx.share(d) as h:
            q = pickle.loads(pickle.dumps(h))
            dlpx.attach(q)
            best = float("inf")
            for _ in range(20):
                t0 = time.perf_counter()
                dlpx.attach(q)
                best = min(best, time.perf_counter() - t0)
            times[label] = best
        del d
    assert times["big"] < 10 * times["small"] + 0.002, times
