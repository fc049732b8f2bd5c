"""bertkit.dropout: CPU masks from 16 random bits an element, against torch's dropout."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from bertkit.dropout import (Dropout, attention_with_dropout, dropout, dropout_add, keep_mask,
                             packed_attention_with_dropout)


def test_keep_mask_keeps_the_rounded_share_in_every_lane():
    """One 64-bit draw feeds four elements: each of the four positions must be kept at the same
    rate (a draw whose top bit were never set would keep one lane in four at 0.8, not 0.9)."""
    torch.manual_seed(0)
    mask, kept = keep_mask((1_000_000, 4), 0.9)
    assert kept == round(0.9 * 2**16) / 2**16 and abs(kept - 0.9) < 2**-17
    se = math.sqrt(kept * (1 - kept) / 1_000_000)
    for lane in mask.float().mean(0).tolist():
        assert abs(lane - kept) < 5 * se


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_keep_mask_in_a_float_dtype_is_the_bool_mask_as_ones_and_zeros(dtype):
    torch.manual_seed(4)
    as_bool, kept = keep_mask((1000, 7), 0.9)
    torch.manual_seed(4)
    as_float, kept_too = keep_mask((1000, 7), 0.9, dtype=dtype)
    assert as_float.dtype == dtype and kept_too == kept
    assert torch.equal(as_float, as_bool.to(dtype))


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_is_unbiased_and_its_backward_drops_what_the_forward_did(p):
    torch.manual_seed(1)
    x = torch.full((400_000,), 3.0, requires_grad=True)
    out = dropout(x, p)
    kept = out != 0
    assert out.mean().item() == pytest.approx(3.0, abs=5 * 3.0 * math.sqrt(p / (1 - p) / 400_000))
    assert torch.equal(out[kept], torch.full_like(out[kept], 3.0 * 2**16 / round((1 - p) * 2**16)))
    out.sum().backward()
    assert torch.equal(x.grad != 0, kept)  # the same units, through autograd's saved mask


def test_dropout_follows_the_seed_and_keeps_dtype():
    x = torch.randn(64, 32, dtype=torch.bfloat16)
    torch.manual_seed(5)
    a = dropout(x, 0.1)
    torch.manual_seed(5)
    assert torch.equal(a, dropout(x, 0.1)) and a.dtype == torch.bfloat16
    assert dropout(x, 0.1, training=False) is x and dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


def test_dropout_module_is_nn_dropout_in_eval():
    layer = Dropout(0.1)
    x = torch.randn(8, 8)
    assert torch.equal(layer.eval()(x), x)
    assert (layer.train()(x) == 0).any() and layer.state_dict() == {}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_add_is_dropout_plus_residual_in_residuals_dtype(dtype):
    """x (float32 or bf16) dropped out and added to a float32 residual, as one operation: the same
    draws as dropout's, the masked x added without rounding it to x's dtype first, residual's
    gradient passed through and x's masked and scaled, in x's dtype."""
    torch.manual_seed(4)
    x = torch.randn(64, 32, dtype=dtype, requires_grad=True)
    residual = torch.randn(64, 32, requires_grad=True)
    torch.manual_seed(5)
    out = dropout_add(x, residual, 0.25)
    torch.manual_seed(5)
    mask, kept = keep_mask(x.shape, 0.75, dtype=dtype)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, residual + x.float() * mask.float() / kept, rtol=1e-6, atol=1e-6)
    grad = torch.randn(64, 32)
    dx, dresidual = torch.autograd.grad(out, (x, residual), grad)
    assert dx.dtype == dtype and torch.equal(dresidual, grad)
    torch.testing.assert_close(dx.float(), grad * mask.float() / kept, rtol=1e-6 if dtype == torch.float32 else 2**-8,
                               atol=0)  # one rounding to x's dtype
    assert torch.equal(Dropout(0.25).eval()(x, residual), x + residual)  # eval: the plain sum


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_with_dropout_is_sdpas_math_route(dtype):
    """With no unit dropped (p below 2^-17 keeps all) it is SDPA's CPU math route: float32 inside,
    cast back to the inputs' dtype; the bool mask hides keys."""
    torch.manual_seed(2)
    q, k, v = (torch.randn(2, 3, 7, 8, dtype=dtype) for _ in range(3))
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[1, ..., 5:] = False
    ours = attention_with_dropout(q, k, v, mask, 1e-9)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert ours.dtype == dtype
    torch.testing.assert_close(ours, reference, rtol=1e-5 if dtype == torch.float32 else 1.6e-2, atol=1e-6)


def test_attention_dropout_moments_match_torchs():
    """Mean and variance of the attention output over draws: ours and SDPA's own dropout agree."""
    torch.manual_seed(3)
    q, k, v = (torch.randn(1, 2, 6, 4) for _ in range(3))
    draws = 4000
    ours = torch.stack([attention_with_dropout(q, k, v, None, 0.3) for _ in range(draws)])
    theirs = torch.stack([F.scaled_dot_product_attention(q, k, v, dropout_p=0.3) for _ in range(draws)])
    z = (ours.mean(0) - theirs.mean(0)) / ((ours.var(0) + theirs.var(0)) / draws).sqrt()
    assert z.pow(2).mean().sqrt().item() < 1.3
    assert (ours.var(0).mean() / theirs.var(0).mean()).item() == pytest.approx(1.0, abs=0.06)


def packed(lengths: list[int], spare: int, dtype: torch.dtype = torch.float32, heads: int = 2, size: int = 4):
    """q, k, v (R, H) for sequences of ``lengths`` then ``spare`` rows, and each sequence's
    (1, nh, L, hs) q, k, v for the per-sequence route."""
    q, k, v = (torch.randn(sum(lengths) + spare, heads * size, dtype=dtype, requires_grad=True) for _ in range(3))
    per_sequence = [tuple(t.view(length, heads, size).transpose(0, 1)[None] for t in part)
                    for part, length in zip(zip(*(t[:sum(lengths)].split(lengths) for t in (q, k, v))), lengths)]
    return (q, k, v), per_sequence


def test_packed_attention_is_each_sequences_math_route():
    """Keeping every unit, the packed route gives each float32 sequence attention_with_dropout's
    result (so SDPA's float32 math route), zeros at the spare rows, and gradients that agree; runs
    of equal lengths (two 5s, three 9s) go through as one batched product."""
    torch.manual_seed(6)
    lengths = [5, 5, 1, 9, 9, 9]
    n = sum(lengths)
    (q, k, v), per_sequence = packed(lengths, spare=3)
    ours = packed_attention_with_dropout(q, k, v, lengths, 2, 1e-9)
    reference = torch.cat([attention_with_dropout(*qkv, None, 1e-9)[0].transpose(0, 1).reshape(-1, 8)
                           for qkv in per_sequence])
    assert ours.shape == (n + 3, 8)
    assert torch.equal(ours[n:], torch.zeros(3, 8))
    torch.testing.assert_close(ours[:n], reference, rtol=1e-6, atol=1e-6)
    grads = torch.autograd.grad(ours[:n].pow(2).sum(), (q, k, v))
    expected = torch.autograd.grad(reference.pow(2).sum(), (q, k, v))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert not got[n:].any()  # the spare rows take no part


def float64_attention(lengths: list[int], per_sequence: list[tuple[Tensor, ...]]) -> Tensor:
    """Each sequence's attention in float64 from its own q, k, v, packed back to (n, H)."""
    out = [F.scaled_dot_product_attention(*(t.double() for t in qkv))[0].transpose(0, 1).reshape(length, -1)
           for qkv, length in zip(per_sequence, lengths)]
    return torch.cat(out)


@pytest.mark.parametrize("size", [4, 8])  # 1/√4 multiplies q exactly in bf16; 1/√8 the float32 scores
def test_packed_bf16_attention_is_each_sequences_attention_within_bf16_rounding(size):
    """bfloat16 q, k, v take bf16 products (softmax in float32): keeping every unit, each
    sequence's output and q, k, v's gradients are the float64 attention of the same bf16 inputs
    within bf16 rounding (over six seeds: output up to 4.2e-3 of its largest value, gradients up to
    6.9e-3 of theirs), zeros at the spare rows. A wrong scale, layout or mask misses by far more."""
    torch.manual_seed(6)
    lengths = [9, 9, 9, 5, 5, 1]
    n = sum(lengths)
    (q, k, v), per_sequence = packed(lengths, spare=3, dtype=torch.bfloat16, heads=2, size=size)
    ours = packed_attention_with_dropout(q, k, v, lengths, 2, 1e-9)
    reference = float64_attention(lengths, per_sequence)
    assert ours.dtype == torch.bfloat16 and ours.shape == (n + 3, 2 * size)
    assert torch.equal(ours[n:], torch.zeros(3, 2 * size, dtype=torch.bfloat16))
    assert relative_difference(ours[:n], reference) < 1e-2
    weights = torch.randn(n, 2 * size, dtype=torch.float64)  # a loss whose gradient is not the output
    grads = torch.autograd.grad((ours[:n].double() * weights).sum(), (q, k, v))
    expected = torch.autograd.grad((reference * weights).sum(), (q, k, v))
    for got, want in zip(grads, expected):
        assert relative_difference(got[:n], want[:n]) < 1.5e-2
        assert not got[n:].any()  # the spare rows take no part
    (dq,) = torch.autograd.grad(packed_attention_with_dropout(q, k, v, lengths, 2, 0.1).sum(), q)  # an expanded grad
    assert dq.shape == q.shape and not dq[n:].any()


def relative_difference(a: Tensor, b: Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_attention_dropout_moments_match_torchs_and_backward_drops_the_same(dtype):
    """Over draws, each sequence's output has SDPA-with-dropout's mean and variance; and a unit
    dropped in the forward passes no gradient. bfloat16 takes its own route (bf16 products)."""
    torch.manual_seed(7)
    lengths = [6, 3]
    (q, k, v), per_sequence = packed(lengths, spare=1, dtype=dtype)
    draws = 3000
    with torch.no_grad():
        ours = torch.stack([packed_attention_with_dropout(q, k, v, lengths, 2, 0.3)[:9] for _ in range(draws)]).float()
        theirs = torch.stack([torch.cat([F.scaled_dot_product_attention(*qkv, dropout_p=0.3)[0].transpose(0, 1)
                                         .reshape(-1, 8) for qkv in per_sequence]) for _ in range(draws)]).float()
    z = (ours.mean(0) - theirs.mean(0)) / ((ours.var(0) + theirs.var(0)) / draws).sqrt()
    assert z.pow(2).mean().sqrt().item() < 1.3
    assert (ours.var(0).mean() / theirs.var(0).mean()).item() == pytest.approx(1.0, abs=0.06)
    # v's gradient is probsᵀ·grad: with one output row of sequence 0 weighted, v row j gets a
    # gradient exactly where that row's dropped probability mask kept unit (i, j).
    (q, k, v), _ = packed([6], spare=0, dtype=dtype, heads=1)
    torch.manual_seed(8)
    out = packed_attention_with_dropout(q, k, v, [6], 1, 0.5)
    (grad_v,) = torch.autograd.grad(out[2].sum(), v)
    torch.manual_seed(8)
    mask, _ = keep_mask((36,), 0.5, dtype=torch.float32)
    assert torch.equal(grad_v.abs().sum(1) != 0, mask.view(6, 6)[2] != 0)


def test_packed_attention_with_every_unit_dropped_is_zero():
    """p = 1 leaves no kept share to scale by: attend_each passes it to dropout's own case."""
    from bertkit.attention import attend_each

    (q, k, v), _ = packed([3, 2], spare=1)
    out = attend_each(q, k, v, [3, 2], 2, 1.0)
    assert out.shape == (6, 8) and not out.any()
