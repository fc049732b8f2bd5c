"""What the training loop optimizes: an Objective turns a micro-batch into summed loss terms.

The loop is task-agnostic. An objective gives, for one micro-batch,

- ``weights(batch)``: each loss term's denominator contribution, from the data alone (for MLM the
  sum of ``masked_lm_weights``, for NSP the number of sequences);
- ``objective(model, batch)``: ``Terms``, each loss term's *sum* over the micro-batch, and metric
  numerators with the term whose weight divides them.

The loop adds the weights of the whole global batch (all micro-batches, all ranks) before the
first backward pass and divides each term's sum by them, so the gradient is the global batch's
whatever its split into micro-batches and processes. For the MLM term that is Google's
``sum(w·nll) / (sum(w) + 1e-5)`` over the global batch; ``eps`` holds the ``1e-5``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bertkit.model import packed_rows


@dataclass
class Terms:
    """One micro-batch's contribution to a step."""

    losses: dict[str, Tensor]  # term -> sum of per-example losses, a 0-dim tensor with grad
    metrics: dict[str, tuple[Tensor, str]] = field(default_factory=dict)  # name -> (sum, term dividing it)


class Objective(Protocol):
    eps: Mapping[str, float]  # added to a term's global weight before dividing (Google's MLM 1e-5)

    def weights(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each loss term's weight in this micro-batch (0-dim float tensors), from the data only."""

    def __call__(self, model: nn.Module, batch: Mapping[str, Tensor]) -> Terms:
        """Forward pass and summed losses."""


def normalize(terms: Mapping[str, Tensor], weights: Mapping[str, Tensor], eps: Mapping[str, float]) -> Tensor:
    """Σ over terms of sum / (weight + eps): the loss of a batch whose term weights are ``weights``."""
    return sum(terms[k] / (weights[k] + eps.get(k, 0.0)) for k in sorted(terms))


class PretrainingObjective:
    """BERT's pretraining loss: masked LM at the masked positions (weighted), plus next sentence.

    Reports mlm_loss, nsp_loss, mlm_accuracy (weighted by masked_lm_weights) and nsp_accuracy.
    """

    eps: Mapping[str, float] = MappingProxyType({"mlm": 1e-5})  # Google's sum(w·nll) / (sum(w) + 1e-5)

    def weights(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        nsp = torch.tensor(float(batch["next_sentence_labels"].shape[0]), device=batch["input_ids"].device)
        return {"mlm": batch["masked_lm_weights"].float().sum(), "nsp": nsp}

    def __call__(self, model: nn.Module, batch: Mapping[str, Tensor]) -> Terms:
        positions, ids, weights = weighted_slots(batch)
        out = model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                    attention_mask=batch["attention_mask"], masked_lm_positions=positions)
        mlm, mlm_correct = masked_lm_sums(out.mlm_logits, ids, weights)
        labels = batch["next_sentence_labels"].reshape(-1)
        nsp_logits = out.nsp_logits.float()  # (B, 2)
        nsp = F.cross_entropy(nsp_logits, labels, reduction="sum")
        nsp_correct = (nsp_logits.argmax(-1) == labels).sum().float()
        return Terms(losses={"mlm": mlm, "nsp": nsp},
                     metrics={"mlm_accuracy": (mlm_correct, "mlm"), "nsp_accuracy": (nsp_correct, "nsp")})


def weighted_slots(batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """The masked slots the MLM head needs to run on: flat positions b·T + t, ids and weights, (R,)
    each.

    Those of nonzero weight: a padding slot (weight 0, ~13% of them in a Wikipedia set of length
    128) adds nothing to the loss or the accuracy. On CPU, R is rounded up as a packed batch's rows
    are (model.packed_rows: oneDNN builds each new product shape at first use), with spare slots of
    weight 0 at position 0.
    """
    weights = batch["masked_lm_weights"]
    real = weights != 0  # (B, P)
    B, T = batch["input_ids"].shape
    rows = torch.arange(B, device=real.device)[:, None] * T  # (B, 1)
    slots = ((batch["masked_lm_positions"].long() + rows)[real], batch["masked_lm_ids"].long()[real], weights[real])
    if real.device.type != "cpu":
        return slots
    spare = packed_rows(len(slots[0])) - len(slots[0])
    return tuple(torch.cat([t, t.new_zeros(spare)]) for t in slots)


def masked_lm_sums(logits: Tensor, ids: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """(Σ w·nll, Σ w·[argmax = id]) over the masked slots.

    logits (..., V) at the masked positions; ids (...) the original tokens; weights (...), 1.0 for
    a real prediction and 0.0 for a padding slot; (...) is (B, P) or the (M,) weighted slots.
    Computed in float32.
    """
    nll, top = _MaskedLMNLL.apply(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1).long())  # (B·P,) or (M,) each
    w = weights.reshape(-1).float()
    return (nll * w).sum(), ((top == ids.reshape(-1)).float() * w).sum()


class _MaskedLMNLL(torch.autograd.Function):
    """-log softmax(logits)[id] and argmax per row of (M, V) logits, in float32, a block of rows at
    a time.

    Under bf16 autocast the usual route (cast the logits to float32, log_softmax, gather) writes
    and reads (M, V) float32 tensors four times forward and backward, plus a cast of the gradient
    back: a BERT-base step's (16, 20, 30522) logits spent ~60 ms in those copies on a 2-core CPU.
    Here each block of rows is upcast, reduced and differentiated while it is in cache; only the
    log-sum-exp (M,) is kept, and the gradient (softmax - one-hot) · g is written straight in the
    logits' dtype. The argmax of the upcast block is argmax's (first of equal maxima): upcasting
    is exact.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
        rows = _block_rows(logits)
        lse = logits.new_empty(len(logits), dtype=torch.float32)
        nll, top = torch.empty_like(lse), torch.empty_like(ids)
        for start in range(0, len(logits), rows):
            block = slice(start, start + rows)
            x = logits[block].float()  # (rows, V)
            torch.logsumexp(x, -1, out=lse[block])
            torch.sub(lse[block], x.gather(1, ids[block, None]).squeeze(1), out=nll[block])
            top[block] = x.max(-1).indices
        ctx.save_for_backward(logits, ids, lse)
        ctx.mark_non_differentiable(top)
        return nll, top

    @staticmethod
    def backward(ctx, grad: Tensor, _: Tensor) -> tuple[Tensor, None]:
        logits, ids, lse = ctx.saved_tensors
        rows = _block_rows(logits)
        out = torch.empty_like(logits)
        for start in range(0, len(logits), rows):
            block = slice(start, start + rows)
            p = logits[block].to(torch.float32, copy=True).sub_(lse[block, None]).exp_()  # softmax (rows, V)
            p.scatter_add_(1, ids[block, None], p.new_full((len(p), 1), -1.0))
            out[block] = p.mul_(grad[block, None])
        return out, None


def _block_rows(logits: Tensor) -> int:
    """Rows per block: ~1 MB of float32 on CPU (8 rows of BERT's 30522: fastest of 4-280 on a
    2-core CPU), all rows at once elsewhere (a GPU's kernels want them)."""
    if logits.device.type != "cpu":
        return max(1, len(logits))
    return max(1, 2**18 // max(1, logits.shape[-1]))
