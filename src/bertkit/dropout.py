"""Dropout for CPU training whose masks cost a quarter of torch's, and attention that uses it.

torch's CPU dropout draws one random number per element (``bernoulli_``): in a BERT-base bf16
pretraining step on 2 cores, its 37 calls took 12% of the step (458 of 3,884 ms), as much as all
of attention. Here one 64-bit draw gives four elements 16 random bits each, and an element is
kept when its 16 bits fall below ``round((1 - p) · 2¹⁶)``: the same generator (torch's default,
so ``torch.manual_seed`` and checkpointed RNG state govern it as before), a quarter of the
draws. The kept share is that count over 2¹⁶, within 2⁻¹⁷ of 1 - p (0.899994 for p = 0.1), and
kept values are scaled by its exact inverse, so the expectation is unchanged, as with torch's.
Forward plus backward of a (16, 12, 128, 128) float32 dropout: 9.5 ms against torch's 24.5.

The mask is written straight in x's dtype (0 or 1; ``torch.lt`` into a float output) and applied
as one ``addcmul`` each way: a bool mask made ``x.mul(mask)`` cast it to x's dtype in a temporary
first, forward and backward. Fwd+bwd of a (1900, 768) bf16 dropout (BERT-base's hidden states on
a 2-core AMX CPU): 2.7 ms against 4.1; of a (1, 12, 128, 128) float32 one (attention, one
sequence): 0.49 against 0.66. The draws, the kept share and the scale are unchanged.

Elsewhere (CUDA draws its masks in the kernel, and under torch.compile inductor makes its own)
this is torch's dropout.

Attention in bf16 training (autocast) multiplies in bf16 with a float32 softmax between, at
two to three times the float32 products' rate: see _Bf16Attention for what that rounds.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_BITS = 16  # random bits per element: 2^-17 is the largest gap between the kept share and 1 - p


def own_masks(x: Tensor) -> bool:
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def keep_mask(shape: tuple[int, ...], keep: float, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.bool) -> tuple[Tensor, float]:
    """A mask of ``shape``, True (or 1 in a float ``dtype``) with probability ``keep`` rounded to
    2⁻¹⁶, and that probability."""
    count = round(keep * 2**_BITS)
    if count == 2**_BITS:  # keep ≥ 1 - 2^-17: every element (the threshold 2^15 is no int16)
        return torch.ones(shape, dtype=dtype, device=device), 1.0
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-2**63, None)  # all 64 bits random
    lanes = words.view(torch.int16)[:n].view(shape)  # uniform over -2^15 .. 2^15 - 1
    mask = torch.lt(lanes, count - 2**(_BITS - 1), out=torch.empty(shape, dtype=dtype, device=device))
    return mask, count / 2**_BITS


class _Masked(torch.autograd.Function):
    """x · mask · scale, forward and backward, the mask (x's dtype, 0 or 1) kept for the backward."""

    @staticmethod
    def forward(ctx, x: Tensor, mask: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return torch.addcmul(x.new_zeros(()), x, mask, value=scale)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (mask,) = ctx.saved_tensors
        return torch.addcmul(grad.new_zeros(()), grad, mask, value=ctx.scale), None, None


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """F.dropout(x, p, training), with CPU masks drawn 16 bits an element (see the module doc)."""
    if not training or p == 0.0:
        return x
    if not own_masks(x) or p >= 1.0:
        return F.dropout(x, p, training)
    mask, kept = keep_mask(x.shape, 1.0 - p, x.device, x.dtype)
    return _Masked.apply(x, mask, 1.0 / kept)


class _MaskedAdd(torch.autograd.Function):
    """residual + x · mask · scale in one pass each way: x and the mask in x's dtype, the sum and
    residual's gradient in residual's, x's gradient written straight in x's dtype."""

    @staticmethod
    def forward(ctx, x: Tensor, residual: Tensor, mask: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(mask)
        ctx.scale, ctx.x_dtype = scale, x.dtype
        return torch.addcmul(residual, x, mask, value=scale)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None, None]:
        (mask,) = ctx.saved_tensors
        dx = torch.empty(grad.shape, dtype=ctx.x_dtype, device=grad.device)
        torch.addcmul(grad.new_zeros(()), grad, mask, value=ctx.scale, out=dx)
        return dx, grad, None, None


def dropout_add(x: Tensor, residual: Tensor, p: float, training: bool = True) -> Tensor:
    """dropout(x, p, training) + residual. On CPU one fused operation: x · mask · scale is added
    in residual's dtype (float32 under autocast) without rounding it to x's (bf16) first, and the
    backward writes x's gradient in x's dtype in the same pass that applies the mask (autograd's
    add would cast it first). BERT-base bf16 training step on real data: +1% (2-core AMX CPU)."""
    if not training or p == 0.0 or not own_masks(x) or p >= 1.0:
        return dropout(x, p, training) + residual
    mask, kept = keep_mask(x.shape, 1.0 - p, x.device, x.dtype)
    return _MaskedAdd.apply(x, residual, mask, 1.0 / kept)


class Dropout(nn.Dropout):
    """nn.Dropout through ``dropout``: same module, same state dict, cheaper CPU masks."""

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """dropout(x), plus ``residual`` when given (fused, see dropout_add)."""
        if residual is None:
            return dropout(x, self.p, self.training)
        return dropout_add(x, residual, self.p, self.training)


def attention_with_dropout(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, p: float) -> Tensor:
    """softmax(q kᵀ/√hs) v with dropout p on the probabilities; q, k, v (..., T, hs), mask
    broadcastable to (..., T, T), True = may attend.

    What torch's SDPA does on CPU when dropout is on (its fused kernels have none, so it takes this
    math route): scores, softmax and products in float32 whatever the inputs' dtype, the result cast
    back; only the masks come from ``dropout``. Elsewhere, SDPA itself.
    """
    if not own_masks(q):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    dtype = q.dtype
    with torch.autocast("cpu", enabled=False):  # float32 products, as SDPA's math route
        q, k, v = q.float(), k.float(), v.float()
        scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-1, -2)  # (..., T, T)
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        probs = dropout(scores.softmax(-1), p)
        return (probs @ v).to(dtype)


def equal_runs(lengths: list[int]) -> list[tuple[int, int]]:
    """(L, G) for each run of G consecutive sequences of length L: [128, 128, 97] → [(128, 2), (97, 1)]."""
    return [(length, len(list(group))) for length, group in itertools.groupby(lengths)]


def packed_attention_with_dropout(q: Tensor, k: Tensor, v: Tensor, lengths: list[int], heads: int,
                                  p: float) -> Tensor:
    """attention_with_dropout for each sequence of a packed batch, on CPU: q, k, v (R, H), the
    sequences of ``lengths`` one after another, then R - sum(lengths) spare rows → context (R, H),
    zero at the spare rows.

    Every cast, scale, dropout draw and the gathering of the output is one operation over the
    layer's packed rows instead of one or more per sequence, and a run of consecutive sequences of
    one length is one batched product (the packed layout puts equal lengths together, see
    BertModel.layout): in a Wikipedia set at length 128, 78% of the sequences are 128 long. The
    masks of all sequences come from one draw, in sequence order.

    bfloat16 inputs (training under autocast) take _Bf16Attention: bf16 products with float32
    softmax, see there. Others take the float32 math of SDPA's CPU route, per sequence.
    """
    if q.dtype == torch.bfloat16:
        return _Bf16Attention.apply(q, k, v, tuple(lengths), heads, p)
    n = sum(lengths)
    size = q.shape[1] // heads  # hs
    with torch.autocast(q.device.type, enabled=False):
        # (n, H) float32 each; a copy even of float32 input, so the scale may be applied in place
        q32 = q[:n].to(torch.float32, copy=True).mul_(1.0 / math.sqrt(size))
        k32, v32 = k[:n].float(), v[:n].float()
        runs = equal_runs(lengths)
        sizes = _mask_sizes(runs, heads)
        masks, kept = keep_mask((sum(sizes),), 1.0 - p, q.device, torch.float32)
        rows = [count * length for length, count in runs]
        parts = zip(q32.split(rows), k32.split(rows), v32.split(rows), masks.split(sizes), runs)
        out = []
        for qs, ks, vs, mask, (length, count) in parts:
            qh, kh, vh = (t.view(count, length, heads, size).transpose(1, 2) for t in (qs, ks, vs))  # (G, nh, L, hs)
            probs = _Masked.apply((qh @ kh.transpose(-1, -2)).softmax(-1), mask.view(count, heads, length, length),
                                  1.0 / kept)
            out.append((probs @ vh).transpose(1, 2).reshape(count * length, heads, size))  # (G·L, nh, hs)
        out.append(q32.new_zeros(len(q) - n, heads, size))  # the spare rows
        return torch.cat(out).view(len(q), heads * size).to(q.dtype)


def _mask_sizes(runs: list[tuple[int, int]], heads: int) -> list[int]:
    return [count * heads * length * length for length, count in runs]  # each run's (G, nh, L, L) mask


def _heads_first(x: Tensor, count: int, length: int, heads: int, scale: float = 1.0) -> Tensor:
    """(G·L, H) rows of a run → (G·nh, L, hs) contiguous, times ``scale``, in one copy."""
    view = x.reshape(count, length, heads, -1).transpose(1, 2)  # (G, nh, L, hs); a view of q, k, v's rows
    out = x.new_empty(view.shape)
    torch.mul(view, scale, out=out) if scale != 1.0 else out.copy_(view)
    return out.view(count * heads, length, -1)


def _rows_first(x: Tensor, count: int, heads: int, into: Tensor, scale: float = 1.0) -> None:
    """(G·nh, L, hs) → written into ``into`` (G·L, H), times ``scale``: the inverse of _heads_first."""
    view = x.view(count, heads, x.shape[1], -1).transpose(1, 2)  # (G, L, nh, hs)
    target = into.view(view.shape)
    torch.mul(view, scale, out=target) if scale != 1.0 else target.copy_(view)


class _Bf16Attention(torch.autograd.Function):
    """packed_attention_with_dropout for bfloat16 q, k, v (R, H): the four products of each
    direction in bf16 (float32 accumulation, bf16 results), softmax and its gradient in float32.

    The float32 route's products ran at 0.2–0.27 TFLOP/s on a 2-core AMX CPU, the bf16 ones at
    0.6–0.9: the BERT-base pretraining step on real data was 9–11% faster. What it rounds that the
    float32 route does not: the scores and their gradient through the probabilities (dP) to bf16,
    and the dropped-out probabilities to bf16 before the product with v, as flash attention
    does. On the real MiniLM checkpoint, one RTE batch, bf16 autocast, the whole gradient was
    6.9·10⁻³ from a float64 reference, against 6.4·10⁻³ with float32 attention and 6.6·10⁻³ and
    7.4·10⁻³ for transformers' sdpa and eager attention (tests/tasks/test_finetune_parity.py
    holds it near sdpa's; tests/test_dropout.py bounds this route against float64 attention).
    q's scale 1/√hs multiplies q in bf16 when it is a power of two (exact), else the float32
    scores.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, lengths: tuple[int, ...], heads: int, p: float) -> Tensor:
        size = q.shape[1] // heads  # hs
        scale = 1.0 / math.sqrt(size)
        exact = math.frexp(scale)[0] == 0.5  # a power of two: q · scale is exact in bf16
        runs = equal_runs(list(lengths))
        sizes = _mask_sizes(runs, heads)
        masks, kept = keep_mask((sum(sizes),), 1.0 - p, q.device, torch.float32)
        out = q.new_empty(q.shape)  # (R, H)
        out[sum(lengths):].zero_()  # the spare rows
        saved, start = [], 0
        for (length, count), mask in zip(runs, masks.split(sizes)):
            rows = slice(start, start + count * length)
            start = rows.stop
            qh = _heads_first(q[rows], count, length, heads, scale if exact else 1.0)  # (G·nh, L, hs)
            kh, vh = _heads_first(k[rows], count, length, heads), _heads_first(v[rows], count, length, heads)
            scores = torch.bmm(qh, kh.transpose(1, 2))  # (G·nh, L, L) bf16
            probs = torch.softmax(scores, -1, dtype=torch.float32) if exact else scores.float().mul_(scale).softmax(-1)
            dropped = torch.empty_like(scores)  # bf16
            torch.addcmul(probs.new_zeros(()), probs, mask.view(probs.shape), value=1.0 / kept, out=dropped)
            _rows_first(torch.bmm(dropped, vh), count, heads, out[rows])
            saved += [qh, kh, vh, probs, dropped]
        ctx.save_for_backward(masks, *saved)
        ctx.layout = (runs, sizes, heads, 1.0 / kept, scale, exact)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None, None, None]:
        masks, *saved = ctx.saved_tensors
        runs, sizes, heads, inverse_kept, scale, exact = ctx.layout
        grad = grad.to(torch.bfloat16)  # (R, H), maybe strided (even expanded): _heads_first reshapes
        dq, dk, dv = (grad.new_empty(grad.shape) for _ in range(3))  # (R, H)
        start = 0
        for i, ((length, count), mask) in enumerate(zip(runs, masks.split(sizes))):
            qh, kh, vh, probs, dropped = saved[5 * i: 5 * i + 5]
            rows = slice(start, start + count * length)
            start = rows.stop
            dout = _heads_first(grad[rows], count, length, heads)  # (G·nh, L, hs)
            _rows_first(torch.bmm(dropped.transpose(1, 2), dout), count, heads, dv[rows])
            ddropped = torch.bmm(dout, vh.transpose(1, 2))  # (G·nh, L, L) bf16
            dprobs = torch.addcmul(probs.new_zeros(()), ddropped, mask.view(probs.shape), value=inverse_kept)  # float32
            dscores = torch._softmax_backward_data(dprobs, probs, -1, torch.float32)
            ds = torch.empty_like(ddropped)
            torch.mul(dscores, 1.0 if exact else scale, out=ds)  # bf16: d loss / d (q·kᵀ), over scale if exact
            _rows_first(torch.bmm(ds, kh), count, heads, dq[rows], scale if exact else 1.0)
            _rows_first(torch.bmm(ds.transpose(1, 2), qh), count, heads, dk[rows])  # qh holds the scale if exact
        for t in (dq, dk, dv):
            t[start:].zero_()  # the spare rows take no part
        return dq, dk, dv, None, None, None
