"""dlpx.torch.share_module: a real model (tied weights, buffers, a shared
submodule) rebuilt in workers with its weights mapped zero copy, outputs
identical to the original's, writes isolated."""

import multiprocessing as mp
import os
import pickle
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import dlpx  # noqa: E402
import dlpx.torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import share_workers as W  # noqa: E402


class TinyLM(nn.Module):
    """Embedding tied to the output layer, a transformer block, batch norm
    (running stats and an int64 counter as buffers), a submodule used twice,
    a plain registered buffer and a parameter-free module."""

    def __init__(self, vocab=97, d=32):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.block = nn.TransformerEncoderLayer(d, 4, 64, dropout=0.0, batch_first=True)
        self.norm = nn.BatchNorm1d(d)
        self.mix = nn.Linear(d, d)
        self.twice = nn.ModuleList([self.mix, self.mix])
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.emb.weight
        self.register_buffer("scale", torch.tensor(0.75))
        self.act = nn.GELU()

    def forward(self, ids):
        h = self.block(self.emb(ids))
        h = self.norm(h.transpose(1, 2)).transpose(1, 2)
        for m in self.twice:
            h = self.act(m(h))
        return self.head(h) * self.scale


def model():
    """The original, in the state workers get it: eval mode, requires_grad
    off (PyTorch takes nn.TransformerEncoderLayer's fast path only when no
    parameter requires grad, and its results differ in the last bits from
    the slow path's: with grad on, outputs agree to rounding, not bits)."""
    torch.manual_seed(0)
    m = TinyLM()
    m.train()
    with torch.no_grad():  # non-trivial running stats
        for _ in range(3):
            m(torch.randint(0, 97, (4, 9)))
    return m.eval().requires_grad_(False)


IDS = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(1))


def test_load_in_process_identical_tied_and_mapped():
    m = model()
    with dlpx.torch.share_module(m) as mh:
        got = mh.load()
        with torch.no_grad():
            assert torch.equal(got(IDS), m(IDS))
        assert got.head.weight is got.emb.weight
        assert got.twice[0] is got.twice[1] is got.mix
        assert not got.training
        assert all(not p.requires_grad for p in got.parameters())
        assert got.norm.num_batches_tracked.dtype == torch.int64
        assert int(got.norm.num_batches_tracked) == 3
        names = {n for n, _ in got.named_parameters()}
        assert names == {n for n, _ in m.named_parameters()}
        for p in list(got.parameters()) + list(got.buffers()):
            if p.numel():
                assert W._in_memfd(p.data_ptr())


def test_a_model_with_grad_on_agrees_to_rounding():
    m = model().requires_grad_(True)
    with dlpx.torch.share_module(m) as mh:
        got = mh.load()
        with torch.no_grad():
            torch.testing.assert_close(got(IDS), m(IDS))


def test_skeleton_holds_no_weights():
    m = nn.Sequential(*[nn.Linear(512, 512) for _ in range(4)])  # 4 MiB of weights
    with dlpx.torch.share_module(m) as mh:
        blob = pickle.dumps(mh)
        assert len(blob) < 64 * 1024, len(blob)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_workers_compute_identical_outputs(method):
    m = model()
    with torch.no_grad():
        want = m(IDS)
    ctx = mp.get_context(method)
    with dlpx.torch.share_module(m) as mh, ctx.Pool(2) as pool:
        for y, mapped, grads in pool.starmap(W.load_module, [(mh, IDS)] * 3):
            assert torch.equal(y, want)
            assert mapped and not grads


def test_isolation_in_place_writes_stay_in_the_writer():
    m = model()
    with torch.no_grad():
        want = m(IDS)
    ctx = mp.get_context("spawn")
    with dlpx.torch.share_module(m) as mh, ctx.Pool(2) as pool:
        changed = pool.apply(W.load_write_run, (mh, IDS))
        assert not torch.equal(changed, want)
        y, _, _ = pool.apply(W.load_module, (mh, IDS))
        assert torch.equal(y, want)
        with ctx.Pool(1) as later:
            y, _, _ = later.apply(W.load_module, (mh, IDS))
            assert torch.equal(y, want)
    with torch.no_grad():
        assert torch.equal(m(IDS), want)  # the producer's model too


def test_torch_multiprocessing_leaks_writes_for_comparison():
    """What dlpx's isolation is measured against: share_memory() tensors are
    one writable mapping, so a worker's in-place write reaches everyone."""
    m = nn.Linear(8, 8)
    m.share_memory()
    ctx = torch.multiprocessing.get_context("spawn")
    before = m.weight.detach().clone()
    p = ctx.Process(target=_double, args=(m,))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert torch.equal(m.weight.detach(), before * 2)


def _double(m):
    with torch.no_grad():
        m.weight.mul_(2)


def test_share_module_refuses_bad_input():
    with pytest.raises(TypeError):
        dlpx.torch.share_module({"w": torch.zeros(3)})
    m = nn.Linear(4, 4)
    with torch.no_grad():
        m.bias = nn.Parameter(m.weight[0])  # a view into another parameter
    with pytest.raises(ValueError, match="share memory"):
        dlpx.torch.share_module(m)


class Empty(nn.Module):
    def forward(self, x):
        return x + 1


def test_module_without_tensors_and_with_none_slots():
    with dlpx.torch.share_module(Empty()) as mh:
        assert torch.equal(mh.load()(torch.ones(2)), torch.full((2,), 2.0))
    lin = nn.Linear(3, 3, bias=False)
    with dlpx.torch.share_module(lin) as mh:
        got = mh.load()
        assert got.bias is None
        np.testing.assert_array_equal(got.weight.numpy(), lin.weight.detach().numpy())


def test_a_module_whose_class_cannot_be_pickled_is_a_type_error():
    class Local(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="module level"):
        dlpx.torch.share_module(Local())


def test_load_after_close_is_a_clear_error():
    mh = dlpx.torch.share_module(nn.Linear(2, 2))
    q = pickle.loads(pickle.dumps(mh))
    mh.close()
    mh.close()
    with pytest.raises(FileNotFoundError):
        q.load()
