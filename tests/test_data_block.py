"""Lesson 00a's export_image_folder (atomic files, skip, resume, refusals) on small image trees built in tmp_path,
and the data block pipeline of lessons 08 and 08a on them: get_files, ItemList indexing, splitting, labelling,
CategoryProcessor, transforms, databunchify, decode_once and file_batches, checked against the tensors the trees
were written from."""
import json
import os
import threading

import pytest
import torch
from PIL import Image

import exp.nb_00 as nb00
import exp.nb_00a as nb00a
import exp.nb_08 as nb
from exp.nb_00a import ImageError, export_image_folder, load_fashion_sample
from exp.nb_08 import (
    CategoryProcessor,
    ImageList,
    ItemList,
    SplitData,
    compose,
    databunchify,
    get_files,
    grandparent_splitter,
    image_extensions,
    label_by_func,
    parent_labeler,
    to_byte_tensor,
    to_float_tensor,
)
from exp.nb_08a import compare_epochs, decode_once, file_batches, model_summary, normalize_chan

from conftest import dead_pid

CLASSES = ['T-shirt_top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot']


@pytest.fixture(scope='module')
def sample():
    "The first 60 training and 25 validation images of the shipped Fashion-MNIST sample (float rows, int labels)."
    x, y, xv, yv = load_fashion_sample()
    return x[:60], y[:60], xv[:25], yv[:25]


@pytest.fixture
def tree(tmp_path, sample, capsys):
    "The sample written as PNG files under tmp_path/png."
    x, y, xv, yv = sample
    export_image_folder(x, y, CLASSES, tmp_path/'png', 'train', show=False)
    export_image_folder(xv, yv, CLASSES, tmp_path/'png', 'valid', show=False)
    capsys.readouterr()
    return tmp_path/'png'


def _pngs(root):
    "Every file under `root` except the export manifests, relative, sorted."
    return sorted(p.relative_to(root).as_posix() for p in root.rglob('*') if p.is_file() and p.name != '.export.json')


def _in_original_order(ld):
    "Stacked x rows and labels of `ld`, sorted by file name (the original index)."
    order = sorted(range(len(ld)), key=lambda i: ld.x.items[i].name)
    return torch.stack([ld.x[i] for i in order]).view(len(ld), -1), torch.tensor([ld.y.items[i] for i in order])


# --- export_image_folder -------------------------------------------------------------------------------

def test_export_writes_one_png_per_image_in_its_class_folder(tree, sample):
    x, y, xv, yv = sample
    files = _pngs(tree)
    assert len(files) == len(x) + len(xv)
    assert f'train/{CLASSES[y[7]]}/07.png' in files and f'valid/{CLASSES[yv[3]]}/03.png' in files
    with Image.open(tree/'train'/CLASSES[y[7]]/'07.png') as im:
        assert (im.mode, im.size) == ('L', (28, 28))
        pixels = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
        assert torch.equal(pixels, (x[7] * 255).round().to(torch.uint8))
    info = json.loads((tree/'train'/'.export.json').read_text())
    assert info['complete'] is True and info['n'] == len(x) and info['classes'] == CLASSES


def test_export_skips_a_complete_tree(tree, sample, capsys):
    x, y, _, _ = sample
    before = {p: p.stat().st_mtime_ns for p in (tree/'train').rglob('*.png')}
    (tree/'train'/'Bag'/'.DS_Store').write_bytes(b'')          # a hidden file is not the export's concern
    export_image_folder(x, y, CLASSES, tree, 'train', show=False)
    assert 'nothing to do' in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (tree/'train').rglob('*.png')} == before


def test_two_exports_of_one_tree_take_turns(tmp_path, sample, capsys):
    x, y, _, _ = sample
    root = tmp_path/'png'/'train'
    with nb00a._one_writer(root):  # another export holds the tree
        t = threading.Thread(target=export_image_folder, args=(x, y, CLASSES, tmp_path/'png', 'train'))
        t.start()
        t.join(0.5)
        assert t.is_alive() and not list(root.rglob('*.png'))  # it waits for the lock before it looks
    t.join(30)
    assert not t.is_alive() and len(list(root.rglob('*.png'))) == len(x)
    export_image_folder(x, y, CLASSES, tmp_path/'png', 'train')
    assert 'nothing to do' in capsys.readouterr().out


def test_export_resumes_after_an_interrupted_write(tmp_path, sample, monkeypatch, capsys):
    x, y, _, _ = sample
    real, calls, dead = nb00a._save_png, [], dead_pid()
    def dying_save(img, fn):
        if len(calls) == 20:   # the 21st file: a killed writer leaves its half-written temp file behind
            fn.with_name(f'.{fn.name}.{dead}.abc123.tmp').write_bytes(b'\x89PNG\r\n')
            raise KeyboardInterrupt
        calls.append(fn); real(img, fn)
    monkeypatch.setattr(nb00a, '_save_png', dying_save)
    with pytest.raises(KeyboardInterrupt): export_image_folder(x, y, CLASSES, tmp_path, 'train', show=False)
    assert json.loads((tmp_path/'train'/'.export.json').read_text())['complete'] is False
    assert len(list((tmp_path/'train').rglob('*.png'))) == 20
    assert list((tmp_path/'train').rglob('.*.tmp'))           # the interrupted file's temp file is there
    live = tmp_path/'train'/CLASSES[0]/f'.99.png.{os.getpid()}.xyz789.tmp'
    live.write_bytes(b'')                                       # a writer that is still running: left alone
    monkeypatch.setattr(nb00a, '_save_png', real)
    export_image_folder(x, y, CLASSES, tmp_path, 'train', show=False)
    assert 'wrote 40 of 60 images (resumed)' in capsys.readouterr().out
    assert list((tmp_path/'train').rglob('.*.tmp')) == [live]  # the dead writer's temp file is cleaned up
    assert len(_pngs(tmp_path)) == len(x) + 1                   # no duplicates, none missing (+ the live temp file)
    ll = label_by_func(SplitData.split_by_func(ImageList.from_files(tmp_path, tfms=[to_byte_tensor, to_float_tensor]),
                                               grandparent_splitter), parent_labeler, proc_y=CategoryProcessor(CLASSES))
    xs, ys = _in_original_order(ll.train)
    assert torch.equal(xs, x) and torch.equal(ys, y)
    assert json.loads((tmp_path/'train'/'.export.json').read_text())['complete'] is True


def test_stale_recognises_only_dead_writers():
    dead = dead_pid()
    assert nb00._stale(f'.01.png.{dead}.abc123.tmp') and not nb00._stale('.01.png.tmp')
    assert not nb00._stale(f'.01.png.{os.getpid()}.abc123.tmp')
    assert not nb00._stale('01.png') and not nb00._stale('.export.json')


def test_export_rewrites_a_deleted_file_of_a_complete_tree(tree, sample, capsys):
    x, y, _, _ = sample
    (tree/'train'/CLASSES[y[5]]/'05.png').unlink()
    export_image_folder(x, y, CLASSES, tree, 'train', show=False)
    assert 'wrote 1 of 60' in capsys.readouterr().out
    assert (tree/'train'/CLASSES[y[5]]/'05.png').is_file()


def test_export_refuses_other_data_foreign_folders_and_stray_files(tree, sample, tmp_path):
    x, y, _, _ = sample
    with pytest.raises(ImageError, match='holds a different data set'):
        export_image_folder(1 - x, y, CLASSES, tree, 'train', show=False)
    (tmp_path/'mine'/'train'/'cats').mkdir(parents=True)
    (tmp_path/'mine'/'train'/'cats'/'1.png').write_bytes(b'')
    with pytest.raises(ImageError, match='was not written by export_image_folder'):
        export_image_folder(x, y, CLASSES, tmp_path/'mine', 'train', show=False)
    (tree/'train'/'Bag'/'stray.png').write_bytes(b'')
    with pytest.raises(ImageError, match=r"1 file\(s\) export_image_folder did not write, e.g. \['Bag/stray.png'\]"):
        export_image_folder(x, y, CLASSES, tree, 'train', show=False)


def test_export_refuses_bad_input(tmp_path, sample):
    x, y, _, _ = sample
    with pytest.raises(ValueError, match="class name 'T-shirt/top' cannot be a folder name"):
        export_image_folder(x, y, ['T-shirt/top'] + CLASSES[1:], tmp_path, show=False)
    with pytest.raises(ValueError, match='60 images but 59 labels'):
        export_image_folder(x, y[1:], CLASSES, tmp_path, show=False)
    with pytest.raises(ValueError, match=r'labels must be in 0\.\.1'):
        export_image_folder(x, y, CLASSES[:2], tmp_path, show=False)
    with pytest.raises(ValueError, match=r'pixels in \[0, 1\]'):
        export_image_folder(x * 2, y, CLASSES, tmp_path, show=False)
    with pytest.raises(ValueError, match='shape'): export_image_folder(x[:, :780], y, CLASSES, tmp_path, show=False)
    with pytest.raises(TypeError, match='labels must be integers'):
        export_image_folder(x, y.float(), CLASSES, tmp_path, show=False)
    assert not (tmp_path/'train').exists()


# --- get_files ------------------------------------------------------------------------------------------

@pytest.fixture
def messy(tmp_path):
    "A small tree with hidden files and folders, a non-image file and a nested folder."
    for f in ['train/a/2.png', 'train/a/1.PNG', 'train/a/notes.txt', 'train/a/.hidden.png', 'train/b/3.jpg',
              'train/b/deeper/4.png', 'valid/a/5.png', '.cache/6.png', 'train/.git/7.png', 'top.png']:
        (tmp_path/f).parent.mkdir(parents=True, exist_ok=True); (tmp_path/f).write_bytes(b'')
    return tmp_path


def test_get_files_finds_exactly_the_right_files(messy):
    rel = lambda fs: [f.relative_to(messy).as_posix() for f in fs]
    assert rel(get_files(messy, image_extensions)) == ['top.png', 'train/a/1.PNG', 'train/a/2.png', 'train/b/3.jpg',
                                                       'train/b/deeper/4.png', 'valid/a/5.png']
    assert rel(get_files(messy)) == ['top.png', 'train/a/1.PNG', 'train/a/2.png', 'train/a/notes.txt', 'train/b/3.jpg',
                                     'train/b/deeper/4.png', 'valid/a/5.png']
    want = ['top.png', 'train/a/1.PNG', 'train/a/2.png', 'train/b/deeper/4.png', 'valid/a/5.png']
    assert rel(get_files(messy, ['png'])) == want
    assert rel(get_files(messy, '.txt')) == ['train/a/notes.txt']
    assert rel(get_files(messy, '.png', recurse=False)) == ['top.png']
    assert rel(get_files(messy, '.png', include=['valid'])) == ['top.png', 'valid/a/5.png']
    with pytest.raises(FileNotFoundError, match='is not a folder'): get_files(messy/'nope')


# --- ItemList, compose ----------------------------------------------------------------------------------

def test_compose_runs_in_order():
    f, g = (lambda x: x + 1), (lambda x: x * 10)
    g._order = 5
    assert compose(1, [g, f]) == 20 and compose(1, f) == 2 and compose(1, None) == 1


def test_itemlist_indexing():
    il = ItemList(range(10), tfms=lambda o: o * 2)
    assert il[3] == 6 and il[-1] == 18 and il[torch.tensor(2)] == 4
    assert list(il[2:5]) == [4, 6, 8] and isinstance(il[2:5], ItemList)
    assert list(il[[9, 0, 9]]) == [18, 0, 18] and list(il[torch.tensor([1, 2])]) == [2, 4]
    assert list(il[torch.arange(10) % 3 == 0]) == [0, 6, 12, 18]
    assert list(il[[i < 2 for i in range(10)]]) == [0, 2]
    with pytest.raises(IndexError, match='boolean mask of length 3 for 10 items'): il[[True, False, True]]
    with pytest.raises(IndexError): il[10]
    assert repr(il).startswith('ItemList (10 items): [0, 1, 2, 3, ...]')


# --- splitting, labelling, processors -------------------------------------------------------------------

def test_split_and_label(tree, sample):
    x, y, xv, yv = sample
    sd = SplitData.split_by_func(ImageList.from_files(tree), grandparent_splitter)
    assert (len(sd.train), len(sd.valid)) == (len(x), len(xv))
    assert all(f.parent.parent.name == 'train' for f in sd.train.items)
    assert all(f.parent.parent.name == 'valid' for f in sd.valid.items)
    ll = label_by_func(sd, parent_labeler, proc_y=CategoryProcessor())
    vocab = ll.train.proc_y[0].vocab
    assert vocab == sorted({CLASSES[k] for k in y.tolist()})
    assert ll.valid.proc_y[0] is ll.train.proc_y[0]
    assert [vocab[k] for k in ll.train.y.items] == [f.parent.name for f in ll.train.x.items]
    assert [vocab[k] for k in ll.valid.y.items] == [f.parent.name for f in ll.valid.x.items]


def test_splitter_drops_items_outside_train_and_valid(messy):
    sd = SplitData.split_by_func(ImageList.from_files(messy), grandparent_splitter)
    assert [f.name for f in sd.train.items] == ['1.PNG', '2.png', '3.jpg']
    assert [f.name for f in sd.valid.items] == ['5.png']


def test_category_processor_round_trips_and_refuses_unseen_labels():
    p = CategoryProcessor()
    labels = ['dog', 'cat', 'dog', 'bird']
    idxs = p(labels)
    assert p.vocab == ['bird', 'cat', 'dog'] and idxs == [2, 1, 2, 0] and p.deprocess(idxs) == labels
    assert p(['cat']) == [1] and p.vocab == ['bird', 'cat', 'dog']   # set up once, on the first (training) list
    with pytest.raises(ValueError, match=r"2 label\(s\) not in the vocab: \['cow', 'hen'\]"): p(['cat', 'hen', 'cow'])
    assert CategoryProcessor(['z', 'a'])(['a', 'z']) == [1, 0]
    with pytest.raises(ValueError, match='repeats'): CategoryProcessor(['a', 'a'])(['a'])


def test_unseen_validation_label_is_an_error(tree):
    (tree/'valid'/'Hat').mkdir()
    Image.new('L', (28, 28)).save(tree/'valid'/'Hat'/'99.png')
    sd = SplitData.split_by_func(ImageList.from_files(tree), grandparent_splitter)
    with pytest.raises(ValueError, match=r"1 label\(s\) not in the vocab: \['Hat'\]"):
        label_by_func(sd, parent_labeler, proc_y=CategoryProcessor())


# --- transforms and errors ------------------------------------------------------------------------------

def test_pipeline_gives_the_tensors_the_tree_was_written_from(tree, sample):
    x, y, xv, yv = sample
    il = ImageList.from_files(tree, tfms=[to_float_tensor, to_byte_tensor])
    sd = SplitData.split_by_func(il, grandparent_splitter)
    ll = label_by_func(sd, parent_labeler, proc_y=CategoryProcessor(CLASSES))
    for ld, (a, b) in ((ll.train, (x, y)), (ll.valid, (xv, yv))):
        xs, ys = _in_original_order(ld)
        assert xs.dtype == torch.float32 and torch.equal(xs, a) and torch.equal(ys, b)


def test_to_byte_tensor_keeps_channels_and_positions():
    img = Image.new('RGB', (3, 2))
    img.putpixel((2, 1), (10, 20, 30))
    t = to_byte_tensor(img)
    assert t.shape == (3, 2, 3) and t.dtype == torch.uint8 and t[:, 1, 2].tolist() == [10, 20, 30] and t.sum() == 60
    assert torch.equal(to_float_tensor(t), t.float() / 255)


def test_normalize_chan():
    x = torch.rand(4, 3, 5, 5)
    m, s = x.mean((0, 2, 3)), x.std((0, 2, 3))
    out = normalize_chan(x, m, s)
    assert torch.allclose(out.mean((0, 2, 3)), torch.zeros(3), atol=1e-6)
    assert torch.allclose(out.std((0, 2, 3)), torch.ones(3))


def test_truncated_png_error_names_the_file(tree, sample):
    fn = sorted((tree/'train').rglob('*.png'))[0]
    fn.write_bytes(fn.read_bytes()[:-30])
    il = ImageList([fn], tree)
    with pytest.raises(ImageError, match=f'{fn}: cannot read the image'): il[0]
    fn.write_bytes(b'not a png at all')
    with pytest.raises(ImageError, match=f'{fn}: cannot read the image'): il[0]


# --- decode_once, databunchify --------------------------------------------------------------------------

@pytest.mark.parametrize('nw', [0, 1])
def test_databunchify_and_decode_once(tree, sample, nw):
    x, y, xv, yv = sample
    il = ImageList.from_files(tree, tfms=[to_byte_tensor, to_float_tensor])
    sd = SplitData.split_by_func(il, grandparent_splitter)
    ll = label_by_func(sd, parent_labeler, proc_y=CategoryProcessor(CLASSES))
    data = databunchify(ll, 16, num_workers=nw)
    assert (data.c_in, data.c_out, data.c) == (1, 10, 10)
    xb, yb = next(iter(data.valid_dl))
    idx = [int(f.stem) for f in ll.valid.x.items[:len(xb)]]
    assert len(xb) == 25 and torch.equal(xb.view(len(xb), -1), xv[idx]) and torch.equal(yb, yv[idx])
    assert sum(len(b) for b, _ in data.train_dl) == len(x)
    cached = decode_once(ll, num_workers=nw)
    assert cached.train.x.dtype == torch.uint8 and cached.train.x.shape == (60, 1, 28, 28)
    cx, cy = cached.train[torch.arange(60)]
    assert torch.equal(cx, torch.stack([ll.train.x[i] for i in range(60)])) and cy.tolist() == ll.train.y.items
    cdata = databunchify(cached, 16, num_workers=0)
    assert (cdata.c_in, cdata.c_out) == (1, 10)
    assert sorted(torch.cat([b for _, b in cdata.train_dl]).tolist()) == sorted(y.tolist())


@pytest.mark.parametrize('nw', [0, 1])
def test_file_batches_match_the_item_pipeline(tree, sample, nw):
    "file_batches decodes a batch per fetch: the same tensors and labels as item by item, through databunchify too."
    x, y, xv, yv = sample
    il = ImageList.from_files(tree, tfms=[to_byte_tensor, to_float_tensor])
    ll = label_by_func(SplitData.split_by_func(il, grandparent_splitter), parent_labeler,
                       proc_y=CategoryProcessor(CLASSES))
    fb = file_batches(ll)
    assert len(fb.train) == 60 and len(fb.valid) == 25
    idxs = [5, 0, 17, 3]
    xb, yb = fb.train[idxs]
    assert xb.dtype == torch.float32 and torch.equal(xb, torch.stack([ll.train.x[i] for i in idxs]))
    assert yb.tolist() == [ll.train.y.items[i] for i in idxs]
    x0, y0 = fb.valid[2]                                  # an int gives one item, as for the other data sets
    assert torch.equal(x0, ll.valid.x[2]) and int(y0) == ll.valid.y.items[2]
    data = databunchify(fb, 16, num_workers=nw)
    assert (data.c_in, data.c_out) == (1, 10)
    xv_, yv_ = zip(*data.valid_dl)
    idx = [int(f.stem) for f in ll.valid.x.items]
    assert torch.equal(torch.cat(xv_).view(25, -1), xv[idx]) and torch.equal(torch.cat(yv_), yv[idx])
    assert sorted(torch.cat([b for _, b in data.train_dl]).tolist()) == sorted(y.tolist())


def test_file_batches_name_a_damaged_file(tree):
    fn = sorted((tree/'train').rglob('*.png'))[0]
    fn.write_bytes(b'not a png')
    il = ImageList.from_files(tree, tfms=[to_byte_tensor, to_float_tensor])
    ll = label_by_func(SplitData.split_by_func(il, grandparent_splitter), parent_labeler,
                       proc_y=CategoryProcessor(CLASSES))
    i = ll.train.x.items.index(fn)
    with pytest.raises(ImageError, match=f'{fn}: cannot read the image'): file_batches(ll).train[[i]]


def test_compare_epochs_runs_each_learner_in_turn():
    "Each learner gets one fit(1) per round, in dict order, the warm-up round uncounted."
    calls = []
    class Fake:
        def __init__(self, name): self.name = name
        def fit(self, epochs): calls.append((self.name, epochs))
    secs = compare_epochs({'a': Fake('a'), 'b': Fake('b')}, rounds=3)
    assert calls == [('a', 1), ('b', 1)] * 4
    assert list(secs) == ['a', 'b'] and all(len(v) == 3 and all(t >= 0 for t in v) for v in secs.values())


def test_default_num_workers_leaves_training_its_cores(monkeypatch):
    "Workers get only the cores training leaves free: cores - torch threads on CPU, all but one with CUDA, at most 8."
    monkeypatch.setattr(nb.sys, 'platform', 'linux')
    monkeypatch.setattr(nb.torch.cuda, 'is_available', lambda: False)
    for cores, threads, want in [(2, 2, 0), (2, 1, 1), (16, 4, 8), (4, 8, 0)]:
        monkeypatch.setattr(nb, '_n_cores', lambda c=cores: c)
        monkeypatch.setattr(nb.torch, 'get_num_threads', lambda t=threads: t)
        assert nb.default_num_workers() == want, (cores, threads)
    monkeypatch.setattr(nb.torch.cuda, 'is_available', lambda: True)
    assert nb.default_num_workers() == 3                        # 4 cores, training on the GPU
    monkeypatch.setattr(nb.sys, 'platform', 'darwin')
    assert nb.default_num_workers() == 0


# --- model_summary --------------------------------------------------------------------------------------

def test_model_summary_shapes_params_and_no_side_effects(capsys):
    from torch import nn

    model = nn.Sequential(nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU()),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = model_summary(model, torch.randn(5, 1, 8, 8))
    assert rows == [('Conv2d+BatchNorm2d+ReLU', (5, 4, 4, 4), 4 * 9 + 4 + 8), ('AdaptiveAvgPool2d', (5, 4, 1, 1), 0),
                    ('Flatten', (5, 4), 0), ('Linear', (5, 3), 15)]
    out = capsys.readouterr().out
    assert 'Conv2d+BatchNorm2d+ReLU' in out and 'total parameters' in out and '63' in out
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in model.modules())     # the hooks are gone


@pytest.mark.parametrize('nw', [0, 1])
def test_decode_once_names_a_damaged_file_even_in_a_worker(tree, nw):
    fn = sorted((tree/'valid').rglob('*.png'))[3]
    fn.write_bytes(fn.read_bytes()[:40])
    il = ImageList.from_files(tree, tfms=[to_byte_tensor, to_float_tensor])
    sd = SplitData.split_by_func(il, grandparent_splitter)
    ll = label_by_func(sd, parent_labeler, proc_y=CategoryProcessor(CLASSES))
    with pytest.raises(ImageError, match=f'{fn}: cannot read the image'): decode_once(ll, num_workers=nw)
