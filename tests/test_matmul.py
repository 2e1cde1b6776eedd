"""The matrix multiplications exported by nbs/01_matmul.ipynb (exp/nb_01.py), checked against torch's `@`."""
import pytest
import torch

from exp.nb_01 import matmul_broadcast, matmul_einsum, matmul_elementwise, matmul_loops, timeit_us

VERSIONS = [matmul_loops, matmul_elementwise, matmul_broadcast, matmul_einsum]
# (n, k, m) for an (n,k) @ (k,m) product: kept tiny so the three-loop version stays fast.
SHAPES = [(1, 1, 1), (1, 7, 1), (1, 6, 4), (5, 6, 1), (3, 4, 5), (4, 9, 2), (2, 1, 3), (3, 0, 2), (0, 3, 2)]


def _pair(n: int, k: int, m: int, dtype: torch.dtype = torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g, dtype=dtype), torch.randn(k, m, generator=g, dtype=dtype)


@pytest.mark.parametrize('f', VERSIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize('shape', SHAPES, ids=lambda s: 'x'.join(map(str, s)))
def test_matches_torch(f, shape):
    a, b = _pair(*shape)
    c = f(a, b)
    assert c.shape == (shape[0], shape[2])
    assert c.dtype == torch.float64
    torch.testing.assert_close(c, a @ b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('f', VERSIONS, ids=lambda f: f.__name__)
def test_float32_on_mnist_sized_rows(f):
    a, b = _pair(2, 784, 10, dtype=torch.float32, seed=1)
    c = f(a, b)
    assert c.dtype == torch.float32
    torch.testing.assert_close(c, a @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('f', VERSIONS, ids=lambda f: f.__name__)
def test_inputs_unchanged_and_result_is_new(f):
    a, b = _pair(3, 4, 2)
    a0, b0 = a.clone(), b.clone()
    c = f(a, b)
    assert torch.equal(a, a0) and torch.equal(b, b0)
    assert c.data_ptr() not in (a.data_ptr(), b.data_ptr())


@pytest.mark.parametrize('f', VERSIONS, ids=lambda f: f.__name__)
def test_integer_inputs(f):
    a = torch.arange(6).reshape(2, 3)
    b = torch.arange(12).reshape(3, 4)
    assert torch.equal(f(a, b), a @ b)


@pytest.mark.parametrize('f', VERSIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize('sa,sb', [((2, 3), (4, 5)), ((1, 784), (10, 784)), ((3, 1), (2, 1))])
def test_inner_mismatch_shows_both_shapes(f, sa, sb):
    with pytest.raises(ValueError) as e:
        f(torch.zeros(sa), torch.zeros(sb))
    msg = str(e.value)
    assert str(sa) in msg and str(sb) in msg, msg


@pytest.mark.parametrize('f', VERSIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize('sa,sb', [((3,), (3, 2)), ((2, 3), (3,)), ((2, 2, 3), (3, 2))])
def test_not_two_d_shows_both_shapes(f, sa, sb):
    with pytest.raises(ValueError, match='2-d') as e:
        f(torch.zeros(sa), torch.zeros(sb))
    assert str(sa) in str(e.value) and str(sb) in str(e.value)


@pytest.mark.parametrize('f', VERSIONS, ids=lambda f: f.__name__)
def test_one_line_docstring(f):
    assert f.__doc__ and '\n' not in f.__doc__.strip()


def test_timeit_us_median_and_call_count():
    calls = []
    us = timeit_us(lambda x: calls.append(x), 1, n=4, warmup=2)
    assert len(calls) == 6
    assert 0 < us < 1e6

