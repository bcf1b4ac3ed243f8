"""Tensor files (dlpx.save_file/save, load_file/load, load_into, safe_open)
against the reference ``safetensors`` package, as a demanding user checks
them:

1. Round trips with the reference both ways (safetensors.numpy and
   safetensors.torch), every dtype both sides have, as hypothesis
   properties over random dicts (unicode names, empty dicts, 0-d and
   zero-size tensors), compared bit for bit; the bytes dlpx writes with
   checksum=False are the reference's bytes.
2. Every mode (mmap, pread, direct, safe_open, load_into, load(bytes)) and
   every framework name; zero copy where promised, copy-on-write for
   PyTorch, owned aligned memory for pread.
3. Non-contiguous, broadcast, negative-stride, requires_grad and JAX inputs.
4. get_slice against NumPy indexing of the whole tensor.
5. A real torch.nn.Module, tied weights.
6. load_into rules, sharded checkpoints, checksums, metadata, errors.
"""

import ctypes
import hashlib
import json
import math
import mmap
import os
import struct

import pytest

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")
ml_dtypes = pytest.importorskip("ml_dtypes")
safetensors = pytest.importorskip("safetensors")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import safetensors.numpy as ref_np  # noqa: E402
import safetensors.torch as ref_pt  # noqa: E402
from safetensors import safe_open as ref_open  # noqa: E402

try:
    import jax
except ImportError:  # pragma: no cover
    jax = None

import dlpx  # noqa: E402

pytestmark = [pytest.mark.usefixtures("gc_baseline", "no_leaks", "x64")]

SETTINGS = dict(deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large,
    HealthCheck.filter_too_much])

MODES = ("mmap", "pread", "direct")
FRAMEWORKS = ("dlpx", "numpy", "np", "torch", "pt", "jax")


@pytest.fixture
def x64():
    """JAX has 64-bit types only with x64 enabled (else int64 -> int32)."""
    if jax is None:
        yield
        return
    enable = getattr(jax, "enable_x64", None)
    if enable is None:  # JAX < 0.7
        from jax.experimental import enable_x64 as enable
    with enable(True):
        yield


def need_jax():
    if jax is None:
        pytest.skip("JAX is not installed")


# ---- dtypes: what the reference reads and writes, probed --------------------------------

def np_dtype(name):
    return np.dtype(getattr(ml_dtypes, name, None) or name)


def _ref_np_round_trips(name):
    try:
        a = np.zeros(2, np_dtype(name))
        return ref_np.load(ref_np.save({"x": a}))["x"].dtype == a.dtype
    except Exception:
        return False


def _pt_probe(name):
    return torch.zeros(2, dtype=torch.uint8).view(getattr(torch, name))


def _ref_pt_reads(name):
    """Through its file reader (safe_open, load_file); its load(bytes) has
    fewer dtypes (0.8: no F8_E8M0, F4)."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "probe.safetensors")
        try:
            ref_pt.save_file({"x": _pt_probe(name)}, p)
            return ref_pt.load_file(p)["x"].dtype == getattr(torch, name)
        except Exception:
            return False


NP_CANDIDATES = ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64",
                 "int64", "float16", "float32", "float64", "complex64", "bfloat16",
                 "float8_e4m3fn", "float8_e5m2"]
#: dtypes safetensors.numpy saves and loads (bf16/float8 it has not: torch below)
NP_REF = [n for n in NP_CANDIDATES if _ref_np_round_trips(n)]

PT_CANDIDATES = ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64",
                 "int64", "float16", "bfloat16", "float32", "float64", "complex64",
                 "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
                 "float8_e8m0fnu", "float4_e2m1fn_x2"]
PT_HAVE = [n for n in PT_CANDIDATES if hasattr(torch, n)]
#: dtypes safetensors.torch saves and loads, but float4_e2m1fn_x2 (two values a
#: byte, which has no one-lane DLPack form: test_float4_* has it)
PT_REF = [n for n in PT_HAVE if _ref_pt_reads(n) and n != "float4_e2m1fn_x2"]
#: NumPy (ml_dtypes) dtypes whose files the reference reads through torch
ML_VIA_PT = [n for n in ("bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
                         "float8_e5m2fnuz", "float8_e8m0fnu") if n in PT_REF]


def test_the_reference_supports_the_usual_dtypes():
    """Not a dlpx check: which dtypes the installed reference supports, so
    a reduced matrix below is visible rather than silent."""
    for n in ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
              "float16", "float32", "float64", "complex64"):
        assert n in NP_REF, f"safetensors.numpy cannot round-trip {n}"
    for n in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        assert n in PT_REF, f"safetensors.torch cannot round-trip {n}"


# ---- values and comparisons ----------------------------------------------------------------

def _rng_bytes(seed, n):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def make_np(name, shape, seed=0):
    """A writable C-contiguous array of random bits (NaNs with payloads,
    infinities, subnormals included); bools are 0 or 1."""
    dt = np_dtype(name)
    n = math.prod(shape)
    if name == "bool":
        raw = np.random.default_rng(seed).integers(0, 2, n, dtype=np.uint8)
    else:
        raw = _rng_bytes(seed, n * dt.itemsize)
    return raw.view(dt).reshape(shape).copy()


def make_pt(name, shape, seed=0):
    dt = getattr(torch, name)
    n = math.prod(shape)
    item = torch.empty(0, dtype=dt).element_size()
    if name == "bool":
        raw = np.random.default_rng(seed).integers(0, 2, n, dtype=np.uint8)
    else:
        raw = _rng_bytes(seed, n * item)
    if n == 0:
        return torch.empty(shape, dtype=dt)
    return torch.from_numpy(raw.copy()).view(dt).reshape(shape)


def contig(a):
    """A C-contiguous copy of |a| with its shape (np.ascontiguousarray
    makes 0-d arrays 1-d)."""
    return np.array(np.asarray(a), order="C", copy=True)


def np_to_pt(a):
    """A torch tensor holding the bits of the NumPy array |a| (any dtype,
    ml_dtypes ones included, which torch.from_numpy refuses)."""
    a = contig(a)
    if a.size == 0:
        return torch.empty(a.shape, dtype=getattr(torch, a.dtype.name))
    flat = torch.from_numpy(a.reshape(-1).view(np.uint8).copy())
    return flat.view(getattr(torch, a.dtype.name)).reshape(a.shape)


def kind(x):
    """(dtype name, shape) of a dlpx, NumPy, PyTorch or JAX tensor."""
    if isinstance(x, dlpx.Tensor):
        return x.dtype.name, tuple(x.shape)
    if isinstance(x, torch.Tensor):
        return str(x.dtype).replace("torch.", ""), tuple(x.shape)
    return np.dtype(x.dtype).name, tuple(x.shape)


def raw(x):
    """The bytes of a tensor's elements in C order (bit exact: NaN-safe)."""
    if isinstance(x, dlpx.Tensor):
        c = x.copy()
        return ctypes.string_at(c.data_ptr, c.nbytes) if c.nbytes else b""
    if isinstance(x, torch.Tensor):
        x = x.detach().contiguous()
        if x.element_size() == 1:
            x = x.view(torch.uint8)
        return x.reshape(-1).view(torch.uint8).numpy().tobytes()
    return contig(np.asarray(x)).tobytes()


def assert_same(got, want, what=""):
    assert kind(got) == kind(want), what
    assert raw(got) == raw(want), what


def assert_same_dicts(got, want):
    assert sorted(got) == sorted(want)
    for k in want:
        assert_same(got[k], want[k], k)


def is_type(x, framework):
    want = {"dlpx": dlpx.Tensor, "numpy": np.ndarray, "torch": torch.Tensor}
    fw = dlpx._files.FRAMEWORKS[framework]
    if fw == "jax":
        return isinstance(x, jax.Array)
    return isinstance(x, want[fw])


def data_ptr(x):
    if isinstance(x, dlpx.Tensor):
        return x.data_ptr
    if isinstance(x, torch.Tensor):
        return x.data_ptr()
    return x.ctypes.data


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def header_of(data):
    n = struct.unpack("<Q", data[:8])[0]
    return n, json.loads(data[8:8 + n], object_pairs_hook=list)


def data_offsets(path):
    """name -> (begin, end) from the file's header, parsed here."""
    _, h = header_of(read_bytes(path))
    return {k: tuple(dict(v)["data_offsets"]) for k, v in h if k != "__metadata__"}


def assert_offset_order(got, want, path):
    """|got| (dlpx's offset_keys) lists the tensors in data order as |want|
    (the reference's) does.  Zero-size tensors share an offset; the
    reference orders such ties as its hash map iterates, so within a tie
    only the set is compared."""
    offs = data_offsets(path)
    assert sorted(got) == sorted(want) == sorted(offs)
    assert [offs[k] for k in got] == sorted(offs[k] for k in got)
    assert [offs[k] for k in got] == [offs[k] for k in want]


def ref_metadata(path):
    with ref_open(str(path), framework="np") as f:
        return f.metadata()


def assert_same_file(mine, ref, metadata):
    """dlpx's bytes are the reference's.  The reference keeps __metadata__
    in a hash map (its order changes from run to run), so with two keys and
    more only that object's order may differ: same header length, same
    tensor entries in the same order, same data bytes."""
    if metadata is None or len(metadata) <= 1:
        assert mine == ref
        return
    n1, h1 = header_of(mine)
    n2, h2 = header_of(ref)
    assert n1 == n2
    m1 = [v for k, v in h1 if k == "__metadata__"]
    m2 = [v for k, v in h2 if k == "__metadata__"]
    assert [dict(m) for m in m1] == [dict(m) for m in m2]
    assert h1[0][0] == h2[0][0] == "__metadata__"
    assert [p for p in h1 if p[0] != "__metadata__"] == [p for p in h2 if p[0] != "__metadata__"]
    assert mine[8 + n1:] == ref[8 + n2:]


# ---- strategies --------------------------------------------------------------------------------

_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=10)
#: tensor names: random unicode (non-ASCII, astral, JSON escapes, controls)
NAMES = (st.sampled_from(["", "a", "a.b.weight", "é", "名前", "\U0001f642", '"q"', "b\\s",
                          "c\x01\x1f", "d\x7f", "\u2028", "/", "__metadata", " "])
         | _TEXT).filter(lambda s: s != "__metadata__")
SHAPES = st.lists(st.integers(0, 4), max_size=4).map(tuple)
SEEDS = st.integers(0, 2**32 - 1)
#: metadata: None or a non-empty dict.  An empty dict is its own case (see
#: test_empty_metadata_dict_*): the reference writes '"__metadata__": {}' for
#: it (invalid JSON when there are no tensors) and reads it back as {}.
METADATA = st.none() | st.dictionaries(
    (st.sampled_from(["format", "é", "", "dlpx", "dlp.x"]) | _TEXT).filter(
        lambda k: not k.startswith("dlpx.")), _TEXT, min_size=1, max_size=3)


@st.composite
def tensor_dicts(draw, dtypes, make, max_size=8):
    names = draw(st.lists(NAMES, unique=True, max_size=max_size))
    return {n: make(draw(st.sampled_from(dtypes)), draw(SHAPES), draw(SEEDS)) for n in names}


# ---- 1. round trips with the reference -----------------------------------------------------

@settings(max_examples=100, **SETTINGS)
@given(d=tensor_dicts(NP_REF, make_np), metadata=METADATA, mode=st.sampled_from(MODES),
       framework=st.sampled_from(["numpy", "np", "dlpx", "torch"]))
def test_reference_numpy_files_load_in_dlpx(tmp_path, d, metadata, mode, framework):
    p = tmp_path / "ref.safetensors"
    ref_np.save_file(d, str(p), metadata=metadata)
    got = dlpx.load_file(p, mode=mode, framework=framework)
    assert all(is_type(v, framework) for v in got.values())
    assert list(got) == sorted(d)
    assert_same_dicts(got, d)
    with dlpx.safe_open(p, "np", mode=mode) as f, ref_open(str(p), framework="np") as r:
        assert f.metadata() == r.metadata()
        assert f.keys() == sorted(r.keys())
        assert_offset_order(f.offset_keys(), r.offset_keys(), p)
        for k in d:
            assert_same(f.get_tensor(k), r.get_tensor(k), k)
    assert_same_dicts(dlpx.load(read_bytes(p), framework="np"), d)


@settings(max_examples=100, **SETTINGS)
@given(d=tensor_dicts(NP_REF, make_np), metadata=METADATA, checksum=st.booleans())
def test_dlpx_files_load_in_reference_numpy(tmp_path, d, metadata, checksum):
    p = tmp_path / "mine.safetensors"
    dlpx.save_file(d, p, metadata, checksum=checksum)
    assert_same_dicts(ref_np.load_file(str(p)), d)
    assert_same_dicts(ref_np.load(read_bytes(p)), d)
    seen = ref_metadata(p)
    if checksum:
        assert set(seen) == set(metadata or {}) | {"dlpx.checksums"}
        assert {k: v for k, v in seen.items() if k != "dlpx.checksums"} == (metadata or {})
    else:
        assert seen == metadata
    with dlpx.safe_open(p) as f:
        assert f.metadata() == metadata


@settings(max_examples=100, **SETTINGS)
@given(d=tensor_dicts(NP_REF, make_np), metadata=METADATA)
def test_dlpx_writes_the_reference_bytes_numpy(tmp_path, d, metadata):
    ref = ref_np.save(d, metadata=metadata)
    assert_same_file(dlpx.save(d, metadata, checksum=False), ref, metadata)
    p = tmp_path / "same.safetensors"
    dlpx.save_file(d, p, metadata, checksum=False, fsync=False)
    assert_same_file(read_bytes(p), ref, metadata)
    # ... and from dlpx tensors and torch tensors of the same values
    assert_same_file(dlpx.save({k: dlpx.from_dlpack(v) for k, v in d.items()}, metadata,
                               checksum=False), ref, metadata)
    assert_same_file(dlpx.save({k: np_to_pt(v) for k, v in d.items()}, metadata,
                               checksum=False), ref, metadata)


@settings(max_examples=100, **SETTINGS)
@given(d=tensor_dicts(PT_REF, make_pt), metadata=METADATA, mode=st.sampled_from(MODES),
       framework=st.sampled_from(["torch", "pt", "dlpx"]))
def test_reference_torch_files_load_in_dlpx(tmp_path, d, metadata, mode, framework):
    p = tmp_path / "ref.safetensors"
    ref_pt.save_file(d, str(p), metadata=metadata)
    got = dlpx.load_file(p, mode=mode, framework=framework)
    assert all(is_type(v, framework) for v in got.values())
    assert_same_dicts(got, d)
    with dlpx.safe_open(p, "pt", mode=mode) as f, ref_open(str(p), framework="pt") as r:
        assert f.metadata() == r.metadata()
        assert_offset_order(f.offset_keys(), r.offset_keys(), p)
        for k in d:
            assert_same(f.get_tensor(k), r.get_tensor(k), k)
            assert f.get_slice(k).get_shape() == r.get_slice(k).get_shape()
            assert f.get_slice(k).get_dtype() == r.get_slice(k).get_dtype()


@settings(max_examples=100, **SETTINGS)
@given(d=tensor_dicts(PT_REF, make_pt), metadata=METADATA, checksum=st.booleans(),
       tied=st.sampled_from(["error", "once"]))
def test_dlpx_files_load_in_reference_torch(tmp_path, d, metadata, checksum, tied):
    p = tmp_path / "mine.safetensors"
    dlpx.save_file(d, p, metadata, checksum=checksum, tied=tied)
    assert_same_dicts(ref_pt.load_file(str(p)), d)
    with ref_open(str(p), framework="pt") as r:
        assert sorted(r.keys()) == sorted(d)
        for k in d:
            assert_same(r.get_tensor(k), d[k], k)


@settings(max_examples=100, **SETTINGS)
@given(d=tensor_dicts(PT_REF, make_pt), metadata=METADATA)
def test_dlpx_writes_the_reference_bytes_torch(d, metadata):
    ref = ref_pt.save(d, metadata=metadata)
    assert_same_file(dlpx.save(d, metadata, checksum=False), ref, metadata)


@settings(max_examples=40, **SETTINGS)
@given(d=tensor_dicts(ML_VIA_PT, make_np), metadata=METADATA)
def test_ml_dtypes_arrays_against_reference_torch(tmp_path, d, metadata):
    """bfloat16 and float8 NumPy arrays (ml_dtypes) saved by dlpx are what
    safetensors.torch writes for the same bits; dlpx gives them back to
    NumPy as ml_dtypes arrays."""
    as_pt = {k: np_to_pt(v) for k, v in d.items()}
    assert_same_file(dlpx.save(d, metadata, checksum=False), ref_pt.save(as_pt, metadata),
                     metadata)
    p = tmp_path / "ml.safetensors"
    dlpx.save_file(d, p, metadata)
    for mode in MODES:
        assert_same_dicts(dlpx.load_file(p, mode=mode, framework="numpy"), d)
    assert_same_dicts(ref_pt.load_file(str(p)), as_pt)


def test_float4_against_the_reference(tmp_path):
    """F4: the reference's torch stores float4_e2m1fn_x2 (two values a byte)
    as F4 with the last extent doubled; dlpx has the one-lane
    float4_e2m1fn.  The same bytes both ways, bit for bit."""
    if "float4_e2m1fn_x2" not in PT_HAVE or not _ref_pt_reads("float4_e2m1fn_x2"):
        pytest.skip(f"torch {torch.__version__} / safetensors {safetensors.__version__} "
                    "have no F4 round trip")
    t = make_pt("float4_e2m1fn_x2", (3, 4), seed=7)
    src = dlpx.frombuffer(bytearray(raw(t)), "float4_e2m1fn").reshape(3, 8)
    p = tmp_path / "ref.safetensors"
    ref_pt.save_file({"w": t}, str(p))
    for mode in MODES:
        got = dlpx.load_file(p, mode=mode)["w"]
        assert (got.dtype.name, got.shape) == ("float4_e2m1fn", (3, 8))
        assert raw(got) == raw(t)
    with dlpx.safe_open(p) as f:
        assert f.get_slice("w").get_dtype() == "F4"
        assert f.get_slice("w").get_shape() == [3, 8]
        assert raw(f.get_slice("w")[1:, 2:6]) == raw(t[1:, 1:3])
        with pytest.raises(ValueError):  # half a byte
            f.get_slice("w")[:, 1:]
    assert dlpx.save({"w": src}, checksum=False) == read_bytes(p)
    q = tmp_path / "mine.safetensors"
    dlpx.save_file({"w": src, "x": np.arange(3.0)}, q)
    back = ref_pt.load_file(str(q))["w"]
    assert back.dtype == t.dtype and back.shape == t.shape and raw(back) == raw(t)


def test_float4_torch_tensors_through_dlpack(tmp_path):
    """torch.float4_e2m1fn_x2 goes through DLPack as two lanes, which dlpx
    does not take: saving one is refused with a clear error, not garbage."""
    if "float4_e2m1fn_x2" not in PT_HAVE:
        pytest.skip("this torch has no float4_e2m1fn_x2")
    t = make_pt("float4_e2m1fn_x2", (2, 2), seed=1)
    with pytest.raises((BufferError, TypeError, ValueError)):
        dlpx.save_file({"w": t}, tmp_path / "f4.safetensors")
    assert os.listdir(tmp_path) == []


def test_complex64_both_ways_and_complex128_refused(tmp_path):
    a = make_np("complex64", (3, 2), 1)
    p = tmp_path / "c.safetensors"
    dlpx.save_file({"c": a}, p)
    assert_same(ref_np.load_file(str(p))["c"], a)
    ref_np.save_file({"c": a}, str(p))
    assert_same(dlpx.load_file(p, framework="np")["c"], a)
    before = sha(p)
    with pytest.raises(TypeError):  # the format has no C128
        dlpx.save_file({"c": a.astype(np.complex128)}, p)
    assert sha(p) == before and os.listdir(tmp_path) == ["c.safetensors"]


def test_empty_dict_and_many_tensors(tmp_path):
    p = tmp_path / "e.safetensors"
    dlpx.save_file({}, p, checksum=False)
    assert read_bytes(p) == ref_np.save({}) == dlpx.save({}, checksum=False)
    for mode in MODES:
        assert dlpx.load_file(p, mode=mode) == {}
    assert ref_np.load_file(str(p)) == {}
    with dlpx.safe_open(p) as f:
        assert f.keys() == [] and f.metadata() is None
    d = {f"layer.{i}.{'é' * (i % 3)}": make_np(NP_REF[i % len(NP_REF)], (i % 4, 3)[: i % 3],
                                             i) for i in range(600)}
    dlpx.save_file(d, p, fsync=False)
    assert read_bytes(p) != ref_np.save(d)  # checksums in the header
    assert dlpx.save(d, checksum=False) == ref_np.save(d)
    for mode in MODES:
        assert_same_dicts(dlpx.load_file(p, mode=mode, framework="np", threads=3), d)
    assert_same_dicts(ref_np.load_file(str(p)), d)


@pytest.mark.parametrize("chunk_size", [4096, 12288, None])
@pytest.mark.parametrize("threads", [1, 3])
def test_pieces_and_threads(tmp_path, chunk_size, threads):
    """Tensors read in many pieces by several threads, also tensors whose
    size is not a multiple of the piece."""
    d = {"big": make_np("float32", (257, 131), 1), "odd": make_np("uint8", (40961,), 2),
         "tiny": make_np("int16", (3,), 3), "empty": make_np("float64", (0, 9), 4)}
    p = tmp_path / "p.safetensors"
    dlpx.save_file(d, p)
    for mode in ("pread", "direct"):
        for verify in (None, False, True):
            got = dlpx.load_file(p, mode=mode, framework="np", threads=threads,
                                 chunk_size=chunk_size, verify=verify)
            assert_same_dicts(got, d)
    tgt = {k: np.zeros_like(v) for k, v in d.items()}
    dlpx.load_into(p, tgt, threads=threads, chunk_size=chunk_size)
    assert_same_dicts(tgt, d)


# ---- 2. every mode and framework -------------------------------------------------------------

RICH = {"w": ("float32", (5, 7)), "é.bias": ("float16", (7,)), "scalar": ("int64", ()),
        "empty": ("uint8", (0, 3)), "flags": ("bool", (2, 2, 2)), "名": ("int8", (33,)),
        "u64": ("uint64", (4,)), "cx": ("complex64", (2, 3)), "bf": ("bfloat16", (3, 3)),
        "f8": ("float8_e4m3fn", (6,)), "f8b": ("float8_e5m2", (2, 1, 3)),
        "i16": ("int16", (1, 1)), "u16": ("uint16", (5,)), "u32": ("uint32", (2,)),
        "i32": ("int32", (3, 0, 2)), "f64": ("float64", (4, 1)),
        "f8uz": ("float8_e4m3fnuz", (3,)), "f8buz": ("float8_e5m2fnuz", (2, 2)),
        "e8m0": ("float8_e8m0fnu", (5,))}


def rich_arrays():
    return {k: make_np(dt, shape, i) for i, (k, (dt, shape)) in enumerate(RICH.items())}


@pytest.fixture(scope="module")
def rich_files(tmp_path_factory):
    d = rich_arrays()
    base = tmp_path_factory.mktemp("rich")
    mine = base / "dlpx.safetensors"
    dlpx.save_file(d, mine, {"format": "pt", "é": "ü"})
    ref = base / "ref.safetensors"
    as_pt = {k: np_to_pt(v) for k, v in d.items()}
    ref_pt.save_file(as_pt, str(ref), {"format": "pt", "é": "ü"})
    assert read_bytes(ref)[8:] != read_bytes(mine)[8:]
    return d, {"dlpx": mine, "ref": ref}


def skip_without_jax(framework):
    if dlpx._files.FRAMEWORKS[framework] == "jax":
        need_jax()


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("source", ["dlpx", "ref"])
def test_load_file_every_mode_and_framework(rich_files, source, mode, framework):
    skip_without_jax(framework)
    d, files = rich_files
    got = dlpx.load_file(files[source], mode=mode, framework=framework)
    assert list(got) == sorted(d)
    assert all(is_type(v, framework) for v in got.values())
    assert_same_dicts(got, d)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("source", ["dlpx", "ref"])
def test_safe_open_every_mode_and_framework(rich_files, source, mode, framework):
    skip_without_jax(framework)
    d, files = rich_files
    with dlpx.safe_open(files[source], framework=framework, mode=mode) as f:
        assert f.keys() == sorted(d) == list(f)
        assert len(f) == len(d) and "w" in f and "nope" not in f and 3 not in f
        assert f.metadata() == {"format": "pt", "é": "ü"}
        for k in d:
            t = f.get_tensor(k)
            assert is_type(t, framework)
            assert_same(t, d[k], k)
            s = f.get_slice(k)
            assert s.get_shape() == list(d[k].shape)
            assert_same(s[...], d[k], k)
        with pytest.raises(KeyError):
            f.get_tensor("nope")
        with pytest.raises(KeyError):
            f.get_slice("nope")


@pytest.mark.parametrize("source", ["dlpx", "ref"])
def test_offset_keys_and_slice_dtypes_match_the_reference(rich_files, source):
    _, files = rich_files
    with dlpx.safe_open(files[source]) as f, ref_open(str(files[source]), "pt") as r:
        assert_offset_order(f.offset_keys(), r.offset_keys(), files[source])
        for k in r.keys():
            assert f.get_slice(k).get_shape() == r.get_slice(k).get_shape()
            assert f.get_slice(k).get_dtype() == r.get_slice(k).get_dtype()


@pytest.mark.parametrize("direct", [False, True])
@pytest.mark.parametrize("target", ["numpy", "torch", "dlpx"])
@pytest.mark.parametrize("source", ["dlpx", "ref"])
def test_load_into_every_target_kind(rich_files, source, target, direct):
    d, files = rich_files
    if target == "numpy":
        tgt = {k: np.zeros_like(v) for k, v in d.items()}
    elif target == "torch":
        tgt = {k: torch.zeros(v.shape, dtype=getattr(torch, v.dtype.name)) for k, v in d.items()}
    else:
        tgt = {k: dlpx.zeros(v.shape, v.dtype.name) for k, v in d.items()}
    ptrs = {k: data_ptr(v) for k, v in tgt.items()}
    assert dlpx.load_into(files[source], tgt, direct=direct) == ([], [])
    assert {k: data_ptr(v) for k, v in tgt.items()} == ptrs  # in place
    assert_same_dicts(tgt, d)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("source", ["dlpx", "ref"])
def test_load_bytes_every_framework(rich_files, source, framework):
    skip_without_jax(framework)
    d, files = rich_files
    data = read_bytes(files[source])
    for buf in (data, bytearray(data), memoryview(data)):
        got = dlpx.load(buf, framework=framework)
        assert list(got) == sorted(d)
        assert all(is_type(v, framework) for v in got.values())
        assert_same_dicts(got, d)
    assert dlpx.save(d, {"format": "pt", "é": "ü"}) == read_bytes(files["dlpx"])


def test_load_bytes_is_a_view_of_the_buffer(rich_files):
    d, files = rich_files
    buf = bytearray(read_bytes(files["dlpx"]))
    got = dlpx.load(buf, framework="np")
    w = got["w"]
    assert np.shares_memory(w, np.frombuffer(buf, np.uint8))
    buf[-1] ^= 0xFF  # the last byte belongs to the last tensor in the file
    with dlpx.safe_open(files["dlpx"]) as f:
        last = f.offset_keys()[-1]
    assert raw(got[last]) != raw(d[last])


def test_mmap_numpy_is_a_read_only_view_of_the_file(rich_files):
    d, files = rich_files
    for fw in ("numpy", "np"):
        got = dlpx.load_file(files["dlpx"], framework=fw)
        w = got["w"]
        assert not w.flags.writeable and not w.flags.owndata
        with pytest.raises(ValueError):
            w[0, 0] = 1
        with pytest.raises(ValueError):
            w.flags.writeable = True
        with pytest.raises((ValueError, BufferError)):
            dlpx.from_dlpack(w).copy_(np.zeros_like(d["w"]))
    # one mapping of the file: each tensor lies at its file offset from a
    # page boundary, and at its distance in the file from the others
    with dlpx.safe_open(files["dlpx"]) as f:
        entries = f._file_live().by_name
        data_at = dlpx.lib.dlpx_file_data_offset(f._file_live()._h)
    nonempty = [k for k in got if got[k].size]
    a = nonempty[0]
    for b in nonempty:
        assert data_ptr(got[b]) - data_ptr(got[a]) == entries[b].begin - entries[a].begin
        assert (data_ptr(got[b]) - data_at - entries[b].begin) % mmap.PAGESIZE == 0
    t = dlpx.load_file(files["dlpx"])["w"]
    assert t.readonly
    with pytest.raises(ValueError):
        t[0, 0] = 1


@pytest.mark.parametrize("how", ["load_file", "safe_open"])
def test_mmap_torch_is_copy_on_write(tmp_path, how):
    d = {"w": make_np("float32", (64, 64), 1), "b": make_np("int32", (5,), 2)}
    p = tmp_path / "cow.safetensors"
    dlpx.save_file(d, p)
    before = sha(p)
    if how == "load_file":
        got = dlpx.load_file(p, framework="torch")
    else:
        with dlpx.safe_open(p, framework="pt") as f:
            got = {k: f.get_tensor(k) for k in f.keys()}
    w = got["w"]
    w.fill_(7.0)
    got["b"].add_(1)
    assert bool((w == 7.0).all())
    assert sha(p) == before
    again = dlpx.load_file(p, framework="torch")
    assert_same_dicts(again, d)
    assert_same_dicts(dlpx.load_file(p, mode="pread", framework="np"), d)
    assert_same_dicts(ref_np.load_file(str(p)), d)


@pytest.mark.parametrize("framework", ["dlpx", "numpy", "torch", "jax"])
@pytest.mark.parametrize("mode", ["pread", "direct"])
def test_pread_tensors_are_owned_writable_and_aligned(rich_files, mode, framework):
    skip_without_jax(framework)
    d, files = rich_files
    got = dlpx.load_file(files["ref"], mode=mode, framework=framework)
    with dlpx.safe_open(files["ref"], framework=framework, mode=mode) as f:
        opened = {k: f.get_tensor(k) for k in f.keys()}
    for src in (got, opened):
        assert_same_dicts(src, d)
        for k, v in src.items():
            if framework == "jax":
                continue  # immutable arrays; JAX decides where they live
            if math.prod(v.shape):
                assert data_ptr(v) % 64 == 0, k
            if framework == "numpy":
                assert v.flags.writeable
                v[...] = np.zeros((), v.dtype)
            elif framework == "torch":
                v.zero_()
            else:
                assert not v.readonly
                v.copy_(np.zeros(v.shape, v.dtype.numpy))
            assert not any(raw(v)), k
    assert_same_dicts(dlpx.load_file(files["ref"], framework="np"), d)


def test_mmap_views_outlive_the_file_and_overwrites(tmp_path):
    p = tmp_path / "m.safetensors"
    old = {"w": make_np("float64", (100, 10), 1)}
    dlpx.save_file(old, p)
    views = dlpx.load_file(p, framework="np")
    pt_views = dlpx.load_file(p, framework="torch")
    with dlpx.safe_open(p, framework="np") as f:
        kept = f.get_tensor("w")
    new = {"w": make_np("float64", (100, 10), 2)}
    dlpx.save_file(new, p)  # rename over: the old mapping keeps the old inode
    assert_same(views["w"], old["w"])
    assert_same(pt_views["w"], old["w"])
    assert_same(kept, old["w"])
    assert_same(dlpx.load_file(p, framework="np")["w"], new["w"])
    os.unlink(p)
    assert_same(views["w"], old["w"])
    assert os.listdir(tmp_path) == []


def test_resave_over_the_file_being_read(tmp_path, rich_files):
    """Views mapped from a file are saved back to the same path: the new
    file is written aside and renamed, so the views never see it torn."""
    d, files = rich_files
    p = tmp_path / "again.safetensors"
    p.write_bytes(read_bytes(files["ref"]))
    for fw in ("dlpx", "np", "pt"):
        views = dlpx.load_file(p, framework=fw)
        dlpx.save_file(views, p, {"format": "pt", "é": "ü"}, checksum=False)
        assert_same_dicts(dlpx.load_file(p, framework="np"), d)
    assert_same_dicts(views, {k: np_to_pt(v) for k, v in d.items()})
    # what dlpx loaded, saved again, is the reference's file
    with dlpx.safe_open(files["ref"]) as f:
        meta = f.metadata()
    got = dlpx.load_file(files["ref"])
    assert_same_file(dlpx.save(got, meta, checksum=False), read_bytes(files["ref"]), meta)
    assert os.listdir(tmp_path) == ["again.safetensors"]


def test_paths_and_threads(tmp_path, rich_files):
    from concurrent.futures import ThreadPoolExecutor
    d, files = rich_files
    p = tmp_path / "é 名 \u00e9.safetensors"
    dlpx.save_file(d, p)
    for path in (p, str(p), os.fsencode(p)):
        assert_same_dicts(dlpx.load_file(path, framework="np"), d)
        with dlpx.safe_open(path) as f:
            assert f.keys() == sorted(d)
    assert isinstance(dlpx.direct_available(p), bool)

    def job(i):
        mode = MODES[i % 3]
        got = dlpx.load_file(p, mode=mode, framework="np", threads=2)
        with dlpx.safe_open(files["ref"], "np", mode=mode) as f:
            one = {k: f.get_tensor(k) for k in f.keys()}
        tgt = {k: np.zeros_like(v) for k, v in d.items()}
        dlpx.load_into(p, tgt, threads=2)
        return got, one, tgt
    with ThreadPoolExecutor(4) as pool:
        for res in pool.map(job, range(12)):
            for got in res:
                assert_same_dicts(got, d)


def test_files_from_other_writers(tmp_path):
    """The format allows any entry order in the header, __metadata__
    anywhere, and tensors at offsets that are not multiples of their
    element size (writers other than the reference make such files)."""
    hdr = ('{"b": {"dtype": "F64", "shape": [2], "data_offsets": [3, 19]}, '
           '"__metadata__": {"k": "v"}, '
           '"c": {"dtype": "BF16", "shape": [1, 1], "data_offsets": [19, 21]}, '
           '"a": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]}}').encode()
    b = np.array([1.5, -2.25])
    blob = (struct.pack("<Q", len(hdr) + 5) + hdr + b"     " + bytes([1, 2, 3]) + b.tobytes()
            + b"\x80\x3f")
    p = tmp_path / "other.safetensors"
    p.write_bytes(blob)
    want = {"a": np.array([1, 2, 3], np.uint8), "b": b,
            "c": np.array([[1.0]], ml_dtypes.bfloat16)}
    assert_same_dicts(ref_pt.load_file(str(p)), {k: np_to_pt(v) for k, v in want.items()})
    for mode in MODES:
        for fw in FRAMEWORKS:
            if fw == "jax" and jax is None:
                continue
            got = dlpx.load_file(p, mode=mode, framework=fw)
            assert_same_dicts(got, want)
        with dlpx.safe_open(p, "pt", mode=mode) as f:
            assert f.offset_keys() == ["a", "b", "c"] and f.metadata() == {"k": "v"}
            assert_same(f.get_slice("b")[1:], np_to_pt(b[1:]))
    for fw in ("np", "pt", "dlpx"):
        assert_same_dicts(dlpx.load(blob, framework=fw), want)
        for off in (1, 3):  # a buffer at an odd address
            buf = memoryview(bytes(off) + blob)[off:]
            assert_same_dicts(dlpx.load(buf, framework=fw), want)
    tgt = {k: np.zeros_like(v) for k, v in want.items()}
    dlpx.load_into(p, tgt)
    assert_same_dicts(tgt, want)


def test_non_native_byte_order_is_refused_cleanly(tmp_path):
    """NumPy cannot export big-endian arrays through DLPack: saving one is
    an error (never little-endian bytes misread), and nothing is left."""
    p = tmp_path / "be.safetensors"
    with pytest.raises((BufferError, TypeError, ValueError)):
        dlpx.save_file({"x": np.arange(3, dtype=">f4")}, p)
    assert os.listdir(tmp_path) == []
    dlpx.save_file({"x": np.arange(3, dtype="<f4")}, p)
    with pytest.raises((BufferError, TypeError, ValueError)):
        dlpx.load_into(p, {"x": np.zeros(3, ">f4")})


# ---- 3. layouts on the way in ---------------------------------------------------------------

def _layouts():
    from conftest import layouts
    return layouts()


@pytest.mark.parametrize("layout", list(_layouts()))
@pytest.mark.parametrize("producer", ["numpy", "dlpx"])
def test_non_contiguous_inputs(tmp_path, layout, producer):
    base = make_np("float32", (4, 6), 3)
    src = np.asarray(base) if producer == "numpy" else dlpx.from_dlpack(base)
    view = _layouts()[layout](src)
    want = contig(view if producer == "numpy" else view.numpy())
    p = tmp_path / "l.safetensors"
    dlpx.save_file({"v": view, "other": np.arange(3)}, p)
    assert_same(dlpx.load_file(p, framework="np")["v"], want)
    assert_same(ref_np.load_file(str(p))["v"], want)
    assert dlpx.save({"v": view}, checksum=False) == ref_np.save({"v": want})
    assert_same(base, make_np("float32", (4, 6), 3))  # the source is untouched


def test_more_strided_inputs(tmp_path):
    def a(seed):  # a base of its own for each (views of one base overlap)
        return make_np("int64", (6, 8), seed)

    def t(seed):
        return torch.from_numpy(make_np("float16", (5, 9), seed))
    cases = {
        "np.T": a(1).T, "np.neg": a(2)[::-1], "np.neg2": a(3)[::-2, ::-3],
        "np.step": a(4)[1::2, ::3], "np.fortran": np.asfortranarray(a(5)),
        "np.bcast": np.broadcast_to(a(6)[2], (4, 8)),
        "np.3d": make_np("uint16", (3, 4, 5), 7).transpose(2, 0, 1)[::-1, :, 1:],
        "pt.t": t(8).t(), "pt.step": t(9)[::2, 1::4], "pt.expand": t(10)[0:1].expand(3, 9),
        "pt.permute": np_to_pt(make_np("bfloat16", (2, 3, 4), 11)).permute(2, 0, 1),
        "pt.narrow": t(12).narrow(1, 2, 5),
    }
    p = tmp_path / "s.safetensors"
    dlpx.save_file(cases, p)
    got = dlpx.load_file(p)
    for k, v in cases.items():
        want = contig(v) if isinstance(v, np.ndarray) else v.contiguous()
        assert_same(got[k], want, k)
    ref = ref_pt.load_file(str(p))
    for k, v in cases.items():
        want = np_to_pt(v) if isinstance(v, np.ndarray) else v
        assert_same(ref[k], want.contiguous(), k)


def test_non_overlapping_views_of_one_buffer_save(tmp_path):
    a = make_np("float32", (10, 4), 1)
    d = {"top": a[:5], "bottom": a[5:]}
    p = tmp_path / "v.safetensors"
    dlpx.save_file(d, p)
    assert_same_dicts(dlpx.load_file(p, framework="np"), {k: v.copy() for k, v in d.items()})
    with pytest.raises(ValueError) as e:
        dlpx.save_file({"x": a[:6], "y": a[4:]}, p)
    assert "'x'" in str(e.value) or '"x"' in str(e.value)
    assert "'y'" in str(e.value) or '"y"' in str(e.value)


def test_requires_grad_and_parameters_save(tmp_path):
    w = torch.nn.Parameter(torch.randn(4, 3))
    x = torch.randn(3, requires_grad=True)
    y = (x * 2)  # a non-leaf with a grad_fn
    p = tmp_path / "g.safetensors"
    dlpx.save_file({"w": w, "x": x, "y": y}, p)
    got = dlpx.load_file(p, framework="pt")
    assert_same(got["w"], w.detach())
    assert_same(got["x"], x.detach())
    assert_same(got["y"], y.detach())
    assert not any(v.requires_grad for v in got.values())
    assert dlpx.save({"w": w}, checksum=False) == ref_pt.save({"w": w.detach()})


def test_jax_arrays_save(tmp_path):
    need_jax()
    import jax.numpy as jnp
    d = {"f32": jnp.arange(12, dtype=jnp.float32).reshape(3, 4),
         "bf16": jnp.linspace(-2, 2, 7, dtype=jnp.bfloat16),
         "i64": jnp.array([2**40, -3], dtype=jnp.int64), "0d": jnp.array(True),
         "T": jnp.arange(6, dtype=jnp.int32).reshape(2, 3).T, "empty": jnp.zeros((0, 2))}
    p = tmp_path / "j.safetensors"
    dlpx.save_file(d, p)
    want = {k: np.asarray(v) for k, v in d.items()}
    assert_same_dicts(dlpx.load_file(p, framework="np"), want)
    got = dlpx.load_file(p, framework="jax", mode="pread")
    assert all(isinstance(v, jax.Array) for v in got.values())
    assert_same_dicts(got, want)
    pt = {k: np_to_pt(v) for k, v in want.items()}
    assert_same_dicts(ref_pt.load_file(str(p)), pt)


# ---- 4. get_slice ------------------------------------------------------------------------------

_BOUND = st.none() | st.integers(-7, 7)
_ITEM = st.one_of(st.integers(-6, 6), st.builds(slice, _BOUND, _BOUND,
                                                st.none() | st.integers(-3, 3).filter(bool)),
                  st.just(Ellipsis), st.just(None))
INDEXES = st.one_of(_ITEM, st.lists(_ITEM, max_size=6).map(tuple))


@settings(max_examples=250, **SETTINGS)
@given(shape=st.lists(st.integers(0, 5), max_size=4).map(tuple), key=INDEXES,
       dt=st.sampled_from(["float32", "uint8", "bfloat16", "int64", "bool", "float16"]),
       mode=st.sampled_from(MODES), framework=st.sampled_from(["np", "dlpx", "pt"]),
       seed=SEEDS)
def test_get_slice_is_numpy_indexing(tmp_path, shape, key, dt, mode, framework, seed):
    full = make_np(dt, shape, seed)
    p = tmp_path / "slice.safetensors"
    dlpx.save_file({"t": full}, p, fsync=False)
    try:
        want = full[key]
    except IndexError:
        want = IndexError
    with dlpx.safe_open(p, framework=framework, mode=mode) as f:
        s = f.get_slice("t")
        assert s.get_shape() == list(shape) and s.get_dtype() == dlpx._files.File(p).by_name[
            "t"].st_dtype
        if want is IndexError:
            with pytest.raises(IndexError):
                s[key]
            return
        got = s[key]
    if isinstance(want, np.generic):
        want = np.asarray(want)
    assert is_type(got, framework)
    if framework == "pt" and dt == "bool":
        assert kind(got) == ("bool", want.shape)
        assert raw(got) == want.tobytes()
    else:
        assert_same(got, want, repr(key))
    if framework == "np":
        assert got.flags.writeable and got.flags.c_contiguous


def test_get_slice_errors_and_shapes_against_the_reference(tmp_path):
    a = make_np("float32", (4, 5, 6), 1)
    p = tmp_path / "s.safetensors"
    ref_np.save_file({"a": a, "z": np.full((), 3.5)}, str(p))
    with dlpx.safe_open(p, "np") as f, ref_open(str(p), "np") as r:
        s, rs = f.get_slice("a"), r.get_slice("a")
        assert s.get_shape() == rs.get_shape() == [4, 5, 6]
        assert s.get_dtype() == rs.get_dtype() == "F32"
        assert f.get_slice("z").get_shape() == r.get_slice("z").get_shape() == []
        assert f.get_slice("z").get_dtype() == r.get_slice("z").get_dtype() == "F64"
        assert_same(s[1:3, :, ::2], rs[1:3, :, ::2])
        assert_same(s[:, 1:4], rs[:, 1:4])
        assert_same(f.get_slice("z")[()], np.full((), 3.5))
        assert_same(f.get_slice("z")[...], np.full((), 3.5))
        for bad in (4, -5, (0, 5), (0, 0, 6), (0, 0, -7), (Ellipsis, 6), (0, 0, 0, 0),
                    (Ellipsis, Ellipsis)):
            with pytest.raises(IndexError):
                s[bad]
        with pytest.raises(IndexError):
            f.get_slice("z")[0]
        with pytest.raises(ValueError):
            s[::0]
        for bad in (1.5, "a", [0, 1], True):
            with pytest.raises((TypeError, IndexError)):
                s[bad]
        assert len(s) == 4
        with pytest.raises(TypeError):
            len(f.get_slice("z"))


def test_get_slice_verifies_and_reads_after_close_raise(tmp_path):
    a = make_np("uint8", (64, 1024), 5)
    p = tmp_path / "v.safetensors"
    dlpx.save_file({"a": a}, p)
    with dlpx.safe_open(p, "np", mode="pread", verify=True) as f:
        assert_same(f.get_slice("a")[8:40], a[8:40])
        s = f.get_slice("a")
    with pytest.raises(ValueError):
        s[0]


# ---- 5. modules, tied weights -----------------------------------------------------------------

class Net(torch.nn.Module):
    def __init__(self, seed, tie=False):
        torch.manual_seed(seed)
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16)
        self.norm = torch.nn.LayerNorm(16)
        self.fc1 = torch.nn.Linear(16, 32)
        self.bn = torch.nn.BatchNorm1d(32)
        self.fc2 = torch.nn.Linear(32, 16)
        self.head = torch.nn.Linear(16, 50, bias=False)
        self.register_buffer("scale", torch.tensor(seed + 0.5))
        self.register_buffer("table", torch.arange(seed, seed + 6, dtype=torch.int16).view(2, 3))
        if tie:
            self.head.weight = self.embed.weight
        with torch.no_grad():  # distinct LayerNorm and BatchNorm state per seed
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.uniform_(-0.5, 0.5)
        self.train()
        self(torch.randint(0, 50, (4, 5)))  # running statistics, num_batches_tracked
        self.eval()

    def forward(self, ids):
        h = self.norm(self.embed(ids))
        b, n, _ = h.shape
        h = torch.relu(self.bn(self.fc1(h).reshape(b * n, -1))).reshape(b, n, -1)
        return self.head(self.fc2(h)) * self.scale + self.table.sum()


IDS = torch.tensor([[1, 2, 3, 49], [0, 7, 7, 30]])


def test_module_state_dict_round_trip(tmp_path):
    a, b = Net(0), Net(1)
    with torch.no_grad():
        assert not torch.equal(a(IDS), b(IDS))
    p = tmp_path / "model.safetensors"
    sd = a.state_dict()
    assert "bn.num_batches_tracked" in sd and "bn.running_mean" in sd
    dlpx.save_file(sd, p, {"format": "pt"})
    ptrs = {k: v.data_ptr() for k, v in b.state_dict().items()}
    assert dlpx.load_into(p, b) == ([], [])
    assert {k: v.data_ptr() for k, v in b.state_dict().items()} == ptrs  # in place
    with torch.no_grad():
        assert torch.equal(a(IDS), b(IDS))
    assert_same_dicts(b.state_dict(), sd)
    # the reference reads dlpx's file into load_state_dict
    c = Net(2)
    c.load_state_dict(ref_pt.load_file(str(p)))
    with torch.no_grad():
        assert torch.equal(a(IDS), c(IDS))
    # and dlpx reads the reference's file (load_file and load_into)
    q = tmp_path / "ref.safetensors"
    ref_pt.save_file(sd, str(q), {"format": "pt"})
    for mode in MODES:
        e = Net(3)
        e.load_state_dict(dlpx.load_file(q, mode=mode, framework="pt"))
        with torch.no_grad():
            assert torch.equal(a(IDS), e(IDS))
    f = Net(4)
    assert dlpx.load_into(q, f, direct=True) == ([], [])
    with torch.no_grad():
        assert torch.equal(a(IDS), f(IDS))
    assert dlpx.save(sd, {"format": "pt"}, checksum=False) == read_bytes(q)


def test_tied_weights(tmp_path):
    a = Net(0, tie=True)
    sd = a.state_dict()
    assert sd["embed.weight"].data_ptr() == sd["head.weight"].data_ptr()
    p = tmp_path / "tied.safetensors"
    with pytest.raises(ValueError) as e:
        dlpx.save_file(sd, p)
    assert "embed.weight" in str(e.value) and "head.weight" in str(e.value)
    assert not os.path.exists(p) and os.listdir(tmp_path) == []
    dlpx.save_file(sd, p, tied="once")
    # one copy stored: the reference sees one of the two names
    with ref_open(str(p), "pt") as r:
        seen = set(r.keys())
    assert len(seen & {"embed.weight", "head.weight"}) == 1
    assert seen | {"embed.weight", "head.weight"} == set(sd)
    stored = (seen & {"embed.weight", "head.weight"}).pop()
    assert os.path.getsize(p) < sum(v.numel() * v.element_size() for v in sd.values()) + 4096
    ref = ref_pt.load_file(str(p))
    assert_same(ref[stored], sd[stored])
    # dlpx restores both names as one tensor
    for mode in MODES:
        for fw in ("torch", "numpy", "dlpx"):
            got = dlpx.load_file(p, mode=mode, framework=fw)
            assert sorted(got) == sorted(sd)
            assert data_ptr(got["embed.weight"]) == data_ptr(got["head.weight"])
            assert_same(got["head.weight"], sd["head.weight"])
    with dlpx.safe_open(p, "pt") as f:
        assert f.keys() == sorted(sd)
        assert "head.weight" in f and "embed.weight" in f
        assert_same(f.get_tensor("head.weight"), sd["head.weight"])
        assert_same(f.get_slice("head.weight")[3:5], sd["head.weight"][3:5])
        assert f.metadata() is None
    # load_into a fresh tied model fills both (one memory)
    b = Net(1, tie=True)
    assert dlpx.load_into(p, b) == ([], [])
    assert b.head.weight is b.embed.weight
    with torch.no_grad():
        assert torch.equal(a(IDS), b(IDS))
    # load_into an untied model fills both of its separate tensors
    c = Net(2, tie=False)
    assert dlpx.load_into(p, c) == ([], [])
    assert torch.equal(c.head.weight, a.embed.weight)
    assert torch.equal(c.embed.weight, a.embed.weight)
    with torch.no_grad():
        assert torch.equal(a(IDS), c(IDS))
    # the reference's model (untied head) loads with strict=False: only the stored name
    d = Net(3, tie=True)
    missing, unexpected = d.load_state_dict(ref, strict=False)
    assert unexpected == [] and set(missing) <= {"embed.weight", "head.weight"}


def test_tied_once_rules(tmp_path):
    w = make_np("float32", (4, 3), 1)
    p = tmp_path / "t.safetensors"
    # the same memory as another view is not "the same tensor": refused
    for other in (w.T, w[1:], w[::-1], w.reshape(3, 4)):
        with pytest.raises(ValueError):
            dlpx.save_file({"a": w, "b": other}, p, tied="once")
    assert os.listdir(tmp_path) == []
    # three names for one tensor, next to others
    dlpx.save_file({"z": w, "a": w, "m": w, "o": np.arange(3)}, p, tied="once")
    with ref_open(str(p), "np") as r:
        assert len(r.keys()) == 2
    for mode in MODES:
        got = dlpx.load_file(p, mode=mode, framework="np", verify=mode != "mmap" or None)
        assert sorted(got) == ["a", "m", "o", "z"]
        assert len({data_ptr(got[k]) for k in "amz"}) == 1
        assert_same(got["m"], w)
    t = {k: np.zeros_like(w) for k in "amz"}
    t["o"] = np.zeros(3, np.int64)
    assert dlpx.load_into(p, t, verify=True) == ([], [])
    for k in "amz":
        assert_same(t[k], w, k)
    # an alias that is also given as a target of its own, strict=False
    t = {"m": np.zeros_like(w)}
    missing, unexpected = dlpx.load_into(p, t, strict=False)
    assert missing == [] and unexpected == ["a", "o", "z"]
    assert_same(t["m"], w)


@pytest.mark.parametrize("order", ["stored_first", "alias_first"])
def test_tied_file_into_separate_arrays(tmp_path, order):
    w = make_np("float32", (6, 4), 1)
    p = tmp_path / "t.safetensors"
    dlpx.save_file({"a": w, "b": w, "c": make_np("int8", (3,), 2)}, p, tied="once")
    with dlpx.safe_open(p) as f:
        stored = f.offset_keys()
    (kept,) = set(stored) & {"a", "b"}
    alias = "b" if kept == "a" else "a"
    names = [kept, alias, "c"] if order == "stored_first" else [alias, kept, "c"]
    tgt = {n: np.zeros((6, 4), np.float32) if n != "c" else np.zeros(3, np.int8) for n in names}
    assert dlpx.load_into(p, tgt) == ([], [])
    assert_same(tgt["a"], w)
    assert_same(tgt["b"], w)


# ---- 6a. load_into rules --------------------------------------------------------------------

@pytest.fixture
def small_file(tmp_path):
    d = {"w": make_np("float32", (3, 4), 1), "b": make_np("int16", (4,), 2),
         "s": make_np("float64", (), 3)}
    p = tmp_path / "small.safetensors"
    dlpx.save_file(d, p)
    return d, p


def test_load_into_strict_mismatch_reads_nothing(small_file):
    d, p = small_file
    tgt = {"w": np.full((3, 4), -1, np.float32), "b": np.full(4, -1, np.int16),
           "extra": np.full(2, -1, np.float32)}
    with pytest.raises(ValueError) as e:
        dlpx.load_into(p, tgt)
    msg = str(e.value)
    assert "extra" in msg and "s" in msg
    assert all((v == -1).all() for v in tgt.values())
    missing, unexpected = dlpx.load_into(p, tgt, strict=False)
    assert (missing, unexpected) == (["extra"], ["s"])
    assert_same(tgt["w"], d["w"])
    assert_same(tgt["b"], d["b"])
    assert (tgt["extra"] == -1).all()


def test_load_into_type_shape_readonly_errors_read_nothing(small_file):
    d, p = small_file

    def fresh():
        return {"w": np.full((3, 4), -1, np.float32), "b": np.full(4, -1, np.int16),
                "s": np.full((), -1, np.float64)}
    t = fresh()
    t["s"] = np.full((), -1, np.float32)
    with pytest.raises(TypeError) as e:
        dlpx.load_into(p, t)
    assert "'s'" in str(e.value)
    assert all((v == -1).all() for v in t.values())
    t = fresh()
    t["b"] = np.full(5, -1, np.int16)
    with pytest.raises(ValueError) as e:
        dlpx.load_into(p, t)
    assert "'b'" in str(e.value)
    assert all((v == -1).all() for v in t.values())
    t = fresh()
    t["b"] = np.full((4, 1), -1, np.int16)
    with pytest.raises(ValueError):
        dlpx.load_into(p, t)
    t = fresh()
    t["w"].flags.writeable = False
    with pytest.raises(ValueError):
        dlpx.load_into(p, t)
    assert all((v == -1).all() for v in t.values())
    t = fresh()
    t["w"] = dlpx.load_file(p, framework="np")["w"]  # a read-only mmap view
    with pytest.raises(ValueError):
        dlpx.load_into(p, t)
    t = fresh()
    t["w"] = dlpx.zeros((3, 4), "float32").as_readonly()
    with pytest.raises(ValueError):
        dlpx.load_into(p, t)
    t = fresh()
    t["w"] = torch.zeros(3, 4, dtype=torch.float64)
    with pytest.raises(TypeError):
        dlpx.load_into(p, t)
    with pytest.raises(TypeError):
        dlpx.load_into(p, [1, 2])


def test_load_into_non_contiguous_targets(small_file):
    d, p = small_file
    big = np.full((10, 7), -1, np.float32)
    view = big[1:9:2, 2:5].T  # (3, 4), strided, transposed
    assert view.shape == (3, 4) and not view.flags.c_contiguous
    b_base = np.full(12, -1, np.int16)
    b_view = dlpx.from_dlpack(b_base)[::-3]  # negative stride through dlpx
    s_base = torch.full((2, 2), -1, dtype=torch.float64)
    tgt = {"w": view, "b": b_view, "s": s_base[1, 0]}
    assert dlpx.load_into(p, tgt) == ([], [])
    assert_same(contig(view), d["w"])
    assert_same(b_base[::-3], d["b"])
    assert float(s_base[1, 0]) == float(d["s"])
    mask = np.ones_like(big, bool)
    mask[1:9:2, 2:5] = False
    assert (big[mask] == -1).all()
    bm = np.ones(12, bool)
    bm[::-3] = False
    assert (b_base[bm] == -1).all()
    assert int((s_base == -1).sum()) == 3
    # a torch transposed view
    tw = torch.full((4, 3), -1.0).t()
    dlpx.load_into(p, {"w": tw, "b": np.zeros(4, np.int16), "s": np.zeros(())})
    assert_same(tw.contiguous(), torch.from_numpy(d["w"]))


# ---- 6b. sharded checkpoints -----------------------------------------------------------------

def _shard(tmp_path, d, n=4, metadata=None):
    names = sorted(d)
    weight_map, files = {}, []
    for i in range(n):
        fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        part = {k: d[k] for k in names[i::n]}
        dlpx.save_file(part, tmp_path / fname, {"format": "pt"})
        files.append(tmp_path / fname)
        weight_map.update({k: fname for k in part})
    index = {"metadata": metadata or {"total_size": sum(v.nbytes for v in d.values())},
             "weight_map": weight_map}
    ip = tmp_path / "model.safetensors.index.json"
    ip.write_text(json.dumps(index))
    return ip, files, index


def test_sharded_checkpoint(tmp_path):
    d = {f"layers.{i}.w": make_np(["float32", "bfloat16", "int8"][i % 3], (i % 5, 3), i)
         for i in range(14)}
    full = tmp_path / "full.safetensors"
    dlpx.save_file(d, full)
    ip, files, _ = _shard(tmp_path, d)
    for mode in MODES:
        for fw in ("np", "dlpx", "pt"):
            one = dlpx.load_file(full, mode=mode, framework=fw)
            assert_same_dicts(dlpx.load_file(ip, mode=mode, framework=fw), one)
            assert_same_dicts(dlpx.load_file(str(ip), mode=mode, framework=fw), one)
            assert_same_dicts(dlpx.load_file(files, mode=mode, framework=fw), one)
            assert_same_dicts(dlpx.load_file([str(f) for f in files[::-1]], mode=mode,
                                             framework=fw), one)
    assert list(dlpx.load_file(ip)) == sorted(d)
    tgt = {k: np.zeros(v.shape, v.dtype) for k, v in d.items()}
    assert dlpx.load_into(ip, tgt) == ([], [])
    assert_same_dicts(tgt, d)
    tgt = {k: np.zeros(v.shape, v.dtype) for k, v in d.items()}
    assert dlpx.load_into(files, tgt) == ([], [])
    assert_same_dicts(tgt, d)
    # the reference reads every shard
    merged = {}
    for f in files:
        merged.update(ref_pt.load_file(str(f)))
    assert_same_dicts(merged, dlpx.load_file(full, framework="pt"))


def test_sharded_checkpoint_errors(tmp_path):
    d = {f"t{i}": make_np("float32", (2, i + 1), i) for i in range(8)}
    ip, files, index = _shard(tmp_path, d)
    # a tensor in two shards
    dup = tmp_path / "dup.safetensors"
    dlpx.save_file({"t0": d["t0"]}, dup)
    with pytest.raises(ValueError, match="t0"):
        dlpx.load_file(files + [dup])
    with pytest.raises(ValueError, match="t0"):
        dlpx.load_into(files + [dup], {k: np.zeros_like(v) for k, v in d.items()})
    bad = dict(index, weight_map=dict(index["weight_map"], t0="dup.safetensors"))
    ip.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="t0"):
        dlpx.load_file(ip)
    # an index naming a tensor no shard has
    bad = dict(index, weight_map=dict(index["weight_map"], ghost=files[0].name))
    ip.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="ghost"):
        dlpx.load_file(ip)
    # an index placing a tensor in the wrong shard
    bad = dict(index, weight_map=dict(index["weight_map"], t0=files[1].name))
    ip.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="t0"):
        dlpx.load_file(ip)
    # paths outside the index's directory
    (tmp_path.parent / "x.safetensors").write_bytes(dlpx.save({"t9": np.zeros(1)}))
    for escape in ("../x.safetensors", "sub/../../x.safetensors",
                   str(tmp_path.parent / "x.safetensors")):
        bad = dict(index, weight_map=dict(index["weight_map"], t9=escape))
        ip.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="outside"):
            dlpx.load_file(ip)
        with pytest.raises(ValueError, match="outside"):
            dlpx.load_into(ip, {})
    # a shard that does not exist
    bad = dict(index, weight_map=dict(index["weight_map"], t9="missing.safetensors"))
    ip.write_text(json.dumps(bad))
    with pytest.raises(FileNotFoundError):
        dlpx.load_file(ip)
    # malformed indexes
    for text in ("not json", "[]", '{"metadata": {}}', '{"weight_map": {"a": 1}}'):
        ip.write_text(text)
        with pytest.raises(ValueError):
            dlpx.load_file(ip)
    with pytest.raises(ValueError):
        dlpx.load_file([])
    with pytest.raises(ValueError):
        dlpx.load_file([files[0], files[0]])


def test_shard_names_that_merely_start_with_dots(tmp_path):
    """'..a.safetensors' and 'sub/..b' are inside the directory: not escapes."""
    (tmp_path / "sub").mkdir()
    dlpx.save_file({"a": np.arange(3)}, tmp_path / "..a.safetensors")
    dlpx.save_file({"b": np.arange(4)}, tmp_path / "sub" / "..b.safetensors")
    ip = tmp_path / "model.safetensors.index.json"
    ip.write_text(json.dumps({"metadata": {}, "weight_map": {
        "a": "..a.safetensors", "b": "sub/..b.safetensors"}}))
    got = dlpx.load_file(ip, framework="np")
    assert_same(got["a"], np.arange(3))
    assert_same(got["b"], np.arange(4))


# ---- 6c. checksums and metadata -------------------------------------------------------------

def _corrupt(path, name, at=0):
    with dlpx.safe_open(path) as f:
        e = f._file_live().by_name[name]
        off = dlpx.lib.dlpx_file_data_offset(f._file_live()._h)
    with open(path, "r+b") as fp:
        fp.seek(off + e.begin + at)
        b = fp.read(1)
        fp.seek(off + e.begin + at)
        fp.write(bytes([b[0] ^ 0x40]))


def test_checksums(tmp_path, small_file):
    d, p = small_file
    for mode in MODES:
        assert_same_dicts(dlpx.load_file(p, mode=mode, verify=True, framework="np"), d)
        with dlpx.safe_open(p, "np", mode=mode, verify=True) as f:
            assert_same(f.get_tensor("w"), d["w"])
    tgt = {k: np.zeros_like(v) for k, v in d.items()}
    dlpx.load_into(p, tgt, verify=True)
    assert_same_dicts(tgt, d)
    # reference-written: nothing to verify
    q = tmp_path / "ref.safetensors"
    ref_np.save_file(d, str(q))
    for mode in MODES:
        with pytest.raises(ValueError):
            dlpx.load_file(q, mode=mode, verify=True)
        with pytest.raises(ValueError):
            dlpx.safe_open(q, mode=mode, verify=True)
        assert_same_dicts(dlpx.load_file(q, mode=mode, framework="np"), d)
        assert_same_dicts(dlpx.load_file(q, mode=mode, verify=False, framework="np"), d)
    with pytest.raises(ValueError):
        dlpx.load_into(q, {k: np.zeros_like(v) for k, v in d.items()}, verify=True)
    # saved without checksums: loads with verify=None, refuses verify=True
    r = tmp_path / "nosum.safetensors"
    dlpx.save_file(d, r, checksum=False)
    assert read_bytes(r) == ref_np.save(d)
    for mode in MODES:
        assert_same_dicts(dlpx.load_file(r, mode=mode, framework="np"), d)
        with pytest.raises(ValueError):
            dlpx.load_file(r, mode=mode, verify=True)
    with pytest.raises(TypeError):
        dlpx.load_file(p, verify="yes")


@pytest.mark.parametrize("size", [1000, (1 << 24) + 4099])
def test_corruption_is_caught(tmp_path, size):
    d = {"a": make_np("uint8", (size,), 1), "b": make_np("float32", (10,), 2)}
    p = tmp_path / "c.safetensors"
    dlpx.save_file(d, p, fsync=False)
    _corrupt(p, "a", at=size - 1)  # in the last checksum chunk
    for mode in ("pread", "direct"):
        with pytest.raises(ValueError, match="'?a'?"):
            dlpx.load_file(p, mode=mode)  # verify=None checks where the mode streams
        with pytest.raises(ValueError):
            dlpx.load_file(p, mode=mode, chunk_size=4096, threads=3)
        with pytest.raises(ValueError):
            with dlpx.safe_open(p, mode=mode) as f:
                f.get_tensor("a")
        got = dlpx.load_file(p, mode=mode, verify=False, framework="np")
        assert raw(got["a"]) != raw(d["a"]) and raw(got["b"]) == raw(d["b"])
    with pytest.raises(ValueError):
        dlpx.load_file(p, verify=True)
    with dlpx.safe_open(p, verify=True) as f:
        assert_same(f.get_tensor("b"), d["b"])
        with pytest.raises(ValueError):
            f.get_tensor("a")
    got = dlpx.load_file(p, framework="np")  # mmap checks only on request
    assert raw(got["a"]) != raw(d["a"])
    with pytest.raises(ValueError):
        dlpx.load_into(p, {k: np.zeros_like(v) for k, v in d.items()})
    dlpx.load_into(p, {k: np.zeros_like(v) for k, v in d.items()}, verify=False)
    # the reference has no checksums: it reads the corrupt bytes
    assert raw(ref_np.load_file(str(p))["a"]) == raw(got["a"])


def test_metadata_rules(tmp_path):
    a = {"x": np.arange(4, dtype=np.int32)}
    p = tmp_path / "m.safetensors"
    for kw in ({}, {"tied": "once"}, {"checksum": False}):
        dlpx.save_file(a, p, **kw)
        with dlpx.safe_open(p) as f:
            assert f.metadata() is None
        with ref_open(str(p), "np") as r:
            assert (r.metadata() is None) == (kw == {"checksum": False})
    dlpx.save_file(a, p, {"format": "np", "ü": "\u2028\""})
    with dlpx.safe_open(p) as f:
        assert f.metadata() == {"format": "np", "ü": "\u2028\""}
    with ref_open(str(p), "np") as r:
        seen = r.metadata()
    assert seen["format"] == "np" and seen["ü"] == "\u2028\"" and "dlpx.checksums" in seen
    for key in ("dlpx.", "dlpx.checksums", "dlpx.aliases", "dlpx.mine"):
        with pytest.raises(ValueError):
            dlpx.save_file(a, p, {key: "v"})
    for meta in ({"k": 1}, {"k": None}, {"k": b"v"}, {1: "v"}):
        with pytest.raises(TypeError):
            dlpx.save_file(a, p, meta)
    with pytest.raises(TypeError):
        dlpx.save_file(a, p, [("k", "v")])
    with pytest.raises(TypeError):
        dlpx.save_file({1: np.zeros(1)}, p)
    with pytest.raises(ValueError):
        dlpx.save_file({"__metadata__": np.zeros(1)}, p)
    with pytest.raises(ValueError):
        dlpx.save_file({"a\0b": np.zeros(1)}, p)
    with pytest.raises(ValueError):
        dlpx.save_file(a, p, tied="twice")
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_empty_metadata_dict_bytes_are_the_reference_bytes():
    """The reference writes ``"__metadata__":{}`` for metadata={}; dlpx's
    checksum=False bytes should be the same."""
    a = {"x": np.arange(4, dtype=np.int32)}
    assert dlpx.save(a, {}, checksum=False) == ref_np.save(a, metadata={})


def test_empty_metadata_dict_reads_back_as_the_reference_reads_it(tmp_path):
    """The reference's safe_open.metadata() is {} for a file with an empty
    __metadata__ and None only for a file without one."""
    a = {"x": np.arange(4, dtype=np.int32)}
    p = tmp_path / "r.safetensors"
    ref_np.save_file(a, str(p), metadata={})
    with dlpx.safe_open(p) as f, ref_open(str(p), "np") as r:
        assert r.metadata() == {}
        assert f.metadata() == {}


def test_the_reference_writes_invalid_json_for_no_tensors_and_empty_metadata(tmp_path):
    """safetensors 0.8 saves {} with metadata={} as '{},"__metadata__":{}}'
    (not JSON; it cannot read that itself).  dlpx refuses that file as
    malformed and writes valid files for the same call."""
    blob = ref_np.save({}, metadata={})
    p = tmp_path / "broken.safetensors"
    p.write_bytes(blob)
    if blob[8:].rstrip().startswith(b"{}") and blob[8:].rstrip() != b"{}":
        with pytest.raises(Exception):
            ref_np.load(blob)
        for mode in MODES:
            with pytest.raises(ValueError):
                dlpx.load_file(p, mode=mode)
        with pytest.raises(ValueError):
            dlpx.load(blob)
    for checksum in (False, True):
        mine = dlpx.save({}, {}, checksum=checksum)
        n = struct.unpack("<Q", mine[:8])[0]
        assert isinstance(json.loads(mine[8:8 + n]), dict)
        assert dlpx.load(mine) == {}
        assert ref_np.load(mine) == {}


# ---- 6d. errors ---------------------------------------------------------------------------------

def test_errors(tmp_path, small_file):
    d, p = small_file
    missing = tmp_path / "nope.safetensors"
    for mode in MODES:
        with pytest.raises(FileNotFoundError):
            dlpx.load_file(missing, mode=mode)
        with pytest.raises(FileNotFoundError):
            dlpx.safe_open(missing, mode=mode)
        with pytest.raises(IsADirectoryError):
            dlpx.load_file(tmp_path, mode=mode)
        with pytest.raises(IsADirectoryError):
            dlpx.safe_open(tmp_path, mode=mode)
    with pytest.raises(FileNotFoundError):
        dlpx.load_into(missing, {})
    with pytest.raises(IsADirectoryError):
        dlpx.load_into(tmp_path, {})
    with pytest.raises(IsADirectoryError):
        dlpx.save_file(d, tmp_path)
    with pytest.raises(FileNotFoundError):
        dlpx.save_file(d, tmp_path / "no" / "dir.safetensors")
    for fw in ("tensorflow", "NUMPYY", "", "mx"):
        with pytest.raises(ValueError):
            dlpx.load_file(p, framework=fw)
        with pytest.raises(ValueError):
            dlpx.safe_open(p, framework=fw)
        with pytest.raises(ValueError):
            dlpx.load(read_bytes(p), framework=fw)
    with pytest.raises(TypeError):
        dlpx.load_file(p, framework=None)
    for mode in ("MMAP", "read", "", None, "o_direct"):
        with pytest.raises(ValueError):
            dlpx.load_file(p, mode=mode)
        with pytest.raises(ValueError):
            dlpx.safe_open(p, mode=mode)
    for dev in ("mps", "meta", "cuda_host", "vulkan", "cuda:x"):
        with pytest.raises(ValueError):
            dlpx.load_file(p, device=dev)
        with pytest.raises(ValueError):
            dlpx.safe_open(p, device=dev)
    assert_same_dicts(dlpx.load_file(p, device="cpu", framework="np"), d)
    assert_same_dicts(dlpx.load_file(p, device=torch.device("cpu"), framework="np"), d)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            dlpx.load_file(p, mode="pread", threads=bad)
    for bad in (0, 100, 4095, True):
        with pytest.raises(ValueError):
            dlpx.load_file(p, mode="pread", chunk_size=bad)
    with pytest.raises(TypeError):
        dlpx.load_file(12)


def test_safe_open_after_close(small_file):
    d, p = small_file
    f = dlpx.safe_open(p, "np")
    t = f.get_tensor("w")
    s = f.get_slice("w")
    f.close()
    f.close()  # idempotent
    for call in (f.keys, f.offset_keys, f.metadata, lambda: f.get_tensor("w"),
                 lambda: f.get_slice("w"), lambda: s[0], lambda: "w" in f, lambda: len(f)):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError):
        with f:
            pass
    assert_same(t, d["w"])  # tensors returned before close stay valid
    with dlpx.safe_open(p, "pt", mode="pread") as g:
        kept = g.get_tensor("w")
    with pytest.raises(ValueError):
        g.get_tensor("w")
    assert_same(kept, torch.from_numpy(d["w"]))


def test_malformed_files(tmp_path, small_file):
    d, p = small_file
    data = read_bytes(p)
    bad = tmp_path / "bad.safetensors"
    cases = {
        "truncated": data[:-1], "longer": data + b"\0", "empty": b"", "short": b"\x01\0\0",
        "header_too_long": struct.pack("<Q", len(data)) + data[8:],
        "zero_header": struct.pack("<Q", 0) + data[8:],
        "not_json": struct.pack("<Q", 8) + b"nonsense",
        "random": bytes(_rng_bytes(1, 200)),
    }
    for what, blob in cases.items():
        bad.write_bytes(blob)
        for mode in MODES:
            with pytest.raises(ValueError):
                dlpx.load_file(bad, mode=mode)
        with pytest.raises(ValueError):
            dlpx.safe_open(bad)
        with pytest.raises(ValueError):
            dlpx.load(blob)
        with pytest.raises(Exception):  # the reference refuses these too
            ref_np.load(blob)


@pytest.mark.parametrize("mode", ["pread", "direct"])
def test_small_tensors_share_blocks_and_outlive_each_other(tmp_path, mode):
    """Tensors under 1 MiB are read into shared blocks (one allocation, few
    page faults); each keeps its block alive, writes stay in place."""
    import gc
    rng = np.random.default_rng(5)
    src = {f"s{i:03d}": rng.random(1000 + i).astype(np.float32) for i in range(300)}
    src["big"] = rng.random(1 << 19).astype(np.float32)  # 2 MiB: its own block
    path = tmp_path / "small.safetensors"
    dlpx.save_file(src, path)
    base = dlpx.stats()["storages_live"]
    got = dlpx.load_file(path, mode=mode)
    assert dlpx.stats()["storages_live"] - base < 10  # a few blocks, not 301 storages
    for k, v in src.items():
        assert v.tobytes() == got[k].numpy().tobytes()
        assert got[k].data_ptr % 64 == 0 and not got[k].readonly
    keep = got["s150"]
    keep.numpy()[0] = 7.0
    del got
    gc.collect()
    assert keep.numpy()[0] == 7.0 and keep.numpy()[1:].tobytes() == src["s150"][1:].tobytes()
    del keep
    gc.collect()
    assert dlpx.stats()["storages_live"] == base
