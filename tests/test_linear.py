"""bertkit.linear: autocast's linear layer with a cheaper weight gradient, against autocast's own."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bertkit.linear import autocast_linear


def grads(fn, x, weight, bias):
    x, weight, bias = (t.clone().requires_grad_() for t in (x, weight, bias))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fn(x, weight, bias)
    (y.float() * torch.linspace(-1, 1, y.numel()).view(y.shape)).sum().backward()
    return y, x.grad, weight.grad, bias.grad


def test_narrowing_layer_matches_autocasts_linear_and_the_float32_gradient():
    """(48, 96) weight, 2 × 37 tokens of float32 input (as from a LayerNorm): the same bf16 output,
    dX as autocast's, and dW, db within bfloat16's rounding of the float32 gradient."""
    g = torch.Generator().manual_seed(0)
    x, weight, bias = torch.randn(2, 37, 96, generator=g), torch.randn(48, 96, generator=g), torch.randn(48, generator=g)
    ours = grads(lambda x, w, b: autocast_linear(x, w, b, torch.bfloat16), x, weight, bias)
    theirs = grads(F.linear, x, weight, bias)
    assert ours[0].dtype == torch.bfloat16 and torch.equal(ours[0], theirs[0])
    assert ours[1].dtype == torch.float32 and torch.equal(ours[1], theirs[1])
    exact = grads(lambda x, w, b: F.linear(x.bfloat16().float(), w.bfloat16().float(), b), x, weight, bias)
    for got, want in zip(ours[2:], exact[2:]):
        assert got.dtype == torch.float32 and got.is_contiguous()
        torch.testing.assert_close(got, want, rtol=2**-7, atol=1e-3 * want.abs().max().item())
    assert ours[0].grad_fn.name() == "_AutocastLinearBackward"


def test_widening_and_square_layers_are_autocasts_linear():
    g = torch.Generator().manual_seed(1)
    for out in (96, 64):  # widening (96, 64) and square (64, 64)
        x, weight, bias = torch.randn(30, 64, generator=g), torch.randn(out, 64, generator=g), torch.randn(out, generator=g)
        ours = grads(lambda x, w, b: autocast_linear(x, w, b, torch.bfloat16), x, weight, bias)
        theirs = grads(F.linear, x, weight, bias)
        assert ours[0].grad_fn.name() == theirs[0].grad_fn.name()
        for got, want in zip(ours, theirs):
            assert torch.equal(got, want)
