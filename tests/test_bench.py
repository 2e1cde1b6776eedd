"""Smoke tests for bench/: every script runs to its last line in a subprocess, at a tiny size and on one thread.

They check that the scripts still run against the library and print their whole report, not the figures:
timings at these sizes mean nothing. The runs start two at a time when the module's first test asks for
one, so the whole file takes about a minute on a quiet 2-core machine. The Fashion-MNIST scripts use the data
the lessons use (the full set if present, else the shipped sample); data_block.py writes its small PNG tree
in a temporary folder. Plus BenchArgs (bench/common.py), in this process.
"""
import importlib.util
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import selected

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / 'bench'
TORCHRUN = ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2']

CASES = {   # name: (python's arguments, the script's arguments, a line its report ends with)
    'backward':         ([], ['--rows', '200', '--reps', '1'], 'x process peak'),
    'batchnorm':        ([], ['--repeats', '1', '--n', '32', '--bs', '16', '--calls', '1', '--layer-bs', '2'],
                         'epoch ratio ours / nn.BatchNorm2d'),
    'cnn_learner':      ([], ['--n', '32', '--bs', '4', '--repeats', '1'], 'activation statistics cost per epoch'),
    'conv':             ([], ['--repeats', '1', '--bs', '2'], 'summary, conv2d_fast vs F.conv2d'),
    'data_block':       ([], ['--subset', '40', '--rounds', '1', '--bs', '8'], 'decoding costs'),
    'ddp_train':        ([], ['--max-steps', '2', '--bs', '32', '--warmup', '0'], 'RESULT {'),
    'ddp_train, torchrun 2 processes': (TORCHRUN, ['--max-steps', '2', '--bs', '32'], 'RESULT {'),
    'fashion_resnet':   ([], ['--epochs', '1', '--subset', '32', '--bs', '16'], 'first epoch at >= 94.5%'),
    'learner':          ([], ['--n', '256', '--repeats', '1'], 'of (1) per batch'),
    'matmul':           ([], ['--inner', '16', '--rows', '20', '--square', '64'], '~ = estimated'),
    'notebook_workers': ([], ['--n', '1', '--repeats', '1', '--warmup', '0'], 'torch'),
    'optimizers':       ([], ['--layers', '2', '--width', '8', '--steps', '2', '--repeats', '2'], 'fast path'),
    'resnet_loop':      ([], ['--epochs', '1', '--subset', '32', '--bs', '4'], 'first >= 93.0%'),
    'train_loop':       ([], ['--n', '256', '--bs', '64', '128', '--repeats', '1'], 'target, our best DataLoader path'),
}


def run(name):
    "Run the smoke case `name` from the repo root, on one thread, progress bars off: the completed process."
    py, args, _ = CASES[name]
    cmd = [sys.executable, *py, str(BENCH / f"{name.split(',')[0]}.py"), *args, '--threads', '1']
    env = dict(os.environ, OMP_NUM_THREADS='1', DLF_PROGRESS='0')
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def started(request):
    "The selected cases' runs, started two at a time: {name: a Future of the completed process}."
    names = selected(request, 'test_bench_runs', 'name')
    with ThreadPoolExecutor(2) as pool:
        yield {n: pool.submit(run, n) for n in names}


def test_every_script_has_a_case():
    assert {n.split(',')[0] for n in CASES} == {p.stem for p in BENCH.glob('*.py')} - {'common'}


@pytest.mark.parametrize('name', sorted(CASES))
def test_bench_runs(started, name):
    p = started[name].result()
    assert p.returncode == 0, f'{name} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}'
    assert CASES[name][2] in p.stdout.strip().splitlines()[-1], p.stdout[-3000:]
    if 'torchrun' in name:                       # the same weights on both ranks; only rank 0 prints
        assert 'world size 2' in p.stdout and 'max difference 0.0e+00' in p.stdout and p.stdout.count('RESULT') == 1


def test_bench_args(capsys):
    spec = importlib.util.spec_from_file_location('bench_common', BENCH / 'common.py')
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    p = common.BenchArgs('Doc line.\nMore.', bs=[64, 512], n=5, lr=0.1, steps=0)
    a = p.parse_args(['--bs', '8', '16', '--n', '7', '--steps', '0'])
    assert (a.bs, a.n, a.lr, a.steps, a.threads) == ([8, 16], 7, 0.1, 0, None)
    for bad, msg in [(['--n', '0'], '--n must be at least 1'), (['--lr', '-1'], '--lr must be at least 0'),
                     (['--steps', '-1'], '--steps must be at least 0'), (['--threads', '0'], '--threads must be')]:
        with pytest.raises(SystemExit): p.parse_args(bad)
        assert msg in capsys.readouterr().err
