"""Benchmark: lesson 08's data block pipeline on the 70,000-file Fashion-MNIST PNG tree (data/fashion-png/).

Measured in this one run:
  (1) get_files over the tree (median of --repeats; the target is under 1 s);
  (2) images per second through the whole item pipeline (open the PNG, to_byte_tensor, to_float_tensor, collate)
      for one pass over the training set, with num_workers 0, 1 and 2;
  (3) decode_once: the one-off decoding of all 70,000 files into a uint8 tensor (all cores);
  (4) one training epoch (training pass and validation pass) of lesson 07's batchnorm CNN, same seed, three ways:
        tensors   in-memory tensors from get_fashion(), lesson 03's batched get_dls
        png       the PNG pipeline decoding every file every epoch (databunchify, num_workers 0 and the default)
        cached    the PNG pipeline after decode_once (batched, like the tensors)
      and the ratios to `tensors` (the target for the pipeline: at most 1.3).

The PNG tree is written first if it is missing (about a minute). Epoch times are medians over --repeats epochs of
one fit (after one warm-up epoch that is not counted). Thread count and cores are printed with the timings.

Usage: python bench/data_block.py [--repeats 3] [--bs 128]
"""
import argparse
import contextlib
import functools
import io
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import optim

from exp.nb_08 import (
    FASHION_CLASSES,
    BatchTransformXCallback,
    Callback,
    CategoryProcessor,
    DataBunch,
    Dataset,
    DeviceCallback,
    ImageList,
    Learner,
    SplitData,
    conv_norm,
    data_dir,
    databunchify,
    decode_once,
    default_num_workers,
    export_image_folder,
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


class EpochTimer(Callback):
    "Records the wall time of each epoch (training and validation pass)."
    def begin_fit(self): self.times = []
    def begin_epoch(self): self.t0 = time.perf_counter()
    def after_epoch(self): self.times.append(time.perf_counter() - self.t0)


def epoch_times(data, norm, n, lr=0.1):
    "Seconds per epoch for `n` epochs after a warm-up one, training the batchnorm CNN on `data` from seed 0."
    torch.manual_seed(0)
    model = init_cnn(get_cnn_model(data, NFS, conv_norm, **GR), a=GR['leak'])
    learn = Learner(model, optim.SGD(model.parameters(), lr=lr, momentum=0.9), F.cross_entropy, data,
                    cbs=[DeviceCallback(), BatchTransformXCallback(norm), EpochTimer()])
    learn.fit(n + 1)
    return learn.epoch_timer.times[1:]


def images_per_s(dl):
    "Images per second for one pass over `dl` (worker start-up included)."
    t0, n = time.perf_counter(), 0
    for xb, _ in dl: n += len(xb)
    return n / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--bs', type=int, default=128)
    a = p.parse_args()
    x_train, y_train, x_valid, y_valid = get_fashion()
    path = data_dir()/'fashion-png'
    for split, (x, y) in {'train': (x_train, y_train), 'valid': (x_valid, y_valid)}.items():
        export_image_folder(x, y, FOLDERS, path, split)
    print(f'torch threads: {torch.get_num_threads()}, cores: {len(os.sched_getaffinity(0))}, '
          f'default num_workers: {default_num_workers()}\n')

    ts = []
    for _ in range(a.repeats):
        t0 = time.perf_counter(); files = get_files(path, image_extensions); ts.append(time.perf_counter() - t0)
    print(f'(1) get_files: {len(files):,} files in {statistics.median(ts) * 1000:.0f} ms '
          f'(median of {a.repeats}; target < 1000 ms)')

    il = ImageList(files, path, tfms=[to_byte_tensor, to_float_tensor])
    sd = SplitData.split_by_func(il, grandparent_splitter)
    ll = label_by_func(sd, parent_labeler, proc_y=CategoryProcessor(FOLDERS))
    print('(2) images/s through the item pipeline, one pass over the training set:')
    for nw in (0, 1, 2):
        print(f'      num_workers={nw}: {images_per_s(databunchify(ll, a.bs, num_workers=nw).train_dl):8,.0f}')

    t0 = time.perf_counter(); cached = decode_once(ll); t = time.perf_counter() - t0
    print(f'(3) decode_once: 70,000 files in {t:.1f} s ({70_000 / t:,.0f} images/s)')

    order = torch.tensor([int(f.stem) for f in ll.train.x.items])
    xs = cached.train.x.float() / 255
    norm = functools.partial(normalize_chan, mean=xs.mean((0, 2, 3)), std=xs.std((0, 2, 3)))
    tdata = DataBunch(*get_dls(Dataset(x_train[order].view(-1, 1, 28, 28), y_train[order]),
                               Dataset(x_valid.view(-1, 1, 28, 28), y_valid), a.bs), c=10)
    tdata.c_in, tdata.c_out = 1, 10
    runs = {'tensors': tdata, 'cached': databunchify(cached, a.bs),
            'png, num_workers=0': databunchify(ll, a.bs, num_workers=0),
            f'png, num_workers={default_num_workers()}': databunchify(ll, a.bs)}
    print(f'(4) seconds per epoch (median of {a.repeats}, bs {a.bs}), ratio to tensors:')
    base = None
    for name, data in runs.items():
        with contextlib.redirect_stdout(io.StringIO()): s = statistics.median(epoch_times(data, norm, a.repeats))
        base = base or s
        print(f'      {name:>20}: {s:6.2f} s  {s / base:5.2f}x')


if __name__ == '__main__':
    main()
