"""Hostile files, files that change under a reader, killed savers, and the
memory, descriptors and threads of the tensor-file API (dlpx.save_file,
load_file, safe_open, load_into, load).

1. Malformed files: every one is a ValueError (OSError for I/O) whose
   message names the problem, from load_file in each mode, safe_open,
   load_into and load(bytes), never a crash or a leak; random mutations of a
   valid file (hypothesis) load or raise ValueError/OSError, nothing else.
   Where the reference (safetensors) decides, dlpx decides the same:
   out-of-order entries that still cover the data are accepted (both sort
   by offset), trailing bytes after the last tensor are refused (both:
   "incomplete metadata, file not fully covered").  Deliberate divergences
   are tested as such (test_stricter_than_the_reference).
2. A file cut short after it was opened: pread reports it (OSError), mmap
   refuses to map it (OSError: it shrank).  A file cut short while already
   mapped can still raise SIGBUS when the lost pages are touched: shown in a
   subprocess only.
3. Killed savers: a child saving one of two dicts in a loop is SIGKILLed at
   random; the file is always exactly one of them (verified checksums, and
   the reference reads it), and the temporary files killed saves leave are
   removed by the next successful save.  Saving over a file mapped by live
   tensors leaves those tensors as they were.
4. Memory and descriptors: pread loads give their memory back, mappings go
   with their last tensor (and not before), the peak of a pread load is the
   tensors plus a bounded staging, no descriptor leaks from any path.
5. Threads loading one file at once all get the right data.
"""

import fcntl
import gc
import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dlpx
from conftest import live, needs_versioned_numpy

try:
    import safetensors.numpy as ref
except ImportError:  # pragma: no cover
    ref = None

MODES = ("mmap", "pread", "direct")
MiB = 1 << 20


# ---- helpers ---------------------------------------------------------------------------


def st_file(header, data=b""):
    """A safetensors file: |header| (a dict, dumped as JSON, or raw bytes)
    after its 8-byte length, then |data|."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def entry(dtype, shape, offsets):
    return {"dtype": dtype, "shape": shape, "data_offsets": offsets}


def u8(begin, end):
    """An entry of end - begin bytes of U8."""
    return entry("U8", [end - begin], [begin, end])


def offs(offsets):
    """A file of one 1-byte tensor with |offsets| as its data_offsets."""
    return st_file({"a": entry("U8", [1], offsets)}, b"x")


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def load_every_way(path):
    """Loads |path| through every entry point that reads a file (each mode
    of load_file and of safe_open, load_into) and returns nothing; the
    first refusal propagates."""
    for mode in MODES:
        dlpx.load_file(path, mode=mode)
    for mode in MODES:
        with dlpx.safe_open(path, mode=mode) as f:
            for k in f.keys():
                f.get_tensor(k)
    dlpx.load_into(path, {}, strict=False)


def refused_everywhere(path, data, match, exc=ValueError):
    """|data|, written at |path|, is refused with |exc| and a message
    matching |match| by each entry point; the reference refuses it too."""
    write(path, data)
    for mode in MODES:
        with pytest.raises(exc, match=match):
            dlpx.load_file(path, mode=mode)
        with pytest.raises(exc, match=match):
            with dlpx.safe_open(path, mode=mode) as f:
                for k in f.keys():
                    f.get_tensor(k)
    with pytest.raises(exc, match=match):
        dlpx.load_into(path, {}, strict=False)
    with pytest.raises(ValueError, match=match):
        dlpx.load(data)
    with pytest.raises(ValueError, match=match):
        dlpx.load(bytearray(data))
    if ref is not None:
        with pytest.raises(Exception):
            ref.load(data)
        with pytest.raises(Exception):
            ref.load_file(path)


def fd_count():
    return len(os.listdir("/proc/self/fd"))


def proc_status(field):
    """A field of /proc/self/status in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def mapped(path):
    """Whether |path| is mapped in this process (/proc/self/maps)."""
    real = os.path.realpath(path)
    with open("/proc/self/maps") as f:
        return any(line.rstrip("\n").endswith(" " + real) for line in f)


def tmp_files(directory, name):
    """The temporary files of saves of |name| in |directory|."""
    pat = re.compile(r"^\." + re.escape(name) + r"\.tmp-[A-Za-z0-9]{6}$")
    return sorted(n for n in os.listdir(directory) if pat.match(n))


def child_env():
    env = dict(os.environ)  # PYTHONPATH and DLPX_LIBRARY as this process has them
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def run_child(code, *args, timeout=60):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                          env=child_env(), capture_output=True, text=True, timeout=timeout)


def small_dict():
    rng = np.random.default_rng(7)
    return {"w": rng.standard_normal((3, 4)).astype(np.float32),
            "b": np.arange(5, dtype=np.int16),
            "e": np.zeros((0, 3), np.float64)}


def assert_same(got, want):
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        g = np.asarray(got[k])
        assert g.dtype == v.dtype and g.shape == v.shape, k
        assert np.array_equal(g, v), k


# ---- 1. hostile files ---------------------------------------------------------------

X = b"x"
HOSTILE = {
    # the 8-byte header length and the header's bounds
    "empty": (b"", r"too short"),
    **{f"{n}_bytes": (bytes(range(1, n + 1)), r"too short") for n in range(1, 8)},
    "length_0": (struct.pack("<Q", 0) + b"{}", r"header length is 0"),
    "length_past_end": (struct.pack("<Q", 50) + b"{}", r"header length 50 runs past the end"),
    "length_past_end_by_1": (struct.pack("<Q", 3) + b"{}", r"header length 3 runs past the end"),
    "length_over_limit": (struct.pack("<Q", 100_000_001) + b"{}" + b" " * 30,
                          r"header length 100000001 exceeds the limit"),
    "length_2_64_minus_1": (b"\xff" * 8 + b"{}", r"exceeds the limit"),
    # the header's text
    "leading_space": (st_file(b' {"a":1}'), r"does not start with '\{'"),
    "array_header": (st_file(b"[1, 2]"), r"does not start with '\{'"),
    "null_header": (st_file(b"null"), r"does not start with '\{'"),
    "invalid_utf8": (st_file(b'{"\xff\xfe":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', X),
                     r"not valid JSON: unable to decode byte 0xff"),
    "overlong_utf8": (st_file(b'{"\xc0\xaf":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', X),
                      r"unable to decode byte 0xc0"),
    "invalid_json": (st_file(b'{"a": {"dtype": "U8",'), r"not valid JSON"),
    "json_then_garbage": (st_file(b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}} x', X),
                          r"not valid JSON: end of file expected"),
    "json_then_nul": (st_file(b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}\0', X),
                      r"not valid JSON"),
    "duplicate_names": (st_file(b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                                b'"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', X * 2),
                        r"duplicate object key near '\"a\"'"),
    # the entries' bounds
    "overlap": (st_file({"a": u8(0, 2), "b": u8(1, 3)}, X * 3), r'tensor "b" overlaps'),
    "overlap_same_range": (st_file({"a": u8(0, 2), "b": u8(0, 2)}, X * 2), r"overlaps"),
    "gap": (st_file({"a": u8(0, 1), "b": u8(2, 3)}, X * 3), r'before tensor "b" .*\(a gap\)'),
    "gap_at_start": (st_file({"a": u8(1, 2)}, X * 2), r"\(a gap\)"),
    "size_not_shape_x_dtype": (st_file({"a": entry("F32", [2], [0, 4])}, X * 4),
                               r'tensor "a" takes 4 bytes in data_offsets but .* need 8'),
    "unknown_dtype_F128": (st_file({"a": entry("F128", [1], [0, 16])}, X * 16),
                           r'unknown dtype "F128"'),
    "lowercase_dtype": (st_file({"a": entry("u8", [1], [0, 1])}, X), r'unknown dtype "u8"'),
    "negative_dim": (st_file({"a": entry("U8", [-1], [0, 1])}, X), r"shape\[0\] .* non-negative"),
    "float_dim": (st_file({"a": entry("U8", [1.0], [0, 1])}, X), r"shape\[0\] .* non-negative"),
    "bool_dim": (st_file({"a": entry("U8", [True], [0, 1])}, X), r"non-negative integer"),
    "dims_product_overflows": (st_file({"a": entry("F32", [2**32] * 3, [0, 4])}, X * 4),
                               r'tensor "a" overflows'),
    "dims_product_overflows_u64": (st_file({"a": entry("U8", [2**62, 4], [0, 4])}, X * 4),
                                   r"overflows"),
    "bytes_overflow": (st_file({"a": entry("F64", [2**61], [0, 8])}, X * 8), r"overflows"),
    "dim_past_2_64": (st_file({"a": entry("U8", [2**64], [0, 4])}, X * 4),
                      r"not valid JSON: too big integer"),
    "too_many_dims": (st_file({"a": entry("U8", [1] * 200, [0, 1])}, X), r"dimensions"),
    "offsets_past_end": (st_file({"a": u8(0, 4)}, X * 2), r"the data has 2 bytes .*truncated"),
    "offsets_reversed": (offs([1, 0]), r"out of order"),
    "offsets_one": (offs([0]), r"data_offsets .* two"),
    "offsets_three": (offs([0, 1, 2]), r"data_offsets .* two"),
    "offsets_empty": (offs([]), r"data_offsets .* two"),
    "offsets_strings": (offs(["0", "1"]), r"data_offsets .* integers"),
    "offsets_null": (offs([None, 1]), r"data_offsets .* integers"),
    "offsets_floats": (offs([0.0, 1.0]), r"data_offsets .* integers"),
    "offsets_one_float": (offs([0, 1.0]), r"data_offsets .* integers"),
    "offsets_negative": (offs([-1, 0]), r"non-negative integers"),
    "offsets_object": (offs({"0": 1}), r'"data_offsets" \(arrays\)'),
    "no_dtype": (st_file({"a": {"shape": [1], "data_offsets": [0, 1]}}, X), r'needs "dtype"'),
    "entry_not_object": (st_file({"a": 5}), r'entry of tensor "a" is not a JSON object'),
    # __metadata__
    "metadata_list": (st_file({"__metadata__": ["k", "v"], "a": u8(0, 1)}, X),
                      r"__metadata__ is not a JSON object"),
    "metadata_string": (st_file({"__metadata__": "kv", "a": u8(0, 1)}, X),
                        r"__metadata__ is not a JSON object"),
    "metadata_int_value": (st_file({"__metadata__": {"k": 1}, "a": u8(0, 1)}, X),
                           r'__metadata__ value of "k" is not a string'),
    "metadata_null_value": (st_file({"__metadata__": {"k": None}, "a": u8(0, 1)}, X),
                            r'__metadata__ value of "k" is not a string'),
    "metadata_dict_value": (st_file({"__metadata__": {"k": {"x": "y"}}, "a": u8(0, 1)}, X),
                            r'__metadata__ value of "k" is not a string'),
    # the data's length: tensors must cover it exactly
    "trailing_garbage": (st_file({"a": u8(0, 1)}, X + b"GARBAGE"),
                         r"tensors end at byte 1 of the data but the data has 8 bytes"),
    "data_without_tensors": (st_file({}, X), r"tensors end at byte 0 .* has 1 bytes"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_file_is_refused_everywhere(tmp_path, no_leaks, name):
    data, match = HOSTILE[name]
    fds = fd_count()
    refused_everywhere(tmp_path / name, data, match)
    assert fd_count() == fds


def test_trailing_garbage_refused_as_the_reference_does(tmp_path):
    """Both dlpx and safetensors refuse a file longer than its header says
    (the reference: "incomplete metadata, file not fully covered"); a
    reader cannot tell garbage from a tensor its header lost."""
    good = dlpx.save(small_dict())
    for extra in (b"\0", b" ", b"x" * 7, good):
        refused_everywhere(tmp_path / "t", good + extra,
                           r"tensors end at byte \d+ of the data but the data has \d+ bytes")


def test_out_of_order_offsets_are_accepted_as_the_reference_does(tmp_path, no_leaks):
    """The header's order of entries is not the data order: both dlpx and
    the reference sort the entries by offset, and accept the file if they
    cover the data."""
    data = bytes(range(7))
    raw = st_file({"__metadata__": {"k": "v"},
                   "c": u8(5, 7), "a": u8(0, 2), "b": entry("U16", [1, 1], [3, 5]),
                   "z": u8(2, 3), "empty": u8(3, 3)}, data)
    p = write(tmp_path / "ooo.safetensors", raw)
    want = {"a": np.array([0, 1], np.uint8), "z": np.array([2], np.uint8),
            "empty": np.zeros(0, np.uint8), "b": np.array([[0x0403]], np.uint16),
            "c": np.array([5, 6], np.uint8)}
    for mode in MODES:
        assert_same(dlpx.load_file(p, mode=mode, framework="numpy"), want)
        with dlpx.safe_open(p, framework="numpy", mode=mode) as f:
            assert f.keys() == sorted(want)
            assert f.offset_keys()[0] == "a" and f.offset_keys()[-1] == "c"
            assert f.metadata() == {"k": "v"}
            assert_same({k: f.get_tensor(k) for k in f.keys()}, want)
    assert_same(dlpx.load(raw, framework="numpy"), want)
    if ref is not None:
        assert_same(ref.load(raw), want)
        assert_same(ref.load_file(p), want)


def test_metadata_null_is_accepted_as_the_reference_does(tmp_path, no_leaks):
    raw = st_file({"__metadata__": None, "a": u8(0, 1)}, X)
    p = write(tmp_path / "m", raw)
    load_every_way(p)
    with dlpx.safe_open(p) as f:
        assert f.metadata() is None
    if ref is not None:
        ref.load(raw)


def test_stricter_than_the_reference(tmp_path, no_leaks):
    """Where dlpx refuses what safetensors 0.8 lets through, on purpose:
    a header starting with whitespace (the format says it MUST start with
    '{'; the reference has that check commented out), duplicate names (the
    reference keeps the last silently: an ambiguous file) and names holding
    a NUL (files.h: C strings cannot carry them)."""
    one = b'{"dtype":"U8","shape":[1],"data_offsets":[0,1]}'
    cases = [(st_file(b' {"a":' + one + b"}", X), r"does not start with '\{'"),
             (st_file(b'{"a":' + one + b',"a":' + one + b"}", X), r"duplicate object key"),
             (st_file(b'{"a\\u0000b":' + one + b"}", X), r"NUL byte in object key")]
    for raw, match in cases:
        p = write(tmp_path / "s", raw)
        for mode in MODES:
            with pytest.raises(ValueError, match=match):
                dlpx.load_file(p, mode=mode)
        with pytest.raises(ValueError, match=match):
            dlpx.load(raw)
        if ref is not None:
            ref.load(raw)  # accepted there


@pytest.fixture(scope="module")
def valid_file_bytes():
    """A small valid file with checksums, metadata and an empty tensor."""
    rng = np.random.default_rng(3)
    d = {"w": rng.standard_normal((4, 3)).astype(np.float32),
         "b": np.arange(6, dtype=np.int16).reshape(2, 3),
         "e": np.zeros((0, 2), np.float64),
         "m": np.array([True, False, True])}
    return dlpx.save(d, metadata={"format": "pt", "k": "v"}), d


def test_truncated_at_every_byte(tmp_path, valid_file_bytes, no_leaks):
    """Every prefix of a valid file is refused, with the message of where
    it was cut: inside the length, inside the header, inside the data."""
    good, want = valid_file_bytes
    n = int.from_bytes(good[:8], "little")
    p = str(tmp_path / "cut")
    assert_same(dlpx.load(good, framework="numpy"), want)
    fds = fd_count()
    classes = set()
    for cut in range(len(good)):
        if cut < 8:
            match, cls = r"too short", "length"
        elif cut < 8 + n:
            match, cls = r"header length \d+ runs past the end", "header"
        else:
            match, cls = r"the data has \d+ bytes \(the file is truncated\)", "data"
        classes.add(cls)
        data = good[:cut]
        write(p, data)
        for mode in MODES:
            with pytest.raises(ValueError, match=match):
                dlpx.load_file(p, mode=mode)
        with pytest.raises(ValueError, match=match):
            dlpx.safe_open(p, mode="pread")
        with pytest.raises(ValueError, match=match):
            dlpx.load(data)
        if ref is not None:
            with pytest.raises(Exception):
                ref.load(data)
    assert classes == {"length", "header", "data"}
    assert fd_count() == fds


_MUTATION = st.tuples(
    st.sampled_from(["set", "insert", "delete"]),
    st.integers(0, 1 << 16),
    st.one_of(st.integers(0, 255), st.sampled_from(list(b'{}[]",:-.0123456789 e\0\xff'))))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(mutations=st.lists(_MUTATION, min_size=1, max_size=4),
       cut=st.one_of(st.none(), st.integers(0, 1 << 16)),
       length=st.one_of(st.none(), st.integers(0, 600)))
def test_random_mutations_load_or_raise(tmp_path, gc_baseline, valid_file_bytes, mutations, cut,
                                       length):
    """Random byte mutations of a valid file (set, insert, delete bytes;
    cut it; rewrite its header length) either load or raise ValueError or
    OSError from every entry point, and never leak a tensor, a storage or
    a descriptor.  (safe_open in direct mode is left out: it reads as
    load_file does, and O_DIRECT reads of a file just rewritten wait for
    its write-back.)"""
    good, _ = valid_file_bytes
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
    if length is not None and len(b) >= 8:
        b[:8] = struct.pack("<Q", length)
    data = bytes(b)
    p = write(tmp_path / "mutant", data)
    gc.collect()
    before, fds = live(), fd_count()
    for mode in MODES:
        try:
            dlpx.load_file(p, mode=mode)
        except (ValueError, OSError):
            pass
        if mode == "direct":
            continue
        try:
            with dlpx.safe_open(p, mode=mode) as f:
                for k in f.keys():
                    f.get_tensor(k)
                    sl = f.get_slice(k)
                    if sl.get_shape():
                        sl[:1]
        except (ValueError, OSError):
            pass
    try:
        dlpx.load(data)
    except ValueError:
        pass
    gc.collect()
    assert live() == before
    assert fd_count() == fds


# ---- 2. files that shrink -------------------------------------------------------------


@pytest.fixture
def two_tensor_file(tmp_path):
    rng = np.random.default_rng(5)
    d = {"a": rng.standard_normal(MiB // 4).astype(np.float32),    # 1 MiB, first in the file
         "b": rng.integers(0, 1 << 30, MiB // 8, dtype=np.int64)}  # 1 MiB, after it
    p = str(tmp_path / "shrink.safetensors")
    dlpx.save_file(d, p, checksum=True)
    with dlpx.safe_open(p) as f:
        first = f.offset_keys()[0]
    return p, d, first


@pytest.mark.parametrize("mode", ["pread", "direct"])
def test_read_after_truncation_is_oserror(two_tensor_file, no_leaks, mode):
    p, d, first = two_tensor_file
    second = ({"a", "b"} - {first}).pop()
    size = os.path.getsize(p)
    with dlpx.safe_open(p, framework="numpy", mode=mode) as f:
        os.truncate(p, size - 4096)  # the second tensor loses its last bytes
        assert np.array_equal(f.get_tensor(first), d[first])  # still all there
        with pytest.raises(OSError, match=r"shrank after it was opened"):
            f.get_tensor(second)
        with pytest.raises(OSError, match=r"shrank"):
            f.get_slice(second)[:]
        os.truncate(p, 0)
        with pytest.raises(OSError, match=r"shrank after it was opened"):
            f.get_tensor(first)
    write(p, b"")
    with pytest.raises(ValueError, match="too short"):
        dlpx.load_file(p, mode=mode)


def test_map_after_truncation_is_oserror(two_tensor_file, no_leaks):
    """mmap mode checks the file's size before each mapping: a file that
    shrank since it was opened is refused rather than mapped (its lost
    pages would raise SIGBUS).  A file truncated while already mapped can
    still SIGBUS on access: dlpx cannot prevent that (see the subprocess
    test below); pread never SIGBUSes, so use mode="pread" for files that
    others may truncate."""
    p, d, first = two_tensor_file
    with dlpx.safe_open(p, framework="numpy") as f:
        kept = f.get_tensor(first)  # mapped before the truncation
        os.truncate(p, os.path.getsize(p) - 1)
        for k in ("a", "b"):
            with pytest.raises(OSError, match=r"shrank from \d+ to \d+ bytes .*\(SIGBUS\)"):
                f.get_tensor(k)
        with pytest.raises(OSError, match=r"shrank"):
            f.get_slice(first)[::7]  # short runs are copied from the mapping: refused too
        del kept  # never touched after the truncation


def test_touching_a_mapping_of_a_truncated_file_raises_sigbus(tmp_path):
    """The documented hazard of mmap mode, in a subprocess: map, truncate,
    touch -> SIGBUS.  The parent is never at risk."""
    p = str(tmp_path / "sigbus.safetensors")
    dlpx.save_file({"a": np.ones(4 * MiB // 4, np.float32)}, p)
    r = run_child("""
        import os, sys
        import numpy as np
        import dlpx
        p = sys.argv[1]
        a = dlpx.load_file(p, mode="mmap", framework="numpy")["a"]
        os.truncate(p, 0)
        print("mapped and truncated", flush=True)
        print(float(a.sum()))
        print("survived", flush=True)
        """, p)
    assert "mapped and truncated" in r.stdout, r.stderr
    assert "survived" not in r.stdout
    assert r.returncode == -signal.SIGBUS, (r.returncode, r.stderr)


# ---- 3. killed savers, saving over mapped files ---------------------------------------------

DICTS = """
import numpy as np
def make_dicts():
    r = np.random.default_rng(11)
    A = {"w": r.standard_normal((512, 512)).astype(np.float32),            # 1 MiB
         "h": r.standard_normal((512, 512)).astype(np.float16),            # 0.5 MiB
         "i": r.integers(-2**62, 2**62, 64 * 1024, dtype=np.int64),        # 0.5 MiB
         "u": r.integers(0, 256, (1024, 1024), dtype=np.uint8)}            # 1 MiB
    r = np.random.default_rng(12)
    B = {"w": r.standard_normal((256, 1024)).astype(np.float32),           # 1 MiB
         "x": r.integers(-2**31, 2**31, 300_000, dtype=np.int32),          # 1.1 MiB
         "m": r.integers(0, 2, 1 << 20).astype(bool),                      # 1 MiB
         "z": np.zeros((0, 4), np.float64)}
    return A, B
"""

# A zygote: a python -c child that imports dlpx once and forks a saver per
# trial (starting an interpreter per trial would take most of the time).
ZYGOTE = DICTS + """
import os, sys
import dlpx
A, B = make_dicts()
path = sys.argv[1]
for line in sys.stdin:
    if line.strip() == "quit":
        break
    k = int(line)
    pid = os.fork()
    if pid == 0:
        try:
            while True:
                dlpx.save_file((A, B)[k], path, checksum=True)
                k ^= 1
        finally:
            os._exit(3)
    print(pid, flush=True)
    print(os.waitpid(pid, 0)[1], flush=True)
"""


def test_killed_saves_leave_the_old_file_or_the_new_one(tmp_path):
    """At least 200 savers SIGKILLed at a random moment (seeded): the file
    at the path, when there is one, is exactly dict A or dict B, verified
    by its checksums and readable by the reference; the temporary files
    killed saves leave are removed by the next save that succeeds."""
    ns = {}
    exec(DICTS, ns)
    A, B = ns["make_dicts"]()
    path = str(tmp_path / "ckpt.safetensors")
    rnd = random.Random(20240611)
    trials, mid_save, states = 200, 0, {"A": 0, "B": 0, "none": 0}
    z = subprocess.Popen([sys.executable, "-c", ZYGOTE, path], env=child_env(), text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    t0 = time.monotonic()
    try:
        for trial in range(trials):
            before = set(tmp_files(tmp_path, "ckpt.safetensors"))
            z.stdin.write(f"{rnd.randrange(2)}\n")
            z.stdin.flush()
            line = z.stdout.readline()
            assert line, "the zygote died (its stderr is above)"
            pid = int(line)
            time.sleep(rnd.uniform(0, 0.050))
            os.kill(pid, signal.SIGKILL)
            status = int(z.stdout.readline())
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
                f"trial {trial}: the saver ended by itself (status {status:#x})"
            left = set(tmp_files(tmp_path, "ckpt.safetensors"))
            if left - before:
                mid_save += 1
            if not os.path.exists(path):
                states["none"] += 1
                continue
            got = dlpx.load_file(path, mode="pread", verify=True, framework="numpy")
            which = "A" if sorted(got) == sorted(A) else "B"
            assert_same(got, A if which == "A" else B)
            states[which] += 1
            if ref is not None:
                assert_same(ref.load_file(path), A if which == "A" else B)
    finally:
        if z.poll() is None:
            z.stdin.write("quit\n")
            z.stdin.close()
            z.wait(10)
    elapsed = time.monotonic() - t0
    print(f"\n{trials} killed saves in {elapsed:.1f} s: {mid_save} killed mid-save, "
          f"found {states}")
    assert mid_save >= 10, f"only {mid_save} of {trials} kills landed in a save"
    assert states["A"] and states["B"]
    # One more save that succeeds: no stray temporary files remain.
    dlpx.save_file(A, path)
    assert tmp_files(tmp_path, "ckpt.safetensors") == []
    assert_same(dlpx.load_file(path, verify=True, framework="numpy"), A)


def test_stale_temp_files_rule(tmp_path, no_leaks):
    """What a successful save removes (files.h, dlpx_save_file): siblings
    ".<name>.tmp-XXXXXX" (exactly 6 of mkostemp's characters), regular,
    unlocked, last written before the save began.  A save in progress holds
    an flock on its file; nothing else is touched."""
    name = "m.safetensors"
    p = str(tmp_path / name)
    stale = [f".{name}.tmp-abcXYZ", f".{name}.tmp-012345"]
    kept = [f".{name}.tmp-abc", f".{name}.tmp-abcdefg", f".{name}.tmp-ab_def",
            f".{name}.tmp-abc.de", f".other.safetensors.tmp-abcdef", f"{name}.tmp-abcdef",
            f".{name}.tmp-future", f".{name}.tmp-locked"]
    for n in stale + kept:
        write(tmp_path / n, b"partial")
    os.mkdir(tmp_path / f".{name}.tmp-adirec")           # not a regular file
    os.symlink(p, tmp_path / f".{name}.tmp-symlnk")      # nor a link
    future = time.time() + 3600                          # written after the save began
    os.utime(tmp_path / f".{name}.tmp-future", (future, future))
    locked = open(tmp_path / f".{name}.tmp-locked", "rb")  # a save in progress
    fcntl.flock(locked, fcntl.LOCK_EX)
    time.sleep(0.05)  # past the file system's timestamp granularity
    try:
        dlpx.save_file(small_dict(), p, fsync=False)
        left = set(os.listdir(tmp_path))
        assert not left & set(stale)
        assert set(kept) | {name, f".{name}.tmp-adirec", f".{name}.tmp-symlnk"} == left
        assert_same(dlpx.load_file(p, framework="numpy"), small_dict())
        dlpx.save_file(small_dict(), str(tmp_path / "other.safetensors"))  # its own only
        assert f".{name}.tmp-locked" in os.listdir(tmp_path)
    finally:
        locked.close()
    time.sleep(0.05)
    dlpx.save_file(small_dict(), p)  # the lock is gone: that save died
    assert f".{name}.tmp-locked" not in os.listdir(tmp_path)
    assert f".{name}.tmp-future" in os.listdir(tmp_path)
    # A refused save leaves the old file (write errors: test_a_save_failing_mid_write_cleans_up).
    with pytest.raises(TypeError, match="complex128"):
        dlpx.save_file({"c": np.zeros(2, np.complex128)}, p)
    assert_same(dlpx.load_file(p, framework="numpy"), small_dict())


def test_saving_over_a_mapped_file_keeps_the_old_tensors(tmp_path, no_leaks):
    ns = {}
    exec(DICTS, ns)
    A, B = ns["make_dicts"]()
    p = str(tmp_path / "over.safetensors")
    dlpx.save_file(A, p)
    old = dlpx.load_file(p, mode="mmap", framework="numpy")
    try:
        import torch  # noqa: F401
        old_t = dlpx.load_file(p, mode="mmap", framework="torch")  # copy-on-write views
    except ImportError:  # pragma: no cover
        old_t = {}
    f = dlpx.safe_open(p, framework="numpy")
    dlpx.save_file(B, p)  # renamed over the mapped file
    assert_same(old, A)
    if old_t:
        assert_same({k: v.numpy() for k, v in old_t.items()}, A)
    assert_same({k: f.get_tensor(k) for k in f.keys()}, A)  # the file it opened
    f.close()
    assert_same(dlpx.load_file(p, mode="mmap", framework="numpy"), B)
    dlpx.save_file(A, p)
    assert_same(old, A)
    del old, old_t


# ---- 4. memory and descriptors ------------------------------------------------------------


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    """A 64 MiB file of 4 tensors with checksums."""
    rng = np.random.default_rng(9)
    d = {f"t{i}": rng.integers(0, 1 << 31, 4 * MiB, dtype=np.int32) for i in range(4)}
    p = str(tmp_path_factory.mktemp("big") / "big.safetensors")
    dlpx.save_file(d, p, checksum=True, fsync=False)
    return p, d


def test_pread_loads_give_their_memory_back(big_file, no_leaks):
    p, d = big_file
    size = os.path.getsize(p)
    out = dlpx.load_file(p, mode="pread", framework="numpy")
    assert_same(out, d)
    del out
    gc.collect()
    before, rss0 = live(), proc_status("VmRSS")
    for _ in range(20):
        out = dlpx.load_file(p, mode="pread")
        del out
    gc.collect()
    assert live() == before
    grown = proc_status("VmRSS") - rss0
    assert grown <= size + 8 * MiB, f"RSS grew by {grown / MiB:.1f} MiB over 20 loads"


@pytest.mark.parametrize("framework", ["dlpx", pytest.param("numpy", marks=needs_versioned_numpy),
                                       "torch"])
def test_mapping_lives_exactly_as_long_as_its_tensors(tmp_path, no_leaks, framework):
    if framework == "torch":
        pytest.importorskip("torch")
    p = str(tmp_path / f"map-{framework}.safetensors")
    dlpx.save_file(small_dict(), p)
    assert not mapped(p)
    out = dlpx.load_file(p, mode="mmap", framework=framework)
    assert mapped(p)
    keep = out["w"]
    del out
    gc.collect()
    assert mapped(p)  # one tensor holds it
    del keep
    gc.collect()
    assert not mapped(p)
    f = dlpx.safe_open(p, framework=framework)
    t = f.get_tensor("b")
    u = f.get_tensor("w")
    f.close()
    gc.collect()
    assert mapped(p)  # closed file, live tensors
    del t
    gc.collect()
    assert mapped(p)
    del u
    gc.collect()
    assert not mapped(p)
    with dlpx.safe_open(p) as f:  # a file opened and closed maps nothing
        f.keys()
    assert not mapped(p)


def test_pread_peak_memory_is_bounded(big_file):
    """The peak RSS of a pread load, in a fresh process: the tensors plus a
    bounded staging (VmHWM, reset just before the load)."""
    p, _ = big_file
    size = os.path.getsize(p)
    r = run_child("""
        import gc, json, sys
        import dlpx
        def status(field):
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) * 1024
        res = {}
        for mode in ("pread", "direct"):
            gc.collect()
            base = status("VmRSS")
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # resets VmHWM to the current RSS
            except OSError:
                pass  # then VmHWM only overstates the peak
            out = dlpx.load_file(sys.argv[1], mode=mode)
            res[mode] = status("VmHWM") - base
            del out
        print(json.dumps(res))
        """, p)
    assert r.returncode == 0, r.stderr
    peaks = json.loads(r.stdout.splitlines()[-1])
    for mode, peak in peaks.items():
        assert peak <= size + 64 * MiB, f"{mode}: peak {peak / MiB:.1f} MiB for a " \
                                        f"{size / MiB:.1f} MiB file"


def test_no_descriptor_leaks(tmp_path, big_file, no_leaks):
    p = str(tmp_path / "fd.safetensors")
    dlpx.save_file(small_dict(), p)
    hostile = [write(tmp_path / f"h{i}", data)
               for i, (data, _) in enumerate(list(HOSTILE.values())[::5])]
    a = np.zeros(16)
    fds = fd_count()
    for _ in range(10):
        for mode in MODES:
            dlpx.load_file(p, mode=mode)
            with dlpx.safe_open(p, mode=mode) as f:
                f.get_tensor("w")
                f.get_slice("w")[:, 1]
            dlpx.safe_open(p, mode=mode)  # never closed: the collector closes it
            for h in hostile:
                with pytest.raises(ValueError):
                    dlpx.load_file(h, mode=mode)
        with pytest.raises(FileNotFoundError):
            dlpx.load_file(str(tmp_path / "missing"))
        with pytest.raises(IsADirectoryError):
            dlpx.load_file(str(tmp_path))
        dlpx.load_into(p, {k: np.empty_like(v) for k, v in small_dict().items()})
        dlpx.save_file(small_dict(), p)
        with pytest.raises(FileNotFoundError):
            dlpx.save_file(small_dict(), str(tmp_path / "no" / "dir" / "x.safetensors"))
        with pytest.raises(ValueError, match="share memory"):  # EOVERLAP
            dlpx.save_file({"a": a, "b": a[2:]}, p)
        with pytest.raises(TypeError, match="no dtype complex128"):  # EDTYPE
            dlpx.save_file({"c": np.zeros(3, np.complex128)}, p)
        with pytest.raises(IsADirectoryError):
            dlpx.save_file(small_dict(), str(tmp_path))
    dlpx.load_file(big_file[0], mode="pread", threads=4, chunk_size=MiB)
    gc.collect()
    assert fd_count() == fds
    assert tmp_files(tmp_path, "fd.safetensors") == []


def test_a_save_failing_mid_write_cleans_up(tmp_path):
    """A write error after the temporary file exists (here EFBIG from
    RLIMIT_FSIZE, in a subprocess): OSError, the old file intact, no
    temporary file, no descriptor left open."""
    p = str(tmp_path / "efbig.safetensors")
    r = run_child("""
        import json, os, resource, signal, sys
        import numpy as np
        import dlpx
        p = sys.argv[1]
        dlpx.save_file({"small": np.arange(10)}, p)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
        fds = len(os.listdir("/proc/self/fd"))
        errors = []
        for _ in range(5):
            try:
                dlpx.save_file({"big": np.zeros(4 << 20, np.uint8)}, p)
            except OSError as e:
                errors.append(str(e))
        print(json.dumps({"errors": errors, "fds": len(os.listdir("/proc/self/fd")) - fds,
                          "small": dlpx.load_file(p, framework="numpy")["small"].tolist(),
                          "dir": sorted(os.listdir(os.path.dirname(p)))}))
        """, p)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.splitlines()[-1])
    assert len(got["errors"]) == 5 and all("File too large" in e for e in got["errors"]), got
    assert got["fds"] == 0
    assert got["small"] == list(range(10))
    assert got["dir"] == ["efbig.safetensors"]


# ---- 5. threads ------------------------------------------------------------------------------


@pytest.mark.parametrize("verify,chunk_size", [(None, None), (False, 64 * 1024)])
def test_threads_loading_one_file_at_once(tmp_path, no_leaks, verify, chunk_size):
    rng = np.random.default_rng(4)
    d = {f"t{i}": rng.standard_normal(MiB // 2 + 1000 * i).astype(np.float32)
         for i in range(8)}                                      # ~16 MiB in 8 tensors
    d["i8"] = rng.integers(-128, 128, (333, 777), dtype=np.int8)
    p = str(tmp_path / "threads.safetensors")
    dlpx.save_file(d, p)
    barrier = threading.Barrier(8)
    errors = []

    def worker():
        try:
            barrier.wait()
            for _ in range(3):
                assert_same(dlpx.load_file(p, mode="pread", threads=2, verify=verify,
                                           chunk_size=chunk_size, framework="numpy"), d)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[0]
