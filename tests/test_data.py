"""MNIST loading from exp.nb_00a (issue 4, moved out of 01_matmul by issue 11): the full file, the shipped
sample, downloads from a local HTTP server (never the real internet), offline fallback, damaged caches and
malicious pickles. Every test points FOUNDATIONS_DATA at its own tmp_path, so the repo's data/ is never written."""
import gzip
import hashlib
import io
import os
import pickle
import shlex
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import exp.nb_00a as nb
from exp.nb_00a import ArrayUnpickler, MnistError, download_mnist, get_data, get_test_data, is_full_mnist, load_mnist

from conftest import closed_port_url

REPO = Path(nb.__file__).resolve().parents[1]
SAMPLE = REPO / 'data' / 'mnist_sample.pkl.gz'


def _find_full():
    "The full mnist.pkl.gz: $FOUNDATIONS_DATA, the repo's data/, or ../shared/data, if any holds it."
    env = os.environ.get('FOUNDATIONS_DATA')
    places = ([Path(env)] if env else []) + [REPO / 'data', REPO.parent / 'shared' / 'data']
    return next((p / 'mnist.pkl.gz' for p in places if (p / 'mnist.pkl.gz').is_file()), None)


FULL = _find_full()  # found at import, before any test changes FOUNDATIONS_DATA
needs_full = pytest.mark.skipif(FULL is None, reason='full MNIST file (mnist.pkl.gz) absent')


def _sha(data):
    "The fingerprint scheme, written out independently: sha256 of x, y bytes (little-endian) per split."
    h = hashlib.sha256()
    for x, y in data:
        h.update(np.ascontiguousarray(x, dtype='<f4').tobytes())
        h.update(np.ascontiguousarray(y, dtype='<i8').tobytes())
    return h.hexdigest()


def _gz_pickle(obj, protocol=4):
    return gzip.compress(pickle.dumps(obj, protocol=protocol), mtime=0)


class _Evil:
    "Unpickling this runs a shell command that creates `marker`."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {shlex.quote(str(self.marker))}',))


class _EvilEval:
    "Unpickling this evaluates Python code that creates `marker`."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (eval, (f'open({str(self.marker)!r}, "w").close()',))


@pytest.fixture
def data(empty_data, monkeypatch):
    "An empty data folder in FOUNDATIONS_DATA and no mirrors, so nothing can reach the internet."
    monkeypatch.setattr(nb, 'MNIST_URLS', [])
    return empty_data


@pytest.fixture
def tiny(monkeypatch):
    "A small data set in the MNIST layout, accepted as 'full' MNIST for the length of a test."
    rng = np.random.default_rng(0)
    t = tuple(((rng.integers(0, 256, (n, 784)) / 256).astype(np.float32), rng.integers(0, 10, n))
              for n in (30, 10, 10))
    monkeypatch.setitem(nb.MNIST_ROWS, 'full', (30, 10, 10))
    monkeypatch.setitem(nb.MNIST_SHA256, 'full', _sha(t))
    return t


def _files(d): return sorted(p.name for p in d.iterdir())


def _check_tensors(ts, rows):
    for x, y, n in zip(ts[::2], ts[1::2], rows):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape == (n, 784) and y.shape == (n,)
        assert x.min() >= 0 and x.max() < 1 and y.min() >= 0 and y.max() <= 9


# --- the real files ---------------------------------------------------------------------------

@needs_full
def test_full_file(data, capsys):
    (data / 'mnist.pkl.gz').symlink_to(FULL)
    ts = get_data()
    x_test, y_test = get_test_data()
    out = capsys.readouterr().out
    assert out.count('Using full MNIST from $FOUNDATIONS_DATA/mnist.pkl.gz') == 2 and str(data) not in out
    _check_tensors(ts + (x_test, y_test), (50_000, 10_000, 10_000))
    x_train, y_train, x_valid, y_valid = ts
    assert is_full_mnist(x_train)
    # facts from shared/data/README.md
    assert abs(x_train.mean().item() - 0.1304) < 5e-5 and abs(x_train.std().item() - 0.3073) < 5e-5
    assert y_train[:3].tolist() == [5, 0, 4] and y_valid[:3].tolist() == [3, 8, 6] and y_test[:3].tolist() == [7, 2, 1]
    assert x_train[0].view(28, 28)[20, 15].item() == 253 / 256
    counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.cat([y_train, y_valid]).bincount().tolist() == counts


@needs_full
def test_full_file_download_is_verified(data, server):
    "The real file, served over loopback, passes the real checks and fingerprint."
    body = FULL.read_bytes()
    dest = download_mnist(urls=[server.url('/mnist.pkl.gz', body)])
    assert dest == data / 'mnist.pkl.gz' and dest.read_bytes() == body and _files(data) == ['mnist.pkl.gz']


def test_sample(data, capsys):
    ts = get_data()
    x_test, y_test = get_test_data()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all('sample' in l and 'data/README.md' in l for l in lines)
    _check_tensors(ts + (x_test, y_test), (4_000, 500, 500))
    x_train, y_train, x_valid, y_valid = ts
    assert not is_full_mnist(x_train)
    for y, n in ((y_train, 400), (y_valid, 50), (y_test, 50)): assert y.bincount().tolist() == [n] * 10
    assert (x_train * 256 == (x_train * 256).round()).all()  # pixels are k/256
    rows = {r.numpy().tobytes() for x in (x_train, x_valid, x_test) for r in x}
    assert len(rows) == 5_000  # 5,000 different digits: the splits do not overlap
    assert _files(data) == []


def test_sample_fingerprint_is_the_scheme():
    assert _sha(pickle.load(gzip.open(SAMPLE, 'rb'))) == nb.MNIST_SHA256['sample']


def test_make_sample_is_stratified_and_deterministic():
    path = REPO / 'data' / 'make_sample.py'
    ms = types.ModuleType('make_sample')  # run the script's source without writing a __pycache__ into data/
    exec(compile(path.read_text(), str(path), 'exec'), ms.__dict__)
    y = np.repeat(np.arange(10), 500)
    x = np.arange(5000 * 784).reshape(5000, 784) % 256
    parts = ms.split_indices(y, 0)
    assert [len(p) for p in parts] == [4000, 500, 500] and len(set().union(*parts)) == 5000
    assert [np.bincount(y[p]).tolist() for p in parts] == [[400] * 10, [50] * 10, [50] * 10]
    assert parts == ms.split_indices(y, 0) and parts != ms.split_indices(y, 1)
    blob = ms.to_bytes(ms.build(x, y, 0))
    assert blob == ms.to_bytes(ms.build(x, y, 0))
    assert gzip.decompress(blob).count(b'numpy.core.multiarray\n_reconstruct\n') == 1  # version-free name
    back = ArrayUnpickler(io.BytesIO(gzip.decompress(blob))).load()
    assert back[0][0].dtype == np.float32 and (back[0][0] * 256).max() == 255 and back[2][1].dtype == np.int64


# --- downloads from a local server ------------------------------------------------------------

def test_download_success(data, tiny, server, monkeypatch, capsys):
    monkeypatch.setattr(nb, 'MNIST_URLS', [server.url('/mnist.pkl.gz', _gz_pickle(tiny))])
    x_train, y_train, x_valid, y_valid = get_data()
    assert torch.equal(x_train, torch.from_numpy(tiny[0][0])) and torch.equal(y_valid, torch.from_numpy(tiny[1][1]))
    assert is_full_mnist(x_train)
    assert _files(data) == ['mnist.pkl.gz'] and server.hits == ['/mnist.pkl.gz']
    get_data()  # the cache is used: no second download
    assert server.hits == ['/mnist.pkl.gz']
    out, err = capsys.readouterr()
    assert 'Downloading MNIST from http://127.0.0.1' in err and '100%' in err  # tqdm's bar, on stderr
    assert out.count('Using full MNIST from $FOUNDATIONS_DATA/mnist.pkl.gz') == 2 and str(data) not in out


def test_download_404_then_next_mirror(data, tiny, server):
    urls = [server.url('/gone.pkl.gz'), server.url('/mnist.pkl.gz', _gz_pickle(tiny))]
    assert download_mnist(urls=urls) == data / 'mnist.pkl.gz'
    assert server.hits == ['/gone.pkl.gz', '/mnist.pkl.gz'] and _files(data) == ['mnist.pkl.gz']
    assert _sha(load_mnist(data / 'mnist.pkl.gz')) == _sha(tiny)


def test_download_truncated(data, tiny, server, capsys):
    body = _gz_pickle(tiny)
    url = server.url('/mnist.pkl.gz', body, sent=len(body) // 2)
    with pytest.raises(MnistError, match='truncated download') as e: download_mnist(urls=[url])
    assert url in str(e.value) and _files(data) == []


def test_download_larger_than_expected_is_refused(data, server):
    url = server.url('/big.pkl.gz', b'x' * 5000)
    with pytest.raises(nb.DataError, match='larger than the 4,096 bytes'): nb._fetch(url, 5, 'MNIST', max_bytes=4096)


def test_download_timeout(data, tiny, server):
    url = server.url('/slow.pkl.gz', _gz_pickle(tiny), delay=1.0)
    with pytest.raises(MnistError, match='timed out'): download_mnist(urls=[url], timeout=0.3)
    assert _files(data) == []


@pytest.mark.parametrize('what, why', [('one pixel changed', 'fingerprint mismatch'),
                                       ('the sample', 'shapes'),
                                       ('labels as float', 'dtypes'),
                                       ('not gzip', 'cannot be read safely')])
def test_download_wrong_content(data, tiny, server, what, why):
    if what == 'one pixel changed':
        x = tiny[0][0].copy()
        x[3, 300] = 1 / 256 if x[3, 300] == 0 else 0
        body = _gz_pickle(((x, tiny[0][1]),) + tiny[1:])
    elif what == 'the sample': body = SAMPLE.read_bytes()
    elif what == 'labels as float': body = _gz_pickle(tuple((x, y.astype(np.float32)) for x, y in tiny))
    else: body = b'<html>this is not the file you are looking for</html>'
    url = server.url('/mnist.pkl.gz', body)
    with pytest.raises(MnistError, match=why) as e: download_mnist(urls=[url])
    assert url in str(e.value) and _files(data) == []


def test_all_mirrors_fail_message(data, server):
    urls = [closed_port_url('/mnist.pkl.gz'), server.url('/missing.pkl.gz')]
    with pytest.raises(MnistError) as e: download_mnist(urls=urls)
    msg = str(e.value)
    assert all(u in msg for u in urls) and 'HTTP Error 404' in msg
    assert 'by hand' in msg and str(data / 'mnist.pkl.gz') in msg and 'data/README.md' in msg
    assert _files(data) == []


def test_offline_falls_back_to_sample(data, monkeypatch, capsys):
    monkeypatch.setattr(nb, 'MNIST_URLS', [closed_port_url('/mnist.pkl.gz')])
    x_train, *_ = get_data()
    out, err = capsys.readouterr()
    assert len(x_train) == 4_000 and not is_full_mnist(x_train)
    assert out.count('\n') == 1 and 'sample' in out and 'download' in out and 'data/README.md' in out
    assert str(data) not in out and err == ''
    assert _files(data) == []


def test_failed_download_falls_back_to_sample(data, tiny, server, monkeypatch, capsys):
    body = _gz_pickle(tiny)
    monkeypatch.setattr(nb, 'MNIST_URLS', [server.url('/mnist.pkl.gz', body, sent=100)])
    x_train, *_ = get_data()
    assert len(x_train) == 4_000 and 'sample' in capsys.readouterr().out and _files(data) == []


# --- damaged or hostile files -----------------------------------------------------------------

@pytest.mark.parametrize('damage', ['truncated', 'empty', 'not gzip', 'gzip of garbage'])
def test_corrupt_cache(data, tiny, server, monkeypatch, damage):
    good = _gz_pickle(tiny)
    bad = {'truncated': good[:len(good) // 2], 'empty': b'', 'not gzip': b'\x00' * 1000,
           'gzip of garbage': gzip.compress(b'garbage' * 100)}[damage]
    path = data / 'mnist.pkl.gz'
    path.write_bytes(bad)
    monkeypatch.setattr(nb, 'MNIST_URLS', [server.url('/mnist.pkl.gz', good)])
    with pytest.raises(MnistError) as e: get_data()
    assert str(path) in str(e.value) and 'Delete it' in str(e.value)
    assert server.hits == [] and path.read_bytes() == bad  # not silently replaced, not silently used


@pytest.mark.parametrize('evil', [_Evil, _EvilEval])
def test_malicious_cache_is_refused(data, tmp_path, evil):
    marker = tmp_path / 'pwned'
    path = data / 'mnist.pkl.gz'
    path.write_bytes(_gz_pickle(evil(marker), protocol=2))
    with pytest.raises(MnistError) as e: get_data()
    msg, func = str(e.value), evil(marker).__reduce__()[0]
    assert 'refused' in msg and f'.{func.__name__}:' in msg and str(path) in msg  # e.g. refused posix.system
    assert not marker.exists()


def test_malicious_download_is_refused(data, tmp_path, server):
    marker = tmp_path / 'pwned'
    with pytest.raises(MnistError, match='refused'):
        download_mnist(urls=[server.url('/m.pkl.gz', _gz_pickle(_Evil(marker)))])
    assert not marker.exists() and _files(data) == []


def test_evil_payload_really_is_evil(tmp_path):
    "The payload above does create the marker when unpickled by plain pickle (so the tests mean something)."
    marker = tmp_path / 'pwned'
    pickle.loads(pickle.dumps(_EvilEval(marker)))
    assert marker.exists()


def test_unpickler_allows_only_numpy_arrays():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    for protocol in (3, 4, 5):
        back = ArrayUnpickler(io.BytesIO(pickle.dumps((a, np.int64(7)), protocol=protocol))).load()
        assert np.array_equal(back[0], a) and back[0].dtype == a.dtype and back[1] == 7
    old = pickle.dumps(a, protocol=3)  # protocol 3 names globals as text lines: rename to the numpy 1.x module
    old = old.replace(b'cnumpy._core.multiarray\n', b'cnumpy.core.multiarray\n')
    assert b'cnumpy.core.multiarray\n_reconstruct\n' in old
    assert np.array_equal(ArrayUnpickler(io.BytesIO(old)).load(), a)  # numpy 1.x names
    from collections import OrderedDict
    with pytest.raises(pickle.UnpicklingError, match='refused collections.OrderedDict'):
        ArrayUnpickler(io.BytesIO(pickle.dumps(OrderedDict(a=1)))).load()


# --- where the names live -----------------------------------------------------------------------

MNIST_NAMES = ['get_data', 'get_test_data', 'is_full_mnist', 'download_mnist', 'load_mnist', 'data_dir',
               'MnistError', 'ArrayUnpickler', 'MNIST_URLS', 'MNIST_ROWS', 'MNIST_SHA256']


@pytest.mark.parametrize('module', ['exp.nb_00a', 'exp.all'])
def test_data_names_have_one_home(module):
    "The data names live in exp.nb_00a; the aggregate exp.all hands over the same objects."
    ns = {}
    exec(f'from {module} import *', ns)
    for name in MNIST_NAMES: assert ns[name] is getattr(nb, name), name


def test_star_import_surface_is_deliberate():
    "The plumbing's helpers and the standard-library modules it uses stay out of `from exp.nb_00a import *`."
    ns = {}
    exec('from exp.nb_00a import *', ns)
    public = {k for k in ns if not k.startswith('__')}
    plumbing = {'gzip', 'hashlib', 'importlib', 'os', 'pickle', 'sys', 'tempfile', 'urllib', 'Path', 'np', 'exp'}
    assert plumbing & public == set()
    assert not any(k.startswith('_') for k in public)
    assert {'get_data', 'get_fashion', 'FASHION_CLASSES', 'read_idx', 'export_image_folder', 'ImageError'} <= public
    assert public == set(nb.__all__)      # its own names only: not torch, not lesson 00's test helpers


def test_notebook2script_orders_and_names_00a(tmp_path):
    "00a_data is exported to exp/nb_00a.py, between 00 and 01, and nb_01 chains from it."
    import notebook2script as n2s
    names = ['00_exports.ipynb', '00a_data.ipynb', '01_matmul.ipynb', '02_x.ipynb']
    for name in reversed(names): (tmp_path / name).write_text('{}')
    assert [p.name for p in n2s.find_notebooks(tmp_path)] == names
    assert n2s.module_name(Path('nbs/00a_data.ipynb')) == 'nb_00a'
    assert [p.name for p in n2s.find_notebooks(REPO / 'nbs')][:3] == names[:3]
    imports = lambda m: [l for l in (REPO / 'exp' / m).read_text().splitlines() if l.startswith('from exp.')]
    assert imports('nb_00a.py')[0] == 'from exp.nb_00 import *' and 'from exp.nb_00a import *' in imports('nb_01.py')
