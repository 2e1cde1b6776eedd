"""Tests for exp.nb_06: conv2d/im2col against PyTorch, the CNN pieces, the callbacks, hooks and init (tiny data)."""
import math

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim

from exp.nb_03 import ArrayDataset, DataLoader, Sampler
from exp.nb_04 import AvgStatsCallback, Callback, DataBunch, Learner
from exp.nb_06 import (
    ActivationStats,
    BatchTransformXCallback,
    DeviceCallback,
    GeneralRelu,
    Hook,
    Hooks,
    Lambda,
    append_stats,
    conv2d,
    conv2d_fast,
    conv_layer,
    conv_out_size,
    default_device,
    flatten,
    get_cnn_layers,
    get_cnn_learner,
    get_cnn_model,
    get_hist,
    get_near_zero,
    im2col,
    init_cnn,
    mnist_resize,
)

DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


def tiny_data(n_train=48, n_valid=32, bs=16, seed=0):
    "MNIST-shaped rows (N, 784): 10 random prototype images plus noise, labelled by prototype; 3 + 2 batches."
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n_train + n_valid,), generator=g)
    x = torch.randn(10, 784, generator=g)[y] + 0.5 * torch.randn(n_train + n_valid, 784, generator=g)
    tds, vds = ArrayDataset(x[:n_train], y[:n_train]), ArrayDataset(x[n_train:], y[n_train:])
    return DataBunch(DataLoader(tds, Sampler(tds, bs, shuffle=True, seed=seed), batched=True),
                     DataLoader(vds, Sampler(vds, bs), batched=True), c=10)


# ------------------------------------------------------------------ convolution from scratch

def random_conv_cases(n=12, seed=0):
    "Random (x shape, weight shape, stride, padding, bias?) cases, non-square images and kernels included."
    g = torch.Generator().manual_seed(seed)
    r = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))
    cases = []
    for _ in range(n):
        kh, kw, stride, padding = r(1, 5), r(1, 5), r(1, 3), r(0, 2)
        h, w = r(max(kh - 2 * padding, 1), 13), r(max(kw - 2 * padding, 1), 13)
        cases.append(((r(1, 4), r(1, 5), h, w), (r(1, 6), None, kh, kw), stride, padding, bool(r(0, 1))))
    return cases


@pytest.mark.parametrize('xs,ws,stride,padding,bias', random_conv_cases())
def test_conv2d_matches_F_conv2d_on_random_shapes(xs, ws, stride, padding, bias):
    torch.manual_seed(1)
    # weights scaled so that outputs are about unit scale
    x, w = torch.randn(xs), torch.randn(ws[0], xs[1], *ws[2:]) / math.sqrt(xs[1] * ws[2] * ws[3])
    b = torch.randn(ws[0]) if bias else None
    ours, theirs = conv2d(x, w, b, stride, padding), F.conv2d(x, w, b, stride=stride, padding=padding)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() < 1e-5
    oh, ow = (conv_out_size(xs[i], ws[i], stride, padding) for i in (2, 3))
    assert ours.shape[2:] == (oh, ow)


@pytest.mark.parametrize('stride,padding', [(1, 0), (2, 0), (1, 1), (2, 1)])
def test_conv2d_required_cases_and_gradients(stride, padding):
    torch.manual_seed(0)
    x, w, b = torch.randn(3, 2, 9, 6), torch.randn(4, 2, 3, 2), torch.randn(4)
    for bias in (b, None):
        assert (conv2d(x, w, bias, stride, padding) - F.conv2d(x, w, bias, stride, padding)).abs().max() < 1e-5
    def grads(conv):
        xx, ww, bb = [t.clone().requires_grad_() for t in (x, w, b)]
        out = conv(xx, ww, bb, stride, padding)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return xx.grad, ww.grad, bb.grad
    for ours, theirs in zip(grads(conv2d), grads(F.conv2d)): assert (ours - theirs).abs().max() < 1e-4


def test_im2col_matches_F_unfold():
    "Our columns are F.unfold's with the images side by side: (C*kh*kw, N*oh*ow)."
    x = torch.randn(2, 3, 10, 7)
    for kh, kw, stride, padding in [(3, 3, 1, 1), (2, 4, 2, 0), (5, 1, 3, 2)]:
        cols, oh, ow = im2col(x, kh, kw, stride, padding)
        unf = F.unfold(x, (kh, kw), padding=padding, stride=stride)                  # (N, C*kh*kw, oh*ow)
        assert cols.shape == (3 * kh * kw, 2 * oh * ow)
        assert torch.equal(cols, unf.transpose(0, 1).reshape(3 * kh * kw, 2 * oh * ow))


@pytest.mark.parametrize('channels_last', [False, True, None])
@pytest.mark.parametrize('xs,ws,stride,padding,bias', random_conv_cases(n=8, seed=3))
def test_conv2d_fast_matches_F_conv2d_values_and_gradients(xs, ws, stride, padding, bias, channels_last):
    "The fast path (its own autograd Function) against F.conv2d: output, and gradients for x, weight and bias."
    torch.manual_seed(2)
    x, w = torch.randn(xs), torch.randn(ws[0], xs[1], *ws[2:]) / math.sqrt(xs[1] * ws[2] * ws[3])
    b = torch.randn(ws[0])
    def run(conv):
        xx, ww, bb = [t.clone().requires_grad_() for t in (x, w, b)]
        out = conv(xx, ww, bb if bias else None, stride, padding)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out, xx.grad, ww.grad, bb.grad
    ours = run(lambda *a: conv2d_fast(*a, channels_last=channels_last))
    theirs = run(F.conv2d)
    assert ours[0].shape == theirs[0].shape
    for o, t in zip(ours, theirs):
        if t is None: assert o is None
        else: assert (o - t).abs().max() < 1e-4


def test_conv2d_fast_gradcheck_and_layout():
    "Finite differences in double precision in both layouts; many channels give a channels-last output, no copy."
    g = torch.Generator().manual_seed(0)
    x, w, b = [torch.randn(*s, generator=g, dtype=torch.double, requires_grad=True)
               for s in ((2, 3, 6, 5), (4, 3, 3, 2), (4,))]
    for cl in (False, True):
        assert torch.autograd.gradcheck(lambda *a: conv2d_fast(*a, stride=2, padding=1, channels_last=cl), (x, w, b))
    out = conv2d_fast(torch.randn(2, 16, 8, 8), torch.randn(5, 16, 3, 3), padding=1)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    with pytest.raises(ValueError, match='x has 3 channels but weight expects 2'):
        conv2d_fast(torch.randn(2, 3, 8, 8), torch.randn(4, 2, 3, 3))


def test_conv2d_errors_name_the_shapes():
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r'x has 3 channels but weight expects 2 .*\(2, 3, 8, 8\)'):
        conv2d(x, torch.randn(4, 2, 3, 3))
    with pytest.raises(ValueError, match=r'must be \(N, C, H, W\), got shape \(3, 8, 8\)'):
        conv2d(x[0], torch.randn(4, 3, 3, 3))
    with pytest.raises(ValueError, match=r'bias must have shape \(4,\)'):
        conv2d(x, torch.randn(4, 3, 3, 3), torch.randn(3))
    with pytest.raises(ValueError, match='larger than the padded input'): conv2d(x, torch.randn(4, 3, 9, 9))


# ------------------------------------------------------------------ layers and model

def test_general_relu_matches_its_formula():
    x = torch.linspace(-12, 12, 2001)
    assert torch.equal(GeneralRelu()(x), F.relu(x))
    for leak, sub, maxv in [(0.1, 0.4, 6.), (0.3, None, None), (None, 0.5, 2.), (0.01, 1., None)]:
        slope = leak or 0.
        expected = torch.where(x > 0, x, slope * x) - (sub or 0.)
        if maxv is not None: expected = expected.clamp(max=maxv)
        assert (GeneralRelu(leak, sub, maxv)(x) - expected).abs().max() < 1e-6


def test_general_relu_gradient():
    x = torch.tensor([-2., -0.5, 0.5, 3., 9.], requires_grad=True)
    GeneralRelu(leak=0.1, sub=0.4, maxv=6.)(x).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([0.1, 0.1, 1., 1., 0.]))      # 9 - 0.4 > 6: clamped, no gradient


def test_lambda_flatten_and_mnist_resize():
    assert Lambda(flatten)(torch.zeros(2, 3, 4, 5)).shape == (2, 60)
    x = torch.arange(2 * 784.).view(2, 784)
    assert torch.equal(mnist_resize(x)[1, 0, 3], x[1, 3 * 28:4 * 28])
    with pytest.raises(ValueError, match='784 pixels'): mnist_resize(torch.zeros(2, 28, 28))


def test_cnn_model_shapes_and_layers():
    data = tiny_data()
    model = get_cnn_model(data, [4, 8, 8], leak=0.1, sub=0.4)
    assert model(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(5, 5), (3, 3), (3, 3)] and all(c.stride == (2, 2) for c in convs)
    assert [(g.leak, g.sub) for g in model.modules() if isinstance(g, GeneralRelu)] == [(0.1, 0.4)] * 3
    custom = get_cnn_layers(data, [4], layer=lambda ni, nf, ks, **kw: nn.Conv2d(ni, nf, ks, stride=2))
    assert isinstance(custom[0], nn.Conv2d) and custom[-1].out_features == 10


@pytest.mark.parametrize('uniform', [False, True])
@pytest.mark.parametrize('a', [0., 0.1])
def test_init_cnn_gives_kaiming_std(uniform, a):
    torch.manual_seed(0)
    body = nn.Sequential(conv_layer(64, 64), nn.Sequential(nn.Conv2d(64, 32, 3)), nn.Linear(4, 4))
    model = init_cnn(body, uniform, a)
    lin_w = model[2].weight.clone()
    for conv, fan_in in [(model[0][0], 64 * 9), (model[1][0], 64 * 9)]:
        target = math.sqrt(2 / ((1 + a ** 2) * fan_in))
        assert conv.weight.std().item() == pytest.approx(target, rel=0.03)
        assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
        if uniform: assert conv.weight.abs().max() <= math.sqrt(3) * target * (1 + 1e-6)
    torch.manual_seed(0)
    assert model[2].weight.shape == lin_w.shape                                  # linear layers are left alone


# ------------------------------------------------------------------ callbacks

class Spy(Callback):
    "Writes down the devices and shapes the model sees."
    _order = BatchTransformXCallback._order + 1                        # after every change to the batch
    def begin_fit(self): self.seen = []
    def after_pred(self):
        self.seen.append((self.xb.device, self.yb.device, next(self.model.parameters()).device, tuple(self.xb.shape)))


@pytest.mark.parametrize('device', DEVICES)
def test_device_callback_moves_model_and_batches(device):
    torch.manual_seed(0)
    data = tiny_data()
    model = get_cnn_model(data, [4, 8])
    spy = Spy()
    learn = Learner(model, optim.SGD(model.parameters(), lr=0.1), F.cross_entropy, data,
                    cbs=[DeviceCallback(device), BatchTransformXCallback(mnist_resize), spy])
    learn.fit(1)
    d = torch.device(device)
    assert len(spy.seen) == 5                                                # 3 training + 2 validation batches
    for xd, yd, pd, shape in spy.seen:
        assert (xd.type, yd.type, pd.type) == (d.type,) * 3 and shape[1:] == (1, 28, 28)
    assert all(p.device.type == d.type for p in model.parameters())


def test_callback_orders():
    "The batch reaches the device first, then the transform, so the transform runs on the device."
    assert DeviceCallback._order == Callback._order + 1 and BatchTransformXCallback._order == DeviceCallback._order + 1


def test_default_device_choice():
    d = default_device()
    if torch.cuda.is_available(): assert d.type == 'cuda'
    elif getattr(torch.backends, 'mps', None) is not None and torch.backends.mps.is_available(): assert d.type == 'mps'
    else: assert d.type == 'cpu'
    assert DeviceCallback().device == d


def test_batch_transform_runs_before_the_model():
    torch.manual_seed(0)
    data = tiny_data()
    model = nn.Sequential(Lambda(lambda x: x.flatten(1)), nn.Linear(784, 10))
    spy = Spy()
    Learner(model, optim.SGD(model.parameters(), lr=0.1), F.cross_entropy, data,
            cbs=[BatchTransformXCallback(lambda x: x.view(-1, 4, 14, 14)), spy]).fit(1)
    assert {s[3][1:] for s in spy.seen} == {(4, 14, 14)}


# ------------------------------------------------------------------ hooks

def n_hooks(model): return sum(len(m._forward_hooks) for m in model.modules())


def test_hooks_remove_every_hook_after_a_with_block_that_raised():
    model = get_cnn_model(tiny_data(), [4, 8])
    calls = []
    with pytest.raises(RuntimeError, match='boom'):
        with Hooks(model, lambda h, m, i, o: calls.append(type(m).__name__)) as hooks:
            assert n_hooks(model) == len(model) == len(hooks)
            model(torch.randn(2, 1, 28, 28))
            raise RuntimeError('boom')
    assert n_hooks(model) == 0
    assert len(calls) == len(model)
    model(torch.randn(2, 1, 28, 28))
    assert len(calls) == len(model)                                              # removed hooks no longer run


def test_hook_context_manager_and_hook_argument():
    lin = nn.Linear(3, 2)
    with pytest.raises(ValueError):
        with Hook(lin, lambda h, m, i, o: setattr(h, 'out', o)) as h:
            y = lin(torch.ones(1, 3))
            raise ValueError
    assert torch.equal(h.out, y) and h.m is lin and n_hooks(lin) == 0
    h.remove()                                                                   # removing twice is harmless


def test_hooks_made_halfway_are_removed():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with pytest.raises(AttributeError):
        Hooks([model[0], 'not a module', model[1]], lambda *a: None)
    assert n_hooks(model) == 0


def test_append_stats_mean_std_hist():
    ident = nn.Identity()
    torch.manual_seed(0)
    xs = [torch.randn(20, 3, 5) * 2 + 1, torch.tensor([[-1., 0., 0., 2.]])]
    with Hook(ident, append_stats) as h:
        for x in xs: ident(x)
        ident.eval(); ident(torch.randn(4)); ident.train()
    means, stds, hists = h.stats
    assert len(means) == len(stds) == len(hists) == 2                         # nothing recorded in eval mode
    for m, s, x in zip(means, stds, xs):
        rs, rm = torch.std_mean(x)
        assert m.item() == pytest.approx(rm.item(), abs=1e-5) and s.item() == pytest.approx(rs.item(), rel=1e-4)
    assert torch.equal(get_hist(h)[:, 0], torch.histc(xs[0][:8], 40, -7, 7))   # the first 8 items only
    assert torch.equal(get_hist(h)[:, 1], torch.histc(xs[1], 40, -7, 7))
    assert get_near_zero(h)[1].item() == pytest.approx(0.5)


def test_activation_stats_one_entry_per_layer_per_training_batch():
    torch.manual_seed(0)
    data = tiny_data()
    learn = get_cnn_learner(data, [4, 8, 8], 0.1, cbs=[BatchTransformXCallback(mnist_resize), ActivationStats()],
                            leak=0.1, sub=0.4)
    learn.fit(2)
    hooks = learn.activation_stats.hooks
    assert len(hooks) == 4                                                       # 3 conv layers + the linear layer
    n_train = 2 * len(data.train_dl)
    for h in hooks:
        assert [len(s) for s in h.stats] == [n_train] * 3
        assert get_hist(h).shape == (40, n_train) and get_near_zero(h).shape == (n_train,)
    assert n_hooks(learn.model) == 0                                             # removed after fit
    plt.close('all')


def test_activation_stats_plots_draw_the_recorded_stats():
    torch.manual_seed(0)
    data = tiny_data()
    learn = get_cnn_learner(data, [4, 8], 0.1, cbs=[BatchTransformXCallback(mnist_resize), ActivationStats()])
    learn.fit(2)
    stats, hooks, n_train = learn.activation_stats, learn.activation_stats.hooks, 2 * len(data.train_dl)
    axs = stats.plot_stats(n=4)                                  # the first 4 batches: mean, std
    assert [ax.get_title() for ax in axs] == ['activation mean', 'activation std']
    assert all(ax.get_xlabel() == 'batch' for ax in axs)
    for ax, k in zip(axs, (0, 1)):
        assert [l.get_label() for l in ax.lines] == ['layer 0', 'layer 1', 'layer 2']
        for line, h in zip(ax.lines, hooks):
            assert line.get_ydata() == pytest.approx(torch.stack(h.stats[k][:4]).numpy())
    assert [t.get_text() for t in axs[0].get_legend().get_texts()] == ['layer 0', 'layer 1', 'layer 2']
    axs = stats.plot_hist()
    assert len(axs) == 3 and [ax.get_title() for ax in axs] == ['layer 0', 'layer 1', 'layer 2']
    assert axs[0].get_ylabel() == 'activation'
    for ax, h in zip(axs, hooks):
        (im,) = ax.images
        assert (im.get_array() == get_hist(h).log1p().numpy()).all()           # (bins, batches) of log counts
        assert tuple(im.get_extent()) == (0, n_train, -7., 7.)
    ax = stats.plot_near_zero()
    assert ax.get_title() == 'fraction of activations near zero' and ax.get_ylim() == (0, 1.02)
    assert len(ax.lines) == 3
    for line, h in zip(ax.lines, hooks): assert line.get_ydata() == pytest.approx(get_near_zero(h).numpy())
    plt.close('all')


def test_activation_stats_removes_its_hooks_when_fit_raises():
    class Crash(Callback):
        def after_loss(self):
            if self.n_iter == 1: raise RuntimeError('crash')
    torch.manual_seed(0)
    data = tiny_data()
    learn = get_cnn_learner(data, [4], 0.1, cbs=[BatchTransformXCallback(mnist_resize), ActivationStats()])
    with pytest.raises(RuntimeError, match='crash'): learn.fit(1, cbs=Crash())
    assert n_hooks(learn.model) == 0
    assert [len(s) for s in learn.activation_stats.hooks[0].stats] == [2, 2, 2]


def test_cnn_learner_trains():
    "A few epochs on a learnable toy problem lower the loss a lot and beat chance on held-out data."
    torch.manual_seed(0)
    data = tiny_data(n_train=64, n_valid=32)
    learn = get_cnn_learner(data, [8, 16, 32], 0.1, cbs=[BatchTransformXCallback(mnist_resize),
                            AvgStatsCallback(show=False)], opt_func=lambda p, lr: optim.SGD(p, lr=lr, momentum=0.9),
                            leak=0.1, sub=0.4, maxv=6.)
    learn.fit(8)
    h = learn.avg_stats.history
    assert h[-1]['train_loss'] < 0.5 * h[0]['train_loss']
    assert h[-1]['valid_loss'] < 0.5 * math.log(10)                              # chance: log(10)
