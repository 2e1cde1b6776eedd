"""Tests for exp.nb_04: the Learner's event loop, callbacks, cancellation, stats and progress bars.
Tiny synthetic data (a few batches of 5 features), so the whole file runs in a few seconds."""
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from exp.nb_03 import ArrayDataset, accuracy, get_dls
from exp.nb_04 import (
    CANCEL_EVENTS,
    EVENTS,
    AvgStats,
    AvgStatsCallback,
    Callback,
    CancelBatchException,
    CancelEpochException,
    CancelTrainException,
    DataBunch,
    Learner,
    ProgressCallback,
    TrainEvalCallback,
    camel2snake,
    get_learner,
    progress_enabled,
    reporting,
)

from conftest import make_data, make_learner

TRAIN_BATCH = ['begin_batch', 'after_pred', 'after_loss', 'after_backward', 'after_step', 'after_batch']
VALID_BATCH = ['begin_batch', 'after_pred', 'after_loss', 'after_batch']


class Log(Callback):
    "Records (event, in_train, model.training, grad enabled) for every event."
    _order = 100
    def __init__(self): self.log = []


def _rec(e):
    def f(self): self.log.append((e, self.run.in_train, self.model.training, torch.is_grad_enabled()))
    return f


for _e in EVENTS: setattr(Log, _e, _rec(_e))


def names(log): return [e for e, *_ in log.log]


def epoch_events(n_train, n_valid, cancel_train=False):
    return (['begin_epoch'] + TRAIN_BATCH * n_train + (['after_cancel_epoch'] if cancel_train else [])
            + ['begin_validate'] + VALID_BATCH * n_valid + ['after_validate', 'after_epoch'])


# ------------------------------------------------------------------ the loop and its events

def test_every_event_in_order():
    log = Log()
    learn = make_learner()
    learn.fit(2, cbs=log)
    assert names(log) == ['begin_fit'] + epoch_events(3, 2) * 2 + ['after_fit']


def test_modes_and_grad_at_each_event():
    log = Log()
    make_learner().fit(2, cbs=log)
    phase = None
    for e, in_train, training, grad in log.log:
        if e == 'begin_epoch': phase = 'train'
        if e == 'begin_validate': phase = 'valid'
        if phase is not None and e != 'after_fit': assert training == in_train == (phase == 'train'), e
        # only the validation pass (begin_validate to after_validate) runs under torch.no_grad()
        assert grad == (phase != 'valid' or e in ('after_epoch', 'after_fit')), e


def test_callbacks_run_in_order_of_order_then_insertion():
    calls = []
    def cb(tag, order):
        class C(Callback):
            _order = order
            def begin_batch(self):
                if self.run.in_train: calls.append(tag)
        C.__name__ = f'C{tag}'
        return C()
    learn = make_learner(cbs=[cb('a', 5), cb('b', -1), cb('c', 5), cb('d', 0)], n_train=8)
    learn.fit(1)
    assert calls == ['b', 'd', 'a', 'c']


def test_handlers_only_for_defined_events():
    class OnlyFit(Callback):
        def begin_fit(self): pass
    learn = make_learner(cbs=OnlyFit())
    learn._build_handlers()
    assert [e for e, fs in learn._handlers.items() if any(f.__self__ is learn.only_fit for f in fs)] == ['begin_fit']



def test_handlers_follow_added_and_removed_callbacks():
    "Handlers are looked up again after add_cbs/remove_cbs, also when events are called outside fit."
    calls = []
    class Hi(Callback):
        def begin_fit(self): calls.append('hi')
    learn = make_learner()
    learn('begin_fit')                                  # no fit yet: handlers are built on demand
    learn.add_cbs(Hi())
    assert learn._handlers is None
    learn('begin_fit')
    assert calls == ['hi']
    learn.remove_cbs(learn.hi)
    assert learn._handlers is None
    learn('begin_fit')
    assert calls == ['hi']
    learn.fit(1, cbs=Hi())                              # an extra for one fit runs, then leaves
    learn.fit(1)
    assert calls == ['hi', 'hi'] and not hasattr(learn, 'hi')

def test_callback_name_and_runner_attributes():
    assert camel2snake('AvgStatsCallback') == 'avg_stats_callback'
    assert camel2snake('LR_Find') == 'lr_find'
    class FooBarCallback(Callback): pass
    cb = FooBarCallback()
    assert cb.name == 'foo_bar'
    with pytest.raises(AttributeError, match='no runner'): cb.model
    learn = make_learner(cbs=cb)
    assert learn.foo_bar is cb and cb.model is learn.model
    assert isinstance(learn.train_eval, TrainEvalCallback)
    with pytest.raises(AttributeError): cb.no_such_attribute


def test_callback_classes_are_instantiated():
    class Tiny(Callback): pass
    learn = make_learner(cbs=Tiny)
    assert isinstance(learn.tiny, Tiny) and learn.tiny.run is learn


def test_misspelt_event_is_an_error():
    class Typo(Callback):
        def begin_epochs(self): pass
    with pytest.raises(ValueError, match='begin_epochs is not an event'): make_learner(cbs=Typo())


def test_callback_name_cannot_hide_learner_attribute():
    class Model(Callback): pass
    with pytest.raises(ValueError, match="'model'"): make_learner(cbs=Model())


def test_extra_callbacks_removed_after_fit_even_on_error():
    class Boom(Callback):
        def after_step(self): raise RuntimeError('boom')
    log = Log()
    learn = make_learner()
    with pytest.raises(RuntimeError, match='boom'): learn.fit(1, cbs=[Boom(), log])
    assert names(log)[-1] == 'after_fit'          # after_fit ran, and no after_batch for the failed batch
    assert 'after_batch' not in names(log)
    assert not hasattr(learn, 'boom') and not hasattr(learn, 'log')
    assert [type(c) for c in learn.cbs] == [TrainEvalCallback]


def test_attaching_is_all_or_none():
    "A refused callback (misspelt event, name clash) leaves no callback of the same call attached."
    class Fine(Callback):
        def begin_fit(self): pass
    class Typo(Callback):
        def begin_epochs(self): pass
    class Model(Callback): pass
    learn = make_learner()
    for bad in (Typo(), Model):
        with pytest.raises(ValueError): learn.add_cbs([Fine(), bad])
        with pytest.raises(ValueError): learn.fit(1, cbs=[Fine(), bad])
        assert [type(c) for c in learn.cbs] == [TrainEvalCallback] and not hasattr(learn, 'fine')
    def broken(): raise RuntimeError('cannot make it')
    with pytest.raises(RuntimeError, match='cannot make it'): learn.add_cbs([Fine, broken])
    assert [type(c) for c in learn.cbs] == [TrainEvalCallback] and not hasattr(learn, 'fine')
    with pytest.raises(ValueError, match="two callbacks named 'fine' in one call"): learn.add_cbs([Fine, Fine()])
    assert [type(c) for c in learn.cbs] == [TrainEvalCallback] and not hasattr(learn, 'fine')
    assert learn.add_cbs(Fine)[0].run is learn and len(learn.cbs) == 2     # the learner still works
    learn.fit(1)


def test_extra_callback_with_the_name_of_an_attached_one_is_refused():
    perm = AvgStatsCallback(show=False)
    learn = make_learner(cbs=perm)
    for extra in (AvgStatsCallback(show=False), AvgStatsCallback):
        with pytest.raises(ValueError, match="named 'avg_stats' is already attached"): learn.fit(1, cbs=extra)
        with pytest.raises(ValueError, match="named 'avg_stats' is already attached"): learn.add_cbs(extra)
    assert learn.avg_stats is perm and learn.cbs == [learn.train_eval, perm] and perm.history == []
    learn.fit(2)                                               # the attached one still works
    assert len(perm.history) == 2
    learn.remove_cbs(perm)
    learn.fit(1, cbs=AvgStatsCallback(show=False))             # once it is removed, the name is free
    assert not hasattr(learn, 'avg_stats')


def test_attached_instance_passed_again_is_refused():
    class Count(Callback):
        def __init__(self): self.n = 0
        def begin_fit(self): self.n += 1
    c = Count()
    learn = make_learner(cbs=c)
    with pytest.raises(ValueError, match='already attached to the learner'): learn.fit(1, cbs=c)
    with pytest.raises(ValueError, match='already attached to the learner'): learn.add_cbs(c)
    assert c.n == 0 and learn.count is c and learn.cbs == [learn.train_eval, c]
    learn.fit(1)
    assert c.n == 1                                            # begin_fit ran once
    d = Count()
    with pytest.raises(ValueError, match='already attached to the learner'): make_learner(cbs=[d, d])


def test_reporting_adds_the_reports_a_list_lacks():
    class Log(Callback): pass
    cbs = reporting([Log], metrics=[accuracy])
    assert cbs[0] is Log and [type(c) for c in cbs[1:]] == [AvgStatsCallback, ProgressCallback]
    assert cbs[1].valid_stats.names == ['loss', 'accuracy']
    own = AvgStatsCallback()
    assert reporting([own, ProgressCallback]) == [own, ProgressCallback]   # an instance or a class: brought
    assert reporting(None, report=False) == [] and reporting(Log, report=False) == [Log]


def test_passing_a_train_eval_callback_gets_advice_that_fits_where_it_is_raised():
    assert 'adds its own TrainEvalCallback' in Learner.__init__.__doc__
    for where in (lambda: make_learner(cbs=[TrainEvalCallback()]),
                  lambda: make_learner().fit(1, cbs=TrainEvalCallback()),
                  lambda: make_learner().add_cbs([TrainEvalCallback()])):
        with pytest.raises(ValueError, match="every Learner adds its own TrainEvalCallback: don't pass one"): where()


@pytest.mark.parametrize('name', ['Loss', 'Pred', 'Epoch', 'NIter'])
def test_callback_name_cannot_be_a_loop_attribute(name):
    "Names of attributes the loop sets during fit are refused even before the first fit, when they don't exist yet."
    C = type(name, (Callback,), {})
    with pytest.raises(ValueError, match="would hide the learner's attribute"): make_learner(cbs=C())


def test_extra_callbacks_removed_even_if_after_fit_fails():
    class BadEnd(Callback):
        def after_fit(self): raise RuntimeError('bad end')
    learn = make_learner()
    with pytest.raises(RuntimeError, match='bad end'): learn.fit(1, cbs=BadEnd())
    assert not hasattr(learn, 'bad_end') and [type(c) for c in learn.cbs] == [TrainEvalCallback]


# ------------------------------------------------------------------ cancellation

def test_cancel_batch_skips_step_keeps_after_batch():
    class Skip(Callback):
        _order = 200                      # after Log, so Log sees the event that raised
        def after_backward(self): raise CancelBatchException()
    log = Log()
    learn = make_learner()
    w = learn.model.weight.detach().clone()
    learn.fit(2, cbs=[Skip(), log])
    assert torch.equal(learn.model.weight, w)
    one = ['begin_batch', 'after_pred', 'after_loss', 'after_backward', 'after_cancel_batch', 'after_batch']
    assert names(log) == ['begin_fit'] + (['begin_epoch'] + one * 3 + ['begin_validate'] + VALID_BATCH * 2
                                          + ['after_validate', 'after_epoch']) * 2 + ['after_fit']
    assert learn.n_iter == 6


def test_cancelled_batch_gradients_do_not_leak():
    "After a batch is cancelled between backward and step, the next batch's gradient is its own."
    class Check(Callback):
        def __init__(self): self.diffs = []
        def after_backward(self):
            with torch.enable_grad():
                ref = torch.autograd.grad(self.loss_func(self.model(self.xb), self.yb), self.model.weight)[0]
            self.diffs.append((self.model.weight.grad - ref).abs().max().item())
            if self.n_iter % 2 == 0: raise CancelBatchException()
    chk = Check()
    make_learner().fit(2, cbs=chk)
    assert len(chk.diffs) == 6 and max(chk.diffs) < 1e-6


def test_cancel_epoch_in_training_still_validates():
    class Short(Callback):
        _order = 200                      # after Log, so Log sees the event that raised
        def begin_epoch(self): self.k = 0
        def after_batch(self):
            if self.run.in_train:
                self.k += 1
                if self.k == 2: raise CancelEpochException()
    log = Log()
    learn = make_learner()
    learn.fit(2, cbs=[Short(), log])
    assert names(log) == ['begin_fit'] + epoch_events(2, 2, cancel_train=True) * 2 + ['after_fit']
    assert learn.n_iter == 4 and learn.n_epochs == pytest.approx(1 + 2/3)   # epoch 1, 2 of its 3 batches done


def test_cancel_epoch_in_validation():
    class NoValid(Callback):
        _order = 200                      # after Log, so Log sees the event that raised
        def begin_validate(self): raise CancelEpochException()
    log = Log()
    make_learner().fit(1, cbs=[NoValid(), log])
    assert names(log) == (['begin_fit', 'begin_epoch'] + TRAIN_BATCH * 3 +
                          ['begin_validate', 'after_cancel_epoch', 'after_validate', 'after_epoch', 'after_fit'])


def test_cancel_train_ends_fit():
    class Stop(Callback):
        _order = 200                      # after Log, so Log sees the event that raised
        def after_batch(self):
            if self.n_iter == 4: raise CancelTrainException()
    log = Log()
    learn = make_learner()
    learn.fit(3, cbs=[Stop(), log])
    assert names(log) == (['begin_fit'] + epoch_events(3, 2) + ['begin_epoch'] + TRAIN_BATCH
                          + ['after_cancel_train', 'after_fit'])
    assert (learn.n_iter, learn.epoch) == (4, 1)


def test_cancel_train_during_validation_ends_training():
    class StopInValid(Callback):
        _order = 200
        def after_batch(self):
            if not self.run.in_train: raise CancelTrainException()
    log = Log()
    learn = make_learner()
    learn.fit(3, cbs=[StopInValid(), log])
    assert names(log) == (['begin_fit', 'begin_epoch'] + TRAIN_BATCH * 3 + ['begin_validate'] + VALID_BATCH
                          + ['after_cancel_train', 'after_fit'])
    assert (learn.epoch, learn.n_iter) == (0, 3) and not hasattr(learn, 'stop_in_valid')


# A cancel exception ends a loop only from the events inside it (CANCEL_EVENTS); anywhere else it is a RuntimeError.
CANCEL_KIND = {CancelBatchException: 'batch', CancelEpochException: 'epoch', CancelTrainException: 'train'}
# to reach an after_cancel_* event, another callback first raises the matching exception at an event that allows it
TRIGGER = {'after_cancel_batch': (CancelBatchException, 'after_step'),
           'after_cancel_epoch': (CancelEpochException, 'after_batch'),
           'after_cancel_train': (CancelTrainException, 'after_epoch')}


def raise_once(exc, event, name, order=0):
    "A callback that raises `exc` the first time `event` happens."
    def f(self):
        if not self.done:
            self.done = True
            raise exc()
    return type(name, (Callback,), {event: f, 'done': False, '_order': order})()


def raiser_and_trigger(exc, event):
    cbs = [raise_once(exc, event, 'Raiser')]
    if event in TRIGGER: cbs.append(raise_once(*TRIGGER[event], 'Trigger', order=-1))
    return cbs


def test_cancel_events_table():
    assert set(CANCEL_EVENTS) == set(CANCEL_KIND)
    for evs in CANCEL_EVENTS.values(): assert set(evs) <= set(EVENTS)
    scopes = [set(CANCEL_EVENTS[e]) for e in (CancelBatchException, CancelEpochException, CancelTrainException)]
    assert scopes[0] < scopes[1] < scopes[2]


IN_SCOPE = [(exc, e) for exc, evs in CANCEL_EVENTS.items() for e in evs]
OUT_OF_SCOPE = [(exc, e) for exc, evs in CANCEL_EVENTS.items() for e in EVENTS if e not in evs]


@pytest.mark.parametrize('exc,event', IN_SCOPE, ids=[f'{x.__name__}-{e}' for x, e in IN_SCOPE])
def test_cancel_inside_its_loop_is_caught_by_it(exc, event):
    log = Log()
    learn = make_learner()
    cbs = raiser_and_trigger(exc, event)
    learn.fit(2, cbs=cbs + [log])
    assert cbs[0].done and f'after_cancel_{CANCEL_KIND[exc]}' in names(log) and names(log)[-1] == 'after_fit'
    assert [type(c) for c in learn.cbs] == [TrainEvalCallback]


@pytest.mark.parametrize('exc,event', OUT_OF_SCOPE, ids=[f'{x.__name__}-{e}' for x, e in OUT_OF_SCOPE])
def test_cancel_outside_its_loop_is_an_error(exc, event):
    log = Log()
    learn = make_learner()
    cbs = raiser_and_trigger(exc, event)
    msg = rf'{exc.__name__}\(\) raised in {event}, outside the loop it cancels'
    with pytest.raises(RuntimeError, match=msg) as info:
        learn.fit(2, cbs=cbs + [log])
    assert cbs[0].done and isinstance(info.value.__cause__, exc)
    assert f'after_cancel_{CANCEL_KIND[exc]}' not in names(log)      # no loop took it for its own
    if event != 'after_fit': assert names(log)[-1] == 'after_fit'    # after_fit still ran
    assert [type(c) for c in learn.cbs] == [TrainEvalCallback] and not hasattr(learn, 'raiser')


def test_cancel_train_in_begin_fit():
    class Never(Callback):
        def begin_fit(self): raise CancelTrainException()
    log = Log()
    learn = make_learner(cbs=log)
    learn.fit(2, cbs=Never())
    assert names(log) == ['after_cancel_train', 'after_fit']      # Never (_order 0) raised before Log saw begin_fit


# ------------------------------------------------------------------ TrainEvalCallback

def test_train_eval_counts():
    class Pos(Callback):
        def __init__(self): self.seen = []
        def begin_batch(self):
            if self.run.in_train: self.seen.append((self.run.n_iter, self.run.n_epochs))
    p = Pos()
    learn = make_learner(cbs=p)
    learn.fit(2)
    assert [i for i, _ in p.seen] == list(range(6))
    assert [e for _, e in p.seen] == pytest.approx([0, 1/3, 2/3, 1, 4/3, 5/3])
    assert (learn.n_iter, learn.n_epochs) == (6, 2.0)
    assert learn.model.training is False      # the last pass was validation


# ------------------------------------------------------------------ stats

def test_avg_stats_weighted_by_batch_size():
    class Batches(Callback):
        _order = 50
        def __init__(self): self.rows = []
        def after_loss(self):
            if self.run.in_train:
                self.rows.append((self.loss.item(), accuracy(self.pred, self.yb).item(), len(self.yb)))
    b = Batches()
    learn = make_learner(cbs=[AvgStatsCallback([accuracy], show=False), b], n_train=20)   # batches of 8, 8, 4
    learn.fit(1)
    assert [n for *_, n in b.rows] == [8, 8, 4]
    n = sum(k for *_, k in b.rows)
    want = [sum(l * k for l, _, k in b.rows) / n, sum(a * k for _, a, k in b.rows) / n]
    assert learn.avg_stats.train_stats.avgs == pytest.approx(want)
    # the validation stats equal one evaluation of the trained model on the whole validation set
    x, y = learn.data.valid_ds.x, learn.data.valid_ds.y
    with torch.no_grad(): out = learn.model(x)
    assert learn.avg_stats.valid_stats.avgs == pytest.approx([F.cross_entropy(out, y).item(), accuracy(out, y).item()],
                                                             rel=1e-5)


def test_avg_stats_before_any_batch_is_nan():
    st = AvgStats([accuracy], in_train=True)
    assert all(math.isnan(v) for v in st.avgs) and st.names == ['loss', 'accuracy']


def test_train_metrics_off_tracks_only_train_loss():
    learn = make_learner(cbs=AvgStatsCallback([accuracy], show=False, train_metrics=False))
    learn.fit(1)
    assert list(learn.avg_stats.history[0]) == ['epoch', 'train_loss', 'valid_loss', 'valid_accuracy', 'time']
    assert learn.avg_stats.train_stats.count == 24 and learn.avg_stats.valid_stats.count == 10


def test_results_table(capsys):
    learn = make_learner(cbs=AvgStatsCallback([accuracy]))
    learn.fit(2)
    lines = [l for l in capsys.readouterr().out.splitlines() if l.strip()]
    assert lines[0].split() == ['epoch', 'train_loss', 'train_accuracy', 'valid_loss', 'valid_accuracy', 'time']
    assert [l.split()[0] for l in lines[1:]] == ['0', '1']
    h = learn.avg_stats.history
    assert [r['epoch'] for r in h] == [0, 1]
    assert float(lines[2].split()[3]) == pytest.approx(h[1]['valid_loss'], abs=1e-4)


def test_short_fit_lowers_the_loss():
    learn = make_learner(cbs=AvgStatsCallback([accuracy], show=False), lr=0.5, n_train=64)
    x, y = learn.data.train_ds.x, learn.data.train_ds.y
    with torch.no_grad(): before = F.cross_entropy(learn.model(x), y).item()
    learn.fit(5)
    with torch.no_grad(): after = F.cross_entropy(learn.model(x), y).item()
    assert after < 0.7 * before
    h = learn.avg_stats.history
    assert h[-1]['train_loss'] < h[0]['train_loss']


def test_get_learner_from_lesson3_loaders():
    x, y = torch.randn(100, 7), torch.randint(0, 3, (100,))
    data = DataBunch(*get_dls(ArrayDataset(x[:80], y[:80]), ArrayDataset(x[80:], y[80:]), 16), c=3)
    learn = get_learner(data, lr=0.1, nh=4)
    assert learn.model(x[:2]).shape == (2, 3)
    assert learn.opt.param_groups[0]['lr'] == 0.1
    learn.fit(1)
    assert learn.n_iter == 5


# ------------------------------------------------------------------ progress bars

def test_progress_enabled_rule(monkeypatch):
    monkeypatch.setenv('DLF_PROGRESS', '1'); assert progress_enabled() is True
    monkeypatch.setenv('DLF_PROGRESS', 'off'); assert progress_enabled() is False
    monkeypatch.delenv('DLF_PROGRESS')
    monkeypatch.setattr('sys.stderr', io.StringIO())      # not a terminal, not a Jupyter kernel
    assert progress_enabled() is False


def test_progress_callback_quiet_by_default(monkeypatch, capsys):
    monkeypatch.delenv('DLF_PROGRESS', raising=False)
    learn = make_learner(cbs=ProgressCallback())
    learn.fit(2)
    out = capsys.readouterr()
    assert learn.progress.on is False and out.err == '' and out.out == ''


def test_progress_callback_shows_bars_when_asked(capsys):
    learn = make_learner(cbs=ProgressCallback(show=True))
    learn.fit(2)
    err = capsys.readouterr().err
    assert 'epochs' in err and '2/2' in err
    assert learn.progress.mbar is None and learn.progress.pbar is None     # all bars closed


# ------------------------------------------------------------------ the optimizer: given, or built by the learner

def test_learner_builds_its_optimizer_from_a_function():
    torch.manual_seed(0)
    model = nn.Linear(5, 2)
    seen = []
    def opt_func(params, lr):
        seen.append(params)
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    learn = Learner(model, opt_func, F.cross_entropy, make_data(), lr=0.3)
    assert learn.opt_func is opt_func and learn.lr == 0.3
    assert seen[0] == [model.weight, model.bias] and learn.opt.param_groups[0]['lr'] == 0.3
    w0 = model.weight.detach().clone()
    learn.fit(1)
    assert not torch.equal(model.weight, w0) and len(learn.opt.state) == 2
    opt1 = learn.opt
    learn.fit(1, reset_opt=True)                       # a fresh optimizer over the same (trained) parameters
    assert learn.opt is not opt1 and len(seen) == 2 and seen[1][0] is model.weight


def test_learner_splitter_gives_parameter_groups():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    as_lists = lambda m: [list(m[0].parameters()), list(m[2].parameters())]
    as_dicts = lambda m: [{'params': m[0].parameters(), 'lr': 0.01}, {'params': m[2].parameters()}]
    for splitter, lrs in ((as_lists, [0.1, 0.1]), (as_dicts, [0.01, 0.1])):
        learn = Learner(model, torch.optim.SGD, F.cross_entropy, make_data(), lr=0.1, splitter=splitter)
        assert [pg['lr'] for pg in learn.opt.param_groups] == lrs
        assert learn.opt.param_groups[1]['params'] == [model[2].weight, model[2].bias]


def test_learner_without_lr_uses_the_functions_default():
    learn = Learner(nn.Linear(5, 2), torch.optim.Adam, F.cross_entropy, make_data())
    assert learn.lr is None and learn.opt.param_groups[0]['lr'] == 1e-3


def test_learner_given_an_optimizer_cannot_reset_it():
    learn = make_learner()
    assert learn.opt_func is None
    opt = learn.opt
    learn.fit(1)
    assert learn.opt is opt
    with pytest.raises(ValueError, match='cannot build a new one'): learn.fit(1, reset_opt=True)
    assert learn.opt is opt
