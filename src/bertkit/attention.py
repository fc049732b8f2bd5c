"""Attention's arithmetic on q, k, v: padded with a key mask, packed one sequence at a time, and
NEZHA's relative positions. The modules that call it, and the choice between the routes, are in
bertkit.model (BertSelfAttention, Layout). Shapes: B batch, T sequence length, H hidden size, nh
heads, hs head size, R packed rows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from bertkit.dropout import attention_with_dropout, dropout, equal_runs, own_masks, packed_attention_with_dropout


def relative_position_table(length: int, depth: int, max_distance: int, device=None) -> Tensor:
    """NEZHA's functional relative positions: (T, T, depth) sinusoids of clip(j - i) + max.

    Fixed, not learned (Wei et al. 2019, "NEZHA", §3.2); index 0 is distance -max.
    """
    pos = torch.arange(length, device=device)
    distance = (pos[None, :] - pos[:, None]).clamp(-max_distance, max_distance) + max_distance
    index = torch.arange(2 * max_distance + 1, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, depth, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / depth))
    table = torch.zeros(2 * max_distance + 1, depth, device=device)
    table[:, 0::2] = torch.sin(index * freq)
    table[:, 1::2] = torch.cos(index * freq)[:, : depth // 2]
    return table[distance]  # (T, T, depth)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, heads: int, p: float) -> Tensor:
    """q, k, v (B, T, H) → context (B, T, H): torch's fused SDPA; with dropout p, its math route
    (bf16 with no padding on CPU: packed_attention_with_dropout's bf16 products, one run of B)."""
    B, T, H = q.shape
    if mask is None and 0.0 < p < 1.0 and own_masks(q) and q.dtype == torch.bfloat16:  # see packed_attention_with_dropout
        return packed_attention_with_dropout(*(t.reshape(B * T, H) for t in (q, k, v)), [T] * B, heads, p).view(B, T, H)
    q, k, v = (t.view(B, T, heads, H // heads).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
    if p > 0.0:  # training: SDPA's fused kernels have no dropout; the same math route, cheaper masks
        ctx = attention_with_dropout(q, k, v, mask, p)
    else:
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return ctx.transpose(1, 2).reshape(B, T, H)


def attend_each(q: Tensor, k: Tensor, v: Tensor, lengths: list[int], heads: int, p: float) -> Tensor:
    """Packed q, k, v (R, H), sequences of ``lengths`` one after another, then R - sum(lengths)
    spare rows (see packed_rows) → context (R, H), zero at the spare rows. A run of sequences of one
    length attends as one batch (BertModel.layout packs equal lengths together). CPU training takes
    packed_attention_with_dropout: the same per-sequence math with casts and masks batched
    (real data, BERT-base bf16, 2-core AMX CPU: the training step +3.2%)."""
    if 0.0 < p < 1.0 and own_masks(q):  # (p = 1 keeps nothing: dropout's own case, below)
        return packed_attention_with_dropout(q, k, v, lengths, heads, p)
    spare = len(q) - sum(lengths)
    runs = equal_runs(lengths)
    sizes = [length * count for length, count in runs] + [spare]  # the last part: the spare rows, maybe none
    parts = list(zip(q.split(sizes), k.split(sizes), v.split(sizes), runs))  # (G·L, H) each
    out = [attend(*(t.view(count, length, -1) for t in (q, k, v)), None, heads, p).flatten(0, 1)
           for q, k, v, (length, count) in parts]  # a run of equal lengths as one batch
    return torch.cat([*out, q.new_zeros(spare, q.shape[1])])


@torch.library.custom_op("bertkit::attend_each", mutates_args=())
def attend_each_opaque(q: Tensor, k: Tensor, v: Tensor, lengths: Tensor, heads: int) -> Tensor:
    """attend_each for inference as one operator the compiler does not look into: traced, the
    per-sequence split would make every new set of lengths a recompilation. lengths: (B,)."""
    return attend_each(q, k, v, lengths.tolist(), heads, 0.0)


@attend_each_opaque.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, lengths: Tensor, heads: int) -> Tensor:
    return torch.empty_like(q)


def relative_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, rel: Tensor, heads: int,
                       p: float) -> Tensor:
    """NEZHA: q, k, v (B, T, H) and the table rel (T, T, hs) → context (B, T, H)."""
    B, T, H = q.shape
    q, k, v = (t.view(B, T, heads, H // heads).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
    scores = q @ k.transpose(-1, -2) + torch.einsum("bhid,ijd->bhij", q, rel)  # (B, nh, T, T)
    scores = scores / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = dropout(scores.softmax(-1), p)
    ctx = probs @ v + torch.einsum("bhij,ijd->bhid", probs, rel)  # (B, nh, T, hs)
    return ctx.transpose(1, 2).reshape(B, T, H)
