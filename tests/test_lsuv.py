"""Tests for exp.nb_07a: lsuv_init and layer_stats on small CNNs built with lesson 06's conv_layer."""
import warnings

import pytest
import torch
from torch import nn

from exp.nb_06 import get_cnn_model, init_cnn
from exp.nb_07a import _conv_blocks, layer_stats, lsuv_init

GR = dict(leak=0.1, sub=0.4, maxv=6.)


class _Data:
    c = 10


def make_model(nfs=(4, 8, 8, 8), seed=0, **kwargs):
    torch.manual_seed(seed)
    return init_cnn(get_cnn_model(_Data(), list(nfs), **(kwargs or GR)), a=0.1)


def batch(n=128, seed=1):
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def n_hooks(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_lsuv_gives_every_conv_layer_mean_0_std_1_on_its_batch():
    model, xb = make_model(), batch()
    before = layer_stats(model, xb)
    assert any(abs(m) > 0.1 or abs(s - 1) > 0.1 for m, s in before)      # there was something to fix
    res = lsuv_init(model, xb)
    assert len(res) == 4
    for (m, s), (m2, s2) in zip(res, layer_stats(model, xb)):
        assert abs(m) < 0.1 and abs(s - 1) < 0.1
        assert m2 == pytest.approx(m, abs=1e-5) and s2 == pytest.approx(s, abs=1e-5)   # what it reports is true
        assert abs(m2) < 1e-3 and abs(s2 - 1) < 1e-3                                   # with the default tol
    assert n_hooks(model) == 0


def test_lsuv_measures_each_layer_directly():
    "The output of every conv block, hooked independently of lsuv_init, has mean ~0 and std ~1."
    model, xb = make_model(seed=3), batch(seed=4)
    lsuv_init(model, xb)
    outs = []
    hs = [b.register_forward_hook(lambda m, i, o: outs.append(o.detach())) for b in _conv_blocks(model)]
    with torch.no_grad(): model(xb)
    for h in hs: h.remove()
    assert len(outs) == 4
    for o in outs: assert abs(o.mean().item()) < 0.1 and abs(o.std().item() - 1) < 0.1


def test_lsuv_rescues_a_tiny_init():
    model, xb = make_model(), batch()
    with torch.no_grad():
        for l in model.modules():
            if isinstance(l, nn.Conv2d): l.weight.normal_(0, 0.01); l.bias.zero_()
    assert layer_stats(model, xb)[-1][1] < 0.1
    for m, s in lsuv_init(model, xb): assert abs(m) < 1e-3 and abs(s - 1) < 1e-3


def test_lsuv_only_changes_conv_weights_and_biases():
    model, xb = make_model(), batch()
    lin = {k: v.clone() for k, v in model[-1].state_dict().items()}
    lsuv_init(model, xb)
    for k, v in model[-1].state_dict().items(): assert torch.equal(v, lin[k])


def test_lsuv_explicit_layers():
    model, xb = make_model(), batch()
    res = lsuv_init(model, xb, layers=[model[0], model[1]])
    assert len(res) == 2
    stats = layer_stats(model, xb)
    assert all(abs(m) < 1e-3 and abs(s - 1) < 1e-3 for m, s in stats[:2])


def test_lsuv_constant_layer_is_an_error_and_hooks_are_removed():
    model, xb = make_model(), batch()
    with torch.no_grad(): model[1][0].weight.zero_(); model[1][0].bias.zero_()
    with pytest.raises(ValueError, match='layer 1 outputs a constant'): lsuv_init(model, xb)
    assert n_hooks(model) == 0


def test_lsuv_warns_when_it_cannot_converge():
    "A plain ReLU is never negative, so its mean cannot reach 0 from the positive side in a few rounds."
    torch.manual_seed(0)
    model, xb = init_cnn(get_cnn_model(_Data(), [4, 8])), batch()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        lsuv_init(model, xb, max_iter=2)
    assert any('lsuv_init: layer 0 still has mean' in str(x.message) for x in w)
    assert n_hooks(model) == 0


def test_lsuv_needs_layers():
    with pytest.raises(ValueError, match='found no conv blocks'):
        lsuv_init(nn.Sequential(nn.Linear(3, 3)), torch.randn(2, 3))
    with pytest.raises(ValueError, match='contains no convolution or linear layer'):
        lsuv_init(nn.Sequential(nn.ReLU()), torch.randn(2, 3), layers=[nn.Sequential(nn.ReLU())])


def test_lsuv_leaves_gradients_alone():
    model, xb = make_model(), batch()
    lsuv_init(model, xb)
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
