"""Tests for exp.nb_05: schedules, combine_scheds, ParamScheduler, Recorder and the LR finder (tiny synthetic data)."""
import copy
import math
from functools import partial

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F

from exp.nb_03 import ArrayDataset, get_dls
from exp.nb_04 import AvgStatsCallback, Callback, CancelTrainException, DataBunch, TrainEvalCallback, get_learner
from exp.nb_05 import (
    LR_Find,
    ParamScheduler,
    Recorder,
    combine_scheds,
    find_lr,
    one_cycle_cbs,
    paired_diff,
    paired_verdict,
    sched_cos,
    sched_exp,
    sched_lin,
    sched_no,
    sched_one_cycle,
    t_cdf,
    t_quantile,
)

import conftest

make_learner = partial(conftest.make_learner, n_train=32, n_valid=16)  # 4 training and 2 validation batches


# ------------------------------------------------------------------ schedules

@pytest.mark.parametrize('maker', [sched_lin, sched_cos, sched_exp])
def test_schedules_end_points(maker):
    f = maker(0.5, 8.)
    assert f(0) == pytest.approx(0.5) and f(1) == pytest.approx(8.)


@pytest.mark.parametrize('f, pos, expected', [
    (sched_lin(1, 3), 0.5, 2), (sched_lin(3, 1), 0.25, 2.5), (sched_cos(1, 3), 0.5, 2),
    (sched_cos(0, 1), 0.25, (1 - math.cos(math.pi / 4)) / 2), (sched_exp(1, 100), 0.5, 10),
    (sched_no(4, 9), 0, 4), (sched_no(4, 9), 0.3, 4), (sched_no(4, 9), 1, 4)])
def test_schedule_midpoints(f, pos, expected):
    assert f(pos) == pytest.approx(expected)


def test_sched_cos_is_flat_at_the_ends():
    f, eps = sched_cos(0, 1), 1e-3
    assert f(eps) - f(0) < 1e-5 and f(1) - f(1 - eps) < 1e-5
    assert f(0.5 + eps) - f(0.5 - eps) == pytest.approx(math.pi / 2 * 2 * eps, rel=1e-3)


def test_sched_exp_needs_positive_values():
    for a, b in [(0, 1), (1, 0), (-1, 1)]:
        with pytest.raises(ValueError, match='start > 0 and end > 0'): sched_exp(a, b)


# ------------------------------------------------------------------ combine_scheds

def test_combine_scheds_phases_and_boundaries():
    f = combine_scheds([0.25, 0.25, 0.5], [sched_lin(0, 1), sched_no(5, 0), sched_cos(1, 3)])
    assert f(0) == 0 and f(0.125) == pytest.approx(0.5)
    assert f(0.25 - 1e-12) == pytest.approx(1)          # end of phase 0
    assert f(0.25) == 5 and f(0.49) == 5                # phase 1 starts exactly at its boundary
    assert f(0.5) == pytest.approx(1)                   # phase 2 at its own pos 0
    assert f(0.75) == pytest.approx(2) and f(1) == pytest.approx(3)


def test_combine_scheds_single_and_zero_width_phases():
    assert combine_scheds([1], [sched_lin(2, 4)])(0.5) == pytest.approx(3)
    f = combine_scheds([0.5, 0., 0.5], [sched_lin(0, 1), sched_no(99, 99), sched_lin(10, 20)])
    assert f(0.5) == pytest.approx(10) and f(1) == pytest.approx(20)
    assert 99 not in [f(i / 100) for i in range(101)]
    g = combine_scheds([1., 0.], [sched_lin(0, 1), sched_no(99, 99)])
    assert g(1) == pytest.approx(1)


def test_combine_scheds_accepts_float_rounding():
    f = combine_scheds([0.1] * 10, [sched_lin(i, i + 1) for i in range(10)])
    assert f(1) == pytest.approx(10) and f(0.55) == pytest.approx(5.5)


@pytest.mark.parametrize('pcts,n,msg', [
    ([0.3, 0.6], 2, 'add up to 1'),
    ([0.5, 0.6], 2, 'add up to 1'),
    ([1.5, -0.5], 2, 'must not be negative'),
    ([0.5, 0.5], 1, 'one pct per schedule'),
    ([1.0], 2, 'one pct per schedule'),
    ([], 0, 'no phases'),
    ([float('nan'), 1.], 2, 'must not be negative'),
])
def test_combine_scheds_errors(pcts, n, msg):
    with pytest.raises(ValueError, match=msg): combine_scheds(pcts, [sched_lin(0, 1)] * n)


def test_combine_scheds_rejects_non_functions_and_bad_pos():
    with pytest.raises(TypeError, match='function of pos'): combine_scheds([1.], [0.5])
    f = combine_scheds([1.], [sched_lin(0, 1)])
    for pos in (-0.1, 1.01):
        with pytest.raises(ValueError, match=r'\[0, 1\]'): f(pos)


def test_sched_one_cycle():
    f = sched_one_cycle(0.1, 1., 0.001, pct_start=0.25)
    assert [f(0), f(0.25), f(1)] == pytest.approx([0.1, 1., 0.001])
    assert f(0.125) == pytest.approx(0.55) and f(0.625) == pytest.approx((1 + 0.001) / 2)
    assert max(f(i / 1000) for i in range(1001)) == pytest.approx(1.)
    for bad in (0, 1, 1.5):
        with pytest.raises(ValueError, match='pct_start'): sched_one_cycle(0.1, 1, 0.1, pct_start=bad)


# ------------------------------------------------------------------ ParamScheduler and Recorder

def test_param_scheduler_sets_lr_each_batch():
    sched = sched_lin(1.0, 0.0)
    learn = make_learner(cbs=Recorder())
    learn.fit(2, cbs=ParamScheduler('lr', sched))
    lrs = learn.recorder.lrs[0]
    assert len(lrs) == 8 == len(learn.recorder.losses)       # 4 training batches x 2 epochs, no validation batches
    assert lrs == pytest.approx([sched(i / 8) for i in range(8)])


def test_param_scheduler_per_group_and_momentum():
    learn = make_learner(cbs=Recorder(hypers=('lr', 'momentum')), groups=True)
    cbs = [ParamScheduler('lr', [sched_no(0.3, 0.3), sched_lin(0.2, 0.)]),
           ParamScheduler('momentum', sched_lin(0., 0.9))]
    learn.fit(1, cbs=cbs)
    rec = learn.recorder
    assert rec.lrs[0] == pytest.approx([0.3] * 4) and rec.lrs[1] == pytest.approx([0.2, 0.15, 0.1, 0.05])
    assert rec.vals['momentum'][0] == pytest.approx([0, 0.225, 0.45, 0.675])
    # the scheduled momentum really reached the optimizer: SGD kept momentum buffers
    assert all(learn.opt.state[p].get('momentum_buffer') is not None for p in learn.model.parameters())


def test_param_scheduler_names_and_errors():
    cbs = one_cycle_cbs(0.5, moms=(0.95, 0.85, 0.95))
    assert [cb.name for cb in cbs] == ['lr_sched', 'momentum_sched']
    learn = make_learner()
    with pytest.raises(ValueError, match="no hyper-parameter 'mom'"):
        learn.fit(1, cbs=ParamScheduler('mom', sched_no(1, 1)))
    with pytest.raises(ValueError, match='2 schedules for 1 parameter groups'):
        learn.fit(1, cbs=ParamScheduler('lr', [sched_no(1, 1)] * 2))


def test_one_cycle_training_follows_schedule():
    learn = make_learner(cbs=Recorder(), n_train=80)          # 10 batches per epoch
    learn.fit(2, cbs=one_cycle_cbs(0.5, pct_start=0.3))
    lrs = learn.recorder.lrs[0]
    assert lrs[0] == pytest.approx(0.5 / 25) and lrs[6] == pytest.approx(0.5)   # batch 6 of 20 is at pos 0.3
    assert lrs[-1] == pytest.approx(sched_cos(0.5, 0.5e-4)(13 / 14))
    assert max(range(20), key=lrs.__getitem__) == 6


def test_param_scheduler_pos_is_fraction_done_before_the_batch():
    "Batch i of N is trained at pos i/N: the last batch gets the value at (N-1)/N, never the one at pos 1."
    learn = make_learner(cbs=Recorder(), n_train=16)          # 2 batches
    learn.fit(1, cbs=one_cycle_cbs(0.5))
    f = sched_one_cycle(0.5 / 25, 0.5, 0.5 / 1e4)
    assert learn.recorder.lrs[0] == pytest.approx([f(0), f(0.5)])
    learn = make_learner(cbs=Recorder(), n_train=80)          # 10 batches
    learn.fit(1, cbs=ParamScheduler('lr', sched_lin(1., 0.)))
    assert learn.recorder.lrs[0] == pytest.approx([1 - i / 10 for i in range(10)])
    assert learn.recorder.lrs[0][-1] == pytest.approx(0.1)


def test_recorder_plots():
    learn = make_learner(cbs=Recorder(hypers=('lr', 'momentum')), groups=True, momentum=0.9)
    learn.fit(1, cbs=ParamScheduler('lr', [sched_no(0.3, 0.3), sched_exp(0.01, 1.)]))
    rec = learn.recorder
    assert len(rec.losses) == 4
    ax = rec.plot_hyper()                                            # lr of the last group against the batch
    (line,) = ax.lines
    assert (ax.get_xlabel(), ax.get_ylabel()) == ('batch', 'lr')
    assert list(line.get_xdata()) == [0, 1, 2, 3] and list(line.get_ydata()) == pytest.approx(rec.lrs[1])
    ax = rec.plot_hyper('momentum', pgid=0)
    assert ax.get_ylabel() == 'momentum' and list(ax.lines[0].get_ydata()) == pytest.approx([0.9] * 4)
    ax = rec.plot_loss(skip_last=1)
    (line,) = ax.lines
    assert (ax.get_xlabel(), ax.get_ylabel()) == ('batch', 'loss')
    assert list(line.get_ydata()) == pytest.approx(rec.losses[:3])
    ax = rec.plot(skip_last=1, pgid=1)
    (line,) = ax.lines
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_xscale()) == ('learning rate (log scale)', 'loss', 'log')
    assert list(line.get_xdata()) == pytest.approx(rec.lrs[1][:3])
    assert list(line.get_ydata()) == pytest.approx(rec.losses[:3])
    fig, given = plt.subplots()
    assert rec.plot(ax=given) is given and len(given.lines) == 1 and len(fig.axes) == 1   # draws on the axes given
    plt.close('all')


def test_short_fit_with_schedule_lowers_the_loss():
    learn = make_learner(cbs=Recorder(), n_train=64)
    x, y = learn.data.train_ds.x, learn.data.train_ds.y
    with torch.no_grad(): before = F.cross_entropy(learn.model(x), y).item()
    learn.fit(4, cbs=one_cycle_cbs(1.))
    with torch.no_grad(): after = F.cross_entropy(learn.model(x), y).item()
    assert after < 0.7 * before


# ------------------------------------------------------------------ LR finder

class CountValid(Callback):
    def __init__(self): self.n = 0
    def after_batch(self):
        if not self.run.in_train: self.n += 1


def test_lr_find_stops_when_loss_explodes():
    learn = make_learner()
    cv = CountValid()
    finder = LR_Find(max_iter=100, min_lr=1e-3, max_lr=1e5)
    learn.fit(100, cbs=[finder, cv])
    assert finder.diverged and len(finder.losses) < 100
    assert finder.smooth_losses[-1] > 4 * min(finder.smooth_losses[:-1])
    assert learn.n_iter == len(finder.losses) - 1          # the exploding batch was not stepped
    assert cv.n == 0                                        # validation is skipped during the sweep


def test_callback_orders():
    "LR_Find sets the lr with the same priority as a ParamScheduler, just after the default order of callbacks."
    assert ParamScheduler._order == Callback._order + 1 == LR_Find._order
    assert TrainEvalCallback._order < Callback._order


def test_lr_find_runs_max_iter_without_explosion():
    learn = make_learner()
    finder = LR_Find(max_iter=12, min_lr=1e-4, max_lr=1e-2)
    learn.fit(10, cbs=finder)
    assert not finder.diverged and len(finder.lrs) == 12 and learn.n_iter == 12
    assert finder.lrs[0] == pytest.approx(1e-4) and finder.lrs[-1] == pytest.approx(1e-2)
    ratios = [b / a for a, b in zip(finder.lrs, finder.lrs[1:])]
    assert ratios == pytest.approx([ratios[0]] * len(ratios))          # exponential: a constant factor per batch


def test_lr_find_stops_on_nan_loss():
    class NanAt(Callback):
        _order = LR_Find._order - 1      # before LR_Find sees the loss
        def after_loss(self):
            if self.run.in_train and self.n_iter == 5: self.run.loss = self.loss * float('nan')
    learn = make_learner()
    finder = LR_Find(max_iter=50, min_lr=1e-4, max_lr=1e-3)
    learn.fit(20, cbs=[NanAt(), finder])
    assert finder.diverged and len(finder.losses) == 6 and math.isnan(finder.losses[-1])


def same(a, b):
    "Deep equality of (nested dicts/lists of) tensors and plain values; tensors must be exactly equal."
    if isinstance(a, torch.Tensor): return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict): return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)): return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return a == b


def test_find_lr_restores_learner_and_suggests(capsys):
    learn = make_learner(cbs=[Recorder(), AvgStatsCallback(show=True)], lr=0.123, momentum=0.5)
    learn.fit(2)  # so the optimizer has state (momentum buffers) and the callbacks records
    capsys.readouterr()
    model0, opt0 = copy.deepcopy(learn.model.state_dict()), copy.deepcopy(learn.opt.state_dict())
    assert len(opt0['state']) == 2 and all('momentum_buffer' in st for st in opt0['state'].values())
    cbs0, rec0, hist0 = list(learn.cbs), copy.deepcopy(learn.recorder.vals), copy.deepcopy(learn.avg_stats.history)
    losses0, rng0 = list(learn.recorder.losses), torch.get_rng_state()
    finder = find_lr(learn, max_iter=30, min_lr=1e-3, max_lr=1e4)
    assert len(finder.losses) > 5 and learn.n_iter == len(finder.losses) - finder.diverged   # the sweep trained
    assert same(learn.model.state_dict(), model0) and same(learn.opt.state_dict(), opt0)
    assert learn.cbs == cbs0 and learn.recorder is cbs0[1] and learn.avg_stats is cbs0[2]
    assert not hasattr(learn, 'lr_find')
    assert learn.recorder.losses == losses0 and same(learn.recorder.vals, rec0) and learn.avg_stats.history == hist0
    assert capsys.readouterr().out == ''          # the stats table printed nothing during the sweep
    assert torch.equal(torch.get_rng_state(), rng0)
    i = min(range(len(finder.smooth_losses)), key=finder.smooth_losses.__getitem__)
    assert finder.suggestion == pytest.approx(finder.lrs[i] / 10)
    ax = finder.plot()
    raw, smooth, mark = ax.lines
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_xscale()) == ('learning rate (log scale)', 'loss', 'log')
    assert list(raw.get_xdata()) == finder.lrs and list(raw.get_ydata()) == finder.losses
    assert list(smooth.get_xdata()) == finder.lrs and list(smooth.get_ydata()) == finder.smooth_losses
    assert list(mark.get_xdata()) == pytest.approx([finder.suggestion] * 2)          # the vertical line
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        'batch loss', 'smoothed loss', f'suggestion {finder.suggestion:.2g}']
    plt.close('all')


def _sweep(smooth, diverged=False):
    "An LR_Find holding a made-up sweep with these smoothed losses."
    finder = LR_Find()
    finder.lrs = [1e-4 * 1.2 ** i for i in range(len(smooth))]
    finder.losses, finder.smooth_losses, finder.diverged = list(smooth), list(smooth), diverged
    return finder


V = [2.0 - 0.04 * i for i in range(40)] + [0.44 + 0.2 * i for i in range(20)]   # falls, then rises: 60 batches


@pytest.mark.parametrize('smooth, diverged, expected', [
    (V, True, []),
    (V[::3], True, ['the sweep ran 20 batches; a suggestion needs about 50']),
    ([2.0 + 0.001 * ((i + 1) % 3) for i in range(60)], True, ['never fell 10%']),
    ([1.0 + 0.1 * i for i in range(60)], True, ['never fell 10%', 'at the first batch: start lower (min_lr)']),
    (V[:40], False, ['ran 40 batches', 'still fell at max_lr: end higher (max_lr)']),
], ids=['good', 'short', 'flat', 'rising', 'still-falling'])
def test_doubts_name_what_makes_a_suggestion_mislead(smooth, diverged, expected):
    doubts = _sweep(smooth, diverged).doubts()
    assert len(doubts) == len(expected) and all(e in d for e, d in zip(expected, doubts)), doubts


def test_find_lr_prints_its_doubts_on_stderr(capsys):
    finder = find_lr(make_learner(), max_iter=6, min_lr=1e-4, max_lr=1e-3)
    err = capsys.readouterr().err
    assert finder.doubts() and err.count('find_lr: the suggestion may mislead: ') == len(finder.doubts())
    assert 'the sweep ran 6 batches' in err


def test_find_lr_keeps_callbacks_of_the_keep_classes():
    class Count(Callback):
        def __init__(self): self.n = 0
        def after_step(self): self.n += 1
    class Other(Callback):
        def __init__(self): self.n = 0
        def after_step(self): self.n += 1
    learn = make_learner(cbs=[Other(), Count()])
    finder = find_lr(learn, max_iter=6, min_lr=1e-4, max_lr=1e-3, keep=Count)
    assert learn.count.n == len(finder.losses) == 6 and learn.other.n == 0
    assert [type(c) for c in learn.cbs] == [TrainEvalCallback, Other, Count]


def test_find_lr_restores_even_when_the_sweep_fails():
    class Boom(Callback):
        def after_step(self):
            if self.n_iter == 2: raise RuntimeError('boom')
    learn = make_learner(cbs=[Recorder(), Boom()], momentum=0.9)
    w, rng, cbs = learn.model.weight.detach().clone(), torch.get_rng_state(), list(learn.cbs)
    with pytest.raises(RuntimeError, match='boom'): find_lr(learn, max_iter=10, min_lr=1e-3, max_lr=1e-1, keep=Boom)
    assert torch.equal(learn.model.weight, w) and learn.opt.state_dict()['state'] == {}
    assert learn.cbs == cbs and torch.equal(torch.get_rng_state(), rng) and not hasattr(learn, 'lr_find')


def test_training_after_find_lr_is_the_same_as_without():
    "Same weights, same shuffling (get_dls shuffles with the global RNG): find_lr in between changes nothing."
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(96, 5, generator=g), torch.randint(0, 2, (96,), generator=g)
    data = DataBunch(*get_dls(ArrayDataset(x[:64], y[:64]), ArrayDataset(x[64:], y[64:]), 8), c=2)
    def run(sweep):
        torch.manual_seed(0)
        learn = get_learner(data, lr=0.3, nh=4, cbs=Recorder())
        learn.fit(1)
        if sweep: find_lr(learn, max_iter=12)
        learn.fit(1)
        return learn.recorder.losses, learn.model.state_dict()
    (l1, s1), (l2, s2) = run(False), run(True)
    assert l1 == l2 and same(s1, s2)


def test_lr_find_suggestion_needs_a_finite_loss():
    with pytest.raises(RuntimeError, match='no losses recorded yet'): LR_Find().suggestion
    learn = make_learner()
    finder = LR_Find(max_iter=10)
    class StopAtOnce(Callback):
        def begin_fit(self): raise CancelTrainException()
    learn.fit(1, cbs=[StopAtOnce(), finder])                # a sweep that never trained a batch
    with pytest.raises(RuntimeError, match='no losses recorded yet'): finder.suggestion
    with pytest.raises(RuntimeError, match='no losses recorded yet'): finder.plot()
    plt.close('all')


def test_lr_find_suggestion_skips_non_finite_losses():
    class NanFirst(Callback):
        _order = LR_Find._order - 1      # before LR_Find sees the loss
        def after_loss(self):
            if self.run.in_train: self.run.loss = self.loss * float('nan')
    learn = make_learner()
    finder = LR_Find(max_iter=10, min_lr=1e-4, max_lr=1e-3)
    learn.fit(5, cbs=[NanFirst(), finder])
    assert finder.diverged and len(finder.losses) == 1
    with pytest.raises(RuntimeError, match='no finite loss'): finder.suggestion
    finder.lrs, finder.smooth_losses = [1e-3, 1e-2, 1e-1], [2., 1., float('nan')]
    assert finder.suggestion == pytest.approx(1e-3)


def test_a_saved_plot_keeps_its_axis_labels(tmp_path):
    ax = _sweep(V, True).plot()
    fig = ax.figure
    fig.savefig(tmp_path / 'lr_find.png')                      # the layout runs as the figure is drawn
    renderer, box = fig.canvas.get_renderer(), fig.bbox
    for label in (ax.xaxis.label, ax.yaxis.label):
        b = label.get_window_extent(renderer)
        assert b.x0 >= box.x0 and b.y0 >= box.y0 and b.x1 <= box.x1 and b.y1 <= box.y1, (label.get_text(), b)
    plt.close(fig)


# --- paired comparisons ----------------------------------------------------------------------------

@pytest.mark.parametrize('df, t975', [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622),
                                      (29, 2.0452)])
def test_t_quantile_matches_published_tables(df, t975):
    assert t_quantile(0.975, df) == pytest.approx(t975, abs=1e-4)
    assert t_cdf(t975, df) == pytest.approx(0.975, abs=1e-5) and t_cdf(0., df) == 0.5


def test_t_quantile_refuses_what_it_cannot_give():
    for p in (0.5, 1.0, 0.2):
        with pytest.raises(ValueError, match='between 0.5 and 1'): t_quantile(p, 3)


def test_paired_diff_on_hand_made_data():
    # differences 0.01, -0.13, -0.19 (lesson 09's adam_opt - AdamW per seed): mean -0.1033, s = 0.1026
    a, b = [91.11, 91.02, 90.96], [91.10, 91.15, 91.15]
    m, lo, hi = paired_diff(a, b)
    s = math.sqrt(sum((d + 0.31 / 3) ** 2 for d in (0.01, -0.13, -0.19)) / 2)
    assert m == pytest.approx(-0.31 / 3) and hi - m == pytest.approx(4.302653 * s / math.sqrt(3), rel=1e-5)
    assert lo < 0 < hi and paired_verdict(a, b, names=('adam_opt', 'AdamW')).endswith('no clear difference')
    m, lo, hi = paired_diff([2., 3., 4., 5.], [1., 1., 1., 1.], conf=0.9)   # d = 1..4: mean 2.5, s = 1.291
    assert (lo, hi) == pytest.approx((2.5 - 2.353363 * 1.290994 / 2, 2.5 + 2.353363 * 1.290994 / 2), abs=1e-5)
    line = paired_verdict([2., 3., 4., 5.], [1., 1., 1., 1.], names=('new', 'old'), conf=0.9)
    assert line == 'new - old: +2.5000 (90% interval +0.9809 to +4.0191, 4 seeds): new higher'
    assert paired_verdict([1., 1., 1.], [2., 2.1, 2.2], names=('x', 'y')).endswith('y higher')


def test_paired_diff_needs_two_paired_seeds():
    with pytest.raises(ValueError, match='at least 2 seeds'): paired_diff([1.], [2.])
    with pytest.raises(ValueError): paired_diff([1., 2., 3.], [1., 2.])         # not paired
