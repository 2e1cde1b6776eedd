"""Data-parallel training of lesson 07's batchnorm CNN on Fashion-MNIST with torch.distributed (lesson 12).

One machine, N processes (torchrun picks a free port with --standalone):
    torchrun --standalone --nproc_per_node N bench/ddp_train.py [options]
Several machines: run on every machine, with the same rendezvous endpoint (a host:port of one of them) and job id:
    torchrun --nnodes M --nproc_per_node N --rdzv_backend c10d --rdzv_endpoint HOST:29400 --rdzv_id JOB \\
        bench/ddp_train.py [options]
Without torchrun (python bench/ddp_train.py ...) it trains in one plain process, without DDP: the baseline.

Options: --epochs 1, --bs 256 (the global batch, split between the processes), --lr 1e-2 (one-cycle adam_opt),
--threads T (torch threads per process; default torch's), --max-steps N (stop after N training steps, for
throughput), --seed 0, --save PATH (rank 0 saves the final weights there, as a state dict), --warmup 5.

Rank 0 prints the epoch table (statistics all-reduced over the processes), the training throughput in samples/s
(after the first `warmup` steps, validation excluded), the largest difference between the ranks' parameters
after training, the median time of one all-reduce of a gradient-sized float32 tensor, and finally one line
`RESULT {json}` with those figures. Uses gloo on CPU, nccl on CUDA (one GPU per process: LOCAL_RANK).
"""
import argparse
import contextlib
import gc
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from exp.nb_00a import get_fashion
from exp.nb_02 import normalize
from exp.nb_03 import ArrayDataset, accuracy, get_dls
from exp.nb_04 import AvgStatsCallback, Callback, CancelTrainException, DataBunch, Learner
from exp.nb_05 import one_cycle_cbs
from exp.nb_06 import BatchTransformXCallback, DeviceCallback, get_cnn_model, init_cnn, mnist_resize
from exp.nb_07 import BatchNorm, conv_norm
from exp.nb_09 import adam_opt
from exp.nb_12 import DistributedCallback, is_rank0, setup_distributed


class _StepClock(Callback):
    "Times the training steps; raises CancelTrainException after `max_steps` of them (0: no limit)."
    def __init__(self, max_steps): self.max_steps, self.times = max_steps, []

    def after_batch(self):
        if not self.in_train: return
        self.times.append(time.perf_counter())
        if self.max_steps and self.n_iter >= self.max_steps: raise CancelTrainException()


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--epochs', type=int, default=1)
    p.add_argument('--bs', type=int, default=256)
    p.add_argument('--lr', type=float, default=1e-2)
    p.add_argument('--threads', type=int, default=0)
    p.add_argument('--max-steps', type=int, default=0)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--save', type=Path, default=None)
    a = p.parse_args(argv)
    if a.epochs < 1 or a.bs < 1 or a.lr <= 0 or a.max_steps < 0 or a.threads < 0:
        p.error('need --epochs >= 1, --bs >= 1, --lr > 0, --max-steps >= 0, --threads >= 0')
    return a


def _data(bs):
    "Normalised Fashion-MNIST in lesson 03's loaders (the DistributedCallback replaces them by each rank's shards)."
    x_train, y_train, x_valid, y_valid = get_fashion()
    m, s = x_train.mean(), x_train.std()
    trn, val = ArrayDataset(normalize(x_train, m, s), y_train), ArrayDataset(normalize(x_valid, m, s), y_valid)
    return DataBunch(*get_dls(trn, val, bs), c=10)


def _allreduce_ms(numel, device, reps=20):
    "Median milliseconds of one all-reduce of a float32 tensor of `numel` elements."
    t, ts = torch.zeros(numel, device=device), []
    for _ in range(reps + 2):
        dist.barrier()
        t0 = time.perf_counter(); dist.all_reduce(t)
        if device.type == 'cuda': torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts[2:])


def _param_spread(model):
    "The largest absolute difference between this rank's parameters and rank 0's (all-reduced max)."
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    ref = flat.clone(); dist.broadcast(ref, 0)
    d = (flat - ref).abs().max().reshape(1); dist.all_reduce(d, op=dist.ReduceOp.MAX)
    return d.item()


def _save(model, path):
    "Rank 0 only: the state dict to `path`, through a temporary file and a rename (never half-written)."
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)


def main(argv=None):
    a = _args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    distributed = 'WORLD_SIZE' in os.environ
    device = setup_distributed() if distributed else None
    world = dist.get_world_size() if distributed else 1
    try:
        with contextlib.redirect_stdout(sys.stdout if is_rank0() else io.StringIO()): data = _data(a.bs)
        torch.manual_seed(a.seed)
        gr = dict(leak=0.1, sub=0.4, maxv=6.)
        model = init_cnn(get_cnn_model(data, [16, 32, 64, 64, 64], conv_norm, norm=BatchNorm, **gr), a=gr['leak'])
        clock = _StepClock(a.max_steps)
        cbs = [DeviceCallback(device), BatchTransformXCallback(mnist_resize), AvgStatsCallback([accuracy]), clock]
        if distributed: cbs.append(DistributedCallback(seed=a.seed))
        learn = Learner(model, lambda ps, lr: adam_opt(ps, lr, wd=1e-2), F.cross_entropy, data, cbs=cbs, lr=a.lr)
        if is_rank0():
            print(f'world size {world}, backend {dist.get_backend() if distributed else "none (one plain process)"}, '
                  f'threads per process {torch.get_num_threads()}, global batch {a.bs}', flush=True)
        learn.fit(a.epochs, cbs=one_cycle_cbs(a.lr))
        ts = clock.times[a.warmup:]
        sps = (len(ts) - 1) * a.bs / (ts[-1] - ts[0]) if len(ts) > 1 else float('nan')
        res = dict(world_size=world, threads=torch.get_num_threads(), steps=len(clock.times), samples_per_s=sps,
                   step_ms=1e3 * (ts[-1] - ts[0]) / (len(ts) - 1) if len(ts) > 1 else float('nan'),
                   params=sum(p.numel() for p in model.parameters()),
                   valid_accuracy=learn.avg_stats.history[-1]['valid_accuracy'] if learn.avg_stats.history else None)
        if distributed:
            res['param_spread'] = _param_spread(learn.model)
            res['allreduce_ms'] = _allreduce_ms(res['params'], learn.distributed.comm_device)
        if is_rank0():
            print(f"training throughput {sps:.0f} samples/s ({res['step_ms']:.1f} ms per step of {a.bs} samples)")
            if distributed:
                print(f"parameters identical on all ranks: max difference {res['param_spread']:.1e}")
                print(f"one all-reduce of the {res['params']:,} gradients: {res['allreduce_ms']:.2f} ms")
            if a.save: _save(learn.model, a.save); print(f'saved the weights to {a.save}')
            print('RESULT ' + json.dumps(res), flush=True)
    finally:
        learn = model = None                # free the DDP reducer (held by the last batch's graph) before the group
        gc.collect()
        if distributed: dist.destroy_process_group()


if __name__ == '__main__':
    main()
