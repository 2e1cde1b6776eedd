"""Tests for exp.nb_09: the generic Optimizer, steppers, StatefulOptimizer and stats, sgd_opt/adam_opt/lamb_opt
against PyTorch (and LAMB against the paper), state_dict, the foreach fast path, and the Learner that builds its
optimizer."""
import copy
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from exp.nb_03 import ArrayDataset, DataLoader, Sampler
from exp.nb_04 import DataBunch, Learner
from exp.nb_05 import ParamScheduler, Recorder, find_lr, sched_lin, sched_no
from exp.nb_09 import (
    AverageGrad,
    AverageSqrGrad,
    ForeachOptimizer,
    Optimizer,
    Stat,
    StatefulOptimizer,
    StepCount,
    adam_opt,
    adam_step,
    debias,
    l2_reg,
    lamb_opt,
    momentum_step,
    sgd_opt,
    sgd_step,
    weight_decay,
)


def small_model(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3)).to(dtype)


def two_groups(model, lr2=0.02):
    "First layer (the optimizer's default lr) and last layer (lr2): PyTorch-style groups."
    return [{'params': list(model[0].parameters())}, {'params': list(model[2].parameters()), 'lr': lr2}]


def run(model, opt, n=200, seed=1):
    "Train `model` with `opt` for `n` steps on fixed random batches."
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(8, 6, generator=g).to(next(model.parameters()).dtype)
        y = torch.randint(0, 3, (8,), generator=g)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    return model


def max_diff(m1, m2):
    return max((a - b).abs().max().item() for a, b in zip(m1.parameters(), m2.parameters()))


def moved(m, m0):
    return max_diff(m, m0) > 1e-3


# ------------------------------------------------------------------ against PyTorch

@pytest.mark.parametrize('mom', [0., 0.9])
@pytest.mark.parametrize('wd', [0., 1e-2])
@pytest.mark.parametrize('foreach', [False, True])
def test_sgd_opt_matches_torch_sgd(mom, wd, foreach):
    m0 = small_model()
    m1, m2 = copy.deepcopy(m0), copy.deepcopy(m0)
    run(m1, sgd_opt(two_groups(m1), 0.1, mom=mom, wd=wd, foreach=foreach))
    run(m2, torch.optim.SGD(two_groups(m2), 0.1, momentum=mom, weight_decay=wd))
    assert moved(m1, m0)
    assert max_diff(m1, m2) < 1e-6


@pytest.mark.parametrize('wd', [0., 1e-2])
@pytest.mark.parametrize('foreach', [False, True])
@pytest.mark.parametrize('betas,eps', [((0.9, 0.99), 1e-5), ((0.8, 0.999), 1e-8)])
def test_adam_opt_matches_torch_adamw(wd, foreach, betas, eps):
    m0 = small_model()
    m1, m2 = copy.deepcopy(m0), copy.deepcopy(m0)
    run(m1, adam_opt(two_groups(m1), 1e-2, mom=betas[0], sqr_mom=betas[1], eps=eps, wd=wd, foreach=foreach))
    run(m2, torch.optim.AdamW(two_groups(m2), 1e-2, betas=betas, eps=eps, weight_decay=wd))
    assert moved(m1, m0)
    assert max_diff(m1, m2) < 1e-6


def test_adam_opt_with_wd_0_is_adam():
    m0 = small_model()
    m1, m2 = copy.deepcopy(m0), copy.deepcopy(m0)
    run(m1, adam_opt(m1.parameters(), 3e-3))
    run(m2, torch.optim.Adam(m2.parameters(), 3e-3, betas=(0.9, 0.99), eps=1e-5))
    assert max_diff(m1, m2) < 1e-6


def test_weight_decay_matters_in_the_comparison():
    "The checks above can fail: wd changes the trajectory by far more than the tolerance."
    m0 = small_model()
    m1, m2 = copy.deepcopy(m0), copy.deepcopy(m0)
    run(m1, adam_opt(m1.parameters(), 1e-2, wd=0.))
    run(m2, torch.optim.AdamW(m2.parameters(), 1e-2, betas=(0.9, 0.99), eps=1e-5, weight_decay=1e-1))
    assert max_diff(m1, m2) > 1e-4


# ------------------------------------------------------------------ LAMB against the paper

def paper_lamb(model, lr, b1, b2, eps, wd, n=200, seed=1):
    "Algorithm 2 of You et al. 2019 written out directly (trust ratio 1 where a norm is 0), on `model`'s tensors."
    ps = list(model.parameters())
    m, v = [torch.zeros_like(p) for p in ps], [torch.zeros_like(p) for p in ps]
    g = torch.Generator().manual_seed(seed)
    for t in range(1, n + 1):
        x = torch.randn(8, 6, generator=g).to(ps[0].dtype)
        y = torch.randint(0, 3, (8,), generator=g)
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), ps)
        with torch.no_grad():
            for i, (w, gr) in enumerate(zip(ps, grads)):
                m[i] = b1 * m[i] + (1 - b1) * gr
                v[i] = b2 * v[i] + (1 - b2) * gr ** 2
                r = (m[i] / (1 - b1 ** t)) / ((v[i] / (1 - b2 ** t)).sqrt() + eps)
                u = r + wd * w
                wn, un = w.norm().item(), u.norm().item()
                w -= lr * (wn / un if wn > 0 and un > 0 else 1.) * u
    return model


@pytest.mark.parametrize('wd', [0., 1e-2])
@pytest.mark.parametrize('betas,eps', [((0.9, 0.99), 1e-6), ((0.8, 0.999), 1e-8)])
def test_lamb_matches_the_paper_in_float64(wd, betas, eps):
    m0 = small_model(torch.float64)
    nn.init.zeros_(m0[0].bias)                  # a zero-norm tensor: trust ratio 1 on the first step
    m1, m2 = copy.deepcopy(m0), copy.deepcopy(m0)
    run(m1, lamb_opt(m1.parameters(), 1e-2, mom=betas[0], sqr_mom=betas[1], eps=eps, wd=wd))
    paper_lamb(m2, 1e-2, *betas, eps, wd)
    assert moved(m1, m0)
    assert max_diff(m1, m2) < 1e-10
    m3 = small_model(torch.float32)             # the float32 run stays close to the float64 reference
    m3.load_state_dict({k: v.float() for k, v in m0.state_dict().items()})
    run(m3, lamb_opt(m3.parameters(), 1e-2, mom=betas[0], sqr_mom=betas[1], eps=eps, wd=wd))
    assert max_diff(m3.double(), m2) < 1e-4


def test_lamb_moves_each_tensor_by_lr_times_its_norm():
    w = torch.randn(50, requires_grad=True)
    opt = lamb_opt([w], 1e-2, wd=0.3)
    w.grad = torch.randn(50) * 1e3
    w0 = w.detach().clone()
    opt.step()
    assert (w.detach() - w0).norm().item() == pytest.approx(1e-2 * w0.norm().item(), rel=1e-5)


# ------------------------------------------------------------------ the pieces

def test_groups_defaults_and_overrides():
    m = small_model()
    opt = Optimizer(two_groups(m, 0.5), [weight_decay, sgd_step], lr=0.1)
    assert [pg['lr'] for pg in opt.param_groups] == [0.1, 0.5]
    assert [pg['wd'] for pg in opt.param_groups] == [0., 0.]        # declared by weight_decay's _defaults
    assert opt.param_groups[0]['params'] == list(m[0].parameters())
    one = Optimizer(m.parameters(), sgd_step, lr=0.1)                # a plain iterable of tensors: one group
    assert len(one.param_groups) == 1 and len(one.param_groups[0]['params']) == 4
    lists = Optimizer([list(m[0].parameters()), list(m[2].parameters())], sgd_step, lr=0.1)
    assert len(lists.param_groups) == 2


def test_optimizer_refuses_bad_params():
    m = small_model()
    with pytest.raises(ValueError, match='no parameters'): Optimizer([], sgd_step, lr=0.1)
    with pytest.raises(ValueError, match='more than one group'):
        Optimizer([list(m.parameters()), [m[0].weight]], sgd_step, lr=0.1)


def test_step_skips_params_without_grad_and_zero_grad_clears():
    m = small_model()
    opt = adam_opt(m.parameters(), 1e-2)
    w0, b0 = m[2].weight.detach().clone(), m[0].bias.detach().clone()
    m[0].weight.grad = torch.ones_like(m[0].weight)
    opt.step()
    assert torch.equal(m[2].weight, w0) and torch.equal(m[0].bias, b0)
    assert list(opt.state) == [m[0].weight] and opt.state[m[0].weight]['step'] == 1
    opt.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_l2_reg_and_weight_decay_same_for_sgd_not_for_adam():
    m0 = small_model()
    ms = [copy.deepcopy(m0) for _ in range(4)]
    run(ms[0], Optimizer(ms[0].parameters(), [l2_reg, sgd_step], lr=0.1, wd=0.1))
    run(ms[1], Optimizer(ms[1].parameters(), [weight_decay, sgd_step], lr=0.1, wd=0.1))
    assert max_diff(ms[0], ms[1]) < 1e-6
    stats = lambda: [AverageGrad(dampening=True), AverageSqrGrad(), StepCount()]
    run(ms[2], StatefulOptimizer(ms[2].parameters(), [l2_reg, *stats(), adam_step], lr=1e-2, wd=0.5))
    run(ms[3], StatefulOptimizer(ms[3].parameters(), [weight_decay, *stats(), adam_step], lr=1e-2, wd=0.5))
    assert max_diff(ms[2], ms[3]) > 1e-3


def test_stats_and_debias():
    p = torch.zeros(3, requires_grad=True)
    stats = [AverageGrad(), AverageGrad(dampening=True), AverageSqrGrad(), StepCount()]
    state = {}
    for s in stats: state.update(s.init_state(p))
    for g in (1., 3.):
        p.grad = torch.full((3,), g)
        for s in stats[:1]: s.update(p, state, mom=0.5)
    assert state['grad_avg'].tolist() == [3.5] * 3 and state['mom_damp'] == 1.      # 0.5*1 + 3
    assert debias(0.9, 0.1, 1) == pytest.approx(0.1) and debias(0.9, 1., 3) == pytest.approx(1 + 0.9 + 0.81)
    assert debias(0.9, 0.1, 500) == pytest.approx(1.)
    with pytest.raises(NotImplementedError): Stat().init_state(p)


def test_debiased_adam_steps_are_lr_for_a_constant_gradient():
    w = torch.zeros(1, requires_grad=True)
    opt = adam_opt([w], lr=1., sqr_mom=0.999, eps=0.)
    for _ in range(5):
        before = w.item()
        w.grad = torch.full((1,), 2.)
        opt.step()
        assert before - w.item() == pytest.approx(1., rel=1e-6)


def test_custom_recipe_order_matters():
    "Stats update where they stand in the list: L2 before AverageGrad is averaged, after it is not."
    m0 = small_model()
    m1, m2 = copy.deepcopy(m0), copy.deepcopy(m0)
    run(m1, StatefulOptimizer(m1.parameters(), [l2_reg, AverageGrad(), momentum_step], lr=0.1, mom=0.9, wd=0.1))
    run(m2, StatefulOptimizer(m2.parameters(), [AverageGrad(), l2_reg, momentum_step], lr=0.1, mom=0.9, wd=0.1))
    assert max_diff(m1, m2) > 1e-4


# ------------------------------------------------------------------ state_dict

@pytest.mark.parametrize('make', [partial(adam_opt, lr=1e-2, wd=1e-2), partial(sgd_opt, lr=0.1, mom=0.9, wd=1e-2),
                                  partial(lamb_opt, lr=1e-2), partial(adam_opt, lr=1e-2, foreach=True)])
def test_state_dict_round_trip_resumes_the_trajectory(make):
    m0 = small_model()
    m_all, m_half = copy.deepcopy(m0), copy.deepcopy(m0)
    run(m_all, make(two_groups(m_all)), n=60, seed=1)
    opt = make(two_groups(m_half))
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(60)]
    for x, y in batches[:30]: F.cross_entropy(m_half(x), y).backward(); opt.step(); opt.zero_grad()
    sd_model, sd_opt = copy.deepcopy(m_half.state_dict()), opt.state_dict()
    for x, y in batches[30:40]:                  # training on after saving leaves the saved copy alone
        F.cross_entropy(m_half(x), y).backward(); opt.step(); opt.zero_grad()
    m_new = small_model(seed=5)
    m_new.load_state_dict(sd_model)
    opt_new = make(two_groups(m_new, lr2=0.7))
    opt_new.param_groups[0]['lr'] = 99.
    opt_new.load_state_dict(sd_opt)
    assert [pg['lr'] for pg in opt_new.param_groups] == [pg['lr'] for pg in opt.param_groups]
    for x, y in batches[30:]: F.cross_entropy(m_new(x), y).backward(); opt_new.step(); opt_new.zero_grad()
    assert max_diff(m_new, m_all) == 0.


def test_state_dict_shape_and_bad_load():
    m = small_model()
    opt = adam_opt(two_groups(m), 1e-2)
    run(m, opt, n=2)
    sd = opt.state_dict()
    assert [g['params'] for g in sd['param_groups']] == [[0, 1], [2, 3]]
    assert set(sd['state']) == {0, 1, 2, 3} and sd['state'][0]['step'] == 2
    other = adam_opt(m.parameters(), 1e-2)
    with pytest.raises(ValueError, match=r'\[2, 2\] parameters, this optimizer.s \[4\]'): other.load_state_dict(sd)


def test_foreach_optimizer_is_a_stateful_optimizer_with_same_state_keys():
    m = small_model()
    a, b = adam_opt(m.parameters(), 1e-2), adam_opt(copy.deepcopy(m).parameters(), 1e-2, foreach=True)
    assert isinstance(b, ForeachOptimizer) and isinstance(b, StatefulOptimizer)
    run(m, a, n=1)
    m2 = nn.Sequential(*[nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3)])
    b = adam_opt(m2.parameters(), 1e-2, foreach=True)
    run(m2, b, n=1)
    assert [sorted(s) for s in a.state.values()] == [sorted(s) for s in b.state.values()]


# ------------------------------------------------------------------ the Learner builds its optimizer

def make_data(n_train=32, n_valid=16, bs=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_valid, 6, generator=g)
    y = (x[:, 0] - x[:, 2] > 0).long()
    tds, vds = ArrayDataset(x[:n_train], y[:n_train]), ArrayDataset(x[n_train:], y[n_train:])
    dl = lambda ds: DataLoader(ds, Sampler(ds, bs), batched=True)
    return DataBunch(dl(tds), dl(vds), c=2)


def body_head(m): return [list(m[0].parameters()), list(m[2].parameters())]


def test_learner_builds_groups_and_scheduler_changes_group_lr():
    m = small_model()
    m[2] = nn.Linear(12, 2)
    w0 = m[0].weight.detach().clone()
    scheds = [sched_no(0., 0.), sched_lin(0.1, 0.3)]       # the body frozen by its schedule, the head scheduled
    learn = Learner(m, partial(adam_opt, wd=0.), F.cross_entropy, make_data(), lr=1e-2, splitter=body_head,
                    cbs=Recorder(hypers=('lr', 'mom')))
    assert isinstance(learn.opt, StatefulOptimizer) and len(learn.opt.param_groups) == 2
    assert [pg['lr'] for pg in learn.opt.param_groups] == [1e-2, 1e-2]
    learn.fit(2, cbs=ParamScheduler('lr', scheds))
    lrs = learn.recorder.lrs
    assert lrs[0] == [0.] * 8 and lrs[1][0] == pytest.approx(0.1) and lrs[1][-1] == pytest.approx(0.1 + 0.2 * 7 / 8)
    assert learn.opt.param_groups[1]['lr'] == pytest.approx(lrs[1][-1])
    assert learn.recorder.vals['mom'][0] == [0.9] * 8
    assert torch.equal(m[0].weight, w0)


def test_learner_reset_opt_and_torch_opt_funcs():
    m = small_model()
    m[2] = nn.Linear(12, 2)
    learn = Learner(m, partial(sgd_opt, mom=0.9), F.cross_entropy, make_data(), lr=0.1)
    learn.fit(1)
    opt1 = learn.opt
    assert len(opt1.state) == 4
    learn.fit(1, reset_opt=True)
    assert learn.opt is not opt1 and learn.opt.param_groups[0]['lr'] == 0.1
    learn = Learner(m, torch.optim.Adam, F.cross_entropy, make_data())           # lr=None: the function's default
    assert learn.opt.param_groups[0]['lr'] == 1e-3
    learn = Learner(m, torch.optim.SGD(m.parameters(), lr=0.1), F.cross_entropy, make_data())   # an object, as before
    learn.fit(1)
    with pytest.raises(ValueError, match='cannot build a new one'): learn.fit(1, reset_opt=True)


def test_find_lr_restores_our_optimizer():
    m = small_model()
    m[2] = nn.Linear(12, 2)
    learn = Learner(m, adam_opt, F.cross_entropy, make_data(), lr=1e-2)
    learn.fit(1)
    before = copy.deepcopy(learn.opt.state_dict())
    model_before = copy.deepcopy(m.state_dict())
    find_lr(learn, max_iter=5)
    after = learn.opt.state_dict()
    assert after['param_groups'] == before['param_groups']
    assert all(torch.equal(after['state'][i]['grad_avg'], before['state'][i]['grad_avg']) for i in before['state'])
    assert all(torch.equal(v, model_before[k]) for k, v in m.state_dict().items())


@pytest.mark.parametrize('chunk', [1, 50, 2**30])
def test_foreach_chunks_do_not_change_the_result(chunk):
    "Chunks of 1 tensor, of a few tensors (50 elements: the 12x6 weight alone, biases together), one chunk per group."
    m0 = small_model()
    m1, m2 = copy.deepcopy(m0), copy.deepcopy(m0)
    opt = adam_opt(two_groups(m1), 1e-2, wd=1e-2, foreach=True)
    opt.chunk = chunk
    run(m1, opt)
    run(m2, torch.optim.AdamW(two_groups(m2), 1e-2, betas=(0.9, 0.99), eps=1e-5, weight_decay=1e-2))
    assert max_diff(m1, m2) < 1e-6


def test_chunks():
    from exp.nb_09 import _chunks
    ps = [torch.zeros(n) for n in (3, 4, 10, 1, 1)]
    sizes = lambda cs: [[p.numel() for p in c] for c in cs]
    assert sizes(_chunks(ps, 7)) == [[3, 4], [10], [1, 1]]
    assert sizes(_chunks(ps, 100)) == [[3, 4, 10, 1, 1]]
    assert _chunks([], 5) == []


def test_steppers_must_be_functions_or_stats():
    m = small_model()
    with pytest.raises(TypeError, match='a Stat needs a StatefulOptimizer'):
        Optimizer(m.parameters(), [AverageGrad(), momentum_step], lr=0.1)
    with pytest.raises(TypeError, match='3 is not a stepper'): StatefulOptimizer(m.parameters(), [3], lr=0.1)
    StatefulOptimizer(m.parameters(), [AverageGrad(), momentum_step], lr=0.1)          # fine
    with pytest.raises(ValueError, match='ForeachOptimizer: got no parameters'): sgd_opt([], 0.1, foreach=True)


def test_plain_optimizer_has_the_patched_state_dict():
    "state_dict/load_state_dict are Optimizer's own methods (added with patch), so a stateless optimizer has them."
    assert Optimizer.state_dict.__qualname__ == 'Optimizer.state_dict'
    assert Optimizer.load_state_dict.__qualname__ == 'Optimizer.load_state_dict'
    m = small_model()
    a = Optimizer(m.parameters(), sgd_step, lr=0.3)
    sd = a.state_dict()
    assert sd['state'] == {} and sd['param_groups'][0]['params'] == [0, 1, 2, 3]
    b = Optimizer(m.parameters(), sgd_step, lr=1.)
    b.load_state_dict(sd)
    assert b.param_groups[0]['lr'] == 0.3
