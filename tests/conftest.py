"""Helpers shared by the tests: fixture notebooks for the tool tests, a tiny learner for the lesson tests.

Test files import them (`from conftest import make_nb`): pytest puts tests/ on sys.path.
"""
import json
from pathlib import Path

import nbformat
import torch

META = {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'},
        'language_info': {'name': 'python'}}


def make_nb(path: Path, cells: list) -> Path:
    "Write a valid notebook: each cell is a code cell's source or (cell_type, source); sources are kept as given."
    new = {'code': nbformat.v4.new_code_cell, 'markdown': nbformat.v4.new_markdown_cell,
           'raw': nbformat.v4.new_raw_cell}
    cells = [('code', c) if isinstance(c, str) else c for c in cells]
    nb = nbformat.v4.new_notebook(metadata=json.loads(json.dumps(META)))
    nb.cells = [new[kind](source=src, id=f'cell-{i}') for i, (kind, src) in enumerate(cells)]
    nbformat.validate(nb)
    path.parent.mkdir(parents=True, exist_ok=True)
    # json.dumps, not nbformat.write (which stores every source as a list of lines)
    path.write_text(json.dumps(nb, ensure_ascii=False, indent=1) + '\n', encoding='utf-8')
    return path


def make_data(n_train=24, n_valid=10, bs=8, seed=0):
    "Linearly separable 2-class data in 5 dimensions, in loaders with batches of `bs` (validation: `bs` too)."
    from exp.nb_04 import DataBunch, DataLoader, Dataset, Sampler
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_valid, 5, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    tds, vds = Dataset(x[:n_train], y[:n_train]), Dataset(x[n_train:], y[n_train:])
    loader = lambda ds: DataLoader(ds, Sampler(ds, bs), batched=True)
    return DataBunch(loader(tds), loader(vds), c=2)


def make_learner(cbs=None, lr=0.1, groups=False, momentum=0., **data):
    "A linear model on `make_data(**data)` trained by SGD; `groups` puts weight and bias in two param groups."
    from exp.nb_04 import Learner
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 2)
    params = [{'params': [model.weight]}, {'params': [model.bias]}] if groups else model.parameters()
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    return Learner(model, opt, torch.nn.functional.cross_entropy, make_data(**data), cbs=cbs)
