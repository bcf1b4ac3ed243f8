"""Tensor files in S3, against moto's standalone server (servers.MotoServer):
get, ranged get (get_slice), save_file as one PUT and as a multipart upload
(whole or not at all, no parts left behind), byte-for-byte equal to the
reference's serialization; listing, stat, delete, copy both ways with
progress; the configuration from the environment, options and a shared
credentials file; 403 with wrong credentials (a moto that checks
signatures); 404 for missing keys and buckets; corrupted objects; the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dlpx
import servers
from servers import (NUMPY_DTYPES, assert_same_tensors, every_dtype_file, random_raw, raw_bytes,
                     same, st_bytes)

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


def local_file(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def big_dict(nbytes, seed=0, n=3):
    """|n| float32 tensors of about |nbytes| in all."""
    rng = np.random.default_rng(seed)
    each = nbytes // n // 4
    return {f"layer{i}": rng.standard_normal(each).astype(np.float32) for i in range(n)}


# ---- reads -----------------------------------------------------------------------------------


def test_get_every_dtype(no_fd_leaks, s3, tmp_path, no_leaks):
    data = every_dtype_file(seed=21)
    p = local_file(tmp_path, "a.safetensors", data)
    url = s3.put("models/a.safetensors", data)
    want = local_load(p)
    assert_same_tensors(dlpx.load_file(url, framework="numpy", storage_options=FAST), want)
    with dlpx.safe_open(url, framework="numpy") as f:
        assert f.metadata() == {"format": "pt", "seed": "21"}
        assert_same_tensors({k: f.get_tensor(k) for k in f.keys()}, want)
    want = {k: v for k, v in want.items() if not k.startswith(("t_f4", "t_f6"))}  # packed
    targets = {k: np.zeros_like(v) for k, v in want.items()}
    dlpx.load_into(url, targets, strict=False)
    assert_same_tensors(targets, want)


def test_ranged_get_slice(s3, tmp_path, no_leaks):
    rng = np.random.default_rng(22)
    t = {"a": ("F32", (512, 512), random_raw("F32", (512, 512), rng)),
         "b": ("I16", (300, 7, 5), random_raw("I16", (300, 7, 5), rng))}
    data = st_bytes(t)
    p = local_file(tmp_path, "s.safetensors", data)
    want = local_load(p)
    url = s3.put("s.safetensors", data)
    with dlpx.safe_open(url, framework="numpy", storage_options={"part_size": 64 * KiB}) as f:
        for key in (np.s_[10:20], np.s_[:, 3], np.s_[::7, 100:200], np.s_[511], np.s_[5:5]):
            assert same(f.get_slice("a")[key], want["a"][key]), key
        assert same(f.get_slice("b")[299, 1:3, ::2], want["b"][299, 1:3, ::2])
        assert f.get_slice("b").get_shape() == [300, 7, 5]


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(part_size=st.sampled_from([4 * KiB, 5 * MiB, 8 * MiB]), concurrency=st.integers(1, 8),
       threads=st.sampled_from([1, 2, 4]),
       nbytes=st.sampled_from([0, 1000, 300 * KiB, 6 * MiB + 4]), seed=st.integers(0, 1000))
def test_part_sizes_and_concurrency(s3, tmp_path, part_size, concurrency, threads, nbytes, seed):
    data = every_dtype_file(seed=seed, big=nbytes)
    key = f"h/{seed}-{nbytes}.safetensors"
    url = s3.put(key, data)
    p = local_file(tmp_path, "h.safetensors", data)
    got = dlpx.load_file(url, framework="numpy",
                         storage_options=dict(FAST, part_size=part_size, concurrency=concurrency,
                                              threads=threads))
    assert_same_tensors(got, local_load(p))


# ---- writes ----------------------------------------------------------------------------------


def test_save_file_single_put_equals_the_reference(s3, tmp_path, no_leaks):
    """save_file to s3:// stores exactly what safetensors' own writer makes
    of the same tensors (checksum=False: no dlpx metadata), every dtype
    NumPy and ml_dtypes have."""
    rng = np.random.default_rng(23)
    d = {f"t_{dt.lower()}": (rng.integers(0, 2, (3, 5)).astype(np.bool_) if dt == "BOOL" else
                             rng.integers(0, 100, (3, 5)).astype(NUMPY_DTYPES[dt]))
         for dt in NUMPY_DTYPES}
    d["empty"] = np.zeros((0, 4), np.float32)
    d["scalar"] = np.array(1.5)
    try:
        import ml_dtypes
        for n in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
            d[n] = rng.standard_normal((4, 2)).astype(getattr(ml_dtypes, n))
    except ImportError:
        pass
    meta = {"format": "np"}  # one key: the reference's order of several is a HashMap's
    dlpx.save_file(d, s3.url("ref.safetensors"), meta, checksum=False)
    got = s3.get("ref.safetensors")
    if ref is not None:
        assert got == ref.save(d, meta)
    local = tmp_path / "l.safetensors"
    dlpx.save_file(d, local, meta, checksum=False)
    assert got == local.read_bytes()
    # and with checksums: the same bytes as a local save
    dlpx.save_file(d, s3.url("ck.safetensors"), meta, checksum=True)
    dlpx.save_file(d, local, meta, checksum=True)
    assert s3.get("ck.safetensors") == local.read_bytes()
    assert_same_tensors(dlpx.load_file(s3.url("ck.safetensors"), framework="numpy"), d)
    assert s3.uploads() == []


def test_multipart_upload_is_whole(no_fd_leaks, s3, tmp_path, no_leaks):
    d = big_dict(13 * MiB, seed=24)
    url = s3.url("big/model.safetensors")
    dlpx.save_file(d, url, {"k": "v"},
                   storage_options={"part_size": 5 * MiB, "concurrency": 3})
    local = tmp_path / "l.safetensors"
    dlpx.save_file(d, local, {"k": "v"})
    assert s3.get("big/model.safetensors") == local.read_bytes()
    etag = s3.client.head_object(Bucket=s3.bucket, Key="big/model.safetensors")["ETag"]
    assert etag.strip('"').endswith("-3"), etag  # three parts of a multipart upload
    assert s3.uploads() == []
    assert_same_tensors(dlpx.load_file(url, framework="numpy",
                                       storage_options={"part_size": 5 * MiB}), d)


def test_part_size_below_the_s3_minimum(s3, tmp_path):
    """S3 wants parts of at least 5 MiB: a smaller part_size is either
    refused (nothing written) or raised to the minimum (the object whole)."""
    d = big_dict(11 * MiB, seed=25)
    try:
        dlpx.save_file(d, s3.url("small-parts.safetensors"),
                       storage_options={"part_size": 1 * MiB})
    except ValueError:
        assert not s3.exists("small-parts.safetensors")
    else:
        local = tmp_path / "l.safetensors"
        dlpx.save_file(d, local)
        assert s3.get("small-parts.safetensors") == local.read_bytes()
    assert s3.uploads() == []


def test_crc32_checksum_uploads(s3, tmp_path):
    d = big_dict(11 * MiB, seed=26)
    local = tmp_path / "l.safetensors"
    dlpx.save_file(d, local)
    for key, part in (("crc-one.safetensors", 16 * MiB), ("crc-multi.safetensors", 5 * MiB)):
        dlpx.save_file(d, s3.url(key), storage_options={"checksum": "crc32", "part_size": part})
        assert s3.get(key) == local.read_bytes(), key
    assert s3.uploads() == []


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(dts=st.lists(st.sampled_from(sorted(NUMPY_DTYPES)), min_size=1, max_size=5),
       shape=st.lists(st.integers(0, 9), max_size=3), seed=st.integers(0, 10_000))
def test_round_trip(s3, dts, shape, seed):
    rng = np.random.default_rng(seed)
    d = {f"x{i}": (rng.integers(0, 2, shape).astype(bool) if dt == "BOOL"
                   else rng.integers(0, 120, shape).astype(NUMPY_DTYPES[dt]))
         for i, dt in enumerate(dts)}
    url = s3.url(f"rt/{seed}.safetensors")
    dlpx.save_file(d, url, checksum=False)
    if ref is not None:
        assert s3.get(f"rt/{seed}.safetensors") == ref.save(d)
    assert_same_tensors(dlpx.load_file(url, framework="numpy"), d)


# ---- list, stat, delete, copy ----------------------------------------------------------------


def test_list_stat_delete(no_fd_leaks, s3):
    for k, n in (("a/1.safetensors", 10), ("a/2.safetensors", 0), ("a/sub/3", 7), ("b/4", 1)):
        s3.put(k, b"z" * n)
    assert sorted(remote.list(s3.url("a/"))) == [("a/1.safetensors", 10), ("a/2.safetensors", 0),
                                                 ("a/sub/3", 7)]
    assert sorted(remote.list(s3.url(""))) == [("a/1.safetensors", 10), ("a/2.safetensors", 0),
                                               ("a/sub/3", 7), ("b/4", 1)]
    assert remote.list(s3.url("nothing/")) == []
    assert remote.stat(s3.url("a/sub/3")) == 7
    assert remote.stat(s3.url("a/2.safetensors")) == 0
    with pytest.raises(FileNotFoundError):
        remote.stat(s3.url("a/none"))
    remote.delete(s3.url("a/1.safetensors"))
    assert not s3.exists("a/1.safetensors")
    remote.delete(s3.url("a/1.safetensors"))  # absent: not an error, as in S3
    with pytest.raises(FileNotFoundError):
        remote.list(s3.url("x/", bucket="no-such-bucket-dlpx"))


def test_list_pages(s3):
    """More keys than one ListObjectsV2 page (1000)."""
    keys = [f"many/{i:05d}" for i in range(1005)]
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda k: s3.client.put_object(Bucket=s3.bucket, Key=k, Body=b"x"), keys))
    got = remote.list(s3.url("many/"))
    assert sorted(got) == [(k, 1) for k in keys]


def test_copy_both_ways_with_progress(no_fd_leaks, s3, tmp_path):
    data = every_dtype_file(seed=27, big=11 * MiB + 3)
    src = local_file(tmp_path, "src.safetensors", data)
    up = []
    remote.copy(src, s3.url("copied.safetensors"), progress=lambda d, t: up.append((d, t)),
                storage_options={"part_size": 5 * MiB})
    assert s3.get("copied.safetensors") == data
    assert up and up[-1] == (len(data), len(data)) and all(t == len(data) for _, t in up)
    assert [d for d, _ in up] == sorted(d for d, _ in up)
    assert s3.uploads() == []
    down = []
    dst = tmp_path / "back.safetensors"
    remote.copy(s3.url("copied.safetensors"), str(dst), progress=lambda d, t: down.append((d, t)),
                storage_options={"part_size": 2 * MiB, "concurrency": 4})
    assert dst.read_bytes() == data
    assert down and down[-1] == (len(data), len(data))
    # a small one: a single PUT
    small = local_file(tmp_path, "small.bin", b"hello")
    remote.copy(small, s3.url("small.bin"))
    assert s3.get("small.bin") == b"hello"
    with pytest.raises(FileNotFoundError):
        remote.copy(s3.url("absent"), str(tmp_path / "absent"))
    assert not (tmp_path / "absent").exists()


def test_copy_progress_cancels(s3, tmp_path):
    data = every_dtype_file(seed=28, big=3 * MiB)
    url = s3.put("cancel.safetensors", data)
    dst = tmp_path / "cancelled"

    def stop(done, total):
        raise RuntimeError("stop here")
    with pytest.raises(Exception):
        remote.copy(url, str(dst), progress=stop, storage_options={"part_size": 1 * MiB})
    assert not dst.exists()


# ---- errors ----------------------------------------------------------------------------------


def test_missing_key_and_bucket(no_fd_leaks, s3, tmp_path, no_leaks):
    for url in (s3.url("no/such/key.safetensors"), s3.url("k", bucket="no-such-bucket-dlpx")):
        with pytest.raises(FileNotFoundError):
            dlpx.load_file(url, storage_options=FAST)
        with pytest.raises(FileNotFoundError):
            dlpx.safe_open(url)
        with pytest.raises(FileNotFoundError):
            remote.stat(url)
        with pytest.raises(FileNotFoundError):
            remote.copy(url, str(tmp_path / "x"))
    with pytest.raises(FileNotFoundError):
        dlpx.save_file({"a": np.arange(3)}, s3.url("k", bucket="no-such-bucket-dlpx"))


def test_corrupted_object_names_the_tensor(s3, tmp_path, no_leaks):
    rng = np.random.default_rng(29)
    d = {"good": rng.standard_normal(10_000).astype(np.float32),
         "broken": rng.standard_normal(10_000).astype(np.float32)}
    p = tmp_path / "c.safetensors"
    dlpx.save_file(d, p, checksum=True)
    url = s3.put("corrupt.safetensors", servers.corrupt(p.read_bytes(), "broken", at=777))
    with pytest.raises(ValueError, match="broken"):
        dlpx.load_file(url)
    with pytest.raises(ValueError, match="broken"):
        dlpx.load_into(url, {k: np.zeros_like(v) for k, v in d.items()})
    with dlpx.safe_open(url, framework="numpy") as f:
        assert same(f.get_tensor("good"), d["good"])
        with pytest.raises(ValueError, match="broken"):
            f.get_tensor("broken")


def test_malformed_object_is_a_valueerror(s3):
    for key, data in (("empty", b""), ("short", b"\x01\x02"),
                      ("bad-json", b"\x05\0\0\0\0\0\0\0{\"a\":"),
                      ("trailing", st_bytes({"a": ("U8", (1,), b"x")}) + b"junk")):
        with pytest.raises(ValueError):
            dlpx.load_file(s3.put(key, data))


# ---- configuration and credentials -----------------------------------------------------------


def test_endpoint_and_credentials_from_options(s3, monkeypatch, tmp_path):
    url = s3.put("opt.safetensors", every_dtype_file(seed=30))
    want = local_load(local_file(tmp_path, "o", every_dtype_file(seed=30)))
    for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
              "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(k, raising=False)
    o = {"endpoint_url": s3.endpoint, "region": "us-east-1", "path_style": True,
         "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    assert_same_tensors(dlpx.load_file(url, framework="numpy", storage_options=o), want)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint)  # the S3-specific variable
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # loses to it
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert_same_tensors(dlpx.load_file(url, framework="numpy"), want)


def test_wrong_credentials_are_permissionerror(no_fd_leaks, s3_auth, tmp_path, no_leaks):
    ak, sk = s3_auth.key
    data = every_dtype_file(seed=31)
    s3_auth.client.put_object(Bucket=s3_auth.bucket, Key="auth.safetensors", Body=data)
    url = s3_auth.url("auth.safetensors")
    want = local_load(local_file(tmp_path, "a", data))
    good = {"aws_access_key_id": ak, "aws_secret_access_key": sk}
    assert_same_tensors(dlpx.load_file(url, framework="numpy", storage_options=good), want)
    for bad in ({"aws_access_key_id": ak, "aws_secret_access_key": "wrong-secret"},
                {"aws_access_key_id": "AKIAWRONGWRONGWRONG0", "aws_secret_access_key": sk}):
        o = dict(FAST, **bad)
        with pytest.raises(PermissionError):
            dlpx.load_file(url, storage_options=o)
        with pytest.raises(PermissionError):
            dlpx.safe_open(url, storage_options=o)
        with pytest.raises(PermissionError):
            remote.stat(url, storage_options=o)
        with pytest.raises(PermissionError):
            remote.list(s3_auth.url(""), storage_options=o)
        with pytest.raises(PermissionError):
            dlpx.save_file({"a": np.arange(3)}, s3_auth.url("denied.safetensors"),
                           storage_options=o)
    assert "Contents" not in s3_auth.client.list_objects_v2(Bucket=s3_auth.bucket,
                                                           Prefix="denied")


def test_credentials_from_env_and_shared_file(s3_auth, monkeypatch, tmp_path):
    ak, sk = s3_auth.key
    data = every_dtype_file(seed=32)
    s3_auth.client.put_object(Bucket=s3_auth.bucket, Key="chain.safetensors", Body=data)
    url = s3_auth.url("chain.safetensors")
    want = local_load(local_file(tmp_path, "c", data))
    # the environment
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ak)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", sk)
    assert_same_tensors(dlpx.load_file(url, framework="numpy"), want)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(PermissionError):
        dlpx.load_file(url, storage_options=FAST)
    # options win over the environment
    assert_same_tensors(dlpx.load_file(url, framework="numpy", storage_options={
        "aws_access_key_id": ak, "aws_secret_access_key": sk}), want)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    # a shared credentials file: the default profile is wrong, "dlpx" is right
    creds = tmp_path / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = {ak}\naws_secret_access_key = nope\n\n"
                     f"[dlpx]\naws_access_key_id = {ak}\naws_secret_access_key = {sk}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    with pytest.raises(PermissionError):
        dlpx.load_file(url, storage_options=FAST)
    assert_same_tensors(dlpx.load_file(url, framework="numpy",
                                       storage_options={"profile": "dlpx"}), want)
    monkeypatch.setenv("AWS_PROFILE", "dlpx")
    assert_same_tensors(dlpx.load_file(url, framework="numpy"), want)


def test_no_credentials_at_all_on_a_checking_server(s3_auth):
    """Unsigned requests to a server that wants signatures: 403."""
    s3_auth.client.put_object(Bucket=s3_auth.bucket, Key="anon", Body=every_dtype_file())
    with pytest.raises(PermissionError):
        dlpx.load_file(s3_auth.url("anon"), storage_options=FAST)


# ---- the CLI ---------------------------------------------------------------------------------


def cli(*args):
    return subprocess.run([sys.executable, "-m", "dlpx", *map(str, args)], capture_output=True,
                          text=True, env=os.environ.copy(), timeout=120)


def test_cli_cp_ls_verify(s3, tmp_path):
    from dlpx import _cli
    d = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(5, np.int64)}
    p = tmp_path / "m.safetensors"
    dlpx.save_file(d, p, {"note": "s3"}, checksum=True)
    url = s3.url("cli/m.safetensors")
    r = cli("cp", p, url)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert s3.get("cli/m.safetensors") == p.read_bytes()
    r = cli("ls", url, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {t["name"] for t in doc["tensors"]} == {"w", "b"} and doc["metadata"] == {"note": "s3"}
    r = cli("verify", url)
    assert r.returncode == _cli.EXIT_OK, (r.stdout, r.stderr)
    s3.put("cli/bad.safetensors", servers.corrupt(p.read_bytes(), "w", at=4))
    r = cli("verify", s3.url("cli/bad.safetensors"))
    assert r.returncode == _cli.EXIT_MISMATCH, (r.stdout, r.stderr)
    back = tmp_path / "back.safetensors"
    r = cli("cp", url, back)
    assert r.returncode == 0, r.stderr
    assert back.read_bytes() == p.read_bytes()
    r = cli("cp", s3.url("cli/absent"), tmp_path / "absent")
    assert r.returncode == _cli.EXIT_BAD_INPUT, (r.stdout, r.stderr)
    assert raw_bytes(dlpx.load_file(str(back), framework="numpy")["w"]) == raw_bytes(d["w"])
