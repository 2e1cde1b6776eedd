"""Tests for exp.nb_10: batch augmentations (flip_batch, pad_crop, RandErase, rotate_batch), AugmentCallback and tta."""
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from exp.nb_03 import ArrayDataset, DataLoader, Sampler, accuracy
from exp.nb_04 import Callback, DataBunch, Learner
from exp.nb_06 import BatchTransformXCallback, mnist_resize
from exp.nb_10 import AugmentCallback, RandErase, _erase_mask, _rotate, flip_batch, pad_crop, rotate_batch, tta

AUGS = {'flip_batch': flip_batch, 'pad_crop': pad_crop, 'RandErase': RandErase(), 'rotate_batch': rotate_batch}


def batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g)


@pytest.mark.parametrize('name', AUGS)
def test_keeps_shape_dtype_and_is_out_of_place(name):
    x = batch()
    x0 = x.clone()
    torch.manual_seed(0)
    out = AUGS[name](x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(x, x0)  # the input (a view of the data set) is not modified


@pytest.mark.parametrize('name', AUGS)
def test_reproducible_with_manual_seed_and_random_per_image(name):
    x = batch()
    torch.manual_seed(3); a = AUGS[name](x)
    torch.manual_seed(3); b = AUGS[name](x)
    assert torch.equal(a, b)
    changed = (a != x).flatten(1).any(1)
    assert 0 < changed.sum() < len(x) or name in ('pad_crop', 'rotate_batch')  # p=0.5: some images, not all


def test_flip_batch():
    x = batch()
    assert torch.equal(flip_batch(x, p=1.), x.flip(-1)) and torch.equal(flip_batch(x, p=0.), x)
    torch.manual_seed(0)
    out = flip_batch(x)
    same, mirrored = (out == x).flatten(1).all(1), (out == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and mirrored.any() and same.any()


def test_pad_crop_is_a_window_of_the_padded_image():
    x = batch(32)
    assert torch.equal(pad_crop(x, pad=0), x)
    torch.manual_seed(0)
    out, xp = pad_crop(x, pad=2, fill=-1.), F.pad(x, (2,) * 4, value=-1.)
    offsets = []
    for i in range(len(x)):
        hits = [(a, b) for a in range(5) for b in range(5) if torch.equal(out[i], xp[i, :, a:a + 28, b:b + 28])]
        assert hits, f'image {i} is no window of its padded image'
        offsets.append(hits[0])
    assert len(set(offsets)) > 5
    assert (out != x).flatten(1).any(1).sum() > len(x) // 2  # pixels actually move


def test_rand_erase_erases_one_rectangle_within_the_area():
    torch.manual_seed(0)
    m = _erase_mask(2000, 28, 28, (0.02, 0.2), (0.3, 3.3), 'cpu')
    frac = m.flatten(1).float().mean(1)
    assert frac.min() >= 0.01 and frac.max() <= 0.23
    rows, cols = m.any(2), m.any(1)  # a rectangle: the mask is the outer product of its rows and columns
    assert torch.equal(m, rows[:, :, None] & cols[:, None, :])
    x = batch()
    torch.manual_seed(0)
    out = RandErase(p=1., fill='zero')(x)
    assert ((out != x).flatten(1).any(1)).all()
    assert torch.equal(out[out != x], torch.zeros_like(out[out != x]))
    torch.manual_seed(0)
    assert torch.equal(RandErase(p=0.)(x), x)
    with pytest.raises(ValueError, match='noise'):
        RandErase(fill='mean')


def test_rotate_matches_rot90_and_identity():
    x = batch(8)
    assert torch.allclose(_rotate(x, torch.full((8,), torch.pi / 2)), x.rot90(1, (2, 3)), atol=1e-5)
    assert torch.allclose(_rotate(x, torch.zeros(8)), x, atol=1e-5)
    assert torch.allclose(rotate_batch(x, deg=0.), x, atol=1e-5)


class Spy(Callback):
    _order = 4
    def begin_fit(self): self.seen = []
    def begin_batch(self): self.seen.append((self.in_train, self.xb.clone(), self.yb.clone()))


def image_data(n=64, bs=32, seed=0):
    "Rows of 784 random pixels with labels, in loaders that keep the order."
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(2 * n, 784, generator=g), torch.randint(0, 10, (2 * n,), generator=g)
    tds, vds = ArrayDataset(x[:n], y[:n]), ArrayDataset(x[n:], y[n:])
    return DataBunch(*(DataLoader(ds, Sampler(ds, bs), batched=True) for ds in (tds, vds)), c=10), tds, vds


def tiny_cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 10))


def test_augment_callback_changes_training_batches_only_and_keeps_labels():
    data, tds, vds = image_data()
    spy = Spy()
    learn = Learner(tiny_cnn(), partial(torch.optim.SGD, lr=0.01), F.cross_entropy, data,
                    cbs=[BatchTransformXCallback(mnist_resize), AugmentCallback(pad_crop, RandErase(p=1.)), spy])
    assert AugmentCallback._order > BatchTransformXCallback._order
    torch.manual_seed(0)
    learn.fit(1)
    for train, ds in ((True, tds), (False, vds)):
        xs, ys = (torch.cat([s[i] for s in spy.seen if s[0] == train]) for i in (1, 2))
        assert torch.equal(ys, ds.y) and xs.shape == (len(ds), 1, 28, 28)
        changed = (xs.flatten(1) != ds.x).any(1)
        assert changed.all() if train else not changed.any()


def test_tta_averages_plain_and_flipped_probabilities():
    data, _, vds = image_data()
    torch.manual_seed(0)
    model = tiny_cnn().train()
    p, p_tta, y = tta(model, data.valid_dl, mnist_resize)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        x = mnist_resize(vds.x)
        want_p = model(x).softmax(-1)
        want_tta = (want_p + model(x.flip(-1)).softmax(-1)) / 2
    assert torch.allclose(p, want_p, atol=1e-6) and torch.allclose(p_tta, want_tta, atol=1e-6)
    assert torch.equal(y, vds.y) and torch.allclose(p_tta.sum(-1), torch.ones(len(y)))
    assert 0 <= accuracy(p_tta, y) <= 1
