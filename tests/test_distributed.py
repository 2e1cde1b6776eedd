"""Tests for exp.nb_12: DistributedCallback with 2 processes on gloo (spawned by torch.multiprocessing, file://
rendezvous in a temporary folder, timeouts so that a hang fails within a minute): the ranks' weights are identical
and equal to a single process's trained on the whole batches; the reported statistics are the single process's and
only rank 0 prints them; a cancel raised on one rank (and an LR range test) ends training on both. Plus epoch_shards
and the single-process helpers."""
import contextlib
import io
import json
import math
import time

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn, optim

from exp.nb_03 import ArrayDataset, DataLoader, Sampler, accuracy
from exp.nb_04 import AvgStatsCallback, Callback, CancelEpochException, CancelTrainException, DataBunch, Learner
from exp.nb_05 import Recorder, find_lr
from exp.nb_12 import DistributedCallback, dist_backend, epoch_shards, is_rank0, rank0_only, setup_distributed

N_TRAIN, N_VALID, BS, EPOCHS, SEED = 64, 20, 16, 2, 3


def _data():
    "Random 3-class data in 6 dimensions; lesson 03 loaders (DistributedCallback replaces them by shards)."
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_TRAIN + N_VALID, 6, generator=g)
    y = (x @ torch.randn(6, 3, generator=g)).argmax(1)
    trn, val = ArrayDataset(x[:N_TRAIN], y[:N_TRAIN]), ArrayDataset(x[N_TRAIN:], y[N_TRAIN:])
    return DataBunch(DataLoader(trn, Sampler(trn, BS, shuffle=True), batched=True),
                     DataLoader(val, Sampler(val, 8), batched=True), c=3)


def _learner(data, cbs=(), show=False):
    "A small model without batchnorm, SGD with momentum; the same initial weights in every process."
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    return Learner(model, optim.SGD(model.parameters(), lr=0.2, momentum=0.9), F.cross_entropy, data,
                   cbs=[AvgStatsCallback([accuracy], show=show), *cbs])


class _EpochBatches:
    "The single-process loader of DistributedCallback's batches: epoch_shards with world size 1, next epoch each pass."
    def __init__(self, ds): self.ds, self.epoch = ds, 0
    def __len__(self): return math.ceil(len(self.ds) / BS)

    def __iter__(self):
        batches = epoch_shards(len(self.ds), BS, SEED, self.epoch)
        self.epoch += 1
        return (self.ds[i] for i in batches)


class _EpochCancelAtLoss(Callback):
    "On rank `rank` only: CancelEpochException at after_loss of step `n_iter` of epoch 0 (before the backward pass)."
    _order = 5
    def __init__(self, rank, n_iter): self.rank, self.at = rank, n_iter
    def after_loss(self):
        if self.in_train and (self.epoch, self.n_iter) == (0, self.at) and torch.distributed.get_rank() == self.rank:
            raise CancelEpochException()


class _TrainCancelAtStep(Callback):
    "On rank `rank` only: CancelTrainException at after_step of training step `n_iter` (after the backward pass)."
    _order = 5
    def __init__(self, rank, n_iter): self.rank, self.at = rank, n_iter
    def after_step(self):
        if self.n_iter == self.at and torch.distributed.get_rank() == self.rank: raise CancelTrainException()


def _summary(learn):
    "What the tests compare: flat weights, the statistics history, the number of training steps."
    flat = torch.cat([p.detach().flatten() for p in learn.model.parameters()])
    hist = [{k: v for k, v in h.items() if k != 'time'} for h in learn.avg_stats.history]
    return dict(params=flat.tolist(), history=hist, n_iter=learn.n_iter, model_type=type(learn.model).__name__)


def _worker(rank, world, tmp, mode):
    torch.set_num_threads(1)
    setup_distributed('gloo', timeout_s=30, init_method=f'file://{tmp}/rendezvous', rank=rank, world_size=world)
    try:
        cbs = [DistributedCallback(seed=SEED), Recorder()]
        if mode == 'cancel':
            cbs += [_EpochCancelAtLoss(1, 1), _TrainCancelAtStep(0, 3)]
        learn, out = _learner(_data(), cbs, show=True), io.StringIO()
        with contextlib.redirect_stdout(out): learn.fit(EPOCHS)
        res = dict(_summary(learn), printed=out.getvalue(), recorded=len(learn.recorder.losses))
        if mode == 'cancel':          # an LR range test: each rank's loss explodes at its own batch; they must agree
            finder = find_lr(learn, max_iter=40, min_lr=1e-3, max_lr=1e5, keep=DistributedCallback)
            res.update(finder_lrs=finder.lrs, diverged=finder.diverged)
        (tmp / f'rank{rank}.json').write_text(json.dumps(res))
    finally:
        torch.distributed.destroy_process_group()


def _spawn(tmp, mode, world=2, timeout=60):
    "Run `_worker` in `world` spawned processes; fail (killing them) if they are not done within `timeout` seconds."
    ctx = mp.start_processes(_worker, args=(world, tmp, mode), nprocs=world, join=False, start_method='spawn')
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes: p.kill()
            pytest.fail(f'distributed run ({mode}) did not finish within {timeout} s: deadlock?')
    return [json.loads((tmp / f'rank{r}.json').read_text()) for r in range(world)]


def _single():
    "The single-process run on the whole batches that the ranks share."
    data = _data()
    data.train_dl = _EpochBatches(data.train_ds)
    learn = _learner(data)
    learn.fit(EPOCHS)
    return _summary(learn)


def test_two_ranks_match_one_process(tmp_path):
    r0, r1 = _spawn(tmp_path, 'plain')
    ref = _single()
    assert r0['params'] == r1['params'], 'the ranks drifted apart'
    assert 'valid_accuracy' in r0['printed'] and r1['printed'] == '', 'only rank 0 prints'
    assert r0['recorded'] == r0['n_iter'] and r1['recorded'] == 0, 'only rank 0 records'
    assert max(abs(a - b) for a, b in zip(r0['params'], ref['params'])) < 1e-6
    assert r0['n_iter'] == ref['n_iter'] == EPOCHS * N_TRAIN // BS and r0['model_type'] == 'Sequential'
    assert len(r0['history']) == len(ref['history']) == EPOCHS
    for h0, h1, hr in zip(r0['history'], r1['history'], ref['history']):
        assert h0 == h1, 'the ranks report different statistics'
        for k in ('train_loss', 'valid_loss', 'valid_accuracy', 'train_accuracy'):
            assert h0[k] == pytest.approx(hr[k], abs=1e-6)


def test_cancel_on_one_rank_ends_both(tmp_path):
    r0, r1 = _spawn(tmp_path, 'cancel')
    # rank 1 ends epoch 0 in its second batch (n_iter 1, before the backward pass; a cancelled batch is not counted):
    # both ranks validate; in epoch 1 rank 0 ends training after the update of the batch with n_iter 3. Both ranks
    # took that update; rank 1 learns of the cancel at the end of the batch, after counting it (n_iter 4), while
    # rank 0's own cancel skipped its after_batch (n_iter 3)
    assert r0['params'] == r1['params'] and (r0['n_iter'], r1['n_iter']) == (3, 4)
    assert len(r0['history']) == len(r1['history']) == 1 and r0['history'] == r1['history']
    assert r0['diverged'] and r1['diverged'] and r0['finder_lrs'] == r1['finder_lrs'] and len(r0['finder_lrs']) < 40


def test_epoch_shards_partition_the_single_process_batches():
    for n, bs, w in ((10, 4, 2), (64, 16, 2), (50, 8, 3)):
        single = epoch_shards(n, bs, 0, 5)
        parts = [epoch_shards(n, bs, 0, 5, r, w) for r in range(w)]
        assert all(len(p) == len(single) - (len(single[-1]) < w) for p in parts)
        for i in range(len(parts[0])): assert torch.equal(torch.cat([p[i] for p in parts]), single[i])
    assert not torch.equal(torch.cat(epoch_shards(10, 4, 0, 0)), torch.cat(epoch_shards(10, 4, 0, 1)))
    assert torch.equal(torch.cat(epoch_shards(10, 4, 0, 0)).sort().values, torch.arange(10))


def test_single_process_helpers():
    assert dist_backend('cpu') == 'gloo' and dist_backend('cuda') == 'nccl'
    assert is_rank0()
    assert rank0_only(lambda x: x + 1)(1) == 2
    learn = _learner(_data(), [DistributedCallback()])
    with pytest.raises(RuntimeError, match='setup_distributed'): learn.fit(1)
    assert type(learn.model).__name__ == 'Sequential'
