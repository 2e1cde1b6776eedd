"""Tests for exp.nb_10b: LabelSmoothingCrossEntropy against PyTorch, and the MixUp callback (the mixed batch and
loss its formulas give, off in validation, the learner's loss function never replaced), with PyTorch's, lesson 03's
and the label-smoothing loss."""
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from exp.nb_03 import cross_entropy as cross_entropy_03
from exp.nb_04 import AvgStatsCallback, Callback, Learner
from exp.nb_10b import LabelSmoothingCrossEntropy, MixUp

from conftest import make_data


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('eps', [0., 0.1, 0.25])
def test_label_smoothing_matches_pytorch(eps, reduction):
    torch.manual_seed(0)
    out, targ = torch.randn(50, 7) * 4, torch.randint(0, 7, (50,))
    ours = LabelSmoothingCrossEntropy(eps, reduction)(out, targ)
    theirs = F.cross_entropy(out, targ, label_smoothing=eps, reduction=reduction)
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=1e-6)


def test_label_smoothing_gradient_matches_pytorch():
    torch.manual_seed(1)
    out, targ = torch.randn(20, 10, requires_grad=True), torch.randint(0, 10, (20,))
    g1, = torch.autograd.grad(LabelSmoothingCrossEntropy(0.1)(out, targ), out)
    g2, = torch.autograd.grad(F.cross_entropy(out, targ, label_smoothing=0.1), out)
    assert torch.allclose(g1, g2, atol=1e-7)


def test_label_smoothing_refuses_bad_reduction():
    with pytest.raises(ValueError, match="'mean', 'sum' or 'none'"):
        LabelSmoothingCrossEntropy(reduction='avg')


class Spy(Callback):
    _order = 5
    def begin_fit(self): self.seen = []
    def after_loss(self):
        loss, pred = self.loss.detach().clone(), self.pred.detach()
        self.seen.append((self.in_train, self.xb.clone(), self.yb.clone(), loss, pred))


LOSSES = [F.cross_entropy, cross_entropy_03, LabelSmoothingCrossEntropy(0.1), LabelSmoothingCrossEntropy(0.1, 'sum')]


@pytest.mark.parametrize('loss_func', LOSSES,
                         ids=['F.cross_entropy', 'nb_03.cross_entropy', 'LSCE-mean', 'LSCE-sum'])
def test_mixup_mixes_batch_and_loss_by_the_formula_and_is_off_in_validation(loss_func):
    data = make_data(n_train=16, n_valid=8, bs=16)    # one training batch, one validation batch, in order
    torch.manual_seed(0)
    spy, mix = Spy(), MixUp(0.4)
    learn = Learner(nn.Linear(5, 2), partial(torch.optim.SGD, lr=0.1), loss_func, data, cbs=[mix, spy])
    torch.manual_seed(7)
    learn.fit(1)
    torch.manual_seed(7)
    l = torch.distributions.Beta(0.4, 0.4).sample((16,))
    lam, perm = torch.max(l, 1 - l), torch.randperm(16)
    (tr, xt, yt, lt, pt), (va, xv, yv, lv, pv) = spy.seen
    x, y = data.train_ds.x, data.train_ds.y
    assert tr and not va
    assert (lam >= 0.5).all() and torch.allclose(mix.lam, lam)
    assert torch.allclose(xt, lam[:, None] * x + (1 - lam[:, None]) * x[perm], atol=1e-6)
    assert torch.equal(yt, y)
    per = lambda t: F.cross_entropy(pt, t, reduction='none', label_smoothing=getattr(loss_func, 'eps', 0.))
    mixed = lam * per(y) + (1 - lam) * per(y[perm])
    want = mixed.sum() if getattr(loss_func, 'reduction', 'mean') == 'sum' else mixed.mean()
    assert torch.allclose(lt, want, atol=1e-6)
    assert torch.equal(xv, data.valid_ds.x) and torch.equal(yv, data.valid_ds.y)
    assert torch.allclose(lv, loss_func(pv, yv), atol=1e-6)
    assert learn.loss_func is loss_func and getattr(loss_func, 'reduction', 'mean') in ('mean', 'sum')


def test_mixup_training_loss_is_higher_than_plain_on_a_fitted_model():
    "On a model that already separates the data, the mixed loss (blended targets) stays above the plain loss."
    data = make_data(n_train=64, n_valid=32, bs=64)
    torch.manual_seed(0)
    learn = Learner(nn.Linear(5, 2), partial(torch.optim.SGD, lr=0.5), F.cross_entropy, data,
                    cbs=[AvgStatsCallback(show=False)])
    learn.fit(20)
    plain = learn.avg_stats.history[-1]['train_loss']
    learn.add_cbs(MixUp(0.4))
    learn.fit(1)
    h = learn.avg_stats.history[-1]
    assert h['train_loss'] > plain
    assert abs(h['valid_loss'] - F.cross_entropy(learn.model(data.valid_ds.x), data.valid_ds.y).item()) < 1e-5
