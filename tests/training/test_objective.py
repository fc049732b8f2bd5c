"""The pretraining loss against Google's formula, and its split into micro-batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertkit.model import BertOutput
import torch.nn.functional as F

from bertkit.model import packed_rows
from bertkit.training.objective import PretrainingObjective, masked_lm_sums, normalize, weighted_slots


class FixedLogits(torch.nn.Module):
    """A stand-in model returning given logits."""

    def __init__(self, mlm: torch.Tensor, nsp: torch.Tensor) -> None:
        super().__init__()
        self.mlm, self.nsp = mlm, nsp

    def forward(self, input_ids, token_type_ids, attention_mask, masked_lm_positions):
        rows = input_ids[:, 0]  # the batch's row numbers, so slices get their own logits
        mlm = self.mlm[rows]  # (B, P, V): slot p of a row sits at position p (see batch)
        if masked_lm_positions.dim() == 1:  # flat positions b·T + t
            T = input_ids.shape[1]
            mlm = mlm[masked_lm_positions // T, masked_lm_positions % T]  # (M, V)
        return BertOutput(last_hidden_state=None, hidden_states=(), mlm_logits=mlm, nsp_logits=self.nsp[rows])


def batch(n: int = 6, preds: int = 4, vocab: int = 11, seed: int = 0):
    rng = np.random.default_rng(seed)
    weights = (rng.random((n, preds)) > 0.3).astype(np.float32)
    data = {"input_ids": np.arange(n)[:, None].repeat(5, 1), "token_type_ids": np.zeros((n, 5), np.int64),
            "attention_mask": np.ones((n, 5), np.int64), "masked_lm_positions": np.arange(preds)[None].repeat(n, 0),
            "masked_lm_ids": rng.integers(0, vocab, (n, preds)), "masked_lm_weights": weights,
            "next_sentence_labels": rng.integers(0, 2, n)}
    model = FixedLogits(torch.from_numpy(rng.normal(size=(n, preds, vocab)).astype(np.float32)),
                        torch.from_numpy(rng.normal(size=(n, 2)).astype(np.float32)))
    return {k: torch.from_numpy(np.asarray(v)) for k, v in data.items()}, model


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def google_losses(b, model):
    """Google run_pretraining.py: get_masked_lm_output and get_next_sentence_output."""
    logp = log_softmax(model.mlm.double().numpy())
    ids, w = b["masked_lm_ids"].numpy(), b["masked_lm_weights"].numpy()
    per_example = -np.take_along_axis(logp, ids[..., None], -1)[..., 0]
    mlm = (w * per_example).sum() / (w.sum() + 1e-5)
    nsp_logp = log_softmax(model.nsp.double().numpy())
    nsp = -nsp_logp[np.arange(len(nsp_logp)), b["next_sentence_labels"].numpy()].mean()
    return mlm, nsp


def test_matches_googles_formula():
    b, model = batch()
    objective = PretrainingObjective()
    terms = objective(model, b)
    weights = objective.weights(b)
    mlm, nsp = google_losses(b, model)
    assert abs(float(terms.losses["mlm"] / (weights["mlm"] + 1e-5)) - mlm) < 1e-6
    assert abs(float(normalize(terms.losses, weights, objective.eps)) - (mlm + nsp)) < 1e-6


def test_accuracy_counts_only_weighted_slots():
    b, model = batch()
    terms = PretrainingObjective()(model, b)
    correct, term = terms.metrics["mlm_accuracy"]
    hits = (model.mlm.argmax(-1) == b["masked_lm_ids"]).float() * b["masked_lm_weights"]
    assert term == "mlm" and float(correct) == float(hits.sum())
    nsp_correct, nsp_term = terms.metrics["nsp_accuracy"]
    assert nsp_term == "nsp" and float(nsp_correct) == float((model.nsp.argmax(-1) == b["next_sentence_labels"]).sum())


def test_accuracy_takes_the_first_of_equal_maxima():
    """Tied logits (a zero-initialised decoder gives all-equal rows) predict the first tied token,
    as argmax does: a gold id among the later tied ones is not a hit."""
    b, model = batch(preds=3)
    b["masked_lm_weights"] = torch.ones_like(b["masked_lm_weights"])
    model.mlm = torch.zeros_like(model.mlm)
    model.mlm[:, 1, 4:7] = 1.0  # slot 1 ties tokens 4, 5, 6
    b["masked_lm_ids"][:, 0] = torch.tensor([0, 3, 0, 1, 0, 2])  # all-equal row: only id 0 is a hit
    b["masked_lm_ids"][:, 1] = torch.tensor([4, 5, 6, 4, 4, 0])
    b["masked_lm_ids"][:, 2] = 7
    correct, _ = PretrainingObjective()(model, b).metrics["mlm_accuracy"]
    assert float(correct) == 3 + 3


def test_micro_batches_add_up_to_the_batch():
    """Sums over micro-batches divided by the whole batch's weights give the whole batch's loss."""
    b, model = batch(n=8)
    objective = PretrainingObjective()
    whole = normalize(objective(model, b).losses, objective.weights(b), objective.eps)
    halves = [{k: v[i:i + 4] for k, v in b.items()} for i in (0, 4)]
    weights = {k: sum(objective.weights(h)[k] for h in halves) for k in ("mlm", "nsp")}
    split = sum(normalize(objective(model, h).losses, weights, objective.eps) for h in halves)
    torch.testing.assert_close(split, whole)


def reference_sums(logits, ids, weights):
    """The plain route: float32 log_softmax of the whole logits, gather, argmax."""
    nll = F.cross_entropy(logits.float().flatten(0, -2), ids.flatten(), reduction="none")
    hits = (logits.float().argmax(-1) == ids).float().flatten()
    return (nll * weights.flatten()).sum(), (hits * weights.flatten()).sum()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masked_lm_sums_in_blocks_match_the_plain_route(dtype):
    """70,000 columns make blocks of 3 rows: 11 rows give three full blocks and a partial one."""
    g = torch.Generator().manual_seed(0)
    logits = (4 * torch.randn(1, 11, 70_000, generator=g)).to(dtype)
    ids = torch.randint(0, 70_000, (1, 11), generator=g)
    ids[0, 3] = logits[0, 3].float().argmax()  # one hit
    weights = (torch.rand(1, 11, generator=g) > 0.3).float()
    weights[0, 3] = 1.0
    before = logits.clone()
    ours, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss, hits = masked_lm_sums(ours, ids, weights)
    ref_loss, ref_hits = reference_sums(theirs, ids, weights)
    (3 * loss).backward()
    (3 * ref_loss).backward()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=0)
    assert float(hits) == float(ref_hits) >= 1
    assert ours.grad.dtype == dtype
    # float32: exp(x - lse) against exp(log_softmax(x)), where lse ≈ 20 carries ~2e-6 of rounding;
    # bfloat16: at most one ulp apart after rounding those
    rtol = 2**-7 if dtype == torch.bfloat16 else 2e-5
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=rtol, atol=1e-9)
    assert torch.equal(ours.detach(), before)  # the float32 backward works on a copy, not the logits


def test_weighted_slots_are_the_nonzero_weights_then_spare_zeros():
    b, _ = batch(n=9, preds=5)
    b["masked_lm_positions"] = torch.randint(0, 5, (9, 5))
    real = b["masked_lm_weights"] != 0
    positions, ids, weights = weighted_slots(b)
    m = int(real.sum())
    assert len(positions) == len(ids) == len(weights) == packed_rows(m) > m  # 35 real slots → 40 rows
    rows, slots = real.nonzero().unbind(1)
    assert torch.equal(positions[:m], rows * 5 + b["masked_lm_positions"][rows, slots])
    assert torch.equal(ids[:m], b["masked_lm_ids"][rows, slots]) and bool((weights[:m] != 0).all())
    assert not weights[m:].any() and not positions[m:].any()
