"""Tensor files with NumPy and the reference safetensors.numpy only, so that
they run on every CPython of the matrix (NumPy 2.0 on 3.9 included, where
DLPack imports have their quirks); test_files_roundtrip.py has the PyTorch
and JAX side."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
ref_np = pytest.importorskip("safetensors.numpy")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import dlpx  # noqa: E402

SETTINGS = dict(deadline=None, max_examples=40,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
DTYPES = ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
          "float16", "float32", "float64", "complex64"]


@st.composite
def tensor_dicts(draw):
    names = draw(st.lists(st.text(st.characters(blacklist_categories=("Cs",),
                                                blacklist_characters="\0"), max_size=8),
                          max_size=6, unique=True).filter(lambda ns: "__metadata__" not in ns))
    out = {}
    for name in names:
        dt = np.dtype(draw(st.sampled_from(DTYPES)))
        shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
        raw = draw(st.binary(min_size=int(np.prod(shape)) * dt.itemsize,
                             max_size=int(np.prod(shape)) * dt.itemsize))
        a = np.frombuffer(raw, np.uint8).view(dt) if raw else np.zeros(0, dt)
        if dt == np.bool_:
            a = a.view(np.uint8) % 2 == 1
        out[name] = a.reshape(shape).copy()  # own memory: b"\0" is one shared object
    return out


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@settings(**SETTINGS)
@given(tensor_dicts(), st.one_of(st.none(), st.dictionaries(st.text(max_size=4).filter(
    lambda k: not k.startswith("dlpx.") and "\0" not in k), st.text(max_size=4).filter(
    lambda v: "\0" not in v), max_size=1)))
def test_round_trips_with_the_reference_both_ways(tmp_path, tensors, metadata):
    d = tempfile.mkdtemp(dir=tmp_path)  # one per example: tmp_path is shared by them
    mine, ref = Path(d) / "dlpx.safetensors", Path(d) / "ref.safetensors"
    dlpx.save_file(tensors, mine, metadata, checksum=False)
    if tensors or metadata is None:  # safetensors writes {} + {} as invalid JSON
        ref_np.save_file(tensors, ref, metadata)
        assert mine.read_bytes() == ref.read_bytes()
    for path in (mine,) + ((ref,) if ref.exists() else ()):
        got = ref_np.load_file(str(path))
        assert set(got) == set(tensors) and all(same(got[k], tensors[k]) for k in tensors)
        for mode in ("mmap", "pread", "direct"):
            got = dlpx.load_file(path, mode=mode, framework="np")
            assert set(got) == set(tensors) and all(same(got[k], tensors[k]) for k in tensors)
        with dlpx.safe_open(path, framework="numpy") as f:
            assert f.metadata() == (metadata if metadata is not None else None)
            assert all(same(f.get_tensor(k), tensors[k]) for k in tensors)
    got = dlpx.load(mine.read_bytes(), framework="np")
    assert all(same(got[k], tensors[k]) for k in tensors)


def test_checksums_catch_a_flipped_bit_on_every_path(tmp_path):
    a = {"w": np.arange(100000, dtype=np.float32), "b": np.ones(7, np.int64)}
    path = tmp_path / "m.safetensors"
    dlpx.save_file(a, path)
    data = bytearray(path.read_bytes())
    n = int.from_bytes(data[:8], "little")
    begin = json.loads(data[8:8 + n])["w"]["data_offsets"][0]
    data[8 + n + begin + 1234] ^= 0x10
    path.write_bytes(bytes(data))
    for mode in ("pread", "direct"):
        with pytest.raises(ValueError, match="w"):
            dlpx.load_file(path, mode=mode)
    with pytest.raises(ValueError, match="checksum"):
        dlpx.load_file(path, mode="mmap", verify=True)
    with pytest.raises(ValueError):
        dlpx.load_into(path, {"w": np.zeros(100000, np.float32), "b": np.zeros(7, np.int64)})
    got = dlpx.load_file(path, mode="pread", verify=False, framework="np")  # on request
    assert got["w"][0] == 0 and same(got["b"], a["b"])


def test_views_read_only_and_writable_as_promised(tmp_path):
    path = tmp_path / "m.safetensors"
    dlpx.save_file({"x": np.arange(1 << 16, dtype=np.float64)}, path)
    ro = dlpx.load_file(path, framework="np")["x"]
    assert not ro.flags.writeable
    with pytest.raises(ValueError):
        ro[0] = 1
    rw = dlpx.load_file(path, mode="pread", framework="np")["x"]
    rw[0] = 42.0
    assert rw.ctypes.data % 64 == 0 and ro[0] == 0.0


@settings(**SETTINGS)
@given(st.data())
def test_slices_equal_numpy_indexing(tmp_path, data):
    shape = tuple(data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=3)))
    a = np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)
    path = tmp_path / "s.safetensors"
    dlpx.save_file({"a": a}, path, fsync=False)
    key = []
    for n in shape:
        kind = data.draw(st.sampled_from(["int", "slice", "full"]))
        if kind == "int":
            key.append(data.draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            key.append(slice(data.draw(st.one_of(st.none(), st.integers(-n - 1, n + 1))),
                             data.draw(st.one_of(st.none(), st.integers(-n - 1, n + 1))),
                             data.draw(st.sampled_from([None, 1, 2, -1, -3]))))
        else:
            key.append(slice(None))
    with dlpx.safe_open(path, framework="np", mode=data.draw(st.sampled_from(
            ["mmap", "pread"]))) as f:
        assert same(f.get_slice("a")[tuple(key)], a[tuple(key)])
        assert f.get_slice("a").get_shape() == list(shape)
        assert f.get_slice("a").get_dtype() == "I32"


def test_load_into_and_shards(tmp_path):
    rng = np.random.default_rng(3)
    tensors = {f"layer{i}.w": rng.random((64, 32)).astype(np.float32) for i in range(8)}
    names = sorted(tensors)
    weight_map = {}
    for s in range(4):
        part = {k: tensors[k] for k in names[s::4]}
        fname = f"model-{s + 1:05d}-of-00004.safetensors"
        dlpx.save_file(part, tmp_path / fname)
        weight_map.update({k: fname for k in part})
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    got = dlpx.load_file(index, mode="pread", framework="np")
    assert set(got) == set(tensors) and all(same(got[k], tensors[k]) for k in tensors)
    targets = {k: np.zeros_like(v) for k, v in tensors.items()}
    targets["extra"] = np.zeros(3)
    with pytest.raises(ValueError, match="extra"):
        dlpx.load_into(index, targets)
    assert not targets["layer0.w"].any()  # nothing read
    missing, unexpected = dlpx.load_into(index, targets, strict=False)
    assert missing == ["extra"] and unexpected == []
    assert all(same(targets[k], tensors[k]) for k in tensors)
    strided = np.zeros((32, 64), np.float32).T  # a transposed view
    dlpx.load_into(tmp_path / weight_map["layer0.w"], {"layer0.w": strided}, strict=False)
    assert same(np.ascontiguousarray(strided), tensors["layer0.w"])
    os.remove(tmp_path / weight_map["layer3.w"])
    with pytest.raises(FileNotFoundError):
        dlpx.load_file(index)
