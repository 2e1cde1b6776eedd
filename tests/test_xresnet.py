"""Tests for exp.nb_11: ResBlock and XResNet (shapes, parameter counts from the architecture, shortcuts,
zero-initialised branches), avg_pool2x2 and flops_summary against PyTorch,
the confusion matrix, and a tiny fit on the shipped sample."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from exp.nb_00a import get_fashion
from exp.nb_02 import normalize
from exp.nb_03 import ArrayDataset, get_dls
from exp.nb_04 import AvgStatsCallback, DataBunch
from exp.nb_11 import (
    ResBlock,
    XResNet,
    avg_pool2x2,
    confusion_matrix,
    flops_summary,
    most_confused,
    valid_preds,
    xres_learner,
    xresnet18,
    xresnet34,
    xresnet50,
)


def conv_params(ni, nf, ks):
    "A bias-free ks x ks conv from ni to nf channels and its batchnorm (scale and shift)."
    return ni * nf * ks * ks + 2 * nf


def expected_params(expansion, layers, c_in=1, c_out=10, stem=(16, 32), widths=(32, 64, 128, 256)):
    "Parameter count of an XResNet from the architecture: stem convs, blocks (branch + shortcut), linear head."
    sizes = [c_in, *stem]
    n = sum(conv_params(a, b, 3) for a, b in zip(sizes, sizes[1:]))
    prev = stem[-1]
    for nh, k in zip(widths, layers):
        nf = nh * expansion
        for j in range(k):
            ni = prev if j == 0 else nf
            if expansion == 1: n += conv_params(ni, nh, 3) + conv_params(nh, nf, 3)
            else: n += conv_params(ni, nh, 1) + conv_params(nh, nh, 3) + conv_params(nh, nf, 1)
            if ni != nf: n += conv_params(ni, nf, 1)
        prev = nf
    return n + prev * c_out + c_out


def n_params(m): return sum(p.numel() for p in m.parameters())


def test_xresnet18_output_shape():
    torch.manual_seed(0)
    assert xresnet18()(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert xresnet18(c_in=3, c_out=5)(torch.randn(2, 3, 28, 28)).shape == (2, 5)


@pytest.mark.parametrize('arch, expansion, layers', [(xresnet18, 1, (2, 2, 2, 2)), (xresnet34, 1, (3, 4, 6, 3)),
                                                     (xresnet50, 4, (3, 4, 6, 3))])
def test_parameter_count_from_architecture(arch, expansion, layers):
    assert n_params(arch()) == expected_params(expansion, layers)
    kw = dict(stem=(8, 16), widths=(8, 16))
    assert n_params(XResNet(expansion, (1, 2), c_in=3, c_out=7, **kw)) == expected_params(expansion, (1, 2), 3, 7, **kw)


def test_expansion_4_blocks():
    blocks = [m for m in xresnet50().modules() if isinstance(m, ResBlock)]
    assert len(blocks) == 3 + 4 + 6 + 3
    for b in blocks:
        convs = [s[0] for s in b.convs]
        assert [c.kernel_size for c in convs] == [(1, 1), (3, 3), (1, 1)]
        assert convs[-1].out_channels == 4 * convs[0].out_channels
    b = ResBlock(4, 16, 32, stride=2)
    assert b(torch.randn(2, 64, 7, 7)).shape == (2, 128, 4, 4)
    assert b.convs[1][0].stride == (2, 2) and b.convs[0][0].stride == (1, 1)   # stride on the 3x3 conv (ResNet-B)


def test_shortcut_types():
    same = ResBlock(1, 32, 32)
    assert isinstance(same.pool, nn.Identity) and isinstance(same.idconv, nn.Identity)
    wider = ResBlock(1, 16, 32)
    assert isinstance(wider.pool, nn.Identity) and wider.idconv[0].kernel_size == (1, 1)
    down = ResBlock(1, 16, 32, stride=2)
    assert isinstance(down.pool, nn.AvgPool2d)
    assert down.idconv[0].kernel_size == (1, 1) and down.idconv[0].stride == (1, 1)
    assert down(torch.randn(2, 16, 28, 28)).shape == (2, 32, 14, 14)
    with pytest.raises(ValueError, match='expansion must be 1'): ResBlock(2, 16, 16)


def test_last_batchnorm_zero_and_block_starts_as_shortcut():
    for b in (m for m in xresnet18().modules() if isinstance(m, ResBlock)):
        bn = b.convs[-1][1]
        assert isinstance(bn, nn.BatchNorm2d) and (bn.weight == 0).all()
        assert all((s[1].weight == 1).all() for s in b.convs[:-1])
    x = torch.randn(4, 32, 7, 7).relu()
    for b in (ResBlock(1, 32, 32), ResBlock(4, 8, 8)):
        for mode in (True, False):
            torch.testing.assert_close(b.train(mode)(x), x)                  # identity shortcut: block(x) == x
    down = ResBlock(1, 32, 64, stride=2).eval()
    torch.testing.assert_close(down(x), down.idconv(down.pool(x)).relu())


def test_avg_pool_matches_pytorch():
    for size in (28, 7, 6, 3, 1):
        x = torch.randn(2, 3, size, size + 1)
        torch.testing.assert_close(avg_pool2x2(x), nn.AvgPool2d(2, ceil_mode=True)(x))


def test_flops_summary_matches_formula_and_pytorch():
    from torch.utils.flop_counter import FlopCounterMode
    m, x = xresnet18(), torch.randn(2, 1, 28, 28)
    rows = flops_summary(m, x, show=False)
    assert rows[0][1] == (16, 28, 28) and rows[0][3] == pytest.approx(2 * 28 * 28 * 16 * 1 * 9 / 1e6)
    assert sum(r[2] for r in rows) == n_params(m)
    with FlopCounterMode(display=False) as fc, torch.no_grad(): m.eval()(x[:1])
    assert sum(r[3] for r in rows) == pytest.approx(fc.get_total_flops() / 1e6)


def test_confusion_matrix():
    g = torch.Generator().manual_seed(0)
    targ, pred = torch.randint(0, 4, (200,), generator=g), torch.randint(0, 4, (200,), generator=g)
    cm = confusion_matrix(pred, targ, 4)
    for a in range(4):
        for p in range(4): assert cm[a, p] == ((targ == a) & (pred == p)).sum()


def test_most_confused_gives_off_diagonal_pairs_only():
    classes = ['a', 'b', 'cross']
    assert most_confused(torch.tensor([[0, 0, 20], [0, 0, 20], [0, 0, 20]]), classes) == [
        ('a', 'cross', 20), ('b', 'cross', 20)]                          # not ('cross', 'cross', 0) nor zeros
    cm = torch.tensor([[9, 1, 4], [3, 8, 0], [0, 2, 7]])
    assert most_confused(cm, classes, n=2) == [('a', 'cross', 4), ('b', 'a', 3)]
    assert most_confused(torch.eye(3, dtype=torch.long) * 5, classes) == []  # a perfect model confuses nothing


def test_xres_learner_reports_by_default_and_report_false_silences_it(capsys):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
    data = DataBunch(*get_dls(ArrayDataset(x[:24], y[:24]), ArrayDataset(x[24:], y[24:]), 8), c=3)
    tiny = dict(arch=XResNet, expansion=1, layers=(1,), stem=(4,), widths=(8,))
    xres_learner(data, **tiny).fit(1)
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ['epoch', 'train_loss', 'train_accuracy', 'valid_loss', 'valid_accuracy', 'time']
    assert table[1].split()[0] == '0' and len(table) == 2
    quiet = xres_learner(data, report=False, **tiny)
    quiet.fit(1)
    assert capsys.readouterr().out == '' and not hasattr(quiet, 'avg_stats') and not hasattr(quiet, 'progress')
    own = xres_learner(data, cbs=[AvgStatsCallback(show=False)], **tiny)   # its own table: not a second one
    assert [type(c) for c in own.cbs].count(AvgStatsCallback) == 1 and hasattr(own, 'progress')


def test_tiny_fit_on_sample_lowers_loss(empty_data):
    x_train, y_train, x_valid, y_valid = get_fashion()       # an empty data folder: the shipped sample
    assert len(x_train) == 6000
    m, s = x_train.mean(), x_train.std()
    xt, xv = (normalize(x, m, s).view(-1, 1, 28, 28) for x in (x_train[:1024], x_valid[:256]))
    data = DataBunch(*get_dls(ArrayDataset(xt, y_train[:1024]), ArrayDataset(xv, y_valid[:256]), 64), c=10)
    torch.manual_seed(0)
    learn = xres_learner(data, XResNet, lr=1e-2, expansion=1, layers=(1, 1), stem=(8, 16), widths=(16, 32))
    before = F.cross_entropy(*valid_preds(learn)).item()
    learn.fit(2)
    after = F.cross_entropy(*valid_preds(learn)).item()
    assert after < before - 0.3, (before, after)
