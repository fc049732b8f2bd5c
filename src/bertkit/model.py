"""BERT, top to bottom: embeddings, the post-LN Transformer encoder, pooler and task heads.

Module and attribute names follow the checkpoint key names (HF's, which are Google's with
dots): ``bert.encoder.layer.3.attention.self.query.weight`` is Google's
``bert/encoder/layer_3/attention/self/query/kernel`` transposed. That keeps every converter
a lookup table. Shapes: B batch, T sequence length, H hidden size, nh heads, hs head size,
P masked positions per sequence, V vocabulary.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bertkit.config import BertConfig
from bertkit.attention import attend, attend_each, attend_each_opaque, relative_attention, relative_position_table
from bertkit.dropout import Dropout
from bertkit.linear import autocast_linear


def activation(name: str):
    """The function for a bertkit activation name (see config.ACTIVATIONS)."""
    if name == "gelu":
        return F.gelu  # exact: 0.5·x·(1 + erf(x/√2))
    if name == "gelu_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    return {"relu": F.relu, "silu": F.silu, "tanh": torch.tanh}[name]


@dataclass
class BertOutput:
    """What every BERT module returns; fields a head does not compute stay None."""

    last_hidden_state: Tensor  # (B, T, H)
    hidden_states: Sequence[Tensor] | None = None  # output_hidden_states: embedding output, then every layer, L+1 × (B, T, H)
    pooled_output: Tensor | None = None  # (B, H): tanh(dense(h[CLS]))
    mlm_logits: Tensor | None = None  # (B, P, V) or (M, V) at masked_lm_positions, else (B, T, V)
    nsp_logits: Tensor | None = None  # (B, 2): column 0 IsNext, 1 random
    logits: Tensor | None = None  # classification (B, num_labels) / token classification (B, T, num_labels)
    start_logits: Tensor | None = None  # QA (B, T)
    end_logits: Tensor | None = None  # QA (B, T)


class Linear(nn.Linear):
    """nn.Linear that keeps its autocast copy between inference calls.

    Autocast casts every weight to bfloat16 at every call (its own cache lasts one autocast
    context, and callers open one per batch): for BERT-base that is 85 M parameters read and
    written per forward. Keeping the copy took a bf16 forward of 16 × 128 tokens from 0.98× to
    1.04× transformers' speed on a 2-core CPU, for 2 bytes a weight of memory.
    Without autograd, the copy is kept on the module until the weight or bias changes (version
    counter, storage, dtype) or the module is put in training mode; the values are autocast's own,
    so outputs are unchanged. Training under autocast on CPU takes bertkit.linear's cheaper weight
    gradient; otherwise, with autograd on or under torch.compile, this is nn.Linear.
    ``bias``, when given, replaces ``self.bias`` (the MLM decoder's bias belongs to its head).
    """

    def forward(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        device = x.device.type
        bias = self.bias if bias is None else bias
        if not torch.is_autocast_enabled(device) or torch.compiler.is_compiling():
            return F.linear(x, self.weight, bias)
        dtype = torch.get_autocast_dtype(device)
        if self.weight.dtype == dtype or not self.weight.is_floating_point():
            return F.linear(x, self.weight, bias)
        if torch.is_grad_enabled():
            return autocast_linear(x, self.weight, bias, dtype)
        key = (dtype, self.weight.data_ptr(), self.weight._version,
               None if bias is None else (bias.data_ptr(), bias._version))
        cached = self.__dict__.get("_autocast_copy")
        if cached is None or cached[0] != key:
            cached = (key, self.weight.to(dtype), None if bias is None else bias.to(dtype))
            self.__dict__["_autocast_copy"] = cached
        return F.linear(x, cached[1], cached[2])  # autocast casts x; the weights are cast already

    def train(self, mode: bool = True) -> Linear:
        self.__dict__.pop("_autocast_copy", None)  # training casts afresh (autograd needs it)
        return super().train(mode)


# --- embeddings -------------------------------------------------------------------------------


class BertEmbeddings(nn.Module):
    """word + position + token type embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        # NEZHA replaces absolute positions by relative ones inside attention.
        self.position_embeddings = (
            None if config.use_relative_positions
            else nn.Embedding(config.max_position_embeddings, config.hidden_size)
        )
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor, position_ids: Tensor) -> Tensor:
        """ids (B, T) and positions (T,), or all three (N,) for packed tokens; returns (..., H)."""
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        if self.position_embeddings is not None:
            x = x + self.position_embeddings(position_ids)  # (T, H) broadcasts over B
        return self.dropout(self.LayerNorm(x))


# --- encoder ----------------------------------------------------------------------------------

# On CPU, packed batches at least this wide (T) attend one sequence at a time; narrower ones pad q,
# k, v back for one masked SDPA call, where B calls cost more than the padding. Measured with
# benchmarks/packed_attention.py (MiniLM L-6 H-384, 32 sequences of 5..T tokens, fp32, 2 cores):
# training, per sequence / one masked call = 1.31 at T 16, 1.10 at 32, 0.95 at 48, 0.83 at 128;
# inference 1.00-1.06 up to 48, 0.89 at 128.
PER_SEQUENCE_FROM = 40


def packed_rows(n: int) -> int:
    """The row count R ≥ n a packed CPU batch of ``n`` real tokens runs with: a multiple of
    max(8, 2^(bit_length(n) - 6)), so one of at most 32 counts per octave, at most n/32 (or 7)
    above n. oneDNN builds a product for its exact shape at first use (8–13 ms for a bf16
    (M×768)·(768×3072) on a 2-core AMX CPU, then 4 ms a call), and n is new nearly every batch;
    rounded counts recur. Real data, BERT-base bf16: inference +8.7%, training +1.7%. The spare
    rows read a padding position's token, are never keys, and are dropped when states are padded."""
    step = max(8, 1 << max(0, n.bit_length() - 6))
    return -(-n // step) * step


@dataclass
class Layout:
    """Where a batch's tokens sit, and which keys attention may look at.

    Padded (the reference path): hidden states are (B, T, H); ``mask`` hides the padding keys.
    Packed (the fast path when a batch has padding): hidden states are (R, H), the N real tokens
    only, sequence after sequence (on CPU the longest first, then R - N spare rows, see
    packed_rows), so every projection, LayerNorm and FFN skips the padding. Attention alone works
    per sequence: on CPU one sequence (or run of equal lengths) at a time (``lengths``), elsewhere
    by padding q, k, v back to (B, T) with zeros, masking the padding keys and packing its output
    again.
    """

    batch: int  # B
    length: int  # T
    mask: Tensor | None = None  # (B, 1, 1, T) bool, True = a key to attend to; None = every key
    # packed: (N,) flat position b·T + t of each real token, sequence after sequence (on CPU the
    # longest first, see BertModel.layout), else None
    index: Tensor | None = None
    lengths: Tensor | None = None  # packed, attention one sequence at a time: (B,) token counts in packed order
    rel: Tensor | None = None  # NEZHA: the relative position table (T, T, hs)
    # packed: (R,) the positions the R ≥ N packed rows are read from: on CPU ``index`` then R - N
    # copies of a padding position (see packed_rows), elsewhere ``index`` itself
    rows: Tensor | None = None

    def position_ids(self, device: torch.device) -> Tensor:
        """(T,) when padded, (R,) when packed."""
        return torch.arange(self.length, device=device) if self.index is None else self.rows % self.length

    def pack(self, x: Tensor) -> Tensor:
        """(B, T, ...) → (R, ...): the N real tokens, then the spare rows; x itself when padded."""
        return x if self.index is None else x.flatten(0, 1)[self.rows]

    def pad(self, x: Tensor) -> Tensor:
        """(R, ...) → (B, T, ...) with zeros at padding (the spare rows dropped); x itself when padded."""
        if self.index is None:
            return x
        x = x[: len(self.index)]  # the real tokens: a view of the leading rows
        out = x.new_zeros(self.batch * self.length, *x.shape[1:])
        if torch.is_grad_enabled() and x.requires_grad:
            out = out.index_copy(0, self.index, x)  # out of place: autograd must see the copy
        else:
            out.index_copy_(0, self.index, x)  # in place: the out-of-place form clones out first
        return out.view(self.batch, self.length, *x.shape[1:])


class PaddedStates(Sequence[Tensor]):
    """Hidden states kept as the encoder made them, padded to (B, T, H) when first read.

    A packed forward makes L+1 hidden states of (N, H); padding all of them eagerly cost 6.5% of
    a BERT-base bf16 forward (zero-fill plus scatter of 13 × B·T·H) and kept 13 padded copies
    alive in training, while most callers read only the last one.
    """

    def __init__(self, states: list[Tensor], layout: Layout) -> None:
        self._states = states
        self._padded: list[Tensor | None] = [None] * len(states)
        self._layout = layout

    def __len__(self) -> int:
        return len(self._states)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(self[j] for j in range(len(self))[i])
        padded = self._padded[i]
        if padded is None:
            padded = self._padded[i] = self._layout.pad(self._states[i])
        return padded

    def __repr__(self) -> str:
        return f"PaddedStates({len(self)} × {tuple(self[-1].shape)})"


class BertSelfAttention(nn.Module):
    """Multi-head scaled dot-product attention within each sequence, on padded or packed tokens.

    Fast path: torch's fused scaled_dot_product_attention. Relative positions (NEZHA) need the
    attention probabilities themselves, so they take the explicit path. Packed tokens (Layout)
    attend one sequence at a time on CPU when the batch is at least PER_SEQUENCE_FROM wide: no
    padding is computed at all, and that beat one masked SDPA over the re-padded batch by 10% in
    inference and 20% in training (BERT-base, 32 sequences of 20–128 tokens, bf16, one thread);
    narrower batches (single sentences) take the masked call; on a GPU, B small kernels would cost more
    in launches than the padding does, so packed tokens are padded back for one masked SDPA.
    Jagged nested tensors are no alternative on CPU: SDPA on them ran 15× slower than that, and
    they cannot be made under inference_mode (torch 2.13).

    q, k and v stay three parameters (a fused one would change LAMB's per-tensor trust ratios and
    the checkpoint key names); only training under autocast, which copies the weights anyway,
    multiplies by them as one (H, 3H) product (see project).
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.query = Linear(config.hidden_size, config.hidden_size)
        self.key = Linear(config.hidden_size, config.hidden_size)
        self.value = Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x: Tensor, layout: Layout) -> Tensor:
        """x (B, T, H), or (N, H) packed; returns the attention output laid out as x."""
        q, k, v = self.project(x)
        p = self.dropout_p if self.training else 0.0
        if layout.lengths is not None and torch.compiler.is_compiling():  # see BertModel.compile_encoder
            return attend_each_opaque(q, k, v, layout.lengths, self.num_heads)
        if layout.lengths is not None:
            return attend_each(q, k, v, layout.lengths.tolist(), self.num_heads, p)
        q, k, v = layout.pad(q), layout.pad(k), layout.pad(v)  # (B, T, H)
        if layout.rel is not None:
            return layout.pack(relative_attention(q, k, v, layout.mask, layout.rel, self.num_heads, p))
        return layout.pack(attend(q, k, v, layout.mask, self.num_heads, p))

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v, each laid out as x. Training under autocast makes them with one (H, 3H) product
        of the three weights' autocast copies: autocast would otherwise cast x three times, and its
        three gradients three times back before adding them in float32; the fused product sums
        them inside its float32 accumulation. Training step +1.5% (real data, BERT-base bf16, 2-core
        AMX CPU); the parameters stay three, as in every checkpoint."""
        device = x.device.type
        if not (torch.is_grad_enabled() and torch.is_autocast_enabled(device)):
            return self.query(x), self.key(x), self.value(x)
        dtype = torch.get_autocast_dtype(device)
        parts = (self.query, self.key, self.value)
        weight = torch.cat([part.weight.to(dtype) for part in parts])  # (3H, H)
        bias = torch.cat([part.bias for part in parts]).to(dtype)  # (3H,)
        return F.linear(x, weight, bias).chunk(3, dim=-1)


class BertSelfOutput(nn.Module):
    """Projection back to H, dropout, residual, LayerNorm (post-LN)."""

    def __init__(self, config: BertConfig, width: int) -> None:
        super().__init__()
        self.dense = Linear(width, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(x), residual))  # dropout, + residual


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)  # named "self" as in every BERT checkpoint
        self.output = BertSelfOutput(config, config.hidden_size)

    def forward(self, x: Tensor, layout: Layout) -> Tensor:
        return self.output(self.self(x, layout), x)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)
        self.act = activation(config.hidden_act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.dense(x))  # (..., I)


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertSelfOutput(config, config.intermediate_size)

    def forward(self, x: Tensor, layout: Layout) -> Tensor:
        x = self.attention(x, layout)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: Tensor, layout: Layout, every_layer: bool = True) -> list[Tensor]:
        """The output of every layer, first to last (else of the last only), laid out as x."""
        outputs = []
        for layer in self.layer:
            x = layer(x, layout)
            if every_layer or layer is self.layer[-1]:
                outputs.append(x)  # an inference step holds only what it returns
        return outputs


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)

    def forward(self, h: Tensor) -> Tensor:
        return torch.tanh(self.dense(h[:, 0]))  # (B, H) from the [CLS] position


class BertModel(nn.Module):
    """The bare encoder: embeddings, L Transformer layers, pooler.

    Batches with padding run packed (see Layout): the encoder computes only the real tokens,
    and every returned hidden state is zero at padding positions. ``unpad = False`` forces the
    padded reference computation, whose outputs at padding positions are those of Google's
    code. Both agree on real tokens to float rounding. A batch whose first column has padding
    (left-padded) runs padded, as does everything under torch.compile: a data-dependent
    token count would break the graph.

    Token-level heads have no pooler (as in HF's BertForTokenClassification/QuestionAnswering);
    their pooled_output is None.
    """

    def __init__(self, config: BertConfig, add_pooler: bool = True) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooler else None
        self.unpad = True  # skip padding tokens; False: the padded reference path
        self.frozen_compile = None  # compile_encoder: the inductor settings it compiles under

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> BertOutput:
        """input_ids, token_type_ids, attention_mask: (B, T); mask 1 = real token, 0 = padding.
        output_hidden_states: also return the embedding output and every layer's (HF's name; off
        by default, as there, since holding them all costs an inference step L× the memory)."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        layout = self.layout(input_ids, attention_mask)
        x = self.embeddings(layout.pack(input_ids), layout.pack(token_type_ids), layout.position_ids(input_ids.device))
        with self.frozen_compile() if self.frozen_compile else contextlib.nullcontext():
            states = self.encoder(x, layout, output_hidden_states)
        hidden = PaddedStates([x, *states] if output_hidden_states else states, layout)  # padded when read
        pooled = self.pooler(hidden[-1]) if self.pooler is not None else None
        return BertOutput(last_hidden_state=hidden[-1], hidden_states=hidden if output_hidden_states else None,
                          pooled_output=pooled)

    def compile_encoder(self) -> None:
        """torch.compile the encoder for inference, the weights frozen into the compiled code.

        Inductor's freezing folds the weights (and autocast's bf16 copies) in as constants and fuses
        bias, GELU and residual adds into the products; on CPU, max-autotune also times inductor's
        own C++ (AMX) matrix kernels against oneDNN's for each shape, which pays most on packed
        batches (oneDNN left one of 2 cores idle at 700–1400 rows). BERT-base bf16, 2-core AMX
        CPU: 1.19× the eager forward at fixed length 128, 1.45× packed at 20–128. The layout is
        still decided outside (per-sequence attention is one opaque operator) and shapes are
        dynamic, so new lengths do not recompile; the first calls compile (30–60 s on 2 cores).
        Only for a model whose weights no longer change.
        """
        from torch._inductor import config as inductor_config
        from torch.fx.experimental import _config as shape_config

        settings = {"freezing": True}
        if self.embeddings.word_embeddings.weight.device.type == "cpu":
            settings.update(max_autotune=True, max_autotune_gemm_backends="CPP,ATEN")

        @contextlib.contextmanager
        def frozen_compile():
            # Without duck shaping: a packed batch whose row count equals the hidden size would
            # otherwise tie the two and fix the row count, compiling again for the next batch.
            with inductor_config.patch(settings), shape_config.patch(use_duck_shape=False):
                yield

        self.frozen_compile = frozen_compile
        self.encoder.compile(dynamic=True)

    def layout(self, input_ids: Tensor, attention_mask: Tensor | None) -> Layout:
        """Packed when the batch has padding (and unpad is on), else padded; see the class doc."""
        B, T = input_ids.shape
        rel = None
        if self.config.use_relative_positions:
            rel = relative_position_table(T, self.config.head_size, self.config.max_relative_position,
                                          input_ids.device).to(self.embeddings.word_embeddings.weight.dtype)
        if attention_mask is None:
            return Layout(B, T, rel=rel)
        keys = attention_mask.bool()
        mask = keys[:, None, None, :]  # (B, 1, 1, T): keys to attend to
        # Under torch.compile the checks below would be graph breaks (data-dependent branches), so
        # the batch stays padded there. Packed under compile needs dynamo's global
        # capture_dynamic_output_shape_ops and was still slower than packed without compile (small
        # BERT, CPU, training: eager padded 1,530 real tokens/s, compiled padded 1,510, compiled
        # packed 1,810, eager packed 2,160).
        if torch.compiler.is_compiling():
            return Layout(B, T, mask, rel=rel)
        if bool(keys.all()):
            return Layout(B, T, rel=rel)  # no mask: SDPA takes its unmasked kernel
        if not self.unpad or not bool(keys[:, 0].all()):
            return Layout(B, T, mask, rel=rel)
        flat = keys.flatten()
        cpu = input_ids.device.type == "cpu"
        one_by_one = cpu and rel is None and T >= PER_SEQUENCE_FROM  # see BertSelfAttention
        lengths = keys.sum(1) if one_by_one else None  # (B,)
        if one_by_one:  # the longest sequences first, so that equal lengths attend as one batch
            order = lengths.argsort(descending=True, stable=True)  # (B,)
            row, col = keys[order].nonzero().unbind(1)
            index, lengths = order[row] * T + col, lengths[order]
        else:
            index = flat.nonzero().squeeze(1)
        rows = index
        if cpu:  # spare rows (see packed_rows), read from the first padding position
            spare = packed_rows(len(index)) - len(index)
            rows = torch.cat([index, (~flat).nonzero()[0].expand(spare)])  # never index itself, even with no
            # spare rows: a compiled encoder would otherwise compile again when the two alias
        return Layout(B, T, mask, index, lengths, rel, rows)


# --- heads ------------------------------------------------------------------------------------


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    """MLM: transform, then logits = x · word_embeddingsᵀ + bias (decoder tied to the embeddings)."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight  # tied
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: Tensor) -> Tensor:
        # The bias goes into the product, as transformers does: under autocast a separate float32
        # "+ bias" promoted the (..., V) logits to float32, 20 ms of a BERT-base step on 2 CPU cores
        return self.decoder(self.transform(x), self.bias)  # (..., V)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(config, word_embeddings)
        self.seq_relationship = Linear(config.hidden_size, 2)


class BertForPreTraining(nn.Module):
    """Encoder + MLM head + NSP head (Google's run_pretraining heads)."""

    head = "pretraining"

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config, self.bert.embeddings.word_embeddings)

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        masked_lm_positions: Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> BertOutput:
        """masked_lm_positions: run the MLM head only there. (B, P): mlm_logits (B, P, V), padding
        slots may point at 0; or (M,) flat positions b·T + t: mlm_logits (M, V)."""
        out = self.bert(input_ids, token_type_ids, attention_mask, output_hidden_states)
        h = out.last_hidden_state  # (B, T, H)
        if masked_lm_positions is not None and masked_lm_positions.dim() == 1:
            h = h.flatten(0, 1).index_select(0, masked_lm_positions.long())  # (M, H)
        elif masked_lm_positions is not None:
            index = masked_lm_positions.long()[:, :, None].expand(-1, -1, h.shape[-1])  # (B, P, H)
            h = torch.gather(h, 1, index)
        out.mlm_logits = self.cls.predictions(h)
        out.nsp_logits = self.cls.seq_relationship(out.pooled_output)
        return out


class BertForSequenceClassification(nn.Module):
    """Pooled [CLS] → dropout → linear; num_labels 1 is regression."""

    head = "classification"

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                attention_mask: Tensor | None = None, output_hidden_states: bool = False) -> BertOutput:
        out = self.bert(input_ids, token_type_ids, attention_mask, output_hidden_states)
        out.logits = self.classifier(self.dropout(out.pooled_output))  # (B, num_labels)
        return out


class BertForTokenClassification(nn.Module):
    """Every token's hidden state → dropout → linear (NER tagging)."""

    head = "token_classification"

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=False)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                attention_mask: Tensor | None = None, output_hidden_states: bool = False) -> BertOutput:
        out = self.bert(input_ids, token_type_ids, attention_mask, output_hidden_states)
        out.logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, T, num_labels)
        return out


class BertForQuestionAnswering(nn.Module):
    """Span QA: a linear layer gives each token a start and an end logit."""

    head = "qa"

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=False)
        self.qa_outputs = Linear(config.hidden_size, 2)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                attention_mask: Tensor | None = None, output_hidden_states: bool = False) -> BertOutput:
        out = self.bert(input_ids, token_type_ids, attention_mask, output_hidden_states)
        start, end = self.qa_outputs(out.last_hidden_state).unbind(-1)  # 2 × (B, T)
        out.start_logits, out.end_logits = start, end
        return out


class BertForNaturalQuestions(nn.Module):
    """BERT-joint (Alberti et al. 2019, run_nq.py): span logits as the QA head, and the answer
    type (tasks.nq.AnswerType: UNKNOWN, YES, NO, SHORT, LONG) from the pooled [CLS] in ``logits``."""

    head = "nq"
    num_answer_types = 5

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.qa_outputs = Linear(config.hidden_size, 2)
        self.answer_type_output = Linear(config.hidden_size, self.num_answer_types)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                attention_mask: Tensor | None = None, output_hidden_states: bool = False) -> BertOutput:
        out = self.bert(input_ids, token_type_ids, attention_mask, output_hidden_states)
        out.start_logits, out.end_logits = self.qa_outputs(out.last_hidden_state).unbind(-1)  # 2 × (B, T)
        out.logits = self.answer_type_output(out.pooled_output)  # (B, 5), no dropout (as run_nq.py)
        return out


HEAD_CLASSES: dict[str | None, type[nn.Module]] = {
    None: BertModel,
    "pretraining": BertForPreTraining,
    "classification": BertForSequenceClassification,
    "token_classification": BertForTokenClassification,
    "qa": BertForQuestionAnswering,
    "nq": BertForNaturalQuestions,
}


def build_model(config: BertConfig, head: str | None = None) -> nn.Module:
    """A freshly initialised model, weights drawn as Google does (truncated normal, ±2σ)."""
    model = HEAD_CLASSES[head](config)
    model.apply(lambda m: init_weights(m, config.initializer_range))
    return model


def compile_for_inference(model: nn.Module) -> nn.Module:
    """``model`` with every BertModel's encoder compiled (BertModel.compile_encoder); returns it."""
    for module in model.modules():
        if isinstance(module, BertModel):
            module.compile_encoder()
    return model


def init_weights(module: nn.Module, std: float) -> None:
    """Google's initializer: truncated normal(σ) for matrices and tables, zero biases, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, BertLMPredictionHead):
        nn.init.zeros_(module.bias)
