"""Build data/fashion_sample.npz, the small Fashion-MNIST sample get_fashion() falls back to offline.

    python data/make_fashion_sample.py                 # reads data/fashion-mnist/ (or $FOUNDATIONS_DATA/fashion-mnist/)
    python data/make_fashion_sample.py --src DIR       # [--out PATH] [--seed N]

Source: the four original Fashion-MNIST idx files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz), each checked against the sha256 of its decompressed
bytes (FASHION_SHA256 in nbs/00a_data.ipynb) before use.

Output: an .npz (a zip of .npy files, no pickle: read it with np.load(path, allow_pickle=False)) holding
x_train (6000, 28, 28) uint8, y_train (6000,) uint8, x_valid (1000, 28, 28) uint8, y_valid (1000,) uint8:
600 training and 100 test images of each class, chosen with a seeded shuffle and shuffled within each split.
The members are LZMA-compressed (zipfile.ZIP_LZMA, which np.load reads like any zip) to stay under 3 MB.

The file is written deterministically (fixed seed, fixed member order and timestamps), so running the script
again gives the same bytes (with the same liblzma); it prints the sha256 fingerprint of the four arrays, which
must equal FASHION_SAMPLE_SHA256 in nbs/00a_data.ipynb.
Exit codes: 0 success, 1 bad or missing input.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import random
import sys
import zipfile
from pathlib import Path

import numpy as np

from exp.nb_00 import atomic_write

N_CLASSES = 10
PER_CLASS = {'train': 600, 't10k': 100}  # images of each class taken from the upstream train and test sets
KEYS = ('x_train', 'y_train', 'x_valid', 'y_valid')
FILES = {  # upstream name -> sha256 of the decompressed bytes (the same table as FASHION_SHA256 in 00a_data)
    'train-images-idx3-ubyte.gz': 'c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888',
    'train-labels-idx1-ubyte.gz': 'bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9',
    't10k-images-idx3-ubyte.gz': '5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b',
    't10k-labels-idx1-ubyte.gz': '0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34',
}


class SampleError(Exception):
    """Bad input for the sample builder; the message names the file at fault."""


def default_src() -> Path:
    """The data cache's fashion-mnist folder: $FOUNDATIONS_DATA/fashion-mnist, else data/fashion-mnist."""
    env = os.environ.get('FOUNDATIONS_DATA')
    return (Path(env).expanduser() if env else Path(__file__).resolve().parent) / 'fashion-mnist'


def read_original(path: Path, expected: str | None) -> np.ndarray:
    """The uint8 array in one original idx file, after checking the sha256 of its decompressed bytes."""
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as e:
        raise SampleError(f'{path}: cannot read as a gzipped idx file ({e})') from e
    if expected is not None and hashlib.sha256(raw).hexdigest() != expected:
        raise SampleError(f'{path}: not the original file (sha256 of its decompressed bytes differs)')
    if len(raw) < 4 or raw[:3] != b'\x00\x00\x08' or raw[3] not in (1, 3):
        raise SampleError(f'{path}: not a uint8 idx file of 1 or 3 dimensions (magic {raw[:4].hex()})')
    nd = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big') for i in range(nd))
    if len(raw) != 4 + 4 * nd + int(np.prod(shape)):
        raise SampleError(f'{path}: header says {shape} but the file holds {len(raw):,} bytes')
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * nd).reshape(shape)


def read_split(src: Path, split: str, check: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 28, 28) and labels (n,) of the upstream 'train' or 't10k' split in `src`."""
    names = [f'{split}-images-idx3-ubyte.gz', f'{split}-labels-idx1-ubyte.gz']
    for n in names:
        if not (src / n).is_file():
            raise SampleError(f'{src / n}: file not found')
    x, y = (read_original(src / n, FILES[n] if check else None) for n in names)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or y.max() >= N_CLASSES:
        raise SampleError(f'{src}: {split} images {x.shape} and labels {y.shape} do not match')
    return x, y


def pick(y: np.ndarray, per_class: int, rng: random.Random) -> np.ndarray:
    """`per_class` row indices of each class, chosen with `rng`, then shuffled together."""
    idx: list[int] = []
    for c in range(N_CLASSES):
        rows = [int(i) for i in np.flatnonzero(y == c)]
        if len(rows) < per_class:
            raise SampleError(f'only {len(rows)} images of class {c}, need {per_class}')
        rng.shuffle(rows)
        idx += rows[:per_class]
    rng.shuffle(idx)
    return np.array(idx, dtype=np.int64)


def build(train: tuple, test: tuple, seed: int = 0, per_class: dict | None = None) -> dict[str, np.ndarray]:
    """The sample's four arrays from the upstream (images, labels) of train and test."""
    rng = random.Random(seed)  # stable across Python versions, unlike numpy's generators
    per_class = per_class or PER_CLASS
    i, j = pick(train[1], per_class['train'], rng), pick(test[1], per_class['t10k'], rng)
    arrays = (train[0][i], train[1][i], test[0][j], test[1][j])
    return {k: np.ascontiguousarray(a, dtype=np.uint8) for k, a in zip(KEYS, arrays)}


def fingerprint(arrays: dict[str, np.ndarray]) -> str:
    """sha256 of the four arrays' bytes (uint8, C order) in the order x_train, y_train, x_valid, y_valid."""
    h = hashlib.sha256()
    for k in KEYS:
        h.update(np.ascontiguousarray(arrays[k], dtype=np.uint8).tobytes())
    return h.hexdigest()


def to_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz with LZMA-compressed members, fixed timestamps and member order, so output is repeatable."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w') as z:
        for k in KEYS:
            npy = io.BytesIO()
            np.lib.format.write_array(npy, arrays[k], allow_pickle=False)
            info = zipfile.ZipInfo(f'{k}.npy', date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type, info.external_attr = zipfile.ZIP_LZMA, 0o644 << 16
            z.writestr(info, npy.getvalue())
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--src', type=Path, default=None, help='folder with the four original files')
    p.add_argument('--out', type=Path, default=Path(__file__).resolve().parent / 'fashion_sample.npz')
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    src = args.src or default_src()
    try:
        arrays = build(read_split(src, 'train'), read_split(src, 't10k'), args.seed)
    except SampleError as e:
        print(f'make_fashion_sample: {e}', file=sys.stderr)
        return 1
    blob = to_bytes(arrays)
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:  # our own fresh bytes must read back
        if fingerprint({k: z[k] for k in KEYS}) != fingerprint(arrays):
            print('make_fashion_sample: the written file does not round-trip', file=sys.stderr)
            return 1
    atomic_write(args.out, blob)
    print(f'wrote {args.out.name}: {len(blob):,} bytes, {len(arrays["x_train"]):,} train + '
          f'{len(arrays["x_valid"]):,} valid images, seed {args.seed}')
    print(f'fingerprint (sha256 of the arrays): {fingerprint(arrays)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
