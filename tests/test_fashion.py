"""Fashion-MNIST from exp.nb_00a (issue 11): the original idx files, the idx reader's refusals, the search
order (data folder, Debian's location, download, shipped sample), downloads from a local HTTP server on
127.0.0.1 (never the real internet) and the sample's fingerprint. Every test points FOUNDATIONS_DATA at its
own tmp_path and Debian's location at a folder of its own, so neither the repo's data/ nor /usr/share is
read or written, except where a test reads the verified full copy in ../shared/data/fashion-mnist."""
import gzip
import hashlib
import io
import os
import shlex
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import exp.nb_00a as nb
from exp.nb_00a import (
    FASHION_CLASSES,
    FASHION_SHA256,
    DataError,
    FashionError,
    download_fashion,
    get_fashion,
    is_full_fashion,
    load_fashion,
    load_fashion_sample,
    read_idx,
)

from conftest import closed_port_url

REPO = Path(nb.__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared' / 'data' / 'fashion-mnist'
NAMES = list(FASHION_SHA256)  # train images, train labels, test images, test labels
needs_full = pytest.mark.skipif(not all((SHARED / n).is_file() for n in NAMES),
                                reason='full Fashion-MNIST copy (../shared/data/fashion-mnist) absent')


def _load_script(name):
    "A data/ script's source run as a module, without writing a __pycache__ into data/."
    path = REPO / 'data' / name
    m = types.ModuleType(name[:-3])
    m.__file__ = str(path)
    exec(compile(path.read_text(), str(path), 'exec'), m.__dict__)
    return m


mfs = _load_script('make_fashion_sample.py')


def _idx(a, code=0x08):
    "The idx bytes of the array `a` (values written big-endian, as the format says)."
    a = np.asarray(a)
    dt = {0x08: 'u1', 0x09: 'i1', 0x0B: '>i2', 0x0C: '>i4', 0x0D: '>f4', 0x0E: '>f8'}[code]
    head = bytes([0, 0, code, a.ndim]) + b''.join(int(s).to_bytes(4, 'big') for s in a.shape)
    return head + a.astype(dt).tobytes()


def _gz(b): return gzip.compress(b, mtime=0)


def _files(d): return sorted(p.name for p in d.iterdir()) if d.exists() else []


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture
def fdata(empty_data, tmp_path, monkeypatch):
    "An empty data folder in FOUNDATIONS_DATA, no mirrors and an empty Debian location: nothing to find."
    d = empty_data
    monkeypatch.setattr(nb, 'FASHION_URLS', [])
    monkeypatch.setattr(nb, '_DEBIAN_FASHION', tmp_path / 'debian' / 'fashion-mnist')
    return d


@pytest.fixture
def tiny(monkeypatch):
    "Four small files in the original layout (30 train, 10 test images), accepted as the originals for a test."
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (('train', 30), ('t10k', 10)):
        arrays[f'{split}-images-idx3-ubyte.gz'] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f'{split}-labels-idx1-ubyte.gz'] = np.arange(n, dtype=np.uint8) % 10
    raw = {k: _idx(a) for k, a in arrays.items()}
    for k, b in raw.items(): monkeypatch.setitem(nb.FASHION_SHA256, k, hashlib.sha256(b).hexdigest())
    return types.SimpleNamespace(arrays=arrays, raw=raw, gz={k: _gz(b) for k, b in raw.items()})


def _write(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for k, b in files.items(): (folder / k).write_bytes(b)
    return folder


def _check_tiny(ts, tiny):
    x_train, y_train, x_valid, y_valid = ts
    a = tiny.arrays
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert torch.equal(x_train, torch.from_numpy(a[NAMES[0]].reshape(30, 784) / np.float32(255)))
    assert torch.equal(y_valid, torch.from_numpy(a[NAMES[3]].astype(np.int64)))
    assert x_valid.shape == (10, 784) and y_train.shape == (30,)


@pytest.fixture(scope='session')
def sample(tmp_path_factory):
    "A valid sample file: the repo's data/fashion_sample.npz when present, else one built from the full copy."
    shipped = REPO / 'data' / 'fashion_sample.npz'
    if shipped.is_file(): return shipped
    if not all((SHARED / n).is_file() for n in NAMES):
        pytest.skip('no data/fashion_sample.npz and no full copy to build one from')
    out = tmp_path_factory.mktemp('sample') / 'fashion_sample.npz'
    assert mfs.main(['--src', str(SHARED), '--out', str(out)]) == 0
    return out


# --- the full data set ---------------------------------------------------------------------------

@needs_full
def test_full_copy_in_data_folder(fdata, capsys):
    (fdata / 'fashion-mnist').symlink_to(SHARED, target_is_directory=True)
    x_train, y_train, x_valid, y_valid = get_fashion()
    out = capsys.readouterr().out
    assert out == 'Using full Fashion-MNIST from $FOUNDATIONS_DATA/fashion-mnist\n'
    assert x_train.shape == (60_000, 784) and x_valid.shape == (10_000, 784)
    assert x_train.dtype == torch.float32 and y_train.dtype == y_valid.dtype == torch.int64
    assert is_full_fashion(x_train)
    # facts from shared/data/fashion-mnist/README.md
    assert y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert y_valid[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert round(x_train.double().mean().item(), 4) == 0.2860 and round(x_valid.double().mean().item(), 4) == 0.2868
    assert y_train.bincount().tolist() == [6000] * 10 and y_valid.bincount().tolist() == [1000] * 10
    assert x_train.min() == 0 and x_train.max() == 1 and (x_train * 255 == (x_train * 255).round()).all()


@needs_full
def test_debian_location_with_the_full_copy(fdata, monkeypatch, capsys):
    "Debian's folder (mocked: the shared copy, which came from Debian's package) is used when present."
    monkeypatch.setattr(nb, '_DEBIAN_FASHION', SHARED)
    x_train, y_train, *_ = get_fashion()
    assert capsys.readouterr().out == f'Using full Fashion-MNIST from {SHARED}\n'
    assert is_full_fashion(x_train) and y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert _files(fdata) == []


@needs_full
def test_full_copy_downloaded_from_a_local_server(fdata, server, capsys):
    "The real files, served over loopback, pass the real checks and land in the data folder."
    files = {n: (SHARED / n).read_bytes() for n in NAMES}
    dest = download_fashion(urls=[server.mirror('fm', files)])
    assert dest == fdata / 'fashion-mnist' and _files(dest) == sorted(NAMES)
    assert all((dest / n).read_bytes() == files[n] for n in NAMES)
    assert 'Downloading Fashion-MNIST from http://127.0.0.1' in capsys.readouterr().err


# --- the search order ----------------------------------------------------------------------------

def test_debian_location_used_when_present(fdata, tiny, server, monkeypatch, capsys):
    debian = _write(fdata.parent / 'debian' / 'fashion-mnist', tiny.gz)
    monkeypatch.setattr(nb, 'FASHION_URLS', [server.mirror('fm', tiny.gz)])
    _check_tiny(get_fashion(), tiny)
    assert capsys.readouterr().out == f'Using full Fashion-MNIST from {debian}\n'
    assert server.hits == [] and _files(fdata) == []  # no download, nothing written


def test_data_folder_comes_before_debian(fdata, tiny, monkeypatch, capsys):
    _write(fdata / 'fashion-mnist', tiny.gz)
    debian = _write(fdata.parent / 'debian' / 'fashion-mnist', {k: b'not even idx' for k in tiny.gz})
    _check_tiny(get_fashion(), tiny)  # the broken Debian copy is never opened
    assert capsys.readouterr().out == 'Using full Fashion-MNIST from $FOUNDATIONS_DATA/fashion-mnist\n'
    assert debian.exists()


def test_incomplete_debian_folder_is_skipped(fdata, tiny, server, monkeypatch):
    _write(fdata.parent / 'debian' / 'fashion-mnist', dict(list(tiny.gz.items())[:3]))
    monkeypatch.setattr(nb, 'FASHION_URLS', [server.mirror('fm', tiny.gz)])
    _check_tiny(get_fashion(), tiny)
    assert len(server.hits) == 4 and _files(fdata / 'fashion-mnist') == sorted(NAMES)


def test_sample_fallback_with_notice(fdata, sample, monkeypatch, capsys):
    monkeypatch.setattr(nb, '_fashion_sample_path', lambda: sample)
    monkeypatch.setattr(nb, 'FASHION_URLS', [closed_port_url()])
    x_train, y_train, x_valid, y_valid = get_fashion()
    out, err = capsys.readouterr()
    assert out.count('\n') == 1 and 'sample' in out and 'download failed' in out
    assert 'download_fashion()' in out and 'data/README.md' in out and str(fdata) not in out and err == ''
    assert x_train.shape == (6_000, 784) and x_valid.shape == (1_000, 784) and not is_full_fashion(x_train)
    assert y_train.bincount().tolist() == [600] * 10 and y_valid.bincount().tolist() == [100] * 10
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert (x_train * 255 == (x_train * 255).round()).all() and x_train.max() <= 1
    assert len({r.numpy().tobytes() for r in x_train}) > 5_900  # real, varied images, not one repeated
    assert _files(fdata) == []  # the failed download left no folder and no temporary file


def test_nothing_anywhere_is_a_clear_error(fdata, tmp_path, monkeypatch):
    monkeypatch.setattr(nb, '_fashion_sample_path', lambda: tmp_path / 'no_sample.npz')
    with pytest.raises(FashionError) as e: get_fashion()
    msg = str(e.value)
    assert '$FOUNDATIONS_DATA/fashion-mnist' in msg and str(nb._DEBIAN_FASHION) in msg
    assert 'download failed' in msg and 'download_fashion()' in msg and 'data/README.md' in msg
    assert _files(fdata) == []


# --- downloads from a local server ---------------------------------------------------------------

def test_download_success_then_cached(fdata, tiny, server, monkeypatch, capsys):
    monkeypatch.setattr(nb, 'FASHION_URLS', [server.mirror('fm', tiny.gz)])
    monkeypatch.setitem(nb.FASHION_ROWS, 'full', (30, 10))
    ts = get_fashion()
    _check_tiny(ts, tiny)
    assert is_full_fashion(ts[0])
    assert sorted(server.hits) == sorted(f'/fm/{n}' for n in NAMES)
    assert _files(fdata / 'fashion-mnist') == sorted(NAMES)  # no temporary files left
    assert all((fdata / 'fashion-mnist' / n).stat().st_mode & 0o777 == 0o644 for n in NAMES)
    get_fashion()  # the files are there now: no second download
    assert len(server.hits) == 4
    out, err = capsys.readouterr()
    assert err.count('Downloading Fashion-MNIST from http://127.0.0.1') == 4 and err.count('100%') == 4
    assert out.count('Using full Fashion-MNIST from $FOUNDATIONS_DATA/fashion-mnist') == 2


def test_download_falls_back_to_the_next_mirror(fdata, tiny, server):
    urls = [server.mirror('gone'), server.mirror('fm', tiny.gz)]
    assert download_fashion(urls=urls) == fdata / 'fashion-mnist'
    assert server.hits[:2] == [f'/gone/{NAMES[0]}', f'/fm/{NAMES[0]}'] and len(server.hits) == 8
    _check_tiny(load_fashion(fdata / 'fashion-mnist'), tiny)


def test_download_only_fetches_missing_files(fdata, tiny, server):
    _write(fdata / 'fashion-mnist', {NAMES[1]: tiny.gz[NAMES[1]]})
    download_fashion(urls=[server.mirror('fm', tiny.gz)])
    assert sorted(server.hits) == sorted(f'/fm/{n}' for n in NAMES if n != NAMES[1])


def test_download_truncated(fdata, tiny, server):
    base = server.mirror('fm', tiny.gz, sent={NAMES[2]: len(tiny.gz[NAMES[2]]) // 2})
    with pytest.raises(FashionError, match='truncated download') as e: download_fashion(urls=[base])
    assert base + NAMES[2] in str(e.value) and 'by hand' in str(e.value)
    assert _files(fdata / 'fashion-mnist') == sorted(NAMES[:2])  # the good ones stay; no partial file


def test_truncated_download_falls_back_to_sample(fdata, tiny, server, sample, monkeypatch, capsys):
    monkeypatch.setattr(nb, '_fashion_sample_path', lambda: sample)
    monkeypatch.setattr(nb, 'FASHION_URLS', [server.mirror('fm', tiny.gz, sent={NAMES[0]: 100})])
    x_train, *_ = get_fashion()
    assert len(x_train) == 6_000 and 'sample' in capsys.readouterr().out and _files(fdata) == []


def _one_pixel_changed(tiny):
    x = tiny.arrays[NAMES[0]].copy()
    x[3, 10, 10] ^= 1
    return _gz(_idx(x))


@pytest.mark.parametrize('what, why', [('one pixel changed', 'not the original'),
                                       ('an HTML page', 'not an idx file'),
                                       ('a truncated gzip', 'damaged gzip'),
                                       ('the labels file', 'not the original')])
def test_download_wrong_content(fdata, tiny, server, what, why):
    body = {'one pixel changed': lambda: _one_pixel_changed(tiny),
            'an HTML page': lambda: b'<html>this is not the file you are looking for</html>',
            'a truncated gzip': lambda: tiny.gz[NAMES[0]][:-20],
            'the labels file': lambda: tiny.gz[NAMES[1]]}[what]()
    base = server.mirror('fm', {**tiny.gz, NAMES[0]: body})
    with pytest.raises(FashionError, match=why) as e: download_fashion(urls=[base])
    assert base + NAMES[0] in str(e.value)
    assert _files(fdata) == []  # nothing left behind: no file, no temporary file, no folder


def test_all_mirrors_fail_message(fdata, server):
    urls = [closed_port_url(), server.mirror('missing')]
    with pytest.raises(FashionError) as e: download_fashion(urls=urls)
    msg = str(e.value)
    assert all(u + NAMES[0] in msg for u in urls) and 'HTTP Error 404' in msg
    assert 'by hand' in msg and 'data/README.md' in msg and _files(fdata) == []


# --- the idx reader and the checks ---------------------------------------------------------------

def test_read_idx_types_and_plain_files(tmp_path):
    a = np.array([[1, -2, 300], [70000, 5, -6]], dtype=np.int32)
    (tmp_path / 'a.idx').write_bytes(_idx(a, 0x0C))
    (tmp_path / 'b.gz').write_bytes(_gz(_idx(a.astype(np.float64) / 4, 0x0E)))
    (tmp_path / 'c').write_bytes(_idx(np.array([-3, 4]), 0x09))
    t = read_idx(tmp_path / 'a.idx')
    assert t.dtype == torch.int32 and t.tolist() == a.tolist()  # big-endian values read right
    assert read_idx(tmp_path / 'b.gz').tolist() == (a / 4).tolist() and read_idx(tmp_path / 'c').tolist() == [-3, 4]


@pytest.mark.parametrize('damage, why', [
    (lambda b: b'', 'not an idx file'),
    (lambda b: b'\x01\x00' + b[2:], 'not an idx file'),
    (lambda b: b[:2] + b'\x0a' + b[3:], 'unknown idx value type 0x0a'),
    (lambda b: b[:6], 'header for 3 dimensions is incomplete'),
    (lambda b: b[:-1], 'truncated'),
    (lambda b: b + b'\0', 'too long'),
])
def test_read_idx_refuses_malformed_files(tmp_path, damage, why):
    good = _idx(np.zeros((2, 28, 28), np.uint8))
    for path, body in ((tmp_path / 'x-idx3-ubyte', damage(good)), (tmp_path / 'x-idx3-ubyte.gz', _gz(damage(good)))):
        path.write_bytes(body)
        with pytest.raises(DataError, match=why) as e: read_idx(path)
        assert str(e.value).startswith(str(path))


def test_read_idx_refuses_damaged_gzip_and_missing_files(tmp_path):
    (tmp_path / 'a.gz').write_bytes(_gz(b'0' * 1000)[:15])
    with pytest.raises(DataError, match=r'a\.gz: damaged gzip file'): read_idx(tmp_path / 'a.gz')
    with pytest.raises(DataError, match='cannot read'): read_idx(tmp_path / 'missing.gz')


@pytest.mark.parametrize('name, body, why', [
    (NAMES[1], _idx(np.arange(29, dtype=np.uint8) % 10), r'holds 30 images but .*labels\S* holds 29 labels'),
    (NAMES[1], _idx(np.arange(30, dtype=np.uint8)), 'labels outside 0..9'),
    (NAMES[0], _idx(np.zeros((30, 784), np.uint8)), r'expected uint8 images of shape \(n, 28, 28\)'),
    (NAMES[0], _idx(np.zeros((30, 28, 28), np.int32), 0x0C), 'expected uint8 images'),
    (NAMES[1], _idx(np.zeros((30, 1), np.uint8)), 'expected uint8 labels'),
    (NAMES[0], b'\0\0\x08\x03' + b'\0' * 8, 'incomplete'),
    (NAMES[3], _idx(np.arange(10, dtype=np.uint8)[::-1]), 'well formed, but not the original'),
])
def test_load_fashion_refuses_bad_files(tmp_path, tiny, name, body, why):
    folder = _write(tmp_path / 'fm', {**tiny.gz, name: _gz(body)})
    with pytest.raises(FashionError, match=why) as e: load_fashion(folder)
    assert str(folder) in str(e.value) and 'get_fashion()' in str(e.value)


def test_damaged_cache_is_an_error_not_replaced(fdata, tiny, server, sample, monkeypatch):
    folder = _write(fdata / 'fashion-mnist', {**tiny.gz, NAMES[2]: tiny.gz[NAMES[2]][:100]})
    monkeypatch.setattr(nb, 'FASHION_URLS', [server.mirror('fm', tiny.gz)])
    monkeypatch.setattr(nb, '_fashion_sample_path', lambda: sample)
    with pytest.raises(FashionError) as e: get_fashion()
    assert str(folder / NAMES[2]) in str(e.value) and 'Delete the file' in str(e.value)
    assert server.hits == [] and (folder / NAMES[2]).read_bytes() == tiny.gz[NAMES[2]][:100]


# --- the sample ----------------------------------------------------------------------------------

def _sample_arrays(sample):
    with np.load(sample, allow_pickle=False) as z: return {k: z[k] for k in mfs.KEYS}


def test_sample_file_and_fingerprint(sample):
    assert sample.stat().st_size <= 3_000_000
    assert mfs.fingerprint(_sample_arrays(sample)) == nb.FASHION_SAMPLE_SHA256
    x_train, y_train, x_valid, y_valid = load_fashion_sample(sample)
    assert x_train.shape == (6_000, 784) and y_valid.bincount().tolist() == [100] * 10


def test_sample_rejects_a_different_file(sample, tmp_path):
    a = _sample_arrays(sample)
    x = a['x_train'].copy()
    x[0, 0, 0] ^= 1
    np.savez(tmp_path / 'changed.npz', **{**a, 'x_train': x})
    with pytest.raises(FashionError, match='fingerprint mismatch'): load_fashion_sample(tmp_path / 'changed.npz')
    np.savez(tmp_path / 'int64.npz', **{**a, 'y_train': a['y_train'].astype(np.int64)})
    with pytest.raises(FashionError, match='instead of'): load_fashion_sample(tmp_path / 'int64.npz')
    np.savez(tmp_path / 'missing.npz', x_train=a['x_train'])
    with pytest.raises(FashionError, match='cannot be read as the sample'):
        load_fashion_sample(tmp_path / 'missing.npz')
    (tmp_path / 'garbage.npz').write_bytes(b'PK\3\4 garbage')
    with pytest.raises(FashionError, match='make_fashion_sample.py'): load_fashion_sample(tmp_path / 'garbage.npz')


class _Evil:
    "Unpickling this runs a shell command that creates `marker`."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {shlex.quote(str(self.marker))}',))


def test_sample_never_unpickles(sample, tmp_path):
    "An .npz whose array holds a pickled object is refused before anything in it runs."
    a = _sample_arrays(sample)
    marker = tmp_path / 'pwned'
    evil = np.empty(1, dtype=object)
    evil[0] = _Evil(marker)
    np.savez(tmp_path / 'evil.npz', **{**a, 'y_valid': evil})
    with pytest.raises(FashionError, match='cannot be read'): load_fashion_sample(tmp_path / 'evil.npz')
    assert not marker.exists()


def test_shipped_sample_if_present():
    "data/fashion_sample.npz, when the repo has it, is the sample the fingerprint describes."
    path = REPO / 'data' / 'fashion_sample.npz'
    if not path.is_file(): pytest.skip('data/fashion_sample.npz is not in this checkout')
    assert len(load_fashion_sample()[0]) == 6_000


def test_make_fashion_sample_is_stratified_and_deterministic():
    assert mfs.FILES == FASHION_SHA256  # the builder checks against the same table as the loader
    y_tr, y_te = np.arange(200, dtype=np.uint8) % 10, np.arange(50, dtype=np.uint8) % 10
    x_tr = np.arange(200 * 784, dtype=np.int64).reshape(200, 28, 28) % 251
    x_te = np.arange(50 * 784, dtype=np.int64).reshape(50, 28, 28) % 241
    per = {'train': 6, 't10k': 2}
    a = mfs.build((x_tr.astype(np.uint8), y_tr), (x_te.astype(np.uint8), y_te), 0, per)
    assert [a[k].shape for k in mfs.KEYS] == [(60, 28, 28), (60,), (20, 28, 28), (20,)]
    assert np.bincount(a['y_train']).tolist() == [6] * 10 and np.bincount(a['y_valid']).tolist() == [2] * 10
    assert len({r.tobytes() for r in a['x_train']}) == 60  # no image taken twice
    b = mfs.build((x_tr.astype(np.uint8), y_tr), (x_te.astype(np.uint8), y_te), 0, per)
    assert mfs.to_bytes(a) == mfs.to_bytes(b)
    c = mfs.build((x_tr.astype(np.uint8), y_tr), (x_te.astype(np.uint8), y_te), 1, per)
    assert mfs.fingerprint(a) != mfs.fingerprint(c)
    with np.load(io.BytesIO(mfs.to_bytes(a)), allow_pickle=False) as z:
        assert all(np.array_equal(z[k], a[k]) for k in mfs.KEYS)


def test_make_fashion_sample_refuses_other_files(tmp_path, tiny):
    "The builder only accepts the original files (here: well-formed files that are not the originals)."
    folder = _write(tmp_path / 'fm', tiny.gz)
    r = subprocess.run([sys.executable, str(REPO / 'data' / 'make_fashion_sample.py'), '--src', str(folder),
                        '--out', str(tmp_path / 's.npz')], capture_output=True, text=True)
    assert r.returncode == 1 and 'not the original file' in r.stderr and not (tmp_path / 's.npz').exists()
    r = subprocess.run([sys.executable, str(REPO / 'data' / 'make_fashion_sample.py'), '--src', str(tmp_path / 'nope')],
                       capture_output=True, text=True)
    assert r.returncode == 1 and 'file not found' in r.stderr


def test_classes():
    assert FASHION_CLASSES == ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                               'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
