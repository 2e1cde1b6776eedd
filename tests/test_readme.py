"""The README's "Training on your own images" recipe runs as written, on a generated folder of PNGs."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from exp.nb_11 import xresnet18
from exp.nb_11a import load_pretrained

REPO = Path(__file__).resolve().parents[1]
CLASSES = ['cross', 'dot', 'ring']


def recipe() -> str:
    "The python block of the README section 'Training on your own images'."
    section = (REPO / 'README.md').read_text().split('### Training on your own images', 1)[1]
    return re.search(r'```python\n(.*?)```', section, re.S)[1]


def make_images(root: Path, n_train=12, n_valid=4) -> None:
    "28x28 greyscale PNGs, one brightness per class, in root/{train,valid}/<class>/."
    rng = np.random.default_rng(0)
    for split, n in (('train', n_train), ('valid', n_valid)):
        for k, c in enumerate(CLASSES):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                img = (rng.random((28, 28)) * 60 + 80 * k).astype(np.uint8)
                Image.fromarray(img, 'L').save(root / split / c / f'{i:03d}.png')


def test_own_images_recipe_runs_as_written(tmp_path):
    make_images(tmp_path / 'my_images')
    env = dict(os.environ, OMP_NUM_THREADS='1', DLF_PROGRESS='0', PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, '-c', recipe()], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    assert lines[0].split() == ['epoch', 'train_loss', 'train_accuracy', 'valid_loss', 'valid_accuracy', 'time']
    assert [row.split()[0] for row in lines[1:-1]] == ['0', '1', '2', '3', '4'] and lines[-1] == str(CLASSES)
    model = load_pretrained(xresnet18(c_in=1, c_out=3), tmp_path / 'my_model.pt')
    assert torch.isfinite(next(model.parameters())).all()
