"""bertkit.dropout: CPU masks from 16 random bits an element, against torch's dropout."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bertkit.dropout import Dropout, attention_with_dropout, dropout, keep_mask


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
