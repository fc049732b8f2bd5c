"""Optimizers against numpy transcriptions of Google's AdamWeightDecay and NVIDIA's LAMB."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from bertkit.training.args import OptimizerArgs
from bertkit.training.optim import (
    AdamWeightDecay,
    Lamb,
    build_optimizer,
    fusable,
    no_decay,
    param_groups,
)

# Our parameter names and Google's variable names for the same tensors.
GOOGLE_NAMES = {"dense.weight": "layer_0/output/dense/kernel", "dense.bias": "layer_0/output/dense/bias",
                "LayerNorm.weight": "layer_0/output/LayerNorm/gamma", "LayerNorm.bias": "layer_0/output/LayerNorm/beta",
                "word_embeddings.weight": "embeddings/word_embeddings"}
LR, WD, B1, B2, EPS = 0.01, 0.1, 0.9, 0.999, 1e-6


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(6, 4, dtype=torch.float64)
        self.dense = nn.Linear(4, 4, dtype=torch.float64)
        self.LayerNorm = nn.LayerNorm(4, dtype=torch.float64)
        with torch.no_grad():
            for p in self.parameters():
                p.normal_()


def google_adam_weight_decay(params, grads_per_step, lrs):
    """Google's optimization.py AdamWeightDecayOptimizer.apply_gradients, in numpy."""
    exclude = ["LayerNorm", "layer_norm", "bias"]
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v2 = {k: np.zeros_like(v) for k, v in params.items()}
    for grads, lr in zip(grads_per_step, lrs):
        for name, param in params.items():
            g = grads[name]
            m[name] = B1 * m[name] + (1.0 - B1) * g
            v2[name] = B2 * v2[name] + (1.0 - B2) * np.square(g)
            update = m[name] / (np.sqrt(v2[name]) + EPS)
            if not any(re.search(r, GOOGLE_NAMES[name]) for r in exclude):
                update += WD * param
            params[name] = param - lr * update
    return params


def lamb_reference(params, grads_per_step, lrs):
    """LAMB as apex FusedLAMB (bias correction, decay in the update, no trust ratio without decay)."""
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v2 = {k: np.zeros_like(v) for k, v in params.items()}
    for t, (grads, lr) in enumerate(zip(grads_per_step, lrs), 1):
        for name, p in params.items():
            g = grads[name]
            m[name] = B1 * m[name] + (1 - B1) * g
            v2[name] = B2 * v2[name] + (1 - B2) * g * g
            u = (m[name] / (1 - B1 ** t)) / (np.sqrt(v2[name] / (1 - B2 ** t)) + EPS)
            ratio = 1.0
            if not no_decay(name):
                u = u + WD * p
                w_norm, u_norm = np.linalg.norm(p), np.linalg.norm(u)
                ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
            params[name] = p - lr * ratio * u
    return params


def run_torch(optimizer_class, steps: int = 4):
    torch.manual_seed(0)
    model = Block()
    start = {k: v.detach().numpy().copy() for k, v in model.named_parameters()}
    opt = optimizer_class(param_groups(model, WD), lr=LR, betas=(B1, B2), eps=EPS)
    rng = np.random.default_rng(1)
    grads_per_step, lrs = [], []
    for step in range(steps):
        grads = {k: rng.normal(size=v.shape) for k, v in start.items()}
        for name, p in model.named_parameters():
            p.grad = torch.from_numpy(grads[name].copy())
        lr = LR * (1 - step / (2 * steps))  # the schedule changes lr between steps
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        grads_per_step.append(grads)
        lrs.append(lr)
    return model, start, grads_per_step, lrs


def test_adam_weight_decay_is_googles_update():
    model, start, grads, lrs = run_torch(AdamWeightDecay)
    expected = google_adam_weight_decay(dict(start), grads, lrs)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.detach().numpy(), expected[name], rtol=1e-12, atol=1e-12, err_msg=name)


def test_lamb_matches_reference_formula():
    model, start, grads, lrs = run_torch(Lamb)
    expected = lamb_reference(dict(start), grads, lrs)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.detach().numpy(), expected[name], rtol=1e-12, atol=1e-12, err_msg=name)


def test_decay_exclusions_follow_google():
    model = Block()
    decay, keep = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == ["dense.weight", "word_embeddings.weight"]
    assert sorted(names[id(p)] for p in keep["params"]) == ["LayerNorm.bias", "LayerNorm.weight", "dense.bias"]
    assert (decay["weight_decay"], keep["weight_decay"]) == (0.01, 0.0)


def test_tied_parameters_are_grouped_once():
    from bertkit.config import BertConfig
    from bertkit.model import build_model

    model = build_model(BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=16), "pretraining")
    groups = param_groups(model, 0.01)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert any(p is model.cls.predictions.bias for p in groups[1]["params"])


@pytest.mark.parametrize("name,cls", [("adamw", torch.optim.AdamW), ("google_adam", AdamWeightDecay), ("lamb", Lamb)])
def test_build_optimizer(name, cls):
    opt = build_optimizer(Block(), OptimizerArgs(name=name, learning_rate=2e-5, weight_decay=0.01))
    assert isinstance(opt, cls)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert opt.param_groups[0]["eps"] == 1e-6


def test_adamw_is_fused_where_torch_can_and_steps_as_the_reference():
    """The fused kernel takes plain float parameters on CPU; its steps are torch's AdamW's."""
    fused, plain = Block(), Block()
    plain.load_state_dict(fused.state_dict())
    opt = build_optimizer(fused, OptimizerArgs(name="adamw", learning_rate=0.01, weight_decay=0.01))
    assert opt.defaults["fused"] and fusable(fused)
    reference = torch.optim.AdamW(param_groups(plain, 0.01), lr=0.01, eps=1e-6, foreach=False)
    for step in range(3):
        for a, b in zip(fused.parameters(), plain.parameters()):
            a.grad = b.grad = torch.full_like(a, 0.1 * (step + 1)) + a.detach()
        opt.step()
        reference.step()
    for a, b in zip(fused.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b)
    assert not fusable(nn.Module())  # no parameters: nothing to fuse
    assert not fusable(_int_param_module())  # integer parameters: the fused kernel takes floats only


def _int_param_module() -> nn.Module:
    module = nn.Module()
    module.counter = nn.Parameter(torch.zeros(2, dtype=torch.int64), requires_grad=False)
    return module


def test_optimizer_state_round_trips():
    model, *_ = run_torch(Lamb, steps=2)
    opt = Lamb(param_groups(model, WD), lr=LR)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    again = Lamb(param_groups(model, WD), lr=LR)
    again.load_state_dict(opt.state_dict())
    assert all(again.state[p]["step"] == 1 for p in model.parameters())
