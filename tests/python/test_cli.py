"""The dlpx command: ls, verify, convert and bench, through ``python -m
dlpx`` in a subprocess (as users run it) and through main() in-process;
--json output, exit codes, and hostile input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import dlpx
from dlpx import _cli

try:
    import torch
except ImportError:  # the torch parts skip; the rest runs on every Python
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs PyTorch")


def run(*args, check_rc=None):
    p = subprocess.run([sys.executable, "-m", "dlpx", *map(str, args)], capture_output=True,
                       text=True, env=os.environ.copy(), timeout=300)
    if check_rc is not None:
        assert p.returncode == check_rc, (p.returncode, p.stdout, p.stderr)
    return p


@pytest.fixture
def sample(tmp_path):
    tensors = {"w": np.arange(12, dtype=np.float32).reshape(3, 4),
               "b": np.ones(5, np.int64), "s": np.array(2.5)}
    path = tmp_path / "m.safetensors"
    dlpx.save_file(tensors, path, {"format": "pt", "note": "héllo"})
    return path, tensors


def test_ls_text_and_json(sample):
    path, tensors = sample
    p = run("ls", path, check_rc=0)
    for name in tensors:
        assert name in p.stdout
    assert "F32" in p.stdout and "[3, 4]" in p.stdout and "note = héllo" in p.stdout
    doc = json.loads(run("ls", path, "--json", check_rc=0).stdout)
    got = {t["name"]: t for t in doc["tensors"]}
    assert got["w"]["dtype"] == "F32" and got["w"]["shape"] == [3, 4] and got["w"]["nbytes"] == 48
    assert got["s"]["shape"] == []
    assert doc["metadata"] == {"format": "pt", "note": "héllo"}  # dlpx.* keys hidden
    assert doc["checksums"] is True


def test_verify_ok_mismatch_and_no_checksums(sample, tmp_path):
    path, _ = sample
    p = run("verify", path, check_rc=_cli.EXIT_OK)
    assert "OK" in p.stdout
    doc = json.loads(run("verify", path, "--json", check_rc=0).stdout)
    assert doc["ok"] and doc["mismatched"] == [] and doc["tensors"] == 3
    # flip one byte of tensor "b"'s data
    with dlpx.safe_open(path) as f:
        pass
    data = bytearray(path.read_bytes())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    b0 = header["b"]["data_offsets"][0]
    data[8 + n + b0] ^= 0xFF
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    p = run("verify", bad, check_rc=_cli.EXIT_MISMATCH)
    assert "'b'" in p.stderr or '"b"' in p.stderr
    doc = json.loads(run("verify", bad, "--json", check_rc=_cli.EXIT_MISMATCH).stdout)
    assert [m["name"] for m in doc["mismatched"]] == ["b"] and not doc["ok"]
    plain = tmp_path / "plain.safetensors"
    dlpx.save_file({"x": np.zeros(3)}, plain, checksum=False)
    run("verify", plain, check_rc=_cli.EXIT_NO_CHECKSUMS)


@pytest.mark.parametrize("content", [b"", b"\x01", b"\xff" * 8 + b"{}", b"\x02\0\0\0\0\0\0\0{x"])
def test_bad_input_exit_code(tmp_path, content):
    f = tmp_path / "bad.safetensors"
    f.write_bytes(content)
    for cmd in ("ls", "verify", "bench"):
        p = run(cmd, f, check_rc=_cli.EXIT_BAD_INPUT)
        assert "Traceback" not in p.stderr and p.stderr.strip()
    doc = json.loads(run("ls", f, "--json", check_rc=_cli.EXIT_BAD_INPUT).stdout)
    assert doc["type"] == "ValueError" and doc["error"]


def test_missing_file_and_usage(tmp_path):
    p = run("ls", tmp_path / "nope.safetensors", check_rc=_cli.EXIT_BAD_INPUT)
    assert "No such file" in p.stderr
    run(check_rc=_cli.EXIT_USAGE)
    run("frobnicate", check_rc=_cli.EXIT_USAGE)
    run("convert", "only-one-arg", check_rc=_cli.EXIT_USAGE)
    assert _cli.main(["bench", str(tmp_path), "--repeat", "0"]) == _cli.EXIT_USAGE


def make_net():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 8)
            self.norm = torch.nn.LayerNorm(8)
            self.head = torch.nn.Linear(8, 10, bias=False)
            self.head.weight = self.emb.weight  # tied
            self.register_buffer("scale", torch.tensor([2.0]))

        def forward(self, x):
            return self.head(self.norm(self.emb(x))) * self.scale

    return Net()


@needs_torch
@pytest.mark.parametrize("tied", ["copy", "once"])
def test_convert_torch_state_dict(tmp_path, tied):
    torch.manual_seed(0)
    net = make_net()
    src = tmp_path / "model.pt"
    torch.save(net.state_dict(), src)
    out = tmp_path / "model.safetensors"
    doc = json.loads(run("convert", src, out, "--tied", tied, "--json", check_rc=0).stdout)
    assert doc["checksums"] and doc["tensors"] == len(net.state_dict())
    run("verify", out, check_rc=0)
    fresh = make_net()
    dlpx.load_into(out, fresh)
    x = torch.arange(10)
    assert torch.equal(fresh(x), net(x))
    if tied == "copy":  # every name stored: the reference reader sees them all
        import safetensors.torch as st
        assert set(st.load_file(out)) == set(net.state_dict())


@needs_torch
def test_convert_tied_error(tmp_path):
    net = make_net()
    src = tmp_path / "model.pt"
    torch.save(net.state_dict(), src)
    p = run("convert", src, tmp_path / "o.safetensors", "--tied", "error",
            check_rc=_cli.EXIT_BAD_INPUT)
    assert "emb.weight" in p.stderr and "head.weight" in p.stderr
    assert not (tmp_path / "o.safetensors").exists()
    assert [f for f in os.listdir(tmp_path) if "tmp" in f] == []


def test_convert_npz_and_safetensors(tmp_path):
    a = {"x": np.arange(6, dtype=np.int16).reshape(2, 3), "y": np.float64(3.0) * np.ones(2)}
    np.savez(tmp_path / "a.npz", **a)
    run("convert", tmp_path / "a.npz", tmp_path / "a.safetensors", check_rc=0)
    got = dlpx.load_file(tmp_path / "a.safetensors", framework="np")
    for k in a:
        np.testing.assert_array_equal(got[k], a[k])
    # safetensors -> safetensors adds checksums and keeps the metadata
    import safetensors.numpy as sn
    sn.save_file(a, tmp_path / "ref.safetensors", {"k": "v"})
    run("convert", tmp_path / "ref.safetensors", tmp_path / "b.safetensors", check_rc=0)
    run("verify", tmp_path / "b.safetensors", check_rc=0)
    with dlpx.safe_open(tmp_path / "b.safetensors") as f:
        assert f.metadata() == {"k": "v"}
    p = run("convert", tmp_path / "b.safetensors", tmp_path / "b.safetensors",
            check_rc=_cli.EXIT_BAD_INPUT)
    assert "replace the input" in p.stderr
    run("convert", tmp_path / "a.txt", tmp_path / "c.safetensors", check_rc=_cli.EXIT_BAD_INPUT)


@needs_torch
def test_convert_refuses_pickles_with_code(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    src = tmp_path / "evil.pt"
    with open(src, "wb") as f:
        pickle.dump({"w": Evil()}, f)
    p = run("convert", src, tmp_path / "o.safetensors")
    assert p.returncode != 0 and "pwned" not in p.stdout


def test_bench_json(sample):
    path, _ = sample
    doc = json.loads(run("bench", path, "--repeat", "1", "--json", check_rc=0).stdout)
    methods = [r["method"] for r in doc["results"]]
    assert methods[0].startswith("plain read")
    for want in ("mmap", "pread", "verified", "direct", "into"):
        assert any(want in m for m in methods), methods
    assert all(r["seconds"] > 0 for r in doc["results"])


def test_installed_console_script_entry_point():
    from importlib.metadata import entry_points
    eps = entry_points()
    scripts = eps.select(group="console_scripts") if hasattr(eps, "select") else \
        eps.get("console_scripts", [])
    found = [e for e in scripts if e.name == "dlpx"]
    if not found:
        pytest.skip("dlpx is not installed as a distribution here (source tree)")
    assert found[0].value == "dlpx._cli:main"
