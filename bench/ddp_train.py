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
import contextlib
import gc
import io
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from common import BenchArgs, clock, interleave, medians

from exp.all import (
    AvgStatsCallback,
    Callback,
    CancelTrainException,
    DeviceCallback,
    DistributedCallback,
    Learner,
    accuracy,
    adam_opt,
    atomic_write,
    conv_norm,
    fashion_images,
    get_cnn_model,
    init_cnn,
    is_rank0,
    one_cycle_cbs,
    setup_distributed,
)


class _StepClock(Callback):
    "Times the training steps; raises CancelTrainException after `max_steps` of them (0: no limit)."
    def __init__(self, max_steps): self.max_steps, self.times = max_steps, []

    def after_batch(self):
        if not self.in_train: return
        self.times.append(time.perf_counter())
        if self.max_steps and self.n_iter >= self.max_steps: raise CancelTrainException()


def _allreduce_ms(numel, device, reps=20):
    "Median milliseconds of one all-reduce of a float32 tensor of `numel` elements (after a barrier each)."
    t = torch.zeros(numel, device=device)
    def once(): dist.barrier(); return clock(dist.all_reduce, t, device=device)[0] * 1e3
    return medians(interleave({'all-reduce': once}, reps, warmup=2))['all-reduce']


def _param_spread(model):
    "The largest absolute difference between this rank's parameters and rank 0's (all-reduced max)."
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    ref = flat.clone(); dist.broadcast(ref, 0)
    d = (flat - ref).abs().max().reshape(1); dist.all_reduce(d, op=dist.ReduceOp.MAX)
    return d.item()


def main(argv=None):
    p = BenchArgs(__doc__, epochs=1, bs=256, lr=1e-2, max_steps=0, seed=0)
    p.add_argument('--warmup', type=int, default=5, help='training steps left out of the throughput')
    p.add_argument('--save', type=Path, default=None, help='rank 0 saves the final state dict there')
    a = p.parse_args(argv)
    distributed = 'WORLD_SIZE' in os.environ
    device = setup_distributed() if distributed else None
    world = dist.get_world_size() if distributed else 1
    try:
        # lesson 11's normalised images; the DistributedCallback gives each rank its shards of these loaders
        with contextlib.redirect_stdout(sys.stdout if is_rank0() else io.StringIO()): data = fashion_images(a.bs)
        torch.manual_seed(a.seed)
        gr = dict(leak=0.1, sub=0.4, maxv=6.)
        model = init_cnn(get_cnn_model(data, [16, 32, 64, 64, 64], conv_norm, **gr), a=gr['leak'])
        clock_cb = _StepClock(a.max_steps)
        cbs = [DeviceCallback(device), AvgStatsCallback([accuracy]), clock_cb]
        if distributed: cbs.append(DistributedCallback(seed=a.seed))
        learn = Learner(model, lambda ps, lr: adam_opt(ps, lr, wd=1e-2), F.cross_entropy, data, cbs=cbs, lr=a.lr)
        if is_rank0():
            print(f'world size {world}, backend {dist.get_backend() if distributed else "none (one plain process)"}, '
                  f'threads per process {torch.get_num_threads()}, global batch {a.bs}', flush=True)
        learn.fit(a.epochs, cbs=one_cycle_cbs(a.lr))
        ts = clock_cb.times[a.warmup:]
        step_ms = 1e3 * (ts[-1] - ts[0]) / (len(ts) - 1) if len(ts) > 1 else float('nan')
        res = dict(world_size=world, threads=torch.get_num_threads(), steps=len(clock_cb.times),
                   samples_per_s=a.bs / step_ms * 1e3, step_ms=step_ms,
                   params=sum(p.numel() for p in model.parameters()),
                   valid_accuracy=learn.avg_stats.history[-1]['valid_accuracy'] if learn.avg_stats.history else None)
        if distributed:
            res['param_spread'] = _param_spread(learn.model)
            res['allreduce_ms'] = _allreduce_ms(res['params'], learn.distributed.comm_device)
        if is_rank0():
            print(f"training throughput {res['samples_per_s']:.0f} samples/s "
                  f'({step_ms:.1f} ms per step of {a.bs} samples)')
            if distributed:
                print(f"parameters identical on all ranks: max difference {res['param_spread']:.1e}")
                print(f"one all-reduce of the {res['params']:,} gradients: {res['allreduce_ms']:.2f} ms")
            if a.save:
                a.save.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(a.save, lambda f: torch.save(learn.model.state_dict(), f))
                print(f'saved the weights to {a.save}')
            print('RESULT ' + json.dumps(res), flush=True)
    finally:
        learn = model = None                # free the DDP reducer (held by the last batch's graph) before the group
        gc.collect()
        if distributed: dist.destroy_process_group()


if __name__ == '__main__':
    main()
