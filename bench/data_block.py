"""Benchmark: lesson 08's data block pipeline on the 70,000-file Fashion-MNIST PNG tree (data/fashion-png/).

Measured in this one run:
  (1) get_files over the tree (median of 3; the target is under 1 s);
  (2) images per second through the item pipeline (open the PNG, to_byte_tensor, to_float_tensor, collate) over
      150 training batches, with num_workers 0, 1 and 2, and through file_batches (a batch per fetch), 0 and 1;
  (3) decode_once: the one-off decoding of all 70,000 files into a uint8 tensor (all cores);
  (4) the lesson's epoch race, the same function (compare_epochs) on the same contenders: lesson 07's batchnorm
      CNN, batch 128, seed 42, SGD at a constant lr, DeviceCallback + BatchTransformXCallback(normalize), one
      epoch (training and validation pass) each in turn for --rounds rounds after a warm-up round; the ratio
      to `tensors` is the median over rounds of the per-round ratio. Contenders:
        tensors                      get_fashion()'s tensors in memory, lesson 03's batched get_dls
        PNG, decoded once            databunchify(decode_once(ll))
        every epoch, item by item    databunchify(ll), num_workers 0 and 1
        every epoch, by batch        databunchify(file_batches(ll)), num_workers 0 and 1
      The target for the pipeline is at most 1.3x tensors; the script prints which contenders meet it, and the
      decode cost per image implied by the 0-worker rows against the 1.3x budget.

The PNG tree is written first if it is missing (about a minute). Thread count and cores are printed.
--subset N writes and measures a tree of only the first N images of each split, in a temporary folder (a smoke test).

Usage: python bench/data_block.py [--rounds 2] [--bs 128] [--subset N]
"""
import contextlib
import functools
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import BenchArgs, clock, machine
from torch import optim

from exp.all import (
    FASHION_CLASSES,
    ArrayDataset,
    BatchTransformXCallback,
    CategoryProcessor,
    DataBunch,
    DeviceCallback,
    ImageList,
    Learner,
    SplitData,
    compare_epochs,
    conv_norm,
    data_dir,
    databunchify,
    decode_once,
    default_num_workers,
    export_image_folder,
    file_batches,
    get_cnn_model,
    get_dls,
    get_fashion,
    get_files,
    grandparent_splitter,
    image_extensions,
    init_cnn,
    label_by_func,
    normalize_chan,
    parent_labeler,
    to_byte_tensor,
    to_float_tensor,
)

FOLDERS = [c.replace('/', '_') for c in FASHION_CLASSES]
NFS = [16, 32, 64, 64, 64]  # lesson 07's batchnorm CNN, as lessons 08 and 09 train it
GR = dict(leak=0.1, sub=0.4, maxv=6.)
TARGET = 1.3


def timing_learner(data, norm, seed=42):
    "The lesson's timing Learner: the batchnorm CNN on `data`, SGD at a constant lr, no metrics."
    torch.manual_seed(seed)
    model = init_cnn(get_cnn_model(data, NFS, conv_norm, **GR), a=GR['leak'])
    return Learner(model, optim.SGD(model.parameters(), lr=0.1, momentum=0.9), F.cross_entropy, data,
                   cbs=[DeviceCallback(), BatchTransformXCallback(norm)])


def images_per_s(dl, n_batches=150):
    "Images per second for the first `n_batches` batches of `dl` (worker start-up included), as the lesson measures."
    t0, n = time.perf_counter(), 0
    for _, (xb, _) in zip(range(n_batches), dl): n += len(xb)
    return n / (time.perf_counter() - t0)


def main(argv=None):
    p = BenchArgs(__doc__, rounds=2, bs=128)
    p.add_argument('--subset', type=int, default=None, help='only the first N images of each split')
    a = p.parse_args(argv)
    x_train, y_train, x_valid, y_valid = data = get_fashion()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) if a.subset else data_dir()/'fashion-png'
        for split, (x, y) in {'train': (x_train, y_train), 'valid': (x_valid, y_valid)}.items():
            export_image_folder(x[:a.subset], y[:a.subset], FOLDERS, path, split)
        race(path, data, a.bs, a.rounds)


def race(path, data, bs, rounds):
    "Measure (1) to (4) on the PNG tree at `path` of the tensors `data` (x_train, y_train, x_valid, y_valid)."
    x_train, y_train, x_valid, y_valid = data
    nw = default_num_workers()
    print(f'{machine()}, cores: {len(os.sched_getaffinity(0))}, default num_workers: {nw}\n')
    ts = [clock(get_files, path, image_extensions)[0] for _ in range(3)]
    files = get_files(path, image_extensions)
    print(f'(1) get_files: {len(files):,} files in {statistics.median(ts) * 1000:.0f} ms '
          '(median of 3; target < 1000 ms)')

    il = ImageList(files, path, tfms=[to_byte_tensor, to_float_tensor])
    ll = label_by_func(SplitData.split_by_func(il, grandparent_splitter), parent_labeler,
                       proc_y=CategoryProcessor(FOLDERS))
    fb = file_batches(ll)
    print('(2) images/s, first 150 training batches (loading alone):')
    for name, sd_, nws in (('item by item', ll, (0, 1, 2)), ('by batch', fb, (0, 1))):
        for nw_ in nws:
            print(f'      {name:<12}, num_workers={nw_}: '
                  f'{images_per_s(databunchify(sd_, bs, num_workers=nw_).train_dl):8,.0f}')

    t = time.perf_counter(); cached = decode_once(ll); t = time.perf_counter() - t
    n_img = len(ll.train) + len(ll.valid)
    print(f'(3) decode_once: {n_img:,} files in {t:.1f} s ({n_img / t:,.0f} images/s)')

    otr, ova = (torch.tensor([int(f.stem) for f in d.x.items]) for d in (ll.train, ll.valid))
    xs = cached.train.x.float() / 255
    norm = functools.partial(normalize_chan, mean=xs.mean((0, 2, 3)), std=xs.std((0, 2, 3)))
    tdata = DataBunch(*get_dls(ArrayDataset(x_train[otr].view(-1, 1, 28, 28), y_train[otr]),
                               ArrayDataset(x_valid[ova].view(-1, 1, 28, 28), y_valid[ova]), bs), c=10)
    tdata.c_in, tdata.c_out = 1, 10
    contenders = {'tensors': tdata, 'PNG, decoded once': databunchify(cached, bs)}
    for nw_ in (0, 1):
        contenders[f'PNG every epoch, item by item, {nw_} worker(s)'] = databunchify(ll, bs, num_workers=nw_)
        contenders[f'PNG every epoch, by batch, {nw_} worker(s)'] = databunchify(fb, bs, num_workers=nw_)
    with contextlib.redirect_stdout(io.StringIO()):
        secs = compare_epochs({k: timing_learner(d, norm) for k, d in contenders.items()}, rounds=rounds)
    print(f'(4) seconds per epoch, {rounds} rounds in turns after a warm-up round (batch {bs}); ratio to tensors: '
          'median of the per-round ratios [each round]')
    ratio = {}
    for k, s in secs.items():
        rs = [x / b for x, b in zip(s, secs['tensors'])]
        ratio[k] = statistics.median(rs)
        print(f'      {k:>42}: {statistics.median(s):6.2f} s  {ratio[k]:5.2f}x  [{", ".join(f"{r:.2f}" for r in rs)}]')
    meet = [k for k, r in ratio.items() if k != 'tensors' and r <= TARGET]
    print(f'      meet the target of at most {TARGET}x tensors: {meet}')
    for kind in ('item by item', 'by batch'):
        r0, r1 = ratio[f'PNG every epoch, {kind}, 0 worker(s)'], ratio[f'PNG every epoch, {kind}, 1 worker(s)']
        print(f'      {kind}: 1 worker {"faster" if r1 < r0 else "not faster"} than none ({r0 / r1:.2f}x); '
              f'default_num_workers() here: {nw}')
        k, t_t = f'PNG every epoch, {kind}, 0 worker(s)', statistics.median(secs['tensors'])
        print(f'      {k}: decoding costs {(ratio[k] - 1) * t_t / n_img * 1e6:.1f} us per image in the training '
              f'process; {TARGET}x allows {(TARGET - 1) * t_t / n_img * 1e6:.1f} us')


if __name__ == '__main__':
    main()
