"""Unit tests for exp/nb_03.py: losses, data pipeline, optimizer and fit (small synthetic data, seconds)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim

from exp.nb_03 import (
    ArrayDataset,
    BasicOptimizer,
    DataLoader,
    Sampler,
    accuracy,
    collate,
    cross_entropy,
    fit,
    get_dls,
    get_model,
    log_softmax,
    logsumexp,
    nll,
)


def logits(bs, scale, seed=0):
    "Random scores of shape (bs, 10), scaled by `scale`."
    return torch.randn(bs, 10, generator=torch.Generator().manual_seed(seed)) * scale


def targets(bs, seed=1):
    return torch.randint(0, 10, (bs,), generator=torch.Generator().manual_seed(seed))


CASES = [(bs, scale) for bs in (1, 7, 64) for scale in (1., 100., 1e4)]


@pytest.mark.parametrize('bs,scale', CASES)
def test_logsumexp_and_log_softmax_match_torch(bs, scale):
    x = logits(bs, scale)
    torch.testing.assert_close(logsumexp(x), torch.logsumexp(x, -1))
    torch.testing.assert_close(log_softmax(x), F.log_softmax(x, -1))
    assert log_softmax(x).isfinite().all()


def test_log_softmax_survives_what_the_naive_formula_cannot():
    x = torch.tensor([[1000., 0., -1000.], [-500., -600., -700.]])
    naive = (x.exp() / x.exp().sum(-1, keepdim=True)).log()
    assert not naive.isfinite().all()          # the failure the trick prevents
    torch.testing.assert_close(log_softmax(x), F.log_softmax(x, -1))


NINF = float('-inf')
MASKED = torch.tensor([[0., NINF, 2., 1.], [NINF, NINF, NINF, NINF], [NINF, 5., NINF, NINF], [NINF, -3., 40., NINF]])


def test_logsumexp_and_log_softmax_match_torch_on_masked_rows():
    torch.testing.assert_close(logsumexp(MASKED), torch.logsumexp(MASKED, -1))
    assert logsumexp(MASKED)[1].item() == NINF                      # fully masked row: log(0), not nan
    torch.testing.assert_close(log_softmax(MASKED), F.log_softmax(MASKED, -1), equal_nan=True)
    partly = MASKED[[0, 2, 3]]
    torch.testing.assert_close(log_softmax(partly), F.log_softmax(partly, -1))
    assert not log_softmax(partly).isnan().any()


def test_cross_entropy_gradient_matches_torch_on_partly_masked_rows():
    x, y = MASKED[[0, 2, 3]].clone().requires_grad_(), torch.tensor([2, 1, 1])
    g_ours, = torch.autograd.grad(cross_entropy(x, y), x)
    g_torch, = torch.autograd.grad(F.cross_entropy(x, y), x)
    torch.testing.assert_close(cross_entropy(x, y), F.cross_entropy(x, y))
    torch.testing.assert_close(g_ours, g_torch)


@pytest.mark.parametrize('bs,scale', CASES)
def test_nll_and_cross_entropy_match_torch(bs, scale):
    x, y = logits(bs, scale), targets(bs)
    torch.testing.assert_close(nll(F.log_softmax(x, -1), y), F.nll_loss(F.log_softmax(x, -1), y))
    torch.testing.assert_close(cross_entropy(x, y), F.cross_entropy(x, y))


@pytest.mark.parametrize('bs,scale', CASES)
def test_cross_entropy_gradient_matches_torch(bs, scale):
    x, y = logits(bs, scale).requires_grad_(), targets(bs)
    g_ours, = torch.autograd.grad(cross_entropy(x, y), x)
    g_torch, = torch.autograd.grad(F.cross_entropy(x, y), x)
    torch.testing.assert_close(g_ours, g_torch)


def test_accuracy():
    out = torch.tensor([[0., 1.], [2., 1.], [0., 3.], [5., -1.]])
    assert accuracy(out, torch.tensor([1, 0, 0, 0])).item() == pytest.approx(0.75)
    assert accuracy(out[:1], torch.tensor([0])).item() == 0.


def small_ds(n=10, d=3):
    x = torch.arange(n * d, dtype=torch.float32).reshape(n, d)
    return ArrayDataset(x, torch.arange(n))


def test_dataset_items_and_batches():
    ds = small_ds()
    assert len(ds) == 10
    xi, yi = ds[2]
    assert xi.tolist() == [6., 7., 8.] and yi.item() == 2
    xb, yb = ds[torch.tensor([4, 0])]
    assert xb.shape == (2, 3) and yb.tolist() == [4, 0]


def one_epoch(sampler):
    return torch.cat(list(sampler)).tolist()


@pytest.mark.parametrize('shuffle', [False, True])
@pytest.mark.parametrize('n,bs', [(10, 3), (12, 4), (5, 8), (1, 1)])
def test_sampler_gives_every_index_once_per_epoch(n, bs, shuffle):
    s = Sampler(small_ds(n), bs, shuffle=shuffle, seed=0)
    for _ in range(3):
        batches = list(s)
        assert sorted(torch.cat(batches).tolist()) == list(range(n))
        assert [len(b) for b in batches[:-1]] == [bs] * (len(batches) - 1) and 1 <= len(batches[-1]) <= bs
        assert len(batches) == len(s) == -(-n // bs)


def test_sampler_shuffles_differently_each_epoch_and_replays_with_a_seed():
    ds = small_ds(100)
    assert one_epoch(Sampler(ds, 16)) == list(range(100))
    s = Sampler(ds, 16, shuffle=True, seed=3)
    e1, e2 = one_epoch(s), one_epoch(s)
    assert e1 != list(range(100)) and e1 != e2
    s2 = Sampler(ds, 16, shuffle=True, seed=3)
    assert [one_epoch(s2), one_epoch(s2)] == [e1, e2]
    assert one_epoch(Sampler(ds, 16, shuffle=True, seed=4)) != e1


def test_sampler_without_seed_follows_torch_manual_seed():
    ds = small_ds(50)
    torch.manual_seed(7); a = one_epoch(Sampler(ds, 8, shuffle=True))
    torch.manual_seed(7); b = one_epoch(Sampler(ds, 8, shuffle=True))
    assert a == b
    assert a != list(range(50)) and sorted(a) == list(range(50))  # really shuffled, not silently in order
    torch.manual_seed(8)
    assert one_epoch(Sampler(ds, 8, shuffle=True)) != a


@pytest.mark.parametrize('shuffle', [False, True])
def test_sampler_and_dataloader_on_an_empty_dataset_give_no_batches(shuffle):
    ds = small_ds(0)
    s = Sampler(ds, 4, shuffle=shuffle, seed=0)
    assert len(s) == 0 and list(s) == []
    for batched in (False, True):
        dl = DataLoader(ds, s, batched=batched)
        assert len(dl) == 0 and list(dl) == []


@pytest.mark.parametrize('bs', [0, -1])
def test_sampler_rejects_a_batch_size_below_one(bs):
    with pytest.raises(ValueError, match='at least 1'):
        Sampler(small_ds(5), bs)


def test_collate_stacks_items():
    ds = small_ds()
    xb, yb = collate([ds[3], ds[1]])
    assert torch.equal(xb, ds.x[[3, 1]]) and torch.equal(yb, torch.tensor([3, 1]))


@pytest.mark.parametrize('batched', [False, True])
def test_dataloader_keeps_the_last_partial_batch(batched):
    ds = small_ds(10)
    dl = DataLoader(ds, Sampler(ds, 4), batched=batched)
    batches = list(dl)
    assert len(dl) == 3 and [len(yb) for _, yb in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([xb for xb, _ in batches]), ds.x)
    assert torch.cat([yb for _, yb in batches]).tolist() == list(range(10))


def test_dataloader_paths_give_the_same_batches():
    ds = small_ds(37)
    items = list(DataLoader(ds, Sampler(ds, 5, shuffle=True, seed=9)))
    fast = list(DataLoader(ds, Sampler(ds, 5, shuffle=True, seed=9), batched=True))
    assert len(items) == len(fast) == 8
    for (xa, ya), (xb, yb) in zip(items, fast):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(xa, ds.x[ya])


def test_optimizer_step_on_a_toy_problem():
    w = torch.zeros(2, requires_grad=True)
    target = torch.tensor([3., -1.])
    opt = BasicOptimizer([w], lr=0.1)
    ((w - target) ** 2).sum().backward()             # gradient 2 * (w - target) = [-6, 2]
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([0.6, -0.2]))
    opt.zero_grad()
    assert w.grad is None
    for _ in range(100):
        ((w - target) ** 2).sum().backward()
        opt.step(); opt.zero_grad()
    torch.testing.assert_close(w.detach(), target)


def test_optimizer_matches_torch_sgd_and_skips_params_without_grad():
    torch.manual_seed(0)
    m1 = nn.Linear(4, 3); m2 = nn.Linear(4, 3); m2.load_state_dict(m1.state_dict())
    frozen = torch.ones(2, requires_grad=True)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    opts = [(m1, BasicOptimizer(list(m1.parameters()) + [frozen], lr=0.3)), (m2, optim.SGD(m2.parameters(), lr=0.3))]
    for m, opt in opts:
        F.cross_entropy(m(x), y).backward(); opt.step()
    for p1, p2 in zip(m1.parameters(), m2.parameters()): torch.testing.assert_close(p1, p2)
    assert torch.equal(frozen, torch.ones(2))


def synthetic(n, n_in=20, n_out=3, seed=0):
    "Inputs and labels from a random linear teacher: learnable, but not at initialisation."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_in, generator=g)
    return x, (x @ torch.randn(n_in, n_out, generator=g)).argmax(-1)


def test_get_model():
    model, opt = get_model(20, 16, 3, lr=0.2)
    assert isinstance(model, nn.Sequential) and isinstance(opt, optim.SGD)
    assert model(torch.randn(5, 20)).shape == (5, 3)
    assert opt.param_groups[0]['lr'] == 0.2
    assert [tuple(p.shape) for p in model.parameters()] == [(16, 20), (16,), (3, 16), (3,)]


def test_get_dls():
    x, y = synthetic(100)
    train_dl, valid_dl = get_dls(ArrayDataset(x[:70], y[:70]), ArrayDataset(x[70:], y[70:]), 16)
    assert len(train_dl) == 5 and len(valid_dl) == 1
    tb = list(train_dl)
    assert [len(yb) for _, yb in tb] == [16, 16, 16, 16, 6]
    assert sorted(torch.cat([yb for _, yb in tb]).tolist()) == sorted(y[:70].tolist())
    xb, yb = next(iter(valid_dl))
    assert torch.equal(xb, x[70:]) and torch.equal(yb, y[70:])
    torch.manual_seed(0); o1 = torch.cat([xb for xb, _ in train_dl])
    torch.manual_seed(0); o2 = torch.cat([xb for xb, _ in train_dl])
    assert torch.equal(o1, o2) and not torch.equal(o1, x[:70])


def short_fit(seed, epochs=3):
    x, y = synthetic(600)
    torch.manual_seed(seed)
    train_dl, valid_dl = get_dls(ArrayDataset(x[:500], y[:500]), ArrayDataset(x[500:], y[500:]), 32)
    model, opt = get_model(20, 32, 3, lr=0.2)
    with torch.no_grad(): before = F.cross_entropy(model(x[500:]), y[500:]).item()
    return before, fit(epochs, model, F.cross_entropy, opt, train_dl, valid_dl)


def test_short_fit_lowers_the_loss(capsys):
    before, res = short_fit(0)
    assert len(res) == 3 and all(len(r) == 3 for r in res)
    (tl0, vl0, _), (tl, vl, acc) = res[0], res[-1]
    assert tl < tl0 and vl < vl0 < before
    assert acc > 0.6                                    # chance is 1/3
    assert capsys.readouterr().out.count('epoch') == 3


@pytest.mark.parametrize('which', ['train_dl', 'valid_dl'])
def test_fit_refuses_an_empty_loader_before_training(which, capsys):
    x, y = synthetic(40)
    torch.manual_seed(0)
    model, opt = get_model(20, 8, 3, lr=0.5)
    w0 = [p.detach().clone() for p in model.parameters()]
    full, empty = ArrayDataset(x, y), ArrayDataset(x[:0], y[:0])
    dls = {'train_dl': DataLoader(full, Sampler(full, 16)), 'valid_dl': DataLoader(full, Sampler(full, 16))}
    dls[which] = DataLoader(empty, Sampler(empty, 16))
    with pytest.raises(ValueError, match=f'{which} has no batches'):
        fit(1, model, cross_entropy, opt, dls['train_dl'], dls['valid_dl'])
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), w0))
    assert capsys.readouterr().out == ''


def test_fit_is_reproducible_and_weights_the_last_batch(capsys):
    assert short_fit(1, 1) == short_fit(1, 1)
    x, y = synthetic(600)
    torch.manual_seed(0)
    model, opt = get_model(20, 32, 3, lr=0.0)           # lr 0: the model does not change during the epoch
    valid = ArrayDataset(x[500:], y[500:])                   # 100 samples in batches of 64 and 36
    dl = DataLoader(valid, Sampler(valid, 64))
    res = fit(1, model, cross_entropy, opt, dl, dl)
    with torch.no_grad(): out = model(valid.x)
    tl, vl, acc = res[0]
    assert tl == pytest.approx(cross_entropy(out, valid.y).item(), rel=1e-5)
    assert vl == pytest.approx(tl, rel=1e-5)
    assert acc == pytest.approx(accuracy(out, valid.y).item(), rel=1e-6)
