"""Lesson 02 (exp.nb_02): hand-written layers and gradients against autograd and finite differences."""
import pytest
import torch
import torch.nn.functional as F

from exp.nb_02 import (
    FastLin,
    FastModel,
    FastModule,
    FastMse,
    FastRelu,
    Lin,
    Model,
    Module,
    Mse,
    Relu,
    check_grad,
    compare_us,
    lin,
    mse,
    normalize,
    relu,
)

DD = dict(dtype=torch.float64)


def _params(n_in, nh, g, **kw):
    "w1, b1, w2, b2 at a sensible scale (so float32 sums stay accurate)."
    return [torch.randn(n_in, nh, generator=g, **kw) / n_in ** 0.5, torch.randn(nh, generator=g, **kw),
            torch.randn(nh, 1, generator=g, **kw) / nh ** 0.5, torch.randn(1, generator=g, **kw)]


def _autograd(x, y, params):
    "Loss and gradients (x, w1, b1, w2, b2) from autograd, on detached copies."
    xs = [t.detach().clone().requires_grad_(True) for t in [x] + list(params)]
    loss = mse(lin(relu(lin(xs[0], xs[1], xs[2])), xs[3], xs[4]), y)
    loss.backward()
    return loss.detach(), [t.grad for t in xs]


def _close(a, b, dtype):
    tol = dict(rtol=1e-9, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert torch.allclose(a, b, **tol), (a - b).abs().max()


SHAPES = [(1, 5, 3), (2, 1, 1), (7, 13, 4), (64, 30, 17), (3, 784, 50)]


@pytest.mark.parametrize('bs,n_in,n_out', SHAPES)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_functions_match_pytorch(bs, n_in, n_out, dtype):
    "lin, relu and mse against F.linear, F.relu and F.mse_loss (PyTorch's versions as references)."
    g = torch.Generator().manual_seed(bs * 7 + n_in * 3 + n_out)
    x, w, b = (torch.randn(*s, generator=g, dtype=dtype) for s in ((bs, n_in), (n_in, n_out), (n_out,)))
    _close(lin(x, w, b), F.linear(x, w.t(), b), dtype)
    x[0, 0] = 0.                                             # relu's kink
    assert torch.equal(relu(x), F.relu(x))
    out, y = torch.randn(bs, 1, generator=g, dtype=dtype), torch.randn(bs, generator=g, dtype=dtype)
    loss = mse(out, y)
    assert loss.shape == torch.Size([])
    _close(loss, F.mse_loss(out.squeeze(-1), y), dtype)
    _close(loss, F.mse_loss(out, y.unsqueeze(-1)), dtype)   # the same with the target given a last axis


@pytest.mark.parametrize('bs,n_in,n_out', SHAPES)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('Lin', [Lin, FastLin])
def test_lin_grads_match_autograd(bs, n_in, n_out, dtype, Lin):
    g = torch.Generator().manual_seed(bs * 1000 + n_in + n_out)
    x, w, b = (torch.randn(*s, generator=g, dtype=dtype) for s in ((bs, n_in), (n_in, n_out), (n_out,)))
    out_g = torch.randn(bs, n_out, generator=g, dtype=dtype)
    layer = Lin(w, b)
    out = layer(x)
    xa, wa, ba = (t.clone().requires_grad_(True) for t in (x, w, b))
    outa = lin(xa, wa, ba)
    _close(out, outa.detach(), dtype)
    outa.backward(out_g)
    out.g = out_g
    layer.backward()
    for mine, ref in ((x.g, xa.grad), (w.g, wa.grad), (b.g, ba.grad)): _close(mine, ref, dtype)


@pytest.mark.parametrize('bs,n', [(1, 1), (1, 9), (5, 3), (40, 50)])
@pytest.mark.parametrize('Relu', [Relu, FastRelu])
def test_relu_grad_matches_autograd(bs, n, Relu):
    g = torch.Generator().manual_seed(bs + n)
    x = torch.randn(bs, n, generator=g)
    x[0, 0] = 0.                                  # relu's kink: both sides use a slope of 0 there
    out_g = torch.randn(bs, n, generator=g)
    layer = Relu()
    out = layer(x)
    xa = x.clone().requires_grad_(True)
    outa = torch.relu(xa)
    outa.backward(out_g)
    assert torch.equal(out, outa.detach())
    out.g = out_g.clone()
    layer.backward()
    assert torch.equal(x.g, xa.grad)


def test_relu_grad_more_rows_than_one_block():
    "The mask is applied a block of rows at a time; a batch spanning several blocks must be fully masked."
    g = torch.Generator().manual_seed(0)
    x, out_g = torch.randn(10_000, 3, generator=g), torch.randn(10_000, 3, generator=g)
    layer = FastRelu()
    layer(x).g = out_g.clone()
    layer.backward()
    assert torch.equal(x.g, out_g * (x > 0))


@pytest.mark.parametrize('bs', [1, 2, 33])
@pytest.mark.parametrize('Mse', [Mse, FastMse])
def test_mse_grad_and_batch_of_one(bs, Mse):
    g = torch.Generator().manual_seed(bs)
    out, y = torch.randn(bs, 1, generator=g, **DD), torch.randn(bs, generator=g, **DD)
    loss = Mse()(out, y)
    assert loss.shape == torch.Size([])
    oa = out.clone().requires_grad_(True)
    la = ((oa - y[:, None]) ** 2).mean()                    # written without squeeze at all
    la.backward()
    _close(loss, la.detach(), torch.float64)
    layer = Mse(); layer(out, y); layer.backward()
    _close(out.g, oa.grad, torch.float64)


@pytest.mark.parametrize('bs', [1, 3])
@pytest.mark.parametrize('Mse', [Mse, FastMse])
def test_mse_refuses_a_target_with_a_last_axis(bs, Mse):
    "A (bs, 1) target would broadcast to bs x bs against the squeezed output: refused, naming both shapes."
    g = torch.Generator().manual_seed(10 + bs)
    out, y = torch.randn(bs, 1, generator=g, **DD), torch.randn(bs, generator=g, **DD)
    shapes = rf'\({bs}, 1\).*\({bs},\).*\({bs}, 1\)'         # output, wanted target, target given
    with pytest.raises(ValueError, match=shapes): mse(out, y[:, None])
    layer = Mse()
    with pytest.raises(ValueError, match=shapes): layer(out, y[:, None])
    assert not hasattr(out, 'g')                                 # nothing for a backward pass to use
    with pytest.raises(ValueError, match='mse'): mse(out.squeeze(-1), y)    # output without its last axis
    with pytest.raises(ValueError, match='mse'): mse(out, y[:1] if bs > 1 else y[:0])   # wrong length
    _close(mse(out, y), F.mse_loss(out, y[:, None]), torch.float64)        # the right target still works
    layer(out, y); layer.backward()
    assert out.g.shape == out.shape


@pytest.mark.parametrize('bs,n_in,nh', [(1, 6, 4), (2, 3, 1), (16, 20, 8), (50, 784, 50)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('Model', [Model, FastModel])
def test_model_matches_autograd(bs, n_in, nh, dtype, Model):
    g = torch.Generator().manual_seed(bs + n_in + nh)
    x, y = torch.randn(bs, n_in, generator=g, dtype=dtype), torch.randn(bs, generator=g, dtype=dtype)
    params = _params(n_in, nh, g, dtype=dtype)
    ref_loss, ref_grads = _autograd(x, y, params)
    model = Model(*params)
    loss = model(x, y)
    _close(loss, ref_loss, dtype)
    model.backward()
    for mine, ref in zip([x.g] + [p.g for p in params], ref_grads): _close(mine, ref, dtype)


def test_skipping_the_input_gradient():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(32, 10, generator=g, **DD), torch.randn(32, generator=g, **DD)
    params = _params(10, 6, g, **DD)
    _, ref_grads = _autograd(x, y, params)
    model = FastModel(*params)
    model(x, y)
    model.backward(inp_grad=False)
    assert not hasattr(x, 'g')
    for p, ref in zip(params, ref_grads[1:]): _close(p.g, ref, torch.float64)
    model(x, y)
    model.backward()                                          # the default still sets x.g
    _close(x.g, ref_grads[0], torch.float64)


def test_backward_frees_and_refuses_a_second_call():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(4, 3, generator=g), torch.randn(4, generator=g)
    model = FastModel(*_params(3, 2, g))
    model(x, y)
    model.backward()
    for layer in model.layers + [model.loss]: assert not hasattr(layer, 'out') and not hasattr(layer, 'args')
    with pytest.raises(RuntimeError, match='forward call first'): model.backward()


def test_backward_not_recorded_by_autograd():
    "Inputs that require grad must not make the hand-written backward pass build a graph (or fail)."
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(8, 5, generator=g).requires_grad_(True), torch.randn(8, generator=g)
    params = _params(5, 3, g)
    model = FastModel(*params)
    model(x, y)
    model.backward()
    assert not x.g.requires_grad and all(not p.g.requires_grad for p in params)


def test_module_base_class():
    class Double(Module):
        def forward(self, inp): return 2 * inp
        def bwd(self, out, inp): inp.g = 2 * out.g
    x = torch.arange(3.)
    layer = Double()
    out = layer(x)
    assert torch.equal(out, 2 * x) and layer.args[0] is x and layer.out is out
    out.g = torch.ones(3)
    layer.backward()
    assert torch.equal(x.g, torch.full((3,), 2.))
    with pytest.raises(NotImplementedError): Module()(x)


def _small_case(seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(6, 5, generator=g, **DD), torch.randn(6, generator=g, **DD)
    params = _params(5, 4, g, **DD)
    f = lambda: mse(lin(relu(lin(x, params[0], params[1])), params[2], params[3]), y)
    return x, y, params, f


def test_check_grad_accepts_the_right_gradients():
    x, y, params, f = _small_case()
    model = Model(*params)
    model(x, y)
    model.backward()
    for t in [x] + params: assert check_grad(f, t, t.g) < 1e-6
    assert check_grad(f, params[0], params[0].g, n=5) < 1e-6      # a random sample of entries


def test_check_grad_leaves_the_tensor_unchanged():
    x, y, params, f = _small_case(1)
    model = Model(*params)
    model(x, y)
    model.backward()
    before = params[0].clone()
    check_grad(f, params[0], params[0].g)
    assert torch.equal(params[0], before)


def test_check_grad_catches_wrong_gradients():
    x, y, params, f = _small_case(2)
    model = Model(*params)
    model(x, y)
    model.backward()
    w1g = params[0].g
    with pytest.raises(AssertionError, match='check_grad'): check_grad(f, params[0], 2 * w1g)     # off by a factor
    wrong = w1g.clone(); wrong[1, 2] += 1e-3                                                 # one entry, slightly
    with pytest.raises(AssertionError, match='check_grad'): check_grad(f, params[0], wrong)
    with pytest.raises(AssertionError, match='check_grad'): check_grad(f, params[0], w1g.t())  # wrong shape
    # the classic bug: relu's mask forgotten, so the gradient also flows through switched-off units
    l1 = lin(x, params[0], params[1])
    l2 = relu(l1)
    out = lin(l2, params[2], params[3])
    out_g = 2 * (out.squeeze(-1) - y).unsqueeze(-1) / len(y)
    no_mask = x.t() @ (out_g @ params[2].t())
    assert ((l1 <= 0).any())                      # so the bug matters in this case
    with pytest.raises(AssertionError, match='check_grad'): check_grad(f, params[0], no_mask)


def test_check_grad_refuses_float32():
    "In float32 the central differences are rounding noise; check_grad refuses rather than reject a right gradient."
    x, y, params, f = _small_case(3)
    x32, y32, p32 = x.float(), y.float(), [p.float() for p in params]
    f32 = lambda: mse(lin(relu(lin(x32, p32[0], p32[1])), p32[2], p32[3]), y32)
    model = Model(*p32)
    model(x32, y32)
    model.backward()
    before = p32[0].clone()
    with pytest.raises(TypeError, match='float64.*double'): check_grad(f32, p32[0], p32[0].g)
    assert torch.equal(p32[0], before)
    for p, q in zip(params, p32): p.g = q.g.double()               # the same (right) gradient, checked in float64
    assert check_grad(f, params[0], params[0].g) < 1e-5


def test_normalize():
    g = torch.Generator().manual_seed(6)
    x = torch.rand(500, 20, generator=g) * 3 + 2
    xn = normalize(x, x.mean(), x.std())
    assert abs(xn.mean().item()) < 1e-5 and abs(xn.std().item() - 1) < 1e-5


def test_fast_module_base_class():
    class Double(FastModule):
        def forward(self, inp): return 2 * inp
        def bwd(self, out, inp, inp_grad=True):
            if inp_grad: inp.g = 2 * out.g
    x = torch.arange(3.)
    layer = Double()
    layer(x).g = torch.ones(3)
    layer.backward(inp_grad=False)
    assert not hasattr(x, 'g') and not hasattr(layer, 'out')
    with pytest.raises(RuntimeError, match='forward call first'): layer.backward()
    layer(x).g = torch.ones(3)
    layer.backward()
    assert torch.equal(x.g, torch.full((3,), 2.))
    with pytest.raises(NotImplementedError): FastModule()(x)


def test_plain_model_keeps_what_it_stored():
    "The main line's Model is the maths only: backward can be run again and gives the same gradients."
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(6, 4, generator=g, **DD), torch.randn(6, generator=g, **DD)
    params = _params(4, 3, g, **DD)
    model = Model(*params)
    model(x, y)
    model.backward()
    first = [t.g.clone() for t in [x] + params]
    model.backward()
    for t, g0 in zip([x] + params, first): assert torch.equal(t.g, g0)


def test_compare_us_takes_turns():
    calls = []
    res = compare_us({'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')}, n=3, warmup=1)
    assert list(res) == ['a', 'b'] and calls == ['a', 'b'] * 4
    assert all(v >= 0 for v in res.values())
