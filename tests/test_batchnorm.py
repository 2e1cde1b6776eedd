"""Tests for exp.nb_07: BatchNorm, FastBatchNorm, LayerNorm, InstanceNorm, GroupNorm, RunningBatchNorm, conv_norm."""
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from exp.nb_06 import GeneralRelu, get_cnn_model
from exp.nb_07 import (
    BatchNorm,
    FastBatchNorm,
    GroupNorm,
    InstanceNorm,
    LayerNorm,
    RunningBatchNorm,
    _BatchNormTrain,
    conv_norm,
)

TOL = dict(rtol=1e-5, atol=1e-5)
SHAPE = (8, 6, 5, 7)


def same_affine(ours, theirs, seed=0):
    "Give both layers the same random scale and shift."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        theirs.weight.copy_(torch.rand(theirs.weight.shape, generator=g) + 0.5)
        theirs.bias.copy_(torch.randn(theirs.bias.shape, generator=g))
        ours.weight.copy_(theirs.weight); ours.bias.copy_(theirs.bias)


def assert_same(ours, theirs, shape=SHAPE, steps=3, seed=1, dtype=torch.float32):
    "Outputs and gradients (input, weight, bias) agree to 1e-5 for `steps` batches in a row."
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(shape, generator=g, dtype=dtype) * 3 + 1
        gy = torch.randn(shape, generator=g, dtype=dtype)
        res = []
        for layer in (ours, theirs):
            xi = x.clone().requires_grad_()
            y = layer(xi)
            wrt = [xi] + [p for p in (layer.weight, layer.bias) if p is not None]
            res.append([y, *torch.autograd.grad(y, wrt, gy)])
        for name, a, b in zip(('output', 'input grad', 'weight grad', 'bias grad'), *res):
            torch.testing.assert_close(a, b, **TOL, msg=lambda m: f'{name}: {m}')


# ------------------------------------------------------------------ BatchNorm

BNS = pytest.mark.parametrize('bn', [BatchNorm, FastBatchNorm])


@BNS
@pytest.mark.parametrize('mom', [0.1, 0.3])
def test_batchnorm_matches_torch_train_then_eval(bn, mom):
    ours, theirs = bn(6, mom=mom), nn.BatchNorm2d(6, momentum=mom)
    same_affine(ours, theirs)
    assert_same(ours, theirs, steps=5)
    torch.testing.assert_close(ours.running_mean, theirs.running_mean, **TOL)
    torch.testing.assert_close(ours.running_var, theirs.running_var, **TOL)
    assert not torch.allclose(ours.running_var, torch.ones(6))          # the running stats did move
    ours.eval(); theirs.eval()
    assert_same(ours, theirs, steps=2)


def test_fast_batchnorm_is_a_batchnorm_whose_own_forward_runs():
    "The plain class keeps its own forward; the fast one overrides it, and conv_norm builds with the fast one."
    assert issubclass(FastBatchNorm, BatchNorm)
    assert BatchNorm.forward.__qualname__ == 'BatchNorm.forward'
    assert FastBatchNorm.forward.__qualname__ == 'FastBatchNorm.forward'
    x = torch.randn(8, 3, 4, 4, requires_grad=True)
    assert FastBatchNorm(3)(x).grad_fn.name().startswith('_BatchNormTrain')     # one node, the hand-written backward
    assert not BatchNorm(3)(x).grad_fn.name().startswith('_BatchNormTrain')     # autograd's ops
    assert type(conv_norm(1, 4)[1]) is FastBatchNorm


def test_fast_and_plain_batchnorm_share_state_dicts():
    torch.manual_seed(0)
    fast, plain = FastBatchNorm(4), BatchNorm(4)
    same_affine(plain, fast)
    for _ in range(3): fast(torch.randn(5, 4, 3, 3) * 2 + 1)
    plain.load_state_dict(fast.state_dict())
    fast.eval(); plain.eval()
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(fast(x), plain(x), **TOL)


@BNS
def test_batchnorm_normalises_each_channel(bn):
    x = torch.randn(16, 4, 6, 6) * torch.tensor([0.1, 1., 10., 100.])[:, None, None] + 5
    y = bn(4)(x)
    v, m = torch.var_mean(y, (0, 2, 3), correction=0)
    vx = x.var((0, 2, 3), correction=0)
    torch.testing.assert_close(m, torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(v, vx / (vx + 1e-5), atol=1e-4, rtol=0)     # 1, up to eps


@BNS
def test_batchnorm_non_square_odd_batch(bn):
    ours, theirs = bn(3), nn.BatchNorm2d(3)
    same_affine(ours, theirs)
    assert_same(ours, theirs, shape=(3, 3, 1, 9), steps=2)


@BNS
def test_batchnorm_state_dict_is_pytorchs(bn):
    theirs = nn.BatchNorm2d(5)
    theirs(torch.randn(4, 5, 3, 3))
    ours = bn(5)
    ours.load_state_dict({k: v for k, v in theirs.state_dict().items() if k != 'num_batches_tracked'})
    theirs.eval(); ours.eval()
    x = torch.randn(2, 5, 3, 3)
    torch.testing.assert_close(ours(x), theirs(x), **TOL)


def test_batchnorm_hand_written_backward_gradcheck():
    g = torch.Generator().manual_seed(0)
    x, w, b = [torch.randn(*s, dtype=torch.float64, generator=g).requires_grad_() for s in ((4, 3, 3, 2), (3,), (3,))]
    assert torch.autograd.gradcheck(lambda x, w, b: _BatchNormTrain.apply(x, w, b, 1e-5)[0], (x, w, b))


def test_fast_batchnorm_clear_errors():
    with pytest.raises(ValueError, match=r'^FastBatchNorm\(6\): expected input of shape \(N, 6, H, W\), got \(8, 6\)'):
        FastBatchNorm(6)(torch.randn(8, 6))
    with pytest.raises(ValueError, match=r'expected input of shape \(N, 6, H, W\), got \(2, 5, 3, 3\)'):
        FastBatchNorm(6)(torch.randn(2, 5, 3, 3))
    with pytest.raises(ValueError, match='more than 1 value per channel'):
        FastBatchNorm(6)(torch.randn(1, 6, 1, 1))
    bn = FastBatchNorm(6).eval()
    assert bn(torch.randn(1, 6, 1, 1)).shape == (1, 6, 1, 1)         # fine in eval: running stats


@BNS
def test_batchnorm_trains_a_cnn_like_torch(bn):
    "Same init, same data, a few SGD steps: the two networks stay together."
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g)
    data = type('D', (), {'c': 10})()
    models = []
    for norm in (bn, nn.BatchNorm2d):
        torch.manual_seed(0)
        models.append(get_cnn_model(data, [4, 8, 8], conv_norm, norm=norm, leak=0.1, sub=0.4))
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    for _ in range(5):
        for m, o in zip(models, opts):
            F.cross_entropy(m(x), y).backward(); o.step(); o.zero_grad()
    for m in models: m.eval()
    torch.testing.assert_close(models[0](x), models[1](x), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ conv_norm

def test_conv_norm_layout():
    layer = conv_norm(3, 8, ks=5, stride=2, norm=functools.partial(GroupNorm, 2), leak=0.1, sub=0.4)
    conv, norm, act = layer
    assert isinstance(conv, nn.Conv2d) and conv.bias is None and conv.stride == (2, 2) and conv.padding == (2, 2)
    assert isinstance(norm, GroupNorm) and norm.num_groups == 2 and norm.weight.shape == (8,)
    assert isinstance(act, GeneralRelu) and act.leak == 0.1 and act.sub == 0.4
    assert layer(torch.randn(2, 3, 9, 9)).shape == (2, 8, 5, 5)


# ------------------------------------------------------------------ LayerNorm, InstanceNorm, GroupNorm

@pytest.mark.parametrize('normalized_shape, shape', [(8, (2, 5, 8)), ((8,), (4, 8)), ((5, 8), (3, 5, 8)),
                                                       ((6, 5, 7), SHAPE), (7, SHAPE)])
@pytest.mark.parametrize('train', [True, False])
def test_layernorm_matches_nn_layernorm(normalized_shape, shape, train):
    "Values and gradients (input, per-element weight and bias) as nn.LayerNorm, over the last dimensions."
    ours, theirs = LayerNorm(normalized_shape).train(train), nn.LayerNorm(normalized_shape).train(train)
    assert ours.weight.shape == theirs.weight.shape and ours.normalized_shape == theirs.normalized_shape
    same_affine(ours, theirs)
    assert_same(ours, theirs, shape=shape)


def test_layernorm_without_affine_and_eps():
    ours, theirs = LayerNorm((5, 8), eps=1e-3, elementwise_affine=False), nn.LayerNorm((5, 8), 1e-3, False)
    assert ours.weight is None and ours.bias is None and list(ours.parameters()) == []
    assert_same(ours, theirs, shape=(3, 5, 8))
    x = torch.randn(3, 5, 8) * 0.01           # a small variance, where eps shows
    torch.testing.assert_close(ours(x), theirs(x), **TOL)


def test_layernorm_loads_nn_layernorm_state_dict():
    theirs = nn.LayerNorm((6, 5, 7))
    with torch.no_grad(): theirs.weight.normal_(); theirs.bias.normal_()
    ours = LayerNorm((6, 5, 7))
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(*SHAPE)
    torch.testing.assert_close(ours(x), theirs(x), **TOL)


def test_layernorm_refuses_wrong_last_dimensions():
    with pytest.raises(ValueError, match=r'LayerNorm\(\(8,\)\): expected input of shape \(\*, 8\), got \(2, 5, 7\)'):
        LayerNorm(8)(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match=r'expected input of shape \(\*, 6, 5, 7\), got \(8, 6, 7, 5\)'):
        LayerNorm((6, 5, 7))(torch.randn(8, 6, 7, 5))


@pytest.mark.parametrize('train', [True, False])
def test_instancenorm_matches_torch(train):
    ours, theirs = InstanceNorm(6).train(train), nn.InstanceNorm2d(6, affine=True).train(train)
    same_affine(ours, theirs)
    assert_same(ours, theirs)


def test_instancenorm_on_1x1_maps_gives_the_bias():
    layer = InstanceNorm(3)
    with torch.no_grad(): layer.bias.copy_(torch.tensor([1., -2., 3.]))
    y = layer(torch.randn(5, 3, 1, 1) * 10)
    torch.testing.assert_close(y, layer.bias[:, None, None].expand(5, 3, 1, 1).detach())


@pytest.mark.parametrize('groups', [1, 2, 3, 6])
@pytest.mark.parametrize('shape', [(8, 6), (8, 6, 5), SHAPE, (2, 6, 3, 4, 5)], ids=['NC', 'NCL', 'NCHW', 'NCDHW'])
@pytest.mark.parametrize('train', [True, False])
def test_groupnorm_matches_torch(groups, shape, train):
    ours, theirs = GroupNorm(groups, 6).train(train), nn.GroupNorm(groups, 6).train(train)
    # (N, 6) in 3 or 6 groups leaves 1 or 2 values per group, where the variance is a difference of nearly equal numbers
    # in PyTorch's float32 kernel (1e-4 off the float64 result): compare those cases in float64
    dtype = torch.float64 if len(shape) == 2 and groups > 2 else torch.float32
    ours, theirs = ours.to(dtype), theirs.to(dtype)
    same_affine(ours, theirs)
    assert_same(ours, theirs, shape=shape, dtype=dtype)


def test_groupnorm_attributes_eps_and_state_dict_are_pytorchs():
    ours, theirs = GroupNorm(3, 6, eps=1e-2), nn.GroupNorm(3, 6, eps=1e-2)
    assert (ours.num_groups, ours.num_channels, ours.eps) == (theirs.num_groups, theirs.num_channels, theirs.eps)
    with torch.no_grad(): theirs.weight.normal_(); theirs.bias.normal_()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 6, 3) * 0.1            # a small variance, where eps shows
    torch.testing.assert_close(ours(x), theirs(x), **TOL)


def test_groupnorm_extremes_are_layer_and_instance_norm():
    "One group: LayerNorm((C, H, W)), its scale and shift the per-channel ones repeated; C groups: InstanceNorm."
    gn, ln = GroupNorm(1, 6), LayerNorm(SHAPE[1:])
    same_affine(gn, nn.GroupNorm(1, 6))
    with torch.no_grad():
        ln.weight.copy_(gn.weight[:, None, None].expand(SHAPE[1:]))
        ln.bias.copy_(gn.bias[:, None, None].expand(SHAPE[1:]))
    x = (torch.randn(*SHAPE) * 3 + 1).requires_grad_()
    g = torch.randn(*SHAPE)
    (y1, gx1), (y2, gx2) = [(y, torch.autograd.grad(y, x, g)[0]) for y in (gn(x), ln(x))]
    torch.testing.assert_close(y1, y2, **TOL); torch.testing.assert_close(gx1, gx2, **TOL)
    ours, theirs = GroupNorm(6, 6), InstanceNorm(6)
    same_affine(ours, theirs)
    assert_same(ours, theirs)


def test_groupnorm_refuses_uneven_groups_and_wrong_channels():
    with pytest.raises(ValueError, match='6 channels cannot be split into 4 equal groups'): GroupNorm(4, 6)
    with pytest.raises(ValueError, match=r'GroupNorm\(2, 6\): expected input of shape \(N, 6, \*\), got \(8, 4, 3\)'):
        GroupNorm(2, 6)(torch.randn(8, 4, 3))
    with pytest.raises(ValueError, match=r'got \(6,\)'): GroupNorm(2, 6)(torch.randn(6))


def test_batch_independent_norms_do_not_mix_samples():
    x = torch.randn(4, 6, 5, 5)
    for layer in (LayerNorm((6, 5, 5)), LayerNorm(5), InstanceNorm(6), GroupNorm(3, 6)):
        torch.testing.assert_close(layer(x)[:1], layer(x[:1]), **TOL)


# ------------------------------------------------------------------ RunningBatchNorm

def test_running_batchnorm_first_batch_is_batchnorm():
    "On its first batch (past the 20-sample variance floor) its statistics are the batch's, as nn.BatchNorm2d's."
    ours, theirs = RunningBatchNorm(6), nn.BatchNorm2d(6)
    same_affine(ours, theirs)
    assert_same(ours, theirs, shape=(32, 6, 5, 7), steps=1)


def test_running_batchnorm_statistics_are_debiased_weighted_averages():
    g = torch.Generator().manual_seed(0)
    rbn, xs = RunningBatchNorm(3, mom=0.2), [torch.randn(bs, 3, 4, 4, generator=g) * 2 + 1 for bs in (5, 2, 9, 1, 3)]
    for x in xs: rbn(x)
    moms = [1 - 0.8 / math.sqrt(max(len(x) - 1, 1)) for x in xs]
    wts = [mo * math.prod(1 - m2 for m2 in moms[i + 1:]) for i, mo in enumerate(moms)]
    m = sum(w * x.sum((0, 2, 3)) for w, x in zip(wts, xs)) / sum(w * x[:, 0].numel() for w, x in zip(wts, xs))
    sq = sum(w * (x * x).sum((0, 2, 3)) for w, x in zip(wts, xs)) / sum(w * x[:, 0].numel() for w, x in zip(wts, xs))
    torch.testing.assert_close(rbn.sums / rbn.count, m, **TOL)
    torch.testing.assert_close(rbn.sqrs / rbn.count - (rbn.sums / rbn.count) ** 2, sq - m * m, **TOL)
    assert int(rbn.n_seen) == sum(len(x) for x in xs)
    # eval: normalises with exactly those statistics, and changes nothing
    rbn.eval()
    before = {k: v.clone() for k, v in rbn.state_dict().items()}
    x = torch.randn(2, 3, 4, 4, generator=g)
    expected = (x - m[:, None, None]) / (sq - m * m + rbn.eps).sqrt()[:, None, None]
    torch.testing.assert_close(rbn(x), expected, **TOL)
    for k, v in rbn.state_dict().items(): assert torch.equal(v, before[k]), k


def test_running_batchnorm_gradient_flows_through_this_batch_share():
    "Finite differences agree with the gradient, which includes the path through this batch's share of the statistics."
    torch.manual_seed(0)
    warm = RunningBatchNorm(2).double()
    warm(torch.randn(16, 2, 3, 3, dtype=torch.float64))
    state = warm.state_dict()

    def step(x):
        "One training step of a layer in the warmed-up state."
        r = RunningBatchNorm(2).double()
        r.load_state_dict(state)
        return r(x)

    x = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(step, (x,))
    # with the statistics treated as constants the gradient would be different
    r = RunningBatchNorm(2).double(); r.load_state_dict(state)
    sums, sqrs, count = r.update_stats(x.detach())
    m = sums / count; v = sqrs / count - m * m
    const = ((x - m[:, None, None]) / (v[:, None, None] + r.eps).sqrt()).sum()
    g_const, = torch.autograd.grad(const, x)
    g_full, = torch.autograd.grad(step(x).sum(), x)
    assert not torch.allclose(g_const, g_full, atol=1e-3)


@pytest.mark.parametrize('bs', [1, 2])
@pytest.mark.parametrize('hw', [1, 3])
def test_running_batchnorm_tiny_batches_are_finite(bs, hw):
    torch.manual_seed(0)
    rbn = RunningBatchNorm(4)
    for _ in range(30):
        x = torch.randn(bs, 4, hw, hw, requires_grad=True)
        y = rbn(x)
        y.sum().backward()
        assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    rbn.eval()
    assert torch.isfinite(rbn(torch.randn(1, 4, hw, hw))).all()


def test_running_batchnorm_eval_before_training_is_identity_like():
    rbn = RunningBatchNorm(3).eval()
    x = torch.randn(2, 3, 2, 2)
    torch.testing.assert_close(rbn(x), x / math.sqrt(1 + rbn.eps))
