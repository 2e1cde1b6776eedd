"""Tests for exp.nb_11a: class_subset, save/load of pretrained weights (tensors only), replace_head, freeze_body
(batchnorm stays trainable), unfreeze_all, body_head_splitter with discriminative one-cycle schedules, and a tiny
pretrain-then-fine-tune run on the shipped Fashion-MNIST sample."""
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from exp.nb_00a import load_fashion_sample
from exp.nb_03 import ArrayDataset, get_dls
from exp.nb_04 import DataBunch, Learner, eval_mode
from exp.nb_05 import one_cycle_cbs
from exp.nb_07 import BatchNorm
from exp.nb_09 import adam_opt
from exp.nb_11 import xresnet18
from exp.nb_11a import (
    body_head_splitter,
    class_subset,
    freeze_body,
    load_pretrained,
    one_cycle_group_cbs,
    replace_head,
    save_pretrained,
    unfreeze_all,
)

SMALL = dict(stem=(4, 8), widths=(8, 8, 16, 16))


def tiny_model(c_out=5):
    return xresnet18(c_in=1, c_out=c_out, **SMALL)


def test_class_subset_keeps_and_relabels():
    x = torch.arange(10.)[:, None]
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    xs, ys = class_subset(x, y, (7, 2, 9))
    assert xs[:, 0].tolist() == [2., 7., 9.] and ys.tolist() == [1, 0, 2]
    with pytest.raises(ValueError, match='repeated'):
        class_subset(x, y, (1, 1))


def test_replace_head():
    torch.manual_seed(0)
    m = tiny_model(5)
    body_before = [p.clone() for p in list(m.parameters())[:-2]]
    replace_head(m, 3)
    assert isinstance(m[-1], nn.Linear) and m[-1].out_features == 3 and m(torch.randn(2, 1, 28, 28)).shape == (2, 3)
    assert all(torch.equal(a, b) for a, b in zip(body_before, list(m.parameters())[:-2]))
    with pytest.raises(TypeError, match='nn.Linear'):
        replace_head(nn.Sequential(nn.Linear(3, 3), nn.ReLU()), 2)


def is_bn(m):
    return isinstance(m, (nn.modules.batchnorm._BatchNorm, BatchNorm))


@pytest.mark.parametrize('train_bn', [True, False])
def test_freeze_body_leaves_batchnorm_and_head_trainable(train_bn):
    m = freeze_body(tiny_model(), train_bn=train_bn)
    head = m[-1]
    n_bn = 0
    for layer in list(m.children())[:-1]:
        for mod in layer.modules():
            for p in mod.parameters(recurse=False):
                assert p.requires_grad == (train_bn and is_bn(mod)), type(mod).__name__
                n_bn += is_bn(mod)
    assert n_bn > 0 and all(p.requires_grad for p in head.parameters())
    unfreeze_all(m)
    assert all(p.requires_grad for p in m.parameters())


def test_frozen_training_changes_only_batchnorm_and_head():
    torch.manual_seed(0)
    m = freeze_body(tiny_model())
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = adam_opt(m.parameters(), lr=1e-2, wd=1e-2)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(m(torch.randn(8, 1, 28, 28)), torch.randint(0, 5, (8,))).backward()
        opt.step()
    bn_names = {f'{n}.{k}' for n, mod in m.named_modules() if is_bn(mod) for k, _ in mod.named_parameters()}
    head_names = {n for n, _ in m.named_parameters() if n.startswith(f'{len(m) - 1}.')}
    for n, p in m.named_parameters():
        changed = not torch.equal(p, before[n])
        if n in head_names: assert changed, n
        elif n not in bn_names: assert not changed, n      # frozen convs: untouched, also by weight decay
    assert any(not torch.equal(dict(m.named_parameters())[n], before[n]) for n in bn_names)


def test_body_head_splitter_and_group_schedules():
    m = tiny_model()
    body, head = body_head_splitter(m)
    assert head == list(m[-1].parameters())
    ids = [id(p) for p in body + head]
    assert len(ids) == len(set(ids)) == len(list(m.parameters()))
    (sched,) = one_cycle_group_cbs([1e-3, 1e-2], pct_start=0.3, div=25.)
    lo, hi = sched.scheds
    assert abs(lo(0.3) - 1e-3) < 1e-12 and abs(hi(0.3) - 1e-2) < 1e-12 and abs(hi(0.) - 1e-2 / 25) < 1e-12


def test_save_and_load_pretrained(tmp_path):
    torch.manual_seed(0)
    a, b = tiny_model(), tiny_model()
    a(torch.randn(4, 1, 28, 28))                             # batchnorm running statistics move too
    path = save_pretrained(a, tmp_path / 'sub' / 'w.pt')
    assert sorted(p.name for p in path.parent.iterdir()) == ['w.pt']  # no temporary file left behind
    load_pretrained(b, path)
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_load_pretrained_refuses_pickled_objects(tmp_path):
    class Sneaky:
        def __reduce__(self): return (print, ('ran',))
    torch.save({'w': torch.ones(1), 'x': Sneaky()}, tmp_path / 'bad.pt')
    with pytest.raises(Exception, match='[Ww]eights only'):
        load_pretrained(tiny_model(), tmp_path / 'bad.pt')


def test_pretrain_then_fine_tune_on_the_sample_lowers_the_loss(tmp_path):
    "Fine-tuning starts from the saved weights (a load_pretrained that does nothing fails here) and learns."
    x_train, y_train, x_valid, y_valid = load_fashion_sample()
    m, s = x_train.mean(), x_train.std()
    x_train, x_valid = (((x - m) / s).view(-1, 1, 28, 28) for x in (x_train, x_valid))
    xa, ya = class_subset(x_train, y_train, (0, 2, 3, 5, 8))
    xb, yb = class_subset(x_train, y_train, (1, 4, 6, 7, 9))
    opt = partial(adam_opt, wd=1e-2)
    torch.manual_seed(0)
    pre_data = DataBunch(*get_dls(ArrayDataset(xa[:512], ya[:512]), ArrayDataset(xa[:64], ya[:64]), 64), c=5)
    pre = Learner(tiny_model(), opt, F.cross_entropy, pre_data, lr=1e-2)
    pre.fit(1, cbs=one_cycle_cbs(1e-2))
    path = save_pretrained(pre.model, tmp_path / 'pre.pt')
    model = load_pretrained(tiny_model(), path)
    saved = pre.model.state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())   # the pretrained weights, loaded
    with eval_mode(model), eval_mode(pre.model):                                    # so the body computes the same
        body = lambda m: nn.Sequential(*list(m.children())[:-1])
        assert torch.equal(body(model)(xb[:64]), body(pre.model)(xb[:64]))
    model = freeze_body(replace_head(model, 5))
    data = DataBunch(*get_dls(ArrayDataset(xb[:256], yb[:256]), ArrayDataset(xb[:256], yb[:256]), 64), c=5)
    learn = Learner(model, opt, F.cross_entropy, data, lr=1e-2, splitter=body_head_splitter)

    def loss_now():
        with eval_mode(model): return F.cross_entropy(model(xb[:256]), yb[:256]).item()
    start = loss_now()
    learn.fit(2, cbs=one_cycle_group_cbs([1e-2, 1e-2]))
    unfreeze_all(model)
    learn.fit(8, cbs=one_cycle_group_cbs([3e-3, 1e-2]), reset_opt=True)
    assert [len(g['params']) for g in learn.opt.param_groups] == [len(p) for p in body_head_splitter(model)]
    end = loss_now()
    assert end < 0.7 * start, (start, end)
