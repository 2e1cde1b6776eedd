"""Tests for exp.nb_10c: half_model_copy, MixedPrecision (float32 master weights, dynamic loss scaling) checked
against torch.amp.GradScaler with injected infinite gradients, and AutocastCallback (bfloat16 on the CPU; the
float16 + GradScaler path that a GPU takes, run on the CPU)."""
import copy
import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn, optim

from exp.nb_03 import ArrayDataset, DataLoader, Sampler
from exp.nb_04 import Callback, CancelTrainException, DataBunch, Learner
from exp.nb_05 import Recorder
from exp.nb_07 import BatchNorm, conv_norm
from exp.nb_10c import AutocastCallback, MixedPrecision, autocast_dtype, half_model_copy

INF_STEPS, GI, EPOCHS = (2, 3, 4, 9, 15), 3, 2


def _data(n_train=256, n_valid=64, bs=16, d=10, c=3):
    "A fresh toy DataBunch: the largest of `c` random projections; the same seeded shuffling every time."
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(n_train + n_valid, d, generator=g), torch.randn(d, c, generator=g)
    y = (x @ w).argmax(1)
    trn, val = ArrayDataset(x[:n_train], y[:n_train]), ArrayDataset(x[n_train:], y[n_train:])
    return DataBunch(DataLoader(trn, Sampler(trn, bs, shuffle=True, seed=0), batched=True),
                     DataLoader(val, Sampler(val, bs), batched=True), c=c)


def _model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(10, 24), nn.ReLU(), nn.Linear(24, 3))


class _InjectInf(Callback):
    "Makes one gradient of the model being run infinite on the training steps in `steps` (before the scaler looks)."
    _order = 50
    def __init__(self, steps): self.steps = set(steps)
    def after_backward(self):
        if self.n_iter in self.steps: next(self.model.parameters()).grad[0, 0] = math.inf


def _gradscaler_reference(m0, steps, epochs=EPOCHS):
    "Plain loop: autocast(float16) + torch.amp.GradScaler with MixedPrecision's settings; (scales used, skipped steps)."
    model = copy.deepcopy(m0); opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler('cpu', init_scale=2.**16, growth_interval=GI, growth_factor=2., backoff_factor=0.5)
    scales, skipped, i, dl = [], [], 0, _data().train_dl
    for _ in range(epochs):
        for xb, yb in dl:
            with torch.autocast('cpu', dtype=torch.float16): loss = F.cross_entropy(model(xb).float(), yb)
            opt.zero_grad(); scaler.scale(loss).backward(); scales.append(scaler.get_scale())
            if i in steps: next(model.parameters()).grad[0, 0] = math.inf
            scaler.step(opt); scaler.update()
            if scaler.get_scale() < scales[-1]: skipped.append(i)
            i += 1
    return scales, skipped


def _learner(m0, cbs):
    return Learner(copy.deepcopy(m0), partial(optim.SGD, momentum=0.9), F.cross_entropy, _data(), lr=0.05, cbs=cbs)


def test_mixed_precision_scale_trajectory_matches_gradscaler():
    m0 = _model()
    learn = _learner(m0, [MixedPrecision(growth_interval=GI), _InjectInf(INF_STEPS)])
    learn.fit(EPOCHS)
    mp = learn.mixed_precision
    ref_scales, ref_skipped = _gradscaler_reference(m0, INF_STEPS)
    n = 20                                     # real overflows may come later, where the two differ in rounding
    assert len(mp.scales) == len(ref_scales) == EPOCHS * 16
    assert mp.scales[:n] == ref_scales[:n]
    assert [s for s in mp.skipped if s < n] == [s for s in ref_skipped if s < n] == list(INF_STEPS)
    assert mp.scales[0] == 2.**16 and min(mp.scales[:n]) == 2.**16 / 8   # three injected steps in a row


def test_master_weights_stay_float32_and_skipped_steps_do_not_move_them():
    m0, snapshots = _model(), {}

    class _Snap(Callback):
        _order = 100
        def after_batch(self):
            if self.in_train:
                snapshots[self.n_iter] = [p.detach().clone() for p in self.mixed_precision.master.parameters()]

    learn = _learner(m0, [MixedPrecision(growth_interval=GI), _InjectInf(INF_STEPS), _Snap()])
    learn.fit(1)
    assert learn.model is learn.mixed_precision.master
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())
    assert {p.dtype for p in learn.mixed_precision.half.parameters()} == {torch.float16}
    for k in INF_STEPS:                        # snapshots[k + 1]: the weights after the step of the batch with n_iter k
        assert all(torch.equal(a, b) for a, b in zip(snapshots[k], snapshots[k + 1])), f'skipped step {k} moved them'
    assert not all(torch.equal(a, b) for a, b in zip(snapshots[1], snapshots[2]))
    assert not all(torch.equal(a, b) for a, b in zip(m0.parameters(), learn.model.parameters()))


def test_half_model_copy_keeps_norms_float32_and_leaves_the_original():
    m = nn.Sequential(conv_norm(1, 4, norm=BatchNorm), conv_norm(4, 8, norm=nn.BatchNorm2d))
    h = half_model_copy(m)
    assert all(p.dtype == torch.float32 for p in m.parameters())
    assert h[0][0].weight.dtype == torch.float16 and h[0][1].norm.weight.dtype == torch.float32
    assert h[1][1].norm.running_mean.dtype == torch.float32
    x = torch.randn(8, 1, 12, 12)
    out = h.eval()(x.half())
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), m.eval()(x), atol=2e-2, rtol=2e-2)


def test_autocast_float16_path_matches_gradscaler_exactly():
    m0 = _model()
    learn = _learner(m0, [AutocastCallback(torch.float16, growth_interval=GI), _InjectInf(INF_STEPS)])
    learn.fit(EPOCHS)
    ac = learn.autocast
    ref_scales, ref_skipped = _gradscaler_reference(m0, INF_STEPS)
    assert ac.scaler is not None and ac.scales == ref_scales and ac.skipped == ref_skipped
    assert set(INF_STEPS) <= set(ac.skipped)


def test_bf16_autocast_trains_on_cpu_with_our_batchnorm():
    torch.manual_seed(0)
    x = torch.randn(256, 1, 8, 8); y = (x.mean((1, 2, 3)) > 0).long() + (x[:, 0, 0, 0] > 0).long()
    trn, val = ArrayDataset(x[:192], y[:192]), ArrayDataset(x[192:], y[192:])
    data = DataBunch(DataLoader(trn, Sampler(trn, 32, shuffle=True, seed=0), batched=True),
                     DataLoader(val, Sampler(val, 64), batched=True), c=3)
    model = nn.Sequential(conv_norm(1, 8, norm=BatchNorm), conv_norm(8, 16, norm=BatchNorm),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))
    learn = Learner(model, partial(optim.Adam), F.cross_entropy, data, lr=1e-2, cbs=[AutocastCallback(), Recorder()])
    learn.fit(4)
    assert learn.autocast.dtype == torch.bfloat16 and learn.autocast.scaler is None
    losses = learn.recorder.losses
    assert sum(losses[-6:]) / 6 < 0.8 * sum(losses[:6]) / 6, 'bfloat16 autocast did not train'
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not any(m._forward_pre_hooks for m in model.modules()), 'the float32 hooks were not removed'


def test_autocast_dtype_and_context_left_after_a_cancel():
    assert autocast_dtype('cuda') == torch.float16 and autocast_dtype('cpu') == torch.bfloat16

    class _Stop(Callback):
        _order = 100
        def after_pred(self): raise CancelTrainException()

    learn = _learner(_model(), [AutocastCallback(), _Stop()])
    learn.fit(1)
    assert not torch.is_autocast_enabled('cpu')
